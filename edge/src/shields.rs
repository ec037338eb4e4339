//! The edge's upstream when origin shields are configured: each miss goes to the shield that
//! owns its cache key on the [`ShieldRing`], then to the next distinct shields in ring order when
//! one fails, and finally (if allowed) to the origin directly.
//!
//! Health is passive: a shield that fails `failures_to_eject` times in a row (connect error,
//! timeout, or a 500/502/503/504 answer) is taken out of the ring for `eject_for`; after that one
//! request probes it, and success puts it back. Its keys move to the next shields meanwhile, and
//! only its keys move.
//!
//! The member list can change while the edge runs ([`ShieldUpstream::set_members`], fed by the
//! control plane's routing tables): the new ring is built aside and swapped in atomically.
//! A request keeps the ring it started with; shields present before and after keep their
//! connections and health.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode};
use http_body_util::{Either, Empty};
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use verge_cache::CacheKey;
use verge_config::wire::{RoutingTable, UpstreamHealth};
use verge_config::{OriginUrl, ShieldSpec, ShieldsConfig, UpstreamConfig};

use crate::ring::{RingMember, ShieldRing};
use verge_node::error::RequestError;
use verge_node::tls::client;
use verge_node::upstream::{OriginUpstream, Upstream, UpstreamBody, UpstreamResponseBody};

/// One shield: its client and what the edge has seen of its health.
struct Shield {
    id: String,
    url: String,
    client: OriginUpstream,
    health: Mutex<Health>,
    /// Requests sent to this shield and not yet answered (bounded-load mode).
    in_flight: AtomicUsize,
}

/// Counts a request in flight to a shield for as long as it lives.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
struct Health {
    consecutive_failures: u32,
    /// Out of the ring until then; past it, the next request probes the shield.
    ejected_until: Option<Instant>,
    /// When the current ejection began: a success from a request sent before it says nothing
    /// about the shield now.
    ejected_at: Option<Instant>,
}

/// Per-shield metrics, labelled by shield id.
#[derive(Clone)]
pub struct ShieldMetrics {
    requests: IntCounterVec,
    up: IntGaugeVec,
    duration: HistogramVec,
    ejections: IntCounterVec,
    members: IntGauge,
    spills: IntCounter,
}

impl ShieldMetrics {
    pub fn register(registry: &Registry) -> Result<ShieldMetrics, prometheus::Error> {
        let m = ShieldMetrics {
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "verge_shield_duration_seconds",
                    "Time from sending a request to a shield to its response head",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0,
                ]),
                &["shield"],
            )?,
            ejections: IntCounterVec::new(
                Opts::new(
                    "verge_shield_ejections_total",
                    "Times each shield was taken out of the ring",
                ),
                &["shield"],
            )?,
            members: IntGauge::new(
                "verge_shield_ring_members",
                "Shields configured in the ring",
            )?,
            spills: IntCounter::new(
                "verge_shield_spills_total",
                "Requests passed on from an overloaded shield to the next (bounded-load mode)",
            )?,
            requests: IntCounterVec::new(
                Opts::new(
                    "verge_shield_requests_total",
                    "Requests sent to each origin shield, by result",
                ),
                &["shield", "result"],
            )?,
            up: IntGaugeVec::new(
                Opts::new(
                    "verge_shield_up",
                    "Whether a shield is in the ring (1) or ejected (0)",
                ),
                &["shield"],
            )?,
        };
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.up.clone()))?;
        registry.register(Box::new(m.duration.clone()))?;
        registry.register(Box::new(m.ejections.clone()))?;
        registry.register(Box::new(m.members.clone()))?;
        registry.register(Box::new(m.spills.clone()))?;
        Ok(m)
    }
}

/// One version of the member list: the ring and the shields it indexes.
struct ShieldSet {
    /// `None` when the list is empty: every miss goes to the fallback (or is refused).
    ring: Option<ShieldRing>,
    shields: Vec<Arc<Shield>>,
}

/// Misses routed over origin shields by consistent hashing, with failover.
pub struct ShieldUpstream {
    set: ArcSwap<ShieldSet>,
    /// Serialises membership changes, so two updates cannot interleave their reuse of shields.
    change: Mutex<()>,
    /// Timeouts, connection bound and TLS settings (`shields.tls`) for each shield's client.
    upstream: Box<UpstreamConfig>,
    /// The shields' TLS configuration, built once: at start, or for the first `https://`
    /// member; `None` inside when it could not be built (logged).
    tls: OnceLock<Option<Arc<client::ClientConfig>>>,
    in_use: prometheus::IntGauge,
    /// The origin, when misses may go there directly once no shield can answer.
    fallback: Option<OriginUpstream>,
    failures_to_eject: u32,
    eject_for: Duration,
    bounded_load_percent: Option<u32>,
    metrics: ShieldMetrics,
    name: String,
}

impl ShieldUpstream {
    /// One client per shield, each with the upstream timeouts and connection bound of `upstream`
    /// and the TLS settings of `shields.tls`; `origin` is the fallback client. An empty member
    /// list is allowed (misses go to the fallback) so that a control plane can fill it in later.
    ///
    /// The shields' TLS configuration is built here when a member is `https://` or `shields.tls`
    /// sets anything (an unusable one stops the start), else on the first `https://` member a
    /// routing table brings.
    pub fn new(
        shields: &ShieldsConfig,
        upstream: &UpstreamConfig,
        origin: OriginUpstream,
        metrics: ShieldMetrics,
        in_use: &prometheus::IntGauge,
    ) -> Result<ShieldUpstream, verge_node::StartError> {
        let tls = OnceLock::new();
        let members = shields.members.iter().map(|m| &m.url);
        if let Some(config) = client::upstream_client_config(&shields.tls, members, "shields.tls")
            .map_err(verge_node::StartError::Tls)?
        {
            let _ = tls.set(Some(config));
        }
        let this = ShieldUpstream {
            set: ArcSwap::from_pointee(ShieldSet {
                ring: None,
                shields: Vec::new(),
            }),
            change: Mutex::new(()),
            upstream: Box::new(UpstreamConfig {
                tls: shields.tls.clone(),
                ..upstream.clone()
            }),
            tls,
            in_use: in_use.clone(),
            fallback: shields.origin_fallback.then_some(origin),
            failures_to_eject: shields.failures_to_eject,
            eject_for: shields.eject_for,
            bounded_load_percent: shields.bounded_load_percent,
            metrics,
            name: "shields".to_string(),
        };
        this.set_members(&shields.members).map_err(|e| {
            verge_node::StartError::Role(format!("cannot build the shield ring: {e}"))
        })?;
        Ok(this)
    }

    /// A client for one shield; an `https://` one shares the shields' TLS configuration.
    fn shield_client(&self, url: &OriginUrl) -> OriginUpstream {
        let config = UpstreamConfig {
            origin: url.clone(),
            ..(*self.upstream).clone()
        };
        let tls = if url.scheme == http::uri::Scheme::HTTPS {
            self.tls
                .get_or_init(|| match client::client_config(&self.upstream.tls) {
                    Ok(config) => Some(config),
                    Err(error) => {
                        tracing::error!(
                            "shields.tls.{}: {error}; https shields cannot be reached",
                            error.key()
                        );
                        None
                    }
                })
                .clone()
        } else {
            self.tls.get().cloned().flatten()
        };
        OriginUpstream::with_tls(&config, tls, self.in_use.clone())
    }

    /// Replaces the member list: builds the new ring aside, then swaps it in atomically.
    /// Requests in flight finish on the ring they started with. A shield kept with the same
    /// URL keeps its connections and health; one that leaves is dropped when its last request
    /// ends. On error nothing changes.
    pub fn set_members(&self, members: &[ShieldSpec]) -> Result<(), crate::ring::RingError> {
        let _serial = self
            .change
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let ring = if members.is_empty() {
            None
        } else {
            let ring_members: Vec<RingMember<'_>> = members
                .iter()
                .map(|s| RingMember {
                    id: s.id.as_str(),
                    weight: s.weight,
                })
                .collect();
            Some(ShieldRing::new(&ring_members)?)
        };
        let old = self.set.load_full();
        let shields: Vec<Arc<Shield>> = members
            .iter()
            .map(|spec| {
                let url = spec.url.to_string();
                if let Some(kept) = old
                    .shields
                    .iter()
                    .find(|s| s.id == spec.id.as_str() && s.url == url)
                {
                    return Arc::clone(kept);
                }
                self.metrics
                    .up
                    .with_label_values(&[spec.id.as_str()])
                    .set(1);
                Arc::new(Shield {
                    id: spec.id.as_str().to_string(),
                    url,
                    client: self.shield_client(&spec.url),
                    health: Mutex::new(Health::default()),
                    in_flight: AtomicUsize::new(0),
                })
            })
            .collect();
        for gone in old
            .shields
            .iter()
            .filter(|s| !members.iter().any(|m| m.id.as_str() == s.id))
        {
            let _ = self.metrics.up.remove_label_values(&[&gone.id]);
        }
        self.metrics
            .members
            .set(i64::try_from(shields.len()).unwrap_or(i64::MAX));
        self.set.store(Arc::new(ShieldSet { ring, shields }));
        Ok(())
    }

    /// The ids of the shields in the ring now, in configuration order (or table order).
    pub fn member_ids(&self) -> Vec<String> {
        self.set
            .load()
            .shields
            .iter()
            .map(|s| s.id.clone())
            .collect()
    }

    /// Whether a request may go to this shield now. An ejected shield whose time is up admits
    /// exactly one request (the probe) and stays out for the others until that one ends.
    fn admit(&self, shield: &Shield, now: Instant) -> bool {
        let mut health = shield.health();
        match health.ejected_until {
            None => true,
            Some(until) if now >= until => {
                health.ejected_until = Some(now + self.eject_for);
                true
            }
            Some(_) => false,
        }
    }

    /// Bounded-load mode: whether this shield already carries more than its share of the
    /// requests in flight, (1 + ε) × the mean counting the new one. Off: never.
    fn overloaded(&self, set: &ShieldSet, shield: &Shield) -> bool {
        let Some(percent) = self.bounded_load_percent else {
            return false;
        };
        let total: usize = set
            .shields
            .iter()
            .map(|s| s.in_flight.load(Ordering::Relaxed))
            .sum();
        let mine = shield.in_flight.load(Ordering::Relaxed);
        // Capacity per shield: ceil((1 + p/100) × (total + 1) / n), counting the new request.
        let n = set.shields.len();
        let capacity = ((100 + percent as usize) * (total + 1)).div_ceil(100 * n);
        mine + 1 > capacity
    }

    /// A probe that never reached the shield does not count: the next request may probe.
    fn release_probe(&self, shield: &Shield) {
        let mut health = shield.health();
        if health.consecutive_failures >= self.failures_to_eject {
            health.ejected_until = Some(Instant::now());
        }
    }

    /// A request sent at `sent` succeeded. It puts an ejected shield back only if it was sent
    /// after the ejection (the probe, typically), not if it was already in flight.
    fn succeeded(&self, shield: &Shield, sent: Instant) {
        let mut health = shield.health();
        let stale = health.ejected_at.is_some_and(|at| sent < at);
        if !stale {
            if health.ejected_until.is_some() {
                tracing::info!(shield = %shield.id, "shield back in the ring");
            }
            *health = Health::default();
        }
        drop(health);
        if !stale {
            self.metrics.up.with_label_values(&[&shield.id]).set(1);
        }
        self.metrics
            .requests
            .with_label_values(&[&shield.id, "ok"])
            .inc();
    }

    fn failed(&self, shield: &Shield, result: &'static str) {
        let id = &shield.id;
        self.metrics.requests.with_label_values(&[id, result]).inc();
        let mut health = shield.health();
        health.consecutive_failures = health.consecutive_failures.saturating_add(1);
        if health.consecutive_failures >= self.failures_to_eject {
            if health.ejected_until.is_none() {
                tracing::warn!(shield = %id, failures = health.consecutive_failures, "shield ejected");
                self.metrics.ejections.with_label_values(&[id]).inc();
                health.ejected_at = Some(Instant::now());
            }
            health.ejected_until = Some(Instant::now() + self.eject_for);
            drop(health);
            self.metrics.up.with_label_values(&[id]).set(0);
        }
    }
}

impl Shield {
    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The members a routing table gives an edge: its healthy shields, each reached at its data
/// URL. One unusable entry refuses the whole table, so a half-read table never replaces a
/// good one.
pub fn shield_specs(table: &RoutingTable) -> Result<Vec<ShieldSpec>, String> {
    table
        .healthy_shields()
        .map(|entry| {
            let url = OriginUrl::parse(&entry.data_url)
                .map_err(|e| format!("shield {}: data_url: {e}", entry.id))?;
            Ok(ShieldSpec {
                id: entry.id.clone(),
                url,
                weight: entry.weight,
            })
        })
        .collect()
}

/// Statuses that count as a shield failing (and are worth asking another shield).
fn is_failure(status: StatusCode) -> bool {
    matches!(status.as_u16(), 500 | 502 | 503 | 504)
}

impl Upstream for ShieldUpstream {
    async fn send(
        &self,
        request: Request<UpstreamBody>,
    ) -> Result<Response<UpstreamResponseBody>, RequestError> {
        let (parts, body) = request.into_parts();
        let key = CacheKey::for_request("http", &parts.uri, &parts.headers)
            .map(|k| k.as_str().as_bytes().to_vec())
            .unwrap_or_else(|_| parts.uri.to_string().into_bytes());
        // Only requests without a body can be sent again to another shield or the origin.
        let replayable = matches!(body, Either::Left(_))
            && (parts.method == Method::GET || parts.method == Method::HEAD);
        let mut body = Some(body);
        let mut last_error = None;
        let mut last_failed_response = None;
        let now = Instant::now();
        let mut spilled = 0;
        // This request's ring, kept to the end even if the member list changes meanwhile.
        let set = self.set.load_full();
        let candidates = set.ring.iter().flat_map(|ring| ring.candidates(&key));
        for index in candidates {
            let shield = &*set.shields[index];
            // Spill past overloaded shields, but never past all of them.
            if spilled + 1 < set.shields.len() && self.overloaded(&set, shield) {
                spilled += 1;
                self.metrics.spills.inc();
                continue;
            }
            if !self.admit(shield, now) {
                continue;
            }
            let body = match body.take() {
                Some(body) => body,
                None if replayable => Either::Left(Empty::new()),
                None => break,
            };
            let started = Instant::now();
            shield.in_flight.fetch_add(1, Ordering::Relaxed);
            let counted = InFlight(&shield.in_flight);
            let result = shield
                .client
                .send(Request::from_parts(parts.clone(), body))
                .await;
            self.metrics
                .duration
                .with_label_values(&[&shield.id])
                .observe(started.elapsed().as_secs_f64());
            drop(counted);
            match result {
                Ok(response) if is_failure(response.status()) => {
                    tracing::debug!(shield = %shield.id, status = %response.status(), "shield answered with a failure");
                    self.failed(shield, "error_status");
                    last_failed_response = Some(response);
                    if !replayable {
                        break;
                    }
                }
                Ok(response) => {
                    self.succeeded(shield, started);
                    return Ok(response);
                }
                // Our own connection bound, not the shield's fault: try another, eject nobody.
                Err(error @ RequestError::UpstreamSaturated { .. }) => {
                    self.metrics
                        .requests
                        .with_label_values(&[&shield.id, "saturated"])
                        .inc();
                    self.release_probe(shield);
                    last_error = Some(error);
                }
                Err(error) => {
                    let result = match &error {
                        RequestError::UpstreamTimeout { .. } => "timeout",
                        RequestError::UpstreamConnect { .. } => "connect_error",
                        _ => "error",
                    };
                    self.failed(shield, result);
                    if !error.is_retryable() || !replayable {
                        return Err(error);
                    }
                    last_error = Some(error);
                }
            }
        }
        let body = match body.take() {
            Some(body) => Some(body),
            None if replayable => Some(Either::Left(Empty::new())),
            None => None,
        };
        match (&self.fallback, body) {
            (Some(origin), Some(body)) => origin.send(Request::from_parts(parts, body)).await,
            _ => match last_failed_response {
                Some(response) => Ok(response),
                None => {
                    if let Some(error) = last_error {
                        tracing::warn!(%error, "no shield could answer; origin fallback is off");
                    }
                    Err(RequestError::NoShield)
                }
            },
        }
    }

    fn body_idle_timeout(&self) -> Duration {
        self.upstream.response_timeout
    }

    fn name(&self) -> &str {
        &self.name
    }

    /// The table's healthy shields become the member list; on error the ring stays as it was.
    fn apply_routing(&self, table: &RoutingTable) -> Result<(), String> {
        let members = shield_specs(table)?;
        self.set_members(&members).map_err(|e| e.to_string())
    }

    /// Each shield of the ring, up unless ejected.
    fn health(&self) -> Vec<UpstreamHealth> {
        self.set
            .load()
            .shields
            .iter()
            .map(|shield| UpstreamHealth {
                id: shield.id.clone(),
                up: shield.health().ejected_until.is_none(),
            })
            .collect()
    }
}

/// The edge's upstream: the origin directly, or origin shields.
pub enum EdgeUpstream {
    Origin(OriginUpstream),
    Shields(ShieldUpstream),
}

impl Upstream for EdgeUpstream {
    async fn send(
        &self,
        request: Request<UpstreamBody>,
    ) -> Result<Response<UpstreamResponseBody>, RequestError> {
        match self {
            EdgeUpstream::Origin(origin) => origin.send(request).await,
            EdgeUpstream::Shields(shields) => shields.send(request).await,
        }
    }

    fn body_idle_timeout(&self) -> Duration {
        match self {
            EdgeUpstream::Origin(origin) => origin.body_idle_timeout(),
            EdgeUpstream::Shields(shields) => shields.body_idle_timeout(),
        }
    }

    fn name(&self) -> &str {
        match self {
            EdgeUpstream::Origin(origin) => origin.name(),
            EdgeUpstream::Shields(shields) => shields.name(),
        }
    }

    fn apply_routing(&self, table: &RoutingTable) -> Result<(), String> {
        match self {
            EdgeUpstream::Origin(origin) => origin.apply_routing(table),
            EdgeUpstream::Shields(shields) => shields.apply_routing(table),
        }
    }

    fn health(&self) -> Vec<UpstreamHealth> {
        match self {
            EdgeUpstream::Origin(origin) => origin.health(),
            EdgeUpstream::Shields(shields) => shields.health(),
        }
    }
}

#[cfg(test)]
mod tests;
