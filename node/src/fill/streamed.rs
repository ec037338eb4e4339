//! Fills that answer as they read: the client's first byte does not wait for the object's
//! last, at this tier or the one below it. The fill reads on whatever the client does (its
//! followers wait on it) and stores the object once the whole of it has come; an upstream that
//! fails part way ends the client's answer short and stores nothing.
//!
//! Only bodies longer than `cache.stream_above_bytes` (64 KiB unless set) stream: a shorter
//! one comes in a read or two anyway, and is read whole first, so that an upstream failing part
//! way through it still gets the client a clean 502.
//!
//! An object an edge compresses streams too once it is too large to compress on the request
//! that asks ([`INLINE_MAX_BYTES`]): such a first answer is the identity anyway, varying on
//! `Accept-Encoding`, and the compressed variant is made off the request path once the object
//! is stored, as for an answer from the cache.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, RANGE};
use http::{response, HeaderMap, Method, Response, StatusCode};
use verge_cache::{compress, CacheKey, CacheStore, CachedObject, FillOutcome, Flights};

use super::{content_length, new_object, next_frame, Fetched, Publisher};
use crate::body::{FillFeed, ResponseBody};
use crate::compress::{Compressor, INLINE_MAX_BYTES};
use crate::error::RequestError;
use crate::headers::CacheStatus;
use crate::metrics::{NodeMetrics, RequestOutcome};
use crate::pipeline::{CachePipeline, RequestContext};
use crate::upstream::{Upstream, UpstreamResponseBody};

/// An answer that may stream: its length, and whether an edge compresses it (off the request
/// path, once it is stored).
pub(super) struct Streamable {
    length: u64,
    compressed: bool,
}

impl<U: Upstream> CachePipeline<U> {
    /// An answer that may go to the client as the fill reads it: a 200 of known
    /// length over `cache.stream_above_bytes` that fits the store, for a GET answered with the
    /// whole of it as it is (no range, no 304, no compressed variant to make from it on the
    /// request), with no stored object that an upstream failing part way would have to be
    /// answered from instead.
    pub(super) fn streams_while_filling(
        &self,
        ctx: &RequestContext,
        head: &response::Parts,
        stored: bool,
    ) -> Option<Streamable> {
        let request = &ctx.parts.headers;
        let whole_object = ctx.parts.method == Method::GET
            && !ctx.head_only
            && [RANGE, IF_RANGE, IF_NONE_MATCH, IF_MODIFIED_SINCE]
                .iter()
                .all(|name| !request.contains_key(name));
        if stored || !whole_object || head.status != StatusCode::OK {
            return None;
        }
        let length = content_length(&head.headers)?;
        let fits = usize::try_from(length).is_ok_and(|n| n <= self.store.max_object_bytes());
        let compressed = self.compressor.applies(&head.headers, length as usize);
        let compressed_on_request = compressed && length <= INLINE_MAX_BYTES as u64;
        (fits && length > self.limits.stream_above && !compressed_on_request)
            .then_some(Streamable { length, compressed })
    }

    /// Answers with the body as the fill reads it, and stores the object once it is whole.
    pub(super) fn stream_and_store(
        &self,
        ctx: &RequestContext,
        publisher: &mut Publisher,
        fetched: Fetched,
        Streamable { length, compressed }: Streamable,
        lifetime: Duration,
        fwd: &'static str,
    ) -> (Response<ResponseBody>, RequestOutcome) {
        let fwd_status = Some(fetched.head.status.as_u16());
        let (read, body) = fetched.split_body();
        let object = new_object(ctx, read, length as usize, lifetime);
        let (feed, streamed) = ResponseBody::filling(length, self.limits.send_timeout);
        let status = CacheStatus {
            fwd_status,
            stored: true,
            ..CacheStatus::forwarded(fwd)
        };
        let mut response = self.respond_while_filling(&object, status, self.clock.now(), streamed);
        let compress = compressed.then(|| {
            compress::vary_on_accept_encoding(response.headers_mut());
            (self.compressor.clone(), ctx.parts.headers.clone())
        });
        let fill = StreamedFill {
            key: ctx.key.clone(),
            object,
            length: length as usize,
            publisher: Publisher(publisher.0.take()),
            store: self.store.clone(),
            flights: Arc::clone(&self.flights),
            metrics: self.metrics.clone(),
            upstream: self.upstream.name().to_string(),
            idle: self.upstream.body_idle_timeout(),
            compress,
        };
        // Counted from here until the task ends, with no gap after this fill's own count.
        self.metrics.fills_in_flight.inc();
        tokio::spawn(fill.run(body, feed));
        (response, RequestOutcome::Miss)
    }
}

/// A fill whose answer has gone to its client: the rest of it runs in a task of its own.
struct StreamedFill {
    key: CacheKey,
    /// The object to store, its body still to be read.
    object: CachedObject,
    length: usize,
    publisher: Publisher,
    store: CacheStore,
    flights: Arc<Flights<RequestError>>,
    metrics: NodeMetrics,
    upstream: String,
    idle: Duration,
    /// For an object an edge compresses: the compressor and the request's headers, to make the
    /// variant it asks for once the object is stored.
    compress: Option<(Compressor, HeaderMap)>,
}

impl StreamedFill {
    async fn run(mut self, mut body: UpstreamResponseBody, feed: FillFeed) {
        let metrics = self.metrics.clone();
        match self.read(&mut body, &feed).await {
            Ok(bytes) => {
                drop(body);
                self.store(bytes);
            }
            Err(error) => {
                tracing::info!(%error, key = %self.key, "upstream failed part way through a streamed answer");
                metrics.fills_cut_short.inc();
                feed.fail(Box::new(error.clone()));
                self.publisher.publish(FillOutcome::Failed(error));
            }
        }
        metrics.fills_in_flight.dec();
    }

    /// The whole body, each part handed to `feed` as it comes.
    async fn read(
        &self,
        body: &mut UpstreamResponseBody,
        feed: &FillFeed,
    ) -> Result<Bytes, RequestError> {
        let broken = |reason: String| RequestError::UpstreamBroken {
            upstream: self.upstream.clone(),
            reason,
        };
        let mut whole = BytesMut::with_capacity(self.length);
        while let Some(frame) = next_frame(body, self.idle, &self.upstream).await? {
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if whole.len() + data.len() > self.length {
                return Err(broken(format!(
                    "response body longer than its Content-Length {}",
                    self.length
                )));
            }
            whole.extend_from_slice(&data);
            feed.send(data);
        }
        if whole.len() < self.length {
            return Err(broken(format!(
                "response body ended after {} of its {} bytes",
                whole.len(),
                self.length
            )));
        }
        Ok(whole.freeze())
    }

    /// Stores the object and hands it to the fill's followers.
    fn store(mut self, body: Bytes) {
        let object = Arc::new(CachedObject {
            body,
            ..self.object
        });
        let stored = self.store.insert(self.key.clone(), Arc::clone(&object));
        if !self.publisher.is_leading() && stored {
            self.flights.forget(&self.key);
        }
        self.publisher
            .publish(FillOutcome::Stored(Arc::clone(&object)));
        if let Some((compressor, request)) = &self.compress {
            // Starts the variant off the request path (the object is over the inline bound).
            compressor.for_request(&self.key, request, &object);
        }
    }
}
