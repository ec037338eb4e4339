//! RFC 9111 §4.2 freshness at the edge: which lifetime wins (`s-maxage` > `max-age` >
//! `Expires` − `Date`), invalid and conflicting values, heuristic freshness, and the `Age` the
//! edge computes and sends. Time is the edge's manual clock; the origin's `Date` follows it.

use verge_testkit as support;

use std::time::{Duration, SystemTime};

use support::scenario::last_sent;
use support::{
    http_date, start_origin_and_cdn, FakeOrigin, Reply, TestCdn, TestResponse, Topology,
};

/// Asserts that `response` was served from cache (`Cache-Status` has `hit`).
fn assert_hit(response: &TestResponse, why: &str) {
    response.assert_cache_status_has("hit", why);
}

/// `seconds` as a [`Duration`].
fn secs(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}

/// Starts the CDN in `topology` in front of an origin answering `path` with what `reply` makes
/// of the CDN clock's time, and GETs `path` once: the origin, the CDN and that first response.
async fn first_fetch(
    topology: Topology,
    path: &str,
    reply: impl FnOnce(SystemTime) -> Reply,
) -> (FakeOrigin, TestCdn, TestResponse) {
    let (origin, edge) = start_origin_and_cdn(topology, &[]).await;
    origin.on(path, reply(edge.now()));
    let first = edge.get(path).await;
    (origin, edge, first)
}

/// Moves the clock to `fresh_at` seconds after the first fetch, where `path` must be a hit, then
/// to `stale_at`, where it must go to the origin again.
async fn assert_fresh_then_stale(
    (origin, edge): (&FakeOrigin, &TestCdn),
    path: &str,
    (fresh_at, why_fresh): (u64, &str),
    (stale_at, why_stale): (u64, &str),
) {
    edge.advance(fresh_at);
    assert_hit(&edge.get(path).await, why_fresh);
    edge.advance(stale_at - fresh_at);
    edge.get(path).await;
    assert_eq!(origin.hits(path), 2, "{why_stale}");
}

async fn s_maxage_wins_over_max_age_and_expires(topology: Topology) {
    let (origin, edge, miss) = first_fetch(topology, "/s", |now| {
        Reply::ok("s")
            .cache_control("max-age=10, s-maxage=100")
            .header("date", &http_date(now))
            .header("expires", &http_date(now + secs(1000)))
    })
    .await;
    miss.assert_cache_status_has("ttl=100", "");
    assert_fresh_then_stale(
        (&origin, &edge),
        "/s",
        (
            50,
            "fresh at 50s by s-maxage=100 although max-age=10 has run out",
        ),
        (
            105,
            "stale at 105s: s-maxage=100 wins over an Expires 1000s ahead",
        ),
    )
    .await;
}

async fn max_age_wins_over_expires(topology: Topology) {
    let (origin, edge, miss) = first_fetch(topology, "/m", |now| {
        Reply::ok("m")
            .cache_control("max-age=100")
            .header("date", &http_date(now))
            .header("expires", &http_date(now + secs(10)))
    })
    .await;
    miss.assert_cache_status_has("ttl=100", "");
    edge.advance(50);
    assert_hit(
        &edge.get("/m").await,
        "fresh at 50s by max-age=100 although Expires passed at 10s",
    );
    assert_eq!(origin.hits("/m"), 1);
}

async fn expires_minus_date_is_the_lifetime_not_expires_minus_now(topology: Topology) {
    // Generated 30s ago, valid for 100s from then: 70s of freshness left.
    let (origin, edge, miss) = first_fetch(topology, "/e", |now| {
        Reply::ok("e")
            .header("date", &http_date(now - secs(30)))
            .header("expires", &http_date(now + secs(70)))
    })
    .await;
    miss.assert_cache_status_has("ttl=70", "lifetime 100 (Expires - Date) minus age 30");
    assert_fresh_then_stale(
        (&origin, &edge),
        "/e",
        (60, "fresh at age 90 of 100"),
        (75, "stale at age 105 of 100"),
    )
    .await;
}

async fn invalid_expires_means_already_expired(topology: Topology) {
    // Without the invalid Expires, Last-Modified would give 100s of heuristic freshness.
    let (origin, edge, first) = first_fetch(topology, "/bad-expires", |now| {
        Reply::ok("x")
            .header("last-modified", &http_date(now - secs(1000)))
            .header("expires", "0")
    })
    .await;
    assert_eq!(first.status, 200);
    first.assert_cache_status_lacks(
        "ttl=100",
        "an invalid Expires is explicit (expired) freshness, not absent",
    );
    edge.get("/bad-expires").await;
    assert_eq!(
        origin.hits("/bad-expires"),
        2,
        "a response with an invalid Expires is stale at once"
    );
}

async fn conflicting_duplicate_max_age_makes_the_response_stale(topology: Topology) {
    let (origin, edge, first) = first_fetch(topology, "/dup", |_| {
        Reply::ok("d")
            .cache_control("max-age=60")
            .cache_control("max-age=120")
            .header("etag", "\"d1\"")
    })
    .await;
    first.assert_cache_status_has("ttl=0", "two different max-age values: lifetime 0,");
    let second = edge.get("/dup").await;
    assert_eq!(second.text(), "d");
    assert_eq!(origin.hits("/dup"), 2, "stale at once: revalidated");
    assert_eq!(
        last_sent(&origin, "/dup", "if-none-match").as_deref(),
        Some("\"d1\"")
    );
}

async fn heuristic_freshness_is_a_tenth_of_date_minus_last_modified(topology: Topology) {
    let (origin, edge, miss) = first_fetch(topology, "/h", |now| {
        Reply::ok("h")
            .header("date", &http_date(now))
            .header("last-modified", &http_date(now - secs(1000)))
    })
    .await;
    miss.assert_cache_status_has_all(&["stored", "ttl=100"], "10% of 1000s");
    assert_fresh_then_stale(
        (&origin, &edge),
        "/h",
        (90, "fresh at 90s of 100s"),
        (105, "stale at 105s of 100s"),
    )
    .await;
}

async fn heuristic_freshness_is_capped_at_one_day(topology: Topology) {
    let (origin, edge, miss) = first_fetch(topology, "/old", |now| {
        Reply::ok("old")
            .header("date", &http_date(now))
            .header("last-modified", &http_date(now - secs(100 * 86_400)))
    })
    .await;
    miss.assert_cache_status_has("ttl=86400", "10% of 100 days is capped at one day");
    assert_fresh_then_stale(
        (&origin, &edge),
        "/old",
        (86_400 - 100, "fresh within the day"),
        (86_400 + 100, "stale after one day"),
    )
    .await;
}

async fn heuristic_freshness_applies_to_heuristically_cacheable_statuses_only(topology: Topology) {
    let (origin, edge) = start_origin_and_cdn(topology, &[]).await;
    let modified = http_date(edge.now() - secs(1000));
    let redirect = |body: &'static str, status: u16| {
        Reply::ok(body)
            .with_status(status)
            .header("location", "/elsewhere")
            .header("last-modified", &modified)
    };
    for status in [404, 410, 301] {
        origin.on(&format!("/yes/{status}"), redirect("y", status));
    }
    for status in [302, 307] {
        origin.on(&format!("/no/{status}"), redirect("n", status));
    }

    for status in [404, 410, 301] {
        let path = format!("/yes/{status}");
        let again = get_twice(&edge, &path).await;
        assert_eq!(again.status.as_u16(), status);
        assert_hit(&again, &format!("{status} is heuristically cacheable"));
        assert_eq!(origin.hits(&path), 1, "{path}");
    }
    for status in [302, 307] {
        let path = format!("/no/{status}");
        let again = get_twice(&edge, &path).await;
        assert_eq!(again.status.as_u16(), status);
        again.assert_cache_status_lacks("hit", &format!("{status} has no heuristic freshness"));
        assert_eq!(origin.hits(&path), 2, "{path} must go to the origin again");
    }
}

/// GETs `path` twice; the second response.
async fn get_twice(edge: &TestCdn, path: &str) -> TestResponse {
    edge.get(path).await;
    edge.get(path).await
}

async fn public_allows_heuristic_freshness_for_any_status(topology: Topology) {
    let (origin, edge, miss) = first_fetch(topology, "/found", |now| {
        Reply::ok("f")
            .with_status(302)
            .cache_control("public")
            .header("location", "/elsewhere")
            .header("last-modified", &http_date(now - secs(1000)))
    })
    .await;
    miss.assert_cache_status_has("ttl=100", "");
    assert_hit(
        &edge.get("/found").await,
        "a public 302 gets heuristic freshness",
    );
    assert_eq!(origin.hits("/found"), 1);
}

async fn explicit_freshness_disables_heuristic_freshness(topology: Topology) {
    let (origin, edge, miss) = first_fetch(topology, "/explicit", |now| {
        Reply::ok("x")
            .cache_control("max-age=5")
            .header("last-modified", &http_date(now - secs(1000)))
    })
    .await;
    miss.assert_cache_status_has("ttl=5", "");
    edge.advance(10);
    edge.get("/explicit").await;
    assert_eq!(
        origin.hits("/explicit"),
        2,
        "stale after max-age=5 although Last-Modified would give 100s"
    );
}

async fn age_includes_the_upstream_age_and_the_resident_time(topology: Topology) {
    let (_origin, edge, miss) = first_fetch(topology, "/aged", |_| {
        Reply::ok("a")
            .cache_control("max-age=100")
            .header("age", "30")
    })
    .await;
    assert_eq!(miss.header("age").as_deref(), Some("30"));
    miss.assert_cache_status_has("ttl=70", "");
    edge.advance(10);
    let hit = edge.get("/aged").await;
    assert_hit(&hit, "age 40 of 100");
    assert_eq!(hit.header("age").as_deref(), Some("40"));
    hit.assert_cache_status_has("ttl=60", "");
}

async fn age_includes_the_apparent_age_from_date(topology: Topology) {
    let (_origin, edge, miss) = first_fetch(topology, "/dated", |now| {
        Reply::ok("d")
            .cache_control("max-age=100")
            .header("date", &http_date(now - secs(40)))
    })
    .await;
    assert_eq!(miss.header("age").as_deref(), Some("40"));
    miss.assert_cache_status_has("ttl=60", "");
    edge.advance(5);
    let hit = edge.get("/dated").await;
    assert_eq!(hit.header("age").as_deref(), Some("45"));
}

async fn age_includes_the_response_delay(topology: Topology) {
    let (origin, edge) = start_origin_and_cdn(topology, &[]).await;
    // By the edge's clock the origin takes 5s to answer; its Date is stamped at the end.
    origin.on(
        "/slow",
        Reply::ok("s")
            .cache_control("max-age=100")
            .advance_clock(edge.clock.clone(), secs(5)),
    );
    let miss = edge.get("/slow").await;
    // Each tier the 5s passed through adds them to the age it received (RFC 9111 §4.2.3:
    // corrected_age_value = age_value + response_delay), as it cannot tell where they went.
    let (age, ttl) = match topology {
        Topology::Direct => ("5", "ttl=95"),
        Topology::Shielded => ("10", "ttl=90"),
    };
    assert_eq!(
        miss.header("age").as_deref(),
        Some(age),
        "corrected initial age counts the 5s the request was in flight"
    );
    miss.assert_cache_status_has(ttl, "");
}

async fn age_is_sent_on_every_response_from_cache(topology: Topology) {
    let (origin, edge, _) = first_fetch(topology, "/every", |_| {
        Reply::ok(support::patterned_body(100))
            .cache_control("max-age=100")
            .header("etag", "\"e1\"")
    })
    .await;
    edge.advance(7);

    let hit = edge.get("/every").await;
    assert_eq!(hit.status, 200);
    let head = support::HttpClient::http1()
        .request("HEAD", &edge.url("/every"), &[], "")
        .await;
    assert_eq!(head.status, 200);
    let not_modified = edge
        .get_with("/every", &[("if-none-match", "\"e1\"")])
        .await;
    assert_eq!(not_modified.status, 304);
    let partial = edge.get_with("/every", &[("range", "bytes=0-9")]).await;
    assert_eq!(partial.status, 206);
    let stale_ok = edge
        .get_with("/every", &[("cache-control", "max-stale")])
        .await;
    assert_eq!(stale_ok.status, 200);

    for (what, response) in [
        ("hit", &hit),
        ("HEAD", &head),
        ("304", &not_modified),
        ("206", &partial),
        ("max-stale", &stale_ok),
    ] {
        assert_eq!(
            response.header("age").as_deref(),
            Some("7"),
            "{what}: {:?}",
            response.headers
        );
    }
    assert_eq!(origin.hits("/every"), 1);
}

support::in_both_topologies!(
    s_maxage_wins_over_max_age_and_expires,
    max_age_wins_over_expires,
    expires_minus_date_is_the_lifetime_not_expires_minus_now,
    invalid_expires_means_already_expired,
    conflicting_duplicate_max_age_makes_the_response_stale,
    heuristic_freshness_is_a_tenth_of_date_minus_last_modified,
    heuristic_freshness_is_capped_at_one_day,
    heuristic_freshness_applies_to_heuristically_cacheable_statuses_only,
    public_allows_heuristic_freshness_for_any_status,
    explicit_freshness_disables_heuristic_freshness,
    age_includes_the_upstream_age_and_the_resident_time,
    age_includes_the_apparent_age_from_date,
    age_includes_the_response_delay,
    age_is_sent_on_every_response_from_cache,
);
