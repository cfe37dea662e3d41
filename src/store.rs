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

/// sled's page cache of the appliance, in bytes, unless configured otherwise: what sled keeps
/// in memory above its own indexes. sled's default (1 GiB) lets a busy appliance's resident
/// memory grow by about 3 MiB per 1,000 grants until it gets there (docs/performance.md,
/// "Memory").
pub const DEFAULT_CACHE_BYTES: u64 = 16 * 1024 * 1024;

impl Store {
    /// Opens (creating on first use) the database at `path` with the default page cache
    /// ([`DEFAULT_CACHE_BYTES`]).
    pub fn open(path: &Path) -> Result<Store> {
        Store::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// Opens (creating on first use) the database at `path`, its page cache bounded by
    /// `cache_bytes`.
    pub fn open_with_cache(path: &Path, cache_bytes: u64) -> Result<Store> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
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
