//! The appliance's embedded store: one sled database per data directory, opened once per
//! process and shared by every layer (key registry, audit log, service state). sled locks its
//! directory, so layers take [`Store`] clones instead of opening their own.

use std::path::Path;

use crate::error::{Error, ErrorCode, Result};

/// Names of the sled trees, in one place so layers cannot collide.
pub mod trees {
    /// Key registry: kid -> key record.
    pub const KEYS: &str = "keys";
    /// Key registry: role -> kid of the role's active key.
    pub const KEYS_ACTIVE: &str = "keys/active";
    /// Audit log entries: big-endian index -> entry bytes.
    pub const AUDIT_ENTRIES: &str = "audit/entries";
    /// Audit log Merkle nodes.
    pub const AUDIT_NODES: &str = "audit/nodes";
    /// Audit log checkpoints.
    pub const AUDIT_CHECKPOINTS: &str = "audit/checkpoints";
    /// Audit log metadata (size, origin).
    pub const AUDIT_META: &str = "audit/meta";
    /// Audit log leaf hash -> big-endian index.
    pub const AUDIT_LEAF_INDEX: &str = "audit/leaf-index";
}

/// The sled database's directory inside a data directory (`<data-dir>/store`).
pub fn store_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("store")
}

/// A handle on the shared sled database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating on first use) the database at `path`.
    pub fn open(path: &Path) -> Result<Store> {
        let db = sled::Config::new()
            .path(path)
            .open()
            .map_err(|e| store_error("open", e))?;
        Ok(Store { db })
    }

    /// A temporary database, removed on drop; for tests.
    pub fn temporary() -> Result<Store> {
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .map_err(|e| store_error("open", e))?;
        Ok(Store { db })
    }

    /// The named tree.
    pub fn tree(&self, name: &str) -> Result<sled::Tree> {
        self.db
            .open_tree(name)
            .map_err(|e| store_error("open tree", e))
    }

    /// The underlying database (for transactions across trees).
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Makes every write so far durable.
    pub fn flush(&self) -> Result<()> {
        self.db
            .flush()
            .map(|_| ())
            .map_err(|e| store_error("flush", e))
    }
}

/// Maps a sled error to the appliance error (the single place that does so).
pub fn store_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::StoreError, format!("store {what} failed: {e}"))
}
