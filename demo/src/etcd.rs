//! The HA demo's etcd cluster: members started from the `etcd` binary (Debian's `etcd-server`)
//! as child processes, each on a loopback address of its own with etcd's usual ports, killed
//! when the cluster is stopped or dropped.
//!
//! Members start one at a time, each serving its peers before the next starts: a new member
//! first asks its peers whether the cluster already exists, and a peer that listens but does
//! not serve yet holds that question for a second. The cluster is ready when every member
//! answers `GET /health` with `{"health":"true"}`. Only flags etcd 3.4 and later all accept
//! are passed; each member's output goes to a log file, whose tail a failure quotes.

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use crate::replica_plan::{ETCD_CLIENT_PORT, ETCD_PEER_PORT};

/// Bound on one readiness probe: a member that does not answer within it is not ready yet.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Pause between readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);
/// Log lines quoted when a member fails.
const LOG_TAIL_LINES: usize = 10;

/// The path of `etcd` on `PATH`, if it is installed.
pub fn find() -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join("etcd"))
        .find(|path| path.is_file())
}

/// What to tell a user without `etcd`.
pub const MISSING: &str = "`etcd` is not on PATH: install the Debian package `etcd-server` \
     (apt-get install etcd-server), or put etcd 3.4 or newer on PATH";

/// A running etcd cluster; dropping it kills every member.
pub struct EtcdCluster {
    members: Vec<Member>,
}

struct Member {
    name: String,
    ip: Ipv4Addr,
    log: PathBuf,
    /// `None` once killed.
    process: Option<Child>,
}

impl EtcdCluster {
    /// Starts one member of a new cluster on each of `ips`, its data and log in `dir`, and waits
    /// until every member is healthy, at most `limit`. `Err` says why, with the log tails.
    pub async fn start(
        program: &Path,
        ips: &[Ipv4Addr],
        dir: &Path,
        limit: Duration,
    ) -> Result<EtcdCluster, String> {
        let mut cluster = EtcdCluster {
            members: ips
                .iter()
                .enumerate()
                .map(|(i, ip)| Member {
                    name: format!("etcd-{}", i + 1),
                    ip: *ip,
                    log: dir.join(format!("etcd-{}.log", i + 1)),
                    process: None,
                })
                .collect(),
        };
        let http: Client<HttpConnector, Empty<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let give_up = Instant::now() + limit;
        let peers = cluster.initial_cluster();
        // Unique per demo, so a member never joins another demo's cluster.
        let token = dir
            .file_name()
            .map_or_else(|| "verge-demo".into(), |n| n.to_string_lossy().into_owned());
        for i in 0..cluster.members.len() {
            let child = cluster.members[i]
                .spawn(program, dir, &peers, &token)
                .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
            cluster.members[i].process = Some(child);
            let url = format!("http://{}:{ETCD_PEER_PORT}/version", cluster.members[i].ip);
            cluster
                .wait_for(i, &http, &url, |_| true, give_up)
                .await
                .map_err(|why| cluster.failure(&why))?;
        }
        for i in 0..cluster.members.len() {
            let url = format!("{}/health", cluster.client_url(i));
            let healthy = |body: &[u8]| {
                serde_json::from_slice::<serde_json::Value>(body)
                    .is_ok_and(|health| health["health"] == "true")
            };
            cluster
                .wait_for(i, &http, &url, healthy, give_up)
                .await
                .map_err(|why| cluster.failure(&why))?;
        }
        Ok(cluster)
    }

    /// Every member's client URL, in member order: `http://127.0.B.x:2379`.
    pub fn client_urls(&self) -> Vec<String> {
        (0..self.members.len())
            .map(|i| self.client_url(i))
            .collect()
    }

    fn client_url(&self, i: usize) -> String {
        format!("http://{}:{ETCD_CLIENT_PORT}", self.members[i].ip)
    }

    /// Kills every member (SIGKILL: the data goes with the demo) and reaps it.
    pub fn stop(&mut self) {
        for member in &mut self.members {
            if let Some(mut child) = member.process.take() {
                // An error means it had exited already; `wait` reaps it either way.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// `name=http://ip:2380,…` for `--initial-cluster`.
    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://{}:{ETCD_PEER_PORT}", m.name, m.ip))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Waits until member `i` answers `GET url` with 200 and a body `ok` accepts; `Err` when
    /// its process exits or `give_up` passes.
    async fn wait_for(
        &mut self,
        i: usize,
        http: &Client<HttpConnector, Empty<Bytes>>,
        url: &str,
        ok: impl Fn(&[u8]) -> bool,
        give_up: Instant,
    ) -> Result<(), String> {
        loop {
            let member = &mut self.members[i];
            if let Some(Ok(Some(status))) = member.process.as_mut().map(Child::try_wait) {
                return Err(format!("{} exited ({status})", member.name));
            }
            if let Some(body) = get(http, url).await {
                if ok(&body) {
                    return Ok(());
                }
            }
            if Instant::now() >= give_up {
                return Err(format!("{} did not answer {url} in time", member.name));
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }

    /// `why`, with the last lines of every member's log.
    fn failure(&self, why: &str) -> String {
        let mut text = format!("etcd did not start: {why}");
        for member in &self.members {
            let log = std::fs::read_to_string(&member.log).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
            text += &format!("\n--- {} ({}):\n{tail}", member.name, member.log.display());
        }
        text
    }
}

impl Member {
    fn spawn(
        &self,
        program: &Path,
        dir: &Path,
        peers: &str,
        token: &str,
    ) -> std::io::Result<Child> {
        let client_url = format!("http://{}:{ETCD_CLIENT_PORT}", self.ip);
        let peer_url = format!("http://{}:{ETCD_PEER_PORT}", self.ip);
        let log = File::create(&self.log)?;
        let mut command = Command::new(program);
        command
            .arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(dir.join(&self.name))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", peers])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", token])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // etcd reads its flags from ETCD_* too, and refuses a flag given both ways.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ETCD_") {
                command.env_remove(key);
            }
        }
        command.spawn()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The body of a 200 answer to `GET url`; `None` on any other answer, error or timeout.
async fn get(http: &Client<HttpConnector, Empty<Bytes>>, url: &str) -> Option<Bytes> {
    let uri: http::Uri = url.parse().ok()?;
    let exchange = async {
        let response = http.get(uri).await.ok()?;
        if response.status() != http::StatusCode::OK {
            return None;
        }
        Some(response.into_body().collect().await.ok()?.to_bytes())
    };
    tokio::time::timeout(PROBE_TIMEOUT, exchange)
        .await
        .ok()
        .flatten()
}
