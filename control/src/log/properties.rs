//! Property tests of the purge log's file format, which control reads back from disk at every
//! start: any line or file is read without panic, an encoded record reads back as itself, and a
//! damaged line is refused rather than read as another record.

use std::io::Write;

use proptest::prelude::*;

use super::file::{decode_line, encode_line, replay};
use super::LogRecord;
use crate::hub::properties::purge_spec;

fn record() -> impl Strategy<Value = LogRecord> {
    (1..=u64::MAX, any::<u64>(), purge_spec()).prop_map(|(seq, accepted_at_ms, spec)| LogRecord {
        seq,
        accepted_at_ms,
        spec,
    })
}

fn encoded(record: &LogRecord) -> Vec<u8> {
    let mut line = Vec::new();
    encode_line(record, &mut line).unwrap();
    line
}

/// Arbitrary bytes, text shaped like a line, and encoded lines with a byte changed.
fn line() -> impl Strategy<Value = Vec<u8>> {
    let shaped = (
        "[0-9a-fA-F]{0,9}",
        prop::sample::select(vec![" ", "", "  "]),
        prop::sample::select(vec![
            "{}",
            "{\"seq\":0,\"accepted_at_ms\":1,\"spec\":{}}",
            "{\"seq\":1,\"accepted_at_ms\":1,\"spec\":{\"all\":true}}",
            "{\"seq\":-1}",
            "[1,2]",
            "\u{fffd}",
            "",
        ]),
    )
        .prop_map(|(checksum, gap, json)| format!("{checksum}{gap}{json}").into_bytes());
    let damaged =
        (record(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(record, at, byte)| {
            let mut line = encoded(&record);
            line.pop();
            let at = at.index(line.len());
            line[at] = byte;
            line
        });
    prop_oneof![prop::collection::vec(any::<u8>(), 0..200), shaped, damaged]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_line_decodes_without_panic_and_what_decodes_encodes_back(line in line()) {
        if let Ok(record) = decode_line(&line) {
            prop_assert!(record.seq >= 1);
            let again = encoded(&record);
            prop_assert_eq!(decode_line(&again[..again.len() - 1]), Ok(record));
        }
    }

    #[test]
    fn an_encoded_record_is_one_line_that_decodes_back(record in record()) {
        let line = encoded(&record);
        prop_assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        prop_assert_eq!(line.last(), Some(&b'\n'));
        prop_assert_eq!(decode_line(&line[..line.len() - 1]), Ok(record));
    }

    #[test]
    fn a_changed_byte_is_refused_or_reads_as_the_same_record(
        record in record(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut line = encoded(&record);
        line.pop();
        let at = at.index(line.len());
        line[at] = byte;
        // Only the checksum's letter case may change without changing what it says.
        if let Ok(read) = decode_line(&line) {
            prop_assert_eq!(read, record);
        }
    }
}

proptest! {
    // Each case writes a file.
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_file_replays_without_panic_into_consecutive_records(
        lines in prop::collection::vec(
            prop_oneof![
                (1..6u64).prop_map(|seq| {
                    encoded(&LogRecord { seq, accepted_at_ms: seq, spec: Default::default() })
                }),
                line().prop_map(|mut l| { l.push(b'\n'); l }),
                line(),
            ],
            0..8,
        ),
        retain in 1..4usize,
    ) {
        let mut file = tempfile::tempfile().unwrap();
        let bytes = lines.concat();
        file.write_all(&bytes).unwrap();
        std::io::Seek::rewind(&mut file).unwrap();
        let path = std::path::Path::new("purge.log");
        if let Ok(found) = replay(&file, path, retain) {
            prop_assert!(found.records.len() <= retain);
            prop_assert!(found.good_len <= bytes.len() as u64);
            if let Some(last) = found.records.back() {
                prop_assert_eq!(last.seq, found.head);
            }
            for pair in found.records.iter().collect::<Vec<_>>().windows(2) {
                prop_assert_eq!(pair[1].seq, pair[0].seq + 1);
            }
            // Up to `good_len` the file is whole lines, every one an intact record.
            let kept = &bytes[..usize::try_from(found.good_len).unwrap()];
            prop_assert!(kept.is_empty() || kept.ends_with(b"\n"));
            let kept_lines: Vec<&[u8]> = kept.split(|&b| b == b'\n').collect();
            let kept_lines = &kept_lines[..kept_lines.len() - 1];
            prop_assert_eq!(kept_lines.len(), found.file_records);
            for kept_line in kept_lines {
                prop_assert!(decode_line(kept_line).is_ok());
            }
        }
    }

    #[test]
    fn a_tail_cut_short_is_dropped_whatever_it_holds(
        n in 0..5u64,
        tail in line().prop_filter("a tail without a line end", |t| !t.contains(&b'\n')),
        retain in 1..4usize,
    ) {
        let records: Vec<LogRecord> = (1..=n)
            .map(|seq| LogRecord { seq, accepted_at_ms: seq, spec: Default::default() })
            .collect();
        let intact: Vec<u8> = records.iter().flat_map(encoded).collect();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&intact).unwrap();
        file.write_all(&tail).unwrap();
        std::io::Seek::rewind(&mut file).unwrap();
        let found = replay(&file, std::path::Path::new("purge.log"), retain).unwrap();
        prop_assert_eq!(found.head, n);
        prop_assert_eq!(found.good_len, intact.len() as u64);
        prop_assert_eq!(found.dropped_tail.is_some(), !tail.is_empty());
        let kept = records.len().saturating_sub(retain);
        prop_assert_eq!(found.records.iter().cloned().collect::<Vec<_>>(), &records[kept..]);
    }
}
