//! API token administration for the security officer while the service runs (the `tokens`
//! CLI needs the store, which the running service holds), the HTTP face of
//! [`crate::api::tokens::TokenStore`]:
//! - `GET /v1/tokens`: names, roles, creation and revocation times; never secrets or hashes;
//! - `POST /v1/tokens` `{name, role, audiences?}`: creates a token and returns its secret once
//!   (201); a receipt-consumer token names the audiences (MCP providers) it serves;
//! - `POST /v1/tokens/{name}/revoke`: revokes it; it is refused from the next request on;
//! - `GET /v1/whoami` (every role): the calling token's own name and role, so that a client
//!   such as the console learns what its token may do without trying (and being refused,
//!   which the audit log records).
//!
//! Each change is prepared by the token store and committed through [`Change::issue`]:
//! the token record, its audit entry (as the calling officer) and, with an
//! `Idempotency-Key`, the idempotency record are ONE append of the audit log, durable before
//! the response is released. A retry after a crash finds all of them or none.
//!
//! Replays: a revocation replays its first response byte for byte. A creation's response
//! carries the secret, which is never stored (only its hash is), so its idempotency record
//! holds a refusal instead: a retry with the same key and request gets 409
//! TOKEN_SECRET_NOT_REPLAYED (header `Idempotent-Replayed: true`) naming the token this key
//! created; it creates nothing and logs nothing. An officer who lost the first response
//! revokes that token and creates another.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use serde::Deserialize;

use crate::api::AppState;
use crate::api::auth::Caller;
use crate::api::body::{NoParameters, OptionalStrictJson, StrictJson, non_empty, parse_request};
use crate::api::error::{ApiResult, error_body};
use crate::api::extract::ApiPath;
use crate::api::issuance::{Change, Issued};
use crate::api::respond::json_response;
use crate::api::signing::blocking;
use crate::api::tokens::{ApiRole, NewToken, TokenRecord, TokenStore};
use crate::clock::Clock;
use crate::error::{Error, ErrorCode};
use crate::events::Actor;

fn public_view(t: &TokenRecord) -> Value {
    let mut v = json!({
        "name": t.name,
        "role": t.role.as_str(),
        "createdAt": t.created_at,
        "revokedAt": t.revoked_at,
        "active": t.revoked_at.is_none(),
    });
    with_audiences(&mut v, &t.audiences);
    v
}

/// Adds `audiences` to a token's view when it has any (receipt consumers).
fn with_audiences(view: &mut Value, audiences: &[String]) {
    if !audiences.is_empty() {
        view["audiences"] = json!(audiences);
    }
}

/// What a replayed creation answers: the token exists, its secret is not shown again.
pub fn secret_not_replayed(t: &NewToken) -> Error {
    Error::field(
        ErrorCode::TokenSecretNotReplayed,
        "name",
        format!(
            "token {:?} (role {}) was created by this request at {}; its secret was shown only \
             in the first response and is not stored. If it was lost, revoke the token and \
             create another",
            t.name, t.role, t.created_at
        ),
    )
}

/// `GET /v1/tokens`.
pub async fn list(State(state): State<AppState>, _caller: Caller) -> ApiResult<Response> {
    let tokens = state.tokens().clone();
    let records = blocking(move || tokens.list()).await?;
    let list: Vec<Value> = records.iter().map(public_view).collect();
    json_response(StatusCode::OK, &json!({"tokens": list}))
}

/// `GET /v1/whoami`: `{name, role}` of the calling token.
pub async fn whoami(caller: Caller) -> ApiResult<Response> {
    json_response(
        StatusCode::OK,
        &json!({"name": caller.principal.name, "role": caller.principal.role.as_str()}),
    )
}

/// `POST /v1/tokens`.
pub async fn create(change: Change, StrictJson(body): StrictJson) -> ApiResult<Response> {
    let CreateTokenRequest {
        name,
        role,
        audiences,
    } = parse_request(&body)?;
    non_empty(&name, "name")?;
    let role = ApiRole::parse(non_empty(&role, "role")?)
        .map_err(|e| Error::field(ErrorCode::SchemaInvalid, "role", e.message))?;
    let (tokens, clock, actor) = token_parts(&change);
    let audiences_out = audiences.clone();
    change
        .issue(body, |_, _| async move {
            let c = blocking(move || {
                tokens.prepare_create_for(&name, role, &audiences, &actor, clock.as_ref())
            })
            .await?;
            let t = &c.outcome;
            let replay = error_body(&secret_not_replayed(t));
            let mut response = json!({
                "name": t.name,
                "role": t.role.as_str(),
                "token": t.secret.as_str(),
            });
            with_audiences(&mut response, &audiences_out);
            Ok(
                Issued::new(StatusCode::CREATED, response, c.actor, c.event, c.writes)
                    .replaying(StatusCode::CONFLICT, replay),
            )
        })
        .await
}

/// `POST /v1/tokens/{name}/revoke`.
pub async fn revoke(
    change: Change,
    ApiPath(name): ApiPath<String>,
    OptionalStrictJson(body): OptionalStrictJson,
) -> ApiResult<Response> {
    let NoParameters {} = parse_request(&body)?;
    let (tokens, clock, actor) = token_parts(&change);
    change
        .issue(body, |_, _| async move {
            let c = blocking(move || tokens.prepare_revoke(&name, &actor, clock.as_ref())).await?;
            let response = json!({"token": public_view(&c.outcome)});
            Ok(Issued::new(
                StatusCode::OK,
                response,
                c.actor,
                c.event,
                c.writes,
            ))
        })
        .await
}

/// What a token change runs with, off the async runtime: the token store, the clock and the
/// calling officer.
fn token_parts(change: &Change) -> (TokenStore, Arc<dyn Clock>, Actor) {
    (
        change.state.tokens().clone(),
        change.state.clock().clone(),
        change.actor(),
    )
}

/// The body of `POST /v1/tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// The token's name (unique).
    pub name: String,
    /// Its one role.
    pub role: String,
    /// The audiences of a receipt-consumer token (required for that role only).
    #[serde(default)]
    pub audiences: Vec<String>,
}
