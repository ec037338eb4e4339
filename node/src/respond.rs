//! Answers from a stored object: the whole object, `304 Not Modified` for a satisfied
//! conditional request, `206 Partial Content` for byte ranges, or `416` when none fits.

use std::time::SystemTime;

use http::header::{
    HeaderValue, AGE, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_LOCATION, CONTENT_RANGE, CONTENT_TYPE,
    DATE, ETAG, EXPIRES, IF_RANGE, LAST_MODIFIED, RANGE, VARY, VIA,
};
use http::{response, HeaderMap, Method, Response, StatusCode};
use verge_cache::range::{self, RangePlan};
use verge_cache::{compress, policy, CachedObject};

use crate::body::ResponseBody;
use crate::headers::{CacheStatus, CACHE_STATUS};
use crate::pipeline::{CachePipeline, Downstream, RequestContext};
use crate::upstream::Upstream;

impl<U: Upstream> CachePipeline<U> {
    /// Answers from a stored object, or from its compressed variant when the client accepts
    /// one; the answer for a compressible object varies on `Accept-Encoding`.
    pub(crate) fn respond_from_cache(
        &self,
        ctx: &RequestContext,
        object: &CachedObject,
        status: CacheStatus,
        now: SystemTime,
    ) -> Response<ResponseBody> {
        let compressed = self
            .compressor
            .for_request(&ctx.key, &ctx.parts.headers, object);
        let object = compressed.variant.as_deref().unwrap_or(object);
        let mut response = self.respond_from_object(ctx, object, status, now);
        if compressed.varies {
            compress::vary_on_accept_encoding(response.headers_mut());
        }
        response
    }

    /// Answers from `object`. The stored headers already hold `Age` and `Cache-Status`
    /// placeholders, so replacing them does not grow the cloned map.
    fn respond_from_object(
        &self,
        ctx: &RequestContext,
        object: &CachedObject,
        mut status: CacheStatus,
        now: SystemTime,
    ) -> Response<ResponseBody> {
        let (age, cache_status) = self.age_and_status(object, &mut status, now);
        if object.status == StatusCode::OK {
            if policy::not_modified(&ctx.parts.headers, &object.headers) {
                return match self.downstream {
                    Downstream::Clients => not_modified(object, age, cache_status),
                    Downstream::Caches => not_modified_for_a_cache(object, age, cache_status),
                };
            }
            if ctx.parts.method == Method::GET
                && ctx.parts.headers.get_all(RANGE).iter().count() == 1
            {
                if let Some(response) = self.ranged(ctx, object, &age, &cache_status) {
                    return response;
                }
            }
        }
        let body = if ctx.head_only {
            ResponseBody::empty()
        } else {
            ResponseBody::full(object.body.clone())
        };
        whole(object, body, age, cache_status)
    }

    /// The whole of `object`, whose body a fill is still reading: it arrives in `body`. Only
    /// for a request answered with the whole object, as it is (see `streams_while_filling`).
    pub(crate) fn respond_while_filling(
        &self,
        object: &CachedObject,
        mut status: CacheStatus,
        now: SystemTime,
        body: ResponseBody,
    ) -> Response<ResponseBody> {
        let (age, cache_status) = self.age_and_status(object, &mut status, now);
        whole(object, body, age, cache_status)
    }

    /// The `Age` and `Cache-Status` of an answer from `object`.
    fn age_and_status(
        &self,
        object: &CachedObject,
        status: &mut CacheStatus,
        now: SystemTime,
    ) -> (HeaderValue, HeaderValue) {
        status.ttl = Some(object.ttl_seconds(now));
        let age = HeaderValue::from(object.current_age(now).as_secs());
        let cache_status = status.render_after(self.cache_name, object.headers.get(&CACHE_STATUS));
        (age, cache_status)
    }

    /// A 206 or 416 for the request's `Range`, or `None` to send the whole object.
    fn ranged(
        &self,
        ctx: &RequestContext,
        object: &CachedObject,
        age: &HeaderValue,
        cache_status: &HeaderValue,
    ) -> Option<Response<ResponseBody>> {
        let len = object.body.len() as u64;
        let plan = range::plan(
            ctx.parts.headers.get(RANGE),
            ctx.parts.headers.get(IF_RANGE),
            &object.headers,
            len,
            self.limits.max_ranges,
        );
        let mut response = Response::new(ResponseBody::empty());
        let headers = response.headers_mut();
        *headers = object.headers.clone();
        headers.insert(AGE, age.clone());
        headers.insert(CACHE_STATUS.clone(), cache_status.clone());
        match &plan {
            RangePlan::Full => return None,
            RangePlan::Unsatisfiable => {
                *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                let headers = response.headers_mut();
                if let Some(value) = range::unsatisfiable_content_range(len) {
                    headers.insert(CONTENT_RANGE, value);
                }
                headers.insert(CONTENT_LENGTH, HeaderValue::from(0));
            }
            RangePlan::Single(_) | RangePlan::Multiple(_) => {
                let part = range::render(&plan, &object.body, &object.headers)?;
                *response.status_mut() = StatusCode::PARTIAL_CONTENT;
                let headers = response.headers_mut();
                headers.insert(CONTENT_LENGTH, HeaderValue::from(part.content_length));
                if let Some(value) = part.content_range {
                    headers.insert(CONTENT_RANGE, value);
                }
                if let Some(value) = part.content_type {
                    headers.insert(CONTENT_TYPE, value);
                }
                *response.body_mut() = ResponseBody::full(part.body);
            }
        }
        Some(response)
    }

    /// An upstream response streamed to the client (not from cache).
    pub(crate) fn streamed(
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
        let entry = status.render_after(self.cache_name, response.headers().get(&CACHE_STATUS));
        response.headers_mut().insert(CACHE_STATUS.clone(), entry);
        response
    }
}

/// A 304 with the fields RFC 9110 §15.4.5 asks for: those a 200 would carry that guide cache
/// updates (`Last-Modified` only without an `ETag`).
fn not_modified(
    object: &CachedObject,
    age: HeaderValue,
    cache_status: HeaderValue,
) -> Response<ResponseBody> {
    let mut headers = HeaderMap::new();
    for name in [
        CACHE_CONTROL,
        CONTENT_LOCATION,
        DATE,
        ETAG,
        EXPIRES,
        VARY,
        VIA,
    ] {
        for value in object.headers.get_all(&name) {
            headers.append(name.clone(), value.clone());
        }
    }
    if !object.headers.contains_key(ETAG) {
        if let Some(value) = object.headers.get(LAST_MODIFIED) {
            headers.insert(LAST_MODIFIED, value.clone());
        }
    }
    not_modified_with(headers, age, cache_status)
}

/// A 304 for a cache below this one (another Verge tier): every stored field it updates its
/// copy with (RFC 9111 §3.2), but not the framing of the body it keeps.
fn not_modified_for_a_cache(
    object: &CachedObject,
    age: HeaderValue,
    cache_status: HeaderValue,
) -> Response<ResponseBody> {
    let mut headers = object.headers.clone();
    headers.remove(CONTENT_LENGTH);
    headers.remove(CONTENT_RANGE);
    not_modified_with(headers, age, cache_status)
}

fn not_modified_with(
    mut headers: HeaderMap,
    age: HeaderValue,
    cache_status: HeaderValue,
) -> Response<ResponseBody> {
    headers.insert(AGE, age);
    headers.insert(CACHE_STATUS.clone(), cache_status);
    let mut response = Response::new(ResponseBody::empty());
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    *response.headers_mut() = headers;
    response
}

/// `object`'s status and headers with `age` and `cache_status`, and `body`.
fn whole(
    object: &CachedObject,
    body: ResponseBody,
    age: HeaderValue,
    cache_status: HeaderValue,
) -> Response<ResponseBody> {
    let mut response = Response::new(body);
    *response.status_mut() = object.status;
    let headers = response.headers_mut();
    *headers = object.headers.clone();
    headers.insert(AGE, age);
    headers.insert(CACHE_STATUS.clone(), cache_status);
    response
}
