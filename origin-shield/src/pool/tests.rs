//! The pool's pure cores (ejection back-off, probe verdicts) with given times, and
//! the pool itself against tiny origin servers on `127.0.0.1:0`.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;

use bytes::Bytes;
use http_body_util::Full;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use verge_config::OriginUrl;

use super::*;
use verge_testkit::{eventually, Metrics};

// ---- pure cores ----

fn policy() -> EjectionPolicy {
    EjectionPolicy {
        failures: 2,
        base: Duration::from_secs(1),
        max: Duration::from_secs(5),
    }
}

#[test]
fn ejection_period_doubles_up_to_the_cap() {
    let p = policy();
    let periods: Vec<u64> = (1..=5).map(|n| p.period(n).as_secs()).collect();
    assert_eq!(periods, [1, 2, 4, 5, 5]);
    assert_eq!(p.period(u32::MAX), Duration::from_secs(5));
}

#[test]
fn consecutive_failures_eject_and_a_failure_after_the_ejection_ejects_for_longer() {
    let p = policy();
    let t0 = Instant::now();
    let mut h = ServerHealth::default();
    assert_eq!(h.passive.failed(t0, &p), None);
    assert!(h.available(t0));
    assert_eq!(h.passive.failed(t0, &p), Some(Duration::from_secs(1)));
    assert!(!h.available(t0));
    // Failures of requests already in flight do not extend an ejection.
    assert_eq!(h.passive.failed(t0, &p), None);
    let t1 = t0 + Duration::from_secs(1);
    assert!(h.available(t1));
    assert!(h.claim(t1, &p), "one request probes the server");
    assert!(!h.claim(t1, &p), "and only one");
    assert_eq!(h.passive.failed(t1, &p), Some(Duration::from_secs(2)));
    assert!(!h.available(t1 + Duration::from_millis(1999)));
    assert!(h.available(t1 + Duration::from_secs(2)));
    assert!(h.passive.succeeded(t1 + Duration::from_secs(2)));
    let t2 = t1 + Duration::from_secs(3);
    assert_eq!(h.passive.failed(t2, &p), None);
    assert_eq!(h.passive.failed(t2, &p), Some(Duration::from_secs(1)));
}

#[test]
fn probes_mark_down_and_up_after_their_thresholds() {
    let mut h = ServerHealth::default();
    assert_eq!(h.probed(false, 2, 3), None);
    assert_eq!(h.probed(false, 2, 3), None);
    assert_eq!(h.probed(false, 2, 3), Some(false));
    assert!(!h.available(Instant::now()));
    assert_eq!(h.probed(true, 2, 3), None);
    assert_eq!(h.probed(false, 2, 3), None);
    assert_eq!(h.probed(true, 2, 3), None);
    assert_eq!(h.probed(true, 2, 3), Some(true));
    assert!(h.available(Instant::now()));
}

// ---- the pool against real servers ----

/// What a [`TinyOrigin`] answers, to every path.
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    Status(u16),
    /// A 200 after this long.
    Delay(Duration),
}

/// An HTTP/1.1 server on `127.0.0.1:0` answering as told, counting requests and probes apart.
struct TinyOrigin {
    url: OriginUrl,
    behaviour: Arc<Mutex<Behaviour>>,
    hits: Arc<AtomicUsize>,
    probes: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

const HEALTH_PATH: &str = "/health";

impl TinyOrigin {
    async fn start(behaviour: Behaviour) -> TinyOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let behaviour = Arc::new(Mutex::new(behaviour));
        let hits = Arc::new(AtomicUsize::new(0));
        let probes = Arc::new(AtomicUsize::new(0));
        let (b, h, p) = (behaviour.clone(), hits.clone(), probes.clone());
        let task = verge_testkit::http1::serve(listener, move |request| {
            let (b, h, p) = (b.clone(), h.clone(), p.clone());
            async move {
                if request.uri().path() == HEALTH_PATH {
                    p.fetch_add(1, Ordering::SeqCst);
                } else {
                    h.fetch_add(1, Ordering::SeqCst);
                }
                let behaviour = *b.lock().unwrap();
                let status = match behaviour {
                    Behaviour::Status(status) => status,
                    Behaviour::Delay(delay) => {
                        tokio::time::sleep(delay).await;
                        200
                    }
                };
                Response::builder()
                    .status(status)
                    .body(Full::new(Bytes::from_static(b"answer")))
                    .unwrap()
            }
        });
        TinyOrigin {
            url: url_of(addr),
            behaviour,
            hits,
            probes,
            task,
        }
    }

    fn set(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn probes(&self) -> usize {
        self.probes.load(Ordering::SeqCst)
    }
}

impl Drop for TinyOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn url_of(addr: SocketAddr) -> OriginUrl {
    OriginUrl::parse(&format!("http://{addr}")).unwrap()
}

/// A port nothing listens on, held while the test runs: connections to it are refused.
fn closed_port() -> (OriginUrl, verge_testkit::DeadAddr) {
    let dead = verge_testkit::DeadAddr::new();
    (url_of(dead.addr), dead)
}

fn config(servers: &[OriginUrl]) -> OriginPoolConfig {
    verge_testkit::pool::pool_config(servers, Duration::from_millis(50))
}

fn resolver() -> ResolverConfig {
    verge_testkit::pool::resolver_config()
}

struct Harness {
    pool: Arc<OriginPool>,
    registry: Registry,
}

impl Harness {
    fn new(config: &OriginPoolConfig) -> Harness {
        let registry = Registry::new();
        let in_use = IntGauge::new("in_use", "slots").unwrap();
        let pool = OriginPool::new(config, &resolver(), &registry, &in_use).unwrap();
        Harness {
            pool: Arc::new(pool),
            registry,
        }
    }

    /// A harness whose pool may not retry at all, floor included.
    fn without_retry_budget(config: &OriginPoolConfig) -> Harness {
        let registry = Registry::new();
        let in_use = IntGauge::new("in_use", "slots").unwrap();
        let mut pool = OriginPool::new(config, &resolver(), &registry, &in_use).unwrap();
        pool.budget = RetryBudget::new(0, 0, Instant::now());
        Harness {
            pool: Arc::new(pool),
            registry,
        }
    }

    async fn send(&self, method: Method) -> Result<Response<UpstreamResponseBody>, RequestError> {
        let request = Request::builder()
            .method(method)
            .uri("/object")
            .body(Either::Left(Empty::new()))
            .unwrap();
        // Only a GET or HEAD (here without a body) may be sent again elsewhere.
        let hop = Hop {
            key: verge_cache::CacheKey::from_parts("http", "origin.test", "/object"),
            replayable: request.method() == Method::GET || request.method() == Method::HEAD,
        };
        self.pool.send(request, &hop).await
    }

    /// Sends a GET and reads the whole answer; returns its status.
    async fn get(&self) -> Result<u16, RequestError> {
        let response = self.send(Method::GET).await?;
        let status = response.status().as_u16();
        response.into_body().collect().await.unwrap();
        Ok(status)
    }

    /// A metric's value by name and labels, 0 when absent.
    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        Metrics::of(&self.registry).value_or_zero(name, labels)
    }

    fn up(&self, server: &OriginUrl) -> f64 {
        self.metric("verge_origin_up", &[("server", &server.to_string())])
    }
}

#[tokio::test]
async fn round_robin_spreads_requests_over_available_servers() {
    let origins = [
        TinyOrigin::start(Behaviour::Status(200)).await,
        TinyOrigin::start(Behaviour::Status(200)).await,
        TinyOrigin::start(Behaviour::Status(200)).await,
    ];
    let urls: Vec<OriginUrl> = origins.iter().map(|o| o.url.clone()).collect();
    let h = Harness::new(&config(&urls));
    for _ in 0..9 {
        assert_eq!(h.get().await.unwrap(), 200);
    }
    let hits: Vec<usize> = origins.iter().map(TinyOrigin::hits).collect();
    assert_eq!(hits, [3, 3, 3]);

    // A server marked down by the health checks gets nothing; the others share its load.
    h.pool.servers[1].health().up = false;
    for _ in 0..8 {
        assert_eq!(h.get().await.unwrap(), 200);
    }
    let hits: Vec<usize> = origins.iter().map(TinyOrigin::hits).collect();
    assert_eq!(hits, [7, 3, 7]);
}

#[tokio::test]
async fn a_failing_server_is_ejected_and_comes_back_after_the_back_off() {
    let good = TinyOrigin::start(Behaviour::Status(200)).await;
    let bad = TinyOrigin::start(Behaviour::Status(503)).await;
    let mut cfg = config(&[good.url.clone(), bad.url.clone()]);
    cfg.retries = 0;
    cfg.eject_for = Duration::from_millis(500);
    let h = Harness::new(&cfg);

    // Alternating: the bad server fails twice (unhealthy_after) and is ejected.
    let statuses = [
        h.get().await.unwrap(),
        h.get().await.unwrap(),
        h.get().await.unwrap(),
        h.get().await.unwrap(),
    ];
    assert_eq!(
        statuses,
        [200, 503, 200, 503],
        "503 returned as is without retries"
    );
    assert_eq!(h.up(&bad.url), 0.0);
    let bad_hits = bad.hits();
    for _ in 0..6 {
        assert_eq!(h.get().await.unwrap(), 200);
    }
    assert_eq!(bad.hits(), bad_hits, "an ejected server gets no request");
    assert_eq!(
        h.metric(
            "verge_origin_requests_total",
            &[("server", &bad.url.to_string()), ("result", "error_status")]
        ),
        2.0
    );

    // Recovered: once the back-off runs out it takes requests again and stays in.
    bad.set(Behaviour::Status(200));
    eventually("the recovered server takes requests again", || async {
        h.get().await.unwrap();
        bad.hits() > bad_hits
    })
    .await;
    assert_eq!(h.up(&bad.url), 1.0);
    let before = bad.hits();
    for _ in 0..4 {
        assert_eq!(h.get().await.unwrap(), 200);
    }
    assert_eq!(bad.hits(), before + 2);
}

#[tokio::test]
async fn get_is_retried_on_another_server_after_a_connect_error() {
    let (dead, _held) = closed_port();
    let good = TinyOrigin::start(Behaviour::Status(200)).await;
    let h = Harness::new(&config(&[dead.clone(), good.url.clone()]));

    // The cursor starts at the first server: the dead one.
    assert_eq!(h.get().await.unwrap(), 200);
    assert_eq!(good.hits(), 1);
    assert_eq!(h.metric("verge_origin_retries_total", &[]), 1.0);
    assert_eq!(
        h.metric(
            "verge_origin_requests_total",
            &[("server", &dead.to_string()), ("result", "connect_error")]
        ),
        1.0
    );
}

#[tokio::test]
async fn an_answered_503_is_returned_and_not_retried_on_another_server() {
    let bad = TinyOrigin::start(Behaviour::Status(503)).await;
    let good = TinyOrigin::start(Behaviour::Status(200)).await;
    let h = Harness::new(&config(&[bad.url.clone(), good.url.clone()]));

    // The cursor starts at the first server: the one answering 503.
    assert_eq!(h.get().await.unwrap(), 503, "the origin's answer, as it is");
    assert_eq!(bad.hits(), 1);
    assert_eq!(good.hits(), 0, "an answer is never asked for again");
    assert_eq!(h.metric("verge_origin_retries_total", &[]), 0.0);
    assert_eq!(
        h.metric(
            "verge_origin_requests_total",
            &[("server", &bad.url.to_string()), ("result", "error_status")]
        ),
        1.0,
        "but it counts against the server's health"
    );
}

#[tokio::test]
async fn post_is_not_retried() {
    let (dead, _held) = closed_port();
    let good = TinyOrigin::start(Behaviour::Status(200)).await;
    let h = Harness::new(&config(&[dead.clone(), good.url.clone()]));

    let error = h.send(Method::POST).await.err().unwrap();
    assert!(
        matches!(error, RequestError::UpstreamConnect { .. }),
        "{error}"
    );
    assert_eq!(good.hits(), 0);
    assert_eq!(h.metric("verge_origin_retries_total", &[]), 0.0);
}

#[tokio::test]
async fn a_timeout_is_retried_and_the_last_error_is_returned() {
    let slow = TinyOrigin::start(Behaviour::Delay(Duration::from_secs(5))).await;
    let good = TinyOrigin::start(Behaviour::Status(200)).await;
    let mut cfg = config(&[slow.url.clone(), good.url.clone()]);
    cfg.upstream.response_timeout = Duration::from_millis(200);
    let h = Harness::new(&cfg);
    assert_eq!(h.get().await.unwrap(), 200);
    assert_eq!(
        h.metric(
            "verge_origin_requests_total",
            &[("server", &slow.url.to_string()), ("result", "timeout")]
        ),
        1.0
    );

    // Both slow: the cursor starts this one on `slow` again, and the last attempt's timeout
    // (on `good`) is the request's error.
    good.set(Behaviour::Delay(Duration::from_secs(5)));
    let error = h.get().await.err().unwrap();
    assert!(
        matches!(&error, RequestError::UpstreamTimeout { upstream, .. } if *upstream == good.url.to_string()),
        "{error}"
    );
}

#[tokio::test]
async fn no_retry_once_the_budget_is_spent() {
    let (dead, _held) = closed_port();
    let good = TinyOrigin::start(Behaviour::Status(200)).await;
    let h = Harness::without_retry_budget(&config(&[dead.clone(), good.url.clone()]));

    let error = h.get().await.err().unwrap();
    assert!(
        matches!(error, RequestError::UpstreamConnect { .. }),
        "{error}"
    );
    assert_eq!(good.hits(), 0);
    assert_eq!(h.metric("verge_origin_retries_total", &[]), 0.0);
    assert_eq!(
        h.metric("verge_origin_retry_budget_exhausted_total", &[]),
        1.0
    );
}

#[tokio::test]
async fn a_saturated_server_hands_the_request_to_another_without_failing() {
    let a = TinyOrigin::start(Behaviour::Status(200)).await;
    let b = TinyOrigin::start(Behaviour::Status(200)).await;
    let mut cfg = config(&[a.url.clone(), b.url.clone()]);
    cfg.upstream.max_connections = 1;
    cfg.upstream.connect_timeout = Duration::from_millis(100);
    cfg.retries = 0;
    let h = Harness::new(&cfg);

    // An unread response body keeps its connection slot: `a` is full.
    let held = h.send(Method::GET).await.unwrap();
    assert_eq!(a.hits(), 1);
    // Round-robin sends this one to `b`, and the next to `a`, which hands it on to `b`.
    assert_eq!(h.get().await.unwrap(), 200);
    assert_eq!(h.get().await.unwrap(), 200);
    assert_eq!((a.hits(), b.hits()), (1, 2));
    let a_label = a.url.to_string();
    assert_eq!(
        h.metric(
            "verge_origin_requests_total",
            &[("server", &a_label), ("result", "saturated")]
        ),
        1.0
    );
    assert_eq!(h.pool.servers[0].health().passive.failures(), 0);
    assert_eq!(h.metric("verge_origin_retries_total", &[]), 0.0);
    drop(held);
}

#[tokio::test]
async fn with_every_server_ejected_the_pool_still_tries_them() {
    let bad = TinyOrigin::start(Behaviour::Status(503)).await;
    let mut cfg = config(std::slice::from_ref(&bad.url));
    cfg.unhealthy_after = 1;
    cfg.eject_for = Duration::from_secs(60);
    let h = Harness::new(&cfg);
    assert_eq!(h.get().await.unwrap(), 503);
    assert_eq!(h.up(&bad.url), 0.0);
    assert_eq!(h.get().await.unwrap(), 503);
    assert_eq!(bad.hits(), 2, "panic mode: an ejected server beats none");
}

#[tokio::test]
async fn active_health_checks_mark_a_server_down_then_up() {
    let a = TinyOrigin::start(Behaviour::Status(200)).await;
    let b = TinyOrigin::start(Behaviour::Status(200)).await;
    let mut cfg = config(&[a.url.clone(), b.url.clone()]);
    cfg.health_path = Some(HEALTH_PATH.to_string());
    cfg.healthy_after = 2;
    cfg.unhealthy_after = 2;
    let h = Harness::new(&cfg);
    let checks = h.pool.start_health_checks();

    eventually("both servers are probed", || async {
        a.probes() >= 2 && b.probes() >= 2
    })
    .await;
    assert_eq!(h.up(&b.url), 1.0);

    b.set(Behaviour::Status(503));
    eventually("b is marked down", || async { h.up(&b.url) == 0.0 }).await;
    let b_hits = b.hits();
    for _ in 0..4 {
        assert_eq!(h.get().await.unwrap(), 200);
    }
    assert_eq!(b.hits(), b_hits, "a server down gets no request");
    assert_eq!(a.hits(), 4);

    b.set(Behaviour::Status(200));
    eventually("b is marked up", || async { h.up(&b.url) == 1.0 }).await;
    for _ in 0..4 {
        assert_eq!(h.get().await.unwrap(), 200);
    }
    assert_eq!(b.hits(), b_hits + 2);

    // Dropping the handle stops the probes.
    drop(checks);
    let probes = a.probes();
    // Four intervals without a probe: nothing to wait on but time.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(a.probes() <= probes + 1, "at most a probe already sent");
}

#[tokio::test]
async fn without_a_health_path_no_probe_is_sent() {
    let a = TinyOrigin::start(Behaviour::Status(200)).await;
    let h = Harness::new(&config(std::slice::from_ref(&a.url)));
    let checks = h.pool.start_health_checks();
    assert_eq!(h.get().await.unwrap(), 200);
    drop(checks);
    assert_eq!(a.probes(), 0);
}
