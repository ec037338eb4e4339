//! Applying `--fault` during a run: who kills and restores parts ([`FaultTarget`], the
//! in-process [`Demo`]), the task that applies the plan at its times, and which parts are down
//! at a given moment (so the run can tell when clients stopped sending to a killed edge).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::fault::{Fault, FaultAction, FaultPlan};
use super::report::FaultEvent;
use crate::cluster::Demo;

/// A boxed future borrowing its target.
pub type Applying<'s> = Pin<Box<dyn Future<Output = Vec<Result<(), String>>> + Send + 's>>;

/// Who applies a run's faults: kills or restores parts by name, several at once (faults due
/// at the same time, all of one action). One result per fault, in order.
pub trait FaultTarget: Send {
    fn apply<'s>(&'s mut self, action: FaultAction, parts: &'s [&'s str]) -> Applying<'s>;
}

impl FaultTarget for Demo {
    fn apply<'s>(&'s mut self, action: FaultAction, parts: &'s [&'s str]) -> Applying<'s> {
        Box::pin(async move {
            match action {
                FaultAction::Kill => self.kill_all(parts).await,
                FaultAction::Restore => {
                    let mut results = Vec::new();
                    for part in parts {
                        results.push(self.restore(part).await);
                    }
                    results
                }
            }
        })
    }
}

/// Faults to apply during a run, and to what.
pub struct FaultRun<'a> {
    pub plan: FaultPlan,
    pub target: &'a mut dyn FaultTarget,
}

/// The parts down now, each with when its kill began (from the start of the measured part).
#[derive(Default)]
pub struct Down {
    since: Mutex<BTreeMap<String, Duration>>,
}

impl Down {
    /// Since when `part` has been down, if it is.
    pub fn since(&self, part: &str) -> Option<Duration> {
        self.since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(part)
            .copied()
    }

    fn set(&self, part: &str, since: Option<Duration>) {
        let mut down = self.since.lock().unwrap_or_else(PoisonError::into_inner);
        match since {
            Some(at) => down.insert(part.to_string(), at),
            None => down.remove(part),
        };
    }
}

/// Applies `plan` at its times from `measure_from`: consecutive faults due at the same time
/// with the same action go together (kills drain at once). Each is noted in `events` as it
/// completes, so a run that ends first keeps those applied; `down` follows the kills.
pub async fn drive(
    plan: FaultPlan,
    target: &mut dyn FaultTarget,
    measure_from: Instant,
    events: &Mutex<Vec<FaultEvent>>,
    down: &Down,
) {
    let mut rest: &[Fault] = &plan.faults;
    while let Some(first) = rest.first() {
        let n = rest
            .iter()
            .take_while(|f| f.at == first.at && f.action == first.action)
            .count();
        let (batch, later) = rest.split_at(n);
        rest = later;
        tokio::time::sleep_until(measure_from + first.at).await;
        let started = Instant::now();
        let at = started - measure_from;
        if first.action == FaultAction::Kill {
            for fault in batch {
                down.set(&fault.part, Some(at));
            }
        }
        let parts: Vec<&str> = batch.iter().map(|f| f.part.as_str()).collect();
        let results = target.apply(first.action, &parts).await;
        let took_ms = started.elapsed().as_secs_f64() * 1000.0;
        for (fault, result) in batch.iter().zip(results) {
            let error = result.err();
            if let Some(error) = &error {
                eprintln!(
                    "verge bench: {} of {} failed: {error}",
                    fault.action.as_str(),
                    fault.part
                );
            } else if fault.action == FaultAction::Restore {
                down.set(&fault.part, None);
            }
            events
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(FaultEvent {
                    action: fault.action,
                    part: fault.part.clone(),
                    planned_s: fault.at.as_secs_f64(),
                    at_s: at.as_secs_f64(),
                    took_ms,
                    error,
                });
        }
    }
}
