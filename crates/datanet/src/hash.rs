//! 32-byte hashes, EVM addresses, and the digests that get signed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use sha3::Keccak256;

use crate::{Error, Result};

/// A 32-byte hash (content ids, Merkle roots, version ids), shown as `0x` + 64 hex digits
/// so it can be passed to a contract as a `bytes32` unchanged.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hash32(pub [u8; 32]);

impl Hash32 {
    /// SHA-256 of `bytes`.
    pub fn sha256(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// Keccak-256 of `bytes` (the EVM's hash).
    pub fn keccak(bytes: &[u8]) -> Self {
        Self(Keccak256::digest(bytes).into())
    }
}

/// A 20-byte EVM address, shown in lowercase hex with `0x`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address(pub [u8; 20]);

fn parse_hex<const N: usize>(text: &str, what: &str) -> Result<[u8; N]> {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    let mut out = [0u8; N];
    hex::decode_to_slice(digits, &mut out).map_err(|_| {
        Error::invalid(
            what,
            format!("expected 0x and {} hex digits, got `{text}`", N * 2),
        )
    })?;
    Ok(out)
}

macro_rules! hex_type {
    ($ty:ident, $n:expr, $what:expr) => {
        impl FromStr for $ty {
            type Err = Error;
            fn from_str(text: &str) -> Result<Self> {
                parse_hex::<$n>(text, $what).map(Self)
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "0x{}", hex::encode(self.0))
            }
        }
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

hex_type!(Hash32, 32, "hash");
hex_type!(Address, 20, "address");

/// SHA-256 of everything `reader` yields (e.g. a file about to be signed),
/// calling `progress` with the bytes hashed so far.
pub fn sha256_reader(
    mut reader: impl std::io::Read,
    progress: &mut dyn FnMut(u64),
) -> std::io::Result<Hash32> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(Hash32(hasher.finalize().into()));
        }
        hasher.update(&buf[..n]);
        total += n as u64;
        progress(total);
    }
}

/// Compact JSON with object keys sorted at every level: the one byte string a
/// value has, so that signer and verifier hash the same bytes whatever order
/// their JSON library keeps keys in.
pub fn canonical_json(value: &serde_json::Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The digest a signer signs for an action of `kind` (e.g. `contribution`) with
/// this payload: SHA-256 of `credence/<kind>/v1\n` followed by the payload's
/// canonical JSON. The kind prefix keeps a signature for one action from being
/// replayed as another.
pub fn action_digest(kind: &str, payload: &impl Serialize) -> Result<Hash32> {
    let value = serde_json::to_value(payload)
        .map_err(|e| Error::invalid(kind, format!("cannot serialise: {e}")))?;
    let mut bytes = format!("credence/{kind}/v1\n").into_bytes();
    bytes.extend_from_slice(canonical_json(&value).as_bytes());
    Ok(Hash32::sha256(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_junk() {
        let h = Hash32::sha256(b"abc");
        assert_eq!(
            h.to_string(),
            "0xba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(h.to_string().parse::<Hash32>().expect("parse"), h);
        assert!("0x12".parse::<Hash32>().is_err());
        assert!("0xZZ".parse::<Address>().is_err());
        let a: Address = "0x2C7536E3605D9C16a7a3D7b1898e529396a65c23"
            .parse()
            .expect("address");
        assert_eq!(a.to_string(), "0x2c7536e3605d9c16a7a3d7b1898e529396a65c23");
    }

    #[test]
    fn streamed_hash_matches_the_one_shot_hash() {
        let data = vec![7u8; 200_000];
        let mut last = 0;
        let hash = sha256_reader(&data[..], &mut |n| last = n).expect("read");
        assert_eq!(hash, Hash32::sha256(&data));
        assert_eq!(last, 200_000);
    }

    #[test]
    fn keccak_matches_the_evm() {
        assert_eq!(
            Hash32::keccak(b"").to_string(),
            "0xc5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
        );
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let value = serde_json::json!({"b": 1, "a": {"d": [true, null], "c": "x\"y"}});
        assert_eq!(
            canonical_json(&value),
            r#"{"a":{"c":"x\"y","d":[true,null]},"b":1}"#
        );
    }

    #[test]
    fn action_digests_separate_kinds() {
        let payload = serde_json::json!({"x": 1});
        let a = action_digest("review", &payload).expect("digest");
        let b = action_digest("commit", &payload).expect("digest");
        assert_ne!(a, b);
    }
}
