//! Paying and getting paid from the command line: `credence claim`, and the
//! voucher signing behind `credence chat --pay`.

use std::path::Path;

use anyhow::{Context, Result, bail};
use clap::Args;
use credence_ledger::units::{format_amount, parse_amount};
use credence_ledger::{Address, DEV_MNEMONIC, U256, Wallet, accounts, dev_wallets};
use credence_node::client::NodeClient;
use credence_node::config::credence_home;
use credence_node::pay::{self, BillingInfo};

use crate::chain::Connect;
use crate::wallet::WALLET_FILE;

/// The signing wallet: dev account `n` if given, else `<home>/wallet.key` if it exists.
pub(crate) fn wallet(home: Option<&Path>, dev_account: Option<u32>) -> Result<Option<Wallet>> {
    if let Some(n) = dev_account {
        let mut wallets = dev_wallets(DEV_MNEMONIC, n + 1)?;
        return Ok(wallets.pop());
    }
    let path = credence_home(home)?.join(WALLET_FILE);
    if path.exists() {
        return Ok(Some(accounts::load_key(&path)?));
    }
    Ok(None)
}

/// `credence claim` arguments.
#[derive(Debug, Args)]
pub(crate) struct ClaimArgs {
    /// Whose earnings to claim [default: the signing wallet's]. Anyone may
    /// send the claim; the tokens always go to this account.
    #[arg(long)]
    account: Option<Address>,
    #[command(flatten)]
    connect: Connect,
}

/// Fetches the account's proof from the node and claims it on-chain.
pub(crate) fn claim(args: &ClaimArgs) -> Result<()> {
    let chain = args.connect.signing_client()?;
    let account = match args.account {
        Some(a) => a,
        None => chain.signer_address().context("no signer")?,
    };
    let node = NodeClient::new(args.connect.node_url(), None)?;
    let info = node.billing()?;
    let Some(proof) = node.claim_proof(account)? else {
        bail!(
            "{account} has nothing final to claim yet: earnings become claimable once an epoch \
             that includes them is posted and its challenge window has passed"
        );
    };
    if proof.cumulative <= proof.claimed {
        bail!(
            "{account} has already claimed everything final ({} OPEN); newer earnings wait for \
             the next final epoch",
            format_amount(U256::from(proof.claimed))
        );
    }
    let receipt = pay::claim(&chain, &info, &proof)?;
    let paid = proof.cumulative - proof.claimed;
    if args.connect.json {
        let out = serde_json::json!({
            "account": account, "epoch": proof.epoch, "paid": paid.to_string(),
            "cumulative": proof.cumulative.to_string(), "transaction": receipt.tx_hash,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        eprintln!(
            "tx {} (block {}, gas {})",
            receipt.tx_hash, receipt.block_number, receipt.gas_used
        );
        println!(
            "claimed {} OPEN for {account} (epoch {}, {} OPEN earned in total)",
            format_amount(U256::from(paid)),
            proof.epoch,
            format_amount(U256::from(proof.cumulative))
        );
    }
    Ok(())
}

/// Signs vouchers for one node as a chat goes on: each call carries a
/// voucher for what the payer has spent plus `allowance`, so the node can
/// never take more than one call's allowance beyond what was used.
pub(crate) struct Payer {
    wallet: Wallet,
    info: BillingInfo,
    allowance: u128,
}

impl Payer {
    /// A payer for the node `client` talks to, allowing `allowance` OPEN per call.
    pub(crate) fn new(client: &NodeClient, wallet: Wallet, allowance: &str) -> Result<Self> {
        let allowance = u128::try_from(parse_amount(allowance)?).context("--pay is too large")?;
        let info = client
            .billing()
            .context("cannot read the node's billing details")?;
        Ok(Self {
            wallet,
            info,
            allowance,
        })
    }

    /// The voucher header for the next call.
    pub(crate) fn next_voucher(&self, client: &NodeClient) -> Result<String> {
        let standing = client.payer(self.wallet.address())?;
        let cumulative = pay::next_cumulative(standing.as_ref(), self.allowance);
        Ok(pay::voucher_header(&self.wallet, &self.info, cumulative)?)
    }
}
