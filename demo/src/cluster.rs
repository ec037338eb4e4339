//! A running demo: the sample origin, control and every cache node in this process, each node
//! behind a delay link in its region, started from the [`topology`](crate::topology) and
//! stopped together.
//!
//! Latency is not configured per path: it emerges from who connects to whom. A client in eu
//! reaching an eu edge crosses the edge's link from an eu address (local delay); the edge's
//! connection to a us shield leaves from the edge's eu address and crosses the shield's link
//! (us–eu delay); and so on to the origin.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;
use verge_control::service::Control;
use verge_control::ControlNode;
use verge_edge::EdgeRole;
use verge_node::Node;
use verge_origin_shield::ShieldRole;

use crate::delay::{DelayLink, LinkSettings};
use crate::origin::{self, SampleOrigin};
use crate::readiness::{NodeSeen, Observed, Readiness};
use crate::state::{ControlEndpoints, DemoState, NodeEndpoints, PathLatency, RegionInfo};
use crate::topology::{self, DemoOptions, NodePlan, Role, HOSTNAME};

/// How long stopping may take, all nodes draining at once (their grace is 2 s).
const STOP_LIMIT: Duration = Duration::from_secs(5);

/// Why a demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("invalid demo options: {0}")]
    Options(String),
    /// A generated configuration did not parse (a bug in the demo).
    #[error("{0}")]
    Config(String),
    #[error("cannot listen on {addr} for {what}: {source} (the demo needs the whole 127.0.0.0/8 on loopback, as Linux has it; elsewhere add aliases such as 127.2.0.1)")]
    Bind {
        what: String,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error("{node} did not start: {source}")]
    Node {
        node: String,
        source: verge_node::StartError,
    },
    #[error("control did not start: {0}")]
    Control(#[from] verge_control::StartError),
    #[error("cannot create control's data directory: {0}")]
    DataDir(io::Error),
    #[error("not ready after {after:?}, still waiting for {waiting}")]
    NotReady { after: Duration, waiting: String },
}

/// The future a role's `run` takes: completes when the demo stops it.
type Stop = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A spawned role; told to stop when stopped or dropped.
struct Running {
    name: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Running {
    fn spawn<F>(name: &str, run: impl FnOnce(Stop) -> F) -> Running
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<()>();
        let stop: Stop = Box::pin(async move {
            let _ = rx.await;
        });
        // One process, many roles: the span names the role in what it logs.
        let task = tokio::spawn(run(stop).instrument(tracing::info_span!("role", id = name)));
        Running {
            name: name.to_string(),
            stop: Some(tx),
            task: Some(task),
        }
    }

    fn signal(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    /// Signals, then waits until `deadline` for the role to finish; past it, aborts it.
    async fn stop(mut self, deadline: Instant) {
        self.signal();
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                tracing::warn!(role = %self.name, "did not stop in time; aborted");
                task.abort();
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.signal();
    }
}

/// A cache node of the demo: where it is, the link in front of it, and the node itself
/// while it runs (`None` once killed).
struct NodePart {
    plan: NodePlan,
    link: DelayLink,
    running: Option<Running>,
}

/// Control while it runs: the task and the handle readiness reads.
struct ControlPart {
    running: Running,
    control: Arc<Control>,
}

/// A running demo. [`Demo::shutdown`] stops it cleanly; dropping it (say, on a start error)
/// tells every part to stop without waiting. Parts can be killed and restored
/// ([`Demo::kill`], [`Demo::restore`]) behind their links, which keep their addresses.
pub struct Demo {
    /// Every endpoint, as `--state FILE` writes it.
    pub state: DemoState,
    options: DemoOptions,
    /// Control's purge log, kept across a control restart.
    data_dir: PathBuf,
    token: String,
    control: Option<ControlPart>,
    /// In front of control's node listener, in the origin's region.
    control_link: DelayLink,
    /// In front of control's admin listener, on 127.0.0.1.
    admin_link: DelayLink,
    nodes: Vec<NodePart>,
    origin_link: DelayLink,
    origin: Option<SampleOrigin>,
    /// Control's data directory when the demo made it; removed when the demo ends.
    _data_dir: Option<tempfile::TempDir>,
}

/// Who a name given to [`Demo::kill`] / [`Demo::restore`] is.
enum Part {
    Origin,
    Control,
    Node(usize),
}

impl Demo {
    /// Starts everything the options describe and waits until it is ready: every node seen
    /// up and connected in control, every edge routing with a table that names every shield
    /// healthy (see [`Readiness`]).
    pub async fn start(options: DemoOptions) -> Result<Demo, DemoError> {
        options.validate().map_err(DemoError::Options)?;
        let region = |id: &str| options.regions.iter().find(|r| r.id == id).cloned();
        let origin_region = region(&options.origin_region)
            .ok_or_else(|| DemoError::Options("no origin region".into()))?;
        let origin_addr = SocketAddr::new(topology::origin_ip(&origin_region), 0);
        let origin = SampleOrigin::start(origin_addr)
            .await
            .map_err(bind_error("the sample origin", origin_addr))?;
        let origin_link = DelayLink::start(
            origin_addr,
            origin.addr(),
            link_settings(&options, &origin_region.id),
        )
        .await
        .map_err(bind_error("the origin's delay link", origin_addr))?;
        let control_addr = SocketAddr::new(topology::control_ip(&origin_region), 0);
        let control_link =
            DelayLink::bind(control_addr, link_settings(&options, &origin_region.id))
                .await
                .map_err(bind_error("control's delay link", control_addr))?;
        // Operators' address for control's admin API, stable across a control restart: a
        // link on 127.0.0.1 (no delay for peers there).
        let admin_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        let admin_link = DelayLink::bind(admin_addr, link_settings(&options, &origin_region.id))
            .await
            .map_err(bind_error("control's admin link", admin_addr))?;

        let mut owned_dir = None;
        let data_dir = match &options.data_dir {
            Some(dir) => dir.clone(),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("verge-demo-")
                    .tempdir()
                    .map_err(DemoError::DataDir)?;
                let path = dir.path().to_path_buf();
                owned_dir = Some(dir);
                path
            }
        };
        let token = options.token.clone().unwrap_or_else(random_token);
        let (node, control) = bind_control(&options, &data_dir, &token).await?;
        let control_link = control_link.relay_to(node.node_addr);
        let admin_link = admin_link.relay_to(node.admin_addr);
        let mut demo = Demo {
            state: DemoState {
                hostname: HOSTNAME.to_string(),
                dns: String::new(),
                steering: String::new(),
                control: ControlEndpoints {
                    api: control_link.url(),
                    admin: admin_link.url(),
                    token: token.clone(),
                },
                origin: origin_link.url(),
                nodes: Vec::new(),
                regions: options
                    .regions
                    .iter()
                    .map(|r| RegionInfo {
                        id: r.id.clone(),
                        block: r.block(),
                        client_addr: topology::client_ip(r).to_string(),
                    })
                    .collect(),
                samples: origin::samples(),
                latency: latency_table(&options),
            },
            options: options.clone(),
            data_dir,
            token,
            control: None,
            control_link,
            admin_link,
            nodes: Vec::new(),
            origin_link,
            origin: Some(origin),
            _data_dir: owned_dir,
        };
        demo.run_control(node, control);

        let plans = topology::nodes(&options);
        for plan in &plans {
            let listen = SocketAddr::new(plan.ip, 0);
            let link = DelayLink::bind(listen, link_settings(&options, &plan.region.id))
                .await
                .map_err(bind_error(&format!("{}'s delay link", plan.id), listen))?;
            let advertise = format!("http://{}", link.addr());
            let (data, admin, running) = start_node(
                plan,
                &demo.state.origin,
                &demo.state.control.api,
                &advertise,
                &topology::node_token(&demo.state.control.token),
            )
            .await?;
            demo.nodes.push(NodePart {
                plan: plan.clone(),
                link: link.relay_to(data),
                running: Some(running),
            });
            demo.state.nodes.push(NodeEndpoints {
                role: plan.role.as_str().to_string(),
                id: plan.id.clone(),
                region: plan.region.id.clone(),
                http: advertise,
                https: None,
                admin: format!("http://{admin}"),
            });
        }
        let control = demo.control_handle()?;
        wait_ready(&control, &plans, options.ready_timeout).await?;
        Ok(demo)
    }

    fn control_handle(&self) -> Result<Arc<Control>, DemoError> {
        self.control
            .as_ref()
            .map(|c| Arc::clone(&c.control))
            .ok_or_else(|| DemoError::Options("control is not running".into()))
    }

    /// Spawns a bound control and notes its endpoints; its node and admin listeners are
    /// reached through links whose addresses do not change (DNS and HTTP steering do).
    fn run_control(&mut self, node: ControlNode, control: Arc<Control>) {
        let shown = |addr: Option<SocketAddr>, scheme: &str| {
            addr.map_or_else(String::new, |a| format!("{scheme}{a}"))
        };
        self.state.dns = shown(node.dns_addr, "");
        self.state.steering = shown(node.steering_addr, "http://");
        self.control_link.retarget(node.node_addr);
        self.admin_link.retarget(node.admin_addr);
        let running = Running::spawn("control", |stop| node.run(stop));
        self.control = Some(ControlPart { running, control });
    }

    /// The names [`Demo::kill`] and [`Demo::restore`] take: `origin`, `control`, every node id.
    pub fn part_names(&self) -> Vec<String> {
        ["origin", "control"]
            .into_iter()
            .map(String::from)
            .chain(self.nodes.iter().map(|n| n.plan.id.clone()))
            .collect()
    }

    fn part(&self, name: &str) -> Result<Part, String> {
        match name {
            "origin" => Ok(Part::Origin),
            "control" => Ok(Part::Control),
            _ => self
                .nodes
                .iter()
                .position(|n| n.plan.id == name)
                .map(Part::Node)
                .ok_or_else(|| {
                    format!(
                        "no part {name:?} in the demo; it has {}",
                        self.part_names().join(", ")
                    )
                }),
        }
    }

    /// Stops `name` (a node id, `control` or `origin`) for real; its delay link stays, so
    /// peers get connection errors from it until [`Demo::restore`].
    pub async fn kill(&mut self, name: &str) -> Result<(), String> {
        self.kill_all(&[name])
            .await
            .pop()
            .unwrap_or_else(|| Err("nothing to kill".into()))
    }

    /// Kills every part named at once: all are told to stop before any is waited for, so
    /// their draining overlaps. One result per name, in order.
    pub async fn kill_all(&mut self, names: &[&str]) -> Vec<Result<(), String>> {
        enum Stopping {
            Role(Running),
            Origin(SampleOrigin),
        }
        let mut stopping = Vec::new();
        let mut results = Vec::new();
        for name in names {
            let killed = || format!("{name} is already killed");
            let taken = self.part(name).and_then(|part| match part {
                Part::Origin => self.origin.take().map(Stopping::Origin).ok_or_else(killed),
                Part::Control => self
                    .control
                    .take()
                    .map(|c| Stopping::Role(c.running))
                    .ok_or_else(killed),
                Part::Node(i) => self.nodes[i]
                    .running
                    .take()
                    .map(Stopping::Role)
                    .ok_or_else(killed),
            });
            match taken {
                Ok(mut part) => {
                    if let Stopping::Role(role) = &mut part {
                        role.signal();
                    }
                    stopping.push(part);
                    results.push(Ok(()));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        let deadline = Instant::now() + STOP_LIMIT;
        for part in stopping {
            match part {
                Stopping::Role(role) => role.stop(deadline).await,
                Stopping::Origin(origin) => origin.stop().await,
            }
        }
        results
    }

    /// Starts a fresh `name` with the configuration it had (same id; control with the same
    /// data directory, so its purge log survives) and puts it behind its link.
    pub async fn restore(&mut self, name: &str) -> Result<(), String> {
        let live = || format!("{name} is running: only a killed part can be restored");
        match self.part(name)? {
            Part::Origin => {
                if self.origin.is_some() {
                    return Err(live());
                }
                let listen = SocketAddr::new(self.origin_link.addr().ip(), 0);
                let origin = SampleOrigin::start(listen)
                    .await
                    .map_err(|e| format!("cannot restart the sample origin: {e}"))?;
                self.origin_link.retarget(origin.addr());
                self.origin = Some(origin);
            }
            Part::Control => {
                if self.control.is_some() {
                    return Err(live());
                }
                let (node, control) = bind_control(&self.options, &self.data_dir, &self.token)
                    .await
                    .map_err(|e| format!("cannot restart control: {e}"))?;
                self.run_control(node, control);
            }
            Part::Node(i) => {
                if self.nodes[i].running.is_some() {
                    return Err(live());
                }
                let part = &self.nodes[i];
                let advertise = part.link.url();
                let (data, admin, running) = start_node(
                    &part.plan,
                    &self.state.origin,
                    &self.state.control.api,
                    &advertise,
                    &topology::node_token(&self.state.control.token),
                )
                .await
                .map_err(|e| format!("cannot restart {name}: {e}"))?;
                let part = &mut self.nodes[i];
                part.link.retarget(data);
                part.running = Some(running);
                if let Some(node) = self.state.nodes.iter_mut().find(|n| n.id == name) {
                    node.admin = format!("http://{admin}");
                }
            }
        }
        Ok(())
    }

    /// Stops everything and waits until it has: the nodes drain together, then control stops,
    /// then the links and the origin behind them.
    pub async fn shutdown(mut self) {
        let deadline = Instant::now() + STOP_LIMIT;
        let mut running: Vec<Running> = self
            .nodes
            .iter_mut()
            .filter_map(|n| n.running.take())
            .collect();
        for node in &mut running {
            node.signal();
        }
        for node in running {
            node.stop(deadline).await;
        }
        if let Some(control) = self.control.take() {
            control.running.stop(Instant::now() + STOP_LIMIT).await;
        }
        for node in self.nodes.drain(..) {
            node.link.stop().await;
        }
        self.control_link.stop().await;
        self.admin_link.stop().await;
        self.origin_link.stop().await;
        if let Some(origin) = self.origin.take() {
            origin.stop().await;
        }
    }
}

/// A link in `region` with the demo's latency and jitter.
fn link_settings(options: &DemoOptions, region: &str) -> LinkSettings {
    LinkSettings {
        jitter: options.jitter,
        ..LinkSettings::new(region, &options.regions, &options.latency)
    }
}

fn bind_error(what: &str, addr: SocketAddr) -> impl FnOnce(io::Error) -> DemoError {
    let what = what.to_string();
    move |source| DemoError::Bind { what, addr, source }
}

/// Binds control as the demo configures it; its node listener on its region's control
/// address (behind the control link there).
async fn bind_control(
    options: &DemoOptions,
    data_dir: &std::path::Path,
    token: &str,
) -> Result<(ControlNode, Arc<Control>), DemoError> {
    let toml = topology::control_toml(options, data_dir, token);
    let mut config = topology::control_config(&toml).map_err(DemoError::Config)?;
    if let Some(region) = options
        .regions
        .iter()
        .find(|r| r.id == options.origin_region)
    {
        config.listen = SocketAddr::new(topology::control_ip(region), 0);
    }
    let node = ControlNode::bind(config).await?;
    let control = Arc::clone(node.control());
    Ok((node, control))
}

/// Binds and spawns one cache node: (data address, admin address, the running node).
async fn start_node(
    plan: &NodePlan,
    origin_url: &str,
    control_url: &str,
    advertise: &str,
    node_token: &str,
) -> Result<(SocketAddr, SocketAddr, Running), DemoError> {
    let failed = |source| DemoError::Node {
        node: plan.id.clone(),
        source,
    };
    match plan.role {
        Role::Edge => {
            let toml = topology::edge_toml(plan, origin_url, control_url, advertise, node_token);
            let config = topology::edge_config(&toml).map_err(DemoError::Config)?;
            run_node::<EdgeRole>(&plan.id, &config)
                .await
                .map_err(failed)
        }
        Role::Shield => {
            let toml = topology::shield_toml(plan, origin_url, control_url, advertise, node_token);
            let config = topology::shield_config(&toml).map_err(DemoError::Config)?;
            run_node::<ShieldRole>(&plan.id, &config)
                .await
                .map_err(failed)
        }
    }
}

/// Binds a node of role `R` and runs it until the demo stops; its data and admin addresses.
async fn run_node<R: verge_node::Role>(
    id: &str,
    config: &R::Config,
) -> Result<(SocketAddr, SocketAddr, Running), verge_node::StartError> {
    let clock = std::sync::Arc::new(verge_cache::SystemClock);
    let node = Node::<R>::bind(config, verge_config::ConfigSource::CommandLine, clock).await?;
    let (data, admin) = (node.data_addr(), node.admin_addr());
    Ok((data, admin, Running::spawn(id, |stop| node.run(stop))))
}

/// Polls control until [`Readiness::waiting`] is empty, or `limit` has passed.
async fn wait_ready(
    control: &Control,
    plans: &[NodePlan],
    limit: Duration,
) -> Result<(), DemoError> {
    let deadline = Instant::now() + limit;
    let mut readiness = Readiness::default();
    loop {
        let waiting = readiness.waiting(plans, &observe(control));
        if waiting.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(DemoError::NotReady {
                after: limit,
                waiting: waiting.join(", "),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn observe(control: &Control) -> Observed {
    let table = control.routing();
    Observed {
        table_version: table.version,
        healthy_shields: table.healthy_shields().count(),
        nodes: control
            .nodes()
            .iter()
            .map(|v| NodeSeen {
                id: v.entry.id.as_str().to_string(),
                up: v.state == "up" && v.connected,
                table_version: v.table_version,
            })
            .collect(),
    }
}

/// The one-way latency of every ordered pair of regions.
fn latency_table(options: &DemoOptions) -> Vec<PathLatency> {
    let mut table = Vec::new();
    for a in &options.regions {
        for b in &options.regions {
            table.push(PathLatency {
                from: a.id.clone(),
                to: b.id.clone(),
                one_way_ms: options.latency.one_way(&a.id, &b.id).as_secs_f64() * 1000.0,
            });
        }
    }
    table
}

/// A token no one guesses: 128 bits from the standard library's randomly keyed hasher.
fn random_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let word = |n: u64| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(n);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        h.finish()
    };
    format!("demo-{:016x}{:016x}", word(1), word(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_and_differ() {
        let (a, b) = (random_token(), random_token());
        assert!(a.len() >= 32);
        assert_ne!(a, b);
    }
}
