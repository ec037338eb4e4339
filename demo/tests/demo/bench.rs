//! `verge bench` end to end: against a demo started in-process (one edge per region), and
//! against a target that does not answer; bounded in time.

use std::path::Path;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::timeout;
use verge_demo::bench::{self, BenchCommand, Outcome, WorkloadArgs};
use verge_demo::state::DemoState;

/// The results file of a run, as JSON (its shape is what scripts see).
fn results(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join(bench::RESULTS_FILE)).expect("results.json");
    serde_json::from_str(&text).expect("results.json is JSON")
}

fn summary(value: &serde_json::Value, field: &str, pick: &str) -> f64 {
    value[field][pick]
        .as_f64()
        .unwrap_or_else(|| panic!("{field}.{pick} in {value}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_against_the_demo_reports_hits_in_every_region_and_local_hits_beat_cross_region_misses(
) {
    let demo = crate::small_demo().await;
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("state.json");
    demo.state.write_to(&state_file).unwrap();
    let out = dir.path().join("out");
    let command = BenchCommand {
        state: Some(state_file),
        workload: WorkloadArgs {
            // Few objects, skewed: even ap's clients, slowed by every cross-region miss, ask
            // for some object twice within the run.
            objects: Some(8),
            zipf: 1.2,
            concurrency: 2,
            duration: "2s".into(),
            warmup: "1500ms".into(),
            purge_share: 0.02,
            steering: "dns".into(),
            ..WorkloadArgs::default()
        },
        out: out.clone(),
        baseline: false,
        progress: false,
        faults: Vec::new(),
        demo: verge_demo::DemoOptions::default(),
    };
    let (_stop_tx, stop) = watch::channel(false);
    let outcome = timeout(Duration::from_secs(20), bench::command(command, stop))
        .await
        .expect("the bench ends on time")
        .expect("the bench runs");
    timeout(Duration::from_secs(10), demo.shutdown())
        .await
        .expect("the demo stops");
    assert_eq!(outcome, Outcome::Complete);

    assert!(std::fs::read_to_string(out.join(bench::CHART_FILE))
        .unwrap()
        .starts_with("<svg"));
    let report = results(&out);
    let regions = report["regions"].as_array().unwrap();
    assert_eq!(regions.len(), 3, "{report}");
    for region in regions {
        let name = region["region"].as_str().unwrap();
        assert!(region["requests"].as_u64().unwrap() > 0, "{name}: {region}");
        assert!(
            region["hit_ratio"].as_f64().unwrap() > 0.0,
            "{name}: {region}"
        );
        // DNS steering sent each region's clients to its own edge.
        assert_eq!(region["edges"][0].as_str().unwrap(), format!("{name}-1"));
    }
    // ap's edge reaches its shields in us (80 ms one way) or eu (110 ms): a miss there pays
    // at least a 160 ms round trip; a hit anywhere pays the local link only (1 ms each way).
    let ap = regions.iter().find(|r| r["region"] == "ap").unwrap();
    let ap_miss = summary(ap, "miss_latency_ms", "p50");
    assert!(ap_miss >= 160.0, "ap miss p50 {ap_miss} ms");
    // Its tail is those misses: its slowest requests, slowest first, are the max, each with
    // the path asked and who had the object.
    let slowest = ap["slowest"].as_array().unwrap();
    assert!(!slowest.is_empty(), "{ap}");
    assert_eq!(slowest[0]["ms"], ap["latency_ms"]["max"], "{ap}");
    assert!(slowest
        .windows(2)
        .all(|w| w[0]["ms"].as_f64() >= w[1]["ms"].as_f64()));
    for request in slowest {
        assert!(
            request["path"].as_str().unwrap().starts_with('/'),
            "{request}"
        );
        assert!(
            ["edge", "shield", "origin", "upstream"]
                .contains(&request["served_by"].as_str().unwrap()),
            "{request}"
        );
    }
    assert_ne!(slowest[0]["served_by"], "edge", "{ap}");
    for region in regions {
        let hit = summary(region, "hit_latency_ms", "p50");
        assert!(
            hit < 80.0 && hit < ap_miss,
            "{}: hit p50 {hit} ms",
            region["region"]
        );
    }
    let origin = &report["origin"];
    assert_eq!(origin["source"], "origin-stats", "{report}");
    let purges = &report["purges"];
    if purges["completed"].as_u64().unwrap() > 0 {
        assert!(summary(purges, "to_everywhere_ms", "p50") > 0.0, "{purges}");
    }
}

/// A state whose only edge listens nowhere (port 1 on loopback refuses connections).
fn dead_state() -> DemoState {
    serde_json::from_str(
        r#"{"hostname": "cdn.verge.test", "dns": "127.0.0.1:9", "steering": "http://127.0.0.1:9",
            "control": {"api": "http://127.0.0.1:9", "admin": "http://127.0.0.1:9", "token": "t"},
            "origin": "http://127.0.0.1:9",
            "nodes": [{"role": "edge", "id": "us-1", "region": "us", "http": "http://127.0.0.1:1", "admin": "http://127.0.0.1:9"}],
            "regions": [{"id": "us", "block": "127.0.0.0/8", "client_addr": "127.0.0.1"},
                        {"id": "eu", "block": "127.2.0.0/16", "client_addr": "127.2.200.1"}],
            "samples": ["/a", "/b"]}"#,
    )
    .expect("a valid state")
}

fn dead_command(dir: &Path, duration: &str) -> BenchCommand {
    let state_file = dir.join("state.json");
    dead_state()
        .write_to(&state_file)
        .expect("the state file is written");
    BenchCommand {
        state: Some(state_file),
        workload: WorkloadArgs {
            duration: duration.into(),
            warmup: "0s".into(),
            steering: "none".into(),
            timeout: "1s".into(),
            ..WorkloadArgs::default()
        },
        out: dir.join("out"),
        baseline: false,
        progress: false,
        faults: Vec::new(),
        demo: verge_demo::DemoOptions::default(),
    }
}

#[tokio::test]
async fn a_target_that_does_not_answer_is_named_and_the_results_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let command = dead_command(dir.path(), "300ms");
    let out = command.out.clone();
    let (_stop_tx, stop) = watch::channel(false);
    let outcome = timeout(Duration::from_secs(10), bench::command(command, stop))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome, Outcome::Failed);
    let report = results(&out);
    let us = &report["regions"][0];
    assert_eq!(us["requests"], 0);
    let example = us["error_kinds"][0]["example"].as_str().unwrap();
    assert!(
        example.contains("edge us-1 (http://127.0.0.1:1) does not answer"),
        "{example}"
    );
    assert_eq!(us["silent_edges"][0], "edge us-1 (http://127.0.0.1:1)");
    let eu = &report["regions"][1];
    assert!(
        eu["failure"]
            .as_str()
            .unwrap()
            .contains("no edge in region eu"),
        "{eu}"
    );
    assert!(out.join(bench::CHART_FILE).exists());
}

#[tokio::test]
async fn stopping_a_run_keeps_what_was_measured() {
    let dir = tempfile::tempdir().unwrap();
    let command = dead_command(dir.path(), "60s");
    let out = command.out.clone();
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = stop_tx.send(true);
        // Keep the sender until the run has seen it.
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let started = std::time::Instant::now();
    let outcome = timeout(Duration::from_secs(10), bench::command(command, stop))
        .await
        .expect("a stopped run ends at once")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    // The dead edge makes it a failure; the point is that it ended early, with its files.
    assert_eq!(outcome, Outcome::Failed);
    let report = results(&out);
    assert_eq!(report["interrupted"], true, "{report}");
    assert!(report["measured_seconds"].as_f64().unwrap() < 5.0);
    assert!(report["regions"][0]["errors"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn invalid_parameters_are_rejected_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = dead_command(dir.path(), "1s");
    command.workload.zipf = -2.0;
    command.workload.concurrency = 0;
    command.workload.steering = "carrier-pigeon".into();
    let out = command.out.clone();
    let (_stop_tx, stop) = watch::channel(false);
    let error = bench::command(command, stop).await.unwrap_err();
    for flag in ["--zipf", "--concurrency", "--steering"] {
        assert!(error.contains(flag), "{flag}: {error}");
    }
    assert!(!out.exists(), "nothing was started or written");

    let mut too_many = dead_command(dir.path(), "1s");
    too_many.workload.objects = Some(3);
    let (_stop_tx, stop) = watch::channel(false);
    let error = bench::command(too_many, stop).await.unwrap_err();
    assert!(error.contains("only 2 sample paths"), "{error}");
}
