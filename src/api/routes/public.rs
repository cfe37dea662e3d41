//! Public routes: liveness, readiness and key discovery.
//!
//! - `GET /.well-known/mpcp-keys.json`: exactly the spec's Key Set Document of the
//!   grant-signing keys (revoked ones listed `active:false`). It needs no signature, so it
//!   answers 200 whatever the root key, the audit log, the disk or a token is doing.
//! - `GET /.well-known/mpcp-keys.signed.json`: the same key set wrapped in a
//!   [`crate::verify::SignedKeySet`] signed by the root key (project extension); 503
//!   KEY_SET_UNAVAILABLE while no usable root key exists.
//!
//! Both are built by [`crate::keys::publication::KeyPublisher`] when the keys change, not per
//! request: a GET of a current document does no I/O. Public documents carry
//! `Cache-Control: public, max-age=…` and a strong ETag of the body, and answer
//! `If-None-Match` with 304. Errors to these unauthenticated callers carry a stable code and
//! a neutral message ([`public_error`]): no token label, object id or PKCS#11 return code.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::api::AppState;
use crate::api::error::{ApiError, ApiResult};
use crate::api::respond::json_response;
use crate::api::signing::blocking;
use crate::error::{Error, ErrorCode};
use crate::keys::publication::{KeyPublisher, PublishedDocument};

/// `GET /healthz`: the process answers, and names the MPCP spec version it implements.
pub async fn healthz() -> ApiResult<Response> {
    json_response(
        StatusCode::OK,
        &json!({"status": "ok", "mpcpVersion": crate::MPCP_SPEC_VERSION}),
    )
}

/// `GET /readyz`: 200 when the store is readable, the audit log accepts appends, every
/// probe (HSM tokens logged in) passes and every role's active key is present in its token;
/// otherwise 503 NOT_READY naming what is not ready by role and stable code only.
pub async fn readyz(State(state): State<AppState>) -> ApiResult<Response> {
    let s = state.clone();
    let checks = blocking(move || Ok(readiness_checks(&s))).await?;
    let failures: Vec<String> = checks
        .into_iter()
        .filter_map(|(what, code)| code.map(|c| format!("{what}: {c}")))
        .collect();
    if failures.is_empty() {
        json_response(StatusCode::OK, &json!({"status": "ready"}))
    } else {
        Err(ApiError::new(
            ErrorCode::NotReady,
            format!("not ready: {}", failures.join(", ")),
        ))
    }
}

/// Every readiness check `/readyz` runs, by name, with the stable code of its failure
/// (`None`: passes): the store readable, the audit log accepting appends, the disk above
/// the store's reserve, the clock not behind the log, every probe (HSM tokens logged in),
/// every role's active key. Blocking (store and HSM calls); the metrics sample it too.
pub fn readiness_checks(s: &AppState) -> Vec<(String, Option<&'static str>)> {
    let mut checks = vec![
        (
            "store".to_string(),
            s.tokens().list().err().map(|e| e.code.as_str()),
        ),
        (
            "audit log".to_string(),
            s.audit().failed().map(|e| e.code.as_str()),
        ),
        (
            "disk".to_string(),
            s.store().check_space().err().map(|e| e.code.as_str()),
        ),
        (
            "clock".to_string(),
            crate::clock::SigningGate::check_signing_time(s.audit().as_ref())
                .err()
                .map(|e| e.code.as_str()),
        ),
    ];
    for p in s.readiness() {
        checks.push((
            p.name().to_string(),
            p.check().err().map(|e| e.code.as_str()),
        ));
    }
    let failed_keys = s.registry().check_active_keys();
    for role in crate::keys::KeyRole::ALL {
        let code = failed_keys
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, e)| e.code.as_str());
        checks.push((format!("{role} key"), code));
    }
    checks
}

/// An error as an unauthenticated caller receives it: input errors (4xx) as they are, and
/// server-state failures (5xx) with their stable code and a neutral message, since their
/// detail may name token labels, object ids or PKCS#11 return codes.
pub fn public_error(e: Error) -> ApiError {
    if crate::api::error::http_status(e.code) < 500 {
        return ApiError(e);
    }
    // The caller gets a neutral message; the operator's log keeps the cause.
    tracing::error!(code = e.code.as_str(), cause = %e.message, "public route failed");
    let message = match e.code {
        ErrorCode::KeySetUnavailable => "no usable root key can sign the key set right now",
        ErrorCode::AuditUnavailable => "the audit log cannot record right now",
        ErrorCode::StoreError => "the store is unavailable",
        ErrorCode::ClockBehind => {
            "the appliance clock is behind its audit log; signing resumes when it is right"
        }
        ErrorCode::HsmUnavailable | ErrorCode::HsmTimeout => "a signing token is unavailable",
        code if code.as_str().starts_with("HSM_") => "a signing token failed",
        _ => "temporarily unavailable",
    };
    ApiError(Error::new(e.code, message))
}

/// A strong ETag of a body: the quoted hex SHA-256.
pub fn etag_of(body: &[u8]) -> String {
    format!("\"{}\"", hex::encode(Sha256::digest(body)))
}

/// Whether `If-None-Match` matches `etag` (weak comparison, as RFC 9110 asks for GET).
pub fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    let Some(v) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    v.split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

/// A cacheable public document: body, strong ETag, `Cache-Control`, 304 on a match.
pub fn cacheable(state: &AppState, headers: &HeaderMap, body: Vec<u8>) -> Response {
    let etag = etag_of(&body);
    serve(state, headers, body.into(), &etag)
}

fn serve(state: &AppState, headers: &HeaderMap, body: bytes::Bytes, etag: &str) -> Response {
    let mut resp = if not_modified(headers, etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = (StatusCode::OK, body).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, state.public_cache_control().clone());
    resp
}

fn published(state: &AppState, headers: &HeaderMap, doc: &PublishedDocument) -> Response {
    serve(state, headers, doc.body.clone(), &doc.etag)
}

/// `GET /.well-known/mpcp-keys.json`: the spec's Key Set Document, from memory.
pub async fn key_set(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    serve_key_set(
        state,
        headers,
        KeyPublisher::current_key_set,
        KeyPublisher::key_set,
    )
    .await
}

/// `GET /.well-known/mpcp-keys.signed.json`: the root-signed key set (extension).
pub async fn signed_key_set(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    serve_key_set(
        state,
        headers,
        KeyPublisher::current_signed_key_set,
        KeyPublisher::signed_key_set,
    )
    .await
}

/// `GET /.well-known/mpcp-receipt-keys.json`: the receipt-signing keys as a JWKS with
/// `active` (SEP-2828 records name theirs in `secretVersion`), from memory.
pub async fn receipt_key_set(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    serve_key_set(
        state,
        headers,
        KeyPublisher::current_receipt_key_set,
        KeyPublisher::receipt_key_set,
    )
    .await
}

/// Serves a published key set: the `current` one from memory when the registry has not
/// changed since it was built, else one `build` makes off the async runtime.
async fn serve_key_set(
    state: AppState,
    headers: HeaderMap,
    current: fn(&KeyPublisher) -> Option<Arc<PublishedDocument>>,
    build: fn(&KeyPublisher) -> crate::error::Result<Arc<PublishedDocument>>,
) -> ApiResult<Response> {
    let doc = match current(state.publisher()) {
        Some(doc) => doc,
        None => {
            let publisher = Arc::clone(state.publisher());
            blocking(move || build(&publisher))
                .await
                .map_err(public_error)?
        }
    };
    Ok(published(&state, &headers, &doc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_match_weakly() {
        let tag = etag_of(b"{}");
        let mut h = HeaderMap::new();
        assert!(!not_modified(&h, &tag));
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&format!("\"x\", W/{tag}")).unwrap(),
        );
        assert!(not_modified(&h, &tag));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        assert!(!not_modified(&h, &tag));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(not_modified(&h, &tag));
    }
}
