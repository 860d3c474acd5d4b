//! Tiny randomly initialised llama models, for fast tests here and in the
//! crates built on this one. They go through the real GGUF writer and loader,
//! so a test on a tiny model also exercises the file format.

use crate::config::{Arch, LlamaConfig, RopeStyle};
use crate::error::Result;
use crate::gguf::{GgufFile, GgufWriter};
use crate::llama::Transformer;
use crate::quant::{GgmlType, QMatrix};
use crate::weights::ModelWeights;

/// A deterministic pseudo-random source (SplitMix64) for test weights.
#[derive(Clone, Debug)]
pub struct TestRng(u64);

impl TestRng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Uniform in [-1, 1).
    pub fn next_f32(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// `n` values uniform in [-scale, scale).
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next_f32() * scale).collect()
    }
}

/// A small llama config; `block` is the quantisation block length the
/// dimensions must be multiples of (32, or 256 for K-quants).
pub fn tiny_config(block: usize) -> LlamaConfig {
    let hidden = block.max(64);
    LlamaConfig {
        arch: Arch::Llama,
        hidden_size: hidden,
        intermediate_size: 2 * hidden,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: hidden / 4,
        vocab_size: 96,
        context_length: 128,
        rope_theta: 10_000.0,
        rms_eps: 1e-5,
        rope_style: RopeStyle::Interleaved,
        attention_bias: false,
    }
}

/// Writes a random model with projections stored as `ty` to GGUF bytes.
pub fn tiny_gguf(config: &LlamaConfig, ty: GgmlType, seed: u64) -> Result<Vec<u8>> {
    let mut rng = TestRng::new(seed);
    let mut bias_rng = TestRng::new(seed ^ 0xB1A5);
    let c = config;
    let mut w = GgufWriter::new();
    config.write_gguf_metadata(&mut w);
    let mut matrix = |w: &mut GgufWriter, name: String, rows: usize, cols: usize| -> Result<()> {
        let scale = 1.0 / (cols as f32).sqrt() * 1.7;
        w.matrix(
            name,
            &QMatrix::quantize(ty, rows, cols, &rng.vec(rows * cols, scale))?,
        );
        Ok(())
    };
    let (h, q, kv, ff) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size);
    matrix(&mut w, "token_embd.weight".into(), c.vocab_size, h)?;
    for i in 0..c.n_layers {
        let n = |p: &str| format!("blk.{i}.{p}.weight");
        matrix(&mut w, n("attn_q"), q, h)?;
        matrix(&mut w, n("attn_k"), kv, h)?;
        matrix(&mut w, n("attn_v"), kv, h)?;
        matrix(&mut w, n("attn_output"), h, q)?;
        matrix(&mut w, n("ffn_gate"), ff, h)?;
        matrix(&mut w, n("ffn_up"), ff, h)?;
        matrix(&mut w, n("ffn_down"), h, ff)?;
        if c.attention_bias {
            w.vector(format!("blk.{i}.attn_q.bias"), &bias_rng.vec(q, 0.5))
                .vector(format!("blk.{i}.attn_k.bias"), &bias_rng.vec(kv, 0.5))
                .vector(format!("blk.{i}.attn_v.bias"), &bias_rng.vec(kv, 0.5));
        }
        let ones: Vec<f32> = (0..h)
            .map(|j| 1.0 + 0.1 * ((j % 7) as f32 - 3.0) / 3.0)
            .collect();
        w.vector(n("attn_norm"), &ones).vector(n("ffn_norm"), &ones);
    }
    w.vector("output_norm.weight", &vec![1.0; h]);
    matrix(&mut w, "output.weight".into(), c.vocab_size, h)?;
    Ok(w.to_bytes())
}

/// A random tiny transformer loaded back through the GGUF reader.
pub fn tiny_transformer(
    config: &LlamaConfig,
    ty: GgmlType,
    seed: u64,
    dir: &std::path::Path,
) -> Result<Transformer> {
    let path = dir.join(format!("tiny-{}-{seed}.gguf", ty.name()));
    std::fs::write(&path, tiny_gguf(config, ty, seed)?).map_err(|e| crate::Error::io(&path, e))?;
    let file = GgufFile::open(&path)?;
    let loaded = LlamaConfig::from_gguf(&file)?;
    let weights = ModelWeights::from_gguf(&file, &loaded)?;
    Transformer::new(loaded, weights)
}
