//! What does the shield's hop add to one miss? A client asks an edge for a new object, one
//! request at a time, and the time to its last byte is measured three ways, in the same run:
//!
//! - `direct`: the edge goes to the origin itself (the baseline);
//! - `shield_miss`: edge → shield → origin, a miss at both tiers;
//! - `shield_hit`: edge → shield, which has the object already (another edge asked first,
//!   outside the timing);
//! - `edge_hit`: the edge has it (asked once before, outside the timing): the client's own
//!   round trip to a node, for scale.
//!
//! Objects of 4 KiB and 48 KiB (read whole at each tier before answering), 256 KiB and 1 MiB
//! (answered as read, past `cache.stream_above_bytes`; the demo's largest objects are 1 MiB). Everything runs in this process on loopback, with
//! no latency added, so the figures are the nodes' own work: compare ratios.
//!
//! Run with `cargo bench --bench shield_hop -- --warm-up-time 1 --measurement-time 5`.

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

const SIZES: [(&str, usize); 4] = [
    ("4KiB", 4 << 10),
    ("48KiB", 48 << 10),
    ("256KiB", 256 << 10),
    ("1MiB", 1 << 20),
];

/// GETs `path` from `edge` and reads the whole body; the time to its last byte.
async fn fetch(
    client: &Client<HttpConnector, Empty<Bytes>>,
    edge: SocketAddr,
    path: &str,
) -> Duration {
    let started = Instant::now();
    let response = client
        .request(tiers::get(edge, path))
        .await
        .expect("the edge answers");
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.expect("the body");
    assert!(!body.to_bytes().is_empty());
    started.elapsed()
}

/// A path never asked for before, for an object of `size`.
fn new_path(size: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("/{size}/{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn shield_hop(c: &mut Criterion) {
    let runtime = Runtime::new().expect("runtime");
    let (_origin, direct, tiered, warmer) = runtime.block_on(async {
        let origin = FakeOrigin::start().await;
        for (name, bytes) in SIZES {
            origin.on_prefix(
                &format!("/{name}/"),
                Reply::ok(vec![b'x'; bytes]).cache_control("max-age=3600"),
            );
        }
        let shield = tiers::shield(origin.addr(), "").await;
        let direct = tiers::edge(origin.addr(), None, 1, "").await;
        let tiered = tiers::edge(origin.addr(), Some(shield), 2, "").await;
        let warmer = tiers::edge(origin.addr(), Some(shield), 3, "").await;
        (origin, direct, tiered, warmer)
    });
    let client = Client::builder(TokioExecutor::new()).build_http();
    let mut group = c.benchmark_group("shield_hop");
    for (size, _) in SIZES {
        for way in ["direct", "shield_miss", "shield_hit", "edge_hit"] {
            group.bench_function(format!("{size}/{way}"), |b| {
                b.iter_custom(|iterations| {
                    runtime.block_on(async {
                        let mut total = Duration::ZERO;
                        for _ in 0..iterations {
                            let path = new_path(size);
                            total += match way {
                                "direct" => fetch(&client, direct, &path).await,
                                "shield_miss" => fetch(&client, tiered, &path).await,
                                "edge_hit" => {
                                    fetch(&client, direct, &path).await;
                                    fetch(&client, direct, &path).await
                                }
                                _ => {
                                    fetch(&client, warmer, &path).await;
                                    fetch(&client, tiered, &path).await
                                }
                            };
                        }
                        total
                    })
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, shield_hop);
criterion_main!(benches);
