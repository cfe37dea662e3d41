//! Trust bundles. `POST /v1/trust-bundles` (security officer) takes a bundle without the
//! members the PA sets (`bundleIssuer`, `bundleKeyId`, `issuedAt`, `revokedGrantIds`,
//! `signature`; `bundleId` generated when absent), refuses a lifetime over that of the
//! bundle's assurance profile (`assuranceProfile`, default from policies/bundle-profiles.toml,
//! kept in the signed bundle; 7 days at most) and, for the PA's own issuer entry, any key that is not a currently active
//! grant-signing key; adds the revoked, unexpired grants as `revokedGrantIds`; signs with
//! the root key (never the grant-signing key), commits `trust_bundle_issued` with the bundle
//! in one durable write and answers 201.
//! Public reads: the newest unexpired bundle at `/.well-known/mpcp-trust-bundle.json`, and
//! `GET /v1/trust-bundles?category=&merchant=&region=` for the unexpired bundles matching
//! every given filter, newest first.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::public::cacheable;
use crate::api::AppState;
use crate::api::artifacts::{id_or_random, trees};
use crate::api::error::ApiResult;
use crate::api::extract::ApiQuery;
use crate::api::issuance::{ArtifactKind, Draft, IssueContext, Record, SignatureForm, Signed};
use crate::api::signing::blocking;
use crate::audit::SideWrites;
use crate::bundle_profiles::PROFILE_MEMBER;
use crate::canonical::{Domain, canonical_bytes, parse_strict};
use crate::clock::parse_rfc3339;
use crate::error::{Error, ErrorCode, Result};
use crate::events::Event;
use crate::keys::KeyRole;
use crate::model::TrustBundle;

/// Trust bundles: an open object signed with the root key (never the grant-signing key),
/// listing the revoked, unexpired grants; its lifetime is bounded by its assurance profile.
#[derive(Debug)]
pub struct Bundles;

/// A bundle that passed its model and lifetime checks.
#[derive(Debug)]
pub struct PendingBundle {
    draft: Draft,
    bundle: TrustBundle,
}

impl ArtifactKind for Bundles {
    type Request = Map<String, Value>;
    type Pending = PendingBundle;
    type Facts = String;
    const ROLE: KeyRole = KeyRole::Root;
    const SIGNATURE: SignatureForm = SignatureForm::Mpcp {
        domain: Domain::TrustBundle,
        kid_member: "bundleKeyId",
    };
    const ISSUER_MEMBER: &'static str = "bundleIssuer";
    const PA_MEMBERS: &'static [&'static str] = &[
        "bundleIssuer",
        "bundleKeyId",
        "issuedAt",
        "revokedGrantIds",
        "signature",
    ];

    fn draft(ctx: &IssueContext, mut members: Map<String, Value>) -> Result<PendingBundle> {
        id_or_random(&mut members, "bundleId", "bundle")?;
        members
            .entry("version")
            .or_insert_with(|| Value::String(crate::MPCP_SPEC_VERSION.into()));
        ctx.stamp::<Self>(&mut members);
        // Listed for real in `check`, against the store.
        members.insert("revokedGrantIds".into(), json!([]));
        let bundle = TrustBundle::from_value(&Value::Object(members.clone()))?;
        let expires = parse_rfc3339(&bundle.expires_at, "expiresAt")?;
        ctx.require_future(expires)?;
        let profile = bundle_profile(&ctx.state, &bundle)?;
        let ceiling = ctx.state.config().bundle_profiles.max_lifetime(&profile)?;
        ctx.require_lifetime(expires, ceiling, || {
            format!(
                "a trust bundle of the {profile} assurance profile may live at most {} s",
                ceiling.as_secs()
            )
        })?;
        members.insert(PROFILE_MEMBER.into(), Value::String(profile));
        Ok(PendingBundle {
            draft: Draft {
                version: bundle.version.clone(),
                members,
            },
            bundle,
        })
    }

    fn check(ctx: &IssueContext, p: PendingBundle) -> Result<(Draft, String)> {
        let PendingBundle { mut draft, bundle } = p;
        check_own_keys(&ctx.state, &bundle)?;
        let revoked = super::grants::revoked_ids(&ctx.state)?;
        draft
            .members
            .insert("revokedGrantIds".into(), json!(revoked));
        if ctx
            .state
            .artifacts()
            .contains(trees::BUNDLES, &bundle.bundle_id)?
        {
            return Err(conflict(&bundle.bundle_id));
        }
        Ok((draft, bundle.bundle_id))
    }

    fn record(ctx: &IssueContext, bundle_id: String, signed: &Signed) -> Result<Record> {
        let mut writes = SideWrites::new();
        writes.insert_new(
            trees::BUNDLES,
            bundle_id.clone(),
            signed.bytes.clone(),
            conflict(&bundle_id),
        );
        Ok(Record {
            headers: Vec::new(),
            event: Event::TrustBundleIssued {
                bundle_id,
                bundle_key_id: signed.kid.clone(),
                request_digest: ctx.request_digest.clone(),
            },
            writes,
            body_in: None,
        })
    }
}

/// The bundle's assurance profile: the one it names, else the configured default.
fn bundle_profile(state: &AppState, bundle: &TrustBundle) -> Result<String> {
    match bundle.extra.get(PROFILE_MEMBER) {
        None => Ok(state.config().bundle_profiles.default_profile().to_string()),
        Some(Value::String(p)) => Ok(p.clone()),
        Some(_) => Err(Error::field(
            ErrorCode::SchemaInvalid,
            PROFILE_MEMBER,
            "assuranceProfile must be a string",
        )),
    }
}

fn conflict(id: &str) -> Error {
    Error::field(
        ErrorCode::Conflict,
        "bundleId",
        format!("bundle {id:?} already exists"),
    )
}

/// Keys embedded under the PA's own issuer must be its active grant-signing keys, exactly.
fn check_own_keys(state: &AppState, bundle: &TrustBundle) -> Result<()> {
    let own = &state.config().issuer;
    let entries: Vec<_> = bundle
        .issuers
        .iter()
        .enumerate()
        .filter(|(_, e)| &e.issuer == own)
        .collect();
    if entries.is_empty() {
        return Ok(());
    }
    let published = state.keys().published_keys(KeyRole::GrantSigning)?;
    for (i, entry) in entries {
        for (j, k) in entry.keys.iter().enumerate() {
            let field = format!("issuers[{i}].keys[{j}]");
            match published.iter().find(|p| p.kid == k.kid) {
                None => {
                    return Err(Error::field(
                        ErrorCode::KeyNotFound,
                        field,
                        format!("{:?} is not a grant-signing key of this PA", k.kid),
                    ));
                }
                Some(p) if !p.is_active() => {
                    return Err(Error::field(
                        ErrorCode::KeyRevoked,
                        field,
                        format!("key {:?} is revoked", k.kid),
                    ));
                }
                Some(p)
                    if (p.kty.as_str(), p.crv.as_str(), p.x.as_str(), p.y.as_deref())
                        != (k.kty.as_str(), k.crv.as_str(), k.x.as_str(), k.y.as_deref()) =>
                {
                    return Err(Error::field(
                        ErrorCode::KeyFormatInvalid,
                        field,
                        format!("key {:?} does not match the published key", k.kid),
                    ));
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

/// Filters of `GET /v1/trust-bundles`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleQuery {
    /// Exact category.
    pub category: Option<String>,
    /// Exact merchant.
    pub merchant: Option<String>,
    /// Exact geography region.
    pub region: Option<String>,
}

/// Unexpired bundles matching `q`, newest `issuedAt` first.
fn matching(state: &AppState, q: &BundleQuery) -> Result<Vec<Value>> {
    let now = state.clock().now();
    let mut found: Vec<(String, Value)> = Vec::new();
    for item in state.artifacts().scan(trees::BUNDLES)? {
        let (_, raw) = item?;
        let v = parse_strict(&raw)?;
        // Parsed, not re-validated: the bundle was validated when it was signed, and one
        // stored under earlier, looser rules must not take the public reads down.
        let b: TrustBundle = crate::model::from_value(&v, "TrustBundle")?;
        if parse_rfc3339(&b.expires_at, "expiresAt")? <= now {
            continue;
        }
        let region = b.geography.as_ref().and_then(|g| g.region.as_deref());
        let ok = q.category.as_deref().is_none_or(|c| c == b.category)
            && q.merchant
                .as_deref()
                .is_none_or(|m| Some(m) == b.merchant.as_deref())
            && q.region.as_deref().is_none_or(|r| Some(r) == region);
        if ok {
            found.push((b.issued_at.clone().unwrap_or_default(), v));
        }
    }
    // RFC 3339 in UTC with whole seconds (as the PA writes it) sorts as text.
    found.sort_by(|a, b| b.0.cmp(&a.0));
    Ok(found.into_iter().map(|(_, v)| v).collect())
}

/// `GET /v1/trust-bundles`.
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<BundleQuery>,
) -> ApiResult<Response> {
    let s = state.clone();
    let bundles = blocking(move || matching(&s, &q))
        .await
        .map_err(super::public::public_error)?;
    Ok(cacheable(
        &state,
        &headers,
        canonical_bytes(&json!({"bundles": bundles}))?,
    ))
}

/// `GET /.well-known/mpcp-trust-bundle.json`: the newest unexpired bundle.
pub async fn well_known(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let s = state.clone();
    let newest = blocking(move || matching(&s, &BundleQuery::default()))
        .await
        .map_err(super::public::public_error)?
        .into_iter()
        .next()
        .ok_or_else(|| {
            Error::new(
                ErrorCode::NotFound,
                "no unexpired trust bundle has been issued",
            )
        })?;
    Ok(cacheable(&state, &headers, canonical_bytes(&newest)?))
}
