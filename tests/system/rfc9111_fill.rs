//! What a fill sends upstream: the client's request for the whole representation, with none of
//! the client's framing for content the fill does not forward.

use verge_testkit as support;

use support::{start_origin_and_cdn, HttpClient, Reply, Topology};

async fn a_get_with_a_request_body_is_filled_and_stored(topology: Topology) {
    let (origin, edge) = start_origin_and_cdn(topology, &[]).await;
    origin.on(
        "/g",
        Reply::ok("representation").cache_control("max-age=60"),
    );
    let client = HttpClient::http1();

    // GET content has no defined semantics (RFC 9110 §9.3.1); a fill sends none, so it must not
    // announce any either.
    let first = client.request("GET", &edge.url("/g"), &[], "payload").await;
    assert_eq!(
        first.status,
        200,
        "{} / {}",
        first.cache_status(),
        first.text()
    );
    assert_eq!(first.text(), "representation");
    let sent = origin.last_request("/g").unwrap();
    assert!(
        sent.header("content-length").is_none_or(|n| n == "0"),
        "the fill sent no body but announced Content-Length: {:?}",
        sent.header("content-length")
    );
    let second = client.get(&edge.url("/g")).await;
    second.assert_cache_status_has("hit", "");
}

support::in_both_topologies!(a_get_with_a_request_body_is_filled_and_stored,);
