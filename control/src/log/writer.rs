//! The writer: the one thread that owns the log file. It replays the file on open, then appends
//! batches (group commit), compacts the file and stops the log when a sync fails.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

use super::file::{encode_line, replay};
use super::lock::DirLock;
use super::{
    write_state, LogError, LogRecord, Request, State, FILE_NAME, MAX_BATCH, TMP_FILE_NAME,
};

/// Owns the file: replays it on open, then runs on its own thread, appending batches.
pub(super) struct Writer {
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
    pub(super) state: Arc<RwLock<State>>,
    /// Why appends are refused, once a sync has failed.
    failed: Option<String>,
    /// The data directory is this writer's alone while it lives.
    _lock: DirLock,
}

impl Writer {
    pub(super) fn open(dir: PathBuf, retain: usize) -> Result<Writer, LogError> {
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
        let lock = DirLock::acquire(&dir)?;
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
            _lock: lock,
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
    pub(super) fn run(mut self, queue: Receiver<Request>) {
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
