//! [`EtcdCluster`]: a real etcd cluster on loopback, started from the `etcd` binary (Debian's
//! `etcd-server`), whose members a test can kill and restart.
//!
//! Ports are never picked and released: each member gets a loopback address of its own
//! (all of `127.0.0.0/8` is loopback on Linux) and listens on etcd's usual ports there, 2379
//! for clients and 2380 for peers. A cluster takes a block of [`MAX_MEMBERS`] addresses in
//! `127.200.0.0`–`127.231.255.255`, chosen by the process id and a per-process counter, so
//! concurrent test processes and concurrent clusters in one process use different addresses.
//! When some address of a block is taken anyway (a pid shared modulo 2^15, an etcd a killed
//! test left behind), the cluster is torn down and started again on the next block.
//!
//! Only flags that etcd 3.4 and later all accept are passed. Each member's output goes to a
//! log file beside its data directory; the tails of those logs are in every panic message.

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tempfile::TempDir;
use tokio::time::Instant;

/// Members one cluster may have: the size of an address block.
pub const MAX_MEMBERS: usize = 8;
/// Address blocks one process cycles through before it comes back to its first.
const BLOCKS_PER_PROCESS: u32 = 8;
/// Blocks tried before `start` gives up because every address it tried was in use.
const START_ATTEMPTS: u32 = 5;
/// Bound on a cluster (or a restarted member) becoming ready.
const READY_DEADLINE: Duration = Duration::from_secs(20);
/// Bound on one readiness probe: a member that does not answer within it is not ready yet.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Pause between readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(20);
/// Log lines of each member shown when something fails.
const LOG_TAIL_LINES: usize = 20;
const CLIENT_PORT: u16 = 2379;
const PEER_PORT: u16 = 2380;
/// The HTTPS client listener of a cluster started with [`EtcdCluster::start_tls`].
const TLS_CLIENT_PORT: u16 = 2381;

/// Files of a cluster's HTTPS client listener: its certificate and key, and the CA its
/// clients' certificates must chain to (etcd's `--client-cert-auth`).
#[derive(Debug, Clone)]
pub struct EtcdTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

/// Issues a cluster's TLS files for its members' addresses.
pub type IssueTls<'a> = dyn Fn(&[Ipv4Addr]) -> EtcdTls + 'a;

/// HTTP/1.1 to members' client URLs (health, version, the v3 JSON gateway).
type EtcdHttp = Client<HttpConnector, Full<Bytes>>;

/// The next address block this process takes. Process-wide on purpose: clusters started by
/// concurrent tests in one process must not share addresses, and they share nothing else.
static NEXT_BLOCK: AtomicU32 = AtomicU32::new(0);

/// A running etcd cluster on loopback. Dropping it kills every member and removes their data.
pub struct EtcdCluster {
    program: PathBuf,
    members: Vec<Member>,
    client: EtcdHttp,
    /// With [`EtcdCluster::start_tls`]: the HTTPS client listener's files.
    tls: Option<EtcdTls>,
    /// Holds every member's data directory and log; removed on drop, after the members die.
    dir: TempDir,
}

struct Member {
    name: String,
    ip: Ipv4Addr,
    /// `None` once killed. In a mutex so that [`EtcdCluster::is_running`] can reap through
    /// `&self`.
    process: Mutex<Option<Child>>,
}

/// Why a cluster did not become ready.
enum NotReady {
    /// A member could not bind its address: another process holds it.
    AddressInUse(Ipv4Addr),
    /// Anything else; the message says what.
    Failed(String),
}

impl EtcdCluster {
    /// Starts `members` etcd processes as one new cluster and waits until every member reports
    /// itself healthy. `None` when `etcd` is not installed, after saying that `test` is
    /// skipped. Panics, with the members' log tails, when the cluster does not come up.
    pub async fn start(members: usize, test: &str) -> Option<EtcdCluster> {
        EtcdCluster::start_with(members, test, None).await
    }

    /// [`EtcdCluster::start`], each member also serving clients over HTTPS on
    /// [`EtcdCluster::tls_client_url`], where it asks for a client certificate signed by the
    /// CA of the files `issue` gives for the members' addresses (the certificate must name
    /// them).
    pub async fn start_tls(
        members: usize,
        test: &str,
        issue: &IssueTls<'_>,
    ) -> Option<EtcdCluster> {
        EtcdCluster::start_with(members, test, Some(issue)).await
    }

    async fn start_with(
        members: usize,
        test: &str,
        issue: Option<&IssueTls<'_>>,
    ) -> Option<EtcdCluster> {
        let program = crate::installed("etcd", "etcd-server", test)?;
        assert!(
            (1..=MAX_MEMBERS).contains(&members),
            "an etcd cluster has 1 to {MAX_MEMBERS} members, not {members}"
        );
        let mut taken = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let block = NEXT_BLOCK.fetch_add(1, Ordering::Relaxed);
            let mut cluster = EtcdCluster::new(program.clone(), members, block);
            if let Some(issue) = issue {
                let ips: Vec<Ipv4Addr> = cluster.members.iter().map(|m| m.ip).collect();
                cluster.tls = Some(issue(&ips));
            }
            match cluster.launch().await {
                Ok(()) => return Some(cluster),
                // Dropping `cluster` kills the members that did start.
                Err(NotReady::AddressInUse(ip)) => taken.push(ip),
                Err(NotReady::Failed(why)) => {
                    panic!("etcd cluster did not start: {why}\n{}", cluster.log_tails())
                }
            }
        }
        panic!(
            "etcd cluster did not start: {START_ATTEMPTS} address blocks had an address in \
             use ({taken:?}), by other tests or by etcd processes a killed test left behind"
        )
    }

    /// Every member's client URL, in member order: `http://127.x.y.z:2379`.
    pub fn client_urls(&self) -> Vec<String> {
        (0..self.members.len())
            .map(|i| self.client_url(i))
            .collect()
    }

    /// Member `i`'s client URL.
    pub fn client_url(&self, i: usize) -> String {
        format!("http://{}:{CLIENT_PORT}", self.members[i].ip)
    }

    /// Member `i`'s HTTPS client URL (clusters from [`EtcdCluster::start_tls`]).
    pub fn tls_client_url(&self, i: usize) -> String {
        format!("https://{}:{TLS_CLIENT_PORT}", self.members[i].ip)
    }

    /// Whether member `i`'s process is alive: not killed, and not exited on its own.
    pub fn is_running(&self, i: usize) -> bool {
        let mut process = self.members[i].process.lock().unwrap();
        match process.as_mut().map(|child| child.try_wait().unwrap()) {
            Some(None) => true,
            Some(Some(_)) => {
                *process = None;
                false
            }
            None => false,
        }
    }

    /// Kills member `i` (SIGKILL) and waits for it to exit. Its data stays, for
    /// [`restart`](Self::restart).
    pub fn kill(&mut self, i: usize) {
        let child = self.members[i].process.get_mut().unwrap().take();
        let Some(mut child) = child else {
            panic!("etcd member {i} cannot be killed: it is not running");
        };
        // An error here means it had already exited; `wait` reaps it either way.
        let _ = child.kill();
        child.wait().unwrap();
    }

    /// Starts member `i` again, on its address and its data, and waits until it serves
    /// clients (`GET /version`). Not until it is healthy: a member without a quorum of peers
    /// never is.
    pub async fn restart(&mut self, i: usize) {
        assert!(
            !self.is_running(i),
            "etcd member {i} cannot be restarted: it is running"
        );
        let child = self.spawn_member(i, "existing");
        *self.members[i].process.get_mut().unwrap() = Some(child);
        let url = format!("{}/version", self.client_url(i));
        let give_up = Instant::now() + READY_DEADLINE;
        match self.wait_answering(i, &url, give_up).await {
            Ok(()) => {}
            Err(NotReady::AddressInUse(ip)) => panic!(
                "restarted etcd member {i} could not bind {ip}: another process took it\n{}",
                self.log_tails()
            ),
            Err(NotReady::Failed(why)) => panic!(
                "restarted etcd member {i} did not come up: {why}\n{}",
                self.log_tails()
            ),
        }
    }

    /// A cluster of `members` on address block `block`, none of them started yet.
    fn new(program: PathBuf, members: usize, block: u32) -> EtcdCluster {
        let ips = block_addresses(std::process::id(), block);
        EtcdCluster {
            program,
            members: (0..members)
                .map(|i| Member {
                    name: format!("member-{i}"),
                    ip: ips[i],
                    process: Mutex::new(None),
                })
                .collect(),
            client: Client::builder(TokioExecutor::new()).build_http(),
            tls: None,
            dir: tempfile::Builder::new()
                .prefix("verge-etcd-")
                .tempdir()
                .unwrap(),
        }
    }

    /// Starts every member as a new cluster and waits until all are healthy.
    ///
    /// One at a time, each serving its peers before the next starts: a new member first asks
    /// its peers whether the cluster already exists, and a peer that listens but does not
    /// serve yet holds that question for a second. Started together, three members took
    /// 1–2 s to come up instead of 0.2 s.
    async fn launch(&mut self) -> Result<(), NotReady> {
        let give_up = Instant::now() + READY_DEADLINE;
        for i in 0..self.members.len() {
            let child = self.spawn_member(i, "new");
            *self.members[i].process.get_mut().unwrap() = Some(child);
            let url = format!("http://{}:{PEER_PORT}/version", self.members[i].ip);
            self.wait_answering(i, &url, give_up).await?;
        }
        self.wait_healthy(give_up).await
    }

    /// Starts member `i`'s process; `state` is etcd's `--initial-cluster-state`.
    fn spawn_member(&self, i: usize, state: &str) -> Child {
        let member = &self.members[i];
        let peer_url = |m: &Member| format!("http://{}:{PEER_PORT}", m.ip);
        let initial_cluster = self
            .members
            .iter()
            .map(|m| format!("{}={}", m.name, peer_url(m)))
            .collect::<Vec<_>>()
            .join(",");
        // Unique per cluster, so a member never joins a cluster left over from another run.
        let token = self
            .dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .unwrap();
        let client_url = self.client_url(i);
        let mut listen = client_url.clone();
        let mut command = Command::new(&self.program);
        if let Some(tls) = &self.tls {
            listen = format!("{client_url},{}", self.tls_client_url(i));
            command
                .arg("--cert-file")
                .arg(&tls.cert)
                .arg("--key-file")
                .arg(&tls.key)
                .arg("--trusted-ca-file")
                .arg(&tls.client_ca)
                .arg("--client-cert-auth");
        }
        command
            .arg("--name")
            .arg(&member.name)
            .arg("--data-dir")
            .arg(self.dir.path().join(&member.name))
            .args(["--listen-client-urls", &listen])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url(member)])
            .args(["--initial-advertise-peer-urls", &peer_url(member)])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", &token])
            // A tenth of the defaults: leaders are elected, and lost, in well under a second.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // etcd reads its flags from ETCD_* too, and refuses a flag given both ways.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ETCD_") {
                command.env_remove(key);
            }
        }
        command
            .spawn()
            .unwrap_or_else(|e| panic!("could not run {}: {e}", self.program.display()))
    }

    /// Waits until member `i` answers `GET url` with 200 OK, or its process exits.
    async fn wait_answering(&self, i: usize, url: &str, give_up: Instant) -> Result<(), NotReady> {
        loop {
            if let Some(failure) = self.failure(i) {
                return Err(failure);
            }
            let answer = exchange(&self.client, Method::GET, url, None, PROBE_TIMEOUT).await;
            if let Some((StatusCode::OK, _)) = answer {
                return Ok(());
            }
            if Instant::now() >= give_up {
                return Err(NotReady::Failed(format!(
                    "member {i} did not answer {url} within {READY_DEADLINE:?}"
                )));
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }

    /// Waits until every member answers `GET /health` with `{"health":"true"}`.
    async fn wait_healthy(&self, give_up: Instant) -> Result<(), NotReady> {
        let mut healthy = vec![false; self.members.len()];
        loop {
            // Before believing the probes: a member that could not bind its address leaves it
            // to whoever holds it, and that may be a healthy etcd too.
            if let Some(failure) = (0..healthy.len()).find_map(|i| self.failure(i)) {
                return Err(failure);
            }
            if healthy.iter().all(|&h| h) {
                return Ok(());
            }
            if Instant::now() >= give_up {
                let waiting: Vec<usize> = (0..healthy.len()).filter(|&i| !healthy[i]).collect();
                return Err(NotReady::Failed(format!(
                    "members {waiting:?} were not healthy within {READY_DEADLINE:?}"
                )));
            }
            // Concurrently: a member without a leader yet may hold a probe until it times out.
            let mut probes = tokio::task::JoinSet::new();
            for i in (0..healthy.len()).filter(|&i| !healthy[i]) {
                let client = self.client.clone();
                let url = format!("{}/health", self.client_url(i));
                probes.spawn(async move { (i, is_healthy(&client, &url).await) });
            }
            while let Some(probe) = probes.join_next().await {
                let (i, answer) = probe.unwrap();
                healthy[i] = answer;
            }
            if !healthy.iter().all(|&h| h) {
                tokio::time::sleep(PROBE_INTERVAL).await;
            }
        }
    }

    /// Why member `i`'s process ended, if it has.
    fn failure(&self, i: usize) -> Option<NotReady> {
        let status = {
            let mut process = self.members[i].process.lock().unwrap();
            process.as_mut()?.try_wait().unwrap()?
        };
        let log = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
        Some(if log.contains("address already in use") {
            NotReady::AddressInUse(self.members[i].ip)
        } else {
            NotReady::Failed(format!("member {i} exited with {status}"))
        })
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir
            .path()
            .join(format!("{}.log", self.members[i].name))
    }

    /// The last lines of every member's log, for panic messages.
    fn log_tails(&self) -> String {
        (0..self.members.len())
            .map(|i| {
                let tail = log_tail(&self.log_path(i));
                format!(
                    "--- etcd member {i} ({}), log tail:\n{tail}",
                    self.client_url(i)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            let process = member.process.get_mut();
            if let Some(mut child) = process.unwrap_or_else(PoisonError::into_inner).take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Whether `GET url` (a member's `/health`) answers `"health": "true"`.
async fn is_healthy(client: &EtcdHttp, url: &str) -> bool {
    let Some((StatusCode::OK, body)) =
        exchange(client, Method::GET, url, None, PROBE_TIMEOUT).await
    else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&body)
        .is_ok_and(|health| health["health"] == "true")
}

/// Sends one request (a JSON `body` is POSTed as is) and reads the whole response; `None`
/// when the exchange fails or takes longer than `limit`.
async fn exchange(
    client: &EtcdHttp,
    method: Method,
    url: &str,
    body: Option<&serde_json::Value>,
    limit: Duration,
) -> Option<(StatusCode, Bytes)> {
    let body = body.map_or_else(Bytes::new, |json| Bytes::from(json.to_string()));
    let request = Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(body))
        .unwrap();
    let exchange = async {
        let response = client.request(request).await.ok()?;
        let status = response.status();
        let body = response.into_body().collect().await.ok()?.to_bytes();
        Some((status, body))
    };
    tokio::time::timeout(limit, exchange).await.ok().flatten()
}

/// The loopback addresses of block `block` of process `pid`: 64 addresses per pid (8 blocks
/// of [`MAX_MEMBERS`]) for the 2^15 pids modulo 32768 (Linux's default `pid_max`), laid out
/// from 127.200.0.0 to 127.231.255.255, clear of the 127.0.0.x that other services use.
fn block_addresses(pid: u32, block: u32) -> [Ipv4Addr; MAX_MEMBERS] {
    let first = ((pid & 0x7fff) << 6) | ((block % BLOCKS_PER_PROCESS) << 3);
    std::array::from_fn(|member| {
        let offset = first | member as u32;
        let [_, high, mid, low] = offset.to_be_bytes();
        Ipv4Addr::new(127, 200 + high, mid, low)
    })
}

/// The last [`LOG_TAIL_LINES`] lines of the file at `path`, or why it could not be read.
fn log_tail(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(log) => {
            let lines: Vec<&str> = log.lines().collect();
            lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
        }
        Err(e) => format!("(could not read {}: {e})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bound on a put or a read that a cluster with a quorum answers in milliseconds.
    const ANSWER_LIMIT: Duration = Duration::from_secs(3);

    /// Standard base64 with padding, as etcd's JSON gateway carries keys and values.
    fn base64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
            for i in 0..4 {
                out.push(if i <= chunk.len() {
                    ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char
                } else {
                    '='
                });
            }
        }
        out
    }

    /// Puts `key` = `value` through member `i`; `Err` says how it failed, or that it had no
    /// answer within `limit`.
    async fn put(
        cluster: &EtcdCluster,
        i: usize,
        key: &str,
        value: &str,
        limit: Duration,
    ) -> Result<(), String> {
        let url = format!("{}/v3/kv/put", cluster.client_url(i));
        let body =
            serde_json::json!({ "key": base64(key.as_bytes()), "value": base64(value.as_bytes()) });
        match exchange(&cluster.client, Method::POST, &url, Some(&body), limit).await {
            Some((StatusCode::OK, _)) => Ok(()),
            Some((status, body)) => Err(format!("{status}: {}", String::from_utf8_lossy(&body))),
            None => Err(format!("no answer within {limit:?}")),
        }
    }

    /// Puts `key` = `value` through member `i`, retrying until a put succeeds (a new leader
    /// may be being elected); panics after 10 s.
    async fn put_eventually(cluster: &EtcdCluster, i: usize, key: &str, value: &str) {
        let give_up = Instant::now() + Duration::from_secs(10);
        loop {
            // Short attempts: a put sent while the leader is being replaced waits in vain.
            match put(cluster, i, key, value, Duration::from_secs(1)).await {
                Ok(()) => return,
                Err(e) if Instant::now() >= give_up => {
                    panic!("put {key} through member {i} failed for 10 s; last: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// The base64 value of `key` read (linearizably) through member `i`.
    async fn get(cluster: &EtcdCluster, i: usize, key: &str) -> Option<String> {
        let url = format!("{}/v3/kv/range", cluster.client_url(i));
        let body = serde_json::json!({ "key": base64(key.as_bytes()) });
        let answer = exchange(
            &cluster.client,
            Method::POST,
            &url,
            Some(&body),
            ANSWER_LIMIT,
        );
        let (status, body) = answer.await.expect("range answered");
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let range: serde_json::Value = serde_json::from_slice(&body).unwrap();
        range["kvs"][0]["value"].as_str().map(str::to_string)
    }

    #[test]
    fn base64_matches_the_rfc_4648_examples() {
        let encoded = [
            "", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy",
        ];
        for (len, encoded) in encoded.into_iter().enumerate() {
            assert_eq!(base64(&b"foobar"[..len]), encoded);
        }
    }

    #[test]
    fn address_blocks_of_different_pids_and_counters_do_not_overlap() {
        let mut seen = std::collections::HashSet::new();
        for pid in [0, 1, 2, 4242, 0x7ffe, 0x7fff] {
            for block in 0..BLOCKS_PER_PROCESS {
                for ip in block_addresses(pid, block) {
                    assert!(seen.insert(ip), "{ip} handed out twice");
                    let [a, b, ..] = ip.octets();
                    assert!(a == 127 && (200..=231).contains(&b), "{ip}");
                }
            }
        }
        assert_eq!(
            block_addresses(7, 0),
            block_addresses(7, BLOCKS_PER_PROCESS)
        );
    }

    #[tokio::test]
    async fn a_cluster_whose_address_is_taken_starts_on_the_next_block() {
        let test = "etcd::tests::a_cluster_whose_address_is_taken_starts_on_the_next_block";
        let next = NEXT_BLOCK.load(Ordering::Relaxed);
        let taken = block_addresses(std::process::id(), next)[1];
        // Held as another process would hold it: member 1's peer port on its address.
        let _holder = std::net::TcpListener::bind((taken, PEER_PORT)).unwrap();
        let Some(cluster) = EtcdCluster::start(3, test).await else {
            return;
        };
        let taken_url = format!("http://{taken}:{CLIENT_PORT}");
        assert!(
            !cluster.client_urls().contains(&taken_url),
            "{taken} is held by another socket: {:?}",
            cluster.client_urls()
        );
        put(&cluster, 0, "moved", "yes", ANSWER_LIMIT)
            .await
            .unwrap();
        assert_eq!(get(&cluster, 1, "moved").await, Some(base64(b"yes")));
    }

    #[tokio::test]
    async fn a_three_member_cluster_writes_with_one_member_down_and_stops_without_quorum() {
        let test = "etcd::tests::a_three_member_cluster_writes_with_one_member_down_and_stops_without_quorum";
        let Some(mut cluster) = EtcdCluster::start(3, test).await else {
            return;
        };
        assert_eq!(cluster.client_urls().len(), 3);

        put(&cluster, 0, "greeting", "hello", ANSWER_LIMIT)
            .await
            .unwrap();
        assert_eq!(
            get(&cluster, 2, "greeting").await,
            Some(base64(b"hello")),
            "a put through member 0 is read through member 2"
        );

        cluster.kill(1);
        assert!(!cluster.is_running(1));
        // Member 1 may have been the leader: the other two elect one first.
        put_eventually(&cluster, 0, "greeting", "two of three").await;
        assert_eq!(
            get(&cluster, 2, "greeting").await,
            Some(base64(b"two of three"))
        );

        cluster.kill(2);
        let attempt = Instant::now();
        let without_quorum = put(&cluster, 0, "greeting", "one of three", ANSWER_LIMIT).await;
        assert!(
            without_quorum.is_err(),
            "a put with one member of three up must not succeed"
        );
        assert!(attempt.elapsed() < Duration::from_secs(4));

        cluster.restart(2).await;
        assert!(cluster.is_running(2));
        put_eventually(&cluster, 0, "greeting", "back").await;
        assert_eq!(get(&cluster, 2, "greeting").await, Some(base64(b"back")));
    }
}
