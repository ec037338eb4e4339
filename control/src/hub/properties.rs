//! Property tests of the push stream's lines: every event control can send is one JSON line that
//! a node reads back as the same event, and no line a node might read makes parsing panic.

use proptest::prelude::*;
use verge_config::wire::{Event, NodeEntry, NodeRole, PurgeSpec, RegionRoute, RoutingTable};
use verge_config::{NodeId, RegionId};

use super::line;

/// Any text, line breaks, quotes, escapes and control characters included.
pub(crate) fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z:/.?&=-]{0,24}",
        prop::collection::vec(any::<char>(), 0..16).prop_map(String::from_iter),
        prop::collection::vec(
            prop::sample::select(vec!["\n", "\r", "\"", "\\", "\u{2028}", "\0", "é", "x"]),
            0..8
        )
        .prop_map(|pieces| pieces.concat()),
    ]
}

pub(crate) fn purge_spec() -> impl Strategy<Value = PurgeSpec> {
    let texts = || prop::collection::vec(text(), 0..4);
    (texts(), texts(), texts(), any::<bool>(), any::<bool>()).prop_map(
        |(urls, prefixes, tags, all, soft)| PurgeSpec {
            urls,
            prefixes,
            tags,
            all,
            soft,
        },
    )
}

pub(crate) fn id_text() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._-]{1,64}"
}

fn node_entry() -> impl Strategy<Value = NodeEntry> {
    (
        id_text(),
        any::<bool>(),
        id_text(),
        (text(), text()),
        any::<u32>(),
        any::<bool>(),
    )
        .prop_map(
            |(id, shield, region, (data_url, admin_url), weight, healthy)| NodeEntry {
                id: NodeId::new(&id).unwrap(),
                role: if shield {
                    NodeRole::Shield
                } else {
                    NodeRole::Edge
                },
                region: RegionId::new(&region).unwrap(),
                data_url,
                admin_url,
                weight,
                healthy,
            },
        )
}

fn routing_table() -> impl Strategy<Value = RoutingTable> {
    let region = (
        id_text(),
        prop::collection::vec(node_entry(), 0..3),
        prop::collection::vec(id_text(), 0..3),
    )
        .prop_map(|(id, edges, fallback)| RegionRoute {
            id: RegionId::new(&id).unwrap(),
            edges,
            fallback: fallback.iter().map(|r| RegionId::new(r).unwrap()).collect(),
        });
    (
        any::<u64>(),
        prop::collection::vec(region, 0..3),
        prop::collection::vec(node_entry(), 0..3),
    )
        .prop_map(|(version, regions, shields)| RoutingTable {
            version,
            regions,
            shields,
            rules: Vec::new(),
            tiers: None,
        })
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (any::<u64>(), purge_spec()).prop_map(|(seq, spec)| Event::Purge { seq, spec }),
        (any::<u64>(), routing_table()).prop_map(|(seq, table)| Event::Routing { seq, table }),
        (any::<u64>(), text()).prop_map(|(seq, reason)| Event::Resync { seq, reason }),
        any::<u64>().prop_map(|seq| Event::Keepalive { seq }),
    ]
}

/// JSON punctuation in any order with `words` (the keys and values of some message) between,
/// and arbitrary bytes: what a reader of such messages must get through without panicking.
pub(crate) fn json_ish(words: &[&'static str]) -> impl Strategy<Value = Vec<u8>> {
    let punctuation = ["{", "}", "[", "]", ",", ":"];
    let pieces: Vec<&'static str> = punctuation.iter().chain(words).copied().collect();
    prop_oneof![
        prop::collection::vec(prop::sample::select(pieces), 0..24)
            .prop_map(|pieces| pieces.concat().into_bytes()),
        prop::collection::vec(any::<u8>(), 0..64),
    ]
}

/// Lines a node might read: JSON-ish pieces of events, and arbitrary bytes.
fn stream_line() -> impl Strategy<Value = Vec<u8>> {
    json_ish(&[
        "\"type\"",
        "\"purge\"",
        "\"routing\"",
        "\"resync\"",
        "\"keepalive\"",
        "\"seq\"",
        "\"spec\"",
        "\"urls\"",
        "\"all\"",
        "\"table\"",
        "\"reason\"",
        "true",
        "null",
        "7",
        "-1",
        "18446744073709551616",
        "1e3",
        "\"x\"",
        "\"\\u0000\"",
    ])
}

proptest! {
    #[test]
    fn every_event_is_one_json_line_that_reads_back(event in event()) {
        let bytes = line(&event);
        prop_assert_eq!(bytes.last(), Some(&b'\n'));
        prop_assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 1);
        let back: Event = serde_json::from_slice(&bytes[..bytes.len() - 1]).unwrap();
        prop_assert_eq!(back, event);
    }

    #[test]
    fn no_stream_line_makes_event_parsing_panic(bytes in stream_line()) {
        if let Ok(event) = serde_json::from_slice::<Event>(&bytes) {
            // What was read is sent on unchanged.
            let again: Event = serde_json::from_slice(&line(&event)).unwrap();
            prop_assert_eq!(again, event);
        }
    }
}
