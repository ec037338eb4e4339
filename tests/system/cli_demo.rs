//! `verge demo` as a user runs it: the real binary writes its state file once everything is
//! ready, serves through the endpoints it lists, and stops cleanly on SIGTERM.

#![cfg(unix)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use verge_demo::state::DemoState;

/// A `verge demo` child process, killed when dropped.
struct DemoProcess(Child);

impl Drop for DemoProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl DemoProcess {
    /// Waits for the process to exit, at most `limit`.
    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let give_up = Instant::now() + limit;
        while Instant::now() < give_up {
            if let Some(status) = self.0.try_wait().expect("child status") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn output(&mut self) -> (String, String) {
        let mut out = String::new();
        let mut err = String::new();
        if let Some(stdout) = self.0.stdout.as_mut() {
            let _ = stdout.read_to_string(&mut out);
        }
        if let Some(stderr) = self.0.stderr.as_mut() {
            let _ = stderr.read_to_string(&mut err);
        }
        (out, err)
    }
}

/// Waits until `path` holds a state file, while the demo is running.
fn wait_state(demo: &mut DemoProcess, path: &Path) -> DemoState {
    let give_up = Instant::now() + Duration::from_secs(30);
    loop {
        if path.exists() {
            return DemoState::read_from(path).expect("a whole state file");
        }
        if let Some(status) = demo.0.try_wait().expect("child status") {
            let (out, err) = demo.output();
            panic!("verge demo exited ({status}) before writing its state:\n{out}\n{err}");
        }
        assert!(
            Instant::now() < give_up,
            "verge demo wrote no state within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `GET path` on `url` (`http://IP:PORT`) with `Host: host`; the status line.
fn status_line(url: &str, path: &str, host: &str) -> String {
    let addr = url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).expect("the listed endpoint accepts");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a read timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .expect("request sent");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.lines().next().unwrap_or_default().to_string()
}

#[test]
fn verge_demo_writes_its_state_serves_and_stops_on_sigterm() {
    let dir = tempfile::TempDir::new().unwrap();
    let state_path = dir.path().join("demo.json");
    let child = Command::new(env!("CARGO_BIN_EXE_verge"))
        .args(["demo", "--regions", "us,eu", "--edges-per-region", "1"])
        .arg("--state")
        .arg(&state_path)
        .arg("--log")
        .arg(dir.path().join("demo.log"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut demo = DemoProcess(child);
    let state = wait_state(&mut demo, &state_path);

    assert_eq!(state.hostname, "cdn.verge.test");
    assert!(state.dns.starts_with("127.0.0.1:"), "{}", state.dns);
    assert!(state.steering.starts_with("http://127.0.0.1:"));
    assert!(state.control.api.starts_with("http://"));
    assert!(state.control.token.len() >= 16);
    assert!(state.origin.starts_with("http://127.1.0.200:"));
    assert!(!state.samples.is_empty());
    let roles: Vec<(&str, &str, &str)> = state
        .nodes
        .iter()
        .map(|n| (n.role.as_str(), n.id.as_str(), n.region.as_str()))
        .collect();
    assert_eq!(
        roles,
        [
            ("shield", "shield-us-1", "us"),
            ("shield", "shield-eu-1", "eu"),
            ("edge", "us-1", "us"),
            ("edge", "eu-1", "eu"),
        ]
    );
    let eu = state.edges().find(|e| e.region == "eu").unwrap();
    assert!(eu.http.starts_with("http://127.2.0.1:"), "{}", eu.http);
    assert!(status_line(&eu.http, &state.samples[0], &state.hostname).contains(" 200 "));
    assert!(status_line(&eu.admin, "/healthz", "admin").contains(" 200 "));
    assert!(status_line(&state.control.admin, "/healthz", "admin").contains(" 200 "));

    let pid = demo.0.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let status = demo
        .wait_exit(Duration::from_secs(10))
        .expect("verge demo stops within 10 s of SIGTERM");
    let (out, err) = demo.output();
    assert!(status.success(), "{status}\n{out}\n{err}");
    assert!(out.contains("scrape_configs:"), "{out}");
    assert!(out.contains("Stopped."), "{out}");
    assert!(!state_path.exists(), "the state file outlived the demo");
    // `--log` (shared with `verge bench --log`): the nodes' own lines.
    let log = std::fs::read_to_string(dir.path().join("demo.log")).unwrap();
    assert!(log.contains("registered with control"), "{log}");
}

#[test]
fn verge_demo_refuses_unknown_regions() {
    let output = Command::new(env!("CARGO_BIN_EXE_verge"))
        .args(["demo", "--regions", "us,mars"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("mars") && err.contains("us, eu, ap"), "{err}");
}

#[test]
fn verge_demo_and_bench_refuse_unknown_topologies_impossible_levels_and_bad_origin_times() {
    let cases: [(&[&str], &str); 7] = [
        (
            &["demo", "--topology", "nearest"],
            "--topology: \"nearest\"",
        ),
        (
            &["bench", "--topology", "fastest"],
            "--topology: \"fastest\"",
        ),
        (
            &["demo", "--topology", "global", "--tier-levels", "2"],
            "2 tier levels need topology regional or auto",
        ),
        (
            &["bench", "--tier-levels", "3"],
            "tier levels must be 1 or 2",
        ),
        (
            &["demo", "--origin-time", "20ms/2ms"],
            "--origin-time \"20ms/2ms\": the median (20 ms) must not exceed",
        ),
        (
            &["bench", "--origin-time", "soon"],
            "--origin-time \"soon\": time: invalid value",
        ),
        (
            &["bench", "--state", "demo.json", "--origin-time", "5ms"],
            "--origin-time shapes the in-process demo",
        ),
    ];
    for (args, want) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_verge"))
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn verge_bench_lists_every_bad_flag_at_once() {
    let output = Command::new(env!("CARGO_BIN_EXE_verge"))
        .args([
            "bench",
            "--rate=-3",
            "--fault",
            "kill:nowhere@1s",
            "--origin-time",
            "soon",
            "--topology",
            "fastest",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{err}");
    for want in [
        "--rate -3",
        "unknown part \"nowhere\"",
        "--origin-time \"soon\"",
        "--topology: \"fastest\"",
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }
}
