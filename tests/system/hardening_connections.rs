//! Connection hygiene: cheap connections that send nothing, stop halfway or sit idle never
//! deny service to anyone else. Every connection must send its first request within the
//! header timeout of its accept and is closed after the idle timeout; at the connection limit
//! the connection idle the longest makes room for a new client; one address holds at most its
//! share; and the admin listener keeps answering `/healthz` through a flood of its own.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use verge_testkit as support;

use support::{start_edge, FakeOrigin, HttpClient, Reply};

/// Bound on what the timers under test take (they are set to a few hundred milliseconds).
const LIMIT: Duration = Duration::from_secs(5);

async fn origin() -> FakeOrigin {
    let origin = FakeOrigin::start().await;
    origin.on_prefix("/", Reply::ok("page").cache_control("max-age=60"));
    origin
}

/// Waits until the server closes `stream`; panics after [`LIMIT`].
async fn closed_by_server(stream: &mut TcpStream, what: &str) {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(LIMIT, stream.read(&mut buf)).await {
            Err(_) => panic!("{what}: still open after {LIMIT:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => {}
        }
    }
}

/// A connection to `addr` from the loopback address `from`.
async fn connect_from(from: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    socket.connect(addr).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_half_sent_and_idle_connections_are_closed() {
    let origin = origin().await;
    let edge = start_edge(
        origin.addr(),
        &[
            "server.header_read_timeout = \"300ms\"",
            "server.idle_timeout = \"300ms\"",
        ],
    )
    .await;
    let mut silent = TcpStream::connect(edge.data_addr).await.unwrap();
    let mut half_preface = TcpStream::connect(edge.data_addr).await.unwrap();
    half_preface.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    // A whole HTTP/2 preface and SETTINGS, then no stream.
    let mut idle_h2 = TcpStream::connect(edge.data_addr).await.unwrap();
    idle_h2
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    // One request, then nothing on the kept-alive connection.
    let mut keep_alive = TcpStream::connect(edge.data_addr).await.unwrap();
    keep_alive
        .write_all(b"GET /a HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    keep_alive.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");

    closed_by_server(&mut silent, "a silent connection").await;
    closed_by_server(&mut half_preface, "a half-sent HTTP/2 preface").await;
    closed_by_server(&mut idle_h2, "an HTTP/2 connection with no stream").await;
    closed_by_server(&mut keep_alive, "an idle keep-alive connection").await;
    let metrics = edge.metrics().await;
    let shed =
        |reason| metrics.value_or_zero("verge_connections_shed_total", &[("reason", reason)]);
    assert!(shed("request_timeout") >= 3.0, "{}", metrics.text());
    assert!(shed("idle_timeout") >= 1.0, "{}", metrics.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_limit_idle_connections_make_room_for_new_clients() {
    let origin = origin().await;
    // Timeouts far longer than the test: only eviction can make room.
    let edge = start_edge(origin.addr(), &["server.max_connections = 40"]).await;
    let mut flood = Vec::new();
    for i in 0..60 {
        let mut stream = connect_from([127, 0, 1, (i % 200) as u8 + 1], edge.data_addr).await;
        if i % 2 == 0 {
            let _ = stream.write_all(b"PRI * HTTP/2.0\r\n").await;
        }
        flood.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let answered = tokio::time::timeout(
        Duration::from_secs(1),
        HttpClient::http1().get(&edge.url("/new")),
    )
    .await
    .expect("a new client is answered within 1 s at the connection limit");
    assert_eq!(answered.status, 200);
    let metrics = edge.metrics().await;
    assert!(
        metrics.value_or_zero("verge_connections_shed_total", &[("reason", "evicted")]) >= 20.0,
        "{}",
        metrics.text()
    );
    assert!(metrics.value_or_zero("verge_connections_open", &[]) <= 41.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holds_at_most_its_share() {
    let origin = origin().await;
    let edge = start_edge(origin.addr(), &["server.max_connections_per_address = 5"]).await;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(connect_from([127, 0, 0, 1], edge.data_addr).await);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut sixth = connect_from([127, 0, 0, 1], edge.data_addr).await;
    closed_by_server(&mut sixth, "a sixth connection from one address").await;
    let mut other = connect_from([127, 0, 0, 2], edge.data_addr).await;
    other
        .write_all(b"GET /a HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(LIMIT, other.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let metrics = edge.metrics().await;
    assert_eq!(
        metrics.value_or_zero("verge_connections_shed_total", &[("reason", "per_address")]),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_through_a_flood_of_idle_admin_connections() {
    let origin = origin().await;
    let edge = start_edge(origin.addr(), &[]).await;
    let mut flood = Vec::new();
    for i in 0..200 {
        flood.push(connect_from([127, 0, 2, (i % 200) as u8 + 1], edge.admin_addr).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let health = tokio::time::timeout(
        Duration::from_secs(1),
        HttpClient::http1().get(&edge.admin_url("/healthz")),
    )
    .await
    .expect("/healthz answers within 1 s through 200 idle admin connections");
    assert_eq!(health.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_has_at_most_its_share_of_upstream_requests() {
    let origin = FakeOrigin::start().await;
    origin.on_prefix(
        "/slow/",
        Reply::ok("slow").delay(Duration::from_millis(500)),
    );
    let edge = start_edge(
        origin.addr(),
        &["server.max_upstream_requests_per_address = 2"],
    )
    .await;
    let client = HttpClient::http1();
    let gets = (0..3).map(|i| {
        let client = client.clone();
        let url = edge.url(&format!("/slow/{i}"));
        async move { client.get(&url).await }
    });
    let mut statuses: Vec<u16> = futures_join_all(gets).await;
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 429]);
    // Another address is not held back by the first one's share.
    let mut other = connect_from([127, 0, 0, 2], edge.data_addr).await;
    let url = edge.url("/slow/a");
    let (first, second) = tokio::join!(client.get(&url), async {
        other
            .write_all(b"GET /slow/b HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        other.read_to_end(&mut answer).await.unwrap();
        answer
    });
    assert_eq!(first.status, 200);
    assert!(second.starts_with(b"HTTP/1.1 200"));
}

/// Runs the GETs at once and returns their statuses.
async fn futures_join_all(
    gets: impl Iterator<
        Item = impl std::future::Future<Output = support::TestResponse> + Send + 'static,
    >,
) -> Vec<u16> {
    let tasks: Vec<_> = gets.map(tokio::spawn).collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap().status.as_u16());
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_does_not_hold_the_upstream_connection() {
    let origin = FakeOrigin::start().await;
    // Not storable and large: streamed from the origin as the client reads it.
    origin.on(
        "/big",
        Reply::ok(vec![b'x'; 16 << 20]).cache_control("no-store"),
    );
    origin.on("/page", Reply::ok("page").cache_control("max-age=60"));
    let edge = start_edge(
        origin.addr(),
        &[
            "upstream.max_connections = 1",
            "server.send_timeout = \"300ms\"",
        ],
    )
    .await;
    let mut stalled = TcpStream::connect(edge.data_addr).await.unwrap();
    stalled
        .write_all(b"GET /big HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    stalled.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    // The client reads no further; after the send timeout its upstream connection is free.
    let page = tokio::time::timeout(LIMIT, HttpClient::http1().get(&edge.url("/page")))
        .await
        .expect("the miss is answered");
    assert_eq!(page.status, 200, "{}", page.text());
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_with_a_closed_window_do_not_hold_the_upstream_connections() {
    use http_body_util::Empty;
    use hyper::client::conn::http2;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let origin = FakeOrigin::start().await;
    origin.on_prefix(
        "/big/",
        Reply::ok(vec![b'x'; 4 << 20]).cache_control("no-store"),
    );
    origin.on("/page", Reply::ok("page").cache_control("max-age=60"));
    let edge = start_edge(
        origin.addr(),
        &[
            "upstream.max_connections = 4",
            "server.send_timeout = \"300ms\"",
        ],
    )
    .await;
    // One HTTP/2 connection whose streams never open their windows: eight large answers
    // that the client never reads, twice the upstream's connections.
    let tcp = TcpStream::connect(edge.data_addr).await.unwrap();
    let (sender, connection) = http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(0)
        .handshake::<_, Empty<bytes::Bytes>>(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut heads = Vec::new();
    for i in 0..8 {
        let mut sender = sender.clone();
        let request = http::Request::get(format!("http://a.test/big/{i}"))
            .body(Empty::new())
            .unwrap();
        heads.push(tokio::spawn(
            async move { sender.send_request(request).await },
        ));
    }
    let page = tokio::time::timeout(LIMIT, HttpClient::http1().get(&edge.url("/page")))
        .await
        .expect("the miss is answered");
    assert_eq!(page.status, 200, "{}", page.text());
    drop(heads);
}
