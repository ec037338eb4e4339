//! The latency matrix: round-trip times the nodes report in their heartbeats (edges to their
//! shields and to the origin they may fall back to, shields to their origin servers), smoothed
//! per node and target, checked, and combined into one [`LatencyMatrix`] for the tier plan.
//!
//! A report is ignored (and counted by reason) when its value is not a plausible round trip
//! (negative, not finite, over [`MAX_RTT_MS`]) or when an edge names a shield control does not
//! know. Each node's value per target is an exponentially weighted mean of its reports; a
//! region's value to a shield is the median over the region's healthy edges, and a shield's
//! value to the origin the least over its origin servers (named by URL) that are up. A region's
//! value straight to the origin is the median over its edges, and only when every healthy edge
//! there reports one: an edge that may not fetch from the origin reports none, and then the plan
//! must not send the region there.

use std::collections::BTreeMap;

use verge_config::tiers::LatencyMatrix;
use verge_config::wire::{NodeRole, UpstreamHealth};
use verge_config::{NodeId, RegionId};

/// Longest round trip believed: past it a report is garbage, not a slow path.
pub const MAX_RTT_MS: f64 = 60_000.0;
/// Weight of a new report in a node's smoothed value.
const SMOOTHING: f64 = 0.3;
/// Most targets kept per node.
const MAX_TARGETS: usize = 256;

/// Why a reported round trip was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// Negative, not finite, or longer than [`MAX_RTT_MS`].
    OutOfRange,
    /// An edge's report about a shield control does not know.
    UnknownTarget,
    /// Past [`MAX_TARGETS`] for one node.
    TooMany,
}

impl Ignored {
    pub const ALL: [Ignored; 3] = [
        Ignored::OutOfRange,
        Ignored::UnknownTarget,
        Ignored::TooMany,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Ignored::OutOfRange => "out_of_range",
            Ignored::UnknownTarget => "unknown_target",
            Ignored::TooMany => "too_many",
        }
    }
}

/// One node's smoothed round trips, by target id.
#[derive(Debug, Clone, Default)]
pub struct NodeLatency {
    smoothed: BTreeMap<String, f64>,
}

impl NodeLatency {
    /// Takes a heartbeat's reports in; `is_shield` says whether a target id is a known shield
    /// (checked for edges only: a shield's targets are its own origin servers). Returns what
    /// was ignored.
    pub fn report(
        &mut self,
        role: NodeRole,
        upstreams: &[UpstreamHealth],
        is_shield: impl Fn(&str) -> bool,
    ) -> Vec<Ignored> {
        let mut ignored = Vec::new();
        for upstream in upstreams {
            let Some(rtt) = upstream.rtt_ms else { continue };
            if !rtt.is_finite() || !(0.0..=MAX_RTT_MS).contains(&rtt) {
                ignored.push(Ignored::OutOfRange);
                continue;
            }
            if role == NodeRole::Edge && !is_origin(&upstream.id) && !is_shield(&upstream.id) {
                ignored.push(Ignored::UnknownTarget);
                continue;
            }
            let full = self.smoothed.len() >= MAX_TARGETS;
            match self.smoothed.get_mut(&upstream.id) {
                Some(value) => *value += SMOOTHING * (rtt - *value),
                None if full => ignored.push(Ignored::TooMany),
                None => {
                    self.smoothed.insert(upstream.id.clone(), rtt);
                }
            }
        }
        ignored
    }

    pub fn get(&self, target: &str) -> Option<f64> {
        self.smoothed.get(target).copied()
    }
}

/// Whether an upstream id names an origin server (by URL) rather than a node (by id, which
/// never holds `:`).
fn is_origin(id: &str) -> bool {
    id.contains("://")
}

/// What the matrix is built from: one healthy node, its latency and the upstreams it last
/// reported up.
pub struct Reporter<'a> {
    pub id: &'a NodeId,
    pub role: NodeRole,
    pub region: &'a RegionId,
    pub latency: &'a NodeLatency,
    pub upstreams: &'a [UpstreamHealth],
}

impl Reporter<'_> {
    /// The least smoothed round trip to an origin server (named by URL) the node reported up.
    fn nearest_live_origin(&self) -> Option<f64> {
        self.upstreams
            .iter()
            .filter(|u| u.up && is_origin(&u.id))
            .filter_map(|u| self.latency.get(&u.id))
            .reduce(f64::min)
    }
}

/// Combines the healthy nodes' smoothed values into one matrix.
pub fn matrix<'a>(nodes: impl Iterator<Item = Reporter<'a>>) -> LatencyMatrix {
    let mut per_region: BTreeMap<RegionId, BTreeMap<NodeId, Vec<f64>>> = BTreeMap::new();
    // Per region: its edges' values straight to the origin, and whether an edge had none.
    let mut direct: BTreeMap<RegionId, (Vec<f64>, bool)> = BTreeMap::new();
    let mut out = LatencyMatrix::default();
    for node in nodes {
        match node.role {
            NodeRole::Edge => {
                let entry = direct.entry(node.region.clone()).or_default();
                match node.nearest_live_origin() {
                    Some(value) => entry.0.push(value),
                    None => entry.1 = true,
                }
                for (target, value) in &node.latency.smoothed {
                    let Ok(shield) = NodeId::new(target) else {
                        continue;
                    };
                    per_region
                        .entry(node.region.clone())
                        .or_default()
                        .entry(shield)
                        .or_default()
                        .push(*value);
                }
            }
            NodeRole::Shield => {
                // Origin servers are named by their URL; a lower shield's upper shields (two
                // levels) by their node id, and are not the origin.
                if let Some(best) = node.nearest_live_origin() {
                    out.shield_to_origin.insert(node.id.clone(), best);
                }
            }
        }
    }
    for (region, shields) in per_region {
        let row = out.edge_to_shield.entry(region).or_default();
        for (shield, mut values) in shields {
            values.sort_by(f64::total_cmp);
            row.insert(shield, values[values.len() / 2]);
        }
    }
    for (region, (mut values, some_without)) in direct {
        if some_without || values.is_empty() {
            continue;
        }
        values.sort_by(f64::total_cmp);
        out.edge_to_origin.insert(region, values[values.len() / 2]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(id: &str, rtt: Option<f64>) -> UpstreamHealth {
        UpstreamHealth {
            id: id.into(),
            up: true,
            rtt_ms: rtt,
        }
    }

    #[test]
    fn nonsense_reports_are_ignored_and_named() {
        let mut node = NodeLatency::default();
        let ignored = node.report(
            NodeRole::Edge,
            &[
                up("s1", Some(-1.0)),
                up("s1", Some(f64::INFINITY)),
                up("s1", Some(MAX_RTT_MS + 1.0)),
                up("ghost", Some(10.0)),
                up("s1", Some(10.0)),
                up("s1", None),
            ],
            |id| id == "s1",
        );
        assert_eq!(
            ignored,
            [
                Ignored::OutOfRange,
                Ignored::OutOfRange,
                Ignored::OutOfRange,
                Ignored::UnknownTarget
            ]
        );
        assert_eq!(node.get("s1"), Some(10.0));
        assert_eq!(node.get("ghost"), None);
        // Smoothed, not replaced.
        node.report(NodeRole::Edge, &[up("s1", Some(20.0))], |_| true);
        assert_eq!(node.get("s1"), Some(13.0));
        // An edge's origin (named by URL) is no unknown shield.
        assert!(node
            .report(NodeRole::Edge, &[up("http://o:80", Some(4.0))], |_| false)
            .is_empty());
        assert_eq!(node.get("http://o:80"), Some(4.0));
        // A shield's targets are its origin servers: any id.
        let mut shield = NodeLatency::default();
        assert!(shield
            .report(NodeRole::Shield, &[up("http://o:80", Some(5.0))], |_| false)
            .is_empty());
    }

    #[test]
    fn regions_take_the_median_and_shields_their_nearest_live_origin() {
        let region = RegionId::new("ap").unwrap();
        let ids: Vec<NodeId> = ["ap-1", "ap-2", "ap-3", "s1"]
            .iter()
            .map(|i| NodeId::new(i).unwrap())
            .collect();
        let mut edges = Vec::new();
        for value in [100.0, 160.0, 9000.0] {
            let mut n = NodeLatency::default();
            n.report(NodeRole::Edge, &[up("s1", Some(value))], |_| true);
            edges.push(n);
        }
        let mut shield = NodeLatency::default();
        shield.report(
            NodeRole::Shield,
            &[
                up("http://o1", Some(3.0)),
                up("http://o2", Some(1.0)),
                up("upper-shield", Some(0.5)),
            ],
            |_| false,
        );
        let shield_upstreams = [
            up("http://o1", None),
            UpstreamHealth {
                up: false,
                ..up("http://o2", None)
            },
            up("upper-shield", None),
        ];
        let reporters = edges
            .iter()
            .zip(&ids)
            .map(|(latency, id)| Reporter {
                id,
                role: NodeRole::Edge,
                region: &region,
                latency,
                upstreams: &[],
            })
            .chain(std::iter::once(Reporter {
                id: &ids[3],
                role: NodeRole::Shield,
                region: &region,
                latency: &shield,
                upstreams: &shield_upstreams,
            }));
        let m = matrix(reporters);
        assert_eq!(m.edge_to_shield[&region][&ids[3]], 160.0);
        // o2 is nearer but down; the upper shield is not the origin.
        assert_eq!(m.shield_to_origin[&ids[3]], 3.0);
    }

    #[test]
    fn a_region_goes_straight_to_the_origin_only_when_every_edge_there_measured_it() {
        let (us, ap) = (RegionId::new("us").unwrap(), RegionId::new("ap").unwrap());
        let ids: Vec<NodeId> = ["us-1", "us-2", "us-3", "ap-1", "ap-2"]
            .iter()
            .map(|i| NodeId::new(i).unwrap())
            .collect();
        // us: three edges measured the origin; ap: one did, the other may not fetch from it.
        let reports: [(f64, bool); 5] = [
            (2.0, true),
            (9.0, true),
            (3.0, true),
            (160.0, true),
            (150.0, false),
        ];
        let mut latencies = Vec::new();
        let mut upstreams = Vec::new();
        for (value, reports_origin) in reports {
            let mut n = NodeLatency::default();
            let list = if reports_origin {
                vec![up("s1", Some(1.0)), up("http://origin:80", Some(value))]
            } else {
                vec![up("s1", Some(1.0))]
            };
            n.report(NodeRole::Edge, &list, |id| id == "s1");
            latencies.push(n);
            upstreams.push(list);
        }
        let m = matrix(ids.iter().enumerate().map(|(i, id)| Reporter {
            id,
            role: NodeRole::Edge,
            region: if i < 3 { &us } else { &ap },
            latency: &latencies[i],
            upstreams: &upstreams[i],
        }));
        assert_eq!(m.edge_to_origin.get(&us), Some(&3.0));
        assert_eq!(m.edge_to_origin.get(&ap), None);
        // The origin is not taken for a shield.
        assert_eq!(m.edge_to_shield[&us].len(), 1);
    }
}
