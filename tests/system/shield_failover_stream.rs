//! The shield tier under a stream of requests: three shields and two front edges in front of one
//! origin. Concurrent misses from both edges cost the origin one request per object; a shield
//! killed while clients stream requests costs them no error, its keys fail over to the next
//! shield in ring order (and only its keys move); restarted with the same id on the same address,
//! it gets its keys back once its ejection has run out.
//!
//! Every wait is bounded: requests by [`REQUEST_LIMIT`], phases by [`PHASE_LIMIT`], and the
//! number of requests by the constants below.

use verge_testkit as support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use support::tier::{
    fetched_by, get_site, last_fetcher, restart_shield_at, shield_up, start_front, start_shield,
    via_chain, Placement, SHIELD_REQUESTS, SHIELD_UP, SITE,
};
use support::{within, FakeOrigin, HttpClient, Reply, TestEdge, TestResponse};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Bound on one client request.
const REQUEST_LIMIT: Duration = Duration::from_secs(3);

/// Bound on a whole phase of a test (a stream of requests, a shield stopping or rejoining).
const PHASE_LIMIT: Duration = Duration::from_secs(5);

/// The shields, all of weight 1, in the order the front edges list them.
const SHIELD_IDS: [&str; 3] = ["s1", "s2", "s3"];

/// The shield the failover test kills and restarts.
const VICTIM: &str = "s2";

/// Concurrent client tasks streaming requests in the failover test.
const CLIENTS: usize = 8;
/// Requests per client before the kill is under way (the kill starts half-way through these).
const BEFORE: usize = 10;
/// At most this many requests per client while the shield is stopping.
const DURING_MAX: usize = 10;
/// Requests per client once the shield has stopped.
const AFTER: usize = 12;
/// Objects the clients share, requested again and again (every fourth request is one of them).
const HOT: usize = 12;
/// How long a front edge keeps a failing shield out of its ring before probing it again.
const EJECT_FOR: Duration = Duration::from_millis(300);
/// Bound on requests per front edge while waiting for a probe of the victim (the requests are
/// 10 ms apart or more: together, longer than [`EJECT_FOR`]).
const REJOIN_ATTEMPTS: usize = 60;

/// An origin whose every answer is cacheable and takes a moment, so that requests overlap.
async fn slow_cacheable_origin(delay: Duration) -> FakeOrigin {
    let origin = FakeOrigin::start().await;
    origin.on_prefix(
        "/",
        Reply::ok("object")
            .cache_control("max-age=300")
            .delay(delay),
    );
    origin
}

/// The placement every front edge computes for [`SHIELD_IDS`].
fn placement() -> Placement {
    let members: Vec<(&str, u32)> = SHIELD_IDS.iter().map(|id| (*id, 1)).collect();
    Placement::new(&members)
}

/// GET `path` on `edge` for [`SITE`], within [`REQUEST_LIMIT`].
async fn get_bounded(client: &HttpClient, edge: &TestEdge, path: &str) -> TestResponse {
    within(
        &format!("GET {path} on {}", edge.data_addr),
        REQUEST_LIMIT,
        get_site(client, edge, path),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_origin_request_per_object_across_both_edges() {
    // The delay keeps each object's fill open while the other edge's miss for it arrives.
    let origin = slow_cacheable_origin(Duration::from_millis(30)).await;
    let mut shields = Vec::new();
    for id in SHIELD_IDS {
        shields.push(start_shield(&origin, id).await);
    }
    let members: Vec<_> = SHIELD_IDS
        .iter()
        .zip(&shields)
        .map(|(id, shield)| (*id, shield.data_addr, 1))
        .collect();
    let a = start_front(origin.addr(), "a", &members, &[]).await;
    let b = start_front(origin.addr(), "b", &members, &[]).await;
    let placement = placement();
    let objects: Vec<String> = (0..50).map(|i| format!("/shared/{i}")).collect();
    let owned: BTreeSet<&str> = objects
        .iter()
        .map(|path| placement.owner_of(SITE, path))
        .collect();
    assert_eq!(owned.len(), 3, "every shield should own some objects");

    let client = HttpClient::http1();
    let mut requests = JoinSet::new();
    for path in &objects {
        for front in [&a, &b] {
            let (client, url) = (client.clone(), front.url(path));
            requests.spawn(async move {
                let response = client.request("GET", &url, &[("host", SITE)], "").await;
                (url, response)
            });
        }
    }
    within("100 concurrent GETs", PHASE_LIMIT, async {
        while let Some(joined) = requests.join_next().await {
            let (url, response) = joined.unwrap();
            assert_eq!(response.status, 200, "{url}: {}", response.text());
            assert_eq!(response.text(), "object", "{url}");
        }
    })
    .await;

    for path in &objects {
        let seen = origin.requests_for(path);
        let chains: Vec<Vec<String>> = seen.iter().map(via_chain).collect();
        assert_eq!(seen.len(), 1, "{path} reached the origin via {chains:?}");
        let owner = placement.owner_of(SITE, path);
        assert!(
            chains[0].len() == 2 && ["a", "b"].contains(&chains[0][0].as_str()),
            "{path}: not fetched through a front edge and one shield: {chains:?}"
        );
        assert_eq!(
            chains[0][1], owner,
            "{path} was not fetched by its owner {owner}"
        );
    }
    assert_eq!(origin.total_hits(), objects.len());
    // Both edges missed on every object and asked a shield: the shields, not the edges' caches,
    // kept the origin's count at one per object.
    for front in [&a, &b] {
        let metrics = front.metrics().await;
        metrics.assert_value(SHIELD_REQUESTS, &[("result", "ok")], objects.len() as f64);
    }
}

/// Where in its stream a client sent a request, relative to the victim's shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// A client's first [`BEFORE`] requests: the kill begins once half of all of them are
    /// answered, so the last ones may be sent while it is under way, or even after it.
    Before,
    /// A client's next requests, until the victim has stopped (at most [`DURING_MAX`]).
    During,
    /// Once the victim had stopped: it holds no connection and listens nowhere.
    After,
}

/// One request of the stream and what came back.
struct Outcome {
    phase: Phase,
    front: &'static str,
    path: String,
    status: u16,
    body: String,
    cache_status: String,
}

impl Outcome {
    /// One line for a failure message.
    fn describe(&self) -> String {
        format!(
            "{:?} GET {} via front {}: {} {:?} (Cache-Status: {})",
            self.phase, self.path, self.front, self.status, self.body, self.cache_status
        )
    }
}

/// Request `k` of `phase` by client `c`: every fourth one a shared hot object, the rest objects
/// nobody else asks for. Fixed by `(phase, c, k)`, so placement-based preconditions hold whatever
/// the timing.
fn stream_request(phase: Phase, c: usize, k: usize) -> (&'static str, String) {
    let front = if (c + k) % 2 == 0 { "a" } else { "b" };
    let path = if k % 4 == 3 {
        format!("/hot/{}", (c + k) % HOT)
    } else {
        format!("/{}/{c}/{k}", format!("{phase:?}").to_lowercase())
    };
    (front, path)
}

/// One client's stream: [`BEFORE`] requests, then requests until the victim has stopped (at most
/// [`DURING_MAX`]), then [`AFTER`] requests.
async fn client_stream(
    c: usize,
    client: HttpClient,
    fronts: [(&'static str, std::net::SocketAddr); 2],
    mut stopped: watch::Receiver<bool>,
    done: tokio::sync::mpsc::UnboundedSender<()>,
) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    let send = |phase: Phase, k: usize| {
        let (front, path) = stream_request(phase, c, k);
        let addr = fronts.iter().find(|(id, _)| *id == front).unwrap().1;
        let client = client.clone();
        async move {
            let url = format!("http://{addr}{path}");
            let response = within(
                &format!("GET {url}"),
                REQUEST_LIMIT,
                client.request("GET", &url, &[("host", SITE)], ""),
            )
            .await;
            Outcome {
                phase,
                front,
                path,
                status: response.status.as_u16(),
                body: response.text(),
                cache_status: response.cache_status(),
            }
        }
    };
    for k in 0..BEFORE {
        outcomes.push(send(Phase::Before, k).await);
        let _ = done.send(());
    }
    for k in 0..DURING_MAX {
        if *stopped.borrow() {
            break;
        }
        outcomes.push(send(Phase::During, k).await);
    }
    within("the victim to stop", PHASE_LIMIT, stopped.wait_for(|s| *s))
        .await
        .unwrap();
    for k in 0..AFTER {
        outcomes.push(send(Phase::After, k).await);
    }
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_a_shield_under_load_fails_over_its_keys_and_it_rejoins() {
    // The delay keeps requests in flight at the victim when its shutdown begins.
    let origin = slow_cacheable_origin(Duration::from_millis(10)).await;
    let mut shields = BTreeMap::new();
    for id in SHIELD_IDS {
        shields.insert(id, start_shield(&origin, id).await);
    }
    let victim_addr = shields[VICTIM].data_addr;
    let members: Vec<_> = SHIELD_IDS
        .iter()
        .map(|id| (*id, shields[id].data_addr, 1))
        .collect();
    let eject_for = format!("shields.eject_for = \"{}ms\"", EJECT_FOR.as_millis());
    let health = ["shields.failures_to_eject = 2", eject_for.as_str()];
    let a = start_front(origin.addr(), "a", &members, &health).await;
    let b = start_front(origin.addr(), "b", &members, &health).await;
    let fronts = [("a", &a), ("b", &b)];
    let placement = placement();

    // Preconditions on the fixed request plan: the victim owns hot objects, and each front edge
    // is sent many fresh objects of the victim after its death: many more than it would try the
    // victim for once ejected (failures_to_eject, then one probe per EJECT_FOR).
    assert!((0..HOT).any(|h| placement.owner_of(SITE, &format!("/hot/{h}")) == VICTIM));
    for (id, _) in fronts {
        let victims_after = (0..CLIENTS)
            .flat_map(|c| (0..AFTER).map(move |k| stream_request(Phase::After, c, k)))
            .filter(|(front, path)| {
                *front == id
                    && !path.starts_with("/hot/")
                    && placement.owner_of(SITE, path) == VICTIM
            })
            .count();
        assert!(victims_after >= 8, "front {id}: {victims_after}");
    }

    // The stream, with the victim killed half-way through the first requests.
    let client = HttpClient::http1();
    let (stopped_tx, stopped_rx) = watch::channel(false);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut streams = JoinSet::new();
    for c in 0..CLIENTS {
        let fronts = [("a", a.data_addr), ("b", b.data_addr)];
        streams.spawn(client_stream(
            c,
            client.clone(),
            fronts,
            stopped_rx.clone(),
            done_tx.clone(),
        ));
    }
    drop(done_tx);
    within("half the first requests", PHASE_LIMIT, async {
        for _ in 0..CLIENTS * BEFORE / 2 {
            done_rx.recv().await.unwrap();
        }
    })
    .await;
    let mut victim = shields.remove(VICTIM).unwrap();
    victim.begin_shutdown();
    victim.stopped(PHASE_LIMIT).await;
    let seen_before_stop = origin.total_hits();
    let failures_before_stop = [
        shield_failures(&a, VICTIM).await,
        shield_failures(&b, VICTIM).await,
    ];
    stopped_tx.send(true).unwrap();
    let mut outcomes = Vec::new();
    within("the client streams", PHASE_LIMIT, async {
        while let Some(joined) = streams.join_next().await {
            outcomes.extend(joined.unwrap());
        }
    })
    .await;
    let total = outcomes.len();

    // No client saw an error: not for the survivors' objects, nor for the victim's.
    let failed = |victims: bool| -> Vec<String> {
        outcomes
            .iter()
            .filter(|o| (placement.owner_of(SITE, &o.path) == VICTIM) == victims)
            .filter(|o| o.status != 200 || o.body != "object")
            .map(Outcome::describe)
            .collect()
    };
    let (survivors_failed, victims_failed) = (failed(false), failed(true));
    assert!(
        survivors_failed.is_empty(),
        "{} of {total} requests for the surviving shields' objects failed:\n{}",
        survivors_failed.len(),
        survivors_failed.join("\n")
    );
    assert!(
        victims_failed.is_empty(),
        "{} of {total} requests for the dead shield's objects were not failed over:\n{}",
        victims_failed.len(),
        victims_failed.join("\n")
    );

    // Who fetched what: the survivors' objects once each, by their owner, across the kill; the
    // victim's by the victim or the next shield in ring order, each at most once, and only by
    // the next shield when first asked for after the victim had stopped.
    let after_stop: Vec<String> = origin.requests()[seen_before_stop..]
        .iter()
        .map(fetched_by)
        .collect();
    assert!(
        !after_stop.iter().any(|id| id == VICTIM),
        "the stopped shield still fetched: {after_stop:?}"
    );
    // The earliest phase each object was asked for in. Only the last phase is ordered in time
    // (after the victim stopped); a slow client may still send its first requests then.
    let mut first_phase: BTreeMap<&str, Phase> = BTreeMap::new();
    for o in &outcomes {
        let phase = first_phase.entry(o.path.as_str()).or_insert(o.phase);
        *phase = (*phase).min(o.phase);
    }
    for (path, phase) in &first_phase {
        let chains: Vec<Vec<String>> = origin.requests_for(path).iter().map(via_chain).collect();
        assert!(
            !chains.is_empty() && chains.iter().all(|chain| chain.len() == 2),
            "{path}: each fetch should come from a front edge through one shield: {chains:?}"
        );
        let fetchers: Vec<&str> = chains.iter().map(|chain| chain[1].as_str()).collect();
        let owner = placement.owner_of(SITE, path);
        if owner != VICTIM {
            assert_eq!(fetchers, [owner], "{path} (first sent {phase:?})");
            continue;
        }
        let next = placement.candidates_of(SITE, path)[1];
        let distinct: BTreeSet<&str> = fetchers.iter().copied().collect();
        assert!(
            distinct.len() == fetchers.len()
                && distinct.iter().all(|id| *id == VICTIM || *id == next),
            "{path} (first sent {phase:?}): fetched by {fetchers:?}; only {VICTIM} or {next} may, once each"
        );
        if *phase == Phase::After {
            assert_eq!(fetchers, [next], "{path}");
        }
    }

    // Both front edges took the victim out of the ring, so that most of its keys skipped it
    // without a try, and kept the others in.
    for ((id, front), failures_before_stop) in fronts.into_iter().zip(failures_before_stop) {
        let metrics = front.metrics().await;
        let up = |shield: &str| metrics.value(SHIELD_UP, &[("shield", shield)]);
        assert_eq!(up(VICTIM), Some(0.0), "front {id}:\n{}", metrics.text());
        assert!(
            metrics.value_or_zero("verge_shield_ejections_total", &[("shield", VICTIM)]) >= 1.0,
            "front {id}:\n{}",
            metrics.text()
        );
        let victim_misses_after = outcomes
            .iter()
            .filter(|o| o.phase == Phase::After && o.front == id && !o.path.starts_with("/hot/"))
            .filter(|o| placement.owner_of(SITE, &o.path) == VICTIM)
            .count();
        let tries_after = shield_failures(front, VICTIM).await - failures_before_stop;
        assert!(
            tries_after < victim_misses_after as f64,
            "front {id} tried the dead {VICTIM} {tries_after} times for {victim_misses_after} \
             misses of its keys after it stopped: once ejected, it should have been skipped"
        );
        for shield in SHIELD_IDS.iter().filter(|s| **s != VICTIM) {
            assert_eq!(up(shield), Some(1.0), "front {id}:\n{}", metrics.text());
            assert!(
                metrics.value_or_zero(SHIELD_REQUESTS, &[("shield", shield)]) > 0.0,
                "front {id} never asked {shield}"
            );
            assert_eq!(
                shield_failures(front, shield).await,
                0.0,
                "front {id}, {shield}"
            );
        }
    }

    // The victim comes back with the same id on the same address. Each front edge first fails
    // one more probe of the dead victim, so that it is known to keep the victim out for
    // EJECT_FOR from then; only after that do the victim's new keys go to it again.
    let client = &client;
    let [front_a, front_b] = [("a", &a), ("b", &b)].map(|(id, edge)| Front {
        id,
        edge,
        client,
        placement: &placement,
        origin: &origin,
    });
    let (probed_a, probed_b) =
        tokio::join!(await_failed_probe(front_a), await_failed_probe(front_b),);
    let _restarted = restart_shield_at(&origin, VICTIM, victim_addr, PHASE_LIMIT).await;
    let (back_a, back_b) = tokio::join!(await_rejoin(front_a), await_rejoin(front_b));
    for (id, front, probed, back) in [("a", &a, probed_a, back_a), ("b", &b, probed_b, back_b)] {
        assert!(
            back - probed >= EJECT_FOR,
            "front {id} took {VICTIM} back {:?} after a failed probe; it is out for {EJECT_FOR:?}",
            back - probed
        );
        assert_eq!(shield_up(front, VICTIM).await, Some(1.0), "front {id}");
        let mut victim_keys = fresh_paths(&placement, format!("/back/{id}/"), true);
        let mut other_keys = fresh_paths(&placement, format!("/steady/{id}/"), false);
        for _ in 0..4 {
            for path in [victim_keys.next().unwrap(), other_keys.next().unwrap()] {
                let response = get_bounded(client, front, &path).await;
                assert_eq!(response.status, 200, "front {id} {path}");
                let owner = placement.owner_of(SITE, &path);
                assert_eq!(last_fetcher(&origin, &path), owner, "front {id} {path}");
            }
        }
    }
}

/// Fresh paths under `prefix` that the victim owns (or, with `victims = false`, does not).
fn fresh_paths(
    placement: &Placement,
    prefix: String,
    victims: bool,
) -> impl Iterator<Item = String> + '_ {
    (0..)
        .map(move |i| format!("{prefix}{i}"))
        .filter(move |path| (placement.owner_of(SITE, path) == VICTIM) == victims)
}

/// Requests from `front` to shield `id` that failed, by the front edge's metrics.
async fn shield_failures(front: &TestEdge, id: &str) -> f64 {
    let metrics = front.metrics().await;
    metrics.value_or_zero(SHIELD_REQUESTS, &[("shield", id)])
        - metrics.value_or_zero(SHIELD_REQUESTS, &[("shield", id), ("result", "ok")])
}

/// A front edge as the rejoin phase drives it: its id, the client sending to it, where the
/// ring places each key, and the origin that records which shield fetched it.
#[derive(Clone, Copy)]
struct Front<'a> {
    id: &'a str,
    edge: &'a TestEdge,
    client: &'a HttpClient,
    placement: &'a Placement,
    origin: &'a FakeOrigin,
}

/// Sends `front` fresh objects of the dead victim until one probes it, which the front edge
/// counts as one more failure of the victim; returns when that request was sent. Each of them is
/// fetched through the next shield.
async fn await_failed_probe(front: Front<'_>) -> Instant {
    let id = front.id;
    let mut keys = fresh_paths(front.placement, format!("/probe/{id}/"), true);
    let failures = shield_failures(front.edge, VICTIM).await;
    for _ in 0..REJOIN_ATTEMPTS {
        let path = keys.next().unwrap();
        let sent = Instant::now();
        let response = get_bounded(front.client, front.edge, &path).await;
        assert_eq!(response.status, 200, "front {id} {path}");
        let next = front.placement.candidates_of(SITE, &path)[1];
        assert_eq!(last_fetcher(front.origin, &path), next, "front {id} {path}");
        if shield_failures(front.edge, VICTIM).await > failures {
            return sent;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("front {id} did not probe the dead {VICTIM} in {REJOIN_ATTEMPTS} requests");
}

/// Sends `front` fresh objects of the restarted victim until one is fetched through it, each
/// before that through the next shield; returns when the victim's fetch was answered.
async fn await_rejoin(front: Front<'_>) -> Instant {
    let id = front.id;
    let mut keys = fresh_paths(front.placement, format!("/rejoin/{id}/"), true);
    for _ in 0..REJOIN_ATTEMPTS {
        let path = keys.next().unwrap();
        let response = get_bounded(front.client, front.edge, &path).await;
        let answered = Instant::now();
        assert_eq!(response.status, 200, "front {id} {path}");
        let fetcher = last_fetcher(front.origin, &path);
        if fetcher == VICTIM {
            return answered;
        }
        let next = front.placement.candidates_of(SITE, &path)[1];
        assert_eq!(fetcher, next, "front {id} {path}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("front {id}: the restarted {VICTIM} got none of its keys in {REJOIN_ATTEMPTS} requests");
}
