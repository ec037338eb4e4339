//! Tiers placed by latency: control plans each region's shields from the round trips nodes
//! report, follows a change in them, ignores nonsense; nodes answer the latency probe
//! (`OPTIONS` at `Max-Forwards: 0`) themselves; and in the demo's three regions an ap miss goes
//! to the shield near the origin, not across the world.

use verge_testkit as support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use support::cdn::{start_origin_and_cdn, Topology};
use support::control::{start_control, TestControl};
use support::metrics::Metrics;
use support::{wait_until, HttpClient, Reply};

/// Round trips one fake node reports, by target; changed by the test while it heartbeats.
type Reports = Arc<Mutex<Vec<(String, f64)>>>;

/// `POST url` with a JSON body; the status.
async fn post_json(url: &str, body: &Value) -> u16 {
    let response = HttpClient::http1()
        .request(
            "POST",
            url,
            &[("content-type", "application/json")],
            body.to_string(),
        )
        .await;
    response.status.as_u16()
}

/// Registers a node that never serves (its admin URL is dead, so only its heartbeats keep it
/// up) and heartbeats every 100 ms with whatever `reports` holds.
async fn fake_node(control: &TestControl, id: &str, role: &str, region: &str) -> Reports {
    let registration = json!({
        "id": id, "role": role, "region": region,
        "data_url": "http://127.0.0.1:9", "admin_url": "http://127.0.0.1:9", "weight": 1,
    });
    let base = control.url();
    assert_eq!(
        post_json(&format!("{base}/v1/register"), &registration).await,
        200
    );
    let reports: Reports = Arc::default();
    let (id, shared) = (id.to_string(), Arc::clone(&reports));
    tokio::spawn(async move {
        loop {
            let upstreams: Vec<Value> = shared
                .lock()
                .unwrap()
                .iter()
                .map(|(target, rtt)| json!({"id": target, "up": true, "rtt_ms": rtt}))
                .collect();
            let beat = json!({
                "id": id, "applied_seq": 0, "table_version": 0, "in_flight": 0,
                "upstreams": upstreams,
            });
            if post_json(&format!("{base}/v1/heartbeat"), &beat).await == 404 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    reports
}

fn set(reports: &Reports, values: &[(&str, f64)]) {
    *reports.lock().unwrap() = values.iter().map(|(t, v)| (t.to_string(), *v)).collect();
}

/// The shields the routing table gives `region`'s edges, and the plan's basis there.
async fn planned(control: &TestControl, region: &str) -> (Vec<String>, String) {
    let table = control.admin.get_json("/v1/routing").await.unwrap();
    let Some(tier) = table["tiers"]["regions"]
        .as_array()
        .and_then(|r| r.iter().find(|t| t["region"] == region))
    else {
        return (Vec::new(), String::new());
    };
    let shields = tier["shields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    (
        shields,
        tier["basis"].as_str().unwrap_or_default().to_string(),
    )
}

async fn control_metrics(control: &TestControl) -> Metrics {
    let response = HttpClient::http1()
        .get_with(
            &format!("http://{}/metrics", control.admin_addr),
            &[(
                "authorization",
                &format!("Bearer {}", support::control::TOKEN),
            )],
        )
        .await;
    Metrics::parse(&response.text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plans_tiers_from_reported_round_trips_and_follows_a_change() {
    let dir = tempfile::TempDir::new().unwrap();
    let control = start_control(
        dir.path(),
        "127.0.0.1:0".parse().unwrap(),
        &[
            "tiers.topology = \"auto\"",
            "tiers.origin_region = \"us\"",
            "regions.ap = { fallback = [\"us\", \"eu\"] }",
            "regions.eu = { fallback = [\"us\", \"ap\"] }",
            "regions.us = { fallback = [\"eu\", \"ap\"] }",
        ],
    )
    .await;
    let edge = fake_node(&control, "ap-1", "edge", "ap").await;
    let us = fake_node(&control, "shield-us", "shield", "us").await;
    let eu = fake_node(&control, "shield-eu", "shield", "eu").await;

    // Before any measurement: the regions' proximity, with the origin in us.
    wait_until(
        "a proximity plan for ap",
        Duration::from_secs(10),
        || async {
            planned(&control, "ap").await == (vec!["shield-us".to_string()], "proximity".into())
        },
    )
    .await;

    // Measured: ap → us shield 160 + 2 to the origin, ap → eu shield 220 + 80.
    set(&edge, &[("shield-us", 160.0), ("shield-eu", 220.0)]);
    set(&us, &[("http://origin:80", 2.0)]);
    set(&eu, &[("http://origin:80", 80.0)]);
    wait_until(
        "a measured plan for ap",
        Duration::from_secs(10),
        || async {
            planned(&control, "ap").await == (vec!["shield-us".to_string()], "measured".into())
        },
    )
    .await;
    let version = control.admin.get_json("/v1/routing").await.unwrap()["version"].clone();

    // The us shield's way to the origin becomes slow: ap's misses are better off through eu.
    set(&us, &[("http://origin:80", 500.0)]);
    wait_until(
        "the plan to follow the change",
        Duration::from_secs(10),
        || async { planned(&control, "ap").await.0 == ["shield-eu"] },
    )
    .await;
    let table = control.admin.get_json("/v1/routing").await.unwrap();
    assert!(
        table["version"].as_u64() > version.as_u64(),
        "a new table version: {table}"
    );
    let row = &table["latency"]["edge_to_shield"]["ap"];
    assert_eq!(row["shield-eu"], 220.0, "the matrix is shown: {table}");
    let metrics = control_metrics(&control).await;
    assert!(metrics.value_or_zero("verge_control_tier_replans_total", &[]) >= 2.0);
    assert_eq!(
        metrics.value(
            "verge_control_latency_seconds",
            &[("from", "ap"), ("to", "shield-eu")]
        ),
        Some(0.22)
    );

    // Nonsense is counted and changes nothing: a negative time, an absurd one, a stranger.
    let before = planned(&control, "ap").await;
    set(
        &edge,
        &[("shield-us", -5.0), ("shield-eu", 1e9), ("ghost", 1.0)],
    );
    wait_until(
        "nonsense to be counted",
        Duration::from_secs(10),
        || async {
            let m = control_metrics(&control).await;
            let ignored = |reason| {
                m.value_or_zero(
                    "verge_control_latency_reports_ignored_total",
                    &[("reason", reason)],
                )
            };
            ignored("out_of_range") >= 4.0 && ignored("unknown_target") >= 2.0
        },
    )
    .await;
    assert_eq!(planned(&control, "ap").await, before);
    let table = control.admin.get_json("/v1/routing").await.unwrap();
    assert!(table["latency"]["edge_to_shield"]["ap"]["ghost"].is_null());
}

#[tokio::test]
async fn options_at_max_forwards_zero_is_answered_by_the_node_itself() {
    let (origin, cdn) = start_origin_and_cdn(Topology::Shielded, &[]).await;
    origin.on("/", Reply::ok("origin"));
    let options = |hops: &'static str| {
        let url = cdn.url("/");
        async move {
            HttpClient::http1()
                .request(
                    "OPTIONS",
                    &url,
                    &[("host", "site.test"), ("max-forwards", hops)],
                    "",
                )
                .await
        }
    };
    // 0: the edge answers. 1: the edge passes it on at 0 and the shield answers.
    for hops in ["0", "1"] {
        let response = options(hops).await;
        assert_eq!(response.status.as_u16(), 200, "Max-Forwards {hops}");
        assert!(response.header("allow").unwrap().contains("OPTIONS"));
        assert_eq!(
            origin.total_hits(),
            0,
            "Max-Forwards {hops} reached the origin"
        );
    }
    // 5: the origin gets it, one lower per node on the way.
    options("5").await;
    let request = origin.last_request("/").expect("forwarded to the origin");
    assert_eq!(request.header("max-forwards").as_deref(), Some("3"));
    // TRACE at 0 is never echoed back.
    let trace = HttpClient::http1()
        .request(
            "TRACE",
            &cdn.url("/"),
            &[("host", "site.test"), ("max-forwards", "0")],
            "",
        )
        .await;
    assert_eq!(trace.status.as_u16(), 405);
}

/// Requests sent by an edge to each shield, from its metrics.
async fn shield_requests(admin: &str) -> (f64, f64) {
    let text = HttpClient::http1()
        .get(&format!("{admin}/metrics"))
        .await
        .text();
    let metrics = Metrics::parse(&text);
    let sent = |shield| {
        ["ok", "error_status"]
            .iter()
            .map(|result| {
                metrics.value_or_zero(
                    "verge_shield_requests_total",
                    &[("shield", shield), ("result", result)],
                )
            })
            .sum::<f64>()
    };
    (sent("shield-us-1"), sent("shield-eu-1"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_default_topology_an_ap_miss_goes_to_the_shield_near_the_origin() {
    // The demo: shields in us and eu, the origin in us, ap 80 ms from us and 110 from eu.
    let demo = verge_demo::Demo::start(verge_demo::DemoOptions::default())
        .await
        .unwrap();
    let ap = demo.state.node("ap-1").unwrap().clone();
    let client = HttpClient::http1();
    let before = shield_requests(&ap.admin).await;
    // Eight objects: on one ring over both shields, about half would be owned by eu's.
    let samples: Vec<String> = demo.state.samples.iter().take(8).cloned().collect();
    assert_eq!(samples.len(), 8);
    for path in &samples {
        let response = client
            .get_with(
                &format!("{}{path}", ap.http),
                &[("host", verge_demo::topology::HOSTNAME)],
            )
            .await;
        assert_eq!(response.status.as_u16(), 200, "{path}");
    }
    let after = shield_requests(&ap.admin).await;
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (8.0, 0.0),
        "ap's misses: (to shield-us-1, to shield-eu-1)"
    );
    let table = demo.state.control.admin.clone();
    let routing = verge_control::client::AdminClient::new(&table, &demo.state.control.token)
        .unwrap()
        .get_json("/v1/routing")
        .await
        .unwrap();
    let ap_tier = routing["tiers"]["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["region"] == "ap")
        .unwrap()
        .clone();
    assert_eq!(ap_tier["shields"], json!(["shield-us-1"]), "{routing}");
    demo.shutdown().await;
}

#[tokio::test]
async fn an_edge_without_control_places_its_ring_by_its_own_topology() {
    use support::tier::{cacheable_origin, get_site, last_fetcher, start_shield};
    let origin = cacheable_origin().await;
    let us = start_shield(&origin, "s-us").await;
    let eu = start_shield(&origin, "s-eu").await;
    let members = format!(
        "shields.members = [{{ id = \"s-us\", url = \"{}\", region = \"us\" }}, \
         {{ id = \"s-eu\", url = \"{}\", region = \"eu\" }}]",
        us.url(""),
        eu.url("")
    );
    let edge = support::start_edge(
        origin.addr(),
        &[
            "edge.id = \"eu-1\"",
            "edge.region = \"eu\"",
            "shields.topology = \"regional\"",
            &members,
        ],
    )
    .await;
    let client = HttpClient::http1();
    for i in 0..8 {
        let path = format!("/object-{i}");
        assert_eq!(get_site(&client, &edge, &path).await.status.as_u16(), 200);
        assert_eq!(last_fetcher(&origin, &path), "s-eu", "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_levels_an_eu_miss_goes_through_its_own_shield_to_the_one_near_the_origin() {
    let demo = verge_demo::Demo::start(verge_demo::DemoOptions {
        tier_levels: 2,
        ..verge_demo::DemoOptions::default()
    })
    .await
    .unwrap();
    let node = |id: &str| demo.state.node(id).unwrap().clone();
    let (eu, shield_eu) = (node("eu-1"), node("shield-eu-1"));
    // The shields apply the table with its upper tier shortly after the edges are ready.
    let upper = shield_eu.admin.clone();
    wait_until(
        "shield-eu-1 to have its parent",
        Duration::from_secs(10),
        || async {
            let text = HttpClient::http1()
                .get(&format!("{upper}/metrics"))
                .await
                .text();
            Metrics::parse(&text).value("verge_shield_up", &[("shield", "shield-us-1")])
                == Some(1.0)
        },
    )
    .await;
    let client = HttpClient::http1();
    let edge_before = shield_requests(&eu.admin).await;
    let shield_before = shield_requests(&shield_eu.admin).await;
    for path in demo.state.samples.iter().take(6) {
        let response = client
            .get_with(
                &format!("{}{path}", eu.http),
                &[("host", verge_demo::topology::HOSTNAME)],
            )
            .await;
        assert_eq!(response.status.as_u16(), 200, "{path}");
        let status = response.cache_status();
        assert!(
            status.matches("fwd=").count() >= 2,
            "three tiers: edge, eu shield, us shield: {status}"
        );
    }
    let edge_after = shield_requests(&eu.admin).await;
    let shield_after = shield_requests(&shield_eu.admin).await;
    assert_eq!(
        (edge_after.0 - edge_before.0, edge_after.1 - edge_before.1),
        (0.0, 6.0),
        "eu's edge asks its own shield"
    );
    assert_eq!(
        shield_after.0 - shield_before.0,
        6.0,
        "eu's shield asks the shield near the origin"
    );
    demo.shutdown().await;
}
