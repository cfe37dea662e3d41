//! The SEP-2828 record shapes: decision and outcome records, their signed payload and the
//! decision digest.
//!
//! Both records are closed: an unknown member anywhere is refused. The signature covers the
//! RFC 8785 (JCS) bytes of the object with exactly the five members other than `signature`
//! (and the unsigned, optional `timestampAnchors`): `version`, `alg`, `backLink`, and
//! `decisionDerived` + `issuerAsserted` (decision) or `outcomeDerived` + `receiptAsserted`
//! (outcome). `ES256` signatures are the raw `r || s` pair in 128 lowercase hex, not DER.
//! `decisionDigest` is `"sha256:"` + hex SHA-256 of the JCS of the whole decision record,
//! signature included.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::projection::{is_tagged_digest, sha256_tagged};

/// The only signature algorithm this appliance signs receipts with.
pub const RECEIPT_ALG: &str = "ES256";

/// The record version this implementation reads and writes.
pub const RECORD_VERSION: u64 = 1;

/// Members of a decision record covered by its signature.
pub const DECISION_SIGNED: [&str; 5] = [
    "version",
    "alg",
    "backLink",
    "decisionDerived",
    "issuerAsserted",
];

/// Members of an outcome record covered by its signature.
pub const OUTCOME_SIGNED: [&str; 5] = [
    "version",
    "alg",
    "backLink",
    "outcomeDerived",
    "receiptAsserted",
];

/// Binds a record to the call instance it governs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackLink {
    /// `sha256:` digest of the attestation, or of the named request projection.
    pub attestation_digest: String,
    /// The attestation's nonce, or `_meta.authorization_binding.nonce` in the fallback.
    pub attestation_nonce: String,
    /// The projection `attestationDigest` was computed under (fallback only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_projection: Option<String>,
}

/// The three decisions; the set is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// The call may run.
    Allow,
    /// The call must not run.
    Block,
    /// The call is held for a human; a later record supersedes this one.
    Escalate,
}

impl Decision {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Block => "block",
            Decision::Escalate => "escalate",
        }
    }
}

/// The decision and its basis.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DecisionDerived {
    /// allow, block or escalate.
    pub decision: Decision,
    /// When it was decided (RFC 3339 UTC, whole seconds, `Z`).
    pub decided_at: String,
    /// Short human-readable basis.
    pub reason: Option<String>,
    /// Identifier or digest of the policy version that decided.
    pub policy_id: Option<String>,
    /// The risk estimate, as a decimal string.
    pub risk_score: Option<String>,
    /// The allow threshold in force, as a decimal string.
    pub threshold_allow: Option<String>,
    /// The block threshold in force, as a decimal string.
    pub threshold_block: Option<String>,
    /// A client-asserted turn id (correlation only).
    pub client_turn_id: Option<String>,
}

/// The issuer block of a record (`issuerAsserted`, or `receiptAsserted` without
/// `expSeconds`).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Asserted {
    /// The issuing authority.
    pub iss: String,
    /// The subject the decision is about.
    pub sub: String,
    /// Issuance time (RFC 3339 UTC, whole seconds, `Z`).
    pub iat: String,
    /// Unique per record; at least 128 random bits when this appliance signs.
    pub nonce: String,
    /// Must equal the record's `alg`.
    pub alg: String,
    /// The signing key's id.
    pub secret_version: String,
    /// The audience: the provider the record is for.
    pub aud: Option<String>,
    /// How long a decision may be acted on, from `iat` (decisions only).
    pub exp_seconds: Option<u64>,
}

/// A decision record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DecisionRecord {
    /// Record version (1).
    pub version: u64,
    /// Signature algorithm.
    pub alg: String,
    /// The call instance.
    pub back_link: BackLink,
    /// The decision.
    pub decision_derived: DecisionDerived,
    /// The issuer.
    pub issuer_asserted: Asserted,
    /// Hex signature over the signed payload.
    pub signature: String,
    /// External time attestations (not signed, not checked here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_anchors: Option<Vec<Value>>,
}

/// What happened to the call.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutcomeDerived {
    /// executed, refused or errored.
    pub status: OutcomeStatus,
    /// Completion (or refusal) time.
    pub completed_at: String,
    /// A commitment to the result or error (absent for refused).
    pub result_commitment: Option<Map<String, Value>>,
    /// `sha256:` of the JCS of the full decision record the call ran under.
    pub decision_digest: Option<String>,
}

/// The three outcome statuses; the set is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutcomeStatus {
    /// The call ran.
    Executed,
    /// The call was refused.
    Refused,
    /// The call failed.
    Errored,
}

/// An outcome record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutcomeRecord {
    /// Record version (1).
    pub version: u64,
    /// Signature algorithm.
    pub alg: String,
    /// The decision's backLink, unchanged.
    pub back_link: BackLink,
    /// What happened.
    pub outcome_derived: OutcomeDerived,
    /// The issuer.
    pub receipt_asserted: Asserted,
    /// Hex signature over the signed payload.
    pub signature: String,
    /// External time attestations (not signed, not checked here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_anchors: Option<Vec<Value>>,
}

/// The JCS bytes a record's signature covers: the object of exactly the `members` of
/// `record` (absent ones left out, so a record missing one fails its signature). `None`
/// when `record` is not an object.
pub fn signed_payload(record: &Value, members: &[&str]) -> Option<Vec<u8>> {
    let obj = record.as_object()?;
    let payload: Map<String, Value> = members
        .iter()
        .filter_map(|m| obj.get(*m).map(|v| ((*m).to_string(), v.clone())))
        .collect();
    serde_jcs::to_vec(&Value::Object(payload)).ok()
}

/// `decisionDigest` of a decision record: `sha256:` of the JCS of the whole record,
/// signature included. `None` when it cannot be serialised.
pub fn decision_digest(record: &Value) -> Option<String> {
    serde_jcs::to_vec(record).ok().map(|b| sha256_tagged(&b))
}

/// Whether `s` is an RFC 3339 UTC time with whole seconds and `Z`
/// (`YYYY-MM-DDTHH:MM:SSZ`), the only form records carry.
pub fn is_record_time(s: &str) -> bool {
    s.len() == 20 && crate::clock::parse_rfc3339(s, "time").is_ok()
}

/// Whether the digests of a backLink have their `sha256:` form.
pub fn back_link_well_formed(b: &BackLink) -> bool {
    is_tagged_digest(&b.attestation_digest) && !b.attestation_nonce.is_empty()
}
