//! What the service keeps of what it stored or issued: its trees in the store, read helpers,
//! and the facts every artifact kind shares (owners, generated ids).

use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::error::{Error, ErrorCode, Result};
use crate::seams::RecordStore;
use crate::seams::store::Records;

/// Trees of what this PA stored or issued.
pub mod trees {
    /// policyHash -> canonical policy document.
    pub const POLICIES: &str = "api/policies";
    /// grantId -> grant record.
    pub const GRANTS: &str = "api/grants";
    /// allowlistId -> latest signed allowlist.
    pub const ALLOWLISTS: &str = "api/allowlists";
    /// bundleId -> signed trust bundle.
    pub const BUNDLES: &str = "api/bundles";
    /// allowlistId -> name of the issuer token that created the list (its owner).
    pub const ALLOWLIST_OWNERS: &str = "api/allowlist-owners";
}

/// The service's artifact records, read through the store seam ([`RecordStore`]) so that
/// another backend can stand behind them. Writes never go through here: they are side
/// writes of the audit append that records them.
#[derive(Clone)]
pub struct ArtifactStore {
    records: Arc<dyn RecordStore>,
}

impl std::fmt::Debug for ArtifactStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactStore").finish_non_exhaustive()
    }
}

impl ArtifactStore {
    /// Artifacts read from `records`.
    pub fn new(records: Arc<dyn RecordStore>) -> ArtifactStore {
        ArtifactStore { records }
    }

    /// The record `key` of `tree` ([`trees`]), if any.
    pub fn get(&self, tree: &str, key: &str) -> Result<Option<Vec<u8>>> {
        self.records.get(tree, key.as_bytes())
    }

    /// The record under the binary `key` of `tree`, if any.
    pub fn get_bytes(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.records.get(tree, key)
    }

    /// The records of `tree` whose key starts with `prefix`, in key order.
    pub fn scan_prefix(&self, tree: &str, prefix: &[u8]) -> Result<Records<'_>> {
        self.records.scan_prefix(tree, prefix)
    }

    /// Whether `tree` holds `key`.
    pub fn contains(&self, tree: &str, key: &str) -> Result<bool> {
        self.records.contains(tree, key.as_bytes())
    }

    /// The record `key` of `tree` as JSON; STORE_ERROR when it does not parse.
    pub fn get_json<T: DeserializeOwned>(&self, tree: &str, key: &str) -> Result<Option<T>> {
        match self.get(tree, key)? {
            None => Ok(None),
            Some(raw) => serde_json::from_slice(&raw).map(Some).map_err(|e| {
                Error::new(
                    ErrorCode::StoreError,
                    format!("corrupt record {key:?}: {e}"),
                )
            }),
        }
    }

    /// Every record of `tree`, in key order.
    pub fn scan(&self, tree: &str) -> Result<Records<'_>> {
        self.records.scan(tree)
    }

    /// How many records `tree` holds (reads them all: for tests and small trees).
    pub fn count(&self, tree: &str) -> Result<usize> {
        let mut n = 0;
        for r in self.scan(tree)? {
            r?;
            n += 1;
        }
        Ok(n)
    }
}

/// The refusal of a change to an artifact that `owner` (a token name, or nobody recorded)
/// created: 403 NOT_OWNER. It names the artifact the caller named, never the owner.
pub fn not_owner(what: &str, field: &str, owner: Option<&str>) -> Error {
    let why = match owner {
        Some(_) => "was issued by another issuer token",
        None => "records no issuing token (issued before owners were recorded)",
    };
    Error::field(
        ErrorCode::NotOwner,
        field,
        format!("{what} {why}; only its own issuer token may change it"),
    )
}

/// A random identifier `prefix-<16 hex>`.
pub fn random_id(prefix: &str) -> Result<String> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b)
        .map_err(|e| Error::new(ErrorCode::Internal, format!("system RNG failed: {e}")))?;
    Ok(format!("{prefix}-{}", hex::encode(b)))
}

/// Sets `members[id_member]` to a fresh [`random_id`] with `prefix` unless the request
/// named the artifact itself; a given id is left for the model to check.
pub fn id_or_random(
    members: &mut serde_json::Map<String, serde_json::Value>,
    id_member: &str,
    prefix: &str,
) -> Result<()> {
    if !members.contains_key(id_member) {
        members.insert(
            id_member.into(),
            serde_json::Value::String(random_id(prefix)?),
        );
    }
    Ok(())
}
