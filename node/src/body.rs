//! The body of every response a node sends: a buffer (from cache or an error), or an upstream
//! body streamed through, possibly after a prefix that was read while deciding to store it;
//! with an access log, either of them counting what it sends and writing the request's line
//! when it ends or is dropped (the client went away).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::access_log::OpenLine;
use crate::upstream::UpstreamResponseBody;

pub enum ResponseBody {
    Full(Option<Bytes>),
    Stream {
        prefix: Option<Bytes>,
        rest: UpstreamResponseBody,
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

    pub fn stream(prefix: Bytes, rest: UpstreamResponseBody) -> ResponseBody {
        ResponseBody::Stream {
            prefix: (!prefix.is_empty()).then_some(prefix),
            rest,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ResponseBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ResponseBody::Stream { prefix, rest } => {
                if let Some(p) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(p))));
                }
                Pin::new(rest).poll_frame(cx)
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
            ResponseBody::Logged(logged) => logged.inner.size_hint(),
        }
    }
}
