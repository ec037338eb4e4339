//! Where misses go. [`Upstream`] is the hop boundary: the edge's upstream is its origin or a
//! shield ring, and a shield's is an origin pool. [`OriginUpstream`] is the client of one
//! server, over HTTP or HTTPS ([`crate::tls::client`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use prometheus::{IntCounter, IntGauge};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use verge_cache::CacheKey;
use verge_config::wire::{RoutingTable, UpstreamHealth};
use verge_config::{OriginUrl, UpstreamConfig};

use crate::access_log::AnsweredBy;
use crate::client_body::ClientBody;
use crate::error::RequestError;
use crate::guard::AddressGuard;
use crate::rtt::{self, RttWindow};
use crate::tls::client::{self, UpstreamConnector};

/// A request body sent upstream: nothing (cache fills) or the client's body, read whole or
/// streamed through.
pub type UpstreamBody = Either<Empty<Bytes>, ClientBody>;

/// An upstream response's body. It holds its connection's slot until it ends or is dropped,
/// so the connection limit counts responses still streaming, and so does the bound on what
/// the requesting client's address may have waiting on the upstream.
pub struct UpstreamResponseBody {
    inner: Incoming,
    slot: Option<Slot>,
    address: Option<AddressGuard>,
}

impl UpstreamResponseBody {
    pub fn new(inner: Incoming) -> UpstreamResponseBody {
        UpstreamResponseBody {
            inner,
            slot: None,
            address: None,
        }
    }

    /// Keeps the client address's place until the body ends or is dropped.
    pub(crate) fn hold(&mut self, address: AddressGuard) {
        self.address = Some(address);
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
            self.address = None;
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

/// What an upstream is told about a request beside the request itself.
#[derive(Debug, Clone)]
pub struct Hop {
    /// The cache key the pipeline stores the answer under; it also picks the owner of the key
    /// in the next tier, so key and upstream always agree.
    pub key: CacheKey,
    /// Whether the request may be sent again elsewhere after a failure: a GET or HEAD with no
    /// body (a client's body is read once).
    pub replayable: bool,
}

impl Hop {
    /// The hop of a cache fill for `uri` with `headers`: a GET or HEAD without a body, keyed
    /// as the pipeline keys it.
    pub fn fill(uri: &http::Uri, headers: &http::HeaderMap) -> Result<Hop, verge_cache::KeyError> {
        Ok(Hop {
            key: CacheKey::for_request("http", uri, headers)?,
            replayable: true,
        })
    }
}

/// One hop towards the origin.
pub trait Upstream: Send + Sync + 'static {
    /// Sends a request whose URI is origin-form (path and query); the upstream picks the server
    /// (by `hop.key` where it hashes) and fails over only when `hop.replayable`.
    fn send(
        &self,
        request: Request<UpstreamBody>,
        hop: &Hop,
    ) -> impl Future<Output = Result<Response<UpstreamResponseBody>, RequestError>> + Send;

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

    /// Measures the round trip to each server it may send to ([`crate::rtt`]), those without
    /// real traffic as often as `cadence` says; the results show in [`Upstream::health`].
    /// Called once per heartbeat interval by the control client.
    fn probe(&self, cadence: rtt::ProbeCadence) -> impl Future<Output = ()> + Send {
        let _ = cadence;
        async {}
    }
}

/// A single origin server (or shield) reached over a pooled client: HTTP/1.1 in the clear for
/// `http://`, TLS for `https://` with HTTP/2 when the server picks it by ALPN.
pub struct OriginUpstream {
    client: UpstreamClient,
    origin: OriginUrl,
    name: String,
    /// `name`, as the access log says who answered.
    answered_by: AnsweredBy,
    connect_timeout: Duration,
    response_timeout: Duration,
    /// Bounds requests (and so connections) open to the origin at once.
    slots: Arc<Semaphore>,
    max_connections: usize,
    in_use: IntGauge,
    /// Round trips of requests sent through [`Upstream::send`] and of probes.
    rtt: RttWindow,
    /// Bodiless idempotent requests sent again because the server closed a kept-alive
    /// connection as they went out on it ([`closed_before_answering`]).
    resent: IntCounter,
}

/// The pooled client: plain TCP when no TLS is configured, else TCP plus TLS for `https` URIs
/// (which still reaches `http` URIs in the clear).
enum UpstreamClient {
    Plain(Client<HttpConnector, UpstreamBody>),
    Tls(Client<UpstreamConnector, UpstreamBody>),
}

impl UpstreamClient {
    fn request(&self, request: Request<UpstreamBody>) -> ResponseFuture {
        match self {
            UpstreamClient::Plain(client) => client.request(request),
            UpstreamClient::Tls(client) => client.request(request),
        }
    }
}

/// Locally reset HTTP/2 streams remembered so that the peer's late frames on them are not a
/// protocol error (fills abandoned by their clients reset streams).
const H2_MAX_CONCURRENT_RESET_STREAMS: usize = 64;

/// HTTP/2 streams reset because of the upstream's protocol errors before the connection is
/// closed.
const H2_MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;

impl OriginUpstream {
    /// A client for a plain `http://` origin; `in_use` counts the connection slots taken. An
    /// `https://` origin needs [`OriginUpstream::with_tls`]: here each request would fail (502).
    pub fn new(config: &UpstreamConfig, in_use: IntGauge) -> OriginUpstream {
        OriginUpstream::with_tls(config, None, in_use)
    }

    /// A client for `config.origin`, reaching `https://` origins with `tls` (built once per
    /// upstream table by [`crate::tls::client::client_config`] and shared). SNI and the
    /// certificate check use `config.tls.server_name` when set, else the URL's host.
    pub fn with_tls(
        config: &UpstreamConfig,
        tls: Option<Arc<rustls::ClientConfig>>,
        in_use: IntGauge,
    ) -> OriginUpstream {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        connector.set_local_address(config.source_address);
        connector.enforce_http(true);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(config.idle_timeout)
            .pool_max_idle_per_host(config.max_idle_per_host)
            .pool_timer(TokioTimer::new())
            // HTTP/2, on connections where the upstream chose it by ALPN. No pings: idle
            // connections are closed by `idle_timeout` and requests are bounded by
            // `response_timeout`. Flow-control windows stay hyper's (5 MiB per connection,
            // 2 MiB per stream), fixed rather than adaptive.
            .http2_keep_alive_interval(None)
            .http2_adaptive_window(false)
            .http2_max_concurrent_reset_streams(H2_MAX_CONCURRENT_RESET_STREAMS)
            .http2_max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESET_STREAMS);
        let client = match tls {
            None => UpstreamClient::Plain(builder.build(connector)),
            Some(tls) => UpstreamClient::Tls(builder.build(client::connector(
                connector,
                tls,
                &config.origin,
                config.tls.server_name.as_deref(),
            ))),
        };
        OriginUpstream {
            client,
            name: config.origin.to_string(),
            answered_by: AnsweredBy(Arc::from(config.origin.to_string())),
            origin: config.origin.clone(),
            connect_timeout: config.connect_timeout,
            response_timeout: config.response_timeout,
            slots: Arc::new(Semaphore::new(config.max_connections)),
            max_connections: config.max_connections,
            in_use,
            rtt: RttWindow::default(),
            resent: IntCounter::new("unregistered", "resends of an upstream without metrics")
                .expect("a valid counter"),
        }
    }

    /// Counts the requests sent again after their kept-alive connection closed in `resent`
    /// (registered by the caller).
    pub fn counting_resends(mut self, resent: IntCounter) -> OriginUpstream {
        self.resent = resent;
        self
    }

    /// Waits up to the connect timeout for a free connection slot.
    async fn slot(&self) -> Result<Slot, RequestError> {
        let acquire = Arc::clone(&self.slots).acquire_owned();
        match tokio::time::timeout(self.connect_timeout, acquire).await {
            Ok(Ok(permit)) => {
                self.in_use.inc();
                Ok(Slot {
                    _permit: permit,
                    in_use: self.in_use.clone(),
                })
            }
            _ => Err(RequestError::UpstreamSaturated {
                upstream: self.name.clone(),
                limit: self.max_connections,
            }),
        }
    }

    fn classify(&self, error: hyper_util::client::legacy::Error) -> RequestError {
        let upstream = self.name.clone();
        let reason = match client::tls_failure(&error) {
            Some(tls) => format!("TLS: {tls}"),
            None => root_cause(&error),
        };
        if error.is_connect() {
            if timed_out(&error) {
                return RequestError::UpstreamTimeout {
                    upstream,
                    after: self.connect_timeout,
                };
            }
            return RequestError::UpstreamConnect { upstream, reason };
        }
        RequestError::UpstreamBroken { upstream, reason }
    }
}

impl Upstream for OriginUpstream {
    async fn send(
        &self,
        request: Request<UpstreamBody>,
        _hop: &Hop,
    ) -> Result<Response<UpstreamResponseBody>, RequestError> {
        let sent = tokio::time::Instant::now();
        let response = self.request(request).await;
        if response.is_ok() {
            self.rtt.record_request(sent.elapsed());
        }
        response
    }

    fn body_idle_timeout(&self) -> Duration {
        self.response_timeout
    }

    fn name(&self) -> &str {
        &self.name
    }

    /// The server, named by its URL, with the round trip measured to it (once there is one).
    fn health(&self) -> Vec<UpstreamHealth> {
        vec![UpstreamHealth {
            id: self.name.clone(),
            up: true,
            rtt_ms: self.rtt.rtt_ms(),
        }]
    }

    /// An `OPTIONS` probe when no request gave a round trip within [`rtt::QUIET`] and none
    /// came at all within the cadence's `origin_every`.
    async fn probe(&self, cadence: rtt::ProbeCadence) {
        if !self.rtt.wants_probe(cadence.origin_every) {
            return;
        }
        self.probe_into(&self.rtt).await;
    }
}

impl OriginUpstream {
    /// Measures the round trip to this server into `window` ([`rtt::probe`]).
    pub async fn probe_into(&self, window: &RttWindow) {
        rtt::probe(window, || self.request(rtt::probe_request())).await;
    }

    /// Sends one request to this server: one attempt, no failover.
    pub async fn request(
        &self,
        request: Request<UpstreamBody>,
    ) -> Result<Response<UpstreamResponseBody>, RequestError> {
        if self.origin.scheme == Scheme::HTTPS && matches!(self.client, UpstreamClient::Plain(_)) {
            return Err(RequestError::UpstreamConnect {
                upstream: self.name.clone(),
                reason: "an https upstream, but no TLS client configuration".into(),
            });
        }
        let slot = self.slot().await?;
        let (mut parts, body) = request.into_parts();
        let body_failure = match &body {
            Either::Right(body) => body.failure(),
            Either::Left(_) => None,
        };
        // A client's body that failed on the way is why the exchange failed, whatever the
        // client library makes of it: the client's fault, not this upstream's.
        let client_fault = || {
            body_failure
                .as_ref()
                .and_then(|failure| failure.get().copied())
                .map(RequestError::ClientBody)
        };
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        // Over TLS the request names the client's host (HTTP/2 sends it as `:authority`); the
        // connector takes every connection to the origin anyway.
        let authority = match &self.client {
            UpstreamClient::Tls(_) if self.origin.scheme == Scheme::HTTPS => {
                host_authority(&parts.headers).unwrap_or_else(|| self.origin.authority.clone())
            }
            _ => self.origin.authority.clone(),
        };
        parts.uri = Uri::builder()
            .scheme(self.origin.scheme.clone())
            .authority(authority)
            .path_and_query(path)
            .build()
            .map_err(|e| RequestError::UpstreamBroken {
                upstream: self.name.clone(),
                reason: format!("cannot build request URI: {e}"),
            })?;
        // A bodiless GET, HEAD or OPTIONS may go out again once (RFC 9110 §9.2.2): a pooled
        // connection the server closed while idle looks open until its FIN arrives, so a
        // request sent on it then gets no answer through nobody's fault.
        let again = match (&body, &parts.method) {
            (Either::Left(_), &Method::GET | &Method::HEAD | &Method::OPTIONS) => Some((
                parts.method.clone(),
                parts.uri.clone(),
                parts.version,
                parts.headers.clone(),
            )),
            _ => None,
        };
        let request = Request::from_parts(parts, body);
        let exchange = async {
            match (self.client.request(request).await, again) {
                (Err(e), Some((method, uri, version, headers))) if closed_before_answering(&e) => {
                    self.resent.inc();
                    tracing::debug!(upstream = %self.name, error = %root_cause(&e), "sending again: the connection closed before any answer");
                    let mut request = Request::new(Either::Left(Empty::new()));
                    *request.method_mut() = method;
                    *request.uri_mut() = uri;
                    *request.version_mut() = version;
                    *request.headers_mut() = headers;
                    self.client.request(request).await
                }
                (result, _) => result,
            }
        };
        match tokio::time::timeout(self.response_timeout, exchange).await {
            Err(_) => Err(
                client_fault().unwrap_or_else(|| RequestError::UpstreamTimeout {
                    upstream: self.name.clone(),
                    after: self.response_timeout,
                }),
            ),
            Ok(Err(e)) => Err(client_fault().unwrap_or_else(|| self.classify(e))),
            Ok(Ok(mut response)) => {
                response.extensions_mut().insert(self.answered_by.clone());
                Ok(response.map(|inner| UpstreamResponseBody {
                    inner,
                    slot: Some(slot),
                    address: None,
                }))
            }
        }
    }
}

/// The request's one `Host`, when it is a valid authority without user info.
fn host_authority(headers: &http::HeaderMap) -> Option<Authority> {
    let mut hosts = headers.get_all(HOST).iter();
    let host = hosts.next()?;
    if hosts.next().is_some() {
        return None;
    }
    let host = host.to_str().ok()?;
    if host.contains('@') {
        return None;
    }
    host.parse().ok()
}

/// Whether the server closed (or reset) the connection before answering at all: what a
/// request sent on a kept-alive connection the server was closing meets.
fn closed_before_answering(error: &(dyn std::error::Error + 'static)) -> bool {
    any_cause(error, |e| {
        e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_incomplete_message)
            || io_kind(e).is_some_and(|kind| {
                matches!(
                    kind,
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                )
            })
    })
}

fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    any_cause(error, |e| io_kind(e) == Some(std::io::ErrorKind::TimedOut))
}

/// Whether `error` or any error behind it (its `source` chain) satisfies `test`.
fn any_cause(
    error: &(dyn std::error::Error + 'static),
    test: impl Fn(&(dyn std::error::Error + 'static)) -> bool,
) -> bool {
    std::iter::successors(Some(error), |e| e.source()).any(test)
}

fn io_kind(error: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    error
        .downcast_ref::<std::io::Error>()
        .map(std::io::Error::kind)
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
        hop: &Hop,
    ) -> impl Future<Output = Result<Response<UpstreamResponseBody>, RequestError>> + Send {
        T::send(self, request, hop)
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

    fn probe(&self, cadence: rtt::ProbeCadence) -> impl Future<Output = ()> + Send {
        T::probe(self, cadence)
    }
}
