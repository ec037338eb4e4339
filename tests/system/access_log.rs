//! Access logs end to end: one line per request with its fields, for hits, misses, a miss
//! through a real shield (one request id at both tiers), errors (logged whatever the
//! sampling), HTTPS over h2; a disk that is full drops and counts lines while the node keeps
//! serving; a file that cannot be opened stops the start; `verge edge --access-log` reopens
//! its file on SIGUSR1 after rotation.

use verge_testkit as support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use support::cdn::{shield_toml, SHIELD_ID};
use support::pki::{toml_path, TestPki, TlsClient};
use support::{start_edge, wait_until, DeadAddr, FakeOrigin, HttpClient, Reply};
use verge_config::{EdgeConfig, ShieldConfig};
use verge_edge::EdgeRole;
use verge_origin_shield::ShieldRole;
use verge_testkit::RunningNode;

use crate::process::VergeProcess;

const LIMIT: Duration = Duration::from_secs(10);

/// A temporary directory and the access log path in it.
fn log_in(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

/// The `access_log.path` tweak for `path`.
fn path_tweak(path: &Path) -> String {
    format!("access_log.path = {}", toml_path(path))
}

/// The JSON lines of the access log at `path` (none while it does not exist).
fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
        .collect()
}

/// Waits until the access log at `path` has `n` lines, and returns them.
async fn wait_lines(path: &Path, n: usize) -> Vec<Value> {
    wait_until(
        &format!("{n} lines in {}", path.display()),
        LIMIT,
        || async { lines(path).len() >= n },
    )
    .await;
    lines(path)
}

async fn cacheable_origin() -> FakeOrigin {
    let origin = FakeOrigin::start().await;
    origin.on_prefix("/", Reply::ok("twelve bytes").cache_control("max-age=300"));
    origin
}

/// A logged line's `cache_status`.
fn cache_status(line: &Value) -> &str {
    line["cache_status"].as_str().unwrap()
}

#[tokio::test]
async fn a_miss_and_a_hit_are_logged_with_their_fields() {
    let origin = cacheable_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir, "access.log");
    let edge = start_edge(origin.addr(), &[&path_tweak(&path), "edge.region = \"us\""]).await;
    let client = HttpClient::http1();
    let miss = client
        .get_with(
            &edge.url("/obj?x=1"),
            &[
                ("x-request-id", "chosen-by-client"),
                ("user-agent", "tester/1"),
            ],
        )
        .await;
    let hit = client.get(&edge.url("/obj?x=1")).await;
    assert_eq!((miss.status.as_u16(), hit.status.as_u16()), (200, 200));
    let miss_id = miss.header("x-request-id").unwrap();
    assert_ne!(
        miss_id, "chosen-by-client",
        "an edge does not trust its clients' ids"
    );
    assert_eq!(miss_id.len(), 32);
    let sent_upstream = origin.last_request("/obj").unwrap();
    assert_eq!(
        sent_upstream.header("x-request-id").as_deref(),
        Some(&*miss_id)
    );

    let logged = wait_lines(&path, 2).await;
    let (m, h) = (&logged[0], &logged[1]);
    assert_eq!(m["method"], "GET");
    assert_eq!(m["path"], "/obj?x=1");
    assert_eq!(m["host"], edge.data_addr.to_string());
    assert_eq!(m["status"], 200);
    assert_eq!(m["bytes_sent"], 12);
    assert_eq!(m["outcome"], "miss");
    assert!(
        cache_status(m).starts_with("verge-edge; fwd=uri-miss"),
        "{m}"
    );
    assert_eq!(m["upstream"], format!("http://{}", origin.addr()));
    assert_eq!(m["upstream_status"], 200);
    assert!(m["upstream_first_byte_ms"].as_f64().unwrap() > 0.0, "{m}");
    assert!(m["duration_ms"].as_f64().unwrap() >= m["upstream_first_byte_ms"].as_f64().unwrap());
    assert_eq!(m["request_id"], miss_id.as_str());
    assert_eq!(m["user_agent"], "tester/1");
    assert_eq!(m["node"], support::edge::EDGE_ID);
    assert_eq!(m["region"], "us");
    assert_eq!(m["protocol"], "h1");
    assert_eq!(m["tls"], Value::Null);
    assert!(
        m["client"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{m}"
    );
    assert!(m["time"].as_str().unwrap().ends_with('Z'), "{m}");

    assert_eq!(h["outcome"], "hit");
    assert!(cache_status(h).starts_with("verge-edge; hit"), "{h}");
    assert_eq!(h["bytes_sent"], 12);
    assert_eq!(h["upstream"], Value::Null);
    assert_eq!(h["upstream_status"], Value::Null);
    assert_eq!(
        h["request_id"],
        hit.header("x-request-id").unwrap().as_str()
    );
    assert_ne!(h["request_id"], m["request_id"]);
    let metrics = edge.metrics().await;
    assert_eq!(
        metrics.value_or_zero("verge_access_log_lines_total", &[]),
        2.0
    );
    assert_eq!(
        metrics.value_or_zero("verge_access_log_dropped_total", &[]),
        0.0
    );
}

#[tokio::test]
async fn a_miss_through_a_shield_shows_one_request_id_at_both_tiers() {
    let origin = cacheable_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let (edge_log, shield_log) = (log_in(&dir, "edge.log"), log_in(&dir, "shield.log"));
    // testkit's shield TOML takes only the tables it knows, so the access log is added here.
    let toml = format!(
        "{}{}\n",
        shield_toml(origin.addr(), &[]),
        path_tweak(&shield_log)
    );
    let config = ShieldConfig::from_toml(&toml).unwrap_or_else(|e| panic!("{toml}\n{e}"));
    let shield = RunningNode::start::<ShieldRole>(&config).await;
    let member = format!(
        "shields.members = [{{ id = \"{SHIELD_ID}\", url = \"http://{}\" }}]",
        shield.data_addr
    );
    let edge = start_edge(origin.addr(), &[&path_tweak(&edge_log), &member]).await;
    let response = HttpClient::http1().get(&edge.url("/tiered")).await;
    assert_eq!(response.status.as_u16(), 200);
    let id = response.header("x-request-id").unwrap();

    let at_edge = &wait_lines(&edge_log, 1).await[0];
    let at_shield = &wait_lines(&shield_log, 1).await[0];
    assert_eq!(at_edge["request_id"], id.as_str());
    assert_eq!(
        at_shield["request_id"],
        id.as_str(),
        "the shield trusts the edge's id"
    );
    assert_eq!(
        origin
            .last_request("/tiered")
            .unwrap()
            .header("x-request-id"),
        Some(id.clone())
    );
    assert_eq!(
        at_edge["upstream"], SHIELD_ID,
        "the edge names the shield by its id"
    );
    assert_eq!(at_edge["upstream_status"], 200);
    assert_eq!(at_shield["upstream"], format!("http://{}", origin.addr()));
    assert_eq!(at_shield["node"], SHIELD_ID);
    assert!(
        cache_status(at_edge).starts_with("verge-edge;"),
        "{at_edge}"
    );
    assert!(
        cache_status(at_shield).starts_with("verge-shield;"),
        "{at_shield}"
    );
}

#[tokio::test]
async fn an_upstream_error_is_logged_even_when_nothing_is_sampled() {
    let dead = DeadAddr::new();
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir, "access.log");
    let edge = start_edge(dead.addr, &[&path_tweak(&path), "access_log.sample = 0.0"]).await;
    let response = HttpClient::http1().get(&edge.url("/down")).await;
    assert_eq!(response.status.as_u16(), 502);
    let line = &wait_lines(&path, 1).await[0];
    assert_eq!(line["status"], 502);
    assert_eq!(line["outcome"], "error");
    assert_eq!(line["upstream"], Value::Null, "nobody answered");
    assert!(
        cache_status(line).contains("detail=upstream-connect-error"),
        "{line}"
    );
    assert_eq!(
        line["request_id"],
        response.header("x-request-id").unwrap().as_str()
    );
}

#[tokio::test]
async fn sample_zero_logs_no_hits_but_still_logs_errors() {
    let origin = cacheable_origin().await;
    origin.on("/broken", Reply::reset());
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir, "access.log");
    let edge = start_edge(
        origin.addr(),
        &[&path_tweak(&path), "access_log.sample = 0.0"],
    )
    .await;
    let client = HttpClient::http1();
    for _ in 0..5 {
        assert_eq!(client.get(&edge.url("/obj")).await.status.as_u16(), 200);
    }
    assert_eq!(client.get(&edge.url("/broken")).await.status.as_u16(), 502);
    let logged = wait_lines(&path, 1).await;
    let metrics = edge.metrics().await;
    assert_eq!(
        metrics.value_or_zero("verge_access_log_lines_total", &[]),
        1.0
    );
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(logged[0]["path"], "/broken");
    assert_eq!(logged[0]["status"], 502);
}

#[tokio::test]
async fn https_over_h2_logs_the_tls_version_and_protocol() {
    let origin = cacheable_origin().await;
    let pki = TestPki::new("access-log");
    let cert = pki.server_cert("edge", &["a.test", "127.0.0.1"]);
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir, "access.log");
    let toml = format!(
        "[edge]\nid = \"edge-tls\"\n\
         [server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nshutdown_grace = \"1s\"\n\
         [upstream]\norigin = \"http://{}\"\n\
         [access_log]\npath = {}\nformat = \"json\"\n\
         [tls]\nlisten = [\"127.0.0.1:0\"]\n{}",
        origin.addr(),
        toml_path(&path),
        cert.toml_entry()
    );
    let config = EdgeConfig::from_toml(&toml).unwrap_or_else(|e| panic!("{toml}\n{e}"));
    let edge = RunningNode::start::<EdgeRole>(&config).await;
    let client = TlsClient::builder(&pki.ca_file).alpn(&["h2"]).build();
    let mut connection = client.connect(edge.tls(), "a.test").await;
    assert_eq!(connection.alpn.as_deref(), Some("h2"));
    let response = connection.get("/secure").await;
    assert_eq!(response.status.as_u16(), 200);
    let line = &wait_lines(&path, 1).await[0];
    assert_eq!(line["protocol"], "h2");
    assert_eq!(line["tls"], "TLSv1.3");
    assert_eq!(line["host"], "a.test");
    assert_eq!(line["path"], "/secure");
}

/// A disk that is always full: every write fails.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_full_disk_drops_and_counts_lines_and_the_node_keeps_serving() {
    let origin = cacheable_origin().await;
    let edge = start_edge(origin.addr(), &["access_log.path = \"/dev/full\""]).await;
    let client = HttpClient::http1();
    for _ in 0..3 {
        assert_eq!(client.get(&edge.url("/obj")).await.status.as_u16(), 200);
    }
    wait_until("3 lines dropped", LIMIT, || async {
        edge.metrics()
            .await
            .value_or_zero("verge_access_log_dropped_total", &[])
            == 3.0
    })
    .await;
    let metrics = edge.metrics().await;
    assert_eq!(
        metrics.value_or_zero("verge_access_log_lines_total", &[]),
        0.0
    );
}

#[tokio::test]
async fn a_log_file_that_cannot_be_opened_stops_the_start_naming_it() {
    let origin = FakeOrigin::start().await;
    let toml = support::edge_toml(
        origin.addr(),
        &["access_log.path = \"/nonexistent-verge-dir/access.log\""],
    );
    let config = EdgeConfig::from_toml(&toml).unwrap();
    let Err(error) = support::bind::<EdgeRole>(&config).await else {
        panic!("started with an access log nobody can open");
    };
    let message = error.to_string();
    assert!(
        message.contains("/nonexistent-verge-dir/access.log"),
        "{message}"
    );
}

#[tokio::test]
async fn sigusr1_reopens_the_log_after_it_was_renamed() {
    let origin = cacheable_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir, "access.log");
    let origin_url = format!("http://{}", origin.addr());
    let mut edge = VergeProcess::spawn(&[
        "edge",
        "--origin",
        &origin_url,
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--access-log",
        path.to_str().unwrap(),
    ]);
    let data = edge.logged("serving", "listen=");
    let admin = edge.logged("serving", "admin=");
    edge.wait_healthy(&format!("http://{admin}/healthz"))
        .await
        .unwrap_or_else(|log| panic!("verge edge did not start: {log}"));
    let client = HttpClient::http1();
    client.get(&format!("http://{data}/before")).await;
    wait_lines(&path, 1).await;

    let rotated = log_in(&dir, "access.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    let status = std::process::Command::new("kill")
        .args(["-USR1", &edge.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_until("the access log reopened", LIMIT, || {
        let log = edge.log();
        async move { log.contains("access log reopened") }
    })
    .await;
    client.get(&format!("http://{data}/after")).await;
    let fresh = wait_lines(&path, 1).await;
    assert_eq!(fresh[0]["path"], "/after");
    let old = lines(&rotated);
    assert_eq!(old.len(), 1);
    assert_eq!(old[0]["path"], "/before");
}
