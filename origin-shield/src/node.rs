//! `verge shield`: the node runtime of `verge_edge` with an [`OriginPool`] as its upstream.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use verge_cache::{Clock, SystemClock};
use verge_config::wire::NodeRole;
use verge_config::ShieldConfig;
use verge_edge::{Node, NodeControl, NodeSettings, StartError};

use crate::pool::{HealthChecks, OriginPool, PoolError};

/// A bound, ready-to-run shield.
pub struct ShieldNode {
    node: Node<Arc<OriginPool>>,
    /// Active health checks of the origin servers; they stop when this is dropped.
    checks: Option<HealthChecks>,
}

impl ShieldNode {
    /// Binds both listeners (port 0 picks a free port) with the real clock.
    pub async fn bind(config: &ShieldConfig) -> Result<ShieldNode, StartError> {
        ShieldNode::bind_with_clock(config, Arc::new(SystemClock)).await
    }

    /// Binds both listeners; freshness is judged by `clock`. Returns once every origin host
    /// name has been looked up once (a name that did not resolve is logged, not fatal).
    pub async fn bind_with_clock(
        config: &ShieldConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<ShieldNode, StartError> {
        let settings = NodeSettings {
            id: &config.id,
            server: &config.server,
            cache: &config.cache,
            admin: &config.admin,
            cache_name: "verge-shield",
            upstream_max_connections: config.origin.upstream.max_connections,
            control: config.control.as_ref().map(|control| NodeControl {
                config: control,
                role: NodeRole::Shield,
                region: &config.region,
            }),
        };
        let mut pool = None;
        let node = Node::bind_with(settings, clock, |registry, metrics| {
            let built = OriginPool::new(
                &config.origin,
                &config.resolver,
                registry,
                &metrics.upstream_connections_in_use,
            )
            .map_err(start_error)?;
            let built = Arc::new(built);
            pool = Some(Arc::clone(&built));
            Ok(built)
        })
        .await?;
        let checks = match pool {
            Some(pool) => {
                pool.first_lookups().await;
                config
                    .origin
                    .health_path
                    .as_ref()
                    .map(|_| pool.start_health_checks())
            }
            None => None,
        };
        Ok(ShieldNode { node, checks })
    }

    /// Where edges connect.
    pub fn data_addr(&self) -> SocketAddr {
        self.node.data_addr()
    }

    /// Where `/metrics`, `/healthz` and the purge API are served.
    pub fn admin_addr(&self) -> SocketAddr {
        self.node.admin_addr()
    }

    /// Serves until `shutdown` completes, then drains like an edge.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let checks = self.checks;
        self.node.run(shutdown).await;
        drop(checks);
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
