//! The node runtime every cache node shares, whatever its upstream: the data-plane listeners
//! (clear and TLS), the admin listener, the metrics registry, the store and the pipeline,
//! started, reconfigured and drained together.
//!
//! - [`listeners`]: the running listeners by configured address, added and removed on reload;
//! - [`tls`]: the node's certificates and TLS termination, reloaded in place.

mod listeners;
mod reloader;
pub(crate) mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use prometheus::Registry;
use tokio::sync::watch;
use verge_cache::{CacheStore, Clock, Flights};
use verge_config::{CacheConfig, ConfigSource, ServerConfig};

use crate::access_log::AccessLog;
use crate::admin::AdminService;
use crate::control::ControlClient;
use crate::error::RequestError;
use crate::live::LivePipeline;
use crate::metrics::{gauge, NodeMetrics};
use crate::pipeline::{CachePipeline, Downstream, PipelineIdentity, PipelineLimits};
use crate::reload::{Reload, ReloadMetrics, Role};
use crate::server::{ConnectionLimit, ListenerLimits};
use crate::settings::{admin_access, admin_listener_limits, listener_limits, ListenerKind};
use crate::tls::certs::TlsMetrics;
use crate::upstream::Upstream;
use crate::StartError;

use listeners::Listeners;
use reloader::NodeReloader;
use tls::NodeTls;

/// Connections the admin listener accepts at once.
const ADMIN_MAX_CONNECTIONS: usize = 64;

/// The addresses a node listens on now, by kind; see [`Node::listener_addrs`].
#[derive(Clone)]
pub struct ListenerAddrs(Arc<dyn Fn(ListenerKind) -> Vec<SocketAddr> + Send + Sync>);

impl ListenerAddrs {
    /// The local addresses of the serving listeners of `kind`, in configuration order.
    pub fn of(&self, kind: ListenerKind) -> Vec<SocketAddr> {
        (self.0)(kind)
    }
}

/// The parts of a running node that a reload changes, shared by its listeners, its admin API
/// and the reloader.
pub(crate) struct Runtime<U> {
    pub(crate) pipeline: Arc<LivePipeline<U>>,
    pub(crate) admin: Arc<AdminService>,
    pub(crate) metrics: NodeMetrics,
    pub(crate) store: CacheStore,
    pub(crate) flights: Arc<Flights<RequestError>>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) node_id: String,
    pub(crate) cache_name: &'static str,
    pub(crate) downstream: Downstream,
    pub(crate) data_limits: Arc<ArcSwap<ListenerLimits>>,
    pub(crate) admin_limits: Arc<ArcSwap<ListenerLimits>>,
    pub(crate) data_connections: Arc<ConnectionLimit>,
    pub(crate) admin_connections: Arc<ConnectionLimit>,
    pub(crate) tls: NodeTls,
    pub(crate) listeners: Listeners,
    pub(crate) reload_metrics: ReloadMetrics,
    pub(crate) access_log: Arc<AccessLog>,
}

impl<U: Upstream> Runtime<U> {
    /// A pipeline over `upstream` sharing this node's store, flights and metrics.
    pub(crate) fn pipeline_with(
        &self,
        upstream: U,
        cache: &CacheConfig,
        server: &ServerConfig,
    ) -> Arc<CachePipeline<U>> {
        CachePipeline::new(
            self.store.clone(),
            Arc::clone(&self.flights),
            upstream,
            self.metrics.clone(),
            Arc::clone(&self.clock),
            PipelineIdentity {
                node_id: &self.node_id,
                cache_name: self.cache_name,
                downstream: self.downstream,
                access_log: &self.access_log,
            },
            PipelineLimits::new(cache, server),
        )
    }
}

/// A bound, ready-to-run cache node of role `R`.
pub struct Node<R: Role> {
    runtime: Arc<Runtime<R::Upstream>>,
    data_addr: SocketAddr,
    admin_addr: SocketAddr,
    control: Option<ControlClient<R::Upstream>>,
    reloader: Arc<dyn Reload>,
    /// Where the listening sockets are handed to a successor process.
    upgrade_socket: Option<std::path::PathBuf>,
}

/// Binds a listener a reload asks for.
pub(crate) fn bind_listener(
    addr: SocketAddr,
    what: &'static str,
) -> Result<listeners::Bound, StartError> {
    listeners::bind(addr, what, None)
}

impl<R: Role> Node<R> {
    /// Binds every listener (port 0 picks a free port) and builds the node and its role's
    /// upstream; freshness is judged by `clock`, and a reload reads `source` again. With
    /// `server.upgrade_socket` set and a running node there, its listening sockets are taken
    /// over instead of bound.
    pub async fn bind(
        config: &R::Config,
        source: ConfigSource,
        clock: Arc<dyn Clock>,
    ) -> Result<Node<R>, StartError> {
        let settings = R::settings(config);
        let server_config = settings.server;
        let mut inherited = match &server_config.upgrade_socket {
            Some(path) => crate::handoff::take_over(path)
                .await
                .map_err(|e| StartError::Handoff(format!("{}: {e}", path.display())))?,
            None => None,
        };
        let mut bound = Vec::new();
        let data = listeners::bind(server_config.listen, "server.listen", inherited.as_mut())?;
        let data_addr = data.local_addr;
        bound.push((ListenerKind::Data, server_config.listen, data));
        let admin = listeners::bind(
            server_config.admin_listen,
            "server.admin_listen",
            inherited.as_mut(),
        )?;
        let admin_addr = admin.local_addr;
        bound.push((ListenerKind::Admin, server_config.admin_listen, admin));
        if let Some(tls) = settings.tls {
            for &addr in &tls.listen {
                let listener = listeners::bind(addr, "tls.listen", inherited.as_mut())?;
                bound.push((ListenerKind::Tls, addr, listener));
            }
        }

        let cache = settings.cache;
        let registry = Registry::new();
        let metrics = NodeMetrics::register(&registry)?;
        let tls_metrics = TlsMetrics::register(&registry)?;
        let reload_metrics = ReloadMetrics::register(&registry)?;
        let access_log = AccessLog::start(
            server_config.access_log.as_ref(),
            server_config.trust_request_id,
            settings.id.as_str(),
            settings.region.as_str(),
            &registry,
        )?;
        let node_tls = NodeTls::start(settings.tls, tls_metrics)?;
        let max_object = usize::try_from(cache.max_object_bytes.bytes()).unwrap_or(usize::MAX);
        let store = CacheStore::new(cache.max_bytes.bytes(), max_object);
        let flights = Flights::new(cache.hit_for_miss_ttl, cache.hit_for_miss_max_keys);
        metrics.cache_max_bytes.set(gauge(cache.max_bytes.bytes()));
        metrics
            .connections_max
            .set(gauge(server_config.max_connections as u64));
        metrics
            .upstream_connections_max
            .set(gauge(settings.upstream_max_connections as u64));
        let (role, upstream) = R::start(config, &registry, &metrics)?;
        role.ready(&upstream).await;
        let pipeline = CachePipeline::new(
            store.clone(),
            Arc::clone(&flights),
            upstream,
            metrics.clone(),
            Arc::clone(&clock),
            PipelineIdentity {
                node_id: settings.id.as_str(),
                cache_name: settings.cache_name,
                downstream: settings.downstream,
                access_log: &access_log,
            },
            PipelineLimits::new(cache, server_config),
        );
        let pipeline = LivePipeline::new(pipeline);
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
            store: store.clone(),
            flights: Arc::clone(&flights),
            clock: Arc::clone(&clock),
            access: ArcSwap::from_pointee(admin_access(settings.admin)),
            reload: std::sync::OnceLock::new(),
        });
        let limits = listener_limits(server_config);
        let runtime = Arc::new(Runtime {
            pipeline,
            admin: admin_service,
            metrics,
            store,
            flights,
            clock,
            node_id: settings.id.as_str().to_string(),
            cache_name: settings.cache_name,
            downstream: settings.downstream,
            data_limits: Arc::new(ArcSwap::from_pointee(limits.clone())),
            admin_limits: Arc::new(ArcSwap::from_pointee(admin_listener_limits(&limits))),
            data_connections: ConnectionLimit::new(
                server_config.max_connections,
                server_config.max_connections_per_address,
            ),
            admin_connections: ConnectionLimit::new(ADMIN_MAX_CONNECTIONS, ADMIN_MAX_CONNECTIONS),
            tls: node_tls,
            listeners: Listeners::new(bound),
            reload_metrics,
            access_log,
        });
        // The predecessor, if any, may stop accepting now: these sockets are ours. (The
        // upgrade socket is bound afterwards, when the node runs.)
        if let Some(inherited) = inherited {
            // The sockets are ours either way; a predecessor that did not hear it keeps
            // accepting beside us until it is stopped.
            if let Err(error) = inherited.ready().await {
                tracing::warn!(%error, "could not tell the previous process to stop accepting");
            }
        }
        let reloader: Arc<dyn Reload> = Arc::new(NodeReloader::new(
            role,
            Arc::clone(&runtime),
            config.clone(),
            source,
        ));
        let _ = runtime.admin.reload.set(Arc::clone(&reloader));
        Ok(Node {
            runtime,
            data_addr,
            admin_addr,
            control,
            reloader,
            upgrade_socket: server_config.upgrade_socket.clone(),
        })
    }

    /// Where clients connect over clear text.
    pub fn data_addr(&self) -> SocketAddr {
        self.data_addr
    }

    /// Where clients connect over TLS, in `tls.listen` order.
    pub fn tls_addrs(&self) -> Vec<SocketAddr> {
        self.runtime.listeners.addrs(ListenerKind::Tls)
    }

    /// A handle on the addresses this node listens on, which stays current while it runs
    /// (a reload may add or remove listeners, on port 0 too).
    pub fn listener_addrs(&self) -> ListenerAddrs {
        let runtime = Arc::clone(&self.runtime);
        ListenerAddrs(Arc::new(move |kind| runtime.listeners.addrs(kind)))
    }

    /// Where `/metrics`, `/healthz` and the admin API are served.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The node's access log, to reopen its file after rotation (SIGUSR1).
    pub fn access_log(&self) -> Arc<AccessLog> {
        Arc::clone(&self.runtime.access_log)
    }

    /// The handle that reloads this node's configuration (SIGHUP, file changes, the admin
    /// API).
    pub fn reloader(&self) -> Arc<dyn Reload> {
        Arc::clone(&self.reloader)
    }

    /// Serves until `shutdown` completes — or a successor process has taken over the
    /// listening sockets — then drains: no new connections, in-flight requests finish within
    /// `server.shutdown_grace`. With a control plane configured, the node also follows it
    /// meanwhile; that stops at once on shutdown.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let runtime = self.runtime;
        runtime.listeners.start(&runtime);
        let tls_watch = runtime.tls.spawn_watcher(stop_rx.clone());
        let control = self
            .control
            .map(|client| tokio::spawn(client.run(stop_rx.clone())));
        let handed_off = async {
            match &self.upgrade_socket {
                Some(path) => offer_listeners(path, &runtime.listeners).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = shutdown => tracing::info!("shutting down: draining connections"),
            () = handed_off => tracing::info!("a new process took over the listeners: draining connections"),
        }
        let _ = stop_tx.send(true);
        runtime.listeners.stop_all().await;
        if let Some(control) = control {
            let _ = control.await;
        }
        if let Some(watch) = tls_watch {
            let _ = watch.await;
        }
    }
}

/// Offers the node's listening sockets on the upgrade socket at `path` until a successor has
/// taken them and is serving; completes then. When a reload adds or removes listeners, the
/// offer is renewed with the new set.
async fn offer_listeners(path: &std::path::Path, listeners: &Listeners) {
    let mut changes = listeners.changes();
    loop {
        let mut server = match crate::handoff::HandoffServer::bind(path) {
            Ok(server) => server,
            Err(error) => {
                tracing::error!(path = %path.display(), %error, "cannot offer listeners for upgrades");
                return std::future::pending().await;
            }
        };
        for (kind, local, socket) in listeners.sockets() {
            if let Err(error) = server.add_listener(kind.as_str(), &socket) {
                tracing::warn!(%local, %error, "listener not offered for upgrades");
            }
        }
        changes.borrow_and_update();
        let changed = async {
            let _ = changes.changed().await;
        };
        match server.run(changed).await {
            crate::handoff::HandoffEvent::SuccessorReady => return,
            crate::handoff::HandoffEvent::Shutdown => continue,
        }
    }
}
