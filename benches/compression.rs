//! What does serving a compressed variant cost an edge on the hit path, and how fast is each
//! encoding?
//!
//! `hit/compression_off` and `hit/compression_br` each send 64 GETs (`Accept-Encoding: gzip,
//! deflate, br`) of a cached 8 KiB HTML page over 8 keep-alive HTTP/1.1 connections, to two
//! edges in this process: one with `[compression] enabled = false` (it sends the 8 KiB), one
//! with the defaults (it sends the brotli variant, already stored). Their ratio is the cost of
//! finding and serving the variant; the target is within 10%. As in the access-log bench, the
//! two are then timed round by round in turn and the ratio of their median rounds printed.
//!
//! `compress/*` measures each encoding at its default level on a 64 KiB HTML page, in bytes
//! of input per second.
//!
//! Run with `cargo bench --bench compression -- --warm-up-time 1 --measurement-time 3`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tokio::runtime::Runtime;
use verge_cache::compress;
use verge_config::compression::{CompressionConfig, Encoding};
use verge_testkit::Reply;

#[path = "support/hits.rs"]
mod hits;

use hits::{interleaved, time_rounds, warm_pair, Ask, Edges, Sender, REQUESTS};

const PAGE: &str = "/page.html";

const ASK: Ask = Ask {
    host: "bench.test",
    path: PAGE,
    accept_encoding: Some("gzip, deflate, br"),
};

fn page(bytes: usize) -> String {
    let line = "<li><a href=\"/articles/verge\">Verge serves this from its cache</a></li>\n";
    line.repeat(bytes / line.len() + 1)[..bytes].to_string()
}

fn hit_path(c: &mut Criterion) {
    let edges = Edges::start(|origin| {
        let base = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
             [upstream]\norigin = \"http://{origin}\"\n"
        );
        vec![format!("{base}[compression]\nenabled = false\n"), base]
    });
    edges.origin().on(
        PAGE,
        Reply::ok(page(8 * 1024))
            .cache_control("public, max-age=3600")
            .header("content-type", "text/html; charset=utf-8"),
    );
    let (off_addr, on_addr) = (edges.nodes[0].data_addr, edges.nodes[1].data_addr);
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    // Open the connections and fill both caches (and the variant): every GET below is a hit.
    let (mut off, mut on) = warm_pair(&client, (off_addr, on_addr), ASK);
    let mut hit = c.benchmark_group("hit");
    hit.throughput(Throughput::Elements(REQUESTS as u64));
    hit.bench_function("compression_off", |b| {
        b.iter_custom(|iters| time_rounds(&client, &mut off, ASK, iters))
    });
    hit.bench_function("compression_br", |b| {
        b.iter_custom(|iters| time_rounds(&client, &mut on, ASK, iters))
    });
    hit.finish();
    compare(&client, &mut off, &mut on);
}

/// Rounds timed in turn on the two edges; prints the median round of each and their ratio.
fn compare(client: &Runtime, off: &mut Vec<Sender>, on: &mut Vec<Sender>) {
    const ROUNDS: usize = 2000;
    let (median_off, median_on) = interleaved(client, (off, on), ASK, ROUNDS);
    println!(
        "interleaved, {ROUNDS} rounds of {REQUESTS} hits each: median round {median_off:?} with \
         compression off, {median_on:?} serving the stored brotli variant; throughput with \
         compression is {:.2} of without",
        median_off.as_secs_f64() / median_on.as_secs_f64()
    );
}

fn encodings(c: &mut Criterion) {
    let body = page(64 * 1024);
    let config = CompressionConfig {
        enabled: true,
        ..CompressionConfig::off()
    };
    let mut group = c.benchmark_group("compress");
    group.throughput(Throughput::Bytes(body.len() as u64));
    for encoding in Encoding::ALL {
        let level = config.level(encoding);
        group.bench_function(encoding.as_str(), |b| {
            b.iter(|| compress::compress(encoding, level, body.as_bytes()).expect("compress"))
        });
    }
    group.finish();
}

criterion_group!(compression, hit_path, encodings);
criterion_main!(compression);
