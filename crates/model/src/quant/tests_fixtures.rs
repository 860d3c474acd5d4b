//! Decoding checked against gguf-py (see `scripts/reference/quant_fixtures.py`).
//!
//! Each fixture holds GGML block bytes and gguf-py's dequantisation of them; we
//! require equal values (compared as floats, so `-0.0 == 0.0`). Where gguf-py
//! also quantised the source data, our quantiser's error must not be worse
//! than its error by more than a small margin.

use super::GgmlType;
use super::matrix::QMatrix;
use super::tests::check_all_kernels;
use crate::bytes::TensorBytes;
use crate::threadpool::ThreadPool;

struct Fixture {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    by_gguf: bool,
    bytes: Vec<u8>,
    dequantized: Vec<f32>,
    source: Vec<f32>,
}

fn u32_at(b: &[u8], off: usize) -> usize {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]]) as usize
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn parse(raw: &[u8]) -> Fixture {
    assert_eq!(&raw[..4], b"CQF1", "fixture magic");
    let ty = GgmlType::from_ggml_id(u32_at(raw, 4) as u32).expect("fixture type is supported");
    let (rows, cols, nbytes) = (u32_at(raw, 8), u32_at(raw, 12), u32_at(raw, 16));
    let by_gguf = u32_at(raw, 20) == 1;
    let body = &raw[24..];
    let nvals = rows * cols * 4;
    assert_eq!(body.len(), nbytes + 2 * nvals, "fixture length");
    Fixture {
        ty,
        rows,
        cols,
        by_gguf,
        bytes: body[..nbytes].to_vec(),
        dequantized: f32s(&body[nbytes..nbytes + nvals]),
        source: f32s(&body[nbytes + nvals..]),
    }
}

fn fixtures() -> Vec<Fixture> {
    [
        &include_bytes!("../../tests/fixtures/quant/F16.bin")[..],
        include_bytes!("../../tests/fixtures/quant/BF16.bin"),
        include_bytes!("../../tests/fixtures/quant/Q4_0.bin"),
        include_bytes!("../../tests/fixtures/quant/Q4_1.bin"),
        include_bytes!("../../tests/fixtures/quant/Q8_0.bin"),
        include_bytes!("../../tests/fixtures/quant/Q8_1.bin"),
        include_bytes!("../../tests/fixtures/quant/Q4_K.bin"),
        include_bytes!("../../tests/fixtures/quant/Q5_K.bin"),
        include_bytes!("../../tests/fixtures/quant/Q6_K.bin"),
        include_bytes!("../../tests/fixtures/quant/Q8_K.bin"),
    ]
    .into_iter()
    .map(parse)
    .collect()
}

fn rms(a: &[f32], b: &[f32]) -> f64 {
    let s: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
    (s / a.len() as f64).sqrt()
}

#[test]
fn dequantization_matches_gguf_py_exactly() {
    let fx = fixtures();
    assert_eq!(fx.len(), 10);
    for f in fx {
        let m = QMatrix::new(f.ty, f.rows, f.cols, TensorBytes::from(f.bytes.clone()))
            .expect("fixture shape");
        let ours = m.to_f32();
        for (i, (a, b)) in ours.iter().zip(&f.dequantized).enumerate() {
            assert!(a == b, "{}: element {i}: ours {a} vs gguf-py {b}", f.ty);
        }
    }
}

#[test]
fn quantizer_is_as_good_as_gguf_py() {
    for f in fixtures().into_iter().filter(|f| f.by_gguf) {
        let ours = QMatrix::quantize(f.ty, f.rows, f.cols, &f.source)
            .expect("fixture shape")
            .to_f32();
        let (e_ours, e_ref) = (rms(&ours, &f.source), rms(&f.dequantized, &f.source));
        assert!(
            e_ours <= e_ref * 1.05 + 1e-9,
            "{}: our RMS error {e_ours} vs gguf-py {e_ref}",
            f.ty
        );
    }
}

#[test]
fn kernels_agree_with_reference_on_fixture_bit_patterns() {
    // The K-quant fixtures use random scales and high bits our own quantiser may
    // never produce; every kernel must still decode them like the reference.
    let pool = ThreadPool::new(2);
    for f in fixtures() {
        let m = QMatrix::new(f.ty, f.rows, f.cols, TensorBytes::from(f.bytes.clone()))
            .expect("fixture shape");
        let x = super::tests::data(5, 3, f.cols);
        check_all_kernels(&m, &x, 3, &pool);
    }
}
