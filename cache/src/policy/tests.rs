//! Table-driven tests of the policy functions: header set in, decision out.

use super::directives::MAX_DELTA_SECONDS;
use super::*;
use http::header::IF_NONE_MATCH;
use http::HeaderValue;

mod age_and_dates;
mod cdn_cache_control;
mod properties;

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
    let max_age = |s| CacheControl {
        max_age: secs(s),
        ..Default::default()
    };
    let cases: &[(&str, CacheControl)] = &[
        ("max-age=60", max_age(60)),
        ("MAX-AGE=60", max_age(60)),
        ("max-age=\"60\"", max_age(60)),
        (
            "public, s-maxage=10",
            CacheControl {
                public: true,
                s_maxage: secs(10),
                ..Default::default()
            },
        ),
        ("max-age=abc", max_age(0)),
        ("max-age=-1", max_age(0)),
        ("max-age", max_age(0)),
        ("max-age=10, max-age=20", max_age(0)),
        ("max-age=10, max-age=10", max_age(10)),
        ("max-age=99999999999", max_age(MAX_DELTA_SECONDS)),
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
    let check =
        |method: &Method, req: &HeaderMap, status: StatusCode, resp: &[(&'static str, &str)]| {
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
    let targeted: [(&[(&str, &str)], _); 4] = [
        (
            &[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=60"),
            ],
            minute,
        ),
        (
            &[
                ("cache-control", "max-age=60"),
                ("cdn-cache-control", "no-store"),
            ],
            Err(NotStorable::NoStore),
        ),
        (
            &[
                ("cache-control", "private"),
                ("surrogate-control", "max-age=60"),
            ],
            minute,
        ),
        (
            &[
                ("surrogate-control", "max-age=10"),
                ("cdn-cache-control", "max-age=60"),
            ],
            minute,
        ),
    ];
    for (response, expected) in targeted {
        assert_eq!(check(&get, &none, ok, response), expected, "{response:?}");
    }
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
    let req = |line: &str| RequestDirectives::from_headers(&headers(&[("cache-control", line)]));
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
    let none = RequestDirectives::default();
    // Fresh for 1 s: `age` seconds old is `age - 1` seconds stale.
    let on_error = |line: &str, age: u64, request: &RequestDirectives| {
        may_serve_stale_on_error(
            &cc(line),
            Duration::from_secs(1),
            Duration::from_secs(age),
            request,
        )
    };
    assert!(on_error("max-age=1, stale-if-error=60", 30, &none));
    assert!(!on_error("max-age=1, stale-if-error=60", 90, &none));
    assert!(!on_error(
        "max-age=1, stale-if-error=60, must-revalidate",
        30,
        &none
    ));
    assert!(!on_error(
        "max-age=1, stale-if-error=60, no-cache",
        30,
        &none
    ));
    assert!(!on_error("max-age=1", 30, &none));
    let req = RequestDirectives::from_headers(&headers(&[("cache-control", "stale-if-error=100")]));
    assert!(on_error("max-age=1", 30, &req));
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
