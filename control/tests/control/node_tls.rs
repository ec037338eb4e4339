//! Mutual TLS on control's node listener (`controller.node_tls`): a real shield with a client
//! certificate from the nodes' CA registers over `https://` and applies purges; a client
//! without one, or with one from another CA, or speaking plain HTTP, gets nothing.

use crate::support;

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::json;
use support::{start_control, wait_until};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use verge_config::ShieldConfig;
use verge_testkit::pki::{toml_path, TestPki, TlsClient};
use verge_testkit::{FakeOrigin, RunningNode};

/// What a client sees of `GET /healthz` over TLS: the status line, or the error that ended
/// the connection first.
async fn healthz(client: &TlsClient, addr: std::net::SocketAddr) -> Result<String, String> {
    let mut stream = client
        .handshake(addr, "127.0.0.1")
        .await
        .map_err(|e| e.to_string())?;
    let request = b"GET /healthz HTTP/1.1\r\nhost: control\r\nconnection: close\r\n\r\n";
    stream.write_all(request).await.map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .await
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&answer).into_owned();
    match text.lines().next() {
        Some(line) if !line.is_empty() => Ok(line.to_string()),
        _ => Err("closed without an answer".to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_register_over_mutual_tls_and_clients_without_a_node_certificate_get_nothing() {
    let pki = TestPki::new("nodes");
    let server = pki.server_cert("control", &["127.0.0.1"]);
    let dir = TempDir::new().unwrap();
    let control = start_control(
        dir.path(),
        &format!(
            "[controller.node_tls]\ncert = {}\nkey = {}\nclient_ca = {}\n\
             [health]\nheartbeat_interval = \"100ms\"\nheartbeat_timeout = \"500ms\"\n\
             probe_interval = \"100ms\"\n",
            toml_path(&server.cert),
            toml_path(&server.key),
            toml_path(&pki.ca_file)
        ),
    )
    .await;

    // A shield with a certificate from the nodes' CA.
    let cert = pki.client_cert("shield", "s1");
    let origin = FakeOrigin::start().await;
    let toml = format!(
        "[shield]\nid = \"s1\"\nregion = \"us\"\n[server]\nlisten = \"127.0.0.1:0\"\n\
         admin_listen = \"127.0.0.1:0\"\nshutdown_grace = \"1s\"\n\
         [origin]\nservers = [\"http://{}\"]\n\
         [control]\nurl = \"https://{}\"\nheartbeat_interval = \"100ms\"\n\
         reconnect_min = \"20ms\"\nreconnect_max = \"200ms\"\n\
         [control.tls]\nca_file = {}\nclient_cert = {}\nclient_key = {}\n",
        origin.addr(),
        control.node_addr,
        toml_path(&pki.ca_file),
        toml_path(&cert.cert),
        toml_path(&cert.key),
    );
    let config = ShieldConfig::from_toml(&toml).unwrap();
    let _shield = RunningNode::start::<verge_origin_shield::ShieldRole>(&config).await;
    // (state, applied purge) of s1, once registered.
    let s1 = || async {
        let nodes = control.admin(Method::GET, "/v1/nodes", "").await.json();
        nodes.as_array().and_then(|all| {
            all.iter()
                .find(|n| n["id"] == json!("s1"))
                .map(|n| (n["state"].clone(), n["applied_seq"].clone()))
        })
    };
    wait_until(
        "s1 registered over TLS",
        Duration::from_secs(10),
        || async { s1().await.is_some_and(|(state, _)| state == json!("up")) },
    )
    .await;
    let seq = control.purge_url(1).await;
    wait_until("s1 applied the purge", Duration::from_secs(10), || async {
        s1().await.is_some_and(|(_, applied)| applied == json!(seq))
    })
    .await;

    // The nodes' CA and a node certificate: answered.
    let node = TlsClient::builder(&pki.ca_file)
        .alpn(&["http/1.1"])
        .client_cert(&cert)
        .build();
    assert_eq!(
        healthz(&node, control.node_addr).await.unwrap(),
        "HTTP/1.1 200 OK"
    );
    // No client certificate, or one from another CA: the handshake fails, nothing answered.
    let anonymous = TlsClient::builder(&pki.ca_file).alpn(&["http/1.1"]).build();
    let refused = healthz(&anonymous, control.node_addr).await.unwrap_err();
    assert!(!refused.is_empty());
    let stranger_pki = TestPki::new("strangers");
    let stranger = stranger_pki.client_cert("stranger", "s1");
    let impostor = TlsClient::builder(&pki.ca_file)
        .alpn(&["http/1.1"])
        .client_cert(&stranger)
        .build();
    assert!(healthz(&impostor, control.node_addr).await.is_err());
    // Plain HTTP on the TLS listener: no HTTP answer.
    let plain = support::raw_exchange(
        control.node_addr,
        b"GET /healthz HTTP/1.1\r\nhost: control\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(!plain.contains("200 OK"), "{plain}");
    // The admin listener stays plain HTTP.
    let reply = control.admin(Method::GET, "/healthz", "").await;
    assert_eq!(reply.status, StatusCode::OK);
}
