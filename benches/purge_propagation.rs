//! How fast does a purge reach every node? Control plus 20 nodes (4 shields, 16 edges) run in
//! this process on loopback, each node holding control's push stream.
//!
//! 1. Latency: purges one at a time; for each, the time from control accepting it (logged and
//!    fsynced) to the last node acknowledging it, as control measures it. p50, p99, max.
//! 2. Throughput: purges from 8 concurrent clients for a few seconds while clients keep reading
//!    cached objects from the edges; purges accepted and completed per second, and the edges'
//!    hit latency against the same reads with no purges running (the baseline, same run).
//!
//! Run with `cargo bench --bench purge_propagation`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use verge_config::wire::PurgeSpec;
use verge_config::ControlConfig;
use verge_control::client::AdminClient;
use verge_control::ControlNode;
use verge_edge::EdgeRole;
use verge_origin_shield::ShieldRole;
use verge_testkit::tier::cacheable_origin;
use verge_testkit::RunningNode;

const SHIELDS: usize = 4;
const EDGES: usize = 16;
const LATENCY_PURGES: usize = 300;
const THROUGHPUT_FOR: Duration = Duration::from_secs(4);
const PURGERS: usize = 8;
const READERS: usize = 8;
const TOKEN: &str = "bench-token-0123456789";

fn control_section(control: SocketAddr) -> String {
    format!("[control]\nurl = \"http://{control}\"\nheartbeat_interval = \"200ms\"\n")
}

async fn shield(origin: SocketAddr, control: SocketAddr, n: usize) -> SocketAddr {
    let toml = format!(
        "[shield]\nid = \"shield-{n}\"\nregion = \"us\"\n[server]\nlisten = \"127.0.0.1:0\"\n\
         admin_listen = \"127.0.0.1:0\"\n[origin]\nservers = [\"http://{origin}\"]\n{}",
        control_section(control)
    );
    let node = RunningNode::from_toml::<ShieldRole>(&toml).await;
    let addr = node.data_addr;
    node.keep_serving();
    addr
}

async fn edge(origin: SocketAddr, control: SocketAddr, n: usize) -> SocketAddr {
    let toml = format!(
        "[edge]\nid = \"edge-{n}\"\nregion = \"us\"\n[server]\nlisten = \"127.0.0.1:0\"\n\
         admin_listen = \"127.0.0.1:0\"\n[upstream]\norigin = \"http://{origin}\"\n{}",
        control_section(control)
    );
    let node = RunningNode::from_toml::<EdgeRole>(&toml).await;
    let addr = node.data_addr;
    node.keep_serving();
    addr
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn summary(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{label}: n={} p50={:?} p90={:?} p99={:?} max={:?}",
        samples.len(),
        percentile(&samples, 0.50),
        percentile(&samples, 0.90),
        percentile(&samples, 0.99),
        samples.last().copied().unwrap_or_default()
    );
}

/// Reads cached objects from the edges until `stop`; returns each read's latency.
async fn read_load(edges: Arc<Vec<SocketAddr>>, stop: Arc<AtomicBool>) -> Vec<Duration> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut tasks = Vec::new();
    for r in 0..READERS {
        let (client, edges, stop) = (client.clone(), Arc::clone(&edges), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut i = r;
            while !stop.load(Ordering::Relaxed) {
                let edge = edges[i % edges.len()];
                i += 1;
                let request = Request::get(format!("http://{edge}/hot/{}", i % 16))
                    .header("host", "www.example.test")
                    .body(Empty::new())
                    .expect("request");
                let started = Instant::now();
                let response = client.request(request).await.expect("edge answers");
                let _ = response.into_body().collect().await;
                samples.push(started.elapsed());
            }
            samples
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("reader"));
    }
    all
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let data = tempfile::TempDir::new().expect("temp dir");
        let toml = format!(
            "[controller]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
             data_dir = {:?}\ntoken = \"{TOKEN}\"\n[purge]\nrate_per_second = 1000000\n\
             burst = 1000000\n",
            data.path().display().to_string()
        );
        let config = ControlConfig::from_toml(&toml).expect("control config");
        let control = ControlNode::bind(config).await.expect("bind control");
        let (control_addr, admin_addr) = (control.node_addr, control.admin_addr);
        tokio::spawn(control.run(std::future::pending()));

        let origin = cacheable_origin().await;
        for n in 0..SHIELDS {
            shield(origin.addr(), control_addr, n).await;
        }
        let mut edges = Vec::new();
        for n in 0..EDGES {
            edges.push(edge(origin.addr(), control_addr, n).await);
        }
        let admin = AdminClient::new(&format!("http://{admin_addr}"), TOKEN).expect("client");
        // Every node registered and holding its stream.
        let ready = Instant::now();
        loop {
            let nodes = admin.get_json("/v1/nodes").await.expect("nodes");
            let connected = nodes
                .as_array()
                .map_or(0, |a| a.iter().filter(|n| n["connected"] == true).count());
            if connected == SHIELDS + EDGES {
                break;
            }
            assert!(ready.elapsed() < Duration::from_secs(20), "nodes did not connect");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!("control + {SHIELDS} shields + {EDGES} edges on loopback");

        // 1. One purge at a time.
        let mut latencies = Vec::new();
        let mut accept = Vec::new();
        for i in 0..LATENCY_PURGES {
            let spec = PurgeSpec {
                urls: vec![format!("http://www.example.test/object/{i}")],
                ..PurgeSpec::default()
            };
            let sent = Instant::now();
            let accepted = admin.purge(&spec).await.expect("purge accepted");
            accept.push(sent.elapsed());
            let status = admin
                .wait(accepted.id, Duration::from_secs(10))
                .await
                .expect("purge completes");
            let us = status.completed_after_us.unwrap_or_default();
            latencies.push(Duration::from_micros(us));
        }
        summary("API accept (POST round trip incl. fsync)", accept);
        summary(
            "purge propagation, accept -> last of 20 nodes applied",
            latencies,
        );

        // 2. Sustained purges while edges serve.
        let edges = Arc::new(edges);
        let stop = Arc::new(AtomicBool::new(false));
        // Warm the hot objects, then the baseline: reads with no purges.
        let _ = tokio::time::timeout(Duration::from_millis(300), async {
            let warm = read_load(Arc::clone(&edges), Arc::clone(&stop));
            tokio::time::sleep(Duration::from_millis(200)).await;
            stop.store(true, Ordering::Relaxed);
            warm.await
        })
        .await;
        stop.store(false, Ordering::Relaxed);
        let base_started = Instant::now();
        let reads = tokio::spawn(read_load(Arc::clone(&edges), Arc::clone(&stop)));
        tokio::time::sleep(THROUGHPUT_FOR).await;
        stop.store(true, Ordering::Relaxed);
        let baseline = reads.await.expect("reads");
        let base_window = base_started.elapsed();

        stop.store(false, Ordering::Relaxed);
        let reads = tokio::spawn(read_load(Arc::clone(&edges), Arc::clone(&stop)));
        let accepted = Arc::new(AtomicU64::new(0));
        let last_id = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let mut purgers = Vec::new();
        for p in 0..PURGERS {
            let (admin, accepted, last_id) =
                (admin.clone(), Arc::clone(&accepted), Arc::clone(&last_id));
            purgers.push(tokio::spawn(async move {
                let mut i = 0u64;
                while started.elapsed() < THROUGHPUT_FOR {
                    let spec = PurgeSpec {
                        urls: vec![format!("http://www.example.test/cold/{p}/{i}")],
                        ..PurgeSpec::default()
                    };
                    i += 1;
                    if let Ok(ok) = admin.purge(&spec).await {
                        accepted.fetch_add(1, Ordering::Relaxed);
                        last_id.fetch_max(ok.id, Ordering::Relaxed);
                    }
                }
            }));
        }
        for purger in purgers {
            purger.await.expect("purger");
        }
        let accept_window = started.elapsed();
        let last = last_id.load(Ordering::Relaxed);
        admin
            .wait(last, Duration::from_secs(30))
            .await
            .expect("last purge completes");
        let complete_window = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        let under_purges = reads.await.expect("reads");
        let load_window = started.elapsed();
        let n = accepted.load(Ordering::Relaxed) as f64;
        println!(
            "sustained: {n} purges accepted in {accept_window:?} ({:.0}/s); all applied on 20 nodes \
             after {complete_window:?} ({:.0}/s end to end)",
            n / accept_window.as_secs_f64(),
            n / complete_window.as_secs_f64()
        );
        let p99 = |mut v: Vec<Duration>| {
            v.sort();
            percentile(&v, 0.99)
        };
        let (base_n, load_n) = (baseline.len(), under_purges.len());
        let (base99, load99) = (p99(baseline.clone()), p99(under_purges.clone()));
        summary("edge hits, no purges (baseline)", baseline);
        summary("edge hits, during purges", under_purges);
        println!(
            "reads/s during purges vs baseline: {:.2}; hit p99 ratio {:.2}",
            (load_n as f64 / load_window.as_secs_f64())
                / (base_n as f64 / base_window.as_secs_f64()),
            load99.as_secs_f64() / base99.as_secs_f64().max(1e-9)
        );
    });
}
