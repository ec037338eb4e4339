//! Control replicas sharing a real 3-member etcd cluster on loopback (the `etcd` binary from
//! the Debian package `etcd-server`; without it each test says SKIPPED and does not run), with
//! real shield nodes following them.
//!
//! Covered: one purge log across replicas (one sequence number, complete status at any
//! replica); the leader crashing while purges are sent (none lost, another leads within
//! seconds, nodes move and resume); a replica cut off from etcd (503, fenced, nodes sent
//! elsewhere); one etcd member down (nothing changes) and two (503 naming the quorum, nodes
//! serve on, everything resumes).

use crate::support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use serde_json::{json, Value};
use support::{start_control, wait_until, TestControl};
use tempfile::TempDir;
use verge_config::ShieldConfig;
use verge_testkit::control::Relay;
use verge_testkit::etcd::EtcdCluster;
use verge_testkit::{FakeOrigin, RunningNode};

/// Replica settings that make failover quick in tests.
fn replica_toml(name: &str, endpoints: &[String], prefix: &str) -> String {
    format!(
        "[store]\netcd = {endpoints:?}\nprefix = {prefix:?}\nreplica = {name:?}\n\
         lease_ttl = \"2s\"\ntimeout = \"1s\"\n\
         [health]\nheartbeat_interval = \"100ms\"\nheartbeat_timeout = \"500ms\"\n\
         probe_interval = \"100ms\"\nprobe_timeout = \"200ms\"\n\
         [purge]\nshield_ack_timeout = \"500ms\"\nrate_per_second = 10000\nburst = 10000\n"
    )
}

struct Replica {
    name: String,
    control: TestControl,
    _dir: TempDir,
}

async fn replica(name: &str, endpoints: &[String]) -> Replica {
    replica_with(name, &replica_toml(name, endpoints, "/verge-test")).await
}

/// A replica started with the configuration `toml` (`[store]` and all).
async fn replica_with(name: &str, toml: &str) -> Replica {
    let dir = TempDir::new().unwrap();
    let control = start_control(dir.path(), toml).await;
    Replica {
        name: name.to_string(),
        control,
        _dir: dir,
    }
}

/// Replica `a`, leading, which reaches etcd through relays: cutting them cuts it off from etcd
/// (its lease is neither renewed nor revoked) while its nodes still reach it.
async fn relayed_leader(endpoints: &[String]) -> (Vec<Relay>, Replica) {
    let mut relays = Vec::new();
    for url in endpoints {
        relays.push(Relay::start(addr_of(url)).await);
    }
    let relayed: Vec<String> = relays.iter().map(Relay::url).collect();
    let a = replica("a", &relayed).await;
    wait_until("a to lead", Duration::from_secs(5), || a.is_leader()).await;
    (relays, a)
}

impl Replica {
    fn url(&self) -> String {
        format!("http://{}", self.control.node_addr)
    }

    async fn view(&self) -> Value {
        self.control
            .admin(Method::GET, "/v1/replica", "")
            .await
            .json()
    }

    async fn is_leader(&self) -> bool {
        self.view().await["is_leader"] == json!(true)
    }

    /// `(id, state, applied_seq)` of every node this replica knows.
    async fn nodes(&self) -> BTreeMap<String, (String, u64)> {
        let nodes = self
            .control
            .admin(Method::GET, "/v1/nodes", "")
            .await
            .json();
        verge_testkit::control::node_rows(&nodes)
            .into_iter()
            .map(|(id, state, _, applied)| (id, (state, applied)))
            .collect()
    }

    async fn purge(&self, n: u64) -> Result<u64, (StatusCode, String)> {
        let body = json!({"urls": [format!("http://example.test/{n}")]}).to_string();
        let reply = self.control.admin(Method::POST, "/v1/purge", &body).await;
        if reply.status == StatusCode::ACCEPTED {
            Ok(reply.json()["seq"].as_u64().unwrap())
        } else {
            Err((reply.status, reply.error()))
        }
    }

    /// The routing table in force, without the latency matrix.
    async fn table(&self) -> Value {
        let mut table = self
            .control
            .admin(Method::GET, "/v1/routing", "")
            .await
            .json();
        table.as_object_mut().unwrap().remove("latency");
        table
    }
}

/// A real shield following the control replicas at `urls` (in that order of preference).
async fn shield(origin: &FakeOrigin, id: &str, urls: &[String]) -> RunningNode {
    let toml = format!(
        "[shield]\nid = \"{id}\"\nregion = \"us\"\n[server]\nlisten = \"127.0.0.1:0\"\n\
         admin_listen = \"127.0.0.1:0\"\nshutdown_grace = \"1s\"\n\
         [origin]\nservers = [\"http://{}\"]\n\
         [control]\nurls = {urls:?}\nheartbeat_interval = \"100ms\"\n\
         reconnect_min = \"20ms\"\nreconnect_max = \"200ms\"\n",
        origin.addr()
    );
    let config = ShieldConfig::from_toml(&toml)
        .unwrap_or_else(|e| panic!("test shield config is invalid:\n{toml}\n{e}"));
    RunningNode::start::<verge_origin_shield::ShieldRole>(&config).await
}

/// Waits until `replica` sees every one of `ids` up with every purge up to `seq` applied.
async fn all_applied(replica: &Replica, ids: &[&str], seq: u64) {
    wait_until(
        &format!(
            "{} to see {ids:?} up with purge {seq} applied",
            replica.name
        ),
        Duration::from_secs(10),
        || async {
            let nodes = replica.nodes().await;
            ids.iter().all(|id| {
                nodes
                    .get(*id)
                    .is_some_and(|(state, applied)| state == "up" && *applied >= seq)
            })
        },
    )
    .await;
}

async fn leader_of(replicas: &[&Replica]) -> Option<String> {
    for r in replicas {
        if r.is_leader().await {
            return Some(r.name.clone());
        }
    }
    None
}

/// Records every table each replica shows, by version, and fails if two differ.
struct TableWatch {
    seen: Arc<Mutex<BTreeMap<u64, Value>>>,
    conflicts: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl TableWatch {
    fn start(admins: Vec<SocketAddr>) -> TableWatch {
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let conflicts = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        for addr in admins {
            let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
            let conflicts = Arc::clone(&conflicts);
            tokio::spawn(async move {
                let client = verge_control::client::AdminClient::new(
                    &format!("http://{addr}"),
                    support::TOKEN,
                )
                .unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let got = tokio::time::timeout(
                        Duration::from_secs(1),
                        client.get_json("/v1/routing"),
                    )
                    .await;
                    if let Ok(Ok(mut table)) = got {
                        let Some(fields) = table.as_object_mut() else {
                            continue;
                        };
                        fields.remove("latency");
                        let Some(version) = table["version"].as_u64() else {
                            continue;
                        };
                        let mut seen = seen.lock().unwrap();
                        let first = seen.entry(version).or_insert_with(|| table.clone());
                        if *first != table {
                            conflicts
                                .lock()
                                .unwrap()
                                .push(format!("version {version}: {first} and {table}"));
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
        }
        TableWatch {
            seen,
            conflicts,
            stop,
        }
    }

    /// Waits until the table `replica` shows now has been seen too.
    async fn caught_up(&self, replica: &Replica) {
        let version = replica.table().await["version"].as_u64().unwrap();
        wait_until(
            "the table watch to see the latest table",
            Duration::from_secs(5),
            || async { self.seen.lock().unwrap().contains_key(&version) },
        )
        .await;
    }

    /// How many versions were seen; fails if two replicas ever showed different tables under
    /// one version.
    fn versions(&self) -> usize {
        let conflicts = self.conflicts.lock().unwrap();
        assert!(
            conflicts.is_empty(),
            "two replicas published different tables under one version: {conflicts:?}"
        );
        self.seen.lock().unwrap().len()
    }
}

impl Drop for TableWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn addr_of(url: &str) -> SocketAddr {
    url.trim_start_matches("http://").parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_at_any_replica_reaches_the_nodes_of_every_replica_under_one_sequence_number() {
    let test =
        "a_purge_at_any_replica_reaches_the_nodes_of_every_replica_under_one_sequence_number";
    let Some(etcd) = EtcdCluster::start(3, test).await else {
        return;
    };
    let endpoints = etcd.client_urls();
    let a = replica("a", &endpoints).await;
    let b = replica("b", &endpoints).await;
    let origin = FakeOrigin::start().await;
    let _s1 = shield(&origin, "s1", &[a.url()]).await;
    let _s2 = shield(&origin, "s2", &[b.url()]).await;
    all_applied(&a, &["s1", "s2"], 0).await;
    all_applied(&b, &["s1", "s2"], 0).await;

    // Numbered from one counter, whichever replica takes them.
    assert_eq!(a.purge(1).await.unwrap(), 1);
    assert_eq!(b.purge(2).await.unwrap(), 2);
    assert_eq!(a.purge(3).await.unwrap(), 3);
    all_applied(&a, &["s1", "s2"], 3).await;
    all_applied(&b, &["s1", "s2"], 3).await;

    // Each replica's status of a purge the other accepted names both nodes, complete.
    for (replica, seq) in [(&a, 2), (&b, 1)] {
        let status = replica
            .control
            .admin(Method::GET, &format!("/v1/purge/{seq}"), "")
            .await
            .json();
        assert_eq!(status["complete"], json!(true), "{status}");
        let mut nodes: Vec<&str> = status["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].as_str().unwrap())
            .collect();
        nodes.sort_unstable();
        assert_eq!(nodes, ["s1", "s2"], "{status}");
    }
    // Both show the same table, and exactly one leads.
    assert_eq!(a.table().await, b.table().await);
    let leaders = [a.is_leader().await, b.is_leader().await];
    assert_eq!(leaders.iter().filter(|l| **l).count(), 1, "{leaders:?}");
    let view = b.view().await;
    assert_eq!(view["purge_head"], json!(3), "{view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_leader_crashes_no_acknowledged_purge_is_lost_and_another_replica_leads() {
    let test = "when_the_leader_crashes_no_acknowledged_purge_is_lost_and_another_replica_leads";
    let Some(etcd) = EtcdCluster::start(3, test).await else {
        return;
    };
    let endpoints = etcd.client_urls();
    // a can crash for etcd as well as for its nodes.
    let (relays, a) = relayed_leader(&endpoints).await;
    let b = replica("b", &endpoints).await;
    let c = replica("c", &endpoints).await;
    let origin = FakeOrigin::start().await;
    let urls = |first: &Replica, others: [&Replica; 2]| {
        vec![first.url(), others[0].url(), others[1].url()]
    };
    let _s1 = shield(&origin, "s1", &urls(&a, [&b, &c])).await;
    let _s2 = shield(&origin, "s2", &urls(&b, [&c, &a])).await;
    let s3 = shield(&origin, "s3", &urls(&c, [&a, &b])).await;
    for r in [&a, &b, &c] {
        all_applied(r, &["s1", "s2", "s3"], 0).await;
    }
    let tables = TableWatch::start(vec![
        a.control.admin_addr,
        b.control.admin_addr,
        c.control.admin_addr,
    ]);

    // Purges go to b and c in turn, every 20 ms, before, during and after the crash.
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    let mut last_ok: Option<Instant> = None;
    let mut longest_gap = Duration::ZERO;
    let crash_at = Instant::now() + Duration::from_millis(500);
    let end = crash_at + Duration::from_secs(3);
    let mut crashed = false;
    let mut n = 0;
    let mut a = Some(a);
    while Instant::now() < end {
        if !crashed && Instant::now() >= crash_at {
            crashed = true;
            for relay in &relays {
                relay.cut();
            }
            a.take().unwrap().control.stop().await;
        }
        n += 1;
        let target = if n % 2 == 0 { &b } else { &c };
        match target.purge(n).await {
            Ok(seq) => {
                let now = Instant::now();
                if let Some(before) = last_ok {
                    longest_gap = longest_gap.max(now - before);
                }
                last_ok = Some(now);
                acknowledged.push(seq);
            }
            Err(_) => refused += 1,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        acknowledged.len() > 50,
        "only {} purges accepted",
        acknowledged.len()
    );
    assert_eq!(refused, 0, "purges to the surviving replicas were refused");
    assert!(
        longest_gap < Duration::from_secs(1),
        "acceptance paused for {longest_gap:?}"
    );
    // One counter: every number from 1 to the last, once.
    let mut sorted = acknowledged.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        acknowledged.len(),
        "a sequence number was given twice"
    );

    // s1 moved from a to another replica, resumed from its last applied purge, and every node
    // applied every acknowledged purge.
    let head = *sorted.last().unwrap();
    all_applied(&b, &["s1", "s2", "s3"], head).await;
    all_applied(&c, &["s1", "s2", "s3"], head).await;
    assert_eq!(
        b.control.metric("verge_control_resyncs_total").await
            + c.control.metric("verge_control_resyncs_total").await,
        0.0,
        "a node had to flush instead of resuming"
    );

    // Another replica leads within a few seconds and publishes tables: one with s3 down.
    let crashed_at = Instant::now();
    wait_until("b or c to lead", Duration::from_secs(6), || async {
        leader_of(&[&b, &c]).await.is_some()
    })
    .await;
    let before = b.table().await["version"].as_u64().unwrap();
    s3.stop().await;
    wait_until("a table without s3", Duration::from_secs(6), || async {
        let table = c.table().await;
        table["version"].as_u64().unwrap() > before
            && table["shields"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["id"] == json!("s3") && s["healthy"] == json!(false))
    })
    .await;
    eprintln!(
        "leader crash: {} purges accepted, longest gap {longest_gap:?}, new leader and table within {:?}",
        acknowledged.len(),
        crashed_at.elapsed()
    );
    assert_eq!(b.table().await["version"], c.table().await["version"]);
    tables.caught_up(&b).await;
    let seen = tables.versions();
    assert!(
        seen >= 2,
        "tables seen: {:?}",
        tables.seen.lock().unwrap().keys().collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_off_from_etcd_refuses_purges_cannot_publish_and_sends_its_nodes_away() {
    let test = "a_replica_cut_off_from_etcd_refuses_purges_cannot_publish_and_sends_its_nodes_away";
    let Some(etcd) = EtcdCluster::start(3, test).await else {
        return;
    };
    let endpoints = etcd.client_urls();
    let (relays, a) = relayed_leader(&endpoints).await;
    let b = replica("b", &endpoints).await;
    let origin = FakeOrigin::start().await;
    let _s1 = shield(&origin, "s1", &[a.url(), b.url()]).await;
    let s2 = shield(&origin, "s2", &[b.url()]).await;
    all_applied(&b, &["s1", "s2"], 0).await;
    let tables = TableWatch::start(vec![a.control.admin_addr, b.control.admin_addr]);

    for relay in &relays {
        relay.cut();
    }
    // a cannot commit: 503, naming etcd.
    let started = Instant::now();
    let (status, message) = a.purge(1).await.unwrap_err();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{message}");
    assert!(message.contains("etcd"), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // b takes over; s1 is sent on to b; a change of routes is published by b alone.
    wait_until("b to lead", Duration::from_secs(6), || b.is_leader()).await;
    s2.stop().await;
    wait_until("b's table with s2 down", Duration::from_secs(6), || async {
        b.table().await["shields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == json!("s2") && s["healthy"] == json!(false))
    })
    .await;
    assert_eq!(b.purge(2).await.unwrap(), 1);
    all_applied(&b, &["s1"], 1).await;
    let view = a.view().await;
    assert_eq!(view["is_leader"], json!(false), "{view}");

    // Back in touch: a follows b's tables and accepts purges again.
    for relay in &relays {
        relay.restore();
    }
    wait_until(
        "a to accept purges again",
        Duration::from_secs(10),
        || async { a.purge(3).await.is_ok() },
    )
    .await;
    let b_table = b.table().await;
    wait_until("a to show b's table", Duration::from_secs(5), || async {
        a.table().await == b_table
    })
    .await;
    tables.caught_up(&b).await;
    assert!(tables.versions() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_etcd_quorum_purges_are_refused_nodes_serve_on_and_all_resumes() {
    let test = "without_an_etcd_quorum_purges_are_refused_nodes_serve_on_and_all_resumes";
    let Some(mut etcd) = EtcdCluster::start(3, test).await else {
        return;
    };
    let endpoints = etcd.client_urls();
    let a = replica("a", &endpoints).await;
    let b = replica("b", &endpoints).await;
    let origin = FakeOrigin::start().await;
    let s1 = shield(&origin, "s1", &[a.url()]).await;
    let s2 = shield(&origin, "s2", &[b.url()]).await;
    all_applied(&a, &["s1", "s2"], 0).await;
    origin.on(
        "/quorum",
        verge_testkit::fake_origin::Reply::ok("cached").cache_control("max-age=600"),
    );
    let client = verge_testkit::client::HttpClient::http1();
    let cached = format!("http://{}/quorum", s1.data_addr);
    assert_eq!(client.get(&cached).await.status, StatusCode::OK);

    // One member of three down: nothing visible changes.
    etcd.kill(0);
    assert_eq!(a.purge(1).await.unwrap(), 1);
    assert_eq!(b.purge(2).await.unwrap(), 2);
    all_applied(&a, &["s1", "s2"], 2).await;

    // Two down: no quorum. Purges are refused with 503 naming it; nodes serve from cache.
    etcd.kill(1);
    let (status, message) = b.purge(3).await.unwrap_err();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{message}");
    assert!(message.contains("no quorum"), "{message}");
    let before = origin.hits("/quorum");
    let response = client.get(&cached).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(
        origin.hits("/quorum"),
        before,
        "served from cache, not the origin"
    );
    let _ = &s2;

    // A replica starting now waits for the quorum (store.start_wait) rather than giving up;
    // one that may not wait says why.
    let bind = |name: &str, start_wait: &str| {
        let dir = TempDir::new().unwrap();
        let toml = replica_toml(name, &endpoints, "/verge-test").replacen(
            "[store]\n",
            &format!("[store]\nstart_wait = {start_wait:?}\n"),
            1,
        );
        let config = verge_config::ControlConfig::from_toml(&support::control_toml(
            dir.path(),
            support::TOKEN,
            &toml,
        ))
        .unwrap();
        async move {
            let bound = verge_control::ControlNode::bind(config).await;
            drop(dir);
            bound
        }
    };
    let error = match bind("impatient", "0s").await {
        Ok(_) => panic!("a replica started without an etcd quorum"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("no quorum"), "{error}");
    let waiting = tokio::spawn(bind("c", "30s"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!waiting.is_finished(), "c gave up while etcd had no quorum");

    // Quorum back: purges are accepted and reach the nodes again.
    etcd.restart(1).await;
    let started = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("c starts once the quorum is back")
        .unwrap();
    assert!(
        started.is_ok(),
        "c: {:?}",
        started.err().map(|e| e.to_string())
    );
    wait_until("purges accepted again", Duration::from_secs(15), || async {
        a.purge(4).await.is_ok()
    })
    .await;
    let head = b.view().await["purge_head"].as_u64().unwrap();
    assert!(head >= 3, "head {head}");
    all_applied(&a, &["s1", "s2"], head).await;
    all_applied(&b, &["s1", "s2"], head).await;
}

/// One call of etcd's JSON gateway, as an operator's tool would make it.
async fn etcd_call(url: &str, path: &str, body: Value, token: Option<&str>) -> Value {
    let headers: Vec<(&str, &str)> = token.map(|t| ("authorization", t)).into_iter().collect();
    let reply =
        support::request(addr_of(url), Method::POST, path, &headers, body.to_string()).await;
    assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text());
    reply.json()
}

fn b64(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_etcd_auth_a_replica_signs_in_and_a_wrong_password_is_named_at_start() {
    let test = "with_etcd_auth_a_replica_signs_in_and_a_wrong_password_is_named_at_start";
    let Some(etcd) = EtcdCluster::start(3, test).await else {
        return;
    };
    let url = etcd.client_url(0);
    // A root user, and a `verge` user allowed only under the replicas' prefix.
    for (path, body) in [
        ("/v3/auth/role/add", json!({"name": "root"})),
        (
            "/v3/auth/user/add",
            json!({"name": "root", "password": "root-secret"}),
        ),
        (
            "/v3/auth/user/grant",
            json!({"user": "root", "role": "root"}),
        ),
        ("/v3/auth/role/add", json!({"name": "verge"})),
        (
            "/v3/auth/role/grant",
            json!({"name": "verge", "perm": {"permType": "READWRITE",
                "key": b64("/verge-test/"), "range_end": b64("/verge-test0")}}),
        ),
        (
            "/v3/auth/user/add",
            json!({"name": "verge", "password": "verge-secret"}),
        ),
        (
            "/v3/auth/user/grant",
            json!({"user": "verge", "role": "verge"}),
        ),
        ("/v3/auth/enable", json!({})),
    ] {
        etcd_call(&url, path, body, None).await;
    }

    let endpoints = etcd.client_urls();
    let dir = TempDir::new().unwrap();
    let signed_in = replica_toml("a", &endpoints, "/verge-test").replacen(
        "[store]\n",
        "[store]\nusername = \"verge\"\npassword = \"verge-secret\"\n",
        1,
    );
    let a = Replica {
        name: "a".into(),
        control: start_control(dir.path(), &signed_in).await,
        _dir: dir,
    };
    wait_until("a to lead", Duration::from_secs(5), || a.is_leader()).await;
    assert_eq!(a.purge(1).await.unwrap(), 1);

    // The purge is in etcd, readable with the user's own token, not without one.
    let token = etcd_call(
        &url,
        "/v3/auth/authenticate",
        json!({"name": "verge", "password": "verge-secret"}),
        None,
    )
    .await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let head = etcd_call(
        &url,
        "/v3/kv/range",
        json!({"key": b64("/verge-test/purge/head")}),
        Some(&token),
    )
    .await;
    assert_eq!(head["kvs"][0]["value"], json!(b64("1")), "{head}");

    // A wrong password: control does not start, and says why.
    let dir = TempDir::new().unwrap();
    let wrong = signed_in.replace("verge-secret", "not-the-password");
    let config = verge_config::ControlConfig::from_toml(&support::control_toml(
        dir.path(),
        support::TOKEN,
        &wrong,
    ))
    .unwrap();
    let error = match verge_control::ControlNode::bind(config).await {
        Ok(_) => panic!("control started with a wrong etcd password"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("authentication as \"verge\""), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_heartbeating_vanishes_from_every_replica() {
    let test = "a_node_that_stops_heartbeating_vanishes_from_every_replica";
    let Some(etcd) = EtcdCluster::start(3, test).await else {
        return;
    };
    let endpoints = etcd.client_urls();
    let forget = |name: &str| {
        replica_toml(name, &endpoints, "/verge-test")
            .replace("[health]\n", "[health]\nforget_after = \"1s\"\n")
    };
    let a = replica_with("a", &forget("a")).await;
    let b = replica_with("b", &forget("b")).await;
    let origin = FakeOrigin::start().await;
    let _s1 = shield(&origin, "s1", &[a.url()]).await;
    let s2 = shield(&origin, "s2", &[a.url()]).await;
    all_applied(&b, &["s1", "s2"], 0).await;

    // s2 stops: a marks it down, then forgets it and deletes its registration; b follows.
    s2.stop().await;
    wait_until(
        "s2 gone from both replicas",
        Duration::from_secs(8),
        || async { !a.nodes().await.contains_key("s2") && !b.nodes().await.contains_key("s2") },
    )
    .await;
    assert!(b.nodes().await.contains_key("s1"));
    // Its registration is gone from etcd too, so no replica started later takes it in.
    let url = etcd.client_url(0);
    wait_until("s2's key deleted", Duration::from_secs(5), || async {
        let nodes = etcd_call(
            &url,
            "/v3/kv/range",
            json!({"key": b64("/verge-test/nodes/"), "range_end": b64("/verge-test/nodes0")}),
            None,
        )
        .await;
        let keys: Vec<String> = nodes["kvs"]
            .as_array()
            .map(|kvs| {
                kvs.iter()
                    .map(|kv| kv["key"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default();
        keys == [b64("/verge-test/nodes/s1")]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_a_replica_verifies_etcd_and_shows_its_client_certificate() {
    let test = "over_tls_a_replica_verifies_etcd_and_shows_its_client_certificate";
    let pki = verge_testkit::pki::TestPki::new("etcd");
    let issue = |ips: &[std::net::Ipv4Addr]| {
        let names: Vec<String> = ips.iter().map(ToString::to_string).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let server = pki.etcd_member_cert("etcd", &names);
        verge_testkit::etcd::EtcdTls {
            cert: server.cert,
            key: server.key,
            client_ca: pki.ca_file.clone(),
        }
    };
    let Some(etcd) = EtcdCluster::start_tls(3, test, &issue).await else {
        return;
    };
    let endpoints: Vec<String> = (0..3).map(|i| etcd.tls_client_url(i)).collect();
    let client = pki.anonymous_client_cert("control");
    let tls = |with_client: bool| {
        let mut table = format!(
            "[store.tls]\nca_file = {}\n",
            verge_testkit::pki::toml_path(&pki.ca_file)
        );
        if with_client {
            table.push_str(&format!(
                "client_cert = {}\nclient_key = {}\n",
                verge_testkit::pki::toml_path(&client.cert),
                verge_testkit::pki::toml_path(&client.key)
            ));
        }
        table
    };
    let config = format!(
        "{}{}",
        replica_toml("a", &endpoints, "/verge-test"),
        tls(true)
    );
    let a = replica_with("a", &config).await;
    wait_until("a to lead", Duration::from_secs(5), || a.is_leader()).await;
    assert_eq!(a.purge(1).await.unwrap(), 1);

    // Without the client certificate etcd does not let it in: control says so and stops.
    let dir = TempDir::new().unwrap();
    let config = format!(
        "{}{}",
        replica_toml("b", &endpoints, "/verge-test"),
        tls(false)
    );
    let config = verge_config::ControlConfig::from_toml(&support::control_toml(
        dir.path(),
        support::TOKEN,
        &config,
    ))
    .unwrap();
    let started = Instant::now();
    let error = match verge_control::ControlNode::bind(config).await {
        Ok(_) => panic!("control started without the client certificate etcd asks for"),
        Err(e) => e.to_string(),
    };
    // Refused at once (not waited out for store.start_wait), naming TLS.
    assert!(error.contains("etcd") && error.contains("TLS"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_compacts_etcd_history_and_a_replica_started_later_reads_the_log() {
    let test = "the_leader_compacts_etcd_history_and_a_replica_started_later_reads_the_log";
    let Some(etcd) = EtcdCluster::start(3, test).await else {
        return;
    };
    let endpoints = etcd.client_urls();
    let toml = |name: &str| {
        replica_toml(name, &endpoints, "/verge-test").replacen(
            "[store]\n",
            "[store]\nhistory = \"1s\"\n",
            1,
        )
    };
    let a = replica_with("a", &toml("a")).await;
    wait_until("a to lead", Duration::from_secs(5), || a.is_leader()).await;
    for n in 1..=3 {
        assert_eq!(a.purge(n).await.unwrap(), n);
    }
    // Revision 2 (the first write) is dropped from etcd's history within a few seconds.
    let url = etcd.client_url(0);
    wait_until("history compacted", Duration::from_secs(8), || async {
        let reply = support::request(
            addr_of(&url),
            Method::POST,
            "/v3/kv/range",
            &[],
            json!({"key": b64("/verge-test/purge/head"), "revision": "2"}).to_string(),
        )
        .await;
        reply.text().contains("compacted")
    })
    .await;
    // The purges themselves stay, and a replica started now has them all.
    let b = replica_with("b", &toml("b")).await;
    let status = b.control.admin(Method::GET, "/v1/purge/1", "").await.json();
    assert_eq!(
        status["spec"]["urls"],
        json!(["http://example.test/1"]),
        "{status}"
    );
    assert_eq!(b.view().await["purge_head"], json!(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_sent_at_once_to_three_replicas_get_every_number_once() {
    let test = "purges_sent_at_once_to_three_replicas_get_every_number_once";
    let Some(etcd) = EtcdCluster::start(3, test).await else {
        return;
    };
    let endpoints = etcd.client_urls();
    let replicas = [
        replica("a", &endpoints).await,
        replica("b", &endpoints).await,
        replica("c", &endpoints).await,
    ];
    // 3 × 40 purges in flight together: the replicas race for the same counter.
    let mut sent = tokio::task::JoinSet::new();
    for (r, replica) in replicas.iter().enumerate() {
        for n in 0..40u64 {
            let admin = verge_control::client::AdminClient::new(
                &format!("http://{}", replica.control.admin_addr),
                support::TOKEN,
            )
            .unwrap();
            let spec: verge_config::wire::PurgeSpec =
                serde_json::from_value(json!({"urls": [format!("http://example.test/{r}/{n}")]}))
                    .unwrap();
            sent.spawn(async move { admin.purge(&spec).await.map(|a| a.seq) });
        }
    }
    let mut seqs = Vec::new();
    while let Some(joined) = sent.join_next().await {
        seqs.push(joined.unwrap().expect("purge accepted"));
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=120).collect::<Vec<u64>>());
    // And every replica holds all of them, each with the URL it was accepted for.
    for replica in &replicas {
        wait_until(
            "the replica to hold every purge",
            Duration::from_secs(5),
            || async { replica.view().await["purge_head"] == json!(120) },
        )
        .await;
        let status = replica
            .control
            .admin(Method::GET, "/v1/purge/120", "")
            .await
            .json();
        assert!(status["spec"]["urls"][0]
            .as_str()
            .unwrap()
            .starts_with("http://example.test/"));
    }
}
