//! The Verge cache-node runtime and the edge role.
//!
//! - [`pipeline`]: the request path of a cache node, as one readable sequence of steps, with
//!   its fills (fetch, revalidate, store) and its answers from cache (304, 206, 416) beside it;
//! - [`upstream`]: the hop towards the origin ([`Upstream`]) and the direct-to-origin client;
//! - [`ring`]: the consistent-hashing ring that picks the origin shield owning a cache key;
//! - [`shields`]: the edge's upstream over origin shields, with failover and ejection;
//! - [`server`]: listeners, HTTP/1.1 + HTTP/2, connection limits, graceful shutdown;
//! - [`admin`]: `/metrics`, `/healthz` and `POST /v1/purge` on a separate listener;
//! - [`metrics`]: the node's Prometheus metrics on a registry passed in;
//! - [`headers`]: hop-by-hop handling, `Via`, `Cache-Status`;
//! - [`body`]: the response body type; [`error`]: request-path errors and their statuses.
//!
//! [`EdgeNode`] wires these together for `verge edge`.

pub mod admin;
pub mod body;
pub mod error;
mod fill;
pub mod headers;
pub mod metrics;
pub mod pipeline;
mod respond;
pub mod ring;
pub mod server;
pub mod shields;
pub mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use prometheus::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use verge_cache::{CacheStore, Clock, Flights, SystemClock};
use verge_config::EdgeConfig;

pub use error::{EdgeError, Fault};
pub use pipeline::{EdgePipeline, PipelineLimits};
pub use upstream::{OriginUpstream, Upstream};

use admin::AdminService;
use metrics::NodeMetrics;
use server::ListenerLimits;
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
}

/// A bound, ready-to-run edge node.
pub struct EdgeNode {
    data: TcpListener,
    admin: TcpListener,
    data_addr: SocketAddr,
    admin_addr: SocketAddr,
    limits: ListenerLimits,
    pipeline: Arc<EdgePipeline<EdgeUpstream>>,
    admin_service: Arc<AdminService>,
    metrics: NodeMetrics,
}

impl EdgeNode {
    /// Binds both listeners (port 0 picks a free port) with the real clock.
    pub async fn bind(config: &EdgeConfig) -> Result<EdgeNode, StartError> {
        EdgeNode::bind_with_clock(config, Arc::new(SystemClock)).await
    }

    /// Binds both listeners; freshness is judged by `clock`.
    pub async fn bind_with_clock(
        config: &EdgeConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<EdgeNode, StartError> {
        let bind = |addr: SocketAddr, what: &'static str| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, what, source })
        };
        let data = bind(config.server.listen, "server.listen").await?;
        let admin = bind(config.server.admin_listen, "server.admin_listen").await?;
        let local = |l: &TcpListener, addr: SocketAddr, what| {
            l.local_addr()
                .map_err(|source| StartError::Bind { addr, what, source })
        };
        let data_addr = local(&data, config.server.listen, "server.listen")?;
        let admin_addr = local(&admin, config.server.admin_listen, "server.admin_listen")?;

        let registry = Registry::new();
        let metrics = NodeMetrics::register(&registry)?;
        let max_object =
            usize::try_from(config.cache.max_object_bytes.bytes()).unwrap_or(usize::MAX);
        let store = CacheStore::new(config.cache.max_bytes.bytes(), max_object);
        let limits = PipelineLimits {
            max_ranges: config.cache.max_ranges,
        };
        let flights = Flights::new(
            config.cache.hit_for_miss_ttl,
            config.cache.hit_for_miss_max_keys,
        );
        metrics
            .cache_max_bytes
            .set(i64::try_from(config.cache.max_bytes.bytes()).unwrap_or(i64::MAX));
        metrics
            .connections_max
            .set(i64::try_from(config.server.max_connections).unwrap_or(i64::MAX));
        metrics
            .upstream_connections_max
            .set(i64::try_from(config.upstream.max_connections).unwrap_or(i64::MAX));
        let in_use = metrics.upstream_connections_in_use.clone();
        let origin = OriginUpstream::new(&config.upstream, in_use.clone());
        let upstream = if config.shields.members.is_empty() {
            EdgeUpstream::Origin(origin)
        } else {
            let shield_metrics = ShieldMetrics::register(&registry)?;
            EdgeUpstream::Shields(ShieldUpstream::new(
                &config.shields,
                &config.upstream,
                origin,
                shield_metrics,
                &in_use,
            )?)
        };
        let pipeline = EdgePipeline::new(
            store.clone(),
            Arc::clone(&flights),
            upstream,
            metrics.clone(),
            Arc::clone(&clock),
            config.id.as_str(),
            limits,
        );
        let admin_service = Arc::new(AdminService {
            registry,
            metrics: metrics.clone(),
            store,
            flights,
            clock,
            token: config.admin.token.clone(),
            max_body_bytes: usize::try_from(config.admin.max_body_bytes.bytes())
                .unwrap_or(usize::MAX),
        });
        let limits = ListenerLimits {
            max_connections: config.server.max_connections,
            max_header_bytes: usize::try_from(config.server.max_header_bytes.bytes())
                .unwrap_or(usize::MAX),
            header_read_timeout: config.server.header_read_timeout,
            h2_max_concurrent_streams: config.server.h2_max_concurrent_streams,
            shutdown_grace: config.server.shutdown_grace,
        };
        Ok(EdgeNode {
            data,
            admin,
            data_addr,
            admin_addr,
            limits,
            pipeline,
            admin_service,
            metrics,
        })
    }

    /// Where clients connect.
    pub fn data_addr(&self) -> SocketAddr {
        self.data_addr
    }

    /// Where `/metrics` and `/healthz` are served.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Serves until `shutdown` completes, then drains: no new connections, in-flight requests
    /// finish within `server.shutdown_grace`.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let admin_limits = ListenerLimits {
            max_connections: 64,
            ..self.limits.clone()
        };
        let data = tokio::spawn(server::serve(
            self.data,
            self.pipeline,
            self.limits,
            stop_rx.clone(),
            Some(self.metrics),
        ));
        let admin = tokio::spawn(server::serve(
            self.admin,
            self.admin_service,
            admin_limits,
            stop_rx,
            None,
        ));
        shutdown.await;
        tracing::info!("shutting down: draining connections");
        let _ = stop_tx.send(true);
        let _ = data.await;
        let _ = admin.await;
    }
}
