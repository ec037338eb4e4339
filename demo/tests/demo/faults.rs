//! `verge bench --fault`: parts of the in-process demo killed and restored during the measured
//! part, reported per phase and per second; bad plans refused before anything starts.

use std::path::Path;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::timeout;
use verge_demo::bench::{self, BenchCommand, Outcome, WorkloadArgs};

fn command(out: &Path, faults: &[&str]) -> BenchCommand {
    BenchCommand {
        state: None,
        workload: WorkloadArgs {
            objects: Some(8),
            concurrency: 2,
            duration: "3s".into(),
            warmup: "1s".into(),
            timeout: "2s".into(),
            ..WorkloadArgs::default()
        },
        out: out.to_path_buf(),
        baseline: false,
        progress: false,
        faults: faults.iter().map(|f| f.to_string()).collect(),
        demo: verge_demo::DemoOptions::default(),
    }
}

fn results(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join(bench::RESULTS_FILE)).expect("results.json");
    serde_json::from_str(&text).expect("results.json is JSON")
}

// Every kind of part in one demo: a shield, an edge, control and the origin go down together
// and come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_restored_parts_are_reported_by_phase_and_by_second() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let faults = [
        "kill:shield-us-1@500ms,kill:us-1@500ms",
        "kill:control@600ms,kill:origin@600ms",
        "restore:shield-us-1@2s,restore:us-1@2s,restore:control@2s,restore:origin@2s",
    ];
    let (_stop_tx, stop) = watch::channel(false);
    let outcome = timeout(
        Duration::from_secs(60),
        bench::command(command(&out, &faults), stop),
    )
    .await
    .expect("the bench ends on time")
    .expect("the bench runs");
    let report = results(&out);
    assert_eq!(outcome, Outcome::Complete, "{report}");

    let applied = report["faults"].as_array().unwrap();
    let shown: Vec<String> = applied
        .iter()
        .map(|f| {
            format!(
                "{}:{}",
                f["action"].as_str().unwrap(),
                f["part"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            "kill:shield-us-1",
            "kill:us-1",
            "kill:control",
            "kill:origin",
            "restore:shield-us-1",
            "restore:us-1",
            "restore:control",
            "restore:origin"
        ]
    );
    for fault in applied {
        assert!(fault["error"].is_null(), "{fault}");
        assert!(fault["at_s"].as_f64().unwrap() >= fault["planned_s"].as_f64().unwrap());
    }

    for region in report["regions"].as_array().unwrap() {
        let name = region["region"].as_str().unwrap();
        let phases: Vec<&str> = region["phases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["phase"].as_str().unwrap())
            .collect();
        assert_eq!(phases, ["before", "during", "after"], "{name}");
        for phase in region["phases"].as_array().unwrap() {
            let errors = phase["errors"].as_u64().unwrap();
            let split = phase["errors_on_hits"].as_u64().unwrap()
                + phase["errors_on_misses"].as_u64().unwrap();
            assert_eq!(errors, split, "{name}: {phase}");
        }
        let before = &region["phases"][0];
        assert!(before["requests"].as_u64().unwrap() > 0, "{name}: {before}");
        assert_eq!(before["errors"], 0, "{name}: {before}");
        let seconds = region["timeline"].as_array().unwrap();
        assert_eq!(seconds.len(), 3, "{name}: {seconds:?}");
        assert!(
            seconds.iter().all(|s| s["requests"].as_u64().unwrap() > 0),
            "{name}"
        );
    }

    // us's clients of us-1 saw it fail, moved to us-2 soon after, and came back.
    let us = &report["regions"][0];
    assert_eq!(us["region"], "us");
    let during = &us["phases"][1];
    assert!(during["errors"].as_u64().unwrap() > 0, "{during}");
    let moved = &us["moved_away"][0];
    assert_eq!(moved["edge"], "us-1", "{us}");
    let after_ms = moved["stopped_after_ms"].as_f64().unwrap();
    assert!(
        after_ms < 1000.0,
        "stopped sending to us-1 {after_ms} ms after its kill"
    );
    assert!(us["phases"][2]["requests"].as_u64().unwrap() > 0);

    // The origin was restored, counting on from the killed one's count: the run still has one.
    assert!(
        report["origin"]["requests"].is_u64(),
        "{}",
        report["origin"]
    );

    let timeline = std::fs::read_to_string(out.join(bench::TIMELINE_FILE)).unwrap();
    assert!(timeline.starts_with("<svg"), "{timeline}");
}

#[tokio::test]
async fn bad_fault_plans_are_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    for (faults, want) in [
        (&["kill:mars-1@1s"][..], "unknown part \"mars-1\""),
        (&["explode:us-1@1s"], "unknown action"),
        (&["kill:us-1@later"], "bad time"),
        (&["kill:us-1@4s"], "past the end"),
        (&["restore:origin@1s"], "without an earlier kill"),
        (&["kill:control@1s", "kill:control@2s"], "already killed"),
    ] {
        let (_stop_tx, stop) = watch::channel(false);
        let started = std::time::Instant::now();
        let error = bench::command(command(&out, faults), stop)
            .await
            .unwrap_err();
        assert!(error.contains(want), "{faults:?}: {error}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "no demo was started"
        );
    }
    let mut with_state = command(&out, &["kill:us-1@1s"]);
    with_state.state = Some(dir.path().join("state.json"));
    let (_stop_tx, stop) = watch::channel(false);
    let error = bench::command(with_state, stop).await.unwrap_err();
    assert!(error.contains("--state"), "{error}");
    assert!(!out.exists(), "nothing was written");
}
