//! Property tests of what control reads from etcd, which anyone with write access to the
//! cluster (or a member answering garbage) chooses: no watch message, key or purge record makes
//! a replica panic, a purge record reads back as written, and the mirror never holds a gap.

use std::sync::Arc;

use base64::Engine as _;
use proptest::prelude::*;

use super::etcd::parse_watch_line;
use super::keys::{Key, Keys};
use super::shared::{Applied, SharedLog, StoredPurge};
use crate::hub::properties::{purge_spec, text};
use crate::log::Since;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A watch message as the gateway might send it, or something close to one.
fn watch_line() -> impl Strategy<Value = Vec<u8>> {
    let kv = (
        prop::collection::vec(any::<u8>(), 0..24),
        prop::collection::vec(any::<u8>(), 0..48),
        any::<i64>(),
    )
        .prop_map(|(key, value, rev)| {
            serde_json::json!({"key": b64(&key), "value": b64(&value),
                "mod_revision": rev.to_string(), "create_revision": rev})
        });
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        text().prop_map(String::into_bytes),
        (
            prop::collection::vec((kv, any::<bool>()), 0..4),
            any::<bool>(),
            any::<i64>()
        )
            .prop_map(|(events, canceled, compact)| {
                let events: Vec<_> = events
                    .into_iter()
                    .map(|(kv, delete)| {
                        if delete {
                            serde_json::json!({"type": "DELETE", "kv": kv})
                        } else {
                            serde_json::json!({"kv": kv})
                        }
                    })
                    .collect();
                serde_json::json!({"result": {"header": {"revision": "7"}, "events": events,
                    "canceled": canceled, "compact_revision": compact.to_string()}})
                .to_string()
                .into_bytes()
            }),
    ]
}

fn log() -> Arc<SharedLog> {
    super::shared::offline_log("/p")
}

proptest! {
    #[test]
    fn no_watch_message_makes_the_reader_panic(line in watch_line()) {
        let _ = parse_watch_line(&line);
    }

    #[test]
    fn no_key_makes_the_layout_panic_and_written_keys_read_back(
        key in prop::collection::vec(any::<u8>(), 0..40),
        seq in any::<u64>(),
        id in "[a-z0-9._-]{1,16}",
    ) {
        let keys = Keys::new("/p");
        let _ = keys.parse(&key);
        prop_assert_eq!(keys.parse(&keys.purge(seq)), Key::Purge(seq));
        prop_assert_eq!(keys.parse(&keys.node(&id)), Key::Node(id.clone()));
    }

    #[test]
    fn the_mirror_holds_every_purge_in_order_whatever_the_watch_delivers(
        deliveries in prop::collection::vec((1u64..12, prop::option::of(purge_spec()), any::<bool>()), 0..40),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let log = log();
            let keys = Keys::new("/p");
            for (seq, spec, garbage) in deliveries {
                let value = match (&spec, garbage) {
                    (Some(spec), false) => serde_json::to_vec(&StoredPurge {
                        seq,
                        accepted_at_ms: 1,
                        spec: spec.clone(),
                        replica: "r".into(),
                        nonce: 0,
                    })
                    .unwrap(),
                    _ => b"\xff not json".to_vec(),
                };
                let head = log.head();
                match log.apply(&keys.purge(seq), Some(&value)) {
                    Applied::New(records) => {
                        prop_assert_eq!(records.len(), 1);
                        let record = records[0].clone();
                        prop_assert_eq!(record.seq, head + 1);
                        match (spec, garbage) {
                            (Some(spec), false) => prop_assert_eq!(record.spec, spec),
                            // Unreadable: a purge of everything, never nothing.
                            _ => prop_assert!(record.spec.all),
                        }
                    }
                    Applied::Gap { .. } => prop_assert!(seq > head + 1),
                    Applied::Nothing => prop_assert!(seq <= head),
                }
            }
            // Whatever is held runs without gaps up to the head.
            let head = log.head();
            if let Since::Records(records) = log.since(0, usize::MAX) {
                for (i, record) in records.iter().enumerate() {
                    prop_assert_eq!(record.seq, i as u64 + 1);
                }
                prop_assert_eq!(records.last().map_or(0, |r| r.seq), head);
            }
            Ok(())
        })?;
    }
}
