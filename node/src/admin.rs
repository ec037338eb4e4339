//! The admin listener: Prometheus metrics, health, and the purge API, apart from client traffic.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use std::time::SystemTime;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use prometheus::{Encoder, Registry, TextEncoder};
use verge_cache::store::PurgeTarget;
use verge_cache::{CacheKey, CacheStore, Clock, Flights};
use verge_config::wire::{absolute_url, PurgeSpec};
use verge_serve::reply::{json_line, plain, text};
use verge_serve::{BearerAuth, Reading, Refusal};

use crate::body::ResponseBody;
use crate::error::RequestError;
use crate::metrics::NodeMetrics;
use crate::reload::Reload;
use crate::server::{AmbiguousLength, Handler, AMBIGUOUS_LENGTH};
use crate::settings::AdminAccess;

/// How purges and reloads check the admin token, and the words of their refusals.
const ADMIN_AUTH: BearerAuth = BearerAuth {
    realm: "verge-admin",
    missing: "missing credentials: send Authorization: Bearer <admin.token>",
    wrong: "wrong admin token",
    reading: Reading::Lenient,
};

pub struct AdminService {
    pub registry: Registry,
    pub metrics: NodeMetrics,
    pub store: CacheStore,
    pub flights: Arc<Flights<RequestError>>,
    pub clock: Arc<dyn Clock>,
    /// Token and body bound; a reload swaps them.
    pub access: ArcSwap<AdminAccess>,
    /// What `POST /v1/reload` runs; unset until the role enables reloading.
    pub reload: OnceLock<Arc<dyn Reload>>,
}

impl AdminService {
    async fn reload(&self, request: Request<Incoming>) -> Response<Bytes> {
        if let Err(refusal) = self.authorize(request.headers()) {
            return refusal.into_response(plain);
        }
        let Some(reload) = self.reload.get() else {
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "reload is not available on this node yet",
            );
        };
        let reload = Arc::clone(reload);
        // Reading files and binding listeners block briefly: off the async workers.
        let outcome = tokio::task::spawn_blocking(move || reload.reload()).await;
        match outcome {
            Ok(Ok(report)) => json_line(StatusCode::OK, &report),
            Ok(Err(error)) => json_line(StatusCode::UNPROCESSABLE_ENTITY, &error.to_body()),
            Err(error) => plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("reload did not finish: {error}"),
            ),
        }
    }

    fn metrics_text(&self) -> Response<Bytes> {
        self.store.sync();
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.metrics
            .cache_objects
            .set(gauge(self.store.url_count()));
        self.metrics
            .cache_bytes
            .set(gauge(self.store.weighted_bytes()));
        self.metrics
            .hit_for_miss_keys
            .set(gauge(self.flights.hit_for_miss_keys()));
        let (keys, tags) = self.store.index_sizes();
        self.metrics.purge_index_keys.set(gauge(keys as u64));
        self.metrics.purge_index_tags.set(gauge(tags as u64));
        let encoder = TextEncoder::new();
        let mut buffer = Vec::with_capacity(16 * 1024);
        match encoder.encode(&self.registry.gather(), &mut buffer) {
            Ok(()) => text(StatusCode::OK, encoder.format_type(), buffer),
            Err(error) => plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot encode metrics: {error}"),
            ),
        }
    }

    async fn purge(&self, request: Request<Incoming>) -> Response<Bytes> {
        let response = match self.try_purge(request).await {
            Ok(purged) => json_line(StatusCode::OK, &serde_json::json!({ "purged": purged })),
            Err(refusal) => refusal.into_response(plain),
        };
        self.metrics.purge_request(response.status());
        response
    }

    async fn try_purge(&self, request: Request<Incoming>) -> Result<usize, Refusal> {
        self.authorize(request.headers())?;
        let max_body_bytes = self.access.load().max_body_bytes;
        let body = Limited::new(request.into_body(), max_body_bytes)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    Refusal::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!(
                            "purge body is larger than admin.max_body_bytes ({} bytes)",
                            max_body_bytes
                        ),
                    )
                } else {
                    Refusal::new(
                        StatusCode::BAD_REQUEST,
                        format!("cannot read purge body: {e}"),
                    )
                }
            })?
            .to_bytes();
        let refuse = |message| Refusal::new(StatusCode::BAD_REQUEST, message);
        let spec = parse_purge(&body).map_err(refuse)?;
        let purged =
            apply_purge(&self.store, &self.metrics, &spec, self.clock.now()).map_err(refuse)?;
        tracing::info!(purged, soft = spec.soft, "purge applied");
        Ok(purged)
    }

    /// Bearer-token check: 401 without credentials, 403 with wrong ones (or when purges and
    /// reloads are disabled).
    fn authorize(&self, headers: &http::HeaderMap) -> Result<(), Refusal> {
        let access = self.access.load();
        let Some(token) = &access.token else {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "purge and reload are disabled: no admin.token is configured",
            ));
        };
        ADMIN_AUTH.check(token, headers)
    }
}

impl Handler for AdminService {
    async fn handle(
        &self,
        request: Request<Incoming>,
        _client: SocketAddr,
    ) -> Response<ResponseBody> {
        self.route(request).await.map(ResponseBody::full)
    }
}

impl AdminService {
    async fn route(&self, request: Request<Incoming>) -> Response<Bytes> {
        if request.extensions().get::<AmbiguousLength>().is_some() {
            return plain(StatusCode::BAD_REQUEST, AMBIGUOUS_LENGTH);
        }
        let path = request.uri().path();
        let method = request.method().clone();
        match (path, method) {
            ("/metrics", Method::GET | Method::HEAD) => self.metrics_text(),
            ("/healthz", Method::GET | Method::HEAD) => plain(StatusCode::OK, "ok"),
            ("/v1/purge", Method::POST) => self.purge(request).await,
            ("/v1/reload", Method::POST) => self.reload(request).await,
            ("/metrics" | "/healthz", _) => method_not_allowed("GET, HEAD"),
            ("/v1/purge" | "/v1/reload", _) => method_not_allowed("POST"),
            (other, _) => plain(
                StatusCode::NOT_FOUND,
                &format!(
                    "no such admin endpoint: {other} (try /metrics, /healthz, POST /v1/purge or POST /v1/reload)"
                ),
            ),
        }
    }
}

/// Parses a `POST /v1/purge` body, naming the first problem found.
fn parse_purge(body: &Bytes) -> Result<PurgeSpec, String> {
    let spec: PurgeSpec =
        serde_json::from_slice(body).map_err(|e| format!("invalid purge body: {e}"))?;
    spec.validate()?;
    Ok(spec)
}

/// Applies a purge to `store` as of `now` and counts it; returns how many URLs were purged.
/// The admin API and the control plane's purge events both come through here, so a purge
/// removes the same objects whichever way it arrives.
pub fn apply_purge(
    store: &CacheStore,
    metrics: &NodeMetrics,
    spec: &PurgeSpec,
    now: SystemTime,
) -> Result<usize, String> {
    let targets = purge_targets(spec)?;
    let purged = targets
        .iter()
        .map(|target| store.purge(target, spec.soft, now))
        .sum();
    metrics.purged_urls.inc_by(purged as u64);
    Ok(purged)
}

/// The cache targets a purge names, after [`PurgeSpec::validate`]: URLs and prefixes are
/// normalised like requests' cache keys.
pub fn purge_targets(spec: &PurgeSpec) -> Result<Vec<PurgeTarget>, String> {
    spec.validate()?;
    let mut targets = Vec::with_capacity(spec.urls.len() + spec.prefixes.len() + 2);
    if spec.all {
        targets.push(PurgeTarget::All);
    }
    for url in &spec.urls {
        targets.push(PurgeTarget::Url(
            url_key(url).map_err(|e| format!("urls: {e}"))?,
        ));
    }
    for prefix in &spec.prefixes {
        let key = url_key(prefix).map_err(|e| format!("prefixes: {e}"))?;
        targets.push(PurgeTarget::Prefix(key.as_str().to_string()));
    }
    if !spec.tags.is_empty() {
        targets.push(PurgeTarget::Tags(spec.tags.clone()));
    }
    Ok(targets)
}

/// The cache key of an absolute URL, normalised like a request's.
fn url_key(url: &str) -> Result<CacheKey, String> {
    let uri = absolute_url(url)?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(format!("{url:?} is not an absolute URL (http://host/path)"));
    };
    let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
    Ok(CacheKey::from_parts(scheme, authority.as_str(), path))
}

fn method_not_allowed(allow: &'static str) -> Response<Bytes> {
    let mut response = plain(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("method not allowed here; use {allow}"),
    );
    response
        .headers_mut()
        .insert(http::header::ALLOW, HeaderValue::from_static(allow));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_bodies_are_validated() {
        let parse = |s: &str| {
            let spec = parse_purge(&Bytes::from(s.to_string()))?;
            Ok::<_, String>((purge_targets(&spec)?, spec.soft))
        };
        let (targets, soft) =
            parse(r#"{"urls":["http://Example.com:80/a?b"],"soft":true}"#).unwrap();
        assert!(soft);
        assert_eq!(
            targets,
            vec![PurgeTarget::Url(CacheKey::from_parts(
                "http",
                "example.com",
                "/a?b"
            ))]
        );
        let (targets, _) =
            parse(r#"{"prefixes":["http://EXAMPLE.com/img/"],"tags":["t1","t2"],"all":true}"#)
                .unwrap();
        assert_eq!(targets.len(), 3);
        assert!(targets.contains(&PurgeTarget::Prefix("http://example.com/img/".into())));
        assert!(parse("{}").unwrap_err().contains("empty purge"));
        assert!(parse("not json")
            .unwrap_err()
            .contains("invalid purge body"));
        assert!(parse(r#"{"urls":["/relative"]}"#)
            .unwrap_err()
            .contains("absolute"));
        assert!(parse(r#"{"urls":["ftp://h/x"]}"#)
            .unwrap_err()
            .contains("only http"));
        assert!(parse(r#"{"tags":["a b"]}"#)
            .unwrap_err()
            .contains("not a surrogate key"));
        assert!(parse(r#"{"url":["http://h/"]}"#)
            .unwrap_err()
            .contains("unknown field"));
    }
}
