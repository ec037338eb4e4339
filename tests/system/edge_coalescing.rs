//! Concurrent misses for one key: one upstream request serves them all (single flight), and a
//! response that turns out not storable does not make waiters queue behind each other.

// A panic is how a test fails: unwrapping is the point here.

use verge_testkit as support;

use std::time::{Duration, Instant};

use support::scenario::{edge_serving, slow};
use support::{HttpClient, Reply};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_for_one_key_make_one_origin_request() {
    let body = support::patterned_body(4096);
    let reply = slow(body.clone(), "max-age=60", 200);
    let (origin, edge) = edge_serving("/cold", reply, &[]).await;
    let coalesced_before = edge
        .metrics()
        .await
        .value_or_zero("verge_coalesced_requests_total", &[]);

    let responses = HttpClient::http1()
        .get_concurrently(&edge.url("/cold"), 100)
        .await;
    let mut answered = 0;
    for response in responses {
        assert_eq!(response.status, 200);
        assert!(response.body == body, "a waiter got a different body");
        answered += 1;
    }
    assert_eq!(answered, 100);
    assert_eq!(
        origin.hits("/cold"),
        1,
        "100 concurrent misses must make exactly one origin request"
    );

    let metrics = edge.metrics().await;
    let coalesced = metrics.value_or_zero("verge_coalesced_requests_total", &[]);
    assert!(
        coalesced > coalesced_before,
        "verge_coalesced_requests_total did not rise ({coalesced_before} -> {coalesced})"
    );
    let served_without_origin = metrics
        .value_or_zero("verge_requests_total", &[("cache_status", "coalesced")])
        + metrics.value_or_zero("verge_requests_total", &[("cache_status", "hit")]);
    assert_eq!(
        served_without_origin,
        99.0,
        "every request but the leader is served from the fill:\n{}",
        metrics.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_on_an_uncacheable_response_do_not_queue_behind_each_other() {
    let delay = Duration::from_millis(300);
    let reply = Reply::ok("per-user").cache_control("private").delay(delay);
    let (origin, edge) = edge_serving("/slow-private", reply, &[]).await;

    let client = HttpClient::http1();
    let started = Instant::now();
    for response in client
        .get_concurrently(&edge.url("/slow-private"), 10)
        .await
    {
        assert_eq!(response.status, 200);
        assert_eq!(response.text(), "per-user");
    }
    let took = started.elapsed();

    assert!(
        took < Duration::from_millis(1500),
        "10 requests for an uncacheable URL took {took:?}: waiters were served one after another \
         (serial would be {:?})",
        delay * 10
    );
    assert_eq!(
        origin.hits("/slow-private"),
        10,
        "each request for a private response goes to the origin"
    );
    let metrics = edge.metrics().await;
    assert_eq!(
        metrics.value("verge_hit_for_miss_keys", &[]),
        Some(1.0),
        "the key is remembered as not storable:\n{}",
        metrics.text()
    );

    // Remembered as hit-for-miss: later requests go straight upstream, in parallel.
    let started = Instant::now();
    for response in client.get_concurrently(&edge.url("/slow-private"), 5).await {
        assert_eq!(response.status, 200);
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(1000),
        "hit-for-miss requests took {took:?}"
    );
    assert_eq!(origin.hits("/slow-private"), 15);
}
