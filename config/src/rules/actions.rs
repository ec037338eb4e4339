//! The actions of a rule (`[[rules]]` keys other than its match): TTLs, bypass, cookies, the
//! query and key, response fields — read and checked, each problem named by rule and key.

use std::time::Duration;

use crate::error::Collector;
use crate::units::parse_duration;

use super::{field_name, Actions, Glob, KeyRule, QueryRule, RawRule};

pub(super) fn validate_actions(
    c: &mut Collector,
    at: &dyn Fn(&str) -> String,
    raw: RawRule,
) -> Option<Actions> {
    let shapes_key = raw.query.is_some() || raw.key.is_some();
    let mut ttl = |key: &str, value: Option<String>| -> Option<Duration> {
        let text = value?;
        c.take(&at(key), parse_duration(&text))
    };
    let default_ttl = ttl("default_ttl", raw.default_ttl);
    let force_ttl = ttl("force_ttl", raw.force_ttl);
    let max_ttl = ttl("max_ttl", raw.max_ttl);
    let stale_while_revalidate = ttl("stale_while_revalidate", raw.stale_while_revalidate);
    let stale_if_error = ttl("stale_if_error", raw.stale_if_error);
    let negative_ttl = ttl("negative_ttl", raw.negative_ttl);
    let error_ttl = ttl("error_ttl", raw.error_ttl);
    let bypass = raw.bypass.unwrap_or(false);
    let caching = [
        ("default_ttl", default_ttl.is_some()),
        ("force_ttl", force_ttl.is_some()),
        ("max_ttl", max_ttl.is_some()),
        ("stale_while_revalidate", stale_while_revalidate.is_some()),
        ("stale_if_error", stale_if_error.is_some()),
        ("negative_ttl", negative_ttl.is_some()),
        ("error_ttl", error_ttl.is_some()),
        ("cache_private", raw.cache_private == Some(true)),
        ("strip_set_cookie", raw.strip_set_cookie == Some(true)),
        ("query and key", shapes_key),
    ];
    if bypass {
        for (key, set) in caching {
            if set {
                c.push(
                    &at("bypass"),
                    format!("conflicts with {key}: a bypassed request is never stored"),
                );
            }
        }
    }
    if let (Some(_), Some(_)) = (default_ttl, force_ttl) {
        c.push(
            &at("force_ttl"),
            "conflicts with default_ttl: a forced TTL applies whatever the origin says, so the \
             default would never be used",
        );
    }
    if let Some(max) = max_ttl {
        for (key, value) in [("default_ttl", default_ttl), ("force_ttl", force_ttl)] {
            if value.is_some_and(|v| v > max) {
                c.push(
                    &at(key),
                    format!("is longer than max_ttl ({}s)", max.as_secs()),
                );
            }
        }
    }
    let query = raw.query.unwrap_or_default();
    if query.drop.is_some() && query.keep.is_some() {
        c.push(
            &at("query.keep"),
            "conflicts with query.drop: keep only the listed parameters, or drop the listed ones",
        );
    }
    let mut globs = |key: &str, list: Option<Vec<String>>| -> Option<Vec<Glob>> {
        let list = list?;
        Some(
            list.iter()
                .filter_map(|name| c.take(&at(key), query_pattern(name)))
                .collect(),
        )
    };
    let drop = globs("query.drop", query.drop).unwrap_or_default();
    let keep = globs("query.keep", query.keep);
    let key = raw.key.unwrap_or_default();
    let key_headers = key
        .headers
        .unwrap_or_default()
        .iter()
        .filter_map(|h| c.take(&at("key.headers"), field_name(h)))
        .collect();
    let key_cookies = key
        .cookies
        .unwrap_or_default()
        .into_iter()
        .filter_map(|name| c.take(&at("key.cookies"), cookie_name(name)))
        .collect();
    let headers = raw.response_headers.unwrap_or_default();
    let add_response_headers = headers
        .add
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(name, value)| {
            let key = format!("response_headers.add.{name}");
            let name = c.take(&at(&key), field_name(&name))?;
            if http::HeaderValue::from_str(&value).is_err() {
                c.push(&at(&key), format!("{value:?} is not a valid field value"));
                return None;
            }
            Some((name, value))
        })
        .collect();
    let remove_response_headers = headers
        .remove
        .unwrap_or_default()
        .iter()
        .filter_map(|h| c.take(&at("response_headers.remove"), field_name(h)))
        .collect();
    Some(Actions {
        bypass,
        default_ttl,
        force_ttl,
        max_ttl,
        stale_while_revalidate,
        stale_if_error,
        cache_private: raw.cache_private.unwrap_or(false),
        strip_set_cookie: raw.strip_set_cookie.unwrap_or(false),
        ignore_cookies: raw.ignore_cookies.unwrap_or(false),
        negative_ttl,
        error_ttl,
        query: QueryRule {
            drop,
            keep,
            sort: query.sort.unwrap_or(false),
        },
        key: KeyRule {
            headers: key_headers,
            cookies: key_cookies,
            device: key.device.unwrap_or(false),
        },
        add_response_headers,
        remove_response_headers,
    })
}

pub(super) fn query_pattern(text: &str) -> Result<Glob, String> {
    if text.is_empty() || text.contains(['&', '=', '#', ' ']) {
        return Err(format!(
            "{text:?} is not a query parameter name (wildcards '*' and '?' allowed)"
        ));
    }
    Ok(Glob::new(text))
}

fn cookie_name(text: String) -> Result<String, String> {
    if text.is_empty()
        || !text
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
    {
        return Err(format!("{text:?} is not a valid cookie name"));
    }
    Ok(text)
}
