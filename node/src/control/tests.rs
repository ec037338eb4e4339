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
