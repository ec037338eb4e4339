//! The Verge cache-node runtime, shared by every cache role (edge and shield).
//!
//! A node is this runtime plus a role: the role brings its upstream and its settings
//! ([`reload::Role`]); everything else — serving, caching, reload, control — is here.
//!
//! - [`pipeline`]: the request path of a cache node, as one readable sequence of steps, with
//!   its fills (fetch, revalidate, store) and its answers from cache (304, 206, 416) beside it;
//! - [`upstream`]: the hop towards the origin ([`Upstream`]) and the client of one server;
//! - [`tls`]: HTTPS listeners' certificates (SNI, reload) and TLS towards upstreams;
//! - [`server`]: listeners, HTTP/1.1 + HTTP/2, connection limits, graceful shutdown;
//! - [`handoff`]: zero-downtime upgrade, handing the listening sockets to a new process;
//! - [`admin`]: `/metrics`, `/healthz`, `POST /v1/purge` and `POST /v1/reload` on a separate
//!   listener;
//! - [`reload`]: configuration reload without a restart, prepared aside and applied at once;
//! - [`control`]: the node's link to the control plane — registration, heartbeats, and the
//!   push stream of purges and routing tables;
//! - [`metrics`]: the node's Prometheus metrics on a registry passed in;
//! - [`ring`], [`shields`]: the consistent-hashing ring over origin shields and the upstream
//!   that sends misses over it (an edge's, and a shield's upper tier);
//! - [`rtt`]: round trips to upstreams (for control's tier plan) and the probe that measures them;
//! - [`headers`]: hop-by-hop handling, `Via`, `Cache-Status`;
//! - [`access_log`]: one line per request through a bounded queue and a writer thread, and
//!   the request id (`X-Request-Id`) carried across the tiers;
//! - [`body`]: the response body type; [`error`]: request-path errors and their statuses;
//! - [`settings`]: what a node is configured with, as the runtime reads it;
//! - [`node`]: wires these together into a bound, runnable [`Node`] of any role;
//! - [`process`]: the process around a role — runtime, signals, reload triggers.

/// The allocator of every process that runs the node runtime (feature `mimalloc`, on by
/// default): with glibc's, malloc and free took an eighth of a tiered request's CPU, much of it
/// waiting on arena locks; `cargo bench --bench tier_offload` ran about a fifth faster.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod access_log;
pub mod admin;
pub mod body;
pub mod client_body;
mod compress;
pub mod control;
pub mod error;
pub mod failover;
mod fill;
mod forward;
mod guard;
pub mod handoff;
pub mod headers;
mod live;
pub mod metrics;
pub mod node;
pub mod pipeline;
pub mod process;
pub mod reload;
mod respond;
pub mod ring;
pub mod rtt;
mod rules;
pub mod server;
pub mod settings;
pub mod shields;
pub mod tls;
pub mod upstream;

use std::net::SocketAddr;

pub use control::ControlClient;
pub use error::{Fault, RequestError};
pub use node::{ListenerAddrs, Node};
pub use pipeline::{CachePipeline, Downstream, PipelineIdentity, PipelineLimits};
pub use reload::{Reload, ReloadMetrics, Role};
pub use settings::{ListenerKind, NodeControl, NodeSettings};
pub use upstream::{OriginUpstream, Upstream};
pub use verge_serve::register_metrics;

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
    /// The role's upstream could not be set up (a shield ring, a shield's DNS resolver).
    #[error("cannot set up the upstream: {0}")]
    Upstream(String),
    /// A role-specific part could not be built; the text says which and why.
    #[error("{0}")]
    Role(String),
    /// Certificates, keys or CA bundles named by the configuration cannot be used.
    #[error("TLS: {0}")]
    Tls(String),
    /// `[access_log]` names a file that cannot be opened; the text names it.
    #[error("access_log.path: {0}")]
    AccessLog(String),
    /// The listening sockets could not be taken over from the previous process.
    #[error("cannot take over the listeners: {0}")]
    Handoff(String),
}
