//! Reading and writing the `lora_A` / `lora_B` tensors of a PEFT safetensors file.

use std::collections::{BTreeMap, HashMap, HashSet};

use safetensors::SafeTensors;
use safetensors::tensor::{Dtype, TensorView};

use super::decode::{self, Layout};
use super::{Factor, LoraDtype, MODULES, Slot, module_path, tensor_name};
use crate::error::{Error, Result};

/// Prefix PEFT puts before the base model's own module paths.
const PREFIX: &str = "base_model.model.model.layers.";

/// One decoded adapter tensor.
pub(super) struct RawTensor {
    /// Name in the file.
    pub name: String,
    /// Row-major dimensions (always two).
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Values in the requested dtype: row-major `[rows, cols]` for an A
    /// tensor, transposed into panels for a B tensor, the layout the
    /// expand kernel reads (see `LoraPair::b_panels`).
    pub data: Factor,
}

/// The A and B halves found for one module.
#[derive(Default)]
pub(super) struct RawPair {
    /// `lora_A`, `[r, in]`.
    pub a: Option<RawTensor>,
    /// `lora_B`, `[out, r]`.
    pub b: Option<RawTensor>,
}

fn bad(msg: String) -> Error {
    Error::Adapter(msg)
}

/// Which kind of file a tensor set comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Source {
    /// A PEFT file: `lora_B` is `[out, r]` in Hugging Face row order; B is
    /// transposed into panels while decoding, with Q/K rows interleaved per
    /// head of this width when given.
    Peft { qk_interleave: Option<usize> },
    /// A runtime file (`LoraAdapter::to_runtime_bytes`): `lora_B_panels`
    /// is already Bᵀ (`[r, out]`) in panels, in the base's runtime row order.
    Runtime,
}

impl Source {
    /// The suffix naming the B half in this kind of file.
    fn b_suffix(self) -> &'static str {
        match self {
            Self::Peft { .. } => ".lora_B.weight",
            Self::Runtime => RUNTIME_B_SUFFIX,
        }
    }
}

/// Suffix of the tensor holding the block scales of an 8-bit factor in a
/// runtime file (`<factor name>.scales`).
pub(super) const SCALES_SUFFIX: &str = ".scales";

/// How a runtime file names the B half held in panels.
pub(super) const RUNTIME_B_SUFFIX: &str = ".lora_B_panels.weight";

/// Splits a tensor name into its slot and whether it is the A half.
fn parse_name(name: &str, source: Source) -> Option<(Slot, bool)> {
    let rest = name.strip_prefix(PREFIX)?;
    let (layer, rest) = rest.split_once('.')?;
    if layer.is_empty() || !layer.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let layer: usize = layer.parse().ok()?;
    let (module, half) = rest
        .strip_suffix(".lora_A.weight")
        .map(|m| (m, true))
        .or_else(|| rest.strip_suffix(source.b_suffix()).map(|m| (m, false)))?;
    let index = MODULES.iter().position(|(_, m)| *m == module)?;
    Some(((layer, index), half))
}

/// Decodes one named tensor (with its block scales when it holds bytes),
/// checking its name, layer and rank-2 shape.
fn read_tensor(
    name: &str,
    view: &TensorView<'_>,
    scales: Option<&TensorView<'_>>,
    n_layers: usize,
    dtype: LoraDtype,
    source: Source,
) -> Result<(Slot, bool, RawTensor)> {
    let (slot, is_a) = parse_name(name, source).ok_or_else(|| {
        bad(format!(
            "unknown tensor `{name}` (expected {PREFIX}N.<module>.lora_A.weight or …{})",
            source.b_suffix()
        ))
    })?;
    if slot.0 >= n_layers {
        return Err(bad(format!(
            "tensor `{name}` targets layer {} but the base model has {n_layers} layers",
            slot.0
        )));
    }
    let &[rows, cols] = view.shape() else {
        return Err(bad(format!(
            "tensor `{name}` has shape {:?}; expected two dimensions",
            view.shape()
        )));
    };
    let layout = match source {
        Source::Peft { qk_interleave } => Layout {
            dtype,
            panels: !is_a,
            // Q/K rows of B follow the base's runtime head layout (see `LoraAdapter`).
            interleave: qk_interleave.filter(|_| !is_a && super::is_qk(slot)),
        },
        Source::Runtime => Layout {
            dtype,
            panels: false,
            interleave: None,
        },
    };
    let data = decode::decode(name, view, scales, rows, cols, layout)?;
    // A runtime B is stored `[r, out]`; report the PEFT shape `[out, r]` so
    // both kinds are checked the same way.
    let (rows, cols) = match source {
        Source::Runtime if !is_a => (cols, rows),
        _ => (rows, cols),
    };
    let tensor = RawTensor {
        name: name.to_string(),
        rows,
        cols,
        data,
    };
    Ok((slot, is_a, tensor))
}

/// Adapters smaller than this are decoded on the calling thread: starting
/// threads costs tens of microseconds, which only pays off on the
/// multi-megabyte adapters whose cold load a request waits for.
const PARALLEL_MIN_BYTES: usize = 4 << 20;

/// Most threads one decode uses.
const MAX_DECODE_THREADS: usize = 4;

/// One decoded tensor: its module, whether it is the A half, and its values.
type Decoded = (Slot, bool, RawTensor);

/// Decodes every tensor, results in input order. A large adapter is split
/// into contiguous runs of tensors, one per thread (the calling thread takes
/// the first): decoding is memory-bound copying and checking, and a cold
/// load is latency a request waits for.
fn decode_all(
    tensors: &[(String, TensorView<'_>)],
    scales: &HashMap<&str, &TensorView<'_>>,
    n_layers: usize,
    dtype: LoraDtype,
    source: Source,
) -> Vec<Result<Decoded>> {
    let decode_run = |run: &[(String, TensorView<'_>)]| -> Vec<Result<Decoded>> {
        run.iter()
            .map(|(name, view)| {
                let own = scales.get(name.as_str()).copied();
                read_tensor(name, view, own, n_layers, dtype, source)
            })
            .collect()
    };
    let bytes: usize = tensors.iter().map(|(_, v)| v.data().len()).sum();
    let threads = if bytes < PARALLEL_MIN_BYTES {
        1
    } else {
        std::thread::available_parallelism()
            .map_or(1, std::num::NonZero::get)
            .min(MAX_DECODE_THREADS)
    };
    if threads <= 1 || tensors.len() < 2 {
        return decode_run(tensors);
    }
    let mut runs = tensors.chunks(tensors.len().div_ceil(threads));
    let first = runs.next().unwrap_or_default();
    std::thread::scope(|scope| {
        let others: Vec<_> = runs
            .map(|run| scope.spawn(move || decode_run(run)))
            .collect();
        let mut out = decode_run(first);
        for handle in others {
            // Decoding does not panic; if it ever did, the panic belongs to
            // the caller, as it would without threads.
            out.extend(
                handle
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p)),
            );
        }
        out
    })
}

/// Reads every tensor of a safetensors file, grouped by module, `B` in the
/// runtime layout (see [`Source`]).
pub(super) fn read_all(
    bytes: &[u8],
    n_layers: usize,
    dtype: LoraDtype,
    source: Source,
) -> Result<BTreeMap<Slot, RawPair>> {
    let file = SafeTensors::deserialize(bytes)
        .map_err(|e| bad(format!("adapter_model.safetensors: {e}")))?;
    // A runtime file's 8-bit factors come with their scales beside them.
    let (scale_tensors, factors): (Vec<_>, Vec<_>) = file
        .tensors()
        .into_iter()
        .partition(|(name, _)| source == Source::Runtime && name.ends_with(SCALES_SUFFIX));
    let names: HashSet<&str> = factors.iter().map(|(n, _)| n.as_str()).collect();
    let mut scales = HashMap::new();
    for (name, view) in &scale_tensors {
        let owner = &name[..name.len() - SCALES_SUFFIX.len()];
        if !names.contains(owner) {
            return Err(bad(format!("tensor `{name}` scales no tensor of the file")));
        }
        scales.insert(owner, view);
    }
    let mut pairs: BTreeMap<Slot, RawPair> = BTreeMap::new();
    for decoded in decode_all(&factors, &scales, n_layers, dtype, source) {
        let (slot, is_a, tensor) = decoded?;
        let pair = pairs.entry(slot).or_default();
        let half = if is_a { &mut pair.a } else { &mut pair.b };
        *half = Some(tensor);
    }
    if pairs.is_empty() {
        return Err(bad("adapter contains no LoRA tensors".into()));
    }
    Ok(pairs)
}

/// Encodes f32 values little-endian.
pub(super) fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Serialises `(name, shape, values)` triples as an F32 safetensors file.
pub(super) fn write_f32<V: AsRef<[f32]>>(tensors: &[(String, [usize; 2], V)]) -> Result<Vec<u8>> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| f32_bytes(v.as_ref()))
        .collect();
    let mut views = Vec::with_capacity(tensors.len());
    for ((name, shape, _), data) in tensors.iter().zip(&bytes) {
        let view = TensorView::new(Dtype::F32, shape.to_vec(), data)
            .map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
        views.push((name.clone(), view));
    }
    safetensors::serialize(views, None).map_err(|e| bad(format!("serialising adapter: {e}")))
}

/// Serialises `(name, shape, factor)` triples in their held dtypes (an 8-bit
/// factor as I8 values plus its F32 `.scales`), with
/// `metadata` in the header.
pub(super) fn write_factors(
    tensors: &[(String, [usize; 2], &Factor)],
    metadata: std::collections::HashMap<String, String>,
) -> Result<Vec<u8>> {
    let mut encoded: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, shape, f) in tensors {
        match f {
            Factor::F32(v) => {
                encoded.push((name.clone(), Dtype::F32, shape.to_vec(), f32_bytes(v)))
            }
            Factor::F16(v) => encoded.push((
                name.clone(),
                Dtype::F16,
                shape.to_vec(),
                v.iter().flat_map(|h| h.to_le_bytes()).collect(),
            )),
            Factor::Q8(q) => {
                let bytes = q.values.iter().map(|&v| v as u8).collect();
                encoded.push((name.clone(), Dtype::I8, shape.to_vec(), bytes));
                encoded.push((
                    format!("{name}{SCALES_SUFFIX}"),
                    Dtype::F32,
                    vec![q.scales.len()],
                    f32_bytes(&q.scales),
                ));
            }
        }
    }
    let mut views = Vec::with_capacity(encoded.len());
    for (name, dtype, shape, data) in &encoded {
        let view = TensorView::new(*dtype, shape.clone(), data)
            .map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
        views.push((name.clone(), view));
    }
    safetensors::serialize(views, Some(metadata))
        .map_err(|e| bad(format!("serialising adapter: {e}")))
}

/// The header metadata of a safetensors file (empty when it has none).
pub(super) fn metadata(bytes: &[u8]) -> Result<std::collections::HashMap<String, String>> {
    let (_, header) =
        SafeTensors::read_metadata(bytes).map_err(|e| bad(format!("adapter runtime file: {e}")))?;
    Ok(header.metadata().clone().unwrap_or_default())
}

/// The PEFT names of the A and B tensors of `slot`.
pub(super) fn pair_names(slot: Slot) -> (String, String) {
    let path = module_path(slot);
    (tensor_name(&path, true), tensor_name(&path, false))
}

/// Reorders the rows of a row-major `[rows, cols]` matrix from the
/// interleaved order of [`decode::interleaved_row`] back to Hugging Face order.
pub(super) fn deinterleave_rows(values: &[f32], cols: usize, head_dim: usize) -> Vec<f32> {
    reorder_rows(values, cols, head_dim, false)
}

fn reorder_rows<T: Copy>(
    values: &[T],
    cols: usize,
    head_dim: usize,
    to_interleaved: bool,
) -> Vec<T> {
    // Starting from a copy keeps any rows the mapping does not cover (an odd
    // head width's last row, a partial trailing block) where they were, so
    // the two directions stay exact inverses whatever the shape.
    let mut out = values.to_vec();
    let half = head_dim / 2;
    if cols == 0 || half == 0 {
        return out;
    }
    let block = head_dim * cols;
    for (dst, src) in out.chunks_exact_mut(block).zip(values.chunks_exact(block)) {
        for i in 0..half {
            for j in 0..2 {
                let (hf, interleaved) = ((j * half + i) * cols, (2 * i + j) * cols);
                let (to, from) = if to_interleaved {
                    (interleaved, hf)
                } else {
                    (hf, interleaved)
                };
                dst[to..to + cols].copy_from_slice(&src[from..from + cols]);
            }
        }
    }
    out
}
