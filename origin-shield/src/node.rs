//! `verge shield`: the node runtime of `verge_node` with an [`OriginPool`] as its upstream.
//!
//! A reload that changes `[origin]` or `[resolver]` builds a new pool and upper tier beside the
//! running ones (its names looked up first), and the node swaps them in, the routing table in
//! force applied to the new tier first; requests in flight finish on the old ones, whose probes
//! and lookups stop once they are no longer used. The pool's metrics live on a registry of
//! their own, swapped with it, so the new pool's series replace the old ones. A reload that
//! changes only `[parents]` builds a new upper tier in front of the pool serving now, which
//! keeps its servers' health, round trips, names and metrics.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntGauge, Registry};
use verge_config::shield::ResolverConfig;
use verge_config::{OriginPoolConfig, ShieldConfig};
use verge_node::metrics::NodeMetrics;
use verge_node::reload::differing;
use verge_node::{Node, Role, StartError};

use crate::pool::{HealthChecks, OriginPool, PoolError};
use crate::tier::ShieldTier;
use verge_node::shields::ShieldMetrics;

/// How long a reload waits for the new pool's first name lookups.
const RELOAD_LOOKUP_WAIT: Duration = Duration::from_secs(5);

/// A bound, ready-to-run shield.
pub type ShieldNode = Node<ShieldRole>;

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

/// The shield role: what it keeps to build a new pool on reload.
pub struct ShieldRole {
    metrics: PoolRegistry,
    /// The upper tier's metrics, on the node's registry once, shared by every upstream built.
    tier_metrics: ShieldMetrics,
    in_use: IntGauge,
    /// Active health checks of the serving pool; replaced with it.
    checks: Mutex<Option<HealthChecks>>,
    /// The pool last built and what it was built from, for a reload that changes neither.
    built: Mutex<Option<BuiltPool>>,
}

/// A pool and the settings it was built from.
struct BuiltPool {
    origin: OriginPoolConfig,
    resolver: ResolverConfig,
    pool: Arc<OriginPool>,
}

impl BuiltPool {
    fn of(config: &ShieldConfig, pool: &Arc<OriginPool>) -> BuiltPool {
        BuiltPool {
            origin: config.origin.clone(),
            resolver: config.resolver.clone(),
            pool: Arc::clone(pool),
        }
    }
}

impl ShieldRole {
    /// The pool with the upper tier in front of it (empty until a routing table fills it).
    fn tier(&self, config: &ShieldConfig, pool: Arc<OriginPool>) -> Result<ShieldTier, StartError> {
        ShieldTier::new(
            &config.id,
            pool,
            &config.origin.upstream,
            &config.parents,
            self.tier_metrics.clone(),
            &self.in_use,
        )
    }

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
    type Upstream = ShieldTier;
    const TABLE: &'static str = "shield";

    fn start(
        config: &ShieldConfig,
        registry: &Registry,
        metrics: &NodeMetrics,
    ) -> Result<(ShieldRole, ShieldTier), StartError> {
        let pools = PoolRegistry {
            current: Arc::new(ArcSwap::from_pointee(Registry::new())),
        };
        registry.register(Box::new(pools.clone()))?;
        let shield = ShieldRole {
            metrics: pools,
            tier_metrics: ShieldMetrics::register(registry)?,
            in_use: metrics.upstream_connections_in_use.clone(),
            checks: Mutex::new(None),
            built: Mutex::new(None),
        };
        let (pool, pool_registry, checks) = shield.pool(config).map_err(start_error)?;
        shield.metrics.current.store(Arc::new(pool_registry));
        *shield.checks.lock().unwrap_or_else(PoisonError::into_inner) = checks;
        *shield.built.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(BuiltPool::of(config, &pool));
        let tier = shield.tier(config, pool)?;
        Ok((shield, tier))
    }

    /// Every origin host name has been looked up once (a name that did not resolve is
    /// logged, not fatal).
    async fn ready(&self, tier: &ShieldTier) {
        tier.pool().first_lookups().await;
    }

    fn upstream_changes(&self, old: &ShieldConfig, new: &ShieldConfig) -> Vec<String> {
        differing(&[
            ("origin", old.origin != new.origin),
            ("resolver", old.resolver != new.resolver),
            ("parents", old.parents != new.parents),
        ])
    }

    fn build_upstream(&self, config: &ShieldConfig) -> Result<ShieldTier, String> {
        let kept = self
            .built
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|b| b.origin == config.origin && b.resolver == config.resolver)
            .map(|b| Arc::clone(&b.pool));
        if let Some(pool) = kept {
            return self.tier(config, pool).map_err(|e| e.to_string());
        }
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
        *self.built.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(BuiltPool::of(config, &pool));
        self.tier(config, pool).map_err(|e| e.to_string())
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
