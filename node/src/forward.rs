//! What crosses the hop to the upstream: the request a fill or a pass sends (hop-by-hop
//! fields removed, forwarding fields added) and the response head readied for the client.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{
    HeaderName, HeaderValue, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, EXPECT, HOST,
    IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, RANGE, VIA,
};
use http::{response, HeaderMap, Method, Request, Response, Version};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use verge_cache::CacheKey;

use crate::access_log::{self, AnsweredBy, UpstreamSeen};
use crate::body::ResponseBody;
use crate::client_body::ClientBody;
use crate::error::RequestError;
use crate::failover::{Attempt, Hop};
use crate::headers::{strip_cdn_only, strip_hop_by_hop, CacheStatus, CACHE_STATUS};
use crate::pipeline::{CachePipeline, Downstream, RequestContext};
use crate::upstream::{Upstream, UpstreamBody, UpstreamResponseBody};

impl<U: Upstream> CachePipeline<U> {
    /// Methods the cache does not handle: forwarded with their bodies, answered as streamed.
    pub(crate) async fn pass(
        &self,
        request: Request<Incoming>,
        client: SocketAddr,
        key: &CacheKey,
    ) -> Result<Response<ResponseBody>, RequestError> {
        let (mut parts, body) = request.into_parts();
        // Read (up to the buffer) before anything upstream is taken: a slow or broken upload
        // holds no upstream connection, and a malformed one never reaches the upstream.
        let body = ClientBody::read(body, &parts.headers, self.limits.body, &self.body_budget)
            .await
            .map_err(RequestError::ClientBody)?;
        let waiting = self.per_address.enter(client.ip())?;
        // The client's body streams through once: nothing of it can be sent again elsewhere.
        let hop = Hop {
            key: key.clone(),
            replayable: false,
        };
        strip_hop_by_hop(&mut parts.headers);
        self.add_forwarding_headers(&mut parts.headers, &parts.uri, client);
        parts.version = Version::HTTP_11;
        let response = self
            .send_upstream(Request::from_parts(parts, Either::Right(body)), &hop)
            .await?;
        let (mut head, mut body) = response.into_parts();
        body.hold(waiting);
        self.prepare_response(&mut head);
        let status = CacheStatus {
            fwd_status: Some(head.status.as_u16()),
            ..CacheStatus::forwarded("bypass")
        };
        let body = ResponseBody::stream(Bytes::new(), body, self.limits.send_timeout);
        let mut response = Response::from_parts(head, body);
        let entry = status.render_after(self.cache_name, response.headers().get(&CACHE_STATUS));
        response.headers_mut().insert(CACHE_STATUS.clone(), entry);
        Ok(response)
    }

    /// The request a fill sends: the client's request without its own conditions and ranges
    /// (the cache wants the whole representation), plus the cache's validators if any.
    pub(crate) fn fill_request(
        &self,
        ctx: &RequestContext,
        method: Method,
        conditions: Vec<(HeaderName, HeaderValue)>,
    ) -> Request<UpstreamBody> {
        let mut headers = ctx.parts.headers.clone();
        strip_hop_by_hop(&mut headers);
        // The fill sends no content, so nothing that describes the client's content either.
        for name in [
            IF_NONE_MATCH,
            IF_MODIFIED_SINCE,
            IF_MATCH,
            IF_UNMODIFIED_SINCE,
            IF_RANGE,
            RANGE,
            CONTENT_LENGTH,
            CONTENT_TYPE,
            CONTENT_ENCODING,
            EXPECT,
        ] {
            headers.remove(name);
        }
        for (name, value) in conditions {
            headers.insert(name, value);
        }
        self.add_forwarding_headers(&mut headers, &ctx.parts.uri, ctx.client);
        let mut request = Request::new(Either::Left(Empty::new()));
        *request.method_mut() = method;
        *request.uri_mut() = ctx.parts.uri.clone();
        *request.headers_mut() = headers;
        request
    }

    /// `Host` is the authority the request was keyed by: a request target's own authority
    /// (the absolute form, HTTP/2's `:authority`) wins over any `Host` field the client also
    /// sent (RFC 9112 §3.2.2), so the key and what the upstream is asked for always agree.
    fn add_forwarding_headers(&self, headers: &mut HeaderMap, uri: &http::Uri, client: SocketAddr) {
        if let Some(value) = uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            headers.insert(HOST, value);
        }
        headers.append(VIA, self.via.clone());
        if let Ok(ip) = HeaderValue::from_str(&client.ip().to_string()) {
            headers.append("x-forwarded-for", ip);
        }
    }

    /// Readies an upstream response head for the node's downstream: our HTTP version, not the
    /// upstream's; hop-by-hop fields removed, and the CDN-only ones when it answers clients;
    /// this node added to `Via`.
    pub(crate) fn prepare_response(&self, head: &mut response::Parts) {
        head.version = Version::HTTP_11;
        strip_hop_by_hop(&mut head.headers);
        if self.downstream == Downstream::Clients {
            strip_cdn_only(&mut head.headers);
        }
        head.headers.append(VIA, self.via.clone());
    }

    pub(crate) async fn send_upstream(
        &self,
        request: Request<UpstreamBody>,
        hop: &Hop,
    ) -> Result<Response<UpstreamResponseBody>, RequestError> {
        let started = std::time::Instant::now();
        let result = self.upstream.send(request, hop).await;
        let first_byte = started.elapsed();
        let label = match &result {
            Ok(_) => Attempt::Ok,
            Err(error) => Attempt::of_error(error),
        };
        self.metrics.observe_upstream(label, first_byte);
        access_log::note_upstream(|| {
            let response = result.as_ref().ok();
            UpstreamSeen {
                answered_by: response
                    .and_then(|r| r.extensions().get::<AnsweredBy>())
                    .map(|by| Arc::clone(&by.0)),
                status: response.map(|r| r.status().as_u16()),
                first_byte,
            }
        });
        result
    }
}
