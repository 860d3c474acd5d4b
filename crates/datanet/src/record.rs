//! Records: normalised training examples and their content ids.

use serde::{Deserialize, Serialize};

use crate::hash::{Hash32, canonical_json};

/// One training example, in one of the three shapes datasets come in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Example {
    /// Plain text (pre-training style, or a chunk of a document).
    Text {
        /// The text.
        text: String,
    },
    /// An instruction with optional input and the expected response (alpaca style).
    Instruction {
        /// What to do.
        instruction: String,
        /// Extra context for the instruction (may be empty).
        input: String,
        /// The expected answer.
        output: String,
    },
    /// A conversation (sharegpt / OpenAI `messages` style).
    Chat {
        /// The turns, in order.
        messages: Vec<Message>,
    },
}

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// What was said.
    pub content: String,
}

/// Normalises one text field: CRLF and CR become LF, and surrounding whitespace
/// goes, so that the same content typed on different systems gets one id.
pub fn normalise_text(text: &str) -> String {
    text.replace("\r\n", "\n")
        .replace('\r', "\n")
        .trim()
        .to_owned()
}

impl Example {
    /// The same example with every text field normalised.
    pub fn normalised(self) -> Self {
        match self {
            Self::Text { text } => Self::Text {
                text: normalise_text(&text),
            },
            Self::Instruction {
                instruction,
                input,
                output,
            } => Self::Instruction {
                instruction: normalise_text(&instruction),
                input: normalise_text(&input),
                output: normalise_text(&output),
            },
            Self::Chat { messages } => Self::Chat {
                messages: messages
                    .into_iter()
                    .map(|m| Message {
                        role: m.role.trim().to_lowercase(),
                        content: normalise_text(&m.content),
                    })
                    .collect(),
            },
        }
    }

    /// The canonical form: compact JSON with sorted keys (see [`canonical_json`]).
    pub fn canonical(&self) -> String {
        // Serialising these plain structs to a JSON value cannot fail.
        let value = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        canonical_json(&value)
    }

    /// The content id: SHA-256 of the canonical form.
    pub fn content_id(&self) -> Hash32 {
        Hash32::sha256(self.canonical().as_bytes())
    }

    /// All the example's text, joined: what duplicate detection compares.
    pub fn text(&self) -> String {
        match self {
            Self::Text { text } => text.clone(),
            Self::Instruction {
                instruction,
                input,
                output,
            } => [instruction.as_str(), input, output].join("\n"),
            Self::Chat { messages } => messages
                .iter()
                .map(|m| m.content.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    /// Length in characters of all text fields.
    pub fn chars(&self) -> usize {
        match self {
            Self::Text { text } => text.chars().count(),
            Self::Instruction {
                instruction,
                input,
                output,
            } => [instruction, input, output]
                .iter()
                .map(|s| s.chars().count())
                .sum(),
            Self::Chat { messages } => messages.iter().map(|m| m.content.chars().count()).sum(),
        }
    }

    /// Whether there is no content a model could learn from.
    pub fn is_empty(&self) -> bool {
        match self {
            Self::Text { text } => text.is_empty(),
            Self::Instruction {
                instruction,
                output,
                ..
            } => instruction.is_empty() || output.is_empty(),
            Self::Chat { messages } => messages.iter().all(|m| m.content.is_empty()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_id_ignores_line_endings_and_outer_space() {
        let a = Example::Text {
            text: " hello\r\nworld \n".into(),
        }
        .normalised();
        let b = Example::Text {
            text: "hello\nworld".into(),
        }
        .normalised();
        assert_eq!(a.content_id(), b.content_id());
        assert_eq!(a.canonical(), r#"{"kind":"text","text":"hello\nworld"}"#);
    }

    #[test]
    fn shapes_with_the_same_words_have_different_ids() {
        let text = Example::Text { text: "hi".into() };
        let chat = Example::Chat {
            messages: vec![Message {
                role: "user".into(),
                content: "hi".into(),
            }],
        };
        assert_ne!(text.content_id(), chat.content_id());
        assert_eq!(chat.text(), "hi");
    }

    #[test]
    fn emptiness_depends_on_the_shape() {
        let instruction = Example::Instruction {
            instruction: "do".into(),
            input: String::new(),
            output: String::new(),
        };
        assert!(instruction.is_empty());
        assert!(Example::Chat { messages: vec![] }.is_empty());
        assert!(!Example::Text { text: "x".into() }.is_empty());
    }
}
