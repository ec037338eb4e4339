//! Serving stale at the edge: RFC 5861 `stale-while-revalidate` (served at once, refreshed once
//! in the background) and `stale-if-error` (served when the origin fails, within its window),
//! and the directives under which a stale response is never served (RFC 9111 §4.2.4, §5.2.2).

use verge_testkit as support;

use std::time::Duration;

use support::scenario::{cdn_fetched_then, slow, tagged};
use support::{
    start_origin_and_cdn, wait_until, FakeOrigin, HttpClient, Reply, TestCdn, TestEdge,
    TestResponse, Topology,
};

/// Bound on waiting for a background refresh to reach the origin and be stored.
const REFRESH_DEADLINE: Duration = Duration::from_secs(5);

async fn get(edge: &TestEdge, path: &str) -> TestResponse {
    edge.get(path).await
}

/// The CDN with `old` stored at `path` under `cache_control`, then the clock moved on by
/// `advance` seconds.
async fn old_then(
    topology: Topology,
    path: &str,
    cache_control: &str,
    advance: u64,
) -> (FakeOrigin, TestCdn) {
    let reply = Reply::ok("old").cache_control(cache_control);
    cdn_fetched_then(topology, path, reply, advance).await
}

// ---- stale-while-revalidate ----

async fn stale_while_revalidate_serves_stale_at_once_and_refreshes_once_in_the_background(
    topology: Topology,
) {
    // 20s stale, within the 60s window.
    let swr = "max-age=10, stale-while-revalidate=60";
    let (origin, edge) = old_then(topology, "/swr", swr, 30).await;
    // The refresh is slow, so every request below is answered before it lands.
    origin.on("/swr", slow("new", "max-age=100", 500));

    let first = get(&edge, "/swr").await;
    assert_eq!(first.status, 200);
    assert_eq!(first.text(), "old", "served stale, not after the refresh");
    first.assert_cache_status_has_all(&["hit", "detail=stale-while-revalidate"], "");

    let client = HttpClient::http1();
    for response in client.get_concurrently(&edge.url("/swr"), 8).await {
        assert_eq!(response.status, 200);
        let stale =
            response.text() == "old" && response.cache_status_has("detail=stale-while-revalidate");
        let refreshed = response.text() == "new" && response.cache_status_has("hit");
        assert!(
            stale || refreshed,
            "{} / {}",
            response.text(),
            response.cache_status()
        );
    }

    wait_until(
        "the background refresh to reach the origin",
        REFRESH_DEADLINE,
        || {
            let hits = origin.hits("/swr");
            async move { hits >= 2 }
        },
    )
    .await;
    let edge_ref = &edge;
    wait_until(
        "the refreshed response to be stored",
        REFRESH_DEADLINE,
        || async move { get(edge_ref, "/swr").await.text() == "new" },
    )
    .await;

    let after = get(&edge, "/swr").await;
    assert_eq!(after.text(), "new");
    assert!(
        after.cache_status_has("hit") && !after.cache_status().contains("detail="),
        "a fresh hit: {}",
        after.cache_status()
    );
    assert_eq!(
        origin.hits("/swr"),
        2,
        "nine stale requests make exactly one background refresh"
    );
}

async fn stale_while_revalidate_outside_its_window_waits_for_the_origin(topology: Topology) {
    // 40s stale, beyond the 30s window.
    let swr = "max-age=10, stale-while-revalidate=30";
    let (origin, edge) = old_then(topology, "/swr-out", swr, 50).await;
    origin.on("/swr-out", Reply::ok("new").cache_control("max-age=100"));

    let response = get(&edge, "/swr-out").await;
    assert_eq!(response.text(), "new", "fetched before answering");
    response.assert_cache_status_has("fwd=stale", "");
    assert_eq!(origin.hits("/swr-out"), 2);
}

// ---- stale-if-error ----

/// Asserts that `response` is the stored `old` object served under stale-if-error, after `why`
/// from the origin.
fn assert_stale_if_error(response: &TestResponse, why: &str) {
    assert_eq!(response.status, 200, "{why}: {}", response.text());
    assert_eq!(response.text(), "old", "{why}");
    response.assert_cache_status_has("detail=stale-if-error", why);
}

async fn stale_if_error_serves_stale_when_the_origin_resets(topology: Topology) {
    let sie = "max-age=10, stale-if-error=60";
    let (origin, edge) = old_then(topology, "/sie", sie, 30).await;
    origin.on("/sie", Reply::reset());

    let response = get(&edge, "/sie").await;
    assert_stale_if_error(&response, "a reset");
    assert!(origin.hits("/sie") >= 2, "the origin was tried");
}

async fn stale_if_error_serves_stale_when_the_origin_answers_500_502_503_or_504(
    topology: Topology,
) {
    let sie = "max-age=10, stale-if-error=60";
    let (origin, edge) = old_then(topology, "/sie5", sie, 30).await;

    for status in [500, 502, 503, 504] {
        origin.on(
            "/sie5",
            Reply::ok(format!("origin error {status}")).with_status(status),
        );
        let before = origin.hits("/sie5");
        let response = get(&edge, "/sie5").await;
        assert_eq!(origin.hits("/sie5"), before + 1, "{status}: origin asked");
        assert_stale_if_error(&response, &format!("{status}"));
    }
}

async fn stale_if_error_outside_its_window_returns_the_error(topology: Topology) {
    // 90s stale, beyond the 60s window.
    let sie = "max-age=10, stale-if-error=60";
    let (origin, edge) = old_then(topology, "/sie-out", sie, 100).await;

    origin.on("/sie-out", Reply::reset());
    let reset = get(&edge, "/sie-out").await;
    assert_eq!(reset.status, 502, "{}", reset.text());
    assert!(!reset.cache_status_has("detail=stale-if-error"));

    origin.on("/sie-out", Reply::ok("unavailable").with_status(503));
    let unavailable = get(&edge, "/sie-out").await;
    assert_eq!(unavailable.status, 503);
    assert_eq!(unavailable.text(), "unavailable");
}

// ---- never stale ----

/// A response with `cache_control` (which also grants `stale-while-revalidate` and
/// `stale-if-error`) is never served stale: not to a plain request, not under `max-stale`, not
/// when the origin fails.
async fn assert_never_served_stale(origin: &FakeOrigin, edge: &TestEdge, cache_control: &str) {
    let path = "/never-stale";
    let cc = format!("{cache_control}, stale-while-revalidate=600, stale-if-error=600");
    origin.on(path, Reply::ok("old").cache_control(&cc));
    get(edge, path).await;
    edge.advance(30);

    origin.on(path, Reply::ok("new").cache_control(&cc));
    let plain = get(edge, path).await;
    assert_eq!(
        plain.text(),
        "new",
        "{cache_control}: not served stale while revalidating ({})",
        plain.cache_status()
    );
    assert_eq!(origin.hits(path), 2, "{cache_control}");

    edge.advance(30);
    let max_stale = edge.get_with(path, &[("cache-control", "max-stale")]).await;
    assert!(
        !max_stale.cache_status_has("hit"),
        "{cache_control}: not served stale under max-stale ({})",
        max_stale.cache_status()
    );
    assert_eq!(origin.hits(path), 3, "{cache_control}");

    edge.advance(30);
    origin.on(path, Reply::reset());
    let reset = get(edge, path).await;
    assert_eq!(
        reset.status,
        502,
        "{cache_control}: not served stale when the origin fails ({})",
        reset.cache_status()
    );
    origin.on(path, Reply::ok("down").with_status(503));
    let unavailable = get(edge, path).await;
    assert_eq!(
        unavailable.status,
        503,
        "{cache_control}: not served stale on a 503 ({})",
        unavailable.cache_status()
    );
}

async fn must_revalidate_is_never_served_stale(topology: Topology) {
    let (origin, edge) = start_origin_and_cdn(topology, &[]).await;
    assert_never_served_stale(&origin, &edge, "max-age=10, must-revalidate").await;
}

async fn proxy_revalidate_is_never_served_stale(topology: Topology) {
    let (origin, edge) = start_origin_and_cdn(topology, &[]).await;
    assert_never_served_stale(&origin, &edge, "max-age=10, proxy-revalidate").await;
}

async fn s_maxage_is_never_served_stale(topology: Topology) {
    let (origin, edge) = start_origin_and_cdn(topology, &[]).await;
    assert_never_served_stale(&origin, &edge, "s-maxage=10").await;
}

async fn no_cache_is_never_served_on_error(topology: Topology) {
    let no_cache = "no-cache, max-age=10, stale-if-error=600";
    let reply = tagged("old", no_cache, "\"n1\"");
    let (origin, edge) = cdn_fetched_then(topology, "/nc-err", reply, 0).await;

    origin.on("/nc-err", Reply::reset());
    let fresh_but_no_cache = get(&edge, "/nc-err").await;
    assert_eq!(
        fresh_but_no_cache.status,
        502,
        "no-cache: not reused without validation ({})",
        fresh_but_no_cache.cache_status()
    );
    edge.advance(30);
    let stale = get(&edge, "/nc-err").await;
    assert_eq!(
        stale.status,
        502,
        "no-cache: not served under stale-if-error ({})",
        stale.cache_status()
    );
}

support::in_both_topologies!(
    stale_while_revalidate_serves_stale_at_once_and_refreshes_once_in_the_background,
    stale_while_revalidate_outside_its_window_waits_for_the_origin,
    stale_if_error_serves_stale_when_the_origin_resets,
    stale_if_error_serves_stale_when_the_origin_answers_500_502_503_or_504,
    stale_if_error_outside_its_window_returns_the_error,
    must_revalidate_is_never_served_stale,
    proxy_revalidate_is_never_served_stale,
    s_maxage_is_never_served_stale,
    no_cache_is_never_served_on_error,
);
