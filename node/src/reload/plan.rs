//! What a reload changes, as plain data computed from the node settings before and after: no
//! I/O, nothing applied. The reloader prepares what the plan asks for (certificates, new
//! listeners, a new upstream) and then applies it in one step.

use std::net::SocketAddr;
use std::sync::Arc;

use verge_config::AccessLogConfig;

use crate::pipeline::PipelineLimits;
use crate::server::ListenerLimits;
use crate::settings::{admin_access, listener_limits, AdminAccess, ListenerKind, NodeSettings};

/// The difference between two configurations of one node, by what applying it takes.
#[derive(Default)]
pub(crate) struct ReloadPlan {
    /// Settings only a restart can change, by key path; when any, nothing else is applied.
    pub(crate) needs_restart: Vec<String>,
    /// Listeners to bind and start, and to stop (they drain).
    pub(crate) bind: Vec<(ListenerKind, SocketAddr)>,
    pub(crate) unbind: Vec<(ListenerKind, SocketAddr)>,
    /// The role's settings that need a new upstream (`upstream`, `shields`, `origin`...).
    pub(crate) upstream: Vec<String>,
    /// The pipeline's own limits changed (`cache.max_ranges`, the request-body and
    /// per-address limits of `[server]`): the pipeline is rebuilt with them.
    pub(crate) pipeline_limits: bool,
    /// The cache rules (`[[rules]]`) changed: the pipeline is rebuilt with them.
    pub(crate) rules: bool,
    /// New protocol limits for every listener.
    pub(crate) limits: Option<ListenerLimits>,
    pub(crate) max_connections: Option<usize>,
    pub(crate) max_connections_per_address: Option<usize>,
    /// New cache bounds: total bytes, bytes per object.
    pub(crate) cache: Option<(u64, u64)>,
    /// New bound on upstream connections (a gauge only: the upstream is rebuilt for it).
    pub(crate) upstream_max_connections: Option<usize>,
    pub(crate) admin: Option<AdminAccess>,
    /// `[access_log]` changed: the new one (`None`: no access log) gets a writer of its own,
    /// its file opened when the reload is prepared.
    pub(crate) access_log: Option<Option<AccessLogConfig>>,
    pub(crate) trust_request_id: Option<bool>,
}

impl ReloadPlan {
    /// The plan from `before` to `after` for a node whose configuration table is `table`,
    /// serving `listening` now; `upstream` names the role's settings that need a new upstream.
    pub(crate) fn new(
        table: &str,
        before: &NodeSettings<'_>,
        after: &NodeSettings<'_>,
        listening: &[(ListenerKind, SocketAddr)],
        upstream: Vec<String>,
    ) -> ReloadPlan {
        let needs_restart = needs_restart(table, before, after);
        if !needs_restart.is_empty() {
            return ReloadPlan {
                needs_restart,
                ..ReloadPlan::default()
            };
        }
        let wanted = wanted_listeners(after);
        ReloadPlan {
            needs_restart,
            bind: wanted
                .iter()
                .filter(|key| !listening.contains(key))
                .copied()
                .collect(),
            unbind: listening
                .iter()
                .filter(|key| !wanted.contains(key))
                .copied()
                .collect(),
            upstream,
            pipeline_limits: PipelineLimits {
                rules: Arc::clone(&after.cache.rules),
                ..PipelineLimits::new(before.cache, before.server)
            } != PipelineLimits::new(after.cache, after.server),
            rules: before.cache.rules != after.cache.rules,
            limits: changed(
                listener_limits(before.server),
                listener_limits(after.server),
            ),
            max_connections: changed(before.server.max_connections, after.server.max_connections),
            max_connections_per_address: changed(
                before.server.max_connections_per_address,
                after.server.max_connections_per_address,
            ),
            cache: changed(
                (
                    before.cache.max_bytes.bytes(),
                    before.cache.max_object_bytes.bytes(),
                ),
                (
                    after.cache.max_bytes.bytes(),
                    after.cache.max_object_bytes.bytes(),
                ),
            ),
            upstream_max_connections: changed(
                before.upstream_max_connections,
                after.upstream_max_connections,
            ),
            admin: changed(admin_access(before.admin), admin_access(after.admin)),
            access_log: changed(
                before.server.access_log.clone(),
                after.server.access_log.clone(),
            ),
            trust_request_id: changed(
                before.server.trust_request_id,
                after.server.trust_request_id,
            ),
        }
    }

    /// Whether the pipeline (and so its upstream) is built anew: a pipeline owns its
    /// upstream, so new range limits alone also get a fresh upstream of the same settings.
    pub(crate) fn new_pipeline(&self) -> bool {
        !self.upstream.is_empty() || self.pipeline_limits || self.rules
    }

    /// What the plan changes, as the reload report names it, in the order it is applied
    /// (TLS changes are named by the TLS preparation, which reads the certificate files).
    pub(crate) fn changed(&self) -> Vec<String> {
        let mut changed = Vec::new();
        if !self.bind.is_empty() || !self.unbind.is_empty() {
            changed.push("listeners".to_string());
        }
        changed.extend(self.upstream.iter().cloned());
        let named = [
            (self.pipeline_limits, "request limits"),
            (self.rules, "rules"),
            (self.limits.is_some(), "server limits"),
            (self.max_connections.is_some(), "server.max_connections"),
            (
                self.max_connections_per_address.is_some(),
                "server.max_connections_per_address",
            ),
            (self.cache.is_some(), "cache size"),
            (self.admin.is_some(), "admin"),
            (self.access_log.is_some(), "access_log"),
            (self.trust_request_id.is_some(), "server.trust_request_id"),
        ];
        changed.extend(
            named
                .into_iter()
                .filter(|(yes, _)| *yes)
                .map(|(_, name)| name.to_string()),
        );
        changed
    }
}

/// `after` when it differs from `before`.
fn changed<T: PartialEq>(before: T, after: T) -> Option<T> {
    (before != after).then_some(after)
}

/// Node settings that only a restart can change, by key path.
fn needs_restart(table: &str, before: &NodeSettings<'_>, after: &NodeSettings<'_>) -> Vec<String> {
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

#[cfg(test)]
mod tests;
