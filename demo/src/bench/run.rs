//! One benchmark run: for each region, clients bound to the region's source address, steered
//! to their edges, asking for Zipf-popular objects (and purging some through control) for the
//! warm-up and then the measured duration, or until stopped.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::watch;
use tokio::time::Instant;
use verge_config::wire::PurgeSpec;
use verge_control::client::AdminClient;

use super::client::{Answer, EdgeTarget, RegionClient, RequestError};
use super::fault::{FaultPlan, PhaseBounds};
use super::histogram::{self, LatencyHistogram};
use super::injector::{self, Down, FaultRun};
use super::offload;
use super::report::{
    ErrorCount, OriginReport, PurgeReport, RegionReport, RunReport, SlowRequest, Slowest,
};
use super::steer;
use super::timeline::{Measured, Timeline};
use super::workload::{Steering, Workload};
use super::zipf::{XorShift, Zipf};
use crate::state::DemoState;

/// How long a client pauses after an error before trying again, so a dead target is not
/// hammered in a tight loop.
const ERROR_PAUSE: Duration = Duration::from_millis(25);
/// How long a purge may take to reach every live node before it counts as failed.
const PURGE_LIMIT: Duration = Duration::from_secs(30);
/// How long a region's clients keep away from an edge that failed; then one request (a probe)
/// tries it again, and a success brings them all back.
const AVOID_FOR: Duration = Duration::from_secs(1);

/// Where each region's clients are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Through the workload's steering.
    Steered,
    /// Every client to the edges of this one region (geo steering off).
    AllTo(String),
}

/// What a run is against and how to show it.
pub struct RunSpec<'a> {
    pub state: &'a DemoState,
    pub workload: &'a Workload,
    /// `configured`, `geo-off`, ...
    pub label: String,
    /// The run's setup, in words, for the tables.
    pub setup: String,
    pub route: Route,
    /// Draw a progress bar on stderr (only on a terminal).
    pub progress: bool,
    /// Parts killed and restored during the measured part (an in-process demo only).
    pub faults: Option<FaultRun<'a>>,
}

/// A region's clients, prepared.
struct RegionPlan {
    id: String,
    source: IpAddr,
}

/// What a run needs that can be checked before any traffic.
struct Prepared {
    paths: Vec<String>,
    regions: Vec<RegionPlan>,
    /// Control's admin API, when purging.
    admin: Option<AdminClient>,
}

/// Checks what can be checked before any traffic: the objects, the regions' source
/// addresses, the control client when purging.
fn prepare(state: &DemoState, workload: &Workload) -> Result<Prepared, String> {
    let paths = workload.paths(&state.samples)?;
    if state.regions.is_empty() {
        return Err("the state lists no region".to_string());
    }
    let mut regions = Vec::new();
    for region in &state.regions {
        let source = region.client_addr.parse().map_err(|e| {
            format!(
                "region {}: client_addr {:?} is not an IP address: {e}",
                region.id, region.client_addr
            )
        })?;
        regions.push(RegionPlan {
            id: region.id.clone(),
            source,
        });
    }
    let admin = if workload.purge_share > 0.0 {
        Some(
            AdminClient::new(&state.control.admin, &state.control.token)
                .map_err(|e| format!("--purge-share needs control: {e}"))?,
        )
    } else {
        None
    };
    Ok(Prepared {
        paths,
        regions,
        admin,
    })
}

/// Checks a run can start (see [`prepare`]); nothing is sent.
pub fn check(state: &DemoState, workload: &Workload) -> Result<(), String> {
    prepare(state, workload).map(|_| ())
}

#[derive(Default)]
struct RegionStats {
    all: LatencyHistogram,
    hits: LatencyHistogram,
    misses: LatencyHistogram,
    shield_hits: u64,
    origin_fetches: u64,
    bytes: u64,
    errors: BTreeMap<String, (u64, String)>,
    /// Per edge (as shown in errors): whether it ever answered, warm-up included.
    edges_heard: BTreeMap<String, bool>,
    /// Per second, and per phase with faults.
    timeline: Timeline,
    slowest: Slowest,
}

impl RegionStats {
    /// Notes that `edge` was tried, and whether it answered.
    fn tried(&mut self, edge: &EdgeTarget, answered: bool) {
        *self.edges_heard.entry(edge.to_string()).or_default() |= answered;
    }

    /// The edges tried that never answered.
    fn silent_edges(&self) -> Vec<String> {
        self.edges_heard
            .iter()
            .filter(|(_, heard)| !**heard)
            .map(|(edge, _)| edge.clone())
            .collect()
    }

    fn answered(&mut self, us: u64, answer: &Answer, path: &str, edge: &EdgeTarget) {
        let ms = us as f64 / 1000.0;
        if self.slowest.wants(ms) {
            self.slowest.offer(SlowRequest {
                ms,
                path: path.to_string(),
                edge: edge.id.clone(),
                bytes: answer.bytes,
                served_by: answer.cache.served_by(),
            });
        }
        self.all.record(us);
        if answer.cache.edge_hit {
            self.hits.record(us);
        } else {
            self.misses.record(us);
        }
        self.shield_hits += u64::from(answer.cache.shield_hit);
        self.origin_fetches += u64::from(answer.cache.origin_fetch);
        self.bytes += answer.bytes;
    }

    fn failed(&mut self, error: &RequestError) {
        let entry = self
            .errors
            .entry(error.kind())
            .or_insert_with(|| (0, error.to_string()));
        entry.0 += 1;
    }
}

#[derive(Default)]
struct PurgeStats {
    to_everywhere: LatencyHistogram,
    submitted: u64,
    completed: u64,
    failed: u64,
    first_failure: Option<String>,
}

/// What every client of a run shares.
struct Shared {
    hostname: String,
    paths: Vec<String>,
    zipf: Zipf,
    purge_share: f64,
    admin: Option<AdminClient>,
    measure_from: Instant,
    end: Instant,
    purges: Mutex<PurgeStats>,
    /// For the progress bar: answers and errors so far, warm-up included.
    requests: AtomicU64,
    errors: AtomicU64,
    /// The phases around the faults, if any.
    phases: Option<PhaseBounds>,
    /// Parts down now.
    down: Down,
}

impl Shared {
    fn purge_stats(&self) -> std::sync::MutexGuard<'_, PurgeStats> {
        self.purges.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One region's clients.
struct RegionRun {
    client: RegionClient,
    edges: Vec<EdgeTarget>,
    stats: Mutex<RegionStats>,
    /// Next send time, with `--rate`: the region's clients share one schedule.
    pacer: Option<(Mutex<Instant>, Duration)>,
    /// Per edge (as in `edges`): kept away from until then, after a failure.
    avoid: Mutex<Vec<Option<Instant>>>,
    /// Per object: fetched successfully by this region (warm-up included).
    fetched: Mutex<Vec<bool>>,
}

impl RegionRun {
    fn stats(&self) -> std::sync::MutexGuard<'_, RegionStats> {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The edge a client whose own edge is `home` sends to now, and whether that request is
    /// a probe of an edge that failed: its own edge unless avoided, else the next edge not
    /// avoided. Once an edge's avoidance runs out, one request probes it.
    fn pick(&self, home: usize) -> (usize, bool) {
        let now = Instant::now();
        let mut avoid = self.avoid.lock().unwrap_or_else(PoisonError::into_inner);
        let n = avoid.len();
        let order = (0..n).map(|k| (home + k) % n);
        if let Some(i) = order.clone().find(|&i| avoid[i].is_none()) {
            return (i, false);
        }
        if let Some(i) = order
            .clone()
            .find(|&i| avoid[i].is_some_and(|until| until <= now))
        {
            avoid[i] = Some(now + AVOID_FOR);
            return (i, true);
        }
        (home, true)
    }

    /// Notes how a request to edge `i` went: a failure keeps the region's clients away from it
    /// for a while, an answer brings them back.
    fn outcome(&self, i: usize, answered: bool) {
        let mut avoid = self.avoid.lock().unwrap_or_else(PoisonError::into_inner);
        avoid[i] = if answered {
            None
        } else {
            Some(Instant::now() + AVOID_FOR)
        };
    }

    /// Whether this region fetched object `k` successfully before; notes it if `fetched`.
    fn known(&self, k: usize, fetched: bool) -> bool {
        let mut seen = self.fetched.lock().unwrap_or_else(PoisonError::into_inner);
        let known = seen.get(k).copied().unwrap_or(false);
        if fetched {
            if let Some(slot) = seen.get_mut(k) {
                *slot = true;
            }
        }
        known
    }

    /// When this client may send next, per `--rate`.
    fn next_slot(&self) -> Option<Instant> {
        let (next, interval) = self.pacer.as_ref()?;
        let mut next = next.lock().unwrap_or_else(PoisonError::into_inner);
        let at = (*next).max(Instant::now());
        *next = at + *interval;
        Some(at)
    }
}

/// Completes once `stop` says true (never if its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn client_loop(
    shared: Arc<Shared>,
    region: Arc<RegionRun>,
    home: usize,
    seed: u64,
    mut stop: watch::Receiver<bool>,
) {
    let mut rng = XorShift::new(seed);
    loop {
        if *stop.borrow() || Instant::now() >= shared.end {
            return;
        }
        if let Some(at) = region.next_slot() {
            if at >= shared.end {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                () = stopped(&mut stop) => return,
            }
        }
        let object = shared.zipf.sample(&mut rng);
        let path = &shared.paths[object];
        let measuring = Instant::now() >= shared.measure_from;
        if measuring && shared.purge_share > 0.0 && rng.next_f64() < shared.purge_share {
            tokio::select! {
                () = purge(&shared, path) => {}
                () = stopped(&mut stop) => return,
            }
            continue;
        }
        let (index, probe) = region.pick(home);
        let edge = &region.edges[index];
        let started = Instant::now();
        // The clock moved since the check above: nothing is sent past the end.
        if started >= shared.end {
            return;
        }
        let measured = started
            .checked_duration_since(shared.measure_from)
            .map(|at| Measured {
                at,
                phase: shared.phases.map(|p| p.phase(at)),
                known: false,
            });
        if let (Some(m), false) = (&measured, probe) {
            if let Some(killed) = shared.down.since(&edge.id) {
                region
                    .stats()
                    .timeline
                    .sent_while_down(&edge.id, killed, m.at);
            }
        }
        let result = tokio::select! {
            r = region.client.get(edge, path, &shared.hostname) => r,
            () = stopped(&mut stop) => return,
        };
        let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        region.outcome(index, result.is_ok());
        let known = region.known(object, result.is_ok());
        let failed = {
            let mut stats = region.stats();
            stats.tried(edge, result.is_ok());
            match result {
                Ok(answer) => {
                    shared.requests.fetch_add(1, Ordering::Relaxed);
                    if let Some(m) = measured {
                        stats.answered(us, &answer, path, edge);
                        stats.timeline.place(&Measured { known, ..m }, Some(us));
                    }
                    false
                }
                Err(error) => {
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                    if let Some(m) = measured {
                        stats.failed(&error);
                        stats.timeline.place(&Measured { known, ..m }, None);
                    }
                    true
                }
            }
        };
        if failed {
            tokio::select! {
                () = tokio::time::sleep(ERROR_PAUSE) => {}
                () = stopped(&mut stop) => return,
            }
        }
    }
}

/// Purges `path` through control and waits until every live node has applied it.
async fn purge(shared: &Shared, path: &str) {
    let Some(admin) = &shared.admin else { return };
    let spec = PurgeSpec {
        urls: vec![format!("http://{}{path}", shared.hostname)],
        ..PurgeSpec::default()
    };
    let outcome = async {
        let accepted = admin.purge(&spec).await.map_err(|e| e.to_string())?;
        let status = admin
            .wait(accepted.id, PURGE_LIMIT)
            .await
            .map_err(|e| e.to_string())?;
        status
            .completed_after_us
            .or(status.completed_after_ms.map(|ms| ms * 1000))
            .ok_or_else(|| format!("purge {} complete but without a time", accepted.id))
    };
    shared.purge_stats().submitted += 1;
    let result = outcome.await;
    let mut stats = shared.purge_stats();
    match result {
        Ok(us) => {
            stats.completed += 1;
            stats.to_everywhere.record(us);
        }
        Err(e) => {
            stats.failed += 1;
            stats.first_failure.get_or_insert(e);
        }
    }
}

fn progress_bar(enabled: bool, total: Duration, label: &str) -> ProgressBar {
    use std::io::IsTerminal;
    if !enabled || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(u64::try_from(total.as_millis()).unwrap_or(u64::MAX));
    if let Ok(style) = ProgressStyle::with_template("{prefix} [{bar:32}] {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(label.to_string());
    bar
}

/// Runs the workload against `spec.state` until done or `stop` says true, and reports what
/// was measured (a region whose steering failed is reported with the reason).
pub async fn run(spec: RunSpec<'_>, stop: watch::Receiver<bool>) -> Result<RunReport, String> {
    let RunSpec {
        state,
        workload,
        label,
        setup,
        route,
        progress,
        faults,
    } = spec;
    let (plan, mut fault_target) = match faults {
        Some(FaultRun { plan, target }) => (plan, Some(target)),
        None => (FaultPlan::default(), None),
    };
    let Prepared {
        paths,
        regions: plans,
        admin,
    } = prepare(state, workload)?;
    let probe = RegionClient::new(None, workload.timeout, 4);

    // Steering: where each region's clients go.
    let mut regions = Vec::new();
    let mut failures = Vec::new();
    for plan in &plans {
        let steered = match &route {
            Route::Steered => {
                steer::steer(
                    state,
                    &plan.id,
                    plan.source,
                    workload.steering,
                    workload.concurrency,
                    workload.timeout,
                )
                .await
            }
            Route::AllTo(region) => {
                steer::steer(
                    state,
                    region,
                    plan.source,
                    Steering::None,
                    workload.concurrency,
                    workload.timeout,
                )
                .await
            }
        };
        match steered {
            Ok(steered) => {
                let pacer = workload
                    .rate
                    .map(|r| (Mutex::new(Instant::now()), Duration::from_secs_f64(1.0 / r)));
                regions.push(Some(Arc::new(RegionRun {
                    client: RegionClient::new(
                        Some(plan.source),
                        workload.timeout,
                        workload.concurrency,
                    ),
                    avoid: Mutex::new(vec![None; steered.edges.len()]),
                    fetched: Mutex::new(vec![false; paths.len()]),
                    edges: steered.edges,
                    stats: Mutex::new(RegionStats::default()),
                    pacer,
                })));
                failures.push(None);
            }
            Err(reason) => {
                regions.push(None);
                failures.push(Some(reason));
            }
        }
    }

    let start = Instant::now();
    let measure_from = start + workload.warmup;
    let end = measure_from + workload.duration;
    let shared = Arc::new(Shared {
        hostname: state.hostname.clone(),
        zipf: Zipf::new(paths.len(), workload.zipf),
        paths,
        purge_share: workload.purge_share,
        admin,
        measure_from,
        end,
        purges: Mutex::new(PurgeStats::default()),
        requests: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        phases: plan.phases(),
        down: Down::default(),
    });
    let fault_events = Mutex::new(Vec::new());
    let mut applying = fault_target.take().map(|target| {
        Box::pin(injector::drive(
            plan.clone(),
            target,
            measure_from,
            &fault_events,
            &shared.down,
        ))
    });

    let mut tasks = tokio::task::JoinSet::new();
    for (r, region) in regions.iter().enumerate() {
        let Some(region) = region else { continue };
        for c in 0..workload.concurrency {
            let seed = workload.seed ^ ((r as u64) << 32) ^ c as u64;
            tasks.spawn(client_loop(
                shared.clone(),
                region.clone(),
                c % region.edges.len(),
                seed,
                stop.clone(),
            ));
        }
    }

    // The origin's count at the start of the measured part, and the progress bar meanwhile.
    let bar = progress_bar(progress, workload.warmup + workload.duration, &label);
    let mut origin_before = None;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut before_taken = workload.warmup.is_zero();
    if before_taken {
        origin_before = offload::origin_requests(&probe, state).await;
    }
    loop {
        tokio::select! {
            joined = tasks.join_next() => {
                if joined.is_none() {
                    break;
                }
            }
            () = async { if let Some(faults) = applying.as_mut() { faults.await } }, if applying.is_some() => {
                applying = None;
            }
            _ = tick.tick() => {
                let now = Instant::now();
                bar.set_position(u64::try_from((now - start).as_millis()).unwrap_or(u64::MAX));
                let phase = if now < measure_from { "warming up" } else { "measuring" };
                let purges = shared.purge_stats().submitted;
                bar.set_message(format!(
                    "{:.0}/{:.0} s {phase}: {} answers, {} errors, {purges} purges",
                    (now - start).as_secs_f64(),
                    (end - start).as_secs_f64(),
                    shared.requests.load(Ordering::Relaxed),
                    shared.errors.load(Ordering::Relaxed),
                ));
                if !before_taken && now >= measure_from {
                    before_taken = true;
                    origin_before = offload::origin_requests(&probe, state).await;
                }
            }
        }
    }
    bar.finish_and_clear();
    drop(applying);
    let fault_events = fault_events
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    let interrupted = *stop.borrow();
    let stopped_at = Instant::now().min(end);
    let measured = stopped_at.saturating_duration_since(measure_from);
    let origin_after = if before_taken {
        offload::origin_requests(&probe, state).await
    } else {
        None
    };

    let mut rows = Vec::new();
    let mut total_stats = RegionStats::default();
    let mut total_edges: Vec<String> = Vec::new();
    let mut per_region = Vec::new();
    for ((plan, region), failure) in plans.iter().zip(&regions).zip(failures) {
        let (stats, edges) = match region {
            Some(region) => {
                let stats = std::mem::take(&mut *region.stats());
                (stats, region.edges.iter().map(|e| e.id.clone()).collect())
            }
            None => (RegionStats::default(), Vec::new()),
        };
        total_stats.all.merge(&stats.all);
        total_stats.slowest.merge(&stats.slowest);
        per_region.push(stats.all.clone());
        total_stats.hits.merge(&stats.hits);
        total_stats.misses.merge(&stats.misses);
        total_stats.shield_hits += stats.shield_hits;
        total_stats.origin_fetches += stats.origin_fetches;
        total_stats.bytes += stats.bytes;
        for (edge, heard) in &stats.edges_heard {
            *total_stats.edges_heard.entry(edge.clone()).or_default() |= heard;
        }
        for (kind, (count, example)) in &stats.errors {
            let entry = total_stats
                .errors
                .entry(kind.clone())
                .or_insert_with(|| (0, example.clone()));
            entry.0 += count;
        }
        for edge in &edges {
            if !total_edges.contains(edge) {
                total_edges.push(edge.clone());
            }
        }
        total_stats.timeline.merge(&stats.timeline);
        let mut row = region_report(
            &plan.id,
            &plan.source.to_string(),
            edges,
            &stats,
            measured,
            failure,
        );
        stats
            .timeline
            .report(&mut row, measured, shared.phases, &fault_events);
        rows.push(row);
    }
    let mut total = region_report("all", "", total_edges, &total_stats, measured, None);
    total_stats
        .timeline
        .report(&mut total, measured, shared.phases, &fault_events);
    let regions_equal_ms = histogram::equal_weight_summary(&per_region.iter().collect::<Vec<_>>());
    // A restored origin counts on from the killed one's count; a count read from the origin at
    // one end and from the nodes at the other (the origin down then) is no figure.
    let origin = match (origin_before, origin_after) {
        (Some((before, source)), Some((after, source_after))) if source == source_after => {
            Some(OriginReport {
                requests: after.saturating_sub(before),
                per_client_request: (total.requests > 0)
                    .then(|| after.saturating_sub(before) as f64 / total.requests as f64),
                source,
            })
        }
        _ => None,
    };
    let purges = {
        let p = shared.purge_stats();
        PurgeReport {
            submitted: p.submitted,
            completed: p.completed,
            failed: p.failed,
            to_everywhere_ms: p.to_everywhere.summary(),
            failure_example: p.first_failure.clone(),
        }
    };
    Ok(RunReport {
        label,
        setup,
        workload: workload.clone(),
        measured_seconds: measured.as_secs_f64(),
        interrupted,
        regions: rows,
        total,
        regions_equal_ms,
        origin,
        purges,
        faults: fault_events,
    })
}

fn region_report(
    region: &str,
    client_addr: &str,
    edges: Vec<String>,
    stats: &RegionStats,
    measured: Duration,
    failure: Option<String>,
) -> RegionReport {
    let requests = stats.all.count();
    let per = |n: u64| (requests > 0).then(|| n as f64 / requests as f64);
    RegionReport {
        region: region.to_string(),
        client_addr: client_addr.to_string(),
        edges,
        requests,
        requests_per_second: if measured.is_zero() {
            0.0
        } else {
            requests as f64 / measured.as_secs_f64()
        },
        bytes: stats.bytes,
        errors: stats.errors.values().map(|(n, _)| n).sum(),
        error_kinds: stats
            .errors
            .iter()
            .map(|(kind, (count, example))| ErrorCount {
                kind: kind.clone(),
                count: *count,
                example: example.clone(),
            })
            .collect(),
        hits: stats.hits.count(),
        shield_hits: stats.shield_hits,
        origin_fetches: stats.origin_fetches,
        hit_ratio: per(stats.hits.count()),
        origin_fetches_per_request: per(stats.origin_fetches),
        latency_ms: stats.all.summary(),
        hit_latency_ms: stats.hits.summary(),
        miss_latency_ms: stats.misses.summary(),
        cdf: stats.all.cdf(),
        latency: stats.all.clone(),
        silent_edges: stats.silent_edges(),
        failure,
        timeline: Vec::new(),
        phases: Vec::new(),
        moved_away: Vec::new(),
        slowest: stats.slowest.requests(),
    }
}
