//! API tokens: bearer secrets, each bound to exactly one role.
//!
//! A token reads `mpcppa_<id>_<secret>`: `id` is 8 random bytes in hex and only locates the
//! record; `secret` is 32 random bytes, base64url. The store keeps the SHA-256 of the secret,
//! never the secret, and authentication compares hashes in constant time. The secret exists
//! in this process only inside [`Zeroizing`] buffers and is handed out once, at creation.
//!
//! Every change (create, bootstrap, revoke) is ONE durable write: the record change and its
//! audit event (`token_created` / `token_revoked`, which never carry the secret) are
//! committed as a single append of the [`AuditSink`] (see [`crate::audit::append`]), the
//! record writes conditional on what was read. After a crash the log holds the entry and the
//! store the change, or neither: no token exists or is revoked without its entry, and no
//! entry describes a change that did not happen. A change can be prepared ([`TokenChange`])
//! and committed by the caller with writes of its own (the service adds the idempotency
//! record of its response).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::audit::{AuditSink, SideWrites};
use crate::clock::{Clock, format_rfc3339};
use crate::crypto::b64url_encode;
use crate::error::{Error, ErrorCode, Result};
use crate::events::{Actor, Event};
use crate::store::{Store, store_error};

/// sled tree: token name -> [`TokenRecord`] (JSON).
pub const TREE_TOKENS: &str = "api/tokens";
/// sled tree: token id -> token name.
pub const TREE_TOKEN_IDS: &str = "api/token-ids";

/// How every API token begins.
pub const TOKEN_PREFIX: &str = "mpcppa_";
const PREFIX: &str = TOKEN_PREFIX;

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
    /// Asks for scoped authorization receipts (an MCP gateway or agent runtime).
    ReceiptRequester,
    /// Consumes receipts and reports outcomes for the audiences (MCP providers) its token
    /// is bound to.
    ReceiptConsumer,
    /// Reads the metrics (`GET /metrics`) and nothing else: the token a Prometheus server
    /// holds, which then cannot read the audit log.
    Monitoring,
}

impl ApiRole {
    /// Every role.
    pub const ALL: [ApiRole; 6] = [
        ApiRole::Issuer,
        ApiRole::SecurityOfficer,
        ApiRole::Auditor,
        ApiRole::ReceiptRequester,
        ApiRole::ReceiptConsumer,
        ApiRole::Monitoring,
    ];

    /// Wire / CLI name.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiRole::Issuer => "issuer",
            ApiRole::SecurityOfficer => "security-officer",
            ApiRole::Auditor => "auditor",
            ApiRole::ReceiptRequester => "receipt-requester",
            ApiRole::ReceiptConsumer => "receipt-consumer",
            ApiRole::Monitoring => "monitoring",
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
                        "unknown API role {s:?} (expected issuer, security-officer, auditor, \
                         receipt-requester, receipt-consumer or monitoring)"
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
    /// The audiences a receipt-consumer token serves (empty for every other role).
    pub audiences: Vec<String>,
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

/// Most audiences one receipt-consumer token may serve.
pub const MAX_AUDIENCES: usize = 32;

/// Whether `s` is an audience name: 1 to 256 printable ASCII characters without spaces
/// (a provider URI or name, compared exactly).
pub fn is_audience_name(s: &str) -> bool {
    (1..=256).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic())
}

fn validate_audiences(role: ApiRole, audiences: &[String]) -> Result<()> {
    let bad = |m: String| Error::field(ErrorCode::SchemaInvalid, "audiences", m);
    if role != ApiRole::ReceiptConsumer {
        if audiences.is_empty() {
            return Ok(());
        }
        return Err(bad(format!(
            "only receipt-consumer tokens are bound to audiences, not {role} tokens"
        )));
    }
    if audiences.is_empty() || audiences.len() > MAX_AUDIENCES {
        return Err(bad(format!(
            "a receipt-consumer token serves 1 to {MAX_AUDIENCES} audiences"
        )));
    }
    for (i, a) in audiences.iter().enumerate() {
        if !is_audience_name(a) {
            return Err(bad(format!(
                "audiences[{i}] must be 1 to 256 printable ASCII characters without spaces"
            )));
        }
        if audiences[..i].contains(a) {
            return Err(bad(format!("audience {a:?} is listed twice")));
        }
    }
    Ok(())
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
    /// The audiences a receipt-consumer token serves (empty for every other role).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
}

impl TokenRecord {
    /// The record as stored (JSON).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self)
            .map_err(|e| Error::new(ErrorCode::Internal, format!("token record: {e}")))
    }

    /// A stored record (STORE_ERROR if corrupt).
    pub fn from_bytes(raw: &[u8]) -> Result<TokenRecord> {
        serde_json::from_slice(raw)
            .map_err(|e| Error::new(ErrorCode::StoreError, format!("corrupt token record: {e}")))
    }
}

/// A freshly created token. The secret is shown once and wiped on drop; Debug hides it.
pub struct NewToken {
    /// Token name.
    pub name: String,
    /// Token role.
    pub role: ApiRole,
    /// Creation time (RFC 3339), as stored in its record.
    pub created_at: String,
    /// The full bearer value `mpcppa_<id>_<secret>`.
    pub secret: Zeroizing<String>,
}

impl fmt::Debug for NewToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewToken")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("created_at", &self.created_at)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// A token change that passed every check and is not yet committed: what it yields, the
/// audit event that records it, and the conditional writes of its records, to be committed as
/// ONE append of an [`AuditSink`] together with any writes the caller adds to `writes`.
/// Nothing is changed until that append succeeds; if a precondition no longer holds (the
/// name was taken, the record changed), the append is refused with the change's own error
/// and nothing of it is written.
#[must_use = "a prepared token change does nothing until it is committed"]
#[derive(Debug)]
pub struct TokenChange<T> {
    /// What the change yields once committed (the new token, or the record as it will be
    /// stored).
    pub outcome: T,
    /// Who is responsible.
    pub actor: Actor,
    /// The audit event describing the change (never the secret).
    pub event: Event,
    /// The record writes (each conditional on what was read).
    pub writes: SideWrites,
    /// What an audit outage means for the caller ("token not created", ...).
    refused: &'static str,
}

impl<T> TokenChange<T> {
    /// Commits the change as one append of `sink`, waiting on this thread (the console and
    /// blocking tasks; never an async task). Returns the outcome once the entry and the
    /// records are durable; otherwise nothing of the change is stored and the error is the
    /// refused precondition's (CONFLICT, ...) or AUDIT_UNAVAILABLE.
    pub fn commit(self, sink: &dyn AuditSink) -> Result<T> {
        let refused = self.refused;
        sink.append(&self.actor, self.event, self.writes)
            .wait()
            .map_err(|e| audit_refusal(refused, e))?;
        Ok(self.outcome)
    }
}

/// A commit failure as the caller sees it: an audit outage says the change did not happen.
fn audit_refusal(refused: &str, e: Error) -> Error {
    if e.code == ErrorCode::AuditUnavailable {
        Error::new(
            ErrorCode::AuditUnavailable,
            format!(
                "{refused}: audit entry could not be written ({})",
                e.message
            ),
        )
    } else {
        e
    }
}

fn name_taken(name: &str) -> Error {
    Error::field(
        ErrorCode::Conflict,
        "name",
        format!("a token named {name:?} already exists"),
    )
}

fn already_revoked(name: &str) -> Error {
    Error::field(
        ErrorCode::Conflict,
        "name",
        format!("token {name:?} is already revoked"),
    )
}

fn last_officer(name: &str) -> Error {
    Error::field(
        ErrorCode::LastOfficer,
        "name",
        format!(
            "token {name:?} is the last active security-officer token; create another \
             security-officer token first"
        ),
    )
}

/// What a revocation does when it would leave no active security-officer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastOfficer {
    /// Refuse with LAST_OFFICER (the API, and the console by default).
    Refuse,
    /// Revoke anyway: the console's break-glass (`tokens revoke --allow-no-officer`); the
    /// console can always create a new officer token.
    Allow,
}

/// The token table in the shared store.
#[derive(Debug, Clone)]
pub struct TokenStore {
    by_name: sled::Tree,
    by_id: sled::Tree,
}

/// Valid token names: the identifier rule of [`crate::model::check_identifier`] (1..=46 of
/// `[A-Za-z0-9._-]`, starting with a letter or digit), checked when a token is created.
/// Tokens created under the earlier rule (up to 64 bytes, any first character) keep working:
/// authentication and revocation look names up and do not re-check them.
pub fn validate_name(name: &str) -> Result<()> {
    crate::model::check_identifier(name, "name")
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
        TokenRecord::from_bytes(&raw).map(Some)
    }

    /// Every token (hashes included, secrets never), sorted by name.
    pub fn list(&self) -> Result<Vec<TokenRecord>> {
        let mut out = Vec::new();
        for item in self.by_name.iter() {
            let (_, raw) = item.map_err(|e| store_error("read token", e))?;
            out.push(TokenRecord::from_bytes(&raw)?);
        }
        Ok(out)
    }

    /// Whether at least one unrevoked token exists.
    pub fn any_active(&self) -> Result<bool> {
        Ok(self.list()?.iter().any(|t| t.revoked_at.is_none()))
    }

    /// Prepares the creation of a token: checks the name, draws id and secret, and returns
    /// the [`TokenChange`] that creates it (its record and id index as `insert_new` side
    /// writes of its `token_created` entry). Nothing is stored until that change commits; a
    /// name already used (revoked names stay taken, so the audit log's names stay
    /// unambiguous) refuses the commit with CONFLICT on `name`, also when another creation
    /// took the name after this check.
    pub fn prepare_create(
        &self,
        name: &str,
        role: ApiRole,
        actor: &Actor,
        clock: &dyn Clock,
    ) -> Result<TokenChange<NewToken>> {
        self.prepare_create_for(name, role, &[], actor, clock)
    }

    /// [`TokenStore::prepare_create`] for a token bound to `audiences`: required (1 to
    /// [`MAX_AUDIENCES`] distinct names) for a receipt consumer, refused for every other
    /// role (SCHEMA_INVALID at `audiences`).
    pub fn prepare_create_for(
        &self,
        name: &str,
        role: ApiRole,
        audiences: &[String],
        actor: &Actor,
        clock: &dyn Clock,
    ) -> Result<TokenChange<NewToken>> {
        validate_name(name)?;
        validate_audiences(role, audiences)?;
        if self.get(name)?.is_some() {
            return Err(name_taken(name));
        }
        let id = hex::encode(*random::<8>()?);
        let secret = random::<32>()?;
        let record = TokenRecord {
            name: name.to_string(),
            role,
            id: id.clone(),
            secret_sha256: hex::encode(Sha256::digest(secret.as_slice())),
            created_at: format_rfc3339(clock.now()),
            revoked_at: None,
            audiences: audiences.to_vec(),
        };
        let mut writes = SideWrites::new();
        writes
            .insert_new(TREE_TOKENS, name, record.to_bytes()?, name_taken(name))
            .insert_new(
                TREE_TOKEN_IDS,
                id.as_bytes(),
                name,
                // 64 random bits: a collision is refused rather than shadowing a token.
                Error::new(ErrorCode::Conflict, "token id collision; retry"),
            );
        let mut bearer = Zeroizing::new(String::with_capacity(PREFIX.len() + 16 + 1 + 43));
        bearer.push_str(PREFIX);
        bearer.push_str(&id);
        bearer.push('_');
        bearer.push_str(&b64url_encode(secret.as_slice()));
        Ok(TokenChange {
            outcome: NewToken {
                name: name.to_string(),
                role,
                created_at: record.created_at,
                secret: bearer,
            },
            actor: actor.clone(),
            event: Event::TokenCreated {
                token_name: name.to_string(),
                token_role: role.as_str().to_string(),
                audiences: audiences.to_vec(),
            },
            writes,
            refused: "token not created",
        })
    }

    /// Creates a token and returns it (with its secret) once its record and `token_created`
    /// entry are durable, committed as one append of `sink` and waited for on this thread
    /// (never call it on an async task). See [`TokenStore::prepare_create`]; on any failure
    /// nothing is stored.
    pub fn create(
        &self,
        name: &str,
        role: ApiRole,
        actor: &Actor,
        sink: &dyn AuditSink,
        clock: &dyn Clock,
    ) -> Result<NewToken> {
        self.prepare_create(name, role, actor, clock)?.commit(sink)
    }

    /// Prepares the first security-officer token (named `security-officer`), only when no
    /// security-officer token has ever been created: `Ok(None)` when one exists.
    pub fn prepare_bootstrap(
        &self,
        actor: &Actor,
        clock: &dyn Clock,
    ) -> Result<Option<TokenChange<NewToken>>> {
        if self
            .list()?
            .iter()
            .any(|t| t.role == ApiRole::SecurityOfficer)
        {
            return Ok(None);
        }
        self.prepare_create("security-officer", ApiRole::SecurityOfficer, actor, clock)
            .map(Some)
    }

    /// Creates the first security-officer token as [`TokenStore::prepare_bootstrap`]
    /// decides, committed like [`TokenStore::create`].
    pub fn bootstrap(
        &self,
        actor: &Actor,
        sink: &dyn AuditSink,
        clock: &dyn Clock,
    ) -> Result<Option<NewToken>> {
        self.prepare_bootstrap(actor, clock)?
            .map(|c| c.commit(sink))
            .transpose()
    }

    /// Prepares the revocation of a token: the [`TokenChange`] that rewrites its record with
    /// `revokedAt` (a `swap` over exactly the bytes read here) with its `token_revoked`
    /// entry, yielding the record as it will be stored. An unknown name is NOT_FOUND and a
    /// revoked token CONFLICT, also when a concurrent revocation commits first (the swap
    /// then finds other bytes and refuses the whole append). Revoking the last active
    /// security-officer token is 409 LAST_OFFICER (see [`TokenStore::prepare_revoke_with`]).
    pub fn prepare_revoke(
        &self,
        name: &str,
        actor: &Actor,
        clock: &dyn Clock,
    ) -> Result<TokenChange<TokenRecord>> {
        self.prepare_revoke_with(name, actor, clock, LastOfficer::Refuse)
    }

    /// [`TokenStore::prepare_revoke`], with what to do when the token is the last active
    /// security officer. Refused, the change also carries a condition on the record of
    /// another active officer (unchanged bytes), so two officers revoking each other
    /// concurrently cannot both succeed: the second append is refused with LAST_OFFICER.
    pub fn prepare_revoke_with(
        &self,
        name: &str,
        actor: &Actor,
        clock: &dyn Clock,
        last: LastOfficer,
    ) -> Result<TokenChange<TokenRecord>> {
        let raw = self
            .by_name
            .get(name)
            .map_err(|e| store_error("read token", e))?
            .ok_or_else(|| {
                Error::field(
                    ErrorCode::NotFound,
                    "name",
                    format!("no token named {name:?}"),
                )
            })?;
        let mut record = TokenRecord::from_bytes(&raw)?;
        if record.revoked_at.is_some() {
            return Err(already_revoked(name));
        }
        record.revoked_at = Some(format_rfc3339(clock.now()));
        let mut writes = SideWrites::new();
        writes.swap(
            TREE_TOKENS,
            name,
            Some(raw.to_vec()),
            record.to_bytes()?,
            already_revoked(name),
        );
        if record.role == ApiRole::SecurityOfficer && last == LastOfficer::Refuse {
            let other = self.by_name.iter().find_map(|item| {
                let (k, v) = item.ok()?;
                let t = TokenRecord::from_bytes(&v).ok()?;
                (t.role == ApiRole::SecurityOfficer && t.revoked_at.is_none() && t.name != name)
                    .then(|| (k.to_vec(), v.to_vec()))
            });
            let Some((key, bytes)) = other else {
                return Err(last_officer(name));
            };
            // The other officer must still be active when this commits.
            writes.swap(
                TREE_TOKENS,
                key,
                Some(bytes.clone()),
                bytes,
                last_officer(name),
            );
        }
        Ok(TokenChange {
            outcome: record,
            actor: actor.clone(),
            event: Event::TokenRevoked {
                token_name: name.to_string(),
            },
            writes,
            refused: "token not revoked",
        })
    }

    /// Revokes a token by name: its record and `token_revoked` entry are committed as one
    /// append of `sink`, waited for on this thread (never on an async task); from then on
    /// [`TokenStore::authenticate`] refuses it. See [`TokenStore::prepare_revoke`]; on any
    /// failure (AUDIT_UNAVAILABLE included) the token stays active.
    pub fn revoke(
        &self,
        name: &str,
        actor: &Actor,
        sink: &dyn AuditSink,
        clock: &dyn Clock,
    ) -> Result<TokenRecord> {
        self.prepare_revoke(name, actor, clock)?.commit(sink)
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
                audiences: r.audiences,
            }),
            _ => Err(unauthorized()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::clock::SystemClock;
    use crate::keys::test_support::FlakySink;

    /// Creates the token `name` with `role`, as the CLI, recorded in `sink`.
    fn create(
        tokens: &TokenStore,
        sink: &FlakySink,
        name: &str,
        role: ApiRole,
    ) -> Result<NewToken> {
        tokens.create(name, role, &Actor::cli(), sink, &SystemClock)
    }

    fn open() -> (Store, TokenStore, FlakySink) {
        let store = Store::temporary().unwrap();
        let tokens = TokenStore::open(&store).unwrap();
        let sink = FlakySink::open(&store);
        (store, tokens, sink)
    }

    /// Every key and value of the token trees.
    fn token_trees(store: &Store) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        for name in [TREE_TOKENS, TREE_TOKEN_IDS] {
            for item in store.tree(name).unwrap().iter() {
                let (k, v) = item.unwrap();
                out.push((k.to_vec(), v.to_vec()));
            }
        }
        out
    }

    #[test]
    fn create_authenticate_revoke() {
        let (_store, tokens, sink) = open();
        let t = create(&tokens, &sink, "ops", ApiRole::Issuer).unwrap();
        assert!(!format!("{t:?}").contains(t.secret.as_str()));
        let p = tokens.authenticate(&t.secret).unwrap();
        assert_eq!((p.name.as_str(), p.role), ("ops", ApiRole::Issuer));
        // Hash only at rest.
        let rec = &tokens.list().unwrap()[0];
        assert_eq!(rec.created_at, t.created_at);
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
        let dup = create(&tokens, &sink, "ops", ApiRole::Auditor);
        assert_eq!(dup.unwrap_err().code, ErrorCode::Conflict);
        let revoked = tokens
            .revoke("ops", &Actor::cli(), &sink, &SystemClock)
            .unwrap();
        assert!(revoked.revoked_at.is_some());
        assert_eq!(tokens.get("ops").unwrap().unwrap(), revoked);
        // Revocation takes effect on the very next lookup.
        assert_eq!(
            tokens.authenticate(&t.secret).unwrap_err().code,
            ErrorCode::Unauthorized
        );
        let again = tokens.revoke("ops", &Actor::cli(), &sink, &SystemClock);
        assert_eq!(again.unwrap_err().code, ErrorCode::Conflict);
        let dup = create(&tokens, &sink, "ops", ApiRole::Auditor);
        assert_eq!(dup.unwrap_err().code, ErrorCode::Conflict);
        let unknown = tokens.revoke("nobody", &Actor::cli(), &sink, &SystemClock);
        assert_eq!(unknown.unwrap_err().code, ErrorCode::NotFound);
        // One entry per change, none for the refusals, the secret in none of them.
        assert_eq!(
            sink.entries(),
            vec![
                (
                    Actor::cli(),
                    Event::TokenCreated {
                        token_name: "ops".into(),
                        token_role: "issuer".into(),
                        audiences: vec![],
                    }
                ),
                (
                    Actor::cli(),
                    Event::TokenRevoked {
                        token_name: "ops".into()
                    }
                ),
            ]
        );
        for raw in sink.log.entries(0, sink.log.size()).unwrap() {
            assert!(!String::from_utf8_lossy(&raw).contains(secret_part));
        }
    }

    /// The record change and its entry are one append: a change prepared and then refused
    /// (its precondition gone) writes neither, and a change that commits writes both.
    #[test]
    fn record_and_entry_commit_together_or_not_at_all() {
        let (store, tokens, sink) = open();
        let actor = Actor::cli();
        let a = tokens
            .prepare_create("a", ApiRole::Auditor, &actor, &SystemClock)
            .unwrap();
        let b = tokens
            .prepare_create("a", ApiRole::Issuer, &actor, &SystemClock)
            .unwrap();
        // Prepared, not committed: nothing stored, nothing logged.
        assert!(token_trees(&store).is_empty());
        assert_eq!(sink.log.size(), 0);
        let a = a.commit(&sink).unwrap();
        assert_eq!(sink.log.size(), 1);
        let before = token_trees(&store);
        assert_eq!(before.len(), 2, "record and id index");
        // The second creation of the name lost the race: CONFLICT, no entry, no record.
        let e = b.commit(&sink).unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            (ErrorCode::Conflict, Some("name"))
        );
        assert_eq!(sink.log.size(), 1);
        assert_eq!(token_trees(&store), before);
        assert_eq!(
            tokens.authenticate(&a.secret).unwrap().role,
            ApiRole::Auditor
        );
    }

    #[test]
    fn audit_failure_creates_and_revokes_nothing() {
        let (store, tokens, sink) = open();
        sink.fail.store(true, Ordering::SeqCst);
        let e = create(&tokens, &sink, "x", ApiRole::Auditor).unwrap_err();
        assert_eq!(e.code, ErrorCode::AuditUnavailable);
        assert!(e.message.starts_with("token not created"), "{e}");
        assert!(token_trees(&store).is_empty());
        assert!(
            tokens
                .bootstrap(&Actor::cli(), &sink, &SystemClock)
                .is_err()
        );
        assert!(token_trees(&store).is_empty());
        sink.fail.store(false, Ordering::SeqCst);
        let t = create(&tokens, &sink, "x", ApiRole::Auditor).unwrap();
        let before = token_trees(&store);
        sink.fail.store(true, Ordering::SeqCst);
        let e = tokens
            .revoke("x", &Actor::cli(), &sink, &SystemClock)
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::AuditUnavailable);
        assert!(e.message.starts_with("token not revoked"), "{e}");
        assert_eq!(token_trees(&store), before);
        assert!(tokens.authenticate(&t.secret).is_ok());
        assert_eq!(sink.log.size(), 1, "only the successful creation");
    }

    /// Concurrent revocations of one token: exactly one commits (one entry, the record it
    /// wrote), the others get CONFLICT and write nothing.
    #[test]
    fn concurrent_revocations_one_wins() {
        let (_store, tokens, sink) = open();
        let t = create(&tokens, &sink, "x", ApiRole::Issuer).unwrap();
        // All prepared against the same bytes before any commits: the race the swap settles.
        let changes: Vec<_> = (0..8)
            .map(|i| {
                let actor = Actor {
                    name: format!("officer-{i}"),
                    role: "security-officer".into(),
                };
                tokens.prepare_revoke("x", &actor, &SystemClock).unwrap()
            })
            .collect();
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = changes
                .into_iter()
                .map(|c| {
                    let sink = &sink;
                    s.spawn(move || c.commit(sink))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let won: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(won.len(), 1, "{results:?}");
        for r in &results {
            if let Err(e) = r {
                assert_eq!(e.code, ErrorCode::Conflict, "{e}");
                assert!(e.message.contains("already revoked"), "{e}");
            }
        }
        assert_eq!(&tokens.get("x").unwrap().unwrap(), won[0]);
        let revocations: Vec<_> = sink
            .entries()
            .into_iter()
            .filter(|(_, e)| matches!(e, Event::TokenRevoked { .. }))
            .collect();
        assert_eq!(revocations.len(), 1);
        assert!(tokens.authenticate(&t.secret).is_err());
    }

    #[test]
    fn bootstrap_only_once() {
        let (_store, tokens, sink) = open();
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
        assert_eq!(sink.log.size(), 1);
        assert!(validate_name("a b").is_err());
        assert!(ApiRole::parse("admin").is_err());
    }
}
