//! The format of the audit log's leaf index: which entry has a given leaf hash, for proofs
//! by hash. Entries are spread over at most 65,536 buckets by the first two bytes of their
//! leaf hash; a bucket holds one 12-byte record per entry: four more bytes of the hash and
//! the entry's index. A fixed number of keys keeps the store's in-memory page table from
//! growing with the log, which one random 32-byte key per entry did (docs/performance.md,
//! "Memory"). A record only names a candidate: the reader confirms it by hashing the entry,
//! so a damaged or colliding record can hide an entry but never point to the wrong one.

use super::merkle::Hash;

/// Bytes of one record: the hash fragment, then the index (big-endian).
pub const RECORD_BYTES: usize = 12;

/// The key of the bucket that holds `leaf`.
pub fn bucket_key(leaf: &Hash) -> [u8; 2] {
    [leaf[0], leaf[1]]
}

/// Appends the record of entry `index` with leaf hash `leaf` to its bucket's bytes.
pub fn push(bucket: &mut Vec<u8>, leaf: &Hash, index: u64) {
    bucket.extend_from_slice(&leaf[2..6]);
    bucket.extend_from_slice(&index.to_be_bytes());
}

/// The indices that bucket bytes name for `leaf`, oldest first; a trailing partial record
/// (never written by [`push`]) is ignored.
pub fn candidates<'a>(bucket: &'a [u8], leaf: &'a Hash) -> impl Iterator<Item = u64> + 'a {
    bucket
        .chunks_exact(RECORD_BYTES)
        .filter(move |r| r[..4] == leaf[2..6])
        .map(|r| {
            let mut i = [0u8; 8];
            i.copy_from_slice(&r[4..]);
            u64::from_be_bytes(i)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::merkle::leaf_hash;

    #[test]
    fn each_pushed_entry_is_a_candidate_for_its_own_hash_only() {
        let leaves: Vec<Hash> = (0u64..5000).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut buckets = std::collections::HashMap::<[u8; 2], Vec<u8>>::new();
        for (i, leaf) in leaves.iter().enumerate() {
            push(buckets.entry(bucket_key(leaf)).or_default(), leaf, i as u64);
        }
        for (i, leaf) in leaves.iter().enumerate() {
            let found: Vec<u64> = candidates(&buckets[&bucket_key(leaf)], leaf).collect();
            assert_eq!(found, [i as u64], "entry {i}");
        }
        let absent = leaf_hash(b"never appended");
        let none = buckets
            .get(&bucket_key(&absent))
            .cloned()
            .unwrap_or_default();
        assert_eq!(candidates(&none, &absent).count(), 0);
    }

    #[test]
    fn a_fragment_collision_yields_both_candidates_in_order() {
        let mut a = [9u8; 32];
        let b = a;
        a[31] = 1;
        let mut bucket = Vec::new();
        push(&mut bucket, &a, 7);
        push(&mut bucket, &b, 3);
        bucket.push(0xff); // a torn tail is not a record
        assert_eq!(candidates(&bucket, &a).collect::<Vec<_>>(), [7, 3]);
    }
}
