//! The in-memory store: stored responses by URL (each URL with up to [`MAX_VARIANTS`] variants
//! selected by `Vary`), in a moka cache bounded by the bytes of what it holds, beside the
//! [`PurgeIndex`] that finds URLs by prefix and surrogate key.
//!
//! The moka cache and its limits form a tier (`store/tier.rs`), held in an `ArcSwap` that every
//! clone of the store shares, so that [`CacheStore::set_limits`] can replace it while the node
//! serves (moka cannot change a cache's capacity once built); `store/resize.rs` explains how
//! writes and purges that overlap a resize reach the new tier.
//!
//! Index upkeep: every stored entry has a generation of its own. A write records the URL's tags
//! with the new generation in the index and stores the entry inside one moka compute on the key,
//! so writes of one URL reach the index in the order they reach the cache; a removal forgets the
//! URL only if the index still records the generation that left.

mod resize;
mod tier;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use http::HeaderMap;
use moka::ops::compute::Op;

use crate::key::CacheKey;
use crate::object::CachedObject;
use crate::policy::vary_names;
use crate::purge::PurgeIndex;

pub use resize::Resized;
use resize::{Migrations, Purged};
use tier::Tier;

/// Variants kept per URL; storing one more drops the oldest.
pub const MAX_VARIANTS: usize = 16;

/// Every stored variant of one URL.
#[derive(Debug)]
struct Entry {
    /// Tells this entry from every other one for the same URL, in any tier, so that the index
    /// forgets a URL only when the entry it recorded leaves, not an older one whose removal is
    /// reported late or a copy left behind in a replaced tier.
    generation: u64,
    /// When the content was written: the generation of the write that made it. A copy into a new
    /// tier keeps it, so that a copy never replaces a later write of the same URL.
    written: u64,
    variants: Vec<Arc<CachedObject>>,
}

impl Entry {
    fn weight(&self, key: &CacheKey) -> u32 {
        let bytes: usize = self.variants.iter().map(|v| v.weight_bytes()).sum();
        u32::try_from(key.len() + bytes).unwrap_or(u32::MAX)
    }

    fn tags(&self) -> Vec<Arc<str>> {
        let mut tags: Vec<Arc<str>> = self
            .variants
            .iter()
            .flat_map(|v| v.surrogate_keys.iter().cloned())
            .collect();
        tags.sort_unstable();
        tags.dedup();
        tags
    }
}

/// What a lookup found for a request.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// Nothing stored for the URL.
    UriMiss,
    /// The URL is stored, but no variant matches the request's `Vary`-named headers.
    VaryMiss,
    Found(Arc<CachedObject>),
}

/// What to purge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurgeTarget {
    /// One URL, every variant.
    Url(CacheKey),
    /// Every URL starting with this text (scheme, host, path prefix).
    Prefix(String),
    /// Every URL whose response carries one of these surrogate keys.
    Tags(Vec<String>),
    All,
}

/// Cached responses, bounded in bytes (heads + bodies + keys). Clones share everything,
/// including limits changed later by [`CacheStore::set_limits`].
#[derive(Clone)]
pub struct CacheStore {
    shared: Arc<Shared>,
}

struct Shared {
    /// The cache that lookups and writes use, with its limits; replaced whole by a resize.
    tier: ArcSwap<Tier>,
    index: Arc<PurgeIndex>,
    /// Source of entry generations and write stamps: one counter, so both order every write.
    generations: AtomicU64,
    /// The resize in progress, if any, and what writers and purges need to know about it.
    migrations: Migrations,
}

impl CacheStore {
    /// A store that holds at most `max_bytes`, and no single object over `max_object_bytes`.
    pub fn new(max_bytes: u64, max_object_bytes: usize) -> CacheStore {
        let index = Arc::new(PurgeIndex::new());
        let tier = Tier::live(max_bytes, max_object_bytes, &index);
        CacheStore {
            shared: Arc::new(Shared {
                tier: ArcSwap::from_pointee(tier),
                index,
                generations: AtomicU64::new(1),
                migrations: Migrations::default(),
            }),
        }
    }

    /// The stored variant of `key` that `request` selects.
    pub fn lookup(&self, key: &CacheKey, request: &HeaderMap) -> Lookup {
        let Some(entry) = self.shared.tier.load().cache.get(key) else {
            return Lookup::UriMiss;
        };
        entry
            .variants
            .iter()
            .find(|v| v.vary.matches(request))
            .map_or(Lookup::VaryMiss, |v| Lookup::Found(Arc::clone(v)))
    }

    /// Stores an object as the variant its `Vary` key selects, keeping the URL's other variants
    /// that vary on the same header names. Returns false (and stores nothing) when the object is
    /// over the per-object bound.
    pub fn insert(&self, key: CacheKey, object: Arc<CachedObject>) -> bool {
        let mut variants = vec![Arc::clone(&object)];
        {
            let tier = self.shared.tier.load();
            if object.body.len() > tier.max_object_bytes {
                return false;
            }
            let names: Vec<String> = vary_names(&object.headers).collect();
            if let Some(previous) = tier.cache.get(&key) {
                variants.extend(
                    previous
                        .variants
                        .iter()
                        .filter(|v| {
                            v.vary != object.vary
                                && vary_names(&v.headers).eq(names.iter().cloned())
                        })
                        .take(MAX_VARIANTS - 1)
                        .cloned(),
                );
            }
        }
        self.write(&key, &variants);
        true
    }

    /// Stores `variants` as the newest write of `key`: in the current tier and, when a resize
    /// overlaps the write, also in the tier that the resize fills.
    fn write(&self, key: &CacheKey, variants: &[Arc<CachedObject>]) {
        let shared = &*self.shared;
        let stamp = self.next_generation();
        let epoch = shared.migrations.epoch();
        let mut stored = self.store_in(&shared.tier.load(), key, variants, stamp, None);
        if Migrations::is_quiet(epoch) && shared.migrations.epoch() == epoch {
            return;
        }
        // A resize overlapped the store, or more than one did. Store again, in the tier that
        // serves now (an earlier resize may have copied the URL before the first store) and in
        // the one a running resize fills, until no resize begins or ends meanwhile. Copies of
        // the same write are refused by the stamp.
        loop {
            let epoch = shared.migrations.epoch();
            let next = shared.migrations.target();
            let current = shared.tier.load_full();
            for tier in std::iter::once(&current).chain(next.as_ref()) {
                stored = self.store_in(tier, key, variants, stamp, stored).or(stored);
            }
            if shared.migrations.epoch() == epoch {
                return;
            }
        }
    }

    /// Stores the variants of `key` that fit `tier`'s object bound, as written at `stamp`,
    /// unless the tier holds a write at least as recent (whose index record is then restored,
    /// in case a write to a replaced tier overwrote it). Returns the generation stored.
    ///
    /// `earlier` is the generation this write stored in another tier: if nothing fits here, the
    /// index record it left is settled against what this tier holds.
    fn store_in(
        &self,
        tier: &Tier,
        key: &CacheKey,
        variants: &[Arc<CachedObject>],
        stamp: u64,
        earlier: Option<u64>,
    ) -> Option<u64> {
        let kept: Vec<Arc<CachedObject>> = variants
            .iter()
            .filter(|v| v.body.len() <= tier.max_object_bytes)
            .cloned()
            .collect();
        if kept.is_empty() {
            if let Some(generation) = earlier {
                tier.settle(key, generation);
            }
            return None;
        }
        let index = &self.shared.index;
        let mut stored = None;
        tier.cache.entry(key.clone()).and_compute_with(|held| {
            if let Some(held) = held {
                let held = held.into_value();
                if held.written >= stamp {
                    index.insert_generation(key, held.generation, &held.tags());
                    return Op::Nop;
                }
            }
            let entry = Entry {
                generation: self.next_generation(),
                written: stamp,
                variants: kept,
            };
            // Indexed first: if moka turns the new entry away at once, its removal report (for
            // this generation) then finds it in the index and takes it out again.
            index.insert_generation(key, entry.generation, &entry.tags());
            stored = Some(entry.generation);
            Op::Put(Arc::new(entry))
        });
        stored
    }

    /// Replaces the entry of `key` in `tier` by a copy whose variants are stale from `now`.
    /// Returns whether the tier held the URL.
    fn restale_in(&self, tier: &Tier, key: &CacheKey, now: SystemTime) -> bool {
        let index = &self.shared.index;
        let mut found = false;
        tier.cache.entry(key.clone()).and_compute_with(|held| {
            let Some(held) = held else {
                return Op::Nop;
            };
            let generation = self.next_generation();
            let entry = Entry {
                generation,
                written: generation,
                variants: held
                    .value()
                    .variants
                    .iter()
                    .map(|v| Arc::new(v.expired_at(now)))
                    .collect(),
            };
            index.insert_generation(key, generation, &entry.tags());
            found = true;
            Op::Put(Arc::new(entry))
        });
        found
    }

    fn next_generation(&self) -> u64 {
        self.shared.generations.fetch_add(1, Ordering::Relaxed)
    }

    /// Removes every variant of a URL. Returns whether anything was stored.
    /// The keys a cache rule made of it go too.
    pub fn remove(&self, key: &CacheKey) -> bool {
        self.purge_keys(&self.with_rule_variants(key), Purged::Hard) > 0
    }

    /// `key` and the keys cache rules made of its URL (with request fields, cookies or the
    /// device class added).
    fn with_rule_variants(&self, key: &CacheKey) -> Vec<CacheKey> {
        let mut keys = vec![key.clone()];
        keys.extend(self.shared.index.keys_with_prefix(&key.variants_prefix()));
        keys
    }

    /// Purges what `target` names: hard (gone) or soft (kept but stale from `now`, so it is
    /// revalidated before use and may still serve under stale-if-error). Returns how many URLs
    /// were purged.
    pub fn purge(&self, target: &PurgeTarget, soft: bool, now: SystemTime) -> usize {
        let index = &self.shared.index;
        let keys = match target {
            PurgeTarget::Url(key) => self.with_rule_variants(key),
            PurgeTarget::Prefix(prefix) => index.keys_with_prefix(prefix),
            PurgeTarget::Tags(tags) => index.keys_for_tags(tags),
            PurgeTarget::All if !soft => return self.clear(),
            PurgeTarget::All => index.keys_with_prefix(""),
        };
        if soft {
            self.purge_keys(&keys, Purged::Soft(now))
        } else {
            self.purge_keys(&keys, Purged::Hard)
        }
    }

    /// Removes (hard) or restales (soft) `keys` in the current tier and, while a resize runs, in
    /// both of its tiers, after telling the resize so that it copies none of them as they were.
    /// Returns how many of the keys were stored.
    fn purge_keys(&self, keys: &[CacheKey], purge: Purged) -> usize {
        let migrations = &self.shared.migrations;
        let mut hit = vec![false; keys.len()];
        loop {
            let epoch = migrations.epoch();
            let migrating = if Migrations::is_quiet(epoch) {
                None
            } else {
                migrations.register(keys, purge)
            };
            let tiers = self.tiers_with(migrating);
            for (key, hit) in keys.iter().zip(hit.iter_mut()) {
                for tier in &tiers {
                    *hit |= match purge {
                        Purged::Hard => tier.cache.remove(key).is_some(),
                        Purged::Soft(now) => self.restale_in(tier, key, now),
                    };
                }
            }
            // A resize that began meanwhile may have copied a key before it was purged here.
            if migrations.epoch() == epoch {
                return hit.iter().filter(|h| **h).count();
            }
        }
    }

    /// Removes everything. Returns how many URLs were stored.
    fn clear(&self) -> usize {
        let migrations = &self.shared.migrations;
        let mut count = 0;
        loop {
            let epoch = migrations.epoch();
            let migrating = if Migrations::is_quiet(epoch) {
                None
            } else {
                migrations.clear()
            };
            let tiers = self.tiers_with(migrating);
            tiers[0].cache.run_pending_tasks();
            let held = tiers[0].cache.entry_count();
            count = count.max(usize::try_from(held).unwrap_or(usize::MAX));
            for tier in &tiers {
                tier.cache.invalidate_all();
                tier.cache.run_pending_tasks();
            }
            self.shared.index.clear();
            if migrations.epoch() == epoch {
                return count;
            }
        }
    }

    /// The current tier first, then those of a running resize that are not the current one.
    fn tiers_with(&self, migrating: Option<[Arc<Tier>; 2]>) -> Vec<Arc<Tier>> {
        let mut tiers = vec![self.shared.tier.load_full()];
        for tier in migrating.into_iter().flatten() {
            if !tiers.iter().any(|t| Arc::ptr_eq(t, &tier)) {
                tiers.push(tier);
            }
        }
        tiers
    }

    pub fn max_object_bytes(&self) -> usize {
        self.shared.tier.load().max_object_bytes
    }

    pub fn max_bytes(&self) -> u64 {
        self.shared.tier.load().max_bytes
    }

    /// Applies pending evictions so that the counts below are exact.
    pub fn sync(&self) {
        self.shared.tier.load().cache.run_pending_tasks();
    }

    /// URLs held (approximate until [`CacheStore::sync`]).
    pub fn url_count(&self) -> u64 {
        self.shared.tier.load().cache.entry_count()
    }

    /// Bytes held, by the weigher (approximate until [`CacheStore::sync`]).
    pub fn weighted_bytes(&self) -> u64 {
        self.shared.tier.load().cache.weighted_size()
    }

    /// URLs and surrogate keys in the purge index.
    pub fn index_sizes(&self) -> (usize, usize) {
        (self.shared.index.key_count(), self.shared.index.tag_count())
    }
}

#[cfg(test)]
mod tests;
