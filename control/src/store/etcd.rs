//! A client of etcd's v3 API through its JSON gateway (`POST /v3/kv/range`, `/v3/kv/txn`,
//! `/v3/lease/*`, `/v3/watch`, `/v3/auth/authenticate`), over the HTTP client control already
//! has: no gRPC, so building Verge needs no `protoc`. The gateway is part of every etcd server
//! since 3.4.
//!
//! Keys and values travel base64-encoded and 64-bit numbers as strings, as the gateway's
//! protobuf JSON mapping has them. A request goes to the member that answered last; when it
//! cannot be reached, or stays silent for its share of the timeout, the next member is tried,
//! all within [`Etcd::timeout`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};
use verge_serve::tls_client::{ClientConfig, Http1Client};

/// Longest line of a watch stream (one response: a batch of events).
const MAX_WATCH_LINE: usize = 16 * 1024 * 1024;
/// Largest unary response read.
const MAX_RESPONSE: usize = 64 * 1024 * 1024;

/// Why an etcd request failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EtcdError {
    /// No member answered in time: the cluster has lost its quorum, or none is reachable.
    #[error("etcd did not answer within {}ms (no quorum, or no member reachable; last: {last})", .timeout.as_millis())]
    Timeout { timeout: Duration, last: String },
    /// The cluster answered with an error.
    #[error("etcd refused the request: {0}")]
    Refused(String),
    /// The answer could not be read.
    #[error("etcd answered something this replica cannot read: {0}")]
    Decode(String),
}

/// What the store's metrics see of each request: its name, how long it took, and whether it
/// succeeded.
pub type Observer = Arc<dyn Fn(&'static str, Duration, bool) + Send + Sync>;

/// A client of one etcd cluster; cheap to share behind an `Arc`.
pub struct Etcd {
    endpoints: Vec<String>,
    /// The member tried first: the last one that answered.
    preferred: AtomicUsize,
    client: Http1Client,
    /// Longest wait for one request, across members.
    pub timeout: Duration,
    credentials: Option<(String, String)>,
    token: Mutex<Option<String>>,
    observer: Observer,
}

/// One key and its value.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Kv {
    #[serde(deserialize_with = "b64")]
    pub key: Vec<u8>,
    #[serde(default, deserialize_with = "b64")]
    pub value: Vec<u8>,
    #[serde(default, deserialize_with = "num")]
    pub create_revision: i64,
    #[serde(default, deserialize_with = "num")]
    pub mod_revision: i64,
    #[serde(default, deserialize_with = "num")]
    pub lease: i64,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Header {
    #[serde(default, deserialize_with = "num")]
    pub revision: i64,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RangeResponse {
    #[serde(default)]
    pub header: Header,
    #[serde(default)]
    pub kvs: Vec<Kv>,
    #[serde(default)]
    pub more: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct TxnResponse {
    #[serde(default)]
    pub header: Header,
    #[serde(default)]
    pub succeeded: bool,
    #[serde(default)]
    pub responses: Vec<ResponseOp>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ResponseOp {
    pub response_range: Option<RangeResponse>,
}

/// One change seen by a watch.
#[derive(Debug, Clone)]
pub enum Change {
    Put(Kv),
    Delete(Kv),
}

/// One message of a watch stream.
#[derive(Debug, Clone, Default)]
pub struct WatchBatch {
    /// The store's revision when the batch was sent.
    pub revision: i64,
    pub changes: Vec<Change>,
    /// Set when the watch was cancelled because history up to this revision was compacted.
    pub compacted: Option<i64>,
    /// Set when the server cancelled the watch for another reason.
    pub cancelled: Option<String>,
}

/// A condition of a transaction.
pub enum Cmp<'a> {
    /// The key's create revision (0: the key does not exist).
    Created(&'a [u8], i64),
    /// The key's last modification revision (0: the key does not exist).
    Modified(&'a [u8], i64),
    /// The key's value.
    Value(&'a [u8], &'a [u8]),
}

/// One operation of a transaction.
pub enum Op<'a> {
    Put {
        key: &'a [u8],
        value: &'a [u8],
        lease: i64,
    },
    Get(&'a [u8]),
    /// Deletes keys from `key` up to, not including, `end`.
    DeleteRange {
        key: &'a [u8],
        end: &'a [u8],
    },
    Delete(&'a [u8]),
}

fn enc(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

impl Cmp<'_> {
    fn to_json(&self) -> Value {
        match self {
            Cmp::Created(key, rev) => {
                json!({"key": enc(key), "target": "CREATE", "result": "EQUAL", "create_revision": rev.to_string()})
            }
            Cmp::Modified(key, rev) => {
                json!({"key": enc(key), "target": "MOD", "result": "EQUAL", "mod_revision": rev.to_string()})
            }
            Cmp::Value(key, value) => {
                json!({"key": enc(key), "target": "VALUE", "result": "EQUAL", "value": enc(value)})
            }
        }
    }
}

impl Op<'_> {
    fn to_json(&self) -> Value {
        match self {
            Op::Put { key, value, lease } => {
                let mut put = json!({"key": enc(key), "value": enc(value)});
                if *lease != 0 {
                    put["lease"] = Value::String(lease.to_string());
                }
                json!({ "request_put": put })
            }
            Op::Get(key) => json!({"request_range": {"key": enc(key)}}),
            Op::DeleteRange { key, end } => {
                json!({"request_delete_range": {"key": enc(key), "range_end": enc(end)}})
            }
            Op::Delete(key) => json!({"request_delete_range": {"key": enc(key)}}),
        }
    }
}

/// The first key after every key that starts with `prefix` (etcd's `range_end` for a prefix).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte 0xff: the range runs to the end of the key space.
    vec![0]
}

impl Etcd {
    /// A client of the members at `endpoints`; with `tls`, `https://` ones are reached over
    /// TLS (HTTP/1.1 only: the gateway shares its port with gRPC, which HTTP/2 would reach).
    pub fn new(
        endpoints: Vec<String>,
        timeout: Duration,
        credentials: Option<(String, String)>,
        tls: Option<Arc<ClientConfig>>,
        observer: Observer,
    ) -> Etcd {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        let client = Http1Client::new(&Client::builder(TokioExecutor::new()), connector, tls);
        Etcd {
            endpoints,
            preferred: AtomicUsize::new(0),
            client,
            timeout,
            credentials,
            token: Mutex::new(None),
            observer,
        }
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Reads one key, or every key from `key` up to `end`.
    pub async fn range(&self, key: &[u8], end: Option<&[u8]>) -> Result<RangeResponse, EtcdError> {
        let mut body = json!({"key": enc(key)});
        if let Some(end) = end {
            body["range_end"] = Value::String(enc(end));
        }
        self.call("range", "/v3/kv/range", &body).await
    }

    /// Up to `limit` keys from `key` up to `end`, in key order, as of `revision` (0: now).
    pub async fn range_page(
        &self,
        key: &[u8],
        end: &[u8],
        limit: usize,
        revision: i64,
    ) -> Result<RangeResponse, EtcdError> {
        let mut body = json!({"key": enc(key), "range_end": enc(end), "limit": limit.to_string()});
        if revision > 0 {
            body["revision"] = Value::String(revision.to_string());
        }
        self.call("range", "/v3/kv/range", &body).await
    }

    /// Writes one key (attached to `lease` unless it is 0).
    pub async fn put(&self, key: &[u8], value: &[u8], lease: i64) -> Result<i64, EtcdError> {
        let response = self
            .txn("put", &[], &[Op::Put { key, value, lease }], &[])
            .await?;
        Ok(response.header.revision)
    }

    /// Runs `success` when every comparison holds, else `failure`, atomically; `what` names
    /// it in the metrics (`op`).
    pub async fn txn(
        &self,
        what: &'static str,
        compare: &[Cmp<'_>],
        success: &[Op<'_>],
        failure: &[Op<'_>],
    ) -> Result<TxnResponse, EtcdError> {
        let body = json!({
            "compare": compare.iter().map(Cmp::to_json).collect::<Vec<_>>(),
            "success": success.iter().map(Op::to_json).collect::<Vec<_>>(),
            "failure": failure.iter().map(Op::to_json).collect::<Vec<_>>(),
        });
        let mut response: TxnResponse = self.call(what, "/v3/kv/txn", &body).await?;
        // Without comparisons the success branch always runs (the field is left out as false).
        if compare.is_empty() {
            response.succeeded = true;
        }
        Ok(response)
    }

    /// Drops the history of every key before `revision` (the current values stay): etcd keeps
    /// every old value until told so.
    pub async fn compact(&self, revision: i64) -> Result<(), EtcdError> {
        let _: Value = self
            .call(
                "compaction",
                "/v3/kv/compaction",
                &json!({"revision": revision.to_string()}),
            )
            .await?;
        Ok(())
    }

    /// Grants a lease of `ttl` seconds; returns its id.
    pub async fn grant(&self, ttl: u64) -> Result<i64, EtcdError> {
        #[derive(Deserialize)]
        struct Granted {
            #[serde(rename = "ID", deserialize_with = "num")]
            id: i64,
        }
        let granted: Granted = self
            .call(
                "lease_grant",
                "/v3/lease/grant",
                &json!({"TTL": ttl.to_string()}),
            )
            .await?;
        Ok(granted.id)
    }

    /// Renews a lease; returns the time to live it has now (0: the lease has expired).
    pub async fn keep_alive(&self, lease: i64) -> Result<i64, EtcdError> {
        #[derive(Deserialize)]
        struct Renewed {
            #[serde(default)]
            result: Option<RenewedResult>,
        }
        #[derive(Deserialize)]
        struct RenewedResult {
            #[serde(rename = "TTL", default, deserialize_with = "num")]
            ttl: i64,
        }
        let renewed: Renewed = self
            .call(
                "lease_keepalive",
                "/v3/lease/keepalive",
                &json!({"ID": lease.to_string()}),
            )
            .await?;
        Ok(renewed.result.map_or(0, |r| r.ttl))
    }

    /// Ends a lease now: every key attached to it is deleted.
    pub async fn revoke(&self, lease: i64) -> Result<(), EtcdError> {
        let _: Value = self
            .call(
                "lease_revoke",
                "/v3/lease/revoke",
                &json!({"ID": lease.to_string()}),
            )
            .await?;
        Ok(())
    }

    /// Watches every key from `key` up to `end`, from `start` (a revision) on. The stream has
    /// no time limit; a dead member shows as an error from [`Watch::next`].
    pub async fn watch(&self, key: &[u8], end: &[u8], start: i64) -> Result<Watch, EtcdError> {
        let body = json!({"create_request": {
            "key": enc(key),
            "range_end": enc(end),
            "start_revision": start.to_string(),
        }});
        let (response, _) = self.send("/v3/watch", &body).await?;
        Ok(Watch {
            body: response.into_body(),
            buffer: BytesMut::new(),
        })
    }

    /// Sends one request and reads its whole JSON answer.
    async fn call<T: DeserializeOwned>(
        &self,
        what: &'static str,
        path: &str,
        body: &Value,
    ) -> Result<T, EtcdError> {
        let started = Instant::now();
        let outcome = async {
            let deadline = tokio::time::Instant::now() + self.timeout;
            let (response, endpoint) = self.send(path, body).await?;
            let status = response.status();
            let read = Box::pin(
                http_body_util::Limited::new(response.into_body(), MAX_RESPONSE).collect(),
            );
            let bytes = match tokio::time::timeout_at(deadline, read).await {
                Ok(Ok(collected)) => collected.to_bytes(),
                Ok(Err(e)) => {
                    return Err(EtcdError::Decode(format!(
                        "{endpoint}: cannot read the answer: {e}"
                    )))
                }
                Err(_) => {
                    return Err(EtcdError::Timeout {
                        timeout: self.timeout,
                        last: format!("{endpoint}: the answer did not arrive"),
                    })
                }
            };
            if !status.is_success() {
                return Err(EtcdError::Refused(server_error(status, &bytes)));
            }
            serde_json::from_slice(&bytes).map_err(|e| EtcdError::Decode(format!("{what}: {e}")))
        }
        .await;
        (self.observer)(what, started.elapsed(), outcome.is_ok());
        outcome
    }

    /// Sends a request to the members in turn until one answers with a response head (within
    /// the timeout, shared out among the members). Authenticates first when credentials are
    /// set, and once more when the token was refused.
    async fn send(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<(http::Response<Incoming>, String), EtcdError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let payload = Bytes::from(serde_json::to_vec(body).unwrap_or_default());
        let n = self.endpoints.len().max(1);
        let share = (self.timeout / u32::try_from(n).unwrap_or(1)).max(Duration::from_millis(200));
        let first = self.preferred.load(Ordering::Relaxed);
        let mut last = String::from("no endpoint");
        let mut reauthenticated = false;
        let mut attempt = 0;
        // Exchanges tried, and those a TLS handshake refused (a certificate etcd does not
        // accept, or one it does not present as asked): waiting will not change those.
        let (mut tried, mut tls_refused) = (0, 0);
        while attempt < n * 2 {
            let i = (first + attempt) % n;
            attempt += 1;
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break;
            }
            let endpoint = &self.endpoints[i];
            let token = match self.token(endpoint, deadline).await {
                Ok(token) => token,
                // Credentials refused: every member would say the same.
                Err(e @ EtcdError::Refused(_)) => return Err(e),
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            };
            let mut request = http::Request::post(format!("{endpoint}{path}"))
                .header(http::header::CONTENT_TYPE, "application/json");
            if let Some(token) = token {
                request = request.header(http::header::AUTHORIZATION, token);
            }
            let Ok(request) = request.body(Full::new(payload.clone())) else {
                return Err(EtcdError::Decode(format!(
                    "{endpoint}{path} is not a valid request"
                )));
            };
            let until = (now + share).min(deadline);
            tried += 1;
            match tokio::time::timeout_at(until, self.client.request(request)).await {
                Ok(Ok(response)) => {
                    if response.status() == http::StatusCode::UNAUTHORIZED
                        && self.credentials.is_some()
                        && !reauthenticated
                    {
                        // The token expired: fetch another and try the same member again.
                        reauthenticated = true;
                        *self.lock_token() = None;
                        attempt -= 1;
                        continue;
                    }
                    if response.status() == http::StatusCode::SERVICE_UNAVAILABLE {
                        last = format!("{endpoint}: unavailable");
                        continue;
                    }
                    self.preferred.store(i, Ordering::Relaxed);
                    return Ok((response, endpoint.clone()));
                }
                Ok(Err(e)) => match verge_serve::tls_client::tls_failure(&e) {
                    Some(tls) => {
                        tls_refused += 1;
                        last = format!("{endpoint}: TLS: {tls}");
                    }
                    None => last = format!("{endpoint}: {e}"),
                },
                Err(_) => last = format!("{endpoint}: no answer within {}ms", share.as_millis()),
            }
        }
        if tried > 0 && tls_refused == tried {
            return Err(EtcdError::Refused(format!(
                "every member refused TLS ({last})"
            )));
        }
        Err(EtcdError::Timeout {
            timeout: self.timeout,
            last,
        })
    }

    fn lock_token(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.token.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The auth token to send, fetched from `endpoint` when there is none yet.
    async fn token(
        &self,
        endpoint: &str,
        deadline: tokio::time::Instant,
    ) -> Result<Option<String>, EtcdError> {
        let Some((name, password)) = &self.credentials else {
            return Ok(None);
        };
        if let Some(token) = self.lock_token().clone() {
            return Ok(Some(token));
        }
        #[derive(Deserialize)]
        struct Authenticated {
            token: String,
        }
        let body = json!({"name": name, "password": password});
        let request = http::Request::post(format!("{endpoint}/v3/auth/authenticate"))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| EtcdError::Decode(e.to_string()))?;
        let response = tokio::time::timeout_at(deadline, async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok::<_, String>((status, bytes))
        })
        .await;
        let (status, bytes) = match response {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                return Err(EtcdError::Timeout {
                    timeout: self.timeout,
                    last: format!("{endpoint}: {e}"),
                })
            }
            Err(_) => {
                return Err(EtcdError::Timeout {
                    timeout: self.timeout,
                    last: format!("{endpoint}: authentication did not answer"),
                })
            }
        };
        if !status.is_success() {
            return Err(EtcdError::Refused(format!(
                "authentication as {name:?}: {}",
                server_error(status, &bytes)
            )));
        }
        let token = serde_json::from_slice::<Authenticated>(&bytes)
            .map_err(|e| EtcdError::Decode(format!("authentication: {e}")))?
            .token;
        *self.lock_token() = Some(token.clone());
        Ok(Some(token))
    }
}

/// The message of an error answer (`{"error": …, "code": …}`), or its status.
fn server_error(status: http::StatusCode, body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct ErrorBody {
        #[serde(default)]
        message: String,
        #[serde(default)]
        error: String,
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) if !e.message.is_empty() => e.message,
        Ok(e) if !e.error.is_empty() => e.error,
        _ => format!("HTTP {status}"),
    }
}

/// A watch stream: newline-separated JSON messages.
pub struct Watch {
    body: Incoming,
    buffer: BytesMut,
}

impl Watch {
    /// The next batch of changes; `Ok(None)` when the server ended the stream.
    pub async fn next(&mut self) -> Result<Option<WatchBatch>, EtcdError> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line = self.buffer.split_to(end + 1);
                let line = &line[..end];
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match parse_watch_line(line)? {
                    Some(batch) => return Ok(Some(batch)),
                    None => continue,
                }
            }
            if self.buffer.len() > MAX_WATCH_LINE {
                return Err(EtcdError::Decode(format!(
                    "a watch message longer than {MAX_WATCH_LINE} bytes"
                )));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(mut data) = frame.into_data() {
                        while data.has_remaining() {
                            let chunk = data.chunk();
                            self.buffer.extend_from_slice(chunk);
                            let n = chunk.len();
                            data.advance(n);
                        }
                    }
                }
                Some(Err(e)) => return Err(EtcdError::Decode(format!("watch stream: {e}"))),
                None => return Ok(None),
            }
        }
    }
}

/// One watch message; `None` for a message that carries nothing to act on (the creation
/// notice).
pub fn parse_watch_line(line: &[u8]) -> Result<Option<WatchBatch>, EtcdError> {
    #[derive(Deserialize)]
    struct Message {
        result: Option<WatchResult>,
        error: Option<Value>,
    }
    #[derive(Deserialize)]
    struct WatchResult {
        #[serde(default)]
        header: Header,
        #[serde(default)]
        events: Vec<RawEvent>,
        #[serde(default)]
        canceled: bool,
        #[serde(default, deserialize_with = "num")]
        compact_revision: i64,
        #[serde(default)]
        cancel_reason: String,
    }
    #[derive(Deserialize)]
    struct RawEvent {
        #[serde(default, rename = "type")]
        kind: String,
        kv: Kv,
    }
    let message: Message = serde_json::from_slice(line)
        .map_err(|e| EtcdError::Decode(format!("watch message: {e}")))?;
    if let Some(error) = message.error {
        return Err(EtcdError::Refused(format!("watch: {error}")));
    }
    let Some(result) = message.result else {
        return Ok(None);
    };
    let mut batch = WatchBatch {
        revision: result.header.revision,
        ..WatchBatch::default()
    };
    if result.canceled {
        if result.compact_revision > 0 {
            batch.compacted = Some(result.compact_revision);
        } else {
            batch.cancelled = Some(if result.cancel_reason.is_empty() {
                "cancelled by the server".to_string()
            } else {
                result.cancel_reason
            });
        }
    }
    batch.changes = result
        .events
        .into_iter()
        .map(|e| match e.kind.as_str() {
            "DELETE" => Change::Delete(e.kv),
            _ => Change::Put(e.kv),
        })
        .collect();
    if batch.changes.is_empty() && batch.compacted.is_none() && batch.cancelled.is_none() {
        return Ok(None);
    }
    Ok(Some(batch))
}

/// An int64 as the gateway writes it: a string (or a number).
fn num<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        S(String),
        N(i64),
    }
    match Num::deserialize(d)? {
        Num::N(n) => Ok(n),
        Num::S(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

fn b64<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let text = String::deserialize(d)?;
    STANDARD.decode(text).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_range_ends_after_every_key_with_the_prefix() {
        assert_eq!(prefix_end(b"/verge/"), b"/verge0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
    }

    #[test]
    fn watch_messages_are_read_as_the_gateway_writes_them() {
        let created = br#"{"result":{"header":{"revision":"2"},"created":true}}"#;
        assert!(parse_watch_line(created).unwrap().is_none());
        let put = br#"{"result":{"header":{"revision":"3"},"events":[{"kv":{"key":"Zm9v","create_revision":"2","mod_revision":"3","version":"2","value":"YmF6"}},{"type":"DELETE","kv":{"key":"Zm9v","mod_revision":"4"}}]}}"#;
        let batch = parse_watch_line(put).unwrap().unwrap();
        assert_eq!(batch.revision, 3);
        match &batch.changes[..] {
            [Change::Put(kv), Change::Delete(gone)] => {
                assert_eq!(
                    (kv.key.as_slice(), kv.value.as_slice()),
                    (&b"foo"[..], &b"baz"[..])
                );
                assert_eq!(kv.mod_revision, 3);
                assert_eq!(gone.mod_revision, 4);
            }
            other => panic!("{other:?}"),
        }
        let compacted = br#"{"result":{"header":{},"canceled":true,"compact_revision":"3"}}"#;
        assert_eq!(
            parse_watch_line(compacted).unwrap().unwrap().compacted,
            Some(3)
        );
        assert!(parse_watch_line(b"{not json").is_err());
        assert!(parse_watch_line(br#"{"error":{"message":"boom"}}"#).is_err());
        assert!(parse_watch_line(br#"{"result":{"events":[{"kv":{"key":"!!"}}]}}"#).is_err());
    }
}
