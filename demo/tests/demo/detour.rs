//! `auto` tiers with the shield near the origin down: a region whose only shields left are far
//! away (us, whose next shield is eu's, 80 ms there and back, against 2 ms straight to the
//! origin) sends its misses straight to the origin, and a region whose own shield costs it next
//! to nothing (eu) keeps it.

use std::time::Duration;

use serde_json::{json, Value};
use verge_control::client::AdminClient;
use verge_demo::Demo;
use verge_testkit::metrics::Metrics;
use verge_testkit::{wait_until, HttpClient};

/// Each region's tier in the routing table: (shields, basis).
async fn tiers(admin: &AdminClient) -> Vec<(String, Value, String)> {
    let Ok(routing) = admin.get_json("/v1/routing").await else {
        return Vec::new();
    };
    routing["tiers"]["regions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|t| {
            (
                t["region"].as_str().unwrap_or_default().to_string(),
                t["shields"].clone(),
                t["basis"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

async fn tier_of(admin: &AdminClient, region: &str) -> Option<(Value, String)> {
    tiers(admin)
        .await
        .into_iter()
        .find(|(r, _, _)| r == region)
        .map(|(_, shields, basis)| (shields, basis))
}

/// Requests an edge sent to shields, from its metrics.
async fn sent_to_shields(admin: &str) -> f64 {
    let text = HttpClient::http1()
        .get(&format!("{admin}/metrics"))
        .await
        .text();
    let metrics = Metrics::parse(&text);
    let mut sent = 0.0;
    for shield in ["shield-us-1", "shield-eu-1"] {
        for result in ["ok", "error_status", "error"] {
            sent += metrics.value_or_zero(
                "verge_shield_requests_total",
                &[("shield", shield), ("result", result)],
            );
        }
    }
    sent
}

async fn origin_fetches(demo: &Demo) -> u64 {
    let stats = HttpClient::http1()
        .get(&format!("{}/_origin/stats", demo.state.origin))
        .await
        .text();
    let stats: Value = serde_json::from_str(&stats).unwrap();
    stats["requests"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_shield_near_the_origin_down_a_far_region_goes_straight_to_the_origin() {
    let mut demo = crate::small_demo().await;
    let admin = AdminClient::new(&demo.state.control.admin, &demo.state.control.token).unwrap();
    // Planned from measurements, every region through the shield near the origin.
    wait_until(
        "every region planned from measured round trips",
        Duration::from_secs(30),
        || async {
            let all = tiers(&admin).await;
            all.len() == 3
                && all.iter().all(|(_, shields, basis)| {
                    basis == "measured" && *shields == json!(["shield-us-1"])
                })
        },
    )
    .await;

    demo.kill("shield-us-1").await.unwrap();
    // us would go 80 ms each way through eu's shield, ap 110 + 40: both go straight to the
    // origin; eu keeps its own shield, 2 ms out of its way.
    wait_until(
        "the plan without shield-us-1",
        Duration::from_secs(30),
        || async {
            tier_of(&admin, "us").await == Some((json!([]), "direct".into()))
                && tier_of(&admin, "ap").await == Some((json!([]), "direct".into()))
                && tier_of(&admin, "eu").await == Some((json!(["shield-eu-1"]), "measured".into()))
        },
    )
    .await;

    // A us miss now reaches the origin without crossing to eu.
    let us = demo.state.node("us-1").unwrap().clone();
    let path = demo.state.samples.last().unwrap().clone();
    wait_until("us-1 applied the plan", Duration::from_secs(10), || async {
        let text = HttpClient::http1()
            .get(&format!("{}/metrics", us.admin))
            .await
            .text();
        Metrics::parse(&text).value_or_zero("verge_shield_ring_members", &[]) == 0.0
    })
    .await;
    let (shields_before, origin_before) = (
        sent_to_shields(&us.admin).await,
        origin_fetches(&demo).await,
    );
    let response = HttpClient::http1()
        .get_with(
            &format!("{}{path}", us.http),
            &[("host", verge_demo::topology::HOSTNAME)],
        )
        .await;
    assert_eq!(response.status.as_u16(), 200);
    assert_eq!(
        sent_to_shields(&us.admin).await,
        shields_before,
        "no shield asked"
    );
    assert_eq!(
        origin_fetches(&demo).await,
        origin_before + 1,
        "the origin answered"
    );

    // The shield back: us goes through it again.
    demo.restore("shield-us-1").await.unwrap();
    wait_until(
        "us back on shield-us-1",
        Duration::from_secs(30),
        || async {
            tier_of(&admin, "us").await == Some((json!(["shield-us-1"]), "measured".into()))
        },
    )
    .await;
    tokio::time::timeout(Duration::from_secs(10), demo.shutdown())
        .await
        .expect("the demo stops within 10 s");
}
