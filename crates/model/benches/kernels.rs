//! Quantised matmul kernels: matvec and batched matmul per format, and the full
//! set of SmolLM2-135M projections for one decode step and a 512-token prompt.
//! Also the LoRA delta of a decode step for 16 sequences, grouped by adapter
//! versus one sequence at a time.
//!
//! `cargo bench -p credence-model --bench kernels [-- FILTER]`; the SIMD path
//! can be forced lower with `CREDENCE_KERNEL=avx2|portable`, and the thread
//! count set with `CREDENCE_BENCH_THREADS` (default 2). Weights are random
//! matrices of the model's shapes; the full-token sets use distinct matrices
//! per layer so weights stream from memory as in a real forward pass.

#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use std::sync::Arc;

use credence_model::config::{Arch, LlamaConfig, RopeStyle};
use credence_model::llama::WeightedAdapter;
use credence_model::lora::{LoraBatch, LoraDtype, PROJECTIONS, random_adapter};
use credence_model::quant::{GgmlType, QMatrix, kernel_name};
use credence_model::threadpool::ThreadPool;
use credence_model::weights::LayerTensor;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// SmolLM2-135M layer projections `(rows, cols)`: q, k, v, o, gate, up, down.
const LAYER: [(usize, usize); 7] = [
    (576, 576),
    (192, 576),
    (192, 576),
    (576, 576),
    (1536, 576),
    (1536, 576),
    (576, 1536),
];
const LAYERS: usize = 30;
const VOCAB: usize = 49152;
const HIDDEN: usize = 576;

fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn matrix(ty: GgmlType, rows: usize, cols: usize, seed: u64) -> QMatrix {
    QMatrix::quantize(ty, rows, cols, &values(seed, rows * cols))
        .expect("benchmark shapes are valid")
}

fn pool() -> ThreadPool {
    let threads = std::env::var("CREDENCE_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    ThreadPool::new(threads)
}

fn run(m: &QMatrix, pool: &ThreadPool, x: &[f32], n: usize, out: &mut [f32]) {
    m.matmul(pool, black_box(x), n, out).expect("shapes match");
    black_box(out);
}

/// Columns used for a format: K-quants need multiples of 256.
fn cols_for(ty: GgmlType, cols: usize) -> usize {
    if ty.block_len() == 256 {
        cols.next_multiple_of(256)
    } else {
        cols
    }
}

const FORMATS: [GgmlType; 9] = [
    GgmlType::Q4_1,
    GgmlType::Q4_0,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::F32,
];

fn per_format(c: &mut Criterion, n: usize) {
    let pool = pool();
    let mut g = c.benchmark_group(format!("matmul_n{n}/{}", kernel_name()));
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    if n >= 512 {
        g.sample_size(10);
    }
    for ty in FORMATS {
        for (rows, cols) in [(1536, 576), (576, 1536)] {
            let cols = cols_for(ty, cols);
            let m = matrix(ty, rows, cols, 1);
            let x = values(2, n * cols);
            let mut out = vec![0f32; n * rows];
            g.throughput(Throughput::Elements((rows * cols * n) as u64));
            g.bench_function(BenchmarkId::new(ty.name(), format!("{rows}x{cols}")), |b| {
                b.iter(|| run(&m, &pool, &x, n, &mut out));
            });
        }
    }
    g.finish();
}

fn matvec_shapes(c: &mut Criterion) {
    let pool = pool();
    let mut g = c.benchmark_group(format!("matvec/{}", kernel_name()));
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let shapes = [
        (GgmlType::Q4_1, 576, 576),
        (GgmlType::Q4_1, 192, 576),
        (GgmlType::Q4_1, 1536, 576),
        (GgmlType::Q4_1, 576, 1536),
        (GgmlType::Q8_0, VOCAB, HIDDEN),
    ];
    for (ty, rows, cols) in shapes {
        let m = matrix(ty, rows, cols, 3);
        let x = values(4, cols);
        let mut out = vec![0f32; rows];
        g.throughput(Throughput::Bytes(m.bytes().len() as u64));
        g.bench_function(BenchmarkId::new(ty.name(), format!("{rows}x{cols}")), |b| {
            b.iter(|| run(&m, &pool, &x, 1, &mut out));
        });
    }
    g.finish();
}

fn matvec(c: &mut Criterion) {
    matvec_shapes(c);
    per_format(c, 1);
}

fn matmul_16(c: &mut Criterion) {
    per_format(c, 16);
}

fn matmul_512(c: &mut Criterion) {
    per_format(c, 512);
}

/// All projections of the model for `n` tokens: 30 distinct Q4_1 layers, then
/// the Q8_0 output matrix for the last token only (as prompt processing does).
fn full_model(c: &mut Criterion) {
    let pool = pool();
    let layers: Vec<Vec<QMatrix>> = (0..LAYERS)
        .map(|l| {
            LAYER
                .iter()
                .enumerate()
                .map(|(i, &(r, k))| matrix(GgmlType::Q4_1, r, k, (10 * l + i) as u64))
                .collect()
        })
        .collect();
    let output = matrix(GgmlType::Q8_0, VOCAB, HIDDEN, 999);
    let mut g = c.benchmark_group(format!("full_model/{}", kernel_name()));
    g.warm_up_time(Duration::from_secs(1)).sample_size(10);
    for n in [1usize, 4, 16, 64, 512] {
        let (x576, x1536) = (values(5, n * 576), values(6, n * 1536));
        let mut out = vec![0f32; n * 1536];
        let mut logits = vec![0f32; VOCAB];
        g.measurement_time(Duration::from_secs(if n >= 512 { 20 } else { 3 }));
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::new("tokens", n), |b| {
            b.iter(|| {
                for m in layers.iter().flatten() {
                    let x = if m.cols() == 576 { &x576 } else { &x1536 };
                    run(m, &pool, x, n, &mut out[..n * m.rows()]);
                }
                run(&output, &pool, &x576[..576], 1, &mut logits);
            });
        });
    }
    g.finish();
}

/// SmolLM2-135M dimensions, with `layers` layers.
fn smollm_135m(layers: usize) -> LlamaConfig {
    LlamaConfig {
        arch: Arch::Llama,
        hidden_size: HIDDEN,
        intermediate_size: 1536,
        n_layers: layers,
        n_heads: 9,
        n_kv_heads: 3,
        head_dim: 64,
        vocab_size: VOCAB,
        context_length: 8192,
        rope_theta: 100_000.0,
        rms_eps: 1e-5,
        rope_style: RopeStyle::Halves,
        attention_bias: false,
    }
}

/// One decode step's LoRA updates (q/k/v, o, gate/up, down on all 30
/// layers) for 16 sequences with rank-16 all-linear adapters: all sharing one
/// adapter, or each with its own, with factors held as f32, f16 or q8. With 16
/// distinct adapters a step reads 157 MB (f16) of factors, far more than the
/// last-level cache, so they stream from DRAM as in a real step; the
/// throughput reported is factor bytes read per second.
fn lora_delta(c: &mut Criterion) {
    const SEQS: usize = 16;
    let config = smollm_135m(LAYERS);
    let all = PROJECTIONS;
    let adapters: Vec<_> = (0..SEQS)
        .map(|i| random_adapter(&config, 16, &all, i as u64))
        .collect();
    let held = |dtype: LoraDtype| -> Vec<Arc<_>> {
        adapters
            .iter()
            .map(|a| Arc::new(a.to_dtype(dtype)))
            .collect()
    };
    let (wide, half, bytes) = (
        held(LoraDtype::F32),
        held(LoraDtype::F16),
        held(LoraDtype::Q8),
    );
    let (h, ff, kv) = (HIDDEN, 1536, config.kv_dim());
    let qkv = [
        (LayerTensor::Q, 0),
        (LayerTensor::K, h),
        (LayerTensor::V, h + kv),
    ];
    let gate_up = [(LayerTensor::Gate, 0), (LayerTensor::Up, ff)];
    let (x_h, x_ff) = (values(7, SEQS * h), values(8, SEQS * ff));
    let mut out = vec![0f32; SEQS * 2 * ff];
    let pool = pool();
    let mut g = c.benchmark_group("lora_step_16x_r16");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(4))
        .sample_size(20);
    for (name, distinct, adapters) in [
        ("shared", false, &wide),
        ("distinct", true, &wide),
        ("shared_f16", false, &half),
        ("distinct_f16", true, &half),
        ("shared_q8", false, &bytes),
        ("distinct_q8", true, &bytes),
    ] {
        let mixes: Vec<Vec<WeightedAdapter>> = (0..SEQS)
            .map(|i| {
                vec![WeightedAdapter {
                    adapter: Arc::clone(&adapters[if distinct { i } else { 0 }]),
                    weight: 1.0,
                }]
            })
            .collect();
        let batch = LoraBatch::new(mixes.iter().enumerate().map(|(i, m)| (&m[..], i..i + 1)));
        let read: usize = mixes
            .iter()
            .take(if distinct { SEQS } else { 1 })
            .map(|m| m[0].adapter.resident_bytes())
            .sum();
        g.throughput(Throughput::Bytes(read as u64));
        let mut run = |grouped: bool| {
            for l in 0..LAYERS {
                for (parts, x, in_dim, width) in [
                    (&qkv[..], &x_h, h, h + 2 * kv),
                    (&[(LayerTensor::O, 0)][..], &x_h, h, h),
                    (&gate_up[..], &x_h, h, 2 * ff),
                    (&[(LayerTensor::Down, 0)][..], &x_ff, ff, h),
                ] {
                    let o = &mut out[..SEQS * width];
                    if grouped {
                        batch
                            .add(&pool, l, parts, x, in_dim, o, width)
                            .expect("shapes match");
                    } else {
                        batch.add_serial(l, parts, x, in_dim, o, width);
                    }
                }
            }
            black_box(&out);
        };
        g.bench_function(BenchmarkId::new("grouped", name), |b| b.iter(|| run(true)));
        g.bench_function(BenchmarkId::new("serial", name), |b| b.iter(|| run(false)));
    }
    g.finish();
}

criterion_group!(
    benches, matvec, matmul_16, matmul_512, full_model, lora_delta
);
criterion_main!(benches);
