//! The one issuance pipeline. An artifact kind (grants, destination allowlists, trust
//! bundles; next: authorization receipts, XRPL credential transactions, approvals) is a
//! declaration ([`ArtifactKind`]): its request type, signing role, domain prefix, key-id and
//! issuer members, the members the PA sets, its checks and what it records. [`issue`] is the
//! one path every kind takes:
//!
//! 1. the caller was admitted by the route's access rule ([`crate::api::auth`]);
//! 2. under `Idempotency-Key` semantics ([`issue_idempotent`]): a replay answers here;
//! 3. members the PA sets are refused, the body parses as the kind's typed request;
//! 4. the clock gate (`CLOCK_BEHIND`), then `now` is read once;
//! 5. [`ArtifactKind::draft`]: checks that need neither store nor HSM;
//! 6. one blocking hop ([`crate::api::signing::signing_hop`]): [`ArtifactKind::check`]
//!    against stored state, then the active key of the kind's role signs and the signature
//!    is checked against the key's public half;
//! 7. [`ArtifactKind::record`]: the audit event and the records of the same append;
//! 8. one durable commit of entry, records and idempotency record; only then the answer
//!    (201 with the signed artifact's canonical JSON).
//!
//! A refused request costs no HSM operation and changes nothing.

pub(crate) mod release;

pub use release::{Change, Issued, IssuedBody, issue_idempotent};

use axum::http::StatusCode;
use axum::response::Response;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::AppState;
use super::body::StrictJson;
use super::error::ApiResult;
use super::idempotency::BodyRef;
use super::signing::{sign_receipt_with_active, sign_with_active, signing_hop};
use crate::audit::SideWrites;
use crate::canonical::{Domain, canonical_bytes};
use crate::clock::{SigningGate, format_rfc3339};
use crate::error::{Error, ErrorCode, Result};
use crate::events::{Actor, Event};
use crate::keys::KeyRole;

/// What every step of one issuance sees: the service, the admitted caller and the one `now`
/// all time checks and `issuedAt` use. Cheap to clone (the state is shared).
#[derive(Debug, Clone)]
pub struct IssueContext {
    /// The service.
    pub state: AppState,
    /// Who asked, as the audit log names them.
    pub actor: Actor,
    /// The time of the issuance, read once after the clock gate.
    pub now: OffsetDateTime,
    /// Hex SHA-256 of the canonical request, as the audit event records it.
    pub request_digest: String,
}

/// An artifact to sign: its members without signature (the key-id member is set by the
/// pipeline), and the MPCP version its digest is computed under (unused by receipts).
#[derive(Debug, Clone)]
pub struct Draft {
    /// The artifact's `version`.
    pub version: String,
    /// Its members.
    pub members: Map<String, Value>,
}

/// A signed artifact: the value released, its canonical bytes (what the response and the
/// records carry), and the key that signed.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The signed artifact.
    pub artifact: Value,
    /// `canonical_bytes(&artifact)`, computed once.
    pub bytes: Vec<u8>,
    /// Key id of the signer.
    pub kid: String,
}

/// What is committed with a signature in its one durable append.
#[derive(Debug)]
pub struct Record {
    /// The audit event.
    pub event: Event,
    /// The records of the same append.
    pub writes: SideWrites,
    /// The record whose member is the response body, so the idempotency record does not
    /// repeat it (see [`BodyRef`]).
    pub body_in: Option<BodyRef>,
    /// Extra response headers (a replay repeats them).
    pub headers: Vec<(String, String)>,
}

/// How an artifact kind is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureForm {
    /// MPCP's artifact signature: over the domain-prefixed digest of the canonical artifact
    /// without `signature` (SPEC-NOTES "Signatures"), the signer named in `kid_member`, the
    /// signature base64url in `signature`.
    Mpcp {
        /// Domain prefix of the signed digest.
        domain: Domain,
        /// Member naming the signing key.
        kid_member: &'static str,
    },
    /// A SEP-2828 receipt record: ES256 over the JCS bytes of the record without
    /// `signature`, the signer named in `{asserted}.secretVersion`, the signature raw
    /// `r || s` in lowercase hex.
    Receipt {
        /// The issuer block (`issuerAsserted` or `receiptAsserted`).
        asserted: &'static str,
    },
}

impl SignatureForm {
    /// MPCP's signature under `domain`, the signer named in `issuerKeyId`.
    pub const fn mpcp(domain: Domain) -> SignatureForm {
        SignatureForm::Mpcp {
            domain,
            kid_member: "issuerKeyId",
        }
    }
}

/// The declaration of an artifact kind the PA signs. Implementations hold no state: every
/// step gets the [`IssueContext`].
pub trait ArtifactKind: Send + Sync + 'static {
    /// The request body, parsed by [`crate::model::from_value`] (closed types refuse unknown
    /// members as UNKNOWN_FIELD; open kinds take a JSON object).
    type Request: DeserializeOwned + Send + 'static;
    /// What [`ArtifactKind::draft`] hands to [`ArtifactKind::check`]: the [`Draft`] and
    /// whatever the checks against stored state need.
    type Pending: Send + 'static;
    /// What [`ArtifactKind::check`] learned that [`ArtifactKind::record`] needs.
    type Facts: Send + 'static;

    /// Name of the request in error messages.
    const REQUEST: &'static str = "request body";
    /// The role whose active key signs.
    const ROLE: KeyRole;
    /// How the kind is signed.
    const SIGNATURE: SignatureForm;
    /// Member naming the issuing PA (MPCP's usual name unless the kind names another).
    const ISSUER_MEMBER: &'static str = "issuer";
    /// Members the PA sets, refused in a request (SCHEMA_INVALID at that member).
    const PA_MEMBERS: &'static [&'static str];
    /// Whether issuances of the kind are serialised until committed (versions that must not
    /// collide or go back).
    const SERIAL: bool = false;

    /// Checks that need neither store nor HSM, judged at `ctx.now`; returns the artifact to
    /// sign (see [`IssueContext::stamp`] for the members the PA sets).
    fn draft(ctx: &IssueContext, request: Self::Request) -> Result<Self::Pending>;

    /// Checks against stored state, on the signing hop's thread right before the signature
    /// (so they cost no HSM operation when they refuse); returns the artifact to sign.
    fn check(ctx: &IssueContext, pending: Self::Pending) -> Result<(Draft, Self::Facts)>;

    /// The audit event and the records committed with `signed`.
    fn record(ctx: &IssueContext, facts: Self::Facts, signed: &Signed) -> Result<Record>;

    /// Whether this issuance signs a ledger transaction too (in [`ArtifactKind::check`]):
    /// it then holds the ledger lock ([`crate::api::ledger_book::LedgerBook::lock`]) from
    /// before the signing hop until its commit is done, so sequences are handed out in
    /// commit order.
    fn uses_ledger(_pending: &Self::Pending) -> bool {
        false
    }
}

impl IssueContext {
    /// Sets the members the PA sets on every artifact of kind `K`: the issuer, the key id
    /// (`pending` until the signer is known) and `issuedAt` (now).
    pub fn stamp<K: ArtifactKind>(&self, members: &mut Map<String, Value>) {
        members.insert(
            K::ISSUER_MEMBER.into(),
            Value::String(self.state.config().issuer.clone()),
        );
        if let SignatureForm::Mpcp { kid_member, .. } = K::SIGNATURE {
            members.insert(kid_member.into(), Value::String("pending".into()));
        }
        members.insert("issuedAt".into(), Value::String(format_rfc3339(self.now)));
    }

    /// Refuses an `expiresAt` that is not after now (TIMESTAMP_INVALID).
    pub fn require_future(&self, expires: OffsetDateTime) -> Result<()> {
        if expires <= self.now {
            return Err(Error::field(
                ErrorCode::TimestampInvalid,
                "expiresAt",
                "expiresAt must be in the future",
            ));
        }
        Ok(())
    }

    /// Refuses a lifetime from now to `expires` longer than `ceiling` (LIFETIME_EXCEEDED,
    /// with `why` as the message).
    pub fn require_lifetime(
        &self,
        expires: OffsetDateTime,
        ceiling: std::time::Duration,
        why: impl FnOnce() -> String,
    ) -> Result<()> {
        if expires - self.now > ceiling {
            return Err(Error::field(
                ErrorCode::LifetimeExceeded,
                "expiresAt",
                why(),
            ));
        }
        Ok(())
    }
}

/// The handler of `POST` for artifact kind `K` (see the module documentation).
pub async fn issue<K: ArtifactKind>(
    change: Change,
    StrictJson(body): StrictJson,
) -> ApiResult<Response> {
    let (st, actor) = (change.state.clone(), change.actor());
    change
        .issue(body, |digest, body| async move {
            sign_and_record::<K>(st, actor, body, digest).await
        })
        .await
}

async fn sign_and_record<K: ArtifactKind>(
    state: AppState,
    actor: Actor,
    body: Value,
    request_digest: String,
) -> Result<Issued> {
    if let Some(obj) = body.as_object() {
        refuse_pa_members(obj, K::PA_MEMBERS)?;
    }
    let request: K::Request = crate::model::from_value(&body, K::REQUEST)?;
    drop(body);
    // The clock first: with it behind the audit log, time checks would judge the request
    // against a wrong "now" (and nothing would be signed anyway).
    SigningGate::check_signing_time(state.audit().as_ref())?;
    let ctx = IssueContext {
        now: state.clock().now(),
        state,
        actor,
        request_digest,
    };
    let pending = K::draft(&ctx, request)?;
    let serial = if K::SERIAL {
        Some(ctx.state.serial_lock().clone().lock_owned().await)
    } else {
        None
    };
    let ledger = if K::uses_ledger(&pending) {
        Some(ctx.state.ledger().lock().clone().lock_owned().await)
    } else {
        None
    };
    let hop = ctx.clone();
    let (facts, artifact, kid) = signing_hop(move || {
        let (draft, facts) = K::check(&hop, pending)?;
        let keys = hop.state.keys();
        let (artifact, kid) = match K::SIGNATURE {
            SignatureForm::Mpcp { domain, kid_member } => sign_with_active(
                keys.as_ref(),
                K::ROLE,
                kid_member,
                domain,
                &draft.version,
                draft.members,
            )?,
            SignatureForm::Receipt { asserted } => {
                sign_receipt_with_active(keys.as_ref(), K::ROLE, asserted, draft.members)?
            }
        };
        Ok((facts, artifact, kid))
    })
    .await?;
    let signed = Signed {
        bytes: canonical_bytes(&artifact)?,
        artifact,
        kid,
    };
    let Record {
        event,
        writes,
        body_in,
        headers,
    } = K::record(&ctx, facts, &signed)?;
    let mut issued = Issued::with_body(
        StatusCode::CREATED,
        IssuedBody::Canonical(signed.bytes),
        ctx.actor,
        event,
        writes,
    );
    if let Some(at) = body_in {
        issued = issued.body_kept_in(at);
    }
    if let Some(guard) = serial {
        issued = issued.holding(guard);
    }
    if let Some(guard) = ledger {
        issued = issued.holding(guard);
    }
    for (name, value) in headers {
        issued = issued.with_header(&name, value);
    }
    Ok(issued)
}

/// Refuses members the PA sets itself.
fn refuse_pa_members(obj: &Map<String, Value>, members: &[&str]) -> Result<()> {
    if let Some(m) = members.iter().find(|m| obj.contains_key(**m)) {
        return Err(Error::field(
            ErrorCode::SchemaInvalid,
            *m,
            format!("{m} is set by the Policy Authority and must not be supplied"),
        ));
    }
    Ok(())
}
