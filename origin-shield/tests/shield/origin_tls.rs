//! A shield's pool over `https://` origin servers (`[origin.tls]`): fetched over TLS, a named
//! server verified by its host name while the connection goes to the address DNS gave, and
//! unusable TLS files refused at start. HTTPS fake origins on `127.0.0.1:0`, certificates from
//! a test CA.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::{StatusCode, Version};
use prometheus::{IntGauge, Registry};
use verge_config::{ClientTlsConfig, OriginPoolConfig, OriginUrl, ShieldConfig};
use verge_node::RequestError;
use verge_origin_shield::dns::{Answer, LookupFuture, NameLookup};
use verge_origin_shield::pool::OriginPool;

use verge_testkit::node::tls_start_error;
use verge_testkit::pki::{toml_path, TestPki};
use verge_testkit::pool::upstream_config;
use verge_testkit::tls_origin::{OriginSettings, TlsOrigin, BODY};
use verge_testkit::upstream::get_through;
use verge_testkit::HttpClient;

/// The name the fake DNS gives `127.0.0.1` for.
const NAME: &str = "origin.test";

/// Answers `127.0.0.1` for every name.
struct Loopback;

impl NameLookup for Loopback {
    fn lookup<'a>(&'a self, _host: &'a str) -> LookupFuture<'a> {
        Box::pin(async {
            Ok(Answer {
                addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
                ttl: Duration::from_secs(60),
            })
        })
    }
}

fn shield_toml(server: &str, tls: &str) -> String {
    format!(
        "[shield]\nid = \"s1\"\n[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
         [origin]\nservers = [\"{server}\"]\nconnect_timeout = \"1s\"\nresponse_timeout = \"5s\"\n\
         [origin.tls]\n{tls}"
    )
}

/// A GET for `cdn.example`: status and body.
async fn http_get(addr: SocketAddr, path: &str) -> (StatusCode, String) {
    let url = format!("http://{addr}{path}");
    let response = HttpClient::http1()
        .request("GET", &url, &[("host", "cdn.example")], "")
        .await;
    (response.status, response.text())
}

#[tokio::test]
async fn a_shield_fetches_from_an_https_origin_server_and_caches() {
    let pki = TestPki::new("shield");
    let origin = TlsOrigin::with_cert(pki.server_cert("origin", &["127.0.0.1"])).await;
    let text = shield_toml(
        &format!("https://{}", origin.addr),
        &format!("ca_file = {}\n", toml_path(&pki.ca_file)),
    );
    let node = verge_testkit::bind::<verge_origin_shield::ShieldRole>(
        &ShieldConfig::from_toml(&text).unwrap(),
    )
    .await
    .unwrap();
    let data = node.data_addr();
    let (stop, running) = verge_testkit::spawn_until_stopped(|stopped| node.run(stopped));

    assert_eq!(http_get(data, "/obj").await, (StatusCode::OK, BODY.into()));
    assert_eq!(http_get(data, "/obj").await, (StatusCode::OK, BODY.into()));
    assert_eq!(origin.requests(), 1, "the second request is a hit");
    assert_eq!(origin.alpn(), vec!["h2".to_string()]);
    assert_eq!(origin.versions(), vec![Version::HTTP_2]);

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .unwrap()
        .unwrap();
}

fn pool_config(server: &str, tls: ClientTlsConfig) -> OriginPoolConfig {
    let url = OriginUrl::parse(server).unwrap();
    OriginPoolConfig {
        upstream: upstream_config(url.clone(), tls),
        retries: 0,
        ..verge_testkit::pool::pool_config(&[url], Duration::from_secs(1))
    }
}

async fn named_pool(server: &str, tls: ClientTlsConfig) -> OriginPool {
    let resolver = verge_testkit::pool::resolver_config();
    let pool = OriginPool::with_lookup(
        &pool_config(server, tls),
        &resolver,
        Some(Arc::new(Loopback)),
        &Registry::new(),
        &IntGauge::new("in_use", "slots").unwrap(),
    )
    .unwrap();
    pool.first_lookups().await;
    pool
}

async fn send(pool: &OriginPool) -> Result<StatusCode, RequestError> {
    let (status, _body) = get_through(pool, NAME, "/named", &[]).await?;
    Ok(status)
}

#[tokio::test]
async fn a_named_https_server_is_reached_at_its_address_and_verified_by_its_name() {
    let pki = TestPki::new("named");
    let origin = TlsOrigin::start(OriginSettings::new(pki.server_cert("origin", &[NAME]))).await;
    let tls = ClientTlsConfig {
        ca_file: Some(pki.ca_file.clone()),
        ..ClientTlsConfig::default()
    };
    let port = origin.addr.port();
    let pool = named_pool(&format!("https://{NAME}:{port}"), tls.clone()).await;

    assert_eq!(send(&pool).await.unwrap(), StatusCode::OK);
    assert_eq!(origin.requests(), 1);
    assert_eq!(
        origin.authorities(),
        vec![format!("{NAME}:{port}")],
        "a request without Host names the URL's host and port"
    );

    // A name the certificate does not carry is refused, even though the address is the same.
    let wrong = ClientTlsConfig {
        server_name: Some("other.test".into()),
        ..tls
    };
    let pool = named_pool(&format!("https://{NAME}:{port}"), wrong).await;
    let error = send(&pool).await.expect_err("wrong name");
    assert!(
        error
            .to_string()
            .contains("not valid for name \"other.test\""),
        "{error}"
    );
}

#[tokio::test]
async fn a_named_https_server_without_a_port_is_reached_on_443() {
    let pki = TestPki::new("port");
    let tls = ClientTlsConfig {
        ca_file: Some(pki.ca_file.clone()),
        ..ClientTlsConfig::default()
    };
    let pool = named_pool(&format!("https://{NAME}"), tls).await;
    let error = send(&pool).await.expect_err("nothing listens on 443");
    assert!(
        error.to_string().contains("(127.0.0.1:443)"),
        "the attempt went to port 443: {error}"
    );
}

#[tokio::test]
async fn an_unusable_origin_tls_file_stops_the_shield_naming_the_key() {
    let pki = TestPki::new("bad");
    let missing = pki.ca_file.with_file_name("nowhere.pem");
    let text = shield_toml(
        "https://127.0.0.1:9",
        &format!("ca_file = {}\n", toml_path(&missing)),
    );
    let config = ShieldConfig::from_toml(&text).unwrap();
    let message = tls_start_error(
        verge_testkit::bind::<verge_origin_shield::ShieldRole>(&config).await,
        "a missing CA file stops the start",
    );
    assert!(message.starts_with("origin.tls.ca_file: "), "{message}");
    assert!(message.contains("nowhere.pem"), "{message}");
}
