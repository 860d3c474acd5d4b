#!/usr/bin/env python3
"""Reference tokenization from llama.cpp (llama-cpp-python).

1. The default model. Writes crates/model/tests/fixtures/tokenizer/smollm2.json: a list of
{"text", "ids", "decoded"} for fixed strings that exercise the pre-tokenizer
(accents, CJK, emoji, code indentation, runs of spaces/newlines/tabs, digits,
ChatML special tokens, the empty string). `ids` are llama.cpp's ids without BOS
and with special tokens parsed; `decoded` is llama.cpp's detokenization of them
(special tokens rendered). The Rust test `tokenizer::tests::smollm2_matches_llama_cpp`
checks that our tokenizer, built from the same GGUF, gives the same ids and text.

2. SentencePiece ("llama" tokenizer model: Llama 2, Mistral), for which the project
ships no real model. The script writes a tiny vocab-only GGUF (byte-fallback
tokens, scored pieces, a control token) to a temporary file, tokenizes seeded
random strings with llama.cpp and writes crates/model/tests/fixtures/tokenizer/spm_tiny.json:
{"spec": <the tokenizer.ggml.* metadata as GgufTokenizerSpec JSON>, "cases": [...]},
checked by `tokenizer::tests::sentencepiece_matches_llama_cpp`.

Usage: <venv with llama-cpp-python>/bin/python scripts/reference/tokenizer_fixture.py [MODEL.gguf]
The model defaults to $CREDENCE_MODEL_GGUF, then
~/.cache/credence/models/SmolLM2-135M-Instruct.Q4_1.gguf.
"""
import json
import os
import pathlib
import random
import struct
import sys
import tempfile

from llama_cpp import Llama

TEXTS = [
    "",
    "a",
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    " leading space",
    "trailing space ",
    "   ",
    "\n",
    "Café déjà vu, naïve façade, Ünïcödé — “quotes”",
    "日本語のテキストと中文字符",
    "Ελληνικά и русский текст",
    "مرحبا بالعالم and हिन्दी पाठ",
    "Emoji: 🚀🔥👍🏽 and a family 👨‍👩‍👧‍👦!",
    "def f(x):\n    return x * 2\n\n\nclass A:\n\tdef g(self):\n\t\tpass\n",
    "multiple     spaces   and\n\n\nnewlines\r\n  \n",
    "tabs\tand\tmore\t\t\ttabs",
    "12345 3.14159",
    "Year 2024, phone +1-555-0123, total 1,000,000.50",
    "Math: ∑ x² ≤ ∞, ½ + ¼ = ¾, Ⅻ",
    "I'm sure they'll say it's fine, won't they? We've DONE it, I'D say.",
    "URL: https://example.com/path?q=1&x=2#frag",
    'JSON {"key": [1, 2, 3], "nested": {"a": null}}',
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>text after a special token",
    "text <|im_end|> <|im_start|> spaced specials",
    "<|im_start not a special",
    "zero\u200bwidth, ﬁ ligature, NBSP\u00a0here",
]


def default_model() -> str:
    env = os.environ.get("CREDENCE_MODEL_GGUF")
    if env:
        return env
    return str(pathlib.Path.home() / ".cache/credence/models/SmolLM2-135M-Instruct.Q4_1.gguf")


FIXTURES = pathlib.Path(__file__).resolve().parents[2] / "crates/model/tests/fixtures/tokenizer"


def tokenize_all(llm: Llama, texts: list) -> list:
    cases = []
    for text in texts:
        ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        decoded = llm.detokenize(ids, special=True).decode("utf-8", errors="replace")
        cases.append({"text": text, "ids": ids, "decoded": decoded})
    return cases


def json_lines(cases: list) -> str:
    # One case per line keeps the file short and its diffs readable.
    return "[\n" + ",\n".join(" " + json.dumps(c, ensure_ascii=False) for c in cases) + "\n]"


# --- SentencePiece: a tiny vocab-only GGUF -----------------------------------

SPM_PIECES = [
    "▁", "h", "e", "l", "o", "w", "r", "d", "a", "b", "▁h", "ll", "▁he", "llo", "▁hello",
    "▁w", "or", "▁wor", "ld", "▁world", "he", "ab", "▁a", "▁ab", "ba", "aba", "日", "本",
    "日本", "▁▁", "▁▁▁▁", "<|im_end|>",
]
SPM_ALPHABET = ["h", "e", "l", "o", "w", "r", "d", "a", "b", " ", "  ", "日", "本", "é", "🚀",
                "<|im_end|>", "<s>", "hello", " world", "\n", "x"]


def spm_spec() -> dict:
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + SPM_PIECES
    types = [2, 3, 3] + [6] * 256 + [3 if p.startswith("<|") else 1 for p in SPM_PIECES]
    # Longer pieces first, ties broken by id, as in real SentencePiece vocabularies.
    scores = [round(len(t) - i / 1e4, 4) for i, t in enumerate(tokens)]
    return {"model": "llama", "pre": None, "tokens": tokens, "token_types": types, "scores": scores,
            "merges": None, "bos_id": 1, "eos_id": 2, "unk_id": 0, "pad_id": None,
            "add_bos": None, "add_eos": None, "add_space_prefix": True}


def gguf_kv(key: str, vtype: int, payload: bytes) -> bytes:
    k = key.encode()
    return struct.pack("<Q", len(k)) + k + struct.pack("<I", vtype) + payload


def gguf_str(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def write_spm_gguf(path: str, spec: dict) -> None:
    """A minimal GGUF v3 (no tensors): enough for llama.cpp's vocab_only load."""
    u32, f32, boolean, string, array, i32 = 4, 6, 7, 8, 9, 5
    kvs = [gguf_kv("general.architecture", string, gguf_str("llama"))]
    for key, value in [("context_length", 64), ("embedding_length", 8), ("block_count", 1),
                       ("feed_forward_length", 16), ("attention.head_count", 1),
                       ("attention.head_count_kv", 1), ("rope.dimension_count", 8)]:
        kvs.append(gguf_kv(f"llama.{key}", u32, struct.pack("<I", value)))
    kvs.append(gguf_kv("llama.attention.layer_norm_rms_epsilon", f32, struct.pack("<f", 1e-5)))
    kvs.append(gguf_kv("tokenizer.ggml.model", string, gguf_str("llama")))
    n = len(spec["tokens"])
    kvs.append(gguf_kv("tokenizer.ggml.tokens", array,
                       struct.pack("<IQ", string, n) + b"".join(gguf_str(t) for t in spec["tokens"])))
    kvs.append(gguf_kv("tokenizer.ggml.scores", array,
                       struct.pack("<IQ", f32, n) + struct.pack(f"<{n}f", *spec["scores"])))
    kvs.append(gguf_kv("tokenizer.ggml.token_type", array,
                       struct.pack("<IQ", i32, n) + struct.pack(f"<{n}i", *spec["token_types"])))
    for key in ["bos", "eos", "unk"]:
        kvs.append(gguf_kv(f"tokenizer.ggml.{'unknown' if key == 'unk' else key}_token_id", u32,
                           struct.pack("<I", spec[f"{key}_id"])))
    kvs.append(gguf_kv("tokenizer.ggml.add_space_prefix", boolean, b"\x01"))
    data = b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs)
    data += b"\0" * (-len(data) % 32)
    pathlib.Path(path).write_bytes(data)


def spm_fixture() -> None:
    spec = spm_spec()
    rng = random.Random(3)
    texts = ["", "hello world", "  hello", "hé🚀", "<|im_end|>hello<|im_end|>", "a\n\nb"]
    texts += ["".join(rng.choice(SPM_ALPHABET) for _ in range(rng.randint(1, 12))) for _ in range(150)]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "spm_tiny.gguf")
        write_spm_gguf(path, spec)
        cases = tokenize_all(Llama(model_path=path, vocab_only=True, verbose=False), texts)
    out = FIXTURES / "spm_tiny.json"
    spec_json = json.dumps(spec, ensure_ascii=False)
    out.write_text('{"spec": ' + spec_json + ',\n"cases": ' + json_lines(cases) + "}\n", encoding="utf-8")
    print(f"wrote {len(cases)} cases to {out}")


def main() -> None:
    model_path = sys.argv[1] if len(sys.argv) > 1 else default_model()
    FIXTURES.mkdir(parents=True, exist_ok=True)
    cases = tokenize_all(Llama(model_path=model_path, vocab_only=True, verbose=False), TEXTS)
    out = FIXTURES / "smollm2.json"
    out.write_text(json_lines(cases) + "\n", encoding="utf-8")
    print(f"wrote {len(cases)} cases to {out}")
    spm_fixture()


if __name__ == "__main__":
    main()
