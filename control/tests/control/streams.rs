//! Control's push streams over real sockets: purges go to shields before edges, a node resumes
//! from its last applied purge (or is told to resync), the log survives a restart (and a second
//! control on the same data directory is refused), and a node that does not read its stream is
//! cut off without holding up the others.

use crate::support;

use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use serde_json::json;
use support::{closed_admin_url, start_control, wait_until, EventReader, TestControl, IO_TIMEOUT};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use verge_config::wire::Event;
use verge_config::ControlConfig;
use verge_control::ControlNode;

fn temp_dir() -> TempDir {
    TempDir::new().unwrap()
}

/// Control with `extra` configuration, its data in a directory that lives as long as the
/// test keeps it.
async fn control_in_temp_dir(extra: &str) -> (TempDir, TestControl) {
    let dir = temp_dir();
    let control = start_control(dir.path(), extra).await;
    (dir, control)
}

/// Purges URLs 1 to `count`, each getting the next sequence number, and reads each from
/// `stream` in order.
async fn purge_and_see_in_order(control: &TestControl, stream: &mut EventReader, count: u64) {
    for n in 1..=count {
        assert_eq!(control.purge_url(n).await, n);
    }
    for n in 1..=count {
        stream.expect_purge(n).await;
    }
}

/// Registers shield `s1` and edge `edge` (their admin listeners closed) and opens the edge's
/// live stream; the closed address is held for as long as the test keeps it.
async fn shield_and_live_edge(
    control: &TestControl,
    edge: &str,
) -> (EventReader, verge_testkit::DeadAddr) {
    let (admin_url, held) = closed_admin_url();
    control.register("s1", "shield", &admin_url).await;
    control.register(edge, "edge", &admin_url).await;
    (control.live_events(edge).await, held)
}

/// Registers shield `s1` and edge `e1` and opens both streams; checks their first table.
async fn shield_and_edge(control: &TestControl) -> (EventReader, EventReader) {
    let (admin_url, _held) = closed_admin_url();
    control.register("s1", "shield", &admin_url).await;
    control.register("e1", "edge", &admin_url).await;
    let mut shield = control.events("s1", None).await;
    let mut edge = control.events("e1", None).await;
    for stream in [&mut shield, &mut edge] {
        let table = stream.expect_routing().await;
        let shields: Vec<(&str, bool)> = table
            .shields
            .iter()
            .map(|s| (s.id.as_str(), s.healthy))
            .collect();
        assert_eq!(shields, [("s1", true)], "{table:?}");
        assert_eq!(table.regions.len(), 1, "{table:?}");
        assert_eq!(table.regions[0].edges[0].id.as_str(), "e1");
    }
    (shield, edge)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_get_a_purge_once_the_shields_have_acknowledged_it() {
    let (_dir, control) = control_in_temp_dir("[purge]\nshield_ack_timeout = \"2s\"\n").await;
    let (mut shield, mut edge) = shield_and_edge(&control).await;

    let posted = Instant::now();
    assert_eq!(control.purge_url(1).await, 1);
    shield.expect_purge(1).await;
    edge.expect_quiet(Duration::from_millis(150)).await;
    let pending = control.purge_status(1).await.json();
    assert_eq!(pending["complete"], false, "{pending}");

    control.ack("s1", 1).await;
    edge.expect_purge(1).await;
    let waited = posted.elapsed();
    assert!(
        waited < Duration::from_secs(1),
        "edge got it after {waited:?}"
    );
    let status = control.purge_status(1).await.json();
    assert_eq!(status["complete"], false, "{status}");
    let states = node_states(&status);
    assert_eq!(
        states,
        [
            ("e1".into(), "pending".into()),
            ("s1".into(), "applied".into())
        ]
    );

    control.ack("e1", 1).await;
    let status = control.purge_status(1).await.json();
    assert_eq!(status["complete"], true, "{status}");
    assert!(status["completed_after_ms"].is_u64(), "{status}");
    let states = node_states(&status);
    assert_eq!(
        states,
        [
            ("e1".into(), "applied".into()),
            ("s1".into(), "applied".into())
        ]
    );
    let completions = control.metric("verge_purge_completion_seconds_count").await;
    assert_eq!(completions, 1.0);
}

fn node_states(status: &serde_json::Value) -> Vec<(String, String)> {
    let mut states: Vec<(String, String)> = status["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("no nodes in {status}"))
        .iter()
        .map(|n| {
            (
                n["id"].as_str().unwrap().into(),
                n["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    states.sort();
    states
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_get_a_purge_after_the_ack_timeout_when_a_shield_stays_silent() {
    let (_dir, control) = control_in_temp_dir("[purge]\nshield_ack_timeout = \"300ms\"\n").await;
    let (mut shield, mut edge) = shield_and_edge(&control).await;

    let posted = Instant::now();
    assert_eq!(control.purge_url(1).await, 1);
    shield.expect_purge(1).await;
    edge.expect_purge(1).await;
    let waited = posted.elapsed();
    assert!(
        (Duration::from_millis(300)..Duration::from_millis(1500)).contains(&waited),
        "edge got it after {waited:?}"
    );
    // Nobody acknowledged it.
    let status = control.purge_status(1).await.json();
    assert_eq!(status["complete"], false, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shield_without_a_stream_does_not_hold_purges_back_from_edges() {
    let (_dir, control) = control_in_temp_dir("[purge]\nshield_ack_timeout = \"2s\"\n").await;
    let (mut edge, _held) = shield_and_live_edge(&control, "e1").await;
    let posted = Instant::now();
    control.purge_url(1).await;
    edge.expect_purge(1).await;
    let waited = posted.elapsed();
    assert!(
        waited < Duration::from_secs(1),
        "edge got it after {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_node_gets_exactly_the_purges_after_since_then_a_table() {
    let (_dir, control) = control_in_temp_dir("").await;
    let (mut edge, _held) = shield_and_live_edge(&control, "e1").await;
    // Live, in order (s1 has no stream, so edges need not wait for it).
    purge_and_see_in_order(&control, &mut edge, 5).await;
    drop(edge);

    for (node, since) in [("e1", 2), ("s1", 2), ("s1", 0), ("e1", 4)] {
        let mut stream = control.events(node, Some(since)).await;
        for n in since + 1..=5 {
            stream.expect_purge(n).await;
        }
        match stream.next().await {
            Event::Routing { seq, table } => {
                assert_eq!(seq, 5, "{node} since={since}");
                assert_eq!(table.shields.len(), 1);
            }
            other => panic!("{node} since={since}: expected the table, got {other:?}"),
        }
        stream.expect_quiet(Duration::from_millis(50)).await;
    }
    // Up to date: only the table.
    let mut current = control.events("s1", Some(5)).await;
    assert!(matches!(
        current.next().await,
        Event::Routing { seq: 5, .. }
    ));
    // A later purge comes live on the resumed stream, right after.
    control.purge_url(6).await;
    current.expect_purge(6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_the_retained_log_or_ahead_of_it_is_told_to_resync() {
    let (_dir, control) = control_in_temp_dir("[purge]\nlog_retain = 3\n").await;
    // The edge's live stream tells when every purge has been dispatched.
    let (mut sentinel, _held) = shield_and_live_edge(&control, "e0").await;
    purge_and_see_in_order(&control, &mut sentinel, 10).await;

    // Still held: 8, 9 and 10.
    let mut held = control.events("s1", Some(7)).await;
    for n in 8..=10 {
        held.expect_purge(n).await;
    }
    assert!(matches!(held.next().await, Event::Routing { seq: 10, .. }));

    for since in [6, 1, 11, 50] {
        let mut stream = control.events("s1", Some(since)).await;
        match stream.next().await {
            Event::Resync { seq, reason } => {
                assert_eq!(seq, 10, "since={since}: {reason}");
                assert!(!reason.is_empty());
            }
            other => panic!("since={since}: expected a resync, got {other:?}"),
        }
        assert!(
            matches!(stream.next().await, Event::Routing { seq: 10, .. }),
            "since={since}"
        );
        stream.expect_quiet(Duration::from_millis(30)).await;
    }
    assert_eq!(control.metric("verge_control_resyncs_total").await, 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_survive_a_restart_and_the_sequence_carries_on() {
    let dir = temp_dir();
    let first = start_control(dir.path(), "").await;
    for n in 1..=3 {
        assert_eq!(first.purge_url(n).await, n);
    }
    first.stop().await;

    let control = start_control(dir.path(), "").await;
    for n in 1..=3 {
        let status = control.purge_status(n).await;
        assert_eq!(status.status, StatusCode::OK, "{}", status.text());
        assert_eq!(status.json()["spec"]["urls"], json!([support::url(n)]));
    }
    assert_eq!(control.purge_status(4).await.status, StatusCode::NOT_FOUND);

    // Nodes register again after a restart; control tells them where the log ends.
    let (admin_url, _held) = closed_admin_url();
    let body = support::registration("s1", "shield", &admin_url).to_string();
    let registered = control.node(Method::POST, "/v1/register", &body).await;
    assert_eq!(registered.status, StatusCode::OK);
    assert_eq!(registered.json()["head"], 3);
    let mut stream = control.events("s1", Some(0)).await;
    for n in 1..=3 {
        stream.expect_purge(n).await;
    }
    assert!(matches!(stream.next().await, Event::Routing { seq: 3, .. }));

    assert_eq!(control.purge_url(4).await, 4);
    stream.expect_purge(4).await;
    drop(stream);
    let mut again = control.events("s1", Some(0)).await;
    for n in 1..=4 {
        again.expect_purge(n).await;
    }
    assert!(matches!(again.next().await, Event::Routing { seq: 4, .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_control_on_the_same_data_directory_is_refused_naming_it() {
    let dir = temp_dir();
    let first = start_control(dir.path(), "").await;
    assert_eq!(first.purge_url(1).await, 1);

    let config =
        ControlConfig::from_toml(&support::control_toml(dir.path(), support::TOKEN, "")).unwrap();
    let refused = match ControlNode::bind(config.clone()).await {
        Ok(_) => panic!("a second control opened the same data directory"),
        Err(e) => e.to_string(),
    };
    assert!(
        refused.contains(&dir.path().display().to_string()),
        "{refused}"
    );
    assert!(refused.contains("another control holds"), "{refused}");

    // Once the first has stopped, the directory is free at once.
    first.stop().await;
    let control = TestControl::spawn(ControlNode::bind(config).await.unwrap());
    assert_eq!(control.purge_url(2).await, 2);
}

/// A purge event of about 256 KB, so that a few fill the buffers between control and a node
/// not reading (hyper's, and the kernel's: a send buffer autotunes up to 4 MiB by default).
fn bulky_purge(n: u64) -> serde_json::Value {
    json!({ "tags": [format!("{n}-{}", "x".repeat(256 << 10))] })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_does_not_read_its_stream_is_cut_off_and_the_others_carry_on() {
    let dir = temp_dir();
    let extra = "[purge]\nrate_per_second = 10000\nburst = 10000\n[streams]\nnode_buffer = 2\n";
    let control = start_control(dir.path(), extra).await;
    let (admin_url, _held) = closed_admin_url();
    control.register("fast", "edge", &admin_url).await;
    control.register("slow", "edge", &admin_url).await;
    let mut fast = control.live_events("fast").await;

    // The slow node asks for its stream on a socket with a small receive buffer, then reads
    // nothing.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut slow = tokio::time::timeout(IO_TIMEOUT, socket.connect(control.node_addr))
        .await
        .unwrap()
        .unwrap();
    slow.write_all(
        b"GET /v1/events?node=slow HTTP/1.1\r\nhost: control\r\nconnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    wait_until("the slow node's stream to open", IO_TIMEOUT, || async {
        control.node_view("slow").await["connected"] == true
    })
    .await;

    let drops = r#"verge_control_stream_drops_total{reason="slow"}"#;
    let mut sent = 0;
    while control.metric(drops).await == 0.0 {
        sent += 1;
        assert!(
            sent <= 60,
            "the slow node was not cut off after {} purges",
            sent - 1
        );
        assert_eq!(control.purge(&bulky_purge(sent)).await, sent);
        // The fast node gets each before the next is sent, so its queue never fills.
        match fast.next().await {
            Event::Purge { seq, spec } => {
                assert_eq!(seq, sent);
                assert!(spec.tags[0].starts_with(&format!("{sent}-")));
            }
            other => panic!("fast: expected purge {sent}, got {other:?}"),
        }
    }
    assert_eq!(control.metric(drops).await, 1.0);
    // The fast node is still served.
    for n in sent + 1..=sent + 3 {
        assert_eq!(control.purge_url(n).await, n);
        fast.expect_purge(n).await;
    }
    let total = sent + 3;

    // The slow node's stream ends: what was queued, then the end of the body and the close.
    let mut answer = Vec::new();
    tokio::time::timeout(IO_TIMEOUT, slow.read_to_end(&mut answer))
        .await
        .expect("the slow stream to end")
        .unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "{}",
        &text[..text.len().min(200)]
    );
    assert!(
        text.ends_with("0\r\n\r\n"),
        "the body was not ended cleanly"
    );
    let seqs: Vec<u64> = text
        .split(r#"{"type":"purge","seq":"#)
        .skip(1)
        .map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().unwrap()
        })
        .collect();
    let got = seqs.len() as u64;
    assert!(got < sent, "the slow node got {got} of {sent} purges");
    assert_eq!(seqs, (1..=got).collect::<Vec<_>>());
    wait_until(
        "the slow node to show as disconnected",
        IO_TIMEOUT,
        || async { control.node_view("slow").await["connected"] == false },
    )
    .await;
    assert_eq!(control.node_view("fast").await["connected"], true);

    // It resumes from the log where it was cut off.
    let mut resumed = control.events("slow", Some(got)).await;
    for n in got + 1..=total {
        match resumed.next().await {
            Event::Purge { seq, .. } => assert_eq!(seq, n),
            other => panic!("slow: expected purge {n}, got {other:?}"),
        }
    }
    assert!(matches!(resumed.next().await, Event::Routing { .. }));
}

/// Registers `id` (admin listener closed) saying it routes through `shields`.
async fn register_routing(control: &TestControl, id: &str, role: &str, shields: &[&str]) {
    let (admin_url, _held) = closed_admin_url();
    let mut body = support::registration(id, role, &admin_url);
    body["shields"] = json!(shields);
    let registered = control
        .node(Method::POST, "/v1/register", &body.to_string())
        .await;
    assert_eq!(registered.status, StatusCode::OK, "{}", registered.text());
}

fn shield_ids(table: &verge_config::wire::RoutingTable) -> Vec<&str> {
    table.healthy_shields().map(|s| s.id.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_start_no_table_leaves_out_a_shield_the_nodes_route_through_until_it_is_back() {
    // As after a restart: the edge comes back first, still routing through s1 and s2.
    let (_dir, control) = control_in_temp_dir("").await;
    register_routing(&control, "e1", "edge", &["s1", "s2"]).await;
    let mut edge = control.events("e1", None).await;
    let held = edge.expect_routing().await;
    assert_eq!(
        held.version, 0,
        "no table while s1 and s2 are away: {held:?}"
    );
    assert_eq!(control.metric("verge_routing_awaited_shields").await, 2.0);
    let routing = control.admin(Method::GET, "/v1/routing", "").await;
    assert_eq!(routing.json()["awaiting_shields"], json!(["s1", "s2"]));

    // One shield back is not enough; both are.
    register_routing(&control, "s1", "shield", &[]).await;
    edge.expect_quiet(Duration::from_millis(100)).await;
    register_routing(&control, "s2", "shield", &[]).await;
    let table = edge.expect_routing().await;
    assert!(table.version > 0, "{table:?}");
    assert_eq!(shield_ids(&table), ["s1", "s2"]);
    assert_eq!(control.metric("verge_routing_awaited_shields").await, 0.0);
    let routing = control.admin(Method::GET, "/v1/routing", "").await;
    assert!(routing.json().get("awaiting_shields").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_start_the_first_table_is_planned_from_the_round_trips_nodes_register_with() {
    let (_dir, control) = control_in_temp_dir("").await;
    // As after a restart: the edge comes back first, with what it measured before.
    let (admin_url, _held) = closed_admin_url();
    let mut edge = support::registration("e1", "edge", &admin_url);
    edge["shields"] = json!(["s1"]);
    edge["upstreams"] = json!([{"id": "s1", "up": true, "rtt_ms": 12.0}]);
    let mut shield = support::registration("s1", "shield", &admin_url);
    shield["upstreams"] = json!([{"id": "http://origin.test", "up": true, "rtt_ms": 3.0}]);
    for body in [edge, shield] {
        let registered = control
            .node(Method::POST, "/v1/register", &body.to_string())
            .await;
        assert_eq!(registered.status, StatusCode::OK, "{}", registered.text());
    }
    let mut events = control.events("e1", None).await;
    let table = events.expect_routing().await;
    assert_eq!(shield_ids(&table), ["s1"]);
    // No heartbeat yet: the plan rests on the registrations' round trips, not on proximity.
    let plan = table.tiers.expect("a tier plan");
    let us = plan
        .regions
        .iter()
        .find(|r| r.region.as_str() == "us")
        .unwrap();
    assert_eq!((us.basis.as_str(), us.cost), ("measured", 15.0), "{plan:?}");
    let routing = control.admin(Method::GET, "/v1/routing", "").await.json();
    assert_eq!(
        routing["latency"]["edge_to_shield"]["us"]["s1"],
        json!(12.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shield_that_does_not_come_back_holds_the_table_only_until_health_settle() {
    let before_start = Instant::now();
    let (_dir, control) = control_in_temp_dir(
        "[health]\nheartbeat_timeout = \"60s\"\nprobe_interval = \"20ms\"\nsettle = \"300ms\"",
    )
    .await;
    register_routing(&control, "e1", "edge", &["gone"]).await;
    let mut edge = control.events("e1", None).await;
    assert_eq!(edge.expect_routing().await.version, 0);
    let table = edge.expect_routing().await;
    assert!(table.version > 0, "{table:?}");
    assert!(shield_ids(&table).is_empty(), "{table:?}");
    assert!(before_start.elapsed() >= Duration::from_millis(300));
    assert_eq!(control.metric("verge_routing_awaited_shields").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_health_settle_zero_nothing_is_held() {
    let (_dir, control) =
        control_in_temp_dir("[health]\nheartbeat_timeout = \"60s\"\nsettle = \"0s\"").await;
    register_routing(&control, "e1", "edge", &["s1"]).await;
    let mut edge = control.events("e1", None).await;
    let table = edge.expect_routing().await;
    assert!(table.version > 0, "{table:?}");
    assert!(shield_ids(&table).is_empty(), "{table:?}");
}
