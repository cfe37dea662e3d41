//! Key-set documents: the `/.well-known/mpcp-keys.json` document of the grant-signing role,
//! and the signed key set (a project extension, served beside it at
//! [`SIGNED_WELL_KNOWN_PATH`]) that lets a gateway pinning only the root public key check a
//! fetched key set. [`crate::keys::publication`] keeps both built in memory for the service.
//!
//! Key set: exactly the spec's Key Set Document (key-resolution.md),
//! `{"version":"1.0","keys":[JWK...]}`, nothing else, since resolvers read `doc.keys`.
//! Each JWK carries kid, use "sig", kty, crv, x (and y for EC), alg and `active`; never `d`.
//! Pending, active and retired keys are published `active: true`; revoked and destroyed keys
//! and keys whose algorithm is deprecated (at the time of building) `active: false`.
//!
//! Signed key set (extension, domain prefix `MPCP:KeySet:1.0:`):
//! `{"version":"1.0","keySet":{...},"issuedAt","expiresAt","signerKeyId","signature"}`, signed
//! by the root role's active key over the document without `signature` with the MPCP
//! convention ([`crate::signer::sign_artifact`]). Lifetime at most [`MAX_SIGNED_LIFETIME`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::canonical::{Domain, signing_digest};
use crate::clock::{Clock, FixedClock, format_rfc3339, parse_rfc3339};
use crate::crypto::{AlgorithmGate, decode_signature};
use crate::error::{Error, ErrorCode, Result};
use crate::events::{Actor, Event, EventSink};
use crate::jwk::KeySet;
use crate::keys::{ActiveKeys, KeyRole};
use crate::model::from_value;
use crate::signer::sign_artifact;
use crate::verify::{ArtifactKind, KeySource, SignedKeySet, Verifier};

/// Where the key set is served.
pub const WELL_KNOWN_PATH: &str = "/.well-known/mpcp-keys.json";
/// Where the signed key set (extension) is served, and its file name in `keys export`.
pub const SIGNED_WELL_KNOWN_PATH: &str = "/.well-known/mpcp-keys.signed.json";
/// Version of the key-set document.
pub const KEY_SET_VERSION: &str = "1.0";
/// Version of the signed key-set extension (also the version in its domain prefix).
pub const SIGNED_KEY_SET_VERSION: &str = "1.0";
/// Default lifetime of a signed key set.
pub const DEFAULT_SIGNED_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Longest lifetime of a signed key set (as for trust bundles).
pub const MAX_SIGNED_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// The key set URL a resolver derives from `issuer` (key-resolution.md "Deriving the URL
/// from issuer"): a bare domain or an `https://` URL gives `https://{host}/.well-known/…`,
/// `did:web:host[:path…]` gives `https://host[/path…]/.well-known/…`. SCHEMA_INVALID for any
/// other form (another scheme, an empty host, a path on an https URL).
pub fn key_set_url(issuer: &str) -> Result<String> {
    let bad = |why: &str| {
        Error::field(
            ErrorCode::SchemaInvalid,
            "issuer",
            format!("issuer {issuer:?}: {why}"),
        )
    };
    let (host, path) = if let Some(rest) = issuer.strip_prefix("did:web:") {
        let mut parts = rest.split(':');
        let host = parts.next().unwrap_or_default().replace("%3A", ":");
        let path: Vec<&str> = parts.collect();
        (
            host,
            path.iter().map(|p| format!("/{p}")).collect::<String>(),
        )
    } else if let Some(rest) = issuer.strip_prefix("https://") {
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') {
            return Err(bad("an https issuer names a host, not a path"));
        }
        (rest.to_string(), String::new())
    } else if issuer.contains("://") || issuer.contains('/') {
        return Err(bad("not a domain, an https URL or did:web"));
    } else {
        (issuer.to_string(), String::new())
    };
    let valid_host = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
    if !valid_host {
        return Err(bad("no valid host name"));
    }
    Ok(format!("https://{host}{path}{WELL_KNOWN_PATH}"))
}

/// Why gateways cannot fetch keys for `issuer`, if that is evident from the name alone: no
/// derivable URL, a single-label host, a loopback host, or a name under a TLD that is never
/// resolved on the Internet (`.local`, `.localhost`, `.internal`, `.test`, `.invalid`,
/// `.example`, `.home.arpa`). `None` when the issuer looks reachable.
pub fn unreachable_issuer(issuer: &str) -> Option<String> {
    let url = match key_set_url(issuer) {
        Ok(u) => u,
        Err(e) => return Some(e.message),
    };
    let authority = url["https://".len()..]
        .split('/')
        .next()
        .unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default().to_string(),
        None => authority
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase(),
    };
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified());
    const NOT_PUBLIC: [&str; 7] = [
        ".local",
        ".localhost",
        ".internal",
        ".test",
        ".invalid",
        ".example",
        ".home.arpa",
    ];
    let why = if loopback {
        "it is a loopback address"
    } else if host.parse::<std::net::IpAddr>().is_err() && !host.contains('.') {
        "its host has a single label"
    } else if NOT_PUBLIC.iter().any(|t| host.ends_with(t)) {
        "its top-level domain is never resolved on the Internet"
    } else {
        return None;
    };
    Some(format!(
        "gateways derive {url} from issuer {issuer:?}, which they cannot fetch: {why}"
    ))
}

/// Builds the published key set of the grant-signing role: the spec's Key Set Document with
/// no member beyond `version` and `keys`. Guarantees every key has kid, use "sig", kty, crv,
/// x[, y], alg and an explicit `active`, and that none carries `d`.
pub fn build_key_set(keys: &dyn ActiveKeys) -> Result<KeySet> {
    let jwks = keys.published_keys(KeyRole::GrantSigning)?;
    let set = KeySet {
        version: KEY_SET_VERSION.to_string(),
        keys: jwks,
        extra: BTreeMap::new(),
    };
    set.validate()?;
    for k in &set.keys {
        let complete = k.use_.as_deref() == Some("sig")
            && k.alg.is_some()
            && k.active.is_some()
            && k.d.is_none()
            && k.extra.is_empty();
        if !complete {
            return Err(Error::new(
                ErrorCode::Internal,
                format!(
                    "published key {} is incomplete or carries extra members",
                    k.kid
                ),
            ));
        }
    }
    Ok(set)
}

/// The key set as a JSON value.
pub fn key_set_value(set: &KeySet) -> Result<Value> {
    serde_json::to_value(set)
        .map_err(|e| Error::new(ErrorCode::Internal, format!("key set serialisation: {e}")))
}

/// Signs the current key set with the root role's active key, valid from now for `lifetime`,
/// and records `KeySetSigned` (signer kid and the signed digest, hex) through `sink` before
/// returning the signed document. The signature is checked against the signer's public key
/// before anything is recorded or returned.
pub fn sign_key_set(
    keys: &dyn ActiveKeys,
    sink: &dyn EventSink,
    actor: &Actor,
    clock: &dyn Clock,
    lifetime: Duration,
) -> Result<Value> {
    if lifetime.is_zero() || lifetime > MAX_SIGNED_LIFETIME {
        return Err(Error::field(
            ErrorCode::LifetimeExceeded,
            "expiresAt",
            format!(
                "signed key set lifetime must be between 1 s and {} s",
                MAX_SIGNED_LIFETIME.as_secs()
            ),
        ));
    }
    let set = build_key_set(keys)?;
    let signer = keys.active_signer(KeyRole::Root)?;
    let now = clock.now();
    let unsigned = serde_json::to_value(SignedKeySet {
        version: SIGNED_KEY_SET_VERSION.to_string(),
        key_set: set,
        issued_at: format_rfc3339(now),
        expires_at: format_rfc3339(now + lifetime),
        signer_key_id: signer.kid().to_string(),
        signature: None,
    })
    .map_err(|e| {
        Error::new(
            ErrorCode::Internal,
            format!("signed key set serialisation: {e}"),
        )
    })?;
    let signed = sign_artifact(
        signer.as_ref(),
        Domain::KeySet,
        SIGNED_KEY_SET_VERSION,
        &unsigned,
    )?;
    let digest = signing_digest(Domain::KeySet, SIGNED_KEY_SET_VERSION, &signed)?;
    let sig = decode_signature(signed["signature"].as_str().unwrap_or_default())?;
    signer
        .public_key()
        .verify_digest(&digest, &sig)
        .map_err(|e| {
            Error::new(
                ErrorCode::HsmError,
                format!("token signature self-check failed: {e}"),
            )
        })?;
    sink.record(
        actor,
        Event::KeySetSigned {
            signer_key_id: signer.kid().to_string(),
            digest: hex::encode(digest),
        },
    )?;
    Ok(signed)
}

/// Verifies a signed key set against pinned root keys and returns the inner key set.
/// See [`verify_signed_key_set_gated`]; this variant applies no algorithm gate.
pub fn verify_signed_key_set(
    value: &Value,
    root: &KeySet,
    clock: &dyn Clock,
    drift: Duration,
) -> Result<KeySet> {
    verify_signed_key_set_gated(value, root, clock, drift, None)
}

/// Verifies a signed key set as a gateway that pins `root` would, judged at `clock.now()`:
/// the offline verifier's checks ([`crate::verify::Verifier`]: exactly the signed-key-set
/// members, version "1.0", inner key set valid, signer listed in `root` (KEY_NOT_FOUND) and
/// active there (KEY_REVOKED), algorithm accepted by `gate` for the document's issuedAt,
/// signature valid over the `MPCP:KeySet:1.0:` digest, not expired and not issued in the
/// future beyond `drift`), plus what this publisher guarantees: the pinned root set is itself
/// valid, `expiresAt` is after `issuedAt`, and the lifetime is at most [`MAX_SIGNED_LIFETIME`].
pub fn verify_signed_key_set_gated(
    value: &Value,
    root: &KeySet,
    clock: &dyn Clock,
    drift: Duration,
    gate: Option<Arc<dyn AlgorithmGate>>,
) -> Result<KeySet> {
    if ArtifactKind::detect(value).ok() != Some(ArtifactKind::SignedKeySet) {
        return Err(Error::new(
            ErrorCode::SchemaInvalid,
            "not a signed key set (version, keySet, issuedAt, expiresAt, signerKeyId, signature)",
        ));
    }
    root.validate().map_err(|e| e.within("root"))?;
    // One instant for every time decision of this verification.
    let mut verifier = Verifier::new(Arc::new(FixedClock::new(clock.now()))).with_drift(drift);
    if let Some(gate) = gate {
        verifier = verifier.with_algorithm_gate(gate);
    }
    verifier.verify(value, &KeySource::Jwks(root.clone()))?;
    let signed: SignedKeySet = from_value(value, "SignedKeySet")?;
    let issued_at = parse_rfc3339(&signed.issued_at, "issuedAt")?;
    let expires_at = parse_rfc3339(&signed.expires_at, "expiresAt")?;
    if expires_at <= issued_at {
        return Err(Error::field(
            ErrorCode::SchemaInvalid,
            "expiresAt",
            "expiresAt is not after issuedAt",
        ));
    }
    if expires_at - issued_at > MAX_SIGNED_LIFETIME {
        return Err(Error::field(
            ErrorCode::LifetimeExceeded,
            "expiresAt",
            "signed key set lifetime exceeds 7 days",
        ));
    }
    Ok(signed.key_set)
}

/// The root role's published keys as a key set, for out-of-band distribution to gateways
/// that pin the root (never host it next to the key set it protects).
pub fn build_root_key_set(keys: &dyn ActiveKeys) -> Result<KeySet> {
    let set = KeySet {
        version: KEY_SET_VERSION.to_string(),
        keys: keys.published_keys(KeyRole::Root)?,
        extra: BTreeMap::new(),
    };
    set.validate()?;
    Ok(set)
}

#[cfg(test)]
mod tests;
