#!/usr/bin/env python3
"""Reference throughput of llama.cpp (through llama-cpp-python) on a GGUF model.

Measures what `credence bench generate` measures, the same way:

* pp: one evaluation of a `--prompt-tokens`-long prompt (n_batch = prompt length,
  so llama.cpp processes it in one decode call) into an empty KV cache;
* tg: `--gen-tokens` single-token evaluations from an empty cache, each feeding
  back the greedy (argmax) choice.

Each is the median of `--repetitions` timed runs after a warm-up. The prompt is
cut from the same text as the Rust benchmark (crates/node/src/bench.rs).

llama-cpp-python is installed into a virtual environment at
`$CREDENCE_HOME/refvenv` (default `~/.cache/credence/refvenv`) only if it is not
there yet; `pip install llama-cpp-python==0.3.36` compiles llama.cpp from source,
which takes about 15 minutes on 2 cores. The script then re-runs itself with the
venv's interpreter.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

LLAMA_CPP_PYTHON = "llama-cpp-python==0.3.36"

# Must stay identical to BENCH_TEXT in crates/node/src/bench.rs.
BENCH_TEXT = (
    "The river town woke slowly. Fishermen checked their nets "
    "along the stone quay while the bakery on the corner pushed its first trays of bread into "
    "the window. A schoolteacher crossed the bridge with a stack of corrected essays, counting "
    "the mistakes she would explain that morning: commas in the wrong place, dates confused, a "
    "map of the valley drawn upside down. Above the hills the clouds were thinning, and by nine "
    "the market square was full of voices, carts and the smell of oranges. "
)


def credence_home() -> Path:
    home = os.environ.get("CREDENCE_HOME")
    return Path(home) if home else Path.home() / ".cache" / "credence"


def ensure_venv() -> None:
    """Re-executes this script inside the reference venv, creating it if needed."""
    venv = credence_home() / "refvenv"
    python = venv / "bin" / "python"
    if Path(sys.prefix).resolve() == venv.resolve():
        return
    probe = [str(python), "-c", "import llama_cpp, numpy; assert llama_cpp.__version__ == '0.3.36'"]
    if not python.exists() or subprocess.run(probe, capture_output=True).returncode != 0:
        print(f"installing {LLAMA_CPP_PYTHON} into {venv} (builds llama.cpp; ~15 min on 2 cores)",
              file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check",
                        LLAMA_CPP_PYTHON, "numpy"], check=True)
    os.execv(str(python), [str(python), os.path.abspath(__file__), *sys.argv[1:]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="GGUF file")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--gen-tokens", type=int, default=128)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    ensure_venv()

    import llama_cpp
    import numpy as np
    from llama_cpp import Llama

    n_ctx = max(args.prompt_tokens, args.gen_tokens, 64) + 16
    llm = Llama(
        model_path=args.model,
        n_ctx=n_ctx,
        n_batch=max(args.prompt_tokens, 32),
        n_ubatch=max(args.prompt_tokens, 32),
        n_threads=args.threads,
        n_threads_batch=args.threads,
        verbose=False,
    )
    n_vocab = llm.n_vocab()
    once = llm.tokenize(BENCH_TEXT.encode(), add_bos=False)
    needed = max(args.prompt_tokens, 64)
    text = [once[i % len(once)] for i in range(needed)]

    def last_logits_argmax() -> int:
        ptr = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
        return int(np.argmax(np.ctypeslib.as_array(ptr, shape=(n_vocab,))))

    def prompt_processing(tokens) -> float:
        llm.reset()
        start = time.perf_counter()
        llm.eval(tokens)
        return len(tokens) / (time.perf_counter() - start)

    def decode(first: int, steps: int) -> float:
        llm.reset()
        token = first
        start = time.perf_counter()
        for _ in range(steps):
            llm.eval([token])
            token = last_logits_argmax()
        return steps / (time.perf_counter() - start)

    prompt_processing(text[:32])
    decode(text[0], 4)
    pp = [prompt_processing(text[: args.prompt_tokens]) for _ in range(args.repetitions)]
    tg = [decode(text[0], args.gen_tokens) for _ in range(args.repetitions)]

    report = {
        "engine": "llama.cpp",
        "version": f"llama-cpp-python {llama_cpp.__version__}",
        "model": args.model,
        "threads": args.threads,
        "prompt_tokens": args.prompt_tokens,
        "gen_tokens": args.gen_tokens,
        "repetitions": args.repetitions,
        "pp_tokens_per_s": statistics.median(pp),
        "tg_tokens_per_s": statistics.median(tg),
        "batched": [],
    }
    print(f"llama.cpp ({report['version']}) — {args.model} ({args.threads} threads, "
          f"median of {args.repetitions})")
    print(f"{'prompt processing (pp%d)' % args.prompt_tokens:<34} {report['pp_tokens_per_s']:>12.1f}")
    print(f"{'decode, 1 stream (tg%d)' % args.gen_tokens:<34} {report['tg_tokens_per_s']:>12.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
