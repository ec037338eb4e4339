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
//! - [`admin`]: `/metrics`, `/healthz`, `POST /v1/purge` and `POST /v1/reload` on a separate
//!   listener;
//! - [`reload`]: configuration reload without a restart, prepared aside and applied at once;
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
mod live;
pub mod metrics;
pub mod node;
pub mod pipeline;
pub mod reload;
mod respond;
pub mod ring;
mod role;
pub mod server;
pub mod shields;
pub mod tls;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use verge_cache::{Clock, SystemClock};
use verge_config::{ConfigSource, EdgeConfig};

pub use control::{ControlClient, NodeControl};
pub use error::{EdgeError, Fault};
pub use node::{ListenerKind, Node, NodeSettings};
pub use pipeline::{EdgePipeline, PipelineIdentity, PipelineLimits};
pub use reload::{Reload, ReloadMetrics, Role};
pub use role::EdgeRole;
pub use upstream::{OriginUpstream, Upstream};

use shields::EdgeUpstream;

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

    /// Binds every listener; freshness is judged by `clock`. A reload re-reads only the
    /// files the configuration names (certificates); see [`EdgeNode::bind_from`].
    pub async fn bind_with_clock(
        config: &EdgeConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<EdgeNode, StartError> {
        EdgeNode::bind_reloadable(config, ConfigSource::CommandLine, clock).await
    }

    /// Binds every listener with the real clock; a reload reads `source` again.
    pub async fn bind_from(
        config: &EdgeConfig,
        source: ConfigSource,
    ) -> Result<EdgeNode, StartError> {
        EdgeNode::bind_reloadable(config, source, Arc::new(SystemClock)).await
    }

    async fn bind_reloadable(
        config: &EdgeConfig,
        source: ConfigSource,
        clock: Arc<dyn Clock>,
    ) -> Result<EdgeNode, StartError> {
        let shield_metrics = std::sync::Mutex::new(None);
        let mut role = None;
        let mut node = Node::bind_with(role::edge_settings(config), clock, |registry, metrics| {
            let in_use = metrics.upstream_connections_in_use.clone();
            let upstream = role::build_edge_upstream(config, registry, &shield_metrics, &in_use)?;
            role = Some((registry.clone(), in_use));
            Ok(upstream)
        })
        .await?;
        if let Some((registry, in_use)) = role {
            let role = role::EdgeRole {
                registry,
                shield_metrics,
                in_use,
            };
            node.enable_reload(role, config.clone(), source);
        }
        Ok(node)
    }
}
