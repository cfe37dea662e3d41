//! PolicyGrants (issuer role).
//!
//! `POST /v1/grants` takes a grant without the members the PA sets (`issuer`,
//! `issuerKeyId`, `issuedAt`, `signature`; `grantId` is generated when absent), refuses
//! anything the model refuses (MPCP v1 conformance, addresses, amounts), a policyHash that
//! names no stored policy, an expiry in the past or beyond the policy's
//! `maxGrantLifetimeSeconds`, then signs with the active grant-signing key, commits
//! `grant_issued` with the grant record (and the idempotency record) in one durable write,
//! and only then answers 201 with the signed grant.
//! `POST /v1/grants/{grantId}/revoke` commits `grant_revoked` with the marked grant record
//! and answers
//! with the XLS-70 credential type of `mpcp:active-grant:{grantId}` to delete on the ledger;
//! later trust bundles list the grant in `revokedGrantIds`.
//!
//! Ownership: a grant record names the issuer token that created it (`issuedBy`). Only that
//! token, or a security officer (emergency), may revoke the grant; another issuer gets 403
//! NOT_OWNER and nothing changes. A record from before owners were recorded (no `issuedBy`)
//! is revocable by a security officer only.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use serde_json::Map;

use crate::api::AppState;
use crate::api::artifacts::{id_or_random, not_owner, trees};
use crate::api::body::{StrictJson, parse_request};
use crate::api::error::ApiResult;
use crate::api::extract::ApiPath;
use crate::api::idempotency::BodyRef;
use crate::api::issuance::{
    ArtifactKind, Change, Draft, IssueContext, Issued, Record, SignatureForm, Signed,
};
use crate::api::ledger_book::{ACTIVE_GRANT, CredentialSpec, LedgerTx, PreparedTx, TxCause};
use crate::api::respond::json_response;
use crate::api::signing::{blocking, signing_hop};
use crate::api::tokens::ApiRole;
use crate::audit::SideWrites;
use crate::canonical::Domain;
#[cfg(test)]
use crate::canonical::canonical_bytes;
use crate::clock::{format_rfc3339, parse_rfc3339};
use crate::error::{Error, ErrorCode, Result};
use crate::events::Event;
use crate::keys::KeyRole;
use crate::model::{PolicyGrant, active_grant_credential_type, check_id};
use crate::xrpl::credential_tx::{TxKind, credential_type};
use crate::xrpl::validate_classic_address;

/// A grant as the PA keeps it.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrantRecord {
    /// The signed grant, exactly as released.
    pub grant: Value,
    /// Name of the issuer token that created the grant (absent in records written before
    /// owners were recorded).
    pub issued_by: Option<String>,
    /// Revocation time, once revoked.
    pub revoked_at: Option<String>,
    /// Revocation reason.
    pub revocation_reason: Option<String>,
}

/// PolicyGrants: an open object (members this PA does not interpret are kept and signed),
/// signed with the active grant-signing key, kept in [`trees::GRANTS`] with its issuer token.
#[derive(Debug)]
pub struct Grants;

/// A grant that passed its model checks, before the policy and id checks.
#[derive(Debug)]
pub struct PendingGrant {
    draft: Draft,
    grant_id: String,
    policy_hash: String,
    expires: time::OffsetDateTime,
    /// The grant's `CredentialCreate`, when the PA's own account issues its credential.
    credential: Option<CredentialSpec>,
}

/// What a grant's record needs.
#[derive(Debug)]
pub struct GrantFacts {
    grant_id: String,
    policy_hash: String,
    credential: Option<PreparedTx>,
}

/// The header that names a grant's credential transaction: `{type}; hash={hash};
/// state={state}; id={outbox id}`.
pub const CREDENTIAL_TX_HEADER: &str = "mpcp-credential-transaction";

fn tx_header(tx: &LedgerTx) -> (String, String) {
    (
        CREDENTIAL_TX_HEADER.into(),
        format!(
            "{}; hash={}; state={}; id={}",
            tx.transaction_type.as_str(),
            tx.hash,
            tx.state.as_str(),
            tx.id
        ),
    )
}

/// The outbox id of grant `grant_id`'s `CredentialCreate` / `CredentialDelete`.
pub fn credential_tx_id(grant_id: &str, kind: TxKind) -> String {
    match kind {
        TxKind::CredentialCreate => format!("grant/{grant_id}/create"),
        TxKind::CredentialDelete => format!("grant/{grant_id}/delete"),
    }
}

/// Who issues the grant's liveness credential: the PA's own account (the `CredentialCreate`
/// to sign), an account the operator declared (`None`: that account's job), nothing else
/// (CREDENTIAL_ISSUER_UNKNOWN). A PA-issued credential needs the subject's XRPL account
/// (CREDENTIAL_SUBJECT_INVALID) and a grantId that fits the 64-byte CredentialType
/// (CREDENTIAL_TYPE_TOO_LONG).
fn plan_credential(
    ctx: &IssueContext,
    grant: &PolicyGrant,
    expires: time::OffsetDateTime,
) -> Result<Option<CredentialSpec>> {
    let Some(issuer) = &grant.active_grant_credential_issuer else {
        return Ok(None);
    };
    let ledger = &ctx.state.config().ledger;
    let own = match ctx.state.ledger().account(ctx.state.keys().as_ref()) {
        Ok(a) => Some(a),
        Err(e) if e.code == ErrorCode::LedgerNotConfigured => None,
        Err(e) => return Err(e),
    };
    if own.as_ref().is_some_and(|a| &a.address == issuer) {
        validate_classic_address(&grant.subject_id, "subjectId").map_err(|_| {
            Error::field(
                ErrorCode::CredentialSubjectInvalid,
                "subjectId",
                "the PA issues this grant's XLS-70 credential, whose Subject is the grant \
                 subject's XRPL account: subjectId must be an XRPL classic address",
            )
        })?;
        let credential_type = credential_type(ACTIVE_GRANT, &grant.grant_id, "grantId")?;
        return Ok(Some(CredentialSpec {
            // Checked again under the ledger lock: the account key may rotate meanwhile.
            issuer: Some(issuer.clone()),
            id: credential_tx_id(&grant.grant_id, TxKind::CredentialCreate),
            kind: TxKind::CredentialCreate,
            subject: Some(grant.subject_id.clone()),
            credential_type,
            expires_unix: Some(expires.unix_timestamp()),
            cause: TxCause {
                event: "grant_issued".into(),
                grant_id: Some(grant.grant_id.clone()),
                kid: None,
            },
        }));
    }
    if ledger.external_issuers.iter().any(|a| a == issuer) {
        return Ok(None);
    }
    Err(Error::field(
        ErrorCode::CredentialIssuerUnknown,
        "activeGrantCredentialIssuer",
        match own {
            Some(a) => format!(
                "activeGrantCredentialIssuer must be this PA's XRPL account {} or an account \
                 the operator declared as a credential issuer",
                a.address
            ),
            None => "activeGrantCredentialIssuer must be an account the operator declared as a \
                     credential issuer (this PA has no XRPL account of its own)"
                .to_string(),
        },
    ))
}

impl ArtifactKind for Grants {
    type Request = Map<String, Value>;
    type Pending = PendingGrant;
    type Facts = GrantFacts;
    const ROLE: KeyRole = KeyRole::GrantSigning;
    const SIGNATURE: SignatureForm = SignatureForm::mpcp(Domain::PolicyGrant);
    const PA_MEMBERS: &'static [&'static str] = &["issuer", "issuerKeyId", "issuedAt", "signature"];

    fn draft(ctx: &IssueContext, mut members: Map<String, Value>) -> Result<PendingGrant> {
        id_or_random(&mut members, "grantId", "grant")?;
        ctx.stamp::<Self>(&mut members);
        let members = Value::Object(members);
        let grant = PolicyGrant::from_value(&members)?;
        grant.validate()?;
        let expires = parse_rfc3339(&grant.expires_at, "expiresAt")?;
        ctx.require_future(expires)?;
        // The appliance's own ceiling applies whatever the policy says (or when it says
        // nothing).
        let ceiling = ctx.state.config().max_grant_lifetime;
        if (expires - ctx.now).whole_seconds()
            > i64::try_from(ceiling.as_secs()).unwrap_or(i64::MAX)
        {
            return Err(Error::field(
                ErrorCode::LifetimeExceeded,
                "expiresAt",
                format!(
                    "this Policy Authority signs grants of at most {} s",
                    ceiling.as_secs()
                ),
            ));
        }
        let credential = plan_credential(ctx, &grant, expires)?;
        let Value::Object(members) = members else {
            return Err(Error::new(ErrorCode::Internal, "grant is not an object"));
        };
        Ok(PendingGrant {
            credential,
            draft: Draft {
                version: grant.version,
                members,
            },
            grant_id: grant.grant_id,
            policy_hash: grant.policy_hash,
            expires,
        })
    }

    fn check(ctx: &IssueContext, p: PendingGrant) -> Result<(Draft, GrantFacts)> {
        let policy = super::policies::load(&ctx.state, &p.policy_hash)?.ok_or_else(|| {
            Error::field(
                ErrorCode::PolicyHashMismatch,
                "policyHash",
                "policyHash names no policy stored at this Policy Authority",
            )
        })?;
        if let Some(max) = policy.max_grant_lifetime_seconds
            && (p.expires - ctx.now).whole_seconds() > i64::try_from(max).unwrap_or(i64::MAX)
        {
            return Err(Error::field(
                ErrorCode::LifetimeExceeded,
                "expiresAt",
                format!("the policy allows grants of at most {max} s"),
            ));
        }
        if ctx.state.artifacts().contains(trees::GRANTS, &p.grant_id)? {
            return Err(exists(&p.grant_id));
        }
        // Last, after every refusal: the credential's signature (under the ledger lock).
        let credential = match p.credential {
            None => None,
            Some(spec) => Some(ctx.state.ledger().prepare(
                ctx.state.keys().as_ref(),
                spec,
                ctx.state.config().ledger.fee_drops,
                ctx.now,
            )?),
        };
        let facts = GrantFacts {
            grant_id: p.grant_id,
            policy_hash: p.policy_hash,
            credential,
        };
        Ok((p.draft, facts))
    }

    fn record(ctx: &IssueContext, f: GrantFacts, signed: &Signed) -> Result<Record> {
        // The record (`{"grant": ...}` of a fresh grant) embeds the response's bytes; the
        // id is reserved by the append, atomically.
        let mut writes = SideWrites::new();
        writes.insert_new(
            trees::GRANTS,
            f.grant_id.clone(),
            fresh_record_bytes(&signed.bytes, &ctx.actor.name)?,
            exists(&f.grant_id),
        );
        let mut headers = Vec::new();
        let credential_tx = f.credential.map(|prepared| {
            writes.extend(prepared.writes);
            headers.push(tx_header(&prepared.tx));
            prepared.tx.hash
        });
        Ok(Record {
            headers,
            body_in: Some(BodyRef {
                tree: trees::GRANTS.into(),
                key: f.grant_id.clone(),
                member: "grant".into(),
            }),
            event: Event::GrantIssued {
                grant_id: f.grant_id,
                issuer_key_id: signed.kid.clone(),
                policy_hash: f.policy_hash,
                request_digest: ctx.request_digest.clone(),
                credential_tx,
            },
            writes,
        })
    }

    fn uses_ledger(p: &PendingGrant) -> bool {
        p.credential.is_some()
    }
}

fn exists(grant_id: &str) -> Error {
    Error::field(
        ErrorCode::Conflict,
        "grantId",
        format!("grant {grant_id:?} already exists"),
    )
}

/// The stored bytes of the [`GrantRecord`] of a grant not yet revoked, whose canonical JSON
/// is `grant`, issued by the token named `issued_by`.
fn fresh_record_bytes(grant: &[u8], issued_by: &str) -> Result<Vec<u8>> {
    let name = serde_json::to_vec(issued_by)
        .map_err(|e| Error::new(ErrorCode::Internal, format!("grant record: {e}")))?;
    let mut raw = Vec::with_capacity(grant.len() + name.len() + 24);
    raw.extend_from_slice(br#"{"grant":"#);
    raw.extend_from_slice(grant);
    raw.extend_from_slice(br#","issuedBy":"#);
    raw.extend_from_slice(&name);
    raw.push(b'}');
    Ok(raw)
}

fn not_found(grant_id: &str) -> Error {
    Error::field(
        ErrorCode::NotFound,
        "grantId",
        format!("no grant {grant_id:?}"),
    )
}

fn parse_record(raw: &[u8]) -> Result<GrantRecord> {
    serde_json::from_slice(raw)
        .map_err(|e| Error::new(ErrorCode::StoreError, format!("corrupt grant record: {e}")))
}

fn load(state: &AppState, grant_id: &str) -> Result<GrantRecord> {
    state
        .artifacts()
        .get_json::<GrantRecord>(trees::GRANTS, grant_id)?
        .ok_or_else(|| not_found(grant_id))
}

fn status_of(state: &AppState, rec: &GrantRecord) -> &'static str {
    if rec.revoked_at.is_some() {
        return "revoked";
    }
    let expired = rec
        .grant
        .get("expiresAt")
        .and_then(Value::as_str)
        .and_then(|t| parse_rfc3339(t, "expiresAt").ok())
        .is_some_and(|t| t <= state.clock().now());
    if expired { "expired" } else { "active" }
}

/// `GET /v1/grants/{grantId}`.
pub async fn fetch(
    State(state): State<AppState>,
    ApiPath(grant_id): ApiPath<String>,
) -> ApiResult<Response> {
    check_id(&grant_id, "grantId")?;
    let s = state.clone();
    let id = grant_id.clone();
    let (rec, txs) = blocking(move || {
        let rec = load(&s, &id)?;
        let mut txs = Vec::new();
        for kind in [TxKind::CredentialCreate, TxKind::CredentialDelete] {
            if let Some((_, tx)) = s.ledger().get(&credential_tx_id(&id, kind))? {
                txs.push(tx.reference());
            }
        }
        Ok((rec, txs))
    })
    .await?;
    let mut out = json!({
        "grantId": grant_id,
        "status": status_of(&state, &rec),
        "grant": rec.grant,
    });
    if !txs.is_empty() {
        out["credentialTransactions"] = json!(txs);
    }
    if let Some(at) = &rec.revoked_at {
        out["revokedAt"] = Value::String(at.clone());
        out["revocationReason"] = json!(rec.revocation_reason);
    }
    json_response(StatusCode::OK, &out)
}

/// `POST /v1/grants/{grantId}/revoke` with `{"reason": "..."}`: by the issuer token that
/// issued the grant, or by a security officer; another issuer gets 403 NOT_OWNER.
pub async fn revoke(
    change: Change,
    ApiPath(grant_id): ApiPath<String>,
    StrictJson(body): StrictJson,
) -> ApiResult<Response> {
    let RevokeRequest { reason } = parse_request(&body)?;
    let reason = crate::keys::registry::validate_reason(&reason)?;
    check_id(&grant_id, "grantId")?;
    let st = change.state.clone();
    let actor = change.actor();
    let officer = change.caller.principal.role == ApiRole::SecurityOfficer;
    change
        .issue(body, |_digest, _body| async move {
            let (s, id) = (st.clone(), grant_id.clone());
            let raw = blocking(move || {
                s.artifacts()
                    .get(trees::GRANTS, &id)?
                    .ok_or_else(|| not_found(&id))
            })
            .await?;
            let mut rec = parse_record(&raw)?;
            // Before any state is told: a non-owner learns nothing about revocation.
            if !officer && rec.issued_by.as_deref() != Some(actor.name.as_str()) {
                return Err(not_owner(
                    &format!("grant {grant_id:?}"),
                    "grantId",
                    rec.issued_by.as_deref(),
                ));
            }
            let already = || {
                Error::field(
                    ErrorCode::Conflict,
                    "grantId",
                    format!("grant {grant_id:?} is already revoked"),
                )
            };
            if rec.revoked_at.is_some() {
                return Err(already());
            }
            // The grant's CredentialCreate, if the PA issued one: its CredentialDelete is
            // signed now, under the ledger lock held until the commit.
            let create = {
                let (s, id) = (
                    st.clone(),
                    credential_tx_id(&grant_id, TxKind::CredentialCreate),
                );
                blocking(move || s.ledger().get(&id)).await?
            };
            let ledger_guard = match &create {
                Some(_) => Some(st.ledger().lock().clone().lock_owned().await),
                None => None,
            };
            let now_t = st.clock().now();
            // A credential created by an account whose key has since been rotated cannot be
            // deleted by the current one: the revocation goes ahead and says so.
            let mut credential_error = None;
            let delete = match create {
                None => None,
                Some((_, create)) => {
                    let s = st.clone();
                    let spec = CredentialSpec {
                        issuer: Some(create.account.clone()),
                        id: credential_tx_id(&grant_id, TxKind::CredentialDelete),
                        kind: TxKind::CredentialDelete,
                        subject: Some(create.subject.clone()),
                        credential_type: hex::decode(&create.credential_type).map_err(|e| {
                            Error::new(ErrorCode::StoreError, format!("corrupt outbox entry: {e}"))
                        })?,
                        expires_unix: None,
                        cause: TxCause {
                            event: "grant_revoked".into(),
                            grant_id: Some(grant_id.clone()),
                            kid: None,
                        },
                    };
                    let prepared = signing_hop(move || {
                        s.ledger().prepare(
                            s.keys().as_ref(),
                            spec,
                            s.config().ledger.fee_drops,
                            now_t,
                        )
                    })
                    .await;
                    match prepared {
                        Ok(p) => Some(p),
                        Err(e) if e.code == ErrorCode::LedgerAccountChanged => {
                            tracing::warn!(grant_id = %grant_id, cause = %e.message, "grant revoked without its CredentialDelete");
                            credential_error = Some(e);
                            None
                        }
                        Err(e) => return Err(e),
                    }
                }
            };
            let now = format_rfc3339(now_t);
            rec.revoked_at = Some(now.clone());
            rec.revocation_reason = Some(reason.clone());
            let new = serde_json::to_vec(&rec)
                .map_err(|e| Error::new(ErrorCode::Internal, format!("grant record: {e}")))?;
            // Applies only over the record read above: a concurrent revocation wins once.
            let mut writes = SideWrites::new();
            writes.swap(
                trees::GRANTS,
                grant_id.clone(),
                Some(raw.to_vec()),
                new,
                already(),
            );
            let mut body = json!({
                "grantId": grant_id,
                "status": "revoked",
                "revokedAt": now,
                "reason": reason,
                "activeGrantCredentialType": active_grant_credential_type(&grant_id),
            });
            let credential_tx = delete.map(|prepared| {
                writes.extend(prepared.writes);
                body["credentialTransaction"] = json!(prepared.tx.reference());
                prepared.tx.hash
            });
            if let Some(e) = credential_error {
                body["credentialError"] = json!({"code": e.code.as_str(), "message": e.message});
            }
            let mut issued = Issued::new(
                StatusCode::OK,
                body,
                actor,
                Event::GrantRevoked {
                    grant_id: grant_id.clone(),
                    reason: reason.clone(),
                    credential_tx,
                },
                writes,
            );
            if let Some(guard) = ledger_guard {
                issued = issued.holding(guard);
            }
            Ok(issued)
        })
        .await
}

/// The body of `POST /v1/grants/{grantId}/revoke`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// Why the grant is revoked.
    pub reason: String,
}

/// Ids of revoked grants that have not yet expired (beyond `drift`), sorted: what a trust
/// bundle lists in `revokedGrantIds`.
pub fn revoked_ids(state: &AppState) -> Result<Vec<String>> {
    let now = state.clock().now();
    let drift = state.config().drift;
    let mut out = Vec::new();
    for item in state.artifacts().scan(trees::GRANTS)? {
        let (k, raw) = item?;
        let rec = parse_record(&raw)?;
        if rec.revoked_at.is_none() {
            continue;
        }
        let live = rec
            .grant
            .get("expiresAt")
            .and_then(Value::as_str)
            .and_then(|t| parse_rfc3339(t, "expiresAt").ok())
            .is_none_or(|t| t + drift > now);
        if live {
            out.push(String::from_utf8_lossy(&k).into_owned());
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spliced record reads back as the record `serde_json` would have written.
    #[test]
    fn fresh_record_bytes_is_the_record_of_the_grant() {
        let grant = json!({"grantId": "g-1", "signature": "c2ln", "n": 3, "s": "\"q\\u00e9"});
        let raw = fresh_record_bytes(&canonical_bytes(&grant).unwrap(), "iss\"uer-1").unwrap();
        let rec = parse_record(&raw).unwrap();
        assert_eq!(
            rec,
            GrantRecord {
                grant,
                issued_by: Some("iss\"uer-1".into()),
                revoked_at: None,
                revocation_reason: None,
            }
        );
        assert_eq!(
            serde_json::from_slice::<Value>(&raw).unwrap(),
            serde_json::to_value(&rec).unwrap()
        );
    }
}
