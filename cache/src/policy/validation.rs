//! Validation: clients' conditional requests answered from cache, and the cache's own
//! revalidation of stored responses (RFC 9110 §13, RFC 9111 §3.2 and §4.3).

use http::header::{
    HeaderName, HeaderValue, AGE, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, ETAG,
    IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED,
};
use http::HeaderMap;

use super::parse_date;

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
