//! Byte ranges served from a stored full representation (RFC 9110 §14), as pure functions.
//!
//! [`plan`] reads a request's `Range` and `If-Range` against the stored headers and length and says
//! what to answer; [`render`] builds the 206 body and the headers that depend on it. The caller owns
//! the status code, the method check (ranges apply to GET only) and every other header; for a 416 it
//! takes `Content-Range` from [`unsatisfiable_content_range`].

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_TYPE, ETAG, LAST_MODIFIED};
use http::{HeaderMap, HeaderValue};

/// How many bytes a multipart/byteranges answer may exceed the full representation by. Past that
/// (overlapping ranges, or many tiny ones whose part headers outweigh their data) the Range is
/// ignored and the full representation sent, which RFC 9110 §14.2 allows: a request can then never
/// make Verge send more than one copy of the object plus this much.
pub const MULTIPART_ALLOWANCE: u64 = 1024;

/// Every boundary is `verge-` and 16 hex digits, so the size of a multipart body is known before
/// the boundary is chosen; this placeholder stands in for it when [`plan`] measures.
const PLACEHOLDER_BOUNDARY: &str = "verge-0000000000000000";

/// Boundaries tried before giving up on a multipart body (each must be absent from the parts; only
/// content crafted to contain the candidates exhausts them, and it then gets the full body).
const BOUNDARY_ATTEMPTS: u64 = 8;

/// What to answer to a request's Range header for a stored full representation of `len` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangePlan {
    /// No usable Range (absent, not `bytes=`, syntactically invalid, too many or amplifying ranges,
    /// or If-Range mismatch): send 200 with the full body.
    Full,
    /// One satisfiable range: 206 with Content-Range `bytes start-end/len`.
    Single(ByteRange),
    /// Several satisfiable ranges, in request order: 206 multipart/byteranges.
    Multiple(Vec<ByteRange>),
    /// No range satisfiable: 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// A satisfiable range of a representation; both ends are inclusive, so it is never empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    /// The number of bytes the range covers.
    pub fn size(&self) -> u64 {
        self.end.saturating_sub(self.start).saturating_add(1)
    }

    /// The `Content-Range` text for this range of a `complete`-byte representation.
    fn content_range(&self, complete: u64) -> String {
        format!("bytes {}-{}/{}", self.start, self.end, complete)
    }
}

/// The body and the headers of a 206 answer that depend on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialBody {
    pub body: Bytes,
    /// `Some` replaces the stored `Content-Type` (multipart); `None` keeps the stored one (single).
    pub content_type: Option<HeaderValue>,
    /// The response's `Content-Range`: `Some` for a single range; a multipart answer has none
    /// (each part carries its own).
    pub content_range: Option<HeaderValue>,
    pub content_length: u64,
}

/// Plans the answer to `range` (the request's only `Range` line; pass `None` when absent) for a
/// stored full representation of `len` bytes whose headers are `stored`.
///
/// `max_ranges` bounds the number of range-specs (range-amplification defence): a request with more
/// ranges than that, or with overlapping or many small ranges whose multipart answer would exceed
/// `len` + [`MULTIPART_ALLOWANCE`], is answered with the full representation. A present `if_range`
/// that does not match the stored validators also means the full representation (RFC 9110 §13.1.5).
pub fn plan(
    range: Option<&HeaderValue>,
    if_range: Option<&HeaderValue>,
    stored: &HeaderMap,
    len: u64,
    max_ranges: usize,
) -> RangePlan {
    let Some(range) = range else {
        return RangePlan::Full;
    };
    let Some(specs) = parse(range, max_ranges) else {
        return RangePlan::Full;
    };
    if if_range.is_some_and(|validator| !if_range_matches(validator, stored)) {
        return RangePlan::Full;
    }
    let mut ranges = Vec::with_capacity(specs.len());
    let mut selects_nothing = false;
    for spec in specs {
        match spec.select(len) {
            Selection::Bytes(range) => ranges.push(range),
            Selection::Nothing => selects_nothing = true,
            Selection::Unsatisfiable => {}
        }
    }
    match ranges.as_slice() {
        // A suffix of an empty representation is satisfiable but selects no byte, which a 206
        // cannot express: the whole (empty) representation is the answer.
        [] if selects_nothing => RangePlan::Full,
        [] => RangePlan::Unsatisfiable,
        [one] => RangePlan::Single(*one),
        _ => {
            let limit = len.saturating_add(MULTIPART_ALLOWANCE);
            let content_type = stored.get(CONTENT_TYPE).map(HeaderValue::as_bytes);
            match multipart_len(&ranges, len, content_type) {
                Some(size) if size <= limit => RangePlan::Multiple(ranges),
                _ => RangePlan::Full,
            }
        }
    }
}

/// Builds the 206 body and headers for `plan` over the stored full `body`: for a single range the
/// slice (no copy), its `Content-Range` and length; for several, a multipart/byteranges body whose
/// parts carry the stored `Content-Type` and their own `Content-Range` (RFC 9110 §14.6).
///
/// `None` for [`RangePlan::Full`] and [`RangePlan::Unsatisfiable`], and also when a range does not
/// fit `body` or no boundary absent from the parts was found: the caller then sends the full body.
pub fn render(plan: &RangePlan, body: &Bytes, stored: &HeaderMap) -> Option<PartialBody> {
    let complete = body.len() as u64;
    match plan {
        RangePlan::Full | RangePlan::Unsatisfiable => None,
        RangePlan::Single(range) => {
            let part = slice(body, *range)?;
            Some(PartialBody {
                content_length: part.len() as u64,
                body: part,
                content_type: None,
                content_range: Some(header_value(range.content_range(complete))?),
            })
        }
        RangePlan::Multiple(ranges) => {
            let parts = ranges
                .iter()
                .map(|range| slice(body, *range))
                .collect::<Option<Vec<_>>>()?;
            let boundary = choose_boundary(complete, &parts)?;
            let content_type = stored.get(CONTENT_TYPE).map(HeaderValue::as_bytes);
            let mut out = BytesMut::with_capacity(
                parts.iter().map(Bytes::len).sum::<usize>() + 128 * (parts.len() + 1),
            );
            for (index, (range, part)) in ranges.iter().zip(&parts).enumerate() {
                out.extend_from_slice(&part_head(
                    &boundary,
                    index == 0,
                    *range,
                    complete,
                    content_type,
                ));
                out.extend_from_slice(part);
            }
            out.extend_from_slice(closing_delimiter(&boundary).as_bytes());
            let body = out.freeze();
            Some(PartialBody {
                content_length: body.len() as u64,
                body,
                content_type: Some(header_value(format!(
                    "multipart/byteranges; boundary={boundary}"
                ))?),
                content_range: None,
            })
        }
    }
}

/// The `Content-Range` of a 416 answer: `bytes */len`. Always `Some`; the type only reflects that
/// building a header value is fallible in general.
pub fn unsatisfiable_content_range(len: u64) -> Option<HeaderValue> {
    header_value(format!("bytes */{len}"))
}

/// One range-spec as written, before the representation's length is known (RFC 9110 §14.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RangeSpec {
    /// `first-pos "-" [ last-pos ]`; `last >= first` once parsed.
    From { first: u64, last: Option<u64> },
    /// `"-" suffix-length`: the last that many bytes.
    Suffix(u64),
}

/// What a range-spec selects from a representation of known length.
enum Selection {
    Bytes(ByteRange),
    /// Satisfiable yet empty: a non-zero suffix of an empty representation.
    Nothing,
    Unsatisfiable,
}

impl RangeSpec {
    fn select(self, len: u64) -> Selection {
        let Some(last_byte) = len.checked_sub(1) else {
            return match self {
                RangeSpec::Suffix(n) if n > 0 => Selection::Nothing,
                _ => Selection::Unsatisfiable,
            };
        };
        match self {
            RangeSpec::From { first, .. } if first >= len => Selection::Unsatisfiable,
            RangeSpec::From { first, last } => Selection::Bytes(ByteRange {
                start: first,
                end: last.map_or(last_byte, |last| last.min(last_byte)),
            }),
            RangeSpec::Suffix(0) => Selection::Unsatisfiable,
            RangeSpec::Suffix(n) => Selection::Bytes(ByteRange {
                start: len.saturating_sub(n),
                end: last_byte,
            }),
        }
    }
}

/// Parses a `Range` value in the `bytes` unit (case-insensitive). `None` for another unit, invalid
/// syntax, an empty range set, or more than `max` range-specs. Optional whitespace around commas is
/// accepted, and empty list elements are skipped without counting (RFC 9110 §5.6.1).
fn parse(value: &HeaderValue, max: usize) -> Option<Vec<RangeSpec>> {
    let text = value.to_str().ok()?.trim_matches(is_ows);
    let (unit, set) = text.split_once('=')?;
    if !unit.eq_ignore_ascii_case("bytes") {
        return None;
    }
    let mut specs = Vec::new();
    for element in set.split(',') {
        let element = element.trim_matches(is_ows);
        if element.is_empty() {
            continue;
        }
        if specs.len() == max {
            return None;
        }
        specs.push(parse_spec(element)?);
    }
    if specs.is_empty() {
        None
    } else {
        Some(specs)
    }
}

fn parse_spec(spec: &str) -> Option<RangeSpec> {
    let (first, last) = spec.split_once('-')?;
    if first.is_empty() {
        return Some(RangeSpec::Suffix(digits(last)?));
    }
    let first = digits(first)?;
    let last = match last {
        "" => None,
        last => Some(digits(last)?),
    };
    if last.is_some_and(|last| last < first) {
        return None;
    }
    Some(RangeSpec::From { first, last })
}

/// `1*DIGIT` as a u64; `None` for anything else, including a sign and values that overflow.
fn digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Whether `If-Range` lets the Range apply (RFC 9110 §13.1.5): an entity-tag must be strong and
/// identical to the stored `ETag`; an HTTP-date must equal the stored `Last-Modified`.
fn if_range_matches(validator: &HeaderValue, stored: &HeaderMap) -> bool {
    let validator = validator.as_bytes().trim_ascii();
    if validator.starts_with(b"W/") {
        return false;
    }
    if validator.starts_with(b"\"") {
        return is_strong_etag(validator)
            && stored
                .get(ETAG)
                .is_some_and(|etag| etag.as_bytes().trim_ascii() == validator);
    }
    let date = |bytes: &[u8]| {
        std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| httpdate::parse_http_date(text.trim()).ok())
    };
    match (date(validator), stored.get(LAST_MODIFIED)) {
        (Some(asked), Some(modified)) => date(modified.as_bytes()) == Some(asked),
        _ => false,
    }
}

/// `DQUOTE *etagc DQUOTE`, where etagc is `%x21 / %x23-7E / obs-text`.
fn is_strong_etag(tag: &[u8]) -> bool {
    match tag {
        [b'"', inner @ .., b'"'] => inner
            .iter()
            .all(|&b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80),
        _ => false,
    }
}

/// The part of `body` that `range` covers, sharing its memory; `None` if it does not fit.
fn slice(body: &Bytes, range: ByteRange) -> Option<Bytes> {
    let start = usize::try_from(range.start).ok()?;
    let end = usize::try_from(range.end).ok()?;
    if start > end || end >= body.len() {
        return None;
    }
    Some(body.slice(start..=end))
}

/// The exact size of the multipart body [`render`] would build, or `None` if it overflows.
fn multipart_len(ranges: &[ByteRange], complete: u64, content_type: Option<&[u8]>) -> Option<u64> {
    let mut total = closing_delimiter(PLACEHOLDER_BOUNDARY).len() as u64;
    for (index, range) in ranges.iter().enumerate() {
        let head = part_head(
            PLACEHOLDER_BOUNDARY,
            index == 0,
            *range,
            complete,
            content_type,
        );
        total = total
            .checked_add(head.len() as u64)?
            .checked_add(range.size())?;
    }
    Some(total)
}

/// The delimiter and header section that precede one part's data (RFC 2046 §5.1.1: the first
/// delimiter starts the body, later ones start with the CRLF that ends the previous part).
fn part_head(
    boundary: &str,
    first: bool,
    range: ByteRange,
    complete: u64,
    content_type: Option<&[u8]>,
) -> Vec<u8> {
    let mut head = Vec::with_capacity(128);
    if !first {
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"--");
    head.extend_from_slice(boundary.as_bytes());
    head.extend_from_slice(b"\r\n");
    if let Some(content_type) = content_type {
        head.extend_from_slice(b"Content-Type: ");
        head.extend_from_slice(content_type);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"Content-Range: ");
    head.extend_from_slice(range.content_range(complete).as_bytes());
    head.extend_from_slice(b"\r\n\r\n");
    head
}

fn closing_delimiter(boundary: &str) -> String {
    format!("\r\n--{boundary}--\r\n")
}

/// The first candidate boundary that occurs in no part (RFC 2046 §5.1.1 requires it).
fn choose_boundary(complete: u64, parts: &[Bytes]) -> Option<String> {
    let seed = complete ^ (parts.len() as u64).rotate_left(32);
    (0..BOUNDARY_ATTEMPTS)
        .map(|attempt| boundary(seed, attempt))
        .find(|candidate| {
            !parts
                .iter()
                .any(|part| contains(part, candidate.as_bytes()))
        })
}

/// A deterministic, random-looking boundary of the placeholder's length.
fn boundary(seed: u64, attempt: u64) -> String {
    // splitmix64's finaliser: spreads nearby seeds over the whole range.
    let mut x = seed ^ attempt.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    format!("verge-{x:016x}")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty()
        || haystack
            .windows(needle.len())
            .any(|window| window.first() == needle.first() && window == needle)
}

fn header_value(text: String) -> Option<HeaderValue> {
    HeaderValue::try_from(text).ok()
}

#[cfg(test)]
mod tests;
