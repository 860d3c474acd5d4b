//! Tokenizer tests: synthetic vocabularies for each model kind and pre-tokenizer label,
//! bad metadata, and the real model against llama.cpp's ids.

use super::*;

/// GPT-2's byte → printable char table, rebuilt here so the test vocabulary
/// is independent of the code under test.
fn byte_chars() -> Vec<char> {
    let printable = |b: u32| (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || b >= 0xae;
    let mut next = 256;
    (0u32..256)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).expect("valid scalar")
            } else {
                next += 1;
                char::from_u32(next - 1).expect("valid scalar")
            }
        })
        .collect()
}

/// A byte-level vocabulary: 2 control tokens, the 256 byte chars, then merges.
pub(crate) fn gpt2_spec(pre: &str) -> GgufTokenizerSpec {
    let mut tokens = vec!["<|endoftext|>".to_owned(), "<|im_end|>".to_owned()];
    tokens.extend(byte_chars().iter().map(char::to_string));
    let merges = ["Ġ t", "h e", "Ġt he", "1 2", "12 3"];
    tokens.extend(["Ġt", "he", "Ġthe", "12", "123"].map(str::to_owned));
    let mut token_types = vec![1; tokens.len()];
    token_types[..2].fill(3);
    GgufTokenizerSpec {
        model: "gpt2".into(),
        pre: Some(pre.into()),
        token_types: Some(token_types),
        merges: Some(merges.map(str::to_owned).to_vec()),
        tokens,
        eos_id: Some(0),
        ..GgufTokenizerSpec::default()
    }
}

fn ids_of(tok: &Tokenizer, texts: &[&str]) -> Vec<u32> {
    texts
        .iter()
        .map(|t| tok.token_to_id(t).expect("token in vocab"))
        .collect()
}

#[test]
fn byte_level_bpe_merges_and_parses_specials() {
    let tok = Tokenizer::from_gguf(gpt2_spec("gpt2")).unwrap();
    let ids = tok.encode("the the<|im_end|>", true).unwrap();
    assert_eq!(ids, ids_of(&tok, &["t", "he", "Ġthe", "<|im_end|>"]));
    assert_eq!(tok.decode(&ids, false).unwrap(), "the the<|im_end|>");
    assert_eq!(tok.decode(&ids, true).unwrap(), "the the");
    // Non-ASCII goes through the byte table and comes back intact.
    let ids = tok.encode("é🚀", false).unwrap();
    assert_eq!(ids.len(), 6);
    assert_eq!(tok.decode(&ids, false).unwrap(), "é🚀");
    assert_eq!(
        tok.eos_ids(),
        &ids_of(&tok, &["<|endoftext|>", "<|im_end|>"])[..]
    );
    assert_eq!(tok.bos_id(), None);
}

#[test]
fn pre_label_selects_digit_splitting() {
    // GPT-2 keeps digit runs together, so the "1 2"/"12 3" merges apply…
    let gpt2 = Tokenizer::from_gguf(gpt2_spec("gpt2")).unwrap();
    assert_eq!(gpt2.encode("123", false).unwrap(), ids_of(&gpt2, &["123"]));
    // …SmolLM splits every digit first, like llama.cpp's LLAMA_VOCAB_PRE_TYPE_SMOLLM.
    let smol = Tokenizer::from_gguf(gpt2_spec("smollm")).unwrap();
    assert_eq!(
        smol.encode("123", false).unwrap(),
        ids_of(&smol, &["1", "2", "3"])
    );
    // Llama-3 and llama.cpp's default group digits by three; Qwen2 splits them.
    for (pre, want) in [
        ("llama-bpe", vec!["123", "4"]),
        ("default", vec!["123", "4"]),
        ("qwen2", vec!["1", "2", "3", "4"]),
    ] {
        let tok = Tokenizer::from_gguf(gpt2_spec(pre)).unwrap();
        assert_eq!(
            tok.encode("1234", false).unwrap(),
            ids_of(&tok, &want),
            "pre = {pre}"
        );
    }
}

fn err_of(spec: GgufTokenizerSpec) -> String {
    Tokenizer::from_gguf(spec)
        .expect_err("must be rejected")
        .to_string()
}

#[test]
fn bad_metadata_is_rejected_with_the_reason() {
    assert!(err_of(gpt2_spec("mystery-pre")).contains("`mystery-pre`"));
    let mut spec = gpt2_spec("gpt2");
    spec.merges = None;
    assert!(err_of(spec).contains("tokenizer.ggml.merges"));
    let mut spec = gpt2_spec("gpt2");
    spec.token_types.as_mut().unwrap().pop();
    assert!(err_of(spec).contains("tokenizer.ggml.token_type has"));
    let mut spec = gpt2_spec("gpt2");
    spec.scores = Some(vec![0.0; 3]);
    assert!(err_of(spec).contains("tokenizer.ggml.scores has 3 entries"));
    let mut spec = gpt2_spec("gpt2");
    spec.bos_id = Some(100_000);
    assert!(err_of(spec).contains("bos_token_id 100000 is out of range"));
    let mut spec = gpt2_spec("gpt2");
    spec.token_types.as_mut().unwrap()[5] = 9;
    assert!(err_of(spec).contains("unknown token type 9"));
    let mut spec = gpt2_spec("gpt2");
    spec.merges = Some(vec!["nospace".into()]);
    assert!(err_of(spec).contains("`nospace`"));
    let mut spec = gpt2_spec("gpt2");
    spec.model = "bert".into();
    assert!(err_of(spec).contains("`bert`"));
    let mut spec = spm_spec(true);
    spec.scores = None;
    assert!(err_of(spec).contains("tokenizer.ggml.scores"));
    assert!(
        err_of(GgufTokenizerSpec {
            model: "gpt2".into(),
            ..Default::default()
        })
        .contains("empty")
    );
}

#[test]
fn decode_rejects_out_of_range_ids() {
    let tok = Tokenizer::from_gguf(gpt2_spec("gpt2")).unwrap();
    let err = tok.decode(&[1, 999_999], false).unwrap_err().to_string();
    assert!(err.contains("999999"), "{err}");
}

/// A small Llama-2-style SentencePiece vocabulary: <unk>, <s>, </s>, the 256
/// byte tokens, then pieces whose scores make "▁hello" and "▁world" win.
pub(crate) fn spm_spec(add_space_prefix: bool) -> GgufTokenizerSpec {
    let mut tokens = vec!["<unk>".to_owned(), "<s>".to_owned(), "</s>".to_owned()];
    let mut token_types = vec![2, 3, 3];
    tokens.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
    token_types.extend([6; 256]);
    let pieces = [
        "▁",
        "h",
        "e",
        "l",
        "o",
        "w",
        "r",
        "d",
        "▁h",
        "ll",
        "▁he",
        "llo",
        "▁hello",
        "▁w",
        "or",
        "▁wor",
        "ld",
        "▁world",
        "he",
        "<|im_end|>",
    ];
    tokens.extend(pieces.map(str::to_owned));
    token_types.extend(pieces.map(|p| if p == "<|im_end|>" { 3 } else { 1 }));
    // Longer pieces score higher, so they are merged first (like real SentencePiece).
    let scores = tokens.iter().map(|t| t.chars().count() as f32).collect();
    GgufTokenizerSpec {
        model: "llama".into(),
        tokens,
        token_types: Some(token_types),
        scores: Some(scores),
        bos_id: Some(1),
        eos_id: Some(2),
        unk_id: Some(0),
        add_space_prefix: Some(add_space_prefix),
        ..GgufTokenizerSpec::default()
    }
}

#[test]
fn sentencepiece_merges_by_score_with_byte_fallback() {
    let tok = Tokenizer::from_gguf(spm_spec(true)).unwrap();
    assert_eq!(
        tok.encode("hello world", false).unwrap(),
        ids_of(&tok, &["▁hello", "▁world"])
    );
    // BOS is added by default for SentencePiece models; EOS is not.
    let ids = tok.encode("hello", true).unwrap();
    assert_eq!(ids, ids_of(&tok, &["<s>", "▁hello"]));
    assert_eq!(tok.decode(&ids, true).unwrap(), "hello");
    // 'é' is not a piece: it falls back to its two UTF-8 bytes and decodes back.
    let ids = tok.encode("hé", false).unwrap();
    assert_eq!(ids, ids_of(&tok, &["▁h", "<0xC3>", "<0xA9>"]));
    assert_eq!(tok.decode(&ids, false).unwrap(), "hé");
    // A space prefix follows a special token too (llama.cpp's is_prev_special rule).
    let ids = tok.encode("hello<|im_end|>world", false).unwrap();
    assert_eq!(ids, ids_of(&tok, &["▁hello", "<|im_end|>", "▁world"]));
    assert_eq!(tok.encode("", false).unwrap(), Vec::<u32>::new());
    assert_eq!(tok.eos_ids(), &ids_of(&tok, &["</s>", "<|im_end|>"])[..]);
}

#[test]
fn sentencepiece_without_space_prefix() {
    let tok = Tokenizer::from_gguf(spm_spec(false)).unwrap();
    assert_eq!(
        tok.encode("hello world", false).unwrap(),
        ids_of(&tok, &["he", "llo", "▁world"])
    );
    assert_eq!(
        tok.decode(&tok.encode("hello world", false).unwrap(), false)
            .unwrap(),
        "hello world"
    );
}

#[test]
fn from_file_reads_special_tokens_from_config() {
    let dir = std::env::temp_dir().join(format!("credence-tok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("tokenizer.json");
    let source = Tokenizer::from_gguf(spm_spec(true)).unwrap();
    source.inner.save(&json, false).unwrap();
    let config = dir.join("tokenizer_config.json");
    let cfg = r#"{"bos_token": {"content": "<s>"}, "eos_token": "</s>", "add_bos_token": true}"#;
    std::fs::write(&config, cfg).unwrap();
    let tok = Tokenizer::from_file(&json, Some(&config)).unwrap();
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eos_ids()[0], 2);
    assert_eq!(
        tok.encode("hello", true).unwrap(),
        ids_of(&tok, &["<s>", "▁hello"])
    );
    assert_eq!(tok.vocab_size(), source.vocab_size());
    let plain = Tokenizer::from_file(&json, None).unwrap();
    assert_eq!(plain.bos_id(), None);
    assert_eq!(
        plain.encode("hello", true).unwrap(),
        ids_of(&tok, &["▁hello"])
    );
    assert!(Tokenizer::from_file(&dir.join("missing.json"), None).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The real model's tokenizer (loaded once), or `None` with a notice when
/// the GGUF is not on disk. CI always fetches it.
pub(crate) fn real_model_tokenizer() -> Option<Tokenizer> {
    static REAL: std::sync::OnceLock<Option<Tokenizer>> = std::sync::OnceLock::new();
    REAL.get_or_init(|| {
        // Same lookup as the integration tests: explicit file, then the model cache.
        let cache = std::env::var_os("CREDENCE_HOME").map_or_else(
            || Path::new(&std::env::var_os("HOME").unwrap_or_default()).join(".cache/credence"),
            std::path::PathBuf::from,
        );
        let path = std::env::var_os("CREDENCE_MODEL_GGUF").map_or_else(
            || cache.join("models/SmolLM2-135M-Instruct.Q4_1.gguf"),
            std::path::PathBuf::from,
        );
        if !path.exists() {
            eprintln!(
                "skipping real-model tokenizer tests: {} not found (set CREDENCE_MODEL_GGUF)",
                path.display()
            );
            return None;
        }
        let spec = crate::gguf::GgufFile::open(&path)
            .unwrap()
            .tokenizer_spec()
            .unwrap();
        Some(Tokenizer::from_gguf(spec).unwrap())
    })
    .clone()
}

#[derive(serde::Deserialize)]
struct SpmFixture {
    spec: GgufTokenizerSpec,
    cases: Vec<Case>,
}

#[test]
fn sentencepiece_matches_llama_cpp() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/tokenizer/spm_tiny.json"
    );
    let fixture: SpmFixture =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let tok = Tokenizer::from_gguf(fixture.spec).unwrap();
    for case in &fixture.cases {
        assert_eq!(
            tok.encode(&case.text, false).unwrap(),
            case.ids,
            "{:?}",
            case.text
        );
        // The reference renders token by token, keeping the prefix space that
        // llama_detokenize (and our decoder) removes from the first piece.
        let want = case.decoded.strip_prefix(' ').unwrap_or(&case.decoded);
        assert_eq!(tok.decode(&case.ids, false).unwrap(), want);
    }
}

#[derive(serde::Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
    decoded: String,
}

#[test]
fn smollm2_matches_llama_cpp() {
    let Some(tok) = real_model_tokenizer() else {
        return;
    };
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/tokenizer/smollm2.json"
    );
    let cases: Vec<Case> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(cases.len() >= 20);
    let mut mismatches = Vec::new();
    for case in &cases {
        let ids = tok.encode(&case.text, false).unwrap();
        if ids != case.ids {
            mismatches.push(format!(
                "{:?}: ours {ids:?}, llama.cpp {:?}",
                case.text, case.ids
            ));
        }
        assert_eq!(tok.decode(&case.ids, false).unwrap(), case.decoded);
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eos_ids(), &[2, 0]);
    assert_eq!(
        tok.encode("Hi", true).unwrap(),
        tok.encode("Hi", false).unwrap(),
        "add_bos_token is false"
    );
}
