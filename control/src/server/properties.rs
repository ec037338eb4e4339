//! Property tests of what the admin and node APIs read: purge bodies (`POST /v1/purge`) and the
//! push stream's query (`GET /v1/events?node=ID&since=SEQ`).

use proptest::prelude::*;
use verge_config::wire::PurgeSpec;

use super::events_query;
use crate::hub::properties::{id_text, json_ish, purge_spec, text};

/// Bodies made of the pieces of a purge spec, and arbitrary bytes.
fn purge_body() -> impl Strategy<Value = Vec<u8>> {
    json_ish(&[
        "\"urls\"",
        "\"prefixes\"",
        "\"tags\"",
        "\"all\"",
        "\"soft\"",
        "\"extra\"",
        "\"http://a.test/x\"",
        "\"ftp://a\"",
        "\"a b\"",
        "true",
        "null",
        "1",
        "\"\\ud800\"",
    ])
}

proptest! {
    #[test]
    fn any_purge_body_is_read_and_checked_without_panic(body in purge_body()) {
        if let Ok(spec) = serde_json::from_slice::<PurgeSpec>(&body) {
            let _ = spec.validate();
        }
    }

    #[test]
    fn a_serialised_purge_spec_reads_back_and_checks_the_same(spec in purge_spec()) {
        let body = serde_json::to_vec(&spec).unwrap();
        let back: PurgeSpec = serde_json::from_slice(&body).unwrap();
        prop_assert_eq!(back.validate(), spec.validate());
        prop_assert_eq!(back, spec);
    }

    #[test]
    fn any_events_query_is_read_without_panic(query in prop_oneof![
        text(),
        prop::collection::vec(
            prop::sample::select(vec!["node", "since", "=", "&", "e1", "42", "-1", "%20", "x"]),
            0..10,
        )
        .prop_map(|pieces| pieces.concat()),
    ]) {
        let _ = events_query(&query);
    }

    #[test]
    fn an_events_query_reads_back(
        node in id_text(),
        since in prop::option::of(any::<u64>()),
        since_first in any::<bool>(),
    ) {
        let mut pairs = vec![format!("node={node}")];
        if let Some(since) = since {
            pairs.push(format!("since={since}"));
        }
        if since_first {
            pairs.reverse();
        }
        let (got, got_since) = events_query(&pairs.join("&")).unwrap();
        prop_assert_eq!(got.as_str(), node.as_str());
        prop_assert_eq!(got_since, since);
    }
}
