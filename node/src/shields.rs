//! The edge's upstream when origin shields are configured: each miss goes to the shield that
//! owns its cache key on the [`ShieldRing`], then to the next distinct shields in ring order when
//! one fails, and finally (if allowed) to the origin directly.
//!
//! A shield has failed only when it gave no answer of its own: a connect error, a timeout, a
//! broken exchange, or an error it generated because its own upstream did not answer (its
//! `Cache-Status` entry says so, [`TierEntry`]). Then the next shield is asked. Whatever the
//! shield relays from the origin, a 503 included, is the answer: no other shield and not the
//! origin is asked again, and the shield's health is not marked down.
//!
//! Health is passive: a shield that fails `failures_to_eject` times in a row is taken out of the
//! ring for `eject_for`; after that one request probes it, and success puts it back. Its keys
//! move to the next shields meanwhile, and only its keys move.
//!
//! The member list can change while the edge runs ([`ShieldUpstream::set_members`], fed by the
//! control plane's routing tables): the new ring is built aside and swapped in atomically.
//! A request keeps the ring it started with; shields present before and after keep their
//! connections and health.
//!
//! A table's tier plan names the shields of the edge's region: those make the ring. The other
//! healthy shields are kept beside it, out of the ring, so that the edge measures its round
//! trip to every shield ([`crate::rtt`]) and control can plan from all of them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;
use std::time::Duration;

use tokio::time::Instant;

use http::{Request, Response};
use http_body_util::{Either, Empty};
use verge_config::wire::{NodeEntry, RoutingTable, UpstreamHealth};
use verge_config::RegionId;
use verge_config::{OriginUrl, ShieldSpec, ShieldsConfig, UpstreamConfig};

pub use metrics::ShieldMetrics;

use crate::access_log::AnsweredBy;
use crate::error::RequestError;
use crate::failover::{
    self, Attempt, Candidates, EjectionPolicy, Failover, Hop, PassiveHealth, RetryBudget, Target,
    MIN_RETRIES_PER_SECOND,
};
use crate::headers::TierEntry;
use crate::ring::{RingMember, ShieldRing};
use crate::rtt::{self, RttWindow};
use crate::tls::client;
use crate::upstream::{OriginUpstream, Upstream, UpstreamBody, UpstreamResponseBody};

/// One shield: its client and what the edge has seen of its health.
struct Shield {
    id: String,
    url: String,
    client: OriginUpstream,
    health: Mutex<PassiveHealth>,
    /// Requests sent to this shield and not yet answered (bounded-load mode).
    in_flight: AtomicUsize,
    /// Round trips seen: probes, and the time to response head of real requests.
    rtt: RttWindow,
    /// Turns true when a routing table says the shield is down (control hears neither its
    /// heartbeats nor its health checks): a replayable request still waiting for its answer
    /// goes to the next owner instead.
    withdrawn: tokio::sync::watch::Sender<bool>,
}

/// Counts a request in flight to a shield for as long as it lives.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One version of the member list: the ring and the shields it indexes.
struct ShieldSet {
    /// `None` when the list is empty: every miss goes to the fallback (or is refused).
    ring: Option<ShieldRing>,
    /// The ring's members first (`..in_ring`, in the ring's order), then the shields only
    /// measured.
    shields: Vec<Arc<Shield>>,
    in_ring: usize,
}

impl ShieldSet {
    fn ring_members(&self) -> &[Arc<Shield>] {
        &self.shields[..self.in_ring]
    }
}

/// Misses routed over origin shields by consistent hashing, with failover.
pub struct ShieldUpstream<F = OriginUpstream> {
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
    fallback: Option<F>,
    ejection: EjectionPolicy,
    /// Failovers after a shield failed stay under a share of requests.
    budget: Box<RetryBudget>,
    bounded_load_percent: Option<u32>,
    /// Boxed: kept inline it made an edge's upstream enum lopsided.
    metrics: Box<ShieldMetrics>,
    name: &'static str,
    /// The edge's region: its tier plan's set is read from routing tables. An edge placed in
    /// a region also measures and reports its origin fallback, so that control knows the
    /// region's round trip straight to the origin.
    region: Option<Box<RegionId>>,
    /// Where its TLS settings come from, to name them in errors: `parents.tls` for a
    /// shield's upper tier, else `shields.tls`.
    parents: bool,
}

impl<F: Upstream> ShieldUpstream<F> {
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
        origin: F,
        metrics: ShieldMetrics,
        in_use: &prometheus::IntGauge,
    ) -> Result<ShieldUpstream<F>, crate::StartError> {
        let tls = OnceLock::new();
        let members = shields.members.iter().map(|m| &m.url);
        if let Some(config) =
            client::upstream_client_config(&shields.upper.tls, members, "shields.tls")
                .map_err(crate::StartError::Tls)?
        {
            let _ = tls.set(Some(config));
        }
        let this = ShieldUpstream {
            set: ArcSwap::from_pointee(ShieldSet {
                ring: None,
                shields: Vec::new(),
                in_ring: 0,
            }),
            change: Mutex::new(()),
            upstream: Box::new(UpstreamConfig {
                tls: shields.upper.tls.clone(),
                ..upstream.clone()
            }),
            tls,
            in_use: in_use.clone(),
            fallback: shields.origin_fallback.then_some(origin),
            // A shield stays out for `eject_for` each time: no back-off.
            ejection: EjectionPolicy {
                failures: shields.upper.failures_to_eject,
                base: shields.upper.eject_for,
                max: shields.upper.eject_for,
            },
            budget: Box::new(RetryBudget::new(
                shields.upper.retry_budget_percent,
                MIN_RETRIES_PER_SECOND,
                Instant::now(),
            )),
            bounded_load_percent: shields.upper.bounded_load_percent,
            metrics: Box::new(metrics),
            name: "shields",
            region: None,
            parents: false,
        };
        this.set_members(&shields.members)
            .map_err(|e| crate::StartError::Role(format!("cannot build the shield ring: {e}")))?;
        Ok(this)
    }

    /// A shield's upper tier: its TLS settings are named `parents.tls` where found wanting.
    pub fn as_parents(mut self) -> ShieldUpstream<F> {
        self.parents = true;
        self
    }

    /// Places the edge in `region`: its ring becomes the members `shields.topology` picks
    /// for the region (all of them without one), the others are only measured; routing tables
    /// from control are read for the region from then on.
    pub fn in_region(
        mut self,
        region: RegionId,
        shields: &ShieldsConfig,
    ) -> Result<ShieldUpstream<F>, crate::ring::RingError> {
        if shields.tiers.is_some() {
            let (ring, measured) = shields.ring_for(&region);
            self.set_shields(&ring, &measured)?;
        }
        self.region = Some(Box::new(region));
        Ok(self)
    }

    /// The origin fallback, when this is an edge's upstream placed in a region.
    fn measured_fallback(&self) -> Option<&F> {
        self.region.as_ref().and(self.fallback.as_ref())
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
                        let table = if self.parents { "parents" } else { "shields" };
                        tracing::error!(
                            "{table}.tls.{}: {error}; https shields cannot be reached",
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
            .counting_resends(self.metrics.resends.clone())
    }

    /// Replaces the member list: builds the new ring aside, then swaps it in atomically.
    /// Requests in flight finish on the ring they started with. A shield kept with the same
    /// URL keeps its connections and health; one that leaves is dropped when its last request
    /// ends. On error nothing changes.
    pub fn set_members(&self, members: &[ShieldSpec]) -> Result<(), crate::ring::RingError> {
        self.set_shields(members, &[])
    }

    /// [`ShieldUpstream::set_members`] from a routing table: `members` (the table's shields for
    /// this node) become the ring, and requests waiting on a shield the table says is down go
    /// to the next owner.
    pub fn follow_table(
        &self,
        members: &[ShieldSpec],
        table: &RoutingTable,
    ) -> Result<(), crate::ring::RingError> {
        let before = self.set.load_full();
        self.set_members(members)?;
        self.withdraw_down(&before, table);
        Ok(())
    }

    /// Tells the requests waiting on a shield of `set` that `table` says is down to go to the
    /// next owner (replayable ones; see [`Shield::withdrawn`]). A shield a table or a reload
    /// merely leaves out is still working: what it has been asked, it answers.
    fn withdraw_down(&self, set: &ShieldSet, table: &RoutingTable) {
        for shield in set.shields.iter().filter(|s| {
            table
                .shields
                .iter()
                .any(|t| !t.healthy && t.id.as_str() == s.id)
        }) {
            if !shield.withdrawn.send_replace(true) {
                tracing::info!(shield = %shield.id, "shield down in control's table: requests waiting on it go to the next owner");
            }
        }
    }

    /// [`ShieldUpstream::set_members`] with `measured`: shields kept out of the ring, only
    /// probed.
    fn set_shields(
        &self,
        members: &[ShieldSpec],
        measured: &[ShieldSpec],
    ) -> Result<(), crate::ring::RingError> {
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
        let all = || members.iter().chain(measured);
        let shields: Vec<Arc<Shield>> = all()
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
                    health: Mutex::new(PassiveHealth::default()),
                    in_flight: AtomicUsize::new(0),
                    rtt: RttWindow::default(),
                    withdrawn: tokio::sync::watch::Sender::new(false),
                })
            })
            .collect();
        for gone in old
            .shields
            .iter()
            .filter(|s| !all().any(|m| m.id.as_str() == s.id))
        {
            let _ = self.metrics.up.remove_label_values(&[&gone.id]);
        }
        self.metrics
            .members
            .set(i64::try_from(members.len()).unwrap_or(i64::MAX));
        self.set.store(Arc::new(ShieldSet {
            ring,
            shields,
            in_ring: members.len(),
        }));
        Ok(())
    }

    /// Whether the ring has any shield now (without one, misses go to the fallback).
    pub fn has_members(&self) -> bool {
        self.set.load().in_ring > 0
    }

    /// The ids of the shields in the ring now, in configuration order (or table order).
    pub fn member_ids(&self) -> Vec<String> {
        self.set
            .load()
            .ring_members()
            .iter()
            .map(|s| s.id.clone())
            .collect()
    }

    /// Bounded-load mode: whether this shield already carries more than its share of the
    /// requests in flight, (1 + ε) × the mean counting the new one. Off: never.
    fn overloaded(&self, set: &ShieldSet, shield: &Shield) -> bool {
        let Some(percent) = self.bounded_load_percent else {
            return false;
        };
        let total: usize = set
            .ring_members()
            .iter()
            .map(|s| s.in_flight.load(Ordering::Relaxed))
            .sum();
        let mine = shield.in_flight.load(Ordering::Relaxed);
        // Capacity per shield: ceil((1 + p/100) × (total + 1) / n), counting the new request.
        let n = set.in_ring;
        let capacity = ((100 + percent as usize) * (total + 1)).div_ceil(100 * n);
        mine + 1 > capacity
    }

    fn succeeded(&self, shield: &Shield, sent: Instant) {
        if shield.health().succeeded(sent) {
            tracing::info!(shield = %shield.id, "shield back in the ring");
        }
        if shield.health().is_up() {
            self.metrics.up.with_label_values(&[&shield.id]).set(1);
        }
    }

    fn failed(&self, shield: &Shield) {
        let mut health = shield.health();
        let was_up = health.is_up();
        let ejected = health.failed(Instant::now(), &self.ejection);
        drop(health);
        if ejected.is_some() {
            if was_up {
                tracing::warn!(shield = %shield.id, "shield ejected");
                self.metrics
                    .ejections
                    .with_label_values(&[&shield.id])
                    .inc();
            }
            self.metrics.up.with_label_values(&[&shield.id]).set(0);
        }
    }
}

impl Shield {
    fn health(&self) -> std::sync::MutexGuard<'_, PassiveHealth> {
        self.health
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The members a routing table gives an edge in `region`: the healthy shields of its tier
/// plan (every healthy shield without a plan or a region), each reached at its data URL, and
/// the other healthy shields, to measure. One unusable entry refuses the whole table, so a
/// half-read table never replaces a good one.
pub fn shield_specs(
    table: &RoutingTable,
    region: Option<&RegionId>,
) -> Result<(Vec<ShieldSpec>, Vec<ShieldSpec>), String> {
    let ring: Vec<ShieldSpec> = match region {
        Some(region) => specs(table.shields_for(region))?,
        None => specs(table.healthy_shields())?,
    };
    let rest = table
        .healthy_shields()
        .filter(|s| !ring.iter().any(|r| r.id == s.id));
    Ok((ring.clone(), specs(rest)?))
}

fn specs<'a>(entries: impl Iterator<Item = &'a NodeEntry>) -> Result<Vec<ShieldSpec>, String> {
    entries
        .map(|entry| {
            let url = OriginUrl::parse(&entry.data_url)
                .map_err(|e| format!("shield {}: data_url: {e}", entry.id))?;
            Ok(ShieldSpec {
                id: entry.id.clone(),
                url,
                weight: entry.weight,
                region: Some(entry.region.clone()),
            })
        })
        .collect()
}

/// The shields one request may go to: ring order from the owner of its key, past overloaded
/// shields (bounded-load mode, never past all of them) and ejected ones.
struct RingCandidates<'a, F> {
    upstream: &'a ShieldUpstream<F>,
    /// This request's ring, kept to the end even if the member list changes meanwhile.
    set: &'a ShieldSet,
    order: Vec<usize>,
    next: usize,
    spilled: usize,
    now: Instant,
    /// Set when a failover was refused for want of budget: nothing more is tried.
    out_of_budget: bool,
    /// Whether the request may be sent again (see [`Hop::replayable`]).
    replayable: bool,
}

impl<F: Upstream> RingCandidates<'_, F> {
    /// Whether another attempt may follow a failure; takes it from the budget if so.
    fn may_retry(&mut self) -> bool {
        let upstream = self.upstream;
        if upstream.budget.try_retry(Instant::now()) {
            upstream.metrics.retries.inc();
            return true;
        }
        upstream.metrics.budget_exhausted.inc();
        self.out_of_budget = true;
        false
    }
}

impl<'a, F: Upstream> Candidates for RingCandidates<'a, F> {
    type Target = ShieldAttempt<'a, F>;

    fn next(&mut self, retry: bool) -> Option<Result<ShieldAttempt<'a, F>, RequestError>> {
        while let Some(&index) = self.order.get(self.next) {
            self.next += 1;
            let shield = &*self.set.shields[index];
            if self.spilled + 1 < self.set.in_ring && self.upstream.overloaded(self.set, shield) {
                self.spilled += 1;
                self.upstream.metrics.spills.inc();
                continue;
            }
            if !shield.health().eligible(self.now) {
                continue;
            }
            // A failover is only taken from the budget once there is a shield to send it to.
            if retry && !self.may_retry() {
                return None;
            }
            if shield.health().admit(self.now, &self.upstream.ejection) {
                return Some(Ok(ShieldAttempt {
                    upstream: self.upstream,
                    shield,
                    replayable: self.replayable,
                }));
            }
        }
        None
    }
}

/// One attempt at one shield.
struct ShieldAttempt<'a, F> {
    upstream: &'a ShieldUpstream<F>,
    shield: &'a Shield,
    replayable: bool,
}

impl<F: Upstream> Target for ShieldAttempt<'_, F> {
    async fn send(
        &self,
        request: Request<UpstreamBody>,
    ) -> Result<Response<UpstreamResponseBody>, RequestError> {
        self.shield.in_flight.fetch_add(1, Ordering::Relaxed);
        let _counted = InFlight(&self.shield.in_flight);
        let sent = Instant::now();
        let answer = self.shield.client.request(request);
        let mut response = if self.replayable {
            // A shield taken out of the table (down for control: no heartbeat, no probe) is
            // not waited for: the next owner is asked instead.
            let mut withdrawn = self.shield.withdrawn.subscribe();
            tokio::select! {
                answer = answer => answer?,
                _ = withdrawn.wait_for(|gone| *gone) => {
                    return Err(RequestError::UpstreamWithdrawn {
                        upstream: self.shield.id.clone(),
                    });
                }
            }
        } else {
            answer.await?
        };
        // Only an answer from the shield's cache measures the way there: a miss adds the
        // shield's own fetch (a cold shield would look as far as its origin).
        if TierEntry::of(response.headers()).is_some_and(|tier| tier.answered_from_cache()) {
            self.shield.rtt.record_request(sent.elapsed());
        }
        // The access log names the shield by its id, not its URL.
        response
            .extensions_mut()
            .insert(AnsweredBy(Arc::from(self.shield.id.as_str())));
        Ok(response)
    }

    /// A 5xx is the shield's own failure only when it generated it; relayed, it is an answer.
    fn judge(&self, response: &Response<UpstreamResponseBody>) -> Attempt {
        let status = response.status();
        match TierEntry::of(response.headers()) {
            Some(tier) if tier.generated_error() && failover::is_failure(status) => {
                Attempt::Generated
            }
            _ => Attempt::of_status(status),
        }
    }

    fn record(&self, attempt: Attempt, sent: Instant) {
        let (upstream, shield) = (self.upstream, self.shield);
        upstream
            .metrics
            .duration
            .with_label_values(&[&shield.id])
            .observe(sent.elapsed().as_secs_f64());
        upstream
            .metrics
            .requests
            .with_label_values(&[&shield.id, attempt.as_str()])
            .inc();
        match attempt {
            // A relayed error status is the shield working: it answered.
            Attempt::Ok | Attempt::ErrorStatus => upstream.succeeded(shield, sent),
            // Our own connection bound, or the client's body failing: not the shield's fault,
            // eject nobody.
            Attempt::Saturated | Attempt::Unresolved | Attempt::ClientError => {
                shield.health().release_probe(Instant::now())
            }
            // Control took the shield out while the request waited: it has left the ring,
            // and its health is as it was.
            Attempt::Withdrawn => {}
            Attempt::Generated | Attempt::ConnectError | Attempt::Timeout | Attempt::Error => {
                upstream.failed(shield)
            }
        }
    }
}

impl<F: Upstream> Upstream for ShieldUpstream<F> {
    async fn send(
        &self,
        request: Request<UpstreamBody>,
        hop: &Hop,
    ) -> Result<Response<UpstreamResponseBody>, RequestError> {
        let (parts, body) = request.into_parts();
        self.budget.record_request(Instant::now());
        let set = self.set.load_full();
        let mut candidates = RingCandidates {
            upstream: self,
            order: set
                .ring
                .iter()
                .flat_map(|ring| ring.candidates(hop.key.as_str().as_bytes()))
                .collect(),
            set: &set,
            next: 0,
            spilled: 0,
            now: Instant::now(),
            out_of_budget: false,
            replayable: hop.replayable,
        };
        let (last, body) = match failover::attempt(&mut candidates, hop, &parts, body).await {
            Failover::Answered(response) => return Ok(response),
            Failover::Stopped(error) => return Err(error),
            Failover::Exhausted { last, body } => (last, body),
        };
        let body = match body {
            Some(body) => Some(body),
            None if hop.replayable => Some(Either::Left(Empty::new())),
            None => None,
        };
        // Going to the origin after a shield failed is a retry like any other.
        let fallback = match &self.fallback {
            Some(_) if candidates.out_of_budget => None,
            Some(_) if last.is_some() && !candidates.may_retry() => None,
            fallback => fallback.as_ref(),
        };
        match (fallback, body) {
            (Some(origin), Some(body)) => origin.send(Request::from_parts(parts, body), hop).await,
            _ => match last {
                Some(Ok(response)) => Ok(response),
                Some(Err(error)) => {
                    tracing::warn!(%error, "no shield could answer; origin fallback is off");
                    Err(RequestError::NoShield)
                }
                None => Err(RequestError::NoShield),
            },
        }
    }

    fn body_idle_timeout(&self) -> Duration {
        self.upstream.response_timeout
    }

    fn name(&self) -> &str {
        self.name
    }

    /// The table's shields for this edge's region become the ring, the other healthy ones are
    /// measured; on error the ring stays as it was.
    fn apply_routing(&self, table: &RoutingTable) -> Result<(), String> {
        let (ring, measured) = shield_specs(table, self.region.as_deref())?;
        let before = self.set.load_full();
        self.set_shields(&ring, &measured)
            .map_err(|e| e.to_string())?;
        self.withdraw_down(&before, table);
        Ok(())
    }

    /// Each shield known (in the ring or measured), up unless ejected, with its round trip;
    /// on an edge placed in a region, its origin fallback too.
    fn health(&self) -> Vec<UpstreamHealth> {
        let mut health: Vec<UpstreamHealth> = self
            .set
            .load()
            .shields
            .iter()
            .map(|shield| UpstreamHealth {
                id: shield.id.clone(),
                up: shield.health().is_up(),
                rtt_ms: shield.rtt.rtt_ms(),
            })
            .collect();
        if let Some(origin) = self.measured_fallback() {
            health.extend(origin.health());
        }
        health
    }

    /// One `OPTIONS` probe to every shield known that real requests did not reach lately, at
    /// once: those of the ring after a second without traffic, the others every
    /// `cadence.spare_every`.
    async fn probe(&self, cadence: rtt::ProbeCadence) {
        let mut probes = tokio::task::JoinSet::new();
        let set = self.set.load();
        let due = set.shields.iter().enumerate().filter(|(i, s)| {
            let every = if *i < set.in_ring {
                rtt::QUIET
            } else {
                cadence.spare_every
            };
            s.rtt.wants_probe(every)
        });
        for (_, shield) in due {
            let shield = Arc::clone(shield);
            probes.spawn(async move { shield.client.probe_into(&shield.rtt).await });
        }
        let origin = async {
            if let Some(origin) = self.measured_fallback() {
                origin.probe(cadence).await;
            }
        };
        let shields = async { while probes.join_next().await.is_some() {} };
        tokio::join!(origin, shields);
    }
}

mod metrics;
#[cfg(test)]
mod tests;
