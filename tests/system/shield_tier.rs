//! The shield tier end to end: edges send misses to a real `verge shield` node, which fetches
//! from a pool of origin servers — one origin fetch per object for the whole CDN, the shield's
//! `Cache-Status` entry before the edge's, and the pool riding over a dead origin server.

use verge_testkit as support;

use std::net::SocketAddr;
use std::sync::Arc;

use support::scenario::{origin_answering, slow};
use support::{start_edge, FakeOrigin, HttpClient, Reply};
use verge_cache::ManualClock;
use verge_config::ShieldConfig;
use verge_origin_shield::ShieldRole;
use verge_testkit::RunningNode;

/// A running shield; stopped when dropped.
async fn start_shield(servers: &[SocketAddr], extra: &str) -> RunningNode {
    let list: Vec<String> = servers.iter().map(|s| format!("\"http://{s}\"")).collect();
    let toml = format!(
        "[shield]\nid = \"shield-test\"\n[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
         [origin]\nservers = [{}]\nconnect_timeout = \"1s\"\nresponse_timeout = \"5s\"\n{extra}",
        list.join(", ")
    );
    let config = ShieldConfig::from_toml(&toml).unwrap_or_else(|e| panic!("{toml}\n{e}"));
    RunningNode::start_with_clock::<ShieldRole>(&config, Arc::new(ManualClock::new())).await
}

fn shield_tweak(shield: &RunningNode) -> String {
    format!(
        "shields.members = [{{ id = \"shield-test\", url = \"http://{}\" }}]",
        shield.data_addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misses_of_many_edges_collapse_into_one_origin_fetch_at_the_shield() {
    let origin = FakeOrigin::start().await;
    let popular = slow("everyone wants this", "max-age=60", 200);
    origin.on("/popular", popular);
    let shield = start_shield(&[origin.addr()], "").await;
    let tweak = shield_tweak(&shield);
    let mut edges = Vec::new();
    for _ in 0..3 {
        edges.push(start_edge(origin.addr(), &[&tweak]).await);
    }
    let client = HttpClient::http1();
    let mut requests = Vec::new();
    for i in 0..30 {
        let client = client.clone();
        let url = edges[i % 3].url("/popular");
        requests.push(tokio::spawn(async move {
            client
                .request("GET", &url, &[("host", "www.example.test")], "")
                .await
        }));
    }
    for request in requests {
        let response = request.await.unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.text(), "everyone wants this");
    }
    assert_eq!(
        origin.hits("/popular"),
        1,
        "one origin fetch for three edges"
    );

    let via_shield = HttpClient::http1()
        .get_with(
            &start_edge(origin.addr(), &[&tweak]).await.url("/popular"),
            &[("host", "www.example.test")],
        )
        .await;
    let status = via_shield.cache_status();
    assert!(
        status.starts_with("verge-shield; hit") && status.contains(", verge-edge; fwd=uri-miss"),
        "the shield's entry comes first: {status}"
    );
    assert_eq!(origin.hits("/popular"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shield_pool_rides_over_a_dead_origin_server() {
    let reply = Reply::ok("from the live server").cache_control("max-age=60");
    let live = origin_answering("/", reply).await;
    let dead = verge_testkit::DeadAddr::new();
    let shield = start_shield(
        &[dead.addr, live.addr()],
        "retries = 1\nunhealthy_after = 1\n",
    )
    .await;
    let edge = start_edge(
        live.addr(),
        &[&shield_tweak(&shield), "shields.origin_fallback = false"],
    )
    .await;
    let client = HttpClient::http1();
    for n in 0..6 {
        let response = client.get(&edge.url(&format!("/object/{n}"))).await;
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(response.text(), "from the live server");
    }
    assert_eq!(
        live.total_hits(),
        6,
        "every object came from the live server, once"
    );

    let metrics = support::metrics::Metrics::parse(
        &HttpClient::http1()
            .get(&format!("http://{}/metrics", shield.admin_addr))
            .await
            .text(),
    );
    let dead_label = format!("http://{}", dead.addr);
    assert_eq!(
        metrics.value("verge_origin_up", &[("server", &dead_label)]),
        Some(0.0),
        "the dead server is ejected after unhealthy_after = 1 failure"
    );
    assert!(
        metrics.value_or_zero(
            "verge_origin_requests_total",
            &[("server", &dead_label), ("result", "connect_error")]
        ) >= 1.0,
        "{}",
        metrics.text()
    );
    let live_label = format!("http://{}", live.addr());
    assert_eq!(
        metrics.value(
            "verge_origin_duration_seconds_count",
            &[("server", &live_label)]
        ),
        Some(6.0),
        "one timed request per object at the live server"
    );
}
