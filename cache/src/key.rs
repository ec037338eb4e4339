//! The cache key: scheme, normalised host, path and query.
//!
//! Two requests share a key exactly when they name the same resource: the host is compared
//! case-insensitively and without its scheme's default port; path and query are kept byte for
//! byte (their meaning is the origin's to decide).

use std::fmt;
use std::sync::Arc;

use http::header::HOST;
use http::{HeaderMap, Uri};

/// A primary cache key, cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(Arc<str>);

/// Why a request has no cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    MissingHost,
    InvalidHost,
    ConflictingHost,
}

impl KeyError {
    pub fn message(&self) -> &'static str {
        match self {
            KeyError::MissingHost => "request has no Host header",
            KeyError::InvalidHost => "request's Host header is not a valid host[:port]",
            KeyError::ConflictingHost => "request has several Host headers",
        }
    }
}

impl CacheKey {
    /// Builds a key from its parts; `host` may carry a port.
    pub fn from_parts(scheme: &str, host: &str, path_and_query: &str) -> CacheKey {
        let default_port = match scheme {
            "https" => ":443",
            _ => ":80",
        };
        let host = host.strip_suffix(default_port).unwrap_or(host);
        let host = host.strip_suffix('.').unwrap_or(host);
        let path = if path_and_query.is_empty() {
            "/"
        } else {
            path_and_query
        };
        let mut key = String::with_capacity(scheme.len() + 3 + host.len() + path.len());
        key.push_str(scheme);
        key.push_str("://");
        key.extend(host.chars().map(|c| c.to_ascii_lowercase()));
        key.push_str(path);
        CacheKey(key.into())
    }

    /// The key of a request: the host from an absolute-form target, else from the one `Host` header.
    pub fn for_request(scheme: &str, uri: &Uri, headers: &HeaderMap) -> Result<CacheKey, KeyError> {
        let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
        if let Some(authority) = uri.authority() {
            return Ok(CacheKey::from_parts(scheme, authority.as_str(), path));
        }
        let mut hosts = headers.get_all(HOST).iter();
        let host = hosts.next().ok_or(KeyError::MissingHost)?;
        if hosts.next().is_some() {
            return Err(KeyError::ConflictingHost);
        }
        let host = host.to_str().map_err(|_| KeyError::InvalidHost)?;
        if host.is_empty() || host.parse::<http::uri::Authority>().is_err() || host.contains('@') {
            return Err(KeyError::InvalidHost);
        }
        Ok(CacheKey::from_parts(scheme, host, path))
    }

    /// This key with what a cache rule adds to it (request fields, cookies, device class),
    /// after a space: no URL has one, so `url + " "` begins exactly the keys a rule made of
    /// this URL, and purging the URL purges them too ([`CacheKey::variants_prefix`]).
    pub fn with_extras(&self, extras: &str) -> CacheKey {
        CacheKey(format!("{} {extras}", self.0).into())
    }

    /// What every key a rule made of this URL begins with.
    pub fn variants_prefix(&self) -> String {
        format!("{} ", self.0)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Bytes this key occupies, for the cache's weigher.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn key(uri: &str, host: Option<&str>) -> Result<CacheKey, KeyError> {
        let mut headers = HeaderMap::new();
        if let Some(h) = host {
            headers.insert(HOST, HeaderValue::from_str(h).unwrap());
        }
        CacheKey::for_request("http", &uri.parse().unwrap(), &headers)
    }

    #[test]
    fn host_is_lower_cased_and_default_port_dropped() {
        let cases = [
            (("/a?b=1", Some("Example.COM")), "http://example.com/a?b=1"),
            (("/a", Some("example.com:80")), "http://example.com/a"),
            (
                ("/a", Some("example.com:8080")),
                "http://example.com:8080/a",
            ),
            (("/a", Some("example.com.")), "http://example.com/a"),
            (
                ("http://Other.Example:80/x", Some("ignored")),
                "http://other.example/x",
            ),
        ];
        for ((uri, host), want) in cases {
            assert_eq!(key(uri, host).unwrap().as_str(), want, "{uri} {host:?}");
        }
    }

    #[test]
    fn https_drops_443_not_80() {
        assert_eq!(
            CacheKey::from_parts("https", "a.test:443", "/").as_str(),
            "https://a.test/"
        );
        assert_eq!(
            CacheKey::from_parts("https", "a.test:80", "/").as_str(),
            "https://a.test:80/"
        );
    }

    #[test]
    fn path_and_query_are_kept_exactly() {
        assert_ne!(key("/A", Some("h")).unwrap(), key("/a", Some("h")).unwrap());
        assert_ne!(
            key("/a?x=1&y=2", Some("h")).unwrap(),
            key("/a?y=2&x=1", Some("h")).unwrap()
        );
    }

    #[test]
    fn bad_hosts_have_no_key() {
        assert_eq!(key("/", None), Err(KeyError::MissingHost));
        assert_eq!(key("/", Some("")), Err(KeyError::InvalidHost));
        assert_eq!(key("/", Some("a b")), Err(KeyError::InvalidHost));
        assert_eq!(key("/", Some("user@host")), Err(KeyError::InvalidHost));
        let mut headers = HeaderMap::new();
        headers.append(HOST, HeaderValue::from_static("a"));
        headers.append(HOST, HeaderValue::from_static("b"));
        assert_eq!(
            CacheKey::for_request("http", &"/".parse().unwrap(), &headers),
            Err(KeyError::ConflictingHost)
        );
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// Request targets and hosts made of the pieces URI parsing cares about.
        fn uri_soup() -> impl Strategy<Value = String> {
            let piece = prop_oneof![
                Just("http://"),
                Just("https://"),
                Just("/"),
                Just("?"),
                Just("#"),
                Just("@"),
                Just(":"),
                Just("%"),
                Just("%2F"),
                Just("a"),
                Just("B"),
                Just("."),
                Just("["),
                Just("]"),
                Just("::1"),
                Just("*"),
                Just(" "),
                Just("é"),
                Just("80"),
                Just("443"),
                Just("99999"),
            ];
            prop::collection::vec(piece, 0..12).prop_map(|pieces| pieces.concat())
        }

        proptest! {
            #[test]
            fn no_target_or_host_makes_keying_panic(
                scheme in prop::sample::select(vec!["http", "https"]),
                target in prop_oneof![uri_soup(), "\\PC{0,30}"],
                hosts in prop::collection::vec(
                    prop_oneof![
                        uri_soup().prop_map(String::into_bytes),
                        prop::collection::vec(any::<u8>(), 0..30),
                    ],
                    0..3,
                ),
            ) {
                let Ok(uri) = target.parse::<Uri>() else { return Ok(()) };
                let mut headers = HeaderMap::new();
                for host in &hosts {
                    if let Ok(value) = HeaderValue::from_bytes(host) {
                        headers.append(HOST, value);
                    }
                }
                if let Ok(key) = CacheKey::for_request(scheme, &uri, &headers) {
                    let prefix = format!("{scheme}://");
                    prop_assert!(key.as_str().starts_with(&prefix), "{:?}", key);
                    prop_assert!(!key.is_empty());
                }
            }

            #[test]
            fn from_parts_never_panics(
                scheme in "\\PC{0,8}",
                host in prop_oneof![uri_soup(), "\\PC{0,30}"],
                path in prop_oneof![uri_soup(), "\\PC{0,30}"],
            ) {
                let key = CacheKey::from_parts(&scheme, &host, &path);
                prop_assert!(key.as_str().starts_with(&scheme));
            }

            #[test]
            fn the_host_is_keyed_whatever_its_case(
                host in "[a-zA-Z0-9-]{1,12}(\\.[a-zA-Z0-9-]{1,12}){0,2}\\.?(:[0-9]{1,5})?",
                path in "/[a-zA-Z0-9/_.~-]{0,20}(\\?[a-zA-Z0-9=&]{0,12})?",
            ) {
                let lower = key(&path, Some(&host.to_ascii_lowercase()));
                let upper = key(&path, Some(&host.to_ascii_uppercase()));
                prop_assert_eq!(&lower, &upper);
                if let Ok(key) = lower {
                    prop_assert!(key.as_str().ends_with(&path), "{:?}", key);
                }
            }
        }
    }
}
