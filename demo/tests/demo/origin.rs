//! The sample origin over a real socket: cache headers per kind of object, validators answered
//! with 304, a count of the requests that reached it, and the time each fetch takes.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use verge_demo::origin::{catalog, SampleOrigin, ServiceTime};

/// `GET path` with `headers`: status, response headers, body length.
async fn get(
    origin: &SampleOrigin,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, usize) {
    send(origin, "GET", path, headers).await
}

/// `METHOD path` with `headers`: status, response headers, body length.
async fn send(
    origin: &SampleOrigin,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, usize) {
    let stream = TcpStream::connect(origin.addr())
        .await
        .expect("the origin accepts");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "cdn.verge.test");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender
        .send_request(
            request
                .body(Empty::<Bytes>::new())
                .expect("a valid request"),
        )
        .await
        .expect("the origin answers");
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .expect("the body within 10 s")
        .expect("the whole body")
        .to_bytes();
    (parts.status, parts.headers, body.len())
}

#[tokio::test]
async fn objects_carry_their_cache_headers_and_validators_get_304() {
    let origin = SampleOrigin::start("127.0.0.1:0".parse().unwrap(), ServiceTime::INSTANT)
        .await
        .unwrap();
    let objects = catalog();
    let video = objects
        .iter()
        .find(|o| o.path.starts_with("/video/"))
        .unwrap();

    let (status, headers, len) = get(&origin, &video.path, &[]).await;
    assert_eq!((status, len), (StatusCode::OK, video.size));
    assert_eq!(headers["cache-control"], "max-age=600");
    assert!(headers["surrogate-key"]
        .to_str()
        .unwrap()
        .starts_with("video video-"));
    let etag = headers["etag"].to_str().unwrap().to_string();

    let (status, _, len) = get(&origin, &video.path, &[("if-none-match", &etag)]).await;
    assert_eq!((status, len), (StatusCode::NOT_MODIFIED, 0));
    let modified = headers["last-modified"].to_str().unwrap().to_string();
    let (status, _, _) = get(&origin, &video.path, &[("if-modified-since", &modified)]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);

    let (status, headers, _) = get(&origin, "/account/001.json", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["cache-control"], "private, no-store");
    assert_eq!(
        get(&origin, "/nothing-here", &[]).await.0,
        StatusCode::NOT_FOUND
    );

    // Health checks and the stats themselves are not counted.
    assert_eq!(get(&origin, "/healthz", &[]).await.0, StatusCode::OK);
    assert_eq!(origin.requests(), 5);
    let stats = get(&origin, "/_origin/stats", &[]).await;
    assert_eq!(stats.0, StatusCode::OK);
    assert_eq!(origin.requests(), 5);
    // Nor are the shields' latency probes: they are counted apart.
    let probe = send(&origin, "OPTIONS", "/", &[("max-forwards", "0")]).await;
    assert_eq!(probe.0, StatusCode::OK);
    assert_eq!(origin.requests(), 5);
    assert_eq!(origin.probes(), 1);
    let counted = tokio::time::timeout(Duration::from_secs(5), origin.stop())
        .await
        .expect("the origin stops");
    assert_eq!((counted.requests, counted.probes), (5, 1));

    // One started in its place counts on from there.
    let again = SampleOrigin::start_counting_from(
        "127.0.0.1:0".parse().unwrap(),
        ServiceTime::INSTANT,
        counted,
    )
    .await
    .unwrap();
    assert_eq!(get(&again, &video.path, &[]).await.0, StatusCode::OK);
    assert_eq!((again.requests(), again.probes()), (6, 1));
}

#[tokio::test]
async fn each_fetch_takes_the_service_time_and_nothing_else_waits() {
    let loopback = "127.0.0.1:0".parse().unwrap();
    let slow = SampleOrigin::start(loopback, "300ms".parse().unwrap())
        .await
        .unwrap();
    for (method, path) in [("GET", "/static/js/001.js"), ("HEAD", "/nothing-here")] {
        let started = std::time::Instant::now();
        let (status, _, _) = send(&slow, method, path, &[]).await;
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(300),
            "{method} {path} ({status}): {took:?}"
        );
    }
    assert_eq!(slow.requests(), 2);

    let very_slow = SampleOrigin::start(loopback, "10s".parse().unwrap())
        .await
        .unwrap();
    for (method, path) in [
        ("GET", "/healthz"),
        ("GET", "/_origin/stats"),
        ("OPTIONS", "/"),
    ] {
        let asked =
            tokio::time::timeout(Duration::from_secs(5), send(&very_slow, method, path, &[]));
        let (status, _, _) = asked.await.expect("answered without the service time");
        assert_eq!(status, StatusCode::OK, "{method} {path}");
    }
    assert_eq!(very_slow.requests(), 0);
}
