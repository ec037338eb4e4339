//! The node's TLS: its certificates, the rustls server configuration and the terminator its
//! TLS listeners share. Started from `[tls]`, changed by reloads in two steps — prepare (load
//! and check everything aside) and commit (swap) — so a bad certificate changes nothing.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use verge_config::TlsServerConfig;

use crate::tls::acceptor::TlsTerminator;
use crate::tls::certs::{server_config, spawn_watcher, CertResolver, CertSet, TlsMetrics};
use crate::StartError;

/// TLS as configured now.
struct Active {
    config: TlsServerConfig,
    resolver: Arc<CertResolver>,
    terminator: Arc<TlsTerminator>,
    /// What the certificate file watch follows; a reload stores the new configuration here.
    watched: Arc<ArcSwap<TlsServerConfig>>,
}

pub(crate) struct NodeTls {
    metrics: TlsMetrics,
    active: Mutex<Option<Active>>,
    /// Set when the node runs: watches started by a reload stop with the node.
    stop: Mutex<Option<watch::Receiver<bool>>>,
}

/// A prepared TLS change, not yet serving.
pub(crate) struct TlsPlan {
    step: Step,
}

enum Step {
    Nothing,
    /// Same settings, different certificate contents.
    Certificates(CertSet),
    /// New settings (and their certificates) for the running terminator.
    Settings {
        config: TlsServerConfig,
        set: CertSet,
        server: Arc<ServerConfig>,
    },
    /// TLS where there was none.
    Start(Active),
    /// No TLS any more: its listeners are removed by the same reload.
    Stop,
}

impl TlsPlan {
    /// What the reload report says changed.
    pub(crate) fn change(&self) -> Option<&'static str> {
        match self.step {
            Step::Nothing => None,
            Step::Certificates(_) => Some("tls.certificates"),
            Step::Settings { .. } | Step::Start(_) => Some("tls"),
            Step::Stop => Some("tls (removed)"),
        }
    }
}

fn start_active(config: &TlsServerConfig, metrics: &TlsMetrics) -> Result<Active, String> {
    let resolver = Arc::new(
        CertResolver::new(config, metrics.clone(), SystemTime::now()).map_err(|e| e.to_string())?,
    );
    let server = server_config(config, Arc::clone(&resolver)).map_err(|e| e.to_string())?;
    let terminator = Arc::new(TlsTerminator::new(
        server,
        config.handshake_timeout,
        metrics.clone(),
    ));
    metrics.refresh_expiry(&resolver, SystemTime::now());
    Ok(Active {
        config: config.clone(),
        resolver,
        terminator,
        watched: Arc::new(ArcSwap::from_pointee(config.clone())),
    })
}

impl NodeTls {
    /// Loads `[tls]`; a certificate that cannot be used stops the start, naming it.
    pub(crate) fn start(
        config: Option<&TlsServerConfig>,
        metrics: TlsMetrics,
    ) -> Result<NodeTls, StartError> {
        let active = config
            .map(|config| start_active(config, &metrics))
            .transpose()
            .map_err(StartError::Tls)?;
        Ok(NodeTls {
            metrics,
            active: Mutex::new(active),
            stop: Mutex::new(None),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Option<Active>> {
        self.active.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The terminator of the TLS listeners; `None` without `[tls]`.
    pub(crate) fn terminator(&self) -> Option<Arc<TlsTerminator>> {
        self.lock().as_ref().map(|a| Arc::clone(&a.terminator))
    }

    /// Starts watching the certificate files (every `tls.watch_interval`) until `stop`.
    pub(crate) fn spawn_watcher(&self, stop: watch::Receiver<bool>) -> Option<JoinHandle<()>> {
        *self.stop.lock().unwrap_or_else(PoisonError::into_inner) = Some(stop.clone());
        let active = self.lock();
        active.as_ref().and_then(|a| self.watch(a, stop))
    }

    fn watch(&self, active: &Active, stop: watch::Receiver<bool>) -> Option<JoinHandle<()>> {
        spawn_watcher(
            Arc::clone(&active.resolver),
            Arc::clone(&active.watched),
            active.config.watch_interval,
            self.metrics.clone(),
            stop,
        )
    }

    /// Loads and checks what `new` asks for, without serving it.
    pub(crate) fn prepare(&self, new: Option<&TlsServerConfig>) -> Result<TlsPlan, String> {
        let active = self.lock();
        let step = match (active.as_ref(), new) {
            (None, None) => Step::Nothing,
            (Some(_), None) => Step::Stop,
            (None, Some(config)) => Step::Start(start_active(config, &self.metrics)?),
            (Some(active), Some(config)) => {
                let set = CertSet::build(config, SystemTime::now()).map_err(|e| e.to_string())?;
                if active.config != *config {
                    let server = server_config(config, Arc::clone(&active.resolver))
                        .map_err(|e| e.to_string())?;
                    Step::Settings {
                        config: config.clone(),
                        set,
                        server,
                    }
                } else if set.same_as(&active.resolver.current()) {
                    Step::Nothing
                } else {
                    Step::Certificates(set)
                }
            }
        };
        Ok(TlsPlan { step })
    }

    /// Serves a prepared change from the next handshake on.
    pub(crate) fn commit(&self, plan: TlsPlan) {
        let mut active = self.lock();
        match plan.step {
            Step::Nothing => {}
            Step::Certificates(set) => {
                if let Some(active) = active.as_ref() {
                    active.resolver.install(set);
                    self.metrics
                        .refresh_expiry(&active.resolver, SystemTime::now());
                }
            }
            Step::Settings {
                config,
                set,
                server,
            } => {
                if let Some(active) = active.as_mut() {
                    active.resolver.install(set);
                    active.terminator.set_config(server);
                    active
                        .terminator
                        .set_handshake_timeout(config.handshake_timeout);
                    active.watched.store(Arc::new(config.clone()));
                    active.config = config;
                    self.metrics
                        .refresh_expiry(&active.resolver, SystemTime::now());
                }
            }
            Step::Start(started) => {
                let stop = self
                    .stop
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                if let Some(stop) = stop {
                    // Runs until the node stops; it is not awaited.
                    drop(self.watch(&started, stop));
                }
                *active = Some(started);
            }
            Step::Stop => {
                // Kept for connections still open; its listeners are gone. The next `[tls]`
                // starts afresh.
                *active = None;
            }
        }
    }
}
