//! EIP-191 `personal_sign` signatures with secp256k1 keys.
//!
//! Every signed action in a datanet signs a 32-byte digest ([`crate::hash::action_digest`])
//! as an Ethereum signed message: `keccak256("\x19Ethereum Signed Message:\n32" ‖ digest)`.
//! That is what wallets produce for `personal_sign` over the digest's bytes, and what
//! OpenZeppelin's `MessageHashUtils.toEthSignedMessageHash(bytes32)` checks on chain.
//! The signer's address is recovered from the signature and compared with the
//! address the request claims.

use std::fmt;
use std::str::FromStr;

use k256::ecdsa::{RecoveryId, Signature as EcdsaSignature, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::hash::{Address, Hash32};
use crate::{Error, Result};

/// A 65-byte recoverable signature `r ‖ s ‖ v`, with `v` 27 or 28 (0 and 1 are accepted too).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 65]);

/// The EIP-191 (version `0x45`) hash of `message`.
pub fn eth_message_hash(message: &[u8]) -> Hash32 {
    let mut bytes = format!("\x19Ethereum Signed Message:\n{}", message.len()).into_bytes();
    bytes.extend_from_slice(message);
    Hash32::keccak(&bytes)
}

/// The address of a public key: the last 20 bytes of keccak256 of its uncompressed point.
pub fn address_of(key: &VerifyingKey) -> Address {
    let point = key.to_sec1_point(false);
    // Skip the 0x04 tag of the uncompressed encoding.
    let hash = Hash32::keccak(&point.as_bytes()[1..]);
    let mut out = [0u8; 20];
    out.copy_from_slice(&hash.0[12..]);
    Address(out)
}

/// Recovers the address that signed `digest` with EIP-191 `personal_sign`.
pub fn recover(digest: &Hash32, signature: &Signature) -> Result<Address> {
    let bytes = &signature.0;
    let v = match bytes[64] {
        27 | 28 => bytes[64] - 27,
        0 | 1 => bytes[64],
        other => return Err(Error::BadSignature(format!("recovery byte v = {other}"))),
    };
    let sig = EcdsaSignature::from_slice(&bytes[..64])
        .map_err(|_| Error::BadSignature("r or s out of range".into()))?;
    // Ethereum rejects high-s signatures (EIP-2) so each message has one valid signature.
    if sig.normalize_s() != sig {
        return Err(Error::BadSignature(
            "s is not in the lower half order".into(),
        ));
    }
    let id = RecoveryId::from_byte(v).ok_or_else(|| Error::BadSignature("recovery id".into()))?;
    let prehash = eth_message_hash(&digest.0);
    let key = VerifyingKey::recover_from_prehash(&prehash.0, &sig, id)
        .map_err(|_| Error::BadSignature("no public key recovers from it".into()))?;
    Ok(address_of(&key))
}

/// Checks that `signature` over `digest` was made by `claimed`.
pub fn verify(digest: &Hash32, signature: &Signature, claimed: &Address) -> Result<()> {
    let recovered = recover(digest, signature)?;
    if recovered != *claimed {
        return Err(Error::WrongSigner {
            claimed: claimed.to_string(),
            recovered: recovered.to_string(),
        });
    }
    Ok(())
}

/// A secp256k1 private key that signs like a wallet (CLI users, tests).
#[derive(Clone)]
pub struct LocalSigner {
    key: SigningKey,
    address: Address,
}

impl fmt::Debug for LocalSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        f.debug_struct("LocalSigner")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl LocalSigner {
    /// A signer from a 32-byte secret.
    pub fn from_bytes(secret: &[u8; 32]) -> Result<Self> {
        let key = SigningKey::from_slice(secret)
            .map_err(|_| Error::invalid("key", "not a valid secp256k1 secret"))?;
        let address = address_of(key.verifying_key());
        Ok(Self { key, address })
    }

    /// A signer from 64 hex digits (with or without `0x`), as wallets export keys.
    pub fn from_hex(text: &str) -> Result<Self> {
        let digits = text.trim().strip_prefix("0x").unwrap_or(text.trim());
        let mut secret = [0u8; 32];
        hex::decode_to_slice(digits, &mut secret)
            .map_err(|_| Error::invalid("key", "expected 64 hex digits"))?;
        Self::from_bytes(&secret)
    }

    /// A deterministic test key derived from `seed` (not for real funds).
    pub fn from_seed(seed: &str) -> Self {
        let mut counter = 0u32;
        loop {
            let secret = Hash32::sha256(format!("{seed}/{counter}").as_bytes());
            if let Ok(signer) = Self::from_bytes(&secret.0) {
                return signer;
            }
            // Only for the ~2^-128 chance the hash is not a valid scalar.
            counter += 1;
        }
    }

    /// This key's address.
    pub fn address(&self) -> Address {
        self.address
    }

    /// Signs `digest` as `personal_sign` would.
    pub fn sign(&self, digest: &Hash32) -> Signature {
        let prehash = eth_message_hash(&digest.0);
        let (sig, id) = self.key.sign_prehash_recoverable(&prehash.0);
        let mut out = [0u8; 65];
        out[..64].copy_from_slice(&sig.to_bytes());
        out[64] = 27 + id.to_byte();
        Signature(out)
    }
}

impl FromStr for Signature {
    type Err = Error;
    fn from_str(text: &str) -> Result<Self> {
        let digits = text.strip_prefix("0x").unwrap_or(text);
        let mut out = [0u8; 65];
        hex::decode_to_slice(digits, &mut out)
            .map_err(|_| Error::BadSignature("expected 0x and 130 hex digits".into()))?;
        Ok(Self(out))
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A widely published example key (web3.js documentation); never use it for value.
    const KEY: &str = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318";

    #[test]
    fn address_matches_the_published_example() {
        let signer = LocalSigner::from_hex(KEY).expect("key");
        assert_eq!(
            signer.address().to_string(),
            "0x2c7536e3605d9c16a7a3d7b1898e529396a65c23"
        );
    }

    #[test]
    fn eip191_hash_matches_the_published_example() {
        assert_eq!(
            eth_message_hash(b"Some data").to_string(),
            "0x1da44b586eb0729ff70a73c326926f6ed5a25f5b056e7f47fbc6e58d86871655"
        );
    }

    #[test]
    fn signatures_recover_their_signer_and_nobody_else() {
        let alice = LocalSigner::from_seed("alice");
        let bob = LocalSigner::from_seed("bob");
        let digest = Hash32::sha256(b"contribution");
        let sig = alice.sign(&digest);
        assert_eq!(recover(&digest, &sig).expect("recover"), alice.address());
        verify(&digest, &sig, &alice.address()).expect("valid");
        assert!(matches!(
            verify(&digest, &sig, &bob.address()),
            Err(Error::WrongSigner { .. })
        ));
        // Another digest recovers to some other address.
        let other = Hash32::sha256(b"tampered");
        assert!(verify(&other, &sig, &alice.address()).is_err());
        let text = sig.to_string();
        assert_eq!(text.parse::<Signature>().expect("parse"), sig);
    }

    #[test]
    fn malformed_signatures_are_rejected() {
        let digest = Hash32::sha256(b"x");
        let mut sig = LocalSigner::from_seed("a").sign(&digest);
        sig.0[64] = 30;
        assert!(matches!(
            recover(&digest, &sig),
            Err(Error::BadSignature(_))
        ));
        assert!(matches!(
            recover(&digest, &Signature([0; 65])),
            Err(Error::BadSignature(_))
        ));
        assert!("0x1234".parse::<Signature>().is_err());
    }
}
