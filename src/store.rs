//! The appliance's embedded store: one sled database per data directory, opened once per
//! process and shared by every layer (key registry, audit log, service state). sled locks its
//! directory, so layers take [`Store`] clones instead of opening their own.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, ErrorCode, Result};
pub use crate::seams::store::{Record, RecordStore, Records};

/// Default free space the store keeps in reserve: writes of the audit log are refused (and
/// nothing is written) while the file system holding the store has less than this free, so
/// that sled never meets ENOSPC. sled latches its first I/O error for the life of the
/// process; refusing before the write is what lets a full disk clear without a restart.
pub const DEFAULT_RESERVE_BYTES: u64 = 8 << 20;

/// Bytes the store keeps allocated past the end of sled's log file (its runway). sled writes
/// at run time only into that file, at most a segment (512 KiB) past its end, so a commit
/// already past [`Store::check_space`] when another process takes the disk's last bytes
/// writes into blocks it holds, instead of meeting the ENOSPC that sled would latch.
/// [`Store::check_space`] tops it up once [`RUNWAY_SLACK_BYTES`] of it are used, and refuses
/// when it cannot.
pub const RUNWAY_BYTES: u64 = 8 << 20;

/// How much of the runway is used before it is topped up: small, so that a full disk is
/// refused soon after the runway is touched; not zero, so that most checks are one `fstat`.
pub const RUNWAY_SLACK_BYTES: u64 = 256 << 10;

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
    /// Audit log leaf hash -> big-endian index: written by stores before 2026-12-02, read
    /// only (the log now writes [`AUDIT_LEAF_BUCKETS`]).
    pub const AUDIT_LEAF_INDEX: &str = "audit/leaf-index";
    /// Audit log leaf index: two bytes of leaf hash -> records (`crate::audit::leaf_buckets`).
    pub const AUDIT_LEAF_BUCKETS: &str = "audit/leaf-buckets";
}

/// A handle on the shared sled database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    /// The database directory (None for a temporary store, which has no reserve check).
    path: Option<Arc<PathBuf>>,
    /// Free bytes [`Store::check_space`] requires; shared by every clone.
    reserve: Arc<AtomicU64>,
    /// sled's log file, kept allocated [`RUNWAY_BYTES`] past its end (None for a temporary
    /// store).
    runway: Option<Arc<Runway>>,
}

/// sled's log file, opened a second time to keep its runway allocated.
struct Runway {
    file: std::fs::File,
    /// Cleared once the file system says it cannot preallocate (the reserve still applies).
    supported: std::sync::atomic::AtomicBool,
}

impl Runway {
    fn open(dir: &Path) -> Result<Runway> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("db"))
            .map_err(|e| store_error("open log file", e))?;
        Ok(Runway {
            file,
            supported: std::sync::atomic::AtomicBool::new(true),
        })
    }

    /// Makes sure the runway, less its slack, is allocated past the file's end, allocating all
    /// of it when not: `STORE_ERROR` when the file system has no room for it.
    fn top_up(&self) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        if !self.supported.load(Ordering::Relaxed) {
            return Ok(());
        }
        let meta = self
            .file
            .metadata()
            .map_err(|e| store_error("stat log file", e))?;
        // st_blocks counts 512-byte units, including blocks allocated past the end.
        let allocated = meta.blocks().saturating_mul(512);
        if allocated >= meta.len().saturating_add(RUNWAY_BYTES - RUNWAY_SLACK_BYTES) {
            return Ok(());
        }
        match crate::os::preallocate(&self.file, meta.len(), RUNWAY_BYTES) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                self.supported.store(false, Ordering::Relaxed);
                tracing::warn!(
                    "the store's file system cannot preallocate; only the reserve keeps sled \
                     from meeting a full disk"
                );
                Ok(())
            }
            Err(e) => {
                tracing::error!(cause = %e, "store fault: the store's runway could not be allocated");
                Err(Error::new(
                    ErrorCode::StoreError,
                    format!(
                        "disk full: the store could not allocate its {} MiB runway ({e}; \
                         nothing was written)",
                        RUNWAY_BYTES >> 20
                    ),
                ))
            }
        }
    }
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
        let runway = Runway::open(path)?;
        Ok(Store {
            db,
            path: Some(Arc::new(path.to_path_buf())),
            reserve: Arc::new(AtomicU64::new(DEFAULT_RESERVE_BYTES)),
            runway: Some(Arc::new(runway)),
        })
    }

    /// A temporary database, removed on drop; for tests.
    pub fn temporary() -> Result<Store> {
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .map_err(|e| store_error("open", e))?;
        Ok(Store {
            db,
            path: None,
            reserve: Arc::new(AtomicU64::new(0)),
            runway: None,
        })
    }

    /// Sets the free space [`Store::check_space`] requires (for every clone of this store).
    pub fn set_reserve(&self, bytes: u64) {
        self.reserve.store(bytes, Ordering::Relaxed);
    }

    /// The free space [`Store::check_space`] requires.
    pub fn reserve(&self) -> u64 {
        self.reserve.load(Ordering::Relaxed)
    }

    /// Bytes available to the appliance on the file system holding the store (None for a
    /// temporary store, or when the file system cannot say).
    pub fn free_bytes(&self) -> Option<u64> {
        crate::os::free_bytes(self.path.as_deref()?)
    }

    /// `STORE_ERROR` when the store's runway ([`RUNWAY_BYTES`]) cannot be kept allocated, or
    /// the file system holding the store has less free space than the reserve. Writers that
    /// must not meet ENOSPC (the audit log) call it before writing: a refusal here writes
    /// nothing and clears by itself once space is freed.
    pub fn check_space(&self) -> Result<()> {
        if let Some(runway) = &self.runway {
            runway.top_up()?;
        }
        let reserve = self.reserve();
        if reserve == 0 {
            return Ok(());
        }
        match self.free_bytes() {
            Some(free) if free < reserve => {
                tracing::error!(
                    free_bytes = free,
                    reserve_bytes = reserve,
                    "store fault: disk below its reserve, writes refused"
                );
                Err(Error::new(
                    ErrorCode::StoreError,
                    format!(
                        "disk full: {free} bytes free on the store's file system, below the \
                         reserve of {reserve} (nothing was written)"
                    ),
                ))
            }
            _ => Ok(()),
        }
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
    let message = format!("store {what} failed: {e}");
    tracing::error!(cause = %message, "store fault");
    Error::new(ErrorCode::StoreError, message)
}

/// The sled store as a [`RecordStore`]: a keyspace is the sled tree of that name.
impl RecordStore for Store {
    fn get(&self, keyspace: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let value = self
            .tree(keyspace)?
            .get(key)
            .map_err(|e| store_error("read", e))?;
        Ok(value.map(|v| v.to_vec()))
    }

    fn contains(&self, keyspace: &str, key: &[u8]) -> Result<bool> {
        self.tree(keyspace)?
            .contains_key(key)
            .map_err(|e| store_error("read", e))
    }

    fn scan_prefix<'a>(&'a self, keyspace: &str, prefix: &[u8]) -> Result<Records<'a>> {
        let iter = self.tree(keyspace)?.scan_prefix(prefix).map(|item| {
            item.map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(|e| store_error("scan", e))
        });
        Ok(Box::new(iter))
    }
}

#[cfg(test)]
mod runway_tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn allocated_past_end(dir: &Path) -> i64 {
        let meta = std::fs::metadata(dir.join("db")).unwrap();
        (meta.blocks() * 512) as i64 - meta.len() as i64
    }

    #[test]
    fn the_check_keeps_the_runway_allocated_as_the_log_grows() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        store.set_reserve(0);
        store.check_space().unwrap();
        let want = (RUNWAY_BYTES - RUNWAY_SLACK_BYTES) as i64;
        assert!(allocated_past_end(tmp.path()) >= want);
        let tree = store.tree("t").unwrap();
        for i in 0u32..20_000 {
            tree.insert(i.to_be_bytes(), vec![7u8; 512]).unwrap();
            if i % 1000 == 0 {
                store.flush().unwrap();
                store.check_space().unwrap();
                assert!(allocated_past_end(tmp.path()) >= want, "after {i} writes");
            }
        }
    }
}

#[cfg(test)]
mod record_store_tests {
    use super::*;

    fn filled() -> Store {
        let store = Store::temporary().unwrap();
        let tree = store.tree("api/things").unwrap();
        for k in ["b/2", "a/1", "b/1", "c"] {
            tree.insert(k, format!("v-{k}").as_bytes()).unwrap();
        }
        store
            .tree("other")
            .unwrap()
            .insert("a/1", "elsewhere")
            .unwrap();
        store
    }

    fn keys(records: Records<'_>) -> Vec<String> {
        records
            .map(|r| String::from_utf8(r.unwrap().0).unwrap())
            .collect()
    }

    #[test]
    fn get_and_contains_read_one_keyspace() {
        let store = filled();
        let rs: &dyn RecordStore = &store;
        assert_eq!(rs.get("api/things", b"a/1").unwrap().unwrap(), b"v-a/1");
        assert_eq!(rs.get("other", b"a/1").unwrap().unwrap(), b"elsewhere");
        assert!(rs.get("api/things", b"zz").unwrap().is_none());
        assert!(rs.contains("api/things", b"c").unwrap());
        assert!(!rs.contains("api/things", b"zz").unwrap());
        assert!(!rs.contains("never/written", b"c").unwrap());
    }

    #[test]
    fn scans_are_in_key_order_and_honour_the_prefix() {
        let store = filled();
        let rs: &dyn RecordStore = &store;
        assert_eq!(
            keys(rs.scan("api/things").unwrap()),
            ["a/1", "b/1", "b/2", "c"]
        );
        assert_eq!(
            keys(rs.scan_prefix("api/things", b"b/").unwrap()),
            ["b/1", "b/2"]
        );
        assert!(keys(rs.scan_prefix("api/things", b"d").unwrap()).is_empty());
        assert!(keys(rs.scan("never/written").unwrap()).is_empty());
        let (k, v) = rs.scan("other").unwrap().next().unwrap().unwrap();
        assert_eq!(
            (k.as_slice(), v.as_slice()),
            (&b"a/1"[..], &b"elsewhere"[..])
        );
    }
}
