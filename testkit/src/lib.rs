//! Support for the integration tests: real nodes on `127.0.0.1:0`, driven over real sockets.
//!
//! - [`fake_origin`]: [`FakeOrigin`], an origin told per path what to answer, recording what it
//!   receives;
//! - [`edge`]: [`TestEdge`], an edge node with a manual clock, started in the test's runtime;
//! - [`client`]: an HTTP/1.1 and HTTP/2 client returning whole responses, and raw TCP exchanges
//!   for input no well-behaved client would send;
//! - [`metrics`]: reading values out of the admin `/metrics` text;
//! - [`http1`]: a bare HTTP/1.1 server for origins a test writes by hand;
//! - [`raw_origin`]: [`RawOrigin`], an origin answering with scripted bytes, for responses a
//!   server library would rewrite;
//! - [`pki`]: a test CA and the certificates it signs, and a TLS client;
//! - [`tls_origin`]: [`tls_origin::TlsOrigin`], an HTTPS upstream recording what it saw;
//! - [`node`]: nodes of any role bound as the command line binds them;
//! - [`cdn`]: [`TestCdn`], the cache under test in either topology (edge → origin, or
//!   edge → shield → origin), for tests that must hold in both;
//! - [`control`], [`tier`]: control planes and shield tiers of real nodes;
//! - [`upstream`]: requests sent straight through an upstream, without a node;
//! - [`scenario`]: the cache under test in front of an origin answering one path, the start
//!   most cache tests share.
//!
//! Every network wait here is bounded by [`IO_TIMEOUT`]; conditions are awaited with
//! [`wait_until`], never with a fixed sleep.

// Test support panics on failure by design.
#![allow(clippy::unwrap_used)]

pub mod cdn;
pub mod client;
pub mod control;
pub mod edge;
pub mod etcd;
pub mod fake_origin;
pub mod http1;
pub mod metrics;
pub mod node;
pub mod pki;
pub mod pool;
pub mod raw_origin;
pub mod scenario;
pub mod tier;
pub mod tls_origin;
pub mod upstream;

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use cdn::{start_cdn, start_origin_and_cdn, TestCdn, Topology};
pub use client::{raw_exchange, HttpClient, RawReply, TestResponse};
pub use edge::{edge_toml, start_edge, start_edge_with_clock, TestEdge};
pub use fake_origin::{FakeOrigin, RecordedRequest, Reply};
pub use metrics::Metrics;
pub use node::{bind, bind_with_clock, RunningNode};
pub use raw_origin::{cacheable_head_with_body, RawOrigin};

/// Bound on any single network wait in a test (a request, a connect, a read to the end).
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Polls `condition` until it holds; panics naming `what` if it does not within `deadline`.
pub async fn wait_until<F, Fut>(what: &str, deadline: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let give_up = tokio::time::Instant::now() + deadline;
    loop {
        if condition().await {
            return;
        }
        if tokio::time::Instant::now() >= give_up {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits up to 5 s for `condition`; see [`wait_until`].
pub async fn eventually<F, Fut>(what: &str, condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_until(what, Duration::from_secs(5), condition).await;
}

/// Starts a [`FakeOrigin`] and an edge in front of it (with `tweaks`, see [`edge_toml`]); the
/// origin's `Date` follows the edge's manual clock.
pub async fn start_origin_and_edge(tweaks: &[&str]) -> (FakeOrigin, TestEdge) {
    let origin = FakeOrigin::start().await;
    let edge = start_edge(origin.addr(), tweaks).await;
    origin.follow_clock(edge.clock.clone());
    (origin, edge)
}

/// What a server's `run` is given to end it: done when the matching sender fires or drops.
pub type Stopped = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs a server's `run` in the test's runtime, ended by the returned sender (sent or dropped):
/// `spawn_until_stopped(|stopped| node.run(stopped))`.
pub fn spawn_until_stopped<F>(
    run: impl FnOnce(Stopped) -> F,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
)
where
    F: Future<Output = ()> + Send + 'static,
{
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(Box::pin(async move {
        let _ = stopped.await;
    })));
    (stop, task)
}

/// Runs `future`, panicking with `what` if it takes longer than `limit`.
pub async fn within<T>(what: &str, limit: Duration, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what} did not complete within {limit:?}"),
    }
}

/// A body of `len` bytes that is not one repeated byte, so truncation or reordering shows.
pub fn patterned_body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Formats `t` as an HTTP date (IMF-fixdate), as origins send in `Date` and `Expires`.
pub fn http_date(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let weekday = DAYS[(days % 7) as usize];
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{weekday}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        MONTHS[(month - 1) as usize],
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

/// Every value of header `name`, joined with `", "`; `None` when absent.
pub fn joined_header(headers: &http::HeaderMap, name: &str) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// An address nothing listens on, held for as long as this value lives: a socket bound to
/// port 0 that never listens, so connections to it are refused and nobody else can take the
/// port meanwhile (a port bound and released could be taken by anything).
pub struct DeadAddr {
    pub addr: std::net::SocketAddr,
    _reserved: tokio::net::TcpSocket,
}

impl DeadAddr {
    pub fn new() -> DeadAddr {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        DeadAddr {
            addr: socket.local_addr().unwrap(),
            _reserved: socket,
        }
    }
}

impl Default for DeadAddr {
    fn default() -> DeadAddr {
        DeadAddr::new()
    }
}

/// The path of `program` when the Debian `package` that provides it is installed; otherwise
/// `None`, after saying on the test output — not captured, so it shows whatever the test
/// harness hides — that `test` did not run and which package it needs.
pub fn installed(program: &str, package: &str, test: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|path| path.is_file())
    });
    if found.is_none() {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr().lock(),
            "SKIPPED {test}: it needs `{program}` from the Debian package `{package}` \
             (apt-get install {package}); it did not run"
        );
    }
    found
}
