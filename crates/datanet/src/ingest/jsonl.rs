//! JSON Lines: one example per line in any of the common dataset shapes.

use std::io::{BufReader, Read};

use serde_json::{Map, Value};

use super::Limits;
use super::lines::{Line, Lines};
use crate::Result;
use crate::record::{Example, Message};

type Sink<'a> = dyn FnMut(u64, std::result::Result<Example, String>) -> Result<()> + 'a;

/// Bytes one line may take: JSON escapes can spend up to six bytes on a character
/// (`\uXXXX`), plus room for keys; the character limit is checked after parsing.
fn line_budget(limits: &Limits) -> usize {
    limits
        .max_record_chars
        .saturating_mul(6)
        .saturating_add(4096)
}

pub(super) fn parse(reader: impl Read, limits: &Limits, sink: &mut Sink<'_>) -> Result<()> {
    let mut lines = Lines::new(BufReader::new(reader), line_budget(limits));
    while let Some((number, line)) = lines.next_line()? {
        let parsed = match line {
            Line::TooLong(len) => Err(format!("line is {len} bytes, too long for one record")),
            Line::Fits(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => continue,
            Line::Fits(bytes) => parse_line(bytes),
        };
        sink(number, parsed)?;
    }
    Ok(())
}

fn parse_line(bytes: &[u8]) -> std::result::Result<Example, String> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| format!("invalid UTF-8 at byte {}", e.valid_up_to()))?;
    let value: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(object) = value else {
        return Err("expected a JSON object".into());
    };
    from_object(&object)
}

const SHAPES: &str = "expected `text`, `instruction`+`output`, `conversations` or `messages`";

fn from_object(object: &Map<String, Value>) -> std::result::Result<Example, String> {
    if let Some(messages) = object.get("messages") {
        return chat(messages, "role", "content", "messages");
    }
    if let Some(conversations) = object.get("conversations") {
        return chat(conversations, "from", "value", "conversations");
    }
    if object.contains_key("instruction") || object.contains_key("output") {
        return Ok(Example::Instruction {
            instruction: string_field(object, "instruction")?,
            input: optional_string(object, "input")?,
            output: string_field(object, "output")?,
        });
    }
    if object.contains_key("text") {
        return Ok(Example::Text {
            text: string_field(object, "text")?,
        });
    }
    Err(SHAPES.into())
}

fn string_field(object: &Map<String, Value>, key: &str) -> std::result::Result<String, String> {
    match object.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("`{key}` must be a string")),
        None => Err(format!("missing `{key}`")),
    }
}

fn optional_string(object: &Map<String, Value>, key: &str) -> std::result::Result<String, String> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(_) => string_field(object, key),
    }
}

/// ShareGPT speakers (`human`, `gpt`) mapped onto chat roles.
fn role(name: &str) -> std::result::Result<String, String> {
    match name.trim().to_lowercase().as_str() {
        "human" | "user" => Ok("user".into()),
        "gpt" | "assistant" | "bot" | "model" => Ok("assistant".into()),
        "system" => Ok("system".into()),
        "tool" | "function" => Ok("tool".into()),
        other => Err(format!("unknown speaker `{other}`")),
    }
}

fn chat(
    turns: &Value,
    role_key: &str,
    content_key: &str,
    field: &str,
) -> std::result::Result<Example, String> {
    let Value::Array(turns) = turns else {
        return Err(format!("`{field}` must be an array"));
    };
    let mut messages = Vec::with_capacity(turns.len());
    for (i, turn) in turns.iter().enumerate() {
        let Value::Object(turn) = turn else {
            return Err(format!("`{field}[{i}]` must be an object"));
        };
        let speaker = string_field(turn, role_key).map_err(|e| format!("{field}[{i}]: {e}"))?;
        messages.push(Message {
            role: role(&speaker).map_err(|e| format!("{field}[{i}]: {e}"))?,
            content: string_field(turn, content_key).map_err(|e| format!("{field}[{i}]: {e}"))?,
        });
    }
    Ok(Example::Chat { messages })
}

#[cfg(test)]
mod tests {
    use super::super::{Format, Item, Limits, collect};
    use crate::record::{Example, Message};

    fn records(input: &str) -> Vec<(u64, Result<Example, String>)> {
        collect(input, &Format::Jsonl, &Limits::default())
            .into_iter()
            .map(|item| match item {
                Item::Record { line, example } => (line, Ok(example)),
                Item::Bad(e) => (e.line, Err(e.reason)),
            })
            .collect()
    }

    #[test]
    fn reads_every_shape() {
        let input = concat!(
            "{\"text\": \"plain\"}\n",
            "{\"instruction\": \"add\", \"input\": \"1 1\", \"output\": \"2\"}\n",
            "\n",
            "{\"conversations\": [{\"from\": \"human\", \"value\": \"hi\"}, {\"from\": \"gpt\", \"value\": \"hello\"}]}\n",
            "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}]}\n",
        );
        let got = records(input);
        assert_eq!(got.len(), 4);
        assert_eq!(
            got[0],
            (
                1,
                Ok(Example::Text {
                    text: "plain".into()
                })
            )
        );
        assert!(matches!(&got[1], (2, Ok(Example::Instruction { output, .. })) if output == "2"));
        let expected = Example::Chat {
            messages: vec![
                Message {
                    role: "user".into(),
                    content: "hi".into(),
                },
                Message {
                    role: "assistant".into(),
                    content: "hello".into(),
                },
            ],
        };
        assert_eq!(got[2], (4, Ok(expected)));
        assert_eq!(got[3].0, 5);
    }

    #[test]
    fn reports_bad_lines_with_numbers() {
        let mut input =
            b"{\"text\": \"ok\"}\nnot json\n{\"foo\": 1}\n{\"text\": \"  \"}\n".to_vec();
        input.extend_from_slice(b"{\"text\": \"\xff\"}\n[1]\n{\"messages\": [{\"role\": \"alien\", \"content\": \"x\"}]}\n");
        let items = {
            let mut items = Vec::new();
            super::super::parse(&input[..], &Format::Jsonl, &Limits::default(), &mut |i| {
                items.push(i);
                Ok(())
            })
            .expect("parse");
            items
        };
        let bad: Vec<(u64, String)> = items
            .into_iter()
            .filter_map(|i| match i {
                Item::Bad(e) => Some((e.line, e.reason)),
                Item::Record { .. } => None,
            })
            .collect();
        let lines: Vec<u64> = bad.iter().map(|b| b.0).collect();
        assert_eq!(lines, vec![2, 3, 4, 5, 6, 7]);
        assert!(bad[0].1.starts_with("invalid JSON"));
        assert!(bad[1].1.starts_with("expected `text`"));
        assert_eq!(bad[2].1, "empty record");
        assert!(bad[3].1.starts_with("invalid UTF-8"));
        assert!(bad[5].1.contains("unknown speaker"));
    }

    #[test]
    fn too_long_records_are_skipped() {
        let limits = Limits {
            max_record_chars: 10,
            ..Limits::default()
        };
        let input = format!(
            "{{\"text\": \"{}\"}}\n{{\"text\": \"{}\"}}\n",
            "a".repeat(11),
            "b".repeat(100_000)
        );
        let items = collect(&input, &Format::Jsonl, &limits);
        assert!(matches!(&items[0], Item::Bad(e) if e.reason.contains("more than the limit")));
        assert!(matches!(&items[1], Item::Bad(e) if e.reason.contains("too long")));
    }
}
