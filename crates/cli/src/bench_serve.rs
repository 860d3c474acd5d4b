//! `credence bench serve`: arguments, progress bar and printing around
//! [`credence_node::bench_serve`].

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use credence_model::lora::LoraDtype;
use credence_node::bench_serve::{ServeBenchConfig, run_serve_bench};
use credence_node::config::credence_home;
use credence_node::models;
use indicatif::{ProgressBar, ProgressStyle};

/// Multi-adapter serving under load: base, 1, N adapters (uniform and Zipf)
/// and the merge-per-request baseline, side by side.
#[derive(Debug, Args)]
pub(crate) struct ServeBenchArgs {
    /// A .gguf file, a safetensors checkpoint directory, or `default`.
    #[arg(long, default_value = "default")]
    model: String,
    /// Engine compute threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Concurrent streaming clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Completions per scenario.
    #[arg(long, default_value_t = 128)]
    requests: usize,
    /// Prompt length in tokens.
    #[arg(long, default_value_t = 32)]
    prompt_tokens: usize,
    /// Tokens generated per request.
    #[arg(long, default_value_t = 32)]
    gen_tokens: usize,
    /// Adapter counts to serve, each with uniform and Zipf traffic (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "64,1000")]
    adapters: Vec<usize>,
    /// RAM budget for decoded adapters, MiB.
    #[arg(long, default_value_t = 1024)]
    cache_mib: usize,
    /// Element type adapters are held in while served (f16, q8 or f32).
    #[arg(long, default_value_t = LoraDtype::F16)]
    lora_dtype: LoraDtype,
    /// Exponent of the Zipf traffic.
    #[arg(long, default_value_t = 1.0)]
    zipf_s: f64,
    /// Cold loads of a rank-16 all-linear adapter to time.
    #[arg(long, default_value_t = 100)]
    cold_loads: usize,
    /// Requests in the merge-per-request baseline (0 to skip).
    #[arg(long, default_value_t = 4)]
    merge_requests: usize,
    /// Paired rounds: each runs the base model, then each scenario of a
    /// group, and every ratio is taken against the base run of its round.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seed of the synthetic adapters and traffic.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Data directory [default: $HOME/.cache/credence]; the adapter store is made under it.
    #[arg(long, env = "CREDENCE_HOME")]
    home: Option<PathBuf>,
}

pub(crate) fn run(args: &ServeBenchArgs) -> Result<()> {
    let home = credence_home(args.home.as_deref())?;
    let config = ServeBenchConfig {
        model: models::resolve_model(&home, &args.model)?,
        threads: args.threads,
        clients: args.clients,
        requests: args.requests,
        prompt_tokens: args.prompt_tokens,
        gen_tokens: args.gen_tokens,
        adapter_counts: args.adapters.clone(),
        cache_mib: args.cache_mib,
        lora_dtype: args.lora_dtype,
        zipf_s: args.zipf_s,
        cold_loads: args.cold_loads,
        merge_requests: args.merge_requests,
        rounds: args.rounds,
        work_dir: home.join("bench"),
        seed: args.seed,
    };
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{msg:>28} [{bar:30}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let report = run_serve_bench(&config, &|stage, done, total| {
        if bar.message() != stage {
            bar.set_message(stage.to_owned());
            bar.reset();
        }
        bar.set_length(total);
        bar.set_position(done);
    });
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
