//! Kernel selection and the per-path row kernels.
//!
//! A row kernel computes, for a run of consecutive weight rows, the dot product
//! of each row with `K` activation rows (`K` = 1..=4). Loading and unpacking a
//! weight block once for `K` activations is the register tiling that makes
//! batched matmuls cheaper per row than matvecs; `K = 1` is the decode case.

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx2_kquant;
#[cfg(target_arch = "x86_64")]
mod avx512;
pub(crate) mod driver;
mod portable;

use std::sync::OnceLock;

use super::act::ActRow;
use super::types::GgmlType;

/// A SIMD code path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Kernel {
    /// Scalar Rust, any CPU.
    Portable,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX-512 F/BW/VL + VNNI (plus everything `Avx2` needs).
    Avx512,
}

impl Kernel {
    /// The name reported by [`kernel_name`].
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Portable => "portable",
            Self::Avx2 => "avx2",
            Self::Avx512 => "avx512-vnni",
        }
    }

    /// Whether this CPU can run the path.
    pub(crate) fn supported(self) -> bool {
        self <= best()
    }

    /// Every path this CPU can run, slowest first.
    #[cfg(test)]
    pub(crate) fn available() -> Vec<Kernel> {
        [Self::Portable, Self::Avx2, Self::Avx512]
            .into_iter()
            .filter(|k| k.supported())
            .collect()
    }

    /// The path used by [`super::QMatrix::matmul`]: the best supported one, or a
    /// lower one requested through `CREDENCE_KERNEL`.
    pub(crate) fn active() -> Kernel {
        static ACTIVE: OnceLock<Kernel> = OnceLock::new();
        *ACTIVE.get_or_init(|| {
            let best = best();
            match std::env::var("CREDENCE_KERNEL") {
                Ok(v) => match parse(&v) {
                    Some(k) => k.min(best),
                    None => {
                        tracing::warn!(
                            "ignoring CREDENCE_KERNEL={v:?} (expected portable, avx2 or avx512)"
                        );
                        best
                    }
                },
                Err(_) => best,
            }
        })
    }
}

fn parse(v: &str) -> Option<Kernel> {
    match v.trim().to_ascii_lowercase().as_str() {
        "portable" | "scalar" => Some(Kernel::Portable),
        "avx2" => Some(Kernel::Avx2),
        "avx512" | "avx512-vnni" => Some(Kernel::Avx512),
        _ => None,
    }
}

/// The best path this CPU supports (detected once).
fn best() -> Kernel {
    static BEST: OnceLock<Kernel> = OnceLock::new();
    *BEST.get_or_init(detect)
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Kernel {
    use std::arch::is_x86_feature_detected as has;
    let avx2 = has!("avx2") && has!("fma") && has!("f16c");
    let avx512 = has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx512vnni");
    match (avx2, avx512) {
        (true, true) => Kernel::Avx512,
        (true, false) => Kernel::Avx2,
        _ => Kernel::Portable,
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Kernel {
    Kernel::Portable
}

/// Which SIMD path [`super::QMatrix::matmul`] uses on this machine:
/// `"avx512-vnni"`, `"avx2"` or `"portable"`.
pub fn kernel_name() -> &'static str {
    Kernel::active().name()
}

/// `K` activation rows, in the form the weight type's kernel consumes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum XRows<'a, const K: usize> {
    /// Quantised activations (for every block format).
    Q8([ActRow<'a>; K]),
    /// Plain f32 activations (for F32 / F16 / BF16 weights).
    F32([&'a [f32]; K]),
}

/// Computes `out[r][k] = dot(row r of w, activation k)` for every row of `w`
/// (`w.len() == out.len() * row_bytes`), on `kernel` (which must be supported,
/// checked by the caller) for weights of type `ty`.
pub(crate) fn rows<const K: usize>(
    kernel: Kernel,
    ty: GgmlType,
    w: &[u8],
    row_bytes: usize,
    xs: &XRows<'_, K>,
    out: &mut [[f32; K]],
) {
    debug_assert!(kernel.supported());
    debug_assert_eq!(w.len(), out.len() * row_bytes);
    match kernel {
        Kernel::Portable => portable::rows(ty, w, row_bytes, xs, out),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: callers only pass kernels for which `supported()` holds, i.e. the
        // CPU has AVX2, FMA and F16C.
        Kernel::Avx2 => unsafe { avx2::rows(ty, w, row_bytes, xs, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, plus AVX-512 F/BW/VL/VNNI.
        Kernel::Avx512 => unsafe { avx512::rows(ty, w, row_bytes, xs, out) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => portable::rows(ty, w, row_bytes, xs, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_override_names_parse() {
        assert_eq!(parse("portable"), Some(Kernel::Portable));
        assert_eq!(parse(" AVX2 "), Some(Kernel::Avx2));
        assert_eq!(parse("avx512"), Some(Kernel::Avx512));
        assert_eq!(parse("avx512-vnni"), Some(Kernel::Avx512));
        assert_eq!(parse("neon"), None);
    }
}
