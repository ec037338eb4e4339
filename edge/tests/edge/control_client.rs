//! A real edge node following a small in-test control server that speaks the wire protocol:
//! registration, heartbeats, pushed purges and routing tables, resyncs, garbage and gaps.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body::Frame;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use verge_config::rules::RawRule;
use verge_config::wire::{
    Ack, Event, Heartbeat, NodeEntry, NodeRole, PurgeSpec, Registered, Registration, RoutingTable,
    MAX_EVENT_LINE_BYTES,
};
use verge_config::{NodeId, RegionId};
use verge_edge::shields::shield_specs;
use verge_testkit::{wait_until, RunningNode};

fn entry(id: &str, url: &str, weight: u32, healthy: bool) -> NodeEntry {
    NodeEntry {
        id: NodeId::new(id).unwrap(),
        role: NodeRole::Shield,
        region: RegionId::new("us").unwrap(),
        data_url: url.to_string(),
        admin_url: "http://127.0.0.1:1".to_string(),
        weight,
        healthy,
    }
}

fn table(version: u64, shields: Vec<NodeEntry>) -> RoutingTable {
    RoutingTable {
        version,
        regions: Vec::new(),
        shields,
        ..RoutingTable::default()
    }
}

#[test]
fn a_routing_table_gives_its_healthy_shields_or_nothing() {
    let t = table(
        3,
        vec![
            entry("s1", "http://10.0.0.1:8081", 2, true),
            entry("s2", "http://10.0.0.2:8081", 1, false),
        ],
    );
    let (specs, measured) = shield_specs(&t, None).unwrap();
    assert_eq!(specs.len(), 1);
    assert!(measured.is_empty());
    assert_eq!(specs[0].id.as_str(), "s1");
    assert_eq!(specs[0].url.to_string(), "http://10.0.0.1:8081");
    assert_eq!(specs[0].weight, 2);
    let bad = table(4, vec![entry("s1", "ftp://10.0.0.1", 1, true)]);
    assert!(shield_specs(&bad, None).unwrap_err().contains("s1"));
}

#[test]
fn the_tier_plan_picks_the_ring_of_the_edges_region_and_the_rest_is_measured() {
    use verge_config::tiers::{RegionTier, TierPlan, Topology};
    let mut t = table(
        5,
        vec![
            entry("s1", "http://10.0.0.1:8081", 1, true),
            entry("s2", "http://10.0.0.2:8081", 1, true),
            entry("s3", "http://10.0.0.3:8081", 1, false),
        ],
    );
    let tier = |region: &str, shields: &[&str]| RegionTier {
        region: RegionId::new(region).unwrap(),
        shields: shields.iter().map(|s| NodeId::new(s).unwrap()).collect(),
        basis: "measured".into(),
        cost: 1.0,
    };
    t.tiers = Some(TierPlan {
        topology: Topology::Auto,
        regions: vec![tier("ap", &["s2"]), tier("eu", &[])],
        upper: Vec::new(),
    });
    let ids = |specs: &[verge_config::ShieldSpec]| -> Vec<String> {
        specs.iter().map(|s| s.id.to_string()).collect()
    };
    let region = |r: &str| RegionId::new(r).unwrap();
    let (ring, measured) = shield_specs(&t, Some(&region("ap"))).unwrap();
    assert_eq!(
        (ids(&ring), ids(&measured)),
        (vec!["s2".into()], vec!["s1".into()])
    );
    // A region the plan leaves without shields sends its misses to the origin.
    let (ring, measured) = shield_specs(&t, Some(&region("eu"))).unwrap();
    assert!(ring.is_empty());
    assert_eq!(ids(&measured), ["s1", "s2"]);
    // A region the plan does not name, or no region: every healthy shield.
    let (ring, _) = shield_specs(&t, Some(&region("us"))).unwrap();
    assert_eq!(ids(&ring), ["s1", "s2"]);
}

/// Bound on every wait below.
const DEADLINE: Duration = Duration::from_secs(10);

/// A response body fed line by line by the test.
struct Lines(mpsc::Receiver<Bytes>);

impl http_body::Body for Lines {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|line| line.map(|l| Ok(Frame::data(l))))
    }
}

/// One push stream a node opened: what it asked for, and the sender of its lines.
struct OpenStream {
    node: String,
    since: Option<u64>,
    lines: mpsc::Sender<Bytes>,
}

/// What the control server has received.
#[derive(Default)]
struct Seen {
    registrations: Vec<Registration>,
    heartbeats: Vec<Heartbeat>,
    acks: Vec<u64>,
    streams: Vec<OpenStream>,
}

/// A control server that accepts every registration, heartbeat and ack, and lets the test
/// write each push stream.
struct TestControl {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    server: JoinHandle<()>,
}

impl TestControl {
    async fn start() -> TestControl {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let state = Arc::clone(&seen);
        let server = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let state = Arc::clone(&state);
                let service = service_fn(move |request: Request<Incoming>| {
                    let state = Arc::clone(&state);
                    async move { Ok::<_, Infallible>(answer(&state, request).await) }
                });
                connections.spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        TestControl { addr, seen, server }
    }

    fn seen<T>(&self, read: impl FnOnce(&Seen) -> T) -> T {
        read(&self.seen.lock().unwrap())
    }

    fn stream_count(&self) -> usize {
        self.seen(|s| s.streams.len())
    }

    /// Waits for push stream number `n` (0-based) and says what it asked for.
    async fn stream(&self, n: usize) -> Option<u64> {
        let what = format!("push stream #{n}");
        wait_until(&what, DEADLINE, || async { self.stream_count() > n }).await;
        self.seen(|s| s.streams[n].since)
    }

    /// Writes `event` as one line of push stream number `n`.
    async fn send(&self, n: usize, event: &Event) {
        let mut line = serde_json::to_vec(event).unwrap();
        line.push(b'\n');
        self.send_raw(n, &line).await;
    }

    async fn send_raw(&self, n: usize, bytes: &[u8]) {
        let lines = self.seen(|s| s.streams[n].lines.clone());
        lines
            .send(Bytes::copy_from_slice(bytes))
            .await
            .expect("the node holds the stream");
    }

    async fn wait_for_ack(&self, seq: u64) {
        wait_until(&format!("ack of {seq}"), DEADLINE, || async {
            self.seen(|s| s.acks.contains(&seq))
        })
        .await;
    }

    async fn wait_for_heartbeat(&self, what: &str, test: impl Fn(&Heartbeat) -> bool) {
        wait_until(what, DEADLINE, || async {
            self.seen(|s| s.heartbeats.last().is_some_and(&test))
        })
        .await;
    }

    /// Stops listening and closes every open stream: control is gone.
    fn vanish(&self) {
        self.server.abort();
        self.seen.lock().unwrap().streams.clear();
    }
}

async fn answer(state: &Mutex<Seen>, request: Request<Incoming>) -> Response<Lines> {
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let (tx, rx) = mpsc::channel(64);
    let mut state = state.lock().unwrap();
    let reply = match path.as_str() {
        "/v1/register" => {
            state
                .registrations
                .push(serde_json::from_slice(&body).unwrap());
            serde_json::to_vec(&Registered {
                heartbeat_interval_ms: 1000,
                head: 0,
            })
            .unwrap()
        }
        "/v1/heartbeat" => {
            state
                .heartbeats
                .push(serde_json::from_slice(&body).unwrap());
            b"{}".to_vec()
        }
        "/v1/ack" => {
            let ack: Ack = serde_json::from_slice(&body).unwrap();
            state.acks.push(ack.applied_seq);
            b"{}".to_vec()
        }
        "/v1/events" => {
            let mut node = String::new();
            let mut since = None;
            for pair in query.split('&') {
                match pair.split_once('=') {
                    Some(("node", id)) => node = id.to_string(),
                    Some(("since", seq)) => since = Some(seq.parse().unwrap()),
                    _ => {}
                }
            }
            state.streams.push(OpenStream {
                node,
                since,
                lines: tx,
            });
            return Response::new(Lines(rx));
        }
        other => panic!("unexpected request to {other}"),
    };
    let _ = tx.try_send(Bytes::from(reply));
    drop(tx);
    Response::new(Lines(rx))
}

/// A tiny HTTP server answering every GET with a cacheable body and its own name in
/// `x-served-by`, counting requests per path.
struct TinyServer {
    addr: SocketAddr,
    hits: Arc<Mutex<Vec<String>>>,
}

impl TinyServer {
    async fn start(name: &'static str) -> TinyServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&hits);
        verge_testkit::http1::serve(listener, move |request| {
            let path = request.uri().path_and_query().map_or("", |p| p.as_str());
            log.lock().unwrap().push(path.to_string());
            let reply = Response::builder()
                .header("x-served-by", name)
                .header("cache-control", "max-age=300")
                .body(Full::new(Bytes::from_static(b"ok")))
                .unwrap();
            async move { reply }
        });
        TinyServer { addr, hits }
    }

    fn hits(&self, path: &str) -> usize {
        self.hits
            .lock()
            .unwrap()
            .iter()
            .filter(|p| *p == path)
            .count()
    }
}

/// A running edge node with a control plane configured.
struct TestEdge {
    node: RunningNode,
    data: SocketAddr,
    admin: SocketAddr,
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl TestEdge {
    async fn start(control: &TestControl, origin: &TinyServer) -> TestEdge {
        let text = format!(
            "[edge]\nid = \"edge-t\"\nregion = \"us\"\n\
             [server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
             [upstream]\norigin = \"http://{}\"\n\
             [control]\nurl = \"http://{}\"\nheartbeat_interval = \"20ms\"\n\
             reconnect_min = \"5ms\"\nreconnect_max = \"50ms\"\n",
            origin.addr, control.addr
        );
        let node = RunningNode::from_toml::<verge_edge::EdgeRole>(&text).await;
        TestEdge {
            data: node.data_addr,
            admin: node.admin_addr,
            node,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// GETs `path` through the edge; returns who served it (`origin`, `shield`).
    async fn get(&self, path: &str) -> String {
        let uri: Uri = format!("http://{}{path}", self.data).parse().unwrap();
        let response = tokio::time::timeout(DEADLINE, self.client.get(uri))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        let by = response.headers()["x-served-by"]
            .to_str()
            .unwrap()
            .to_string();
        response.into_body().collect().await.unwrap();
        by
    }

    /// A URL of this edge as a purge names it.
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.data)
    }

    /// Waits until the metric line starting with `line_start` reads `value`.
    async fn wait_for_metric(&self, line_start: &str, value: &str) {
        let what = format!("{line_start}{value}");
        wait_until(&what, DEADLINE, || async {
            self.metric(line_start).await.as_deref() == Some(value)
        })
        .await;
    }

    /// Asserts that the metric line beginning `line_start` has `value`.
    async fn assert_metric(&self, line_start: &str, value: &str) {
        assert_eq!(
            self.metric(line_start).await.as_deref(),
            Some(value),
            "{line_start}"
        );
    }

    async fn metric(&self, line_start: &str) -> Option<String> {
        let uri: Uri = format!("http://{}/metrics", self.admin).parse().unwrap();
        let response = self.client.get(uri).await.unwrap();
        let text = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8_lossy(&text)
            .lines()
            .find(|l| l.starts_with(line_start))
            .map(|l| l[line_start.len()..].trim().to_string())
    }

    /// Shuts the node down; every task it started must end promptly.
    async fn stop(self) {
        self.node.stop().await;
    }
}

/// A routing table event: table `version` with `shields`, at purge sequence `seq`.
fn routing(seq: u64, version: u64, shields: Vec<NodeEntry>) -> Event {
    Event::Routing {
        seq,
        table: table(version, shields),
    }
}

/// A fake control, an origin, and an edge following that control in front of that origin.
async fn edge_under_control() -> (TestControl, TinyServer, TestEdge) {
    let control = TestControl::start().await;
    let origin = TinyServer::start("origin").await;
    let edge = TestEdge::start(&control, &origin).await;
    (control, origin, edge)
}

fn purge(seq: u64, urls: Vec<String>) -> Event {
    Event::Purge {
        seq,
        spec: PurgeSpec {
            urls,
            ..PurgeSpec::default()
        },
    }
}

#[tokio::test]
async fn a_pushed_purge_removes_the_cached_object_and_is_acked() {
    let (control, origin, edge) = edge_under_control().await;
    // A node that just started asks for no backlog.
    assert_eq!(control.stream(0).await, None);
    let registration = control.seen(|s| s.registrations[0].clone());
    assert_eq!(registration.id.as_str(), "edge-t");
    assert_eq!(registration.role, NodeRole::Edge);
    assert_eq!(registration.region.as_str(), "us");
    assert_eq!(registration.data_url, format!("http://{}", edge.data));
    assert_eq!(registration.admin_url, format!("http://{}", edge.admin));
    assert_eq!(registration.weight, 1);
    assert_eq!(control.seen(|s| s.streams[0].node.clone()), "edge-t");

    edge.get("/a").await;
    edge.get("/a").await;
    edge.get("/b").await;
    assert_eq!(origin.hits("/a"), 1, "the second GET is a hit");

    control.send(0, &purge(1, vec![edge.url("/a")])).await;
    control.wait_for_ack(1).await;
    edge.get("/a").await;
    edge.get("/b").await;
    assert_eq!(origin.hits("/a"), 2, "purged: the next GET is a miss");
    assert_eq!(origin.hits("/b"), 1, "only what the purge names goes");
    control
        .wait_for_heartbeat("a heartbeat with applied_seq 1", |h| h.applied_seq == 1)
        .await;
    edge.assert_metric("verge_control_applied_seq ", "1").await;
    edge.assert_metric("verge_control_connected ", "1").await;
    edge.assert_metric("verge_control_events_total{type=\"purge\"} ", "1")
        .await;
    edge.assert_metric("verge_purged_urls_total ", "1").await;
    edge.stop().await;
}

#[tokio::test]
async fn a_routing_table_sets_the_shields_and_survives_control_going_away() {
    let (control, _origin, edge) = edge_under_control().await;
    let shield = TinyServer::start("shield").await;
    control.stream(0).await;
    assert_eq!(edge.get("/before").await, "origin", "no shields yet");

    let shields = vec![entry("s1", &format!("http://{}", shield.addr), 1, true)];
    control.send(0, &routing(3, 7, shields)).await;
    // The first stream starts at the head the table names.
    control.wait_for_ack(3).await;
    assert_eq!(edge.get("/one").await, "shield");
    edge.assert_metric("verge_routing_table_version ", "7")
        .await;
    control
        .wait_for_heartbeat("a heartbeat with the table and shield health", |h| {
            // The shield, then the origin it falls back to (named by its URL).
            h.table_version == 7
                && h.applied_seq == 3
                && h.upstreams.len() == 2
                && h.upstreams[0].id == "s1"
                && h.upstreams[0].up
                && h.upstreams[1].id.starts_with("http://")
        })
        .await;

    // An unusable table is refused whole; the last good one stays.
    let bad = vec![entry("s1", "ftp://nowhere", 1, true)];
    control.send(0, &routing(3, 8, bad)).await;
    control.send(0, &purge(4, vec![edge.url("/x")])).await;
    control.wait_for_ack(4).await;
    edge.assert_metric("verge_routing_table_version ", "7")
        .await;
    assert_eq!(edge.get("/two").await, "shield");

    // Control goes away: the node keeps serving with the table it has.
    control.vanish();
    edge.wait_for_metric("verge_control_connected ", "0").await;
    assert_eq!(edge.get("/three").await, "shield");
    assert_eq!(shield.hits("/three"), 1);
    edge.stop().await;
}

#[tokio::test]
async fn an_unhealthy_shield_leaves_the_ring() {
    let (control, _origin, edge) = edge_under_control().await;
    let shield = TinyServer::start("shield").await;
    control.stream(0).await;
    let url = format!("http://{}", shield.addr);
    for (version, healthy, expected) in [(1, true, "shield"), (2, false, "origin")] {
        let shields = vec![entry("s1", &url, 1, healthy)];
        control.send(0, &routing(0, version, shields)).await;
        edge.wait_for_metric("verge_routing_table_version ", &version.to_string())
            .await;
        assert_eq!(
            edge.get(&format!("/v{version}")).await,
            expected,
            "table {version}"
        );
    }
    edge.stop().await;
}

#[tokio::test]
async fn a_resync_drops_the_whole_cache() {
    let (control, origin, edge) = edge_under_control().await;
    control.stream(0).await;
    edge.get("/r").await;
    edge.get("/s").await;
    edge.get("/r").await;
    assert_eq!(origin.hits("/r"), 1);
    control
        .send(
            0,
            &Event::Resync {
                seq: 10,
                reason: "log truncated".to_string(),
            },
        )
        .await;
    control.wait_for_ack(10).await;
    edge.get("/r").await;
    edge.get("/s").await;
    assert_eq!(origin.hits("/r"), 2);
    assert_eq!(origin.hits("/s"), 2);
    edge.assert_metric("verge_control_applied_seq ", "10").await;
    edge.stop().await;
}

#[tokio::test]
async fn garbage_and_gaps_reconnect_from_the_last_applied_purge() {
    let (control, _origin, edge) = edge_under_control().await;
    assert_eq!(control.stream(0).await, None);
    control.send(0, &purge(1, vec![edge.url("/a")])).await;
    control.wait_for_ack(1).await;
    // A replayed purge is skipped; the next one applies.
    control.send(0, &purge(1, vec![edge.url("/a")])).await;
    control.send(0, &purge(2, vec![edge.url("/a")])).await;
    control.wait_for_ack(2).await;
    assert_eq!(
        edge.metric("verge_control_events_total{type=\"purge\"} ")
            .await
            .unwrap(),
        "3"
    );
    edge.assert_metric("verge_purged_urls_total ", "0").await;

    control.send_raw(0, b"this is not an event\n").await;
    assert_eq!(control.stream(1).await, Some(2), "resumes after garbage");
    assert_eq!(
        edge.metric("verge_control_events_total{type=\"invalid\"} ")
            .await
            .unwrap(),
        "1"
    );

    // Purge 5 without 3 and 4: they were lost, so the node asks again from 2.
    control.send(1, &purge(5, vec![edge.url("/a")])).await;
    assert_eq!(control.stream(2).await, Some(2), "resumes after a gap");
    edge.assert_metric("verge_control_applied_seq ", "2").await;
    edge.assert_metric("verge_control_head_seq ", "5").await;
    edge.assert_metric("verge_control_lag ", "3").await;
    for seq in 3..=5 {
        control.send(2, &purge(seq, vec![edge.url("/a")])).await;
    }
    control.wait_for_ack(5).await;
    edge.assert_metric("verge_control_lag ", "0").await;

    // A line over the bound is garbage too, even before its newline.
    let long = vec![b'x'; MAX_EVENT_LINE_BYTES + 1];
    control.send_raw(2, &long).await;
    assert_eq!(control.stream(3).await, Some(5));
    let reconnects: u64 = edge
        .metric("verge_control_reconnects_total ")
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert!(reconnects >= 3, "{reconnects}");
    edge.stop().await;
}

/// A routing table carrying control's cache rules.
fn routing_with_rules(seq: u64, version: u64, rules: Vec<RawRule>) -> Event {
    Event::Routing {
        seq,
        table: RoutingTable {
            rules,
            ..table(version, Vec::new())
        },
    }
}

fn bypass(name: &str, path: &str) -> RawRule {
    RawRule {
        name: Some(name.to_string()),
        path: Some(path.to_string()),
        bypass: Some(true),
        ..RawRule::default()
    }
}

#[tokio::test]
async fn control_s_rules_apply_before_the_node_s_own_until_it_sends_others() {
    let (control, origin, edge) = edge_under_control().await;
    control.stream(0).await;
    control
        .send(
            0,
            &routing_with_rules(0, 1, vec![bypass("from-control", "/api/")]),
        )
        .await;
    edge.wait_for_metric("verge_routing_table_version ", "1")
        .await;
    edge.get("/api/a").await;
    edge.get("/api/a").await;
    assert_eq!(origin.hits("/api/a"), 2, "control's bypass rule applies");
    edge.assert_metric(
        "verge_rule_requests_total{cache_status=\"pass\",rule=\"from-control\"} ",
        "2",
    )
    .await;

    // Invalid rules are refused; the earlier ones stay.
    control
        .send(
            0,
            &routing_with_rules(0, 2, vec![bypass("broken", "no-slash")]),
        )
        .await;
    edge.wait_for_metric("verge_routing_table_version ", "2")
        .await;
    edge.get("/api/b").await;
    edge.get("/api/b").await;
    assert_eq!(origin.hits("/api/b"), 2, "the earlier rules stay in force");

    // A table without rules takes control's away.
    control.send(0, &routing(0, 3, Vec::new())).await;
    edge.wait_for_metric("verge_routing_table_version ", "3")
        .await;
    edge.get("/api/c").await;
    edge.get("/api/c").await;
    assert_eq!(
        origin.hits("/api/c"),
        1,
        "cached again without control's rule"
    );
    edge.stop().await;
}
