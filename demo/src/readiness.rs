//! When a demo is ready: a pure rule over what control reports (its latest routing table and
//! its view of each node), looked at again and again until it holds. See [`Readiness`]. With
//! control replicas, what each replica reports is merged first ([`merge`]).

use crate::topology::{NodePlan, Role};

/// One look at control: its latest routing table and what it knows of each node.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub table_version: u64,
    /// Shields the latest table names healthy.
    pub healthy_shields: usize,
    pub nodes: Vec<NodeSeen>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NodeSeen {
    pub id: String,
    /// Up in control's health checks and holding its event stream.
    pub up: bool,
    /// The routing table version the node last applied.
    pub table_version: u64,
}

/// One look at every control replica as one look: the newest table any replica has; a node up
/// and connected when a replica sees it so (a replica sees connected only the nodes it
/// streams to), with the newest table version any replica has from it.
pub fn merge(looks: &[Observed]) -> Observed {
    let mut merged = Observed::default();
    for look in looks {
        if look.table_version >= merged.table_version {
            merged.table_version = look.table_version;
            merged.healthy_shields = look.healthy_shields;
        }
        for node in &look.nodes {
            match merged.nodes.iter_mut().find(|n| n.id == node.id) {
                Some(known) => {
                    known.up |= node.up;
                    known.table_version = known.table_version.max(node.table_version);
                }
                None => merged.nodes.push(node.clone()),
            }
        }
    }
    merged
}

/// What "ready" means for a demo: every node has been seen registered, up and connected to
/// its stream (once is enough), and every edge has applied a routing table at least as new as
/// the first one seen naming every shield healthy (the watermark).
///
/// It does not ask for the very latest table: under load the demo's quick health checks make
/// nodes flap, each flap publishes a new version, and an edge caught at an instant when it has
/// applied the latest one might never come.
#[derive(Debug, Default)]
pub struct Readiness {
    /// The first table version seen with every shield healthy.
    watermark: Option<u64>,
    /// Nodes seen up and connected.
    seen_up: std::collections::BTreeSet<String>,
}

impl Readiness {
    /// Takes in one look at control; what is still awaited, in words (empty: ready).
    pub fn waiting(&mut self, plans: &[NodePlan], seen: &Observed) -> Vec<String> {
        let shields = plans.iter().filter(|p| p.role == Role::Shield).count();
        if self.watermark.is_none() && seen.healthy_shields >= shields {
            self.watermark = Some(seen.table_version);
        }
        for node in seen.nodes.iter().filter(|n| n.up) {
            self.seen_up.insert(node.id.clone());
        }
        plans
            .iter()
            .filter_map(|plan| {
                let Some(node) = seen.nodes.iter().find(|n| n.id == plan.id) else {
                    return Some(format!("{} to register", plan.id));
                };
                if !self.seen_up.contains(&plan.id) {
                    return Some(format!("{} to be up and connected", plan.id));
                }
                if plan.role != Role::Edge {
                    return None;
                }
                match self.watermark {
                    None => Some(format!(
                        "{} to route to every shield (no routing table has named all {shields} shields healthy yet)",
                        plan.id
                    )),
                    Some(version) if node.table_version < version => Some(format!(
                        "{} to apply routing table {version} or later, the first with every shield healthy (it has {})",
                        plan.id, node.table_version
                    )),
                    Some(_) => None,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{self, DemoOptions};

    fn seen(version: u64, healthy: usize, edges_at: u64) -> Observed {
        let options = DemoOptions::default();
        Observed {
            table_version: version,
            healthy_shields: healthy,
            nodes: topology::nodes(&options)
                .into_iter()
                .map(|p| NodeSeen {
                    table_version: if p.role == Role::Edge { edges_at } else { 0 },
                    id: p.id,
                    up: true,
                })
                .collect(),
        }
    }

    #[test]
    fn edges_need_only_a_table_as_new_as_the_first_with_every_shield_healthy() {
        let plans = topology::nodes(&DemoOptions::default());
        let mut readiness = Readiness::default();
        // Control publishes a new version every look; edges are always one behind.
        let first = readiness.waiting(&plans, &seen(10, 2, 9));
        assert!(
            first
                .iter()
                .any(|w| w.contains("us-1 to apply routing table 10")),
            "{first:?}"
        );
        // Ready, though no edge has applied the latest table (11).
        assert_eq!(
            readiness.waiting(&plans, &seen(11, 2, 10)),
            Vec::<String>::new()
        );
    }

    #[test]
    fn replicas_looks_merge_into_the_newest_table_and_nodes_up_at_any_replica() {
        let node = |id: &str, up: bool, version: u64| NodeSeen {
            id: id.into(),
            up,
            table_version: version,
        };
        let first = Observed {
            table_version: 7,
            healthy_shields: 1,
            nodes: vec![node("us-1", true, 7), node("eu-1", false, 5)],
        };
        let second = Observed {
            table_version: 8,
            healthy_shields: 2,
            nodes: vec![
                node("us-1", false, 6),
                node("eu-1", true, 8),
                node("ap-1", false, 0),
            ],
        };
        let merged = merge(&[first, second]);
        assert_eq!((merged.table_version, merged.healthy_shields), (8, 2));
        assert_eq!(
            merged.nodes,
            [
                node("us-1", true, 7),
                node("eu-1", true, 8),
                node("ap-1", false, 0)
            ]
        );
        assert_eq!(merge(&[]).nodes, []);
    }

    #[test]
    fn nodes_count_once_seen_up_and_a_missing_shield_is_named() {
        let plans = topology::nodes(&DemoOptions::default());
        let mut readiness = Readiness::default();
        let mut flapping = seen(3, 1, 3);
        flapping.nodes[0].up = false;
        let waiting = readiness.waiting(&plans, &flapping);
        assert!(waiting.contains(&"shield-us-1 to be up and connected".to_string()));
        assert!(
            waiting
                .iter()
                .any(|w| w.contains("no routing table has named all 2 shields")),
            "{waiting:?}"
        );
        readiness.waiting(&plans, &seen(4, 2, 3));
        // shield-us-1 flaps down again: it was seen up, the watermark (4) stands.
        let mut down = seen(5, 1, 4);
        down.nodes[0].up = false;
        assert_eq!(readiness.waiting(&plans, &down), Vec::<String>::new());
        let mut unknown = seen(5, 2, 5);
        unknown.nodes.retain(|n| n.id != "ap-2");
        assert_eq!(readiness.waiting(&plans, &unknown), ["ap-2 to register"]);
    }
}
