//! The admin listener: health, Prometheus metrics that follow the traffic, 404 for the rest.

// A panic is how a test fails: unwrapping is the point here.

use verge_testkit as support;

use support::scenario::edge_serving;
use support::{start_origin_and_edge, HttpClient, Reply};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_200() {
    let (_origin, edge) = start_origin_and_edge(&[]).await;
    let response = edge.admin_get("/healthz").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.text().trim(), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_hits_misses_and_upstream_requests() {
    let reply = Reply::ok("m").cache_control("max-age=60");
    let (_origin, edge) = edge_serving("/m", reply, &[]).await;
    edge.get("/m").await;
    edge.get("/m").await;
    edge.get("/m").await;

    let response = edge.admin_get("/metrics").await;
    assert_eq!(response.status, 200);
    let content_type = response.header("content-type").unwrap_or_default();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = response.text();
    assert!(
        text.contains(r#"verge_requests_total{cache_status="hit",code="200"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"verge_requests_total{cache_status="miss",code="200"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"verge_upstream_requests_total{result="ok"} 1"#),
        "{text}"
    );

    let metrics = support::Metrics::parse(&text);
    assert_eq!(
        metrics.value(
            "verge_request_duration_seconds_count",
            &[("cache_status", "hit")]
        ),
        Some(2.0),
        "{text}"
    );
    assert!(
        metrics.has("verge_request_duration_seconds_bucket"),
        "{text}"
    );
    assert_eq!(
        metrics.value("verge_upstream_duration_seconds_count", &[]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(metrics.value("verge_cache_objects", &[]), Some(1.0));
    assert!(metrics.value("verge_cache_bytes", &[]).unwrap() > 0.0);
    assert!(
        metrics.value("verge_connections_total", &[]).unwrap() >= 1.0,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_errors_by_status() {
    let (_origin, edge) = start_origin_and_edge(&[]).await;
    let client = HttpClient::http1();
    let response = client.request("PURGE", &edge.url("/x"), &[], "").await;
    assert_eq!(response.status, 405);

    let metrics = edge.metrics().await;
    metrics.assert_value(
        "verge_requests_total",
        &[("cache_status", "error"), ("code", "405")],
        1.0,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_admin_path_gets_404() {
    let (_origin, edge) = start_origin_and_edge(&[]).await;
    let response = edge.admin_get("/nope").await;
    assert_eq!(response.status, 404);
    assert!(response.text().contains("/metrics"), "{}", response.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_listener_does_not_serve_client_traffic() {
    let reply = Reply::ok("a").cache_control("max-age=60");
    let (origin, edge) = edge_serving("/a", reply, &[]).await;
    let response = edge.admin_get("/a").await;
    assert_eq!(response.status, 404);
    assert_eq!(origin.total_hits(), 0);
}
