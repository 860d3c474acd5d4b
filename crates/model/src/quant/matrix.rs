//! [`QMatrix`]: a weight matrix in a GGML storage format.

use super::blocks::dequantize_row;
use super::kernels::Kernel;
use super::quantize::quantize_row;
use super::types::GgmlType;
use crate::bytes::TensorBytes;
use crate::error::{Error, Result};
use crate::threadpool::ThreadPool;

/// A row-major weight matrix `W[rows, cols]`; each row is `cols / block_len` blocks.
#[derive(Clone, Debug)]
pub struct QMatrix {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    data: TensorBytes,
}

impl QMatrix {
    /// Wraps `data` (e.g. a tensor of a memory-mapped GGUF file).
    ///
    /// # Errors
    /// [`Error::Shape`] if `cols` is not a multiple of the block length or
    /// `data` does not hold exactly `rows` rows.
    pub fn new(ty: GgmlType, rows: usize, cols: usize, data: TensorBytes) -> Result<Self> {
        let row_bytes = ty.row_bytes(cols)?;
        let expected = row_bytes.checked_mul(rows).ok_or_else(|| {
            Error::Shape(format!("{ty} matrix {rows}x{cols} is too large to address"))
        })?;
        if data.len() != expected {
            return Err(Error::Shape(format!(
                "{ty} matrix {rows}x{cols} needs {expected} bytes, got {}",
                data.len()
            )));
        }
        Ok(Self {
            ty,
            rows,
            cols,
            row_bytes,
            data,
        })
    }

    /// Quantises row-major f32 `values` (`rows * cols` of them) into format `ty`.
    ///
    /// # Errors
    /// [`Error::Shape`] on a length mismatch or a `cols` that is not a whole number of blocks.
    pub fn quantize(ty: GgmlType, rows: usize, cols: usize, values: &[f32]) -> Result<Self> {
        let row_bytes = ty.row_bytes(cols)?;
        if rows.checked_mul(cols) != Some(values.len()) {
            return Err(Error::Shape(format!(
                "quantize: {} values for a {rows}x{cols} matrix",
                values.len()
            )));
        }
        let mut data = vec![0u8; row_bytes * rows];
        if cols > 0 {
            for (x, out) in values
                .chunks_exact(cols)
                .zip(data.chunks_exact_mut(row_bytes))
            {
                quantize_row(ty, x, out);
            }
        }
        Self::new(ty, rows, cols, TensorBytes::from(data))
    }

    /// Storage format.
    pub fn ty(&self) -> GgmlType {
        self.ty
    }

    /// Number of rows (output features).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (input features).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The raw GGML bytes.
    pub fn bytes(&self) -> &[u8] {
        self.data.as_slice()
    }

    /// Bytes per row.
    pub(crate) fn row_bytes(&self) -> usize {
        self.row_bytes
    }

    /// Dequantises row `row` into `out` (`cols` values), e.g. for an embedding lookup.
    ///
    /// # Panics
    /// If `row >= rows` or `out.len() != cols` (caller bugs, like slice indexing).
    pub fn row_to_f32(&self, row: usize, out: &mut [f32]) {
        assert!(
            row < self.rows,
            "row {row} out of range for {} rows",
            self.rows
        );
        assert_eq!(out.len(), self.cols, "output length must equal cols");
        let start = row * self.row_bytes;
        dequantize_row(self.ty, &self.bytes()[start..start + self.row_bytes], out);
    }

    /// Dequantises the whole matrix (row-major).
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        if self.cols > 0 {
            for (row, o) in self
                .bytes()
                .chunks_exact(self.row_bytes)
                .zip(out.chunks_exact_mut(self.cols))
            {
                dequantize_row(self.ty, row, o);
            }
        }
        out
    }

    /// `out[n, rows] = x[n, cols] · Wᵀ`, with `x` and `out` row-major f32.
    ///
    /// Block formats quantise `x` to 8 bits per 32-element block first (the
    /// result matches the f32 product to within that quantisation: each
    /// activation is off by at most `max|x_block| / 254`); float formats
    /// multiply in f32. Work is spread over `pool`, so this must not be called
    /// from inside a task running on the same pool.
    ///
    /// # Errors
    /// [`Error::Shape`] if `x.len() != n * cols` or `out.len() != n * rows`.
    pub fn matmul(&self, pool: &ThreadPool, x: &[f32], n: usize, out: &mut [f32]) -> Result<()> {
        self.matmul_with(Kernel::active(), pool, x, n, out)
    }

    /// [`Self::matmul`] on a specific kernel path (tests and benches); an
    /// unsupported path falls back to the best supported one.
    pub(crate) fn matmul_with(
        &self,
        kernel: Kernel,
        pool: &ThreadPool,
        x: &[f32],
        n: usize,
        out: &mut [f32],
    ) -> Result<()> {
        if n.checked_mul(self.cols) != Some(x.len()) {
            return Err(Error::Shape(format!(
                "matmul: x has {} values, expected {n} rows of {}",
                x.len(),
                self.cols
            )));
        }
        if n.checked_mul(self.rows) != Some(out.len()) {
            return Err(Error::Shape(format!(
                "matmul: out has {} values, expected {n} rows of {}",
                out.len(),
                self.rows
            )));
        }
        let kernel = if kernel.supported() {
            kernel
        } else {
            Kernel::active()
        };
        super::kernels::driver::matmul(kernel, self, pool, x, n, out);
        Ok(())
    }
}
