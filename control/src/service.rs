//! The control service: shared state, its background tasks (health rounds, purge dispatch) and
//! the operations the two HTTP APIs call.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::sync::{mpsc, watch};
use verge_config::wire::{
    Ack, Event, Heartbeat, NodeRole, PurgeAccepted, PurgeSpec, PurgeStatus, Registered,
    Registration, RoutingTable,
};
use verge_config::{ControlConfig, NodeId};

use crate::hub::{EventStream, Hub};
use crate::log::{PurgeLog, Since};
use crate::metrics::ControlMetrics;
use crate::purges::Tracker;
use crate::registry::{NodeView, Refused, Registry};
use crate::replica::Replica;
use crate::routing;
use crate::session::Sessions;
use crate::store::{Store, StoreError};
use crate::token_bucket::TokenBucket;
use verge_config::tiers::LatencyMatrix;

/// Purges a node may replay on one reconnect; a node further behind must resync.
const MAX_REPLAY: usize = 1_000_000;

/// Shared state of a running control service.
pub struct Control {
    /// The configuration in force; a reload swaps it whole (see [`Control::apply`]).
    config: ArcSwap<ControlConfig>,
    pub metrics: ControlMetrics,
    log: Store,
    /// With `[store] etcd`: this replica's part in the replica set.
    replica: Option<Arc<Replica>>,
    registry: Mutex<Registry>,
    table: Mutex<RoutingTable>,
    /// When this process started, from which `health.settle` counts.
    started: Instant,
    /// The shields a table is held back for now (see [`Control::republish`]); empty: none.
    awaited: Mutex<Vec<NodeId>>,
    /// Every published table, for in-process readers (geo steering).
    tables: watch::Sender<Arc<RoutingTable>>,
    /// The latency matrix the tier plan in force was made from; replaced when the measured
    /// one moves past `tiers.replan_percent`.
    planned: Mutex<LatencyMatrix>,
    hub: Hub,
    tracker: Mutex<Tracker>,
    /// Bumped on every acknowledgement, so the dispatcher can wait for shields.
    acks: watch::Sender<u64>,
    dispatch: mpsc::Sender<u64>,
    /// The log's head, for keepalive events.
    head: Arc<AtomicU64>,
    limiter: Mutex<TokenBucket>,
    /// Browser sessions on the status page.
    pub sessions: Sessions,
    /// The dispatcher and the health rounds, awaited by [`Control::stopped`].
    background: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// Why a purge was not accepted.
#[derive(Debug)]
pub enum PurgeRefused {
    Invalid(String),
    Store(StoreError),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Control {
    /// Opens the purge log and starts the background tasks (they stop when the returned
    /// `Arc` and every clone are dropped, or on `shutdown`).
    pub async fn start(
        config: ControlConfig,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Arc<Control>, crate::StartError> {
        let metrics = ControlMetrics::new()?;
        let (log, replica) = match &config.store.etcd {
            None => {
                std::fs::create_dir_all(&config.data_dir).map_err(|source| {
                    crate::StartError::DataDir {
                        path: config.data_dir.clone(),
                        source,
                    }
                })?;
                let log = PurgeLog::open(&config.data_dir, config.purge.log_retain).await?;
                (Store::Embedded(log), None)
            }
            Some(etcd) => {
                let (replica, snapshot) = Replica::connect(etcd, config.purge.log_retain, &metrics)
                    .await
                    .map_err(|source| crate::StartError::Etcd {
                        endpoints: etcd.endpoints.join(", "),
                        source,
                    })?;
                let log = Store::Shared(Arc::clone(&replica.log));
                (log, Some((replica, snapshot)))
            }
        };
        let head = log.head();
        metrics
            .log_head
            .set(i64::try_from(head).unwrap_or(i64::MAX));
        let (dispatch, dispatch_rx) = mpsc::channel(4096);
        let (acks, acks_rx) = watch::channel(0);
        let control = Arc::new(Control {
            hub: Hub::new(config.streams.node_buffer, head, metrics.clone()),
            registry: Mutex::new(Registry::new(config.streams.max_nodes)),
            table: Mutex::new(RoutingTable::default()),
            started: Instant::now(),
            awaited: Mutex::new(Vec::new()),
            tables: watch::channel(Arc::new(RoutingTable::default())).0,
            planned: Mutex::new(LatencyMatrix::default()),
            tracker: Mutex::new(Tracker::new(config.purge.status_retain)),
            acks,
            dispatch,
            head: Arc::new(AtomicU64::new(head)),
            limiter: Mutex::new(TokenBucket::new(
                config.purge.rate_per_second,
                config.purge.burst,
            )),
            sessions: Sessions::default(),
            background: Mutex::new(Vec::new()),
            log,
            replica: replica.as_ref().map(|(r, _)| Arc::clone(r)),
            metrics,
            config: ArcSwap::from_pointee(config),
        });
        let mut tasks = Vec::new();
        if let Some((replica, snapshot)) = &replica {
            crate::replica::take_snapshot(&control, replica, snapshot);
            tasks = crate::replica::spawn(&control, replica, snapshot.revision, shutdown.clone());
        }
        control.republish();
        let dispatcher = tokio::spawn(dispatcher(
            Arc::downgrade(&control),
            dispatch_rx,
            acks_rx,
            head,
            shutdown.clone(),
        ));
        let health = tokio::spawn(health_rounds(Arc::downgrade(&control), shutdown));
        lock(&control.background).extend([dispatcher, health]);
        lock(&control.background).extend(tasks);
        Ok(control)
    }

    /// Waits until the background tasks have ended, as they do on `shutdown`: from then on only
    /// the holders of the `Arc` keep this state (and its data directory) open.
    pub async fn stopped(&self) {
        let tasks = std::mem::take(&mut *lock(&self.background));
        for task in tasks {
            let _ = task.await;
        }
    }

    /// The configuration in force. Read it once per request or round: a reload may swap it.
    pub fn config(&self) -> Arc<ControlConfig> {
        self.config.load_full()
    }

    /// Puts a new configuration in force, as one step: the admin token and purge limits for
    /// the next request, health settings for the next round, stream settings for new streams,
    /// and a new routing table if the regions' fallbacks change the routes. Settings fixed at
    /// start (listeners, data directory, the log's retention) are the caller's to refuse.
    pub(crate) fn apply(&self, new: ControlConfig) {
        let new = Arc::new(new);
        let old = self.config.swap(Arc::clone(&new));
        if (old.purge.rate_per_second, old.purge.burst)
            != (new.purge.rate_per_second, new.purge.burst)
        {
            *lock(&self.limiter) = TokenBucket::new(new.purge.rate_per_second, new.purge.burst);
        }
        if old.purge.status_retain != new.purge.status_retain {
            lock(&self.tracker).set_retain(new.purge.status_retain);
        }
        if old.streams.node_buffer != new.streams.node_buffer {
            self.hub.set_buffer(new.streams.node_buffer);
        }
        if old.streams.max_nodes != new.streams.max_nodes {
            lock(&self.registry).set_max_nodes(new.streams.max_nodes);
        }
        if old.regions != new.regions || old.rules != new.rules || old.tiers != new.tiers {
            self.republish();
        }
    }

    pub fn register(&self, registration: Registration) -> Result<Registered, Refused> {
        self.attached()?;
        let mut registration = registration;
        let upstreams = std::mem::take(&mut registration.upstreams);
        let measured = upstreams.iter().any(|u| u.rtt_ms.is_some());
        let changed = {
            let mut registry = lock(&self.registry);
            let changed = registry.register(registration.clone(), Instant::now())?;
            // The round trips it has measured: the tier plan need not wait for a heartbeat.
            self.count_ignored(&registry.report_upstreams(&registration.id, upstreams)?);
            changed
        };
        tracing::info!(node = %registration.id, role = %registration.role, region = %registration.region, "node registered");
        if let Some(replica) = &self.replica {
            let replica = Arc::clone(replica);
            let registration = registration.clone();
            tokio::spawn(async move { replica.put_node(&registration).await });
        }
        if measured {
            // A node coming back (after a control start, say) brings the round trips it has
            // measured: the plan follows them now rather than from the next probe round, so
            // the first table is not planned from proximity only to move keys again after.
            self.follow_latency();
        }
        if changed {
            self.republish();
        }
        Ok(Registered {
            heartbeat_interval_ms: crate::registry::millis(
                self.config.load().health.heartbeat_interval,
            ),
            head: self.log.head(),
        })
    }

    pub fn heartbeat(&self, beat: Heartbeat) -> Result<(), Refused> {
        let id = beat.id.clone();
        let applied = beat.applied_seq;
        let before = {
            let mut registry = lock(&self.registry);
            let before = registry.get(&id).map(|n| n.applied_seq);
            self.count_ignored(&registry.heartbeat(beat, Instant::now())?);
            before.unwrap_or(0)
        };
        self.acknowledged(&id, before, applied);
        Ok(())
    }

    /// Counts latency reports a node sent that were not used, by reason.
    fn count_ignored(&self, ignored: &[crate::latency::Ignored]) {
        for reason in ignored {
            self.metrics
                .latency_ignored
                .with_label_values(&[reason.as_str()])
                .inc();
        }
    }

    pub fn ack(&self, ack: Ack) -> Result<(), Refused> {
        let (_, before) = lock(&self.registry).ack(&ack.id, ack.applied_seq)?;
        self.acknowledged(&ack.id, before, ack.applied_seq);
        Ok(())
    }

    fn acknowledged(&self, id: &NodeId, before: u64, applied: u64) {
        if applied <= before {
            return;
        }
        if let Some(replica) = &self.replica {
            if self.hub.is_connected(id) {
                replica.report_soon();
            }
        }
        let outcome = {
            let registry = lock(&self.registry);
            lock(&self.tracker).ack(id, before, applied, Instant::now(), |n| registry.is_live(n))
        };
        for d in outcome.applied_after {
            self.metrics.propagation.observe(d.as_secs_f64());
        }
        for d in outcome.completed_after {
            self.metrics.completion.observe(d.as_secs_f64());
        }
        self.acks.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Opens the event stream of node `id`, resuming after `since` (`None`: from the head).
    pub fn stream(
        self: &Arc<Self>,
        id: NodeId,
        since: Option<u64>,
    ) -> Result<EventStream, Refused> {
        self.attached()?;
        let role = {
            let mut registry = lock(&self.registry);
            let node = registry
                .get(&id)
                .ok_or_else(|| Refused::Unknown(id.clone()))?;
            let role = node.registration.role;
            registry.set_connected(&id, true);
            role
        };
        self.metrics.stream_connects.inc();
        // While a table is held back, a node keeps the one it follows: it gets no table
        // (version 0) rather than one without the shields it is waiting for.
        let table = if self.holding() {
            RoutingTable::default()
        } else {
            lock(&self.table).clone()
        };
        let log = &self.log;
        let metrics = &self.metrics;
        let (conn, rx, initial) = self.hub.subscribe(id.clone(), role, |subs| {
            // Edges only get purges the shields have had their chance to apply.
            let released = match role {
                NodeRole::Shield => log.head(),
                NodeRole::Edge => subs.edge_released,
            };
            let mut events = Vec::new();
            let mut seq = released;
            match since {
                None => {}
                Some(after) if after > log.head() => {
                    metrics.resyncs.inc();
                    events.push(Event::Resync {
                        seq: released,
                        reason: format!(
                            "node has applied up to {after} but the log ends at {}",
                            log.head()
                        ),
                    });
                }
                Some(after) => match log.since(after, MAX_REPLAY) {
                    Since::Gone { first_retained } => {
                        metrics.resyncs.inc();
                        events.push(Event::Resync {
                            seq: released,
                            reason: format!(
                                "the log no longer holds purges after {after} (oldest kept: {first_retained})"
                            ),
                        });
                    }
                    Since::Records(records) => {
                        events.extend(records.into_iter().filter(|r| r.seq <= released).map(
                            |r| Event::Purge {
                                seq: r.seq,
                                spec: r.spec,
                            },
                        ));
                        seq = after.max(events.last().map_or(0, Event::seq));
                    }
                },
            }
            events.push(Event::Routing { seq, table });
            events
        });
        let weak = Arc::downgrade(self);
        let on_close = Box::new(move || {
            if let Some(control) = weak.upgrade() {
                if control.hub.unsubscribe(&id, conn) {
                    lock(&control.registry).set_connected(&id, false);
                }
            }
        });
        Ok(EventStream::new(
            initial,
            rx,
            self.config.load().streams.keepalive,
            Arc::clone(&self.head),
            on_close,
        ))
    }

    /// Admits a purge against the rate limit: `Err(retry_after)` when over it.
    pub fn admit_purge(&self) -> Result<(), Duration> {
        lock(&self.limiter).take(Instant::now())
    }

    /// Validates, logs durably, and queues a purge for delivery.
    pub async fn purge(&self, spec: PurgeSpec) -> Result<PurgeAccepted, PurgeRefused> {
        spec.validate().map_err(PurgeRefused::Invalid)?;
        let record = self
            .log
            .append(spec, now_ms())
            .await
            .map_err(PurgeRefused::Store)?;
        let seq = record.seq;
        if let Some(shared) = self.log.shared() {
            // Committed: into the mirror and on its way to the nodes now, unless another
            // replica's purges come first (then the watch brings them all).
            self.new_purges(shared.adopt(vec![record.clone()]));
        }
        // With etcd the mirror may still be behind the commit: the head is what it holds.
        self.head.fetch_max(self.log.head(), Ordering::Relaxed);
        self.metrics
            .log_head
            .set(i64::try_from(self.log.head()).unwrap_or(i64::MAX));
        self.track(&record);
        // The dispatcher reads the log itself; a full queue only delays the wake-up.
        let _ = self.dispatch.try_send(seq);
        Ok(PurgeAccepted { id: seq, seq })
    }

    /// The newest purges still tracked (at most `limit`), newest first.
    pub fn recent_purges(&self, limit: usize) -> Vec<PurgeStatus> {
        let registry = lock(&self.registry);
        lock(&self.tracker).recent(limit, |n| registry.is_live(n))
    }

    pub fn purge_status(&self, seq: u64) -> Option<PurgeStatus> {
        let registry = lock(&self.registry);
        let tracked = lock(&self.tracker).status(seq, |n| registry.is_live(n));
        tracked.or_else(|| {
            // Accepted before a restart: what the nodes' applied sequences say.
            let record = self.log.get(seq)?;
            let nodes: Vec<_> = registry
                .entries()
                .map(|e| {
                    let applied = registry.get(&e.id).is_some_and(|n| n.applied_seq >= seq);
                    verge_config::wire::PurgeNodeStatus {
                        state: if applied {
                            "applied"
                        } else if e.healthy {
                            "pending"
                        } else {
                            "down"
                        }
                        .to_string(),
                        id: e.id,
                        role: e.role,
                        applied_after_ms: None,
                    }
                })
                .collect();
            Some(PurgeStatus {
                id: seq,
                seq,
                complete: nodes.iter().all(|n| n.state != "pending"),
                spec: record.spec,
                accepted_at_ms: record.accepted_at_ms,
                completed_after_ms: None,
                completed_after_us: None,
                nodes,
            })
        })
    }

    pub fn nodes(&self) -> Vec<NodeView> {
        lock(&self.registry).views(Instant::now())
    }

    pub fn routing(&self) -> RoutingTable {
        lock(&self.table).clone()
    }

    /// The routing table in force, updated on every new version.
    pub fn tables(&self) -> watch::Receiver<Arc<RoutingTable>> {
        self.tables.subscribe()
    }

    pub fn log_head(&self) -> u64 {
        self.log.head()
    }

    /// Recomputes the routing table; publishes a new version to every node if routes changed.
    ///
    /// For `health.settle` after control starts, a table is held back while registered nodes
    /// route through shields that have not registered again: after a restart the edges come
    /// back before (or without) their shields, and a table without those shields would send
    /// every miss to the origin for a moment.
    pub(crate) fn republish(&self) {
        let fresh = {
            let registry = lock(&self.registry);
            for (role, state, n) in registry.counts() {
                self.metrics
                    .nodes
                    .with_label_values(&[&role.to_string(), state])
                    .set(n);
            }
            if !self.may_publish(&registry) {
                return;
            }
            let config = self.config.load();
            let latency = lock(&self.planned);
            routing::compute(
                registry.entries(),
                &routing::Inputs {
                    proximity: &config.regions,
                    rules: &config.rules,
                    tiers: &config.tiers,
                    latency: &latency,
                },
            )
        };
        let mut table = lock(&self.table);
        if table.version > 0 && routing::same_routes(&table, &fresh) {
            return;
        }
        let version = table.version + 1;
        if let Some(replica) = &self.replica {
            // Replicas put in force only the tables they read from etcd; the leader writes them.
            if replica.is_leader() {
                replica.want_table(RoutingTable { version, ..fresh });
            }
            return;
        }
        *table = RoutingTable { version, ..fresh };
        self.in_force(table);
    }

    /// Whether a table may be published now; else records (and logs, once per change) the
    /// shields it is held back for.
    fn may_publish(&self, registry: &Registry) -> bool {
        let settle = self.config.load().health.settle;
        let awaited = if self.started.elapsed() < settle {
            registry.awaited_shields()
        } else {
            Vec::new()
        };
        let mut held = lock(&self.awaited);
        if *held != awaited {
            if awaited.is_empty() {
                tracing::info!("routing table released: the shields nodes route through are back, or health.settle has passed");
            } else {
                let names: Vec<&str> = awaited.iter().map(NodeId::as_str).collect();
                tracing::info!(
                    awaiting = %names.join(", "),
                    settle_left_ms = settle.saturating_sub(self.started.elapsed()).as_millis(),
                    "routing table held back: nodes route through shields that have not registered since control started"
                );
            }
            self.metrics
                .awaited_shields
                .set(i64::try_from(awaited.len()).unwrap_or(i64::MAX));
            *held = awaited;
        }
        held.is_empty()
    }

    /// Whether a routing table is held back for shields to register (see
    /// [`Control::republish`]).
    pub fn holding(&self) -> bool {
        !lock(&self.awaited).is_empty()
    }

    /// The shields a routing table is held back for now.
    pub fn awaited_shields(&self) -> Vec<NodeId> {
        lock(&self.awaited).clone()
    }

    /// Puts a table written by the leader replica in force, unless a newer one already is.
    pub(crate) fn adopt_table(&self, new: RoutingTable) {
        let mut table = lock(&self.table);
        if new.version <= table.version {
            return;
        }
        *table = new;
        self.in_force(table);
    }

    /// Publishes the table just put in `table` to every node and in-process reader.
    fn in_force(&self, table: MutexGuard<'_, RoutingTable>) {
        let version = table.version;
        self.metrics
            .table_version
            .set(i64::try_from(version).unwrap_or(i64::MAX));
        tracing::info!(
            version,
            shields = table.healthy_shields().count(),
            "routing table published"
        );
        let event = Event::Routing {
            seq: self.log.head(),
            table: table.clone(),
        };
        let snapshot = Arc::new(table.clone());
        drop(table);
        self.tables.send_replace(snapshot);
        self.hub.publish(None, &[event]);
    }

    /// Takes in the measured latency: exported as metrics, and the tier plan recomputed when it
    /// moved past `tiers.replan_percent` from the one planned with (damped: once per probe
    /// round, and small moves never count).
    fn follow_latency(&self) {
        let measured = lock(&self.registry).latency_matrix();
        self.metrics.show_latency(&measured);
        let percent = self.config.load().tiers.replan_percent;
        {
            let mut planned = lock(&self.planned);
            if !planned.differs(&measured, percent) {
                return;
            }
            *planned = measured;
        }
        self.metrics.replans.inc();
        self.republish();
    }

    /// The latency matrix in force: what the tier plan was made from.
    pub fn planned_latency(&self) -> LatencyMatrix {
        lock(&self.planned).clone()
    }

    /// Purges this replica's watch delivered (with etcd): tracked and dispatched to its nodes.
    pub(crate) fn new_purges(&self, records: Vec<crate::log::LogRecord>) {
        let Some(last) = records.last().map(|r| r.seq) else {
            return;
        };
        self.head.fetch_max(last, Ordering::Relaxed);
        self.metrics
            .log_head
            .set(i64::try_from(self.log.head()).unwrap_or(i64::MAX));
        for record in records {
            self.track(&record);
        }
        let _ = self.dispatch.try_send(last);
    }

    /// Starts tracking where a purge has been applied, over the healthy nodes.
    fn track(&self, record: &crate::log::LogRecord) {
        let registry = lock(&self.registry);
        let targets: Vec<_> = registry
            .entries()
            .filter(|e| e.healthy)
            .map(|e| {
                let applied = registry.get(&e.id).map_or(0, |n| n.applied_seq);
                (e.id, e.role, applied)
            })
            .collect();
        lock(&self.tracker).insert(
            record.seq,
            record.spec.clone(),
            record.accepted_at_ms,
            targets.into_iter(),
            Instant::now(),
        );
    }

    /// A node registered at another replica.
    pub(crate) fn remote_registration(&self, registration: Registration) {
        if self.hub.is_connected(&registration.id) {
            return;
        }
        let changed = {
            let mut registry = lock(&self.registry);
            if registry
                .get(&registration.id)
                .is_some_and(|n| n.registration == registration)
            {
                return;
            }
            registry.register(registration, Instant::now())
        };
        match changed {
            Ok(true) => self.republish(),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "node registered at another replica not taken in"),
        }
    }

    /// A node's registration vanished from etcd (its replica stopped, or forgot it).
    pub(crate) fn remote_gone(&self, id: &NodeId) {
        if self.hub.is_connected(id) {
            // Ours now: it was written again under this replica's lease.
            return;
        }
        if lock(&self.registry).forget(id) {
            tracing::info!(node = %id, "node's registration gone from etcd");
            self.republish();
        }
    }

    /// The latest heartbeats of the nodes connected to another replica, taken in as if they
    /// had been sent here.
    pub(crate) fn remote_beats(&self, beats: Vec<Heartbeat>) {
        for beat in beats {
            if self.hub.is_connected(&beat.id) {
                continue;
            }
            let id = beat.id.clone();
            let applied = beat.applied_seq;
            let before = {
                let mut registry = lock(&self.registry);
                let Some(before) = registry.get(&id).map(|n| n.applied_seq) else {
                    continue;
                };
                if registry.heartbeat(beat, Instant::now()).is_err() {
                    continue;
                }
                before
            };
            self.acknowledged(&id, before, applied);
        }
    }

    /// The purges applied by the nodes connected to another replica, as that replica reported
    /// them.
    pub(crate) fn remote_acks(&self, acks: std::collections::BTreeMap<NodeId, u64>) {
        for (id, applied) in acks {
            if self.hub.is_connected(&id) {
                continue;
            }
            let Ok((_, before)) = lock(&self.registry).ack(&id, applied) else {
                continue;
            };
            self.acknowledged(&id, before, applied);
        }
    }

    /// The purges applied by the nodes connected to this replica.
    pub(crate) fn local_acks(&self) -> std::collections::BTreeMap<NodeId, u64> {
        let registry = lock(&self.registry);
        registry
            .ids()
            .into_iter()
            .filter(|id| self.hub.is_connected(id))
            .filter_map(|id| registry.get(&id).map(|n| (id, n.applied_seq)))
            .collect()
    }

    /// The latest heartbeats of the nodes connected to this replica.
    pub(crate) fn local_beats(&self) -> Vec<Heartbeat> {
        let fresh = self.config.load().health.heartbeat_timeout;
        let registry = lock(&self.registry);
        let now = Instant::now();
        registry
            .ids()
            .into_iter()
            .filter(|id| self.hub.is_connected(id))
            .filter_map(|id| registry.beat_of(&id, now, fresh))
            .collect()
    }

    /// The registrations of the nodes connected to this replica.
    pub(crate) fn local_registrations(&self) -> Vec<Registration> {
        let registry = lock(&self.registry);
        registry
            .ids()
            .into_iter()
            .filter(|id| self.hub.is_connected(id))
            .filter_map(|id| registry.get(&id).map(|n| n.registration.clone()))
            .collect()
    }

    /// With etcd: waits (up to the store's timeout) until this replica's mirror holds purge
    /// `seq`, so that a node which applied it at another replica resumes here instead of being
    /// told to resync because this replica's watch is a few milliseconds behind.
    pub async fn catch_up(&self, seq: u64) {
        let Some(log) = self.log.shared() else {
            return;
        };
        if log.head() >= seq {
            return;
        }
        let mut advanced = log.advanced();
        let _ =
            tokio::time::timeout(log.etcd.timeout, advanced.wait_for(|head| *head >= seq)).await;
    }

    /// With etcd: refuses nodes while this replica holds no lease (it cannot tell them what
    /// the other replicas accept, nor vouch for them in etcd).
    fn attached(&self) -> Result<(), Refused> {
        match &self.replica {
            Some(replica) if !replica.holds_lease() => Err(Refused::Detached),
            _ => Ok(()),
        }
    }

    /// With etcd, when the lease is lost: every node is sent to another replica.
    pub(crate) fn detach_nodes(&self) {
        self.hub.disconnect_all("detached");
    }

    /// With etcd: this replica's view of the replica set.
    pub fn replica(&self) -> Option<crate::replica::ReplicaView> {
        let version = lock(&self.table).version;
        self.replica.as_ref().map(|r| r.view(version))
    }

    /// Whether every live, connected shield has applied purges up to `seq`.
    fn shields_applied(&self, seq: u64) -> bool {
        let registry = lock(&self.registry);
        let live: Vec<(NodeId, u64)> = registry
            .live(NodeRole::Shield)
            .map(|(id, applied)| (id.clone(), applied))
            .collect();
        drop(registry);
        let connected = |id: &NodeId| {
            self.hub.is_connected(id)
                || self
                    .replica
                    .as_ref()
                    .is_some_and(|r| r.connected_elsewhere(id))
        };
        live.iter()
            .all(|(id, applied)| *applied >= seq || !connected(id))
    }
}

/// Delivers purges in log order: to shields as soon as they are in the log, and to edges once
/// the live shields have applied them, or `shield_ack_timeout` after they went to the shields.
/// A purge waiting for the shields never holds back the next one's way to the shields.
async fn dispatcher(
    control: std::sync::Weak<Control>,
    mut queue: mpsc::Receiver<u64>,
    mut acks: watch::Receiver<u64>,
    published: u64,
    mut shutdown: watch::Receiver<bool>,
) {
    // Sent to shields, not yet to edges, oldest first, each with when it goes to edges anyway.
    let mut waiting: std::collections::VecDeque<(Event, tokio::time::Instant)> =
        std::collections::VecDeque::new();
    let mut to_shields = published;
    loop {
        let Some(c) = control.upgrade() else { return };
        let head = c.log.head();
        if head > to_shields {
            let records = match c.log.since(to_shields, MAX_REPLAY) {
                Since::Records(records) => records,
                Since::Gone { .. } => Vec::new(),
            };
            let events: Vec<Event> = records
                .into_iter()
                .filter(|r| r.seq <= head)
                .map(|r| Event::Purge {
                    seq: r.seq,
                    spec: r.spec,
                })
                .collect();
            c.hub.publish(Some(NodeRole::Shield), &events);
            let deadline = tokio::time::Instant::now() + c.config.load().purge.shield_ack_timeout;
            waiting.extend(events.into_iter().map(|event| (event, deadline)));
            to_shields = head;
        }
        let now = tokio::time::Instant::now();
        let mut release = Vec::new();
        while let Some((event, deadline)) = waiting.front() {
            let applied = c.shields_applied(event.seq());
            if !applied && now < *deadline {
                break;
            }
            if !applied {
                tracing::warn!(
                    seq = event.seq(),
                    "shields did not all apply the purge in time; releasing it to edges"
                );
            }
            if let Some((event, _)) = waiting.pop_front() {
                release.push(event);
            }
        }
        if let Some(last) = release.last().map(Event::seq) {
            let mut subs = c.hub.lock();
            subs.edge_released = last;
            c.hub
                .publish_locked(&mut subs, Some(NodeRole::Edge), &release);
        }
        let next_deadline = waiting.front().map(|(_, deadline)| *deadline);
        drop(c);
        tokio::select! {
            seq = queue.recv() => {
                if seq.is_none() {
                    return;
                }
                while queue.try_recv().is_ok() {}
            }
            changed = acks.changed(), if !waiting.is_empty() => if changed.is_err() { return },
            _ = tokio::time::sleep_until(next_deadline.unwrap_or(now)), if next_deadline.is_some() => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Probes every node's `/healthz` each `probe_interval` and feeds the results to the registry.
async fn health_rounds(control: std::sync::Weak<Control>, mut shutdown: watch::Receiver<bool>) {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    loop {
        let Some(c) = control.upgrade() else { return };
        // Read once a round, so a reload takes effect from the next round.
        let health = c.config().health.clone();
        let (interval, timeout) = (health.probe_interval, health.probe_timeout);
        let targets = lock(&c.registry).probe_targets();
        drop(c);
        let mut probes = tokio::task::JoinSet::new();
        for (id, admin) in targets {
            let client = client.clone();
            probes.spawn(async move {
                let ok = match format!("{admin}/healthz").parse::<http::Uri>() {
                    Ok(uri) => matches!(
                        tokio::time::timeout(timeout, client.get(uri)).await,
                        Ok(Ok(response)) if response.status().is_success()
                    ),
                    Err(_) => false,
                };
                (id, ok)
            });
        }
        let mut results = Vec::new();
        let collected = async {
            while let Some(joined) = probes.join_next().await {
                if let Ok(result) = joined {
                    results.push(result);
                }
            }
        };
        tokio::select! {
            () = collected => {}
            _ = shutdown.changed() => return,
        }
        let Some(c) = control.upgrade() else { return };
        let (changed, forgotten) = {
            let mut registry = lock(&c.registry);
            let changed = registry.observe(&results, &health, Instant::now());
            (changed, registry.take_forgotten())
        };
        if let Some(replica) = &c.replica {
            for registration in forgotten {
                let replica = Arc::clone(replica);
                tokio::spawn(async move { replica.forget_node(&registration).await });
            }
        }
        c.follow_latency();
        // A held table is looked at again every round: it is published once its shields are
        // back or `health.settle` has passed.
        if changed || c.holding() {
            c.republish();
        } else {
            for (role, state, n) in lock(&c.registry).counts() {
                c.metrics
                    .nodes
                    .with_label_values(&[&role.to_string(), state])
                    .set(n);
            }
        }
        drop(c);
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
    }
}
