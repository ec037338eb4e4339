//! Membership changes of the shield ring, against tiny shields on real sockets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::failover::BUDGET_WINDOW_SECS;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Either, Empty};
use prometheus::Registry;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use verge_config::shields::UpperTierConfig;
use verge_config::{NodeId, OriginUrl, ShieldSpec, ShieldsConfig, UpstreamConfig};

use super::*;

/// A shield that answers every request with `status` and its own name in `x-shield`, after
/// `gate` is notified when one is given. Its 5xx answers are errors it generated itself (its
/// `Cache-Status` entry says so): the shield failing, not an answer it relays.
struct TinyShield {
    addr: SocketAddr,
    /// Requests received so far (counted when their head has arrived).
    hits: Arc<AtomicUsize>,
}

/// Paths of `http://site.test` that `a` owns in the ring {a, b}.
fn owned_by_a() -> impl Iterator<Item = String> {
    let ring = ShieldRing::new(&[
        RingMember { id: "a", weight: 1 },
        RingMember { id: "b", weight: 1 },
    ])
    .unwrap();
    (0..1000)
        .map(|i| format!("/k{i}"))
        .filter(move |p| ring.owner(format!("http://site.test{p}").as_bytes()) == 0)
}

impl TinyShield {
    /// Waits (up to 5 s) until a request's head has arrived.
    async fn reached(&self) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while self.hits.load(Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
    }

    async fn start(name: &'static str, status: u16, gate: Option<Arc<Notify>>) -> TinyShield {
        TinyShield::scripted(name, vec![(status, gate)]).await
    }

    /// Answers its n-th request with `script[n]` (status, and a gate to wait for), the last
    /// entry repeating.
    async fn scripted(name: &'static str, script: Vec<(u16, Option<Arc<Notify>>)>) -> TinyShield {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&hits);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let script = script.clone();
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    if read_head(&mut stream).await.is_none() {
                        return;
                    }
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    let (status, gate) = script[n.min(script.len() - 1)].clone();
                    if let Some(gate) = gate {
                        gate.notified().await;
                    }
                    let generated = if status >= 500 {
                        "cache-status: verge-shield; fwd=miss; detail=upstream-connect-error\r\n"
                    } else {
                        ""
                    };
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\nx-shield: {name}\r\n{generated}content-length: 2\r\nconnection: close\r\n\r\nok"
                    );
                    let _ = stream.write_all(reply.as_bytes()).await;
                });
            }
        });
        TinyShield { addr, hits }
    }

    fn spec(&self, id: &str) -> ShieldSpec {
        ShieldSpec {
            id: NodeId::new(id).unwrap(),
            url: OriginUrl::parse(&format!("http://{}", self.addr)).unwrap(),
            weight: 1,
            region: None,
        }
    }
}

fn upstream_config() -> UpstreamConfig {
    UpstreamConfig {
        origin: OriginUrl::parse("http://127.0.0.1:9").unwrap(),
        connect_timeout: Duration::from_secs(1),
        response_timeout: Duration::from_secs(5),
        max_idle_per_host: 4,
        idle_timeout: Duration::from_secs(5),
        max_connections: 16,
        source_address: None,
        tls: Default::default(),
    }
}

/// Shields without origin fallback, ejected at their first failure.
fn shields_config(members: Vec<ShieldSpec>) -> ShieldsConfig {
    ShieldsConfig {
        members,
        origin_fallback: false,
        upper: UpperTierConfig {
            failures_to_eject: 1,
            eject_for: Duration::from_secs(60),
            retry_budget_percent: 20,
            bounded_load_percent: None,
            tls: Default::default(),
        },
        tiers: None,
    }
}

fn shield_upstream(members: Vec<ShieldSpec>) -> ShieldUpstream {
    shield_upstream_with(&shields_config(members))
}

fn shield_upstream_with(config: &ShieldsConfig) -> ShieldUpstream {
    let registry = Registry::new();
    let metrics = ShieldMetrics::register(&registry).unwrap();
    let in_use = prometheus::IntGauge::new("in_use", "in use").unwrap();
    let upstream = upstream_config();
    let origin = OriginUpstream::new(&upstream, in_use.clone());
    ShieldUpstream::new(config, &upstream, origin, metrics, &in_use).unwrap()
}

/// Sends a GET for `path` and returns the status and the shield that answered.
async fn get(upstream: &ShieldUpstream, path: &str) -> Result<(StatusCode, String), RequestError> {
    let request = Request::get(format!("http://site.test{path}"))
        .header("host", "site.test")
        .body(Either::Left(Empty::new()))
        .unwrap();
    let hop = Hop::fill(request.uri(), request.headers()).unwrap();
    let response = upstream.send(request, &hop).await?;
    let status = response.status();
    let shield = response
        .headers()
        .get("x-shield")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let _ = response.into_body().collect().await;
    Ok((status, shield))
}

#[tokio::test]
async fn a_new_member_list_takes_effect_for_the_next_request() {
    let a = TinyShield::start("a", 200, None).await;
    let b = TinyShield::start("b", 200, None).await;
    let upstream = shield_upstream(vec![a.spec("a")]);
    assert_eq!(get(&upstream, "/x").await.unwrap().1, "a");

    upstream.set_members(&[b.spec("b")]).unwrap();
    assert_eq!(upstream.member_ids(), vec!["b".to_string()]);
    for path in ["/x", "/y", "/z"] {
        assert_eq!(get(&upstream, path).await.unwrap().1, "b");
    }
}

#[tokio::test]
async fn a_request_in_flight_fails_over_along_the_ring_it_started_with() {
    // `a` answers 503 only when released; meanwhile the ring is replaced by `c` alone. The
    // request must fail over to `b` (its own ring), not to `c`.
    let gate = Arc::new(Notify::new());
    let a = TinyShield::start("a", 503, Some(Arc::clone(&gate))).await;
    let b = TinyShield::start("b", 200, None).await;
    let c = TinyShield::start("c", 200, None).await;
    let upstream = Arc::new(shield_upstream(vec![a.spec("a"), b.spec("b")]));

    let path = owned_by_a().next().unwrap();

    let in_flight = tokio::spawn({
        let upstream = Arc::clone(&upstream);
        async move { get(&upstream, &path).await }
    });
    // Once the request has reached `a`, swap the ring, then release `a`.
    a.reached().await;
    upstream.set_members(&[c.spec("c")]).unwrap();
    gate.notify_one();
    let (status, shield) = tokio::time::timeout(Duration::from_secs(5), in_flight)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((status, shield.as_str()), (StatusCode::OK, "b"));
    assert_eq!(get(&upstream, "/other").await.unwrap().1, "c");
}

/// Shield `a`, which takes its requests and answers only when `gate` is released (a hung
/// machine), and `b`, which answers at once, both in the ring by a routing table; `path` is
/// owned by `a`.
struct HungA {
    gate: Arc<Notify>,
    a: TinyShield,
    b: TinyShield,
    upstream: Arc<ShieldUpstream>,
    path: String,
}

impl HungA {
    async fn start() -> HungA {
        let gate = Arc::new(Notify::new());
        let hung = HungA {
            a: TinyShield::start("a", 200, Some(Arc::clone(&gate))).await,
            b: TinyShield::start("b", 200, None).await,
            gate,
            upstream: Arc::new(shield_upstream(Vec::new())),
            path: owned_by_a().next().unwrap(),
        };
        hung.table(Some(true));
        hung
    }

    /// Applies a table with `b` healthy and `a` as given (`None`: not listed).
    fn table(&self, a: Option<bool>) {
        use verge_config::wire::{NodeEntry, NodeRole};
        static VERSION: AtomicUsize = AtomicUsize::new(1);
        let entry = |shield: &TinyShield, id: &str, healthy: bool| NodeEntry {
            id: NodeId::new(id).unwrap(),
            role: NodeRole::Shield,
            region: verge_config::RegionId::new("us").unwrap(),
            data_url: format!("http://{}", shield.addr),
            admin_url: "http://127.0.0.1:1".into(),
            weight: 1,
            healthy,
        };
        let mut shields = vec![entry(&self.b, "b", true)];
        shields.extend(a.map(|healthy| entry(&self.a, "a", healthy)));
        let table = RoutingTable {
            version: VERSION.fetch_add(1, Ordering::Relaxed) as u64,
            shields,
            ..RoutingTable::default()
        };
        self.upstream.apply_routing(&table).unwrap();
    }

    /// Sends `method` for `path` on its way in a task of its own, once `a` has it: a GET is a
    /// fill (replayable), anything else a pass.
    async fn waiting_on_a(
        &self,
        method: http::Method,
    ) -> tokio::task::JoinHandle<Result<(StatusCode, String), RequestError>> {
        let request = Request::builder()
            .method(method)
            .uri(format!("http://site.test{}", self.path))
            .header("host", "site.test")
            .body(Either::Left(Empty::new()))
            .unwrap();
        let hop = Hop {
            replayable: request.method() == http::Method::GET,
            ..Hop::fill(request.uri(), request.headers()).unwrap()
        };
        let upstream = Arc::clone(&self.upstream);
        let before = self.a.hits.load(Ordering::SeqCst);
        let task = tokio::spawn(async move {
            let response = upstream.send(request, &hop).await?;
            let status = response.status();
            let shield = response.headers()["x-shield"].to_str().unwrap().to_string();
            Ok((status, shield))
        });
        tokio::time::timeout(Duration::from_secs(5), async {
            while self.a.hits.load(Ordering::SeqCst) == before {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the request reaches a");
        task
    }

    /// `waiting` is still waiting on `a`, and gets `a`'s answer once it is released.
    async fn still_waits_for_a(
        &self,
        waiting: tokio::task::JoinHandle<Result<(StatusCode, String), RequestError>>,
    ) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        self.gate.notify_one();
        let answer = waiting.await.unwrap().unwrap();
        assert_eq!(answer, (StatusCode::OK, "a".to_string()));
    }
}

#[tokio::test]
async fn a_get_waiting_on_a_shield_control_declares_down_goes_to_the_next_owner() {
    let hung = HungA::start().await;
    let waiting = hung.waiting_on_a(http::Method::GET).await;
    hung.table(Some(false));
    // Well before the 5 s response timeout would have moved it on.
    let answer = tokio::time::timeout(Duration::from_secs(2), waiting)
        .await
        .expect("not left waiting on the shield control declared down")
        .unwrap()
        .unwrap();
    assert_eq!(answer, (StatusCode::OK, "b".to_string()));
    let counted = |result: &str| {
        hung.upstream
            .metrics
            .requests
            .with_label_values(&["a", result])
            .get()
    };
    assert_eq!(counted("withdrawn"), 1);
    assert_eq!(counted("timeout") + counted("error"), 0);
}

#[tokio::test]
async fn what_waits_on_a_shield_a_table_only_leaves_out_or_that_cannot_be_sent_again_waits() {
    let hung = HungA::start().await;
    // Left out of the table (a plan change, say), not down: the GET gets `a`'s answer.
    let waiting = hung.waiting_on_a(http::Method::GET).await;
    hung.table(None);
    hung.still_waits_for_a(waiting).await;

    // A pass (a POST: its body is read once) keeps waiting even when `a` is down.
    hung.table(Some(true));
    let waiting = hung.waiting_on_a(http::Method::POST).await;
    hung.table(Some(false));
    hung.still_waits_for_a(waiting).await;
}

#[tokio::test]
async fn a_shield_kept_across_a_change_keeps_its_health() {
    let a = TinyShield::start("a", 503, None).await;
    let b = TinyShield::start("b", 200, None).await;
    let upstream = shield_upstream(vec![a.spec("a")]);
    // One failure ejects `a` (failures_to_eject = 1) for a minute.
    assert_eq!(
        get(&upstream, "/x").await.unwrap().0,
        StatusCode::SERVICE_UNAVAILABLE
    );

    upstream.set_members(&[a.spec("a"), b.spec("b")]).unwrap();
    // Every key, including those `a` owns, goes to `b` without trying `a` again.
    for i in 0..20 {
        assert_eq!(get(&upstream, &format!("/k{i}")).await.unwrap().1, "b");
    }
    assert_eq!(a.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_rejected_member_list_leaves_the_ring_as_it_was() {
    let a = TinyShield::start("a", 200, None).await;
    let upstream = shield_upstream(vec![a.spec("a")]);
    let mut bad = a.spec("z");
    bad.weight = 0;
    assert!(matches!(
        upstream.set_members(&[bad]),
        Err(crate::ring::RingError::ZeroWeight { .. })
    ));
    assert_eq!(upstream.member_ids(), vec!["a".to_string()]);
    assert_eq!(get(&upstream, "/x").await.unwrap().1, "a");
}

#[tokio::test]
async fn an_empty_member_list_refuses_misses_without_fallback() {
    let a = TinyShield::start("a", 200, None).await;
    let upstream = shield_upstream(vec![a.spec("a")]);
    upstream.set_members(&[]).unwrap();
    assert!(matches!(
        get(&upstream, "/x").await,
        Err(RequestError::NoShield)
    ));
}

#[tokio::test]
async fn a_success_sent_before_an_ejection_does_not_end_it() {
    // `a` holds its first request (200) until released and fails the second (503), which
    // ejects it (failures_to_eject = 1).
    let gate = Arc::new(Notify::new());
    let a = TinyShield::scripted("a", vec![(200, Some(Arc::clone(&gate))), (503, None)]).await;
    let b = TinyShield::start("b", 200, None).await;
    let upstream = Arc::new(shield_upstream(vec![a.spec("a"), b.spec("b")]));
    let owned_by_a: Vec<String> = owned_by_a().take(3).collect();

    let slow = tokio::spawn({
        let (upstream, path) = (Arc::clone(&upstream), owned_by_a[0].clone());
        async move { get(&upstream, &path).await }
    });
    a.reached().await;
    // The second request fails at `a` (ejecting it) and is answered by `b`.
    assert_eq!(get(&upstream, &owned_by_a[1]).await.unwrap().1, "b");
    gate.notify_one();
    let (status, shield) = slow.await.unwrap().unwrap();
    assert_eq!((status.as_u16(), shield.as_str()), (200, "a"));

    // That late success did not put `a` back: its keys still go to `b` without trying `a`.
    assert_eq!(get(&upstream, &owned_by_a[2]).await.unwrap().1, "b");
    assert_eq!(a.hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn failovers_stay_within_the_retry_budget() {
    // Both shields fail every request with errors of their own, and stay in the ring.
    let a = TinyShield::start("a", 503, None).await;
    let b = TinyShield::start("b", 503, None).await;
    let mut config = shields_config(vec![a.spec("a"), b.spec("b")]);
    config.upper.failures_to_eject = 1000;
    config.upper.retry_budget_percent = 0;
    let upstream = shield_upstream_with(&config);
    // With no share of requests, only the floor is left over the window.
    let floor = usize::try_from(u64::from(MIN_RETRIES_PER_SECOND) * BUDGET_WINDOW_SECS).unwrap();
    let requests = floor + 10;

    for i in 0..requests {
        let (status, _) = get(&upstream, &format!("/obj/{i}")).await.unwrap();
        assert_eq!(status, 503, "the last shield's own error");
    }
    let sent = a.hits.load(Ordering::SeqCst) + b.hits.load(Ordering::SeqCst);
    assert_eq!(
        sent,
        requests + floor,
        "every request once, and a second time only within the budget"
    );
    assert_eq!(upstream.metrics.retries.get(), floor as u64);
    assert_eq!(upstream.metrics.budget_exhausted.get(), 10);
}

/// Reads one request head (through the blank line); `None` if the peer closed first.
async fn read_head(stream: &mut tokio::net::TcpStream) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut buffer = vec![0u8; 8192];
    let mut read = 0;
    while !buffer[..read].windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buffer[read..]).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => read += n,
        }
    }
    Some(String::from_utf8_lossy(&buffer[..read]).into_owned())
}

/// An edge's shields (none yet) with `origin` as its fallback; `placed` in region us or not
/// (a shield's own parents, say).
fn edge_falling_back_to(origin: SocketAddr, placed: bool) -> ShieldUpstream {
    let config = ShieldsConfig {
        origin_fallback: true,
        ..shields_config(Vec::new())
    };
    let registry = Registry::new();
    let metrics = ShieldMetrics::register(&registry).unwrap();
    let in_use = prometheus::IntGauge::new("in_use", "in use").unwrap();
    let upstream = UpstreamConfig {
        origin: OriginUrl::parse(&format!("http://{origin}")).unwrap(),
        ..upstream_config()
    };
    let fallback = OriginUpstream::new(&upstream, in_use.clone());
    let shields = ShieldUpstream::new(&config, &upstream, fallback, metrics, &in_use).unwrap();
    if placed {
        shields
            .in_region(RegionId::new("us").unwrap(), &config)
            .unwrap()
    } else {
        shields
    }
}

/// `control.probe_spare_every` and `probe_origin_every` at their defaults.
const DEFAULT_CADENCE: rtt::ProbeCadence = rtt::ProbeCadence {
    spare_every: Duration::from_secs(10),
    origin_every: Duration::from_secs(60),
};

/// A cadence that probes every upstream without real traffic on every round.
const EVERY_ROUND: rtt::ProbeCadence = rtt::ProbeCadence {
    spare_every: Duration::ZERO,
    origin_every: Duration::ZERO,
};

#[tokio::test]
async fn a_shield_outside_the_ring_is_probed_as_often_as_the_cadence_says() {
    let ringed = TinyShield::start("ringed", 200, None).await;
    let spare = TinyShield::start("spare", 200, None).await;
    let upstream = shield_upstream(vec![ringed.spec("ringed")]);
    upstream
        .set_shields(&[ringed.spec("ringed")], &[spare.spec("spare")])
        .unwrap();
    upstream.probe(DEFAULT_CADENCE).await;
    let (ringed_hits, spare_hits) = (
        ringed.hits.load(Ordering::SeqCst),
        spare.hits.load(Ordering::SeqCst),
    );
    assert!(ringed_hits > 0 && spare_hits > 0, "both measured first");
    // At once again: the ring's shield waits out a quiet second, the spare its 10 s.
    upstream.probe(DEFAULT_CADENCE).await;
    assert_eq!(spare.hits.load(Ordering::SeqCst), spare_hits);
    // A cadence of zero probes the spare on every round; the ring's shield still waits.
    upstream.probe(EVERY_ROUND).await;
    assert!(spare.hits.load(Ordering::SeqCst) > spare_hits);
    assert_eq!(ringed.hits.load(Ordering::SeqCst), ringed_hits);
}

/// The origin's entry in what `upstream` reports, if any.
fn origin_entry(upstream: &ShieldUpstream, origin: SocketAddr) -> Option<UpstreamHealth> {
    upstream
        .health()
        .into_iter()
        .find(|h| h.id.contains(&origin.to_string()))
}

#[tokio::test]
async fn an_edge_in_a_region_measures_and_reports_its_origin_fallback() {
    let origin = TinyShield::start("origin", 200, None).await;

    // Not placed in a region (a shield's own parents, say): the fallback is not reported.
    let unplaced = edge_falling_back_to(origin.addr, false);
    unplaced.probe(DEFAULT_CADENCE).await;
    assert!(origin_entry(&unplaced, origin.addr).is_none());
    assert_eq!(origin.hits.load(Ordering::SeqCst), 0, "nothing probed");

    // An edge: reported without a round trip until measured, then probed once (two requests:
    // with no sample before it, the first may have opened a connection).
    let placed = edge_falling_back_to(origin.addr, true);
    let entry = origin_entry(&placed, origin.addr).expect("the origin is reported");
    assert!(entry.up && entry.rtt_ms.is_none());
    placed.probe(DEFAULT_CADENCE).await;
    assert_eq!(origin.hits.load(Ordering::SeqCst), 2);
    let rtt = origin_entry(&placed, origin.addr)
        .unwrap()
        .rtt_ms
        .expect("measured");
    assert!(rtt > 0.0 && rtt < 5_000.0, "{rtt}");
    // Just measured: the next round sends no probe, and a real miss (no shields: the
    // fallback) measures it too.
    placed.probe(DEFAULT_CADENCE).await;
    assert_eq!(origin.hits.load(Ordering::SeqCst), 2);
    // As often as the cadence's `origin_every` says.
    placed.probe(EVERY_ROUND).await;
    let probed = origin.hits.load(Ordering::SeqCst);
    assert!(probed > 2, "probed again");
    assert_eq!(get(&placed, "/k").await.unwrap().0, StatusCode::OK);
    assert_eq!(origin.hits.load(Ordering::SeqCst), probed + 1);
}

/// A keep-alive server on loopback: each new connection is taken up after `setup`, then each
/// request gets an empty 200 with the header lines `answer` gives for its head, after the delay
/// it gives. It counts connections and `OPTIONS` requests (probes).
struct KeepAlive {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    probes: Arc<AtomicUsize>,
}

impl KeepAlive {
    async fn start(setup: Duration, answer: fn(&str) -> (Duration, &'static str)) -> KeepAlive {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (connections, probes): (Arc<AtomicUsize>, Arc<AtomicUsize>) = Default::default();
        let (opened, probed) = (Arc::clone(&connections), Arc::clone(&probes));
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                opened.fetch_add(1, Ordering::SeqCst);
                let probed = Arc::clone(&probed);
                tokio::spawn(async move {
                    tokio::time::sleep(setup).await;
                    while let Some(head) = read_head(&mut stream).await {
                        if head.starts_with("OPTIONS") {
                            probed.fetch_add(1, Ordering::SeqCst);
                        }
                        let (delay, lines) = answer(&head);
                        tokio::time::sleep(delay).await;
                        let reply = format!("HTTP/1.1 200 OK\r\n{lines}content-length: 0\r\n\r\n");
                        if stream.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        KeepAlive {
            addr,
            connections,
            probes,
        }
    }
}

#[tokio::test]
async fn a_probe_round_trip_leaves_out_the_time_to_open_a_connection() {
    // An origin that takes SETUP to take up each new connection (as handshakes across the
    // world do) and then answers at once.
    const SETUP: Duration = Duration::from_millis(300);
    let server = KeepAlive::start(SETUP, |_| (Duration::ZERO, "")).await;
    let (origin, connections) = (server.addr, Arc::clone(&server.connections));

    let edge = edge_falling_back_to(origin, true);
    edge.probe(DEFAULT_CADENCE).await;
    let rtt = origin_entry(&edge, origin)
        .unwrap()
        .rtt_ms
        .expect("measured");
    assert!(
        rtt < SETUP.as_secs_f64() * 1000.0 / 2.0,
        "the round trip counts the connection's setup: {rtt} ms"
    );
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "one connection, reused"
    );
    assert_eq!(server.probes.load(Ordering::SeqCst), 2);

    // Over a warm connection, a round trip near the least so far needs no second request.
    let config = UpstreamConfig {
        origin: OriginUrl::parse(&format!("http://{origin}")).unwrap(),
        ..upstream_config()
    };
    let client = OriginUpstream::new(&config, prometheus::IntGauge::new("u", "u").unwrap());
    let window = RttWindow::default();
    client.probe_into(&window).await;
    assert_eq!(server.probes.load(Ordering::SeqCst), 4, "a new connection");
    client.probe_into(&window).await;
    assert_eq!(server.probes.load(Ordering::SeqCst), 5, "a warm one");
}

#[tokio::test]
async fn only_answers_from_a_shields_cache_measure_the_way_to_it() {
    // A shield that answers `/hit` from its cache at once, `/miss` after fetching for
    // FETCH, and the latency probe at once.
    const FETCH: Duration = Duration::from_millis(300);
    let server = KeepAlive::start(Duration::ZERO, |head| {
        if head.starts_with("GET /miss") {
            let miss = "cache-status: verge-shield; fwd=uri-miss; fwd-status=200; stored\r\n";
            (FETCH, miss)
        } else if head.starts_with("GET") {
            (
                Duration::ZERO,
                "cache-status: verge-shield; hit; ttl=60\r\n",
            )
        } else {
            (Duration::ZERO, "")
        }
    })
    .await;
    let probes = server.probes;
    let shield = TinyShield {
        addr: server.addr,
        hits: Arc::default(),
    };
    let upstream = shield_upstream(vec![shield.spec("s")]);
    let measured = |upstream: &ShieldUpstream| {
        upstream
            .health()
            .into_iter()
            .find(|h| h.id == "s")
            .expect("the shield is reported")
            .rtt_ms
    };

    // Misses take the shield's fetch: no round trip from them, and the shield is still probed.
    for _ in 0..3 {
        assert_eq!(get(&upstream, "/miss").await.unwrap().0, StatusCode::OK);
    }
    assert_eq!(
        measured(&upstream),
        None,
        "a miss measured the way to the shield"
    );
    upstream.probe(DEFAULT_CADENCE).await;
    assert_eq!(
        probes.load(Ordering::SeqCst),
        2,
        "the first probe: two requests"
    );
    let rtt = measured(&upstream).expect("probed");
    assert!(rtt < FETCH.as_secs_f64() * 1000.0 / 2.0, "{rtt} ms");

    // A hit measures it: the next round sends no probe.
    let upstream = shield_upstream(vec![shield.spec("s")]);
    assert_eq!(get(&upstream, "/hit").await.unwrap().0, StatusCode::OK);
    assert!(measured(&upstream).is_some(), "a hit measures the way");
    upstream.probe(DEFAULT_CADENCE).await;
    assert_eq!(
        probes.load(Ordering::SeqCst),
        2,
        "a hit measured it already"
    );
}
