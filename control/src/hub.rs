//! The push streams: one bounded queue per connected node, fed by [`Hub::publish`], drained by
//! the node's long-lived HTTP response ([`EventStream`]).
//!
//! A node too slow to keep up (its queue full) is disconnected rather than waited for, so it
//! cannot slow the others; it reconnects with `since=SEQ` and catches up from the log.
//!
//! Only the newest routing table matters: a stream skips a queued table once a newer one has
//! been published (the newer one is queued behind it, in its own place among the purges). A
//! fleet connecting at once publishes a table per registration; without this, every node would
//! read every one of them before anything else.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};
use verge_config::wire::{Event, NodeRole};
use verge_config::NodeId;

use crate::metrics::ControlMetrics;

struct Subscriber {
    role: NodeRole,
    conn: u64,
    tx: mpsc::Sender<Queued>,
}

/// One queued line, and the version of the routing table it carries (0: not a table).
pub struct Queued {
    table: u64,
    line: Bytes,
}

/// Subscribers and the watermark of purges released to edges, under one lock so a new stream's
/// replay and the live events it receives neither overlap wrongly nor leave a gap.
pub struct Subscribers {
    subs: HashMap<NodeId, Subscriber>,
    /// Highest purge sequence number published to edges.
    pub edge_released: u64,
}

pub struct Hub {
    inner: Mutex<Subscribers>,
    /// Queue length of streams opened from now on (a reload may change it).
    buffer: AtomicUsize,
    next_conn: AtomicU64,
    /// The version of the newest routing table published.
    latest_table: Arc<AtomicU64>,
    metrics: ControlMetrics,
}

/// One serialised event: a JSON line.
pub fn line(event: &Event) -> Bytes {
    let mut text = serde_json::to_vec(event).unwrap_or_else(|_| b"{}".to_vec());
    text.push(b'\n');
    Bytes::from(text)
}

fn event_type(event: &Event) -> &'static str {
    match event {
        Event::Purge { .. } => "purge",
        Event::Routing { .. } => "routing",
        Event::Resync { .. } => "resync",
        Event::Keepalive { .. } => "keepalive",
    }
}

impl Hub {
    pub fn new(buffer: usize, edge_released: u64, metrics: ControlMetrics) -> Hub {
        Hub {
            inner: Mutex::new(Subscribers {
                subs: HashMap::new(),
                edge_released,
            }),
            buffer: AtomicUsize::new(buffer),
            next_conn: AtomicU64::new(1),
            latest_table: Arc::new(AtomicU64::new(0)),
            metrics,
        }
    }

    /// Sets the queue length of streams opened from now on; open streams keep theirs.
    pub fn set_buffer(&self, buffer: usize) {
        self.buffer.store(buffer, Ordering::Relaxed);
    }

    pub fn lock(&self) -> MutexGuard<'_, Subscribers> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Opens a stream for a node, replacing any stream it had. `initial` runs under the hub's
    /// lock and returns the events the node must get before any live one.
    pub fn subscribe(
        &self,
        id: NodeId,
        role: NodeRole,
        initial: impl FnOnce(&Subscribers) -> Vec<Event>,
    ) -> (u64, Queue, VecDeque<Bytes>) {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.buffer.load(Ordering::Relaxed).max(1));
        let mut guard = self.lock();
        let events = initial(&guard);
        for event in &events {
            self.metrics
                .events_pushed
                .with_label_values(&[event_type(event)])
                .inc();
        }
        let lines = events.iter().map(line).collect();
        guard.subs.insert(id, Subscriber { role, conn, tx });
        let queue = Queue {
            rx,
            latest_table: Arc::clone(&self.latest_table),
        };
        (conn, queue, lines)
    }

    /// Removes a node's stream if it is still the one numbered `conn`. Returns whether the node
    /// is now without a stream: false only when a newer stream replaced this one (a stream
    /// already dropped as too slow leaves the node without one).
    pub fn unsubscribe(&self, id: &NodeId, conn: u64) -> bool {
        let mut guard = self.lock();
        match guard.subs.get(id) {
            Some(s) if s.conn == conn => {
                guard.subs.remove(id);
                true
            }
            Some(_) => false,
            None => true,
        }
    }

    /// Closes every stream (their nodes reconnect, to another replica if they know one).
    pub fn disconnect_all(&self, reason: &'static str) {
        let mut guard = self.lock();
        let n = guard.subs.len();
        guard.subs.clear();
        if n > 0 {
            self.metrics
                .stream_drops
                .with_label_values(&[reason])
                .inc_by(n as u64);
        }
    }

    pub fn is_connected(&self, id: &NodeId) -> bool {
        self.lock().subs.contains_key(id)
    }

    /// Queues events for the nodes of `role` (all nodes for `None`), under the held lock.
    /// A node whose queue is full is disconnected.
    pub fn publish_locked(
        &self,
        guard: &mut Subscribers,
        role: Option<NodeRole>,
        events: &[Event],
    ) {
        if events.is_empty() {
            return;
        }
        let lines: Vec<Bytes> = events.iter().map(line).collect();
        let tables: Vec<u64> = events
            .iter()
            .map(|event| match event {
                Event::Routing { table, .. } => table.version,
                _ => 0,
            })
            .collect();
        if let Some(newest) = tables.iter().max() {
            self.latest_table.fetch_max(*newest, Ordering::Relaxed);
        }
        let mut slow = Vec::new();
        for (id, sub) in &guard.subs {
            if role.is_some_and(|r| r != sub.role) {
                continue;
            }
            for ((event, line), table) in events.iter().zip(&lines).zip(&tables) {
                let queued = Queued {
                    table: *table,
                    line: line.clone(),
                };
                match sub.tx.try_send(queued) {
                    Ok(()) => self
                        .metrics
                        .events_pushed
                        .with_label_values(&[event_type(event)])
                        .inc(),
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        slow.push(id.clone());
                        break;
                    }
                    // The stream is gone; its body's drop removes it.
                    Err(mpsc::error::TrySendError::Closed(_)) => break,
                }
            }
        }
        for id in slow {
            tracing::warn!(node = %id, "node too far behind on its event stream; disconnecting it");
            self.metrics.stream_drops.with_label_values(&["slow"]).inc();
            guard.subs.remove(&id);
        }
    }

    pub fn publish(&self, role: Option<NodeRole>, events: &[Event]) {
        let mut guard = self.lock();
        self.publish_locked(&mut guard, role, events);
    }
}

/// A node's event stream as an HTTP response body: the initial events, then live ones, with a
/// keepalive line whenever it has been quiet for the keepalive period. Ends when control drops
/// the node (too slow, replaced by a newer stream) or shuts down.
/// A stream's queue of live events, and what tells a superseded table.
pub struct Queue {
    rx: mpsc::Receiver<Queued>,
    latest_table: Arc<AtomicU64>,
}

pub struct EventStream {
    initial: VecDeque<Bytes>,
    rx: Queue,
    keepalive: Pin<Box<Sleep>>,
    period: Duration,
    head: Arc<AtomicU64>,
    on_close: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl EventStream {
    pub fn new(
        initial: VecDeque<Bytes>,
        rx: Queue,
        period: Duration,
        head: Arc<AtomicU64>,
        on_close: Box<dyn FnOnce() + Send + Sync>,
    ) -> EventStream {
        EventStream {
            initial,
            rx,
            keepalive: Box::pin(tokio::time::sleep(period)),
            period,
            head,
            on_close: Some(on_close),
        }
    }
}

impl Body for EventStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if let Some(first) = this.initial.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        loop {
            match this.rx.rx.poll_recv(cx) {
                Poll::Ready(Some(queued)) => {
                    let latest = this.rx.latest_table.load(Ordering::Relaxed);
                    if queued.table != 0 && queued.table < latest {
                        // A newer table is queued behind this one.
                        continue;
                    }
                    let next = Instant::now() + this.period;
                    this.keepalive.as_mut().reset(next);
                    return Poll::Ready(Some(Ok(Frame::data(queued.line))));
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => break,
            }
        }
        if this.keepalive.as_mut().poll(cx).is_ready() {
            let next = Instant::now() + this.period;
            this.keepalive.as_mut().reset(next);
            let seq = this.head.load(Ordering::Relaxed);
            return Poll::Ready(Some(Ok(Frame::data(line(&Event::Keepalive { seq })))));
        }
        Poll::Pending
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        if let Some(on_close) = self.on_close.take() {
            on_close();
        }
    }
}

#[cfg(test)]
pub(crate) mod properties;

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use verge_config::wire::{PurgeSpec, RoutingTable};

    fn table(version: u64) -> Event {
        Event::Routing {
            seq: 0,
            table: RoutingTable {
                version,
                ..RoutingTable::default()
            },
        }
    }

    #[tokio::test]
    async fn a_stream_skips_the_tables_a_newer_one_follows_and_keeps_every_purge() {
        let hub = Hub::new(64, 0, ControlMetrics::new().unwrap());
        let id = NodeId::new("n1").unwrap();
        let (_, queue, initial) = hub.subscribe(id, NodeRole::Edge, |_| Vec::new());
        let purge = Event::Purge {
            seq: 1,
            spec: PurgeSpec {
                all: true,
                ..PurgeSpec::default()
            },
        };
        hub.publish(None, &[table(1)]);
        hub.publish(None, &[table(2), purge.clone()]);
        hub.publish(None, &[table(3)]);
        let mut stream = EventStream::new(
            initial,
            queue,
            Duration::from_secs(60),
            Arc::new(AtomicU64::new(0)),
            Box::new(|| {}),
        );
        let mut read = Vec::new();
        for _ in 0..2 {
            let frame = stream.frame().await.unwrap().unwrap();
            let data = frame.into_data().unwrap();
            read.push(serde_json::from_slice::<Event>(&data).unwrap());
        }
        // Tables 1 and 2 are skipped; the purge keeps its place before table 3.
        assert_eq!(read, [purge, table(3)]);
    }
}
