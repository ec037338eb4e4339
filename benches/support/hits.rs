//! What the hit-path benches share: a 1 KiB cacheable object, keep-alive HTTP/1.1 connections
//! to an edge, and rounds of GETs over them timed for criterion. Included with
//! `#[path = "support/hits.rs"] mod hits;`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::runtime::Runtime;
use verge_config::EdgeConfig;
use verge_testkit::{FakeOrigin, Reply, RunningNode};

/// Concurrent keep-alive connections.
pub const CONNECTIONS: usize = 8;
/// GETs per round, spread over the connections.
pub const REQUESTS: usize = 64;
/// The object every GET asks for, and its size.
pub const OBJECT: &str = "/object";
pub const OBJECT_BYTES: usize = 1024;

pub type Sender = http1::SendRequest<Empty<Bytes>>;

/// An origin answering every GET with a cacheable 1 KiB body.
pub async fn origin() -> FakeOrigin {
    let origin = FakeOrigin::start().await;
    origin.on_prefix(
        "/",
        Reply::ok(vec![b'x'; OBJECT_BYTES]).cache_control("public, max-age=3600"),
    );
    origin
}

/// An HTTP/1.1 connection over `io`, driven in the background.
pub async fn handshake<S>(io: S) -> Sender
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http1::handshake(TokioIo::new(io))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(connection);
    sender
}

/// One GET of the object for `host`, read whole.
pub async fn get(sender: &mut Sender, host: &'static str) {
    sender.ready().await.expect("connection ready");
    let request = Request::get(OBJECT)
        .header(http::header::HOST, host)
        .body(Empty::new())
        .expect("request");
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

/// [`REQUESTS`] GETs over the connections at once, each sending its share in turn; the
/// connections are handed back for the next round.
pub async fn round(senders: Vec<Sender>, host: &'static str) -> Vec<Sender> {
    let each = REQUESTS / senders.len();
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|mut sender| {
            tokio::spawn(async move {
                for _ in 0..each {
                    get(&mut sender, host).await;
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

/// Runs rounds over `senders` for `iters` iterations; the time they took.
pub fn time_rounds(
    client: &Runtime,
    senders: &mut Vec<Sender>,
    host: &'static str,
    iters: u64,
) -> Duration {
    client.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            *senders = round(std::mem::take(senders), host).await;
        }
        start.elapsed()
    })
}

/// Edges in front of one [`origin`], on a runtime of one worker thread, serving until dropped.
pub struct Edges {
    /// The edges serving, in the order of their configurations.
    pub nodes: Vec<RunningNode>,
    _origin: FakeOrigin,
    runtime: Runtime,
}

impl Edges {
    /// One edge per TOML text `configs` makes from the origin's address.
    pub fn start(configs: impl FnOnce(SocketAddr) -> Vec<String>) -> Edges {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("edge runtime");
        let (nodes, origin) = runtime.block_on(async {
            let origin = origin().await;
            let mut nodes = Vec::new();
            for toml in configs(origin.addr()) {
                let config = EdgeConfig::from_toml(&toml).expect("bench edge config");
                let clock = std::sync::Arc::new(verge_cache::SystemClock);
                nodes.push(
                    RunningNode::start_with_clock::<verge_edge::EdgeRole>(&config, clock).await,
                );
            }
            (nodes, origin)
        });
        Edges {
            nodes,
            _origin: origin,
            runtime,
        }
    }
}

impl Drop for Edges {
    /// The nodes stop on their own runtime, which goes last.
    fn drop(&mut self) {
        let nodes = std::mem::take(&mut self.nodes);
        self.runtime.block_on(async move { drop(nodes) });
    }
}
