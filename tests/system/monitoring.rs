//! The monitoring files under `config/examples/monitoring/` describe what Verge really exports:
//! the Grafana dashboard is valid JSON, and every metric its queries name is served by a running
//! edge, shield or control after some traffic and a purge.

use verge_testkit as support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::control::{node_control_tweaks, purge_everywhere, start_control, start_shield_node};
use support::{start_edge, wait_until, FakeOrigin, HttpClient, Reply};
use verge_config::wire::PurgeSpec;

const DASHBOARD: &str = include_str!("../../config/examples/monitoring/grafana-dashboard.json");
const SCRAPE: &str = include_str!("../../config/examples/monitoring/prometheus.yml");

/// Every PromQL expression of the dashboard.
fn expressions() -> Vec<String> {
    let dashboard: serde_json::Value =
        serde_json::from_str(DASHBOARD).expect("the dashboard is valid JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8, "a dashboard for the whole CDN");
    panels
        .iter()
        .flat_map(|p| p["targets"].as_array().expect("targets").clone())
        .map(|t| t["expr"].as_str().expect("expr").to_string())
        .collect()
}

/// Identifiers starting with `verge_` in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(found) = expr[i..].find("verge_") {
        let start = i + found;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        names.push(expr[start..end].to_string());
        i = end;
    }
    names
}

/// Label names used in `by (...)` clauses.
fn grouping_labels(expr: &str) -> Vec<String> {
    expr.split("by (")
        .skip(1)
        .flat_map(|rest| {
            rest.split(')')
                .next()
                .unwrap_or("")
                .split(',')
                .map(|l| l.trim().to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Metric names present in Prometheus text.
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or("").to_string())
        .collect()
}

#[tokio::test]
async fn every_dashboard_query_names_metrics_the_nodes_export() {
    let dir = tempfile::TempDir::new().unwrap();
    let control = start_control(dir.path(), "127.0.0.1:0".parse().unwrap(), &[]).await;
    let origin = FakeOrigin::start().await;
    origin.on("/obj", Reply::ok("x").cache_control("max-age=3600"));
    let shield = start_shield_node(&origin, "s1", &control.url()).await;
    let mut tweaks = node_control_tweaks(&control.url());
    tweaks.push("edge.id = \"e1\"".to_string());
    let tweaks: Vec<&str> = tweaks.iter().map(String::as_str).collect();
    let edge = start_edge(origin.addr(), &tweaks).await;
    control.wait_connected(&["e1", "s1"]).await;
    wait_until(
        "the edge's ring to hold the shield",
        Duration::from_secs(10),
        || async { edge.metrics().await.value("verge_shield_ring_members", &[]) == Some(1.0) },
    )
    .await;
    let client = HttpClient::http1();
    for _ in 0..2 {
        let response = client
            .get_with(&edge.url("/obj"), &[("host", "www.example.test")])
            .await;
        assert_eq!(response.status, 200);
    }
    let spec = PurgeSpec {
        urls: vec!["http://www.example.test/obj".into()],
        ..PurgeSpec::default()
    };
    purge_everywhere(&control.admin, &spec).await;

    let mut names = BTreeSet::new();
    for url in [
        format!("http://{}/metrics", control.admin_addr),
        format!("http://{}/metrics", shield.admin_addr),
        edge.admin_url("/metrics"),
    ] {
        let response = client.get(&url).await;
        assert_eq!(response.status, 200, "{url}");
        names.extend(exported(&response.text()));
    }

    let allowed_labels = [
        "role",
        "region",
        "instance",
        "le",
        "cache_status",
        "server",
        "result",
        "shield",
        "state",
    ];
    for expr in expressions() {
        let used = metric_names(&expr);
        assert!(!used.is_empty(), "query names no Verge metric: {expr}");
        for name in used {
            assert!(
                names.contains(&name),
                "{name} (in `{expr}`) is not exported"
            );
        }
        for label in grouping_labels(&expr) {
            assert!(
                allowed_labels.contains(&label.as_str()),
                "`{expr}` groups by {label:?}, which neither the metrics nor the scrape labels have"
            );
        }
    }
    // The scrape configuration attaches the labels the dashboard groups by.
    for label in ["role:", "region:"] {
        assert!(
            SCRAPE.contains(label),
            "prometheus.yml sets no {label} label"
        );
    }
}

#[test]
fn the_metric_name_scanner_finds_every_name() {
    assert_eq!(
        metric_names("sum(rate(verge_a_total[1m])) / verge_b_bucket{x=\"y\"}"),
        vec!["verge_a_total", "verge_b_bucket"]
    );
    assert_eq!(
        grouping_labels("sum by (role, region) (x) / sum by (le) (y)"),
        vec!["role", "region", "le"]
    );
}
