//! A client's request body on its way upstream. Bodies up to `server.request_body_buffer` are
//! read whole before an upstream connection is taken, so a slow or broken upload holds no
//! upstream slot and a malformed one is refused before anything is sent; larger bodies stream
//! once that much has arrived. Either way the body must keep arriving: no gap longer than
//! `request_body_timeout`, and on average at least `request_body_min_rate` bytes a second
//! beyond that allowance. Whatever goes wrong reading it is the client's fault
//! ([`ClientBodyError`]), and a streaming body tells the upstream so through
//! [`ClientBody::failure`], so that a broken upload is never counted against the upstream.
//!
//! What all bodies being read hold in memory together is bounded too
//! (`server.request_body_buffer_total`, a [`BodyBudget`]): once it is spent, a body streams on
//! from what it has read instead of buffering more, so many slow uploads cannot fill memory.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::CONTENT_LENGTH;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use prometheus::{IntCounter, IntGauge};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::error::ClientBodyError;

/// How request bodies are read, from `[server]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// Read whole up to this many bytes before going upstream.
    pub buffer: usize,
    /// Larger bodies are refused (413).
    pub max: u64,
    /// The longest gap between two parts of the body, and the allowance beyond `min_rate`.
    pub timeout: Duration,
    /// Bytes a second the body must average beyond `timeout`'s allowance; 0: no minimum.
    pub min_rate: u64,
    /// What all bodies being buffered may hold together ([`BodyBudget`]).
    pub total: u64,
}

impl std::error::Error for ClientBodyError {}

/// Where a streaming body records why it failed, for the upstream that sent it to read.
pub type BodyFailure = Arc<OnceLock<ClientBodyError>>;

/// The bytes every body being buffered may hold together, shared by a pipeline's requests;
/// `in_use` shows what they hold (`verge_request_body_buffered_bytes`), `spent` counts the
/// bodies that found it spent (`verge_request_body_over_budget_total`).
#[derive(Debug, Clone)]
pub struct BodyBudget {
    bytes: Arc<Semaphore>,
    in_use: IntGauge,
    spent: IntCounter,
}

/// A body's share of the [`BodyBudget`], given back when dropped.
#[derive(Debug)]
pub struct Held {
    permit: OwnedSemaphorePermit,
    in_use: IntGauge,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.in_use.sub(self.permit.num_permits() as i64);
    }
}

impl BodyBudget {
    pub fn new(bytes: u64, (in_use, spent): (IntGauge, IntCounter)) -> BodyBudget {
        let bytes = usize::try_from(bytes)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        BodyBudget {
            bytes: Arc::new(Semaphore::new(bytes)),
            in_use,
            spent,
        }
    }

    /// Takes `bytes` more into `held`; `false` when the budget has not that much left.
    fn take(&self, bytes: usize, held: &mut Option<Held>) -> bool {
        let permit = u32::try_from(bytes)
            .ok()
            .and_then(|n| Arc::clone(&self.bytes).try_acquire_many_owned(n).ok());
        let Some(permit) = permit else {
            self.spent.inc();
            return false;
        };
        let n = permit.num_permits();
        self.in_use.add(n as i64);
        match held {
            Some(held) => held.permit.merge(permit),
            None => {
                *held = Some(Held {
                    permit,
                    in_use: self.in_use.clone(),
                })
            }
        }
        true
    }
}

/// A request body as it is sent upstream.
pub enum ClientBody {
    /// Read whole (`None`: empty, or already sent), with its share of the budget.
    Buffered(Option<Bytes>, Option<Held>),
    /// What was read first, then the rest as it arrives.
    Streaming(Box<Streaming>),
}

/// A body larger than the buffer, streaming under the rate limits.
pub struct Streaming {
    prefix: Option<Bytes>,
    rest: Incoming,
    pace: Pace,
    timer: Pin<Box<Sleep>>,
    failure: BodyFailure,
    /// The budget the prefix holds, until the body is sent or dropped.
    _held: Option<Held>,
}

/// The body's progress against its limits.
#[derive(Debug, Clone, Copy)]
struct Pace {
    limits: BodyLimits,
    started: Instant,
    last: Instant,
    received: u64,
}

impl Pace {
    fn new(limits: BodyLimits) -> Pace {
        let now = Instant::now();
        Pace {
            limits,
            started: now,
            last: now,
            received: 0,
        }
    }

    /// Counts `bytes` more; refuses a body over the maximum.
    fn add(&mut self, bytes: usize) -> Result<(), ClientBodyError> {
        self.received = self.received.saturating_add(bytes as u64);
        self.last = Instant::now();
        if self.received > self.limits.max {
            return Err(ClientBodyError::TooLarge {
                limit: self.limits.max,
            });
        }
        Ok(())
    }

    /// When the body is too slow unless more arrives: a gap of `timeout`, or an average under
    /// `min_rate` once the `timeout` allowance is spent.
    fn deadline(&self) -> Instant {
        let gap = self.last + self.limits.timeout;
        if self.limits.min_rate == 0 {
            return gap;
        }
        let earned = Duration::from_secs_f64(self.received as f64 / self.limits.min_rate as f64);
        gap.min(self.started + self.limits.timeout + earned)
    }
}

impl ClientBody {
    /// Reads `body` (with its request's `headers`) up to the buffer: whole when it fits, else
    /// what arrived so far and the rest to stream — also when `budget` runs out. Bodies
    /// announced larger than the maximum are refused before a byte is read.
    pub async fn read(
        mut body: Incoming,
        headers: &HeaderMap,
        limits: BodyLimits,
        budget: &BodyBudget,
    ) -> Result<ClientBody, ClientBodyError> {
        if let Some(length) = declared_length(headers) {
            if length > limits.max {
                return Err(ClientBodyError::TooLarge { limit: limits.max });
            }
        }
        if body.is_end_stream() {
            return Ok(ClientBody::Buffered(None, None));
        }
        let mut pace = Pace::new(limits);
        let mut read = BytesMut::new();
        let mut held = None;
        loop {
            let frame = tokio::time::timeout_at(pace.deadline(), body.frame()).await;
            let mut over_budget = false;
            match frame {
                Err(_) => return Err(ClientBodyError::TooSlow),
                Ok(None) => return Ok(ClientBody::Buffered(Some(read.freeze()), held)),
                Ok(Some(Err(_))) => return Err(ClientBodyError::Malformed),
                Ok(Some(Ok(frame))) => {
                    // Trailers of a buffered body are not sent on: few origins read them.
                    if let Ok(data) = frame.into_data() {
                        pace.add(data.len())?;
                        over_budget = !budget.take(data.len(), &mut held);
                        read.extend_from_slice(&data);
                    }
                }
            }
            if body.is_end_stream() {
                return Ok(ClientBody::Buffered(Some(read.freeze()), held));
            }
            if read.len() >= limits.buffer || over_budget {
                let timer = Box::pin(tokio::time::sleep_until(pace.deadline()));
                return Ok(ClientBody::Streaming(Box::new(Streaming {
                    prefix: Some(read.freeze()),
                    rest: body,
                    pace,
                    timer,
                    failure: BodyFailure::default(),
                    _held: held,
                })));
            }
        }
    }

    /// Where a streaming body records its failure; `None` for a buffered one (it cannot fail).
    pub fn failure(&self) -> Option<BodyFailure> {
        match self {
            ClientBody::Buffered(..) => None,
            ClientBody::Streaming(s) => Some(Arc::clone(&s.failure)),
        }
    }
}

/// The request's `Content-Length`, when it has one valid value.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

impl Streaming {
    fn fail(
        &mut self,
        error: ClientBodyError,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        let _ = self.failure.set(error);
        Poll::Ready(Some(Err(error)))
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        let streaming = match self.get_mut() {
            ClientBody::Buffered(bytes, _) => {
                return Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b))));
            }
            ClientBody::Streaming(streaming) => streaming,
        };
        if let Some(prefix) = streaming.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        if streaming.failure.get().is_some() {
            return Poll::Ready(None);
        }
        match Pin::new(&mut streaming.rest).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if let Err(error) = streaming.pace.add(data.len()) {
                        return streaming.fail(error);
                    }
                }
                let deadline = streaming.pace.deadline();
                streaming.timer.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(_))) => streaming.fail(ClientBodyError::Malformed),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match streaming.timer.as_mut().poll(cx) {
                Poll::Ready(()) => streaming.fail(ClientBodyError::TooSlow),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Buffered(bytes, _) => bytes.is_none(),
            ClientBody::Streaming(s) => s.prefix.is_none() && s.rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Buffered(bytes, _) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            ClientBody::Streaming(s) => {
                let prefix = s.prefix.as_ref().map_or(0, |b| b.len() as u64);
                let rest = s.rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + prefix);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + prefix);
                }
                hint
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> BodyLimits {
        BodyLimits {
            buffer: 1024,
            max: 1 << 20,
            timeout: Duration::from_secs(10),
            min_rate: 1000,
            total: 1 << 20,
        }
    }

    #[test]
    fn the_deadline_is_the_gap_or_the_average_whichever_comes_first() {
        let mut pace = Pace::new(limits());
        let start = pace.started;
        assert_eq!(pace.deadline(), start + Duration::from_secs(10));
        // 5,000 bytes at once earn five seconds beyond the allowance, but a gap of ten
        // seconds from the last byte still ends it.
        pace.add(5_000).unwrap();
        assert_eq!(pace.deadline(), pace.last + Duration::from_secs(10));
        pace.last = start + Duration::from_secs(8);
        assert_eq!(pace.deadline(), start + Duration::from_secs(15));
        let no_rate = Pace {
            limits: BodyLimits {
                min_rate: 0,
                ..limits()
            },
            ..pace
        };
        assert_eq!(no_rate.deadline(), no_rate.last + Duration::from_secs(10));
    }

    #[test]
    fn the_budget_is_shared_and_given_back() {
        let in_use = IntGauge::new("in_use", "bytes held").unwrap();
        let spent = IntCounter::new("spent", "budget spent").unwrap();
        let budget = BodyBudget::new(100, (in_use.clone(), spent.clone()));
        let (mut a, mut b) = (None, None);
        assert!(budget.take(60, &mut a));
        assert!(budget.take(30, &mut a));
        assert!(!budget.take(20, &mut b), "only 10 left");
        assert_eq!(spent.get(), 1);
        assert!(budget.take(10, &mut b));
        assert_eq!(in_use.get(), 100);
        drop(a);
        assert_eq!(in_use.get(), 10);
        assert!(budget.take(90, &mut b), "a's 90 came back");
        drop(b);
        assert_eq!(in_use.get(), 0);
    }

    #[test]
    fn a_body_over_the_maximum_is_refused_as_it_arrives() {
        let mut pace = Pace::new(BodyLimits {
            max: 10,
            ..limits()
        });
        assert!(pace.add(10).is_ok());
        assert_eq!(pace.add(1), Err(ClientBodyError::TooLarge { limit: 10 }));
    }
}
