//! Where each purge has been applied: the nodes that were live when it was accepted, and when
//! each acknowledged it. Bounded: the oldest statuses are dropped first.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use verge_config::wire::{NodeRole, PurgeNodeStatus, PurgeSpec, PurgeStatus};
use verge_config::NodeId;

use crate::registry::millis;

struct Track {
    accepted: Instant,
    accepted_at_ms: u64,
    spec: PurgeSpec,
    targets: BTreeMap<NodeId, (NodeRole, Option<Duration>)>,
    completed: Option<Duration>,
}

pub struct Tracker {
    tracks: BTreeMap<u64, Track>,
    order: VecDeque<u64>,
    retain: usize,
}

/// What an acknowledgement achieved, for the metrics.
#[derive(Debug, Default, PartialEq)]
pub struct AckOutcome {
    /// Accepted → applied on this node, one per purge newly applied.
    pub applied_after: Vec<Duration>,
    /// Accepted → applied everywhere, one per purge newly complete.
    pub completed_after: Vec<Duration>,
}

impl Tracker {
    pub fn new(retain: usize) -> Tracker {
        Tracker {
            tracks: BTreeMap::new(),
            order: VecDeque::new(),
            retain: retain.max(1),
        }
    }

    /// Changes how many statuses are kept; the oldest go first if there are now too many.
    pub fn set_retain(&mut self, retain: usize) {
        self.retain = retain.max(1);
        self.trim();
    }

    fn trim(&mut self) {
        while self.order.len() > self.retain {
            if let Some(old) = self.order.pop_front() {
                self.tracks.remove(&old);
            }
        }
    }

    /// Starts tracking purge `seq` over `targets` (node, role, its applied sequence now).
    pub fn insert(
        &mut self,
        seq: u64,
        spec: PurgeSpec,
        accepted_at_ms: u64,
        targets: impl Iterator<Item = (NodeId, NodeRole, u64)>,
        now: Instant,
    ) {
        // A replica may hear of its own purge from its watch before its commit returns.
        if self.tracks.contains_key(&seq) {
            return;
        }
        let targets = targets
            .map(|(id, role, applied)| {
                let done = (applied >= seq).then_some(Duration::ZERO);
                (id, (role, done))
            })
            .collect();
        let mut track = Track {
            accepted: now,
            accepted_at_ms,
            spec,
            targets,
            completed: None,
        };
        if track.targets.values().all(|(_, done)| done.is_some()) {
            track.completed = Some(Duration::ZERO);
        }
        self.tracks.insert(seq, track);
        self.order.push_back(seq);
        self.trim();
    }

    /// Node `id` has applied every purge up to `applied` (it had applied up to `before`).
    /// `is_live` tells which targets still count for completion.
    pub fn ack(
        &mut self,
        id: &NodeId,
        before: u64,
        applied: u64,
        now: Instant,
        is_live: impl Fn(&NodeId) -> bool,
    ) -> AckOutcome {
        let mut outcome = AckOutcome::default();
        if applied <= before {
            return outcome;
        }
        for track in self.tracks.range_mut(before + 1..=applied).map(|(_, t)| t) {
            let elapsed = now.saturating_duration_since(track.accepted);
            if let Some((_, done @ None)) = track.targets.get_mut(id) {
                *done = Some(elapsed);
                outcome.applied_after.push(elapsed);
            }
            if track.completed.is_none() && complete(track, &is_live) {
                track.completed = Some(elapsed);
                outcome.completed_after.push(elapsed);
            }
        }
        outcome
    }

    /// The statuses of the `limit` newest purges still tracked, newest first.
    pub fn recent(&self, limit: usize, is_live: impl Fn(&NodeId) -> bool) -> Vec<PurgeStatus> {
        self.order
            .iter()
            .rev()
            .take(limit)
            .filter_map(|&seq| self.status(seq, &is_live))
            .collect()
    }

    /// The status of purge `seq`, if still tracked.
    pub fn status(&self, seq: u64, is_live: impl Fn(&NodeId) -> bool) -> Option<PurgeStatus> {
        let track = self.tracks.get(&seq)?;
        let nodes = track
            .targets
            .iter()
            .map(|(id, (role, done))| PurgeNodeStatus {
                id: id.clone(),
                role: *role,
                state: match done {
                    Some(_) => "applied",
                    None if is_live(id) => "pending",
                    None => "down",
                }
                .to_string(),
                applied_after_ms: done.map(millis),
            })
            .collect();
        let complete = track.completed.is_some() || complete(track, &is_live);
        let completed_after = track.completed.or_else(|| {
            complete.then(|| {
                track
                    .targets
                    .values()
                    .filter_map(|(_, d)| *d)
                    .max()
                    .unwrap_or_default()
            })
        });
        Some(PurgeStatus {
            id: seq,
            seq,
            spec: track.spec.clone(),
            accepted_at_ms: track.accepted_at_ms,
            complete,
            completed_after_ms: completed_after.map(millis),
            completed_after_us: completed_after
                .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
            nodes,
        })
    }
}

fn complete(track: &Track, is_live: &impl Fn(&NodeId) -> bool) -> bool {
    track
        .targets
        .iter()
        .all(|(id, (_, done))| done.is_some() || !is_live(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    fn spec() -> PurgeSpec {
        PurgeSpec {
            all: true,
            ..PurgeSpec::default()
        }
    }

    /// A tracker holding purge 1, sent to shield s1 and edge e1, and when it was sent.
    fn purge_to_s1_and_e1() -> (Tracker, Instant) {
        let mut tracker = Tracker::new(10);
        let start = Instant::now();
        let targets = [
            (id("s1"), NodeRole::Shield, 0),
            (id("e1"), NodeRole::Edge, 0),
        ];
        tracker.insert(1, spec(), 0, targets.into_iter(), start);
        (tracker, start)
    }

    #[test]
    fn a_purge_completes_when_every_live_target_has_acknowledged() {
        let (mut tracker, start) = purge_to_s1_and_e1();
        let live = |_: &NodeId| true;
        let first = tracker.ack(&id("s1"), 0, 1, start + Duration::from_millis(3), live);
        assert_eq!(first.applied_after, vec![Duration::from_millis(3)]);
        assert!(first.completed_after.is_empty());
        assert!(!tracker.status(1, live).unwrap().complete);
        let second = tracker.ack(&id("e1"), 0, 1, start + Duration::from_millis(7), live);
        assert_eq!(second.completed_after, vec![Duration::from_millis(7)]);
        let status = tracker.status(1, live).unwrap();
        assert!(status.complete);
        assert_eq!(status.completed_after_ms, Some(7));
        // A repeated ack changes nothing.
        assert_eq!(
            tracker.ack(&id("e1"), 1, 1, start + Duration::from_millis(9), live),
            AckOutcome::default()
        );
    }

    #[test]
    fn a_dead_target_does_not_hold_completion_and_shows_as_down() {
        let (mut tracker, start) = purge_to_s1_and_e1();
        let only_s1 = |n: &NodeId| n.as_str() == "s1";
        tracker.ack(&id("s1"), 0, 1, start, only_s1);
        let status = tracker.status(1, only_s1).unwrap();
        assert!(status.complete);
        assert_eq!(status.nodes[0].state, "down");
    }

    #[test]
    fn a_target_already_past_the_purge_counts_as_applied() {
        let mut tracker = Tracker::new(10);
        let targets = [(id("e1"), NodeRole::Edge, 5)];
        tracker.insert(4, spec(), 0, targets.into_iter(), Instant::now());
        assert!(tracker.status(4, |_| true).unwrap().complete);
    }

    #[test]
    fn statuses_are_bounded() {
        let mut tracker = Tracker::new(2);
        for seq in 1..=3 {
            tracker.insert(seq, spec(), 0, std::iter::empty(), Instant::now());
        }
        assert!(tracker.status(1, |_| true).is_none());
        assert!(tracker.status(3, |_| true).is_some());
    }

    #[test]
    fn recent_purges_are_the_newest_first_within_the_limit() {
        let mut tracker = Tracker::new(10);
        let start = Instant::now();
        for seq in 1..=3 {
            let targets = [(id("e1"), NodeRole::Edge, 0)];
            tracker.insert(seq, spec(), 0, targets.into_iter(), start);
        }
        let live = |_: &NodeId| true;
        let seqs: Vec<u64> = tracker.recent(2, live).iter().map(|s| s.seq).collect();
        assert_eq!(seqs, [3, 2]);
        assert_eq!(tracker.recent(10, live).len(), 3);
    }
}
