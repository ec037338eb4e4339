//! The store's own behaviour: byte bound, object bound, variants, purges.

use super::*;
use crate::object::VaryKey;
use crate::policy::CacheControl;
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use std::time::Duration;

pub(super) fn object_with(
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

pub(super) fn object(size: usize) -> Arc<CachedObject> {
    object_with(size, HeaderMap::new(), &HeaderMap::new(), &[])
}

pub(super) fn key(path: &str) -> CacheKey {
    CacheKey::from_parts("http", "h", path)
}

pub(super) fn found(l: Lookup) -> Option<Arc<CachedObject>> {
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
