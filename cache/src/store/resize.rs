//! Changing a running store's limits ([`CacheStore::set_limits`]), for a config reload.
//!
//! moka fixes a cache's capacity when it is built, so a resize builds a new [`Tier`] with the new
//! limits, copies the live entries into it and swaps it in for every clone of the store at once.
//! Lookups never wait: they read whichever tier is current. Nothing waits for the copy except
//! another resize.
//!
//! What keeps the copy from losing or resurrecting anything:
//!
//! - *Writes.* Every write carries a stamp (when it was written); a copy keeps the stamp of what
//!   it copies and never replaces an entry with a later stamp. A resize bumps an epoch when it
//!   begins and again when it ends (odd while it runs). A write that sees the epoch odd, or
//!   moved, while it stores into the current tier stores again into the current tier and the
//!   tier being filled: so a write the copy may have missed reaches the new tier, and a copy
//!   cannot undo a write.
//! - *Purges and removals.* While a resize runs they are registered with it before they act, and
//!   they act on both tiers (on the old one even after the swap: a URL that the copy skipped
//!   must not stay there, recorded in the index, when the old tier is dropped). The copy checks
//!   the registrations under the lock it holds while it stores each entry, so it copies no URL
//!   purged before it got there, and a URL it copied first is purged in the new tier too.
//!   Hard-purged URLs are skipped; soft-purged ones are copied stale. A purge that saw the epoch
//!   move does it again.
//! - *The purge index.* It records one generation per URL. Every write, including each copy,
//!   stores a new generation, so one entry lives in only one tier; removals reported by the new
//!   tier before it serves are held back (the old tier may still serve those URLs and purges
//!   must find them), then settled against what the new tier holds once it is swapped in.
//!
//! One window remains, as with any write racing a purge: a write that began before a purge and
//! ends after it may store its object after the purge. The old tier is not emptied after the
//! swap, so a lookup that loaded it just before still finds what it held; it is freed with its
//! last reader. Until then both tiers hold their entries: a resize briefly needs memory for
//! both.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use super::{CacheStore, Entry, Tier};
use crate::key::CacheKey;
use crate::object::CachedObject;

/// What a resize did, for logs. Counts are taken beside live traffic, so they are approximate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resized {
    /// False when the store already had these limits: nothing was rebuilt.
    pub changed: bool,
    pub urls_kept: u64,
    pub bytes_kept: u64,
    /// URLs the new tier does not hold: over its object bound, or evicted to fit its byte bound.
    pub urls_dropped: u64,
    pub bytes_dropped: u64,
    /// Stored variants over the new per-object bound, left behind.
    pub variants_oversized: u64,
}

impl fmt::Display for Resized {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.changed {
            return f.write_str("limits unchanged");
        }
        write!(
            f,
            "kept {} URLs ({} bytes), dropped {} URLs ({} bytes, {} oversized variants)",
            self.urls_kept,
            self.bytes_kept,
            self.urls_dropped,
            self.bytes_dropped,
            self.variants_oversized
        )
    }
}

/// How a URL was purged while a resize ran.
#[derive(Debug, Clone, Copy)]
pub(super) enum Purged {
    Hard,
    /// Stale from this time on.
    Soft(SystemTime),
}

/// The resize in progress, if any. See the [module docs](self).
#[derive(Default)]
pub(super) struct Migrations {
    active: Mutex<Option<Migration>>,
    /// Odd while a resize runs: bumped, under `active`'s lock, when one begins and when it ends.
    epoch: AtomicU64,
    /// One resize at a time.
    resizing: Mutex<()>,
}

struct Migration {
    /// The tier being copied, current until the swap.
    old: Arc<Tier>,
    /// The tier being filled, current once swapped in.
    next: Arc<Tier>,
    /// URLs purged since the resize began: not to be copied as they were.
    purged: HashMap<CacheKey, Purged>,
    /// Everything was purged since the resize began: copy nothing more.
    cleared: bool,
}

impl Migrations {
    pub(super) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Whether no resize was running when the epoch read `epoch`.
    pub(super) fn is_quiet(epoch: u64) -> bool {
        epoch % 2 == 0
    }

    /// The tier the running resize fills.
    pub(super) fn target(&self) -> Option<Arc<Tier>> {
        lock(&self.active).as_ref().map(|m| Arc::clone(&m.next))
    }

    /// Tells the running resize that `keys` are purged; returns the tier it copies and the one
    /// it fills, in both of which the caller must purge them: which one is current may change
    /// meanwhile, and a URL the copy skips must not be left in the old tier, where the index
    /// would keep it. A hard purge is never downgraded to a soft one.
    pub(super) fn register(&self, keys: &[CacheKey], purge: Purged) -> Option<[Arc<Tier>; 2]> {
        let mut active = lock(&self.active);
        let migration = active.as_mut()?;
        for key in keys {
            migration
                .purged
                .entry(key.clone())
                .and_modify(|held| {
                    if matches!(purge, Purged::Hard) {
                        *held = Purged::Hard;
                    }
                })
                .or_insert(purge);
        }
        Some(migration.tiers())
    }

    /// Tells the running resize that everything is purged; returns the tier it copies and the
    /// one it fills.
    pub(super) fn clear(&self) -> Option<[Arc<Tier>; 2]> {
        let mut active = lock(&self.active);
        let migration = active.as_mut()?;
        migration.cleared = true;
        migration.purged.clear();
        Some(migration.tiers())
    }
}

impl Migration {
    fn tiers(&self) -> [Arc<Tier>; 2] {
        [Arc::clone(&self.old), Arc::clone(&self.next)]
    }
}

/// A resize in progress; ends it when dropped, even if the resize unwinds half way.
struct Running<'a> {
    migrations: &'a Migrations,
}

impl<'a> Running<'a> {
    fn begin(migrations: &'a Migrations, old: Arc<Tier>, next: Arc<Tier>) -> Running<'a> {
        let mut active = lock(&migrations.active);
        *active = Some(Migration {
            old,
            next,
            purged: HashMap::new(),
            cleared: false,
        });
        migrations.epoch.fetch_add(1, Ordering::SeqCst);
        Running { migrations }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut active = lock(&self.migrations.active);
        *active = None;
        self.migrations.epoch.fetch_add(1, Ordering::SeqCst);
    }
}

impl CacheStore {
    /// Changes the store's limits in place: every clone sees them once this returns. The same
    /// limits are a no-op. Otherwise the live entries are copied into a cache built for the new
    /// limits, which then replaces the old one: variants over `max_object_bytes` are left
    /// behind, and when the entries outgrow `max_bytes` the new cache evicts down to it before
    /// this returns. Lookups, writes and purges go on meanwhile, and the copy neither loses nor
    /// undoes any of them (see `store/resize.rs`).
    ///
    /// Costs one copy of every entry; blocks only other resizes.
    pub fn set_limits(&self, max_bytes: u64, max_object_bytes: usize) -> Resized {
        let shared = &*self.shared;
        let _one_at_a_time = lock(&shared.migrations.resizing);
        let old = shared.tier.load_full();
        if old.max_bytes == max_bytes && old.max_object_bytes == max_object_bytes {
            return Resized::default();
        }
        old.cache.run_pending_tasks();
        let (urls_before, bytes_before) = (old.cache.entry_count(), old.cache.weighted_size());
        let next = Arc::new(Tier::filling(max_bytes, max_object_bytes, &shared.index));
        let mut oversized = 0;
        {
            let _running = Running::begin(&shared.migrations, Arc::clone(&old), Arc::clone(&next));
            for (key, entry) in old.cache.iter() {
                oversized += self.copy(&next, &key, &entry);
            }
            next.cache.run_pending_tasks();
            shared.tier.store(Arc::clone(&next));
        }
        next.go_live();
        // The old tier is left as it is, not invalidated: a lookup that loaded it just before
        // the swap still finds what it held. It is freed with its last reader.
        drop(old);
        next.cache.run_pending_tasks();
        let (urls_kept, bytes_kept) = (next.cache.entry_count(), next.cache.weighted_size());
        Resized {
            changed: true,
            urls_kept,
            bytes_kept,
            urls_dropped: urls_before.saturating_sub(urls_kept),
            bytes_dropped: bytes_before.saturating_sub(bytes_kept),
            variants_oversized: oversized,
        }
    }

    /// Copies one entry of the old tier into `next`, unless purged meanwhile. Returns how many
    /// of its variants were over `next`'s object bound.
    fn copy(&self, next: &Tier, key: &CacheKey, entry: &Entry) -> u64 {
        let kept: Vec<Arc<CachedObject>> = entry
            .variants
            .iter()
            .filter(|v| v.body.len() <= next.max_object_bytes)
            .cloned()
            .collect();
        let oversized = (entry.variants.len() - kept.len()) as u64;
        if kept.is_empty() {
            next.settle(key, entry.generation);
            return oversized;
        }
        // Held while storing, so that a purge registered after this check finds the copy in
        // `next` when it purges there.
        let active = lock(&self.shared.migrations.active);
        let Some(migration) = active.as_ref() else {
            return oversized;
        };
        if migration.cleared {
            return oversized;
        }
        let variants = match migration.purged.get(key) {
            Some(Purged::Hard) => return oversized,
            Some(Purged::Soft(at)) => kept.iter().map(|v| Arc::new(v.expired_at(*at))).collect(),
            None => kept,
        };
        self.store_in(next, key, &variants, entry.written, None);
        oversized
    }
}

/// The guarded data is plain bookkeeping that no user code touches under the lock, so a
/// poisoned lock still guards consistent data.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
