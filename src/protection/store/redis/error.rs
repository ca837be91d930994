//! [`StoreError`]: why a [`RedisStore`](super::RedisStore) could not start.

use std::fmt;

use crate::validate::ConfigError;

/// Why [`RedisStoreBuilder::connect`](super::RedisStoreBuilder::connect)
/// failed. Its text names the server by host and port only: the URL's
/// user, password and database never appear in it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// The URL is not a Redis URL (`redis://host:port`, `rediss://…`,
    /// `redis+unix:///path`, `unix:///path`).
    InvalidUrl {
        /// What is wrong with it (never the URL itself).
        reason: String,
    },
    /// A setting is out of range: the builder's
    /// [`check`](super::RedisStoreBuilder::check), which names the setting.
    InvalidSetting(ConfigError),
    /// The server did not answer within the connect timeout, or refused
    /// the connection, and the store was not asked to
    /// [start without it](super::RedisStoreBuilder::start_without_redis).
    Unreachable {
        /// `host:port` (or the socket's path).
        server: String,
        /// What went wrong.
        reason: String,
    },
}

impl StoreError {
    /// A stable code: `REDIS_INVALID_URL`, `REDIS_INVALID_SETTING`,
    /// `REDIS_UNREACHABLE`.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::InvalidUrl { .. } => "REDIS_INVALID_URL",
            StoreError::InvalidSetting(_) => "REDIS_INVALID_SETTING",
            StoreError::Unreachable { .. } => "REDIS_UNREACHABLE",
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::InvalidUrl { reason } => write!(f, "invalid Redis URL: {reason}"),
            StoreError::InvalidSetting(e) => {
                write!(
                    f,
                    "invalid Redis store setting `{}`: {}",
                    e.field(),
                    e.reason()
                )
            }
            StoreError::Unreachable { server, reason } => {
                write!(f, "Redis at {server} is unreachable: {reason}")
            }
        }
    }
}

impl std::error::Error for StoreError {}

/// A Redis error's text without anything that could come from the URL: its
/// kind and, for an I/O error, the I/O error's kind. (The `redis` crate's
/// messages are not checked for what they may echo.)
pub(crate) fn describe(e: &redis::RedisError) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    if e.is_connection_refusal() {
        return "connection refused".into();
    }
    if e.is_io_error() {
        return "I/O error".into();
    }
    match e.code() {
        Some(code) => format!("server error {code}"),
        None => "client error".into(),
    }
}

/// Why a URL was refused, without the URL (which may carry a password).
pub(crate) fn describe_url(e: &redis::RedisError) -> String {
    let _ = e;
    "not a Redis URL (expected redis://host:port[/db], rediss://host:port, \
     redis+unix:///path or unix:///path)"
        .into()
}
