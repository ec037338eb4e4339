//! The node runtime every cache node shares, whatever its upstream: the data-plane and admin
//! listeners, the metrics registry, the store and the pipeline, started and drained together.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use prometheus::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use verge_cache::{CacheStore, Clock, Flights};
use verge_config::{AdminConfig, CacheConfig, NodeId, ServerConfig};

use crate::admin::AdminService;
use crate::control::{ControlClient, NodeControl};
use crate::metrics::NodeMetrics;
use crate::pipeline::{EdgePipeline, PipelineIdentity, PipelineLimits};
use crate::server::{self, ListenerLimits};
use crate::upstream::Upstream;
use crate::StartError;

/// What every cache node is configured with, whatever its role.
pub struct NodeSettings<'a> {
    pub id: &'a NodeId,
    pub server: &'a ServerConfig,
    pub cache: &'a CacheConfig,
    pub admin: &'a AdminConfig,
    /// This cache's name in `Cache-Status` (`verge-edge`, `verge-shield`).
    pub cache_name: &'static str,
    /// The configured bound on upstream connections, for `verge_upstream_connections_max`.
    pub upstream_max_connections: usize,
    /// The control plane to register with, and as what; `None`: static configuration only.
    pub control: Option<NodeControl<'a>>,
}

/// A bound, ready-to-run cache node with upstream `U`.
pub struct Node<U> {
    data: TcpListener,
    admin: TcpListener,
    data_addr: SocketAddr,
    admin_addr: SocketAddr,
    limits: ListenerLimits,
    pipeline: Arc<EdgePipeline<U>>,
    admin_service: Arc<AdminService>,
    metrics: NodeMetrics,
    control: Option<ControlClient<U>>,
}

impl<U: Upstream> Node<U> {
    /// Binds both listeners (port 0 picks a free port) and builds the node; `upstream` makes the
    /// role's upstream with the node's registry and metrics.
    pub async fn bind_with(
        settings: NodeSettings<'_>,
        clock: Arc<dyn Clock>,
        upstream: impl FnOnce(&Registry, &NodeMetrics) -> Result<U, StartError>,
    ) -> Result<Node<U>, StartError> {
        let server_config = settings.server;
        let bind = |addr: SocketAddr, what: &'static str| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, what, source })
        };
        let data = bind(server_config.listen, "server.listen").await?;
        let admin = bind(server_config.admin_listen, "server.admin_listen").await?;
        let local = |l: &TcpListener, addr: SocketAddr, what| {
            l.local_addr()
                .map_err(|source| StartError::Bind { addr, what, source })
        };
        let data_addr = local(&data, server_config.listen, "server.listen")?;
        let admin_addr = local(&admin, server_config.admin_listen, "server.admin_listen")?;

        let cache = settings.cache;
        let registry = Registry::new();
        let metrics = NodeMetrics::register(&registry)?;
        let max_object = usize::try_from(cache.max_object_bytes.bytes()).unwrap_or(usize::MAX);
        let store = CacheStore::new(cache.max_bytes.bytes(), max_object);
        let flights = Flights::new(cache.hit_for_miss_ttl, cache.hit_for_miss_max_keys);
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        metrics.cache_max_bytes.set(gauge(cache.max_bytes.bytes()));
        metrics
            .connections_max
            .set(gauge(server_config.max_connections as u64));
        metrics
            .upstream_connections_max
            .set(gauge(settings.upstream_max_connections as u64));
        let upstream = upstream(&registry, &metrics)?;
        let pipeline = EdgePipeline::new(
            store.clone(),
            Arc::clone(&flights),
            upstream,
            metrics.clone(),
            Arc::clone(&clock),
            PipelineIdentity {
                node_id: settings.id.as_str(),
                cache_name: settings.cache_name,
            },
            PipelineLimits {
                max_ranges: cache.max_ranges,
            },
        );
        let control = match settings.control {
            Some(control) => Some(ControlClient::new(
                control,
                settings.id,
                data_addr,
                admin_addr,
                Arc::clone(&pipeline),
                &registry,
            )?),
            None => None,
        };
        let admin_service = Arc::new(AdminService {
            registry,
            metrics: metrics.clone(),
            store,
            flights,
            clock,
            token: settings.admin.token.clone(),
            max_body_bytes: usize::try_from(settings.admin.max_body_bytes.bytes())
                .unwrap_or(usize::MAX),
        });
        let limits = ListenerLimits {
            max_connections: server_config.max_connections,
            max_header_bytes: usize::try_from(server_config.max_header_bytes.bytes())
                .unwrap_or(usize::MAX),
            header_read_timeout: server_config.header_read_timeout,
            h2_max_concurrent_streams: server_config.h2_max_concurrent_streams,
            shutdown_grace: server_config.shutdown_grace,
        };
        Ok(Node {
            data,
            admin,
            data_addr,
            admin_addr,
            limits,
            pipeline,
            admin_service,
            metrics,
            control,
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
    /// finish within `server.shutdown_grace`. With a control plane configured, the node also
    /// follows it meanwhile; that stops at once on shutdown.
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
        let control = self
            .control
            .map(|client| tokio::spawn(client.run(stop_rx.clone())));
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
        if let Some(control) = control {
            let _ = control.await;
        }
        let _ = data.await;
        let _ = admin.await;
    }
}
