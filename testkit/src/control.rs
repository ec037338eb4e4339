//! The control plane in tests: a real [`ControlNode`] on loopback with its admin client, real
//! shield nodes registered with it, and a [`Relay`] that can cut a node off from control and
//! reconnect it, as a network partition would.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use verge_config::wire::{PurgeSpec, PurgeStatus};
use verge_config::{ControlConfig, ShieldConfig};
use verge_control::client::AdminClient;
use verge_control::ControlNode;

use crate::{within, FakeOrigin, RunningNode};

pub const TOKEN: &str = "control-test-token-0123456789";

/// Control settings that make tests quick: fast probes and heartbeats, short timeouts.
pub const FAST: &[&str] = &[
    "health.heartbeat_interval = \"100ms\"",
    "health.heartbeat_timeout = \"400ms\"",
    "health.probe_interval = \"50ms\"",
    "health.probe_timeout = \"200ms\"",
    "health.rise = 2",
    "health.fall = 2",
    "purge.shield_ack_timeout = \"1s\"",
    "purge.rate_per_second = 10000",
    "purge.burst = 10000",
];

/// The `[control]` tweaks of a node talking to control at `url`.
pub fn node_control_tweaks(url: &str) -> Vec<String> {
    vec![
        format!("control.url = \"{url}\""),
        "control.heartbeat_interval = \"100ms\"".to_string(),
        "control.reconnect_min = \"20ms\"".to_string(),
        "control.reconnect_max = \"200ms\"".to_string(),
    ]
}

/// A running control service; stopped when dropped.
pub struct TestControl {
    pub node_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub admin: AdminClient,
    stop: Option<oneshot::Sender<()>>,
    run: Option<JoinHandle<()>>,
}

/// Starts control with its data in `data_dir`, listening on `listen` (port 0: any), with the
/// [`FAST`] settings plus `tweaks` (dotted `section.key = value` lines, or top-level
/// `key = value` ones such as `rules = [...]`).
pub async fn start_control(data_dir: &Path, listen: SocketAddr, tweaks: &[&str]) -> TestControl {
    let mut top: Vec<String> = Vec::new();
    let mut sections: Vec<(String, Vec<String>)> = Vec::new();
    let mut put = |line: &str| {
        let (key, value) = line.split_once('=').expect("tweak is key = value");
        let Some((section, key)) = key.trim().split_once('.') else {
            top.push(line.to_string());
            return;
        };
        let entry = format!("{key} = {}", value.trim());
        match sections.iter_mut().find(|(s, _)| s == section) {
            Some((_, lines)) => {
                lines.retain(|l| !l.starts_with(&format!("{key} =")));
                lines.push(entry);
            }
            None => sections.push((section.to_string(), vec![entry])),
        }
    };
    put(&format!("controller.listen = \"{listen}\""));
    put("controller.admin_listen = \"127.0.0.1:0\"");
    put(&format!(
        "controller.data_dir = {:?}",
        data_dir.display().to_string()
    ));
    put(&format!("controller.token = \"{TOKEN}\""));
    for tweak in FAST.iter().chain(tweaks) {
        put(tweak);
    }
    let toml: String = top
        .iter()
        .map(|line| format!("{line}\n"))
        .chain(
            sections
                .iter()
                .map(|(s, lines)| format!("[{s}]\n{}\n", lines.join("\n"))),
        )
        .collect();
    let config = ControlConfig::from_toml(&toml)
        .unwrap_or_else(|e| panic!("test control config is invalid:\n{toml}\n{e}"));
    let node = ControlNode::bind(config).await.unwrap();
    let (node_addr, admin_addr) = (node.node_addr, node.admin_addr);
    let (tx, run) = crate::spawn_until_stopped(|stopped| node.run(stopped));
    TestControl {
        node_addr,
        admin_addr,
        admin: AdminClient::new(&format!("http://{admin_addr}"), TOKEN).unwrap(),
        stop: Some(tx),
        run: Some(run),
    }
}

/// Submits the purge `spec` through `admin` and waits (up to 10 s) until every live node has
/// applied it; the final status.
pub async fn purge_everywhere(admin: &AdminClient, spec: &PurgeSpec) -> PurgeStatus {
    let accepted = admin.purge(spec).await.expect("purge accepted");
    admin
        .wait(accepted.id, Duration::from_secs(10))
        .await
        .expect("purge complete everywhere")
}

impl TestControl {
    pub fn url(&self) -> String {
        format!("http://{}", self.node_addr)
    }

    /// Stops control and waits until it has.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(run) = self.run.take() {
            within("control shutdown", Duration::from_secs(10), run)
                .await
                .unwrap();
        }
    }

    /// `GET /v1/nodes`: (id, state, connected, applied_seq) per node.
    pub async fn nodes(&self) -> Vec<(String, String, bool, u64)> {
        node_rows(&self.admin.get_json("/v1/nodes").await.unwrap())
    }

    /// Waits until exactly these nodes are registered, up and holding their streams.
    pub async fn wait_connected(&self, ids: &[&str]) {
        let mut want: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        want.sort();
        super::wait_until(
            "every node connected to control",
            Duration::from_secs(10),
            || async {
                let mut up: Vec<String> = self
                    .nodes()
                    .await
                    .into_iter()
                    .filter(|(_, state, connected, _)| state == "up" && *connected)
                    .map(|(id, ..)| id)
                    .collect();
                up.sort();
                up == want
            },
        )
        .await;
    }
}

impl Drop for TestControl {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A real shield node in front of `origin`, registered with control at `control_url`.
pub async fn start_shield_node(origin: &FakeOrigin, id: &str, control_url: &str) -> RunningNode {
    let control: String = node_control_tweaks(control_url)
        .iter()
        .map(|t| t.trim_start_matches("control.").to_string() + "\n")
        .collect();
    let toml = format!(
        "[shield]\nid = \"{id}\"\nregion = \"us\"\n[server]\nlisten = \"127.0.0.1:0\"\n\
         admin_listen = \"127.0.0.1:0\"\nshutdown_grace = \"1s\"\n\
         [origin]\nservers = [\"http://{}\"]\n[control]\n{control}",
        origin.addr()
    );
    let config = ShieldConfig::from_toml(&toml)
        .unwrap_or_else(|e| panic!("test shield config is invalid:\n{toml}\n{e}"));
    RunningNode::start::<verge_origin_shield::ShieldRole>(&config).await
}

/// A TCP relay to `target` that can be cut (every connection dropped, new ones refused) and
/// restored, to partition a node from control. It can also be bound before its target is
/// known ([`Relay::bind`], then [`Relay::relay_to`]): a node's advertised URL may name the
/// relay before the node, on port 0, has an address; connections before then are dropped.
pub struct Relay {
    pub addr: SocketAddr,
    cut: watch::Sender<bool>,
    open: Arc<AtomicBool>,
    target: Arc<std::sync::OnceLock<SocketAddr>>,
}

impl Relay {
    pub async fn start(target: SocketAddr) -> Relay {
        let relay = Relay::bind().await;
        relay.relay_to(target);
        relay
    }

    /// A relay with no target yet: it drops what it accepts until [`Relay::relay_to`].
    pub async fn bind() -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, cut_rx) = watch::channel(false);
        let open = Arc::new(AtomicBool::new(true));
        let accepting = Arc::clone(&open);
        let target = Arc::new(std::sync::OnceLock::new());
        let relayed = Arc::clone(&target);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let Some(&target) = relayed.get() else {
                    continue;
                };
                if !accepting.load(Ordering::SeqCst) {
                    continue;
                }
                let mut cut_rx = cut_rx.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut_rx.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Relay {
            addr,
            cut,
            open,
            target,
        }
    }

    /// Sets the target of a relay made by [`Relay::bind`] (once).
    pub fn relay_to(&self, target: SocketAddr) {
        assert!(self.target.set(target).is_ok(), "the relay has a target");
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Drops every relayed connection and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        let _ = self.cut.send(true);
    }

    /// Relays again.
    pub fn restore(&self) {
        let _ = self.cut.send(false);
        self.open.store(true, Ordering::SeqCst);
    }
}

/// The body of control's `GET /v1/nodes`, as (id, state, connected, applied_seq) per node.
pub fn node_rows(nodes: &serde_json::Value) -> Vec<(String, String, bool, u64)> {
    nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["id"].as_str().unwrap().to_string(),
                n["state"].as_str().unwrap().to_string(),
                n["connected"].as_bool().unwrap(),
                n["applied_seq"].as_u64().unwrap(),
            )
        })
        .collect()
}
