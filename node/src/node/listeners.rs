//! The node's listeners by kind and configured address: bound at start (or taken over from a
//! predecessor process), started together, added and removed by reloads, stopped together.
//!
//! A listener removed by a reload stops accepting at once; the connections it accepted finish
//! their in-flight requests within the shutdown grace, as on shutdown.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Runtime;
use crate::handoff::Inherited;
use crate::server::{self, Listener};
use crate::settings::ListenerKind;
use crate::upstream::Upstream;
use crate::StartError;

/// Pending connections the kernel queues per listener before they are accepted.
const BACKLOG: u32 = 1024;

/// A bound listening socket not yet served.
pub(crate) struct Bound {
    pub(crate) socket: std::net::TcpListener,
    pub(crate) local_addr: SocketAddr,
}

/// Binds `addr` — or takes the predecessor's socket bound there — ready for tokio.
pub(crate) fn bind(
    addr: SocketAddr,
    what: &'static str,
    inherited: Option<&mut Inherited>,
) -> Result<Bound, StartError> {
    let error = |source| StartError::Bind { addr, what, source };
    let socket = match inherited.and_then(|inherited| inherited.take(addr)) {
        Some(socket) => {
            tracing::info!(%addr, what, "listening socket taken over from the previous process");
            socket.set_nonblocking(true).map_err(error)?;
            socket
        }
        None => fresh(addr).map_err(error)?,
    };
    let local_addr = socket.local_addr().map_err(error)?;
    Ok(Bound { socket, local_addr })
}

fn fresh(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)?.into_std()
}

/// One serving listener.
struct Running {
    kind: ListenerKind,
    configured: SocketAddr,
    local: SocketAddr,
    /// A second handle on the socket, for handing it to a successor process.
    socket: std::net::TcpListener,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct State {
    /// Bound at start, served once the node runs.
    pending: Vec<(ListenerKind, SocketAddr, Bound)>,
    running: Vec<Running>,
    /// Set when the node stops: nothing is started after.
    stopped: bool,
}

/// The node's listeners.
pub(crate) struct Listeners {
    state: Mutex<State>,
    /// Bumped whenever the set of serving listeners changes.
    changes: watch::Sender<u64>,
}

impl Listeners {
    pub(crate) fn new(bound: Vec<(ListenerKind, SocketAddr, Bound)>) -> Listeners {
        Listeners {
            state: Mutex::new(State {
                pending: bound,
                ..State::default()
            }),
            changes: watch::Sender::new(0),
        }
    }

    /// Notified when listeners are added or removed.
    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Local addresses of the listeners of `kind`, in the order they were configured.
    pub(crate) fn addrs(&self, kind: ListenerKind) -> Vec<SocketAddr> {
        let state = self.lock();
        let pending = state
            .pending
            .iter()
            .filter(|(k, _, _)| *k == kind)
            .map(|(_, _, b)| b.local_addr);
        let running = state
            .running
            .iter()
            .filter(|r| r.kind == kind)
            .map(|r| r.local);
        pending.chain(running).collect()
    }

    /// The configured addresses serving now, by kind.
    pub(crate) fn configured(&self) -> Vec<(ListenerKind, SocketAddr)> {
        let state = self.lock();
        let pending = state.pending.iter().map(|(k, c, _)| (*k, *c));
        let running = state.running.iter().map(|r| (r.kind, r.configured));
        pending.chain(running).collect()
    }

    /// Whether the node has started serving (and not stopped).
    pub(crate) fn is_serving(&self) -> bool {
        let state = self.lock();
        !state.stopped && state.pending.is_empty() && !state.running.is_empty()
    }

    /// Starts every bound listener.
    pub(crate) fn start<U: Upstream>(&self, runtime: &Arc<Runtime<U>>) {
        let mut state = self.lock();
        let pending = std::mem::take(&mut state.pending);
        for (kind, configured, bound) in pending {
            match spawn(runtime, kind, configured, bound) {
                Ok(running) => state.running.push(running),
                Err(error) => {
                    tracing::error!(%configured, kind = kind.as_str(), %error, "cannot serve listener");
                }
            }
        }
    }

    /// Starts a listener bound by a reload.
    pub(crate) fn add<U: Upstream>(
        &self,
        runtime: &Arc<Runtime<U>>,
        kind: ListenerKind,
        configured: SocketAddr,
        bound: Bound,
    ) -> std::io::Result<SocketAddr> {
        let mut state = self.lock();
        if state.stopped {
            return Err(std::io::Error::other("the node is shutting down"));
        }
        let running = spawn(runtime, kind, configured, bound)?;
        let local = running.local;
        state.running.push(running);
        drop(state);
        self.changed();
        tracing::info!(%local, kind = kind.as_str(), "listener added");
        Ok(local)
    }

    /// Stops accepting on a listener; its connections drain on their own.
    pub(crate) fn remove(&self, kind: ListenerKind, configured: SocketAddr) {
        let mut state = self.lock();
        if let Some(at) = state
            .running
            .iter()
            .position(|r| r.kind == kind && r.configured == configured)
        {
            let running = state.running.remove(at);
            drop(state);
            self.changed();
            let _ = running.stop.send(true);
            tracing::info!(local = %running.local, kind = kind.as_str(), "listener removed; its connections drain");
        }
    }

    /// The listening sockets, for a successor process: (kind, local address, socket).
    pub(crate) fn sockets(&self) -> Vec<(ListenerKind, SocketAddr, std::net::TcpListener)> {
        let state = self.lock();
        state
            .running
            .iter()
            .filter_map(|r| {
                r.socket
                    .try_clone()
                    .ok()
                    .map(|socket| (r.kind, r.local, socket))
            })
            .collect()
    }

    /// Stops every listener and waits until each has drained.
    pub(crate) async fn stop_all(&self) {
        let running = {
            let mut state = self.lock();
            state.stopped = true;
            state.pending.clear();
            std::mem::take(&mut state.running)
        };
        // Each listening socket closes as its accept loop ends: this node's second handle on it
        // goes now, so connections that come during the drain are refused at once rather than
        // queued by the kernel for nobody to accept.
        let tasks: Vec<JoinHandle<()>> = running
            .into_iter()
            .map(|r| {
                let _ = r.stop.send(true);
                r.task
            })
            .collect();
        for task in tasks {
            let _ = task.await;
        }
    }
}

fn spawn<U: Upstream>(
    runtime: &Arc<Runtime<U>>,
    kind: ListenerKind,
    configured: SocketAddr,
    bound: Bound,
) -> std::io::Result<Running> {
    let socket = bound.socket.try_clone()?;
    let listener = TcpListener::from_std(bound.socket)?;
    let (stop, stopped) = watch::channel(false);
    let task = match kind {
        ListenerKind::Data | ListenerKind::Tls => tokio::spawn(server::serve(
            Listener {
                listener,
                handler: Arc::clone(&runtime.pipeline),
                limits: Arc::clone(&runtime.data_limits),
                connections: Arc::clone(&runtime.data_connections),
                tls: match kind {
                    ListenerKind::Tls => Some(runtime.tls.terminator().ok_or_else(|| {
                        std::io::Error::other("no [tls] certificates for a TLS listener")
                    })?),
                    _ => None,
                },
                metrics: Some(runtime.metrics.clone()),
            },
            stopped,
        )),
        ListenerKind::Admin => tokio::spawn(server::serve(
            Listener {
                listener,
                handler: Arc::clone(&runtime.admin),
                limits: Arc::clone(&runtime.admin_limits),
                connections: Arc::clone(&runtime.admin_connections),
                tls: None,
                metrics: None,
            },
            stopped,
        )),
    };
    Ok(Running {
        kind,
        configured,
        local: bound.local_addr,
        socket,
        stop,
        task,
    })
}
