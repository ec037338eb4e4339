use proptest::prelude::*;

use super::*;

const BOUND: usize = 8192;

/// The indexes of the ambiguous heads found when `stream` arrives in pieces cut at `cuts`.
fn found_in_pieces(stream: &[u8], cuts: &[usize]) -> (Option<u64>, Framing) {
    let mut framing = Framing::new(BOUND);
    let mut found = None;
    let mut start = 0;
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    cuts.sort_unstable();
    for cut in cuts.into_iter().chain([stream.len()]) {
        if let Some(index) = framing.feed(&stream[start..cut]) {
            found = found.or(Some(index));
        }
        start = cut;
    }
    (found, framing)
}

fn found(stream: &[u8]) -> Option<u64> {
    found_in_pieces(stream, &[]).0
}

#[test]
fn a_head_with_both_length_fields_is_found_in_either_order() {
    assert_eq!(
        found(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        Some(0)
    );
    assert_eq!(
        found(b"POST / HTTP/1.1\r\nHost: a\r\ntransfer-encoding: chunked\r\ncontent-length: 4\r\n\r\n0\r\n\r\n"),
        Some(0)
    );
}

#[test]
fn bodies_are_skipped_so_a_later_head_is_counted_right() {
    // A body that looks like an ambiguous head is body, not a request.
    let fake = b"GET /x HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut stream = format!(
        "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
        fake.len()
    )
    .into_bytes();
    stream.extend_from_slice(fake);
    stream.extend_from_slice(
        b"POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
        3;ext=1\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n\
        GET /c HTTP/1.1\r\nHost: a\r\n\r\n\
        POST /d HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    assert_eq!(found(&stream), Some(3));
    // On its own, the body would be taken for an ambiguous head.
    assert_eq!(found(fake), Some(0));
}

#[test]
fn what_cannot_be_followed_ends_the_watch() {
    for stream in [
        &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
        b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ] {
        let (_, framing) = found_in_pieces(stream, &[]);
        assert!(framing.is_off(), "{}", String::from_utf8_lossy(stream));
    }
    // Once off, a later ambiguous head is not reported (it cannot be placed with certainty).
    assert_eq!(
        found(b"GET / HTTP/1.1\r\nUpgrade: x\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
        None
    );
}

#[test]
fn a_head_over_the_bound_ends_the_watch() {
    let mut framing = Framing::new(64);
    assert_eq!(framing.feed(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
    assert!(!framing.is_off());
    assert_eq!(framing.feed(&[b'a'; 64]), None);
    assert!(framing.is_off());
}

/// One request of a generated stream.
#[derive(Debug, Clone)]
enum Body {
    None,
    Sized(Vec<u8>),
    Chunked(Vec<Vec<u8>>, bool),
}

fn request() -> impl Strategy<Value = (Body, bool)> {
    let data = proptest::collection::vec(any::<u8>(), 0..40);
    let chunks = proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..30), 0..4);
    (
        prop_oneof![
            Just(Body::None),
            data.prop_map(Body::Sized),
            (chunks, any::<bool>()).prop_map(|(c, t)| Body::Chunked(c, t)),
        ],
        any::<bool>(),
    )
}

fn encode(requests: &[(Body, bool)]) -> (Vec<u8>, Option<u64>) {
    let mut out = Vec::new();
    let mut first = None;
    for (index, (body, ambiguous)) in requests.iter().enumerate() {
        out.extend_from_slice(b"POST /p HTTP/1.1\r\nHost: a.test\r\n");
        match body {
            Body::None => {}
            Body::Sized(data) => {
                out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", data.len()).as_bytes());
                out.extend_from_slice(data);
                continue;
            }
            Body::Chunked(chunks, trailer) => {
                if *ambiguous {
                    out.extend_from_slice(b"Content-Length: 3\r\n");
                    first = first.or(Some(index as u64));
                }
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                for chunk in chunks {
                    out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                    out.extend_from_slice(chunk);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n");
                if *trailer {
                    out.extend_from_slice(b"X-T: 1\r\n");
                }
                out.extend_from_slice(b"\r\n");
                continue;
            }
        }
        out.extend_from_slice(b"\r\n");
    }
    (out, first)
}

proptest! {
    #[test]
    fn the_first_ambiguous_head_is_found_however_the_stream_is_cut(
        requests in proptest::collection::vec(request(), 1..8),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let (stream, expected) = encode(&requests);
        let (found, framing) = found_in_pieces(&stream, &cuts);
        prop_assert_eq!(found, expected);
        prop_assert!(!framing.is_off());
        prop_assert_eq!(framing.heads, requests.len() as u64);
    }

    #[test]
    fn any_bytes_are_read_without_panic_within_the_bound(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let (_, framing) = found_in_pieces(&bytes, &cuts);
        prop_assert!(framing.pending.len() <= BOUND);
    }
}
