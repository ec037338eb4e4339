use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode};
use proptest::prelude::*;
use verge_config::rules::RuleSet;
use verge_config::EdgeConfig;

use super::*;

fn rules(toml: &str) -> RuleSet {
    let config = EdgeConfig::from_toml(&format!(
        "[edge]\n[upstream]\norigin = \"http://127.0.0.1:9\"\n{toml}"
    ))
    .unwrap();
    (*config.cache.rules).clone()
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn found(set: &RuleSet, host: &str, path: &str, method: &str, h: &HeaderMap) -> Option<String> {
    let view = RequestView {
        host,
        path,
        method,
        headers: h,
    };
    find(set, view).map(|rule| rule.name.clone())
}

#[test]
fn the_first_matching_rule_applies() {
    let set = rules(
        r#"
[[rules]]
name = "gold"
request_header = { name = "x-tier", value = "gold" }
[[rules]]
name = "img"
host = "img.example.com"
path = "/a/*.png"
[[rules]]
name = "sub"
host = "*.example.com"
methods = ["GET"]
[[rules]]
name = "static"
path = "/static/"
"#,
    );
    let none = HeaderMap::new();
    let cases = [
        ("img.example.com", "/a/b/c.png", "GET", "img"),
        ("IMG.Example.com:8080", "/a/x.png", "HEAD", "img"),
        ("img.example.com.", "/a/x.png", "GET", "img"),
        ("img.example.com", "/a/x.jpg", "GET", "sub"),
        ("www.example.com", "/", "GET", "sub"),
        ("www.example.com", "/static/x", "POST", "static"),
        ("example.com", "/static/x", "GET", "static"),
    ];
    for (host, path, method, want) in cases {
        assert_eq!(
            found(&set, host, path, method, &none).as_deref(),
            Some(want),
            "{host} {path} {method}"
        );
    }
    assert_eq!(found(&set, "example.com", "/other", "GET", &none), None);
    assert_eq!(found(&set, "notexample.com", "/x", "GET", &none), None);
    let gold = headers(&[("x-tier", "GOLD")]);
    assert_eq!(
        found(&set, "a.test", "/x", "GET", &gold).as_deref(),
        Some("gold")
    );
    let silver = headers(&[("x-tier", "silver")]);
    assert_eq!(found(&set, "a.test", "/x", "GET", &silver), None);
}

#[test]
fn tracking_parameters_are_dropped_and_the_rest_sorted() {
    let set = rules("[[rules]]\nquery = { drop = [\"utm_*\", \"fbclid\"], sort = true }\n");
    let q = &set.rules[0].actions.query;
    assert_eq!(normalise_query("utm_source=x&a=1", q), "a=1");
    assert_eq!(normalise_query("a=1", q), "a=1");
    assert_eq!(
        normalise_query("b=2&fbclid=z&a=1&utm_medium=m", q),
        "a=1&b=2"
    );
    assert_eq!(normalise_query("utm_source=x", q), "");
    // Repeated names keep their order.
    assert_eq!(normalise_query("b=2&a=2&a=1", q), "a=2&a=1&b=2");
    let keep = rules("[[rules]]\nquery = { keep = [\"id\", \"page*\"] }\n");
    let q = &keep.rules[0].actions.query;
    assert_eq!(
        normalise_query("x=1&id=7&pageSize=3&y", q),
        "id=7&pageSize=3"
    );
}

#[test]
fn key_extras_tell_every_value_apart() {
    let set = rules(
        "[[rules]]\nkey = { headers = [\"x-a\", \"x-b\"], cookies = [\"lang\"], device = true }\n",
    );
    let key = &set.rules[0].actions.key;
    let of = |pairs: &[(&str, &str)]| key_extras(key, &headers(pairs)).unwrap();
    let a = of(&[("x-a", "1;h:x-b=1:2")]);
    let b = of(&[("x-a", "1"), ("x-b", "2")]);
    assert_ne!(a, b);
    assert_ne!(of(&[]), of(&[("x-a", "")]));
    assert_eq!(
        of(&[("cookie", "a=1; lang=fr")]),
        of(&[("cookie", "lang=fr"), ("cookie", "b=2")])
    );
    assert_ne!(of(&[("cookie", "lang=fr")]), of(&[("cookie", "lang=de")]));
    assert_ne!(
        of(&[(
            "user-agent",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0) Mobile"
        )]),
        of(&[("user-agent", "Mozilla/5.0 (X11; Linux x86_64)")])
    );
    let plain = rules("[[rules]]\npath = \"/\"\n");
    assert_eq!(
        key_extras(&plain.rules[0].actions.key, &HeaderMap::new()),
        None
    );
}

#[test]
fn device_classes() {
    let class = |ua: &str| device_class(&headers(&[("user-agent", ua)]));
    assert_eq!(
        class("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148"),
        "mobile"
    );
    assert_eq!(
        class("Mozilla/5.0 (Linux; Android 14; Pixel 8) Mobile Safari/537.36"),
        "mobile"
    );
    assert_eq!(
        class("Mozilla/5.0 (Linux; Android 13; SM-X700) Safari/537.36"),
        "tablet"
    );
    assert_eq!(
        class("Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X)"),
        "tablet"
    );
    assert_eq!(
        class("Mozilla/5.0 (Windows NT 10.0; Win64; x64)"),
        "desktop"
    );
    assert_eq!(device_class(&HeaderMap::new()), "desktop");
}

#[test]
fn only_keyed_cookies_go_upstream_when_cookies_are_ignored() {
    let h = headers(&[
        ("cookie", "session=secret; lang=fr"),
        ("cookie", "theme=dark"),
    ]);
    assert_eq!(kept_cookies(&h, &["lang".to_string()]).unwrap(), "lang=fr");
    assert_eq!(kept_cookies(&h, &[]), None);
}

#[test]
fn rule_ttls_against_what_the_origin_says() {
    let secs = Duration::from_secs;
    let set = rules(
        r#"
[[rules]]
name = "default"
path = "/d/"
default_ttl = "1h"
max_ttl = "2h"
negative_ttl = "30s"
error_ttl = "5s"
[[rules]]
name = "forced"
path = "/f/"
force_ttl = "10m"
"#,
    );
    let (default, forced) = (&set.rules[0], &set.rules[1]);
    let ok = StatusCode::OK;
    let stated = |s| OriginFreshness::Stated(secs(s));
    let unstated = OriginFreshness::Unstated;
    let no_fresh = Err(NotStorable::NoFreshness);
    // The origin's own freshness stands, capped by the maximum.
    assert_eq!(
        lifetime(default, ok, stated(60), Ok(secs(60))),
        Ok(secs(60))
    );
    assert_eq!(
        lifetime(default, ok, stated(86400), Ok(secs(86400))),
        Ok(secs(7200))
    );
    // None stated: the default, in place of the heuristic too.
    assert_eq!(lifetime(default, ok, unstated, no_fresh), Ok(secs(3600)));
    assert_eq!(lifetime(default, ok, unstated, Ok(secs(5))), Ok(secs(3600)));
    // Negative and error TTLs by status.
    let not_found = StatusCode::NOT_FOUND;
    assert_eq!(
        lifetime(default, not_found, unstated, no_fresh),
        Ok(secs(30))
    );
    let unavailable = StatusCode::SERVICE_UNAVAILABLE;
    assert_eq!(
        lifetime(default, unavailable, unstated, no_fresh),
        Ok(secs(5))
    );
    // Forced whatever the origin says, even max-age=0.
    assert_eq!(lifetime(forced, ok, stated(0), Ok(secs(0))), Ok(secs(600)));
    assert_eq!(
        lifetime(forced, ok, stated(86400), Ok(secs(86400))),
        Ok(secs(600))
    );
    // What forbids storing still does.
    for reason in [
        NotStorable::NoStore,
        NotStorable::Private,
        NotStorable::SetCookie,
    ] {
        assert_eq!(lifetime(forced, ok, stated(60), Err(reason)), Err(reason));
    }
    // A rule without TTLs changes nothing.
    let plain = rules("[[rules]]\npath = \"/\"\n");
    assert_eq!(lifetime(&plain.rules[0], ok, unstated, no_fresh), no_fresh);
    assert_eq!(
        lifetime(&plain.rules[0], ok, stated(9), Ok(secs(9))),
        Ok(secs(9))
    );
}

proptest! {
    #[test]
    fn a_normalised_query_is_stable_and_keeps_no_dropped_parameter(
        params in proptest::collection::vec(("(utm_[a-z]{1,3}|[a-c]{1,2}|fbclid)", "[a-z0-9]{0,3}"), 0..8),
    ) {
        let set = rules("[[rules]]\nquery = { drop = [\"utm_*\", \"fbclid\"], sort = true }\n");
        let q = &set.rules[0].actions.query;
        let query: Vec<String> = params.iter().map(|(n, v)| format!("{n}={v}")).collect();
        let once = normalise_query(&query.join("&"), q).into_owned();
        prop_assert_eq!(normalise_query(&once, q).into_owned(), once.clone());
        prop_assert!(!once.contains("utm_") && !once.contains("fbclid"));
    }

    #[test]
    fn different_field_values_give_different_keys(a in "[ -~]{0,12}", b in "[ -~]{0,12}") {
        let set = rules("[[rules]]\nkey = { headers = [\"x-a\", \"x-b\"] }\n");
        let key = &set.rules[0].actions.key;
        let one = key_extras(key, &headers(&[("x-a", &a)]));
        let two = key_extras(key, &headers(&[("x-a", &b)]));
        prop_assert_eq!(one == two, a == b);
    }

    #[test]
    fn the_host_index_finds_the_rule_trying_every_rule_would(
        picks in proptest::collection::vec((0usize..6, 0usize..3), 9..30),
        host in "(www|img|a\\.b)\\.(Example|example)\\.(com|net)(:8080)?\\.?",
        path in "/(static|img|x)/[a-z]{0,3}",
        sent in proptest::collection::vec((0usize..5, 0usize..30), 0..6),
    ) {
        let hosts = [None, Some("www.example.com"), Some("img.example.net"), Some("*.example.com"),
            Some("*.b.example.net"), Some("*.net")];
        let paths = ["/", "/static/", "/img/*"];
        let mut toml = String::new();
        for (i, (h, p)) in picks.iter().enumerate() {
            toml.push_str("[[rules]]\n");
            if let Some(h) = hosts[*h] {
                toml.push_str(&format!("host = \"{h}\"\n"));
            }
            // A field of its own, so that no rule makes a later one dead.
            toml.push_str(&format!(
                "path = \"{}\"\nrequest_header = {{ name = \"x-r{}\", value = \"v{i}\" }}\n",
                paths[*p],
                i % 5
            ));
        }
        let set = rules(&toml);
        let fields: Vec<(String, String)> =
            sent.iter().map(|(n, v)| (format!("x-r{n}"), format!("v{v}"))).collect();
        let fields: Vec<(&str, &str)> =
            fields.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let sent = headers(&fields);
        let view = RequestView { host: &host, path: &path, method: "GET", headers: &sent };
        let indexed = find(&set, view).map(|r| r.name.clone());
        let linear = linear(&set, bare_host(&host), view).map(|r| r.name.clone());
        prop_assert_eq!(indexed, linear);
    }

    #[test]
    fn any_request_is_matched_without_panic(host in "\\PC{0,30}", path in "\\PC{0,30}") {
        let set = rules("[[rules]]\nhost = \"*.a.test\"\npath = \"/x/*/y?\"\n");
        let _ = found(&set, &host, &path, "GET", &HeaderMap::new());
    }
}
