//! The GGML storage types this engine implements, with their GGUF ids and block geometry.

use crate::error::{Error, Result};

/// A tensor storage type, numbered as in GGML / GGUF.
#[allow(non_camel_case_types)] // the GGML names are what users and files use
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlType {
    /// 32-bit IEEE float.
    F32,
    /// 16-bit IEEE half float.
    F16,
    /// bfloat16 (the top half of an f32).
    BF16,
    /// Blocks of 32: `{d: f16, qs: [u8; 16]}`, `x = d * (q - 8)`.
    Q4_0,
    /// Blocks of 32: `{d: f16, m: f16, qs: [u8; 16]}`, `x = d * q + m`.
    Q4_1,
    /// Blocks of 32: `{d: f16, qs: [i8; 32]}`, `x = d * q`.
    Q8_0,
    /// Blocks of 32: `{d: f16, s: f16, qs: [i8; 32]}`, `x = d * q`, `s = d * Σq`.
    Q8_1,
    /// Super-blocks of 256 with 8 sub-blocks of 32, 6-bit scales and mins, 4-bit quants.
    Q4_K,
    /// Like `Q4_K` with a fifth quant bit stored separately.
    Q5_K,
    /// Super-blocks of 256 with 16 sub-blocks of 16, 8-bit scales, 6-bit quants.
    Q6_K,
    /// Super-blocks of 256: `{d: f32, qs: [i8; 256], bsums: [i16; 16]}`.
    Q8_K,
}

/// Names of the GGML ids this engine knows about but does not implement.
const UNSUPPORTED: &[(u32, &str)] = &[
    (6, "Q5_0"),
    (7, "Q5_1"),
    (10, "Q2_K"),
    (11, "Q3_K"),
    (16, "IQ2_XXS"),
    (17, "IQ2_XS"),
    (18, "IQ3_XXS"),
    (19, "IQ1_S"),
    (20, "IQ4_NL"),
    (21, "IQ3_S"),
    (22, "IQ2_S"),
    (23, "IQ4_XS"),
    (24, "I8"),
    (25, "I16"),
    (26, "I32"),
    (27, "I64"),
    (28, "F64"),
    (29, "IQ1_M"),
    (34, "TQ1_0"),
    (35, "TQ2_0"),
    (39, "MXFP4"),
];

impl GgmlType {
    /// Every implemented type.
    pub const ALL: [GgmlType; 11] = [
        Self::F32,
        Self::F16,
        Self::BF16,
        Self::Q4_0,
        Self::Q4_1,
        Self::Q8_0,
        Self::Q8_1,
        Self::Q4_K,
        Self::Q5_K,
        Self::Q6_K,
        Self::Q8_K,
    ];

    /// Maps a GGML type id (as stored in GGUF tensor infos) to a type.
    ///
    /// # Errors
    /// [`Error::UnsupportedType`] naming the type for ids this engine does not implement.
    pub fn from_ggml_id(id: u32) -> Result<Self> {
        if let Some(t) = Self::ALL.iter().find(|t| t.ggml_id() == id) {
            return Ok(*t);
        }
        let name = UNSUPPORTED
            .iter()
            .find(|(i, _)| *i == id)
            .map_or("unknown", |(_, n)| n);
        Err(Error::UnsupportedType(format!("{name} (ggml type {id})")))
    }

    /// The GGML type id.
    pub fn ggml_id(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q8_0 => 8,
            Self::Q8_1 => 9,
            Self::Q4_K => 12,
            Self::Q5_K => 13,
            Self::Q6_K => 14,
            Self::Q8_K => 15,
            Self::BF16 => 30,
        }
    }

    /// The GGML name, e.g. `"Q4_K"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::BF16 => "BF16",
            Self::Q4_0 => "Q4_0",
            Self::Q4_1 => "Q4_1",
            Self::Q8_0 => "Q8_0",
            Self::Q8_1 => "Q8_1",
            Self::Q4_K => "Q4_K",
            Self::Q5_K => "Q5_K",
            Self::Q6_K => "Q6_K",
            Self::Q8_K => "Q8_K",
        }
    }

    /// Elements per block: 1 for float types, 32 for the simple quants, 256 for K-quants.
    pub fn block_len(self) -> usize {
        match self {
            Self::F32 | Self::F16 | Self::BF16 => 1,
            Self::Q4_0 | Self::Q4_1 | Self::Q8_0 | Self::Q8_1 => 32,
            Self::Q4_K | Self::Q5_K | Self::Q6_K | Self::Q8_K => 256,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q8_0 => 34,
            Self::Q8_1 => 36,
            Self::Q4_K => 144,
            Self::Q5_K => 176,
            Self::Q6_K => 210,
            Self::Q8_K => 292,
        }
    }

    /// True for the plain float formats (no blocks, no activation quantisation).
    pub fn is_float(self) -> bool {
        self.block_len() == 1
    }

    /// Bytes taken by one row of `cols` elements.
    ///
    /// # Errors
    /// [`Error::Shape`] when `cols` is not a whole number of blocks.
    pub fn row_bytes(self, cols: usize) -> Result<usize> {
        let bl = self.block_len();
        if !cols.is_multiple_of(bl) {
            return Err(Error::Shape(format!(
                "{} rows hold blocks of {bl} elements; {cols} columns is not a multiple",
                self.name()
            )));
        }
        Ok(cols / bl * self.block_bytes())
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
