//! RFC 9111 decisions for a shared cache, as pure functions over headers and times.

use std::time::{Duration, SystemTime};

use http::header::{
    HeaderName, HeaderValue, AGE, AUTHORIZATION, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH,
    CONTENT_RANGE, DATE, ETAG, EXPIRES, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED, PRAGMA,
    VARY,
};
use http::{HeaderMap, Method, StatusCode};

/// RFC 9213: cache directives aimed at CDNs, taking precedence over `Cache-Control`.
pub const CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");
/// The older Edge Architecture field with the same role.
pub const SURROGATE_CONTROL: HeaderName = HeaderName::from_static("surrogate-control");

/// Heuristic freshness is this fraction of the time since `Last-Modified` (RFC 9111 §4.2.2)...
const HEURISTIC_FRACTION: u32 = 10;
/// ...and never more than this.
const HEURISTIC_MAX: Duration = Duration::from_secs(24 * 3600);

/// Delta-seconds above this are taken as this (RFC 9111 §1.2.2).
const MAX_DELTA_SECONDS: u64 = 2_147_483_648;

/// The `Cache-Control` directives Verge acts on, from every `Cache-Control` line of a message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheControl {
    pub no_store: bool,
    /// Bare `no-cache`: the response may be stored but never reused without revalidation.
    pub no_cache: bool,
    /// `no-cache="a, b"`: these fields must not be sent from cache without revalidation.
    pub no_cache_fields: Vec<String>,
    /// Bare `private`: a shared cache must not store the response.
    pub private: bool,
    /// `private="a, b"`: a shared cache must not store these fields; the rest may be stored.
    pub private_fields: Vec<String>,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub max_age: Option<Duration>,
    pub s_maxage: Option<Duration>,
    /// RFC 5861: how long past freshness the response may be served while it is revalidated.
    pub stale_while_revalidate: Option<Duration>,
    /// RFC 5861: how long past freshness the response may be served when upstream fails.
    pub stale_if_error: Option<Duration>,
    /// These directives came from `CDN-Cache-Control` or `Surrogate-Control`, not
    /// `Cache-Control`.
    pub from_cdn_field: bool,
}

impl CacheControl {
    /// Parses all `Cache-Control` lines. Unknown directives are ignored; a `max-age` or
    /// `s-maxage` whose value is invalid, or that appears twice with different values, makes the
    /// response stale (lifetime 0), as RFC 9111 §4.2.1 allows.
    pub fn from_headers(headers: &HeaderMap) -> CacheControl {
        CacheControl::from_lines(headers.get_all(CACHE_CONTROL))
    }

    /// The directives Verge obeys for a response: those of `CDN-Cache-Control` (RFC 9213) when
    /// present, else those of `Surrogate-Control`, else `Cache-Control`'s. A CDN-targeted field
    /// replaces `Cache-Control` entirely for this cache.
    pub fn for_response(headers: &HeaderMap) -> CacheControl {
        for name in [CDN_CACHE_CONTROL, SURROGATE_CONTROL] {
            if headers.contains_key(&name) {
                return CacheControl {
                    from_cdn_field: true,
                    ..CacheControl::from_lines(headers.get_all(name))
                };
            }
        }
        CacheControl::from_headers(headers)
    }

    fn from_lines<'a>(lines: impl IntoIterator<Item = &'a HeaderValue>) -> CacheControl {
        let mut cc = CacheControl::default();
        for line in lines {
            let Ok(line) = line.to_str() else { continue };
            for (name, value) in directives(line) {
                cc.apply(&name, value);
            }
        }
        cc
    }

    fn apply(&mut self, name: &str, value: Option<&str>) {
        match (name, value) {
            ("no-store", _) => self.no_store = true,
            ("no-cache", None) => self.no_cache = true,
            ("no-cache", Some(fields)) => self.no_cache_fields.extend(field_names(fields)),
            ("private", None) => self.private = true,
            ("private", Some(fields)) => self.private_fields.extend(field_names(fields)),
            ("public", _) => self.public = true,
            ("must-revalidate", _) => self.must_revalidate = true,
            ("proxy-revalidate", _) => self.proxy_revalidate = true,
            ("max-age", _) => self.max_age = Some(merge_delta(self.max_age, value)),
            ("s-maxage", _) => self.s_maxage = Some(merge_delta(self.s_maxage, value)),
            // RFC 5861: an invalid value disables the extension rather than making it stale.
            ("stale-while-revalidate", _) => {
                self.stale_while_revalidate = value.and_then(parse_delta)
            }
            ("stale-if-error", _) => self.stale_if_error = value.and_then(parse_delta),
            _ => {}
        }
    }

    /// Whether a stale response may ever be served without revalidation (RFC 9111 §4.2.4):
    /// not with `must-revalidate`, `proxy-revalidate` or `s-maxage` (shared caches), nor
    /// `no-cache`.
    pub fn forbids_stale(&self) -> bool {
        self.must_revalidate || self.proxy_revalidate || self.s_maxage.is_some() || self.no_cache
    }
}

/// Request directives (RFC 9111 §5.2.1), from `Cache-Control`, or from `Pragma: no-cache` when
/// the request has no `Cache-Control` (§5.4).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestDirectives {
    pub max_age: Option<Duration>,
    /// `max-stale`: `Some(Duration::MAX)` when given without a value (any staleness).
    pub max_stale: Option<Duration>,
    pub min_fresh: Option<Duration>,
    pub no_cache: bool,
    pub no_store: bool,
    pub only_if_cached: bool,
    pub stale_if_error: Option<Duration>,
}

impl RequestDirectives {
    pub fn from_headers(headers: &HeaderMap) -> RequestDirectives {
        let mut d = RequestDirectives::default();
        if !headers.contains_key(CACHE_CONTROL) {
            d.no_cache = headers
                .get_all(PRAGMA)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(directives)
                .any(|(name, _)| name == "no-cache");
            return d;
        }
        for line in headers.get_all(CACHE_CONTROL) {
            let Ok(line) = line.to_str() else { continue };
            for (name, value) in directives(line) {
                // Invalid values make a request directive ignored (it only asks for more
                // validation or less staleness, never less).
                match name.as_str() {
                    "max-age" => d.max_age = value.and_then(parse_delta).or(d.max_age),
                    "max-stale" => {
                        d.max_stale = match value {
                            None => Some(Duration::MAX),
                            Some(v) => parse_delta(v).or(d.max_stale),
                        }
                    }
                    "min-fresh" => d.min_fresh = value.and_then(parse_delta).or(d.min_fresh),
                    "no-cache" => d.no_cache = true,
                    "no-store" => d.no_store = true,
                    "only-if-cached" => d.only_if_cached = true,
                    "stale-if-error" => d.stale_if_error = value.and_then(parse_delta),
                    _ => {}
                }
            }
        }
        d
    }
}

fn field_names(list: &str) -> impl Iterator<Item = String> + '_ {
    list.split(',')
        .map(|f| f.trim().to_ascii_lowercase())
        .filter(|f| !f.is_empty())
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
    RequestNoStore,
    Private,
    Authorization,
    VaryStar,
    NoFreshness,
    TooLarge,
    Partial,
}

impl NotStorable {
    pub fn as_str(self) -> &'static str {
        match self {
            NotStorable::Method => "method",
            NotStorable::Status => "status",
            NotStorable::NoStore => "no-store",
            NotStorable::RequestNoStore => "request-no-store",
            NotStorable::Private => "private",
            NotStorable::Authorization => "authorization",
            NotStorable::VaryStar => "vary-star",
            NotStorable::NoFreshness => "no-freshness",
            NotStorable::TooLarge => "too-large",
            NotStorable::Partial => "partial",
        }
    }
}

/// Statuses a cache understands well enough to store: final statuses other than 206 (a part,
/// not the representation) and 304 (a validation answer).
pub fn status_is_storable(status: StatusCode) -> bool {
    (200..600).contains(&status.as_u16())
        && status != StatusCode::PARTIAL_CONTENT
        && status != StatusCode::NOT_MODIFIED
}

/// Statuses that may be given heuristic freshness (RFC 9110 §15.1).
pub fn is_heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Whether a stored response can be validated (it has `ETag` or `Last-Modified`).
pub fn has_validator(headers: &HeaderMap) -> bool {
    headers.contains_key(ETAG) || headers.contains_key(LAST_MODIFIED)
}

/// Decides whether a response may be stored by a shared cache (RFC 9111 §3) and returns its
/// freshness lifetime (explicit, else heuristic). A response that is neither fresh nor
/// validatable is not stored: it could never be reused.
pub fn storability(
    method: &Method,
    request_headers: &HeaderMap,
    request: &RequestDirectives,
    status: StatusCode,
    response_headers: &HeaderMap,
    cc: &CacheControl,
    response_time: SystemTime,
) -> Result<Duration, NotStorable> {
    if method != Method::GET {
        return Err(NotStorable::Method);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        return Err(NotStorable::Partial);
    }
    if !status_is_storable(status) {
        return Err(NotStorable::Status);
    }
    if request.no_store {
        return Err(NotStorable::RequestNoStore);
    }
    if cc.no_store {
        return Err(NotStorable::NoStore);
    }
    if cc.private {
        return Err(NotStorable::Private);
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
    let lifetime = freshness(cc, status, response_headers, response_time);
    if lifetime.is_zero() && !has_validator(response_headers) {
        return Err(NotStorable::NoFreshness);
    }
    Ok(lifetime)
}

/// Freshness lifetime: explicit when the response states one, else heuristic (10% of the time
/// since `Last-Modified`, at most a day) for heuristically cacheable statuses or `public`
/// responses, else zero.
pub fn freshness(
    cc: &CacheControl,
    status: StatusCode,
    headers: &HeaderMap,
    response_time: SystemTime,
) -> Duration {
    if let Some(explicit) = freshness_lifetime(cc, headers, response_time) {
        return explicit;
    }
    if !(cc.public || is_heuristically_cacheable(status)) {
        return Duration::ZERO;
    }
    let Some(last_modified) = headers.get(LAST_MODIFIED).and_then(parse_date) else {
        return Duration::ZERO;
    };
    let date = headers
        .get(DATE)
        .and_then(parse_date)
        .unwrap_or(response_time);
    let since = date.duration_since(last_modified).unwrap_or(Duration::ZERO);
    (since / HEURISTIC_FRACTION).min(HEURISTIC_MAX)
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

/// How a stored response may be used for a request (RFC 9111 §4, RFC 5861).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// Fresh enough for this request.
    Fresh,
    /// Stale, but within what the request accepts (`max-stale`).
    StaleAccepted,
    /// Stale within `stale-while-revalidate`: serve it and refresh in the background.
    StaleWhileRevalidate,
    /// Must be validated (or fetched again) before use.
    Revalidate,
}

/// Decides how a stored response with `lifetime` and current `age` may answer a request.
pub fn reuse(
    response: &CacheControl,
    lifetime: Duration,
    age: Duration,
    request: &RequestDirectives,
) -> Reuse {
    if request.no_cache || response.no_cache {
        return Reuse::Revalidate;
    }
    let within_request_max_age = request.max_age.is_none_or(|max| age <= max);
    let remaining = lifetime.saturating_sub(age);
    let fresh = age < lifetime;
    if fresh && within_request_max_age && request.min_fresh.is_none_or(|min| remaining >= min) {
        return Reuse::Fresh;
    }
    if fresh || response.forbids_stale() {
        // Fresh but not fresh enough for the request, or stale where staleness is forbidden.
        return Reuse::Revalidate;
    }
    let staleness = age - lifetime;
    if within_request_max_age && request.max_stale.is_some_and(|max| staleness <= max) {
        return Reuse::StaleAccepted;
    }
    if response
        .stale_while_revalidate
        .is_some_and(|window| staleness <= window)
    {
        return Reuse::StaleWhileRevalidate;
    }
    Reuse::Revalidate
}

/// Whether a stale response may stand in for a failed upstream (`stale-if-error`, from the
/// response or the request), never where staleness is forbidden.
pub fn may_serve_stale_on_error(
    response: &CacheControl,
    lifetime: Duration,
    age: Duration,
    request: &RequestDirectives,
) -> bool {
    if response.forbids_stale() || request.no_cache {
        return false;
    }
    let staleness = age.saturating_sub(lifetime);
    [response.stale_if_error, request.stale_if_error]
        .into_iter()
        .flatten()
        .any(|window| staleness <= window)
}

/// Whether a client's conditional request is satisfied by a stored response (RFC 9110 §13.1.2,
/// §13.1.3), so it can be answered 304: `If-None-Match` by weak comparison, else
/// `If-Modified-Since` against `Last-Modified`.
pub fn not_modified(request: &HeaderMap, stored: &HeaderMap) -> bool {
    let inm = request.get_all(IF_NONE_MATCH);
    if inm.iter().next().is_some() {
        let Some(etag) = stored.get(ETAG).and_then(|v| v.to_str().ok()) else {
            return inm
                .iter()
                .any(|v| v.to_str().is_ok_and(|v| v.trim() == "*"));
        };
        return inm
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .any(|tag| tag == "*" || weak_eq(tag, etag));
    }
    let Some(since) = request.get(IF_MODIFIED_SINCE).and_then(parse_date) else {
        return false;
    };
    stored
        .get(LAST_MODIFIED)
        .and_then(parse_date)
        .is_some_and(|modified| modified <= since)
}

fn opaque(tag: &str) -> &str {
    tag.trim().strip_prefix("W/").unwrap_or(tag.trim())
}

/// Weak entity-tag comparison: equal opaque tags, whatever their weakness.
pub fn weak_eq(a: &str, b: &str) -> bool {
    let (a, b) = (opaque(a), opaque(b));
    a.len() >= 2 && a.starts_with('"') && a.ends_with('"') && a == b
}

/// Conditional headers that revalidate a stored response (RFC 9111 §4.3.1).
pub fn validators(stored: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::with_capacity(2);
    if let Some(etag) = stored.get(ETAG) {
        out.push((IF_NONE_MATCH, etag.clone()));
    }
    if let Some(modified) = stored.get(LAST_MODIFIED) {
        out.push((IF_MODIFIED_SINCE, modified.clone()));
    }
    out
}

/// Whether a 304 answers for this stored response (RFC 9111 §4.3.4): its validators, when it
/// carries any, must be those of the stored response.
pub fn validates(stored: &HeaderMap, not_modified: &HeaderMap) -> bool {
    if let Some(tag) = not_modified.get(ETAG).and_then(|v| v.to_str().ok()) {
        return stored
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|s| weak_eq(s, tag));
    }
    if let Some(modified) = not_modified.get(LAST_MODIFIED) {
        return stored.get(LAST_MODIFIED) == Some(modified);
    }
    true
}

/// Fields a 304 must not change in the stored response (RFC 9111 §3.2): the body's framing
/// and coding describe the stored body, not the 304.
const NOT_UPDATED_BY_304: [HeaderName; 3] = [CONTENT_LENGTH, CONTENT_ENCODING, CONTENT_RANGE];

/// The stored header fields after a 304 (RFC 9111 §3.2): every field of the 304 replaces the
/// stored one of that name, except those of [`NOT_UPDATED_BY_304`] and `Age`.
pub fn freshen_headers(stored: &HeaderMap, not_modified: &HeaderMap) -> HeaderMap {
    let mut out = stored.clone();
    for name in not_modified.keys() {
        if NOT_UPDATED_BY_304.contains(name) || name == AGE {
            continue;
        }
        out.remove(name);
        for value in not_modified.get_all(name) {
            out.append(name.clone(), value.clone());
        }
    }
    out
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
                "private=\"Set-Cookie, x\", max-age=5",
                CacheControl {
                    private_fields: vec!["set-cookie".into(), "x".into()],
                    max_age: secs(5),
                    ..Default::default()
                },
            ),
            (
                "no-cache=\"set-cookie\"",
                CacheControl {
                    no_cache_fields: vec!["set-cookie".into()],
                    ..Default::default()
                },
            ),
            (
                "no-cache, private",
                CacheControl {
                    no_cache: true,
                    private: true,
                    ..Default::default()
                },
            ),
            (
                "max-age=5, stale-while-revalidate=30, stale-if-error=60",
                CacheControl {
                    max_age: secs(5),
                    stale_while_revalidate: secs(30),
                    stale_if_error: secs(60),
                    ..Default::default()
                },
            ),
            ("stale-while-revalidate=soon", CacheControl::default()),
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
            let directives = RequestDirectives::from_headers(req);
            storability(
                method,
                req,
                &directives,
                status,
                &resp,
                &CacheControl::for_response(&resp),
                now,
            )
        };
        let cc_line = |v| vec![("cache-control", v)];
        let minute = Ok(Duration::from_secs(60));
        assert_eq!(check(&get, &none, ok, &cc_line("max-age=60")), minute);
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
            Err(NotStorable::Partial)
        );
        assert_eq!(
            check(
                &get,
                &none,
                StatusCode::NOT_MODIFIED,
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
            check(
                &get,
                &none,
                ok,
                &cc_line("private=\"set-cookie\", max-age=60")
            ),
            minute
        );
        assert_eq!(
            check(&get, &none, ok, &cc_line("no-cache, max-age=60")),
            minute,
            "stored, revalidated on use"
        );
        assert_eq!(
            check(&get, &auth, ok, &cc_line("max-age=60")),
            Err(NotStorable::Authorization)
        );
        assert_eq!(
            check(&get, &auth, ok, &cc_line("public, max-age=60")),
            minute
        );
        assert_eq!(check(&get, &auth, ok, &cc_line("s-maxage=60")), minute);
        assert_eq!(
            check(&get, &auth, ok, &cc_line("must-revalidate, max-age=60")),
            minute
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
                &[("cache-control", "max-age=0"), ("etag", "\"v1\"")]
            ),
            Ok(Duration::ZERO),
            "stale but validatable"
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
            minute
        );
        let no_store_req = headers(&[("cache-control", "no-store")]);
        assert_eq!(
            check(&get, &no_store_req, ok, &cc_line("max-age=60")),
            Err(NotStorable::RequestNoStore)
        );
        // CDN-Cache-Control and Surrogate-Control take precedence over Cache-Control.
        assert_eq!(
            check(
                &get,
                &none,
                ok,
                &[
                    ("cache-control", "no-store"),
                    ("cdn-cache-control", "max-age=60")
                ]
            ),
            minute
        );
        assert_eq!(
            check(
                &get,
                &none,
                ok,
                &[
                    ("cache-control", "max-age=60"),
                    ("cdn-cache-control", "no-store")
                ]
            ),
            Err(NotStorable::NoStore)
        );
        assert_eq!(
            check(
                &get,
                &none,
                ok,
                &[
                    ("cache-control", "private"),
                    ("surrogate-control", "max-age=60")
                ]
            ),
            minute
        );
        assert_eq!(
            check(
                &get,
                &none,
                ok,
                &[
                    ("surrogate-control", "max-age=10"),
                    ("cdn-cache-control", "max-age=60")
                ]
            ),
            minute
        );
    }

    #[test]
    fn heuristic_freshness_only_without_explicit_freshness_and_for_listed_statuses() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let lm = httpdate::fmt_http_date(now - Duration::from_secs(1000));
        let date = httpdate::fmt_http_date(now);
        let h = headers(&[("last-modified", &lm), ("date", &date)]);
        let none = CacheControl::default();
        assert_eq!(
            freshness(&none, StatusCode::OK, &h, now),
            Duration::from_secs(100)
        );
        assert_eq!(
            freshness(&none, StatusCode::NOT_FOUND, &h, now),
            Duration::from_secs(100)
        );
        assert_eq!(freshness(&none, StatusCode::FOUND, &h, now), Duration::ZERO);
        let public = CacheControl {
            public: true,
            ..Default::default()
        };
        assert_eq!(
            freshness(&public, StatusCode::FOUND, &h, now),
            Duration::from_secs(100)
        );
        let explicit = CacheControl {
            max_age: Some(Duration::from_secs(5)),
            ..Default::default()
        };
        assert_eq!(
            freshness(&explicit, StatusCode::OK, &h, now),
            Duration::from_secs(5)
        );
        let old = headers(&[
            (
                "last-modified",
                &httpdate::fmt_http_date(SystemTime::UNIX_EPOCH),
            ),
            ("date", &date),
        ]);
        assert_eq!(freshness(&none, StatusCode::OK, &old, now), HEURISTIC_MAX);
        assert_eq!(
            freshness(&none, StatusCode::OK, &HeaderMap::new(), now),
            Duration::ZERO
        );
    }

    #[test]
    fn request_directives_table() {
        let secs = |s| Some(Duration::from_secs(s));
        let d = |pairs: &[(&'static str, &str)]| RequestDirectives::from_headers(&headers(pairs));
        assert_eq!(
            d(&[("cache-control", "max-age=5, min-fresh=2")]),
            RequestDirectives {
                max_age: secs(5),
                min_fresh: secs(2),
                ..Default::default()
            }
        );
        assert_eq!(
            d(&[("cache-control", "max-stale")]).max_stale,
            Some(Duration::MAX)
        );
        assert_eq!(d(&[("cache-control", "max-stale=10")]).max_stale, secs(10));
        assert_eq!(
            d(&[("cache-control", "max-age=abc")]).max_age,
            None,
            "invalid request values are ignored"
        );
        assert!(d(&[("cache-control", "no-cache")]).no_cache);
        assert!(d(&[("cache-control", "no-store")]).no_store);
        assert!(d(&[("cache-control", "only-if-cached")]).only_if_cached);
        assert!(
            d(&[("pragma", "no-cache")]).no_cache,
            "Pragma counts without Cache-Control"
        );
        assert!(
            !d(&[("pragma", "no-cache"), ("cache-control", "max-age=5")]).no_cache,
            "and only then"
        );
    }

    #[test]
    fn reuse_table() {
        let s = Duration::from_secs;
        let req =
            |line: &str| RequestDirectives::from_headers(&headers(&[("cache-control", line)]));
        let none = RequestDirectives::default();
        let cases: Vec<(&str, u64, u64, RequestDirectives, Reuse)> = vec![
            ("max-age=60", 60, 10, none.clone(), Reuse::Fresh),
            ("max-age=60", 60, 60, none.clone(), Reuse::Revalidate),
            ("max-age=60", 60, 10, req("max-age=5"), Reuse::Revalidate),
            ("max-age=60", 60, 10, req("min-fresh=55"), Reuse::Revalidate),
            ("max-age=60", 60, 10, req("min-fresh=50"), Reuse::Fresh),
            ("max-age=60", 60, 10, req("no-cache"), Reuse::Revalidate),
            (
                "no-cache, max-age=60",
                60,
                10,
                none.clone(),
                Reuse::Revalidate,
            ),
            (
                "max-age=60",
                60,
                70,
                req("max-stale=20"),
                Reuse::StaleAccepted,
            ),
            ("max-age=60", 60, 90, req("max-stale=20"), Reuse::Revalidate),
            (
                "max-age=60",
                60,
                900,
                req("max-stale"),
                Reuse::StaleAccepted,
            ),
            (
                "max-age=60, must-revalidate",
                60,
                70,
                req("max-stale"),
                Reuse::Revalidate,
            ),
            ("s-maxage=60", 60, 70, req("max-stale"), Reuse::Revalidate),
            (
                "max-age=60, stale-while-revalidate=30",
                60,
                80,
                none.clone(),
                Reuse::StaleWhileRevalidate,
            ),
            (
                "max-age=60, stale-while-revalidate=30",
                60,
                100,
                none.clone(),
                Reuse::Revalidate,
            ),
            (
                "max-age=60, stale-while-revalidate=30, proxy-revalidate",
                60,
                80,
                none.clone(),
                Reuse::Revalidate,
            ),
        ];
        for (line, lifetime, age, request, want) in cases {
            assert_eq!(
                reuse(&cc(line), s(lifetime), s(age), &request),
                want,
                "{line} age={age} {request:?}"
            );
        }
    }

    #[test]
    fn stale_if_error_windows() {
        let s = Duration::from_secs;
        let none = RequestDirectives::default();
        assert!(may_serve_stale_on_error(
            &cc("max-age=1, stale-if-error=60"),
            s(1),
            s(30),
            &none
        ));
        assert!(!may_serve_stale_on_error(
            &cc("max-age=1, stale-if-error=60"),
            s(1),
            s(90),
            &none
        ));
        assert!(!may_serve_stale_on_error(
            &cc("max-age=1, stale-if-error=60, must-revalidate"),
            s(1),
            s(30),
            &none
        ));
        assert!(!may_serve_stale_on_error(
            &cc("max-age=1, stale-if-error=60, no-cache"),
            s(1),
            s(30),
            &none
        ));
        assert!(!may_serve_stale_on_error(
            &cc("max-age=1"),
            s(1),
            s(30),
            &none
        ));
        let req =
            RequestDirectives::from_headers(&headers(&[("cache-control", "stale-if-error=100")]));
        assert!(may_serve_stale_on_error(
            &cc("max-age=1"),
            s(1),
            s(30),
            &req
        ));
    }

    #[test]
    fn conditional_requests_against_a_stored_response() {
        let lm = "Tue, 15 Nov 1994 12:45:26 GMT";
        let stored = headers(&[("etag", "\"v1\""), ("last-modified", lm)]);
        let cond = |pairs: &[(&'static str, &str)]| not_modified(&headers(pairs), &stored);
        assert!(cond(&[("if-none-match", "\"v1\"")]));
        assert!(cond(&[("if-none-match", "W/\"v1\"")]), "weak comparison");
        assert!(cond(&[("if-none-match", "\"x\", \"v1\"")]));
        assert!(cond(&[("if-none-match", "*")]));
        assert!(!cond(&[("if-none-match", "\"v2\"")]));
        assert!(
            !cond(&[("if-none-match", "\"v2\""), ("if-modified-since", lm)]),
            "INM wins over IMS"
        );
        assert!(cond(&[("if-modified-since", lm)]));
        assert!(cond(&[(
            "if-modified-since",
            "Wed, 16 Nov 1994 12:45:26 GMT"
        )]));
        assert!(!cond(&[(
            "if-modified-since",
            "Mon, 14 Nov 1994 12:45:26 GMT"
        )]));
        assert!(!cond(&[("if-modified-since", "not a date")]));
        assert!(!cond(&[]));
    }

    #[test]
    fn revalidation_helpers() {
        let stored = headers(&[
            ("etag", "\"v1\""),
            ("last-modified", "Tue, 15 Nov 1994 12:45:26 GMT"),
            ("content-length", "10"),
            ("cache-control", "max-age=5"),
            ("x-old", "1"),
        ]);
        let v = validators(&stored);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0], (IF_NONE_MATCH, HeaderValue::from_static("\"v1\"")));
        let fresh = headers(&[
            ("etag", "\"v1\""),
            ("cache-control", "max-age=60"),
            ("content-length", "0"),
            ("x-new", "2"),
        ]);
        assert!(validates(&stored, &fresh));
        assert!(!validates(&stored, &headers(&[("etag", "\"v2\"")])));
        assert!(validates(&stored, &HeaderMap::new()));
        let merged = freshen_headers(&stored, &fresh);
        assert_eq!(merged.get("cache-control").unwrap(), "max-age=60");
        assert_eq!(
            merged.get("content-length").unwrap(),
            "10",
            "Content-Length is never updated by a 304"
        );
        assert_eq!(merged.get("x-old").unwrap(), "1");
        assert_eq!(merged.get("x-new").unwrap(), "2");
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
