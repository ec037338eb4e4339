//! `verge shield`: the node runtime of `verge_edge` with an [`OriginPool`] as its upstream.
//!
//! A reload that changes `[origin]` or `[resolver]` builds a new pool beside the running one
//! (its names looked up first), and the node swaps it in; requests in flight finish on the old
//! pool, whose probes and lookups stop once it is no longer used. The pool's metrics live on a
//! registry of their own, swapped with it, so the new pool's series replace the old ones.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntGauge, Registry};
use verge_cache::{Clock, SystemClock};
use verge_config::wire::NodeRole;
use verge_config::{ConfigErrors, ConfigSource, ShieldConfig};
use verge_edge::{Node, NodeControl, NodeSettings, Reload, Role, StartError};

use crate::pool::{HealthChecks, OriginPool, PoolError};

/// How long a reload waits for the new pool's first name lookups.
const RELOAD_LOOKUP_WAIT: Duration = Duration::from_secs(5);

/// A bound, ready-to-run shield.
pub struct ShieldNode {
    node: Node<Arc<OriginPool>>,
}

/// The node settings of a shield configuration.
fn shield_settings(config: &ShieldConfig) -> NodeSettings<'_> {
    NodeSettings {
        id: &config.id,
        server: &config.server,
        cache: &config.cache,
        admin: &config.admin,
        tls: config.tls.as_ref(),
        cache_name: "verge-shield",
        upstream_max_connections: config.origin.upstream.max_connections,
        control: config.control.as_ref().map(|control| NodeControl {
            config: control,
            role: NodeRole::Shield,
            region: &config.region,
        }),
    }
}

/// The metrics of the pool serving now, gathered through the node's registry.
#[derive(Clone)]
struct PoolRegistry {
    current: Arc<ArcSwap<Registry>>,
}

impl Collector for PoolRegistry {
    fn desc(&self) -> Vec<&Desc> {
        Vec::new()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.current.load().gather()
    }
}

/// How a shield builds its pool and reloads.
struct ShieldRole {
    metrics: PoolRegistry,
    in_use: IntGauge,
    /// Active health checks of the serving pool; replaced with it.
    checks: Mutex<Option<HealthChecks>>,
}

impl ShieldRole {
    /// A pool for `config` on a registry of its own, with its health checks started.
    fn pool(
        &self,
        config: &ShieldConfig,
    ) -> Result<(Arc<OriginPool>, Registry, Option<HealthChecks>), PoolError> {
        let registry = Registry::new();
        let pool = Arc::new(OriginPool::new(
            &config.origin,
            &config.resolver,
            &registry,
            &self.in_use,
        )?);
        let checks = config
            .origin
            .health_path
            .as_ref()
            .map(|_| pool.start_health_checks());
        Ok((pool, registry, checks))
    }
}

impl Role for ShieldRole {
    type Config = ShieldConfig;
    type Upstream = Arc<OriginPool>;

    fn load(&self, path: &Path) -> Result<ShieldConfig, ConfigErrors> {
        ShieldConfig::from_file(path)
    }

    fn node<'a>(&self, config: &'a ShieldConfig) -> NodeSettings<'a> {
        shield_settings(config)
    }

    fn fixed_changes(&self, old: &ShieldConfig, new: &ShieldConfig) -> Vec<String> {
        let mut fixed = Vec::new();
        if old.region != new.region {
            fixed.push("shield.region".to_string());
        }
        fixed
    }

    fn upstream_changes(&self, old: &ShieldConfig, new: &ShieldConfig) -> Vec<String> {
        let mut changed = Vec::new();
        if old.origin != new.origin {
            changed.push("origin".to_string());
        }
        if old.resolver != new.resolver {
            changed.push("resolver".to_string());
        }
        changed
    }

    fn build_upstream(&self, config: &ShieldConfig) -> Result<Arc<OriginPool>, String> {
        let (pool, registry, checks) = self.pool(config).map_err(|e| e.to_string())?;
        // Reloads run off the async workers, so waiting here blocks no request.
        let lookups = Arc::clone(&pool);
        let waited = tokio::runtime::Handle::try_current().map(|runtime| {
            runtime.block_on(async move {
                tokio::time::timeout(RELOAD_LOOKUP_WAIT, lookups.first_lookups()).await
            })
        });
        if let Ok(Err(_)) = waited {
            tracing::warn!(wait = ?RELOAD_LOOKUP_WAIT, "new origin pool: some names are not resolved yet");
        }
        self.metrics.current.store(Arc::new(registry));
        *self.checks.lock().unwrap_or_else(PoisonError::into_inner) = checks;
        Ok(pool)
    }
}

impl ShieldNode {
    /// Binds every listener (port 0 picks a free port) with the real clock.
    pub async fn bind(config: &ShieldConfig) -> Result<ShieldNode, StartError> {
        ShieldNode::bind_with_clock(config, Arc::new(SystemClock)).await
    }

    /// Binds every listener with the real clock; a reload reads `source` again.
    pub async fn bind_from(
        config: &ShieldConfig,
        source: ConfigSource,
    ) -> Result<ShieldNode, StartError> {
        ShieldNode::bind_reloadable(config, source, Arc::new(SystemClock)).await
    }

    /// Binds every listener; freshness is judged by `clock`. Returns once every origin host
    /// name has been looked up once (a name that did not resolve is logged, not fatal).
    pub async fn bind_with_clock(
        config: &ShieldConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<ShieldNode, StartError> {
        ShieldNode::bind_reloadable(config, ConfigSource::CommandLine, clock).await
    }

    async fn bind_reloadable(
        config: &ShieldConfig,
        source: ConfigSource,
        clock: Arc<dyn Clock>,
    ) -> Result<ShieldNode, StartError> {
        let mut role = None;
        let mut node = Node::bind_with(shield_settings(config), clock, |registry, metrics| {
            let pools = PoolRegistry {
                current: Arc::new(ArcSwap::from_pointee(Registry::new())),
            };
            registry.register(Box::new(pools.clone()))?;
            let shield = ShieldRole {
                metrics: pools,
                in_use: metrics.upstream_connections_in_use.clone(),
                checks: Mutex::new(None),
            };
            let (pool, pool_registry, checks) = shield.pool(config).map_err(start_error)?;
            shield.metrics.current.store(Arc::new(pool_registry));
            *shield.checks.lock().unwrap_or_else(PoisonError::into_inner) = checks;
            role = Some((shield, Arc::clone(&pool)));
            Ok(pool)
        })
        .await?;
        if let Some((shield, pool)) = role {
            pool.first_lookups().await;
            node.enable_reload(shield, config.clone(), source);
        }
        Ok(ShieldNode { node })
    }

    /// Where edges connect over clear text.
    pub fn data_addr(&self) -> SocketAddr {
        self.node.data_addr()
    }

    /// Where edges connect over TLS, in `tls.listen` order.
    pub fn tls_addrs(&self) -> Vec<SocketAddr> {
        self.node.tls_addrs()
    }

    /// Where `/metrics`, `/healthz` and the admin API are served.
    pub fn admin_addr(&self) -> SocketAddr {
        self.node.admin_addr()
    }

    /// What reloads this shield's configuration.
    pub fn reloader(&self) -> Option<Arc<dyn Reload>> {
        self.node.reloader()
    }

    /// Serves until `shutdown` completes, then drains like an edge.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        self.node.run(shutdown).await;
    }
}

/// A pool that cannot be built stops the start; a resolver problem's text says what to fix.
fn start_error(error: PoolError) -> StartError {
    match error {
        PoolError::Metrics(error) => StartError::Metrics(error),
        PoolError::Resolver(error) => StartError::Upstream(error.to_string()),
        PoolError::Tls(message) => StartError::Tls(message),
    }
}
