//! A stored response and the questions the request path asks of it.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use crate::policy::{self, vary_names, CacheControl, RequestDirectives, Reuse};

/// Fixed per-entry cost added to the weigher, for the bookkeeping around headers and body.
const ENTRY_OVERHEAD_BYTES: usize = 256;

/// The request header values a stored response was selected by (`Vary`), normalised: names
/// lower-cased, several lines joined with `", "`, surrounding whitespace trimmed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VaryKey(Vec<(String, Option<String>)>);

impl VaryKey {
    /// The values of `request` for the header names the response varies on.
    pub fn new(response_headers: &HeaderMap, request: &HeaderMap) -> VaryKey {
        VaryKey(
            vary_names(response_headers)
                .map(|name| {
                    let value = normalised_value(request, &name);
                    (name, value)
                })
                .collect(),
        )
    }

    /// True when `request` would select the same response.
    pub fn matches(&self, request: &HeaderMap) -> bool {
        self.0
            .iter()
            .all(|(name, value)| normalised_value(request, name).as_deref() == value.as_deref())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn normalised_value(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut out: Option<String> = None;
    for v in headers.get_all(name) {
        let v = String::from_utf8_lossy(v.as_bytes());
        let v = v.trim();
        match &mut out {
            None => out = Some(v.to_string()),
            Some(acc) => {
                acc.push_str(", ");
                acc.push_str(v);
            }
        }
    }
    out
}

/// A complete response held in the cache.
#[derive(Debug, Clone)]
pub struct CachedObject {
    pub status: StatusCode,
    /// End-to-end headers as they will be sent (hop-by-hop and `Age` removed).
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When the response head arrived (RFC 9111 `response_time`).
    pub response_time: SystemTime,
    /// Age the response already had when it arrived (RFC 9111 §4.2.3).
    pub corrected_initial_age: Duration,
    pub freshness_lifetime: Duration,
    pub vary: VaryKey,
    /// The directives Verge obeys for this response (CDN-Cache-Control, Surrogate-Control or
    /// Cache-Control), kept for reuse decisions.
    pub cc: CacheControl,
    /// Surrogate keys (`Surrogate-Key`, `Cache-Tag`) for purging by tag.
    pub surrogate_keys: Vec<std::sync::Arc<str>>,
}

impl CachedObject {
    /// `current_age` of RFC 9111 §4.2.3 at `now`.
    pub fn current_age(&self, now: SystemTime) -> Duration {
        let resident = now
            .duration_since(self.response_time)
            .unwrap_or(Duration::ZERO);
        self.corrected_initial_age + resident
    }

    pub fn is_fresh(&self, now: SystemTime) -> bool {
        self.freshness_lifetime > self.current_age(now)
    }

    /// How this object may answer a request at `now`.
    pub fn reuse(&self, request: &RequestDirectives, now: SystemTime) -> Reuse {
        policy::reuse(
            &self.cc,
            self.freshness_lifetime,
            self.current_age(now),
            request,
        )
    }

    /// Whether this object may stand in for a failed upstream at `now`.
    pub fn may_serve_on_error(&self, request: &RequestDirectives, now: SystemTime) -> bool {
        policy::may_serve_stale_on_error(
            &self.cc,
            self.freshness_lifetime,
            self.current_age(now),
            request,
        )
    }

    /// A copy that is stale from `now` on (a soft purge): it must be revalidated before use,
    /// but stale-if-error and stale-while-revalidate windows still apply.
    pub fn expired_at(&self, now: SystemTime) -> CachedObject {
        CachedObject {
            freshness_lifetime: self.freshness_lifetime.min(self.current_age(now)),
            ..self.clone()
        }
    }

    /// Seconds of freshness left at `now`; negative once stale (the `ttl` of `Cache-Status`).
    pub fn ttl_seconds(&self, now: SystemTime) -> i64 {
        let life = i64::try_from(self.freshness_lifetime.as_secs()).unwrap_or(i64::MAX);
        let age = i64::try_from(self.current_age(now).as_secs()).unwrap_or(i64::MAX);
        life.saturating_sub(age)
    }

    /// Bytes this entry costs the cache: body, headers and a fixed overhead.
    pub fn weight_bytes(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 32)
            .sum();
        self.body.len() + headers + ENTRY_OVERHEAD_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn object(lifetime: u64, initial_age: u64, at: SystemTime) -> CachedObject {
        CachedObject {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from_static(b"hello"),
            response_time: at,
            corrected_initial_age: Duration::from_secs(initial_age),
            freshness_lifetime: Duration::from_secs(lifetime),
            vary: VaryKey::default(),
            cc: CacheControl::default(),
            surrogate_keys: Vec::new(),
        }
    }

    #[test]
    fn freshness_runs_out_with_resident_time_plus_initial_age() {
        let t0 = SystemTime::now();
        let o = object(60, 10, t0);
        assert!(o.is_fresh(t0 + Duration::from_secs(49)));
        assert_eq!(o.ttl_seconds(t0 + Duration::from_secs(49)), 1);
        assert!(!o.is_fresh(t0 + Duration::from_secs(50)));
        assert_eq!(o.ttl_seconds(t0 + Duration::from_secs(55)), -5);
        assert_eq!(
            o.current_age(t0 + Duration::from_secs(5)),
            Duration::from_secs(15)
        );
    }

    #[test]
    fn a_soft_purged_copy_is_stale_from_then_on() {
        let t0 = SystemTime::now();
        let o = object(60, 0, t0);
        let later = t0 + Duration::from_secs(10);
        let purged = o.expired_at(later);
        assert!(o.is_fresh(later));
        assert!(!purged.is_fresh(later));
        assert_eq!(purged.ttl_seconds(later), 0);
        assert_eq!(purged.body, o.body);
    }

    #[test]
    fn vary_key_matches_normalised_values_only() {
        let mut resp = HeaderMap::new();
        resp.insert("vary", HeaderValue::from_static("Accept-Encoding, X-Lang"));
        let mut req = HeaderMap::new();
        req.insert("accept-encoding", HeaderValue::from_static("gzip"));
        let key = VaryKey::new(&resp, &req);
        let mut same = HeaderMap::new();
        same.insert("accept-encoding", HeaderValue::from_static("  gzip "));
        assert!(key.matches(&same));
        let mut other = HeaderMap::new();
        other.insert("accept-encoding", HeaderValue::from_static("br"));
        assert!(!key.matches(&other));
        let mut extra = same.clone();
        extra.insert("x-lang", HeaderValue::from_static("fr"));
        assert!(
            !key.matches(&extra),
            "a header absent when stored must be absent when reused"
        );
    }

    #[test]
    fn weight_counts_body_and_headers() {
        let mut o = object(1, 0, SystemTime::now());
        let base = o.weight_bytes();
        o.headers.insert("x-a", HeaderValue::from_static("12345"));
        assert_eq!(o.weight_bytes(), base + 3 + 5 + 32);
        assert!(base >= 5);
    }
}
