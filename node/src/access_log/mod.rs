//! Access logs: one line per request, written by a thread of the node's own through a bounded
//! queue, so that logging never holds a request up: a line that finds the queue full is
//! dropped and counted. Also the request id every request carries across the tiers.
//!
//! - `line`: what a line says ([`Record`]) and its text, JSON or the combined log format;
//! - `writer`: the writer thread, its batches, failed writes and reopening (SIGUSR1);
//! - [`request_id`]: taking or making the id of a request.
//!
//! On the request path the pipeline asks [`AccessLog::begin`] for a [`Pending`] line (none
//! when there is no access log, or the request is not sampled and turns out no error), fills
//! in the answer and hands the line to the response body, which sends it to the writer when
//! the body has ended or the client went away: bytes sent and duration are then known.

mod line;
pub mod request_id;
mod writer;

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwapOption;
use http::header::{HeaderValue, HOST, REFERER, USER_AGENT};
use http::{HeaderMap, Request, Response, Version};
use prometheus::{IntCounter, Registry};
use tokio::sync::mpsc;
use verge_config::AccessLogConfig;

pub use line::{LineContext, Record, RequestFields, RequestText, UpstreamSeen};

use crate::body::ResponseBody;
use crate::headers::CACHE_STATUS;
use crate::metrics::RequestOutcome;
use writer::{Counters, Destination, Message, Writer};

/// The facts of a TLS connection a request came on, put in its extensions by the listener.
#[derive(Debug, Clone, Copy)]
pub struct TlsInfo {
    /// `TLSv1.3`, `TLSv1.2`.
    pub version: &'static str,
}

/// Which server answered an upstream request: a shield's id, an origin server. Put in the
/// response's extensions by the upstream that sent it.
#[derive(Debug, Clone)]
pub struct AnsweredBy(pub Arc<str>);

/// One node's access log and request ids; reconfigured in place by a reload.
pub struct AccessLog {
    /// The writer serving now; `None`: no access log.
    sink: ArcSwapOption<Sink>,
    trust_request_id: AtomicBool,
    node_id: String,
    region: String,
    counters: Counters,
}

/// A running writer and how lines reach it.
pub(crate) struct Sink {
    queue: mpsc::Sender<Message>,
    sample: f64,
    reopen: Arc<AtomicBool>,
    counters: Counters,
}

impl Sink {
    fn start(
        config: &AccessLogConfig,
        destination: Destination,
        context: LineContext,
        counters: &Counters,
    ) -> Result<Sink, String> {
        let (queue, receiver) = mpsc::channel(config.buffer_lines);
        let reopen = Arc::new(AtomicBool::new(false));
        Writer {
            queue: receiver,
            destination,
            context,
            counters: counters.clone(),
            reopen: Arc::clone(&reopen),
        }
        .spawn()
        .map_err(|e| format!("cannot start the access log writer: {e}"))?;
        Ok(Sink {
            queue,
            sample: config.sample,
            reopen,
            counters: counters.clone(),
        })
    }

    /// Queues a line, or drops and counts it when the queue is full.
    fn send(&self, record: Record) {
        if self.queue.try_send(record).is_err() {
            self.counters.dropped.inc();
        }
    }

    /// The writer opens the file again on its next round.
    fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
    }
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("on", &self.sink.load().is_some())
            .field("trust_request_id", &self.trust_request_id)
            .finish()
    }
}

impl AccessLog {
    /// The access log `config` asks for (`None`: none), its counters registered on `registry`.
    /// A file that cannot be opened is an error naming it.
    pub fn start(
        config: Option<&AccessLogConfig>,
        trust_request_id: bool,
        node_id: &str,
        region: &str,
        registry: &Registry,
    ) -> Result<Arc<AccessLog>, crate::StartError> {
        let lines = IntCounter::new("verge_access_log_lines_total", "Access log lines written.")?;
        let dropped = IntCounter::new(
            "verge_access_log_dropped_total",
            "Access log lines dropped: the queue was full or the write failed.",
        )?;
        verge_serve::register_metrics!(registry; lines, dropped);
        let log = AccessLog {
            sink: ArcSwapOption::empty(),
            trust_request_id: AtomicBool::new(trust_request_id),
            node_id: node_id.to_string(),
            region: region.to_string(),
            counters: Counters { lines, dropped },
        };
        let sink = log.prepare(config).map_err(crate::StartError::AccessLog)?;
        log.commit(sink);
        Ok(Arc::new(log))
    }

    /// Opens the destination `config` names and starts its writer, not yet in service; the
    /// error names the path. Dropped unused, the writer stops.
    pub(crate) fn prepare(
        &self,
        config: Option<&AccessLogConfig>,
    ) -> Result<Option<Arc<Sink>>, String> {
        let Some(config) = config else {
            return Ok(None);
        };
        let destination = Destination::open(&config.target)?;
        self.sink_to(config, destination)
            .map(|sink| Some(Arc::new(sink)))
    }

    fn sink_to(&self, config: &AccessLogConfig, destination: Destination) -> Result<Sink, String> {
        let context = LineContext::new(config.format, &self.node_id, &self.region);
        Sink::start(config, destination, context, &self.counters)
    }

    /// Puts a prepared writer in service; requests already begun finish on the one before,
    /// which stops once they are done.
    pub(crate) fn commit(&self, sink: Option<Arc<Sink>>) {
        self.sink.store(sink);
    }

    pub(crate) fn set_trust_request_id(&self, trusted: bool) {
        self.trust_request_id.store(trusted, Ordering::Relaxed);
    }

    /// Asks the writer to open its file again (after log rotation renamed it).
    pub fn reopen(&self) {
        if let Some(sink) = self.sink.load().as_ref() {
            sink.reopen();
        }
    }

    /// The id of a request with `headers`.
    pub(crate) fn request_id(&self, headers: &HeaderMap) -> HeaderValue {
        request_id::for_request(headers, self.trust_request_id.load(Ordering::Relaxed))
    }

    /// The line of a request just arrived, when there is an access log. Only cheap clones
    /// here: the text is made by the writer.
    pub(crate) fn begin<B>(
        &self,
        request: &Request<B>,
        client: SocketAddr,
        started: Instant,
        request_id: &HeaderValue,
    ) -> Option<Pending> {
        let sink = self.sink.load_full()?;
        let sampled = sink.sample >= 1.0 || fastrand::f64() < sink.sample;
        let headers = request.headers();
        let header = |name| headers.get(name).map(HeaderValue::as_bytes);
        let host = header(HOST).or_else(|| Some(request.uri().authority()?.as_str().as_bytes()));
        let path = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let text = RequestText::new(RequestFields {
            host,
            path: path.as_bytes(),
            request_id: request_id.as_bytes(),
            referer: header(REFERER),
            user_agent: header(USER_AGENT),
        });
        Some(Pending {
            sink,
            sampled,
            started,
            record: Record {
                time: SystemTime::now(),
                client,
                method: request.method().clone(),
                request: text,
                status: 0,
                bytes_sent: 0,
                duration: std::time::Duration::ZERO,
                outcome: "",
                cache_status: None,
                upstream: None,
                tls: request.extensions().get::<TlsInfo>().map(|tls| tls.version),
                protocol: if request.version() == Version::HTTP_2 {
                    "h2"
                } else {
                    "h1"
                },
            },
        })
    }
}

/// A request's line while it is being answered.
pub(crate) struct Pending {
    sink: Arc<Sink>,
    /// Chosen by `sample`; a line not sampled is still written for an error.
    sampled: bool,
    started: Instant,
    record: Record,
}

impl Pending {
    /// Completes the line with the answer and hands it to the response body, which sends it
    /// once the body has ended or was dropped. `failed`: the node answered with its own error
    /// (always logged, like any 5xx).
    pub(crate) fn attach(
        mut self,
        response: Response<ResponseBody>,
        outcome: RequestOutcome,
        failed: bool,
        upstream: Option<UpstreamSeen>,
    ) -> Response<ResponseBody> {
        let status = response.status();
        if !self.sampled && !failed && !status.is_server_error() {
            return response;
        }
        self.record.status = status.as_u16();
        self.record.outcome = outcome.as_str();
        self.record.cache_status = response.headers().get(&CACHE_STATUS).cloned();
        self.record.upstream = upstream;
        let line = OpenLine {
            sink: self.sink,
            started: self.started,
            record: Some(self.record),
        };
        response.map(|body| ResponseBody::logged(body, line))
    }
}

/// A line waiting for its response body to end.
pub struct OpenLine {
    sink: Arc<Sink>,
    started: Instant,
    /// Taken when the line is sent.
    record: Option<Record>,
}

impl OpenLine {
    /// Counts body bytes handed to the connection.
    pub(crate) fn sent(&mut self, bytes: usize) {
        if let Some(record) = self.record.as_mut() {
            record.bytes_sent += bytes as u64;
        }
    }

    /// Sends the line (once).
    pub(crate) fn finish(&mut self) {
        if let Some(mut record) = self.record.take() {
            record.duration = self.started.elapsed();
            self.sink.send(record);
        }
    }
}

impl Drop for OpenLine {
    fn drop(&mut self) {
        self.finish();
    }
}

tokio::task_local! {
    /// What the upstream did for the request being answered in this scope.
    static UPSTREAM: Cell<Option<UpstreamSeen>>;
}

/// Runs `answer` and returns what the upstream did for it, as [`note_upstream`] told.
pub(crate) async fn noting_upstream<F: Future>(answer: F) -> (F::Output, Option<UpstreamSeen>) {
    UPSTREAM
        .scope(Cell::new(None), async {
            let output = answer.await;
            (output, UPSTREAM.with(Cell::take))
        })
        .await
}

/// Tells the access log what the upstream did for the request being answered; `seen` is only
/// called when that request is logged.
pub(crate) fn note_upstream(seen: impl FnOnce() -> UpstreamSeen) {
    let _ = UPSTREAM.try_with(|cell| cell.set(Some(seen())));
}

#[cfg(test)]
mod tests;
