//! The bag-of-cells (BOC) parser and TVM cell hashing, for the `walletStateInit` of a TON
//! Connect proof.
//!
//! The state init arrives as a bag of cells (BOC) from an unauthenticated client, so parsing
//! is bounded: at most [`BOC_CELLS_MAX`] cells of at most [`CELL_REFS_MAX`] references each,
//! every cell built once and shared (`Arc`) by the cells referring to it, with its hash and
//! depth computed when it is built. A cell referenced many times costs no more than once; the
//! work is linear in the BOC's size, never in the size of the tree it unfolds to.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::TonError;

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

    pub(super) fn bit(&self, i: usize) -> Option<bool> {
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::sign_in::ton::verify;
    use base64::Engine;
    use std::time::Duration;

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
}
