//! Destination allowlists (project extension). `POST /v1/destination-allowlists` (issuer)
//! takes `{version?, allowlistId, destinations, expiresAt}`, assigns the next `sequence` of
//! that list (monotonic: one more than the last released version), signs with the active
//! grant-signing key, commits `allowlist_issued` with the new latest version in one durable
//! write and answers 201. The public
//! `GET /v1/destination-allowlists/{allowlistId}` serves the latest version.
//!
//! Ownership: the issuer token that creates a list (its first version) owns it; its name is
//! recorded in [`super::trees::ALLOWLIST_OWNERS`] in the same append as that version. Only
//! the owner may publish later versions; another issuer gets 403 NOT_OWNER and nothing
//! changes. A list from before owners were recorded has none and takes no new versions
//! (publish it under a new id).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value};

use super::public::cacheable;
use super::{ApiPath, IdempotentRequest, Issued, get_json, issue_idempotent};
use crate::api::AppState;
use crate::api::auth::{Auth, Issuer};
use crate::api::body::{StrictJson, closed_object, required_str};
use crate::api::error::ApiResult;
use crate::api::signing::{blocking, sign_with_active, signing_hop};
use crate::audit::SideWrites;
use crate::canonical::{Domain, canonical_bytes, parse_strict};
use crate::clock::{format_rfc3339, parse_rfc3339};
use crate::error::{Error, ErrorCode, Result};
use crate::events::{Actor, Event};
use crate::keys::KeyRole;
use crate::model::{DestinationAllowlist, check_id, check_identifier};
use crate::store::store_error;

/// `POST /v1/destination-allowlists`.
pub async fn issue(
    State(state): State<AppState>,
    auth: Auth<Issuer>,
    request: IdempotentRequest,
    StrictJson(body): StrictJson,
) -> ApiResult<Response> {
    let st = state.clone();
    let b = body.clone();
    let actor = auth.actor();
    issue_idempotent(
        &state,
        &auth.principal,
        &request,
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
) -> Result<Issued> {
    let obj = closed_object(
        &body,
        &["version", "allowlistId", "destinations", "expiresAt"],
    )?;
    let id = required_str(obj, "allowlistId")?.to_string();
    check_identifier(&id, "allowlistId")?;
    // The clock first: with it behind the audit log, time checks below would judge the
    // request against a wrong "now" (and nothing would be signed anyway).
    crate::clock::SigningGate::check_signing_time(state.audit().as_ref())?;
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
    // One allowlist version at a time (held until committed), so sequences never collide
    // or go back; the commit also checks that the previous version is still the latest.
    let serial = state.serial_lock().clone().lock_owned().await;
    // One blocking hop: the previous version, the signer, the signature and its self-check.
    let s = state.clone();
    let key = id.clone();
    let caller = actor.name.clone();
    let (previous, sequence, signed, kid) = signing_hop(move || {
        let previous = s
            .artifacts()
            .allowlists
            .get(key.as_bytes())
            .map_err(|e| store_error("read allowlist", e))?;
        // Checked before signing: a refused version costs no HSM operation.
        if previous.is_some() {
            let owner = s
                .artifacts()
                .allowlist_owners
                .get(key.as_bytes())
                .map_err(|e| store_error("read allowlist owner", e))?
                .map(|o| String::from_utf8_lossy(&o).into_owned());
            if owner.as_deref() != Some(caller.as_str()) {
                return Err(super::not_owner(
                    &format!("destination allowlist {key:?}"),
                    "allowlistId",
                    owner.as_deref(),
                ));
            }
        }
        let sequence = match &previous {
            None => 1,
            Some(raw) => {
                let v = parse_strict(raw)?;
                v.get("sequence").and_then(Value::as_u64).unwrap_or(0) + 1
            }
        };
        unsigned.insert("sequence".into(), Value::from(sequence));
        let parsed = DestinationAllowlist::from_value(&Value::Object(unsigned.clone()))?;
        let (signed, kid) = sign_with_active(
            s.keys().as_ref(),
            KeyRole::GrantSigning,
            "issuerKeyId",
            Domain::DestinationAllowlist,
            &parsed.version,
            unsigned,
        )?;
        Ok((previous.map(|p| p.to_vec()), sequence, signed, kid))
    })
    .await?;
    let mut writes = SideWrites::new();
    if previous.is_none() {
        // The first version makes the caller the owner (the serial lock orders creations;
        // the condition guards against an owner recorded without a version).
        writes.insert_new(
            super::trees::ALLOWLIST_OWNERS,
            id.clone(),
            actor.name.clone(),
            Error::new(ErrorCode::Conflict, "allowlist created concurrently"),
        );
    }
    writes.swap(
        super::trees::ALLOWLISTS,
        id.clone(),
        previous,
        canonical_bytes(&signed)?,
        Error::new(ErrorCode::Conflict, "allowlist changed concurrently"),
    );
    Ok(Issued::new(
        StatusCode::CREATED,
        signed,
        actor,
        Event::AllowlistIssued {
            allowlist_id: id,
            sequence,
            issuer_key_id: kid,
            request_digest,
        },
        writes,
    )
    .holding(serial))
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
    let found: Option<Value> = blocking(move || get_json(&tree, &key))
        .await
        .map_err(super::public::public_error)?;
    let value = found.ok_or_else(|| {
        Error::field(
            ErrorCode::NotFound,
            "allowlistId",
            format!("no destination allowlist {id:?}"),
        )
    })?;
    Ok(cacheable(&state, &headers, canonical_bytes(&value)?))
}
