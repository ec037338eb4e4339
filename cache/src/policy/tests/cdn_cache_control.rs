//! `CDN-Cache-Control` as a structured-field dictionary (RFC 9213, RFC 8941), and the fields it
//! falls back to when it is invalid.

use super::*;

#[test]
fn cdn_cache_control_is_read_as_a_structured_dictionary() {
    let secs = |s| Some(Duration::from_secs(s));
    let targeted = |fields: CacheControl| CacheControl {
        from_cdn_field: true,
        ..fields
    };
    let max_age = |s| {
        targeted(CacheControl {
            max_age: secs(s),
            ..Default::default()
        })
    };
    let nothing = targeted(CacheControl::default());
    let cases: &[(&[&str], CacheControl)] = &[
        (&["max-age=60"], max_age(60)),
        (&["max-age=60;unknown=param"], max_age(60)),
        (&["max-age=60; public"], max_age(60)),
        (&["max-age=10, max-age=60"], max_age(60)),
        (&["max-age=99999999999"], max_age(MAX_DELTA_SECONDS)),
        (
            &["no-store, must-revalidate, public, s-maxage=5"],
            targeted(CacheControl {
                no_store: true,
                must_revalidate: true,
                public: true,
                s_maxage: secs(5),
                ..Default::default()
            }),
        ),
        (
            &["max-age=60", "private=\"Set-Cookie, x\""],
            targeted(CacheControl {
                max_age: secs(60),
                private_fields: vec!["set-cookie".into(), "x".into()],
                ..Default::default()
            }),
        ),
        (
            &["no-cache, stale-while-revalidate=30, stale-if-error=60"],
            targeted(CacheControl {
                no_cache: true,
                stale_while_revalidate: secs(30),
                stale_if_error: secs(60),
                ..Default::default()
            }),
        ),
        // Members of the wrong type are ignored, one by one.
        (&["max-age=\"60\""], nothing.clone()),
        (&["max-age=1.5"], nothing.clone()),
        (&["max-age=-1"], nothing.clone()),
        (&["max-age=sixty"], nothing.clone()),
        (&["max-age=(60)"], nothing.clone()),
        (&["max-age"], nothing.clone()),
        (&["max-age=:YWJj:"], nothing.clone()),
        (&["no-store=5"], nothing.clone()),
        (&["no-store=?0"], nothing.clone()),
        (&["no-store=\"yes\", max-age=60"], max_age(60)),
        (&["private=set-cookie, max-age=60"], max_age(60)),
        (&["public=?1, s-maxage=1.0, max-age=60"], {
            let mut cc = max_age(60);
            cc.public = true;
            cc
        }),
    ];
    for (lines, want) in cases {
        let pairs: Vec<(&'static str, &str)> =
            lines.iter().map(|l| ("cdn-cache-control", *l)).collect();
        assert_eq!(
            CacheControl::from_cdn_cache_control(&headers(&pairs)).as_ref(),
            Some(want),
            "{lines:?}"
        );
    }
}

#[test]
fn an_invalid_cdn_cache_control_is_ignored_whole() {
    for invalid in [
        "",
        "MAX-AGE=60",
        "max-age=60,",
        "max-age = 60",
        "max-age=60 public",
        "max-age=60, private=\"unterminated",
        "max-age=60, private=\"a\\b\"",
        "max-age=1234567890123456",
        "max-age=60, @date=1",
        "max-age=60, x=@1659578233",
        "max-age=60, x=%\"display\"",
        "max-age=60, no-cache=\"é\"",
    ] {
        let h = headers(&[
            ("cdn-cache-control", invalid),
            ("cache-control", "max-age=5"),
        ]);
        assert_eq!(
            CacheControl::from_cdn_cache_control(&h),
            None,
            "{invalid:?}"
        );
        let cc = CacheControl::for_response(&h);
        assert_eq!(
            (cc.max_age, cc.from_cdn_field),
            (Some(Duration::from_secs(5)), false),
            "falls back to Cache-Control: {invalid:?}"
        );
        let with_surrogate = headers(&[
            ("cdn-cache-control", invalid),
            ("surrogate-control", "max-age=7"),
            ("cache-control", "max-age=5"),
        ]);
        let cc = CacheControl::for_response(&with_surrogate);
        assert_eq!(
            (cc.max_age, cc.from_cdn_field),
            (Some(Duration::from_secs(7)), true),
            "or to Surrogate-Control: {invalid:?}"
        );
    }
    let one_bad_line = headers(&[
        ("cdn-cache-control", "max-age=60"),
        ("cdn-cache-control", "no-store,,"),
    ]);
    assert_eq!(CacheControl::from_cdn_cache_control(&one_bad_line), None);
}

#[test]
fn surrogate_and_cache_control_keep_their_lenient_syntax() {
    let h = headers(&[("surrogate-control", "MAX-AGE=\"60\"")]);
    let cc = CacheControl::for_response(&h);
    assert_eq!(
        (cc.max_age, cc.from_cdn_field),
        (Some(Duration::from_secs(60)), true)
    );
}
