//! The control client's pure rules (purge order, silence). Framing and backoff are tested
//! beside their code; a real edge following an in-test control server is tested in the edge
//! crate.

use super::*;

// ---- pure parts ----

#[test]
fn purges_apply_in_order_skip_duplicates_and_detect_gaps() {
    assert_eq!(purge_order(0, 1), PurgeOrder::Next);
    assert_eq!(purge_order(41, 42), PurgeOrder::Next);
    assert_eq!(purge_order(42, 42), PurgeOrder::Duplicate);
    assert_eq!(purge_order(42, 7), PurgeOrder::Duplicate);
    assert_eq!(purge_order(42, 44), PurgeOrder::Gap);
    assert_eq!(purge_order(0, 2), PurgeOrder::Gap);
}

#[test]
fn a_stream_is_dead_after_three_heartbeats_and_five_seconds_of_silence() {
    assert_eq!(
        silence_limit(Duration::from_secs(1)),
        Duration::from_secs(8)
    );
    assert_eq!(
        silence_limit(Duration::from_millis(50)),
        Duration::from_millis(5150)
    );
}

#[test]
fn traffic_counts_client_requests_not_what_the_node_answers_itself() {
    use crate::metrics::{NodeMetrics, RequestOutcome};
    let registry = Registry::new();
    let metrics = NodeMetrics::register(&registry).unwrap();
    let ok = http::StatusCode::OK;
    let took = Duration::from_millis(1);
    metrics.observe_request(RequestOutcome::Hit, ok, took);
    metrics.observe_request(RequestOutcome::Hit, http::StatusCode::NOT_FOUND, took);
    metrics.observe_request(RequestOutcome::Miss, ok, took);
    metrics.observe_upstream(crate::failover::Attempt::Ok, took);
    for _ in 0..10 {
        // Latency probes from the edges below.
        metrics.observe_request(RequestOutcome::Local, ok, took);
    }
    assert_eq!(
        traffic(&registry),
        Traffic {
            requests: 3,
            hits: 2,
            upstream_requests: 1,
        }
    );
}
