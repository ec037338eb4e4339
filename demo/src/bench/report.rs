//! What a run measured, as the JSON results file holds it, and as the Markdown tables printed
//! at the end; the `--baseline` comparison and its ratios.

use std::fmt::Write as _;

use serde::Serialize;

use super::fault::{FaultAction, Phase};
use super::histogram::{LatencyHistogram, LatencySummary};
use super::offload::CountSource;
use super::workload::Workload;

/// Errors of one kind, with the first one seen (it names the target).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorCount {
    pub kind: String,
    pub count: u64,
    pub example: String,
}

/// One region's clients (or all of them, in the total row).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegionReport {
    pub region: String,
    /// The source address the region's clients bound.
    pub client_addr: String,
    /// The edges its clients were steered to.
    pub edges: Vec<String>,
    /// Answered requests (status below 400), measured after the warm-up.
    pub requests: u64,
    pub requests_per_second: f64,
    pub bytes: u64,
    pub errors: u64,
    pub error_kinds: Vec<ErrorCount>,
    /// Answered from the edge's cache.
    pub hits: u64,
    /// Missed at the edge, answered from the shield's cache.
    pub shield_hits: u64,
    /// Made a cache fetch from the origin (from `Cache-Status`).
    pub origin_fetches: u64,
    pub hit_ratio: Option<f64>,
    pub origin_fetches_per_request: Option<f64>,
    /// Every answered request, and hits and misses apart.
    pub latency_ms: Option<LatencySummary>,
    pub hit_latency_ms: Option<LatencySummary>,
    pub miss_latency_ms: Option<LatencySummary>,
    /// `(ms, share ≤ ms)`: the distribution the chart draws.
    pub cdf: Vec<(f64, f64)>,
    /// Every answered request's latency, for the intervals of the baseline's ratios.
    #[serde(skip)]
    pub latency: LatencyHistogram,
    /// Edges this region's clients were sent to that never answered.
    pub silent_edges: Vec<String>,
    /// Why the region could not run (steering failed), if so.
    pub failure: Option<String>,
    /// Per second of the measured part.
    pub timeline: Vec<SecondReport>,
    /// Before the first fault, during (first kill to last restore), after; empty without
    /// faults.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<PhaseReport>,
    /// Per killed edge of this region: how soon its clients stopped sending to it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub moved_away: Vec<MovedAway>,
    /// The slowest answered requests of the measured part, slowest first: what the tail is
    /// made of.
    pub slowest: Vec<SlowRequest>,
}

/// One of the slowest answered requests.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlowRequest {
    pub ms: f64,
    pub path: String,
    pub edge: String,
    pub bytes: u64,
    /// Who had the object: `edge` (a hit), `shield` (a shield's hit), `origin` (fetched from
    /// it on the way), `upstream` (the edge missed; no `Cache-Status` says more).
    pub served_by: &'static str,
}

/// Requests kept in [`RegionReport::slowest`].
pub const SLOWEST: usize = 5;

/// The [`SLOWEST`] slowest requests offered, slowest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Slowest(Vec<SlowRequest>);

impl Slowest {
    /// Whether a request of `ms` would be kept (so that one is built only then).
    pub fn wants(&self, ms: f64) -> bool {
        self.0.len() < SLOWEST || self.0.last().is_some_and(|last| ms > last.ms)
    }

    pub fn offer(&mut self, request: SlowRequest) {
        if !self.wants(request.ms) {
            return;
        }
        let at = self.0.partition_point(|kept| kept.ms >= request.ms);
        self.0.insert(at, request);
        self.0.truncate(SLOWEST);
    }

    pub fn merge(&mut self, other: &Slowest) {
        for request in &other.0 {
            self.offer(request.clone());
        }
    }

    pub fn requests(&self) -> Vec<SlowRequest> {
        self.0.clone()
    }
}

/// One second of the measured part.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SecondReport {
    /// From the start of the measured part: requests started in `[second, second + 1)`.
    pub second: u64,
    /// Answered and failed.
    pub requests: u64,
    pub errors: u64,
    /// Of the answered ones.
    pub p99_ms: Option<f64>,
}

/// One phase of a run with faults.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseReport {
    pub phase: Phase,
    /// Answered and failed.
    pub requests: u64,
    pub errors: u64,
    /// Errors on objects this region had already fetched successfully (a cache somewhere
    /// held them).
    pub errors_on_hits: u64,
    /// The other errors.
    pub errors_on_misses: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// How soon a region's clients stopped sending to an edge that was killed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MovedAway {
    pub edge: String,
    /// When it was killed (planned), from the start of the measured part.
    pub killed_at_s: f64,
    /// From the kill to the last regular request its clients sent it while it was down (probes
    /// of it aside); 0 when none was sent after the kill.
    pub stopped_after_ms: f64,
}

/// A fault as it was applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultEvent {
    pub action: FaultAction,
    pub part: String,
    /// When the plan said, and when it was applied, from the start of the measured part.
    pub planned_s: f64,
    pub at_s: f64,
    /// How long the kill (draining) or the restart took.
    pub took_ms: f64,
    pub error: Option<String>,
}

/// Purges sent through control during the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PurgeReport {
    pub submitted: u64,
    pub completed: u64,
    pub failed: u64,
    /// Accepted → applied on every live node, as control measured it (`completed_after_us`).
    pub to_everywhere_ms: Option<LatencySummary>,
    pub failure_example: Option<String>,
}

/// Requests the origin received during the measured part of the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OriginReport {
    pub requests: u64,
    pub per_client_request: Option<f64>,
    pub source: CountSource,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunReport {
    /// `configured`, `geo-off`, `shields-off`.
    pub label: String,
    /// What the run was against, in words.
    pub setup: String,
    pub workload: Workload,
    pub measured_seconds: f64,
    /// Stopped early (Ctrl-C): the figures cover what was measured until then.
    pub interrupted: bool,
    pub regions: Vec<RegionReport>,
    /// Every answered request of every region together: regions with fast answers send more.
    pub total: RegionReport,
    /// Latency with every region weighing the same, whatever its request count: what the
    /// `--baseline` ratios compare.
    pub regions_equal_ms: Option<LatencySummary>,
    pub origin: Option<OriginReport>,
    pub purges: PurgeReport,
    /// The faults applied (`--fault`), in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<FaultEvent>,
}

impl RunReport {
    /// Origin requests per client request: counted at the origin when possible, else from
    /// `Cache-Status`.
    pub fn origin_per_request(&self) -> Option<f64> {
        self.origin
            .as_ref()
            .and_then(|o| o.per_client_request)
            .or(self.total.origin_fetches_per_request)
    }

    /// Regions that could not run, whose every request failed, or one of whose edges never
    /// answered.
    pub fn failed_regions(&self) -> Vec<&RegionReport> {
        self.regions
            .iter()
            .filter(|r| {
                r.failure.is_some()
                    || (r.requests == 0 && r.errors > 0)
                    || !r.silent_edges.is_empty()
            })
            .collect()
    }
}

/// Milliseconds with the precision that matters at their size.
pub fn ms(value: f64) -> String {
    if value < 10.0 {
        format!("{value:.2}")
    } else if value < 100.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.0}")
    }
}

fn opt_ms(summary: Option<&LatencySummary>, pick: fn(&LatencySummary) -> f64) -> String {
    summary.map_or_else(|| "-".to_string(), |s| ms(pick(s)))
}

pub fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_string(), |v| format!("{:.1}%", v * 100.0))
}

fn per_request(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_string(), |v| format!("{v:.3}"))
}

/// Ratio `a / b` when both are known and `b` is not zero.
fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn times(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_string(), |v| format!("×{v:.2}"))
}

/// The per-region table, then the origin and purge lines and any errors.
pub fn markdown(report: &RunReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### {} — {}\n\n{:.1} s measured{}; {} clients per region, Zipf {} over {} objects, steering {}\n",
        report.label,
        report.setup,
        report.measured_seconds,
        if report.interrupted { " (interrupted)" } else { "" },
        report.workload.concurrency,
        report.workload.zipf,
        report.total_objects(),
        report.workload.steering.as_str(),
    );
    out.push_str("| region | edges | requests | req/s | p50 ms | p90 ms | p99 ms | max ms | hit ratio | hit p50 ms | miss p50 ms | origin fetch/req | errors |\n");
    out.push_str("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    for row in report.regions.iter().chain(std::iter::once(&report.total)) {
        let l = row.latency_ms.as_ref();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.region,
            if row.edges.is_empty() {
                "-".to_string()
            } else {
                row.edges.join(" ")
            },
            row.requests,
            row.requests_per_second,
            opt_ms(l, |s| s.p50),
            opt_ms(l, |s| s.p90),
            opt_ms(l, |s| s.p99),
            opt_ms(l, |s| s.max),
            percent(row.hit_ratio),
            opt_ms(row.hit_latency_ms.as_ref(), |s| s.p50),
            opt_ms(row.miss_latency_ms.as_ref(), |s| s.p50),
            per_request(row.origin_fetches_per_request),
            row.errors,
        );
    }
    out.push('\n');
    if let Some(l) = &report.regions_equal_ms {
        let _ = writeln!(
            out,
            "every region weighted equally: p50 {} ms, p90 {} ms, p99 {} ms",
            ms(l.p50),
            ms(l.p90),
            ms(l.p99)
        );
    }
    if let Some(origin) = &report.origin {
        let _ = writeln!(
            out,
            "origin: {} requests for {} client requests ({} per client request; counted by {})",
            origin.requests,
            report.total.requests,
            per_request(origin.per_client_request),
            match origin.source {
                CountSource::OriginStats => "the origin",
                CountSource::NodeMetrics => "the nodes' verge_upstream_requests_total",
            }
        );
    }
    let p = &report.purges;
    if p.submitted > 0 {
        let _ = writeln!(
            out,
            "purges: {} submitted, {} complete everywhere, {} failed; purge-to-everywhere p50 {} ms, p99 {} ms, max {} ms",
            p.submitted,
            p.completed,
            p.failed,
            opt_ms(p.to_everywhere_ms.as_ref(), |s| s.p50),
            opt_ms(p.to_everywhere_ms.as_ref(), |s| s.p99),
            opt_ms(p.to_everywhere_ms.as_ref(), |s| s.max),
        );
        if let Some(example) = &p.failure_example {
            let _ = writeln!(out, "  first purge failure: {example}");
        }
    }
    if !report.faults.is_empty() {
        out.push('\n');
        out.push_str(&faults_markdown(report));
    }
    for region in &report.regions {
        if !region.slowest.is_empty() {
            let shown: Vec<String> = region
                .slowest
                .iter()
                .map(|r| {
                    format!(
                        "{} ms {} ({} KiB, {} via {})",
                        ms(r.ms),
                        r.path,
                        r.bytes.div_ceil(1024),
                        r.served_by,
                        r.edge
                    )
                })
                .collect();
            let _ = writeln!(out, "{} slowest: {}", region.region, shown.join("; "));
        }
    }
    for region in &report.regions {
        if let Some(failure) = &region.failure {
            let _ = writeln!(out, "{}: did not run: {failure}", region.region);
        }
        for edge in &region.silent_edges {
            let _ = writeln!(out, "{}: {edge} never answered", region.region);
        }
        for e in &region.error_kinds {
            let _ = writeln!(
                out,
                "{}: {} × {} (first: {})",
                region.region, e.count, e.kind, e.example
            );
        }
    }
    out
}

/// With `--fault`: the faults as applied, the phases per region, how soon clients left each
/// killed edge, and the per-second timeline.
pub fn faults_markdown(report: &RunReport) -> String {
    let mut out = String::from("#### faults\n\n");
    for f in &report.faults {
        let _ = writeln!(
            out,
            "- {} {} at {:.2} s (planned {:.2} s), took {} ms{}",
            f.action.as_str(),
            f.part,
            f.at_s,
            f.planned_s,
            ms(f.took_ms),
            f.error
                .as_ref()
                .map_or_else(String::new, |e| format!(": FAILED: {e}"))
        );
    }
    out.push_str(
        "\n| region | phase | requests | errors | on hits | on misses | p50 ms | p99 ms |\n",
    );
    out.push_str("|---|---|--:|--:|--:|--:|--:|--:|\n");
    let opt = |v: Option<f64>| v.map_or_else(|| "-".to_string(), ms);
    for row in report.regions.iter().chain(std::iter::once(&report.total)) {
        for p in &row.phases {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                row.region,
                p.phase.as_str(),
                p.requests,
                p.errors,
                p.errors_on_hits,
                p.errors_on_misses,
                opt(p.p50_ms),
                opt(p.p99_ms),
            );
        }
    }
    for row in &report.regions {
        for m in &row.moved_away {
            let _ = writeln!(
                out,
                "{}: clients stopped sending to {} {} ms after its kill at {:.2} s",
                row.region,
                m.edge,
                ms(m.stopped_after_ms),
                m.killed_at_s
            );
        }
    }
    out.push_str(&timeline_markdown(report));
    out
}

/// Per second: requests, errors and p99 of each region.
pub fn timeline_markdown(report: &RunReport) -> String {
    let mut out = String::from("\n| second |");
    let mut rule = String::from("|--:|");
    for row in &report.regions {
        let r = &row.region;
        let _ = write!(out, " {r} req | {r} err | {r} p99 ms |");
        rule.push_str("--:|--:|--:|");
    }
    let _ = writeln!(out, "\n{rule}");
    let seconds = report
        .regions
        .iter()
        .map(|r| r.timeline.len())
        .max()
        .unwrap_or(0);
    for second in 0..seconds {
        let _ = write!(out, "| {second} |");
        for row in &report.regions {
            match row.timeline.get(second) {
                Some(s) => {
                    let p99 = s.p99_ms.map_or_else(|| "-".to_string(), ms);
                    let _ = write!(out, " {} | {} | {p99} |", s.requests, s.errors);
                }
                None => out.push_str(" 0 | 0 | - |"),
            }
        }
        out.push('\n');
    }
    out
}

impl RunReport {
    /// p99 of one region's answered requests.
    pub fn region_p99(&self, region: &str) -> Option<f64> {
        self.regions
            .iter()
            .find(|r| r.region == region)
            .and_then(|r| r.latency_ms.as_ref())
            .map(|l| l.p99)
    }

    /// p50 of one region's answered requests.
    pub fn region_p50(&self, region: &str) -> Option<f64> {
        self.regions
            .iter()
            .find(|r| r.region == region)
            .and_then(|r| r.latency_ms.as_ref())
            .map(|l| l.p50)
    }

    fn total_objects(&self) -> String {
        self.workload
            .objects
            .map_or_else(|| "all sample".to_string(), |n| n.to_string())
    }
}

/// What geo steering and the shield tier buy, as ratios of the same workload run three ways.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ratios {
    /// p50 (p99) latency with every client sent to one region ÷ with geo steering, every
    /// region weighing the same.
    pub geo_p50_latency: Option<f64>,
    pub geo_p99_latency: Option<f64>,
    /// The same at p50, region by region.
    pub geo_p50_by_region: Vec<(String, Option<f64>)>,
    /// Origin requests per client request without shields ÷ with them.
    pub shield_origin_requests: Option<f64>,
    /// p50 (p99) latency without shields ÷ with them, every region weighing the same.
    pub shield_p50_latency: Option<f64>,
    pub shield_p99_latency: Option<f64>,
    /// p99 without shields ÷ with them, region by region (at least 1: the tier costs no tail).
    pub shield_p99_by_region: Vec<RegionRatio>,
    /// Origin requests per client request with one global ring ÷ as configured.
    pub global_origin_requests: Option<f64>,
    /// p99 with one global ring ÷ as configured, region by region.
    pub global_p99_by_region: Vec<RegionRatio>,
}

/// One region's p99 in another run ÷ as configured, with the range it could have taken from
/// the two runs' sampling alone.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegionRatio {
    pub region: String,
    pub ratio: Option<f64>,
    /// The middle 95% of the ratio over [`RESAMPLES`] resamples of both runs' answers (each
    /// run's requests drawn again, with replacement, from its own latencies). A ratio whose
    /// interval holds 1 is no difference these runs can tell from chance.
    pub interval_95: Option<(f64, f64)>,
}

/// Resamples behind each interval.
pub const RESAMPLES: usize = 1000;

impl RegionRatio {
    fn in_words(&self) -> String {
        match (self.ratio, self.interval_95) {
            (Some(x), Some((low, high))) => format!(
                "{} {} ({}–{high:.2})",
                self.region,
                times(Some(x)),
                times(Some(low)),
            ),
            (x, _) => format!("{} {}", self.region, times(x)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub configured: RunReport,
    pub geo_off: Option<RunReport>,
    pub shields_off: Option<RunReport>,
    /// The shields on one global ring (topology `global`).
    pub global: Option<RunReport>,
    pub ratios: Ratios,
}

impl Comparison {
    pub fn new(
        configured: RunReport,
        geo_off: Option<RunReport>,
        shields_off: Option<RunReport>,
    ) -> Comparison {
        let p = |r: Option<&RunReport>, pick: fn(&LatencySummary) -> f64| {
            r.and_then(|r| r.regions_equal_ms.as_ref()).map(pick)
        };
        let base = Some(&configured);
        let ratios = Ratios {
            geo_p50_latency: ratio(p(geo_off.as_ref(), |s| s.p50), p(base, |s| s.p50)),
            geo_p99_latency: ratio(p(geo_off.as_ref(), |s| s.p99), p(base, |s| s.p99)),
            geo_p50_by_region: configured
                .regions
                .iter()
                .map(|r| {
                    let off = geo_off.as_ref().and_then(|g| g.region_p50(&r.region));
                    (
                        r.region.clone(),
                        ratio(off, configured.region_p50(&r.region)),
                    )
                })
                .collect(),
            shield_origin_requests: ratio(
                shields_off.as_ref().and_then(RunReport::origin_per_request),
                configured.origin_per_request(),
            ),
            shield_p50_latency: ratio(p(shields_off.as_ref(), |s| s.p50), p(base, |s| s.p50)),
            shield_p99_latency: ratio(p(shields_off.as_ref(), |s| s.p99), p(base, |s| s.p99)),
            shield_p99_by_region: p99_by_region(&configured, shields_off.as_ref()),
            global_origin_requests: None,
            global_p99_by_region: Vec::new(),
        };
        Comparison {
            configured,
            geo_off,
            shields_off,
            global: None,
            ratios,
        }
    }

    /// Adds the run with one global shield ring.
    pub fn with_global(mut self, global: Option<RunReport>) -> Comparison {
        self.ratios.global_origin_requests = ratio(
            global.as_ref().and_then(RunReport::origin_per_request),
            self.configured.origin_per_request(),
        );
        self.ratios.global_p99_by_region = p99_by_region(&self.configured, global.as_ref());
        self.global = global;
        self
    }

    pub fn runs(&self) -> impl Iterator<Item = &RunReport> {
        std::iter::once(&self.configured)
            .chain(self.geo_off.as_ref())
            .chain(self.shields_off.as_ref())
            .chain(self.global.as_ref())
    }

    /// One row per run (latency with every region weighing the same, then each region's
    /// p50), then the ratios in words.
    pub fn markdown(&self) -> String {
        let regions: Vec<&str> = self
            .configured
            .regions
            .iter()
            .map(|r| r.region.as_str())
            .collect();
        let mut out = String::from("### baseline\n\n| run | setup | requests | p50 ms | p99 ms |");
        for region in &regions {
            let _ = write!(out, " {region} p50 ms | {region} p99 ms |");
        }
        out.push_str(" hit ratio | origin req/client req |\n|---|---|--:|--:|--:|");
        out.push_str(&"--:|--:|".repeat(regions.len()));
        out.push_str("--:|--:|\n");
        for run in self.runs() {
            let l = run.regions_equal_ms.as_ref();
            let _ = write!(
                out,
                "| {} | {} | {} | {} | {} |",
                run.label,
                run.setup,
                run.total.requests,
                opt_ms(l, |s| s.p50),
                opt_ms(l, |s| s.p99),
            );
            for region in &regions {
                let shown = |v: Option<f64>| v.map_or_else(|| "-".to_string(), ms);
                let _ = write!(
                    out,
                    " {} | {} |",
                    shown(run.region_p50(region)),
                    shown(run.region_p99(region))
                );
            }
            let _ = writeln!(
                out,
                " {} | {} |",
                percent(run.total.hit_ratio),
                per_request(run.origin_per_request()),
            );
        }
        out.push_str("\n(p50 and p99 with every region weighing the same)\n\n");
        let r = &self.ratios;
        let by_region: Vec<String> = r
            .geo_p50_by_region
            .iter()
            .map(|(region, x)| format!("{region} {}", times(*x)))
            .collect();
        let _ = writeln!(
            out,
            "geo steering: without it latency is {} at p50 and {} at p99 (p50 by region: {})",
            times(r.geo_p50_latency),
            times(r.geo_p99_latency),
            by_region.join(", "),
        );
        let _ = writeln!(
            out,
            "shield tier: without it the origin gets {} the requests per client request; latency {} at p50, {} at p99",
            times(r.shield_origin_requests),
            times(r.shield_p50_latency),
            times(r.shield_p99_latency),
        );
        let in_words = |ratios: &[RegionRatio]| -> String {
            ratios
                .iter()
                .map(RegionRatio::in_words)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            out,
            "p99 by region without shields ÷ as configured (1 or more: the tier costs no tail; in brackets the middle 95% over {RESAMPLES} resamples of both runs): {}",
            in_words(&r.shield_p99_by_region)
        );
        if self.global.is_some() {
            let _ = writeln!(
                out,
                "one global shield ring: the origin gets {} the requests per client request; p99 by region {}",
                times(r.global_origin_requests),
                in_words(&r.global_p99_by_region)
            );
        }
        out
    }
}

/// `other`'s p99 ÷ `configured`'s, for each of `configured`'s regions, with its interval.
fn p99_by_region(configured: &RunReport, other: Option<&RunReport>) -> Vec<RegionRatio> {
    configured
        .regions
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let theirs = other.and_then(|o| o.regions.iter().find(|o| o.region == r.region));
            let seed = configured.workload.seed.wrapping_add(i as u64 * 2);
            RegionRatio {
                region: r.region.clone(),
                ratio: ratio(
                    theirs.and_then(|t| t.latency_ms.as_ref()).map(|l| l.p99),
                    configured.region_p99(&r.region),
                ),
                interval_95: theirs.and_then(|t| p99_ratio_interval(&t.latency, &r.latency, seed)),
            }
        })
        .collect()
}

/// The middle 95% of `numerator`'s p99 ÷ `denominator`'s over resamples of both; `None` when
/// either is empty.
fn p99_ratio_interval(
    numerator: &LatencyHistogram,
    denominator: &LatencyHistogram,
    seed: u64,
) -> Option<(f64, f64)> {
    let top = numerator.resampled_quantiles(0.99, RESAMPLES, seed);
    let bottom = denominator.resampled_quantiles(0.99, RESAMPLES, seed.wrapping_add(1));
    let mut ratios: Vec<f64> = top
        .iter()
        .zip(&bottom)
        .filter(|(_, b)| **b > 0)
        .map(|(t, b)| *t as f64 / *b as f64)
        .collect();
    if ratios.is_empty() {
        return None;
    }
    ratios.sort_by(f64::total_cmp);
    let at = |q: f64| ratios[((q * ratios.len() as f64) as usize).min(ratios.len() - 1)];
    Some((at(0.025), at(0.975)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::workload::WorkloadArgs;

    fn summary(p50: f64, p99: f64) -> LatencySummary {
        LatencySummary {
            p50,
            p90: p50,
            p99,
            max: p99,
            mean: p50,
        }
    }

    fn row(region: &str, requests: u64, p50: f64) -> RegionReport {
        RegionReport {
            region: region.into(),
            client_addr: "127.1.200.1".into(),
            edges: vec!["us-1".into()],
            requests,
            requests_per_second: requests as f64 / 2.0,
            bytes: 0,
            errors: 0,
            error_kinds: Vec::new(),
            hits: requests / 2,
            shield_hits: 0,
            origin_fetches: requests / 10,
            hit_ratio: Some(0.5),
            origin_fetches_per_request: Some(0.1),
            latency_ms: Some(summary(p50, p50 * 10.0)),
            hit_latency_ms: None,
            miss_latency_ms: None,
            cdf: Vec::new(),
            latency: LatencyHistogram::default(),
            silent_edges: Vec::new(),
            failure: None,
            timeline: Vec::new(),
            phases: Vec::new(),
            moved_away: Vec::new(),
            slowest: Vec::new(),
        }
    }

    fn report(label: &str, p50: f64, origin: f64) -> RunReport {
        RunReport {
            label: label.into(),
            setup: "demo".into(),
            workload: WorkloadArgs::default().validate().unwrap(),
            measured_seconds: 2.0,
            interrupted: false,
            regions: vec![row("us", 100, p50)],
            total: row("all", 100, p50),
            regions_equal_ms: Some(summary(p50, p50 * 10.0)),
            origin: Some(OriginReport {
                requests: (origin * 100.0) as u64,
                per_client_request: Some(origin),
                source: CountSource::OriginStats,
            }),
            purges: PurgeReport {
                submitted: 0,
                completed: 0,
                failed: 0,
                to_everywhere_ms: None,
                failure_example: None,
            },
            faults: Vec::new(),
        }
    }

    #[test]
    fn milliseconds_keep_three_significant_figures_or_so() {
        assert_eq!(ms(0.4567), "0.46");
        assert_eq!(ms(12.345), "12.3");
        assert_eq!(ms(161.7), "162");
        assert_eq!(percent(Some(0.9344)), "93.4%");
        assert_eq!(percent(None), "-");
    }

    #[test]
    fn the_table_has_a_row_per_region_and_a_total() {
        let text = markdown(&report("configured", 2.5, 0.02));
        let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("| ")).collect();
        assert_eq!(rows.len(), 3, "{text}");
        assert!(
            rows[1].starts_with(
                "| us | us-1 | 100 | 50 | 2.50 | 2.50 | 25.0 | 25.0 | 50.0% | - | - | 0.100 | 0 |"
            ),
            "{}",
            rows[1]
        );
        assert!(rows[2].starts_with("| all |"));
        assert!(text.contains("origin: 2 requests for 100 client requests (0.020 per client request; counted by the origin)"), "{text}");
    }

    fn slow(ms: f64, path: &str) -> SlowRequest {
        SlowRequest {
            ms,
            path: path.into(),
            edge: "us-1".into(),
            bytes: 300 * 1024,
            served_by: "origin",
        }
    }

    #[test]
    fn the_slowest_requests_are_kept_slowest_first_and_shown_per_region() {
        let mut slowest = Slowest::default();
        for (i, ms) in [3.0, 9.0, 1.0, 7.0, 5.0, 8.0, 2.0].into_iter().enumerate() {
            slowest.offer(slow(ms, &format!("/{i}")));
        }
        let kept: Vec<f64> = slowest.requests().iter().map(|r| r.ms).collect();
        assert_eq!(kept, [9.0, 8.0, 7.0, 5.0, 3.0]);
        assert!(!slowest.wants(3.0));
        assert!(slowest.wants(3.5));
        let mut other = Slowest::default();
        other.offer(slow(10.0, "/other"));
        slowest.merge(&other);
        assert_eq!(slowest.requests()[0].path, "/other");
        assert_eq!(slowest.requests().len(), SLOWEST);

        let mut run = report("configured", 2.5, 0.02);
        run.regions[0].slowest = slowest.requests();
        let text = markdown(&run);
        assert!(
            text.contains("us slowest: 10.0 ms /other (300 KiB, origin via us-1); 9.00 ms /1 "),
            "{text}"
        );
    }

    /// A run whose `us` clients saw 400 latencies spread evenly over `from_us..from_us + 4 ms`.
    fn spread_run(label: &str, from_us: u64) -> RunReport {
        let mut run = report(label, 2.0, 0.01);
        let mut latency = LatencyHistogram::default();
        for i in 0..400 {
            latency.record(from_us + i * 10);
        }
        let row = &mut run.regions[0];
        row.latency_ms = latency.summary();
        row.latency = latency;
        run
    }

    #[test]
    fn a_p99_ratio_comes_with_the_range_its_sampling_allows() {
        // The us ratio of a configured run from 2 ms against one without shields from `off_us`.
        let against = |off_us: u64| {
            Comparison::new(
                spread_run("configured", 2_000),
                None,
                Some(spread_run("shields-off", off_us)),
            )
        };
        // Same distribution: the interval holds 1, and is narrow (one run's p99 moves by a few
        // ranks of 400).
        let same = against(2_000);
        let us = &same.ratios.shield_p99_by_region[0];
        let (low, high) = us.interval_95.unwrap();
        assert!(low < 1.0 && 1.0 < high && high - low < 0.05, "{us:?}");
        // 10% slower without shields: the interval is above 1.
        let slower = against(2_600);
        let us = &slower.ratios.shield_p99_by_region[0];
        let (low, high) = us.interval_95.unwrap();
        assert!(
            1.0 < low && low <= us.ratio.unwrap() && us.ratio.unwrap() <= high,
            "{us:?}"
        );
        let text = slower.markdown();
        let words = format!("us ×{:.2} (×{low:.2}–{high:.2})", us.ratio.unwrap());
        assert!(text.contains(&words), "{words} in {text}");
        // Nothing measured in one run: a ratio of nothing has no interval.
        let empty = Comparison::new(
            report("configured", 2.0, 0.0),
            None,
            Some(spread_run("off", 1)),
        );
        assert_eq!(empty.ratios.shield_p99_by_region[0].interval_95, None);
    }

    #[test]
    fn baseline_ratios_divide_the_degraded_run_by_the_configured_one() {
        let c = Comparison::new(
            report("configured", 2.0, 0.01),
            Some(report("geo-off", 100.0, 0.01)),
            Some(report("shields-off", 4.0, 0.05)),
        );
        assert_eq!(c.ratios.geo_p50_latency, Some(50.0));
        assert_eq!(c.ratios.shield_p50_latency, Some(2.0));
        let origin = c.ratios.shield_origin_requests.unwrap();
        assert!((origin - 5.0).abs() < 1e-9);
        let text = c.markdown();
        assert!(
            text.contains("geo steering: without it latency is ×50.00 at p50 and ×50.00 at p99 (p50 by region: us ×50.00)"),
            "{text}"
        );
        assert!(text.contains("the origin gets ×5.00"), "{text}");
        assert!(
            text.contains("| geo-off | demo | 100 | 100 | 1000 | 100 | 1000 | 50.0% | 0.010 |"),
            "{text}"
        );
        let us = &c.ratios.shield_p99_by_region[0];
        assert_eq!((us.region.as_str(), us.ratio), ("us", Some(2.0)));
        assert!(!text.contains("global shield ring"), "{text}");
        let with_global = c.with_global(Some(report("global", 3.0, 0.02)));
        assert_eq!(with_global.runs().count(), 4);
        let us = &with_global.ratios.global_p99_by_region[0];
        assert_eq!((us.region.as_str(), us.ratio), ("us", Some(1.5)));
        assert!((with_global.ratios.global_origin_requests.unwrap() - 2.0).abs() < 1e-9);
        let text = with_global.markdown();
        assert!(
            text.contains("one global shield ring: the origin gets ×2.00 the requests per client request; p99 by region us ×1.50"),
            "{text}"
        );
        let partial = Comparison::new(report("configured", 2.0, 0.0), None, None);
        assert_eq!(partial.ratios.shield_origin_requests, None);
        assert!(partial
            .markdown()
            .contains("latency is - at p50 and - at p99"));
    }
}
