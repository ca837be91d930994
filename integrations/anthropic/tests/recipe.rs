//! The async-anthropic recipe against a fake Anthropic on loopback, under
//! tokio's paused clock: a wait anywhere (reqwest, the SDK's backoff) would
//! move the clock by exactly its length, so the gaps between the requests
//! the server saw are the waits. reqwest's hook cannot wait: they are 0.

use std::time::Duration;

use async_anthropic::errors::AnthropicError;
use async_anthropic::types::CreateMessagesRequest;
use fake_api::{FakeApi, Reply};
use http_resilience::RetryPolicy;

const KEY: &str = "sk-ant-fake-key";
const PATH: &str = "/v1/messages";
const MESSAGE: &str = r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-x",
  "content":[{"type":"text","text":"hello"}],"stop_reason":"end_turn","stop_sequence":null,
  "usage":{"input_tokens":3,"output_tokens":1}}"#;
const OVERLOADED: &str =
    r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
const UNAVAILABLE: &str =
    r#"{"type":"error","error":{"type":"api_error","message":"Service unavailable"}}"#;
const RATE_LIMITED: &str = r#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}"#;
const INVALID: &str = r#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: Field required"}}"#;

fn anthropic(api: &FakeApi) -> async_anthropic::Client {
    recipe_anthropic::client(&RetryPolicy::anthropic(), &api.base(), KEY).unwrap()
}

fn hello() -> CreateMessagesRequest {
    serde_json::from_value(serde_json::json!({
        "model": "claude-x",
        "max_tokens": 16,
        "stream": false,
        "messages": [{ "role": "user", "content": [{ "type": "text", "text": "hi" }] }]
    }))
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn overloaded_then_unavailable_then_success() {
    let api = FakeApi::start().await;
    api.script(
        PATH,
        vec![
            Reply::json(529, OVERLOADED),
            Reply::json(503, UNAVAILABLE),
            Reply::json(200, MESSAGE),
        ],
    );
    let response = anthropic(&api).messages().create(hello()).await.unwrap();
    assert_eq!(response.id.as_deref(), Some("msg_1"));
    assert_eq!(response.messages()[0].text().as_deref(), Some("hello"));
    let seen = api.seen(PATH);
    assert_eq!(seen.len(), 3, "529, 503, 200");
    for s in &seen {
        assert_eq!(s.method, "POST");
        assert_eq!(s.header("x-api-key"), Some(KEY));
        assert_eq!(
            s.header("anthropic-version"),
            Some(recipe_anthropic::API_VERSION)
        );
        // reqwest resends the same JSON body.
        assert_eq!(s.body, seen[0].body);
    }
    assert!(String::from_utf8_lossy(&seen[0].body).contains("\"max_tokens\":16"));
    // No backoff: reqwest's hook sends each retry at once.
    assert_eq!(api.gaps(PATH), [Duration::ZERO, Duration::ZERO]);
    println!(
        "anthropic figure: 529, 503, 200: 3 attempts, waits {:?} (reqwest's hook cannot wait)",
        api.gaps(PATH)
    );
}

#[tokio::test(start_paused = true)]
async fn an_invalid_request_is_sent_once() {
    let api = FakeApi::start().await;
    api.script(PATH, vec![Reply::json(400, INVALID)]);
    let error = anthropic(&api)
        .messages()
        .create(hello())
        .await
        .unwrap_err();
    let AnthropicError::BadRequest(body) = &error else {
        panic!("expected AnthropicError::BadRequest, got {error:?}");
    };
    assert!(body.contains("invalid_request_error"), "{body}");
    assert_eq!(api.seen(PATH).len(), 1);
    println!(
        "anthropic figure: 400 invalid_request_error: 1 attempt, then AnthropicError::BadRequest"
    );
}

#[tokio::test(start_paused = true)]
async fn a_rate_limit_is_retried_at_once_its_retry_after_unread() {
    let api = FakeApi::start().await;
    api.script(
        PATH,
        vec![
            Reply::json(429, RATE_LIMITED)
                .header("retry-after", "20")
                .header("anthropic-ratelimit-requests-remaining", "0"),
        ],
    );
    let error = anthropic(&api)
        .messages()
        .create(hello())
        .await
        .unwrap_err();
    let AnthropicError::ApiError(body) = &error else {
        panic!("expected AnthropicError::ApiError, got {error:?}");
    };
    assert!(body.contains("rate_limit_error"), "{body}");
    // The preset's 2 retries, by the status alone, and nothing more: the
    // SDK's own retry of 429s is off (on, it would start the hook's 3
    // attempts over again).
    assert_eq!(api.seen(PATH).len(), 3);
    // `retry-after: 20` is not read: the retries follow at once, where the
    // middleware would have waited 20 s before each.
    assert_eq!(api.gaps(PATH), [Duration::ZERO, Duration::ZERO]);
    println!(
        "anthropic figure: always 429 with retry-after 20: 3 attempts, waits {:?} (retry-after unread), then AnthropicError::ApiError",
        api.gaps(PATH)
    );
}

#[tokio::test(start_paused = true)]
async fn always_overloaded_gives_up_after_the_presets_retries() {
    let api = FakeApi::start().await;
    api.script(PATH, vec![Reply::json(529, OVERLOADED)]);
    let error = anthropic(&api)
        .messages()
        .create(hello())
        .await
        .unwrap_err();
    let AnthropicError::ApiError(body) = &error else {
        panic!("expected AnthropicError::ApiError, got {error:?}");
    };
    assert!(body.contains("overloaded_error"), "{body}");
    assert_eq!(api.seen(PATH).len(), 3);
    println!(
        "anthropic figure: always 529: 3 attempts, waits {:?}, then AnthropicError::ApiError",
        api.gaps(PATH)
    );
}

#[tokio::test(start_paused = true)]
async fn a_refused_connection_is_a_network_error_after_the_retries() {
    // Nothing listens there: every attempt is refused.
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let anthropic =
        recipe_anthropic::client(&RetryPolicy::anthropic(), &format!("http://{addr}"), KEY)
            .unwrap();
    let error = anthropic.messages().create(hello()).await.unwrap_err();
    let AnthropicError::NetworkError(reqwest) = &error else {
        panic!("expected AnthropicError::NetworkError, got {error:?}");
    };
    assert!(reqwest.is_connect(), "{reqwest:?}");
    assert!(!format!("{error:?}").contains(KEY));
}

#[test]
fn a_base_without_a_host_is_refused_without_the_key() {
    let error = recipe_anthropic::client(&RetryPolicy::anthropic(), "not a url", KEY).unwrap_err();
    assert!(!error.to_string().contains(KEY));
    assert!(error.to_string().contains("base URL"), "{error}");
}
