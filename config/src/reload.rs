//! Changing a running role's configuration: where the configuration comes from, what a reload
//! answers (on the admin API, in logs and to `verge reload`), and how a file is watched.
//!
//! Every role reloads the same way: read the source, validate it whole, compute what changed,
//! refuse changes that need a restart, then apply the rest as one step. An invalid file changes
//! nothing.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::ConfigErrors;

/// A role's configuration file, parsed from TOML and validated whole: what a reload reads
/// again.
pub trait ConfigFile: Sized {
    /// Parses and validates `text`, reporting every problem with its key path.
    fn from_toml(text: &str) -> Result<Self, ConfigErrors>;

    /// Reads a file and validates it; the file's path is named in a read error.
    fn from_file(path: &Path) -> Result<Self, ConfigErrors> {
        Self::from_toml(&crate::raw::read(path)?)
    }
}

impl ConfigFile for crate::EdgeConfig {
    fn from_toml(text: &str) -> Result<Self, ConfigErrors> {
        crate::EdgeConfig::from_toml(text)
    }
}

impl ConfigFile for crate::ShieldConfig {
    fn from_toml(text: &str) -> Result<Self, ConfigErrors> {
        crate::ShieldConfig::from_toml(text)
    }
}

impl ConfigFile for crate::ControlConfig {
    fn from_toml(text: &str) -> Result<Self, ConfigErrors> {
        crate::ControlConfig::from_toml(text)
    }
}

/// Where a role's configuration comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// A file, read again on every reload.
    File(PathBuf),
    /// The command line: nothing to read again; a reload re-reads only the files the
    /// configuration names (certificates).
    CommandLine,
}

impl ConfigSource {
    pub fn path(&self) -> Option<&Path> {
        match self {
            ConfigSource::File(path) => Some(path),
            ConfigSource::CommandLine => None,
        }
    }

    /// Names the source in messages.
    pub fn describe(&self) -> String {
        match self {
            ConfigSource::File(path) => path.display().to_string(),
            ConfigSource::CommandLine => "command line".to_string(),
        }
    }
}

/// What a reload did: the answer of `POST /v1/reload` (200), also logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReport {
    /// The configuration version now serving: starts at 1, one more per applied change.
    pub version: u64,
    /// What changed, one entry per setting group (`cache.max_bytes`, `upstream`, `tls`, ...);
    /// empty when the new configuration equals the running one.
    pub changed: Vec<String>,
}

/// Why a reload was refused. The running configuration keeps serving in every case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReloadError {
    /// The new configuration is invalid (every error, with its key path).
    #[error("invalid configuration in {source_name}:\n{errors}")]
    Invalid {
        source_name: String,
        errors: ConfigErrors,
    },
    /// Valid, but changes settings that only a restart can change.
    #[error("these settings cannot change without a restart: {}", .settings.join(", "))]
    NeedsRestart { settings: Vec<String> },
    /// Valid, but something it names could not be put in place (a certificate file, a CA
    /// bundle, a listener address); nothing was changed.
    #[error("cannot apply the new configuration: {0}")]
    Apply(String),
}

impl ReloadError {
    /// The label of `verge_config_reloads_total{result}`.
    pub fn result(&self) -> &'static str {
        match self {
            ReloadError::Invalid { .. } => "invalid",
            ReloadError::NeedsRestart { .. } => "needs_restart",
            ReloadError::Apply(_) => "failed",
        }
    }

    /// The body of a refused `POST /v1/reload` (422).
    pub fn to_body(&self) -> ReloadRefusal {
        let errors = match self {
            ReloadError::Invalid { errors, .. } => {
                errors.errors.iter().map(ToString::to_string).collect()
            }
            ReloadError::NeedsRestart { settings } => settings
                .iter()
                .map(|s| format!("{s}: cannot change without a restart"))
                .collect(),
            ReloadError::Apply(message) => vec![message.clone()],
        };
        ReloadRefusal {
            error: self.result().to_string(),
            errors,
        }
    }
}

/// The body of a refused reload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadRefusal {
    /// `invalid`, `needs_restart` or `failed`.
    pub error: String,
    /// One line per problem.
    pub errors: Vec<String>,
}

/// Notices when a file's contents change: polled, so it works on every filesystem and for
/// files replaced by rename (as editors and config managers do).
#[derive(Debug)]
pub struct FileWatch {
    path: PathBuf,
    seen: Option<Fingerprint>,
}

/// What is compared between polls.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    hash: u64,
}

impl FileWatch {
    /// Starts watching `path` from its current contents.
    pub fn new(path: impl Into<PathBuf>) -> FileWatch {
        let path = path.into();
        let seen = fingerprint(&path);
        FileWatch { path, seen }
    }

    /// True once each time the contents differ from the last poll. A file that cannot be
    /// read is not a change (a reload would fail anyway); it counts once it is readable again.
    pub fn changed(&mut self) -> bool {
        let Some(now) = fingerprint(&self.path) else {
            return false;
        };
        let changed =
            self.seen.as_ref().is_some_and(|seen| seen.hash != now.hash) || self.seen.is_none();
        self.seen = Some(now);
        changed
    }
}

fn fingerprint(path: &Path) -> Option<Fingerprint> {
    // Always the bytes: two writes within the filesystem's timestamp granularity can leave
    // the same size and modification time.
    let bytes = std::fs::read(path).ok()?;
    Some(Fingerprint {
        hash: fnv1a(&bytes),
    })
}

/// FNV-1a: enough to tell one version of a small file from the next.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_watch_fires_once_per_change_of_contents() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("edge.toml");
        std::fs::write(&path, "a = 1\n").expect("write");
        let mut watch = FileWatch::new(&path);
        assert!(!watch.changed(), "nothing changed yet");
        std::fs::write(&path, "a = 2\n").expect("write");
        assert!(watch.changed());
        assert!(!watch.changed(), "the same change is reported once");
        // Replaced by rename, as editors do.
        let next = dir.path().join("edge.toml.new");
        std::fs::write(&next, "a = 3\n").expect("write");
        std::fs::rename(&next, &path).expect("rename");
        assert!(watch.changed());
        std::fs::remove_file(&path).expect("remove");
        assert!(!watch.changed(), "a missing file is not a change");
        std::fs::write(&path, "a = 3\n").expect("write");
        assert!(!watch.changed(), "back with the same contents");
    }

    #[test]
    fn a_refusal_lists_every_problem() {
        let error = ReloadError::NeedsRestart {
            settings: vec!["edge.id".into(), "server.worker_threads".into()],
        };
        assert_eq!(error.result(), "needs_restart");
        let body = error.to_body();
        assert_eq!(body.errors.len(), 2);
        assert!(body.errors[0].starts_with("edge.id"));
        assert!(error.to_string().contains("server.worker_threads"));
    }
}
