//! Cache rules (`[[rules]]`) over real sockets, on the edge and on both tiers: TTLs against
//! what the origin says, bypass, `private`, `Set-Cookie`, negative caching, the key (query
//! normalisation, cookies, device class), response fields, `Cache-Status` `rule=NAME`, the
//! per-rule metric, and rules reloaded under traffic.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use verge_config::{ConfigFile, EdgeConfig};
use verge_edge::EdgeRole;
use verge_testkit as support;

use support::cdn::Topology;
use support::{start_origin_and_cdn, FakeOrigin, HttpClient, Reply, RunningNode, TestCdn};

const TOKEN: &str = "0123456789abcdef-test-token";

/// The rules every test here runs under, on the edge and (shielded) on the shield.
const RULES: &str = concat!(
    "rules = [",
    "{ name = \"static\", path = \"/static/\", default_ttl = \"1h\", max_ttl = \"2h\", ",
    "strip_set_cookie = true, query = { drop = [\"utm_*\", \"fbclid\"], sort = true }, ",
    "response_headers = { add = { \"x-rule\" = \"static\" }, remove = [\"x-powered-by\"] } }, ",
    "{ name = \"forced\", path = \"/forced/\", force_ttl = \"10m\" }, ",
    "{ name = \"api\", path = \"/api/\", bypass = true }, ",
    "{ name = \"private\", path = \"/private/\", cache_private = true }, ",
    "{ name = \"negative\", path = \"/neg/\", negative_ttl = \"30s\", error_ttl = \"5s\" }, ",
    "{ name = \"keyed\", path = \"/keyed/\", default_ttl = \"1h\", ignore_cookies = true, ",
    "key = { cookies = [\"lang\"], device = true } }, ",
    "{ name = \"swr\", path = \"/swr/\", stale_while_revalidate = \"30s\" }, ",
    "{ name = \"sie\", path = \"/sie/\", stale_if_error = \"1h\" }",
    "]"
);

async fn start(topology: Topology) -> (FakeOrigin, TestCdn) {
    let token = format!("admin.token = {TOKEN:?}");
    start_origin_and_cdn(topology, &[RULES, &token]).await
}

/// GETs `path` twice; the origin's hits for it and the second answer.
async fn twice(origin: &FakeOrigin, cdn: &TestCdn, path: &str) -> (usize, support::TestResponse) {
    cdn.get_with(path, &[]).await;
    let second = cdn.get_with(path, &[]).await;
    let bare = path.split('?').next().unwrap_or(path);
    (origin.hits(bare), second)
}

async fn a_default_ttl_stores_what_the_origin_gave_no_freshness(topology: Topology) {
    let (origin, cdn) = start(topology).await;
    origin.on("/static/a.css", Reply::ok("a"));
    origin.on("/plain/a.css", Reply::ok("a"));

    let (hits, second) = twice(&origin, &cdn, "/static/a.css").await;
    assert_eq!(hits, 1, "the rule's default TTL made it storable");
    second.assert_cache_status_has("hit", "stored under the rule");
    assert!(
        second.cache_status_entry().contains("rule=static"),
        "{}",
        second.cache_status()
    );

    let (hits, second) = twice(&origin, &cdn, "/plain/a.css").await;
    assert_eq!(hits, 2, "no rule: no freshness, not stored");
    assert!(
        !second.cache_status().contains("rule="),
        "{}",
        second.cache_status()
    );
}

async fn the_maximum_caps_and_a_forced_ttl_overrides_the_origin(topology: Topology) {
    let (origin, cdn) = start(topology).await;
    origin.on(
        "/static/long",
        Reply::ok("l").cache_control("max-age=86400"),
    );
    origin.on("/forced/zero", Reply::ok("z").cache_control("max-age=0"));
    origin.on("/plain/zero", Reply::ok("z").cache_control("max-age=0"));

    let (hits, _) = twice(&origin, &cdn, "/forced/zero").await;
    assert_eq!(
        hits, 1,
        "force_ttl stores what the origin says is stale at once"
    );
    let (hits, _) = twice(&origin, &cdn, "/plain/zero").await;
    assert_eq!(hits, 2);

    let (hits, _) = twice(&origin, &cdn, "/static/long").await;
    assert_eq!(hits, 1);
    cdn.advance(2 * 3600 + 1);
    let late = cdn.get_with("/static/long", &[]).await;
    late.assert_cache_status_lacks("hit", "max_ttl (2h) ended the origin's day");
    assert_eq!(origin.hits("/static/long"), 2);
    cdn.advance(11 * 60);
    let forced = cdn.get_with("/forced/zero", &[]).await;
    forced.assert_cache_status_lacks("hit", "the forced 10 minutes are over");
}

async fn tracking_parameters_do_not_split_the_key_or_reach_the_origin(topology: Topology) {
    let (origin, cdn) = start(topology).await;
    origin.on("/static/q", Reply::ok("q").cache_control("max-age=60"));

    let first = cdn
        .get_with("/static/q?utm_source=x&b=2&fbclid=f&a=1", &[])
        .await;
    assert_eq!(first.status, 200);
    let seen = origin.last_request("/static/q").unwrap();
    assert_eq!(seen.path_and_query, "/static/q?a=1&b=2");
    let second = cdn.get_with("/static/q?a=1&b=2", &[]).await;
    second.assert_cache_status_has("hit", "?utm_source=x&… and ?a=1&b=2 are one object");
    let third = cdn.get_with("/static/q?b=2&a=1&utm_medium=m", &[]).await;
    third.assert_cache_status_has("hit", "order and tracking parameters do not matter");
    assert_eq!(origin.hits("/static/q"), 1);
    let other = cdn.get_with("/static/q?a=2", &[]).await;
    other.assert_cache_status_lacks("hit", "a parameter that matters still does");
}

async fn set_cookie_is_stripped_only_where_the_rule_says(topology: Topology) {
    let (origin, cdn) = start(topology).await;
    let cookie = |body: &'static str| {
        Reply::ok(body)
            .cache_control("max-age=60")
            .header("set-cookie", "session=abc")
    };
    origin.on("/static/c", cookie("c"));
    origin.on("/plain/c", cookie("p"));

    let first = cdn.get_with("/static/c", &[]).await;
    assert_eq!(first.header("set-cookie"), None, "stripped for the rule");
    let (hits, second) = twice(&origin, &cdn, "/static/c").await;
    assert_eq!(hits, 1);
    assert_eq!(second.header("set-cookie"), None);

    let (hits, second) = twice(&origin, &cdn, "/plain/c").await;
    assert_eq!(
        hits, 2,
        "no rule: a response with Set-Cookie is never stored"
    );
    assert_eq!(second.header("set-cookie").as_deref(), Some("session=abc"));
}

async fn a_bypass_rule_never_uses_the_cache(topology: Topology) {
    let (origin, cdn) = start(topology).await;
    origin.on("/api/x", Reply::ok("x").cache_control("max-age=60"));
    let (hits, second) = twice(&origin, &cdn, "/api/x").await;
    assert_eq!(hits, 2);
    second.assert_cache_status_has("fwd=bypass", "bypassed by rule");
    assert!(second.cache_status_entry().contains("rule=api"));
}

async fn private_is_stored_only_under_a_rule_that_says_so(topology: Topology) {
    let (origin, cdn) = start(topology).await;
    origin.on(
        "/private/p",
        Reply::ok("p").cache_control("private, max-age=60"),
    );
    origin.on(
        "/plain/p",
        Reply::ok("p").cache_control("private, max-age=60"),
    );
    assert_eq!(twice(&origin, &cdn, "/private/p").await.0, 1);
    assert_eq!(twice(&origin, &cdn, "/plain/p").await.0, 2);
}

async fn not_found_and_errors_are_cached_for_their_short_ttls(topology: Topology) {
    let (origin, cdn) = start(topology).await;
    origin.on("/neg/gone", Reply::ok("gone").with_status(404));
    origin.on("/neg/down", Reply::ok("down").with_status(503));
    origin.on("/plain/gone", Reply::ok("gone").with_status(404));

    let (hits, second) = twice(&origin, &cdn, "/neg/gone").await;
    assert_eq!((hits, second.status.as_u16()), (1, 404));
    let (hits, second) = twice(&origin, &cdn, "/neg/down").await;
    assert_eq!((hits, second.status.as_u16()), (1, 503));
    assert_eq!(twice(&origin, &cdn, "/plain/gone").await.0, 2);

    cdn.advance(6);
    cdn.get_with("/neg/down", &[]).await;
    assert_eq!(origin.hits("/neg/down"), 2, "error_ttl (5s) is over");
    cdn.get_with("/neg/gone", &[]).await;
    assert_eq!(origin.hits("/neg/gone"), 1, "negative_ttl (30s) is not");
}

async fn keyed_cookies_and_device_class_select_variants_and_a_url_purge_takes_them_all(
    topology: Topology,
) {
    let (origin, cdn) = start(topology).await;
    origin.on("/keyed/page", Reply::ok("page"));
    let iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148";
    let desktop = "Mozilla/5.0 (X11; Linux x86_64)";
    let get = |cookie: &'static str, agent: &'static str| {
        let cdn = &cdn;
        async move {
            cdn.get_with("/keyed/page", &[("cookie", cookie), ("user-agent", agent)])
                .await
        }
    };

    get("session=secret; lang=fr", iphone).await;
    let seen = origin.last_request("/keyed/page").unwrap();
    assert_eq!(
        seen.header("cookie").as_deref(),
        Some("lang=fr"),
        "only keyed cookies go upstream"
    );
    assert_eq!(seen.header("x-device-class").as_deref(), Some("mobile"));

    let again = get("session=other; lang=fr", iphone).await;
    again.assert_cache_status_has("hit", "other cookies do not split the key");
    get("lang=de", iphone).await;
    get("lang=fr", desktop).await;
    assert_eq!(
        origin.hits("/keyed/page"),
        3,
        "each language and device class its own"
    );
    let hit = get("lang=fr", desktop).await;
    hit.assert_cache_status_has("hit", "the desktop variant is stored");

    let url = format!("{{\"urls\":[\"http://{}/keyed/page\"]}}", cdn.data_addr);
    let purged = cdn.purge(&url, Some(TOKEN)).await;
    assert_eq!(purged.status, 200, "{}", purged.text());
    let after = get("lang=fr", iphone).await;
    after.assert_cache_status_lacks("hit", "a URL purge takes every keyed variant");
    let after = get("lang=fr", desktop).await;
    after.assert_cache_status_lacks("hit", "a URL purge takes every keyed variant");
}

async fn response_fields_are_added_and_removed(topology: Topology) {
    let (origin, cdn) = start(topology).await;
    let reply = Reply::ok("h")
        .cache_control("max-age=60")
        .header("x-powered-by", "php");
    origin.on("/static/h", reply.clone());
    origin.on("/plain/h", reply);
    for _ in 0..2 {
        let ruled = cdn.get_with("/static/h", &[]).await;
        assert_eq!(ruled.header("x-powered-by"), None);
        assert_eq!(ruled.header("x-rule").as_deref(), Some("static"));
    }
    let plain = cdn.get_with("/plain/h", &[]).await;
    assert_eq!(plain.header("x-powered-by").as_deref(), Some("php"));
    assert_eq!(plain.header("x-rule"), None);
}

async fn stale_while_revalidate_comes_from_the_rule(topology: Topology) {
    let (origin, cdn) = start(topology).await;
    origin.on("/swr/s", Reply::ok("s").cache_control("max-age=10"));
    cdn.get_with("/swr/s", &[]).await;
    cdn.advance(15);
    let stale = cdn.get_with("/swr/s", &[]).await;
    stale.assert_cache_status_has(
        "detail=stale-while-revalidate",
        "the rule's window serves it stale while it is refreshed",
    );
}

async fn stale_if_error_comes_from_the_rule(topology: Topology) {
    let (origin, cdn) = start(topology).await;
    origin.on("/sie/s", Reply::ok("kept").cache_control("max-age=10"));
    origin.on("/plain/s", Reply::ok("kept").cache_control("max-age=10"));
    cdn.get_with("/sie/s", &[]).await;
    cdn.get_with("/plain/s", &[]).await;
    cdn.advance(15);
    origin.on("/sie/s", Reply::ok("down").with_status(503));
    origin.on("/plain/s", Reply::ok("down").with_status(503));
    let stale = cdn.get_with("/sie/s", &[]).await;
    assert_eq!(stale.status, 200);
    assert_eq!(stale.text(), "kept");
    stale.assert_cache_status_has("detail=stale-if-error", "the rule's window");
    let failed = cdn.get_with("/plain/s", &[]).await;
    assert_eq!(failed.status, 503, "no rule, no window: the origin's error");
}

async fn hits_are_counted_per_rule(topology: Topology) {
    let (origin, cdn) = start(topology).await;
    origin.on("/static/m", Reply::ok("m").cache_control("max-age=60"));
    twice(&origin, &cdn, "/static/m").await;
    let metrics = cdn.metrics().await;
    metrics.assert_value(
        "verge_rule_requests_total",
        &[("rule", "static"), ("cache_status", "hit")],
        1.0,
    );
    metrics.assert_value(
        "verge_rule_requests_total",
        &[("rule", "static"), ("cache_status", "miss")],
        1.0,
    );
}

support::in_both_topologies!(
    a_default_ttl_stores_what_the_origin_gave_no_freshness,
    the_maximum_caps_and_a_forced_ttl_overrides_the_origin,
    tracking_parameters_do_not_split_the_key_or_reach_the_origin,
    set_cookie_is_stripped_only_where_the_rule_says,
    a_bypass_rule_never_uses_the_cache,
    private_is_stored_only_under_a_rule_that_says_so,
    not_found_and_errors_are_cached_for_their_short_ttls,
    keyed_cookies_and_device_class_select_variants_and_a_url_purge_takes_them_all,
    response_fields_are_added_and_removed,
    stale_while_revalidate_comes_from_the_rule,
    stale_if_error_comes_from_the_rule,
    hits_are_counted_per_rule,
);

fn edge_file(origin: &FakeOrigin, rules: &str) -> String {
    format!(
        "[edge]\nid = \"edge-rules\"\n\
         [server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nshutdown_grace = \"2s\"\n\
         [admin]\ntoken = {TOKEN:?}\n\
         [upstream]\norigin = \"http://{}\"\n\n{rules}",
        origin.addr()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_reloaded_under_traffic_apply_without_failing_a_request() {
    let origin = FakeOrigin::start().await;
    origin.on_prefix("/r/", Reply::ok("r"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.toml");
    std::fs::write(&path, edge_file(&origin, "")).unwrap();
    let config = EdgeConfig::from_file(&path).unwrap();
    let node = Arc::new(RunningNode::start_from::<EdgeRole>(&config, &path).await);

    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicUsize::new(0));
    let traffic = {
        let (node, stop, failed) = (Arc::clone(&node), Arc::clone(&stop), Arc::clone(&failed));
        tokio::spawn(async move {
            let client = HttpClient::http1();
            let mut sent = 0;
            while !stop.load(Ordering::Acquire) && sent < 2000 {
                let response = client.get(&node.url(&format!("/r/{}", sent % 7))).await;
                if response.status != 200 {
                    failed.fetch_add(1, Ordering::AcqRel);
                }
                sent += 1;
            }
            sent
        })
    };
    let before = HttpClient::http1().get(&node.url("/r/x")).await;
    before.assert_cache_status_lacks("rule=", "no rules yet");

    let rules = "[[rules]]\nname = \"reloaded\"\npath = \"/r/\"\ndefault_ttl = \"1h\"\n";
    std::fs::write(&path, edge_file(&origin, rules)).unwrap();
    let reload = node.reload(TOKEN).await;
    assert_eq!(reload.status, 200, "{}", reload.text());
    assert!(reload.text().contains("rules"), "{}", reload.text());

    let hits = origin.hits("/r/y");
    HttpClient::http1().get(&node.url("/r/y")).await;
    let after = HttpClient::http1().get(&node.url("/r/y")).await;
    after.assert_cache_status_has("hit", "the reloaded rule's default TTL applies");
    assert!(after.cache_status_entry().contains("rule=reloaded"));
    assert_eq!(origin.hits("/r/y"), hits + 1);

    stop.store(true, Ordering::Release);
    let sent = traffic.await.unwrap();
    assert!(sent > 0);
    assert_eq!(
        failed.load(Ordering::Acquire),
        0,
        "a request failed during the reload"
    );
}
