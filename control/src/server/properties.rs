//! Property tests of what the admin and node APIs read: purge bodies (`POST /v1/purge`),
//! registrations (`POST /v1/register`) and the push stream's query
//! (`GET /v1/events?node=ID&since=SEQ`).

use proptest::prelude::*;
use std::time::Instant;

use verge_config::wire::{PurgeSpec, Registration};

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

/// Bodies made of the pieces of a registration, and arbitrary bytes.
fn registration_body() -> impl Strategy<Value = Vec<u8>> {
    json_ish(&[
        "\"id\"",
        "\"role\"",
        "\"edge\"",
        "\"shield\"",
        "\"region\"",
        "\"us\"",
        "\"data_url\"",
        "\"admin_url\"",
        "\"http://a.test:1\"",
        "\"weight\"",
        "\"version\"",
        "\"shields\"",
        "\"s1\"",
        "\"a b\"",
        "\"upstreams\"",
        "\"up\"",
        "\"rtt_ms\"",
        "\"http://o.test\"",
        "-1",
        "1e308",
        "1",
        "null",
        "\"\\ud800\"",
    ])
}

proptest! {
    #[test]
    fn any_registration_body_is_read_checked_and_registered_without_panic(
        body in registration_body()
    ) {
        if let Ok(mut registration) = serde_json::from_slice::<Registration>(&body) {
            let _ = super::check_registration(&registration);
            let mut registry = crate::registry::Registry::new(4);
            let upstreams = std::mem::take(&mut registration.upstreams);
            let id = registration.id.clone();
            if registry.register(registration, Instant::now()).is_ok() {
                registry.report_upstreams(&id, upstreams).unwrap();
            }
            let _ = registry.awaited_shields();
            let matrix = registry.latency_matrix();
            let values = matrix
                .edge_to_shield
                .values()
                .flat_map(|m| m.values())
                .chain(matrix.shield_to_origin.values())
                .chain(matrix.edge_to_origin.values());
            for value in values {
                prop_assert!((0.0..=crate::latency::MAX_RTT_MS).contains(value));
            }
        }
    }

    #[test]
    fn round_trips_a_registration_brings_are_bounded_and_checked(
        reports in prop::collection::vec(
            (prop::sample::select(vec!["s1", "s2", "stranger", "http://o.test"]), -5.0e4f64..1.0e5),
            0..40,
        )
    ) {
        let upstreams: Vec<serde_json::Value> = reports
            .iter()
            .map(|(id, rtt)| serde_json::json!({"id": id, "up": true, "rtt_ms": rtt}))
            .collect();
        let body = serde_json::json!({
            "id": "e1", "role": "edge", "region": "us", "data_url": "http://a.test:1",
            "admin_url": "http://a.test:2", "weight": 1, "shields": ["s1"],
            "upstreams": upstreams,
        });
        let mut registration: Registration = serde_json::from_value(body).unwrap();
        let mut registry = crate::registry::Registry::new(4);
        let upstreams = std::mem::take(&mut registration.upstreams);
        registry.register(registration, Instant::now()).unwrap();
        let id = verge_config::NodeId::new("e1").unwrap();
        let ignored = registry.report_upstreams(&id, upstreams).unwrap();
        // Out of range, or about a shield the edge neither routes through nor control knows.
        let bad = reports
            .iter()
            .filter(|(id, rtt)| {
                !(0.0..=crate::latency::MAX_RTT_MS).contains(rtt) || *id == "s2" || *id == "stranger"
            })
            .count();
        prop_assert_eq!(ignored.len(), bad);
        let matrix = registry.latency_matrix();
        let us = verge_config::RegionId::new("us").unwrap();
        let to_shields = matrix.edge_to_shield.get(&us).cloned().unwrap_or_default();
        prop_assert!(to_shields.keys().all(|s| s.as_str() == "s1"));
        prop_assert!(to_shields.values().all(|v| (0.0..=crate::latency::MAX_RTT_MS).contains(v)));
    }

    #[test]
    fn the_shields_a_registration_names_are_bounded_and_awaited_until_they_register(
        ids in prop::collection::vec((0..3000u32).prop_map(|n| format!("s{n}")), 0..1100)
    ) {
        let body = serde_json::json!({
            "id": "e1", "role": "edge", "region": "us", "data_url": "http://a.test:1",
            "admin_url": "http://a.test:2", "weight": 1, "shields": ids,
        });
        let registration: Registration = serde_json::from_value(body).unwrap();
        let mut registry = crate::registry::Registry::new(4);
        registry.register(registration, Instant::now()).unwrap();
        let awaited = registry.awaited_shields();
        prop_assert!(awaited.len() <= 1024);
        prop_assert!(awaited.windows(2).all(|w| w[0] < w[1]), "sorted, each once");
        let kept: std::collections::HashSet<&str> =
            ids.iter().take(1024).map(String::as_str).collect();
        prop_assert!(awaited.iter().all(|id| kept.contains(id.as_str())));
    }

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
