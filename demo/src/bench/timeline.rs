//! What a run records beside its totals: per second of the measured part (requests, errors,
//! p99) and, with faults, per phase (before, during, after) with errors on objects the region
//! had fetched before apart from the rest, and when its clients last sent to a killed edge.

use std::collections::BTreeMap;
use std::time::Duration;

use super::fault::{Phase, PhaseBounds};
use super::histogram::LatencyHistogram;
use super::report::{FaultEvent, MovedAway, PhaseReport, RegionReport, SecondReport};

/// Seconds of the measured part the timeline covers (memory stays bounded: one histogram per
/// second and region).
const MAX_SECONDS: usize = 900;

#[derive(Default)]
struct Second {
    answered: LatencyHistogram,
    errors: u64,
}

#[derive(Default)]
struct PhaseStats {
    answered: LatencyHistogram,
    errors_on_hits: u64,
    errors_on_misses: u64,
}

/// One measured request, as the timeline files it.
pub struct Measured {
    /// Its start, from the start of the measured part.
    pub at: Duration,
    pub phase: Option<Phase>,
    /// The region had fetched this object successfully before.
    pub known: bool,
}

/// A region's (or all regions') timeline and phases.
#[derive(Default)]
pub struct Timeline {
    seconds: Vec<Second>,
    phases: [PhaseStats; 3],
    /// Per edge: (when its kill began, the latest regular request sent to it since, while it
    /// was down).
    last_sent_while_down: BTreeMap<String, (Duration, Duration)>,
}

impl Timeline {
    /// Files a request; `answered_us` is its latency if it was answered.
    pub fn place(&mut self, request: &Measured, answered_us: Option<u64>) {
        let second = usize::try_from(request.at.as_secs()).unwrap_or(usize::MAX);
        if second < MAX_SECONDS {
            if self.seconds.len() <= second {
                self.seconds.resize_with(second + 1, Second::default);
            }
            let slot = &mut self.seconds[second];
            match answered_us {
                Some(us) => slot.answered.record(us),
                None => slot.errors += 1,
            }
        }
        if let Some(phase) = request.phase {
            let stats = &mut self.phases[phase.index()];
            match answered_us {
                Some(us) => stats.answered.record(us),
                None if request.known => stats.errors_on_hits += 1,
                None => stats.errors_on_misses += 1,
            }
        }
    }

    /// Notes a regular request sent `at` to `edge`, down since `killed`.
    pub fn sent_while_down(&mut self, edge: &str, killed: Duration, at: Duration) {
        let entry = self
            .last_sent_while_down
            .entry(edge.to_string())
            .or_insert((killed, at));
        if entry.0 != killed {
            *entry = (killed, at);
        }
        entry.1 = entry.1.max(at);
    }

    /// Adds `other` in (for the all-regions row).
    pub fn merge(&mut self, other: &Timeline) {
        if self.seconds.len() < other.seconds.len() {
            self.seconds
                .resize_with(other.seconds.len(), Second::default);
        }
        for (mine, theirs) in self.seconds.iter_mut().zip(&other.seconds) {
            mine.answered.merge(&theirs.answered);
            mine.errors += theirs.errors;
        }
        for (mine, theirs) in self.phases.iter_mut().zip(&other.phases) {
            mine.answered.merge(&theirs.answered);
            mine.errors_on_hits += theirs.errors_on_hits;
            mine.errors_on_misses += theirs.errors_on_misses;
        }
    }

    /// Fills `row`'s timeline (every second measured), and with faults its phases and, per
    /// kill of one of its edges, how soon its clients stopped sending to it.
    pub fn report(
        &self,
        row: &mut RegionReport,
        measured: Duration,
        phases: Option<PhaseBounds>,
        faults: &[FaultEvent],
    ) {
        let seconds = usize::try_from(measured.as_secs_f64().ceil() as u64)
            .unwrap_or(usize::MAX)
            .min(MAX_SECONDS);
        row.timeline = (0..seconds.max(self.seconds.len()))
            .map(|second| {
                let slot = self.seconds.get(second);
                SecondReport {
                    second: second as u64,
                    requests: slot.map_or(0, |s| s.answered.count() + s.errors),
                    errors: slot.map_or(0, |s| s.errors),
                    p99_ms: slot.and_then(|s| s.answered.summary()).map(|l| l.p99),
                }
            })
            .collect();
        if phases.is_none() {
            return;
        }
        row.phases = Phase::ALL
            .iter()
            .map(|&phase| {
                let p = &self.phases[phase.index()];
                let summary = p.answered.summary();
                PhaseReport {
                    phase,
                    requests: p.answered.count() + p.errors_on_hits + p.errors_on_misses,
                    errors: p.errors_on_hits + p.errors_on_misses,
                    errors_on_hits: p.errors_on_hits,
                    errors_on_misses: p.errors_on_misses,
                    p50_ms: summary.as_ref().map(|l| l.p50),
                    p99_ms: summary.as_ref().map(|l| l.p99),
                }
            })
            .collect();
        for kill in faults {
            if kill.action != super::fault::FaultAction::Kill
                || kill.error.is_some()
                || !row.edges.contains(&kill.part)
            {
                continue;
            }
            let killed = Duration::from_secs_f64(kill.at_s);
            let last = self
                .last_sent_while_down
                .get(&kill.part)
                .filter(|(since, _)| since.abs_diff(killed) < Duration::from_millis(1))
                .map(|(_, last)| *last);
            row.moved_away.push(MovedAway {
                edge: kill.part.clone(),
                killed_at_s: kill.at_s,
                stopped_after_ms: last.map_or(0.0, |last| {
                    last.saturating_sub(killed).as_secs_f64() * 1000.0
                }),
            });
        }
    }
}
