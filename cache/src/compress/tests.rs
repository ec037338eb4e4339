use std::io::Read;

use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;
use proptest::prelude::*;
use verge_config::compression::{CompressionConfig, Encoding};
use verge_config::EdgeConfig;

use super::*;

fn config() -> CompressionConfig {
    let config =
        EdgeConfig::from_toml("[edge]\n[upstream]\norigin = \"http://127.0.0.1:9\"\n").unwrap();
    (*config.cache.compression).clone()
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn chosen(accept: &str) -> Option<&'static str> {
    negotiate(&headers(&[("accept-encoding", accept)]), &Encoding::ALL).map(Encoding::as_str)
}

#[test]
fn the_client_s_weights_decide_then_verge_s_preference() {
    assert_eq!(chosen("gzip, deflate, br"), Some("br"));
    assert_eq!(chosen("gzip, deflate"), Some("gzip"));
    assert_eq!(chosen("gzip;q=1, br;q=0.5"), Some("gzip"));
    assert_eq!(chosen("zstd, gzip"), Some("zstd"));
    assert_eq!(chosen("br;q=0, gzip"), Some("gzip"));
    assert_eq!(chosen("*"), Some("br"));
    assert_eq!(chosen("*;q=0.2, gzip;q=0.1"), Some("br"));
    assert_eq!(chosen("identity"), None);
    assert_eq!(chosen("deflate"), None);
    assert_eq!(chosen("br;q=2, gzip;q=0.x"), None);
    assert_eq!(negotiate(&HeaderMap::new(), &Encoding::ALL), None);
    assert_eq!(
        negotiate(
            &headers(&[("accept-encoding", "br, gzip")]),
            &[Encoding::Gzip]
        ),
        Some(Encoding::Gzip)
    );
}

#[test]
fn only_compressible_objects_qualify() {
    let c = config();
    let yes = |pairs: &[(&str, &str)], len| compressible(&headers(pairs), len, &c);
    assert!(yes(&[("content-type", "text/html; charset=utf-8")], 4096));
    assert!(yes(&[("content-type", "application/json")], 4096));
    assert!(
        yes(&[("content-type", "Text/HTML")], 4096),
        "types are case-insensitive"
    );
    assert!(yes(&[("content-type", "application/LD+JSON")], 4096));
    assert!(yes(&[("content-type", "application/ld+json")], 4096));
    assert!(yes(&[("content-type", "image/svg+xml")], 4096));
    assert!(!yes(&[("content-type", "image/png")], 4096));
    assert!(!yes(&[("content-type", "text/css")], 100), "under min_size");
    assert!(!yes(&[], 4096), "no type");
    assert!(!yes(
        &[("content-type", "text/html"), ("content-encoding", "gzip")],
        4096
    ));
    assert!(!yes(
        &[
            ("content-type", "text/html"),
            ("cache-control", "max-age=60, no-transform")
        ],
        4096
    ));
    let off = CompressionConfig::off();
    assert!(!compressible(
        &headers(&[("content-type", "text/html")]),
        4096,
        &off
    ));
}

#[test]
fn each_encoding_round_trips() {
    let body = "hello verge ".repeat(500).into_bytes();
    for encoding in Encoding::ALL {
        let packed = compress(encoding, config().level(encoding), &body).unwrap();
        assert!(packed.len() < body.len() / 10, "{encoding:?}");
        let mut unpacked = Vec::new();
        match encoding {
            Encoding::Gzip => {
                flate2::read::GzDecoder::new(&packed[..])
                    .read_to_end(&mut unpacked)
                    .unwrap();
            }
            Encoding::Br => {
                brotli::Decompressor::new(&packed[..], 4096)
                    .read_to_end(&mut unpacked)
                    .unwrap();
            }
            Encoding::Zstd => unpacked = zstd::bulk::decompress(&packed, body.len()).unwrap(),
        }
        assert_eq!(unpacked, body, "{encoding:?}");
    }
}

#[test]
fn a_variant_s_headers_say_what_it_is() {
    let identity = headers(&[
        ("content-type", "text/html"),
        ("content-length", "5000"),
        ("etag", "\"v1\""),
        ("vary", "Accept-Language"),
    ]);
    let h = encoded_headers(&identity, Encoding::Br, 321);
    assert_eq!(h["content-encoding"], "br");
    assert_eq!(h["content-length"], "321");
    assert_eq!(h["etag"], "W/\"v1\"");
    let vary: Vec<_> = h.get_all("vary").iter().collect();
    assert_eq!(vary, ["Accept-Language", "Accept-Encoding"]);
    let weak = headers(&[("etag", "W/\"v1\""), ("vary", "accept-encoding")]);
    let h = encoded_headers(&weak, Encoding::Gzip, 1);
    assert_eq!(h["etag"], "W/\"v1\"");
    assert_eq!(h.get_all("vary").iter().count(), 1);
}

#[test]
fn a_request_s_accept_encoding_is_reduced_to_one_encoding() {
    let c = config();
    let of =
        |accept: &str| normalised_accept_encoding(&headers(&[("accept-encoding", accept)]), &c);
    assert_eq!(of("gzip, deflate, br, zstd").unwrap(), "br");
    assert_eq!(of("deflate, gzip;q=0.8").unwrap(), "gzip");
    assert_eq!(of("identity"), None);
}

proptest! {
    #[test]
    fn any_accept_encoding_is_read_without_panic(accept in "[ -~]{0,60}") {
        if let Ok(value) = HeaderValue::from_str(&accept) {
            let mut map = HeaderMap::new();
            map.insert(ACCEPT_ENCODING, value);
            let _ = negotiate(&map, &Encoding::ALL);
        }
    }

    #[test]
    fn any_body_compresses_and_comes_back(body in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let packed = compress(Encoding::Gzip, 6, &body).unwrap();
        let mut unpacked = Vec::new();
        flate2::read::GzDecoder::new(&packed[..]).read_to_end(&mut unpacked).unwrap();
        prop_assert_eq!(unpacked, body);
    }
}
