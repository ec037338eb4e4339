//! Uploads are the client's business: a malformed, abandoned or slow request body is the
//! client's error (400, 408, 413), never the upstream's, never holds an upstream connection
//! while it trickles in, and never takes a shield out of the ring.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use verge_testkit as support;

use support::cdn::{Topology, SHIELD_ID};
use support::tier::shield_up;
use support::{raw_exchange, start_edge, start_origin_and_cdn, FakeOrigin, HttpClient, Reply};

/// A POST whose chunked body starts well (`good` bytes) and then breaks.
fn broken_chunked_upload(good: usize) -> Vec<u8> {
    let mut request =
        b"POST /upload HTTP/1.1\r\nHost: up.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    request.extend_from_slice(format!("{good:x}\r\n").as_bytes());
    request.extend(std::iter::repeat_n(b'a', good));
    request.extend_from_slice(b"\r\nzz-not-a-size\r\n\r\n");
    request
}

/// A connection that has sent the head of a POST announcing `length` bytes and the first
/// `sent` of them.
async fn upload_begun(addr: std::net::SocketAddr, length: usize, sent: usize) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head =
        format!("POST /upload HTTP/1.1\r\nHost: up.test\r\nContent-Length: {length}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&vec![b'a'; sent]).await.unwrap();
    stream
}

/// Sends the head of a POST announcing `length` bytes and the first `sent` of them, then
/// closes the connection without the rest.
async fn abandoned_upload(addr: std::net::SocketAddr, length: usize, sent: usize) {
    let stream = upload_begun(addr, length, sent).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(stream);
}

/// Waits until the edge's `metric` (no labels) reads `value`.
async fn metric_reads(edge: &support::TestEdge, metric: &str, value: f64) {
    support::eventually(&format!("{metric} to read {value}"), || async {
        edge.metrics().await.value_or_zero(metric, &[]) == value
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_body_is_a_400_and_reaches_no_upstream() {
    let (origin, cdn) = start_origin_and_cdn(Topology::Shielded, &[]).await;
    origin.on("/upload", Reply::ok("stored"));
    let reply = raw_exchange(cdn.data_addr, &broken_chunked_upload(16)).await;
    assert_eq!(reply.status(), 400, "{}", reply.text());
    assert!(reply.text().contains("request body"), "{}", reply.text());
    assert_eq!(origin.total_hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_and_abandoned_uploads_leave_the_shield_in_the_ring() {
    // Bodies past 16 bytes stream, so the breakage happens while the shield is being sent to.
    let (origin, cdn) =
        start_origin_and_cdn(Topology::Shielded, &["server.request_body_buffer = 16"]).await;
    origin.on("/upload", Reply::ok("stored"));
    origin.on("/page", Reply::ok("page").cache_control("max-age=60"));
    for _ in 0..3 {
        let reply = raw_exchange(cdn.data_addr, &broken_chunked_upload(64)).await;
        assert_ne!(reply.status(), 502, "{}", reply.text());
        abandoned_upload(cdn.data_addr, 100_000, 1_000).await;
    }
    // Whatever the shield made of what reached it, nothing of it counts against the shield.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(shield_up(&cdn, SHIELD_ID).await, Some(1.0));
    let metrics = cdn.metrics().await;
    let failures: f64 = ["error", "generated_error", "timeout", "connect_error"]
        .iter()
        .map(|result| {
            metrics.value_or_zero(
                "verge_shield_requests_total",
                &[("shield", SHIELD_ID), ("result", result)],
            )
        })
        .sum();
    assert_eq!(failures, 0.0, "{}", metrics.text());
    assert!(
        metrics.value_or_zero(
            "verge_shield_requests_total",
            &[("shield", SHIELD_ID), ("result", "client_error")]
        ) >= 1.0,
        "{}",
        metrics.text()
    );
    let page = HttpClient::http1().get(&cdn.url("/page")).await;
    assert_eq!(page.status, 200);
    assert_eq!(origin.hits("/page"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_uploaders_hold_no_upstream_connection() {
    let origin = FakeOrigin::start().await;
    origin.on("/page", Reply::ok("page").cache_control("max-age=60"));
    origin.on("/upload", Reply::ok("stored"));
    let edge = start_edge(
        origin.addr(),
        &[
            "upstream.max_connections = 4",
            "server.request_body_timeout = \"5s\"",
        ],
    )
    .await;
    // Twenty uploads, five times the upstream's connections, each stalled after 10 bytes.
    let mut stalled = Vec::new();
    for _ in 0..20 {
        let mut stream = TcpStream::connect(edge.data_addr).await.unwrap();
        stream
            .write_all(b"POST /upload HTTP/1.1\r\nHost: up.test\r\nContent-Length: 100000\r\n\r\n0123456789")
            .await
            .unwrap();
        stalled.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let page = tokio::time::timeout(
        Duration::from_secs(2),
        HttpClient::http1().get(&edge.url("/page")),
    )
    .await
    .expect("a miss is answered while uploads stall");
    assert_eq!(page.status, 200, "{}", page.text());
    assert_eq!(origin.hits("/upload"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_gets_408_and_an_oversized_one_413() {
    let origin = FakeOrigin::start().await;
    origin.on("/upload", Reply::ok("stored"));
    let edge = start_edge(
        origin.addr(),
        &[
            "server.request_body_timeout = \"300ms\"",
            "server.max_request_body = \"1KiB\"",
        ],
    )
    .await;
    let mut stream = TcpStream::connect(edge.data_addr).await.unwrap();
    stream
        .write_all(
            b"POST /upload HTTP/1.1\r\nHost: up.test\r\nContent-Length: 100\r\n\r\n0123456789",
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("the stalled upload is answered")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    let big = format!(
        "POST /upload HTTP/1.1\r\nHost: up.test\r\nContent-Length: 2048\r\n\r\n{}",
        "a".repeat(2048)
    );
    let reply = raw_exchange(edge.data_addr, big.as_bytes()).await;
    assert_eq!(reply.status(), 413, "{}", reply.text());
    assert_eq!(origin.hits("/upload"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_buffered_bodies_hold_the_whole_budget_the_next_body_streams_and_is_served() {
    let (origin, edge) = support::start_origin_and_edge(&[
        "server.request_body_buffer = \"8KiB\"",
        "server.request_body_buffer_total = \"8KiB\"",
    ])
    .await;
    origin.on("/upload", Reply::ok("stored"));
    // A stalled upload holds 6,000 of the 8 KiB.
    let stalled = upload_begun(edge.data_addr, 8000, 6000).await;
    metric_reads(&edge, "verge_request_body_buffered_bytes", 6000.0).await;

    // 3,000 more do not fit: this body streams on from what it read, and is served whole.
    let mut streaming = upload_begun(edge.data_addr, 4000, 3000).await;
    metric_reads(&edge, "verge_request_body_over_budget_total", 1.0).await;
    streaming.write_all(&[b'b'; 1000]).await.unwrap();
    let mut head = [0u8; 12];
    streaming.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    assert_eq!(origin.last_request("/upload").unwrap().body.len(), 4000);

    drop(stalled);
    metric_reads(&edge, "verge_request_body_buffered_bytes", 0.0).await;
}
