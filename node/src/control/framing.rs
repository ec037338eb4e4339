//! Line framing of the push stream: newline-delimited, each line bounded.

use bytes::{Bytes, BytesMut};

/// A line longer than the bound: the stream is garbage.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct LineTooLong;

/// Splits the push stream into lines, holding at most one bounded partial line.
pub(crate) struct LineFramer {
    buffer: BytesMut,
    /// Bytes at the start of `buffer` already known to hold no newline.
    scanned: usize,
    max: usize,
}

impl LineFramer {
    pub(crate) fn new(max: usize) -> LineFramer {
        LineFramer {
            buffer: BytesMut::new(),
            scanned: 0,
            max,
        }
    }

    pub(crate) fn push(&mut self, chunk: &[u8]) {
        self.buffer.extend_from_slice(chunk);
    }

    /// The next complete line, without its `\n` (or `\r\n`); blank lines are skipped.
    /// `Ok(None)`: more bytes are needed.
    pub(crate) fn next_line(&mut self) -> Result<Option<Bytes>, LineTooLong> {
        loop {
            let Some(offset) = self.buffer[self.scanned..].iter().position(|&b| b == b'\n') else {
                self.scanned = self.buffer.len();
                if self.buffer.len() > self.max {
                    return Err(LineTooLong);
                }
                return Ok(None);
            };
            let end = self.scanned + offset;
            self.scanned = 0;
            let mut line = self.buffer.split_to(end + 1);
            line.truncate(end);
            if line.last() == Some(&b'\r') {
                line.truncate(end - 1);
            }
            if line.len() > self.max {
                return Err(LineTooLong);
            }
            if !line.iter().all(u8::is_ascii_whitespace) {
                return Ok(Some(line.freeze()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `next_line` returns for a whole line `text`.
    fn line(text: &'static [u8]) -> Result<Option<Bytes>, LineTooLong> {
        Ok(Some(Bytes::from_static(text)))
    }

    #[test]
    fn lines_are_framed_across_chunks() {
        let mut framer = LineFramer::new(64);
        framer.push(b"{\"a\":1}\n{\"b\"");
        assert_eq!(framer.next_line(), line(b"{\"a\":1}"));
        assert_eq!(framer.next_line(), Ok(None));
        framer.push(b":2}\r\n\n  \r\n{\"c\":3}\n");
        assert_eq!(framer.next_line(), line(b"{\"b\":2}"));
        assert_eq!(framer.next_line(), line(b"{\"c\":3}"));
        assert_eq!(framer.next_line(), Ok(None));
    }

    #[test]
    fn a_line_over_the_bound_is_refused_with_or_without_its_newline() {
        let mut framer = LineFramer::new(8);
        framer.push(b"12345678\n");
        assert_eq!(framer.next_line(), line(b"12345678"));
        framer.push(b"123456789\n");
        assert_eq!(framer.next_line(), Err(LineTooLong));
        let mut endless = LineFramer::new(8);
        endless.push(b"12345");
        assert_eq!(endless.next_line(), Ok(None));
        endless.push(b"6789");
        assert_eq!(endless.next_line(), Err(LineTooLong));
    }
}
