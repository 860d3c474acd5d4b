//! What adapters exist and which alias names which: small metadata that is
//! always in memory, while the weights live in the store and the RAM cache.

use std::collections::BTreeMap;

use credence_model::lora::{LoraAdapter, LoraDtype};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, Result};

/// Metadata of one registered adapter.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Entry {
    /// Adapted projections.
    pub(crate) modules: usize,
    /// Smallest rank among them.
    pub(crate) min_rank: usize,
    /// Largest rank among them.
    pub(crate) max_rank: usize,
    /// Bytes the factors take in memory as the registering node held them.
    pub(crate) resident_bytes: usize,
    /// Bytes the factors take held as each dtype, by name (absent from
    /// catalogues written before nodes could change dtype between runs).
    #[serde(default)]
    pub(crate) bytes_by_dtype: BTreeMap<String, usize>,
    /// Unix seconds when it was registered.
    pub(crate) created: u64,
}

impl Entry {
    /// `dtype` is what the registering node holds adapters as.
    pub(crate) fn describe(adapter: &LoraAdapter, dtype: LoraDtype, created: u64) -> Self {
        let ranks = || adapter.pairs().map(|(_, _, p)| p.rank);
        Self {
            modules: adapter.pairs().count(),
            min_rank: ranks().min().unwrap_or(0),
            max_rank: ranks().max().unwrap_or(0),
            resident_bytes: adapter.resident_bytes_as(dtype),
            bytes_by_dtype: LoraDtype::ALL
                .into_iter()
                .map(|d| (d.to_string(), adapter.resident_bytes_as(d)))
                .collect(),
            created,
        }
    }

    /// Bytes the factors take held as `dtype` (for an old entry, as its
    /// registering node held them).
    pub(crate) fn bytes_as(&self, dtype: LoraDtype) -> usize {
        self.bytes_by_dtype
            .get(dtype.as_str())
            .copied()
            .unwrap_or(self.resident_bytes)
    }
}

/// Every registered adapter by id, and the aliases naming them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct Catalog {
    pub(crate) adapters: BTreeMap<String, Entry>,
    pub(crate) aliases: BTreeMap<String, String>,
}

impl Catalog {
    /// Parses a stored catalogue, dropping aliases that name no adapter.
    pub(crate) fn parse(json: &[u8]) -> Result<Self> {
        let mut catalog: Catalog = serde_json::from_slice(json)
            .map_err(|e| ApiError::Internal(format!("adapter catalogue is corrupt: {e}")))?;
        let adapters = &catalog.adapters;
        catalog.aliases.retain(|_, id| adapters.contains_key(id));
        Ok(catalog)
    }

    pub(crate) fn to_json(&self) -> Result<Vec<u8>> {
        serde_json::to_vec_pretty(self)
            .map_err(|e| ApiError::Internal(format!("serialising the adapter catalogue: {e}")))
    }

    /// The id a name (id or alias) refers to, if registered.
    pub(crate) fn resolve(&self, name: &str) -> Option<&str> {
        let id = self.aliases.get(name).map_or(name, String::as_str);
        self.adapters.get_key_value(id).map(|(id, _)| id.as_str())
    }

    /// Aliases pointing at `id`.
    pub(crate) fn aliases_of(&self, id: &str) -> Vec<String> {
        self.aliases
            .iter()
            .filter(|(_, v)| *v == id)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Removes an adapter and its aliases; false if it was not there.
    pub(crate) fn remove(&mut self, id: &str) -> bool {
        self.aliases.retain(|_, v| v != id);
        self.adapters.remove(id).is_some()
    }
}

/// Aliases are names clients type in `model`: short, printable, no slashes,
/// and never a 64-hex-digit string (that is an id).
pub(crate) fn check_alias(alias: &str) -> Result<()> {
    let ok = !alias.is_empty()
        && alias.len() <= 128
        && alias
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
        && !looks_like_id(alias);
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "alias",
            "1–128 characters of letters, digits, '-', '_', '.' or ':', and not a content id",
        ))
    }
}

/// A lowercase hex SHA-256, the shape of an adapter id.
pub(crate) fn looks_like_id(name: &str) -> bool {
    name.len() == 64
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            modules: 1,
            min_rank: 8,
            max_rank: 8,
            resident_bytes: 10,
            bytes_by_dtype: BTreeMap::new(),
            created: 0,
        }
    }

    #[test]
    fn sizes_follow_the_dtype_a_node_holds_and_old_entries_still_parse() {
        let base = credence_model::testing::tiny_config(32);
        let adapter =
            credence_model::lora::random_adapter(&base, 4, &credence_model::lora::PROJECTIONS, 1);
        let e = Entry::describe(&adapter, LoraDtype::F16, 0);
        assert_eq!(e.resident_bytes, adapter.resident_bytes_as(LoraDtype::F16));
        for d in LoraDtype::ALL {
            assert_eq!(e.bytes_as(d), adapter.resident_bytes_as(d), "{d}");
        }
        assert!(e.bytes_as(LoraDtype::Q8) < e.bytes_as(LoraDtype::F16));
        // A catalogue written before per-dtype sizes parses, reporting the
        // size it recorded.
        let old = r#"{"adapters":{"x":{"modules":1,"min_rank":8,"max_rank":8,"resident_bytes":10,"created":0}},"aliases":{}}"#;
        let c = Catalog::parse(old.as_bytes()).unwrap();
        assert_eq!(c.adapters["x"].bytes_as(LoraDtype::Q8), 10);
    }

    #[test]
    fn parse_drops_dangling_aliases_and_round_trips() {
        let mut c = Catalog::default();
        c.adapters.insert("a".repeat(64), entry());
        c.aliases.insert("good".into(), "a".repeat(64));
        c.aliases.insert("dangling".into(), "b".repeat(64));
        let back = Catalog::parse(&c.to_json().unwrap()).unwrap();
        assert_eq!(back.aliases.len(), 1);
        assert_eq!(back.resolve("good"), Some("a".repeat(64).as_str()));
        assert_eq!(back.resolve("dangling"), None);
        assert!(Catalog::parse(b"{not json").is_err());
    }

    #[test]
    fn aliases_are_checked() {
        assert!(check_alias("support-bot_v2.1:prod").is_ok());
        for bad in ["", "a/b", "with space", &"x".repeat(129), &"0".repeat(64)] {
            assert!(check_alias(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn remove_takes_aliases_along() {
        let mut c = Catalog::default();
        c.adapters.insert("i".into(), entry());
        c.aliases.insert("n".into(), "i".into());
        assert!(c.remove("i"));
        assert!(c.aliases.is_empty());
        assert!(!c.remove("i"));
    }
}
