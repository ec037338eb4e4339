//! Routing tables: computed from the registry, versioned, and published only when they change.

use std::collections::BTreeMap;

use verge_config::rules::RawRule;
use verge_config::tiers::{self, LatencyMatrix, PlanInput, PlanShield, TiersConfig, Topology};
use verge_config::wire::{NodeEntry, NodeRole, RegionRoute, RoutingTable};
use verge_config::{NodeId, RegionId};

/// What a table is computed from beside the nodes.
pub struct Inputs<'a> {
    /// Per region, the other regions nearest first, as configured.
    pub proximity: &'a BTreeMap<RegionId, Vec<RegionId>>,
    pub rules: &'a [RawRule],
    pub tiers: &'a TiersConfig,
    /// The latency matrix the plan is made from.
    pub latency: &'a LatencyMatrix,
}

/// Computes the table for these nodes (version left at 0). Regions are those named in the
/// configuration plus those any node is in; each region's fallback is its configured list, then
/// every other known region in name order. The tier plan names each region's shields.
pub fn compute(nodes: impl Iterator<Item = NodeEntry>, inputs: &Inputs<'_>) -> RoutingTable {
    let proximity = inputs.proximity;
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
    let regions: Vec<RegionRoute> = edges
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
    let fallbacks: BTreeMap<RegionId, Vec<RegionId>> = regions
        .iter()
        .map(|r| (r.id.clone(), r.fallback.clone()))
        .collect();
    let healthy: Vec<PlanShield> = shields
        .iter()
        .filter(|s| s.healthy)
        .map(|s| PlanShield {
            id: s.id.clone(),
            region: s.region.clone(),
        })
        .collect();
    let plan = tiers::plan(&PlanInput {
        tiers: inputs.tiers,
        regions: &known,
        shields: &healthy,
        proximity: &fallbacks,
        latency: inputs.latency,
    });
    RoutingTable {
        version: 0,
        regions,
        shields,
        rules: inputs.rules.to_vec(),
        tiers: Some(plan),
    }
}

/// Whether two tables route alike (everything but the version).
pub fn same_routes(a: &RoutingTable, b: &RoutingTable) -> bool {
    // The plan's sets and what they were chosen from; its costs alone do not make a table.
    type Sets<'a> = Vec<(&'a RegionId, &'a Vec<NodeId>, &'a str)>;
    fn sets(t: &RoutingTable) -> Option<(Topology, Sets<'_>, &[NodeId])> {
        t.tiers.as_ref().map(|plan| {
            let sets = plan
                .regions
                .iter()
                .map(|r| (&r.region, &r.shields, r.basis.as_str()))
                .collect();
            (plan.topology, sets, plan.upper.as_slice())
        })
    }
    a.regions == b.regions && a.shields == b.shields && a.rules == b.rules && sets(a) == sets(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compute_with(
        nodes: impl Iterator<Item = NodeEntry>,
        proximity: &BTreeMap<RegionId, Vec<RegionId>>,
        rules: &[RawRule],
    ) -> RoutingTable {
        compute(
            nodes,
            &Inputs {
                proximity,
                rules,
                tiers: &TiersConfig::default(),
                latency: &LatencyMatrix::default(),
            },
        )
    }

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
        let table = compute_with(
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
        let a = compute_with(
            [node("s1", NodeRole::Shield, "us", true)].into_iter(),
            &proximity,
            &[],
        );
        let mut b = a.clone();
        b.version = 9;
        assert!(same_routes(&a, &b));
        let c = compute_with(
            [node("s1", NodeRole::Shield, "us", false)].into_iter(),
            &proximity,
            &[],
        );
        assert!(!same_routes(&a, &c));
        let rules = [RawRule {
            path: Some("/".into()),
            ..RawRule::default()
        }];
        let d = compute_with(
            [node("s1", NodeRole::Shield, "us", true)].into_iter(),
            &proximity,
            &rules,
        );
        assert!(!same_routes(&a, &d), "new rules are a new table");
    }
}
