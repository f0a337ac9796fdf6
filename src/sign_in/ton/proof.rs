//! The TON Connect `ton_proof` check: the address, the signed digest, and the wallet's public
//! key taken from its `walletStateInit`, which must hash to the address it claims.
//!
//! The key is read only from the wallet contracts of [`WALLET_CODES`]: hashing to the address
//! proves the state init is the address's, not that the contract keeps its owner's key at a
//! wallet's offset (a multisig keeping a co-signer's key there would let that co-signer in).

use base64::Engine;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

use super::boc::{parse_boc, Cell, BOC_BYTES_MAX};
use super::TonError;

/// The workchains a wallet may live in: the masterchain and the basechain.
const WORKCHAINS: [(&str, i32); 2] = [("0", 0), ("-1", -1)];

/// A wallet contract TON sign-in reads the key of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalletCode {
    pub name: &'static str,
    /// Representation hash of the contract's code cell, lower-case hex.
    pub code_hash: &'static str,
    /// Where the data cell keeps the owner's Ed25519 key: v3/v4 after `seqno:uint32
    /// wallet_id:uint32`, v5 after a leading `is_signature_allowed` bit as well.
    pub key_bit_offset: usize,
}

/// The wallets TON Connect wallets deploy. The hashes are the ones tonkeeper, ton-org/ton and
/// the TON node's own tables use, and were recomputed from ton-org/ton's code BOCs (v3r2 is
/// also the code of the ton4j vector in the tests).
pub const WALLET_CODES: [WalletCode; 3] = [
    WalletCode {
        name: "v3r2",
        code_hash: "84dafa449f98a6987789ba232358072bc0f76dc4524002a5d0918b9a75d2d599",
        key_bit_offset: 64,
    },
    WalletCode {
        name: "v4r2",
        code_hash: "feb5ff6820e2ff0d9483e7e0d62c817d846789fb4ae580c878866d959dabd5c0",
        key_bit_offset: 64,
    },
    WalletCode {
        name: "v5r1",
        code_hash: "20834b7b72b112147e1b2fb457b84e74d1a30f04f737d4f62a668e9552d2b72f",
        key_bit_offset: 65,
    },
];

/// The code and data cells of a `StateInit`: `split_depth:(Maybe ## 5) special:(Maybe
/// TickTock) code:(Maybe ^Cell) data:(Maybe ^Cell) library:(Maybe ^Cell)`.
pub fn state_init_code_and_data(state_init: &Cell) -> Result<(&Cell, &Cell), TonError> {
    let mut at = 0;
    let mut flag = |skip: usize| -> Result<bool, TonError> {
        let set = state_init.bit(at).ok_or(TonError::StateInit)?;
        at += 1 + if set { skip } else { 0 };
        Ok(set)
    };
    flag(5)?;
    flag(2)?;
    let (code, data) = (flag(0)?, flag(0)?);
    if !(code && data) {
        return Err(TonError::StateInit);
    }
    match state_init.refs() {
        [code, data, ..] => Ok((code, data)),
        _ => Err(TonError::StateInit),
    }
}

/// `(workchain, 32-byte hash)` of a raw address `wc:hex`. One spelling per workchain (`0` or
/// `-1`, never `+0`, `00` or `-0`); the hex may be in either case.
pub fn parse_address(address: &str) -> Result<(i32, [u8; 32]), TonError> {
    let (wc, hash) = address.split_once(':').ok_or(TonError::Address)?;
    let wc = WORKCHAINS
        .iter()
        .find(|(spelling, _)| *spelling == wc)
        .map(|(_, wc)| *wc)
        .ok_or(TonError::Address)?;
    let hash: [u8; 32] = hex::decode(hash)
        .ok()
        .and_then(|h| h.try_into().ok())
        .ok_or(TonError::Address)?;
    Ok((wc, hash))
}

/// The one spelling of an address: `wc:<64 lower-case hex digits>`.
pub fn canonical_address(wc: i32, hash: &[u8; 32]) -> String {
    format!("{wc}:{}", hex::encode(hash))
}

/// The signed digest: `sha256(0xffff ++ "ton-connect" ++ sha256(message))`, with
/// `message = "ton-proof-item-v2/" ++ wc (i32 BE) ++ hash ++ domain_len (u32 LE) ++ domain ++
/// timestamp (u64 LE) ++ payload`. The domain length is computed here, never taken from the
/// client.
pub fn proof_digest(
    wc: i32,
    hash: &[u8; 32],
    domain: &str,
    timestamp: u64,
    payload: &str,
) -> [u8; 32] {
    let mut message = Vec::with_capacity(18 + 4 + 32 + 4 + domain.len() + 8 + payload.len());
    message.extend_from_slice(b"ton-proof-item-v2/");
    message.extend_from_slice(&wc.to_be_bytes());
    message.extend_from_slice(hash);
    message.extend_from_slice(&(domain.len() as u32).to_le_bytes());
    message.extend_from_slice(domain.as_bytes());
    message.extend_from_slice(&timestamp.to_le_bytes());
    message.extend_from_slice(payload.as_bytes());
    let mut outer = Sha256::new();
    outer.update([0xff, 0xff]);
    outer.update(b"ton-connect");
    outer.update(Sha256::digest(&message));
    outer.finalize().into()
}

/// The known wallet whose code this is.
pub fn wallet_code(code: &Cell) -> Option<&'static WalletCode> {
    let hash = hex::encode(code.hash());
    WALLET_CODES.iter().find(|w| w.code_hash == hash)
}

/// The owner's key in a `wallet`'s data cell.
pub fn wallet_key(wallet: &WalletCode, data: &Cell) -> Result<VerifyingKey, TonError> {
    data.bits(wallet.key_bit_offset, 256)
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .and_then(|k| VerifyingKey::from_bytes(&k).ok())
        .ok_or(TonError::PublicKey)
}

/// A wallet whose proof verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedWallet {
    /// [`canonical_address`] of the address presented.
    pub address: String,
    /// The owner's key, lower-case hex.
    pub public_key: String,
    /// Which of [`WALLET_CODES`].
    pub wallet: &'static str,
}

/// Verifies a proof for `address` with the wallet's `state_init` (base64 BOC): the state init
/// hashes to the address, is a known wallet's, and the key in its data signed the digest.
pub fn verify(
    address: &str,
    state_init_b64: &str,
    domain: &str,
    timestamp: u64,
    payload: &str,
    signature_b64: &str,
) -> Result<VerifiedWallet, TonError> {
    let (wc, hash) = parse_address(address)?;
    // Base64 is 4 characters per 3 bytes: refuse before decoding what could not parse.
    if state_init_b64.len() > BOC_BYTES_MAX.div_ceil(3) * 4 {
        return Err(TonError::Boc("too large"));
    }
    let boc = base64::engine::general_purpose::STANDARD
        .decode(state_init_b64)
        .map_err(|_| TonError::Boc("not base64"))?;
    let state_init = parse_boc(&boc)?;
    if state_init.hash() != hash {
        return Err(TonError::AddressMismatch);
    }
    let (code, data) = state_init_code_and_data(&state_init)?;
    let wallet = wallet_code(code).ok_or(TonError::UnknownWallet)?;
    let key = wallet_key(wallet, data)?;
    let signature = base64::engine::general_purpose::STANDARD
        .decode(signature_b64)
        .ok()
        .and_then(|s| Signature::from_slice(&s).ok())
        .ok_or(TonError::Signature)?;
    let digest = proof_digest(wc, &hash, domain, timestamp, payload);
    key.verify(&digest, &signature)
        .map_err(|_| TonError::Signature)?;
    Ok(VerifiedWallet {
        address: canonical_address(wc, &hash),
        public_key: hex::encode(key.as_bytes()),
        wallet: wallet.name,
    })
}

#[cfg(test)]
mod tests {
    use super::super::boc::tests::to_boc;
    use super::*;
    use std::sync::Arc;

    /// ton4j's wallet v3 for the test vector's key: code and data bits, and its address.
    pub const CODE_HEX: &str = "FF0020DD2082014C97BA218201339CBAB19F71B0ED44D0D31FD31F31D70BFFE304E0A4F2608308D71820D31FD31FD31FF82313BBF263ED44D0D31FD31FD3FFD15132BAF2A15144BAF2A204F901541055F910F2A3F8009320D74A96D307D402FB00E8D101A4C8CB1FCB1FCBFFC9ED54";
    pub const DATA_HEX: &str =
        "000000000000002A82A0B2543D06FEC0AAC952E9EC738BE56AB1B6027FC0C1AA817AE14B4D1ED2FB";
    pub const ADDRESS: &str = "0:2d29bfa071c8c62fa3398b661a842e60f04cb8a915fb3e749ef7c6c41343e16c";
    /// The seed of the vector's key (ton4j's TON Connect test).
    const SEED: &str = "f182111193f30d79d517f2339a1ba7c25fdf6c52142f0f2c1d960a1f1d65e1e4";
    const SIGNATURE: &str =
        "6Kmob2QSCp6k+NbAxckvloe3cIDpMC4xbImuRCuPBcNAlFk3UhMt+F62DNfisRLbe9CmAu16jIURXjZOuuOTDQ==";
    const PAYLOAD: &str = "doc-example-<BACKEND_AUTH_ID>";
    const STATE_INIT_B64: &str = "te6ccgECAwEAAKAAAgE0AQIA3v8AIN0gggFMl7ohggEznLqxn3Gw7UTQ0x/THzHXC//jBOCk8mCDCNcYINMf0x/TH/gjE7vyY+1E0NMf0x/T/9FRMrryoVFEuvKiBPkBVBBV+RDyo/gAkyDXSpbTB9QC+wDo0QGkyMsfyx/L/8ntVABQAAAAAAAAACqCoLJUPQb+wKrJUunsc4vlarG2An/AwaqBeuFLTR7S+w==";

    pub fn bytes_cell(hex_bits: &str, refs: Vec<Arc<Cell>>) -> Arc<Cell> {
        let data = hex::decode(hex_bits).unwrap();
        Cell::new(data.clone(), data.len() * 8, refs).unwrap()
    }

    /// A state init with `code` and `data`: 0 (no split_depth) 0 (no special) 1 (code)
    /// 1 (data) 0 (no library) = 0b00110.
    pub fn state_init_of(code: Arc<Cell>, data: Arc<Cell>) -> Arc<Cell> {
        Cell::new(vec![0b0011_0000], 5, vec![code, data]).unwrap()
    }

    pub fn state_init() -> Arc<Cell> {
        state_init_of(bytes_cell(CODE_HEX, vec![]), bytes_cell(DATA_HEX, vec![]))
    }

    fn sign(digest: &[u8; 32]) -> String {
        use ed25519_dalek::Signer;
        let seed: [u8; 32] = hex::decode(SEED).unwrap().try_into().unwrap();
        let sig = ed25519_dalek::SigningKey::from_bytes(&seed).sign(digest);
        base64::engine::general_purpose::STANDARD.encode(sig.to_bytes())
    }

    #[test]
    fn the_state_init_hashes_to_the_wallets_address() {
        let (_, hash) = parse_address(ADDRESS).unwrap();
        assert_eq!(state_init().hash(), hash);
        let parsed = parse_boc(&to_boc(&state_init())).unwrap();
        assert_eq!(parsed, state_init());
        // tests/sign_in.rs sends this walletStateInit.
        assert_eq!(
            base64::engine::general_purpose::STANDARD.encode(to_boc(&state_init())),
            STATE_INIT_B64
        );
    }

    #[test]
    fn the_published_proof_verifies_and_its_pitfalls_do_not() {
        let (wc, hash) = parse_address(ADDRESS).unwrap();
        assert_eq!(
            hex::encode(proof_digest(wc, &hash, "xxx.xxx.com", 1722999580, PAYLOAD)),
            "2509d3e0d6529cb9625ca1b59ee548d168cb6836c8977f3c6291c15d9b528f7a"
        );
        let boc = base64::engine::general_purpose::STANDARD.encode(to_boc(&state_init()));
        let wallet = verify(ADDRESS, &boc, "xxx.xxx.com", 1722999580, PAYLOAD, SIGNATURE).unwrap();
        assert_eq!(
            wallet.public_key,
            "82a0b2543d06fec0aac952e9ec738be56ab1b6027fc0c1aa817ae14b4d1ed2fb"
        );
        assert_eq!(wallet.wallet, "v3r2");
        // Another payload, timestamp or domain: the signature no longer verifies.
        for (d, t, p) in [
            ("xxx.xxx.com", 1722999580, "other"),
            ("xxx.xxx.com", 1722999581, PAYLOAD),
            ("yyy.xxx.com", 1722999580, PAYLOAD),
        ] {
            assert_eq!(
                verify(ADDRESS, &boc, d, t, p, SIGNATURE),
                Err(TonError::Signature)
            );
        }
        // The state init of another address is refused before any signature check.
        let other = ADDRESS.replace("2d29", "2d2a");
        assert_eq!(
            verify(&other, &boc, "xxx.xxx.com", 1722999580, PAYLOAD, SIGNATURE),
            Err(TonError::AddressMismatch)
        );
        // Workchain −1 is written big-endian.
        let (_, h) = parse_address(ADDRESS).unwrap();
        assert_ne!(
            proof_digest(-1, &h, "xxx.xxx.com", 1722999580, PAYLOAD),
            proof_digest(0, &h, "xxx.xxx.com", 1722999580, PAYLOAD)
        );
        assert!(parse_boc(b"not a boc").is_err());
    }
    /// F20: the ton4j vector is wallet v3r2, whose code hash is the first allow-listed one.
    #[test]
    fn the_vectors_code_is_the_allow_listed_v3r2() {
        let code = bytes_cell(CODE_HEX, vec![]);
        assert_eq!(wallet_code(&code).map(|w| w.name), Some("v3r2"));
        assert_eq!(
            hex::encode(code.hash()),
            "84dafa449f98a6987789ba232358072bc0f76dc4524002a5d0918b9a75d2d599"
        );
    }

    /// Packs bits (one per byte, most significant first) into a cell.
    fn bits_cell(bits: &[u8]) -> Arc<Cell> {
        let mut packed = vec![0u8; bits.len().div_ceil(8)];
        for (i, b) in bits.iter().enumerate() {
            packed[i / 8] |= b << (7 - i % 8);
        }
        Cell::new(packed, bits.len(), vec![]).unwrap()
    }

    /// The bits of `hex`, one per byte.
    fn hex_bits(hex: &str) -> Vec<u8> {
        hex::decode(hex)
            .unwrap()
            .iter()
            .flat_map(|byte| (0..8).map(move |j| (byte >> (7 - j)) & 1))
            .collect()
    }

    /// F20: the key is read at each allow-listed wallet's own offset: v4r2 after seqno and
    /// wallet id, v5r1 after a flag bit as well.
    #[test]
    fn the_key_is_read_at_each_wallets_offset() {
        let key = "82a0b2543d06fec0aac952e9ec738be56ab1b6027fc0c1aa817ae14b4d1ed2fb";
        let read = |wallet: &WalletCode, data: &Cell| {
            wallet_key(wallet, data).map(|k| hex::encode(k.as_bytes()))
        };
        // v4r2: seqno 0, wallet id 698983191, key, an empty plugin dict (one 0 bit).
        let v4_data = bits_cell(&[hex_bits(&format!("0000000029a9a317{key}")), vec![0]].concat());
        assert_eq!(read(&WALLET_CODES[1], &v4_data).as_deref(), Ok(key));
        // v5r1: is_signature_allowed 1, seqno 0, wallet id, key, an empty extension dict.
        let v5_data = bits_cell(
            &[
                vec![1],
                hex_bits(&format!("000000007fffff11{key}")),
                vec![0],
            ]
            .concat(),
        );
        assert_eq!(read(&WALLET_CODES[2], &v5_data).as_deref(), Ok(key));
        assert_ne!(read(&WALLET_CODES[1], &v5_data).as_deref(), Ok(key));
    }

    /// F20: a contract that is not an allow-listed wallet is refused even when its state init
    /// hashes to the address and its data holds the signer's key at a wallet's offset (as a
    /// multisig holding a co-signer's key might).
    #[test]
    fn a_contract_that_is_not_a_known_wallet_is_refused() {
        let other_code = bytes_cell("00ff", vec![]);
        let contract = state_init_of(other_code, bytes_cell(DATA_HEX, vec![]));
        let address = canonical_address(0, &contract.hash());
        let digest = proof_digest(0, &contract.hash(), "lo.example", 1, "p");
        let boc = base64::engine::general_purpose::STANDARD.encode(to_boc(&contract));
        assert_eq!(
            verify(&address, &boc, "lo.example", 1, "p", &sign(&digest)),
            Err(TonError::UnknownWallet)
        );
    }

    /// F20: one spelling per wallet: `0` or `-1`, hex in either case, one canonical form.
    #[test]
    fn addresses_have_one_spelling_per_workchain() {
        let hex = ADDRESS.split_once(':').unwrap().1;
        let (wc, hash) = parse_address(&format!("0:{}", hex.to_uppercase())).unwrap();
        assert_eq!(canonical_address(wc, &hash), ADDRESS);
        assert_eq!(parse_address(&format!("-1:{hex}")).unwrap().0, -1);
        for wc in ["+0", "00", "-0", "+1", "-01", "1", " 0", "0 "] {
            assert_eq!(
                parse_address(&format!("{wc}:{hex}")),
                Err(TonError::Address),
                "{wc}"
            );
        }
        assert_eq!(parse_address(&format!("0:{hex}00")), Err(TonError::Address));
    }
}
