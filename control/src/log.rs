//! The durable purge log: every accepted purge, numbered 1, 2, 3, … without gaps and on disk
//! before it is acknowledged, so a node that missed purges catches up from its last applied
//! sequence number (`?since=SEQ`), across control restarts too.
//!
//! # File
//!
//! `DIR/purge.log` holds one record per line: the CRC-32C of the JSON as eight lowercase hex
//! digits, a space, then the JSON of a [`LogRecord`] (`{"seq":…,"accepted_at_ms":…,"spec":…}`)
//! and `\n`. The checksum and the line end let [`PurgeLog::open`] tell a record cut short by a
//! crash from an intact one.
//!
//! # One owner
//!
//! The log holds an exclusive lock on `DIR/control.lock` ([`LOCK_FILE_NAME`]) from open until
//! the last handle is dropped and the writer has finished: a second control opening the same
//! directory, in another process or in this one, fails with [`LogError::Locked`]. Dropping the
//! last handle waits for the writer to finish what is queued (normally nothing).
//!
//! # Writing
//!
//! One writer thread owns the file. [`PurgeLog::append`] queues a request (a bounded queue: when
//! it is full the append fails fast with [`LogError::Busy`]); the writer takes everything queued,
//! numbers it, writes it with one `write` and one `fdatasync` (group commit) and only then makes
//! it visible to readers and answers. Readers ([`PurgeLog::since`], [`PurgeLog::get`]) never
//! touch the file: the last `retain` records are held in memory.
//!
//! # Compaction
//!
//! When the file holds more than twice `retain` records, the retained ones are written to
//! `purge.log.tmp`, which is synced, renamed over `purge.log`, and the directory synced. The
//! newest record is always retained, so the head sequence number survives compaction and
//! restarts.
//!
//! # Failures
//!
//! A write that fails is undone (the file truncated back) and answered with an error. A failed
//! `fdatasync` (or directory sync after compaction) is not retried: the kernel may have dropped
//! the unwritten pages and a later sync would report success falsely, so the log stops accepting
//! appends ([`LogError::Failed`]) until control restarts and replays the file. Records of a batch
//! whose sync failed may still turn up after the restart: a purge reported as failed may be
//! applied anyway (purges are idempotent, so that is safe).

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use verge_config::wire::PurgeSpec;

use writer::Writer;

mod file;
mod lock;
#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
mod writer;

pub use lock::LOCK_FILE_NAME;

/// Name of the log file inside the data directory.
pub const FILE_NAME: &str = "purge.log";

/// Name of the file a compaction writes before renaming it over [`FILE_NAME`].
const TMP_FILE_NAME: &str = "purge.log.tmp";

/// Appends that may wait for the writer; one more is refused with [`LogError::Busy`].
pub const QUEUE_CAPACITY: usize = 4096;

/// Most appends written and synced together.
const MAX_BATCH: usize = 1024;

/// One accepted purge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Position in the log: 1 for the first purge ever accepted, then without gaps.
    pub seq: u64,
    /// Milliseconds since the Unix epoch when control accepted the purge.
    pub accepted_at_ms: u64,
    pub spec: PurgeSpec,
}

/// The answer to [`PurgeLog::since`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Since {
    /// The records after the requested sequence number, in order (empty when up to date).
    Records(Vec<LogRecord>),
    /// The log cannot say what came after the requested sequence number: some of it has been
    /// compacted away, or the requester is ahead of the log. It must resync.
    Gone { first_retained: u64 },
}

/// What went wrong with the purge log. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("purge log {}: cannot {action}: {source}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },
    /// A damaged record that is not the tail of the file, so not a write cut short by a crash:
    /// the log refuses to guess what is missing.
    #[error("purge log {}: line {line} is corrupt: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        line: u64,
        reason: String,
    },
    #[error("purge log {}: {capacity} appends are already waiting; retry shortly", path.display())]
    Busy { path: PathBuf, capacity: usize },
    /// The log no longer accepts appends (see the module documentation); restart to recover.
    #[error("purge log {}: stopped accepting appends: {reason}", path.display())]
    Failed { path: PathBuf, reason: String },
    #[error("purge log {}: cannot encode record {seq}: {source}", path.display())]
    Encode {
        path: PathBuf,
        seq: u64,
        #[source]
        source: serde_json::Error,
    },
    #[error("purge log {}: retain must be at least 1", path.display())]
    InvalidRetain { path: PathBuf },
    /// Another control has the data directory open.
    #[error(
        "data directory {} is in use: another control holds its lock ({}); stop that control \
         or give this one another controller.data_dir",
        dir.display(),
        lock.display()
    )]
    Locked { dir: PathBuf, lock: PathBuf },
}

impl LogError {
    /// Whether the same append may succeed if tried again later without restarting.
    pub fn is_retryable(&self) -> bool {
        matches!(self, LogError::Busy { .. } | LogError::Io { .. })
    }
}

/// The durable purge log; cheap to clone (every clone is the same log).
#[derive(Clone)]
pub struct PurgeLog {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    state: Arc<RwLock<State>>,
    requests: SyncSender<Request>,
    /// Bound of the `requests` queue.
    capacity: usize,
    /// The writer thread, which holds the data directory's lock until it ends.
    writer: Option<JoinHandle<()>>,
}

impl Drop for Inner {
    /// Waits for the writer to finish what is queued and release the data directory, so that
    /// once the last handle is gone the directory can be opened again at once.
    fn drop(&mut self) {
        // The writer ends when its queue has no sender left.
        let (disconnected, _) = mpsc::sync_channel(0);
        drop(std::mem::replace(&mut self.requests, disconnected));
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                let path = self.path.display();
                tracing::error!(%path, "purge log: the writer thread panicked");
            }
        }
    }
}

/// What readers see: only records already on disk.
#[derive(Debug, Default)]
struct State {
    /// The newest `retain` records, oldest first.
    records: VecDeque<LogRecord>,
    /// Sequence number of the newest record (0 when the log has never held one).
    head: u64,
    /// Batches written and synced since open.
    commits: u64,
}

impl State {
    fn first_retained(&self) -> u64 {
        self.records.front().map_or(self.head + 1, |r| r.seq)
    }
}

type Reply = oneshot::Sender<Result<LogRecord, LogError>>;

struct Request {
    spec: PurgeSpec,
    accepted_at_ms: u64,
    reply: Reply,
}

impl std::fmt::Debug for PurgeLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.read();
        f.debug_struct("PurgeLog")
            .field("path", &self.inner.path)
            .field("head", &state.head)
            .field("first_retained", &state.first_retained())
            .finish()
    }
}

impl PurgeLog {
    /// Opens `dir/purge.log` (creating the directory and the file if missing) and replays it.
    ///
    /// Fails with [`LogError::Locked`] while another log has `dir` open (see the module
    /// documentation); dropping every handle of that one releases it.
    ///
    /// A torn or corrupt tail — damaged lines with no intact record after them, as a crash in
    /// the middle of a write leaves — is dropped with a warning and the file truncated to the
    /// last intact record (those records were never acknowledged). A damaged line followed by
    /// an intact one, or records out of sequence, is not skipped: open fails with
    /// [`LogError::Corrupt`] naming the line. `retain` (at least 1) is how many of the newest
    /// records are kept, in memory and in the file.
    pub async fn open(dir: &Path, retain: usize) -> Result<PurgeLog, LogError> {
        PurgeLog::open_with_capacity(dir, retain, QUEUE_CAPACITY).await
    }

    async fn open_with_capacity(
        dir: &Path,
        retain: usize,
        capacity: usize,
    ) -> Result<PurgeLog, LogError> {
        let path = dir.join(FILE_NAME);
        if retain == 0 {
            return Err(LogError::InvalidRetain { path });
        }
        let dir = dir.to_path_buf();
        let writer = tokio::task::spawn_blocking(move || Writer::open(dir, retain))
            .await
            .map_err(|e| LogError::Failed {
                path: path.clone(),
                reason: format!("the task opening it did not finish: {e}"),
            })??;
        let state = Arc::clone(&writer.state);
        let (requests, queue) = mpsc::sync_channel(capacity);
        let writer = std::thread::Builder::new()
            .name("verge-purge-log".to_string())
            .spawn(move || writer.run(queue))
            .map_err(|source| LogError::Io {
                path: path.clone(),
                action: "start the writer thread",
                source,
            })?;
        Ok(PurgeLog {
            inner: Arc::new(Inner {
                path,
                state,
                requests,
                capacity,
                writer: Some(writer),
            }),
        })
    }

    /// Appends one purge with the next sequence number and returns once it is on disk.
    ///
    /// Fails fast with [`LogError::Busy`] when [`QUEUE_CAPACITY`] appends are already waiting.
    /// Dropping the future after it was first polled does not withdraw the purge.
    pub async fn append(
        &self,
        spec: PurgeSpec,
        accepted_at_ms: u64,
    ) -> Result<LogRecord, LogError> {
        let reply = self.submit(spec, accepted_at_ms)?;
        reply.await.map_err(|_| self.writer_gone())?
    }

    /// Queues an append for the writer; the receiver gets its outcome.
    fn submit(
        &self,
        spec: PurgeSpec,
        accepted_at_ms: u64,
    ) -> Result<oneshot::Receiver<Result<LogRecord, LogError>>, LogError> {
        let (reply, outcome) = oneshot::channel();
        let request = Request {
            spec,
            accepted_at_ms,
            reply,
        };
        match self.inner.requests.try_send(request) {
            Ok(()) => Ok(outcome),
            Err(TrySendError::Full(_)) => Err(LogError::Busy {
                path: self.inner.path.clone(),
                capacity: self.inner.capacity,
            }),
            Err(TrySendError::Disconnected(_)) => Err(self.writer_gone()),
        }
    }

    fn writer_gone(&self) -> LogError {
        LogError::Failed {
            path: self.inner.path.clone(),
            reason: "the writer thread has stopped".to_string(),
        }
    }

    /// Sequence number of the newest record (0 when the log has never held one).
    pub fn head(&self) -> u64 {
        self.read().head
    }

    /// Sequence number of the oldest record held (`head() + 1` when none is held).
    pub fn first_retained(&self) -> u64 {
        self.read().first_retained()
    }

    /// Up to `max` records with a sequence number above `after`, in order. [`Since::Gone`] when
    /// a record after `after` is no longer held, or `after` is beyond the head (a node ahead of
    /// the log, e.g. after control lost its data directory).
    pub fn since(&self, after: u64, max: usize) -> Since {
        let state = self.read();
        let first_retained = state.first_retained();
        if after > state.head || after + 1 < first_retained {
            return Since::Gone { first_retained };
        }
        // `after + 1 >= first_retained` and `after <= head`, so this is within 0..=len.
        let skip = usize::try_from(after + 1 - first_retained).unwrap_or(usize::MAX);
        Since::Records(state.records.iter().skip(skip).take(max).cloned().collect())
    }

    /// The record with sequence number `seq`, if still held.
    pub fn get(&self, seq: u64) -> Option<LogRecord> {
        let state = self.read();
        let index = seq.checked_sub(state.first_retained())?;
        state.records.get(usize::try_from(index).ok()?).cloned()
    }

    /// How many records are held.
    pub fn len(&self) -> usize {
        self.read().records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().records.is_empty()
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Batches written and synced since open (each one `fdatasync`).
    pub fn commits(&self) -> u64 {
        self.read().commits
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.inner
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    fn write_state(&self) -> RwLockWriteGuard<'_, State> {
        write_state(&self.inner.state)
    }
}

fn write_state(state: &RwLock<State>) -> RwLockWriteGuard<'_, State> {
    state.write().unwrap_or_else(PoisonError::into_inner)
}
