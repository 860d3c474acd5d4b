//! `credence datanet …`: datanets on this node's disk, from the terminal.
//!
//! Every write is signed with the caller's EVM key, read from `--key-file` or
//! `CREDENCE_KEY` (64 hex digits; never on the command line, where other users
//! could see it in the process list). Data lives in `$CREDENCE_HOME/datanets`,
//! the same store the node serves over HTTP.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use credence_datanet::hash::sha256_reader;
use credence_datanet::ingest::{Chunking, CsvMapping, Format, Limits};
use credence_datanet::merkle::InclusionProof;
use credence_datanet::model::{
    AccessDecision, AccessRequest, CommitRequest, ContributionHeader, CreateDatanet, CuratorChange,
    Decision, Review, Signed, Status, Visibility,
};
use credence_datanet::sign::LocalSigner;
use credence_datanet::{Address, Datanets, Hash32, now_millis};
use credence_node::config::credence_home;
use indicatif::{ProgressBar, ProgressStyle};

/// Datanet subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum DatanetCommand {
    /// Print a new random key and its address (keep the key secret).
    Keygen,
    /// Create a datanet owned by your key.
    Create(CreateArgs),
    /// Contribute a file, signed by your key.
    Add(AddArgs),
    /// List records, then accept or reject them (curators and the owner).
    Review(ReviewArgs),
    /// Commit the accepted records as a new version.
    Commit(CommitArgs),
    /// Show a datanet's versions, newest first.
    Log(NameArg),
    /// Show records added and removed between two versions.
    Diff(DiffArgs),
    /// Write a version as a JSONL training set plus its manifest.
    Export(ExportArgs),
    /// Write an inclusion proof for one record of a version.
    Prove(ProveArgs),
    /// Check an inclusion proof file on its own.
    Verify {
        /// The proof (JSON, as written by `prove`).
        proof: PathBuf,
    },
    /// Ask the owner of a permissioned datanet for read access.
    Request(RequestArgs),
    /// Grant (or with --deny, refuse) an address read access (owner only).
    Grant(GrantArgs),
    /// Add or remove a curator (owner only).
    #[command(subcommand)]
    Curator(CuratorCommand),
    /// Show contributors' accepted, rejected and flagged counts.
    Contributors(NameArg),
}

/// Options every datanet command takes.
#[derive(Debug, Args)]
pub(crate) struct Common {
    /// Data directory [default: $HOME/.cache/credence].
    #[arg(long, env = "CREDENCE_HOME", global = true)]
    home: Option<PathBuf>,
    /// File holding your secret key (64 hex digits); or set CREDENCE_KEY.
    #[arg(long, global = true)]
    key_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct NameArg {
    /// The datanet.
    name: String,
}

#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// Name and id: lowercase letters, digits and `-`.
    name: String,
    /// License of the data (e.g. CC-BY-4.0).
    #[arg(long)]
    license: String,
    /// What the datanet is for.
    #[arg(long, default_value = "")]
    description: String,
    /// Domain tags (comma-separated).
    #[arg(long, value_delimiter = ',')]
    tags: Vec<String>,
    /// Make it readable only by addresses you grant.
    #[arg(long)]
    permissioned: bool,
    /// A curator's address besides you (repeatable).
    #[arg(long)]
    curator: Vec<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FormatArg {
    Jsonl,
    Csv,
    Text,
    Markdown,
}

#[derive(Debug, Args)]
pub(crate) struct AddArgs {
    /// The datanet.
    name: String,
    /// The file to contribute.
    file: PathBuf,
    /// File format [default: from the extension].
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// CSV: column with plain text.
    #[arg(long)]
    text_column: Option<String>,
    /// CSV: column with the instruction.
    #[arg(long)]
    instruction_column: Option<String>,
    /// CSV: column with the optional input.
    #[arg(long)]
    input_column: Option<String>,
    /// CSV: column with the output.
    #[arg(long)]
    output_column: Option<String>,
    /// Text/Markdown: characters per chunk.
    #[arg(long, default_value_t = 2000)]
    chunk_chars: usize,
    /// Text/Markdown: characters shared by consecutive chunks.
    #[arg(long, default_value_t = 200)]
    chunk_overlap: usize,
}

#[derive(Debug, Args)]
pub(crate) struct ReviewArgs {
    /// The datanet.
    name: String,
    /// Entries to accept (comma-separated).
    #[arg(long, value_delimiter = ',')]
    accept: Vec<i64>,
    /// Entries to reject (comma-separated; needs --reason).
    #[arg(long, value_delimiter = ',', requires = "reason")]
    reject: Vec<i64>,
    /// Why the --reject entries are rejected.
    #[arg(long)]
    reason: Option<String>,
    /// Accept every pending record.
    #[arg(long)]
    accept_all_pending: bool,
    /// Only list records in this state (pending, accepted, rejected, duplicate).
    #[arg(long)]
    status: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct CommitArgs {
    /// The datanet.
    name: String,
    /// What changed.
    #[arg(long, short)]
    message: String,
}

#[derive(Debug, Args)]
pub(crate) struct DiffArgs {
    /// The datanet.
    name: String,
    /// The older version [default: the empty datanet].
    #[arg(long)]
    from: Option<String>,
    /// The newer version [default: the head].
    #[arg(long)]
    to: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    /// The datanet.
    name: String,
    /// The version id [default: the head]. (`--version` prints the program's version.)
    #[arg(long)]
    at: Option<String>,
    /// Where to write the JSONL.
    #[arg(long, short)]
    out: PathBuf,
    /// Where to write the manifest [default: <out>.manifest.json].
    #[arg(long)]
    manifest: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct ProveArgs {
    /// The datanet.
    name: String,
    /// The record's content id.
    record: String,
    /// The version id [default: the head]. (`--version` prints the program's version.)
    #[arg(long)]
    at: Option<String>,
    /// Write the proof here instead of stdout.
    #[arg(long, short)]
    out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct RequestArgs {
    /// The datanet.
    name: String,
    /// Why you want access.
    #[arg(long, default_value = "")]
    message: String,
}

/// `credence datanet curator …`.
#[derive(Debug, Subcommand)]
pub(crate) enum CuratorCommand {
    /// Let an address accept and reject records and commit versions.
    Add(CuratorArgs),
    /// Take that right away again.
    Rm(CuratorArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CuratorArgs {
    /// The datanet.
    name: String,
    /// The curator's address.
    address: String,
}

#[derive(Debug, Args)]
pub(crate) struct GrantArgs {
    /// The datanet.
    name: String,
    /// The address to grant or deny.
    address: String,
    /// Deny instead of grant.
    #[arg(long)]
    deny: bool,
}

/// Runs one datanet command.
pub(crate) fn run(command: DatanetCommand, common: &Common) -> Result<()> {
    if matches!(command, DatanetCommand::Keygen) {
        return keygen();
    }
    if let DatanetCommand::Verify { proof } = &command {
        return verify(proof);
    }
    let home = credence_home(common.home.as_deref())?;
    let nets = Datanets::open(&home.join("datanets"), Limits::default())
        .context("cannot open the datanet store")?;
    let key = || signer(common.key_file.as_deref());
    match command {
        DatanetCommand::Keygen | DatanetCommand::Verify { .. } => Ok(()),
        DatanetCommand::Create(args) => create(&nets, args, &key()?),
        DatanetCommand::Add(args) => add(&nets, &args, &key()?),
        DatanetCommand::Review(args) => review(&nets, &args, common.key_file.as_deref()),
        DatanetCommand::Commit(args) => commit(&nets, &args, &key()?),
        DatanetCommand::Log(args) => log(&nets, &args.name),
        DatanetCommand::Diff(args) => diff(&nets, &args),
        DatanetCommand::Export(args) => export(&nets, &args, common.key_file.as_deref()),
        DatanetCommand::Prove(args) => prove(&nets, &args, common.key_file.as_deref()),
        DatanetCommand::Request(args) => request(&nets, args, &key()?),
        DatanetCommand::Grant(args) => grant(&nets, &args, &key()?),
        DatanetCommand::Curator(change) => curator(&nets, change, &key()?),
        DatanetCommand::Contributors(args) => contributors(&nets, &args.name),
    }
}

fn signer(key_file: Option<&Path>) -> Result<LocalSigner> {
    let text = match key_file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read key file {}", path.display()))?,
        None => std::env::var("CREDENCE_KEY").context(
            "no key: pass --key-file or set CREDENCE_KEY (`credence datanet keygen` makes one)",
        )?,
    };
    Ok(LocalSigner::from_hex(&text)?)
}

/// The caller's address when a key is given (to read permissioned datanets).
fn optional_reader(key_file: Option<&Path>) -> Result<Option<Address>> {
    let has_key = key_file.is_some() || std::env::var_os("CREDENCE_KEY").is_some();
    if !has_key {
        return Ok(None);
    }
    Ok(Some(signer(key_file)?.address()))
}

fn keygen() -> Result<()> {
    let mut secret = [0u8; 32];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut secret))
        .context("cannot read /dev/urandom")?;
    let signer = LocalSigner::from_bytes(&secret)?;
    println!("key:     0x{}", hex_string(&secret));
    println!("address: {}", signer.address());
    eprintln!("store the key in a file readable only by you and pass it with --key-file");
    Ok(())
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn create(nets: &Datanets, args: CreateArgs, key: &LocalSigner) -> Result<()> {
    let curators = args
        .curator
        .iter()
        .map(|c| c.parse())
        .collect::<Result<Vec<Address>, _>>()?;
    let spec = CreateDatanet {
        name: args.name,
        description: args.description,
        tags: args.tags,
        license: args.license,
        visibility: if args.permissioned {
            Visibility::Permissioned
        } else {
            Visibility::Public
        },
        curators,
    };
    let datanet = nets.create(&Signed::sign(spec, key)?)?;
    println!(
        "created datanet `{}` owned by {}",
        datanet.id, datanet.owner
    );
    Ok(())
}

fn format_of(args: &AddArgs) -> Result<Format> {
    let by_extension = || match args.file.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "jsonl" | "ndjson" | "json" => Some(FormatArg::Jsonl),
        "csv" => Some(FormatArg::Csv),
        "txt" | "text" => Some(FormatArg::Text),
        "md" | "markdown" => Some(FormatArg::Markdown),
        _ => None,
    };
    let Some(kind) = args.format.or_else(by_extension) else {
        bail!("cannot tell the format from the file name; pass --format");
    };
    let chunking = Chunking {
        chars: args.chunk_chars,
        overlap: args.chunk_overlap,
    };
    Ok(match kind {
        FormatArg::Jsonl => Format::Jsonl,
        FormatArg::Csv => Format::Csv(CsvMapping {
            text: args.text_column.clone(),
            instruction: args.instruction_column.clone(),
            input: args.input_column.clone(),
            output: args.output_column.clone(),
        }),
        FormatArg::Text => Format::Text(chunking),
        FormatArg::Markdown => Format::Markdown(chunking),
    })
}

fn sha256_file(path: &Path, bar: &ProgressBar) -> Result<Hash32> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let hash = sha256_reader(BufReader::new(file), &mut |n| bar.set_position(n))?;
    Ok(hash)
}

fn bytes_bar(len: u64, message: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(message.to_owned());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn add(nets: &Datanets, args: &AddArgs, key: &LocalSigner) -> Result<()> {
    let format = format_of(args)?;
    let len = std::fs::metadata(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?
        .len();
    // The signature covers the file's hash, so the file is read twice: once to
    // sign, once to ingest (never held in memory).
    let bar = bytes_bar(len, "hashing");
    let file_sha256 = sha256_file(&args.file, &bar)?;
    let source = args
        .file
        .file_name()
        .map_or_else(|| "upload".into(), |n| n.to_string_lossy().into_owned());
    let header = ContributionHeader {
        datanet: args.name.clone(),
        file_sha256,
        format,
        source,
    };
    let signed = Signed::sign(header, key)?;
    bar.reset();
    bar.set_message("ingesting");
    let file = File::open(&args.file)?;
    let report = nets.contribute(&signed, BufReader::new(file), &mut |p| {
        bar.set_position(p.bytes);
        bar.set_message(format!("ingesting ({} records)", p.records));
    });
    bar.finish_and_clear();
    let report = report?;
    println!("contribution {} by {}", report.id, report.contributor);
    println!(
        "  {} pending, {} exact duplicates, {} near duplicates, {} bad lines",
        report.pending, report.exact_duplicates, report.near_duplicates, report.bad_lines
    );
    for problem in &report.problems {
        println!("  {problem}");
    }
    Ok(())
}

fn review(nets: &Datanets, args: &ReviewArgs, key_file: Option<&Path>) -> Result<()> {
    let deciding = !args.accept.is_empty() || !args.reject.is_empty() || args.accept_all_pending;
    if !deciding {
        return list_records(nets, args, key_file);
    }
    let key = signer(key_file)?;
    let mut decisions: Vec<Decision> = args
        .accept
        .iter()
        .map(|&entry| Decision {
            entry,
            accept: true,
            reason: String::new(),
        })
        .collect();
    if args.accept_all_pending {
        let reader = Some(key.address());
        let mut after = 0;
        loop {
            let page = nets.records(
                &args.name,
                Some(Status::Pending),
                after,
                1000,
                reader.as_ref(),
            )?;
            let Some(last) = page.last() else { break };
            after = last.entry;
            decisions.extend(page.iter().map(|r| Decision {
                entry: r.entry,
                accept: true,
                reason: String::new(),
            }));
        }
    }
    let reason = args.reason.clone().unwrap_or_default();
    decisions.extend(args.reject.iter().map(|&entry| Decision {
        entry,
        accept: false,
        reason: reason.clone(),
    }));
    if decisions.is_empty() {
        println!("nothing to review");
        return Ok(());
    }
    let payload = Review {
        datanet: args.name.clone(),
        decisions,
        time: now_millis(),
    };
    let outcomes = nets.review(&Signed::sign(payload, &key)?)?;
    let count = |s: Status| outcomes.iter().filter(|o| o.status == s).count();
    println!(
        "{} accepted, {} rejected, {} refused as duplicates of accepted records",
        count(Status::Accepted),
        count(Status::Rejected),
        count(Status::Duplicate)
    );
    for o in outcomes.iter().filter(|o| o.status == Status::Duplicate) {
        if let Some(owner) = o.duplicate_of {
            println!("  entry {} copies accepted entry {owner}", o.entry);
        }
    }
    Ok(())
}

fn list_records(nets: &Datanets, args: &ReviewArgs, key_file: Option<&Path>) -> Result<()> {
    let status = args
        .status
        .as_deref()
        .map(str::parse::<Status>)
        .transpose()?;
    let reader = optional_reader(key_file)?;
    let mut after = 0;
    let mut stdout = std::io::stdout().lock();
    loop {
        let page = nets.records(&args.name, status, after, 1000, reader.as_ref())?;
        let Some(last) = page.last() else { break };
        after = last.entry;
        for r in &page {
            let text: String = r.example.text().chars().take(70).collect();
            let note = r.reason.as_deref().unwrap_or("");
            writeln!(
                stdout,
                "{:>6} {:<9} {} {}:{} {} {}",
                r.entry,
                format!("{:?}", r.status).to_lowercase(),
                r.contributor,
                r.source,
                r.line,
                text.replace('\n', " "),
                note
            )?;
        }
    }
    Ok(())
}

fn commit(nets: &Datanets, args: &CommitArgs, key: &LocalSigner) -> Result<()> {
    let head = nets.get(&args.name)?.head;
    let payload = CommitRequest {
        datanet: args.name.clone(),
        parent: head,
        message: args.message.clone(),
        time: now_millis() / 1000,
    };
    let version = nets.commit(&Signed::sign(payload, key)?)?;
    println!(
        "version {} ({}): {} records, root {}",
        version.number, version.id, version.records, version.root
    );
    Ok(())
}

fn log(nets: &Datanets, name: &str) -> Result<()> {
    for v in nets.log(name)? {
        println!("version {} {}", v.number, v.id);
        println!(
            "  author {}  time {}  records {}",
            v.author, v.time, v.records
        );
        println!("  root   {}", v.root);
        println!("  {}", v.message);
    }
    Ok(())
}

/// A version id given on the command line, or the head.
fn version_or_head(nets: &Datanets, name: &str, given: Option<&str>) -> Result<Hash32> {
    match given {
        Some(text) => Ok(text.parse()?),
        None => nets
            .get(name)?
            .head
            .with_context(|| format!("datanet `{name}` has no version yet")),
    }
}

fn diff(nets: &Datanets, args: &DiffArgs) -> Result<()> {
    let to = version_or_head(nets, &args.name, args.to.as_deref())?;
    let from = args.from.as_deref().map(str::parse::<Hash32>).transpose()?;
    let diff = nets.diff(&args.name, from.as_ref(), &to)?;
    let mut per_contributor = std::collections::BTreeMap::<Address, (usize, usize)>::new();
    for e in &diff.added {
        per_contributor.entry(e.contributor).or_default().0 += 1;
        println!("+ {} {}", e.id, e.contributor);
    }
    for e in &diff.removed {
        per_contributor.entry(e.contributor).or_default().1 += 1;
        println!("- {} {}", e.id, e.contributor);
    }
    println!("{} added, {} removed", diff.added.len(), diff.removed.len());
    for (address, (added, removed)) in per_contributor {
        println!("  {address}: +{added} -{removed}");
    }
    Ok(())
}

fn export(nets: &Datanets, args: &ExportArgs, key_file: Option<&Path>) -> Result<()> {
    let version = version_or_head(nets, &args.name, args.at.as_deref())?;
    let reader = optional_reader(key_file)?;
    // Written next to the target and renamed, so a crash never leaves half an export.
    let partial = args.out.with_extension("partial");
    let file =
        File::create(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
    let mut out = BufWriter::new(file);
    let manifest = nets.export(&args.name, &version, reader.as_ref(), &mut out)?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&partial, &args.out)?;
    let manifest_path = args
        .manifest
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.manifest.json", args.out.display())));
    std::fs::write(&manifest_path, serde_json::to_vec_pretty(&manifest)?)?;
    println!(
        "wrote {} records to {} (sha256 {}), manifest {}",
        manifest.records,
        args.out.display(),
        manifest.export_sha256,
        manifest_path.display()
    );
    Ok(())
}

fn prove(nets: &Datanets, args: &ProveArgs, key_file: Option<&Path>) -> Result<()> {
    let version = version_or_head(nets, &args.name, args.at.as_deref())?;
    let record: Hash32 = args.record.parse()?;
    let proof = nets.prove(
        &args.name,
        &version,
        &record,
        optional_reader(key_file)?.as_ref(),
    )?;
    let json = serde_json::to_string_pretty(&proof)?;
    match &args.out {
        Some(path) => std::fs::write(path, json + "\n")?,
        None => println!("{json}"),
    }
    Ok(())
}

fn verify(path: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let proof: InclusionProof = serde_json::from_str(&text).context("not an inclusion proof")?;
    if !proof.verify() {
        bail!(
            "INVALID: record {} is not proven to be in root {}",
            proof.record,
            proof.root
        );
    }
    println!(
        "valid: record {} is in version {} of `{}` (root {})",
        proof.record, proof.version, proof.datanet, proof.root
    );
    Ok(())
}

fn request(nets: &Datanets, args: RequestArgs, key: &LocalSigner) -> Result<()> {
    let payload = AccessRequest {
        datanet: args.name,
        message: args.message,
        time: now_millis(),
    };
    let access = nets.request_access(&Signed::sign(payload, key)?)?;
    println!(
        "{} on `{}`: {}",
        access.address, access.datanet, access.status
    );
    Ok(())
}

fn grant(nets: &Datanets, args: &GrantArgs, key: &LocalSigner) -> Result<()> {
    let payload = AccessDecision {
        datanet: args.name.clone(),
        address: args.address.parse()?,
        grant: !args.deny,
        time: now_millis(),
    };
    let access = nets.decide_access(&Signed::sign(payload, key)?)?;
    println!(
        "{} on `{}`: {}",
        access.address, access.datanet, access.status
    );
    Ok(())
}

fn curator(nets: &Datanets, change: CuratorCommand, key: &LocalSigner) -> Result<()> {
    let (args, add) = match change {
        CuratorCommand::Add(args) => (args, true),
        CuratorCommand::Rm(args) => (args, false),
    };
    let payload = CuratorChange {
        datanet: args.name,
        address: args.address.parse()?,
        add,
        time: now_millis(),
    };
    let datanet = nets.change_curator(&Signed::sign(payload, key)?)?;
    let curators: Vec<String> = datanet.curators.iter().map(ToString::to_string).collect();
    println!(
        "curators of `{}`: {}",
        datanet.id,
        if curators.is_empty() {
            "none besides the owner".into()
        } else {
            curators.join(", ")
        }
    );
    Ok(())
}

fn contributors(nets: &Datanets, name: &str) -> Result<()> {
    println!(
        "{:<42} {:>8} {:>8} {:>8} {:>8}",
        "address", "accepted", "rejected", "flagged", "pending"
    );
    for r in nets.reputation(name)? {
        println!(
            "{:<42} {:>8} {:>8} {:>8} {:>8}",
            r.address.to_string(),
            r.accepted,
            r.rejected,
            r.flagged,
            r.pending
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: DatanetCommand,
        #[command(flatten)]
        common: Common,
    }

    fn run_args(home: &Path, key: &Path, args: &[&str]) -> Result<()> {
        let mut argv = vec![
            "datanet".to_owned(),
            "--home".to_owned(),
            home.display().to_string(),
        ];
        argv.extend(["--key-file".to_owned(), key.display().to_string()]);
        argv.extend(args.iter().map(|a| (*a).to_owned()));
        let cli = Cli::try_parse_from(argv)?;
        run(cli.command, &cli.common)
    }

    /// The commands a new user runs, in order, against a real store on disk.
    #[test]
    fn create_add_review_commit_export_prove_verify() {
        let dir = std::env::temp_dir().join(format!("credence-cli-datanet-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let key = dir.join("owner.key");
        std::fs::write(&key, format!("0x{}\n", "11".repeat(32))).expect("key");
        let data = dir.join("data.jsonl");
        std::fs::write(
            &data,
            "{\"text\": \"alpha beta gamma delta\"}\n{\"instruction\": \"say hi\", \"output\": \"hi\"}\n",
        )
        .expect("data");
        let home = dir.join("home");
        let path = |p: &Path| p.display().to_string();
        run_args(&home, &key, &["create", "cli-test", "--license", "MIT"]).expect("create");
        run_args(&home, &key, &["add", "cli-test", &path(&data)]).expect("add");
        run_args(&home, &key, &["review", "cli-test"]).expect("list");
        run_args(&home, &key, &["review", "cli-test", "--accept-all-pending"]).expect("review");
        run_args(&home, &key, &["commit", "cli-test", "-m", "v1"]).expect("commit");
        run_args(&home, &key, &["log", "cli-test"]).expect("log");
        run_args(&home, &key, &["diff", "cli-test"]).expect("diff");
        let out = dir.join("export.jsonl");
        run_args(&home, &key, &["export", "cli-test", "--out", &path(&out)]).expect("export");
        let exported = std::fs::read_to_string(&out).expect("export file");
        assert_eq!(exported.lines().count(), 2);
        let first: serde_json::Value =
            serde_json::from_str(exported.lines().next().unwrap_or_default()).expect("json");
        let record = first["id"].as_str().expect("id").to_owned();
        let proof = dir.join("proof.json");
        run_args(
            &home,
            &key,
            &["prove", "cli-test", &record, "--out", &path(&proof)],
        )
        .expect("prove");
        run_args(&home, &key, &["verify", &path(&proof)]).expect("verify");
        let tampered = std::fs::read_to_string(&proof)
            .expect("proof")
            .replace(&record[..6], "0xffff");
        std::fs::write(&proof, tampered).expect("write");
        assert!(run_args(&home, &key, &["verify", &path(&proof)]).is_err());
        run_args(&home, &key, &["contributors", "cli-test"]).expect("contributors");
        assert!(run_args(&home, &key, &["add", "missing", &path(&data)]).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
