//! Streaming parsers that turn uploaded files into records.
//!
//! Every format is read incrementally from a [`Read`]; at most one line (or one
//! CSV row, or one text chunk) is held at a time, and lines longer than the
//! record limit are skipped without being buffered. Each input line yields a
//! record, a [`LineError`] with its 1-based line number, or nothing (blank lines).
//!
//! Automatic checks that need only the line itself happen here: invalid UTF-8,
//! wrong schema, empty, too long. Duplicate checks need the datanet and happen
//! when records are stored.

mod jsonl;
mod lines;
mod table;
mod tee;
mod text;

use std::fmt;
use std::io::Read;

use serde::{Deserialize, Serialize};

pub use tee::Tee;

use crate::record::Example;
use crate::{Error, Result};

/// How to read an uploaded file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "format", rename_all = "snake_case")]
pub enum Format {
    /// One JSON object per line: `{"text"}`, alpaca `{"instruction","input","output"}`,
    /// sharegpt `{"conversations":[{"from","value"}]}` or `{"messages":[{"role","content"}]}`.
    Jsonl,
    /// Comma-separated values with a header row, mapped to record fields.
    Csv(CsvMapping),
    /// Plain text, cut into overlapping chunks.
    Text(Chunking),
    /// Markdown, cut into overlapping chunks that never cross a heading.
    Markdown(Chunking),
}

impl Format {
    /// A short name for reports and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Jsonl => "jsonl",
            Self::Csv(_) => "csv",
            Self::Text(_) => "text",
            Self::Markdown(_) => "markdown",
        }
    }
}

/// Which CSV columns hold which record fields: either `text`, or
/// `instruction` and `output` (with an optional `input`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CsvMapping {
    /// Column with plain text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Column with the instruction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instruction: Option<String>,
    /// Column with the optional input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// Column with the expected output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

/// How text is cut into records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunking {
    /// Most characters per chunk.
    pub chars: usize,
    /// Characters repeated from the end of one chunk at the start of the next,
    /// so no sentence is only ever seen cut in half.
    pub overlap: usize,
}

impl Default for Chunking {
    fn default() -> Self {
        Self {
            chars: 2000,
            overlap: 200,
        }
    }
}

/// Configurable bounds on what one contribution may contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Most characters in one record (longer ones are reported and skipped).
    pub max_record_chars: usize,
    /// Most bytes in one uploaded file (more rejects the contribution).
    pub max_file_bytes: u64,
    /// Most records in one contribution (more rejects the contribution).
    pub max_records: usize,
    /// Most malformed lines tolerated before the contribution is rejected as a whole.
    pub max_bad_lines: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_record_chars: 32 * 1024,
            max_file_bytes: 1 << 30,
            max_records: 1_000_000,
            max_bad_lines: 1000,
        }
    }
}

/// A line that produced no record, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineError {
    /// 1-based line number in the uploaded file.
    pub line: u64,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// What one line of input turned into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A normalised example that passed the per-line checks, with its first line.
    Record {
        /// 1-based line where it starts.
        line: u64,
        /// The example.
        example: Example,
    },
    /// A line that was skipped.
    Bad(LineError),
}

/// Parses `reader` in `format`, calling `sink` for every item in file order.
/// Stops at the first error from `sink` or from reading.
pub fn parse(
    reader: impl Read,
    format: &Format,
    limits: &Limits,
    sink: &mut dyn FnMut(Item) -> Result<()>,
) -> Result<()> {
    let mut checked =
        |line: u64, parsed: std::result::Result<Example, String>| sink(check(line, parsed, limits));
    match format {
        Format::Jsonl => jsonl::parse(reader, limits, &mut checked),
        Format::Csv(mapping) => table::parse(reader, mapping, &mut checked),
        Format::Text(chunking) => text::parse(reader, *chunking, false, limits, &mut checked),
        Format::Markdown(chunking) => text::parse(reader, *chunking, true, limits, &mut checked),
    }
}

/// Applies the per-record checks (empty, too long) after normalising.
fn check(line: u64, parsed: std::result::Result<Example, String>, limits: &Limits) -> Item {
    let bad = |reason: String| Item::Bad(LineError { line, reason });
    match parsed.map(Example::normalised) {
        Err(reason) => bad(reason),
        Ok(example) if example.is_empty() => bad("empty record".into()),
        Ok(example) if example.chars() > limits.max_record_chars => bad(format!(
            "record has {} characters, more than the limit of {}",
            example.chars(),
            limits.max_record_chars
        )),
        Ok(example) => Item::Record { line, example },
    }
}

/// Validates a format's parameters before any byte is read.
pub fn validate(format: &Format) -> Result<()> {
    match format {
        Format::Jsonl => Ok(()),
        Format::Csv(mapping) => table::validate(mapping),
        Format::Text(c) | Format::Markdown(c) => {
            if c.chars == 0 || c.overlap >= c.chars {
                return Err(Error::invalid(
                    "chunking",
                    "chars must be positive and overlap smaller than chars",
                ));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
pub(crate) fn collect(input: &str, format: &Format, limits: &Limits) -> Vec<Item> {
    let mut items = Vec::new();
    parse(input.as_bytes(), format, limits, &mut |item| {
        items.push(item);
        Ok(())
    })
    .expect("parse");
    items
}
