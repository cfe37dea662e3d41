//! Authentication and authorisation of requests: `Authorization: Bearer <token>` checked
//! against the [`crate::api::tokens::TokenStore`], then the caller's rate limit, then the
//! role the route requires. Handlers take an [`Auth<R>`] argument and get the principal as
//! an audit [`crate::events::Actor`]. A missing, unknown or revoked token is 401; a valid token of
//! another role is 403. Both are decided before the body is read. With mutual TLS configured
//! for the issuer role, an issuer request over a connection without a verified client
//! certificate is 403 CLIENT_CERTIFICATE_REQUIRED, whatever its token.

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use super::AppState;
use super::error::ApiError;
use super::tokens::{ApiRole, Principal};
use crate::audit::SideWrites;
use crate::error::{Error, ErrorCode};
use crate::events::{Actor, Event};

/// A role a route requires.
pub trait RequiredRole: Send + Sync + 'static {
    /// The role.
    const ROLE: ApiRole;
    /// Further roles the route also admits (none for most routes).
    const ALSO: &'static [ApiRole] = &[];
}

/// Marker: the issuer role.
#[derive(Debug)]
pub struct Issuer;
impl RequiredRole for Issuer {
    const ROLE: ApiRole = ApiRole::Issuer;
}

/// Marker: the security-officer role.
#[derive(Debug)]
pub struct SecurityOfficer;
impl RequiredRole for SecurityOfficer {
    const ROLE: ApiRole = ApiRole::SecurityOfficer;
}

/// Marker: the auditor role.
#[derive(Debug)]
pub struct Auditor;
impl RequiredRole for Auditor {
    const ROLE: ApiRole = ApiRole::Auditor;
}

/// Marker: the auditor role, or the security-officer role (audit checkpoints on demand).
#[derive(Debug)]
pub struct AuditorOrSecurityOfficer;
impl RequiredRole for AuditorOrSecurityOfficer {
    const ROLE: ApiRole = ApiRole::Auditor;
    const ALSO: &'static [ApiRole] = &[ApiRole::SecurityOfficer];
}

/// Marker: the issuer role, or the security-officer role (emergency grant revocation).
#[derive(Debug)]
pub struct IssuerOrSecurityOfficer;
impl RequiredRole for IssuerOrSecurityOfficer {
    const ROLE: ApiRole = ApiRole::Issuer;
    const ALSO: &'static [ApiRole] = &[ApiRole::SecurityOfficer];
}

/// An authenticated caller holding role `R`.
#[derive(Debug)]
pub struct Auth<R: RequiredRole> {
    /// The caller.
    pub principal: Principal,
    _role: PhantomData<R>,
}

impl<R: RequiredRole> Auth<R> {
    /// The caller as the audit log records it.
    pub fn actor(&self) -> Actor {
        self.principal.actor()
    }
}

/// The bearer value of an `Authorization` header, if well-formed.
fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl<R: RequiredRole> FromRequestParts<AppState> for Auth<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(token) = bearer(parts) else {
            state.request_counters().unauthenticated();
            return Err(ApiError::new(
                ErrorCode::Unauthorized,
                "missing, unknown or revoked API token",
            ));
        };
        let principal = match state.tokens().authenticate(token) {
            Ok(p) => p,
            Err(e) => {
                if e.code == ErrorCode::Unauthorized {
                    state.request_counters().unauthenticated();
                }
                return Err(e.into());
            }
        };
        if let Err(e) = admit::<R>(parts, state, &principal) {
            return Err(refused(parts, state, &principal, e).await);
        }
        if parts.method == axum::http::Method::GET {
            state.request_counters().read();
        }
        Ok(Auth {
            principal,
            _role: PhantomData,
        })
    }
}

/// The checks after authentication: the caller's rate limit (every authenticated request
/// counts, refused ones included), the role, and the issuer's client certificate.
fn admit<R: RequiredRole>(
    parts: &Parts,
    state: &AppState,
    principal: &Principal,
) -> Result<(), Error> {
    state.rate_limiter().check(&principal.name)?;
    if principal.role != R::ROLE && !R::ALSO.contains(&principal.role) {
        let mut roles = vec![R::ROLE.as_str()];
        roles.extend(R::ALSO.iter().map(|r| r.as_str()));
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
