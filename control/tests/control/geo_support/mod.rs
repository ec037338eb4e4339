//! Support for geo steering's integration tests: a real control (with `[geo]`) on loopback,
//! fake edges registered through its node API whose health is a tiny `/healthz` server per
//! region, and DNS and HTTP clients bound to source addresses in the region blocks of the
//! architecture page (127.1/16 us, 127.2/16 eu, 127.3/16 ap).
//!
//! The `[geo]` table itself is [`geo_toml`], which the unit tests and benches include too.
//!
//! Every network wait is bounded by [`IO_TIMEOUT`]; conditions are awaited with [`wait_until`].

// Each test file uses a different part of this module; and this is test code, where a failed
// setup step is a failed test.
#![allow(dead_code, clippy::unwrap_used)]

pub mod geo_toml;

use std::net::{IpAddr, SocketAddr};
use std::ops::Deref;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RecordType};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

use crate::support::{bind_control, TestControl};
pub use crate::support::{wait_until, within, HealthServer, IO_TIMEOUT};

/// The `[geo]` part every test shares: [`geo_toml::geo_table`] answering with TTL 5s for names
/// `cdn.verge.test` (2 answers) and `one.verge.test` (1 answer), after each region's fallback
/// order.
pub fn geo() -> String {
    let regions = "[regions.us]\nfallback = [\"eu\", \"ap\"]\n\
                   [regions.eu]\nfallback = [\"us\", \"ap\"]\n\
                   [regions.ap]\nfallback = [\"eu\", \"us\"]\n";
    let geo = geo_toml::geo_table(
        "ttl = \"5s\"\n\
         names.\"cdn.verge.test\".max_answers = 2\n\
         names.\"one.verge.test\".max_answers = 1\n",
    );
    format!("{regions}{geo}")
}

/// A control with `[geo]`, on ephemeral ports, stopped when dropped; the admin and node APIs
/// are those of [`TestControl`].
pub struct GeoControl {
    control: TestControl,
    pub dns_addr: SocketAddr,
    pub steering_addr: SocketAddr,
    _dir: TempDir,
}

/// Fast health checks: probes every 50 ms, one failure takes an edge down once its (never sent)
/// heartbeats are 300 ms stale.
const FAST_HEALTH: &str = "[health]\nheartbeat_interval = \"100ms\"\nheartbeat_timeout = \"300ms\"\n\
                           probe_interval = \"50ms\"\nprobe_timeout = \"200ms\"\nrise = 1\nfall = 1\n";

/// Starts control with `geo` (e.g. [`geo()`]) and [`FAST_HEALTH`].
pub async fn start_geo_control(geo: &str) -> GeoControl {
    let dir = TempDir::new().unwrap();
    let node = bind_control(dir.path(), &format!("{FAST_HEALTH}{geo}")).await;
    let (dns_addr, steering_addr) = (
        node.dns_addr.expect("DNS is configured"),
        node.steering_addr.expect("HTTP steering is configured"),
    );
    GeoControl {
        control: TestControl::spawn(node),
        dns_addr,
        steering_addr,
        _dir: dir,
    }
}

impl Deref for GeoControl {
    type Target = TestControl;

    fn deref(&self) -> &TestControl {
        &self.control
    }
}

impl GeoControl {
    /// Whether the routing table has edge `id` with this health.
    pub async fn edge_is(&self, id: &str, healthy: bool) -> bool {
        let table = self.routing().await;
        table["regions"].as_array().into_iter().flatten().any(|r| {
            r["edges"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| e["id"] == id && e["healthy"] == healthy)
        })
    }
}

/// The regions in the order of their blocks: region `REGIONS[n]` holds 127.{n+1}/16.
pub const REGIONS: [&str; 3] = ["us", "eu", "ap"];

/// Registers edges `{region}-1` to `{region}-{count}` (weights 1) at 127.N.0.1 to 127.N.0.count
/// in the region's block 127.N/16, each probed at `admin_url`.
pub async fn register_region(control: &TestControl, region: &str, count: u8, admin_url: &str) {
    let n = 1 + REGIONS.iter().position(|r| *r == region).unwrap();
    for e in 1..=count {
        let (id, data_ip) = (format!("{region}-{e}"), format!("127.{n}.0.{e}"));
        control
            .register_edge(&id, region, &data_ip, 1, admin_url)
            .await;
    }
}

/// One edge per region (us-1 at 127.1.0.1, eu-1 at 127.2.0.1, ap-1 at 127.3.0.1), all probed
/// at the health server returned, which the test must keep.
pub async fn one_edge_per_region(control: &TestControl) -> HealthServer {
    let health = HealthServer::start().await;
    for region in REGIONS {
        register_region(control, region, 1, &health.url).await;
    }
    health
}

/// An HTTP response read whole.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends raw `request` to `addr` from source address `from` (any when `None`) and reads the
/// response until the server closes the connection.
pub async fn http_request(from: Option<IpAddr>, addr: SocketAddr, request: &str) -> HttpReply {
    let socket = TcpSocket::new_v4().unwrap();
    if let Some(from) = from {
        socket.bind(SocketAddr::new(from, 0)).unwrap();
    }
    let mut stream = within("connect", socket.connect(addr)).await.unwrap();
    within("write", stream.write_all(request.as_bytes()))
        .await
        .unwrap();
    let mut raw = Vec::new();
    within("read", stream.read_to_end(&mut raw)).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    HttpReply {
        status,
        headers,
        body: body.to_string(),
    }
}

/// `GET path` with `Host: host`, from source address `from`.
pub async fn get(from: &str, addr: SocketAddr, host: &str, path: &str) -> HttpReply {
    http_request(
        Some(ip(from)),
        addr,
        &format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"),
    )
    .await
}

/// A DNS query for `name`/`qtype`, with an EDNS Client Subnet when `ecs` is given.
pub fn query(id: u16, name: &str, qtype: RecordType, ecs: Option<ClientSubnet>) -> Vec<u8> {
    let mut message = Message::new();
    message
        .set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(false)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    if let Some(ecs) = ecs {
        edns.options_mut().insert(EdnsOption::Subnet(ecs));
    }
    message.set_edns(edns);
    message.to_vec().unwrap()
}

/// A UDP DNS client bound to a source address.
pub struct DnsClient {
    socket: UdpSocket,
    server: SocketAddr,
    next_id: std::sync::atomic::AtomicU16,
}

impl DnsClient {
    pub async fn bind(from: &str, server: SocketAddr) -> DnsClient {
        let socket = UdpSocket::bind((from.parse::<IpAddr>().unwrap(), 0))
            .await
            .unwrap_or_else(|e| panic!("cannot bind {from}: {e}"));
        DnsClient {
            socket,
            server,
            next_id: std::sync::atomic::AtomicU16::new(1),
        }
    }

    /// Sends raw bytes (no answer awaited).
    pub async fn send_raw(&self, bytes: &[u8]) {
        self.socket.send_to(bytes, self.server).await.unwrap();
    }

    /// Receives one datagram within `wait`, if any.
    pub async fn recv_raw(&self, wait: Duration) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 4096];
        match tokio::time::timeout(wait, self.socket.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
            _ => None,
        }
    }

    /// Asks and returns the answer with the same id (stray replies are skipped).
    pub async fn ask(&self, name: &str, qtype: RecordType, ecs: Option<ClientSubnet>) -> Message {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.send_raw(&query(id, name, qtype, ecs)).await;
        within(&format!("DNS {name} {qtype}"), async {
            loop {
                let bytes = self.recv_raw(IO_TIMEOUT).await.expect("an answer");
                if let Ok(message) = Message::from_vec(&bytes) {
                    if message.id() == id {
                        return message;
                    }
                }
            }
        })
        .await
    }

    /// The A/AAAA addresses answered for `name`, in answer order.
    pub async fn addresses(&self, name: &str, qtype: RecordType) -> Vec<IpAddr> {
        let answer = self.ask(name, qtype, None).await;
        assert_eq!(answer.response_code(), ResponseCode::NoError, "{answer:?}");
        addresses(&answer)
    }
}

/// One query over TCP (length-prefixed), from `from`.
pub async fn ask_tcp(from: &str, server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    let mut stream: TcpStream = within("DNS TCP connect", socket.connect(server))
        .await
        .unwrap();
    let bytes = query(77, name, qtype, None);
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    within("DNS TCP write", stream.write_all(&framed))
        .await
        .unwrap();
    let mut len = [0u8; 2];
    within("DNS TCP length", stream.read_exact(&mut len))
        .await
        .unwrap();
    let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
    within("DNS TCP reply", stream.read_exact(&mut reply))
        .await
        .unwrap();
    Message::from_vec(&reply).unwrap()
}

pub fn addresses(message: &Message) -> Vec<IpAddr> {
    message
        .answers()
        .iter()
        .filter_map(|r| r.data().ip_addr())
        .collect()
}

/// The ECS option of a reply, if any.
pub fn reply_ecs(message: &Message) -> Option<ClientSubnet> {
    match message
        .extensions()
        .as_ref()?
        .option(hickory_proto::rr::rdata::opt::EdnsCode::Subnet)
    {
        Some(EdnsOption::Subnet(subnet)) => Some(*subnet),
        _ => None,
    }
}

pub fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A control with two edges per region (us-1/us-2 at 127.1.0.1/2, eu-… at 127.2.0.x, ap-… at
/// 127.3.0.x), weights 1, each region probed at its own health server.
pub struct ThreeRegions {
    pub control: GeoControl,
    pub health: Vec<(String, HealthServer)>,
}

pub async fn three_regions() -> ThreeRegions {
    let control = start_geo_control(&geo()).await;
    let mut health = Vec::new();
    for region in REGIONS {
        let server = HealthServer::start().await;
        register_region(&control, region, 2, &server.url).await;
        health.push((region.to_string(), server));
    }
    ThreeRegions { control, health }
}

impl ThreeRegions {
    /// Stops region `region`'s health server: its edges fail their probes.
    pub async fn kill(&mut self, region: &str) {
        let i = self.health.iter().position(|(r, _)| r == region).unwrap();
        let (_, server) = self.health.remove(i);
        server.stop().await;
    }
}
