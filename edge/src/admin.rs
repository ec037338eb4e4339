//! The admin listener: Prometheus metrics and health, apart from client traffic.

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use prometheus::{Encoder, Registry, TextEncoder};
use verge_cache::{CacheStore, Flights};

use crate::body::ResponseBody;
use crate::error::EdgeError;
use crate::metrics::NodeMetrics;
use crate::server::Handler;

pub struct AdminService {
    pub registry: Registry,
    pub metrics: NodeMetrics,
    pub store: CacheStore,
    pub flights: Arc<Flights<EdgeError>>,
}

impl AdminService {
    async fn metrics_text(&self) -> Response<ResponseBody> {
        self.store.sync().await;
        self.metrics
            .cache_objects
            .set(i64::try_from(self.store.object_count()).unwrap_or(i64::MAX));
        self.metrics
            .cache_bytes
            .set(i64::try_from(self.store.weighted_bytes()).unwrap_or(i64::MAX));
        self.metrics
            .hit_for_miss_keys
            .set(i64::try_from(self.flights.hit_for_miss_keys()).unwrap_or(i64::MAX));
        let encoder = TextEncoder::new();
        let mut buffer = Vec::with_capacity(16 * 1024);
        match encoder.encode(&self.registry.gather(), &mut buffer) {
            Ok(()) => text(StatusCode::OK, buffer, encoder.format_type()),
            Err(error) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode metrics: {error}\n").into_bytes(),
                "text/plain; charset=utf-8",
            ),
        }
    }
}

impl Handler for AdminService {
    async fn handle(
        &self,
        request: Request<Incoming>,
        _client: SocketAddr,
    ) -> Response<ResponseBody> {
        let plain = "text/plain; charset=utf-8";
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                b"only GET is served here\n".to_vec(),
                plain,
            );
        }
        match request.uri().path() {
            "/metrics" => self.metrics_text().await,
            "/healthz" => text(StatusCode::OK, b"ok\n".to_vec(), plain),
            other => text(
                StatusCode::NOT_FOUND,
                format!("no such admin endpoint: {other} (try /metrics or /healthz)\n")
                    .into_bytes(),
                plain,
            ),
        }
    }
}

fn text(status: StatusCode, body: Vec<u8>, content_type: &str) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(body));
    *response.status_mut() = status;
    if let Ok(value) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    response
}
