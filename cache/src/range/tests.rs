//! Tests of the range module.

use super::*;

const LAST_MODIFIED_TEXT: &str = "Wed, 21 Oct 2015 07:28:00 GMT";

fn r(start: u64, end: u64) -> ByteRange {
    ByteRange { start, end }
}

fn stored(content_type: Option<&'static str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(content_type) = content_type {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    headers.insert(ETAG, HeaderValue::from_static("\"abc\""));
    headers.insert(LAST_MODIFIED, HeaderValue::from_static(LAST_MODIFIED_TEXT));
    headers
}

fn plan_for(range: &str, len: u64, max_ranges: usize) -> RangePlan {
    let range = HeaderValue::from_str(range).unwrap();
    plan(Some(&range), None, &stored(None), len, max_ranges)
}

/// `count` one-byte ranges, two bytes apart.
fn sparse_ranges(count: u64) -> String {
    let specs: Vec<String> = (0..count).map(|i| format!("{0}-{0}", i * 2)).collect();
    format!("bytes={}", specs.join(","))
}

#[test]
fn range_header_table() {
    use RangePlan::{Full, Multiple, Single, Unsatisfiable};
    let multi = |pairs: &[(u64, u64)]| Multiple(pairs.iter().map(|&(s, e)| r(s, e)).collect());
    let many_small = sparse_ranges(20);
    let cases: Vec<(&str, u64, RangePlan)> = vec![
        // The RFC 9110 §14.1.2 examples.
        ("bytes=0-499", 10_000, Single(r(0, 499))),
        ("bytes=500-999", 10_000, Single(r(500, 999))),
        ("bytes=500-", 10_000, Single(r(500, 9_999))),
        ("bytes=-500", 10_000, Single(r(9_500, 9_999))),
        ("bytes=9500-", 10_000, Single(r(9_500, 9_999))),
        ("bytes=0-0,-1", 10_000, multi(&[(0, 0), (9_999, 9_999)])),
        ("bytes=0-", 10_000, Single(r(0, 9_999))),
        // Clipping to the representation.
        ("bytes=0-99999", 10_000, Single(r(0, 9_999))),
        ("bytes=-500", 100, Single(r(0, 99))),
        ("bytes=9999-9999", 10_000, Single(r(9_999, 9_999))),
        ("bytes=0-18446744073709551615", 10, Single(r(0, 9))),
        ("bytes=000-009", 100, Single(r(0, 9))),
        // Unsatisfiable: every range starts at or past the end.
        ("bytes=10000-", 10_000, Unsatisfiable),
        ("bytes=10000-20000", 10_000, Unsatisfiable),
        ("bytes=18446744073709551615-", 10, Unsatisfiable),
        ("bytes=20000-,30000-", 10_000, Unsatisfiable),
        ("bytes=-0", 10_000, Unsatisfiable),
        // ...unless another range is satisfiable.
        ("bytes=20000-,0-9", 10_000, Single(r(0, 9))),
        (
            "bytes=-0,0-9,20000-,10-19",
            10_000,
            multi(&[(0, 9), (10, 19)]),
        ),
        // A zero-length representation: nothing to point at...
        ("bytes=0-", 0, Unsatisfiable),
        ("bytes=0-0", 0, Unsatisfiable),
        ("bytes=-0", 0, Unsatisfiable),
        // ...but a non-zero suffix is satisfiable and selects the whole, empty, body.
        ("bytes=-5", 0, Full),
        ("bytes=0-,-5", 0, Full),
        // Whitespace around commas, empty list elements, unit case.
        ("bytes=0-9 , 100-199", 10_000, multi(&[(0, 9), (100, 199)])),
        ("bytes=0-9,\t100-199", 10_000, multi(&[(0, 9), (100, 199)])),
        ("bytes=0-9,,100-199", 10_000, multi(&[(0, 9), (100, 199)])),
        ("bytes=0-9, ,100-199,", 10_000, multi(&[(0, 9), (100, 199)])),
        ("bytes= 0-9", 10_000, Single(r(0, 9))),
        ("BYTES=0-9", 10_000, Single(r(0, 9))),
        ("Bytes=0-9", 10_000, Single(r(0, 9))),
        // Other units and invalid syntax: the Range is ignored.
        ("items=0-9", 10_000, Full),
        ("bytes 0-9", 10_000, Full),
        ("bytes =0-9", 10_000, Full),
        ("bytes=abc", 10_000, Full),
        ("bytes=5-2", 10_000, Full),
        ("bytes=0-9,5-2", 10_000, Full),
        ("bytes=", 10_000, Full),
        ("bytes=,", 10_000, Full),
        ("bytes=-", 10_000, Full),
        ("bytes=--5", 10_000, Full),
        ("bytes=0-1-2", 10_000, Full),
        ("bytes=+1-2", 10_000, Full),
        ("bytes=1-+2", 10_000, Full),
        ("bytes=0 - 9", 10_000, Full),
        ("bytes=1-a", 10_000, Full),
        ("bytes=0x10-", 10_000, Full),
        ("bytes=5", 10_000, Full),
        // Numbers past u64 are ignored, never a panic.
        ("bytes=18446744073709551616-", 10_000, Full),
        ("bytes=0-18446744073709551616", 10_000, Full),
        ("bytes=-18446744073709551616", 10_000, Full),
        ("bytes=-99999999999999999999999999", 10_000, Full),
        // Amplification: overlapping copies of the object, or many tiny parts on a small one.
        ("bytes=0-,0-", 10_000, Full),
        ("bytes=0-9999,0-9999,0-9999", 10_000, Full),
        ("bytes=-10000,0-", 10_000, Full),
        (many_small.as_str(), 100, Full),
        // The same tiny parts are fine when the object dwarfs their headers.
        (
            many_small.as_str(),
            100_000,
            Multiple((0..20).map(|i| r(i * 2, i * 2)).collect()),
        ),
        // A little overlap on a large object stays within the allowance.
        ("bytes=0-99,50-149", 100_000, multi(&[(0, 99), (50, 149)])),
    ];
    for (range, len, expected) in cases {
        assert_eq!(
            plan_for(range, len, 64),
            expected,
            "Range: {range:?}, len {len}"
        );
    }
}

#[test]
fn absent_or_unreadable_range_means_full() {
    let headers = stored(None);
    assert_eq!(plan(None, None, &headers, 100, 8), RangePlan::Full);
    let opaque = HeaderValue::from_bytes(b"bytes=0-9\xff").unwrap();
    assert_eq!(plan(Some(&opaque), None, &headers, 100, 8), RangePlan::Full);
    let if_range = HeaderValue::from_static("\"abc\"");
    assert_eq!(
        plan(None, Some(&if_range), &headers, 100, 8),
        RangePlan::Full,
        "If-Range alone asks for nothing"
    );
}

#[test]
fn more_ranges_than_allowed_means_full() {
    let cases = [
        (8, 8, true),
        (9, 8, false),
        (1, 1, true),
        (2, 1, false),
        (1, 0, false),
    ];
    for (count, max_ranges, honoured) in cases {
        let planned = plan_for(&sparse_ranges(count), 1_000_000, max_ranges);
        assert_eq!(
            planned != RangePlan::Full,
            honoured,
            "{count} ranges with max {max_ranges}: {planned:?}"
        );
    }
    // Empty list elements do not count against the limit.
    assert_eq!(
        plan_for("bytes=0-0,,,,2-2", 100_000, 2),
        RangePlan::Multiple(vec![r(0, 0), r(2, 2)])
    );
    // Unsatisfiable range-specs do.
    assert_eq!(
        plan_for("bytes=999999-,0-0,2-2", 100_000, 2),
        RangePlan::Full
    );
}

#[test]
fn if_range_table() {
    let weak = {
        let mut headers = stored(None);
        headers.insert(ETAG, HeaderValue::from_static("W/\"abc\""));
        headers
    };
    let bare = HeaderMap::new();
    let strong = stored(None);
    let cases: Vec<(&str, &str, &HeaderMap, RangePlan)> = vec![
        (
            "strong etag, same",
            "\"abc\"",
            &strong,
            RangePlan::Single(r(0, 9)),
        ),
        ("strong etag, other", "\"abd\"", &strong, RangePlan::Full),
        ("weak etag asked", "W/\"abc\"", &strong, RangePlan::Full),
        ("weak etag stored", "\"abc\"", &weak, RangePlan::Full),
        ("no etag stored", "\"abc\"", &bare, RangePlan::Full),
        ("unterminated etag", "\"abc", &strong, RangePlan::Full),
        (
            "date, equal",
            LAST_MODIFIED_TEXT,
            &strong,
            RangePlan::Single(r(0, 9)),
        ),
        (
            "date, equal in RFC 850 form",
            "Wednesday, 21-Oct-15 07:28:00 GMT",
            &strong,
            RangePlan::Single(r(0, 9)),
        ),
        (
            "date, later",
            "Wed, 21 Oct 2015 07:28:01 GMT",
            &strong,
            RangePlan::Full,
        ),
        (
            "date, no Last-Modified stored",
            LAST_MODIFIED_TEXT,
            &bare,
            RangePlan::Full,
        ),
        ("neither etag nor date", "abc", &strong, RangePlan::Full),
    ];
    let range = HeaderValue::from_static("bytes=0-9");
    for (name, if_range, headers, expected) in cases {
        let if_range = HeaderValue::from_str(if_range).unwrap();
        assert_eq!(
            plan(Some(&range), Some(&if_range), headers, 100, 8),
            expected,
            "{name}"
        );
    }
}

#[test]
fn if_range_mismatch_wins_over_unsatisfiable() {
    let range = HeaderValue::from_static("bytes=500-");
    let headers = stored(None);
    let other = HeaderValue::from_static("\"old\"");
    let same = HeaderValue::from_static("\"abc\"");
    assert_eq!(
        plan(Some(&range), Some(&other), &headers, 100, 8),
        RangePlan::Full
    );
    assert_eq!(
        plan(Some(&range), Some(&same), &headers, 100, 8),
        RangePlan::Unsatisfiable
    );
}

#[test]
fn single_range_is_a_slice_of_the_stored_body() {
    let body = Bytes::from_static(b"0123456789");
    let partial = render(
        &RangePlan::Single(r(2, 5)),
        &body,
        &stored(Some("text/plain")),
    )
    .unwrap();
    assert_eq!(&partial.body[..], b"2345");
    assert_eq!(partial.body.as_ptr(), body[2..].as_ptr(), "no copy");
    assert_eq!(partial.content_range.unwrap(), "bytes 2-5/10");
    assert_eq!(partial.content_length, 4);
    assert_eq!(partial.content_type, None, "the stored Content-Type stays");
}

#[test]
fn multipart_body_follows_rfc_9110_section_14_6() {
    let body = Bytes::from_static(b"0123456789");
    let plan = RangePlan::Multiple(vec![r(0, 1), r(7, 9)]);
    let partial = render(&plan, &body, &stored(Some("text/plain"))).unwrap();
    let again = render(&plan, &body, &stored(Some("text/plain"))).unwrap();
    assert_eq!(partial, again, "deterministic");
    let content_type = partial.content_type.unwrap();
    let boundary = content_type
        .to_str()
        .unwrap()
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap()
        .to_owned();
    assert_eq!(boundary.len(), PLACEHOLDER_BOUNDARY.len());
    assert!(boundary
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    let expected = format!(
        "--{boundary}\r\n\
         Content-Type: text/plain\r\n\
         Content-Range: bytes 0-1/10\r\n\
         \r\n\
         01\r\n\
         --{boundary}\r\n\
         Content-Type: text/plain\r\n\
         Content-Range: bytes 7-9/10\r\n\
         \r\n\
         789\r\n\
         --{boundary}--\r\n"
    );
    assert_eq!(std::str::from_utf8(&partial.body).unwrap(), expected);
    assert_eq!(partial.content_length, expected.len() as u64);
    assert_eq!(partial.content_range, None);
}

#[test]
fn multipart_parts_omit_content_type_when_none_is_stored() {
    let body = Bytes::from_static(b"abcdef");
    let plan = RangePlan::Multiple(vec![r(0, 0), r(5, 5)]);
    let partial = render(&plan, &body, &HeaderMap::new()).unwrap();
    let text = std::str::from_utf8(&partial.body).unwrap();
    assert!(!text.contains("Content-Type"), "{text}");
    assert!(
        text.contains("Content-Range: bytes 0-0/6\r\n\r\na\r\n--"),
        "{text}"
    );
    assert!(
        text.contains("Content-Range: bytes 5-5/6\r\n\r\nf\r\n--"),
        "{text}"
    );
}

#[test]
fn boundary_never_occurs_in_the_parts() {
    let seed = 64 ^ 2u64.rotate_left(32);
    let first = boundary(seed, 0);
    let mut content = vec![b'x'; 64 - first.len()];
    content.extend_from_slice(first.as_bytes());
    let body = Bytes::from(content);
    let plan = RangePlan::Multiple(vec![r(0, 9), r(10, 63)]);
    let partial = render(&plan, &body, &HeaderMap::new()).unwrap();
    let content_type = partial.content_type.unwrap();
    let chosen = content_type.to_str().unwrap().rsplit('=').next().unwrap();
    assert_ne!(chosen, first);
    assert!(!contains(&body, chosen.as_bytes()));

    let len = BOUNDARY_ATTEMPTS * PLACEHOLDER_BOUNDARY.len() as u64;
    let seed = len ^ 2u64.rotate_left(32);
    let every_candidate: Vec<u8> = (0..BOUNDARY_ATTEMPTS)
        .flat_map(|attempt| boundary(seed, attempt).into_bytes())
        .collect();
    let body = Bytes::from(every_candidate);
    let plan = RangePlan::Multiple(vec![r(0, len - 1), r(0, 0)]);
    assert_eq!(
        render(&plan, &body, &HeaderMap::new()),
        None,
        "no boundary left: send it whole"
    );
}

#[test]
fn render_declines_what_it_cannot_build() {
    let body = Bytes::from_static(b"0123456789");
    let headers = HeaderMap::new();
    let cases = [
        RangePlan::Full,
        RangePlan::Unsatisfiable,
        RangePlan::Single(r(5, 10)),
        RangePlan::Single(r(6, 5)),
        RangePlan::Multiple(vec![r(0, 1), r(9, 10)]),
        RangePlan::Single(r(u64::MAX, u64::MAX)),
    ];
    for plan in cases {
        assert_eq!(render(&plan, &body, &headers), None, "{plan:?}");
    }
}

#[test]
fn planned_multipart_size_is_the_rendered_size_and_within_the_allowance() {
    let body = Bytes::from(vec![b'.'; 3_000]);
    let ranges = [
        "bytes=0-0,2-2",
        "bytes=0-99,50-149",
        "bytes=0-999,1000-1999,2000-",
        "bytes=-1,0-0,100-200,2999-",
        "bytes=0-1499,1000-2499",
    ];
    for content_type in [None, Some("application/pdf")] {
        let headers = stored(content_type);
        for range in ranges {
            let value = HeaderValue::from_static(range);
            let planned = plan(Some(&value), None, &headers, 3_000, 16);
            let RangePlan::Multiple(parts) = &planned else {
                panic!("{range}: {planned:?}");
            };
            let partial = render(&planned, &body, &headers).unwrap();
            let measured = multipart_len(parts, 3_000, content_type.map(str::as_bytes));
            assert_eq!(measured, Some(partial.body.len() as u64), "{range}");
            assert_eq!(partial.content_length, partial.body.len() as u64);
            assert!(
                partial.content_length <= 3_000 + MULTIPART_ALLOWANCE,
                "{range}"
            );
        }
    }
}

#[test]
fn request_to_response_end_to_end() {
    let body = Bytes::from_static(b"hello, world");
    let headers = stored(Some("text/plain"));
    let range = HeaderValue::from_static("bytes=-5");
    let planned = plan(Some(&range), None, &headers, body.len() as u64, 8);
    let partial = render(&planned, &body, &headers).unwrap();
    assert_eq!(&partial.body[..], b"world");
    assert_eq!(partial.content_range.unwrap(), "bytes 7-11/12");

    let range = HeaderValue::from_static("bytes=100-");
    let planned = plan(Some(&range), None, &headers, body.len() as u64, 8);
    assert_eq!(planned, RangePlan::Unsatisfiable);
    assert_eq!(render(&planned, &body, &headers), None);
    assert_eq!(unsatisfiable_content_range(12).unwrap(), "bytes */12");
}

#[test]
fn byte_range_size_counts_both_ends() {
    assert_eq!(r(0, 0).size(), 1);
    assert_eq!(r(500, 999).size(), 500);
    assert_eq!(
        r(0, u64::MAX).size(),
        u64::MAX,
        "saturates instead of overflowing"
    );
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    /// `Range` values made of the pieces its grammar is built from, so cases reach the specs.
    fn range_soup() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just("bytes="),
            Just("BYTES="),
            Just("items="),
            Just("-"),
            Just(","),
            Just(" "),
            Just("\t"),
            Just("0"),
            Just("1"),
            Just("499"),
            Just("10000"),
            Just("18446744073709551615"),
            Just("18446744073709551616"),
            Just("+1"),
            Just("é"),
        ];
        prop::collection::vec(piece, 0..16).prop_map(|pieces| pieces.concat().into_bytes())
    }

    fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![range_soup(), prop::collection::vec(any::<u8>(), 0..40)]
    }

    /// A body of `len` bytes that contains no boundary candidate.
    fn body(len: u64) -> Bytes {
        (0..len)
            .map(|i| b'a' + (i % 26) as u8)
            .collect::<Vec<_>>()
            .into()
    }

    /// Checks what a plan promises: ranges within the object, at most `max_ranges` of them, and
    /// a rendered answer that is the object's bytes and no larger than the allowance permits.
    fn check_plan(
        plan: &RangePlan,
        stored: &HeaderMap,
        len: u64,
        max_ranges: usize,
    ) -> Result<(), TestCaseError> {
        let ranges: &[ByteRange] = match plan {
            RangePlan::Full | RangePlan::Unsatisfiable => return Ok(()),
            RangePlan::Single(range) => std::slice::from_ref(range),
            RangePlan::Multiple(ranges) => {
                prop_assert!(ranges.len() >= 2);
                ranges
            }
        };
        prop_assert!(ranges.len() <= max_ranges);
        for range in ranges {
            prop_assert!(
                range.start <= range.end && range.end < len,
                "{:?} of {}",
                range,
                len
            );
        }
        let body = body(len);
        let Some(rendered) = render(plan, &body, stored) else {
            return Err(TestCaseError::fail("a planned range was not rendered"));
        };
        prop_assert_eq!(rendered.content_length, rendered.body.len() as u64);
        prop_assert!(rendered.content_length <= len + MULTIPART_ALLOWANCE);
        if let RangePlan::Single(range) = plan {
            prop_assert_eq!(
                &rendered.body,
                &body.slice(range.start as usize..=range.end as usize)
            );
        }
        Ok(())
    }

    /// One range-spec in any of its three forms, with positions near `len` or anywhere.
    fn spec(len: u64) -> impl Strategy<Value = String> {
        let position = prop_oneof![0..len.saturating_add(8), any::<u64>()];
        prop_oneof![
            (position.clone(), position.clone()).prop_map(|(a, b)| format!("{a}-{b}")),
            position.clone().prop_map(|a| format!("{a}-")),
            position.prop_map(|n| format!("-{n}")),
        ]
    }

    proptest! {
        #[test]
        fn no_range_or_if_range_value_makes_planning_panic(
            range in header_bytes(),
            if_range in prop::option::of(header_bytes()),
            len in 0..5_000u64,
            max_ranges in 0..8usize,
        ) {
            let Ok(range) = HeaderValue::from_bytes(&range) else { return Ok(()) };
            let if_range = if_range.and_then(|v| HeaderValue::from_bytes(&v).ok());
            let stored = stored(None);
            let plan = plan(Some(&range), if_range.as_ref(), &stored, len, max_ranges);
            check_plan(&plan, &stored, len, max_ranges)?;
        }

        #[test]
        fn every_satisfiable_range_lies_within_the_object(
            (len, specs) in (0..5_000u64).prop_flat_map(|len| {
                (Just(len), prop::collection::vec(spec(len), 1..6))
            }),
            max_ranges in 1..8usize,
            content_type in prop::option::of(Just("multipart/x; boundary=verge-0")),
        ) {
            let value = HeaderValue::from_str(&format!("bytes={}", specs.join(","))).unwrap();
            let stored = stored(content_type);
            let plan = plan(Some(&value), None, &stored, len, max_ranges);
            check_plan(&plan, &stored, len, max_ranges)?;
            if specs.len() > max_ranges {
                prop_assert_eq!(plan, RangePlan::Full);
            }
        }

        #[test]
        fn one_range_from_inside_the_object_is_served_clipped(
            (len, first, last) in (1..5_000u64).prop_flat_map(|len| {
                let first = 0..len;
                (Just(len), first.clone(), prop::option::of(any::<u64>()))
            }),
        ) {
            let last = last.map(|l| l.max(first));
            let value = match last {
                Some(last) => format!("bytes={first}-{last}"),
                None => format!("bytes={first}-"),
            };
            let want = ByteRange { start: first, end: last.unwrap_or(u64::MAX).min(len - 1) };
            prop_assert_eq!(plan_for(&value, len, 1), RangePlan::Single(want));
        }
    }
}
