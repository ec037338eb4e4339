//! How many origin requests does the shield tier cost per object when 8 edges each ask for the
//! same 1,000 objects, and what does the extra hop cost in time? The baseline, in the same run:
//! 8 edges going to the origin directly. Everything runs in this process on loopback.
//!
//! Run with `cargo bench --bench tier_offload`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;
use verge_testkit::{FakeOrigin, Reply};

#[path = "support/tiers.rs"]
mod tiers;

const EDGES: usize = 8;
const OBJECTS: usize = 1_000;
const CONCURRENCY: usize = 64;

/// An origin serving 1 KiB cacheable objects, counting requests.
async fn origin() -> FakeOrigin {
    let origin = FakeOrigin::start().await;
    origin.on_prefix(
        "/",
        Reply::ok(vec![b'x'; 1024]).cache_control("public, max-age=3600"),
    );
    origin
}

/// Every edge asks for every object once, `CONCURRENCY` at a time; returns the elapsed time.
async fn drive(edges: &[SocketAddr]) -> Duration {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(edges.len() * OBJECTS);
    for object in 0..OBJECTS {
        for edge in edges {
            let permit = Arc::clone(&permits)
                .acquire_owned()
                .await
                .expect("semaphore open");
            let client = client.clone();
            let request = tiers::get(*edge, &format!("/object/{object}"));
            tasks.push(tokio::spawn(async move {
                let response = client.request(request).await.expect("edge answers");
                assert_eq!(response.status(), 200);
                response.into_body().collect().await.expect("body");
                drop(permit);
            }));
        }
    }
    for task in tasks {
        task.await.expect("request task");
    }
    started.elapsed()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let direct_origin = origin().await;
        let mut direct_edges = Vec::new();
        for n in 0..EDGES {
            direct_edges.push(tiers::edge(direct_origin.addr(), None, n, "").await);
        }
        let direct = drive(&direct_edges).await;
        let direct_requests = direct_origin.total_hits();

        let tier_origin = origin().await;
        let shield = tiers::shield(tier_origin.addr(), "").await;
        let mut tier_edges = Vec::new();
        for n in 0..EDGES {
            tier_edges.push(tiers::edge(tier_origin.addr(), Some(shield), n, "").await);
        }
        let tiered = drive(&tier_edges).await;
        let tier_requests = tier_origin.total_hits();

        let per_object = |n: usize| n as f64 / OBJECTS as f64;
        println!("{EDGES} edges x {OBJECTS} objects, {CONCURRENCY} requests at a time");
        println!(
            "direct to origin: {direct_requests} origin requests ({:.2} per object) in {direct:?}",
            per_object(direct_requests)
        );
        println!(
            "through a shield: {tier_requests} origin requests ({:.2} per object) in {tiered:?}",
            per_object(tier_requests)
        );
        println!(
            "origin offload: {:.1}x fewer origin requests; time ratio tiered/direct {:.2}",
            direct_requests as f64 / tier_requests.max(1) as f64,
            tiered.as_secs_f64() / direct.as_secs_f64()
        );
    });
}
