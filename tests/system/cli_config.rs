//! The `verge` binary and configuration files: every error is reported by its key path and an
//! invalid file exits 2 without starting anything; the shipped example is valid.

// A panic is how a test fails: unwrapping is the point here.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A file with several independent mistakes, one per section.
const BAD_CONFIG: &str = r#"
[edge]
id = "bad id"

[server]
listen = "nowhere"

[cache]
max_bytes = "lots"

[upstream]
origin = "ftp://origin.example"
response_timeout = "soon"
"#;

const BAD_KEYS: [&str; 5] = [
    "edge.id",
    "server.listen",
    "cache.max_bytes",
    "upstream.origin",
    "upstream.response_timeout",
];

/// A file in the temp directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> TempFile {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let path =
            std::env::temp_dir().join(format!("verge-test-{}-{nanos}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs `verge` with `args`; kills it and fails if it runs longer than 10 s.
fn verge(args: &[&std::ffi::OsStr]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_verge"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "verge {args:?} still running after 10s; stderr:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

fn all_output(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs `verge` with `args` and then `file`: its exit code and everything it printed.
fn verge_on(args: &[&str], file: &Path) -> (Option<i32>, String) {
    let mut all: Vec<&std::ffi::OsStr> = args.iter().map(|arg| arg.as_ref()).collect();
    all.push(file.as_os_str());
    let output = verge(&all);
    (output.status.code(), all_output(&output))
}

/// Asserts that `text` names every one of `keys`.
fn assert_names_every(text: &str, keys: &[&str]) {
    for key in keys {
        assert!(text.contains(key), "{key} is not named in:\n{text}");
    }
}

/// Asserts that `check-config` finds the example shipped for `role` in `config/examples`
/// valid.
fn assert_shipped_example_is_valid(role: &str) {
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("config/examples/{role}.toml"));
    let (code, text) = verge_on(&["check-config"], &example);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!("valid {role} configuration")),
        "{text}"
    );
}

#[test]
fn check_config_on_a_bad_file_exits_2_and_names_every_key() {
    let file = TempFile::new("bad.toml", BAD_CONFIG);
    let (code, text) = verge_on(&["check-config"], file.path());
    assert_eq!(code, Some(2), "{text}");
    assert_names_every(&text, &BAD_KEYS);
    assert!(
        text.contains(&file.path().display().to_string()),
        "the file is named: {text}"
    );
}

#[test]
fn check_config_names_an_unknown_key() {
    let file = TempFile::new(
        "unknown.toml",
        "[edge]\nid = \"e\"\n[cache]\nmax_byte = \"1MiB\"\n[upstream]\norigin = \"http://127.0.0.1:8000\"\n",
    );
    let (code, text) = verge_on(&["check-config"], file.path());
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("max_byte"), "{text}");
}

#[test]
fn check_config_accepts_the_shipped_example() {
    assert_shipped_example_is_valid("edge");
}

#[test]
fn check_config_on_a_missing_file_exits_2() {
    let missing = std::env::temp_dir().join(format!(
        "verge-test-{}-does-not-exist.toml",
        std::process::id()
    ));
    let (code, text) = verge_on(&["check-config"], &missing);
    assert_eq!(code, Some(2), "{text}");
}

#[test]
fn edge_with_a_bad_config_exits_2_without_serving() {
    let file = TempFile::new("bad-edge.toml", BAD_CONFIG);
    let (code, text) = verge_on(&["edge", "--config"], file.path());
    assert_eq!(code, Some(2), "{text}");
    assert_names_every(&text, &BAD_KEYS);
}

#[test]
fn check_config_accepts_the_shipped_shield_example() {
    assert_shipped_example_is_valid("shield");
}

#[test]
fn shield_with_a_bad_config_exits_2_and_names_every_key() {
    let file = TempFile::new(
        "bad-shield.toml",
        "[shield]\nid = \"bad id\"\n[origin]\nservers = [\"ftp://x\"]\nretries = 99\n",
    );
    let (code, text) = verge_on(&["shield", "--config"], file.path());
    assert_eq!(code, Some(2), "{text}");
    assert_names_every(&text, &["shield.id", "origin.servers[0]", "origin.retries"]);
}
