//! What text the appliance accepts in the artifacts it signs: one identifier rule for the ids
//! that name artifacts and tokens, and one rule for every other caller-supplied string.
//!
//! Identifiers (grantId, allowlistId, bundleId, API token names) match
//! `^[A-Za-z0-9][A-Za-z0-9._-]*$` and are 1..=[`IDENTIFIER_MAX_BYTES`] bytes: ASCII only, so
//! zero-width characters, bidi controls and lookalike letters from other scripts cannot make
//! two ids that read the same, and short enough that `mpcp:active-grant:{grantId}` fits the
//! ledger's 64-byte XLS-70 CredentialType.
//!
//! Free text (subjectId, operatorId, reasons, allowedPurposes, merchant, extension members,
//! member names ...) may be any Unicode except the characters of [`is_refused_char`]: control
//! characters, format characters (zero-width, bidi embeddings/overrides/isolates, BOM) and
//! the line/paragraph separators, which change how text displays without being visible.

use serde_json::Value;

use crate::error::{Error, ErrorCode, Result};

/// Longest identifier in bytes: the 18 bytes of `mpcp:active-grant:` plus the grantId must fit
/// the 64-byte CredentialType of XLS-70.
pub const IDENTIFIER_MAX_BYTES: usize = 64 - ACTIVE_GRANT_PREFIX.len();

/// Prefix of the credential type that marks a grant active on the ledger.
pub const ACTIVE_GRANT_PREFIX: &str = "mpcp:active-grant:";

/// The identifier rule as a regular expression, for documentation (README, OpenAPI).
pub const IDENTIFIER_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._-]*$";

/// Checks that `value` is an identifier: 1..=46 bytes, an ASCII letter or digit, then ASCII
/// letters, digits, `.`, `_` or `-`. Refusal is SCHEMA_INVALID on `field`.
pub fn check_identifier(value: &str, field: &str) -> Result<()> {
    let b = value.as_bytes();
    let ok = (1..=IDENTIFIER_MAX_BYTES).contains(&b.len())
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
    if !ok {
        return Err(Error::field(
            ErrorCode::SchemaInvalid,
            field,
            format!(
                "{field} must be 1-{IDENTIFIER_MAX_BYTES} characters of A-Z a-z 0-9 . _ -, \
                 starting with a letter or digit (at most {IDENTIFIER_MAX_BYTES} so that \
                 {ACTIVE_GRANT_PREFIX}{{id}} fits the XRPL's 64-byte CredentialType)"
            ),
        ));
    }
    Ok(())
}

/// A required bounded string that is not an identifier: 1..=256 bytes, no control character
/// (Cc). Used for issuer, issuerKeyId, category, subjectId (whose format characters
/// [`check_text_tree`] refuses with the rest of the artifact) and for the ids of lookups
/// (`GET /v1/grants/{grantId}`, revocation), which stay as lenient as before the identifier
/// rule so that a grant stored before it can still be read and revoked.
pub fn check_id(value: &str, field: &str) -> Result<()> {
    if value.is_empty() || value.len() > 256 || value.chars().any(char::is_control) {
        return Err(Error::field(
            ErrorCode::SchemaInvalid,
            field,
            format!("{field} must be 1-256 printable characters"),
        ));
    }
    Ok(())
}

/// Whether free text must not contain `c`: Unicode control characters (Cc), format
/// characters (Cf) and the line and paragraph separators (Zl, Zp).
pub fn is_refused_char(c: char) -> bool {
    // Cc is what `char::is_control` tests; std has no Cf, so its code points are listed
    // (Unicode 15.1, General_Category=Cf), with U+2028/U+2029 (Zl/Zp) and the unassigned
    // U+2065 inside the U+2060..U+206F block.
    const FORMAT: &[(u32, u32)] = &[
        (0x00AD, 0x00AD),
        (0x0600, 0x0605),
        (0x061C, 0x061C),
        (0x06DD, 0x06DD),
        (0x070F, 0x070F),
        (0x0890, 0x0891),
        (0x08E2, 0x08E2),
        (0x180E, 0x180E),
        (0x200B, 0x200F),
        (0x2028, 0x202E),
        (0x2060, 0x206F),
        (0xFEFF, 0xFEFF),
        (0xFFF9, 0xFFFB),
        (0x110BD, 0x110BD),
        (0x110CD, 0x110CD),
        (0x13430, 0x1343F),
        (0x1BCA0, 0x1BCA3),
        (0x1D173, 0x1D17A),
        (0xE0001, 0xE0001),
        (0xE0020, 0xE007F),
    ];
    let u = u32::from(c);
    c.is_control() || FORMAT.iter().any(|&(lo, hi)| (lo..=hi).contains(&u))
}

/// Checks one free-text string: SCHEMA_INVALID on `field` naming the first refused
/// character's code point.
pub fn check_text(value: &str, field: &str) -> Result<()> {
    match value.chars().find(|c| is_refused_char(*c)) {
        None => Ok(()),
        Some(c) => Err(Error::field(
            ErrorCode::SchemaInvalid,
            field,
            format!(
                "{field} contains U+{:04X}: control and format characters (zero-width, bidi, \
                 line separators) are not accepted in text",
                u32::from(c)
            ),
        )),
    }
}

/// Checks every string of `value` and every member name, at any depth, against
/// [`is_refused_char`]. Refusal is SCHEMA_INVALID whose field is the member's path in the
/// style of the other validators (`reasons[1]`, `geography.region`,
/// `issuers[0].keys[0].kid`).
pub fn check_text_tree(value: &Value) -> Result<()> {
    walk(value, &mut String::new())
}

/// Depth-first over `value`, `path` being its location (empty at the root). Artifacts are
/// depth-bounded by the strict parser, so the recursion is too.
fn walk(value: &Value, path: &mut String) -> Result<()> {
    match value {
        Value::String(s) => check_text(s, path),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(item, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        Value::Object(members) => {
            for (name, member) in members {
                let len = path.len();
                if len > 0 {
                    path.push('.');
                }
                path.push_str(name);
                check_text(name, path)?;
                walk(member, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn identifiers() {
        let max = "a".repeat(IDENTIFIER_MAX_BYTES);
        assert_eq!(IDENTIFIER_MAX_BYTES, 46);
        for good in [
            "g",
            "0",
            "g-live",
            "grant_test_vector_001",
            "grant-0123456789abcdef",
            "bundle-0123456789abcdef",
            "list.v2",
            "A-b_c.d",
            max.as_str(),
        ] {
            check_identifier(good, "grantId").unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        // What the appliance generates itself fits (random_id: `prefix-<16 hex>`).
        check_identifier("grant-ffffffffffffffff", "grantId").unwrap();
        let too_long = "a".repeat(IDENTIFIER_MAX_BYTES + 1);
        for bad in [
            "",
            too_long.as_str(),
            "-g",
            ".g",
            "_g",
            "g live",
            "g:1",
            "g/1",
            "g\n",
            "g-live\u{200b}",
            "g-\u{202e}evil",
            "g-n\u{435}w",
            "caf\u{e9}",
            "cafe\u{301}",
            "\u{ff47}",
        ] {
            let e = check_identifier(bad, "grantId").unwrap_err();
            assert_eq!(e.code, ErrorCode::SchemaInvalid, "{bad:?}");
            assert_eq!(e.field.as_deref(), Some("grantId"), "{bad:?}");
        }
        // The longest grantId makes a credential type of exactly the ledger's 64 bytes.
        assert_eq!(format!("{ACTIVE_GRANT_PREFIX}{max}").len(), 64);
    }

    #[test]
    fn refused_characters() {
        for c in [
            '\u{0}',
            '\u{7}',
            '\t',
            '\n',
            '\r',
            '\u{1b}',
            '\u{7f}',
            '\u{85}',
            '\u{9f}',
            '\u{ad}',
            '\u{61c}',
            '\u{180e}',
            '\u{200b}',
            '\u{200c}',
            '\u{200d}',
            '\u{200e}',
            '\u{200f}',
            '\u{2028}',
            '\u{2029}',
            '\u{202a}',
            '\u{202e}',
            '\u{2060}',
            '\u{2066}',
            '\u{2067}',
            '\u{2068}',
            '\u{2069}',
            '\u{feff}',
            '\u{fff9}',
            '\u{e0001}',
            '\u{e007f}',
        ] {
            assert!(is_refused_char(c), "U+{:04X}", c as u32);
        }
        for c in [
            'a',
            ' ',
            '-',
            '\u{e9}',
            '\u{301}',
            '\u{435}',
            '\u{20ac}',
            '\u{3000}',
            '\u{1f600}',
            '\u{fffd}',
        ] {
            assert!(!is_refused_char(c), "U+{:04X}", c as u32);
        }
    }

    #[test]
    fn text_tree_names_the_path() {
        let ok = json!({"a": "Zoë \u{20ac} 日本", "b": [1, true, null, {"c": "d"}], "é": "x"});
        check_text_tree(&ok).unwrap();
        let cases = [
            (json!({"operatorId": "op\u{7}"}), "operatorId"),
            (json!({"reasons": ["ok", "a\u{2066}b"]}), "reasons[1]"),
            (json!({"geography": {"region": "EU\t"}}), "geography.region"),
            (
                json!({"issuers": [{"keys": [{"kid": "k"}, {"kid": "k\u{200b}"}]}]}),
                "issuers[0].keys[1].kid",
            ),
            (json!({"x": [["ok", "\u{202e}"]]}), "x[0][1]"),
            (json!({"budgetMinor\u{200b}": "1"}), "budgetMinor\u{200b}"),
            (json!({"x": {"a\nb": 1}}), "x.a\nb"),
        ];
        for (v, path) in cases {
            let e = check_text_tree(&v).unwrap_err();
            assert_eq!(e.code, ErrorCode::SchemaInvalid, "{v}");
            assert_eq!(e.field.as_deref(), Some(path), "{v}");
        }
    }

    #[test]
    fn bounded_ids() {
        check_id("did:web:pa.example.com", "issuer").unwrap();
        check_id("vehicle 4711 (Zoë)", "subjectId").unwrap();
        // Lenient on purpose: a lookup of a grant stored before the identifier rule.
        check_id("g-live\u{200b}", "grantId").unwrap();
        for bad in ["", "a\n", "a\u{7f}", &"x".repeat(257)] {
            assert_eq!(
                check_id(bad, "subjectId").unwrap_err().code,
                ErrorCode::SchemaInvalid
            );
        }
    }
}
