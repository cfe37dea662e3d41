//! What operators see of each request: a request id, one log line, and the HTTP metrics.
//!
//! - **Request id.** Every response carries `x-request-id`. A caller's own id is kept when
//!   it is well-formed ([`well_formed_request_id`]: 1 to 64 characters of `A-Z a-z 0-9 . _
//!   -`), so that a gateway's id follows the request; any other value is replaced by a fresh
//!   UUID, so that nothing a caller sends is written to the log unchecked. tower-http's
//!   `SetRequestIdLayer` and `PropagateRequestIdLayer` set and return it.
//! - **Span.** tower-http's `TraceLayer` opens one `request` span per request with the
//!   method, the matched route template (never the raw path, which holds ids) and the
//!   request id; whatever the handler logs carries them.
//! - **One line per request** ([`observe`]): status, latency, the authenticated caller's
//!   token *name* (never its secret) and, for an error, its stable code; a 5xx is logged at
//!   error level with its cause. No header value, body or secret is ever logged.
//! - **Metrics**: the request is counted by route template and status
//!   ([`crate::metrics::Metrics::http_request`]).

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderName;
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;

/// The request id header.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Whether a caller-supplied request id is kept: 1 to 64 characters of `A-Z a-z 0-9 . _ -`,
/// and not shaped like an API token (`mpcppa_…`), so that a client that mixes up its
/// headers does not put its secret in the log.
pub fn well_formed_request_id(value: &[u8]) -> bool {
    (1..=64).contains(&value.len())
        && !value.starts_with(crate::api::tokens::TOKEN_PREFIX.as_bytes())
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Removes a malformed `x-request-id` (or a repeated one) before the request-id layer runs,
/// so that it is replaced by a generated one.
pub async fn drop_malformed_request_id(mut request: Request) -> Request {
    let headers = request.headers_mut();
    let mut values = headers.get_all(&REQUEST_ID).iter();
    let keep = match (values.next(), values.next()) {
        (Some(v), None) => well_formed_request_id(v.as_bytes()),
        (None, _) => true,
        (Some(_), Some(_)) => false,
    };
    if !keep {
        headers.remove(&REQUEST_ID);
    }
    request
}

/// The name of the token a request was authenticated with (set on the response by
/// [`crate::api::auth::authenticate`], admitted or refused), for the request's log line.
#[derive(Debug, Clone)]
pub struct CallerName(pub String);

/// The stable code and message of an error response (set by
/// [`crate::api::error::ApiError`]), for the request's log line.
#[derive(Debug, Clone)]
pub struct ErrorCause {
    /// The stable code.
    pub code: &'static str,
    /// The message the caller was given.
    pub message: String,
}

/// The span of one request: method, route template, request id (tower-http's
/// `TraceLayer` opens it around the request).
pub fn request_span(request: &Request) -> tracing::Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str());
    let id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!("request", method = %request.method(), route, request_id = id)
}

/// The per-request layer: counts the request and writes its one log line (see the module
/// doc).
pub async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let response = next.run(request).await;
    let latency = start.elapsed();
    let status = response.status().as_u16();
    let cause = response.extensions().get::<ErrorCause>();
    if let Some(m) = state.metrics() {
        m.http_request(
            method.as_str(),
            route.as_deref().unwrap_or("unmatched"),
            status,
            latency.as_secs_f64(),
        );
        if response.headers().contains_key("idempotent-replayed") {
            m.idempotent_replay();
        }
        match cause.map(|c| c.code) {
            Some("IDEMPOTENCY_CONFLICT") => m.idempotency_conflict(),
            Some("RATE_LIMITED") => m.rate_limited(),
            _ => {}
        }
    }
    let token = response
        .extensions()
        .get::<CallerName>()
        .map_or("-", |c| c.0.as_str());
    let latency_ms = latency.as_secs_f64() * 1000.0;
    match cause {
        Some(cause) if status >= 500 => tracing::error!(
            status,
            latency_ms,
            token,
            code = cause.code,
            cause = %cause.message,
            "request failed"
        ),
        Some(cause) => tracing::info!(status, latency_ms, token, code = cause.code, "request"),
        None => tracing::info!(status, latency_ms, token, "request"),
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_only_when_well_formed() {
        for ok in ["a", "req-1.2_3", &"x".repeat(64)] {
            assert!(well_formed_request_id(ok.as_bytes()), "{ok}");
        }
        let token = "mpcppa_2c86cd7e4d42df96_VLshFRV30Rc10w3n1VEXCljo813dm3Yknqgs4S1MG";
        for bad in [
            "",
            &"x".repeat(65),
            "a b",
            "a\"b",
            "Bearer x",
            "é",
            "a/b",
            "a\nb",
            token,
        ] {
            assert!(!well_formed_request_id(bad.as_bytes()), "{bad:?}");
        }
    }
}
