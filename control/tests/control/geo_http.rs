//! HTTP steering over real sockets: redirects from clients bound in the region blocks, the
//! JSON explanation, and agreement with DNS.

use crate::geo_support;

use std::time::Duration;

use geo_support::{
    geo, get, http_request, ip, one_edge_per_region, start_geo_control, three_regions, wait_until,
    DnsClient,
};
use hickory_proto::rr::RecordType;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_redirected_to_the_same_edge_dns_answers_with() {
    let control = start_geo_control(&geo()).await;
    // One edge per region, so DNS and HTTP have exactly one choice each.
    let _health = one_edge_per_region(&control).await;
    for from in ["127.1.3.3", "127.2.3.3", "127.3.3.3"] {
        let reply = get(
            from,
            control.steering_addr,
            "one.verge.test",
            "/img/a.png?w=10&h=2",
        )
        .await;
        assert_eq!(reply.status, 302, "{}", reply.body);
        let location = reply.header("location").unwrap().to_string();
        assert_eq!(reply.header("cache-control"), Some("no-store"));
        let dns = DnsClient::bind(from, control.dns_addr).await;
        let answer = dns.addresses("one.verge.test.", RecordType::A).await;
        assert_eq!(
            location,
            format!("http://{}:8080/img/a.png?w=10&h=2", answer[0]),
            "from {from}"
        );
    }
    // The port of the Host header and the case of the name do not matter; a POST is 307.
    let reply = get(
        "127.2.0.9",
        control.steering_addr,
        "ONE.verge.test:7072",
        "/",
    )
    .await;
    assert_eq!(reply.header("location"), Some("http://127.2.0.1:8080/"));
    let post = http_request(
        Some(ip("127.3.0.9")),
        control.steering_addr,
        "POST /upload HTTP/1.1\r\nhost: one.verge.test\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(post.status, 307);
    assert_eq!(
        post.header("location"),
        Some("http://127.3.0.1:8080/upload")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_host_is_not_found_with_a_message() {
    let control = start_geo_control(&geo()).await;
    let reply = get("127.1.0.9", control.steering_addr, "www.example.com", "/").await;
    assert_eq!(reply.status, 404);
    assert!(
        reply.body.contains("not a steered host name"),
        "{}",
        reply.body
    );
    assert!(reply.body.contains("cdn.verge.test"), "{}", reply.body);
    // A steered name without any edge: nothing to redirect to.
    let empty = get("127.1.0.9", control.steering_addr, "cdn.verge.test", "/").await;
    assert_eq!(empty.status, 503, "{}", empty.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_endpoint_explains_the_decision() {
    let mut setup = three_regions().await;
    let addr = setup.control.steering_addr;
    let reply = get("127.0.0.1", addr, "steer", "/v1/route?ip=127.3.4.5").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let json: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(json["name"], "cdn.verge.test");
    assert_eq!(json["region"], "ap");
    assert_eq!(json["source"], "cidr");
    assert_eq!(json["step"], "local");
    assert_eq!(json["edges"].as_array().unwrap().len(), 2);
    assert_eq!(json["edges"][0]["region"], "ap");

    setup.kill("eu").await;
    let control = &setup.control;
    wait_until("eu edges down", Duration::from_secs(5), || async {
        control.edge_is("eu-1", false).await && control.edge_is("eu-2", false).await
    })
    .await;
    let reply = get(
        "127.0.0.1",
        addr,
        "steer",
        "/v1/route?ip=127.2.0.1&host=one.verge.test",
    )
    .await;
    let json: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(json["name"], "one.verge.test");
    assert_eq!(
        (&json["region"], &json["answer_region"]),
        (&"eu".into(), &"us".into())
    );
    assert_eq!(json["step"], "failover");
    assert_eq!(json["steps"][0]["action"], "skip");
    assert_eq!(json["steps"][0]["why"], "no healthy edges");
    assert_eq!(json["edges"].as_array().unwrap().len(), 1);

    // A client no block places goes to the default region, and says so.
    let reply = get("127.0.0.1", addr, "steer", "/v1/route?ip=192.0.2.7").await;
    let json: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(
        (&json["region"], &json["source"]),
        (&"us".into(), &"default".into())
    );
    assert!(control.metric("verge_geo_default_region_total").await >= 1.0);

    for (query, status) in [
        ("/v1/route?ip=not-an-ip", 400),
        ("/v1/route", 400),
        ("/v1/route?ip=127.0.0.1&who=me", 400),
        ("/v1/route?ip=127.0.0.1&host=nope.example", 404),
    ] {
        let reply = get("127.0.0.1", addr, "steer", query).await;
        assert_eq!(reply.status, status, "{query}: {}", reply.body);
        assert!(reply.body.contains("error"), "{query}: {}", reply.body);
    }
}
