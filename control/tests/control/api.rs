//! Control's admin and node APIs over real sockets: authentication, what a purge request may
//! contain, the rate limit, how nodes that speak the protocol wrongly are answered, and health
//! checking as the routing table shows it.

use crate::support;

use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use serde_json::json;
use support::{
    closed_admin_url, raw_exchange, registration, start_control, HealthServer, Next, IO_TIMEOUT,
    TOKEN,
};
use tempfile::TempDir;
use verge_config::wire::Event;

fn temp_dir() -> TempDir {
    TempDir::new().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_wants_the_bearer_token_but_health_and_metrics_do_not() {
    let dir = temp_dir();
    let control = start_control(dir.path(), "").await;
    let wrong = format!("Bearer {TOKEN}x");
    let purge = r#"{"all":true}"#;
    for (method, path, body) in [
        (Method::POST, "/v1/purge", purge),
        (Method::GET, "/v1/nodes", ""),
    ] {
        let missing = control.admin_as(None, method.clone(), path, body).await;
        assert_eq!(missing.status, StatusCode::UNAUTHORIZED, "{path}");
        let challenge = missing.header("www-authenticate").unwrap_or_default();
        assert!(challenge.starts_with("Bearer"), "{path}: {challenge:?}");

        for presented in [wrong.as_str(), "Bearer ", "Basic dXNlcjpwYXNz", TOKEN] {
            let refused = control
                .admin_as(Some(presented), method.clone(), path, body)
                .await;
            assert_eq!(
                refused.status,
                StatusCode::FORBIDDEN,
                "{path} with {presented:?}"
            );
            assert!(refused.header("www-authenticate").is_none());
        }
    }
    // None of the refused purges was logged.
    assert_eq!(control.purge_status(1).await.status, StatusCode::NOT_FOUND);
    assert_eq!(control.metric("verge_purge_log_head").await, 0.0);

    let health = control.admin_as(None, Method::GET, "/healthz", "").await;
    assert_eq!(health.status, StatusCode::OK);
    let metrics = control.admin_as(None, Method::GET, "/metrics", "").await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(metrics.text().contains("verge_purge_log_head"));

    // The right token is let in.
    let nodes = control.admin(Method::GET, "/v1/nodes", "").await;
    assert_eq!(nodes.status, StatusCode::OK);
    assert_eq!(nodes.json(), json!([]));
    assert_eq!(control.purge(&json!({"all": true})).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_purge_bodies_are_refused_naming_the_problem_and_nothing_is_logged() {
    let dir = temp_dir();
    let control = start_control(dir.path(), "[purge]\nmax_body_bytes = \"1KiB\"\n").await;
    let cases = [
        ("{urls", "invalid purge body"),
        (r#"{"urls":["http://a.test/"],"bogus":1}"#, "bogus"),
        (r#"{"urls":"http://a.test/"}"#, "invalid purge body"),
        ("{}", "empty purge"),
        (r#"{"urls":["/relative/path"]}"#, "not an absolute URL"),
        (r#"{"prefixes":["ftp://a.test/"]}"#, "prefixes:"),
        (r#"{"tags":["two words"]}"#, "not a surrogate key"),
        (r#"{"tags":["a,b"]}"#, "not a surrogate key"),
        (r#"{"tags":[""]}"#, "not a surrogate key"),
    ];
    for (body, problem) in cases {
        let reply = control.admin(Method::POST, "/v1/purge", body).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            reply.text()
        );
        let message = reply.error();
        assert!(
            message.contains(problem),
            "{body}: {message:?} should name {problem:?}"
        );
    }
    let big = json!({ "tags": ["t".repeat(2000)] }).to_string();
    let reply = control.admin(Method::POST, "/v1/purge", &big).await;
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        reply.text()
    );
    assert!(reply.error().contains("1024"), "{}", reply.text());

    let invalid = r#"verge_purges_total{result="invalid"}"#;
    assert_eq!(control.metric(invalid).await, (cases.len() + 1) as f64);
    // The log is as it was: nothing to look up, and the next good purge is the first.
    assert_eq!(control.purge_status(1).await.status, StatusCode::NOT_FOUND);
    assert_eq!(control.metric("verge_purge_log_head").await, 0.0);
    assert_eq!(control.purge_url(1).await, 1);
    let status = control.purge_status(1).await;
    assert_eq!(status.status, StatusCode::OK);
    assert_eq!(status.json()["spec"], json!({"urls": [support::url(1)]}));
    assert_eq!(control.purge_status(2).await.status, StatusCode::NOT_FOUND);
    let not_an_id = control.admin(Method::GET, "/v1/purge/x", "").await;
    assert_eq!(not_an_id.status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_beyond_the_burst_are_refused_with_retry_after() {
    let dir = temp_dir();
    let control = start_control(dir.path(), "[purge]\nrate_per_second = 1\nburst = 2\n").await;
    assert_eq!(control.purge_url(1).await, 1);
    assert_eq!(control.purge_url(2).await, 2);
    let body = json!({ "urls": [support::url(3)] }).to_string();
    let limited = control.admin(Method::POST, "/v1/purge", &body).await;
    assert_eq!(
        limited.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        limited.text()
    );
    let retry: u64 = limited
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After in {:?}", limited.headers));
    assert!((1..=2).contains(&retry), "Retry-After: {retry}");
    assert!(limited.error().contains("rate limit"), "{}", limited.text());
    assert_eq!(control.purge_status(3).await.status, StatusCode::NOT_FOUND);
    let rate_limited = r#"verge_purges_total{result="rate_limited"}"#;
    assert_eq!(control.metric(rate_limited).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_speaking_the_protocol_wrongly_are_refused() {
    let dir = temp_dir();
    let control = start_control(dir.path(), "").await;

    // Garbage registration: 400, and the server closes the connection (read_to_end returns).
    let garbage = b"POST /v1/register HTTP/1.1\r\nhost: control\r\n\
                    content-type: application/json\r\ncontent-length: 9\r\n\r\nnot json!";
    let answer = raw_exchange(control.node_addr, garbage)
        .await
        .to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 400"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    assert!(answer.contains("invalid registration"), "{answer}");

    // Well-formed JSON that is still not a registration: the same.
    let (admin_url, _held) = closed_admin_url();
    let mut zero_weight = registration("e1", "edge", &admin_url);
    zero_weight["weight"] = json!(0);
    let mut relative = registration("e1", "edge", &admin_url);
    relative["data_url"] = json!("/data");
    let mut unknown_field = registration("e1", "edge", &admin_url);
    unknown_field["colour"] = json!("blue");
    let mut bad_role = registration("e1", "edge", &admin_url);
    bad_role["role"] = json!("origin");
    for (body, problem) in [
        (zero_weight, "weight"),
        (relative, "data_url"),
        (unknown_field, "colour"),
        (bad_role, "origin"),
    ] {
        let reply = control
            .node(Method::POST, "/v1/register", &body.to_string())
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(reply.header("connection"), Some("close"), "{body}");
        assert!(reply.error().contains(problem), "{body}: {}", reply.text());
    }

    // Reports from a node control does not know.
    let beat = json!({"id": "ghost", "applied_seq": 0, "table_version": 0, "in_flight": 0});
    let ack = json!({"id": "ghost", "applied_seq": 1});
    for (path, body) in [("/v1/heartbeat", &beat), ("/v1/ack", &ack)] {
        let reply = control.node(Method::POST, path, &body.to_string()).await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_FOUND,
            "{path}: {}",
            reply.text()
        );
        assert!(reply.error().contains("ghost"), "{path}: {}", reply.text());
    }
    for (query, status) in [
        ("", StatusCode::BAD_REQUEST),
        ("?since=3", StatusCode::BAD_REQUEST),
        ("?node=a%20b", StatusCode::BAD_REQUEST),
        ("?node=ghost", StatusCode::NOT_FOUND),
    ] {
        let path = format!("/v1/events{query}");
        let reply = control.node(Method::GET, &path, "").await;
        assert_eq!(reply.status, status, "{path}: {}", reply.text());
    }

    // Once registered, the same node is answered.
    control.register("ghost", "edge", &admin_url).await;
    for (path, body) in [("/v1/heartbeat", &beat), ("/v1/ack", &ack)] {
        let reply = control.node(Method::POST, path, &body.to_string()).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text());
    }
    let bad_since = control
        .node(Method::GET, "/v1/events?node=ghost&since=x", "")
        .await;
    assert_eq!(bad_since.status, StatusCode::BAD_REQUEST);
    let wrong_method = control.node(Method::GET, "/v1/register", "").await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
}

const FAST_HEALTH: &str = "[health]\nheartbeat_interval = \"100ms\"\n\
    heartbeat_timeout = \"200ms\"\nprobe_interval = \"50ms\"\nprobe_timeout = \"100ms\"\n\
    rise = 2\nfall = 2\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_unreachable_node_goes_down_and_a_reachable_one_stays_up() {
    let dir = temp_dir();
    let control = start_control(dir.path(), FAST_HEALTH).await;
    let healthz = HealthServer::start().await;
    let (dead_admin, _held) = closed_admin_url();
    let registered_at = Instant::now();
    let reply = control
        .node(
            Method::POST,
            "/v1/register",
            &registration("s1", "shield", &dead_admin).to_string(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["heartbeat_interval_ms"], 100);
    control.register("e1", "edge", &healthz.url).await;

    let mut edge = control.events("e1", None).await;
    let mut shield = control.events("s1", None).await;
    let first = edge.expect_routing().await;
    assert_eq!(shield.expect_routing().await, first);
    assert_eq!(first.shields.len(), 1);
    assert!(first.shields[0].healthy, "{first:?}");

    // Neither node sends heartbeats. The shield's admin port is closed: after the heartbeat
    // timeout and two failed rounds it is down, and every open stream gets a new table.
    for stream in [&mut edge, &mut shield] {
        let table = loop {
            match stream.poll(IO_TIMEOUT).await {
                Next::Event(event) => match *event {
                    Event::Routing { table, .. } if !table.shields[0].healthy => break table,
                    Event::Routing { .. } => continue,
                    other => panic!("expected a routing table, got {other:?}"),
                },
                other => panic!("no table with the shield down: {other:?}"),
            }
        };
        assert!(table.version > first.version, "{table:?}");
        assert_eq!(table.shields[0].id.as_str(), "s1");
        assert!(table.regions[0].edges[0].healthy, "{table:?}");
    }
    let down_after = registered_at.elapsed();
    assert!(
        down_after >= Duration::from_millis(200),
        "down after {down_after:?}"
    );
    let s1 = control.node_view("s1").await;
    assert_eq!(s1["state"], "down", "{s1}");
    assert_eq!(s1["last_probe_ok"], false, "{s1}");
    let shields_down = r#"verge_control_nodes{role="shield",state="down"}"#;
    assert_eq!(control.metric(shields_down).await, 1.0);

    // The edge answers its probes, so it stays up though its heartbeats are long overdue.
    support::wait_until(
        "the edge's heartbeat to be long overdue",
        IO_TIMEOUT,
        || async {
            control.node_view("e1").await["last_heartbeat_ms_ago"]
                .as_u64()
                .is_some_and(|ms| ms > 600)
        },
    )
    .await;
    let e1 = control.node_view("e1").await;
    assert_eq!(e1["state"], "up", "{e1}");
    assert_eq!(e1["last_probe_ok"], true, "{e1}");
    assert_eq!(control.node_view("s1").await["state"], "down");
}
