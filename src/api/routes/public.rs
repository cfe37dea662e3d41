//! Public routes: liveness, readiness and the signed key set at
//! `/.well-known/mpcp-keys.json`.
//!
//! The key set is the registry's grant-signing key set (revoked ones listed with
//! `active:false`) wrapped in a [`crate::verify::SignedKeySet`] signed by the root key. It is signed again only when the
//! published keys change or half its lifetime has passed, so a GET costs no HSM operation;
//! each signing is recorded (`key_set_signed`) before the document is served. Public
//! documents carry `Cache-Control: public, max-age=…` and a strong ETag of the body, and
//! answer `If-None-Match` with 304.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::json_response;
use crate::api::AppState;
use crate::api::error::{ApiError, ApiResult};
use crate::api::signing::blocking;
use crate::canonical::canonical_bytes;
use crate::error::{ErrorCode, Result};
use crate::events::Actor;
use crate::keys::keyset::{build_key_set, key_set_value, sign_key_set};

/// `GET /healthz`: the process answers.
pub async fn healthz() -> ApiResult<Response> {
    json_response(StatusCode::OK, &json!({"status": "ok"}))
}

/// `GET /readyz`: 200 when the store is readable, the audit log accepts appends and every
/// probe (HSM tokens logged in, active keys) passes; otherwise 503 NOT_READY naming what is not.
pub async fn readyz(State(state): State<AppState>) -> ApiResult<Response> {
    let s = state.clone();
    let failures = blocking(move || {
        let mut failures = Vec::new();
        if let Err(e) = s.tokens().list() {
            failures.push(format!("store: {}", e.code));
        }
        if let Some(e) = s.audit().failed() {
            failures.push(format!("audit log: {}", e.code));
        }
        for p in s.readiness() {
            if let Err(e) = p.check() {
                failures.push(format!("{}: {}", p.name(), e.code));
            }
        }
        Ok(failures)
    })
    .await?;
    if failures.is_empty() {
        json_response(StatusCode::OK, &json!({"status": "ready"}))
    } else {
        Err(ApiError::new(
            ErrorCode::NotReady,
            format!("not ready: {}", failures.join(", ")),
        ))
    }
}

/// The last signed key set and what it covers.
#[derive(Debug, Clone)]
pub struct CachedKeySet {
    keys_digest: [u8; 32],
    refresh_after: OffsetDateTime,
    body: Vec<u8>,
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
    let cache = format!(
        "public, max-age={}",
        state.config().public_max_age.as_secs()
    );
    let mut resp = if not_modified(headers, &etag) {
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
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&cache) {
        h.insert(header::CACHE_CONTROL, v);
    }
    resp
}

/// `GET /.well-known/mpcp-keys.json`.
pub async fn key_set(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let body = current_key_set(&state).await?;
    Ok(cacheable(&state, &headers, body))
}

/// The signed key set, re-signed when the keys changed or it is past half its life. The key
/// set and its signing are the registry's ([`crate::keys::keyset`]); signing records
/// `key_set_signed` before the document is returned.
pub async fn current_key_set(state: &AppState) -> Result<Vec<u8>> {
    let keys = state.keys().clone();
    let set = blocking(move || build_key_set(keys.as_ref())).await?;
    let keys_digest: [u8; 32] = Sha256::digest(canonical_bytes(&key_set_value(&set)?)?).into();
    let now = state.clock().now();
    let mut cache = state.keyset_cache().lock().await;
    if let Some(c) = cache.as_ref()
        && c.keys_digest == keys_digest
        && now < c.refresh_after
    {
        return Ok(c.body.clone());
    }
    let (keys, sink, clock) = (
        state.keys().clone(),
        state.sink().clone(),
        state.clock().clone(),
    );
    let lifetime = state.config().keyset_lifetime;
    let signed = blocking(move || {
        sign_key_set(
            keys.as_ref(),
            sink.as_ref(),
            &Actor::system(),
            clock.as_ref(),
            lifetime,
        )
    })
    .await?;
    let body = canonical_bytes(&signed)?;
    *cache = Some(CachedKeySet {
        keys_digest,
        refresh_after: now + lifetime / 2,
        body: body.clone(),
    });
    Ok(body)
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
