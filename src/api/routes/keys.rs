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
//! through [`Change::issue`]: the audit entry, the changed key records and the
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
use crate::api::extract::ApiPath;
use crate::api::issuance::{Change, Issued};
use crate::api::respond::json_response;
use crate::api::signing::{blocking, signing_hop};
use crate::crypto::Alg;
use crate::error::{Error, ErrorCode, Result};
use crate::events::Actor;
use crate::keys::registry::{MAX_DESTROY_WAIT, Prepared};
use crate::keys::{KeyRecord, KeyRegistry, KeyRole};

fn record_json(r: &KeyRecord) -> Result<Value> {
    serde_json::to_value(r).map_err(|e| Error::new(ErrorCode::Internal, format!("key record: {e}")))
}

/// Commits the registry change `prepare` makes (checked, under the registry's operation lock)
/// through [`Change::issue`], answering 200 with `answer` of its outcome; the lock is held
/// until the change is committed.
async fn commit_change<T, P, A>(
    change: Change,
    body: Value,
    prepare: P,
    answer: A,
) -> ApiResult<Response>
where
    T: Send + 'static,
    P: FnOnce(&KeyRegistry, &Actor) -> Result<Prepared<T>> + Send + 'static,
    A: FnOnce(&T) -> Result<Value>,
{
    let (reg, actor) = (change.state.registry().clone(), change.actor());
    let st = change.state.clone();
    change
        .issue(body, |_, _| async move {
            // A key change may sign its credential transaction: the ledger lock first (the
            // order every holder of both locks follows), held until the commit.
            let ledger = st.ledger().lock().clone().lock_owned().await;
            let (mut p, tx) = signing_hop(move || {
                let mut p = prepare(&reg, &actor)?;
                // The ledger side never blocks a key change (a revocation above all): a
                // credential that cannot be signed now is reported in the answer and logged.
                let tx = st.ledger().key_credential(
                    st.keys().as_ref(),
                    &p.event,
                    st.config().ledger.fee_drops,
                    st.clock().now(),
                );
                if let Ok(Some(t)) = &tx {
                    p.writes.extend(t.writes.clone());
                }
                Ok((p, tx.map(|t| t.map(|t| t.tx))))
            })
            .await?;
            let mut body = answer(&p.outcome)?;
            match tx {
                Ok(Some(tx)) => body["credentialTransaction"] = json!(tx.reference()),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(code = e.code.as_str(), cause = %e.message, "key change committed without its XRPL credential transaction");
                    body["credentialError"] = json!({"code": e.code.as_str(), "message": e.message});
                }
            }
            let writes = std::mem::take(&mut p.writes);
            Ok(Issued::new(StatusCode::OK, body, p.actor, p.event, writes)
                .holding(p.guard)
                .holding(ledger))
        })
        .await
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
    change: Change,
    ApiPath(role): ApiPath<String>,
    OptionalStrictJson(body): OptionalStrictJson,
) -> ApiResult<Response> {
    let RotateRequest { kid, alg } = parse_request(&body)?;
    let role = KeyRole::parse(&role)
        .map_err(|e| Error::field(ErrorCode::SchemaInvalid, "role", e.message))?;
    let alg = alg
        .map(|a| Alg::parse(&a).map_err(|e| e.within("alg")))
        .transpose()?;
    commit_change(
        change,
        body,
        move |reg, actor| reg.prepare_rotate(actor, role, kid.as_deref(), alg),
        |r| {
            Ok(json!({
                "activated": record_json(&r.activated)?,
                "retired": r.retired.as_ref().map(record_json).transpose()?,
                "generated": r.generated,
            }))
        },
    )
    .await
}

/// `POST /v1/keys/{kid}/revoke`.
pub async fn revoke(
    change: Change,
    ApiPath(kid): ApiPath<String>,
    StrictJson(body): StrictJson,
) -> ApiResult<Response> {
    let RevokeRequest { reason } = parse_request(&body)?;
    non_empty(&reason, "reason")?;
    commit_change(
        change,
        body,
        move |reg, actor| reg.prepare_revoke(actor, &kid, &reason),
        key_json,
    )
    .await
}

/// `POST /v1/keys/{kid}/destroy`.
pub async fn destroy(
    change: Change,
    ApiPath(kid): ApiPath<String>,
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
    commit_change(
        change,
        body,
        move |reg, actor| reg.prepare_schedule_destroy(actor, &kid, wait),
        key_json,
    )
    .await
}

/// `{"key": <record>}`, the answer of a change to one key.
fn key_json(r: &KeyRecord) -> Result<Value> {
    Ok(json!({"key": record_json(r)?}))
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
