//! LoRA adapters in Hugging Face PEFT layout: `adapter_config.json` plus
//! `adapter_model.safetensors`, validated against a base [`LlamaConfig`].
//!
//! An adapter adds `scale · B·A` to selected projection matrices, where
//! `A` is `[r, in]`, `B` is `[out, r]` and `scale` is `alpha / r` (or
//! `alpha / sqrt(r)` with rsLoRA). Loading checks every tensor's name,
//! layer, shape, rank and values, so a loaded adapter is known to fit the
//! base model. [`LoraAdapter::id`] is a content hash that does not depend on
//! JSON key order or storage dtype.
//!
//! PEFT factors follow the Hugging Face layout, but llama-architecture GGUF
//! files hold q_proj/k_proj with their rows permuted per head (llama.cpp's
//! converter does this for interleaved RoPE). Loading against such a base
//! permutes the rows of those modules' `B` the same way, once; exporting
//! and hashing undo it, so files and ids never depend on the base.
//!
//! Factors are held as f32 (exact), f16 ([`LoraDtype`], half the memory
//! and bandwidth) or q8 (bytes with block scales, [`Q8Values`]), with `B` in
//! column panels for the expand kernel ([`Panels`]). A runtime file
//! ([`LoraAdapter::to_runtime_bytes`]) stores them exactly as held, so a
//! serving node's cold load is a copy rather than a decode. A batch's
//! updates are grouped by adapter ([`LoraBatch`]), and rows that share an
//! adapter go through its factors four at a time ([`TILE`]).

mod batch;
mod config;
mod decode;
mod factor;
mod panel;
mod q8;
mod runtime;
mod tensors;
#[cfg(test)]
mod tests;
mod tile;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;

use memmap2::Mmap;
use sha2::{Digest, Sha256};

pub use batch::LoraBatch;
pub use config::{AdapterConfig, MAX_CONFIG_BYTES, MAX_RANK, TargetModules};
pub use factor::{Factor, LoraDtype};
pub use panel::{PANEL, Panels, Piece};
pub use q8::{Q8_BLOCK, Q8Values};
pub use runtime::runtime_file_name;
pub use tile::TILE;

use crate::config::{LlamaConfig, RopeStyle};
use crate::error::{Error, Result};
use crate::testing::TestRng;
use crate::weights::{LayerTensor, Naming};
use tensors::{RawPair, RawTensor};

/// Every projection an adapter may target, in block order (what PEFT calls
/// "all-linear").
pub const PROJECTIONS: [LayerTensor; 7] = [
    MODULES[0].0,
    MODULES[1].0,
    MODULES[2].0,
    MODULES[3].0,
    MODULES[4].0,
    MODULES[5].0,
    MODULES[6].0,
];

/// Default cap on an adapter's total size on disk (2 GiB).
pub const MAX_ADAPTER_BYTES: u64 = 2 << 30;

/// How an adapter is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// Cap on the two files' total size.
    pub max_bytes: u64,
    /// The element type the factors are held in.
    pub dtype: LoraDtype,
}

impl Default for LoadOptions {
    /// [`MAX_ADAPTER_BYTES`], and f32 so the values are exactly the file's.
    fn default() -> Self {
        Self {
            max_bytes: MAX_ADAPTER_BYTES,
            dtype: LoraDtype::F32,
        }
    }
}

impl LoadOptions {
    /// The default size cap, with the factors held as `dtype`.
    pub fn held_as(dtype: LoraDtype) -> Self {
        Self {
            dtype,
            ..Self::default()
        }
    }
}

/// File name of the PEFT config.
pub const CONFIG_FILE: &str = "adapter_config.json";

/// File name of the PEFT weights.
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// A module position: (layer, index into [`MODULES`]).
type Slot = (usize, usize);

/// The projections an adapter may target, with their path inside a block.
const MODULES: [(LayerTensor, &str); 7] = [
    (LayerTensor::Q, "self_attn.q_proj"),
    (LayerTensor::K, "self_attn.k_proj"),
    (LayerTensor::V, "self_attn.v_proj"),
    (LayerTensor::O, "self_attn.o_proj"),
    (LayerTensor::Gate, "mlp.gate_proj"),
    (LayerTensor::Up, "mlp.up_proj"),
    (LayerTensor::Down, "mlp.down_proj"),
];

/// One adapted projection: the low-rank factors and their scale.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraPair {
    /// `lora_A`, row-major `[rank, in_dim]`.
    pub a: Factor,
    /// `lora_B` transposed (`[rank, out_dim]`) and regrouped in column
    /// panels ([`LoraPair::panels`]): the expand `out += s·B` then streams
    /// it once, `rank` multiply-adds per output with no horizontal sums
    /// (PEFT files store `[out_dim, rank]`; [`LoraPair::b`] gives that
    /// layout back).
    pub b_panels: Factor,
    /// The adapter rank for this module.
    pub rank: usize,
    /// Input width of the base projection.
    pub in_dim: usize,
    /// Output width of the base projection.
    pub out_dim: usize,
    /// Factor applied to `B·A`.
    pub scale: f32,
}

impl LoraPair {
    /// `lora_B` in the PEFT layout, row-major `[out_dim, rank]`.
    pub fn b(&self) -> Vec<f32> {
        let bt = self.panels().to_row_major(&self.b_panels.to_f32());
        transpose(&bt, self.rank, self.out_dim)
    }

    /// The panel layout of [`LoraPair::b_panels`].
    pub fn panels(&self) -> Panels {
        Panels {
            rank: self.rank,
            out_dim: self.out_dim,
        }
    }

    /// The same factors held as `dtype`.
    fn to_dtype(&self, dtype: LoraDtype) -> Self {
        let convert = |f: &Factor| match (f, dtype) {
            (Factor::F16(_), LoraDtype::F16) | (Factor::Q8(_), LoraDtype::Q8) => f.clone(),
            _ => Factor::from_f32(f.to_f32().into_owned(), dtype),
        };
        Self {
            a: convert(&self.a),
            b_panels: convert(&self.b_panels),
            ..*self
        }
    }
}

/// The transpose of a row-major `[rows, cols]` matrix.
fn transpose<T: Copy + Default>(values: &[T], rows: usize, cols: usize) -> Vec<T> {
    let mut out = vec![T::default(); rows * cols];
    for (r, row) in values.chunks_exact(cols.max(1)).enumerate().take(rows) {
        for (c, &v) in row.iter().enumerate() {
            out[c * rows + r] = v;
        }
    }
    out
}

/// A validated LoRA adapter for one base model.
///
/// The factors are held in the base's runtime layout: for a base whose
/// q_proj/k_proj rows are interleaved per head (llama GGUF,
/// [`RopeStyle::Interleaved`]) the rows of those modules' `B` are permuted
/// to match, so [`LoraAdapter::pair`], [`LoraAdapter::pairs`] and
/// [`LoraAdapter::delta`] can be added straight onto the loaded weights.
/// [`LoraAdapter::id`], [`LoraAdapter::to_peft_bytes`] and
/// [`LoraAdapter::save`] use the canonical Hugging Face layout instead, so
/// they are identical whichever base the adapter was loaded against.
#[derive(Clone, Debug)]
pub struct LoraAdapter {
    config: AdapterConfig,
    pairs: BTreeMap<Slot, LoraPair>,
    /// `Some(head_dim)` when the `B` rows of q_proj/k_proj are interleaved
    /// per head of this width; `None` when they are in Hugging Face order.
    qk_interleave: Option<usize>,
    /// The content id, once computed or vouched for ([`LoraAdapter::with_id`]):
    /// hashing every factor costs more than loading them, and callers such
    /// as a serving engine ask for it per request.
    id: OnceLock<String>,
}

/// Equal content; whether the id has been computed yet does not matter.
impl PartialEq for LoraAdapter {
    fn eq(&self, other: &Self) -> bool {
        self.config == other.config
            && self.pairs == other.pairs
            && self.qk_interleave == other.qk_interleave
    }
}

fn bad(msg: String) -> Error {
    Error::Adapter(msg)
}

fn slot_of(tensor: LayerTensor) -> Option<usize> {
    MODULES.iter().position(|(t, _)| *t == tensor)
}

/// Whether `slot` is a projection whose output rows RoPE rotates.
fn is_qk((_, index): Slot) -> bool {
    matches!(MODULES[index].0, LayerTensor::Q | LayerTensor::K)
}

/// The head width by which `base` holds its Q/K rows interleaved, or `None`
/// when they are in Hugging Face order. Interleaved RoPE is exactly the case
/// where llama.cpp's converter permuted those rows; Hugging Face checkpoints
/// and Qwen2 GGUF keep the "rotate half" order PEFT trained against.
fn qk_interleave(base: &LlamaConfig) -> Option<usize> {
    match base.rope_style {
        RopeStyle::Interleaved => Some(base.head_dim),
        RopeStyle::Halves => None,
    }
}

/// `model.layers.N.self_attn.q_proj` for a slot.
fn module_path((layer, index): Slot) -> String {
    let name = Naming::HuggingFace.layer(layer, MODULES[index].0);
    name.strip_suffix(".weight").unwrap_or(&name).to_string()
}

/// The PEFT tensor name of one half of the module at `path`.
fn tensor_name(path: &str, is_a: bool) -> String {
    let half = if is_a { "A" } else { "B" };
    format!("base_model.model.{path}.lora_{half}.weight")
}

/// `(in_dim, out_dim)` of a base projection, or `None` for non-projections.
fn dims(base: &LlamaConfig, tensor: LayerTensor) -> Option<(usize, usize)> {
    let (h, i) = (base.hidden_size, base.intermediate_size);
    Some(match tensor {
        LayerTensor::Q => (h, base.q_dim()),
        LayerTensor::K | LayerTensor::V => (h, base.kv_dim()),
        LayerTensor::O => (base.q_dim(), h),
        LayerTensor::Gate | LayerTensor::Up => (h, i),
        LayerTensor::Down => (i, h),
        _ => return None,
    })
}

/// Checks one module's A and B against the base and the config.
fn build_pair(
    slot: Slot,
    raw: RawPair,
    base: &LlamaConfig,
    config: &AdapterConfig,
) -> Result<LoraPair> {
    let path = module_path(slot);
    let (a_name, b_name) = tensors::pair_names(slot);
    let a = raw
        .a
        .ok_or_else(|| bad(format!("`{b_name}` has no matching `{a_name}`")))?;
    let b = raw
        .b
        .ok_or_else(|| bad(format!("`{a_name}` has no matching `{b_name}`")))?;
    if !config.targets(&path) {
        return Err(bad(format!(
            "tensor `{a_name}` adapts `{path}`, which is not in target_modules"
        )));
    }
    let (in_dim, out_dim) = dims(base, MODULES[slot.1].0).unwrap_or_default();
    check_shapes(&a, &b, in_dim, out_dim)?;
    let rank = config.rank_for(&path);
    if a.rows != rank {
        return Err(bad(format!(
            "tensor `{a_name}` has rank {} but adapter_config.json gives rank {rank} for `{path}`",
            a.rows
        )));
    }
    Ok(LoraPair {
        a: a.data,
        b_panels: b.data,
        rank,
        in_dim,
        out_dim,
        scale: config.scale_for(&path),
    })
}

fn check_shapes(a: &RawTensor, b: &RawTensor, in_dim: usize, out_dim: usize) -> Result<()> {
    if a.cols != in_dim {
        return Err(bad(format!(
            "tensor `{}` has shape [{}, {}]; the base projection's input width is {in_dim}",
            a.name, a.rows, a.cols
        )));
    }
    if b.rows != out_dim {
        return Err(bad(format!(
            "tensor `{}` has shape [{}, {}]; the base projection's output width is {out_dim}",
            b.name, b.rows, b.cols
        )));
    }
    if a.rows != b.cols {
        return Err(bad(format!(
            "rank mismatch: `{}` has rank {} but `{}` has rank {}",
            a.name, a.rows, b.name, b.cols
        )));
    }
    Ok(())
}

/// Memory-maps `path` read-only (`None` for an empty file, which cannot be
/// mapped). Decoding straight from the page cache saves reading the whole
/// file into a buffer first, which was a fifth of a cold load.
fn map_file(path: &Path) -> Result<Option<Mmap>> {
    let file = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len == 0 {
        return Ok(None);
    }
    // SAFETY: the map is read-only and lives only while the adapter is
    // decoded into owned vectors. Adapter files are written whole and
    // replaced by rename (here and by the serving store), never changed in
    // place, so the mapped bytes do not change under us; as with every
    // mmap-based loader, another process truncating the file meanwhile is
    // outside what is supported. Bounds are checked by the safetensors parser.
    let map = unsafe { memmap2::MmapOptions::new().map(&file) }.map_err(|e| Error::io(path, e))?;
    // Every page is about to be read once: ask for all of them now, without
    // waiting, so a file on disk is read while the first tensors decode.
    // (Populating the map up front instead made a load from disk wait for
    // the whole read before decoding anything: 1.47× a plain read of the
    // file, against 1.1–1.2× this way.) The advice is only a hint, so a
    // refusal changes nothing.
    #[cfg(unix)]
    let _ = map.advise(memmap2::Advice::WillNeed);
    Ok(Some(map))
}

/// Writes `bytes` to `path` via a temporary file and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let result = fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

impl LoraAdapter {
    /// Loads `adapter_config.json` and `adapter_model.safetensors` from `dir`,
    /// refusing files larger than [`MAX_ADAPTER_BYTES`].
    pub fn load(dir: &Path, base: &LlamaConfig) -> Result<Self> {
        Self::load_with_limit(dir, base, MAX_ADAPTER_BYTES)
    }

    /// Like [`LoraAdapter::load`] with an explicit cap on the total size.
    pub fn load_with_limit(dir: &Path, base: &LlamaConfig, max_bytes: u64) -> Result<Self> {
        let options = LoadOptions {
            max_bytes,
            ..LoadOptions::default()
        };
        Self::load_with(dir, base, &options)
    }

    /// Like [`LoraAdapter::load`] with explicit [`LoadOptions`].
    pub fn load_with(dir: &Path, base: &LlamaConfig, options: &LoadOptions) -> Result<Self> {
        let max_bytes = options.max_bytes;
        let config_path = dir.join(CONFIG_FILE);
        let weights_path = dir.join(WEIGHTS_FILE);
        let size = |p: &Path| {
            fs::metadata(p)
                .map(|m| m.len())
                .map_err(|e| Error::io(p, e))
        };
        let total = size(&config_path)?.saturating_add(size(&weights_path)?);
        if total > max_bytes {
            return Err(bad(format!(
                "adapter in {} is {total} bytes, limit is {max_bytes}",
                dir.display()
            )));
        }
        let json = fs::read(&config_path).map_err(|e| Error::io(&config_path, e))?;
        let weights = map_file(&weights_path)?;
        Self::from_bytes_with(&json, weights.as_deref().unwrap_or_default(), base, options)
    }

    /// Parses and validates an adapter from in-memory file contents.
    pub fn from_bytes(config_json: &[u8], safetensors: &[u8], base: &LlamaConfig) -> Result<Self> {
        Self::from_bytes_with_limit(config_json, safetensors, base, MAX_ADAPTER_BYTES)
    }

    /// Like [`LoraAdapter::from_bytes`] with an explicit cap on the total size.
    pub fn from_bytes_with_limit(
        config_json: &[u8],
        safetensors: &[u8],
        base: &LlamaConfig,
        max_bytes: u64,
    ) -> Result<Self> {
        let options = LoadOptions {
            max_bytes,
            ..LoadOptions::default()
        };
        Self::from_bytes_with(config_json, safetensors, base, &options)
    }

    /// Like [`LoraAdapter::from_bytes`] with explicit [`LoadOptions`].
    pub fn from_bytes_with(
        config_json: &[u8],
        safetensors: &[u8],
        base: &LlamaConfig,
        options: &LoadOptions,
    ) -> Result<Self> {
        let qk_interleave = qk_interleave(base);
        let source = tensors::Source::Peft { qk_interleave };
        Self::parse(config_json, safetensors, base, options, source)
    }

    fn parse(
        config_json: &[u8],
        safetensors: &[u8],
        base: &LlamaConfig,
        options: &LoadOptions,
        source: tensors::Source,
    ) -> Result<Self> {
        let max_bytes = options.max_bytes;
        let total = (config_json.len() as u64).saturating_add(safetensors.len() as u64);
        if total > max_bytes {
            return Err(bad(format!(
                "adapter is {total} bytes, limit is {max_bytes}"
            )));
        }
        let config = AdapterConfig::parse(config_json)?;
        let qk_interleave = qk_interleave(base);
        let mut pairs = BTreeMap::new();
        let tensors = tensors::read_all(safetensors, base.n_layers, options.dtype, source)?;
        for (slot, raw) in tensors {
            pairs.insert(slot, build_pair(slot, raw, base, &config)?);
        }
        Ok(Self {
            config,
            pairs,
            qk_interleave,
            id: OnceLock::new(),
        })
    }

    /// The adapter's PEFT configuration.
    pub fn config(&self) -> &AdapterConfig {
        &self.config
    }

    /// Whether the q_proj/k_proj factors are held with their `B` rows
    /// interleaved per head, matching a [`RopeStyle::Interleaved`] base.
    pub fn qk_rows_interleaved(&self) -> bool {
        self.qk_interleave.is_some()
    }

    /// The factors adapting `tensor` in block `layer`, if any, in the base's
    /// runtime layout.
    pub fn pair(&self, layer: usize, tensor: LayerTensor) -> Option<&LoraPair> {
        self.pairs.get(&(layer, slot_of(tensor)?))
    }

    /// Every adapted projection as `(layer, tensor, factors)`, in layer order,
    /// in the base's runtime layout.
    pub fn pairs(&self) -> impl Iterator<Item = (usize, LayerTensor, &LoraPair)> + '_ {
        self.pairs
            .iter()
            .map(|(&(layer, index), pair)| (layer, MODULES[index].0, pair))
    }

    /// The element type the factors are held in: the narrowest any module
    /// is held in (a module beyond f16's range stays f32 in an f16 adapter).
    pub fn dtype(&self) -> LoraDtype {
        let held = |d: LoraDtype| {
            self.pairs
                .values()
                .any(|p| p.a.dtype() == d || p.b_panels.dtype() == d)
        };
        [LoraDtype::Q8, LoraDtype::F16]
            .into_iter()
            .find(|&d| held(d))
            .unwrap_or(LoraDtype::F32)
    }

    /// The same adapter with its factors held as `dtype` (see [`LoraDtype`]).
    /// A known id is kept: it names the content this copy was made from.
    pub fn to_dtype(&self, dtype: LoraDtype) -> Self {
        Self {
            config: self.config.clone(),
            pairs: self
                .pairs
                .iter()
                .map(|(&slot, p)| (slot, p.to_dtype(dtype)))
                .collect(),
            qk_interleave: self.qk_interleave,
            id: self.id.clone(),
        }
    }

    /// The dense update `scale · B·A`, row-major `[out_dim, in_dim]`, with
    /// rows in the base's runtime layout.
    pub fn delta(&self, layer: usize, tensor: LayerTensor) -> Option<Vec<f32>> {
        let p = self.pair(layer, tensor)?;
        let (a, b_panels, panels) = (p.a.to_f32(), p.b_panels.to_f32(), p.panels());
        let mut out = vec![0.0f32; p.out_dim * p.in_dim];
        for (o, row) in out.chunks_exact_mut(p.in_dim.max(1)).enumerate() {
            for k in 0..p.rank {
                let coef = p.scale * b_panels[panels.index(k, o)];
                let a_row = &a[k * p.in_dim..(k + 1) * p.in_dim];
                row.iter_mut().zip(a_row).for_each(|(d, a)| *d += coef * a);
            }
        }
        Some(out)
    }

    /// `(name, [rows, cols], values)` of every tensor in Hugging Face layout,
    /// sorted by name.
    fn named_tensors(&self) -> Vec<(String, [usize; 2], Cow<'_, [f32]>)> {
        let mut out = Vec::with_capacity(2 * self.pairs.len());
        for (&slot, p) in &self.pairs {
            let (a_name, b_name) = tensors::pair_names(slot);
            let b = match self.qk_interleave {
                Some(head_dim) if is_qk(slot) => {
                    tensors::deinterleave_rows(&p.b(), p.rank, head_dim)
                }
                _ => p.b(),
            };
            out.push((a_name, [p.rank, p.in_dim], p.a.to_f32()));
            out.push((b_name, [p.out_dim, p.rank], Cow::Owned(b)));
        }
        out.sort_by(|x, y| x.0.cmp(&y.0));
        out
    }

    /// Lowercase hex SHA-256 of the adapter's content: each module's rank and
    /// scale, then every tensor's name, shape and f32 values in name order.
    /// Independent of JSON key order, of the dtype the file stored and of the
    /// base's Q/K row layout (values are hashed in Hugging Face layout).
    /// Computed on first use and remembered. For factors held as f16 it is
    /// the id of the rounded values unless one was vouched for
    /// ([`LoraAdapter::with_id`]) or known before [`LoraAdapter::to_dtype`].
    pub fn id(&self) -> String {
        self.id.get_or_init(|| self.content_hash()).clone()
    }

    /// The same adapter with its content id given instead of computed, for
    /// a caller that already knows it: a content-addressed store that
    /// computed [`LoraAdapter::id`] when the adapter was written and loads
    /// it back by that id. Hashing ~20 MiB of factors would otherwise cost
    /// more than the load. The caller vouches for `id`: a wrong one would
    /// mislabel this adapter everywhere its id is used (including the keys
    /// of cached KV prefixes), so only pass the id of the content this
    /// adapter was read from (held at whatever [`LoraDtype`]: a node serves
    /// a stored adapter at one dtype for its whole life, so the id still
    /// names exactly one set of served values).
    pub fn with_id(self, id: String) -> Self {
        Self {
            id: OnceLock::from(id),
            ..self
        }
    }

    fn content_hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"credence-lora-v1\0");
        let mut modules: Vec<(String, &LoraPair)> = self
            .pairs
            .iter()
            .map(|(&s, p)| (module_path(s), p))
            .collect();
        modules.sort_by(|x, y| x.0.cmp(&y.0));
        for (path, p) in modules {
            h.update((path.len() as u64).to_le_bytes());
            h.update(path.as_bytes());
            h.update((p.rank as u64).to_le_bytes());
            h.update(p.scale.to_bits().to_le_bytes());
        }
        for (name, [rows, cols], values) in self.named_tensors() {
            h.update((name.len() as u64).to_le_bytes());
            h.update(name.as_bytes());
            h.update((rows as u64).to_le_bytes());
            h.update((cols as u64).to_le_bytes());
            h.update(tensors::f32_bytes(&values));
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The two PEFT files' contents: `(adapter_config.json, adapter_model.safetensors)`,
    /// tensors stored as F32 in Hugging Face layout so the content id survives
    /// a round trip, whichever base the adapter is loaded against.
    pub fn to_peft_bytes(&self) -> Result<(Vec<u8>, Vec<u8>)> {
        let weights = tensors::write_f32(&self.named_tensors())?;
        let json = serde_json::to_vec_pretty(&self.config)
            .map_err(|e| bad(format!("serialising adapter_config.json: {e}")))?;
        Ok((json, weights))
    }

    /// Bytes of factor values held in memory (what a cache budget counts).
    pub fn resident_bytes(&self) -> usize {
        self.pairs
            .values()
            .map(|p| p.a.bytes() + p.b_panels.bytes())
            .sum()
    }

    /// Bytes the factors would take held as `dtype` (what a cache budget
    /// counts once [`LoraAdapter::to_dtype`] or [`LoadOptions::dtype`] applies).
    pub fn resident_bytes_as(&self, dtype: LoraDtype) -> usize {
        self.pairs
            .values()
            .map(|p| p.a.bytes_as(dtype) + p.b_panels.bytes_as(dtype))
            .sum()
    }

    /// Writes the adapter to `dir` in PEFT layout (F32 tensors, Hugging Face
    /// row order), each file atomically; creates `dir` if needed.
    pub fn save(&self, dir: &Path) -> Result<()> {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let (json, weights) = self.to_peft_bytes()?;
        write_atomic(&dir.join(WEIGHTS_FILE), &weights)?;
        write_atomic(&dir.join(CONFIG_FILE), &json)
    }
}

/// A random adapter of rank `rank` on every layer's `targets`, with
/// `lora_alpha = 2·rank`. For tests and benchmarks only: unlike PEFT's
/// initialisation, `B` is non-zero so the adapter changes the output. The
/// random values are taken to be in `base`'s runtime layout (and marked so),
/// so saving and reloading against `base` gives the same adapter back.
///
/// # Panics
/// If a target is not a projection (q/k/v/o/gate/up/down) or `rank` is
/// outside `1..=MAX_RANK`.
pub fn random_adapter(
    base: &LlamaConfig,
    rank: usize,
    targets: &[LayerTensor],
    seed: u64,
) -> LoraAdapter {
    assert!((1..=MAX_RANK).contains(&rank), "rank {rank} out of range");
    let indices: Vec<usize> = targets
        .iter()
        .map(|&t| slot_of(t).expect("random_adapter targets must be projections"))
        .collect();
    let names = indices
        .iter()
        .filter_map(|&i| MODULES[i].1.rsplit('.').next())
        .map(str::to_string)
        .collect();
    let config = AdapterConfig::new(rank, 2.0 * rank as f64, names);
    let mut rng = TestRng::new(seed);
    let mut pairs = BTreeMap::new();
    for layer in 0..base.n_layers {
        for &index in &indices {
            let (in_dim, out_dim) = dims(base, MODULES[index].0).unwrap_or_default();
            let pair = LoraPair {
                a: Factor::F32(rng.vec(rank * in_dim, 0.1)),
                b_panels: Factor::F32(rng.vec(rank * out_dim, 0.1)),
                rank,
                in_dim,
                out_dim,
                scale: config.scale_for(&module_path((layer, index))),
            };
            pairs.insert((layer, index), pair);
        }
    }
    LoraAdapter {
        config,
        pairs,
        qk_interleave: qk_interleave(base),
        id: OnceLock::new(),
    }
}
