//! `credence chain …`, `deposit`, `stake` and `unstake`: the ledger from the
//! command line. Thin: flags are turned into a [`Client`] and a deployment
//! here, the operations themselves live in `credence_ledger::ops`.
//!
//! Where the chain is: `--rpc URL` for an external chain, otherwise the local
//! node's `<--url>/rpc` (the same `--url`/`CREDENCE_URL` the other node
//! commands use). Where the contracts are: `--deployment FILE`, else the
//! endpoint's `credence_deployment` method (the embedded chain answers it),
//! else `<home>/deployment.json` as written by `credence chain deploy`.
//! Who signs: `--dev-account N`, else the wallet in `<home>/wallet.key`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use credence_ledger::ops::{self, Balances};
use credence_ledger::units::{format_amount, parse_amount};
use credence_ledger::{
    ChainDeployment, Client, DEV_MNEMONIC, ProtocolParams, Receipt, Wallet, dev_wallets, genesis,
};
use credence_node::client::DEFAULT_URL;
use credence_node::config::credence_home;

/// The file `chain deploy` writes and other commands read.
const DEPLOYMENT_FILE: &str = "deployment.json";

/// How to reach the chain, who signs and where the contracts are.
#[derive(Debug, Args)]
pub(crate) struct Connect {
    /// Base URL of the local node; its chain's JSON-RPC endpoint is <URL>/rpc.
    #[arg(long, env = "CREDENCE_URL", default_value = DEFAULT_URL, global = true)]
    url: String,
    /// JSON-RPC endpoint of an external EVM chain, used instead of the node's.
    #[arg(long, env = "CREDENCE_RPC", global = true, value_name = "URL")]
    rpc: Option<String>,
    /// Sign with dev account N of the public dev mnemonic (local chains only).
    #[arg(long, global = true, value_name = "N")]
    dev_account: Option<u32>,
    /// Contract addresses [default: asked from the node, else <home>/deployment.json].
    #[arg(long, global = true, value_name = "FILE")]
    deployment: Option<PathBuf>,
    /// Data directory holding wallet.key and deployment.json [default: $HOME/.cache/credence].
    #[arg(long, env = "CREDENCE_HOME", global = true)]
    home: Option<PathBuf>,
    /// Print JSON.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

impl Connect {
    fn rpc_url(&self) -> String {
        self.rpc
            .clone()
            .unwrap_or_else(|| format!("{}/rpc", self.url.trim_end_matches('/')))
    }

    fn home(&self) -> Result<PathBuf> {
        Ok(credence_home(self.home.as_deref())?)
    }

    /// The signing wallet, if one was chosen or saved.
    pub(crate) fn signer(&self) -> Result<Option<Wallet>> {
        crate::pay::wallet(self.home.as_deref(), self.dev_account)
    }

    /// The local node's base URL.
    pub(crate) fn node_url(&self) -> &str {
        &self.url
    }

    pub(crate) fn client(&self) -> Result<Client> {
        let url = self.rpc_url();
        Client::http(&url, self.signer()?).with_context(|| {
            if self.rpc.is_some() {
                format!("cannot reach the chain at {url}")
            } else {
                format!("cannot reach the node's chain at {url}: is `credence node` running?")
            }
        })
    }

    /// A client that must be able to sign.
    pub(crate) fn signing_client(&self) -> Result<Client> {
        let client = self.client()?;
        if client.signer_address().is_none() {
            bail!("no wallet: run `credence wallet new` (or `import`), or pass --dev-account N");
        }
        Ok(client)
    }

    pub(crate) fn deployment(&self, client: &Client) -> Result<ChainDeployment> {
        let deployment = match &self.deployment {
            Some(path) => ChainDeployment::load(path)?,
            None => match ops::remote_deployment(client)? {
                Some(d) => d,
                None => {
                    let path = self.home()?.join(DEPLOYMENT_FILE);
                    if !path.exists() {
                        bail!(
                            "this chain does not say where the Credence contracts are: \
                             pass --deployment FILE or run `credence chain deploy` first"
                        );
                    }
                    ChainDeployment::load(&path)?
                }
            },
        };
        ops::check_chain(client, &deployment)?;
        Ok(deployment)
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum ChainCommand {
    /// Chain id, height, time and contract addresses.
    Status,
    /// The dev accounts with their ether, OPEN, escrow deposit and stake.
    Accounts {
        /// How many dev accounts to list.
        #[arg(long, default_value_t = 10)]
        count: u32,
    },
    /// Deploy the contracts to the chain (usually an external one, with --rpc)
    /// and save their addresses to <home>/deployment.json.
    Deploy {
        /// Where to save the addresses [default: <home>/deployment.json].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace an existing deployment file.
        #[arg(long)]
        force: bool,
    },
}

/// Runs one `credence chain` subcommand.
pub(crate) fn run(command: &ChainCommand, connect: &Connect) -> Result<()> {
    match command {
        ChainCommand::Status => status(connect),
        ChainCommand::Accounts { count } => list_accounts(connect, *count),
        ChainCommand::Deploy { out, force } => deploy(connect, out.as_ref(), *force),
    }
}

fn status(connect: &Connect) -> Result<()> {
    let client = connect.client()?;
    // A chain without our contracts still has a status.
    let deployment = connect.deployment(&client).ok();
    let status = ops::status(&client, deployment)?;
    if connect.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    println!("rpc:        {}", connect.rpc_url());
    println!("chain id:   {}", status.chain_id);
    println!("client:     {}", status.client_version);
    println!(
        "block:      {} (timestamp {})",
        status.block_number, status.block_timestamp
    );
    match &status.deployment {
        Some(d) => {
            let c = &d.contracts;
            for (name, address) in [
                ("token", c.token),
                ("escrow", c.escrow),
                ("distributor", c.distributor),
                ("staking", c.staking),
                ("datanets", c.datanets),
                ("models", c.models),
                ("governor", c.governor),
                ("timelock", c.timelock),
                ("votes", c.votes),
            ] {
                println!("{name:<11} {address}");
            }
        }
        None => println!("contracts:  unknown (run `credence chain deploy`)"),
    }
    Ok(())
}

fn list_accounts(connect: &Connect, count: u32) -> Result<()> {
    let client = connect.client()?;
    let d = connect.deployment(&client)?.contracts;
    let rows = dev_wallets(DEV_MNEMONIC, count)?
        .iter()
        .map(|w| ops::balances(&client, &d, w.address()))
        .collect::<credence_ledger::Result<Vec<Balances>>>()?;
    if connect.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<3} {:<42} {:>12} {:>16} {:>12} {:>12}",
        "#", "address", "ETH", "OPEN", "escrow", "staked"
    );
    for (i, b) in rows.iter().enumerate() {
        println!(
            "{i:<3} {:<42} {:>12} {:>16} {:>12} {:>12}",
            b.address.to_string(),
            format_amount(b.eth_wei),
            format_amount(b.open),
            format_amount(b.escrow),
            format_amount(b.staked),
        );
    }
    Ok(())
}

fn deploy(connect: &Connect, out: Option<&PathBuf>, force: bool) -> Result<()> {
    let client = connect.signing_client()?;
    let path = match out {
        Some(p) => p.clone(),
        None => connect.home()?.join(DEPLOYMENT_FILE),
    };
    if path.exists() && !force {
        bail!(
            "{} already exists: pass --force to replace it",
            path.display()
        );
    }
    eprintln!(
        "deploying from {} on chain {}…",
        signer_of(&client),
        client.chain_id()
    );
    let deployment = genesis::deploy(&client, &ProtocolParams::default())?;
    deployment.save(&path)?;
    if connect.json {
        println!("{}", serde_json::to_string_pretty(&deployment)?);
    } else {
        println!("deployed; addresses saved to {}", path.display());
        println!("token   {}", deployment.contracts.token);
        println!("escrow  {}", deployment.contracts.escrow);
    }
    Ok(())
}

fn signer_of(client: &Client) -> String {
    client
        .signer_address()
        .map_or_else(|| "nobody".to_owned(), |a| a.to_string())
}

/// `credence deposit <amount>` arguments.
#[derive(Debug, Args)]
pub(crate) struct AmountArgs {
    /// Amount of OPEN, e.g. 10 or 1.5 (up to 18 decimals).
    amount: String,
    #[command(flatten)]
    connect: Connect,
}

/// Approves the escrow and deposits OPEN into it.
pub(crate) fn deposit(args: &AmountArgs) -> Result<()> {
    let amount = parse_amount(&args.amount)?;
    let client = args.connect.signing_client()?;
    let d = args.connect.deployment(&client)?.contracts;
    let sent = ops::deposit(&client, &d, amount)?;
    let balances = ops::balances(&client, &d, d_signer(&client)?)?;
    report(&args.connect, "deposited", amount, &sent, &balances)
}

/// Approves staking and stakes OPEN.
pub(crate) fn stake(args: &AmountArgs) -> Result<()> {
    let amount = parse_amount(&args.amount)?;
    let client = args.connect.signing_client()?;
    let d = args.connect.deployment(&client)?.contracts;
    let sent = ops::stake(&client, &d, amount)?;
    let balances = ops::balances(&client, &d, d_signer(&client)?)?;
    report(&args.connect, "staked", amount, &sent, &balances)
}

fn d_signer(client: &Client) -> Result<credence_ledger::Address> {
    client.signer_address().context("no signer")
}

fn report(
    connect: &Connect,
    what: &str,
    amount: credence_ledger::U256,
    sent: &[Receipt],
    b: &Balances,
) -> Result<()> {
    if connect.json {
        let txs: Vec<String> = sent.iter().map(|r| r.tx_hash.to_string()).collect();
        let out = serde_json::json!({ "action": what, "amount": amount, "transactions": txs, "balances": b });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    for r in sent {
        eprintln!(
            "tx {} (block {}, gas {})",
            r.tx_hash, r.block_number, r.gas_used
        );
    }
    println!(
        "{what} {} OPEN from {}; now {} OPEN in the wallet, {} in escrow, {} staked",
        format_amount(amount),
        b.address,
        format_amount(b.open),
        format_amount(b.escrow),
        format_amount(b.staked),
    );
    Ok(())
}

/// `credence unstake` arguments.
#[derive(Debug, Args)]
pub(crate) struct UnstakeArgs {
    /// OPEN to start unstaking [default: everything staked].
    #[arg(conflicts_with = "complete")]
    amount: Option<String>,
    /// Release the stake whose cooldown has ended instead of starting one.
    #[arg(long)]
    complete: bool,
    #[command(flatten)]
    connect: Connect,
}

/// Starts an unstake cooldown, or releases a cooled-down stake.
pub(crate) fn unstake(args: &UnstakeArgs) -> Result<()> {
    let client = args.connect.signing_client()?;
    let d = args.connect.deployment(&client)?.contracts;
    if args.complete {
        let (receipt, amount) = ops::complete_unstake(&client, &d)?;
        eprintln!("tx {}", receipt.tx_hash);
        println!("released {} OPEN", format_amount(amount));
        return Ok(());
    }
    let amount = args.amount.as_deref().map(parse_amount).transpose()?;
    let (receipt, release_at) = ops::request_unstake(&client, &d, amount)?;
    eprintln!("tx {}", receipt.tx_hash);
    println!("cooldown started; run `credence unstake --complete` after Unix time {release_at}");
    Ok(())
}
