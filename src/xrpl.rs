//! XRPL classic addresses: base58 in the XRPL alphabet of `0x00 || account-id(20) ||
//! checksum(4)`, the checksum being the first four bytes of SHA-256(SHA-256(version||id)).

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
}
