//! Mutual TLS on control's node listener (`controller.node_tls`): a real shield with a client
//! certificate from the nodes' CA registers over `https://` and applies purges; a client
//! without one, or with one from another CA, or speaking plain HTTP, gets nothing; a
//! certificate from the nodes' CA speaks only for the node id it names.

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
    exchange(client, addr, "GET", "/healthz", "")
        .await
        .map(|answer| answer.lines().next().unwrap_or_default().to_string())
}

/// One request over TLS: the whole answer, or the error that ended the connection first.
async fn exchange(
    client: &TlsClient,
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> Result<String, String> {
    let mut stream = client
        .handshake(addr, "127.0.0.1")
        .await
        .map_err(|e| e.to_string())?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: control\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .await
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&answer).into_owned();
    match text.lines().next() {
        Some(line) if !line.is_empty() => Ok(text),
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

    // Another node's certificate from the same CA speaks for that node only: as s1 it is
    // refused everything, and s1 keeps its registration and applied purges.
    let s2 = TlsClient::builder(&pki.ca_file)
        .alpn(&["http/1.1"])
        .client_cert(&pki.client_cert("s2", "s2"))
        .build();
    let registration = json!({
        "id": "s1", "role": "shield", "region": "us", "data_url": "http://127.0.0.1:9",
        "admin_url": "http://127.0.0.1:9", "weight": 1
    });
    let attempts = [
        ("POST", "/v1/register", registration.to_string()),
        (
            "POST",
            "/v1/heartbeat",
            json!({"id": "s1", "applied_seq": 0, "table_version": 0, "in_flight": 0}).to_string(),
        ),
        (
            "POST",
            "/v1/ack",
            json!({"id": "s1", "applied_seq": 0}).to_string(),
        ),
        ("GET", "/v1/events?node=s1", String::new()),
    ];
    for (method, path, body) in &attempts {
        let answer = exchange(&s2, control.node_addr, method, path, body)
            .await
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 403"), "{path}: {answer}");
        assert!(answer.contains("does not name node s1"), "{path}: {answer}");
    }
    let refused = control.admin(Method::GET, "/metrics", "").await.text();
    assert!(
        refused.contains("verge_control_node_auth_refused_total{reason=\"certificate\"} 4"),
        "{refused}"
    );
    let (state, applied) = s1().await.unwrap();
    assert_eq!((state, applied), (json!("up"), json!(seq)));
    // For its own id it is answered.
    let own = exchange(&s2, control.node_addr, "GET", "/v1/events?node=s2", "").await;
    assert!(!own.unwrap_or_default().contains("does not name"));

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
