//! Destination allowlists (project extension). `POST /v1/destination-allowlists` (issuer)
//! takes `{version?, allowlistId, destinations, expiresAt}`, assigns the next `sequence` of
//! that list (monotonic: one more than the last released version), signs with the active
//! grant-signing key, commits `allowlist_issued` with the new latest version in one durable
//! write and answers 201. The public
//! `GET /v1/destination-allowlists/{allowlistId}` serves the latest version.
//!
//! Ownership: the issuer token that creates a list (its first version) owns it; its name is
//! recorded in [`trees::ALLOWLIST_OWNERS`] in the same append as that version. Only
//! the owner may publish later versions; another issuer gets 403 NOT_OWNER and nothing
//! changes. A list from before owners were recorded has none and takes no new versions
//! (publish it under a new id).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::public::cacheable;
use crate::api::AppState;
use crate::api::artifacts::{not_owner, trees};
use crate::api::body::{non_empty, present};
use crate::api::error::ApiResult;
use crate::api::extract::ApiPath;
use crate::api::issuance::{ArtifactKind, Draft, IssueContext, Record, SignatureForm, Signed};
use crate::api::signing::blocking;
use crate::audit::SideWrites;
use crate::canonical::{Domain, canonical_bytes, parse_strict};
use crate::clock::parse_rfc3339;
use crate::error::{Error, ErrorCode, Result};
use crate::events::Event;
use crate::keys::KeyRole;
use crate::model::{DestinationAllowlist, check_id, check_identifier};

/// The body of `POST /v1/destination-allowlists`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AllowlistRequest {
    /// MPCP version (default: the implemented one); a `null` is kept, for the model to
    /// refuse, not read as absent.
    #[serde(default, deserialize_with = "present")]
    pub version: Option<Value>,
    /// The list's id; its versions share it.
    pub allowlist_id: String,
    /// The destinations, as the model checks them.
    pub destinations: Value,
    /// Expiry, RFC 3339.
    pub expires_at: String,
}

/// Destination allowlists: versioned (`sequence`), owned by the issuer token that created
/// the list, signed with the active grant-signing key; issuances are serialised so versions
/// never collide or go back.
#[derive(Debug)]
pub struct Allowlists;

/// The version after the stored one, and who may publish it.
#[derive(Debug)]
pub struct AllowlistFacts {
    id: String,
    sequence: u64,
    previous: Option<Vec<u8>>,
}

impl ArtifactKind for Allowlists {
    type Request = AllowlistRequest;
    type Pending = Draft;
    type Facts = AllowlistFacts;
    const ROLE: KeyRole = KeyRole::GrantSigning;
    const SIGNATURE: SignatureForm = SignatureForm::mpcp(Domain::DestinationAllowlist);
    // A closed request: members the PA sets are unknown members there.
    const PA_MEMBERS: &'static [&'static str] = &[];
    const SERIAL: bool = true;

    fn draft(ctx: &IssueContext, r: AllowlistRequest) -> Result<Draft> {
        check_identifier(non_empty(&r.allowlist_id, "allowlistId")?, "allowlistId")?;
        let expires = parse_rfc3339(non_empty(&r.expires_at, "expiresAt")?, "expiresAt")?;
        ctx.require_future(expires)?;
        let ceiling = ctx.state.config().max_allowlist_lifetime;
        ctx.require_lifetime(expires, ceiling, || {
            format!("an allowlist may live at most {} s", ceiling.as_secs())
        })?;
        let mut members = Map::new();
        members.insert(
            "version".into(),
            r.version
                .unwrap_or_else(|| Value::String(crate::MPCP_SPEC_VERSION.into())),
        );
        members.insert("allowlistId".into(), Value::String(r.allowlist_id));
        members.insert("destinations".into(), r.destinations);
        members.insert("expiresAt".into(), Value::String(r.expires_at));
        ctx.stamp::<Self>(&mut members);
        Ok(Draft {
            // Checked by the model once the sequence is known.
            version: String::new(),
            members,
        })
    }

    fn check(ctx: &IssueContext, mut draft: Draft) -> Result<(Draft, AllowlistFacts)> {
        let id = draft
            .members
            .get("allowlistId")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let artifacts = ctx.state.artifacts();
        let previous = artifacts.get(trees::ALLOWLISTS, &id)?;
        if previous.is_some() {
            let owner = artifacts
                .get(trees::ALLOWLIST_OWNERS, &id)?
                .map(|o| String::from_utf8_lossy(&o).into_owned());
            if owner.as_deref() != Some(ctx.actor.name.as_str()) {
                return Err(not_owner(
                    &format!("destination allowlist {id:?}"),
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
        draft
            .members
            .insert("sequence".into(), Value::from(sequence));
        let parsed = DestinationAllowlist::from_value(&Value::Object(draft.members.clone()))?;
        draft.version = parsed.version;
        let facts = AllowlistFacts {
            id,
            sequence,
            previous: previous.map(|p| p.to_vec()),
        };
        Ok((draft, facts))
    }

    fn record(ctx: &IssueContext, f: AllowlistFacts, signed: &Signed) -> Result<Record> {
        let mut writes = SideWrites::new();
        if f.previous.is_none() {
            // The first version makes the caller the owner (the serial lock orders
            // creations; the condition guards against an owner recorded without a version).
            writes.insert_new(
                trees::ALLOWLIST_OWNERS,
                f.id.clone(),
                ctx.actor.name.clone(),
                Error::new(ErrorCode::Conflict, "allowlist created concurrently"),
            );
        }
        writes.swap(
            trees::ALLOWLISTS,
            f.id.clone(),
            f.previous,
            signed.bytes.clone(),
            Error::new(ErrorCode::Conflict, "allowlist changed concurrently"),
        );
        Ok(Record {
            headers: Vec::new(),
            event: Event::AllowlistIssued {
                allowlist_id: f.id,
                sequence: f.sequence,
                issuer_key_id: signed.kid.clone(),
                request_digest: ctx.request_digest.clone(),
            },
            writes,
            body_in: None,
        })
    }
}

/// `GET /v1/destination-allowlists/{allowlistId}`: the latest signed version.
pub async fn get_latest(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    check_id(&id, "allowlistId")?;
    let artifacts = state.artifacts().clone();
    let key = id.clone();
    let found: Option<Value> = blocking(move || artifacts.get_json(trees::ALLOWLISTS, &key))
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
