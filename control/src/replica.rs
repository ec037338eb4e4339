//! A control replica's part in a replica set that shares one etcd cluster (`[store] etcd`).
//!
//! Every replica serves the admin API and node streams. What they share goes through etcd
//! (keys: [`crate::store::keys`]):
//!
//! - **Purges**: committed by whichever replica accepted them ([`crate::store::SharedLog`]);
//!   every replica's watch delivers them to its own nodes.
//! - **Lease**: each replica holds one lease, renewed every third of `store.lease_ttl`. Its
//!   leadership and its nodes' registrations are attached to it, so they vanish when the
//!   replica stops (or is cut off from etcd) for longer than the lease.
//! - **Leader**: the replica that creates `P/leader` (only while it does not exist) writes the
//!   routing tables. Every table write is a transaction that holds only while `P/leader` is
//!   still the one this replica created and `P/table` is still the version it last saw: a
//!   former leader that stalled past its lease cannot publish, and no two tables ever share a
//!   version. Replicas push only tables they read from etcd, so all nodes see the same ones.
//! - **Nodes**: a node registers at one replica, which writes `P/nodes/{id}`. Every heartbeat
//!   interval each replica writes `P/replicas/{name}`: the latest heartbeat of each node
//!   connected to it; and while purges are being applied, every 25 ms at most, `P/acks/{name}`:
//!   just the purge each of its nodes has applied. Others take those in as heartbeats and acks,
//!   so each replica — and the leader's routing — knows every node's health, applied purges and
//!   latency, and `GET /v1/purge/{id}` is complete at any replica.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};
use verge_config::store::EtcdConfig;
use verge_config::wire::{Heartbeat, Registration, RoutingTable};
use verge_config::NodeId;

use crate::metrics::ControlMetrics;
use crate::service::Control;
use crate::store::etcd::{Change, Cmp, Etcd, EtcdError, Op};
use crate::store::keys::{Key, Keys};
use crate::store::shared::{Applied, Snapshot};
use crate::store::SharedLog;

/// Least time between two reports of this replica's nodes.
const REPORT_GAP: Duration = Duration::from_millis(25);
/// How often a replica without the leadership tries for it.
const CAMPAIGN_EVERY: Duration = Duration::from_millis(250);
/// Longest pause before watching again after an error.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// `P/nodes/{id}`.
#[derive(Debug, Serialize, Deserialize)]
struct NodeRecord {
    registration: Registration,
    replica: String,
}

/// `P/replicas/{name}`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Report {
    beats: Vec<Heartbeat>,
}

/// `P/acks/{name}`: node → highest purge applied.
type Acks = std::collections::BTreeMap<NodeId, u64>;

#[derive(Debug, Default)]
struct State {
    /// This replica's lease (0: none held).
    lease: i64,
    /// When the lease was last renewed (or granted).
    renewed: Option<Instant>,
    /// The create revision of `P/leader` while this replica is the leader; 0 otherwise.
    leading: i64,
    /// The leader's name, as last seen.
    leader: Option<String>,
    /// The mod revision of the table in force (0: none yet).
    table_revision: i64,
    /// The nodes each other replica reports connected to it.
    remote: HashMap<String, HashSet<NodeId>>,
}

/// What `GET /v1/replica` shows.
#[derive(Debug, Serialize)]
pub struct ReplicaView {
    pub name: String,
    pub leader: Option<String>,
    pub is_leader: bool,
    pub lease_held: bool,
    pub store_up: bool,
    pub endpoints: Vec<String>,
    pub purge_head: u64,
    pub table_version: u64,
    /// Other replicas, each with how many nodes it reports connected.
    pub peers: Vec<Peer>,
}

/// Another replica, as this one sees it.
#[derive(Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    pub name: String,
    pub nodes: usize,
}

/// First pause between attempts to read the store at start; doubled up to [`MAX_BACKOFF`].
const START_RETRY: Duration = Duration::from_millis(200);

/// Reads the whole store, trying again while etcd does not answer (not started yet, or no
/// quorum yet) for up to `wait`. A refusal or an unreadable answer ends it at once.
async fn load_when_answered(log: &SharedLog, wait: Duration) -> Result<Snapshot, EtcdError> {
    let deadline = Instant::now() + wait;
    let mut pause = START_RETRY;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match log.load().await {
            Err(e @ EtcdError::Timeout { .. }) if !left.is_zero() => {
                let pause_now = pause.min(left);
                tracing::warn!(
                    error = %e,
                    retry_in = ?pause_now,
                    ?left,
                    "etcd does not answer yet; waiting for it (store.start_wait)"
                );
                tokio::time::sleep(pause_now).await;
                pause = (pause * 2).min(MAX_BACKOFF);
            }
            done => return done,
        }
    }
}

/// A replica's shared state; see the module documentation.
pub struct Replica {
    pub name: String,
    pub log: Arc<SharedLog>,
    etcd: Arc<Etcd>,
    keys: Keys,
    lease_ttl: Duration,
    /// `store.history`: the leader compacts etcd's history to the revision it saw this long ago.
    history: Duration,
    state: Mutex<State>,
    /// The table the leader wants written next.
    wanted: watch::Sender<Option<RoutingTable>>,
    /// Woken when this replica's nodes' report should be written.
    report: Notify,
    metrics: ControlMetrics,
}

impl Replica {
    /// Connects to etcd and reads everything under the prefix, waiting up to `store.start_wait`
    /// for etcd to answer. Fails past it, or at once when etcd answers with a refusal: a
    /// replica that cannot read the store has nothing to serve.
    pub async fn connect(
        config: &EtcdConfig,
        retain: usize,
        metrics: &ControlMetrics,
    ) -> Result<(Arc<Replica>, Snapshot), EtcdError> {
        let observed = metrics.clone();
        let observer = Arc::new(move |op: &'static str, took: Duration, ok: bool| {
            observed
                .store_seconds
                .with_label_values(&[op])
                .observe(took.as_secs_f64());
            if !ok {
                observed.store_errors.with_label_values(&[op]).inc();
            }
            observed.store_up.set(i64::from(ok));
        });
        let credentials = config.username.clone().zip(config.password.clone());
        let wants_tls = config.tls != verge_config::ClientTlsConfig::default()
            || config.endpoints.iter().any(|e| e.starts_with("https://"));
        let tls = if wants_tls {
            let tls = verge_serve::tls_client::client_config(&config.tls)
                .map_err(|e| EtcdError::Refused(format!("store.tls.{}: {e}", e.key())))?;
            Some(tls)
        } else {
            None
        };
        let etcd = Arc::new(Etcd::new(
            config.endpoints.clone(),
            config.timeout,
            credentials,
            tls,
            observer,
        ));
        let keys = Keys::new(&config.prefix);
        let log = SharedLog::new(
            Arc::clone(&etcd),
            keys.clone(),
            config.replica.clone(),
            retain,
        );
        let snapshot = load_when_answered(&log, config.start_wait).await?;
        log.reset(&snapshot);
        // Granted now, so that nodes are taken in from the first request.
        let lease = etcd.grant(config.lease_ttl.as_secs()).await?;
        let replica = Arc::new(Replica {
            name: config.replica.clone(),
            log,
            etcd,
            keys,
            lease_ttl: config.lease_ttl,
            history: config.history,
            state: Mutex::new(State {
                lease,
                renewed: Some(Instant::now()),
                ..State::default()
            }),
            wanted: watch::channel(None).0,
            report: Notify::new(),
            metrics: metrics.clone(),
        });
        Ok((replica, snapshot))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn holds_lease(&self) -> bool {
        self.lock().lease != 0
    }

    pub fn is_leader(&self) -> bool {
        self.lock().leading != 0
    }

    /// Whether another replica reports node `id` connected to it.
    pub fn connected_elsewhere(&self, id: &NodeId) -> bool {
        self.lock().remote.values().any(|nodes| nodes.contains(id))
    }

    /// Asks the leader task to write `table` (ignored unless this replica leads).
    pub fn want_table(&self, table: RoutingTable) {
        self.wanted.send_replace(Some(table));
    }

    /// The mod revision of the table in force.
    fn table_revision(&self) -> i64 {
        self.lock().table_revision
    }

    /// Asks for this replica's nodes' report to be written soon.
    pub fn report_soon(&self) {
        self.report.notify_one();
    }

    pub fn view(&self, table_version: u64) -> ReplicaView {
        let state = self.lock();
        let mut peers: Vec<Peer> = state
            .remote
            .iter()
            .map(|(name, nodes)| Peer {
                name: name.clone(),
                nodes: nodes.len(),
            })
            .collect();
        peers.sort();
        ReplicaView {
            name: self.name.clone(),
            leader: state.leader.clone(),
            is_leader: state.leading != 0,
            lease_held: state.lease != 0,
            store_up: self.metrics.store_up.get() == 1,
            endpoints: self.etcd.endpoints().to_vec(),
            purge_head: self.log.head(),
            table_version,
            peers,
        }
    }

    /// Writes a node's registration, attached to this replica's lease.
    pub async fn put_node(&self, registration: &Registration) {
        let lease = self.lock().lease;
        if lease == 0 {
            // Written when the lease is granted again.
            return;
        }
        let record = NodeRecord {
            registration: registration.clone(),
            replica: self.name.clone(),
        };
        let value = serde_json::to_vec(&record).unwrap_or_default();
        let key = self.keys.node(registration.id.as_str());
        if let Err(e) = self.etcd.put(&key, &value, lease).await {
            tracing::warn!(node = %registration.id, error = %e, "cannot write the node's registration to etcd");
        }
    }

    /// Deletes a forgotten node's registration, if this replica wrote it (another replica's
    /// record of the node is that replica's to delete).
    pub async fn forget_node(&self, registration: &Registration) {
        let record = NodeRecord {
            registration: registration.clone(),
            replica: self.name.clone(),
        };
        let value = serde_json::to_vec(&record).unwrap_or_default();
        let key = self.keys.node(registration.id.as_str());
        if let Err(e) = self
            .etcd
            .txn(
                "node_delete",
                &[Cmp::Value(&key, &value)],
                &[Op::Delete(&key)],
                &[],
            )
            .await
        {
            tracing::warn!(node = %registration.id, error = %e, "cannot delete the forgotten node's registration from etcd");
        }
    }

    fn step_down(&self, why: &str) {
        let mut state = self.lock();
        if state.leading != 0 {
            state.leading = 0;
            drop(state);
            tracing::warn!(replica = %self.name, why, "no longer the leader");
            self.metrics.replica_leader.set(0);
            self.metrics.elections.with_label_values(&["lost"]).inc();
        }
    }
}

/// Starts the replica's tasks; they end on `shutdown` or when control is dropped.
pub fn spawn(
    control: &Arc<Control>,
    replica: &Arc<Replica>,
    revision: i64,
    shutdown: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let weak = Arc::downgrade(control);
    vec![
        tokio::spawn(watching(
            weak.clone(),
            Arc::clone(replica),
            revision,
            shutdown.clone(),
        )),
        tokio::spawn(leasing(weak.clone(), Arc::clone(replica), shutdown.clone())),
        tokio::spawn(leading(weak.clone(), Arc::clone(replica), shutdown.clone())),
        tokio::spawn(reporting(weak, Arc::clone(replica), shutdown)),
    ]
}

/// Takes every key of a snapshot in, as if the watch had delivered it.
pub fn take_snapshot(control: &Control, replica: &Replica, snapshot: &Snapshot) {
    let mut tables = Vec::new();
    for kv in &snapshot.kvs {
        match replica.keys.parse(&kv.key) {
            Key::Table => tables.push(kv.clone()),
            Key::Purge(_) | Key::Head | Key::Other => {}
            _ => take_change(control, replica, &Change::Put(kv.clone())),
        }
    }
    for kv in tables {
        take_change(control, replica, &Change::Put(kv));
    }
}

/// Acts on one change of a key under the prefix (not purges: the caller's).
fn take_change(control: &Control, replica: &Replica, change: &Change) {
    let (kv, value) = match change {
        Change::Put(kv) => (kv, Some(kv.value.as_slice())),
        Change::Delete(kv) => (kv, None),
    };
    match replica.keys.parse(&kv.key) {
        Key::Table => {
            let Some(value) = value else { return };
            match serde_json::from_slice::<RoutingTable>(value) {
                Ok(table) => {
                    replica.lock().table_revision = kv.mod_revision;
                    control.adopt_table(table);
                }
                Err(e) => {
                    tracing::error!(error = %e, "unreadable routing table in etcd; keeping the one in force")
                }
            }
        }
        Key::Leader => {
            let leader = value.map(|v| String::from_utf8_lossy(v).into_owned());
            replica.lock().leader = leader;
        }
        Key::Node(id) => {
            let Ok(id) = NodeId::new(&id) else { return };
            match value.map(serde_json::from_slice::<NodeRecord>) {
                Some(Ok(record)) if record.replica != replica.name => {
                    control.remote_registration(record.registration);
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::warn!(node = %id, error = %e, "unreadable node registration in etcd")
                }
                None => control.remote_gone(&id),
            }
        }
        Key::Acks(name) if name != replica.name => {
            if let Some(Ok(acks)) = value.map(serde_json::from_slice::<Acks>) {
                control.remote_acks(acks);
            }
        }
        Key::Replica(name) if name != replica.name => match value {
            Some(value) => match serde_json::from_slice::<Report>(value) {
                Ok(report) => {
                    let ids = report.beats.iter().map(|b| b.id.clone()).collect();
                    replica.lock().remote.insert(name, ids);
                    control.remote_beats(report.beats);
                }
                Err(e) => {
                    tracing::warn!(replica = %name, error = %e, "unreadable replica report in etcd")
                }
            },
            None => {
                replica.lock().remote.remove(&name);
            }
        },
        _ => {}
    }
}

fn backoff(failures: u32) -> Duration {
    let base = Duration::from_millis(50u64 << failures.min(6)).min(MAX_BACKOFF);
    base / 2 + Duration::from_millis(fastrand::u64(..=base.as_millis() as u64 / 2))
}

/// Follows every change under the prefix from `revision` on; watches again after an error,
/// and reloads everything when etcd has compacted past where it was.
async fn watching(
    control: Weak<Control>,
    replica: Arc<Replica>,
    revision: i64,
    mut shutdown: watch::Receiver<bool>,
) {
    let all = replica.keys.all();
    let end = crate::store::etcd::prefix_end(&all);
    let mut next = revision + 1;
    let mut failures = 0u32;
    loop {
        let stream = tokio::select! {
            s = replica.etcd.watch(&all, &end, next) => s,
            _ = shutdown.changed() => return,
        };
        let mut reload = None;
        match stream {
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch etcd; trying again");
                replica
                    .metrics
                    .watch_restarts
                    .with_label_values(&["error"])
                    .inc();
            }
            Ok(mut stream) => loop {
                let batch = tokio::select! {
                    b = stream.next() => b,
                    _ = shutdown.changed() => return,
                };
                let batch = match batch {
                    Ok(Some(batch)) if batch.compacted.is_some() => {
                        reload = Some("compacted");
                        break;
                    }
                    Ok(Some(batch)) if batch.cancelled.is_none() => batch,
                    // Ended, failed, or cancelled for another reason: watch again.
                    _ => {
                        replica
                            .metrics
                            .watch_restarts
                            .with_label_values(&["error"])
                            .inc();
                        break;
                    }
                };
                failures = 0;
                let Some(c) = control.upgrade() else { return };
                for change in &batch.changes {
                    let kv = match change {
                        Change::Put(kv) | Change::Delete(kv) => kv,
                    };
                    next = next.max(kv.mod_revision + 1);
                    let value = match change {
                        Change::Put(kv) => Some(kv.value.as_slice()),
                        Change::Delete(_) => None,
                    };
                    match replica.log.apply(&kv.key, value) {
                        Applied::New(records) => {
                            if let Some(seen) = records.first() {
                                let age =
                                    crate::service::now_ms().saturating_sub(seen.accepted_at_ms);
                                replica.metrics.watch_delay.observe(age as f64 / 1000.0);
                            }
                            c.new_purges(records);
                        }
                        Applied::Gap { head, seq } => {
                            tracing::warn!(
                                head,
                                seq,
                                "purges arrived out of order; reading the store again"
                            );
                            reload = Some("gap");
                        }
                        Applied::Nothing => take_change(&c, &replica, change),
                    }
                }
                if reload.is_some() {
                    break;
                }
            },
        }
        if let Some(reason) = reload {
            replica
                .metrics
                .watch_restarts
                .with_label_values(&[reason])
                .inc();
            match replica.log.load().await {
                Ok(snapshot) => {
                    let fresh = replica.log.reset(&snapshot);
                    if let Some(c) = control.upgrade() {
                        c.new_purges(fresh);
                        take_snapshot(&c, &replica, &snapshot);
                    }
                    next = snapshot.revision + 1;
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the store again"),
            }
        }
        failures = failures.saturating_add(1);
        tokio::select! {
            _ = tokio::time::sleep(backoff(failures)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Holds this replica's lease: grants it, renews it every third of its time to live, and
/// grants a new one (writing this replica's registrations again) when it is lost.
async fn leasing(
    control: Weak<Control>,
    replica: Arc<Replica>,
    mut shutdown: watch::Receiver<bool>,
) {
    let ttl = replica.lease_ttl;
    let mut failures = 0u32;
    loop {
        let lease = replica.lock().lease;
        let pause = if lease == 0 {
            match replica.etcd.grant(ttl.as_secs()).await {
                Ok(id) => {
                    {
                        let mut state = replica.lock();
                        state.lease = id;
                        state.renewed = Some(Instant::now());
                    }
                    failures = 0;
                    tracing::info!(replica = %replica.name, lease = id, "etcd lease granted");
                    // Registrations and the report are attached to the lease: write them again.
                    if let Some(c) = control.upgrade() {
                        for registration in c.local_registrations() {
                            replica.put_node(&registration).await;
                        }
                    }
                    replica.report_soon();
                    ttl / 3
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %e, "cannot get an etcd lease");
                    backoff(failures)
                }
            }
        } else {
            match replica.etcd.keep_alive(lease).await {
                Ok(left) if left > 0 => {
                    replica.lock().renewed = Some(Instant::now());
                    replica
                        .metrics
                        .lease_renewals
                        .with_label_values(&["ok"])
                        .inc();
                    ttl / 3
                }
                Ok(_) => {
                    replica
                        .metrics
                        .lease_renewals
                        .with_label_values(&["expired"])
                        .inc();
                    tracing::warn!(replica = %replica.name, "etcd lease expired; getting another");
                    replica.lock().lease = 0;
                    replica.step_down("its lease expired");
                    if let Some(c) = control.upgrade() {
                        c.detach_nodes();
                    }
                    Duration::ZERO
                }
                Err(e) => {
                    replica
                        .metrics
                        .lease_renewals
                        .with_label_values(&["failed"])
                        .inc();
                    let renewed = replica.lock().renewed;
                    if renewed.is_none_or(|at| at.elapsed() >= ttl) {
                        tracing::warn!(error = %e, "etcd lease not renewed within its time to live; taking it as lost");
                        replica.lock().lease = 0;
                        replica.step_down("its lease could not be renewed");
                        if let Some(c) = control.upgrade() {
                            c.detach_nodes();
                        }
                    }
                    Duration::from_millis(200)
                }
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.changed() => {
                let lease = replica.lock().lease;
                if lease != 0 {
                    // Hand over at once rather than after the lease runs out.
                    let _ = replica.etcd.revoke(lease).await;
                }
                return;
            }
        }
    }
}

/// Campaigns for the leadership while another replica does not hold it; while leading, writes
/// the tables the routing computes, fenced by the leadership.
async fn leading(
    control: Weak<Control>,
    replica: Arc<Replica>,
    mut shutdown: watch::Receiver<bool>,
) {
    let leader_key = replica.keys.leader();
    let table_key = replica.keys.table();
    let mut wanted = replica.wanted.subscribe();
    let mut last_check = Instant::now();
    // Revisions seen while leading, oldest first: what the next compaction may drop up to.
    let mut seen: std::collections::VecDeque<(Instant, i64)> = std::collections::VecDeque::new();
    loop {
        let (lease, leading) = {
            let state = replica.lock();
            (state.lease, state.leading)
        };
        if lease != 0 && leading == 0 {
            let name = replica.name.as_bytes();
            let put = [Op::Put {
                key: &leader_key,
                value: name,
                lease,
            }];
            match replica
                .etcd
                .txn(
                    "campaign",
                    &[Cmp::Created(&leader_key, 0)],
                    &put,
                    &[Op::Get(&leader_key)],
                )
                .await
            {
                Ok(r) if r.succeeded => {
                    {
                        let mut state = replica.lock();
                        state.leading = r.header.revision;
                        state.leader = Some(replica.name.clone());
                    }
                    replica.metrics.replica_leader.set(1);
                    replica.metrics.elections.with_label_values(&["won"]).inc();
                    tracing::info!(replica = %replica.name, "leader: writing the routing tables");
                    last_check = Instant::now();
                    if let Some(c) = control.upgrade() {
                        c.republish();
                    }
                }
                Ok(r) => {
                    let holder = r
                        .responses
                        .first()
                        .and_then(|op| op.response_range.as_ref())
                        .and_then(|range| range.kvs.first())
                        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
                    replica.lock().leader = holder;
                }
                Err(e) => tracing::debug!(error = %e, "campaign failed"),
            }
        } else if leading != 0 {
            let table = wanted.borrow_and_update().clone();
            if let Some(table) = table {
                let value = serde_json::to_vec(&table).unwrap_or_default();
                let seen = replica.table_revision();
                let fence = [
                    Cmp::Created(&leader_key, leading),
                    Cmp::Modified(&table_key, seen),
                ];
                let put = [Op::Put {
                    key: &table_key,
                    value: &value,
                    lease: 0,
                }];
                match replica
                    .etcd
                    .txn("table_write", &fence, &put, &[Op::Get(&leader_key)])
                    .await
                {
                    Ok(r) if r.succeeded => {
                        replica.wanted.send_if_modified(|w| {
                            if w.as_ref().is_some_and(|w| w.version <= table.version) {
                                *w = None;
                                true
                            } else {
                                false
                            }
                        });
                    }
                    Ok(r) => {
                        let still = r
                            .responses
                            .first()
                            .and_then(|op| op.response_range.as_ref())
                            .and_then(|range| range.kvs.first())
                            .is_some_and(|kv| kv.create_revision == leading);
                        if !still {
                            replica.step_down("another replica holds the leadership");
                        } else {
                            // A newer table than ours is in etcd and our watch is behind:
                            // compute again once it has caught up.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            if let Some(c) = control.upgrade() {
                                c.republish();
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot write the routing table to etcd"),
                }
            }
            if last_check.elapsed() >= replica.lease_ttl / 3 {
                last_check = Instant::now();
                if let Ok(r) = replica.etcd.range(&leader_key, None).await {
                    let ours = r
                        .kvs
                        .first()
                        .is_some_and(|kv| kv.create_revision == leading);
                    if !ours {
                        replica.step_down("the leader key is no longer this replica's");
                        seen.clear();
                    } else {
                        seen.push_back((Instant::now(), r.header.revision));
                        compact_history(&replica, &mut seen).await;
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(CAMPAIGN_EVERY) => {}
            _ = wanted.changed() => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Compacts etcd's history up to the newest revision seen at least `store.history` ago, so a
/// replica whose watch broke for less resumes where it was (longer: it reads everything again).
async fn compact_history(replica: &Replica, seen: &mut std::collections::VecDeque<(Instant, i64)>) {
    let mut upto = None;
    while seen
        .front()
        .is_some_and(|(at, _)| at.elapsed() >= replica.history)
    {
        upto = seen.pop_front().map(|(_, revision)| revision);
    }
    let Some(revision) = upto else { return };
    match replica.etcd.compact(revision).await {
        Ok(()) => tracing::debug!(revision, "etcd history compacted"),
        // Already compacted further (by an operator, or etcd's own auto-compaction): fine.
        Err(EtcdError::Refused(reason)) if reason.contains("compacted") => {}
        Err(e) => tracing::warn!(error = %e, revision, "cannot compact etcd's history"),
    }
}

/// Writes this replica's nodes' latest heartbeats every heartbeat interval, and — when they
/// have applied purges, at most every [`REPORT_GAP`] — the purges they have applied.
async fn reporting(
    control: Weak<Control>,
    replica: Arc<Replica>,
    mut shutdown: watch::Receiver<bool>,
) {
    let report_key = replica.keys.replica(&replica.name);
    let acks_key = replica.keys.acks(&replica.name);
    let mut next_report = tokio::time::Instant::now();
    loop {
        let Some(c) = control.upgrade() else { return };
        let every = c.config().health.heartbeat_interval;
        let full = tokio::time::Instant::now() >= next_report;
        let value = if full {
            next_report = tokio::time::Instant::now() + every;
            serde_json::to_vec(&Report {
                beats: c.local_beats(),
            })
        } else {
            serde_json::to_vec(&c.local_acks())
        };
        drop(c);
        let lease = replica.lock().lease;
        if lease != 0 {
            let key = if full { &report_key } else { &acks_key };
            if let Err(e) = replica
                .etcd
                .put(key, &value.unwrap_or_default(), lease)
                .await
            {
                tracing::debug!(error = %e, "cannot write this replica's report");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(REPORT_GAP) => {}
            _ = shutdown.changed() => return,
        }
        tokio::select! {
            () = replica.report.notified() => {}
            _ = tokio::time::sleep_until(next_report) => {}
            _ = shutdown.changed() => return,
        }
    }
}
