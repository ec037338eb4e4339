//! One moka cache with the limits it was built for, and the upkeep of the purge index when its
//! entries leave.
//!
//! A tier is *live* when it is the one lookups use: an entry leaving it (evicted, expired,
//! removed) is forgotten by the index at once, if the index still records that entry's
//! generation. A tier being *filled* by a resize is not served yet, and the old tier may still
//! serve the same URLs, which the index must keep finding for purges; so the removals it reports
//! are held back and settled when it goes live (see [`Tier::go_live`]).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use moka::notification::RemovalCause;
use moka::ops::compute::Op;

use super::Entry;
use crate::key::CacheKey;
use crate::purge::PurgeIndex;

/// Removals reported by a tier that is not live yet: (key, generation) pairs, or `None` once
/// the tier is live.
type HeldBack = Mutex<Option<Vec<(CacheKey, u64)>>>;

pub(super) struct Tier {
    pub(super) cache: moka::sync::Cache<CacheKey, Arc<Entry>>,
    pub(super) max_bytes: u64,
    pub(super) max_object_bytes: usize,
    index: Arc<PurgeIndex>,
    held_back: Arc<HeldBack>,
}

impl Tier {
    /// A tier that serves from the start.
    pub(super) fn live(max_bytes: u64, max_object_bytes: usize, index: &Arc<PurgeIndex>) -> Tier {
        Tier::build(max_bytes, max_object_bytes, index, None)
    }

    /// A tier that a resize fills before it serves; [`Tier::go_live`] ends that.
    pub(super) fn filling(
        max_bytes: u64,
        max_object_bytes: usize,
        index: &Arc<PurgeIndex>,
    ) -> Tier {
        Tier::build(max_bytes, max_object_bytes, index, Some(Vec::new()))
    }

    fn build(
        max_bytes: u64,
        max_object_bytes: usize,
        index: &Arc<PurgeIndex>,
        held_back: Option<Vec<(CacheKey, u64)>>,
    ) -> Tier {
        let held_back = Arc::new(Mutex::new(held_back));
        let listener_index = Arc::clone(index);
        let listener_held_back = Arc::clone(&held_back);
        let cache = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &CacheKey, entry: &Arc<Entry>| entry.weight(key))
            .eviction_listener(move |key: Arc<CacheKey>, entry: Arc<Entry>, cause| {
                if cause == RemovalCause::Replaced {
                    return;
                }
                if let Some(held) = lock(&listener_held_back).as_mut() {
                    held.push(((*key).clone(), entry.generation));
                    return;
                }
                listener_index.remove_generation(&key, entry.generation);
            })
            .build();
        Tier {
            cache,
            max_bytes,
            max_object_bytes,
            index: Arc::clone(index),
            held_back,
        }
    }

    /// The entry of `key` with this generation is not (or no longer) in this tier: once the tier
    /// is live, make the index describe what the tier holds for `key`, or forget that generation.
    pub(super) fn settle(&self, key: &CacheKey, generation: u64) {
        if let Some(held) = lock(&self.held_back).as_mut() {
            held.push((key.clone(), generation));
            return;
        }
        self.reconcile(key, generation);
    }

    /// Called once the tier serves (and the tier it replaced no longer does): removals held
    /// back are settled, later ones are applied as they come.
    pub(super) fn go_live(&self) {
        let held = lock(&self.held_back).take().unwrap_or_default();
        for (key, generation) in held {
            self.reconcile(&key, generation);
        }
    }

    /// Inside a compute on the key, so that no write of it interleaves: re-records the entry
    /// this tier holds for `key`, or forgets `generation` when it holds none.
    fn reconcile(&self, key: &CacheKey, generation: u64) {
        let index = &self.index;
        self.cache.entry(key.clone()).and_compute_with(|held| {
            match held {
                Some(held) => {
                    let held = held.into_value();
                    index.insert_generation(key, held.generation, &held.tags());
                }
                None => index.remove_generation(key, generation),
            }
            Op::Nop
        });
    }
}

/// The guarded data is a plain list that no user code touches under the lock, so a poisoned
/// lock still guards consistent data.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
