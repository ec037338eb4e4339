//! A shield's upstream: its origin pool, or — when control's tier plan has two levels and this
//! shield is a lower one — the upper shields, by consistent hashing, with the pool behind them
//! as the fallback.
//!
//! The parents come from routing tables only ([`verge_config::tiers::TierPlan::parents_of`]):
//! an upper shield, or one without a plan, goes to its origin as always. A shield never takes
//! itself as a parent; a loop that tables in transition could still form is refused by every
//! node's `Via` check (508). How the parents are used — when one is ejected and for how long,
//! the failover budget, bounded load, TLS to `https://` parents — is the shield's `[parents]`
//! table, which means what the same keys of an edge's `[shields]` mean.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use verge_config::shields::{ShieldsConfig, UpperTierConfig};
use verge_config::wire::{RoutingTable, UpstreamHealth};
use verge_config::{NodeId, ShieldSpec, UpstreamConfig};
use verge_node::error::RequestError;
use verge_node::rtt::ProbeCadence;
use verge_node::shields::{shield_specs, ShieldMetrics, ShieldUpstream};
use verge_node::tls::client::upstream_client_config;
use verge_node::upstream::{Hop, Upstream, UpstreamBody, UpstreamResponseBody};
use verge_node::StartError;

use crate::pool::OriginPool;

/// The origin pool, and the upper shields in front of it when the plan gives this shield any.
pub struct ShieldTier {
    pool: Arc<OriginPool>,
    parents: ShieldUpstream<Arc<OriginPool>>,
    me: NodeId,
}

impl ShieldTier {
    /// Starts with no parents (misses to the pool) until a routing table names some; they are
    /// used as `settings` (`[parents]`) says, each reached with the timeouts and connection
    /// bound of `upstream`. An unusable `[parents.tls]` stops the start, named by its key.
    pub fn new(
        me: &NodeId,
        pool: Arc<OriginPool>,
        upstream: &UpstreamConfig,
        settings: &UpperTierConfig,
        metrics: ShieldMetrics,
        in_use: &prometheus::IntGauge,
    ) -> Result<ShieldTier, StartError> {
        // Checked here so that a file that cannot be used is named under `parents.tls`.
        upstream_client_config(&settings.tls, [], "parents.tls").map_err(StartError::Tls)?;
        let settings = ShieldsConfig::with_upper_tier(settings.clone(), Vec::new(), true);
        let parents = ShieldUpstream::new(&settings, upstream, Arc::clone(&pool), metrics, in_use)?
            .as_parents();
        Ok(ShieldTier {
            pool,
            parents,
            me: me.clone(),
        })
    }

    /// The pool behind the tier (health checks, first lookups).
    pub fn pool(&self) -> &Arc<OriginPool> {
        &self.pool
    }
}

/// The healthy upper shields `table` gives shield `me`, never `me` itself.
fn parents(table: &RoutingTable, me: &NodeId) -> Result<Vec<ShieldSpec>, String> {
    let Some(plan) = &table.tiers else {
        return Ok(Vec::new());
    };
    let ids = plan.parents_of(me);
    let (healthy, _) = shield_specs(table, None)?;
    Ok(healthy
        .into_iter()
        .filter(|s| &s.id != me && ids.contains(&s.id))
        .collect())
}

impl Upstream for ShieldTier {
    async fn send(
        &self,
        request: Request<UpstreamBody>,
        hop: &Hop,
    ) -> Result<Response<UpstreamResponseBody>, RequestError> {
        if self.parents.has_members() {
            self.parents.send(request, hop).await
        } else {
            self.pool.send(request, hop).await
        }
    }

    fn body_idle_timeout(&self) -> Duration {
        self.pool.body_idle_timeout()
    }

    fn name(&self) -> &str {
        self.pool.name()
    }

    /// The table's upper shields become the parents (none: straight to the origin).
    fn apply_routing(&self, table: &RoutingTable) -> Result<(), String> {
        let parents = parents(table, &self.me)?;
        self.parents
            .follow_table(&parents, table)
            .map_err(|e| e.to_string())
    }

    fn health(&self) -> Vec<UpstreamHealth> {
        let mut health = self.pool.health();
        health.extend(self.parents.health());
        health
    }

    async fn probe(&self, cadence: ProbeCadence) {
        tokio::join!(self.pool.probe(cadence), self.parents.probe(cadence));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use verge_config::tiers::{TierPlan, Topology};
    use verge_config::wire::{NodeEntry, NodeRole};
    use verge_config::RegionId;

    fn shield(id: &str, healthy: bool) -> NodeEntry {
        NodeEntry {
            id: NodeId::new(id).unwrap(),
            role: NodeRole::Shield,
            region: RegionId::new("us").unwrap(),
            data_url: format!("http://{id}.test:80"),
            admin_url: String::new(),
            weight: 1,
            healthy,
        }
    }

    #[test]
    fn a_lower_shield_gets_the_healthy_upper_ones_and_an_upper_one_none() {
        let id = |s: &str| NodeId::new(s).unwrap();
        let table = RoutingTable {
            shields: vec![
                shield("up-1", true),
                shield("up-2", false),
                shield("low", true),
            ],
            tiers: Some(TierPlan {
                topology: Topology::Auto,
                regions: Vec::new(),
                upper: vec![id("up-1"), id("up-2")],
            }),
            ..RoutingTable::default()
        };
        let names =
            |v: Vec<ShieldSpec>| -> Vec<String> { v.iter().map(|s| s.id.to_string()).collect() };
        assert_eq!(names(parents(&table, &id("low")).unwrap()), ["up-1"]);
        assert!(parents(&table, &id("up-1")).unwrap().is_empty());
        let flat = RoutingTable {
            tiers: None,
            ..table
        };
        assert!(parents(&flat, &id("low")).unwrap().is_empty());
    }
}
