#!/usr/bin/env bash
# Builds llama.cpp's own `llama-bench` from the llama.cpp sources vendored in the
# llama-cpp-python 0.3.36 sdist (PyPI), natively optimised, into
# $CREDENCE_HOME/llama.cpp/bin/llama-bench. Prints the binary's path.
# Used by scripts/bench-generate.sh as the reference; takes ~10 min on 2 cores once.
set -euo pipefail
home="${CREDENCE_HOME:-$HOME/.cache/credence}"
dest="$home/llama.cpp"
bin="$dest/bin/llama-bench"
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi
mkdir -p "$dest"
venv="$home/refvenv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q cmake >&2
src="$dest/src"
if [ ! -d "$src" ]; then
  tmp="$(mktemp -d)"
  "$venv/bin/pip" download -q --no-binary llama-cpp-python --no-deps -d "$tmp" llama-cpp-python==0.3.36 >&2
  mkdir -p "$tmp/x" && tar -xzf "$tmp"/llama_cpp_python-0.3.36.tar.gz -C "$tmp/x"
  mv "$tmp/x/llama_cpp_python-0.3.36/vendor/llama.cpp" "$src"
  rm -rf "$tmp"
fi
"$venv/bin/cmake" -S "$src" -B "$dest/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
  -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF >&2
"$venv/bin/cmake" --build "$dest/build" --target llama-bench llama-batched-bench -j "$(nproc)" >&2
mkdir -p "$dest/bin"
cp "$dest/build/bin/llama-bench" "$dest/build/bin/llama-batched-bench" "$dest/bin/"
echo "$bin"
