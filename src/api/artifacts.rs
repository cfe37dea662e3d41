//! What the service keeps of what it stored or issued: its trees in the store, read helpers,
//! and the facts every artifact kind shares (owners, generated ids).

use serde::de::DeserializeOwned;

use crate::error::{Error, ErrorCode, Result};
use crate::store::{Store, store_error};

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

/// The service's artifact trees.
#[derive(Debug, Clone)]
pub struct ArtifactStore {
    store: Store,
    /// Policies.
    pub policies: sled::Tree,
    /// Grants.
    pub grants: sled::Tree,
    /// Allowlists.
    pub allowlists: sled::Tree,
    /// Bundles.
    pub bundles: sled::Tree,
    /// Allowlist owners (see [`trees::ALLOWLIST_OWNERS`]).
    pub allowlist_owners: sled::Tree,
}

impl ArtifactStore {
    /// Opens the trees.
    pub fn open(store: &Store) -> Result<ArtifactStore> {
        Ok(ArtifactStore {
            store: store.clone(),
            policies: store.tree(trees::POLICIES)?,
            grants: store.tree(trees::GRANTS)?,
            allowlists: store.tree(trees::ALLOWLISTS)?,
            bundles: store.tree(trees::BUNDLES)?,
            allowlist_owners: store.tree(trees::ALLOWLIST_OWNERS)?,
        })
    }

    /// Makes every write durable.
    pub fn flush(&self) -> Result<()> {
        self.store.flush()
    }
}

/// Reads a JSON value from a tree.
pub fn get_json<T: DeserializeOwned>(tree: &sled::Tree, key: &str) -> Result<Option<T>> {
    match tree.get(key).map_err(|e| store_error("read", e))? {
        None => Ok(None),
        Some(raw) => serde_json::from_slice(&raw).map(Some).map_err(|e| {
            Error::new(
                ErrorCode::StoreError,
                format!("corrupt record {key:?}: {e}"),
            )
        }),
    }
}

/// Inserts `value` under `key` only if the key is absent; false when it exists.
pub fn insert_new(tree: &sled::Tree, key: &str, value: &[u8]) -> Result<bool> {
    tree.compare_and_swap(key, None as Option<&[u8]>, Some(value))
        .map_err(|e| store_error("write", e))
        .map(|r| r.is_ok())
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
