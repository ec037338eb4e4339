//! [`TestEdge`]: a real edge node on `127.0.0.1:0`, with a manual clock the test advances.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use verge_cache::{Clock, ManualClock};
use verge_config::EdgeConfig;

use crate::client::{HttpClient, TestResponse};
use crate::metrics::Metrics;
use crate::node::test_config;
use crate::within;

/// The node's id in tests; it names the node in `Via` (`1.1 edge-test`).
pub const EDGE_ID: &str = "edge-test";

/// A running edge node; shut down when dropped.
pub struct TestEdge {
    pub data_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// Freshness is judged by this clock; move it with `clock.advance(..)`.
    pub clock: Arc<ManualClock>,
    pub config: EdgeConfig,
    shutdown: Option<oneshot::Sender<()>>,
    run: Option<JoinHandle<()>>,
}

/// The TOML of a test edge: loopback listeners on port 0, `origin` as the upstream, bounded
/// timeouts, then `tweaks` — dotted-key lines such as `cache.max_bytes = "1MiB"` — which
/// replace a default of the same key or add to them.
pub fn edge_toml(origin: SocketAddr, tweaks: &[&str]) -> String {
    let defaults = node_defaults(
        ("edge.id", format!("{EDGE_ID:?}")),
        ["upstream.connect_timeout", "upstream.response_timeout"],
        ("upstream.origin", format!("\"http://{origin}\"")),
    );
    node_toml(&defaults, tweaks)
}

/// Every test node's defaults: its `id` (key and value), loopback listeners on port 0, a short
/// shutdown grace, bounded upstream `timeouts` (connect, response) under the keys the role keeps
/// them at, and its `origin` (key and value).
pub(crate) fn node_defaults(
    id: (&'static str, String),
    timeouts: [&'static str; 2],
    origin: (&'static str, String),
) -> Vec<(&'static str, String)> {
    vec![
        id,
        ("server.listen", "\"127.0.0.1:0\"".to_string()),
        ("server.admin_listen", "\"127.0.0.1:0\"".to_string()),
        ("server.shutdown_grace", "\"2s\"".to_string()),
        (timeouts[0], "\"1s\"".to_string()),
        (timeouts[1], "\"5s\"".to_string()),
        origin,
    ]
}

/// TOML from dotted-key `defaults`, then `tweaks` (`key = value` lines) replacing a default of
/// the same key or adding to them.
pub fn node_toml(defaults: &[(&str, String)], tweaks: &[&str]) -> String {
    let mut entries: Vec<(String, String)> = defaults
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    for tweak in tweaks {
        let (key, value) = tweak
            .split_once('=')
            .unwrap_or_else(|| panic!("tweak {tweak:?} is not `key = value`"));
        let (key, value) = (key.trim().to_string(), value.trim().to_string());
        match entries.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => entries.push((key, value)),
        }
    }
    entries
        .iter()
        .map(|(k, v)| format!("{k} = {v}\n"))
        .collect()
}

/// Starts an edge in front of `origin` with the test defaults plus `tweaks` (see [`edge_toml`]).
pub async fn start_edge(origin: SocketAddr, tweaks: &[&str]) -> TestEdge {
    start_edge_with_clock(origin, tweaks, Arc::new(ManualClock::new())).await
}

/// [`start_edge`] with a clock the test shares with other nodes.
pub async fn start_edge_with_clock(
    origin: SocketAddr,
    tweaks: &[&str],
    clock: Arc<ManualClock>,
) -> TestEdge {
    let config: EdgeConfig = test_config(&edge_toml(origin, tweaks));
    let node = crate::bind_with_clock::<verge_edge::EdgeRole>(&config, clock.clone())
        .await
        .unwrap();
    let (data_addr, admin_addr) = (node.data_addr(), node.admin_addr());
    let (tx, run) = crate::spawn_until_stopped(|stopped| node.run(stopped));
    TestEdge {
        data_addr,
        admin_addr,
        clock,
        config,
        shutdown: Some(tx),
        run: Some(run),
    }
}

impl TestEdge {
    /// `http://<data addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.data_addr)
    }

    /// GETs `path` over HTTP/1.1.
    pub async fn get(&self, path: &str) -> TestResponse {
        self.get_with(path, &[]).await
    }

    /// GETs `path` over HTTP/1.1 with the extra request `headers`.
    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> TestResponse {
        HttpClient::http1().get_with(&self.url(path), headers).await
    }

    /// `http://<admin addr><path>`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr)
    }

    /// GETs `path` from the admin listener over HTTP/1.1.
    pub async fn admin_get(&self, path: &str) -> TestResponse {
        HttpClient::http1().get(&self.admin_url(path)).await
    }

    /// Moves the node's clock forward by `seconds`.
    pub fn advance(&self, seconds: u64) {
        self.clock.advance(Duration::from_secs(seconds));
    }

    /// The node's current time, by its clock.
    pub fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// `POST /v1/purge` on the admin listener with this JSON body, with
    /// `Authorization: Bearer <token>` when a token is given.
    pub async fn purge(&self, body: &str, token: Option<&str>) -> TestResponse {
        purge_at(self.admin_addr, body, token).await
    }

    /// The admin `/metrics` text, fetched now.
    pub async fn metrics(&self) -> Metrics {
        let response = HttpClient::http1().get(&self.admin_url("/metrics")).await;
        assert_eq!(response.status, 200, "GET /metrics: {}", response.text());
        Metrics::parse(&response.text())
    }

    /// Signals the node to shut down (stop accepting, drain in-flight requests).
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Waits for the node's `run` to return, after [`TestEdge::begin_shutdown`].
    pub async fn stopped(&mut self, limit: Duration) {
        if let Some(run) = self.run.take() {
            within("edge shutdown", limit, run).await.unwrap();
        }
    }
}

/// `POST /v1/purge` on the admin listener at `admin`, as [`TestEdge::purge`].
pub async fn purge_at(admin: SocketAddr, body: &str, token: Option<&str>) -> TestResponse {
    let authorization = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(value) = &authorization {
        headers.push(("authorization", value.as_str()));
    }
    HttpClient::http1()
        .request(
            "POST",
            &format!("http://{admin}/v1/purge"),
            &headers,
            body.to_string(),
        )
        .await
}

impl Drop for TestEdge {
    fn drop(&mut self) {
        self.begin_shutdown();
    }
}
