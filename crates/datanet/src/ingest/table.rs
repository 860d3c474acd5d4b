//! CSV with a header row and a mapping from columns to record fields.

use std::io::Read;

use super::CsvMapping;
use crate::record::Example;
use crate::{Error, Result};

type Sink<'a> = dyn FnMut(u64, std::result::Result<Example, String>) -> Result<()> + 'a;

/// Which shape the mapping produces.
enum Columns {
    Text(usize),
    Instruction {
        instruction: usize,
        input: Option<usize>,
        output: usize,
    },
}

pub(super) fn validate(mapping: &CsvMapping) -> Result<()> {
    let instruction_like = mapping.instruction.is_some() || mapping.output.is_some();
    match (&mapping.text, instruction_like) {
        (Some(_), false) => Ok(()),
        (None, true) if mapping.instruction.is_some() && mapping.output.is_some() => Ok(()),
        _ => Err(Error::invalid(
            "mapping",
            "map either a `text` column, or `instruction` and `output` (and optionally `input`)",
        )),
    }
}

fn resolve(mapping: &CsvMapping, headers: &csv::ByteRecord) -> Result<Columns> {
    validate(mapping)?;
    let find = |name: &str| {
        headers
            .iter()
            .position(|h| h == name.as_bytes())
            .ok_or_else(|| Error::invalid("mapping", format!("the CSV has no column `{name}`")))
    };
    match (&mapping.text, &mapping.instruction, &mapping.output) {
        (Some(text), _, _) => Ok(Columns::Text(find(text)?)),
        (None, Some(instruction), Some(output)) => Ok(Columns::Instruction {
            instruction: find(instruction)?,
            input: mapping.input.as_deref().map(find).transpose()?,
            output: find(output)?,
        }),
        _ => Err(Error::invalid("mapping", "incomplete column mapping")),
    }
}

pub(super) fn parse(reader: impl Read, mapping: &CsvMapping, sink: &mut Sink<'_>) -> Result<()> {
    let mut csv = csv::ReaderBuilder::new()
        .flexible(false)
        .from_reader(reader);
    let headers = csv.byte_headers().map_err(csv_error)?.clone();
    let columns = resolve(mapping, &headers)?;
    let mut row = csv::ByteRecord::new();
    loop {
        let line = csv.position().line() + 1;
        match csv.read_byte_record(&mut row) {
            Ok(false) => return Ok(()),
            Ok(true) => {
                let line = row.position().map_or(line, |p| p.line());
                sink(line, example(&row, &columns))?;
            }
            Err(e) if matches!(e.kind(), csv::ErrorKind::Io(_)) => return Err(csv_error(e)),
            Err(e) => {
                let line = e.position().map_or(line, |p| p.line());
                sink(line, Err(format!("malformed CSV row: {e}")))?;
            }
        }
    }
}

fn field(row: &csv::ByteRecord, index: usize) -> std::result::Result<String, String> {
    let bytes = row.get(index).unwrap_or_default();
    String::from_utf8(bytes.to_vec()).map_err(|e| {
        format!(
            "column {}: invalid UTF-8 at byte {}",
            index + 1,
            e.utf8_error().valid_up_to()
        )
    })
}

fn example(row: &csv::ByteRecord, columns: &Columns) -> std::result::Result<Example, String> {
    Ok(match *columns {
        Columns::Text(text) => Example::Text {
            text: field(row, text)?,
        },
        Columns::Instruction {
            instruction,
            input,
            output,
        } => Example::Instruction {
            instruction: field(row, instruction)?,
            input: input
                .map(|i| field(row, i))
                .transpose()?
                .unwrap_or_default(),
            output: field(row, output)?,
        },
    })
}

fn csv_error(error: csv::Error) -> Error {
    match error.into_kind() {
        csv::ErrorKind::Io(io) => Error::Io(io),
        other => Error::invalid("csv", format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{CsvMapping, Format, Item, Limits, collect};
    use crate::record::Example;

    #[test]
    fn maps_columns_and_reports_bad_rows_by_line() {
        let mapping = CsvMapping {
            instruction: Some("q".into()),
            output: Some("a".into()),
            ..CsvMapping::default()
        };
        let input = "id,q,a\n1,what is 2+2,4\n2,\"multi\nline\",yes\n3,only two\n4,,x\n";
        let items = collect(input, &Format::Csv(mapping), &Limits::default());
        assert_eq!(items.len(), 4);
        assert!(
            matches!(&items[0], Item::Record { line: 2, example: Example::Instruction { output, .. } } if output == "4")
        );
        assert!(matches!(&items[1], Item::Record { line: 3, .. }));
        assert!(matches!(&items[2], Item::Bad(e) if e.line == 5 && e.reason.contains("malformed")));
        assert!(matches!(&items[3], Item::Bad(e) if e.line == 6 && e.reason == "empty record"));
    }

    #[test]
    fn unknown_columns_and_bad_mappings_are_errors() {
        let mapping = CsvMapping {
            text: Some("body".into()),
            ..CsvMapping::default()
        };
        let result = super::super::parse(
            "x,y\n1,2\n".as_bytes(),
            &Format::Csv(mapping),
            &Limits::default(),
            &mut |_| Ok(()),
        );
        assert!(result.is_err());
        assert!(super::validate(&CsvMapping::default()).is_err());
    }
}
