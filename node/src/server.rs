//! Listeners: the accept loop, per-connection HTTP/1.1 and HTTP/2 serving (in clear or behind
//! TLS), connection limits and graceful shutdown. Shared by the data plane and the admin
//! listener.
//!
//! Limits are read from a swappable snapshot at each accept, so a configuration reload applies
//! to new connections while open ones keep the settings they were accepted with.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
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
}

/// A bound on open connections shared by every listener of a kind (the data plane's clear
/// and TLS listeners share one), resizable while running.
#[derive(Debug)]
pub struct ConnectionLimit {
    max: AtomicUsize,
    open: AtomicUsize,
    freed: Notify,
}

impl ConnectionLimit {
    pub fn new(max: usize) -> Arc<ConnectionLimit> {
        Arc::new(ConnectionLimit {
            max: AtomicUsize::new(max),
            open: AtomicUsize::new(0),
            freed: Notify::new(),
        })
    }

    /// Changes the bound. Lowering it closes nothing: new connections wait until enough
    /// open ones have ended.
    pub fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Release);
        self.freed.notify_waiters();
    }

    pub fn max(&self) -> usize {
        self.max.load(Ordering::Acquire)
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Waits for room, then takes a slot released when the returned guard drops.
    async fn acquire(self: &Arc<Self>) -> ConnectionSlot {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let open = self.open.load(Ordering::Acquire);
            if open < self.max()
                && self
                    .open
                    .compare_exchange(open, open + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                return ConnectionSlot {
                    limit: Arc::clone(self),
                };
            }
            if open < self.max() {
                continue;
            }
            freed.await;
        }
    }
}

struct ConnectionSlot {
    limit: Arc<ConnectionLimit>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.limit.open.fetch_sub(1, Ordering::AcqRel);
        self.limit.freed.notify_one();
    }
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
    let graceful = GracefulShutdown::new();
    let mut current = limits.load_full();
    let mut builder = http_builder(&current);
    loop {
        let slot = tokio::select! {
            slot = connections.acquire() => slot,
            () = stopped(&mut shutdown) => break,
        };
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
            watcher: graceful.watcher(),
            metrics: metrics.clone(),
            client,
            tls: None,
            _slot: slot,
        };
        match &tls {
            None => {
                tokio::spawn(connection.serve(stream));
            }
            Some(terminator) => {
                let terminator = Arc::clone(terminator);
                tokio::spawn(async move {
                    if let Some(stream) = terminator.accept(stream, client).await {
                        let version = stream.get_ref().1.protocol_version();
                        let connection = Connection {
                            tls: Some(TlsInfo {
                                version: tls_version_name(version),
                            }),
                            ..connection
                        };
                        connection.serve(stream).await;
                    }
                });
            }
        }
    }
    drop(listener);
    let grace = limits.load().shutdown_grace;
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!(?grace, "shutdown grace elapsed with connections still open");
        }
    }
}

/// One accepted connection on its way to being served.
struct Connection<H> {
    handler: Arc<H>,
    builder: auto::Builder<TokioExecutor>,
    watcher: Watcher,
    metrics: Option<NodeMetrics>,
    client: SocketAddr,
    /// The TLS the connection came over, told to each request; `None`: clear text.
    tls: Option<TlsInfo>,
    _slot: ConnectionSlot,
}

impl<H: Handler> Connection<H> {
    async fn serve<S>(self, stream: S)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            handler,
            builder,
            watcher,
            metrics,
            client,
            tls,
            _slot,
        } = self;
        let service = service_fn(move |mut request: Request<Incoming>| {
            let handler = Arc::clone(&handler);
            if let Some(tls) = tls {
                request.extensions_mut().insert(tls);
            }
            async move { Ok::<_, Infallible>(handler.handle(request, client).await) }
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        if let Err(error) = watcher.watch(connection).await {
            tracing::debug!(%client, error = %error, "connection ended with an error");
        }
        if let Some(m) = metrics {
            m.connections_open.dec();
        }
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

/// Completes once the shutdown flag is raised (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await.map(|_| ());
}

fn http_builder(limits: &ListenerLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(Some(limits.h2_max_pending_accept_reset_streams))
        .max_local_error_reset_streams(Some(limits.h2_max_local_error_reset_streams));
    builder
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_limit_waits_for_room_and_can_be_raised() {
        let limit = ConnectionLimit::new(1);
        let first = limit.acquire().await;
        assert_eq!(limit.open(), 1);
        let waiting = tokio::spawn({
            let limit = Arc::clone(&limit);
            async move {
                let _slot = limit.acquire().await;
            }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "the second connection waits");
        limit.set_max(2);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("raising the bound lets it in")
            .expect("task");
        drop(first);
        assert_eq!(limit.open(), 0);
    }

    #[tokio::test]
    async fn lowering_the_limit_closes_nothing_but_holds_new_connections() {
        let limit = ConnectionLimit::new(2);
        let a = limit.acquire().await;
        let b = limit.acquire().await;
        limit.set_max(1);
        let waiting = tokio::spawn({
            let limit = Arc::clone(&limit);
            async move {
                let _slot = limit.acquire().await;
            }
        });
        drop(a);
        tokio::task::yield_now().await;
        assert!(
            !waiting.is_finished(),
            "one open connection already fills the new bound"
        );
        drop(b);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("room once both ended")
            .expect("task");
    }
}
