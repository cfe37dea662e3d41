//! PolicyGrants (issuer role).
//!
//! `POST /v1/grants` takes a grant without the members the PA sets (`issuer`,
//! `issuerKeyId`, `issuedAt`, `signature`; `grantId` is generated when absent), refuses
//! anything the model refuses (MPCP v1 conformance, addresses, amounts), a policyHash that
//! names no stored policy, an expiry in the past or beyond the policy's
//! `maxGrantLifetimeSeconds`, then signs with the active grant-signing key, records
//! `grant_issued` durably and only then answers 201 with the signed grant.
//! `POST /v1/grants/{grantId}/revoke` records `grant_revoked`, marks the grant and answers
//! with the XLS-70 credential type of `mpcp:active-grant:{grantId}` to delete on the ledger;
//! later trust bundles list the grant in `revokedGrantIds`.

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    ApiPath, get_json, idempotent, insert_new, json_response, random_id, refuse_pa_members,
};
use crate::api::AppState;
use crate::api::auth::{Auth, Issuer};
use crate::api::body::{StrictJson, closed_object, required_str};
use crate::api::error::ApiResult;
use crate::api::signing::{active_signer, blocking, record, sign};
use crate::canonical::Domain;
use crate::clock::{format_rfc3339, parse_rfc3339};
use crate::error::{Error, ErrorCode, Result};
use crate::events::Event;
use crate::keys::KeyRole;
use crate::model::{PolicyGrant, active_grant_credential_type, check_id};
use crate::store::store_error;

/// A grant as the PA keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrantRecord {
    /// The signed grant, exactly as released.
    pub grant: Value,
    /// Revocation time, once revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    /// Revocation reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_reason: Option<String>,
}

/// Members of a grant the PA sets itself.
const PA_MEMBERS: [&str; 4] = ["issuer", "issuerKeyId", "issuedAt", "signature"];

/// `POST /v1/grants`.
pub async fn issue(
    State(state): State<AppState>,
    auth: Auth<Issuer>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    StrictJson(body): StrictJson,
) -> ApiResult<Response> {
    let st = state.clone();
    let b = body.clone();
    let actor = auth.actor();
    idempotent(
        &state,
        &auth.principal,
        &headers,
        &method,
        uri.path(),
        &body,
        |digest| async move { issue_inner(&st, b, digest, actor).await },
    )
    .await
}

async fn issue_inner(
    state: &AppState,
    body: Value,
    request_digest: String,
    actor: crate::events::Actor,
) -> Result<(StatusCode, Value)> {
    let mut obj = body.as_object().cloned().ok_or_else(|| {
        Error::new(
            ErrorCode::SchemaInvalid,
            "request body must be a JSON object",
        )
    })?;
    refuse_pa_members(&obj, &PA_MEMBERS)?;
    if !obj.contains_key("grantId") {
        obj.insert("grantId".into(), Value::String(random_id("grant")?));
    }
    let now = state.clock().now();
    // Checked once before signing so refused requests cost no HSM operation.
    let probe = {
        let mut p = obj.clone();
        p.insert(
            "issuer".into(),
            Value::String(state.config().issuer.clone()),
        );
        p.insert("issuerKeyId".into(), Value::String("pending".into()));
        p.insert("issuedAt".into(), Value::String(format_rfc3339(now)));
        Value::Object(p)
    };
    let grant = PolicyGrant::from_value(&probe)?;
    grant.validate()?;
    let expires = parse_rfc3339(&grant.expires_at, "expiresAt")?;
    if expires <= now {
        return Err(Error::field(
            ErrorCode::TimestampInvalid,
            "expiresAt",
            "expiresAt must be in the future",
        ));
    }
    let s = state.clone();
    let hash = grant.policy_hash.clone();
    let policy = blocking(move || super::policies::load(&s, &hash))
        .await?
        .ok_or_else(|| {
            Error::field(
                ErrorCode::PolicyHashMismatch,
                "policyHash",
                "policyHash names no policy stored at this Policy Authority",
            )
        })?;
    if let Some(max) = policy.max_grant_lifetime_seconds
        && (expires - now).whole_seconds() > i64::try_from(max).unwrap_or(i64::MAX)
    {
        return Err(Error::field(
            ErrorCode::LifetimeExceeded,
            "expiresAt",
            format!("the policy allows grants of at most {max} s"),
        ));
    }
    let grants = state.artifacts().grants.clone();
    let id = grant.grant_id.clone();
    if blocking(move || {
        grants
            .contains_key(&id)
            .map_err(|e| store_error("read grant", e))
    })
    .await?
    {
        return Err(Error::field(
            ErrorCode::Conflict,
            "grantId",
            format!("grant {:?} already exists", grant.grant_id),
        ));
    }

    let signer = active_signer(state, KeyRole::GrantSigning).await?;
    let kid = signer.kid().to_string();
    let Value::Object(mut unsigned) = probe else {
        unreachable!("built as an object above")
    };
    unsigned.insert("issuerKeyId".into(), Value::String(kid.clone()));
    let signed = sign(
        signer,
        Domain::PolicyGrant,
        grant.version.clone(),
        Value::Object(unsigned),
    )
    .await?;

    // Reserve the id with the signed grant, record, and only then release.
    let rec = GrantRecord {
        grant: signed.clone(),
        revoked_at: None,
        revocation_reason: None,
    };
    let raw = serde_json::to_vec(&rec)
        .map_err(|e| Error::new(ErrorCode::Internal, format!("grant record: {e}")))?;
    let grants = state.artifacts().grants.clone();
    let id = grant.grant_id.clone();
    if !blocking(move || insert_new(&grants, &id, &raw)).await? {
        return Err(Error::field(
            ErrorCode::Conflict,
            "grantId",
            format!("grant {:?} already exists", grant.grant_id),
        ));
    }
    let event = Event::GrantIssued {
        grant_id: grant.grant_id.clone(),
        issuer_key_id: kid,
        policy_hash: grant.policy_hash.clone(),
        request_digest,
    };
    if let Err(e) = record(state, &actor, event).await {
        let grants = state.artifacts().grants.clone();
        let id = grant.grant_id.clone();
        let _ = blocking(move || {
            grants
                .remove(id.as_bytes())
                .map_err(|e| store_error("remove grant", e))
        })
        .await;
        return Err(e);
    }
    let artifacts = state.artifacts().clone();
    blocking(move || artifacts.flush()).await?;
    Ok((StatusCode::CREATED, signed))
}

fn load(state: &AppState, grant_id: &str) -> Result<GrantRecord> {
    get_json::<GrantRecord>(&state.artifacts().grants, grant_id)?.ok_or_else(|| {
        Error::field(
            ErrorCode::NotFound,
            "grantId",
            format!("no grant {grant_id:?}"),
        )
    })
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
    _auth: Auth<Issuer>,
    ApiPath(grant_id): ApiPath<String>,
) -> ApiResult<Response> {
    check_id(&grant_id, "grantId")?;
    let s = state.clone();
    let id = grant_id.clone();
    let rec = blocking(move || load(&s, &id)).await?;
    let mut out = json!({
        "grantId": grant_id,
        "status": status_of(&state, &rec),
        "grant": rec.grant,
    });
    if let Some(at) = &rec.revoked_at {
        out["revokedAt"] = Value::String(at.clone());
        out["revocationReason"] = json!(rec.revocation_reason);
    }
    json_response(StatusCode::OK, &out)
}

/// `POST /v1/grants/{grantId}/revoke` with `{"reason": "..."}`.
pub async fn revoke(
    State(state): State<AppState>,
    auth: Auth<Issuer>,
    ApiPath(grant_id): ApiPath<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    StrictJson(body): StrictJson,
) -> ApiResult<Response> {
    let obj = closed_object(&body, &["reason"])?;
    let reason = crate::keys::registry::validate_reason(required_str(obj, "reason")?)?;
    check_id(&grant_id, "grantId")?;
    let st = state.clone();
    let actor = auth.actor();
    idempotent(
        &state,
        &auth.principal,
        &headers,
        &method,
        uri.path(),
        &body,
        |_digest| async move {
            let _serial = st.serial_lock().lock().await;
            let s = st.clone();
            let id = grant_id.clone();
            let mut rec = blocking(move || load(&s, &id)).await?;
            if rec.revoked_at.is_some() {
                return Err(Error::field(
                    ErrorCode::Conflict,
                    "grantId",
                    format!("grant {grant_id:?} is already revoked"),
                ));
            }
            record(
                &st,
                &actor,
                Event::GrantRevoked {
                    grant_id: grant_id.clone(),
                    reason: reason.clone(),
                },
            )
            .await?;
            let now = format_rfc3339(st.clock().now());
            rec.revoked_at = Some(now.clone());
            rec.revocation_reason = Some(reason.clone());
            let raw = serde_json::to_vec(&rec)
                .map_err(|e| Error::new(ErrorCode::Internal, format!("grant record: {e}")))?;
            let artifacts = st.artifacts().clone();
            let id = grant_id.clone();
            blocking(move || {
                artifacts
                    .grants
                    .insert(id.as_bytes(), raw)
                    .map_err(|e| store_error("write grant", e))?;
                artifacts.flush()
            })
            .await?;
            Ok((
                StatusCode::OK,
                json!({
                    "grantId": grant_id,
                    "status": "revoked",
                    "revokedAt": now,
                    "reason": reason,
                    "activeGrantCredentialType": active_grant_credential_type(&grant_id),
                }),
            ))
        },
    )
    .await
}

/// Ids of revoked grants that have not yet expired (beyond `drift`), sorted: what a trust
/// bundle lists in `revokedGrantIds`.
pub fn revoked_ids(state: &AppState) -> Result<Vec<String>> {
    let now = state.clock().now();
    let drift = state.config().drift;
    let mut out = Vec::new();
    for item in state.artifacts().grants.iter() {
        let (k, raw) = item.map_err(|e| store_error("read grant", e))?;
        let rec: GrantRecord = serde_json::from_slice(&raw)
            .map_err(|e| Error::new(ErrorCode::StoreError, format!("corrupt grant record: {e}")))?;
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
