//! How much cheaper is it to find a purge's keys in the [`PurgeIndex`] than to scan every stored
//! key, and does a big purge lookup stall the stores running beside it?
//!
//! The fixture: 1,000,000 keys (1,000 hosts of 1,000 paths), each carrying 1–3 tags drawn from
//! 100,000, indexed once and also kept as a `Vec` of (key, tags) pairs. Each group pairs the index
//! with a full scan of that `Vec` in the same run, so results read as ratios:
//!
//! - `purge_by_tag`: [`PurgeIndex::keys_for_tags`] for 10,000 tags against a scan that looks each
//!   item's tags up in a `HashSet` of those tags (built outside the timed loop);
//! - `purge_by_prefix`: [`PurgeIndex::keys_with_prefix`] for one host's root (1,000 keys) against
//!   a scan with `starts_with`.
//!
//! Then one measurement outside criterion: the latency of single `insert`/`remove` calls on one
//! thread while another thread runs `keys_for_tags` for the 10,000 tags in a loop, next to the
//! same writer loop with no purge running. Its worst call is what a store waits behind a purge.
//!
//! Run with `cargo bench -p verge-cache --bench purge`.

mod fixture;

use std::collections::HashSet;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use fixture::{Draws, HOSTS, PATHS_PER_HOST, PURGED_TAGS, TAGS};
use verge_cache::purge::PurgeIndex;
use verge_cache::CacheKey;

/// Keys the writer thread inserts and removes during the stall measurement.
const WRITER_KEYS: usize = 10_000;
/// How long the writer runs, alone and then beside the purges.
const WRITER_RUN: Duration = Duration::from_secs(3);

struct Fixture {
    index: PurgeIndex,
    pairs: Vec<(CacheKey, Vec<Arc<str>>)>,
    purged_tags: Vec<Arc<str>>,
    prefix: String,
}

impl Fixture {
    fn build() -> Fixture {
        let tags: Vec<Arc<str>> = (0..TAGS)
            .map(|n| Arc::from(format!("product-{n:06}")))
            .collect();
        let mut draws = Draws(7);
        let mut pairs = Vec::with_capacity(HOSTS * PATHS_PER_HOST);
        for host in 0..HOSTS {
            let host = format!("site-{host:04}.example");
            for path in 0..PATHS_PER_HOST {
                let path = format!("/assets/{path:04}/main.js?v=3");
                let key = CacheKey::from_parts("https", &host, &path);
                pairs.push((key, draws.tags(&tags)));
            }
        }
        let index = PurgeIndex::new();
        for (key, tags) in &pairs {
            index.insert(key, tags);
        }
        let purged_tags = tags.iter().step_by(TAGS / PURGED_TAGS).cloned().collect();
        Fixture {
            index,
            pairs,
            purged_tags,
            prefix: "https://site-0421.example/".to_owned(),
        }
    }
}

fn purge_by_tag(c: &mut Criterion, fixture: &Fixture) {
    let wanted: HashSet<&str> = fixture.purged_tags.iter().map(|t| t.as_ref()).collect();
    let found = fixture.index.keys_for_tags(&fixture.purged_tags).len();
    let scanned = scan_for_tags(&fixture.pairs, &wanted).len();
    assert_eq!(found, scanned, "index and scan disagree");
    println!("purge_by_tag: {PURGED_TAGS} tags match {found} keys");

    let mut group = c.benchmark_group("purge_by_tag");
    group.sample_size(10);
    group.bench_function("index", |b| {
        b.iter(|| fixture.index.keys_for_tags(black_box(&fixture.purged_tags)))
    });
    group.bench_function("full_scan", |b| {
        b.iter(|| scan_for_tags(black_box(&fixture.pairs), black_box(&wanted)))
    });
    group.finish();
}

fn scan_for_tags(pairs: &[(CacheKey, Vec<Arc<str>>)], wanted: &HashSet<&str>) -> Vec<CacheKey> {
    pairs
        .iter()
        .filter(|(_, tags)| tags.iter().any(|tag| wanted.contains(tag.as_ref())))
        .map(|(key, _)| key.clone())
        .collect()
}

fn purge_by_prefix(c: &mut Criterion, fixture: &Fixture) {
    let found = fixture.index.keys_with_prefix(&fixture.prefix).len();
    let scanned = scan_for_prefix(&fixture.pairs, &fixture.prefix).len();
    assert_eq!(found, scanned, "index and scan disagree");
    println!("purge_by_prefix: {} matches {found} keys", fixture.prefix);

    let mut group = c.benchmark_group("purge_by_prefix");
    group.sample_size(10);
    group.bench_function("index", |b| {
        b.iter(|| fixture.index.keys_with_prefix(black_box(&fixture.prefix)))
    });
    group.bench_function("full_scan", |b| {
        b.iter(|| scan_for_prefix(black_box(&fixture.pairs), black_box(&fixture.prefix)))
    });
    group.finish();
}

fn scan_for_prefix(pairs: &[(CacheKey, Vec<Arc<str>>)], prefix: &str) -> Vec<CacheKey> {
    pairs
        .iter()
        .filter(|(key, _)| key.as_str().starts_with(prefix))
        .map(|(key, _)| key.clone())
        .collect()
}

/// Prints the latency of the writer's single calls alone and beside a purge loop.
fn writer_latency_during_purge(fixture: &Fixture) {
    // The writer's tags are purged tags, so it contends for the very shards the purge reads.
    let mut draws = Draws(11);
    let writes: Vec<(CacheKey, Vec<Arc<str>>)> = (0..WRITER_KEYS)
        .map(|n| {
            let key = CacheKey::from_parts("https", "writer.example", &format!("/{n}"));
            (key, draws.tags(&fixture.purged_tags))
        })
        .collect();

    let stop = AtomicBool::new(false);
    let alone = std::thread::scope(|scope| {
        let writer = scope.spawn(|| write_until(&fixture.index, &writes, &stop));
        std::thread::sleep(WRITER_RUN);
        stop.store(true, Ordering::Relaxed);
        writer.join().expect("writer thread panicked")
    });

    let stop = AtomicBool::new(false);
    let (beside, mut purges) = std::thread::scope(|scope| {
        let writer = scope.spawn(|| write_until(&fixture.index, &writes, &stop));
        let mut purges = Vec::new();
        let started = Instant::now();
        while started.elapsed() < WRITER_RUN {
            let call = Instant::now();
            black_box(fixture.index.keys_for_tags(&fixture.purged_tags));
            purges.push(call.elapsed());
        }
        stop.store(true, Ordering::Relaxed);
        (writer.join().expect("writer thread panicked"), purges)
    });

    println!(
        "writer_latency_during_purge: single insert/remove calls on the index of 1,000,000 keys"
    );
    println!("  alone:        {}", Latencies::of(alone));
    println!("  beside purge: {}", Latencies::of(beside));
    println!(
        "  purge calls:  {} of keys_for_tags({PURGED_TAGS} tags), median {:?}, max {:?} \
         (what one index-wide lock would make a writer wait)",
        purges.len(),
        Latencies::quantile(&mut purges, 0.5),
        purges.iter().max().copied().unwrap_or_default(),
    );
}

/// Inserts then removes every write, timing each call, until `stop`; leaves none inserted.
fn write_until(
    index: &PurgeIndex,
    writes: &[(CacheKey, Vec<Arc<str>>)],
    stop: &AtomicBool,
) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(1 << 22);
    while !stop.load(Ordering::Relaxed) {
        for (key, tags) in writes {
            let call = Instant::now();
            index.insert(key, tags);
            latencies.push(call.elapsed());
        }
        for (key, tags) in writes {
            let call = Instant::now();
            index.remove(key, tags);
            latencies.push(call.elapsed());
        }
    }
    latencies
}

struct Latencies {
    calls: usize,
    median: Duration,
    p999: Duration,
    max: Duration,
}

impl Latencies {
    fn of(mut calls: Vec<Duration>) -> Latencies {
        Latencies {
            calls: calls.len(),
            median: Latencies::quantile(&mut calls, 0.5),
            p999: Latencies::quantile(&mut calls, 0.999),
            max: calls.iter().max().copied().unwrap_or_default(),
        }
    }

    fn quantile(calls: &mut [Duration], q: f64) -> Duration {
        calls.sort_unstable();
        let at = ((calls.len() as f64 - 1.0) * q).round() as usize;
        calls.get(at).copied().unwrap_or_default()
    }
}

impl std::fmt::Display for Latencies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} calls, median {:?}, p99.9 {:?}, max {:?}",
            self.calls, self.median, self.p999, self.max
        )
    }
}

fn main() {
    let built = Instant::now();
    let fixture = Fixture::build();
    println!(
        "fixture: {} keys, {} tags indexed in {:?}",
        fixture.index.key_count(),
        fixture.index.tag_count(),
        built.elapsed()
    );
    let mut criterion = Criterion::default().configure_from_args();
    purge_by_tag(&mut criterion, &fixture);
    purge_by_prefix(&mut criterion, &fixture);
    writer_latency_during_purge(&fixture);
    criterion.final_summary();
}
