//! The edge request pipeline: validate → cache key → lookup → (single-flight) fill → store →
//! respond. [`EdgePipeline::handle`] never fails; errors become responses in one place.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use http::header::{
    HeaderValue, AGE, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST, IF_MATCH, IF_MODIFIED_SINCE,
    IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, RANGE, VIA,
};
use http::{request, response, HeaderMap, Method, Request, Response, Version};
use http_body_util::{BodyExt, Either, Empty};
use hyper::body::Incoming;
use verge_cache::policy::{self, AgeInputs, RequestDirectives, Reuse};
use verge_cache::{
    CacheControl, CacheKey, CacheStore, CachedObject, Clock, FillOutcome, FlightLeader, Flights,
    Join, NotStorable, VaryKey,
};

use crate::body::ResponseBody;
use crate::error::{EdgeError, Fault};
use crate::headers::{strip_hop_by_hop, CacheStatus, CACHE_STATUS};
use crate::metrics::{NodeMetrics, RequestOutcome, UpstreamResult};
use crate::server::Handler;
use crate::upstream::{Upstream, UpstreamBody};

/// A follower whose leader gave up joins again at most this many times before fetching alone.
const MAX_FLIGHT_JOINS: usize = 3;

/// What a request carries through the pipeline.
struct RequestContext {
    key: CacheKey,
    /// HEAD: answered from a GET fill, without a body.
    head_only: bool,
    parts: request::Parts,
    client: SocketAddr,
}

/// A response body read for storing: whole, or found too large part way through.
enum BodyRead {
    Complete(Bytes),
    TooLarge { prefix: Bytes, rest: Incoming },
}

/// Everything one cache node needs to answer requests; shared by all connections.
pub struct EdgePipeline<U> {
    store: CacheStore,
    flights: Arc<Flights<EdgeError>>,
    upstream: U,
    metrics: NodeMetrics,
    clock: Arc<dyn Clock>,
    /// This cache's name in `Cache-Status`.
    cache_name: &'static str,
    /// This node's entry in `Via`.
    via: HeaderValue,
}

impl<U: Upstream> EdgePipeline<U> {
    pub fn new(
        store: CacheStore,
        flights: Arc<Flights<EdgeError>>,
        upstream: U,
        metrics: NodeMetrics,
        clock: Arc<dyn Clock>,
        node_id: &str,
    ) -> EdgePipeline<U> {
        let via = HeaderValue::from_str(&format!("1.1 {node_id}"))
            .unwrap_or_else(|_| HeaderValue::from_static("1.1 verge"));
        EdgePipeline {
            store,
            flights,
            upstream,
            metrics,
            clock,
            cache_name: "verge-edge",
            via,
        }
    }

    /// Answers one client request. Never fails: errors are turned into responses here.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        client: SocketAddr,
    ) -> Response<ResponseBody> {
        let started = Instant::now();
        let version = request.version();
        let (response, outcome) = match self.try_handle(request, client).await {
            Ok(answer) => answer,
            Err(error) => (self.error_response(&error, version), RequestOutcome::Error),
        };
        self.metrics
            .observe_request(outcome, response.status(), started.elapsed());
        response
    }

    async fn try_handle(
        &self,
        request: Request<Incoming>,
        client: SocketAddr,
    ) -> Result<(Response<ResponseBody>, RequestOutcome), EdgeError> {
        let method = request.method();
        if method == Method::CONNECT || method.as_str() == "PURGE" {
            return Err(EdgeError::MethodNotAllowed {
                method: method.to_string(),
            });
        }
        let key = CacheKey::for_request("http", request.uri(), request.headers())
            .map_err(|e| EdgeError::BadRequest(e.message()))?;
        if method != Method::GET && method != Method::HEAD {
            let response = self.pass(request, client).await?;
            return Ok((response, RequestOutcome::Pass));
        }
        let (parts, _body) = request.into_parts();
        let ctx = RequestContext {
            key,
            head_only: parts.method == Method::HEAD,
            parts,
            client,
        };
        self.serve_cacheable(&ctx).await
    }

    /// GET and HEAD: from cache when fresh, else through one fill per key.
    async fn serve_cacheable(
        &self,
        ctx: &RequestContext,
    ) -> Result<(Response<ResponseBody>, RequestOutcome), EdgeError> {
        for _ in 0..MAX_FLIGHT_JOINS {
            let now = self.clock.now();
            if let Some(object) = self.lookup(ctx, now).await {
                let response = self.respond_from_cache(ctx, &object, CacheStatus::hit(), now);
                return Ok((response, RequestOutcome::Hit));
            }
            match self.flights.join(&ctx.key) {
                Join::Leader(leader) => {
                    // A fill that ended between the lookup and the join has stored its object.
                    if let Some(object) = self.lookup(ctx, now).await {
                        leader.finish(FillOutcome::Stored(Arc::clone(&object)));
                        let response =
                            self.respond_from_cache(ctx, &object, CacheStatus::hit(), now);
                        return Ok((response, RequestOutcome::Hit));
                    }
                    return self.fill(ctx, Some(leader)).await;
                }
                Join::Follower(follower) => {
                    self.metrics.coalesced.inc();
                    match follower.wait().await {
                        FillOutcome::Stored(object) if object.vary.matches(&ctx.parts.headers) => {
                            let status = CacheStatus {
                                collapsed: true,
                                ..CacheStatus::forwarded("miss")
                            };
                            let response =
                                self.respond_from_cache(ctx, &object, status, self.clock.now());
                            return Ok((response, RequestOutcome::Coalesced));
                        }
                        FillOutcome::Stored(_) | FillOutcome::NotStorable => break,
                        FillOutcome::Failed(error) => return Err(error),
                        FillOutcome::Abandoned => continue,
                    }
                }
                Join::Uncoalesced => break,
            }
        }
        self.fill(ctx, None).await
    }

    async fn lookup(&self, ctx: &RequestContext, now: SystemTime) -> Option<Arc<CachedObject>> {
        let object = self.store.get(&ctx.key).await?;
        let directives = RequestDirectives::from_headers(&ctx.parts.headers);
        (object.vary.matches(&ctx.parts.headers) && object.reuse(&directives, now) == Reuse::Fresh)
            .then_some(object)
    }

    /// Fetches the object, stores it when allowed, and tells the followers (if leading).
    async fn fill(
        &self,
        ctx: &RequestContext,
        leader: Option<FlightLeader<EdgeError>>,
    ) -> Result<(Response<ResponseBody>, RequestOutcome), EdgeError> {
        self.metrics.fills_in_flight.inc();
        let result = self.fill_inner(ctx, leader).await;
        self.metrics.fills_in_flight.dec();
        result
    }

    async fn fill_inner(
        &self,
        ctx: &RequestContext,
        leader: Option<FlightLeader<EdgeError>>,
    ) -> Result<(Response<ResponseBody>, RequestOutcome), EdgeError> {
        let leading = leader.is_some();
        let publish = |outcome: FillOutcome<EdgeError>| {
            if let Some(leader) = leader {
                leader.finish(outcome);
            }
        };
        let request_time = self.clock.now();
        let response = match self.send_upstream(self.fill_request(ctx)).await {
            Ok(response) => response,
            Err(error) => {
                publish(FillOutcome::Failed(error.clone()));
                return Err(error);
            }
        };
        let response_time = self.clock.now();
        let (mut head, body) = response.into_parts();
        self.prepare_response(&mut head);
        let fwd_status = Some(head.status.as_u16());
        let cc = CacheControl::for_response(&head.headers);
        let directives = RequestDirectives::from_headers(&ctx.parts.headers);
        let max_object = self.store.max_object_bytes();
        let lifetime = policy::storability(
            &Method::GET,
            &ctx.parts.headers,
            &directives,
            head.status,
            &head.headers,
            &cc,
            response_time,
        )
        .and_then(|lifetime| match content_length(&head.headers) {
            Some(n) if n > max_object as u64 => Err(NotStorable::TooLarge),
            _ => Ok(lifetime),
        });
        let lifetime = match lifetime {
            Ok(lifetime) => lifetime,
            Err(reason) => {
                self.metrics.not_stored(reason.as_str());
                publish(FillOutcome::NotStorable);
                let status = CacheStatus {
                    fwd_status,
                    detail: Some(reason.as_str()),
                    ..CacheStatus::forwarded("miss")
                };
                let body = ResponseBody::stream(Bytes::new(), body);
                return Ok((
                    self.streamed(ctx, head, body, &status),
                    RequestOutcome::Miss,
                ));
            }
        };
        let bytes = match self.read_bounded(body, content_length(&head.headers)).await {
            Ok(BodyRead::Complete(bytes)) => bytes,
            Ok(BodyRead::TooLarge { prefix, rest }) => {
                self.metrics.not_stored(NotStorable::TooLarge.as_str());
                publish(FillOutcome::NotStorable);
                let status = CacheStatus {
                    fwd_status,
                    detail: Some(NotStorable::TooLarge.as_str()),
                    ..CacheStatus::forwarded("miss")
                };
                let body = ResponseBody::stream(prefix, rest);
                return Ok((
                    self.streamed(ctx, head, body, &status),
                    RequestOutcome::Miss,
                ));
            }
            Err(error) => {
                publish(FillOutcome::Failed(error.clone()));
                return Err(error);
            }
        };
        let corrected_initial_age =
            AgeInputs::from_headers(&head.headers, request_time, response_time)
                .corrected_initial_age();
        head.headers.remove(AGE);
        head.headers
            .insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        let object = Arc::new(CachedObject {
            status: head.status,
            vary: VaryKey::new(&head.headers, &ctx.parts.headers),
            headers: compact_with_placeholders(&head.headers),
            body: bytes,
            response_time,
            corrected_initial_age,
            freshness_lifetime: lifetime,
            cc,
            surrogate_keys: Vec::new(),
        });
        let stored = self
            .store
            .insert(ctx.key.clone(), Arc::clone(&object))
            .await;
        if !leading && stored {
            self.flights.forget(&ctx.key);
        }
        publish(FillOutcome::Stored(Arc::clone(&object)));
        let status = CacheStatus {
            fwd_status,
            stored,
            ..CacheStatus::forwarded("miss")
        };
        let response = self.respond_from_cache(ctx, &object, status, self.clock.now());
        Ok((response, RequestOutcome::Miss))
    }

    /// Methods the cache does not handle: forwarded with their bodies, answered as streamed.
    async fn pass(
        &self,
        request: Request<Incoming>,
        client: SocketAddr,
    ) -> Result<Response<ResponseBody>, EdgeError> {
        let (mut parts, body) = request.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        self.add_forwarding_headers(&mut parts.headers, &parts.uri, client);
        parts.version = Version::HTTP_11;
        let response = self
            .send_upstream(Request::from_parts(parts, Either::Right(body)))
            .await?;
        let (mut head, body) = response.into_parts();
        self.prepare_response(&mut head);
        let status = CacheStatus {
            fwd_status: Some(head.status.as_u16()),
            ..CacheStatus::forwarded("request")
        };
        let mut response = Response::from_parts(head, ResponseBody::stream(Bytes::new(), body));
        response
            .headers_mut()
            .insert(CACHE_STATUS.clone(), status.render(self.cache_name));
        Ok(response)
    }

    /// The request a fill sends: a plain GET for the whole representation.
    fn fill_request(&self, ctx: &RequestContext) -> Request<UpstreamBody> {
        let mut headers = ctx.parts.headers.clone();
        strip_hop_by_hop(&mut headers);
        for name in [
            IF_NONE_MATCH,
            IF_MODIFIED_SINCE,
            IF_MATCH,
            IF_UNMODIFIED_SINCE,
            IF_RANGE,
            RANGE,
        ] {
            headers.remove(name);
        }
        self.add_forwarding_headers(&mut headers, &ctx.parts.uri, ctx.client);
        let mut request = Request::new(Either::Left(Empty::new()));
        *request.method_mut() = Method::GET;
        *request.uri_mut() = ctx.parts.uri.clone();
        *request.headers_mut() = headers;
        request
    }

    fn add_forwarding_headers(&self, headers: &mut HeaderMap, uri: &http::Uri, client: SocketAddr) {
        if !headers.contains_key(HOST) {
            // HTTP/2 requests carry the host in :authority.
            if let Some(value) = uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            {
                headers.insert(HOST, value);
            }
        }
        headers.append(VIA, self.via.clone());
        if let Ok(ip) = HeaderValue::from_str(&client.ip().to_string()) {
            headers.append("x-forwarded-for", ip);
        }
    }

    /// Readies an upstream response head for the client: our HTTP version, not the upstream's;
    /// hop-by-hop fields removed; this node added to `Via`.
    fn prepare_response(&self, head: &mut response::Parts) {
        head.version = Version::HTTP_11;
        strip_hop_by_hop(&mut head.headers);
        head.headers.append(VIA, self.via.clone());
    }

    async fn send_upstream(
        &self,
        request: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, EdgeError> {
        let started = Instant::now();
        let result = self.upstream.send(request).await;
        let label = match &result {
            Ok(_) => UpstreamResult::Ok,
            Err(EdgeError::UpstreamConnect { .. }) => UpstreamResult::ConnectError,
            Err(EdgeError::UpstreamTimeout { .. }) => UpstreamResult::Timeout,
            Err(_) => UpstreamResult::Error,
        };
        self.metrics.observe_upstream(label, started.elapsed());
        result
    }

    /// Reads a body to store it, up to the per-object bound; past the bound, hands back what was
    /// read and the rest of the stream so the client still gets the whole response.
    async fn read_bounded(
        &self,
        mut body: Incoming,
        expected: Option<u64>,
    ) -> Result<BodyRead, EdgeError> {
        let max = self.store.max_object_bytes();
        let capacity = expected.map_or(0, |n| n.min(max as u64) as usize);
        let mut buffer = BytesMut::with_capacity(capacity);
        let idle = self.upstream.body_idle_timeout();
        loop {
            let frame = match tokio::time::timeout(idle, body.frame()).await {
                Err(_) => {
                    return Err(EdgeError::UpstreamTimeout {
                        upstream: self.upstream.name().to_string(),
                        after: idle,
                    })
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    return Err(EdgeError::UpstreamBroken {
                        upstream: self.upstream.name().to_string(),
                        reason: format!("response body: {e}"),
                    })
                }
                Ok(Some(Ok(frame))) => frame,
            };
            if let Ok(data) = frame.into_data() {
                buffer.extend_from_slice(&data);
                if buffer.len() > max {
                    return Ok(BodyRead::TooLarge {
                        prefix: buffer.freeze(),
                        rest: body,
                    });
                }
            }
        }
        Ok(BodyRead::Complete(buffer.freeze()))
    }

    /// Answers from a stored object. The stored headers already hold `Age` and `Cache-Status`
    /// placeholders, so replacing them does not grow the cloned map.
    fn respond_from_cache(
        &self,
        ctx: &RequestContext,
        object: &CachedObject,
        mut status: CacheStatus,
        now: SystemTime,
    ) -> Response<ResponseBody> {
        let body = if ctx.head_only {
            ResponseBody::empty()
        } else {
            ResponseBody::full(object.body.clone())
        };
        status.ttl = Some(object.ttl_seconds(now));
        let mut response = Response::new(body);
        *response.status_mut() = object.status;
        let headers = response.headers_mut();
        *headers = object.headers.clone();
        headers.insert(AGE, HeaderValue::from(object.current_age(now).as_secs()));
        headers.insert(CACHE_STATUS.clone(), status.render(self.cache_name));
        response
    }

    fn streamed(
        &self,
        ctx: &RequestContext,
        head: response::Parts,
        body: ResponseBody,
        status: &CacheStatus,
    ) -> Response<ResponseBody> {
        let body = if ctx.head_only {
            ResponseBody::empty()
        } else {
            body
        };
        let mut response = Response::from_parts(head, body);
        response
            .headers_mut()
            .insert(CACHE_STATUS.clone(), status.render(self.cache_name));
        response
    }

    /// The one place an error becomes a response.
    fn error_response(&self, error: &EdgeError, version: Version) -> Response<ResponseBody> {
        let status = match error.fault() {
            Fault::Client => {
                tracing::debug!(%error, "rejected request");
                CacheStatus {
                    detail: Some(error.detail()),
                    ..CacheStatus::default()
                }
            }
            Fault::Upstream | Fault::Internal => {
                tracing::warn!(%error, "request failed");
                CacheStatus {
                    detail: Some(error.detail()),
                    ..CacheStatus::forwarded("miss")
                }
            }
        };
        let mut response = Response::new(ResponseBody::full(format!("{error}\n")));
        *response.status_mut() = error.status();
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(CACHE_STATUS.clone(), status.render(self.cache_name));
        if let EdgeError::MethodNotAllowed { .. } = error {
            headers.insert(
                http::header::ALLOW,
                HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
            );
        }
        if error.fault() == Fault::Client && version <= Version::HTTP_11 {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

impl<U: Upstream> Handler for EdgePipeline<U> {
    async fn handle(
        &self,
        request: Request<Incoming>,
        client: SocketAddr,
    ) -> Response<ResponseBody> {
        EdgePipeline::handle(self, request, client).await
    }
}

/// Copies header values out of the upstream connection's read buffer, which a stored slice of
/// it would otherwise keep alive for as long as the object is cached; adds `Age` and
/// `Cache-Status` placeholders that every response from cache overwrites.
fn compact_with_placeholders(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(headers.len() + 2);
    for (name, value) in headers {
        let mut copy = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        copy.set_sensitive(value.is_sensitive());
        out.append(name.clone(), copy);
    }
    out.insert(AGE, HeaderValue::from_static("0"));
    out.insert(CACHE_STATUS.clone(), HeaderValue::from_static("verge"));
    out
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}
