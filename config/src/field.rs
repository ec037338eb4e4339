//! One field of a table: the value as written (or its default) parsed into its typed value and
//! checked against its bounds. A problem is recorded in the [`Collector`] under the field's key
//! path and the field comes back as `None`, so validation goes on to the next field and every
//! problem of a file is reported at once.

use std::net::SocketAddr;
use std::time::Duration;

use crate::error::Collector;
use crate::units::RawSize;
use crate::units::{parse_duration, ByteSize};

/// A socket address (`IP:PORT`); `example` is shown in the error, e.g. `127.0.0.1:8080`.
pub(crate) fn socket_addr(
    c: &mut Collector,
    path: &str,
    text: &str,
    example: &str,
) -> Option<SocketAddr> {
    c.take(
        path,
        text.parse::<SocketAddr>().map_err(|_| {
            format!("invalid socket address {text:?}: expected IP:PORT, e.g. {example}")
        }),
    )
}

/// A size: text with a unit (`"16KiB"`) or a bare number of bytes.
pub(crate) fn size(
    c: &mut Collector,
    path: &str,
    value: Option<&RawSize>,
    default: &str,
) -> Option<ByteSize> {
    let result = match value {
        Some(RawSize::Bytes(n)) => Ok(ByteSize(*n)),
        Some(RawSize::Text(t)) => ByteSize::parse(t),
        None => ByteSize::parse(default),
    };
    c.take(path, result)
}

/// A duration with a unit (`"30s"`) of at least `min`.
pub(crate) fn duration(
    c: &mut Collector,
    path: &str,
    value: Option<&str>,
    default: &str,
    min: Duration,
) -> Option<Duration> {
    let d = c.take(path, parse_duration(value.unwrap_or(default)))?;
    if d < min {
        c.push(path, format!("must be at least {}ms", min.as_millis()));
        return None;
    }
    Some(d)
}

/// A duration within `range` (both ends included).
pub(crate) fn bounded_duration(
    c: &mut Collector,
    path: &str,
    value: Option<&str>,
    default: &str,
    range: (Duration, Duration),
) -> Option<Duration> {
    let d = duration(c, path, value, default, range.0)?;
    if d > range.1 {
        c.push(path, format!("must be at most {}ms", range.1.as_millis()));
        return None;
    }
    Some(d)
}

/// A whole number within `range` (both ends included).
pub(crate) fn count(
    c: &mut Collector,
    path: &str,
    value: Option<u64>,
    default: u64,
    range: (u64, u64),
) -> Option<u64> {
    let n = value.unwrap_or(default);
    if n < range.0 || n > range.1 {
        c.push(
            path,
            format!("{n} is out of range {}..={}", range.0, range.1),
        );
        return None;
    }
    Some(n)
}
