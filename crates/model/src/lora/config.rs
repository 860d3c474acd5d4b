//! `adapter_config.json`: the PEFT hyper-parameters that shape a LoRA adapter.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The largest LoRA rank this engine accepts.
pub const MAX_RANK: usize = 256;

/// The largest `adapter_config.json` accepted, in bytes.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

/// Which modules an adapter targets, as written by PEFT.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    /// A single string; only `"all-linear"` is supported.
    Name(String),
    /// Module names (or name suffixes) such as `"q_proj"`.
    List(Vec<String>),
}

/// The subset of PEFT's `LoraConfig` this engine understands.
///
/// Unknown keys are ignored; keys that would change the math in ways the
/// engine does not implement (`bias`, `fan_in_fan_out`, `use_dora`, a
/// non-LoRA `peft_type`) are rejected by [`AdapterConfig::parse`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdapterConfig {
    /// Default rank of every adapted module.
    pub r: usize,
    /// Default scaling numerator.
    pub lora_alpha: f64,
    /// Modules the adapter was trained on (`None` when the file omits it).
    #[serde(default)]
    pub target_modules: Option<TargetModules>,
    /// Rank-stabilised scaling: `alpha / sqrt(r)` instead of `alpha / r`.
    #[serde(default)]
    pub use_rslora: bool,
    /// Per-module rank overrides, keyed by a module-path suffix.
    #[serde(default)]
    pub rank_pattern: BTreeMap<String, usize>,
    /// Per-module alpha overrides, keyed by a module-path suffix.
    #[serde(default)]
    pub alpha_pattern: BTreeMap<String, f64>,
    /// The model the adapter was trained against (informational).
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    /// Must be `"LORA"` when present.
    #[serde(default)]
    pub peft_type: Option<String>,
    /// Must be `"none"` when present.
    #[serde(default)]
    pub bias: Option<String>,
    /// Must be `false` when present.
    #[serde(default)]
    pub fan_in_fan_out: Option<bool>,
    /// Must be `false` when present (DoRA is not implemented).
    #[serde(default)]
    pub use_dora: Option<bool>,
}

fn bad(msg: impl Into<String>) -> Error {
    Error::Adapter(msg.into())
}

impl AdapterConfig {
    /// A plain LoRA config with rank `r`, scaling numerator `alpha` and the
    /// given target module names.
    pub fn new(r: usize, lora_alpha: f64, targets: Vec<String>) -> Self {
        Self {
            r,
            lora_alpha,
            target_modules: Some(TargetModules::List(targets)),
            use_rslora: false,
            rank_pattern: BTreeMap::new(),
            alpha_pattern: BTreeMap::new(),
            base_model_name_or_path: None,
            peft_type: Some("LORA".into()),
            bias: Some("none".into()),
            fan_in_fan_out: Some(false),
            use_dora: Some(false),
        }
    }

    /// Parses and validates `adapter_config.json` bytes.
    pub fn parse(json: &[u8]) -> Result<Self> {
        if json.len() > MAX_CONFIG_BYTES {
            return Err(bad(format!(
                "adapter_config.json is {} bytes, limit is {MAX_CONFIG_BYTES}",
                json.len()
            )));
        }
        let config: Self =
            serde_json::from_slice(json).map_err(|e| bad(format!("adapter_config.json: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every field against what the engine supports.
    pub fn validate(&self) -> Result<()> {
        check_rank("r", self.r)?;
        check_alpha("lora_alpha", self.lora_alpha)?;
        for (key, &rank) in &self.rank_pattern {
            check_rank(&format!("rank_pattern[{key:?}]"), rank)?;
        }
        for (key, &alpha) in &self.alpha_pattern {
            check_alpha(&format!("alpha_pattern[{key:?}]"), alpha)?;
        }
        if let Some(t) = self.peft_type.as_deref().filter(|t| *t != "LORA") {
            return Err(bad(format!(
                "peft_type is {t:?}, only \"LORA\" is supported"
            )));
        }
        if let Some(b) = self.bias.as_deref().filter(|b| *b != "none") {
            return Err(bad(format!("bias is {b:?}, only \"none\" is supported")));
        }
        if self.fan_in_fan_out == Some(true) {
            return Err(bad("fan_in_fan_out is true, only false is supported"));
        }
        if self.use_dora == Some(true) {
            return Err(bad("use_dora is true, DoRA is not supported"));
        }
        if let Some(TargetModules::Name(n)) = &self.target_modules
            && n != "all-linear"
        {
            return Err(bad(format!(
                "target_modules is {n:?}; only a list or \"all-linear\" is supported"
            )));
        }
        Ok(())
    }

    /// Whether the module at `path` (e.g. `model.layers.0.self_attn.q_proj`)
    /// is one of the target modules.
    pub fn targets(&self, path: &str) -> bool {
        match &self.target_modules {
            None | Some(TargetModules::Name(_)) => true,
            Some(TargetModules::List(names)) => names.iter().any(|n| suffix_matches(path, n)),
        }
    }

    /// The rank of the module at `path`, honouring `rank_pattern`.
    pub fn rank_for(&self, path: &str) -> usize {
        best_match(&self.rank_pattern, path).unwrap_or(self.r)
    }

    /// The alpha of the module at `path`, honouring `alpha_pattern`.
    pub fn alpha_for(&self, path: &str) -> f64 {
        best_match(&self.alpha_pattern, path).unwrap_or(self.lora_alpha)
    }

    /// The factor applied to `B·A` for the module at `path`.
    pub fn scale_for(&self, path: &str) -> f32 {
        let rank = self.rank_for(path) as f64;
        let alpha = self.alpha_for(path);
        let denom = if self.use_rslora { rank.sqrt() } else { rank };
        (alpha / denom) as f32
    }
}

fn check_rank(field: &str, rank: usize) -> Result<()> {
    if rank == 0 || rank > MAX_RANK {
        return Err(bad(format!("{field} is {rank}, must be in 1..={MAX_RANK}")));
    }
    Ok(())
}

fn check_alpha(field: &str, alpha: f64) -> Result<()> {
    if !alpha.is_finite() {
        return Err(bad(format!("{field} is {alpha}, must be finite")));
    }
    Ok(())
}

/// `key` matches `path` when it equals the path or is a dot-aligned suffix.
fn suffix_matches(path: &str, key: &str) -> bool {
    path == key
        || path
            .strip_suffix(key)
            .is_some_and(|head| head.ends_with('.'))
}

/// The value of the longest (most specific) key matching `path`.
fn best_match<T: Copy>(patterns: &BTreeMap<String, T>, path: &str) -> Option<T> {
    patterns
        .iter()
        .filter(|(k, _)| suffix_matches(path, k))
        .max_by_key(|(k, _)| k.len())
        .map(|(_, v)| *v)
}
