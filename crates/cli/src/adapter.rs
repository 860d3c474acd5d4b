//! `credence adapter …`: manage the LoRA adapters of a running node over HTTP.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use credence_node::client::{Adapter, ClientConfig, NodeClient};

/// Shortest id prefix accepted in place of a full id (as `ls` prints 12).
const MIN_ID_PREFIX: usize = 6;

/// Hex digits of an id shown in the `ls` table.
const SHORT_ID: usize = 12;

#[derive(Debug, Args)]
pub(crate) struct AdapterArgs {
    #[command(flatten)]
    connect: ClientConfig,
    /// Print the node's JSON instead of a summary.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AdapterCommand,
}

#[derive(Debug, Subcommand)]
enum AdapterCommand {
    /// Upload a PEFT adapter directory (adapter_config.json + adapter_model.safetensors).
    Add {
        /// The adapter directory.
        dir: PathBuf,
        /// A name to use in `model` besides the content id.
        #[arg(long)]
        alias: Option<String>,
    },
    /// List the registered adapters.
    #[command(visible_alias = "list")]
    Ls,
    /// Show one adapter (by id, id prefix or alias).
    Show {
        /// Adapter id, id prefix or alias.
        name: String,
    },
    /// Unregister an adapter and delete its files on the node.
    #[command(visible_alias = "remove")]
    Rm {
        /// Adapter id, id prefix or alias.
        name: String,
    },
    /// Load an adapter into the node's RAM cache now.
    Load {
        /// Adapter id, id prefix or alias.
        name: String,
    },
    /// Drop an adapter from the node's RAM cache.
    Unload {
        /// Adapter id, id prefix or alias.
        name: String,
    },
    /// Load an adapter and keep it from being evicted.
    Pin {
        /// Adapter id, id prefix or alias.
        name: String,
    },
    /// Let a pinned adapter be evicted again.
    Unpin {
        /// Adapter id, id prefix or alias.
        name: String,
    },
    /// Sell an adapter: register it in the chain's ModelRegistry with a
    /// price and fee split, owned by the signing wallet.
    Register(RegisterArgs),
}

#[derive(Debug, Args)]
struct RegisterArgs {
    /// Adapter id, id prefix or alias on the node.
    name: String,
    /// Price in OPEN per 1,000 tokens, e.g. 0.01.
    #[arg(long)]
    price: String,
    /// Owner/contributors/node shares of each fee, as percentages or basis points.
    #[arg(long, default_value = "30/60/10")]
    split: String,
    /// Root of a datanet version the adapter was trained on (repeatable);
    /// its contributors earn the contributors' share.
    #[arg(long = "datanet-root", value_name = "ROOT")]
    datanet_roots: Vec<credence_ledger::B256>,
    /// SHA-256 of the base model's weights [default: the default model's].
    #[arg(long, value_name = "HASH")]
    base_model_hash: Option<credence_ledger::B256>,
    /// JSON-RPC endpoint of an external chain [default: the node's /rpc].
    #[arg(long, value_name = "URL")]
    rpc: Option<String>,
    /// Sign with dev account N of the public dev mnemonic instead of <home>/wallet.key.
    #[arg(long, value_name = "N")]
    dev_account: Option<u32>,
}

/// Runs one `credence adapter` subcommand.
pub(crate) fn run(args: &AdapterArgs) -> Result<()> {
    let client = NodeClient::from_config(&args.connect)?;
    match &args.command {
        AdapterCommand::Add { dir, alias } => add(&client, dir, alias.as_deref(), args.json),
        AdapterCommand::Ls => list(&client, args.json),
        AdapterCommand::Show { name } => {
            let adapter = client.get_adapter(&resolve(&client, name)?)?;
            if args.json {
                print_json(&adapter)
            } else {
                print!("{}", details(&adapter));
                Ok(())
            }
        }
        AdapterCommand::Rm { name } => {
            let name = resolve(&client, name)?;
            client.remove_adapter(&name)?;
            if !args.json {
                println!("removed {name}");
            }
            Ok(())
        }
        AdapterCommand::Load { name } => act(&client, name, args.json, NodeClient::load_adapter),
        AdapterCommand::Unload { name } => {
            act(&client, name, args.json, NodeClient::unload_adapter)
        }
        AdapterCommand::Pin { name } => act(&client, name, args.json, NodeClient::pin_adapter),
        AdapterCommand::Unpin { name } => act(&client, name, args.json, NodeClient::unpin_adapter),
        AdapterCommand::Register(register) => sell(&client, &args.connect, register, args.json),
    }
}

fn add(client: &NodeClient, dir: &std::path::Path, alias: Option<&str>, json: bool) -> Result<()> {
    let added = client
        .add_adapter(dir, alias)
        .with_context(|| format!("cannot add the adapter in {}", dir.display()))?;
    if json {
        return print_json(&added.adapter);
    }
    let how = if added.created {
        "added"
    } else {
        "already registered"
    };
    println!("{how}: {}", added.adapter.id);
    print!("{}", details(&added.adapter));
    Ok(())
}

/// Registers an adapter on-chain with the signer as its owner.
fn sell(client: &NodeClient, connect: &ClientConfig, r: &RegisterArgs, json: bool) -> Result<()> {
    let adapter = client.get_adapter(&resolve(client, &r.name)?)?;
    let wallet = crate::pay::wallet(connect.home.as_deref(), r.dev_account)?
        .context("no wallet: run `credence wallet new` (or `import`), or pass --dev-account N")?;
    let rpc = r
        .rpc
        .clone()
        .unwrap_or_else(|| format!("{}/rpc", client.url()));
    let chain = credence_ledger::Client::http(&rpc, Some(wallet))
        .with_context(|| format!("cannot reach the chain at {rpc}"))?;
    let deployment = credence_ledger::ops::remote_deployment(&chain)?.context(
        "this chain does not say where the contracts are; use `credence chain` commands",
    )?;
    let base_model_hash = match r.base_model_hash {
        Some(hash) => hash,
        None => credence_node::pay::default_base_model_hash()
            .context("pass --base-model-hash (the SHA-256 of the base model file)")?,
    };
    let registration = credence_node::pay::Registration {
        content_id: adapter
            .id
            .parse()
            .context("the adapter id is not a 32-byte hex hash")?,
        base_model_hash,
        datanet_roots: r.datanet_roots.clone(),
        price_per_1k: u128::try_from(credence_ledger::units::parse_amount(&r.price)?)
            .context("--price is too large")?,
        split: credence_node::pay::parse_split(&r.split).map_err(anyhow::Error::msg)?,
    };
    let id =
        credence_node::pay::register_adapter(&chain, deployment.contracts.models, &registration)?;
    if json {
        let out = serde_json::json!({ "adapter": adapter.id, "registryId": id.to_string() });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "registered {} as #{id} at {} OPEN per 1k tokens (split {})",
            adapter.id, r.price, r.split
        );
    }
    Ok(())
}

fn list(client: &NodeClient, json: bool) -> Result<()> {
    let adapters = client.list_adapters()?;
    if json {
        let list = List {
            object: "list",
            data: &adapters,
        };
        let text = serde_json::to_string_pretty(&list).context("cannot print the JSON")?;
        println!("{text}");
        return Ok(());
    }
    if adapters.is_empty() {
        eprintln!("no adapters registered; add one with `credence adapter add <DIR>`");
        return Ok(());
    }
    print!("{}", table(&adapters));
    Ok(())
}

/// Runs a state change (load, pin, …) and prints the adapter's new state.
fn act(
    client: &NodeClient,
    name: &str,
    json: bool,
    action: fn(&NodeClient, &str) -> credence_node::client::Result<Adapter>,
) -> Result<()> {
    let adapter = action(client, &resolve(client, name)?)?;
    if json {
        return print_json(&adapter);
    }
    println!("{}: {}", display_name(&adapter), state(&adapter));
    Ok(())
}

/// The name to send: `name` itself, unless it is an unambiguous prefix of
/// exactly one adapter's id (and no alias), as `ls` shows ids shortened.
fn resolve(client: &NodeClient, name: &str) -> Result<String> {
    let hex = name
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !hex || !(MIN_ID_PREFIX..64).contains(&name.len()) {
        return Ok(name.to_owned());
    }
    let adapters = client.list_adapters()?;
    if adapters.iter().any(|a| a.aliases.iter().any(|x| x == name)) {
        return Ok(name.to_owned());
    }
    let mut matching = adapters.iter().filter(|a| a.id.starts_with(name));
    match (matching.next(), matching.next()) {
        (Some(only), None) => Ok(only.id.clone()),
        (Some(_), Some(_)) => {
            anyhow::bail!("the id prefix `{name}` matches several adapters; give more digits")
        }
        // Let the node report it as unknown, in its words.
        (None, _) => Ok(name.to_owned()),
    }
}

fn print_json(value: &Adapter) -> Result<()> {
    let text = serde_json::to_string_pretty(value).context("cannot print the JSON")?;
    println!("{text}");
    Ok(())
}

/// The node's list shape, with fields in the node's order.
#[derive(serde::Serialize)]
struct List<'a> {
    object: &'static str,
    data: &'a [Adapter],
}

/// The first alias, else the short id.
fn display_name(adapter: &Adapter) -> String {
    adapter
        .aliases
        .first()
        .cloned()
        .unwrap_or_else(|| short_id(&adapter.id).to_owned())
}

fn short_id(id: &str) -> &str {
    id.get(..SHORT_ID).unwrap_or(id)
}

fn ranks(adapter: &Adapter) -> String {
    if adapter.min_rank == adapter.max_rank {
        adapter.max_rank.to_string()
    } else {
        format!("{}-{}", adapter.min_rank, adapter.max_rank)
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / f64::from(1u32 << 20))
}

fn yes_no(flag: bool) -> &'static str {
    if flag { "yes" } else { "no" }
}

fn state(adapter: &Adapter) -> String {
    let residency = if adapter.resident {
        "resident"
    } else {
        "not resident"
    };
    let pinned = if adapter.pinned { ", pinned" } else { "" };
    format!("{residency}{pinned}, in use by {}", adapter.in_use)
}

/// `show`'s one field per line.
fn details(adapter: &Adapter) -> String {
    let aliases = if adapter.aliases.is_empty() {
        "-".to_owned()
    } else {
        adapter.aliases.join(", ")
    };
    format!(
        "id:       {}\naliases:  {aliases}\nmodules:  {}\nrank:     {}\nsize:     {} MiB\nstate:    {}\n",
        adapter.id,
        adapter.modules,
        ranks(adapter),
        mib(adapter.bytes),
        state(adapter),
    )
}

/// `ls`'s table, columns padded to their widest cell.
fn table(adapters: &[Adapter]) -> String {
    let header = [
        "ID", "ALIASES", "RANK", "SIZE MiB", "RESIDENT", "PINNED", "IN USE",
    ];
    let rows: Vec<[String; 7]> = adapters
        .iter()
        .map(|a| {
            let aliases = if a.aliases.is_empty() {
                "-".to_owned()
            } else {
                a.aliases.join(",")
            };
            [
                short_id(&a.id).to_owned(),
                aliases,
                ranks(a),
                mib(a.bytes),
                yes_no(a.resident).to_owned(),
                yes_no(a.pinned).to_owned(),
                a.in_use.to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut push_row = |cells: &mut dyn Iterator<Item = &str>| {
        let line: Vec<String> = cells
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    };
    push_row(&mut header.iter().copied());
    for row in &rows {
        push_row(&mut row.iter().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adapter(id: &str, aliases: &[&str], ranks: (usize, usize)) -> Adapter {
        Adapter {
            id: id.to_owned(),
            aliases: aliases.iter().map(|a| (*a).to_owned()).collect(),
            modules: 60,
            min_rank: ranks.0,
            max_rank: ranks.1,
            bytes: 3 << 19,
            created: 0,
            resident: true,
            pinned: false,
            in_use: 0,
            extra: serde_json::Map::new(),
        }
    }

    #[test]
    fn the_table_aligns_columns_and_shortens_ids() {
        let id = "ab".repeat(32);
        let text = table(&[
            adapter(&id, &["style", "tone"], (8, 8)),
            adapter(&"cd".repeat(32), &[], (4, 16)),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[0].starts_with("ID            ALIASES     RANK"),
            "{text}"
        );
        assert!(
            lines[1].starts_with("abababababab  style,tone  8 "),
            "{text}"
        );
        assert!(lines[2].contains("  -           4-16  1.5"), "{text}");
        assert!(!text.contains(&id), "full ids are shortened");
    }

    #[test]
    fn details_name_every_field() {
        let text = details(&adapter(&"ef".repeat(32), &[], (2, 4)));
        for needle in [
            "aliases:  -",
            "rank:     2-4",
            "size:     1.5 MiB",
            "resident, in use by 0",
        ] {
            assert!(text.contains(needle), "{needle}: {text}");
        }
    }
}
