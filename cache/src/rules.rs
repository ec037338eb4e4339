//! Cache rules as pure functions: which rule a request matches, the query and key a rule
//! makes of it, the cookies it lets upstream, and the freshness it gives a response. The
//! rules themselves are configuration ([`verge_config::rules`]).
//!
//! Whatever a rule takes out of the key it also takes out of the request sent upstream (query
//! parameters, cookies), so the key and what the origin answered always agree.

use std::borrow::Cow;
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use http::header::{COOKIE, USER_AGENT};
use http::{HeaderMap, HeaderValue, StatusCode};
use verge_config::rules::{HostPattern, KeyRule, Pattern, QueryRule, Rule, RuleSet};

use crate::policy::NotStorable;

/// What a request is matched on.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// The host, as sent (any case, port and trailing dot allowed).
    pub host: &'a str,
    pub path: &'a str,
    pub method: &'a str,
    pub headers: &'a HeaderMap,
}

/// Rule sets up to this size are tried in order; larger ones through their host index.
const LINEAR_MAX: usize = 8;

/// The first rule of `rules` that matches the request.
pub fn find(rules: &RuleSet, request: RequestView<'_>) -> Option<Arc<Rule>> {
    if rules.rules.is_empty() {
        return None;
    }
    let host = bare_host(request.host);
    if rules.rules.len() <= LINEAR_MAX {
        return linear(rules, host, request);
    }
    let lower = if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    };
    rules
        .index
        .candidates(&lower)
        .map(|position| &rules.rules[position])
        .find(|rule| matches(rule, host, request))
        .cloned()
}

/// The first matching rule, trying each in turn.
fn linear(rules: &RuleSet, host: &str, request: RequestView<'_>) -> Option<Arc<Rule>> {
    rules
        .rules
        .iter()
        .find(|rule| matches(rule, host, request))
        .cloned()
}

/// The host without port and trailing dot.
fn bare_host(host: &str) -> &str {
    let host = if host.starts_with('[') {
        host.find(']').map_or(host, |end| &host[..=end])
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    };
    host.strip_suffix('.').unwrap_or(host)
}

fn matches(rule: &Rule, host: &str, request: RequestView<'_>) -> bool {
    (rule.methods.is_empty() || rule.methods.iter().any(|m| m == request.method))
        && host_matches(rule.host.as_ref(), host)
        && path_matches(rule.path.as_ref(), request.path)
        && header_matches(rule, request.headers)
}

fn host_matches(pattern: Option<&HostPattern>, host: &str) -> bool {
    match pattern {
        None => true,
        Some(HostPattern::Exact(name)) => host.eq_ignore_ascii_case(name),
        Some(HostPattern::Subdomains(suffix)) => {
            let (host, n) = (host.as_bytes(), suffix.len());
            host.len() > n && host[host.len() - n..].eq_ignore_ascii_case(suffix.as_bytes())
        }
    }
}

fn path_matches(pattern: Option<&Pattern>, path: &str) -> bool {
    match pattern {
        None => true,
        Some(Pattern::Prefix(prefix)) => path.starts_with(prefix.as_str()),
        Some(Pattern::Glob(glob)) => glob.matches(path),
    }
}

fn header_matches(rule: &Rule, headers: &HeaderMap) -> bool {
    let Some(wanted) = &rule.request_header else {
        return true;
    };
    headers
        .get_all(wanted.name.as_str())
        .iter()
        .any(|value| match &wanted.value {
            None => true,
            Some(expected) => value.as_bytes().eq_ignore_ascii_case(expected.as_bytes()),
        })
}

/// The query string a rule makes of `query` (without its `?`): listed parameters dropped, or
/// only the listed ones kept, then sorted by name when asked. Parameters are compared by their
/// name as written (before `=`).
pub fn normalise_query<'q>(query: &'q str, rule: &QueryRule) -> Cow<'q, str> {
    if rule.is_identity() {
        return Cow::Borrowed(query);
    }
    let mut params: Vec<&str> = query
        .split('&')
        .filter(|param| !param.is_empty())
        .filter(|param| {
            let name = param.split('=').next().unwrap_or_default();
            let kept = match &rule.keep {
                Some(keep) => keep.iter().any(|glob| glob.matches(name)),
                None => true,
            };
            kept && !rule.drop.iter().any(|glob| glob.matches(name))
        })
        .collect();
    if rule.sort {
        params.sort_by_key(|param| param.split('=').next().unwrap_or_default());
    }
    Cow::Owned(params.join("&"))
}

/// What the key adds to the URL for a rule: each listed field, cookie and the device class,
/// each value prefixed with its length so no value can pass for another part.
pub fn key_extras(rule: &KeyRule, headers: &HeaderMap) -> Option<String> {
    if rule.is_empty() {
        return None;
    }
    let mut extras = String::new();
    let mut part = |kind: &str, name: &str, value: Option<&[u8]>| {
        extras.push_str(kind);
        extras.push_str(name);
        match value {
            None => extras.push_str("=-;"),
            Some(value) => {
                let value = String::from_utf8_lossy(value);
                let _ = write!(extras, "={}:{value};", value.len());
            }
        }
    };
    for name in &rule.headers {
        let joined = joined_values(headers, name);
        part("h:", name, joined.as_deref());
    }
    for name in &rule.cookies {
        part("c:", name, cookie(headers, name).map(str::as_bytes));
    }
    if rule.device {
        part("d:", "", Some(device_class(headers).as_bytes()));
    }
    Some(extras)
}

/// A field's lines joined by `, `; `None` when absent.
fn joined_values(headers: &HeaderMap, name: &str) -> Option<Vec<u8>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let mut joined = first.as_bytes().to_vec();
    for value in values {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(value.as_bytes());
    }
    Some(joined)
}

/// The cookies of a request, as `(name, value)` pairs, from every `Cookie` line.
fn cookies(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|line| line.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            Some((name.trim(), value.trim()))
        })
}

/// The value of the first cookie named `name`.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    cookies(headers).find(|(n, _)| *n == name).map(|(_, v)| v)
}

/// The `Cookie` line sent upstream when a rule ignores cookies: only those in the key (the
/// origin may answer by them; the key tells their values apart). `None`: no `Cookie` at all.
pub fn kept_cookies(headers: &HeaderMap, keyed: &[String]) -> Option<HeaderValue> {
    let kept: Vec<String> = cookies(headers)
        .filter(|(name, _)| keyed.iter().any(|k| k == name))
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    if kept.is_empty() {
        return None;
    }
    HeaderValue::from_str(&kept.join("; ")).ok()
}

/// The client's device class from its `User-Agent`: `mobile`, `tablet` or `desktop`.
pub fn device_class(headers: &HeaderMap) -> &'static str {
    let Some(agent) = headers.get(USER_AGENT).and_then(|v| v.to_str().ok()) else {
        return "desktop";
    };
    let agent = agent.to_ascii_lowercase();
    let has = |needle: &str| agent.contains(needle);
    if has("ipad") || has("tablet") || (has("android") && !has("mobile")) {
        "tablet"
    } else if has("mobi") || has("iphone") || has("android") {
        "mobile"
    } else {
        "desktop"
    }
}

/// Whether the origin stated a freshness of its own (`s-maxage`, `max-age` or `Expires`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginFreshness {
    Stated(Duration),
    Unstated,
}

/// How long a response may be stored under a rule, from what the cache decided without it
/// (`decided`): a forced TTL wins over the origin; a default (or the negative or error TTL,
/// by status) stands in when the origin stated none; the maximum caps it. What forbids
/// storing (`no-store`, `private` unless the rule caches it, an authenticated request, ...)
/// still does.
pub fn lifetime(
    rule: &Rule,
    status: StatusCode,
    origin: OriginFreshness,
    decided: Result<Duration, NotStorable>,
) -> Result<Duration, NotStorable> {
    let a = &rule.actions;
    match decided {
        Ok(_) | Err(NotStorable::NoFreshness) => {}
        Err(other) => return Err(other),
    }
    let by_status = match status.as_u16() {
        404 | 410 => a.negative_ttl,
        500 | 502 | 503 | 504 => a.error_ttl,
        _ => None,
    };
    let chosen = match (a.force_ttl, origin) {
        (Some(forced), _) => Ok(forced),
        (None, OriginFreshness::Stated(_)) => decided,
        (None, OriginFreshness::Unstated) => match by_status.or(a.default_ttl) {
            Some(ttl) => Ok(ttl),
            None => decided,
        },
    }?;
    let capped = a.max_ttl.map_or(chosen, |max| chosen.min(max));
    if capped.is_zero() && decided.is_err() {
        return decided;
    }
    Ok(capped)
}

#[cfg(test)]
mod tests;
