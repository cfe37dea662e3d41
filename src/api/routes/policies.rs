//! Policy documents (issuer role). `POST /v1/policies` validates a document, stores its
//! canonical form under `policyHash = SHA-256("MPCP:Policy:1.0:" || canonical_json)`
//! together with its `policy_stored` entry (one durable write); storing the same document again answers 200 with the same hash
//! and records nothing. Grants may only name a stored policy.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use crate::api::AppState;
use crate::api::artifacts::trees;
use crate::api::auth::Caller;
use crate::api::body::StrictJson;
use crate::api::error::{ApiError, ApiResult};
use crate::api::extract::ApiPath;
use crate::api::respond::json_response;
use crate::api::signing::{blocking, commit};
use crate::audit::SideWrites;
use crate::canonical::canonical_bytes;
use crate::error::{Error, ErrorCode, Result};
use crate::events::Event;
use crate::model::{PolicyDocument, check_sha256_hex};

/// `POST /v1/policies`.
pub async fn store(
    State(state): State<AppState>,
    caller: Caller,
    StrictJson(doc): StrictJson,
) -> ApiResult<Response> {
    let policy_hash = PolicyDocument::policy_hash(&doc)?;
    let canonical = canonical_bytes(&doc)?;
    let body = json!({"policyHash": policy_hash, "version": doc["version"]});
    let artifacts = state.artifacts().clone();
    let h = policy_hash.clone();
    let stored = blocking(move || artifacts.contains(trees::POLICIES, &h)).await?;
    if stored {
        return json_response(StatusCode::OK, &body);
    }
    let mut writes = SideWrites::new();
    writes.insert_new(
        trees::POLICIES,
        policy_hash.clone(),
        canonical,
        Error::new(ErrorCode::Conflict, "policy stored concurrently"),
    );
    let event = Event::PolicyStored { policy_hash };
    match commit(&state, &caller.actor(), event, writes).await {
        Ok(_) => json_response(StatusCode::CREATED, &body),
        // The same document, stored (and recorded) by a concurrent request.
        Err(e) if e.code == ErrorCode::Conflict => json_response(StatusCode::OK, &body),
        Err(e) => Err(e.into()),
    }
}

/// The stored policy document with `policy_hash`, if any.
pub fn load(state: &AppState, policy_hash: &str) -> Result<Option<PolicyDocument>> {
    let Some(raw) = state.artifacts().get(trees::POLICIES, policy_hash)? else {
        return Ok(None);
    };
    let value: Value = crate::canonical::parse_strict(&raw)?;
    PolicyDocument::from_value(&value).map(Some)
}

/// `GET /v1/policies/{policyHash}`.
pub async fn fetch(
    State(state): State<AppState>,
    ApiPath(policy_hash): ApiPath<String>,
) -> ApiResult<Response> {
    check_sha256_hex(&policy_hash, "policyHash")?;
    let artifacts = state.artifacts().clone();
    let h = policy_hash.clone();
    let doc: Option<Value> = blocking(move || artifacts.get_json(trees::POLICIES, &h)).await?;
    match doc {
        Some(doc) => json_response(
            StatusCode::OK,
            &json!({"policyHash": policy_hash, "policy": doc}),
        ),
        None => Err(ApiError(Error::field(
            ErrorCode::NotFound,
            "policyHash",
            format!("no policy with hash {policy_hash}"),
        ))),
    }
}
