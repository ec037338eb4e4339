use std::fs::{self, OpenOptions};
use std::io::Write;

use tempfile::TempDir;

use super::file::{crc32c, decode_line, encode_line};
use super::*;

fn url_purge(i: usize) -> PurgeSpec {
    PurgeSpec {
        urls: vec![format!("http://a.test/{i}")],
        ..PurgeSpec::default()
    }
}

async fn append_n(log: &PurgeLog, n: usize) -> Vec<LogRecord> {
    let mut records = Vec::new();
    for i in 0..n {
        records.push(log.append(url_purge(i), 1_000 + i as u64).await.unwrap());
    }
    records
}

fn all_records(log: &PurgeLog) -> Vec<LogRecord> {
    match log.since(0, usize::MAX) {
        Since::Records(records) => records,
        Since::Gone { first_retained } => {
            // The start was compacted away: read from the first record held.
            match log.since(first_retained - 1, usize::MAX) {
                Since::Records(records) => records,
                gone => panic!("{gone:?}"),
            }
        }
    }
}

fn file_lines(dir: &TempDir) -> usize {
    fs::read_to_string(dir.path().join(FILE_NAME))
        .unwrap()
        .lines()
        .count()
}

fn append_raw(dir: &TempDir, bytes: &[u8]) {
    let mut file = OpenOptions::new()
        .append(true)
        .open(dir.path().join(FILE_NAME))
        .unwrap();
    file.write_all(bytes).unwrap();
}

#[test]
fn crc32c_matches_the_standard_check_value() {
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    assert_eq!(crc32c(b""), 0);
}

#[test]
fn lines_round_trip_and_damage_is_detected() {
    let record = LogRecord {
        seq: 3,
        accepted_at_ms: 42,
        spec: PurgeSpec {
            tags: vec!["t\n1".into()],
            soft: true,
            ..PurgeSpec::default()
        },
    };
    let mut line = Vec::new();
    encode_line(&record, &mut line).unwrap();
    assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
    let body = &line[..line.len() - 1];
    assert_eq!(decode_line(body).unwrap(), record);

    let mut flipped = body.to_vec();
    let last = flipped.len() - 2;
    flipped[last] ^= 1;
    assert!(decode_line(&flipped).unwrap_err().contains("checksum"));
    assert!(decode_line(b"").is_err());
    assert!(decode_line(b"zzzzzzzz {}").is_err());
    assert!(decode_line(&[0xff, 0xfe]).is_err());
}

#[tokio::test]
async fn sequence_numbers_continue_after_reopen() {
    let dir = TempDir::new().unwrap();
    let log = PurgeLog::open(dir.path(), 100).await.unwrap();
    assert_eq!((log.head(), log.first_retained(), log.len()), (0, 1, 0));
    let seqs: Vec<u64> = append_n(&log, 3).await.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
    drop(log);

    let log = PurgeLog::open(dir.path(), 100).await.unwrap();
    assert_eq!(log.head(), 3);
    assert_eq!(log.append(url_purge(9), 5).await.unwrap().seq, 4);
    assert_eq!(log.head(), 4);
}

#[tokio::test]
async fn records_survive_reopen_exactly() {
    let dir = TempDir::new().unwrap();
    let log = PurgeLog::open(dir.path(), 100).await.unwrap();
    let specs = [
        url_purge(1),
        PurgeSpec {
            prefixes: vec!["http://a.test/img/".into()],
            soft: true,
            ..PurgeSpec::default()
        },
        PurgeSpec {
            tags: vec!["product-7".into(), "ünïcödé".into()],
            ..PurgeSpec::default()
        },
        PurgeSpec {
            all: true,
            ..PurgeSpec::default()
        },
    ];
    let mut written = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        written.push(
            log.append(spec.clone(), 1_700_000_000_000 + i as u64)
                .await
                .unwrap(),
        );
    }
    assert_eq!(all_records(&log), written);
    drop(log);

    let log = PurgeLog::open(dir.path(), 100).await.unwrap();
    assert_eq!(all_records(&log), written);
    assert_eq!(log.get(2), Some(written[1].clone()));
    assert_eq!(log.get(2).unwrap().spec, specs[1]);
    assert_eq!(log.get(0), None);
    assert_eq!(log.get(5), None);
}

#[tokio::test]
async fn a_torn_tail_is_dropped_and_appends_continue() {
    let tails: [&[u8]; 4] = [
        // Half a line: the start of a record, no line end.
        b"3b1c2d4e {\"seq\":4,\"accepted_at_ms\":1,\"sp",
        // Zeros, as some file systems leave after a crash.
        &[0; 37],
        // A whole line whose checksum does not match.
        b"00000000 {\"seq\":4,\"accepted_at_ms\":1,\"spec\":{\"all\":true}}\n",
        // Two damaged lines.
        b"garbage\nmore garbage",
    ];
    for tail in tails {
        let dir = TempDir::new().unwrap();
        let log = PurgeLog::open(dir.path(), 100).await.unwrap();
        let mut written = append_n(&log, 3).await;
        drop(log);
        let intact_len = fs::metadata(dir.path().join(FILE_NAME)).unwrap().len();
        append_raw(&dir, tail);

        let log = PurgeLog::open(dir.path(), 100).await.unwrap();
        assert_eq!(log.head(), 3, "tail {tail:?}");
        assert_eq!(all_records(&log), written);
        let len = fs::metadata(dir.path().join(FILE_NAME)).unwrap().len();
        assert_eq!(
            len, intact_len,
            "the file is truncated to the last intact record"
        );
        written.push(log.append(url_purge(4), 9).await.unwrap());
        assert_eq!(written[3].seq, 4);
        drop(log);

        let log = PurgeLog::open(dir.path(), 100).await.unwrap();
        assert_eq!(all_records(&log), written, "tail {tail:?}");
    }
}

/// Writes `records` records to a log in `dir` and closes it: the file's path and text.
async fn closed_log_of(dir: &TempDir, records: usize) -> (std::path::PathBuf, String) {
    let log = PurgeLog::open(dir.path(), 100).await.unwrap();
    append_n(&log, records).await;
    drop(log);
    let path = dir.path().join(FILE_NAME);
    let text = fs::read_to_string(&path).unwrap();
    (path, text)
}

#[tokio::test]
async fn a_corrupt_line_in_the_middle_is_an_error_naming_it() {
    let dir = TempDir::new().unwrap();
    let (path, text) = closed_log_of(&dir, 3).await;
    let damaged = text.replacen("a.test/1", "a.test/X", 1);
    assert_ne!(damaged, text);
    fs::write(&path, damaged).unwrap();

    let error = PurgeLog::open(dir.path(), 100).await.unwrap_err();
    assert!(
        matches!(error, LogError::Corrupt { line: 2, .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("line 2"), "{message}");
    assert!(message.contains("checksum mismatch"), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");
}

#[tokio::test]
async fn records_out_of_sequence_are_an_error() {
    let dir = TempDir::new().unwrap();
    let (path, text) = closed_log_of(&dir, 2).await;
    let second = text.lines().nth(1).unwrap().to_string();
    // Line 3 repeats line 2: intact, but not the next sequence number.
    fs::write(&path, format!("{text}{second}\n")).unwrap();

    let error = PurgeLog::open(dir.path(), 100).await.unwrap_err();
    assert!(
        matches!(error, LogError::Corrupt { line: 3, .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("sequence number 2 follows 2"),
        "{error}"
    );
}

#[tokio::test]
async fn since_returns_what_follows_or_says_it_is_gone() {
    let dir = TempDir::new().unwrap();
    let log = PurgeLog::open(dir.path(), 100).await.unwrap();
    assert_eq!(log.since(0, 10), Since::Records(vec![]));
    assert_eq!(log.since(1, 10), Since::Gone { first_retained: 1 });
    let written = append_n(&log, 5).await;

    assert_eq!(log.since(0, 10), Since::Records(written.clone()));
    assert_eq!(log.since(2, 10), Since::Records(written[2..].to_vec()));
    assert_eq!(log.since(2, 2), Since::Records(written[2..4].to_vec()));
    assert_eq!(log.since(2, 0), Since::Records(vec![]));
    // Up to date.
    assert_eq!(log.since(5, 10), Since::Records(vec![]));
    // Ahead of the log (control lost its data directory, say).
    assert_eq!(log.since(6, 10), Since::Gone { first_retained: 1 });
    assert_eq!(log.since(u64::MAX, 10), Since::Gone { first_retained: 1 });
}

#[tokio::test]
async fn since_is_gone_once_compaction_dropped_what_follows() {
    let dir = TempDir::new().unwrap();
    let log = PurgeLog::open(dir.path(), 3).await.unwrap();
    let written = append_n(&log, 7).await;
    assert_eq!(log.first_retained(), 5);
    assert_eq!(log.len(), 3);

    assert_eq!(log.since(0, 10), Since::Gone { first_retained: 5 });
    assert_eq!(log.since(3, 10), Since::Gone { first_retained: 5 });
    assert_eq!(log.since(4, 10), Since::Records(written[4..].to_vec()));
    assert_eq!(log.since(7, 10), Since::Records(vec![]));
    assert_eq!(log.get(4), None);
    assert_eq!(log.get(5), Some(written[4].clone()));
}

#[tokio::test]
async fn compaction_keeps_the_last_retain_records_and_shrinks_the_file() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join(FILE_NAME);
    let log = PurgeLog::open(dir.path(), 5).await.unwrap();
    let mut written = append_n(&log, 10).await;
    // Twice `retain`: not compacted yet, but only `retain` held in memory.
    assert_eq!(file_lines(&dir), 10);
    assert_eq!(log.len(), 5);
    let full = fs::metadata(&path).unwrap().len();

    written.push(log.append(url_purge(10), 7).await.unwrap());
    assert_eq!(file_lines(&dir), 5);
    assert!(fs::metadata(&path).unwrap().len() < full);
    assert!(!dir.path().join(TMP_FILE_NAME).exists());
    assert_eq!((log.head(), log.first_retained()), (11, 7));
    assert_eq!(all_records(&log), written[6..]);

    // Appends go to the compacted file, and everything survives a restart.
    written.push(log.append(url_purge(11), 8).await.unwrap());
    assert_eq!(file_lines(&dir), 6);
    drop(log);
    let log = PurgeLog::open(dir.path(), 5).await.unwrap();
    assert_eq!((log.head(), log.first_retained()), (12, 8));
    assert_eq!(all_records(&log), written[7..]);
    assert_eq!(log.append(url_purge(12), 9).await.unwrap().seq, 13);
}

#[tokio::test]
async fn reopening_with_a_smaller_retain_compacts_at_once() {
    let dir = TempDir::new().unwrap();
    let log = PurgeLog::open(dir.path(), 100).await.unwrap();
    let written = append_n(&log, 30).await;
    drop(log);

    let log = PurgeLog::open(dir.path(), 4).await.unwrap();
    assert_eq!(file_lines(&dir), 4);
    assert_eq!((log.head(), log.first_retained(), log.len()), (30, 27, 4));
    assert_eq!(all_records(&log), written[26..]);
}

#[tokio::test]
async fn a_leftover_temp_file_is_removed() {
    let dir = TempDir::new().unwrap();
    fs::write(dir.path().join(TMP_FILE_NAME), b"half a compaction").unwrap();
    let log = PurgeLog::open(dir.path(), 4).await.unwrap();
    assert!(!dir.path().join(TMP_FILE_NAME).exists());
    assert_eq!(log.head(), 0);
}

#[tokio::test]
async fn the_data_directory_is_created() {
    let dir = TempDir::new().unwrap();
    let nested = dir.path().join("data").join("control");
    let log = PurgeLog::open(&nested, 4).await.unwrap();
    append_n(&log, 1).await;
    assert!(nested.join(FILE_NAME).exists());
}

#[tokio::test]
async fn a_second_open_of_the_same_directory_is_refused_until_the_first_is_dropped() {
    let dir = TempDir::new().unwrap();
    let first = PurgeLog::open(dir.path(), 4).await.unwrap();
    append_n(&first, 1).await;
    let clone = first.clone();

    let error = PurgeLog::open(dir.path(), 4).await.unwrap_err();
    assert!(matches!(error, LogError::Locked { .. }), "{error:?}");
    assert!(!error.is_retryable());
    let message = error.to_string();
    assert!(
        message.contains(&dir.path().display().to_string()),
        "{message}"
    );
    assert!(message.contains("another control holds"), "{message}");
    assert!(message.contains(LOCK_FILE_NAME), "{message}");

    // Held until the last handle goes.
    drop(first);
    assert!(matches!(
        PurgeLog::open(dir.path(), 4).await,
        Err(LogError::Locked { .. })
    ));
    drop(clone);
    let second = PurgeLog::open(dir.path(), 4).await.unwrap();
    assert_eq!(second.head(), 1);
}

#[tokio::test]
async fn a_lock_taken_elsewhere_on_the_directory_refuses_the_open() {
    use rustix::fs::{flock, FlockOperation};
    let dir = TempDir::new().unwrap();
    // As another control process would hold it: its own open file, locked.
    let other = fs::File::create(dir.path().join(LOCK_FILE_NAME)).unwrap();
    flock(&other, FlockOperation::NonBlockingLockExclusive).unwrap();
    let error = PurgeLog::open(dir.path(), 4).await.unwrap_err();
    assert!(matches!(error, LogError::Locked { .. }), "{error:?}");
    assert!(
        !dir.path().join(FILE_NAME).exists(),
        "the log was not touched"
    );
    drop(other);
    PurgeLog::open(dir.path(), 4).await.unwrap();
}

#[tokio::test]
async fn retain_zero_is_refused() {
    let dir = TempDir::new().unwrap();
    let error = PurgeLog::open(dir.path(), 0).await.unwrap_err();
    assert!(matches!(error, LogError::InvalidRetain { .. }), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_get_consecutive_sequence_numbers_and_reach_disk() {
    let dir = TempDir::new().unwrap();
    let log = PurgeLog::open(dir.path(), 1_000).await.unwrap();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move { log.append(url_purge(i), i as u64).await })
        })
        .collect();
    let mut records = Vec::new();
    for task in tasks {
        records.push(task.await.unwrap().unwrap());
    }
    let mut seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=200).collect::<Vec<u64>>());
    assert_eq!(log.head(), 200);
    drop(log);

    let log = PurgeLog::open(dir.path(), 1_000).await.unwrap();
    assert_eq!(log.head(), 200);
    for record in &records {
        assert_eq!(log.get(record.seq).as_ref(), Some(record));
    }
}

#[tokio::test]
async fn appends_queued_during_a_commit_share_one_sync() {
    let dir = TempDir::new().unwrap();
    let log = PurgeLog::open(dir.path(), 1_000).await.unwrap();
    // Holding the state lock parks the writer right after its first sync, so every other
    // append queues up behind it.
    let parked = log.write_state();
    let pending: Vec<_> = (0..200)
        .map(|i| log.submit(url_purge(i), 0).unwrap())
        .collect();
    drop(parked);
    for outcome in pending {
        outcome.await.unwrap().unwrap();
    }
    assert_eq!(log.head(), 200);
    assert!(log.commits() <= 2, "{} commits", log.commits());
}

#[tokio::test]
async fn a_full_queue_is_refused_as_busy() {
    let dir = TempDir::new().unwrap();
    let log = PurgeLog::open_with_capacity(dir.path(), 1_000, 2)
        .await
        .unwrap();
    let parked = log.write_state();
    let mut pending = Vec::new();
    // The writer takes one batch (at most MAX_BATCH) and parks; then the queue fills.
    let busy = loop {
        match log.submit(url_purge(pending.len()), 0) {
            Ok(outcome) => pending.push(outcome),
            Err(error) => break error,
        }
        assert!(pending.len() <= MAX_BATCH + 2, "never busy");
    };
    assert!(
        matches!(busy, LogError::Busy { capacity: 2, .. }),
        "{busy:?}"
    );
    assert!(busy.is_retryable());
    drop(parked);

    for outcome in pending {
        outcome.await.unwrap().unwrap();
    }
    log.append(url_purge(0), 0).await.unwrap();
}
