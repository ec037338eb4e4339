//! RFC 9111 §4.4 invalidation at the edge: a successful unsafe request removes the stored
//! responses for its target and for same-host `Location` / `Content-Location` URLs; other
//! hosts' URLs and failed requests invalidate nothing.

use verge_testkit as support;

use support::{
    start_origin_and_cdn, FakeOrigin, HttpClient, Reply, TestEdge, TestResponse, Topology,
};

async fn send(edge: &TestEdge, method: &str, path: &str, headers: &[(&str, &str)]) -> TestResponse {
    HttpClient::http1()
        .request(method, &edge.url(path), headers, body_for(method))
        .await
}

/// A request body for the unsafe methods, none for GET.
fn body_for(method: &str) -> &'static str {
    if method == "GET" {
        ""
    } else {
        "payload"
    }
}

/// Whether a GET for `path` (with `headers`) is answered from cache.
async fn is_cached(edge: &TestEdge, path: &str, headers: &[(&str, &str)]) -> bool {
    send(edge, "GET", path, headers)
        .await
        .cache_status_has("hit")
}

/// Stores `path` at the edge and checks it is then a hit.
async fn store(origin: &FakeOrigin, edge: &TestEdge, path: &str) {
    origin.on(
        path,
        Reply::ok(format!("{path} v1")).cache_control("max-age=600"),
    );
    send(edge, "GET", path, &[]).await;
    assert!(is_cached(edge, path, &[]).await, "{path} was not stored");
}

/// A successful `method` to a stored URL removes it: the next GET goes to the origin.
async fn assert_successful_unsafe_request_invalidates(topology: Topology, method: &str) {
    let (origin, edge) = start_origin_and_cdn(topology, &[]).await;
    store(&origin, &edge, "/item").await;
    let before = origin.hits("/item");

    let response = send(&edge, method, "/item", &[]).await;
    assert_eq!(response.status, 200, "{method}");
    response.assert_cache_status_has("fwd=bypass", method);
    assert_eq!(
        origin.last_request("/item").unwrap().method.as_str(),
        method
    );

    let after = send(&edge, "GET", "/item", &[]).await;
    after.assert_cache_status_lacks("hit", &format!("{method} must invalidate the stored GET"));
    assert_eq!(
        origin.hits("/item"),
        before + 2,
        "{method}, then a GET upstream"
    );
}

async fn successful_post_invalidates_the_stored_get(topology: Topology) {
    assert_successful_unsafe_request_invalidates(topology, "POST").await;
}

async fn successful_put_invalidates_the_stored_get(topology: Topology) {
    assert_successful_unsafe_request_invalidates(topology, "PUT").await;
}

async fn successful_delete_invalidates_the_stored_get(topology: Topology) {
    assert_successful_unsafe_request_invalidates(topology, "DELETE").await;
}

async fn successful_patch_invalidates_the_stored_get(topology: Topology) {
    assert_successful_unsafe_request_invalidates(topology, "PATCH").await;
}

async fn same_host_location_and_content_location_are_invalidated(topology: Topology) {
    let (origin, edge) = start_origin_and_cdn(topology, &[]).await;
    for path in ["/items/1", "/items/2", "/items/3"] {
        store(&origin, &edge, path).await;
    }
    let absolute = format!("http://{}/items/2", edge.data_addr);
    origin.on(
        "/items",
        Reply::ok("created")
            .with_status(201)
            .header("location", "/items/1")
            .header("content-location", &absolute),
    );

    let created = send(&edge, "POST", "/items", &[]).await;
    assert_eq!(created.status, 201);
    assert!(
        !is_cached(&edge, "/items/1", &[]).await,
        "a relative Location is on the same host"
    );
    assert!(
        !is_cached(&edge, "/items/2", &[]).await,
        "an absolute Content-Location on the request's host"
    );
    assert!(
        is_cached(&edge, "/items/3", &[]).await,
        "a URL the response does not name is kept"
    );
}

async fn location_on_another_host_is_not_invalidated(topology: Topology) {
    let (origin, edge) = start_origin_and_cdn(topology, &[]).await;
    let other = [("host", "other.example")];
    origin.on(
        "/items/1",
        Reply::ok("other v1").cache_control("max-age=600"),
    );
    send(&edge, "GET", "/items/1", &other).await;
    assert!(
        is_cached(&edge, "/items/1", &other).await,
        "stored for other.example"
    );
    store(&origin, &edge, "/items/2").await;
    origin.on(
        "/items",
        Reply::ok("created")
            .with_status(201)
            .header("location", "http://other.example/items/1")
            .header("content-location", "/items/2"),
    );

    send(&edge, "POST", "/items", &[]).await;
    assert!(
        !is_cached(&edge, "/items/2", &[]).await,
        "the same-host Content-Location was acted on"
    );
    assert!(
        is_cached(&edge, "/items/1", &other).await,
        "another host's URL must not be invalidated"
    );
}

async fn failed_unsafe_requests_invalidate_nothing(topology: Topology) {
    let (origin, edge) = start_origin_and_cdn(topology, &[]).await;
    store(&origin, &edge, "/item").await;
    store(&origin, &edge, "/named").await;

    for status in [400, 404, 500, 503] {
        origin.on(
            "/item",
            Reply::ok("refused")
                .with_status(status)
                .header("content-location", "/named"),
        );
        let response = send(&edge, "POST", "/item", &[]).await;
        assert_eq!(response.status.as_u16(), status);
        assert!(
            is_cached(&edge, "/item", &[]).await,
            "a POST answered {status} must not invalidate its target"
        );
        assert!(
            is_cached(&edge, "/named", &[]).await,
            "a POST answered {status} must not invalidate Content-Location"
        );
    }
}

support::in_both_topologies!(
    successful_post_invalidates_the_stored_get,
    successful_put_invalidates_the_stored_get,
    successful_delete_invalidates_the_stored_get,
    successful_patch_invalidates_the_stored_get,
    same_host_location_and_content_location_are_invalidated,
    location_on_another_host_is_not_invalidated,
    failed_unsafe_requests_invalidate_nothing,
);
