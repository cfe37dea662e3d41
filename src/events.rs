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
        kid: String,
        role: String,
        alg: String,
    },
    /// A pending key became the role's active key.
    KeyActivated {
        kid: String,
        role: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retired: Option<String>,
    },
    /// A key was retired without a successor being activated in the same step.
    KeyRetired { kid: String, role: String },
    /// Emergency revocation of a key.
    KeyRevoked {
        kid: String,
        role: String,
        reason: String,
    },
    /// Destruction of a revoked key was scheduled.
    KeyDestroyScheduled {
        kid: String,
        role: String,
        not_before: String,
    },
    /// A scheduled destruction was cancelled.
    KeyDestroyCancelled { kid: String, role: String },
    /// The key object was destroyed in the token.
    KeyDestroyed { kid: String, role: String },
    /// A policy document was stored.
    PolicyStored { policy_hash: String },
    /// A PolicyGrant was signed.
    GrantIssued {
        grant_id: String,
        issuer_key_id: String,
        policy_hash: String,
        request_digest: String,
    },
    /// A grant was revoked.
    GrantRevoked { grant_id: String, reason: String },
    /// A destination allowlist version was signed.
    AllowlistIssued {
        allowlist_id: String,
        sequence: u64,
        issuer_key_id: String,
        request_digest: String,
    },
    /// A key set was signed.
    KeySetSigned {
        signer_key_id: String,
        digest: String,
    },
    /// A trust bundle was signed.
    TrustBundleIssued {
        bundle_id: String,
        bundle_key_id: String,
        request_digest: String,
    },
    /// An API token was created (the secret itself is never recorded).
    TokenCreated {
        token_name: String,
        token_role: String,
    },
    /// An API token was revoked.
    TokenRevoked { token_name: String },
    /// A token or role binding of the HSM configuration changed.
    TokenConfigChanged { role: String, token_label: String },
    /// The appliance started, with the digest of its effective configuration.
    Startup {
        config_digest: String,
        version: String,
    },
    /// Requests of an authenticated token refused (403 for its role, 429 rate limited):
    /// the route template, the code, and how many refusals of this token, route and code the
    /// entry stands for (the first of a minute, or those since the previous entry). Never
    /// the body or a secret.
    RequestRefused {
        token_name: String,
        route: String,
        code: String,
        count: u64,
    },
    /// The appliance stopped cleanly.
    Shutdown { config_digest: String },
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
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["action"], "grant_issued");
        assert_eq!(v["issuerKeyId"], "k");
    }
}
