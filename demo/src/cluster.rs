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

/// A running demo. [`Demo::shutdown`] stops it cleanly; dropping it (say, on a start error)
/// tells every part to stop without waiting.
pub struct Demo {
    /// Every endpoint, as `--state FILE` writes it.
    pub state: DemoState,
    control: Option<Running>,
    nodes: Vec<Running>,
    links: Vec<DelayLink>,
    origin: Option<SampleOrigin>,
    /// Control's data directory when the demo made it; removed when the demo ends.
    _data_dir: Option<tempfile::TempDir>,
}

impl Demo {
    /// Starts everything the options describe and waits until every node is up in control,
    /// connected to its stream, and every edge routes to every shield.
    pub async fn start(options: DemoOptions) -> Result<Demo, DemoError> {
        options.validate().map_err(DemoError::Options)?;
        let link_settings = |region: &str| LinkSettings {
            jitter: options.jitter,
            ..LinkSettings::new(region, &options.regions, &options.latency)
        };
        let bind_error = |what: &str, addr: SocketAddr| {
            let what = what.to_string();
            move |source| DemoError::Bind { what, addr, source }
        };
        let region = |id: &str| options.regions.iter().find(|r| r.id == id).cloned();
        let origin_region = region(&options.origin_region)
            .ok_or_else(|| DemoError::Options("no origin region".into()))?;
        let origin_addr = SocketAddr::new(topology::origin_ip(&origin_region), 0);
        let origin = SampleOrigin::start(origin_addr)
            .await
            .map_err(bind_error("the sample origin", origin_addr))?;
        let origin_link =
            DelayLink::start(origin_addr, origin.addr(), link_settings(&origin_region.id))
                .await
                .map_err(bind_error("the origin's delay link", origin_addr))?;
        let mut demo = Demo {
            state: DemoState {
                hostname: HOSTNAME.to_string(),
                dns: String::new(),
                steering: String::new(),
                control: ControlEndpoints {
                    api: String::new(),
                    admin: String::new(),
                    token: String::new(),
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
            control: None,
            nodes: Vec::new(),
            links: vec![origin_link],
            origin: Some(origin),
            _data_dir: None,
        };

        let data_dir = match &options.data_dir {
            Some(dir) => dir.clone(),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("verge-demo-")
                    .tempdir()
                    .map_err(DemoError::DataDir)?;
                let path = dir.path().to_path_buf();
                demo._data_dir = Some(dir);
                path
            }
        };
        let token = options.token.clone().unwrap_or_else(random_token);
        let control = demo.start_control(&options, data_dir, &token).await?;

        let plans = topology::nodes(&options);
        let control_url = demo.state.control.api.clone();
        let origin_url = demo.state.origin.clone();
        for plan in &plans {
            let link = DelayLink::bind(SocketAddr::new(plan.ip, 0), link_settings(&plan.region.id))
                .await
                .map_err(bind_error(
                    &format!("{}'s delay link", plan.id),
                    SocketAddr::new(plan.ip, 0),
                ))?;
            let advertise = format!("http://{}", link.addr());
            let (data, admin, running) =
                start_node(plan, &origin_url, &control_url, &advertise).await?;
            demo.links.push(link.relay_to(data));
            demo.nodes.push(running);
            demo.state.nodes.push(NodeEndpoints {
                role: plan.role.as_str().to_string(),
                id: plan.id.clone(),
                region: plan.region.id.clone(),
                http: advertise,
                https: None,
                admin: format!("http://{admin}"),
            });
        }
        wait_ready(&control, &plans, options.ready_timeout).await?;
        Ok(demo)
    }

    async fn start_control(
        &mut self,
        options: &DemoOptions,
        data_dir: PathBuf,
        token: &str,
    ) -> Result<Arc<Control>, DemoError> {
        let toml = topology::control_toml(options, &data_dir, token);
        let config = topology::control_config(&toml).map_err(DemoError::Config)?;
        let node = ControlNode::bind(config).await?;
        let shown = |addr: Option<SocketAddr>, scheme: &str| {
            addr.map_or_else(String::new, |a| format!("{scheme}{a}"))
        };
        self.state.dns = shown(node.dns_addr, "");
        self.state.steering = shown(node.steering_addr, "http://");
        self.state.control = ControlEndpoints {
            api: format!("http://{}", node.node_addr),
            admin: format!("http://{}", node.admin_addr),
            token: token.to_string(),
        };
        let control = Arc::clone(node.control());
        self.control = Some(Running::spawn("control", |stop| node.run(stop)));
        Ok(control)
    }

    /// Stops everything and waits until it has: the nodes drain together, then control stops,
    /// then the links and the origin behind them.
    pub async fn shutdown(mut self) {
        let deadline = Instant::now() + STOP_LIMIT;
        for node in &mut self.nodes {
            node.signal();
        }
        for node in self.nodes.drain(..) {
            node.stop(deadline).await;
        }
        if let Some(control) = self.control.take() {
            control.stop(Instant::now() + STOP_LIMIT).await;
        }
        for link in self.links.drain(..) {
            link.stop().await;
        }
        if let Some(origin) = self.origin.take() {
            origin.stop().await;
        }
    }
}

/// Binds and spawns one cache node: (data address, admin address, the running node).
async fn start_node(
    plan: &NodePlan,
    origin_url: &str,
    control_url: &str,
    advertise: &str,
) -> Result<(SocketAddr, SocketAddr, Running), DemoError> {
    let failed = |source| DemoError::Node {
        node: plan.id.clone(),
        source,
    };
    match plan.role {
        Role::Edge => {
            let toml = topology::edge_toml(plan, origin_url, control_url, advertise);
            let config = topology::edge_config(&toml).map_err(DemoError::Config)?;
            run_node::<EdgeRole>(&plan.id, &config)
                .await
                .map_err(failed)
        }
        Role::Shield => {
            let toml = topology::shield_toml(plan, origin_url, control_url, advertise);
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

/// Polls control until [`not_ready`] is empty, or `limit` has passed.
async fn wait_ready(
    control: &Control,
    plans: &[NodePlan],
    limit: Duration,
) -> Result<(), DemoError> {
    let deadline = Instant::now() + limit;
    loop {
        let waiting = not_ready(control, plans);
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

/// What is not ready yet: a node not registered, not up or not holding its stream; an edge
/// whose last applied routing table is older than the one naming every shield healthy.
fn not_ready(control: &Control, plans: &[NodePlan]) -> Vec<String> {
    let views = control.nodes();
    let table = control.routing();
    let shields = plans.iter().filter(|p| p.role == Role::Shield).count();
    let routed = table.healthy_shields().count() >= shields;
    plans
        .iter()
        .filter_map(|plan| {
            let Some(view) = views.iter().find(|v| v.entry.id.as_str() == plan.id) else {
                return Some(format!("{} to register", plan.id));
            };
            if view.state != "up" || !view.connected {
                return Some(format!("{} to be up", plan.id));
            }
            if plan.role == Role::Edge && (!routed || view.table_version < table.version) {
                return Some(format!("{} to route to every shield", plan.id));
            }
            None
        })
        .collect()
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
