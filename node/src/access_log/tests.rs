use std::io::{self, Write};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use http::StatusCode;
use verge_config::{AccessLogFormat, AccessLogTarget};

use super::*;

const WAIT: Duration = Duration::from_secs(10);

fn counters() -> Counters {
    Counters {
        lines: IntCounter::new("lines", "lines").unwrap(),
        dropped: IntCounter::new("dropped", "dropped").unwrap(),
    }
}

fn context() -> LineContext {
    LineContext::new(AccessLogFormat::Json, "edge-1", "us")
}

fn record(path: &str) -> Record {
    let request = Request::get(path).body(()).unwrap();
    let log = AccessLog {
        sink: ArcSwapOption::empty(),
        trust_request_id: AtomicBool::new(false),
        node_id: "edge-1".into(),
        region: "us".into(),
        counters: counters(),
    };
    let (queue, _receiver) = mpsc::channel(1);
    log.commit(Some(Arc::new(Sink {
        queue,
        sample: 1.0,
        reopen: Arc::default(),
        counters: counters(),
    })));
    let client = "127.0.0.1:1".parse().unwrap();
    let id = HeaderValue::from_static("id");
    log.begin(&request, client, Instant::now(), &id)
        .unwrap()
        .record
}

/// A writer whose first write waits until the test lets it go, saying when it started.
struct PausedWriter {
    entered: Option<std_mpsc::Sender<()>>,
    release: std_mpsc::Receiver<()>,
    written: Vec<u8>,
}

impl Write for PausedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(entered) = self.entered.take() {
            entered.send(()).unwrap();
            self.release.recv().unwrap();
        }
        self.written.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A disk that is full.
struct FullDisk;

impl Write for FullDisk {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::from_raw_os_error(28))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A writer thread to `destination` with a queue of `bound` lines.
fn writer(destination: Destination, bound: usize) -> (Sink, std::thread::JoinHandle<()>, Counters) {
    let counters = counters();
    let (queue, receiver) = mpsc::channel(bound);
    let handle = Writer {
        queue: receiver,
        destination,
        context: context(),
        counters: counters.clone(),
        reopen: Arc::default(),
    }
    .spawn()
    .unwrap();
    let sink = Sink {
        queue,
        sample: 1.0,
        reopen: Arc::default(),
        counters: counters.clone(),
    };
    (sink, handle, counters)
}

#[test]
fn a_full_queue_drops_and_counts_lines_instead_of_waiting() {
    let (entered_tx, entered) = std_mpsc::channel();
    let (release, release_rx) = std_mpsc::channel();
    let out = PausedWriter {
        entered: Some(entered_tx),
        release: release_rx,
        written: Vec::new(),
    };
    let (sink, handle, counters) = writer(Destination::custom(Box::new(out)), 1);
    sink.send(record("/1"));
    entered
        .recv_timeout(WAIT)
        .expect("the writer took the first line");
    // The writer is stuck in its write: one more line fits in the queue, the next does not.
    sink.send(record("/2"));
    sink.send(record("/3"));
    sink.send(record("/4"));
    assert_eq!(
        counters.dropped.get(),
        2,
        "lines past the bound are dropped"
    );
    release.send(()).unwrap();
    drop(sink);
    handle.join().unwrap();
    assert_eq!((counters.lines.get(), counters.dropped.get()), (2, 2));
}

#[test]
fn a_failed_write_drops_and_counts_its_lines() {
    let (sink, handle, counters) = writer(Destination::custom(Box::new(FullDisk)), 16);
    for path in ["/1", "/2", "/3"] {
        sink.send(record(path));
    }
    drop(sink);
    handle.join().unwrap();
    assert_eq!((counters.lines.get(), counters.dropped.get()), (0, 3));
}

#[test]
fn lines_are_written_one_per_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let destination = Destination::open(&AccessLogTarget::File(path.clone())).unwrap();
    let (sink, handle, counters) = writer(destination, 16);
    sink.send(record("/a?b=c"));
    sink.send(record("/d"));
    drop(sink);
    handle.join().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let paths: Vec<String> = text
        .lines()
        .map(|line| {
            let json: serde_json::Value = serde_json::from_str(line).unwrap();
            json["path"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(paths, ["/a?b=c", "/d"]);
    assert_eq!(counters.lines.get(), 2);
}

#[test]
fn a_path_that_cannot_be_opened_is_named() {
    let target = AccessLogTarget::File("/nonexistent-dir/verge/access.log".into());
    let Err(error) = Destination::open(&target) else {
        panic!("opened a file in a missing directory");
    };
    assert!(
        error.contains("/nonexistent-dir/verge/access.log"),
        "{error}"
    );
}

/// A pending line over a sink that is never read.
fn pending(sampled: bool) -> Pending {
    let (queue, _receiver) = mpsc::channel(1);
    Pending {
        sink: Arc::new(Sink {
            queue,
            sample: 0.0,
            reopen: Arc::default(),
            counters: counters(),
        }),
        sampled,
        started: Instant::now(),
        record: record("/"),
    }
}

fn answer(status: StatusCode) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::empty());
    *response.status_mut() = status;
    response
}

fn is_logged(response: &Response<ResponseBody>) -> bool {
    matches!(response.body(), ResponseBody::Logged(_))
}

#[test]
fn a_request_not_sampled_is_logged_only_when_it_failed() {
    let hit = pending(false).attach(answer(StatusCode::OK), RequestOutcome::Hit, false, None);
    assert!(!is_logged(&hit));
    let relayed = pending(false).attach(
        answer(StatusCode::BAD_GATEWAY),
        RequestOutcome::Miss,
        false,
        None,
    );
    assert!(is_logged(&relayed), "a 5xx is always logged");
    let own = pending(false).attach(
        answer(StatusCode::GATEWAY_TIMEOUT),
        RequestOutcome::Error,
        true,
        None,
    );
    assert!(is_logged(&own));
    let sampled = pending(true).attach(answer(StatusCode::OK), RequestOutcome::Hit, false, None);
    assert!(is_logged(&sampled));
}
