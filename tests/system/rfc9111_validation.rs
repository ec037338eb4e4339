//! RFC 9111 §4.3 validation at the edge: a stale stored response is revalidated with its
//! validators, a 304 freshens it (§4.3.4), a 200 replaces it; and clients' own conditional
//! requests are answered 304 from a fresh stored response (RFC 9110 §13).

use verge_testkit as support;

use std::time::Duration;

use support::scenario::{cdn_fetched_then, cdn_serving, last_sent, not_modified, tagged};
use support::{
    http_date, start_edge, start_origin_and_cdn, RawOrigin, Reply, TestResponse, Topology,
};

/// An hour before `now`, as an HTTP date: the `Last-Modified` of the stored responses here.
fn an_hour_before(now: std::time::SystemTime) -> String {
    http_date(now - Duration::from_secs(3600))
}

async fn stale_response_with_an_etag_is_revalidated_with_if_none_match(topology: Topology) {
    let reply = tagged("body", "max-age=10", "\"v1\"");
    let (origin, edge) = cdn_serving(topology, "/etag", reply).await;
    let first = edge.get("/etag").await;
    assert!(last_sent(&origin, "/etag", "if-none-match").is_none());
    first.assert_cache_status_has("stored", "");
    edge.advance(20);

    let second = edge.get("/etag").await;
    assert_eq!(second.status, 200);
    assert_eq!(origin.hits("/etag"), 2);
    let sent = last_sent(&origin, "/etag", "if-none-match");
    assert_eq!(sent.as_deref(), Some("\"v1\""));
}

async fn stale_response_with_last_modified_is_revalidated_with_if_modified_since(
    topology: Topology,
) {
    let (origin, edge) = start_origin_and_cdn(topology, &[]).await;
    let modified = an_hour_before(edge.now());
    let reply = Reply::ok("body").cache_control("max-age=10");
    origin.on("/lm", reply.header("last-modified", &modified));
    edge.get("/lm").await;
    assert!(last_sent(&origin, "/lm", "if-modified-since").is_none());
    edge.advance(20);

    edge.get("/lm").await;
    assert_eq!(origin.hits("/lm"), 2);
    let sent = last_sent(&origin, "/lm", "if-modified-since");
    assert_eq!(sent.as_deref(), Some(modified.as_str()));
}

async fn not_modified_freshens_the_stored_response(topology: Topology) {
    let stored = tagged("the stored body", "max-age=10", "\"v1\"").header("x-version", "1");
    let reply = stored.header("x-untouched", "kept");
    let (origin, edge) = cdn_fetched_then(topology, "/fresh", reply, 20).await;
    let answer = not_modified("max-age=200", "\"v1\"").header("x-version", "2");
    origin.on("/fresh", answer);

    let revalidated = edge.get("/fresh").await;
    assert_eq!(revalidated.status, 200);
    assert_eq!(revalidated.text(), "the stored body");
    let status = revalidated.cache_status_entry();
    assert!(
        status.starts_with("verge-edge; fwd=stale; fwd-status=304;"),
        "{status}"
    );
    revalidated.assert_cache_status_has("stored", "");
    revalidated.assert_cache_status_has("ttl=200", "the 304's Cache-Control applies");
    assert_eq!(
        revalidated.header("cache-control").as_deref(),
        Some("max-age=200")
    );
    assert_eq!(revalidated.header("x-version").as_deref(), Some("2"));
    assert_eq!(revalidated.header("x-untouched").as_deref(), Some("kept"));

    edge.advance(150);
    let hit = edge.get("/fresh").await;
    hit.assert_cache_status_has("hit", "");
    assert_eq!(hit.text(), "the stored body");
    assert_eq!(hit.header("x-version").as_deref(), Some("2"));
    assert_eq!(origin.hits("/fresh"), 2);

    let metrics = edge.metrics().await;
    metrics.assert_value(
        "verge_revalidations_total",
        &[("result", "not_modified")],
        1.0,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_modified_never_changes_the_content_length() {
    // Scripted bytes: hyper as a server would drop the 304's Content-Length.
    let origin = RawOrigin::start().await;
    let edge = start_edge(origin.addr(), &[]).await;
    let body = "0123456789".repeat(100);
    origin.push(format!(
        "HTTP/1.1 200 OK\r\ncache-control: max-age=10\r\netag: \"v1\"\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    ));
    // A 304 may carry the selected representation's length; it must not replace the stored
    // body's framing (RFC 9111 §3.2).
    origin.push(
        "HTTP/1.1 304 Not Modified\r\ncache-control: max-age=60\r\netag: \"v1\"\r\n\
         content-length: 7\r\n\r\n",
    );
    edge.get("/len").await;
    edge.advance(20);

    let revalidated = edge.get("/len").await;
    revalidated.assert_cache_status_has("fwd-status=304", "");
    let heads = origin.requests();
    assert_eq!(heads.len(), 2, "{heads:?}");
    assert!(
        heads[1]
            .to_ascii_lowercase()
            .contains("if-none-match: \"v1\""),
        "{}",
        heads[1]
    );
    assert_eq!(
        revalidated.header("content-length").as_deref(),
        Some("1000")
    );
    assert_eq!(revalidated.text(), body, "the stored body, whole");
    let hit = edge.get("/len").await;
    hit.assert_cache_status_has("hit", "");
    assert_eq!(hit.header("content-length").as_deref(), Some("1000"));
    assert_eq!(hit.text(), body);
}

async fn a_200_answer_to_revalidation_replaces_the_stored_response(topology: Topology) {
    let old = tagged("old", "max-age=10", "\"v1\"");
    let (origin, edge) = cdn_fetched_then(topology, "/replace", old, 20).await;
    origin.on("/replace", tagged("new", "max-age=60", "\"v2\""));

    let replaced = edge.get("/replace").await;
    assert_eq!(replaced.text(), "new");
    replaced.assert_cache_status_has_all(&["fwd=stale", "fwd-status=200", "stored"], "");
    let hit = edge.get("/replace").await;
    hit.assert_cache_status_has("hit", "");
    assert_eq!(hit.text(), "new");
    assert_eq!(hit.header("etag").as_deref(), Some("\"v2\""));
    assert_eq!(origin.hits("/replace"), 2);
}

/// Stores `/c` (ETag `"v1"`, Last-Modified an hour ago), then sends `conditions` and returns
/// the answer; the origin must have been asked once only.
async fn conditional_against_fresh(
    topology: Topology,
    conditions: &[(&str, &str)],
) -> TestResponse {
    let (origin, edge) = start_origin_and_cdn(topology, &[]).await;
    let modified = an_hour_before(edge.now());
    let reply = tagged("full body", "max-age=100", "\"v1\"");
    origin.on("/c", reply.header("last-modified", &modified));
    edge.get("/c").await;
    let response = edge.get_with("/c", conditions).await;
    assert_eq!(origin.hits("/c"), 1, "answered from cache");
    response
}

/// [`conditional_against_fresh`], answered 304 from the stored response.
async fn assert_not_modified_from_fresh(topology: Topology, conditions: &[(&str, &str)]) {
    let response = conditional_against_fresh(topology, conditions).await;
    assert_eq!(response.status, 304, "{:?}", response.headers);
    assert!(response.body.is_empty(), "a 304 has no body");
    assert_eq!(response.header("etag").as_deref(), Some("\"v1\""));
    response.assert_cache_status_has("hit", "");
}

async fn client_if_none_match_is_answered_304_from_a_fresh_response(topology: Topology) {
    assert_not_modified_from_fresh(topology, &[("if-none-match", "\"v1\"")]).await;
}

async fn client_weak_if_none_match_is_answered_304(topology: Topology) {
    assert_not_modified_from_fresh(topology, &[("if-none-match", "W/\"v1\"")]).await;
}

async fn client_if_none_match_list_containing_the_etag_is_answered_304(topology: Topology) {
    assert_not_modified_from_fresh(topology, &[("if-none-match", "\"x\", \"v1\"")]).await;
}

async fn client_if_none_match_star_is_answered_304(topology: Topology) {
    assert_not_modified_from_fresh(topology, &[("if-none-match", "*")]).await;
}

async fn client_if_modified_since_is_answered_304(topology: Topology) {
    let now = std::time::SystemTime::now();
    // Later than the stored Last-Modified (an hour before the edge's clock started).
    let since = http_date(now - Duration::from_secs(60));
    assert_not_modified_from_fresh(topology, &[("if-modified-since", &since)]).await;
}

async fn client_if_none_match_that_does_not_match_gets_the_full_response(topology: Topology) {
    let response = conditional_against_fresh(topology, &[("if-none-match", "\"v2\"")]).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "full body");
}

async fn client_if_modified_since_before_last_modified_gets_the_full_response(topology: Topology) {
    let now = std::time::SystemTime::now();
    let since = http_date(now - Duration::from_secs(7200));
    let response = conditional_against_fresh(topology, &[("if-modified-since", &since)]).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "full body");
}

async fn client_conditionals_are_not_forwarded_on_a_miss(topology: Topology) {
    let reply = tagged("full body", "max-age=100", "\"v1\"");
    let (origin, edge) = cdn_serving(topology, "/cm", reply).await;
    let response = edge.get_with("/cm", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(
        last_sent(&origin, "/cm", "if-none-match"),
        None,
        "the fill asks for the whole representation to store it"
    );
    response.assert_cache_status_has("stored", "");
    assert_eq!(
        response.status, 304,
        "and the client's condition is then evaluated"
    );
    let full = edge.get("/cm").await;
    assert_eq!(full.text(), "full body");
    assert_eq!(origin.hits("/cm"), 1);
}

support::in_both_topologies!(
    stale_response_with_an_etag_is_revalidated_with_if_none_match,
    stale_response_with_last_modified_is_revalidated_with_if_modified_since,
    not_modified_freshens_the_stored_response,
    a_200_answer_to_revalidation_replaces_the_stored_response,
    client_if_none_match_is_answered_304_from_a_fresh_response,
    client_weak_if_none_match_is_answered_304,
    client_if_none_match_list_containing_the_etag_is_answered_304,
    client_if_none_match_star_is_answered_304,
    client_if_modified_since_is_answered_304,
    client_if_none_match_that_does_not_match_gets_the_full_response,
    client_if_modified_since_before_last_modified_gets_the_full_response,
    client_conditionals_are_not_forwarded_on_a_miss,
);
