#!/usr/bin/env python3
"""Reference tokenization from llama.cpp (llama-cpp-python) for the default model.

Writes crates/model/tests/fixtures/tokenizer/smollm2.json: a list of
{"text", "ids", "decoded"} for fixed strings that exercise the pre-tokenizer
(accents, CJK, emoji, code indentation, runs of spaces/newlines/tabs, digits,
ChatML special tokens, the empty string). `ids` are llama.cpp's ids without BOS
and with special tokens parsed; `decoded` is llama.cpp's detokenization of them
(special tokens rendered). The Rust test `tokenizer::tests::smollm2_matches_llama_cpp`
checks that our tokenizer, built from the same GGUF, gives the same ids and text.

Usage: <venv with llama-cpp-python>/bin/python scripts/reference/tokenizer_fixture.py [MODEL.gguf]
The model defaults to $CREDENCE_MODEL_GGUF, then
~/.cache/credence/models/SmolLM2-135M-Instruct.Q4_1.gguf.
"""
import json
import os
import pathlib
import sys

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


def main() -> None:
    model_path = sys.argv[1] if len(sys.argv) > 1 else default_model()
    out = pathlib.Path(__file__).resolve().parents[2] / "crates/model/tests/fixtures/tokenizer/smollm2.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    llm = Llama(model_path=model_path, vocab_only=True, verbose=False)
    cases = []
    for text in TEXTS:
        ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        decoded = llm.detokenize(ids, special=True).decode("utf-8", errors="replace")
        cases.append({"text": text, "ids": ids, "decoded": decoded})
    # One case per line keeps the file short and its diffs readable.
    lines = ",\n".join(" " + json.dumps(case, ensure_ascii=False) for case in cases)
    out.write_text("[\n" + lines + "\n]\n", encoding="utf-8")
    print(f"wrote {len(cases)} cases to {out}")


if __name__ == "__main__":
    main()
