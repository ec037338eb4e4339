//! RFC 9111 decisions for a shared cache, as pure functions over headers and times.

use std::time::{Duration, SystemTime};

use http::header::{AUTHORIZATION, CACHE_CONTROL, DATE, EXPIRES, VARY};
use http::{HeaderMap, Method, StatusCode};

/// Delta-seconds above this are taken as this (RFC 9111 §1.2.2).
const MAX_DELTA_SECONDS: u64 = 2_147_483_648;

/// The `Cache-Control` directives Verge acts on, from every `Cache-Control` line of a message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheControl {
    pub no_store: bool,
    /// `no-cache`, with or without a field-name list (both forbid reuse without revalidation).
    pub no_cache: bool,
    /// `private`, with or without a field-name list (a shared cache stores neither form).
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub max_age: Option<Duration>,
    pub s_maxage: Option<Duration>,
}

impl CacheControl {
    /// Parses all `Cache-Control` lines. Unknown directives are ignored; a `max-age` or
    /// `s-maxage` whose value is invalid, or that appears twice with different values, makes the
    /// response stale (lifetime 0), as RFC 9111 §4.2.1 allows.
    pub fn from_headers(headers: &HeaderMap) -> CacheControl {
        let mut cc = CacheControl::default();
        for line in headers.get_all(CACHE_CONTROL) {
            let Ok(line) = line.to_str() else { continue };
            for (name, value) in directives(line) {
                cc.apply(&name, value);
            }
        }
        cc
    }

    fn apply(&mut self, name: &str, value: Option<&str>) {
        match name {
            "no-store" => self.no_store = true,
            "no-cache" => self.no_cache = true,
            "private" => self.private = true,
            "public" => self.public = true,
            "must-revalidate" => self.must_revalidate = true,
            "proxy-revalidate" => self.proxy_revalidate = true,
            "max-age" => self.max_age = Some(merge_delta(self.max_age, value)),
            "s-maxage" => self.s_maxage = Some(merge_delta(self.s_maxage, value)),
            _ => {}
        }
    }
}

fn merge_delta(previous: Option<Duration>, value: Option<&str>) -> Duration {
    let parsed = value.and_then(parse_delta);
    match (previous, parsed) {
        (_, None) => Duration::ZERO,
        (None, Some(d)) => d,
        (Some(p), Some(d)) if p == d => d,
        (Some(_), Some(_)) => Duration::ZERO,
    }
}

fn parse_delta(text: &str) -> Option<Duration> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs = text.parse::<u64>().unwrap_or(MAX_DELTA_SECONDS);
    Some(Duration::from_secs(secs.min(MAX_DELTA_SECONDS)))
}

/// Splits one header line into lower-cased directive names and optional (unquoted) values.
/// Commas inside quoted strings do not split.
pub fn directives(line: &str) -> impl Iterator<Item = (String, Option<&str>)> {
    split_outside_quotes(line).filter_map(|part| {
        let part = part.trim();
        if part.is_empty() {
            return None;
        }
        let (name, value) = match part.split_once('=') {
            Some((n, v)) => {
                let v = v.trim();
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v);
                (n.trim(), Some(v))
            }
            None => (part, None),
        };
        Some((name.to_ascii_lowercase(), value))
    })
}

fn split_outside_quotes(line: &str) -> impl Iterator<Item = &str> {
    let mut start = 0;
    let mut in_quotes = false;
    let mut escaped = false;
    let mut pieces = Vec::new();
    for (i, b) in line.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if in_quotes => escaped = true,
            b'"' => in_quotes = !in_quotes,
            b',' if !in_quotes => {
                pieces.push(&line[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    pieces.push(&line[start..]);
    pieces.into_iter()
}

/// Why a response is not stored. `as_str` names it in `Cache-Status` details and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStorable {
    Method,
    Status,
    NoStore,
    Private,
    NoCache,
    Authorization,
    VaryStar,
    NoFreshness,
    TooLarge,
}

impl NotStorable {
    pub fn as_str(self) -> &'static str {
        match self {
            NotStorable::Method => "method",
            NotStorable::Status => "status",
            NotStorable::NoStore => "no-store",
            NotStorable::Private => "private",
            NotStorable::NoCache => "no-cache",
            NotStorable::Authorization => "authorization",
            NotStorable::VaryStar => "vary-star",
            NotStorable::NoFreshness => "no-freshness",
            NotStorable::TooLarge => "too-large",
        }
    }
}

/// Statuses a cache understands well enough to store with explicit freshness: final statuses
/// other than 206 (partial) and 304 (a validation answer, not a representation).
pub fn status_is_storable(status: StatusCode) -> bool {
    (200..600).contains(&status.as_u16())
        && status != StatusCode::PARTIAL_CONTENT
        && status != StatusCode::NOT_MODIFIED
}

/// Decides whether a response may be stored by a shared cache (RFC 9111 §3) and, if so, for how
/// long it is fresh. A response without explicit freshness is not stored.
pub fn storability(
    method: &Method,
    request_headers: &HeaderMap,
    status: StatusCode,
    response_headers: &HeaderMap,
    cc: &CacheControl,
    response_time: SystemTime,
) -> Result<Duration, NotStorable> {
    if method != Method::GET {
        return Err(NotStorable::Method);
    }
    if !status_is_storable(status) {
        return Err(NotStorable::Status);
    }
    if cc.no_store {
        return Err(NotStorable::NoStore);
    }
    if cc.private {
        return Err(NotStorable::Private);
    }
    if cc.no_cache {
        return Err(NotStorable::NoCache);
    }
    // §3.5: a shared cache stores a response to an authenticated request only when the
    // response explicitly allows it.
    if request_headers.contains_key(AUTHORIZATION)
        && !(cc.public || cc.must_revalidate || cc.s_maxage.is_some())
    {
        return Err(NotStorable::Authorization);
    }
    if vary_names(response_headers).any(|n| n == "*") {
        return Err(NotStorable::VaryStar);
    }
    match freshness_lifetime(cc, response_headers, response_time) {
        Some(lifetime) if !lifetime.is_zero() => Ok(lifetime),
        _ => Err(NotStorable::NoFreshness),
    }
}

/// Explicit freshness lifetime (RFC 9111 §4.2.1): `s-maxage`, else `max-age`, else `Expires`
/// minus `Date` (or the response time when `Date` is missing or invalid). An invalid `Expires`
/// means already expired. `None` when the response states no freshness at all.
pub fn freshness_lifetime(
    cc: &CacheControl,
    headers: &HeaderMap,
    response_time: SystemTime,
) -> Option<Duration> {
    if let Some(s) = cc.s_maxage {
        return Some(s);
    }
    if let Some(m) = cc.max_age {
        return Some(m);
    }
    let expires = headers.get(EXPIRES)?;
    let Some(expires) = parse_date(expires) else {
        return Some(Duration::ZERO);
    };
    let date = headers
        .get(DATE)
        .and_then(parse_date)
        .unwrap_or(response_time);
    Some(expires.duration_since(date).unwrap_or(Duration::ZERO))
}

/// Parses an HTTP date (IMF-fixdate, RFC 850 or asctime).
pub fn parse_date(value: &http::HeaderValue) -> Option<SystemTime> {
    httpdate::parse_http_date(value.to_str().ok()?).ok()
}

/// The times needed to compute a stored response's age (RFC 9111 §4.2.3).
#[derive(Debug, Clone, Copy)]
pub struct AgeInputs {
    /// When the request that produced the response was sent upstream.
    pub request_time: SystemTime,
    /// When the response head was received.
    pub response_time: SystemTime,
    /// The response's `Date`, if valid.
    pub date: Option<SystemTime>,
    /// The response's `Age`, if valid.
    pub age: Option<Duration>,
}

impl AgeInputs {
    pub fn from_headers(
        headers: &HeaderMap,
        request_time: SystemTime,
        response_time: SystemTime,
    ) -> AgeInputs {
        AgeInputs {
            request_time,
            response_time,
            date: headers.get(DATE).and_then(parse_date),
            age: headers
                .get(http::header::AGE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_delta),
        }
    }

    /// `corrected_initial_age` of RFC 9111 §4.2.3.
    pub fn corrected_initial_age(&self) -> Duration {
        let apparent_age = self
            .date
            .and_then(|d| self.response_time.duration_since(d).ok())
            .unwrap_or(Duration::ZERO);
        let response_delay = self
            .response_time
            .duration_since(self.request_time)
            .unwrap_or(Duration::ZERO);
        let corrected_age_value = self.age.unwrap_or(Duration::ZERO) + response_delay;
        apparent_age.max(corrected_age_value)
    }
}

/// The header names a response varies on, lower-cased.
pub fn vary_names(headers: &HeaderMap) -> impl Iterator<Item = String> + '_ {
    headers
        .get_all(VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_str(value).unwrap());
        }
        h
    }

    fn cc(line: &str) -> CacheControl {
        CacheControl::from_headers(&headers(&[("cache-control", line)]))
    }

    #[test]
    fn cache_control_parsing_table() {
        let secs = |s| Some(Duration::from_secs(s));
        let cases: &[(&str, CacheControl)] = &[
            (
                "max-age=60",
                CacheControl {
                    max_age: secs(60),
                    ..Default::default()
                },
            ),
            (
                "MAX-AGE=60",
                CacheControl {
                    max_age: secs(60),
                    ..Default::default()
                },
            ),
            (
                "max-age=\"60\"",
                CacheControl {
                    max_age: secs(60),
                    ..Default::default()
                },
            ),
            (
                "public, s-maxage=10",
                CacheControl {
                    public: true,
                    s_maxage: secs(10),
                    ..Default::default()
                },
            ),
            (
                "max-age=abc",
                CacheControl {
                    max_age: secs(0),
                    ..Default::default()
                },
            ),
            (
                "max-age=-1",
                CacheControl {
                    max_age: secs(0),
                    ..Default::default()
                },
            ),
            (
                "max-age",
                CacheControl {
                    max_age: secs(0),
                    ..Default::default()
                },
            ),
            (
                "max-age=10, max-age=20",
                CacheControl {
                    max_age: secs(0),
                    ..Default::default()
                },
            ),
            (
                "max-age=10, max-age=10",
                CacheControl {
                    max_age: secs(10),
                    ..Default::default()
                },
            ),
            (
                "max-age=99999999999",
                CacheControl {
                    max_age: secs(MAX_DELTA_SECONDS),
                    ..Default::default()
                },
            ),
            (
                "private=\"set-cookie, x\", max-age=5",
                CacheControl {
                    private: true,
                    max_age: secs(5),
                    ..Default::default()
                },
            ),
            (
                "no-cache=\"set-cookie\"",
                CacheControl {
                    no_cache: true,
                    ..Default::default()
                },
            ),
            (
                "no-store,,must-revalidate",
                CacheControl {
                    no_store: true,
                    must_revalidate: true,
                    ..Default::default()
                },
            ),
            (
                "proxy-revalidate, unknown=1, x",
                CacheControl {
                    proxy_revalidate: true,
                    ..Default::default()
                },
            ),
            ("", CacheControl::default()),
        ];
        for (line, want) in cases {
            assert_eq!(&cc(line), want, "{line:?}");
        }
    }

    #[test]
    fn several_cache_control_lines_combine() {
        let h = headers(&[("cache-control", "public"), ("cache-control", "max-age=30")]);
        let parsed = CacheControl::from_headers(&h);
        assert!(parsed.public);
        assert_eq!(parsed.max_age, Some(Duration::from_secs(30)));
    }

    #[test]
    fn freshness_prefers_s_maxage_then_max_age_then_expires() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let date = httpdate::fmt_http_date(now);
        let expires = httpdate::fmt_http_date(now + Duration::from_secs(300));
        let h = headers(&[("date", &date), ("expires", &expires)]);
        let life = |line: &str| freshness_lifetime(&cc(line), &h, now);
        assert_eq!(life("s-maxage=5, max-age=10"), Some(Duration::from_secs(5)));
        assert_eq!(life("max-age=10"), Some(Duration::from_secs(10)));
        assert_eq!(life(""), Some(Duration::from_secs(300)));
        let invalid = headers(&[("expires", "0")]);
        assert_eq!(
            freshness_lifetime(&cc(""), &invalid, now),
            Some(Duration::ZERO)
        );
        assert_eq!(freshness_lifetime(&cc(""), &HeaderMap::new(), now), None);
        let past = headers(&[
            ("date", &date),
            (
                "expires",
                &httpdate::fmt_http_date(now - Duration::from_secs(5)),
            ),
        ]);
        assert_eq!(
            freshness_lifetime(&cc(""), &past, now),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn storability_table() {
        let now = SystemTime::now();
        let get = Method::GET;
        let none = HeaderMap::new();
        let auth = headers(&[("authorization", "Bearer x")]);
        let ok = StatusCode::OK;
        let check = |method: &Method,
                     req: &HeaderMap,
                     status: StatusCode,
                     resp: &[(&'static str, &str)]| {
            let resp = headers(resp);
            storability(
                method,
                req,
                status,
                &resp,
                &CacheControl::from_headers(&resp),
                now,
            )
        };
        let cc_line = |v| vec![("cache-control", v)];
        assert_eq!(
            check(&get, &none, ok, &cc_line("max-age=60")),
            Ok(Duration::from_secs(60))
        );
        assert_eq!(
            check(&Method::POST, &none, ok, &cc_line("max-age=60")),
            Err(NotStorable::Method)
        );
        assert_eq!(
            check(
                &get,
                &none,
                StatusCode::PARTIAL_CONTENT,
                &cc_line("max-age=60")
            ),
            Err(NotStorable::Status)
        );
        assert_eq!(
            check(&get, &none, ok, &cc_line("no-store, max-age=60")),
            Err(NotStorable::NoStore)
        );
        assert_eq!(
            check(&get, &none, ok, &cc_line("private, max-age=60")),
            Err(NotStorable::Private)
        );
        assert_eq!(
            check(&get, &none, ok, &cc_line("no-cache, max-age=60")),
            Err(NotStorable::NoCache)
        );
        assert_eq!(
            check(&get, &auth, ok, &cc_line("max-age=60")),
            Err(NotStorable::Authorization)
        );
        assert_eq!(
            check(&get, &auth, ok, &cc_line("public, max-age=60")),
            Ok(Duration::from_secs(60))
        );
        assert_eq!(
            check(&get, &auth, ok, &cc_line("s-maxage=60")),
            Ok(Duration::from_secs(60))
        );
        assert_eq!(check(&get, &none, ok, &[]), Err(NotStorable::NoFreshness));
        assert_eq!(
            check(&get, &none, ok, &cc_line("max-age=0")),
            Err(NotStorable::NoFreshness)
        );
        assert_eq!(
            check(
                &get,
                &none,
                ok,
                &[("cache-control", "max-age=60"), ("vary", "Accept, *")]
            ),
            Err(NotStorable::VaryStar)
        );
        assert_eq!(
            check(&get, &none, StatusCode::NOT_FOUND, &cc_line("max-age=60")),
            Ok(Duration::from_secs(60))
        );
    }

    #[test]
    fn corrected_initial_age_takes_the_larger_of_apparent_and_reported_age() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let inputs = AgeInputs {
            request_time: t0,
            response_time: t0 + Duration::from_secs(2),
            date: Some(t0 - Duration::from_secs(10)),
            age: Some(Duration::from_secs(3)),
        };
        assert_eq!(inputs.corrected_initial_age(), Duration::from_secs(12));
        let reported = AgeInputs {
            date: Some(t0 + Duration::from_secs(2)),
            age: Some(Duration::from_secs(30)),
            ..inputs
        };
        assert_eq!(reported.corrected_initial_age(), Duration::from_secs(32));
        let clock_ahead = AgeInputs {
            date: Some(t0 + Duration::from_secs(100)),
            age: None,
            ..inputs
        };
        assert_eq!(clock_ahead.corrected_initial_age(), Duration::from_secs(2));
    }
}
