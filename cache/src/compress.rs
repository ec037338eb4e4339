//! Compression of stored objects, as pure functions: which encoding a request gets, whether an
//! object may be compressed, the compressed bytes, and the headers of the compressed variant.
//!
//! Verge only compresses, never inflates: nothing a client sends is decompressed, so there is
//! no decompression bomb to defuse.

use std::io::Write;

use http::header::{
    HeaderValue, ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE,
    CONTENT_TYPE, ETAG, VARY,
};
use http::HeaderMap;
use verge_config::compression::{CompressionConfig, Encoding};

/// The encoding to serve a request that sent these headers: the one of `offered` the client
/// weighs highest (`q`), ties going to the earlier in `offered`; `None` for identity.
pub fn negotiate(headers: &HeaderMap, offered: &[Encoding]) -> Option<Encoding> {
    let mut weights: Vec<(Encoding, u16)> = Vec::new();
    let mut wildcard = None;
    let members = headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|line| line.to_str().ok())
        .flat_map(|line| line.split(','));
    for member in members {
        let mut parts = member.split(';');
        let coding = parts.next().unwrap_or_default().trim();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q=").or(p.trim().strip_prefix("Q=")))
            .map(parse_q)
            .next()
            .unwrap_or(Some(1000));
        let Some(q) = q else { continue };
        if coding == "*" {
            wildcard = Some(q);
        } else if let Some(e) = offered
            .iter()
            .find(|e| e.as_str().eq_ignore_ascii_case(coding))
        {
            weights.push((*e, q));
        }
    }
    offered
        .iter()
        .filter_map(|e| {
            let q = weights
                .iter()
                .find(|(w, _)| w == e)
                .map(|(_, q)| *q)
                .or(wildcard)?;
            (q > 0).then_some((*e, q))
        })
        // Highest q; `max_by_key` keeps the last of equals, so walk in reverse preference.
        .rev()
        .max_by_key(|(_, q)| *q)
        .map(|(e, _)| e)
}

/// A `q` value in thousandths (`0.5` → 500); `None` when malformed.
fn parse_q(text: &str) -> Option<u16> {
    let text = text.trim();
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = format!("{fraction:0<3}").parse::<u16>().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// The request's `Accept-Encoding` reduced to the one encoding Verge would produce for it, so
/// that what varies on it has at most one variant per encoding; `None`: remove it (identity).
pub fn normalised_accept_encoding(
    headers: &HeaderMap,
    config: &CompressionConfig,
) -> Option<HeaderValue> {
    negotiate(headers, &config.encodings).map(|e| HeaderValue::from_static(e.as_str()))
}

/// Whether a stored 200 with these headers and body length may be served compressed: not
/// already encoded, not a part, no `no-transform`, a compressible type, at least `min_size`.
pub fn compressible(headers: &HeaderMap, len: usize, config: &CompressionConfig) -> bool {
    if !config.enabled || (len as u64) < config.min_size.bytes() {
        return false;
    }
    let encoded = headers
        .get_all(CONTENT_ENCODING)
        .iter()
        .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    let no_transform = headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| d.trim().eq_ignore_ascii_case("no-transform"));
    if encoded || no_transform || headers.contains_key(CONTENT_RANGE) {
        return false;
    }
    let Some(media) = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim)
    else {
        return false;
    };
    let Some((kind, sub)) = media.split_once('/') else {
        return false;
    };
    let ends_with = |suffix: &str| {
        sub.len() >= suffix.len()
            && sub.as_bytes()[sub.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
    };
    ends_with("+json")
        || ends_with("+xml")
        || config.types.iter().any(|t| match t.split_once('/') {
            Some((k, "*")) => k.eq_ignore_ascii_case(kind),
            _ => t.eq_ignore_ascii_case(media),
        })
}

/// `body` compressed with `encoding` at `level`.
pub fn compress(encoding: Encoding, level: u32, body: &[u8]) -> std::io::Result<Vec<u8>> {
    match encoding {
        Encoding::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(
                Vec::with_capacity(body.len() / 3),
                flate2::Compression::new(level),
            );
            encoder.write_all(body)?;
            encoder.finish()
        }
        Encoding::Br => {
            let mut out = Vec::with_capacity(body.len() / 3);
            let params = brotli::enc::BrotliEncoderParams {
                quality: i32::try_from(level).unwrap_or(11),
                ..Default::default()
            };
            brotli::BrotliCompress(&mut &body[..], &mut out, &params)?;
            Ok(out)
        }
        Encoding::Zstd => zstd::bulk::compress(body, i32::try_from(level).unwrap_or(3)),
    }
}

/// The headers of a compressed variant, from the identity object's: `Content-Encoding`, its
/// length, `Vary: Accept-Encoding`, and the `ETag` weakened (RFC 9110 §8.8.3: the bytes differ).
pub fn encoded_headers(identity: &HeaderMap, encoding: Encoding, len: usize) -> HeaderMap {
    let mut headers = identity.clone();
    headers.insert(
        CONTENT_ENCODING,
        HeaderValue::from_static(encoding.as_str()),
    );
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    if let Some(weak) = headers.get(ETAG).and_then(weakened) {
        headers.insert(ETAG, weak);
    }
    vary_on_accept_encoding(&mut headers);
    headers
}

/// `W/"x"` for a strong `"x"`; `None` when already weak.
fn weakened(etag: &HeaderValue) -> Option<HeaderValue> {
    if etag.as_bytes().starts_with(b"W/") {
        return None;
    }
    HeaderValue::from_bytes(&[b"W/", etag.as_bytes()].concat()).ok()
}

/// Adds `Accept-Encoding` to `Vary` unless it (or `*`) is there.
pub fn vary_on_accept_encoding(headers: &mut HeaderMap) {
    let varies = headers.get_all(VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .map(str::trim)
                .any(|name| name == "*" || name.eq_ignore_ascii_case("accept-encoding"))
        })
    });
    if !varies {
        headers.append(VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

#[cfg(test)]
mod tests;
