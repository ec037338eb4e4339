//! How long does a surrogate-key purge of 10,000 keys take over a store of 1,000,000 small
//! entries, and do lookups stall while it runs?
//!
//! The fixture: a [`CacheStore`] holding 1,000,000 small objects (1,000 hosts × 1,000 paths, 64-byte
//! bodies), each tagged with 1–3 of 100,000 surrogate keys. Two measurements:
//!
//! - criterion group `store_soft_purge`: a soft purge of 10,000 tags (every matching URL re-stored
//!   stale; repeatable, so criterion can loop it) against, as a baseline in the same run, a soft
//!   purge of the same URLs named one by one — the difference is the cost of finding them;
//! - a one-off hard purge of 10,000 *other* tags while a second thread loops lookups: the purge's
//!   duration and URL count, and the lookup latency (median, p99.9, max) beside it against the same
//!   loop with no purge running.
//!
//! Run with `cargo bench -p verge-cache --bench store_purge`.

mod fixture;

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use criterion::Criterion;
use fixture::{Draws, HOSTS, PATHS_PER_HOST, PURGED_TAGS, TAGS};
use http::{HeaderMap, StatusCode};
use verge_cache::policy::CacheControl;
use verge_cache::{CacheKey, CacheStore, CachedObject, Lookup, PurgeTarget, VaryKey};

const LOOKUP_RUN: Duration = Duration::from_secs(2);

struct Fixture {
    store: CacheStore,
    keys: Vec<CacheKey>,
    tags: Vec<Arc<str>>,
}

fn build() -> Fixture {
    let tags: Vec<Arc<str>> = (0..TAGS).map(|t| Arc::from(format!("tag-{t}"))).collect();
    let store = CacheStore::new(8 << 30, 1 << 20);
    let body = Bytes::from_static(&[b'x'; 64]);
    let now = SystemTime::now();
    let mut draws = Draws(7);
    let mut keys = Vec::with_capacity(HOSTS * PATHS_PER_HOST);
    for host in 0..HOSTS {
        for path in 0..PATHS_PER_HOST {
            let key = CacheKey::from_parts(
                "http",
                &format!("site-{host}.example"),
                &format!("/obj/{path}"),
            );
            let object = CachedObject {
                status: StatusCode::OK,
                headers: HeaderMap::new(),
                body: body.clone(),
                response_time: now,
                corrected_initial_age: Duration::ZERO,
                freshness_lifetime: Duration::from_secs(3600),
                vary: VaryKey::default(),
                cc: CacheControl::default(),
                surrogate_keys: draws.tags(&tags),
            };
            assert!(
                store.insert(key.clone(), Arc::new(object)),
                "64 bytes is under the object bound"
            );
            keys.push(key);
        }
    }
    store.sync();
    assert_eq!(
        store.url_count() as usize,
        keys.len(),
        "the store must hold every entry"
    );
    Fixture { store, keys, tags }
}

fn tag_names(tags: &[Arc<str>], from: usize) -> Vec<String> {
    tags[from..from + PURGED_TAGS]
        .iter()
        .map(|t| t.to_string())
        .collect()
}

fn soft_purge(c: &mut Criterion, fixture: &Fixture) {
    let target = PurgeTarget::Tags(tag_names(&fixture.tags, 0));
    let now = SystemTime::now();
    let urls: Vec<PurgeTarget> = {
        let wanted: std::collections::HashSet<&str> =
            fixture.tags[..PURGED_TAGS].iter().map(|t| &**t).collect();
        // The URLs the tag purge reaches, found once outside the timed loop.
        let purged = fixture.store.purge(&target, true, now);
        assert!(purged > 0, "the purged tags must be in use");
        fixture
            .keys
            .iter()
            .filter(|k| match fixture.store.lookup(k, &HeaderMap::new()) {
                Lookup::Found(o) => o.surrogate_keys.iter().any(|t| wanted.contains(&**t)),
                _ => false,
            })
            .map(|k| PurgeTarget::Url(k.clone()))
            .collect()
    };
    let mut group = c.benchmark_group("store_soft_purge");
    group.sample_size(10);
    group.bench_function("baseline_by_url_list", |b| {
        b.iter(|| {
            urls.iter()
                .map(|u| fixture.store.purge(black_box(u), true, now))
                .sum::<usize>()
        })
    });
    group.bench_function("by_10000_tags", |b| {
        b.iter(|| fixture.store.purge(black_box(&target), true, now))
    });
    group.finish();
    println!(
        "store_soft_purge: 10,000 tags reach {} URLs of {}",
        urls.len(),
        fixture.keys.len()
    );
}

/// Lookup latencies on one thread for `LOOKUP_RUN`, or until `stop` is raised.
fn lookups(store: &CacheStore, keys: &[CacheKey], stop: &AtomicBool) -> Vec<Duration> {
    let request = HeaderMap::new();
    let mut calls = Vec::with_capacity(4_000_000);
    let started = Instant::now();
    let mut i = 0usize;
    while started.elapsed() < LOOKUP_RUN && !stop.load(Ordering::Relaxed) {
        let key = &keys[(i * 7919) % keys.len()];
        let t = Instant::now();
        black_box(store.lookup(key, &request));
        calls.push(t.elapsed());
        i += 1;
    }
    calls
}

fn summary(mut calls: Vec<Duration>) -> String {
    calls.sort_unstable();
    let q = |f: f64| calls[((calls.len() - 1) as f64 * f) as usize];
    format!(
        "{} lookups, median {:?}, p99.9 {:?}, max {:?}",
        calls.len(),
        q(0.5),
        q(0.999),
        calls[calls.len() - 1]
    )
}

fn hard_purge_beside_lookups(fixture: &Fixture) {
    let never = AtomicBool::new(false);
    let alone = lookups(&fixture.store, &fixture.keys, &never);
    let target = PurgeTarget::Tags(tag_names(&fixture.tags, PURGED_TAGS));
    let done = AtomicBool::new(false);
    let (beside, (took, purged)) = std::thread::scope(|s| {
        let reader = s.spawn(|| lookups(&fixture.store, &fixture.keys, &done));
        let t = Instant::now();
        let purged = fixture.store.purge(&target, false, SystemTime::now());
        let took = t.elapsed();
        // Keep reading a little after the purge so the tail is covered.
        std::thread::sleep(Duration::from_millis(200));
        done.store(true, Ordering::Relaxed);
        (
            reader.join().expect("the lookup thread does not panic"),
            (took, purged),
        )
    });
    println!("hard purge of {PURGED_TAGS} tags: {purged} URLs in {took:?}");
    println!("lookups alone:        {}", summary(alone));
    println!("lookups beside purge: {}", summary(beside));
}

fn main() {
    let started = Instant::now();
    let fixture = build();
    println!(
        "fixture: {} entries stored in {:?}",
        fixture.keys.len(),
        started.elapsed()
    );
    let mut criterion = Criterion::default().configure_from_args();
    soft_purge(&mut criterion, &fixture);
    hard_purge_beside_lookups(&fixture);
    criterion.final_summary();
}
