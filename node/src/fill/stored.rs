//! The headers a fill stores with an object.

use bytes::BytesMut;
use http::header::{HeaderName, HeaderValue, AGE};
use http::HeaderMap;
use verge_cache::CacheControl;

use crate::headers::CACHE_STATUS;

/// The headers kept with a stored object: without the fields `private="…"` and `no-cache="…"`
/// name, and with `Age` and `Cache-Status` placeholders that every response from cache overwrites
/// in place. The values are copied into one block of their own: a slice of the upstream
/// connection's read buffer would keep that whole buffer alive, and one shared block makes
/// cloning them for every hit touch one reference count instead of one per field.
pub(super) fn stored_headers(headers: &HeaderMap, cc: &CacheControl) -> HeaderMap {
    let kept = |name: &HeaderName| {
        name != AGE
            && name != CACHE_STATUS
            && !cc
                .private_fields
                .iter()
                .chain(&cc.no_cache_fields)
                .any(|f| f == name.as_str())
    };
    let mut block = BytesMut::with_capacity(headers.values().map(HeaderValue::len).sum());
    for (name, value) in headers {
        if kept(name) {
            block.extend_from_slice(value.as_bytes());
        }
    }
    let block = block.freeze();
    let mut out = HeaderMap::with_capacity(headers.len() + 2);
    let mut at = 0;
    for (name, value) in headers.iter().filter(|(name, _)| kept(name)) {
        let slice = block.slice(at..at + value.len());
        at += value.len();
        let mut copy = HeaderValue::from_maybe_shared(slice).unwrap_or_else(|_| value.clone());
        copy.set_sensitive(value.is_sensitive());
        out.append(name.clone(), copy);
    }
    out.insert(AGE, HeaderValue::from_static("0"));
    // Upstream caches' entries, which ours is appended to; empty when there are none.
    let upstream_entries = headers
        .get(&CACHE_STATUS)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static(""));
    out.insert(CACHE_STATUS.clone(), upstream_entries);
    out
}
