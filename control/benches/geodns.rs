//! How many A queries a second does the GeoDNS responder answer on loopback, against a bare
//! UDP echo server on the same runtime measured in the same run?
//!
//! - `dns_serial/*`: one client, one query in flight (latency; answers/s = 1 / time);
//! - `dns_window16/*`: one client keeping 16 queries in flight (throughput, in elements/s).
//!
//! The responder is the real one (the bounded UDP loop and [`GeoDns`]) over a 3-region,
//! 24-edge plan; the client is bound in the eu block (127.2/16).
//!
//! Run: `cargo bench -p verge-control --bench geodns`.

mod fixture;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use prometheus::Registry;
use tokio::sync::watch;
use verge_control::geo::dns::{DnsListeners, GeoDns};
use verge_control::geo::metrics::GeoMetrics;
use verge_control::geo::steering::Steering;
use verge_control::geo::udp::UdpLimit;

const WINDOW: u64 = 16;

/// Starts the responder on the runtime; returns its address.
fn start_dns(runtime: &tokio::runtime::Runtime, shutdown: watch::Receiver<bool>) -> SocketAddr {
    let config = fixture::geo_config();
    let metrics = GeoMetrics::new(&Registry::new()).expect("metrics");
    let limit = UdpLimit {
        max_concurrent: config.dns_max_concurrent_queries,
        dropped: metrics.dns_dropped.clone(),
    };
    let steering = Arc::new(Steering::new(&config, &fixture::table(&[]), metrics));
    runtime.block_on(async {
        let listeners = DnsListeners::bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind DNS");
        let addr = listeners.addr;
        let handler = GeoDns::new(&config, steering, Some(addr.ip()));
        tokio::spawn(listeners.serve(handler, limit, shutdown));
        addr
    })
}

/// A UDP server that sends every datagram back: the floor under any UDP responder.
fn start_echo(runtime: &tokio::runtime::Runtime) -> SocketAddr {
    runtime.block_on(async {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind echo");
        let addr = socket.local_addr().expect("echo addr");
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
                let _ = socket.send_to(&buf[..n], peer).await;
            }
        });
        addr
    })
}

fn query() -> Vec<u8> {
    let mut message = Message::new();
    message
        .set_id(7)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .add_query(Query::query(
            Name::from_ascii("cdn.verge.test.").expect("name"),
            RecordType::A,
        ));
    message.to_vec().expect("encode")
}

fn client(server: SocketAddr) -> UdpSocket {
    let socket = UdpSocket::bind("127.2.0.9:0").expect("bind client in 127.2/16");
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    socket.connect(server).expect("connect");
    socket
}

/// Sends `iters` queries keeping `window` in flight; the time until the last answer.
fn run(socket: &UdpSocket, packet: &[u8], iters: u64, window: u64) -> Duration {
    let mut buf = [0u8; 2048];
    let start = Instant::now();
    let mut sent = 0;
    let mut received = 0;
    while sent < iters.min(window) {
        socket.send(packet).expect("send");
        sent += 1;
    }
    while received < iters {
        socket.recv(&mut buf).expect("an answer within 2s");
        received += 1;
        if sent < iters {
            socket.send(packet).expect("send");
            sent += 1;
        }
    }
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (stop, shutdown) = watch::channel(false);
    let dns = client(start_dns(&runtime, shutdown));
    let echo = client(start_echo(&runtime));
    let packet = query();
    // The responder answers (and is warm) before measuring.
    run(&dns, &packet, 100, 1);

    for (group, window) in [("dns_serial", 1), ("dns_window16", WINDOW)] {
        let mut g = c.benchmark_group(group);
        g.throughput(Throughput::Elements(1));
        g.bench_function("baseline_udp_echo", |b| {
            b.iter_custom(|iters| run(&echo, &packet, iters, window))
        });
        g.bench_function("geodns_a_query", |b| {
            b.iter_custom(|iters| run(&dns, &packet, iters, window))
        });
        g.finish();
    }
    let _ = stop.send(true);
}

criterion_group!(benches, bench);
criterion_main!(benches);
