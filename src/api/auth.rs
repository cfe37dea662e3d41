//! Authentication and authorisation of requests: `Authorization: Bearer <token>` checked
//! against the [`crate::api::tokens::TokenStore`], then the caller's rate limit, then the
//! role the route requires. The route table declares each route's [`Access`] once;
//! [`authenticate`] enforces it as the route's layer, before any extractor of the handler
//! runs (so before the body is read), and hands the handler the [`Caller`]. A missing,
//! unknown or revoked token is 401; a valid token of another role is 403. With mutual TLS
//! configured for the issuer role, an issuer request over a connection without a verified
//! client certificate is 403 CLIENT_CERTIFICATE_REQUIRED, whatever its token.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use super::tokens::{ApiRole, Principal};
use crate::audit::SideWrites;
use crate::error::{Error, ErrorCode};
use crate::events::{Actor, Event};

/// Who may call a route: the role it requires and the further roles it also admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// The role the route requires.
    pub role: ApiRole,
    /// Further roles the route also admits (empty for most routes).
    pub also: &'static [ApiRole],
}

impl Access {
    /// Whether a token of `role` passes.
    pub fn admits(&self, role: ApiRole) -> bool {
        self.role == role || self.also.contains(&role)
    }
}

/// The authenticated caller of a route, as [`authenticate`] admitted it. A handler of a
/// route without an [`Access`] rule that asks for one is a wiring fault: 500, never a pass.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The caller.
    pub principal: Principal,
}

impl Caller {
    /// The caller as the audit log records it.
    pub fn actor(&self) -> Actor {
        self.principal.actor()
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &AppState) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::new(ErrorCode::Internal, "route declares no access rule"))
    }
}

/// The bearer value of an `Authorization` header, if well-formed.
fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The layer of every authenticated route: authenticates the bearer token, admits it under
/// the route's `access`, and passes the [`Caller`] on to the handler; otherwise answers the
/// refusal without running the handler.
pub async fn authenticate(
    State((state, access)): State<(AppState, Access)>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    // The token's name (never its secret) goes on the response for the request's log line.
    let (mut response, name) = match caller(&mut parts, &state, access).await {
        Ok(caller) => {
            let name = caller.principal.name.clone();
            parts.extensions.insert(caller);
            (next.run(Request::from_parts(parts, body)).await, Some(name))
        }
        Err((e, name)) => (e.into_response(), name),
    };
    if let Some(name) = name {
        response
            .extensions_mut()
            .insert(super::observe::CallerName(name));
    }
    response
}

/// The admitted caller, or the refusal with the name of the token it was refused to (when
/// the token is known).
async fn caller(
    parts: &mut Parts,
    state: &AppState,
    access: Access,
) -> Result<Caller, (ApiError, Option<String>)> {
    let Some(token) = bearer(parts) else {
        state.request_counters().unauthenticated();
        return Err((
            ApiError::new(
                ErrorCode::Unauthorized,
                "missing, unknown or revoked API token",
            ),
            None,
        ));
    };
    let principal = match state.tokens().authenticate(token) {
        Ok(p) => p,
        Err(e) => {
            if e.code == ErrorCode::Unauthorized {
                state.request_counters().unauthenticated();
            }
            return Err((e.into(), None));
        }
    };
    if let Err(e) = admit(parts, state, &principal, access) {
        let name = principal.name.clone();
        return Err((refused(parts, state, &principal, e).await, Some(name)));
    }
    if parts.method == axum::http::Method::GET {
        state.request_counters().read();
    }
    Ok(Caller { principal })
}

/// The checks after authentication: the caller's rate limit (every authenticated request
/// counts, refused ones included), the role, and the issuer's client certificate.
fn admit(
    parts: &Parts,
    state: &AppState,
    principal: &Principal,
    access: Access,
) -> Result<(), Error> {
    state.rate_limiter().check(&principal.name)?;
    if !access.admits(principal.role) {
        let mut roles = vec![access.role.as_str()];
        roles.extend(access.also.iter().map(|r| r.as_str()));
        return Err(Error::new(
            ErrorCode::Forbidden,
            format!("this operation requires the {} role", roles.join(" or ")),
        ));
    }
    // The client-certificate rule binds the issuer role, not the routes it shares.
    if principal.role == ApiRole::Issuer
        && state.config().issuer_requires_client_certificate
        && parts
            .extensions
            .get::<super::tls::ClientCertificate>()
            .is_none()
    {
        return Err(Error::new(
            ErrorCode::ClientCertificateRequired,
            "the issuer role requires a TLS client certificate from the configured client CA",
        ));
    }
    Ok(())
}

/// Records the refusal `e` of an authenticated caller as [`crate::api::refusals`] says (one
/// entry per token, route and code per window) and returns it. An audit failure does not
/// change the answer: the request is refused either way.
async fn refused(parts: &Parts, state: &AppState, principal: &Principal, e: Error) -> ApiError {
    // The route template, never the raw path: the keys stay bounded.
    let route = match parts.extensions.get::<axum::extract::MatchedPath>() {
        Some(m) => format!("{} {}", parts.method, m.as_str()),
        None => format!("{} (unmatched)", parts.method),
    };
    let code = e.code.as_str();
    let counters = state.request_counters();
    if let Some(count) = counters.refusal(&principal.name, &route, code, state.clock().now()) {
        let event = Event::RequestRefused {
            token_name: principal.name.clone(),
            route: route.clone(),
            code: code.to_string(),
            count,
        };
        let ok = state
            .sink()
            .append(&principal.actor(), event, SideWrites::new())
            .await
            .is_ok();
        counters.refusal_written(&principal.name, &route, code, count, ok);
    }
    e.into()
}
