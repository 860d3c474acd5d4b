//! Runtime files: an adapter's factors exactly as a node holds them (dtype,
//! `B` transposed into panels, the base's Q/K row order), in safetensors with a format
//! tag. Loading one is a copy and a check, not a decode; PEFT files stay the
//! source of truth and of the content id.

use std::fs;
use std::path::Path;

use super::{
    CONFIG_FILE, LoadOptions, LoraAdapter, LoraDtype, bad, map_file, module_path, qk_interleave,
    tensor_name, tensors,
};
use crate::config::LlamaConfig;
use crate::error::{Error, Result};

/// Format tag in the header of a runtime file ([`LoraAdapter::to_runtime_bytes`]).
const RUNTIME_FORMAT: &str = "credence-lora-runtime/2";

/// The file name a store gives the runtime file ([`LoraAdapter::to_runtime_bytes`])
/// of adapters held as `dtype` for `base`: one per dtype and Q/K row layout,
/// so a node started with other settings never reads a file not meant for it.
pub fn runtime_file_name(base: &LlamaConfig, dtype: LoraDtype) -> String {
    let rows = qk_rows_tag(qk_interleave(base)).replace('/', "");
    format!("runtime-{dtype}-{rows}.safetensors")
}

/// How a runtime file's header names the Q/K row order of its `B` factors.
fn qk_rows_tag(qk_interleave: Option<usize>) -> String {
    match qk_interleave {
        Some(head_dim) => format!("interleaved/{head_dim}"),
        None => "hf".to_owned(),
    }
}

impl LoraAdapter {
    /// Loads the runtime file `file` ([`LoraAdapter::to_runtime_bytes`]) with
    /// the `adapter_config.json` in `dir`.
    pub fn load_runtime(
        dir: &Path,
        file: &Path,
        base: &LlamaConfig,
        options: &LoadOptions,
    ) -> Result<Self> {
        let config_path = dir.join(CONFIG_FILE);
        let json = fs::read(&config_path).map_err(|e| Error::io(&config_path, e))?;
        let factors = map_file(file)?;
        Self::from_runtime_bytes(&json, factors.as_deref().unwrap_or_default(), base, options)
    }

    /// The factors exactly as held (dtype, `B` in panels, the base's Q/K
    /// row order) in a safetensors "runtime file". Loading it back
    /// ([`LoraAdapter::from_runtime_bytes`]) skips the transposition and
    /// narrowing a PEFT file needs, and reads half the bytes of an f32 PEFT
    /// file when held as f16: what keeps cold loads short. It is derived
    /// data for one base layout, not an exchange format: PEFT files stay the
    /// source of truth (and of the id).
    pub fn to_runtime_bytes(&self) -> Result<Vec<u8>> {
        let mut named = Vec::with_capacity(2 * self.pairs.len());
        for (&slot, p) in &self.pairs {
            let path = module_path(slot);
            named.push((tensor_name(&path, true), [p.rank, p.in_dim], &p.a));
            let b = format!("base_model.model.{path}{}", tensors::RUNTIME_B_SUFFIX);
            named.push((b, [p.rank, p.out_dim], &p.b_panels));
        }
        let metadata = [
            ("format", RUNTIME_FORMAT.to_owned()),
            ("qk_rows", qk_rows_tag(self.qk_interleave)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        tensors::write_factors(&named, metadata)
    }

    /// Reads a runtime file written by [`LoraAdapter::to_runtime_bytes`] for
    /// a base with `base`'s Q/K row layout, validating it like a PEFT file.
    ///
    /// # Errors
    /// [`Error::Adapter`] for a file of another format or layout, or
    /// anything [`LoraAdapter::from_bytes`] refuses.
    pub fn from_runtime_bytes(
        config_json: &[u8],
        factors: &[u8],
        base: &LlamaConfig,
        options: &LoadOptions,
    ) -> Result<Self> {
        let metadata = tensors::metadata(factors)?;
        if metadata.get("format").map(String::as_str) != Some(RUNTIME_FORMAT) {
            return Err(bad(format!(
                "not an adapter runtime file (format {:?}, expected {RUNTIME_FORMAT})",
                metadata.get("format")
            )));
        }
        let layout = qk_rows_tag(qk_interleave(base));
        if metadata.get("qk_rows") != Some(&layout) {
            return Err(bad(format!(
                "the runtime file was written for q/k rows {:?}, this base has {layout}",
                metadata.get("qk_rows")
            )));
        }
        Self::parse(
            config_json,
            factors,
            base,
            options,
            tensors::Source::Runtime,
        )
    }
}
