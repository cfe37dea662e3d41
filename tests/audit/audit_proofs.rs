//! The log's Merkle code against a straightforward reference implementation of RFC 9162
//! (MTH, PATH, PROOF and recursive verifiers written from the definitions), for every tree
//! size 1..=300, every leaf index and every size pair, with proofs read from a real sled
//! log; plus the RFC 6962 vectors published by transparency-dev/merkle.

use std::collections::HashMap;

use mpcp_pa::audit::merkle::{
    self, Hash, MemoryTree, consistency_proof, inclusion_proof, leaf_hash, node_hash,
    verify_consistency, verify_inclusion,
};
use mpcp_pa::error::ErrorCode;
use mpcp_pa::store::Store;

use crate::kit;
use crate::kit::audit::*;

/// Reference MTH over leaf hashes, memoised by range.
struct Reference {
    leaves: Vec<Hash>,
    memo: HashMap<(usize, usize), Hash>,
}

fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

impl Reference {
    fn mth(&mut self, lo: usize, hi: usize) -> Hash {
        if let Some(h) = self.memo.get(&(lo, hi)) {
            return *h;
        }
        let h = match hi - lo {
            0 => merkle::empty_root(),
            1 => self.leaves[lo],
            n => {
                let k = split(n);
                let l = self.mth(lo, lo + k);
                let r = self.mth(lo + k, hi);
                node_hash(&l, &r)
            }
        };
        self.memo.insert((lo, hi), h);
        h
    }

    /// PATH(m, D[lo:hi]).
    fn path(&mut self, m: usize, lo: usize, hi: usize) -> Vec<Hash> {
        let n = hi - lo;
        if n == 1 {
            return vec![];
        }
        let k = split(n);
        if m < k {
            let mut p = self.path(m, lo, lo + k);
            p.push(self.mth(lo + k, hi));
            p
        } else {
            let mut p = self.path(m - k, lo + k, hi);
            p.push(self.mth(lo, lo + k));
            p
        }
    }

    /// SUBPROOF(m, D[lo:hi], b).
    fn subproof(&mut self, m: usize, lo: usize, hi: usize, b: bool) -> Vec<Hash> {
        let n = hi - lo;
        if m == n {
            return if b { vec![] } else { vec![self.mth(lo, hi)] };
        }
        let k = split(n);
        if m <= k {
            let mut p = self.subproof(m, lo, lo + k, b);
            p.push(self.mth(lo + k, hi));
            p
        } else {
            let mut p = self.subproof(m - k, lo + k, hi, false);
            p.push(self.mth(lo, lo + k));
            p
        }
    }
}

/// Recursive inclusion verifier mirroring PATH: the root implied by `proof`.
fn ref_root_from_path(m: usize, n: usize, leaf: Hash, proof: &[Hash]) -> Option<Hash> {
    if n == 1 {
        return proof.is_empty().then_some(leaf);
    }
    let k = split(n);
    let (last, rest) = proof.split_last()?;
    if m < k {
        Some(node_hash(&ref_root_from_path(m, k, leaf, rest)?, last))
    } else {
        Some(node_hash(
            last,
            &ref_root_from_path(m - k, n - k, leaf, rest)?,
        ))
    }
}

/// Recursive consistency verifier mirroring SUBPROOF: the (old, new) roots implied.
fn ref_roots_from_proof(
    m: usize,
    n: usize,
    b: bool,
    old: Hash,
    proof: &[Hash],
) -> Option<(Hash, Hash)> {
    if m == n {
        return if b {
            proof.is_empty().then_some((old, old))
        } else {
            (proof.len() == 1).then(|| (proof[0], proof[0]))
        };
    }
    let k = split(n);
    let (last, rest) = proof.split_last()?;
    if m <= k {
        let (o, nn) = ref_roots_from_proof(m, k, b, old, rest)?;
        Some((o, node_hash(&nn, last)))
    } else {
        let (o, nn) = ref_roots_from_proof(m - k, n - k, false, old, rest)?;
        Some((node_hash(last, &o), node_hash(last, &nn)))
    }
}

fn ref_verify_inclusion(m: usize, n: usize, leaf: Hash, proof: &[Hash], root: Hash) -> bool {
    m < n && ref_root_from_path(m, n, leaf, proof) == Some(root)
}

fn ref_verify_consistency(m: usize, n: usize, old: Hash, new: Hash, proof: &[Hash]) -> bool {
    if m == n {
        return proof.is_empty() && old == new;
    }
    if m == 0 {
        return proof.is_empty();
    }
    m < n && ref_roots_from_proof(m, n, true, old, proof) == Some((old, new))
}

/// Corrupted variants of a proof (each must be rejected).
fn corruptions(proof: &[Hash]) -> Vec<Vec<Hash>> {
    let mut out = Vec::new();
    for i in 0..proof.len() {
        let mut p = proof.to_vec();
        p[i][0] ^= 8;
        out.push(p);
    }
    if !proof.is_empty() {
        out.push(proof[..proof.len() - 1].to_vec());
        out.push(proof[1..].to_vec());
    }
    let mut longer = proof.to_vec();
    longer.push([0xab; 32]);
    out.push(longer);
    let mut front = vec![[0xcd; 32]];
    front.extend_from_slice(proof);
    out.push(front);
    out
}

const N: u64 = 300;

#[test]
fn sled_log_matches_reference_for_every_size_index_and_pair() {
    let dir = kit::tmp::dir("proofs");
    let store = Store::open(&dir.join("store")).unwrap();
    let log = open(&store);
    // Mix both write paths: durable group commit and bulk batches.
    fill(&log, 37);
    let more: Vec<_> = (37..N).map(|i| (actor(i), event(i))).collect();
    log.bulk_append(more, 29).unwrap();
    assert_eq!(log.size(), N);
    let entries = log.entries(0, N).unwrap();
    let leaves: Vec<Hash> = entries.iter().map(|e| leaf_hash(e)).collect();
    let mut r = Reference {
        leaves: leaves.clone(),
        memo: HashMap::new(),
    };
    for n in 1..=N as usize {
        let root = r.mth(0, n);
        assert_eq!(log.root(n as u64).unwrap(), root, "root at {n}");
        for m in 0..n {
            let got = log.inclusion_proof(m as u64, n as u64).unwrap();
            assert_eq!(got, r.path(m, 0, n), "PATH({m}, {n})");
            verify_inclusion(m as u64, n as u64, &leaves[m], &got, &root).unwrap();
            assert!(ref_verify_inclusion(m, n, leaves[m], &got, root));
            let (idx, by_hash) = log.inclusion_proof_by_hash(&leaves[m], n as u64).unwrap();
            assert_eq!((idx, &by_hash), (m as u64, &got));
            if n <= 40 {
                for bad in corruptions(&got) {
                    assert!(verify_inclusion(m as u64, n as u64, &leaves[m], &bad, &root).is_err());
                    assert!(!ref_verify_inclusion(m, n, leaves[m], &bad, root));
                }
                for (bm, bn) in [(m + 1, n), (m ^ 2, n), (m, n * 2), (m, n / 2)] {
                    if (bm, bn) != (m, n) && bm < bn && bn > 0 {
                        let fine = bn == n && bm < n && leaves[bm] == leaves[m];
                        if !fine && r.path(m, 0, n) == got {
                            assert!(
                                verify_inclusion(bm as u64, bn as u64, &leaves[m], &got, &root)
                                    .is_err(),
                                "index {bm} size {bn} accepted for ({m}, {n})"
                            );
                        }
                    }
                }
            }
        }
        for m in 0..=n {
            let old = r.mth(0, m);
            let got = log.consistency_proof(m as u64, n as u64).unwrap();
            let want = if m == 0 || m == n {
                vec![]
            } else {
                r.subproof(m, 0, n, true)
            };
            assert_eq!(got, want, "PROOF({m}, {n})");
            verify_consistency(m as u64, n as u64, &old, &root, &got).unwrap();
            assert!(
                ref_verify_consistency(m, n, old, root, &got),
                "ref PROOF({m}, {n})"
            );
            if n <= 40 && m > 0 && m < n {
                for bad in corruptions(&got) {
                    assert!(verify_consistency(m as u64, n as u64, &old, &root, &bad).is_err());
                    assert!(!ref_verify_consistency(m, n, old, root, &bad));
                }
                assert!(verify_consistency(m as u64, n as u64, &root, &old, &got).is_err());
                if m + 1 < n {
                    assert!(verify_consistency(m as u64 + 1, n as u64, &old, &root, &got).is_err());
                }
                assert!(verify_consistency(m as u64, n as u64 * 2, &old, &root, &got).is_err());
            }
        }
    }
    // Out of range: a client error, never a panic.
    for e in [
        log.inclusion_proof(N, N).unwrap_err(),
        log.inclusion_proof(0, N + 1).unwrap_err(),
        log.inclusion_proof(0, 0).unwrap_err(),
        log.consistency_proof(5, 4).unwrap_err(),
        log.consistency_proof(1, N + 1).unwrap_err(),
        log.root(N + 1).unwrap_err(),
        log.entries(N - 1, N + 1).unwrap_err(),
        log.entries(5, 4).unwrap_err(),
        log.inclusion_proof_by_hash(&leaves[10], 10).unwrap_err(),
    ] {
        assert_eq!(e.code, ErrorCode::ProofOutOfRange, "{e}");
        assert_eq!(mpcp_pa::api::error::http_status(e.code), 400);
    }
    assert_eq!(
        log.inclusion_proof_by_hash(&[0u8; 32], N).unwrap_err().code,
        ErrorCode::NotFound
    );
}

fn hx(s: &str) -> Hash {
    hex::decode(s).unwrap().try_into().unwrap()
}

// RFC 6962 test vectors as published by transparency-dev/merkle (testonly/constants.go and
// proof/verify_test.go): leaf inputs, roots for sizes 1..=8, and proofs (1-based leaf numbers
// in the source, 0-based indices here).
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
fn rfc6962_vectors() {
    let mut t = MemoryTree::new();
    for (i, l) in LEAVES.iter().enumerate() {
        t.push(leaf_hash(&hex::decode(l).unwrap()));
        assert_eq!(t.root(), hx(ROOTS[i]));
    }
    let inclusion: [(u64, u64, &[&str]); 5] = [
        (
            0,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            8,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            3,
            &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
        ),
        (
            1,
            5,
            &[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
        (0, 1, &[]),
    ];
    for (index, size, want) in inclusion {
        let want: Vec<Hash> = want.iter().map(|s| hx(s)).collect();
        let got = inclusion_proof(&t, index, size).unwrap();
        assert_eq!(got, want, "inclusion ({index}, {size})");
        let leaf = leaf_hash(&hex::decode(LEAVES[index as usize]).unwrap());
        verify_inclusion(index, size, &leaf, &got, &hx(ROOTS[size as usize - 1])).unwrap();
    }
    let consistency: [(u64, u64, &[&str]); 5] = [
        (1, 1, &[]),
        (
            1,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            5,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
        (
            6,
            7,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];
    for (m, n, want) in consistency {
        let want: Vec<Hash> = want.iter().map(|s| hx(s)).collect();
        let got = consistency_proof(&t, m, n).unwrap();
        assert_eq!(got, want, "consistency ({m}, {n})");
        verify_consistency(
            m,
            n,
            &hx(ROOTS[m as usize - 1]),
            &hx(ROOTS[n as usize - 1]),
            &got,
        )
        .unwrap();
    }
    // From the same source: sizes that are always consistent, and time travel.
    let (a, b) = ([1u8; 32], [2u8; 32]);
    verify_consistency(0, 0, &a, &a, &[]).unwrap();
    verify_consistency(0, 1, &a, &b, &[]).unwrap();
    assert!(verify_consistency(1, 1, &a, &b, &[]).is_err());
    assert!(verify_consistency(1, 0, &a, &b, &[]).is_err());
    assert!(verify_consistency(2, 1, &a, &b, &[]).is_err());
    assert!(verify_consistency(1, 2, &a, &b, &[]).is_err());
    assert!(verify_consistency(1, 1, &a, &a, &[merkle::empty_root()]).is_err());
    assert!(verify_inclusion(0, 0, &a, &[], &a).is_err());
    assert!(verify_inclusion(2, 1, &a, &[], &a).is_err());
}
