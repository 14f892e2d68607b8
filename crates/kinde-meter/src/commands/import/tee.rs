//! Keeping the bytes of each CSV row as they were, for the reject file, and
//! the line it starts on.

use std::io::{self, Read};

use super::source::COMMENT;

/// A reader that keeps what it has read until taken, so that the CSV rows can
/// be copied to the reject file byte for byte (the CSV reader reads ahead;
/// what is kept is its read-ahead plus the current row).
pub struct Tee<R> {
    inner: R,
    /// Bytes read and not yet taken, starting at `kept_from`.
    kept: Vec<u8>,
    kept_from: u64,
    /// Line breaks before `kept_from` (the CSV reader's own line numbers
    /// leave comment lines out).
    lines_before: u64,
}

impl<R> Tee<R> {
    /// Keeps what is read from `inner`.
    pub fn new(inner: R) -> Self {
        Tee {
            inner,
            kept: Vec::new(),
            kept_from: 0,
            lines_before: 0,
        }
    }

    /// The line (from 1) on which offset `start` is, and the bytes from
    /// `start` to `end`; everything before `end` is forgotten.
    pub fn take(&mut self, start: u64, end: u64) -> (u64, Vec<u8>) {
        let to = usize::try_from(end.saturating_sub(self.kept_from)).unwrap_or(usize::MAX);
        let to = to.min(self.kept.len());
        let from = usize::try_from(start.saturating_sub(self.kept_from)).unwrap_or(usize::MAX);
        let from = from.min(to);
        let line = self.lines_before + line_breaks(&self.kept[..from]) + 1;
        let taken = self.kept[from..to].to_vec();
        self.lines_before = line - 1 + line_breaks(&taken);
        self.kept.drain(..to);
        self.kept_from += to as u64;
        (line, taken)
    }
}

/// A CSV record's position is where the reader started looking for it, before
/// the blank and comment lines it skipped: the row itself starts after them.
pub fn skip_blank_and_comment_lines(mut line: u64, mut raw: Vec<u8>) -> (u64, Vec<u8>) {
    let mut skip = 0;
    while let Some(rest) = raw.get(skip..) {
        let first = rest.iter().position(|&b| b == b'\n');
        let blank_or_comment =
            rest.first() == Some(&COMMENT) || rest.starts_with(b"\r\n") || rest.starts_with(b"\n");
        match first {
            Some(end) if blank_or_comment => {
                skip += end + 1;
                line += 1;
            }
            _ => break,
        }
    }
    raw.drain(..skip);
    (line, raw)
}

fn line_breaks(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.kept.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}
