//! Request extractors whose rejections are JSON errors: path and query parameters, and what
//! an idempotent POST needs of its request besides the body.

use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::ApiError;
use crate::error::{Error, ErrorCode, Result};

/// Declares `$name<T>`, the axum extractor `$inner<T>` whose rejection is a JSON error:
/// SCHEMA_INVALID, "bad `$what`: " and axum's reason.
macro_rules! schema_checked {
    ($(#[$doc:meta])* $name:ident wraps $inner:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name<T>(pub T);

        impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for $name<T> {
            type Rejection = ApiError;

            async fn from_request_parts(
                parts: &mut Parts,
                state: &AppState,
            ) -> Result<Self, ApiError> {
                $inner::<T>::from_request_parts(parts, state)
                    .await
                    .map(|$inner(v)| $name(v))
                    .map_err(|e| {
                        ApiError::new(ErrorCode::SchemaInvalid, format!(concat!("bad ", $what, ": {}"), e))
                    })
            }
        }
    };
}

schema_checked!(
    /// `axum::extract::Path` whose rejection is a JSON error.
    ApiPath wraps Path, "path"
);
schema_checked!(
    /// `axum::extract::Query` whose rejection is a JSON error (unknown parameters are
    /// refused by the target type's `deny_unknown_fields`).
    ApiQuery wraps Query, "query"
);

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
