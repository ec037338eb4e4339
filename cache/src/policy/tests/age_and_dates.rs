//! `Age` (RFC 9111 §5.1) and HTTP dates in every format a recipient must accept
//! (RFC 9110 §5.6.7), with what an invalid value means.

use super::*;

#[test]
fn an_invalid_age_is_ignored_not_read_as_a_large_age() {
    let age = |lines: &[&str]| {
        let pairs: Vec<(&'static str, &str)> = lines.iter().map(|l| ("age", *l)).collect();
        parse_age(&headers(&pairs))
    };
    let secs = |s| Some(Duration::from_secs(s));
    assert_eq!(age(&[]), None);
    assert_eq!(age(&["30"]), secs(30));
    assert_eq!(age(&[" 30 "]), secs(30), "optional whitespace");
    assert_eq!(age(&["99999999999999999999"]), secs(MAX_DELTA_SECONDS));
    assert_eq!(
        age(&["30", "30"]),
        secs(30),
        "a repeated value is that value"
    );
    assert_eq!(age(&["30, 30"]), secs(30));
    // A list counts by its first member (RFC 9111 §5.1), the rest discarded.
    assert_eq!(age(&["5, 7"]), secs(5));
    assert_eq!(age(&["5", "7"]), secs(5));
    assert_eq!(age(&["5", "abc"]), secs(5));
    for garbage in [
        &["-5"][..],
        &["abc"],
        &["1.5"],
        &["+5"],
        &["0x10"],
        &[""],
        &["abc, 5"],
        &["-5", "7"],
    ] {
        assert_eq!(age(garbage), None, "{garbage:?}");
    }
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let garbage_first = headers(&[("age", "86400x"), ("age", "5")]);
    let inputs = AgeInputs::from_headers(&garbage_first, t0, t0 + Duration::from_secs(1));
    assert_eq!(inputs.age, None);
    assert_eq!(inputs.corrected_initial_age(), Duration::from_secs(1));
}

#[test]
fn expires_in_the_obsolete_date_formats_is_understood() {
    // RFC 9110 §5.6.7: the same instant in IMF-fixdate, rfc850-date and asctime-date.
    let date = "Sun, 06 Nov 1994 08:49:37 GMT";
    let response_time = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
    let an_hour_later = [
        "Sun, 06 Nov 1994 09:49:37 GMT",
        "Sunday, 06-Nov-94 09:49:37 GMT",
        "Sun Nov  6 09:49:37 1994",
    ];
    for expires in an_hour_later {
        let h = headers(&[("date", date), ("expires", expires)]);
        assert_eq!(
            freshness_lifetime(&cc(""), &h, response_time),
            Some(Duration::from_secs(3600)),
            "{expires}"
        );
    }
    for date in [
        "Sun, 06 Nov 1994 08:49:37 GMT",
        "Sunday, 06-Nov-94 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1994",
    ] {
        let value = HeaderValue::from_static(date);
        assert_eq!(parse_date(&value), Some(response_time), "{date}");
    }
    // RFC 9111 §5.3: an Expires that is not a date, the wrong weekday included, means expired.
    for invalid in [
        "0",
        "-1",
        "tomorrow",
        "Mon, 06 Nov 1994 09:49:37 GMT",
        "Sun, 06 Nov 1994 09:49:37 UTC",
        "Sun Nov 6 09:49:37 1994",
    ] {
        let h = headers(&[("date", date), ("expires", invalid)]);
        assert_eq!(
            freshness_lifetime(&cc(""), &h, response_time),
            Some(Duration::ZERO),
            "{invalid}"
        );
    }
}
