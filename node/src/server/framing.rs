//! Reads the HTTP/1.1 request heads of a connection as they pass to hyper, to find what hyper
//! hides from the service: a request with both `Content-Length` and `Transfer-Encoding`. Hyper
//! reads such a body as chunked and drops `Content-Length` (RFC 9112 §6.3), so the service
//! would never know; the node refuses it instead (400), since it is how request smuggling
//! starts.
//!
//! The reader follows each request's framing (head, then a sized or chunked body) to know where
//! the next head starts. Whatever it cannot follow with certainty (a head it cannot parse, an
//! HTTP/2 preface, an upgrade, a `CONNECT`) ends the watch for the rest of the connection: it
//! never guesses, so it can never take a body's bytes for a head.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Marks a request that carried both `Content-Length` and `Transfer-Encoding` (a request
/// extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AmbiguousLength;

/// Why such a request is refused, as clients are told (after `bad request: ` on the data plane).
pub const AMBIGUOUS_LENGTH: &str =
    "the request has both Content-Length and Transfer-Encoding; it is not accepted";

/// What the reader found, shared with the connection's service.
#[derive(Debug)]
pub(super) struct HeadWatch {
    /// Index (from 0) of the first head with both length fields; `u64::MAX`: none.
    first_ambiguous: AtomicU64,
    /// HTTP/1 requests handed to the service so far.
    served: AtomicU64,
}

impl HeadWatch {
    pub(super) fn new() -> Arc<HeadWatch> {
        Arc::new(HeadWatch {
            first_ambiguous: AtomicU64::new(u64::MAX),
            served: AtomicU64::new(0),
        })
    }

    /// Called for each HTTP/1 request in the order hyper hands them over (one at a time):
    /// whether this one had both length fields.
    pub(super) fn next_request_is_ambiguous(&self) -> bool {
        let index = self.served.fetch_add(1, Ordering::AcqRel);
        self.first_ambiguous.load(Ordering::Acquire) == index
    }
}

/// A connection's byte stream, read through a [`Framing`] tracker.
pub(super) struct Watched<S> {
    inner: S,
    framing: Framing,
    watch: Arc<HeadWatch>,
}

impl<S> Watched<S> {
    pub(super) fn new(inner: S, max_head_bytes: usize, watch: Arc<HeadWatch>) -> Watched<S> {
        Watched {
            inner,
            framing: Framing::new(max_head_bytes),
            watch,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &polled {
            if !this.framing.is_off() {
                if let Some(index) = this.framing.feed(&buf.filled()[before..]) {
                    this.watch
                        .first_ambiguous
                        .fetch_min(index, Ordering::AcqRel);
                }
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Most header fields a head may have and still be followed (hyper's own bound is 100).
const MAX_FIELDS: usize = 128;

/// Where in the request stream the next byte belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// A request head (possibly partly held in `pending`).
    Head,
    /// This many bytes of a sized body still to come.
    Sized(u64),
    /// A chunk-size line (possibly partly held in `pending`).
    ChunkSize,
    /// This many bytes of chunk data, then the CRLF that ends it (`2` more bytes).
    ChunkData(u64),
    /// Trailer lines after the last chunk, until an empty line.
    Trailers,
    /// Not followed any more for this connection.
    Off,
}

/// Follows the framing of a stream of HTTP/1.1 requests.
#[derive(Debug)]
pub(super) struct Framing {
    state: State,
    /// The unfinished head, chunk-size line or trailer line.
    pending: Vec<u8>,
    max_head_bytes: usize,
    /// Heads read so far.
    heads: u64,
}

impl Framing {
    pub(super) fn new(max_head_bytes: usize) -> Framing {
        Framing {
            state: State::Head,
            pending: Vec::new(),
            max_head_bytes,
            heads: 0,
        }
    }

    pub(super) fn is_off(&self) -> bool {
        self.state == State::Off
    }

    /// Reads the next bytes of the stream; returns the index of the first head among them that
    /// has both `Content-Length` and `Transfer-Encoding`.
    pub(super) fn feed(&mut self, mut data: &[u8]) -> Option<u64> {
        let mut found = None;
        while !data.is_empty() {
            match self.state {
                State::Off => return found,
                State::Sized(left) => {
                    let n = left.min(data.len() as u64);
                    data = &data[n as usize..];
                    self.state = if n == left {
                        State::Head
                    } else {
                        State::Sized(left - n)
                    };
                }
                State::ChunkData(left) => {
                    let n = left.min(data.len() as u64);
                    data = &data[n as usize..];
                    self.state = if n == left {
                        State::ChunkSize
                    } else {
                        State::ChunkData(left - n)
                    };
                }
                State::Head => match self.take(&mut data, parse_head) {
                    Some(Ok(head)) => {
                        if head.ambiguous {
                            found = found.or(Some(self.heads));
                        }
                        self.heads += 1;
                        self.state = head.next;
                    }
                    Some(Err(())) => self.state = State::Off,
                    None => {}
                },
                State::ChunkSize => match self.take(&mut data, parse_chunk_line) {
                    // The data, then its CRLF.
                    Some(Ok(0)) => self.state = State::Trailers,
                    Some(Ok(size)) => {
                        self.state = match size.checked_add(2) {
                            Some(total) => State::ChunkData(total),
                            None => State::Off,
                        }
                    }
                    Some(Err(())) => self.state = State::Off,
                    None => {}
                },
                State::Trailers => match self.take(&mut data, parse_line) {
                    Some(Ok(true)) => self.state = State::Head,
                    Some(Ok(false)) => {}
                    Some(Err(())) => self.state = State::Off,
                    None => {}
                },
            }
        }
        found
    }

    /// Parses one element from `pending` followed by `data`; consumes what it took from `data`.
    /// `None`: incomplete, everything held in `pending` (or the watch turned off at the bound).
    fn take<T>(
        &mut self,
        data: &mut &[u8],
        parse: fn(&[u8]) -> Parsed<T>,
    ) -> Option<Result<T, ()>> {
        if self.pending.is_empty() {
            return match parse(data) {
                Parsed::Done(used, value) => {
                    *data = &data[used..];
                    Some(Ok(value))
                }
                Parsed::Invalid => Some(Err(())),
                Parsed::Partial => {
                    self.hold(data);
                    None
                }
            };
        }
        let held = self.pending.len();
        self.pending.extend_from_slice(data);
        match parse(&self.pending) {
            Parsed::Done(used, value) => {
                *data = &data[used - held..];
                self.pending.clear();
                Some(Ok(value))
            }
            Parsed::Invalid => Some(Err(())),
            Parsed::Partial => {
                self.pending.truncate(held);
                self.hold(data);
                None
            }
        }
    }

    /// Keeps the start of an element for the next read, within the head bound.
    fn hold(&mut self, data: &mut &[u8]) {
        if self.pending.len() + data.len() > self.max_head_bytes {
            // Hyper refuses a head this large; nothing more to follow.
            self.state = State::Off;
            self.pending = Vec::new();
        } else {
            self.pending.extend_from_slice(data);
        }
        *data = &[];
    }
}

/// One parse step: done (bytes used, value), needs more bytes, or not valid.
enum Parsed<T> {
    Done(usize, T),
    Partial,
    Invalid,
}

/// What a head says about the rest of its request.
struct Head {
    ambiguous: bool,
    next: State,
}

fn parse_head(bytes: &[u8]) -> Parsed<Head> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut request = httparse::Request::new(&mut fields);
    let used = match request.parse(bytes) {
        Ok(httparse::Status::Complete(used)) => used,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Invalid,
    };
    if request.method == Some("CONNECT") {
        return Parsed::Invalid;
    }
    let mut chunked = None;
    let mut length: Option<u64> = None;
    let mut has_length = false;
    for field in request.headers.iter() {
        if field.name.eq_ignore_ascii_case("transfer-encoding") {
            // As hyper reads it: chunked when the last coding of the last field is.
            chunked = Some(
                std::str::from_utf8(field.value)
                    .ok()
                    .and_then(|v| v.rsplit(',').next())
                    .is_some_and(|coding| coding.trim().eq_ignore_ascii_case("chunked")),
            );
        } else if field.name.eq_ignore_ascii_case("content-length") {
            has_length = true;
            match parse_length(field.value) {
                Some(n) if length.is_none_or(|l| l == n) => length = Some(n),
                _ if chunked.is_some() => {}
                _ => return Parsed::Invalid,
            }
        } else if field.name.eq_ignore_ascii_case("upgrade") {
            return Parsed::Invalid;
        }
    }
    let next = match (chunked, length) {
        (Some(true), _) => State::ChunkSize,
        // Hyper refuses a transfer coding other than chunked last.
        (Some(false), _) => return Parsed::Invalid,
        (None, Some(0) | None) => State::Head,
        (None, Some(n)) => State::Sized(n),
    };
    Parsed::Done(
        used,
        Head {
            ambiguous: chunked.is_some() && has_length,
            next,
        },
    )
}

/// A `Content-Length` value: digits only.
fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

fn parse_chunk_line(bytes: &[u8]) -> Parsed<u64> {
    match httparse::parse_chunk_size(bytes) {
        Ok(httparse::Status::Complete((used, size))) => Parsed::Done(used, size),
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Err(_) => Parsed::Invalid,
    }
}

/// One trailer line; `true` for the empty line that ends the request.
fn parse_line(bytes: &[u8]) -> Parsed<bool> {
    match bytes.windows(2).position(|w| w == b"\r\n") {
        Some(end) => Parsed::Done(end + 2, end == 0),
        None => Parsed::Partial,
    }
}

#[cfg(test)]
mod tests;
