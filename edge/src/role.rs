//! The edge role as the node runtime sees it: its settings, how its upstream (the origin, or
//! the origin shields) is built, and what a configuration reload may change.

use std::path::Path;
use std::sync::{Mutex, PoisonError};

use prometheus::{IntGauge, Registry};
use verge_config::wire::NodeRole;
use verge_config::{ConfigErrors, EdgeConfig};

use crate::control::NodeControl;
use crate::node::NodeSettings;
use crate::reload::Role;
use crate::shields::{EdgeUpstream, ShieldMetrics, ShieldUpstream};
use crate::upstream::OriginUpstream;
use crate::StartError;

/// The node settings of an edge configuration.
pub fn edge_settings(config: &EdgeConfig) -> NodeSettings<'_> {
    NodeSettings {
        id: &config.id,
        server: &config.server,
        cache: &config.cache,
        admin: &config.admin,
        tls: config.tls.as_ref(),
        cache_name: "verge-edge",
        upstream_max_connections: config.upstream.max_connections,
        control: config.control.as_ref().map(|control| NodeControl {
            config: control,
            role: NodeRole::Edge,
            region: &config.region,
        }),
    }
}

/// Builds an edge's upstream: the origin alone, or the shield ring in front of it.
/// `shield_metrics` is registered on first need and reused by every upstream built after.
pub(crate) fn build_edge_upstream(
    config: &EdgeConfig,
    registry: &Registry,
    shield_metrics: &Mutex<Option<ShieldMetrics>>,
    in_use: &IntGauge,
) -> Result<EdgeUpstream, StartError> {
    let origin_tls = crate::tls::client::upstream_client_config(
        &config.upstream.tls,
        [&config.upstream.origin],
        "upstream.tls",
    )
    .map_err(StartError::Tls)?;
    let origin = OriginUpstream::with_tls(&config.upstream, origin_tls, in_use.clone());
    // With a control plane, shields may arrive in a routing table: start on an empty
    // ring (misses to the origin) rather than on a plain origin upstream.
    if config.shields.members.is_empty() && config.control.is_none() {
        return Ok(EdgeUpstream::Origin(origin));
    }
    let metrics = {
        let mut kept = shield_metrics
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match kept.as_ref() {
            Some(metrics) => metrics.clone(),
            None => {
                let metrics = ShieldMetrics::register(registry)?;
                *kept = Some(metrics.clone());
                metrics
            }
        }
    };
    Ok(EdgeUpstream::Shields(ShieldUpstream::new(
        &config.shields,
        &config.upstream,
        origin,
        metrics,
        in_use,
    )?))
}

/// How an edge reloads.
pub struct EdgeRole {
    pub(crate) registry: Registry,
    pub(crate) shield_metrics: Mutex<Option<ShieldMetrics>>,
    pub(crate) in_use: IntGauge,
}

impl Role for EdgeRole {
    type Config = EdgeConfig;
    type Upstream = EdgeUpstream;

    fn load(&self, path: &Path) -> Result<EdgeConfig, ConfigErrors> {
        EdgeConfig::from_file(path)
    }

    fn node<'a>(&self, config: &'a EdgeConfig) -> NodeSettings<'a> {
        edge_settings(config)
    }

    fn fixed_changes(&self, old: &EdgeConfig, new: &EdgeConfig) -> Vec<String> {
        let mut fixed = Vec::new();
        if old.region != new.region {
            fixed.push("edge.region".to_string());
        }
        fixed
    }

    fn upstream_changes(&self, old: &EdgeConfig, new: &EdgeConfig) -> Vec<String> {
        let mut changed = Vec::new();
        if old.upstream != new.upstream {
            changed.push("upstream".to_string());
        }
        if old.shields != new.shields {
            changed.push("shields".to_string());
        }
        changed
    }

    fn build_upstream(&self, config: &EdgeConfig) -> Result<EdgeUpstream, String> {
        build_edge_upstream(config, &self.registry, &self.shield_metrics, &self.in_use)
            .map_err(|e| e.to_string())
    }
}
