//! API token administration for the security officer while the service runs (the `tokens`
//! CLI needs the store, which the running service holds), the HTTP face of
//! [`crate::api::tokens::TokenStore`]:
//! - `GET /v1/tokens`: names, roles, creation and revocation times; never secrets or hashes;
//! - `POST /v1/tokens` `{name, role}`: creates a token and returns its secret once (201);
//! - `POST /v1/tokens/{name}/revoke`: revokes it; it is refused from the next request on.
//!
//! Each change is recorded in the audit log as the calling officer before it takes effect.
//! Creation takes no `Idempotency-Key`: replaying the first response would mean storing the
//! secret, so a retry gets 409 CONFLICT for the taken name instead, and the caller revokes and
//! creates another token if the first response was lost.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::{ApiPath, json_response};
use crate::api::AppState;
use crate::api::auth::{Auth, SecurityOfficer};
use crate::api::body::{OptionalStrictJson, StrictJson, closed_object, required_str};
use crate::api::error::ApiResult;
use crate::api::signing::blocking;
use crate::api::tokens::{ApiRole, TokenRecord};
use crate::error::{Error, ErrorCode};

const IDEMPOTENCY_HEADER: &str = "idempotency-key";

fn public_view(t: &TokenRecord) -> Value {
    json!({
        "name": t.name,
        "role": t.role.as_str(),
        "createdAt": t.created_at,
        "revokedAt": t.revoked_at,
        "active": t.revoked_at.is_none(),
    })
}

/// `GET /v1/tokens`.
pub async fn list(
    State(state): State<AppState>,
    _auth: Auth<SecurityOfficer>,
) -> ApiResult<Response> {
    let tokens = state.tokens().clone();
    let records = blocking(move || tokens.list()).await?;
    let list: Vec<Value> = records.iter().map(public_view).collect();
    json_response(StatusCode::OK, &json!({"tokens": list}))
}

/// `POST /v1/tokens`.
pub async fn create(
    State(state): State<AppState>,
    auth: Auth<SecurityOfficer>,
    headers: HeaderMap,
    StrictJson(body): StrictJson,
) -> ApiResult<Response> {
    if headers.contains_key(IDEMPOTENCY_HEADER) {
        return Err(Error::field(
            ErrorCode::SchemaInvalid,
            "Idempotency-Key",
            "token creation takes no Idempotency-Key (its secret is never stored to replay); \
             a retry gets CONFLICT for the taken name",
        )
        .into());
    }
    let obj = closed_object(&body, &["name", "role"])?;
    let name = required_str(obj, "name")?.to_string();
    let role = ApiRole::parse(required_str(obj, "role")?)
        .map_err(|e| Error::field(ErrorCode::SchemaInvalid, "role", e.message))?;
    let (tokens, sink, clock, actor) = (
        state.tokens().clone(),
        state.sink().clone(),
        state.clock().clone(),
        auth.actor(),
    );
    let created =
        blocking(move || tokens.create(&name, role, &actor, sink.as_ref(), clock.as_ref())).await?;
    json_response(
        StatusCode::CREATED,
        &json!({
            "name": created.name,
            "role": created.role.as_str(),
            "token": created.secret.as_str(),
        }),
    )
}

/// `POST /v1/tokens/{name}/revoke`.
pub async fn revoke(
    State(state): State<AppState>,
    auth: Auth<SecurityOfficer>,
    ApiPath(name): ApiPath<String>,
    OptionalStrictJson(body): OptionalStrictJson,
) -> ApiResult<Response> {
    closed_object(&body, &[])?;
    let (tokens, sink, clock, actor) = (
        state.tokens().clone(),
        state.sink().clone(),
        state.clock().clone(),
        auth.actor(),
    );
    let record = blocking(move || {
        tokens.revoke(&name, &actor, sink.as_ref(), clock.as_ref())?;
        tokens
            .get(&name)?
            .ok_or_else(|| Error::new(ErrorCode::Internal, "revoked token vanished"))
    })
    .await?;
    json_response(StatusCode::OK, &json!({"token": public_view(&record)}))
}
