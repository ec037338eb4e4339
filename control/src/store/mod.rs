//! Where control keeps what must outlive it: the purge log, and — when several replicas share
//! one etcd cluster — the node registrations, the routing table and the leader.
//!
//! - [`Store::Embedded`]: the fsynced [`PurgeLog`] in `controller.data_dir`; one control.
//! - [`Store::Shared`]: [`SharedLog`], the purge log in etcd, numbered by a counter every
//!   replica increments in the same transaction that writes the purge, so a sequence number is
//!   the same on every replica and across restarts. Each replica mirrors the retained purges in
//!   memory from a watch ([`crate::replica`] runs it).

pub mod etcd;
pub mod keys;
#[cfg(test)]
mod properties;
pub mod shared;

use crate::log::{LogError, LogRecord, PurgeLog, Since};
use verge_config::wire::PurgeSpec;

pub use shared::SharedLog;

/// The purge log in force.
pub enum Store {
    Embedded(PurgeLog),
    Shared(std::sync::Arc<SharedLog>),
}

/// Why a purge could not be committed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Log(#[from] LogError),
    /// etcd did not commit it: it may be unreachable or without quorum.
    #[error("purge not committed to etcd: {0}")]
    Etcd(#[from] etcd::EtcdError),
    /// Too many purges are waiting for etcd already.
    #[error("{0} purges are already waiting for etcd; retry shortly")]
    Busy(usize),
}

impl StoreError {
    /// Whether the store, not the request, is at fault: 503, and the client may retry.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Log(e) => matches!(e, LogError::Busy { .. }),
            StoreError::Etcd(_) | StoreError::Busy(_) => true,
        }
    }
}

impl Store {
    pub async fn append(
        &self,
        spec: PurgeSpec,
        accepted_at_ms: u64,
    ) -> Result<LogRecord, StoreError> {
        match self {
            Store::Embedded(log) => Ok(log.append(spec, accepted_at_ms).await?),
            Store::Shared(log) => log.append(spec, accepted_at_ms).await,
        }
    }

    /// Sequence number of the newest purge this replica holds.
    pub fn head(&self) -> u64 {
        match self {
            Store::Embedded(log) => log.head(),
            Store::Shared(log) => log.head(),
        }
    }

    pub fn since(&self, after: u64, max: usize) -> Since {
        match self {
            Store::Embedded(log) => log.since(after, max),
            Store::Shared(log) => log.since(after, max),
        }
    }

    pub fn get(&self, seq: u64) -> Option<LogRecord> {
        match self {
            Store::Embedded(log) => log.get(seq),
            Store::Shared(log) => log.get(seq),
        }
    }

    pub fn shared(&self) -> Option<&std::sync::Arc<SharedLog>> {
        match self {
            Store::Embedded(_) => None,
            Store::Shared(log) => Some(log),
        }
    }
}
