//! GGUF model files: a bounds-checked reader over a memory map, and a writer.
//!
//! Layout (v2/v3): magic `GGUF`, version, tensor count, metadata count, the
//! metadata key/value pairs, the tensor descriptors, padding to
//! `general.alignment`, then the tensor data. Every count and offset read from
//! the file is checked against the file size before it is used, so a truncated
//! or corrupt file yields [`Error::Gguf`] instead of a panic or a huge allocation.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use crate::bytes::TensorBytes;
use crate::error::{Error, Result};
use crate::quant::{GgmlType, QMatrix};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// Upper bound on dimensions per tensor (GGML supports 4).
const MAX_DIMS: u32 = 4;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    /// `uint8`
    U8(u8),
    /// `int8`
    I8(i8),
    /// `uint16`
    U16(u16),
    /// `int16`
    I16(i16),
    /// `uint32`
    U32(u32),
    /// `int32`
    I32(i32),
    /// `float32`
    F32(f32),
    /// `bool`
    Bool(bool),
    /// UTF-8 string
    String(String),
    /// Homogeneous array
    Array(Vec<MetaValue>),
    /// `uint64`
    U64(u64),
    /// `int64`
    I64(i64),
    /// `float64`
    F64(f64),
}

impl MetaValue {
    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::U8(v) => Some(v.into()),
            Self::U16(v) => Some(v.into()),
            Self::U32(v) => Some(v.into()),
            Self::U64(v) => Some(v),
            Self::I8(v) => u64::try_from(v).ok(),
            Self::I16(v) => u64::try_from(v).ok(),
            Self::I32(v) => u64::try_from(v).ok(),
            Self::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, if numeric.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F32(v) => Some(v.into()),
            Self::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    /// The value as a string slice.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a bool.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The value as an array.
    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }

    fn type_id(&self) -> u32 {
        match self {
            Self::U8(_) => 0,
            Self::I8(_) => 1,
            Self::U16(_) => 2,
            Self::I16(_) => 3,
            Self::U32(_) => 4,
            Self::I32(_) => 5,
            Self::F32(_) => 6,
            Self::Bool(_) => 7,
            Self::String(_) => 8,
            Self::Array(_) => 9,
            Self::U64(_) => 10,
            Self::I64(_) => 11,
            Self::F64(_) => 12,
        }
    }
}

/// One tensor descriptor.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions, fastest-varying first (GGML order: `[cols, rows]` for a matrix).
    pub dims: Vec<u64>,
    /// Storage type.
    pub ty: GgmlType,
    /// Absolute byte range inside the file.
    pub range: std::ops::Range<usize>,
}

impl TensorInfo {
    /// Number of elements.
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// An opened, validated GGUF file. Tensor data stays in the memory map.
pub struct GgufFile {
    path: PathBuf,
    map: Arc<Mmap>,
    /// Format version (2 or 3).
    pub version: u32,
    /// All metadata, by key.
    pub metadata: BTreeMap<String, MetaValue>,
    tensors: Vec<TensorInfo>,
    by_name: BTreeMap<String, usize>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Opens and validates `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only; model files are not expected to change
        // while loaded (as with every mmap-based loader). Bounds are checked below.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Self::parse(path, Arc::new(map))
    }

    fn parse(path: &Path, map: Arc<Mmap>) -> Result<Self> {
        let mut r = Reader { buf: &map, pos: 0 };
        let magic = r.take(4)?;
        if magic != MAGIC {
            return Err(Error::Gguf(format!(
                "{}: bad magic {:02x?} (expected \"GGUF\"); not a GGUF file",
                path.display(),
                magic
            )));
        }
        let version = r.u32()?;
        if !(2..=3).contains(&version) {
            return Err(Error::Gguf(format!(
                "unsupported GGUF version {version} (need 2 or 3)"
            )));
        }
        let n_tensors = r.count("tensor count", 8)?;
        let n_kv = r.count("metadata count", 12)?;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = r.string()?;
            let ty = r.u32()?;
            let value = r.value(ty, 0)?;
            metadata.insert(key, value);
        }
        let alignment = match metadata.get("general.alignment") {
            Some(v) => v.as_u64().filter(|a| a.is_power_of_two()).ok_or_else(|| {
                Error::Gguf(format!(
                    "general.alignment must be a power of two, got {v:?}"
                ))
            })?,
            None => DEFAULT_ALIGNMENT,
        };
        let mut raw = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            raw.push(r.tensor_header()?);
        }
        let data_start = (r.pos as u64).div_ceil(alignment) * alignment;
        let file_len = map.len() as u64;
        let mut tensors = Vec::with_capacity(raw.len());
        let mut by_name = BTreeMap::new();
        for (name, dims, ty_id, offset) in raw {
            let tensor = checked_tensor(name, dims, ty_id, offset, data_start, file_len)?;
            if by_name.insert(tensor.name.clone(), tensors.len()).is_some() {
                return Err(Error::Gguf(format!(
                    "duplicate tensor name `{}`",
                    tensor.name
                )));
            }
            tensors.push(tensor);
        }
        Ok(Self {
            path: path.to_owned(),
            map,
            version,
            metadata,
            tensors,
            by_name,
        })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All tensor descriptors, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// A tensor descriptor by name.
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// A metadata value by key.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    /// A required string value.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        self.get(key)
            .and_then(MetaValue::as_str)
            .ok_or_else(|| Error::Gguf(format!("missing or non-string metadata `{key}`")))
    }

    /// An optional unsigned integer value (present but not an integer is an error).
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>> {
        self.get(key)
            .map(|v| {
                v.as_u64().ok_or_else(|| {
                    Error::Gguf(format!("metadata `{key}` is not an integer: {v:?}"))
                })
            })
            .transpose()
    }

    /// An optional float value (present but not numeric is an error).
    pub fn get_f64(&self, key: &str) -> Result<Option<f64>> {
        self.get(key)
            .map(|v| {
                v.as_f64()
                    .ok_or_else(|| Error::Gguf(format!("metadata `{key}` is not a number: {v:?}")))
            })
            .transpose()
    }

    /// The tensor's bytes (borrowed from the map).
    pub fn tensor_bytes(&self, info: &TensorInfo) -> TensorBytes {
        TensorBytes::Mapped {
            map: Arc::clone(&self.map),
            range: info.range.clone(),
        }
    }

    /// A 2-D tensor as a weight matrix `[rows = dims[1], cols = dims[0]]`.
    pub fn matrix(&self, name: &str) -> Result<QMatrix> {
        let info = self.require(name)?;
        let (rows, cols) = match info.dims[..] {
            [cols, rows] => (rows, cols),
            [cols] => (1, cols),
            _ => {
                return Err(Error::tensor(
                    name,
                    format!("expected 2 dims, got {:?}", info.dims),
                ));
            }
        };
        QMatrix::new(
            info.ty,
            to_usize(rows)?,
            to_usize(cols)?,
            self.tensor_bytes(info),
        )
        .map_err(|e| Error::tensor(name, e.to_string()))
    }

    /// A 1-D tensor (norm weights, biases) dequantised to f32.
    pub fn vector(&self, name: &str) -> Result<Vec<f32>> {
        let info = self.require(name)?;
        if info.dims.len() != 1 {
            return Err(Error::tensor(
                name,
                format!("expected 1 dim, got {:?}", info.dims),
            ));
        }
        Ok(self.matrix(name)?.to_f32())
    }

    /// A tensor descriptor that must exist.
    pub fn require(&self, name: &str) -> Result<&TensorInfo> {
        self.tensor_info(name)
            .ok_or_else(|| Error::tensor(name, "missing from the GGUF file"))
    }
}

fn to_usize(v: u64) -> Result<usize> {
    usize::try_from(v).map_err(|_| Error::Gguf(format!("value {v} does not fit in memory")))
}

fn checked_tensor(
    name: String,
    dims: Vec<u64>,
    ty_id: u32,
    offset: u64,
    data_start: u64,
    file_len: u64,
) -> Result<TensorInfo> {
    let ty = GgmlType::from_ggml_id(ty_id).map_err(|e| Error::tensor(&name, e.to_string()))?;
    let elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::tensor(&name, format!("dimensions {dims:?} overflow")))?;
    let cols = dims.first().copied().unwrap_or(1);
    let block = ty.block_len() as u64;
    if cols % block != 0 {
        return Err(Error::tensor(
            &name,
            format!(
                "row length {cols} is not a multiple of the {} block size {block}",
                ty.name()
            ),
        ));
    }
    let size = elements / block * ty.block_bytes() as u64;
    let start = data_start
        .checked_add(offset)
        .ok_or_else(|| Error::tensor(&name, "data offset overflows"))?;
    let end = start
        .checked_add(size)
        .filter(|&e| e <= file_len)
        .ok_or_else(|| {
            Error::Gguf(format!(
                "tensor `{name}` ends past the end of the file ({file_len} bytes): truncated file?"
            ))
        })?;
    Ok(TensorInfo {
        name,
        dims,
        ty,
        range: to_usize(start)?..to_usize(end)?,
    })
}

type RawTensor = (String, Vec<u64>, u32, u64);

/// A cursor over the header bytes; every read is bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                Error::Gguf(format!(
                    "unexpected end of file at byte {} reading {n} bytes: truncated file?",
                    self.pos
                ))
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A count of items each at least `min_item_bytes` long: rejected if the
    /// remaining bytes could not possibly hold that many (guards allocations).
    fn count(&mut self, what: &str, min_item_bytes: usize) -> Result<usize> {
        let n = self.u64()?;
        let remaining = (self.buf.len() - self.pos) as u64;
        if n.saturating_mul(min_item_bytes as u64) > remaining {
            return Err(Error::Gguf(format!(
                "{what} {n} is impossible for a file with {remaining} bytes left: corrupt file?"
            )));
        }
        to_usize(n)
    }

    fn string(&mut self) -> Result<String> {
        let len = self.count("string length", 1)?;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| Error::Gguf(format!("invalid UTF-8 in a string at byte {}", self.pos)))
    }

    fn value(&mut self, ty: u32, depth: u32) -> Result<MetaValue> {
        Ok(match ty {
            0 => MetaValue::U8(self.array::<1>()?[0]),
            1 => MetaValue::I8(i8::from_le_bytes(self.array()?)),
            2 => MetaValue::U16(u16::from_le_bytes(self.array()?)),
            3 => MetaValue::I16(i16::from_le_bytes(self.array()?)),
            4 => MetaValue::U32(self.u32()?),
            5 => MetaValue::I32(i32::from_le_bytes(self.array()?)),
            6 => MetaValue::F32(f32::from_le_bytes(self.array()?)),
            7 => match self.array::<1>()?[0] {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => return Err(Error::Gguf(format!("invalid bool byte {b}"))),
            },
            8 => MetaValue::String(self.string()?),
            9 if depth == 0 => {
                let item_ty = self.u32()?;
                let n = self.count("array length", 1)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(item_ty, depth + 1)?);
                }
                MetaValue::Array(items)
            }
            9 => {
                return Err(Error::Gguf(
                    "nested metadata arrays are not supported".into(),
                ));
            }
            10 => MetaValue::U64(self.u64()?),
            11 => MetaValue::I64(i64::from_le_bytes(self.array()?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.array()?)),
            t => return Err(Error::Gguf(format!("unknown metadata value type {t}"))),
        })
    }

    fn tensor_header(&mut self) -> Result<RawTensor> {
        let name = self.string()?;
        let n_dims = self.u32()?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(Error::tensor(
                &name,
                format!("{n_dims} dimensions (1..=4 supported)"),
            ));
        }
        let dims = (0..n_dims)
            .map(|_| self.u64())
            .collect::<Result<Vec<_>>>()?;
        let ty = self.u32()?;
        let offset = self.u64()?;
        Ok((name, dims, ty, offset))
    }
}

/// Writes GGUF v3 files: used to export models and to build tiny test models.
#[derive(Default)]
pub struct GgufWriter {
    metadata: Vec<(String, MetaValue)>,
    tensors: Vec<(String, Vec<u64>, GgmlType, Vec<u8>)>,
}

impl GgufWriter {
    /// An empty file description.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a metadata entry.
    pub fn meta(&mut self, key: impl Into<String>, value: MetaValue) -> &mut Self {
        self.metadata.push((key.into(), value));
        self
    }

    /// Adds a weight matrix (stored as `[cols, rows]` dims, GGML order).
    pub fn matrix(&mut self, name: impl Into<String>, m: &QMatrix) -> &mut Self {
        let dims = vec![m.cols() as u64, m.rows() as u64];
        self.tensors
            .push((name.into(), dims, m.ty(), m.bytes().to_vec()));
        self
    }

    /// Adds an f32 vector.
    pub fn vector(&mut self, name: impl Into<String>, v: &[f32]) -> &mut Self {
        let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.tensors
            .push((name.into(), vec![v.len() as u64], GgmlType::F32, bytes));
        self
    }

    /// Serialises the file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_string(&mut out, k);
            out.extend_from_slice(&v.type_id().to_le_bytes());
            put_value(&mut out, v);
        }
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for (name, dims, ty, bytes) in &self.tensors {
            put_string(&mut out, name);
            out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            dims.iter()
                .for_each(|d| out.extend_from_slice(&d.to_le_bytes()));
            out.extend_from_slice(&ty.ggml_id().to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offsets.push(offset);
            offset = (offset + bytes.len() as u64).div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT;
        }
        let data_start =
            out.len().div_ceil(DEFAULT_ALIGNMENT as usize) * DEFAULT_ALIGNMENT as usize;
        for ((_, _, _, bytes), off) in self.tensors.iter().zip(offsets) {
            out.resize(data_start + off as usize, 0);
            out.extend_from_slice(bytes);
        }
        out
    }

    /// Writes the file atomically (temp file, then rename).
    pub fn write(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("gguf.tmp");
        let mut f = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.write_all(&self.to_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &MetaValue) {
    match v {
        MetaValue::U8(x) => out.push(*x),
        MetaValue::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Bool(x) => out.push(u8::from(*x)),
        MetaValue::String(s) => put_string(out, s),
        MetaValue::Array(items) => {
            let item_ty = items.first().map_or(4, MetaValue::type_id);
            out.extend_from_slice(&item_ty.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            items.iter().for_each(|i| put_value(out, i));
        }
        MetaValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

impl GgufFile {
    /// The tokenizer description stored under `tokenizer.ggml.*`.
    pub fn tokenizer_spec(&self) -> Result<crate::tokenizer::GgufTokenizerSpec> {
        let strings = |key: &str| -> Result<Option<Vec<String>>> {
            self.get(key)
                .map(|v| {
                    v.as_array()
                        .and_then(|a| a.iter().map(|x| x.as_str().map(str::to_owned)).collect())
                        .ok_or_else(|| Error::Gguf(format!("`{key}` is not an array of strings")))
                })
                .transpose()
        };
        let numbers = |key: &str| -> Result<Option<Vec<f64>>> {
            self.get(key)
                .map(|v| {
                    v.as_array()
                        .and_then(|a| a.iter().map(MetaValue::as_f64).collect())
                        .ok_or_else(|| Error::Gguf(format!("`{key}` is not an array of numbers")))
                })
                .transpose()
        };
        let id = |key: &str| -> Result<Option<u32>> {
            self.get_u64(key)?
                .map(|v| {
                    u32::try_from(v).map_err(|_| Error::Gguf(format!("`{key}` = {v} too large")))
                })
                .transpose()
        };
        let flag = |key: &str| self.get(key).and_then(MetaValue::as_bool);
        Ok(crate::tokenizer::GgufTokenizerSpec {
            model: self.get_str("tokenizer.ggml.model")?.to_owned(),
            pre: self
                .get("tokenizer.ggml.pre")
                .and_then(MetaValue::as_str)
                .map(str::to_owned),
            tokens: strings("tokenizer.ggml.tokens")?
                .ok_or_else(|| Error::Gguf("missing `tokenizer.ggml.tokens`".into()))?,
            token_types: numbers("tokenizer.ggml.token_type")?
                .map(|v| v.into_iter().map(|x| x as i32).collect()),
            scores: numbers("tokenizer.ggml.scores")?
                .map(|v| v.into_iter().map(|x| x as f32).collect()),
            merges: strings("tokenizer.ggml.merges")?,
            bos_id: id("tokenizer.ggml.bos_token_id")?,
            eos_id: id("tokenizer.ggml.eos_token_id")?,
            unk_id: id("tokenizer.ggml.unknown_token_id")?,
            pad_id: id("tokenizer.ggml.padding_token_id")?,
            add_bos: flag("tokenizer.ggml.add_bos_token"),
            add_eos: flag("tokenizer.ggml.add_eos_token"),
            add_space_prefix: flag("tokenizer.ggml.add_space_prefix"),
        })
    }
}
