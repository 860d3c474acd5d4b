//! Text ⇄ token ids, built either from GGUF metadata or from a Hugging Face
//! `tokenizer.json`.
//!
//! The heavy lifting (BPE merges, added-token matching, byte-level mapping) is
//! done by the `tokenizers` crate; this module's job is to translate what a GGUF
//! file stores (`tokenizer.ggml.*`) into the equivalent `tokenizers` pipeline, so
//! that our ids match llama.cpp's for the same file. GGUF does not store the
//! pre-tokenizer regex, only a label (`tokenizer.ggml.pre`), so the label is
//! mapped to the regexes llama.cpp uses for it; an unknown label is an error
//! rather than a silent fallback, because a wrong regex gives plausible but
//! different ids (and a quietly worse model).

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{BPE, Merges, Vocab};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper,
    SplitDelimiterBehavior,
};

use crate::error::{Error, Result};

/// Tokenizer description as stored in GGUF metadata (`tokenizer.ggml.*`).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct GgufTokenizerSpec {
    /// `tokenizer.ggml.model`: `"gpt2"` (byte-level BPE) or `"llama"`
    /// (SentencePiece BPE with scores and `<0xNN>` byte-fallback tokens).
    pub model: String,
    /// `tokenizer.ggml.pre`: pre-tokenizer label (`"smollm"`, `"llama-bpe"`, `"qwen2"`, …).
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`: token text by id.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.token_type`: 1 normal, 2 unknown, 3 control, 4 user-defined,
    /// 5 unused, 6 byte.
    pub token_types: Option<Vec<i32>>,
    /// `tokenizer.ggml.scores`: SentencePiece piece scores (higher merges first).
    pub scores: Option<Vec<f32>>,
    /// `tokenizer.ggml.merges`: `"left right"` pairs in priority order (gpt2 model).
    pub merges: Option<Vec<String>>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos_id: Option<u32>,
    /// `tokenizer.ggml.unknown_token_id`.
    pub unk_id: Option<u32>,
    /// `tokenizer.ggml.padding_token_id`.
    pub pad_id: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`.
    pub add_bos: Option<bool>,
    /// `tokenizer.ggml.add_eos_token`.
    pub add_eos: Option<bool>,
    /// `tokenizer.ggml.add_space_prefix` (SentencePiece models).
    pub add_space_prefix: Option<bool>,
}

/// GGUF token types, numbered as llama.cpp numbers them.
mod token_type {
    pub(super) const UNDEFINED: i32 = 0;
    pub(super) const NORMAL: i32 = 1;
    pub(super) const UNKNOWN: i32 = 2;
    pub(super) const CONTROL: i32 = 3;
    pub(super) const USER_DEFINED: i32 = 4;
}

/// Token texts that end a turn in common chat formats. Generation stops on any
/// of them that the vocabulary has, not only on the declared EOS, because chat
/// models often declare `<|endoftext|>` as EOS but end turns with `<|im_end|>`
/// (or the reverse).
const END_OF_TURN_TOKENS: &[&str] = &[
    "<|im_end|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
];

/// The Llama-3 pre-tokenizer regex (contractions, letter runs, 1–3 digit groups).
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// The Qwen2 pre-tokenizer regex: as Llama-3 but every digit on its own.
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// The original GPT-2 regex, used as one step of llama.cpp's `default` chain.
const GPT2_REGEX: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// SentencePiece's visible space.
const SPM_SPACE: &str = "\u{2581}";

/// A tokenizer plus the special-token facts generation needs. Cloning is cheap.
#[derive(Clone)]
pub struct Tokenizer {
    inner: Arc<tokenizers::Tokenizer>,
    vocab_size: usize,
    bos_id: Option<u32>,
    eos_ids: Vec<u32>,
    /// BOS/EOS are added by us rather than by a post-processor (always for GGUF;
    /// for `tokenizer.json` when `tokenizer_config.json` states the flags).
    manual_specials: Option<(bool, bool)>,
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size)
            .field("bos_id", &self.bos_id)
            .field("eos_ids", &self.eos_ids)
            .finish_non_exhaustive()
    }
}

fn tok_err(msg: impl Into<String>) -> Error {
    Error::Tokenizer(msg.into())
}

impl Tokenizer {
    /// Builds the tokenizer a GGUF file describes.
    ///
    /// Errors name the offending metadata: an unknown model or pre-tokenizer
    /// label, array lengths that disagree with the token count, missing merges
    /// (gpt2) or scores (llama), special ids out of range.
    pub fn from_gguf(spec: GgufTokenizerSpec) -> Result<Tokenizer> {
        spec.validate()?;
        let inner = match spec.model.as_str() {
            "gpt2" => build_byte_level(&spec)?,
            "llama" => build_sentencepiece(&spec)?,
            other => {
                return Err(tok_err(format!(
                    "unsupported tokenizer.ggml.model `{other}` (supported: gpt2, llama)"
                )));
            }
        };
        let default_bos = spec.model == "llama" || is_llama3_label(spec.pre.as_deref());
        let add_bos = spec.add_bos.unwrap_or(default_bos) && spec.bos_id.is_some();
        let add_eos = spec.add_eos.unwrap_or(false) && spec.eos_id.is_some();
        Ok(Self::assemble(
            inner,
            spec.tokens.len(),
            spec.bos_id,
            spec.eos_id,
            Some((add_bos, add_eos)),
        ))
    }

    /// Loads a Hugging Face `tokenizer.json`, taking BOS/EOS (and the
    /// `add_bos_token`/`add_eos_token` flags) from `tokenizer_config.json` when given.
    ///
    /// Without explicit flags the file's own post-processor decides what
    /// `encode(.., add_special = true)` adds, as in `transformers`.
    pub fn from_file(
        tokenizer_json: &Path,
        tokenizer_config_json: Option<&Path>,
    ) -> Result<Tokenizer> {
        let mut inner = tokenizers::Tokenizer::from_file(tokenizer_json)
            .map_err(|e| tok_err(format!("cannot load {}: {e}", tokenizer_json.display())))?;
        let config = match tokenizer_config_json {
            Some(path) => read_json(path)?,
            None => serde_json::Value::Null,
        };
        let id_of = |key: &str| config_token(&config, key).and_then(|t| inner.token_to_id(&t));
        let (bos_id, eos_id) = (id_of("bos_token"), id_of("eos_token"));
        let flag = |key: &str| config.get(key).and_then(serde_json::Value::as_bool);
        let manual = match (flag("add_bos_token"), flag("add_eos_token")) {
            (None, None) => None,
            (bos, eos) => {
                // The explicit flags replace whatever the post-processor would add.
                inner.with_post_processor(None::<PostProcessorWrapper>);
                Some((
                    bos.unwrap_or(false) && bos_id.is_some(),
                    eos.unwrap_or(false) && eos_id.is_some(),
                ))
            }
        };
        let vocab_size = inner.get_vocab_size(true);
        Ok(Self::assemble(inner, vocab_size, bos_id, eos_id, manual))
    }

    fn assemble(
        inner: tokenizers::Tokenizer,
        vocab_size: usize,
        bos_id: Option<u32>,
        eos_id: Option<u32>,
        manual_specials: Option<(bool, bool)>,
    ) -> Tokenizer {
        let mut eos_ids: Vec<u32> = eos_id.into_iter().collect();
        for id in END_OF_TURN_TOKENS
            .iter()
            .filter_map(|t| inner.token_to_id(t))
        {
            if !eos_ids.contains(&id) {
                eos_ids.push(id);
            }
        }
        Tokenizer {
            inner: Arc::new(inner),
            vocab_size,
            bos_id,
            eos_ids,
            manual_specials,
        }
    }

    /// Encodes `text`. Special tokens written literally (`<|im_start|>`) become
    /// their single id. With `add_special`, BOS/EOS are added as the model asks.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let via_post_processor = add_special && self.manual_specials.is_none();
        let encoding = self
            .inner
            .encode(text, via_post_processor)
            .map_err(|e| tok_err(format!("encoding failed: {e}")))?;
        let (add_bos, add_eos) = match self.manual_specials {
            Some(flags) if add_special => flags,
            _ => (false, false),
        };
        let mut ids = Vec::with_capacity(encoding.len() + 2);
        ids.extend(self.bos_id.filter(|_| add_bos));
        ids.extend_from_slice(encoding.get_ids());
        ids.extend(self.eos_ids.first().copied().filter(|_| add_eos));
        Ok(ids)
    }

    /// Decodes `ids` to text; `skip_special` drops control tokens (BOS, `<|im_end|>`, …).
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= self.vocab_size) {
            return Err(tok_err(format!(
                "token id {bad} is out of range (vocabulary has {} tokens)",
                self.vocab_size
            )));
        }
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| tok_err(format!("decoding failed: {e}")))
    }

    /// Number of token ids (including special tokens).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The beginning-of-sequence id, if the model has one.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// Ids that end generation: the declared EOS first, then every end-of-turn
    /// token (`<|im_end|>`, `<|eot_id|>`, `<|end|>`, …) present in the vocabulary.
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    /// The id of a token given its stored text (`"<|im_end|>"`, `"Ġthe"`).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The stored text of a token id.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }
}

impl GgufTokenizerSpec {
    fn validate(&self) -> Result<()> {
        let n = self.tokens.len();
        if n == 0 {
            return Err(tok_err("tokenizer.ggml.tokens is empty"));
        }
        if u32::try_from(n).is_err() {
            return Err(tok_err(format!(
                "tokenizer.ggml.tokens has {n} entries, more than u32 ids allow"
            )));
        }
        if let Some(types) = &self.token_types {
            check_len("tokenizer.ggml.token_type", types.len(), n)?;
            if let Some((id, ty)) = types
                .iter()
                .enumerate()
                .find(|(_, t)| !(0..=6).contains(*t))
            {
                return Err(tok_err(format!("token {id} has unknown token type {ty}")));
            }
        }
        if let Some(scores) = &self.scores {
            check_len("tokenizer.ggml.scores", scores.len(), n)?;
        }
        let ids = [
            ("bos", self.bos_id),
            ("eos", self.eos_id),
            ("unknown", self.unk_id),
            ("padding", self.pad_id),
        ];
        for (name, id) in ids {
            if let Some(id) = id.filter(|&id| id as usize >= n) {
                return Err(tok_err(format!(
                    "tokenizer.ggml.{name}_token_id {id} is out of range (vocabulary has {n} tokens)"
                )));
            }
        }
        Ok(())
    }

    fn token_type(&self, id: usize) -> i32 {
        self.token_types
            .as_ref()
            .and_then(|t| t.get(id).copied())
            .unwrap_or(token_type::NORMAL)
    }

    /// Tokens matched in raw text before BPE: control, unknown and user-defined
    /// tokens (as llama.cpp does when parsing specials), plus BOS/EOS/UNK/PAD even
    /// when a file forgot to type them as control.
    fn added_tokens(&self) -> Vec<AddedToken> {
        let declared: HashSet<usize> = [self.bos_id, self.eos_id, self.unk_id, self.pad_id]
            .into_iter()
            .flatten()
            .map(|id| id as usize)
            .collect();
        let mut added = Vec::new();
        for (id, text) in self
            .tokens
            .iter()
            .enumerate()
            .filter(|(_, t)| !t.is_empty())
        {
            match self.token_type(id) {
                token_type::CONTROL | token_type::UNKNOWN => {
                    added.push(AddedToken::from(text.clone(), true))
                }
                // User-defined tokens are plain text that must not be split, not specials:
                // `decode(.., skip_special = true)` keeps them, like llama.cpp.
                token_type::USER_DEFINED => {
                    added.push(AddedToken::from(text.clone(), false).normalized(false))
                }
                _ if declared.contains(&id) => added.push(AddedToken::from(text.clone(), true)),
                _ => {}
            }
        }
        added
    }
}

fn add_specials(tokenizer: &mut tokenizers::Tokenizer, spec: &GgufTokenizerSpec) -> Result<()> {
    tokenizer
        .add_special_tokens(spec.added_tokens())
        .map(drop)
        .map_err(|e| tok_err(format!("cannot register special tokens: {e}")))
}

fn check_len(key: &str, len: usize, n: usize) -> Result<()> {
    if len == n {
        return Ok(());
    }
    Err(tok_err(format!(
        "{key} has {len} entries but tokenizer.ggml.tokens has {n}"
    )))
}

/// Token text → id; the first id wins when a vocabulary repeats a text.
fn vocab_map(tokens: &[String]) -> Vocab {
    let mut vocab = Vocab::default();
    for (id, text) in (0u32..).zip(tokens) {
        vocab.entry(text.clone()).or_insert(id);
    }
    vocab
}

fn is_llama3_label(pre: Option<&str>) -> bool {
    matches!(pre, Some("llama3" | "llama-v3" | "llama-bpe"))
}

/// Byte-level BPE (`tokenizer.ggml.model = gpt2`): GPT-2, Llama-3, Qwen2, SmolLM, …
fn build_byte_level(spec: &GgufTokenizerSpec) -> Result<tokenizers::Tokenizer> {
    let merges = spec
        .merges
        .as_ref()
        .ok_or_else(|| tok_err("gpt2 tokenizer needs tokenizer.ggml.merges, which is missing"))?;
    let merges = merges
        .iter()
        .map(|m| parse_merge(m))
        .collect::<Result<Merges>>()?;
    let (pre_tokenizer, ignore_merges) = byte_level_pre_tokenizer(spec.pre.as_deref())?;
    let model = BPE::builder()
        .vocab_and_merges(vocab_map(&spec.tokens), merges)
        .ignore_merges(ignore_merges)
        .build()
        .map_err(|e| tok_err(format!("invalid BPE vocabulary/merges: {e}")))?;
    let mut tokenizer = tokenizers::Tokenizer::new(model);
    tokenizer
        .with_pre_tokenizer(Some(pre_tokenizer))
        .with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::default())));
    add_specials(&mut tokenizer, spec)?;
    Ok(tokenizer)
}

/// Splits a GGUF merge `"left right"`. The separator is searched from the second
/// character on, as llama.cpp does, so a left part that is itself a space works.
fn parse_merge(merge: &str) -> Result<(String, String)> {
    let first = merge.chars().next().map_or(0, char::len_utf8);
    let split = merge
        .get(first..)
        .and_then(|rest| rest.find(' '))
        .map(|at| at + first);
    match split {
        Some(at) => Ok((merge[..at].to_owned(), merge[at + 1..].to_owned())),
        None => Err(tok_err(format!(
            "tokenizer.ggml.merges entry `{merge}` is not a `left right` pair"
        ))),
    }
}

/// The pre-tokenizer llama.cpp uses for a `tokenizer.ggml.pre` label, and whether
/// BPE should take a whole pre-token that is in the vocabulary as is
/// (`ignore_merges`, which llama.cpp enables for Llama-3).
fn byte_level_pre_tokenizer(pre: Option<&str>) -> Result<(PreTokenizerWrapper, bool)> {
    let byte_level =
        |use_regex| PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, use_regex));
    let chain = |regexes: &[&str]| -> Result<PreTokenizerWrapper> {
        let mut steps = regexes
            .iter()
            .map(|r| split_isolated(r))
            .collect::<Result<Vec<_>>>()?;
        steps.push(byte_level(false));
        Ok(PreTokenizerWrapper::Sequence(PreSequence::new(steps)))
    };
    match pre {
        Some("gpt2" | "gpt-2" | "phi-2") => Ok((byte_level(true), false)),
        // llama.cpp's "default" (also used when the label is missing) is not plain
        // GPT-2: punctuation runs and digit groups are split off first.
        None | Some("default") => {
            let steps = [
                r"[\p{P}\$\+<=>\^~\|]+",
                GPT2_REGEX,
                r"\p{N}+",
                "[0-9][0-9][0-9]",
            ];
            Ok((chain(&steps)?, false))
        }
        // Every digit on its own, then the GPT-2 split.
        Some("smollm" | "starcoder" | "refact" | "codeshell") => {
            Ok((chain(&[r"\p{N}", GPT2_REGEX])?, false))
        }
        Some(label) if is_llama3_label(Some(label)) => Ok((chain(&[LLAMA3_REGEX])?, true)),
        Some("qwen2" | "deepseek-r1-qwen" | "stablelm2") => Ok((chain(&[QWEN2_REGEX])?, false)),
        Some(other) => Err(tok_err(format!(
            "unsupported tokenizer.ggml.pre `{other}` (supported: default, gpt2, smollm, \
             starcoder, refact, codeshell, llama-bpe/llama3, qwen2, stablelm2)"
        ))),
    }
}

fn split_isolated(regex: &str) -> Result<PreTokenizerWrapper> {
    Split::new(
        SplitPattern::Regex(regex.to_owned()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map(PreTokenizerWrapper::Split)
    .map_err(|e| tok_err(format!("bad pre-tokenizer regex {regex:?}: {e}")))
}

/// SentencePiece BPE (`tokenizer.ggml.model = llama`): Llama 2, Mistral, TinyLlama.
///
/// Spaces become `▁`, a `▁` is prefixed to each text run (llama.cpp prefixes the
/// start and every run after a special token, which is what a per-segment
/// normalizer does), and characters missing from the vocabulary fall back to
/// `<0xNN>` byte tokens.
fn build_sentencepiece(spec: &GgufTokenizerSpec) -> Result<tokenizers::Tokenizer> {
    let vocab = vocab_map(&spec.tokens);
    let merges = merges_from_scores(spec, &vocab)?;
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(unk) = spec.unk_id.and_then(|id| spec.tokens.get(id as usize)) {
        builder = builder.unk_token(unk.clone());
    }
    let model = builder
        .build()
        .map_err(|e| tok_err(format!("invalid SentencePiece vocabulary: {e}")))?;
    let prefix = spec.add_space_prefix.unwrap_or(true);
    let replace = |from: &str, to: &str| {
        Replace::new(from, to).map_err(|e| tok_err(format!("cannot build space replacement: {e}")))
    };
    let mut normalizers = Vec::new();
    if prefix {
        normalizers.push(NormalizerWrapper::Prepend(Prepend::new(
            SPM_SPACE.to_owned(),
        )));
    }
    normalizers.push(NormalizerWrapper::Replace(replace(" ", SPM_SPACE)?));
    let mut decoders = vec![
        DecoderWrapper::Replace(replace(SPM_SPACE, " ")?),
        DecoderWrapper::ByteFallback(ByteFallback::new()),
        DecoderWrapper::Fuse(Fuse::new()),
    ];
    if prefix {
        // Undo the prefix space of the first piece (llama.cpp does the same).
        decoders.push(DecoderWrapper::Strip(Strip::new(' ', 1, 0)));
    }
    let mut tokenizer = tokenizers::Tokenizer::new(model);
    tokenizer
        .with_normalizer(Some(NormalizerWrapper::Sequence(NormalizerSequence::new(
            normalizers,
        ))))
        .map_err(|e| tok_err(format!("cannot set normalizer: {e}")))?;
    tokenizer.with_decoder(Some(DecoderWrapper::Sequence(DecoderSequence::new(
        decoders,
    ))));
    add_specials(&mut tokenizer, spec)?;
    Ok(tokenizer)
}

/// SentencePiece BPE merges the adjacent pair whose concatenation is the
/// highest-scoring piece. Expressed as ranked merges: every split of a piece
/// into two pieces is a merge, ranked by the whole piece's score (ties: lower id).
fn merges_from_scores(spec: &GgufTokenizerSpec, vocab: &Vocab) -> Result<Merges> {
    let scores = spec.scores.as_ref().ok_or_else(|| {
        tok_err("llama (SentencePiece) tokenizer needs tokenizer.ggml.scores, which is missing")
    })?;
    // Control, unknown and byte tokens are never the result or part of a merge:
    // a literal "<0x41>" in the text must not turn into the byte 'A'.
    let mergeable = |id: u32| {
        matches!(
            spec.token_type(id as usize),
            token_type::NORMAL | token_type::USER_DEFINED | token_type::UNDEFINED
        )
    };
    let mut ranked: Vec<(f32, u32, u32, &str, &str)> = Vec::new();
    for (id, text) in (0u32..).zip(&spec.tokens) {
        if !mergeable(id) || vocab.get(text) != Some(&id) {
            continue;
        }
        for (at, _) in text.char_indices().skip(1) {
            let (left, right) = text.split_at(at);
            if let (Some(&l), Some(&r)) = (vocab.get(left), vocab.get(right))
                && mergeable(l)
                && mergeable(r)
            {
                ranked.push((scores[id as usize], id, l, left, right));
            }
        }
    }
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    Ok(ranked
        .into_iter()
        .map(|(.., l, r)| (l.to_owned(), r.to_owned()))
        .collect())
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| tok_err(format!("{} is not valid JSON: {e}", path.display())))
}

/// A token named in `tokenizer_config.json`: either `"<s>"` or `{"content": "<s>", …}`.
fn config_token(config: &serde_json::Value, key: &str) -> Option<String> {
    match config.get(key)? {
        serde_json::Value::String(s) => Some(s.clone()),
        value => value.get("content")?.as_str().map(str::to_owned),
    }
}

#[cfg(test)]
pub(crate) mod tests;
