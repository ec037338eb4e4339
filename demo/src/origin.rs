//! The sample origin: a few hundred objects of mixed sizes (1 KiB to 1 MiB) and mixed cache
//! headers — long and short `max-age`, `s-maxage`, `stale-while-revalidate`, `no-store` and
//! `private` — with `ETag` / `Last-Modified` validators (answered with 304) and `Surrogate-Key`
//! tags to purge by. Bodies are slices of one generated buffer, so serving costs no copies.
//!
//! Besides the objects: `/` lists sample paths, `/healthz` answers `ok`, and `/_origin/stats`
//! reports how many requests reached the origin (`{"requests": N, "probes": M}`), to measure
//! offload. `OPTIONS` (the shields' latency probe) is answered and counted apart, as `probes`.
//!
//! Each fetch takes the origin's [`ServiceTime`] before it is answered (health checks, stats
//! and probes do not wait), so that a miss costs what it costs at a real origin.

mod time;

pub use time::{ServiceTime, MAX_SERVICE_TIME};

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::delay::PreciseTimer;

/// How long open connections may finish their requests once the origin is stopped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// `Last-Modified` times count back from here (2026-01-01T00:00:00Z), so they never change.
const EPOCH_SECS: u64 = 1_767_225_600;
/// Size of the buffer bodies are cut from: the largest object plus room for offsets.
const PATTERN_BYTES: usize = 2 * 1024 * 1024;

/// One kind of object: how many, how large, and how it may be cached.
struct Kind {
    prefix: &'static str,
    ext: &'static str,
    count: usize,
    min_bytes: usize,
    max_bytes: usize,
    content_type: &'static str,
    cache_control: &'static str,
    /// Surrogate keys shared by the kind; each object adds its own (`<tag>-<n>`).
    tags: &'static str,
    etag: bool,
    last_modified: bool,
}

const KIB: usize = 1024;

const KINDS: [Kind; 7] = [
    Kind {
        prefix: "/static/img/",
        ext: "jpg",
        count: 120,
        min_bytes: 4 * KIB,
        max_bytes: 512 * KIB,
        content_type: "image/jpeg",
        cache_control: "public, max-age=86400",
        tags: "static img",
        etag: true,
        last_modified: true,
    },
    Kind {
        prefix: "/static/js/",
        ext: "js",
        count: 40,
        min_bytes: KIB,
        max_bytes: 64 * KIB,
        content_type: "text/javascript",
        cache_control: "public, max-age=31536000, immutable",
        tags: "static js",
        etag: true,
        last_modified: false,
    },
    Kind {
        prefix: "/video/seg-",
        ext: "ts",
        count: 40,
        min_bytes: 256 * KIB,
        max_bytes: 1024 * KIB,
        content_type: "video/mp2t",
        cache_control: "max-age=600",
        tags: "video",
        etag: true,
        last_modified: true,
    },
    Kind {
        prefix: "/api/products/",
        ext: "json",
        count: 80,
        min_bytes: KIB,
        max_bytes: 4 * KIB,
        content_type: "application/json",
        cache_control: "max-age=5, s-maxage=60",
        tags: "api product",
        etag: true,
        last_modified: false,
    },
    Kind {
        prefix: "/news/",
        ext: "html",
        count: 30,
        min_bytes: 4 * KIB,
        max_bytes: 32 * KIB,
        content_type: "text/html; charset=utf-8",
        cache_control: "max-age=30, stale-while-revalidate=60",
        tags: "news",
        etag: false,
        last_modified: true,
    },
    Kind {
        prefix: "/account/",
        ext: "json",
        count: 10,
        min_bytes: KIB,
        max_bytes: 2 * KIB,
        content_type: "application/json",
        cache_control: "private, no-store",
        tags: "",
        etag: false,
        last_modified: false,
    },
    Kind {
        prefix: "/live/ticker-",
        ext: "json",
        count: 4,
        min_bytes: KIB,
        max_bytes: KIB,
        content_type: "application/json",
        cache_control: "no-store",
        tags: "",
        etag: false,
        last_modified: false,
    },
];

/// One object the origin serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleObject {
    pub path: String,
    pub size: usize,
    pub content_type: &'static str,
    pub cache_control: &'static str,
    /// `Surrogate-Key` value; empty: none.
    pub surrogate_key: String,
    pub etag: Option<String>,
    pub last_modified: Option<SystemTime>,
    /// Whether a shared cache may store it.
    pub cacheable: bool,
    /// Where its body starts in the pattern buffer.
    offset: usize,
}

/// Every object the sample origin serves, in a fixed order (the same on every run).
pub fn catalog() -> Vec<SampleObject> {
    let mut objects = Vec::new();
    for kind in &KINDS {
        for n in 0..kind.count {
            let path = format!("{}{n:03}.{}", kind.prefix, kind.ext);
            let hash = fnv1a(path.as_bytes());
            let size = log_uniform(kind.min_bytes, kind.max_bytes, hash);
            let tag = kind.tags.split(' ').next_back().unwrap_or_default();
            let surrogate_key = if kind.tags.is_empty() {
                String::new()
            } else {
                format!("{} {tag}-{n}", kind.tags)
            };
            objects.push(SampleObject {
                size,
                content_type: kind.content_type,
                cache_control: kind.cache_control,
                surrogate_key,
                etag: kind.etag.then(|| format!("\"{:016x}\"", hash)),
                last_modified: kind
                    .last_modified
                    .then(|| UNIX_EPOCH + Duration::from_secs(EPOCH_SECS - (hash % 10_000) * 3600)),
                cacheable: !kind.cache_control.contains("no-store"),
                offset: (hash as usize >> 8) % (PATTERN_BYTES - size),
                path,
            });
        }
    }
    objects
}

/// Paths a shared cache may store, for clients to try.
pub fn samples() -> Vec<String> {
    catalog()
        .into_iter()
        .filter(|o| o.cacheable)
        .map(|o| o.path)
        .collect()
}

/// FNV-1a: a stable hash, so sizes and validators are the same on every run.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A size between `min` and `max`, spread evenly on a log scale by `hash`.
fn log_uniform(min: usize, max: usize, hash: u64) -> usize {
    if max <= min {
        return min;
    }
    let u = (hash % 10_000) as f64 / 10_000.0;
    let size = (min as f64) * ((max as f64) / (min as f64)).powf(u);
    (size as usize).clamp(min, max)
}

/// What a sample origin counted: fetches, and `OPTIONS` probes apart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OriginCounts {
    pub requests: u64,
    pub probes: u64,
}

/// What the request handler shares.
struct OriginState {
    objects: std::collections::HashMap<String, SampleObject>,
    listing: Bytes,
    pattern: Bytes,
    requests: AtomicU64,
    /// `OPTIONS` requests: latency probes, not fetches.
    probes: AtomicU64,
    /// How long each fetch takes before it is answered.
    service_time: ServiceTime,
    /// Ends service times on time (tokio's own timer rounds up to whole milliseconds).
    timer: PreciseTimer,
}

/// A running sample origin; stops when stopped or dropped.
pub struct SampleOrigin {
    addr: SocketAddr,
    state: Arc<OriginState>,
    stop: watch::Sender<bool>,
    serve: Option<JoinHandle<()>>,
}

impl SampleOrigin {
    /// Binds `listen` (port 0 picks a free port) and serves the [`catalog`], each fetch
    /// taking `service_time`.
    pub async fn start(listen: SocketAddr, service_time: ServiceTime) -> io::Result<SampleOrigin> {
        SampleOrigin::start_counting_from(listen, service_time, OriginCounts::default()).await
    }

    /// Like [`SampleOrigin::start`], its counters going on from `counts` (those of the origin
    /// it replaces, so that a run's count spans a restart).
    pub async fn start_counting_from(
        listen: SocketAddr,
        service_time: ServiceTime,
        counts: OriginCounts,
    ) -> io::Result<SampleOrigin> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let objects = catalog();
        let listing = objects
            .iter()
            .map(|o| format!("{:<28} {:>8} bytes  {}\n", o.path, o.size, o.cache_control))
            .collect::<String>();
        let pattern: Vec<u8> = (0..PATTERN_BYTES)
            .map(|i| {
                if i % 64 == 63 {
                    b'\n'
                } else {
                    b' ' + (i % 95) as u8
                }
            })
            .collect();
        let state = Arc::new(OriginState {
            objects: objects.into_iter().map(|o| (o.path.clone(), o)).collect(),
            listing: Bytes::from(listing),
            pattern: Bytes::from(pattern),
            requests: AtomicU64::new(counts.requests),
            probes: AtomicU64::new(counts.probes),
            service_time,
            timer: PreciseTimer::start("origin-timer"),
        });
        let (stop, stop_rx) = watch::channel(false);
        let serve = tokio::spawn(serve(listener, Arc::clone(&state), stop_rx));
        Ok(SampleOrigin {
            addr,
            state,
            stop,
            serve: Some(serve),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests that reached the origin (health checks, stats and probes not counted).
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// `OPTIONS` requests (latency probes) that reached the origin.
    pub fn probes(&self) -> u64 {
        self.state.probes.load(Ordering::Relaxed)
    }

    /// Stops accepting; open connections get [`SHUTDOWN_GRACE`] to finish. Returns what it
    /// counted in all.
    pub async fn stop(mut self) -> OriginCounts {
        let _ = self.stop.send(true);
        if let Some(serve) = self.serve.take() {
            let _ = serve.await;
        }
        OriginCounts {
            requests: self.requests(),
            probes: self.probes(),
        }
    }
}

impl Drop for SampleOrigin {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn serve(listener: TcpListener, state: Arc<OriginState>, mut stop: watch::Receiver<bool>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "sample origin: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        let _ = stream.set_nodelay(true);
        let state = Arc::clone(&state);
        let service = service_fn(move |request| {
            let (response, fetch) = answer(&state, &request);
            let state = Arc::clone(&state);
            async move {
                if fetch && !state.service_time.is_instant() {
                    let took = state.service_time.sample(&mut fastrand::Rng::new());
                    state.timer.sleep_until(Instant::now() + took).await;
                }
                Ok::<_, Infallible>(response)
            }
        });
        let connection = graceful.watch(
            builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned(),
        );
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
}

/// Completes once `stop` turns true or its sender is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}

type Body = Full<Bytes>;

/// The answer to `request`, and whether it is a fetch (counted, and taking the service time).
fn answer(state: &OriginState, request: &Request<Incoming>) -> (Response<Body>, bool) {
    let path = request.uri().path();
    match path {
        "/healthz" => {
            let ok = text(StatusCode::OK, "no-store", Bytes::from_static(b"ok\n"));
            return (ok, false);
        }
        "/_origin/stats" => {
            let body = format!(
                "{{\"requests\": {}, \"probes\": {}}}\n",
                state.requests.load(Ordering::Relaxed),
                state.probes.load(Ordering::Relaxed)
            );
            return (text(StatusCode::OK, "no-store", Bytes::from(body)), false);
        }
        _ => {}
    }
    if request.method() == Method::OPTIONS {
        state.probes.fetch_add(1, Ordering::Relaxed);
        let mut response = text(StatusCode::OK, "no-store", Bytes::new());
        response.headers_mut().insert(
            http::header::ALLOW,
            http::HeaderValue::from_static("GET, HEAD, OPTIONS"),
        );
        return (response, false);
    }
    state.requests.fetch_add(1, Ordering::Relaxed);
    (fetch(state, request, path), true)
}

/// The answer to a counted request.
fn fetch(state: &OriginState, request: &Request<Incoming>, path: &str) -> Response<Body> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "no-store",
            Bytes::from_static(b"the sample origin serves GET and HEAD\n"),
        );
    }
    if path == "/" {
        return text(StatusCode::OK, "max-age=60", state.listing.clone());
    }
    let Some(object) = state.objects.get(path) else {
        return text(
            StatusCode::NOT_FOUND,
            "max-age=10",
            Bytes::from_static(b"no such object; GET / lists them\n"),
        );
    };
    let not_modified = not_modified(object, request.headers());
    let mut response = Response::builder()
        .header(header::CACHE_CONTROL, object.cache_control)
        .header(header::CONTENT_TYPE, object.content_type);
    if !object.surrogate_key.is_empty() {
        response = response.header("surrogate-key", object.surrogate_key.as_str());
    }
    if let Some(etag) = &object.etag {
        response = response.header(header::ETAG, etag.as_str());
    }
    if let Some(modified) = object.last_modified {
        response = response.header(header::LAST_MODIFIED, httpdate::fmt_http_date(modified));
    }
    let (status, body) = if not_modified {
        (StatusCode::NOT_MODIFIED, Bytes::new())
    } else {
        response = response.header(header::CONTENT_LENGTH, object.size);
        let body = if request.method() == Method::HEAD {
            Bytes::new()
        } else {
            state
                .pattern
                .slice(object.offset..object.offset + object.size)
        };
        (StatusCode::OK, body)
    };
    response
        .status(status)
        .body(Full::new(body))
        .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "no-store", Bytes::new()))
}

/// Whether the request's validators match the object: `If-None-Match` first, else
/// `If-Modified-Since` (RFC 9110 §13.2.2).
fn not_modified(object: &SampleObject, headers: &http::HeaderMap) -> bool {
    if let Some(inm) = headers.get(header::IF_NONE_MATCH) {
        let Some(etag) = &object.etag else {
            return false;
        };
        let inm = inm.to_str().unwrap_or_default();
        return inm.trim() == "*"
            || inm
                .split(',')
                .any(|t| t.trim().trim_start_matches("W/") == etag.as_str());
    }
    match (
        headers
            .get(header::IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok()),
        object.last_modified,
    ) {
        (Some(since), Some(modified)) => modified <= since,
        _ => false,
    }
}

fn text(status: StatusCode, cache_control: &'static str, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_mixes_sizes_and_cache_headers_and_never_changes() {
        let objects = catalog();
        assert!(objects.len() >= 300, "{}", objects.len());
        assert_eq!(objects, catalog());
        let smallest = objects.iter().map(|o| o.size).min().unwrap();
        let largest = objects.iter().map(|o| o.size).max().unwrap();
        assert!(
            smallest <= 2 * KIB && largest >= 512 * KIB,
            "{smallest} {largest}"
        );
        assert!(objects.iter().all(|o| o.offset + o.size <= PATTERN_BYTES));
        assert!(objects.iter().any(|o| !o.cacheable));
        assert!(objects.iter().any(|o| o.cache_control.contains("s-maxage")));
        let samples = samples();
        assert!(samples.len() > 250);
        assert!(samples.iter().all(|p| !p.starts_with("/account/")));
    }

    /// The catalog's object at `path`.
    fn sample(path: &str) -> SampleObject {
        catalog().into_iter().find(|o| o.path == path).unwrap()
    }

    #[test]
    fn surrogate_keys_name_the_kind_and_the_object() {
        let img = sample("/static/img/007.jpg");
        assert_eq!(img.surrogate_key, "static img img-7");
        assert!(img.etag.is_some() && img.last_modified.is_some());
    }

    #[test]
    fn validators_match_as_rfc_9110_says() {
        let img = &sample("/static/img/001.jpg");
        let etag = img.etag.clone().unwrap();
        let mut headers = http::HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, format!("W/{etag}").parse().unwrap());
        assert!(not_modified(img, &headers));
        headers.insert(header::IF_NONE_MATCH, "\"other\"".parse().unwrap());
        headers.insert(
            header::IF_MODIFIED_SINCE,
            httpdate::fmt_http_date(SystemTime::now()).parse().unwrap(),
        );
        assert!(!not_modified(img, &headers), "If-None-Match wins");
        headers.remove(header::IF_NONE_MATCH);
        assert!(not_modified(img, &headers));
    }
}
