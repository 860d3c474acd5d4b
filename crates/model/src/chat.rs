//! Chat templates: the model authors' own Jinja template (from GGUF metadata or
//! `tokenizer_config.json`) rendered with minijinja.
//!
//! The environment mimics the one `transformers` renders templates in, because
//! that is the environment template authors test against: `trim_blocks` and
//! `lstrip_blocks` on, Python string methods (`.strip()`, `.startswith()`, …)
//! through minijinja-contrib's pycompat, `raise_exception(msg)`, a `tojson` that
//! writes JSON the way Python's `json.dumps` does, and `strftime_now(fmt)`.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::value::{Enumerator, Kwargs, Object, Value, ValueKind};
use minijinja::{Environment, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Name under which the single template is stored in its environment.
const TEMPLATE_NAME: &str = "chat_template";

/// One message of a conversation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` (templates may accept others, e.g. `tool`).
    pub role: String,
    /// The message text.
    pub content: String,
}

impl ChatMessage {
    /// A message with the given role and content.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// Messages are exposed as objects rather than minijinja maps because maps sort
/// their keys, and `message | tojson` must list `role` before `content` as
/// Python's dicts do.
impl Object for ChatMessage {
    fn repr(self: &Arc<Self>) -> minijinja::value::ObjectRepr {
        minijinja::value::ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str()? {
            "role" => Some(Value::from(self.role.as_str())),
            "content" => Some(Value::from(self.content.as_str())),
            _ => None,
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(&["role", "content"])
    }
}

/// A compiled chat template. Compile once per model; rendering is cheap and
/// the template can be shared between threads.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

impl fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish_non_exhaustive()
    }
}

fn template_err(e: &minijinja::Error) -> Error {
    // minijinja's message names the kind, the detail (e.g. the text passed to
    // raise_exception) and the template line.
    Error::ChatTemplate(e.to_string())
}

impl ChatTemplate {
    /// Compiles `source`; `bos`/`eos` are the texts bound to `bos_token`/`eos_token`.
    pub fn new(source: &str, bos: &str, eos: &str) -> Result<Self> {
        let mut env = Environment::new();
        let mut syntax = minijinja::syntax::SyntaxConfig::builder();
        syntax.trim_blocks(true).lstrip_blocks(true);
        env.set_syntax(syntax.build().map_err(|e| template_err(&e))?);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned(TEMPLATE_NAME, source.to_owned())
            .map_err(|e| template_err(&e))?;
        Ok(Self {
            env,
            bos: bos.to_owned(),
            eos: eos.to_owned(),
        })
    }

    /// Renders the conversation; `add_generation_prompt` appends the header that
    /// opens the assistant's turn.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let messages: Value = messages
            .iter()
            .map(|m| Value::from_object(m.clone()))
            .collect();
        let ctx = minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos.as_str(),
            eos_token => self.eos.as_str(),
            // transformers passes these explicitly as None when unused; templates test
            // `tools is not none`, which is true for an undefined variable.
            tools => (),
            documents => (),
        };
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| template_err(&e))?;
        template.render(ctx).map_err(|e| template_err(&e))
    }
}

/// `raise_exception(msg)`: templates call it to reject a conversation they cannot format.
fn raise_exception(msg: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
}

/// `strftime_now(fmt)`: the current UTC time, formatted.
fn strftime_now(format: String) -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_utc(&format, i64::try_from(secs).unwrap_or(i64::MAX))
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// A small `strftime`: `%Y %y %m %d %e %B %b %H %M %S %%`; other directives are kept
/// as written (templates use the date for a "Today is …" line, nothing more).
fn format_utc(format: &str, unix_secs: i64) -> String {
    let (days, secs) = (unix_secs.div_euclid(86_400), unix_secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    let month_name = MONTHS[(month - 1) as usize];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('e') => out.push_str(&format!("{day:>2}")),
            Some('B') => out.push_str(month_name),
            Some('b') => out.push_str(&month_name[..3]),
            Some('H') => out.push_str(&format!("{:02}", secs / 3600)),
            Some('M') => out.push_str(&format!("{:02}", secs / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", secs % 60)),
            Some('%') => out.push('%'),
            Some(other) => out.extend(['%', other]),
            None => out.push('%'),
        }
    }
    out
}

/// Days since 1970-01-01 → (year, month 1–12, day 1–31) in the proleptic
/// Gregorian calendar (Hinnant's algorithm: shift the year to start in March so
/// the leap day is last, then count 400-year eras).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `tojson`, as transformers defines it: `json.dumps(value, ensure_ascii=False)`
/// with Python's `", "`/`": "` separators, or newlines and `indent` spaces.
fn tojson(value: Value, kwargs: Kwargs) -> std::result::Result<Value, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    write_json(&value, indent, 0, &mut out)?;
    // Safe: JSON text is meant to be inserted verbatim, not HTML-escaped.
    Ok(Value::from_safe_string(out))
}

fn write_json(
    value: &Value,
    indent: Option<usize>,
    level: usize,
    out: &mut String,
) -> std::result::Result<(), minijinja::Error> {
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => out.push_str(&value.to_string()),
        ValueKind::String => out.push_str(&json_string(value.as_str().unwrap_or_default())),
        ValueKind::Map => {
            let entries = value
                .try_iter()?
                .map(|key| Ok((key.clone(), value.get_item(&key)?)))
                .collect::<std::result::Result<Vec<_>, minijinja::Error>>()?;
            write_container(out, ('{', '}'), entries.len(), indent, level, |i, out| {
                let (key, item) = &entries[i];
                let key = key.as_str().map_or_else(|| key.to_string(), str::to_owned);
                out.push_str(&json_string(&key));
                out.push_str(": ");
                write_json(item, indent, level + 1, out)
            })?;
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            write_container(out, ('[', ']'), items.len(), indent, level, |i, out| {
                write_json(&items[i], indent, level + 1, out)
            })?;
        }
        kind => {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!("cannot convert {kind} to JSON"),
            ));
        }
    }
    Ok(())
}

/// Writes `open item, item close` in Python's layout (compact or indented).
fn write_container(
    out: &mut String,
    (open, close): (char, char),
    len: usize,
    indent: Option<usize>,
    level: usize,
    mut item: impl FnMut(usize, &mut String) -> std::result::Result<(), minijinja::Error>,
) -> std::result::Result<(), minijinja::Error> {
    out.push(open);
    for i in 0..len {
        match indent {
            Some(n) => {
                out.push_str(if i == 0 { "\n" } else { ",\n" });
                out.push_str(&" ".repeat(n * (level + 1)));
            }
            None if i > 0 => out.push_str(", "),
            None => {}
        }
        item(i, out)?;
    }
    if let (Some(n), true) = (indent, len > 0) {
        out.push('\n');
        out.push_str(&" ".repeat(n * level));
    }
    out.push(close);
    Ok(())
}

fn json_string(s: &str) -> String {
    // serde_json leaves non-ASCII as is, like ensure_ascii=False.
    serde_json::Value::String(s.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conversation() -> Vec<ChatMessage> {
        vec![
            ChatMessage::new("system", "  Be brief.  "),
            ChatMessage::new("user", "Hi!"),
            ChatMessage::new("assistant", "Hello."),
            ChatMessage::new("user", "Bye"),
        ]
    }

    fn smollm2_template() -> ChatTemplate {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/tokenizer/smollm2_chat_template.jinja"
        );
        let source = std::fs::read_to_string(path).unwrap();
        ChatTemplate::new(&source, "<|im_start|>", "<|im_end|>").unwrap()
    }

    #[test]
    fn smollm2_chatml() {
        let t = smollm2_template();
        let user = [ChatMessage::new("user", "What is 2+2?")];
        let want = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
                    <|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n";
        assert_eq!(t.render(&user, true).unwrap(), want);
        let no_prompt = t.render(&user, false).unwrap();
        assert_eq!(no_prompt, want.trim_end_matches("<|im_start|>assistant\n"));
        // A system message replaces the default one.
        let out = t.render(&conversation(), true).unwrap();
        assert!(
            out.starts_with("<|im_start|>system\n  Be brief.  <|im_end|>\n<|im_start|>user\nHi!")
        );
        assert!(!out.contains("SmolLM"));
    }

    /// Llama-3 style: bos_token, loop.first, `| trim`, `.strip()`, whitespace control.
    const LLAMA3_STYLE: &str = r#"{{- bos_token }}
{%- for message in messages %}
    {%- if loop.first and message['role'] != 'system' %}
        {{- '<|start_header_id|>system<|end_header_id|>\n\nDefault.<|eot_id|>' }}
    {%- endif %}
    {%- set content = message['content'] | trim if message.role == 'system' else message.content.strip() %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + content + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"#;

    #[test]
    fn llama3_style_template() {
        let t = ChatTemplate::new(LLAMA3_STYLE, "<|begin_of_text|>", "<|eot_id|>").unwrap();
        let out = t.render(&conversation()[..2], true).unwrap();
        assert_eq!(
            out,
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>\
             <|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        );
        let out = t.render(&conversation()[1..2], false).unwrap();
        assert!(out.starts_with(
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nDefault."
        ));
    }

    /// Mistral style: roles must alternate, enforced with raise_exception.
    const MISTRAL_STYLE: &str = "{{ bos_token }}{% for message in messages %}\
        {% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\
        {{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}\
        {% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}\
        {% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}";

    #[test]
    fn mistral_style_template_and_raise_exception() {
        let t = ChatTemplate::new(MISTRAL_STYLE, "<s>", "</s>").unwrap();
        let out = t.render(&conversation()[1..], false).unwrap();
        assert_eq!(out, "<s>[INST] Hi! [/INST]Hello.</s>[INST] Bye [/INST]");
        let err = t.render(&conversation(), false).unwrap_err();
        assert!(
            matches!(&err, Error::ChatTemplate(m) if m.contains("roles must alternate")),
            "{err}"
        );
    }

    #[test]
    fn syntax_errors_are_chat_template_errors() {
        let err = ChatTemplate::new("{% for m in messages %}", "", "").unwrap_err();
        assert!(matches!(err, Error::ChatTemplate(_)), "{err}");
    }

    #[test]
    fn tojson_and_python_string_methods() {
        let src = "{{ messages | tojson }}|{{ messages[0] | tojson(indent=2) }}|\
                   {{ messages[0].content.startswith('  Be') }}|{{ tools is none }}";
        let t = ChatTemplate::new(src, "", "").unwrap();
        let out = t.render(&conversation()[..2], false).unwrap();
        let want = r#"[{"role": "system", "content": "  Be brief.  "}, {"role": "user", "content": "Hi!"}]|{
  "role": "system",
  "content": "  Be brief.  "
}|True|True"#;
        assert_eq!(out, want);
    }

    #[test]
    fn strftime_formats_utc_dates() {
        // 2024-07-26 13:05:09 UTC, and a leap day.
        assert_eq!(
            format_utc("%d %b %Y %H:%M:%S %% %q", 1_722_000_309),
            "26 Jul 2024 13:25:09 % %q"
        );
        assert_eq!(
            format_utc("%Y-%m-%d %B", 951_782_400),
            "2000-02-29 February"
        );
        assert_eq!(format_utc("%Y-%m-%d", 0), "1970-01-01");
        let t = ChatTemplate::new("{{ strftime_now('%Y') }}", "", "").unwrap();
        assert!(t.render(&[], false).unwrap().parse::<u32>().unwrap() >= 2024);
    }
}
