//! `--fault SPEC`: parts of an in-process demo killed and restored at set times of the measured
//! part of a run. A SPEC is a comma-separated list of `kill:PART@TIME` / `restore:PART@TIME`
//! (PART: a node id, `control` or `origin`; TIME: `3s`, `500ms`, counted from the start of the
//! measured part). The whole plan is checked before anything starts. Pure: no sockets.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// What a fault does to its part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultAction {
    Kill,
    Restore,
}

impl FaultAction {
    pub fn as_str(self) -> &'static str {
        match self {
            FaultAction::Kill => "kill",
            FaultAction::Restore => "restore",
        }
    }
}

/// One planned fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fault {
    pub action: FaultAction,
    pub part: String,
    /// From the start of the measured part.
    #[serde(serialize_with = "seconds")]
    pub at: Duration,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (action, part) = (self.action.as_str(), &self.part);
        if self.at.subsec_nanos() == 0 {
            write!(f, "{action}:{part}@{}s", self.at.as_secs())
        } else {
            write!(f, "{action}:{part}@{}ms", self.at.as_millis())
        }
    }
}

/// The faults of a run, in time order (faults at the same time in the order given).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FaultPlan {
    pub faults: Vec<Fault>,
}

/// Times of the run's phases, from the start of the measured part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhaseBounds {
    /// The first kill: the end of "before".
    pub first_kill: Duration,
    /// The last restore (if any, after the first kill): the start of "after".
    pub last_restore: Option<Duration>,
}

/// The run's phases around its faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Before,
    During,
    After,
}

impl Phase {
    pub const ALL: [Phase; 3] = [Phase::Before, Phase::During, Phase::After];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Before => "before",
            Phase::During => "during",
            Phase::After => "after",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl PhaseBounds {
    /// The phase of a request started `at` into the measured part.
    pub fn phase(&self, at: Duration) -> Phase {
        if at < self.first_kill {
            Phase::Before
        } else if self.last_restore.is_some_and(|r| at >= r) {
            Phase::After
        } else {
            Phase::During
        }
    }
}

impl FaultPlan {
    pub fn is_empty(&self) -> bool {
        self.faults.is_empty()
    }

    /// Before / during / after, when the plan kills anything.
    pub fn phases(&self) -> Option<PhaseBounds> {
        let first_kill = self
            .faults
            .iter()
            .find(|f| f.action == FaultAction::Kill)?
            .at;
        let last_restore = self
            .faults
            .iter()
            .filter(|f| f.action == FaultAction::Restore)
            .map(|f| f.at)
            .max();
        Some(PhaseBounds {
            first_kill,
            last_restore,
        })
    }

    /// When `part` was killed and (if so) restored: `(kill, restore)` pairs.
    pub fn outages(&self, part: &str) -> Vec<(Duration, Option<Duration>)> {
        let mut outages = Vec::new();
        for fault in self.faults.iter().filter(|f| f.part == part) {
            match fault.action {
                FaultAction::Kill => outages.push((fault.at, None)),
                FaultAction::Restore => {
                    if let Some(last) = outages.last_mut() {
                        last.1 = Some(fault.at);
                    }
                }
            }
        }
        outages
    }
}

/// One `ACTION:PART@TIME`.
fn parse_one(text: &str) -> Result<Fault, String> {
    let text = text.trim();
    let (action, rest) = text.split_once(':').ok_or_else(|| {
        format!("--fault {text:?}: expected ACTION:PART@TIME, such as kill:us-1@3s")
    })?;
    let action = match action.trim() {
        "kill" => FaultAction::Kill,
        "restore" => FaultAction::Restore,
        other => {
            return Err(format!(
                "--fault {text:?}: unknown action {other:?} (kill or restore)"
            ))
        }
    };
    let (part, time) = rest
        .rsplit_once('@')
        .ok_or_else(|| format!("--fault {text:?}: no time (add @TIME, such as @3s)"))?;
    let part = part.trim();
    if part.is_empty() {
        return Err(format!("--fault {text:?}: no part named"));
    }
    let at = verge_config::parse_duration(time.trim())
        .map_err(|e| format!("--fault {text:?}: bad time: {e}"))?;
    Ok(Fault {
        action,
        part: part.to_string(),
        at,
    })
}

/// Every `--fault` value checked together against the demo's `parts` and the measured
/// `duration`: the plan, or the first problem, named.
pub fn plan(specs: &[String], parts: &[String], duration: Duration) -> Result<FaultPlan, String> {
    let mut faults = Vec::new();
    for spec in specs {
        for item in spec.split(',') {
            if item.trim().is_empty() {
                return Err(format!("--fault {spec:?}: an empty item"));
            }
            faults.push(parse_one(item)?);
        }
    }
    for fault in &faults {
        if !parts.contains(&fault.part) {
            return Err(format!(
                "--fault {fault}: unknown part {:?}; the demo has {}",
                fault.part,
                parts.join(", ")
            ));
        }
        if fault.at > duration {
            return Err(format!(
                "--fault {fault}: at {:?}, past the end of the {:?} measured",
                fault.at, duration
            ));
        }
    }
    // Stable: faults at the same time keep their order.
    faults.sort_by_key(|f| f.at);
    let mut killed: Vec<&str> = Vec::new();
    for fault in &faults {
        let down = killed.contains(&fault.part.as_str());
        match fault.action {
            FaultAction::Kill if down => {
                return Err(format!(
                    "--fault {fault}: {} is already killed by then",
                    fault.part
                ))
            }
            FaultAction::Kill => killed.push(&fault.part),
            FaultAction::Restore if !down => {
                return Err(format!(
                    "--fault {fault}: restore of {} without an earlier kill",
                    fault.part
                ))
            }
            FaultAction::Restore => killed.retain(|p| *p != fault.part),
        }
    }
    Ok(FaultPlan { faults })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::zipf::XorShift;

    fn parts() -> Vec<String> {
        ["origin", "control", "shield-us-1", "us-1", "eu-1"]
            .into_iter()
            .map(String::from)
            .collect()
    }

    fn check(specs: &[&str]) -> Result<FaultPlan, String> {
        let specs: Vec<String> = specs.iter().map(|s| s.to_string()).collect();
        plan(&specs, &parts(), Duration::from_secs(10))
    }

    #[test]
    fn plans_are_ordered_by_time_and_give_the_phases() {
        let plan = check(&["restore:us-1@8s,kill:us-1@3s", "kill:control@500ms"]).unwrap();
        let shown: Vec<String> = plan.faults.iter().map(|f| f.to_string()).collect();
        assert_eq!(
            shown,
            ["kill:control@500ms", "kill:us-1@3s", "restore:us-1@8s"]
        );
        let phases = plan.phases().unwrap();
        assert_eq!(phases.first_kill, Duration::from_millis(500));
        assert_eq!(phases.last_restore, Some(Duration::from_secs(8)));
        assert_eq!(phases.phase(Duration::from_millis(499)), Phase::Before);
        assert_eq!(phases.phase(Duration::from_secs(5)), Phase::During);
        assert_eq!(phases.phase(Duration::from_secs(8)), Phase::After);
        assert_eq!(
            plan.outages("us-1"),
            [(Duration::from_secs(3), Some(Duration::from_secs(8)))]
        );
        let open = check(&["kill:origin@1s"]).unwrap();
        assert_eq!(
            open.phases().unwrap().phase(Duration::from_secs(9)),
            Phase::During
        );
        assert!(check(&[]).unwrap().phases().is_none());
    }

    #[test]
    fn every_kind_of_bad_plan_is_named() {
        let cases: [(&[&str], &str); 10] = [
            (&["stop:us-1@1s"], "unknown action \"stop\""),
            (&["kill:mars-1@1s"], "unknown part \"mars-1\""),
            (&["kill:us-1@soon"], "bad time"),
            (&["kill:us-1@3"], "missing unit"),
            (&["kill:us-1@11s"], "past the end"),
            (&["restore:us-1@2s"], "without an earlier kill"),
            (
                &["kill:us-1@1s,restore:us-1@3s,restore:us-1@4s"],
                "without an earlier kill",
            ),
            (&["kill:us-1@1s", "kill:us-1@2s"], "already killed"),
            (&["kill:us-1"], "no time"),
            (&["kill:us-1@1s,"], "an empty item"),
        ];
        for (specs, want) in cases {
            let error = check(specs).unwrap_err();
            assert!(error.contains(want), "{specs:?}: {error}");
        }
        assert!(check(&["us-1@1s"])
            .unwrap_err()
            .contains("expected ACTION:PART@TIME"));
        assert!(check(&["kill:@1s"]).unwrap_err().contains("no part"));
        // Killed again after a restore is fine; a restore at the very end too.
        check(&["kill:us-1@1s,restore:us-1@2s,kill:us-1@3s,restore:us-1@10s"]).unwrap();
    }

    // Property: whatever the text, planning answers (a plan or an error), never panics.
    #[test]
    fn arbitrary_specs_never_panic() {
        const PIECES: [&str; 16] = [
            "kill",
            "restore",
            ":",
            "@",
            ",",
            "us-1",
            "control",
            "origin",
            "3s",
            "500ms",
            "1",
            "ms",
            " ",
            "é",
            "\u{0}",
            "9999999999999999h",
        ];
        let mut rng = XorShift::new(0x5eed);
        for _ in 0..20_000 {
            let len = (rng.next_u64() % 12) as usize;
            let mut spec = String::new();
            for _ in 0..len {
                if rng.next_u64() % 5 == 0 {
                    spec.push(char::from_u32((rng.next_u64() % 0x2_0000) as u32).unwrap_or('?'));
                } else {
                    spec.push_str(PIECES[(rng.next_u64() % PIECES.len() as u64) as usize]);
                }
            }
            let _ = check(&[spec.as_str()]);
        }
    }
}
