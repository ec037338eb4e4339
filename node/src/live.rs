//! The pipeline a node serves with now. A configuration reload that changes the upstream or the
//! pipeline's limits builds a new [`CachePipeline`] (same store, same single-flight table) and
//! swaps it in; requests keep the pipeline they started on.
//!
//! The last routing table pushed by the control plane is kept here, so a pipeline swapped in
//! routes by it from its first request.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::{ArcSwap, Guard};
use http::{Request, Response};
use hyper::body::Incoming;
use verge_config::rules::RuleSet;
use verge_config::wire::{RoutingTable, UpstreamHealth};
use verge_config::NodeId;

use crate::body::ResponseBody;
use crate::pipeline::CachePipeline;
use crate::server::Handler;
use crate::upstream::Upstream;

/// The swappable pipeline of one node.
pub struct LivePipeline<U> {
    current: ArcSwap<CachePipeline<U>>,
    /// The newest routing table applied, re-applied to every pipeline swapped in.
    table: Mutex<Option<RoutingTable>>,
    /// Control's cache rules from the newest table that carried valid ones, tried before the
    /// node's own by every pipeline swapped in.
    control_rules: Mutex<Arc<RuleSet>>,
}

impl<U: Upstream> LivePipeline<U> {
    pub fn new(pipeline: Arc<CachePipeline<U>>) -> Arc<LivePipeline<U>> {
        Arc::new(LivePipeline {
            current: ArcSwap::new(pipeline),
            table: Mutex::new(None),
            control_rules: Mutex::default(),
        })
    }

    /// The pipeline serving now.
    pub fn load(&self) -> Guard<Arc<CachePipeline<U>>> {
        self.current.load()
    }

    /// Puts `next` in service, first routing it by the last table applied. On error nothing
    /// changes.
    pub fn replace(&self, next: Arc<CachePipeline<U>>) -> Result<(), String> {
        let table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(table) = table.as_ref() {
            next.upstream.apply_routing(table)?;
        }
        let control = Arc::clone(
            &self
                .control_rules
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        in_force(&next, &control);
        self.current.store(next);
        Ok(())
    }

    /// The healthy shields of the last routing table applied (none before the first).
    pub fn table_shields(&self) -> Vec<NodeId> {
        let table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        table.as_ref().map_or_else(Vec::new, |t| {
            t.healthy_shields().map(|s| s.id.clone()).collect()
        })
    }

    /// Applies a routing table to the pipeline serving now and remembers it. Its cache rules
    /// replace control's earlier ones when they are valid; invalid ones are logged and the
    /// earlier ones stay (the rest of the table still applies).
    pub fn apply_routing(&self, table: &RoutingTable) -> Result<(), String> {
        let mut kept = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.current.load();
        current.upstream.apply_routing(table)?;
        let rules_changed = kept.as_ref().is_none_or(|old| old.rules != table.rules);
        if rules_changed {
            match RuleSet::from_raw(table.rules.clone()) {
                Ok(control) => {
                    let control = Arc::new(control);
                    in_force(&current, &control);
                    *self
                        .control_rules
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = control;
                }
                Err(errors) => {
                    tracing::warn!(version = table.version, %errors, "control's cache rules refused; the earlier ones stay");
                }
            }
        }
        *kept = Some(table.clone());
        Ok(())
    }

    /// The upstream health of the pipeline serving now.
    pub fn health(&self) -> Vec<UpstreamHealth> {
        self.current.load().upstream.health()
    }

    /// Probes the round trips of the pipeline serving now.
    pub async fn probe(&self, cadence: crate::rtt::ProbeCadence) {
        let pipeline = self.current.load_full();
        pipeline.upstream.probe(cadence).await;
    }
}

/// Puts `control`'s rules, then the pipeline's own, in force in `pipeline`.
fn in_force<U: Upstream>(pipeline: &CachePipeline<U>, control: &RuleSet) {
    let rules = if control.is_empty() {
        Arc::clone(&pipeline.limits.rules)
    } else {
        Arc::new(RuleSet::chain(control, &pipeline.limits.rules))
    };
    pipeline.rules.store(rules);
}

impl<U: Upstream> Handler for LivePipeline<U> {
    async fn handle(
        &self,
        request: Request<Incoming>,
        client: SocketAddr,
    ) -> Response<ResponseBody> {
        let pipeline = self.current.load_full();
        pipeline.handle(request, client).await
    }
}
