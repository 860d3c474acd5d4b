//! EIP-712 payment vouchers for `PaymentEscrow`.
//!
//! A voucher says "`payer` owes `payee` `cumulative` in total". Amounts are
//! cumulative so the newest voucher replaces all earlier ones: the escrow pays
//! only the increase over what it already redeemed. The typed-data domain is
//! `EIP712Domain(name "CredencePaymentEscrow", version "1", chainId, the escrow
//! address)`, so a voucher is valid for one escrow on one chain only.

use alloy_primitives::{Address, B256, Bytes, Signature, U256};
use alloy_sol_types::{Eip712Domain, SolStruct, eip712_domain};

use crate::contracts::PaymentEscrow;
use crate::contracts::voucher::Voucher;
use crate::{Error, Result, Wallet};

/// The escrow's EIP-712 domain on `chain_id`.
pub fn domain(escrow: Address, chain_id: u64) -> Eip712Domain {
    eip712_domain! {
        name: "CredencePaymentEscrow",
        version: "1",
        chain_id: chain_id,
        verifying_contract: escrow,
    }
}

/// The digest the payer signs (equal to the escrow's `voucherDigest`).
pub fn digest(
    escrow: Address,
    chain_id: u64,
    payer: Address,
    payee: Address,
    cumulative: U256,
) -> B256 {
    Voucher {
        payer,
        payee,
        cumulativeAmount: cumulative,
    }
    .eip712_signing_hash(&domain(escrow, chain_id))
}

/// Signs a voucher with `wallet` (normally the payer's): a 65-byte `r‖s‖v`
/// signature, the form `PaymentEscrow.redeem` takes.
pub fn sign(
    wallet: &Wallet,
    escrow: Address,
    chain_id: u64,
    payer: Address,
    payee: Address,
    cumulative: U256,
) -> Result<Bytes> {
    let sig = wallet.sign_hash(&digest(escrow, chain_id, payer, payee, cumulative))?;
    Ok(Bytes::from(sig.as_bytes().to_vec()))
}

/// The address that signed a voucher; compare it with the payer before
/// trusting it.
pub fn recover(
    escrow: Address,
    chain_id: u64,
    payer: Address,
    payee: Address,
    cumulative: U256,
    signature: &[u8],
) -> Result<Address> {
    let sig = Signature::try_from(signature)
        .map_err(|e| Error::Invalid(format!("malformed voucher signature: {e}")))?;
    sig.recover_address_from_prehash(&digest(escrow, chain_id, payer, payee, cumulative))
        .map_err(|e| Error::Invalid(format!("voucher signature does not recover: {e}")))
}

/// The voucher struct `PaymentEscrow.redeem` takes.
pub fn voucher(payer: Address, payee: Address, cumulative: U256) -> PaymentEscrow::Voucher {
    PaymentEscrow::Voucher {
        payer,
        payee,
        cumulativeAmount: cumulative,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DEV_MNEMONIC, dev_wallets};

    #[test]
    fn signatures_recover_to_the_signer_only_for_the_same_voucher() {
        let w = dev_wallets(DEV_MNEMONIC, 1).unwrap().remove(0);
        let (escrow, payee) = (Address::repeat_byte(1), Address::repeat_byte(2));
        let amount = U256::from(1000u64);
        let sig = sign(&w, escrow, 7, w.address(), payee, amount).unwrap();
        assert_eq!(sig.len(), 65);
        let who = |chain: u64, amount: u64| {
            recover(escrow, chain, w.address(), payee, U256::from(amount), &sig).unwrap()
        };
        assert_eq!(who(7, 1000), w.address());
        assert_ne!(who(8, 1000), w.address(), "another chain");
        assert_ne!(who(7, 1001), w.address(), "another amount");
        assert!(recover(escrow, 7, w.address(), payee, amount, &sig[..64]).is_err());
    }
}
