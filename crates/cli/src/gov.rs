//! `credence gov propose|vote|state`: governance through the Governor, whose
//! voting power is cVOTE (earned by contribution, see docs/ledger.md).

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use credence_ledger::ops::{self, Action, Support};
use credence_ledger::{Address, Bytes, U256};

use crate::chain::Connect;

#[derive(Debug, Args)]
pub(crate) struct GovArgs {
    #[command(flatten)]
    connect: Connect,
    #[command(subcommand)]
    command: GovCommand,
}

#[derive(Debug, Subcommand)]
enum GovCommand {
    /// Propose calls for the timelock to make if the vote passes.
    Propose {
        /// Contract to call (repeat for several actions, with one --calldata each).
        #[arg(long = "target", required = true)]
        targets: Vec<Address>,
        /// ABI-encoded calldata, hex (one per --target).
        #[arg(long = "calldata", required = true)]
        calldatas: Vec<Bytes>,
        /// What the proposal does and why (part of its id).
        #[arg(long)]
        description: String,
    },
    /// Vote on a proposal.
    Vote {
        /// Proposal id (decimal or 0x-hex).
        proposal: U256,
        /// for, against or abstain.
        support: Support,
        /// Reason recorded with the vote.
        #[arg(long)]
        reason: Option<String>,
    },
    /// A proposal's state (pending, active, succeeded…).
    State {
        /// Proposal id (decimal or 0x-hex).
        proposal: U256,
    },
}

/// Runs one `credence gov` subcommand.
pub(crate) fn run(args: &GovArgs) -> Result<()> {
    let connect = &args.connect;
    match &args.command {
        GovCommand::Propose {
            targets,
            calldatas,
            description,
        } => {
            if targets.len() != calldatas.len() {
                bail!("give one --calldata per --target");
            }
            let actions: Vec<Action> = targets
                .iter()
                .zip(calldatas)
                .map(|(&target, calldata)| Action {
                    target,
                    value: U256::ZERO,
                    calldata: calldata.clone(),
                })
                .collect();
            let client = connect.signing_client()?;
            let d = connect.deployment(&client)?.contracts;
            let (id, receipt) = ops::propose(&client, &d, &actions, description)?;
            eprintln!("tx {}", receipt.tx_hash);
            println!("{id}");
        }
        GovCommand::Vote {
            proposal,
            support,
            reason,
        } => {
            let client = connect.signing_client()?;
            let d = connect.deployment(&client)?.contracts;
            let receipt = ops::vote(&client, &d, *proposal, *support, reason.as_deref())?;
            eprintln!("tx {}", receipt.tx_hash);
            println!(
                "voted; proposal is {}",
                ops::proposal_state(&client, &d, *proposal)?
            );
        }
        GovCommand::State { proposal } => {
            let client = connect.client()?;
            let d = connect.deployment(&client)?.contracts;
            println!("{}", ops::proposal_state(&client, &d, *proposal)?);
        }
    }
    Ok(())
}
