//! Geo load balancing: each client is steered to the nearest healthy edges, by DNS (an
//! authoritative GeoDNS responder) and by HTTP (redirects, and a JSON explanation), from the
//! same live routing tables that control publishes to its nodes.
//!
//! - [`cidr`]: longest-prefix match of client addresses to regions;
//! - [`geoip`]: client → region by a MaxMind database, reloaded when the file changes;
//! - [`policy`]: the routing table compiled into a [`policy::Plan`], and the filter chain that
//!   makes a [`policy::Decision`] (pure, allocation-free);
//! - [`steering`]: the shared handle — locate the client, decide, count, explain;
//! - [`dns`]: the responder (its answers; TCP through hickory-server);
//! - [`udp`]: the responder's UDP loop, answering a bounded number of queries at once;
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
pub mod tcp;
pub mod udp;

#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use verge_config::geo::GeoConfig;
use verge_config::wire::RoutingTable;

use crate::service::Control;
use crate::StartError;
use dns::{DnsListeners, GeoDns};
use hickory_proto::xfer::Protocol;
use metrics::GeoMetrics;
use steering::Steering;
use udp::{UdpAnswer, UdpLimit};

/// How often the GeoIP task looks again when no database is configured (a reload may add one).
const GEOIP_IDLE_CHECK: Duration = Duration::from_secs(1);

/// Geo steering, bound and ready to run.
pub struct GeoService {
    live: Arc<LiveGeo>,
    tables: watch::Receiver<Arc<RoutingTable>>,
    dns: Option<(DnsListeners, UdpLimit)>,
    http: Option<TcpListener>,
    /// Where DNS is served (UDP and TCP), if configured.
    pub dns_addr: Option<SocketAddr>,
    /// Where HTTP steering is served, if configured.
    pub steering_addr: Option<SocketAddr>,
}

/// Geo steering as one configuration makes it: the client rules, name policies and plan
/// ([`Steering`]) and the zone's DNS answers ([`GeoDns`]).
pub struct GeoState {
    pub config: GeoConfig,
    pub steering: Arc<Steering>,
    pub dns: GeoDns,
}

/// The geo state in force, swapped whole when a reload changes `[geo]`. Each DNS query and
/// HTTP request loads it once and finishes on it.
pub struct LiveGeo {
    current: ArcSwap<GeoState>,
    tables: watch::Receiver<Arc<RoutingTable>>,
    /// The DNS listener's address, which in-zone name servers answer with.
    dns_ip: Option<IpAddr>,
}

impl LiveGeo {
    pub fn load(&self) -> Arc<GeoState> {
        self.current.load_full()
    }

    /// Builds the state of a new `[geo]` configuration (nothing changes until [`LiveGeo::swap`]).
    /// Fails when it names a GeoIP database that cannot be loaded.
    pub fn prepare(&self, config: &GeoConfig) -> Result<GeoState, String> {
        let current = self.load();
        let steering = Arc::new(Steering::succeeding(
            config,
            &current.steering,
            self.tables.clone(),
        )?);
        Ok(GeoState {
            config: config.clone(),
            dns: GeoDns::new(config, Arc::clone(&steering), self.dns_ip),
            steering,
        })
    }

    /// Puts `state` in force: answers begun before keep the state they started with.
    pub fn swap(&self, state: GeoState) {
        self.current.store(Arc::new(state));
    }
}

/// The DNS handler that answers each query from the geo state in force.
struct LiveDns(Arc<LiveGeo>);

#[async_trait::async_trait]
impl UdpAnswer for LiveDns {
    async fn answer_udp(&self, packet: &[u8], src: SocketAddr) -> Option<Vec<u8>> {
        self.0.load().dns.answer_packet(packet, src)
    }

    async fn answer_tcp(&self, message: &[u8], src: SocketAddr) -> Option<Vec<u8>> {
        self.0
            .load()
            .dns
            .answer_message(message, src, Protocol::Tcp)
    }
}

impl GeoService {
    /// Registers the metrics on control's registry, loads the GeoIP database (if any) and binds
    /// the DNS and steering listeners.
    pub async fn bind(config: &GeoConfig, control: &Control) -> Result<GeoService, StartError> {
        let metrics = GeoMetrics::new(&control.metrics.registry)?;
        let limit = UdpLimit {
            max_concurrent: config.dns_max_concurrent_queries,
            dropped: metrics.dns_dropped.clone(),
        };
        let tables = control.tables();
        let steering = Arc::new(Steering::following(config, tables.clone(), metrics));
        let dns = match config.dns_listen {
            Some(addr) => Some((DnsListeners::bind(addr).await?, limit)),
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
        let dns_addr = dns.as_ref().map(|(d, _)| d.addr);
        let dns_ip = dns_addr.map(|a| a.ip());
        let state = GeoState {
            config: config.clone(),
            dns: GeoDns::new(config, Arc::clone(&steering), dns_ip),
            steering,
        };
        let live = Arc::new(LiveGeo {
            current: ArcSwap::from_pointee(state),
            tables: tables.clone(),
            dns_ip,
        });
        Ok(GeoService {
            live,
            dns_addr,
            steering_addr,
            tables,
            dns,
            http,
        })
    }

    /// The geo state in force, which a reload swaps.
    pub fn live(&self) -> &Arc<LiveGeo> {
        &self.live
    }

    /// Serves until `shutdown`: follows routing tables and the GeoIP file, answers DNS and HTTP.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let GeoService {
            live,
            tables,
            dns,
            http,
            ..
        } = self;
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(follow_tables(Arc::clone(&live), tables, shutdown.clone()));
        tasks.spawn(follow_geoip(Arc::clone(&live), shutdown.clone()));
        if let Some((dns, limit)) = dns {
            tasks.spawn(dns.serve(LiveDns(Arc::clone(&live)), limit, shutdown.clone()));
        }
        if let Some(listener) = http {
            tasks.spawn(http::serve(listener, live, shutdown));
        }
        while tasks.join_next().await.is_some() {}
    }
}

/// Compiles every new routing table as it arrives, so that queries rarely pay for it (a query
/// that comes first compiles it itself).
async fn follow_tables(
    live: Arc<LiveGeo>,
    mut tables: watch::Receiver<Arc<RoutingTable>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let table = Arc::clone(&tables.borrow_and_update());
        live.load().steering.update(&table);
        tokio::select! {
            changed = tables.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}

/// Checks the GeoIP database of the state in force every `geoip_reload` (a reload may add,
/// remove or move it).
async fn follow_geoip(live: Arc<LiveGeo>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let every = live
            .load()
            .config
            .geoip
            .as_ref()
            .map_or(GEOIP_IDLE_CHECK, |g| g.reload_interval);
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        let Some(geoip) = live.load().steering.geoip().cloned() else {
            continue;
        };
        if tokio::task::spawn_blocking(move || geoip.check())
            .await
            .is_err()
        {
            return;
        }
    }
}
