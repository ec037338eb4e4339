//! HTTP steering, for clients that do not come through DNS:
//!
//! - `GET /v1/route?ip=ADDR[&host=NAME]`: the decision for a client at `ADDR` as JSON (region,
//!   how it was found, every step, the edges), for debugging;
//! - any other request: `302 Found` (`307` for methods other than GET and HEAD) to the chosen
//!   edge's `data_url` with the same path and query. The `Host` header picks the name; the
//!   connection's peer address places the client.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::policy::Family;
use super::steering::Steering;
use super::LiveGeo;

type Body = Full<Bytes>;

/// Serves steering on `listener` until `shutdown`, each request from the geo state in force
/// when it arrives.
pub async fn serve(listener: TcpListener, live: Arc<LiveGeo>, shutdown: watch::Receiver<bool>) {
    crate::accept::serve_http1(
        listener,
        "steering",
        shutdown,
        None,
        move |request, peer| {
            let response = handle(&live.load().steering, peer, &request);
            async move { response }
        },
    )
    .await;
}

/// Answers one steering request; never fails.
pub fn handle<B>(steering: &Steering, peer: SocketAddr, request: &Request<B>) -> Response<Body> {
    let (result, response) = if request.uri().path() == "/v1/route" {
        route(steering, request)
    } else {
        redirect(steering, peer.ip(), request)
    };
    steering
        .metrics()
        .http_requests
        .with_label_values(&[result])
        .inc();
    response
}

fn route<B>(steering: &Steering, request: &Request<B>) -> (&'static str, Response<Body>) {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return (
            "bad_request",
            error(StatusCode::METHOD_NOT_ALLOWED, "use GET on /v1/route"),
        );
    }
    let mut ip = None;
    let mut host = None;
    for pair in request.uri().query().unwrap_or("").split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "ip" => ip = Some(value),
            "host" => host = Some(value),
            "" => {}
            other => {
                return (
                    "bad_request",
                    error(
                        StatusCode::BAD_REQUEST,
                        &format!("unknown query parameter {other:?} (use ip and host)"),
                    ),
                )
            }
        }
    }
    let Some(ip) = ip else {
        return (
            "bad_request",
            error(StatusCode::BAD_REQUEST, "missing ip=ADDR"),
        );
    };
    // `[::1]` as well as `::1`, and `%3A` for `:`.
    let text = ip.replace("%3A", ":").replace("%3a", ":");
    let text = text.trim_start_matches('[').trim_end_matches(']');
    let Ok(addr) = text.parse::<IpAddr>() else {
        return (
            "bad_request",
            error(
                StatusCode::BAD_REQUEST,
                &format!("ip: {ip:?} is not an IP address"),
            ),
        );
    };
    // Without host=, the Host header if it is a steered name, else the first name.
    let name = match host {
        Some(host) => steering.name(host),
        None => host_header(request)
            .and_then(|h| steering.name(h))
            .or(Some(0)),
    };
    let Some(name) = name.filter(|n| *n < steering.names().len()) else {
        return ("unknown_host", unknown_host(steering, host));
    };
    let located = steering.locate(addr, false);
    let plan = steering.plan();
    let decision = steering.decide(&plan, name, &located, Family::Any);
    let explanation = steering.explain(&plan, name, &located, &decision);
    let body = serde_json::to_vec_pretty(&explanation).unwrap_or_else(|_| b"{}".to_vec());
    ("route", respond(StatusCode::OK, "application/json", body))
}

fn redirect<B>(
    steering: &Steering,
    client: IpAddr,
    request: &Request<B>,
) -> (&'static str, Response<Body>) {
    let host = host_header(request);
    let Some(name) = host.and_then(|h| steering.name(h)) else {
        return ("unknown_host", unknown_host(steering, host));
    };
    let located = steering.locate(client, false);
    let plan = steering.plan();
    let decision = steering.decide(&plan, name, &located, Family::Any);
    let Some(edge) = decision.edges().first().and_then(|&e| plan.edge(e)) else {
        return (
            "no_edge",
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "no edge is registered to steer to",
            ),
        );
    };
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = format!("{}{path}", edge.data_url);
    let Ok(location) = HeaderValue::from_str(&location) else {
        return (
            "bad_request",
            error(StatusCode::BAD_REQUEST, "the path cannot be redirected"),
        );
    };
    let status = if request.method() == Method::GET || request.method() == Method::HEAD {
        StatusCode::FOUND
    } else {
        StatusCode::TEMPORARY_REDIRECT
    };
    let mut response = respond(status, "text/plain; charset=utf-8", Vec::new());
    response.headers_mut().insert(header::LOCATION, location);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    ("redirect", response)
}

/// The request's host name: the `Host` header (or the URI's authority) without its port.
fn host_header<B>(request: &Request<B>) -> Option<&str> {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().host())?;
    if host.starts_with('[') {
        return host.split_inclusive(']').next();
    }
    Some(host.rsplit_once(':').map_or(host, |(name, _)| name))
}

fn unknown_host(steering: &Steering, host: Option<&str>) -> Response<Body> {
    let known: Vec<&str> = steering.names().iter().map(|(n, _)| n.as_str()).collect();
    let message = match host {
        Some(host) => format!(
            "{host:?} is not a steered host name (steered: {})",
            known.join(", ")
        ),
        None => format!(
            "no Host header: say which name to steer (steered: {})",
            known.join(", ")
        ),
    };
    error(StatusCode::NOT_FOUND, &message)
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::to_vec(&serde_json::json!({ "error": message }))
        .unwrap_or_else(|_| b"{}".to_vec());
    respond(status, "application/json", body)
}

fn respond(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
