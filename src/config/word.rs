//! Values written as strings (`"500ms"`, `"github"`, `"scaled:0.6"`),
//! parsed by [`Parse`].

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use http::Method;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::backoff::Jitter;
use crate::policy::LongHint;
use crate::presets::Preset;
use crate::protection::store::Scope;

/// A value written as a string and parsed by [`Parse`].
pub(super) struct Word<T>(pub(super) T);

pub(super) trait Parse: Sized {
    /// What serde says it expected when the type is wrong.
    const EXPECTING: &'static str;
    fn parse(s: &str) -> Result<Self, String>;
}

impl Parse for Duration {
    const EXPECTING: &'static str = r#"a duration such as "500ms", "2m" or "1h""#;
    fn parse(s: &str) -> Result<Self, String> {
        humantime::parse_duration(s).map_err(|e| {
            format!(r#"`{s}` is not a duration ({e}); write e.g. "500ms", "2m" or "1h""#)
        })
    }
}

impl Parse for Jitter {
    const EXPECTING: &'static str =
        r#"a jitter: "none", "full", "equal", "decorrelated" or "scaled:<factor>""#;
    fn parse(s: &str) -> Result<Self, String> {
        s.parse()
    }
}

impl Parse for Preset {
    const EXPECTING: &'static str = r#"a preset: "github", "openai", "anthropic" or "git""#;
    fn parse(s: &str) -> Result<Self, String> {
        s.parse()
    }
}

impl Parse for LongHint {
    const EXPECTING: &'static str = r#""give_up" or "use_backoff""#;
    fn parse(s: &str) -> Result<Self, String> {
        match s {
            "give_up" => Ok(LongHint::GiveUp),
            "use_backoff" => Ok(LongHint::UseBackoff),
            _ => Err(format!(
                "unknown on_long_hint `{s}` (expected give_up or use_backoff)"
            )),
        }
    }
}

impl Parse for Scope {
    const EXPECTING: &'static str = r#"a scope: "endpoint" or "policy""#;
    fn parse(s: &str) -> Result<Self, String> {
        match s {
            "endpoint" => Ok(Scope::Endpoint),
            "policy" => Ok(Scope::Policy),
            _ => Err(format!("unknown scope `{s}` (expected endpoint or policy)")),
        }
    }
}

impl Parse for Method {
    const EXPECTING: &'static str = r#"an HTTP method such as "GET""#;
    fn parse(s: &str) -> Result<Self, String> {
        let method =
            Method::from_bytes(s.as_bytes()).map_err(|_| format!("`{s}` is not an HTTP method"))?;
        // Methods are case-sensitive: `get` is not GET and would never
        // match a real GET, so say so rather than accept a dead rule.
        let upper = s.to_ascii_uppercase();
        if upper != s && STANDARD.iter().any(|m| m.as_str() == upper) {
            return Err(format!(
                "`{s}` is not `{upper}`: methods are case-sensitive"
            ));
        }
        Ok(method)
    }
}

const STANDARD: [Method; 9] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::CONNECT,
    Method::OPTIONS,
    Method::TRACE,
    Method::PATCH,
];

impl<'de, T: Parse> Deserialize<'de> for Word<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<T: Parse> Visitor<'_> for V<T> {
            type Value = Word<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(T::EXPECTING)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Word<T>, E> {
                T::parse(s).map(Word).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(V(PhantomData))
    }
}
