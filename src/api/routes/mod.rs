//! The route table, the router built from it, and what handlers share: the store of issued
//! artifacts, JSON responses, path/query extractors with JSON rejections, and the
//! idempotency wrapper of signing and key-management POSTs.

pub mod allowlists;
pub mod audit;
pub mod bundles;
pub mod grants;
pub mod keys;
pub mod policies;
pub mod public;
pub mod tokens;

use std::future::Future;

use axum::Router;
use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::idempotency::{Begin, BodyRef, StoredResponse, request_digest};
use super::signing::commit;
use super::tokens::{ApiRole, Principal};
use crate::audit::SideWrites;
use crate::canonical::canonical_bytes;
use crate::error::{Error, ErrorCode, Result};
use crate::events::{Actor, Event};
use crate::store::{Store, store_error};

/// One served route: method, path (axum / OpenAPI template syntax) and the role it requires
/// (`None` = public).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    /// HTTP method.
    pub method: Method,
    /// Path template, e.g. `/v1/grants/{grantId}`.
    pub path: &'static str,
    /// Required role, or public.
    pub role: Option<ApiRole>,
    /// Further roles the route also admits (empty for most routes).
    pub also: &'static [ApiRole],
}

impl RouteEntry {
    /// Whether a token of `role` may call the route (public routes admit every role).
    pub fn allows(&self, role: ApiRole) -> bool {
        self.role.is_none_or(|r| r == role) || self.also.contains(&role)
    }
}

fn entry(
    method: Method,
    path: &'static str,
    role: Option<ApiRole>,
    handler: MethodRouter<AppState>,
) -> (RouteEntry, MethodRouter<AppState>) {
    entry_also(method, path, role, &[], handler)
}

/// A route admitting `role` and the roles in `also`.
fn entry_also(
    method: Method,
    path: &'static str,
    role: Option<ApiRole>,
    also: &'static [ApiRole],
    handler: MethodRouter<AppState>,
) -> (RouteEntry, MethodRouter<AppState>) {
    (
        RouteEntry {
            method,
            path,
            role,
            also,
        },
        handler,
    )
}

/// Every route the service serves, with its handler. The router is built from exactly this
/// list, and the OpenAPI document is tested against it.
fn table_with_handlers() -> Vec<(RouteEntry, MethodRouter<AppState>)> {
    use ApiRole::*;
    vec![
        entry(Method::GET, "/healthz", None, get(public::healthz)),
        entry(Method::GET, "/readyz", None, get(public::readyz)),
        entry(
            Method::GET,
            "/.well-known/mpcp-keys.json",
            None,
            get(public::key_set),
        ),
        entry(
            Method::GET,
            "/.well-known/mpcp-keys.signed.json",
            None,
            get(public::signed_key_set),
        ),
        entry(
            Method::GET,
            "/.well-known/mpcp-trust-bundle.json",
            None,
            get(bundles::well_known),
        ),
        entry(Method::GET, "/v1/trust-bundles", None, get(bundles::list)),
        entry(
            Method::GET,
            "/v1/destination-allowlists/{allowlistId}",
            None,
            get(allowlists::get_latest),
        ),
        entry(
            Method::POST,
            "/v1/policies",
            Some(Issuer),
            post(policies::store),
        ),
        entry(
            Method::GET,
            "/v1/policies/{policyHash}",
            Some(Issuer),
            get(policies::fetch),
        ),
        entry(
            Method::POST,
            "/v1/grants",
            Some(Issuer),
            post(grants::issue),
        ),
        entry(
            Method::GET,
            "/v1/grants/{grantId}",
            Some(Issuer),
            get(grants::fetch),
        ),
        // Its own grants for an issuer; any grant for a security officer (emergency).
        entry_also(
            Method::POST,
            "/v1/grants/{grantId}/revoke",
            Some(Issuer),
            &[SecurityOfficer],
            post(grants::revoke),
        ),
        entry(
            Method::POST,
            "/v1/destination-allowlists",
            Some(Issuer),
            post(allowlists::issue),
        ),
        entry(
            Method::POST,
            "/v1/trust-bundles",
            Some(SecurityOfficer),
            post(bundles::issue),
        ),
        entry(
            Method::GET,
            "/v1/keys",
            Some(SecurityOfficer),
            get(keys::list),
        ),
        entry(
            Method::POST,
            "/v1/keys/{role}/rotate",
            Some(SecurityOfficer),
            post(keys::rotate),
        ),
        entry(
            Method::POST,
            "/v1/keys/{kid}/revoke",
            Some(SecurityOfficer),
            post(keys::revoke),
        ),
        entry(
            Method::POST,
            "/v1/keys/{kid}/destroy",
            Some(SecurityOfficer),
            post(keys::destroy),
        ),
        entry(
            Method::GET,
            "/v1/tokens",
            Some(SecurityOfficer),
            get(tokens::list),
        ),
        entry(
            Method::POST,
            "/v1/tokens",
            Some(SecurityOfficer),
            post(tokens::create),
        ),
        entry(
            Method::POST,
            "/v1/tokens/{name}/revoke",
            Some(SecurityOfficer),
            post(tokens::revoke),
        ),
        entry(
            Method::GET,
            "/v1/audit/checkpoint",
            Some(Auditor),
            get(audit::checkpoint),
        ),
        entry_also(
            Method::POST,
            "/v1/audit/checkpoints",
            Some(Auditor),
            &[SecurityOfficer],
            post(audit::sign_checkpoint),
        ),
        entry(
            Method::GET,
            "/v1/audit/vkeys",
            Some(Auditor),
            get(audit::vkeys),
        ),
        entry(
            Method::GET,
            "/v1/audit/entries",
            Some(Auditor),
            get(audit::entries),
        ),
        entry(
            Method::GET,
            "/v1/audit/proofs/inclusion",
            Some(Auditor),
            get(audit::inclusion),
        ),
        entry(
            Method::GET,
            "/v1/audit/proofs/consistency",
            Some(Auditor),
            get(audit::consistency),
        ),
    ]
}

/// Every route the service serves.
pub fn table() -> Vec<RouteEntry> {
    table_with_handlers().into_iter().map(|(e, _)| e).collect()
}

/// Builds the router from [`table`].
pub fn build(state: AppState) -> Router {
    let mut by_path: Vec<(&'static str, MethodRouter<AppState>)> = Vec::new();
    for (e, handler) in table_with_handlers() {
        match by_path.iter_mut().find(|(p, _)| *p == e.path) {
            Some((_, existing)) => {
                let merged = std::mem::take(existing).merge(handler);
                *existing = merged;
            }
            None => by_path.push((e.path, handler)),
        }
    }
    let mut router = Router::new();
    for (path, handler) in by_path {
        router = router.route(path, handler);
    }
    router
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::map_request_with_state(
            state.clone(),
            super::head::check_head,
        ))
        .layer(axum::middleware::map_response(common_headers))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        .with_state(state)
}

async fn route_not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        ErrorCode::RouteNotFound,
        format!("no route for {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    // The panic message may carry request data; it is not echoed.
    ApiError::new(ErrorCode::Internal, "internal error").into_response()
}

async fn common_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// A JSON response with the canonical bytes of `value`.
pub fn json_response(status: StatusCode, value: &Value) -> ApiResult<Response> {
    Ok(bytes_response(status, canonical_bytes(value)?))
}

fn bytes_response(status: StatusCode, bytes: Vec<u8>) -> Response {
    let mut r = (status, bytes).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// `axum::extract::Path` whose rejection is a JSON error.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|e| ApiError::new(ErrorCode::SchemaInvalid, format!("bad path: {e}")))
    }
}

/// `axum::extract::Query` whose rejection is a JSON error (unknown parameters are refused
/// by the target type's `deny_unknown_fields`).
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e| ApiError::new(ErrorCode::SchemaInvalid, format!("bad query: {e}")))
    }
}

/// What [`issue_idempotent`] needs of a request besides its body: the method and path
/// (digested with the body) and the `Idempotency-Key` header, checked only when used so that
/// a route's own input checks come first. Never rejects.
#[derive(Debug)]
pub struct IdempotentRequest {
    method: Method,
    path: String,
    headers: HeaderMap,
}

impl FromRequestParts<AppState> for IdempotentRequest {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &AppState) -> Result<Self, ApiError> {
        Ok(IdempotentRequest {
            method: parts.method.clone(),
            path: parts.uri.path().to_string(),
            headers: parts.headers.clone(),
        })
    }
}

/// The `Idempotency-Key` header, if present.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => v.to_str().map(Some).map_err(|_| {
            Error::field(
                ErrorCode::SchemaInvalid,
                "Idempotency-Key",
                "Idempotency-Key must be visible ASCII",
            )
        }),
    }
}

fn replayed(rec: StoredResponse) -> Response {
    let status = StatusCode::from_u16(rec.status).unwrap_or(StatusCode::OK);
    let mut r = bytes_response(status, rec.body.into_bytes());
    r.headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    r
}

/// What a signing handler prepared and has not yet released: the response, and the audit
/// event with the records that go with it (the issued artifact, a revocation, ...).
pub struct Issued {
    /// Status of the response.
    pub status: StatusCode,
    /// Body of the response, as its canonical JSON bytes.
    pub body: IssuedBody,
    /// Who is responsible.
    pub actor: Actor,
    /// The audit event describing what was signed or changed.
    pub event: Event,
    /// Records committed together with the event.
    pub writes: SideWrites,
    /// Guards (locks) released only once the commit is done.
    held: Vec<Box<dyn std::any::Any + Send>>,
    /// What the idempotency record stores instead of the response, when the response must
    /// not be stored (a created token's secret).
    replay: Option<(StatusCode, Vec<u8>)>,
    /// The record of the same append whose member is the response body (see
    /// [`crate::api::idempotency::BodyRef`]); the idempotency record then names it.
    body_ref: Option<BodyRef>,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("status", &self.status)
            .field("event", &self.event)
            .finish_non_exhaustive()
    }
}

/// The body of an [`Issued`] response: a value to canonicalise, or bytes a handler already
/// canonicalised (so a signed artifact is serialised once for its record and its response).
#[derive(Debug, Clone)]
pub enum IssuedBody {
    /// Sent as `canonical_bytes(value)`.
    Value(Value),
    /// Sent as they are: the caller guarantees they are canonical JSON.
    Canonical(Vec<u8>),
}

impl IssuedBody {
    fn into_bytes(self) -> Result<Vec<u8>> {
        match self {
            IssuedBody::Value(v) => canonical_bytes(&v),
            IssuedBody::Canonical(b) => Ok(b),
        }
    }
}

impl Issued {
    /// A response to release once `event` and `writes` are committed.
    pub fn new(
        status: StatusCode,
        body: Value,
        actor: Actor,
        event: Event,
        writes: SideWrites,
    ) -> Issued {
        Issued::with_body(status, IssuedBody::Value(body), actor, event, writes)
    }

    /// [`Issued::new`] with a body given as [`IssuedBody`].
    pub fn with_body(
        status: StatusCode,
        body: IssuedBody,
        actor: Actor,
        event: Event,
        writes: SideWrites,
    ) -> Issued {
        Issued {
            status,
            body,
            actor,
            event,
            writes,
            held: Vec::new(),
            replay: None,
            body_ref: None,
        }
    }

    /// Names the record of `writes` whose member holds the response body, so the
    /// idempotency record does not repeat it; the caller guarantees that member's canonical
    /// JSON is exactly the body released.
    pub fn body_kept_in(mut self, body_ref: BodyRef) -> Issued {
        self.body_ref = Some(body_ref);
        self
    }

    /// Stores `status` and `body` (JSON bytes) in the idempotency record instead
    /// of the released response, so a replay answers with them: for a response that must
    /// never be stored, such as a created token's secret.
    pub fn replaying(mut self, status: StatusCode, body: Vec<u8>) -> Issued {
        self.replay = Some((status, body));
        self
    }

    /// Keeps `guard` (e.g. a lock that orders versions) until the commit is done.
    pub fn holding(mut self, guard: impl std::any::Any + Send) -> Issued {
        self.held.push(Box::new(guard));
        self
    }
}

/// Runs a signing or key-management POST under `Idempotency-Key` semantics with ONE durable
/// commit: `run` (given the hex digest of the canonical request) validates and signs (or
/// prepares the key change) and returns what it [`Issued`]; the audit entry, its records and the idempotency record of the response are
/// then committed in one transaction of the audit log's group commit, and only after that
/// is the response released. A retry after a crash therefore finds all of them (replay of
/// the first response) or none (a fresh run); never a second signature or audit entry for
/// a key whose first response was committed. Without the header, the same minus the
/// idempotency record. A handler whose response must not be stored sets what a replay
/// answers instead ([`Issued::replaying`]).
pub async fn issue_idempotent<F, Fut>(
    state: &AppState,
    who: &Principal,
    request: &IdempotentRequest,
    body: &Value,
    run: F,
) -> ApiResult<Response>
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<Issued>>,
{
    let digest = request_digest(request.method.as_str(), &request.path, body)?;
    let digest_hex = hex::encode(digest);
    let clock = state.clock().clone();
    let reservation = match idempotency_key(&request.headers)? {
        None => None,
        Some(key) => match state
            .idempotency()
            .begin(&who.name, key, &digest, clock.as_ref())
            .await?
        {
            Begin::Replay(rec) => return Ok(replayed(rec)),
            Begin::Fresh(r) => Some(r),
        },
    };
    let Issued {
        status,
        body,
        actor,
        event,
        mut writes,
        held,
        replay,
        body_ref,
    } = run(digest_hex).await?;
    let bytes = body.into_bytes()?;
    if let Some(r) = &reservation {
        match (replay, body_ref) {
            (Some((s, b)), _) => {
                r.record_write(&mut writes, s.as_u16(), b.as_slice(), clock.as_ref())?
            }
            (None, Some(at)) => {
                r.record_ref_write(&mut writes, status.as_u16(), at, clock.as_ref())?
            }
            (None, None) => r.record_write(&mut writes, status.as_u16(), &bytes, clock.as_ref())?,
        }
    }
    commit(state, &actor, event, writes).await?;
    // The key (and whatever the handler holds) stays locked until the commit is durable.
    drop(reservation);
    drop(held);
    Ok(bytes_response(status, bytes))
}

/// Trees of what this PA stored or issued.
pub mod trees {
    /// policyHash -> canonical policy document.
    pub const POLICIES: &str = "api/policies";
    /// grantId -> grant record.
    pub const GRANTS: &str = "api/grants";
    /// allowlistId -> latest signed allowlist.
    pub const ALLOWLISTS: &str = "api/allowlists";
    /// bundleId -> signed trust bundle.
    pub const BUNDLES: &str = "api/bundles";
    /// allowlistId -> name of the issuer token that created the list (its owner).
    pub const ALLOWLIST_OWNERS: &str = "api/allowlist-owners";
}

/// The service's artifact trees.
#[derive(Debug, Clone)]
pub struct ArtifactStore {
    store: Store,
    /// Policies.
    pub policies: sled::Tree,
    /// Grants.
    pub grants: sled::Tree,
    /// Allowlists.
    pub allowlists: sled::Tree,
    /// Bundles.
    pub bundles: sled::Tree,
    /// Allowlist owners (see [`trees::ALLOWLIST_OWNERS`]).
    pub allowlist_owners: sled::Tree,
}

impl ArtifactStore {
    /// Opens the trees.
    pub fn open(store: &Store) -> Result<ArtifactStore> {
        Ok(ArtifactStore {
            store: store.clone(),
            policies: store.tree(trees::POLICIES)?,
            grants: store.tree(trees::GRANTS)?,
            allowlists: store.tree(trees::ALLOWLISTS)?,
            bundles: store.tree(trees::BUNDLES)?,
            allowlist_owners: store.tree(trees::ALLOWLIST_OWNERS)?,
        })
    }

    /// Makes every write durable.
    pub fn flush(&self) -> Result<()> {
        self.store.flush()
    }
}

/// Reads a JSON value from a tree.
pub fn get_json<T: DeserializeOwned>(tree: &sled::Tree, key: &str) -> Result<Option<T>> {
    match tree.get(key).map_err(|e| store_error("read", e))? {
        None => Ok(None),
        Some(raw) => serde_json::from_slice(&raw).map(Some).map_err(|e| {
            Error::new(
                ErrorCode::StoreError,
                format!("corrupt record {key:?}: {e}"),
            )
        }),
    }
}

/// Inserts `value` under `key` only if the key is absent; false when it exists.
pub fn insert_new(tree: &sled::Tree, key: &str, value: &[u8]) -> Result<bool> {
    tree.compare_and_swap(key, None as Option<&[u8]>, Some(value))
        .map_err(|e| store_error("write", e))
        .map(|r| r.is_ok())
}

/// The refusal of a change to an artifact that `owner` (a token name, or nobody recorded)
/// created: 403 NOT_OWNER. It names the artifact the caller named, never the owner.
pub fn not_owner(what: &str, field: &str, owner: Option<&str>) -> Error {
    let why = match owner {
        Some(_) => "was issued by another issuer token",
        None => "records no issuing token (issued before owners were recorded)",
    };
    Error::field(
        ErrorCode::NotOwner,
        field,
        format!("{what} {why}; only its own issuer token may change it"),
    )
}

/// A random identifier `prefix-<16 hex>`.
pub fn random_id(prefix: &str) -> Result<String> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b)
        .map_err(|e| Error::new(ErrorCode::Internal, format!("system RNG failed: {e}")))?;
    Ok(format!("{prefix}-{}", hex::encode(b)))
}

/// Refuses members the PA sets itself.
pub fn refuse_pa_members(obj: &serde_json::Map<String, Value>, members: &[&str]) -> Result<()> {
    if let Some(m) = members.iter().find(|m| obj.contains_key(**m)) {
        return Err(Error::field(
            ErrorCode::SchemaInvalid,
            *m,
            format!("{m} is set by the Policy Authority and must not be supplied"),
        ));
    }
    Ok(())
}
