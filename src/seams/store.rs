//! The store seam: named keyspaces of records, read by key and scanned in key order.
//!
//! [`RecordStore`] is what the service reads its records through, so that a second backend
//! (PostgreSQL, say) can stand where the sled store (`crate::store::Store`) stands today.
//! It has no write methods on purpose: every durable write of the service happens as a side
//! write of an audit append ([`super::audit_sink::SideWrites`]), committed atomically with
//! its audit entry, and a backend provides writes through its audit sink.

use crate::error::Result;

/// One stored record: its key and its value.
pub type Record = (Vec<u8>, Vec<u8>);

/// Records in ascending byte order of their keys, each read possibly failing.
pub type Records<'a> = Box<dyn Iterator<Item = Result<Record>> + Send + 'a>;

/// Read access to named keyspaces (sled trees, SQL tables, ...). Keys and values are opaque
/// bytes; a keyspace never written to is empty. Errors are `STORE_ERROR`. Blocking; async
/// callers run it off the runtime.
pub trait RecordStore: Send + Sync {
    /// The value stored under `key` in `keyspace`, or `None`.
    fn get(&self, keyspace: &str, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Whether `keyspace` holds `key`. Agrees with [`RecordStore::get`]; backends may answer
    /// without reading the value.
    fn contains(&self, keyspace: &str, key: &[u8]) -> Result<bool> {
        Ok(self.get(keyspace, key)?.is_some())
    }

    /// Every record of `keyspace` whose key starts with `prefix`, in ascending byte order of
    /// the keys (an empty prefix: every record).
    fn scan_prefix<'a>(&'a self, keyspace: &str, prefix: &[u8]) -> Result<Records<'a>>;

    /// Every record of `keyspace`, in ascending byte order of the keys.
    fn scan<'a>(&'a self, keyspace: &str) -> Result<Records<'a>> {
        self.scan_prefix(keyspace, &[])
    }
}
