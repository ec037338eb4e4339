//! [`FakeOrigin`]: an HTTP/1.1 origin on `127.0.0.1:0` that answers each path as the test tells
//! it ([`Reply`]) and records every request it receives.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use verge_cache::{Clock, ManualClock};

use crate::http_date;

/// Size of the pieces a chunked reply is sent in.
const CHUNK_BYTES: usize = 16 * 1024;

/// What the origin answers for a path.
#[derive(Debug, Clone)]
pub struct Reply {
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    /// Time to wait before sending the response head.
    delay: Duration,
    /// Send the body in pieces with `Transfer-Encoding: chunked`, without `Content-Length`.
    chunked: bool,
    /// Reset the connection (RST) instead of answering.
    reset: bool,
    /// Moves this clock forward before answering: an origin that takes this long by the edge's
    /// clock (a response delay the edge must count in `Age`).
    clock_step: Option<(Arc<ManualClock>, Duration)>,
}

impl Reply {
    /// A 200 with this body.
    pub fn ok(body: impl Into<Bytes>) -> Reply {
        Reply {
            status: StatusCode::OK,
            headers: Vec::new(),
            body: body.into(),
            delay: Duration::ZERO,
            chunked: false,
            reset: false,
            clock_step: None,
        }
    }

    /// Resets the connection once the request has arrived, without answering.
    pub fn reset() -> Reply {
        Reply {
            reset: true,
            ..Reply::ok(Bytes::new())
        }
    }

    pub fn with_status(mut self, status: u16) -> Reply {
        self.status = StatusCode::from_u16(status).unwrap();
        self
    }

    /// Adds a header line (several lines of one name are kept).
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        ));
        self
    }

    pub fn cache_control(self, value: &str) -> Reply {
        self.header("cache-control", value)
    }

    /// Waits this long after the request arrives before sending the head.
    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    /// Sends the body chunked, without `Content-Length`.
    pub fn chunked(mut self) -> Reply {
        self.chunked = true;
        self
    }

    /// Advances `clock` by `by` once the request has arrived, before `Date` is stamped: by that
    /// clock, the response took `by` to come back.
    pub fn advance_clock(mut self, clock: Arc<ManualClock>, by: Duration) -> Reply {
        self.clock_step = Some((clock, by));
        self
    }
}

/// One request as the origin received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: Method,
    /// Path without the query.
    pub path: String,
    /// Path and query, as sent.
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The address the request's connection came from.
    pub peer: SocketAddr,
}

impl RecordedRequest {
    /// Every value of header `name`, joined with `", "`; `None` when absent.
    pub fn header(&self, name: &str) -> Option<String> {
        super::joined_header(&self.headers, name)
    }
}

#[derive(Default)]
struct Routes {
    exact: HashMap<String, Reply>,
    /// Checked in order after exact paths; the first matching prefix answers.
    prefixes: Vec<(String, Reply)>,
}

impl Routes {
    fn find(&self, path: &str) -> Option<Reply> {
        if let Some(reply) = self.exact.get(path) {
            return Some(reply.clone());
        }
        self.prefixes
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix.as_str()))
            .map(|(_, reply)| reply.clone())
    }
}

#[derive(Default)]
struct OriginState {
    routes: Mutex<Routes>,
    requests: Mutex<Vec<RecordedRequest>>,
    /// When set, `Date` is stamped from this clock (unless the reply sets its own), so the
    /// origin's clock agrees with an edge whose clock the test moves.
    clock: Mutex<Option<Arc<dyn Clock>>>,
}

/// A fake origin server; stops accepting when dropped.
pub struct FakeOrigin {
    addr: SocketAddr,
    state: Arc<OriginState>,
    accept: JoinHandle<()>,
}

impl FakeOrigin {
    /// Binds `127.0.0.1:0` and starts serving. Paths without a reply get a 404.
    pub async fn start() -> FakeOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(OriginState::default());
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&state)));
        FakeOrigin {
            addr,
            state,
            accept,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers requests for exactly `path` (query ignored) with `reply`.
    pub fn on(&self, path: &str, reply: Reply) {
        self.state
            .routes
            .lock()
            .unwrap()
            .exact
            .insert(path.to_string(), reply);
    }

    /// Answers requests for every path starting with `prefix` with `reply`.
    pub fn on_prefix(&self, prefix: &str, reply: Reply) {
        self.state
            .routes
            .lock()
            .unwrap()
            .prefixes
            .push((prefix.to_string(), reply));
    }

    /// Stamps `Date` from `clock` from now on, as an origin whose clock agrees with the edge's.
    /// Without it `Date` is the real time, which a moved edge clock would see as skew.
    pub fn follow_clock(&self, clock: Arc<dyn Clock>) {
        *self.state.clock.lock().unwrap() = Some(clock);
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Requests received so far for `path` (query ignored).
    pub fn hits(&self, path: &str) -> usize {
        self.requests_for(path).len()
    }

    /// Requests received so far, for any path.
    pub fn total_hits(&self) -> usize {
        self.state.requests.lock().unwrap().len()
    }

    /// Requests received so far for `path` (query ignored), in arrival order.
    pub fn requests_for(&self, path: &str) -> Vec<RecordedRequest> {
        self.state
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// The last request received for `path`.
    pub fn last_request(&self, path: &str) -> Option<RecordedRequest> {
        self.state
            .requests
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|r| r.path == path)
            .cloned()
    }
}

impl Drop for FakeOrigin {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<OriginState>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let reset = Arc::new(AtomicBool::new(false));
        let io = TokioIo::new(ResettableStream {
            inner: stream,
            reset: Arc::clone(&reset),
        });
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let state = Arc::clone(&state);
                let reset = Arc::clone(&reset);
                async move { answer(&state, request, &reset, peer).await }
            });
            // An error here is the connection ending (or being reset on purpose).
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(io, service)
                .await;
        });
    }
}

/// The error a service returns to make hyper drop the connection without answering.
#[derive(Debug)]
struct ResetOnPurpose;

impl std::fmt::Display for ResetOnPurpose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("fake origin resets this connection on purpose")
    }
}

impl std::error::Error for ResetOnPurpose {}

async fn answer(
    state: &OriginState,
    request: Request<Incoming>,
    reset: &AtomicBool,
    peer: SocketAddr,
) -> Result<Response<OriginBody>, ResetOnPurpose> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or_else(|| path.clone(), |pq| pq.as_str().to_string());
    state.requests.lock().unwrap().push(RecordedRequest {
        peer,
        method: parts.method,
        path: path.clone(),
        path_and_query,
        headers: parts.headers,
        body,
    });
    let reply = state.routes.lock().unwrap().find(&path);
    let Some(reply) = reply else {
        let mut response = Response::new(OriginBody::full(format!("no reply for {path}\n")));
        *response.status_mut() = StatusCode::NOT_FOUND;
        return Ok(response);
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    if let Some((clock, by)) = &reply.clock_step {
        clock.advance(*by);
    }
    if reply.reset {
        reset.store(true, Ordering::SeqCst);
        return Err(ResetOnPurpose);
    }
    let body = if reply.chunked {
        OriginBody::chunked(&reply.body)
    } else {
        OriginBody::full(reply.body.clone())
    };
    let mut response = Response::new(body);
    *response.status_mut() = reply.status;
    for (name, value) in reply.headers {
        response.headers_mut().append(name, value);
    }
    let clock = state.clock.lock().unwrap().clone();
    if let Some(clock) = clock {
        if !response.headers().contains_key(http::header::DATE) {
            let date = HeaderValue::from_str(&http_date(clock.now())).unwrap();
            response.headers_mut().insert(http::header::DATE, date);
        }
    }
    Ok(response)
}

/// A reply body: whole (with `Content-Length`) or in pieces of unknown total size (chunked).
enum OriginBody {
    Full(Option<Bytes>),
    Chunks(VecDeque<Bytes>),
}

impl OriginBody {
    fn full(bytes: impl Into<Bytes>) -> OriginBody {
        let bytes = bytes.into();
        OriginBody::Full((!bytes.is_empty()).then_some(bytes))
    }

    fn chunked(bytes: &Bytes) -> OriginBody {
        let mut chunks = VecDeque::new();
        let mut at = 0;
        while at < bytes.len() {
            let end = (at + CHUNK_BYTES).min(bytes.len());
            chunks.push_back(bytes.slice(at..end));
            at = end;
        }
        OriginBody::Chunks(chunks)
    }
}

impl Body for OriginBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let next = match self.get_mut() {
            OriginBody::Full(bytes) => bytes.take(),
            OriginBody::Chunks(chunks) => chunks.pop_front(),
        };
        Poll::Ready(next.map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        match self {
            OriginBody::Full(bytes) => bytes.is_none(),
            // Not known to have ended until polled: keeps hyper from computing a length.
            OriginBody::Chunks(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            OriginBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            OriginBody::Chunks(_) => SizeHint::default(),
        }
    }
}

/// A TCP stream that, once flagged, closes with a reset (`SO_LINGER` 0) instead of a FIN.
struct ResettableStream {
    inner: TcpStream,
    reset: Arc<AtomicBool>,
}

impl Drop for ResettableStream {
    fn drop(&mut self) {
        if self.reset.load(Ordering::SeqCst) {
            let _ = self.inner.set_zero_linger();
        }
    }
}

impl AsyncRead for ResettableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
