//! Header handling across a proxy hop: hop-by-hop removal, `Via`, `Cache-Status` (RFC 9211).

use std::fmt::Write as _;

use http::header::{HeaderName, HeaderValue, CONNECTION};
use http::HeaderMap;

pub static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// Hop-by-hop fields (RFC 9110 §7.6.1), plus the non-standard ones proxies also drop.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes hop-by-hop fields, including every field named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Fields meant for this cache (RFC 9213 `CDN-Cache-Control`, `Surrogate-Control`) or for its
/// purges (`Surrogate-Key`, `Cache-Tag`): acted on here and not sent to clients.
const CDN_ONLY: [&str; 4] = [
    "cdn-cache-control",
    "surrogate-control",
    "surrogate-key",
    "cache-tag",
];

/// Removes the fields of [`CDN_ONLY`].
pub fn strip_cdn_only(headers: &mut HeaderMap) {
    for name in CDN_ONLY {
        headers.remove(name);
    }
}

/// How a response came to be, in RFC 9211 terms; rendered after the cache's name.
#[derive(Debug, Clone, Default)]
pub struct CacheStatus {
    pub hit: bool,
    /// `fwd` parameter: why the request went upstream.
    pub fwd: Option<&'static str>,
    pub fwd_status: Option<u16>,
    pub ttl: Option<i64>,
    pub stored: bool,
    pub collapsed: bool,
    pub detail: Option<&'static str>,
}

impl CacheStatus {
    pub fn hit() -> CacheStatus {
        CacheStatus {
            hit: true,
            ..CacheStatus::default()
        }
    }

    /// A stale object served without going upstream first, and why that was allowed.
    pub fn stale_hit(detail: &'static str) -> CacheStatus {
        CacheStatus {
            hit: true,
            detail: Some(detail),
            ..CacheStatus::default()
        }
    }

    pub fn forwarded(fwd: &'static str) -> CacheStatus {
        CacheStatus {
            fwd: Some(fwd),
            ..CacheStatus::default()
        }
    }

    /// This cache's entry appended to the entries of the caches before it (closer to the
    /// origin), as RFC 9211 lists them; `prior` empty or absent means this is the first.
    pub fn render_after(&self, cache_name: &str, prior: Option<&HeaderValue>) -> HeaderValue {
        match prior.filter(|p| !p.is_empty()) {
            None => self.render(cache_name),
            Some(prior) => {
                let mut bytes = prior.as_bytes().to_vec();
                bytes.extend_from_slice(b", ");
                bytes.extend_from_slice(self.render(cache_name).as_bytes());
                HeaderValue::from_bytes(&bytes).unwrap_or_else(|_| self.render(cache_name))
            }
        }
    }

    pub fn render(&self, cache_name: &str) -> HeaderValue {
        let mut s = String::with_capacity(64);
        s.push_str(cache_name);
        if self.hit {
            s.push_str("; hit");
        }
        if let Some(fwd) = self.fwd {
            let _ = write!(s, "; fwd={fwd}");
        }
        if let Some(code) = self.fwd_status {
            let _ = write!(s, "; fwd-status={code}");
        }
        if let Some(ttl) = self.ttl {
            let _ = write!(s, "; ttl={ttl}");
        }
        if self.stored {
            s.push_str("; stored");
        }
        if self.collapsed {
            s.push_str("; collapsed");
        }
        if let Some(detail) = self.detail {
            let _ = write!(s, "; detail={detail}");
        }
        HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static("verge"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_named_fields_and_fixed_hop_by_hop_are_removed() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn cache_status_entries_chain_after_upstream_caches() {
        let shield = HeaderValue::from_static("verge-shield; hit; ttl=30");
        let ours = CacheStatus::forwarded("uri-miss");
        assert_eq!(
            ours.render_after("verge-edge", Some(&shield)),
            "verge-shield; hit; ttl=30, verge-edge; fwd=uri-miss"
        );
        let empty = HeaderValue::from_static("");
        assert_eq!(
            ours.render_after("verge-edge", Some(&empty)),
            "verge-edge; fwd=uri-miss"
        );
        assert_eq!(
            ours.render_after("verge-edge", None),
            "verge-edge; fwd=uri-miss"
        );
    }

    #[test]
    fn cache_status_renders_rfc_9211_parameters() {
        let hit = CacheStatus {
            ttl: Some(42),
            ..CacheStatus::hit()
        };
        assert_eq!(hit.render("verge-edge"), "verge-edge; hit; ttl=42");
        let miss = CacheStatus {
            fwd_status: Some(200),
            stored: true,
            ttl: Some(60),
            ..CacheStatus::forwarded("miss")
        };
        assert_eq!(
            miss.render("verge-edge"),
            "verge-edge; fwd=miss; fwd-status=200; ttl=60; stored"
        );
        let err = CacheStatus {
            detail: Some("upstream-timeout"),
            ..CacheStatus::forwarded("miss")
        };
        assert_eq!(
            err.render("verge-edge"),
            "verge-edge; fwd=miss; detail=upstream-timeout"
        );
    }
}
