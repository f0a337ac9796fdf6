//! TON Connect sign-in: the `ton_proof` signature, and the wallet's public key taken from its
//! `walletStateInit`, which must hash to the address it claims. Pure functions; the layout is
//! TON Connect's `ton_proof` spec, and the test vector takes its inputs from ton4j's tests.
//!
//! - `ton/boc.rs`: the bag-of-cells parser and cell hashing, bounded for untrusted input.
//! - `ton/proof.rs`: the proof check: address, digest, allow-listed wallets and their keys.

mod boc;
mod proof;

pub use boc::{parse_boc, Cell, BOC_BYTES_MAX, BOC_CELLS_MAX, CELL_REFS_MAX};
pub use proof::{
    canonical_address, parse_address, proof_digest, state_init_code_and_data, verify, wallet_code,
    wallet_key, VerifiedWallet, WalletCode, WALLET_CODES,
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TonError {
    #[error("walletStateInit is not a valid BOC: {0}")]
    Boc(&'static str),
    #[error("walletStateInit has no code and data")]
    StateInit,
    #[error("address must be 0 or -1, a colon and 64 hex digits")]
    Address,
    #[error("walletStateInit does not hash to the address")]
    AddressMismatch,
    #[error("walletStateInit is not a known wallet contract (v3r2, v4r2, v5r1)")]
    UnknownWallet,
    #[error("the wallet's data holds no valid public key")]
    PublicKey,
    #[error("signature does not verify")]
    Signature,
}
