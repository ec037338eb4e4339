//! The whole demo in-process: it starts, serves a cached object in every region through that
//! region's edge, purges it everywhere through control, and shuts down cleanly — bounded in time.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpSocket;
use tokio::time::{timeout, Instant};
use verge_config::wire::PurgeSpec;
use verge_control::client::AdminClient;
use verge_demo::origin::ServiceTime;
use verge_demo::DemoOptions;
use verge_testkit::control::purge_everywhere;

/// One answer: status, the edge's `Cache-Status` entry, body length, time taken.
#[derive(Debug)]
struct Answer {
    status: u16,
    edge_status: String,
    len: usize,
    took: Duration,
}

/// `GET url` with `Host: host` over a new connection from source address `from`.
async fn get(from: IpAddr, url: &str, host: &str) -> Answer {
    let uri: http::Uri = url.parse().expect("the state holds URLs");
    let authority = uri.authority().expect("an absolute URL").as_str();
    let to: SocketAddr = authority.parse().expect("edges are reached by IP:PORT");
    let started = Instant::now();
    let socket = TcpSocket::new_v4().expect("a socket");
    socket
        .bind(SocketAddr::new(from, 0))
        .expect("the region's client address binds");
    let stream = socket.connect(to).await.expect("the edge accepts");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(connection);
    let request = Request::get(uri.path())
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .expect("a valid request");
    let response = sender
        .send_request(request)
        .await
        .expect("the edge answers");
    let status = response.status().as_u16();
    let cache_status = response
        .headers()
        .get_all("cache-status")
        .iter()
        .map(|v| v.to_str().expect("ASCII Cache-Status").to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let edge_status = cache_status
        .split(',')
        .map(str::trim)
        .rfind(|entry| entry.starts_with("verge-edge"))
        .unwrap_or_default()
        .to_string();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("the whole body")
        .to_bytes();
    Answer {
        status,
        edge_status,
        len: body.len(),
        took: started.elapsed(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_caches_in_every_region_purges_everywhere_and_stops_cleanly() {
    let origin_time = Duration::from_millis(100);
    let demo = crate::small_demo_with(DemoOptions {
        origin_time: ServiceTime::new(origin_time, origin_time).unwrap(),
        ..DemoOptions::default()
    })
    .await;
    let state = demo.state.clone();
    assert_eq!(state.origin_time.as_ref().map(|t| t.p99_ms), Some(100.0));
    assert_eq!(state.nodes.len(), 5, "{:?}", state.nodes);
    let path = state.samples[0].clone();
    let size = verge_demo::origin::catalog()
        .into_iter()
        .find(|o| o.path == path)
        .unwrap()
        .size;

    let client = |region: &str| -> IpAddr {
        let info = state.regions.iter().find(|r| r.id == region).unwrap();
        info.client_addr.parse().unwrap()
    };
    let edge_url = |region: &str| {
        let edge = state.edges().find(|e| e.region == region).unwrap();
        format!("{}{path}", edge.http)
    };
    for (i, region) in state.regions.iter().enumerate() {
        let (from, url) = (client(&region.id), edge_url(&region.id));
        let first = get(from, &url, &state.hostname).await;
        assert_eq!((first.status, first.len), (200, size), "{first:?}");
        if i == 0 {
            // Nothing holds the object yet: the origin takes its time.
            assert!(first.took >= origin_time, "{first:?}");
        }
        assert!(first.edge_status.contains("fwd="), "{first:?}");
        let second = get(from, &url, &state.hostname).await;
        assert_eq!((second.status, second.len), (200, size), "{second:?}");
        assert!(second.edge_status.contains("hit"), "{second:?}");
        if region.id == "ap" {
            // ap's edge reaches a shield in us (80 ms) or eu (110 ms): a miss pays the round
            // trip, a hit only the local link.
            assert!(first.took >= Duration::from_millis(160), "{first:?}");
            assert!(second.took < Duration::from_millis(80), "{second:?}");
        }
    }

    let admin = AdminClient::new(&state.control.admin, &state.control.token).unwrap();
    let spec = PurgeSpec {
        urls: vec![format!("http://{}{path}", state.hostname)],
        ..PurgeSpec::default()
    };
    let status = purge_everywhere(&admin, &spec).await;
    assert_eq!(status.nodes.len(), state.nodes.len(), "{status:?}");
    // Control sits in the origin's region (us) behind its link, and nodes reach it from their
    // own addresses: the purge reaches ap's edge no sooner than ap is from us (80 ms).
    assert!(
        state.control.api.starts_with("http://127.1.0.250:"),
        "{}",
        state.control.api
    );
    let took = status.completed_after_ms.unwrap();
    assert!(took >= 80, "purge complete everywhere after {took} ms");
    assert!(
        status.nodes.iter().all(|n| n.state == "applied"),
        "{status:?}"
    );
    for region in &state.regions {
        let again = get(client(&region.id), &edge_url(&region.id), &state.hostname).await;
        assert_eq!(again.status, 200);
        assert!(
            again.edge_status.contains("fwd=uri-miss"),
            "{}: {again:?}",
            region.id
        );
    }

    timeout(Duration::from_secs(10), demo.shutdown())
        .await
        .expect("the demo stops within 10 s");
}
