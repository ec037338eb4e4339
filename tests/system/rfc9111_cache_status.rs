//! The `Cache-Status` field (RFC 9211) the edge sends (after the shield's entry, behind one): its name, `hit`, `fwd` with
//! `fwd-status`, `ttl`, `stored` and `collapsed`. Other parameters (`fwd=stale`,
//! `fwd=vary-miss`, `detail=...`) are checked beside the behaviour that produces them.

use verge_testkit as support;

use support::scenario::{cdn_fetched_then, cdn_serving, not_modified, slow, tagged};
use support::{HttpClient, Reply, TestResponse, Topology};

/// Asserts the whole `Cache-Status`: the edge's entry, after the shield's when there is one.
fn assert_cache_status(response: &TestResponse, topology: Topology, shield: &str, edge: &str) {
    let expected = match topology {
        Topology::Direct => edge.to_string(),
        Topology::Shielded => format!("{shield}, {edge}"),
    };
    assert_eq!(response.cache_status(), expected);
}

async fn a_stored_miss_reports_uri_miss_the_origin_status_the_ttl_and_stored(topology: Topology) {
    let reply = Reply::ok("x").cache_control("max-age=60");
    let (_origin, edge) = cdn_serving(topology, "/cs", reply).await;
    let miss = edge.get("/cs").await;
    assert_cache_status(
        &miss,
        topology,
        "verge-shield; fwd=uri-miss; fwd-status=200; ttl=60; stored",
        "verge-edge; fwd=uri-miss; fwd-status=200; ttl=60; stored",
    );
}

async fn a_hit_reports_hit_and_the_freshness_left(topology: Topology) {
    let reply = Reply::ok("x").cache_control("max-age=60");
    let (_origin, edge) = cdn_fetched_then(topology, "/cs", reply, 15).await;
    let hit = edge.get("/cs").await;
    // The shield's entry is the one the edge stored with the object.
    assert_cache_status(
        &hit,
        topology,
        "verge-shield; fwd=uri-miss; fwd-status=200; ttl=60; stored",
        "verge-edge; hit; ttl=45",
    );
}

async fn a_stale_response_revalidated_with_304_reports_stale_304_and_stored(topology: Topology) {
    let reply = tagged("x", "max-age=10", "\"v1\"");
    let (origin, edge) = cdn_fetched_then(topology, "/cs", reply, 20).await;
    origin.on("/cs", not_modified("max-age=60", "\"v1\""));
    let revalidated = edge.get("/cs").await;
    assert_cache_status(
        &revalidated,
        topology,
        "verge-shield; fwd=stale; fwd-status=304; ttl=60; stored",
        "verge-edge; fwd=stale; fwd-status=304; ttl=60; stored",
    );
}

async fn methods_the_cache_does_not_handle_report_bypass_and_the_origin_status(topology: Topology) {
    let reply = Reply::ok("posted").with_status(201);
    let (_origin, edge) = cdn_serving(topology, "/form", reply).await;
    let response = HttpClient::http1()
        .request("POST", &edge.url("/form"), &[], "data")
        .await;
    assert_eq!(response.status, 201);
    assert_cache_status(
        &response,
        topology,
        "verge-shield; fwd=bypass; fwd-status=201",
        "verge-edge; fwd=bypass; fwd-status=201",
    );
}

async fn requests_answered_by_another_requests_fill_report_collapsed(topology: Topology) {
    let reply = slow("x", "max-age=60", 300);
    let (origin, edge) = cdn_serving(topology, "/slow", reply).await;
    let statuses = HttpClient::http1()
        .get_concurrently(&edge.url("/slow"), 5)
        .await;
    assert_eq!(origin.hits("/slow"), 1);
    let leaders = statuses
        .iter()
        .filter(|r| r.cache_status_has("stored"))
        .count();
    let collapsed = statuses
        .iter()
        .filter(|r| r.cache_status_has("collapsed"))
        .count();
    let all: Vec<String> = statuses.iter().map(|r| r.cache_status()).collect();
    assert_eq!(leaders, 1, "{all:?}");
    assert!(collapsed >= 1, "{all:?}");
    assert_eq!(leaders + collapsed, 5, "{all:?}");
}

support::in_both_topologies!(
    a_stored_miss_reports_uri_miss_the_origin_status_the_ttl_and_stored,
    a_hit_reports_hit_and_the_freshness_left,
    a_stale_response_revalidated_with_304_reports_stale_304_and_stored,
    methods_the_cache_does_not_handle_report_bypass_and_the_origin_status,
    requests_answered_by_another_requests_fill_report_collapsed,
);
