//! The PA's XRPL side: its account (derived from the active `xrpl-account` key), the
//! account-sequence counter and the outbox of signed XLS-70 credential transactions.
//!
//! Guarantees:
//! - a transaction is signed in the HSM ([`crate::seams::DigestSigner::sign_xrpl`]) and
//!   checked against the key's public half before it is kept;
//! - it enters the outbox only as a side write of the audit append of the event that causes
//!   it (a grant issued or revoked, a key activated or revoked), so after a crash both exist
//!   or neither does;
//! - sequences are handed out under one lock held from the counter's read to the commit
//!   ([`LedgerBook::lock`]), and the counter moves in the same append (`swap` over the
//!   value read), so two transactions never share a sequence and a refused append leaves
//!   no gap;
//! - an outbox entry's id names its cause (`grant/{grantId}/create`, ...), written with
//!   `insert_new`: one cause never yields two transactions.
//!
//! Trees: [`trees::LEDGER_ACCOUNTS`] (address -> [`AccountState`]),
//! [`trees::LEDGER_OUTBOX`] (id -> [`LedgerTx`]) and [`trees::LEDGER_PENDING`]
//! (`{address}/{sequence:010}` -> id, for transactions not yet final: what a submitter
//! sends, in sequence order).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::artifacts::ArtifactStore;
use crate::audit::SideWrites;
use crate::clock::format_rfc3339;
use crate::crypto::{Alg, PublicKey};
use crate::error::{Error, ErrorCode, Result};
use crate::events::Event;
use crate::keys::registry::Prepared;
use crate::keys::{ActiveKeys, KeyRegistry, KeyRole};
use crate::xrpl::credential_tx::{AccountKey, SignedTx, TxKind, UnsignedTx, credential_type};

/// The trees of the ledger state.
pub mod trees {
    /// account address -> [`super::AccountState`].
    pub const LEDGER_ACCOUNTS: &str = "api/ledger-accounts";
    /// outbox id -> [`super::LedgerTx`].
    pub const LEDGER_OUTBOX: &str = "api/ledger-outbox";
    /// `{address}/{sequence:010}` -> outbox id, for transactions not yet final.
    pub const LEDGER_PENDING: &str = "api/ledger-pending";
    /// Every tree of the ledger state.
    pub const ALL: [&str; 3] = [LEDGER_ACCOUNTS, LEDGER_OUTBOX, LEDGER_PENDING];
}

/// CredentialType prefix of a grant's liveness credential (PolicyGrant.md "Revocation").
pub const ACTIVE_GRANT: &str = "mpcp:active-grant:";
/// CredentialType prefix of a PA signing key's credential (key-resolution.md Mechanism 2).
pub const PA_SIGNING_KEY: &str = "mpcp:pa-signing-key:";
/// CredentialType prefix of a trust-bundle signer's credential (trust-bundles.md
/// Mitigation 3).
pub const TRUST_BUNDLE_SIGNER: &str = "mpcp:trust-bundle-signer:";

/// Ledger settings of the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerConfig {
    /// Fee in drops of each transaction signed without ledger access.
    pub fee_drops: u64,
    /// Accounts other than the PA's own that the operator declared as issuers of grant
    /// credentials (`activeGrantCredentialIssuer`): grants naming them are signed, and the
    /// credential is that account's job. Any other issuer is refused.
    pub external_issuers: Vec<String>,
}

impl Default for LedgerConfig {
    /// 12 drops (the XRPL's reference fee is 10), no external issuers.
    fn default() -> Self {
        LedgerConfig {
            fee_drops: 12,
            external_issuers: Vec::new(),
        }
    }
}

/// The PA's account: the active `xrpl-account` key and the address derived from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaAccount {
    /// Classic address.
    pub address: String,
    /// The key's kid.
    pub kid: String,
    /// The key in the ledger's encoding.
    pub key: AccountKey,
}

/// The account-sequence counter of one account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccountState {
    /// The sequence the next transaction consumes.
    pub next_sequence: u32,
    /// Where the counter was last set from: `default` (never set: 1), `operator` (the CLI)
    /// or `ledger` (a submitter's `account_info`).
    pub source: String,
    /// When it was last set (RFC 3339).
    pub updated_at: Option<String>,
}

impl AccountState {
    fn fresh() -> AccountState {
        AccountState {
            next_sequence: 1,
            source: "default".into(),
            updated_at: None,
        }
    }
}

/// Where a transaction is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TxState {
    /// Signed and kept; not yet sent to a ledger (or sent, answer unknown).
    Signed,
    /// Accepted by a ledger node; waiting for a validated ledger.
    Submitted,
    /// In a validated ledger with `tesSUCCESS`.
    Validated,
    /// Final without effect: refused by the node, or validated with another result.
    Failed,
}

impl TxState {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            TxState::Signed => "signed",
            TxState::Submitted => "submitted",
            TxState::Validated => "validated",
            TxState::Failed => "failed",
        }
    }

    /// Parses a wire name (SCHEMA_INVALID at `state`).
    pub fn parse(s: &str) -> Result<TxState> {
        [
            TxState::Signed,
            TxState::Submitted,
            TxState::Validated,
            TxState::Failed,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
        .ok_or_else(|| {
            Error::field(
                ErrorCode::SchemaInvalid,
                "state",
                "state must be one of signed, submitted, validated, failed",
            )
        })
    }

    /// Whether the state is final.
    pub fn is_final(self) -> bool {
        matches!(self, TxState::Validated | TxState::Failed)
    }
}

/// What caused a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TxCause {
    /// The audit action of the cause (`grant_issued`, `grant_revoked`, `key_activated`,
    /// `key_revoked`).
    pub event: String,
    /// The grant, for grant credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_id: Option<String>,
    /// The key, for key credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
}

/// One outbox entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LedgerTx {
    /// Outbox id (names the cause).
    pub id: String,
    /// `CredentialCreate` or `CredentialDelete`.
    pub transaction_type: TxKind,
    /// The issuing account (the PA's).
    pub account: String,
    /// The credential's subject.
    pub subject: String,
    /// CredentialType, uppercase hex.
    pub credential_type: String,
    /// Expiration in ledger time, for creates that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<u32>,
    /// The account sequence it consumes.
    pub sequence: u32,
    /// Fee in drops.
    pub fee: String,
    /// The kid of the account key that signed.
    pub kid: String,
    /// The signed blob (uppercase hex).
    pub tx_blob: String,
    /// Transaction id.
    pub hash: String,
    /// State.
    pub state: TxState,
    /// What caused it.
    pub cause: TxCause,
    /// When it was signed (RFC 3339).
    pub signed_at: String,
    /// When its state last changed (RFC 3339).
    pub updated_at: String,
    /// The ledger's last answer (`tesSUCCESS`, `tefPAST_SEQ`, ...), once there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// The validated ledger that holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger_index: Option<u32>,
    /// Hashes of earlier signatures of the same transaction, replaced after a sequence gap.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replaced_hashes: Vec<String>,
}

impl LedgerTx {
    /// The short reference an API answer or audit entry gives: type, hash and state.
    pub fn reference(&self) -> TxRef {
        TxRef {
            transaction_type: self.transaction_type,
            hash: self.hash.clone(),
            state: self.state,
            id: self.id.clone(),
        }
    }
}

/// A transaction as answers name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TxRef {
    /// Outbox id.
    pub id: String,
    /// `CredentialCreate` or `CredentialDelete`.
    pub transaction_type: TxKind,
    /// Transaction id.
    pub hash: String,
    /// State.
    pub state: TxState,
}

/// A credential transaction to sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialSpec {
    /// Outbox id.
    pub id: String,
    /// The account that must issue it (the grant's `activeGrantCredentialIssuer`, or the
    /// account that created the credential a delete removes); `None`: the PA's current one.
    pub issuer: Option<String>,
    /// Create or delete.
    pub kind: TxKind,
    /// Subject address (the PA's own for self-issued credentials: `None`).
    pub subject: Option<String>,
    /// CredentialType bytes.
    pub credential_type: Vec<u8>,
    /// Expiration, Unix seconds (creates).
    pub expires_unix: Option<i64>,
    /// Cause.
    pub cause: TxCause,
}

/// A signed transaction and the writes that keep it: commit them in the append of its
/// cause, while holding [`LedgerBook::lock`].
#[derive(Debug)]
pub struct PreparedTx {
    /// The outbox entry.
    pub tx: LedgerTx,
    /// Its writes: the entry, its pending index and the moved counter.
    pub writes: SideWrites,
}

/// Filters of [`LedgerBook::list`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TxFilter {
    /// Only transactions caused by this grant.
    pub grant_id: Option<String>,
    /// Only transactions caused by this key (or signed by it).
    pub kid: Option<String>,
    /// Only in this state.
    pub state: Option<TxState>,
}

/// The submitter's health as `GET /v1/ledger/account` shows it (in memory only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubmitterStatus {
    /// The JSON-RPC endpoint.
    pub endpoint: String,
    /// When it last answered (RFC 3339).
    pub last_contact: Option<String>,
    /// The last failure, cleared by the next successful round.
    pub last_error: Option<String>,
}

/// The ledger state (see the module documentation). Cheap to clone.
#[derive(Debug, Clone)]
pub struct LedgerBook {
    artifacts: ArtifactStore,
    lock: Arc<tokio::sync::Mutex<()>>,
    submitter: Arc<std::sync::Mutex<Option<SubmitterStatus>>>,
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::StoreError, format!("corrupt {what}: {e}"))
}

fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::new(ErrorCode::Internal, format!("ledger: {e}")))
}

/// The pending-index key of `sequence` on `account`.
pub fn pending_key(account: &str, sequence: u32) -> String {
    format!("{account}/{sequence:010}")
}

/// The XRPL encoding of an account key's public half; P-256 has none.
pub fn account_key(public: &PublicKey) -> Result<AccountKey> {
    let bytes = public.compressed_bytes();
    match public.alg() {
        Alg::EdDSA => Ok(AccountKey::Ed25519(bytes.try_into().map_err(|_| {
            Error::new(ErrorCode::Internal, "Ed25519 key is not 32 bytes")
        })?)),
        Alg::ES256K => Ok(AccountKey::Secp256k1(bytes.try_into().map_err(|_| {
            Error::new(ErrorCode::Internal, "secp256k1 key is not 33 bytes")
        })?)),
        Alg::ES256 => Err(Error::new(
            ErrorCode::AlgorithmUnsupported,
            "P-256 keys hold no XRPL account",
        )),
    }
}

impl LedgerBook {
    /// The ledger state over `artifacts` (its trees must already be open).
    pub fn new(artifacts: ArtifactStore) -> LedgerBook {
        LedgerBook {
            artifacts,
            lock: Arc::new(tokio::sync::Mutex::new(())),
            submitter: Arc::new(std::sync::Mutex::new(None)),
        }
    }

    /// The ledger state in `store`, its trees opened (for the console commands, which run
    /// while the service is stopped).
    pub fn open(store: &crate::store::Store) -> Result<LedgerBook> {
        for tree in trees::ALL {
            store.tree(tree)?;
        }
        Ok(LedgerBook::new(ArtifactStore::new(Arc::new(store.clone()))))
    }

    /// Commits the registry change `p` with the credential transaction it calls for
    /// ([`LedgerBook::key_credential`]) as ONE append, waited for on this thread: the console's
    /// `keys` commands and `up`, where nothing else signs meanwhile (the store is locked).
    pub fn commit_key_change<T>(
        &self,
        registry: &KeyRegistry,
        mut p: Prepared<T>,
        fee_drops: u64,
    ) -> Result<(T, Option<LedgerTx>)> {
        // As over the API, the ledger side never blocks a key change.
        let tx = match self.key_credential(registry, &p.event, fee_drops, registry.clock().now()) {
            Ok(tx) => tx,
            Err(e) => {
                tracing::warn!(code = e.code.as_str(), cause = %e.message, "key change committed without its XRPL credential transaction");
                None
            }
        };
        if let Some(t) = &tx {
            p.writes.extend(t.writes.clone());
        }
        let out = registry.commit(p)?;
        Ok((out, tx.map(|t| t.tx)))
    }

    /// The submitter's health, when one runs.
    pub fn submitter_status(&self) -> Option<SubmitterStatus> {
        self.submitter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Updates the submitter's health.
    pub fn set_submitter_status(&self, f: impl FnOnce(&mut SubmitterStatus)) {
        let mut g = self
            .submitter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(g.get_or_insert_with(SubmitterStatus::default));
    }

    /// The lock held from reading the sequence counter to committing what was signed with
    /// it (issuance, revocation, key changes, the submitter's re-signing).
    pub fn lock(&self) -> &Arc<tokio::sync::Mutex<()>> {
        &self.lock
    }

    /// The PA's account: the active `xrpl-account` key, if the deployment has one.
    /// LEDGER_NOT_CONFIGURED without it.
    pub fn account(&self, keys: &dyn ActiveKeys) -> Result<PaAccount> {
        let signer = account_signer(keys)?;
        let key = account_key(signer.public_key())?;
        Ok(PaAccount {
            address: key.address(),
            kid: signer.kid().to_string(),
            key,
        })
    }

    /// The counter of `address` and the bytes it was read from (`None`: never set).
    pub fn account_state(&self, address: &str) -> Result<(Option<Vec<u8>>, AccountState)> {
        match self.artifacts.get(trees::LEDGER_ACCOUNTS, address)? {
            None => Ok((None, AccountState::fresh())),
            Some(raw) => {
                let s = serde_json::from_slice(&raw).map_err(|e| corrupt("account state", e))?;
                Ok((Some(raw), s))
            }
        }
    }

    /// The write that sets `address`'s counter to `state`, over the bytes `read`.
    pub fn counter_write(
        &self,
        writes: &mut SideWrites,
        address: &str,
        read: Option<Vec<u8>>,
        state: &AccountState,
    ) -> Result<()> {
        writes.swap(
            trees::LEDGER_ACCOUNTS,
            address.to_string(),
            read,
            to_json(state)?,
            Error::new(
                ErrorCode::Conflict,
                "the account sequence changed concurrently; retry",
            ),
        );
        Ok(())
    }

    /// Builds, signs (in the HSM, with the active `xrpl-account` key) and checks the
    /// transaction of `spec` with the account's next sequence. Blocking; call it on a
    /// signing hop, holding [`LedgerBook::lock`] until its writes are committed.
    pub fn prepare(
        &self,
        keys: &dyn ActiveKeys,
        spec: CredentialSpec,
        fee_drops: u64,
        now: OffsetDateTime,
    ) -> Result<PreparedTx> {
        let signer = account_signer(keys)?;
        let key = account_key(signer.public_key())?;
        let address = key.address();
        if let Some(want) = spec.issuer.as_ref().filter(|w| **w != address) {
            return Err(Error::new(
                ErrorCode::LedgerAccountChanged,
                format!(
                    "transaction {} must be signed by account {want}, but the PA's account is now \
                     {address} (its key was rotated)",
                    spec.id
                ),
            ));
        }
        let (read, mut state) = self.account_state(&address)?;
        let expiration = spec
            .expires_unix
            .map(|t| crate::xrpl::credential_tx::ledger_time(t, "expiresAt"))
            .transpose()?;
        let unsigned = UnsignedTx {
            kind: spec.kind,
            key,
            subject: spec.subject.clone().unwrap_or_else(|| address.clone()),
            credential_type: spec.credential_type.clone(),
            expiration,
            sequence: state.next_sequence,
            fee_drops,
            last_ledger_sequence: None,
        };
        let signed = sign_checked(signer.as_ref(), &unsigned)?;
        let at = format_rfc3339(now);
        let tx = LedgerTx {
            id: spec.id.clone(),
            transaction_type: spec.kind,
            account: address.clone(),
            subject: unsigned.subject.clone(),
            credential_type: hex::encode_upper(&spec.credential_type),
            expiration,
            sequence: unsigned.sequence,
            fee: fee_drops.to_string(),
            kid: signer.kid().to_string(),
            tx_blob: signed.blob,
            hash: signed.hash,
            state: TxState::Signed,
            cause: spec.cause,
            signed_at: at.clone(),
            updated_at: at.clone(),
            result: None,
            ledger_index: None,
            replaced_hashes: Vec::new(),
        };
        let mut writes = SideWrites::new();
        writes.insert_new(
            trees::LEDGER_OUTBOX,
            tx.id.clone(),
            to_json(&tx)?,
            Error::field(
                ErrorCode::Conflict,
                "id",
                format!("ledger transaction {} already exists", tx.id),
            ),
        );
        writes.insert_new(
            trees::LEDGER_PENDING,
            pending_key(&address, tx.sequence),
            tx.id.clone().into_bytes(),
            Error::new(
                ErrorCode::Conflict,
                "the account sequence is already taken; retry",
            ),
        );
        state.next_sequence = state
            .next_sequence
            .checked_add(1)
            .ok_or_else(|| Error::new(ErrorCode::Internal, "account sequence overflow"))?;
        if state.source == "default" {
            state.source = "appliance".into();
        }
        state.updated_at = Some(at);
        self.counter_write(&mut writes, &address, read, &state)?;
        Ok(PreparedTx { tx, writes })
    }

    /// The self-issued credential transaction a key change calls for, if any: activating a
    /// grant-signing key creates `mpcp:pa-signing-key:{kid}` (key-resolution.md Mechanism 2),
    /// activating a root key `mpcp:trust-bundle-signer:{kid}` (trust-bundles.md Mitigation
    /// 3); revoking either deletes its credential, when one was created. `None` for other
    /// changes, and while the deployment has no XRPL account. Blocking (HSM); hold
    /// [`LedgerBook::lock`] until the writes are committed with the key change.
    pub fn key_credential(
        &self,
        keys: &dyn ActiveKeys,
        event: &Event,
        fee_drops: u64,
        now: OffsetDateTime,
    ) -> Result<Option<PreparedTx>> {
        let (kid, role, kind, action) = match event {
            Event::KeyActivated { kid, role, .. } => {
                (kid, role, TxKind::CredentialCreate, "key_activated")
            }
            Event::KeyRevoked { kid, role, .. } => {
                (kid, role, TxKind::CredentialDelete, "key_revoked")
            }
            _ => return Ok(None),
        };
        let prefix = match role.as_str() {
            "grant-signing" => PA_SIGNING_KEY,
            "root" => TRUST_BUNDLE_SIGNER,
            _ => return Ok(None),
        };
        match self.account(keys) {
            Err(e) if e.code == ErrorCode::LedgerNotConfigured => return Ok(None),
            Err(e) => return Err(e),
            Ok(_) => {}
        }
        let create_id = format!("key/{kid}/create");
        if kind == TxKind::CredentialDelete && self.get(&create_id)?.is_none() {
            return Ok(None);
        }
        let spec = CredentialSpec {
            issuer: None,
            id: match kind {
                TxKind::CredentialCreate => create_id,
                TxKind::CredentialDelete => format!("key/{kid}/delete"),
            },
            kind,
            subject: None,
            credential_type: credential_type(prefix, kid, "kid")?,
            expires_unix: None,
            cause: TxCause {
                event: action.into(),
                grant_id: None,
                kid: Some(kid.clone()),
            },
        };
        self.prepare(keys, spec, fee_drops, now).map(Some)
    }

    /// The outbox entry `id` and its stored bytes.
    pub fn get(&self, id: &str) -> Result<Option<(Vec<u8>, LedgerTx)>> {
        match self.artifacts.get(trees::LEDGER_OUTBOX, id)? {
            None => Ok(None),
            Some(raw) => {
                let tx = serde_json::from_slice(&raw).map_err(|e| corrupt("outbox entry", e))?;
                Ok(Some((raw, tx)))
            }
        }
    }

    /// The outbox entries matching `filter`, in sequence order per account.
    pub fn list(&self, filter: &TxFilter) -> Result<Vec<LedgerTx>> {
        let mut out = Vec::new();
        for item in self.artifacts.scan(trees::LEDGER_OUTBOX)? {
            let (_, raw) = item?;
            let tx: LedgerTx =
                serde_json::from_slice(&raw).map_err(|e| corrupt("outbox entry", e))?;
            let keep = filter
                .grant_id
                .as_ref()
                .is_none_or(|g| tx.cause.grant_id.as_ref() == Some(g))
                && filter
                    .kid
                    .as_ref()
                    .is_none_or(|k| tx.cause.kid.as_ref() == Some(k) || &tx.kid == k)
                && filter.state.is_none_or(|s| tx.state == s);
            if keep {
                out.push(tx);
            }
        }
        out.sort_by(|a, b| (&a.account, a.sequence).cmp(&(&b.account, b.sequence)));
        Ok(out)
    }

    /// The ids of `account`'s transactions not yet final, in sequence order.
    pub fn pending(&self, account: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let prefix = format!("{account}/");
        for item in self
            .artifacts
            .scan_prefix(trees::LEDGER_PENDING, prefix.as_bytes())?
        {
            let (_, raw) = item?;
            out.push(String::from_utf8(raw.to_vec()).map_err(|e| corrupt("pending index", e))?);
        }
        Ok(out)
    }

    /// The writes that replace the entry read as `raw` by `new` (moving its pending index
    /// when its sequence changed, dropping it once final).
    pub fn update_writes(
        &self,
        raw: Vec<u8>,
        old: &LedgerTx,
        new: &LedgerTx,
    ) -> Result<SideWrites> {
        let mut writes = SideWrites::new();
        let changed = || {
            Error::new(
                ErrorCode::Conflict,
                format!("ledger transaction {} changed concurrently", old.id),
            )
        };
        writes.swap(
            trees::LEDGER_OUTBOX,
            old.id.clone(),
            Some(raw),
            to_json(new)?,
            changed(),
        );
        let old_key = pending_key(&old.account, old.sequence);
        let new_key = pending_key(&new.account, new.sequence);
        let was_pending = !old.state.is_final();
        let is_pending = !new.state.is_final();
        let moved = old_key != new_key;
        if was_pending && (!is_pending || moved) {
            writes.remove(
                trees::LEDGER_PENDING,
                old_key,
                old.id.clone().into_bytes(),
                changed(),
            );
        }
        if is_pending && (!was_pending || moved) {
            writes.insert_new(
                trees::LEDGER_PENDING,
                new_key,
                new.id.clone().into_bytes(),
                Error::new(ErrorCode::Conflict, "the account sequence is already taken"),
            );
        }
        Ok(writes)
    }

    /// Re-signs `old` with `sequence` (after a sequence gap): a new blob and hash, the old
    /// hash kept in `replacedHashes`, state back to `signed`. Blocking (HSM).
    pub fn resign(
        &self,
        keys: &dyn ActiveKeys,
        old: &LedgerTx,
        sequence: u32,
        last_ledger_sequence: Option<u32>,
        now: OffsetDateTime,
    ) -> Result<LedgerTx> {
        let signer = account_signer(keys)?;
        let key = account_key(signer.public_key())?;
        if key.address() != old.account {
            return Err(Error::new(
                ErrorCode::KeyStateInvalid,
                format!(
                    "transaction {} was signed for account {}, whose key is no longer active",
                    old.id, old.account
                ),
            ));
        }
        let fee_drops: u64 = old
            .fee
            .parse()
            .map_err(|e| corrupt("outbox entry fee", e))?;
        let unsigned = UnsignedTx {
            kind: old.transaction_type,
            key,
            subject: old.subject.clone(),
            credential_type: hex::decode(&old.credential_type)
                .map_err(|e| corrupt("outbox entry", e))?,
            expiration: old.expiration,
            sequence,
            fee_drops,
            last_ledger_sequence,
        };
        let signed = sign_checked(signer.as_ref(), &unsigned)?;
        let mut new = old.clone();
        new.replaced_hashes.push(old.hash.clone());
        new.sequence = sequence;
        new.kid = signer.kid().to_string();
        new.tx_blob = signed.blob;
        new.hash = signed.hash;
        new.state = TxState::Signed;
        new.updated_at = format_rfc3339(now);
        Ok(new)
    }
}

/// The active `xrpl-account` signer. LEDGER_NOT_CONFIGURED when the role has no active key,
/// or when the algorithm policy allows the role nothing (a policy written before the role
/// existed): the deployment then has no XRPL account.
fn account_signer(keys: &dyn ActiveKeys) -> Result<crate::seams::SharedSigner> {
    keys.active_signer(KeyRole::XrplAccount)
        .map_err(|e| match e.code {
            ErrorCode::KeyNotFound => Error::new(
                ErrorCode::LedgerNotConfigured,
                "this Policy Authority has no active xrpl-account key",
            ),
            ErrorCode::AlgorithmUnsupported => Error::new(
                ErrorCode::LedgerNotConfigured,
                format!(
                    "the algorithm policy allows the xrpl-account key nothing: {}",
                    e.message
                ),
            ),
            _ => e,
        })
}

/// Signs `unsigned` with `signer` and checks the signature against the key's public half
/// before anything is kept (a faulty or substituted token is caught here).
fn sign_checked(
    signer: &dyn crate::seams::DigestSigner,
    unsigned: &UnsignedTx,
) -> Result<SignedTx> {
    let data = unsigned.signing_data()?;
    let signature = signer.sign_xrpl(&data)?;
    signer
        .public_key()
        .verify_xrpl(&data, &signature)
        .map_err(|e| {
            Error::new(
                ErrorCode::HsmError,
                format!("the token's XRPL signature does not verify: {}", e.message),
            )
        })?;
    unsigned.assemble(&signature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seams::DigestSigner;
    use crate::signer::SoftwareSigner;

    #[test]
    fn account_keys_of_both_algorithms_sign_verifiable_blobs() {
        for alg in [Alg::ES256K, Alg::EdDSA] {
            let s = SoftwareSigner::from_secret("k", alg, &[7u8; 32]).unwrap();
            let key = account_key(s.public_key()).unwrap();
            let unsigned = UnsignedTx {
                kind: TxKind::CredentialCreate,
                key,
                subject: key.address(),
                credential_type: b"mpcp:pa-signing-key:k".to_vec(),
                expiration: None,
                sequence: 9,
                fee_drops: 12,
                last_ledger_sequence: None,
            };
            let signed = sign_checked(&s, &unsigned).unwrap();
            let back = crate::xrpl::credential_tx::decode_blob(&signed.blob).unwrap();
            assert_eq!(back["SigningPubKey"], key.hex());
            let sig = hex::decode(back["TxnSignature"].as_str().unwrap()).unwrap();
            s.public_key()
                .verify_xrpl(&unsigned.signing_data().unwrap(), &sig)
                .unwrap();
        }
        let p = SoftwareSigner::from_secret("p", Alg::ES256, &[7u8; 32]).unwrap();
        assert_eq!(
            account_key(p.public_key()).unwrap_err().code,
            ErrorCode::AlgorithmUnsupported
        );
    }

    #[test]
    fn states_parse_and_order() {
        for s in ["signed", "submitted", "validated", "failed"] {
            assert_eq!(TxState::parse(s).unwrap().as_str(), s);
        }
        assert_eq!(
            TxState::parse("done").unwrap_err().field.as_deref(),
            Some("state")
        );
        assert_eq!(pending_key("rX", 42), "rX/0000000042");
    }
}
