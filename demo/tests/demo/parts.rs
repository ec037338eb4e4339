//! Killing and restoring parts of a running demo: a killed part's link stays and refuses its
//! peers' requests; a restored part serves again behind the same address; control comes back
//! with its purge log; names that make no sense are refused.

use std::net::IpAddr;
use std::time::Duration;

use tokio::time::timeout;
use verge_config::wire::PurgeSpec;
use verge_control::client::AdminClient;
use verge_demo::bench::client::{EdgeTarget, RegionClient};
use verge_demo::state::DemoState;
use verge_demo::Demo;
use verge_testkit::control::purge_everywhere;
use verge_testkit::wait_until;

/// `GET path` from `region`'s client address through the link of node `id` (or the origin),
/// over a new connection.
async fn get(state: &DemoState, region: &str, url: &str) -> Result<u16, String> {
    let from: IpAddr = state
        .regions
        .iter()
        .find(|r| r.id == region)
        .unwrap()
        .client_addr
        .parse()
        .unwrap();
    let client = RegionClient::new(Some(from), Duration::from_secs(5), 1);
    let target = EdgeTarget {
        id: "target".into(),
        url: url.to_string(),
    };
    client
        .get(&target, &state.samples[0], &state.hostname)
        .await
        .map(|a| a.status.as_u16())
        .map_err(|e| e.to_string())
}

fn node_url(demo: &Demo, id: &str) -> String {
    demo.state.node(id).unwrap().http.clone()
}

async fn purge_all(demo: &Demo) -> u64 {
    let state = &demo.state;
    let admin = AdminClient::new(&state.control.admin, &state.control.token).unwrap();
    wait_until(
        "every node connected to control",
        Duration::from_secs(30),
        || async {
            let Ok(nodes) = admin.get_json("/v1/nodes").await else {
                return false;
            };
            let nodes = nodes.as_array().cloned().unwrap_or_default();
            nodes.len() == state.nodes.len()
                && nodes
                    .iter()
                    .all(|n| n["state"] == "up" && n["connected"] == true)
        },
    )
    .await;
    let spec = PurgeSpec {
        all: true,
        ..PurgeSpec::default()
    };
    let status = timeout(Duration::from_secs(30), purge_everywhere(&admin, &spec))
        .await
        .expect("the purge reaches every node within 30 s");
    assert_eq!(status.nodes.len(), state.nodes.len(), "{status:?}");
    status.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_parts_fail_behind_their_links_and_restored_ones_serve_again() {
    let mut demo = crate::small_demo().await;

    assert!(demo.kill("mars-1").await.unwrap_err().contains("no part"));
    assert!(demo
        .restore("us-1")
        .await
        .unwrap_err()
        .contains("is running"));

    // A shield.
    let shield = node_url(&demo, "shield-us-1");
    assert_eq!(get(&demo.state, "us", &shield).await, Ok(200));
    let admin_before = demo.state.nodes[0].admin.clone();
    demo.kill("shield-us-1").await.unwrap();
    assert!(demo
        .kill("shield-us-1")
        .await
        .unwrap_err()
        .contains("already killed"));
    let refused = get(&demo.state, "us", &shield).await.unwrap_err();
    assert!(refused.contains("target"), "{refused}");
    demo.restore("shield-us-1").await.unwrap();
    assert_eq!(node_url(&demo, "shield-us-1"), shield, "same link");
    assert_ne!(
        demo.state.nodes[0].admin, admin_before,
        "a fresh admin listener"
    );
    assert_eq!(get(&demo.state, "us", &shield).await, Ok(200));

    // The origin: a restored one counts on from the killed one's count.
    let origin = demo.state.origin.clone();
    let counted = || async {
        let stats = verge_testkit::HttpClient::http1()
            .get(&format!("{origin}/_origin/stats"))
            .await
            .text();
        serde_json::from_str::<serde_json::Value>(&stats).unwrap()["requests"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(get(&demo.state, "us", &origin).await, Ok(200));
    let before = counted().await;
    assert!(before >= 1);
    demo.kill("origin").await.unwrap();
    assert!(get(&demo.state, "us", &origin).await.is_err());
    demo.restore("origin").await.unwrap();
    assert_eq!(get(&demo.state, "us", &origin).await, Ok(200));
    assert_eq!(counted().await, before + 1);

    // Control: the nodes reconnect through its link, and its purge log goes on.
    let before = purge_all(&demo).await;
    let (api, admin) = (
        demo.state.control.api.clone(),
        demo.state.control.admin.clone(),
    );
    demo.kill("control").await.unwrap();
    let edge = node_url(&demo, "eu-1");
    assert_eq!(
        get(&demo.state, "eu", &edge).await,
        Ok(200),
        "nodes serve without control"
    );
    demo.restore("control").await.unwrap();
    assert_eq!(
        (&demo.state.control.api, &demo.state.control.admin),
        (&api, &admin),
        "control is reached at the same addresses"
    );
    assert!(purge_all(&demo).await > before, "the purge log survived");

    timeout(Duration::from_secs(10), demo.shutdown())
        .await
        .expect("the demo stops within 10 s");
}
