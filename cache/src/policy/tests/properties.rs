//! Property tests of the parsers that read what origins and clients send: `Cache-Control`,
//! `CDN-Cache-Control` and `Surrogate-Control` directives, `Age`, and HTTP dates.

use proptest::prelude::*;

use super::*;

/// Header values made of the pieces directive parsing cares about, so cases get past the first
/// invalid byte and into quoting, numbers and structured-field types.
fn directive_soup() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just("max-age"),
        Just("s-maxage"),
        Just("no-cache"),
        Just("private"),
        Just("no-store"),
        Just("stale-if-error"),
        Just("max-stale"),
        Just("MAX-AGE"),
        Just("="),
        Just(","),
        Just(";"),
        Just("\""),
        Just("\\"),
        Just(" "),
        Just("\t"),
        Just("?1"),
        Just("?0"),
        Just("("),
        Just(")"),
        Just(":"),
        Just("*"),
        Just("@"),
        Just("%"),
        Just("-"),
        Just("."),
        Just("60"),
        Just("99999999999999999999"),
        Just("1.5"),
        Just("x"),
        Just("é"),
    ];
    prop::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat().into_bytes())
}

/// One to three header lines, each soup or arbitrary bytes.
fn header_lines() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let line = prop_oneof![directive_soup(), prop::collection::vec(any::<u8>(), 0..48),];
    prop::collection::vec(line, 1..4)
}

/// `lines` under `name`, skipping byte strings no `HeaderValue` can hold.
fn header_map(name: &'static str, lines: &[Vec<u8>]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for line in lines {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            h.append(name, value);
        }
    }
    h
}

fn assert_bounded(cc: &CacheControl) {
    let max = Duration::from_secs(MAX_DELTA_SECONDS);
    for d in [
        cc.max_age,
        cc.s_maxage,
        cc.stale_while_revalidate,
        cc.stale_if_error,
    ]
    .into_iter()
    .flatten()
    {
        assert!(d <= max, "{cc:?}");
    }
}

/// Response directives that both syntaxes can state: a field list only without the bare form
/// (a dictionary has one value per key), durations within delta-seconds.
fn response_directives() -> impl Strategy<Value = CacheControl> {
    let seconds = prop::option::of((0..=MAX_DELTA_SECONDS).prop_map(Duration::from_secs));
    let fields = prop::collection::vec("[a-z][a-z0-9-]{0,8}", 1..4);
    let qualified = prop_oneof![
        Just((false, Vec::new())),
        Just((true, Vec::new())),
        fields.prop_map(|f| (false, f)),
    ];
    (
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
        (qualified.clone(), qualified),
        (seconds.clone(), seconds.clone(), seconds.clone(), seconds),
    )
        .prop_map(
            |(
                (no_store, public, must_revalidate, proxy_revalidate),
                ((no_cache, no_cache_fields), (private, private_fields)),
                (max_age, s_maxage, stale_while_revalidate, stale_if_error),
            )| CacheControl {
                no_store,
                no_cache,
                no_cache_fields,
                private,
                private_fields,
                public,
                must_revalidate,
                proxy_revalidate,
                max_age,
                s_maxage,
                stale_while_revalidate,
                stale_if_error,
                from_cdn_field: false,
            },
        )
}

/// The directives of `cc`, one string each, in the syntax both fields share.
fn render(cc: &CacheControl) -> Vec<String> {
    let mut out = Vec::new();
    let flags = [
        ("no-store", cc.no_store),
        ("no-cache", cc.no_cache),
        ("private", cc.private),
        ("public", cc.public),
        ("must-revalidate", cc.must_revalidate),
        ("proxy-revalidate", cc.proxy_revalidate),
    ];
    out.extend(
        flags
            .iter()
            .filter(|(_, on)| *on)
            .map(|(n, _)| n.to_string()),
    );
    for (name, fields) in [
        ("no-cache", &cc.no_cache_fields),
        ("private", &cc.private_fields),
    ] {
        if !fields.is_empty() {
            out.push(format!("{name}=\"{}\"", fields.join(", ")));
        }
    }
    for (name, value) in [
        ("max-age", cc.max_age),
        ("s-maxage", cc.s_maxage),
        ("stale-while-revalidate", cc.stale_while_revalidate),
        ("stale-if-error", cc.stale_if_error),
    ] {
        if let Some(d) = value {
            out.push(format!("{name}={}", d.as_secs()));
        }
    }
    out
}

/// Directives with their rendering, shuffled.
fn rendered_directives() -> impl Strategy<Value = (CacheControl, Vec<String>)> {
    response_directives().prop_flat_map(|cc| {
        let parts = render(&cc);
        (Just(cc), Just(parts).prop_shuffle())
    })
}

proptest! {
    #[test]
    fn no_header_value_makes_the_directive_parsers_panic(lines in header_lines()) {
        for name in ["cache-control", "cdn-cache-control", "surrogate-control", "pragma"] {
            let h = header_map(name, &lines);
            let response = CacheControl::for_response(&h);
            assert_bounded(&response);
            assert_bounded(&CacheControl::from_headers(&h));
            if let Some(targeted) = CacheControl::from_cdn_cache_control(&h) {
                prop_assert!(targeted.from_cdn_field);
                assert_bounded(&targeted);
            }
            let request = RequestDirectives::from_headers(&h);
            for d in [request.max_age, request.min_fresh, request.stale_if_error]
                .into_iter()
                .flatten()
            {
                prop_assert!(d <= Duration::from_secs(MAX_DELTA_SECONDS));
            }
        }
    }

    #[test]
    fn rendered_cache_control_parses_back(
        (cc, parts) in rendered_directives(),
        upper in any::<bool>(),
        separator in prop::sample::select(vec![",", ", ", " ,\t", ",, "]),
    ) {
        let mut line = parts.join(separator);
        if upper {
            line = line.to_ascii_uppercase();
        }
        let h = header_map("cache-control", &[line.into_bytes()]);
        prop_assert_eq!(CacheControl::from_headers(&h), cc);
    }

    #[test]
    fn rendered_cdn_cache_control_parses_back(
        (cc, parts) in rendered_directives(),
        split in any::<prop::sample::Index>(),
    ) {
        // Split over two lines, which a structured field joins back into one dictionary.
        let at = split.index(parts.len() + 1);
        let (first, second) = parts.split_at(at);
        let lines: Vec<Vec<u8>> = [first, second]
            .iter()
            .filter(|part| !part.is_empty())
            .map(|part| part.join(", ").into_bytes())
            .collect();
        let h = header_map("cdn-cache-control", &lines);
        let want = CacheControl { from_cdn_field: true, ..cc };
        if parts.is_empty() {
            // An empty field is ignored.
            prop_assert_eq!(CacheControl::from_cdn_cache_control(&h), None);
        } else {
            prop_assert_eq!(CacheControl::from_cdn_cache_control(&h), Some(want.clone()));
            prop_assert_eq!(CacheControl::for_response(&h), want);
        }
    }

    #[test]
    fn rendered_request_directives_parse_back(
        max_age in prop::option::of(0..=MAX_DELTA_SECONDS),
        max_stale in prop::option::of(prop::option::of(0..=MAX_DELTA_SECONDS)),
        min_fresh in prop::option::of(0..=MAX_DELTA_SECONDS),
        stale_if_error in prop::option::of(0..=MAX_DELTA_SECONDS),
        (no_cache, no_store, only_if_cached) in (any::<bool>(), any::<bool>(), any::<bool>()),
    ) {
        let mut parts = Vec::new();
        let mut number = |name: &str, value: Option<u64>| {
            if let Some(n) = value {
                parts.push(format!("{name}={n}"));
            }
        };
        number("max-age", max_age);
        number("min-fresh", min_fresh);
        number("stale-if-error", stale_if_error);
        match max_stale {
            Some(Some(n)) => parts.push(format!("max-stale={n}")),
            Some(None) => parts.push("max-stale".to_string()),
            None => {}
        }
        for (name, on) in [
            ("no-cache", no_cache),
            ("no-store", no_store),
            ("only-if-cached", only_if_cached),
        ] {
            if on {
                parts.push(name.to_string());
            }
        }
        let h = header_map("cache-control", &[parts.join(", ").into_bytes()]);
        let secs = |n: Option<u64>| n.map(Duration::from_secs);
        prop_assert_eq!(
            RequestDirectives::from_headers(&h),
            RequestDirectives {
                max_age: secs(max_age),
                max_stale: max_stale.map(|n| secs(n).unwrap_or(Duration::MAX)),
                min_fresh: secs(min_fresh),
                no_cache,
                no_store,
                only_if_cached,
                stale_if_error: secs(stale_if_error),
            }
        );
    }

    #[test]
    fn age_is_a_bounded_number_or_nothing(lines in header_lines()) {
        let h = header_map("age", &lines);
        if let Some(age) = parse_age(&h) {
            prop_assert!(age <= Duration::from_secs(MAX_DELTA_SECONDS));
            prop_assert!(lines.iter().any(|l| l.iter().any(u8::is_ascii_digit)));
        }
    }

    #[test]
    fn any_count_of_seconds_is_an_age_saturating_at_2_pow_31(n in any::<u128>()) {
        let h = header_map("age", &[n.to_string().into_bytes()]);
        let capped = u64::try_from(n).unwrap_or(u64::MAX).min(MAX_DELTA_SECONDS);
        prop_assert_eq!(parse_age(&h), Some(Duration::from_secs(capped)));
    }

    #[test]
    fn a_signed_or_fractional_age_is_ignored_and_a_list_counts_by_its_first_member(
        // Below the cap, so that n and n + 1 differ once read.
        n in 0..MAX_DELTA_SECONDS,
        form in 0..4usize,
    ) {
        let (lines, expected): (Vec<Vec<u8>>, _) = match form {
            0 => (vec![format!("-{n}").into_bytes()], None),
            1 => (vec![format!("{n}.5").into_bytes()], None),
            2 => (vec![format!("{n}, {}", n + 1).into_bytes()], Some(n)),
            _ => (
                vec![n.to_string().into_bytes(), (n + 1).to_string().into_bytes()],
                Some(n),
            ),
        };
        prop_assert_eq!(
            parse_age(&header_map("age", &lines)),
            expected.map(Duration::from_secs)
        );
    }

    #[test]
    fn any_expires_gives_a_lifetime_and_an_invalid_one_gives_zero(
        expires in prop::collection::vec(any::<u8>(), 0..40),
        date in prop::collection::vec(any::<u8>(), 0..40),
        now in 0..253_402_300_800u64,
    ) {
        let (Ok(expires), Ok(date)) = (HeaderValue::from_bytes(&expires), HeaderValue::from_bytes(&date)) else {
            return Ok(());
        };
        let mut h = HeaderMap::new();
        h.insert(EXPIRES, expires.clone());
        h.insert(DATE, date);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now);
        let lifetime = freshness_lifetime(&CacheControl::default(), &h, now);
        prop_assert!(lifetime.is_some());
        if parse_date(&expires).is_none() {
            prop_assert_eq!(lifetime, Some(Duration::ZERO));
        }
    }

    #[test]
    fn a_date_reads_the_same_in_all_three_formats(secs in 0..3_155_760_000u64) {
        // 1970 to 2069: the years a two-digit rfc850 year names.
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        let imf = httpdate::fmt_http_date(at);
        // `Sun, 06 Nov 1994 08:49:37 GMT`
        let (wday, day, month, year, time) =
            (&imf[0..3], &imf[5..7], &imf[8..11], &imf[12..16], &imf[17..25]);
        let weekday = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
            .into_iter()
            .find(|name| name.starts_with(wday))
            .unwrap();
        let rfc850 = format!("{weekday}, {day}-{month}-{} {time} GMT", &year[2..]);
        let asctime = format!("{wday} {month} {:>2} {time} {year}", day.trim_start_matches('0'));
        for text in [imf.as_str(), &rfc850, &asctime] {
            prop_assert_eq!(parse_date(&HeaderValue::from_str(text).unwrap()), Some(at), "{}", text);
        }
    }
}
