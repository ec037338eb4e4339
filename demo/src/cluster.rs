//! A running demo: the sample origin, control and every cache node in this process, each node
//! behind a delay link in its region, started from the [`topology`](crate::topology) and
//! stopped together. With `--ha`, control is replicas on etcd in processes of their own
//! ([`crate::replicas`]).
//!
//! Latency is not configured per path: it emerges from who connects to whom. A client in eu
//! reaching an eu edge crosses the edge's link from an eu address (local delay); the edge's
//! connection to a us shield leaves from the edge's eu address and crosses the shield's link
//! (us–eu delay); and so on to the origin.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;
use verge_edge::EdgeRole;
use verge_node::Node;
use verge_origin_shield::ShieldRole;

use crate::control::ControlPlane;
use crate::delay::{DelayLink, LinkSettings};
use crate::origin::{self, SampleOrigin};
use crate::readiness::Readiness;
use crate::replicas::Replicas;
use crate::state::{
    DemoState, HaEndpoints, NodeEndpoints, OriginTime, PathLatency, RegionInfo, SiteLatency,
};
use crate::topology::{self, DemoOptions, NodePlan, Role, HOSTNAME};

/// How long stopping may take, all nodes draining at once (their grace is 2 s).
pub(crate) const STOP_LIMIT: Duration = Duration::from_secs(5);

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
    #[error("cannot create control's directory: {0}")]
    DataDir(io::Error),
    /// The HA demo's etcd cluster did not start; the message quotes its logs.
    #[error("{0}")]
    Etcd(String),
    #[error("control replica {name} did not start: {why}")]
    Replica { name: String, why: String },
    #[error("every address block for the HA demo's replicas and etcd (127.0.10.0/24 to 127.0.19.0/24) has an address in use ({0}): is another `verge demo --ha` running?")]
    HaAddresses(String),
    #[error("not ready after {after:?}, still waiting for {waiting}")]
    NotReady { after: Duration, waiting: String },
}

/// The future a role's `run` takes: completes when the demo stops it.
type Stop = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A spawned role; told to stop when stopped or dropped.
pub(crate) struct Running {
    name: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Running {
    pub(crate) fn spawn<F>(name: &str, run: impl FnOnce(Stop) -> F) -> Running
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

    pub(crate) fn signal(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    /// Signals, then waits until `deadline` for the role to finish; past it, aborts it.
    pub(crate) async fn stop(mut self, deadline: Instant) {
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

/// A running demo. [`Demo::shutdown`] stops it cleanly; dropping it (say, on a start error)
/// tells every part to stop without waiting. Parts can be killed and restored
/// ([`Demo::kill`], [`Demo::restore`]) behind their links, which keep their addresses.
pub struct Demo {
    /// Every endpoint, as `--state FILE` writes it.
    pub state: DemoState,
    control: ControlPlane,
    /// What nodes put in `control.urls`: control's link, or every replica's.
    control_urls: Vec<String>,
    nodes: Vec<NodePart>,
    origin_link: DelayLink,
    origin: Option<SampleOrigin>,
    /// How long the origin takes per fetch (again after a restore).
    origin_time: origin::ServiceTime,
    /// What a killed origin had counted: a restored one counts on from there.
    origin_counted: origin::OriginCounts,
}

/// Who a name given to [`Demo::kill`] / [`Demo::restore`] is.
enum Part {
    Origin,
    /// `control`, or a replica with `--ha`.
    Control,
    Node(usize),
}

impl Demo {
    /// Starts everything the options describe and waits until it is ready: every node seen
    /// up and connected in control, every edge routing with a table that names every shield
    /// healthy (see [`Readiness`]); with replicas, each of them knowing a leader, and nodes
    /// seen at whichever replica they follow.
    pub async fn start(options: DemoOptions) -> Result<Demo, DemoError> {
        options.validate().map_err(DemoError::Options)?;
        let region = |id: &str| options.regions.iter().find(|r| r.id == id).cloned();
        let origin_region = region(&options.origin_region)
            .ok_or_else(|| DemoError::Options("no origin region".into()))?;
        let origin_addr = SocketAddr::new(topology::origin_ip(&origin_region), 0);
        let origin = SampleOrigin::start(origin_addr, options.origin_time)
            .await
            .map_err(bind_error("the sample origin", origin_addr))?;
        let origin_link = DelayLink::start(
            origin_addr,
            origin.addr(),
            link_settings(&options, &origin_region.id, origin_addr.ip()),
        )
        .await
        .map_err(bind_error("the origin's delay link", origin_addr))?;
        let token = options.token.clone().unwrap_or_else(random_token);
        let (control, started) = ControlPlane::start(&options, &token).await?;
        let mut demo = Demo {
            state: DemoState {
                hostname: HOSTNAME.to_string(),
                dns: started.dns,
                steering: started.steering,
                control: started.endpoints,
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
                origin_site: origin_site(&options),
                origin_time: Some(OriginTime::of(options.origin_time)),
                ha: control.replicas().map(|replicas| HaEndpoints {
                    etcd: replicas.etcd_urls(),
                    replicas: replicas.infos(),
                }),
            },
            control,
            control_urls: started.node_urls,
            nodes: Vec::new(),
            origin_link,
            origin: Some(origin),
            origin_time: options.origin_time,
            origin_counted: origin::OriginCounts::default(),
        };

        let plans = topology::nodes(&options);
        for plan in &plans {
            let listen = SocketAddr::new(plan.ip, 0);
            let link = DelayLink::bind(listen, link_settings(&options, &plan.region.id, plan.ip))
                .await
                .map_err(bind_error(&format!("{}'s delay link", plan.id), listen))?;
            let advertise = format!("http://{}", link.addr());
            let (data, admin, running) = start_node(
                plan,
                &demo.state.origin,
                &demo.control_urls,
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
        wait_ready(&demo.control, &plans, options.ready_timeout).await?;
        Ok(demo)
    }

    /// The control replicas and their etcd cluster, in an HA demo (`DemoOptions::ha`).
    pub fn replicas(&self) -> Option<&Replicas> {
        self.control.replicas()
    }

    /// The names [`Demo::kill`] and [`Demo::restore`] take: `origin`, `control` (with `--ha`
    /// each replica's: `control-1`, …), every node id.
    pub fn part_names(&self) -> Vec<String> {
        std::iter::once("origin".to_string())
            .chain(self.control.names())
            .chain(self.nodes.iter().map(|n| n.plan.id.clone()))
            .collect()
    }

    fn part(&self, name: &str) -> Result<Part, String> {
        if self.control.names().iter().any(|n| n == name) {
            return Ok(Part::Control);
        }
        match name {
            "origin" => Ok(Part::Origin),
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
    /// peers get connection errors from it until [`Demo::restore`]. A replica of an HA demo
    /// is killed with SIGKILL, as `kill -9` would.
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
            // `None`: killed already (a replica, which dies at once).
            let taken = self.part(name).and_then(|part| match part {
                Part::Origin => self
                    .origin
                    .take()
                    .map(|o| Some(Stopping::Origin(o)))
                    .ok_or_else(killed),
                Part::Control => self.control.kill(name).map(|r| r.map(Stopping::Role)),
                Part::Node(i) => self.nodes[i]
                    .running
                    .take()
                    .map(|r| Some(Stopping::Role(r)))
                    .ok_or_else(killed),
            });
            match taken {
                Ok(part) => {
                    if let Some(mut part) = part {
                        if let Stopping::Role(role) = &mut part {
                            role.signal();
                        }
                        stopping.push(part);
                    }
                    results.push(Ok(()));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        let deadline = Instant::now() + STOP_LIMIT;
        for part in stopping {
            match part {
                Stopping::Role(role) => role.stop(deadline).await,
                Stopping::Origin(origin) => self.origin_counted = origin.stop().await,
            }
        }
        results
    }

    /// Starts a fresh `name` with the configuration it had (same id; control with the same
    /// data directory, so its purge log survives; a replica with the same file) and puts it
    /// behind its link.
    pub async fn restore(&mut self, name: &str) -> Result<(), String> {
        let live = || format!("{name} is running: only a killed part can be restored");
        match self.part(name)? {
            Part::Origin => {
                if self.origin.is_some() {
                    return Err(live());
                }
                let listen = SocketAddr::new(self.origin_link.addr().ip(), 0);
                let origin = SampleOrigin::start_counting_from(
                    listen,
                    self.origin_time,
                    self.origin_counted,
                )
                .await
                .map_err(|e| format!("cannot restart the sample origin: {e}"))?;
                self.origin_link.retarget(origin.addr());
                self.origin = Some(origin);
            }
            Part::Control => self.control.restore(name, &mut self.state).await?,
            Part::Node(i) => {
                if self.nodes[i].running.is_some() {
                    return Err(live());
                }
                let part = &self.nodes[i];
                let advertise = part.link.url();
                let (data, admin, running) = start_node(
                    &part.plan,
                    &self.state.origin,
                    &self.control_urls,
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
        self.control.shutdown().await;
        for node in self.nodes.drain(..) {
            node.link.stop().await;
        }
        self.origin_link.stop().await;
        if let Some(origin) = self.origin.take() {
            origin.stop().await;
        }
    }
}

/// A link in `region` at address `ip` with the demo's latency and jitter.
pub(crate) fn link_settings(options: &DemoOptions, region: &str, ip: IpAddr) -> LinkSettings {
    LinkSettings {
        jitter: options.jitter,
        site: topology::site_of(options, ip),
        ..LinkSettings::new(region, &options.regions, &options.latency)
    }
}

pub(crate) fn bind_error(what: &str, addr: SocketAddr) -> impl FnOnce(io::Error) -> DemoError {
    let what = what.to_string();
    move |source| DemoError::Bind { what, addr, source }
}

/// Binds and spawns one cache node: (data address, admin address, the running node).
async fn start_node(
    plan: &NodePlan,
    origin_url: &str,
    control_urls: &[String],
    advertise: &str,
    node_token: &str,
) -> Result<(SocketAddr, SocketAddr, Running), DemoError> {
    let failed = |source| DemoError::Node {
        node: plan.id.clone(),
        source,
    };
    match plan.role {
        Role::Edge => {
            let toml = topology::edge_toml(plan, origin_url, control_urls, advertise, node_token);
            let config = topology::edge_config(&toml).map_err(DemoError::Config)?;
            run_node::<EdgeRole>(&plan.id, &config)
                .await
                .map_err(failed)
        }
        Role::Shield => {
            let toml = topology::shield_toml(plan, origin_url, control_urls, advertise, node_token);
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

/// Polls control until [`Readiness::waiting`] is empty (and, with replicas, each knows a
/// leader), or `limit` has passed.
async fn wait_ready(
    control: &ControlPlane,
    plans: &[NodePlan],
    limit: Duration,
) -> Result<(), DemoError> {
    let deadline = Instant::now() + limit;
    let mut readiness = Readiness::default();
    loop {
        let mut waiting = control.waiting().await;
        waiting.extend(readiness.waiting(plans, &control.observe().await?));
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

/// Who is at the origin's site, when any shield is.
fn origin_site(options: &DemoOptions) -> Option<SiteLatency> {
    let site = topology::origin_site(options);
    let shields: Vec<String> = topology::nodes(options)
        .into_iter()
        .filter(|n| site.contains(&n.ip))
        .map(|n| n.id)
        .collect();
    if shields.is_empty() {
        return None;
    }
    Some(SiteLatency {
        members: std::iter::once("origin".to_string())
            .chain(shields)
            .collect(),
        one_way_ms: options.latency.site.as_secs_f64() * 1000.0,
    })
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
