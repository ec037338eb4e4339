//! One access log line: what a request did ([`Record`], plain data captured on the request
//! path) and its text in JSON or the combined log format, written off the request path by the
//! writer. Every value a client or an upstream chose is escaped, so no value can end a line or
//! a field early.

use std::cell::Cell;
use std::io::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::HeaderValue;
use http::Method;
use verge_config::AccessLogFormat;

/// What the upstream did for a request that went there.
#[derive(Debug, Clone)]
pub struct UpstreamSeen {
    /// The shield id or origin server that answered; `None`: no answer (a failure).
    pub answered_by: Option<std::sync::Arc<str>>,
    /// The status it answered with.
    pub status: Option<u16>,
    /// From sending the request to its response head (the first upstream byte).
    pub first_byte: Duration,
}

/// What a line says that the request itself brought.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestFields<'a> {
    pub host: Option<&'a [u8]>,
    /// The request target's path and query.
    pub path: &'a [u8],
    pub request_id: &'a [u8],
    pub referer: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
}

/// [`RequestFields`] copied out of the request head into one allocation: a record holds none
/// of the connection's buffers, which would otherwise stay pinned until the writer's next
/// round and keep the connection from reusing them.
#[derive(Debug, Clone, Default)]
pub struct RequestText {
    bytes: Box<[u8]>,
    /// Where each field ends, in the order of [`RequestFields`].
    ends: [usize; 5],
    /// Which of the optional fields (host, referer, user agent) are there.
    present: [bool; 3],
}

impl RequestText {
    pub fn new(fields: RequestFields<'_>) -> RequestText {
        let parts = [
            fields.host.unwrap_or_default(),
            fields.path,
            fields.request_id,
            fields.referer.unwrap_or_default(),
            fields.user_agent.unwrap_or_default(),
        ];
        let mut bytes = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
        let mut ends = [0; 5];
        for (end, part) in ends.iter_mut().zip(parts) {
            bytes.extend_from_slice(part);
            *end = bytes.len();
        }
        RequestText {
            bytes: bytes.into_boxed_slice(),
            ends,
            present: [
                fields.host.is_some(),
                fields.referer.is_some(),
                fields.user_agent.is_some(),
            ],
        }
    }

    pub fn fields(&self) -> RequestFields<'_> {
        let part = |i: usize| {
            let start = if i == 0 { 0 } else { self.ends[i - 1] };
            &self.bytes[start..self.ends[i]]
        };
        RequestFields {
            host: self.present[0].then(|| part(0)),
            path: part(1),
            request_id: part(2),
            referer: self.present[1].then(|| part(3)),
            user_agent: self.present[2].then(|| part(4)),
        }
    }
}

/// Everything one line says about one request.
#[derive(Debug, Clone)]
pub struct Record {
    pub time: SystemTime,
    pub client: SocketAddr,
    pub method: Method,
    pub request: RequestText,
    pub status: u16,
    /// Body bytes handed to the connection for this response.
    pub bytes_sent: u64,
    /// From the request's arrival until its body ended or the client went away.
    pub duration: Duration,
    /// How the node answered (`hit`, `miss`, …): [`crate::metrics::RequestOutcome::as_str`].
    pub outcome: &'static str,
    /// The response's `Cache-Status`, whose last entry is this node's.
    pub cache_status: Option<HeaderValue>,
    pub upstream: Option<UpstreamSeen>,
    /// `TLSv1.3`, `TLSv1.2`; `None`: clear text.
    pub tls: Option<&'static str>,
    /// `h1` or `h2`.
    pub protocol: &'static str,
}

/// Who writes the lines: the same for every line of a node.
#[derive(Debug, Clone)]
pub struct LineContext {
    pub format: AccessLogFormat,
    pub node_id: String,
    pub region: String,
    /// The second last written and its text in `format`: lines come in bursts within one
    /// second, which is then dated once.
    second: Cell<Option<(u64, Second)>>,
}

/// A second's text: `2024-05-01T12:00:00` or `01/May/2024:12:00:00 +0000`.
type Second = ([u8; 26], usize);

impl LineContext {
    pub fn new(format: AccessLogFormat, node_id: &str, region: &str) -> LineContext {
        LineContext {
            format,
            node_id: node_id.to_string(),
            region: region.to_string(),
            second: Cell::new(None),
        }
    }

    /// `time` in this context's format: the second from the last line's when it is the same.
    fn write_time(&self, time: SystemTime, out: &mut Vec<u8>) {
        let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        let (bytes, len) = match self.second.get() {
            Some((cached, text)) if cached == secs => text,
            _ => {
                let mut text = Vec::with_capacity(26);
                let whole = UNIX_EPOCH + Duration::from_secs(secs);
                match self.format {
                    AccessLogFormat::Json => rfc3339_second(whole, &mut text),
                    AccessLogFormat::Combined => clf_time(whole, &mut text),
                }
                let mut bytes = [0u8; 26];
                let len = text.len().min(26);
                bytes[..len].copy_from_slice(&text[..len]);
                self.second.set(Some((secs, (bytes, len))));
                (bytes, len)
            }
        };
        out.extend_from_slice(&bytes[..len]);
        if self.format == AccessLogFormat::Json {
            out.push(b'.');
            three_digits(out, since.subsec_millis());
            out.push(b'Z');
        }
    }
}

impl Record {
    /// This node's own `Cache-Status` entry: the last one (each tier adds its own after the
    /// entries of the tiers before it).
    pub fn own_cache_status(&self) -> Option<&[u8]> {
        let value = self.cache_status.as_ref()?.as_bytes();
        let last = value.rsplit(|&b| b == b',').next().unwrap_or(value);
        Some(trim(last))
    }

    /// Appends this record's line, newline included, to `out`.
    pub fn write_line(&self, context: &LineContext, out: &mut Vec<u8>) {
        match context.format {
            AccessLogFormat::Json => self.write_json(context, out),
            AccessLogFormat::Combined => self.write_combined(context, out),
        }
        out.push(b'\n');
    }

    fn write_json(&self, context: &LineContext, out: &mut Vec<u8>) {
        let request = self.request.fields();
        out.extend_from_slice(b"{\"time\":\"");
        context.write_time(self.time, out);
        out.extend_from_slice(b"\",\"client\":\"");
        socket_addr(out, self.client);
        let fields: [(&str, Option<&[u8]>); 4] = [
            ("method", Some(self.method.as_str().as_bytes())),
            ("host", request.host),
            ("path", Some(request.path)),
            ("request_id", Some(request.request_id)),
        ];
        out.push(b'"');
        for (name, value) in fields {
            json_field(out, name, value);
        }
        out.extend_from_slice(b",\"status\":");
        number(out, self.status);
        out.extend_from_slice(b",\"bytes_sent\":");
        number(out, self.bytes_sent);
        out.extend_from_slice(b",\"duration_ms\":");
        millis(out, self.duration);
        json_field(out, "outcome", Some(self.outcome.as_bytes()));
        json_field(out, "cache_status", self.own_cache_status());
        let upstream = self.upstream.as_ref();
        json_field(
            out,
            "upstream",
            upstream.and_then(|u| u.answered_by.as_deref().map(str::as_bytes)),
        );
        match upstream.and_then(|u| u.status) {
            Some(status) => {
                out.extend_from_slice(b",\"upstream_status\":");
                number(out, status);
            }
            None => out.extend_from_slice(b",\"upstream_status\":null"),
        }
        match upstream {
            Some(u) => {
                out.extend_from_slice(b",\"upstream_first_byte_ms\":");
                millis(out, u.first_byte);
            }
            None => out.extend_from_slice(b",\"upstream_first_byte_ms\":null"),
        }
        json_field(out, "node", Some(context.node_id.as_bytes()));
        json_field(out, "region", Some(context.region.as_bytes()));
        json_field(out, "tls", self.tls.map(str::as_bytes));
        json_field(out, "protocol", Some(self.protocol.as_bytes()));
        json_field(out, "referer", request.referer);
        json_field(out, "user_agent", request.user_agent);
        out.push(b'}');
    }

    /// `client - - [time] "request" status bytes "referer" "user-agent"`, then Verge's own
    /// fields as `key="value"` (nginx's `combined` plus extras, as log tools expect).
    fn write_combined(&self, context: &LineContext, out: &mut Vec<u8>) {
        let request = self.request.fields();
        let _ = write!(out, "{}", self.client.ip());
        out.extend_from_slice(b" - - [");
        context.write_time(self.time, out);
        out.extend_from_slice(b"] \"");
        quoted_inner(out, self.method.as_str().as_bytes());
        out.push(b' ');
        quoted_inner(out, request.path);
        out.extend_from_slice(if self.protocol == "h2" {
            b" HTTP/2.0\" "
        } else {
            b" HTTP/1.1\" "
        });
        let _ = write!(out, "{} {} ", self.status, self.bytes_sent);
        quoted(out, request.referer);
        out.push(b' ');
        quoted(out, request.user_agent);
        let upstream = self.upstream.as_ref();
        let status = upstream.and_then(|u| u.status).map(|s| s.to_string());
        let first_byte = upstream.map(|u| Millis(u.first_byte).to_string());
        let duration = Millis(self.duration).to_string();
        let extras: [(&str, Option<&[u8]>); 12] = [
            ("host", request.host),
            ("request_id", Some(request.request_id)),
            ("duration_ms", Some(duration.as_bytes())),
            ("outcome", Some(self.outcome.as_bytes())),
            ("cache_status", self.own_cache_status()),
            (
                "upstream",
                upstream.and_then(|u| u.answered_by.as_deref().map(str::as_bytes)),
            ),
            ("upstream_status", status.as_deref().map(str::as_bytes)),
            (
                "upstream_first_byte_ms",
                first_byte.as_deref().map(str::as_bytes),
            ),
            ("node", Some(context.node_id.as_bytes())),
            ("region", Some(context.region.as_bytes())),
            ("tls", self.tls.map(str::as_bytes)),
            ("protocol", Some(self.protocol.as_bytes())),
        ];
        for (name, value) in extras {
            out.push(b' ');
            out.extend_from_slice(name.as_bytes());
            out.push(b'=');
            quoted(out, value);
        }
    }
}

/// Milliseconds with three decimals (`12.345`), written from whole microseconds.
struct Millis(Duration);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let micros = self.0.as_micros();
        write!(f, "{}.{:03}", micros / 1000, micros % 1000)
    }
}

/// [`Millis`] appended to `out`.
fn millis(out: &mut Vec<u8>, duration: Duration) {
    let micros = duration.as_micros();
    number(out, micros / 1000);
    out.push(b'.');
    three_digits(out, (micros % 1000) as u32);
}

fn number(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// `n` (below 1000) as three digits.
fn three_digits(out: &mut Vec<u8>, n: u32) {
    let n = n.min(999);
    out.extend_from_slice(&[
        b'0' + (n / 100) as u8,
        b'0' + (n / 10 % 10) as u8,
        b'0' + (n % 10) as u8,
    ]);
}

/// `127.0.0.1:40000`, `[::1]:40000`: as `SocketAddr` displays itself.
fn socket_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            let [a, b, c, d] = v4.ip().octets();
            for (i, octet) in [a, b, c, d].into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                number(out, octet);
            }
            out.push(b':');
            number(out, v4.port());
        }
        SocketAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &bytes[start..end]
}

/// `,"name":"value"` with the value JSON-escaped, or `,"name":null`.
fn json_field(out: &mut Vec<u8>, name: &str, value: Option<&[u8]>) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
    match value {
        Some(value) => json_string(out, value),
        None => out.extend_from_slice(b"null"),
    }
}

/// A JSON string of `value` (bytes that are not UTF-8 become U+FFFD): quotes, backslashes and
/// every control character escaped, so the string never holds a raw line break.
pub fn json_string(out: &mut Vec<u8>, value: &[u8]) {
    out.push(b'"');
    // The common case, visible ASCII with nothing to escape, is copied whole.
    if value
        .iter()
        .all(|&b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\')
    {
        out.extend_from_slice(value);
        out.push(b'"');
        return;
    }
    for ch in String::from_utf8_lossy(value).chars() {
        match ch {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// `"value"`, escaped as [`quoted_inner`], or `"-"` for no value.
fn quoted(out: &mut Vec<u8>, value: Option<&[u8]>) {
    out.push(b'"');
    match value {
        Some(value) => quoted_inner(out, value),
        None => out.push(b'-'),
    }
    out.push(b'"');
}

/// The inside of a quoted combined-format field: `"` and `\` escaped with a backslash, and
/// every byte outside visible ASCII and space written `\xHH` (as nginx does), so a value can
/// neither close its quotes nor break the line.
pub fn quoted_inner(out: &mut Vec<u8>, value: &[u8]) {
    for &b in value {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x20..=0x7e => out.push(b),
            _ => {
                let _ = write!(out, "\\x{b:02X}");
            }
        }
    }
}

/// Seconds since the epoch as (year, month, day, hour, minute, second, millisecond), UTC.
fn civil(time: SystemTime) -> (i64, u32, u32, u32, u32, u32, u32) {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rest = secs % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        (rest / 3600) as u32,
        (rest % 3600 / 60) as u32,
        (rest % 60) as u32,
        since.subsec_millis(),
    )
}

/// `2024-05-01T12:00:00.123Z`.
#[cfg(test)]
fn rfc3339(time: SystemTime, out: &mut Vec<u8>) {
    rfc3339_second(time, out);
    let (.., ms) = civil(time);
    let _ = write!(out, ".{ms:03}Z");
}

/// `2024-05-01T12:00:00`.
fn rfc3339_second(time: SystemTime, out: &mut Vec<u8>) {
    let (y, mo, d, h, mi, s, _) = civil(time);
    let _ = write!(out, "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}");
}

/// `01/May/2024:12:00:00 +0000`.
fn clf_time(time: SystemTime, out: &mut Vec<u8>) {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, mo, d, h, mi, s, _) = civil(time);
    let month = MONTHS[(mo as usize).saturating_sub(1).min(11)];
    let _ = write!(out, "{d:02}/{month}/{y:04}:{h:02}:{mi:02}:{s:02} +0000");
}

#[cfg(test)]
mod tests;
