//! Requests sent straight through an upstream (an origin client, an origin pool, a shield
//! ring) without a node in front, the way a node's fill sends them.

use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::{BodyExt, Either, Empty};
use verge_cache::CacheKey;
use verge_node::failover::Hop;
use verge_node::upstream::Upstream;
use verge_node::RequestError;

/// How long an upstream may take to answer one request here.
const ANSWER_LIMIT: Duration = Duration::from_secs(10);

/// Sends a GET for `path` with the extra request `headers` through `upstream`, keyed as a fill
/// for `path` at `host` is keyed (without a `Host` field, an origin pool sends its server's);
/// the status and body, or the upstream's error.
pub async fn get_through(
    upstream: &impl Upstream,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(StatusCode, String), RequestError> {
    let mut request = Request::builder().uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Either::Left(Empty::new())).unwrap();
    let hop = Hop {
        key: CacheKey::from_parts("http", host, path),
        replayable: true,
    };
    let response = tokio::time::timeout(ANSWER_LIMIT, upstream.send(request, &hop))
        .await
        .expect("the upstream answers within 10 s")?;
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
