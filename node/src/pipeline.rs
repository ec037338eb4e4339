//! A cache node's request pipeline (edge and shield alike): validate → cache key → lookup →
//! (single-flight) fill → store → respond. [`CachePipeline::handle`] never fails; errors
//! become responses in one place.
//!
//! The steps live in four files: this one reads the request path top to bottom; `fill.rs`
//! fetches, revalidates and stores, as named steps; `forward.rs` builds what crosses the hop
//! to the upstream and readies its answer; `respond.rs` turns a stored object into the answer
//! the request asked for (304, 206, 416 or the whole object).

use std::net::SocketAddr;
use std::sync::{Arc, Weak};

use arc_swap::ArcSwap;
use std::time::Instant;

use http::header::{HeaderValue, CONNECTION, CONTENT_LOCATION, CONTENT_TYPE, HOST, LOCATION};
use http::{request, HeaderMap, Method, Request, Response, Version};
use hyper::body::Incoming;
use verge_cache::policy::{RequestDirectives, Reuse};
use verge_cache::store::Lookup;
use verge_cache::{CacheKey, CacheStore, CachedObject, Clock, FillOutcome, Flights, Join};
use verge_config::compression::CompressionConfig;
use verge_config::rules::{Rule, RuleSet};
use verge_config::{CacheConfig, OverrideHeaders, ServerConfig};

use crate::access_log::request_id::X_REQUEST_ID;
use crate::access_log::{self, AccessLog};
use crate::body::ResponseBody;
use crate::client_body::{BodyBudget, BodyLimits};
use crate::compress::Compressor;
use crate::error::{Fault, RequestError};
use crate::guard::{self, AddressLimit};
use crate::headers::{CacheStatus, CACHE_STATUS};
use crate::metrics::{NodeMetrics, RequestOutcome};
use crate::rules;
use crate::server::Handler;
use crate::upstream::Upstream;

/// A follower whose leader gave up joins again at most this many times before fetching alone.
const MAX_FLIGHT_JOINS: usize = 3;

/// What a request carries through the pipeline.
pub(crate) struct RequestContext {
    pub(crate) key: CacheKey,
    /// HEAD: answered from a stored GET, without a body.
    pub(crate) head_only: bool,
    pub(crate) parts: request::Parts,
    pub(crate) client: SocketAddr,
    pub(crate) directives: RequestDirectives,
    /// The cache rule the request matched.
    pub(crate) rule: Option<Arc<Rule>>,
}

/// Who this pipeline is, in the headers it adds.
#[derive(Debug, Clone, Copy)]
pub struct PipelineIdentity<'a> {
    /// This node's id, its entry in `Via`.
    pub node_id: &'a str,
    /// This cache's name in `Cache-Status` (`verge-edge`, `verge-shield`).
    pub cache_name: &'static str,
    pub downstream: Downstream,
    /// The node's request ids (the `X-Request-Id` it adds) and access log.
    pub access_log: &'a Arc<AccessLog>,
}

/// Who a node answers, which decides what its answers carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Downstream {
    /// Clients (the edge): the fields meant for CDN caches (`CDN-Cache-Control`,
    /// `Surrogate-Control`, `Surrogate-Key`, `Cache-Tag`) are removed, and a `304` carries the
    /// fields RFC 9110 §15.4.5 lists.
    Clients,
    /// Other Verge tiers (the shield): the fields meant for CDN caches pass on, so every tier
    /// applies the same rules and purges, and a `304` carries every stored field a cache
    /// updates its copy with (RFC 9111 §3.2), so the tier below ends up with the same copy.
    Caches,
}

/// Limits the pipeline applies per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineLimits {
    /// Byte ranges served in one 206; more are answered with the whole object.
    pub max_ranges: usize,
    /// A fill of a longer body answers as it reads (`cache.stream_above_bytes`).
    pub stream_above: u64,
    /// What happens to the fields that override host, URL or method.
    pub override_headers: OverrideHeaders,
    /// How request bodies are read.
    pub body: BodyLimits,
    /// Requests one client address may have waiting on the upstream.
    pub upstream_per_address: usize,
    /// How long a client may take to accept the next part of a streamed response.
    pub send_timeout: std::time::Duration,
    /// The operator's cache rules (`[[rules]]`).
    pub rules: Arc<RuleSet>,
    /// `[compression]` (served to clients only).
    pub compression: Arc<CompressionConfig>,
}

impl PipelineLimits {
    /// The limits a node's `[cache]` and `[server]` tables ask for.
    pub fn new(cache: &CacheConfig, server: &ServerConfig) -> PipelineLimits {
        PipelineLimits {
            max_ranges: cache.max_ranges,
            stream_above: cache.stream_above_bytes.bytes(),
            override_headers: server.override_headers,
            body: BodyLimits {
                buffer: usize::try_from(server.request_body_buffer.bytes()).unwrap_or(usize::MAX),
                max: server.max_request_body.bytes(),
                timeout: server.request_body_timeout,
                min_rate: server.request_body_min_rate.bytes(),
                total: server.request_body_buffer_total.bytes(),
            },
            upstream_per_address: server.max_upstream_requests_per_address,
            send_timeout: server.send_timeout,
            rules: Arc::clone(&cache.rules),
            compression: Arc::clone(&cache.compression),
        }
    }
}

/// Everything one cache node needs to answer requests; shared by all connections.
pub struct CachePipeline<U> {
    pub(crate) store: CacheStore,
    pub(crate) flights: Arc<Flights<RequestError>>,
    pub(crate) upstream: U,
    pub(crate) metrics: NodeMetrics,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) limits: PipelineLimits,
    /// Requests waiting on the upstream per client address.
    pub(crate) per_address: Arc<AddressLimit>,
    /// This cache's name in `Cache-Status`.
    pub(crate) cache_name: &'static str,
    /// This node's entry in `Via`.
    pub(crate) via: HeaderValue,
    /// This node's id, as it appears in `Via`.
    pub(crate) node_id: String,
    pub(crate) downstream: Downstream,
    /// The node's access log and request ids, shared by every pipeline it swaps in.
    pub(crate) access_log: Arc<AccessLog>,
    /// A handle on this pipeline for background refreshes (stale-while-revalidate).
    pub(crate) me: Weak<CachePipeline<U>>,
    /// Compressed variants of stored objects (an edge's clients only).
    pub(crate) compressor: Compressor,
    /// What buffered request bodies may hold together.
    pub(crate) body_budget: BodyBudget,
    /// The rules in force: control's (from its routing tables), then the node's own.
    pub(crate) rules: ArcSwap<RuleSet>,
}

impl<U: Upstream> CachePipeline<U> {
    pub fn new(
        store: CacheStore,
        flights: Arc<Flights<RequestError>>,
        upstream: U,
        metrics: NodeMetrics,
        clock: Arc<dyn Clock>,
        identity: PipelineIdentity<'_>,
        limits: PipelineLimits,
    ) -> Arc<CachePipeline<U>> {
        let PipelineIdentity {
            node_id,
            cache_name,
            downstream,
            access_log,
        } = identity;
        let via = HeaderValue::from_str(&format!("1.1 {node_id}"))
            .unwrap_or_else(|_| HeaderValue::from_static("1.1 verge"));
        let compression = match downstream {
            Downstream::Clients => Arc::clone(&limits.compression),
            Downstream::Caches => Arc::new(CompressionConfig::off()),
        };
        let compressor = Compressor::new(compression, store.clone(), metrics.clone());
        Arc::new_cyclic(|me| CachePipeline {
            rules: ArcSwap::new(Arc::clone(&limits.rules)),
            body_budget: BodyBudget::new(
                limits.body.total,
                (
                    metrics.request_body_buffered.clone(),
                    metrics.request_body_over_budget.clone(),
                ),
            ),
            compressor,
            store,
            flights,
            upstream,
            metrics,
            clock,
            per_address: AddressLimit::new(limits.upstream_per_address),
            limits,
            cache_name,
            via,
            node_id: node_id.to_string(),
            downstream,
            access_log: Arc::clone(access_log),
            me: me.clone(),
        })
    }

    /// Answers one client request. Never fails: errors are turned into responses here. The
    /// request carries its id (`X-Request-Id`) upstream and back to the client, and with an
    /// access log its line is written once the response body has ended.
    pub async fn handle(
        &self,
        mut request: Request<Incoming>,
        client: SocketAddr,
    ) -> Response<ResponseBody> {
        let started = Instant::now();
        let version = request.version();
        let request_id = self.access_log.request_id(request.headers());
        request
            .headers_mut()
            .insert(X_REQUEST_ID.clone(), request_id.clone());
        let line = self
            .access_log
            .begin(&request, client, started, &request_id);
        let rule = rules::rule_for(&self.rules.load(), &request);
        // Pinned here and lent out: the answer's future is large, and moving it into the
        // access log's scope would copy it on every request.
        let answer = std::pin::pin!(self.try_handle(request, client, rule.clone()));
        let (answer, upstream) = match line {
            None => (answer.await, None),
            Some(_) => access_log::noting_upstream(answer).await,
        };
        let (mut response, outcome, failed) = match answer {
            Ok((response, outcome)) => (response, outcome, false),
            Err(error) => (
                self.error_response(&error, version),
                RequestOutcome::Error,
                error.fault() != Fault::Client,
            ),
        };
        response
            .headers_mut()
            .insert(X_REQUEST_ID.clone(), request_id);
        if let Some(rule) = &rule {
            rules::mark_response(rule, &mut response);
            self.metrics.observe_rule(&rule.name, outcome);
        }
        self.metrics
            .observe_request(outcome, response.status(), started.elapsed());
        match line {
            Some(line) => line.attach(response, outcome, failed, upstream),
            None => response,
        }
    }

    async fn try_handle(
        &self,
        request: Request<Incoming>,
        client: SocketAddr,
        rule: Option<Arc<Rule>>,
    ) -> Result<(Response<ResponseBody>, RequestOutcome), RequestError> {
        let (mut parts, body) = request.into_parts();
        guard::check_request(&mut parts, self.limits.override_headers)?;
        if let Some(response) = guard::final_recipient(&mut parts) {
            return Ok((response, RequestOutcome::Local));
        }
        let cacheable = parts.method == Method::GET || parts.method == Method::HEAD;
        let bypass = rule.as_ref().is_some_and(|r| r.actions.bypass);
        if let (Some(rule), true, false) = (&rule, cacheable, bypass) {
            rules::rewrite_request(&mut parts, rule);
        }
        if cacheable && !bypass && self.compressor.enabled() {
            self.compressor.normalise_request(&mut parts.headers);
        }
        let request = Request::from_parts(parts, body);
        let method = request.method();
        if method == Method::CONNECT || method.as_str() == "PURGE" {
            return Err(RequestError::MethodNotAllowed {
                method: method.to_string(),
            });
        }
        let key = CacheKey::for_request("http", request.uri(), request.headers())
            .map_err(|e| RequestError::BadRequest(e.message()))?;
        if self.already_passed(request.headers()) {
            return Err(RequestError::LoopDetected {
                node: self.node_id.clone(),
            });
        }
        if !cacheable || bypass {
            let is_unsafe = !matches!(
                *method,
                Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
            );
            let site = site_of(request.uri(), request.headers());
            let response = self.pass(request, client, &key).await?;
            let status = response.status();
            if is_unsafe && (status.is_success() || status.is_redirection()) {
                self.invalidate_after_unsafe(&key, site.as_deref(), response.headers());
            }
            return Ok((response, RequestOutcome::Pass));
        }
        let (parts, _body) = request.into_parts();
        let ctx = RequestContext {
            key: rules::key_for(key, rule.as_deref(), &parts.headers),
            rule,
            head_only: parts.method == Method::HEAD,
            directives: RequestDirectives::from_headers(&parts.headers),
            parts,
            client,
        };
        self.serve_cacheable(&ctx).await
    }

    /// GET and HEAD: from cache when the stored object may answer, else through one fill per key.
    async fn serve_cacheable(
        &self,
        ctx: &RequestContext,
    ) -> Result<(Response<ResponseBody>, RequestOutcome), RequestError> {
        let mut joins = 0;
        loop {
            let now = self.clock.now();
            let (stored, fwd) = match self.store.lookup(&ctx.key, &ctx.parts.headers) {
                Lookup::Found(object) => match object.reuse(&ctx.directives, now) {
                    Reuse::Fresh => {
                        let response =
                            self.respond_from_cache(ctx, &object, CacheStatus::hit(), now);
                        return Ok((response, RequestOutcome::Hit));
                    }
                    Reuse::StaleAccepted => {
                        let status = CacheStatus::stale_hit("max-stale");
                        return Ok((
                            self.respond_from_cache(ctx, &object, status, now),
                            RequestOutcome::Stale,
                        ));
                    }
                    Reuse::StaleWhileRevalidate => {
                        self.refresh_in_background(ctx, &object);
                        let status = CacheStatus::stale_hit("stale-while-revalidate");
                        return Ok((
                            self.respond_from_cache(ctx, &object, status, now),
                            RequestOutcome::Stale,
                        ));
                    }
                    Reuse::Revalidate if object.is_fresh(now) => (Some(object), "request"),
                    Reuse::Revalidate => (Some(object), "stale"),
                },
                Lookup::VaryMiss => (None, "vary-miss"),
                Lookup::UriMiss => (None, "uri-miss"),
            };
            if ctx.directives.only_if_cached {
                return Err(RequestError::NotCached);
            }
            joins += 1;
            if joins > MAX_FLIGHT_JOINS {
                return self.fill(ctx, None, stored, fwd).await;
            }
            match self.flights.join(&ctx.key) {
                Join::Leader(leader) => return self.fill(ctx, Some(leader), stored, fwd).await,
                Join::Follower(follower) => {
                    self.metrics.coalesced.inc();
                    match follower.wait().await {
                        FillOutcome::Stored(object) if self.may_share(ctx, &object) => {
                            let status = CacheStatus {
                                collapsed: true,
                                ..CacheStatus::forwarded(fwd)
                            };
                            let response =
                                self.respond_from_cache(ctx, &object, status, self.clock.now());
                            return Ok((response, RequestOutcome::Coalesced));
                        }
                        FillOutcome::Stored(_) | FillOutcome::NotStorable => {
                            return self.fill(ctx, None, stored, fwd).await
                        }
                        FillOutcome::Failed(error) => {
                            return self.stale_or_error(ctx, stored, error)
                        }
                        FillOutcome::Abandoned => continue,
                    }
                }
                Join::Uncoalesced => return self.fill(ctx, None, stored, fwd).await,
            }
        }
    }

    /// Whether this node already appears in the request's `Via` (a routing loop between tiers).
    fn already_passed(&self, headers: &HeaderMap) -> bool {
        headers
            .get_all(http::header::VIA)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|hop| hop.split_whitespace().nth(1))
            .any(|received_by| received_by == self.node_id)
    }

    /// Whether a follower may answer with the object its leader stored.
    fn may_share(&self, ctx: &RequestContext, object: &CachedObject) -> bool {
        object.vary.matches(&ctx.parts.headers)
            && matches!(
                object.reuse(&ctx.directives, self.clock.now()),
                Reuse::Fresh | Reuse::StaleAccepted
            )
    }

    /// Refreshes a stale object once, off the request path (stale-while-revalidate).
    fn refresh_in_background(&self, ctx: &RequestContext, stale: &Arc<CachedObject>) {
        let Join::Leader(leader) = self.flights.join(&ctx.key) else {
            return; // a fill for this key is already running
        };
        let Some(me) = self.me.upgrade() else { return };
        let mut parts = ctx.parts.clone();
        parts.method = Method::GET;
        let background = RequestContext {
            key: ctx.key.clone(),
            head_only: false,
            directives: RequestDirectives::default(),
            parts,
            client: ctx.client,
            rule: ctx.rule.clone(),
        };
        let stale = Arc::clone(stale);
        tokio::spawn(async move {
            let fwd = "stale";
            if let Err(error) = me.fill(&background, Some(leader), Some(stale), fwd).await {
                tracing::debug!(%error, key = %background.key, "background refresh failed");
            }
        });
    }

    /// Serves a stale object in place of an upstream failure when stale-if-error allows it.
    pub(crate) fn stale_or_error(
        &self,
        ctx: &RequestContext,
        stored: Option<Arc<CachedObject>>,
        error: RequestError,
    ) -> Result<(Response<ResponseBody>, RequestOutcome), RequestError> {
        let now = self.clock.now();
        match stored {
            Some(object) if object.may_serve_on_error(&ctx.directives, now) => {
                tracing::info!(%error, key = %ctx.key, "upstream failed; serving stale");
                let status = CacheStatus {
                    fwd: Some("stale"),
                    ..CacheStatus::stale_hit("stale-if-error")
                };
                Ok((
                    self.respond_from_cache(ctx, &object, status, now),
                    RequestOutcome::Stale,
                ))
            }
            _ => Err(error),
        }
    }

    /// RFC 9111 §4.4: a successful unsafe request invalidates its target and the same-site
    /// URLs in `Location` and `Content-Location`.
    fn invalidate_after_unsafe(&self, key: &CacheKey, site: Option<&str>, response: &HeaderMap) {
        self.store.remove(key);
        self.flights.forget(key);
        let Some(site) = site else { return };
        for name in [LOCATION, CONTENT_LOCATION] {
            let Some(target) = response.get(&name).and_then(|v| v.to_str().ok()) else {
                continue;
            };
            let Ok(uri) = target.parse::<http::Uri>() else {
                continue;
            };
            let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
            let same_site = match uri.authority() {
                Some(authority) => {
                    uri.scheme_str().is_none_or(|s| s == "http")
                        && CacheKey::from_parts("http", authority.as_str(), "/")
                            == CacheKey::from_parts("http", site, "/")
                }
                None => path.starts_with('/'),
            };
            if same_site {
                let target = CacheKey::from_parts("http", site, path);
                self.store.remove(&target);
                self.flights.forget(&target);
            }
        }
    }

    /// The one place an error becomes a response.
    fn error_response(&self, error: &RequestError, version: Version) -> Response<ResponseBody> {
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
        let mut response =
            Response::new(ResponseBody::full(format!("{}\n", error.public_message())));
        *response.status_mut() = error.status();
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(CACHE_STATUS.clone(), status.render(self.cache_name));
        if let RequestError::MethodNotAllowed { .. } = error {
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

impl<U: Upstream> Handler for CachePipeline<U> {
    async fn handle(
        &self,
        request: Request<Incoming>,
        client: SocketAddr,
    ) -> Response<ResponseBody> {
        CachePipeline::handle(self, request, client).await
    }
}

/// The request's host[:port], for same-site checks.
fn site_of(uri: &http::Uri, headers: &HeaderMap) -> Option<String> {
    uri.authority().map(|a| a.as_str().to_string()).or_else(|| {
        headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
    })
}
