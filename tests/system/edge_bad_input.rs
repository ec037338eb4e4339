//! Bad client input gets a clear 4xx, and the connection is closed after it; methods the edge
//! does not serve are refused without reaching the origin.

// A panic is how a test fails: unwrapping is the point here.

use verge_testkit as support;

use support::{raw_exchange, start_origin_and_edge, HttpClient, RawReply, Reply};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_line_gets_400_and_the_connection_closed() {
    let (origin, edge) = start_origin_and_edge(&[]).await;

    // `raw_exchange` reads until the server closes the connection, and fails if it does not.
    let reply = raw_exchange(edge.data_addr, b"THIS IS NOT HTTP\x01\r\n\r\n").await;
    assert_eq!(reply.status(), 400, "{}", reply.text());
    assert_eq!(origin.total_hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_head_over_max_header_bytes_gets_431() {
    let (origin, edge) = start_origin_and_edge(&["server.max_header_bytes = \"16KiB\""]).await;
    origin.on("/", Reply::ok("root"));

    let big = "a".repeat(20_000);
    let request = format!("GET / HTTP/1.1\r\nHost: example.test\r\nX-Big: {big}\r\n\r\n");
    let reply = raw_exchange(edge.data_addr, request.as_bytes()).await;
    assert_eq!(reply.status(), 431, "{}", reply.text());
    assert_eq!(origin.total_hits(), 0);

    // A head under the bound is served.
    let fine = "a".repeat(8_000);
    let request = format!(
        "GET / HTTP/1.1\r\nHost: example.test\r\nX-Fine: {fine}\r\nConnection: close\r\n\r\n"
    );
    let reply = raw_exchange(edge.data_addr, request.as_bytes()).await;
    assert_eq!(reply.status(), 200, "{}", reply.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http11_request_without_host_gets_400_and_the_connection_closed() {
    let (origin, edge) = start_origin_and_edge(&[]).await;
    origin.on("/", Reply::ok("root"));

    let reply = raw_exchange(edge.data_addr, b"GET / HTTP/1.1\r\n\r\n").await;
    assert_eq!(reply.status(), 400, "{}", reply.text());
    let text = reply.text().to_ascii_lowercase();
    assert!(
        text.contains("host"),
        "the answer says what is wrong: {text}"
    );
    assert_eq!(origin.total_hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_is_refused_with_405() {
    let (origin, edge) = start_origin_and_edge(&[]).await;
    origin.on("/a", Reply::ok("a").cache_control("max-age=60"));
    let client = HttpClient::http1();

    let response = client.request("PURGE", &edge.url("/a"), &[], "").await;
    assert_eq!(response.status, 405, "{}", response.text());
    let allow = response.header("allow").unwrap_or_default();
    assert!(
        allow.contains("GET"),
        "405 names the allowed methods: {allow:?}"
    );
    assert_eq!(origin.total_hits(), 0, "PURGE must not reach the origin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_is_refused_with_405() {
    let (origin, edge) = start_origin_and_edge(&[]).await;

    let reply = raw_exchange(
        edge.data_addr,
        b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n",
    )
    .await;
    assert_eq!(reply.status(), 405, "{}", reply.text());
    assert_eq!(origin.total_hits(), 0, "CONNECT must not reach the origin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ambiguous_body_length_is_refused_and_nothing_is_smuggled_after_it() {
    let (origin, edge) = start_origin_and_edge(&[]).await;
    origin.on("/up", Reply::ok("up"));
    origin.on("/before", Reply::ok("before"));
    origin.on("/smuggled", Reply::ok("smuggled"));

    // Read by Content-Length, the body would end after "5\r\nh" and "GET /smuggled" would follow
    // as a second request on this connection; read as chunked, the origin would be sent a body
    // a front proxy may have framed differently.
    for (first, second) in [
        ("Content-Length: 4", "Transfer-Encoding: chunked"),
        ("Transfer-Encoding: chunked", "Content-Length: 4"),
    ] {
        let request = format!(
            "POST /up HTTP/1.1\r\nHost: a.test\r\n{first}\r\n{second}\r\n\r\n\
             5\r\nhello\r\n0\r\n\r\n\
             GET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n"
        );
        let reply = raw_exchange(edge.data_addr, request.as_bytes()).await;
        assert_refused_as_ambiguous(&reply);
        assert!(
            reply.text().contains("detail=bad-request"),
            "{}",
            reply.text()
        );
        assert!(!reply.text().contains("smuggled"));
    }
    assert_eq!(
        origin.hits("/up"),
        0,
        "the ambiguous request reached the origin"
    );
    assert_eq!(origin.hits("/smuggled"), 0, "a second request was smuggled");

    // Pipelined after requests with a sized and a chunked body, the ambiguous one is still the
    // one refused: the requests before it are answered.
    let reply = raw_exchange(
        edge.data_addr,
        b"POST /before HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\n\r\nabc\
          POST /before HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n\
          3\r\nabc\r\n0\r\n\r\n\
          POST /up HTTP/1.1\r\nHost: a.test\r\nContent-Length: 4\r\n\
          Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    let text = reply.text();
    assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text}");
    assert_eq!(text.matches("HTTP/1.1 400").count(), 1, "{text}");
    assert_eq!(origin.hits("/before"), 2);
    assert_eq!(origin.hits("/up"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_refuses_an_ambiguous_body_length_too() {
    let (_origin, edge) = start_origin_and_edge(&[]).await;
    let reply = raw_exchange(
        edge.admin_addr,
        b"POST /v1/purge HTTP/1.1\r\nHost: admin\r\nContent-Length: 4\r\n\
          Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    )
    .await;
    assert_refused_as_ambiguous(&reply);
}

/// A 400 that names both length fields.
fn assert_refused_as_ambiguous(reply: &RawReply) {
    assert_eq!(reply.status(), 400, "{}", reply.text());
    let text = reply.text();
    assert!(
        text.contains("both Content-Length and Transfer-Encoding"),
        "{text}"
    );
}
