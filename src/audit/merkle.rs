//! RFC 9162 (RFC 6962) Merkle tree hashing over SHA-256: leaf and node hashes, the compact
//! frontier an appender keeps, tree heads and proofs computed from stored perfect subtrees,
//! and the verification algorithms of RFC 9162 sections 2.1.3.2 and 2.1.4.2.
//!
//! Storage model: every *perfect* subtree is stored once, when it becomes complete, under
//! `(level, index)` (leaves are level 0; node `(l, i)` covers leaves `[i*2^l, (i+1)*2^l)`).
//! A stored node never changes after it is written, so the head of any earlier size and any
//! proof can be computed from O(log n) stored nodes ([`NodeSource`]).

use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorCode, Result};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// Longest proof accepted by the verifiers (a tree of 2^64 leaves has paths of 64 nodes; a
/// consistency proof has at most two per level).
pub const MAX_PROOF_LEN: usize = 130;

/// `SHA-256(0x00 || entry)`.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(entry);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The head of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The largest power of two strictly smaller than `n` (n >= 2).
pub fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// Read access to stored perfect subtrees.
pub trait NodeSource {
    /// The hash of the perfect subtree `(level, index)`; it must exist.
    fn node(&self, level: u8, index: u64) -> Result<Hash>;
}

/// `MTH(D[lo:hi])` for a range that the RFC recursion produces (`lo` is a multiple of the
/// power of two at or above `hi - lo`), from O(log n) stored perfect subtrees: the range is
/// the concatenation of aligned perfect subtrees of decreasing size, folded right to left.
pub fn range_hash(src: &dyn NodeSource, lo: u64, hi: u64) -> Result<Hash> {
    if lo >= hi {
        return Ok(empty_root());
    }
    let mut parts = Vec::with_capacity(64);
    let mut at = lo;
    while at < hi {
        let remaining = hi - at;
        // Largest level that keeps the subtree aligned at `at` and inside the range.
        let mut level = 63 - remaining.leading_zeros();
        if at != 0 {
            level = level.min(at.trailing_zeros());
        }
        parts.push(src.node(level as u8, at >> level)?);
        at += 1u64 << level;
    }
    let mut acc = parts.pop().unwrap_or_else(empty_root);
    while let Some(left) = parts.pop() {
        acc = node_hash(&left, &acc);
    }
    Ok(acc)
}

/// The tree head at `size` (`MTH(D[0:size])`).
pub fn root_at(src: &dyn NodeSource, size: u64) -> Result<Hash> {
    range_hash(src, 0, size)
}

/// The inclusion proof (RFC 9162 2.1.3.1 `PATH(m, D[0:n])`) for leaf `index` in the tree of
/// `size` leaves, ordered from the leaf's sibling up. The caller checks `index < size <=`
/// the stored size.
pub fn inclusion_proof(src: &dyn NodeSource, index: u64, size: u64) -> Result<Vec<Hash>> {
    if index >= size {
        return Err(out_of_range(format!(
            "leaf index {index} is not below tree size {size}"
        )));
    }
    let mut out = Vec::new();
    path(src, index, 0, size, &mut out)?;
    Ok(out)
}

fn path(src: &dyn NodeSource, m: u64, lo: u64, hi: u64, out: &mut Vec<Hash>) -> Result<()> {
    let n = hi - lo;
    if n <= 1 {
        return Ok(());
    }
    let k = split_point(n);
    if m - lo < k {
        path(src, m, lo, lo + k, out)?;
        out.push(range_hash(src, lo + k, hi)?);
    } else {
        path(src, m, lo + k, hi, out)?;
        out.push(range_hash(src, lo, lo + k)?);
    }
    Ok(())
}

/// The consistency proof (RFC 9162 2.1.4.1 `PROOF(m, D[0:n])`) between sizes `m <= n`.
/// Empty when `m == 0` or `m == n` (every tree extends the empty tree and itself).
pub fn consistency_proof(src: &dyn NodeSource, m: u64, n: u64) -> Result<Vec<Hash>> {
    if m > n {
        return Err(out_of_range(format!(
            "first size {m} is larger than second size {n}"
        )));
    }
    let mut out = Vec::new();
    if m == 0 || m == n {
        return Ok(out);
    }
    subproof(src, m, 0, n, true, &mut out)?;
    Ok(out)
}

fn subproof(
    src: &dyn NodeSource,
    m: u64,
    lo: u64,
    hi: u64,
    complete: bool,
    out: &mut Vec<Hash>,
) -> Result<()> {
    let n = hi - lo;
    if m == n {
        if !complete {
            out.push(range_hash(src, lo, hi)?);
        }
        return Ok(());
    }
    let k = split_point(n);
    if m <= k {
        subproof(src, m, lo, lo + k, complete, out)?;
        out.push(range_hash(src, lo + k, hi)?);
    } else {
        subproof(src, m - k, lo + k, hi, false, out)?;
        out.push(range_hash(src, lo, lo + k)?);
    }
    Ok(())
}

/// Why a proof failed to verify.
fn proof_invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorCode::AuditProofInvalid, msg)
}

/// Verifies an inclusion proof (RFC 9162 2.1.3.2).
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<()> {
    if index >= size {
        return Err(proof_invalid(format!(
            "leaf index {index} is not below tree size {size}"
        )));
    }
    if proof.len() > MAX_PROOF_LEN {
        return Err(proof_invalid("inclusion proof too long"));
    }
    let mut r = *leaf;
    walk_up(index, size - 1, proof, "inclusion", |p, on_left| {
        r = if on_left {
            node_hash(p, &r)
        } else {
            node_hash(&r, p)
        };
    })?;
    if &r != root {
        return Err(proof_invalid("inclusion proof does not lead to the root"));
    }
    Ok(())
}

/// The walk up the tree shared by both verifications (RFC 9162 2.1.3.2 and 2.1.4.2): from
/// node `fn_` of a level whose last node is `sn`, each of `nodes` is joined on the left
/// (`join(node, true)`) or the right (`join(node, false)`) on the way to the root. Refuses
/// (PROOF_INVALID, naming the `what` proof) more or fewer nodes than the way has levels.
fn walk_up(
    mut fn_: u64,
    mut sn: u64,
    nodes: &[Hash],
    what: &str,
    mut join: impl FnMut(&Hash, bool),
) -> Result<()> {
    for node in nodes {
        if sn == 0 {
            return Err(proof_invalid(format!("{what} proof has too many nodes")));
        }
        if fn_ & 1 == 1 || fn_ == sn {
            join(node, true);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            join(node, false);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(proof_invalid(format!("{what} proof has too few nodes")));
    }
    Ok(())
}

/// Verifies a consistency proof (RFC 9162 2.1.4.2) from `(m, root_m)` to `(n, root_n)`.
/// For `m == n` the proof must be empty and the roots equal; for `m == 0` it must be empty.
pub fn verify_consistency(
    m: u64,
    n: u64,
    root_m: &Hash,
    root_n: &Hash,
    proof: &[Hash],
) -> Result<()> {
    if m > n {
        return Err(proof_invalid(format!("size {m} is larger than size {n}")));
    }
    if m == n {
        if !proof.is_empty() {
            return Err(proof_invalid(
                "consistency proof between equal sizes must be empty",
            ));
        }
        if root_m != root_n {
            return Err(proof_invalid("different roots for the same tree size"));
        }
        return Ok(());
    }
    if m == 0 {
        if !proof.is_empty() {
            return Err(proof_invalid(
                "consistency proof from the empty tree must be empty",
            ));
        }
        return Ok(());
    }
    if proof.is_empty() {
        return Err(proof_invalid("empty consistency proof"));
    }
    if proof.len() > MAX_PROOF_LEN {
        return Err(proof_invalid("consistency proof too long"));
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if m.is_power_of_two() {
        path.push(*root_m);
    }
    path.extend_from_slice(proof);
    let (mut fn_, mut sn) = (m - 1, n - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    walk_up(fn_, sn, &path[1..], "consistency", |c, on_left| {
        if on_left {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
        } else {
            sr = node_hash(&sr, c);
        }
    })?;
    if &fr != root_m || &sr != root_n {
        return Err(proof_invalid(
            "consistency proof does not lead to both roots",
        ));
    }
    Ok(())
}

/// The out-of-range error of the read side (a client error, never a panic).
pub fn out_of_range(msg: impl Into<String>) -> Error {
    Error::new(ErrorCode::ProofOutOfRange, msg)
}

/// The right edge of a growing tree: the roots of its perfect subtrees, largest first. An
/// appender keeps it in memory so appending a leaf needs no reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    nodes: Vec<Hash>,
}

impl Frontier {
    /// The empty tree.
    pub fn new() -> Frontier {
        Frontier::default()
    }

    /// The frontier of a stored tree of `size` leaves (O(log n) reads).
    pub fn load(src: &dyn NodeSource, size: u64) -> Result<Frontier> {
        let mut nodes = Vec::new();
        let mut at = 0u64;
        for level in (0..64u32).rev() {
            if size & (1u64 << level) != 0 {
                nodes.push(src.node(level as u8, at >> level)?);
                at += 1u64 << level;
            }
        }
        Ok(Frontier { size, nodes })
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash, calling `emit(level, index, hash)` for the leaf and for every
    /// perfect subtree it completes (1 + trailing ones of the old size: O(log n)).
    pub fn push(&mut self, leaf: Hash, mut emit: impl FnMut(u8, u64, Hash)) {
        let mut index = self.size;
        let mut level = 0u8;
        let mut h = leaf;
        emit(0, index, h);
        while index & 1 == 1 {
            // The left sibling is the smallest perfect subtree of the old frontier.
            let left = self.nodes.pop().unwrap_or_else(empty_root);
            h = node_hash(&left, &h);
            index >>= 1;
            level += 1;
            emit(level, index, h);
        }
        self.nodes.push(h);
        self.size += 1;
    }

    /// The tree head.
    pub fn root(&self) -> Hash {
        let mut it = self.nodes.iter().rev();
        let Some(last) = it.next() else {
            return empty_root();
        };
        it.fold(*last, |acc, left| node_hash(left, &acc))
    }
}

/// An in-memory [`NodeSource`] for offline verification and tests: every perfect subtree of
/// the leaves pushed so far.
#[derive(Debug, Clone, Default)]
pub struct MemoryTree {
    levels: Vec<Vec<Hash>>,
    frontier: Frontier,
}

impl MemoryTree {
    /// An empty tree.
    pub fn new() -> MemoryTree {
        MemoryTree::default()
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let levels = &mut self.levels;
        self.frontier.push(leaf, |level, index, h| {
            let l = level as usize;
            if levels.len() <= l {
                levels.push(Vec::new());
            }
            debug_assert_eq!(levels[l].len() as u64, index);
            levels[l].push(h);
        });
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    /// The current head.
    pub fn root(&self) -> Hash {
        self.frontier.root()
    }
}

impl NodeSource for MemoryTree {
    fn node(&self, level: u8, index: u64) -> Result<Hash> {
        self.levels
            .get(level as usize)
            .and_then(|l| l.get(index as usize))
            .copied()
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::Internal,
                    format!("missing node ({level}, {index})"),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hx(s: &str) -> Hash {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    // RFC 6962 vectors as published by transparency-dev/merkle (testonly/constants.go).
    const LEAVES: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];
    const ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    #[test]
    fn known_roots_and_frontier() {
        assert_eq!(
            empty_root(),
            hx("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
        let mut t = MemoryTree::new();
        for (i, leaf) in LEAVES.iter().enumerate() {
            t.push(leaf_hash(&hex::decode(leaf).unwrap()));
            assert_eq!(t.root(), hx(ROOTS[i]), "size {}", i + 1);
            assert_eq!(root_at(&t, i as u64 + 1).unwrap(), hx(ROOTS[i]));
            assert_eq!(
                Frontier::load(&t, i as u64 + 1).unwrap().root(),
                hx(ROOTS[i])
            );
        }
    }

    #[test]
    fn split_points() {
        assert_eq!(split_point(2), 1);
        assert_eq!(split_point(3), 2);
        assert_eq!(split_point(4), 2);
        assert_eq!(split_point(5), 4);
        assert_eq!(split_point(1 << 40), 1 << 39);
        assert_eq!(split_point((1 << 40) + 1), 1 << 40);
    }

    #[test]
    fn out_of_range_is_an_error() {
        let mut t = MemoryTree::new();
        t.push(leaf_hash(b"a"));
        assert_eq!(
            inclusion_proof(&t, 1, 1).unwrap_err().code,
            ErrorCode::ProofOutOfRange
        );
        assert_eq!(
            consistency_proof(&t, 2, 1).unwrap_err().code,
            ErrorCode::ProofOutOfRange
        );
    }
}
