//! Audit-log entries: one canonical-JSON record per event,
//! `{"actor":{"name","role"},"event":{"action",...},"index":N,"time":"RFC 3339"}`.
//!
//! The bytes hashed into the Merkle tree are exactly [`crate::canonical::canonical_bytes`] of
//! the record, so anyone can re-derive them. Events carry no PINs, tokens or private
//! material (see [`crate::events`]); the entry adds only the index, time and actor.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::canonical::{canonical_bytes, canonical_bytes_of, parse_strict};
use crate::clock::parse_rfc3339;
use crate::error::{Error, ErrorCode, Result};
use crate::events::{Actor, Event};

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Position in the log (0-based), equal to the Merkle leaf index.
    pub index: u64,
    /// When the entry was appended (RFC 3339, UTC, whole seconds).
    pub time: String,
    /// Who caused the event.
    pub actor: Actor,
    /// What happened.
    pub event: Event,
}

impl Entry {
    /// The canonical bytes that are stored and hashed.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        canonical_bytes_of(self)
    }
}

/// Checks stored entry bytes on their own: strict JSON in canonical form, exactly the four
/// members, `index` equal to `expected_index`, an RFC 3339 `time`, string actor fields and an
/// event object with a string `action`. Events of actions this build does not know are
/// accepted (a newer appliance may log more kinds), so a verifier never needs upgrading to
/// check integrity. Returns the parsed value.
pub fn check_entry_bytes(bytes: &[u8], expected_index: u64) -> Result<Value> {
    let invalid = |msg: String| Error::new(ErrorCode::AuditLogInvalid, msg);
    let value = parse_strict(bytes)
        .map_err(|e| invalid(format!("entry is not strict JSON: {}", e.message)))?;
    let canonical = canonical_bytes(&value)
        .map_err(|e| invalid(format!("entry cannot be canonicalised: {}", e.message)))?;
    if canonical != bytes {
        return Err(invalid("entry is not in canonical form".into()));
    }
    let obj = value
        .as_object()
        .ok_or_else(|| invalid("entry is not a JSON object".into()))?;
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    if keys != ["actor", "event", "index", "time"] {
        return Err(invalid(format!(
            "entry members are {keys:?}, expected actor, event, index, time"
        )));
    }
    match obj["index"].as_u64() {
        Some(i) if i == expected_index => {}
        Some(i) => {
            return Err(invalid(format!(
                "index field is {i} at position {expected_index} (entry missing, moved or reordered)"
            )));
        }
        None => return Err(invalid("index is not an unsigned integer".into())),
    }
    let time = obj["time"]
        .as_str()
        .ok_or_else(|| invalid("time is not a string".into()))?;
    parse_rfc3339(time, "time").map_err(|e| invalid(e.message))?;
    let actor = obj["actor"]
        .as_object()
        .ok_or_else(|| invalid("actor is not an object".into()))?;
    let mut actor_keys: Vec<&str> = actor.keys().map(String::as_str).collect();
    actor_keys.sort_unstable();
    if actor_keys != ["name", "role"] || !actor.values().all(Value::is_string) {
        return Err(invalid("actor must be {name, role} strings".into()));
    }
    let event = obj["event"]
        .as_object()
        .ok_or_else(|| invalid("event is not an object".into()))?;
    if !event.get("action").is_some_and(Value::is_string) {
        return Err(invalid("event has no string action".into()));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(index: u64) -> Entry {
        Entry {
            index,
            time: "2026-01-02T03:04:05Z".into(),
            actor: Actor {
                name: "alice".into(),
                role: "issuer".into(),
            },
            event: Event::PolicyStored {
                policy_hash: "ab".into(),
            },
        }
    }

    #[test]
    fn canonical_form_and_checks() {
        let b = sample(7).to_bytes().unwrap();
        assert_eq!(
            std::str::from_utf8(&b).unwrap(),
            r#"{"actor":{"name":"alice","role":"issuer"},"event":{"action":"policy_stored","policyHash":"ab"},"index":7,"time":"2026-01-02T03:04:05Z"}"#
        );
        check_entry_bytes(&b, 7).unwrap();
        let e = check_entry_bytes(&b, 8).unwrap_err();
        assert_eq!(e.code, ErrorCode::AuditLogInvalid);
        assert!(e.message.contains("index field is 7"), "{e}");
        // Same content, not canonical (whitespace).
        let spaced = String::from_utf8(b.clone()).unwrap().replacen(',', ", ", 1);
        assert!(
            check_entry_bytes(spaced.as_bytes(), 7)
                .unwrap_err()
                .message
                .contains("canonical")
        );
        let extra = br#"{"actor":{"name":"a","role":"b"},"event":{"action":"x"},"index":0,"pin":"1","time":"2026-01-02T03:04:05Z"}"#;
        assert!(check_entry_bytes(extra, 0).is_err());
        let bad_time = br#"{"actor":{"name":"a","role":"b"},"event":{"action":"x"},"index":0,"time":"yesterday"}"#;
        assert!(check_entry_bytes(bad_time, 0).is_err());
        let unknown_action = br#"{"actor":{"name":"a","role":"b"},"event":{"action":"x"},"index":0,"time":"2026-01-02T03:04:05Z"}"#;
        check_entry_bytes(unknown_action, 0).unwrap();
    }
}
