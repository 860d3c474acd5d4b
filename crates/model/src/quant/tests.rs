//! Kernel and API tests: every path available on this machine against an f64
//! reference computed from the dequantised weights.
//!
//! Tolerance. Block formats quantise each 32-value activation block to
//! `q = round(x / d)` with `d = max|x| / 127`, so each activation is off by at
//! most `d / 2`; the product is then off by at most
//! `Σ_blocks (d_b / 2) · Σ_{i∈b} |w_i|`. We allow 1.02 × that bound plus
//! `1e-4 · Σ|w_i·x_i|` for f32 accumulation (and the +128 offset AVX-512 uses
//! for signed bytes). Float formats do not quantise activations: only the
//! accumulation term applies.
//!
//! Every SIMD path must also match the portable path to `3e-5 · Σ|w_i·x_i|`:
//! all paths quantise activations with the same f32 operations, so only the
//! order of f32 summation may differ.

use proptest::prelude::*;

use super::GgmlType;
use super::kernels::Kernel;
use super::matrix::QMatrix;
use crate::error::Error;
use crate::threadpool::ThreadPool;

/// Deterministic pseudo-random values in [-1, 1) (xorshift), scaled per row
/// with an offset so min/max handling and sign paths all get exercised.
pub(super) fn data(seed: u64, rows: usize, cols: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    };
    let mut v = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        let (scale, offset) = (
            0.05 + (r % 5) as f32 * 0.7,
            if r % 3 == 1 { 0.3 } else { 0.0 },
        );
        v.extend((0..cols).map(|_| next() * scale + offset));
    }
    v
}

/// Checks `m.matmul_with(kernel)` against the f64 reference for every available
/// kernel, and the SIMD kernels against the portable one (which sees the very
/// same quantised activations, so only f32 summation order may differ).
pub(super) fn check_all_kernels(m: &QMatrix, x: &[f32], n: usize, pool: &ThreadPool) {
    let (rows, cols) = (m.rows(), m.cols());
    let w = m.to_f32();
    let mut portable = vec![f32::NAN; n * rows];
    m.matmul_with(Kernel::Portable, pool, x, n, &mut portable)
        .expect("shapes are valid");
    for kernel in Kernel::available() {
        let mut out = vec![f32::NAN; n * rows];
        m.matmul_with(kernel, pool, x, n, &mut out)
            .expect("shapes are valid");
        for c in 0..n {
            let xr = &x[c * cols..(c + 1) * cols];
            let act_err = activation_error(m.ty(), xr);
            for r in 0..rows {
                let wr = &w[r * cols..(r + 1) * cols];
                let exact: f64 = wr
                    .iter()
                    .zip(xr)
                    .map(|(&a, &b)| f64::from(a) * f64::from(b))
                    .sum();
                let abs: f64 = wr
                    .iter()
                    .zip(xr)
                    .map(|(&a, &b)| f64::from((a * b).abs()))
                    .sum();
                let quant: f64 = wr
                    .iter()
                    .zip(&act_err)
                    .map(|(&a, &e)| f64::from(a.abs()) * e)
                    .sum();
                let tol = 1.02 * quant + 1e-4 * abs + 1e-6;
                let got = f64::from(out[c * rows + r]);
                assert!(
                    (got - exact).abs() <= tol,
                    "{} {kernel:?} {rows}x{cols} n={n}: out[{c},{r}] = {got}, expected {exact} ± {tol}",
                    m.ty()
                );
                let same = f64::from(portable[c * rows + r]);
                assert!(
                    (got - same).abs() <= 3e-5 * abs + 1e-6,
                    "{} {kernel:?} {rows}x{cols} n={n}: out[{c},{r}] = {got}, portable path {same}",
                    m.ty()
                );
            }
        }
    }
}

/// Per-element bound on the activation quantisation error (`d / 2` of its block).
fn activation_error(ty: GgmlType, x: &[f32]) -> Vec<f64> {
    if ty.is_float() {
        return vec![0.0; x.len()];
    }
    x.chunks(32)
        .flat_map(|b| {
            let amax = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            std::iter::repeat_n(f64::from(amax) / 127.0 / 2.0, b.len())
        })
        .collect()
}

fn any_type() -> impl Strategy<Value = GgmlType> {
    proptest::sample::select(GgmlType::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    #[test]
    fn matmul_matches_reference(ty in any_type(), rows in 1usize..70, blocks in 1usize..5,
                                n in 1usize..9, threads in 1usize..4, seed in any::<u64>()) {
        let cols = if ty.is_float() { blocks * 13 } else { blocks * ty.block_len() };
        let m = QMatrix::quantize(ty, rows, cols, &data(seed, rows, cols)).expect("valid shape");
        let x = data(seed ^ 0xABCD, n, cols);
        check_all_kernels(&m, &x, n, &ThreadPool::new(threads));
    }
}

#[test]
fn larger_shapes_match_reference() {
    let pool = ThreadPool::new(2);
    let cases = [
        (GgmlType::Q4_1, 1536, 576, 1),
        (GgmlType::Q4_1, 576, 1536, 11),
        (GgmlType::Q4_1, 192, 576, 70),
        (GgmlType::Q8_0, 3000, 576, 1),
        (GgmlType::Q8_0, 300, 576, 9),
        (GgmlType::Q4_0, 600, 1536, 5),
        (GgmlType::Q4_K, 300, 1536, 6),
        (GgmlType::Q6_K, 130, 768, 3),
        (GgmlType::F16, 200, 577, 7),
        (GgmlType::F32, 70, 1000, 66),
        (GgmlType::BF16, 90, 64, 2),
    ];
    for (i, (ty, rows, cols, n)) in cases.into_iter().enumerate() {
        let m =
            QMatrix::quantize(ty, rows, cols, &data(i as u64, rows, cols)).expect("valid shape");
        check_all_kernels(&m, &data(100 + i as u64, n, cols), n, &pool);
    }
}

#[test]
fn odd_block_counts_use_the_tail_paths() {
    // 3 blocks per row: the AVX-512 pair kernels must handle the last block alone.
    let pool = ThreadPool::new(2);
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q8_0,
        GgmlType::Q8_1,
    ] {
        let m = QMatrix::quantize(ty, 37, 96, &data(7, 37, 96)).expect("valid shape");
        check_all_kernels(&m, &data(8, 5, 96), 5, &pool);
    }
}

#[test]
fn zero_rows_and_constant_blocks() {
    let pool = ThreadPool::new(2);
    for ty in GgmlType::ALL {
        let cols = ty.block_len().max(8) * 2;
        let mut v = vec![0.0f32; 3 * cols];
        v[cols..2 * cols].fill(0.5);
        let m = QMatrix::quantize(ty, 3, cols, &v).expect("valid shape");
        let mut x = data(1, 2, cols);
        x[..cols].fill(0.0);
        check_all_kernels(&m, &x, 2, &pool);
    }
}

#[test]
fn empty_shapes_are_fine() {
    let pool = ThreadPool::new(2);
    let m = QMatrix::quantize(GgmlType::Q8_0, 4, 64, &data(1, 4, 64)).expect("valid shape");
    let mut out = [];
    m.matmul(&pool, &[], 0, &mut out).expect("n = 0 is valid");
    let e = QMatrix::quantize(GgmlType::F32, 3, 0, &[]).expect("0 columns is valid");
    let mut out = [1.0f32; 6];
    e.matmul(&pool, &[], 2, &mut out).expect("valid");
    assert_eq!(out, [0.0; 6]);
}

#[test]
fn round_trip_error_is_bounded() {
    // Relative RMS error of quantize → dequantize on varied data; bounds sit a
    // little above what round-to-nearest with these bit widths gives.
    let bounds = [
        (GgmlType::F32, 0.0),
        (GgmlType::F16, 1e-3),
        (GgmlType::BF16, 5e-3),
        (GgmlType::Q8_0, 8e-3),
        (GgmlType::Q8_1, 8e-3),
        (GgmlType::Q8_K, 1.2e-2),
        (GgmlType::Q6_K, 3e-2),
        (GgmlType::Q5_K, 6e-2),
        (GgmlType::Q4_0, 0.12),
        (GgmlType::Q4_1, 0.10),
        (GgmlType::Q4_K, 0.12),
    ];
    for (ty, bound) in bounds {
        let (rows, cols) = (16, 512);
        let v = data(42, rows, cols);
        let back = QMatrix::quantize(ty, rows, cols, &v)
            .expect("valid shape")
            .to_f32();
        let err: f64 = v
            .iter()
            .zip(&back)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum();
        let norm: f64 = v.iter().map(|a| f64::from(*a).powi(2)).sum();
        let rel = (err / norm).sqrt();
        assert!(rel <= bound, "{ty}: relative RMS error {rel} > {bound}");
    }
}

#[test]
fn row_to_f32_matches_to_f32() {
    for ty in GgmlType::ALL {
        let cols = ty.block_len().max(16) * 2;
        let m = QMatrix::quantize(ty, 5, cols, &data(3, 5, cols)).expect("valid shape");
        let all = m.to_f32();
        let mut row = vec![0.0; cols];
        for r in 0..5 {
            m.row_to_f32(r, &mut row);
            assert_eq!(row, all[r * cols..(r + 1) * cols], "{ty} row {r}");
        }
    }
}

#[test]
fn type_ids_round_trip_and_unsupported_ids_are_named() {
    for ty in GgmlType::ALL {
        assert_eq!(GgmlType::from_ggml_id(ty.ggml_id()).expect("known id"), ty);
        assert_eq!(
            ty.row_bytes(ty.block_len() * 3).expect("whole blocks"),
            3 * ty.block_bytes()
        );
    }
    let msg = |id| match GgmlType::from_ggml_id(id) {
        Err(Error::UnsupportedType(s)) => s,
        other => panic!("expected UnsupportedType, got {other:?}"),
    };
    assert_eq!(msg(10), "Q2_K (ggml type 10)");
    assert_eq!(msg(6), "Q5_0 (ggml type 6)");
    assert_eq!(msg(12345), "unknown (ggml type 12345)");
}

#[test]
fn bad_shapes_are_errors() {
    assert!(matches!(GgmlType::Q4_0.row_bytes(33), Err(Error::Shape(_))));
    assert!(matches!(GgmlType::Q4_K.row_bytes(32), Err(Error::Shape(_))));
    let short = crate::bytes::TensorBytes::from(vec![0u8; 17]);
    assert!(matches!(
        QMatrix::new(GgmlType::Q4_0, 1, 32, short),
        Err(Error::Shape(_))
    ));
    let huge = crate::bytes::TensorBytes::from(vec![0u8; 18]);
    assert!(matches!(
        QMatrix::new(GgmlType::Q4_0, usize::MAX, 32, huge),
        Err(Error::Shape(_))
    ));
    assert!(matches!(
        QMatrix::quantize(GgmlType::Q8_0, 2, 32, &[0.0; 63]),
        Err(Error::Shape(_))
    ));
    assert!(matches!(
        QMatrix::quantize(GgmlType::Q8_0, 2, 31, &[0.0; 62]),
        Err(Error::Shape(_))
    ));
    let m = QMatrix::quantize(GgmlType::Q8_0, 2, 32, &[0.5; 64]).expect("valid");
    let pool = ThreadPool::new(1);
    let mut out = [0.0; 2];
    assert!(matches!(
        m.matmul(&pool, &[0.0; 31], 1, &mut out),
        Err(Error::Shape(_))
    ));
    assert!(matches!(
        m.matmul(&pool, &[0.0; 32], 1, &mut out[..1]),
        Err(Error::Shape(_))
    ));
    assert!(matches!(
        m.matmul(&pool, &[0.0; 32], usize::MAX, &mut out),
        Err(Error::Shape(_))
    ));
}

#[test]
fn kernel_selection_reports_a_known_path() {
    assert!(["avx512-vnni", "avx2", "portable"].contains(&super::kernel_name()));
    assert!(Kernel::available().contains(&Kernel::Portable));
    assert!(Kernel::active().supported());
}
