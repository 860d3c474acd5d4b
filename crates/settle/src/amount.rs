//! Token amounts in JSON: decimal strings of base units, because JavaScript
//! numbers lose precision above 2⁵³ and 18-decimal tokens pass that quickly.

use serde::{Deserialize, Deserializer, Serializer};

/// Serialises a `u128` as a decimal string.
pub fn serialize<S: Serializer>(value: &u128, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

/// Parses a decimal string (or a JSON integer) into a `u128`.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Either {
        Text(String),
        Number(u64),
    }
    match Either::deserialize(d)? {
        Either::Number(n) => Ok(u128::from(n)),
        Either::Text(t) => t.parse().map_err(|_| {
            serde::de::Error::custom(format!("`{t}` is not a whole number of base units"))
        }),
    }
}
