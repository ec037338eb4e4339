//! The admin purge API (`POST /v1/purge` on the admin listener): who may call it, which bodies
//! it accepts, and what it removes — by URL (every variant), prefix, surrogate key, or all —
//! hard or soft (kept, but revalidated before use and still usable under stale-if-error).

use verge_testkit as support;

use support::{
    start_origin_and_cdn, FakeOrigin, HttpClient, Reply, TestCdn, TestResponse, Topology,
};

const TOKEN: &str = "0123456789abcdef-test-token";
const TOKEN_LINE: &str = "admin.token = \"0123456789abcdef-test-token\"";

async fn start(topology: Topology) -> (FakeOrigin, TestCdn) {
    start_origin_and_cdn(topology, &[TOKEN_LINE]).await
}

async fn is_cached(edge: &TestCdn, path: &str) -> bool {
    edge.get_with(path, &[]).await.cache_status_has("hit")
}

/// Has the origin answer `path` with `reply`, requests it, and checks it is then a hit.
async fn store(origin: &FakeOrigin, edge: &TestCdn, path: &str, reply: Reply) {
    origin.on(path, reply);
    edge.get_with(path, &[]).await;
    assert!(is_cached(edge, path).await, "{path} was not stored");
}

/// Stores `path` with `reply`, then soft-purges that one URL.
async fn store_then_soft_purge(origin: &FakeOrigin, edge: &TestCdn, path: &str, reply: Reply) {
    store(origin, edge, path, reply).await;
    let body = format!(r#"{{"urls":["{}"],"soft":true}}"#, edge.url(path));
    assert_eq!(purged(&edge.purge(&body, Some(TOKEN)).await), 1);
}

fn plain(path: &str) -> Reply {
    Reply::ok(format!("{path} body")).cache_control("max-age=600")
}

/// [`plain`], tagged for purges by tag through `field` (`Surrogate-Key` or `Cache-Tag`).
fn tagged(path: &str, field: &str, tags: &str) -> Reply {
    plain(path).header(field, tags)
}

/// A successful purge answers `{"purged":N}`; returns N.
fn purged(response: &TestResponse) -> u64 {
    assert_eq!(response.status, 200, "{}", response.text());
    let text = response.text();
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    compact
        .strip_prefix("{\"purged\":")
        .and_then(|rest| rest.strip_suffix('}'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not {{\"purged\":N}}: {text:?}"))
}

// ---- access and input ----

async fn purge_without_credentials_is_401_with_www_authenticate(topology: Topology) {
    let (_origin, edge) = start(topology).await;
    let response = edge.purge(r#"{"all":true}"#, None).await;
    assert_eq!(response.status, 401, "{}", response.text());
    let challenge = response.header("www-authenticate").unwrap_or_default();
    assert!(challenge.starts_with("Bearer"), "{challenge:?}");
}

async fn purge_with_a_wrong_token_is_403(topology: Topology) {
    let (origin, edge) = start(topology).await;
    store(&origin, &edge, "/kept", plain("/kept")).await;
    let response = edge
        .purge(r#"{"all":true}"#, Some("0123456789abcdef-test-tokeN"))
        .await;
    assert_eq!(response.status, 403, "{}", response.text());
    assert!(is_cached(&edge, "/kept").await, "nothing was purged");
}

async fn purge_is_403_when_no_token_is_configured(topology: Topology) {
    let (_origin, edge) = start_origin_and_cdn(topology, &[]).await;
    let response = edge.purge(r#"{"all":true}"#, Some(TOKEN)).await;
    assert_eq!(response.status, 403, "{}", response.text());
}

async fn assert_bad_request(topology: Topology, body: &str) {
    let (_origin, edge) = start(topology).await;
    let response = edge.purge(body, Some(TOKEN)).await;
    assert_eq!(response.status, 400, "{body}: {}", response.text());
}

async fn purge_with_invalid_json_is_400(topology: Topology) {
    assert_bad_request(topology, r#"{"urls": ["http://h/a"#).await;
}

async fn purge_with_an_unknown_field_is_400(topology: Topology) {
    assert_bad_request(topology, r#"{"url": ["http://h/a"]}"#).await;
}

async fn purge_of_a_relative_url_is_400(topology: Topology) {
    assert_bad_request(topology, r#"{"urls": ["/a"]}"#).await;
}

async fn an_empty_purge_is_400(topology: Topology) {
    assert_bad_request(topology, r#"{}"#).await;
}

async fn purge_body_over_max_body_bytes_is_413(topology: Topology) {
    let (_origin, edge) =
        start_origin_and_cdn(topology, &[TOKEN_LINE, "admin.max_body_bytes = \"1KiB\""]).await;
    let urls: Vec<String> = (0..100).map(|i| format!("\"http://h/{i}\"")).collect();
    let body = format!("{{\"urls\":[{}]}}", urls.join(","));
    assert!(body.len() > 1024);
    let response = edge.purge(&body, Some(TOKEN)).await;
    assert_eq!(response.status, 413, "{}", response.text());

    let small = edge.purge(r#"{"urls":["http://h/0"]}"#, Some(TOKEN)).await;
    assert_eq!(
        small.status,
        200,
        "a body within the bound: {}",
        small.text()
    );
}

async fn get_on_the_purge_endpoint_is_405(topology: Topology) {
    let (_origin, edge) = start(topology).await;
    let response = HttpClient::http1().get(&edge.admin_url("/v1/purge")).await;
    assert_eq!(response.status, 405);
    assert_eq!(response.header("allow").as_deref(), Some("POST"));
}

async fn purge_method_on_the_data_plane_is_405(topology: Topology) {
    let (origin, edge) = start(topology).await;
    store(&origin, &edge, "/p", plain("/p")).await;
    let response = HttpClient::http1()
        .request("PURGE", &edge.url("/p"), &[], "")
        .await;
    assert_eq!(response.status, 405);
    assert!(
        is_cached(&edge, "/p").await,
        "a data-plane PURGE removes nothing"
    );
}

// ---- what is purged ----

async fn purge_by_url_removes_every_variant(topology: Topology) {
    let (origin, edge) = start(topology).await;
    let vary = |body: &str| {
        Reply::ok(body.to_string())
            .cache_control("max-age=600")
            .header("vary", "accept-language")
    };
    origin.on("/v", vary("hello"));
    edge.get_with("/v", &[("accept-language", "en")]).await;
    origin.on("/v", vary("bonjour"));
    edge.get_with("/v", &[("accept-language", "fr")]).await;
    store(&origin, &edge, "/other", plain("/other")).await;
    for lang in ["en", "fr"] {
        let hit = edge.get_with("/v", &[("accept-language", lang)]).await;
        assert!(hit.cache_status_has("hit"), "{lang} stored");
    }

    let response = edge
        .purge(
            &format!(r#"{{"urls":["{}"]}}"#, edge.url("/v")),
            Some(TOKEN),
        )
        .await;
    assert_eq!(purged(&response), 1, "one URL");
    let before = origin.hits("/v");
    for lang in ["en", "fr"] {
        let after = edge.get_with("/v", &[("accept-language", lang)]).await;
        after.assert_cache_status_lacks("hit", &format!("{lang} variant purged"));
    }
    assert_eq!(origin.hits("/v"), before + 2, "both variants fetched again");
    assert!(is_cached(&edge, "/other").await, "another URL is kept");
}

async fn purge_by_prefix_removes_the_urls_under_it(topology: Topology) {
    let (origin, edge) = start(topology).await;
    for path in ["/img/a.png", "/img/b/c.png", "/css/site.css", "/img"] {
        store(&origin, &edge, path, plain(path)).await;
    }
    let response = edge
        .purge(
            &format!(r#"{{"prefixes":["{}"]}}"#, edge.url("/img/")),
            Some(TOKEN),
        )
        .await;
    assert_eq!(purged(&response), 2);
    assert!(!is_cached(&edge, "/img/a.png").await);
    assert!(!is_cached(&edge, "/img/b/c.png").await);
    assert!(is_cached(&edge, "/css/site.css").await);
    assert!(is_cached(&edge, "/img").await, "not under /img/");
}

/// Stores `/tagged` with `tags` in `field` and `/x` tagged `x`; a purge of `tag` removes only
/// `/tagged`.
async fn assert_purge_by_tag(topology: Topology, field: &str, tags: &str, tag: &str) {
    let (origin, edge) = start(topology).await;
    store(&origin, &edge, "/tagged", tagged("/tagged", field, tags)).await;
    store(&origin, &edge, "/x", tagged("/x", field, "x")).await;
    let response = edge
        .purge(&format!(r#"{{"tags":["{tag}"]}}"#), Some(TOKEN))
        .await;
    assert_eq!(purged(&response), 1);
    assert!(
        !is_cached(&edge, "/tagged").await,
        "tagged {tag} by {field}: {tags}"
    );
    assert!(is_cached(&edge, "/x").await);
}

async fn purge_by_tag_removes_urls_tagged_by_surrogate_key(topology: Topology) {
    assert_purge_by_tag(topology, "surrogate-key", "a b", "b").await;
}

async fn purge_by_tag_removes_urls_tagged_by_cache_tag(topology: Topology) {
    assert_purge_by_tag(topology, "cache-tag", "c,d", "d").await;
}

async fn purge_all_removes_everything(topology: Topology) {
    let (origin, edge) = start(topology).await;
    for path in ["/1", "/2", "/3"] {
        store(&origin, &edge, path, plain(path)).await;
    }
    let response = edge.purge(r#"{"all":true}"#, Some(TOKEN)).await;
    assert_eq!(purged(&response), 3);
    for path in ["/1", "/2", "/3"] {
        assert!(!is_cached(&edge, path).await, "{path}");
    }
}

async fn soft_purge_keeps_the_object_but_makes_the_next_request_revalidate(topology: Topology) {
    let (origin, edge) = start(topology).await;
    let kept = Reply::ok("kept body")
        .cache_control("max-age=600")
        .header("etag", "\"s1\"");
    store_then_soft_purge(&origin, &edge, "/soft", kept).await;
    origin.on(
        "/soft",
        Reply::ok("")
            .with_status(304)
            .cache_control("max-age=600")
            .header("etag", "\"s1\""),
    );

    let revalidated = edge.get_with("/soft", &[]).await;
    assert_eq!(revalidated.status, 200);
    assert_eq!(
        revalidated.text(),
        "kept body",
        "the kept object, validated"
    );
    assert!(
        revalidated.cache_status_has("fwd=stale") && revalidated.cache_status_has("fwd-status=304"),
        "{}",
        revalidated.cache_status()
    );
    let sent = origin.last_request("/soft").unwrap();
    assert_eq!(sent.header("if-none-match").as_deref(), Some("\"s1\""));
    assert!(is_cached(&edge, "/soft").await, "fresh again after the 304");
    assert_eq!(origin.hits("/soft"), 2);
}

async fn soft_purged_object_is_still_served_under_stale_if_error(topology: Topology) {
    let (origin, edge) = start(topology).await;
    let kept = Reply::ok("kept body").cache_control("max-age=600, stale-if-error=600");
    store_then_soft_purge(&origin, &edge, "/soft-err", kept).await;
    origin.on("/soft-err", Reply::reset());

    let served = edge.get_with("/soft-err", &[]).await;
    assert_eq!(served.status, 200, "{}", served.text());
    assert_eq!(served.text(), "kept body");
    served.assert_cache_status_has("detail=stale-if-error", "");
    assert!(origin.hits("/soft-err") >= 2, "the origin was asked first");
}

support::in_both_topologies!(
    purge_without_credentials_is_401_with_www_authenticate,
    purge_with_a_wrong_token_is_403,
    purge_is_403_when_no_token_is_configured,
    purge_with_invalid_json_is_400,
    purge_with_an_unknown_field_is_400,
    purge_of_a_relative_url_is_400,
    an_empty_purge_is_400,
    purge_body_over_max_body_bytes_is_413,
    get_on_the_purge_endpoint_is_405,
    purge_method_on_the_data_plane_is_405,
    purge_by_url_removes_every_variant,
    purge_by_prefix_removes_the_urls_under_it,
    purge_by_tag_removes_urls_tagged_by_surrogate_key,
    purge_by_tag_removes_urls_tagged_by_cache_tag,
    purge_all_removes_everything,
    soft_purge_keeps_the_object_but_makes_the_next_request_revalidate,
    soft_purged_object_is_still_served_under_stale_if_error,
);
