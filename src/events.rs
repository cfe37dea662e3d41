//! Events that the append-only audit log records, and the sink that records them.
//!
//! Every layer that changes state or makes a signature describes what it did as an [`Event`]
//! and hands it to an [`EventSink`] with the [`Actor`] responsible. The audit log implements
//! the sink; a sink's `record` returns only once the entry is durable, so a caller that gets
//! `Ok` may release the result (a signature, a key state change) to the outside.
//! Events never carry PINs, tokens or private key material.

use serde::{Deserialize, Serialize};

use crate::error::Result;

/// Who caused an event: an authenticated principal and its role, or the appliance itself
/// (`system`), or an operator at the CLI (`operator`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// Principal name (API token name, `cli:<user>`, or `appliance`).
    pub name: String,
    /// Principal role (issuer, security-officer, auditor, operator, system).
    pub role: String,
}

impl Actor {
    /// The appliance acting on its own (startup, scheduled destruction, checkpoints).
    pub fn system() -> Actor {
        Actor {
            name: "appliance".into(),
            role: "system".into(),
        }
    }

    /// An operator at the command line; the OS user name is recorded when known.
    pub fn cli() -> Actor {
        let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
        Actor {
            name: format!("cli:{user}"),
            role: "operator".into(),
        }
    }
}

/// One auditable event. The `action` tag and field names are part of the audit-log format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "action",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum Event {
    /// A key pair was generated in the token (state pending).
    KeyGenerated {
        /// Key id.
        kid: String,
        /// Key role (its wire name).
        role: String,
        /// Signature algorithm (JOSE name).
        alg: String,
    },
    /// A pending key became the role's active key.
    KeyActivated {
        /// Key id.
        kid: String,
        /// Key role (its wire name).
        role: String,
        /// The previously active key, retired by this step.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retired: Option<String>,
    },
    /// A key was retired without a successor being activated in the same step.
    KeyRetired {
        /// Key id.
        kid: String,
        /// Key role (its wire name).
        role: String,
    },
    /// Emergency revocation of a key.
    KeyRevoked {
        /// Key id.
        kid: String,
        /// Key role (its wire name).
        role: String,
        /// Why, as the caller stated it.
        reason: String,
    },
    /// Destruction of a revoked key was scheduled.
    KeyDestroyScheduled {
        /// Key id.
        kid: String,
        /// Key role (its wire name).
        role: String,
        /// Earliest destruction time (RFC 3339).
        not_before: String,
    },
    /// A scheduled destruction was cancelled.
    KeyDestroyCancelled {
        /// Key id.
        kid: String,
        /// Key role (its wire name).
        role: String,
    },
    /// The key object was destroyed in the token.
    KeyDestroyed {
        /// Key id.
        kid: String,
        /// Key role (its wire name).
        role: String,
    },
    /// A security officer set the receipt policy.
    ReceiptPolicySet {
        /// The document's `policyId`.
        policy_id: String,
        /// `sha256:` of its JCS bytes: the `policyId` its decision records carry.
        policy_digest: String,
    },
    /// A receipt decision record was signed.
    ReceiptDecided {
        /// `sha256:` of the JCS of the whole decision record.
        decision_digest: String,
        /// allow, block or escalate.
        decision: String,
        /// The requester's action id.
        action_id: String,
        /// The provider the record is for.
        audience: String,
        /// The tool (`tools/call` `name`).
        tool: String,
        /// The receipt key that signed.
        secret_version: String,
        /// Hex SHA-256 of the canonical request.
        request_digest: String,
    },
    /// A provider consumed a decision: its call binding and action are reserved.
    ReceiptConsumed {
        /// The consumed decision.
        decision_digest: String,
        /// The requester's action id.
        action_id: String,
        /// The audience it was consumed for.
        audience: String,
    },
    /// An outcome record was signed for a consumed decision.
    ReceiptOutcomeSigned {
        /// The decision it reports on.
        decision_digest: String,
        /// executed, refused or errored.
        status: String,
        /// The receipt key that signed.
        secret_version: String,
    },
    /// A policy document was stored.
    PolicyStored {
        /// SHA-256 of the canonical policy document (hex).
        policy_hash: String,
    },
    /// A PolicyGrant was signed.
    GrantIssued {
        /// The grant's id.
        grant_id: String,
        /// Kid of the signing key.
        issuer_key_id: String,
        /// SHA-256 of the canonical policy document (hex).
        policy_hash: String,
        /// Hex SHA-256 of the canonical request.
        request_digest: String,
        /// The `CredentialCreate` committed with the grant (its transaction id), when the
        /// PA's own account issues the grant's credential.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credential_tx: Option<String>,
    },
    /// A grant was revoked.
    GrantRevoked {
        /// The grant's id.
        grant_id: String,
        /// Why, as the caller stated it.
        reason: String,
        /// The `CredentialDelete` committed with the revocation (its transaction id).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credential_tx: Option<String>,
    },
    /// A ledger transaction of the outbox changed state (submitted, validated, failed).
    LedgerTxUpdated {
        /// Outbox id.
        id: String,
        /// Transaction id.
        hash: String,
        /// The new state.
        state: String,
        /// The ledger's answer (engine result or final result).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<String>,
        /// The validated ledger holding it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ledger_index: Option<u32>,
    },
    /// A ledger transaction was signed again with another sequence (after a sequence gap).
    LedgerTxResigned {
        /// Outbox id.
        id: String,
        /// The transaction id it replaces.
        replaced_hash: String,
        /// The new transaction id.
        hash: String,
        /// The new sequence.
        sequence: u32,
    },
    /// The account-sequence counter of the PA's XRPL account was set.
    LedgerSequenceSet {
        /// The account.
        account: String,
        /// The sequence the next transaction consumes.
        sequence: u32,
        /// `operator` (the CLI) or `ledger` (a submitter's account_info).
        source: String,
    },
    /// A destination allowlist version was signed.
    AllowlistIssued {
        /// The allowlist's id.
        allowlist_id: String,
        /// Version number of the list (from 1, increasing).
        sequence: u64,
        /// Kid of the signing key.
        issuer_key_id: String,
        /// Hex SHA-256 of the canonical request.
        request_digest: String,
    },
    /// A key set was signed.
    KeySetSigned {
        /// Kid of the signing key.
        signer_key_id: String,
        /// Hex SHA-256 of what was signed.
        digest: String,
    },
    /// A trust bundle was signed.
    TrustBundleIssued {
        /// The bundle's id.
        bundle_id: String,
        /// Kid of the root key that signed.
        bundle_key_id: String,
        /// Hex SHA-256 of the canonical request.
        request_digest: String,
    },
    /// An API token was created (the secret itself is never recorded).
    TokenCreated {
        /// The API token's name.
        token_name: String,
        /// The API token's role.
        token_role: String,
        /// The audiences a receipt-consumer token serves.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        audiences: Vec<String>,
    },
    /// An API token was revoked.
    TokenRevoked {
        /// The API token's name.
        token_name: String,
    },
    /// A token or role binding of the HSM configuration changed.
    TokenConfigChanged {
        /// Key role (its wire name).
        role: String,
        /// The HSM token label now bound to the role.
        token_label: String,
    },
    /// The appliance started, with the digest of its effective configuration.
    Startup {
        /// Hex SHA-256 of the effective configuration.
        config_digest: String,
        /// The appliance version line.
        version: String,
    },
    /// Requests of an authenticated token refused (403 for its role, 429 rate limited):
    /// the route template, the code, and how many refusals of this token, route and code the
    /// entry stands for (the first of a minute, or those since the previous entry). Never
    /// the body or a secret.
    RequestRefused {
        /// The API token's name.
        token_name: String,
        /// Method and route template.
        route: String,
        /// The stable error code of the refusal.
        code: String,
        /// How many refusals this entry stands for.
        count: u64,
    },
    /// The appliance stopped cleanly.
    Shutdown {
        /// Hex SHA-256 of the effective configuration.
        config_digest: String,
    },
}

/// Where events go. `record` returns after the entry is durable (or fails, in which case the
/// caller must not release what the event describes). Returns the entry's log index.
pub trait EventSink: Send + Sync {
    /// Appends one event attributed to `actor`.
    fn record(&self, actor: &Actor, event: Event) -> Result<u64>;
}

/// A sink that keeps events in memory; for unit tests of layers above the audit log.
#[derive(Debug, Default)]
pub struct MemorySink(std::sync::Mutex<Vec<(Actor, Event)>>);

impl MemorySink {
    /// The events recorded so far.
    pub fn events(&self) -> Vec<(Actor, Event)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl EventSink for MemorySink {
    fn record(&self, actor: &Actor, event: Event) -> Result<u64> {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        g.push((actor.clone(), event));
        Ok(g.len() as u64 - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_wire_form_is_tagged_camel_case() {
        let e = Event::GrantIssued {
            grant_id: "g".into(),
            issuer_key_id: "k".into(),
            policy_hash: "h".into(),
            request_digest: "d".into(),
            credential_tx: None,
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["action"], "grant_issued");
        assert_eq!(v["issuerKeyId"], "k");
    }
}
