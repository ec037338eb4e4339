//! Routing tables: computed from the registry, versioned, and published only when they change.

use std::collections::BTreeMap;

use verge_config::rules::RawRule;
use verge_config::wire::{NodeEntry, NodeRole, RegionRoute, RoutingTable};
use verge_config::RegionId;

/// Computes the table for these nodes (version left at 0). Regions are those named in the
/// configuration plus those any node is in; each region's fallback is its configured list, then
/// every other known region in name order.
pub fn compute(
    nodes: impl Iterator<Item = NodeEntry>,
    proximity: &BTreeMap<RegionId, Vec<RegionId>>,
    rules: &[RawRule],
) -> RoutingTable {
    let mut edges: BTreeMap<RegionId, Vec<NodeEntry>> =
        proximity.keys().map(|r| (r.clone(), Vec::new())).collect();
    let mut shields = Vec::new();
    for node in nodes {
        match node.role {
            NodeRole::Edge => edges.entry(node.region.clone()).or_default().push(node),
            NodeRole::Shield => shields.push(node),
        }
    }
    let known: Vec<RegionId> = edges.keys().cloned().collect();
    let regions = edges
        .into_iter()
        .map(|(id, edges)| {
            let mut fallback: Vec<RegionId> = proximity.get(&id).cloned().unwrap_or_default();
            for other in &known {
                if *other != id && !fallback.contains(other) {
                    fallback.push(other.clone());
                }
            }
            RegionRoute {
                id,
                edges,
                fallback,
            }
        })
        .collect();
    RoutingTable {
        version: 0,
        regions,
        shields,
        rules: rules.to_vec(),
    }
}

/// Whether two tables route alike (everything but the version).
pub fn same_routes(a: &RoutingTable, b: &RoutingTable) -> bool {
    a.regions == b.regions && a.shields == b.shields && a.rules == b.rules
}

#[cfg(test)]
mod tests {
    use super::*;
    use verge_config::NodeId;

    fn node(id: &str, role: NodeRole, region: &str, healthy: bool) -> NodeEntry {
        NodeEntry {
            id: NodeId::new(id).unwrap(),
            role,
            region: RegionId::new(region).unwrap(),
            data_url: format!("http://{id}"),
            admin_url: format!("http://{id}-admin"),
            weight: 1,
            healthy,
        }
    }

    fn region(id: &str) -> RegionId {
        RegionId::new(id).unwrap()
    }

    #[test]
    fn edges_group_by_region_and_shields_are_listed_with_health() {
        let proximity = BTreeMap::from([(region("us"), vec![region("eu")])]);
        let table = compute(
            [
                node("us-1", NodeRole::Edge, "us", true),
                node("eu-1", NodeRole::Edge, "eu", false),
                node("ap-1", NodeRole::Edge, "ap", true),
                node("s1", NodeRole::Shield, "us", false),
            ]
            .into_iter(),
            &proximity,
            &[],
        );
        let ids: Vec<&str> = table.regions.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["ap", "eu", "us"]);
        let us = &table.regions[2];
        assert_eq!(us.edges.len(), 1);
        // Configured order first, then the rest by name.
        assert_eq!(us.fallback, vec![region("eu"), region("ap")]);
        assert!(!table.regions[1].edges[0].healthy);
        assert_eq!(table.shields.len(), 1);
        assert_eq!(table.healthy_shields().count(), 0);
    }

    #[test]
    fn a_health_change_is_a_different_table_and_a_version_is_not() {
        let proximity = BTreeMap::new();
        let a = compute(
            [node("s1", NodeRole::Shield, "us", true)].into_iter(),
            &proximity,
            &[],
        );
        let mut b = a.clone();
        b.version = 9;
        assert!(same_routes(&a, &b));
        let c = compute(
            [node("s1", NodeRole::Shield, "us", false)].into_iter(),
            &proximity,
            &[],
        );
        assert!(!same_routes(&a, &c));
        let rules = [RawRule {
            path: Some("/".into()),
            ..RawRule::default()
        }];
        let d = compute(
            [node("s1", NodeRole::Shield, "us", true)].into_iter(),
            &proximity,
            &rules,
        );
        assert!(!same_routes(&a, &d), "new rules are a new table");
    }
}
