//! API tokens: bearer secrets, each bound to exactly one role.
//!
//! A token reads `mpcppa_<id>_<secret>`: `id` is 8 random bytes in hex and only locates the
//! record; `secret` is 32 random bytes, base64url. The store keeps the SHA-256 of the secret,
//! never the secret, and authentication compares hashes in constant time. The secret exists
//! in this process only inside [`Zeroizing`] buffers and is handed out once, at creation.
//! Creation and revocation are recorded through the [`EventSink`]; the audit log never sees
//! the secret.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sled::Transactional;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::clock::{Clock, format_rfc3339};
use crate::crypto::b64url_encode;
use crate::error::{Error, ErrorCode, Result};
use crate::events::{Actor, Event, EventSink};
use crate::store::{Store, store_error};

/// sled tree: token name -> [`TokenRecord`] (JSON).
pub const TREE_TOKENS: &str = "api/tokens";
/// sled tree: token id -> token name.
pub const TREE_TOKEN_IDS: &str = "api/token-ids";

const PREFIX: &str = "mpcppa_";

/// What a token may do. Exactly one per token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApiRole {
    /// Stores policies, issues and revokes grants, signs destination allowlists.
    Issuer,
    /// Signs trust bundles, rotates, revokes and destroys keys.
    SecurityOfficer,
    /// Reads the audit log.
    Auditor,
}

impl ApiRole {
    /// Every role.
    pub const ALL: [ApiRole; 3] = [ApiRole::Issuer, ApiRole::SecurityOfficer, ApiRole::Auditor];

    /// Wire / CLI name.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiRole::Issuer => "issuer",
            ApiRole::SecurityOfficer => "security-officer",
            ApiRole::Auditor => "auditor",
        }
    }

    /// Parses a role name.
    pub fn parse(s: &str) -> Result<ApiRole> {
        ApiRole::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::ConfigInvalid,
                    format!(
                        "unknown API role {s:?} (expected issuer, security-officer or auditor)"
                    ),
                )
            })
    }
}

impl fmt::Display for ApiRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Token name.
    pub name: String,
    /// Token role.
    pub role: ApiRole,
}

impl Principal {
    /// The principal as the audit log names it.
    pub fn actor(&self) -> Actor {
        Actor {
            name: self.name.clone(),
            role: self.role.as_str().to_string(),
        }
    }
}

/// A stored token. Holds the secret's hash only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    /// Unique name.
    pub name: String,
    /// The one role.
    pub role: ApiRole,
    /// Public locator (hex).
    pub id: String,
    /// SHA-256 of the 32 secret bytes (hex).
    pub secret_sha256: String,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Revocation time, once revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

/// A freshly created token. The secret is shown once and wiped on drop; Debug hides it.
pub struct NewToken {
    /// Token name.
    pub name: String,
    /// Token role.
    pub role: ApiRole,
    /// The full bearer value `mpcppa_<id>_<secret>`.
    pub secret: Zeroizing<String>,
}

impl fmt::Debug for NewToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewToken")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The token table in the shared store.
#[derive(Debug, Clone)]
pub struct TokenStore {
    store: Store,
    by_name: sled::Tree,
    by_id: sled::Tree,
}

/// Valid token names: 1..=64 of `[A-Za-z0-9._-]`.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::field(
            ErrorCode::SchemaInvalid,
            "name",
            "token name must be 1-64 characters of A-Z a-z 0-9 . _ -",
        ))
    }
}

fn random<const N: usize>() -> Result<Zeroizing<[u8; N]>> {
    let mut buf = Zeroizing::new([0u8; N]);
    getrandom::fill(buf.as_mut_slice())
        .map_err(|e| Error::new(ErrorCode::Internal, format!("system RNG failed: {e}")))?;
    Ok(buf)
}

fn unauthorized() -> Error {
    Error::new(
        ErrorCode::Unauthorized,
        "missing, unknown or revoked API token",
    )
}

impl TokenStore {
    /// Opens the token trees of `store`.
    pub fn open(store: &Store) -> Result<TokenStore> {
        Ok(TokenStore {
            store: store.clone(),
            by_name: store.tree(TREE_TOKENS)?,
            by_id: store.tree(TREE_TOKEN_IDS)?,
        })
    }

    /// The record of the token named `name`, if any.
    pub fn get(&self, name: &str) -> Result<Option<TokenRecord>> {
        let Some(raw) = self
            .by_name
            .get(name)
            .map_err(|e| store_error("read token", e))?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&raw)
            .map(Some)
            .map_err(|e| Error::new(ErrorCode::StoreError, format!("corrupt token record: {e}")))
    }

    /// Every token (hashes included, secrets never), sorted by name.
    pub fn list(&self) -> Result<Vec<TokenRecord>> {
        let mut out = Vec::new();
        for item in self.by_name.iter() {
            let (_, raw) = item.map_err(|e| store_error("read token", e))?;
            out.push(serde_json::from_slice(&raw).map_err(|e| {
                Error::new(ErrorCode::StoreError, format!("corrupt token record: {e}"))
            })?);
        }
        Ok(out)
    }

    /// Whether at least one unrevoked token exists.
    pub fn any_active(&self) -> Result<bool> {
        Ok(self.list()?.iter().any(|t| t.revoked_at.is_none()))
    }

    /// Creates a token. The name must be new (revoked names stay taken, so the audit log's
    /// names stay unambiguous). The record is written, the event recorded durably, and only
    /// then is the secret returned; if the event cannot be recorded the record is removed.
    pub fn create(
        &self,
        name: &str,
        role: ApiRole,
        actor: &Actor,
        sink: &dyn EventSink,
        clock: &dyn Clock,
    ) -> Result<NewToken> {
        validate_name(name)?;
        let id = hex::encode(*random::<8>()?);
        let secret = random::<32>()?;
        let record = TokenRecord {
            name: name.to_string(),
            role,
            id: id.clone(),
            secret_sha256: hex::encode(Sha256::digest(secret.as_slice())),
            created_at: format_rfc3339(clock.now()),
            revoked_at: None,
        };
        let raw = serde_json::to_vec(&record)
            .map_err(|e| Error::new(ErrorCode::Internal, format!("token record: {e}")))?;
        let inserted = (&self.by_name, &self.by_id)
            .transaction(|(names, ids)| {
                if names.get(name)?.is_some() || ids.get(id.as_bytes())?.is_some() {
                    return Ok(false);
                }
                names.insert(name, raw.as_slice())?;
                ids.insert(id.as_bytes(), name)?;
                Ok(true)
            })
            .map_err(|e: sled::transaction::TransactionError<()>| {
                store_error("write token", format!("{e:?}"))
            })?;
        if !inserted {
            return Err(Error::field(
                ErrorCode::Conflict,
                "name",
                format!("a token named {name:?} already exists"),
            ));
        }
        let event = Event::TokenCreated {
            token_name: name.to_string(),
            token_role: role.as_str().to_string(),
        };
        if let Err(e) = sink.record(actor, event) {
            self.remove(name, &id)?;
            return Err(Error::new(
                ErrorCode::AuditUnavailable,
                format!(
                    "token not created: audit entry could not be written ({})",
                    e.code
                ),
            ));
        }
        self.store.flush()?;
        let mut bearer = Zeroizing::new(String::with_capacity(PREFIX.len() + 16 + 1 + 43));
        bearer.push_str(PREFIX);
        bearer.push_str(&id);
        bearer.push('_');
        bearer.push_str(&b64url_encode(secret.as_slice()));
        Ok(NewToken {
            name: name.to_string(),
            role,
            secret: bearer,
        })
    }

    fn remove(&self, name: &str, id: &str) -> Result<()> {
        (&self.by_name, &self.by_id)
            .transaction(|(names, ids)| {
                names.remove(name)?;
                ids.remove(id.as_bytes())?;
                Ok(())
            })
            .map_err(|e: sled::transaction::TransactionError<()>| {
                store_error("remove token", format!("{e:?}"))
            })
    }

    /// Creates the first security-officer token, only when no security-officer token has
    /// ever been created. `Ok(None)` when one exists.
    pub fn bootstrap(
        &self,
        actor: &Actor,
        sink: &dyn EventSink,
        clock: &dyn Clock,
    ) -> Result<Option<NewToken>> {
        if self
            .list()?
            .iter()
            .any(|t| t.role == ApiRole::SecurityOfficer)
        {
            return Ok(None);
        }
        self.create(
            "security-officer",
            ApiRole::SecurityOfficer,
            actor,
            sink,
            clock,
        )
        .map(Some)
    }

    /// Revokes a token by name. The event is recorded first (an audit outage refuses the
    /// revocation rather than leaving it unrecorded); revoking twice is CONFLICT and an
    /// unknown name NOT_FOUND.
    pub fn revoke(
        &self,
        name: &str,
        actor: &Actor,
        sink: &dyn EventSink,
        clock: &dyn Clock,
    ) -> Result<()> {
        let mut record = self.get(name)?.ok_or_else(|| {
            Error::field(
                ErrorCode::NotFound,
                "name",
                format!("no token named {name:?}"),
            )
        })?;
        if record.revoked_at.is_some() {
            return Err(Error::field(
                ErrorCode::Conflict,
                "name",
                format!("token {name:?} is already revoked"),
            ));
        }
        sink.record(
            actor,
            Event::TokenRevoked {
                token_name: name.to_string(),
            },
        )
        .map_err(|e| {
            Error::new(
                ErrorCode::AuditUnavailable,
                format!(
                    "token not revoked: audit entry could not be written ({})",
                    e.code
                ),
            )
        })?;
        record.revoked_at = Some(format_rfc3339(clock.now()));
        let raw = serde_json::to_vec(&record)
            .map_err(|e| Error::new(ErrorCode::Internal, format!("token record: {e}")))?;
        self.by_name
            .insert(name, raw)
            .map_err(|e| store_error("write token", e))?;
        self.store.flush()
    }

    /// Authenticates a presented bearer value. Every failure is the same UNAUTHORIZED, and
    /// an unknown id still costs one hash comparison, so the answer says nothing about which
    /// part was wrong.
    pub fn authenticate(&self, presented: &str) -> Result<Principal> {
        let rest = presented.strip_prefix(PREFIX).ok_or_else(unauthorized)?;
        let (id, secret_b64) = rest.split_once('_').ok_or_else(unauthorized)?;
        let secret = Zeroizing::new(
            URL_SAFE_NO_PAD
                .decode(secret_b64)
                .map_err(|_| unauthorized())?,
        );
        if secret.len() != 32 {
            return Err(unauthorized());
        }
        let presented_hash: [u8; 32] = Sha256::digest(secret.as_slice()).into();
        let record = match self
            .by_id
            .get(id.as_bytes())
            .map_err(|e| store_error("read token", e))?
        {
            Some(name) => {
                let name = String::from_utf8_lossy(&name).into_owned();
                self.get(&name)?
            }
            None => None,
        };
        let stored: [u8; 32] = record
            .as_ref()
            .and_then(|r| hex::decode(&r.secret_sha256).ok())
            .and_then(|h| h.try_into().ok())
            .unwrap_or([0u8; 32]);
        let matches: bool = stored.ct_eq(&presented_hash).into();
        match record {
            Some(r) if matches && r.revoked_at.is_none() && r.id == id => Ok(Principal {
                name: r.name,
                role: r.role,
            }),
            _ => Err(unauthorized()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::events::MemorySink;

    struct FailingSink;
    impl EventSink for FailingSink {
        fn record(&self, _: &Actor, _: Event) -> Result<u64> {
            Err(Error::new(ErrorCode::AuditUnavailable, "down"))
        }
    }

    #[test]
    fn create_authenticate_revoke() {
        let store = Store::temporary().unwrap();
        let tokens = TokenStore::open(&store).unwrap();
        let sink = MemorySink::default();
        let t = tokens
            .create("ops", ApiRole::Issuer, &Actor::cli(), &sink, &SystemClock)
            .unwrap();
        assert!(!format!("{t:?}").contains(t.secret.as_str()));
        let p = tokens.authenticate(&t.secret).unwrap();
        assert_eq!((p.name.as_str(), p.role), ("ops", ApiRole::Issuer));
        // Hash only at rest.
        let rec = &tokens.list().unwrap()[0];
        let secret_part = t.secret.splitn(3, '_').nth(2).unwrap();
        assert!(!serde_json::to_string(rec).unwrap().contains(secret_part));
        // Tampering with any part fails the same way.
        let mut bad = t.secret.to_string();
        bad.pop();
        bad.push(if t.secret.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(
            tokens.authenticate(&bad).unwrap_err().code,
            ErrorCode::Unauthorized
        );
        assert_eq!(
            tokens.authenticate("Bearer x").unwrap_err().code,
            ErrorCode::Unauthorized
        );
        let other_id = t.secret.replacen(&rec.id, "0000000000000000", 1);
        assert_eq!(
            tokens.authenticate(&other_id).unwrap_err().code,
            ErrorCode::Unauthorized
        );
        // Names are unique, even after revocation.
        let dup = tokens.create("ops", ApiRole::Auditor, &Actor::cli(), &sink, &SystemClock);
        assert_eq!(dup.unwrap_err().code, ErrorCode::Conflict);
        tokens
            .revoke("ops", &Actor::cli(), &sink, &SystemClock)
            .unwrap();
        assert_eq!(
            tokens.authenticate(&t.secret).unwrap_err().code,
            ErrorCode::Unauthorized
        );
        let again = tokens.revoke("ops", &Actor::cli(), &sink, &SystemClock);
        assert_eq!(again.unwrap_err().code, ErrorCode::Conflict);
        let actions: Vec<_> = sink.events().into_iter().map(|(_, e)| e).collect();
        assert_eq!(
            actions,
            vec![
                Event::TokenCreated {
                    token_name: "ops".into(),
                    token_role: "issuer".into()
                },
                Event::TokenRevoked {
                    token_name: "ops".into()
                },
            ]
        );
    }

    #[test]
    fn audit_failure_creates_and_revokes_nothing() {
        let store = Store::temporary().unwrap();
        let tokens = TokenStore::open(&store).unwrap();
        let e = tokens
            .create(
                "x",
                ApiRole::Auditor,
                &Actor::cli(),
                &FailingSink,
                &SystemClock,
            )
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::AuditUnavailable);
        assert!(tokens.list().unwrap().is_empty());
        let sink = MemorySink::default();
        let t = tokens
            .create("x", ApiRole::Auditor, &Actor::cli(), &sink, &SystemClock)
            .unwrap();
        let e = tokens
            .revoke("x", &Actor::cli(), &FailingSink, &SystemClock)
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::AuditUnavailable);
        assert!(tokens.authenticate(&t.secret).is_ok());
    }

    #[test]
    fn bootstrap_only_once() {
        let store = Store::temporary().unwrap();
        let tokens = TokenStore::open(&store).unwrap();
        let sink = MemorySink::default();
        let t = tokens
            .bootstrap(&Actor::cli(), &sink, &SystemClock)
            .unwrap()
            .unwrap();
        assert_eq!(
            tokens.authenticate(&t.secret).unwrap().role,
            ApiRole::SecurityOfficer
        );
        assert!(
            tokens
                .bootstrap(&Actor::cli(), &sink, &SystemClock)
                .unwrap()
                .is_none()
        );
        assert!(validate_name("a b").is_err());
        assert!(ApiRole::parse("admin").is_err());
    }
}
