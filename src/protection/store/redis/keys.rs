//! Key names. Every key starts with the store's prefix; an endpoint's keys
//! share the hash tag `{host:port}` (one cluster slot), the fleet's own
//! keys the tag `{prefix}`. Hosts are lower-cased, and any byte outside
//! `[a-z0-9.-_]` (a brace above all, which would move the hash tag) is
//! written `%XX`.

use std::fmt::Write;

use crate::protection::store::EndpointKey;

/// The longest prefix accepted.
pub(crate) const MAX_PREFIX: usize = 64;

/// Whether `prefix` is a usable prefix: 1 to 64 bytes of
/// `[A-Za-z0-9_.:/-]` (no braces, no spaces).
pub(crate) fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.len() <= MAX_PREFIX
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:/-".contains(&b))
}

/// The endpoint's tag: `host:port`, the host lower-cased and escaped.
pub(crate) fn endpoint_tag(key: &EndpointKey<'_>) -> String {
    let mut tag = String::with_capacity(key.host().len() + 6);
    for b in key.host().bytes() {
        let b = b.to_ascii_lowercase();
        if b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b) {
            tag.push(char::from(b));
        } else {
            let _ = write!(tag, "%{b:02X}");
        }
    }
    let _ = write!(tag, ":{}", key.port());
    tag
}

/// One endpoint's keys.
#[derive(Debug, Clone)]
pub(crate) struct EndpointKeys {
    /// `host:port`, as published on the channel.
    pub(crate) tag: String,
    /// The rate limit's theoretical arrival time.
    pub(crate) limit: String,
    /// The server quota holds (a sorted set).
    pub(crate) holds: String,
    /// The shared retry budget.
    pub(crate) budget: String,
    /// The breaker's "open until" hint.
    pub(crate) open: String,
}

impl EndpointKeys {
    pub(crate) fn new(prefix: &str, tag: String) -> EndpointKeys {
        let key = |what: &str| format!("{prefix}:{{{tag}}}:{what}");
        EndpointKeys {
            limit: key("limit"),
            holds: key("holds"),
            budget: key("budget"),
            open: key("open"),
            tag,
        }
    }
}

/// The fleet's own keys and channel.
#[derive(Debug, Clone)]
pub(crate) struct FleetKeys {
    /// The live processes (a sorted set: id → last heartbeat).
    pub(crate) members: String,
    /// The key of the credential partitions.
    pub(crate) partition_key: String,
    /// The endpoints with a hold or an open hint (a sorted set).
    pub(crate) index: String,
    /// Where holds and hints are published.
    pub(crate) channel: String,
}

impl FleetKeys {
    pub(crate) fn new(prefix: &str) -> FleetKeys {
        let key = |what: &str| format!("{prefix}:{{{prefix}}}:{what}");
        FleetKeys {
            members: key("members"),
            partition_key: key("partition-key"),
            index: key("index"),
            channel: format!("{prefix}:events"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoints_keys_share_one_hash_tag() {
        let keys = EndpointKeys::new(
            "app",
            endpoint_tag(&EndpointKey::new("API.GitHub.com", 443)),
        );
        assert_eq!(keys.tag, "api.github.com:443");
        assert_eq!(keys.limit, "app:{api.github.com:443}:limit");
        assert_eq!(keys.holds, "app:{api.github.com:443}:holds");
        assert_eq!(keys.budget, "app:{api.github.com:443}:budget");
        assert_eq!(keys.open, "app:{api.github.com:443}:open");
        let fleet = FleetKeys::new("app");
        assert_eq!(fleet.members, "app:{app}:members");
        assert_eq!(fleet.partition_key, "app:{app}:partition-key");
    }

    #[test]
    fn hosts_cannot_move_the_tag() {
        let tag = endpoint_tag(&EndpointKey::new("a}b{c d%", 1));
        assert_eq!(tag, "a%7Db%7Bc%20d%25:1");
        assert_eq!(endpoint_tag(&EndpointKey::whole_policy()), ":0");
        assert_eq!(
            endpoint_tag(&EndpointKey::new("[::1]", 8080)),
            "%5B%3A%3A1%5D:8080"
        );
    }

    #[test]
    fn prefixes() {
        assert!(valid_prefix("http-resilience"));
        assert!(valid_prefix("team/app:v2"));
        for bad in ["", "a{b", "a b", "é", &"x".repeat(65)] {
            assert!(!valid_prefix(bad), "{bad:?}");
        }
    }
}
