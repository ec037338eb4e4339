//! The writer of one node's access log: a thread of its own that takes records from a bounded
//! queue, formats them and writes them in batches, so neither formatting nor a slow disk is
//! on the request path. A write that fails (a full disk) drops its lines and counts them.
//! A reopen (SIGUSR1) opens the same path again, for log rotation.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use prometheus::IntCounter;
use tokio::sync::mpsc;
use verge_config::AccessLogTarget;

use super::line::{LineContext, Record};

/// Lines are written once this many bytes are formatted, or when the queue is empty.
const BATCH_BYTES: usize = 64 * 1024;

/// How often the writer takes what is queued. It never waits on the queue itself: a request
/// queueing its line then wakes no thread, which would cost every request a context switch.
/// At this pace a queue of `buffer_lines` (8192 by default) holds 400,000 lines a second.
const DRAIN_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

/// What the writer is sent: one request's line, not yet formatted (by value: the queue's
/// blocks hold them, with no allocation per line).
pub(crate) type Message = Record;

/// Where lines go: stdout, or a file opened for appending.
pub(crate) struct Destination {
    target: AccessLogTarget,
    out: Box<dyn Write + Send>,
}

impl Destination {
    /// Opens `target`; the error names the path.
    pub(crate) fn open(target: &AccessLogTarget) -> Result<Destination, String> {
        Ok(Destination {
            target: target.clone(),
            out: open_target(target).map_err(|e| format!("cannot open {target}: {e}"))?,
        })
    }

    /// Lines to `out`, which is never reopened (tests).
    #[cfg(test)]
    pub(crate) fn custom(out: Box<dyn Write + Send>) -> Destination {
        Destination {
            target: AccessLogTarget::Stdout,
            out,
        }
    }

    fn reopen(&mut self) {
        if let AccessLogTarget::File(_) = self.target {
            match open_target(&self.target) {
                Ok(out) => {
                    self.out = out;
                    tracing::info!(path = %self.target, "access log reopened");
                }
                Err(error) => {
                    // Lines keep going to the file open before, whatever its name is now.
                    tracing::error!(path = %self.target, %error, "cannot reopen the access log");
                }
            }
        }
    }
}

fn open_target(target: &AccessLogTarget) -> io::Result<Box<dyn Write + Send>> {
    Ok(match target {
        AccessLogTarget::Stdout => Box::new(io::stdout()),
        AccessLogTarget::File(path) => {
            let file: File = OpenOptions::new().create(true).append(true).open(path)?;
            Box::new(file)
        }
    })
}

/// The writer's counters: `verge_access_log_lines_total`, `verge_access_log_dropped_total`.
#[derive(Clone)]
pub(crate) struct Counters {
    pub(crate) lines: IntCounter,
    pub(crate) dropped: IntCounter,
}

/// One node's writer, run on a thread of its own until every sender is gone.
pub(crate) struct Writer {
    pub(crate) queue: mpsc::Receiver<Message>,
    pub(crate) destination: Destination,
    pub(crate) context: LineContext,
    pub(crate) counters: Counters,
    pub(crate) reopen: Arc<AtomicBool>,
}

impl Writer {
    pub(crate) fn spawn(self) -> io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("verge-access-log".into())
            .spawn(move || self.run())
    }

    fn run(mut self) {
        let mut batch = Batch::default();
        loop {
            let open = loop {
                match self.queue.try_recv() {
                    Ok(message) => {
                        self.take(message, &mut batch);
                        if batch.bytes.len() >= BATCH_BYTES {
                            self.write(&mut batch);
                        }
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break true,
                    Err(mpsc::error::TryRecvError::Disconnected) => break false,
                }
            };
            self.write(&mut batch);
            if self.reopen.swap(false, Ordering::AcqRel) {
                self.destination.reopen();
            }
            if !open {
                return;
            }
            std::thread::sleep(DRAIN_EVERY);
        }
    }

    fn take(&self, record: Message, batch: &mut Batch) {
        record.write_line(&self.context, &mut batch.bytes);
        batch.lines += 1;
    }

    fn write(&mut self, batch: &mut Batch) {
        if batch.lines == 0 {
            return;
        }
        let out = &mut self.destination.out;
        match out.write_all(&batch.bytes).and_then(|()| out.flush()) {
            Ok(()) => {
                self.counters.lines.inc_by(batch.lines);
                batch.failing = false;
            }
            Err(error) => {
                self.counters.dropped.inc_by(batch.lines);
                if !batch.failing {
                    tracing::error!(path = %self.destination.target, %error, "cannot write the access log; lines are dropped and counted");
                }
                batch.failing = true;
            }
        }
        batch.bytes.clear();
        batch.lines = 0;
    }
}

/// Lines formatted and not yet written.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    lines: u64,
    /// The last write failed: the next failure is not logged again.
    failing: bool,
}
