//! The demo's control plane: one control in this process (the plain demo), or control replicas
//! on etcd as child processes (`--ha`, [`Replicas`]). Either way nodes reach it through delay
//! links in the origin's region, and readiness reads the same [`Observed`] from it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::time::Instant;
use verge_control::service::Control;
use verge_control::ControlNode;

use crate::cluster::{bind_error, link_settings, DemoError, Running, STOP_LIMIT};
use crate::delay::DelayLink;
use crate::readiness::{NodeSeen, Observed};
use crate::replicas::Replicas;
use crate::state::{ControlEndpoints, DemoState};
use crate::topology::{self, DemoOptions};

/// The name of the one control, as [`crate::Demo::kill`] takes it.
pub const CONTROL: &str = "control";

pub(crate) enum ControlPlane {
    /// Boxed: it holds its links and options inline, the replicas are mostly behind handles.
    Single(Box<SingleControl>),
    Replicated(Replicas),
}

/// One control in this process, behind links whose addresses outlive a restart.
pub(crate) struct SingleControl {
    options: DemoOptions,
    /// Its purge log, kept across a restart.
    data_dir: PathBuf,
    token: String,
    /// `None` once killed.
    running: Option<ControlPart>,
    /// In front of its node listener, in the origin's region.
    link: DelayLink,
    /// In front of its admin listener, on 127.0.0.1.
    admin_link: DelayLink,
    /// The data directory when the demo made it; removed when the demo ends.
    _owned: Option<tempfile::TempDir>,
}

/// Control while it runs: the task and the handle readiness reads.
struct ControlPart {
    running: Running,
    control: Arc<Control>,
}

/// Where a started control plane is.
pub(crate) struct Started {
    pub endpoints: ControlEndpoints,
    pub dns: String,
    pub steering: String,
    /// What nodes put in `control.urls`.
    pub node_urls: Vec<String>,
}

impl ControlPlane {
    /// Starts the control plane `options` asks for, with admin token `token`.
    pub async fn start(
        options: &DemoOptions,
        token: &str,
    ) -> Result<(ControlPlane, Started), DemoError> {
        match &options.ha {
            None => SingleControl::start(options, token)
                .await
                .map(|(single, started)| (ControlPlane::Single(Box::new(single)), started)),
            Some(ha) => {
                let replicas = Replicas::start(options, ha, token).await?;
                // The one the demo's summary points at (control's row, the status page,
                // GeoDNS, the commands): not the leader, the one the drill kills.
                let leader = replicas
                    .views()
                    .await
                    .into_iter()
                    .flatten()
                    .find_map(|v| v.leader);
                let infos = replicas.infos();
                let shown = infos
                    .iter()
                    .position(|r| Some(&r.name) != leader.as_ref())
                    .unwrap_or(0);
                let replica = infos.into_iter().nth(shown);
                let (dns, steering) = replicas
                    .geo(shown)
                    .map_or_else(Default::default, |(dns, http)| {
                        (dns.to_string(), format!("http://{http}"))
                    });
                let started = Started {
                    endpoints: ControlEndpoints {
                        api: replica.as_ref().map_or_else(String::new, |r| r.api.clone()),
                        admin: replica.map_or_else(String::new, |r| r.admin),
                        token: token.to_string(),
                    },
                    dns,
                    steering,
                    node_urls: replicas.node_urls(),
                };
                Ok((ControlPlane::Replicated(replicas), started))
            }
        }
    }

    /// The replicas, in an HA demo.
    pub fn replicas(&self) -> Option<&Replicas> {
        match self {
            ControlPlane::Single(_) => None,
            ControlPlane::Replicated(replicas) => Some(replicas),
        }
    }

    /// One look at control, for readiness: `Err` when the one control is killed.
    pub async fn observe(&self) -> Result<Observed, DemoError> {
        match self {
            ControlPlane::Single(single) => match &single.running {
                Some(part) => Ok(observe(&part.control)),
                None => Err(DemoError::Options("control is not running".into())),
            },
            ControlPlane::Replicated(replicas) => Ok(replicas.observe().await),
        }
    }

    /// What readiness awaits of control itself: each replica knowing a leader.
    pub async fn waiting(&self) -> Vec<String> {
        let ControlPlane::Replicated(replicas) = self else {
            return Vec::new();
        };
        replicas
            .names()
            .into_iter()
            .zip(replicas.views().await)
            .filter(|(_, view)| view.as_ref().is_none_or(|v| v.leader.is_none()))
            .map(|(name, _)| format!("{name} to know a leader"))
            .collect()
    }

    /// The names of its parts: `control`, or each replica's.
    pub fn names(&self) -> Vec<String> {
        match self {
            ControlPlane::Single(_) => vec![CONTROL.to_string()],
            ControlPlane::Replicated(replicas) => replicas.names(),
        }
    }

    /// Kills part `name`: the one control is handed back to be stopped with the nodes; a
    /// replica is killed (SIGKILL) here and now.
    pub fn kill(&mut self, name: &str) -> Result<Option<Running>, String> {
        match self {
            ControlPlane::Single(single) => single
                .running
                .take()
                .map(|part| Some(part.running))
                .ok_or_else(|| format!("{name} is already killed")),
            ControlPlane::Replicated(replicas) => replicas.kill(name).map(|()| None),
        }
    }

    /// Starts part `name` again after [`ControlPlane::kill`], on the same addresses (the one
    /// control with the same purge log).
    pub async fn restore(&mut self, name: &str, state: &mut DemoState) -> Result<(), String> {
        match self {
            ControlPlane::Single(single) => {
                if single.running.is_some() {
                    return Err(format!(
                        "{name} is running: only a killed part can be restored"
                    ));
                }
                let (node, control) =
                    bind_control(&single.options, &single.data_dir, &single.token)
                        .await
                        .map_err(|e| format!("cannot restart control: {e}"))?;
                (state.dns, state.steering) = single.run(node, control);
                Ok(())
            }
            ControlPlane::Replicated(replicas) => replicas.restore(name),
        }
    }

    /// Stops control (after the nodes have stopped): the one control drains, replicas and
    /// etcd are killed.
    pub async fn shutdown(self) {
        match self {
            ControlPlane::Single(mut single) => {
                if let Some(part) = single.running.take() {
                    part.running.stop(Instant::now() + STOP_LIMIT).await;
                }
                single.link.stop().await;
                single.admin_link.stop().await;
            }
            ControlPlane::Replicated(replicas) => replicas.shutdown().await,
        }
    }
}

impl SingleControl {
    async fn start(
        options: &DemoOptions,
        token: &str,
    ) -> Result<(SingleControl, Started), DemoError> {
        let origin_region = options
            .regions
            .iter()
            .find(|r| r.id == options.origin_region)
            .ok_or_else(|| DemoError::Options("no origin region".into()))?;
        let control_addr = SocketAddr::new(topology::control_ip(origin_region), 0);
        let link = DelayLink::bind(
            control_addr,
            link_settings(options, &origin_region.id, control_addr.ip()),
        )
        .await
        .map_err(bind_error("control's delay link", control_addr))?;
        // Operators' address for control's admin API, stable across a control restart: a
        // link on 127.0.0.1 (no delay for peers there).
        let admin_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        let admin_link = DelayLink::bind(
            admin_addr,
            link_settings(options, &origin_region.id, admin_addr.ip()),
        )
        .await
        .map_err(bind_error("control's admin link", admin_addr))?;
        let mut owned = None;
        let data_dir = match &options.data_dir {
            Some(dir) => dir.clone(),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("verge-demo-")
                    .tempdir()
                    .map_err(DemoError::DataDir)?;
                let path = dir.path().to_path_buf();
                owned = Some(dir);
                path
            }
        };
        let (node, control) = bind_control(options, &data_dir, token).await?;
        let link = link.relay_to(node.node_addr);
        let admin_link = admin_link.relay_to(node.admin_addr);
        let mut single = SingleControl {
            options: options.clone(),
            data_dir,
            token: token.to_string(),
            running: None,
            link,
            admin_link,
            _owned: owned,
        };
        let (dns, steering) = single.run(node, control);
        let started = Started {
            endpoints: ControlEndpoints {
                api: single.link.url(),
                admin: single.admin_link.url(),
                token: token.to_string(),
            },
            dns,
            steering,
            node_urls: vec![single.link.url()],
        };
        Ok((single, started))
    }

    /// Spawns a bound control behind the links; its DNS and HTTP steering addresses (which
    /// change with a restart).
    fn run(&mut self, node: ControlNode, control: Arc<Control>) -> (String, String) {
        let shown = |addr: Option<SocketAddr>, scheme: &str| {
            addr.map_or_else(String::new, |a| format!("{scheme}{a}"))
        };
        let geo = (
            shown(node.dns_addr, ""),
            shown(node.steering_addr, "http://"),
        );
        self.link.retarget(node.node_addr);
        self.admin_link.retarget(node.admin_addr);
        let running = Running::spawn(CONTROL, |stop| node.run(stop));
        self.running = Some(ControlPart { running, control });
        geo
    }
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
