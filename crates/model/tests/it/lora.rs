//! LoRA in the forward pass: every sequence of a mixed batch must equal that
//! sequence run alone on a model whose weights have its adapters merged in
//! (W + Σ weight·scale·B·A), the definition PEFT's `merge_and_unload` uses.

use std::sync::Arc;

use credence_model::llama::{BatchSeq, Transformer, WeightedAdapter};
use credence_model::lora::{LoraAdapter, LoraDtype, PROJECTIONS, random_adapter};
use credence_model::quant::{GgmlType, QMatrix};
use credence_model::testing::{tiny_config, tiny_transformer};
use credence_model::threadpool::ThreadPool;
use credence_model::weights::{LayerTensor, LayerWeights};

const ALL: [LayerTensor; 7] = PROJECTIONS;

fn slot(w: &mut LayerWeights, t: LayerTensor) -> &mut QMatrix {
    match t {
        LayerTensor::Q => &mut w.wq,
        LayerTensor::K => &mut w.wk,
        LayerTensor::V => &mut w.wv,
        LayerTensor::O => &mut w.wo,
        LayerTensor::Gate => &mut w.w_gate,
        LayerTensor::Up => &mut w.w_up,
        _ => &mut w.w_down,
    }
}

/// The base with `mix` merged into its (f32) weights.
fn merged(base: &Transformer, mix: &[WeightedAdapter]) -> Transformer {
    let mut weights = base.weights().clone();
    for wa in mix {
        for (layer, tensor, _) in wa.adapter.pairs() {
            let m = slot(&mut weights.layers[layer], tensor);
            let delta = wa.adapter.delta(layer, tensor).unwrap();
            let sum: Vec<f32> = m
                .to_f32()
                .iter()
                .zip(&delta)
                .map(|(w, d)| w + wa.weight * d)
                .collect();
            *m = QMatrix::quantize(GgmlType::F32, m.rows(), m.cols(), &sum).unwrap();
        }
    }
    Transformer::new(base.config().clone(), weights).unwrap()
}

fn alone(m: &Transformer, pool: &ThreadPool, history: &[u32], new: &[u32]) -> Vec<f32> {
    let whole: Vec<u32> = history.iter().chain(new).copied().collect();
    let mut cache = m.new_cache(64);
    m.forward(pool, &mut [BatchSeq::new(&whole, &mut cache)])
        .unwrap()
        .remove(0)
}

fn assert_close(a: &[f32], b: &[f32], what: &str) {
    let d = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(d < 1e-3, "{what}: max diff {d}");
}

#[test]
fn mixed_adapter_batch_equals_merged_weights_per_sequence() {
    for dtype in LoraDtype::ALL {
        mixed_batch_equals_merged(dtype);
    }
}

/// The mixed-batch check with factors held as `dtype`: the merged reference
/// uses the same (for f16 and q8, rounded) factors.
fn mixed_batch_equals_merged(dtype: LoraDtype) {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config(32);
    let base = tiny_transformer(&config, GgmlType::F32, 5, dir.path()).unwrap();
    let pool = ThreadPool::new(2);
    let a1 = Arc::new(random_adapter(&config, 4, &ALL, 1).to_dtype(dtype));
    let a2 = Arc::new(
        random_adapter(
            &config,
            8,
            &[LayerTensor::Q, LayerTensor::V, LayerTensor::Down],
            2,
        )
        .to_dtype(dtype),
    );
    assert_eq!(a1.dtype(), dtype);
    let one = |a: &Arc<LoraAdapter>, weight| WeightedAdapter {
        adapter: Arc::clone(a),
        weight,
    };
    // Sequence 0: adapter 1; 1: the base; 2: a weighted mix; 3: adapter 2.
    let mixes: [Vec<WeightedAdapter>; 4] = [
        vec![one(&a1, 1.0)],
        vec![],
        vec![one(&a1, 0.5), one(&a2, 0.7)],
        vec![one(&a2, 1.0)],
    ];
    let histories: [&[u32]; 4] = [&[3, 4, 5], &[], &[9, 1], &[60, 61, 62, 63]];
    let new: [&[u32]; 4] = [&[7], &[1, 2, 3], &[11, 12], &[5]];

    let mut caches: Vec<_> = (0..4).map(|_| base.new_cache(64)).collect();
    for ((cache, h), mix) in caches.iter_mut().zip(histories).zip(&mixes) {
        if !h.is_empty() {
            base.forward(&pool, &mut [BatchSeq::new(h, cache).with_adapters(mix)])
                .unwrap();
        }
    }
    let mut batch: Vec<BatchSeq<'_>> = caches
        .iter_mut()
        .zip(new)
        .zip(&mixes)
        .map(|((cache, tokens), mix)| BatchSeq::new(tokens, cache).with_adapters(mix))
        .collect();
    let got = base.forward(&pool, &mut batch).unwrap();
    for i in 0..4 {
        let reference = alone(&merged(&base, &mixes[i]), &pool, histories[i], new[i]);
        assert_close(&got[i], &reference, &format!("{dtype} sequence {i}"));
    }
    // The adapters really change the output.
    let plain = alone(&base, &pool, histories[0], new[0]);
    assert!(got[0].iter().zip(&plain).any(|(a, b)| (a - b).abs() > 1e-2));
}

#[test]
fn an_adapter_for_another_model_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let base = tiny_transformer(&tiny_config(32), GgmlType::F32, 5, dir.path()).unwrap();
    let other = credence_model::config::LlamaConfig {
        intermediate_size: 96,
        ..tiny_config(32)
    };
    let foreign = [WeightedAdapter {
        adapter: Arc::new(random_adapter(&other, 4, &ALL, 1)),
        weight: 1.0,
    }];
    let mut cache = base.new_cache(8);
    let e = base
        .forward(
            &ThreadPool::new(1),
            &mut [BatchSeq::new(&[1], &mut cache).with_adapters(&foreign)],
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not fit this model"), "{e}");
    assert_eq!(cache.len(), 0);
}

#[test]
fn an_adapter_loaded_for_the_other_qk_layout_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let base = tiny_transformer(&tiny_config(32), GgmlType::F32, 5, dir.path()).unwrap();
    let mut other = base.config().clone();
    other.rope_style = match other.rope_style {
        credence_model::config::RopeStyle::Interleaved => credence_model::config::RopeStyle::Halves,
        _ => credence_model::config::RopeStyle::Interleaved,
    };
    let mismatched = [WeightedAdapter {
        adapter: Arc::new(random_adapter(&other, 4, &[LayerTensor::Q], 1)),
        weight: 1.0,
    }];
    let mut cache = base.new_cache(8);
    let e = base
        .forward(
            &ThreadPool::new(1),
            &mut [BatchSeq::new(&[1], &mut cache).with_adapters(&mismatched)],
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("q/k row layout"), "{e}");
    // Adapters that leave q and k alone do not depend on the layout.
    let v_only = [WeightedAdapter {
        adapter: Arc::new(random_adapter(&other, 4, &[LayerTensor::V], 1)),
        weight: 1.0,
    }];
    let mut cache = base.new_cache(8);
    base.forward(
        &ThreadPool::new(1),
        &mut [BatchSeq::new(&[1], &mut cache).with_adapters(&v_only)],
    )
    .unwrap();
}

#[test]
fn shared_distinct_and_mixed_adapters_batch_equals_each_sequence_alone() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config(32);
    let base = tiny_transformer(&config, GgmlType::Q8_0, 7, dir.path()).unwrap();
    let pool = ThreadPool::new(2);
    let shared = Arc::new(random_adapter(&config, 16, &ALL, 10));
    let distinct: Vec<Arc<LoraAdapter>> = [(4, &ALL[..]), (8, &ALL[..3]), (2, &ALL[4..])]
        .iter()
        .enumerate()
        .map(|(i, &(rank, targets))| {
            Arc::new(random_adapter(&config, rank, targets, 20 + i as u64))
        })
        .collect();
    let one = |a: &Arc<LoraAdapter>, weight| WeightedAdapter {
        adapter: Arc::clone(a),
        weight,
    };
    // Six sequences share one adapter; three use their own; two mix; one is the
    // base. A quantised base, so the grouped path sees the integer kernels'
    // outputs (the merged-weights test above covers the f32 definition).
    let mut mixes: Vec<Vec<WeightedAdapter>> = (0..6).map(|_| vec![one(&shared, 1.0)]).collect();
    mixes.extend(distinct.iter().map(|a| vec![one(a, 1.0)]));
    mixes.push(vec![one(&shared, 0.4), one(&distinct[0], 0.6)]);
    mixes.push(vec![one(&distinct[1], 1.5), one(&distinct[2], -0.5)]);
    mixes.push(vec![]);
    let history =
        |i: usize| -> Vec<u32> { (0..(i * 3) % 7).map(|t| (t * 11 + i) as u32 % 90).collect() };
    let new = |i: usize| -> Vec<u32> { (0..1 + i % 3).map(|t| (40 + t * 5 + i) as u32).collect() };

    let mut caches: Vec<_> = mixes.iter().map(|_| base.new_cache(64)).collect();
    for (i, (cache, mix)) in caches.iter_mut().zip(&mixes).enumerate() {
        let h = history(i);
        if !h.is_empty() {
            base.forward(&pool, &mut [BatchSeq::new(&h, cache).with_adapters(mix)])
                .unwrap();
        }
    }
    let news: Vec<Vec<u32>> = (0..mixes.len()).map(new).collect();
    let mut batch: Vec<BatchSeq<'_>> = caches
        .iter_mut()
        .zip(&news)
        .zip(&mixes)
        .map(|((cache, tokens), mix)| BatchSeq::new(tokens, cache).with_adapters(mix))
        .collect();
    let got = base.forward(&pool, &mut batch).unwrap();
    for (i, mix) in mixes.iter().enumerate() {
        let whole: Vec<u32> = history(i).into_iter().chain(news[i].clone()).collect();
        let mut cache = base.new_cache(64);
        let reference = base
            .forward(
                &pool,
                &mut [BatchSeq::new(&whole, &mut cache).with_adapters(mix)],
            )
            .unwrap()
            .remove(0);
        assert_close(&got[i], &reference, &format!("sequence {i}"));
    }
}
