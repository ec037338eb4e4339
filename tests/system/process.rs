//! The real `verge` binary as a child process, for the `cli_*` tests: its log captured, the
//! values it logs read back, signals sent, health and exit awaited.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Bound on a process start and on every wait here.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A child process running the real `verge` binary, killed when dropped; its stderr is kept
/// for assertions and failure messages.
pub struct VergeProcess {
    child: Child,
    log: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Drop for VergeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl VergeProcess {
    pub fn spawn(args: &[&str]) -> VergeProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_verge"))
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("NO_COLOR")
            .env_remove("VERGE_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&log);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        VergeProcess {
            child,
            log,
            reader: Some(reader),
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The value of `key=` on the first log line containing `marker`, once it is logged.
    pub fn logged(&mut self, marker: &str, key: &str) -> String {
        let give_up = Instant::now() + DEADLINE;
        loop {
            let log = self.log();
            let value = log
                .lines()
                .filter(|line| line.contains(marker))
                .find_map(|line| line.split_whitespace().find_map(|w| w.strip_prefix(key)));
            if let Some(value) = value {
                return value.trim_matches('"').to_string();
            }
            if let Some(status) = self.exited() {
                panic!("exited with {status} before logging {key}:\n{}", self.log());
            }
            assert!(Instant::now() < give_up, "no {key} logged:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGHUP.
    pub fn hangup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -HUP {}", self.child.id());
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status once the process has exited (its log is then whole).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.try_wait().unwrap()?;
        // The process is gone, so its stderr is closed: the reader ends at once.
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        Some(status)
    }

    /// Waits for the process to exit, at most `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let give_up = Instant::now() + limit;
        while Instant::now() < give_up {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }

    /// Waits until `GET url` answers 200; `Err` with the log if the process exits first.
    pub async fn wait_healthy(&mut self, url: &str) -> Result<(), String> {
        let give_up = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.exited() {
                return Err(format!("exited with {status}:\n{}", self.log()));
            }
            if get_status(url).await == Ok(200) {
                return Ok(());
            }
            assert!(
                Instant::now() < give_up,
                "{url} not healthy within {DEADLINE:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// One GET on a new client; the status, or why there is none (never panics).
pub async fn get_status(url: &str) -> Result<u16, String> {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let request = async {
        let response = client
            .get(url.parse().map_err(|e| format!("{e}"))?)
            .await
            .map_err(|e| format!("{e:?}"))?;
        let status = response.status().as_u16();
        response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{e:?}"))?;
        Ok(status)
    };
    tokio::time::timeout(Duration::from_secs(5), request)
        .await
        .map_err(|_| format!("GET {url}: no answer within 5s"))?
}
