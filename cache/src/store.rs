//! The in-memory store: a moka cache bounded by the bytes of what it holds.

use std::sync::Arc;

use crate::key::CacheKey;
use crate::object::CachedObject;

/// Cached responses by primary key, bounded in bytes (heads + bodies + keys).
#[derive(Clone)]
pub struct CacheStore {
    inner: moka::future::Cache<CacheKey, Arc<CachedObject>>,
    max_object_bytes: usize,
}

impl CacheStore {
    /// A store that holds at most `max_bytes`, and no single object over `max_object_bytes`.
    pub fn new(max_bytes: u64, max_object_bytes: usize) -> CacheStore {
        let inner = moka::future::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &CacheKey, object: &Arc<CachedObject>| {
                u32::try_from(key.len() + object.weight_bytes()).unwrap_or(u32::MAX)
            })
            .build();
        CacheStore {
            inner,
            max_object_bytes,
        }
    }

    pub async fn get(&self, key: &CacheKey) -> Option<Arc<CachedObject>> {
        self.inner.get(key).await
    }

    /// Stores an object; returns false (and stores nothing) when it is over the per-object bound.
    pub async fn insert(&self, key: CacheKey, object: Arc<CachedObject>) -> bool {
        if object.body.len() > self.max_object_bytes {
            return false;
        }
        self.inner.insert(key, object).await;
        true
    }

    pub async fn remove(&self, key: &CacheKey) {
        self.inner.invalidate(key).await;
    }

    pub fn max_object_bytes(&self) -> usize {
        self.max_object_bytes
    }

    /// Applies pending evictions so that the counts below are exact.
    pub async fn sync(&self) {
        self.inner.run_pending_tasks().await;
    }

    /// Objects held (approximate until [`CacheStore::sync`]).
    pub fn object_count(&self) -> u64 {
        self.inner.entry_count()
    }

    /// Bytes held, by the weigher (approximate until [`CacheStore::sync`]).
    pub fn weighted_bytes(&self) -> u64 {
        self.inner.weighted_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::VaryKey;
    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};
    use std::time::{Duration, SystemTime};

    fn object(size: usize) -> Arc<CachedObject> {
        Arc::new(CachedObject {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from(vec![b'x'; size]),
            response_time: SystemTime::now(),
            corrected_initial_age: Duration::ZERO,
            freshness_lifetime: Duration::from_secs(60),
            vary: VaryKey::default(),
            cc: crate::policy::CacheControl::default(),
            surrogate_keys: Vec::new(),
        })
    }

    #[tokio::test]
    async fn byte_bound_holds_after_many_inserts() {
        let max = 1 << 20;
        let store = CacheStore::new(max, 64 << 10);
        for i in 0..2_000 {
            let key = CacheKey::from_parts("http", "h", &format!("/{i}"));
            store.insert(key, object(4 << 10)).await;
        }
        store.sync().await;
        assert!(
            store.weighted_bytes() <= max,
            "{} > {max}",
            store.weighted_bytes()
        );
        assert!(store.object_count() > 0);
        assert!(store.object_count() < 2_000);
    }

    #[tokio::test]
    async fn objects_over_the_bound_are_refused() {
        let store = CacheStore::new(1 << 20, 100);
        let key = CacheKey::from_parts("http", "h", "/big");
        assert!(!store.insert(key.clone(), object(101)).await);
        assert!(store.get(&key).await.is_none());
        assert!(store.insert(key.clone(), object(100)).await);
        assert!(store.get(&key).await.is_some());
    }
}
