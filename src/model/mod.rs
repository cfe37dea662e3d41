//! Typed MPCP artifacts and their validation.
//!
//! Each artifact parses from a strict JSON value ([`crate::canonical::parse_strict`]) and
//! validates with stable error codes. Signatures always cover the artifact as received (the
//! strict value minus `signature`), never a re-serialisation, so members this implementation
//! does not interpret cannot change what was signed; open schemas still keep such members in
//! `extra` so that parse -> serialise reproduces the canonical form exactly.

mod allowlist;
mod bundle;
mod grant;
mod policy;
mod text;

pub use allowlist::DestinationAllowlist;
pub use bundle::{Geography, TrustBundle, TrustBundleIssuer};
pub use grant::{Asset, MaxSpend, PolicyGrant, VelocityLimit};
pub use policy::PolicyDocument;
pub use text::{
    ACTIVE_GRANT_PREFIX, IDENTIFIER_MAX_BYTES, IDENTIFIER_PATTERN, check_id, check_identifier,
    check_text_tree, is_refused_char,
};

use serde::de::DeserializeOwned;
use serde_json::Value;
use time::OffsetDateTime;

use crate::clock::parse_rfc3339;
use crate::error::{Error, ErrorCode, Result};

/// Deserialises a typed artifact (or a typed request) from a strict value, mapping serde's
/// errors by their kind, never by their text: an unknown member of a closed object ->
/// UNKNOWN_FIELD with that member in `field`; a missing member -> SCHEMA_INVALID with that
/// member in `field`; a member of the wrong type or value -> SCHEMA_INVALID with the member
/// (the last segment of its path) in `field`; anything else -> SCHEMA_INVALID.
pub fn from_value<T: DeserializeOwned>(value: &Value, what: &str) -> Result<T> {
    if !value.is_object() {
        return Err(Error::new(
            ErrorCode::SchemaInvalid,
            format!("{what} must be a JSON object"),
        ));
    }
    // serde_json's own error keeps only a message; serde-value's deserializer reports which
    // check failed, and serde_path_to_error where.
    let tree = serde_value::to_value(value)
        .map_err(|e| Error::new(ErrorCode::Internal, format!("{what}: {e}")))?;
    let de = serde_value::ValueDeserializer::<serde_value::DeserializerError>::new(tree);
    serde_path_to_error::deserialize(de).map_err(|e| deserialize_error(what, &e))
}

fn deserialize_error(
    what: &str,
    e: &serde_path_to_error::Error<serde_value::DeserializerError>,
) -> Error {
    use serde_value::DeserializerError as D;
    let last = e.path().iter().next_back().and_then(|s| match s {
        serde_path_to_error::Segment::Map { key } => Some(key.clone()),
        _ => None,
    });
    let message = format!("{what}: {}", e.inner());
    match e.inner() {
        D::UnknownField(name, _) => Error::field(ErrorCode::UnknownField, name.clone(), message),
        D::MissingField(name) => Error::field(ErrorCode::SchemaInvalid, *name, message),
        D::InvalidType(..) | D::InvalidValue(..) | D::InvalidLength(..) | D::DuplicateField(_) => {
            match last {
                Some(f) => Error::field(ErrorCode::SchemaInvalid, f, message),
                None => Error::new(ErrorCode::SchemaInvalid, message),
            }
        }
        D::UnknownVariant(..) | D::Custom(_) => Error::new(ErrorCode::SchemaInvalid, message),
    }
}

/// Validates `version` of an artifact: only "1.0" is implemented.
pub fn check_version(version: &str) -> Result<()> {
    if version != crate::MPCP_SPEC_VERSION {
        return Err(Error::field(
            ErrorCode::VersionUnsupported,
            "version",
            format!("version {version:?} is not supported (this appliance implements 1.0)"),
        ));
    }
    Ok(())
}

/// A monetary amount in minor units: a decimal string of digits without sign, exponent or
/// leading zeros, at most 38 digits. Returns its value.
pub fn parse_amount(value: &str, field: &str) -> Result<u128> {
    let ok = !value.is_empty()
        && value.len() <= 38
        && value.bytes().all(|b| b.is_ascii_digit())
        && (value == "0" || !value.starts_with('0'));
    if !ok {
        return Err(Error::field(
            ErrorCode::AmountInvalid,
            field,
            format!("{field} must be a string of decimal digits (minor units), got {value:?}"),
        ));
    }
    value.parse::<u128>().map_err(|_| {
        Error::field(
            ErrorCode::AmountInvalid,
            field,
            format!("{field} is out of range"),
        )
    })
}

/// An RFC 3339 timestamp member.
pub fn parse_time(value: &str, field: &str) -> Result<OffsetDateTime> {
    parse_rfc3339(value, field)
}

/// Parses `issuedAt`/`expiresAt` and requires expiry strictly after issuance.
pub fn parse_window(issued_at: &str, expires_at: &str) -> Result<(OffsetDateTime, OffsetDateTime)> {
    let issued = parse_time(issued_at, "issuedAt")?;
    let expires = parse_time(expires_at, "expiresAt")?;
    if expires <= issued {
        return Err(Error::field(
            ErrorCode::TimestampInvalid,
            "expiresAt",
            "expiresAt must be after issuedAt",
        ));
    }
    Ok((issued, expires))
}

/// Lowercase hex SHA-256 (64 characters).
pub fn check_sha256_hex(value: &str, field: &str) -> Result<()> {
    if value.len() != 64
        || !value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(Error::field(
            ErrorCode::SchemaInvalid,
            field,
            format!("{field} must be 64 lowercase hex characters"),
        ));
    }
    Ok(())
}

/// Hex of UTF-8 text (XLS-70 credential types): even length, hex digits, decodes to UTF-8.
pub fn check_credential_type(value: &str, field: &str) -> Result<()> {
    let decoded = hex::decode(value)
        .ok()
        .filter(|b| !b.is_empty() && b.len() <= 64);
    match decoded.map(String::from_utf8) {
        Some(Ok(_)) => Ok(()),
        _ => Err(Error::field(
            ErrorCode::SchemaInvalid,
            field,
            format!("{field} must be hex of a UTF-8 credential type (1-64 bytes)"),
        )),
    }
}

/// The XLS-70 credential type, as hex, that marks grant `grant_id` active on the ledger.
pub fn active_grant_credential_type(grant_id: &str) -> String {
    hex::encode_upper(format!("{ACTIVE_GRANT_PREFIX}{grant_id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts() {
        assert_eq!(parse_amount("0", "a").unwrap(), 0);
        assert_eq!(parse_amount("1500", "a").unwrap(), 1500);
        for bad in ["", "-1", "01", "1.5", "1e3", " 1", "+1", &"9".repeat(39)] {
            assert_eq!(
                parse_amount(bad, "a").unwrap_err().code,
                ErrorCode::AmountInvalid,
                "{bad}"
            );
        }
    }

    #[test]
    fn credential_types() {
        check_credential_type(&hex::encode("mpcp:approved-merchant"), "t").unwrap();
        assert!(check_credential_type("6D7", "t").is_err());
        assert!(check_credential_type("zz", "t").is_err());
        assert!(check_credential_type("ff", "t").is_err());
        assert_eq!(
            active_grant_credential_type("g1"),
            hex::encode_upper("mpcp:active-grant:g1")
        );
    }
}
