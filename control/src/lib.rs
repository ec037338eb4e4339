//! The control plane: nodes register and heartbeat; control health-checks them, computes
//! versioned routing tables, keeps a durable purge log and streams tables and purges to every
//! node. It talks to nodes only over HTTP, with the types of [`verge_config::wire`].
//!
//! - [`log`]: the durable purge log;
//! - [`registry`]: registered nodes and their health;
//! - [`routing`]: routing tables from the registry, with the tier plan;
//! - [`latency`]: the round trips nodes report, combined into the latency matrix;
//! - [`hub`]: the per-node push streams;
//! - [`purges`]: where each purge has been applied;
//! - [`service`]: the shared state and background tasks;
//! - [`reload`]: configuration changes without a restart;
//! - [`server`]: the node and admin HTTP APIs;
//! - [`client`]: a client of the admin API;
//! - [`commands`]: `verge purge` and `verge reload`, as an operator runs them;
//! - [`geo`]: geo load balancing (GeoDNS and HTTP steering).

pub mod accept;
pub mod client;
pub mod commands;
pub mod geo;
pub mod hub;
pub mod latency;
pub mod log;
pub mod metrics;
pub mod purges;
pub mod registry;
pub mod reload;
pub mod replica;
pub mod routing;
pub mod server;
pub mod service;
pub mod session;
pub mod status;
pub mod store;
pub mod token_bucket;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use reload::ControlReloader;
pub use server::ControlNode;

/// Why control could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("cannot create data directory {}: {source}", path.display())]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Log(#[from] log::LogError),
    #[error("cannot read the store in etcd ({endpoints}): {source}")]
    Etcd {
        endpoints: String,
        source: store::etcd::EtcdError,
    },
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("controller.node_tls: {0}")]
    Tls(String),
}
