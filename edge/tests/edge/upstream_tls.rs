//! TLS towards upstreams: an edge in front of HTTPS fake origins and shields on `127.0.0.1:0`,
//! with certificates from a test CA. Checks verification (CA, name, `server_name`), mutual
//! TLS, HTTP/2 by ALPN, and that unusable TLS files stop a node at start.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode, Version};
use http_body_util::Full;
use prometheus::{IntGauge, Registry};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use verge_config::{ClientTlsConfig, EdgeConfig, NodeId, OriginUrl, ShieldSpec, UpstreamConfig};
use verge_edge::shields::{ShieldMetrics, ShieldUpstream};
use verge_edge::EdgeNode;
use verge_node::tls::client::client_config;
use verge_node::upstream::Upstream;
use verge_node::{OriginUpstream, RequestError, StartError};

use verge_testkit::eventually;
use verge_testkit::node::{test_config, tls_start_error};
use verge_testkit::pki::{toml_path, CertFiles, TestPki};
use verge_testkit::tls_origin::{OriginSettings, TlsOrigin, BODY};
use verge_testkit::upstream::get_through;
use verge_testkit::HttpClient;

/// A running edge; stopped when dropped.
struct RunningEdge {
    data_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    run: JoinHandle<()>,
}

impl Drop for RunningEdge {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.run.abort();
    }
}

/// An edge config: loopback listeners, `origin` as the upstream, then `extra` TOML (tables).
fn edge_toml(origin: &str, extra: &str) -> String {
    format!(
        "[edge]\nid = \"edge-tls\"\n\
         [server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nshutdown_grace = \"1s\"\n\
         [upstream]\norigin = \"{origin}\"\nconnect_timeout = \"1s\"\nresponse_timeout = \"5s\"\n\
         {extra}"
    )
}

async fn bind_edge(toml: &str) -> Result<EdgeNode, StartError> {
    let config: EdgeConfig = test_config(toml);
    verge_testkit::bind::<verge_edge::EdgeRole>(&config).await
}

async fn start_edge(toml: &str) -> RunningEdge {
    let node = bind_edge(toml).await.unwrap();
    let data_addr = node.data_addr();
    let (stop, run) = verge_testkit::spawn_until_stopped(|stopped| node.run(stopped));
    RunningEdge {
        data_addr,
        stop: Some(stop),
        run,
    }
}

/// `[upstream.tls]` (or another table) trusting `ca`, plus `lines`.
/// Asserts that `error` says `expected`.
fn assert_mentions(error: &RequestError, expected: &str) {
    let text = error.to_string();
    assert!(text.contains(expected), "{text}");
}

/// An edge whose origin is `url`, reached over TLS trusting `ca`, with the other
/// `[upstream.tls]` `lines`.
async fn edge_to_tls_origin(url: &str, ca: &Path, lines: &[String]) -> RunningEdge {
    start_edge(&edge_toml(url, &tls_table("upstream.tls", ca, lines))).await
}

fn tls_table(table: &str, ca: &Path, lines: &[String]) -> String {
    let mut text = format!("[{table}]\nca_file = {}\n", toml_path(ca));
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    text
}

fn client_cert_lines(files: &CertFiles) -> Vec<String> {
    vec![
        format!("client_cert = {}", toml_path(&files.cert)),
        format!("client_key = {}", toml_path(&files.key)),
    ]
}

/// A GET to the edge for `cdn.example`: status and body.
async fn get(edge: &RunningEdge, path: &str) -> (StatusCode, String) {
    let url = format!("http://{}{path}", edge.data_addr);
    let response = HttpClient::http1()
        .request("GET", &url, &[("host", "cdn.example")], "")
        .await;
    (response.status, response.text())
}

fn upstream_config(origin: &str, tls: ClientTlsConfig) -> UpstreamConfig {
    verge_testkit::pool::upstream_config(OriginUrl::parse(origin).unwrap(), tls)
}

fn trusting(ca: &Path) -> ClientTlsConfig {
    ClientTlsConfig {
        ca_file: Some(ca.to_path_buf()),
        ..ClientTlsConfig::default()
    }
}

/// Sends one GET through `upstream`; the status and body, or the error.
async fn send(upstream: &impl Upstream) -> Result<(StatusCode, String), RequestError> {
    get_through(
        upstream,
        "cdn.example",
        "/direct",
        &[("host", "cdn.example")],
    )
    .await
}

/// An origin client over TLS configured by `tls`, built the way a node builds one.
fn tls_upstream(origin: &str, tls: ClientTlsConfig) -> OriginUpstream {
    let built = client_config(&tls).unwrap();
    OriginUpstream::with_tls(
        &upstream_config(origin, tls),
        Some(built),
        IntGauge::new("in_use", "slots").unwrap(),
    )
}

#[tokio::test]
async fn an_edge_fetches_from_an_https_origin_and_caches_the_answer() {
    let pki = TestPki::new("main");
    let origin = TlsOrigin::with_cert(pki.server_cert("server", &["localhost", "127.0.0.1"])).await;
    let edge = edge_to_tls_origin(&format!("https://{}", origin.addr), &pki.ca_file, &[]).await;

    assert_eq!(
        get(&edge, "/page").await,
        (StatusCode::OK, BODY.to_string())
    );
    assert_eq!(
        get(&edge, "/page").await,
        (StatusCode::OK, BODY.to_string())
    );
    assert_eq!(origin.requests(), 1, "the second request is a cache hit");
}

#[tokio::test]
async fn an_origin_signed_by_an_unknown_ca_gets_a_502_naming_the_certificate_problem() {
    let pki = TestPki::new("real");
    let stranger = TestPki::new("stranger");
    let origin = TlsOrigin::with_cert(pki.server_cert("server", &["127.0.0.1"])).await;
    let url = format!("https://{}", origin.addr);
    let edge = edge_to_tls_origin(&url, &stranger.ca_file, &[]).await;

    let (status, _) = get(&edge, "/page").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(origin.requests(), 0);
    eventually("the origin saw the handshake fail", || async {
        !origin.handshake_errors().is_empty()
    })
    .await;

    let error = send(&tls_upstream(&url, trusting(&stranger.ca_file)))
        .await
        .expect_err("an unknown issuer is refused");
    assert_eq!(error.status(), StatusCode::BAD_GATEWAY);
    assert_mentions(&error, "TLS: invalid peer certificate: UnknownIssuer");
}

#[tokio::test]
async fn server_name_sets_the_name_sent_and_verified() {
    let pki = TestPki::new("sni");
    let origin = TlsOrigin::with_cert(pki.server_cert("server", &["origin.test"])).await;
    let url = format!("https://{}", origin.addr);

    let error = send(&tls_upstream(&url, trusting(&pki.ca_file)))
        .await
        .expect_err("the certificate does not name the IP");
    assert_mentions(&error, "not valid for name \"127.0.0.1\"");

    let without = edge_to_tls_origin(&url, &pki.ca_file, &[]).await;
    assert_eq!(get(&without, "/a").await.0, StatusCode::BAD_GATEWAY);

    let with = edge_to_tls_origin(
        &url,
        &pki.ca_file,
        &["server_name = \"origin.test\"".to_string()],
    )
    .await;
    assert_eq!(get(&with, "/a").await, (StatusCode::OK, BODY.to_string()));
    assert_eq!(origin.requests(), 1);
}

#[tokio::test]
async fn mutual_tls_needs_the_configured_client_certificate() {
    let pki = TestPki::new("mtls");
    let origin =
        TlsOrigin::with_client_ca(pki.server_cert("server", &["127.0.0.1"]), &pki.ca_file).await;
    let url = format!("https://{}", origin.addr);

    // TLS 1.3: the server refuses the missing certificate after the client's handshake is
    // done, so the alert ends the first exchange (which HTTP/2 reports without its TLS type).
    let error = send(&tls_upstream(&url, trusting(&pki.ca_file)))
        .await
        .expect_err("no client certificate");
    assert_eq!(error.status(), StatusCode::BAD_GATEWAY);
    assert_mentions(&error, "received fatal alert: CertificateRequired");

    let anonymous = edge_to_tls_origin(&url, &pki.ca_file, &[]).await;
    assert_eq!(get(&anonymous, "/a").await.0, StatusCode::BAD_GATEWAY);
    assert_eq!(origin.requests(), 0);

    let stranger = TestPki::new("mtls-stranger");
    let impostor = edge_to_tls_origin(
        &url,
        &pki.ca_file,
        &client_cert_lines(&stranger.client_cert("impostor", "edge.test")),
    )
    .await;
    assert_eq!(get(&impostor, "/a").await.0, StatusCode::BAD_GATEWAY);
    assert_eq!(origin.requests(), 0);

    let known = edge_to_tls_origin(
        &url,
        &pki.ca_file,
        &client_cert_lines(&pki.client_cert("edge", "edge.test")),
    )
    .await;
    assert_eq!(get(&known, "/a").await, (StatusCode::OK, BODY.to_string()));
    assert_eq!(origin.requests(), 1);
    assert_eq!(origin.client_certs(), vec![true]);
}

#[tokio::test]
async fn http2_is_negotiated_by_alpn_when_the_upstream_offers_it() {
    let pki = TestPki::new("h2");
    let origin = TlsOrigin::with_cert(pki.server_cert("server", &["127.0.0.1"])).await;
    let edge = edge_to_tls_origin(&format!("https://{}", origin.addr), &pki.ca_file, &[]).await;

    assert_eq!(get(&edge, "/one").await.0, StatusCode::OK);
    assert_eq!(get(&edge, "/two").await.0, StatusCode::OK);
    assert_eq!(
        origin.alpn(),
        vec!["h2".to_string()],
        "one connection, HTTP/2"
    );
    assert_eq!(origin.versions(), vec![Version::HTTP_2, Version::HTTP_2]);
    assert_eq!(
        origin.authorities(),
        vec!["cdn.example".to_string(), "cdn.example".to_string()],
        "HTTP/2 names the client's host as :authority, as HTTP/1.1 does in Host"
    );
}

#[tokio::test]
async fn http1_is_used_when_the_upstream_offers_only_http1() {
    let pki = TestPki::new("h1");
    let mut settings = OriginSettings::new(pki.server_cert("server", &["127.0.0.1"]));
    settings.alpn = vec![b"http/1.1".to_vec()];
    let origin = TlsOrigin::start(settings).await;
    let upstream = tls_upstream(&format!("https://{}", origin.addr), trusting(&pki.ca_file));

    assert_eq!(
        send(&upstream).await.unwrap(),
        (StatusCode::OK, BODY.to_string())
    );
    assert_eq!(origin.alpn(), vec!["http/1.1".to_string()]);
    assert_eq!(origin.versions(), vec![Version::HTTP_11]);
    assert_eq!(origin.authorities(), vec!["cdn.example".to_string()]);
}

#[tokio::test]
async fn an_https_shield_is_reached_with_the_shields_tls_settings() {
    let pki = TestPki::new("shield");
    let shield =
        TlsOrigin::with_client_ca(pki.server_cert("shield", &["127.0.0.1"]), &pki.ca_file).await;
    // The origin is never asked: fallback is off, and its TLS table trusts nobody we use.
    let shields = format!(
        "[shields]\norigin_fallback = false\n\
         [[shields.members]]\nid = \"s1\"\nurl = \"https://{}\"\n{}",
        shield.addr,
        tls_table(
            "shields.tls",
            &pki.ca_file,
            &client_cert_lines(&pki.client_cert("edge", "edge.test")),
        )
    );
    let edge = start_edge(&edge_toml("http://127.0.0.1:9", &shields)).await;

    assert_eq!(get(&edge, "/s").await, (StatusCode::OK, BODY.to_string()));
    assert_eq!(shield.requests(), 1);
    assert_eq!(shield.client_certs(), vec![true]);
    assert_eq!(shield.alpn(), vec!["h2".to_string()]);
    assert_eq!(shield.authorities(), vec!["cdn.example".to_string()]);
}

#[tokio::test]
async fn https_shields_that_join_later_use_the_shields_tls_settings() {
    let pki = TestPki::new("later");
    let shield = TlsOrigin::with_cert(pki.server_cert("shield", &["127.0.0.1"])).await;
    let config = EdgeConfig::from_toml(&edge_toml(
        "http://127.0.0.1:9",
        &format!(
            "[shields]\norigin_fallback = false\n{}",
            tls_table("shields.tls", &pki.ca_file, &[])
        ),
    ))
    .unwrap();
    let in_use = IntGauge::new("in_use", "slots").unwrap();
    let metrics = ShieldMetrics::register(&Registry::new()).unwrap();
    let origin = OriginUpstream::new(&config.upstream, in_use.clone());
    let upstream =
        ShieldUpstream::new(&config.shields, &config.upstream, origin, metrics, &in_use).unwrap();
    assert!(matches!(send(&upstream).await, Err(RequestError::NoShield)));

    upstream
        .set_members(&[ShieldSpec {
            id: NodeId::new("late").unwrap(),
            url: OriginUrl::parse(&format!("https://{}", shield.addr)).unwrap(),
            weight: 1,
            region: None,
        }])
        .unwrap();
    assert_eq!(
        send(&upstream).await.unwrap(),
        (StatusCode::OK, BODY.to_string())
    );
    assert_eq!(shield.requests(), 1);
}

#[tokio::test]
async fn a_tls_client_still_reaches_plain_http_upstreams() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let server = verge_testkit::http1::serve(listener, move |_| {
        counted.fetch_add(1, Ordering::SeqCst);
        async { Response::new(Full::new(Bytes::from("plain"))) }
    });
    let pki = TestPki::new("plain");
    let upstream = tls_upstream(&format!("http://{addr}"), trusting(&pki.ca_file));

    assert_eq!(
        send(&upstream).await.unwrap(),
        (StatusCode::OK, "plain".to_string())
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    server.abort();
}

#[tokio::test]
async fn an_https_origin_without_a_tls_configuration_gets_a_502_saying_so() {
    let upstream = OriginUpstream::new(
        &upstream_config("https://127.0.0.1:9", ClientTlsConfig::default()),
        IntGauge::new("in_use", "slots").unwrap(),
    );
    let error = send(&upstream).await.expect_err("no TLS configured");
    assert_eq!(error.status(), StatusCode::BAD_GATEWAY);
    assert_mentions(&error, "no TLS client configuration");
}

#[tokio::test]
async fn unusable_tls_files_stop_the_edge_at_start_naming_the_key() {
    let pki = TestPki::new("bad");
    let missing = pki.ca_file.with_file_name("missing-ca.pem");
    let toml = edge_toml(
        "https://127.0.0.1:9",
        &tls_table("upstream.tls", &missing, &[]),
    );
    let message = tls_start_error(bind_edge(&toml).await, "a missing CA file stops the start");
    assert!(message.starts_with("upstream.tls.ca_file: "), "{message}");
    assert!(message.contains("missing-ca.pem"), "{message}");

    let not_a_cert = pki.write("not-a-cert.pem", "hello\n");
    let key = pki.client_cert("edge", "edge.test").key;
    let shields = format!(
        "[[shields.members]]\nid = \"s1\"\nurl = \"https://127.0.0.1:9\"\n{}",
        tls_table(
            "shields.tls",
            &pki.ca_file,
            &[
                format!("client_cert = {}", toml_path(&not_a_cert)),
                format!("client_key = {}", toml_path(&key)),
            ],
        )
    );
    let message = tls_start_error(
        bind_edge(&edge_toml("http://127.0.0.1:9", &shields)).await,
        "an empty client certificate file stops the start",
    );
    assert!(
        message.starts_with("shields.tls.client_cert: "),
        "{message}"
    );
    assert!(message.contains("not-a-cert.pem"), "{message}");
}
