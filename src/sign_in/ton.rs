//! TON Connect sign-in: the `ton_proof` signature, and the wallet's public key taken from its
//! `walletStateInit`, which must hash to the address it claims. Pure functions; the layout is
//! TON Connect's `ton_proof` spec, and the test vector takes its inputs from ton4j's tests.
//!
//! The state init arrives as a bag of cells (BOC) from an unauthenticated client, so parsing
//! is bounded: at most [`BOC_CELLS_MAX`] cells of at most [`CELL_REFS_MAX`] references each,
//! every cell built once and shared (`Arc`) by the cells referring to it, with its hash and
//! depth computed when it is built. A cell referenced many times costs no more than once; the
//! work is linear in the BOC's size, never in the size of the tree it unfolds to.
//!
//! The key is read only from the wallet contracts of [`WALLET_CODES`]: hashing to the address
//! proves the state init is the address's, not that the contract keeps its owner's key at a
//! wallet's offset (a multisig keeping a co-signer's key there would let that co-signer in).

use std::sync::Arc;

use base64::Engine;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

/// The BOC magic of `serialized_boc`.
const BOC_MAGIC: [u8; 4] = [0xb5, 0xee, 0x9c, 0x72];
/// Cells a state init BOC may hold (a v4r2 or v5r1 wallet's is 22; libraries are not followed).
pub const BOC_CELLS_MAX: usize = 64;
/// Largest state init BOC accepted, in bytes (64 cells of 128 data bytes and 4 references
/// fit with room to spare; a v5r1 wallet's is under 700).
pub const BOC_BYTES_MAX: usize = 12 * 1024;
/// References an ordinary cell may have (TVM's limit; the BOC encoding could say 7).
pub const CELL_REFS_MAX: usize = 4;
/// Bits an ordinary cell may hold.
const CELL_BITS_MAX: usize = 1023;
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

/// An ordinary level-0 cell: up to 1023 bits and 4 references, shared by the cells that refer
/// to it. Its hash and depth are computed once, when it is built.
pub struct Cell {
    /// Bits, most significant first, padded with zeros to whole bytes.
    data: Vec<u8>,
    bit_len: usize,
    refs: Vec<Arc<Cell>>,
    hash: [u8; 32],
    depth: u16,
}

impl Cell {
    /// A cell of `bit_len` bits from `data` (bits past `bit_len` are cleared) and `refs`.
    pub fn new(
        mut data: Vec<u8>,
        bit_len: usize,
        refs: Vec<Arc<Cell>>,
    ) -> Result<Arc<Cell>, TonError> {
        if bit_len > CELL_BITS_MAX || data.len() != bit_len.div_ceil(8) {
            return Err(TonError::Boc("cell bits out of range"));
        }
        if refs.len() > CELL_REFS_MAX {
            return Err(TonError::Boc("more than 4 references"));
        }
        if !bit_len.is_multiple_of(8) {
            let last = data.len() - 1;
            data[last] &= 0xffu8 << (8 - bit_len % 8);
        }
        // A parsed BOC nests at most BOC_CELLS_MAX deep; saturating for cells built by hand.
        let depth = refs
            .iter()
            .map(|r| r.depth.saturating_add(1))
            .max()
            .unwrap_or(0);
        let mut cell = Cell {
            data,
            bit_len,
            refs,
            hash: [0; 32],
            depth,
        };
        cell.hash = cell.representation_hash();
        Ok(Arc::new(cell))
    }

    pub fn depth(&self) -> u16 {
        self.depth
    }

    /// The representation hash (TVM's `HASHCU`).
    pub fn hash(&self) -> [u8; 32] {
        self.hash
    }

    pub fn refs(&self) -> &[Arc<Cell>] {
        &self.refs
    }

    pub fn bit_len(&self) -> usize {
        self.bit_len
    }

    /// Hashes the descriptors, the bits with their completion tag, then the references'
    /// depths and hashes, which are already known: no recursion.
    fn representation_hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update([
            self.refs.len() as u8,
            (self.bit_len / 8 + self.bit_len.div_ceil(8)) as u8,
        ]);
        let full = self.bit_len / 8;
        h.update(&self.data[..full]);
        if !self.bit_len.is_multiple_of(8) {
            // The last byte carries a completion tag: a 1 after the last data bit.
            let used = self.bit_len % 8;
            h.update([self.data[full] | (0x80 >> used)]);
        }
        for r in &self.refs {
            h.update(r.depth.to_be_bytes());
        }
        for r in &self.refs {
            h.update(r.hash);
        }
        h.finalize().into()
    }

    fn bit(&self, i: usize) -> Option<bool> {
        (i < self.bit_len).then(|| self.data[i / 8] & (0x80 >> (i % 8)) != 0)
    }

    /// `len` bits from bit `from`, packed most significant first.
    pub fn bits(&self, from: usize, len: usize) -> Option<Vec<u8>> {
        if from.checked_add(len)? > self.bit_len {
            return None;
        }
        let mut out = vec![0u8; len.div_ceil(8)];
        for i in 0..len {
            if self.bit(from + i)? {
                out[i / 8] |= 0x80 >> (i % 8);
            }
        }
        Some(out)
    }
}

/// Two cells are the same when their representation hashes are (comparing the trees would
/// unfold shared references).
impl PartialEq for Cell {
    fn eq(&self, other: &Cell) -> bool {
        self.hash == other.hash
    }
}

impl Eq for Cell {}

/// Without the references' contents, which a shared DAG would print exponentially often.
impl std::fmt::Debug for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cell")
            .field("bit_len", &self.bit_len)
            .field("refs", &self.refs.len())
            .field("depth", &self.depth)
            .field("hash", &hex::encode(self.hash))
            .finish()
    }
}

/// A cursor over the BOC's bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, len: usize) -> Result<&[u8], TonError> {
        let end = self.at.checked_add(len).ok_or(TonError::Boc("truncated"))?;
        let slice = self
            .bytes
            .get(self.at..end)
            .ok_or(TonError::Boc("truncated"))?;
        self.at = end;
        Ok(slice)
    }

    /// A big-endian unsigned integer of `size` ≤ 8 bytes.
    fn uint(&mut self, size: usize) -> Result<usize, TonError> {
        let bytes = self.take(size)?;
        Ok(bytes.iter().fold(0usize, |acc, b| (acc << 8) | *b as usize))
    }
}

/// One cell as serialised: its bits and the indices of the cells it refers to.
struct RawCell {
    data: Vec<u8>,
    bit_len: usize,
    refs: Vec<usize>,
}

/// Reads one serialised ordinary cell (descriptors, data, `ref_size`-byte reference indices).
fn read_cell(r: &mut Reader<'_>, ref_size: usize) -> Result<RawCell, TonError> {
    let d1 = r.uint(1)?;
    let d2 = r.uint(1)?;
    // Bits 5-7: level; 4: stored hashes; 3: exotic. None of them is wallet state.
    if d1 & 0xf8 != 0 {
        return Err(TonError::Boc(
            "exotic, leveled or hashed cells are not wallet state",
        ));
    }
    let ref_count = d1 & 0x07;
    if ref_count > CELL_REFS_MAX {
        return Err(TonError::Boc("more than 4 references"));
    }
    let data = r.take(d2.div_ceil(2))?.to_vec();
    let bit_len = if d2.is_multiple_of(2) {
        data.len() * 8
    } else {
        let last = *data.last().ok_or(TonError::Boc("empty padded cell"))?;
        // A tag alone in its byte would be whole bytes written as padded ones.
        if last & 0x7f == 0 {
            return Err(TonError::Boc("missing or misplaced completion tag"));
        }
        data.len() * 8 - 1 - last.trailing_zeros() as usize
    };
    let refs = (0..ref_count)
        .map(|_| r.uint(ref_size))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RawCell {
        data,
        bit_len,
        refs,
    })
}

/// Parses a `serialized_boc` with one root (the base64 of TON Connect's `walletStateInit`).
/// References must point forward (so the cells form a DAG); each cell is built once, after the
/// cells it refers to, and shared by all of them.
pub fn parse_boc(bytes: &[u8]) -> Result<Arc<Cell>, TonError> {
    if bytes.len() > BOC_BYTES_MAX {
        return Err(TonError::Boc("too large"));
    }
    let mut r = Reader { bytes, at: 0 };
    if r.take(4)? != BOC_MAGIC {
        return Err(TonError::Boc("bad magic"));
    }
    let flags = r.uint(1)?;
    let has_idx = flags & 0x80 != 0;
    let ref_size = flags & 0x07;
    let off_bytes = r.uint(1)?;
    if !(1..=4).contains(&ref_size) || !(1..=8).contains(&off_bytes) {
        return Err(TonError::Boc("bad sizes"));
    }
    let cells = r.uint(ref_size)?;
    let roots = r.uint(ref_size)?;
    let _absent = r.uint(ref_size)?;
    let _total = r.uint(off_bytes)?;
    if roots != 1 || cells == 0 || cells > BOC_CELLS_MAX {
        return Err(TonError::Boc("expected one root and a few cells"));
    }
    let root = r.uint(ref_size)?;
    if has_idx {
        r.take(cells * off_bytes)?;
    }
    let raw = (0..cells)
        .map(|_| read_cell(&mut r, ref_size))
        .collect::<Result<Vec<_>, _>>()?;
    let mut built: Vec<Option<Arc<Cell>>> = vec![None; cells];
    for (i, cell) in raw.into_iter().enumerate().rev() {
        let refs = cell
            .refs
            .iter()
            .map(|&to| {
                (to > i)
                    .then(|| built.get(to).cloned().flatten())
                    .flatten()
                    .ok_or(TonError::Boc("bad reference"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        built[i] = Some(Cell::new(cell.data, cell.bit_len, refs)?);
    }
    built
        .get(root)
        .cloned()
        .flatten()
        .ok_or(TonError::Boc("bad root"))
}

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
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;

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

    /// A minimal BOC writer for trees (no index, no CRC), the layout wallets send.
    pub fn to_boc(root: &Cell) -> Vec<u8> {
        fn collect<'a>(c: &'a Cell, out: &mut Vec<&'a Cell>) {
            out.push(c);
            for r in c.refs() {
                collect(r, out);
            }
        }
        let mut cells = Vec::new();
        collect(root, &mut cells);
        let mut body = Vec::new();
        let mut next = 1;
        for c in &cells {
            body.push(c.refs.len() as u8);
            body.push((c.bit_len / 8 + c.bit_len.div_ceil(8)) as u8);
            let mut data = c.data.clone();
            if !c.bit_len.is_multiple_of(8) {
                let last = data.len() - 1;
                data[last] |= 0x80 >> (c.bit_len % 8);
            }
            body.extend_from_slice(&data);
            for _ in &c.refs {
                body.push(next as u8);
                next += 1;
            }
        }
        let mut boc = BOC_MAGIC.to_vec();
        boc.extend_from_slice(&[0x01, 0x02, cells.len() as u8, 1, 0]);
        boc.extend_from_slice(&(body.len() as u16).to_be_bytes());
        boc.push(0);
        boc.extend_from_slice(&body);
        boc
    }

    /// The audit's F1 layout: `cells` cells, each but the last referencing the next
    /// `refs_each` times, the last empty. Unfolded it is a tree of about `refs_each^(cells-1)`.
    pub fn shared_chain_boc(cells: u8, refs_each: u8) -> Vec<u8> {
        let mut body = Vec::new();
        for i in 0..cells - 1 {
            body.extend_from_slice(&[refs_each, 0]);
            body.extend(std::iter::repeat_n(i + 1, refs_each as usize));
        }
        body.extend_from_slice(&[0, 0]);
        let mut boc = BOC_MAGIC.to_vec();
        boc.extend_from_slice(&[0x01, 0x02, cells, 1, 0]);
        boc.extend_from_slice(&(body.len() as u16).to_be_bytes());
        boc.push(0);
        boc.extend_from_slice(&body);
        boc
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

    /// F1: the audit's 64-cell BOC, each cell referencing the next four times (4^63 cells
    /// once unfolded), parses and hashes in bounded time and memory, and a proof carrying it
    /// is refused. The parse runs on its own thread so a regression fails here instead of
    /// hanging the suite.
    #[test]
    fn a_boc_of_cells_sharing_references_parses_in_bounded_time() {
        let boc = shared_chain_boc(64, 4);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let parsed = parse_boc(&boc).map(|c| (c.depth(), c.refs().len()));
            let b64 = base64::engine::general_purpose::STANDARD.encode(&boc);
            let zero = format!("0:{}", "0".repeat(64));
            let verified = verify(&zero, &b64, "lo.example", 0, "x", "AAAA");
            let _ = tx.send((parsed, verified));
        });
        let (parsed, verified) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("parse_boc must not unfold shared references");
        assert_eq!(parsed, Ok((63, 4)));
        assert_eq!(verified, Err(TonError::AddressMismatch));
    }

    /// F1: cells with more than four references, backward references, and BOCs over the cell
    /// or byte bounds are refused.
    #[test]
    fn bocs_beyond_the_cell_bounds_are_refused() {
        assert_eq!(
            parse_boc(&shared_chain_boc(3, 5)).unwrap_err(),
            TonError::Boc("more than 4 references")
        );
        assert!(parse_boc(&shared_chain_boc(64, 4)).is_ok());
        assert_eq!(
            parse_boc(&shared_chain_boc(65, 1)).unwrap_err(),
            TonError::Boc("expected one root and a few cells")
        );
        // Cell 1 refers back to cell 0: a cycle, refused.
        let cyclic = [&BOC_MAGIC[..], &[1, 1, 2, 1, 0, 6, 0, 1, 0, 1, 1, 0, 0]].concat();
        assert_eq!(
            parse_boc(&cyclic).unwrap_err(),
            TonError::Boc("bad reference")
        );
        let huge = [&BOC_MAGIC[..], &vec![0u8; BOC_BYTES_MAX]].concat();
        assert_eq!(parse_boc(&huge).unwrap_err(), TonError::Boc("too large"));
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
