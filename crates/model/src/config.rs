//! Hyper-parameters of a llama-family model, read from GGUF metadata or `config.json`.

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::gguf::GgufFile;

/// Which pairs of a head's dimensions RoPE rotates together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs `(2i, 2i+1)`: llama-architecture GGUF files, whose Q/K
    /// rows were permuted by the converter.
    Interleaved,
    /// Pairs `(i, i + d/2)` ("rotate half"): Hugging Face checkpoints and Qwen2 GGUF.
    Halves,
}

/// The architecture family members this engine runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// Llama 2/3, SmolLM, TinyLlama, …
    Llama,
    /// Mistral (llama layout; sliding window ignored for contexts within it).
    Mistral,
    /// Qwen2 (llama layout plus q/k/v biases).
    Qwen2,
}

impl Arch {
    fn parse(name: &str) -> Result<Self> {
        match name {
            "llama" | "smollm" => Ok(Self::Llama),
            "mistral" => Ok(Self::Mistral),
            "qwen2" => Ok(Self::Qwen2),
            other => Err(Error::UnsupportedArchitecture(other.to_owned())),
        }
    }
}

/// Model dimensions and constants.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    /// Architecture family.
    pub arch: Arch,
    /// Residual stream width.
    pub hidden_size: usize,
    /// Feed-forward inner width.
    pub intermediate_size: usize,
    /// Transformer blocks.
    pub n_layers: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `n_heads`).
    pub n_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Vocabulary size (rows of the embedding matrix).
    pub vocab_size: usize,
    /// Maximum sequence length.
    pub context_length: usize,
    /// RoPE base frequency.
    pub rope_theta: f32,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// RoPE pairing.
    pub rope_style: RopeStyle,
    /// Whether q/k/v projections carry biases.
    pub attention_bias: bool,
}

impl LlamaConfig {
    /// Reads the `{arch}.*` keys of a GGUF file.
    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        let arch_name = f.get_str("general.architecture")?;
        let arch = Arch::parse(arch_name)?;
        let key = |k: &str| format!("{arch_name}.{k}");
        let req = |k: &str| -> Result<usize> {
            let v = f
                .get_u64(&key(k))?
                .ok_or_else(|| Error::Config(format!("missing metadata `{}`", key(k))))?;
            usize::try_from(v).map_err(|_| Error::Config(format!("`{}` = {v} too large", key(k))))
        };
        let hidden_size = req("embedding_length")?;
        let n_heads = req("attention.head_count")?;
        let n_kv_heads = f
            .get_u64(&key("attention.head_count_kv"))?
            .map_or(n_heads, |v| v as usize);
        let head_dim = match f.get_u64(&key("attention.key_length"))? {
            Some(v) => v as usize,
            None if n_heads > 0 => hidden_size / n_heads,
            None => 0,
        };
        let vocab_size = match f.get_u64(&key("vocab_size"))? {
            Some(v) => v as usize,
            None => f
                .require("token_embd.weight")?
                .dims
                .get(1)
                .copied()
                .unwrap_or(0) as usize,
        };
        let cfg = Self {
            arch,
            hidden_size,
            intermediate_size: req("feed_forward_length")?,
            n_layers: req("block_count")?,
            n_heads,
            n_kv_heads,
            head_dim,
            vocab_size,
            context_length: req("context_length")?,
            rope_theta: f.get_f64(&key("rope.freq_base"))?.unwrap_or(10_000.0) as f32,
            rms_eps: f
                .get_f64(&key("attention.layer_norm_rms_epsilon"))?
                .unwrap_or(1e-5) as f32,
            rope_style: if arch == Arch::Qwen2 {
                RopeStyle::Halves
            } else {
                RopeStyle::Interleaved
            },
            attention_bias: f.tensor_info("blk.0.attn_q.bias").is_some(),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses a Hugging Face `config.json`.
    pub fn from_hf_json(json: &str) -> Result<Self> {
        let raw: HfConfig =
            serde_json::from_str(json).map_err(|e| Error::Config(format!("config.json: {e}")))?;
        let arch = Arch::parse(&raw.model_type)?;
        let n_kv_heads = raw.num_key_value_heads.unwrap_or(raw.num_attention_heads);
        let head_dim = raw.head_dim.unwrap_or_else(|| {
            raw.hidden_size
                .checked_div(raw.num_attention_heads)
                .unwrap_or(0)
        });
        let cfg = Self {
            arch,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            n_layers: raw.num_hidden_layers,
            n_heads: raw.num_attention_heads,
            n_kv_heads,
            head_dim,
            vocab_size: raw.vocab_size,
            context_length: raw.max_position_embeddings,
            rope_theta: raw.rope_theta.unwrap_or(10_000.0),
            rms_eps: raw.rms_norm_eps.unwrap_or(1e-5),
            rope_style: RopeStyle::Halves,
            attention_bias: raw.attention_bias.unwrap_or(arch == Arch::Qwen2),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks that the dimensions are consistent and non-zero.
    pub fn validate(&self) -> Result<()> {
        let fields = [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("n_kv_heads", self.n_kv_heads),
            ("head_dim", self.head_dim),
            ("vocab_size", self.vocab_size),
            ("context_length", self.context_length),
        ];
        if let Some((name, _)) = fields.iter().find(|(_, v)| *v == 0) {
            return Err(Error::Config(format!("{name} must be positive")));
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return Err(Error::Config(format!(
                "{} query heads are not a multiple of {} key/value heads",
                self.n_heads, self.n_kv_heads
            )));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(Error::Config(format!(
                "head_dim {} must be even for RoPE",
                self.head_dim
            )));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(Error::Config(format!(
                "rope_theta {} must be positive",
                self.rope_theta
            )));
        }
        if !(self.rms_eps.is_finite() && self.rms_eps > 0.0) {
            return Err(Error::Config(format!(
                "rms_eps {} must be positive",
                self.rms_eps
            )));
        }
        Ok(())
    }

    /// Writes the `{arch}.*` keys that [`LlamaConfig::from_gguf`] reads back.
    pub fn write_gguf_metadata(&self, w: &mut crate::gguf::GgufWriter) {
        use crate::gguf::MetaValue;
        let arch = match self.arch {
            Arch::Llama => "llama",
            Arch::Mistral => "mistral",
            Arch::Qwen2 => "qwen2",
        };
        let n = |v: usize| MetaValue::U32(v as u32);
        let key = |k: &str| format!("{arch}.{k}");
        w.meta("general.architecture", MetaValue::String(arch.into()))
            .meta(key("embedding_length"), n(self.hidden_size))
            .meta(key("feed_forward_length"), n(self.intermediate_size))
            .meta(key("block_count"), n(self.n_layers))
            .meta(key("attention.head_count"), n(self.n_heads))
            .meta(key("attention.head_count_kv"), n(self.n_kv_heads))
            .meta(key("attention.key_length"), n(self.head_dim))
            .meta(key("context_length"), n(self.context_length))
            .meta(key("vocab_size"), n(self.vocab_size))
            .meta(key("rope.freq_base"), MetaValue::F32(self.rope_theta))
            .meta(
                key("attention.layer_norm_rms_epsilon"),
                MetaValue::F32(self.rms_eps),
            );
    }

    /// Width of all query heads together.
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Width of all key (or value) heads together.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
}

#[derive(Deserialize)]
struct HfConfig {
    model_type: String,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    vocab_size: usize,
    max_position_embeddings: usize,
    rope_theta: Option<f32>,
    rms_norm_eps: Option<f32>,
    attention_bias: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_config_parses_and_validates() {
        let json = r#"{"model_type":"qwen2","hidden_size":64,"intermediate_size":128,
            "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,
            "vocab_size":100,"max_position_embeddings":256,"rope_theta":1000000.0}"#;
        let c = LlamaConfig::from_hf_json(json).unwrap();
        assert_eq!((c.head_dim, c.kv_dim(), c.attention_bias), (16, 32, true));
        assert_eq!(c.rope_style, RopeStyle::Halves);
    }

    #[test]
    fn bad_configs_are_rejected_with_names() {
        let bad = r#"{"model_type":"gpt_neox","hidden_size":64,"intermediate_size":128,
            "num_hidden_layers":2,"num_attention_heads":4,"vocab_size":100,"max_position_embeddings":256}"#;
        assert!(
            matches!(LlamaConfig::from_hf_json(bad), Err(Error::UnsupportedArchitecture(a)) if a == "gpt_neox")
        );
        let gqa = r#"{"model_type":"llama","hidden_size":64,"intermediate_size":128,
            "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":3,"vocab_size":100,"max_position_embeddings":256}"#;
        let e = LlamaConfig::from_hf_json(gqa).unwrap_err().to_string();
        assert!(e.contains("multiple"), "{e}");
        assert!(LlamaConfig::from_hf_json("{").is_err());
    }
}
