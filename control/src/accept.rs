//! Control's one accept loop, for its node and admin APIs and for HTTP steering: HTTP/1.1, a
//! bound on connections at once (more are refused and logged), a deadline on reading a
//! request's head, and every connection ended when the server shuts down (long-lived event
//! streams included).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use verge_serve::tls_server::PeerCertificate;

/// Most connections one listener serves at once.
pub const MAX_CONNECTIONS: usize = 4096;

/// How long a client may take to send a request's head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after a failed accept (out of file descriptors, say), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// The next connection accepted on `listener`, or `None` once `shutdown` changes. A failed
/// accept is given to `log_error` and tried again after a pause.
pub(crate) async fn next_connection(
    listener: &TcpListener,
    shutdown: &mut watch::Receiver<bool>,
    log_error: impl Fn(std::io::Error),
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return None,
        };
        match accepted {
            Ok(accepted) => return Some(accepted),
            Err(error) => {
                log_error(error);
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
}

/// Serves the connections accepted on `listener` until `shutdown` changes; `handle` answers
/// each request, given the connection's peer. `what` names the listener in logs. With `tls`,
/// each connection is a TLS one (a failed or slow handshake ends it, logged), and the client's
/// certificate, if it sent one, is in each request's extensions as a [`PeerCertificate`].
pub async fn serve_http1<H, F, B>(
    listener: TcpListener,
    what: &'static str,
    mut shutdown: watch::Receiver<bool>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    handle: H,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    let log_error =
        |error: std::io::Error| tracing::warn!(%error, listener = what, "accept failed");
    while let Some((stream, peer)) = next_connection(&listener, &mut shutdown, log_error).await {
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!(
                listener = what,
                "connection limit reached; refusing a connection"
            );
            continue;
        };
        let _ = stream.set_nodelay(true);
        let handle = handle.clone();
        let mut conn_shutdown = shutdown.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            let _permit = permit;
            // Each request carries the client's certificate, when the handshake had one.
            let service = move |certificate: Option<PeerCertificate>| {
                service_fn(move |mut request: Request<Incoming>| {
                    if let Some(certificate) = &certificate {
                        request.extensions_mut().insert(certificate.clone());
                    }
                    let answer = handle(request, peer);
                    async move { Ok::<_, Infallible>(answer.await) }
                })
            };
            let builder = {
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT);
                builder
            };
            match tls {
                None => {
                    let conn = builder.serve_connection(TokioIo::new(stream), service(None));
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        _ = conn_shutdown.changed() => {}
                    }
                }
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    let stream = tokio::select! {
                        done = handshake => match done {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(error)) => {
                                tracing::debug!(%error, %peer, listener = what, "TLS handshake failed");
                                return;
                            }
                            Err(_) => return,
                        },
                        _ = conn_shutdown.changed() => return,
                    };
                    let certificate = PeerCertificate::of(stream.get_ref().1);
                    let conn =
                        builder.serve_connection(TokioIo::new(stream), service(certificate));
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        _ = conn_shutdown.changed() => {}
                    }
                }
            }
        });
        while connections.try_join_next().is_some() {}
    }
    connections.shutdown().await;
}
