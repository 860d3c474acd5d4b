//! Forward-pass invariants on tiny random models.

use credence_model::llama::{BatchSeq, Transformer};
use credence_model::quant::GgmlType;
use credence_model::testing::{tiny_config, tiny_transformer};
use credence_model::threadpool::ThreadPool;

fn close(a: &[f32], b: &[f32], tol: f32) -> Result<(), String> {
    let worst = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    if a.len() == b.len() && worst <= tol {
        Ok(())
    } else {
        Err(format!("max diff {worst} > {tol}"))
    }
}

fn model(ty: GgmlType) -> Transformer {
    let dir = tempfile::tempdir().unwrap();
    tiny_transformer(&tiny_config(ty.block_len().max(32)), ty, 42, dir.path()).unwrap()
}

const TOKENS: [u32; 11] = [5, 17, 3, 88, 41, 0, 95, 12, 12, 60, 7];

/// Logits of the last token when the whole sequence is processed at once.
fn full(m: &Transformer, pool: &ThreadPool, tokens: &[u32]) -> Vec<f32> {
    let mut cache = m.new_cache(64);
    m.forward(pool, &mut [BatchSeq::new(tokens, &mut cache)])
        .unwrap()
        .remove(0)
}

#[test]
fn incremental_decoding_equals_full_recomputation() {
    let pool = ThreadPool::new(2);
    for ty in [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q8_0,
        GgmlType::Q4_1,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
    ] {
        let m = model(ty);
        let mut cache = m.new_cache(64);
        let mut last = m
            .forward(&pool, &mut [BatchSeq::new(&TOKENS[..4], &mut cache)])
            .unwrap();
        for i in 4..TOKENS.len() {
            last = m
                .forward(&pool, &mut [BatchSeq::new(&TOKENS[i..=i], &mut cache)])
                .unwrap();
            let reference = full(&m, &pool, &TOKENS[..=i]);
            // Same weights and activations quantised the same way per row: only
            // the summation order of attention differs.
            close(&last[0], &reference, 1e-3).unwrap_or_else(|e| panic!("{ty:?} at {i}: {e}"));
        }
        assert_eq!(cache.len(), TOKENS.len());
        assert_eq!(last[0].len(), m.config().vocab_size);
    }
}

#[test]
fn mixed_batch_equals_each_sequence_alone() {
    let pool = ThreadPool::new(2);
    let m = model(GgmlType::Q4_1);
    // Three sequences at different positions: one fresh, two with history.
    let mut caches: Vec<_> = (0..3).map(|_| m.new_cache(64)).collect();
    let histories: [&[u32]; 3] = [&[], &TOKENS[..5], &TOKENS[2..9]];
    for (c, h) in caches.iter_mut().zip(histories) {
        if !h.is_empty() {
            m.forward(&pool, &mut [BatchSeq::new(h, c)]).unwrap();
        }
    }
    let new: [&[u32]; 3] = [&TOKENS[..3], &[9], &[1, 2]];
    let mut batch: Vec<BatchSeq<'_>> = caches
        .iter_mut()
        .zip(new)
        .map(|(cache, tokens)| BatchSeq::new(tokens, cache))
        .collect();
    let batched = m.forward(&pool, &mut batch).unwrap();
    for ((h, n), got) in histories.iter().zip(new).zip(&batched) {
        let whole: Vec<u32> = h.iter().chain(n).copied().collect();
        close(got, &full(&m, &pool, &whole), 1e-3).unwrap();
    }
}

#[test]
fn forward_all_matches_last_token_logits() {
    let pool = ThreadPool::new(2);
    let m = model(GgmlType::Q8_0);
    let mut cache = m.new_cache(64);
    let all = m.forward_all(&pool, &TOKENS, &mut cache).unwrap();
    let v = m.config().vocab_size;
    assert_eq!(all.len(), TOKENS.len() * v);
    close(
        &all[(TOKENS.len() - 1) * v..],
        &full(&m, &pool, &TOKENS),
        1e-4,
    )
    .unwrap();
    close(&all[..v], &full(&m, &pool, &TOKENS[..1]), 1e-4).unwrap();
}

#[test]
fn bad_batches_are_errors_not_panics() {
    let pool = ThreadPool::new(1);
    let m = model(GgmlType::F32);
    let mut cache = m.new_cache(4);
    let mut err = |tokens: &[u32]| {
        m.forward(&pool, &mut [BatchSeq::new(tokens, &mut cache)])
            .unwrap_err()
            .to_string()
    };
    assert!(err(&[]).contains("no new tokens"));
    assert!(err(&[1000]).contains("outside the vocabulary"));
    assert!(err(&[1, 2, 3, 4, 5]).contains("exceeds the context window"));
    assert!(m.forward(&pool, &mut []).is_err());
    assert_eq!(
        cache.len(),
        0,
        "a rejected batch leaves the cache untouched"
    );
}

#[test]
fn matches_a_naive_f64_reference() {
    let pool = ThreadPool::new(2);
    for ty in [
        GgmlType::F32,
        GgmlType::BF16,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_K,
    ] {
        let m = model(ty);
        let mut cache = m.new_cache(64);
        let ours = m.forward_all(&pool, &TOKENS, &mut cache).unwrap();
        let reference = crate::reference::logits(&m, &TOKENS);
        let v = m.config().vocab_size;
        for (pos, r) in reference.iter().enumerate() {
            let d = crate::reference::max_diff(&ours[pos * v..(pos + 1) * v], r);
            // Float weights see only f32 rounding; quantised weights also see
            // the 8-bit activation quantisation of the integer kernels.
            let spread = r.iter().copied().fold(f64::MIN, f64::max)
                - r.iter().copied().fold(f64::MAX, f64::min);
            // Float weights see only f32 rounding: this pins the forward
            // pass itself (RoPE, GQA attention, norms, cache). Quantised
            // weights add the 8-bit activation quantisation of the integer
            // kernels (which are tested against f32 on their own in `quant`).
            let tol = if ty.is_float() {
                1e-4 * spread
            } else {
                0.03 * spread
            };
            assert!(
                d < tol,
                "{ty:?} position {pos}: max diff {d} (spread {spread})"
            );
        }
    }
}

#[test]
fn qwen2_biases_and_half_rotation_match_the_reference() {
    use credence_model::config::{Arch, RopeStyle};
    let pool = ThreadPool::new(2);
    let config = credence_model::config::LlamaConfig {
        arch: Arch::Qwen2,
        rope_style: RopeStyle::Halves,
        attention_bias: true,
        ..tiny_config(32)
    };
    let dir = tempfile::tempdir().unwrap();
    let m = tiny_transformer(&config, GgmlType::F32, 3, dir.path()).unwrap();
    assert_eq!(
        m.config(),
        &config,
        "the GGUF round trip keeps the architecture's settings"
    );
    let ours = m.forward_all(&pool, &TOKENS, &mut m.new_cache(64)).unwrap();
    let v = config.vocab_size;
    for (pos, r) in crate::reference::logits(&m, &TOKENS).iter().enumerate() {
        let d = crate::reference::max_diff(&ours[pos * v..(pos + 1) * v], r);
        assert!(d < 1e-3, "position {pos}: max diff {d}");
    }
}
