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

/// Deserialises a typed artifact from a strict value, mapping serde's messages to stable
/// codes: unknown members of closed objects -> UNKNOWN_FIELD, anything else -> SCHEMA_INVALID,
/// with the member name in `field` where serde names it.
pub fn from_value<T: DeserializeOwned>(value: &Value, what: &str) -> Result<T> {
    if !value.is_object() {
        return Err(Error::new(
            ErrorCode::SchemaInvalid,
            format!("{what} must be a JSON object"),
        ));
    }
    serde_json::from_value(value.clone()).map_err(|e| {
        let msg = e.to_string();
        let quoted = msg.split('`').nth(1).map(str::to_string);
        let code = if msg.starts_with("unknown field") {
            ErrorCode::UnknownField
        } else {
            ErrorCode::SchemaInvalid
        };
        Error {
            code,
            message: format!("{what}: {msg}"),
            field: quoted
                .filter(|_| msg.starts_with("unknown field") || msg.starts_with("missing field")),
        }
    })
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
