//! Destination allowlists (project extension). `POST /v1/destination-allowlists` (issuer)
//! takes `{version?, allowlistId, destinations, expiresAt}`, assigns the next `sequence` of
//! that list (monotonic: one more than the last released version), signs with the active
//! grant-signing key, records `allowlist_issued` and answers 201. The public
//! `GET /v1/destination-allowlists/{allowlistId}` serves the latest version.

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::{Map, Value};

use super::public::cacheable;
use super::{ApiPath, get_json, idempotent};
use crate::api::AppState;
use crate::api::auth::{Auth, Issuer};
use crate::api::body::{StrictJson, closed_object, required_str};
use crate::api::error::ApiResult;
use crate::api::signing::{active_signer, blocking, record, sign};
use crate::canonical::{Domain, canonical_bytes};
use crate::clock::{format_rfc3339, parse_rfc3339};
use crate::error::{Error, ErrorCode, Result};
use crate::events::{Actor, Event};
use crate::keys::KeyRole;
use crate::model::{DestinationAllowlist, check_id};
use crate::store::store_error;

/// `POST /v1/destination-allowlists`.
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
    actor: Actor,
) -> Result<(StatusCode, Value)> {
    let obj = closed_object(
        &body,
        &["version", "allowlistId", "destinations", "expiresAt"],
    )?;
    let id = required_str(obj, "allowlistId")?.to_string();
    check_id(&id, "allowlistId")?;
    let now = state.clock().now();
    let expires = parse_rfc3339(required_str(obj, "expiresAt")?, "expiresAt")?;
    if expires <= now {
        return Err(Error::field(
            ErrorCode::TimestampInvalid,
            "expiresAt",
            "expiresAt must be in the future",
        ));
    }
    if expires - now > state.config().max_allowlist_lifetime {
        return Err(Error::field(
            ErrorCode::LifetimeExceeded,
            "expiresAt",
            format!(
                "an allowlist may live at most {} s",
                state.config().max_allowlist_lifetime.as_secs()
            ),
        ));
    }
    // One allowlist version at a time, so sequences never collide or go back.
    let _serial = state.serial_lock().lock().await;
    let tree = state.artifacts().allowlists.clone();
    let key = id.clone();
    let previous: Option<Value> = blocking(move || get_json(&tree, &key)).await?;
    let sequence = previous
        .as_ref()
        .and_then(|p| p.get("sequence"))
        .and_then(Value::as_u64)
        .unwrap_or(0)
        + 1;
    let mut unsigned: Map<String, Value> = obj.clone();
    unsigned
        .entry("version")
        .or_insert_with(|| Value::String(crate::MPCP_SPEC_VERSION.into()));
    unsigned.insert(
        "issuer".into(),
        Value::String(state.config().issuer.clone()),
    );
    unsigned.insert("issuerKeyId".into(), Value::String("pending".into()));
    unsigned.insert("issuedAt".into(), Value::String(format_rfc3339(now)));
    unsigned.insert("sequence".into(), Value::from(sequence));
    let parsed = DestinationAllowlist::from_value(&Value::Object(unsigned.clone()))?;

    let signer = active_signer(state, KeyRole::GrantSigning).await?;
    let kid = signer.kid().to_string();
    unsigned.insert("issuerKeyId".into(), Value::String(kid.clone()));
    let signed = sign(
        signer,
        Domain::DestinationAllowlist,
        parsed.version,
        Value::Object(unsigned),
    )
    .await?;

    let tree = state.artifacts().allowlists.clone();
    let key = id.clone();
    let old = previous.as_ref().map(canonical_bytes).transpose()?;
    let new = canonical_bytes(&signed)?;
    let (o, n) = (old.clone(), new.clone());
    blocking(move || {
        tree.compare_and_swap(key.as_bytes(), o, Some(n))
            .map_err(|e| store_error("write allowlist", e))?
            .map_err(|_| Error::new(ErrorCode::Conflict, "allowlist changed concurrently"))
    })
    .await?;
    let event = Event::AllowlistIssued {
        allowlist_id: id.clone(),
        sequence,
        issuer_key_id: kid,
        request_digest,
    };
    if let Err(e) = record(state, &actor, event).await {
        let tree = state.artifacts().allowlists.clone();
        let _ = blocking(move || {
            tree.compare_and_swap(id.as_bytes(), Some(new), old)
                .map_err(|e| store_error("restore allowlist", e))
                .map(|_| ())
        })
        .await;
        return Err(e);
    }
    let artifacts = state.artifacts().clone();
    blocking(move || artifacts.flush()).await?;
    Ok((StatusCode::CREATED, signed))
}

/// `GET /v1/destination-allowlists/{allowlistId}`: the latest signed version.
pub async fn get_latest(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    check_id(&id, "allowlistId")?;
    let tree = state.artifacts().allowlists.clone();
    let key = id.clone();
    let found: Option<Value> = blocking(move || get_json(&tree, &key)).await?;
    let value = found.ok_or_else(|| {
        Error::field(
            ErrorCode::NotFound,
            "allowlistId",
            format!("no destination allowlist {id:?}"),
        )
    })?;
    Ok(cacheable(&state, &headers, canonical_bytes(&value)?))
}
