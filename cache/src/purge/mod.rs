//! The purge index: which stored keys carry a surrogate key (a tag), and which keys start with a
//! URL prefix, answered without scanning the cache.
//!
//! The store keeps one [`PurgeIndex`] beside its moka cache: it records a key with the tags of its
//! response when it stores it, and forgets the key when the entry leaves (evicted, expired or
//! purged). A purge then asks the index for the keys and invalidates exactly those.
//!
//! Layout: every key is recorded with its tags in one of `SHARDS` ordered maps (by key hash), and
//! linked from each of its tags in one of `SHARDS` tag maps (by tag hash). The recorded tags are
//! authoritative: inserting a key again replaces its tags, and removing a key unlinks exactly the
//! tags it was recorded with, so links never outlive their key and a tag with no keys left is
//! dropped. Memory is therefore proportional to the keys and (tag, key) pairs indexed.
//!
//! Locking: a writer holds its key's shard while it relinks that key's tags, one tag shard at a
//! time, so concurrent writes to one key cannot leave stray links. Lookups hold one shard at a time,
//! and only for a bounded piece of work (one tag's keys, or `PREFIX_CHUNK` keys of a prefix), so
//! a purge of 10,000 tags delays a concurrent store by at most one such piece. No user code runs
//! under these locks, so a poisoned lock still guards consistent data and is used as is.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::hash_map::{Entry, RandomState};
use std::collections::{btree_map, BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasher, Hash, Hasher};
use std::ops::Bound;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use http::header::HeaderName;
use http::HeaderMap;

use crate::key::CacheKey;

/// Tags kept from one response; the rest are dropped, so a hostile origin cannot make one stored
/// object cost unbounded index memory.
pub const MAX_TAGS_PER_RESPONSE: usize = 256;
/// Longest tag kept, in bytes; longer ones are dropped.
pub const MAX_TAG_BYTES: usize = 256;

const SURROGATE_KEY: HeaderName = HeaderName::from_static("surrogate-key");
const CACHE_TAG: HeaderName = HeaderName::from_static("cache-tag");

/// Shards of the key maps and of the tag maps. More shards mean shorter waits for writers during a
/// big purge, at the cost of one lock and one range seek per shard in a prefix lookup.
const SHARDS: usize = 64;
/// Keys a prefix lookup collects per hold of a shard's lock, so purging a whole site does not
/// block stores for the whole walk.
const PREFIX_CHUNK: usize = 1024;

/// Keys by URL prefix and by surrogate key, for purges. See the [module docs](self).
pub struct PurgeIndex {
    /// Each key with its recorded tags, sorted by tag text; ordered for prefix ranges.
    keys: Box<[RwLock<KeyShard>]>,
    /// Each tag with the keys that carry it; never holds an empty set.
    tags: Box<[RwLock<TagShard>]>,
    /// Picks shards; random so that clients cannot aim every key at one shard.
    shard_hasher: RandomState,
}

type KeyShard = BTreeMap<IndexedKey, Recorded>;

/// What the index holds for one key: the generation of the stored entry it describes, and the
/// tags of that entry (authoritative for unlinking).
#[derive(Debug, Default)]
struct Recorded {
    generation: u64,
    tags: Box<[Arc<str>]>,
}
type TagShard = HashMap<Arc<str>, HashSet<IndexedKey>>;

impl PurgeIndex {
    pub fn new() -> PurgeIndex {
        PurgeIndex {
            keys: (0..SHARDS).map(|_| RwLock::default()).collect(),
            tags: (0..SHARDS).map(|_| RwLock::default()).collect(),
            shard_hasher: RandomState::new(),
        }
    }

    /// Records a stored key and the surrogate keys (tags) of its response. Idempotent; if the key
    /// is already recorded, its tags are replaced by these (a new response for the same URL).
    pub fn insert(&self, key: &CacheKey, tags: &[Arc<str>]) {
        self.insert_generation(key, 0, tags);
    }

    /// Like [`PurgeIndex::insert`], recording the generation of the stored entry, so that a late
    /// report of an older entry's removal ([`PurgeIndex::remove_generation`]) cannot drop it.
    pub fn insert_generation(&self, key: &CacheKey, generation: u64, tags: &[Arc<str>]) {
        let mut wanted: Vec<&Arc<str>> = tags.iter().collect();
        wanted.sort_unstable_by(|a, b| a.as_ref().cmp(b.as_ref()));
        wanted.dedup_by(|a, b| a.as_ref() == b.as_ref());

        let mut keys = write(&self.keys[self.shard_of(key.as_str())]);
        // The key as first recorded: links share its allocation (see `keys_for_tags`).
        let (key, slot) = match keys.entry(IndexedKey(key.clone())) {
            btree_map::Entry::Occupied(entry) => (entry.key().clone(), entry.into_mut()),
            btree_map::Entry::Vacant(entry) => {
                (entry.key().clone(), entry.insert(Recorded::default()))
            }
        };
        slot.generation = generation;
        let old = std::mem::take(&mut slot.tags);
        let mut recorded = Vec::with_capacity(wanted.len());
        for tag in wanted {
            match find(&old, tag) {
                Some(kept) => recorded.push(kept.clone()),
                None => recorded.push(self.link(tag, &key)),
            }
        }
        for tag in old.iter() {
            if find(&recorded, tag).is_none() {
                self.unlink(tag, &key);
            }
        }
        slot.tags = recorded.into_boxed_slice();
    }

    /// Forgets a key (evicted, replaced or purged) and its tags. Unknown keys are ignored.
    ///
    /// The key is unlinked from the tags it was recorded with at [`PurgeIndex::insert`], which are
    /// authoritative; `_tags` is not consulted, so a caller holding stale tags cannot leave a
    /// dangling link.
    pub fn remove(&self, key: &CacheKey, _tags: &[Arc<str>]) {
        let mut keys = write(&self.keys[self.shard_of(key.as_str())]);
        if let Some((key, recorded)) = keys.remove_entry(key.as_str()) {
            for tag in recorded.tags.iter() {
                self.unlink(tag, &key);
            }
        }
    }

    /// Forgets a key only if the index still describes the entry of this generation: the
    /// removal of an entry that a newer one has since replaced leaves the newer one indexed.
    pub fn remove_generation(&self, key: &CacheKey, generation: u64) {
        let mut keys = write(&self.keys[self.shard_of(key.as_str())]);
        if keys
            .get(key.as_str())
            .is_some_and(|r| r.generation == generation)
        {
            if let Some((key, recorded)) = keys.remove_entry(key.as_str()) {
                for tag in recorded.tags.iter() {
                    self.unlink(tag, &key);
                }
            }
        }
    }

    /// Keys carrying any of these tags, deduplicated, in no particular order. Costs one hash
    /// lookup per tag, one copy per key found and a sort of the keys' addresses.
    ///
    /// Every link of a key shares the key's one allocation, so duplicates are found by address
    /// without reading the keys' text again (which would cost a cache miss per key). The one
    /// exception: a key removed and stored again while the lookup runs may be returned twice,
    /// which is harmless to a purge.
    pub fn keys_for_tags<S: AsRef<str>>(&self, tags: &[S]) -> Vec<CacheKey> {
        let mut found = Vec::new();
        for tag in tags {
            let tag = tag.as_ref();
            // Locked per tag, not per shard, so a writer waits for at most one tag's keys.
            let map = read(&self.tags[self.shard_of(tag)]);
            if let Some(keys) = map.get(tag) {
                found.extend(keys.iter().map(|key| key.0.clone()));
            }
        }
        if tags.len() > 1 {
            found.sort_unstable_by_key(|key| key.as_str().as_ptr());
            found.dedup_by(|a, b| std::ptr::eq(a.as_str(), b.as_str()));
        }
        found
    }

    /// Keys whose text starts with `prefix` (e.g. `http://example.com/images/`), from a range of
    /// each shard's ordered map: one seek per shard plus one step per key found.
    pub fn keys_with_prefix(&self, prefix: &str) -> Vec<CacheKey> {
        let mut found: Vec<CacheKey> = Vec::new();
        for shard in self.keys.iter() {
            let mut after: Option<CacheKey> = None;
            loop {
                let map = read(shard);
                let lower = match &after {
                    Some(last) => Bound::Excluded(last.as_str()),
                    None => Bound::Included(prefix),
                };
                let before = found.len();
                found.extend(
                    map.range::<str, _>((lower, Bound::Unbounded))
                        .map(|(key, _)| &key.0)
                        .take_while(|key| key.as_str().starts_with(prefix))
                        .take(PREFIX_CHUNK)
                        .cloned(),
                );
                drop(map);
                if found.len() - before < PREFIX_CHUNK {
                    break;
                }
                after = found.last().cloned();
            }
        }
        found
    }

    pub fn key_count(&self) -> usize {
        self.keys.iter().map(|shard| read(shard).len()).sum()
    }

    pub fn tag_count(&self) -> usize {
        self.tags.iter().map(|shard| read(shard).len()).sum()
    }

    /// Forgets everything, atomically with respect to concurrent writers.
    pub fn clear(&self) {
        let mut keys: Vec<_> = self.keys.iter().map(write).collect();
        let mut tags: Vec<_> = self.tags.iter().map(write).collect();
        for shard in &mut keys {
            **shard = KeyShard::new();
        }
        for shard in &mut tags {
            **shard = TagShard::new();
        }
    }

    fn shard_of(&self, text: &str) -> usize {
        // Truncation is intended: only the low bits pick the shard.
        self.shard_hasher.hash_one(text) as usize % SHARDS
    }

    /// Links `key` from `tag`; returns the tag as the index holds it, so that every key carrying
    /// a tag shares one allocation of its text.
    fn link(&self, tag: &Arc<str>, key: &IndexedKey) -> Arc<str> {
        let mut map = write(&self.tags[self.shard_of(tag)]);
        match map.entry(tag.clone()) {
            Entry::Occupied(mut entry) => {
                let held = entry.key().clone();
                entry.get_mut().insert(key.clone());
                held
            }
            Entry::Vacant(entry) => {
                entry.insert(HashSet::from([key.clone()]));
                tag.clone()
            }
        }
    }

    /// Unlinks `key` from `tag`, dropping the tag when no key carries it any more.
    fn unlink(&self, tag: &str, key: &IndexedKey) {
        let mut map = write(&self.tags[self.shard_of(tag)]);
        let Some(keys) = map.get_mut(tag) else {
            return;
        };
        keys.remove(key.as_str());
        if keys.is_empty() {
            map.remove(tag);
            let len = map.len();
            if is_sparse(len, map.capacity()) {
                map.shrink_to(len * 2);
            }
        } else if is_sparse(keys.len(), keys.capacity()) {
            keys.shrink_to(keys.len() * 2);
        }
    }
}

impl Default for PurgeIndex {
    fn default() -> PurgeIndex {
        PurgeIndex::new()
    }
}

/// A key as the index holds it: ordered, hashed and looked up by its text, so that maps can be
/// queried with a `&str` (a prefix, or the text of a caller's key).
#[derive(Clone)]
struct IndexedKey(CacheKey);

impl IndexedKey {
    fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl Borrow<str> for IndexedKey {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for IndexedKey {
    fn eq(&self, other: &IndexedKey) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for IndexedKey {}

impl PartialOrd for IndexedKey {
    fn partial_cmp(&self, other: &IndexedKey) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for IndexedKey {
    fn cmp(&self, other: &IndexedKey) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for IndexedKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

/// Surrogate keys of a response, from every `Surrogate-Key` and `Cache-Tag` header line: separated
/// by spaces, tabs and/or commas, empty items dropped, duplicates removed, each at most
/// [`MAX_TAG_BYTES`] (longer ones dropped) and at most [`MAX_TAGS_PER_RESPONSE`] per response (the
/// rest dropped). Non-UTF-8 lines are ignored. Tags are case-sensitive.
pub fn surrogate_keys(headers: &HeaderMap) -> Vec<Arc<str>> {
    let lines = headers
        .get_all(SURROGATE_KEY)
        .iter()
        .chain(headers.get_all(CACHE_TAG).iter());
    let mut seen: HashSet<&str> = HashSet::new();
    let mut tags = Vec::new();
    for line in lines {
        let Ok(line) = std::str::from_utf8(line.as_bytes()) else {
            continue;
        };
        for tag in line.split([' ', '\t', ',']) {
            if tag.is_empty() || tag.len() > MAX_TAG_BYTES || !seen.insert(tag) {
                continue;
            }
            tags.push(Arc::from(tag));
            if tags.len() == MAX_TAGS_PER_RESPONSE {
                return tags;
            }
        }
    }
    tags
}

/// The tag in `sorted` (sorted by text) with the same text as `tag`.
fn find<'a>(sorted: &'a [Arc<str>], tag: &str) -> Option<&'a Arc<str>> {
    sorted
        .binary_search_by(|held| held.as_ref().cmp(tag))
        .ok()
        .map(|at| &sorted[at])
}

/// Whether a hash table is using under a quarter of its room (and is big enough to care).
fn is_sparse(len: usize, capacity: usize) -> bool {
    capacity > 32 && len * 4 < capacity
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
