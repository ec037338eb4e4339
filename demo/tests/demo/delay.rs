//! The delay link over real sockets: it adds the configured one-way delay in each direction for
//! peers in another region and none for peers outside the regions, keeps bytes intact and in
//! order under backpressure, passes closes on, and bounds its connections.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::Instant;
use verge_demo::delay::{DelayLink, LinkSettings};
use verge_demo::regions::{default_regions, LatencyMatrix};

const MS: Duration = Duration::from_millis(1);
/// Slack allowed above the configured delay (the clock is paused, so only the link's own
/// rounding shows).
const TOLERANCE: Duration = Duration::from_millis(30);

/// An echo server that notes when each byte-sized ping arrives.
struct PingServer {
    addr: SocketAddr,
    arrivals: Arc<Mutex<Vec<Instant>>>,
}

/// A listener on `ip`, port 0.
async fn listen(ip: &str) -> (TcpListener, SocketAddr) {
    let ip: IpAddr = ip.parse().expect("an IP address");
    let listener = TcpListener::bind((ip, 0))
        .await
        .expect("loopback addresses bind");
    let addr = listener.local_addr().expect("a bound address");
    (listener, addr)
}

async fn ping_server(ip: &str) -> PingServer {
    let (listener, addr) = listen(ip).await;
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let noted = Arc::clone(&arrivals);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let noted = Arc::clone(&noted);
            tokio::spawn(async move {
                let _ = stream.set_nodelay(true);
                let mut byte = [0u8; 1];
                while let Ok(1) = stream.read(&mut byte).await {
                    noted.lock().expect("not poisoned").push(Instant::now());
                    if stream.write_all(&byte).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    PingServer { addr, arrivals }
}

/// A bulk echo server: copies everything back until the peer closes, then closes.
async fn echo_server(ip: &str) -> SocketAddr {
    let (listener, addr) = listen(ip).await;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// A connection to `to` from source address `from`.
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let from: IpAddr = from.parse().expect("an IP address");
    let socket = TcpSocket::new_v4().expect("a socket");
    socket
        .bind(SocketAddr::new(from, 0))
        .expect("loopback addresses bind");
    let stream = socket.connect(to).await.expect("the link accepts");
    stream.set_nodelay(true).expect("TCP_NODELAY");
    stream
}

/// A delay link listening on `ip` (port 0) in front of `to`, delaying as `settings` says.
async fn link_on(ip: &str, to: SocketAddr, settings: LinkSettings) -> DelayLink {
    let ip: IpAddr = ip.parse().expect("an IP address");
    DelayLink::start(SocketAddr::new(ip, 0), to, settings)
        .await
        .unwrap()
}

/// Everything `stream` sends until it ends, which must be within `limit` (`what` says why it
/// ends).
async fn read_to_end_within(
    stream: &mut (impl AsyncRead + Unpin),
    limit: Duration,
    what: &str,
) -> Vec<u8> {
    let mut received = Vec::new();
    tokio::time::timeout(limit, stream.read_to_end(&mut received))
        .await
        .expect(what)
        .unwrap();
    received
}

fn us_link() -> LinkSettings {
    LinkSettings::new("us", &default_regions(), &LatencyMatrix::default_demo())
}

/// Sends one ping and waits for its echo: (client → server, server → client) times.
async fn ping(stream: &mut TcpStream, server: &PingServer) -> (Duration, Duration) {
    let sent = Instant::now();
    stream.write_all(b"p").await.expect("ping sent");
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte).await.expect("echo received");
    let back = Instant::now();
    let arrived = *server
        .arrivals
        .lock()
        .expect("not poisoned")
        .last()
        .expect("the ping arrived");
    (arrived - sent, back - arrived)
}

fn assert_about(what: &str, got: Duration, want: Duration) {
    assert!(
        got >= want && got <= want + TOLERANCE,
        "{what}: took {got:?}, configured {want:?} (+{TOLERANCE:?})"
    );
}

// Paused time: the link's delays are tokio timers, so the measured times are exactly what the
// link adds, whatever else loads the machine.
#[tokio::test(start_paused = true)]
async fn a_peer_in_another_region_waits_the_one_way_delay_in_each_direction() {
    let server = ping_server("127.1.0.50").await;
    let link = link_on("127.1.0.50", server.addr, us_link()).await;
    for (client, one_way) in [("127.2.200.1", 40 * MS), ("127.3.200.1", 80 * MS)] {
        let mut stream = connect_from(client, link.addr()).await;
        for _ in 0..3 {
            let (there, back) = ping(&mut stream, &server).await;
            assert_about(&format!("{client} → us"), there, one_way);
            assert_about(&format!("us → {client}"), back, one_way);
        }
    }
    link.stop().await;
}

#[tokio::test(start_paused = true)]
async fn peers_in_the_same_region_wait_the_local_delay_and_outsiders_none() {
    let server = ping_server("127.1.0.51").await;
    let link = link_on("127.1.0.51", server.addr, us_link()).await;
    let mut local = connect_from("127.1.200.1", link.addr()).await;
    let (there, back) = ping(&mut local, &server).await;
    assert_about("local, there", there, MS);
    assert_about("local, back", back, MS);
    let mut outsider = connect_from("127.0.0.1", link.addr()).await;
    for _ in 0..3 {
        let (there, back) = ping(&mut outsider, &server).await;
        assert!(there + back < TOLERANCE, "{there:?} + {back:?}");
    }
}

#[tokio::test]
async fn bytes_arrive_intact_and_in_order_under_backpressure_and_jitter() {
    let echo = echo_server("127.1.0.52").await;
    let settings = LinkSettings {
        jitter: 3 * MS,
        max_buffered: 16 * 1024,
        ..us_link()
    };
    let link = link_on("127.1.0.52", echo, settings).await;
    let stream = connect_from("127.1.200.2", link.addr()).await;
    let (mut r, mut w) = stream.into_split();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..2 * 1024 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        // Uneven pieces, so chunks of every size cross the link.
        let mut rest = &sent[..];
        let mut n = 1;
        while !rest.is_empty() {
            let take = n.min(rest.len());
            w.write_all(&rest[..take]).await.unwrap();
            rest = &rest[take..];
            n = n * 7 % 65_521 + 1;
        }
        w.shutdown().await.unwrap();
    });
    let received = read_to_end_within(&mut r, Duration::from_secs(20), "the echo ends").await;
    writer.await.unwrap();
    assert_eq!(received.len(), data.len());
    assert!(received == data, "bytes changed or reordered");
}

#[tokio::test]
async fn a_side_that_closes_closes_the_other() {
    // The client half-closes: the echo server sees the end, closes, and the client sees that.
    let echo = echo_server("127.1.0.53").await;
    let link = link_on("127.1.0.53", echo, us_link()).await;
    let mut stream = connect_from("127.2.200.3", link.addr()).await;
    stream.write_all(b"bye").await.unwrap();
    stream.shutdown().await.unwrap();
    let back =
        read_to_end_within(&mut stream, Duration::from_secs(5), "the close comes back").await;
    assert_eq!(back, b"bye");

    // The server closes: the client sees the end.
    let (listener, server_addr) = listen("127.1.0.54").await;
    let link = link_on("127.1.0.54", server_addr, us_link()).await;
    let mut stream = connect_from("127.3.200.3", link.addr()).await;
    let (accepted, _) = listener.accept().await.unwrap();
    drop(accepted);
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("the close reaches the client");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");

    // The link stops: its relayed connections close.
    let mut stream = connect_from("127.3.200.4", link.addr()).await;
    let (_kept, _) = listener.accept().await.unwrap();
    link.stop().await;
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("stopping the link closes its connections");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
}

#[tokio::test]
async fn connections_beyond_the_bound_wait_for_a_slot() {
    let server = ping_server("127.1.0.55").await;
    let settings = LinkSettings {
        max_connections: 1,
        ..us_link()
    };
    let link = link_on("127.1.0.55", server.addr, settings).await;
    let mut first = connect_from("127.0.0.1", link.addr()).await;
    ping(&mut first, &server).await;
    let mut second = connect_from("127.0.0.1", link.addr()).await;
    second.write_all(b"p").await.unwrap();
    let mut byte = [0u8; 1];
    assert!(
        tokio::time::timeout(200 * MS, second.read_exact(&mut byte))
            .await
            .is_err(),
        "the second connection was relayed while the first held the only slot"
    );
    drop(first);
    tokio::time::timeout(Duration::from_secs(5), second.read_exact(&mut byte))
        .await
        .expect("relayed once the slot is free")
        .unwrap();
}

/// The median of `samples`.
fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

// The real clock: what a round trip through the link costs beyond the configured delay (timer
// rounding, relaying). Never less than configured; the median bound is loose enough for a
// loaded machine yet below what whole-millisecond timer rounding used to add.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_trip_takes_the_configured_delay_and_little_more() {
    const SLACK: Duration = Duration::from_millis(4);
    let server = ping_server("127.1.0.56").await;
    let link = link_on("127.1.0.56", server.addr, us_link()).await;
    for (client, one_way, rounds) in [("127.1.200.5", MS, 41), ("127.2.200.5", 40 * MS, 9)] {
        let mut stream = connect_from(client, link.addr()).await;
        let mut trips = Vec::new();
        for _ in 0..rounds {
            let sent = Instant::now();
            stream.write_all(b"p").await.unwrap();
            let mut byte = [0u8; 1];
            tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut byte))
                .await
                .expect("the echo comes back")
                .unwrap();
            let trip = sent.elapsed();
            assert!(
                trip >= 2 * one_way,
                "{client}: a round trip took {trip:?}, less than 2 × {one_way:?}"
            );
            trips.push(trip);
        }
        let median = median(trips);
        assert!(
            median <= 2 * one_way + SLACK,
            "{client}: median round trip {median:?} for 2 × {one_way:?}"
        );
    }
    link.stop().await;
}

#[tokio::test]
async fn a_retargeted_link_sends_new_connections_to_the_new_target_and_keeps_the_old_ones() {
    let old = echo_server("127.1.0.57").await;
    let (new_listener, new) = listen("127.1.0.57").await;
    let link = link_on("127.1.0.57", old, us_link()).await;
    let mut kept = connect_from("127.0.0.1", link.addr()).await;
    kept.write_all(b"a").await.unwrap();
    let mut byte = [0u8; 1];
    kept.read_exact(&mut byte).await.unwrap();
    link.retarget(new);
    assert_eq!(link.target(), new);
    let _fresh = connect_from("127.0.0.1", link.addr()).await;
    tokio::time::timeout(Duration::from_secs(5), new_listener.accept())
        .await
        .expect("the new target gets the new connection")
        .unwrap();
    kept.write_all(b"b").await.unwrap();
    kept.read_exact(&mut byte).await.unwrap();
    assert_eq!(
        &byte, b"b",
        "the old connection still reaches the old target"
    );
}

#[tokio::test]
async fn segments_on_both_sides_of_the_link_are_ethernet_sized() {
    // Loopback's 64 KiB segments stall multi-segment bodies for a delayed acknowledgement
    // now and then; the link uses a WAN-sized segment on both of its connections.
    let (listener, server) = listen("127.1.0.58").await;
    let link = link_on("127.1.0.59", server, us_link()).await;
    let mut client = connect_from("127.2.0.58", link.addr()).await;
    let (mut behind, _) = listener.accept().await.expect("the link connects");
    client.write_all(b"x").await.expect("sent");
    let mut byte = [0u8; 1];
    behind.read_exact(&mut byte).await.expect("relayed");
    let segment = |stream: &TcpStream| socket2::SockRef::from(stream).tcp_mss().expect("MSS");
    assert!(
        segment(&client) <= 1460,
        "the peer's side: {}",
        segment(&client)
    );
    assert!(
        segment(&behind) <= 1460,
        "the node's side: {}",
        segment(&behind)
    );
}

// The real clock: a link's bound on bytes held must not hold back part of an answer as large
// as the largest sample object for a second crossing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_as_large_as_the_largest_sample_crosses_in_one_delay() {
    const BODY: usize = 2 * 1024 * 1024;
    let one_way = 110 * MS;
    let (listener, server) = listen("127.3.0.60").await;
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        stream.write_all(&vec![7u8; BODY]).await.unwrap();
        stream.shutdown().await.unwrap();
    });
    let settings = LinkSettings::new("ap", &default_regions(), &LatencyMatrix::default_demo());
    let link = link_on("127.3.0.61", server, settings).await;
    let started = Instant::now();
    let mut client = connect_from("127.2.0.60", link.addr()).await;
    let received = read_to_end_within(&mut client, Duration::from_secs(5), "the answer ends").await;
    let took = started.elapsed();
    assert_eq!(received.len(), BODY);
    assert!(
        took < one_way * 8 / 5,
        "{BODY} bytes took {took:?} for a one-way delay of {one_way:?}"
    );
    link.stop().await;
}
