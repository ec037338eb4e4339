//! The HA demo's control plane (`verge demo --ha`): an [`EtcdCluster`] and control replicas
//! that share it, each replica a child process of the `verge` binary (`verge control --config
//! FILE`), so that a user can really `kill -9` one and watch another take over.
//!
//! Each replica listens on fixed ports of its own loopback address ([`HaPlan`]); nodes reach
//! its node listener through a delay link in the origin's region, as they reach the one
//! control of the plain demo. Its file, its log and etcd's data are in one temporary
//! directory. Dropping [`Replicas`] kills every replica and etcd member, then removes the
//! directory.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tempfile::TempDir;
use tokio::time::Instant;
use verge_config::wire::RoutingTable;
use verge_control::client::AdminClient;

use crate::cluster::{link_settings, DemoError};
use crate::delay::DelayLink;
use crate::etcd::EtcdCluster;
use crate::readiness::{self, NodeSeen, Observed};
use crate::replica_plan::{HaPlan, ReplicaPlan, HA_BLOCKS};
use crate::topology::{self, DemoOptions, HaOptions};

/// Bound on one question to a replica's admin API: a killed replica answers nothing.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause between two looks while waiting for the replicas.
const POLL: Duration = Duration::from_millis(100);

/// What `GET /v1/replica` says, as far as the demo reads it.
#[derive(Debug, Clone, Deserialize)]
pub struct ReplicaSeen {
    pub name: String,
    pub leader: Option<String>,
    pub is_leader: bool,
    /// The newest purge committed: the next one gets this plus one.
    pub purge_head: u64,
}

/// A replica as the demo shows it (and writes it in its state file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaInfo {
    pub name: String,
    /// `None` once killed through the demo (a `kill -9` from outside leaves the pid).
    pub pid: Option<u32>,
    /// Its admin API (`http://127.0.B.i:7071`).
    pub admin: String,
    /// Its node listener as nodes reach it: the delay link.
    pub api: String,
}

/// A `GET /v1/nodes` entry, as far as readiness reads it.
#[derive(Deserialize)]
struct NodeJson {
    id: String,
    state: String,
    connected: bool,
    table_version: u64,
}

struct Replica {
    plan: ReplicaPlan,
    config: PathBuf,
    log: PathBuf,
    /// In front of its node listener, in the origin's region.
    link: DelayLink,
    admin: AdminClient,
    /// `None` once killed through the demo.
    process: Option<Child>,
}

/// The running replicas and their etcd cluster; see the module documentation.
pub struct Replicas {
    replicas: Vec<Replica>,
    etcd: EtcdCluster,
    verge: PathBuf,
    /// etcd's data, the replicas' files and every log; removed once the processes are gone
    /// (fields drop after [`Drop::drop`] has killed them).
    dir: TempDir,
}

impl Replicas {
    /// Starts etcd, then the replicas, and waits until every replica knows a leader. The
    /// replicas' node listeners are reached through links in `options`' origin region.
    pub async fn start(
        options: &DemoOptions,
        ha: &HaOptions,
        token: &str,
    ) -> Result<Replicas, DemoError> {
        // An HA demo killed with SIGKILL could not stop its etcd members and replicas: they go
        // now, before their addresses are looked at.
        let reaped = crate::orphans::reap(&std::env::temp_dir());
        if !reaped.processes.is_empty() {
            tracing::warn!(
                processes = ?reaped.processes,
                dirs = ?reaped.dirs,
                "stopped processes an HA demo that did not exit cleanly left behind"
            );
        }
        let plan = free_block()?;
        let region = options
            .regions
            .iter()
            .find(|r| r.id == options.origin_region)
            .ok_or_else(|| DemoError::Options("no origin region".into()))?;
        let dir = tempfile::Builder::new()
            .prefix(crate::orphans::DIR_PREFIX)
            .tempdir()
            .map_err(DemoError::DataDir)?;
        crate::orphans::record_demo(dir.path()).map_err(DemoError::DataDir)?;
        let give_up = Instant::now() + options.ready_timeout;
        let etcd = EtcdCluster::start(
            &ha.etcd,
            &plan.etcd_members(),
            dir.path(),
            options.ready_timeout,
        )
        .await
        .map_err(DemoError::Etcd)?;
        let mut replicas = Replicas {
            replicas: Vec::new(),
            etcd,
            verge: ha.verge.clone(),
            dir,
        };
        let settings = link_settings(options, &region.id, topology::control_ip(region));
        for replica in plan.replicas() {
            let listen = SocketAddr::new(topology::control_ip(region), 0);
            let link = DelayLink::start(listen, replica.listen, settings.clone())
                .await
                .map_err(|source| DemoError::Bind {
                    what: format!("{}'s delay link", replica.name),
                    addr: listen,
                    source,
                })?;
            let config = replicas.dir.path().join(format!("{}.toml", replica.name));
            let toml =
                topology::replica_toml(options, &replica, &replicas.etcd.client_urls(), token);
            // Checked here, so that a bug in the demo is reported as such, not as a replica
            // that exited.
            topology::control_config(&toml).map_err(DemoError::Config)?;
            std::fs::write(&config, toml).map_err(DemoError::DataDir)?;
            let admin = AdminClient::new(&format!("http://{}", replica.admin), token)
                .map_err(|e| DemoError::Config(e.to_string()))?;
            let log = replicas.dir.path().join(format!("{}.log", replica.name));
            let mut replica = Replica {
                plan: replica,
                config,
                log,
                link,
                admin,
                process: None,
            };
            let child = replica
                .spawn(&replicas.verge)
                .map_err(|e| DemoError::Replica {
                    name: replica.plan.name.clone(),
                    why: format!("cannot run {}: {e}", replicas.verge.display()),
                })?;
            replica.process = Some(child);
            replicas.replicas.push(replica);
        }
        replicas.wait_led(give_up, options.ready_timeout).await?;
        Ok(replicas)
    }

    /// The etcd members' client URLs.
    pub fn etcd_urls(&self) -> Vec<String> {
        self.etcd.client_urls()
    }

    /// Where the replicas' and etcd's logs are (removed when the demo stops).
    pub fn log_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The replicas' node listeners (their links), for the nodes' `control.urls`.
    pub fn node_urls(&self) -> Vec<String> {
        self.replicas.iter().map(|r| r.link.url()).collect()
    }

    /// Replica `i`'s DNS and HTTP steering addresses.
    pub fn geo(&self, i: usize) -> Option<(SocketAddr, SocketAddr)> {
        self.replicas.get(i).map(|r| (r.plan.dns, r.plan.steering))
    }

    pub fn infos(&self) -> Vec<ReplicaInfo> {
        self.replicas
            .iter()
            .map(|r| ReplicaInfo {
                name: r.plan.name.clone(),
                pid: r.process.as_ref().map(Child::id),
                admin: format!("http://{}", r.plan.admin),
                api: r.link.url(),
            })
            .collect()
    }

    pub fn names(&self) -> Vec<String> {
        self.replicas.iter().map(|r| r.plan.name.clone()).collect()
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.replicas.iter().position(|r| r.plan.name == name)
    }

    /// Kills replica `name` with SIGKILL (no lease revoked: another replica leads once the
    /// lease expires) and reaps it.
    pub fn kill(&mut self, name: &str) -> Result<(), String> {
        let i = self
            .index(name)
            .ok_or_else(|| format!("no replica {name:?}"))?;
        let mut child = self.replicas[i]
            .process
            .take()
            .ok_or_else(|| format!("{name} is already killed"))?;
        // An error means it had exited already; `wait` reaps it either way.
        let _ = child.kill();
        let _ = child.wait();
        Ok(())
    }

    /// Starts replica `name` again, on its addresses and file, after [`Replicas::kill`].
    pub fn restore(&mut self, name: &str) -> Result<(), String> {
        let i = self
            .index(name)
            .ok_or_else(|| format!("no replica {name:?}"))?;
        let replica = &mut self.replicas[i];
        if replica.process.is_some() {
            return Err(format!(
                "{name} is running: only a killed part can be restored"
            ));
        }
        let child = replica
            .spawn(&self.verge)
            .map_err(|e| format!("cannot run {}: {e}", self.verge.display()))?;
        replica.process = Some(child);
        Ok(())
    }

    /// What every replica says of the replica set, in order; `None` from one that does not
    /// answer.
    pub async fn views(&self) -> Vec<Option<ReplicaSeen>> {
        let mut views = Vec::new();
        for replica in &self.replicas {
            let view = ask(&replica.admin, "/v1/replica").await;
            views.push(view.and_then(|v| serde_json::from_value::<ReplicaSeen>(v).ok()));
        }
        views
    }

    /// One look at every replica that answers, merged ([`readiness::merge`]).
    pub async fn observe(&self) -> Observed {
        let mut looks = Vec::new();
        for replica in &self.replicas {
            looks.extend(look(&replica.admin).await);
        }
        readiness::merge(&looks)
    }

    /// Waits until every replica answers with a leader known; `Err` when one exits or
    /// `give_up` passes (after `limit`).
    async fn wait_led(&mut self, give_up: Instant, limit: Duration) -> Result<(), DemoError> {
        loop {
            for replica in &mut self.replicas {
                if let Some(Ok(Some(status))) = replica.process.as_mut().map(Child::try_wait) {
                    return Err(DemoError::Replica {
                        name: replica.plan.name.clone(),
                        why: format!("exited ({status}); its log:\n{}", log_tail(&replica.log)),
                    });
                }
            }
            let views = self.views().await;
            let waiting: Vec<String> = self
                .replicas
                .iter()
                .zip(&views)
                .filter(|(_, view)| view.as_ref().is_none_or(|v| v.leader.is_none()))
                .map(|(r, _)| format!("{} to know a leader", r.plan.name))
                .collect();
            if waiting.is_empty() {
                return Ok(());
            }
            if Instant::now() >= give_up {
                return Err(DemoError::NotReady {
                    after: limit,
                    waiting: waiting.join(", "),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Kills every replica, then etcd; stops the links. The directory goes with `self`.
    pub async fn shutdown(mut self) {
        self.kill_all();
        for replica in self.replicas.drain(..) {
            replica.link.stop().await;
        }
    }

    fn kill_all(&mut self) {
        for replica in &mut self.replicas {
            if let Some(mut child) = replica.process.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        self.etcd.stop();
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        self.kill_all();
    }
}

impl Replica {
    /// Runs `verge control --config FILE`, its output appended to its log.
    fn spawn(&self, verge: &Path) -> std::io::Result<Child> {
        let log = File::options().create(true).append(true).open(&self.log)?;
        Command::new(verge)
            .arg("control")
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
    }
}

/// The first block of [`HA_BLOCKS`] whose TCP addresses are all free: another HA demo (or
/// anything else) may hold some. Checked by binding and releasing each; a process that takes
/// one in between makes a replica or an etcd member fail to start, and says so.
fn free_block() -> Result<HaPlan, DemoError> {
    let mut taken = Vec::new();
    for block in HA_BLOCKS {
        let plan = HaPlan { block };
        match plan
            .tcp_addrs()
            .into_iter()
            .find(|addr| TcpListener::bind(addr).is_err())
        {
            None => return Ok(plan),
            Some(addr) => taken.push(addr.to_string()),
        }
    }
    Err(DemoError::HaAddresses(taken.join(", ")))
}

/// `GET path` on a replica's admin API as JSON; `None` when it does not answer in time.
async fn ask(admin: &AdminClient, path: &str) -> Option<serde_json::Value> {
    tokio::time::timeout(ASK_TIMEOUT, admin.get_json(path))
        .await
        .ok()?
        .ok()
}

/// One replica's routing table and view of the nodes; `None` when it does not answer.
async fn look(admin: &AdminClient) -> Option<Observed> {
    let table: RoutingTable = serde_json::from_value(ask(admin, "/v1/routing").await?).ok()?;
    let nodes: Vec<NodeJson> = serde_json::from_value(ask(admin, "/v1/nodes").await?).ok()?;
    Some(Observed {
        table_version: table.version,
        healthy_shields: table.healthy_shields().count(),
        nodes: nodes
            .into_iter()
            .map(|n| NodeSeen {
                up: n.state == "up" && n.connected,
                id: n.id,
                table_version: n.table_version,
            })
            .collect(),
    })
}

/// The last lines of a replica's log.
fn log_tail(path: &Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
