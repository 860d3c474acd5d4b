#!/usr/bin/env bash
# Generation throughput of Credence against llama.cpp, side by side: same GGUF,
# same thread count, same prompt, run one after the other in one invocation.
# Prints a markdown table and appends it to docs/benchmarks.md.
#
#   scripts/bench-generate.sh [--threads N] [--model FILE.gguf] [--repetitions N]
#                             [--batches 1,4,16,64] [--no-reference] [--out FILE.md]
#
# The reference is llama.cpp's own `llama-bench` (pp, tg) and `llama-batched-bench`
# (batched decode, 128-token prompts, as `credence bench generate`), built once
# from source by scripts/reference/build_llama_bench.sh (~10 min on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."

home="${CREDENCE_HOME:-$HOME/.cache/credence}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/credence/target}"
threads="$(nproc)"
model="$home/models/SmolLM2-135M-Instruct.Q4_1.gguf"
repetitions=3
batches="1,4,16,64"
reference=1
out="docs/benchmarks.md"
command_line="scripts/bench-generate.sh $*"

while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads="$2"; shift 2 ;;
    --model) model="$2"; shift 2 ;;
    --repetitions) repetitions="$2"; shift 2 ;;
    --batches) batches="$2"; shift 2 ;;
    --no-reference) reference=0; shift ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

cargo build --release -q -p credence-cli
bin="$CARGO_TARGET_DIR/release/credence"
if [ ! -f "$model" ]; then
  "$bin" models fetch
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "== credence" >&2
"$bin" bench generate --model "$model" --threads "$threads" --prompt-tokens 512 \
  --gen-tokens 128 --batches "$batches" --repetitions "$repetitions" --json "$work/credence.json"

if [ "$reference" = 1 ]; then
  echo "== llama.cpp" >&2
  llama_bench="$(scripts/reference/build_llama_bench.sh)"
  bindir="$(dirname "$llama_bench")"
  "$bindir/llama-bench" -m "$model" -t "$threads" -p 512 -n 128 -r "$repetitions" -o json \
    > "$work/llama-bench.json"
  if [ -n "$batches" ]; then
    max_batch="$(tr ',' '\n' <<<"$batches" | sort -n | tail -1)"
    "$bindir/llama-batched-bench" -m "$model" -t "$threads" -tb "$threads" \
      -c $(( max_batch * 256 + 256 )) -b 2048 -ub 512 -npp 128 -ntg 128 -npl "$batches" \
      --output-format jsonl 2>/dev/null | grep '^{' > "$work/llama-batched.jsonl"
  fi
fi

commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git status --porcelain 2>/dev/null | grep -v '^??' || true)" ]; then commit="$commit+dirty"; fi
cpu="$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || echo unknown)"

table="$(python3 - "$work" "$command_line" "$commit" "$cpu" <<'EOF'
import json, sys, datetime, pathlib
work, command, commit, cpu = sys.argv[1:5]
ours = json.loads(pathlib.Path(work, "credence.json").read_text())
ref = None
bench_path = pathlib.Path(work, "llama-bench.json")
if bench_path.exists():
    def median(xs):
        xs = sorted(xs)
        return (xs[len(xs) // 2] + xs[(len(xs) - 1) // 2]) / 2
    runs = json.loads(bench_path.read_text())
    ref = {"version": "llama-bench and llama-batched-bench, built natively from the llama.cpp sources in llama-cpp-python 0.3.36", "batched": {}}
    for r in runs:
        key = "pp_tokens_per_s" if r["n_gen"] == 0 else "tg_tokens_per_s"
        ref[key] = median(r["samples_ts"])
    batched_path = pathlib.Path(work, "llama-batched.jsonl")
    if batched_path.exists():
        for line in batched_path.read_text().splitlines():
            r = json.loads(line)
            ref["batched"][r["pl"]] = r["speed_tg"]

def fmt(x):
    return "—" if x is None else f"{x:.1f}"

def ratio(a, b):
    return "—" if a is None or not b else f"{a / b:.2f}×"

date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
ref_name = ref["version"] if ref else "not run"
lines = [
    f"### {date} — commit {commit}",
    "",
    f"- model: `{pathlib.Path(ours['model']).name}`; threads: {ours['threads']}; "
    f"median of {ours['repetitions']} runs; CPU: {cpu}",
    f"- reference: llama.cpp via {ref_name}",
    f"- command: `{command.strip()}`",
    "",
    "| measurement | credence tok/s | llama.cpp tok/s | credence / llama.cpp |",
    "|---|---:|---:|---:|",
]
rows = [
    (f"prompt processing (pp{ours['prompt_tokens']})", ours["pp_tokens_per_s"],
     ref and ref["pp_tokens_per_s"]),
    (f"decode, 1 stream (tg{ours['gen_tokens']})", ours["tg_tokens_per_s"],
     ref and ref["tg_tokens_per_s"]),
]
for b in ours["batched"]:
    rows.append((f"decode, batch {b['batch']}, 128-token prompts (total)", b["tokens_per_s"],
                 ref and ref["batched"].get(b["batch"])))
for name, a, b in rows:
    lines.append(f"| {name} | {fmt(a)} | {fmt(b)} | {ratio(a, b)} |")
print("\n".join(lines))
EOF
)"

echo
echo "$table"
mkdir -p "$(dirname "$out")"
if [ ! -f "$out" ]; then
  printf '# Benchmarks\n\nAppended by `scripts/bench-generate.sh`; each entry is one side-by-side run on the same machine.\n' > "$out"
fi
printf '\n%s\n' "$table" >> "$out"
echo >&2
echo "appended to $out" >&2
