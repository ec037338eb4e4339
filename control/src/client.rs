//! A client of control's admin API, for `verge purge`, scripts and benchmarks; its reload call
//! works against every role's admin listener (`verge reload`).

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use verge_config::reload::ReloadRefusal;
use verge_config::wire::{PurgeAccepted, PurgeSpec, PurgeStatus};
use verge_config::ReloadReport;

/// Most bytes read from one admin API answer.
const MAX_ANSWER_BYTES: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0:?} is not an admin URL (expected e.g. http://127.0.0.1:7071)")]
    BadUrl(String),
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("answered {status}: {message}")]
    Refused { status: StatusCode, message: String },
    #[error("unexpected answer: {0}")]
    Garbage(String),
    #[error("purge {id} not complete after {waited:?}")]
    Timeout { id: u64, waited: Duration },
}

/// Talks to one control admin listener with a bearer token.
#[derive(Clone)]
pub struct AdminClient {
    base: String,
    token: String,
    http: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl AdminClient {
    pub fn new(base: &str, token: &str) -> Result<AdminClient, ClientError> {
        let base = base.trim_end_matches('/').to_string();
        match base.parse::<http::Uri>() {
            Ok(uri) if uri.scheme_str() == Some("http") && uri.authority().is_some() => {}
            _ => return Err(ClientError::BadUrl(base)),
        }
        Ok(AdminClient {
            base,
            token: token.to_string(),
            http: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            timeout: Duration::from_secs(10),
        })
    }

    async fn call(&self, method: Method, path: &str, body: Bytes) -> Result<Bytes, ClientError> {
        let (status, body) = self.exchange(method, path, body).await?;
        if !status.is_success() {
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            return Err(ClientError::Refused { status, message });
        }
        Ok(body)
    }

    /// `POST /v1/reload` on any Verge admin listener (control, edge or shield): the report of
    /// an applied reload, or the refusal with every problem (422).
    pub async fn reload(&self) -> Result<Result<ReloadReport, ReloadRefusal>, ClientError> {
        let (status, body) = self
            .exchange(Method::POST, "/v1/reload", Bytes::new())
            .await?;
        if status == StatusCode::UNPROCESSABLE_ENTITY {
            return Self::decode(&body).map(Err);
        }
        if !status.is_success() {
            return Err(ClientError::Refused {
                status,
                message: String::from_utf8_lossy(&body).trim().to_string(),
            });
        }
        Self::decode(&body).map(Ok)
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let url = format!("{}{path}", self.base);
        let request = Request::builder()
            .method(method)
            .uri(&url)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| ClientError::BadUrl(format!("{url}: {e}")))?;
        let unreachable = |reason: String| ClientError::Unreachable {
            url: url.clone(),
            reason,
        };
        let response = tokio::time::timeout(self.timeout, self.http.request(request))
            .await
            .map_err(|_| unreachable(format!("no answer within {:?}", self.timeout)))?
            .map_err(|e| unreachable(e.to_string()))?;
        let status = response.status();
        let body = http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| unreachable(format!("reading the answer: {e}")))?
            .to_bytes();
        Ok((status, body))
    }

    fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ClientError> {
        serde_json::from_slice(body).map_err(|e| ClientError::Garbage(e.to_string()))
    }

    /// Submits a purge; it is durable once this returns.
    pub async fn purge(&self, spec: &PurgeSpec) -> Result<PurgeAccepted, ClientError> {
        let body = serde_json::to_vec(spec).map_err(|e| ClientError::Garbage(e.to_string()))?;
        let answer = self
            .call(Method::POST, "/v1/purge", Bytes::from(body))
            .await?;
        Self::decode(&answer)
    }

    pub async fn status(&self, id: u64) -> Result<PurgeStatus, ClientError> {
        let answer = self
            .call(Method::GET, &format!("/v1/purge/{id}"), Bytes::new())
            .await?;
        Self::decode(&answer)
    }

    /// Polls a purge's status until it is complete or `limit` has passed.
    pub async fn wait(&self, id: u64, limit: Duration) -> Result<PurgeStatus, ClientError> {
        let start = Instant::now();
        let mut pause = Duration::from_millis(2);
        loop {
            let status = self.status(id).await?;
            if status.complete {
                return Ok(status);
            }
            if start.elapsed() >= limit {
                return Err(ClientError::Timeout {
                    id,
                    waited: start.elapsed(),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// `GET /v1/nodes` or `/v1/routing`, as JSON.
    pub async fn get_json(&self, path: &str) -> Result<serde_json::Value, ClientError> {
        let answer = self.call(Method::GET, path, Bytes::new()).await?;
        Self::decode(&answer)
    }
}
