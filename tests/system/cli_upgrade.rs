//! Zero-downtime upgrade as an operator runs it: the real `verge edge` started a second time
//! with the same `server.upgrade_socket` takes the listening sockets over from the first, which
//! stops accepting, drains and exits 0, while clients keep sending requests over HTTP and HTTPS
//! that must all succeed.
//!
//! Every process names the same ports, so the test binds the listeners itself on
//! `127.0.0.1:0`, writes their ports into the configuration, and hands the sockets to the first
//! process over the upgrade socket, as a predecessor would: no port is ever picked and let go.

#![cfg(unix)]

use verge_testkit as support;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::task::JoinHandle;

use support::pki::{CertFiles, TestPki, TlsClient};
use support::{wait_until, FakeOrigin, Metrics, Reply};

use crate::process::{get_status, VergeProcess};
use verge_node::handoff::{HandoffEvent, HandoffServer};

/// Bound on a process start, an upgrade, and every request of the load.
const DEADLINE: Duration = Duration::from_secs(20);
/// Delay of the origin on `/slow/...`, so requests are in flight when the old process drains.
const SLOW: Duration = Duration::from_millis(100);
/// Tasks of the load sending over clear HTTP, each one request at a time.
const CLEAR_TASKS: usize = 4;
/// Requests in flight at once at most: the clear tasks and the HTTPS one.
const IN_FLIGHT: usize = CLEAR_TASKS + 1;

/// The ports an edge listens on; both processes of an upgrade name the same ones.
#[derive(Debug, Clone, Copy)]
struct Ports {
    data: u16,
    admin: u16,
    tls: u16,
}

/// The listening sockets the test binds on port 0 and hands to the first process.
struct Listeners {
    data: std::net::TcpListener,
    admin: std::net::TcpListener,
    tls: std::net::TcpListener,
}

impl Listeners {
    fn bind() -> Listeners {
        let bind = || std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        Listeners {
            data: bind(),
            admin: bind(),
            tls: bind(),
        }
    }

    fn ports(&self) -> Ports {
        let port = |l: &std::net::TcpListener| l.local_addr().unwrap().port();
        Ports {
            data: port(&self.data),
            admin: port(&self.admin),
            tls: port(&self.tls),
        }
    }
}

impl Ports {
    fn data_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.data)
    }

    fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin)
    }

    fn tls_addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.tls))
    }
}

/// An origin, a CA with a server certificate, and the configuration file every process of
/// one test runs with.
struct Setup {
    origin: FakeOrigin,
    pki: TestPki,
    cert: CertFiles,
    dir: tempfile::TempDir,
    ports: Ports,
    /// Held until the first process has taken them over.
    listeners: Option<Listeners>,
}

impl Setup {
    async fn new() -> Setup {
        let origin = FakeOrigin::start().await;
        origin.on_prefix("/obj/", Reply::ok("cached").cache_control("max-age=3600"));
        origin.on_prefix("/pass/", Reply::ok("pass").cache_control("no-store"));
        origin.on_prefix(
            "/slow/",
            Reply::ok("slow").cache_control("no-store").delay(SLOW),
        );
        let pki = TestPki::new("upgrade");
        let cert = pki.server_cert("edge", &["localhost", "127.0.0.1"]);
        let listeners = Listeners::bind();
        Setup {
            origin,
            pki,
            cert,
            dir: tempfile::tempdir().unwrap(),
            ports: listeners.ports(),
            listeners: Some(listeners),
        }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("edge.toml")
    }

    fn socket_path(&self) -> PathBuf {
        self.dir.path().join("upgrade.sock")
    }

    /// Writes the configuration for the current ports.
    fn write_config(&self) {
        let ports = self.ports;
        let toml = format!(
            "[edge]\nid = \"upgrade-test\"\n\n\
             [server]\nlisten = \"127.0.0.1:{}\"\nadmin_listen = \"127.0.0.1:{}\"\n\
             upgrade_socket = {:?}\nshutdown_grace = \"10s\"\nworker_threads = 2\n\n\
             [upstream]\norigin = \"http://{}\"\n\n\
             [tls]\nlisten = [\"127.0.0.1:{}\"]\n{}",
            ports.data,
            ports.admin,
            self.socket_path().display().to_string(),
            self.origin.addr(),
            ports.tls,
            self.cert.toml_entry(),
        );
        std::fs::write(self.config_path(), toml).unwrap();
    }

    /// Starts the first process on the test's listeners, handed to it over the upgrade
    /// socket: healthy, and offering them in turn for the next upgrade.
    async fn start_first(&mut self) -> VergeProcess {
        self.write_config();
        let listeners = self
            .listeners
            .take()
            .expect("the first process starts once");
        let mut offer = HandoffServer::bind(self.socket_path()).unwrap();
        let ours = socket_id(&self.socket_path());
        offer.add_listener("data", &listeners.data).unwrap();
        offer.add_listener("admin", &listeners.admin).unwrap();
        offer.add_listener("tls", &listeners.tls).unwrap();
        let handed = tokio::spawn(offer.run(tokio::time::sleep(DEADLINE)));
        let mut edge = VergeProcess::spawn(&["edge", "--config", path_str(&self.config_path())]);
        if let Err(log) = edge.wait_healthy(&self.ports.admin_url("/healthz")).await {
            panic!("verge edge did not start:\n{log}");
        }
        assert_eq!(
            handed.await.unwrap(),
            HandoffEvent::SuccessorReady,
            "the first process takes the test's listeners:\n{}",
            edge.log()
        );
        drop(listeners);
        wait_for_a_new_offer(&self.socket_path(), ours, "the first process").await;
        edge
    }
}

impl Setup {
    /// Starts the first process with every listener on port 0, so it binds its own (the test's
    /// listeners are let go unused); the ports are read from its `serving` log line and the
    /// file rewritten with them, so the next process takes the same listeners over.
    async fn start_binding(&mut self) -> VergeProcess {
        drop(self.listeners.take());
        self.ports = Ports {
            data: 0,
            admin: 0,
            tls: 0,
        };
        self.write_config();
        let mut edge = VergeProcess::spawn(&["edge", "--config", path_str(&self.config_path())]);
        let port = |logged: String| -> u16 {
            let addr = logged.trim_matches(|c| matches!(c, '[' | ']'));
            addr.parse::<std::net::SocketAddr>().unwrap().port()
        };
        self.ports = Ports {
            data: port(edge.logged("serving", "listen=")),
            admin: port(edge.logged("serving", "admin=")),
            tls: port(edge.logged("serving", "tls=")),
        };
        self.write_config();
        if let Err(log) = edge.wait_healthy(&self.ports.admin_url("/healthz")).await {
            panic!("verge edge did not start:\n{log}");
        }
        edge
    }
}

/// Device and inode of the file at `path`: a new process replaces the upgrade socket (a new
/// inode) once it offers its listeners for the next upgrade.
fn socket_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Waits until `who` offers its listeners on the upgrade socket at `path`: a socket is there
/// and is not the one `before` named.
async fn wait_for_a_new_offer(path: &Path, before: Option<(u64, u64)>, who: &str) {
    let what = format!("{who} to offer its listeners for the next upgrade");
    wait_until(&what, DEADLINE, || async {
        socket_id(path).is_some_and(|id| Some(id) != before)
    })
    .await;
}

async fn metrics(ports: Ports) -> Metrics {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let response = client
        .get(ports.admin_url("/metrics").parse().unwrap())
        .await
        .unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Metrics::parse(&String::from_utf8_lossy(&body))
}

/// What the load saw, shared by its tasks.
#[derive(Default)]
struct Tally {
    /// Requests answered 200 with the expected body, over HTTP and HTTPS.
    ok: AtomicUsize,
    /// Of which over HTTPS.
    ok_tls: AtomicUsize,
    /// Requests that failed: refused connections, wrong answers, cut bodies, no answer at all.
    failures: Mutex<Vec<String>>,
    /// Attempts written on a connection that then closed without any answer (path and query),
    /// each sent again on a new connection. Innocent only if the edge never read it, which
    /// [`Tally::dropped`] checks at the origin.
    unanswered: Mutex<Vec<String>>,
    /// When the last request succeeded, and the longest time without any success.
    last_ok: Mutex<Option<Instant>>,
    longest_gap: Mutex<Duration>,
}

impl Tally {
    fn succeeded(&self, tls: bool) {
        self.ok.fetch_add(1, Ordering::SeqCst);
        if tls {
            self.ok_tls.fetch_add(1, Ordering::SeqCst);
        }
        let now = Instant::now();
        let previous = self.last_ok.lock().unwrap().replace(now);
        if let Some(previous) = previous {
            let mut longest = self.longest_gap.lock().unwrap();
            *longest = (*longest).max(now - previous);
        }
    }

    fn failed(&self, what: String) {
        self.failures.lock().unwrap().push(what);
    }

    fn ok(&self) -> usize {
        self.ok.load(Ordering::SeqCst)
    }

    /// The unanswered attempts that the origin received: requests the edge had read and
    /// passed on, then dropped without answering.
    fn dropped(&self, origin: &FakeOrigin) -> Vec<String> {
        let seen: std::collections::HashSet<String> = origin
            .requests()
            .into_iter()
            .map(|r| r.path_and_query)
            .collect();
        self.unanswered
            .lock()
            .unwrap()
            .iter()
            .filter(|attempt| seen.contains(*attempt))
            .cloned()
            .collect()
    }
}

/// How one attempt at a request ended.
enum Attempt {
    /// A response, read whole: status and body.
    Answered(u16, Bytes),
    /// Written on a connection that closed before any response came: the closing race every
    /// keep-alive client meets, which RFC 9112 (9.3.1) lets it retry for an idempotent request,
    /// as long as the server had not read the request.
    Unanswered(String),
    /// Anything else: a refused connection, a cut body, a timeout.
    Failed(String),
}

/// Attempts at one request before it counts as failed.
const ATTEMPTS: usize = 3;

/// Clients sending GETs back to back until stopped: `clear` tasks over a pooled keep-alive
/// HTTP/1.1 client (which itself resends a request whose connection closed before the request
/// was written), and optionally one HTTPS task on its own keep-alive connection. Every request
/// goes to the origin (uncacheable), each attempt with its own query, so the origin tells
/// whether the edge had read an attempt that got no answer.
struct Load {
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(ports: Ports, clear: usize, tls: Option<TlsClient>) -> Load {
        let tally = Arc::new(Tally::default());
        let stop = Arc::new(AtomicBool::new(false));
        let client: Client<HttpConnector, Empty<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let mut tasks: Vec<JoinHandle<()>> = (0..clear)
            .map(|task| {
                let (client, tally, stop) = (client.clone(), Arc::clone(&tally), Arc::clone(&stop));
                tokio::spawn(async move {
                    let mut n = 0usize;
                    while !stop.load(Ordering::SeqCst) {
                        n += 1;
                        let (path, expected) = request_path(task, n);
                        for attempt in 1..=ATTEMPTS {
                            let target = format!("{path}?attempt={attempt}");
                            let url = ports.data_url(&target);
                            let outcome = clear_get(&client, &url).await;
                            if tally.record(outcome, &target, expected, false, attempt) {
                                break;
                            }
                        }
                    }
                })
            })
            .collect();
        if let Some(tls) = tls {
            let (tally, stop) = (Arc::clone(&tally), Arc::clone(&stop));
            tasks.push(tokio::spawn(tls_load(tls, ports, tally, stop)));
        }
        Load { tally, stop, tasks }
    }

    /// Waits until `more` requests have succeeded from now on.
    async fn wait_for(&self, more: usize, what: &str) {
        let target = self.tally.ok() + more;
        wait_until(what, DEADLINE, || async { self.tally.ok() >= target }).await;
    }

    async fn stop(self) -> Arc<Tally> {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.unwrap();
        }
        self.tally
    }
}

impl Tally {
    /// Counts one attempt at `target`; true when the request is settled (answered, failed, or
    /// out of attempts), false when it is to be sent again.
    fn record(
        &self,
        outcome: Attempt,
        target: &str,
        expected: &str,
        tls: bool,
        attempt: usize,
    ) -> bool {
        let scheme = if tls { "https" } else { "http" };
        match outcome {
            Attempt::Answered(200, body) if body == expected.as_bytes() => {
                self.succeeded(tls);
                true
            }
            Attempt::Answered(status, body) => {
                self.failed(format!("GET {scheme} {target}: {status} {body:?}"));
                true
            }
            Attempt::Unanswered(error) => {
                self.unanswered.lock().unwrap().push(target.to_string());
                if attempt == ATTEMPTS {
                    self.failed(format!("GET {scheme} {target}: no answer: {error}"));
                }
                attempt == ATTEMPTS
            }
            Attempt::Failed(error) => {
                self.failed(format!("GET {scheme} {target}: {error}"));
                true
            }
        }
    }
}

/// Request `n` of task `task`: every fourth is slow (in flight for [`SLOW`] at the origin,
/// so the old process has requests to finish when it drains). The path and the body expected.
fn request_path(task: usize, n: usize) -> (String, &'static str) {
    if n % 4 == 0 {
        (format!("/slow/{task}-{n}"), "slow")
    } else {
        (format!("/pass/{task}-{n}"), "pass")
    }
}

async fn clear_get(client: &Client<HttpConnector, Empty<Bytes>>, url: &str) -> Attempt {
    let exchange = async {
        let response = match client.get(url.parse().unwrap()).await {
            Ok(response) => response,
            Err(e) if e.is_connect() => return Attempt::Failed(format!("connect: {e:?}")),
            Err(e) => return Attempt::Unanswered(format!("{e:?}")),
        };
        let status = response.status().as_u16();
        match response.into_body().collect().await {
            Ok(body) => Attempt::Answered(status, body.to_bytes()),
            Err(e) => Attempt::Failed(format!("reading the body: {e:?}")),
        }
    };
    tokio::time::timeout(DEADLINE, exchange)
        .await
        .unwrap_or_else(|_| Attempt::Failed(format!("no answer within {DEADLINE:?}")))
}

/// HTTPS requests back to back on one keep-alive HTTP/1.1 connection, opening a new one when
/// the server has closed it. A request the connection refused before writing it (closed
/// meanwhile) is sent again without counting as an attempt.
async fn tls_load(tls: TlsClient, ports: Ports, tally: Arc<Tally>, stop: Arc<AtomicBool>) {
    let mut n = 0usize;
    let mut attempt = 1;
    let mut sender: Option<http1::SendRequest<Empty<Bytes>>> = None;
    while !stop.load(Ordering::SeqCst) {
        let mut current = match sender.take() {
            Some(current) => current,
            None => match tls.handshake(ports.tls_addr(), "localhost").await {
                Ok(stream) => {
                    let (current, connection) =
                        http1::handshake(TokioIo::new(stream)).await.unwrap();
                    tokio::spawn(connection);
                    current
                }
                Err(e) => {
                    tally.failed(format!("TLS connect to {}: {e}", ports.tls_addr()));
                    continue;
                }
            },
        };
        if current.ready().await.is_err() {
            // Closed by the server while idle: nothing was sent.
            continue;
        }
        if attempt == 1 {
            n += 1;
        }
        let (path, expected) = request_path(99, n);
        let target = format!("{path}?attempt={attempt}");
        let request = http::Request::get(target.as_str())
            .header(http::header::HOST, "localhost")
            .body(Empty::new())
            .unwrap();
        let exchange = async {
            let response = match current.try_send_request(request).await {
                Ok(response) => response,
                Err(mut e) => {
                    if e.take_message().is_some() {
                        return None;
                    }
                    return Some(Attempt::Unanswered(format!("{:?}", e.error())));
                }
            };
            let status = response.status().as_u16();
            Some(match response.into_body().collect().await {
                Ok(body) => Attempt::Answered(status, body.to_bytes()),
                Err(e) => Attempt::Failed(format!("reading the body: {e:?}")),
            })
        };
        let outcome = match tokio::time::timeout(DEADLINE, exchange).await {
            // Not written: the connection closed first; sent again on a new one.
            Ok(None) => continue,
            Ok(Some(outcome)) => outcome,
            Err(_) => Attempt::Failed(format!("no answer within {DEADLINE:?}")),
        };
        let keep = matches!(outcome, Attempt::Answered(..));
        if tally.record(outcome, &target, expected, true, attempt) {
            attempt = 1;
        } else {
            attempt += 1;
        }
        if keep {
            sender = Some(current);
        }
    }
}

/// Starts a successor with the same configuration and waits until `old` has handed its
/// listeners over, drained and exited 0, and the successor offers them for the next upgrade.
/// Counts of successful requests are checked at each step when `load` is given.
async fn upgrade(setup: &Setup, old: &mut VergeProcess, load: Option<&Load>) -> VergeProcess {
    let old_socket = socket_id(&setup.socket_path());
    assert!(old_socket.is_some(), "the old process offers its listeners");
    let before = load.map(|l| l.tally.ok());
    let mut new = VergeProcess::spawn(&["edge", "--config", path_str(&setup.config_path())]);
    let Some(status) = old.wait_exit(DEADLINE).await else {
        panic!(
            "the old process did not exit within {DEADLINE:?}\nold:\n{}\nnew:\n{}",
            old.log(),
            new.log()
        );
    };
    assert!(
        status.success(),
        "the old process exits 0 after draining, got {status}\nold:\n{}\nnew:\n{}",
        old.log(),
        new.log()
    );
    assert!(
        new.exited().is_none(),
        "the new process keeps running:\n{}",
        new.log()
    );
    if let (Some(load), Some(before)) = (load, before) {
        assert!(
            load.tally.ok() > before,
            "requests were served while the listeners changed hands"
        );
    }
    wait_for_a_new_offer(&setup.socket_path(), old_socket, "the new process").await;
    new
}

/// The checks that `edge` alone serves now, on the same ports: admin `/healthz`, a request on
/// the data port, one over HTTPS, and its own metrics counting requests.
async fn assert_serves(setup: &Setup, edge: &mut VergeProcess) {
    let ports = setup.ports;
    assert!(edge.exited().is_none(), "still running:\n{}", edge.log());
    assert_eq!(get_status(&ports.admin_url("/healthz")).await, Ok(200));
    assert_eq!(get_status(&ports.data_url("/obj/1")).await, Ok(200));
    let answer = TlsClient::new(&setup.pki)
        .get(ports.tls_addr(), "localhost", "/obj/2")
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.text(), "cached");
    let served = metrics(ports)
        .await
        .value_or_zero("verge_requests_total", &[]);
    assert!(served >= 2.0, "the new process counted {served} requests");
}

/// Every request was answered: none failed, and of the attempts sent again because their
/// connection closed without an answer, the edge had read none (the origin never saw them) and
/// there were few: at most two per request in flight for each upgrade, the connections the
/// old process closed as it drained. Requests never waited long for an answer.
fn assert_every_request_answered(
    tally: &Tally,
    origin: &FakeOrigin,
    upgrades: usize,
    logs: &[&VergeProcess],
) {
    let failures = tally.failures.lock().unwrap().clone();
    let dropped = tally.dropped(origin);
    let resent = tally.unanswered.lock().unwrap().len();
    let longest = *tally.longest_gap.lock().unwrap();
    eprintln!(
        "{} requests answered ({} over HTTPS); {resent} attempts sent again after their \
         connection closed unanswered; longest wait between answers {longest:?}",
        tally.ok(),
        tally.ok_tls.load(Ordering::SeqCst),
    );
    if !failures.is_empty() || !dropped.is_empty() {
        let logs: Vec<String> = logs.iter().map(|p| p.log()).collect();
        panic!(
            "{} requests failed, first ones: {:#?}\n\
             {} requests read by the edge were dropped unanswered: {dropped:#?}\nlogs:\n{}",
            failures.len(),
            &failures[..failures.len().min(10)],
            dropped.len(),
            logs.join("\n----\n")
        );
    }
    assert!(
        resent <= 2 * IN_FLIGHT * upgrades,
        "{resent} attempts got no answer in {upgrades} upgrades"
    );
    assert!(
        longest < Duration::from_secs(2),
        "requests waited {longest:?} for an answer during the upgrade"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_hands_the_listeners_over_without_a_failed_request() {
    let mut setup = Setup::new().await;
    let mut old = setup.start_first().await;
    let old_pid = old.pid();
    let tls = TlsClient::builder(&setup.pki.ca_file)
        .alpn(&["http/1.1"])
        .build();
    let load = Load::start(setup.ports, CLEAR_TASKS, Some(tls));
    load.wait_for(50, "requests to the old process").await;

    let mut new = upgrade(&setup, &mut old, Some(&load)).await;
    assert_ne!(new.pid(), old_pid);
    load.wait_for(200, "requests to the new process").await;
    let tally = load.stop().await;

    assert_every_request_answered(&tally, &setup.origin, 1, &[&old, &new]);
    assert!(
        tally.ok_tls.load(Ordering::SeqCst) > 10,
        "HTTPS requests were served"
    );
    assert!(
        old.log().contains("upgrade"),
        "the old process says it was upgraded:\n{}",
        old.log()
    );
    assert_serves(&setup, &mut new).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_upgrade_reuses_the_socket_path() {
    let mut setup = Setup::new().await;
    let mut first = setup.start_first().await;
    let load = Load::start(setup.ports, CLEAR_TASKS, None);
    load.wait_for(20, "requests to the first process").await;

    let mut second = upgrade(&setup, &mut first, Some(&load)).await;
    load.wait_for(50, "requests to the second process").await;
    let mut third = upgrade(&setup, &mut second, Some(&load)).await;
    load.wait_for(50, "requests to the third process").await;
    let tally = load.stop().await;

    assert_every_request_answered(&tally, &setup.origin, 2, &[&first, &second, &third]);
    assert!(setup.socket_path().exists());
    assert_serves(&setup, &mut third).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_upgrade_socket_is_replaced_and_the_process_binds_normally() {
    let mut setup = Setup::new().await;
    // A socket file nobody listens on, as a process killed with SIGKILL leaves behind.
    drop(std::os::unix::net::UnixListener::bind(setup.socket_path()).unwrap());
    let stale = socket_id(&setup.socket_path());
    assert!(stale.is_some());

    let mut edge = setup.start_binding().await;
    wait_until("the stale socket file to be replaced", DEADLINE, || async {
        socket_id(&setup.socket_path()) != stale
    })
    .await;
    assert_serves(&setup, &mut edge).await;

    // The replaced socket works: the next upgrade takes the listeners from it.
    let mut next = upgrade(&setup, &mut edge, None).await;
    assert_serves(&setup, &mut next).await;
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}
