//! `credence wallet new|show|import`: the signing key other chain commands
//! use, kept in `<home>/wallet.key` (mode 0600). The key is printed only by
//! `wallet show --private-key`.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use credence_ledger::{Wallet, accounts};
use credence_node::config::credence_home;

/// The key file's name under the data directory.
pub(crate) const WALLET_FILE: &str = "wallet.key";

#[derive(Debug, Args)]
pub(crate) struct WalletArgs {
    /// Data directory holding wallet.key [default: $HOME/.cache/credence].
    #[arg(long, env = "CREDENCE_HOME", global = true)]
    home: Option<PathBuf>,
    #[command(subcommand)]
    command: WalletCommand,
}

#[derive(Debug, Subcommand)]
enum WalletCommand {
    /// Create a new random key and save it.
    New {
        /// Replace an existing wallet (its key is lost unless backed up).
        #[arg(long)]
        force: bool,
    },
    /// Print the wallet's address (and, when asked, its private key).
    Show {
        /// Also print the private key.
        #[arg(long)]
        private_key: bool,
    },
    /// Save a private key read from standard input (64 hex digits, 0x optional).
    Import {
        /// Replace an existing wallet.
        #[arg(long)]
        force: bool,
    },
}

/// Runs one `credence wallet` subcommand.
pub(crate) fn run(args: &WalletArgs) -> Result<()> {
    let path = credence_home(args.home.as_deref())?.join(WALLET_FILE);
    match args.command {
        WalletCommand::New { force } => {
            let wallet = Wallet::random()?;
            accounts::save_key(&path, &wallet, force)?;
            println!("{}", wallet.address());
            eprintln!(
                "key saved to {} (back it up: it is the only copy)",
                path.display()
            );
        }
        WalletCommand::Show { private_key } => {
            let wallet = accounts::load_key(&path).with_context(|| {
                format!("no wallet at {}: run `credence wallet new`", path.display())
            })?;
            println!("{}", wallet.address());
            if private_key {
                println!("{}", wallet.secret());
            }
        }
        WalletCommand::Import { force } => {
            // Read from stdin, never from an argument: arguments end up in
            // shell history and in other users' `ps` output.
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("cannot read the key from standard input")?;
            let wallet = Wallet::from_hex(&line)?;
            accounts::save_key(&path, &wallet, force)?;
            println!("{}", wallet.address());
            eprintln!("key saved to {}", path.display());
        }
    }
    Ok(())
}
