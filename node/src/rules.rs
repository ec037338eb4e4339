//! The operator's cache rules (`[[rules]]`) on the request path: which rule a request
//! matches, the request and key it makes of it, the lifetime it gives a response, and its
//! marks on the answer (`Cache-Status` `rule=NAME`, response fields, a metric per rule). The
//! decisions themselves are the cache's ([`verge_cache::rules`]).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::{HeaderName, HeaderValue, COOKIE, HOST, SET_COOKIE};
use http::{request, HeaderMap, Method, Request, Response, StatusCode, Uri};
use verge_cache::policy::{self, RequestDirectives};
use verge_cache::rules::{self as decide, OriginFreshness, RequestView};
use verge_cache::{CacheControl, CacheKey, NotStorable};
use verge_config::rules::{Rule, RuleSet};

use crate::headers::CACHE_STATUS;

/// The field that tells the origin the device class a rule keys on.
pub static DEVICE_CLASS: HeaderName = HeaderName::from_static("x-device-class");

/// The rule a request matches, if any.
pub(crate) fn rule_for<B>(rules: &RuleSet, request: &Request<B>) -> Option<Arc<Rule>> {
    if rules.is_empty() {
        return None;
    }
    let host = request
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| request.headers().get(HOST).and_then(|h| h.to_str().ok()))
        .unwrap_or_default();
    decide::find(
        rules,
        RequestView {
            host,
            path: request.uri().path(),
            method: request.method().as_str(),
            headers: request.headers(),
        },
    )
}

/// Rewrites a cacheable request as the rule keys it, so that what goes upstream is what the
/// key names: the normalised query, only the keyed cookies when cookies are ignored, and the
/// device class when it is part of the key.
pub(crate) fn rewrite_request(parts: &mut request::Parts, rule: &Rule) {
    let actions = &rule.actions;
    if let Some(query) = parts.uri.query() {
        if let Cow::Owned(normalised) = decide::normalise_query(query, &actions.query) {
            if let Some(uri) = with_query(&parts.uri, &normalised) {
                parts.uri = uri;
            }
        }
    }
    if actions.ignore_cookies && parts.headers.contains_key(COOKIE) {
        let kept = decide::kept_cookies(&parts.headers, &actions.key.cookies);
        parts.headers.remove(COOKIE);
        if let Some(kept) = kept {
            parts.headers.insert(COOKIE, kept);
        }
    }
    if actions.key.device {
        let class = decide::device_class(&parts.headers);
        parts
            .headers
            .insert(DEVICE_CLASS.clone(), HeaderValue::from_static(class));
    }
}

/// `uri` with its query replaced (removed when empty).
fn with_query(uri: &Uri, query: &str) -> Option<Uri> {
    let path_and_query = if query.is_empty() {
        uri.path().to_string()
    } else {
        format!("{}?{query}", uri.path())
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().ok()?);
    Uri::from_parts(parts).ok()
}

/// The key of a request under its rule: the URL's key, with what the rule adds to it.
pub(crate) fn key_for(key: CacheKey, rule: Option<&Rule>, headers: &HeaderMap) -> CacheKey {
    match rule.and_then(|rule| decide::key_extras(&rule.actions.key, headers)) {
        Some(extras) => key.with_extras(&extras),
        None => key,
    }
}

/// How long a response may be stored, with the rule's say; `cc` may gain the rule's stale
/// windows.
pub(crate) fn storable_lifetime(
    rule: Option<&Rule>,
    request: (&HeaderMap, &RequestDirectives),
    (status, headers): (StatusCode, &HeaderMap),
    cc: &mut CacheControl,
    response_time: SystemTime,
) -> Result<Duration, NotStorable> {
    let check = |cc: &CacheControl| {
        policy::storability(
            &Method::GET,
            request.0,
            request.1,
            status,
            headers,
            cc,
            response_time,
        )
    };
    let Some(rule) = rule else {
        return check(cc);
    };
    let actions = &rule.actions;
    let decided = if actions.cache_private && cc.private {
        check(&CacheControl {
            private: false,
            ..cc.clone()
        })
    } else {
        check(cc)
    };
    let origin = match policy::freshness_lifetime(cc, headers, response_time) {
        Some(stated) => OriginFreshness::Stated(stated),
        None => OriginFreshness::Unstated,
    };
    let lifetime = decide::lifetime(rule, status, origin, decided)?;
    if cc.stale_while_revalidate.is_none() {
        cc.stale_while_revalidate = actions.stale_while_revalidate;
    }
    if cc.stale_if_error.is_none() {
        cc.stale_if_error = actions.stale_if_error;
    }
    Ok(lifetime)
}

/// Whether a storable response's `Set-Cookie` keeps it from being stored: unless the rule
/// strips it, in which case it is removed here.
pub(crate) fn set_cookie_blocks(rule: Option<&Rule>, headers: &mut HeaderMap) -> bool {
    if !headers.contains_key(SET_COOKIE) {
        return false;
    }
    if rule.is_some_and(|rule| rule.actions.strip_set_cookie) {
        headers.remove(SET_COOKIE);
        return false;
    }
    true
}

/// The rule's marks on an answer: the fields it removes and adds, and `rule=NAME` on this
/// cache's `Cache-Status` entry (the last one).
pub(crate) fn mark_response<B>(rule: &Rule, response: &mut Response<B>) {
    let headers = response.headers_mut();
    for name in &rule.actions.remove_response_headers {
        headers.remove(name.as_str());
    }
    for (name, value) in &rule.actions.add_response_headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
    let marked = match headers.get(&CACHE_STATUS).map(HeaderValue::as_bytes) {
        Some(entries) => [entries, b"; rule=", rule.name.as_bytes()].concat(),
        None => return,
    };
    if let Ok(value) = HeaderValue::from_bytes(&marked) {
        headers.insert(CACHE_STATUS.clone(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_normalised_query_replaces_the_target_s_own() {
        let uri: Uri = "http://a.test/p?x=1&utm_source=y".parse().unwrap();
        assert_eq!(
            with_query(&uri, "x=1").unwrap().to_string(),
            "http://a.test/p?x=1"
        );
        let origin_form: Uri = "/p?utm_source=y".parse().unwrap();
        assert_eq!(with_query(&origin_form, "").unwrap().to_string(), "/p");
    }
}
