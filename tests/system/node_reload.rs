//! Configuration reload of edge and shield nodes, end to end over loopback: a node started
//! from a file re-reads it on `POST /v1/reload` (or its reload handle) and applies the change
//! at once without failing a request, refuses an invalid file or a change that needs a restart
//! while the old configuration keeps serving, and closes a listener the new file drops while
//! the requests already on it finish.

use verge_testkit as support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use support::pki::{CertFiles, TestPki, TlsClient};
use support::{wait_until, within, FakeOrigin, HttpClient, Reply};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use verge_config::{ConfigFile, EdgeConfig, ShieldConfig};
use verge_edge::EdgeRole;
use verge_node::ListenerKind;
use verge_origin_shield::ShieldRole;
use verge_testkit::RunningNode;

/// Bound on conditions that depend on the product (a listener closing, misses moving).
const CONDITION_LIMIT: Duration = Duration::from_secs(5);

const OLD_TOKEN: &str = "old-admin-token-0123456789";
const NEW_TOKEN: &str = "new-admin-token-9876543210";

/// `POST /v1/reload` on `node` with this bearer token: the status and the JSON body (`Null`
/// when the body is not JSON).
async fn reload(node: &RunningNode, token: &str) -> (u16, Value) {
    let response = node.reload(token).await;
    let body = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    (response.status.as_u16(), body)
}

/// `POST /v1/purge` of one URL on `node` with this bearer token: the status.
async fn purge(node: &RunningNode, token: &str) -> u16 {
    let authorization = format!("Bearer {token}");
    HttpClient::http1()
        .request(
            "POST",
            &node.admin_url("/v1/purge"),
            &[
                ("authorization", authorization.as_str()),
                ("content-type", "application/json"),
            ],
            r#"{"urls":["http://www.example.test/nothing"]}"#,
        )
        .await
        .status
        .as_u16()
}

/// Writes `text` to `path` by a rename, so a reload never reads half a file.
fn write_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The settings of an edge's configuration file that the tests change.
#[derive(Clone)]
struct EdgeFile {
    id: String,
    origin: SocketAddr,
    max_bytes: String,
    max_connections: usize,
    token: String,
    /// HTTPS listeners; none: no `[tls]` table.
    tls_listen: Vec<SocketAddr>,
    cert: Option<CertFiles>,
    /// Raw lines appended to `[server]` (to make the file invalid).
    server_extra: Vec<String>,
    connect_timeout: String,
}

impl EdgeFile {
    fn new(origin: SocketAddr) -> EdgeFile {
        EdgeFile {
            id: "edge-reload".to_string(),
            origin,
            max_bytes: "64MiB".to_string(),
            max_connections: 1000,
            token: OLD_TOKEN.to_string(),
            tls_listen: Vec::new(),
            cert: None,
            server_extra: Vec::new(),
            connect_timeout: "1s".to_string(),
        }
    }

    fn render(&self) -> String {
        let mut toml = format!(
            "[edge]\nid = {:?}\n\
             [server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
             shutdown_grace = \"2s\"\nmax_connections = {}\n{}\n\
             [cache]\nmax_bytes = {:?}\n\
             [admin]\ntoken = {:?}\n\
             [upstream]\norigin = \"http://{}\"\nconnect_timeout = {:?}\nresponse_timeout = \"5s\"\n",
            self.id,
            self.max_connections,
            self.server_extra.join("\n"),
            self.max_bytes,
            self.token,
            self.origin,
            self.connect_timeout,
        );
        if !self.tls_listen.is_empty() {
            let listen: Vec<String> = self.tls_listen.iter().map(|a| format!("\"{a}\"")).collect();
            toml.push_str(&format!("[tls]\nlisten = [{}]\n", listen.join(", ")));
            toml.push_str(
                &self
                    .cert
                    .as_ref()
                    .expect("a certificate for [tls]")
                    .toml_entry(),
            );
        }
        toml
    }
}

/// An edge started from `file` written to `path`: reloads read it again.
async fn start_edge_from(path: &Path, file: &EdgeFile) -> RunningNode {
    write_file(path, &file.render());
    let config = EdgeConfig::from_file(path)
        .unwrap_or_else(|e| panic!("test config is invalid:\n{}\n{e}", file.render()));
    RunningNode::start_from::<EdgeRole>(&config, path).await
}

/// Two origins serving the same paths: `/c/...` cacheable, `/u/...` never stored.
async fn twin_origins() -> (FakeOrigin, FakeOrigin) {
    let first = FakeOrigin::start().await;
    let second = FakeOrigin::start().await;
    for origin in [&first, &second] {
        origin.on_prefix("/c/", Reply::ok("cached").cache_control("max-age=300"));
        origin.on_prefix("/u/", Reply::ok("fresh").cache_control("no-store"));
    }
    (first, second)
}

/// Whether a reload report's `changed` names one of `any_of`: an entry equal to it, or whose
/// group (the first word, before a `.` or a space) is it — `cache` for `cache size`, `tls` for
/// `tls.certificates`.
fn names(report: &Value, any_of: &[&str]) -> bool {
    report["changed"].as_array().is_some_and(|changed| {
        changed.iter().filter_map(Value::as_str).any(|entry| {
            let group = entry.split(['.', ' ']).next().unwrap_or_default();
            any_of.iter().any(|name| entry == *name || group == *name)
        })
    })
}

/// The `errors` of a refused reload, joined.
fn refusal_errors(body: &Value) -> String {
    body["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e.as_str().unwrap_or_default().to_string())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// What the steady clients saw.
#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    failures: Mutex<Vec<String>>,
}

/// `tasks` clients sending GETs one after another to `edge` until `stop`: every third path is
/// uncached (`/u/<task>-<n>`, a miss each time), the others cycle over ten cached paths.
fn steady_clients(
    edge: SocketAddr,
    tasks: usize,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> Vec<JoinHandle<()>> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    (0..tasks)
        .map(|task| {
            let (client, stop, tally) = (client.clone(), Arc::clone(&stop), Arc::clone(&tally));
            tokio::spawn(async move {
                let mut n = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    let path = if n % 3 == 0 {
                        format!("/u/{task}-{n}")
                    } else {
                        format!("/c/{}", n % 10)
                    };
                    n += 1;
                    let request = Request::get(format!("http://{edge}{path}"))
                        .header("host", "www.example.test")
                        .body(Full::default())
                        .unwrap();
                    let outcome = tokio::time::timeout(support::IO_TIMEOUT, async {
                        let response = client
                            .request(request)
                            .await
                            .map_err(|e| format!("{e:?}"))?;
                        let status = response.status();
                        response
                            .into_body()
                            .collect()
                            .await
                            .map_err(|e| format!("{e:?}"))?;
                        Ok::<_, String>(status)
                    })
                    .await;
                    match outcome {
                        Ok(Ok(status)) if status == 200 => {
                            tally.ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(Ok(status)) => tally
                            .failures
                            .lock()
                            .unwrap()
                            .push(format!("{path}: {status}")),
                        Ok(Err(error)) => tally
                            .failures
                            .lock()
                            .unwrap()
                            .push(format!("{path}: {error}")),
                        Err(_) => tally
                            .failures
                            .lock()
                            .unwrap()
                            .push(format!("{path}: timed out")),
                    }
                }
            })
        })
        .collect()
}

#[tokio::test]
async fn reloads_under_steady_traffic_apply_every_change_without_failing_a_request() {
    let (first, second) = twin_origins().await;
    let pki = TestPki::new("reload");
    let cert = pki.server_cert("edge", &["127.0.0.1", "edge.test"]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.toml");
    let mut file = EdgeFile::new(first.addr());
    let edge = start_edge_from(&path, &file).await;
    assert!(edge.tls_addrs.is_empty(), "no HTTPS listener at first");

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let started = tokio::time::Instant::now();
    let clients = steady_clients(edge.data_addr, 4, Arc::clone(&stop), Arc::clone(&tally));
    wait_until("the clients under way", CONDITION_LIMIT, || async {
        tally.ok.load(Ordering::SeqCst) >= 40
    })
    .await;

    // 1: a smaller cache.
    file.max_bytes = "32MiB".to_string();
    write_file(&path, &file.render());
    let (status, report) = reload(&edge, OLD_TOKEN).await;
    assert_eq!(status, 200, "{report}");
    assert!(names(&report, &["cache"]), "{report}");
    assert_eq!(report["version"], 2, "{report}");

    // 2: another origin, another connection limit.
    file.origin = second.addr();
    file.max_connections = 500;
    write_file(&path, &file.render());
    let (status, report) = reload(&edge, OLD_TOKEN).await;
    assert_eq!(status, 200, "{report}");
    assert!(names(&report, &["upstream"]), "{report}");
    assert!(names(&report, &["server.max_connections"]), "{report}");
    assert!(!names(&report, &["cache"]), "only what changed: {report}");
    assert_eq!(report["version"], 3, "{report}");
    let probe = HttpClient::http1().get(&edge.url("/u/probe")).await;
    assert_eq!(probe.status, 200);
    assert_eq!(
        second.hits("/u/probe"),
        1,
        "a miss after the reload goes to the new origin"
    );
    assert_eq!(first.hits("/u/probe"), 0);
    let second_before = second.total_hits();
    wait_until(
        "the clients' misses reach the new origin",
        CONDITION_LIMIT,
        || async { second.total_hits() >= second_before + 20 },
    )
    .await;
    let first_after = first.total_hits();

    // 3: a new admin token and an HTTPS listener.
    file.token = NEW_TOKEN.to_string();
    file.tls_listen = vec!["127.0.0.1:0".parse().unwrap()];
    file.cert = Some(cert);
    write_file(&path, &file.render());
    let (status, report) = reload(&edge, OLD_TOKEN).await;
    assert_eq!(status, 200, "{report}");
    assert!(names(&report, &["admin"]), "{report}");
    assert!(names(&report, &["tls", "listeners"]), "{report}");
    assert_eq!(report["version"], 4, "{report}");
    assert_eq!(
        reload(&edge, OLD_TOKEN).await.0,
        403,
        "the old token is refused"
    );
    let (status, report) = reload(&edge, NEW_TOKEN).await;
    assert_eq!(status, 200, "the new token is accepted: {report}");
    assert_eq!(
        report["changed"],
        Value::Array(Vec::new()),
        "nothing changed since"
    );
    assert_eq!(report["version"], 4, "an unchanged file is no new version");
    let tls_addr = edge.listeners.of(ListenerKind::Tls)[0];
    let secure = TlsClient::new(&pki)
        .get(tls_addr, "127.0.0.1", "/c/1")
        .await;
    assert_eq!(
        secure.status,
        200,
        "the new HTTPS listener answers: {}",
        secure.text()
    );

    // Keep the traffic going for about two seconds in all.
    tokio::time::sleep_until(started + Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        within("a steady client stopping", support::IO_TIMEOUT, client)
            .await
            .unwrap();
    }
    let failures = tally.failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "failed requests during reloads: {failures:?}"
    );
    assert!(
        tally.ok.load(Ordering::SeqCst) > 100,
        "the clients kept sending"
    );
    assert_eq!(
        first.total_hits(),
        first_after,
        "once misses reached the new origin, the old one got none"
    );
    let metrics = edge.metrics().await;
    assert_eq!(metrics.value("verge_config_version", &[]), Some(4.0));
    assert_eq!(
        metrics.value_or_zero("verge_config_reloads_total", &[("result", "ok")]),
        3.0
    );
}

#[tokio::test]
async fn an_invalid_reload_or_one_needing_a_restart_is_refused_and_changes_nothing() {
    let (first, second) = twin_origins().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.toml");
    let good = EdgeFile::new(first.addr());
    let edge = start_edge_from(&path, &good).await;
    let version = || async {
        edge.metrics()
            .await
            .value("verge_config_version", &[])
            .unwrap()
    };
    let version_before = version().await;

    // An unknown key, then a bad duration, each beside changes that would otherwise apply.
    // (An unknown key stops parsing, so it is reported alone, by its name.)
    let mut unknown_key = good.clone();
    unknown_key.origin = second.addr();
    unknown_key.token = NEW_TOKEN.to_string();
    unknown_key.server_extra = vec!["no_such_setting = 1".to_string()];
    let mut bad_duration = unknown_key.clone();
    bad_duration.server_extra.clear();
    bad_duration.connect_timeout = "soon".to_string();
    for (invalid, key) in [
        (&unknown_key, "no_such_setting"),
        (&bad_duration, "upstream.connect_timeout"),
    ] {
        write_file(&path, &invalid.render());
        let (status, body) = reload(&edge, OLD_TOKEN).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"], "invalid", "{body}");
        let errors = refusal_errors(&body);
        assert!(errors.contains(key), "{key} not named in: {errors}");
    }

    let response = HttpClient::http1().get(&edge.url("/u/after-invalid")).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        first.hits("/u/after-invalid"),
        1,
        "the old origin still serves"
    );
    assert_eq!(second.total_hits(), 0);
    assert_eq!(
        purge(&edge, OLD_TOKEN).await,
        200,
        "the old token still works"
    );
    assert_eq!(purge(&edge, NEW_TOKEN).await, 403);
    assert_eq!(
        version().await,
        version_before,
        "no new configuration version"
    );

    // A new node id needs a restart: refused whole, even the token change beside it.
    let mut restart = good.clone();
    restart.id = "edge-renamed".to_string();
    restart.token = NEW_TOKEN.to_string();
    write_file(&path, &restart.render());
    let (status, body) = reload(&edge, OLD_TOKEN).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"], "needs_restart", "{body}");
    let errors = refusal_errors(&body);
    assert!(
        errors.contains("edge.id"),
        "the key path is named: {errors}"
    );
    assert!(
        !errors.contains("admin.token"),
        "the token can change: {errors}"
    );
    assert_eq!(
        purge(&edge, OLD_TOKEN).await,
        200,
        "the token was not changed"
    );
    assert_eq!(purge(&edge, NEW_TOKEN).await, 403);
    assert_eq!(version().await, version_before);

    let metrics = edge.metrics().await;
    for (result, count) in [("invalid", 2.0), ("needs_restart", 1.0), ("ok", 0.0)] {
        assert_eq!(
            metrics.value_or_zero("verge_config_reloads_total", &[("result", result)]),
            count,
            "{result}"
        );
    }
}

#[tokio::test]
async fn a_listener_removed_by_reload_refuses_new_connections_and_finishes_its_requests() {
    let origin = FakeOrigin::start().await;
    origin.on("/quick", Reply::ok("quick").cache_control("no-store"));
    origin.on(
        "/slow",
        Reply::ok("slow")
            .cache_control("no-store")
            .delay(Duration::from_millis(800)),
    );
    let pki = TestPki::new("listeners");
    let cert = pki.server_cert("edge", &["127.0.0.1"]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.toml");
    // Port 0 on two loopback addresses: the kernel picks each port as the node binds.
    let (keep, remove): (SocketAddr, SocketAddr) = (
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.2:0".parse().unwrap(),
    );
    let mut file = EdgeFile::new(origin.addr());
    file.tls_listen = vec![keep, remove];
    file.cert = Some(cert);
    let edge = start_edge_from(&path, &file).await;
    let [kept, removed] = edge.tls_addrs[..] else {
        panic!("both HTTPS listeners are up: {:?}", edge.tls_addrs);
    };
    assert_eq!((kept.ip(), removed.ip()), (keep.ip(), remove.ip()));

    let client = TlsClient::builder(&pki.ca_file).alpn(&["http/1.1"]).build();
    let mut connection = client.connect(removed, "127.0.0.1").await;
    assert_eq!(
        connection.get("/quick").await.status,
        200,
        "keep-alive before the reload"
    );
    let in_flight = tokio::spawn(async move { connection.get("/slow").await });
    wait_until(
        "the slow request at the origin",
        CONDITION_LIMIT,
        || async { origin.hits("/slow") == 1 },
    )
    .await;

    file.tls_listen = vec![keep];
    write_file(&path, &file.render());
    let reloader = Arc::clone(&edge.reloader);
    let report = tokio::task::spawn_blocking(move || reloader.reload())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("reload refused: {e}"));
    let report = serde_json::to_value(&report).unwrap();
    assert!(names(&report, &["tls", "listeners"]), "{report}");

    wait_until(
        "the removed listener refusing connections",
        CONDITION_LIMIT,
        || async {
            matches!(
                TcpStream::connect(removed).await,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
            )
        },
    )
    .await;
    let slow = within("the in-flight request", support::IO_TIMEOUT, in_flight)
        .await
        .unwrap();
    assert_eq!(
        slow.status, 200,
        "the request in flight on the removed listener finishes"
    );
    assert_eq!(slow.text(), "slow");
    let response = client.get(kept, "127.0.0.1", "/quick").await;
    assert_eq!(response.status, 200, "the kept listener still answers");
}

/// A shield configuration file in front of `origins`.
fn shield_toml(origins: &[SocketAddr]) -> String {
    let servers: Vec<String> = origins.iter().map(|o| format!("\"http://{o}\"")).collect();
    format!(
        "[shield]\nid = \"shield-reload\"\nregion = \"us\"\n\
         [server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nshutdown_grace = \"1s\"\n\
         [admin]\ntoken = \"{OLD_TOKEN}\"\n\
         [origin]\nservers = [{}]\n",
        servers.join(", ")
    )
}

async fn start_shield_from(path: &Path, toml: &str) -> RunningNode {
    write_file(path, toml);
    let config = ShieldConfig::from_file(path)
        .unwrap_or_else(|e| panic!("test shield config is invalid:\n{toml}\n{e}"));
    RunningNode::start_from::<ShieldRole>(&config, path).await
}

#[tokio::test]
async fn a_shield_reload_sends_misses_to_the_new_origin_servers() {
    let (first, second) = twin_origins().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shield.toml");
    let shield = start_shield_from(&path, &shield_toml(&[first.addr()])).await;
    let client = HttpClient::http1();

    assert_eq!(client.get(&shield.url("/c/kept")).await.status, 200);
    assert_eq!(first.hits("/c/kept"), 1);

    write_file(&path, &shield_toml(&[second.addr()]));
    let (status, report) = reload(&shield, OLD_TOKEN).await;
    assert_eq!(status, 200, "{report}");
    assert!(names(&report, &["origin"]), "{report}");

    let response = client.get(&shield.url("/u/after")).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        second.hits("/u/after"),
        1,
        "the miss goes to the new origin server"
    );
    assert_eq!(first.hits("/u/after"), 0);
    let cached = client.get(&shield.url("/c/kept")).await;
    assert_eq!(cached.status, 200);
    assert_eq!(
        first.hits("/c/kept") + second.hits("/c/kept"),
        1,
        "the cache survives the reload"
    );
}
