//! Upstream failures become gateway errors that say what went wrong: refused → 502
//! `upstream-connect-error`, reset → 502, too slow → 504 `upstream-timeout`.

// A panic is how a test fails: unwrapping is the point here.

use verge_testkit as support;

use std::time::{Duration, Instant};

use support::scenario::edge_serving;
use support::{start_edge, FakeOrigin, HttpClient, Reply, TestEdge};

/// Asserts the edge's count of upstream requests that ended in `result`.
async fn assert_upstream_requests(edge: &TestEdge, result: &str, want: f64) {
    let metrics = edge.metrics().await;
    metrics.assert_value("verge_upstream_requests_total", &[("result", result)], want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_refusing_connections_gets_502_connect_error() {
    let dead = verge_testkit::DeadAddr::new();
    let edge = start_edge(dead.addr, &[]).await;

    let response = HttpClient::http1().get(&edge.url("/x")).await;
    assert_eq!(response.status, 502, "{}", response.text());
    let status = response.cache_status();
    assert!(status.contains("detail=upstream-connect-error"), "{status}");

    assert_upstream_requests(&edge, "connect_error", 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_resetting_the_connection_gets_502() {
    let (origin, edge) = edge_serving("/reset", Reply::reset(), &[]).await;

    let response = HttpClient::http1().get(&edge.url("/reset")).await;
    assert_eq!(response.status, 502, "{}", response.text());
    let status = response.cache_status();
    assert!(status.contains("detail=upstream-error"), "{status}");
    assert!(origin.hits("/reset") >= 1, "the request reached the origin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_slower_than_response_timeout_gets_504() {
    let reply = Reply::ok("late")
        .cache_control("max-age=60")
        .delay(Duration::from_secs(2));
    let (_origin, edge) =
        edge_serving("/slow", reply, &["upstream.response_timeout = \"200ms\""]).await;

    let started = Instant::now();
    let response = HttpClient::http1().get(&edge.url("/slow")).await;
    let took = started.elapsed();
    assert_eq!(response.status, 504, "{}", response.text());
    let status = response.cache_status();
    assert!(status.contains("detail=upstream-timeout"), "{status}");
    assert!(
        took < Duration::from_millis(1500),
        "the edge gave up after {took:?}, not after its 200ms response timeout"
    );

    assert_upstream_requests(&edge, "timeout", 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fill_is_shared_with_its_waiters_and_not_cached() {
    let reply = Reply::reset().delay(Duration::from_millis(200));
    let (origin, edge) = edge_serving("/flaky", reply, &[]).await;
    let client = HttpClient::http1();

    for response in client.get_concurrently(&edge.url("/flaky"), 10).await {
        assert_eq!(response.status, 502);
    }
    let during = origin.hits("/flaky");
    assert!(
        during < 10,
        "concurrent misses share one failing fill, yet the origin saw {during} requests"
    );

    origin.on("/flaky", Reply::ok("back").cache_control("max-age=60"));
    let response = edge.get("/flaky").await;
    assert_eq!(response.status, 200, "an error is not cached");
    assert_eq!(response.text(), "back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_upstream_connection_limit_wait_then_get_503() {
    let origin = FakeOrigin::start().await;
    origin.on("/busy", Reply::ok("slow").delay(Duration::from_millis(600)));
    let edge = start_edge(
        origin.addr(),
        &[
            "upstream.max_connections = 1",
            "upstream.connect_timeout = \"100ms\"",
        ],
    )
    .await;
    let client = HttpClient::http1();

    // The first request takes the only slot for 600 ms; the second waits 100 ms for it.
    let first = {
        let client = client.clone();
        let url = edge.url("/busy?a");
        tokio::spawn(async move { client.get(&url).await })
    };
    support::wait_until(
        "the first request reaches the origin",
        support::IO_TIMEOUT,
        || {
            let hits = origin.hits("/busy");
            async move { hits == 1 }
        },
    )
    .await;
    let second = edge.get("/busy?b").await;
    assert_eq!(second.status, 503, "{}", second.text());
    second.assert_cache_status_has("detail=upstream-saturated", "");
    assert!(
        second
            .text()
            .contains("all 1 upstream connections are busy"),
        "{}",
        second.text()
    );
    assert_eq!(
        origin.hits("/busy"),
        1,
        "the refused request never reached the origin"
    );

    let first = first.await.unwrap();
    assert_eq!(first.status, 200);
    // The slot is free again once the first response has been delivered.
    let third = edge.get("/busy?c").await;
    assert_eq!(third.status, 200, "{}", third.text());

    let metrics = edge.metrics().await;
    metrics.assert_value(
        "verge_upstream_requests_total",
        &[("result", "saturated")],
        1.0,
    );
    metrics.assert_value("verge_upstream_connections_max", &[], 1.0);
    metrics.assert_value("verge_upstream_connections_in_use", &[], 0.0);
}
