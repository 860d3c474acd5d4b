#!/usr/bin/env python3
"""Reference logits from llama.cpp (llama-cpp-python) for the default model.

Writes crates/model/tests/fixtures/logits/smollm2_q4_1.json (prompt token ids and
metadata) and smollm2_q4_1.f32 (little-endian f32 logits of every eighth and the
last prompt position, vocab-sized rows, in the order of `positions`). The Rust test
`real_model::logits_match_llama_cpp` compares our forward pass against them.

Usage: <venv with llama-cpp-python>/bin/python scripts/reference/logits_fixture.py MODEL.gguf
"""
import json
import pathlib
import sys

import numpy as np
from llama_cpp import Llama

PROMPT = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is the capital of France? Answer in one sentence.<|im_end|>\n"
    "<|im_start|>assistant\n"
)


def main() -> None:
    model_path = sys.argv[1]
    out_dir = pathlib.Path(__file__).resolve().parents[2] / "crates/model/tests/fixtures/logits"
    out_dir.mkdir(parents=True, exist_ok=True)
    llm = Llama(model_path=model_path, n_ctx=512, n_threads=2, n_batch=512, logits_all=True, verbose=False, seed=0)
    ids = llm.tokenize(PROMPT.encode("utf-8"), add_bos=False, special=True)
    llm.eval(ids)
    scores = np.array(llm.scores[: len(ids)], dtype=np.float32)
    positions = sorted(set(list(range(0, len(ids), 8)) + [len(ids) - 1]))
    rows = np.stack([scores[p] for p in positions]).astype("<f4")
    rows.tofile(out_dir / "smollm2_q4_1.f32")
    meta = {
        "model_sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        "reference": "llama-cpp-python 0.3.36 (llama.cpp built from its sdist), n_threads=2",
        "prompt": PROMPT,
        "ids": ids,
        "positions": positions,
        "vocab": int(scores.shape[1]),
        "argmax": [int(r.argmax()) for r in rows],
    }
    (out_dir / "smollm2_q4_1.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {len(ids)} ids; argmax {meta['argmax']}")


if __name__ == "__main__":
    main()
