//! The control plane end to end: a real control service, real shield nodes and real edges, a
//! fake origin, all on loopback. Purges travel control → shields → edges over the push streams;
//! health changes travel as routing tables.

use verge_testkit as support;

use std::time::Duration;

use support::control::{
    node_control_tweaks, purge_everywhere, start_control, start_shield_node, Relay, TestControl,
};
use support::scenario::origin_answering;
use support::{start_edge, wait_until, FakeOrigin, HttpClient, Reply, RunningNode, TestEdge};
use verge_config::wire::PurgeSpec;

const SITE: &str = "www.example.test";

async fn edge_with_control(origin: &FakeOrigin, id: &str, control_url: &str) -> TestEdge {
    let mut tweaks = node_control_tweaks(control_url);
    tweaks.push(format!("edge.id = {id:?}"));
    let tweaks: Vec<&str> = tweaks.iter().map(String::as_str).collect();
    start_edge(origin.addr(), &tweaks).await
}

async fn get(edge: &TestEdge, path: &str) -> (u16, String) {
    let response = HttpClient::http1()
        .get_with(&edge.url(path), &[("host", SITE)])
        .await;
    (response.status.as_u16(), response.text())
}

fn url(path: &str) -> String {
    format!("http://{SITE}{path}")
}

async fn purge_and_wait(control: &TestControl, spec: PurgeSpec) -> verge_config::wire::PurgeStatus {
    purge_everywhere(&control.admin, &spec).await
}

fn purge_url(path: &str) -> PurgeSpec {
    PurgeSpec {
        urls: vec![url(path)],
        ..PurgeSpec::default()
    }
}

/// A control service on loopback with its data in a fresh directory (kept while it lives).
async fn fresh_control() -> (tempfile::TempDir, TestControl) {
    let dir = tempfile::TempDir::new().unwrap();
    let control = start_control(dir.path(), "127.0.0.1:0".parse().unwrap(), &[]).await;
    (dir, control)
}

/// An origin answering `path` with `body`, cacheable for an hour.
async fn origin_serving(path: &str, body: &'static str) -> FakeOrigin {
    let origin = FakeOrigin::start().await;
    origin.on(path, Reply::ok(body).cache_control("max-age=3600"));
    origin
}

/// Shields `s1` and `s2` in front of `origin`, registered with `control`.
async fn start_s1_and_s2(origin: &FakeOrigin, control: &TestControl) -> (RunningNode, RunningNode) {
    let control_url = control.url();
    (
        start_shield_node(origin, "s1", &control_url).await,
        start_shield_node(origin, "s2", &control_url).await,
    )
}

/// Waits until an edge's ring holds `n` shields (from control's routing table).
async fn wait_ring(edge: &TestEdge, n: f64) {
    wait_until(
        "the edge's shield ring to follow the table",
        Duration::from_secs(10),
        || async { edge.metrics().await.value("verge_shield_ring_members", &[]) == Some(n) },
    )
    .await;
}

#[tokio::test]
async fn a_purge_reaches_two_shields_and_three_edges_and_the_object_is_fetched_again() {
    let (_dir, control) = fresh_control().await;
    let origin = origin_serving("/obj", "v1").await;
    let (s1, s2) = start_s1_and_s2(&origin, &control).await;
    let mut edges = Vec::new();
    for id in ["e1", "e2", "e3"] {
        edges.push(edge_with_control(&origin, id, &control.url()).await);
    }
    control
        .wait_connected(&["e1", "e2", "e3", "s1", "s2"])
        .await;
    for edge in &edges {
        wait_ring(edge, 2.0).await;
    }

    for edge in &edges {
        assert_eq!(get(edge, "/obj").await, (200, "v1".to_string()));
    }
    // Through the shields, the origin saw the object once for all three edges.
    assert_eq!(origin.hits("/obj"), 1);

    origin.on("/obj", Reply::ok("v2").cache_control("max-age=3600"));
    let status = purge_and_wait(&control, purge_url("/obj")).await;
    assert!(status.complete);
    assert_eq!(status.nodes.len(), 5, "{status:?}");
    assert!(
        status.nodes.iter().all(|n| n.state == "applied"),
        "{status:?}"
    );

    for edge in &edges {
        assert_eq!(get(edge, "/obj").await, (200, "v2".to_string()));
    }
    assert_eq!(origin.hits("/obj"), 2);
    drop((s1, s2));
}

#[tokio::test]
async fn a_node_cut_off_during_a_purge_applies_it_on_reconnect_before_serving_it() {
    let (_dir, control) = fresh_control().await;
    let relay = Relay::start(control.node_addr).await;
    let origin = origin_serving("/obj", "v1").await;
    let edge = edge_with_control(&origin, "e1", &relay.url()).await;
    control.wait_connected(&["e1"]).await;
    assert_eq!(get(&edge, "/obj").await.1, "v1");

    relay.cut();
    wait_until(
        "control to see the stream close",
        Duration::from_secs(10),
        || async {
            control
                .nodes()
                .await
                .iter()
                .all(|(_, _, connected, _)| !connected)
        },
    )
    .await;
    origin.on("/obj", Reply::ok("v2").cache_control("max-age=3600"));
    let accepted = control.admin.purge(&purge_url("/obj")).await.unwrap();
    // The edge is alive (control still reaches its admin listener) but has not applied it.
    let status = control.admin.status(accepted.id).await.unwrap();
    assert!(!status.complete, "{status:?}");
    assert_eq!(status.nodes[0].state, "pending");
    // Cut off, it still serves what it has.
    assert_eq!(get(&edge, "/obj").await.1, "v1");

    relay.restore();
    let status = control
        .admin
        .wait(accepted.id, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(status.nodes[0].state, "applied");
    assert_eq!(get(&edge, "/obj").await.1, "v2");
    assert!(
        edge.metrics()
            .await
            .value("verge_control_reconnects_total", &[])
            >= Some(1.0)
    );
}

#[tokio::test]
async fn a_control_restart_loses_no_acknowledged_purge() {
    let (dir, control) = fresh_control().await;
    let control_addr = control.node_addr;
    let relay = Relay::start(control_addr).await;
    let origin = FakeOrigin::start().await;
    for path in ["/a", "/b"] {
        origin.on(path, Reply::ok("old").cache_control("max-age=3600"));
    }
    let edge = edge_with_control(&origin, "e1", &relay.url()).await;
    control.wait_connected(&["e1"]).await;
    assert_eq!(get(&edge, "/a").await.1, "old");
    assert_eq!(get(&edge, "/b").await.1, "old");

    // Purges accepted while the edge is cut off, then control goes down.
    relay.cut();
    let first = control.admin.purge(&purge_url("/a")).await.unwrap();
    let second = control.admin.purge(&purge_url("/b")).await.unwrap();
    assert_eq!(second.seq, first.seq + 1);
    control.stop().await;

    for path in ["/a", "/b"] {
        origin.on(path, Reply::ok("new").cache_control("max-age=3600"));
    }
    // A new control process on the same address and data directory.
    let control = start_control(dir.path(), control_addr, &[]).await;
    relay.restore();
    control.wait_connected(&["e1"]).await;
    wait_until(
        "the edge to apply both purges",
        Duration::from_secs(10),
        || async { control.nodes().await[0].3 >= second.seq },
    )
    .await;
    assert_eq!(get(&edge, "/a").await.1, "new");
    assert_eq!(get(&edge, "/b").await.1, "new");
    // The sequence goes on after the restart.
    let third = control.admin.purge(&purge_url("/c")).await.unwrap();
    assert_eq!(third.seq, second.seq + 1);
}

#[tokio::test]
async fn a_node_that_missed_more_than_the_log_holds_flushes_its_cache() {
    let dir = tempfile::TempDir::new().unwrap();
    let control = start_control(
        dir.path(),
        "127.0.0.1:0".parse().unwrap(),
        &["purge.log_retain = 2"],
    )
    .await;
    let relay = Relay::start(control.node_addr).await;
    let origin = origin_serving("/keep", "cached").await;
    let edge = edge_with_control(&origin, "e1", &relay.url()).await;
    control.wait_connected(&["e1"]).await;
    assert_eq!(get(&edge, "/keep").await.1, "cached");
    assert_eq!(origin.hits("/keep"), 1);

    relay.cut();
    // Five purges of other URLs: the log keeps only the last two.
    for i in 0..5 {
        control
            .admin
            .purge(&purge_url(&format!("/other/{i}")))
            .await
            .unwrap();
    }
    relay.restore();
    wait_until(
        "the edge to be told to resync",
        Duration::from_secs(10),
        || async {
            edge.metrics()
                .await
                .value("verge_control_events_total", &[("type", "resync")])
                >= Some(1.0)
        },
    )
    .await;
    // `/keep` was never purged, but the edge cannot prove that: it was flushed.
    assert_eq!(get(&edge, "/keep").await.1, "cached");
    assert_eq!(origin.hits("/keep"), 2);
}

#[tokio::test]
async fn a_dead_shield_leaves_the_table_and_edges_stop_sending_to_it() {
    let (_dir, control) = fresh_control().await;
    let origin = origin_answering("/k/", Reply::ok("x").cache_control("max-age=3600")).await;
    let (s1, s2) = start_s1_and_s2(&origin, &control).await;
    let edge = edge_with_control(&origin, "e1", &control.url()).await;
    control.wait_connected(&["e1", "s1", "s2"]).await;
    wait_ring(&edge, 2.0).await;
    let before = control.admin.get_json("/v1/routing").await.unwrap();

    s1.stop().await;
    wait_until(
        "control to publish a table without s1",
        Duration::from_secs(10),
        || async {
            let table = control.admin.get_json("/v1/routing").await.unwrap();
            let s1 = table["shields"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["id"] == "s1")
                .cloned();
            table["version"].as_u64() > before["version"].as_u64()
                && s1.is_some_and(|s| s["healthy"] == false)
        },
    )
    .await;
    wait_ring(&edge, 1.0).await;

    // Every miss now goes to s2, without a failed attempt at s1 first.
    let s1_failures = || async {
        edge.metrics().await.value_or_zero(
            "verge_shield_requests_total",
            &[("shield", "s1"), ("result", "connect_error")],
        )
    };
    let failures_before = s1_failures().await;
    for i in 0..20 {
        assert_eq!(get(&edge, &format!("/k/{i}")).await.0, 200);
    }
    for i in 0..20 {
        let request = origin.last_request(&format!("/k/{i}")).unwrap();
        let via = request.header("via").unwrap_or_default();
        assert!(via.ends_with("s2"), "fetched by {via}");
    }
    let failures_after = s1_failures().await;
    assert_eq!(failures_before, failures_after);
    drop(s2);
}

#[tokio::test]
async fn a_node_registers_the_url_it_is_told_to_advertise() {
    let (_dir, control) = fresh_control().await;
    let origin = FakeOrigin::start().await;
    let mut tweaks = node_control_tweaks(&control.url());
    tweaks.push("edge.id = \"e1\"".to_string());
    tweaks.push("control.advertise_url = \"http://127.1.0.77:8080\"".to_string());
    let tweaks: Vec<&str> = tweaks.iter().map(String::as_str).collect();
    let edge = start_edge(origin.addr(), &tweaks).await;
    control.wait_connected(&["e1"]).await;
    let nodes = control.admin.get_json("/v1/nodes").await.unwrap();
    assert_eq!(nodes[0]["data_url"], "http://127.1.0.77:8080");
    assert_eq!(nodes[0]["admin_url"], format!("http://{}", edge.admin_addr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_s_cache_rules_reach_every_edge_through_the_routing_tables() {
    let dir = tempfile::TempDir::new().unwrap();
    let rules = "rules = [{ name = \"from-control\", path = \"/api/\", bypass = true }]";
    let control = start_control(dir.path(), "127.0.0.1:0".parse().unwrap(), &[rules]).await;
    let origin = origin_serving("/api/x", "api").await;
    let edge = edge_with_control(&origin, "e1", &control.url()).await;
    wait_until(
        "the edge to apply control's rules",
        Duration::from_secs(10),
        || async {
            let response = HttpClient::http1()
                .get_with(&edge.url("/api/x"), &[("host", SITE)])
                .await;
            response.cache_status().contains("rule=from-control")
        },
    )
    .await;
    let hits = origin.hits("/api/x");
    get(&edge, "/api/x").await;
    get(&edge, "/api/x").await;
    assert_eq!(
        origin.hits("/api/x"),
        hits + 2,
        "control's bypass rule: never stored"
    );
    let table = control.admin.get_json("/v1/routing").await.unwrap();
    assert_eq!(table["rules"][0]["name"], "from-control", "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_node_token_only_nodes_that_present_it_are_registered() {
    const NODE_TOKEN: &str = "node-token-0123456789";
    let dir = tempfile::TempDir::new().unwrap();
    let control = start_control(
        dir.path(),
        "127.0.0.1:0".parse().unwrap(),
        &[&format!("controller.node_token = {NODE_TOKEN:?}")],
    )
    .await;
    let registration = serde_json::json!({
        "id": "intruder", "role": "shield", "region": "us",
        "data_url": "http://127.0.0.1:9", "admin_url": "http://127.0.0.1:9", "weight": 1,
    })
    .to_string();
    let client = HttpClient::http1();
    let register = |auth: Option<String>| {
        let (client, url, body) = (
            &client,
            format!("{}/v1/register", control.url()),
            registration.clone(),
        );
        async move {
            let mut headers = vec![("content-type", "application/json".to_string())];
            if let Some(auth) = auth {
                headers.push(("authorization", auth));
            }
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            client.request("POST", &url, &headers, body).await
        }
    };
    let missing = register(None).await;
    assert_eq!(missing.status.as_u16(), 401, "{}", missing.text());
    assert!(missing.header("www-authenticate").is_some());
    let wrong = register(Some("Bearer not-the-node-token".into())).await;
    assert_eq!(wrong.status.as_u16(), 403, "{}", wrong.text());
    // The admin token is not a node token either.
    let admin = register(Some(format!("Bearer {}", support::control::TOKEN))).await;
    assert_eq!(admin.status.as_u16(), 403);
    let events = client
        .get(&format!("{}/v1/events?node=intruder", control.url()))
        .await;
    assert_eq!(
        events.status.as_u16(),
        401,
        "the event stream is closed to strangers"
    );
    let nodes = control.admin.get_json("/v1/nodes").await.unwrap();
    assert_eq!(nodes, serde_json::json!([]), "nothing registered: {nodes}");

    // A real edge with the token joins, follows the stream and gets purges.
    let origin = origin_serving("/a", "a").await;
    let mut tweaks = node_control_tweaks(&control.url());
    tweaks.push("edge.id = \"e1\"".to_string());
    tweaks.push(format!("control.token = {NODE_TOKEN:?}"));
    let tweaks: Vec<&str> = tweaks.iter().map(String::as_str).collect();
    let edge = start_edge(origin.addr(), &tweaks).await;
    control.wait_connected(&["e1"]).await;
    assert_eq!(get(&edge, "/a").await, (200, "a".to_string()));
    let status = purge_and_wait(&control, purge_url("/a")).await;
    assert!(status.complete);
    let metrics = HttpClient::http1()
        .get_with(
            &format!("http://{}/metrics", control.admin_addr),
            &[(
                "authorization",
                &format!("Bearer {}", support::control::TOKEN),
            )],
        )
        .await
        .text();
    let refused = support::metrics::Metrics::parse(&metrics);
    assert!(
        refused.value_or_zero(
            "verge_control_node_auth_refused_total",
            &[("reason", "missing")]
        ) >= 2.0
    );
    assert!(
        refused.value_or_zero(
            "verge_control_node_auth_refused_total",
            &[("reason", "wrong")]
        ) >= 2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_knows_several_control_replicas_moves_to_another_when_it_loses_its_own() {
    let (_a_dir, a) = fresh_control().await;
    let (_b_dir, b) = fresh_control().await;
    let origin = origin_serving("/a", "a").await;
    let tweaks = [
        "edge.id = \"e1\"".to_string(),
        format!("control.urls = [\"{}\", \"{}\"]", a.url(), b.url()),
        "control.heartbeat_interval = \"100ms\"".to_string(),
        "control.reconnect_min = \"20ms\"".to_string(),
        "control.reconnect_max = \"200ms\"".to_string(),
    ];
    let tweaks: Vec<&str> = tweaks.iter().map(String::as_str).collect();
    let edge = start_edge(origin.addr(), &tweaks).await;
    let connected = |control: &TestControl| {
        let control = control.admin.clone();
        async move {
            let nodes = control.get_json("/v1/nodes").await.unwrap();
            nodes
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["id"] == "e1" && n["state"] == "up" && n["connected"] == true)
        }
    };
    wait_until(
        "e1 to follow one replica",
        Duration::from_secs(10),
        || async { connected(&a).await || connected(&b).await },
    )
    .await;
    // Whichever it picked goes away; the other gets it.
    let (gone, other) = if connected(&a).await { (a, b) } else { (b, a) };
    gone.stop().await;
    wait_until(
        "e1 to follow the other replica",
        Duration::from_secs(10),
        || connected(&other),
    )
    .await;
    assert_eq!(get(&edge, "/a").await, (200, "a".to_string()));
    let status = purge_and_wait(&other, purge_url("/a")).await;
    assert!(status.complete, "purges from the new replica reach it");
}

#[tokio::test]
async fn after_a_control_restart_an_edge_keeps_its_shield_until_the_shield_is_back() {
    let (dir, control) = fresh_control().await;
    let control_addr = control.node_addr;
    let origin = FakeOrigin::start().await;
    for path in ["/while-away", "/after"] {
        origin.on(path, Reply::ok("x").cache_control("max-age=3600"));
    }
    let shield_link = Relay::start(control_addr).await;
    let _shield = start_shield_node(&origin, "s1", &shield_link.url()).await;
    let edge = edge_with_control(&origin, "e1", &control.url()).await;
    control.wait_connected(&["s1", "e1"]).await;
    wait_ring(&edge, 1.0).await;

    // Control restarts; the edge is back before its shield.
    shield_link.cut();
    let tables_before = routing_events(&edge).await;
    control.stop().await;
    let control = start_control(dir.path(), control_addr, &[]).await;
    control.wait_connected(&["e1"]).await;
    wait_until(
        "the edge to read its new stream's first event",
        Duration::from_secs(10),
        || async { routing_events(&edge).await > tables_before },
    )
    .await;
    assert_eq!(
        edge.metrics().await.value("verge_shield_ring_members", &[]),
        Some(1.0),
        "the edge dropped its shield before the shield could register again"
    );
    assert_eq!(get(&edge, "/while-away").await.0, 200);
    assert_eq!(support::tier::last_fetcher(&origin, "/while-away"), "s1");

    shield_link.restore();
    control.wait_connected(&["e1", "s1"]).await;
    wait_until(
        "control to publish a table with s1",
        Duration::from_secs(10),
        || async {
            let table = control.admin.get_json("/v1/routing").await.unwrap();
            table["shields"][0]["id"] == "s1" && table.get("awaiting_shields").is_none()
        },
    )
    .await;
    wait_ring(&edge, 1.0).await;
    assert_eq!(get(&edge, "/after").await.0, 200);
    assert_eq!(support::tier::last_fetcher(&origin, "/after"), "s1");
}

/// Routing events the edge has read from control's streams.
async fn routing_events(edge: &TestEdge) -> f64 {
    edge.metrics()
        .await
        .value("verge_control_events_total", &[("type", "routing")])
        .unwrap_or(0.0)
}
