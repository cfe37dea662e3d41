//! The note-signing seam: a key that signs C2SP signed notes (raw-message Ed25519), and the
//! rule for note key names.

use crate::error::{Error, ErrorCode, Result};

/// A key that signs raw messages with Ed25519 for notes (the log's checkpoint key, or a
/// witness key). The appliance's implementation is the audit-role HSM key (PKCS#11
/// `CKM_EDDSA` without parameters over the message bytes); blocking.
pub trait NoteSigner: Send + Sync {
    /// The key name in signature lines (the log origin, for the log's own key).
    fn key_name(&self) -> &str;
    /// The 32-byte Ed25519 public key.
    fn public_key(&self) -> [u8; 32];
    /// Pure Ed25519 (RFC 8032) over `message`, returning the 64-byte signature.
    fn sign(&self, message: &[u8]) -> Result<[u8; 64]>;
}

/// Key names are non-empty and contain no Unicode whitespace and no `+`.
pub fn check_key_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c.is_control())
    {
        return Err(Error::new(
            ErrorCode::ConfigInvalid,
            format!("invalid note key name {name:?}: non-empty, no spaces, no '+'"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_are_non_empty_without_spaces_or_plus() {
        check_key_name("pa.example/audit").unwrap();
        for bad in ["", "a b", "a+b", "a\tb", "a\u{2003}b"] {
            assert_eq!(
                check_key_name(bad).unwrap_err().code,
                ErrorCode::ConfigInvalid,
                "{bad:?}"
            );
        }
    }
}
