//! `Cache-Control` and its CDN-targeted equivalents, parsed into the directives Verge acts on:
//! the response's ([`CacheControl`]) and the request's ([`RequestDirectives`]).
//!
//! `Cache-Control` and `Surrogate-Control` have the lenient HTTP list syntax; `CDN-Cache-Control`
//! is a structured-field dictionary (RFC 9213 §2, RFC 8941), parsed strictly: a field that is not
//! a valid dictionary is ignored whole, a member of the wrong type is ignored alone.

use std::time::Duration;

use http::header::{HeaderName, HeaderValue, CACHE_CONTROL, PRAGMA};
use http::HeaderMap;
use sfv::{BareItem, Dictionary, ListEntry, Parser, Version};

/// RFC 9213: cache directives aimed at CDNs, taking precedence over `Cache-Control`.
pub const CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");
/// The older Edge Architecture field with the same role.
pub const SURROGATE_CONTROL: HeaderName = HeaderName::from_static("surrogate-control");

/// Delta-seconds above this are taken as this (RFC 9111 §1.2.2).
pub(crate) const MAX_DELTA_SECONDS: u64 = 2_147_483_648;

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
    /// present and valid, else those of `Surrogate-Control`, else `Cache-Control`'s. A
    /// CDN-targeted field replaces `Cache-Control` entirely for this cache.
    pub fn for_response(headers: &HeaderMap) -> CacheControl {
        if let Some(cc) = CacheControl::from_cdn_cache_control(headers) {
            return cc;
        }
        if headers.contains_key(SURROGATE_CONTROL) {
            return CacheControl {
                from_cdn_field: true,
                ..CacheControl::from_lines(headers.get_all(SURROGATE_CONTROL))
            };
        }
        CacheControl::from_headers(headers)
    }

    /// The directives of `CDN-Cache-Control`, its lines joined into one dictionary (RFC 8941
    /// §4.2). `None` when the field is absent, empty or not a valid dictionary: RFC 9213 §2.2 then
    /// has the cache behave as if it were not there. Members of the wrong type (`max-age="60"`,
    /// `max-age=1.5`, `no-store=5`) are ignored one by one (§2.1); so are unknown ones,
    /// parameters, and a key given twice counts with its last value.
    pub fn from_cdn_cache_control(headers: &HeaderMap) -> Option<CacheControl> {
        let mut field = Vec::new();
        for line in headers.get_all(CDN_CACHE_CONTROL) {
            if !field.is_empty() {
                field.extend_from_slice(b", ");
            }
            field.extend_from_slice(line.as_bytes());
        }
        let dictionary: Dictionary = Parser::new(&field)
            .with_version(Version::Rfc8941)
            .parse()
            .ok()?;
        if dictionary.is_empty() {
            return None;
        }
        let mut cc = CacheControl {
            from_cdn_field: true,
            ..CacheControl::default()
        };
        for (name, member) in &dictionary {
            // No cache directive takes an inner list.
            if let ListEntry::Item(item) = member {
                cc.apply_member(name.as_str(), &item.bare_item);
            }
        }
        Some(cc)
    }

    /// One dictionary member: flags must be `true`, durations non-negative integers, field
    /// lists strings (RFC 9213 §2.1); anything else leaves the directive unset.
    fn apply_member(&mut self, name: &str, value: &BareItem) {
        let flag = value.as_boolean() == Some(true);
        let seconds = value
            .as_integer()
            .and_then(|n| u64::try_from(i64::from(n)).ok())
            .map(|n| Duration::from_secs(n.min(MAX_DELTA_SECONDS)));
        let fields = || {
            value
                .as_string()
                .map(|list| field_names(list.as_str()).collect::<Vec<_>>())
        };
        match name {
            "no-store" => self.no_store = flag,
            "no-cache" if flag => self.no_cache = true,
            "no-cache" => self.no_cache_fields = fields().unwrap_or_default(),
            "private" if flag => self.private = true,
            "private" => self.private_fields = fields().unwrap_or_default(),
            "public" => self.public = flag,
            "must-revalidate" => self.must_revalidate = flag,
            "proxy-revalidate" => self.proxy_revalidate = flag,
            "max-age" => self.max_age = seconds,
            "s-maxage" => self.s_maxage = seconds,
            "stale-while-revalidate" => self.stale_while_revalidate = seconds,
            "stale-if-error" => self.stale_if_error = seconds,
            _ => {}
        }
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

pub(crate) fn parse_delta(text: &str) -> Option<Duration> {
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
