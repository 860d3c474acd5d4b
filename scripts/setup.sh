#!/usr/bin/env bash
# From a fresh clone to a running node: checks the toolchain, installs what is
# missing (Debian packages only when needed), builds `credence` in release mode,
# fetches the default models, then starts `credence node` on 127.0.0.1:8080.
#
#   scripts/setup.sh [--no-start] [credence node flags…]
#
# Environment: CREDENCE_HOME (data, default ~/.cache/credence), CARGO_TARGET_DIR
# (build output, default ~/.cache/credence/target).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/credence/target}"
start=1
if [ "${1:-}" = "--no-start" ]; then start=0; shift; fi

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

apt_install() {
  if ! command -v apt-get >/dev/null; then
    echo "missing: $* (no apt-get here; install them with your package manager)" >&2
    exit 1
  fi
  local sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  say "installing $* with apt-get"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@"
}

if ! command -v cargo >/dev/null; then
  echo "cargo is missing: install Rust from https://rustup.rs (Rust 1.95 or newer), then rerun" >&2
  exit 1
fi
missing=()
command -v cc >/dev/null || missing+=(build-essential)
command -v python3 >/dev/null || missing+=(python3)
if command -v python3 >/dev/null && ! python3 -m pip --version >/dev/null 2>&1; then
  missing+=(python3-pip)
fi
if [ "${#missing[@]}" -gt 0 ]; then apt_install "${missing[@]}"; fi

say "building credence (release)"
cargo build --release -p credence-cli
bin="$CARGO_TARGET_DIR/release/credence"

say "fetching the default models"
"$bin" models fetch

if [ "$start" = 0 ]; then
  say "ready: $bin node"
  exit 0
fi
say "starting the node (Ctrl-C to stop)"
exec "$bin" node "$@"
