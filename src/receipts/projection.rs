//! The no-attestation fallback projection of an MCP `tools/call`:
//! `tools_call_params_plus_meta_authorization_binding_v1`.
//!
//! The preimage is the RFC 8785 (JCS) serialisation of an object with exactly four members:
//! `projection` (the id), `name`, `arguments`, and `authorizationBinding`, which is the
//! wire's `_meta.authorization_binding`. Every other `_meta` member is left out by
//! construction, so a gateway and a provider whose views differ only in non-binding `_meta`
//! compute the same digest. The binding must be an object with a non-empty string `nonce`,
//! which the decision echoes as `backLink.attestationNonce`. A missing or malformed binding,
//! a missing `name` or `arguments`, or an unknown projection id fails closed, with its own
//! [`ProjectionError`].
//!
//! The projection binds the named parts of the observed request. It does not prove that a
//! call is fresh or unique; a byte-identical retry has the same digest, and the single-use
//! registry is what refuses it.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The id of the one projection this appliance computes.
pub const FALLBACK_PROJECTION: &str = "tools_call_params_plus_meta_authorization_binding_v1";

/// Why a request has no projection digest. Each reason has a stable wire name
/// ([`ProjectionError::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectionError {
    /// The projection id is not [`FALLBACK_PROJECTION`].
    UnknownProjection,
    /// The request is not an object, or has no string `name`.
    NameMissing,
    /// The request has no `arguments`, or they are not an object.
    ArgumentsMissing,
    /// `_meta.authorization_binding` is absent.
    BindingMissing,
    /// The binding is not an object with a non-empty string `nonce`, or `_meta` is not
    /// an object.
    BindingMalformed,
}

impl ProjectionError {
    /// The stable wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ProjectionError::UnknownProjection => "projection_unknown",
            ProjectionError::NameMissing => "name_missing",
            ProjectionError::ArgumentsMissing => "arguments_missing",
            ProjectionError::BindingMissing => "binding_missing",
            ProjectionError::BindingMalformed => "binding_malformed",
        }
    }
}

impl std::fmt::Display for ProjectionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The projection of one observed `tools/call` request: its digest and the binding nonce
/// the decision must echo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Projection {
    /// `"sha256:"` + 64 lowercase hex of SHA-256 over [`Projection::preimage`].
    pub digest: String,
    /// `_meta.authorization_binding.nonce`.
    pub nonce: String,
    /// The JCS bytes that were hashed.
    pub preimage: Vec<u8>,
}

/// `"sha256:"` + lowercase hex SHA-256 of `bytes`: the digest form of every receipt field.
pub fn sha256_tagged(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Whether `s` has the form `"sha256:"` + 64 lowercase hex characters.
pub fn is_tagged_digest(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// Computes projection `projection_id` of `request`, the `tools/call` params as observed
/// (`{name, arguments, _meta, ...}`). Members of `request` other than these three do not
/// enter the preimage.
pub fn project(projection_id: &str, request: &Value) -> Result<Projection, ProjectionError> {
    if projection_id != FALLBACK_PROJECTION {
        return Err(ProjectionError::UnknownProjection);
    }
    let obj = request.as_object().ok_or(ProjectionError::NameMissing)?;
    let name = obj
        .get("name")
        .and_then(Value::as_str)
        .ok_or(ProjectionError::NameMissing)?;
    let arguments = obj
        .get("arguments")
        .filter(|a| a.is_object())
        .ok_or(ProjectionError::ArgumentsMissing)?;
    let meta = match obj.get("_meta") {
        None => return Err(ProjectionError::BindingMissing),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(ProjectionError::BindingMalformed),
    };
    let binding = match meta.get("authorization_binding") {
        None => return Err(ProjectionError::BindingMissing),
        Some(b @ Value::Object(_)) => b,
        Some(_) => return Err(ProjectionError::BindingMalformed),
    };
    let nonce = match binding.get("nonce") {
        Some(Value::String(n)) if !n.is_empty() => n.clone(),
        _ => return Err(ProjectionError::BindingMalformed),
    };
    let mut pre = Map::new();
    pre.insert(
        "projection".into(),
        Value::String(FALLBACK_PROJECTION.into()),
    );
    pre.insert("name".into(), Value::String(name.into()));
    pre.insert("arguments".into(), arguments.clone());
    pre.insert("authorizationBinding".into(), binding.clone());
    // JCS of a serde_json::Value cannot fail: every value it holds is serialisable.
    let preimage =
        serde_jcs::to_vec(&Value::Object(pre)).map_err(|_| ProjectionError::ArgumentsMissing)?;
    Ok(Projection {
        digest: sha256_tagged(&preimage),
        nonce,
        preimage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    type Edit = fn(&mut Value);

    fn seed() -> Value {
        json!({
            "name": "query_table",
            "arguments": {"limit": 10, "table": "employees"},
            "_meta": {"authorization_binding": {"nonce": "server-chosen-nonce-001"}},
        })
    }

    #[test]
    fn the_seed_example_gives_its_published_digest() {
        let p = project(FALLBACK_PROJECTION, &seed()).unwrap();
        assert_eq!(
            p.digest,
            "sha256:aeac6a08f83dafe8569a1a195e2874b863a7e3c7d751b6c368dbc3850fd549bb"
        );
        assert_eq!(p.nonce, "server-chosen-nonce-001");
        assert!(is_tagged_digest(&p.digest));
    }

    #[test]
    fn non_binding_meta_and_other_members_do_not_enter() {
        let mut view = seed();
        view["_meta"]["progressToken"] = json!(7);
        view["_meta"]["traceparent"] = json!("00-abc");
        view["extra"] = json!(true);
        assert_eq!(
            project(FALLBACK_PROJECTION, &view).unwrap(),
            project(FALLBACK_PROJECTION, &seed()).unwrap()
        );
    }

    #[test]
    fn every_bound_part_changes_the_digest() {
        let base = project(FALLBACK_PROJECTION, &seed()).unwrap().digest;
        let edits: [fn(&mut Value); 4] = [
            |v| v["arguments"]["limit"] = json!(11),
            |v| v["name"] = json!("drop_table"),
            |v| v["_meta"]["authorization_binding"]["nonce"] = json!("other"),
            |v| v["_meta"]["authorization_binding"]["scope"] = json!("x"),
        ];
        for edit in edits {
            let mut v = seed();
            edit(&mut v);
            assert_ne!(project(FALLBACK_PROJECTION, &v).unwrap().digest, base);
        }
    }

    #[test]
    fn malformed_requests_fail_closed_each_with_its_reason() {
        use ProjectionError::*;
        assert_eq!(
            project("tools_call_params_v2", &seed()),
            Err(UnknownProjection)
        );
        let cases: [(Edit, ProjectionError); 8] = [
            (
                |v| drop(v.as_object_mut().unwrap().remove("name")),
                NameMissing,
            ),
            (|v| v["name"] = json!(5), NameMissing),
            (
                |v| drop(v.as_object_mut().unwrap().remove("arguments")),
                ArgumentsMissing,
            ),
            (|v| v["arguments"] = json!([1]), ArgumentsMissing),
            (
                |v| drop(v.as_object_mut().unwrap().remove("_meta")),
                BindingMissing,
            ),
            (|v| v["_meta"] = json!({}), BindingMissing),
            (
                |v| v["_meta"]["authorization_binding"] = json!("n"),
                BindingMalformed,
            ),
            (
                |v| v["_meta"]["authorization_binding"]["nonce"] = json!(""),
                BindingMalformed,
            ),
        ];
        for (edit, why) in cases {
            let mut v = seed();
            edit(&mut v);
            assert_eq!(project(FALLBACK_PROJECTION, &v), Err(why), "{v}");
        }
        assert_eq!(project(FALLBACK_PROJECTION, &json!([])), Err(NameMissing));
    }

    #[test]
    fn non_ascii_arguments_hash_their_utf8() {
        let mut v = seed();
        v["arguments"] = json!({"table": "employés", "note": "日本"});
        let p = project(FALLBACK_PROJECTION, &v).unwrap();
        let text = String::from_utf8(p.preimage.clone()).unwrap();
        assert!(text.contains("employés") && text.contains("日本"), "{text}");
        assert_eq!(p.digest, sha256_tagged(&p.preimage));
    }
}
