//! Where misses go. [`Upstream`] is the hop boundary: the edge's upstream is its origin here,
//! a shield ring later, and a shield's is an origin pool.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{PathAndQuery, Uri};
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use prometheus::IntGauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use verge_config::wire::{RoutingTable, UpstreamHealth};
use verge_config::{OriginUrl, UpstreamConfig};

use crate::error::EdgeError;

/// A request body sent upstream: nothing (cache fills) or the client's body streamed through.
pub type UpstreamBody = Either<Empty<Bytes>, Incoming>;

/// An upstream response's body. It holds its connection's slot until it ends or is dropped,
/// so the connection limit counts responses still streaming.
pub struct UpstreamResponseBody {
    inner: Incoming,
    slot: Option<Slot>,
}

impl UpstreamResponseBody {
    pub fn new(inner: Incoming) -> UpstreamResponseBody {
        UpstreamResponseBody { inner, slot: None }
    }
}

impl Body for UpstreamResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.slot = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// One of an upstream's connection slots, counted in a gauge while held.
struct Slot {
    _permit: OwnedSemaphorePermit,
    in_use: IntGauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.in_use.dec();
    }
}

/// One hop towards the origin.
pub trait Upstream: Send + Sync + 'static {
    /// Sends a request whose URI is origin-form (path and query); the upstream picks the server.
    fn send(
        &self,
        request: Request<UpstreamBody>,
    ) -> impl Future<Output = Result<Response<UpstreamResponseBody>, EdgeError>> + Send;

    /// How long a response body may stall between chunks before the fill is abandoned.
    fn body_idle_timeout(&self) -> Duration;

    /// Names the upstream in errors and logs.
    fn name(&self) -> &str;

    /// Takes in a routing table pushed by the control plane. On error the upstream keeps
    /// routing as before. Upstreams a table says nothing about ignore it.
    fn apply_routing(&self, _table: &RoutingTable) -> Result<(), String> {
        Ok(())
    }

    /// The servers this upstream sends traffic to and whether each is up now, for heartbeats.
    fn health(&self) -> Vec<UpstreamHealth> {
        Vec::new()
    }
}

/// A single origin server reached over a pooled HTTP/1.1 client.
pub struct OriginUpstream {
    client: Client<HttpConnector, UpstreamBody>,
    origin: OriginUrl,
    name: String,
    connect_timeout: Duration,
    response_timeout: Duration,
    /// Bounds requests (and so connections) open to the origin at once.
    slots: Arc<Semaphore>,
    max_connections: usize,
    in_use: IntGauge,
}

impl OriginUpstream {
    /// `in_use` counts the connection slots taken.
    pub fn new(config: &UpstreamConfig, in_use: IntGauge) -> OriginUpstream {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        connector.set_local_address(config.source_address);
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(config.idle_timeout)
            .pool_max_idle_per_host(config.max_idle_per_host)
            .pool_timer(TokioTimer::new())
            .build(connector);
        OriginUpstream {
            client,
            name: config.origin.to_string(),
            origin: config.origin.clone(),
            connect_timeout: config.connect_timeout,
            response_timeout: config.response_timeout,
            slots: Arc::new(Semaphore::new(config.max_connections)),
            max_connections: config.max_connections,
            in_use,
        }
    }

    /// Waits up to the connect timeout for a free connection slot.
    async fn slot(&self) -> Result<Slot, EdgeError> {
        let acquire = Arc::clone(&self.slots).acquire_owned();
        match tokio::time::timeout(self.connect_timeout, acquire).await {
            Ok(Ok(permit)) => {
                self.in_use.inc();
                Ok(Slot {
                    _permit: permit,
                    in_use: self.in_use.clone(),
                })
            }
            _ => Err(EdgeError::UpstreamSaturated {
                upstream: self.name.clone(),
                limit: self.max_connections,
            }),
        }
    }

    fn classify(&self, error: hyper_util::client::legacy::Error) -> EdgeError {
        let upstream = self.name.clone();
        if error.is_connect() {
            if timed_out(&error) {
                return EdgeError::UpstreamTimeout {
                    upstream,
                    after: self.connect_timeout,
                };
            }
            return EdgeError::UpstreamConnect {
                upstream,
                reason: root_cause(&error),
            };
        }
        EdgeError::UpstreamBroken {
            upstream,
            reason: root_cause(&error),
        }
    }
}

impl Upstream for OriginUpstream {
    async fn send(
        &self,
        request: Request<UpstreamBody>,
    ) -> Result<Response<UpstreamResponseBody>, EdgeError> {
        let slot = self.slot().await?;
        let (mut parts, body) = request.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        parts.uri = Uri::builder()
            .scheme(self.origin.scheme.clone())
            .authority(self.origin.authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|e| EdgeError::UpstreamBroken {
                upstream: self.name.clone(),
                reason: format!("cannot build request URI: {e}"),
            })?;
        let request = Request::from_parts(parts, body);
        match tokio::time::timeout(self.response_timeout, self.client.request(request)).await {
            Err(_) => Err(EdgeError::UpstreamTimeout {
                upstream: self.name.clone(),
                after: self.response_timeout,
            }),
            Ok(Err(e)) => Err(self.classify(e)),
            Ok(Ok(response)) => Ok(response.map(|inner| UpstreamResponseBody {
                inner,
                slot: Some(slot),
            })),
        }
    }

    fn body_idle_timeout(&self) -> Duration {
        self.response_timeout
    }

    fn name(&self) -> &str {
        &self.name
    }
}

fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        current = e.source();
    }
    false
}

fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

/// A shared upstream is an upstream: roles that also run background work on theirs (health
/// checks) keep one handle and give the pipeline another.
impl<T: Upstream> Upstream for Arc<T> {
    fn send(
        &self,
        request: Request<UpstreamBody>,
    ) -> impl Future<Output = Result<Response<UpstreamResponseBody>, EdgeError>> + Send {
        T::send(self, request)
    }

    fn body_idle_timeout(&self) -> Duration {
        T::body_idle_timeout(self)
    }

    fn name(&self) -> &str {
        T::name(self)
    }

    fn apply_routing(&self, table: &RoutingTable) -> Result<(), String> {
        T::apply_routing(self, table)
    }

    fn health(&self) -> Vec<UpstreamHealth> {
        T::health(self)
    }
}
