//! Request extractors whose rejections are JSON errors: path and query parameters, and what
//! an idempotent POST needs of its request besides the body.

use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::ApiError;
use crate::error::{Error, ErrorCode, Result};

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
    /// The method, digested with the body.
    pub method: Method,
    /// The path, digested with the body.
    pub path: String,
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

impl IdempotentRequest {
    /// The `Idempotency-Key` header, if present; SCHEMA_INVALID when it is not visible ASCII.
    pub fn idempotency_key(&self) -> Result<Option<&str>> {
        idempotency_key(&self.headers)
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
