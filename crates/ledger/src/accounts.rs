//! Dev accounts derived from a BIP-39 mnemonic, and signing with them.
//!
//! The default mnemonic is the one hardhat and anvil use, so wallets and
//! tutorials already know its addresses; its keys are public and must never
//! hold real value.

use alloy_primitives::{Address, B256, Signature};
use coins_bip39::{English, Mnemonic};
use k256::ecdsa::SigningKey;

use crate::{Error, Result};

/// The well-known development mnemonic (public: for local chains only).
pub const DEV_MNEMONIC: &str = "test test test test test test test test test test test junk";

/// A secp256k1 key and its Ethereum address.
#[derive(Clone)]
pub struct Wallet {
    key: SigningKey,
    address: Address,
}

impl std::fmt::Debug for Wallet {
    // Never print the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wallet")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Wallet {
    /// A wallet from a raw 32-byte private key.
    pub fn from_bytes(secret: &B256) -> Result<Self> {
        let key = SigningKey::from_slice(secret.as_slice())
            .map_err(|e| Error::Mnemonic(format!("invalid private key: {e}")))?;
        Ok(Self::from_key(key))
    }

    fn from_key(key: SigningKey) -> Self {
        let address = Address::from_public_key(key.verifying_key());
        Self { key, address }
    }

    /// The account's address.
    pub fn address(&self) -> Address {
        self.address
    }

    /// Signs a 32-byte digest (a transaction's signing hash or an EIP-712 digest).
    pub fn sign_hash(&self, hash: &B256) -> Result<Signature> {
        let (sig, recid) = self
            .key
            .sign_prehash_recoverable(hash.as_slice())
            .map_err(|e| Error::InvalidTransaction(format!("signing failed: {e}")))?;
        Ok(Signature::from((sig, recid)))
    }
}

/// Derives the first `count` accounts at `m/44'/60'/0'/0/i`, the path every
/// Ethereum wallet uses, so a wallet importing the mnemonic sees the same ones.
pub fn dev_wallets(phrase: &str, count: u32) -> Result<Vec<Wallet>> {
    let mnemonic =
        Mnemonic::<English>::new_from_phrase(phrase).map_err(|e| Error::Mnemonic(e.to_string()))?;
    (0..count)
        .map(|i| {
            let xpriv = mnemonic
                .derive_key(format!("m/44'/60'/0'/0/{i}").as_str(), None)
                .map_err(|e| Error::Mnemonic(e.to_string()))?;
            let key: &SigningKey = xpriv.as_ref();
            Ok(Wallet::from_key(key.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_mnemonic_gives_the_well_known_addresses() {
        let wallets = dev_wallets(DEV_MNEMONIC, 2).unwrap();
        // Account #0 and #1 of hardhat/anvil for this mnemonic.
        assert_eq!(
            wallets[0].address(),
            "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
                .parse::<Address>()
                .unwrap()
        );
        assert_eq!(
            wallets[1].address(),
            "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
                .parse::<Address>()
                .unwrap()
        );
    }

    #[test]
    fn signatures_recover_to_the_signer() {
        let w = &dev_wallets(DEV_MNEMONIC, 1).unwrap()[0];
        let digest = alloy_primitives::keccak256(b"credence");
        let sig = w.sign_hash(&digest).unwrap();
        assert_eq!(
            sig.recover_address_from_prehash(&digest).unwrap(),
            w.address()
        );
    }

    #[test]
    fn bad_mnemonic_is_an_error() {
        assert!(matches!(
            dev_wallets("not a mnemonic", 1),
            Err(Error::Mnemonic(_))
        ));
    }
}
