//! End-to-end checks on the real default model (SmolLM2-135M-Instruct Q4_1).

use std::path::PathBuf;
use std::sync::OnceLock;

use credence_model::chat::ChatMessage;
use credence_model::generate::{GenerateParams, Generation, SamplingParams, generate};
use credence_model::kv::PrefixCache;
use credence_model::llama::{BatchSeq, Model};
use credence_model::threadpool::ThreadPool;

/// The default model, fetched by `credence models fetch` (the test script runs it first).
pub fn model_path() -> PathBuf {
    std::env::var_os("CREDENCE_MODEL_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("CREDENCE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                        .join(".cache/credence")
                });
            home.join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
        })
}

fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        let p = model_path();
        Model::load(&p).unwrap_or_else(|e| {
            panic!(
                "cannot load the default model at {}: {e}; run `credence models fetch`",
                p.display()
            )
        })
    })
}

#[test]
fn greedy_answer_mentions_paris() {
    let m = model();
    let pool = ThreadPool::new(2);
    // With the template's built-in system prompt ("You are a helpful AI
    // assistant named SmolLM…") this 135M Q4_1 model answers with a list of
    // French landmarks, in llama.cpp exactly as here; with a plain system
    // prompt both answer "The capital of France is Paris."
    let msgs = [
        ChatMessage::new("system", "You are a helpful assistant."),
        ChatMessage::new("user", "What is the capital of France?"),
    ];
    let prompt = m
        .chat_template()
        .expect("SmolLM2 ships a chat template")
        .render(&msgs, true)
        .unwrap();
    let ids = m.tokenizer().encode(&prompt, false).unwrap();
    let params = GenerateParams {
        sampling: SamplingParams::greedy(),
        max_tokens: 40,
        stop: vec![],
        ignore_eos: false,
    };
    let mut streamed = String::new();
    let out = generate(m, &pool, &ids, &params, &mut |t| {
        streamed.push_str(t);
        std::ops::ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(streamed, out.text);
    assert!(out.text.contains("Paris"), "answer: {:?}", out.text);
}

#[test]
fn logits_match_llama_cpp() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/logits");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("smollm2_q4_1.json")).unwrap())
            .unwrap();
    let ids: Vec<u32> = meta["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let raw = std::fs::read(dir.join("smollm2_q4_1.f32")).unwrap();
    let reference: Vec<f32> = raw
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let m = model();
    assert_eq!(
        m.tokenizer()
            .encode(meta["prompt"].as_str().unwrap(), false)
            .unwrap(),
        ids
    );
    let vocab = m.config().vocab_size;
    let pool = ThreadPool::new(2);
    let mut cache = m.new_cache(ids.len());
    let ours = m
        .transformer()
        .forward_all(&pool, &ids, &mut cache)
        .unwrap();
    let exact = crate::reference::logits(m.transformer(), &ids);
    let positions: Vec<usize> = meta["positions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let (mut rms_ours, mut rms_llama) = (0.0, 0.0);
    for (k, &pos) in positions.iter().enumerate() {
        let a = &ours[pos * vocab..(pos + 1) * vocab];
        let b = &reference[k * vocab..(k + 1) * vocab];
        let max_diff = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        let spread =
            b.iter().copied().fold(f32::MIN, f32::max) - b.iter().copied().fold(f32::MAX, f32::min);
        rms_ours += crate::reference::rms_diff(a, &exact[pos]) / positions.len() as f64;
        rms_llama += crate::reference::rms_diff(b, &exact[pos]) / positions.len() as f64;
        eprintln!(
            "position {pos}: max |ours - llama.cpp| = {max_diff:.3} (logit spread {spread:.1})"
        );
        // Both engines quantise activations to 8 bits per block of 32 and sum
        // in different orders; through 30 layers that moves single logits by
        // up to a few percent of the range, never the most likely token.
        assert!(
            max_diff <= 0.05 * spread,
            "position {pos}: max diff {max_diff}"
        );
        assert_eq!(
            credence_model::sampling::argmax(a),
            credence_model::sampling::argmax(b),
            "position {pos}"
        );
    }
    // Against the exact f64 computation (dequantised weights, unquantised
    // activations), our error is of the same order as llama.cpp's.
    eprintln!("mean rms error vs f64: ours {rms_ours:.4}, llama.cpp {rms_llama:.4}");
    assert!(
        rms_ours <= 1.5 * rms_llama,
        "ours {rms_ours} vs llama.cpp {rms_llama}"
    );
}

#[test]
fn batched_decode_matches_single_stream() {
    let m = model();
    let pool = ThreadPool::new(2);
    let prompts: [&[u32]; 3] = [&[1, 504, 3145], &[28, 9, 17, 400, 5], &[77]];
    let mut alone = Vec::new();
    for p in prompts {
        let mut c = m.new_cache(16);
        alone.push(
            m.forward(&pool, &mut [BatchSeq::new(p, &mut c)])
                .unwrap()
                .remove(0),
        );
    }
    let mut caches: Vec<_> = prompts.iter().map(|_| m.new_cache(16)).collect();
    let mut batch: Vec<_> = caches
        .iter_mut()
        .zip(prompts)
        .map(|(cache, tokens)| BatchSeq::new(tokens, cache))
        .collect();
    let together = m.forward(&pool, &mut batch).unwrap();
    for (a, b) in alone.iter().zip(&together) {
        let d = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(d < 1e-3, "batched logits differ by {d}");
    }
}

/// Runs a generation to its end and returns its text.
fn finish(m: &Model, pool: &ThreadPool, mut g: Generation<'_>) -> String {
    while g.finished().is_none() {
        let mut logits = m.forward(pool, &mut [g.next_input()]).unwrap();
        g.accept(&mut logits[0]).unwrap();
    }
    g.output().text
}

#[test]
fn pooled_generation_with_a_reused_prefix_matches_a_fresh_one() {
    let m = model();
    let pool = ThreadPool::new(2);
    let system = "You are a helpful assistant who answers in one short sentence.";
    let ids = |question: &str| {
        let msgs = [
            ChatMessage::new("system", system),
            ChatMessage::new("user", question),
        ];
        let text = m.chat_template().unwrap().render(&msgs, true).unwrap();
        m.tokenizer().encode(&text, false).unwrap()
    };
    let params = GenerateParams {
        sampling: SamplingParams::greedy(),
        max_tokens: 12,
        ..GenerateParams::default()
    };
    let kv = m.new_pool(256 << 20);
    let mut prefixes = PrefixCache::new(&kv, 1024);
    let first = ids("What is the capital of France?");
    let mut g = Generation::in_pool(m, &first, &params, &kv).unwrap();
    let mut logits = m.forward(&pool, &mut [g.next_input()]).unwrap();
    g.accept(&mut logits[0]).unwrap();
    g.record_prefix(&mut prefixes, "");
    finish(m, &pool, g);

    let second = ids("What is the capital of Italy?");
    let fresh = finish(m, &pool, Generation::new(m, &second, &params).unwrap());
    let mut g = Generation::in_pool(m, &second, &params, &kv).unwrap();
    let reused = g.reuse_prefix(&mut prefixes, "");
    assert!(
        reused >= 16,
        "the shared system prompt is reused ({reused} tokens)"
    );
    assert_eq!(finish(m, &pool, g), fresh);

    prefixes.clear();
    assert_eq!(
        kv.used_bytes(),
        0,
        "finished generations return their blocks"
    );
    // A pool too small for the prompt refuses it up front.
    let tiny = m.new_pool(kv.block_bytes());
    let e = Generation::in_pool(m, &second, &params, &tiny)
        .err()
        .unwrap();
    assert!(
        matches!(e, credence_model::Error::KvExhausted { .. }),
        "{e}"
    );
}

#[test]
fn a_preempted_generation_resumes_without_repeating_or_losing_tokens() {
    let m = model();
    let pool = ThreadPool::new(2);
    let prompt = m.tokenizer().encode("Once upon a time", false).unwrap();
    let params = GenerateParams {
        sampling: SamplingParams::greedy(),
        max_tokens: 24,
        ignore_eos: true,
        ..GenerateParams::default()
    };
    let straight = finish(m, &pool, Generation::new(m, &prompt, &params).unwrap());

    let kv = m.new_pool(64 << 20);
    let mut prefixes = PrefixCache::new(&kv, 64);
    let mut g = Generation::in_pool_unreserved(m, &prompt, &params, &kv).unwrap();
    assert_eq!(kv.used_bytes(), 0, "nothing is reserved up front");
    let mut streamed = String::new();
    let step = |g: &mut Generation<'_>, streamed: &mut String| {
        g.reserve_input().unwrap();
        let mut logits = m.forward(&pool, &mut [g.next_input()]).unwrap();
        streamed.push_str(&g.accept(&mut logits[0]).unwrap());
    };
    for _ in 0..20 {
        step(&mut g, &mut streamed);
    }
    g.record_prefix(&mut prefixes, "");
    g.preempt();
    assert_eq!(g.kv_bytes(), 0, "a preempted sequence holds no blocks");
    assert_eq!(g.pending_tokens(), prompt.len() + 20);
    // Its own recorded blocks come back instead of being recomputed.
    assert_eq!(g.reuse_prefix(&mut prefixes, ""), 16);
    while g.finished().is_none() {
        step(&mut g, &mut streamed);
    }
    assert_eq!(g.output().text, straight);
    assert_eq!(streamed, straight);
}
