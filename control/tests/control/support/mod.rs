//! Support for control's integration tests: a real control service on `127.0.0.1:0`, and plain
//! HTTP clients that play its nodes and operators (real edges and shields are tested elsewhere;
//! here the protocol itself is under test).
//!
//! - [`TestControl`]: a running [`ControlNode`] with helpers for the admin and node APIs;
//! - [`EventReader`]: a node's push stream, read line by line with bounded waits;
//! - [`HealthServer`]: a node admin listener that answers its probes;
//! - [`raw_exchange`]: bytes in, every byte until the server closes out.
//!
//! Every network wait is bounded by [`IO_TIMEOUT`] ([`within`]); conditions are awaited with
//! [`wait_until`], the workspace's one from `verge-testkit`.

// Each test file uses a different part of this module.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use verge_config::wire::{Event, MAX_EVENT_LINE_BYTES};
use verge_config::ControlConfig;
use verge_control::ControlNode;

pub use verge_testkit::wait_until;

/// Bound on any single network wait (a request, a connect, a read to the end).
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The admin bearer token of every test control.
pub const TOKEN: &str = "test-token-0123456789abcdef";

/// A configuration on ephemeral ports with `data_dir` and the admin `token`, then `extra` TOML
/// (whole tables, e.g. `"[purge]\nlog_retain = 3"`). Nodes stay up without heartbeats unless
/// `extra` has a `[health]` table.
pub fn control_toml(data_dir: &Path, token: &str, extra: &str) -> String {
    let mut text = format!(
        "[controller]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
         data_dir = {:?}\ntoken = {token:?}\n\n{extra}\n",
        data_dir.display().to_string(),
    );
    if !extra.contains("[health]") {
        text.push_str("[health]\nheartbeat_timeout = \"60s\"\n");
    }
    text
}

/// `future`, or a panic naming `what` after [`IO_TIMEOUT`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    verge_testkit::within(what, IO_TIMEOUT, future).await
}

/// A control service running in the test's runtime; stopped when dropped.
pub struct TestControl {
    pub node_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// Binds control to [`control_toml`]`(data_dir, TOKEN, extra)`, not running yet.
pub async fn bind_control(data_dir: &Path, extra: &str) -> ControlNode {
    let config = ControlConfig::from_toml(&control_toml(data_dir, TOKEN, extra))
        .unwrap_or_else(|e| panic!("test config is invalid: {e}"));
    within("control start", ControlNode::bind(config))
        .await
        .unwrap_or_else(|e| panic!("control did not start: {e}"))
}

/// Starts control with [`control_toml`]`(data_dir, TOKEN, extra)`.
pub async fn start_control(data_dir: &Path, extra: &str) -> TestControl {
    TestControl::spawn(bind_control(data_dir, extra).await)
}

/// A response read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {}", self.text()))
    }

    /// The `error` message of a JSON error answer.
    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message in {}", self.text()))
            .to_string()
    }
}

/// Sends one request on a fresh connection; returns the head and the unread body.
async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> (Response<Incoming>, JoinHandle<()>) {
    let what = format!("{method} {path}");
    let stream = within(&what, TcpStream::connect(addr))
        .await
        .unwrap_or_else(|e| panic!("{what}: cannot connect to {addr}: {e}"));
    let (mut sender, conn) = within(
        &what,
        hyper::client::conn::http1::handshake(TokioIo::new(stream)),
    )
    .await
    .unwrap_or_else(|e| panic!("{what}: handshake: {e}"));
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, addr.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(body))
        .unwrap_or_else(|e| panic!("{what}: bad request: {e}"));
    let response = within(&what, sender.send_request(request))
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    (response, conn)
}

/// One whole request and response on a fresh connection.
pub async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    let what = format!("{method} {path}");
    let (response, conn) = send(addr, method, path, headers, body.into()).await;
    let (head, body) = response.into_parts();
    let body = within(&what, body.collect())
        .await
        .unwrap_or_else(|e| panic!("{what}: reading the body: {e}"))
        .to_bytes();
    conn.abort();
    Reply {
        status: head.status,
        headers: head.headers,
        body,
    }
}

/// Writes `request` on a new connection and reads until the server closes it.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = within("raw connect", TcpStream::connect(addr))
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    within("raw write", stream.write_all(request))
        .await
        .unwrap_or_else(|e| panic!("cannot write to {addr}: {e}"));
    let mut answer = Vec::new();
    within(
        "the server to close the connection",
        stream.read_to_end(&mut answer),
    )
    .await
    .unwrap_or_else(|e| panic!("cannot read from {addr}: {e}"));
    String::from_utf8_lossy(&answer).into_owned()
}

/// A registration body.
pub fn registration(id: &str, role: &str, admin_url: &str) -> Value {
    serde_json::json!({
        "id": id,
        "role": role,
        "region": "us",
        "data_url": format!("http://{id}.test:8080"),
        "admin_url": admin_url,
        "weight": 1,
    })
}

/// An admin URL nobody listens on, held while the test runs: probes of it fail at once.
pub fn closed_admin_url() -> (String, verge_testkit::DeadAddr) {
    let dead = verge_testkit::DeadAddr::new();
    (format!("http://{}", dead.addr), dead)
}

impl TestControl {
    /// Runs bound control `node` in the test's runtime.
    pub fn spawn(node: ControlNode) -> TestControl {
        let (node_addr, admin_addr) = (node.node_addr, node.admin_addr);
        let (stop, task) = verge_testkit::spawn_until_stopped(|stopped| node.run(stopped));
        TestControl {
            node_addr,
            admin_addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// An admin API request with the right token.
    pub async fn admin(&self, method: Method, path: &str, body: &str) -> Reply {
        self.admin_with(TOKEN, method, path, body).await
    }

    /// An admin API request with bearer `token`.
    pub async fn admin_with(&self, token: &str, method: Method, path: &str, body: &str) -> Reply {
        let auth = format!("Bearer {token}");
        self.admin_as(Some(&auth), method, path, body).await
    }

    /// An admin API request with this `Authorization` header (none for `None`).
    pub async fn admin_as(
        &self,
        authorization: Option<&str>,
        method: Method,
        path: &str,
        body: &str,
    ) -> Reply {
        let mut headers = vec![("content-type", "application/json")];
        if let Some(auth) = authorization {
            headers.push(("authorization", auth));
        }
        request(
            self.admin_addr,
            method,
            path,
            &headers,
            Bytes::from(body.to_string()),
        )
        .await
    }

    /// A node API request.
    pub async fn node(&self, method: Method, path: &str, body: &str) -> Reply {
        request(
            self.node_addr,
            method,
            path,
            &[("content-type", "application/json")],
            Bytes::from(body.to_string()),
        )
        .await
    }

    /// Posts a purge that must be accepted; returns its sequence number.
    pub async fn purge(&self, spec: &Value) -> u64 {
        let reply = self
            .admin(Method::POST, "/v1/purge", &spec.to_string())
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());
        let accepted = reply.json();
        assert_eq!(accepted["id"], accepted["seq"], "{accepted}");
        accepted["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("no seq in {accepted}"))
    }

    /// Purges one URL, numbered `n`; returns its sequence number.
    pub async fn purge_url(&self, n: u64) -> u64 {
        self.purge(&serde_json::json!({ "urls": [url(n)] })).await
    }

    /// `POST /v1/register` with `body`.
    pub async fn post_register(&self, body: &Value) -> Reply {
        self.node(Method::POST, "/v1/register", &body.to_string())
            .await
    }

    /// Registers a node that must be accepted.
    pub async fn register(&self, id: &str, role: &str, admin_url: &str) {
        let reply = self.post_register(&registration(id, role, admin_url)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    }

    /// Registers edge `id` in `region`, serving at `data_ip:8080`, probed at `admin_url`; it
    /// must be accepted.
    pub async fn register_edge(
        &self,
        id: &str,
        region: &str,
        data_ip: &str,
        weight: u32,
        admin_url: &str,
    ) {
        let body = serde_json::json!({
            "id": id,
            "role": "edge",
            "region": region,
            "data_url": format!("http://{data_ip}:8080"),
            "admin_url": admin_url,
            "weight": weight,
        });
        let reply = self.post_register(&body).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "register {id}: {}",
            reply.text()
        );
    }

    /// `GET /v1/routing` on the admin API.
    pub async fn routing(&self) -> Value {
        let reply = self.admin(Method::GET, "/v1/routing", "").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        reply.json()
    }

    /// Acknowledges purges up to `seq` for node `id`.
    pub async fn ack(&self, id: &str, seq: u64) {
        let body = serde_json::json!({ "id": id, "applied_seq": seq }).to_string();
        let reply = self.node(Method::POST, "/v1/ack", &body).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    }

    /// Opens node `id`'s live push stream and reads past the routing table it starts with.
    pub async fn live_events(&self, id: &str) -> EventReader {
        let mut stream = self.events(id, None).await;
        stream.expect_routing().await;
        stream
    }

    /// Opens node `id`'s push stream (resuming after `since`).
    pub async fn events(&self, id: &str, since: Option<u64>) -> EventReader {
        let path = match since {
            Some(since) => format!("/v1/events?node={id}&since={since}"),
            None => format!("/v1/events?node={id}"),
        };
        let (response, conn) = send(self.node_addr, Method::GET, &path, &[], Bytes::new()).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        assert_eq!(
            response
                .headers()
                .get(header::CONTENT_TYPE)
                .map(|v| v.as_bytes()),
            Some(&b"application/x-ndjson"[..]),
            "GET {path}"
        );
        EventReader {
            node: id.to_string(),
            body: response.into_body(),
            buf: Vec::new(),
            scanned: 0,
            conn,
        }
    }

    /// `GET /v1/nodes`: the entry of node `id`.
    pub async fn node_view(&self, id: &str) -> Value {
        let reply = self.admin(Method::GET, "/v1/nodes", "").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let nodes = reply.json();
        nodes
            .as_array()
            .and_then(|all| all.iter().find(|n| n["id"] == id))
            .cloned()
            .unwrap_or_else(|| panic!("node {id} not in {nodes}"))
    }

    /// `GET /v1/purge/{seq}`.
    pub async fn purge_status(&self, seq: u64) -> Reply {
        self.admin(Method::GET, &format!("/v1/purge/{seq}"), "")
            .await
    }

    /// The value of the sample whose line starts with `series` (e.g.
    /// `verge_control_stream_drops_total{reason="slow"}`); 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let reply = request(self.admin_addr, Method::GET, "/metrics", &[], Bytes::new()).await;
        assert_eq!(reply.status, StatusCode::OK);
        let text = reply.text();
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0.0, |value| {
                value
                    .trim()
                    .parse()
                    .unwrap_or_else(|e| panic!("{series}: bad value {value:?}: {e}"))
            })
    }

    /// Stops control and waits until it has: listeners closed, streams ended.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            within("control to stop", task)
                .await
                .unwrap_or_else(|e| panic!("control's run task failed: {e}"));
        }
    }
}

impl Drop for TestControl {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The URL purged by [`TestControl::purge_url`]`(n)`.
pub fn url(n: u64) -> String {
    format!("http://example.test/{n}")
}

/// A node's push stream, read one NDJSON line at a time.
pub struct EventReader {
    node: String,
    body: Incoming,
    buf: Vec<u8>,
    /// How much of `buf` is known to hold no line end.
    scanned: usize,
    conn: JoinHandle<()>,
}

/// What waiting on a stream gave.
#[derive(Debug)]
pub enum Next {
    Event(Box<Event>),
    /// The stream ended (control closed it).
    End,
    /// Nothing within the wait.
    Quiet,
}

impl EventReader {
    /// The next event other than a keepalive, if one comes within `wait`.
    pub async fn poll(&mut self, wait: Duration) -> Next {
        let give_up = tokio::time::Instant::now() + wait;
        loop {
            let newline = self.buf[self.scanned..].iter().position(|b| *b == b'\n');
            if let Some(end) = newline.map(|at| self.scanned + at) {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                self.scanned = 0;
                let event: Event = serde_json::from_slice(&line).unwrap_or_else(|e| {
                    panic!(
                        "{}: bad event line ({e}): {}",
                        self.node,
                        String::from_utf8_lossy(&line)
                    )
                });
                if matches!(event, Event::Keepalive { .. }) {
                    continue;
                }
                return Next::Event(Box::new(event));
            }
            self.scanned = self.buf.len();
            assert!(
                self.buf.len() <= MAX_EVENT_LINE_BYTES,
                "{}: an event line longer than {MAX_EVENT_LINE_BYTES} bytes",
                self.node
            );
            match tokio::time::timeout_at(give_up, self.body.frame()).await {
                Err(_) => return Next::Quiet,
                Ok(None) => {
                    assert!(
                        self.buf.is_empty(),
                        "{}: the stream ended mid-line",
                        self.node
                    );
                    return Next::End;
                }
                Ok(Some(Err(e))) => panic!("{}: stream failed: {e}", self.node),
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// The next event other than a keepalive; panics if none comes within [`IO_TIMEOUT`].
    pub async fn next(&mut self) -> Event {
        match self.poll(IO_TIMEOUT).await {
            Next::Event(event) => *event,
            other => panic!("{}: expected an event, got {other:?}", self.node),
        }
    }

    /// The next event, which must be purge `seq` of [`url`]`(seq)`.
    pub async fn expect_purge(&mut self, seq: u64) {
        match self.next().await {
            Event::Purge { seq: got, spec } => {
                assert_eq!(got, seq, "{}: purges out of order", self.node);
                assert_eq!(spec.urls, vec![url(seq)], "{}: purge {seq}", self.node);
            }
            other => panic!("{}: expected purge {seq}, got {other:?}", self.node),
        }
    }

    /// The next event, which must be a routing table; returns it.
    pub async fn expect_routing(&mut self) -> verge_config::wire::RoutingTable {
        match self.next().await {
            Event::Routing { table, .. } => table,
            other => panic!("{}: expected a routing table, got {other:?}", self.node),
        }
    }

    /// Asserts that nothing but keepalives arrives for `wait`.
    pub async fn expect_quiet(&mut self, wait: Duration) {
        match self.poll(wait).await {
            Next::Quiet => {}
            other => panic!(
                "{}: expected nothing for {wait:?}, got {other:?}",
                self.node
            ),
        }
    }
}

impl Drop for EventReader {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

/// A node's admin listener answering `200 ok` to any request, one request a connection (so
/// a stopped server answers no probe, pooled or not).
pub struct HealthServer {
    pub url: String,
    task: JoinHandle<()>,
}

impl HealthServer {
    pub async fn start() -> HealthServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("cannot bind: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 2048];
                    let _ = stream.read(&mut buf).await;
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        )
                        .await;
                });
            }
        });
        HealthServer {
            url: format!("http://{addr}"),
            task,
        }
    }

    /// Closes the listener: probes are refused from now on.
    pub async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
