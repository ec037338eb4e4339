//! Control's two HTTP listeners: the node API (register, heartbeat, ack, event stream) and the
//! admin API (purges, nodes, routing, metrics; bearer token).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use verge_config::reload::ConfigSource;
use verge_config::wire::{Ack, Heartbeat, PurgeSpec, Registration};
use verge_config::{ControlConfig, NodeId};
use verge_serve::reply;
use verge_serve::tls_server::PeerCertificate;
use verge_serve::{BearerAuth, Reading};

use crate::accept;
use crate::registry::Refused;
use crate::reload::ControlReloader;
use crate::service::{Control, PurgeRefused};
use crate::status;
use crate::StartError;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Purges `GET /v1/purges` lists without a `limit`, and the most it lists.
const RECENT_PURGES: usize = 20;
const MAX_RECENT_PURGES: usize = 1000;

/// Most bytes of a node's register/heartbeat/ack body.
const MAX_NODE_BODY: usize = 256 * 1024;
/// How the admin API checks its token, and the words of its refusals.
const ADMIN_AUTH: BearerAuth = BearerAuth {
    realm: "verge-control",
    missing: "missing Authorization: Bearer <token>",
    wrong: "wrong token",
    reading: Reading::Exact,
};

/// How the node listener checks the node token (`controller.node_token`).
const NODE_AUTH: BearerAuth = BearerAuth {
    realm: "verge-control-nodes",
    missing: "missing Authorization: Bearer <node token>",
    wrong: "wrong node token",
    reading: Reading::Exact,
};

/// Whether the request carries the admin token as `Authorization: Bearer`.
pub(crate) fn admin_token_ok(token: &str, headers: &http::HeaderMap) -> bool {
    ADMIN_AUTH.check(token, headers).is_ok()
}

/// A bound control service, ready to run.
pub struct ControlNode {
    node_listener: TcpListener,
    admin_listener: TcpListener,
    /// With `controller.node_tls`: the node listener's TLS.
    node_tls: Option<tokio_rustls::TlsAcceptor>,
    pub node_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// Where geo steering answers DNS (UDP and TCP) and HTTP, when `[geo]` configures them.
    pub dns_addr: Option<SocketAddr>,
    pub steering_addr: Option<SocketAddr>,
    geo: Option<crate::geo::GeoService>,
    control: Arc<Control>,
    reloader: ControlReloader,
    shutdown: watch::Sender<bool>,
}

impl ControlNode {
    /// Opens the purge log and binds both listeners (port 0 picks a free port). The
    /// configuration came from the command line: a reload reads only its token file again.
    pub async fn bind(config: ControlConfig) -> Result<ControlNode, StartError> {
        ControlNode::bind_with_source(config, ConfigSource::CommandLine).await
    }

    /// [`ControlNode::bind`] with the configuration read from `source`, which a reload reads
    /// again.
    pub async fn bind_with_source(
        config: ControlConfig,
        source: ConfigSource,
    ) -> Result<ControlNode, StartError> {
        let mutual_tls = config
            .node_tls
            .as_ref()
            .is_some_and(|t| t.client_ca.is_some());
        if config.node_token.is_none() && !mutual_tls {
            tracing::warn!(
                "controller.node_token is not set: whoever reaches the node listener can register a node and read the event stream"
            );
        }
        let bind = |addr: SocketAddr, what: &'static str| async move {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, what, source })?;
            let local =
                listener
                    .local_addr()
                    .map_err(|source| StartError::Bind { addr, what, source })?;
            Ok::<_, StartError>((listener, local))
        };
        let node_tls = match &config.node_tls {
            None => None,
            Some(tls) => Some(tokio_rustls::TlsAcceptor::from(
                verge_serve::tls_server::server_config(
                    &tls.cert,
                    &tls.key,
                    tls.client_ca.as_deref(),
                )
                .map_err(StartError::Tls)?,
            )),
        };
        let (node_listener, node_addr) = bind(config.listen, "controller.listen").await?;
        let (admin_listener, admin_addr) =
            bind(config.admin_listen, "controller.admin_listen").await?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let control = Control::start(config, shutdown_rx).await?;
        let geo = match &control.config().geo {
            Some(geo) => Some(crate::geo::GeoService::bind(geo, &control).await?),
            None => None,
        };
        let reloader = ControlReloader::new(
            Arc::clone(&control),
            geo.as_ref().map(|g| Arc::clone(g.live())),
            source,
        );
        Ok(ControlNode {
            node_listener,
            admin_listener,
            node_tls,
            node_addr,
            admin_addr,
            dns_addr: geo.as_ref().and_then(|g| g.dns_addr),
            steering_addr: geo.as_ref().and_then(|g| g.steering_addr),
            geo,
            control,
            reloader,
            shutdown,
        })
    }

    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// A handle that reloads this control's configuration (`POST /v1/reload` uses it too);
    /// it keeps working while [`ControlNode::run`] serves.
    pub fn reloader(&self) -> ControlReloader {
        self.reloader.clone()
    }

    /// Serves both APIs until `stop` completes; open streams are closed then. When it returns,
    /// control's state is dropped and its data directory released, unless a handle from
    /// [`ControlNode::reloader`] is still held.
    pub async fn run(self, stop: impl Future<Output = ()>) {
        let ControlNode {
            node_listener,
            admin_listener,
            node_tls,
            reloader,
            shutdown,
            geo,
            control,
            ..
        } = self;
        let rx = shutdown.subscribe();
        let geo = geo.map(|geo| tokio::spawn(geo.run(rx.clone())));
        let nodes = tokio::spawn(serve(
            node_listener,
            reloader.clone(),
            rx.clone(),
            Api::Node,
            node_tls,
        ));
        let admin = tokio::spawn(serve(admin_listener, reloader, rx, Api::Admin, None));
        stop.await;
        let _ = shutdown.send(true);
        let _ = nodes.await;
        let _ = admin.await;
        if let Some(geo) = geo {
            let _ = geo.await;
        }
        // Once this returns, a control started again on the same data directory finds it
        // released (unless a reloader handed out is still held).
        control.stopped().await;
    }
}

#[derive(Clone, Copy)]
enum Api {
    Node,
    Admin,
}

/// Serves `api` on `listener`; the reloader holds the shared state (and reloads it).
async fn serve(
    listener: TcpListener,
    reloader: ControlReloader,
    shutdown: watch::Receiver<bool>,
    api: Api,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let what = match api {
        Api::Node => "node API",
        Api::Admin => "admin API",
    };
    accept::serve_http1(listener, what, shutdown, tls, move |request, _peer| {
        let reloader = reloader.clone();
        async move {
            match api {
                Api::Node => node_api(reloader.control(), request).await,
                Api::Admin => admin_api(&reloader, request).await,
            }
        }
    })
    .await;
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

/// A buffered reply in this server's body type.
fn boxed(response: Response<Bytes>) -> Response<Body> {
    response.map(|bytes| Full::new(bytes).boxed_unsync())
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    boxed(reply::json(status, value))
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    json(status, &ErrorBody { error: message })
}

/// An error after which the connection is closed: the peer sent something we could not parse.
fn garbage(message: &str) -> Response<Body> {
    let mut response = error(StatusCode::BAD_REQUEST, message);
    response
        .headers_mut()
        .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
    response
}

fn refused(r: Refused) -> Response<Body> {
    match r {
        Refused::Full(_) | Refused::Detached => {
            error(StatusCode::SERVICE_UNAVAILABLE, &r.to_string())
        }
        Refused::Unknown(_) => error(StatusCode::NOT_FOUND, &r.to_string()),
    }
}

/// Reads a body up to `max` bytes: `Err` is the response to send.
async fn read_body(request: Request<Incoming>, max: usize) -> Result<Bytes, Response<Body>> {
    match Limited::new(request.into_body(), max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("body larger than {max} bytes"),
            ))
        }
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            &format!("cannot read body: {e}"),
        )),
    }
}

async fn parse<T: serde::de::DeserializeOwned>(
    request: Request<Incoming>,
    max: usize,
    what: &str,
) -> Result<T, Response<Body>> {
    let body = read_body(request, max).await?;
    serde_json::from_slice(&body).map_err(|e| garbage(&format!("invalid {what}: {e}")))
}

async fn node_api(control: &Arc<Control>, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_string();
    if path != "/healthz" {
        if let Some(token) = &control.config().node_token {
            if let Err(refusal) = NODE_AUTH.check(token, request.headers()) {
                let reason = if refusal.status == StatusCode::UNAUTHORIZED {
                    "missing"
                } else {
                    "wrong"
                };
                control
                    .metrics
                    .node_auth_refused
                    .with_label_values(&[reason])
                    .inc();
                return refusal.into_response(error);
            }
        }
    }
    let certificate = request.extensions().get::<PeerCertificate>().cloned();
    let impostor = |id: &NodeId| identity_refusal(control, certificate.as_ref(), id);
    match (request.method().clone(), path.as_str()) {
        (Method::POST, "/v1/register") => {
            match parse::<Registration>(request, MAX_NODE_BODY, "registration").await {
                Ok(registration) => {
                    if let Err(e) = check_registration(&registration) {
                        return garbage(&e);
                    }
                    if let Some(refusal) = impostor(&registration.id) {
                        return refusal;
                    }
                    match control.register(registration) {
                        Ok(registered) => json(StatusCode::OK, &registered),
                        Err(r) => refused(r),
                    }
                }
                Err(response) => response,
            }
        }
        (Method::POST, "/v1/heartbeat") => {
            match parse::<Heartbeat>(request, MAX_NODE_BODY, "heartbeat").await {
                Ok(beat) => match impostor(&beat.id) {
                    Some(refusal) => refusal,
                    None => match control.heartbeat(beat) {
                        Ok(()) => json(StatusCode::OK, &serde_json::json!({})),
                        Err(r) => refused(r),
                    },
                },
                Err(response) => response,
            }
        }
        (Method::POST, "/v1/ack") => match parse::<Ack>(request, MAX_NODE_BODY, "ack").await {
            Ok(ack) => match impostor(&ack.id) {
                Some(refusal) => refusal,
                None => match control.ack(ack) {
                    Ok(()) => json(StatusCode::OK, &serde_json::json!({})),
                    Err(r) => refused(r),
                },
            },
            Err(response) => response,
        },
        (Method::GET, "/v1/events") => {
            let (node, since) = match events_query(request.uri().query().unwrap_or("")) {
                Ok(q) => q,
                Err(e) => return error(StatusCode::BAD_REQUEST, &e),
            };
            if let Some(refusal) = impostor(&node) {
                return refusal;
            }
            if let Some(after) = since {
                control.catch_up(after).await;
            }
            match control.stream(node, since) {
                Ok(stream) => Response::builder()
                    .header(header::CONTENT_TYPE, "application/x-ndjson")
                    .header(header::CACHE_CONTROL, "no-store")
                    .body(stream.boxed_unsync())
                    .unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "stream")),
                Err(r) => refused(r),
            }
        }
        (Method::GET, "/healthz") => json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
        (_, "/v1/register" | "/v1/heartbeat" | "/v1/ack" | "/v1/events") => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed on this path",
        ),
        _ => error(StatusCode::NOT_FOUND, &format!("no such endpoint: {path}")),
    }
}

/// With mutual TLS and `controller.node_tls.bind_node_id`: a node speaks only for the id its
/// client certificate names: the refusal (403, counted) for a request speaking for another id.
fn identity_refusal(
    control: &Control,
    certificate: Option<&PeerCertificate>,
    id: &NodeId,
) -> Option<Response<Body>> {
    let binding = control
        .config()
        .node_tls
        .as_ref()
        .is_some_and(|tls| tls.client_ca.is_some() && tls.bind_node_id);
    if !binding || certificate.is_some_and(|c| c.names(id.as_str())) {
        return None;
    }
    control
        .metrics
        .node_auth_refused
        .with_label_values(&["certificate"])
        .inc();
    Some(error(
        StatusCode::FORBIDDEN,
        &format!(
            "the client certificate does not name node {id}: a node speaks only for the id \
             its certificate names (controller.node_tls.bind_node_id)"
        ),
    ))
}

fn check_registration(r: &Registration) -> Result<(), String> {
    for (what, url) in [("data_url", &r.data_url), ("admin_url", &r.admin_url)] {
        match url.parse::<http::Uri>() {
            Ok(uri) if uri.scheme_str().is_some() && uri.authority().is_some() => {}
            _ => return Err(format!("{what}: {url:?} is not an absolute URL")),
        }
    }
    if !(1..=10).contains(&r.weight) {
        return Err(format!("weight: {} is out of range 1..=10", r.weight));
    }
    Ok(())
}

/// `node=ID&since=SEQ` (since optional).
fn events_query(query: &str) -> Result<(NodeId, Option<u64>), String> {
    let mut node = None;
    let mut since = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "node" => node = Some(NodeId::new(value).map_err(|e| format!("node: {e}"))?),
            "since" => {
                since = Some(
                    value
                        .parse::<u64>()
                        .map_err(|_| format!("since: {value:?} is not a sequence number"))?,
                )
            }
            other => return Err(format!("unknown query parameter {other:?}")),
        }
    }
    Ok((node.ok_or("missing node=ID")?, since))
}

async fn admin_api(reloader: &ControlReloader, request: Request<Incoming>) -> Response<Body> {
    let control = reloader.control();
    let path = request.uri().path().to_string();
    let method = request.method().clone();
    match (method.clone(), path.as_str()) {
        (Method::GET, "/healthz") => {
            return json(StatusCode::OK, &serde_json::json!({"status": "ok"}))
        }
        (Method::GET, "/metrics") => return metrics(control),
        _ => {}
    }
    // One configuration for the whole request, however a reload meanwhile changes it.
    let config = control.config();
    if path == "/" {
        return boxed(status::page(control, &config.token, &request));
    }
    if !path.starts_with("/v1/") {
        return error(StatusCode::NOT_FOUND, &format!("no such endpoint: {path}"));
    }
    // The status page's session reads; everything else takes the token itself.
    let session = method == Method::GET
        && control
            .sessions
            .admits(request.headers(), &config.token, std::time::Instant::now());
    if !session {
        if let Err(refusal) = ADMIN_AUTH.check(&config.token, request.headers()) {
            return refusal.into_response(error);
        }
    }
    match (method, path.as_str()) {
        (Method::POST, "/v1/reload") => match reloader.reload_async().await {
            Ok(report) => json(StatusCode::OK, &report),
            Err(refused) => json(StatusCode::UNPROCESSABLE_ENTITY, &refused.to_body()),
        },
        (Method::GET, "/v1/config/version") => json(
            StatusCode::OK,
            &serde_json::json!({ "version": reloader.version() }),
        ),
        (Method::POST, "/v1/purge") => {
            if let Err(retry) = control.admit_purge() {
                control
                    .metrics
                    .purges
                    .with_label_values(&["rate_limited"])
                    .inc();
                let mut response = error(
                    StatusCode::TOO_MANY_REQUESTS,
                    &format!(
                        "purge rate limit ({} per second) exceeded",
                        config.purge.rate_per_second
                    ),
                );
                let secs = retry.as_secs().max(1).to_string();
                if let Ok(value) = http::HeaderValue::from_str(&secs) {
                    response.headers_mut().insert(header::RETRY_AFTER, value);
                }
                return response;
            }
            let spec = match read_body(request, config.purge.max_body_bytes).await {
                Ok(body) => serde_json::from_slice::<PurgeSpec>(&body),
                Err(response) => {
                    control.metrics.purges.with_label_values(&["invalid"]).inc();
                    return response;
                }
            };
            let spec = match spec {
                Ok(spec) => spec,
                Err(e) => {
                    control.metrics.purges.with_label_values(&["invalid"]).inc();
                    return error(StatusCode::BAD_REQUEST, &format!("invalid purge body: {e}"));
                }
            };
            match control.purge(spec).await {
                Ok(accepted) => {
                    control
                        .metrics
                        .purges
                        .with_label_values(&["accepted"])
                        .inc();
                    json(StatusCode::ACCEPTED, &accepted)
                }
                Err(PurgeRefused::Invalid(e)) => {
                    control.metrics.purges.with_label_values(&["invalid"]).inc();
                    error(StatusCode::BAD_REQUEST, &e)
                }
                Err(PurgeRefused::Store(e)) => {
                    control
                        .metrics
                        .purges
                        .with_label_values(&["log_error"])
                        .inc();
                    tracing::error!(error = %e, "purge not logged");
                    let status = if e.is_unavailable() {
                        StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        StatusCode::INTERNAL_SERVER_ERROR
                    };
                    error(status, &format!("purge not accepted: {e}"))
                }
            }
        }
        (Method::GET, p) if p.starts_with("/v1/purge/") => {
            let id = &p["/v1/purge/".len()..];
            match id.parse::<u64>() {
                Ok(seq) => match control.purge_status(seq) {
                    Some(status) => json(StatusCode::OK, &status),
                    None => error(
                        StatusCode::NOT_FOUND,
                        &format!("purge {seq} is unknown or no longer tracked"),
                    ),
                },
                Err(_) => error(
                    StatusCode::BAD_REQUEST,
                    &format!("{id:?} is not a purge id"),
                ),
            }
        }
        (Method::GET, "/v1/nodes") => json(StatusCode::OK, &control.nodes()),
        (Method::GET, "/v1/replica") => match control.replica() {
            Some(view) => json(StatusCode::OK, &view),
            None => error(
                StatusCode::NOT_FOUND,
                "this control keeps its own log (no [store] etcd): it has no replicas",
            ),
        },
        (Method::GET, "/v1/purges") => {
            let limit = request
                .uri()
                .query()
                .and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "limit"))
                .map(|(_, v)| v.parse::<usize>());
            match limit {
                None => json(StatusCode::OK, &control.recent_purges(RECENT_PURGES)),
                Some(Ok(n)) if (1..=MAX_RECENT_PURGES).contains(&n) => {
                    json(StatusCode::OK, &control.recent_purges(n))
                }
                Some(_) => error(
                    StatusCode::BAD_REQUEST,
                    &format!("limit must be a number from 1 to {MAX_RECENT_PURGES}"),
                ),
            }
        }
        (Method::GET, "/v1/routing") => json(
            StatusCode::OK,
            &RoutingView {
                table: control.routing(),
                latency: control.planned_latency(),
                awaiting_shields: control.awaited_shields(),
            },
        ),
        (
            _,
            "/v1/purge" | "/v1/purges" | "/v1/nodes" | "/v1/routing" | "/v1/reload"
            | "/v1/config/version" | "/v1/replica",
        ) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed on this path",
        ),
        _ => error(StatusCode::NOT_FOUND, &format!("no such endpoint: {path}")),
    }
}

fn metrics(control: &Control) -> Response<Body> {
    use prometheus::Encoder;
    let mut out = Vec::new();
    let encoder = prometheus::TextEncoder::new();
    if encoder
        .encode(&control.metrics.registry.gather(), &mut out)
        .is_err()
    {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics");
    }
    boxed(reply::text(StatusCode::OK, encoder.format_type(), out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_events_query_is_parsed_and_checked() {
        let (node, since) = events_query("node=e1&since=42").unwrap();
        assert_eq!((node.as_str(), since), ("e1", Some(42)));
        assert_eq!(events_query("node=e1").unwrap().1, None);
        assert!(events_query("since=1")
            .unwrap_err()
            .contains("missing node"));
        assert!(events_query("node=e1&since=x")
            .unwrap_err()
            .contains("since"));
        assert!(events_query("node=a%20b").unwrap_err().starts_with("node:"));
        assert!(events_query("node=e1&who=1").unwrap_err().contains("who"));
    }
}

#[cfg(test)]
mod properties;

/// `GET /v1/routing`: the table in force and the latency matrix its tier plan was made from.
#[derive(serde::Serialize)]
struct RoutingView {
    #[serde(flatten)]
    table: verge_config::wire::RoutingTable,
    latency: verge_config::tiers::LatencyMatrix,
    /// Shields nodes route through that the next table waits for (after control's start).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    awaiting_shields: Vec<verge_config::NodeId>,
}
