//! What control replicas on etcd cost against one control keeping its own fsynced log, each
//! figure measured in the same run as its baseline, on loopback, against a real 3-member etcd
//! cluster (`etcd` from Debian's `etcd-server`; without it the bench says SKIPPED and exits).
//! The etcd side is three replicas (`a`, `b`, `c`) with nodes spread over them; the baseline
//! one control with a data directory.
//!
//! 1. **Purge to 20 real shields** (`purge_to_20_shields/{embedded,etcd_3_replicas}`): one
//!    purge at a time, back to back, sent round robin to the controls. Timed from sending
//!    `POST /v1/purge` to every shield having acknowledged it, as the controls show it
//!    (`GET /v1/purge/{id}` polled at each one; a node counts as soon as any control shows it
//!    applied, which its own control does on its ack). Shown apart: the answer's own time (the
//!    store's commit), purges sent after a pause of [`SPACE`] (nothing earlier still settling),
//!    and a burst of [`BURST`] purges, [`BURST_CONCURRENCY`] in flight.
//! 2. **Fan-out to 1,000 light nodes** (`purge_to_1000_light_nodes/…`): clients of the real
//!    node protocol in this process (`fixture/fleet.rs`); timed from sending the purge to every
//!    node having read it. Also the same burst, and memory per connected node, measured in a
//!    fresh process per store (this bench again) so that earlier phases' memory does not count.
//! 3. **Leader failover under purges** (own loop, not criterion: each is a one-off event):
//!    a purge every 10 ms, round robin to the replicas alive; the leader crashes (its etcd links
//!    cut, then stopped) or stops gracefully, [`FAILOVER_ROUNDS`] times each. Measured: the
//!    longest time without an accepted purge, how long until another replica leads, and that
//!    every acknowledged purge has its own sequence number, its content, and is applied on
//!    every shield.
//!
//! The table at the end (`fixture/report.rs`) has every figure beside its baseline, the ratio,
//! the targets, and a breakdown of each phase: means from the controls' histograms, etcd's own
//! metrics (WAL fsync, commits, client bytes) and the CPU the bench process and etcd used.
//!
//! Run with `cargo bench -p verge-control --bench replicas` (about 1.5 minutes).

#[path = "fixture/fleet.rs"]
mod fleet;
#[path = "fixture/plane.rs"]
mod plane;
#[path = "fixture/report.rs"]
mod report;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use fleet::{resident_bytes, Fleet};
use plane::{shields, stop_all, Member, Plane, Store, LIGHT_PLANE, SHIELD_PLANE};
use report::{Breakdown, Burst, Failover, Kill, Latency, Report, Shields};
use tokio::runtime::Runtime;
use tokio::task::JoinSet;
use verge_config::wire::PurgeSpec;
use verge_control::client::AdminClient;
use verge_testkit::etcd::EtcdCluster;
use verge_testkit::FakeOrigin;

const BENCH: &str = "bench replicas";
const SHIELDS: usize = 20;
const LIGHT_NODES: usize = 1000;
/// Purges of the burst, and how many are in flight at once.
const BURST: usize = 500;
const BURST_CONCURRENCY: usize = 32;
/// Failover rounds of each kind.
const FAILOVER_ROUNDS: usize = 3;
const PURGE_EVERY: Duration = Duration::from_millis(10);
/// Purges sent one at a time after a pause (no earlier purge still settling), and the pause.
const SPACED: usize = 25;
const SPACE: Duration = Duration::from_millis(100);
/// Set in the child process that measures memory per node for one store (its `as_str`).
const MEMORY_CHILD: &str = "VERGE_BENCH_REPLICAS_MEMORY";
/// The etcd client URLs, comma-separated, for that child.
const MEMORY_ETCD: &str = "VERGE_BENCH_REPLICAS_ETCD";

fn spec(n: u64) -> PurgeSpec {
    PurgeSpec {
        urls: vec![format!("http://site.test/{n}")],
        ..PurgeSpec::default()
    }
}

/// Waits until every one of `nodes` shows purge `seq` applied at one of the controls (their
/// own does on their ack); panics 10 s after `started`.
async fn wait_shields_applied(admins: &[AdminClient], seq: u64, nodes: usize, started: Instant) {
    let mut applied = HashSet::new();
    loop {
        for admin in admins {
            // Not yet known at a replica whose watch is behind: asked again next round.
            if let Ok(status) = admin.status(seq).await {
                let done = status.nodes.into_iter().filter(|n| n.state == "applied");
                applied.extend(done.map(|n| n.id));
            }
        }
        if applied.len() >= nodes {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "purge {seq} applied on {} of {nodes} nodes after 10 s",
            applied.len()
        );
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

/// One purge to `admins[target]`: (sent → accepted, sent → every one of `nodes` applied).
async fn purge_to_shields(
    admins: &[AdminClient],
    target: usize,
    n: u64,
    nodes: usize,
) -> (Duration, Duration) {
    let started = Instant::now();
    let accepted = admins[target]
        .purge(&spec(n))
        .await
        .expect("purge accepted");
    let answered = started.elapsed();
    wait_shields_applied(admins, accepted.seq, nodes, started).await;
    (answered, started.elapsed())
}

/// Purge to 20 real shields, embedded and on etcd.
fn shield_propagation(c: &mut Criterion, rt: &Runtime, etcd: &[String], report: &mut Report) {
    let mut group = c.benchmark_group("purge_to_20_shields");
    for store in [Store::Embedded, Store::Etcd] {
        let (plane, nodes, _origin) = rt.block_on(async {
            let plane = Plane::start(store, etcd, "/bench-shields", SHIELD_PLANE).await;
            let origin = FakeOrigin::start().await;
            let nodes = shields(&origin, &plane.node_urls(), SHIELDS).await;
            let up = plane
                .wait_applied(SHIELDS, 0, Duration::from_secs(20))
                .await;
            assert!(up.is_some(), "every control to see {SHIELDS} shields up");
            (plane, nodes, origin)
        });
        let admins = plane.admins();
        let before = rt.block_on(plane.snapshot(etcd));
        let mut answered = Vec::new();
        let mut applied = Vec::new();
        let mut n = 0u64;
        group.bench_function(store.as_str(), |b| {
            b.iter_custom(|iterations| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iterations {
                        n += 1;
                        let target = n as usize % admins.len();
                        let (a, all) = purge_to_shields(&admins, target, n, SHIELDS).await;
                        answered.push(a);
                        applied.push(all);
                        total += all;
                    }
                    total
                })
            })
        });
        let after = rt.block_on(plane.snapshot(etcd));
        // Back to back, a purge may wait for the one before to settle; here none is left.
        let spaced = rt.block_on(async {
            let mut samples = Vec::new();
            for _ in 0..SPACED {
                tokio::time::sleep(SPACE).await;
                n += 1;
                let target = n as usize % admins.len();
                samples.push(purge_to_shields(&admins, target, n, SHIELDS).await.1);
            }
            samples
        });
        let before_burst = rt.block_on(plane.snapshot(etcd));
        let burst = rt.block_on(shield_burst(&admins));
        let after_burst = rt.block_on(plane.snapshot(etcd));
        report.shields.push(Shields {
            store,
            answered: Latency::of(answered),
            applied: Latency::of(applied),
            spaced: Latency::of(spaced),
            breakdown: Breakdown::between(&before, &after),
            burst,
            burst_breakdown: Breakdown::between(&before_burst, &after_burst),
        });
        rt.block_on(async {
            stop_all(nodes).await;
            plane.stop().await;
        });
    }
    group.finish();
}

/// Waits until every member shows one routing table version, the same for 300 ms: the
/// registrations have been taken in and published everywhere.
async fn wait_tables_settled(plane: &Plane) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = None;
    while Instant::now() < deadline {
        let mut versions = Vec::new();
        for admin in plane.admins() {
            let table = admin.get_json("/v1/routing").await.unwrap_or_default();
            versions.push(
                table["table"]["version"]
                    .as_u64()
                    .or(table["version"].as_u64()),
            );
        }
        let same = versions.windows(2).all(|w| w[0] == w[1]);
        if same && last.as_ref() == Some(&versions) {
            return;
        }
        last = Some(versions);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    panic!("routing tables still changing after 60 s: {last:?}");
}

/// Sends `BURST` purges, `BURST_CONCURRENCY` at a time, round robin over `admins`; the
/// newest sequence number and the burst so far (`applied` still to be filled in).
async fn send_burst(admins: &[AdminClient], started: Instant) -> (u64, Burst) {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut senders = JoinSet::new();
    for _ in 0..BURST_CONCURRENCY {
        let (admins, next) = (admins.to_vec(), Arc::clone(&next));
        senders.spawn(async move {
            let mut newest = 0;
            let mut answers = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= BURST {
                    return (newest, answers);
                }
                let spec = spec(1_000_000 + i as u64);
                let sent = Instant::now();
                let accepted = admins[i % admins.len()].purge(&spec).await;
                answers.push(sent.elapsed());
                newest = newest.max(accepted.expect("burst purge accepted").seq);
            }
        });
    }
    let mut newest = 0;
    let mut answers = Vec::new();
    while let Some(sender) = senders.join_next().await {
        let (seq, times) = sender.expect("a sender");
        newest = newest.max(seq);
        answers.extend(times);
    }
    let burst = Burst {
        purges: BURST,
        in_flight: BURST_CONCURRENCY,
        accepted: started.elapsed(),
        applied: Duration::ZERO,
        answers: Latency::of(answers),
    };
    (newest, burst)
}

/// A burst to 20 shields: from the first sent until every shield has applied the last.
async fn shield_burst(admins: &[AdminClient]) -> Burst {
    let started = Instant::now();
    let (newest, burst) = send_burst(admins, started).await;
    wait_shields_applied(admins, newest, SHIELDS, Instant::now()).await;
    Burst {
        applied: started.elapsed(),
        ..burst
    }
}

/// A burst to the light nodes: from the first sent until every node has read the last.
async fn fleet_burst(admins: &[AdminClient], fleet: &Fleet) -> Burst {
    let started = Instant::now();
    let (newest, burst) = send_burst(admins, started).await;
    let seen = fleet.wait_all_saw(newest, Duration::from_secs(120)).await;
    assert!(
        seen,
        "the burst's last purge {newest} was not read by every node"
    );
    Burst {
        applied: started.elapsed(),
        ..burst
    }
}

/// Fan-out to 1,000 light nodes, embedded and on etcd.
fn light_fanout(c: &mut Criterion, rt: &Runtime, etcd: &[String], report: &mut Report) {
    let mut group = c.benchmark_group("purge_to_1000_light_nodes");
    for store in [Store::Embedded, Store::Etcd] {
        let per_node = memory_per_node(store, etcd);
        let plane = rt.block_on(Plane::start(store, etcd, "/bench-fanout", LIGHT_PLANE));
        let admins = plane.admins();
        let fleet = rt.block_on(async {
            let fleet = Fleet::start(&plane.node_addrs(), LIGHT_NODES);
            plane
                .wait_connected(LIGHT_NODES, Duration::from_secs(120))
                .await;
            wait_tables_settled(&plane).await;
            fleet
        });
        // The first purge after connecting opens every node's ack connection: shown apart.
        let first = rt.block_on(async {
            let started = Instant::now();
            let accepted = admins[0].purge(&spec(0)).await.expect("purge accepted");
            let seen = fleet
                .wait_all_saw(accepted.seq, Duration::from_secs(60))
                .await;
            assert!(seen, "first purge not read by every node");
            started.elapsed()
        });
        let before = rt.block_on(plane.snapshot(etcd));
        let mut samples = Vec::new();
        let mut n = 0u64;
        group.bench_function(store.as_str(), |b| {
            b.iter_custom(|iterations| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iterations {
                        n += 1;
                        let admin = &admins[n as usize % admins.len()];
                        let took = fleet.timed_purge(admin, &spec(n)).await;
                        samples.push(took);
                        total += took;
                    }
                    total
                })
            })
        });
        let after = rt.block_on(plane.snapshot(etcd));
        let burst = rt.block_on(fleet_burst(&admins, &fleet));
        let after_burst = rt.block_on(plane.snapshot(etcd));
        let stored = match store {
            Store::Etcd => Some(rt.block_on(plane::stored_sizes(&etcd[0], "/bench-fanout"))),
            Store::Embedded => None,
        };
        report.fanout.push(report::Fanout {
            store,
            first,
            latency: Latency::of(samples),
            per_node,
            burst,
            breakdown: Breakdown::between(&before, &after),
            burst_breakdown: Breakdown::between(&after, &after_burst),
            stored,
        });
        rt.block_on(plane.stop());
    }
    group.finish();
}

/// Resident memory per connected light node with `store`, measured in a fresh process (this
/// bench again, as [`memory_child`]) so that what earlier phases left allocated does not count.
fn memory_per_node(store: Store, etcd: &[String]) -> Option<u64> {
    let exe = std::env::current_exe().ok()?;
    let output = std::process::Command::new(exe)
        .env(MEMORY_CHILD, store.as_str())
        .env(MEMORY_ETCD, etcd.join(","))
        .stderr(std::process::Stdio::inherit())
        .output()
        .ok()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let figure = stdout
        .lines()
        .find_map(|l| l.strip_prefix("resident-per-node ")?.trim().parse().ok());
    if figure.is_none() {
        eprintln!("memory measurement for {} failed: {stdout}", store.as_str());
    }
    figure
}

/// The child of [`memory_per_node`]: one plane, 1,000 light nodes connected and every table
/// settled; prints the resident set's growth per node.
fn memory_child(store: &str) {
    let store = if store == Store::Embedded.as_str() {
        Store::Embedded
    } else {
        Store::Etcd
    };
    let etcd: Vec<String> = std::env::var(MEMORY_ETCD)
        .unwrap_or_default()
        .split(',')
        .map(str::to_string)
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let plane = Plane::start(store, &etcd, "/bench-memory", LIGHT_PLANE).await;
        let before = resident_bytes();
        let _fleet = Fleet::start(&plane.node_addrs(), LIGHT_NODES);
        plane
            .wait_connected(LIGHT_NODES, Duration::from_secs(120))
            .await;
        wait_tables_settled(&plane).await;
        let per_node = resident_bytes().saturating_sub(before) / LIGHT_NODES as u64;
        println!("resident-per-node {per_node}");
        plane.stop().await;
    });
}

/// How long after `from` one of `admins` leads; `None` after 10 s.
async fn watch_leader(admins: Vec<AdminClient>, from: Instant) -> Option<Duration> {
    while from.elapsed() < Duration::from_secs(10) {
        for admin in &admins {
            let view = admin.get_json("/v1/replica").await.unwrap_or_default();
            if view["is_leader"] == true {
                return Some(from.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// One purge sent during a failover round.
struct Sent {
    n: u64,
    to_killed: bool,
    done: Instant,
    seq: Option<u64>,
}

/// One failover round on a fresh prefix: replica `a` (reaching etcd through relays) leads,
/// `b` and `c` follow, 20 shields spread over them; purges every 10 ms; `a` is killed 1 s in.
async fn failover_round(
    etcd: &[String],
    round: usize,
    kill: Kill,
    origin: &FakeOrigin,
) -> Failover {
    let prefix = format!("/bench-failover-{round}");
    let a = Member::start("a", Some((etcd, &prefix)), true, SHIELD_PLANE).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !a.is_leader().await {
        assert!(Instant::now() < deadline, "a did not lead within 5 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let b = Member::start("b", Some((etcd, &prefix)), false, SHIELD_PLANE).await;
    let c = Member::start("c", Some((etcd, &prefix)), false, SHIELD_PLANE).await;
    let mut plane = Plane {
        members: vec![a, b, c],
    };
    let nodes = shields(origin, &plane.node_urls(), SHIELDS).await;
    let up = plane
        .wait_applied(SHIELDS, 0, Duration::from_secs(20))
        .await;
    assert!(up.is_some(), "every replica to see {SHIELDS} shields up");
    let admins = plane.admins();

    let started = Instant::now();
    let kill_at = started + Duration::from_secs(1);
    let end = kill_at
        + match kill {
            Kill::Crash => Duration::from_millis(3500),
            Kill::Graceful => Duration::from_millis(1500),
        };
    let mut alive = vec![0, 1, 2];
    let mut sends = JoinSet::new();
    let mut killing = None;
    let mut ticker = tokio::time::interval(PURGE_EVERY);
    let mut n = 0u64;
    loop {
        ticker.tick().await;
        let now = Instant::now();
        if now >= end {
            break;
        }
        if killing.is_none() && now >= kill_at {
            alive = vec![1, 2];
            let leader = plane.members.remove(0);
            let killed = tokio::spawn(async move {
                match kill {
                    Kill::Crash => leader.crash().await,
                    Kill::Graceful => leader.control.stop().await,
                }
            });
            let leads = tokio::spawn(watch_leader(admins[1..].to_vec(), now));
            killing = Some((killed, leads));
        }
        n += 1;
        let target = alive[n as usize % alive.len()];
        let admin = admins[target].clone();
        sends.spawn(async move {
            let seq = admin.purge(&spec(n)).await.ok().map(|a| a.seq);
            Sent {
                n,
                to_killed: target == 0,
                done: Instant::now(),
                seq,
            }
        });
    }
    let mut sent = Vec::new();
    while let Some(s) = sends.join_next().await {
        sent.push(s.expect("a sender"));
    }
    let (killed, leads) = killing.expect("the leader was killed");
    killed.await.expect("the leader stopped");
    let new_leader = leads.await.expect("the leader watch");

    sent.sort_by_key(|s| s.done);
    let accepted: Vec<&Sent> = sent.iter().filter(|s| s.seq.is_some()).collect();
    let longest_gap = accepted
        .windows(2)
        .map(|w| w[1].done - w[0].done)
        .max()
        .unwrap_or_default();
    let seqs: HashSet<u64> = accepted.iter().filter_map(|s| s.seq).collect();
    let head = seqs.iter().copied().max().unwrap_or(0);
    // Every acknowledged purge applied on every shield, as both survivors see it.
    let applied = plane
        .wait_applied(SHIELDS, head, Duration::from_secs(15))
        .await;
    // And stored under its own number with its own content, as a survivor tells it.
    let mut lost = 0;
    for s in &accepted {
        let seq = s.seq.unwrap_or(0);
        let status = plane.members[0].control.admin.status(seq).await;
        let kept = status.is_ok_and(|st| st.spec.urls == spec(s.n).urls);
        lost += usize::from(!kept);
    }
    let mut resyncs = 0.0;
    for m in plane.metrics().await {
        resyncs += m.value_or_zero("verge_control_resyncs_total", &[]);
    }
    stop_all(nodes).await;
    plane.stop().await;
    Failover {
        kill,
        accepted: accepted.len(),
        refused_by_survivors: sent
            .iter()
            .filter(|s| s.seq.is_none() && !s.to_killed)
            .count(),
        refused_by_killed: sent
            .iter()
            .filter(|s| s.seq.is_none() && s.to_killed)
            .count(),
        duplicates: accepted.len() - seqs.len(),
        longest_gap,
        new_leader,
        applied,
        lost,
        resyncs,
    }
}

fn main() {
    if let Ok(store) = std::env::var(MEMORY_CHILD) {
        memory_child(&store);
        return;
    }
    if verge_testkit::installed("etcd", "etcd-server", BENCH).is_none() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let Some(cluster) = rt.block_on(EtcdCluster::start(3, BENCH)) else {
        return;
    };
    let etcd = cluster.client_urls();
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    let mut report = Report::default();
    shield_propagation(&mut c, &rt, &etcd, &mut report);
    light_fanout(&mut c, &rt, &etcd, &mut report);
    rt.block_on(async {
        let origin = FakeOrigin::start().await;
        let mut round = 0;
        for kill in [Kill::Crash, Kill::Graceful] {
            for _ in 0..FAILOVER_ROUNDS {
                round += 1;
                let figures = failover_round(&etcd, round, kill, &origin).await;
                report.failovers.push(figures);
            }
        }
    });
    report.print(SHIELDS, LIGHT_NODES);
    c.final_summary();
    drop(cluster);
}
