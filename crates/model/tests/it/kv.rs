//! The paged KV cache in the forward pass: decoding through blocks equals
//! recomputing from scratch, a budgeted pool refuses cleanly and gets every
//! block back, and forks/rollbacks read the right history.

use credence_model::Error;
use credence_model::kv::{BLOCK_TOKENS, KvCache, KvPool, PrefixCache};
use credence_model::llama::{BatchSeq, Transformer};
use credence_model::quant::GgmlType;
use credence_model::testing::{tiny_config, tiny_transformer};
use credence_model::threadpool::ThreadPool;

fn model() -> Transformer {
    let dir = tempfile::tempdir().unwrap();
    tiny_transformer(&tiny_config(32), GgmlType::Q8_0, 11, dir.path()).unwrap()
}

/// A token stream long enough to span several blocks.
fn tokens(n: usize, salt: u32) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 7 + salt * 13) % 90).collect()
}

fn full(m: &Transformer, pool: &ThreadPool, tokens: &[u32]) -> Vec<f32> {
    let mut cache = m.new_cache(128);
    m.forward(pool, &mut [BatchSeq::new(tokens, &mut cache)])
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
fn batched_decoding_from_one_pool_equals_full_recomputation() {
    let m = model();
    let threads = ThreadPool::new(2);
    let kv = KvPool::new(m.config(), 1 << 20);
    let streams: Vec<Vec<u32>> = (0..3).map(|i| tokens(2 * BLOCK_TOKENS + 9, i)).collect();
    // Prompts of different lengths, one ending exactly on a block boundary.
    let prompt_lens = [5, BLOCK_TOKENS, BLOCK_TOKENS + 3];
    let mut caches: Vec<KvCache> = (0..3).map(|_| KvCache::in_pool(&kv, 128)).collect();
    let mut batch: Vec<BatchSeq<'_>> = caches
        .iter_mut()
        .zip(&streams)
        .zip(prompt_lens)
        .map(|((c, s), n)| BatchSeq::new(&s[..n], c))
        .collect();
    m.forward(&threads, &mut batch).unwrap();
    drop(batch);
    for step in 0..BLOCK_TOKENS + 6 {
        let mut batch: Vec<BatchSeq<'_>> = caches
            .iter_mut()
            .zip(&streams)
            .zip(prompt_lens)
            .map(|((c, s), n)| BatchSeq::new(&s[n + step..=n + step], c))
            .collect();
        let got = m.forward(&threads, &mut batch).unwrap();
        for (i, (logits, n)) in got.iter().zip(prompt_lens).enumerate() {
            let reference = full(&m, &threads, &streams[i][..=n + step]);
            assert_close(logits, &reference, &format!("sequence {i}, step {step}"));
        }
    }
    let used: usize = caches.iter().map(KvCache::bytes).sum();
    assert_eq!(kv.used_bytes(), used);
    drop(caches);
    assert_eq!(
        kv.used_bytes(),
        0,
        "dropping the caches returns every block"
    );
}

#[test]
fn a_spent_budget_is_an_error_and_the_batch_can_be_retried() {
    let m = model();
    let threads = ThreadPool::new(2);
    let block = KvPool::unbounded(m.config()).block_bytes();
    let kv = KvPool::new(m.config(), 3 * block);
    let text = tokens(3 * BLOCK_TOKENS, 1);
    let mut a = KvCache::in_pool(&kv, 128);
    m.forward(&threads, &mut [BatchSeq::new(&text[..40], &mut a)])
        .unwrap();
    assert_eq!(kv.used_bytes(), 3 * block);
    let mut b = KvCache::in_pool(&kv, 128);
    let e = m
        .forward(&threads, &mut [BatchSeq::new(&text[..4], &mut b)])
        .unwrap_err();
    assert!(matches!(e, Error::KvExhausted { .. }), "{e}");
    assert_eq!((b.len(), b.bytes()), (0, 0));
    // Freeing a sequence makes room; the refused one then runs normally.
    drop(a);
    let logits = m
        .forward(&threads, &mut [BatchSeq::new(&text[..4], &mut b)])
        .unwrap();
    assert_close(&logits[0], &full(&m, &threads, &text[..4]), "after retry");
    assert_eq!(kv.used_bytes(), block);
}

#[test]
fn rollback_and_forks_read_their_own_history() {
    let m = model();
    let threads = ThreadPool::new(2);
    let kv = m.new_pool(64 << 20);
    let text = tokens(40, 2);
    let other = tokens(40, 5);
    let mut base = KvCache::in_pool(&kv, 128);
    m.forward(&threads, &mut [BatchSeq::new(&text[..20], &mut base)])
        .unwrap();
    // A fork continues with different tokens; the original is unaffected.
    let mut fork = base.clone();
    let forked = m
        .forward(&threads, &mut [BatchSeq::new(&other[20..23], &mut fork)])
        .unwrap();
    let want: Vec<u32> = text[..20].iter().chain(&other[20..23]).copied().collect();
    assert_close(&forked[0], &full(&m, &threads, &want), "fork");
    let original = m
        .forward(&threads, &mut [BatchSeq::new(&text[20..21], &mut base)])
        .unwrap();
    assert_close(&original[0], &full(&m, &threads, &text[..21]), "original");
    // Rolling back into the first block and re-decoding matches too.
    base.truncate(7);
    assert_eq!(base.bytes(), kv.block_bytes());
    let again = m
        .forward(&threads, &mut [BatchSeq::new(&other[7..30], &mut base)])
        .unwrap();
    let want: Vec<u32> = text[..7].iter().chain(&other[7..30]).copied().collect();
    assert_close(&again[0], &full(&m, &threads, &want), "after truncate");
    drop((base, fork));
    assert_eq!(kv.used_bytes(), 0);
}

#[test]
fn a_reused_prompt_prefix_gives_the_same_logits() {
    let m = model();
    let threads = ThreadPool::new(2);
    let kv = m.new_pool(64 << 20);
    let mut prefixes = PrefixCache::new(&kv, 64);
    let system = tokens(2 * BLOCK_TOKENS + 5, 3);
    let mut first = KvCache::in_pool(&kv, 128);
    m.forward(&threads, &mut [BatchSeq::new(&system, &mut first)])
        .unwrap();
    prefixes.insert("", &system, &first);
    let used = kv.used_bytes();

    // A second request with the same system prompt and its own question.
    let prompt: Vec<u32> = system.iter().chain(&[41, 42, 43]).copied().collect();
    let mut second = KvCache::in_pool(&kv, 128);
    let reused = prefixes.lookup("", &prompt, &mut second);
    assert_eq!(reused, 2 * BLOCK_TOKENS);
    assert_eq!(kv.used_bytes(), used, "adopted blocks are shared");
    let logits = m
        .forward(
            &threads,
            &mut [BatchSeq::new(&prompt[reused..], &mut second)],
        )
        .unwrap();
    assert_close(
        &logits[0],
        &full(&m, &threads, &prompt),
        "with a reused prefix",
    );
    // Under other adapters the same tokens are not reused.
    let mut third = KvCache::in_pool(&kv, 128);
    assert_eq!(prefixes.lookup("some-adapter:1", &prompt, &mut third), 0);
    drop((first, second, third));
    prefixes.clear();
    assert_eq!(kv.used_bytes(), 0);
}
