//! What the appliance keeps of the receipts it signs: the receipt policy, every decision
//! record with who asked for it, the decisions under each call binding (for supersession),
//! the single-use registry and the outcome records.
//!
//! Reads go through the store seam ([`ArtifactStore`]); every write is a side write of the
//! audit append that records it (see [`crate::audit::SideWrites`]), so after a crash a
//! decision, a consumption or an outcome exists together with its audit entry or not at all.
//! Uniqueness is enforced inside that commit (`insert_new`), not by a read before it: of
//! two providers consuming one call binding at once, exactly one is admitted.
//!
//! Keys:
//! - decisions and outcomes by decision digest (`sha256:` of the JCS of the whole record);
//! - decisions under a binding by `{binding}/{decidedAt}`, where `binding` is the hex
//!   SHA-256 of the JCS of the record's `backLink`: equal `decidedAt`s under one binding
//!   cannot both commit, and the last key of a binding's prefix is its latest decision;
//! - the registry by the call binding's nonce and by the requester's action id, so that a
//!   consumed call can be consumed again neither under another digest nor as another call.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::artifacts::ArtifactStore;
use crate::clock::{format_rfc3339, parse_rfc3339};
use crate::crypto::PublicKey;
use crate::error::{Error, ErrorCode, Result};
use crate::keys::{ActiveKeys, KeyRole};
use crate::receipts::policy::ReceiptPolicy;
use crate::receipts::projection::sha256_tagged;
use crate::receipts::record::BackLink;
use crate::receipts::verify::ReceiptKeys;

/// The trees of the receipt state.
pub mod trees {
    /// `current` -> the canonical receipt policy document.
    pub const RECEIPT_POLICY: &str = "api/receipt-policy";
    /// decision digest -> [`super::StoredDecision`].
    pub const RECEIPT_DECISIONS: &str = "api/receipt-decisions";
    /// `{binding}/{decidedAt}` -> decision digest.
    pub const RECEIPT_BINDINGS: &str = "api/receipt-bindings";
    /// `n\0{nonce}` and `a\0{requester}\0{actionId}` -> [`super::Consumption`].
    pub const RECEIPT_CONSUMED: &str = "api/receipt-consumed";
    /// decision digest -> [`super::StoredOutcome`].
    pub const RECEIPT_OUTCOMES: &str = "api/receipt-outcomes";
    /// Every tree of the receipt state.
    pub const ALL: [&str; 5] = [
        RECEIPT_POLICY,
        RECEIPT_DECISIONS,
        RECEIPT_BINDINGS,
        RECEIPT_CONSUMED,
        RECEIPT_OUTCOMES,
    ];
}

/// The key of the current policy in [`trees::RECEIPT_POLICY`].
pub const POLICY_KEY: &str = "current";

/// A signed decision and what the record does not say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StoredDecision {
    /// The decision record as signed.
    pub record: Value,
    /// The requester token that asked.
    pub requester: String,
    /// The requester's action id.
    pub action_id: String,
    /// The tool.
    pub tool: String,
    /// The audience.
    pub audience: String,
    /// The binding key ([`binding_key`]).
    pub binding: String,
}

/// A registry entry: what was consumed, by whom, when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Consumption {
    /// The consumed decision.
    pub decision_digest: String,
    /// Its `backLink.attestationDigest`.
    pub attestation_digest: String,
    /// Its tool.
    pub tool: String,
    /// Its audience.
    pub audience: String,
    /// Its `decisionDerived.policyId`.
    pub policy_id: String,
    /// The requester's action id.
    pub action_id: String,
    /// The consumer token.
    pub consumer: String,
    /// When (RFC 3339).
    pub consumed_at: String,
}

impl Consumption {
    /// Whether `other` is the same call: same digest, tool, audience and policy (a retry),
    /// as opposed to a change of any of them (out of scope).
    pub fn same_call(&self, other: &Consumption) -> bool {
        self.attestation_digest == other.attestation_digest
            && self.tool == other.tool
            && self.audience == other.audience
            && self.policy_id == other.policy_id
    }
}

/// A signed outcome and the report it answered, so that a replay is recognised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StoredOutcome {
    /// The outcome record as signed.
    pub record: Value,
    /// The report: `{status, resultCommitment?}`.
    pub report: Value,
}

/// The binding key of a `backLink`: hex SHA-256 of its JCS bytes.
pub fn binding_key(back_link: &BackLink) -> Result<String> {
    let bytes = serde_jcs::to_vec(back_link)
        .map_err(|e| Error::new(ErrorCode::Internal, format!("backLink: {e}")))?;
    Ok(hex::encode(Sha256::digest(bytes)))
}

/// The registry key of a call binding's nonce.
pub fn nonce_key(nonce: &str) -> Vec<u8> {
    [b"n\0".as_slice(), nonce.as_bytes()].concat()
}

/// The registry key of a requester's action.
pub fn action_key(requester: &str, action_id: &str) -> Vec<u8> {
    [
        b"a\0".as_slice(),
        requester.as_bytes(),
        b"\0",
        action_id.as_bytes(),
    ]
    .concat()
}

/// The `policyId` decision records carry for `policy`: `sha256:` of its JCS bytes, so that
/// any change of the policy, whatever its name, is a different id.
pub fn policy_digest(policy: &ReceiptPolicy) -> Result<String> {
    let bytes = serde_jcs::to_vec(policy)
        .map_err(|e| Error::new(ErrorCode::Internal, format!("receipt policy: {e}")))?;
    Ok(sha256_tagged(&bytes))
}

/// The receipt state (see the module documentation). Shared by the handlers.
pub struct ReceiptBook {
    artifacts: ArtifactStore,
    /// The latest `decidedAt` handed out per binding key, including decisions not yet
    /// committed, so concurrent decisions under one binding get distinct times.
    decided: Mutex<HashMap<String, OffsetDateTime>>,
}

impl std::fmt::Debug for ReceiptBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiptBook").finish_non_exhaustive()
    }
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::StoreError, format!("corrupt {what}: {e}"))
}

impl ReceiptBook {
    /// The receipt state read from `artifacts`.
    pub fn new(artifacts: ArtifactStore) -> ReceiptBook {
        ReceiptBook {
            artifacts,
            decided: Mutex::new(HashMap::new()),
        }
    }

    /// The current policy with its stored bytes, if one is set.
    pub fn policy(&self) -> Result<Option<(ReceiptPolicy, Vec<u8>)>> {
        let Some(raw) = self.artifacts.get(trees::RECEIPT_POLICY, POLICY_KEY)? else {
            return Ok(None);
        };
        let p = serde_json::from_slice(&raw).map_err(|e| corrupt("receipt policy", e))?;
        Ok(Some((p, raw)))
    }

    /// The stored decision with `digest`.
    pub fn decision(&self, digest: &str) -> Result<Option<StoredDecision>> {
        self.artifacts.get_json(trees::RECEIPT_DECISIONS, digest)
    }

    /// The digest of the latest decision under `binding`.
    pub fn latest_under(&self, binding: &str) -> Result<Option<String>> {
        let prefix = format!("{binding}/");
        let mut last = None;
        for r in self
            .artifacts
            .scan_prefix(trees::RECEIPT_BINDINGS, prefix.as_bytes())?
        {
            last = Some(r?.1);
        }
        last.map(|v| String::from_utf8(v).map_err(|e| corrupt("receipt binding", e)))
            .transpose()
    }

    /// The registry entry under `key` ([`nonce_key`], [`action_key`]).
    pub fn consumption(&self, key: &[u8]) -> Result<Option<Consumption>> {
        match self.artifacts.get_bytes(trees::RECEIPT_CONSUMED, key)? {
            None => Ok(None),
            Some(raw) => serde_json::from_slice(&raw)
                .map(Some)
                .map_err(|e| corrupt("receipt registry entry", e)),
        }
    }

    /// The outcome signed for the decision with `digest`.
    pub fn outcome(&self, digest: &str) -> Result<Option<StoredOutcome>> {
        self.artifacts.get_json(trees::RECEIPT_OUTCOMES, digest)
    }

    /// The `decidedAt` of a new decision under `binding` at `now`: `now` in whole seconds,
    /// or one second after the latest decision under the binding (committed or handed out
    /// and not yet committed) when that is not before it, so that decisions under one
    /// binding are strictly ordered. Refused (RECEIPT_DECISION_RATE) when that would run
    /// more than `drift` ahead of `now`.
    pub fn reserve_decided_at(
        &self,
        binding: &str,
        now: OffsetDateTime,
        drift: Duration,
    ) -> Result<OffsetDateTime> {
        let now = now.replace_nanosecond(0).unwrap_or(now);
        let mut decided = self.decided.lock().unwrap_or_else(PoisonError::into_inner);
        // Entries far behind the clock can no longer hold a decision back: dropping them
        // keeps the map small (the store answers for them).
        if decided.len() > 10_000 {
            decided.retain(|_, at| now - *at < time::Duration::seconds(60));
        }
        let last = match decided.get(binding) {
            Some(at) => Some(*at),
            None => self.latest_decided_at(binding)?,
        };
        let at = match last {
            Some(last) if last >= now => last + time::Duration::SECOND,
            _ => now,
        };
        if at - now > drift {
            return Err(Error::new(
                ErrorCode::ReceiptDecisionRate,
                "too many decisions under one call binding: decidedAt would run ahead of \
                 the clock",
            ));
        }
        decided.insert(binding.to_string(), at);
        Ok(at)
    }

    fn latest_decided_at(&self, binding: &str) -> Result<Option<OffsetDateTime>> {
        let prefix = format!("{binding}/");
        let mut last = None;
        for r in self
            .artifacts
            .scan_prefix(trees::RECEIPT_BINDINGS, prefix.as_bytes())?
        {
            last = Some(r?.0);
        }
        last.map(|k| {
            let at = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            parse_rfc3339(&at, "decidedAt").map_err(|e| corrupt("receipt binding", e))
        })
        .transpose()
    }

    /// The key of a decision under `binding` in [`trees::RECEIPT_BINDINGS`].
    pub fn binding_entry(binding: &str, decided_at: OffsetDateTime) -> String {
        format!("{binding}/{}", format_rfc3339(decided_at))
    }

    /// The receipt keys of `keys` as a verifier takes them: every published receipt key,
    /// authenticating only while published active.
    pub fn receipt_keys(keys: &dyn ActiveKeys) -> Result<ReceiptKeys> {
        let mut out = Vec::new();
        for jwk in keys.published_keys(KeyRole::ReceiptSigning)? {
            let key = PublicKey::from_jwk(&jwk)?;
            out.push((jwk.kid.clone(), key, jwk.is_active()));
        }
        Ok(ReceiptKeys::new(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn book() -> ReceiptBook {
        let store = crate::store::Store::temporary().unwrap();
        ReceiptBook::new(ArtifactStore::new(Arc::new(store)))
    }

    #[test]
    fn decided_at_is_strictly_increasing_under_one_binding() {
        let b = book();
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let drift = Duration::from_secs(3);
        let a = b.reserve_decided_at("b1", now, drift).unwrap();
        let c = b.reserve_decided_at("b1", now, drift).unwrap();
        let d = b.reserve_decided_at("b1", now, drift).unwrap();
        assert_eq!(a, now);
        assert_eq!(c, now + time::Duration::SECOND);
        assert_eq!(d, now + time::Duration::seconds(2));
        // Another binding is independent; a later clock is taken as it is.
        assert_eq!(b.reserve_decided_at("b2", now, drift).unwrap(), now);
        let later = now + time::Duration::seconds(10);
        assert_eq!(b.reserve_decided_at("b1", later, drift).unwrap(), later);
        // No further than the drift ahead of the clock.
        for _ in 0..3 {
            b.reserve_decided_at("b2", now, drift).unwrap();
        }
        assert_eq!(
            b.reserve_decided_at("b2", now, drift).unwrap_err().code,
            ErrorCode::ReceiptDecisionRate
        );
    }

    #[test]
    fn registry_keys_do_not_collide() {
        assert_ne!(nonce_key("a"), action_key("a", ""));
        assert_ne!(action_key("ab", "c"), action_key("a", "bc"));
    }
}
