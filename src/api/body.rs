//! Request bodies: `application/json` only (415 otherwise), no larger than the configured bound
//! (413, checked on `Content-Length` and again while reading), complete within the body
//! deadline (408 `REQUEST_TIMEOUT`, so a slow sender cannot hold its connection), parsed by
//! [`crate::canonical::parse_strict`] so duplicate keys, floats and unsafe integers are refused
//! exactly as everywhere else in the appliance. axum's `Json` extractor is never used: it would
//! accept what the canonical form cannot represent.

use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, header};
use http_body_util::BodyExt;
use serde_json::{Map, Value};

use super::error::ApiError;
use super::{AppState, Limits};
use crate::canonical::parse_strict;
use crate::error::{Error, ErrorCode, Result};

/// A strictly parsed JSON request body.
#[derive(Debug, Clone)]
pub struct StrictJson(pub Value);

impl FromRequest<AppState> for StrictJson {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        check_content_type(req.headers())?;
        let bytes = read_limited(req, state.limits()).await?;
        Ok(StrictJson(parse_strict(&bytes)?))
    }
}

/// A JSON body that may be absent: an empty body without `Content-Type` reads as `{}`;
/// anything else is held to the same rules as [`StrictJson`].
#[derive(Debug, Clone)]
pub struct OptionalStrictJson(pub Value);

impl FromRequest<AppState> for OptionalStrictJson {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let typed = req.headers().contains_key(header::CONTENT_TYPE);
        if typed {
            check_content_type(req.headers())?;
        }
        let bytes = read_limited(req, state.limits()).await?;
        if bytes.is_empty() && !typed {
            return Ok(OptionalStrictJson(Value::Object(Map::new())));
        }
        if !typed {
            return Err(unsupported_media().into());
        }
        Ok(OptionalStrictJson(parse_strict(&bytes)?))
    }
}

fn unsupported_media() -> Error {
    Error::new(
        ErrorCode::UnsupportedMediaType,
        "request body must be application/json",
    )
}

/// Accepts `application/json`, optionally with `charset=utf-8`; nothing else.
pub fn check_content_type(headers: &HeaderMap) -> Result<()> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Err(unsupported_media());
    };
    let ct = ct.to_str().map_err(|_| unsupported_media())?;
    let mut parts = ct.split(';').map(str::trim);
    let essence = parts.next().unwrap_or_default();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(unsupported_media());
    }
    for p in parts {
        let ok = p
            .split_once('=')
            .map(|(k, v)| {
                k.trim().eq_ignore_ascii_case("charset")
                    && v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
            })
            .unwrap_or(false);
        if !ok {
            return Err(unsupported_media());
        }
    }
    Ok(())
}

fn too_large(limit: usize) -> Error {
    Error::new(
        ErrorCode::PayloadTooLarge,
        format!("request body exceeds {limit} bytes"),
    )
}

/// Reads the whole body, refusing (without reading on) once it passes the body limit or its
/// deadline.
async fn read_limited(req: Request, limits: &Limits) -> Result<Vec<u8>> {
    let limit = limits.max_body_bytes;
    if let Some(len) = req.headers().get(header::CONTENT_LENGTH) {
        let len: u64 = len
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::new(ErrorCode::JsonMalformed, "invalid Content-Length"))?;
        if len > limit as u64 {
            return Err(too_large(limit));
        }
    }
    let mut body = req.into_body();
    let read = async {
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                Error::new(
                    ErrorCode::JsonMalformed,
                    format!("request body unreadable: {e}"),
                )
            })?;
            if let Ok(data) = frame.into_data() {
                if out.len() + data.len() > limit {
                    return Err(too_large(limit));
                }
                out.extend_from_slice(&data);
            }
        }
        Ok(out)
    };
    tokio::time::timeout(limits.body_timeout, read)
        .await
        .map_err(|_| {
            Error::new(
                ErrorCode::RequestTimeout,
                format!(
                    "the request body did not arrive within {:?}",
                    limits.body_timeout
                ),
            )
        })?
}

/// The body as an object whose members are all in `allowed` (closed schema): UNKNOWN_FIELD
/// names the first stranger, SCHEMA_INVALID when the body is not an object.
pub fn closed_object<'a>(value: &'a Value, allowed: &[&str]) -> Result<&'a Map<String, Value>> {
    let obj = value.as_object().ok_or_else(|| {
        Error::new(
            ErrorCode::SchemaInvalid,
            "request body must be a JSON object",
        )
    })?;
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(Error::field(
            ErrorCode::UnknownField,
            k.clone(),
            format!("unknown member {k:?}"),
        ));
    }
    Ok(obj)
}

/// A required non-empty string member.
pub fn required_str<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<&'a str> {
    match obj.get(name) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
        Some(Value::String(_)) => Err(Error::field(
            ErrorCode::SchemaInvalid,
            name,
            format!("{name} must not be empty"),
        )),
        Some(_) => Err(Error::field(
            ErrorCode::SchemaInvalid,
            name,
            format!("{name} must be a string"),
        )),
        None => Err(Error::field(
            ErrorCode::SchemaInvalid,
            name,
            format!("{name} is required"),
        )),
    }
}

/// An optional string member (absent or null reads as `None`).
pub fn optional_str<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Error::field(
            ErrorCode::SchemaInvalid,
            name,
            format!("{name} must be a string"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ct(v: &str) -> Result<()> {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_str(v).unwrap());
        check_content_type(&h)
    }

    #[test]
    fn content_type_is_json_only() {
        assert!(ct("application/json").is_ok());
        assert!(ct("Application/JSON; charset=UTF-8").is_ok());
        for bad in [
            "text/plain",
            "application/json; charset=latin1",
            "application/jsonx",
            "",
        ] {
            assert_eq!(
                ct(bad).unwrap_err().code,
                ErrorCode::UnsupportedMediaType,
                "{bad}"
            );
        }
        assert_eq!(
            check_content_type(&HeaderMap::new()).unwrap_err().code,
            ErrorCode::UnsupportedMediaType
        );
    }

    #[test]
    fn closed_objects_name_the_stranger() {
        let v = parse_strict(br#"{"reason":"x","extra":1}"#).unwrap();
        let e = closed_object(&v, &["reason"]).unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            (ErrorCode::UnknownField, Some("extra"))
        );
        let v = parse_strict(br#"{"reason":""}"#).unwrap();
        let obj = closed_object(&v, &["reason"]).unwrap();
        assert_eq!(
            required_str(obj, "reason").unwrap_err().code,
            ErrorCode::SchemaInvalid
        );
        assert!(closed_object(&Value::from(1), &[]).is_err());
    }
}
