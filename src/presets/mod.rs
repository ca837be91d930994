//! Provider presets: ready-made policies that follow what GitHub, OpenAI,
//! Anthropic and git document (or what their official clients do).
//!
//! | preset | constructor | follows |
//! |---|---|---|
//! | [`Preset::GitHub`] | [`RetryPolicy::github`](crate::RetryPolicy::github) | GitHub REST API docs ("Rate limits for the REST API", "Best practices": primary and secondary limits) and octokit's retry and throttling plugins |
//! | [`Preset::OpenAi`] | [`RetryPolicy::openai`](crate::RetryPolicy::openai) | the official OpenAI SDKs (`openai-python` `_base_client.py`) |
//! | [`Preset::Anthropic`] | [`RetryPolicy::anthropic`](crate::RetryPolicy::anthropic) | the official Anthropic SDKs (`anthropic-sdk-python` `_base_client.py`), and Anthropic's "Errors" page for 529 |
//! | [`Preset::Git`] | [`RetryPolicy::git`](crate::RetryPolicy::git) | git's `http.maxRetries` / `http.maxRetryTime` (`http.c`) and the smart HTTP protocol (`gitprotocol-http`) |
//!
//! Each constructor documents its settings and rules. To change a setting
//! but keep a preset's rules, start from [`Preset::builder`]:
//!
//! ```
//! use http_resilience::{Preset, RetryPolicy};
//! let policy = Preset::GitHub.builder().max_retries(5).build()?;
//! assert_eq!(policy.max_retries(), 5);
//! assert_eq!(policy.preset(), Some(Preset::GitHub));
//! # Ok::<(), http_resilience::ConfigError>(())
//! ```
//!
//! [`EndpointPolicies::well_known`](crate::EndpointPolicies::well_known)
//! maps the providers' hosts to these presets.

use std::fmt;
use std::str::FromStr;

/// A named provider preset. See the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Preset {
    /// GitHub's REST API ([`RetryPolicy::github`](crate::RetryPolicy::github)).
    GitHub,
    /// OpenAI's API ([`RetryPolicy::openai`](crate::RetryPolicy::openai)).
    OpenAi,
    /// Anthropic's API ([`RetryPolicy::anthropic`](crate::RetryPolicy::anthropic)).
    Anthropic,
    /// git's smart HTTP protocol ([`RetryPolicy::git`](crate::RetryPolicy::git)).
    Git,
}

impl Preset {
    /// Every preset, in a stable order.
    pub const ALL: [Preset; 4] = [
        Preset::GitHub,
        Preset::OpenAi,
        Preset::Anthropic,
        Preset::Git,
    ];

    /// The stable name used in configuration files: `github`, `openai`,
    /// `anthropic`, `git`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Preset::GitHub => "github",
            Preset::OpenAi => "openai",
            Preset::Anthropic => "anthropic",
            Preset::Git => "git",
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses [`Preset::as_str`] names.
///
/// ```
/// use http_resilience::Preset;
/// assert_eq!("anthropic".parse::<Preset>(), Ok(Preset::Anthropic));
/// assert!("gitlab".parse::<Preset>().is_err());
/// ```
impl FromStr for Preset {
    type Err = String;

    fn from_str(s: &str) -> Result<Preset, String> {
        Preset::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                format!("unknown preset `{s}` (expected github, openai, anthropic or git)")
            })
    }
}
