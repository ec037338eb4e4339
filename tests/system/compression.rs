//! Compression at the edge (`[compression]`, on by default): each encoding served to the
//! clients that accept it, with `Vary: Accept-Encoding` and a weak `ETag`, compressed once per
//! object; identity for clients that accept none, for ranges, for types and sizes that do not
//! qualify, for `no-transform`; origins that compress themselves passed through.

use std::io::Read;

use verge_testkit as support;

use support::cdn::Topology;
use support::{
    eventually, start_origin_and_cdn, FakeOrigin, HttpClient, Reply, TestCdn, TestResponse,
};

/// A page well over the default 1 KiB minimum, that compresses well.
fn page() -> String {
    "<p>Verge serves this paragraph from its cache.</p>\n".repeat(200)
}

fn html(body: String) -> Reply {
    Reply::ok(body)
        .cache_control("max-age=600")
        .header("content-type", "text/html; charset=utf-8")
        .header("etag", "\"v1\"")
}

async fn start(topology: Topology, tweaks: &[&str]) -> (FakeOrigin, TestCdn) {
    let (origin, cdn) = start_origin_and_cdn(topology, tweaks).await;
    origin.on("/page.html", html(page()));
    (origin, cdn)
}

fn decoded(response: &TestResponse) -> Vec<u8> {
    let body = &response.body[..];
    let mut out = Vec::new();
    match response.header("content-encoding").as_deref() {
        None => out = body.to_vec(),
        Some("gzip") => {
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .unwrap();
        }
        Some("br") => {
            brotli::Decompressor::new(body, 4096)
                .read_to_end(&mut out)
                .unwrap();
        }
        Some("zstd") => out = zstd::stream::decode_all(body).unwrap(),
        Some(other) => panic!("unexpected content-encoding {other}"),
    }
    out
}

fn varies_on_encoding(response: &TestResponse) -> bool {
    response
        .header("vary")
        .is_some_and(|v| v.to_ascii_lowercase().contains("accept-encoding"))
}

async fn each_encoding_is_served_to_the_clients_that_accept_it(topology: Topology) {
    let (origin, cdn) = start(topology, &[]).await;
    for (accept, encoding) in [
        ("gzip, deflate, br, zstd", "br"),
        ("zstd, gzip", "zstd"),
        ("gzip", "gzip"),
        ("deflate, gzip;q=0.5", "gzip"),
    ] {
        let response = cdn
            .get_with("/page.html", &[("accept-encoding", accept)])
            .await;
        assert_eq!(response.status, 200);
        assert_eq!(
            response.header("content-encoding").as_deref(),
            Some(encoding),
            "{accept}"
        );
        assert!(varies_on_encoding(&response), "{accept}");
        assert_eq!(response.header("etag").as_deref(), Some("W/\"v1\""));
        let length: usize = response.header("content-length").unwrap().parse().unwrap();
        assert_eq!(length, response.body.len());
        assert!(length < page().len() / 5, "{encoding}: {length} bytes");
        assert_eq!(decoded(&response), page().as_bytes(), "{encoding}");
    }
    assert_eq!(origin.hits("/page.html"), 1, "one object, several variants");
    // The client's own conditional request with the weak tag it was given.
    let not_modified = cdn
        .get_with(
            "/page.html",
            &[("accept-encoding", "br"), ("if-none-match", "W/\"v1\"")],
        )
        .await;
    assert_eq!(not_modified.status, 304);
}

async fn a_client_that_accepts_no_encoding_gets_the_identity_body(topology: Topology) {
    let (_origin, cdn) = start(topology, &[]).await;
    cdn.get_with("/page.html", &[("accept-encoding", "br")])
        .await;
    for accept in [None, Some("identity"), Some("br;q=0, gzip;q=0")] {
        let headers: Vec<(&str, &str)> =
            accept.map(|a| ("accept-encoding", a)).into_iter().collect();
        let response = cdn.get_with("/page.html", &headers).await;
        assert_eq!(response.header("content-encoding"), None, "{accept:?}");
        assert_eq!(response.body, page().as_bytes());
        assert!(varies_on_encoding(&response), "{accept:?}");
        assert_eq!(response.header("etag").as_deref(), Some("\"v1\""));
    }
}

async fn each_encoding_is_made_once_per_object(topology: Topology) {
    let (origin, cdn) = start(topology, &[]).await;
    let mut concurrent = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let url = cdn.url("/page.html");
        concurrent.spawn(async move {
            HttpClient::http1()
                .request("GET", &url, &[("accept-encoding", "gzip")], "")
                .await
        });
    }
    while let Some(response) = concurrent.join_next().await {
        assert_eq!(decoded(&response.unwrap()), page().as_bytes());
    }
    for _ in 0..10 {
        let response = cdn
            .get_with("/page.html", &[("accept-encoding", "gzip")])
            .await;
        assert_eq!(response.header("content-encoding").as_deref(), Some("gzip"));
    }
    let metrics = cdn.metrics().await;
    metrics.assert_value(
        "verge_compressions_total",
        &[("encoding", "gzip"), ("result", "stored")],
        1.0,
    );
    assert_eq!(origin.hits("/page.html"), 1);
}

async fn a_revalidated_object_keeps_its_variant(topology: Topology) {
    let (origin, cdn) = start(topology, &[]).await;
    origin.on("/short.html", html(page()).cache_control("max-age=10"));
    let first = cdn
        .get_with("/short.html", &[("accept-encoding", "br")])
        .await;
    assert_eq!(first.header("content-encoding").as_deref(), Some("br"));
    cdn.advance(15);
    origin.on(
        "/short.html",
        Reply::ok("")
            .with_status(304)
            .cache_control("max-age=10")
            .header("etag", "\"v1\""),
    );
    let again = cdn
        .get_with("/short.html", &[("accept-encoding", "br")])
        .await;
    again.assert_cache_status_has("fwd-status=304", "revalidated");
    assert_eq!(again.header("content-encoding").as_deref(), Some("br"));
    assert_eq!(decoded(&again), page().as_bytes());
    let age: u64 = again.header("age").unwrap().parse().unwrap();
    assert!(
        age < 5,
        "the variant takes the revalidated freshness: age {age}"
    );
    let metrics = cdn.metrics().await;
    metrics.assert_value(
        "verge_compressions_total",
        &[("encoding", "br"), ("result", "stored")],
        1.0,
    );
}

async fn ranges_are_served_from_the_identity_object(topology: Topology) {
    let (_origin, cdn) = start(topology, &[]).await;
    cdn.get_with("/page.html", &[("accept-encoding", "br")])
        .await;
    let response = cdn
        .get_with(
            "/page.html",
            &[("accept-encoding", "br"), ("range", "bytes=0-9")],
        )
        .await;
    assert_eq!(response.status, 206);
    assert_eq!(response.header("content-encoding"), None);
    assert_eq!(response.body, page().as_bytes()[..10]);
}

async fn what_does_not_qualify_is_served_as_it_is(topology: Topology) {
    let (origin, cdn) = start(topology, &[]).await;
    let big = page();
    origin.on(
        "/image.png",
        Reply::ok(big.clone())
            .cache_control("max-age=600")
            .header("content-type", "image/png"),
    );
    origin.on(
        "/small.css",
        Reply::ok("a{}")
            .cache_control("max-age=600")
            .header("content-type", "text/css"),
    );
    origin.on(
        "/no-transform.html",
        html(big.clone()).cache_control("max-age=600, no-transform"),
    );
    let gzipped = {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut encoder, big.as_bytes()).unwrap();
        encoder.finish().unwrap()
    };
    origin.on(
        "/origin-gzip.html",
        Reply::ok(gzipped.clone())
            .cache_control("max-age=600")
            .header("content-type", "text/html")
            .header("content-encoding", "gzip")
            .header("vary", "Accept-Encoding"),
    );
    for path in ["/image.png", "/small.css", "/no-transform.html"] {
        for _ in 0..2 {
            let response = cdn.get_with(path, &[("accept-encoding", "br, gzip")]).await;
            assert_eq!(response.header("content-encoding"), None, "{path}");
            assert!(!varies_on_encoding(&response), "{path}");
        }
    }
    let passed = cdn
        .get_with("/origin-gzip.html", &[("accept-encoding", "gzip")])
        .await;
    assert_eq!(passed.header("content-encoding").as_deref(), Some("gzip"));
    assert_eq!(
        passed.body, gzipped,
        "the origin's own compression passes through"
    );
}

support::in_both_topologies!(
    each_encoding_is_served_to_the_clients_that_accept_it,
    a_client_that_accepts_no_encoding_gets_the_identity_body,
    each_encoding_is_made_once_per_object,
    a_revalidated_object_keeps_its_variant,
    ranges_are_served_from_the_identity_object,
    what_does_not_qualify_is_served_as_it_is,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_object_is_compressed_in_the_background() {
    let (origin, cdn) = start_origin_and_cdn(Topology::Direct, &[]).await;
    let large = "0123456789abcdef".repeat(16 * 1024);
    origin.on("/large.js", {
        Reply::ok(large.clone())
            .cache_control("max-age=600")
            .header("content-type", "application/javascript")
    });
    let first = cdn
        .get_with("/large.js", &[("accept-encoding", "zstd")])
        .await;
    assert_eq!(
        first.body.len(),
        large.len(),
        "the first answer does not wait"
    );
    eventually("the large object's zstd variant", || async {
        let response = cdn
            .get_with("/large.js", &[("accept-encoding", "zstd")])
            .await;
        response.header("content-encoding").as_deref() == Some("zstd")
            && decoded(&response) == large.as_bytes()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_can_be_turned_off() {
    let (_origin, cdn) = start(Topology::Direct, &["compression.enabled = false"]).await;
    for _ in 0..2 {
        let response = cdn
            .get_with("/page.html", &[("accept-encoding", "br")])
            .await;
        assert_eq!(response.header("content-encoding"), None);
        assert_eq!(response.body, page().as_bytes());
    }
}
