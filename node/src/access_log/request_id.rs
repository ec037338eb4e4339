//! The request id: kept from the client's `X-Request-Id` when the node trusts its clients and
//! the id is well formed, else made here; pure apart from the random numbers.

use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;

/// `X-Request-Id`: sent upstream and returned to the client with the id of the request.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest incoming id kept.
pub const MAX_LEN: usize = 128;

/// Whether an incoming id may be kept: 1 to [`MAX_LEN`] bytes of visible ASCII (no spaces,
/// no control characters), so it can be neither a forged log line nor a header injection.
pub fn acceptable(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_LEN && id.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// A new id: 16 random bytes as 32 lowercase hex digits.
pub fn generate() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 32];
    let random = fastrand::u128(..);
    for (i, digit) in digits.iter_mut().enumerate() {
        *digit = HEX[((random >> (4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&digits).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// The id of a request with `headers`: its one well-formed `X-Request-Id` when `trusted`, else
/// a new one.
pub fn for_request(headers: &HeaderMap, trusted: bool) -> HeaderValue {
    if trusted {
        let mut ids = headers.get_all(&X_REQUEST_ID).iter();
        if let (Some(id), None) = (ids.next(), ids.next()) {
            if acceptable(id.as_bytes()) {
                return id.clone();
            }
        }
    }
    generate()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn with_id(id: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(&X_REQUEST_ID, HeaderValue::from_bytes(id).unwrap());
        headers
    }

    #[test]
    fn a_trusted_well_formed_id_is_kept() {
        let headers = with_id(b"edge-1:4f2a");
        assert_eq!(for_request(&headers, true), "edge-1:4f2a");
    }

    #[test]
    fn an_untrusted_id_is_replaced() {
        let headers = with_id(b"chosen-by-the-client");
        let id = for_request(&headers, false);
        assert_ne!(id, "chosen-by-the-client");
        assert_eq!(id.len(), 32);
        assert!(id.as_bytes().iter().all(u8::is_ascii_hexdigit));
    }

    #[test]
    fn a_malformed_id_is_replaced_even_when_trusted() {
        let long = vec![b'a'; MAX_LEN + 1];
        for bad in [&b"has space"[..], b"tab\there", &long, b"caf\xc3\xa9"] {
            let id = for_request(&with_id(bad), true);
            assert_ne!(id.as_bytes(), bad);
            assert_eq!(id.len(), 32, "{bad:?}");
        }
        assert!(acceptable(&[b'a'; MAX_LEN]));
        let mut two = with_id(b"one");
        two.append(&X_REQUEST_ID, HeaderValue::from_static("two"));
        assert_eq!(
            for_request(&two, true).len(),
            32,
            "two ids: neither is kept"
        );
        assert_eq!(for_request(&HeaderMap::new(), true).len(), 32);
    }

    #[test]
    fn generated_ids_differ() {
        assert_ne!(generate(), generate());
    }

    proptest! {
        #[test]
        fn the_parser_never_panics_and_keeps_only_visible_ascii(
            id in proptest::collection::vec(any::<u8>(), 0..300),
            trusted in any::<bool>(),
        ) {
            let mut headers = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_bytes(&id) {
                headers.insert(&X_REQUEST_ID, value);
            }
            let chosen = for_request(&headers, trusted);
            prop_assert!(acceptable(chosen.as_bytes()));
            prop_assert!(!chosen.as_bytes().contains(&b'\n'));
            if chosen.as_bytes() == id.as_slice() {
                prop_assert!(trusted);
            }
        }
    }
}
