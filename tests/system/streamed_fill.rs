//! A fill of a body longer than `cache.stream_above_bytes` answers as it reads: the client's
//! first bytes do not wait for the upstream's last, at either tier. Clients asking for the same
//! object meanwhile wait for the whole of it; it is stored once whole. A long body cut short
//! ends the client's answer short and is stored nowhere. Shorter bodies are read whole first:
//! cut short, they get a clean 502 (as `upstream_garbage` checks for the default bound).

use verge_testkit as support;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::{
    cacheable_head_with_body, patterned_body, start_cdn, within, HttpClient, RawOrigin, TestCdn,
    Topology, IO_TIMEOUT,
};
/// Over the default `cache.stream_above_bytes` (64 KiB), which the tests set all the same.
const STREAMS: &str = "cache.stream_above_bytes = \"64KiB\"";
const LONG: usize = 256 * 1024;
const FIRST: usize = LONG / 2;

/// The head of a GET for `url` with `headers`, its body still to be read.
async fn get_head_with(url: &str, headers: &[(&str, &str)]) -> http::Response<Incoming> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = Request::get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::default()).unwrap();
    within("the answer's head", IO_TIMEOUT, client.request(request))
        .await
        .unwrap()
}

async fn get_head(url: &str) -> http::Response<Incoming> {
    get_head_with(url, &[]).await
}

/// Reads `body` until at least `n` bytes have come.
async fn read_at_least(body: &mut Incoming, n: usize) -> Vec<u8> {
    let mut read = Vec::new();
    while read.len() < n {
        let frame = within("the body's first part", IO_TIMEOUT, body.frame())
            .await
            .expect("the body ended early")
            .expect("the body broke");
        if let Ok(data) = frame.into_data() {
            read.extend_from_slice(&data);
        }
    }
    read
}

/// Reads the rest of `body` after `read`: together, `whole`.
async fn assert_the_rest_completes(body: Incoming, mut read: Vec<u8>, whole: &[u8]) {
    let rest = within("the rest of the body", IO_TIMEOUT, body.collect())
        .await
        .expect("the body broke")
        .to_bytes();
    read.extend_from_slice(&rest);
    assert!(
        read == whole,
        "the client got {} bytes, not the object",
        read.len()
    );
}

/// Waits until `path` is a hit at the edge.
async fn until_stored(cdn: &TestCdn, path: &str) {
    let url = cdn.url(path);
    support::eventually("the object stored", || async {
        HttpClient::http1()
            .get(&url)
            .await
            .cache_status()
            .contains("hit")
    })
    .await;
}

/// `verge_fills_cut_short_total` of every tier, the edge's first.
async fn cut_short(cdn: &TestCdn) -> Vec<f64> {
    const NAME: &str = "verge_fills_cut_short_total";
    let mut counts = vec![cdn.metrics().await.value_or_zero(NAME, &[])];
    if let Some(shield) = &cdn.shield {
        counts.push(shield.metrics().await.value_or_zero(NAME, &[]));
    }
    counts
}

async fn a_long_body_reaches_the_client_while_the_upstream_still_sends_it(topology: Topology) {
    let origin = RawOrigin::start().await;
    let whole = patterned_body(LONG);
    let release = origin.push_held(cacheable_head_with_body(LONG, FIRST), &whole[FIRST..]);
    let cdn = start_cdn(origin.addr(), topology, &[STREAMS]).await;

    let response = get_head(&cdn.url("/long")).await;
    assert_eq!(response.status(), 200);
    let cache_status = response.headers()["cache-status"].to_str().unwrap();
    assert!(cache_status.contains("fwd="), "{cache_status}");
    let mut body = response.into_body();
    // The origin holds the rest back: these bytes came through every tier while it did.
    let read = read_at_least(&mut body, FIRST).await;

    // A client asking meanwhile waits for the fill, and gets the whole object from it.
    let follower = tokio::spawn({
        let url = cdn.url("/long");
        async move { HttpClient::http1().get(&url).await }
    });
    release.notify_one();
    assert_the_rest_completes(body, read, &whole).await;
    let follower = follower.await.unwrap();
    assert_eq!(follower.status, 200);
    assert!(
        follower.body == whole,
        "the follower got {} bytes",
        follower.body.len()
    );

    // The fill stores the object once it has read it all, which may be just after the
    // clients got their last byte: until then a request collapses onto it.
    until_stored(&cdn, "/long").await;
    let again = cdn.get("/long").await;
    again.assert_cache_status_has("hit", "");
    assert!(again.body == whole);
    assert_eq!(origin.requests().len(), 1, "one fetch for all three");
    assert!(cut_short(&cdn).await.iter().all(|n| *n == 0.0));
}

async fn a_client_leaving_part_way_leaves_the_fill_going(topology: Topology) {
    let origin = RawOrigin::start().await;
    let whole = patterned_body(LONG);
    let release = origin.push_held(cacheable_head_with_body(LONG, FIRST), &whole[FIRST..]);
    let cdn = start_cdn(origin.addr(), topology, &[STREAMS]).await;

    let mut body = get_head(&cdn.url("/left")).await.into_body();
    read_at_least(&mut body, FIRST).await;
    drop(body);
    release.notify_one();

    // The fill read on for the cache: the next client gets the stored object.
    until_stored(&cdn, "/left").await;
    assert!(cdn.get("/left").await.body == whole);
    assert_eq!(origin.requests().len(), 1);
}

async fn a_long_body_cut_short_ends_the_answer_short_and_is_stored_nowhere(topology: Topology) {
    let origin = RawOrigin::start().await;
    origin.push_then_close(cacheable_head_with_body(LONG, FIRST));
    let cdn = start_cdn(origin.addr(), topology, &[STREAMS]).await;

    let response = get_head(&cdn.url("/cut")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-length"], LONG.to_string());
    match within("the body", IO_TIMEOUT, response.into_body().collect()).await {
        Err(_) => {}
        Ok(body) => panic!(
            "a complete-looking {}-byte body of the promised {LONG}",
            body.to_bytes().len()
        ),
    }
    // Every tier saw its upstream fail part way (the edge's upstream is the shield, if any).
    assert_eq!(
        cut_short(&cdn).await,
        vec![1.0; cdn.shield.iter().count() + 1]
    );

    // Nothing was stored: the next request is fetched again, and that answer is kept.
    let whole = patterned_body(LONG);
    origin.push(cacheable_head_with_body(LONG, LONG));
    let second = cdn.get("/cut").await;
    assert_eq!(second.status, 200);
    assert!(second.body == whole, "{} bytes", second.body.len());
    until_stored(&cdn, "/cut").await;
    assert_eq!(origin.requests().len(), 2);
}

/// Over HTTP/2 as over HTTP/1.1: a long body cut short upstream never reaches the client as a
/// complete-looking answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http2_a_long_body_cut_short_ends_the_stream_short() {
    let origin = RawOrigin::start().await;
    origin.push_then_close(cacheable_head_with_body(LONG, FIRST));
    let cdn = start_cdn(origin.addr(), Topology::Direct, &[STREAMS]).await;

    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let request = Request::get(cdn.url("/cut-h2"))
        .body(Full::default())
        .unwrap();
    let response = within("the answer's head", IO_TIMEOUT, client.request(request))
        .await
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let body = within("the body", IO_TIMEOUT, response.into_body().collect()).await;
    assert!(
        body.is_err(),
        "a complete-looking {}-byte body of the promised {LONG}",
        body.map(|b| b.to_bytes().len()).unwrap_or_default()
    );
    assert_eq!(cut_short(&cdn).await, vec![1.0]);
}

/// A client that stops reading is not waited on past `server.send_timeout`: what the fill had
/// handed it is dropped and its answer ends short, while the fill, which never waited on it,
/// has stored the object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_answer_the_client_stops_reading_is_abandoned_after_the_send_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // More than the socket buffers hold (the client's is kept small), so the edge must wait
    // for the reader.
    const HUGE: usize = 16 << 20;
    let origin = RawOrigin::start().await;
    origin.push(cacheable_head_with_body(HUGE, HUGE));
    let tweaks = [
        STREAMS,
        "server.send_timeout = \"300ms\"",
        "cache.max_object_bytes = \"32MiB\"",
    ];
    let cdn = start_cdn(origin.addr(), Topology::Direct, &tweaks).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(cdn.data_addr).await.unwrap();
    // The host the follow-up requests name, so they ask for the same object.
    let request = format!("GET /unread HTTP/1.1\r\nHost: {}\r\n\r\n", cdn.data_addr);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");

    // Stops reading for longer than the send timeout, and meanwhile the fill completes.
    until_stored(&cdn, "/unread").await;
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    // Reads on until the connection closes or the whole body is in.
    let mut rest = 0;
    let mut buffer = vec![0u8; 1 << 16];
    while rest < HUGE {
        match within("the rest", IO_TIMEOUT, stream.read(&mut buffer)).await {
            Ok(0) | Err(_) => break,
            Ok(n) => rest += n,
        }
    }
    assert!(
        rest < HUGE,
        "the client got the whole body after stopping past the send timeout"
    );
    assert_eq!(origin.requests().len(), 1);
}

/// An object the edge compresses streams as it is once it is too large to compress on the
/// request (as an answer from the cache would be), and its compressed variant follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_compressible_body_streams_as_it_is_and_is_compressed_once_stored() {
    let origin = RawOrigin::start().await;
    let whole = patterned_body(LONG);
    let mut first = format!(
        "HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ncontent-type: text/html\r\n\
         content-length: {LONG}\r\n\r\n"
    )
    .into_bytes();
    first.extend_from_slice(&whole[..FIRST]);
    let release = origin.push_held(first, &whole[FIRST..]);
    let cdn = start_cdn(origin.addr(), Topology::Direct, &[STREAMS]).await;
    let gzip = [("accept-encoding", "gzip")];

    let response = get_head_with(&cdn.url("/page.html"), &gzip).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("content-encoding").is_none());
    let vary = response.headers()["vary"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(vary.contains("accept-encoding"), "{vary}");
    let mut body = response.into_body();
    let read = read_at_least(&mut body, FIRST).await;
    release.notify_one();
    assert_the_rest_completes(body, read, &whole).await;

    support::eventually("the compressed variant", || async {
        let answer = cdn.get_with("/page.html", &gzip).await;
        answer
            .headers
            .get("content-encoding")
            .is_some_and(|e| e == "gzip")
    })
    .await;
    assert_eq!(origin.requests().len(), 1);
}

async fn a_body_within_the_streaming_bound_cut_short_gets_a_clean_502(topology: Topology) {
    let origin = RawOrigin::start().await;
    origin.push_then_close(cacheable_head_with_body(LONG, FIRST));
    let bound = "cache.stream_above_bytes = \"1MiB\"";
    let cdn = start_cdn(origin.addr(), topology, &[bound]).await;

    let response = HttpClient::http1().get(&cdn.url("/whole-first")).await;
    assert_eq!(response.status, 502, "{}", response.cache_status());
    assert!(cut_short(&cdn).await.iter().all(|n| *n == 0.0));
}

support::in_both_topologies!(
    a_long_body_reaches_the_client_while_the_upstream_still_sends_it,
    a_client_leaving_part_way_leaves_the_fill_going,
    a_long_body_cut_short_ends_the_answer_short_and_is_stored_nowhere,
    a_body_within_the_streaming_bound_cut_short_gets_a_clean_502,
);
