//! What "changes nothing" means, measured: every sled tree of the harness's store (entry
//! count and a digest of every key and value), the audit log's size, and the number of token
//! objects in the development HSM.
//!
//! The token-object count is process-wide (all harnesses of a process share the tokens), so
//! compare snapshots only in a process that runs one harness at a time: a test that takes
//! snapshots runs in a process of its own (`kit::child::own_process!`).

use std::collections::BTreeMap;
use std::fmt;

use sha2::{Digest, Sha256};

use super::{Harness, hsm_dir};

/// One tree: entries and the SHA-256 over every (key, value), in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeState {
    pub entries: usize,
    pub digest: String,
}

/// The observable state of a harness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub trees: BTreeMap<String, TreeState>,
    pub audit_size: u64,
    pub token_objects: usize,
}

impl Snapshot {
    /// Takes a snapshot of `h`.
    pub fn of(h: &Harness) -> Snapshot {
        let db = h.store.db();
        let mut trees = BTreeMap::new();
        for name in db.tree_names() {
            let tree = db.open_tree(&name).unwrap();
            let mut hash = Sha256::new();
            let mut entries = 0;
            for item in tree.iter() {
                let (k, v) = item.unwrap();
                // Length-prefixed so entries cannot run into each other.
                for part in [&k[..], &v[..]] {
                    hash.update((part.len() as u64).to_be_bytes());
                    hash.update(part);
                }
                entries += 1;
            }
            trees.insert(
                String::from_utf8_lossy(&name).into_owned(),
                TreeState {
                    entries,
                    digest: hex::encode(hash.finalize()),
                },
            );
        }
        Snapshot {
            trees,
            audit_size: h.audit.size(),
            token_objects: token_objects(),
        }
    }

    /// What differs from `other`, one line per difference (empty when equal).
    pub fn diff(&self, other: &Snapshot) -> Vec<String> {
        let mut out = Vec::new();
        let names: std::collections::BTreeSet<_> =
            self.trees.keys().chain(other.trees.keys()).collect();
        for name in names {
            let (a, b) = (self.trees.get(name), other.trees.get(name));
            if a != b {
                out.push(format!("tree {name:?}: {a:?} -> {b:?}"));
            }
        }
        if self.audit_size != other.audit_size {
            out.push(format!(
                "audit log size {} -> {}",
                self.audit_size, other.audit_size
            ));
        }
        if self.token_objects != other.token_objects {
            out.push(format!(
                "token objects {} -> {}",
                self.token_objects, other.token_objects
            ));
        }
        out
    }
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, t) in &self.trees {
            writeln!(f, "{name}: {} entries", t.entries)?;
        }
        write!(
            f,
            "audit log: {}, token objects: {}",
            self.audit_size, self.token_objects
        )
    }
}

/// Token objects (SoftHSM2 `*.object` files) in the development tokens.
pub fn token_objects() -> usize {
    fn walk(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| {
                if p.is_dir() {
                    walk(&p)
                } else {
                    usize::from(p.extension().is_some_and(|x| x == "object"))
                }
            })
            .sum()
    }
    walk(&mpcp_pa::app::DataDir::new(hsm_dir()).tokens())
}
