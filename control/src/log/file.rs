//! The file's format — one checksummed JSON record per line — and its replay on open.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use super::{LogError, LogRecord};

/// What [`replay`] found in the file.
pub(super) struct Replay {
    /// The newest `retain` intact records.
    pub(super) records: VecDeque<LogRecord>,
    pub(super) head: u64,
    /// Intact records in the file.
    pub(super) file_records: usize,
    /// Bytes up to the end of the last intact record.
    pub(super) good_len: u64,
    pub(super) dropped_tail: Option<DroppedTail>,
}

/// Damaged lines at the end of the file, with no intact record after them.
pub(super) struct DroppedTail {
    /// Line number (from 1) of the first damaged line.
    pub(super) line: u64,
    pub(super) reason: String,
    pub(super) bytes: u64,
}

/// Reads the file from the start, keeping the newest `retain` records in memory.
pub(super) fn replay(file: &File, path: &Path, retain: usize) -> Result<Replay, LogError> {
    let mut reader = BufReader::new(file);
    let mut records = VecDeque::new();
    let mut head = 0;
    let mut file_records = 0;
    let mut good_len = 0;
    let mut offset = 0;
    let mut line_number = 0;
    // The first damaged line not (yet) followed by an intact one.
    let mut damaged: Option<(u64, String)> = None;
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(|source| LogError::Io {
                path: path.to_path_buf(),
                action: "read it",
                source,
            })?;
        if read == 0 {
            break;
        }
        line_number += 1;
        offset += read as u64;
        let decoded = match line.strip_suffix(b"\n") {
            Some(text) => decode_line(text),
            None => Err("the line has no end (a write cut short)".to_string()),
        };
        let record = match decoded {
            Ok(record) => record,
            Err(reason) => {
                damaged.get_or_insert((line_number, reason));
                continue;
            }
        };
        let corrupt = |line, reason| LogError::Corrupt {
            path: path.to_path_buf(),
            line,
            reason,
        };
        if let Some((line, reason)) = damaged.take() {
            return Err(corrupt(
                line,
                format!("{reason}, and intact records follow it (line {line_number})"),
            ));
        }
        if head != 0 && record.seq != head + 1 {
            return Err(corrupt(
                line_number,
                format!("sequence number {} follows {head}", record.seq),
            ));
        }
        head = record.seq;
        records.push_back(record);
        if records.len() > retain {
            records.pop_front();
        }
        file_records += 1;
        good_len = offset;
    }
    let dropped_tail = damaged.map(|(line, reason)| DroppedTail {
        line,
        reason,
        bytes: offset - good_len,
    });
    Ok(Replay {
        records,
        head,
        file_records,
        good_len,
        dropped_tail,
    })
}

/// Appends `record` as one line: checksum, space, JSON, newline.
pub(super) fn encode_line(record: &LogRecord, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    // Serialised compactly, JSON has no raw newline (strings escape it).
    let json = serde_json::to_string(record)?;
    out.extend_from_slice(format!("{:08x} ", crc32c(json.as_bytes())).as_bytes());
    out.extend_from_slice(json.as_bytes());
    out.push(b'\n');
    Ok(())
}

/// Parses one line (without its newline), saying what is wrong with a damaged one.
pub(super) fn decode_line(line: &[u8]) -> Result<LogRecord, String> {
    let text = std::str::from_utf8(line).map_err(|_| "not UTF-8".to_string())?;
    let (checksum, json) = text
        .split_once(' ')
        .ok_or_else(|| "no checksum".to_string())?;
    if checksum.len() != 8 || !checksum.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{checksum:?} is not a checksum"));
    }
    let expected = u32::from_str_radix(checksum, 16).map_err(|e| e.to_string())?;
    let actual = crc32c(json.as_bytes());
    if expected != actual {
        return Err(format!(
            "checksum mismatch (line says {expected:08x}, content has {actual:08x})"
        ));
    }
    let record: LogRecord =
        serde_json::from_str(json).map_err(|e| format!("intact checksum but bad JSON: {e}"))?;
    if record.seq == 0 {
        return Err("sequence number 0".to_string());
    }
    Ok(record)
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), one table lookup per byte.
pub(super) fn crc32c(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut crc = i as u32;
            let mut bit = 0;
            while bit < 8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0x82F6_3B78
                } else {
                    crc >> 1
                };
                bit += 1;
            }
            table[i] = crc;
            i += 1;
        }
        table
    };
    let crc = bytes.iter().fold(!0u32, |crc, &byte| {
        TABLE[((crc ^ u32::from(byte)) & 0xff) as usize] ^ (crc >> 8)
    });
    !crc
}
