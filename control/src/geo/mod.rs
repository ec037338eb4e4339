//! Geo load balancing: each client is steered to the nearest healthy edges, by DNS (an
//! authoritative GeoDNS responder) and by HTTP (redirects, and a JSON explanation), from the
//! same live routing tables that control publishes to its nodes.
//!
//! - [`cidr`]: longest-prefix match of client addresses to regions;
//! - [`geoip`]: client → region by a MaxMind database, reloaded when the file changes;
//! - [`policy`]: the routing table compiled into a [`policy::Plan`], and the filter chain that
//!   makes a [`policy::Decision`] (pure, allocation-free);
//! - [`steering`]: the shared handle — locate the client, decide, count, explain;
//! - [`dns`]: the responder (hickory-server, UDP and TCP);
//! - [`http`]: the steering listener;
//! - [`metrics`]: `verge_geo_*` on control's registry.
//!
//! [`GeoService`] binds the listeners and runs them beside control's own.

pub mod cidr;
pub mod dns;
pub mod geoip;
pub mod http;
pub mod metrics;
pub mod policy;
pub mod steering;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use verge_config::geo::GeoConfig;
use verge_config::wire::RoutingTable;

use crate::service::Control;
use crate::StartError;
use dns::{DnsListeners, GeoDns};
use metrics::GeoMetrics;
use steering::Steering;

/// Geo steering, bound and ready to run.
pub struct GeoService {
    config: GeoConfig,
    steering: Arc<Steering>,
    tables: watch::Receiver<Arc<RoutingTable>>,
    dns: Option<DnsListeners>,
    http: Option<TcpListener>,
    /// Where DNS is served (UDP and TCP), if configured.
    pub dns_addr: Option<SocketAddr>,
    /// Where HTTP steering is served, if configured.
    pub steering_addr: Option<SocketAddr>,
}

impl GeoService {
    /// Registers the metrics on control's registry, loads the GeoIP database (if any) and binds
    /// the DNS and steering listeners.
    pub async fn bind(config: &GeoConfig, control: &Control) -> Result<GeoService, StartError> {
        let metrics = GeoMetrics::new(&control.metrics.registry)?;
        let tables = control.tables();
        let steering = Arc::new(Steering::following(config, tables.clone(), metrics));
        let dns = match config.dns_listen {
            Some(addr) => Some(DnsListeners::bind(addr).await?),
            None => None,
        };
        let http = match config.http_listen {
            Some(addr) => {
                let what = "geo.http_listen";
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::Bind { addr, what, source })?;
                Some(listener)
            }
            None => None,
        };
        let steering_addr = match &http {
            Some(listener) => Some(listener.local_addr().map_err(|source| StartError::Bind {
                addr: config.http_listen.unwrap_or(([0, 0, 0, 0], 0).into()),
                what: "geo.http_listen",
                source,
            })?),
            None => None,
        };
        Ok(GeoService {
            config: config.clone(),
            dns_addr: dns.as_ref().map(|d| d.addr),
            steering_addr,
            steering,
            tables,
            dns,
            http,
        })
    }

    pub fn steering(&self) -> &Arc<Steering> {
        &self.steering
    }

    /// Serves until `shutdown`: follows routing tables and the GeoIP file, answers DNS and HTTP.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let GeoService {
            config,
            steering,
            tables,
            dns,
            http,
            dns_addr,
            ..
        } = self;
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(follow_tables(
            Arc::clone(&steering),
            tables,
            shutdown.clone(),
        ));
        if let (Some(geoip), Some(g)) = (steering.geoip(), &config.geoip) {
            tasks.spawn(Arc::clone(geoip).follow(g.reload_interval, shutdown.clone()));
        }
        if let Some(dns) = dns {
            let handler = GeoDns::new(&config, Arc::clone(&steering), dns_addr.map(|a| a.ip()));
            tasks.spawn(dns.serve(handler, shutdown.clone()));
        }
        if let Some(listener) = http {
            tasks.spawn(http::serve(listener, Arc::clone(&steering), shutdown));
        }
        while tasks.join_next().await.is_some() {}
    }
}

/// Compiles every new routing table as it arrives, so that queries rarely pay for it (a query
/// that comes first compiles it itself).
async fn follow_tables(
    steering: Arc<Steering>,
    mut tables: watch::Receiver<Arc<RoutingTable>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let table = Arc::clone(&tables.borrow_and_update());
        steering.update(&table);
        tokio::select! {
            changed = tables.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}
