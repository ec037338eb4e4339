//! The shield's upstream: a pool of origin servers for one origin.
//!
//! Each request goes to one server chosen round-robin among those that are *available*: up by
//! the active health checks (if any) and not passively ejected. When no server is available the
//! pool is in *panic mode* and chooses among all of them: a request that may fail is better than
//! one refused outright while every server is merely suspected.
//!
//! - Passive health: a connect error, a timeout, a broken exchange or a 500/502/503/504 answer is
//!   a failure; `unhealthy_after` failures in a row eject the server for `eject_for`, doubled on
//!   each consecutive ejection up to `max_eject_for`. Once the ejection runs out the server takes
//!   requests again; one more failure ejects it for the next, longer period, and a success clears
//!   its record.
//! - Active health ([`OriginPool::start_health_checks`]): `GET health_path` on every server each
//!   `health_interval`; `healthy_after` 2xx answers in a row mark it up, `unhealthy_after`
//!   failures in a row mark it down. Servers start up, so a pool serves before its first probe.
//! - Retries: a GET or HEAD without a body is sent again to another server after a failure where
//!   no answer came (connect error, timeout, broken exchange), at most `retries` times, and only
//!   while the [`RetryBudget`] allows; the last error is the request's error. An answer is never
//!   retried, whatever its status: a 503 is returned as is (and counts against its server's
//!   health), so one miss costs the origin at most one answered request.
//! - Saturation: when a server's connection slots are all taken (its `max_connections`), a
//!   replayable request tries another server. Nothing reached the origin, so this is neither a
//!   server failure nor a retry.
//! - TLS: `https://` servers are reached with one client configuration built from
//!   `[origin.tls]` for the whole pool ([`client`]).
//! - Host names: a server whose URL names a host is reached at the addresses [`crate::dns`]
//!   keeps for that name, in turn ([`client`]). Until the name first resolves the server is not
//!   available; a request that reaches it anyway (panic mode) gets a 502 naming the host, and
//!   goes on to another server if there is one, as nothing was sent.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::time::Instant;

use http::header::{HeaderValue, USER_AGENT};
use http::uri::{PathAndQuery, Uri};
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Either, Empty};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use verge_config::shield::ResolverConfig;
use verge_config::wire::UpstreamHealth;
use verge_config::{OriginPoolConfig, UpstreamConfig};
use verge_node::failover::{
    self, Attempt, EjectionPolicy, Failover, Hop, RetryBudget, MIN_RETRIES_PER_SECOND,
};
use verge_node::rtt::{self, RttWindow};
use verge_node::tls::client::upstream_client_config;
use verge_node::upstream::{Upstream, UpstreamBody, UpstreamResponseBody};
use verge_node::RequestError;

use crate::dns::{self, DnsMetrics, HickoryLookup, HostResolver, NameLookup, ResolverSetupError};
use attempt::PoolCandidates;
use client::ServerClient;
use health::ServerHealth;

mod attempt;
mod client;
mod health;

/// Sent as `User-Agent` by health probes, so origin logs can tell them from traffic.
const PROBE_USER_AGENT: &str = "verge-health-check";

/// Locks a mutex whose data stays consistent even if a holder panicked (plain counters).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One origin server: its client, its health and its metrics resolved once.
struct Server {
    /// The server's URL, its `server` label in metrics and logs.
    label: String,
    client: ServerClient,
    health: Mutex<ServerHealth>,
    /// `verge_origin_up{server}`, set when availability changes; an ejection that has run out
    /// shows as 1 once the pool next looks at the server.
    up: IntGauge,
    /// `verge_origin_requests_total{server, result}`, indexed by [`Attempt::index`].
    results: Vec<IntCounter>,
    /// `verge_origin_duration_seconds{server}`: request sent to response head.
    latency: Histogram,
    /// Round trips seen: probes, and the time to response head of real requests.
    rtt: RttWindow,
}

impl Server {
    fn health(&self) -> MutexGuard<'_, ServerHealth> {
        lock(&self.health)
    }

    fn count(&self, result: Attempt) {
        if let Some(counter) = self.results.get(result.index()) {
            counter.inc();
        }
    }
}

/// Active health check settings, when checks are configured.
#[derive(Debug, Clone)]
struct ProbeSettings {
    path: PathAndQuery,
    interval: Duration,
}

/// Why a pool could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Resolver(#[from] ResolverSetupError),
    /// `[origin.tls]` cannot be used; the message starts with the key path.
    #[error("{0}")]
    Tls(String),
}

/// Several servers of one origin, used as one [`Upstream`].
pub struct OriginPool {
    servers: Vec<Server>,
    /// Keeps the servers' host names resolved; `None` when every server is an IP. Dropping it
    /// stops its refresh tasks.
    dns: Option<HostResolver>,
    /// Round-robin position; wraps harmlessly.
    cursor: AtomicUsize,
    /// Extra attempts on other servers for replayable requests.
    retries: u32,
    budget: RetryBudget,
    ejection: EjectionPolicy,
    probe: Option<ProbeSettings>,
    healthy_after: u32,
    unhealthy_after: u32,
    /// Set while no server is available, so entering and leaving panic mode is logged once.
    panicking: AtomicBool,
    retries_total: IntCounter,
    budget_exhausted: IntCounter,
    body_idle_timeout: Duration,
    name: String,
}

impl OriginPool {
    /// One [`OriginUpstream`] per server, each with the timeouts, keep-alive pool and connection
    /// bound of `config.upstream`; `in_use` counts the connection slots taken over all servers.
    /// Registers `verge_origin_requests_total{server,result}`, `verge_origin_up{server}`,
    /// `verge_origin_duration_seconds{server}`, `verge_origin_retries_total`,
    /// `verge_origin_retry_budget_exhausted_total` and the `verge_dns_*` metrics.
    ///
    /// Host names in server URLs are resolved as `resolver` says, by background tasks that
    /// start here (so this must be called within a tokio runtime) and stop with the pool; see
    /// [`OriginPool::first_lookups`].
    pub fn new(
        config: &OriginPoolConfig,
        resolver: &ResolverConfig,
        registry: &Registry,
        in_use: &IntGauge,
    ) -> Result<OriginPool, PoolError> {
        let names = host_names(config);
        let lookup: Option<Arc<dyn NameLookup>> = if names.is_empty() {
            None
        } else {
            Some(Arc::new(HickoryLookup::new(resolver, &names)?))
        };
        OriginPool::with_lookup(config, resolver, lookup, registry, in_use)
    }

    /// [`OriginPool::new`] with host names looked up by `lookup` (needed only when some server
    /// URL names a host).
    pub fn with_lookup(
        config: &OriginPoolConfig,
        resolver: &ResolverConfig,
        lookup: Option<Arc<dyn NameLookup>>,
        registry: &Registry,
        in_use: &IntGauge,
    ) -> Result<OriginPool, PoolError> {
        let tls = upstream_client_config(&config.upstream.tls, &config.servers, "origin.tls")
            .map_err(PoolError::Tls)?;
        let requests = IntCounterVec::new(
            Opts::new(
                "verge_origin_requests_total",
                "Attempts sent to each origin server, by result",
            ),
            &["server", "result"],
        )?;
        let up = IntGaugeVec::new(
            Opts::new(
                "verge_origin_up",
                "Whether an origin server takes requests (1) or is down or ejected (0)",
            ),
            &["server"],
        )?;
        let durations = HistogramVec::new(
            HistogramOpts::new(
                "verge_origin_duration_seconds",
                "Time from sending a request to an origin server to its response head",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ]),
            &["server"],
        )?;
        let retries_total = IntCounter::new(
            "verge_origin_retries_total",
            "Requests sent again to another origin server after a failure",
        )?;
        let budget_exhausted = IntCounter::new(
            "verge_origin_retry_budget_exhausted_total",
            "Retries not made because the retry budget was spent",
        )?;
        let resends = IntCounter::new(
            "verge_origin_resends_total",
            "Bodiless GET, HEAD and OPTIONS requests sent once more to an origin server that \
             closed its kept-alive connection before answering",
        )?;
        verge_node::register_metrics!(
            registry; requests, up, durations, retries_total, budget_exhausted, resends
        );
        let dns_metrics = DnsMetrics::register(registry)?;
        let names = host_names(config);
        let dns = match lookup {
            Some(lookup) if !names.is_empty() => {
                Some(HostResolver::start(&names, lookup, resolver, &dns_metrics)?)
            }
            _ => None,
        };

        let servers = config
            .servers
            .iter()
            .map(|url| {
                let label = url.to_string();
                let upstream = UpstreamConfig {
                    origin: url.clone(),
                    ..config.upstream.clone()
                };
                let gauge = up.with_label_values(&[label.as_str()]);
                let latency = durations.with_label_values(&[label.as_str()]);
                gauge.set(1);
                let results = Attempt::ALL
                    .iter()
                    .map(|r| requests.with_label_values(&[label.as_str(), r.as_str()]))
                    .collect();
                let host = dns::host_name(&url.authority)
                    .and_then(|name| dns.as_ref().and_then(|dns| dns.host(name)));
                Server {
                    client: ServerClient::new(upstream, host, tls.clone(), in_use, &resends),
                    label,
                    health: Mutex::new(ServerHealth::default()),
                    up: gauge,
                    results,
                    latency,
                    rtt: RttWindow::default(),
                }
            })
            .collect();
        let probe = config.health_path.as_deref().and_then(|path| {
            match path.parse::<PathAndQuery>() {
                Ok(path) => Some(ProbeSettings {
                    path,
                    interval: config.health_interval,
                }),
                Err(error) => {
                    tracing::warn!(path, %error, "invalid health check path; active checks off");
                    None
                }
            }
        });
        let names: Vec<String> = config.servers.iter().map(ToString::to_string).collect();
        Ok(OriginPool {
            servers,
            dns,
            cursor: AtomicUsize::new(0),
            retries: config.retries,
            budget: RetryBudget::new(
                config.retry_budget_percent,
                MIN_RETRIES_PER_SECOND,
                Instant::now(),
            ),
            ejection: EjectionPolicy {
                failures: config.unhealthy_after.max(1),
                base: config.eject_for,
                max: config.max_eject_for.max(config.eject_for),
            },
            probe,
            healthy_after: config.healthy_after,
            unhealthy_after: config.unhealthy_after,
            panicking: AtomicBool::new(false),
            retries_total,
            budget_exhausted,
            body_idle_timeout: config.upstream.response_timeout,
            name: format!("origin pool [{}]", names.join(", ")),
        })
    }

    /// Waits until every server's host name has been looked up once, successfully or not
    /// (bounded by the resolver's timeout). A pool serves without waiting, but its named servers
    /// are not usable before.
    pub async fn first_lookups(&self) {
        if let Some(dns) = &self.dns {
            dns.first_lookups().await;
        }
    }

    /// Starts the active health checks when `health_path` is configured: one task per server,
    /// probing every `health_interval` (the first probe at once). Dropping the returned handle
    /// stops them; they also stop once the pool itself is dropped. Must be called within a tokio
    /// runtime. Probes use the server's connection slots; a probe that finds them all busy gives
    /// no verdict.
    pub fn start_health_checks(self: &Arc<Self>) -> HealthChecks {
        let mut tasks = JoinSet::new();
        if let Some(probe) = &self.probe {
            for index in 0..self.servers.len() {
                tasks.spawn(probe_loop(Arc::downgrade(self), index, probe.clone()));
            }
        }
        HealthChecks { _tasks: tasks }
    }

    /// The servers a request that has already been to the `tried` ones may go to next: the
    /// available ones, or all of them in panic mode. Empty once every candidate has been tried.
    fn candidates(&self, tried: &[bool], now: Instant) -> Vec<usize> {
        let mut any_available = false;
        let mut candidates = Vec::with_capacity(self.servers.len());
        for (index, server) in self.servers.iter().enumerate() {
            let available = {
                let health = server.health();
                let available = health.available(now) && server.client.is_usable();
                // Read under the lock so a concurrent change cannot be overwritten by a stale value.
                server.up.set(i64::from(available));
                available
            };
            if available {
                any_available = true;
                if !tried[index] {
                    candidates.push(index);
                }
            }
        }
        let panicking = !any_available;
        if self.panicking.swap(panicking, Ordering::Relaxed) != panicking {
            if panicking {
                tracing::warn!(pool = %self.name, "no origin server is available; trying them all");
            } else {
                tracing::info!(pool = %self.name, "origin servers available again");
            }
        }
        if panicking {
            candidates = (0..self.servers.len()).filter(|&i| !tried[i]).collect();
        }
        candidates
    }

    /// Round-robin among `candidates` (never empty).
    fn pick(&self, candidates: &[usize]) -> Option<usize> {
        let turn = self.cursor.fetch_add(1, Ordering::Relaxed);
        candidates.get(turn % candidates.len().max(1)).copied()
    }

    fn succeeded(&self, server: &Server, sent: Instant) {
        let mut health = server.health();
        if health.passive.succeeded(sent) {
            tracing::info!(server = %server.label, "origin server back in the pool");
        }
        server
            .up
            .set(i64::from(health.up && health.passive.is_up()));
    }

    fn failed(&self, server: &Server, result: Attempt) {
        let mut health = server.health();
        if let Some(period) = health.passive.failed(Instant::now(), &self.ejection) {
            server.up.set(0);
            drop(health);
            tracing::warn!(
                server = %server.label,
                result = result.as_str(),
                ejected_for_ms = period.as_millis(),
                "origin server ejected"
            );
        }
    }

    /// Whether another attempt may be made; takes it from the budget if so.
    fn may_retry(&self, retries_made: u32) -> bool {
        if retries_made >= self.retries {
            return false;
        }
        if !self.budget.try_retry(Instant::now()) {
            self.budget_exhausted.inc();
            return false;
        }
        self.retries_total.inc();
        true
    }

    async fn check(&self, index: usize, path: &PathAndQuery) {
        let server = &self.servers[index];
        // A name that has not resolved: nothing to probe, and no verdict.
        let Ok(route) = server.client.route() else {
            return;
        };
        let request = Request::builder()
            .method(Method::GET)
            .uri(Uri::from(path.clone()))
            .header(USER_AGENT, HeaderValue::from_static(PROBE_USER_AGENT))
            .body(Either::Left(Empty::new()));
        let Ok(request) = request else {
            return;
        };
        let success = match route.send(request).await {
            Ok(response) => {
                let success = response.status().is_success();
                // Drained so the connection can be reused; the verdict is the status alone.
                let drain = response.into_body().collect();
                let _ = tokio::time::timeout(self.body_idle_timeout, drain).await;
                success
            }
            // Busy with traffic: the probe says nothing about the server.
            Err(RequestError::UpstreamSaturated { .. }) => return,
            Err(error) => {
                tracing::debug!(server = %server.label, %error, "health probe failed");
                false
            }
        };
        let mut health = server.health();
        let verdict = health.probed(success, self.healthy_after, self.unhealthy_after);
        let available = health.available(Instant::now()) && server.client.is_usable();
        server.up.set(i64::from(available));
        drop(health);
        match verdict {
            Some(true) => tracing::info!(server = %server.label, "origin server up"),
            Some(false) => tracing::warn!(server = %server.label, "origin server down"),
            None => {}
        }
    }
}

/// Probes one server every interval for as long as the pool lives.
async fn probe_loop(pool: Weak<OriginPool>, index: usize, probe: ProbeSettings) {
    let mut ticker = tokio::time::interval(probe.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        pool.check(index, &probe.path).await;
    }
}

/// The running active health checks of a pool; dropping it stops them.
#[must_use = "health checks stop when this handle is dropped"]
pub struct HealthChecks {
    /// Dropping a `JoinSet` aborts its tasks.
    _tasks: JoinSet<()>,
}

impl Upstream for OriginPool {
    async fn send(
        &self,
        request: Request<UpstreamBody>,
        hop: &Hop,
    ) -> Result<Response<UpstreamResponseBody>, RequestError> {
        let (parts, body) = request.into_parts();
        self.budget.record_request(Instant::now());
        let mut candidates = PoolCandidates {
            pool: self,
            tried: vec![false; self.servers.len()],
            retries_made: 0,
        };
        match failover::attempt(&mut candidates, hop, &parts, body).await {
            Failover::Answered(response) => Ok(response),
            Failover::Stopped(error)
            | Failover::Exhausted {
                last: Some(Err(error)),
                ..
            } => {
                tracing::debug!(pool = %self.name, %error, retries = candidates.retries_made, "origin pool gave up");
                Err(error)
            }
            Failover::Exhausted {
                last: Some(Ok(response)),
                ..
            } => Ok(response),
            // Unreachable with at least one server: the first choice always finds one.
            Failover::Exhausted { last: None, .. } => Err(RequestError::UpstreamConnect {
                upstream: self.name.clone(),
                reason: "the pool has no origin server".to_string(),
            }),
        }
    }

    fn body_idle_timeout(&self) -> Duration {
        self.body_idle_timeout
    }

    fn name(&self) -> &str {
        &self.name
    }

    /// Each server, available or not, with its round trip.
    fn health(&self) -> Vec<UpstreamHealth> {
        let now = Instant::now();
        self.servers
            .iter()
            .map(|server| UpstreamHealth {
                id: server.label.clone(),
                up: server.health().available(now) && server.client.is_usable(),
                rtt_ms: server.rtt.rtt_ms(),
            })
            .collect()
    }

    /// One probe ([`rtt::probe`]: `OPTIONS`, `Max-Forwards: 0`) to every server that real
    /// requests did not reach lately, at once: a shield sends its origin servers traffic, so
    /// only the ring's cadence applies.
    async fn probe(&self, _cadence: rtt::ProbeCadence) {
        let quiet = self
            .servers
            .iter()
            .filter(|s| s.rtt.wants_probe(rtt::QUIET));
        let probes = quiet.map(|server| async move {
            let Ok(route) = server.client.route() else {
                return;
            };
            rtt::probe(&server.rtt, || route.send(rtt::probe_request())).await;
        });
        futures_util::future::join_all(probes).await;
    }
}

/// The host names of the servers whose URL is not an IP, each once.
fn host_names(config: &OriginPoolConfig) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for url in &config.servers {
        if let Some(name) = dns::host_name(&url.authority) {
            if !names.iter().any(|known| known == name) {
                names.push(name.to_string());
            }
        }
    }
    names
}

#[cfg(test)]
mod tests;
