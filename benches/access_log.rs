//! What does writing an access log cost an edge on the hit path?
//!
//! `hit/log_off` and `hit/log_json` each send 64 GETs of a cached 1 KiB object over 8
//! concurrent keep-alive HTTP/1.1 connections opened beforehand, to two edges in this process:
//! one without an access log, one writing JSON lines to a file in a temporary directory
//! (every request sampled). Their ratio is the cost of the access log; the target is within
//! 10%. Both edges share one runtime thread and the origin, the clients run on another.
//!
//! Run with `cargo bench --bench access_log -- --warm-up-time 1 --measurement-time 3`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use verge_config::EdgeConfig;

/// Concurrent keep-alive connections.
const CONNECTIONS: usize = 8;
/// GETs per iteration, spread over the connections.
const REQUESTS: usize = 64;
const OBJECT_BYTES: usize = 1024;

/// Two edges (access log off, access log on) and their origin, running until dropped.
struct Edges {
    off: SocketAddr,
    json: SocketAddr,
    log: std::path::PathBuf,
    _stop: Vec<tokio::sync::oneshot::Sender<()>>,
    _runtime: Runtime,
    _dir: tempfile::TempDir,
}

impl Edges {
    fn start() -> Edges {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("edge runtime");
        let dir = tempfile::tempdir().expect("temporary directory");
        let log = dir.path().join("access.log");
        let mut stop = Vec::new();
        let (off, json) = runtime.block_on(async {
            let origin = origin().await;
            let base = format!(
                "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
                 [upstream]\norigin = \"http://{origin}\"\n"
            );
            let logged = format!(
                "{base}[access_log]\npath = {:?}\nformat = \"json\"\n",
                log.display().to_string()
            );
            let mut addrs = Vec::new();
            for toml in [base, logged] {
                let config = EdgeConfig::from_toml(&toml).expect("bench edge config");
                let node = verge_testkit::bind_with_clock::<verge_edge::EdgeRole>(
                    &config,
                    std::sync::Arc::new(verge_cache::SystemClock),
                )
                .await
                .expect("bind edge");
                addrs.push(node.data_addr());
                let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                stop.push(tx);
                tokio::spawn(node.run(async {
                    let _ = rx.await;
                }));
            }
            (addrs[0], addrs[1])
        });
        Edges {
            off,
            json,
            log,
            _stop: stop,
            _runtime: runtime,
            _dir: dir,
        }
    }
}

/// An origin answering every GET with a cacheable 1 KiB body.
async fn origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
    let addr = listener.local_addr().expect("origin address");
    let body = Bytes::from(vec![b'x'; OBJECT_BYTES]);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_: Request<Incoming>| {
                    let mut response = Response::new(Full::new(body.clone()));
                    response.headers_mut().insert(
                        "cache-control",
                        http::HeaderValue::from_static("public, max-age=3600"),
                    );
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

type Sender = http1::SendRequest<Empty<Bytes>>;

async fn connect(addr: SocketAddr) -> Sender {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let (sender, connection) = http1::handshake(TokioIo::new(tcp))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(connection);
    sender
}

async fn get(sender: &mut Sender) {
    let request = Request::get("/object")
        .header("host", "bench.test")
        .body(Empty::new())
        .expect("request");
    sender.ready().await.expect("connection ready");
    let response = sender.send_request(request).await.expect("response");
    assert_eq!(response.status(), 200);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(body.len(), OBJECT_BYTES);
}

/// [`REQUESTS`] GETs over the connections at once; the connections are handed back.
async fn round(senders: Vec<Sender>) -> Vec<Sender> {
    let each = REQUESTS / senders.len();
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|mut sender| {
            tokio::spawn(async move {
                for _ in 0..each {
                    get(&mut sender).await;
                }
                sender
            })
        })
        .collect();
    let mut back = Vec::with_capacity(tasks.len());
    for task in tasks {
        back.push(task.await.expect("client task"));
    }
    back
}

fn time_rounds(client: &Runtime, senders: &mut Vec<Sender>, iters: u64) -> Duration {
    client.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            *senders = round(std::mem::take(senders)).await;
        }
        start.elapsed()
    })
}

fn benches(c: &mut Criterion) {
    let edges = Edges::start();
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    // Open the keep-alive connections and fill both caches: every GET below is a hit.
    let (mut off, mut json) = client.block_on(async {
        let mut off = Vec::new();
        let mut json = Vec::new();
        for _ in 0..CONNECTIONS {
            off.push(connect(edges.off).await);
            json.push(connect(edges.json).await);
        }
        (round(off).await, round(json).await)
    });
    let mut hit = c.benchmark_group("hit");
    hit.throughput(Throughput::Elements(REQUESTS as u64));
    hit.bench_function("log_off", |b| {
        b.iter_custom(|iters| time_rounds(&client, &mut off, iters))
    });
    hit.bench_function("log_json", |b| {
        b.iter_custom(|iters| time_rounds(&client, &mut json, iters))
    });
    hit.finish();
    let written = std::fs::metadata(&edges.log).map_or(0, |m| m.len());
    assert!(written > 0, "the access log was written");
}

criterion_group!(access_log, benches);
criterion_main!(access_log);
