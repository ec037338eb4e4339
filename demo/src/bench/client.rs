//! The benchmark's HTTP clients: each region's clients connect from the region's source
//! address (so the delay links and geo steering see them where they are), and every answer is
//! classified by its `Cache-Status` (RFC 9211).

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

/// Most bytes read of a small answer (steering, stats, metrics).
const MAX_SMALL_ANSWER: usize = 8 << 20;
/// Most of an error answer's body kept, to say what went wrong.
const ERROR_BODY_KEPT: usize = 1024;
/// Most of it shown: its first line, cut here.
const ERROR_DETAIL_CHARS: usize = 160;

/// An edge the clients of a region send their requests to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeTarget {
    /// The node id from the state, else the URL's authority.
    pub id: String,
    /// Base URL, e.g. `http://127.1.0.1:4312` (no trailing slash).
    pub url: String,
}

impl fmt::Display for EdgeTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "edge {} ({})", self.id, self.url)
    }
}

/// What the caches did for one request, read from `Cache-Status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheOutcome {
    /// The edge answered from its cache (fresh, or stale where allowed).
    pub edge_hit: bool,
    /// The edge missed and the shield answered from its cache.
    pub shield_hit: bool,
    /// This request made a cache go to the origin.
    pub origin_fetch: bool,
    /// The answer carried no `Cache-Status` at all.
    pub unknown: bool,
}

impl CacheOutcome {
    /// Who had the object: `edge` (a hit), `shield` (a shield's hit), `origin` (a cache on the
    /// way fetched it), `upstream` (the edge missed; no `Cache-Status` says more).
    pub fn served_by(&self) -> &'static str {
        if self.edge_hit {
            "edge"
        } else if self.shield_hit {
            "shield"
        } else if self.origin_fetch {
            "origin"
        } else {
            "upstream"
        }
    }
}

/// Classifies a (possibly combined) `Cache-Status` value. Each cache appends its entry, so the
/// last is the edge's and the one before it the shield's. A request fetched from the origin
/// when the cache that missed nearest the origin forwarded it (`fwd=`) on its own rather than
/// riding on another request's fill (`collapsed`).
pub fn classify(cache_status: &str) -> CacheOutcome {
    let entries: Vec<Vec<&str>> = cache_status
        .split(',')
        .map(|e| e.split(';').map(str::trim).collect::<Vec<_>>())
        .filter(|e: &Vec<&str>| e.first().is_some_and(|name| !name.is_empty()))
        .collect();
    let Some(edge) = entries.last() else {
        return CacheOutcome {
            unknown: true,
            ..CacheOutcome::default()
        };
    };
    let has = |entry: &[&str], token: &str| entry.iter().skip(1).any(|p| *p == token);
    let forwarded = |entry: &[&str]| entry.iter().skip(1).any(|p| p.starts_with("fwd="));
    if has(edge, "hit") {
        return CacheOutcome {
            edge_hit: true,
            ..CacheOutcome::default()
        };
    }
    if has(edge, "collapsed") || !forwarded(edge) {
        return CacheOutcome::default();
    }
    match entries.len().checked_sub(2).map(|i| &entries[i]) {
        Some(shield) if has(shield, "hit") => CacheOutcome {
            shield_hit: true,
            ..CacheOutcome::default()
        },
        Some(shield) => CacheOutcome {
            origin_fetch: forwarded(shield) && !has(shield, "collapsed"),
            ..CacheOutcome::default()
        },
        None => CacheOutcome {
            origin_fetch: true,
            ..CacheOutcome::default()
        },
    }
}

/// One answered request.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    pub status: StatusCode,
    pub cache: CacheOutcome,
    pub bytes: u64,
}

/// Why a request got no usable answer, naming the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    Connect {
        target: String,
        reason: String,
    },
    Timeout {
        target: String,
        after: Duration,
    },
    /// `detail`: the path, and what the answer said of itself (its body's first line, its
    /// `Cache-Status`).
    Status {
        target: String,
        status: StatusCode,
        detail: String,
    },
    Broken {
        target: String,
        reason: String,
    },
}

impl RequestError {
    /// Short name, to count errors by kind.
    pub fn kind(&self) -> String {
        match self {
            RequestError::Connect { .. } => "connect".into(),
            RequestError::Timeout { .. } => "timeout".into(),
            RequestError::Status { status, .. } => format!("status {}", status.as_u16()),
            RequestError::Broken { .. } => "broken".into(),
        }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Connect { target, reason } => {
                write!(f, "{target} does not answer: cannot connect: {reason}")
            }
            RequestError::Timeout { target, after } => {
                write!(
                    f,
                    "{target} does not answer: no complete response within {after:?}"
                )
            }
            RequestError::Status {
                target,
                status,
                detail,
            } => write!(f, "{target} answered {status} to {detail}"),
            RequestError::Broken { target, reason } => {
                write!(f, "{target}: the exchange broke: {reason}")
            }
        }
    }
}

/// `GET path`, then the first line of an error answer's body and its `Cache-Status`, each cut
/// short: enough to tell a node's own error from one it relayed.
fn error_detail(path: &str, body: &[u8], cache_status: &str) -> String {
    let cut = |text: &str| -> String {
        let text = text.trim();
        match text.char_indices().nth(ERROR_DETAIL_CHARS) {
            Some((at, _)) => format!("{}…", &text[..at]),
            None => text.to_string(),
        }
    };
    let body = String::from_utf8_lossy(body);
    let mut detail = format!("GET {}", cut(path));
    if let Some(line) = body.lines().map(str::trim).find(|l| !l.is_empty()) {
        detail += &format!(": {:?}", cut(line));
    }
    if !cache_status.is_empty() {
        detail += &format!(" (Cache-Status: {})", cut(cache_status));
    }
    detail
}

/// An error with its chain of causes, where hyper keeps the useful part ("connection refused").
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let part = c.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = c.source();
    }
    text
}

/// An HTTP/1.1 client whose connections leave from one source address, with keep-alive.
#[derive(Clone)]
pub struct RegionClient {
    http: Client<HttpConnector, Empty<Bytes>>,
    timeout: Duration,
}

impl RegionClient {
    /// Clients from `source` (any address when `None`); `timeout` bounds each request.
    pub fn new(source: Option<IpAddr>, timeout: Duration, pool: usize) -> RegionClient {
        let mut connector = HttpConnector::new();
        connector.set_local_address(source);
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        let http = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(pool.max(1))
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        RegionClient { http, timeout }
    }

    async fn send(
        &self,
        url: &str,
        host: Option<&str>,
        target: &str,
        keep_body: bool,
    ) -> Result<(StatusCode, HeaderMap, Bytes, u64), RequestError> {
        let mut builder = Request::get(url);
        if let Some(host) = host {
            builder = builder.header(header::HOST, host);
        }
        let request = builder
            .body(Empty::new())
            .map_err(|e| RequestError::Broken {
                target: target.to_string(),
                reason: format!("cannot build a request for {url}: {e}"),
            })?;
        let exchange = async {
            let response = self.http.request(request).await.map_err(|e| {
                if e.is_connect() {
                    RequestError::Connect {
                        target: target.to_string(),
                        reason: describe(&e),
                    }
                } else {
                    RequestError::Broken {
                        target: target.to_string(),
                        reason: describe(&e),
                    }
                }
            })?;
            let (parts, mut body) = response.into_parts();
            // An error's body says what went wrong: keep its start even when the body is
            // otherwise only counted.
            let keep_up_to = match (keep_body, parts.status.as_u16() >= 400) {
                (true, _) => MAX_SMALL_ANSWER,
                (false, true) => ERROR_BODY_KEPT,
                (false, false) => 0,
            };
            let mut kept = Vec::new();
            let mut bytes = 0u64;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| RequestError::Broken {
                    target: target.to_string(),
                    reason: format!("reading the body: {}", describe(&e)),
                })?;
                if let Ok(data) = frame.into_data() {
                    bytes += data.len() as u64;
                    if kept.len() + data.len() <= keep_up_to {
                        kept.extend_from_slice(&data);
                    } else if keep_up_to == ERROR_BODY_KEPT {
                        let room = keep_up_to.saturating_sub(kept.len());
                        kept.extend_from_slice(&data[..room.min(data.len())]);
                    }
                }
            }
            Ok((parts.status, parts.headers, Bytes::from(kept), bytes))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| RequestError::Timeout {
                target: target.to_string(),
                after: self.timeout,
            })?
    }

    /// `GET edge + path` with `Host: host`, read to the end; statuses of 400 and above are
    /// errors.
    pub async fn get(
        &self,
        edge: &EdgeTarget,
        path: &str,
        host: &str,
    ) -> Result<Answer, RequestError> {
        let url = format!("{}{path}", edge.url);
        let target = edge.to_string();
        let (status, headers, body, bytes) = self.send(&url, Some(host), &target, false).await?;
        let cache_status: Vec<&str> = headers
            .get_all("cache-status")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if status.as_u16() >= 400 {
            return Err(RequestError::Status {
                target,
                status,
                detail: error_detail(path, &body, &cache_status.join(", ")),
            });
        }
        Ok(Answer {
            status,
            cache: classify(&cache_status.join(", ")),
            bytes,
        })
    }

    /// `GET url` (optionally with `Host`), returning status, headers and body (up to 8 MiB).
    pub async fn fetch(
        &self,
        url: &str,
        host: Option<&str>,
    ) -> Result<(StatusCode, HeaderMap, Bytes), RequestError> {
        let (status, headers, body, _) = self.send(url, host, url, true).await?;
        Ok((status, headers, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_answer_says_what_it_was_asked_and_what_it_said() {
        let detail = error_detail(
            "/a.jpg",
            b"\n502 Bad Gateway: no answer from shield-us-1 (reset)\nmore\n",
            "verge-edge; fwd=uri-miss; fwd-status=502",
        );
        assert_eq!(
            detail,
            "GET /a.jpg: \"502 Bad Gateway: no answer from shield-us-1 (reset)\" (Cache-Status: verge-edge; fwd=uri-miss; fwd-status=502)"
        );
        assert_eq!(error_detail("/b", b"", ""), "GET /b");
        let long = "x".repeat(500);
        let cut = error_detail("/c", long.as_bytes(), "");
        assert!(cut.ends_with("x…\"") && cut.len() < 200, "{cut}");
    }

    #[test]
    fn cache_status_tells_edge_hits_shield_hits_and_origin_fetches() {
        let hit =
            classify("verge-shield; fwd=uri-miss; fwd-status=200; stored, verge-edge; hit; ttl=50");
        assert!(hit.edge_hit && !hit.origin_fetch);
        let shield_hit =
            classify("verge-shield; hit; ttl=9, verge-edge; fwd=uri-miss; fwd-status=200; stored");
        assert!(shield_hit.shield_hit && !shield_hit.edge_hit && !shield_hit.origin_fetch);
        let both_missed = classify("verge-shield; fwd=uri-miss; fwd-status=200; stored, verge-edge; fwd=uri-miss; fwd-status=200; stored");
        assert!(both_missed.origin_fetch);
        let shield_collapsed =
            classify("verge-shield; fwd=uri-miss; collapsed, verge-edge; fwd=uri-miss; stored");
        assert!(!shield_collapsed.origin_fetch);
        let edge_collapsed =
            classify("verge-shield; fwd=uri-miss, verge-edge; fwd=uri-miss; collapsed");
        assert_eq!(edge_collapsed, CacheOutcome::default());
        let direct = classify("verge-edge; fwd=uri-miss; fwd-status=200; stored");
        assert!(direct.origin_fetch);
        let stale = classify("verge-edge; hit; ttl=-3; detail=stale-while-revalidate");
        assert!(stale.edge_hit);
        assert!(classify("").unknown);
        assert!(!classify("verge-edge; detail=only-if-cached").origin_fetch);
        let served: Vec<&str> = [&hit, &shield_hit, &both_missed, &edge_collapsed]
            .iter()
            .map(|o| o.served_by())
            .collect();
        assert_eq!(served, ["edge", "shield", "origin", "upstream"]);
    }
}
