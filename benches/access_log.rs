//! What does writing an access log cost an edge on the hit path?
//!
//! `hit/log_off` and `hit/log_json` each send 64 GETs of a cached 1 KiB object over 8
//! concurrent keep-alive HTTP/1.1 connections opened beforehand, to two edges in this process:
//! one without an access log, one writing JSON lines to a file in a temporary directory
//! (every request sampled). Their ratio is the cost of the access log; the target is within
//! 10%. Both edges share one runtime thread and the origin, the clients run on another.
//!
//! Then, because criterion measures one after the other and this machine's speed drifts, the
//! two are timed round by round in turn and the ratio of their median rounds printed.
//!
//! Run with `cargo bench --bench access_log -- --warm-up-time 1 --measurement-time 3`.

use std::net::SocketAddr;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tokio::runtime::Runtime;

#[path = "support/hits.rs"]
mod hits;

use hits::{interleaved, time_rounds, warm_pair, Edges, Sender, REQUESTS};

/// The site the GETs ask for.
const HOST: &str = "bench.test";

/// Two edges (access log off, access log on) and their origin, running until dropped.
struct LogEdges {
    off: SocketAddr,
    json: SocketAddr,
    log: std::path::PathBuf,
    _edges: Edges,
    _dir: tempfile::TempDir,
}

impl LogEdges {
    fn start() -> LogEdges {
        let dir = tempfile::tempdir().expect("temporary directory");
        let log = dir.path().join("access.log");
        let edges = Edges::start(|origin| {
            let base = format!(
                "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
                 [upstream]\norigin = \"http://{origin}\"\n"
            );
            let logged = format!(
                "{base}[access_log]\npath = {:?}\nformat = \"json\"\n",
                log.display().to_string()
            );
            vec![base, logged]
        });
        LogEdges {
            off: edges.nodes[0].data_addr,
            json: edges.nodes[1].data_addr,
            log,
            _edges: edges,
            _dir: dir,
        }
    }
}

fn benches(c: &mut Criterion) {
    let edges = LogEdges::start();
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    // Open the keep-alive connections and fill both caches: every GET below is a hit.
    let (mut off, mut json) = warm_pair(&client, (edges.off, edges.json), HOST);
    let mut hit = c.benchmark_group("hit");
    hit.throughput(Throughput::Elements(REQUESTS as u64));
    hit.bench_function("log_off", |b| {
        b.iter_custom(|iters| time_rounds(&client, &mut off, HOST, iters))
    });
    hit.bench_function("log_json", |b| {
        b.iter_custom(|iters| time_rounds(&client, &mut json, HOST, iters))
    });
    hit.finish();
    compare(&client, &mut off, &mut json);
    let written = std::fs::metadata(&edges.log).map_or(0, |m| m.len());
    assert!(written > 0, "the access log was written");
}

/// Rounds timed in turn on the two edges; prints the median round of each and their ratio.
fn compare(client: &Runtime, off: &mut Vec<Sender>, json: &mut Vec<Sender>) {
    const ROUNDS: usize = 2000;
    let (median_off, median_json) = interleaved(client, (off, json), HOST, ROUNDS);
    println!(
        "interleaved, {ROUNDS} rounds of {REQUESTS} hits each: median round {median_off:?} with \
         the access log off, {median_json:?} with JSON lines; throughput with the log is {:.2} \
         of without",
        median_off.as_secs_f64() / median_json.as_secs_f64()
    );
}

criterion_group!(access_log, benches);
criterion_main!(access_log);
