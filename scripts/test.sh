#!/usr/bin/env bash
# Everything CI checks, in order: formatting, lints, the default models, tests.
#
#   scripts/test.sh [extra cargo test args…]
#
# Build output goes to $CARGO_TARGET_DIR (default ~/.cache/credence/target) so
# repeated runs, and CI on the same machine, reuse earlier builds.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/credence/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

say() { printf '==> %s\n' "$*" >&2; }

say "cargo fmt --check"
cargo fmt --all -- --check

# The committed contract artifacts must be what the pinned solc makes of the
# sources (cargo builds never need a compiler; this check does).
if command -v node >/dev/null; then
  say "contract artifacts match sources"
  (cd scripts/contracts && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  node scripts/contracts/build.mjs --check
else
  echo "node is missing: install Node.js 20+ (apt-get install nodejs npm) to check contract artifacts" >&2
  exit 1
fi

say "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

# Tests run against the real default model; fetching is a no-op (a hash check)
# when the files are already in the cache.
if [ -z "${CREDENCE_MODEL_GGUF:-}" ]; then
  say "default models"
  cargo run --quiet --locked -p credence-cli -- models fetch
fi

say "cargo test"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked "$@" 2>&1 | tee "$log"
# One closing line for the whole workspace (the last per-binary line is often
# an empty doc-test run, which would read as "no tests ran").
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
