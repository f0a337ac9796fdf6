//! TON Connect sign-in: the `ton_proof` signature, and the wallet's public key taken from its
//! `walletStateInit`, which must hash to the address it claims. Pure functions; domain.md §4.3
//! has the layout and the vector.
//!
//! Why no allow-list of wallet codes: the address *is* the hash of the state init (code and
//! data), so a state init that hashes to the address is that wallet's, and the key read from
//! its data (v3/v4 layout at bit 64, v5 at bit 65) must also be the one that signed the proof.

use base64::Engine;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

/// The BOC magic of `serialized_boc`.
const BOC_MAGIC: [u8; 4] = [0xb5, 0xee, 0x9c, 0x72];
/// Cells a state init BOC may hold (a wallet's is 2–3; libraries are not followed).
const BOC_CELLS_MAX: usize = 64;
/// Where wallets keep their public key in their data cell: v3/v4 after seqno and
/// subwallet id; v5 after a flag bit, seqno and wallet id.
const PUBKEY_BIT_OFFSETS: [usize; 2] = [64, 65];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TonError {
    #[error("walletStateInit is not a valid BOC: {0}")]
    Boc(&'static str),
    #[error("walletStateInit has no code and data")]
    StateInit,
    #[error("address must be <workchain>:<64 hex digits>")]
    Address,
    #[error("walletStateInit does not hash to the address")]
    AddressMismatch,
    #[error("no public key in the wallet's data matches the proof")]
    PublicKey,
    #[error("signature does not verify")]
    Signature,
}

/// An ordinary cell: up to 1023 bits and 4 references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    /// Bits, most significant first, padded with zeros to whole bytes.
    pub data: Vec<u8>,
    pub bit_len: usize,
    pub refs: Vec<Cell>,
}

impl Cell {
    pub fn depth(&self) -> u16 {
        self.refs.iter().map(|r| r.depth() + 1).max().unwrap_or(0)
    }

    /// The representation hash (TVM's `HASHCU`) of an ordinary level-0 cell.
    pub fn hash(&self) -> [u8; 32] {
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
            let mask = 0xffu8 << (8 - used);
            h.update([(self.data[full] & mask) | (0x80 >> used)]);
        }
        for r in &self.refs {
            h.update(r.depth().to_be_bytes());
        }
        for r in &self.refs {
            h.update(r.hash());
        }
        h.finalize().into()
    }

    fn bit(&self, i: usize) -> Option<bool> {
        (i < self.bit_len).then(|| self.data[i / 8] & (0x80 >> (i % 8)) != 0)
    }

    fn bits(&self, from: usize, len: usize) -> Option<Vec<u8>> {
        if from + len > self.bit_len {
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

fn read_uint(bytes: &[u8], at: &mut usize, size: usize) -> Result<usize, TonError> {
    let end = *at + size;
    let slice = bytes.get(*at..end).ok_or(TonError::Boc("truncated"))?;
    *at = end;
    Ok(slice.iter().fold(0usize, |acc, b| (acc << 8) | *b as usize))
}

/// Parses a `serialized_boc` with one root (the base64 of TON Connect's `walletStateInit`).
pub fn parse_boc(bytes: &[u8]) -> Result<Cell, TonError> {
    if bytes.get(..4) != Some(&BOC_MAGIC[..]) {
        return Err(TonError::Boc("bad magic"));
    }
    let flags = *bytes.get(4).ok_or(TonError::Boc("truncated"))?;
    let has_idx = flags & 0x80 != 0;
    let size = (flags & 0x07) as usize;
    let off_bytes = *bytes.get(5).ok_or(TonError::Boc("truncated"))? as usize;
    if !(1..=4).contains(&size) || !(1..=8).contains(&off_bytes) {
        return Err(TonError::Boc("bad sizes"));
    }
    let mut at = 6;
    let cells = read_uint(bytes, &mut at, size)?;
    let roots = read_uint(bytes, &mut at, size)?;
    let _absent = read_uint(bytes, &mut at, size)?;
    let _total = read_uint(bytes, &mut at, off_bytes)?;
    if roots != 1 || cells == 0 || cells > BOC_CELLS_MAX {
        return Err(TonError::Boc("expected one root and a few cells"));
    }
    let root = read_uint(bytes, &mut at, size)?;
    if has_idx {
        at += cells * off_bytes;
    }
    // (bits, bit_len, ref indices) per cell, in order.
    let mut raw: Vec<(Vec<u8>, usize, Vec<usize>)> = Vec::with_capacity(cells);
    for _ in 0..cells {
        let d1 = read_uint(bytes, &mut at, 1)?;
        let d2 = read_uint(bytes, &mut at, 1)?;
        if d1 & 0x08 != 0 || d1 >> 5 != 0 {
            return Err(TonError::Boc(
                "exotic or leveled cells are not wallet state",
            ));
        }
        let refs = d1 & 0x07;
        let len = d2.div_ceil(2);
        let data = bytes
            .get(at..at + len)
            .ok_or(TonError::Boc("truncated"))?
            .to_vec();
        at += len;
        let bit_len = if d2.is_multiple_of(2) {
            len * 8
        } else {
            let last = *data.last().ok_or(TonError::Boc("empty padded cell"))?;
            if last == 0 {
                return Err(TonError::Boc("missing completion tag"));
            }
            len * 8 - 1 - last.trailing_zeros() as usize
        };
        let refs = (0..refs)
            .map(|_| read_uint(bytes, &mut at, size))
            .collect::<Result<Vec<_>, _>>()?;
        raw.push((data, bit_len, refs));
    }
    // References point forward; build from the last cell.
    let mut built: Vec<Option<Cell>> = vec![None; cells];
    for i in (0..cells).rev() {
        let (mut data, bit_len, refs) = raw[i].clone();
        if !bit_len.is_multiple_of(8) {
            let last = data.len() - 1;
            data[last] &= 0xffu8 << (8 - bit_len % 8);
        }
        let refs = refs
            .iter()
            .map(|&r| {
                (r > i)
                    .then(|| built.get(r).cloned().flatten())
                    .flatten()
                    .ok_or(TonError::Boc("bad reference"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        built[i] = Some(Cell {
            data,
            bit_len,
            refs,
        });
    }
    built
        .get(root)
        .cloned()
        .flatten()
        .ok_or(TonError::Boc("bad root"))
}

/// The data cell of a `StateInit`: `split_depth:(Maybe ## 5) special:(Maybe TickTock)
/// code:(Maybe ^Cell) data:(Maybe ^Cell) library:(Maybe ^Cell)`.
pub fn state_init_data(state_init: &Cell) -> Result<&Cell, TonError> {
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
    state_init.refs.get(1).ok_or(TonError::StateInit)
}

/// `(workchain, 32-byte hash)` of a raw address `wc:hex`.
pub fn parse_address(address: &str) -> Result<(i32, [u8; 32]), TonError> {
    let (wc, hash) = address.split_once(':').ok_or(TonError::Address)?;
    let wc: i32 = wc.parse().map_err(|_| TonError::Address)?;
    let hash: [u8; 32] = hex::decode(hash)
        .ok()
        .and_then(|h| h.try_into().ok())
        .ok_or(TonError::Address)?;
    Ok((wc, hash))
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

/// Verifies a proof for `address` with the wallet's `state_init` (base64 BOC): the state init
/// hashes to the address, and a key in its data signed the digest. Returns the key (hex).
pub fn verify(
    address: &str,
    state_init_b64: &str,
    domain: &str,
    timestamp: u64,
    payload: &str,
    signature_b64: &str,
) -> Result<String, TonError> {
    let (wc, hash) = parse_address(address)?;
    let boc = base64::engine::general_purpose::STANDARD
        .decode(state_init_b64)
        .map_err(|_| TonError::Boc("not base64"))?;
    let state_init = parse_boc(&boc)?;
    if state_init.hash() != hash {
        return Err(TonError::AddressMismatch);
    }
    let data = state_init_data(&state_init)?;
    let signature = base64::engine::general_purpose::STANDARD
        .decode(signature_b64)
        .ok()
        .and_then(|s| Signature::from_slice(&s).ok())
        .ok_or(TonError::Signature)?;
    let digest = proof_digest(wc, &hash, domain, timestamp, payload);
    let mut found_key = false;
    for offset in PUBKEY_BIT_OFFSETS {
        let Some(key) = data
            .bits(offset, 256)
            .and_then(|k| <[u8; 32]>::try_from(k).ok())
            .and_then(|k| VerifyingKey::from_bytes(&k).ok())
        else {
            continue;
        };
        found_key = true;
        if key.verify(&digest, &signature).is_ok() {
            return Ok(hex::encode(key.as_bytes()));
        }
    }
    Err(if found_key {
        TonError::Signature
    } else {
        TonError::PublicKey
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// ton4j's wallet v3 for the domain.md §4.3 key: code and data bits, and its address.
    pub const CODE_HEX: &str = "FF0020DD2082014C97BA218201339CBAB19F71B0ED44D0D31FD31F31D70BFFE304E0A4F2608308D71820D31FD31FD31FF82313BBF263ED44D0D31FD31FD3FFD15132BAF2A15144BAF2A204F901541055F910F2A3F8009320D74A96D307D402FB00E8D101A4C8CB1FCB1FCBFFC9ED54";
    pub const DATA_HEX: &str =
        "000000000000002A82A0B2543D06FEC0AAC952E9EC738BE56AB1B6027FC0C1AA817AE14B4D1ED2FB";
    pub const ADDRESS: &str = "0:2d29bfa071c8c62fa3398b661a842e60f04cb8a915fb3e749ef7c6c41343e16c";
    const SIGNATURE: &str =
        "6Kmob2QSCp6k+NbAxckvloe3cIDpMC4xbImuRCuPBcNAlFk3UhMt+F62DNfisRLbe9CmAu16jIURXjZOuuOTDQ==";
    const PAYLOAD: &str = "doc-example-<BACKEND_AUTH_ID>";
    const STATE_INIT_B64: &str = "te6ccgECAwEAAKAAAgE0AQIA3v8AIN0gggFMl7ohggEznLqxn3Gw7UTQ0x/THzHXC//jBOCk8mCDCNcYINMf0x/TH/gjE7vyY+1E0NMf0x/T/9FRMrryoVFEuvKiBPkBVBBV+RDyo/gAkyDXSpbTB9QC+wDo0QGkyMsfyx/L/8ntVABQAAAAAAAAACqCoLJUPQb+wKrJUunsc4vlarG2An/AwaqBeuFLTR7S+w==";

    fn bytes_cell(hex_bits: &str, refs: Vec<Cell>) -> Cell {
        let data = hex::decode(hex_bits).unwrap();
        Cell {
            bit_len: data.len() * 8,
            data,
            refs,
        }
    }

    pub fn state_init() -> Cell {
        // 0 (no split_depth) 0 (no special) 1 (code) 1 (data) 0 (no library) = 0b00110.
        Cell {
            data: vec![0b0011_0000],
            bit_len: 5,
            refs: vec![bytes_cell(CODE_HEX, vec![]), bytes_cell(DATA_HEX, vec![])],
        }
    }

    /// A minimal BOC writer (no index, no CRC), the layout wallets send.
    pub fn to_boc(root: &Cell) -> Vec<u8> {
        fn collect<'a>(c: &'a Cell, out: &mut Vec<&'a Cell>) {
            out.push(c);
            for r in &c.refs {
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
        let key = verify(ADDRESS, &boc, "xxx.xxx.com", 1722999580, PAYLOAD, SIGNATURE).unwrap();
        assert_eq!(
            key,
            "82a0b2543d06fec0aac952e9ec738be56ab1b6027fc0c1aa817ae14b4d1ed2fb"
        );
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
}
