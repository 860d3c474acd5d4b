//! The engine's scheduler against the real model: prompt prefixes shared
//! between requests, and preemption when the KV cache runs out mid-decode.

use credence_model::generate::{GenerateParams, GenerationOutput, SamplingParams};
use credence_serve::engine::{Event, Job};
use credence_serve::{ApiError, AppState, ServeConfig};
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::{new_state, send, test_config};

const SYSTEM: &str = "You are a careful assistant for a travel agency. You answer every \
    question about European capitals in one short, friendly sentence, and you never \
    invent facts you are unsure about.";

async fn chat(state: &AppState, question: &str) -> String {
    let body = json!({
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": question},
        ],
        "max_tokens": 12,
        "temperature": 0,
    });
    let (status, bytes) = send(
        state,
        "POST",
        "/v1/chat/completions",
        body.to_string().into_bytes(),
    )
    .await;
    let body: Value = serde_json::from_slice(&bytes).expect("a JSON body");
    assert!(status.is_success(), "{body}");
    body["choices"][0]["message"]["content"]
        .as_str()
        .expect("an answer")
        .to_owned()
}

#[tokio::test]
async fn a_shared_system_prompt_is_computed_once_and_answers_do_not_change() {
    let state = new_state(test_config());
    chat(&state, "What is the capital of France?").await;
    let before = state.engine().scheduler_stats();
    assert_eq!(before.prefix_hit_tokens, 0, "{before:?}");
    assert!(before.prefix_cached_bytes > 0, "the prompt was recorded");
    // One sequence alone: one per step, a step per token it generated, and
    // the prompt's tokens in its first step.
    assert!((1..=12).contains(&before.steps), "{before:?}");
    assert_eq!(before.step_sequences, before.steps, "{before:?}");
    assert!(before.step_tokens > before.steps + 30, "{before:?}");

    let warm = chat(&state, "What is the capital of Italy?").await;
    let after = state.engine().scheduler_stats();
    assert_eq!(after.prefix_hits, 1, "{after:?}");
    assert!(
        after.prefix_hit_tokens >= 32,
        "the system prompt's blocks are reused: {after:?}"
    );

    let cold = chat(&new_state(test_config()), "What is the capital of Italy?").await;
    assert_eq!(warm, cold);

    let (status, metrics) = send(&state, "GET", "/metrics", Vec::new()).await;
    assert!(status.is_success());
    let metrics = String::from_utf8(metrics).expect("UTF-8 metrics");
    let hit_tokens = metrics
        .lines()
        .find_map(|l| l.strip_prefix("credence_kv_prefix_hit_tokens_total "))
        .and_then(|v| v.parse::<u64>().ok());
    assert_eq!(hit_tokens, Some(after.prefix_hit_tokens), "{metrics}");
    let steps = metrics
        .lines()
        .find_map(|l| l.strip_prefix("credence_engine_steps_total "))
        .and_then(|v| v.parse::<u64>().ok());
    assert_eq!(
        steps,
        Some(state.engine().scheduler_stats().steps),
        "{metrics}"
    );
}

/// Sampling that makes every run of a prompt produce the same tokens.
fn fixed_length(max_tokens: usize) -> GenerateParams {
    GenerateParams {
        sampling: SamplingParams::greedy(),
        max_tokens,
        ignore_eos: true,
        ..GenerateParams::default()
    }
}

/// Submits `prompt` straight to the engine.
fn submit(state: &AppState, prompt: &str, params: GenerateParams) -> UnboundedReceiver<Event> {
    let tokens = state
        .model()
        .tokenizer()
        .encode(prompt, false)
        .expect("the prompt tokenizes");
    let (job, events) = Job::new(tokens, params, "prompt", true);
    state.engine().submit(job).expect("the queue has room");
    events
}

/// Streamed text and the final output of one job, or its error.
async fn collect(
    mut events: UnboundedReceiver<Event>,
) -> Result<(String, GenerationOutput), ApiError> {
    let mut streamed = String::new();
    while let Some(event) = events.recv().await {
        match event {
            Event::Text(piece) => streamed.push_str(&piece),
            Event::Done(output) => return Ok((streamed, output)),
            Event::Failed(error) => return Err(error),
        }
    }
    panic!("the engine dropped a job without an answer");
}

#[tokio::test]
async fn sequences_preempted_for_kv_room_finish_with_their_solo_output() {
    let prompts = [
        "The capital of France is",
        "1, 2, 3, 4,",
        "Once upon a time",
        "def add(a, b):",
    ];
    let params = fixed_length(48);
    let roomy = new_state(test_config());
    let mut alone = Vec::new();
    for p in prompts {
        let (streamed, output) = collect(submit(&roomy, p, params.clone()))
            .await
            .expect("a solo run succeeds");
        assert_eq!(streamed, output.text);
        alone.push(output);
    }
    // Each sequence needs four blocks (under 64 positions) and fits alone;
    // the four together need sixteen.
    let block = roomy.engine().kv_stats().block_bytes;
    let tight = new_state(ServeConfig {
        kv_cache_bytes: 6 * block,
        ..test_config()
    });
    let receivers: Vec<_> = prompts
        .iter()
        .map(|p| submit(&tight, p, params.clone()))
        .collect();
    let together = futures_util::future::join_all(receivers.into_iter().map(collect)).await;
    for ((result, expected), prompt) in together.into_iter().zip(&alone).zip(prompts) {
        let (streamed, output) = result.unwrap_or_else(|e| panic!("{prompt:?} failed: {e}"));
        assert_eq!(&output, expected, "{prompt:?}");
        assert_eq!(
            streamed, output.text,
            "{prompt:?}: the stream neither repeats nor skips"
        );
    }
    let stats = tight.engine().scheduler_stats();
    assert!(
        stats.preemptions > 0,
        "the budget forced preemption: {stats:?}"
    );
    let kv = tight.engine().kv_stats();
    assert!(kv.used_bytes <= kv.budget_bytes, "{kv:?}");
}

#[tokio::test]
async fn a_sequence_that_outgrows_the_whole_budget_alone_fails() {
    let probe = new_state(test_config());
    let block = probe.engine().kv_stats().block_bytes;
    let state = new_state(ServeConfig {
        kv_cache_bytes: 2 * block,
        ..test_config()
    });
    // The prompt fits; 60 more positions do not.
    let result = collect(submit(&state, "Once upon a time", fixed_length(60))).await;
    match result {
        Err(ApiError::KvCacheFull { .. }) => {}
        other => panic!("expected kv_cache_full, got {other:?}"),
    }
    assert_eq!(state.engine().scheduler_stats().preemptions, 0);
}

#[tokio::test]
async fn cached_prefixes_give_way_to_a_sequence_that_needs_their_blocks() {
    let probe = new_state(test_config());
    let block = probe.engine().kv_stats().block_bytes;
    let state = new_state(ServeConfig {
        kv_cache_bytes: 8 * block,
        ..test_config()
    });
    // A long prompt leaves its blocks in the prefix cache (a quarter of
    // the budget: two blocks).
    let long = "The quick brown fox jumps over the lazy dog. ".repeat(6);
    collect(submit(&state, &long, fixed_length(4)))
        .await
        .expect("the long prompt runs");
    let cached = state.engine().scheduler_stats().prefix_cached_bytes;
    assert_eq!(cached, 2 * block as u64);
    // Alone this one needs seven of the eight blocks: it only fits if the
    // cached prefix is evicted.
    let (_, output) = collect(submit(&state, "Once upon a time", fixed_length(100)))
        .await
        .expect("the cached prefix is evicted to make room");
    assert_eq!(output.completion_tokens, 100);
    let stats = state.engine().scheduler_stats();
    assert!(stats.prefix_cached_bytes <= cached, "{stats:?}");
    assert_eq!(stats.preemptions, 0);
}
