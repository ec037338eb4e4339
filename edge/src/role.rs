//! The edge role as the node runtime sees it: its settings, how its upstream (the origin, or
//! the origin shields) is built, and what a configuration reload may change.

use std::sync::{Mutex, PoisonError};

use prometheus::{IntCounter, IntGauge, Registry};
use verge_config::EdgeConfig;

use verge_node::metrics::NodeMetrics;
use verge_node::reload::differing;
use verge_node::rtt::ProbeCadence;
use verge_node::{OriginUpstream, Role, StartError};

use std::time::Duration;

use http::{Request, Response};
use verge_config::wire::{RoutingTable, UpstreamHealth};
use verge_node::error::RequestError;
use verge_node::shields::{ShieldMetrics, ShieldUpstream};
use verge_node::upstream::{Hop, Upstream, UpstreamBody, UpstreamResponseBody};

/// Builds an edge's upstream: the origin alone, or the shield ring in front of it.
/// `shield_metrics` is registered on first need and reused by every upstream built after.
fn build_edge_upstream(
    config: &EdgeConfig,
    registry: &Registry,
    shield_metrics: &Mutex<Option<ShieldMetrics>>,
    in_use: &IntGauge,
    resends: &IntCounter,
) -> Result<EdgeUpstream, StartError> {
    let origin_tls = verge_node::tls::client::upstream_client_config(
        &config.upstream.tls,
        [&config.upstream.origin],
        "upstream.tls",
    )
    .map_err(StartError::Tls)?;
    let origin = OriginUpstream::with_tls(&config.upstream, origin_tls, in_use.clone())
        .counting_resends(resends.clone());
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
    let shields = ShieldUpstream::new(&config.shields, &config.upstream, origin, metrics, in_use)?
        .in_region(config.region.clone(), &config.shields)
        .map_err(|e| StartError::Role(format!("cannot build the shield ring: {e}")))?;
    Ok(EdgeUpstream::Shields(shields))
}

/// The edge role: what it keeps to build a new upstream on reload.
pub struct EdgeRole {
    registry: Registry,
    shield_metrics: Mutex<Option<ShieldMetrics>>,
    in_use: IntGauge,
    resends: IntCounter,
}

impl Role for EdgeRole {
    type Config = EdgeConfig;
    type Upstream = EdgeUpstream;
    const TABLE: &'static str = "edge";

    fn start(
        config: &EdgeConfig,
        registry: &Registry,
        metrics: &NodeMetrics,
    ) -> Result<(EdgeRole, EdgeUpstream), StartError> {
        let role = EdgeRole {
            registry: registry.clone(),
            shield_metrics: Mutex::new(None),
            in_use: metrics.upstream_connections_in_use.clone(),
            resends: metrics.upstream_resends.clone(),
        };
        let upstream = build_edge_upstream(
            config,
            registry,
            &role.shield_metrics,
            &role.in_use,
            &role.resends,
        )?;
        Ok((role, upstream))
    }

    fn upstream_changes(&self, old: &EdgeConfig, new: &EdgeConfig) -> Vec<String> {
        differing(&[
            ("upstream", old.upstream != new.upstream),
            ("shields", old.shields != new.shields),
        ])
    }

    fn build_upstream(&self, config: &EdgeConfig) -> Result<EdgeUpstream, String> {
        build_edge_upstream(
            config,
            &self.registry,
            &self.shield_metrics,
            &self.in_use,
            &self.resends,
        )
        .map_err(|e| e.to_string())
    }
}

/// The edge's upstream: the origin directly, or origin shields.
pub enum EdgeUpstream {
    Origin(OriginUpstream),
    Shields(ShieldUpstream),
}

impl Upstream for EdgeUpstream {
    async fn send(
        &self,
        request: Request<UpstreamBody>,
        hop: &Hop,
    ) -> Result<Response<UpstreamResponseBody>, RequestError> {
        match self {
            EdgeUpstream::Origin(origin) => origin.send(request, hop).await,
            EdgeUpstream::Shields(shields) => shields.send(request, hop).await,
        }
    }

    fn body_idle_timeout(&self) -> Duration {
        match self {
            EdgeUpstream::Origin(origin) => origin.body_idle_timeout(),
            EdgeUpstream::Shields(shields) => shields.body_idle_timeout(),
        }
    }

    fn name(&self) -> &str {
        match self {
            EdgeUpstream::Origin(origin) => origin.name(),
            EdgeUpstream::Shields(shields) => shields.name(),
        }
    }

    fn apply_routing(&self, table: &RoutingTable) -> Result<(), String> {
        match self {
            EdgeUpstream::Origin(origin) => origin.apply_routing(table),
            EdgeUpstream::Shields(shields) => shields.apply_routing(table),
        }
    }

    fn health(&self) -> Vec<UpstreamHealth> {
        match self {
            EdgeUpstream::Origin(origin) => origin.health(),
            EdgeUpstream::Shields(shields) => shields.health(),
        }
    }

    async fn probe(&self, cadence: ProbeCadence) {
        match self {
            EdgeUpstream::Origin(origin) => origin.probe(cadence).await,
            EdgeUpstream::Shields(shields) => shields.probe(cadence).await,
        }
    }
}
