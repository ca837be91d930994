//! A hook called before each resend ([`BeforeRetry`]), and the request it
//! is given ([`ResendRequest`]), whichever the client: the tower layer and
//! the reqwest middleware make one from their own request, so a hook works
//! the same under both. A leaf: it names only `http` types.
//!
//! Set it with [`before_retry`](crate::policy::RetryPolicyBuilder::before_retry):
//! it runs before every attempt but the first, on the copy about to be
//! sent (its changes apply to that attempt only: the next resend starts
//! again from the caller's request), after the
//! [`attempt_header`](crate::policy::RetryPolicyBuilder::attempt_header), if
//! one is set, was added. It can re-sign the request, put a fresh token in
//! it, or add a header of its own.
//!
//! ```
//! use http::HeaderValue;
//! use http_resilience::RetryPolicy;
//!
//! let policy = RetryPolicy::builder()
//!     .before_retry(|request: &mut http_resilience::ResendRequest<'_>, attempt: u32| {
//!         // A signature over the method, the URL and the attempt.
//!         let signature = format!("{}-{}-{attempt}", request.method(), request.url().len());
//!         if let Ok(value) = HeaderValue::from_str(&signature) {
//!             request.headers_mut().insert("x-signature", value);
//!         }
//!     })
//!     .build()?;
//! # let _ = policy;
//! # Ok::<(), http_resilience::ConfigError>(())
//! ```
//!
//! The hook is synchronous: a token refresh should read a cache that
//! something else keeps fresh. It is never called for the first attempt,
//! nor for a request that is not resent (a streaming body is sent once).
//! The engine keeps deciding on the caller's request: what a hook changes
//! is not seen by the classifier, the policy's routes or load protection.

use std::borrow::Cow;
use std::fmt;

use http::{HeaderMap, Method, Uri};

/// Called before each resend with the request about to go and its attempt
/// number (2 for the first resend). See the [module docs](self).
///
/// Any `Fn(&mut ResendRequest<'_>, u32) + Send + Sync + 'static` is one.
pub trait BeforeRetry: Send + Sync + 'static {
    /// Changes `request`, the copy about to be sent as attempt `attempt`.
    fn before_retry(&self, request: &mut ResendRequest<'_>, attempt: u32);
}

impl<F> BeforeRetry for F
where
    F: Fn(&mut ResendRequest<'_>, u32) + Send + Sync + 'static,
{
    fn before_retry(&self, request: &mut ResendRequest<'_>, attempt: u32) {
        self(request, attempt)
    }
}

/// Where the request goes, as its client keeps it.
#[derive(Clone, Copy)]
enum Target<'a> {
    #[cfg_attr(not(feature = "reqwest"), allow(dead_code))]
    Url(&'a str),
    Uri(&'a Uri),
}

/// The request about to be resent, whichever the client: its method and
/// URL to read, its headers to change. Made by the adapters.
pub struct ResendRequest<'a> {
    method: &'a Method,
    target: Target<'a>,
    headers: &'a mut HeaderMap,
}

impl<'a> ResendRequest<'a> {
    /// A request with this method, absolute URL and headers (the reqwest
    /// middleware's form).
    #[cfg_attr(not(feature = "reqwest"), allow(dead_code))]
    pub(crate) fn with_url(
        method: &'a Method,
        url: &'a str,
        headers: &'a mut HeaderMap,
    ) -> ResendRequest<'a> {
        ResendRequest {
            method,
            target: Target::Url(url),
            headers,
        }
    }

    /// A request with this method, URI and headers (the tower layer's form).
    pub(crate) fn with_uri(
        method: &'a Method,
        uri: &'a Uri,
        headers: &'a mut HeaderMap,
    ) -> ResendRequest<'a> {
        ResendRequest {
            method,
            target: Target::Uri(uri),
            headers,
        }
    }

    /// The method.
    pub fn method(&self) -> &Method {
        self.method
    }

    /// The URL as it is sent, query string included (a signature may cover
    /// it). Borrowed through the reqwest middleware, written out from the
    /// URI through the tower layer.
    pub fn url(&self) -> Cow<'_, str> {
        match self.target {
            Target::Url(url) => Cow::Borrowed(url),
            Target::Uri(uri) => Cow::Owned(uri.to_string()),
        }
    }

    /// The headers as they will be sent (the attempt header included, if
    /// the policy sets one).
    pub fn headers(&self) -> &HeaderMap {
        self.headers
    }

    /// The headers, to change: the changes go out with this attempt only.
    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        self.headers
    }
}

/// Method and URL's scheme and host only: a hook's request can carry
/// credentials in its headers and query.
impl fmt::Debug for ResendRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (scheme, host) = match self.target {
            Target::Url(url) => match url.split_once("://") {
                Some((scheme, rest)) => {
                    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
                    let host = authority.rsplit('@').next().unwrap_or("");
                    (scheme, host)
                }
                None => ("", ""),
            },
            Target::Uri(uri) => (
                uri.scheme_str().unwrap_or(""),
                uri.authority()
                    .map_or("", |a| a.as_str().rsplit('@').next().unwrap_or("")),
            ),
        };
        f.debug_struct("ResendRequest")
            .field("method", self.method)
            .field("scheme", &scheme)
            .field("host", &host)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_read_the_same() {
        let mut a = HeaderMap::new();
        let mut b = HeaderMap::new();
        let uri: Uri = "https://user:pw@h.example:8443/p?sig=secret"
            .parse()
            .unwrap();
        let url = "https://user:pw@h.example:8443/p?sig=secret";
        let hook = |r: &mut ResendRequest<'_>, n: u32| {
            r.headers_mut().insert("x-n", http::HeaderValue::from(n));
        };
        let mut from_url = ResendRequest::with_url(&Method::PUT, url, &mut a);
        let mut from_uri = ResendRequest::with_uri(&Method::PUT, &uri, &mut b);
        hook.before_retry(&mut from_url, 2);
        hook.before_retry(&mut from_uri, 2);
        assert_eq!(from_url.url(), from_uri.url());
        assert_eq!(from_url.method(), Method::PUT);
        assert_eq!(from_url.headers(), from_uri.headers());
        for r in [&from_url, &from_uri] {
            let shown = format!("{r:?}");
            assert!(shown.contains("h.example:8443"), "{shown}");
            assert!(
                !shown.contains("pw") && !shown.contains("secret"),
                "{shown}"
            );
        }
        assert_eq!(a.get("x-n").unwrap(), "2");
    }
}
