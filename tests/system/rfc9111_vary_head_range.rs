//! Secondary keys, HEAD and byte ranges at the edge: several `Vary` variants per URL (RFC 9111
//! §4.1), HEAD answered from a stored GET and checked upstream with a HEAD (§4.3.5), and
//! ranges served from a stored full representation (RFC 9110 §14).

use verge_testkit as support;

use http::Method;
use support::scenario::{cdn_fetched_then, cdn_serving, last_sent, tagged};
use support::{
    patterned_body, start_origin_and_cdn, FakeOrigin, HttpClient, Reply, TestCdn, TestEdge,
    TestResponse, Topology,
};

async fn head(edge: &TestEdge, path: &str) -> TestResponse {
    HttpClient::http1()
        .request("HEAD", &edge.url(path), &[], "")
        .await
}

/// GETs `path` with `Accept-Language: language`.
async fn get_in(edge: &TestEdge, path: &str, language: &str) -> TestResponse {
    edge.get_with(path, &[("accept-language", language)]).await
}

/// GETs `path` asking for the byte `ranges` (`bytes=...`).
async fn get_range(edge: &TestEdge, path: &str, ranges: &str) -> TestResponse {
    edge.get_with(path, &[("range", ranges)]).await
}

fn vary_reply(body: &str) -> Reply {
    Reply::ok(body.to_string())
        .cache_control("max-age=60")
        .header("vary", "Accept-Language")
}

// ---- Vary ----

async fn vary_keeps_one_stored_variant_per_request_header_value(topology: Topology) {
    let (origin, edge) = cdn_serving(topology, "/v", vary_reply("hello")).await;
    let en = get_in(&edge, "/v", "en").await;
    en.assert_cache_status_has("stored", "");
    origin.on("/v", vary_reply("bonjour"));
    let fr = get_in(&edge, "/v", "fr").await;
    assert_eq!(fr.text(), "bonjour");
    fr.assert_cache_status_has("stored", "");
    assert_eq!(origin.hits("/v"), 2);

    for _ in 0..2 {
        let en = get_in(&edge, "/v", "en").await;
        en.assert_cache_status_has("hit", "");
        assert_eq!(en.text(), "hello", "the en variant");
        let fr = get_in(&edge, "/v", "fr").await;
        fr.assert_cache_status_has("hit", "");
        assert_eq!(fr.text(), "bonjour", "the fr variant");
    }
    assert_eq!(origin.hits("/v"), 2, "both variants served from cache");
}

async fn vary_star_is_never_stored(topology: Topology) {
    let reply = Reply::ok("x").cache_control("max-age=60");
    let (origin, edge) = cdn_serving(topology, "/star", reply.header("vary", "*")).await;
    for n in 1..=2 {
        let response = edge.get("/star").await;
        response.assert_cache_status_lacks("stored", "");
        assert_eq!(origin.hits("/star"), n);
    }
}

async fn vary_matching_normalises_whitespace_and_line_folding_in_request_values(
    topology: Topology,
) {
    let (origin, edge) = cdn_serving(topology, "/norm", vary_reply("en-fr")).await;
    // Stored for two field lines...
    let request = http::Request::get(edge.url("/norm"))
        .header("accept-language", "en")
        .header("accept-language", "fr")
        .body(Default::default())
        .unwrap();
    let stored = HttpClient::http1().send(request).await;
    stored.assert_cache_status_has("stored", "");

    // ...then asked for with the same values on one line, with surrounding whitespace.
    for value in ["en, fr", "  en, fr\t"] {
        let response = edge.get_with("/norm", &[("accept-language", value)]).await;
        response.assert_cache_status_has("hit", &format!("{value:?}"));
        assert_eq!(response.text(), "en-fr");
    }
    assert_eq!(origin.hits("/norm"), 1);
}

async fn vary_miss_is_reported_when_the_url_is_stored_but_no_variant_matches(topology: Topology) {
    let (origin, edge) = cdn_serving(topology, "/vm", vary_reply("hello")).await;
    get_in(&edge, "/vm", "en").await;

    let de = get_in(&edge, "/vm", "de").await;
    de.assert_cache_status_has("fwd=vary-miss", "");
    let none = edge.get("/vm").await;
    none.assert_cache_status_has(
        "fwd=vary-miss",
        "a request without the header is another variant",
    );
    assert_eq!(origin.hits("/vm"), 3);
}

async fn uri_miss_is_reported_when_nothing_is_stored_for_the_url(topology: Topology) {
    let (_origin, edge) = cdn_serving(topology, "/um", vary_reply("hello")).await;
    let first = get_in(&edge, "/um", "en").await;
    first.assert_cache_status_has("fwd=uri-miss", "");
    assert!(!first.cache_status_has("fwd=vary-miss"));
}

// ---- HEAD ----

/// The CDN with `hello` (ETag `"v1"`, `max-age=10`) stored at `path` and 10s stale; the origin
/// now answers `body` with `etag` and `max-age=60`.
async fn stale_hello_then(
    topology: Topology,
    path: &str,
    body: &'static str,
    etag: &str,
) -> (FakeOrigin, TestCdn) {
    let stored = tagged("hello", "max-age=10", "\"v1\"");
    let (origin, edge) = cdn_fetched_then(topology, path, stored, 20).await;
    origin.on(path, tagged(body, "max-age=60", etag));
    (origin, edge)
}

async fn head_is_answered_from_a_stored_get_without_the_origin(topology: Topology) {
    let reply = Reply::ok("hello world").cache_control("max-age=60");
    let (origin, edge) = cdn_fetched_then(topology, "/h", reply, 0).await;

    let response = head(&edge, "/h").await;
    assert_eq!(response.status, 200);
    response.assert_cache_status_has("hit", "");
    assert_eq!(response.header("content-length").as_deref(), Some("11"));
    assert_eq!(
        response.header("cache-control").as_deref(),
        Some("max-age=60")
    );
    assert!(response.body.is_empty(), "a HEAD answer has no body");
    assert_eq!(origin.hits("/h"), 1, "the origin is not asked");
}

async fn head_for_a_stale_get_is_checked_with_a_head_and_a_matching_etag_freshens_it(
    topology: Topology,
) {
    let (origin, edge) = stale_hello_then(topology, "/hv", "hello", "\"v1\"").await;

    let response = head(&edge, "/hv").await;
    assert_eq!(response.status, 200);
    assert!(response.body.is_empty());
    let sent = origin.last_request("/hv").unwrap().method;
    assert_eq!(sent, Method::HEAD, "checked upstream with a HEAD");
    response.assert_cache_status_has("stored", "");

    let get = edge.get("/hv").await;
    get.assert_cache_status_has("hit", "the stored GET was freshened by the HEAD");
    assert_eq!(get.text(), "hello");
    get.assert_cache_status_has("ttl=60", "");
    assert_eq!(origin.hits("/hv"), 2);
}

async fn head_for_a_stale_get_with_a_different_etag_drops_the_stored_get(topology: Topology) {
    let (origin, edge) = stale_hello_then(topology, "/hd", "world!", "\"v2\"").await;

    let response = head(&edge, "/hd").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("etag").as_deref(), Some("\"v2\""));
    assert_eq!(origin.last_request("/hd").unwrap().method, Method::HEAD);

    let get = edge.get("/hd").await;
    let why = "the stored GET no longer describes the resource";
    get.assert_cache_status_lacks("hit", why);
    get.assert_cache_status_lacks("fwd=stale", why);
    assert_eq!(get.text(), "world!");
    assert_eq!(origin.last_request("/hd").unwrap().method, Method::GET);
    assert_eq!(
        last_sent(&origin, "/hd", "if-none-match"),
        None,
        "nothing stored is left to revalidate"
    );
    assert_eq!(origin.hits("/hd"), 3);
}

// ---- ranges ----

fn range_reply(body: &[u8]) -> Reply {
    Reply::ok(body.to_vec())
        .cache_control("max-age=60")
        .header("content-type", "application/octet-stream")
}

async fn a_single_range_is_served_206_from_a_stored_full_response(topology: Topology) {
    let body = patterned_body(1000);
    let (origin, edge) = cdn_fetched_then(topology, "/r", range_reply(&body), 0).await;

    let partial = get_range(&edge, "/r", "bytes=100-199").await;
    assert_eq!(partial.status, 206);
    partial.assert_cache_status_has("hit", "");
    assert_eq!(
        partial.header("content-range").as_deref(),
        Some("bytes 100-199/1000")
    );
    assert_eq!(partial.header("content-length").as_deref(), Some("100"));
    assert!(partial.body[..] == body[100..200], "the bytes of the range");

    let suffix = get_range(&edge, "/r", "bytes=-10").await;
    assert_eq!(suffix.status, 206);
    assert_eq!(
        suffix.header("content-range").as_deref(),
        Some("bytes 990-999/1000")
    );
    assert!(suffix.body[..] == body[990..]);
    assert_eq!(origin.hits("/r"), 1);
}

async fn a_range_miss_fills_the_full_object_without_sending_range_upstream(topology: Topology) {
    let body = patterned_body(1000);
    let (origin, edge) = cdn_serving(topology, "/rm", range_reply(&body)).await;

    let partial = get_range(&edge, "/rm", "bytes=0-99").await;
    assert_eq!(partial.status, 206);
    assert!(partial.body[..] == body[..100]);
    let sent = last_sent(&origin, "/rm", "range");
    assert_eq!(sent, None, "the fill asks for everything");
    partial.assert_cache_status_has("stored", "");

    let full = edge.get("/rm").await;
    assert_eq!(full.status, 200);
    full.assert_cache_status_has("hit", "");
    assert!(full.body == body, "the full object was stored");
    assert_eq!(origin.hits("/rm"), 1);
}

/// The parts of a multipart/byteranges body: each part's header block and data.
fn multipart_parts(body: &[u8], boundary: &str) -> Vec<(String, Vec<u8>)> {
    let delimiter = format!("\r\n--{boundary}").into_bytes();
    let mut text = b"\r\n".to_vec();
    text.extend_from_slice(body);
    let mut pieces = Vec::new();
    let mut at = 0;
    while let Some(found) = find(&text[at..], &delimiter) {
        pieces.push(text[at..at + found].to_vec());
        at += found + delimiter.len();
    }
    pieces.push(text[at..].to_vec());
    assert!(pieces[0].is_empty(), "no preamble expected");
    let last = pieces.pop().unwrap();
    assert_eq!(last, b"--\r\n", "closing delimiter");
    pieces[1..]
        .iter()
        .map(|piece| {
            let piece = piece
                .strip_prefix(b"\r\n")
                .expect("CRLF after the boundary");
            let split = find(piece, b"\r\n\r\n").expect("part headers end");
            let head = String::from_utf8(piece[..split].to_vec()).unwrap();
            (head, piece[split + 4..].to_vec())
        })
        .collect()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

async fn several_ranges_are_served_as_multipart_byteranges(topology: Topology) {
    let body = patterned_body(1000);
    let (origin, edge) = cdn_fetched_then(topology, "/mr", range_reply(&body), 0).await;

    let partial = get_range(&edge, "/mr", "bytes=0-9,500-519").await;
    assert_eq!(partial.status, 206);
    assert_eq!(
        partial.header("content-range"),
        None,
        "ranges are in the parts"
    );
    let content_type = partial.header("content-type").unwrap();
    let boundary = content_type
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap_or_else(|| panic!("{content_type}"));
    assert_eq!(
        partial.header("content-length").unwrap(),
        partial.body.len().to_string()
    );
    let parts = multipart_parts(&partial.body, boundary);
    assert_eq!(parts.len(), 2, "{parts:?}");
    let expected = [(0usize, 9usize), (500, 519)];
    for ((head, data), (start, end)) in parts.iter().zip(expected) {
        let head = head.to_ascii_lowercase();
        assert!(
            head.contains(&format!("content-range: bytes {start}-{end}/1000")),
            "{head}"
        );
        assert!(
            head.contains("content-type: application/octet-stream"),
            "{head}"
        );
        assert!(data[..] == body[start..=end], "part {start}-{end}");
    }
    assert_eq!(origin.hits("/mr"), 1);
}

async fn an_unsatisfiable_range_gets_416_with_the_length(topology: Topology) {
    let reply = range_reply(&patterned_body(1000));
    let (origin, edge) = cdn_fetched_then(topology, "/ur", reply, 0).await;

    let response = get_range(&edge, "/ur", "bytes=5000-6000").await;
    assert_eq!(response.status, 416);
    assert_eq!(
        response.header("content-range").as_deref(),
        Some("bytes */1000")
    );
    assert!(response.body.is_empty());
    assert_eq!(origin.hits("/ur"), 1);
}

async fn more_ranges_than_max_ranges_get_the_full_response(topology: Topology) {
    let (origin, edge) = start_origin_and_cdn(topology, &["cache.max_ranges = 2"]).await;
    let body = patterned_body(1000);
    origin.on("/many", range_reply(&body));
    edge.get("/many").await;

    let two = get_range(&edge, "/many", "bytes=0-9,100-109").await;
    assert_eq!(
        two.status, 206,
        "two ranges are within cache.max_ranges = 2"
    );
    let three = get_range(&edge, "/many", "bytes=0-9,100-109,200-209").await;
    assert_eq!(
        three.status, 200,
        "three are more than cache.max_ranges = 2"
    );
    assert_eq!(three.header("content-range"), None);
    assert!(three.body == body, "the full representation");
}

support::in_both_topologies!(
    vary_keeps_one_stored_variant_per_request_header_value,
    vary_star_is_never_stored,
    vary_matching_normalises_whitespace_and_line_folding_in_request_values,
    vary_miss_is_reported_when_the_url_is_stored_but_no_variant_matches,
    uri_miss_is_reported_when_nothing_is_stored_for_the_url,
    head_is_answered_from_a_stored_get_without_the_origin,
    head_for_a_stale_get_is_checked_with_a_head_and_a_matching_etag_freshens_it,
    head_for_a_stale_get_with_a_different_etag_drops_the_stored_get,
    a_single_range_is_served_206_from_a_stored_full_response,
    a_range_miss_fills_the_full_object_without_sending_range_upstream,
    several_ranges_are_served_as_multipart_byteranges,
    an_unsatisfiable_range_gets_416_with_the_length,
    more_ranges_than_max_ranges_get_the_full_response,
);
