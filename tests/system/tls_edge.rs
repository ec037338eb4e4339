//! The edge's HTTPS listeners, end to end over loopback: certificates chosen by SNI (exact,
//! wildcard, default, refused), HTTP/2 and HTTP/1.1 by ALPN, certificates rotated on disk while
//! connections stay open, bad certificates refused without harm, bad input on the TLS port,
//! an expired certificate stopping the start, and mutual TLS between an edge and a shield.
//!
//! Certificates come from a test CA made with rcgen (`support::pki`); clients are tokio-rustls
//! with hyper's connection API, trusting that CA.

use verge_testkit as support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::{StatusCode, Version};
use support::node::test_config;
use support::pki::{toml_path, CertFiles, TestPki, TlsClient, Validity};
use support::{raw_exchange, wait_until, within, FakeOrigin, HttpClient, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use verge_config::{EdgeConfig, ShieldConfig};
use verge_edge::EdgeRole;
use verge_origin_shield::ShieldRole;
use verge_testkit::RunningNode;

/// Bound on conditions that depend on the product's timers (file watch, handshake timeout).
const CONDITION_LIMIT: Duration = Duration::from_secs(5);

const HANDSHAKES: &str = "verge_tls_handshakes_total";
const CERT_RELOADS: &str = "verge_tls_certificate_reloads_total";
const EXPIRY: &str = "verge_tls_certificate_expiry_seconds";

/// An edge's TOML: loopback listeners, `origin` as the upstream, one HTTPS listener with
/// `tls_keys` (lines of the `[tls]` table) and `certs` in this order, then `extra` tables.
fn edge_toml(origin: SocketAddr, tls_keys: &[&str], certs: &[&CertFiles], extra: &str) -> String {
    let mut toml = format!(
        "[edge]\nid = \"edge-tls\"\n\
         [server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nshutdown_grace = \"1s\"\n\
         [upstream]\norigin = \"http://{origin}\"\nconnect_timeout = \"1s\"\nresponse_timeout = \"5s\"\n\
         {extra}\n[tls]\nlisten = [\"127.0.0.1:0\"]\n"
    );
    for line in tls_keys {
        toml.push_str(line);
        toml.push('\n');
    }
    for cert in certs {
        toml.push_str(&cert.toml_entry());
    }
    toml
}

fn edge_config(toml: &str) -> EdgeConfig {
    test_config(toml)
}

async fn start_edge_toml(toml: &str) -> RunningNode {
    RunningNode::start::<EdgeRole>(&edge_config(toml)).await
}

async fn start_tls_edge(
    origin: &FakeOrigin,
    tls_keys: &[&str],
    certs: &[&CertFiles],
) -> RunningNode {
    start_edge_toml(&edge_toml(origin.addr(), tls_keys, certs, "")).await
}

/// An origin answering every path with a cacheable 200 whose body names the path.
async fn cacheable_origin() -> FakeOrigin {
    let origin = FakeOrigin::start().await;
    origin.on_prefix("/", Reply::ok("object").cache_control("max-age=300"));
    origin
}

/// Waits until `node` has counted a `result` in `metric` (`verge_tls_*_total{result}`), within
/// [`CONDITION_LIMIT`].
async fn wait_counted(node: &RunningNode, metric: &str, result: &str) {
    let what = format!("{metric}{{result=\"{result}\"}} counted");
    wait_until(&what, CONDITION_LIMIT, || async {
        node.counter(metric, &[("result", result)]).await >= 1.0
    })
    .await;
}

/// Certificates for `a.test` (the default: listed first), `b.test` and `*.c.test`.
struct SiteCerts {
    pki: TestPki,
    a: CertFiles,
    b: CertFiles,
    c: CertFiles,
}

fn site_certs() -> SiteCerts {
    let pki = TestPki::new("sites");
    let a = pki.server_cert("a", &["a.test", "127.0.0.1"]);
    let b = pki.server_cert("b", &["b.test"]);
    let c = pki.server_cert("c", &["*.c.test"]);
    SiteCerts { pki, a, b, c }
}

#[tokio::test]
async fn sni_chooses_the_certificate_exact_wildcard_or_default_and_https_shares_the_http_cache() {
    let origin = cacheable_origin().await;
    let certs = site_certs();
    let edge = start_tls_edge(&origin, &[], &[&certs.a, &certs.b, &certs.c]).await;
    let client = TlsClient::new(&certs.pki);
    let any_name = TlsClient::builder(&certs.pki.ca_file).ignore_name().build();

    let wildcard = "SNI x.c.test is covered by *.c.test";
    let unknown = "an unknown SNI gets the default (first) certificate";
    let no_sni = "no SNI at all gets the default certificate";
    for (client, sni, cert, why) in [
        (&client, "a.test", &certs.a, "SNI a.test"),
        (&client, "b.test", &certs.b, "SNI b.test"),
        (&client, "x.c.test", &certs.c, wildcard),
        (&any_name, "unknown.test", &certs.a, unknown),
        (&client, "127.0.0.1", &certs.a, no_sni),
    ] {
        assert_eq!(
            client.presented(edge.tls(), sni).await,
            cert.leaf(),
            "{why}"
        );
    }

    // The same object over HTTP then HTTPS: one fetch, one cache.
    let plain = HttpClient::http1()
        .request("GET", &edge.url("/shared"), &[("host", "a.test")], "")
        .await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.text(), "object");
    for _ in 0..2 {
        let secure = client.get(edge.tls(), "a.test", "/shared").await;
        assert_eq!(secure.status, 200, "{}", secure.text());
        assert_eq!(secure.text(), "object");
        secure.assert_cache_status_has("hit", "HTTPS must be served from the object HTTP stored");
    }
    assert_eq!(
        origin.hits("/shared"),
        1,
        "fetched once across HTTP and HTTPS"
    );

    // Each site's object over HTTPS is the origin's, fetched once however often it is asked.
    for name in ["b.test", "x.c.test"] {
        for _ in 0..2 {
            let response = client.get(edge.tls(), name, "/site").await;
            assert_eq!(response.status, 200, "{name}: {}", response.text());
            assert_eq!(response.text(), "object");
        }
    }
    assert_eq!(origin.hits("/site"), 2, "one fetch per host, then hits");

    let metrics = edge.metrics().await;
    for label in ["a.test", "b.test", "*.c.test"] {
        let expiry = metrics.value(EXPIRY, &[("certificate", label)]);
        assert!(
            expiry.is_some_and(|seconds| seconds > 0.0),
            "{label} expires in the future: {expiry:?}"
        );
    }
    let ok = metrics.value_or_zero(HANDSHAKES, &[("result", "ok")]);
    assert!(ok >= 10.0, "every completed handshake counted: {ok}");
    assert_eq!(
        metrics.value_or_zero("verge_tls_handshake_duration_seconds_count", &[]),
        ok,
        "every completed handshake timed"
    );
}

#[tokio::test]
async fn an_unknown_sni_is_refused_when_configured_and_counted() {
    let origin = cacheable_origin().await;
    let certs = site_certs();
    let edge = start_tls_edge(
        &origin,
        &["unknown_sni = \"refuse\""],
        &[&certs.a, &certs.b, &certs.c],
    )
    .await;
    let any_name = TlsClient::builder(&certs.pki.ca_file).ignore_name().build();

    let refused = any_name.handshake(edge.tls(), "unknown.test").await;
    assert!(refused.is_err(), "the handshake for unknown.test must fail");
    wait_counted(&edge, HANDSHAKES, "unknown_sni").await;

    // Known names are still served.
    let response = TlsClient::new(&certs.pki)
        .get(edge.tls(), "b.test", "/obj")
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(
        edge.counter(HANDSHAKES, &[("result", "unknown_sni")]).await,
        1.0,
        "only the refused handshake is counted as unknown_sni"
    );
}

#[tokio::test]
async fn alpn_negotiates_h2_when_offered_and_http1_when_only_it_is_offered() {
    let origin = cacheable_origin().await;
    let certs = site_certs();
    let edge = start_tls_edge(&origin, &[], &[&certs.a]).await;

    let h2 = TlsClient::builder(&certs.pki.ca_file)
        .alpn(&["h2", "http/1.1"])
        .build();
    let mut connection = h2.connect(edge.tls(), "a.test").await;
    assert_eq!(connection.alpn.as_deref(), Some("h2"));
    let response = connection.get("/alpn").await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.version,
        Version::HTTP_2,
        "the answer comes over HTTP/2"
    );
    assert_eq!(response.text(), "object");

    let h1 = TlsClient::builder(&certs.pki.ca_file)
        .alpn(&["http/1.1"])
        .build();
    let mut connection = h1.connect(edge.tls(), "a.test").await;
    assert_eq!(connection.alpn.as_deref(), Some("http/1.1"));
    let response = connection.get("/alpn").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.version, Version::HTTP_11);

    let none = TlsClient::builder(&certs.pki.ca_file).alpn(&[]).build();
    let mut connection = none.connect(edge.tls(), "a.test").await;
    assert_eq!(connection.alpn, None, "no ALPN offered, none agreed");
    let response = connection.get("/alpn").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.version, Version::HTTP_11, "no ALPN means HTTP/1.1");
}

#[tokio::test]
async fn a_rotated_certificate_serves_new_connections_while_open_ones_keep_working() {
    let origin = cacheable_origin().await;
    let certs = site_certs();
    let edge = start_tls_edge(&origin, &["watch_interval = \"50ms\""], &[&certs.a]).await;
    let client = TlsClient::builder(&certs.pki.ca_file)
        .alpn(&["http/1.1"])
        .build();
    let old = certs.a.leaf();

    let mut open = client.connect(edge.tls(), "a.test").await;
    assert_eq!(open.peer_cert, old);
    assert_eq!(open.get("/before").await.status, 200);

    let renewed = certs
        .pki
        .issue_server(&["a.test", "127.0.0.1"], Validity::Current);
    assert_ne!(renewed.der, old, "a new certificate (new key and serial)");
    certs.a.replace_with(&renewed);

    wait_until(
        "new connections get the renewed certificate",
        CONDITION_LIMIT,
        || async { client.presented(edge.tls(), "a.test").await == renewed.der },
    )
    .await;
    for i in 0..5 {
        let response = open.get(&format!("/during/{i}")).await;
        assert_eq!(
            response.status, 200,
            "request {i} on the connection opened before"
        );
    }
    assert!(
        edge.counter(CERT_RELOADS, &[("result", "ok")]).await >= 1.0,
        "the rotation is counted as an ok reload"
    );
}

#[tokio::test]
async fn a_bad_certificate_written_over_the_file_is_refused_and_the_old_one_keeps_serving() {
    let origin = cacheable_origin().await;
    let certs = site_certs();
    let edge = start_tls_edge(&origin, &["watch_interval = \"50ms\""], &[&certs.a]).await;
    let client = TlsClient::new(&certs.pki);
    let old = certs.a.leaf();
    // Served before the files change (the node is running and watching them).
    assert_eq!(client.presented(edge.tls(), "a.test").await, old);

    // Not PEM at all.
    std::fs::write(&certs.a.cert, "-----BEGIN CERTIFICATE-----\ngarbage\n").unwrap();
    wait_counted(&edge, CERT_RELOADS, "failed").await;
    assert_eq!(client.presented(edge.tls(), "a.test").await, old);
    assert_eq!(client.get(edge.tls(), "a.test", "/x").await.status, 200);

    // A well-formed certificate with its own key, but expired.
    let failed_before = edge.counter(CERT_RELOADS, &[("result", "failed")]).await;
    let expired = certs
        .pki
        .issue_server(&["a.test", "127.0.0.1"], Validity::Expired);
    certs.a.replace_with(&expired);
    wait_until(
        "the expired certificate refused",
        CONDITION_LIMIT,
        || async { edge.counter(CERT_RELOADS, &[("result", "failed")]).await > failed_before },
    )
    .await;
    assert_eq!(
        client.presented(edge.tls(), "a.test").await,
        old,
        "new connections still get the old certificate"
    );
    assert_eq!(client.get(edge.tls(), "a.test", "/y").await.status, 200);
}

#[tokio::test]
async fn plain_http_on_the_tls_port_gets_a_400_saying_it_speaks_https() {
    let origin = cacheable_origin().await;
    let certs = site_certs();
    let edge = start_tls_edge(&origin, &[], &[&certs.a]).await;

    let reply = raw_exchange(edge.tls(), b"GET /obj HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
    assert_eq!(reply.status(), 400, "{}", reply.text());
    let text = reply.text();
    let (_, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(
        body.to_ascii_lowercase().contains("https"),
        "the body says the port speaks HTTPS: {body:?}"
    );
    assert_eq!(origin.total_hits(), 0);
    wait_counted(&edge, HANDSHAKES, "plaintext").await;
}

#[tokio::test]
async fn truncated_or_random_client_hellos_do_not_harm_the_node() {
    let origin = cacheable_origin().await;
    let certs = site_certs();
    let edge = start_tls_edge(&origin, &["handshake_timeout = \"200ms\""], &[&certs.a]).await;
    let client = TlsClient::new(&certs.pki);
    let hello = client.client_hello("a.test");
    assert!(
        hello.len() > 20 && hello[0] == 0x16,
        "a real ClientHello record"
    );

    // The first 20 bytes of a real ClientHello, then close.
    let mut stream = TcpStream::connect(edge.tls()).await.unwrap();
    stream.write_all(&hello[..20]).await.unwrap();
    drop(stream);
    // The same, left hanging while another client is served.
    let mut hanging = TcpStream::connect(edge.tls()).await.unwrap();
    hanging.write_all(&hello[..20]).await.unwrap();
    // A handshake record header followed by noise.
    let mut noise = vec![0x16, 0x03, 0x01, 0x00, 0x40];
    noise.extend((0..64u32).map(|i| (i.wrapping_mul(97) % 256) as u8));
    let reply = raw_exchange(edge.tls(), &noise).await;
    assert!(
        !reply.text().contains("HTTP/1.1 200"),
        "noise is not answered as a request: {:?}",
        reply.text()
    );

    let response = client.get(edge.tls(), "a.test", "/after").await;
    assert_eq!(
        response.status, 200,
        "a normal HTTPS request works after bad input"
    );
    assert_eq!(response.text(), "object");
    drop(hanging);
}

#[tokio::test]
async fn a_stalled_handshake_is_disconnected_after_the_timeout_and_counted() {
    let origin = cacheable_origin().await;
    let certs = site_certs();
    let edge = start_tls_edge(&origin, &["handshake_timeout = \"200ms\""], &[&certs.a]).await;
    let hello = TlsClient::new(&certs.pki).client_hello("a.test");

    let mut stalled = TcpStream::connect(edge.tls()).await.unwrap();
    stalled.write_all(&hello[..20]).await.unwrap();
    let started = Instant::now();
    let closed = within("the stalled client disconnected", CONDITION_LIMIT, async {
        let mut buf = [0u8; 1024];
        loop {
            match stalled.read(&mut buf).await {
                Ok(0) | Err(_) => return started.elapsed(),
                // An alert before the close is fine.
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed >= Duration::from_millis(150),
        "disconnected after the handshake timeout, not before: {closed:?}"
    );
    wait_counted(&edge, HANDSHAKES, "timeout").await;
}

#[tokio::test]
async fn an_edge_naming_an_expired_certificate_refuses_to_start() {
    let origin = cacheable_origin().await;
    let pki = TestPki::new("expired");
    let expired = pki.server_cert_valid("old", &["a.test"], Validity::Expired);
    let toml = edge_toml(origin.addr(), &[], &[&expired], "");

    let error = match verge_testkit::bind::<EdgeRole>(&edge_config(&toml)).await {
        Ok(_) => panic!("an edge with an expired certificate started"),
        Err(error) => error.to_string(),
    };
    assert!(
        error.contains(&expired.cert.display().to_string()),
        "the error names the file: {error}"
    );
    assert!(error.contains("expired"), "the error says expired: {error}");
}

/// A shield in front of `origin`, serving HTTPS with `cert` and asking clients for a
/// certificate signed by `client_ca`.
async fn start_mtls_shield(
    origin: &FakeOrigin,
    cert: &CertFiles,
    client_ca: &std::path::Path,
) -> RunningNode {
    let toml = format!(
        "[shield]\nid = \"shield-tls\"\nregion = \"us\"\n\
         [server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nshutdown_grace = \"1s\"\n\
         [origin]\nservers = [\"http://{}\"]\n\
         [tls]\nlisten = [\"127.0.0.1:0\"]\nclient_ca = {}\n{}",
        origin.addr(),
        toml_path(client_ca),
        cert.toml_entry()
    );
    let config = ShieldConfig::from_toml(&toml)
        .unwrap_or_else(|e| panic!("test shield config is invalid:\n{toml}\n{e}"));
    RunningNode::start::<ShieldRole>(&config).await
}

/// An edge whose only shield is `shield_url`, reached with `[shields.tls]` = `client_tls`
/// lines, without falling back to the origin.
async fn start_shielded_edge(
    origin: &FakeOrigin,
    shield_url: &str,
    client_tls: &str,
) -> RunningNode {
    let toml = format!(
        "[edge]\nid = \"edge-mtls\"\n\
         [server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nshutdown_grace = \"1s\"\n\
         [upstream]\norigin = \"http://{}\"\nconnect_timeout = \"1s\"\nresponse_timeout = \"5s\"\n\
         [shields]\nmembers = [{{ id = \"shield-tls\", url = \"{shield_url}\" }}]\norigin_fallback = false\n\
         [shields.tls]\n{client_tls}\n",
        origin.addr()
    );
    RunningNode::start::<EdgeRole>(&edge_config(&toml)).await
}

#[tokio::test]
async fn an_edge_fetches_through_a_shield_over_mutual_tls_and_fails_without_a_client_certificate() {
    let origin = cacheable_origin().await;
    let pki = TestPki::new("tier");
    let shield_cert = pki.server_cert("shield", &["127.0.0.1"]);
    let edge_cert = pki.client_cert("edge", "edge-mtls");
    let shield = start_mtls_shield(&origin, &shield_cert, &pki.ca_file).await;
    let shield_url = format!("https://{}", shield.tls());
    let ca = format!("ca_file = {}", toml_path(&pki.ca_file));

    let with_cert = format!(
        "{ca}\nclient_cert = {}\nclient_key = {}",
        toml_path(&edge_cert.cert),
        toml_path(&edge_cert.key)
    );
    let edge = start_shielded_edge(&origin, &shield_url, &with_cert).await;
    let client = HttpClient::http1();
    for _ in 0..2 {
        let response = client
            .get_with(&edge.url("/tiered"), &[("host", "www.example.test")])
            .await;
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(response.text(), "object");
    }
    assert_eq!(
        origin.hits("/tiered"),
        1,
        "fetched once, through the shield"
    );
    let via = origin
        .last_request("/tiered")
        .unwrap()
        .header("via")
        .unwrap_or_default();
    assert!(
        via.contains("shield-tls"),
        "the shield fetched it: Via {via:?}"
    );

    let without_cert = start_shielded_edge(&origin, &shield_url, &ca).await;
    let response = client
        .get_with(
            &without_cert.url("/refused"),
            &[("host", "www.example.test")],
        )
        .await;
    assert_eq!(
        response.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "without a client certificate no shield can answer: {}",
        response.text()
    );
    assert_ne!(response.text(), "object");
    assert_eq!(origin.hits("/refused"), 0, "the shield never fetched it");
    wait_counted(&shield, HANDSHAKES, "error").await;
}

#[tokio::test]
async fn a_tls_connection_that_sends_no_request_is_closed() {
    let origin = cacheable_origin().await;
    let certs = site_certs();
    let toml = edge_toml(origin.addr(), &[], &[&certs.a], "").replace(
        "shutdown_grace = \"1s\"\n",
        "shutdown_grace = \"1s\"\nheader_read_timeout = \"300ms\"\n",
    );
    let edge = start_edge_toml(&toml).await;
    let mut stream = TlsClient::new(&certs.pki)
        .handshake(edge.tls(), "a.test")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(CONDITION_LIMIT, stream.read(&mut buf))
        .await
        .expect("the silent TLS connection is closed");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}
