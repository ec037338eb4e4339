//! Purge fan-out from one control process to many nodes: light clients of the real node protocol
//! (register, hold `/v1/events`, acknowledge each purge) on loopback, against the same control
//! with few nodes as the baseline of the same run.
//!
//! Each iteration submits one purge through the admin API and waits until every node has read
//! it from its stream; the time measured is accept → the last node. Besides criterion's figures,
//! the run prints per fleet size the first purge after the fleet connected, the p50 and p99 over
//! the other iterations, and the memory held per connected node (resident set growth while the
//! nodes connect, divided by their number; the light nodes run in the same process).
//!
//! Run with `cargo bench -p verge-control --bench fanout`; compare `nodes/10` with
//! `nodes/1000` in one run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use verge_config::wire::PurgeSpec;
use verge_config::ControlConfig;
use verge_control::client::AdminClient;
use verge_control::ControlNode;

const TOKEN: &str = "fanout-bench-token-0123456789";
const FLEETS: [usize; 2] = [10, 1000];

/// What the light nodes share with the bench: the highest purge each has read, a wake-up, and
/// a pooled client for registrations and acks (kept-alive connections, as a node's are).
struct Fleet {
    seen: Vec<AtomicU64>,
    changed: Notify,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Fleet {
    fn all_saw(&self, seq: u64) -> bool {
        self.seen.iter().all(|s| s.load(Ordering::Relaxed) >= seq)
    }
}

/// `POST` on the fleet's pooled client: the status.
async fn post(fleet: &Fleet, addr: std::net::SocketAddr, path: &str, body: String) -> u16 {
    let request = Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("a request");
    let response = fleet.client.request(request).await.expect("an answer");
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    status
}

/// A light node: registers, then reads its event stream, noting each purge's sequence number
/// and acknowledging it.
async fn light_node(addr: std::net::SocketAddr, index: usize, fleet: Arc<Fleet>) {
    let id = format!("n{index}");
    let registration = serde_json::json!({
        "id": id, "role": "edge", "region": "us",
        "data_url": format!("http://127.0.0.1:{}", 10000 + index),
        "admin_url": "http://127.0.0.1:9", "weight": 1,
    });
    let status = post(&fleet, addr, "/v1/register", registration.to_string()).await;
    assert_eq!(status, 200, "registration");
    let stream = TcpStream::connect(addr).await.expect("control accepts");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let request = Request::get(format!("/v1/events?node={id}"))
        .header("host", "control")
        .body(Full::new(Bytes::new()))
        .expect("a request");
    let mut body = sender
        .send_request(request)
        .await
        .expect("a stream")
        .into_body();
    let mut line = Vec::new();
    while let Some(Ok(frame)) = body.frame().await {
        let Ok(data) = frame.into_data() else {
            continue;
        };
        for byte in data {
            if byte != b'\n' {
                line.push(byte);
                continue;
            }
            let event: serde_json::Value = serde_json::from_slice(&line).unwrap_or_default();
            line.clear();
            if event["type"] == "purge" {
                let seq = event["seq"].as_u64().unwrap_or(0);
                fleet.seen[index].fetch_max(seq, Ordering::Relaxed);
                fleet.changed.notify_waiters();
                let ack = serde_json::json!({"id": id, "applied_seq": seq}).to_string();
                let fleet = Arc::clone(&fleet);
                tokio::spawn(async move { post(&fleet, addr, "/v1/ack", ack).await });
            }
        }
    }
}

/// Resident memory of this process, in bytes (Linux; 0 elsewhere).
fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut group = c.benchmark_group("purge_fanout_one_control");
    group.sample_size(20);
    for nodes in FLEETS {
        let dir = tempfile::TempDir::new().expect("a data directory");
        let toml = format!(
            "[controller]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
             data_dir = {:?}\ntoken = {TOKEN:?}\n\
             [health]\nheartbeat_timeout = \"10m\"\nprobe_interval = \"10m\"\n\
             [purge]\nrate_per_second = 100000\nburst = 100000\n\
             [streams]\nmax_nodes = 2000\n",
            dir.path().display().to_string()
        );
        let config = ControlConfig::from_toml(&toml).expect("a valid configuration");
        let (node_addr, admin, fleet, _stop) = runtime.block_on(async {
            let node = ControlNode::bind(config).await.expect("control binds");
            let (node_addr, admin_addr) = (node.node_addr, node.admin_addr);
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(node.run(Box::pin(async move {
                let _ = stop_rx.await;
            })));
            let admin = AdminClient::new(&format!("http://{admin_addr}"), TOKEN).expect("client");
            let fleet = Arc::new(Fleet {
                seen: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
                changed: Notify::new(),
                client: Client::builder(TokioExecutor::new())
                    .pool_max_idle_per_host(2 * nodes)
                    .build_http(),
            });
            (node_addr, admin, fleet, stop_tx)
        });
        let before = resident_bytes();
        runtime.block_on(async {
            for i in 0..nodes {
                tokio::spawn(light_node(node_addr, i, Arc::clone(&fleet)));
            }
            // Every node registered and holding its stream.
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let views = admin.get_json("/v1/nodes").await.expect("nodes");
                let connected = views
                    .as_array()
                    .map_or(0, |v| v.iter().filter(|n| n["connected"] == true).count());
                if connected == nodes {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{connected} of {nodes} connected"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let per_node = resident_bytes().saturating_sub(before) / nodes as u64;
        let mut samples = Vec::new();
        group.bench_function(format!("nodes/{nodes}"), |b| {
            b.iter_custom(|iterations| {
                runtime.block_on(async {
                    let mut total = Duration::ZERO;
                    for i in 0..iterations {
                        let spec = PurgeSpec {
                            urls: vec![format!("http://site.test/{i}")],
                            ..PurgeSpec::default()
                        };
                        let started = Instant::now();
                        let accepted = admin.purge(&spec).await.expect("purge accepted");
                        loop {
                            let changed = fleet.changed.notified();
                            if fleet.all_saw(accepted.seq) {
                                break;
                            }
                            let _ = tokio::time::timeout(Duration::from_millis(5), changed).await;
                        }
                        let took = started.elapsed();
                        samples.push(took);
                        total += took;
                    }
                    total
                })
            })
        });
        // The first purge after the fleet connected is shown apart: its acks open every
        // node's ack connection at once.
        let first = samples.first().copied().unwrap_or_default();
        let mut rest = samples.split_off(samples.len().min(1));
        rest.sort();
        eprintln!(
            "{nodes} nodes: first purge after connecting {first:?}; then accept -> every node \
             p50 {:?}, p99 {:?} over {} purges; about {} KiB resident per connected node \
             (bench and control together)",
            percentile(&rest, 0.5),
            percentile(&rest, 0.99),
            rest.len(),
            per_node / 1024
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
