//! The start most cache tests share: the cache under test (the CDN in either topology, or a lone
//! edge) in front of a [`FakeOrigin`] that answers one path, optionally with that path already
//! fetched once and the clock moved on.

use crate::{start_origin_and_cdn, start_origin_and_edge, FakeOrigin, Reply, TestCdn, TestEdge};
use crate::{TestResponse, Topology};
use bytes::Bytes;

/// Starts the CDN in `topology` (no tweaks) in front of a [`FakeOrigin`] answering `path` with
/// `reply`.
pub async fn cdn_serving(topology: Topology, path: &str, reply: Reply) -> (FakeOrigin, TestCdn) {
    let (origin, cdn) = start_origin_and_cdn(topology, &[]).await;
    origin.on(path, reply);
    (origin, cdn)
}

/// [`cdn_serving`], then one GET of `path` (storing what may be stored), then the clock moved
/// on by `advance` seconds.
pub async fn cdn_fetched_then(
    topology: Topology,
    path: &str,
    reply: Reply,
    advance: u64,
) -> (FakeOrigin, TestCdn) {
    let (origin, cdn) = cdn_serving(topology, path, reply).await;
    cdn.get(path).await;
    cdn.advance(advance);
    (origin, cdn)
}

/// Starts an edge with `tweaks` in front of a [`FakeOrigin`] answering `path` with `reply`; the
/// origin's `Date` follows the edge's clock (see [`start_origin_and_edge`]).
pub async fn edge_serving(path: &str, reply: Reply, tweaks: &[&str]) -> (FakeOrigin, TestEdge) {
    let (origin, edge) = start_origin_and_edge(tweaks).await;
    origin.on(path, reply);
    (origin, edge)
}

/// The value of request header `name` in the last request the origin received for `path`.
pub fn last_sent(origin: &FakeOrigin, path: &str, name: &str) -> Option<String> {
    origin
        .last_request(path)
        .unwrap_or_else(|| panic!("the origin received no request for {path}"))
        .header(name)
}

/// GETs `path` from `edge` with one `Cache-Control` request directive.
pub async fn get_directive(edge: &TestEdge, path: &str, directive: &str) -> TestResponse {
    edge.get_with(path, &[("cache-control", directive)]).await
}

/// A `200` with `body`, `Cache-Control: cache_control` and `ETag: etag`.
pub fn tagged(body: impl Into<Bytes>, cache_control: &str, etag: &str) -> Reply {
    Reply::ok(body)
        .cache_control(cache_control)
        .header("etag", etag)
}

/// A `304` with `Cache-Control: cache_control` and `ETag: etag`, as an origin answers a
/// revalidation.
pub fn not_modified(cache_control: &str, etag: &str) -> Reply {
    tagged("", cache_control, etag).with_status(304)
}

/// A `200` with `body` and `Cache-Control: cache_control` that the origin takes `millis`
/// milliseconds to send: long enough for concurrent requests to meet it in flight.
pub fn slow(body: impl Into<Bytes>, cache_control: &str, millis: u64) -> Reply {
    Reply::ok(body)
        .cache_control(cache_control)
        .delay(std::time::Duration::from_millis(millis))
}

/// Starts a [`FakeOrigin`] answering every path under `prefix` with `reply`.
pub async fn origin_answering(prefix: &str, reply: Reply) -> FakeOrigin {
    let origin = FakeOrigin::start().await;
    origin.on_prefix(prefix, reply);
    origin
}
