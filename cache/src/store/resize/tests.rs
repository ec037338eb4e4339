//! Resizing a store in place: what is kept, what is dropped, and that writes and purges running
//! beside a resize are neither lost nor undone.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, HeaderValue};

use super::*;
use crate::store::tests::{found, key, object, object_with};
use crate::store::{Lookup, PurgeTarget};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

fn none() -> HeaderMap {
    HeaderMap::new()
}

fn tagged(size: usize, tags: &[&str]) -> Arc<CachedObject> {
    object_with(size, HeaderMap::new(), &none(), tags)
}

fn is_miss(store: &CacheStore, path: &str) -> bool {
    matches!(store.lookup(&key(path), &none()), Lookup::UriMiss)
}

/// The index records exactly the URLs the cache holds: as many, and a purge of everything the
/// index finds under the host reaches every one of them.
fn assert_index_matches_cache(store: &CacheStore) {
    store.sync();
    let (indexed, _) = store.index_sizes();
    assert_eq!(
        indexed as u64,
        store.url_count(),
        "index keys vs cached URLs"
    );
    let reached = store.purge(
        &PurgeTarget::Prefix("http://h/".into()),
        true,
        SystemTime::now(),
    );
    assert_eq!(
        reached as u64,
        store.url_count(),
        "every indexed URL is cached"
    );
}

#[test]
fn the_same_limits_change_nothing() {
    let store = CacheStore::new(MIB, 1000);
    store.insert(key("/a"), object(10));
    let resized = store.set_limits(MIB, 1000);
    assert!(!resized.changed);
    assert_eq!(resized.to_string(), "limits unchanged");
    assert!(found(store.lookup(&key("/a"), &none())).is_some());
}

#[test]
fn growing_keeps_every_entry() {
    let store = CacheStore::new(MIB, 8 * KIB as usize);
    for i in 0..100 {
        store.insert(key(&format!("/{i}")), tagged(4 * KIB as usize, &["all"]));
    }
    store.sync();
    let bytes = store.weighted_bytes();
    let resized = store.set_limits(4 * MIB, 16 * KIB as usize);
    assert!(resized.changed);
    assert_eq!(
        (
            resized.urls_kept,
            resized.urls_dropped,
            resized.bytes_dropped
        ),
        (100, 0, 0)
    );
    assert_eq!(resized.bytes_kept, bytes);
    assert_eq!(store.max_bytes(), 4 * MIB);
    assert_eq!(store.max_object_bytes(), 16 * KIB as usize);
    for i in 0..100 {
        assert!(!is_miss(&store, &format!("/{i}")), "/{i} kept");
    }
    assert_eq!(store.index_sizes(), (100, 1));
    assert_index_matches_cache(&store);
}

#[test]
fn shrinking_evicts_down_to_the_new_bound_and_the_index_follows() {
    let store = CacheStore::new(4 * MIB, 8 * KIB as usize);
    for i in 0..500 {
        let tag = format!("t{}", i % 10);
        store.insert(key(&format!("/{i}")), tagged(4 * KIB as usize, &[&tag]));
    }
    store.sync();
    assert_eq!(store.url_count(), 500, "the old bound holds everything");
    let max = 256 * KIB;
    let resized = store.set_limits(max, 8 * KIB as usize);
    assert!(
        store.weighted_bytes() <= max,
        "bound holds on return: {} > {max}",
        store.weighted_bytes()
    );
    store.sync();
    assert!(store.weighted_bytes() <= max);
    assert!(store.url_count() > 0, "something fits");
    assert_eq!(resized.urls_kept, store.url_count());
    assert_eq!(resized.urls_kept + resized.urls_dropped, 500);
    assert!(resized.bytes_dropped > 0);
    let held = (0..500)
        .filter(|i| !is_miss(&store, &format!("/{i}")))
        .count();
    assert_eq!(held as u64, store.url_count());
    assert_index_matches_cache(&store);
    // Tags of evicted URLs are gone too: purging all ten finds only what is held.
    let tags: Vec<String> = (0..10).map(|t| format!("t{t}")).collect();
    let purged = store.purge(&PurgeTarget::Tags(tags), false, SystemTime::now());
    assert_eq!(purged, held);
    assert_eq!(store.index_sizes(), (0, 0));
}

#[test]
fn a_lower_object_bound_drops_larger_objects_and_refuses_them_after() {
    let store = CacheStore::new(MIB, 1000);
    store.insert(key("/small"), tagged(100, &["s"]));
    store.insert(key("/big"), tagged(900, &["b"]));
    // One URL with a small and a big variant: only the small one fits the new bound.
    let mut vary = HeaderMap::new();
    vary.insert("vary", HeaderValue::from_static("accept-language"));
    let lang = |l: &'static str| {
        let mut h = HeaderMap::new();
        h.insert("accept-language", HeaderValue::from_static(l));
        h
    };
    store.insert(
        key("/v"),
        object_with(50, vary.clone(), &lang("en"), &["v"]),
    );
    store.insert(key("/v"), object_with(800, vary, &lang("fr"), &["v"]));

    let resized = store.set_limits(MIB, 500);
    assert_eq!(resized.variants_oversized, 2);
    assert_eq!(resized.urls_dropped, 1, "/big");
    assert_eq!(store.max_object_bytes(), 500);
    assert!(is_miss(&store, "/big"));
    assert!(!is_miss(&store, "/small"));
    assert!(found(store.lookup(&key("/v"), &lang("en"))).is_some());
    assert!(matches!(
        store.lookup(&key("/v"), &lang("fr")),
        Lookup::VaryMiss
    ));
    assert!(!store.insert(key("/big"), tagged(900, &["b"])), "refused");
    assert!(
        store.insert(key("/big"), tagged(500, &["b"])),
        "at the bound"
    );
    assert_index_matches_cache(&store);
    assert_eq!(store.index_sizes(), (3, 3));
}

#[test]
fn purges_after_a_resize_reach_the_new_cache() {
    let store = CacheStore::new(MIB, 1000);
    store.insert(key("/img/a"), tagged(10, &["img"]));
    store.insert(key("/img/b"), tagged(10, &[]));
    store.insert(key("/css/c"), tagged(10, &["css"]));
    store.insert(key("/d"), tagged(10, &[]));
    store.insert(key("/e"), tagged(10, &[]));
    store.set_limits(2 * MIB, 2000);
    let now = SystemTime::now();
    assert_eq!(
        store.purge(&PurgeTarget::Tags(vec!["img".into()]), false, now),
        1
    );
    assert!(is_miss(&store, "/img/a"));
    assert_eq!(
        store.purge(&PurgeTarget::Prefix("http://h/img/".into()), false, now),
        1
    );
    assert!(is_miss(&store, "/img/b"));
    assert_eq!(store.purge(&PurgeTarget::Url(key("/d")), false, now), 1);
    assert!(is_miss(&store, "/d"));
    assert!(store.remove(&key("/e")));
    assert!(is_miss(&store, "/e"));
    assert_eq!(
        store.purge(&PurgeTarget::Tags(vec!["css".into()]), true, now),
        1
    );
    let soft = found(store.lookup(&key("/css/c"), &none())).unwrap();
    assert!(!soft.is_fresh(now), "soft purge keeps the object, stale");
    assert_eq!(store.purge(&PurgeTarget::All, false, now), 1);
    assert!(is_miss(&store, "/css/c"));
    assert_eq!(store.index_sizes(), (0, 0));
}

#[test]
fn a_clone_taken_before_a_resize_sees_the_new_cache() {
    let store = CacheStore::new(MIB, 1000);
    let before = store.clone();
    store.insert(key("/a"), object(100));
    store.set_limits(2 * MIB, 200);
    assert_eq!(before.max_object_bytes(), 200);
    assert_eq!(before.max_bytes(), 2 * MIB);
    assert!(!before.insert(key("/big"), object(300)));
    assert!(before.insert(key("/b"), object(150)));
    assert!(!is_miss(&store, "/b"), "a write through the clone is seen");
    assert!(!is_miss(&before, "/a"));
    before.sync();
    assert_eq!(before.url_count(), 2);
    assert_eq!(before.weighted_bytes(), store.weighted_bytes());
    assert!(before.remove(&key("/a")));
    assert!(is_miss(&store, "/a"), "a removal through the clone is seen");
}

#[test]
fn zero_limits_empty_the_store_without_panicking() {
    let store = CacheStore::new(MIB, 1000);
    for i in 0..20 {
        store.insert(key(&format!("/{i}")), tagged(100, &["t"]));
    }
    let resized = store.set_limits(0, 0);
    assert_eq!(resized.urls_kept, 0);
    assert_eq!(resized.urls_dropped, 20);
    assert!(!store.insert(key("/x"), object(1)));
    assert!(is_miss(&store, "/0"));
    assert_index_matches_cache(&store);
    assert_eq!(store.index_sizes(), (0, 0));
    // And back up: the store works again.
    store.set_limits(MIB, 1000);
    assert!(store.insert(key("/x"), object(1)));
    assert!(!is_miss(&store, "/x"));
}

/// The steps of [`CacheStore::set_limits`], with a purge and a write placed between them where
/// a thread could land: after the copy reached a URL, and before it reached another.
#[test]
fn writes_and_purges_during_a_copy_are_neither_lost_nor_undone() {
    let store = CacheStore::new(MIB, 1000);
    store.insert(key("/copied-then-purged"), tagged(10, &["p"]));
    store.insert(key("/purged-then-copied"), tagged(10, &["p"]));
    store.insert(key("/soft"), tagged(10, &["s"]));
    store.insert(key("/kept"), tagged(10, &[]));
    store.insert(key("/rewritten"), object(10));
    let shared = &*store.shared;
    let old = shared.tier.load_full();
    let entry = |path: &str| old.cache.get(&key(path)).unwrap();
    // Snapshots, as the copy's iterator may hold them after the URL changed.
    let (first, second, soft, kept, rewritten) = (
        entry("/copied-then-purged"),
        entry("/purged-then-copied"),
        entry("/soft"),
        entry("/kept"),
        entry("/rewritten"),
    );
    let next = Arc::new(Tier::filling(2 * MIB, 1000, &shared.index));
    {
        let _running = Running::begin(&shared.migrations, Arc::clone(&old), Arc::clone(&next));
        store.copy(&next, &key("/copied-then-purged"), &first);
        assert_eq!(
            store.purge(
                &PurgeTarget::Tags(vec!["p".into()]),
                false,
                SystemTime::now()
            ),
            2
        );
        assert_eq!(
            store.purge(&PurgeTarget::Url(key("/soft")), true, SystemTime::now()),
            1
        );
        assert!(store.insert(key("/rewritten"), object(20)));
        assert!(store.insert(key("/written-during"), object(30)));
        store.copy(&next, &key("/purged-then-copied"), &second);
        store.copy(&next, &key("/soft"), &soft);
        store.copy(&next, &key("/kept"), &kept);
        store.copy(&next, &key("/rewritten"), &rewritten);
        next.cache.run_pending_tasks();
        shared.tier.store(Arc::clone(&next));
    }
    next.go_live();

    assert!(is_miss(&store, "/copied-then-purged"));
    assert!(is_miss(&store, "/purged-then-copied"));
    let soft = found(store.lookup(&key("/soft"), &none())).unwrap();
    assert!(!soft.is_fresh(SystemTime::now()), "copied stale");
    assert!(!is_miss(&store, "/kept"));
    let rewritten = found(store.lookup(&key("/rewritten"), &none())).unwrap();
    assert_eq!(rewritten.body.len(), 20, "the copy did not undo the write");
    let during = found(store.lookup(&key("/written-during"), &none())).unwrap();
    assert_eq!(during.body.len(), 30);
    assert_index_matches_cache(&store);
    assert_eq!(
        store.index_sizes(),
        (4, 1),
        "only the soft-purged tag is left"
    );
}

/// Writers and readers run on several threads while the main thread resizes over and over and
/// purges tagged URLs beside each resize. Every write is read back at once and at the end (the
/// limits always fit everything, so nothing may go missing), and no URL purged beside a resize
/// is found after it.
#[test]
fn traffic_and_purges_beside_repeated_resizes_lose_nothing_and_resurrect_nothing() {
    const WRITERS: usize = 2;
    const KEYS_PER_WRITER: usize = 300;
    const WRITES_PER_WRITER: usize = 2_000;
    const ROUNDS: usize = 16;
    const DOOMED_PER_ROUND: usize = 30;
    const LIMITS: [(u64, usize); 3] = [(8 * MIB, 4096), (4 * MIB, 1024), (16 * MIB, 2048)];
    let deadline = Instant::now() + Duration::from_secs(60);

    let store = CacheStore::new(LIMITS[0].0, LIMITS[0].1);
    let purged_rounds = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    let size = |i: usize| 10 + (i % 7) * 50;
    let doomed = |round: usize, i: usize| format!("/doomed/{round}/{i}");

    std::thread::scope(|s| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (store, purged_rounds, done) = (&store, &purged_rounds, &done);
                s.spawn(move || {
                    let mut last = vec![None; KEYS_PER_WRITER];
                    let mut i = 0;
                    while !done.load(Ordering::Relaxed) || i < WRITES_PER_WRITER {
                        assert!(Instant::now() < deadline, "writer {w} ran too long");
                        let k = i % KEYS_PER_WRITER;
                        let path = format!("/w{w}/{k}");
                        assert!(store.insert(key(&path), tagged(size(i), &["live"])));
                        last[k] = Some(size(i));
                        let read = found(store.lookup(&key(&path), &none()));
                        assert_eq!(read.map(|o| o.body.len()), last[k], "read back {path}");
                        let rounds = purged_rounds.load(Ordering::SeqCst);
                        if rounds > 0 {
                            // Even URLs of a round were hard-purged.
                            let path = doomed(i % rounds, (2 * i) % DOOMED_PER_ROUND);
                            assert!(is_miss(store, &path), "{path} purged, yet found");
                        }
                        i += 1;
                        if i >= WRITES_PER_WRITER * 4 {
                            break;
                        }
                    }
                    last
                })
            })
            .collect();

        for round in 0..ROUNDS {
            for i in 0..DOOMED_PER_ROUND {
                let tags = [format!("doomed-{round}"), format!("soft-{round}")];
                let object = tagged(size(i), &[&tags[i % 2]]);
                assert!(store.insert(key(&doomed(round, i)), object));
            }
            let (max_bytes, max_object) = LIMITS[(round + 1) % LIMITS.len()];
            std::thread::scope(|s| {
                s.spawn(|| store.set_limits(max_bytes, max_object));
                s.spawn(|| {
                    let now = SystemTime::now();
                    let hard = PurgeTarget::Tags(vec![format!("doomed-{round}")]);
                    let soft = PurgeTarget::Tags(vec![format!("soft-{round}")]);
                    store.purge(&hard, false, now);
                    store.purge(&soft, true, now);
                });
            });
            assert_eq!(store.max_object_bytes(), max_object);
            for i in 0..DOOMED_PER_ROUND {
                let path = doomed(round, i);
                match store.lookup(&key(&path), &none()) {
                    Lookup::UriMiss => assert_eq!(i % 2, 0, "{path} lost"),
                    Lookup::Found(o) => {
                        assert_eq!(i % 2, 1, "{path} purged, yet found");
                        assert!(!o.is_fresh(SystemTime::now()), "{path} soft-purged");
                    }
                    Lookup::VaryMiss => panic!("{path}: no vary here"),
                }
            }
            purged_rounds.store(round + 1, Ordering::SeqCst);
        }
        done.store(true, Ordering::Relaxed);

        for (w, writer) in writers.into_iter().enumerate() {
            let last = writer.join().expect("writer does not panic");
            for (k, size) in last.iter().enumerate() {
                let read = found(store.lookup(&key(&format!("/w{w}/{k}")), &none()));
                assert_eq!(read.map(|o| o.body.len()), *size, "/w{w}/{k} kept");
            }
        }
    });
    assert_index_matches_cache(&store);
}
