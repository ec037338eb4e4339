//! Reloading a running cache node's configuration without a restart.
//!
//! A reload reads the configuration again, validates it whole, and compares it with the one
//! serving. Settings only a restart can change (the node's id, its worker threads...) refuse
//! the reload. Everything else is prepared aside first — certificates loaded, new listeners
//! bound, a new upstream built — and only when every part is ready is it put in service:
//!
//! - the pipeline (upstream, range limits) is swapped; requests in flight finish on the old one;
//! - listener limits apply to connections accepted from then on;
//! - cache limits resize the store in place, keeping what fits;
//! - admin token and body bound apply to the next admin call;
//! - certificates and TLS settings apply to the next handshake;
//! - listeners that appeared start accepting, those that disappeared stop accepting and drain.
//!
//! If any preparation fails, nothing changes and the error says what.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use verge_config::{ConfigFile, ConfigSource, ReloadError, ReloadReport};

use crate::metrics::NodeMetrics;
use crate::node::{admin_access, gauge, listener_limits, ListenerKind, NodeSettings, Runtime};
use crate::upstream::Upstream;
use crate::StartError;

/// Reloads a node's configuration; what SIGHUP, the config file watch and
/// `POST /v1/reload` call.
pub trait Reload: Send + Sync {
    /// Reads the configuration again and applies what changed, all or nothing.
    fn reload(&self) -> Result<ReloadReport, ReloadError>;

    /// The configuration version serving now.
    fn version(&self) -> u64;

    /// The file the configuration comes from, to watch; `None` for the command line.
    fn watched_file(&self) -> Option<std::path::PathBuf>;
}

/// A cache role (edge, shield) as the node runtime sees it: its configuration, its upstream,
/// how both are built, and what of them a reload may change. Everything else a node does is
/// the runtime's, the same for every role.
pub trait Role: Sized + Send + Sync + 'static {
    type Config: ConfigFile + Clone + PartialEq + Send + Sync + 'static;
    type Upstream: Upstream;

    /// The role's table in configuration files (`edge`, `shield`), for key paths.
    const TABLE: &'static str;

    /// The settings every cache node has.
    fn settings(config: &Self::Config) -> NodeSettings<'_>;

    /// Builds the role and its first upstream, with the node's registry and metrics.
    fn start(
        config: &Self::Config,
        registry: &Registry,
        metrics: &NodeMetrics,
    ) -> Result<(Self, Self::Upstream), StartError>;

    /// Completes once the first upstream may serve (a shield's first name lookups).
    fn ready(&self, _upstream: &Self::Upstream) -> impl std::future::Future<Output = ()> + Send {
        async {}
    }

    /// The role's settings that differ and need a new upstream (`upstream`, `shields`...).
    fn upstream_changes(&self, old: &Self::Config, new: &Self::Config) -> Vec<String>;

    /// Builds the upstream `config` describes (not yet serving).
    fn build_upstream(&self, config: &Self::Config) -> Result<Self::Upstream, String>;
}

/// `verge_config_reloads_total{result}` and `verge_config_version`.
#[derive(Clone)]
pub struct ReloadMetrics {
    pub reloads: IntCounterVec,
    pub version: IntGauge,
}

impl ReloadMetrics {
    pub fn register(registry: &Registry) -> Result<ReloadMetrics, prometheus::Error> {
        let reloads = IntCounterVec::new(
            Opts::new(
                "verge_config_reloads_total",
                "Configuration reloads by result (ok, unchanged, invalid, needs_restart, failed).",
            ),
            &["result"],
        )?;
        let version = IntGauge::new(
            "verge_config_version",
            "Version of the configuration serving: 1 at start, one more per applied reload.",
        )?;
        registry.register(Box::new(reloads.clone()))?;
        registry.register(Box::new(version.clone()))?;
        for result in ["ok", "unchanged", "invalid", "needs_restart", "failed"] {
            reloads.with_label_values(&[result]);
        }
        version.set(1);
        Ok(ReloadMetrics { reloads, version })
    }
}

struct Serving<C> {
    config: C,
    version: u64,
}

/// The reloader of one node running as role `R`.
pub struct NodeReloader<R: Role> {
    role: R,
    runtime: Arc<Runtime<R::Upstream>>,
    source: ConfigSource,
    /// Held for a whole reload: reloads run one at a time.
    serving: Mutex<Serving<R::Config>>,
}

impl<R: Role> NodeReloader<R> {
    pub(crate) fn new(
        role: R,
        runtime: Arc<Runtime<R::Upstream>>,
        config: R::Config,
        source: ConfigSource,
    ) -> NodeReloader<R> {
        NodeReloader {
            role,
            runtime,
            source,
            serving: Mutex::new(Serving { config, version: 1 }),
        }
    }

    fn try_reload(&self, serving: &mut Serving<R::Config>) -> Result<ReloadReport, ReloadError> {
        let new = match &self.source {
            ConfigSource::File(path) => {
                R::Config::from_file(path).map_err(|errors| ReloadError::Invalid {
                    source_name: path.display().to_string(),
                    errors,
                })?
            }
            // Nothing to read again but the files the configuration names.
            ConfigSource::CommandLine => serving.config.clone(),
        };
        let old = &serving.config;
        let (before, after) = (R::settings(old), R::settings(&new));

        let fixed = node_fixed_changes(R::TABLE, &before, &after);
        if !fixed.is_empty() {
            return Err(ReloadError::NeedsRestart { settings: fixed });
        }

        // Prepare everything aside; nothing serves differently yet.
        let mut changed = Vec::new();
        let runtime = &self.runtime;
        let tls_plan = runtime.tls.prepare(after.tls).map_err(ReloadError::Apply)?;
        if let Some(what) = tls_plan.change() {
            changed.push(what.to_string());
        }
        let wanted = wanted_listeners(&after);
        let serving_now = runtime.listeners.configured();
        let mut to_bind = Vec::new();
        for &(kind, addr) in &wanted {
            if !serving_now.contains(&(kind, addr)) {
                let what = match kind {
                    ListenerKind::Data => "server.listen",
                    ListenerKind::Admin => "server.admin_listen",
                    ListenerKind::Tls => "tls.listen",
                };
                let bound = crate::node::bind_listener(addr, what)
                    .map_err(|e| ReloadError::Apply(e.to_string()))?;
                to_bind.push((kind, addr, bound));
            }
        }
        let to_remove: Vec<_> = serving_now
            .iter()
            .filter(|key| !wanted.contains(key))
            .copied()
            .collect();
        if !to_bind.is_empty() || !to_remove.is_empty() {
            changed.push("listeners".to_string());
        }
        let upstream_changes = self.role.upstream_changes(old, &new);
        let pipeline_changes = before.cache.max_ranges != after.cache.max_ranges;
        let next_pipeline = if upstream_changes.is_empty() && !pipeline_changes {
            None
        } else {
            // A pipeline owns its upstream: new range limits alone also get a fresh upstream
            // of the same settings (its connection pools refill).
            let upstream = self.role.build_upstream(&new).map_err(ReloadError::Apply)?;
            changed.extend(upstream_changes);
            if pipeline_changes {
                changed.push("cache.max_ranges".to_string());
            }
            Some(runtime.pipeline_with(upstream, after.cache))
        };

        // Put it in service. The pipeline goes first: it is the one step that can still
        // refuse (a routing table the new upstream cannot take), and nothing else changed yet.
        if let Some(next) = next_pipeline {
            runtime
                .pipeline
                .replace(next)
                .map_err(|e| ReloadError::Apply(format!("routing table: {e}")))?;
        }
        let limits = listener_limits(after.server);
        if **runtime.data_limits.load() != limits {
            runtime.data_limits.store(Arc::new(limits.clone()));
            runtime.admin_limits.store(Arc::new(limits));
            changed.push("server limits".to_string());
        }
        if before.server.max_connections != after.server.max_connections {
            runtime
                .data_connections
                .set_max(after.server.max_connections);
            runtime
                .metrics
                .connections_max
                .set(gauge(after.server.max_connections as u64));
            changed.push("server.max_connections".to_string());
        }
        if before.cache.max_bytes != after.cache.max_bytes
            || before.cache.max_object_bytes != after.cache.max_object_bytes
        {
            let max_object =
                usize::try_from(after.cache.max_object_bytes.bytes()).unwrap_or(usize::MAX);
            let resized = runtime
                .store
                .set_limits(after.cache.max_bytes.bytes(), max_object);
            tracing::info!(?resized, "cache resized");
            runtime
                .metrics
                .cache_max_bytes
                .set(gauge(after.cache.max_bytes.bytes()));
            changed.push("cache size".to_string());
        }
        if before.upstream_max_connections != after.upstream_max_connections {
            runtime
                .metrics
                .upstream_connections_max
                .set(gauge(after.upstream_max_connections as u64));
        }
        let access = admin_access(after.admin);
        if **runtime.admin.access.load() != access {
            runtime.admin.access.store(Arc::new(access));
            changed.push("admin".to_string());
        }
        runtime.tls.commit(tls_plan);
        for (kind, addr, bound) in to_bind {
            if let Err(error) = runtime.listeners.add(runtime, kind, addr, bound) {
                tracing::error!(%addr, kind = kind.as_str(), %error, "cannot serve new listener");
            }
        }
        for (kind, addr) in to_remove {
            runtime.listeners.remove(kind, addr);
        }

        serving.config = new;
        if !changed.is_empty() {
            serving.version += 1;
            runtime.reload_metrics.version.set(gauge(serving.version));
        }
        Ok(ReloadReport {
            version: serving.version,
            changed,
        })
    }
}

impl<R: Role> Reload for NodeReloader<R> {
    fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let mut serving = self.serving.lock().unwrap_or_else(PoisonError::into_inner);
        let metrics = &self.runtime.reload_metrics;
        if !self.runtime.listeners.is_serving() {
            let error = ReloadError::Apply("the node is not serving yet (or is stopping)".into());
            metrics.reloads.with_label_values(&[error.result()]).inc();
            return Err(error);
        }
        let outcome = self.try_reload(&mut serving);
        match &outcome {
            Ok(report) if report.changed.is_empty() => {
                metrics.reloads.with_label_values(&["unchanged"]).inc();
                tracing::info!(source = %self.source.describe(), version = report.version, "configuration reloaded: nothing changed");
            }
            Ok(report) => {
                metrics.reloads.with_label_values(&["ok"]).inc();
                tracing::info!(source = %self.source.describe(), version = report.version, changed = ?report.changed, "configuration reloaded");
            }
            Err(error) => {
                metrics.reloads.with_label_values(&[error.result()]).inc();
                tracing::warn!(source = %self.source.describe(), %error, "configuration reload refused; the running configuration stays");
            }
        }
        outcome
    }

    fn version(&self) -> u64 {
        self.serving
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .version
    }

    fn watched_file(&self) -> Option<std::path::PathBuf> {
        self.source.path().map(std::path::Path::to_path_buf)
    }
}

/// Node settings that only a restart can change.
pub(crate) fn node_fixed_changes(
    table: &str,
    before: &NodeSettings<'_>,
    after: &NodeSettings<'_>,
) -> Vec<String> {
    let mut fixed = Vec::new();
    if before.region != after.region {
        fixed.push(format!("{table}.region"));
    }
    if before.id != after.id {
        fixed.push(format!("{table}.id"));
    }
    if before.server.worker_threads != after.server.worker_threads {
        fixed.push("server.worker_threads".to_string());
    }
    if before.server.upgrade_socket != after.server.upgrade_socket {
        fixed.push("server.upgrade_socket".to_string());
    }
    if before.cache.hit_for_miss_ttl != after.cache.hit_for_miss_ttl
        || before.cache.hit_for_miss_max_keys != after.cache.hit_for_miss_max_keys
    {
        fixed.push("cache.hit_for_miss_ttl / cache.hit_for_miss_max_keys".to_string());
    }
    let control = |s: &NodeSettings<'_>| {
        s.control
            .as_ref()
            .map(|c| (c.config.clone(), c.role, c.region.clone()))
    };
    if control(before) != control(after) {
        fixed.push("control".to_string());
    }
    if after.control.is_some() && before.server.listen != after.server.listen {
        // Control routes clients to the address this node registered.
        fixed.push("server.listen (with a control plane)".to_string());
    }
    if before.server.admin_listen != after.server.admin_listen {
        // The admin listener answers the reload itself, and control knows the node by it.
        fixed.push("server.admin_listen".to_string());
    }
    fixed
}

/// The listeners a configuration asks for.
fn wanted_listeners(settings: &NodeSettings<'_>) -> Vec<(ListenerKind, SocketAddr)> {
    let mut wanted = vec![
        (ListenerKind::Data, settings.server.listen),
        (ListenerKind::Admin, settings.server.admin_listen),
    ];
    if let Some(tls) = settings.tls {
        wanted.extend(tls.listen.iter().map(|&addr| (ListenerKind::Tls, addr)));
    }
    wanted
}
