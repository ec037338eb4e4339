//! RFC 9111 §5.2 cache directives at the edge: response directives that stop or restrict
//! storing (`no-store`, `private`, `no-cache`, field-qualified forms, `Authorization`), request
//! directives (`max-age`, `max-stale`, `min-fresh`, `no-cache`, `no-store`, `only-if-cached`,
//! `Pragma`), and RFC 9213 `CDN-Cache-Control` / `Surrogate-Control` precedence.

use verge_testkit as support;

use support::scenario::{
    cdn_fetched_then, cdn_serving, get_directive, last_sent, not_modified, tagged,
};
use support::{FakeOrigin, Reply, TestCdn, TestEdge, TestResponse, Topology};

fn assert_hit(response: &TestResponse, why: &str) {
    response.assert_cache_status_has("hit", why);
}

/// The CDN in front of an origin answering `path` with `x` under `cache_control`.
async fn serving_x(topology: Topology, path: &str, cache_control: &str) -> (FakeOrigin, TestCdn) {
    cdn_serving(topology, path, Reply::ok("x").cache_control(cache_control)).await
}

/// [`serving_x`] with `path` fetched once (and stored), then the clock moved on by `advance`.
async fn stored_x_then(
    topology: Topology,
    path: &str,
    cache_control: &str,
    advance: u64,
) -> (FakeOrigin, TestCdn) {
    cdn_fetched_then(
        topology,
        path,
        Reply::ok("x").cache_control(cache_control),
        advance,
    )
    .await
}

/// Requests `path` three times; each must reach the origin (nothing is stored).
async fn assert_never_stored(origin: &FakeOrigin, edge: &TestEdge, path: &str, detail: &str) {
    for n in 1..=3 {
        let response = edge.get(path).await;
        assert_eq!(response.status, 200);
        assert!(
            !response.cache_status_has("stored") && !response.cache_status_has("hit"),
            "request {n}: {}",
            response.cache_status()
        );
        response.assert_cache_status_has(&format!("detail={detail}"), &format!("request {n}"));
        assert_eq!(origin.hits(path), n, "request {n} must reach the origin");
    }
}

/// The CDN in front of an origin answering `path` with `cache_control`, an `x-secret` and an
/// `x-other: kept` field. Fetches `path` twice: the first must be stored, the second a hit
/// (for `why`) without `x-secret` but with `x-other: kept`, and the origin asked once.
async fn assert_stored_without_x_secret(
    topology: Topology,
    path: &str,
    cache_control: &str,
    why: &str,
) {
    let reply = Reply::ok("body")
        .cache_control(cache_control)
        .header("x-secret", "for-one-user")
        .header("x-other", "kept");
    let (origin, edge) = cdn_serving(topology, path, reply).await;
    edge.get(path).await.assert_cache_status_has("stored", "");
    let hit = edge.get(path).await;
    assert_hit(&hit, why);
    assert_eq!(hit.text(), "body");
    assert_eq!(hit.header("x-secret"), None, "{:?}", hit.headers);
    assert_eq!(hit.header("x-other").as_deref(), Some("kept"));
    assert_eq!(origin.hits(path), 1);
}

// ---- response directives ----

async fn response_no_store_is_not_stored(topology: Topology) {
    let (origin, edge) = serving_x(topology, "/ns", "no-store, max-age=60").await;
    assert_never_stored(&origin, &edge, "/ns", "no-store").await;
}

async fn response_bare_private_is_not_stored(topology: Topology) {
    let (origin, edge) = serving_x(topology, "/p", "private, max-age=60").await;
    assert_never_stored(&origin, &edge, "/p", "private").await;
}

async fn response_private_with_a_field_name_is_stored_without_that_field(topology: Topology) {
    let cache_control = "private=\"X-Secret\", max-age=60";
    let why = "private=\"X-Secret\" allows storing the rest";
    assert_stored_without_x_secret(topology, "/pf", cache_control, why).await;
}

async fn response_no_cache_with_a_field_name_is_stored_without_that_field(topology: Topology) {
    let cache_control = "no-cache=\"X-Secret\", max-age=60";
    let why = "no-cache=\"X-Secret\" still allows reuse of the rest";
    assert_stored_without_x_secret(topology, "/ncf", cache_control, why).await;
}

async fn response_bare_no_cache_is_stored_but_revalidated_on_every_use(topology: Topology) {
    let cache_control = "no-cache, max-age=60";
    let reply = tagged("body", cache_control, "\"n1\"");
    let (origin, edge) = cdn_serving(topology, "/nc", reply).await;
    edge.get("/nc").await.assert_cache_status_has("stored", "");

    origin.on("/nc", not_modified(cache_control, "\"n1\""));
    for n in 2..=3 {
        let response = edge.get("/nc").await;
        assert_eq!(response.status, 200);
        assert_eq!(response.text(), "body", "the stored body, validated");
        response.assert_cache_status_lacks("hit", "");
        assert_eq!(origin.hits("/nc"), n, "use {n} must be validated upstream");
        let sent = last_sent(&origin, "/nc", "if-none-match");
        assert_eq!(sent.as_deref(), Some("\"n1\""));
    }
}

/// GETs `path` with `Authorization: Bearer u1`.
async fn get_authorized(edge: &TestEdge, path: &str) -> TestResponse {
    edge.get_with(path, &[("authorization", "Bearer u1")]).await
}

async fn authorized_request_response_is_not_stored_without_explicit_permission(topology: Topology) {
    let (origin, edge) = serving_x(topology, "/auth", "max-age=60").await;
    for n in 1..=2 {
        let response = get_authorized(&edge, "/auth").await;
        response.assert_cache_status_has("detail=authorization", "");
        assert_eq!(origin.hits("/auth"), n);
    }
    edge.get("/auth").await;
    assert_eq!(origin.hits("/auth"), 3, "nothing was stored");
}

/// A response to a request with `Authorization` is stored when `cache_control` allows it.
async fn assert_authorized_response_is_stored(topology: Topology, cache_control: &str) {
    let reply = Reply::ok("shared").cache_control(cache_control);
    let (origin, edge) = cdn_serving(topology, "/auth", reply).await;
    let miss = get_authorized(&edge, "/auth").await;
    miss.assert_cache_status_has("stored", cache_control);
    let hit = get_authorized(&edge, "/auth").await;
    assert_hit(&hit, cache_control);
    assert_eq!(hit.text(), "shared");
    assert_eq!(origin.hits("/auth"), 1, "{cache_control}");
}

async fn public_allows_storing_a_response_to_an_authorized_request(topology: Topology) {
    assert_authorized_response_is_stored(topology, "public, max-age=60").await;
}

async fn s_maxage_allows_storing_a_response_to_an_authorized_request(topology: Topology) {
    assert_authorized_response_is_stored(topology, "s-maxage=60").await;
}

async fn must_revalidate_allows_storing_a_response_to_an_authorized_request(topology: Topology) {
    assert_authorized_response_is_stored(topology, "must-revalidate, max-age=60").await;
}

// ---- request directives ----

async fn request_max_age_refuses_a_stored_response_older_than_it(topology: Topology) {
    let (origin, edge) = stored_x_then(topology, "/ma", "max-age=100", 30).await;

    let young_enough = get_directive(&edge, "/ma", "max-age=40").await;
    assert_hit(&young_enough, "age 30 <= max-age=40");
    assert_eq!(origin.hits("/ma"), 1);

    let too_old = get_directive(&edge, "/ma", "max-age=20").await;
    too_old.assert_cache_status_has("fwd=request", "age 30 > max-age=20");
    assert_eq!(origin.hits("/ma"), 2);
}

async fn request_max_stale_with_a_value_accepts_that_much_staleness(topology: Topology) {
    let (origin, edge) = stored_x_then(topology, "/ms", "max-age=10", 25).await; // 15s stale

    let accepted = get_directive(&edge, "/ms", "max-stale=20").await;
    assert_eq!(accepted.text(), "x");
    accepted.assert_cache_status_has_all(&["hit", "detail=max-stale"], "");
    assert_eq!(origin.hits("/ms"), 1, "15s stale is within max-stale=20");

    let refused = get_directive(&edge, "/ms", "max-stale=5").await;
    refused.assert_cache_status_lacks("hit", "");
    assert_eq!(origin.hits("/ms"), 2, "15s stale is beyond max-stale=5");
}

async fn request_max_stale_without_a_value_accepts_any_staleness(topology: Topology) {
    let (origin, edge) = stored_x_then(topology, "/msa", "max-age=10", 100_000).await;

    let accepted = get_directive(&edge, "/msa", "max-stale").await;
    assert_eq!(accepted.text(), "x");
    accepted.assert_cache_status_has("detail=max-stale", "");
    assert_eq!(origin.hits("/msa"), 1);
}

async fn request_min_fresh_requires_that_much_freshness_left(topology: Topology) {
    let (origin, edge) = stored_x_then(topology, "/mf", "max-age=100", 50).await; // 50s left

    let enough = get_directive(&edge, "/mf", "min-fresh=40").await;
    assert_hit(&enough, "50s left >= min-fresh=40");
    assert_eq!(origin.hits("/mf"), 1);

    let not_enough = get_directive(&edge, "/mf", "min-fresh=60").await;
    not_enough.assert_cache_status_lacks("hit", "");
    assert_eq!(origin.hits("/mf"), 2, "50s left < min-fresh=60");
}

async fn request_no_cache_forces_revalidation_of_a_fresh_response(topology: Topology) {
    let reply = tagged("body", "max-age=100", "\"r1\"");
    let (origin, edge) = cdn_fetched_then(topology, "/rnc", reply, 0).await;
    origin.on("/rnc", not_modified("max-age=100", "\"r1\""));

    let response = get_directive(&edge, "/rnc", "no-cache").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "body");
    response.assert_cache_status_has_all(&["fwd=request", "fwd-status=304"], "");
    assert_eq!(origin.hits("/rnc"), 2);
    let sent = last_sent(&origin, "/rnc", "if-none-match");
    assert_eq!(sent.as_deref(), Some("\"r1\""));
}

async fn request_no_store_keeps_the_response_out_of_the_cache(topology: Topology) {
    let (origin, edge) = serving_x(topology, "/rns", "max-age=100").await;
    let first = get_directive(&edge, "/rns", "no-store").await;
    assert_eq!(first.status, 200);
    first.assert_cache_status_lacks("stored", "");

    edge.get("/rns").await;
    assert_eq!(origin.hits("/rns"), 2, "the first response was not stored");
}

async fn only_if_cached_gets_504_when_nothing_is_stored(topology: Topology) {
    let (origin, edge) = serving_x(topology, "/oic", "max-age=100").await;
    let response = get_directive(&edge, "/oic", "only-if-cached").await;
    assert_eq!(response.status, 504);
    response.assert_cache_status_has("detail=only-if-cached", "");
    assert_eq!(origin.hits("/oic"), 0, "only-if-cached never goes upstream");
}

async fn only_if_cached_gets_504_when_the_stored_response_is_stale(topology: Topology) {
    let (origin, edge) = stored_x_then(topology, "/oics", "max-age=10", 20).await;
    let response = get_directive(&edge, "/oics", "only-if-cached").await;
    assert_eq!(response.status, 504);
    response.assert_cache_status_has("detail=only-if-cached", "");
    assert_eq!(origin.hits("/oics"), 1);
}

async fn only_if_cached_is_served_from_a_fresh_response(topology: Topology) {
    let reply = Reply::ok("cached").cache_control("max-age=100");
    let (origin, edge) = cdn_fetched_then(topology, "/oicf", reply, 0).await;
    let response = get_directive(&edge, "/oicf", "only-if-cached").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "cached");
    assert_hit(&response, "fresh and only-if-cached");
    assert_eq!(origin.hits("/oicf"), 1);
}

async fn pragma_no_cache_forces_revalidation_without_cache_control(topology: Topology) {
    let (origin, edge) = stored_x_then(topology, "/pr", "max-age=100", 0).await;

    let response = edge.get_with("/pr", &[("pragma", "no-cache")]).await;
    response.assert_cache_status_has("fwd=request", "");
    assert_eq!(origin.hits("/pr"), 2);
}

async fn pragma_no_cache_is_ignored_when_cache_control_is_present(topology: Topology) {
    let (origin, edge) = stored_x_then(topology, "/pri", "max-age=100", 0).await;

    let both = [("pragma", "no-cache"), ("cache-control", "max-age=50")];
    let response = edge.get_with("/pri", &both).await;
    assert_hit(&response, "Cache-Control present: Pragma does not apply");
    assert_eq!(origin.hits("/pri"), 1);
}

// ---- CDN-Cache-Control, Surrogate-Control ----

/// An origin reply `x` with `cache_control` and the CDN-only field `name: value`.
fn x_with(cache_control: &str, name: &str, value: &str) -> Reply {
    Reply::ok("x")
        .cache_control(cache_control)
        .header(name, value)
}

/// Fetches `path` twice: the first must be stored (with `params` too), the second a hit (for
/// `why`), the origin asked once.
async fn assert_stored_then_hit(
    (origin, edge): (&FakeOrigin, &TestEdge),
    path: &str,
    params: &[&str],
    why: &str,
) {
    let miss = edge.get(path).await;
    miss.assert_cache_status_has_all(params, "");
    assert_hit(&edge.get(path).await, why);
    assert_eq!(origin.hits(path), 1);
}

async fn cdn_cache_control_overrides_a_cache_control_no_store(topology: Topology) {
    let reply = x_with("no-store", "cdn-cache-control", "max-age=60");
    let (origin, edge) = cdn_serving(topology, "/cdn", reply).await;
    let stored = ["stored", "ttl=60"];
    assert_stored_then_hit(
        (&origin, &edge),
        "/cdn",
        &stored,
        "stored by CDN-Cache-Control",
    )
    .await;
}

async fn cdn_cache_control_no_store_overrides_a_cache_control_max_age(topology: Topology) {
    let reply = x_with("max-age=60", "cdn-cache-control", "no-store");
    let (origin, edge) = cdn_serving(topology, "/cdn-ns", reply).await;
    assert_never_stored(&origin, &edge, "/cdn-ns", "no-store").await;
}

async fn cdn_cache_control_lifetime_replaces_the_cache_control_lifetime(topology: Topology) {
    let reply = x_with("max-age=1000", "cdn-cache-control", "max-age=10");
    let (origin, edge) = cdn_serving(topology, "/cdn-short", reply).await;
    let entries = edge.get("/cdn-short").await.cache_status_entries();
    assert!(
        entries.iter().all(|entry| entry.contains("; ttl=10;")),
        "every tier applies CDN-Cache-Control: {entries:?}"
    );
    edge.advance(20);
    edge.get("/cdn-short").await;
    assert_eq!(origin.hits("/cdn-short"), 2, "stale by CDN-Cache-Control");
}

async fn surrogate_control_overrides_cache_control(topology: Topology) {
    let reply = x_with("private", "surrogate-control", "max-age=60");
    let (origin, edge) = cdn_serving(topology, "/sc", reply).await;
    assert_stored_then_hit(
        (&origin, &edge),
        "/sc",
        &["stored"],
        "stored by Surrogate-Control",
    )
    .await;
}

async fn cdn_cache_control_still_governs_after_a_304_revalidation(topology: Topology) {
    let reply = |r: Reply| {
        r.cache_control("no-store")
            .header("cdn-cache-control", "max-age=60")
            .header("etag", "\"c1\"")
    };
    let (origin, edge) = cdn_fetched_then(topology, "/cdn-304", reply(Reply::ok("body")), 70).await;
    origin.on("/cdn-304", reply(Reply::ok("").with_status(304)));

    let revalidated = edge.get("/cdn-304").await;
    assert_eq!(revalidated.status, 200);
    assert_eq!(revalidated.text(), "body");
    revalidated.assert_cache_status_has_all(
        &["fwd-status=304", "stored"],
        "the 304 freshens the stored response under CDN-Cache-Control",
    );
    assert_hit(
        &edge.get("/cdn-304").await,
        "fresh again for 60s after the 304",
    );
    assert_eq!(origin.hits("/cdn-304"), 2);
}

async fn cdn_only_fields_are_not_forwarded_to_clients_but_cdn_cache_control_is(topology: Topology) {
    let reply = x_with("max-age=30", "cdn-cache-control", "max-age=60")
        .header("surrogate-control", "max-age=60")
        .header("surrogate-key", "k1 k2")
        .header("cache-tag", "t1,t2");
    let (_origin, edge) = cdn_serving(topology, "/fields", reply).await;
    let miss = edge.get("/fields").await;
    let hit = edge.get("/fields").await;
    assert_hit(&hit, "stored");
    for (what, response) in [("miss", &miss), ("hit", &hit)] {
        assert_eq!(
            response.header("cdn-cache-control").as_deref(),
            Some("max-age=60"),
            "{what}: CDN-Cache-Control is for any CDN in front too"
        );
        for name in ["surrogate-control", "surrogate-key", "cache-tag"] {
            assert_eq!(
                response.header(name),
                None,
                "{what}: {name} leaked to the client"
            );
        }
        assert_eq!(
            response.header("cache-control").as_deref(),
            Some("max-age=30"),
            "{what}: Cache-Control is for the client and is kept"
        );
    }
}

support::in_both_topologies!(
    response_no_store_is_not_stored,
    response_bare_private_is_not_stored,
    response_private_with_a_field_name_is_stored_without_that_field,
    response_no_cache_with_a_field_name_is_stored_without_that_field,
    response_bare_no_cache_is_stored_but_revalidated_on_every_use,
    authorized_request_response_is_not_stored_without_explicit_permission,
    public_allows_storing_a_response_to_an_authorized_request,
    s_maxage_allows_storing_a_response_to_an_authorized_request,
    must_revalidate_allows_storing_a_response_to_an_authorized_request,
    request_max_age_refuses_a_stored_response_older_than_it,
    request_max_stale_with_a_value_accepts_that_much_staleness,
    request_max_stale_without_a_value_accepts_any_staleness,
    request_min_fresh_requires_that_much_freshness_left,
    request_no_cache_forces_revalidation_of_a_fresh_response,
    request_no_store_keeps_the_response_out_of_the_cache,
    only_if_cached_gets_504_when_nothing_is_stored,
    only_if_cached_gets_504_when_the_stored_response_is_stale,
    only_if_cached_is_served_from_a_fresh_response,
    pragma_no_cache_forces_revalidation_without_cache_control,
    pragma_no_cache_is_ignored_when_cache_control_is_present,
    cdn_cache_control_overrides_a_cache_control_no_store,
    cdn_cache_control_no_store_overrides_a_cache_control_max_age,
    cdn_cache_control_lifetime_replaces_the_cache_control_lifetime,
    surrogate_control_overrides_cache_control,
    cdn_cache_control_still_governs_after_a_304_revalidation,
    cdn_only_fields_are_not_forwarded_to_clients_but_cdn_cache_control_is,
);
