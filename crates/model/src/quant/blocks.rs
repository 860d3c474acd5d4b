//! Byte-level decoding of the GGML block formats.
//!
//! Every block format is decoded into "sub-blocks" of 32 elements with
//! `value_i = scale[i / 16] * q_i + min` (small integer `q`), which is also the
//! shape the integer kernels work in. Dequantisation is written so each value
//! is computed with the same f32 operations as GGML / gguf-py, so results
//! match them bit for bit (checked against fixtures).

use super::types::GgmlType;

/// Elements per K-quant super-block.
pub(crate) const QK_K: usize = 256;
/// Elements per sub-block (and per activation block).
pub(crate) const QK: usize = 32;

/// 32 consecutive elements of a quantised row: `value_i = scale[i / 16] * q_i + min`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Sub {
    pub(crate) q: [i8; QK],
    pub(crate) scale: [f32; 2],
    pub(crate) min: f32,
}

impl Sub {
    /// Writes the 32 decoded values.
    pub(crate) fn dequantize(&self, out: &mut [f32]) {
        // Skipping a zero min keeps -0.0 products as GGML computes them.
        if self.min == 0.0 {
            for (i, (o, &q)) in out.iter_mut().zip(&self.q).enumerate() {
                *o = self.scale[i / 16] * f32::from(q);
            }
        } else {
            for (i, (o, &q)) in out.iter_mut().zip(&self.q).enumerate() {
                *o = self.scale[i / 16] * f32::from(q) + self.min;
            }
        }
    }
}

/// Little-endian f16 at `off`, widened to f32.
#[inline]
pub(crate) fn f16_at(b: &[u8], off: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[off], b[off + 1]])).to_f32()
}

/// Little-endian bf16 at `off`, widened to f32 (exact).
#[inline]
pub(crate) fn bf16_at(b: &[u8], off: usize) -> f32 {
    f32::from_bits(u32::from(u16::from_le_bytes([b[off], b[off + 1]])) << 16)
}

/// Little-endian f32 at `off`.
#[inline]
pub(crate) fn f32_at(b: &[u8], off: usize) -> f32 {
    f32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// The 6-bit scale and min of sub-block `j` (0..8) from the 12 packed bytes of Q4_K / Q5_K.
///
/// Bytes 0..4 hold scales 0..4 in their low 6 bits, bytes 4..8 mins 0..4; the
/// top two bits of those 8 bytes are the high bits of scales/mins 4..8, whose
/// low nibbles sit in bytes 8..12 (scale low, min high).
#[inline]
pub(crate) fn k_scale_min(s: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// Decodes every sub-block of one block (`block.len() == ty.block_bytes()`) into `out`
/// (`ty.block_len() / 32` entries). Float types are not block formats and are ignored.
pub(crate) fn decode_block(ty: GgmlType, block: &[u8], out: &mut [Sub]) {
    match ty {
        GgmlType::Q4_0 => {
            let d = f16_at(block, 0);
            out[0] = nibbles(&block[2..18], d, 0.0, -8);
        }
        GgmlType::Q4_1 => out[0] = nibbles(&block[4..20], f16_at(block, 0), f16_at(block, 2), 0),
        GgmlType::Q8_0 => out[0] = bytes8(&block[2..34], f16_at(block, 0)),
        GgmlType::Q8_1 => out[0] = bytes8(&block[4..36], f16_at(block, 0)),
        GgmlType::Q8_K => {
            let d = f32_at(block, 0);
            for (i, o) in out.iter_mut().enumerate().take(QK_K / QK) {
                *o = bytes8(&block[4 + i * QK..4 + (i + 1) * QK], d);
            }
        }
        GgmlType::Q4_K | GgmlType::Q5_K => decode_q45k(ty, block, out),
        GgmlType::Q6_K => decode_q6k(block, out),
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {}
    }
}

/// 16 bytes of nibbles: low nibbles are elements 0..16, high nibbles 16..32.
fn nibbles(qs: &[u8], d: f32, min: f32, offset: i8) -> Sub {
    let mut s = Sub {
        scale: [d; 2],
        min,
        ..Sub::default()
    };
    for (l, &b) in qs.iter().enumerate().take(16) {
        s.q[l] = (b & 0x0F) as i8 + offset;
        s.q[l + 16] = (b >> 4) as i8 + offset;
    }
    s
}

fn bytes8(qs: &[u8], d: f32) -> Sub {
    let mut s = Sub {
        scale: [d; 2],
        ..Sub::default()
    };
    for (o, &b) in s.q.iter_mut().zip(qs) {
        *o = b as i8;
    }
    s
}

/// Q4_K `{d, dmin, scales[12], qs[128]}` and Q5_K `{d, dmin, scales[12], qh[32], qs[128]}`.
/// Bytes `qs[32c..32c+32]` hold sub-block `2c` in low nibbles and `2c+1` in high
/// nibbles; Q5_K's fifth bit of element `l` of sub-block `j` is bit `j` of `qh[l]`.
fn decode_q45k(ty: GgmlType, block: &[u8], out: &mut [Sub]) {
    let d = f16_at(block, 0);
    let dmin = f16_at(block, 2);
    let scales = &block[4..16];
    let (qh, qs) = if ty == GgmlType::Q5_K {
        (Some(&block[16..48]), &block[48..176])
    } else {
        (None, &block[16..144])
    };
    for (j, o) in out.iter_mut().enumerate().take(8) {
        let (sc, m) = k_scale_min(scales, j);
        let bytes = &qs[(j / 2) * QK..(j / 2 + 1) * QK];
        let shift = 4 * (j % 2);
        o.scale = [d * f32::from(sc); 2];
        o.min = -(dmin * f32::from(m));
        for l in 0..QK {
            let hi = qh.map_or(0, |h| ((h[l] >> j) & 1) << 4);
            o.q[l] = (((bytes[l] >> shift) & 0x0F) | hi) as i8;
        }
    }
}

/// Q6_K `{ql[128], qh[64], scales: i8[16], d}`. Each half (128 elements) uses 64
/// `ql` bytes, 32 `qh` bytes and 8 scales; sub-block `k` of a half takes its low
/// nibbles from `ql[l + 32*(k%2)]` (low nibble for k<2, high for k≥2) and its top
/// two bits from bits `2k..2k+2` of `qh[l]`. Each scale covers 16 elements.
fn decode_q6k(block: &[u8], out: &mut [Sub]) {
    let d = f16_at(block, 208);
    for (i, o) in out.iter_mut().enumerate().take(8) {
        let (h, k) = (i / 4, i % 4);
        let ql = &block[64 * h + 32 * (k % 2)..];
        let qh = &block[128 + 32 * h..];
        let sc = &block[192 + 8 * h + 2 * k..];
        o.scale = [d * f32::from(sc[0] as i8), d * f32::from(sc[1] as i8)];
        o.min = 0.0;
        for l in 0..QK {
            let lo = (ql[l] >> (4 * (k / 2))) & 0x0F;
            let hi = ((qh[l] >> (2 * k)) & 3) << 4;
            o.q[l] = (lo | hi) as i8 - 32;
        }
    }
}

/// Dequantises one row (`row.len() == ty.row_bytes(out.len())`) into `out`.
pub(crate) fn dequantize_row(ty: GgmlType, row: &[u8], out: &mut [f32]) {
    match ty {
        GgmlType::F32 => out
            .iter_mut()
            .enumerate()
            .for_each(|(i, o)| *o = f32_at(row, 4 * i)),
        GgmlType::F16 => out
            .iter_mut()
            .enumerate()
            .for_each(|(i, o)| *o = f16_at(row, 2 * i)),
        GgmlType::BF16 => out
            .iter_mut()
            .enumerate()
            .for_each(|(i, o)| *o = bf16_at(row, 2 * i)),
        _ => {
            let mut subs = [Sub::default(); QK_K / QK];
            let (bl, bb) = (ty.block_len(), ty.block_bytes());
            for (block, vals) in row.chunks_exact(bb).zip(out.chunks_exact_mut(bl)) {
                decode_block(ty, block, &mut subs);
                for (s, v) in subs.iter().zip(vals.chunks_exact_mut(QK)) {
                    s.dequantize(v);
                }
            }
        }
    }
}
