//! One span per physical attempt, with OpenTelemetry's HTTP client
//! conventions, so that `tracing-opentelemetry` exports each attempt as
//! the conventions expect. Compiles away without the `tracing` feature
//! (the model: hyper's `src/trace.rs`): [`AttemptSpan`] is then a
//! zero-sized type whose methods do nothing.
//!
//! | field | value | when |
//! |---|---|---|
//! | `otel.name` | the method (`GET`): the conventions' span name | always |
//! | `otel.kind` | `client` | always |
//! | `http.request.method` | `GET`, `POST`, ... | always |
//! | `server.address` | the host | always |
//! | `server.port` | the port | always |
//! | `url.path` | the path, never the query | unless the policy hides paths ([`hide_paths`](crate::policy::RetryPolicyBuilder::hide_paths)) |
//! | `http.request.resend_count` | 1, 2, ... | on resends only: absent on the first attempt |
//! | `http.response.status_code` | the status | when a response arrived |
//! | `error.type` | the status (`"503"`) for a 4xx or 5xx; the [`FailureKind`](crate::classify::FailureKind) (`"connection_reset"`, `"timeout"`) for a transport failure | when the attempt failed |
//! | `otel.status_code` | `error` | when `error.type` is set |
//!
//! The span is an `INFO` span of the target `http_resilience`, named
//! `http_resilience.attempt`, a child of the caller's current span. No
//! header value, user info or query string is ever a field. A span is not
//! an event: the rule stays that a request succeeding at once emits no
//! event. With no subscriber interested, making one is a callsite check
//! and the request is not even described; adapters carry a span only when
//! one was made, boxed with the attempt (the tower layer's `CallingTraced`
//! state, the middleware's traced send), so their futures do not grow.
//!
//! A run of [`retry`](crate::policy::RetryPolicy::retry) gets the same
//! span per attempt with `otel.name` the operation's name, `otel.kind`
//! `internal`, `http_resilience.operation` and `http_resilience.attempt`
//! (1, 2, ...) and, when the attempt failed, `error.type` (its failure
//! kind) and `otel.status_code`.

use crate::classify::{Outcome, RequestMeta};

/// The span of one attempt (see the [module docs](self)).
#[derive(Debug, Clone)]
pub(crate) struct AttemptSpan {
    #[cfg(feature = "tracing")]
    span: tracing::Span,
}

impl AttemptSpan {
    /// The span of attempt `attempt` (1 for the first) of the request that
    /// `describe` describes, as a child of the current span, if a
    /// subscriber wants it; `None` otherwise, and then the request is not
    /// described at all. (An adapter keeps it out of its future's inline
    /// state: a disabled span must cost those futures nothing.)
    /// `hide_path`: leave `url.path` out.
    #[inline]
    pub(crate) fn traced<'a>(
        describe: impl FnOnce() -> RequestMeta<'a>,
        attempt: u32,
        hide_path: bool,
    ) -> Option<AttemptSpan> {
        #[cfg(feature = "tracing")]
        {
            let span = tracing::info_span!(
                target: "http_resilience",
                "http_resilience.attempt",
                otel.name = tracing::field::Empty,
                otel.kind = "client",
                http.request.method = tracing::field::Empty,
                server.address = tracing::field::Empty,
                server.port = tracing::field::Empty,
                url.path = tracing::field::Empty,
                http.request.resend_count = tracing::field::Empty,
                http.response.status_code = tracing::field::Empty,
                error.type = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
            );
            if span.is_disabled() {
                return None;
            }
            // Described only now: with no subscriber interested, the span
            // above is one callsite check and nothing else.
            let request = describe();
            let method = request.method().as_str();
            span.record("otel.name", method);
            span.record("http.request.method", method);
            span.record("server.address", request.host());
            span.record("server.port", request.port());
            if !hide_path {
                span.record("url.path", request.path());
            }
            if attempt > 1 {
                span.record("http.request.resend_count", attempt - 1);
            }
            Some(AttemptSpan { span })
        }
        #[cfg(not(feature = "tracing"))]
        {
            let _ = (describe, attempt, hide_path);
            None
        }
    }

    /// The span of attempt `attempt` of a run of the operation `name`
    /// ([`retry`](crate::policy::RetryPolicy::retry)), if a subscriber
    /// wants it: `otel.name` is the operation's name, `otel.kind`
    /// `internal`, and no HTTP field but `error.type`.
    #[inline]
    pub(crate) fn operation(name: &str, attempt: u32) -> Option<Box<AttemptSpan>> {
        #[cfg(feature = "tracing")]
        {
            let span = tracing::info_span!(
                target: "http_resilience",
                "http_resilience.attempt",
                otel.name = name,
                otel.kind = "internal",
                http_resilience.operation = name,
                http_resilience.attempt = attempt,
                error.type = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
            );
            if span.is_disabled() {
                return None;
            }
            Some(Box::new(AttemptSpan { span }))
        }
        #[cfg(not(feature = "tracing"))]
        {
            let _ = (name, attempt);
            None
        }
    }

    /// Records how the attempt ended: the response's status, and
    /// `error.type` for a 4xx, a 5xx or a transport failure. (A field the
    /// span does not declare, as an operation's has no status, is left
    /// out by `tracing`.)
    #[inline]
    pub(crate) fn outcome(&self, outcome: &Outcome<'_>) {
        #[cfg(feature = "tracing")]
        match outcome {
            Outcome::Response { status, .. } => {
                self.span
                    .record("http.response.status_code", status.as_u16());
                if status.is_client_error() || status.is_server_error() {
                    self.failed(status.as_str());
                }
            }
            Outcome::Error { kind, .. } => self.failed(kind.as_str()),
        }
        #[cfg(not(feature = "tracing"))]
        let _ = outcome;
    }

    #[cfg(feature = "tracing")]
    fn failed(&self, error_type: &str) {
        self.span.record("error.type", error_type);
        self.span.record("otel.status_code", "error");
    }

    /// Runs `f` inside the span (the engine's events after the attempt are
    /// then its children).
    #[inline]
    pub(crate) fn in_scope<T>(&self, f: impl FnOnce() -> T) -> T {
        #[cfg(feature = "tracing")]
        {
            self.span.in_scope(f)
        }
        #[cfg(not(feature = "tracing"))]
        f()
    }
}

/// `attempt`, inside `span` if there is one (each poll enters it).
pub(crate) async fn instrumented<F: std::future::Future>(
    span: Option<&AttemptSpan>,
    attempt: F,
) -> F::Output {
    #[cfg(feature = "tracing")]
    if let Some(span) = span {
        use tracing::Instrument;
        return attempt.instrument(span.span.clone()).await;
    }
    #[cfg(not(feature = "tracing"))]
    let _ = span;
    attempt.await
}

/// [`RetryState::decide`](crate::engine::RetryState::decide) (or any
/// `decide`) inside `span` if there is one, with the outcome recorded on it
/// first.
#[inline]
pub(crate) fn decide_in<T>(
    span: Option<&AttemptSpan>,
    outcome: &Outcome<'_>,
    decide: impl FnOnce() -> T,
) -> T {
    match span {
        None => decide(),
        Some(span) => {
            span.outcome(outcome);
            span.in_scope(decide)
        }
    }
}

#[cfg(all(test, feature = "tracing"))]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use http::{HeaderMap, Method, StatusCode};
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
    use tracing_subscriber::registry::LookupSpan;

    use super::*;
    use crate::classify::FailureKind;

    /// A span as the subscriber saw it.
    #[derive(Debug, Clone, Default)]
    struct Seen {
        name: &'static str,
        parent: Option<String>,
        fields: BTreeMap<String, String>,
    }

    #[derive(Clone, Default)]
    struct Spans(Arc<Mutex<Vec<(Id, Seen)>>>);

    struct Fields<'a>(&'a mut BTreeMap<String, String>);

    impl Visit for Fields<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.insert(field.name().to_owned(), format!("{value:?}"));
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.insert(field.name().to_owned(), value.to_owned());
        }
        fn record_u64(&mut self, field: &Field, value: u64) {
            self.0
                .insert(field.name().to_owned(), format!("u64:{value}"));
        }
        fn record_i64(&mut self, field: &Field, value: i64) {
            self.0
                .insert(field.name().to_owned(), format!("i64:{value}"));
        }
    }

    impl<S> Layer<S> for Spans
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    {
        fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
            let mut seen = Seen {
                name: attrs.metadata().name(),
                ..Seen::default()
            };
            attrs.record(&mut Fields(&mut seen.fields));
            let parent = match attrs.parent() {
                Some(parent) => ctx.span(parent),
                None if attrs.is_contextual() => ctx.lookup_current(),
                None => None,
            };
            seen.parent = parent.map(|p| p.name().to_owned());
            self.0.lock().unwrap().push((id.clone(), seen));
        }

        fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
            let mut spans = self.0.lock().unwrap();
            if let Some((_, seen)) = spans.iter_mut().rev().find(|(i, _)| i == id) {
                values.record(&mut Fields(&mut seen.fields));
            }
        }
    }

    impl Spans {
        fn attempts(&self) -> Vec<Seen> {
            self.0
                .lock()
                .unwrap()
                .iter()
                .map(|(_, s)| s.clone())
                .filter(|s| s.name == "http_resilience.attempt")
                .collect()
        }
    }

    fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// The attempts of one request, each in its span, under the caller's.
    fn run(hide_path: bool, outcomes: &[Result<u16, FailureKind>]) -> Vec<Seen> {
        let spans = Spans::default();
        let subscriber = tracing_subscriber::registry().with(spans.clone());
        tracing::subscriber::with_default(subscriber, || {
            let caller = tracing::info_span!("caller");
            let _entered = caller.enter();
            let headers = HeaderMap::new();
            let meta = RequestMeta::new(
                &Method::GET,
                "https",
                "api.example.com",
                "/v1/items",
                &headers,
            )
            .with_port(8443);
            let err = std::io::Error::other("x");
            for (i, o) in outcomes.iter().enumerate() {
                let span = AttemptSpan::traced(|| meta, i as u32 + 1, hide_path).expect("wanted");
                let h = HeaderMap::new();
                match o {
                    Ok(status) => span.outcome(&Outcome::response(
                        StatusCode::from_u16(*status).unwrap(),
                        &h,
                    )),
                    Err(kind) => span.outcome(&Outcome::Error {
                        kind: *kind,
                        error: &err,
                    }),
                }
            }
        });
        spans.attempts()
    }

    fn common(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut f = fields(&[
            ("otel.name", "GET"),
            ("otel.kind", "client"),
            ("http.request.method", "GET"),
            ("server.address", "api.example.com"),
            ("server.port", "u64:8443"),
            ("url.path", "/v1/items"),
        ]);
        f.extend(fields(extra));
        f
    }

    #[test]
    fn one_span_per_attempt_with_the_http_client_conventions() {
        let seen = run(false, &[Ok(503), Ok(503), Ok(200)]);
        assert_eq!(seen.len(), 3);
        for s in &seen {
            assert_eq!(s.parent.as_deref(), Some("caller"), "{s:?}");
        }
        let failed = [("error.type", "503"), ("otel.status_code", "error")];
        assert_eq!(
            seen[0].fields,
            common(
                &[
                    [("http.response.status_code", "u64:503")].as_slice(),
                    &failed
                ]
                .concat()
            )
        );
        assert_eq!(
            seen[1].fields,
            common(
                &[
                    [
                        ("http.response.status_code", "u64:503"),
                        ("http.request.resend_count", "u64:1"),
                    ]
                    .as_slice(),
                    &failed
                ]
                .concat()
            )
        );
        assert_eq!(
            seen[2].fields,
            common(&[
                ("http.response.status_code", "u64:200"),
                ("http.request.resend_count", "u64:2"),
            ])
        );
    }

    #[test]
    fn transport_failures_name_their_kind_and_hidden_paths_stay_out() {
        let seen = run(
            true,
            &[
                Err(FailureKind::ConnectionReset),
                Err(FailureKind::Timeout),
                Ok(404),
            ],
        );
        assert_eq!(seen.len(), 3);
        let mut first = common(&[
            ("error.type", "connection_reset"),
            ("otel.status_code", "error"),
        ]);
        first.remove("url.path");
        assert_eq!(seen[0].fields, first);
        assert_eq!(
            seen[1].fields.get("error.type").map(String::as_str),
            Some("timeout")
        );
        assert_eq!(
            seen[1]
                .fields
                .get("http.request.resend_count")
                .map(String::as_str),
            Some("u64:1")
        );
        assert!(!seen[1].fields.contains_key("http.response.status_code"));
        assert_eq!(
            seen[2].fields.get("error.type").map(String::as_str),
            Some("404")
        );
        for s in &seen {
            assert!(!s.fields.contains_key("url.path"), "{s:?}");
        }
    }

    #[test]
    fn no_secret_reaches_a_span() {
        let spans = Spans::default();
        let subscriber = tracing_subscriber::registry().with(spans.clone());
        tracing::subscriber::with_default(subscriber, || {
            let request = http::Request::builder()
                .uri("https://user:pw@h.example:8443/p?token=secret-query")
                .header("authorization", "Bearer secret-token")
                .body(())
                .unwrap();
            let meta = RequestMeta::from_http(&request);
            let span = AttemptSpan::traced(|| meta, 2, false).expect("wanted");
            span.outcome(&Outcome::response(StatusCode::OK, request.headers()));
        });
        let seen = spans.attempts();
        assert_eq!(seen.len(), 1);
        let text = format!("{:?}", seen[0].fields);
        for secret in ["pw", "user", "secret", "token"] {
            assert!(!text.contains(secret), "{secret}: {text}");
        }
        assert_eq!(
            seen[0].fields.get("url.path").map(String::as_str),
            Some("/p")
        );
        assert_eq!(
            seen[0].fields.get("server.address").map(String::as_str),
            Some("h.example")
        );
    }

    #[test]
    fn an_operations_attempt_names_the_operation() {
        let spans = Spans::default();
        let subscriber = tracing_subscriber::registry().with(spans.clone());
        tracing::subscriber::with_default(subscriber, || {
            let span = AttemptSpan::operation("store.poll", 2).expect("wanted");
            let err = std::io::Error::other("x");
            span.outcome(&Outcome::Error {
                kind: FailureKind::Timeout,
                error: &err,
            });
        });
        let seen = spans.attempts();
        assert_eq!(
            seen[0].fields,
            fields(&[
                ("otel.name", "store.poll"),
                ("otel.kind", "internal"),
                ("http_resilience.operation", "store.poll"),
                ("http_resilience.attempt", "u64:2"),
                ("error.type", "timeout"),
                ("otel.status_code", "error"),
            ])
        );
    }

    #[test]
    fn no_subscriber_no_span() {
        // A subscriber that wants nothing, as the thread's default (the
        // process-wide one is whatever other tests of this binary left).
        let none = tracing::subscriber::NoSubscriber::default();
        tracing::subscriber::with_default(none, || {
            let headers = HeaderMap::new();
            let meta = RequestMeta::new(&Method::GET, "http", "h", "/", &headers);
            let mut described = false;
            let span = AttemptSpan::traced(
                || {
                    described = true;
                    meta
                },
                2,
                false,
            );
            assert!(span.is_none());
            assert!(!described, "no span, no description");
            assert!(AttemptSpan::operation("store.poll", 1).is_none());
        });
    }
}
