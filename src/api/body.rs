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

/// The body as the typed request `T` (see [`crate::model::from_value`]): closed request
/// types refuse unknown members as UNKNOWN_FIELD, a missing or mistyped member is
/// SCHEMA_INVALID at that member, a body that is not an object SCHEMA_INVALID.
pub fn parse_request<T: serde::de::DeserializeOwned>(body: &Value) -> Result<T> {
    crate::model::from_value(body, "request body")
}

/// `value`, refused (SCHEMA_INVALID at `field`) when empty or only white space.
pub fn non_empty<'a>(value: &'a str, field: &str) -> Result<&'a str> {
    if value.trim().is_empty() {
        return Err(Error::field(
            ErrorCode::SchemaInvalid,
            field,
            format!("{field} must not be empty"),
        ));
    }
    Ok(value)
}

/// For `#[serde(default, deserialize_with = "present")]` on an optional member: absent reads
/// as `None`, while a `null` is parsed as a `T` (and refused unless `T` takes it), never read
/// as absent.
pub fn present<'de, D, T>(d: D) -> std::result::Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// The body of a request that takes no parameters: `{}` (or no body where the route allows
/// it); any member is refused as UNKNOWN_FIELD rather than ignored.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParameters {}

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

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Reasoned {
        reason: String,
        #[serde(default, deserialize_with = "present")]
        wait_days: Option<u64>,
    }

    #[test]
    fn typed_requests_name_the_member_by_kind() {
        let field = |body: &[u8]| {
            let e = parse_request::<Reasoned>(&parse_strict(body).unwrap()).unwrap_err();
            (e.code, e.field)
        };
        let at = |f: &str| Some(f.to_string());
        assert_eq!(
            field(br#"{"reason":"x","extra":1}"#),
            (ErrorCode::UnknownField, at("extra"))
        );
        assert_eq!(field(br#"{}"#), (ErrorCode::SchemaInvalid, at("reason")));
        assert_eq!(
            field(br#"{"reason":5}"#),
            (ErrorCode::SchemaInvalid, at("reason"))
        );
        // `null` is not read as absent.
        assert_eq!(
            field(br#"{"reason":"x","waitDays":null}"#),
            (ErrorCode::SchemaInvalid, at("waitDays"))
        );
        assert_eq!(
            field(br#"{"reason":"x","waitDays":-1}"#),
            (ErrorCode::SchemaInvalid, at("waitDays"))
        );
        assert_eq!(field(b"[1]"), (ErrorCode::SchemaInvalid, None));
        let ok: Reasoned = parse_request(&parse_strict(br#"{"reason":"x"}"#).unwrap()).unwrap();
        assert_eq!((ok.reason.as_str(), ok.wait_days), ("x", None));
        assert_eq!(
            non_empty(" ", "reason").unwrap_err().field.as_deref(),
            Some("reason")
        );
        let e = parse_request::<NoParameters>(&parse_strict(br#"{"a":1}"#).unwrap()).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownField);
    }
}
