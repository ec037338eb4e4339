//! The reloader of a running node: reads its configuration again, plans the change
//! ([`ReloadPlan`]), prepares what the plan needs aside and applies it in one step.

use std::sync::{Arc, Mutex, PoisonError};

use verge_config::{ConfigFile, ConfigSource, ReloadError, ReloadReport};

use super::Runtime;
use crate::metrics::gauge;
use crate::reload::plan::ReloadPlan;
use crate::reload::{Reload, Role};
use crate::settings::ListenerKind;

struct Serving<C> {
    config: C,
    version: u64,
}

/// The reloader of one node running as role `R`.
pub(crate) struct NodeReloader<R: Role> {
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
        let runtime = &self.runtime;
        let listening = runtime.listeners.configured();
        let upstream = self.role.upstream_changes(old, &new);
        let plan = ReloadPlan::new(R::TABLE, &before, &after, &listening, upstream);
        if !plan.needs_restart.is_empty() {
            return Err(ReloadError::NeedsRestart {
                settings: plan.needs_restart,
            });
        }

        // Prepare everything aside; nothing serves differently yet.
        let mut changed = Vec::new();
        let tls_plan = runtime.tls.prepare(after.tls).map_err(ReloadError::Apply)?;
        if let Some(what) = tls_plan.change() {
            changed.push(what.to_string());
        }
        changed.extend(plan.changed());
        let mut to_bind = Vec::new();
        for &(kind, addr) in &plan.bind {
            let what = match kind {
                ListenerKind::Data => "server.listen",
                ListenerKind::Admin => "server.admin_listen",
                ListenerKind::Tls => "tls.listen",
            };
            let bound = crate::node::bind_listener(addr, what)
                .map_err(|e| ReloadError::Apply(e.to_string()))?;
            to_bind.push((kind, addr, bound));
        }
        let access_log = match &plan.access_log {
            Some(config) => Some(
                runtime
                    .access_log
                    .prepare(config.as_ref())
                    .map_err(|e| ReloadError::Apply(format!("access_log.path: {e}")))?,
            ),
            None => None,
        };
        let next_pipeline = if plan.new_pipeline() {
            let upstream = self.role.build_upstream(&new).map_err(ReloadError::Apply)?;
            Some(runtime.pipeline_with(upstream, after.cache, after.server))
        } else {
            None
        };

        // Put it in service. The pipeline goes first: it is the one step that can still
        // refuse (a routing table the new upstream cannot take), and nothing else changed yet.
        if let Some(next) = next_pipeline {
            runtime
                .pipeline
                .replace(next)
                .map_err(|e| ReloadError::Apply(format!("routing table: {e}")))?;
        }
        if let Some(limits) = plan.limits {
            runtime.data_limits.store(Arc::new(limits.clone()));
            runtime
                .admin_limits
                .store(Arc::new(crate::settings::admin_listener_limits(&limits)));
        }
        if let Some(max) = plan.max_connections_per_address {
            runtime.data_connections.set_per_address(max);
        }
        if let Some(max) = plan.max_connections {
            runtime.data_connections.set_max(max);
            runtime.metrics.connections_max.set(gauge(max as u64));
        }
        if let Some((max_bytes, max_object_bytes)) = plan.cache {
            let max_object = usize::try_from(max_object_bytes).unwrap_or(usize::MAX);
            let resized = runtime.store.set_limits(max_bytes, max_object);
            tracing::info!(?resized, "cache resized");
            runtime.metrics.cache_max_bytes.set(gauge(max_bytes));
        }
        if let Some(max) = plan.upstream_max_connections {
            runtime
                .metrics
                .upstream_connections_max
                .set(gauge(max as u64));
        }
        if let Some(access) = plan.admin {
            runtime.admin.access.store(Arc::new(access));
        }
        if let Some(sink) = access_log {
            runtime.access_log.commit(sink);
        }
        if let Some(trusted) = plan.trust_request_id {
            runtime.access_log.set_trust_request_id(trusted);
        }
        runtime.tls.commit(tls_plan);
        for (kind, addr, bound) in to_bind {
            if let Err(error) = runtime.listeners.add(runtime, kind, addr, bound) {
                tracing::error!(%addr, kind = kind.as_str(), %error, "cannot serve new listener");
            }
        }
        for (kind, addr) in plan.unbind {
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
