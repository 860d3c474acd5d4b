#!/usr/bin/env python3
"""Writes the GGML block-format fixtures used by crates/model/src/quant tests.

The reference is the PyPI `gguf` package (gguf-py, maintained with llama.cpp):
for every storage type we store the raw block bytes together with gguf-py's own
dequantisation of them, so the Rust decoder is checked bit-exactly against an
implementation we did not write.

* F16, BF16, Q4_0, Q4_1, Q8_0: gguf-py quantises seeded random data itself.
* Q4_K, Q5_K, Q6_K: gguf-py can only dequantise these, so we draw random but
  valid block bytes (finite f16 super-scales, arbitrary packed sub-scales and
  quants) and let gguf-py dequantise them.
* Q8_1, Q8_K: activation-only formats gguf-py does not decode at all; they are
  built and decoded here from their layout (their decoding is a single multiply).

Usage (from the repository root):
    python3 -m venv /root/.cache/credence/fixvenv
    /root/.cache/credence/fixvenv/bin/pip install gguf numpy
    /root/.cache/credence/fixvenv/bin/python scripts/reference/quant_fixtures.py

File layout (little-endian), one file per type, `<NAME>.bin`:
    b"CQF1", u32 ggml type id, u32 rows, u32 cols, u32 n_bytes,
    u32 source_quantised (1 when `source` was quantised by gguf-py into `bytes`),
    bytes[n_bytes], f32 dequantised[rows*cols], f32 source[rows*cols]
"""

import pathlib
import struct

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

OUT = pathlib.Path(__file__).resolve().parents[2] / "crates/model/tests/fixtures/quant"
ROWS, COLS = 4, 256
QK_K = 256


def source_data(rng: np.random.Generator) -> np.ndarray:
    """Rows with different scales and offsets, so min/max handling is exercised."""
    x = rng.standard_normal((ROWS, COLS)).astype(np.float32)
    x[1] *= 0.01
    x[2] = x[2] * 3.0 + 1.5
    x[3, ::7] = 0.0
    return x


def f16_bytes(v: np.ndarray) -> np.ndarray:
    return v.astype(np.float16).view(np.uint8).reshape(v.shape[0], 2)


def random_scale(rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    return rng.uniform(lo, hi, n).astype(np.float32)


def random_q4k(rng: np.random.Generator, n: int) -> np.ndarray:
    d = f16_bytes(random_scale(rng, n, 1e-3, 2e-2))
    dmin = f16_bytes(random_scale(rng, n, 1e-3, 2e-2))
    scales = rng.integers(0, 256, (n, 12), dtype=np.uint8)
    qs = rng.integers(0, 256, (n, QK_K // 2), dtype=np.uint8)
    return np.concatenate([d, dmin, scales, qs], axis=1)


def random_q5k(rng: np.random.Generator, n: int) -> np.ndarray:
    d = f16_bytes(random_scale(rng, n, 1e-3, 2e-2))
    dmin = f16_bytes(random_scale(rng, n, 1e-3, 2e-2))
    scales = rng.integers(0, 256, (n, 12), dtype=np.uint8)
    qh = rng.integers(0, 256, (n, QK_K // 8), dtype=np.uint8)
    qs = rng.integers(0, 256, (n, QK_K // 2), dtype=np.uint8)
    return np.concatenate([d, dmin, scales, qh, qs], axis=1)


def random_q6k(rng: np.random.Generator, n: int) -> np.ndarray:
    ql = rng.integers(0, 256, (n, QK_K // 2), dtype=np.uint8)
    qh = rng.integers(0, 256, (n, QK_K // 4), dtype=np.uint8)
    scales = rng.integers(-128, 128, (n, QK_K // 16), dtype=np.int8).view(np.uint8)
    d = f16_bytes(random_scale(rng, n, 1e-3, 2e-2))
    return np.concatenate([ql, qh, scales, d], axis=1)


def q8_1(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q8_1 blocks {f16 d, f16 s = d*sum(q), i8 qs[32]} and their decoding d*q."""
    blocks = x.reshape(-1, 32)
    d = np.abs(blocks).max(axis=1, keepdims=True) / 127
    q = np.round(np.where(d == 0, 0, blocks / np.where(d == 0, 1, d))).astype(np.int8)
    d16 = d.astype(np.float16)
    s = (d * q.astype(np.float32).sum(axis=1, keepdims=True)).astype(np.float16)
    raw = np.concatenate([d16.view(np.uint8), s.view(np.uint8), q.view(np.uint8)], axis=1)
    deq = d16.astype(np.float32) * q.astype(np.float32)
    return raw, deq.reshape(x.shape)


def q8_k(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q8_K blocks {f32 d, i8 qs[256], i16 bsums[16]} and their decoding d*q."""
    blocks = x.reshape(-1, QK_K)
    d = (np.abs(blocks).max(axis=1, keepdims=True) / 127).astype(np.float32)
    q = np.round(np.where(d == 0, 0, blocks / np.where(d == 0, 1, d))).astype(np.int8)
    bsums = q.astype(np.int16).reshape(-1, 16, 16).sum(axis=2).astype("<i2")
    raw = np.concatenate([d.astype("<f4").view(np.uint8), q.view(np.uint8), bsums.view(np.uint8)], axis=1)
    deq = d * q.astype(np.float32)
    return raw, deq.reshape(x.shape)


def write(name: str, ty: T, raw: np.ndarray, deq: np.ndarray, src: np.ndarray, by_gguf: bool) -> None:
    raw = np.ascontiguousarray(raw).view(np.uint8).reshape(-1)  # a view: F16 comes back as float16
    deq = np.ascontiguousarray(deq, dtype="<f4").reshape(ROWS, COLS)
    header = b"CQF1" + struct.pack("<5I", int(ty), ROWS, COLS, raw.size, int(by_gguf))
    body = raw.tobytes() + deq.tobytes() + np.ascontiguousarray(src, dtype="<f4").tobytes()
    (OUT / f"{name}.bin").write_bytes(header + body)
    print(f"{name}: {raw.size} bytes")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20240611)
    for name, ty in [("F16", T.F16), ("BF16", T.BF16), ("Q4_0", T.Q4_0), ("Q4_1", T.Q4_1), ("Q8_0", T.Q8_0)]:
        src = source_data(rng)
        raw = quants.quantize(src, ty)
        deq = quants.dequantize(raw, ty)
        write(name, ty, raw, deq, src, True)
    for name, ty, gen in [("Q4_K", T.Q4_K, random_q4k), ("Q5_K", T.Q5_K, random_q5k), ("Q6_K", T.Q6_K, random_q6k)]:
        raw = gen(rng, ROWS * COLS // QK_K).reshape(ROWS, -1)
        deq = quants.dequantize(raw, ty)
        write(name, ty, raw, deq, deq, False)
    for name, ty, enc in [("Q8_1", T.Q8_1, q8_1), ("Q8_K", T.Q8_K, q8_k)]:
        src = source_data(rng)
        raw, deq = enc(src)
        write(name, ty, raw, deq, src, False)


if __name__ == "__main__":
    main()
