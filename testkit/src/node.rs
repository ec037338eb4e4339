//! Real nodes of any role, bound the way the command line binds them and run in the test's
//! runtime.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use verge_cache::{Clock, SystemClock};
use verge_config::{ConfigFile, ConfigSource};
use verge_node::{ListenerAddrs, Node, Reload, Role, StartError};

use crate::{HttpClient, Metrics, TestResponse};

/// Binds a node of role `R` from `config` given on the command line, with the real clock.
pub async fn bind<R: Role>(config: &R::Config) -> Result<Node<R>, StartError> {
    bind_with_clock(config, Arc::new(SystemClock)).await
}

/// Binds a node of role `R` from `config` given on the command line; freshness is judged by
/// `clock` (a `ManualClock` lets a test move time for the cache).
pub async fn bind_with_clock<R: Role>(
    config: &R::Config,
    clock: Arc<dyn Clock>,
) -> Result<Node<R>, StartError> {
    Node::<R>::bind(config, ConfigSource::CommandLine, clock).await
}

/// The message of the TLS error that stopped a node's start; `why` says what should have.
pub fn tls_start_error<T>(started: Result<T, StartError>, why: &str) -> String {
    match started.err().expect(why) {
        StartError::Tls(message) => message,
        other => panic!("not a TLS error: {other}"),
    }
}

/// `toml` read as a configuration of type `C`; panics showing the file and what is wrong in it.
pub fn test_config<C: ConfigFile>(toml: &str) -> C {
    C::from_toml(toml).unwrap_or_else(|errors| panic!("test config is invalid:\n{toml}\n{errors}"))
}

/// A node of any role serving in the test's runtime; it stops (and drains) when dropped.
pub struct RunningNode {
    pub data_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// HTTPS listeners at start, in `tls.listen` order.
    pub tls_addrs: Vec<SocketAddr>,
    /// The listeners serving now, after any reload.
    pub listeners: ListenerAddrs,
    pub reloader: Arc<dyn Reload>,
    stop: Option<oneshot::Sender<()>>,
    run: Option<JoinHandle<()>>,
}

impl RunningNode {
    /// Runs a bound node until stopped.
    pub fn spawn<R: Role>(node: Node<R>) -> RunningNode {
        let (data_addr, admin_addr) = (node.data_addr(), node.admin_addr());
        let (tls_addrs, listeners, reloader) =
            (node.tls_addrs(), node.listener_addrs(), node.reloader());
        let (stop, run) = crate::spawn_until_stopped(|stopped| node.run(stopped));
        RunningNode {
            data_addr,
            admin_addr,
            tls_addrs,
            listeners,
            reloader,
            stop: Some(stop),
            run: Some(run),
        }
    }

    /// Binds a node from a file (reloads read it again) with the real clock, and runs it;
    /// panics naming why it could not start.
    pub async fn start_from<R: Role>(config: &R::Config, path: &std::path::Path) -> RunningNode {
        let source = ConfigSource::File(path.to_path_buf());
        match Node::<R>::bind(config, source, Arc::new(SystemClock)).await {
            Ok(node) => RunningNode::spawn(node),
            Err(error) => panic!("the {} node did not start: {error}", R::TABLE),
        }
    }

    /// Binds (as [`bind`]) and runs a node; panics naming why it could not start.
    pub async fn start<R: Role>(config: &R::Config) -> RunningNode {
        RunningNode::start_with_clock::<R>(config, Arc::new(SystemClock)).await
    }

    /// Binds (as [`bind_with_clock`]) and runs a node; panics naming why it could not start.
    pub async fn start_with_clock<R: Role>(
        config: &R::Config,
        clock: Arc<dyn Clock>,
    ) -> RunningNode {
        match bind_with_clock::<R>(config, clock).await {
            Ok(node) => RunningNode::spawn(node),
            Err(error) => panic!("the {} node did not start: {error}", R::TABLE),
        }
    }

    /// Parses `toml` as role `R`'s configuration and runs the node (real clock); panics naming
    /// what is wrong with the file or why the node could not start.
    pub async fn from_toml<R: Role>(toml: &str) -> RunningNode {
        RunningNode::start::<R>(&test_config(toml)).await
    }

    /// Keeps the node serving for as long as the runtime lives (benches' nodes).
    pub fn keep_serving(self) {
        tokio::spawn(async move {
            let _serving = self;
            std::future::pending::<()>().await;
        });
    }

    /// `http://<data addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.data_addr)
    }

    /// `http://<admin addr><path>`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr)
    }

    /// `POST /v1/reload` on the admin listener with this bearer token.
    pub async fn reload(&self, token: &str) -> TestResponse {
        let authorization = format!("Bearer {token}");
        HttpClient::http1()
            .request(
                "POST",
                &self.admin_url("/v1/reload"),
                &[("authorization", authorization.as_str())],
                "",
            )
            .await
    }

    /// The first HTTPS listener.
    pub fn tls(&self) -> SocketAddr {
        *self
            .tls_addrs
            .first()
            .expect("the node has an HTTPS listener")
    }

    /// What the node's `/metrics` says now.
    pub async fn metrics(&self) -> Metrics {
        let response = HttpClient::http1().get(&self.admin_url("/metrics")).await;
        assert_eq!(response.status, 200, "GET /metrics: {}", response.text());
        Metrics::parse(&response.text())
    }

    /// A counter's or gauge's value now, 0 when absent.
    pub async fn counter(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.metrics().await.value_or_zero(name, labels)
    }

    /// Stops the node (its listeners close) and waits until it has drained.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(run) = self.run.take() {
            crate::within("the node to stop", Duration::from_secs(10), run)
                .await
                .unwrap();
        }
    }
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
