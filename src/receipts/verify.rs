//! The offline receipt verifier, in the order of MCP PR #2867: authenticity before anything
//! else carries weight (a known, active receipt key and a valid signature), then the closed
//! schema and `alg`, freshness, audience, the decision itself, the projection id, and the
//! request digest recomputed from the verifier's own view with the nonce echoed. The
//! single-use check comes after all of these and needs state; it is not here.
//!
//! Every refusal is a [`Verdict`] with a stable wire name. Nothing is guessed: a record
//! that cannot be read as exactly one of the shapes is refused.

use std::time::Duration;

use serde_json::Value;
use time::OffsetDateTime;

use super::projection::{ProjectionError, project};
use super::record::{
    Asserted, DECISION_SIGNED, Decision, DecisionRecord, OUTCOME_SIGNED, OutcomeRecord,
    RECEIPT_ALG, RECORD_VERSION, back_link_well_formed, decision_digest, is_record_time,
    signed_payload,
};
use crate::clock::parse_rfc3339;
use crate::crypto::PublicKey;
use crate::jwk::Jwk;

/// The outcome of a check, with a stable wire name ([`Verdict::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Every check passed.
    Valid,
    /// Not a JSON object with the members a signature can be checked over.
    Malformed,
    /// `secretVersion` names no receipt key of the key set, or a retired or revoked one.
    UnknownKey,
    /// The signature is not 128 lowercase hex, or does not verify.
    SignatureInvalid,
    /// An unknown or missing member, a wrong type, version or time form.
    SchemaInvalid,
    /// `alg` is not `ES256`.
    AlgUnsupported,
    /// The issuer block's `alg` differs from the record's.
    AlgMismatch,
    /// Older than its lifetime (`expSeconds`, capped by the verifier's maximum age).
    Expired,
    /// Issued in the future (beyond the allowed skew).
    NotYetValid,
    /// Not for this audience.
    WrongAudience,
    /// The decision is `block` or `escalate`.
    Denied,
    /// The record names no projection, or one this verifier does not know.
    ProjectionUnknown,
    /// The observed request has no string `name`.
    NameMissing,
    /// The observed request has no `arguments` object.
    ArgumentsMissing,
    /// The observed request has no `_meta.authorization_binding`.
    BindingMissing,
    /// The binding is not an object with a non-empty string `nonce`.
    BindingMalformed,
    /// The digest recomputed from the observed request differs from the record's.
    DigestMismatch,
    /// The binding's nonce is not the one the record echoes.
    NonceMismatch,
    /// An outcome whose backLink or `decisionDigest` does not name the decision.
    NotPaired,
    /// Distinct decisions under one binding share the latest `decidedAt`.
    Ambiguous,
}

impl Verdict {
    /// The stable wire name.
    pub fn as_str(self) -> &'static str {
        use Verdict::*;
        match self {
            Valid => "valid",
            Malformed => "malformed",
            UnknownKey => "unknown_key",
            SignatureInvalid => "signature_invalid",
            SchemaInvalid => "schema_invalid",
            AlgUnsupported => "alg_unsupported",
            AlgMismatch => "alg_mismatch",
            Expired => "expired",
            NotYetValid => "not_yet_valid",
            WrongAudience => "wrong_audience",
            Denied => "denied",
            ProjectionUnknown => "projection_unknown",
            NameMissing => "name_missing",
            ArgumentsMissing => "arguments_missing",
            BindingMissing => "binding_missing",
            BindingMalformed => "binding_malformed",
            DigestMismatch => "digest_mismatch",
            NonceMismatch => "nonce_mismatch",
            NotPaired => "not_paired",
            Ambiguous => "ambiguous",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<ProjectionError> for Verdict {
    fn from(e: ProjectionError) -> Verdict {
        match e {
            ProjectionError::UnknownProjection => Verdict::ProjectionUnknown,
            ProjectionError::NameMissing => Verdict::NameMissing,
            ProjectionError::ArgumentsMissing => Verdict::ArgumentsMissing,
            ProjectionError::BindingMissing => Verdict::BindingMissing,
            ProjectionError::BindingMalformed => Verdict::BindingMalformed,
        }
    }
}

/// The receipt keys a verifier trusts: a JWKS (`{"keys": [...]}`) of P-256 keys whose
/// `kid` is the records' `secretVersion`. Only keys without `active: false` authenticate.
#[derive(Debug, Clone, Default)]
pub struct ReceiptKeys {
    keys: Vec<(String, PublicKey, bool)>,
}

impl ReceiptKeys {
    /// Reads a JWKS. Keys of another algorithm than ES256 are refused (KEY_ALG_MISMATCH):
    /// receipt keys are ES256 only.
    pub fn from_jwks(doc: &Value) -> crate::Result<ReceiptKeys> {
        let bad = |m: &str| crate::Error::new(crate::ErrorCode::KeySetInvalid, m.to_string());
        let list = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("a receipt key set is {\"keys\": [JWK...]}"))?;
        let mut keys = Vec::new();
        for (i, k) in list.iter().enumerate() {
            let jwk: Jwk =
                serde_json::from_value(k.clone()).map_err(|e| bad(&format!("keys[{i}]: {e}")))?;
            let key = PublicKey::from_jwk(&jwk).map_err(|e| e.within(&format!("keys[{i}]")))?;
            if !matches!(key, PublicKey::P256(_)) {
                return Err(crate::Error::field(
                    crate::ErrorCode::KeyAlgMismatch,
                    format!("keys[{i}]"),
                    "receipt keys are ES256 (P-256) only",
                ));
            }
            keys.push((jwk.kid.clone(), key, jwk.is_active()));
        }
        Ok(ReceiptKeys { keys })
    }

    /// A key set of the given `(kid, key, active)` triples.
    pub fn new(keys: Vec<(String, PublicKey, bool)>) -> ReceiptKeys {
        ReceiptKeys { keys }
    }

    fn active(&self, kid: &str) -> Option<&PublicKey> {
        self.keys
            .iter()
            .find(|(k, _, active)| k == kid && *active)
            .map(|(_, key, _)| key)
    }
}

/// What a verifier expects of a decision besides authenticity.
#[derive(Debug, Clone)]
pub struct Expect<'a> {
    /// The verifier's time.
    pub now: OffsetDateTime,
    /// The longest a decision may be acted on after `iat`, whatever `expSeconds` says.
    pub max_age: Duration,
    /// How far in the future `iat` may lie (clock skew).
    pub skew: Duration,
    /// The audience the verifier serves; `None` skips the check (offline inspection).
    pub audience: Option<&'a str>,
}

/// Verifies an ES256 signature: `hex` is 128 lowercase hex of the raw `r || s` pair over
/// `message` (ECDSA P-256 with SHA-256).
pub fn verify_es256_hex(key: &PublicKey, message: &[u8], hex_sig: &str) -> bool {
    let lower = hex_sig
        .bytes()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let (PublicKey::P256(k), true, Ok(raw)) =
        (key, lower && hex_sig.len() == 128, hex::decode(hex_sig))
    else {
        return false;
    };
    let point = k.to_sec1_point(false);
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P256_SHA256_FIXED,
        point.as_bytes(),
    )
    .verify(message, &raw)
    .is_ok()
}

/// Step 1: the record is signed by an active key of `keys` over `members`.
fn authenticate(
    record: &Value,
    keys: &ReceiptKeys,
    members: &[&str],
    block: &str,
) -> Result<(), Verdict> {
    let obj = record.as_object().ok_or(Verdict::Malformed)?;
    if members.iter().any(|m| !obj.contains_key(*m)) {
        return Err(Verdict::Malformed);
    }
    let sig = obj
        .get("signature")
        .and_then(Value::as_str)
        .ok_or(Verdict::Malformed)?;
    let kid = obj
        .get(block)
        .and_then(|b| b.get("secretVersion"))
        .and_then(Value::as_str)
        .ok_or(Verdict::Malformed)?;
    let key = keys.active(kid).ok_or(Verdict::UnknownKey)?;
    let payload = signed_payload(record, members).ok_or(Verdict::Malformed)?;
    if !verify_es256_hex(key, &payload, sig) {
        return Err(Verdict::SignatureInvalid);
    }
    Ok(())
}

/// Step 2: alg, version, the issuer block's alg, and the time form.
fn check_common(version: u64, alg: &str, asserted: &Asserted) -> Result<(), Verdict> {
    if version != RECORD_VERSION || !is_record_time(&asserted.iat) {
        return Err(Verdict::SchemaInvalid);
    }
    if alg != RECEIPT_ALG {
        return Err(Verdict::AlgUnsupported);
    }
    if asserted.alg != alg {
        return Err(Verdict::AlgMismatch);
    }
    Ok(())
}

/// Authenticity, closed schema and alg, freshness and audience of a decision record (the
/// decision itself is not judged: [`admit`] does that). Returns the typed record.
pub fn check_decision(
    record: &Value,
    keys: &ReceiptKeys,
    expect: &Expect<'_>,
) -> Result<DecisionRecord, Verdict> {
    authenticate(record, keys, &DECISION_SIGNED, "issuerAsserted")?;
    let d: DecisionRecord =
        serde_json::from_value(record.clone()).map_err(|_| Verdict::SchemaInvalid)?;
    check_common(d.version, &d.alg, &d.issuer_asserted)?;
    if !is_record_time(&d.decision_derived.decided_at) || !back_link_well_formed(&d.back_link) {
        return Err(Verdict::SchemaInvalid);
    }
    let iat = parse_rfc3339(&d.issuer_asserted.iat, "iat").map_err(|_| Verdict::SchemaInvalid)?;
    if iat > expect.now + expect.skew {
        return Err(Verdict::NotYetValid);
    }
    let lifetime = d.issuer_asserted.exp_seconds.map_or(expect.max_age, |s| {
        Duration::from_secs(s).min(expect.max_age)
    });
    if expect.now > iat + lifetime {
        return Err(Verdict::Expired);
    }
    if let Some(aud) = expect.audience
        && d.issuer_asserted.aud.as_deref() != Some(aud)
    {
        return Err(Verdict::WrongAudience);
    }
    Ok(d)
}

/// Everything a provider checks before it runs a call, after [`check_decision`]: the
/// decision is `allow`, the record names a known projection, and the digest recomputed
/// from `observed` (the `tools/call` params as the provider saw them) and the echoed nonce
/// match. The single-use registry comes after this.
pub fn admit(
    record: &Value,
    keys: &ReceiptKeys,
    expect: &Expect<'_>,
    observed: &Value,
) -> Result<DecisionRecord, Verdict> {
    let d = check_decision(record, keys, expect)?;
    if d.decision_derived.decision != Decision::Allow {
        return Err(Verdict::Denied);
    }
    let projection = d
        .back_link
        .fallback_projection
        .as_deref()
        .ok_or(Verdict::ProjectionUnknown)?;
    let p = project(projection, observed)?;
    if p.nonce != d.back_link.attestation_nonce {
        return Err(Verdict::NonceMismatch);
    }
    if p.digest != d.back_link.attestation_digest {
        return Err(Verdict::DigestMismatch);
    }
    Ok(d)
}

/// Authenticity, closed schema and alg of an outcome record. Outcomes are durable records,
/// not capabilities: no freshness applies.
pub fn check_outcome(record: &Value, keys: &ReceiptKeys) -> Result<OutcomeRecord, Verdict> {
    authenticate(record, keys, &OUTCOME_SIGNED, "receiptAsserted")?;
    let o: OutcomeRecord =
        serde_json::from_value(record.clone()).map_err(|_| Verdict::SchemaInvalid)?;
    check_common(o.version, &o.alg, &o.receipt_asserted)?;
    if o.receipt_asserted.exp_seconds.is_some()
        || !is_record_time(&o.outcome_derived.completed_at)
        || !back_link_well_formed(&o.back_link)
    {
        return Err(Verdict::SchemaInvalid);
    }
    Ok(o)
}

/// Pairs an outcome with a decision: both authentic; the same backLink (check A), and the
/// outcome's `decisionDigest` is the digest of this very decision record (check B; an
/// outcome without it does not pair).
pub fn pair(
    decision: &Value,
    outcome: &Value,
    keys: &ReceiptKeys,
    expect: &Expect<'_>,
) -> Result<(), Verdict> {
    let d = check_decision(decision, keys, expect)?;
    let o = check_outcome(outcome, keys)?;
    let digest = decision_digest(decision).ok_or(Verdict::Malformed)?;
    if d.back_link != o.back_link
        || o.outcome_derived.decision_digest.as_deref() != Some(digest.as_str())
    {
        return Err(Verdict::NotPaired);
    }
    Ok(())
}

/// The effective decision among `decisions` (all for one backLink): the one with the latest
/// `decidedAt`. Byte-identical records are one decision; distinct records sharing the
/// latest `decidedAt` are [`Verdict::Ambiguous`], never resolved by order or nonce. Each
/// record is checked by [`check_decision`]; records of another backLink than the first are
/// refused as [`Verdict::NotPaired`]. Returns the index of the effective record.
pub fn effective(
    decisions: &[Value],
    keys: &ReceiptKeys,
    expect: &Expect<'_>,
) -> Result<usize, Verdict> {
    let mut checked = Vec::with_capacity(decisions.len());
    for v in decisions {
        let d = check_decision(v, keys, expect)?;
        let at = parse_rfc3339(&d.decision_derived.decided_at, "decidedAt")
            .map_err(|_| Verdict::SchemaInvalid)?;
        checked.push((d, at));
    }
    let Some((first, _)) = checked.first() else {
        return Err(Verdict::Malformed);
    };
    if checked.iter().any(|(d, _)| d.back_link != first.back_link) {
        return Err(Verdict::NotPaired);
    }
    let latest = checked
        .iter()
        .map(|(_, at)| *at)
        .max()
        .ok_or(Verdict::Malformed)?;
    let mut winners = checked
        .iter()
        .enumerate()
        .filter(|(_, (_, at))| *at == latest)
        .map(|(i, _)| i);
    let win = winners.next().ok_or(Verdict::Malformed)?;
    if winners.any(|i| decisions[i] != decisions[win]) {
        return Err(Verdict::Ambiguous);
    }
    Ok(win)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receipts::projection::FALLBACK_PROJECTION;
    use p256::ecdsa::signature::Signer;
    use serde_json::json;

    type Edit = fn(&mut Value);

    fn key(seed: u8) -> p256::ecdsa::SigningKey {
        p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap()
    }

    fn keys() -> ReceiptKeys {
        let public = |s| PublicKey::P256(*key(s).verifying_key());
        ReceiptKeys::new(vec![
            ("rk-1".into(), public(1), true),
            ("rk-old".into(), public(2), false),
        ])
    }

    fn sign(mut record: Value, with: u8, members: &[&str]) -> Value {
        record.as_object_mut().unwrap().remove("signature");
        let payload = signed_payload(&record, members).unwrap();
        let sig: p256::ecdsa::Signature = key(with).sign(&payload);
        record["signature"] = json!(hex::encode(sig.to_bytes()));
        record
    }

    fn observed() -> Value {
        json!({
            "name": "query_table",
            "arguments": {"limit": 10, "table": "employees"},
            "_meta": {"authorization_binding": {"nonce": "server-chosen-nonce-001"}, "progressToken": 3},
        })
    }

    fn unsigned_decision(decision: &str, decided_at: &str) -> Value {
        let p = project(FALLBACK_PROJECTION, &observed()).unwrap();
        json!({
            "version": 1,
            "alg": "ES256",
            "backLink": {
                "attestationDigest": p.digest,
                "attestationNonce": p.nonce,
                "fallbackProjection": FALLBACK_PROJECTION,
            },
            "decisionDerived": {"decision": decision, "decidedAt": decided_at, "policyId": "rp-1"},
            "issuerAsserted": {
                "iss": "pa.test", "sub": "agent:billing", "iat": "2026-12-01T10:00:00Z",
                "nonce": "0123456789abcdef0123456789abcdef", "alg": "ES256",
                "secretVersion": "rk-1", "aud": "provider:files", "expSeconds": 300,
            },
        })
    }

    fn decision(decision: &str) -> Value {
        sign(
            unsigned_decision(decision, "2026-12-01T10:00:00Z"),
            1,
            &DECISION_SIGNED,
        )
    }

    fn expect() -> Expect<'static> {
        Expect {
            now: parse_rfc3339("2026-12-01T10:01:00Z", "now").unwrap(),
            max_age: Duration::from_secs(600),
            skew: Duration::from_secs(30),
            audience: Some("provider:files"),
        }
    }

    #[test]
    fn an_allow_decision_for_the_observed_call_is_admitted() {
        let d = admit(&decision("allow"), &keys(), &expect(), &observed()).unwrap();
        assert_eq!(d.decision_derived.decision, Decision::Allow);
    }

    #[test]
    fn authenticity_comes_before_everything_else() {
        // A record that is wrong in every later respect still answers on its signature.
        let mut forged = decision("block");
        forged["decisionDerived"]["decision"] = json!("allow");
        forged["alg"] = json!("none");
        forged["extra"] = json!(1);
        assert_eq!(
            admit(&forged, &keys(), &expect(), &json!({})).unwrap_err(),
            Verdict::SignatureInvalid
        );
        let by_other = sign(
            unsigned_decision("allow", "2026-12-01T10:00:00Z"),
            9,
            &DECISION_SIGNED,
        );
        assert_eq!(
            check_decision(&by_other, &keys(), &expect()).unwrap_err(),
            Verdict::SignatureInvalid
        );
        let mut retired = unsigned_decision("allow", "2026-12-01T10:00:00Z");
        retired["issuerAsserted"]["secretVersion"] = json!("rk-old");
        let retired = sign(retired, 2, &DECISION_SIGNED);
        assert_eq!(
            check_decision(&retired, &keys(), &expect()).unwrap_err(),
            Verdict::UnknownKey
        );
        let mut upper = decision("allow");
        upper["signature"] = json!(upper["signature"].as_str().unwrap().to_uppercase());
        assert_eq!(
            check_decision(&upper, &keys(), &expect()).unwrap_err(),
            Verdict::SignatureInvalid
        );
        assert_eq!(
            check_decision(&json!([1]), &keys(), &expect()).unwrap_err(),
            Verdict::Malformed
        );
        let mut missing = decision("allow");
        missing.as_object_mut().unwrap().remove("backLink");
        assert_eq!(
            check_decision(&missing, &keys(), &expect()).unwrap_err(),
            Verdict::Malformed
        );
    }

    #[test]
    fn signed_but_wrong_records_get_their_own_verdicts() {
        let resign = |edit: fn(&mut Value)| {
            let mut v = unsigned_decision("allow", "2026-12-01T10:00:00Z");
            edit(&mut v);
            sign(v, 1, &DECISION_SIGNED)
        };
        let cases: [(Edit, Verdict); 9] = [
            (
                |v| v["decisionDerived"]["colour"] = json!("red"),
                Verdict::SchemaInvalid,
            ),
            (|v| v["version"] = json!(2), Verdict::SchemaInvalid),
            (
                |v| v["issuerAsserted"]["iat"] = json!("2026-12-01T10:00:00.5Z"),
                Verdict::SchemaInvalid,
            ),
            (
                |v| {
                    v["alg"] = json!("RS256");
                    v["issuerAsserted"]["alg"] = json!("RS256");
                },
                Verdict::AlgUnsupported,
            ),
            (
                |v| v["issuerAsserted"]["alg"] = json!("HS256"),
                Verdict::AlgMismatch,
            ),
            (
                |v| v["issuerAsserted"]["iat"] = json!("2026-12-01T09:50:00Z"),
                Verdict::Expired,
            ),
            (
                |v| v["issuerAsserted"]["iat"] = json!("2026-12-01T10:05:00Z"),
                Verdict::NotYetValid,
            ),
            (
                |v| v["issuerAsserted"]["aud"] = json!("provider:other"),
                Verdict::WrongAudience,
            ),
            (
                |v| v["backLink"]["fallbackProjection"] = json!("tools_call_params_v9"),
                Verdict::ProjectionUnknown,
            ),
        ];
        for (edit, verdict) in cases {
            assert_eq!(
                admit(&resign(edit), &keys(), &expect(), &observed()).unwrap_err(),
                verdict
            );
        }
        for denied in ["block", "escalate"] {
            assert_eq!(
                admit(&decision(denied), &keys(), &expect(), &observed()).unwrap_err(),
                Verdict::Denied
            );
        }
    }

    #[test]
    fn the_provider_view_must_project_to_the_signed_digest() {
        let d = decision("allow");
        let with = |edit: fn(&mut Value)| {
            let mut v = observed();
            edit(&mut v);
            admit(&d, &keys(), &expect(), &v).map(|_| ())
        };
        assert_eq!(with(|v| v["_meta"]["traceparent"] = json!("00-1")), Ok(()));
        assert_eq!(
            with(|v| v["arguments"]["limit"] = json!(11)),
            Err(Verdict::DigestMismatch)
        );
        assert_eq!(
            with(|v| v["name"] = json!("drop_table")),
            Err(Verdict::DigestMismatch)
        );
        assert_eq!(
            with(|v| v["_meta"]["authorization_binding"]["nonce"] = json!("other")),
            Err(Verdict::NonceMismatch)
        );
        assert_eq!(
            with(|v| v["_meta"] = json!({})),
            Err(Verdict::BindingMissing)
        );
        assert_eq!(
            with(|v| v["_meta"]["authorization_binding"] = json!([])),
            Err(Verdict::BindingMalformed)
        );
    }

    fn outcome_for(decision: &Value) -> Value {
        let unsigned = json!({
            "version": 1,
            "alg": "ES256",
            "backLink": decision["backLink"],
            "outcomeDerived": {
                "status": "executed",
                "completedAt": "2026-12-01T10:00:02Z",
                "decisionDigest": decision_digest(decision).unwrap(),
            },
            "receiptAsserted": {
                "iss": "pa.test", "sub": "agent:billing", "iat": "2026-12-01T10:00:02Z",
                "nonce": "fedcba9876543210fedcba9876543210", "alg": "ES256", "secretVersion": "rk-1",
            },
        });
        sign(unsigned, 1, &OUTCOME_SIGNED)
    }

    #[test]
    fn an_outcome_pairs_only_with_its_own_decision() {
        let d = decision("allow");
        let o = outcome_for(&d);
        pair(&d, &o, &keys(), &expect()).unwrap();
        // Same backLink, other content (a superseding decision): check B refuses it.
        let other = sign(
            unsigned_decision("allow", "2026-12-01T10:00:01Z"),
            1,
            &DECISION_SIGNED,
        );
        assert_eq!(
            pair(&other, &o, &keys(), &expect()).unwrap_err(),
            Verdict::NotPaired
        );
        let mut no_digest = o.clone();
        no_digest["outcomeDerived"]
            .as_object_mut()
            .unwrap()
            .remove("decisionDigest");
        let no_digest = sign(no_digest, 1, &OUTCOME_SIGNED);
        assert_eq!(
            pair(&d, &no_digest, &keys(), &expect()).unwrap_err(),
            Verdict::NotPaired
        );
        let mut substituted = o.clone();
        substituted["outcomeDerived"]["status"] = json!("refused");
        assert_eq!(
            pair(&d, &substituted, &keys(), &expect()).unwrap_err(),
            Verdict::SignatureInvalid
        );
    }

    #[test]
    fn the_latest_decision_wins_and_a_tie_is_ambiguous() {
        let esc = sign(
            unsigned_decision("escalate", "2026-12-01T10:00:00Z"),
            1,
            &DECISION_SIGNED,
        );
        let allow = sign(
            unsigned_decision("allow", "2026-12-01T10:00:30Z"),
            1,
            &DECISION_SIGNED,
        );
        let block = sign(
            unsigned_decision("block", "2026-12-01T10:00:30Z"),
            1,
            &DECISION_SIGNED,
        );
        assert_eq!(
            effective(&[esc.clone(), allow.clone()], &keys(), &expect()),
            Ok(1)
        );
        assert_eq!(
            effective(&[allow.clone(), esc.clone()], &keys(), &expect()),
            Ok(0)
        );
        // Byte-identical records are one decision.
        assert_eq!(
            effective(&[allow.clone(), allow.clone()], &keys(), &expect()),
            Ok(0)
        );
        for set in [
            [allow.clone(), block.clone()],
            [block.clone(), allow.clone()],
        ] {
            assert_eq!(effective(&set, &keys(), &expect()), Err(Verdict::Ambiguous));
        }
    }
}
