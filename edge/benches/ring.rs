//! What does picking the origin shield for a cache key cost, next to hashing the key once?
//!
//! One group, `ring_lookup`, over 1,024 pre-built keys of about 64 bytes and an 8-member
//! [`ShieldRing`] with weights 1, 2, 3, 1, 2, 3, 1, 2 (2,400 virtual nodes):
//!
//! - `baseline_stable_hash`: [`stable_hash`] of the key alone, the floor any lookup pays;
//! - `owner`: [`ShieldRing::owner`], the hash plus a binary search over the virtual nodes;
//! - `candidates_first_2`: the owner and the fallback shield from [`ShieldRing::candidates`],
//!   read into a fixed array (no allocation), as an edge retrying on a second shield would.
//!
//! Each iteration runs over all keys; throughput is per key, so the report reads as
//! "a ring lookup costs N× a hash".
//!
//! Run with `cargo bench -p verge-edge --bench ring`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use verge_edge::ring::{stable_hash, RingMember, ShieldRing};

/// Keys looked up per iteration.
const KEYS: usize = 1024;

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

fn ring() -> ShieldRing {
    let ids: Vec<String> = (0..8).map(|i| format!("shield-{i}")).collect();
    let members: Vec<RingMember<'_>> = ids
        .iter()
        .zip([1, 2, 3].into_iter().cycle())
        .map(|(id, weight)| RingMember { id, weight })
        .collect();
    ShieldRing::new(&members).expect("8 distinct members with weights 1..=3 form a ring")
}

fn ring_lookup(c: &mut Criterion) {
    let keys = keys();
    let ring = ring();
    let mut group = c.benchmark_group("ring_lookup");
    group.throughput(Throughput::Elements(KEYS as u64));
    group.bench_function("baseline_stable_hash", |b| {
        b.iter(|| {
            for key in &keys {
                black_box(stable_hash(black_box(key)));
            }
        })
    });
    group.bench_function("owner", |b| {
        b.iter(|| {
            for key in &keys {
                black_box(ring.owner(black_box(key)));
            }
        })
    });
    group.bench_function("candidates_first_2", |b| {
        b.iter(|| {
            for key in &keys {
                let mut candidates = ring.candidates(black_box(key));
                black_box([candidates.next(), candidates.next()]);
            }
        })
    });
    group.finish();
}

criterion_group!(benches, ring_lookup);
criterion_main!(benches);
