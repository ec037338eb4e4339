//! Registered nodes and their health.
//!
//! A node is observed once per probe round. The observation is good when control reached the
//! node's `/healthz` *or* the node's last heartbeat is recent: a node is bad only when both
//! fail, since one broken path is not a dead node. State flips after `rise` good observations in
//! a row (down → up) or `fall` bad ones (up → down), which damps flapping.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use verge_config::control::HealthConfig;
use verge_config::wire::{Heartbeat, NodeEntry, NodeRole, Registration, UpstreamHealth};
use verge_config::NodeId;

/// One registered node.
#[derive(Debug)]
pub struct NodeState {
    pub registration: Registration,
    pub healthy: bool,
    pub last_heartbeat: Instant,
    pub last_probe_ok: Option<bool>,
    good_streak: u32,
    bad_streak: u32,
    pub applied_seq: u64,
    pub table_version: u64,
    pub in_flight: u64,
    pub upstreams: Vec<UpstreamHealth>,
    /// Whether the node's event stream is open.
    pub connected: bool,
}

/// What `GET /v1/nodes` shows of a node.
#[derive(Debug, Serialize)]
pub struct NodeView {
    #[serde(flatten)]
    pub entry: NodeEntry,
    pub state: &'static str,
    pub connected: bool,
    pub last_heartbeat_ms_ago: u64,
    pub last_probe_ok: Option<bool>,
    pub applied_seq: u64,
    pub table_version: u64,
    pub in_flight: u64,
    pub upstreams: Vec<UpstreamHealth>,
}

/// Why a registration or report was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    Full(usize),
    Unknown(NodeId),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Full(max) => write!(f, "control already has {max} nodes registered"),
            Refused::Unknown(id) => write!(f, "node {id} is not registered; register first"),
        }
    }
}

pub struct Registry {
    nodes: BTreeMap<NodeId, NodeState>,
    max_nodes: usize,
}

impl Registry {
    pub fn new(max_nodes: usize) -> Registry {
        Registry {
            nodes: BTreeMap::new(),
            max_nodes,
        }
    }

    /// Changes the most nodes registered from now on; nodes already registered stay.
    pub fn set_max_nodes(&mut self, max_nodes: usize) {
        self.max_nodes = max_nodes;
    }

    /// Registers (or re-registers after a restart) a node; it starts healthy, as it just
    /// talked to control. Returns whether the routing-relevant view changed.
    pub fn register(&mut self, registration: Registration, now: Instant) -> Result<bool, Refused> {
        if !self.nodes.contains_key(&registration.id) && self.nodes.len() >= self.max_nodes {
            return Err(Refused::Full(self.max_nodes));
        }
        let id = registration.id.clone();
        let previous = self.nodes.insert(
            id,
            NodeState {
                registration: registration.clone(),
                healthy: true,
                last_heartbeat: now,
                last_probe_ok: None,
                good_streak: 0,
                bad_streak: 0,
                applied_seq: 0,
                table_version: 0,
                in_flight: 0,
                upstreams: Vec::new(),
                connected: false,
            },
        );
        Ok(match previous {
            Some(old) => !old.healthy || old.registration != registration,
            None => true,
        })
    }

    pub fn heartbeat(&mut self, beat: Heartbeat, now: Instant) -> Result<(), Refused> {
        let node = self
            .nodes
            .get_mut(&beat.id)
            .ok_or_else(|| Refused::Unknown(beat.id.clone()))?;
        node.last_heartbeat = now;
        node.applied_seq = node.applied_seq.max(beat.applied_seq);
        node.table_version = beat.table_version;
        node.in_flight = beat.in_flight;
        node.upstreams = beat.upstreams;
        node.upstreams.truncate(1024);
        Ok(())
    }

    /// Records an acknowledgement; returns the node's role and previous applied sequence.
    pub fn ack(&mut self, id: &NodeId, applied: u64) -> Result<(NodeRole, u64), Refused> {
        let node = self
            .nodes
            .get_mut(id)
            .ok_or_else(|| Refused::Unknown(id.clone()))?;
        let before = node.applied_seq;
        node.applied_seq = before.max(applied);
        Ok((node.registration.role, before))
    }

    pub fn set_connected(&mut self, id: &NodeId, connected: bool) {
        if let Some(node) = self.nodes.get_mut(id) {
            node.connected = connected;
        }
    }

    pub fn get(&self, id: &NodeId) -> Option<&NodeState> {
        self.nodes.get(id)
    }

    /// The admin URLs to probe this round.
    pub fn probe_targets(&self) -> Vec<(NodeId, String)> {
        self.nodes
            .iter()
            .map(|(id, n)| (id.clone(), n.registration.admin_url.clone()))
            .collect()
    }

    /// Applies one round of probe results; returns whether any node changed state. Nodes
    /// unseen for `forget_after` are dropped.
    pub fn observe(
        &mut self,
        probes: &[(NodeId, bool)],
        health: &HealthConfig,
        now: Instant,
    ) -> bool {
        let mut changed = false;
        for (id, probe_ok) in probes {
            let Some(node) = self.nodes.get_mut(id) else {
                continue;
            };
            node.last_probe_ok = Some(*probe_ok);
            let beat_fresh = now.duration_since(node.last_heartbeat) < health.heartbeat_timeout;
            if *probe_ok || beat_fresh {
                node.good_streak = node.good_streak.saturating_add(1);
                node.bad_streak = 0;
                if !node.healthy && node.good_streak >= health.rise {
                    tracing::info!(node = %id, "node up");
                    node.healthy = true;
                    changed = true;
                }
            } else {
                node.bad_streak = node.bad_streak.saturating_add(1);
                node.good_streak = 0;
                if node.healthy && node.bad_streak >= health.fall {
                    tracing::warn!(node = %id, "node down: unreachable and missing heartbeats");
                    node.healthy = false;
                    changed = true;
                }
            }
        }
        let before = self.nodes.len();
        self.nodes.retain(|id, node| {
            let keep =
                node.healthy || now.duration_since(node.last_heartbeat) < health.forget_after;
            if !keep {
                tracing::info!(node = %id, "node forgotten");
            }
            keep
        });
        changed || self.nodes.len() != before
    }

    pub fn entries(&self) -> impl Iterator<Item = NodeEntry> + '_ {
        self.nodes.values().map(entry)
    }

    /// Healthy nodes of a role, with their applied sequence.
    pub fn live(&self, role: NodeRole) -> impl Iterator<Item = (&NodeId, u64)> + '_ {
        self.nodes
            .iter()
            .filter(move |(_, n)| n.healthy && n.registration.role == role)
            .map(|(id, n)| (id, n.applied_seq))
    }

    pub fn is_live(&self, id: &NodeId) -> bool {
        self.nodes.get(id).is_some_and(|n| n.healthy)
    }

    pub fn views(&self, now: Instant) -> Vec<NodeView> {
        self.nodes
            .values()
            .map(|n| NodeView {
                entry: entry(n),
                state: if n.healthy { "up" } else { "down" },
                connected: n.connected,
                last_heartbeat_ms_ago: millis(now.duration_since(n.last_heartbeat)),
                last_probe_ok: n.last_probe_ok,
                applied_seq: n.applied_seq,
                table_version: n.table_version,
                in_flight: n.in_flight,
                upstreams: n.upstreams.clone(),
            })
            .collect()
    }

    /// Counts by (role, state) for the nodes gauge.
    pub fn counts(&self) -> [(NodeRole, &'static str, i64); 4] {
        let count = |role: NodeRole, healthy: bool| {
            self.nodes
                .values()
                .filter(|n| n.registration.role == role && n.healthy == healthy)
                .count() as i64
        };
        [
            (NodeRole::Edge, "up", count(NodeRole::Edge, true)),
            (NodeRole::Edge, "down", count(NodeRole::Edge, false)),
            (NodeRole::Shield, "up", count(NodeRole::Shield, true)),
            (NodeRole::Shield, "down", count(NodeRole::Shield, false)),
        ]
    }
}

fn entry(n: &NodeState) -> NodeEntry {
    let r = &n.registration;
    NodeEntry {
        id: r.id.clone(),
        role: r.role,
        region: r.region.clone(),
        data_url: r.data_url.clone(),
        admin_url: r.admin_url.clone(),
        weight: r.weight,
        healthy: n.healthy,
    }
}

pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use verge_config::RegionId;

    fn health() -> HealthConfig {
        HealthConfig {
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(3),
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(500),
            rise: 2,
            fall: 2,
            forget_after: Duration::from_secs(60),
        }
    }

    fn registration(id: &str) -> Registration {
        Registration {
            id: NodeId::new(id).unwrap(),
            role: NodeRole::Edge,
            region: RegionId::new("us").unwrap(),
            data_url: "http://127.0.0.1:1".into(),
            admin_url: "http://127.0.0.1:2".into(),
            weight: 1,
        }
    }

    #[test]
    fn a_node_is_down_only_when_probes_fail_and_heartbeats_stop() {
        let mut registry = Registry::new(10);
        let start = Instant::now();
        let id = NodeId::new("e1").unwrap();
        registry.register(registration("e1"), start).unwrap();
        let h = health();
        // Probe fails but the heartbeat is fresh: still up, however many rounds.
        for s in 1..=2 {
            let now = start + Duration::from_secs(s);
            assert!(!registry.observe(&[(id.clone(), false)], &h, now));
        }
        assert!(registry.is_live(&id));
        // Heartbeats stop too: down after `fall` = 2 bad rounds, not after one.
        assert!(!registry.observe(&[(id.clone(), false)], &h, start + Duration::from_secs(4)));
        assert!(registry.is_live(&id));
        assert!(registry.observe(&[(id.clone(), false)], &h, start + Duration::from_secs(5)));
        assert!(!registry.is_live(&id));
        // One good probe is not enough to come back (rise = 2).
        assert!(!registry.observe(&[(id.clone(), true)], &h, start + Duration::from_secs(6)));
        assert!(registry.observe(&[(id.clone(), true)], &h, start + Duration::from_secs(7)));
        assert!(registry.is_live(&id));
    }

    #[test]
    fn registrations_are_bounded_and_reports_need_one() {
        let mut registry = Registry::new(1);
        let now = Instant::now();
        registry.register(registration("e1"), now).unwrap();
        assert_eq!(
            registry.register(registration("e2"), now),
            Err(Refused::Full(1))
        );
        // Re-registering the same node is fine.
        assert_eq!(registry.register(registration("e1"), now), Ok(false));
        let unknown = NodeId::new("e9").unwrap();
        assert_eq!(
            registry.ack(&unknown, 3),
            Err(Refused::Unknown(unknown.clone()))
        );
    }

    #[test]
    fn acks_never_move_the_applied_sequence_backwards() {
        let mut registry = Registry::new(4);
        let now = Instant::now();
        registry.register(registration("e1"), now).unwrap();
        let id = NodeId::new("e1").unwrap();
        assert_eq!(registry.ack(&id, 5).unwrap().1, 0);
        assert_eq!(registry.ack(&id, 3).unwrap().1, 5);
        assert_eq!(registry.get(&id).unwrap().applied_seq, 5);
    }
}
