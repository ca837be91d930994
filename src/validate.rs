//! Validation: [`ConfigError`], the limits every setting obeys, and one way
//! of checking a duration, a count or a ratio, so that every builder
//! refuses a bad value in the same words. A leaf: it imports nothing of the
//! crate.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

/// The largest duration any setting accepts (365 days). Longer values are
/// taken for "infinite" and rejected: they would overflow timers.
pub const MAX_SETTING: Duration = Duration::from_secs(365 * 24 * 3600);

/// An invalid policy setting: which field, and why.
///
/// ```
/// use std::time::Duration;
/// let err = http_resilience::RetryPolicy::builder()
///     .multiplier(0.5)
///     .build()
///     .unwrap_err();
/// assert_eq!(err.field(), "multiplier");
/// assert_eq!(err.code(), "INVALID_CONFIG");
/// assert_eq!(err.to_string(), "invalid retry policy: `multiplier` must be at least 1 (got 0.5)");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    field: Cow<'static, str>,
    reason: String,
}

impl ConfigError {
    pub(crate) fn new(field: impl Into<Cow<'static, str>>, reason: String) -> Self {
        ConfigError {
            field: field.into(),
            reason,
        }
    }
    /// The same error, its field under `prefix` (`circuit_breaker` and
    /// `break_duration` make `circuit_breaker.break_duration`).
    #[cfg_attr(not(feature = "serde"), allow(dead_code))]
    pub(crate) fn within(self, prefix: &str) -> Self {
        let field = if self.field.is_empty() {
            prefix.to_owned()
        } else {
            format!("{prefix}.{}", self.field)
        };
        ConfigError::new(field, self.reason)
    }
    /// The offending field: its builder setter's name, or for a
    /// configuration file its key path (`routes[1].policy.initial_backoff`).
    pub fn field(&self) -> &str {
        &self.field
    }
    /// Why the value was refused.
    pub fn reason(&self) -> &str {
        &self.reason
    }
    /// A stable code: `INVALID_CONFIG`.
    pub fn code(&self) -> &'static str {
        "INVALID_CONFIG"
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "invalid retry policy: {}", self.reason)
        } else {
            write!(f, "invalid retry policy: `{}` {}", self.field, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

/// A check's verdict: `Err` holds why the value was refused, which
/// [`at`](Check::at) turns into a [`ConfigError`] naming the field.
pub(crate) type Verdict = Result<(), String>;

/// Names the field of a failed check.
pub(crate) trait Check {
    fn at(self, field: &'static str) -> Result<(), ConfigError>;
}

impl Check for Verdict {
    fn at(self, field: &'static str) -> Result<(), ConfigError> {
        self.map_err(|reason| ConfigError::new(field, reason))
    }
}

/// A duration in (0, 365 days].
pub(crate) fn positive(d: Duration) -> Verdict {
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    at_most_max(d)
}

/// A duration in [0, 365 days].
pub(crate) fn at_most_max(d: Duration) -> Verdict {
    if d > MAX_SETTING {
        return Err(format!(
            "must be at most 365 days (got {d:?}); infinite values are not accepted"
        ));
    }
    Ok(())
}

/// A count above zero.
pub(crate) fn nonzero(n: u32) -> Verdict {
    if n == 0 {
        return Err("must be greater than zero".into());
    }
    Ok(())
}

/// A share in (0, 1].
pub(crate) fn share(r: f64) -> Verdict {
    if !(r > 0.0 && r <= 1.0) {
        return Err(format!("must lie in (0, 1] (got {r})"));
    }
    Ok(())
}

/// A factor in [0, 1].
pub(crate) fn factor(r: f64) -> Verdict {
    if !(0.0..=1.0).contains(&r) {
        return Err(format!("must lie in [0, 1] (got {r})"));
    }
    Ok(())
}

/// `n` at least `floor`, named `what` in the message.
pub(crate) fn at_least(n: u32, floor: u32, what: &str) -> Verdict {
    if n < floor {
        return Err(format!("must be at least {what} ({n} < {floor})"));
    }
    Ok(())
}

/// A name for labels and reports: 1 to 64 printable ASCII characters.
pub(crate) fn label(name: &str) -> Verdict {
    if name.is_empty() || name.len() > 64 {
        return Err(format!(
            "must be 1 to 64 characters long (got {})",
            name.len()
        ));
    }
    if !name.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err("must be printable ASCII".into());
    }
    Ok(())
}

/// A request header name that is none of `reserved`.
pub(crate) fn header_name(
    name: &Result<http::HeaderName, String>,
    reserved: &[http::HeaderName],
) -> Verdict {
    match name {
        Err(reason) => Err(format!("must be a valid header name ({reason})")),
        Ok(name) if reserved.contains(name) => Err(format!(
            "must not be `{name}`: a connection, credential or idempotency header"
        )),
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_wording_for_each_rule() {
        assert_eq!(
            positive(Duration::ZERO).unwrap_err(),
            "must be greater than zero"
        );
        assert!(positive(MAX_SETTING).is_ok());
        assert!(
            positive(MAX_SETTING + Duration::from_nanos(1))
                .unwrap_err()
                .starts_with("must be at most 365 days")
        );
        assert!(at_most_max(Duration::ZERO).is_ok());
        assert_eq!(nonzero(0).unwrap_err(), "must be greater than zero");
        assert_eq!(share(0.0).unwrap_err(), "must lie in (0, 1] (got 0)");
        assert!(share(f64::NAN).is_err());
        assert!(share(1.0).is_ok());
        assert_eq!(factor(1.5).unwrap_err(), "must lie in [0, 1] (got 1.5)");
        assert_eq!(
            at_least(3, 5, "retry_cost").unwrap_err(),
            "must be at least retry_cost (3 < 5)"
        );
        assert!(label("github").is_ok());
        assert_eq!(
            label("").unwrap_err(),
            "must be 1 to 64 characters long (got 0)"
        );
        assert_eq!(label("a\nb").unwrap_err(), "must be printable ASCII");
        let reserved = [http::header::AUTHORIZATION];
        assert!(header_name(&Ok(http::HeaderName::from_static("x-attempt")), &reserved).is_ok());
        assert_eq!(
            header_name(&Ok(http::header::AUTHORIZATION), &reserved).unwrap_err(),
            "must not be `authorization`: a connection, credential or idempotency header"
        );
        assert!(
            header_name(&Err("invalid HTTP header name".into()), &reserved)
                .unwrap_err()
                .starts_with("must be a valid header name")
        );
        let e = ConfigError::new("break_duration", "x".into()).within("circuit_breaker");
        assert_eq!(e.field(), "circuit_breaker.break_duration");
    }
}
