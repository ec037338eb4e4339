//! Origin shields: front edges send each miss to the shield that owns its cache key on the ring,
//! fail over to the next shields in ring order, eject a failing shield and probe it back, fall
//! back to the origin (or answer 503 `no-shield`) when no shield can answer, never replay a
//! request with a body, and chain `Cache-Status` entries shield first.
//!
//! A shield here is another edge whose `upstream.origin` is the [`FakeOrigin`]; every node adds
//! `Via: 1.1 <edge.id>` upstream, so the origin tells which shield fetched each object (see
//! `support::tier`).

use verge_testkit as support;
use verge_testkit::DeadAddr;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use support::cdn::start_shield_node;
use support::scenario::{origin_answering, slow};
use support::tier::{
    cacheable_origin, fetched_by, get_site, last_fetcher, path_only, shield_up, start_front,
    start_shield, via_chain, Placement, SHIELD_REQUESTS, SHIELD_UP, SITE,
};
use support::{start_edge, wait_until, FakeOrigin, HttpClient, RecordedRequest, Reply, TestEdge};
use verge_cache::CacheKey;
use verge_cache::ManualClock;

/// Bound on waiting for a node to drain and stop.
const STOP_LIMIT: Duration = Duration::from_secs(10);

/// Bound on conditions that depend on timers in the product (ejection expiry, probes).
const CONDITION_LIMIT: Duration = Duration::from_secs(10);

/// `count` distinct paths with queries, numbered from `from`.
fn paths(from: usize, count: usize) -> Vec<String> {
    (from..from + count)
        .map(|i| format!("/obj/{i}?v={i}"))
        .collect()
}

/// An origin (or fake shield) answering 503 to everything.
async fn failing_origin() -> FakeOrigin {
    origin_answering("/", Reply::ok("overloaded").with_status(503)).await
}

/// Whether one `Cache-Status` entry has exactly this parameter.
fn entry_has(entry: &str, param: &str) -> bool {
    entry.split(';').skip(1).any(|p| p.trim() == param)
}

/// Requests to shield `id` that did not succeed, by the front edge's metrics.
async fn shield_failures(front: &TestEdge, id: &str) -> f64 {
    let metrics = front.metrics().await;
    metrics.value_or_zero(SHIELD_REQUESTS, &[("shield", id)])
        - metrics.value_or_zero(SHIELD_REQUESTS, &[("shield", id), ("result", "ok")])
}

/// Shields `s1` and `s2` in front of `origin`.
async fn start_s1_and_s2(origin: &FakeOrigin) -> (TestEdge, TestEdge) {
    (
        start_shield(origin, "s1").await,
        start_shield(origin, "s2").await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_object_is_fetched_once_for_the_whole_cdn() {
    let origin = cacheable_origin().await;
    let (s1, s2) = start_s1_and_s2(&origin).await;
    let shields = [("s1", s1.data_addr, 1), ("s2", s2.data_addr, 1)];
    let a = start_front(origin.addr(), "a", &shields, &[]).await;
    let b = start_front(origin.addr(), "b", &shields, &[]).await;
    let client = HttpClient::http1();
    let urls = paths(0, 40);

    for path in &urls {
        let response = get_site(&client, &a, path).await;
        assert_eq!(response.status, 200, "A {path}: {}", response.text());
    }
    for path in &urls {
        let response = get_site(&client, &b, path).await;
        assert_eq!(response.status, 200, "B {path}: {}", response.text());
        let entries = response.cache_status_entries();
        assert_eq!(entries.len(), 2, "B {path}: {entries:?}");
        assert!(
            entry_has(&entries[0], "hit"),
            "B {path} was not a shield hit: {entries:?}"
        );
    }

    for path in &urls {
        let seen = origin.requests_for(path_only(path));
        assert_eq!(
            seen.len(),
            1,
            "{path} reached the origin {} times, via {:?}",
            seen.len(),
            seen.iter().map(via_chain).collect::<Vec<_>>()
        );
        assert_eq!(
            via_chain(&seen[0])[0],
            "a",
            "{path}: {:?}",
            via_chain(&seen[0])
        );
    }
    assert_eq!(origin.total_hits(), urls.len());
    let b_metrics = b.metrics().await;
    b_metrics.assert_value(SHIELD_REQUESTS, &[("result", "ok")], urls.len() as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misses_go_to_the_shield_that_owns_the_key() {
    let origin = cacheable_origin().await;
    let (s1, s2) = start_s1_and_s2(&origin).await;
    let shields = [("s1", s1.data_addr, 1), ("s2", s2.data_addr, 2)];
    let front = start_front(origin.addr(), "front", &shields, &[]).await;
    let placement = Placement::new(&[("s1", 1), ("s2", 2)]);
    let client = HttpClient::http1();

    let mut owned = [0usize; 2];
    for path in paths(0, 40) {
        let url = front.url(&path);
        // The key text the front edge computes: the request's authority, path and query.
        let key = CacheKey::for_request("http", &url.parse().unwrap(), &HeaderMap::new())
            .unwrap()
            .as_str()
            .to_string();
        let owner = placement.owner(&key);
        owned[usize::from(owner == "s2")] += 1;

        let response = client.get(&url).await;
        assert_eq!(response.status, 200, "{path}: {}", response.text());
        let seen = origin.requests_for(path_only(&path));
        assert_eq!(seen.len(), 1, "{path}");
        assert_eq!(
            via_chain(&seen[0]),
            ["front", owner],
            "{path} (key {key}) was not fetched by its owner {owner}"
        );
    }
    assert!(
        owned[0] > 0 && owned[1] > 0,
        "both shields should own some of the keys: {owned:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_shields_keys_fail_over_to_the_next_shield_and_only_its_keys_move() {
    let origin = cacheable_origin().await;
    let (mut s1, s2) = start_s1_and_s2(&origin).await;
    let shields = [("s1", s1.data_addr, 1), ("s2", s2.data_addr, 1)];
    let health = [
        "shields.failures_to_eject = 2",
        "shields.eject_for = \"60s\"",
    ];
    let a = start_front(origin.addr(), "a", &shields, &health).await;
    // A cold front edge: its misses show where the shields send each key.
    let b = start_front(origin.addr(), "b", &shields, &health).await;
    let placement = Placement::new(&[("s1", 1), ("s2", 1)]);
    let client = HttpClient::http1();

    let urls = paths(0, 40);
    let (s1_keys, s2_keys): (Vec<&String>, Vec<&String>) = urls
        .iter()
        .partition(|path| placement.owner_of(SITE, path) == "s1");
    assert!(
        s1_keys.len() > 2 && !s2_keys.is_empty(),
        "s1 owns {} keys, s2 {}",
        s1_keys.len(),
        s2_keys.len()
    );
    for path in &urls {
        let response = get_site(&client, &a, path).await;
        assert_eq!(response.status, 200, "warming {path}: {}", response.text());
        assert_eq!(last_fetcher(&origin, path), placement.owner_of(SITE, path));
    }

    s1.begin_shutdown();
    s1.stopped(STOP_LIMIT).await;
    let before = origin.total_hits();

    for (n, path) in s1_keys.iter().enumerate() {
        let response = get_site(&client, &b, path).await;
        assert_eq!(response.status, 200, "{path}: {}", response.text());
        assert_eq!(origin.hits(path_only(path)), 2, "{path}");
        assert_eq!(last_fetcher(&origin, path), "s2", "{path}");
        if n == 1 {
            // failures_to_eject (2) requests have failed on s1: it is out of the ring.
            assert_eq!(shield_up(&b, "s1").await, Some(0.0));
            assert_eq!(shield_failures(&b, "s1").await, 2.0);
        }
    }
    assert_eq!(
        shield_failures(&b, "s1").await,
        2.0,
        "requests after the ejection still tried s1"
    );
    assert_eq!(shield_up(&b, "s1").await, Some(0.0));
    assert_eq!(shield_up(&b, "s2").await, Some(1.0));
    let metrics = b.metrics().await;
    assert_eq!(
        metrics.value("verge_shield_ejections_total", &[("shield", "s1")]),
        Some(1.0),
        "s1 was ejected once"
    );
    assert_eq!(metrics.value("verge_shield_ring_members", &[]), Some(2.0));
    assert!(
        metrics.has("verge_shield_duration_seconds_count"),
        "{}",
        metrics.text()
    );

    for path in &s2_keys {
        let response = get_site(&client, &b, path).await;
        assert_eq!(response.status, 200, "{path}: {}", response.text());
        let entries = response.cache_status_entries();
        assert!(
            entry_has(&entries[0], "hit"),
            "{path} should be a hit in s2's cache: {entries:?}"
        );
        assert_eq!(origin.hits(path_only(path)), 1, "{path} moved off s2");
    }

    let moved: Vec<RecordedRequest> = origin.requests()[before..].to_vec();
    assert!(
        moved.iter().all(|r| fetched_by(r) == "s2"),
        "{:?}",
        moved.iter().map(via_chain).collect::<Vec<_>>()
    );
    let moved_paths: BTreeSet<String> = moved.iter().map(|r| r.path_and_query.clone()).collect();
    let expected: BTreeSet<String> = s1_keys.iter().map(|p| p.to_string()).collect();
    assert_eq!(moved.len(), s1_keys.len(), "each of s1's keys fetched once");
    assert_eq!(moved_paths, expected, "only s1's keys moved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ejected_shield_is_probed_and_taken_back() {
    let origin = cacheable_origin().await;
    let (mut s1, s2) = start_s1_and_s2(&origin).await;
    let s1_addr = s1.data_addr;
    let shields = [("s1", s1_addr, 1), ("s2", s2.data_addr, 1)];
    let health = [
        "shields.failures_to_eject = 2",
        "shields.eject_for = \"300ms\"",
    ];
    let front = start_front(origin.addr(), "front", &shields, &health).await;
    let placement = Placement::new(&[("s1", 1), ("s2", 1)]);
    let client = HttpClient::http1();

    // s1's keys, each requested once so that every request is a miss at the front edge.
    let next = AtomicUsize::new(0);
    let next_s1_key = || loop {
        let path = format!("/obj/{}", next.fetch_add(1, Ordering::SeqCst));
        if placement.owner_of(SITE, &path) == "s1" {
            return path;
        }
    };

    let path = next_s1_key();
    let response = get_site(&client, &front, &path).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(last_fetcher(&origin, &path), "s1");

    s1.begin_shutdown();
    s1.stopped(STOP_LIMIT).await;
    for _ in 0..2 {
        let path = next_s1_key();
        let response = get_site(&client, &front, &path).await;
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(last_fetcher(&origin, &path), "s2");
    }
    assert_eq!(shield_up(&front, "s1").await, Some(0.0));

    let listen = format!("server.listen = \"{s1_addr}\"");
    let _new_s1 = start_edge(origin.addr(), &["edge.id = \"s1\"", &listen]).await;

    let (client, front, origin) = (&client, &front, &origin);
    let next_s1_key = &next_s1_key;
    wait_until(
        "a miss for one of s1's keys to be fetched through the new s1, and s1 to be up",
        CONDITION_LIMIT,
        || async move {
            let path = next_s1_key();
            let response = get_site(client, front, &path).await;
            assert_eq!(response.status, 200, "{path}: {}", response.text());
            last_fetcher(origin, &path) == "s1" && shield_up(front, "s1").await == Some(1.0)
        },
    )
    .await;

    // Back in the ring, s1 owns its keys again.
    let path = next_s1_key();
    let response = get_site(client, front, &path).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(last_fetcher(origin, &path), "s1");
}

/// A front edge whose two shields, s1 and s2, refuse connections (held for as long as the
/// returned addresses live); two failures eject a shield for a minute.
async fn front_with_dead_shields(
    origin: &FakeOrigin,
    tweaks: &[&str],
) -> (TestEdge, [DeadAddr; 2]) {
    let dead = [DeadAddr::new(), DeadAddr::new()];
    let shields = [("s1", dead[0].addr, 1), ("s2", dead[1].addr, 1)];
    let mut all = vec![
        "shields.failures_to_eject = 2",
        "shields.eject_for = \"60s\"",
    ];
    all.extend_from_slice(tweaks);
    (
        start_front(origin.addr(), "front", &shields, &all).await,
        dead,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_shield_down_misses_fall_back_to_the_origin() {
    let origin = cacheable_origin().await;
    let (front, _dead) = front_with_dead_shields(&origin, &[]).await;
    let client = HttpClient::http1();

    // The first requests find both shields refusing; the later ones find them ejected.
    for path in paths(0, 4) {
        let response = get_site(&client, &front, &path).await;
        assert_eq!(response.status, 200, "{path}: {}", response.text());
        assert_eq!(response.text(), "object");
        let entries = response.cache_status_entries();
        assert_eq!(entries.len(), 1, "{path}: no shield answered: {entries:?}");
        let seen = origin.requests_for(path_only(&path));
        assert_eq!(seen.len(), 1, "{path}");
        assert_eq!(via_chain(&seen[0]), ["front"], "{path}");
    }
    let metrics = front.metrics().await;
    for id in ["s1", "s2"] {
        metrics.assert_value(SHIELD_UP, &[("shield", id)], 0.0);
        metrics.assert_value(
            SHIELD_REQUESTS,
            &[("shield", id), ("result", "connect_error")],
            2.0,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_origin_fallback_every_shield_down_is_503_no_shield() {
    let origin = cacheable_origin().await;
    let (front, _dead) =
        front_with_dead_shields(&origin, &["shields.origin_fallback = false"]).await;
    let client = HttpClient::http1();

    // The first two requests find both shields refusing connections (and so eject them); the
    // last two find no shield in the ring. Every one is a 503 `no-shield`.
    let mut answers = Vec::new();
    for path in paths(0, 4) {
        let response = get_site(&client, &front, &path).await;
        answers.push((path, response.status.as_u16(), response.cache_status()));
    }
    assert!(
        answers
            .iter()
            .all(|(_, status, cache_status)| *status == 503
                && cache_status.contains("detail=no-shield")),
        "every answer should be 503 with detail=no-shield: {answers:#?}"
    );
    assert_eq!(origin.total_hits(), 0, "the origin must not be asked");
}

/// A fake shield that fails the way a Verge shield does when its origin gives no answer: a 503
/// it generated itself, saying so in its `Cache-Status` entry.
async fn shield_without_an_answer() -> FakeOrigin {
    let shield = FakeOrigin::start().await;
    shield.on_prefix(
        "/",
        Reply::ok("no answer from the origin")
            .with_status(503)
            .header(
                "cache-status",
                "verge-shield; fwd=miss; detail=upstream-timeout",
            ),
    );
    shield
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shield_generating_an_error_is_failed_over_for_get() {
    let origin = cacheable_origin().await;
    let bad = shield_without_an_answer().await;
    let good = start_shield(&origin, "s2").await;
    let shields = [("s1", bad.addr(), 1), ("s2", good.data_addr, 1)];
    let front = start_front(origin.addr(), "front", &shields, &[]).await;
    let placement = Placement::new(&[("s1", 1), ("s2", 1)]);
    let client = HttpClient::http1();

    let bad_keys: Vec<String> = paths(0, 40)
        .into_iter()
        .filter(|path| placement.owner_of(SITE, path) == "s1")
        .collect();
    assert!(!bad_keys.is_empty());

    for path in &bad_keys {
        let response = get_site(&client, &front, path).await;
        assert_eq!(response.status, 200, "{path}: {}", response.text());
        assert_eq!(response.text(), "object", "{path}");
        assert_eq!(last_fetcher(&origin, path), "s2", "{path}");
    }
    assert!(bad.total_hits() >= 1, "the failing shield was never asked");
    assert!(
        bad.requests().iter().all(|r| r.method == http::Method::GET),
        "{:?}",
        bad.requests()
    );
    let metrics = front.metrics().await;
    let generated = metrics.value_or_zero(
        SHIELD_REQUESTS,
        &[("shield", "s1"), ("result", "generated_error")],
    );
    assert_eq!(
        generated,
        bad.total_hits() as f64,
        "every generated 503 counts as the shield failing: {}",
        metrics.text()
    );
}

/// The origin answers 503 (maintenance) behind two healthy shields: each client request costs
/// the origin one request, the shields relay the answer and stay in the ring, and
/// `Cache-Status` shows both tiers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_503_behind_two_shields_costs_one_origin_request_and_ejects_nobody() {
    let origin = failing_origin().await;
    let clock = Arc::new(ManualClock::new());
    let s1 = start_shield_node(origin.addr(), &["shield.id = \"s1\""], clock.clone()).await;
    let s2 = start_shield_node(origin.addr(), &["shield.id = \"s2\""], clock.clone()).await;
    let shields = [("s1", s1.data_addr, 1), ("s2", s2.data_addr, 1)];
    // Low enough that the old behaviour would have ejected both within five requests.
    let front = start_front(
        origin.addr(),
        "front",
        &shields,
        &["shields.failures_to_eject = 1"],
    )
    .await;
    let client = HttpClient::http1();

    let requests = 5;
    for i in 0..requests {
        let path = format!("/down/{i}");
        let response = get_site(&client, &front, &path).await;
        assert_eq!(response.status, 503, "{path}: {}", response.text());
        assert_eq!(response.text(), "overloaded", "the origin's own answer");
        let entries = response.cache_status_entries();
        assert_eq!(entries.len(), 2, "{path}: {entries:?}");
        assert!(
            entries[0].starts_with("verge-shield;") && entry_has(&entries[0], "fwd-status=503"),
            "{path}: {entries:?}"
        );
        assert!(
            entries[1].starts_with("verge-edge;") && entry_has(&entries[1], "fwd-status=503"),
            "{path}: {entries:?}"
        );
        assert_eq!(
            origin.requests_for(&path).len(),
            1,
            "{path}: one origin request per client request"
        );
    }
    assert_eq!(origin.total_hits(), requests);
    let metrics = front.metrics().await;
    for id in ["s1", "s2"] {
        assert_eq!(
            metrics.value(SHIELD_UP, &[("shield", id)]),
            Some(1.0),
            "{id}"
        );
        assert_eq!(
            metrics.value_or_zero("verge_shield_ejections_total", &[("shield", id)]),
            0.0,
            "{id}"
        );
    }
    let relayed: f64 = ["s1", "s2"]
        .iter()
        .map(|id| {
            metrics.value_or_zero(
                SHIELD_REQUESTS,
                &[("shield", id), ("result", "error_status")],
            )
        })
        .sum();
    assert_eq!(relayed, requests as f64, "{}", metrics.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_is_sent_to_one_shield_only() {
    let origin = cacheable_origin().await;
    let owner = failing_origin().await;
    let other = cacheable_origin().await;
    let shields = [("s1", owner.addr(), 1), ("s2", other.addr(), 1)];
    let front = start_front(origin.addr(), "front", &shields, &[]).await;
    let placement = Placement::new(&[("s1", 1), ("s2", 1)]);

    let path = paths(0, 40)
        .into_iter()
        .find(|path| placement.owner_of(SITE, path) == "s1")
        .unwrap();
    let response = HttpClient::http1()
        .request(
            "POST",
            &front.url(&path),
            &[("host", SITE), ("content-type", "text/plain")],
            "payload",
        )
        .await;

    assert_eq!(response.status, 503, "{}", response.text());
    let received = owner.requests();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0].method, http::Method::POST);
    assert_eq!(&received[0].body[..], b"payload");
    assert_eq!(other.total_hits(), 0, "the POST was replayed on s2");
    assert_eq!(
        origin.total_hits(),
        0,
        "the POST was replayed on the origin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_status_lists_the_shield_entry_then_the_edge_entry() {
    let origin = FakeOrigin::start().await;
    // The shield obeys (and removes) Surrogate-Control; the front edge sees only
    // Cache-Control. Their entries differ by ttl, which tells them apart.
    origin.on(
        "/page",
        Reply::ok("page")
            .cache_control("max-age=60")
            .header("surrogate-control", "max-age=600"),
    );
    let shield = start_shield(&origin, "s1").await;
    let shields = [("s1", shield.data_addr, 1)];
    let a = start_front(origin.addr(), "a", &shields, &[]).await;
    let b = start_front(origin.addr(), "b", &shields, &[]).await;
    let client = HttpClient::http1();

    let first = get_site(&client, &a, "/page").await;
    assert_eq!(first.status, 200, "{}", first.text());
    let entries = first.cache_status_entries();
    assert_eq!(entries.len(), 2, "{entries:?}");
    for entry in &entries {
        assert!(entry.starts_with("verge-edge;"), "{entries:?}");
        assert!(entry_has(entry, "fwd=uri-miss"), "{entries:?}");
        assert!(entry_has(entry, "stored"), "{entries:?}");
    }
    assert!(
        entry_has(&entries[0], "ttl=600"),
        "shield first: {entries:?}"
    );
    assert!(entry_has(&entries[1], "ttl=60"), "edge second: {entries:?}");

    // Through another front edge: the shield's hit, then this edge's miss.
    let second = get_site(&client, &b, "/page").await;
    let entries = second.cache_status_entries();
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert!(entry_has(&entries[0], "hit"), "{entries:?}");
    assert!(entry_has(&entries[1], "fwd=uri-miss"), "{entries:?}");

    // From the front edge's cache: the shield's entry as stored, then this edge's hit.
    let third = get_site(&client, &a, "/page").await;
    let entries = third.cache_status_entries();
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert!(entry_has(&entries[0], "fwd=uri-miss"), "{entries:?}");
    assert!(entry_has(&entries[1], "hit"), "{entries:?}");
    assert_eq!(origin.hits("/page"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_load_spills_a_hot_shields_extra_requests_to_the_next() {
    let origin = origin_answering("/", slow("slow object", "max-age=60", 300)).await;
    let (s1, s2) = start_s1_and_s2(&origin).await;
    let shields = [("s1", s1.data_addr, 1), ("s2", s2.data_addr, 1)];
    let placement = Placement::new(&[("s1", 1), ("s2", 1)]);
    // Ten objects that all belong to s1, requested at once.
    let hot: Vec<String> = paths(0, 400)
        .into_iter()
        .filter(|p| placement.owner_of(SITE, p) == "s1")
        .take(10)
        .collect();
    assert_eq!(hot.len(), 10);

    let run = |tweaks: Vec<String>| {
        let (origin, hot) = (origin.addr(), hot.clone());
        async move {
            let tweaks: Vec<&str> = tweaks.iter().map(String::as_str).collect();
            let front = start_front(origin, "front", &shields, &tweaks).await;
            let client = HttpClient::http1();
            let mut requests = Vec::new();
            for path in &hot {
                let (client, url) = (client.clone(), front.url(path));
                requests.push(tokio::spawn(async move {
                    client.request("GET", &url, &[("host", SITE)], "").await
                }));
            }
            for request in requests {
                assert_eq!(request.await.unwrap().status, 200);
            }
            front
        }
    };

    // Bounded load with ε = 25%: s1 may hold at most ceil(1.25 × (in flight + 1) / 2).
    let front = run(vec!["shields.bounded_load_percent = 25".to_string()]).await;
    let by_s2 = hot
        .iter()
        .filter(|p| fetched_by(&origin.last_request(path_only(p)).unwrap()) == "s2")
        .count();
    assert!(
        (3..10).contains(&by_s2),
        "some of s1's concurrent misses spill to s2, not all: {by_s2} of 10"
    );
    let metrics = front.metrics().await;
    metrics.assert_value("verge_shield_spills_total", &[], by_s2 as f64);
}
