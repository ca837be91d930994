//! A tracing layer that keeps every span (name, parent, fields as recorded
//! at creation and later) and every event (message, fields, the span it
//! happened in), for the span tests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// A span as the subscriber saw it.
#[derive(Debug, Clone, Default)]
pub struct SeenSpan {
    pub name: &'static str,
    pub parent: Option<String>,
    pub fields: BTreeMap<String, String>,
}

impl SeenSpan {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

/// An event: its fields (the message under `message`) and the span it
/// happened in.
#[derive(Debug, Clone, Default)]
pub struct SeenEvent {
    pub span: Option<String>,
    pub fields: BTreeMap<String, String>,
}

#[derive(Clone, Default)]
pub struct Spans {
    spans: Arc<Mutex<Vec<(Id, SeenSpan)>>>,
    events: Arc<Mutex<Vec<SeenEvent>>>,
}

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
        let mut seen = SeenSpan {
            name: attrs.metadata().name(),
            ..SeenSpan::default()
        };
        attrs.record(&mut Fields(&mut seen.fields));
        let parent = match attrs.parent() {
            Some(parent) => ctx.span(parent),
            None if attrs.is_contextual() => ctx.lookup_current(),
            None => None,
        };
        seen.parent = parent.map(|p| p.name().to_owned());
        self.spans.lock().unwrap().push((id.clone(), seen));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut spans = self.spans.lock().unwrap();
        if let Some((_, seen)) = spans.iter_mut().rev().find(|(i, _)| i == id) {
            values.record(&mut Fields(&mut seen.fields));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        // Only the crate's own events: the client's (hyper-util's TRACE
        // events) happen inside the attempt's span too, as they should.
        if !event.metadata().target().starts_with("http_resilience") {
            return;
        }
        let mut seen = SeenEvent {
            span: ctx.event_span(event).map(|s| s.name().to_owned()),
            ..SeenEvent::default()
        };
        event.record(&mut Fields(&mut seen.fields));
        self.events.lock().unwrap().push(seen);
    }
}

impl Spans {
    /// The spans named `name`, in the order they were made.
    pub fn named(&self, name: &str) -> Vec<SeenSpan> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .map(|(_, s)| s.clone())
            .filter(|s| s.name == name)
            .collect()
    }

    /// The attempts' spans.
    pub fn attempts(&self) -> Vec<SeenSpan> {
        self.named("http_resilience.attempt")
    }

    /// The events of the target `http_resilience`... every event, in order.
    pub fn events(&self) -> Vec<SeenEvent> {
        self.events.lock().unwrap().clone()
    }

    /// Forgets everything seen so far.
    pub fn clear(&self) {
        self.spans.lock().unwrap().clear();
        self.events.lock().unwrap().clear();
    }
}

/// A subscriber with this layer (every level), as the thread's default
/// until the guard is dropped.
pub fn capture() -> (Spans, tracing::subscriber::DefaultGuard) {
    use tracing_subscriber::layer::SubscriberExt;
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(spans.clone());
    let guard = tracing::subscriber::set_default(subscriber);
    (spans, guard)
}
