//! Hot paths not covered by the other crates' benches: what every `verge bench` request costs
//! the load generator (choosing an object, classifying `Cache-Status`, recording a latency), and
//! what every push-stream line costs a node (parsing one event). Each is measured against a
//! baseline in the same run.
//!
//! Run with `cargo bench -p verge-demo --bench hot_paths -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use verge_config::wire::Event;
use verge_demo::bench::client::classify;
use verge_demo::bench::histogram::LatencyHistogram;
use verge_demo::bench::zipf::{XorShift, Zipf};

fn workload(c: &mut Criterion) {
    let mut group = c.benchmark_group("bench_workload");
    let zipf = Zipf::new(10_000, 1.0);
    let mut rng = XorShift::new(7);
    group.bench_function("baseline_rng_f64", |b| b.iter(|| black_box(rng.next_f64())));
    group.bench_function("zipf_sample_10k_objects", |b| {
        b.iter(|| black_box(zipf.sample(&mut rng)))
    });
    let mut histogram = LatencyHistogram::default();
    let mut samples = Vec::with_capacity(1 << 20);
    let mut us = 1u64;
    group.bench_function("baseline_vec_push", |b| {
        b.iter(|| {
            us = us.wrapping_mul(6364136223846793005).wrapping_add(1) % 2_000_000;
            if samples.len() == samples.capacity() {
                samples.clear();
            }
            samples.push(black_box(us));
        })
    });
    group.bench_function("histogram_record", |b| {
        b.iter(|| {
            us = us.wrapping_mul(6364136223846793005).wrapping_add(1) % 2_000_000;
            histogram.record(black_box(us));
        })
    });
    let status =
        "verge-shield; hit; ttl=86399, verge-edge; fwd=uri-miss; fwd-status=200; ttl=86399; stored";
    group.bench_function("baseline_split_entries", |b| {
        b.iter(|| black_box(black_box(status).split(',').count()))
    });
    group.bench_function("classify_cache_status", |b| {
        b.iter(|| black_box(classify(black_box(status))))
    });
    group.finish();
}

fn events(c: &mut Criterion) {
    let mut group = c.benchmark_group("push_stream");
    let line = r#"{"type":"purge","seq":12345,"spec":{"urls":["http://cdn.verge.test/static/img/000.jpg"],"tags":["img-7"]}}"#;
    group.bench_function("baseline_json_value", |b| {
        b.iter(|| black_box(serde_json::from_str::<serde_json::Value>(black_box(line)).is_ok()))
    });
    group.bench_function("parse_purge_event", |b| {
        b.iter(|| black_box(serde_json::from_str::<Event>(black_box(line)).is_ok()))
    });
    group.finish();
}

criterion_group!(benches, workload, events);
criterion_main!(benches);
