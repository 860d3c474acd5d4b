//! Adapter cold load, in isolation: a rank-16 adapter on all seven
//! projections of SmolLM2-135M (the adapter `credence bench serve` times)
//! dropped from the RAM cache and loaded again from a local-directory store.
//!
//! `cargo bench -p credence-serve --bench cold_load [-- FILTER]`
//!
//! * `registry`: `AdapterRegistry::load` after `unload` (not timed), the
//!   whole path (store read, parse, validation, cache insert) `bench serve`
//!   measures, holding factors as f16 like a node by default (so reading
//!   the runtime file the registry wrote at registration).
//! * `registry_evicting`: the same with a full cache, so every load also
//!   evicts the least recently used adapter.
//! * `from_bytes_f16`, `from_bytes_f32`: parsing and validating the two
//!   files already in memory, holding the factors as f16 or f32.
//! * `from_runtime_bytes_f16`: the same from the runtime file in memory.
//! * `read_file`: reading the stored PEFT safetensors file (f32), the floor
//!   of a load that copies that file.
//!
//! The files are in the page cache, as they are right after being written.

#![allow(missing_docs)]

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use credence_model::config::{Arch, LlamaConfig, RopeStyle};
use credence_model::lora::{
    LoadOptions, LoraAdapter, LoraDtype, PROJECTIONS, WEIGHTS_FILE, random_adapter,
};
use credence_model::weights::LayerTensor;
use credence_serve::adapters::AdapterRegistry;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokio::runtime::Runtime;

/// SmolLM2-135M's shape (the project's default model), as loaded from its
/// llama GGUF (Q/K rows interleaved per head).
fn smollm2() -> LlamaConfig {
    LlamaConfig {
        arch: Arch::Llama,
        hidden_size: 576,
        intermediate_size: 1536,
        n_layers: 30,
        n_heads: 9,
        n_kv_heads: 3,
        head_dim: 64,
        vocab_size: 49152,
        context_length: 8192,
        rope_theta: 100_000.0,
        rms_eps: 1e-5,
        rope_style: RopeStyle::Interleaved,
        attention_bias: false,
    }
}

/// The registries hold adapters as a node does by default.
const DTYPE: LoraDtype = LoraDtype::F16;

const ALL: [LayerTensor; 7] = PROJECTIONS;

/// A registry in a fresh local directory holding `count` such adapters, with
/// room in RAM for `resident` of them; returns their ids.
fn registry(
    runtime: &Runtime,
    dir: &Path,
    base: &LlamaConfig,
    count: u64,
    resident: usize,
) -> (AdapterRegistry, Vec<String>) {
    let budget = resident * random_adapter(base, 16, &ALL, 0).resident_bytes_as(DTYPE);
    let registry = runtime
        .block_on(AdapterRegistry::open(
            base.clone(),
            Some(dir.to_owned()),
            budget,
            DTYPE,
        ))
        .expect("the registry opens");
    let ids = (0..count)
        .map(|seed| {
            let (config, weights) = random_adapter(base, 16, &ALL, seed)
                .to_peft_bytes()
                .expect("a random adapter encodes");
            let registered = registry.register(Bytes::from(config), Bytes::from(weights), None);
            runtime
                .block_on(registered)
                .expect("the adapter registers")
                .0
        })
        .collect();
    (registry, ids)
}

/// Times `iters` loads cycling through `ids`; each is unloaded first when
/// `unload`, outside the timed part (as `credence bench serve` does).
fn time_loads(
    runtime: &Runtime,
    registry: &AdapterRegistry,
    ids: &[String],
    unload: bool,
    iters: u64,
) -> Duration {
    let mut total = Duration::ZERO;
    for id in ids.iter().cycle().take(iters as usize) {
        if unload {
            registry.unload(id).expect("registered");
        }
        let started = Instant::now();
        let info = runtime
            .block_on(registry.load(id, false))
            .expect("the stored adapter loads");
        total += started.elapsed();
        black_box(info.bytes);
    }
    total
}

fn cold_load(c: &mut Criterion) {
    let base = smollm2();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let one_dir = tempfile::tempdir().expect("a temporary directory");
    let (one, one_id) = registry(&runtime, one_dir.path(), &base, 1, 4);
    // Eight stored adapters and room for four: every load evicts one, as
    // in a full cache under many-adapter traffic.
    let many_dir = tempfile::tempdir().expect("a temporary directory");
    let (many, many_ids) = registry(&runtime, many_dir.path(), &base, 8, 4);
    let (config, weights) = random_adapter(&base, 16, &ALL, 0)
        .to_peft_bytes()
        .expect("a random adapter encodes");
    let stored = one_dir.path().join(&one_id[0]).join(WEIGHTS_FILE);

    let mut group = c.benchmark_group("cold_load");
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Bytes(weights.len() as u64));
    group.bench_function("registry", |b| {
        b.iter_custom(|iters| time_loads(&runtime, &one, &one_id, true, iters))
    });
    group.bench_function("registry_evicting", |b| {
        b.iter_custom(|iters| time_loads(&runtime, &many, &many_ids, false, iters))
    });
    for dtype in [LoraDtype::F16, LoraDtype::F32] {
        let options = LoadOptions::held_as(dtype);
        group.bench_function(format!("from_bytes_{dtype}"), |b| {
            b.iter(|| {
                let a = LoraAdapter::from_bytes_with(&config, &weights, &base, &options)
                    .expect("valid adapter");
                black_box(a.resident_bytes())
            })
        });
    }
    for dtype in [DTYPE, LoraDtype::Q8] {
        let runtime = random_adapter(&base, 16, &ALL, 0)
            .to_dtype(dtype)
            .to_runtime_bytes()
            .expect("a random adapter encodes");
        let options = LoadOptions::held_as(dtype);
        group.bench_function(format!("from_runtime_bytes_{dtype}"), |b| {
            b.iter(|| {
                let a = LoraAdapter::from_runtime_bytes(&config, &runtime, &base, &options)
                    .expect("valid runtime file");
                black_box(a.resident_bytes())
            })
        });
    }
    group.bench_function("read_file", |b| b.iter(|| black_box(read(&stored))));
    group.finish();
}

fn read(path: &Path) -> usize {
    std::fs::read(path).expect("the stored file reads").len()
}

criterion_group!(benches, cold_load);
criterion_main!(benches);
