//! `verge control` and `verge purge` as a user runs them: the real binary, a control process
//! started from the command line, an edge registered with it, and purges from the CLI.

use verge_testkit as support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::control::{node_control_tweaks, TOKEN};
use support::{start_edge, wait_until, FakeOrigin, HttpClient, Reply};

/// A `verge control` child process, killed when dropped.
struct ControlProcess {
    child: Child,
    nodes: String,
    admin: String,
    _dir: tempfile::TempDir,
}

impl Drop for ControlProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `verge control` with the quick-start flags on free ports and reads the addresses it
/// logs.
fn start_control_process() -> ControlProcess {
    let dir = tempfile::TempDir::new().expect("test setup");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("test setup");
    let mut child = Command::new(env!("CARGO_BIN_EXE_verge"))
        .args([
            "control",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--token-file")
        .arg(&token_file)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("test setup");
    let stderr = child.stderr.take().expect("test setup");
    // Owned from here, so the process is stopped however this function ends.
    let mut process = ControlProcess {
        nodes: String::new(),
        admin: String::new(),
        child,
        _dir: dir,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("control serving") {
                let _ = tx.send(line);
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("verge control logs its addresses");
    // Its stderr is a pipe, not a terminal: plain text, no colour codes.
    assert!(!line.contains('\x1b'), "{line:?}");
    let field = |name: &str| {
        let start = line.find(&format!("{name}=")).expect("test setup") + name.len() + 1;
        line[start..]
            .split_whitespace()
            .next()
            .expect("address after the field name")
            .to_string()
    };
    process.nodes = format!("http://{}", field("nodes"));
    process.admin = format!("http://{}", field("admin"));
    process
}

fn verge(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_verge"))
        .args(args)
        .env_remove("VERGE_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("test setup");
    let started = Instant::now();
    while child.try_wait().expect("test setup").is_none() {
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("verge {args:?} still running after 20s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("test setup")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verge_purge_waits_until_the_edge_has_applied_it_and_reports_it() {
    let control = start_control_process();
    let origin = FakeOrigin::start().await;
    origin.on("/obj", Reply::ok("v1").cache_control("max-age=3600"));
    let mut tweaks = node_control_tweaks(&control.nodes);
    tweaks.push("edge.id = \"cli-edge\"".to_string());
    let tweaks: Vec<&str> = tweaks.iter().map(String::as_str).collect();
    let edge = start_edge(origin.addr(), &tweaks).await;
    wait_until(
        "the edge to hold its event stream",
        Duration::from_secs(10),
        || async { edge.metrics().await.value("verge_control_connected", &[]) == Some(1.0) },
    )
    .await;
    let get = || async {
        HttpClient::http1()
            .get_with(&edge.url("/obj"), &[("host", "www.example.test")])
            .await
            .text()
    };
    assert_eq!(get().await, "v1");
    origin.on("/obj", Reply::ok("v2").cache_control("max-age=3600"));

    let admin = control.admin.clone();
    let output = tokio::task::spawn_blocking(move || {
        verge(&[
            "purge",
            "--control",
            &admin,
            "--token",
            TOKEN,
            "--url",
            "http://www.example.test/obj",
        ])
    })
    .await
    .expect("test setup");
    let shown = text(&output);
    assert!(output.status.success(), "{shown}");
    assert!(shown.contains("purge 1 accepted"), "{shown}");
    assert!(shown.contains("cli-edge"), "{shown}");
    assert!(shown.contains("applied"), "{shown}");
    assert!(shown.contains("complete on every live node"), "{shown}");
    assert_eq!(get().await, "v2");
}

#[test]
fn verge_purge_refuses_bad_arguments_and_reports_a_wrong_token() {
    let control = start_control_process();
    let empty = verge(&["purge", "--control", &control.admin, "--token", TOKEN]);
    assert_eq!(empty.status.code(), Some(2), "{}", text(&empty));
    assert!(text(&empty).contains("empty purge"), "{}", text(&empty));

    let relative = verge(&[
        "purge",
        "--control",
        &control.admin,
        "--token",
        TOKEN,
        "--url",
        "/obj",
    ]);
    assert_eq!(relative.status.code(), Some(2));
    assert!(
        text(&relative).contains("not an absolute URL"),
        "{}",
        text(&relative)
    );

    let wrong = verge(&[
        "purge",
        "--control",
        &control.admin,
        "--token",
        "not-the-token-at-all",
        "--all",
    ]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(text(&wrong).contains("403"), "{}", text(&wrong));

    let nowhere = verge(&["purge", "--control", "ftp://x", "--token", TOKEN, "--all"]);
    assert_eq!(nowhere.status.code(), Some(2));
    assert!(
        text(&nowhere).contains("is not an admin URL"),
        "{}",
        text(&nowhere)
    );
}

#[test]
fn verge_control_without_a_token_file_or_data_dir_exits_2() {
    let output = verge(&["control", "--listen", "127.0.0.1:0"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let dir = tempfile::TempDir::new().expect("test setup");
    let short = dir.path().join("token");
    std::fs::write(&short, "short").expect("test setup");
    let output = verge(&[
        "control",
        "--token-file",
        short.to_str().expect("test setup"),
        "--data-dir",
        dir.path().to_str().expect("test setup"),
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        text(&output).contains("controller.token_file"),
        "{}",
        text(&output)
    );
}
