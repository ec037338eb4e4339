//! What an edge stores and for how long: hits after misses, responses it must not store, and
//! freshness from `max-age`, `s-maxage` and `Expires`/`Date`, with time driven by the node's
//! manual clock.

// A panic is how a test fails: unwrapping is the point here.

use verge_testkit as support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::scenario::edge_serving;
use support::{http_date, start_origin_and_edge, FakeOrigin, HttpClient, Reply, TestEdge};

/// Requests `path` three times: each is answered `body` by the origin, a miss not stored, for
/// `detail`.
async fn assert_never_stored(
    origin: &FakeOrigin,
    edge: &TestEdge,
    path: &str,
    body: &str,
    detail: &str,
) {
    for n in 1..=3 {
        let response = edge.get(path).await;
        assert_eq!(response.status, 200);
        assert_eq!(response.text(), body);
        let status = response.cache_status();
        assert!(status.contains("fwd=uri-miss"), "{status}");
        assert!(status.contains(&format!("detail={detail}")), "{status}");
        assert!(!status.contains("stored"), "{status}");
        assert_eq!(origin.hits(path), n, "request {n} must reach the origin");
    }
}

/// A `200` with `body`, `Date: now` and `Expires: expires`.
fn dated(body: &'static str, now: SystemTime, expires: SystemTime) -> Reply {
    Reply::ok(body)
        .header("date", &http_date(now))
        .header("expires", &http_date(expires))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_request_is_a_hit_served_without_the_origin() {
    let reply = Reply::ok("hello").cache_control("max-age=60");
    let (origin, edge) = edge_serving("/a", reply, &[]).await;

    let miss = edge.get("/a").await;
    assert_eq!(miss.status, 200);
    assert_eq!(miss.text(), "hello");
    let status = miss.cache_status();
    assert!(status.starts_with("verge-edge;"), "{status}");
    assert!(status.contains("fwd=uri-miss"), "{status}");
    assert!(status.contains("stored"), "{status}");
    assert!(status.contains("fwd-status=200"), "{status}");
    assert_eq!(origin.hits("/a"), 1);

    let hit = edge.get("/a").await;
    assert_eq!(hit.status, 200);
    assert_eq!(hit.text(), "hello");
    assert_eq!(hit.cache_status(), "verge-edge; hit; ttl=60");
    assert_eq!(hit.header("age").as_deref(), Some("0"));
    assert_eq!(origin.hits("/a"), 1, "a hit must not reach the origin");

    edge.advance(10);
    let later = edge.get("/a").await;
    assert_eq!(later.cache_status(), "verge-edge; hit; ttl=50");
    assert_eq!(later.header("age").as_deref(), Some("10"));
    assert_eq!(origin.hits("/a"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_store_responses_are_not_stored() {
    let reply = Reply::ok("secret").cache_control("no-store");
    let (origin, edge) = edge_serving("/ns", reply, &[]).await;

    assert_never_stored(&origin, &edge, "/ns", "secret", "no-store").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_responses_are_not_stored() {
    let reply = Reply::ok("mine").cache_control("private, max-age=60");
    let (origin, edge) = edge_serving("/private", reply, &[]).await;

    assert_never_stored(&origin, &edge, "/private", "mine", "private").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_age_keeps_a_response_fresh_until_it_runs_out() {
    let reply = Reply::ok("m").cache_control("max-age=100");
    let (origin, edge) = edge_serving("/m", reply, &[]).await;

    edge.get("/m").await;
    edge.advance(90);
    let fresh = edge.get("/m").await;
    fresh.assert_cache_status_has("hit", "");
    assert_eq!(origin.hits("/m"), 1, "fresh at 90s of 100s");

    edge.advance(15);
    let refetched = edge.get("/m").await;
    let status = refetched.cache_status();
    assert!(
        status.contains("fwd=stale"),
        "stale at 105s of 100s: {status}"
    );
    assert!(
        status.contains("stored") && status.contains("ttl=100"),
        "{status}"
    );
    assert_eq!(origin.hits("/m"), 2, "a stale response is fetched again");
    assert_eq!(refetched.text(), "m");

    // The refetched copy is stored again and fresh from now on.
    let hit = edge.get("/m").await;
    hit.assert_cache_status_has("hit", "");
    assert_eq!(origin.hits("/m"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s_maxage_outlives_a_shorter_max_age() {
    let reply = Reply::ok("s").cache_control("max-age=10, s-maxage=100");
    let (origin, edge) = edge_serving("/s", reply, &[]).await;

    let miss = edge.get("/s").await;
    miss.assert_cache_status_has("ttl=100", "");
    edge.advance(50);
    let hit = edge.get("/s").await;
    hit.assert_cache_status_has("hit", "fresh by s-maxage though stale by max-age");
    assert_eq!(origin.hits("/s"), 1);

    edge.advance(55);
    edge.get("/s").await;
    assert_eq!(origin.hits("/s"), 2, "stale at 105s of s-maxage=100");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s_maxage_shortens_a_longer_max_age() {
    let reply = Reply::ok("s").cache_control("max-age=1000, s-maxage=10");
    let (origin, edge) = edge_serving("/short", reply, &[]).await;

    edge.get("/short").await;
    edge.advance(5);
    edge.get("/short").await;
    assert_eq!(origin.hits("/short"), 1, "fresh at 5s of s-maxage=10");
    edge.advance(10);
    let refetched = edge.get("/short").await;
    refetched.assert_cache_status_has("fwd=stale", "");
    assert_eq!(
        origin.hits("/short"),
        2,
        "a shared cache obeys s-maxage over max-age"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expires_minus_date_is_the_freshness_lifetime() {
    let (origin, edge) = start_origin_and_edge(&[]).await;
    let now = edge.now();
    origin.on("/e", dated("e", now, now + Duration::from_secs(100)));

    let miss = edge.get("/e").await;
    miss.assert_cache_status_has_all(&["stored", "ttl=100"], "");

    edge.advance(90);
    let hit = edge.get("/e").await;
    hit.assert_cache_status_has("hit", "");
    assert_eq!(origin.hits("/e"), 1, "fresh at 90s of 100s");

    edge.advance(15);
    edge.get("/e").await;
    assert_eq!(origin.hits("/e"), 2, "expired at 105s of 100s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expires_in_the_past_is_not_stored() {
    let (origin, edge) = start_origin_and_edge(&[]).await;
    let now = edge.now();
    origin.on("/past", dated("p", now, now - Duration::from_secs(60)));
    edge.get("/past").await;
    edge.get("/past").await;
    assert_eq!(origin.hits("/past"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_without_freshness_are_not_stored() {
    let (origin, edge) = edge_serving("/plain", Reply::ok("p"), &[]).await;
    let first = edge.get("/plain").await;
    first.assert_cache_status_has("detail=no-freshness", "");
    edge.get("/plain").await;
    assert_eq!(origin.hits("/plain"), 2);
}

#[test]
fn http_dates_are_imf_fixdate() {
    let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
    assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
    let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
    assert_eq!(http_date(leap), "Tue, 29 Feb 2000 00:00:00 GMT");
}

#[tokio::test]
async fn origin_connections_come_from_the_configured_source_address() {
    let reply = Reply::ok("x");
    let (origin, edge) =
        edge_serving("/x", reply, &["upstream.source_address = \"127.1.0.9\""]).await;
    let response = HttpClient::http1().get(&edge.url("/x")).await;
    assert_eq!(response.status, 200);
    let request = origin.last_request("/x").unwrap();
    assert_eq!(request.peer.ip().to_string(), "127.1.0.9");
}
