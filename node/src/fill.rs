//! Fills: fetching from upstream (or revalidating a stored object), deciding whether to store,
//! storing, and telling the followers of the fill what happened.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::header::{HeaderValue, CONTENT_ENCODING, CONTENT_LENGTH};
use http::{response, HeaderMap, Method, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use verge_cache::policy::{self, AgeInputs};
use verge_cache::purge::surrogate_keys;
use verge_cache::{CacheControl, CachedObject, FillOutcome, FlightLeader, NotStorable, VaryKey};

use crate::body::ResponseBody;
use crate::error::RequestError;
use crate::failover::Hop;
use crate::headers::{CacheStatus, TierEntry};
use crate::metrics::{RequestOutcome, RevalidationResult};
use crate::pipeline::{CachePipeline, RequestContext};
use crate::rules;
use crate::upstream::{Upstream, UpstreamResponseBody};
use stored::stored_headers;

type Answer = Result<(Response<ResponseBody>, RequestOutcome), RequestError>;

/// A response body read for storing: whole, or found too large part way through.
enum BodyRead {
    Complete(Bytes),
    TooLarge {
        prefix: Bytes,
        rest: UpstreamResponseBody,
    },
}

/// What a 304 (or validating HEAD) brings to a stored object, read before the fields meant
/// for this cache were removed from its headers.
struct Update<'a> {
    headers: &'a HeaderMap,
    cc: &'a CacheControl,
    /// Surrogate keys, when the response carried `Surrogate-Key` or `Cache-Tag`.
    tags: Option<Vec<Arc<str>>>,
}

/// An upstream answer to a fill, with what this cache read from it before the fields meant
/// for it were removed; `B` is its body, `()` once read.
struct Fetched<B = UpstreamResponseBody> {
    head: response::Parts,
    body: B,
    cc: CacheControl,
    tags: Vec<Arc<str>>,
    /// Whether the answer carried `Surrogate-Key` or `Cache-Tag`.
    carried_tags: bool,
    request_time: SystemTime,
    response_time: SystemTime,
}

impl<B> Fetched<B> {
    /// The answer without its body, and the body.
    fn split_body(self) -> (Fetched<()>, B) {
        let Fetched {
            head,
            body,
            cc,
            tags,
            carried_tags,
            request_time,
            response_time,
        } = self;
        let read = Fetched {
            head,
            body: (),
            cc,
            tags,
            carried_tags,
            request_time,
            response_time,
        };
        (read, body)
    }
}

/// What revalidation made of a conditional fill's answer.
enum Revalidation {
    /// The request is answered (the stored object freshened, or dropped).
    Answered(Answer),
    /// The answer does not confirm the stored object: it goes on as a new answer.
    Unconfirmed(Fetched),
}

/// The leader's duty to tell followers how the fill ended (a no-op for uncoalesced fills).
struct Publisher(Option<FlightLeader<RequestError>>);

impl Publisher {
    fn publish(&mut self, outcome: FillOutcome<RequestError>) {
        if let Some(leader) = self.0.take() {
            leader.finish(outcome);
        }
    }

    /// Lets followers retry from the start (they find nothing stored and fetch).
    fn abandon(&mut self) {
        self.0.take();
    }

    fn is_leading(&self) -> bool {
        self.0.is_some()
    }
}

impl<U: Upstream> CachePipeline<U> {
    /// Fetches the object (conditionally when a stored one can be revalidated), stores it when
    /// allowed, and answers the request. `stored` is the object the lookup found but could not
    /// use; `fwd` says why the request went upstream.
    pub(crate) async fn fill(
        &self,
        ctx: &RequestContext,
        leader: Option<FlightLeader<RequestError>>,
        stored: Option<Arc<CachedObject>>,
        fwd: &'static str,
    ) -> Result<(Response<ResponseBody>, RequestOutcome), RequestError> {
        self.metrics.fills_in_flight.inc();
        let result = self.fill_inner(ctx, Publisher(leader), stored, fwd).await;
        self.metrics.fills_in_flight.dec();
        result
    }

    /// A fill as named steps: fetch (conditionally), revalidate what was stored, refuse what
    /// cannot be used, decide whether to store, read, store and answer.
    async fn fill_inner(
        &self,
        ctx: &RequestContext,
        mut publisher: Publisher,
        stored: Option<Arc<CachedObject>>,
        fwd: &'static str,
    ) -> Answer {
        let validatable = stored
            .as_ref()
            .filter(|s| policy::has_validator(&s.headers))
            .cloned();
        // A HEAD for a stored GET that needs revalidation is checked with a HEAD (§4.3.5).
        let method = if ctx.head_only && validatable.is_some() {
            Method::HEAD
        } else {
            Method::GET
        };
        let fetched = match self.fetch(ctx, &method, validatable.as_deref()).await {
            Ok(fetched) => fetched,
            Err(error) => {
                publisher.publish(FillOutcome::Failed(error.clone()));
                self.revalidated(validatable.is_some(), RevalidationResult::Error);
                return self.stale_or_error(ctx, stored, error);
            }
        };
        if let Some(answer) = self.own_stale_first(ctx, &mut publisher, stored.as_ref(), &fetched) {
            return answer;
        }
        let fetched = match &validatable {
            Some(stale) => match self.revalidate(ctx, &mut publisher, stale, &method, fetched, fwd)
            {
                Revalidation::Answered(answer) => return answer,
                Revalidation::Unconfirmed(fetched) => fetched,
            },
            None => fetched,
        };
        if let Some(answer) = self.refuse_unusable(ctx, &mut publisher, stored.as_ref(), &fetched) {
            return answer;
        }
        let mut fetched = fetched;
        let lifetime = match self.decide_storable(ctx, &mut fetched) {
            Ok(lifetime) => lifetime,
            Err(reason) => {
                if stored.is_some() {
                    self.store.remove(&ctx.key);
                }
                let body =
                    ResponseBody::stream(Bytes::new(), fetched.body, self.limits.send_timeout);
                return Ok(self.pass_through(ctx, &mut publisher, fetched.head, body, reason, fwd));
            }
        };
        if let Some(streamable) = self.streams_while_filling(ctx, &fetched.head, stored.is_some()) {
            return Ok(self.stream_and_store(
                ctx,
                &mut publisher,
                fetched,
                streamable,
                lifetime,
                fwd,
            ));
        }
        let (read, body) = fetched.split_body();
        let length = content_length(&read.head.headers);
        let body = match self.read_bounded(body, length).await {
            Ok(BodyRead::Complete(bytes)) => bytes,
            Ok(BodyRead::TooLarge { prefix, rest }) => {
                let body = ResponseBody::stream(prefix, rest, self.limits.send_timeout);
                let reason = NotStorable::TooLarge;
                return Ok(self.pass_through(ctx, &mut publisher, read.head, body, reason, fwd));
            }
            Err(error) => {
                publisher.publish(FillOutcome::Failed(error.clone()));
                return self.stale_or_error(ctx, stored, error);
            }
        };
        Ok(self.store_and_answer(ctx, &mut publisher, read, body, lifetime, fwd))
    }

    /// Sends the fill upstream — conditional on `validatable`'s validators for a GET — and
    /// reads what the answer tells this cache before the fields meant for it are removed.
    async fn fetch(
        &self,
        ctx: &RequestContext,
        method: &Method,
        validatable: Option<&CachedObject>,
    ) -> Result<Fetched, RequestError> {
        let conditions = match (method, validatable) {
            (&Method::GET, Some(s)) => policy::validators(&s.headers),
            _ => Vec::new(),
        };
        let request_time = self.clock.now();
        let request = self.fill_request(ctx, method.clone(), conditions);
        let waiting = self.per_address.enter(ctx.client.ip())?;
        let hop = Hop {
            key: ctx.key.clone(),
            replayable: true,
        };
        let response = self.send_upstream(request, &hop).await?;
        let response_time = self.clock.now();
        let (mut head, mut body) = response.into_parts();
        // The address keeps its place while the body streams (a fill reads it at once; an
        // answer passed through holds its upstream connection as long as its client reads).
        body.hold(waiting);
        let cc = CacheControl::for_response(&head.headers);
        let tags = surrogate_keys(&head.headers);
        let carried_tags =
            head.headers.contains_key("surrogate-key") || head.headers.contains_key("cache-tag");
        self.prepare_response(&mut head);
        Ok(Fetched {
            head,
            body,
            cc,
            tags,
            carried_tags,
            request_time,
            response_time,
        })
    }

    /// Checks the answer to a conditional fill against the stored object: a confirmation
    /// freshens it, a HEAD that disagrees drops it; anything else goes on as a new answer.
    fn revalidate(
        &self,
        ctx: &RequestContext,
        publisher: &mut Publisher,
        stale: &CachedObject,
        method: &Method,
        fetched: Fetched,
        fwd: &'static str,
    ) -> Revalidation {
        let head = &fetched.head;
        let fwd_status = Some(head.status.as_u16());
        let confirmed = match *method {
            Method::HEAD => {
                head.status == StatusCode::OK
                    && policy::has_validator(&head.headers)
                    && policy::validates(&stale.headers, &head.headers)
            }
            _ => {
                head.status == StatusCode::NOT_MODIFIED
                    && policy::validates(&stale.headers, &head.headers)
            }
        };
        if confirmed {
            self.revalidated(true, RevalidationResult::NotModified);
            let update = Update {
                headers: &head.headers,
                cc: &fetched.cc,
                tags: fetched.carried_tags.then(|| fetched.tags.clone()),
            };
            let times = (fetched.request_time, fetched.response_time);
            let answer = self.freshen(ctx, publisher, stale, update, times, fwd, fwd_status);
            return Revalidation::Answered(Ok(answer));
        }
        if *method == Method::HEAD {
            // The stored GET no longer describes the resource; it cannot be kept.
            // Followers fetch again; the URL is not marked as never storable.
            self.store.remove(&ctx.key);
            publisher.abandon();
            self.revalidated(true, RevalidationResult::Modified);
            let status = CacheStatus {
                fwd_status,
                ..CacheStatus::forwarded(fwd)
            };
            let response = self.streamed(ctx, fetched.head, ResponseBody::empty(), &status);
            return Revalidation::Answered(Ok((response, RequestOutcome::Miss)));
        }
        if head.status != StatusCode::NOT_MODIFIED {
            self.revalidated(true, RevalidationResult::Modified);
        }
        Revalidation::Unconfirmed(fetched)
    }

    /// An answer the fill cannot use as it is: a 304 to a request it could not have matched
    /// (an error), or a 5xx while the stored object may be served on error.
    fn refuse_unusable(
        &self,
        ctx: &RequestContext,
        publisher: &mut Publisher,
        stored: Option<&Arc<CachedObject>>,
        fetched: &Fetched,
    ) -> Option<Answer> {
        let status = fetched.head.status;
        if status == StatusCode::NOT_MODIFIED {
            // Only conditional fills are sent, and this 304 is not for what was stored.
            let error = RequestError::UpstreamBroken {
                upstream: self.upstream.name().to_string(),
                reason: "answered 304 to a request it could not have matched".into(),
            };
            publisher.publish(FillOutcome::Failed(error.clone()));
            return Some(Err(error));
        }
        if !is_error_status(status) {
            return None;
        }
        self.stale_in_place_of(
            ctx,
            publisher,
            stored,
            fetched,
            format!("answered {status}"),
        )
    }

    /// Serves the stored object in place of an upstream answer that failed for `reason`, when
    /// it may be served on error; the fill's followers hear that it failed.
    fn stale_in_place_of(
        &self,
        ctx: &RequestContext,
        publisher: &mut Publisher,
        stored: Option<&Arc<CachedObject>>,
        fetched: &Fetched,
        reason: String,
    ) -> Option<Answer> {
        let stale =
            stored.filter(|s| s.may_serve_on_error(&ctx.directives, fetched.response_time))?;
        let error = RequestError::UpstreamBroken {
            upstream: self.upstream.name().to_string(),
            reason,
        };
        publisher.publish(FillOutcome::Failed(error.clone()));
        Some(self.stale_or_error(ctx, Some(Arc::clone(stale)), error))
    }

    /// The tier above served its stale copy because its upstream failed: when this cache may
    /// serve its own copy on error, it does, as a single cache would (and stores nothing).
    fn own_stale_first(
        &self,
        ctx: &RequestContext,
        publisher: &mut Publisher,
        stored: Option<&Arc<CachedObject>>,
        fetched: &Fetched,
    ) -> Option<Answer> {
        if !TierEntry::of(&fetched.head.headers).is_some_and(|tier| tier.served_stale_on_error()) {
            return None;
        }
        let reason = "served its stale copy in place of a failed upstream".to_string();
        self.stale_in_place_of(ctx, publisher, stored, fetched, reason)
    }

    /// How long the answer may be stored, or why it may not be.
    /// A matching cache rule has its say (TTLs, `private`, `Set-Cookie`).
    fn decide_storable(
        &self,
        ctx: &RequestContext,
        fetched: &mut Fetched,
    ) -> Result<Duration, NotStorable> {
        let max_object = self.store.max_object_bytes();
        let head = &mut fetched.head;
        let lifetime = rules::storable_lifetime(
            ctx.rule.as_deref(),
            (&ctx.parts.headers, &ctx.directives),
            (head.status, &head.headers),
            &mut fetched.cc,
            fetched.response_time,
        )?;
        if rules::set_cookie_blocks(ctx.rule.as_deref(), &mut head.headers) {
            return Err(NotStorable::SetCookie);
        }
        match content_length(&head.headers) {
            Some(n) if n > max_object as u64 => Err(NotStorable::TooLarge),
            _ => Ok(lifetime),
        }
    }

    /// Stores the read answer for `lifetime` and answers from it.
    fn store_and_answer(
        &self,
        ctx: &RequestContext,
        publisher: &mut Publisher,
        read: Fetched<()>,
        bytes: Bytes,
        lifetime: Duration,
        fwd: &'static str,
    ) -> (Response<ResponseBody>, RequestOutcome) {
        let fwd_status = Some(read.head.status.as_u16());
        let length = bytes.len();
        let object = Arc::new(CachedObject {
            body: bytes,
            ..new_object(ctx, read, length, lifetime)
        });
        let stored = self.store.insert(ctx.key.clone(), Arc::clone(&object));
        if !publisher.is_leading() && stored {
            self.flights.forget(&ctx.key);
        }
        let response = self.answer_stored(ctx, publisher, &object, stored, (fwd, fwd_status));
        (response, RequestOutcome::Miss)
    }

    /// Tells the followers about the object and answers from it.
    fn answer_stored(
        &self,
        ctx: &RequestContext,
        publisher: &mut Publisher,
        object: &Arc<CachedObject>,
        stored: bool,
        (fwd, fwd_status): (&'static str, Option<u16>),
    ) -> Response<ResponseBody> {
        publisher.publish(FillOutcome::Stored(Arc::clone(object)));
        let status = CacheStatus {
            fwd_status,
            stored,
            ..CacheStatus::forwarded(fwd)
        };
        self.respond_from_cache(ctx, object, status, self.clock.now())
    }

    /// A 304 (or matching HEAD) confirmed the stored object: update its headers and freshness
    /// (RFC 9111 §3.2, §4.3.4) and answer from it.
    #[allow(clippy::too_many_arguments)]
    fn freshen(
        &self,
        ctx: &RequestContext,
        publisher: &mut Publisher,
        stale: &CachedObject,
        update: Update<'_>,
        (request_time, response_time): (SystemTime, SystemTime),
        fwd: &'static str,
        fwd_status: Option<u16>,
    ) -> (Response<ResponseBody>, RequestOutcome) {
        let merged = policy::freshen_headers(&stale.headers, update.headers);
        // CDN-targeted directives are not kept in the stored headers (clients never see them), so
        // the ones in force carry over unless the 304 sent new ones.
        let mut cc = if update.cc.from_cdn_field {
            update.cc.clone()
        } else if stale.cc.from_cdn_field {
            stale.cc.clone()
        } else {
            CacheControl::for_response(&merged)
        };
        let tags = update.tags.unwrap_or_else(|| stale.surrogate_keys.clone());
        let update = update.headers;
        let lifetime = rules::storable_lifetime(
            ctx.rule.as_deref(),
            (&ctx.parts.headers, &ctx.directives),
            (stale.status, &merged),
            &mut cc,
            response_time,
        );
        let object = Arc::new(CachedObject {
            status: stale.status,
            headers: stored_headers(&merged, &cc),
            body: stale.body.clone(),
            response_time,
            corrected_initial_age: AgeInputs::from_headers(update, request_time, response_time)
                .corrected_initial_age(),
            freshness_lifetime: lifetime.unwrap_or_default(),
            vary: stale.vary.clone(),
            cc,
            surrogate_keys: tags,
        });
        let stored = match lifetime {
            Ok(_) => self.store.insert(ctx.key.clone(), Arc::clone(&object)),
            Err(_) => {
                self.store.remove(&ctx.key);
                false
            }
        };
        let response = self.answer_stored(ctx, publisher, &object, stored, (fwd, fwd_status));
        (response, RequestOutcome::Revalidated)
    }

    /// A response that is not stored goes to the client as it streams in; followers fetch for
    /// themselves.
    fn pass_through(
        &self,
        ctx: &RequestContext,
        publisher: &mut Publisher,
        head: response::Parts,
        body: ResponseBody,
        reason: NotStorable,
        fwd: &'static str,
    ) -> (Response<ResponseBody>, RequestOutcome) {
        self.metrics.not_stored(reason.as_str());
        publisher.publish(FillOutcome::NotStorable);
        let status = CacheStatus {
            fwd_status: Some(head.status.as_u16()),
            detail: Some(reason.as_str()),
            ..CacheStatus::forwarded(fwd)
        };
        (
            self.streamed(ctx, head, body, &status),
            RequestOutcome::Miss,
        )
    }

    fn revalidated(&self, validating: bool, result: RevalidationResult) {
        if validating {
            self.metrics.revalidation(result);
        }
    }

    /// Reads a body to store it, up to the per-object bound; past the bound, hands back what was
    /// read and the rest of the stream so the client still gets the whole response.
    async fn read_bounded(
        &self,
        mut body: UpstreamResponseBody,
        expected: Option<u64>,
    ) -> Result<BodyRead, RequestError> {
        let max = self.store.max_object_bytes();
        let capacity = expected.map_or(0, |n| n.min(max as u64) as usize);
        let mut buffer = BytesMut::with_capacity(capacity);
        let idle = self.upstream.body_idle_timeout();
        while let Some(frame) = next_frame(&mut body, idle, self.upstream.name()).await? {
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
}

/// 5xx statuses that count as an upstream error for stale-if-error (RFC 5861 §4).
/// A response compressed without `Vary: Accept-Encoding` is stored as if it had it: the
/// encoding was chosen by the request's `Accept-Encoding`, and serving it to a client that
/// did not accept it would break that client (RFC 9110 §12.5.3).
fn vary_on_encoding(headers: &mut HeaderMap) {
    let encoded = headers
        .get_all(CONTENT_ENCODING)
        .iter()
        .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    if encoded {
        verge_cache::compress::vary_on_accept_encoding(headers);
    }
}

fn is_error_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 500 | 502 | 503 | 504)
}

/// The next frame of an upstream body, or its end; an error when none comes within `idle` or
/// the body breaks.
async fn next_frame(
    body: &mut UpstreamResponseBody,
    idle: Duration,
    upstream: &str,
) -> Result<Option<Frame<Bytes>>, RequestError> {
    match tokio::time::timeout(idle, body.frame()).await {
        Err(_) => Err(RequestError::UpstreamTimeout {
            upstream: upstream.to_string(),
            after: idle,
        }),
        Ok(None) => Ok(None),
        Ok(Some(Err(e))) => Err(RequestError::UpstreamBroken {
            upstream: upstream.to_string(),
            reason: format!("response body: {e}"),
        }),
        Ok(Some(Ok(frame))) => Ok(Some(frame)),
    }
}

/// The object a read answer of `length` bytes makes, its body still to be set.
fn new_object(
    ctx: &RequestContext,
    read: Fetched<()>,
    length: usize,
    lifetime: Duration,
) -> CachedObject {
    let Fetched {
        mut head,
        cc,
        tags,
        request_time,
        response_time,
        ..
    } = read;
    let corrected_initial_age =
        AgeInputs::from_headers(&head.headers, request_time, response_time).corrected_initial_age();
    head.headers
        .insert(CONTENT_LENGTH, HeaderValue::from(length));
    vary_on_encoding(&mut head.headers);
    CachedObject {
        status: head.status,
        vary: VaryKey::new(&head.headers, &ctx.parts.headers),
        headers: stored_headers(&head.headers, &cc),
        body: Bytes::new(),
        response_time,
        corrected_initial_age,
        freshness_lifetime: lifetime,
        cc,
        surrogate_keys: tags,
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

mod stored;
mod streamed;
