//! What does picking the origin shield for a cache key cost, next to hashing the key once, and
//! how does that cost grow with the number of shields?
//!
//! One group, `ring_lookup`, over 1,024 pre-built keys of about 64 bytes and rings of 10, 64 and
//! 256 shields of weight 1 ([`VNODES_PER_WEIGHT`](verge_edge::ring::VNODES_PER_WEIGHT) virtual
//! nodes each), all built before timing:
//!
//! - `baseline_stable_hash`: [`stable_hash`] of the key alone, the floor any lookup pays;
//! - `owner/N`: [`ShieldRing::owner`] on an N-shield ring, the hash plus a binary search over the
//!   virtual nodes;
//! - `candidates_first_2/N`: the owner and the fallback shield from [`ShieldRing::candidates`],
//!   read into a fixed array, as an edge retrying on a second shield would.
//!
//! Each iteration runs over all keys; throughput is per key, so the report reads as
//! "a ring lookup costs k× a hash". Neither lookup allocates: [`ShieldRing::candidates`] borrows
//! the ring and tracks listed shields in a fixed bitset.
//!
//! Run with `cargo bench -p verge-edge --bench ring`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use verge_edge::ring::{stable_hash, RingMember, ShieldRing};

/// Keys looked up per iteration.
const KEYS: usize = 1024;

/// Ring sizes measured: a typical fleet, the old member limit, the current one.
const SHIELD_COUNTS: [usize; 3] = [10, 64, 256];

/// Cache-key-like byte strings of 60 to 70 bytes.
fn keys() -> Vec<Vec<u8>> {
    (0..KEYS)
        .map(|i| {
            format!(
                "https://www.example.com/assets/img/product-{i:06}/large.webp?v={}",
                i % 97
            )
            .into_bytes()
        })
        .collect()
}

/// A ring of `count` shields of weight 1.
fn ring(count: usize) -> ShieldRing {
    let ids: Vec<String> = (0..count).map(|i| format!("shield-{i}")).collect();
    let members: Vec<RingMember<'_>> = ids.iter().map(|id| RingMember { id, weight: 1 }).collect();
    ShieldRing::new(&members).expect("at most MAX_MEMBERS distinct members of weight 1")
}

/// The owner and the first fallback of `key`, as an edge retrying on a second shield reads them.
fn first_2(ring: &ShieldRing, key: &[u8]) -> [Option<usize>; 2] {
    let mut candidates = ring.candidates(key);
    [candidates.next(), candidates.next()]
}

fn ring_lookup(c: &mut Criterion) {
    let keys = keys();
    let rings: Vec<ShieldRing> = SHIELD_COUNTS.into_iter().map(ring).collect();

    let mut group = c.benchmark_group("ring_lookup");
    group.throughput(Throughput::Elements(KEYS as u64));
    group.bench_function("baseline_stable_hash", |b| {
        b.iter(|| {
            for key in &keys {
                black_box(stable_hash(black_box(key)));
            }
        })
    });
    for ring in &rings {
        group.bench_with_input(BenchmarkId::new("owner", ring.len()), ring, |b, ring| {
            b.iter(|| {
                for key in &keys {
                    black_box(ring.owner(black_box(key)));
                }
            })
        });
        group.bench_with_input(
            BenchmarkId::new("candidates_first_2", ring.len()),
            ring,
            |b, ring| {
                b.iter(|| {
                    for key in &keys {
                        black_box(first_2(ring, black_box(key)));
                    }
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, ring_lookup);
criterion_main!(benches);
