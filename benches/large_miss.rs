//! What does a miss of a large object cost a client, through edge → shield → origin, when the
//! fills answer as they read (`cache.stream_above_bytes = "64KiB"`, the default) against when
//! they read the whole body first (`"8MiB"`, the baseline in the same run)?
//!
//! - `first_byte/*`: from sending the GET to the first body byte;
//! - `last_byte/*`: to the last byte.
//!
//! Each iteration asks for a new 4 MiB object (a miss at both tiers). Everything runs in this
//! process on loopback, so compare ratios.
//!
//! Run with `cargo bench --bench large_miss -- --warm-up-time 1 --measurement-time 5`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::runtime::Runtime;
use verge_testkit::{FakeOrigin, Reply};

#[path = "support/tiers.rs"]
mod tiers;

const OBJECT_BYTES: usize = 4 * 1024 * 1024;

/// An edge in front of a shield in front of `origin`, both with `stream_above`; the edge's
/// data address.
async fn tiers(origin: SocketAddr, stream_above: &str) -> SocketAddr {
    let cache = format!("[cache]\nstream_above_bytes = {stream_above:?}\n");
    let shield = tiers::shield(origin, &cache).await;
    tiers::edge(origin, Some(shield), 1, &cache).await
}

/// Asks `edge` for a new object: (time to the first body byte, time to the last).
async fn miss(
    client: &Client<HttpConnector, Empty<Bytes>>,
    edge: SocketAddr,
) -> (Duration, Duration) {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let response = client
        .request(tiers::get(edge, &format!("/large/{n}")))
        .await
        .expect("the edge answers");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut first = None;
    let mut read = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("the body").into_data() {
            first.get_or_insert_with(|| started.elapsed());
            read += data.len();
        }
    }
    assert_eq!(read, OBJECT_BYTES);
    (first.unwrap_or_default(), started.elapsed())
}

fn large_miss(c: &mut Criterion) {
    let runtime = Runtime::new().expect("runtime");
    let (_origin, streamed, whole_first) = runtime.block_on(async {
        let origin = FakeOrigin::start().await;
        origin.on_prefix(
            "/large/",
            Reply::ok(vec![b'x'; OBJECT_BYTES]).cache_control("max-age=3600"),
        );
        let streamed = tiers(origin.addr(), "64KiB").await;
        let whole_first = tiers(origin.addr(), "8MiB").await;
        (origin, streamed, whole_first)
    });
    let client = Client::builder(TokioExecutor::new()).build_http();
    let mut group = c.benchmark_group("large_miss");
    for (which, pick) in [
        ("first_byte", (|t: (Duration, Duration)| t.0) as fn(_) -> _),
        ("last_byte", |t: (Duration, Duration)| t.1),
    ] {
        for (name, edge) in [("streamed", streamed), ("whole_first", whole_first)] {
            group.bench_function(format!("{which}/{name}"), |b| {
                b.iter_custom(|iterations| {
                    runtime.block_on(async {
                        let mut total = Duration::ZERO;
                        for _ in 0..iterations {
                            total += pick(miss(&client, edge).await);
                        }
                        total
                    })
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, large_miss);
criterion_main!(benches);
