//! The one durable commit of every signing or state-changing POST, and the release of its
//! answer only after it: [`Issued`] is what a handler prepared, [`issue_idempotent`] commits
//! it with its idempotency record and answers.

use std::future::Future;

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;
use serde_json::Value;

use crate::api::AppState;
use crate::api::auth::Caller;
use crate::api::error::{ApiError, ApiResult};
use crate::api::extract::IdempotentRequest;
use crate::api::idempotency::{Begin, BodyRef, request_digest};
use crate::api::respond::{bytes_response, replayed};
use crate::api::signing::commit;
use crate::api::tokens::Principal;
use crate::audit::SideWrites;
use crate::canonical::canonical_bytes;
use crate::error::Result;
use crate::events::{Actor, Event};
use crate::seams::debug_showing;

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
    /// Extra response headers (repeated by a replay).
    headers: Vec<(String, String)>,
}

debug_showing!(Issued { status, event });

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
            headers: Vec::new(),
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

    /// Adds a response header (a replay repeats it): `name` must be a valid header name and
    /// `value` visible ASCII.
    pub fn with_header(mut self, name: &str, value: String) -> Issued {
        self.headers.push((name.to_string(), value));
        self
    }

    /// Keeps `guard` (e.g. a lock that orders versions) until the commit is done.
    pub fn holding(mut self, guard: impl std::any::Any + Send) -> Issued {
        self.held.push(Box::new(guard));
        self
    }
}

/// Runs a signing or key-management POST under `Idempotency-Key` semantics with ONE durable
/// commit: `run` (given the hex digest of the canonical request, and the request body)
/// validates and signs (or
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
    body: Value,
    run: F,
) -> ApiResult<Response>
where
    F: FnOnce(String, Value) -> Fut,
    Fut: Future<Output = Result<Issued>>,
{
    let digest = request_digest(request.method.as_str(), &request.path, &body)?;
    let digest_hex = hex::encode(digest);
    let clock = state.clock().clone();
    let reservation = match request.idempotency_key()? {
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
        headers,
    } = run(digest_hex, body).await?;
    let bytes = body.into_bytes()?;
    if let Some(r) = &reservation {
        match (replay, body_ref) {
            (Some((s, b)), _) => {
                r.record_write(&mut writes, s.as_u16(), b.as_slice(), &[], clock.as_ref())?
            }
            (None, Some(at)) => {
                r.record_ref_write(&mut writes, status.as_u16(), at, &headers, clock.as_ref())?
            }
            (None, None) => r.record_write(
                &mut writes,
                status.as_u16(),
                &bytes,
                &headers,
                clock.as_ref(),
            )?,
        }
    }
    commit(state, &actor, event, writes).await?;
    // The key (and whatever the handler holds) stays locked until the commit is durable.
    drop(reservation);
    drop(held);
    Ok(with_headers(bytes_response(status, bytes), &headers))
}

/// `response` with `headers` added (invalid ones are skipped: they are the service's own).
pub(crate) fn with_headers(mut response: Response, headers: &[(String, String)]) -> Response {
    for (name, value) in headers {
        if let (Ok(n), Ok(v)) = (
            axum::http::HeaderName::try_from(name.as_str()),
            axum::http::HeaderValue::try_from(value.as_str()),
        ) {
            response.headers_mut().insert(n, v);
        }
    }
    response
}

/// A signing or state-changing POST as its handler receives it: the state, the admitted
/// caller and what [`issue_idempotent`] needs of the request. Rejects only as [`Caller`]
/// does (a route wired without an access rule); the path and body are extracted after it.
#[derive(Debug)]
pub struct Change {
    /// The service state.
    pub state: AppState,
    /// Who asks for the change.
    pub caller: Caller,
    /// The method, path and `Idempotency-Key` of the request.
    pub request: IdempotentRequest,
}

impl FromRequestParts<AppState> for Change {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let request = IdempotentRequest::from_request_parts(parts, state).await?;
        Ok(Change {
            state: state.clone(),
            caller,
            request,
        })
    }
}

impl Change {
    /// The caller as the audit log records it.
    pub fn actor(&self) -> Actor {
        self.caller.actor()
    }

    /// [`issue_idempotent`] of this request with its `body`, on behalf of its caller.
    pub async fn issue<F, Fut>(&self, body: Value, run: F) -> ApiResult<Response>
    where
        F: FnOnce(String, Value) -> Fut,
        Fut: Future<Output = Result<Issued>>,
    {
        issue_idempotent(
            &self.state,
            &self.caller.principal,
            &self.request,
            body,
            run,
        )
        .await
    }
}
