//! One control per data directory: an exclusive `flock` on `DIR/control.lock`, held for as long
//! as the purge log is open. A second control — another process, or the same process opening
//! the directory again — is refused instead of interleaving its appends with the first's.
//!
//! The kernel drops the lock when its holder exits, however it exits, so a crash leaves no
//! stale lock behind; the file itself stays (removing it would let two openers lock two
//! different files).

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

use super::LogError;

/// Name of the lock file inside the data directory.
pub const LOCK_FILE_NAME: &str = "control.lock";

/// The held lock; dropping it releases it.
#[derive(Debug)]
pub(super) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock of `dir` (which must exist), or says who holds it.
    pub(super) fn acquire(dir: &Path) -> Result<DirLock, LogError> {
        let path = dir.join(LOCK_FILE_NAME);
        let io_error = |action: &'static str, source: io::Error| LogError::Io {
            path: path.clone(),
            action,
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io_error("open the data directory's lock file", e))?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(DirLock { _file: file }),
            Err(rustix::io::Errno::WOULDBLOCK) => Err(LogError::Locked {
                dir: PathBuf::from(dir),
                lock: path,
            }),
            Err(e) => Err(io_error("lock the data directory", e.into())),
        }
    }
}
