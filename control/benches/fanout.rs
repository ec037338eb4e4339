//! Purge fan-out from one control process to many nodes: light clients of the real node protocol
//! (register, hold `/v1/events`, acknowledge purges as they are read: `fixture/fleet.rs`) on
//! loopback, against the same control with few nodes as the baseline of the same run.
//!
//! Each iteration submits one purge through the admin API and waits until every node has read
//! it from its stream; the time measured is accept → the last node. Besides criterion's figures,
//! the run prints per fleet size the first purge after the fleet connected, the p50 and p99 over
//! the other iterations, and the memory held per connected node (resident set growth while the
//! nodes connect, divided by their number; the light nodes run in the same process).
//!
//! Run with `cargo bench -p verge-control --bench fanout`; compare `nodes/10` with
//! `nodes/1000` in one run.

#[path = "fixture/fleet.rs"]
mod fleet;

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use fleet::{percentile, resident_bytes, Fleet};
use verge_config::wire::PurgeSpec;
use verge_config::ControlConfig;
use verge_control::client::AdminClient;
use verge_control::ControlNode;

const TOKEN: &str = "fanout-bench-token-0123456789";
const FLEETS: [usize; 2] = [10, 1000];

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
        let (node_addr, admin, _stop) = runtime.block_on(async {
            let node = ControlNode::bind(config).await.expect("control binds");
            let (node_addr, admin_addr) = (node.node_addr, node.admin_addr);
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(node.run(Box::pin(async move {
                let _ = stop_rx.await;
            })));
            let admin = AdminClient::new(&format!("http://{admin_addr}"), TOKEN).expect("client");
            (node_addr, admin, stop_tx)
        });
        let before = resident_bytes();
        let fleet = runtime.block_on(async {
            let fleet = Fleet::start(&[node_addr], nodes);
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
            fleet
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
                        let took = fleet.timed_purge(&admin, &spec).await;
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
