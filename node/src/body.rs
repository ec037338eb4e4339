//! The body of every response a node sends: a buffer (from cache or an error), or an upstream
//! body streamed through, possibly after a prefix that was read while deciding to store it;
//! with an access log, either of them counting what it sends and writing the request's line
//! when it ends or is dropped (the client went away).
//!
//! An upstream body streams through a relay task and a small channel: when the client stops
//! taking the body for `server.send_timeout`, the relay gives up and drops the upstream body,
//! so a client that does not read never holds an upstream connection for longer.
//!
//! A body being stored comes from its fill ([`ResponseBody::filling`]): the fill reads the
//! upstream at its own pace (its followers wait on it, not on this client) and hands each part
//! over as it reads it, or ends the body with an error when the upstream fails part way.

use std::pin::Pin;
use std::task::{Context, Poll};

use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::SendTimeoutError;

use crate::access_log::OpenLine;
use crate::upstream::UpstreamResponseBody;

/// Why a body ended before all of it was sent; the server then closes the connection, so the
/// client sees a short answer, never a complete-looking one.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

pub enum ResponseBody {
    Full(Option<Bytes>),
    Stream {
        prefix: Option<Bytes>,
        rest: UpstreamResponseBody,
    },
    /// An upstream body relayed by a task of its own ([`ResponseBody::stream`]).
    Relayed {
        frames: mpsc::Receiver<Result<Frame<Bytes>, BodyError>>,
        hint: SizeHint,
        done: bool,
    },
    /// A body handed over by the fill that stores it ([`ResponseBody::filling`]).
    Filling {
        parts: mpsc::UnboundedReceiver<Result<Bytes, BodyError>>,
        /// Bytes still to come.
        remaining: u64,
        done: bool,
    },
    /// A body whose request has an access log line.
    Logged(Box<LoggedBody>),
}

/// A body and the access log line it completes.
pub struct LoggedBody {
    inner: ResponseBody,
    line: OpenLine,
}

impl ResponseBody {
    pub fn empty() -> ResponseBody {
        ResponseBody::Full(None)
    }

    pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
        let bytes = bytes.into();
        ResponseBody::Full((!bytes.is_empty()).then_some(bytes))
    }

    /// `body`, sending `line` once it has ended or is dropped.
    pub(crate) fn logged(body: ResponseBody, line: OpenLine) -> ResponseBody {
        ResponseBody::Logged(Box::new(LoggedBody { inner: body, line }))
    }

    /// `prefix`, then `rest` as it arrives, relayed by a task that drops `rest` (and so frees
    /// its upstream connection) once the client has not taken a part for `send_timeout`.
    pub fn stream(
        prefix: Bytes,
        rest: UpstreamResponseBody,
        send_timeout: Duration,
    ) -> ResponseBody {
        let direct = ResponseBody::Stream {
            prefix: (!prefix.is_empty()).then_some(prefix),
            rest,
        };
        ResponseBody::relayed(direct, send_timeout)
    }

    /// `direct` relayed by a task that gives up once the client has not taken a part for
    /// `send_timeout`.
    fn relayed(direct: ResponseBody, send_timeout: Duration) -> ResponseBody {
        let hint = direct.size_hint();
        if direct.is_end_stream() {
            return direct;
        }
        let (sender, frames) = mpsc::channel(RELAY_FRAMES);
        tokio::spawn(relay(direct, sender, send_timeout));
        ResponseBody::Relayed {
            frames,
            hint,
            done: false,
        }
    }

    /// A body of `length` bytes that a fill hands over as it reads them, through the returned
    /// [`FillFeed`]. The fill never waits for the client: what waits for a slow client is
    /// bounded by the object's size, and dropped (the answer ends short) once the client has
    /// not taken a part for `send_timeout`.
    pub(crate) fn filling(length: u64, send_timeout: Duration) -> (FillFeed, ResponseBody) {
        let (sender, parts) = mpsc::unbounded_channel();
        let direct = ResponseBody::Filling {
            parts,
            remaining: length,
            done: length == 0,
        };
        (
            FillFeed(sender),
            ResponseBody::relayed(direct, send_timeout),
        )
    }
}

/// The fill's end of a [`ResponseBody::filling`] body. Sending to a client that went away does
/// nothing: the fill goes on for its followers.
pub(crate) struct FillFeed(mpsc::UnboundedSender<Result<Bytes, BodyError>>);

impl FillFeed {
    pub(crate) fn send(&self, part: Bytes) {
        let _ = self.0.send(Ok(part));
    }

    /// Ends the body short with `error`.
    pub(crate) fn fail(self, error: BodyError) {
        let _ = self.0.send(Err(error));
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ResponseBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ResponseBody::Stream { prefix, rest } => {
                if let Some(p) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(p))));
                }
                Pin::new(rest)
                    .poll_frame(cx)
                    .map(|frame| frame.map(|f| f.map_err(BodyError::from)))
            }
            ResponseBody::Filling {
                parts,
                remaining,
                done,
            } => {
                if *done {
                    return Poll::Ready(None);
                }
                match parts.poll_recv(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Some(Ok(part))) => {
                        *remaining = remaining.saturating_sub(part.len() as u64);
                        *done = *remaining == 0;
                        Poll::Ready(Some(Ok(Frame::data(part))))
                    }
                    Poll::Ready(Some(Err(error))) => {
                        *done = true;
                        Poll::Ready(Some(Err(error)))
                    }
                    // The fill went away without finishing (its task ended): never a
                    // complete-looking answer.
                    Poll::Ready(None) => {
                        *done = true;
                        Poll::Ready(Some(Err("the fill ended before the body did".into())))
                    }
                }
            }
            ResponseBody::Relayed { frames, done, .. } => {
                let polled = frames.poll_recv(cx);
                if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
                    *done = true;
                }
                polled
            }
            ResponseBody::Logged(logged) => {
                let polled = Pin::new(&mut logged.inner).poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(data) = frame.data_ref() {
                            logged.line.sent(data.len());
                        }
                        if logged.inner.is_end_stream() {
                            logged.line.finish();
                        }
                    }
                    Poll::Ready(None) | Poll::Ready(Some(Err(_))) => logged.line.finish(),
                    Poll::Pending => {}
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Full(bytes) => bytes.is_none(),
            ResponseBody::Stream { prefix, rest } => prefix.is_none() && rest.is_end_stream(),
            ResponseBody::Relayed { done, .. } | ResponseBody::Filling { done, .. } => *done,
            ResponseBody::Logged(logged) => logged.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            ResponseBody::Stream { prefix, rest } => {
                let extra = prefix.as_ref().map_or(0, |b| b.len() as u64);
                let inner = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower() + extra);
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper + extra);
                }
                hint
            }
            ResponseBody::Relayed { hint, .. } => *hint,
            ResponseBody::Filling { remaining, .. } => SizeHint::with_exact(*remaining),
            ResponseBody::Logged(logged) => logged.inner.size_hint(),
        }
    }
}

/// Frames a relay may hold ahead of its client.
const RELAY_FRAMES: usize = 2;

/// Moves `body`'s frames to `sender` until the body ends, the client goes away, or the client
/// takes no frame for `send_timeout`.
async fn relay(
    mut body: ResponseBody,
    sender: mpsc::Sender<Result<Frame<Bytes>, BodyError>>,
    send_timeout: Duration,
) {
    while let Some(frame) = body.frame().await {
        let failed = frame.is_err();
        match sender.send_timeout(frame, send_timeout).await {
            Ok(()) => {}
            Err(SendTimeoutError::Timeout(_)) => {
                tracing::debug!(?send_timeout, "client stopped reading; response abandoned");
                return;
            }
            Err(SendTimeoutError::Closed(_)) => return,
        }
        if failed {
            return;
        }
    }
}
