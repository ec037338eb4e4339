//! Host names of origin servers, resolved with DNS and kept fresh in the background.
//!
//! A [`HostResolver`] runs one task per host name: it looks the name up at once, then again
//! whenever the answer's TTL, clamped to `[min_ttl, max_ttl]`, runs out. A failed lookup keeps
//! the last good addresses and is tried again after `negative_retry`; a name that has never
//! resolved has no addresses, so the servers using it are not usable until it does (logged, not
//! fatal). The tasks stop when the resolver is dropped.
//!
//! The resolver is the cache: hickory's own answer cache is off, so a refresh always asks.
//! [`NameLookup`] is the hop boundary to DNS; [`HickoryLookup`] is the real one.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_resolver::config::{
    NameServerConfigGroup, ResolveHosts, ResolverConfig as HickoryConfig, ResolverOpts,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::{ResolveError, TokioResolver};
use prometheus::{
    Gauge, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinSet;
use verge_config::shield::ResolverConfig;

/// Addresses kept per name; a larger answer keeps the lowest ones, so the set stays stable.
pub const MAX_ADDRESSES_PER_HOST: usize = 16;

/// One successful lookup: the name's addresses and the smallest TTL of the records that gave
/// them (CNAMEs included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub addresses: Vec<IpAddr>,
    pub ttl: Duration,
}

/// Why a name has no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    #[error("no such host (NXDOMAIN)")]
    NoSuchHost,
    #[error("no address records")]
    NoAddresses,
    #[error("no answer within {}ms", .0.as_millis())]
    Timeout(Duration),
    #[error("{0}")]
    Failed(String),
    /// The first lookup has not finished yet.
    #[error("not looked up yet")]
    Pending,
}

/// Why DNS resolution could not be set up; the shield does not start.
#[derive(Debug, thiserror::Error)]
pub enum ResolverSetupError {
    #[error(
        "cannot read the system's DNS configuration (/etc/resolv.conf) to resolve the origin \
         host names {hosts}: {reason}; list name servers in [resolver] nameservers instead"
    )]
    SystemConfig { hosts: String, reason: String },
    #[error("resolving origin host names needs a tokio runtime")]
    NoRuntime,
}

/// A lookup in flight.
pub type LookupFuture<'a> = Pin<Box<dyn Future<Output = Result<Answer, DnsError>> + Send + 'a>>;

/// Looks a host name up: the hop boundary to DNS, so tests can script answers.
pub trait NameLookup: Send + Sync + 'static {
    fn lookup<'a>(&'a self, host: &'a str) -> LookupFuture<'a>;
}

/// DNS through hickory's stub resolver, over UDP (and TCP for truncated answers).
pub struct HickoryLookup {
    resolver: TokioResolver,
}

impl HickoryLookup {
    /// Asks `config.nameservers`, or the system's when there are none. `hosts` only names the
    /// names in a setup error.
    pub fn new(
        config: &ResolverConfig,
        hosts: &[String],
    ) -> Result<HickoryLookup, ResolverSetupError> {
        let provider = TokioConnectionProvider::default();
        let mut builder = match &config.nameservers {
            Some(servers) => {
                let mut group = NameServerConfigGroup::new();
                for server in servers {
                    group.merge(NameServerConfigGroup::from_ips_clear(
                        &[server.ip()],
                        server.port(),
                        true,
                    ));
                }
                let mut builder = TokioResolver::builder_with_config(
                    HickoryConfig::from_parts(None, Vec::new(), group),
                    provider,
                );
                // Only the configured servers answer: no /etc/hosts.
                builder.options_mut().use_hosts_file = ResolveHosts::Never;
                builder
            }
            None => {
                TokioResolver::builder(provider).map_err(|e| ResolverSetupError::SystemConfig {
                    hosts: hosts.join(", "),
                    reason: e.to_string(),
                })?
            }
        };
        let options: &mut ResolverOpts = builder.options_mut();
        // Each query may take half the deadline, so one lost packet is retried in time.
        options.timeout = (config.timeout / 2).max(Duration::from_millis(5));
        options.attempts = 2;
        // We cache the answers ourselves; a refresh must reach the name server.
        options.cache_size = 0;
        options.positive_max_ttl = Some(config.max_ttl);
        options.negative_max_ttl = Some(config.negative_retry);
        Ok(HickoryLookup {
            resolver: builder.build(),
        })
    }
}

impl NameLookup for HickoryLookup {
    fn lookup<'a>(&'a self, host: &'a str) -> LookupFuture<'a> {
        Box::pin(async move {
            let found = self.resolver.lookup_ip(host).await.map_err(classify)?;
            let addresses: Vec<IpAddr> = found.iter().collect();
            let ttl = found
                .as_lookup()
                .records()
                .iter()
                .map(|record| record.ttl())
                .min()
                .map(|secs| Duration::from_secs(u64::from(secs)))
                .unwrap_or_else(|| {
                    found
                        .valid_until()
                        .saturating_duration_since(Instant::now())
                });
            Ok(Answer { addresses, ttl })
        })
    }
}

fn classify(error: ResolveError) -> DnsError {
    if error.is_nx_domain() {
        DnsError::NoSuchHost
    } else if error.is_no_records_found() {
        DnsError::NoAddresses
    } else {
        DnsError::Failed(error.to_string())
    }
}

/// How long an answer is used: its TTL within `[min_ttl, max_ttl]`.
fn ttl_in_use(ttl: Duration, settings: &ResolverConfig) -> Duration {
    ttl.clamp(settings.min_ttl, settings.max_ttl.max(settings.min_ttl))
}

/// The addresses kept of an answer: distinct, sorted, at most [`MAX_ADDRESSES_PER_HOST`].
/// Sorted so that a name server rotating its answer's order does not look like a change.
fn kept_addresses(mut addresses: Vec<IpAddr>) -> Vec<IpAddr> {
    addresses.sort_unstable();
    addresses.dedup();
    addresses.truncate(MAX_ADDRESSES_PER_HOST);
    addresses
}

/// What is known of one name.
#[derive(Debug, Clone)]
struct HostState {
    /// The last good addresses; `None` until the name first resolves. A new `Arc` only when
    /// the set changes, so holders can tell a change by pointer.
    addresses: Option<Arc<[IpAddr]>>,
    /// Why the last lookup failed; `None` after a success.
    last_error: Option<DnsError>,
    /// Set once the first lookup has finished, either way.
    looked_up: bool,
}

/// A cheap handle on one name's addresses, kept current by its refresh task.
#[derive(Debug, Clone)]
pub struct ResolvedHost {
    name: Arc<str>,
    state: watch::Receiver<HostState>,
}

impl ResolvedHost {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The last good addresses (never empty), or why there are none.
    pub fn addresses(&self) -> Result<Arc<[IpAddr]>, DnsError> {
        let state = self.state.borrow();
        match (&state.addresses, &state.last_error) {
            (Some(addresses), _) => Ok(Arc::clone(addresses)),
            (None, Some(error)) => Err(error.clone()),
            (None, None) => Err(DnsError::Pending),
        }
    }

    /// Whether the name has addresses to connect to.
    pub fn is_resolved(&self) -> bool {
        self.state.borrow().addresses.is_some()
    }
}

/// The result label of `verge_dns_resolutions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LookupResult {
    Ok,
    Error,
}

impl LookupResult {
    fn as_str(self) -> &'static str {
        match self {
            LookupResult::Ok => "ok",
            LookupResult::Error => "error",
        }
    }
}

/// `verge_dns_*`, registered once per pool.
#[derive(Clone)]
pub struct DnsMetrics {
    resolutions: IntCounterVec,
    addresses: IntGaugeVec,
    ttl: GaugeVec,
}

impl DnsMetrics {
    /// Registers `verge_dns_resolutions_total{host,result}`, `verge_dns_addresses{host}` and
    /// `verge_dns_ttl_seconds{host}`.
    pub fn register(registry: &Registry) -> Result<DnsMetrics, prometheus::Error> {
        let resolutions = IntCounterVec::new(
            Opts::new(
                "verge_dns_resolutions_total",
                "DNS lookups of origin host names, by result",
            ),
            &["host", "result"],
        )?;
        let addresses = IntGaugeVec::new(
            Opts::new(
                "verge_dns_addresses",
                "Addresses in use for an origin host name (the last good answer)",
            ),
            &["host"],
        )?;
        let ttl = GaugeVec::new(
            Opts::new(
                "verge_dns_ttl_seconds",
                "TTL in use for an origin host name's last good answer, after clamping",
            ),
            &["host"],
        )?;
        verge_node::register_metrics!(registry; resolutions, addresses, ttl);
        Ok(DnsMetrics {
            resolutions,
            addresses,
            ttl,
        })
    }

    fn for_host(&self, host: &str) -> HostMetrics {
        HostMetrics {
            ok: self
                .resolutions
                .with_label_values(&[host, LookupResult::Ok.as_str()]),
            error: self
                .resolutions
                .with_label_values(&[host, LookupResult::Error.as_str()]),
            addresses: self.addresses.with_label_values(&[host]),
            ttl: self.ttl.with_label_values(&[host]),
        }
    }
}

/// One name's metrics, resolved once.
struct HostMetrics {
    ok: IntCounter,
    error: IntCounter,
    addresses: IntGauge,
    ttl: Gauge,
}

/// The names of a pool's servers, each kept resolved by its own task.
pub struct HostResolver {
    hosts: HashMap<Arc<str>, ResolvedHost>,
    /// Bounds the wait for the first lookups.
    timeout: Duration,
    /// Dropping a `JoinSet` aborts its tasks.
    _tasks: JoinSet<()>,
}

impl HostResolver {
    /// Starts one refresh task per distinct name, each looking its name up at once. Must be
    /// called within a tokio runtime.
    pub fn start(
        names: &[String],
        lookup: Arc<dyn NameLookup>,
        settings: &ResolverConfig,
        metrics: &DnsMetrics,
    ) -> Result<HostResolver, ResolverSetupError> {
        let runtime = Handle::try_current().map_err(|_| ResolverSetupError::NoRuntime)?;
        let mut hosts = HashMap::new();
        let mut tasks = JoinSet::new();
        for name in names {
            let name: Arc<str> = Arc::from(name.as_str());
            if hosts.contains_key(&name) {
                continue;
            }
            let (sender, receiver) = watch::channel(HostState {
                addresses: None,
                last_error: None,
                looked_up: false,
            });
            let task = Refresh {
                name: Arc::clone(&name),
                lookup: Arc::clone(&lookup),
                settings: settings.clone(),
                state: sender,
                metrics: metrics.for_host(&name),
            };
            tasks.spawn_on(task.run(), &runtime);
            hosts.insert(
                Arc::clone(&name),
                ResolvedHost {
                    name,
                    state: receiver,
                },
            );
        }
        Ok(HostResolver {
            hosts,
            timeout: settings.timeout,
            _tasks: tasks,
        })
    }

    /// The handle on `name`, if it is one of the names this resolver was started with.
    pub fn host(&self, name: &str) -> Option<ResolvedHost> {
        self.hosts.get(name).cloned()
    }

    /// Waits until every name's first lookup has finished, successfully or not; each is bounded
    /// by the lookup timeout, and so is this wait (with some slack).
    pub async fn first_lookups(&self) {
        let all = async {
            for host in self.hosts.values() {
                let mut state = host.state.clone();
                // An error means the task is gone: nothing left to wait for.
                let _ = state.wait_for(|s| s.looked_up).await;
            }
        };
        let bound = self.timeout.saturating_mul(2) + Duration::from_secs(1);
        let _ = tokio::time::timeout(bound, all).await;
    }
}

/// One name's refresh task.
struct Refresh {
    name: Arc<str>,
    lookup: Arc<dyn NameLookup>,
    settings: ResolverConfig,
    state: watch::Sender<HostState>,
    metrics: HostMetrics,
}

impl Refresh {
    async fn run(self) {
        // Whether the previous lookup failed, so a run of failures is logged once.
        let mut failing = false;
        loop {
            let deadline = self.settings.timeout;
            let result = match tokio::time::timeout(deadline, self.lookup.lookup(&self.name)).await
            {
                Ok(result) => result,
                Err(_) => Err(DnsError::Timeout(deadline)),
            };
            let result = result.and_then(|answer| {
                let addresses = kept_addresses(answer.addresses);
                if addresses.is_empty() {
                    return Err(DnsError::NoAddresses);
                }
                Ok((addresses, answer.ttl))
            });
            let wait = match result {
                Ok((addresses, ttl)) => {
                    let ttl = ttl_in_use(ttl, &self.settings);
                    self.succeeded(addresses, ttl, failing);
                    failing = false;
                    ttl
                }
                Err(error) => {
                    self.failed(error, failing);
                    failing = true;
                    self.settings.negative_retry
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    fn succeeded(&self, addresses: Vec<IpAddr>, ttl: Duration, was_failing: bool) {
        self.metrics.ok.inc();
        self.metrics
            .addresses
            .set(i64::try_from(addresses.len()).unwrap_or(i64::MAX));
        self.metrics.ttl.set(ttl.as_secs_f64());
        let mut changed = false;
        self.state.send_modify(|state| {
            if state.addresses.as_deref() != Some(addresses.as_slice()) {
                state.addresses = Some(Arc::from(addresses.as_slice()));
                changed = true;
            }
            state.last_error = None;
            state.looked_up = true;
        });
        if changed || was_failing {
            tracing::info!(host = %self.name, ?addresses, ttl_ms = ttl.as_millis(), "origin host resolved");
        } else {
            tracing::debug!(host = %self.name, ttl_ms = ttl.as_millis(), "origin host unchanged");
        }
    }

    fn failed(&self, error: DnsError, was_failing: bool) {
        self.metrics.error.inc();
        let mut had_addresses = false;
        self.state.send_modify(|state| {
            had_addresses = state.addresses.is_some();
            state.last_error = Some(error.clone());
            state.looked_up = true;
        });
        let retry_ms = self.settings.negative_retry.as_millis();
        match (was_failing, had_addresses) {
            (true, _) => {
                tracing::debug!(host = %self.name, %error, retry_ms, "origin host still not resolving");
            }
            (false, true) => tracing::warn!(
                host = %self.name,
                %error,
                retry_ms,
                "cannot resolve origin host; keeping its last good addresses"
            ),
            (false, false) => tracing::warn!(
                host = %self.name,
                %error,
                retry_ms,
                "cannot resolve origin host; its servers are not usable until it resolves"
            ),
        }
    }
}

/// The host name of a URL's authority, or `None` for an IP literal (which needs no DNS).
pub fn host_name(authority: &http::uri::Authority) -> Option<&str> {
    let host = authority.host();
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    if literal.parse::<IpAddr>().is_ok() {
        None
    } else {
        Some(host)
    }
}

#[cfg(test)]
mod tests;
