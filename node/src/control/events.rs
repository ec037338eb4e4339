//! What the node does with each line of control's push stream: purges applied in order
//! (duplicates skipped, gaps detected), routing tables handed to the upstream, resyncs.

use std::sync::atomic::Ordering;

use verge_config::wire::{Event, PurgeSpec};

use super::{Shared, StreamEnd};
use crate::admin::apply_purge;
use crate::upstream::Upstream;

/// The label of an event in `verge_control_events_total`.
pub(super) fn event_type(event: &Event) -> &'static str {
    match event {
        Event::Purge { .. } => "purge",
        Event::Routing { .. } => "routing",
        Event::Resync { .. } => "resync",
        Event::Keepalive { .. } => "keepalive",
    }
}

/// Where a purge stands against the highest sequence number applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PurgeOrder {
    /// The next one: apply it.
    Next,
    /// Applied already (a replay after reconnecting): skip it.
    Duplicate,
    /// Purges between were lost: reopen the stream from the last applied one.
    Gap,
}

pub(crate) fn purge_order(applied: u64, seq: u64) -> PurgeOrder {
    if seq <= applied {
        PurgeOrder::Duplicate
    } else if seq == applied + 1 {
        PurgeOrder::Next
    } else {
        PurgeOrder::Gap
    }
}

impl<U: Upstream> Shared<U> {
    /// Applies one line of the push stream. `at_head`: the stream was opened without `since`
    /// and has not yet said where it starts.
    pub(super) fn handle_line(&self, line: &[u8], at_head: &mut bool) -> Result<(), StreamEnd> {
        let event: Event = serde_json::from_slice(line).map_err(|e| {
            self.metrics.events.with_label_values(&["invalid"]).inc();
            let shown = String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned();
            StreamEnd::Garbage(format!("{e}: {shown:?}"))
        })?;
        self.metrics
            .events
            .with_label_values(&[event_type(&event)])
            .inc();
        match event {
            Event::Purge { seq, spec } => {
                self.saw_head(seq);
                let applied = *self.applied.borrow();
                let order = match std::mem::take(at_head) {
                    true if seq > applied => PurgeOrder::Next,
                    _ => purge_order(applied, seq),
                };
                match order {
                    PurgeOrder::Duplicate => {
                        tracing::debug!(seq, applied, "purge already applied; skipped");
                    }
                    PurgeOrder::Gap => return Err(StreamEnd::Gap { applied, seq }),
                    PurgeOrder::Next => {
                        self.purge(seq, &spec);
                        self.applied.send_replace(seq);
                    }
                }
            }
            Event::Routing { seq, table } => {
                self.saw_head(seq);
                if std::mem::take(at_head) {
                    // A node that has just started takes purges up to the head as done: they
                    // came before the objects it has had time to cache.
                    self.applied.send_if_modified(|applied| {
                        let before = *applied;
                        *applied = before.max(seq);
                        *applied != before
                    });
                }
                // Version 0 is no table: control has none to give yet (it is waiting for the
                // shields to register after its start), so the one in force stays.
                let version = table.version;
                if version != 0 && version != self.table_version.load(Ordering::Relaxed) {
                    match self.pipeline.apply_routing(&table) {
                        Ok(()) => {
                            self.table_version.store(version, Ordering::Relaxed);
                            tracing::info!(
                                version,
                                shields = table.healthy_shields().count(),
                                "routing table applied"
                            );
                        }
                        Err(reason) => {
                            tracing::warn!(version, %reason, "routing table refused; keeping the last good one");
                        }
                    }
                }
            }
            Event::Resync { seq, reason } => {
                *at_head = false;
                tracing::warn!(seq, %reason, "control asked for a resync: dropping the whole cache");
                self.purge_everything(false);
                // The log restarts here: what came before no longer counts as the head.
                self.head.store(seq, Ordering::Relaxed);
                self.applied.send_replace(seq);
            }
            Event::Keepalive { seq } => self.saw_head(seq),
        }
        Ok(())
    }

    /// Applies purge `seq`. One that cannot be read (newer control, corrupt log) purges
    /// everything instead: the node cannot prove what it holds is still fresh.
    fn purge(&self, seq: u64, spec: &PurgeSpec) {
        let pipeline = self.pipeline.load();
        let now = pipeline.clock.now();
        match apply_purge(&pipeline.store, &pipeline.metrics, spec, now) {
            Ok(purged) => tracing::info!(seq, purged, soft = spec.soft, "purge applied"),
            Err(reason) => {
                tracing::error!(seq, %reason, "unreadable purge from control; purging everything");
                self.purge_everything(spec.soft);
            }
        }
    }

    fn purge_everything(&self, soft: bool) {
        let pipeline = self.pipeline.load();
        let everything = PurgeSpec {
            all: true,
            soft,
            ..PurgeSpec::default()
        };
        let now = pipeline.clock.now();
        if let Err(reason) = apply_purge(&pipeline.store, &pipeline.metrics, &everything, now) {
            // A purge of everything always validates; nothing else to do if it ever does not.
            tracing::error!(%reason, "cannot purge everything");
        }
    }

    pub(super) fn saw_head(&self, seq: u64) {
        self.head.fetch_max(seq, Ordering::Relaxed);
    }
}
