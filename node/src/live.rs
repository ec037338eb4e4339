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
use verge_config::wire::{RoutingTable, UpstreamHealth};

use crate::body::ResponseBody;
use crate::pipeline::CachePipeline;
use crate::server::Handler;
use crate::upstream::Upstream;

/// The swappable pipeline of one node.
pub struct LivePipeline<U> {
    current: ArcSwap<CachePipeline<U>>,
    /// The newest routing table applied, re-applied to every pipeline swapped in.
    table: Mutex<Option<RoutingTable>>,
}

impl<U: Upstream> LivePipeline<U> {
    pub fn new(pipeline: Arc<CachePipeline<U>>) -> Arc<LivePipeline<U>> {
        Arc::new(LivePipeline {
            current: ArcSwap::new(pipeline),
            table: Mutex::new(None),
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
        self.current.store(next);
        Ok(())
    }

    /// Applies a routing table to the pipeline serving now and remembers it.
    pub fn apply_routing(&self, table: &RoutingTable) -> Result<(), String> {
        let mut kept = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        self.current.load().upstream.apply_routing(table)?;
        *kept = Some(table.clone());
        Ok(())
    }

    /// The upstream health of the pipeline serving now.
    pub fn health(&self) -> Vec<UpstreamHealth> {
        self.current.load().upstream.health()
    }
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
