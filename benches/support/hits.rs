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

/// What a GET asks for: the host, the path, and the encodings it accepts. A bare host asks
/// for [`OBJECT`] with no `Accept-Encoding`.
#[derive(Debug, Clone, Copy)]
pub struct Ask {
    pub host: &'static str,
    pub path: &'static str,
    pub accept_encoding: Option<&'static str>,
}

impl From<&'static str> for Ask {
    fn from(host: &'static str) -> Ask {
        Ask {
            host,
            path: OBJECT,
            accept_encoding: None,
        }
    }
}

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

/// One GET, read whole.
pub async fn get(sender: &mut Sender, ask: impl Into<Ask>) {
    let ask = ask.into();
    sender.ready().await.expect("connection ready");
    let mut request = Request::get(ask.path).header(http::header::HOST, ask.host);
    if let Some(accept) = ask.accept_encoding {
        request = request.header(http::header::ACCEPT_ENCODING, accept);
    }
    let request = request.body(Empty::new()).expect("request");
    let response = sender.send_request(request).await.expect("response");
    assert_eq!(response.status(), 200);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    if ask.path == OBJECT {
        assert_eq!(body.len(), OBJECT_BYTES);
    } else {
        assert!(!body.is_empty());
    }
}

/// [`REQUESTS`] GETs over the connections at once, each sending its share in turn; the
/// connections are handed back for the next round.
pub async fn round(senders: Vec<Sender>, ask: impl Into<Ask>) -> Vec<Sender> {
    let host = ask.into();
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
    ask: impl Into<Ask>,
    iters: u64,
) -> Duration {
    let host = ask.into();
    client.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            *senders = round(std::mem::take(senders), host).await;
        }
        start.elapsed()
    })
}

/// A keep-alive HTTP/1.1 connection to `addr`.
pub async fn connect(addr: SocketAddr) -> Sender {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    handshake(tcp).await
}

/// [`CONNECTIONS`] connections to each of two edges, after one round on each (which fills
/// their caches: every GET after it is a hit).
#[allow(dead_code)] // not every bench including this file compares two edges
pub fn warm_pair(
    client: &Runtime,
    (a, b): (SocketAddr, SocketAddr),
    ask: impl Into<Ask>,
) -> (Vec<Sender>, Vec<Sender>) {
    let ask = ask.into();
    client.block_on(async {
        let (mut on_a, mut on_b) = (Vec::new(), Vec::new());
        for _ in 0..CONNECTIONS {
            on_a.push(connect(a).await);
            on_b.push(connect(b).await);
        }
        (round(on_a, ask).await, round(on_b, ask).await)
    })
}

/// Rounds timed in turn on two edges, `rounds` each, so that whatever else the machine does
/// in the meantime weighs on both alike (the first to go alternates); the median round of
/// each.
#[allow(dead_code)] // not every bench including this file compares two edges
pub fn interleaved(
    client: &Runtime,
    (a, b): (&mut Vec<Sender>, &mut Vec<Sender>),
    ask: impl Into<Ask>,
    rounds: usize,
) -> (Duration, Duration) {
    let ask = ask.into();
    let (mut t_a, mut t_b) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for i in 0..rounds {
        if i % 2 == 0 {
            t_a.push(time_rounds(client, a, ask, 1));
            t_b.push(time_rounds(client, b, ask, 1));
        } else {
            t_b.push(time_rounds(client, b, ask, 1));
            t_a.push(time_rounds(client, a, ask, 1));
        }
    }
    t_a.sort_unstable();
    t_b.sort_unstable();
    (t_a[rounds / 2], t_b[rounds / 2])
}

/// Edges in front of one [`origin`], on a runtime of one worker thread, serving until dropped.
pub struct Edges {
    /// The edges serving, in the order of their configurations.
    pub nodes: Vec<RunningNode>,
    _origin: FakeOrigin,
    runtime: Runtime,
}

impl Edges {
    /// The origin the edges are in front of, for benches that add paths to it.
    #[allow(dead_code)] // not every bench including this file adds paths
    pub fn origin(&self) -> &FakeOrigin {
        &self._origin
    }

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
