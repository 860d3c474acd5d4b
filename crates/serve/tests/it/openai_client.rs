//! A real socket and a real OpenAI client library against the real model.

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{
    ChatCompletionRequestSystemMessageArgs, ChatCompletionRequestUserMessageArgs,
    ChatCompletionStreamOptions, CreateChatCompletionRequestArgs,
};
use async_openai::types::completions::CreateCompletionRequestArgs;
use credence_model::lora::random_adapter;
use credence_model::weights::LayerTensor;
use futures_util::StreamExt;
use tokio::net::TcpListener;

use crate::SHARED;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_openai_client_lists_completes_and_streams() {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("bound address");
    let app = credence_serve::router(SHARED.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let config = OpenAIConfig::new()
        .with_api_base(format!("http://{addr}/v1"))
        .with_api_key("unused");
    let client = Client::with_config(config);

    let models = client.models().list().await.expect("list models");
    assert_eq!(models.data[0].id, "smollm2");

    let messages = [
        ChatCompletionRequestSystemMessageArgs::default()
            .content("You are a concise assistant.")
            .build()
            .expect("valid message")
            .into(),
        ChatCompletionRequestUserMessageArgs::default()
            .content("Name a colour.")
            .build()
            .expect("valid message")
            .into(),
    ];
    let request = CreateChatCompletionRequestArgs::default()
        .model("smollm2")
        .messages(messages.clone())
        .max_completion_tokens(12u32)
        .temperature(0.0)
        .build()
        .expect("valid request");
    let answer = client
        .chat()
        .create(request)
        .await
        .expect("chat completion");
    let text = answer.choices[0]
        .message
        .content
        .clone()
        .unwrap_or_default();
    assert!(!text.is_empty());
    let usage = answer.usage.expect("usage");
    assert_eq!(
        usage.total_tokens,
        usage.prompt_tokens + usage.completion_tokens
    );

    let request = CreateChatCompletionRequestArgs::default()
        .model("smollm2")
        .messages(messages)
        .max_completion_tokens(12u32)
        .temperature(0.0)
        .stream(true)
        .stream_options(ChatCompletionStreamOptions {
            include_usage: Some(true),
            include_obfuscation: None,
        })
        .build()
        .expect("valid request");
    let mut stream = client
        .chat()
        .create_stream(request)
        .await
        .expect("stream starts");
    let mut streamed = String::new();
    let mut streamed_usage = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("valid chunk");
        for choice in &chunk.choices {
            streamed.push_str(choice.delta.content.as_deref().unwrap_or_default());
        }
        if let Some(usage) = chunk.usage {
            streamed_usage = Some(usage);
        }
    }
    assert_eq!(streamed, text, "greedy stream equals the whole answer");
    assert_eq!(
        streamed_usage.expect("usage chunk").completion_tokens,
        usage.completion_tokens
    );

    let request = CreateCompletionRequestArgs::default()
        .model("smollm2")
        .prompt("The sky is")
        .max_tokens(6u32)
        .temperature(0.0)
        .build()
        .expect("valid request");
    let completion = client
        .completions()
        .create(request)
        .await
        .expect("completion");
    assert!(!completion.choices[0].text.is_empty());

    let error = client
        .chat()
        .create(
            CreateChatCompletionRequestArgs::default()
                .model("gpt-unknown")
                .messages([ChatCompletionRequestUserMessageArgs::default()
                    .content("x")
                    .build()
                    .expect("valid message")
                    .into()])
                .build()
                .expect("valid request"),
        )
        .await
        .expect_err("unknown model");
    assert!(error.to_string().contains("gpt-unknown"), "{error}");

    server.abort();
}

/// Streams a greedy chat answer from `model` and returns its text.
async fn stream_chat(client: &Client<OpenAIConfig>, model: &str) -> String {
    let request = CreateChatCompletionRequestArgs::default()
        .model(model)
        .messages([ChatCompletionRequestUserMessageArgs::default()
            .content("Tell me about rivers.")
            .build()
            .expect("valid message")
            .into()])
        .max_completion_tokens(24u32)
        .temperature(0.0)
        .stream(true)
        .build()
        .expect("valid request");
    let mut stream = client
        .chat()
        .create_stream(request)
        .await
        .expect("stream starts");
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        for choice in &chunk.expect("valid chunk").choices {
            text.push_str(choice.delta.content.as_deref().unwrap_or_default());
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_uploaded_adapters_stream_at_once_through_an_openai_client() {
    let state = crate::new_state(crate::test_config());
    let base = state.model().config().clone();
    let targets = [LayerTensor::Q, LayerTensor::V, LayerTensor::Down];
    for (alias, seed) in [("tune-a", 41), ("tune-b", 42)] {
        let (config, weights) = random_adapter(&base, 8, &targets, seed)
            .to_peft_bytes()
            .expect("serialisable");
        state
            .adapters()
            .register(config.into(), weights.into(), Some(alias))
            .await
            .expect("registered");
    }
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("bound address");
    let app = credence_serve::router(state.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let client = Client::with_config(
        OpenAIConfig::new()
            .with_api_base(format!("http://{addr}/v1"))
            .with_api_key("unused"),
    );

    let (a, b) = tokio::join!(
        stream_chat(&client, "tune-a"),
        stream_chat(&client, "tune-b")
    );
    assert!(!a.is_empty() && !b.is_empty());
    assert_ne!(a, b, "each stream carries its own adapter");
    // Run one at a time, each gives the same answer as in the shared batch.
    assert_eq!(stream_chat(&client, "tune-a").await, a);
    assert_eq!(stream_chat(&client, "tune-b").await, b);
    server.abort();
}
