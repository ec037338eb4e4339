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

/// Fields meant for this cache (`Surrogate-Control`) or for its purges (`Surrogate-Key`,
/// `Cache-Tag`): acted on here and not sent to clients. `CDN-Cache-Control` is meant for every
/// CDN on the way (RFC 9213), another of which may sit in front of this one: it is passed on.
const CDN_ONLY: [&str; 3] = ["surrogate-control", "surrogate-key", "cache-tag"];

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

/// The entry an upstream Verge tier (an edge or shield) added to `Cache-Status`: always the last
/// one, as each cache appends its own after what it received. This is how one Verge tier reads
/// what the tier above it did, whatever the origin put in the field:
///
/// - an error the tier generated itself, having had no answer from its own upstream, carries
///   `detail=<reason>` and neither `hit` nor `fwd-status`;
/// - a stale object it served in place of an upstream failure carries `hit` and
///   `detail=stale-if-error`;
/// - anything it relays from its upstream carries `fwd-status`, and a stored object `hit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierEntry {
    hit: bool,
    fwd_status: bool,
    detail: Option<String>,
}

impl TierEntry {
    /// The last `Cache-Status` entry when a Verge cache (`verge-…`) wrote it; `None` otherwise.
    pub fn of(headers: &HeaderMap) -> Option<TierEntry> {
        let last = headers.get_all(&CACHE_STATUS).iter().next_back()?;
        let entry = last.to_str().ok()?.rsplit(',').next()?;
        let mut parts = entry.split(';').map(str::trim);
        if !parts.next()?.starts_with("verge-") {
            return None;
        }
        let mut tier = TierEntry {
            hit: false,
            fwd_status: false,
            detail: None,
        };
        for param in parts {
            let (name, value) = param.split_once('=').unwrap_or((param, ""));
            match name.trim() {
                "hit" => tier.hit = true,
                "fwd-status" => tier.fwd_status = true,
                "detail" => tier.detail = Some(value.trim().to_string()),
                _ => {}
            }
        }
        Some(tier)
    }

    /// The tier answered with an error of its own: its upstream gave no answer.
    pub fn generated_error(&self) -> bool {
        self.detail.is_some() && !self.hit && !self.fwd_status
    }

    /// The tier answered from its cache with no upstream involved: its time to answer is the
    /// way there and back, not its own fetch.
    pub fn answered_from_cache(&self) -> bool {
        self.hit && self.detail.is_none()
    }

    /// The tier answered with a stale object because its upstream failed.
    pub fn served_stale_on_error(&self) -> bool {
        self.hit && self.detail.as_deref() == Some("stale-if-error")
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

    fn entry(values: &[&str]) -> Option<TierEntry> {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(&CACHE_STATUS, HeaderValue::from_str(value).unwrap());
        }
        TierEntry::of(&headers)
    }

    #[test]
    fn a_tier_entry_is_the_last_one_and_only_a_verge_cache_s() {
        assert_eq!(entry(&[]), None);
        assert_eq!(entry(&["OriginCache; detail=upstream-timeout"]), None);
        let generated = entry(&["verge-shield; fwd=miss; detail=upstream-timeout"]).unwrap();
        assert!(generated.generated_error());
        assert!(!generated.served_stale_on_error());
        // The origin's own entries, however they look, come before the tier's.
        let relayed = entry(&[
            "verge-shield; fwd=miss; detail=upstream-timeout",
            "verge-shield; fwd=miss; fwd-status=503",
        ])
        .unwrap();
        assert!(!relayed.generated_error());
        let relayed = entry(&["x; detail=\"a, b\", verge-shield; fwd=uri-miss; fwd-status=503"]);
        assert!(!relayed.unwrap().generated_error());
        let stale = entry(&["verge-shield; hit; fwd=stale; ttl=-20; detail=stale-if-error"]);
        let stale = stale.unwrap();
        assert!(stale.served_stale_on_error());
        assert!(!stale.generated_error());
        assert!(!entry(&["verge-shield; hit; ttl=5"])
            .unwrap()
            .generated_error());
    }

    #[test]
    fn the_entries_this_node_writes_read_back_as_what_they_mean() {
        let generated = CacheStatus {
            detail: Some("upstream-connect-error"),
            ..CacheStatus::forwarded("miss")
        };
        let relayed = CacheStatus {
            fwd_status: Some(503),
            ..CacheStatus::forwarded("miss")
        };
        let stale = CacheStatus {
            fwd: Some("stale"),
            ..CacheStatus::stale_hit("stale-if-error")
        };
        let read = |status: &CacheStatus| {
            let mut headers = HeaderMap::new();
            headers.insert(&CACHE_STATUS, status.render("verge-shield"));
            TierEntry::of(&headers).unwrap()
        };
        assert!(read(&generated).generated_error());
        assert!(!read(&relayed).generated_error());
        assert!(read(&stale).served_stale_on_error());
    }
}
