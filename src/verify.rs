//! The offline verifier: checks PolicyGrants, DestinationAllowlists, Trust Bundles and signed
//! key sets with no HSM and no network, under the conventions of SPEC-NOTES.md.
//!
//! Order of checks (and so which code a doubly-bad artifact gets): structure and MPCP
//! conformance -> key resolution (KEY_NOT_FOUND, KEY_REVOKED, key format) -> algorithm
//! deprecation -> signature -> time (expiry with drift tolerance, not-yet-valid issuedAt) ->
//! revocation lists.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::canonical::{Domain, signing_digest};
use crate::clock::{Clock, DEFAULT_DRIFT, format_rfc3339, parse_rfc3339};
use crate::crypto::{Alg, AlgorithmGate, decode_signature};
use crate::error::{Error, ErrorCode, Result};
use crate::jwk::{Jwk, KeySet};
use crate::model::{DestinationAllowlist, PolicyGrant, TrustBundle, from_value};
use crate::seams::debug_showing;

/// Kinds of artifacts the verifier recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactKind {
    /// MPCP PolicyGrant.
    PolicyGrant,
    /// Project extension: DestinationAllowlist.
    DestinationAllowlist,
    /// MPCP Trust Bundle.
    TrustBundle,
    /// Project extension: signed key set.
    SignedKeySet,
    /// An unsigned key-set document (only as a key source).
    KeySet,
}

impl ArtifactKind {
    /// Recognises an artifact by its identifying members.
    pub fn detect(value: &Value) -> Result<ArtifactKind> {
        let has = |k: &str| value.get(k).is_some();
        let kind = if has("grantId") && has("policyHash") {
            ArtifactKind::PolicyGrant
        } else if has("allowlistId") {
            ArtifactKind::DestinationAllowlist
        } else if has("bundleId") {
            ArtifactKind::TrustBundle
        } else if has("keySet") && has("signerKeyId") {
            ArtifactKind::SignedKeySet
        } else if has("keys") && has("version") {
            ArtifactKind::KeySet
        } else {
            return Err(Error::new(
                ErrorCode::ArtifactUnknown,
                "not a PolicyGrant, DestinationAllowlist, Trust Bundle or key set",
            ));
        };
        Ok(kind)
    }

    /// Human name.
    pub fn name(self) -> &'static str {
        match self {
            ArtifactKind::PolicyGrant => "PolicyGrant",
            ArtifactKind::DestinationAllowlist => "DestinationAllowlist",
            ArtifactKind::TrustBundle => "TrustBundle",
            ArtifactKind::SignedKeySet => "SignedKeySet",
            ArtifactKind::KeySet => "KeySet",
        }
    }
}

/// A signed key set (project extension, domain `MPCP:KeySet:1.0:`): the grant-signing key set
/// signed by the root key, so a gateway pinning the root key can check what it fetched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignedKeySet {
    /// "1.0".
    pub version: String,
    /// The key-set document.
    pub key_set: KeySet,
    /// RFC 3339 issuance time.
    pub issued_at: String,
    /// RFC 3339 expiry.
    pub expires_at: String,
    /// kid of the root key that signed.
    pub signer_key_id: String,
    /// base64url signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// Where verification keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// A key set the caller trusts as given (a local JWKS file, or one already verified).
    Jwks(KeySet),
    /// A Trust Bundle that has been verified against root keys.
    Bundle(Box<TrustBundle>),
}

/// What a successful verification established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Artifact kind.
    pub kind: ArtifactKind,
    /// Artifact identifier (grantId, allowlistId, bundleId, or signer kid for key sets).
    pub id: String,
    /// kid of the key whose signature verified.
    pub kid: String,
    /// Its algorithm.
    pub alg: Alg,
}

/// The offline verifier.
#[derive(Clone)]
pub struct Verifier {
    clock: Arc<dyn Clock>,
    drift: Duration,
    gate: Option<Arc<dyn AlgorithmGate>>,
}

debug_showing!(Verifier { drift });

struct Facts<'a> {
    kind: ArtifactKind,
    domain: Domain,
    version: &'a str,
    id: String,
    kid: &'a str,
    issuer: Option<&'a str>,
    issued_at: Option<&'a str>,
    expires_at: &'a str,
}

impl Verifier {
    /// A verifier on `clock` with the default drift tolerance (300 s) and no deprecation gate.
    pub fn new(clock: Arc<dyn Clock>) -> Verifier {
        Verifier {
            clock,
            drift: DEFAULT_DRIFT,
            gate: None,
        }
    }

    /// Sets the drift tolerance applied to expiry and issuance times.
    pub fn with_drift(mut self, drift: Duration) -> Verifier {
        self.drift = drift;
        self
    }

    /// Applies version-gated algorithm deprecation.
    pub fn with_algorithm_gate(mut self, gate: Arc<dyn AlgorithmGate>) -> Verifier {
        self.gate = Some(gate);
        self
    }

    /// Turns a key file into a key source: a JWKS is taken as given; a Trust Bundle or a
    /// signed key set must verify against `root` first (BUNDLE_ROOT_REQUIRED without it).
    pub fn key_source(&self, value: &Value, root: Option<&KeySet>) -> Result<KeySource> {
        match ArtifactKind::detect(value)? {
            ArtifactKind::KeySet => Ok(KeySource::Jwks(KeySet::from_value(value)?)),
            kind @ (ArtifactKind::TrustBundle | ArtifactKind::SignedKeySet) => {
                let root = root.ok_or_else(|| {
                    Error::new(
                        ErrorCode::BundleRootRequired,
                        format!(
                            "a {} key source must be verified: give the root keys",
                            kind.name()
                        ),
                    )
                })?;
                let source = KeySource::Jwks(root.clone());
                self.verify(value, &source)?;
                Ok(match kind {
                    ArtifactKind::TrustBundle => {
                        KeySource::Bundle(Box::new(TrustBundle::from_value(value)?))
                    }
                    _ => {
                        KeySource::Jwks(from_value::<SignedKeySet>(value, "SignedKeySet")?.key_set)
                    }
                })
            }
            other => Err(Error::new(
                ErrorCode::KeySetInvalid,
                format!("a {} is not a key source", other.name()),
            )),
        }
    }

    /// Verifies a signed artifact against `keys`.
    pub fn verify(&self, value: &Value, keys: &KeySource) -> Result<Verified> {
        let kind = ArtifactKind::detect(value)?;
        match kind {
            ArtifactKind::PolicyGrant => {
                let g = PolicyGrant::from_value(value)?;
                g.validate()?;
                let v = self.check(
                    value,
                    keys,
                    Facts {
                        kind,
                        domain: Domain::PolicyGrant,
                        version: &g.version,
                        id: g.grant_id.clone(),
                        kid: &g.issuer_key_id,
                        issuer: Some(&g.issuer),
                        issued_at: g.issued_at.as_deref(),
                        expires_at: &g.expires_at,
                    },
                )?;
                if let KeySource::Bundle(b) = keys
                    && b.revoked_grant_ids
                        .iter()
                        .flatten()
                        .any(|id| *id == g.grant_id)
                {
                    return Err(Error::field(
                        ErrorCode::GrantRevoked,
                        "grantId",
                        format!(
                            "grant {:?} is listed as revoked by bundle {:?}",
                            g.grant_id, b.bundle_id
                        ),
                    ));
                }
                Ok(v)
            }
            ArtifactKind::DestinationAllowlist => {
                let a = DestinationAllowlist::from_value(value)?;
                self.check(
                    value,
                    keys,
                    Facts {
                        kind,
                        domain: Domain::DestinationAllowlist,
                        version: &a.version,
                        id: a.allowlist_id.clone(),
                        kid: &a.issuer_key_id,
                        issuer: Some(&a.issuer),
                        issued_at: Some(&a.issued_at),
                        expires_at: &a.expires_at,
                    },
                )
            }
            ArtifactKind::TrustBundle => {
                let b = TrustBundle::from_value(value)?;
                self.check(
                    value,
                    keys,
                    Facts {
                        kind,
                        domain: Domain::TrustBundle,
                        version: &b.version,
                        id: b.bundle_id.clone(),
                        kid: &b.bundle_key_id,
                        issuer: Some(&b.bundle_issuer),
                        issued_at: b.issued_at.as_deref(),
                        expires_at: &b.expires_at,
                    },
                )
            }
            ArtifactKind::SignedKeySet => {
                let s: SignedKeySet = from_value(value, "SignedKeySet")?;
                crate::model::check_version(&s.version)?;
                s.key_set.validate()?;
                self.check(
                    value,
                    keys,
                    Facts {
                        kind,
                        domain: Domain::KeySet,
                        version: &s.version,
                        id: s.signer_key_id.clone(),
                        kid: &s.signer_key_id,
                        issuer: None,
                        issued_at: Some(&s.issued_at),
                        expires_at: &s.expires_at,
                    },
                )
            }
            ArtifactKind::KeySet => Err(Error::new(
                ErrorCode::ArtifactUnknown,
                "an unsigned key set carries no signature to verify",
            )),
        }
    }

    fn check(&self, value: &Value, keys: &KeySource, f: Facts<'_>) -> Result<Verified> {
        let jwk = resolve_key(keys, f.issuer, f.kid)?;
        let public = jwk.validate_public().map_err(|e| e.within("key"))?;
        if !jwk.is_active() {
            return Err(Error::new(
                ErrorCode::KeyRevoked,
                format!("key {:?} is revoked (active:false)", jwk.kid),
            ));
        }
        let now = self.clock.now();
        let issued_at = f
            .issued_at
            .map(|t| parse_rfc3339(t, "issuedAt"))
            .transpose()?;
        if let Some(gate) = &self.gate {
            gate.check_artifact(public.alg(), issued_at, now)?;
        }
        let sig_text = value
            .get("signature")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                Error::field(
                    ErrorCode::SchemaInvalid,
                    "signature",
                    "signature is missing",
                )
            })?;
        let sig = decode_signature(sig_text)?;
        let digest = signing_digest(f.domain, f.version, value)?;
        public.verify_digest(&digest, &sig).map_err(|e| {
            if e.code == ErrorCode::SignatureInvalid && f.kind == ArtifactKind::PolicyGrant {
                Error::new(ErrorCode::PolicyGrantSignatureInvalid, e.message)
            } else {
                e
            }
        })?;
        self.check_times(now, issued_at, f.expires_at)?;
        Ok(Verified {
            kind: f.kind,
            id: f.id,
            kid: jwk.kid.clone(),
            alg: public.alg(),
        })
    }

    fn check_times(
        &self,
        now: OffsetDateTime,
        issued_at: Option<OffsetDateTime>,
        expires_at: &str,
    ) -> Result<()> {
        let expires = parse_rfc3339(expires_at, "expiresAt")?;
        if now > expires + self.drift {
            return Err(Error::field(
                ErrorCode::ArtifactExpired,
                "expiresAt",
                format!(
                    "expired at {} (now {})",
                    format_rfc3339(expires),
                    format_rfc3339(now)
                ),
            ));
        }
        if let Some(issued) = issued_at
            && issued > now + self.drift
        {
            return Err(Error::field(
                ErrorCode::ArtifactNotYetValid,
                "issuedAt",
                format!("issued in the future ({})", format_rfc3339(issued)),
            ));
        }
        Ok(())
    }
}

fn resolve_key<'a>(keys: &'a KeySource, issuer: Option<&str>, kid: &str) -> Result<&'a Jwk> {
    let not_found = || Error::new(ErrorCode::KeyNotFound, format!("no key with kid {kid:?}"));
    match keys {
        KeySource::Jwks(set) => set.find(kid).ok_or_else(not_found),
        KeySource::Bundle(b) => {
            let issuer = issuer.ok_or_else(not_found)?;
            if !b.approved_issuers.iter().any(|a| a == issuer) {
                return Err(Error::new(
                    ErrorCode::IssuerNotApproved,
                    format!(
                        "issuer {issuer:?} is not approved by bundle {:?}",
                        b.bundle_id
                    ),
                ));
            }
            b.find_key(issuer, kid).ok_or_else(not_found)
        }
    }
}
