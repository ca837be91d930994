//! The octocrab recipe against a fake GitHub on loopback, under tokio's
//! paused clock: the waits are read from the times the server saw the
//! requests. The policy is the GitHub preset without jitter (so the waits
//! are exact) and with a fixed wall clock (for the rate-limit resets).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fake_api::{FakeApi, Reply};
use http_resilience::{Jitter, Preset};

const TOKEN: &str = "ghp_fake_token";
const REPO: &str = "{\"id\":1,\"name\":\"r\",\"full_name\":\"o/r\"}";
const SECONDARY: &str = "{\"message\":\"You have exceeded a secondary rate limit. Please wait a few minutes before you try again.\"}";

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn github(api: &FakeApi) -> octocrab::Octocrab {
    let policy = Preset::GitHub
        .builder()
        .jitter(Jitter::None)
        .wall_clock(now);
    recipe_octocrab::client(policy, &api.base(), TOKEN).unwrap()
}

async fn get_repo(github: &octocrab::Octocrab) -> octocrab::Result<serde_json::Value> {
    github.get("/repos/o/r", None::<&()>).await
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[tokio::test(start_paused = true)]
async fn bad_gateways_then_success_with_auth_and_user_agent_kept() {
    let api = FakeApi::start().await;
    api.script(
        "/repos/o/r",
        vec![
            Reply::json(502, "{\"message\":\"Bad Gateway\"}"),
            Reply::json(502, "{\"message\":\"Bad Gateway\"}"),
            Reply::json(200, REPO),
        ],
    );
    let repo = get_repo(&github(&api)).await.unwrap();
    assert_eq!(repo["full_name"], "o/r");
    let seen = api.seen("/repos/o/r");
    assert_eq!(seen.len(), 3);
    for s in &seen {
        assert_eq!(s.header("authorization"), Some("Bearer ghp_fake_token"));
        assert_eq!(s.header("user-agent"), Some("octocrab"));
    }
    // The preset's backoff: 1 s, then 2 s.
    assert_eq!(api.gaps("/repos/o/r"), [secs(1), secs(2)]);
    println!(
        "octocrab figure: 502, 502, 200: 3 attempts, waits {:?}",
        api.gaps("/repos/o/r")
    );
}

#[tokio::test(start_paused = true)]
async fn the_primary_limit_is_waited_until_its_reset() {
    let api = FakeApi::start().await;
    let reset = (now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 30).to_string();
    api.script(
        "/repos/o/r",
        vec![
            Reply::json(403, "{\"message\":\"API rate limit exceeded\"}")
                .header("x-ratelimit-remaining", "0")
                .header("x-ratelimit-reset", &reset),
            Reply::json(200, REPO),
        ],
    );
    get_repo(&github(&api)).await.unwrap();
    let gaps = api.gaps("/repos/o/r");
    assert_eq!(gaps.len(), 1);
    // The reset is 30 s away; the preset waits until it, plus 1 s.
    assert_eq!(gaps[0], secs(31), "{gaps:?}");
    println!("octocrab figure: primary limit, reset in 30 s: 2 attempts, wait {gaps:?}");
}

#[tokio::test(start_paused = true)]
async fn the_secondary_limit_honours_retry_after() {
    let api = FakeApi::start().await;
    api.script(
        "/repos/o/r",
        vec![
            Reply::json(403, SECONDARY).header("retry-after", "7"),
            Reply::json(200, REPO),
        ],
    );
    get_repo(&github(&api)).await.unwrap();
    assert_eq!(api.gaps("/repos/o/r"), [secs(7)]);
    println!(
        "octocrab figure: secondary limit, retry-after 7: 2 attempts, wait {:?}",
        api.gaps("/repos/o/r")
    );
}

#[tokio::test(start_paused = true)]
async fn giving_up_keeps_octocrabs_own_error() {
    let api = FakeApi::start().await;
    api.script(
        "/repos/o/r",
        vec![Reply::json(502, "{\"message\":\"Bad Gateway\"}")],
    );
    let error = get_repo(&github(&api)).await.unwrap_err();
    match &error {
        octocrab::Error::GitHub { source, .. } => {
            assert_eq!(source.status_code.as_u16(), 502);
            assert_eq!(source.message, "Bad Gateway");
        }
        other => panic!("expected Error::GitHub, got {other:?}"),
    }
    // The preset's 3 retries: 4 attempts.
    assert_eq!(api.seen("/repos/o/r").len(), 4);
    println!(
        "octocrab figure: always 502: 4 attempts, waits {:?}, then Error::GitHub {{ status 502 }}",
        api.gaps("/repos/o/r")
    );
}

#[tokio::test(start_paused = true)]
async fn permissions_403_and_404_are_not_retried() {
    let api = FakeApi::start().await;
    api.script(
        "/repos/o/r",
        vec![Reply::json(
            403,
            "{\"message\":\"Resource not accessible by integration\"}",
        )],
    );
    api.script(
        "/repos/o/gone",
        vec![Reply::json(404, "{\"message\":\"Not Found\"}")],
    );
    let github = github(&api);
    let error = get_repo(&github).await.unwrap_err();
    assert!(matches!(&error, octocrab::Error::GitHub { source, .. } if source.status_code == 403));
    let gone = github
        .get::<serde_json::Value, _, ()>("/repos/o/gone", None::<&()>)
        .await
        .unwrap_err();
    assert!(matches!(&gone, octocrab::Error::GitHub { source, .. } if source.status_code == 404));
    assert_eq!(api.seen("/repos/o/r").len(), 1);
    assert_eq!(api.seen("/repos/o/gone").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_post_is_not_resent_after_a_502() {
    let api = FakeApi::start().await;
    api.script(
        "/repos/o/r/issues",
        vec![Reply::json(502, "{\"message\":\"Bad Gateway\"}")],
    );
    let body = serde_json::json!({ "title": "t" });
    let error = github(&api)
        .post::<_, serde_json::Value>("/repos/o/r/issues", Some(&body))
        .await
        .unwrap_err();
    assert!(matches!(&error, octocrab::Error::GitHub { source, .. } if source.status_code == 502));
    let seen = api.seen("/repos/o/r/issues");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body.as_ref(), b"{\"title\":\"t\"}");
}

#[tokio::test(start_paused = true)]
async fn a_transport_failure_is_a_service_error_holding_ours() {
    // Nothing listens there: every attempt is refused.
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let policy = Preset::GitHub
        .builder()
        .jitter(Jitter::None)
        .wall_clock(now);
    let github = recipe_octocrab::client(policy, &format!("http://{addr}"), TOKEN).unwrap();
    let error = get_repo(&github).await.unwrap_err();
    let octocrab::Error::Service { source, .. } = &error else {
        panic!("expected Error::Service, got {error:?}");
    };
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
    let mut ours = None;
    while let Some(e) = cause {
        if let Some(e) = e.downcast_ref::<http_resilience::Error>() {
            ours = Some(e);
            break;
        }
        cause = e.source();
    }
    let ours = ours.expect("an http_resilience::Error inside");
    assert_eq!(ours.code(), "MAX_RETRIES_EXCEEDED");
    assert!(ours.is_connect());
    assert_eq!(ours.report().attempts(), 4);
    assert!(!format!("{error:?}").contains(TOKEN));
}
