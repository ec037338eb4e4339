//! A client's request body on its way upstream. Bodies up to `server.request_body_buffer` are
//! read whole before an upstream connection is taken, so a slow or broken upload holds no
//! upstream slot and a malformed one is refused before anything is sent; larger bodies stream
//! once that much has arrived. Either way the body must keep arriving: no gap longer than
//! `request_body_timeout`, and on average at least `request_body_min_rate` bytes a second
//! beyond that allowance. Whatever goes wrong reading it is the client's fault
//! ([`ClientBodyError`]), and a streaming body tells the upstream so through
//! [`ClientBody::failure`], so that a broken upload is never counted against the upstream.

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
}

impl std::error::Error for ClientBodyError {}

/// Where a streaming body records why it failed, for the upstream that sent it to read.
pub type BodyFailure = Arc<OnceLock<ClientBodyError>>;

/// A request body as it is sent upstream.
pub enum ClientBody {
    /// Read whole (`None`: empty, or already sent).
    Buffered(Option<Bytes>),
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
    /// what arrived so far and the rest to stream. Bodies announced larger than the maximum
    /// are refused before a byte is read.
    pub async fn read(
        mut body: Incoming,
        headers: &HeaderMap,
        limits: BodyLimits,
    ) -> Result<ClientBody, ClientBodyError> {
        if let Some(length) = declared_length(headers) {
            if length > limits.max {
                return Err(ClientBodyError::TooLarge { limit: limits.max });
            }
        }
        if body.is_end_stream() {
            return Ok(ClientBody::Buffered(None));
        }
        let mut pace = Pace::new(limits);
        let mut read = BytesMut::new();
        loop {
            let frame = tokio::time::timeout_at(pace.deadline(), body.frame()).await;
            match frame {
                Err(_) => return Err(ClientBodyError::TooSlow),
                Ok(None) => return Ok(ClientBody::Buffered(Some(read.freeze()))),
                Ok(Some(Err(_))) => return Err(ClientBodyError::Malformed),
                Ok(Some(Ok(frame))) => {
                    // Trailers of a buffered body are not sent on: few origins read them.
                    if let Ok(data) = frame.into_data() {
                        pace.add(data.len())?;
                        read.extend_from_slice(&data);
                    }
                }
            }
            if body.is_end_stream() {
                return Ok(ClientBody::Buffered(Some(read.freeze())));
            }
            if read.len() >= limits.buffer {
                let timer = Box::pin(tokio::time::sleep_until(pace.deadline()));
                return Ok(ClientBody::Streaming(Box::new(Streaming {
                    prefix: Some(read.freeze()),
                    rest: body,
                    pace,
                    timer,
                    failure: BodyFailure::default(),
                })));
            }
        }
    }

    /// Where a streaming body records its failure; `None` for a buffered one (it cannot fail).
    pub fn failure(&self) -> Option<BodyFailure> {
        match self {
            ClientBody::Buffered(_) => None,
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
            ClientBody::Buffered(bytes) => {
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
            ClientBody::Buffered(bytes) => bytes.is_none(),
            ClientBody::Streaming(s) => s.prefix.is_none() && s.rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Buffered(bytes) => {
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
    fn a_body_over_the_maximum_is_refused_as_it_arrives() {
        let mut pace = Pace::new(BodyLimits {
            max: 10,
            ..limits()
        });
        assert!(pace.add(10).is_ok());
        assert_eq!(pace.add(1), Err(ClientBodyError::TooLarge { limit: 10 }));
    }
}
