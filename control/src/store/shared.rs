//! The purge log in etcd, shared by every control replica.
//!
//! # Numbering
//!
//! `P/purge/head` holds the newest sequence number. A replica appends purges `N+1 … N+k` in
//! one transaction that holds only while the head still reads `N`, and moves it to `N+k`: every
//! replica numbers from the same counter, so a purge has one sequence number everywhere, with
//! no gaps, and keeps it across restarts. A replica whose guess of `N` was stale learns the head
//! from the failed transaction and tries again. The purges waiting at a replica go in one
//! transaction (group commit).
//!
//! A purge is acknowledged only once its transaction has committed, that is once a quorum of
//! etcd members has it. When etcd does not answer in time the outcome is unknown; the replica
//! looks for its purges (each carries a random nonce) before trying again, so a purge is never
//! committed twice by one request.
//!
//! # Reading
//!
//! Each replica mirrors the retained purges in memory from its watch ([`SharedLog::apply`]);
//! readers never wait for etcd. A replica answers `since=SEQ` from its mirror as the embedded
//! log does, so a node resumes at any replica.
//!
//! # Compaction
//!
//! When more than twice `retain` purges are stored, the replica that appended deletes all but
//! the newest `retain`; each replica's mirror drops them as it sees the deletion, and a node
//! asking for what was dropped is told to resync.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use verge_config::wire::PurgeSpec;

use super::etcd::{Cmp, Etcd, EtcdError, Kv, Op};
use super::keys::{Key, Keys};
use super::StoreError;
use crate::log::{LogRecord, Since};

/// Purges that may wait for etcd at one replica; one more is refused.
pub const QUEUE_CAPACITY: usize = 4096;
/// Most purges committed in one transaction.
const MAX_BATCH: usize = 128;
/// Tries of one batch against a moving head before giving up.
const MAX_TRIES: usize = 32;
/// Keys read per page when loading the store.
const PAGE: usize = 2000;

/// One purge as stored in etcd.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredPurge {
    pub seq: u64,
    pub accepted_at_ms: u64,
    pub spec: PurgeSpec,
    /// The replica that accepted it.
    pub replica: String,
    /// Tells this purge from another with the same content, when a commit's outcome is unknown.
    pub nonce: u64,
}

#[derive(Debug, Default)]
struct Mirror {
    /// The newest `retain` (or a few more) purges, oldest first, without gaps.
    records: VecDeque<LogRecord>,
    head: u64,
    /// Purges this replica committed that do not follow the head yet (another replica's come
    /// first): they join once the watch has filled the gap.
    committed: BTreeMap<u64, LogRecord>,
}

impl Mirror {
    fn first_retained(&self) -> u64 {
        self.records.front().map_or(self.head + 1, |r| r.seq)
    }
}

struct Request {
    spec: PurgeSpec,
    accepted_at_ms: u64,
    reply: oneshot::Sender<Result<LogRecord, StoreError>>,
}

/// What [`SharedLog::apply`] made of one change.
#[derive(Debug, PartialEq)]
pub enum Applied {
    /// Not a purge record, or one already held.
    Nothing,
    /// New purges, in order, the last now the head: the one seen, and this replica's own that
    /// followed it.
    New(Vec<LogRecord>),
    /// A purge that does not follow the head: the mirror must be loaded again.
    Gap { head: u64, seq: u64 },
}

/// The purge log in etcd; see the module documentation.
pub struct SharedLog {
    pub etcd: Arc<Etcd>,
    pub keys: Keys,
    replica: String,
    retain: usize,
    mirror: RwLock<Mirror>,
    /// The mirror's head, for those waiting for a purge to arrive.
    advanced: watch::Sender<u64>,
    requests: mpsc::Sender<Request>,
}

/// Everything under the prefix at one revision, as [`SharedLog::load`] read it.
pub struct Snapshot {
    pub revision: i64,
    pub kvs: Vec<Kv>,
}

impl SharedLog {
    /// A log over `etcd` under `keys`, empty until [`SharedLog::reset`] loads it, and the task
    /// that commits appends (it ends when the log is dropped).
    pub fn new(etcd: Arc<Etcd>, keys: Keys, replica: String, retain: usize) -> Arc<SharedLog> {
        let (requests, queue) = mpsc::channel(QUEUE_CAPACITY);
        let log = Arc::new(SharedLog {
            etcd,
            keys,
            replica,
            retain: retain.max(1),
            mirror: RwLock::new(Mirror::default()),
            advanced: watch::channel(0).0,
            requests,
        });
        tokio::spawn(appender(Arc::downgrade(&log), queue));
        log
    }

    /// Reads every key under the prefix at one revision, a page at a time.
    pub async fn load(&self) -> Result<Snapshot, EtcdError> {
        let mut kvs = Vec::new();
        let all = self.keys.all();
        let end = super::etcd::prefix_end(&all);
        let mut from = all;
        let mut revision = 0;
        loop {
            let page = self.etcd.range_page(&from, &end, PAGE, revision).await?;
            if revision == 0 {
                revision = page.header.revision;
            }
            let more = page.more;
            let last = page.kvs.last().map(|kv| kv.key.clone());
            kvs.extend(page.kvs);
            match (more, last) {
                (true, Some(mut last)) => {
                    last.push(0);
                    from = last;
                }
                _ => break,
            }
        }
        Ok(Snapshot { revision, kvs })
    }

    /// Replaces the mirror with the purges of `snapshot` (and the head it records). Returns
    /// the purges that are new to this replica.
    pub fn reset(&self, snapshot: &Snapshot) -> Vec<LogRecord> {
        let mut head = 0;
        let mut records: Vec<LogRecord> = Vec::new();
        for kv in &snapshot.kvs {
            match self.keys.parse(&kv.key) {
                Key::Head => head = parse_head(&kv.value),
                Key::Purge(seq) => records.push(record(seq, &kv.value)),
                _ => {}
            }
        }
        records.sort_by_key(|r| r.seq);
        // Keep the run that ends at the newest: anything before a gap cannot be replayed.
        let mut start = records.len();
        while start > 0 {
            let contiguous =
                start == records.len() || records[start].seq == records[start - 1].seq + 1;
            if !contiguous {
                break;
            }
            start -= 1;
        }
        let records: VecDeque<LogRecord> = records.split_off(start).into();
        let head = head.max(records.back().map_or(0, |r| r.seq));
        let mut mirror = self.write();
        let old_head = mirror.head;
        let fresh = records
            .iter()
            .filter(|r| r.seq > old_head)
            .cloned()
            .collect();
        mirror.records = records;
        mirror.head = head.max(old_head);
        let kept = mirror.head;
        mirror.committed.retain(|seq, _| *seq > kept);
        drop(mirror);
        self.advanced.send_replace(head.max(old_head));
        fresh
    }

    /// Takes one change seen by the watch into the mirror.
    pub fn apply(&self, key: &[u8], value: Option<&[u8]>) -> Applied {
        let Key::Purge(seq) = self.keys.parse(key) else {
            return Applied::Nothing;
        };
        let mut mirror = self.write();
        let Some(value) = value else {
            // Compacted: drop it and everything older.
            while mirror.records.front().is_some_and(|r| r.seq <= seq) {
                mirror.records.pop_front();
            }
            return Applied::Nothing;
        };
        if seq <= mirror.head {
            return Applied::Nothing;
        }
        if seq != mirror.head + 1 {
            return Applied::Gap {
                head: mirror.head,
                seq,
            };
        }
        mirror.committed.insert(seq, record(seq, value));
        Applied::New(self.advance(mirror))
    }

    /// Takes purges this replica has just committed into the mirror, at once where they follow
    /// the head (the watch then brings nothing new); returns those that joined, in order.
    pub fn adopt(&self, records: Vec<LogRecord>) -> Vec<LogRecord> {
        let mut mirror = self.write();
        for record in records {
            if record.seq > mirror.head {
                mirror.committed.insert(record.seq, record);
            }
        }
        // Bounded: past this, the watch brings them instead.
        while mirror.committed.len() > QUEUE_CAPACITY {
            mirror.committed.pop_last();
        }
        self.advance(mirror)
    }

    /// Moves the committed purges that follow the head into the log; returns them.
    fn advance(&self, mut mirror: std::sync::RwLockWriteGuard<'_, Mirror>) -> Vec<LogRecord> {
        let mut fresh = Vec::new();
        loop {
            let next = mirror.head + 1;
            let Some(record) = mirror.committed.remove(&next) else {
                break;
            };
            mirror.records.push_back(record.clone());
            mirror.head = next;
            fresh.push(record);
        }
        let head = mirror.head;
        mirror.committed.retain(|seq, _| *seq > head);
        // Held a little past `retain` until the deletion arrives; bounded regardless.
        while mirror.records.len() > self.retain.saturating_mul(2).saturating_add(MAX_BATCH) {
            mirror.records.pop_front();
        }
        drop(mirror);
        if !fresh.is_empty() {
            self.advanced.send_replace(head);
        }
        fresh
    }

    /// Commits one purge; returns once etcd has it (a quorum of members). The caller takes it
    /// into the mirror with [`SharedLog::adopt`].
    pub async fn append(
        &self,
        spec: PurgeSpec,
        accepted_at_ms: u64,
    ) -> Result<LogRecord, StoreError> {
        let (reply, outcome) = oneshot::channel();
        let request = Request {
            spec,
            accepted_at_ms,
            reply,
        };
        self.requests.try_send(request).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => StoreError::Busy(QUEUE_CAPACITY),
            mpsc::error::TrySendError::Closed(_) => StoreError::Etcd(EtcdError::Refused(
                "this replica is shutting down".to_string(),
            )),
        })?;
        let record = outcome.await.map_err(|_| {
            StoreError::Etcd(EtcdError::Refused(
                "this replica is shutting down".to_string(),
            ))
        })??;
        Ok(record)
    }

    pub fn head(&self) -> u64 {
        self.read().head
    }

    /// Changes whenever the mirror's head moves.
    pub fn advanced(&self) -> watch::Receiver<u64> {
        self.advanced.subscribe()
    }

    pub fn since(&self, after: u64, max: usize) -> Since {
        let mirror = self.read();
        let first_retained = mirror.first_retained();
        if after > mirror.head || after + 1 < first_retained {
            return Since::Gone { first_retained };
        }
        let skip = usize::try_from(after + 1 - first_retained).unwrap_or(usize::MAX);
        Since::Records(
            mirror
                .records
                .iter()
                .skip(skip)
                .take(max)
                .cloned()
                .collect(),
        )
    }

    pub fn get(&self, seq: u64) -> Option<LogRecord> {
        let mirror = self.read();
        let index = seq.checked_sub(mirror.first_retained())?;
        mirror.records.get(usize::try_from(index).ok()?).cloned()
    }

    fn read(&self) -> RwLockReadGuard<'_, Mirror> {
        self.mirror.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Mirror> {
        self.mirror.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Commits a batch: the records with their sequence numbers, in order.
    async fn commit(
        &self,
        batch: &mut Vec<Request>,
        queue: &mut mpsc::Receiver<Request>,
    ) -> Result<Vec<LogRecord>, EtcdError> {
        let mut nonces: Vec<u64> = batch.iter().map(|_| fastrand::u64(..)).collect();
        let mut done: Vec<Option<LogRecord>> = vec![None; batch.len()];
        let mut head = self.head();
        let head_key = self.keys.head();
        for _ in 0..MAX_TRIES {
            let pending: Vec<usize> = (0..batch.len()).filter(|i| done[*i].is_none()).collect();
            if pending.is_empty() {
                break;
            }
            let stored: Vec<StoredPurge> = pending
                .iter()
                .zip(1u64..)
                .map(|(&i, offset)| StoredPurge {
                    seq: head + offset,
                    accepted_at_ms: batch[i].accepted_at_ms,
                    spec: batch[i].spec.clone(),
                    replica: self.replica.clone(),
                    nonce: nonces[i],
                })
                .collect();
            let new_head = head + stored.len() as u64;
            let values: Vec<(Vec<u8>, Vec<u8>)> = stored
                .iter()
                .map(|s| {
                    (
                        self.keys.purge(s.seq),
                        serde_json::to_vec(s).unwrap_or_default(),
                    )
                })
                .collect();
            let head_text = head.to_string();
            let new_head_text = new_head.to_string();
            let compare = if head == 0 {
                Cmp::Created(&head_key, 0)
            } else {
                Cmp::Value(&head_key, head_text.as_bytes())
            };
            let mut success = vec![Op::Put {
                key: &head_key,
                value: new_head_text.as_bytes(),
                lease: 0,
            }];
            success.extend(values.iter().map(|(k, v)| Op::Put {
                key: k,
                value: v,
                lease: 0,
            }));
            match self
                .etcd
                .txn("purge_commit", &[compare], &success, &[Op::Get(&head_key)])
                .await
            {
                Ok(r) if r.succeeded => {
                    for (s, &i) in stored.into_iter().zip(&pending) {
                        done[i] = Some(LogRecord {
                            seq: s.seq,
                            accepted_at_ms: s.accepted_at_ms,
                            spec: s.spec,
                        });
                    }
                    self.compact(new_head).await;
                }
                Ok(r) => {
                    head = r
                        .responses
                        .first()
                        .and_then(|op| op.response_range.as_ref())
                        .and_then(|range| range.kvs.first())
                        .map_or(0, |kv| parse_head(&kv.value));
                    // Another replica moved the counter first. What queued here meanwhile
                    // rides along on the next try: under contention batches grow instead of
                    // every purge racing on its own.
                    while batch.len() < MAX_BATCH {
                        let Ok(request) = queue.try_recv() else { break };
                        batch.push(request);
                        nonces.push(fastrand::u64(..));
                        done.push(None);
                    }
                }
                Err(EtcdError::Timeout { .. }) => {
                    // Unknown outcome: find which of ours made it before trying again.
                    let end = super::etcd::prefix_end(&self.keys.purges());
                    let found = self
                        .etcd
                        .range(&self.keys.purge(head + 1), Some(&end))
                        .await?;
                    for kv in &found.kvs {
                        let Ok(s) = serde_json::from_slice::<StoredPurge>(&kv.value) else {
                            continue;
                        };
                        if let Some(i) = nonces.iter().position(|n| *n == s.nonce) {
                            done[i] = Some(LogRecord {
                                seq: s.seq,
                                accepted_at_ms: s.accepted_at_ms,
                                spec: s.spec,
                            });
                        }
                        head = head.max(s.seq);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        done.into_iter()
            .map(|r| {
                r.ok_or_else(|| {
                    EtcdError::Refused(
                        "the purge counter kept moving: too many purges at once across the replicas; retry"
                            .to_string(),
                    )
                })
            })
            .collect()
    }

    /// Deletes all but the newest `retain` purges once more than twice that many are stored.
    async fn compact(&self, head: u64) {
        let first = self.read().first_retained();
        let retain = self.retain as u64;
        if head.saturating_sub(first) < retain.saturating_mul(2) {
            return;
        }
        let keep_from = head + 1 - retain;
        let (from, to) = (self.keys.purge(0), self.keys.purge(keep_from));
        if let Err(e) = self
            .etcd
            .txn(
                "purge_compact",
                &[],
                &[Op::DeleteRange {
                    key: &from,
                    end: &to,
                }],
                &[],
            )
            .await
        {
            tracing::warn!(error = %e, "cannot delete old purges from etcd; will try after the next purge");
        }
    }
}

fn parse_head(value: &[u8]) -> u64 {
    std::str::from_utf8(value)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// The record of purge `seq`. One that cannot be read (written by something else) is taken as
/// a purge of everything: flushing too much is safe, missing a purge is not.
fn record(seq: u64, value: &[u8]) -> LogRecord {
    match serde_json::from_slice::<StoredPurge>(value) {
        Ok(s) if s.seq == seq => LogRecord {
            seq,
            accepted_at_ms: s.accepted_at_ms,
            spec: s.spec,
        },
        other => {
            tracing::error!(
                seq,
                ok = other.is_ok(),
                "unreadable purge record in etcd; applying it as a purge of everything"
            );
            LogRecord {
                seq,
                accepted_at_ms: 0,
                spec: PurgeSpec {
                    all: true,
                    ..PurgeSpec::default()
                },
            }
        }
    }
}

/// Commits queued appends, a batch at a time, until the log is dropped.
async fn appender(log: std::sync::Weak<SharedLog>, mut queue: mpsc::Receiver<Request>) {
    while let Some(first) = queue.recv().await {
        let mut requests = vec![first];
        while requests.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(request) => requests.push(request),
                Err(_) => break,
            }
        }
        let Some(log) = log.upgrade() else { return };
        match log.commit(&mut requests, &mut queue).await {
            Ok(records) => {
                for (request, record) in requests.into_iter().zip(records) {
                    let _ = request.reply.send(Ok(record));
                }
            }
            Err(e) => {
                for request in requests {
                    let _ = request.reply.send(Err(StoreError::Etcd(e.clone())));
                }
            }
        }
        drop(log);
        // Lets other tasks run between batches.
        tokio::time::sleep(Duration::ZERO).await;
    }
}

/// A log over an etcd that is never reached, for tests of the mirror.
#[cfg(test)]
pub(crate) fn offline_log(prefix: &str) -> Arc<SharedLog> {
    let etcd = Arc::new(Etcd::new(
        vec!["http://127.0.0.1:1".into()],
        Duration::from_millis(100),
        None,
        None,
        Arc::new(|_, _, _| {}),
    ));
    SharedLog::new(etcd, Keys::new(prefix), "r1".into(), 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log() -> Arc<SharedLog> {
        offline_log("/v")
    }

    fn value(seq: u64) -> Vec<u8> {
        serde_json::to_vec(&StoredPurge {
            seq,
            accepted_at_ms: seq,
            spec: PurgeSpec {
                urls: vec![format!("/{seq}")],
                ..PurgeSpec::default()
            },
            replica: "r".into(),
            nonce: seq,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn the_mirror_follows_the_watch_without_gaps_and_drops_what_was_compacted() {
        let log = log();
        let keys = Keys::new("/v");
        assert!(matches!(
            log.apply(&keys.purge(1), Some(&value(1))),
            Applied::New(_)
        ));
        assert_eq!(log.apply(&keys.purge(1), Some(&value(1))), Applied::Nothing);
        assert_eq!(
            log.apply(&keys.purge(3), Some(&value(3))),
            Applied::Gap { head: 1, seq: 3 }
        );
        assert!(matches!(
            log.apply(&keys.purge(2), Some(&value(2))),
            Applied::New(_)
        ));
        assert!(matches!(
            log.apply(&keys.purge(3), Some(&value(3))),
            Applied::New(_)
        ));
        assert_eq!(log.head(), 3);
        assert!(matches!(log.since(1, 10), Since::Records(r) if r.len() == 2));
        // Deleted up to 1: a node that has applied nothing must resync.
        log.apply(&keys.purge(1), None);
        assert_eq!(log.since(0, 10), Since::Gone { first_retained: 2 });
        assert_eq!(log.get(3).unwrap().spec.urls, ["/3"]);
        // An unreadable record purges everything rather than nothing.
        let Applied::New(r) = log.apply(&keys.purge(4), Some(b"garbage")) else {
            panic!()
        };
        assert!(r[0].spec.all);
        assert_eq!(log.apply(b"/v/table", Some(b"{}")), Applied::Nothing);
    }

    fn committed(seq: u64) -> LogRecord {
        LogRecord {
            seq,
            accepted_at_ms: seq,
            spec: PurgeSpec {
                urls: vec![format!("/{seq}")],
                ..PurgeSpec::default()
            },
        }
    }

    #[tokio::test]
    async fn purges_this_replica_committed_join_the_log_at_once_unless_others_come_first() {
        let log = log();
        let keys = Keys::new("/v");
        let seqs = |records: Vec<LogRecord>| records.iter().map(|r| r.seq).collect::<Vec<_>>();
        // Ours, following the head: in at once; the watch then brings nothing new.
        assert_eq!(seqs(log.adopt(vec![committed(1)])), [1]);
        assert_eq!(log.apply(&keys.purge(1), Some(&value(1))), Applied::Nothing);
        // Ours at 3 and 4, while another replica's 2 has not arrived: they wait for it...
        assert_eq!(
            seqs(log.adopt(vec![committed(4), committed(3)])),
            Vec::<u64>::new()
        );
        assert_eq!(log.head(), 1);
        // ...and join with it, in order, when the watch brings 2.
        let Applied::New(joined) = log.apply(&keys.purge(2), Some(&value(2))) else {
            panic!()
        };
        assert_eq!(seqs(joined), [2, 3, 4]);
        assert_eq!(log.head(), 4);
        assert_eq!(log.apply(&keys.purge(3), Some(&value(3))), Applied::Nothing);
        // Already held: nothing again.
        assert!(log.adopt(vec![committed(2)]).is_empty());
    }

    #[tokio::test]
    async fn a_snapshot_keeps_the_run_of_purges_that_ends_at_the_head() {
        let log = log();
        let keys = Keys::new("/v");
        let kv = |key: Vec<u8>, value: Vec<u8>| Kv {
            key,
            value,
            ..Kv::default()
        };
        let snapshot = Snapshot {
            revision: 9,
            kvs: vec![
                kv(keys.head(), b"7".to_vec()),
                kv(keys.purge(2), value(2)),
                kv(keys.purge(5), value(5)),
                kv(keys.purge(6), value(6)),
                kv(keys.purge(7), value(7)),
            ],
        };
        let fresh = log.reset(&snapshot);
        assert_eq!(fresh.iter().map(|r| r.seq).collect::<Vec<_>>(), [5, 6, 7]);
        assert_eq!(log.head(), 7);
        assert_eq!(log.since(4, 10), Since::Records(fresh));
        assert_eq!(log.since(3, 10), Since::Gone { first_retained: 5 });
    }
}
