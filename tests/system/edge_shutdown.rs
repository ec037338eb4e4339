//! Graceful shutdown: requests in flight finish, new connections are refused.

// A panic is how a test fails: unwrapping is the point here.

use verge_testkit as support;

use std::time::Duration;

use support::scenario::{edge_serving, slow};
use support::{start_edge, wait_until, within, FakeOrigin, HttpClient, Reply, IO_TIMEOUT};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_request_completes_after_shutdown_and_new_connections_are_refused() {
    let reply = slow("finished", "max-age=60", 300);
    let (origin, mut edge) = edge_serving("/slow", reply, &[]).await;

    let url = edge.url("/slow");
    let in_flight = tokio::spawn(async move { HttpClient::http1().get(&url).await });
    wait_until("the request to reach the origin", IO_TIMEOUT, || async {
        origin.hits("/slow") == 1
    })
    .await;

    edge.begin_shutdown();
    // New connections are refused at once, while the request is still in flight: a client
    // (or an edge in front of a shield) is not left waiting in the kernel's queue of a node
    // that will never accept it.
    let data_addr = edge.data_addr;
    wait_until(
        "new connections to the data listener to be refused",
        Duration::from_secs(2),
        || async move { TcpStream::connect(data_addr).await.is_err() },
    )
    .await;
    assert!(
        !in_flight.is_finished(),
        "new connections were refused only once the drain had ended"
    );
    let response = within("the in-flight request", IO_TIMEOUT, in_flight)
        .await
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.text(), "finished");
    edge.stopped(Duration::from_secs(3)).await;
    let refused = TcpStream::connect(edge.data_addr).await;
    assert!(refused.is_err(), "a stopped edge still accepts connections");
    let admin = TcpStream::connect(edge.admin_addr).await;
    assert!(
        admin.is_err(),
        "a stopped edge still accepts admin connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_do_not_hold_up_shutdown() {
    let origin = FakeOrigin::start().await;
    origin.on("/a", Reply::ok("a").cache_control("max-age=60"));
    let mut edge = start_edge(origin.addr(), &["server.shutdown_grace = \"10s\""]).await;
    // Leaves a pooled keep-alive connection open to the edge.
    let client = HttpClient::http1();
    assert_eq!(client.get(&edge.url("/a")).await.status, 200);

    edge.begin_shutdown();
    // Well under the 10 s grace: idle connections are closed, not waited for.
    edge.stopped(Duration::from_secs(3)).await;
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_sent_on_an_idle_connection_as_shutdown_begins_is_answered_with_close() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = FakeOrigin::start().await;
    origin.on("/a", Reply::ok("a").cache_control("max-age=60"));
    let mut edge = start_edge(origin.addr(), &["server.shutdown_grace = \"10s\""]).await;
    let mut stream = TcpStream::connect(edge.data_addr).await.unwrap();
    let request = b"GET /a HTTP/1.1\r\nHost: a.test\r\n\r\n";
    stream.write_all(request).await.unwrap();
    let mut first = vec![0u8; 1024];
    let n = stream.read(&mut first).await.unwrap();
    assert!(first[..n].starts_with(b"HTTP/1.1 200"));

    edge.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The client did not know the node was stopping: its next request is answered, and the
    // connection closed after it, instead of the request being met by a closed connection.
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    within(
        "the answer and the close",
        IO_TIMEOUT,
        stream.read_to_end(&mut answer),
    )
    .await
    .unwrap();
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert!(answer.ends_with("\r\n\r\na"), "one whole answer: {answer}");
    edge.stopped(Duration::from_secs(3)).await;
}
