//! The one place where an appliance [`Error`] becomes an HTTP response: status from
//! [`http_status`], body `{code, message, field?}`. Handlers return
//! `Result<_, ApiError>`; axum's own rejections never reach the client in their plain-text form.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::{Error, ErrorCode};

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl ApiError {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError(Error::new(code, message))
    }
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

/// Renders an error as the JSON body every failure carries.
pub fn error_body(e: &Error) -> Vec<u8> {
    let body = Body {
        code: e.code.as_str(),
        message: &e.message,
        field: e.field.as_deref(),
    };
    // Serialising three strings cannot fail; fall back to a fixed body rather than panic.
    serde_json::to_vec(&body)
        .unwrap_or_else(|_| br#"{"code":"INTERNAL","message":"error"}"#.to_vec())
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(http_status(self.0.code))
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, error_body(&self.0)).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.0.code == ErrorCode::Unauthorized {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        // For the request's log line (see `api::observe`); never sent.
        resp.extensions_mut()
            .insert(crate::api::observe::ErrorCause {
                code: self.0.code.as_str(),
                message: self.0.message.clone(),
            });
        let h = resp.headers_mut();
        if self.0.code == ErrorCode::RequestTimeout {
            // The rest of a late body is never read, so the HTTP/1.1 connection cannot carry
            // another request (hyper drops this header on HTTP/2).
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// The HTTP status the service answers with for `code`.
pub fn http_status(code: ErrorCode) -> u16 {
    use ErrorCode::*;
    match code {
        Unauthorized => 401,
        Forbidden | ClientCertificateRequired | NotOwner | ReceiptRefused => 403,
        NotFound | KeyNotFound | RouteNotFound => 404,
        MethodNotAllowed => 405,
        RequestTimeout => 408,
        UriTooLong => 414,
        IdempotencyConflict
        | Conflict
        | KeyStateInvalid
        | TokenSecretNotReplayed
        | LastOfficer
        | ReceiptPolicyNotSet
        | ReceiptAlreadyConsumed
        | ReceiptOutOfScope
        | ReceiptNotConsumed
        | ReceiptOutcomeExists
        | LedgerAccountChanged => 409,
        PayloadTooLarge | JsonTooLarge => 413,
        UnsupportedMediaType => 415,
        RateLimited | ReceiptDecisionRate => 429,
        HeadersTooLarge => 431,
        HsmUnavailable
        | HsmTimeout
        | AuditUnavailable
        | StoreError
        | NotReady
        | AuditKeyMissing
        | KeySetUnavailable
        | KeyMaterialMissing
        | ClockBehind
        | ReceiptsNotConfigured
        | LedgerNotConfigured => 503,
        HsmError
        | HsmPinInvalid
        | HsmTokenNotFound
        | HsmMechanismUnsupported
        | HsmKeyAttributesUnsafe
        | ConfigInvalid
        | ClockJump
        | Io
        | Internal => 500,
        AuditLogInvalid | AuditTimeBackwards | CheckpointInconsistent => 500,
        _ => 400,
    }
}

/// Result type of handlers.
pub type ApiResult<T> = std::result::Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_carries_code_message_and_field() {
        let e = Error::field(ErrorCode::UnknownField, "extra", "unknown member");
        let v: serde_json::Value = serde_json::from_slice(&error_body(&e)).unwrap();
        assert_eq!(v["code"], "UNKNOWN_FIELD");
        assert_eq!(v["field"], "extra");
        let r = ApiError(Error::new(ErrorCode::IdempotencyConflict, "x")).into_response();
        assert_eq!(r.status(), StatusCode::CONFLICT);
        let r = ApiError(Error::new(ErrorCode::Unauthorized, "x")).into_response();
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
        let v: serde_json::Value =
            serde_json::from_slice(&error_body(&Error::new(ErrorCode::Internal, "m"))).unwrap();
        assert!(v.get("field").is_none());
        assert_eq!(http_status(ErrorCode::IdempotencyConflict), 409);
        assert_eq!(http_status(ErrorCode::ClockBehind), 503);
        assert_eq!(http_status(ErrorCode::KeySetUnavailable), 503);
    }
}
