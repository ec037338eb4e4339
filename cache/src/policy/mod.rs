//! RFC 9111 decisions for a shared cache, as pure functions over headers and times.
//!
//! - [`directives`](CacheControl): what the response and the request say about caching;
//! - this module: storability, freshness, age and how a stored response may be reused;
//! - [`validation`](not_modified): conditional requests and revalidation.

mod directives;
mod validation;

use std::time::{Duration, SystemTime};

use http::header::{AGE, AUTHORIZATION, DATE, ETAG, EXPIRES, LAST_MODIFIED, VARY};
use http::{HeaderMap, Method, StatusCode};

use directives::parse_delta;
pub use directives::{
    directives, CacheControl, RequestDirectives, CDN_CACHE_CONTROL, SURROGATE_CONTROL,
};
pub use validation::{freshen_headers, not_modified, validates, validators, weak_eq};

/// Heuristic freshness is this fraction of the time since `Last-Modified` (RFC 9111 §4.2.2)...
const HEURISTIC_FRACTION: u32 = 10;
/// ...and never more than this.
const HEURISTIC_MAX: Duration = Duration::from_secs(24 * 3600);

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
    /// The response sets a cookie: stored, it would hand one client's cookie to every other.
    SetCookie,
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
            NotStorable::SetCookie => "set-cookie",
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

/// Parses an HTTP date (IMF-fixdate, RFC 850 or asctime).
pub fn parse_date(value: &http::HeaderValue) -> Option<SystemTime> {
    httpdate::parse_http_date(value.to_str().ok()?).ok()
}

/// The response's `Age` (RFC 9111 §5.1): a non-negative integer of seconds, saturating at 2^31.
/// A list-based value (several lines or members) counts by its first member, the rest discarded,
/// as §5.1 asks. `None` when absent or when that member is not such an integer (`-5`, `1.5`,
/// `abc`): an invalid `Age` is ignored rather than guessed at, so garbage never reads as a large
/// age.
pub fn parse_age(headers: &HeaderMap) -> Option<Duration> {
    let first = headers.get(AGE)?.to_str().ok()?.split(',').next()?;
    parse_delta(first.trim_matches([' ', '\t']))
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
            age: parse_age(headers),
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
mod tests;
