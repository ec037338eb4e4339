//! Reloading control's configuration without a restart, over real sockets: a control started
//! from a file in a temp dir, the file rewritten, then `POST /v1/reload` (or the reloader the
//! binary calls on SIGHUP). Rotated tokens, purge, health and stream settings, region
//! fallbacks and geo steering change in place; invalid files and settings that need a restart
//! change nothing.

use crate::geo_support;
use crate::support;

use std::net::SocketAddr;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::time::Duration;

use geo_support::{geo, get, ip, register_region, wait_until, DnsClient, HealthServer};
use hickory_proto::rr::RecordType;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use support::{closed_admin_url, control_toml, registration, request, within, Reply, TestControl};
use tempfile::TempDir;
use verge_config::reload::{ConfigSource, ReloadError};
use verge_config::{ConfigFile, ControlConfig, ControlQuickStart};
use verge_control::{ControlNode, ControlReloader};

/// The token control starts with (support's, which [`TestControl::admin`] sends), and the one
/// it is rotated to.
const OLD: &str = support::TOKEN;
const NEW: &str = "new-token-0123456789abcdef";

/// A control started from a configuration file, stopped when dropped; its admin and node APIs
/// are [`TestControl`]'s.
struct Reloadable {
    control: TestControl,
    dir: TempDir,
    path: PathBuf,
    dns_addr: Option<SocketAddr>,
    steering_addr: Option<SocketAddr>,
    reloader: ControlReloader,
}

/// Starts control from `control.toml` in a new temp dir, written by `text(dir)`.
async fn start(text: impl FnOnce(&Path) -> String) -> Reloadable {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("control.toml");
    std::fs::write(&path, text(&dir.path().join("data"))).unwrap();
    let config = ControlConfig::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
    let node = within(
        "control start",
        ControlNode::bind_with_source(config, ConfigSource::File(path.clone())),
    )
    .await
    .unwrap_or_else(|e| panic!("control did not start: {e}"));
    Reloadable {
        dns_addr: node.dns_addr,
        steering_addr: node.steering_addr,
        reloader: node.reloader(),
        control: TestControl::spawn(node),
        dir,
        path,
    }
}

/// Starts control with `token` and `extra`.
async fn start_with(token: &str, extra: &str) -> Reloadable {
    let (token, extra) = (token.to_string(), extra.to_string());
    start(move |data| control_toml(data, &token, &extra)).await
}

impl Deref for Reloadable {
    type Target = TestControl;

    fn deref(&self) -> &TestControl {
        &self.control
    }
}

impl Reloadable {
    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Rewrites the file: `token` and `extra` as [`control_toml`] makes them.
    fn rewrite(&self, token: &str, extra: &str) {
        self.write(&control_toml(&self.data_dir(), token, extra));
    }

    /// Replaces the file's contents (by rename, as editors do).
    fn write(&self, text: &str) {
        let next = self.path.with_extension("toml.new");
        std::fs::write(&next, text).unwrap();
        std::fs::rename(&next, &self.path).unwrap();
    }

    /// `POST /v1/reload` with `token`.
    async fn reload(&self, token: &str) -> Reply {
        self.admin_with(token, Method::POST, "/v1/reload", "").await
    }

    /// `POST /v1/reload` that must be applied: its report.
    async fn reload_ok(&self, token: &str) -> Value {
        let reply = self.reload(token).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        reply.json()
    }

    /// `POST /v1/reload` that must be refused: its `{error, errors}` body.
    async fn reload_refused(&self, token: &str) -> Value {
        let reply = self.reload(token).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            reply.text()
        );
        reply.json()
    }

    /// The status of a purge of everything, with `token`.
    async fn purge_as(&self, token: &str) -> StatusCode {
        self.admin_with(token, Method::POST, "/v1/purge", r#"{"all":true}"#)
            .await
            .status
    }

    async fn reloads(&self, result: &str) -> f64 {
        self.metric(&format!(
            "verge_config_reloads_total{{result=\"{result}\"}}"
        ))
        .await
    }

    /// The status of `POST /v1/register` with `body` (where [`TestControl::register`] would
    /// assert success, these tests assert the status themselves).
    async fn register(&self, body: &Value) -> StatusCode {
        self.post_register(body).await.status
    }

    /// `GET /v1/route?ip=...` on the steering listener.
    async fn route(&self, client: &str) -> Value {
        let addr = self.steering_addr.expect("HTTP steering is configured");
        let path = format!("/v1/route?ip={client}&host=cdn.verge.test");
        let reply = get("127.0.0.1", addr, "steer", &path).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        serde_json::from_str(&reply.body).unwrap()
    }

    async fn stop(self) {
        self.control.stop().await;
    }
}

/// The lines of a refusal's `errors`.
fn errors(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors in {body}"))
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect()
}

fn changed(report: &Value) -> Vec<&str> {
    report["changed"]
        .as_array()
        .unwrap_or_else(|| panic!("no changed in {report}"))
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_token_in_the_file_switches_the_purge_api_to_the_new_token() {
    let control = start_with(OLD, "").await;
    assert_eq!(control.purge_as(OLD).await, StatusCode::ACCEPTED);
    assert_eq!(control.purge_as(NEW).await, StatusCode::FORBIDDEN);

    control.rewrite(NEW, "");
    let report = control.reload_ok(OLD).await;
    assert_eq!(
        report,
        json!({"version": 2, "changed": ["controller.token"]})
    );

    assert_eq!(control.purge_as(OLD).await, StatusCode::FORBIDDEN);
    assert_eq!(control.purge_as(NEW).await, StatusCode::ACCEPTED);
    let version = control
        .admin_with(NEW, Method::GET, "/v1/config/version", "")
        .await;
    assert_eq!(version.json(), json!({"version": 2}));
    assert_eq!(control.metric("verge_config_version").await, 2.0);
    control.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_token_file_is_read_again_on_reload() {
    let control = start(|data| {
        let token_file = data.with_file_name("token");
        std::fs::write(&token_file, format!("{OLD}\n")).unwrap();
        control_toml(data, OLD, "").replace(
            &format!("token = {OLD:?}"),
            &format!("token_file = {:?}", token_file.display().to_string()),
        )
    })
    .await;
    assert_eq!(control.purge_as(OLD).await, StatusCode::ACCEPTED);
    std::fs::write(control.dir.path().join("token"), format!("{NEW}\n")).unwrap();
    let report = control.reload_ok(OLD).await;
    assert_eq!(changed(&report), ["controller.token"]);
    assert_eq!(control.purge_as(OLD).await, StatusCode::FORBIDDEN);
    assert_eq!(control.purge_as(NEW).await, StatusCode::ACCEPTED);

    // A token too short to keep: refused, naming the token file; the token in force stays.
    std::fs::write(control.dir.path().join("token"), "short\n").unwrap();
    let refused = control.reload_refused(NEW).await;
    assert_eq!(refused["error"], "invalid");
    assert!(
        errors(&refused)[0].starts_with("controller.token_file"),
        "{refused}"
    );
    assert_eq!(control.purge_as(NEW).await, StatusCode::ACCEPTED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_the_command_line_a_reload_reads_only_the_token_file_again() {
    let dir = TempDir::new().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, OLD).unwrap();
    let data = dir.path().join("data");
    let config = ControlConfig::quick_start(&ControlQuickStart {
        listen: "127.0.0.1:0",
        admin_listen: "127.0.0.1:0",
        token_file: token_file.to_str().unwrap(),
        data_dir: data.to_str().unwrap(),
        node_token_file: None,
        etcd: None,
    })
    .unwrap();
    let node = ControlNode::bind(config).await.unwrap();
    let reloader = node.reloader();
    assert_eq!(reloader.source(), &ConfigSource::CommandLine);
    let control = TestControl::spawn(node);
    let admin = control.admin_addr;

    let unchanged = reloader.reload_async().await.unwrap();
    assert_eq!((unchanged.version, unchanged.changed.len()), (1, 0));
    std::fs::write(&token_file, NEW).unwrap();
    let report = reloader.reload_async().await.unwrap();
    assert_eq!(
        (report.version, report.changed),
        (2, vec!["controller.token".to_string()])
    );
    let purge = |token: &'static str| async move {
        let auth = format!("Bearer {token}");
        request(
            admin,
            Method::POST,
            "/v1/purge",
            &[("authorization", &auth)],
            r#"{"all":true}"#,
        )
        .await
        .status
    };
    assert_eq!(purge(NEW).await, StatusCode::ACCEPTED);
    assert_eq!(purge(OLD).await, StatusCode::FORBIDDEN);

    std::fs::remove_file(&token_file).unwrap();
    match reloader.reload_async().await {
        Err(ReloadError::Invalid {
            source_name,
            errors,
        }) => {
            assert_eq!(source_name, "command line");
            assert!(errors.mentions("controller.token_file"), "{errors}");
        }
        other => panic!("a missing token file must be invalid: {other:?}"),
    }
    assert_eq!(purge(NEW).await, StatusCode::ACCEPTED);
    assert_eq!(reloader.version(), 2);
    control.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_is_refused_with_every_key_and_changes_nothing() {
    let control = start_with(OLD, "").await;

    // A misspelt key.
    control.rewrite(NEW, "[health]\nprobe_intervall = \"1s\"\n");
    let refused = control.reload_refused(OLD).await;
    assert_eq!(refused["error"], "invalid");
    assert!(
        errors(&refused)
            .iter()
            .any(|e| e.starts_with("health.probe_intervall")),
        "{refused}"
    );

    // Bad values: every one is listed by its key path.
    control.rewrite(
        NEW,
        "[health]\nprobe_interval = \"soon\"\n[purge]\nburst = 0\n[regions.us]\nfallback = [\"us\"]\n",
    );
    let refused = control.reload_refused(OLD).await;
    assert_eq!(refused["error"], "invalid");
    let lines = errors(&refused);
    for key in [
        "health.probe_interval",
        "purge.burst",
        "regions.us.fallback[0]",
    ] {
        assert!(
            lines.iter().any(|e| e.starts_with(key)),
            "{key} not in {lines:?}"
        );
    }

    // The reloader names the file too.
    match control.reloader.reload_async().await {
        Err(ReloadError::Invalid { source_name, .. }) => {
            assert_eq!(source_name, control.path.display().to_string())
        }
        other => panic!("expected an invalid file: {other:?}"),
    }
    // A file that is gone.
    std::fs::remove_file(&control.path).unwrap();
    let refused = control.reload_refused(OLD).await;
    assert!(errors(&refused)[0].contains("cannot read"), "{refused}");

    // Nothing was applied: the old token works, the new one does not, the version is 1.
    assert_eq!(control.purge_as(OLD).await, StatusCode::ACCEPTED);
    assert_eq!(control.purge_as(NEW).await, StatusCode::FORBIDDEN);
    assert_eq!(control.metric("verge_config_version").await, 1.0);
    assert_eq!(control.reloads("invalid").await, 4.0);
    assert_eq!(control.reloads("ok").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_listen_needs_a_restart_and_nothing_is_applied() {
    let control = start_with(OLD, "").await;
    let text = control_toml(&control.data_dir(), NEW, "[purge]\nburst = 1\n").replace(
        "listen = \"127.0.0.1:0\"\nadmin",
        "listen = \"127.0.0.1:1\"\nadmin",
    );
    control.write(&text);
    let refused = control.reload_refused(OLD).await;
    assert_eq!(refused["error"], "needs_restart");
    assert_eq!(
        errors(&refused),
        ["controller.listen: cannot change without a restart"]
    );
    // Neither the token nor the burst of the same file was applied.
    for _ in 0..3 {
        assert_eq!(control.purge_as(OLD).await, StatusCode::ACCEPTED);
    }
    assert_eq!(control.purge_as(NEW).await, StatusCode::FORBIDDEN);
    assert_eq!(control.metric("verge_config_version").await, 1.0);
    assert_eq!(control.reloads("needs_restart").await, 1.0);

    // The data directory and the purge log's retention are fixed at start too.
    let moved = control_toml(
        &control.dir.path().join("elsewhere"),
        OLD,
        "[purge]\nlog_retain = 9\n",
    );
    control.write(&moved);
    let refused = control.reload_refused(OLD).await;
    let lines = errors(&refused);
    assert!(lines[0].starts_with("controller.data_dir"), "{lines:?}");
    assert!(lines[1].starts_with("purge.log_retain"), "{lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_a_region_fallback_publishes_a_new_routing_table_version() {
    let regions = |us: &str| {
        format!("[regions.us]\nfallback = {us}\n[regions.eu]\nfallback = []\n[regions.ap]\nfallback = []\n")
    };
    let control = start_with(OLD, &regions(r#"["eu", "ap"]"#)).await;
    let (admin_url, _held) = closed_admin_url();
    assert_eq!(
        control
            .register(&registration("e1", "edge", &admin_url))
            .await,
        StatusCode::OK
    );
    let mut stream = control.events("e1", None).await;
    let first = stream.expect_routing().await;
    let before = control.routing().await;
    assert_eq!(before["version"], first.version);
    let us = |table: &Value| {
        table["regions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == "us")
            .unwrap()["fallback"]
            .clone()
    };
    assert_eq!(us(&before), json!(["eu", "ap"]));

    control.rewrite(OLD, &regions(r#"["ap", "eu"]"#));
    let report = control.reload_ok(OLD).await;
    assert_eq!(changed(&report), ["regions"]);
    let after = control.routing().await;
    assert_eq!(after["version"], first.version + 1);
    assert_eq!(us(&after), json!(["ap", "eu"]));
    assert_eq!(
        control.metric("verge_routing_table_version").await,
        (first.version + 1) as f64
    );
    // The node is pushed the new table.
    let pushed = stream.expect_routing().await;
    assert_eq!(pushed.version, first.version + 1);
    let fallback: Vec<&str> = pushed
        .regions
        .iter()
        .find(|r| r.id.as_str() == "us")
        .unwrap()
        .fallback
        .iter()
        .map(|r| r.as_str())
        .collect();
    assert_eq!(fallback, ["ap", "eu"]);

    // A change that routes alike (a region listed with its default order) is no new version.
    control.rewrite(
        OLD,
        &regions(r#"["ap", "eu"]"#).replace(
            "[regions.eu]\nfallback = []",
            "[regions.eu]\nfallback = [\"ap\"]",
        ),
    );
    let report = control.reload_ok(OLD).await;
    assert_eq!(changed(&report), ["regions"]);
    assert_eq!(control.routing().await["version"], first.version + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_geo_change_moves_steering_answers_after_reload() {
    let control = start_with(OLD, &geo()).await;
    let health = HealthServer::start().await;
    register_region(&control, "us", 2, &health.url).await;
    register_region(&control, "ap", 1, &health.url).await;
    let dns_addr = control.dns_addr.expect("DNS is configured");
    let dns = DnsClient::bind("127.1.3.3", dns_addr).await;
    assert_eq!(
        dns.addresses("cdn.verge.test.", RecordType::A).await.len(),
        2
    );
    let us = control.route("127.1.0.9").await;
    assert_eq!(us["edges"].as_array().unwrap().len(), 2, "{us}");
    let eu = control.route("127.2.0.9").await;
    assert_eq!(
        (&eu["region"], &eu["source"]),
        (&json!("eu"), &json!("cidr"))
    );

    // One answer per name, and 127.2/16 moves to ap.
    let moved = geo()
        .replace("max_answers = 2", "max_answers = 1")
        .replace("[\"127.2.0.0/16\", ", "[")
        .replace("[\"127.3.0.0/16\"]", "[\"127.3.0.0/16\", \"127.2.0.0/16\"]");
    control.rewrite(OLD, &moved);
    let report = control.reload_ok(OLD).await;
    assert_eq!(report, json!({"version": 2, "changed": ["geo"]}));

    let us = control.route("127.1.0.9").await;
    assert_eq!(us["edges"].as_array().unwrap().len(), 1, "{us}");
    let moved = control.route("127.2.0.9").await;
    assert_eq!(
        (&moved["region"], &moved["answer_region"]),
        (&json!("ap"), &json!("ap")),
        "{moved}"
    );
    assert_eq!(moved["edges"][0]["id"], "ap-1");
    assert_eq!(
        dns.addresses("cdn.verge.test.", RecordType::A).await.len(),
        1
    );
    let from_eu = DnsClient::bind("127.2.3.3", dns_addr).await;
    assert_eq!(
        from_eu.addresses("cdn.verge.test.", RecordType::A).await,
        [ip("127.3.0.1")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_geoip_database_that_cannot_be_loaded_is_refused_and_nothing_changes() {
    let control = start_with(OLD, &geo()).await;
    let missing = control.dir.path().join("missing.mmdb");
    let text = geo().replace(
        "default_region = \"us\"",
        &format!(
            "default_region = \"us\"\ngeoip_db = {:?}",
            missing.display().to_string()
        ),
    );
    control.rewrite(NEW, &text);
    let refused = control.reload_refused(OLD).await;
    assert_eq!(refused["error"], "failed");
    let lines = errors(&refused);
    assert!(lines[0].contains("geo.geoip_db"), "{lines:?}");
    assert!(lines[0].contains("missing.mmdb"), "{lines:?}");
    assert_eq!(control.purge_as(OLD).await, StatusCode::ACCEPTED);
    assert_eq!(control.purge_as(NEW).await, StatusCode::FORBIDDEN);
    assert_eq!(control.reloads("failed").await, 1.0);
    assert_eq!(control.metric("verge_config_version").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_without_the_token_is_refused_and_reads_nothing() {
    let control = start_with(OLD, "").await;
    control.rewrite(NEW, "");
    let missing = control.admin_as(None, Method::POST, "/v1/reload", "").await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert!(missing
        .header("www-authenticate")
        .is_some_and(|c| c.starts_with("Bearer")));
    let wrong = control.reload(NEW).await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    let version = control
        .admin_as(None, Method::GET, "/v1/config/version", "")
        .await;
    assert_eq!(version.status, StatusCode::UNAUTHORIZED);
    let get = control.admin_with(OLD, Method::GET, "/v1/reload", "").await;
    assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED);

    assert_eq!(control.purge_as(OLD).await, StatusCode::ACCEPTED);
    for result in ["ok", "unchanged", "invalid", "needs_restart", "failed"] {
        assert_eq!(control.reloads(result).await, 0.0, "{result}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_an_unchanged_file_changes_nothing_and_keeps_the_version() {
    let control = start_with(OLD, "").await;
    let report = control.reload_ok(OLD).await;
    assert_eq!(report, json!({"version": 1, "changed": []}));

    control.rewrite(OLD, "[purge]\nburst = 5\n");
    assert_eq!(
        control.reload_ok(OLD).await,
        json!({"version": 2, "changed": ["purge"]})
    );
    assert_eq!(
        control.reload_ok(OLD).await,
        json!({"version": 2, "changed": []})
    );
    assert_eq!(control.reloader.version(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reload_metrics_count_each_result() {
    let geo = geo();
    let control = start_with(OLD, &geo).await;
    assert_eq!(control.metric("verge_config_version").await, 1.0);
    for result in ["ok", "unchanged", "invalid", "needs_restart", "failed"] {
        assert_eq!(control.reloads(result).await, 0.0, "{result}");
    }
    control.reload_ok(OLD).await;
    control.reload_ok(OLD).await;
    control.rewrite(OLD, &format!("{geo}\n[streams]\nmax_nodes = 10\n"));
    control.reload_ok(OLD).await;
    control.rewrite(OLD, "[health]\nrise = none\n");
    control.reload_refused(OLD).await;
    control.rewrite(OLD, &geo.replace("http_listen = \"127.0.0.1:0\"\n", ""));
    control.reload_refused(OLD).await;
    control.rewrite(
        OLD,
        &geo.replace(
            "zone = \"verge.test\"",
            "zone = \"verge.test\"\ngeoip_db = \"/nonexistent/db.mmdb\"",
        ),
    );
    control.reload_refused(OLD).await;

    assert_eq!(control.reloads("unchanged").await, 2.0);
    assert_eq!(control.reloads("ok").await, 1.0);
    assert_eq!(control.reloads("invalid").await, 1.0);
    assert_eq!(control.reloads("needs_restart").await, 1.0);
    assert_eq!(control.reloads("failed").await, 1.0);
    assert_eq!(control.metric("verge_config_version").await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_health_and_stream_settings_apply_without_a_restart() {
    let health = "[health]\nheartbeat_interval = \"100ms\"\nheartbeat_timeout = \"200ms\"\n\
                  probe_interval = \"50ms\"\nprobe_timeout = \"100ms\"\nrise = 1\n";
    let limits = "[purge]\nrate_per_second = 1\nburst = 1\n[streams]\nmax_nodes = 1\n";
    let control = start_with(OLD, &format!("{health}fall = 100\n{limits}")).await;
    assert_eq!(control.purge_as(OLD).await, StatusCode::ACCEPTED);
    assert_eq!(control.purge_as(OLD).await, StatusCode::TOO_MANY_REQUESTS);
    let (dead, _held) = closed_admin_url();
    assert_eq!(
        control.register(&registration("e1", "edge", &dead)).await,
        StatusCode::OK
    );
    assert_eq!(
        control.register(&registration("e2", "edge", &dead)).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let e1_is = |healthy: bool| {
        let control = &control;
        async move { control.routing().await["regions"][0]["edges"][0]["healthy"] == healthy }
    };
    assert!(e1_is(true).await);

    let limits = "[purge]\nrate_per_second = 1\nburst = 3\n[streams]\nmax_nodes = 2\n";
    control.rewrite(OLD, &format!("{health}fall = 1\n{limits}"));
    let report = control.reload_ok(OLD).await;
    assert_eq!(changed(&report), ["health", "purge", "streams"]);
    // A fresh bucket with the new burst (the old one held a single token).
    for _ in 0..3 {
        assert_eq!(control.purge_as(OLD).await, StatusCode::ACCEPTED);
    }
    assert_eq!(
        control.register(&registration("e2", "edge", &dead)).await,
        StatusCode::OK
    );
    // The health loop's next round uses fall = 1: the unreachable, silent node goes down
    // (it would take 100 rounds, 5s, before).
    wait_until("e1 down with the new fall", Duration::from_secs(2), || {
        e1_is(false)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reloads_apply_a_change_once() {
    let control = start_with(OLD, "").await;
    control.rewrite(NEW, "");
    let reloader = control.reloader.clone();
    let outcomes = tokio::task::spawn_blocking(move || {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..4).map(|_| s.spawn(|| reloader.reload())).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap().unwrap())
                .collect::<Vec<_>>()
        })
    })
    .await
    .unwrap();
    let applied: Vec<_> = outcomes.iter().filter(|r| !r.changed.is_empty()).collect();
    assert_eq!(applied.len(), 1, "{outcomes:?}");
    assert!(outcomes.iter().all(|r| r.version == 2), "{outcomes:?}");
    assert_eq!(control.reloads("unchanged").await, 3.0);
    assert_eq!(control.purge_as(NEW).await, StatusCode::ACCEPTED);
}

#[test]
fn the_reloader_is_a_cheap_shared_handle() {
    fn shared<T: Clone + Send + Sync + 'static>() {}
    shared::<ControlReloader>();
}
