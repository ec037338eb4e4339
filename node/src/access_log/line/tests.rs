use std::sync::Arc;

use proptest::prelude::*;

use super::*;

/// What the request of [`record`] brought.
fn fields() -> RequestFields<'static> {
    RequestFields {
        host: Some(b"www.example.com"),
        path: b"/a/b?c=d",
        request_id: b"0123abcd",
        referer: None,
        user_agent: Some(b"curl/8"),
    }
}

fn record() -> Record {
    Record {
        // 2024-05-01T12:34:56.789Z
        time: UNIX_EPOCH + Duration::from_millis(1_714_566_896_789),
        client: "127.0.0.1:40000".parse().unwrap(),
        method: Method::GET,
        request: RequestText::new(fields()),
        status: 200,
        bytes_sent: 512,
        duration: Duration::from_micros(1500),
        outcome: "miss",
        cache_status: Some(HeaderValue::from_static(
            "verge-shield; fwd=uri-miss; stored, verge-edge; fwd=uri-miss; fwd-status=200",
        )),
        upstream: Some(UpstreamSeen {
            answered_by: Some(Arc::from("shield-us")),
            status: Some(200),
            first_byte: Duration::from_millis(2),
        }),
        tls: Some("TLSv1.3"),
        protocol: "h2",
    }
}

fn context(format: AccessLogFormat) -> LineContext {
    LineContext::new(format, "edge-1", "us")
}

fn line(record: &Record, format: AccessLogFormat) -> String {
    let mut out = Vec::new();
    record.write_line(&context(format), &mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn a_json_line_has_every_field() {
    let text = line(&record(), AccessLogFormat::Json);
    assert!(
        text.ends_with("}\n") && text.matches('\n').count() == 1,
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["time"], "2024-05-01T12:34:56.789Z");
    assert_eq!(json["client"], "127.0.0.1:40000");
    assert_eq!(json["method"], "GET");
    assert_eq!(json["host"], "www.example.com");
    assert_eq!(json["path"], "/a/b?c=d");
    assert_eq!(json["status"], 200);
    assert_eq!(json["bytes_sent"], 512);
    assert_eq!(json["duration_ms"], 1.5);
    assert_eq!(json["outcome"], "miss");
    assert_eq!(
        json["cache_status"],
        "verge-edge; fwd=uri-miss; fwd-status=200"
    );
    assert_eq!(json["upstream"], "shield-us");
    assert_eq!(json["upstream_status"], 200);
    assert_eq!(json["upstream_first_byte_ms"], 2.0);
    assert_eq!(json["node"], "edge-1");
    assert_eq!(json["region"], "us");
    assert_eq!(json["tls"], "TLSv1.3");
    assert_eq!(json["protocol"], "h2");
    assert_eq!(json["request_id"], "0123abcd");
    assert_eq!(json["referer"], serde_json::Value::Null);
    assert_eq!(json["user_agent"], "curl/8");
}

#[test]
fn a_request_that_did_not_go_upstream_says_so() {
    let hit = Record {
        upstream: None,
        tls: None,
        protocol: "h1",
        ..record()
    };
    let json: serde_json::Value = serde_json::from_str(&line(&hit, AccessLogFormat::Json)).unwrap();
    assert_eq!(json["upstream"], serde_json::Value::Null);
    assert_eq!(json["upstream_status"], serde_json::Value::Null);
    assert_eq!(json["upstream_first_byte_ms"], serde_json::Value::Null);
    assert_eq!(json["tls"], serde_json::Value::Null);
}

#[test]
fn a_combined_line_reads_as_nginx_writes_it() {
    let text = line(&record(), AccessLogFormat::Combined);
    assert!(
        text.starts_with(
            "127.0.0.1 - - [01/May/2024:12:34:56 +0000] \"GET /a/b?c=d HTTP/2.0\" 200 512 \
             \"-\" \"curl/8\" host=\"www.example.com\" request_id=\"0123abcd\" "
        ),
        "{text}"
    );
    for field in [
        "cache_status=\"verge-edge; fwd=uri-miss; fwd-status=200\"",
        "upstream=\"shield-us\"",
        "upstream_status=\"200\"",
        "node=\"edge-1\"",
        "region=\"us\"",
        "tls=\"TLSv1.3\"",
        "protocol=\"h2\"",
    ] {
        assert!(text.contains(field), "{field} in {text}");
    }
}

#[test]
fn a_request_s_text_reads_back_field_by_field_absent_apart_from_empty() {
    let text = RequestText::new(RequestFields {
        host: Some(b""),
        referer: Some(b"http://r.test/"),
        user_agent: None,
        ..fields()
    });
    let read = text.fields();
    assert_eq!(read.host, Some(&b""[..]), "empty, not absent");
    assert_eq!(read.path, b"/a/b?c=d");
    assert_eq!(read.request_id, b"0123abcd");
    assert_eq!(read.referer, Some(&b"http://r.test/"[..]));
    assert_eq!(read.user_agent, None);
}

#[test]
fn values_a_client_chose_cannot_forge_a_line() {
    let hostile = Record {
        request: RequestText::new(RequestFields {
            host: Some(b"a\"b\\c\t\xff"),
            user_agent: Some(b"x\" 200 0 \"-\" \"y"),
            ..fields()
        }),
        ..record()
    };
    let json = line(&hostile, AccessLogFormat::Json);
    let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed["user_agent"], "x\" 200 0 \"-\" \"y");
    assert_eq!(parsed["host"], "a\"b\\c\t\u{fffd}");
    let combined = line(&hostile, AccessLogFormat::Combined);
    assert!(
        combined.contains("\"x\\\" 200 0 \\\"-\\\" \\\"y\""),
        "{combined}"
    );
    assert!(
        combined.contains("host=\"a\\\"b\\\\c\\x09\\xFF\""),
        "{combined}"
    );
}

#[test]
fn the_epoch_and_leap_days_are_dated_right() {
    let mut out = Vec::new();
    rfc3339(UNIX_EPOCH, &mut out);
    assert_eq!(out, b"1970-01-01T00:00:00.000Z");
    out.clear();
    // 2024-02-29T23:59:59Z
    clf_time(UNIX_EPOCH + Duration::from_secs(1_709_251_199), &mut out);
    assert_eq!(out, b"29/Feb/2024:23:59:59 +0000");
}

/// The bytes a quoted combined-format field stands for; panics on anything but `\"`, `\\`
/// and `\xHH` after a backslash, and on a bare quote.
fn unescape_combined(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < field.len() {
        match field[i] {
            b'\\' => match field[i + 1] {
                b'"' | b'\\' => {
                    out.push(field[i + 1]);
                    i += 2;
                }
                b'x' => {
                    let hex = std::str::from_utf8(&field[i + 2..i + 4]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 4;
                }
                other => panic!("unknown escape {other}"),
            },
            b'"' => panic!("a bare quote ends the field early"),
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

proptest! {
    #[test]
    fn escaping_never_leaves_a_raw_line_break(value in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut json = Vec::new();
        json_string(&mut json, &value);
        prop_assert!(!json.contains(&b'\n') && !json.contains(&b'\r'));
        let text = String::from_utf8(json).unwrap();
        let back: String = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(back, String::from_utf8_lossy(&value).into_owned());
        let mut combined = Vec::new();
        quoted_inner(&mut combined, &value);
        prop_assert!(combined.iter().all(|b| (0x20..=0x7e).contains(b)));
        // Every quote is escaped, so the field cannot end early, and nothing is lost.
        prop_assert_eq!(unescape_combined(&combined), value);
    }

    #[test]
    fn any_header_values_give_one_parseable_json_line(
        host in proptest::collection::vec(any::<u8>(), 0..64),
        agent in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let (host, agent) = (HeaderValue::from_bytes(&host).ok(), HeaderValue::from_bytes(&agent).ok());
        let record = Record {
            request: RequestText::new(RequestFields {
                host: host.as_ref().map(HeaderValue::as_bytes),
                user_agent: agent.as_ref().map(HeaderValue::as_bytes),
                ..fields()
            }),
            ..record()
        };
        let text = line(&record, AccessLogFormat::Json);
        prop_assert_eq!(text.matches('\n').count(), 1);
        prop_assert!(serde_json::from_str::<serde_json::Value>(&text).is_ok());
        let combined = line(&record, AccessLogFormat::Combined);
        prop_assert_eq!(combined.matches('\n').count(), 1);
    }
}

#[test]
fn lines_of_one_second_and_the_next_are_each_dated_right() {
    let times = [
        (
            1_714_566_896_789,
            "2024-05-01T12:34:56.789Z",
            "01/May/2024:12:34:56 +0000",
        ),
        (
            1_714_566_896_005,
            "2024-05-01T12:34:56.005Z",
            "01/May/2024:12:34:56 +0000",
        ),
        (
            1_714_566_897_000,
            "2024-05-01T12:34:57.000Z",
            "01/May/2024:12:34:57 +0000",
        ),
        (
            1_714_566_896_999,
            "2024-05-01T12:34:56.999Z",
            "01/May/2024:12:34:56 +0000",
        ),
    ];
    let json = context(AccessLogFormat::Json);
    let combined = context(AccessLogFormat::Combined);
    for (millis, rfc, clf) in times {
        let mut record = record();
        record.time = UNIX_EPOCH + Duration::from_millis(millis);
        let mut out = Vec::new();
        record.write_line(&json, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(&format!("{{\"time\":\"{rfc}\"")), "{text}");
        let mut out = Vec::new();
        record.write_line(&combined, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(&format!("[{clf}]")), "{text}");
    }
}

#[test]
fn client_addresses_and_numbers_are_written_as_displayed() {
    for client in [
        "127.0.0.1:40000",
        "10.255.0.9:1",
        "[::1]:8080",
        "[2001:db8::7]:443",
    ] {
        let mut record = record();
        record.client = client.parse().unwrap();
        record.duration = Duration::from_micros(12_003_045);
        record.bytes_sent = u64::MAX;
        let text = line(&record, AccessLogFormat::Json);
        let value: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(value["client"], client);
        assert_eq!(value["duration_ms"].to_string(), "12003.045");
        assert_eq!(value["bytes_sent"], u64::MAX);
    }
}
