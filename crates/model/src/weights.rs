//! The weights of a llama-family model, loaded from GGUF or safetensors.
//!
//! Both sources end in the same [`ModelWeights`]: every projection is a
//! [`QMatrix`] (quantised or float, usually borrowed from a memory map) and
//! every norm or bias a plain `Vec<f32>`. Shapes are checked against the
//! config here, once, so the forward pass can trust them.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use memmap2::Mmap;

use crate::bytes::TensorBytes;
use crate::config::LlamaConfig;
use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::quant::{GgmlType, QMatrix};

/// Weights of one transformer block.
#[derive(Clone, Debug)]
pub struct LayerWeights {
    /// RMSNorm before attention.
    pub attn_norm: Vec<f32>,
    /// Query projection `[q_dim, hidden]`.
    pub wq: QMatrix,
    /// Key projection `[kv_dim, hidden]`.
    pub wk: QMatrix,
    /// Value projection `[kv_dim, hidden]`.
    pub wv: QMatrix,
    /// Output projection `[hidden, q_dim]`.
    pub wo: QMatrix,
    /// Query/key/value biases (Qwen2).
    pub bias: Option<QkvBias>,
    /// RMSNorm before the MLP.
    pub ffn_norm: Vec<f32>,
    /// Gate projection `[intermediate, hidden]`.
    pub w_gate: QMatrix,
    /// Up projection `[intermediate, hidden]`.
    pub w_up: QMatrix,
    /// Down projection `[hidden, intermediate]`.
    pub w_down: QMatrix,
}

/// Biases of the q, k and v projections.
#[derive(Clone, Debug)]
pub struct QkvBias {
    /// Query bias.
    pub q: Vec<f32>,
    /// Key bias.
    pub k: Vec<f32>,
    /// Value bias.
    pub v: Vec<f32>,
}

/// All weights of the model.
#[derive(Clone, Debug)]
pub struct ModelWeights {
    /// Token embeddings `[vocab, hidden]`.
    pub embed: QMatrix,
    /// Transformer blocks.
    pub layers: Vec<LayerWeights>,
    /// Final RMSNorm.
    pub norm: Vec<f32>,
    /// LM head `[vocab, hidden]` (the embedding matrix when tied).
    pub output: QMatrix,
}

/// Where tensors come from: names are mapped per source.
trait TensorSource {
    fn matrix(&self, name: &str) -> Result<QMatrix>;
    fn vector(&self, name: &str) -> Result<Vec<f32>>;
    fn has(&self, name: &str) -> bool;
}

impl TensorSource for GgufFile {
    fn matrix(&self, name: &str) -> Result<QMatrix> {
        GgufFile::matrix(self, name)
    }
    fn vector(&self, name: &str) -> Result<Vec<f32>> {
        GgufFile::vector(self, name)
    }
    fn has(&self, name: &str) -> bool {
        self.tensor_info(name).is_some()
    }
}

/// Tensor names of one source format.
struct Names {
    embed: &'static str,
    norm: &'static str,
    output: &'static str,
    layer: fn(usize, &str) -> String,
}

const GGUF_NAMES: Names = Names {
    embed: "token_embd.weight",
    norm: "output_norm.weight",
    output: "output.weight",
    layer: |i, part| {
        let p = match part {
            "attn_norm" => "attn_norm.weight",
            "q" => "attn_q.weight",
            "k" => "attn_k.weight",
            "v" => "attn_v.weight",
            "o" => "attn_output.weight",
            "q_bias" => "attn_q.bias",
            "k_bias" => "attn_k.bias",
            "v_bias" => "attn_v.bias",
            "ffn_norm" => "ffn_norm.weight",
            "gate" => "ffn_gate.weight",
            "up" => "ffn_up.weight",
            _ => "ffn_down.weight",
        };
        format!("blk.{i}.{p}")
    },
};

const HF_NAMES: Names = Names {
    embed: "model.embed_tokens.weight",
    norm: "model.norm.weight",
    output: "lm_head.weight",
    layer: |i, part| {
        let p = match part {
            "attn_norm" => "input_layernorm.weight",
            "q" => "self_attn.q_proj.weight",
            "k" => "self_attn.k_proj.weight",
            "v" => "self_attn.v_proj.weight",
            "o" => "self_attn.o_proj.weight",
            "q_bias" => "self_attn.q_proj.bias",
            "k_bias" => "self_attn.k_proj.bias",
            "v_bias" => "self_attn.v_proj.bias",
            "ffn_norm" => "post_attention_layernorm.weight",
            "gate" => "mlp.gate_proj.weight",
            "up" => "mlp.up_proj.weight",
            _ => "mlp.down_proj.weight",
        };
        format!("model.layers.{i}.{p}")
    },
};

impl ModelWeights {
    /// Loads the weights of a GGUF file.
    pub fn from_gguf(file: &GgufFile, config: &LlamaConfig) -> Result<Self> {
        load(file, &GGUF_NAMES, config)
    }

    /// Loads the weights of a safetensors checkpoint (one or more files).
    pub fn from_safetensors(files: &[impl AsRef<Path>], config: &LlamaConfig) -> Result<Self> {
        load(&SafetensorsSource::open(files)?, &HF_NAMES, config)
    }
}

fn load(src: &dyn TensorSource, names: &Names, c: &LlamaConfig) -> Result<ModelWeights> {
    let (h, q, kv, ff, vocab) = (
        c.hidden_size,
        c.q_dim(),
        c.kv_dim(),
        c.intermediate_size,
        c.vocab_size,
    );
    let embed = shaped(src, names.embed, vocab, h)?;
    let output = if src.has(names.output) {
        shaped(src, names.output, vocab, h)?
    } else {
        embed.clone()
    };
    let norm = sized(src, names.norm, h)?;
    let layers = (0..c.n_layers)
        .map(|i| {
            let n = |part: &str| (names.layer)(i, part);
            let bias = if c.attention_bias {
                Some(QkvBias {
                    q: sized(src, &n("q_bias"), q)?,
                    k: sized(src, &n("k_bias"), kv)?,
                    v: sized(src, &n("v_bias"), kv)?,
                })
            } else {
                None
            };
            Ok(LayerWeights {
                attn_norm: sized(src, &n("attn_norm"), h)?,
                wq: shaped(src, &n("q"), q, h)?,
                wk: shaped(src, &n("k"), kv, h)?,
                wv: shaped(src, &n("v"), kv, h)?,
                wo: shaped(src, &n("o"), h, q)?,
                bias,
                ffn_norm: sized(src, &n("ffn_norm"), h)?,
                w_gate: shaped(src, &n("gate"), ff, h)?,
                w_up: shaped(src, &n("up"), ff, h)?,
                w_down: shaped(src, &n("down"), h, ff)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(ModelWeights {
        embed,
        layers,
        norm,
        output,
    })
}

fn shaped(src: &dyn TensorSource, name: &str, rows: usize, cols: usize) -> Result<QMatrix> {
    let m = src.matrix(name)?;
    if (m.rows(), m.cols()) != (rows, cols) {
        return Err(Error::tensor(
            name,
            format!(
                "shape [{}, {}], expected [{rows}, {cols}] from the config",
                m.rows(),
                m.cols()
            ),
        ));
    }
    Ok(m)
}

fn sized(src: &dyn TensorSource, name: &str, len: usize) -> Result<Vec<f32>> {
    let v = src.vector(name)?;
    if v.len() != len {
        return Err(Error::tensor(
            name,
            format!("length {}, expected {len}", v.len()),
        ));
    }
    if let Some(bad) = v.iter().position(|x| !x.is_finite()) {
        return Err(Error::tensor(
            name,
            format!("non-finite value at index {bad}"),
        ));
    }
    Ok(v)
}

/// Tensors of one or more memory-mapped safetensors files.
struct SafetensorsSource {
    tensors: BTreeMap<String, (GgmlType, Vec<usize>, TensorBytes)>,
}

impl SafetensorsSource {
    fn open(files: &[impl AsRef<Path>]) -> Result<Self> {
        let mut tensors = BTreeMap::new();
        for path in files {
            let path = path.as_ref();
            let file = File::open(path).map_err(|e| Error::io(path, e))?;
            // SAFETY: read-only map of a model file that is not modified while loaded.
            let map = Arc::new(unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?);
            let (header_len, meta) = safetensors::SafeTensors::read_metadata(&map[..])
                .map_err(|e| Error::Safetensors(format!("{}: {e}", path.display())))?;
            let data_start = header_len + 8;
            for (name, info) in meta.tensors() {
                let ty = match info.dtype {
                    safetensors::Dtype::F32 => GgmlType::F32,
                    safetensors::Dtype::F16 => GgmlType::F16,
                    safetensors::Dtype::BF16 => GgmlType::BF16,
                    other => {
                        return Err(Error::tensor(&name, format!("unsupported dtype {other:?}")));
                    }
                };
                let (start, end) = info.data_offsets;
                let range = data_start + start..data_start + end;
                let bytes = TensorBytes::Mapped {
                    map: Arc::clone(&map),
                    range,
                };
                tensors.insert(name, (ty, info.shape.clone(), bytes));
            }
        }
        Ok(Self { tensors })
    }

    fn get(&self, name: &str) -> Result<&(GgmlType, Vec<usize>, TensorBytes)> {
        self.tensors
            .get(name)
            .ok_or_else(|| Error::tensor(name, "missing from the checkpoint"))
    }
}

impl TensorSource for SafetensorsSource {
    fn matrix(&self, name: &str) -> Result<QMatrix> {
        let (ty, shape, bytes) = self.get(name)?;
        let (rows, cols) = match shape[..] {
            [r, c] => (r, c),
            [c] => (1, c),
            _ => {
                return Err(Error::tensor(
                    name,
                    format!("expected 2 dims, got {shape:?}"),
                ));
            }
        };
        QMatrix::new(*ty, rows, cols, bytes.clone()).map_err(|e| Error::tensor(name, e.to_string()))
    }

    fn vector(&self, name: &str) -> Result<Vec<f32>> {
        Ok(self.matrix(name)?.to_f32())
    }

    fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}
