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
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use verge_config::wire::PurgeSpec;

use file::{encode_line, replay};

mod file;
#[cfg(test)]
mod tests;

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
        std::thread::Builder::new()
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

/// Owns the file: replays it on open, then runs on its own thread, appending batches.
struct Writer {
    dir: PathBuf,
    path: PathBuf,
    tmp_path: PathBuf,
    /// Open for reading and appending.
    file: File,
    /// Bytes of intact records in the file.
    file_len: u64,
    /// Records in the file (more than are retained, until the next compaction).
    file_records: usize,
    retain: usize,
    /// Compact once the file holds more records than this.
    compact_above: usize,
    state: Arc<RwLock<State>>,
    /// Why appends are refused, once a sync has failed.
    failed: Option<String>,
}

impl Writer {
    fn open(dir: PathBuf, retain: usize) -> Result<Writer, LogError> {
        let path = dir.join(FILE_NAME);
        let tmp_path = dir.join(TMP_FILE_NAME);
        let io_error = |action: &'static str| {
            let path = path.clone();
            move |source| LogError::Io {
                path,
                action,
                source,
            }
        };
        fs::create_dir_all(&dir).map_err(io_error("create its directory"))?;
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io_error("open it"))?;
        // Make the file's directory entry durable if it was just created.
        sync_dir(&dir).map_err(io_error("sync its directory"))?;
        // A compaction cut short by a crash leaves a temp file behind; purge.log is intact.
        remove_if_present(&tmp_path).map_err(io_error("remove the old purge.log.tmp"))?;

        let replay = replay(&file, &path, retain)?;
        if let Some(tail) = &replay.dropped_tail {
            tracing::warn!(
                path = %path.display(),
                line = tail.line,
                reason = %tail.reason,
                dropped_bytes = tail.bytes,
                "purge log: dropped a torn or corrupt tail (a write cut short by a crash) \
                 and truncated the file to the last intact record"
            );
            file.set_len(replay.good_len)
                .and_then(|()| file.sync_all())
                .map_err(io_error("truncate a torn tail"))?;
        }
        let state = State {
            records: replay.records,
            head: replay.head,
            commits: 0,
        };
        let mut writer = Writer {
            dir,
            path,
            tmp_path,
            file,
            file_len: replay.good_len,
            file_records: replay.file_records,
            retain,
            compact_above: retain.saturating_mul(2),
            state: Arc::new(RwLock::new(state)),
            failed: None,
        };
        if writer.file_records > writer.compact_above {
            writer.compact();
        }
        match &writer.failed {
            Some(reason) => Err(LogError::Failed {
                path: writer.path.clone(),
                reason: reason.clone(),
            }),
            None => Ok(writer),
        }
    }

    /// Appends batches until every [`PurgeLog`] handle is gone.
    fn run(mut self, queue: Receiver<Request>) {
        while let Ok(first) = queue.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            self.commit(batch);
        }
    }

    /// Numbers, writes and syncs one batch, publishes it to readers and answers its requests.
    fn commit(&mut self, batch: Vec<Request>) {
        if let Some(reason) = &self.failed {
            for request in batch {
                let _ = request.reply.send(Err(LogError::Failed {
                    path: self.path.clone(),
                    reason: reason.clone(),
                }));
            }
            return;
        }
        let mut head = read_state(&self.state).head;
        let mut bytes = Vec::new();
        let mut accepted = Vec::with_capacity(batch.len());
        for request in batch {
            let record = LogRecord {
                seq: head + 1,
                accepted_at_ms: request.accepted_at_ms,
                spec: request.spec,
            };
            match encode_line(&record, &mut bytes) {
                Ok(()) => {
                    head = record.seq;
                    accepted.push((record, request.reply));
                }
                Err(source) => {
                    let _ = request.reply.send(Err(LogError::Encode {
                        path: self.path.clone(),
                        seq: record.seq,
                        source,
                    }));
                }
            }
        }
        if accepted.is_empty() {
            return;
        }
        if let Err((action, error)) = self.write_synced(&bytes) {
            for (_, reply) in accepted {
                let _ = reply.send(Err(LogError::Io {
                    path: self.path.clone(),
                    action,
                    source: io::Error::new(error.kind(), error.to_string()),
                }));
            }
            return;
        }
        self.file_len += bytes.len() as u64;
        self.file_records += accepted.len();
        {
            let mut state = write_state(&self.state);
            state
                .records
                .extend(accepted.iter().map(|(record, _)| record.clone()));
            let excess = state.records.len().saturating_sub(self.retain);
            state.records.drain(..excess);
            state.head = head;
            state.commits += 1;
        }
        // Compact before answering, so that once the last append has its answer the writer
        // is idle and the file can be reopened (by a restarted control in the same process).
        if self.file_records > self.compact_above {
            self.compact();
        }
        for (record, reply) in accepted {
            let _ = reply.send(Ok(record));
        }
    }

    /// Appends `bytes` and syncs them. On failure, names what failed; a failed write is undone
    /// and a failed sync stops the log (see the module documentation).
    fn write_synced(&mut self, bytes: &[u8]) -> Result<(), (&'static str, io::Error)> {
        if let Err(error) = self.file.write_all(bytes) {
            let undo = self
                .file
                .set_len(self.file_len)
                .and_then(|()| self.file.sync_data());
            if let Err(undo_error) = undo {
                self.stop(format!(
                    "a failed append ({error}) could not be undone: {undo_error}"
                ));
            }
            return Err(("append a record", error));
        }
        if let Err(error) = self.file.sync_data() {
            self.stop(format!("fdatasync failed: {error}"));
            return Err(("sync an appended record", error));
        }
        Ok(())
    }

    /// Rewrites the file with only the retained records. A failure before the rename leaves
    /// the old file in use and is retried after `retain` more records; a failure after it
    /// stops the log.
    fn compact(&mut self) {
        let records: Vec<LogRecord> = read_state(&self.state).records.iter().cloned().collect();
        let (file, len) = match self.write_compacted(&records) {
            Ok(written) => written,
            Err((action, error)) => {
                tracing::warn!(
                    path = %self.path.display(),
                    error = %error,
                    "purge log: compaction failed to {action}; the log carries on uncompacted"
                );
                let _ = remove_if_present(&self.tmp_path);
                self.compact_above = self.file_records.saturating_add(self.retain);
                return;
            }
        };
        // purge.log is now the compacted file (the old handle's file is unlinked).
        self.file = file;
        self.file_len = len;
        self.file_records = records.len();
        self.compact_above = self.retain.saturating_mul(2);
        if let Err(error) = sync_dir(&self.dir) {
            // Without it the rename may be undone by a crash, losing records appended since.
            self.stop(format!(
                "syncing the directory after compaction failed: {error}"
            ));
        }
    }

    fn write_compacted(
        &self,
        records: &[LogRecord],
    ) -> Result<(File, u64), (&'static str, io::Error)> {
        let mut bytes = Vec::new();
        for record in records {
            encode_line(record, &mut bytes).map_err(|e| ("encode a record", e.into()))?;
        }
        remove_if_present(&self.tmp_path).map_err(|e| ("remove an old temp file", e))?;
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .open(&self.tmp_path)
            .map_err(|e| ("create the temp file", e))?;
        file.write_all(&bytes)
            .map_err(|e| ("write the temp file", e))?;
        file.sync_all().map_err(|e| ("sync the temp file", e))?;
        fs::rename(&self.tmp_path, &self.path)
            .map_err(|e| ("rename the temp file over the log", e))?;
        Ok((file, bytes.len() as u64))
    }

    fn stop(&mut self, reason: String) {
        tracing::error!(
            path = %self.path.display(),
            reason = %reason,
            "purge log: no longer accepting appends; restart control to recover"
        );
        self.failed = Some(reason);
    }
}

fn read_state(state: &RwLock<State>) -> RwLockReadGuard<'_, State> {
    state.read().unwrap_or_else(PoisonError::into_inner)
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Makes renames and creations in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}
