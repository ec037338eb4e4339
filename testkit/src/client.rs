//! Clients for tests: [`HttpClient`] (HTTP/1.1 or HTTP/2 prior knowledge) returning whole
//! responses, and [`raw_exchange`] for bytes no well-behaved client would send.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{within, IO_TIMEOUT};

/// A response read whole.
#[derive(Debug, Clone)]
pub struct TestResponse {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl TestResponse {
    /// Every value of header `name`, joined with `", "`; `None` when absent.
    pub fn header(&self, name: &str) -> Option<String> {
        super::joined_header(&self.headers, name)
    }

    /// The `Cache-Status` header, or `""` when absent.
    pub fn cache_status(&self) -> String {
        self.header("cache-status").unwrap_or_default()
    }

    /// The `Cache-Status` entries, in order: the caches nearest the origin first, the one that
    /// answered the client last.
    pub fn cache_status_entries(&self) -> Vec<String> {
        self.cache_status()
            .split(',')
            .map(|entry| entry.trim().to_string())
            .filter(|entry| !entry.is_empty())
            .collect()
    }

    /// The entry of the cache that answered the client: the last of `Cache-Status`, or `""`.
    pub fn cache_status_entry(&self) -> String {
        self.cache_status_entries().pop().unwrap_or_default()
    }

    /// Whether the answering cache's `Cache-Status` entry (the last) has exactly this parameter
    /// (`hit`, `stored`, `fwd=stale`, ...), compared whole, not as a substring.
    pub fn cache_status_has(&self, param: &str) -> bool {
        self.cache_status_entry()
            .split(';')
            .skip(1)
            .any(|p| p.trim() == param)
    }

    /// Asserts that [`cache_status_has`](Self::cache_status_has) `param`; on failure names `why`
    /// and the whole `Cache-Status`.
    #[track_caller]
    pub fn assert_cache_status_has(&self, param: &str, why: &str) {
        assert!(
            self.cache_status_has(param),
            "{why}: expected {param} in Cache-Status {:?}",
            self.cache_status()
        );
    }

    /// Asserts that the answering cache's `Cache-Status` entry has every one of `params`; on
    /// failure names `why` and the whole field.
    #[track_caller]
    pub fn assert_cache_status_has_all(&self, params: &[&str], why: &str) {
        assert!(
            params.iter().all(|param| self.cache_status_has(param)),
            "{why}: expected {params:?} in Cache-Status {:?}",
            self.cache_status()
        );
    }

    /// Asserts that the answering cache's `Cache-Status` entry lacks `param`; on failure names
    /// `why` and the whole field.
    #[track_caller]
    pub fn assert_cache_status_lacks(&self, param: &str, why: &str) {
        assert!(
            !self.cache_status_has(param),
            "{why}: expected no {param} in Cache-Status {:?}",
            self.cache_status()
        );
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A pooled client; clone it to share connections between tasks.
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpConnector, Full<Bytes>>,
}

impl HttpClient {
    pub fn http1() -> HttpClient {
        HttpClient {
            inner: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// HTTP/2 over cleartext with prior knowledge (no upgrade).
    pub fn http2() -> HttpClient {
        HttpClient {
            inner: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http(),
        }
    }

    pub async fn get(&self, url: &str) -> TestResponse {
        self.send(Request::get(url).body(Full::default()).unwrap())
            .await
    }

    /// GETs `url` with the extra request `headers`.
    pub async fn get_with(&self, url: &str, headers: &[(&str, &str)]) -> TestResponse {
        self.request("GET", url, headers, "").await
    }

    /// GETs `url` `count` times at once, each request on its own task sharing this client's
    /// connections; the responses in the order they completed.
    pub async fn get_concurrently(&self, url: &str, count: usize) -> Vec<TestResponse> {
        let mut requests = tokio::task::JoinSet::new();
        for _ in 0..count {
            let (client, url) = (self.clone(), url.to_string());
            requests.spawn(async move { client.get(&url).await });
        }
        let mut responses = Vec::with_capacity(count);
        while let Some(response) = requests.join_next().await {
            responses.push(response.unwrap());
        }
        responses
    }

    /// A request with `method`, extra `headers` and `body`.
    pub async fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> TestResponse {
        let mut request = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request.body(Full::new(body.into())).unwrap())
            .await
    }

    /// Sends `request` and reads the whole response, within [`IO_TIMEOUT`].
    pub async fn send(&self, request: Request<Full<Bytes>>) -> TestResponse {
        let what = format!("{} {}", request.method(), request.uri());
        within(&what, IO_TIMEOUT, async {
            let response = self
                .inner
                .request(request)
                .await
                .unwrap_or_else(|e| panic!("{what}: {e:?}"));
            let (head, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .unwrap_or_else(|e| panic!("{what}: reading the body: {e:?}"))
                .to_bytes();
            TestResponse {
                status: head.status,
                version: head.version,
                headers: head.headers,
                body,
            }
        })
        .await
    }
}

/// What a server sent back on a raw connection.
#[derive(Debug)]
pub struct RawReply {
    /// Everything read until the server closed the connection.
    pub bytes: Vec<u8>,
}

impl RawReply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// The status code of the first response line, e.g. 400 for `HTTP/1.1 400 Bad Request`.
    pub fn status(&self) -> u16 {
        let text = self.text();
        let line = text.lines().next().unwrap_or_default();
        let mut parts = line.split(' ');
        let version = parts.next().unwrap_or_default();
        assert!(
            version.starts_with("HTTP/1."),
            "not an HTTP/1 response: {text:?}"
        );
        parts
            .next()
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no status code in {line:?}"))
    }
}

/// Writes `request` on a new connection to `addr`, then reads until the server closes it.
/// Panics if the server does not close the connection within [`IO_TIMEOUT`]: every use is a
/// request after which the connection must be closed.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> RawReply {
    within(
        "raw exchange (server closing the connection)",
        IO_TIMEOUT,
        async {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            // The server may answer and close before it has read everything (a head too large):
            // a failed write is not the test's concern, the answer is.
            let _ = stream.write_all(request).await;
            let mut bytes = Vec::new();
            let mut buf = [0u8; 8192];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => bytes.extend_from_slice(&buf[..n]),
                    // A reset after the answer still ends the connection.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                    Err(e) => panic!("reading the raw reply: {e}"),
                }
            }
            RawReply { bytes }
        },
    )
    .await
}
