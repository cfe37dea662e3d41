//! Responses every route builds: canonical JSON bodies, and the replay of a stored response.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::error::ApiResult;
use super::idempotency::StoredResponse;
use crate::canonical::canonical_bytes;

/// A JSON response with the canonical bytes of `value`.
pub fn json_response(status: StatusCode, value: &Value) -> ApiResult<Response> {
    Ok(bytes_response(status, canonical_bytes(value)?))
}

/// A JSON response with `bytes`, which the caller guarantees are canonical JSON.
pub fn bytes_response(status: StatusCode, bytes: Vec<u8>) -> Response {
    let mut r = (status, bytes).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// The stored response of an idempotency record, marked `Idempotent-Replayed: true`.
pub fn replayed(rec: StoredResponse) -> Response {
    let status = StatusCode::from_u16(rec.status).unwrap_or(StatusCode::OK);
    let headers = rec.headers;
    let mut r = crate::api::issuance::release::with_headers(
        bytes_response(status, rec.body.into_bytes()),
        &headers,
    );
    r.headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    r
}
