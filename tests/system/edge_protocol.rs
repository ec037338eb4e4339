//! The edge as an HTTP intermediary: HTTP/2 with prior knowledge, hop-by-hop headers stripped
//! in both directions, `Via` added in both directions, other methods passed through.

// A panic is how a test fails: unwrapping is the point here.

use verge_testkit as support;

use http::Version;
use support::edge::EDGE_ID;
use support::scenario::edge_serving;
use support::{HttpClient, Reply};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_is_served_and_hits_after_a_miss() {
    let reply = Reply::ok("over h2").cache_control("max-age=60");
    let (origin, edge) = edge_serving("/h2", reply, &[]).await;
    let client = HttpClient::http2();

    let miss = client.get(&edge.url("/h2")).await;
    assert_eq!(miss.version, Version::HTTP_2);
    assert_eq!(miss.status, 200);
    assert_eq!(miss.text(), "over h2");
    miss.assert_cache_status_has("fwd=uri-miss", "");

    let hit = client.get(&edge.url("/h2")).await;
    assert_eq!(hit.version, Version::HTTP_2);
    assert_eq!(hit.text(), "over h2");
    assert_eq!(hit.cache_status(), "verge-edge; hit; ttl=60");
    assert!(hit.header("age").is_some());
    assert_eq!(origin.hits("/h2"), 1);

    // The upstream request of an HTTP/2 client still names the host.
    let upstream = origin.last_request("/h2").unwrap();
    assert_eq!(
        upstream.header("host"),
        Some(edge.data_addr.to_string()),
        "{upstream:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_and_http1_clients_share_the_cache() {
    let reply = Reply::ok("one copy").cache_control("max-age=60");
    let (origin, edge) = edge_serving("/shared", reply, &[]).await;

    HttpClient::http1().get(&edge.url("/shared")).await;
    let hit = HttpClient::http2().get(&edge.url("/shared")).await;
    hit.assert_cache_status_has("hit", "");
    assert_eq!(origin.hits("/shared"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_stripped_and_via_added_both_ways() {
    let reply = Reply::ok("hop")
        .cache_control("max-age=60")
        .header("connection", "x-private-hop")
        .header("x-private-hop", "1")
        .header("keep-alive", "timeout=5")
        .header("x-end-to-end", "kept");
    let (origin, edge) = edge_serving("/hop", reply, &[]).await;
    let client = HttpClient::http1();
    let via = format!("1.1 {EDGE_ID}");

    let headers = [("connection", "x-client-hop"), ("x-client-hop", "1")];
    let miss = client.request("GET", &edge.url("/hop"), &headers, "").await;
    let hit = client.request("GET", &edge.url("/hop"), &headers, "").await;
    hit.assert_cache_status_has("hit", "");
    for (which, response) in [("miss", &miss), ("hit", &hit)] {
        assert_eq!(response.status, 200);
        assert_eq!(
            response.header("x-private-hop"),
            None,
            "{which}: {response:?}"
        );
        assert_eq!(response.header("keep-alive"), None, "{which}: {response:?}");
        let connection = response.header("connection").unwrap_or_default();
        assert!(
            !connection.contains("x-private-hop"),
            "{which}: Connection {connection:?}"
        );
        assert_eq!(
            response.header("x-end-to-end").as_deref(),
            Some("kept"),
            "{which}"
        );
        let response_via = response.header("via").unwrap_or_default();
        assert!(
            response_via.contains(&via),
            "{which}: response Via {response_via:?} lacks {via:?}"
        );
    }

    let upstream = origin.last_request("/hop").unwrap();
    assert_eq!(upstream.header("x-client-hop"), None, "{upstream:?}");
    let connection = upstream.header("connection").unwrap_or_default();
    assert!(!connection.contains("x-client-hop"), "{upstream:?}");
    let request_via = upstream.header("via").unwrap_or_default();
    assert!(
        request_via.contains(&via),
        "request Via {request_via:?} lacks {via:?}"
    );
    assert!(upstream.header("x-forwarded-for").is_some(), "{upstream:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn via_from_the_client_is_kept_and_extended() {
    let reply = Reply::ok("v").header("via", "1.1 origin-proxy");
    let (origin, edge) = edge_serving("/via", reply, &[]).await;
    let response = HttpClient::http1()
        .request("GET", &edge.url("/via"), &[("via", "1.0 client-proxy")], "")
        .await;

    let upstream = origin.last_request("/via").unwrap();
    let request_via = upstream.header("via").unwrap();
    assert!(request_via.contains("1.0 client-proxy"), "{request_via}");
    assert!(request_via.contains(EDGE_ID), "{request_via}");
    let response_via = response.header("via").unwrap();
    assert!(response_via.contains("1.1 origin-proxy"), "{response_via}");
    assert!(response_via.contains(EDGE_ID), "{response_via}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_is_passed_through_with_its_body_and_not_cached() {
    let reply = Reply::ok("created")
        .with_status(201)
        .cache_control("max-age=60");
    let (origin, edge) = edge_serving("/form", reply, &[]).await;
    let client = HttpClient::http1();

    for n in 1..=2 {
        let body = format!("field=value&n={n}");
        let response = client
            .request(
                "POST",
                &edge.url("/form?x=1"),
                &[("content-type", "application/x-www-form-urlencoded")],
                body.clone(),
            )
            .await;
        assert_eq!(response.status, 201);
        assert_eq!(response.text(), "created");
        let status = response.cache_status();
        assert!(status.contains("fwd=bypass"), "{status}");
        assert!(!status.contains("stored"), "{status}");

        let upstream = origin.last_request("/form").unwrap();
        assert_eq!(upstream.method, http::Method::POST);
        assert_eq!(upstream.path_and_query, "/form?x=1");
        assert_eq!(
            upstream.body,
            body.as_bytes(),
            "the origin got the client's body"
        );
        assert_eq!(
            upstream.header("content-type").as_deref(),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(origin.hits("/form"), n, "POST {n} reaches the origin");
    }

    // The POST's response was not stored for GETs either.
    let get = client.get(&edge.url("/form?x=1")).await;
    get.assert_cache_status_has("fwd=uri-miss", "");
    assert_eq!(origin.hits("/form"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_already_passed_this_node_is_refused_with_508() {
    let reply = Reply::ok("never").cache_control("max-age=60");
    let (origin, edge) = edge_serving("/loop", reply, &[]).await;
    let client = HttpClient::http1();

    let looped = client
        .get_with(
            &edge.url("/loop"),
            &[(
                "via",
                &format!("1.1 shield-a, 1.1 {}", support::edge::EDGE_ID),
            )],
        )
        .await;
    assert_eq!(looped.status, 508, "{}", looped.text());
    looped.assert_cache_status_has("detail=loop-detected", "");
    assert_eq!(
        origin.hits("/loop"),
        0,
        "a looping request is never forwarded"
    );

    // Another node's id in Via is an ordinary hop.
    let passed = client
        .get_with(&edge.url("/loop"), &[("via", "1.1 edge-test-other")])
        .await;
    assert_eq!(passed.status, 200, "{}", passed.text());
}
