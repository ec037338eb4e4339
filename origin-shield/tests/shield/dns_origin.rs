//! Origin servers named by host: a tiny authoritative DNS responder on `127.0.0.1:0` (its
//! answers changed by the test) sends the shield to fake origins listening on other 127.x
//! addresses. Real sockets throughout; TTLs of 1 s, so each test takes a second or two.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use http::header::HOST;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use prometheus::{IntGauge, Registry};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;
use verge_config::shield::ResolverConfig;
use verge_config::{OriginPoolConfig, OriginUrl, ShieldConfig};
use verge_origin_shield::pool::OriginPool;
use verge_testkit::upstream::get_through;
use verge_testkit::{eventually, Metrics};

const NAME: &str = "origin.verge.test";

/// What the responder says about [`NAME`].
#[derive(Debug, Clone)]
enum Zone {
    /// These A records with this TTL (no AAAA records).
    Answer(Vec<Ipv4Addr>, u32),
    ServFail,
    NxDomain,
    /// Reads queries and answers none.
    Silent,
}

/// An authoritative DNS server over UDP on `127.0.0.1:0`, answering as the test says.
struct DnsResponder {
    addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    queries: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl DnsResponder {
    async fn start(zone: Zone) -> DnsResponder {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let zone = Arc::new(Mutex::new(zone));
        let queries = Arc::new(AtomicUsize::new(0));
        let (z, q) = (zone.clone(), queries.clone());
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                q.fetch_add(1, Ordering::SeqCst);
                let zone = z.lock().unwrap().clone();
                if let Some(reply) = answer(&query, &zone) {
                    let _ = socket.send_to(&reply.to_vec().unwrap(), peer).await;
                }
            }
        });
        DnsResponder {
            addr,
            zone,
            queries,
            task,
        }
    }

    fn set(&self, zone: Zone) {
        *self.zone.lock().unwrap() = zone;
    }

    fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

impl Drop for DnsResponder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The reply to `query`, or `None` to stay silent.
fn answer(query: &Message, zone: &Zone) -> Option<Message> {
    let mut reply = Message::new();
    reply
        .set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_op_code(query.op_code())
        .set_authoritative(true)
        .set_recursion_desired(query.recursion_desired())
        .add_queries(query.queries().to_vec());
    let ours = query
        .queries()
        .iter()
        .all(|q| q.name().to_ascii().trim_end_matches('.') == NAME);
    match zone {
        _ if !ours => {
            reply.set_response_code(ResponseCode::NXDomain);
        }
        Zone::Answer(ips, ttl) => {
            for q in query.queries() {
                if q.query_type() == RecordType::A {
                    for ip in ips {
                        reply.add_answer(Record::from_rdata(
                            q.name().clone(),
                            *ttl,
                            RData::A(A(*ip)),
                        ));
                    }
                }
            }
        }
        Zone::ServFail => {
            reply.set_response_code(ResponseCode::ServFail);
        }
        Zone::NxDomain => {
            reply.set_response_code(ResponseCode::NXDomain);
        }
        Zone::Silent => return None,
    }
    Some(reply)
}

/// An HTTP/1.1 origin on one 127.x address, answering 200 with its own address as the body and
/// recording each request's `Host`.
struct FakeOrigin {
    ip: Ipv4Addr,
    hits: Arc<AtomicUsize>,
    hosts: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl FakeOrigin {
    async fn start(listener: TcpListener) -> FakeOrigin {
        let SocketAddr::V4(addr) = listener.local_addr().unwrap() else {
            panic!("an IPv4 origin");
        };
        let hits = Arc::new(AtomicUsize::new(0));
        let hosts = Arc::new(Mutex::new(Vec::new()));
        let (h, seen) = (hits.clone(), hosts.clone());
        let task = verge_testkit::http1::serve(listener, move |request| {
            h.fetch_add(1, Ordering::SeqCst);
            let host = request
                .headers()
                .get(HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            seen.lock().unwrap().push(host);
            let body = Full::new(Bytes::from(addr.ip().to_string()));
            async move { Response::new(body) }
        });
        FakeOrigin {
            ip: *addr.ip(),
            hits,
            hosts,
            task,
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn last_host(&self) -> Option<String> {
        self.hosts.lock().unwrap().last().cloned()
    }
}

impl Drop for FakeOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Two origins on 127.0.0.2 and 127.0.0.3, on the same port, as one name's old and new address.
async fn two_origins() -> (FakeOrigin, FakeOrigin, u16) {
    for _ in 0..20 {
        let first = TcpListener::bind("127.0.0.2:0").await.unwrap();
        let port = first.local_addr().unwrap().port();
        // The port is free on 127.0.0.2; on 127.0.0.3 it almost always is too.
        if let Ok(second) = TcpListener::bind(("127.0.0.3", port)).await {
            return (
                FakeOrigin::start(first).await,
                FakeOrigin::start(second).await,
                port,
            );
        }
    }
    panic!("no port free on both 127.0.0.2 and 127.0.0.3");
}

fn resolver(dns: &DnsResponder) -> ResolverConfig {
    ResolverConfig {
        nameservers: Some(vec![dns.addr]),
        min_ttl: Duration::from_secs(1),
        max_ttl: Duration::from_secs(300),
        negative_retry: Duration::from_millis(200),
        timeout: Duration::from_millis(500),
    }
}

fn pool_config(servers: &[OriginUrl]) -> OriginPoolConfig {
    verge_testkit::pool::pool_config(servers, Duration::from_secs(1))
}

fn named_url(port: u16) -> OriginUrl {
    OriginUrl::parse(&format!("http://{NAME}:{port}")).unwrap()
}

struct Harness {
    pool: Arc<OriginPool>,
    registry: Registry,
}

impl Harness {
    async fn start(servers: &[OriginUrl], resolver: &ResolverConfig) -> Harness {
        let registry = Registry::new();
        let in_use = IntGauge::new("in_use", "slots").unwrap();
        let pool = OriginPool::new(&pool_config(servers), resolver, &registry, &in_use).unwrap();
        pool.first_lookups().await;
        Harness {
            pool: Arc::new(pool),
            registry,
        }
    }

    /// Sends a GET; returns the status and the body (the address of the origin that answered).
    async fn get(&self) -> Result<(u16, String), verge_node::RequestError> {
        let (status, body) = get_through(&*self.pool, "origin.test", "/object", &[]).await?;
        Ok((status.as_u16(), body))
    }

    /// A metric's value by name and labels, 0 when absent.
    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        Metrics::of(&self.registry).value_or_zero(name, labels)
    }

    fn dns_results(&self, result: &str) -> f64 {
        self.metric(
            "verge_dns_resolutions_total",
            &[("host", NAME), ("result", result)],
        )
    }
}

#[tokio::test]
async fn a_shield_reaches_a_named_origin_at_the_address_dns_gives() {
    let (origin, _other, port) = two_origins().await;
    let dns = DnsResponder::start(Zone::Answer(vec![origin.ip], 60)).await;
    let text = format!(
        "[shield]\nid = \"s1\"\n[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
         [origin]\nservers = [\"http://{NAME}:{port}\"]\n\
         [resolver]\nnameservers = [\"{}\"]\ntimeout = \"500ms\"\n",
        dns.addr
    );
    let config = ShieldConfig::from_toml(&text).unwrap();
    let node = verge_testkit::bind::<verge_origin_shield::ShieldRole>(&config)
        .await
        .unwrap();
    let data = node.data_addr();
    let admin = node.admin_addr();
    let (stop, running) = verge_testkit::spawn_until_stopped(|stopped| node.run(stopped));

    let (status, body) = http_get(data, "/object", "cdn.example").await;
    assert_eq!(status, 200);
    assert_eq!(body, "127.0.0.2");
    assert_eq!(origin.hits(), 1);
    assert_eq!(
        origin.last_host().as_deref(),
        Some("cdn.example"),
        "the client's Host goes through, as with any origin"
    );
    let (_, metrics) = http_get(admin, "/metrics", "admin").await;
    assert!(
        metrics.contains(&format!(
            "verge_dns_resolutions_total{{host=\"{NAME}\",result=\"ok\"}} 1"
        )),
        "{metrics}"
    );
    assert!(metrics.contains(&format!("verge_dns_addresses{{host=\"{NAME}\"}} 1")));
    assert!(metrics.contains(&format!("verge_dns_ttl_seconds{{host=\"{NAME}\"}} 60")));

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .unwrap()
        .unwrap();
}

/// A GET over a fresh HTTP/1.1 connection; returns the status and the body.
async fn http_get(addr: SocketAddr, path: &str, host: &str) -> (u16, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::builder()
        .uri(path)
        .header(HOST, host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn requests_without_a_host_send_the_urls_host_and_port() {
    let (origin, _other, port) = two_origins().await;
    let dns = DnsResponder::start(Zone::Answer(vec![origin.ip], 60)).await;
    let h = Harness::start(&[named_url(port)], &resolver(&dns)).await;
    assert_eq!(h.get().await.unwrap(), (200, "127.0.0.2".to_string()));
    assert_eq!(origin.last_host(), Some(format!("{NAME}:{port}")));
}

#[tokio::test]
async fn traffic_moves_to_the_new_address_once_the_ttl_runs_out_and_not_before() {
    let (old, new, port) = two_origins().await;
    let dns = DnsResponder::start(Zone::Answer(vec![old.ip], 1)).await;
    // The first lookup answers after this, so the refresh comes at least 1 s (the TTL) later.
    let before_lookup = Instant::now();
    let h = Harness::start(&[named_url(port)], &resolver(&dns)).await;
    assert_eq!(dns.queries(), 1);
    dns.set(Zone::Answer(vec![new.ip], 1));

    // Whatever finished within the TTL went to the old address.
    let ttl_end = before_lookup + Duration::from_millis(1000);
    let mut early = 0;
    while Instant::now() + Duration::from_millis(200) < ttl_end {
        let (_, body) = h.get().await.unwrap();
        if Instant::now() < ttl_end {
            assert_eq!(body, "127.0.0.2", "moved before the TTL ran out");
            early += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(early > 0, "no request was sent within the TTL");
    assert_eq!(new.hits(), 0);

    eventually("traffic reaches the new address", || async {
        h.get().await.unwrap().1 == "127.0.0.3"
    })
    .await;
    assert!(before_lookup.elapsed() >= Duration::from_secs(1));
    assert!(dns.queries() >= 2);
    // Settled: every request now goes to the new address.
    let old_hits = old.hits();
    for _ in 0..3 {
        assert_eq!(h.get().await.unwrap().1, "127.0.0.3");
    }
    assert_eq!(old.hits(), old_hits);
}

/// Starts a pool on a name that resolves, then has its name server answer `failure`; once
/// `errors` lookups have failed (`what`), the pool still reaches the last good address.
/// `check` asserts the rest.
async fn last_good_addresses_outlive(
    failure: Zone,
    what: &str,
    errors: f64,
    check: impl FnOnce(&Harness),
) {
    let (origin, _other, port) = two_origins().await;
    let dns = DnsResponder::start(Zone::Answer(vec![origin.ip], 1)).await;
    let h = Harness::start(&[named_url(port)], &resolver(&dns)).await;
    dns.set(failure);
    eventually(what, || async { h.dns_results("error") >= errors }).await;
    assert_eq!(h.get().await.unwrap(), (200, "127.0.0.2".to_string()));
    check(&h);
}

#[tokio::test]
async fn a_name_server_answering_servfail_leaves_the_last_good_addresses_in_use() {
    let fails = "a refresh fails and is retried";
    last_good_addresses_outlive(Zone::ServFail, fails, 2.0, |h| {
        assert_eq!(
            h.metric("verge_dns_addresses", &[("host", NAME)]),
            1.0,
            "the last good answer is still in use"
        );
    })
    .await;
}

#[tokio::test]
async fn a_silent_name_server_leaves_the_last_good_addresses_in_use() {
    last_good_addresses_outlive(Zone::Silent, "a refresh times out", 1.0, |h| {
        assert_eq!(h.dns_results("ok"), 1.0);
    })
    .await;
}

#[tokio::test]
async fn nxdomain_at_start_answers_502_naming_the_host() {
    let (origin, _other, port) = two_origins().await;
    let dns = DnsResponder::start(Zone::NxDomain).await;
    let h = Harness::start(&[named_url(port)], &resolver(&dns)).await;
    let error = h.get().await.unwrap_err();
    assert_eq!(error.status().as_u16(), 502);
    let message = error.to_string();
    assert!(message.contains(NAME), "{message}");
    assert!(message.contains("NXDOMAIN"), "{message}");
    assert_eq!(origin.hits(), 0);
    let server = named_url(port).to_string();
    assert_eq!(
        h.metric("verge_origin_up", &[("server", &server)]),
        0.0,
        "not usable until it resolves"
    );

    // Once the name exists, the server is used.
    dns.set(Zone::Answer(vec![origin.ip], 1));
    eventually("the name resolves", || async { h.get().await.is_ok() }).await;
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn an_unresolved_server_is_passed_over_while_another_serves() {
    let (named, direct, port) = two_origins().await;
    let dns = DnsResponder::start(Zone::NxDomain).await;
    let direct_url = OriginUrl::parse(&format!("http://{}:{port}", direct.ip)).unwrap();
    let h = Harness::start(&[named_url(port), direct_url], &resolver(&dns)).await;
    for _ in 0..4 {
        assert_eq!(h.get().await.unwrap(), (200, "127.0.0.3".to_string()));
    }
    assert_eq!(named.hits(), 0);
}

#[tokio::test]
async fn ip_literal_servers_need_no_name_server() {
    let (origin, _other, port) = two_origins().await;
    let url = OriginUrl::parse(&format!("http://{}:{port}", origin.ip)).unwrap();
    let nowhere = ResolverConfig {
        nameservers: Some(vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9)]),
        ..resolver_defaults()
    };
    let h = Harness::start(&[url], &nowhere).await;
    assert_eq!(h.get().await.unwrap(), (200, "127.0.0.2".to_string()));
    assert!(h
        .registry
        .gather()
        .iter()
        .all(|f| !f.name().starts_with("verge_dns_") || f.get_metric().is_empty()));
}

fn resolver_defaults() -> ResolverConfig {
    verge_testkit::pool::resolver_config()
}
