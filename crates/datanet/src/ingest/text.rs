//! Plain text and Markdown, cut into overlapping chunks.
//!
//! Lines are appended to the current chunk; when it exceeds `chars` it is cut
//! at the last whitespace before the limit (or at the limit if there is none)
//! and the next chunk starts `overlap` characters earlier, moved forward to a
//! word start. In Markdown a heading always starts a new chunk, with no overlap,
//! so a chunk never mixes two sections.

use std::io::{BufReader, Read};

use super::lines::{Line, Lines};
use super::{Chunking, Limits};
use crate::Result;
use crate::record::Example;

type Sink<'a> = dyn FnMut(u64, std::result::Result<Example, String>) -> Result<()> + 'a;

struct Chunker<'s, 'a> {
    chunking: Chunking,
    buf: String,
    /// Line where the text in `buf` starts.
    start_line: u64,
    sink: &'s mut Sink<'a>,
}

impl Chunker<'_, '_> {
    fn push(&mut self, line_no: u64, line: &str) -> Result<()> {
        if self.buf.is_empty() {
            self.start_line = line_no;
        }
        self.buf.push_str(line);
        self.buf.push('\n');
        while self.buf.chars().count() > self.chunking.chars {
            self.cut()?;
        }
        Ok(())
    }

    /// Emits the first chunk of `buf` and keeps the rest plus the overlap.
    fn cut(&mut self) -> Result<()> {
        let limit = byte_at_char(&self.buf, self.chunking.chars);
        let end = self.buf[..limit]
            .rfind(char::is_whitespace)
            .filter(|&i| i > limit / 2)
            .unwrap_or(limit);
        let chunk_chars = self.buf[..end].chars().count();
        let back = chunk_chars.saturating_sub(self.chunking.overlap);
        let mut keep = byte_at_char(&self.buf, back);
        // Start the overlap on a word boundary, unless that would skip it all.
        if let Some(space) = self.buf[keep..end].find(char::is_whitespace) {
            keep += space;
        }
        // Always make progress: a chunk that is all overlap would repeat forever.
        let keep = if keep == 0 { end } else { keep.min(end) };
        (self.sink)(self.start_line, Ok(text(&self.buf[..end])))?;
        self.start_line += self.buf[..keep].matches('\n').count() as u64;
        self.buf.drain(..keep);
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if !self.buf.trim().is_empty() {
            (self.sink)(self.start_line, Ok(text(&self.buf)))?;
        }
        self.buf.clear();
        Ok(())
    }
}

fn text(s: &str) -> Example {
    Example::Text { text: s.to_owned() }
}

fn byte_at_char(s: &str, chars: usize) -> usize {
    s.char_indices().nth(chars).map_or(s.len(), |(i, _)| i)
}

pub(super) fn parse(
    reader: impl Read,
    chunking: Chunking,
    markdown: bool,
    limits: &Limits,
    sink: &mut Sink<'_>,
) -> Result<()> {
    let mut lines = Lines::new(
        BufReader::new(reader),
        limits.max_record_chars.saturating_mul(4),
    );
    let mut chunker = Chunker {
        chunking,
        buf: String::new(),
        start_line: 1,
        sink,
    };
    while let Some((number, line)) = lines.next_line()? {
        let line = match line {
            Line::TooLong(len) => Err(format!("line is {len} bytes, too long for one record")),
            Line::Fits(bytes) => std::str::from_utf8(bytes)
                .map_err(|e| format!("invalid UTF-8 at byte {}", e.valid_up_to())),
        };
        match line {
            Err(reason) => (chunker.sink)(number, Err(reason))?,
            Ok(line) => {
                if markdown && line.starts_with('#') {
                    chunker.flush()?;
                }
                chunker.push(number, line)?;
            }
        }
    }
    chunker.flush()
}

#[cfg(test)]
mod tests {
    use super::super::{Chunking, Format, Item, Limits, collect};
    use crate::record::Example;

    fn chunks(input: &str, format: &Format) -> Vec<(u64, String)> {
        collect(input, format, &Limits::default())
            .into_iter()
            .map(|item| match item {
                Item::Record {
                    line,
                    example: Example::Text { text },
                } => (line, text),
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[test]
    fn chunks_overlap_and_cover_the_text() {
        let words: Vec<String> = (0..200).map(|i| format!("w{i}")).collect();
        let input = words.join(" ");
        let chunking = Chunking {
            chars: 100,
            overlap: 20,
        };
        let got = chunks(&input, &Format::Text(chunking));
        assert!(got.len() > 5);
        for (_, chunk) in &got {
            assert!(chunk.chars().count() <= 100, "{chunk}");
        }
        // Consecutive chunks share words; together they contain every word.
        for pair in got.windows(2) {
            let last_word = pair[0].1.split_whitespace().last().expect("word");
            assert!(pair[1].1.split_whitespace().any(|w| w == last_word));
        }
        let all: String = got
            .iter()
            .map(|c| c.1.clone())
            .collect::<Vec<_>>()
            .join(" ");
        for word in &words {
            assert!(all.split_whitespace().any(|w| w == word), "{word}");
        }
    }

    #[test]
    fn markdown_headings_start_chunks_and_lines_are_tracked() {
        let input = "# One\nalpha\nbeta\n\n## Two\ngamma\n";
        let got = chunks(input, &Format::Markdown(Chunking::default()));
        assert_eq!(
            got,
            vec![
                (1, "# One\nalpha\nbeta".into()),
                (5, "## Two\ngamma".into())
            ]
        );
        let plain = chunks(input, &Format::Text(Chunking::default()));
        assert_eq!(plain.len(), 1);
    }
}
