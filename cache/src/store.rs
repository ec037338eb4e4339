//! The in-memory store: stored responses by URL (each URL with up to [`MAX_VARIANTS`] variants
//! selected by `Vary`), in a moka cache bounded by the bytes of what it holds, beside the
//! [`PurgeIndex`] that finds URLs by prefix and surrogate key.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use http::HeaderMap;
use moka::notification::RemovalCause;

use crate::key::CacheKey;
use crate::object::CachedObject;
use crate::policy::vary_names;
use crate::purge::PurgeIndex;

/// Variants kept per URL; storing one more drops the oldest.
pub const MAX_VARIANTS: usize = 16;

/// Every stored variant of one URL.
#[derive(Debug)]
struct Entry {
    /// Tells this entry from a later one for the same URL, so that the index forgets a URL only
    /// when the entry it recorded leaves, not an older one whose eviction is reported late.
    generation: u64,
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

/// Cached responses, bounded in bytes (heads + bodies + keys).
#[derive(Clone)]
pub struct CacheStore {
    inner: moka::sync::Cache<CacheKey, Arc<Entry>>,
    index: Arc<PurgeIndex>,
    generations: Arc<AtomicU64>,
    max_object_bytes: usize,
}

impl CacheStore {
    /// A store that holds at most `max_bytes`, and no single object over `max_object_bytes`.
    pub fn new(max_bytes: u64, max_object_bytes: usize) -> CacheStore {
        let index = Arc::new(PurgeIndex::new());
        let listener_index = Arc::clone(&index);
        let inner = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &CacheKey, entry: &Arc<Entry>| entry.weight(key))
            .eviction_listener(move |key: Arc<CacheKey>, entry: Arc<Entry>, cause| {
                if cause != RemovalCause::Replaced {
                    listener_index.remove_generation(&key, entry.generation);
                }
            })
            .build();
        CacheStore {
            inner,
            index,
            generations: Arc::new(AtomicU64::new(1)),
            max_object_bytes,
        }
    }

    /// The stored variant of `key` that `request` selects.
    pub fn lookup(&self, key: &CacheKey, request: &HeaderMap) -> Lookup {
        let Some(entry) = self.inner.get(key) else {
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
        if object.body.len() > self.max_object_bytes {
            return false;
        }
        let names: Vec<String> = vary_names(&object.headers).collect();
        let mut variants = vec![Arc::clone(&object)];
        if let Some(previous) = self.inner.get(&key) {
            variants.extend(
                previous
                    .variants
                    .iter()
                    .filter(|v| {
                        v.vary != object.vary && vary_names(&v.headers).eq(names.iter().cloned())
                    })
                    .take(MAX_VARIANTS - 1)
                    .cloned(),
            );
        }
        self.put(key, variants);
        true
    }

    fn put(&self, key: CacheKey, variants: Vec<Arc<CachedObject>>) {
        let entry = Arc::new(Entry {
            generation: self.generations.fetch_add(1, Ordering::Relaxed),
            variants,
        });
        // Indexed first: if moka turns the new entry away at once, its removal report (for this
        // generation) then finds it in the index and takes it out again.
        self.index
            .insert_generation(&key, entry.generation, &entry.tags());
        self.inner.insert(key, entry);
    }

    /// Removes every variant of a URL. Returns whether anything was stored.
    pub fn remove(&self, key: &CacheKey) -> bool {
        self.inner.remove(key).is_some()
    }

    /// Purges what `target` names: hard (gone) or soft (kept but stale from `now`, so it is
    /// revalidated before use and may still serve under stale-if-error). Returns how many URLs
    /// were purged.
    pub fn purge(&self, target: &PurgeTarget, soft: bool, now: SystemTime) -> usize {
        let keys = match target {
            PurgeTarget::Url(key) => vec![key.clone()],
            PurgeTarget::Prefix(prefix) => self.index.keys_with_prefix(prefix),
            PurgeTarget::Tags(tags) => self.index.keys_for_tags(tags),
            PurgeTarget::All if !soft => {
                self.inner.run_pending_tasks();
                let count = usize::try_from(self.inner.entry_count()).unwrap_or(usize::MAX);
                self.inner.invalidate_all();
                self.inner.run_pending_tasks();
                self.index.clear();
                return count;
            }
            PurgeTarget::All => self.inner.iter().map(|(key, _)| (*key).clone()).collect(),
        };
        keys.iter()
            .filter(|key| self.purge_key(key, soft, now))
            .count()
    }

    fn purge_key(&self, key: &CacheKey, soft: bool, now: SystemTime) -> bool {
        if !soft {
            return self.remove(key);
        }
        let Some(entry) = self.inner.get(key) else {
            return false;
        };
        let variants = entry
            .variants
            .iter()
            .map(|v| Arc::new(v.expired_at(now)))
            .collect();
        self.put(key.clone(), variants);
        true
    }

    pub fn max_object_bytes(&self) -> usize {
        self.max_object_bytes
    }

    /// Applies pending evictions so that the counts below are exact.
    pub fn sync(&self) {
        self.inner.run_pending_tasks();
    }

    /// URLs held (approximate until [`CacheStore::sync`]).
    pub fn url_count(&self) -> u64 {
        self.inner.entry_count()
    }

    /// Bytes held, by the weigher (approximate until [`CacheStore::sync`]).
    pub fn weighted_bytes(&self) -> u64 {
        self.inner.weighted_size()
    }

    /// URLs and surrogate keys in the purge index.
    pub fn index_sizes(&self) -> (usize, usize) {
        (self.index.key_count(), self.index.tag_count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::VaryKey;
    use crate::policy::CacheControl;
    use bytes::Bytes;
    use http::{HeaderValue, StatusCode};
    use std::time::Duration;

    fn object_with(
        size: usize,
        headers: HeaderMap,
        request: &HeaderMap,
        tags: &[&str],
    ) -> Arc<CachedObject> {
        Arc::new(CachedObject {
            status: StatusCode::OK,
            vary: VaryKey::new(&headers, request),
            headers,
            body: Bytes::from(vec![b'x'; size]),
            response_time: SystemTime::now(),
            corrected_initial_age: Duration::ZERO,
            freshness_lifetime: Duration::from_secs(60),
            cc: CacheControl::default(),
            surrogate_keys: tags.iter().map(|t| Arc::from(*t)).collect(),
        })
    }

    fn object(size: usize) -> Arc<CachedObject> {
        object_with(size, HeaderMap::new(), &HeaderMap::new(), &[])
    }

    fn key(path: &str) -> CacheKey {
        CacheKey::from_parts("http", "h", path)
    }

    fn found(l: Lookup) -> Option<Arc<CachedObject>> {
        match l {
            Lookup::Found(o) => Some(o),
            _ => None,
        }
    }

    #[test]
    fn byte_bound_holds_after_many_inserts() {
        let max = 1 << 20;
        let store = CacheStore::new(max, 64 << 10);
        for i in 0..2_000 {
            store.insert(key(&format!("/{i}")), object(4 << 10));
        }
        store.sync();
        assert!(
            store.weighted_bytes() <= max,
            "{} > {max}",
            store.weighted_bytes()
        );
        assert!(store.url_count() > 0);
        assert!(store.url_count() < 2_000);
        let (indexed, _) = store.index_sizes();
        assert_eq!(
            indexed as u64,
            store.url_count(),
            "evicted URLs leave the index"
        );
    }

    #[test]
    fn objects_over_the_bound_are_refused() {
        let store = CacheStore::new(1 << 20, 100);
        assert!(!store.insert(key("/big"), object(101)));
        assert!(matches!(
            store.lookup(&key("/big"), &HeaderMap::new()),
            Lookup::UriMiss
        ));
        assert!(store.insert(key("/big"), object(100)));
        assert!(found(store.lookup(&key("/big"), &HeaderMap::new())).is_some());
    }

    #[test]
    fn variants_are_kept_per_vary_value() {
        let store = CacheStore::new(1 << 20, 1 << 16);
        let mut vary = HeaderMap::new();
        vary.insert("vary", HeaderValue::from_static("accept-language"));
        let req = |lang: &'static str| {
            let mut h = HeaderMap::new();
            h.insert("accept-language", HeaderValue::from_static(lang));
            h
        };
        store.insert(key("/v"), object_with(1, vary.clone(), &req("en"), &[]));
        store.insert(key("/v"), object_with(2, vary.clone(), &req("fr"), &[]));
        assert_eq!(
            found(store.lookup(&key("/v"), &req("en")))
                .unwrap()
                .body
                .len(),
            1
        );
        assert_eq!(
            found(store.lookup(&key("/v"), &req("fr")))
                .unwrap()
                .body
                .len(),
            2
        );
        assert!(matches!(
            store.lookup(&key("/v"), &req("de")),
            Lookup::VaryMiss
        ));
        store.insert(key("/v"), object_with(3, vary, &req("en"), &[]));
        assert_eq!(
            found(store.lookup(&key("/v"), &req("en")))
                .unwrap()
                .body
                .len(),
            3,
            "replaced"
        );
        assert_eq!(
            found(store.lookup(&key("/v"), &req("fr")))
                .unwrap()
                .body
                .len(),
            2,
            "kept"
        );
    }

    #[test]
    fn purges_by_url_prefix_tag_and_all() {
        let store = CacheStore::new(1 << 20, 1 << 16);
        let none = HeaderMap::new();
        store.insert(
            key("/img/a"),
            object_with(1, HeaderMap::new(), &none, &["img", "a"]),
        );
        store.insert(
            key("/img/b"),
            object_with(1, HeaderMap::new(), &none, &["img"]),
        );
        store.insert(
            key("/css/c"),
            object_with(1, HeaderMap::new(), &none, &["css"]),
        );
        store.insert(key("/d"), object(1));
        let now = SystemTime::now();
        assert_eq!(
            store.purge(&PurgeTarget::Tags(vec!["a".into()]), false, now),
            1
        );
        assert!(matches!(
            store.lookup(&key("/img/a"), &none),
            Lookup::UriMiss
        ));
        assert_eq!(
            store.purge(&PurgeTarget::Prefix("http://h/img/".into()), false, now),
            1
        );
        assert!(matches!(
            store.lookup(&key("/img/b"), &none),
            Lookup::UriMiss
        ));
        assert_eq!(store.purge(&PurgeTarget::Url(key("/css/c")), true, now), 1);
        let soft = found(store.lookup(&key("/css/c"), &none)).unwrap();
        assert!(!soft.is_fresh(now), "soft purge keeps the object, stale");
        assert_eq!(
            store.purge(&PurgeTarget::Tags(vec!["css".into()]), false, now),
            1,
            "a soft-purged URL keeps its tags"
        );
        assert_eq!(store.purge(&PurgeTarget::All, false, now), 1);
        assert!(matches!(store.lookup(&key("/d"), &none), Lookup::UriMiss));
        assert_eq!(store.purge(&PurgeTarget::Url(key("/d")), false, now), 0);
    }
}
