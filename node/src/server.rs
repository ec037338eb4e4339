//! Listeners: the accept loop, per-connection HTTP/1.1 and HTTP/2 serving (in clear or behind
//! TLS), connection limits and graceful shutdown. Shared by the data plane and the admin
//! listener.
//!
//! Limits are read from a swappable snapshot at each accept, so a configuration reload applies
//! to new connections while open ones keep the settings they were accepted with.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

use crate::access_log::TlsInfo;
use crate::body::ResponseBody;
use crate::metrics::NodeMetrics;
use crate::tls::acceptor::TlsTerminator;

/// Answers the requests of one listener.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        &self,
        request: Request<Incoming>,
        client: SocketAddr,
    ) -> impl Future<Output = Response<ResponseBody>> + Send;
}

/// Per-listener protocol limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerLimits {
    pub max_header_bytes: usize,
    pub header_read_timeout: Duration,
    pub h2_max_concurrent_streams: u32,
    /// Streams a client may open and reset before they are accepted (rapid-reset defence).
    pub h2_max_pending_accept_reset_streams: usize,
    /// Streams reset for the client's protocol errors before the connection is closed.
    pub h2_max_local_error_reset_streams: usize,
    pub shutdown_grace: Duration,
    /// How long a connection may stay open with no request in flight.
    pub idle_timeout: Duration,
}

/// What one listener serves and under which settings.
pub struct Listener<H> {
    pub listener: TcpListener,
    pub handler: Arc<H>,
    /// Read at each accept; a reload swaps it.
    pub limits: Arc<ArcSwap<ListenerLimits>>,
    pub connections: Arc<ConnectionLimit>,
    /// TLS termination; `None`: clear text.
    pub tls: Option<Arc<TlsTerminator>>,
    /// Connection counts (the data plane only).
    pub metrics: Option<NodeMetrics>,
}

/// Serves `listener` until `shutdown` turns true, then stops accepting and lets open
/// connections finish their in-flight requests for at most the shutdown grace.
pub async fn serve<H: Handler>(listener: Listener<H>, mut shutdown: watch::Receiver<bool>) {
    let Listener {
        listener,
        handler,
        limits,
        connections,
        tls,
        metrics,
    } = listener;
    let mut current = limits.load_full();
    let mut builder = http_builder(&current);
    let serving = Arc::new(Serving::default());
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Usually out of file descriptors: back off rather than spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut shutdown) => break,
        };
        let accepted = Instant::now();
        let slot = match connections.admit(client.ip()) {
            Ok((slot, evicted)) => {
                if evicted {
                    shed(&metrics, "evicted");
                }
                slot
            }
            Err(refused) => {
                shed(
                    &metrics,
                    match refused {
                        Refused::Full => "full",
                        Refused::PerAddress => "per_address",
                    },
                );
                drop(stream);
                continue;
            }
        };
        let latest = limits.load();
        if !Arc::ptr_eq(&current, &latest) {
            current = Arc::clone(&latest);
            builder = http_builder(&current);
        }
        let _ = stream.set_nodelay(true);
        if let Some(m) = &metrics {
            m.connections_total.inc();
            m.connections_open.inc();
        }
        let connection = Connection {
            handler: Arc::clone(&handler),
            builder: builder.clone(),
            limits: Arc::clone(&current),
            shutdown: shutdown.clone(),
            serving: Serving::enter(&serving),
            metrics: metrics.clone(),
            client,
            accepted,
            tls: None,
            slot,
        };
        match &tls {
            None => {
                tokio::spawn(connection.serve(stream));
            }
            Some(terminator) => {
                let terminator = Arc::clone(terminator);
                tokio::spawn(async move {
                    // The handshake counts towards the first request's time.
                    let deadline = accepted + connection.limits.header_read_timeout;
                    let handshake = terminator.accept(stream, client);
                    match tokio::time::timeout_at(deadline, handshake).await {
                        Ok(Some(stream)) => {
                            let version = stream.get_ref().1.protocol_version();
                            let connection = Connection {
                                tls: Some(TlsInfo {
                                    version: tls_version_name(version),
                                }),
                                ..connection
                            };
                            connection.serve(stream).await;
                        }
                        Ok(None) => connection.ended(),
                        Err(_) => {
                            shed(&connection.metrics, "request_timeout");
                            connection.ended();
                        }
                    }
                });
            }
        }
    }
    drop(listener);
    let grace = limits.load().shutdown_grace;
    tokio::select! {
        () = serving.drained() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!(?grace, "shutdown grace elapsed with connections still open");
        }
    }
}

/// Counts a connection the node closed or refused.
fn shed(metrics: &Option<NodeMetrics>, reason: &str) {
    if let Some(m) = metrics {
        m.connections_shed.with_label_values(&[reason]).inc();
    }
}

/// The connections one listener is serving, for its shutdown to wait on.
#[derive(Default)]
struct Serving {
    open: AtomicUsize,
    ended: Notify,
}

impl Serving {
    fn enter(serving: &Arc<Serving>) -> ServingGuard {
        serving.open.fetch_add(1, Ordering::AcqRel);
        ServingGuard(Arc::clone(serving))
    }

    async fn drained(&self) {
        loop {
            let ended = self.ended.notified();
            if self.open.load(Ordering::Acquire) == 0 {
                return;
            }
            ended.await;
        }
    }
}

struct ServingGuard(Arc<Serving>);

impl Drop for ServingGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.ended.notify_waiters();
    }
}

/// How long a connection asked to close (idle, evicted) may take to finish.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// How long an idle HTTP/1.1 connection is left open when the listener stops, for a request
/// already on its way.
const IDLE_DRAIN: Duration = Duration::from_millis(500);

/// One accepted connection on its way to being served.
struct Connection<H> {
    handler: Arc<H>,
    builder: auto::Builder<TokioExecutor>,
    limits: Arc<ListenerLimits>,
    shutdown: watch::Receiver<bool>,
    serving: ServingGuard,
    metrics: Option<NodeMetrics>,
    client: SocketAddr,
    accepted: Instant,
    /// The TLS the connection came over, told to each request; `None`: clear text.
    tls: Option<TlsInfo>,
    slot: ConnectionSlot,
}

/// Why a connection's watch ended it.
enum Close {
    /// The listener stops: finish in-flight requests within the shutdown grace.
    Shutdown,
    /// Idle too long, or evicted: close now if idle, else after the in-flight requests.
    Idle(&'static str),
    /// No request within the header timeout of the accept: drop it.
    NoRequest,
}

impl<H: Handler> Connection<H> {
    /// The connection ends without having been served.
    fn ended(self) {
        if let Some(m) = &self.metrics {
            m.connections_open.dec();
        }
    }

    async fn serve<S>(self, stream: S)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            handler,
            builder,
            limits,
            mut shutdown,
            serving,
            metrics,
            client,
            accepted,
            tls,
            slot,
        } = self;
        let slot = Arc::new(slot);
        let state = Arc::clone(slot.state());
        let http2 = Arc::new(AtomicBool::new(false));
        let heads = HeadWatch::new();
        let stream = Watched::new(
            stream,
            limits.max_header_bytes.max(MIN_HEAD_BUFFER),
            Arc::clone(&heads),
        );
        let service = {
            let slot = Arc::clone(&slot);
            let http2 = Arc::clone(&http2);
            service_fn(move |mut request: Request<Incoming>| {
                let handler = Arc::clone(&handler);
                let in_flight = slot.begin_request();
                if request.version() == http::Version::HTTP_2 {
                    http2.store(true, Ordering::Release);
                } else if heads.next_request_is_ambiguous() {
                    request.extensions_mut().insert(AmbiguousLength);
                }
                if let Some(tls) = tls {
                    request.extensions_mut().insert(tls);
                }
                async move {
                    let response = handler.handle(request, client).await;
                    Ok::<_, Infallible>(response.map(|body| Tracked {
                        body,
                        _in_flight: in_flight,
                    }))
                }
            })
        };
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        tokio::pin!(connection);
        let close = loop {
            let deadline = if !state.has_requested() {
                accepted + limits.header_read_timeout
            } else if state.in_flight() > 0 {
                // Busy: look again later (a request may take longer than the idle timeout).
                Instant::now() + limits.idle_timeout
            } else {
                slot.limit().idle_since(&state) + limits.idle_timeout
            };
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%client, %error, "connection ended with an error");
                        if is_timeout(&*error) {
                            // hyper's own header timeout came first: the same shedding.
                            let reason = if state.has_requested() {
                                "idle_timeout"
                            } else {
                                "request_timeout"
                            };
                            shed(&metrics, reason);
                        }
                    }
                    break None;
                }
                () = stopped(&mut shutdown) => break Some(Close::Shutdown),
                () = state.close_requested() => break Some(Close::Idle("")),
                () = tokio::time::sleep_until(deadline) => {
                    if !state.has_requested() {
                        break Some(Close::NoRequest);
                    }
                    if state.in_flight() == 0
                        && slot.limit().idle_since(&state) + limits.idle_timeout <= Instant::now()
                    {
                        break Some(Close::Idle("idle_timeout"));
                    }
                }
            }
        };
        let grace = match close {
            None => None,
            Some(Close::NoRequest) => {
                shed(&metrics, "request_timeout");
                None
            }
            Some(Close::Shutdown) => Some(limits.shutdown_grace),
            Some(Close::Idle(reason)) => {
                if !reason.is_empty() {
                    shed(&metrics, reason);
                }
                Some(CLOSE_GRACE.max(if state.in_flight() > 0 {
                    limits.shutdown_grace
                } else {
                    Duration::ZERO
                }))
            }
        };
        let mut finished = false;
        if let (Some(Close::Shutdown), Some(grace)) = (&close, grace) {
            if !http2.load(Ordering::Acquire) && state.in_flight() == 0 {
                // An idle HTTP/1.1 connection has no way to be told it is closing: a client
                // may be sending its next request right now. Wait a moment for one, which is
                // then answered with `Connection: close`, before closing.
                tokio::select! {
                    _ = connection.as_mut() => finished = true,
                    () = state.request_begins() => {}
                    () = tokio::time::sleep(grace.min(IDLE_DRAIN)) => {}
                }
            }
        }
        if let (false, Some(grace)) = (finished, grace) {
            // HTTP/1.1: closes once the response in flight (if any) is sent; HTTP/2: GOAWAY,
            // then the open streams finish.
            connection.as_mut().graceful_shutdown();
            if tokio::time::timeout(grace, connection.as_mut())
                .await
                .is_err()
            {
                tracing::debug!(%client, "connection did not close in time; dropped");
            }
        }
        drop(serving);
        if let Some(m) = metrics {
            m.connections_open.dec();
        }
    }
}

/// A response body that keeps its request counted as in flight until it has been sent (or
/// dropped), so a connection streaming a response is never taken for idle.
struct Tracked {
    body: ResponseBody,
    _in_flight: RequestInFlight,
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = crate::body::BodyError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A negotiated TLS version as access logs name it.
fn tls_version_name(version: Option<rustls::ProtocolVersion>) -> &'static str {
    match version {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "TLS",
    }
}

/// Whether a connection ended because hyper timed it out (its header read timeout).
fn is_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    error
        .downcast_ref::<hyper::Error>()
        .is_some_and(hyper::Error::is_timeout)
}

/// Completes once the shutdown flag is raised (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await.map(|_| ());
}

/// Hyper's smallest read buffer: the head bound is never below it.
const MIN_HEAD_BUFFER: usize = 8192;

fn http_builder(limits: &ListenerLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(MIN_HEAD_BUFFER));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(Some(limits.h2_max_pending_accept_reset_streams))
        .max_local_error_reset_streams(Some(limits.h2_max_local_error_reset_streams));
    builder
}

mod connections;
mod framing;

pub use connections::{ConnectionLimit, ConnectionSlot, Refused, RequestInFlight};
pub use framing::{AmbiguousLength, AMBIGUOUS_LENGTH};
use framing::{HeadWatch, Watched};
