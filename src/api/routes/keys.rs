//! Key management for the security officer, the HTTP face of [`crate::keys::KeyRegistry`]:
//! - `GET /v1/keys`: every key record (state, timestamps, public JWK; never private material);
//! - `POST /v1/keys/{role}/rotate` `{kid?, alg?}`: a pending key (or a new one) becomes the
//!   role's active key, the previous one retired, atomically;
//! - `POST /v1/keys/{kid}/revoke` `{reason}`: emergency revocation, published `active:false`;
//! - `POST /v1/keys/{kid}/destroy` `{waitDays?}`: schedules destruction of a revoked key's
//!   token objects after the waiting period (default 30 days), which the registry's
//!   destruction run carries out.
//!
//! The first path segment after `/v1/keys/` is a role for `rotate` and a kid otherwise; the
//! router names it `{id}` in both (one parameter name per position).
//!
//! Each change is prepared by the registry (checked, under its operation lock) and committed
//! through [`issue_idempotent`]: the audit entry, the changed key records and the
//! idempotency record of the response are ONE append of the audit log, which is the
//! registry's own sink. After a crash a retry with the same `Idempotency-Key` finds all of
//! them (and replays the first response) or none (and runs afresh).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use serde::Deserialize;

use crate::api::AppState;
use crate::api::auth::Caller;
use crate::api::body::{OptionalStrictJson, StrictJson, non_empty, parse_request, present};
use crate::api::error::ApiResult;
use crate::api::extract::{ApiPath, IdempotentRequest};
use crate::api::issuance::{Issued, issue_idempotent};
use crate::api::respond::json_response;
use crate::api::signing::blocking;
use crate::crypto::Alg;
use crate::error::{Error, ErrorCode, Result};
use crate::keys::registry::{MAX_DESTROY_WAIT, Prepared};
use crate::keys::{KeyRecord, KeyRole};

fn record_json(r: &KeyRecord) -> Result<Value> {
    serde_json::to_value(r).map_err(|e| Error::new(ErrorCode::Internal, format!("key record: {e}")))
}

/// A prepared registry change as a 200 response, released once the change is committed; the
/// registry's lock is held until then.
fn issued<T>(p: Prepared<T>, body: impl FnOnce(&T) -> Result<Value>) -> Result<Issued> {
    let body = body(&p.outcome)?;
    Ok(Issued::new(StatusCode::OK, body, p.actor, p.event, p.writes).holding(p.guard))
}

/// `GET /v1/keys`.
pub async fn list(State(state): State<AppState>, _caller: Caller) -> ApiResult<Response> {
    let reg = state.registry().clone();
    let records = blocking(move || reg.list()).await?;
    let keys = records
        .iter()
        .map(record_json)
        .collect::<Result<Vec<_>>>()?;
    json_response(StatusCode::OK, &json!({"keys": keys}))
}

/// `POST /v1/keys/{role}/rotate`.
pub async fn rotate(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(role): ApiPath<String>,
    request: IdempotentRequest,
    OptionalStrictJson(body): OptionalStrictJson,
) -> ApiResult<Response> {
    let RotateRequest { kid, alg } = parse_request(&body)?;
    let role = KeyRole::parse(&role)
        .map_err(|e| Error::field(ErrorCode::SchemaInvalid, "role", e.message))?;
    let alg = alg
        .map(|a| Alg::parse(&a).map_err(|e| e.within("alg")))
        .transpose()?;
    let (reg, actor) = (state.registry().clone(), caller.actor());
    issue_idempotent(
        &state,
        &caller.principal,
        &request,
        body,
        |_, _| async move {
            let p = blocking(move || reg.prepare_rotate(&actor, role, kid.as_deref(), alg)).await?;
            issued(p, |r| {
                Ok(json!({
                    "activated": record_json(&r.activated)?,
                    "retired": r.retired.as_ref().map(record_json).transpose()?,
                    "generated": r.generated,
                }))
            })
        },
    )
    .await
}

/// `POST /v1/keys/{kid}/revoke`.
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(kid): ApiPath<String>,
    request: IdempotentRequest,
    StrictJson(body): StrictJson,
) -> ApiResult<Response> {
    let RevokeRequest { reason } = parse_request(&body)?;
    non_empty(&reason, "reason")?;
    let (reg, actor) = (state.registry().clone(), caller.actor());
    issue_idempotent(
        &state,
        &caller.principal,
        &request,
        body,
        |_, _| async move {
            let p = blocking(move || reg.prepare_revoke(&actor, &kid, &reason)).await?;
            issued(p, |r| Ok(json!({"key": record_json(r)?})))
        },
    )
    .await
}

/// `POST /v1/keys/{kid}/destroy`.
pub async fn destroy(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(kid): ApiPath<String>,
    request: IdempotentRequest,
    OptionalStrictJson(body): OptionalStrictJson,
) -> ApiResult<Response> {
    let DestroyRequest { wait_days } = parse_request(&body)?;
    let days = wait_days.unwrap_or(30);
    let wait = Duration::from_secs(days.saturating_mul(86400));
    // Checked here so the refusal names the request's member, not the registry's argument.
    if wait > MAX_DESTROY_WAIT {
        return Err(Error::field(
            ErrorCode::SchemaInvalid,
            "waitDays",
            format!(
                "waitDays must be at most {}",
                MAX_DESTROY_WAIT.as_secs() / 86400
            ),
        )
        .into());
    }
    let (reg, actor) = (state.registry().clone(), caller.actor());
    issue_idempotent(
        &state,
        &caller.principal,
        &request,
        body,
        |_, _| async move {
            let p = blocking(move || reg.prepare_schedule_destroy(&actor, &kid, wait)).await?;
            issued(p, |r| Ok(json!({"key": record_json(r)?})))
        },
    )
    .await
}

/// The body of `POST /v1/keys/{role}/rotate` (both members optional).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    /// Kid of a pending key to activate (else a new key is generated).
    pub kid: Option<String>,
    /// Algorithm of the generated key (else the role's default).
    pub alg: Option<String>,
}

/// The body of `POST /v1/keys/{kid}/revoke`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// Why the key is revoked.
    pub reason: String,
}

/// The body of `POST /v1/keys/{kid}/destroy`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestroyRequest {
    /// Days before the destruction is due (default 30); `null` is refused.
    #[serde(default, deserialize_with = "present")]
    pub wait_days: Option<u64>,
}
