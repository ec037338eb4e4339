//! Changing a running node's configuration as an operator does: the real `verge edge` (and
//! `verge control`) reloading its file on SIGHUP, on `verge reload`, and when the file changes;
//! HTTPS from the quick-start flags.
//!
//! Every listener is configured on port 0, so the kernel picks it as the process binds; the
//! test reads the addresses from the process's `serving` log line. A rewritten file names the
//! same `127.0.0.1:0` listeners, so a reload keeps them.

#![cfg(unix)]

use verge_testkit as support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use support::pki::{TestPki, TlsClient};
use support::{wait_until, FakeOrigin, Metrics, Reply};

use crate::process::VergeProcess;

const DEADLINE: Duration = Duration::from_secs(20);
const OLD_TOKEN: &str = "old-admin-token-0123456789";
const NEW_TOKEN: &str = "new-admin-token-9876543210";

/// One request on a new connection: status and body, or why there is none (never panics).
async fn request(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: &str,
) -> Result<(u16, String), String> {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut builder = http::Request::builder().method(method).uri(url);
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    let request = builder
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| format!("{e:?}"))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{e:?}"))?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| format!("{method} {url}: no answer within 10s"))?
}

async fn get_text(url: &str) -> (u16, String) {
    request("GET", url, None, "")
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// `POST /v1/purge` of everything with `token`; the status.
async fn purge_status(admin: &str, token: &str) -> u16 {
    let url = format!("{admin}/v1/purge");
    request("POST", &url, Some(token), r#"{"all":true}"#)
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"))
        .0
}

/// An origin answering every path with `body`, cacheable.
async fn origin_saying(body: &'static str) -> FakeOrigin {
    let origin = FakeOrigin::start().await;
    origin.on_prefix("/", Reply::ok(body).cache_control("max-age=3600"));
    origin
}

/// `verge ROLE --config FILE` with its listeners on port 0, and the file it runs from.
struct FileNode {
    process: VergeProcess,
    file: PathBuf,
    /// Where clients connect, `127.0.0.1:PORT`.
    data: String,
    /// Where the admin API listens, `127.0.0.1:PORT`.
    admin: String,
    _dir: tempfile::TempDir,
}

impl FileNode {
    /// Starts `verge ROLE --config FILE` with `text` as the file; returns once it is healthy.
    async fn start(role: &str, text: String) -> FileNode {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(format!("{role}.toml"));
        std::fs::write(&file, text).unwrap();
        let mut process = VergeProcess::spawn(&[role, "--config", path_str(&file)]);
        let data = process.logged("serving", "listen=");
        let admin = process.logged("serving", "admin=");
        if let Err(log) = process
            .wait_healthy(&format!("http://{admin}/healthz"))
            .await
        {
            panic!("verge {role} did not start: {log}");
        }
        FileNode {
            process,
            file,
            data,
            admin,
            _dir: dir,
        }
    }

    /// An edge whose file sends misses to `origin` and accepts `token`.
    async fn edge(origin: &FakeOrigin, token: &str) -> FileNode {
        FileNode::start("edge", edge_toml(origin, token, "")).await
    }

    fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }

    fn data_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.data)
    }

    /// Replaces the file with `text`, by rename as editors and config managers do: never read
    /// half-written.
    fn rewrite_with(&self, text: String) {
        let temp = self.file.with_extension("toml.new");
        std::fs::write(&temp, text).unwrap();
        std::fs::rename(&temp, &self.file).unwrap();
    }

    /// Rewrites an edge's file with the same listeners and these settings.
    fn rewrite(&self, origin: &FakeOrigin, token: &str, extra: &str) {
        self.rewrite_with(edge_toml(origin, token, extra));
    }

    async fn metrics(&self) -> Metrics {
        let (status, text) = get_text(&format!("{}/metrics", self.admin_url())).await;
        assert_eq!(status, 200);
        Metrics::parse(&text)
    }

    async fn config_version(&self) -> f64 {
        self.metrics()
            .await
            .value_or_zero("verge_config_version", &[])
    }

    async fn wait_version(&self, version: f64, what: &str) {
        wait_until(what, DEADLINE, || async {
            self.config_version().await == version
        })
        .await;
    }
}

fn edge_toml(origin: &FakeOrigin, token: &str, extra: &str) -> String {
    format!(
        "[edge]\nid = \"reload-test\"\n\n\
         [server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
         worker_threads = 2\n\n\
         [upstream]\norigin = \"http://{}\"\n\n\
         [admin]\ntoken = \"{token}\"\n\n{extra}",
        origin.addr()
    )
}

fn shield_toml(origin: &FakeOrigin, max_bytes: &str) -> String {
    format!(
        "[shield]\nid = \"reload-shield\"\n\n\
         [server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
         worker_threads = 2\n\n\
         [cache]\nmax_bytes = \"{max_bytes}\"\n\n\
         [origin]\nservers = [\"http://{}\"]\n\n\
         [admin]\ntoken = \"{OLD_TOKEN}\"\n",
        origin.addr()
    )
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// Runs `verge ARGS` to completion (at most [`DEADLINE`]) off the test's runtime.
/// `verge edge` quick-start arguments for `origin` with loopback data, admin and HTTPS
/// listeners on port 0, then `rest`.
fn tls_edge_args<'a>(origin: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "edge",
        "--origin",
        origin,
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--tls-listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(rest);
    args
}

async fn verge(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_verge"))
            .args(&args)
            .env_remove("VERGE_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > DEADLINE {
                let _ = child.kill();
                panic!("verge {args:?} still running after {DEADLINE:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_new_admin_token_and_origin() {
    let (old_origin, new_origin) = (origin_saying("old").await, origin_saying("new").await);
    let edge = FileNode::edge(&old_origin, OLD_TOKEN).await;
    assert_eq!(
        get_text(&edge.data_url("/before")).await,
        (200, "old".into())
    );
    assert_eq!(edge.config_version().await, 1.0);
    assert_eq!(purge_status(&edge.admin_url(), OLD_TOKEN).await, 200);

    edge.rewrite(&new_origin, NEW_TOKEN, "");
    edge.process.hangup();
    edge.wait_version(2.0, "verge_config_version 2 after SIGHUP")
        .await;

    assert_eq!(purge_status(&edge.admin_url(), NEW_TOKEN).await, 200);
    assert_eq!(purge_status(&edge.admin_url(), OLD_TOKEN).await, 403);
    assert_eq!(
        get_text(&edge.data_url("/after")).await,
        (200, "new".into())
    );
    assert_eq!(new_origin.hits("/after"), 1);
    assert_eq!(old_origin.hits("/after"), 0);
    let metrics = edge.metrics().await;
    assert_eq!(
        metrics.value_or_zero("verge_config_reloads_total", &[("result", "ok")]),
        1.0,
        "{}",
        metrics.text()
    );
    assert!(
        edge.process.log().contains("SIGHUP") || edge.process.log().contains("reload"),
        "the reload is logged:\n{}",
        edge.process.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verge_reload_prints_the_changes_refuses_an_invalid_file_and_names_a_wrong_token() {
    let origins = [origin_saying("a").await, origin_saying("b").await];
    let edge = FileNode::edge(&origins[0], OLD_TOKEN).await;
    let admin = edge.admin_url();
    let reload = |token: &'static str| {
        let admin = admin.clone();
        async move { verge(&["reload", "--admin", &admin, "--token", token]).await }
    };

    // The file watcher may apply a change before `verge reload` asks for it (it then reports
    // no change); a change it reports is therefore tried up to three times.
    let mut applied = None;
    for attempt in 1..=3usize {
        let origin = &origins[attempt % 2];
        edge.rewrite(origin, OLD_TOKEN, "");
        let output = reload(OLD_TOKEN).await;
        assert!(
            output.status.success(),
            "verge reload exits 0: {output:?}\n{}",
            stderr(&output)
        );
        let shown = stdout(&output);
        if shown.contains("upstream") {
            applied = Some((shown, attempt % 2));
            break;
        }
    }
    let (shown, now) = applied.expect("verge reload reported the origin change");
    let version = edge.config_version().await;
    assert!(version >= 2.0);
    assert!(
        shown.contains(&format!("configuration version {version}")),
        "{shown}"
    );
    let (status, body) = get_text(&edge.data_url("/after-reload")).await;
    assert_eq!((status, body.as_str()), (200, ["a", "b"][now]));

    // An unchanged file: still exit 0, same version.
    let unchanged = reload(OLD_TOKEN).await;
    assert!(unchanged.status.success(), "{unchanged:?}");
    assert!(
        stdout(&unchanged).contains(&format!("configuration version {version}")),
        "{}",
        stdout(&unchanged)
    );

    // An invalid file: exit 1, the key path named, the node still serving as before.
    edge.rewrite(&origins[now], OLD_TOKEN, "[cache]\nmax_bytes = \"a lot\"\n");
    let invalid = reload(OLD_TOKEN).await;
    assert_eq!(invalid.status.code(), Some(1), "{invalid:?}");
    assert!(
        stderr(&invalid).contains("cache.max_bytes"),
        "the refusal names the key: {}",
        stderr(&invalid)
    );
    assert_eq!(edge.config_version().await, version);
    let (status, body) = get_text(&edge.data_url("/after-refusal")).await;
    assert_eq!((status, body.as_str()), (200, ["a", "b"][now]));
    assert_eq!(purge_status(&admin, OLD_TOKEN).await, 200);
    let metrics = edge.metrics().await;
    assert!(
        metrics.value_or_zero("verge_config_reloads_total", &[("result", "invalid")]) >= 1.0,
        "{}",
        metrics.text()
    );

    // A wrong token: refused by the node, named.
    let wrong = reload("not-the-admin-token-at-all").await;
    assert!(!wrong.status.success(), "{wrong:?}");
    assert!(
        format!("{}{}", stdout(&wrong), stderr(&wrong)).contains("403"),
        "{wrong:?}"
    );

    // Nobody listening (nothing ever listens on port 0): exit 2.
    let nowhere = verge(&[
        "reload",
        "--admin",
        "http://127.0.0.1:0",
        "--token",
        OLD_TOKEN,
    ])
    .await;
    assert_eq!(nowhere.status.code(), Some(2), "{nowhere:?}");
    assert!(edge.process.log().contains("cache.max_bytes"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_file_is_applied_without_a_signal() {
    let (old_origin, new_origin) = (origin_saying("old").await, origin_saying("new").await);
    let edge = FileNode::edge(&old_origin, OLD_TOKEN).await;
    assert_eq!(edge.config_version().await, 1.0);

    edge.rewrite(&new_origin, NEW_TOKEN, "");
    wait_until(
        "verge_config_version 2 after the file changed",
        Duration::from_secs(10),
        || async { edge.config_version().await == 2.0 },
    )
    .await;
    assert_eq!(
        get_text(&edge.data_url("/watched")).await,
        (200, "new".into())
    );
    assert_eq!(purge_status(&edge.admin_url(), NEW_TOKEN).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_start_serves_https_with_the_certificate_given_on_the_command_line() {
    let origin = origin_saying("over tls").await;
    let pki = TestPki::new("quick-start");
    let cert = pki.server_cert("edge", &["localhost", "127.0.0.1"]);
    let origin_url = format!("http://{}", origin.addr());
    let mut edge = VergeProcess::spawn(&tls_edge_args(
        &origin_url,
        &[
            "--tls-cert",
            path_str(&cert.cert),
            "--tls-key",
            path_str(&cert.key),
        ],
    ));
    let (data, admin) = (
        edge.logged("serving", "listen="),
        edge.logged("serving", "admin="),
    );
    let tls = edge.logged("serving", "tls=");
    if let Err(log) = edge.wait_healthy(&format!("http://{admin}/healthz")).await {
        panic!("verge edge did not start: {log}");
    }
    let tls_addr: std::net::SocketAddr = tls.trim_matches(['[', ']']).parse().unwrap();
    let answer = TlsClient::new(&pki)
        .get(tls_addr, "localhost", "/secure")
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.text(), "over tls");
    assert_eq!(origin.hits("/secure"), 1);
    // Cleartext still served beside it.
    let (status, _) = get_text(&format!("http://{data}/plain")).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_start_refuses_unpaired_tls_certificates_and_keys() {
    let pki = TestPki::new("unpaired");
    let one = pki.server_cert("one", &["localhost"]);
    let two = pki.server_cert("two", &["localhost"]);
    let output = verge(&tls_edge_args(
        "http://127.0.0.1:1",
        &[
            "--tls-cert",
            path_str(&one.cert),
            "--tls-cert",
            path_str(&two.cert),
            "--tls-key",
            path_str(&one.key),
        ],
    ))
    .await;
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let shown = stderr(&output);
    assert!(
        shown.contains("--tls-cert") && shown.contains("--tls-key"),
        "the message names both flags: {shown}"
    );

    // An HTTPS listener without any certificate is refused the same way.
    let output = verge(&tls_edge_args("http://127.0.0.1:1", &[])).await;
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(stderr(&output).contains("tls"), "{}", stderr(&output));
}

/// `verge control --config FILE` on ports it picks, and the address of its admin API read from
/// its log.
struct FileControl {
    process: VergeProcess,
    file: PathBuf,
    admin: String,
    _dir: tempfile::TempDir,
}

fn control_toml(dir: &Path, token: &str) -> String {
    format!(
        "[controller]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
         data_dir = {:?}\ntoken = \"{token}\"\n",
        dir.join("data").display().to_string()
    )
}

impl FileControl {
    fn start(token: &str) -> FileControl {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("control.toml");
        std::fs::write(&file, control_toml(dir.path(), token)).unwrap();
        let process = VergeProcess::spawn(&["control", "--config", path_str(&file)]);
        let give_up = Instant::now() + DEADLINE;
        let admin = loop {
            let log = process.log();
            let serving = log.lines().find(|line| line.contains("control serving"));
            if let Some(start) = serving.and_then(|line| line.find("admin=").map(|i| (line, i))) {
                let (line, i) = start;
                let addr = line[i + "admin=".len()..]
                    .split_whitespace()
                    .next()
                    .unwrap();
                break format!("http://{addr}");
            }
            assert!(
                Instant::now() < give_up,
                "verge control logged no address:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        FileControl {
            process,
            file,
            admin,
            _dir: dir,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_applies_a_new_token_on_sighup() {
    let control = FileControl::start(OLD_TOKEN);
    assert_eq!(purge_status(&control.admin, OLD_TOKEN).await, 202);
    assert_eq!(purge_status(&control.admin, NEW_TOKEN).await, 403);

    let dir = control.file.parent().unwrap().to_path_buf();
    let temp = control.file.with_extension("toml.new");
    std::fs::write(&temp, control_toml(&dir, NEW_TOKEN)).unwrap();
    std::fs::rename(&temp, &control.file).unwrap();
    control.process.hangup();
    wait_until("control to accept the new token", DEADLINE, || async {
        purge_status(&control.admin, NEW_TOKEN).await == 202
    })
    .await;
    assert_eq!(purge_status(&control.admin, OLD_TOKEN).await, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shield_from_a_file_applies_sighup_and_verge_reload() {
    let origins = [
        origin_saying("first").await,
        origin_saying("second").await,
        origin_saying("third").await,
    ];
    let shield = FileNode::start("shield", shield_toml(&origins[0], "64MiB")).await;
    assert_eq!(
        get_text(&shield.data_url("/one")).await,
        (200, "first".into())
    );
    let max_bytes = |metrics: Metrics| metrics.value_or_zero("verge_cache_max_bytes", &[]);
    assert_eq!(max_bytes(shield.metrics().await), (64u64 << 20) as f64);

    // SIGHUP: a new cache size and a new origin server.
    shield.rewrite_with(shield_toml(&origins[1], "32MiB"));
    shield.process.hangup();
    shield
        .wait_version(2.0, "verge_config_version 2 after SIGHUP")
        .await;
    assert_eq!(max_bytes(shield.metrics().await), (32u64 << 20) as f64);
    assert_eq!(
        get_text(&shield.data_url("/two")).await,
        (200, "second".into())
    );
    assert_eq!(origins[1].hits("/two"), 1);
    assert_eq!(origins[0].hits("/two"), 0);

    // `verge reload`: again, applied (the file watcher may have applied it first).
    shield.rewrite_with(shield_toml(&origins[2], "16MiB"));
    let output = verge(&[
        "reload",
        "--admin",
        &shield.admin_url(),
        "--token",
        OLD_TOKEN,
    ])
    .await;
    assert!(output.status.success(), "{output:?}");
    assert_eq!(shield.config_version().await, 3.0, "{}", stdout(&output));
    assert_eq!(max_bytes(shield.metrics().await), (16u64 << 20) as f64);
    assert_eq!(
        get_text(&shield.data_url("/three")).await,
        (200, "third".into())
    );
    assert_eq!(origins[2].hits("/three"), 1);
}
