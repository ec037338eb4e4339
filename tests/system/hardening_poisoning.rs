//! Cache poisoning: one attacker request must never decide what later clients are served.
//! Fields that override host, URL or method do not reach the origin; the key and the `Host`
//! sent upstream are one authority; a `Set-Cookie` is never handed to another client; a
//! compressed answer without `Vary` is not served to clients that did not ask for it.

use verge_config::OverrideHeaders;
use verge_testkit as support;

use support::cdn::Topology;
use support::{raw_exchange, start_origin_and_cdn, HttpClient, Reply};

/// A GET of `url` with extra `headers`.
async fn get(client: &HttpClient, url: &str, headers: &[(&str, &str)]) -> support::TestResponse {
    client.request("GET", url, headers, "").await
}

async fn override_fields_never_reach_the_origin(topology: Topology) {
    let (origin, cdn) = start_origin_and_cdn(topology, &[]).await;
    origin.on("/page", Reply::ok("page").cache_control("max-age=60"));
    let client = HttpClient::http1();
    let fields: Vec<(&str, &str)> = OverrideHeaders::NAMES
        .iter()
        .map(|name| (*name, "evil.test"))
        .collect();

    let response = client.request("GET", &cdn.url("/page"), &fields, "").await;
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = origin.last_request("/page").unwrap();
    for name in OverrideHeaders::NAMES {
        assert_eq!(seen.header(name), None, "{name} reached the origin");
    }
}

async fn the_key_and_the_forwarded_host_are_one_authority(topology: Topology) {
    let (origin, cdn) = start_origin_and_cdn(topology, &[]).await;
    origin.on("/x", Reply::ok("x").cache_control("max-age=60"));

    // Absolute form: the Host field is ignored (RFC 9112 §3.2.2) — upstream too.
    let reply = raw_exchange(
        cdn.data_addr,
        b"GET http://evil.test/x HTTP/1.1\r\nHost: good.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(reply.status(), 200, "{}", reply.text());
    let seen = origin.last_request("/x").unwrap();
    assert_eq!(seen.header("host").as_deref(), Some("evil.test"));

    // good.test was never asked for: its clients do not get what was stored for evil.test.
    let client = HttpClient::http1();
    let good = get(&client, &cdn.url("/x"), &[("host", "good.test")]).await;
    assert_eq!(good.status, 200);
    assert!(
        !good.cache_status_has("hit"),
        "good.test answered from evil.test's object: {}",
        good.cache_status()
    );
    let evil = get(&client, &cdn.url("/x"), &[("host", "evil.test")]).await;
    assert!(evil.cache_status_has("hit"), "{}", evil.cache_status());
}

async fn a_set_cookie_is_never_handed_to_another_client(topology: Topology) {
    let (origin, cdn) = start_origin_and_cdn(topology, &[]).await;
    origin.on(
        "/login",
        Reply::ok("welcome")
            .cache_control("public, max-age=600")
            .header("set-cookie", "session=attacker-session"),
    );
    let client = HttpClient::http1();
    let first = client.get(&cdn.url("/login")).await;
    assert_eq!(first.status, 200);
    assert_eq!(
        first.header("set-cookie").as_deref(),
        Some("session=attacker-session"),
        "the client the origin answered gets its cookie"
    );
    origin.on(
        "/login",
        Reply::ok("welcome")
            .cache_control("public, max-age=600")
            .header("set-cookie", "session=second-session"),
    );
    let second = client.get(&cdn.url("/login")).await;
    assert_eq!(
        second.header("set-cookie").as_deref(),
        Some("session=second-session"),
        "a later client got another client's cookie: {}",
        second.cache_status()
    );
    assert_eq!(origin.hits("/login"), 2);
}

async fn a_compressed_answer_without_vary_is_not_served_to_others(topology: Topology) {
    let (origin, cdn) = start_origin_and_cdn(topology, &[]).await;
    origin.on(
        "/app.js",
        Reply::ok(vec![0x1f, 0x8b, 8, 0])
            .cache_control("max-age=600")
            .header("content-encoding", "gzip"),
    );
    let client = HttpClient::http1();
    let gzip = get(&client, &cdn.url("/app.js"), &[("accept-encoding", "gzip")]).await;
    assert_eq!(gzip.header("content-encoding").as_deref(), Some("gzip"));
    let vary = gzip.header("vary").unwrap_or_default().to_ascii_lowercase();
    assert!(vary.contains("accept-encoding"), "vary: {vary:?}");

    origin.on("/app.js", Reply::ok("plain").cache_control("max-age=600"));
    let plain = client.get(&cdn.url("/app.js")).await;
    assert_eq!(
        plain.header("content-encoding"),
        None,
        "gzip served to a client that did not accept it: {}",
        plain.cache_status()
    );
    assert_eq!(plain.text(), "plain");
    let again = get(&client, &cdn.url("/app.js"), &[("accept-encoding", "gzip")]).await;
    assert!(again.cache_status_has("hit"), "{}", again.cache_status());
}

support::in_both_topologies!(
    override_fields_never_reach_the_origin,
    the_key_and_the_forwarded_host_are_one_authority,
    a_set_cookie_is_never_handed_to_another_client,
    a_compressed_answer_without_vary_is_not_served_to_others,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn override_fields_can_be_refused_instead() {
    let (origin, cdn) =
        start_origin_and_cdn(Topology::Direct, &["server.override_headers = \"refuse\""]).await;
    origin.on("/page", Reply::ok("page"));
    let client = HttpClient::http1();
    let response = get(
        &client,
        &cdn.url("/page"),
        &[("x-forwarded-host", "evil.test")],
    )
    .await;
    assert_eq!(response.status, 400, "{}", response.text());
    assert!(response.text().contains("x-forwarded-host"));
    assert_eq!(origin.total_hits(), 0);
}
