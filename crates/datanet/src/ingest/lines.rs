//! Reading lines with a bound on how much of one line is kept.

use std::io::{self, BufRead};

/// One line's bytes (without the newline), or its length when it exceeded the bound.
pub(crate) enum Line<'a> {
    /// The line, with a trailing `\r` removed.
    Fits(&'a [u8]),
    /// The line was longer than the bound; its bytes were skipped.
    TooLong(usize),
}

/// Splits a reader into lines, never buffering more than `max_bytes` of one.
pub(crate) struct Lines<R> {
    reader: R,
    max_bytes: usize,
    buf: Vec<u8>,
    number: u64,
}

impl<R: BufRead> Lines<R> {
    pub(crate) fn new(reader: R, max_bytes: usize) -> Self {
        Self {
            reader,
            max_bytes,
            buf: Vec::new(),
            number: 0,
        }
    }

    /// The next line and its 1-based number, or `None` at the end.
    pub(crate) fn next_line(&mut self) -> io::Result<Option<(u64, Line<'_>)>> {
        self.buf.clear();
        let mut total = 0usize;
        let mut saw_any = false;
        loop {
            let available = self.reader.fill_buf()?;
            if available.is_empty() {
                break;
            }
            saw_any = true;
            let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
                Some(end) => (&available[..end], true),
                None => (available, false),
            };
            total += chunk.len();
            if total <= self.max_bytes {
                self.buf.extend_from_slice(chunk);
            }
            let used = chunk.len() + usize::from(done);
            self.reader.consume(used);
            if done {
                break;
            }
        }
        if !saw_any {
            return Ok(None);
        }
        self.number += 1;
        if total > self.max_bytes {
            return Ok(Some((self.number, Line::TooLong(total))));
        }
        let line = self.buf.strip_suffix(b"\r").unwrap_or(&self.buf);
        Ok(Some((self.number, Line::Fits(line))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_measured_not_kept() {
        let input = b"short\r\nxxxxxxxxxxxx\nlast";
        let mut lines = Lines::new(&input[..], 8);
        let mut seen = Vec::new();
        while let Some((n, line)) = lines.next_line().expect("read") {
            seen.push(match line {
                Line::Fits(bytes) => (n, String::from_utf8_lossy(bytes).into_owned()),
                Line::TooLong(len) => (n, format!("<{len}>")),
            });
        }
        assert_eq!(
            seen,
            vec![(1, "short".into()), (2, "<12>".into()), (3, "last".into())]
        );
    }
}
