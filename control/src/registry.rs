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
use verge_config::tiers::LatencyMatrix;
use verge_config::wire::{Heartbeat, NodeEntry, NodeRole, Registration, Traffic, UpstreamHealth};
use verge_config::NodeId;

use crate::latency::{self, Ignored, NodeLatency, Reporter};

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
    /// Smoothed round trips to its upstreams, from its reports.
    pub latency: NodeLatency,
    /// Whether the node's event stream is open.
    pub connected: bool,
    /// The two latest traffic reports, newest last, for rates between them.
    traffic: [Option<(Instant, Traffic)>; 2],
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
    pub version: String,
    /// Between the node's two latest heartbeats; `None` until two have come.
    pub rates: Option<TrafficRates>,
}

/// A node's traffic between two heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TrafficRates {
    pub requests_per_second: f64,
    /// Share of requests answered from cache; `None` without requests.
    pub hit_ratio: Option<f64>,
    /// Share of requests answered without a request upstream; `None` without requests.
    pub offload: Option<f64>,
}

impl TrafficRates {
    /// The rates between two reports `elapsed` apart; `None` when the counters went back (the
    /// node restarted) or no time passed.
    pub fn between(earlier: &Traffic, later: &Traffic, elapsed: Duration) -> Option<TrafficRates> {
        let requests = later.requests.checked_sub(earlier.requests)?;
        let hits = later.hits.checked_sub(earlier.hits)?;
        let upstream = later
            .upstream_requests
            .checked_sub(earlier.upstream_requests)?;
        let seconds = elapsed.as_secs_f64();
        if seconds <= 0.0 {
            return None;
        }
        let share = |part: u64| {
            (requests > 0).then(|| (part.min(requests) as f64 / requests as f64).clamp(0.0, 1.0))
        };
        Some(TrafficRates {
            requests_per_second: requests as f64 / seconds,
            hit_ratio: share(hits),
            offload: share(upstream).map(|sent| 1.0 - sent),
        })
    }
}

/// Longest node version kept; a longer one is cut.
const MAX_VERSION_LEN: usize = 64;
/// Most shields a registration may say its node routes through; the rest are dropped.
const MAX_ROUTED_SHIELDS: usize = 1024;
/// Most upstreams taken in from one report.
const MAX_REPORTED_UPSTREAMS: usize = 1024;

/// Why a registration or report was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    Full(usize),
    Unknown(NodeId),
    /// This replica holds no etcd lease (cut off from etcd): the node should use another.
    Detached,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Full(max) => write!(f, "control already has {max} nodes registered"),
            Refused::Unknown(id) => write!(f, "node {id} is not registered; register first"),
            Refused::Detached => write!(
                f,
                "this control replica is cut off from etcd; use another replica"
            ),
        }
    }
}

pub struct Registry {
    nodes: BTreeMap<NodeId, NodeState>,
    max_nodes: usize,
    /// Registrations of the nodes forgotten since [`Registry::take_forgotten`] was last called.
    forgotten: Vec<Registration>,
}

impl Registry {
    pub fn new(max_nodes: usize) -> Registry {
        Registry {
            nodes: BTreeMap::new(),
            max_nodes,
            forgotten: Vec::new(),
        }
    }

    /// Changes the most nodes registered from now on; nodes already registered stay.
    pub fn set_max_nodes(&mut self, max_nodes: usize) {
        self.max_nodes = max_nodes;
    }

    /// Registers (or re-registers after a restart) a node; it starts healthy, as it just
    /// talked to control. Returns whether the routing-relevant view changed.
    pub fn register(
        &mut self,
        mut registration: Registration,
        now: Instant,
    ) -> Result<bool, Refused> {
        if !self.nodes.contains_key(&registration.id) && self.nodes.len() >= self.max_nodes {
            return Err(Refused::Full(self.max_nodes));
        }
        if registration.version.len() > MAX_VERSION_LEN {
            let mut end = MAX_VERSION_LEN;
            while !registration.version.is_char_boundary(end) {
                end -= 1;
            }
            registration.version.truncate(end);
        }
        registration.shields.truncate(MAX_ROUTED_SHIELDS);
        // Taken in apart (`report_upstreams`): round trips are no part of who the node is.
        registration.upstreams.clear();
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
                latency: NodeLatency::default(),
                connected: false,
                traffic: [None, None],
            },
        );
        Ok(match previous {
            Some(old) => !old.healthy || old.registration != registration,
            None => true,
        })
    }

    /// Takes in a node's view of its upstreams (from a heartbeat, or from its registration,
    /// so that a control that has just started plans from measurements at once); returns the
    /// latency reports it ignored. An edge's valid targets are the shields control knows and
    /// those its own table routes through (named in its registration: after a control start
    /// they may not have registered again yet).
    pub fn report_upstreams(
        &mut self,
        id: &NodeId,
        mut upstreams: Vec<UpstreamHealth>,
    ) -> Result<Vec<Ignored>, Refused> {
        upstreams.truncate(MAX_REPORTED_UPSTREAMS);
        let named = self
            .nodes
            .get(id)
            .map(|n| n.registration.shields.clone())
            .unwrap_or_default();
        let shields: Vec<String> = upstreams
            .iter()
            .filter(|u| {
                NodeId::new(&u.id).ok().is_some_and(|shield| {
                    named.contains(&shield)
                        || self
                            .nodes
                            .get(&shield)
                            .is_some_and(|n| n.registration.role == NodeRole::Shield)
                })
            })
            .map(|u| u.id.clone())
            .collect();
        let node = self
            .nodes
            .get_mut(id)
            .ok_or_else(|| Refused::Unknown(id.clone()))?;
        let ignored = node
            .latency
            .report(node.registration.role, &upstreams, |id| {
                shields.iter().any(|s| s == id)
            });
        node.upstreams = upstreams;
        Ok(ignored)
    }

    /// Records a heartbeat; returns the latency reports it ignored.
    pub fn heartbeat(&mut self, beat: Heartbeat, now: Instant) -> Result<Vec<Ignored>, Refused> {
        let ignored = self.report_upstreams(&beat.id, beat.upstreams)?;
        let node = self
            .nodes
            .get_mut(&beat.id)
            .ok_or_else(|| Refused::Unknown(beat.id.clone()))?;
        node.last_heartbeat = now;
        node.applied_seq = node.applied_seq.max(beat.applied_seq);
        node.table_version = beat.table_version;
        node.in_flight = beat.in_flight;
        if let Some(traffic) = beat.traffic {
            node.traffic = [node.traffic[1], Some((now, traffic))];
        }
        Ok(ignored)
    }

    /// The healthy nodes' round trips, combined.
    pub fn latency_matrix(&self) -> LatencyMatrix {
        latency::matrix(self.nodes.values().filter(|n| n.healthy).map(|n| Reporter {
            id: &n.registration.id,
            role: n.registration.role,
            region: &n.registration.region,
            latency: &n.latency,
            upstreams: &n.upstreams,
        }))
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

    /// Drops a node (its registration vanished from the shared store); returns whether it was
    /// registered.
    pub fn forget(&mut self, id: &NodeId) -> bool {
        self.nodes.remove(id).is_some()
    }

    /// A node's latest report as a heartbeat, for other replicas to take in as if they had
    /// received it; `None` for a node without a heartbeat within `fresh`.
    pub fn beat_of(&self, id: &NodeId, now: Instant, fresh: Duration) -> Option<Heartbeat> {
        let node = self.nodes.get(id)?;
        if now.duration_since(node.last_heartbeat) >= fresh {
            return None;
        }
        Some(Heartbeat {
            id: id.clone(),
            applied_seq: node.applied_seq,
            table_version: node.table_version,
            in_flight: node.in_flight,
            upstreams: node.upstreams.clone(),
            traffic: node.traffic[1].map(|(_, t)| t),
        })
    }

    /// The registrations forgotten since the last call.
    pub fn take_forgotten(&mut self) -> Vec<Registration> {
        std::mem::take(&mut self.forgotten)
    }

    /// The shields some registered node routes through (the healthy shields of its last
    /// table, as it said when it registered) that are not registered as shields themselves.
    pub fn awaited_shields(&self) -> Vec<NodeId> {
        let mut awaited: Vec<NodeId> = self
            .nodes
            .values()
            .flat_map(|n| &n.registration.shields)
            .filter(|id| {
                self.nodes
                    .get(id)
                    .is_none_or(|n| n.registration.role != NodeRole::Shield)
            })
            .cloned()
            .collect();
        awaited.sort();
        awaited.dedup();
        awaited
    }

    /// The registered nodes' ids.
    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().cloned().collect()
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
        let mut forgotten = Vec::new();
        self.nodes.retain(|id, node| {
            let keep =
                node.healthy || now.duration_since(node.last_heartbeat) < health.forget_after;
            if !keep {
                tracing::info!(node = %id, "node forgotten");
                forgotten.push(node.registration.clone());
            }
            keep
        });
        self.forgotten.extend(forgotten);
        // Bounded whoever takes them: at most one per registered node at a time.
        let excess = self.forgotten.len().saturating_sub(self.max_nodes);
        self.forgotten.drain(..excess);
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
                version: n.registration.version.clone(),
                rates: match n.traffic {
                    [Some((earlier_at, earlier)), Some((later_at, later))] => {
                        TrafficRates::between(&earlier, &later, later_at - earlier_at)
                    }
                    _ => None,
                },
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
            settle: Duration::from_secs(10),
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
            version: String::new(),
            shields: Vec::new(),
            upstreams: Vec::new(),
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
    fn awaited_shields_are_those_nodes_route_through_that_have_not_registered_as_shields() {
        let mut registry = Registry::new(8);
        let now = Instant::now();
        let ids = |names: &[&str]| -> Vec<NodeId> {
            names.iter().map(|n| NodeId::new(n).unwrap()).collect()
        };
        let routing = |id: &str, shields: &[&str]| Registration {
            shields: ids(shields),
            ..registration(id)
        };
        assert!(registry.awaited_shields().is_empty());
        registry
            .register(routing("e1", &["s1", "s2"]), now)
            .unwrap();
        registry
            .register(routing("e2", &["s2", "s3"]), now)
            .unwrap();
        assert_eq!(registry.awaited_shields(), ids(&["s1", "s2", "s3"]));
        // A node of that name that is not a shield does not count.
        registry.register(registration("s1"), now).unwrap();
        assert_eq!(registry.awaited_shields(), ids(&["s1", "s2", "s3"]));
        let shield = |id: &str| Registration {
            role: NodeRole::Shield,
            ..registration(id)
        };
        registry.register(shield("s1"), now).unwrap();
        registry.register(shield("s2"), now).unwrap();
        assert_eq!(registry.awaited_shields(), ids(&["s3"]));
        registry.forget(&NodeId::new("e2").unwrap());
        assert!(registry.awaited_shields().is_empty());
    }

    #[test]
    fn round_trips_in_registrations_count_at_once_even_to_shields_not_back_yet() {
        let mut registry = Registry::new(8);
        let now = Instant::now();
        let rtt = |id: &str, ms: f64| UpstreamHealth {
            id: id.into(),
            up: true,
            rtt_ms: Some(ms),
        };
        // An edge back before its shield: it still routes through s1, and has measured it.
        let edge = Registration {
            shields: vec![NodeId::new("s1").unwrap()],
            ..registration("e1")
        };
        registry.register(edge, now).unwrap();
        let e1 = NodeId::new("e1").unwrap();
        let ignored = registry
            .report_upstreams(&e1, vec![rtt("s1", 12.0), rtt("stranger", 5.0)])
            .unwrap();
        assert_eq!(ignored, [Ignored::UnknownTarget], "stranger is no shield");
        let shield = Registration {
            role: NodeRole::Shield,
            ..registration("s1")
        };
        registry.register(shield, now).unwrap();
        let s1 = NodeId::new("s1").unwrap();
        let origin = rtt("http://origin.test", 3.0);
        assert!(registry
            .report_upstreams(&s1, vec![origin])
            .unwrap()
            .is_empty());

        let matrix = registry.latency_matrix();
        let us = RegionId::new("us").unwrap();
        assert_eq!(matrix.edge_to_shield[&us][&s1], 12.0);
        assert_eq!(matrix.shield_to_origin[&s1], 3.0);
        // Round trips are not part of who a node is: registering again with new ones is no
        // change to routing.
        let again = Registration {
            upstreams: vec![rtt("s1", 40.0)],
            shields: vec![s1.clone()],
            ..registration("e1")
        };
        assert!(!registry.register(again, now).unwrap());
        assert!(registry
            .report_upstreams(&NodeId::new("nobody").unwrap(), vec![])
            .is_err());
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

    #[test]
    fn rates_come_from_the_two_latest_traffic_reports() {
        let mut registry = Registry::new(10);
        let start = Instant::now();
        registry.register(registration("e1"), start).unwrap();
        let beat = |requests, hits, upstream_requests| Heartbeat {
            id: NodeId::new("e1").unwrap(),
            applied_seq: 0,
            table_version: 0,
            in_flight: 0,
            upstreams: Vec::new(),
            traffic: Some(Traffic {
                requests,
                hits,
                upstream_requests,
            }),
        };
        registry.heartbeat(beat(100, 50, 50), start).unwrap();
        assert_eq!(
            registry.views(start)[0].rates,
            None,
            "one report: no rate yet"
        );
        let later = start + Duration::from_secs(2);
        registry.heartbeat(beat(300, 200, 80), later).unwrap();
        let rates = registry.views(later)[0].rates.unwrap();
        assert_eq!(rates.requests_per_second, 100.0);
        assert_eq!(rates.hit_ratio, Some(0.75));
        assert_eq!(rates.offload, Some(0.85));
        // A restarted node's counters start again: no rate until the next report.
        let restarted = later + Duration::from_secs(2);
        registry.heartbeat(beat(10, 0, 10), restarted).unwrap();
        assert_eq!(registry.views(restarted)[0].rates, None);
    }

    #[test]
    fn reported_rates_and_versions_are_bounded() {
        let odd = Traffic {
            requests: 10,
            hits: 50,
            upstream_requests: 99,
        };
        let rates = TrafficRates::between(&Traffic::default(), &odd, Duration::from_secs(1));
        let rates = rates.unwrap();
        assert_eq!(
            rates.hit_ratio,
            Some(1.0),
            "more hits than requests is capped"
        );
        assert_eq!(rates.offload, Some(0.0));
        assert_eq!(
            TrafficRates::between(&odd, &odd, Duration::ZERO),
            None,
            "no time, no rate"
        );
        let mut registry = Registry::new(10);
        let mut long = registration("e1");
        long.version = "é".repeat(100);
        registry.register(long, Instant::now()).unwrap();
        let version = &registry.views(Instant::now())[0].version;
        assert!(
            version.len() <= MAX_VERSION_LEN && version.starts_with('é'),
            "{version}"
        );
    }
}
