//! What a running demo started: every endpoint, so scripts, tests and `verge bench` can find
//! them. Written as JSON by `verge demo --state FILE`.

use serde::{Deserialize, Serialize};

use std::time::Duration;

use crate::origin::ServiceTime;
use crate::replicas::ReplicaInfo;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DemoState {
    /// The CDN's host name, answered by the GeoDNS server.
    pub hostname: String,
    /// The GeoDNS server (UDP and TCP), `IP:PORT`.
    pub dns: String,
    /// The HTTP steering listener, `http://IP:PORT`.
    pub steering: String,
    pub control: ControlEndpoints,
    /// The sample origin, as the shields reach it.
    pub origin: String,
    pub nodes: Vec<NodeEndpoints>,
    /// The simulated regions.
    pub regions: Vec<RegionInfo>,
    /// Paths the sample origin serves with cache headers, for clients to try.
    pub samples: Vec<String>,
    /// The simulated one-way latency between every two regions (and within each).
    #[serde(default)]
    pub latency: Vec<PathLatency>,
    /// The origin's site: the origin and the shields beside it, and the latency between them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_site: Option<SiteLatency>,
    /// How long the sample origin takes per fetch; `None` from a demo whose origin answered at
    /// once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_time: Option<OriginTime>,
    /// With `--ha`: etcd and the control replicas, as started (`control` is one of them, one
    /// that did not lead then); `None` with control in the demo's process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha: Option<HaEndpoints>,
}

/// An HA demo's control plane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HaEndpoints {
    /// The etcd members' client URLs.
    pub etcd: Vec<String>,
    /// Each replica's name, process id, admin API and node listener (through its delay link).
    pub replicas: Vec<ReplicaInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteLatency {
    /// `origin` and the ids of the shields at its site.
    pub members: Vec<String>,
    pub one_way_ms: f64,
}

/// The sample origin's time per fetch (`verge demo --origin-time`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OriginTime {
    pub median_ms: f64,
    pub p99_ms: f64,
}

impl OriginTime {
    pub fn of(time: ServiceTime) -> OriginTime {
        OriginTime {
            median_ms: time.median().as_secs_f64() * 1000.0,
            p99_ms: time.p99().as_secs_f64() * 1000.0,
        }
    }

    /// The service time this describes; values a demo could not have written read as an
    /// origin that answers at once.
    pub fn service_time(&self) -> ServiceTime {
        let ms = |v: f64| Duration::try_from_secs_f64(v / 1000.0).unwrap_or(Duration::ZERO);
        ServiceTime::new(ms(self.median_ms), ms(self.p99_ms)).unwrap_or(ServiceTime::INSTANT)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathLatency {
    pub from: String,
    pub to: String,
    pub one_way_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlEndpoints {
    /// Nodes' listener (register, heartbeat, events).
    pub api: String,
    /// Operators' listener (purge, nodes, routing, metrics).
    pub admin: String,
    /// Bearer token of the admin listener.
    pub token: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeEndpoints {
    /// `edge` or `shield`.
    pub role: String,
    pub id: String,
    pub region: String,
    /// Where clients (or edges) reach it, through its region's delay link.
    pub http: String,
    /// HTTPS, when the node terminates TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https: Option<String>,
    /// Admin listener (`/metrics`, `/healthz`, purge).
    pub admin: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionInfo {
    pub id: String,
    /// The loopback block of the region, e.g. `127.1.0.0/16`.
    pub block: String,
    /// A source address a client in the region binds, e.g. `127.1.200.1`.
    pub client_addr: String,
}

impl DemoState {
    /// The node named `id`, if the demo has one.
    pub fn node(&self, id: &str) -> Option<&NodeEndpoints> {
        self.nodes.iter().find(|n| n.id == id)
    }

    pub fn edges(&self) -> impl Iterator<Item = &NodeEndpoints> {
        self.nodes.iter().filter(|n| n.role == "edge")
    }

    /// Reads a state file written by [`DemoState::write_to`] (`verge demo --state FILE`).
    pub fn read_from(path: &std::path::Path) -> std::io::Result<DemoState> {
        let text = std::fs::read_to_string(path)?;
        serde_json::from_str(&text).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: not a demo state file: {e}", path.display()),
            )
        })
    }

    /// Writes the state as JSON to `path`, through a temporary file renamed into place, so a
    /// reader polling for the file never sees half of it.
    pub fn write_to(&self, path: &std::path::Path) -> std::io::Result<()> {
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        std::fs::write(&tmp, json + "\n")?;
        std::fs::rename(&tmp, path)
    }
}
