//! Dev accounts derived from a BIP-39 mnemonic, signing, and key files.
//!
//! The default mnemonic is the one hardhat and anvil use, so wallets and
//! tutorials already know its addresses; its keys are public and must never
//! hold real value.
//!
//! A key file holds one private key as `0x` + 64 hex digits and a newline.
//! It is created with mode 0600 (owner only) and never replaced silently.

use std::path::Path;

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

    /// A new wallet with a key from the operating system's random source.
    pub fn random() -> Result<Self> {
        loop {
            let mut secret = [0u8; 32];
            getrandom::fill(&mut secret)
                .map_err(|e| Error::Invalid(format!("no randomness available: {e}")))?;
            // Out-of-range scalars (probability ~2^-128) are simply redrawn.
            if let Ok(key) = SigningKey::from_slice(&secret) {
                return Ok(Self::from_key(key));
            }
        }
    }

    /// A wallet from a hex private key (`0x` optional, surrounding spaces ignored).
    pub fn from_hex(text: &str) -> Result<Self> {
        let secret: B256 = text.trim().parse().map_err(|_| {
            Error::Invalid("a private key is 64 hex digits (optionally prefixed with 0x)".into())
        })?;
        Self::from_bytes(&secret)
    }

    /// The private key. Handle with care: whoever holds it controls the account.
    pub fn secret(&self) -> B256 {
        B256::from_slice(&self.key.to_bytes())
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

/// Writes `wallet`'s key to `path` with mode 0600. Refuses to replace an
/// existing file unless `overwrite` (losing a key loses its funds).
pub fn save_key(path: &Path, wallet: &Wallet, overwrite: bool) -> Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    if !overwrite && path.exists() {
        return Err(Error::Invalid(format!(
            "{} already exists; refusing to replace a key",
            path.display()
        )));
    }
    // Written under a temporary name with the final mode from the start, so
    // the key is never readable by others, even briefly, nor half-written.
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(|e| Error::io(&tmp, e))?;
    file.write_all(format!("{}\n", wallet.secret()).as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Reads a key file written by [`save_key`] (or by hand: one hex key).
pub fn load_key(path: &Path) -> Result<Wallet> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    Wallet::from_hex(&text).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
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
    fn key_files_are_private_round_trip_and_are_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/wallet.key");
        let w = Wallet::random().unwrap();
        save_key(&path, &w, false).unwrap();
        assert_eq!(load_key(&path).unwrap().address(), w.address());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let other = Wallet::random().unwrap();
        assert_ne!(other.address(), w.address());
        assert!(save_key(&path, &other, false).is_err());
        save_key(&path, &other, true).unwrap();
        assert_eq!(load_key(&path).unwrap().address(), other.address());
        assert!(Wallet::from_hex("0x1234").is_err());
        assert!(format!("{w:?}").contains("address"));
        assert!(!format!("{w:?}").contains(&w.secret().to_string()[2..]));
    }

    #[test]
    fn bad_mnemonic_is_an_error() {
        assert!(matches!(
            dev_wallets("not a mnemonic", 1),
            Err(Error::Mnemonic(_))
        ));
    }
}
