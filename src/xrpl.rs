//! XRPL classic addresses: base58 in the XRPL alphabet of `0x00 || account-id(20) ||
//! checksum(4)`, the checksum being the first four bytes of SHA-256(SHA-256(version||id)).
//! XRPL currency codes: a 3-character standard code or 40 hex digits (160 bits).

pub mod credential_tx;

use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorCode, Result};

const ACCOUNT_VERSION: u8 = 0x00;

/// Checks that `address` is a valid XRPL classic address; `field` names it in the error.
/// Returns the 20-byte account id.
pub fn validate_classic_address(address: &str, field: &str) -> Result<[u8; 20]> {
    let bad = |why: &str| {
        Error::field(
            ErrorCode::AddressInvalid,
            field,
            format!("{field} is not a valid XRPL classic address ({why}): {address:?}"),
        )
    };
    if !address.starts_with('r') || !(25..=35).contains(&address.len()) {
        return Err(bad("must start with r and be 25-35 characters"));
    }
    let bytes = bs58::decode(address)
        .with_alphabet(bs58::Alphabet::RIPPLE)
        .into_vec()
        .map_err(|_| bad("not base58 in the XRPL alphabet"))?;
    if bytes.len() != 25 || bytes[0] != ACCOUNT_VERSION {
        return Err(bad("wrong length or version byte"));
    }
    let (payload, checksum) = bytes.split_at(21);
    if checksum != &double_sha256(payload)[..4] {
        return Err(bad("checksum mismatch"));
    }
    let mut id = [0u8; 20];
    id.copy_from_slice(&payload[1..]);
    Ok(id)
}

/// Encodes a 20-byte account id as a classic address.
pub fn encode_classic_address(account_id: &[u8; 20]) -> String {
    let mut payload = Vec::with_capacity(25);
    payload.push(ACCOUNT_VERSION);
    payload.extend_from_slice(account_id);
    let check = double_sha256(&payload);
    payload.extend_from_slice(&check[..4]);
    bs58::encode(payload)
        .with_alphabet(bs58::Alphabet::RIPPLE)
        .into_string()
}

/// Checks that `code` is an XRPL currency code as a grant names it; `field` names it in the
/// error (SCHEMA_INVALID). Accepted: a standard code of exactly 3 characters from ASCII
/// letters, digits and `?!@#$%^&*<>(){}[]|` (the ledger's alphabet; `XRP` stands for the
/// native asset, as budgetCurrency "XRP" means drops), or a non-standard code of 40 uppercase
/// hex digits whose first byte is not 0x00 (a 0x00 first byte is the binary form of a
/// standard code, which must be written as its 3 characters). Uppercase only, so each
/// currency has one spelling and comparing two members' currencies is comparing strings.
pub fn validate_currency_code(code: &str, field: &str) -> Result<()> {
    let standard = code.len() == 3
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"?!@#$%^&*<>(){}[]|".contains(&b));
    let non_standard = code.len() == 40
        && code.bytes().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F'))
        && !code.starts_with("00");
    if standard || non_standard {
        return Ok(());
    }
    Err(Error::field(
        ErrorCode::SchemaInvalid,
        field,
        format!(
            "{field} must be an XRPL currency code: 3 characters (letters, digits, \
             ?!@#$%^&*<>(){{}}[]|) or 40 uppercase hex digits not starting with 00, got {code:?}"
        ),
    ))
}

fn double_sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(Sha256::digest(data)).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_addresses() {
        // The XRPL genesis account and the "ACCOUNT_ZERO" / "ACCOUNT_ONE" special addresses.
        validate_classic_address("rHb9CJAWyB4rj91VRWn96DkukG4bwdtyTh", "a").unwrap();
        assert_eq!(
            validate_classic_address("rrrrrrrrrrrrrrrrrrrrrhoLvTp", "a").unwrap(),
            [0u8; 20]
        );
        let mut one = [0u8; 20];
        one[19] = 1;
        assert_eq!(encode_classic_address(&one), "rrrrrrrrrrrrrrrrrrrrBZbvji");
    }

    #[test]
    fn refuses_bad_addresses() {
        for bad in [
            "rHb9CJAWyB4rj91VRWn96DkukG4bwdtyTi", // checksum
            "rTestGateway11111111111111111111",   // '1' is not... valid chars but bad checksum
            "xHb9CJAWyB4rj91VRWn96DkukG4bwdtyTh",
            "r0b9CJAWyB4rj91VRWn96DkukG4bwdtyTh", // 0 is not in the alphabet
            "r",
            "",
        ] {
            let e = validate_classic_address(bad, "authorizedGateway").unwrap_err();
            assert_eq!(e.code, ErrorCode::AddressInvalid, "{bad}");
            assert_eq!(e.field.as_deref(), Some("authorizedGateway"));
        }
    }

    #[test]
    fn currency_codes() {
        let hex_code = format!("52{}", "4C".repeat(19));
        for good in [
            "XRP",
            "USD",
            "EUR",
            "usd",
            "A1B",
            "$$$",
            "?!@",
            "#%^",
            "&*<",
            ">()",
            "{}[",
            "]|X",
            hex_code.as_str(),
        ] {
            validate_currency_code(good, "budgetCurrency")
                .unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        let zero_first = format!("00{}", "55".repeat(19));
        let lower_hex = hex_code.to_lowercase();
        let short_hex = "52".repeat(19);
        let long_hex = "52".repeat(21);
        let not_hex = format!("5G{}", "52".repeat(19));
        for bad in [
            "",
            "US",
            "USDX",
            "RLUSD",
            "U D",
            "US\u{2013}",
            "\u{20ac}UR",
            "U\u{200b}S",
            "US~",
            "U+S",
            zero_first.as_str(),
            lower_hex.as_str(),
            short_hex.as_str(),
            long_hex.as_str(),
            not_hex.as_str(),
        ] {
            let e = validate_currency_code(bad, "budgetCurrency").unwrap_err();
            assert_eq!(e.code, ErrorCode::SchemaInvalid, "{bad:?}");
            assert_eq!(e.field.as_deref(), Some("budgetCurrency"), "{bad:?}");
        }
    }
}
