//! The node's side of the control plane: register, heartbeat, and follow the push stream.
//!
//! [`ControlClient::run`] is one loop: register (`POST /v1/register`), then hold
//! `GET /v1/events?node=ID&since=SEQ` and apply its newline-delimited [`Event`]s in order until
//! the stream ends, then wait a backoff and go round again. Beside it, one task posts a
//! heartbeat every interval and another acknowledges each newly applied purge sequence number.
//!
//! - `purge`: applied exactly as the admin API applies one ([`crate::admin::apply_purge`]), in
//!   sequence: a number already applied is skipped, a jump means events were lost and the
//!   stream is reopened from the last applied one;
//! - `routing`: handed to the upstream ([`Upstream::apply_routing`]); a table it refuses leaves
//!   the last good one in force;
//! - `resync`: the whole cache is dropped before the node carries on from the given number;
//! - `keepalive`: proves the stream alive; 3 × the heartbeat interval + 5 s without a byte and
//!   the stream counts as dead.
//!
//! The first stream after start is opened without `since`: control starts it at the head, which
//! its first routing table names. Later streams resume with `since` = the last applied purge.
//!
//! Losing control never stops the data plane: the node keeps serving with its last table and
//! reconnects with exponential backoff and jitter, resuming from its last applied purge.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use serde::Serialize;
use tokio::sync::watch;
use verge_config::wire::{Ack, Heartbeat, Registered, Registration, Traffic, MAX_EVENT_LINE_BYTES};
use verge_config::{NodeControlConfig, NodeId};
use verge_serve::tls_client::Http1Client;

mod backoff;
mod events;
mod framing;

use backoff::{jitter_seed, Backoff};
#[cfg(test)]
use events::{purge_order, PurgeOrder};
use framing::{LineFramer, LineTooLong};

use crate::live::LivePipeline;
use crate::metrics::RequestOutcome;
use crate::settings::NodeControl;
use crate::upstream::Upstream;

/// Longest a round of latency probes may take, whatever the heartbeat interval: round trips
/// up to this long can be measured.
const PROBE_ROUND_MAX: Duration = Duration::from_secs(3);

/// Bound on each register, heartbeat and ack call, and on the push stream's response head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Bound on opening a TCP connection to control.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Largest answer read from control's register, heartbeat and ack endpoints.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The control plane as the node sees it, on the node's registry.
#[derive(Clone)]
pub struct ControlMetrics {
    connected: IntGauge,
    reconnects: IntCounter,
    events: IntCounterVec,
    applied_seq: IntGauge,
    head_seq: IntGauge,
    lag: IntGauge,
    table_version: IntGauge,
}

impl ControlMetrics {
    pub fn register(registry: &Registry) -> Result<ControlMetrics, prometheus::Error> {
        let m = ControlMetrics {
            connected: IntGauge::new(
                "verge_control_connected",
                "Whether the push stream from control is open (1) or not (0)",
            )?,
            reconnects: IntCounter::new(
                "verge_control_reconnects_total",
                "Times the node lost (or could not reach) control and tried again",
            )?,
            events: IntCounterVec::new(
                Opts::new(
                    "verge_control_events_total",
                    "Lines received on the push stream, by event type (invalid: not an event)",
                ),
                &["type"],
            )?,
            applied_seq: IntGauge::new(
                "verge_control_applied_seq",
                "Highest purge sequence number applied (every lower one is applied too)",
            )?,
            head_seq: IntGauge::new(
                "verge_control_head_seq",
                "Highest purge sequence number control has announced",
            )?,
            lag: IntGauge::new(
                "verge_control_lag",
                "Purges announced by control and not yet applied here (head - applied)",
            )?,
            table_version: IntGauge::new(
                "verge_routing_table_version",
                "Version of the routing table in use (0: none yet)",
            )?,
        };
        verge_serve::register_metrics!(
            registry; m.connected, m.reconnects, m.events, m.applied_seq, m.head_seq, m.lag,
            m.table_version
        );
        Ok(m)
    }
}

/// How long the push stream may stay silent before it counts as dead.
pub(crate) fn silence_limit(heartbeat_interval: Duration) -> Duration {
    heartbeat_interval.saturating_mul(3) + Duration::from_secs(5)
}

/// Why the push stream ended (or never started).
#[derive(Debug)]
enum StreamEnd {
    /// The node is shutting down.
    Shutdown,
    /// Control could not be reached or answered with an error.
    Unreachable(String),
    /// The stream closed, broke, or went silent.
    Lost(String),
    /// A purge arrived past the next expected one.
    Gap { applied: u64, seq: u64 },
    /// A line that is not an event.
    Garbage(String),
}

/// A cache node's link to the control plane. Built by the node runtime when `[control]` is
/// configured; [`ControlClient::run`] lives as long as the node serves.
pub struct ControlClient<U> {
    shared: Arc<Shared<U>>,
}

struct Shared<U> {
    pipeline: Arc<LivePipeline<U>>,
    http: Http1Client,
    /// `http://host:port` (or `https://`) of each control replica's node listener.
    bases: Vec<String>,
    /// Which of `bases` the node follows now.
    current: AtomicUsize,
    registration: Registration,
    config: NodeControlConfig,
    metrics: ControlMetrics,
    /// Highest purge sequence number applied; the ack task watches it.
    applied: watch::Sender<u64>,
    head: AtomicU64,
    table_version: AtomicU64,
    /// Heartbeats start once control has accepted a registration.
    registered: AtomicBool,
    /// Heartbeat period: the configured one, or control's if it asks for more often.
    heartbeat_every: watch::Sender<Duration>,
    /// The node's metrics, read for the traffic each heartbeat reports.
    registry: Registry,
}

impl<U: Upstream> ControlClient<U> {
    /// A client that will register this node (its listeners at `data_addr` and `admin_addr`)
    /// and act on `pipeline`'s store and upstream. Its metrics go on `registry`.
    pub fn new(
        control: NodeControl<'_>,
        id: &NodeId,
        data_addr: SocketAddr,
        admin_addr: SocketAddr,
        pipeline: Arc<LivePipeline<U>>,
        registry: &Registry,
    ) -> Result<ControlClient<U>, crate::StartError> {
        let metrics = ControlMetrics::register(registry)?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        connector.set_local_address(control.config.source_address);
        let wants_tls = control.config.tls != verge_config::ClientTlsConfig::default()
            || control
                .config
                .urls
                .iter()
                .any(|u| u.scheme == http::uri::Scheme::HTTPS);
        let tls = if wants_tls {
            let tls = verge_serve::tls_client::client_config(&control.config.tls)
                .map_err(|e| crate::StartError::Tls(format!("control.tls.{}: {e}", e.key())))?;
            Some(tls)
        } else {
            None
        };
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30));
        let http = Http1Client::new(&builder, connector, tls);
        let config = control.config.clone();
        Ok(ControlClient {
            shared: Arc::new(Shared {
                pipeline,
                http,
                current: AtomicUsize::new(
                    usize::try_from(jitter_seed(id)).unwrap_or(0) % config.urls.len().max(1),
                ),
                bases: config.urls.iter().map(ToString::to_string).collect(),
                registration: Registration {
                    id: id.clone(),
                    role: control.role,
                    region: control.region.clone(),
                    data_url: config
                        .advertise_url
                        .as_ref()
                        .map_or_else(|| format!("http://{data_addr}"), ToString::to_string),
                    admin_url: format!("http://{admin_addr}"),
                    weight: config.weight,
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    shields: Vec::new(),
                    upstreams: Vec::new(),
                },
                metrics,
                applied: watch::Sender::new(0),
                head: AtomicU64::new(0),
                table_version: AtomicU64::new(0),
                registered: AtomicBool::new(false),
                heartbeat_every: watch::Sender::new(config.heartbeat_interval),
                registry: registry.clone(),
                config,
            }),
        })
    }

    /// Registers, follows the push stream and heartbeats until `stop` turns true; every task
    /// it started has ended when it returns.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let shared = self.shared;
        let heartbeats = tokio::spawn(Arc::clone(&shared).heartbeats(stop.clone()));
        let acks = tokio::spawn(Arc::clone(&shared).acks(stop.clone()));
        let probes = tokio::spawn(Arc::clone(&shared).probes(stop.clone()));
        let mut backoff = Backoff::new(
            shared.config.reconnect_min,
            shared.config.reconnect_max,
            jitter_seed(&shared.registration.id),
        );
        // `None` until a stream has told where it starts: a node that just started has
        // nothing to catch up on and starts at the head.
        let mut since = None;
        loop {
            let end = match or_stop(&mut stop, shared.register()).await {
                None => StreamEnd::Shutdown,
                Some(Err(reason)) => StreamEnd::Unreachable(reason),
                Some(Ok(registered)) => {
                    shared.saw_head(registered.head);
                    shared.update_metrics();
                    shared.follow(&mut since, &mut stop, &mut backoff).await
                }
            };
            shared.metrics.connected.set(0);
            match &end {
                StreamEnd::Shutdown => break,
                StreamEnd::Unreachable(reason) | StreamEnd::Lost(reason) => {
                    tracing::warn!(control = %shared.base(), %reason, "control unreachable; serving with the last routing table");
                    shared.move_on();
                }
                StreamEnd::Gap { applied, seq } => {
                    tracing::warn!(
                        applied,
                        seq,
                        "purges missing from the push stream; resuming from the last applied"
                    );
                }
                StreamEnd::Garbage(reason) => {
                    tracing::warn!(control = %shared.base(), %reason, "invalid line on the push stream; reconnecting");
                    shared.move_on();
                }
            }
            shared.metrics.reconnects.inc();
            let delay = backoff.next();
            if or_stop(&mut stop, tokio::time::sleep(delay))
                .await
                .is_none()
            {
                break;
            }
        }
        let _ = heartbeats.await;
        let _ = acks.await;
        let _ = probes.await;
    }
}

impl<U: Upstream> Shared<U> {
    /// The node listener of the control replica followed now.
    fn base(&self) -> &str {
        let i = self.current.load(Ordering::Relaxed);
        self.bases.get(i).map_or("", String::as_str)
    }

    /// After losing the replica followed: the next one, if there are several (the backoff
    /// and its jitter apply before trying it, as before any reconnect).
    fn move_on(&self) {
        if self.bases.len() > 1 {
            let next = (self.current.load(Ordering::Relaxed) + 1) % self.bases.len();
            self.current.store(next, Ordering::Relaxed);
            tracing::info!(control = %self.base(), "moving to another control replica");
        }
    }

    /// Presents the node token (`control.token`), when there is one.
    fn authorize<B>(&self, request: &mut Request<B>) {
        let Some(token) = &self.config.token else {
            return;
        };
        if let Ok(mut value) = HeaderValue::from_str(&format!("Bearer {token}")) {
            value.set_sensitive(true);
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, value);
        }
    }

    fn uri(&self, path_and_query: &str) -> Result<Uri, String> {
        format!("{}{path_and_query}", self.base())
            .parse()
            .map_err(|e| format!("bad control URL: {e}"))
    }

    /// POSTs `body` as JSON and returns the answer's body, bounded in time and size.
    async fn post(&self, path: &str, body: &impl Serialize) -> Result<Bytes, String> {
        let json = serde_json::to_vec(body).map_err(|e| format!("cannot encode: {e}"))?;
        let mut request = Request::new(Full::new(Bytes::from(json)));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.uri(path)?;
        request
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        self.authorize(&mut request);
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| format!("POST {path}: {}", root_cause(&e)))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| format!("POST {path}: reading the answer: {e}"))?
                .to_bytes();
            if !status.is_success() {
                let text = String::from_utf8_lossy(&body);
                return Err(format!("POST {path}: {status}: {}", text.trim()));
            }
            Ok(body)
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("POST {path}: no answer within {REQUEST_TIMEOUT:?}"))?
    }

    async fn register(&self) -> Result<Registered, String> {
        let registration = Registration {
            shields: self.pipeline.table_shields(),
            upstreams: self.pipeline.health(),
            ..self.registration.clone()
        };
        let body = self.post("/v1/register", &registration).await?;
        let registered: Registered = serde_json::from_slice(&body)
            .map_err(|e| format!("POST /v1/register: invalid answer: {e}"))?;
        self.registered.store(true, Ordering::Relaxed);
        if registered.heartbeat_interval_ms > 0 {
            let asked = Duration::from_millis(registered.heartbeat_interval_ms);
            let every = self.config.heartbeat_interval.min(asked);
            self.heartbeat_every.send_if_modified(|current| {
                let changed = *current != every;
                *current = every;
                changed
            });
        }
        tracing::info!(control = %self.base(), head = registered.head, "registered with control");
        Ok(registered)
    }

    /// Opens the push stream and applies its events until it ends. `since` becomes the
    /// resume point once a stream has said where it starts.
    async fn follow(
        &self,
        since: &mut Option<u64>,
        stop: &mut watch::Receiver<bool>,
        backoff: &mut Backoff,
    ) -> StreamEnd {
        let id = self.registration.id.as_str();
        let query = match since {
            Some(seq) => format!("/v1/events?node={id}&since={seq}"),
            None => format!("/v1/events?node={id}"),
        };
        let uri = match self.uri(&query) {
            Ok(uri) => uri,
            Err(reason) => return StreamEnd::Unreachable(reason),
        };
        let mut request = Request::new(Full::new(Bytes::new()));
        *request.uri_mut() = uri;
        self.authorize(&mut request);
        let opened = or_stop(
            stop,
            tokio::time::timeout(REQUEST_TIMEOUT, self.http.request(request)),
        )
        .await;
        let response: Response<Incoming> = match opened {
            None => return StreamEnd::Shutdown,
            Some(Err(_)) => {
                return StreamEnd::Unreachable(format!(
                    "GET /v1/events: no answer within {REQUEST_TIMEOUT:?}"
                ))
            }
            Some(Ok(Err(e))) => {
                return StreamEnd::Unreachable(format!("GET /v1/events: {}", root_cause(&e)))
            }
            Some(Ok(Ok(response))) => response,
        };
        if response.status() != StatusCode::OK {
            return StreamEnd::Unreachable(format!("GET /v1/events: {}", response.status()));
        }
        self.metrics.connected.set(1);
        tracing::info!(control = %self.base(), since = ?since, "following control's push stream");
        // A stream opened without `since` starts at the head, which its first routing table
        // (or purge) names; until then there is no point to resume from.
        let mut at_head = since.is_none();
        let end = self
            .read_events(response.into_body(), &mut at_head, stop, backoff)
            .await;
        if !at_head {
            *since = Some(*self.applied.borrow());
        }
        end
    }

    async fn read_events(
        &self,
        mut body: Incoming,
        at_head: &mut bool,
        stop: &mut watch::Receiver<bool>,
        backoff: &mut Backoff,
    ) -> StreamEnd {
        let silence = silence_limit(self.config.heartbeat_interval);
        let mut framer = LineFramer::new(MAX_EVENT_LINE_BYTES);
        loop {
            let frame = match or_stop(stop, tokio::time::timeout(silence, body.frame())).await {
                None => return StreamEnd::Shutdown,
                Some(Err(_)) => {
                    return StreamEnd::Lost(format!("push stream silent for {silence:?}"))
                }
                Some(Ok(None)) => return StreamEnd::Lost("push stream closed".to_string()),
                Some(Ok(Some(Err(e)))) => return StreamEnd::Lost(format!("push stream: {e}")),
                Some(Ok(Some(Ok(frame)))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            framer.push(&data);
            loop {
                let line = match framer.next_line() {
                    Ok(Some(line)) => line,
                    Ok(None) => break,
                    Err(LineTooLong) => {
                        self.metrics.events.with_label_values(&["invalid"]).inc();
                        return StreamEnd::Garbage(format!(
                            "a line longer than {MAX_EVENT_LINE_BYTES} bytes"
                        ));
                    }
                };
                let handled = self.handle_line(&line, at_head);
                self.update_metrics();
                if let Err(end) = handled {
                    return end;
                }
                backoff.reset();
            }
        }
    }

    fn update_metrics(&self) {
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let applied = *self.applied.borrow();
        let head = self.head.load(Ordering::Relaxed);
        self.metrics.applied_seq.set(gauge(applied));
        self.metrics.head_seq.set(gauge(head));
        self.metrics.lag.set(gauge(head.saturating_sub(applied)));
        self.metrics
            .table_version
            .set(gauge(self.table_version.load(Ordering::Relaxed)));
    }

    /// Posts a heartbeat every interval once registered. A missed one is only logged: the
    /// push stream is what notices that control went away.
    async fn heartbeats(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut every = self.heartbeat_every.subscribe();
        let mut failing = false;
        loop {
            let period = *every.borrow_and_update();
            tokio::select! {
                () = stopped(&mut stop) => return,
                _ = every.changed() => continue,
                () = tokio::time::sleep(period) => {}
            }
            if !self.registered.load(Ordering::Relaxed) {
                continue;
            }
            let heartbeat = Heartbeat {
                id: self.registration.id.clone(),
                applied_seq: *self.applied.borrow(),
                table_version: self.table_version.load(Ordering::Relaxed),
                in_flight: 0,
                upstreams: self.pipeline.health(),
                traffic: Some(traffic(&self.registry)),
            };
            match or_stop(&mut stop, self.post("/v1/heartbeat", &heartbeat)).await {
                None => return,
                Some(Ok(_)) => failing = false,
                Some(Err(reason)) if !failing => {
                    failing = true;
                    tracing::debug!(%reason, "heartbeat not delivered");
                }
                Some(Err(_)) => {}
            }
        }
    }

    /// Measures the round trips to the upstreams once per heartbeat interval, for the next
    /// heartbeats to report. A round may take longer than a short interval (a shield across
    /// the world is 200 ms or more away), up to [`PROBE_ROUND_MAX`].
    async fn probes(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let every = self.heartbeat_every.subscribe();
        loop {
            let period = *every.borrow();
            let cadence = crate::rtt::ProbeCadence::from(&self.config);
            let round =
                tokio::time::timeout(period.max(PROBE_ROUND_MAX), self.pipeline.probe(cadence));
            if or_stop(&mut stop, round).await.is_none() {
                return;
            }
            if or_stop(&mut stop, tokio::time::sleep(period))
                .await
                .is_none()
            {
                return;
            }
        }
    }

    /// Acknowledges each newly applied purge sequence number as soon as it changes; a burst
    /// is acknowledged by its last number.
    async fn acks(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut applied = self.applied.subscribe();
        loop {
            tokio::select! {
                () = stopped(&mut stop) => return,
                changed = applied.changed() => if changed.is_err() { return },
            }
            let ack = Ack {
                id: self.registration.id.clone(),
                applied_seq: *applied.borrow_and_update(),
            };
            match or_stop(&mut stop, self.post("/v1/ack", &ack)).await {
                None => return,
                Some(Ok(_)) => {}
                // The next heartbeat carries the same number.
                Some(Err(reason)) => {
                    tracing::debug!(seq = ack.applied_seq, %reason, "ack not delivered")
                }
            }
        }
    }
}

/// Completes once the stop flag is raised (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Runs `future` unless the node stops first (`None`).
async fn or_stop<F: std::future::Future>(
    stop: &mut watch::Receiver<bool>,
    future: F,
) -> Option<F::Output> {
    tokio::select! {
        () = stopped(stop) => None,
        output = future => Some(output),
    }
}

fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

/// The node's traffic so far, read from its metrics: client requests (`verge_requests_total`,
/// leaving out what the node answered itself: the latency probes of the edges below a shield,
/// which would otherwise make an idle shield look busy and never hit), those that were hits,
/// and requests sent upstream (`verge_upstream_requests_total`).
fn traffic(registry: &Registry) -> Traffic {
    let mut traffic = Traffic::default();
    for family in registry.gather() {
        let counters = family.get_metric().iter().map(|metric| {
            let status = metric
                .get_label()
                .iter()
                .find(|l| l.name() == "cache_status")
                .map(|l| l.value());
            // Counters hold whole numbers.
            (status, metric.get_counter().get_value() as u64)
        });
        match family.name() {
            "verge_requests_total" => {
                for (status, count) in counters {
                    let local = status == Some(RequestOutcome::Local.as_str());
                    if !local {
                        traffic.requests += count;
                    }
                    if status == Some(RequestOutcome::Hit.as_str()) {
                        traffic.hits += count;
                    }
                }
            }
            "verge_upstream_requests_total" => {
                traffic.upstream_requests += counters.map(|(_, count)| count).sum::<u64>();
            }
            _ => {}
        }
    }
    traffic
}

#[cfg(test)]
mod tests;
