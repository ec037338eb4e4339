//! RFC 9111 §5.2 cache directives at the edge: response directives that stop or restrict
//! storing (`no-store`, `private`, `no-cache`, field-qualified forms, `Authorization`), request
//! directives (`max-age`, `max-stale`, `min-fresh`, `no-cache`, `no-store`, `only-if-cached`,
//! `Pragma`), and RFC 9213 `CDN-Cache-Control` / `Surrogate-Control` precedence.

use verge_testkit as support;

use support::{
    start_origin_and_cdn, FakeOrigin, HttpClient, Reply, TestEdge, TestResponse, Topology,
};

fn assert_hit(response: &TestResponse, why: &str) {
    response.assert_cache_status_has("hit", why);
}

/// Requests `path` three times; each must reach the origin (nothing is stored).
async fn assert_never_stored(origin: &FakeOrigin, edge: &TestEdge, path: &str, detail: &str) {
    for n in 1..=3 {
        let response = edge.get_with(path, &[]).await;
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

// ---- response directives ----

async fn response_no_store_is_not_stored(topology: Topology) {
    let (origin, edge) = start_origin_and_cdn(topology, &[]).await;
    origin.on("/ns", Reply::ok("x").cache_control("no-store, max-age=60"));
    assert_never_stored(&origin, &edge, "/ns", "no-store").await;
}

async fn response_bare_private_is_not_stored(topology: Topology) {
    let (origin, edge) = start_origin_and_cdn(topology, &[]).await;
    origin.on("/p", Reply::ok("x").cache_control("private, max-age=60"));
    assert_never_stored(&origin, &edge, "/p", "private").await;
}

async fn response_private_with_a_field_name_is_stored_without_that_field(topology: Topology) {
    let (origin, edge) = start_origin_and_cdn(topology, &[]).await;
    origin.on(
        "/pf",
        Reply::ok("body")
            .cache_control("private=\"X-Secret\", max-age=60")
            .header("x-secret", "for-one-user")
            .header("x-other", "kept"),
    );
    let client = HttpClient::http1();
    let miss = client.get(&edge.url("/pf")).await;
    miss.assert_cache_status_has("stored", "");

    let hit = client.get(&edge.url("/pf")).await;
    assert_hit(&hit, "private=\"X-Secret\" allows storing the rest");
    assert_eq!(hit.text(), "body");
    assert_eq!(hit.header("x-secret"), None, "{:?}", hit.headers);
    assert_eq!(hit.header("x-other").as_deref(), Some("kept"));
    assert_eq!(origin.hits("/pf"), 1);
}

async fn response_no_cache_with_a_field_name_is_stored_without_that_field(topology: Topology) {
    let (origin, edge) = start_origin_and_cdn(topology, &[]).await;
    origin.on(
        "/ncf",
        Reply::ok("body")
            .cache_control("no-cache=\"X-Secret\", max-age=60")
            .header("x-secret", "must-revalidate-to-send")
            .header("x-other", "kept"),
    );
    let client = HttpClient::http1();
    let miss = client.get(&edge.url("/ncf")).await;
    miss.assert_cache_status_has("stored", "");

    let hit = client.get(&edge.url("/ncf")).await;
    assert_hit(&hit, "no-cache=\"X-Secret\" still allows reuse of the rest");
    assert_eq!(hit.header("x-secret"), None, "{:?}", hit.headers);
    assert_eq!(hit.header("x-other").as_deref(), Some("kept"));
    assert_eq!(origin.hits("/ncf"), 1);
}

async fn response_bare_no_cache_is_stored_but_revalidated_on_every_use(topology: Topology) {
    let (origin, edge) = start_origin_and_cdn(topology, &[]).await;
    origin.on(
        "/nc",
        Reply::ok("body")
            .cache_control("no-cache, max-age=60")
            .header("etag", "\"n1\""),
    );
    let client = HttpClient::http1();
    let miss = client.get(&edge.url("/nc")).await;
    miss.assert_cache_status_has("stored", "");

    origin.on(
        "/nc",
        Reply::ok("")
            .with_status(304)
            .cache_control("no-cache, max-age=60")
            .header("etag", "\"n1\""),
    );
    for n in 2..=3 {
        let response = client.get(&edge.url("/nc")).await;
        assert_eq!(response.status, 200);
        assert_eq!(response.text(), "body", "the stored body, validated");
        response.assert_cache_status_lacks("hit", "");
        assert_eq!(origin.hits("/nc"), n, "use {n} must be validated upstream");
        let sent = origin.last_request("/nc").unwrap();
        assert_eq!(sent.header("if-none-match").as_deref(), Some("\"n1\""));
    }
}

async fn authorized_request_response_is_not_stored_without_explicit_permission(topology: Topology) {
    let (origin, edge) = start_origin_and_cdn(topology, &[]).await;
    origin.on("/auth", Reply::ok("x").cache_control("max-age=60"));
    for n in 1..=2 {
        let response = edge
            .get_with("/auth", &[("authorization", "Bearer u1")])
            .await;
        response.assert_cache_status_has("detail=authorization", "");
        assert_eq!(origin.hits("/auth"), n);
    }
    edge.get_with("/auth", &[]).await;
    assert_eq!(origin.hits("/auth"), 3, "nothing was stored");
}

/// A response to a request with `Authorization` is stored when `cache_control` allows it.
async fn assert_authorized_response_is_stored(topology: Topology, cache_control: &str) {
    let (origin, edge) = start_origin_and_cdn(topology, &[]).await;
    origin.on("/auth", Reply::ok("shared").cache_control(cache_control));
    let miss = edge
        .get_with("/auth", &[("authorization", "Bearer u1")])
        .await;
    miss.assert_cache_status_has("stored", cache_control);
    let hit = edge
        .get_with("/auth", &[("authorization", "Bearer u1")])
        .await;
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
    let (origin, edge) = start_origin_and_cdn(topology, &[]).await;
    origin.on("/ma", Reply::ok("x").cache_control("max-age=100"));
    edge.get_with("/ma", &[]).await;
    edge.advance(30);

    let young_enough = edge
        .get_with("/ma", &[("cache-control", "max-age=40")])
        .await;
    assert_hit(&young_enough, "age 30 <= max-age=40");
    assert_eq!(origin.hits("/ma"), 1);

    let too_old = edge
        .get_with("/ma", &[("cache-control", "max-age=20")])
        .await;
    too_old.assert_cache_status_has("fwd=request", "age 30 > max-age=20");
    assert_eq!(origin.hits("/ma"), 2);
}

async fn request_max_stale_with_a_value_accepts_that_much_staleness(topology: Topology) {
    let (origin, edge) = start_origin_and_cdn(topology, &[]).await;
    origin.on("/ms", Reply::ok("x").cache_control("max-age=10"));
    edge.get_with("/ms", &[]).await;
    edge.advance(25); // 15s stale

    let accepted = edge
        .get_with("/ms", &[("cache-control", "max-stale=20")])
        .await;
    assert_eq!(accepted.text(), "x");
    assert!(
        accepted.cache_status_has("hit") && accepted.cache_status_has("detail=max-stale"),
        "{}",
        accepted.cache_status()
    );
    assert_eq!(origin.hits("/ms"), 1, "15s stale is within max-stale=20");

    let refused = edge
        .get_with("/ms", &[("cache-control", "max-stale=5")])
        .await;
    refused.assert_cache_status_lacks("hit", "");
    assert_eq!(origin.hits("/ms"), 2, "15s stale is beyond max-stale=5");
}

async fn request_max_stale_without_a_value_accepts_any_staleness(topology: Topology) {
    let (origin, edge) = start_origin_and_cdn(topology, &[]).await;
    origin.on("/msa", Reply::ok("x").cache_control("max-age=10"));
    edge.get_with("/msa", &[]).await;
    edge.advance(100_000);

    let accepted = edge
        .get_with("/msa", &[("cache-control", "max-stale")])
        .await;
    assert_eq!(accepted.text(), "x");
    accepted.assert_cache_status_has("detail=max-stale", "");
    assert_eq!(origin.hits("/msa"), 1);
}

async fn request_min_fresh_requires_that_much_freshness_left(topology: Topology) {
    let (origin, edge) = start_origin_and_cdn(topology, &[]).await;
    origin.on("/mf", Reply::ok("x").cache_control("max-age=100"));
    edge.get_with("/mf", &[]).await;
    edge.advance(50); // 50s left

    let enough = edge
        .get_with("/mf", &[("cache-control", "min-fresh=40")])
        .await;
    assert_hit(&enough, "50s left >= min-fresh=40");
    assert_eq!(origin.hits("/mf"), 1);

    let not_enough = edge
        .get_with("/mf", &[("cache-control", "min-fresh=60")])
        .await;
    not_enough.assert_cache_status_lacks("hit", "");
    assert_eq!(origin.hits("/mf"), 2, "50s left < min-fresh=60");
}

async fn request_no_cache_forces_revalidation_of_a_fresh_response(topology: Topology) {
    let (origin, edge) = start_origin_and_cdn(topology, &[]).await;
    origin.on(
        "/rnc",
        Reply::ok("body")
            .cache_control("max-age=100")
            .header("etag", "\"r1\""),
    );
    edge.get_with("/rnc", &[]).await;
    origin.on(
        "/rnc",
        Reply::ok("")
            .with_status(304)
            .cache_control("max-age=100")
            .header("etag", "\"r1\""),
    );

    let response = edge
        .get_with("/rnc", &[("cache-control", "no-cache")])
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "body");
    assert!(
        response.cache_status_has("fwd=request") && response.cache_status_has("fwd-status=304"),
        "{}",
        response.cache_status()
    );
    assert_eq!(origin.hits("/rnc"), 2);
    assert_eq!(
        origin
            .last_request("/rnc")
            .unwrap()
            .header("if-none-match")
            .as_deref(),
        Some("\"r1\"")
    );
}

async fn request_no_store_keeps_the_response_out_of_the_cache(topology: Topology) {
    let (origin, edge) = start_origin_and_cdn(topology, &[]).await;
    origin.on("/rns", Reply::ok("x").cache_control("max-age=100"));
    let first = edge
        .get_with("/rns", &[("cache-control", "no-store")])
        .await;
    assert_eq!(first.status, 200);
    first.assert_cache_status_lacks("stored", "");

    edge.get_with("/rns", &[]).await;
    assert_eq!(origin.hits("/rns"), 2, "the first response was not stored");
}

async fn only_if_cached_gets_504_when_nothing_is_stored(topology: Topology) {
    let (origin, edge) = start_origin_and_cdn(topology, &[]).await;
    origin.on("/oic", Reply::ok("x").cache_control("max-age=100"));
    let response = edge
        .get_with("/oic", &[("cache-control", "only-if-cached")])
        .await;
    assert_eq!(response.status, 504);
    response.assert_cache_status_has("detail=only-if-cached", "");
    assert_eq!(origin.hits("/oic"), 0, "only-if-cached never goes upstream");
}

async fn only_if_cached_gets_504_when_the_stored_response_is_stale(topology: Topology) {
    let (origin, edge) = start_origin_and_cdn(topology, &[]).await;
    origin.on("/oics", Reply::ok("x").cache_control("max-age=10"));
    edge.get_with("/oics", &[]).await;
    edge.advance(20);
    let response = edge
        .get_with("/oics", &[("cache-control", "only-if-cached")])
        .await;
    assert_eq!(response.status, 504);
    response.assert_cache_status_has("detail=only-if-cached", "");
    assert_eq!(origin.hits("/oics"), 1);
}

async fn only_if_cached_is_served_from_a_fresh_response(topology: Topology) {
    let (origin, edge) = start_origin_and_cdn(topology, &[]).await;
    origin.on("/oicf", Reply::ok("cached").cache_control("max-age=100"));
    edge.get_with("/oicf", &[]).await;
    let response = edge
        .get_with("/oicf", &[("cache-control", "only-if-cached")])
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "cached");
    assert_hit(&response, "fresh and only-if-cached");
    assert_eq!(origin.hits("/oicf"), 1);
}

async fn pragma_no_cache_forces_revalidation_without_cache_control(topology: Topology) {
    let (origin, edge) = start_origin_and_cdn(topology, &[]).await;
    origin.on("/pr", Reply::ok("x").cache_control("max-age=100"));
    edge.get_with("/pr", &[]).await;

    let response = edge.get_with("/pr", &[("pragma", "no-cache")]).await;
    response.assert_cache_status_has("fwd=request", "");
    assert_eq!(origin.hits("/pr"), 2);
}

async fn pragma_no_cache_is_ignored_when_cache_control_is_present(topology: Topology) {
    let (origin, edge) = start_origin_and_cdn(topology, &[]).await;
    origin.on("/pri", Reply::ok("x").cache_control("max-age=100"));
    edge.get_with("/pri", &[]).await;

    let response = edge
        .get_with(
            "/pri",
            &[("pragma", "no-cache"), ("cache-control", "max-age=50")],
        )
        .await;
    assert_hit(&response, "Cache-Control present: Pragma does not apply");
    assert_eq!(origin.hits("/pri"), 1);
}

// ---- CDN-Cache-Control, Surrogate-Control ----

async fn cdn_cache_control_overrides_a_cache_control_no_store(topology: Topology) {
    let (origin, edge) = start_origin_and_cdn(topology, &[]).await;
    origin.on(
        "/cdn",
        Reply::ok("x")
            .cache_control("no-store")
            .header("cdn-cache-control", "max-age=60"),
    );
    let miss = edge.get_with("/cdn", &[]).await;
    assert!(
        miss.cache_status_has("stored") && miss.cache_status_has("ttl=60"),
        "{}",
        miss.cache_status()
    );
    assert_hit(
        &edge.get_with("/cdn", &[]).await,
        "stored by CDN-Cache-Control",
    );
    assert_eq!(origin.hits("/cdn"), 1);
}

async fn cdn_cache_control_no_store_overrides_a_cache_control_max_age(topology: Topology) {
    let (origin, edge) = start_origin_and_cdn(topology, &[]).await;
    origin.on(
        "/cdn-ns",
        Reply::ok("x")
            .cache_control("max-age=60")
            .header("cdn-cache-control", "no-store"),
    );
    assert_never_stored(&origin, &edge, "/cdn-ns", "no-store").await;
}

async fn cdn_cache_control_lifetime_replaces_the_cache_control_lifetime(topology: Topology) {
    let (origin, edge) = start_origin_and_cdn(topology, &[]).await;
    origin.on(
        "/cdn-short",
        Reply::ok("x")
            .cache_control("max-age=1000")
            .header("cdn-cache-control", "max-age=10"),
    );
    let miss = edge.get_with("/cdn-short", &[]).await;
    let entries = miss.cache_status_entries();
    assert!(
        entries.iter().all(|entry| entry.contains("; ttl=10;")),
        "every tier applies CDN-Cache-Control: {entries:?}"
    );
    edge.advance(20);
    edge.get_with("/cdn-short", &[]).await;
    assert_eq!(origin.hits("/cdn-short"), 2, "stale by CDN-Cache-Control");
}

async fn surrogate_control_overrides_cache_control(topology: Topology) {
    let (origin, edge) = start_origin_and_cdn(topology, &[]).await;
    origin.on(
        "/sc",
        Reply::ok("x")
            .cache_control("private")
            .header("surrogate-control", "max-age=60"),
    );
    let miss = edge.get_with("/sc", &[]).await;
    miss.assert_cache_status_has("stored", "");
    assert_hit(
        &edge.get_with("/sc", &[]).await,
        "stored by Surrogate-Control",
    );
    assert_eq!(origin.hits("/sc"), 1);
}

async fn cdn_cache_control_still_governs_after_a_304_revalidation(topology: Topology) {
    let (origin, edge) = start_origin_and_cdn(topology, &[]).await;
    let reply = |r: Reply| {
        r.cache_control("no-store")
            .header("cdn-cache-control", "max-age=60")
            .header("etag", "\"c1\"")
    };
    origin.on("/cdn-304", reply(Reply::ok("body")));
    edge.get_with("/cdn-304", &[]).await;
    edge.advance(70);
    origin.on("/cdn-304", reply(Reply::ok("").with_status(304)));

    let revalidated = edge.get_with("/cdn-304", &[]).await;
    assert_eq!(revalidated.status, 200);
    assert_eq!(revalidated.text(), "body");
    assert!(
        revalidated.cache_status_has("fwd-status=304") && revalidated.cache_status_has("stored"),
        "the 304 freshens the stored response under CDN-Cache-Control: {}",
        revalidated.cache_status()
    );
    assert_hit(
        &edge.get_with("/cdn-304", &[]).await,
        "fresh again for 60s after the 304",
    );
    assert_eq!(origin.hits("/cdn-304"), 2);
}

async fn cdn_only_fields_are_not_forwarded_to_clients_but_cdn_cache_control_is(topology: Topology) {
    let (origin, edge) = start_origin_and_cdn(topology, &[]).await;
    origin.on(
        "/fields",
        Reply::ok("x")
            .cache_control("max-age=30")
            .header("cdn-cache-control", "max-age=60")
            .header("surrogate-control", "max-age=60")
            .header("surrogate-key", "k1 k2")
            .header("cache-tag", "t1,t2"),
    );
    let miss = edge.get_with("/fields", &[]).await;
    let hit = edge.get_with("/fields", &[]).await;
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
