//! What control and the nodes exchange over HTTP: registration, heartbeats, routing tables,
//! purges and the events of the push stream. Both sides link these types; neither links the
//! other's code.
//!
//! Everything is JSON. The push stream (`GET /v1/events?node=ID&since=SEQ` on control's node
//! listener) is newline-delimited: one [`Event`] per line.

use serde::{Deserialize, Serialize};

use crate::ids::{NodeId, RegionId};

/// Longest line a node accepts on the push stream; a longer one is garbage.
pub const MAX_EVENT_LINE_BYTES: usize = 1 << 20;

/// Most targets one purge may name (URLs + prefixes + tags).
pub const MAX_PURGE_TARGETS: usize = 10_000;

/// The two kinds of cache node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    Edge,
    Shield,
}

impl std::fmt::Display for NodeRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NodeRole::Edge => "edge",
            NodeRole::Shield => "shield",
        })
    }
}

/// `POST /v1/register`: a node announcing itself (again after every restart).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    pub id: NodeId,
    pub role: NodeRole,
    pub region: RegionId,
    /// Base URL of the data plane, e.g. `http://127.1.0.1:8080`.
    pub data_url: String,
    /// Base URL of the admin listener (`/healthz`, `/metrics`).
    pub admin_url: String,
    /// Share of traffic relative to its peers (1..=10).
    pub weight: u32,
    /// The Verge version the node runs (shown on control's status page; empty if unknown).
    #[serde(default)]
    pub version: String,
    /// The healthy shields of the routing table the node follows (none before its first
    /// table). A control that has just started holds back tables that leave any of them out,
    /// for `health.settle`, while they register again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shields: Vec<NodeId>,
    /// The node's upstreams and their measured round trips, as in a heartbeat (none before it
    /// has measured any): a control that has just started plans the tiers from them at once,
    /// instead of from configured proximity until the first heartbeats.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstreams: Vec<UpstreamHealth>,
}

/// Control's answer to a registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    /// How often control expects a heartbeat, in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// The newest sequence number in the purge log.
    pub head: u64,
}

/// `POST /v1/heartbeat`: a node's view of itself, sent every heartbeat interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub id: NodeId,
    /// Highest purge sequence number applied (every lower one is applied too).
    pub applied_seq: u64,
    /// Version of the routing table in use (0: none yet).
    pub table_version: u64,
    /// Requests in flight on the data plane.
    pub in_flight: u64,
    /// The node's upstreams (shields for an edge, origin servers for a shield) and whether
    /// it currently sends them traffic.
    #[serde(default)]
    pub upstreams: Vec<UpstreamHealth>,
    /// The node's traffic since it started, for control's rates.
    #[serde(default)]
    pub traffic: Option<Traffic>,
}

/// A node's traffic counters since it started: client requests, those answered from cache,
/// and requests it sent upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Traffic {
    pub requests: u64,
    pub hits: u64,
    pub upstream_requests: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamHealth {
    pub id: String,
    pub up: bool,
    /// The smallest recent round-trip time to it in milliseconds (probes and requests), when
    /// measured: control's latency matrix is built from these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
}

/// `POST /v1/ack`: a node confirming it has applied purges up to `applied_seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    pub id: NodeId,
    pub applied_seq: u64,
}

/// What to purge: the body of `POST /v1/purge` on control and on a node's admin listener.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeSpec {
    /// Absolute URLs; every variant of each is purged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// Absolute URL prefixes, e.g. `http://example.com/images/`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefixes: Vec<String>,
    /// Surrogate keys, as sent by the origin in `Surrogate-Key` or `Cache-Tag`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Everything.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
    /// Mark stale (revalidate before use) instead of removing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub soft: bool,
}

impl PurgeSpec {
    /// Checks the spec, naming the first problem: at least one target, at most
    /// [`MAX_PURGE_TARGETS`], absolute http(s) URLs, tags without spaces or commas.
    pub fn validate(&self) -> Result<(), String> {
        let count = self.urls.len() + self.prefixes.len() + self.tags.len();
        if count == 0 && !self.all {
            return Err("empty purge: give urls, prefixes, tags or \"all\": true".to_string());
        }
        if count > MAX_PURGE_TARGETS {
            return Err(format!(
                "too many purge targets: {count} (at most {MAX_PURGE_TARGETS})"
            ));
        }
        for url in &self.urls {
            absolute_url(url).map_err(|e| format!("urls: {e}"))?;
        }
        for prefix in &self.prefixes {
            absolute_url(prefix).map_err(|e| format!("prefixes: {e}"))?;
        }
        if let Some(bad) = self
            .tags
            .iter()
            .find(|t| t.is_empty() || t.contains([' ', ',']))
        {
            return Err(format!(
                "tags: {bad:?} is not a surrogate key (empty, or contains a space or comma)"
            ));
        }
        Ok(())
    }
}

/// Parses an absolute `http` or `https` URL.
pub fn absolute_url(url: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http" | "https"), Some(_)) => Ok(uri),
        (Some(_), Some(_)) => Err(format!("{url:?}: only http and https URLs are cached")),
        _ => Err(format!("{url:?} is not an absolute URL (http://host/path)")),
    }
}

/// Control's answer to an accepted purge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeAccepted {
    /// Identifies the purge in `GET /v1/purge/{id}`; equal to its sequence number.
    pub id: u64,
    pub seq: u64,
}

/// `GET /v1/purge/{id}`: where a purge has been applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PurgeStatus {
    pub id: u64,
    pub seq: u64,
    pub spec: PurgeSpec,
    /// Milliseconds since the Unix epoch when control accepted (and logged) it.
    pub accepted_at_ms: u64,
    /// True once every node that was live when it was accepted, and is live still, applied it.
    pub complete: bool,
    /// Milliseconds from acceptance to the last live node applying it, once complete.
    pub completed_after_ms: Option<u64>,
    /// The same in microseconds, for measuring propagation.
    pub completed_after_us: Option<u64>,
    pub nodes: Vec<PurgeNodeStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PurgeNodeStatus {
    pub id: NodeId,
    pub role: NodeRole,
    /// `applied`, `pending`, or `down` (pending, and the node is not live: it gets the purge
    /// when it reconnects).
    pub state: String,
    /// Milliseconds from acceptance to this node's acknowledgement.
    pub applied_after_ms: Option<u64>,
}

/// One node as control sees it (`GET /v1/nodes`, and in routing tables).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEntry {
    pub id: NodeId,
    pub role: NodeRole,
    pub region: RegionId,
    pub data_url: String,
    pub admin_url: String,
    pub weight: u32,
    pub healthy: bool,
}

/// One region of a routing table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionRoute {
    pub id: RegionId,
    /// The region's edges, healthy or not (each says which).
    pub edges: Vec<NodeEntry>,
    /// Other regions, nearest first: where this region's clients go when its edges are down.
    pub fallback: Vec<RegionId>,
}

/// A versioned snapshot of who routes where. A new version exists only when something changed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoutingTable {
    pub version: u64,
    pub regions: Vec<RegionRoute>,
    /// Every shield with its health and weight: edges build their ring from the healthy ones.
    pub shields: Vec<NodeEntry>,
    /// Control's cache rules (the `[[rules]]` of its file): every node tries them before its
    /// own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<crate::rules::RawRule>,
    /// Which shields each region's edges hash over; `None`: every healthy shield.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiers: Option<crate::tiers::TierPlan>,
}

impl RoutingTable {
    /// Every healthy shield: those an edge measures, and hashes over without a plan.
    pub fn healthy_shields(&self) -> impl Iterator<Item = &NodeEntry> {
        self.shields.iter().filter(|s| s.healthy)
    }

    /// The healthy shields the edges of `region` send misses to: the plan's set for the
    /// region, else every healthy shield.
    pub fn shields_for<'a>(&'a self, region: &RegionId) -> impl Iterator<Item = &'a NodeEntry> {
        let planned = self.tiers.as_ref().and_then(|t| t.shields_for(region));
        self.healthy_shields()
            .filter(move |s| planned.is_none_or(|ids| ids.contains(&s.id)))
    }
}

/// One line of the push stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Event {
    /// A purge to apply; `seq` numbers purges without gaps from 1.
    Purge { seq: u64, spec: PurgeSpec },
    /// The routing table now in force. `seq` is the purge log's head when it was sent.
    Routing { seq: u64, table: RoutingTable },
    /// The log no longer holds what the node missed (or the node is ahead of it): the node
    /// must drop every cached object it cannot prove fresh, then carry on from `seq`.
    Resync { seq: u64, reason: String },
    /// Sent when the stream has been quiet, so a dead connection is noticed.
    Keepalive { seq: u64 },
}

impl Event {
    pub fn seq(&self) -> u64 {
        match self {
            Event::Purge { seq, .. }
            | Event::Routing { seq, .. }
            | Event::Resync { seq, .. }
            | Event::Keepalive { seq } => *seq,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_as_one_json_line_each() {
        let event = Event::Purge {
            seq: 7,
            spec: PurgeSpec {
                urls: vec!["http://a.test/x".into()],
                ..PurgeSpec::default()
            },
        };
        let line = serde_json::to_string(&event).unwrap();
        assert_eq!(
            line,
            r#"{"type":"purge","seq":7,"spec":{"urls":["http://a.test/x"]}}"#
        );
        assert_eq!(serde_json::from_str::<Event>(&line).unwrap(), event);
    }

    #[test]
    fn an_invalid_node_id_in_a_registration_is_refused() {
        let body = r#"{"id":"a b","role":"edge","region":"us","data_url":"http://x","admin_url":"http://y","weight":1}"#;
        let error = serde_json::from_str::<Registration>(body).unwrap_err();
        assert!(error.to_string().contains("contains ' '"), "{error}");
    }

    #[test]
    fn purge_specs_are_validated() {
        let ok = |spec: PurgeSpec| spec.validate();
        assert!(ok(PurgeSpec::default())
            .unwrap_err()
            .contains("empty purge"));
        assert!(ok(PurgeSpec {
            all: true,
            ..PurgeSpec::default()
        })
        .is_ok());
        let relative = PurgeSpec {
            urls: vec!["/x".into()],
            ..PurgeSpec::default()
        };
        assert!(ok(relative).unwrap_err().contains("not an absolute URL"));
        let ftp = PurgeSpec {
            prefixes: vec!["ftp://a.test/".into()],
            ..PurgeSpec::default()
        };
        assert!(ok(ftp).unwrap_err().starts_with("prefixes:"));
        let tag = PurgeSpec {
            tags: vec!["a b".into()],
            ..PurgeSpec::default()
        };
        assert!(ok(tag).unwrap_err().contains("not a surrogate key"));
        let many = PurgeSpec {
            tags: vec!["t".into(); MAX_PURGE_TARGETS + 1],
            ..PurgeSpec::default()
        };
        assert!(ok(many).unwrap_err().contains("too many"));
    }
}
