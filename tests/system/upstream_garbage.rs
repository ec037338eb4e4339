//! An origin that answers garbage, hangs up part way through a body, or stalls: the client gets a
//! clean 502 or 504 (or, for a body already streaming, a connection cut before the promised
//! length), and nothing is stored — the next request reaches the origin again. Checked through an
//! edge in front of the origin, and through edge → `verge shield` → origin.

use verge_testkit as support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::{
    cacheable_head_with_body, start_edge, within, HttpClient, RawOrigin, TestResponse, IO_TIMEOUT,
};
use verge_cache::ManualClock;
use verge_config::ShieldConfig;
use verge_origin_shield::ShieldRole;
use verge_testkit::RunningNode;

/// Not HTTP at all.
const GARBAGE: &[u8] = b"hello there\r\n\r\n";

/// A whole, cacheable 200 with this body.
fn cacheable(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// After a failed fetch of `path`: the next request reaches the origin again (nothing was
/// stored) and gets the origin's new answer, which is stored — so the URL was cacheable all
/// along, and a third request is a hit.
async fn assert_nothing_stored(origin: &RawOrigin, url: &str) {
    let before = origin.requests().len();
    origin.push(cacheable("fresh"));
    let client = HttpClient::http1();

    let second = client.get(url).await;
    assert_eq!(second.status, 200, "{}", second.text());
    assert_eq!(
        second.text(),
        "fresh",
        "the failed response was not served from cache"
    );
    assert_eq!(
        origin.requests().len(),
        before + 1,
        "the request after the failure reached the origin: {}",
        second.cache_status()
    );
    second.assert_cache_status_lacks("hit", "");

    let third = client.get(url).await;
    assert_eq!(third.text(), "fresh");
    third.assert_cache_status_has("hit", "");
    assert_eq!(origin.requests().len(), before + 1);
}

fn assert_gateway_error(response: &TestResponse, status: u16, detail: &str) {
    assert_eq!(response.status, status, "{}", response.text());
    let cache_status = response.cache_status();
    assert!(
        cache_status.contains(&format!("detail={detail}")),
        "Cache-Status {cache_status:?} names {detail}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_instead_of_a_response_gets_502_and_is_not_stored() {
    let origin = RawOrigin::start().await;
    origin.push_then_close(GARBAGE);
    let edge = start_edge(origin.addr(), &[]).await;

    let response = HttpClient::http1().get(&edge.url("/garbage")).await;
    assert_gateway_error(&response, 502, "upstream-error");
    assert_eq!(origin.requests().len(), 1);

    assert_nothing_stored(&origin, &edge.url("/garbage")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cacheable_body_cut_short_gets_502_and_is_not_stored() {
    let origin = RawOrigin::start().await;
    origin.push_then_close(cacheable_head_with_body(1000, 100));
    let edge = start_edge(origin.addr(), &[]).await;

    let response = HttpClient::http1().get(&edge.url("/short")).await;
    assert_gateway_error(&response, 502, "upstream-error");

    assert_nothing_stored(&origin, &edge.url("/short")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_body_cut_short_reaches_the_client_as_a_broken_body_and_is_not_stored() {
    const PROMISED: usize = 1024 * 1024;
    const SENT: usize = 200 * 1024;
    let origin = RawOrigin::start().await;
    origin.push_then_close(cacheable_head_with_body(PROMISED, SENT));
    let edge = start_edge(origin.addr(), &["cache.max_object_bytes = \"64KiB\""]).await;

    // Too large to buffer: the head is already on its way when the origin hangs up, so the
    // only honest signal left is a body that ends before its Content-Length.
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = Request::get(edge.url("/large"))
        .body(Full::default())
        .unwrap();
    let (head, body) = within("GET /large", IO_TIMEOUT, async {
        let response = client.request(request).await.unwrap();
        let (head, body) = response.into_parts();
        (head, body.collect().await)
    })
    .await;
    assert_eq!(head.status, 200);
    let cache_status = head.headers.get("cache-status").unwrap().to_str().unwrap();
    assert!(cache_status.contains("detail=too-large"), "{cache_status}");
    assert_eq!(
        head.headers.get("content-length").unwrap(),
        &PROMISED.to_string()
    );
    match body {
        // Closed or reset before Content-Length bytes: either way, a body error.
        Err(_) => {}
        Ok(collected) => panic!(
            "the client read a complete {}-byte body of the promised {PROMISED}",
            collected.to_bytes().len()
        ),
    }

    assert_nothing_stored(&origin, &edge.url("/large")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_stalling_past_the_response_timeout_gets_504_and_is_not_stored() {
    let origin = RawOrigin::start().await;
    origin.push_then_stall(cacheable_head_with_body(1000, 100));
    let edge = start_edge(origin.addr(), &["upstream.response_timeout = \"300ms\""]).await;

    let started = Instant::now();
    let response = HttpClient::http1().get(&edge.url("/stalled")).await;
    let took = started.elapsed();
    assert_gateway_error(&response, 504, "upstream-timeout");
    assert!(
        took < Duration::from_secs(3),
        "the edge gave up after {took:?}, not after its 300ms response timeout"
    );

    assert_nothing_stored(&origin, &edge.url("/stalled")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunk_size_gets_502_and_is_not_stored() {
    let origin = RawOrigin::start().await;
    origin.push_then_close(
        &b"HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ntransfer-encoding: chunked\r\n\r\n\
           5\r\nhello\r\nzz\r\nworld\r\n0\r\n\r\n"[..],
    );
    let edge = start_edge(origin.addr(), &[]).await;

    let response = HttpClient::http1().get(&edge.url("/chunks")).await;
    assert_gateway_error(&response, 502, "upstream-error");

    assert_nothing_stored(&origin, &edge.url("/chunks")).await;
}

/// A running shield; stopped when dropped.
async fn start_shield(origin: SocketAddr) -> RunningNode {
    let toml = format!(
        "[shield]\nid = \"shield-test\"\n[server]\nlisten = \"127.0.0.1:0\"\n\
         admin_listen = \"127.0.0.1:0\"\n[origin]\nservers = [\"http://{origin}\"]\n\
         connect_timeout = \"1s\"\nresponse_timeout = \"5s\"\n"
    );
    let config = ShieldConfig::from_toml(&toml).unwrap_or_else(|e| panic!("{toml}\n{e}"));
    RunningNode::start_with_clock::<ShieldRole>(&config, Arc::new(ManualClock::new())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cut_short_behind_a_shield_gets_502_and_neither_tier_stores_it() {
    let origin = RawOrigin::start().await;
    origin.push_then_close(cacheable_head_with_body(1000, 100));
    let shield = start_shield(origin.addr()).await;
    let members = format!(
        "shields.members = [{{ id = \"shield-test\", url = \"http://{}\" }}]",
        shield.data_addr
    );
    // Without fallback every request goes through the shield, never to the origin directly.
    let edge = start_edge(
        origin.addr(),
        &[&members, "shields.origin_fallback = false"],
    )
    .await;

    let response = HttpClient::http1().get(&edge.url("/short")).await;
    assert_gateway_error(&response, 502, "upstream-error");
    let cache_status = response.cache_status();
    assert!(
        cache_status.starts_with("verge-shield; fwd=miss; detail=upstream-error")
            && cache_status.contains(", verge-edge; fwd=uri-miss; fwd-status=502"),
        "the shield failed the fill, the edge passed its 502 on: {cache_status}"
    );
    let heads = origin.requests();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(
        heads[0].to_ascii_lowercase().contains("shield-test"),
        "the origin was asked by the shield: {heads:?}"
    );

    assert_nothing_stored(&origin, &edge.url("/short")).await;
}

/// A kept-alive connection the origin closes as the next request goes out on it (an origin's
/// idle timeout, met at the wrong moment): the origin read the request and answered nothing.
/// A GET is sent once more, on another connection, and the client never sees the race.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_on_a_connection_the_origin_closes_unanswered_is_sent_once_more() {
    let origin = RawOrigin::start().await;
    origin.push(cacheable("first"));
    origin.push_then_close(Vec::new());
    origin.push(cacheable("second"));
    let edge = start_edge(origin.addr(), &[]).await;
    let client = HttpClient::http1();

    assert_eq!(client.get(&edge.url("/first")).await.text(), "first");
    let response = client.get(&edge.url("/second")).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.text(), "second");
    assert_eq!(origin.requests().len(), 3, "{:?}", origin.requests());
    assert_eq!(
        edge.metrics()
            .await
            .value_or_zero("verge_upstream_resends_total", &[]),
        1.0
    );

    // Once only: an origin that closes unanswered twice gets the client a 502.
    origin.push_then_close(Vec::new());
    origin.push_then_close(Vec::new());
    origin.push(cacheable("never asked"));
    let response = client.get(&edge.url("/third")).await;
    assert_gateway_error(&response, 502, "upstream-error");
    assert_eq!(origin.requests().len(), 5, "{:?}", origin.requests());
}
