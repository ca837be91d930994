//! The async-openai recipe against a fake OpenAI on loopback, under
//! tokio's paused clock: the waits are read from the times the server saw
//! the requests. The policy is the OpenAI preset without jitter.

use std::time::Duration;

use async_openai::error::OpenAIError;
use async_openai::types::chat::CreateChatCompletionRequest;
use async_openai::types::files::{CreateFileRequest, FileInput, FilePurpose};
use fake_api::{FakeApi, Reply};
use http_resilience::{Jitter, Preset};

const COMPLETION: &str = r#"{"id":"c1","object":"chat.completion","created":1,"model":"m",
  "choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}]}"#;
const FILE: &str = r#"{"id":"file-1","object":"file","bytes":26,"created_at":1,
  "filename":"train.jsonl","purpose":"fine-tune"}"#;
const RATE_LIMITED: &str =
    r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#;
const SERVER_ERROR: &str =
    r#"{"error":{"message":"The server had an error","type":"server_error"}}"#;

fn openai(api: &FakeApi) -> async_openai::Client<async_openai::config::OpenAIConfig> {
    let policy = Preset::OpenAi.builder().jitter(Jitter::None);
    recipe_async_openai::client(policy, &format!("{}/v1", api.base()), "sk-fake").unwrap()
}

fn chat() -> CreateChatCompletionRequest {
    serde_json::from_value(serde_json::json!({
        "model": "m",
        "messages": [{ "role": "user", "content": "hi" }]
    }))
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn retry_after_ms_is_waited_exactly() {
    let api = FakeApi::start().await;
    api.script(
        "/v1/chat/completions",
        vec![
            Reply::json(429, RATE_LIMITED).header("retry-after-ms", "300"),
            Reply::json(200, COMPLETION),
        ],
    );
    let response = openai(&api).chat().create(chat()).await.unwrap();
    assert_eq!(
        response.choices[0].message.content.as_deref(),
        Some("hello")
    );
    let seen = api.seen("/v1/chat/completions");
    assert_eq!(seen.len(), 2);
    assert!(
        seen.iter()
            .all(|s| s.header("authorization") == Some("Bearer sk-fake"))
    );
    // The same body both times.
    assert_eq!(seen[0].body, seen[1].body);
    assert_eq!(
        api.gaps("/v1/chat/completions"),
        [Duration::from_millis(300)]
    );
    println!(
        "async-openai figure: 429 retry-after-ms 300, then 200: 2 attempts, wait {:?}",
        api.gaps("/v1/chat/completions")
    );
}

#[tokio::test(start_paused = true)]
async fn a_multipart_upload_is_rebuilt_and_resent_whole() {
    let api = FakeApi::start().await;
    api.script(
        "/v1/files",
        vec![Reply::json(503, SERVER_ERROR), Reply::json(200, FILE)],
    );
    let content = b"{\"prompt\":\"a\",\"completion\":\"b\"}\n".to_vec();
    let request = CreateFileRequest {
        file: FileInput::from_vec_u8("train.jsonl".into(), content.clone()),
        purpose: FilePurpose::FineTune,
        expires_after: None,
    };
    let file = openai(&api).files().create(request).await.unwrap();
    assert_eq!(file.id, "file-1");
    let seen = api.seen("/v1/files");
    assert_eq!(seen.len(), 2, "the upload was retried");
    for s in &seen {
        let body = String::from_utf8_lossy(&s.body);
        assert!(
            s.header("content-type")
                .unwrap()
                .starts_with("multipart/form-data")
        );
        assert!(
            body.contains("{\"prompt\":\"a\",\"completion\":\"b\"}"),
            "{body}"
        );
        assert!(body.contains("fine-tune"), "{body}");
    }
    // The preset's first backoff, no jitter: 0.5 s.
    assert_eq!(api.gaps("/v1/files"), [Duration::from_millis(500)]);
    println!(
        "async-openai figure: multipart upload 503, then 200: 2 attempts, each {} bytes, wait {:?}",
        seen[0].body.len(),
        api.gaps("/v1/files")
    );
}

#[tokio::test(start_paused = true)]
async fn giving_up_keeps_the_api_error() {
    let api = FakeApi::start().await;
    api.script("/v1/chat/completions", vec![Reply::json(500, SERVER_ERROR)]);
    let error = openai(&api).chat().create(chat()).await.unwrap_err();
    assert!(matches!(error, OpenAIError::ApiError(_)), "{error:?}");
    assert!(
        error.to_string().contains("The server had an error"),
        "{error}"
    );
    // The preset's 2 retries: 3 attempts.
    assert_eq!(api.seen("/v1/chat/completions").len(), 3);
    println!(
        "async-openai figure: always 500: 3 attempts, waits {:?}, then OpenAIError::ApiError",
        api.gaps("/v1/chat/completions")
    );
}

#[tokio::test(start_paused = true)]
async fn x_should_retry_false_is_obeyed() {
    let api = FakeApi::start().await;
    api.script(
        "/v1/chat/completions",
        vec![Reply::json(500, SERVER_ERROR).header("x-should-retry", "false")],
    );
    let error = openai(&api).chat().create(chat()).await.unwrap_err();
    assert!(matches!(error, OpenAIError::ApiError(_)), "{error:?}");
    assert_eq!(api.seen("/v1/chat/completions").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_transport_failure_is_boxed_with_ours() {
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let policy = Preset::OpenAi.builder().jitter(Jitter::None);
    let openai =
        recipe_async_openai::client(policy, &format!("http://{addr}/v1"), "sk-fake").unwrap();
    let error = openai.chat().create(chat()).await.unwrap_err();
    let OpenAIError::Boxed(boxed) = &error else {
        panic!("expected OpenAIError::Boxed, got {error:?}");
    };
    let ours = boxed
        .downcast_ref::<http_resilience::Error>()
        .expect("an http_resilience::Error");
    assert_eq!(ours.code(), "MAX_RETRIES_EXCEEDED");
    assert!(ours.is_connect());
    assert_eq!(ours.report().attempts(), 3);
    assert!(!format!("{error:?}").contains("sk-fake"));
}
