//! The Verge cache-node runtime and the edge role.
//!
//! - [`pipeline`]: the request path of a cache node, as one readable sequence of steps, with
//!   its fills (fetch, revalidate, store) and its answers from cache (304, 206, 416) beside it;
//! - [`upstream`]: the hop towards the origin ([`Upstream`]) and the direct-to-origin client;
//! - [`ring`]: the consistent-hashing ring that picks the origin shield owning a cache key;
//! - [`shields`]: the edge's upstream over origin shields, with failover and ejection;
//! - [`tls`]: HTTPS listeners' certificates (SNI, reload) and TLS towards upstreams;
//! - [`server`]: listeners, HTTP/1.1 + HTTP/2, connection limits, graceful shutdown;
//! - [`handoff`]: zero-downtime upgrade, handing the listening sockets to a new process;
//! - [`admin`]: `/metrics`, `/healthz` and `POST /v1/purge` on a separate listener;
//! - [`control`]: the node's link to the control plane — registration, heartbeats, and the
//!   push stream of purges and routing tables;
//! - [`metrics`]: the node's Prometheus metrics on a registry passed in;
//! - [`headers`]: hop-by-hop handling, `Via`, `Cache-Status`;
//! - [`body`]: the response body type; [`error`]: request-path errors and their statuses.
//!
//! [`node`] wires these together into a cache node over any upstream; [`EdgeNode`] is the one
//! `verge edge` runs.

pub mod admin;
pub mod body;
pub mod control;
pub mod error;
mod fill;
pub mod handoff;
pub mod headers;
pub mod metrics;
pub mod node;
pub mod pipeline;
mod respond;
pub mod ring;
pub mod server;
pub mod shields;
pub mod tls;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use verge_cache::{Clock, SystemClock};
use verge_config::wire::NodeRole;
use verge_config::EdgeConfig;

pub use control::{ControlClient, NodeControl};
pub use error::{EdgeError, Fault};
pub use node::{Node, NodeSettings};
pub use pipeline::{EdgePipeline, PipelineIdentity, PipelineLimits};
pub use upstream::{OriginUpstream, Upstream};

use shields::{EdgeUpstream, ShieldMetrics, ShieldUpstream};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot build the shield ring: {0}")]
    Ring(#[from] ring::RingError),
    /// The role's upstream could not be set up (e.g. a shield's DNS resolver).
    #[error("cannot set up the upstream: {0}")]
    Upstream(String),
    /// Certificates, keys or CA bundles named by the configuration cannot be used.
    #[error("TLS: {0}")]
    Tls(String),
    /// The listening sockets could not be taken over from the previous process.
    #[error("cannot take over the listeners: {0}")]
    Handoff(String),
}

/// An edge node: a cache node whose upstream is the origin or origin shields.
pub type EdgeNode = Node<EdgeUpstream>;

impl Node<EdgeUpstream> {
    /// Binds both listeners (port 0 picks a free port) with the real clock.
    pub async fn bind(config: &EdgeConfig) -> Result<EdgeNode, StartError> {
        EdgeNode::bind_with_clock(config, Arc::new(SystemClock)).await
    }

    /// Binds both listeners; freshness is judged by `clock`.
    pub async fn bind_with_clock(
        config: &EdgeConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<EdgeNode, StartError> {
        let settings = NodeSettings {
            id: &config.id,
            server: &config.server,
            cache: &config.cache,
            admin: &config.admin,
            cache_name: "verge-edge",
            upstream_max_connections: config.upstream.max_connections,
            control: config.control.as_ref().map(|control| NodeControl {
                config: control,
                role: NodeRole::Edge,
                region: &config.region,
            }),
        };
        Node::bind_with(settings, clock, |registry, metrics| {
            let in_use = metrics.upstream_connections_in_use.clone();
            let origin_tls = tls::client::upstream_client_config(
                &config.upstream.tls,
                [&config.upstream.origin],
                "upstream.tls",
            )
            .map_err(StartError::Tls)?;
            let origin = OriginUpstream::with_tls(&config.upstream, origin_tls, in_use.clone());
            // With a control plane, shields may arrive in a routing table: start on an empty
            // ring (misses to the origin) rather than on a plain origin upstream.
            if config.shields.members.is_empty() && config.control.is_none() {
                return Ok(EdgeUpstream::Origin(origin));
            }
            let shield_metrics = ShieldMetrics::register(registry)?;
            Ok(EdgeUpstream::Shields(ShieldUpstream::new(
                &config.shields,
                &config.upstream,
                origin,
                shield_metrics,
                &in_use,
            )?))
        })
        .await
    }
}
