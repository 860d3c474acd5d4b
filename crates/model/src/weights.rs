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

/// The role of a tensor inside one transformer block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerTensor {
    /// RMSNorm before attention.
    AttnNorm,
    /// Query projection.
    Q,
    /// Key projection.
    K,
    /// Value projection.
    V,
    /// Attention output projection.
    O,
    /// Query bias.
    QBias,
    /// Key bias.
    KBias,
    /// Value bias.
    VBias,
    /// RMSNorm before the MLP.
    FfnNorm,
    /// MLP gate projection.
    Gate,
    /// MLP up projection.
    Up,
    /// MLP down projection.
    Down,
}

/// Per-layer tensor names: (role, GGUF suffix, Hugging Face suffix).
const LAYER_NAMES: [(LayerTensor, &str, &str); 12] = [
    (
        LayerTensor::AttnNorm,
        "attn_norm.weight",
        "input_layernorm.weight",
    ),
    (LayerTensor::Q, "attn_q.weight", "self_attn.q_proj.weight"),
    (LayerTensor::K, "attn_k.weight", "self_attn.k_proj.weight"),
    (LayerTensor::V, "attn_v.weight", "self_attn.v_proj.weight"),
    (
        LayerTensor::O,
        "attn_output.weight",
        "self_attn.o_proj.weight",
    ),
    (LayerTensor::QBias, "attn_q.bias", "self_attn.q_proj.bias"),
    (LayerTensor::KBias, "attn_k.bias", "self_attn.k_proj.bias"),
    (LayerTensor::VBias, "attn_v.bias", "self_attn.v_proj.bias"),
    (
        LayerTensor::FfnNorm,
        "ffn_norm.weight",
        "post_attention_layernorm.weight",
    ),
    (LayerTensor::Gate, "ffn_gate.weight", "mlp.gate_proj.weight"),
    (LayerTensor::Up, "ffn_up.weight", "mlp.up_proj.weight"),
    (LayerTensor::Down, "ffn_down.weight", "mlp.down_proj.weight"),
];

/// A checkpoint format's tensor naming scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Naming {
    /// llama.cpp's GGUF names (`blk.N.attn_q.weight`).
    Gguf,
    /// Hugging Face transformers names (`model.layers.N.self_attn.q_proj.weight`).
    HuggingFace,
}

impl Naming {
    /// Token embedding matrix.
    pub fn embed(self) -> &'static str {
        match self {
            Self::Gguf => "token_embd.weight",
            Self::HuggingFace => "model.embed_tokens.weight",
        }
    }

    /// Final norm.
    pub fn norm(self) -> &'static str {
        match self {
            Self::Gguf => "output_norm.weight",
            Self::HuggingFace => "model.norm.weight",
        }
    }

    /// LM head (absent when tied to the embeddings).
    pub fn output(self) -> &'static str {
        match self {
            Self::Gguf => "output.weight",
            Self::HuggingFace => "lm_head.weight",
        }
    }

    /// The name of `tensor` in block `layer`.
    pub fn layer(self, layer: usize, tensor: LayerTensor) -> String {
        let (_, gguf, hf) = LAYER_NAMES
            .iter()
            .find(|(t, _, _)| *t == tensor)
            .expect("LAYER_NAMES lists every LayerTensor variant");
        match self {
            Self::Gguf => format!("blk.{layer}.{gguf}"),
            Self::HuggingFace => format!("model.layers.{layer}.{hf}"),
        }
    }
}

impl ModelWeights {
    /// Loads the weights of a GGUF file.
    pub fn from_gguf(file: &GgufFile, config: &LlamaConfig) -> Result<Self> {
        load(file, Naming::Gguf, config)
    }

    /// Loads the weights of a safetensors checkpoint (one or more files).
    pub fn from_safetensors(files: &[impl AsRef<Path>], config: &LlamaConfig) -> Result<Self> {
        load(
            &SafetensorsSource::open(files)?,
            Naming::HuggingFace,
            config,
        )
    }
}

fn load(src: &dyn TensorSource, names: Naming, c: &LlamaConfig) -> Result<ModelWeights> {
    let (h, q, kv, ff, vocab) = (
        c.hidden_size,
        c.q_dim(),
        c.kv_dim(),
        c.intermediate_size,
        c.vocab_size,
    );
    let embed = shaped(src, names.embed(), vocab, h)?;
    let output = if src.has(names.output()) {
        shaped(src, names.output(), vocab, h)?
    } else {
        embed.clone()
    };
    let norm = sized(src, names.norm(), h)?;
    let layers = (0..c.n_layers)
        .map(|i| {
            let n = |t: LayerTensor| names.layer(i, t);
            let bias = if c.attention_bias {
                Some(QkvBias {
                    q: sized(src, &n(LayerTensor::QBias), q)?,
                    k: sized(src, &n(LayerTensor::KBias), kv)?,
                    v: sized(src, &n(LayerTensor::VBias), kv)?,
                })
            } else {
                None
            };
            Ok(LayerWeights {
                attn_norm: sized(src, &n(LayerTensor::AttnNorm), h)?,
                wq: shaped(src, &n(LayerTensor::Q), q, h)?,
                wk: shaped(src, &n(LayerTensor::K), kv, h)?,
                wv: shaped(src, &n(LayerTensor::V), kv, h)?,
                wo: shaped(src, &n(LayerTensor::O), h, q)?,
                bias,
                ffn_norm: sized(src, &n(LayerTensor::FfnNorm), h)?,
                w_gate: shaped(src, &n(LayerTensor::Gate), ff, h)?,
                w_up: shaped(src, &n(LayerTensor::Up), ff, h)?,
                w_down: shaped(src, &n(LayerTensor::Down), h, ff)?,
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
