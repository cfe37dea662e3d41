//! The roles the appliance holds keys for: three every deployment has, and the optional
//! receipt-signing and xrpl-account roles; none for gateway or settlement keys.

use serde::{Deserialize, Serialize};

use crate::crypto::Alg;
use crate::error::{Error, ErrorCode, Result};

/// What a key signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyRole {
    /// PolicyGrants and destination allowlists.
    GrantSigning,
    /// Trust bundles and signed key sets.
    Root,
    /// Audit-log checkpoints.
    Audit,
    /// Scoped authorization receipts (SEP-2828 decision and outcome records, ES256).
    /// Optional: a deployment without it issues no receipts.
    ReceiptSigning,
    /// The PA's XRPL account: XLS-70 credential transactions (secp256k1 by default, as the
    /// XRPL's own default; Ed25519 allowed). Optional: a deployment without it signs no
    /// ledger transactions.
    XrplAccount,
}

impl KeyRole {
    /// Every role.
    pub const ALL: [KeyRole; 5] = [
        KeyRole::GrantSigning,
        KeyRole::Root,
        KeyRole::Audit,
        KeyRole::ReceiptSigning,
        KeyRole::XrplAccount,
    ];

    /// The roles every deployment binds; the others may be left out of the configuration.
    pub const REQUIRED: [KeyRole; 3] = [KeyRole::GrantSigning, KeyRole::Root, KeyRole::Audit];

    /// The algorithms the role's keys may ever have, whatever a configuration says:
    /// checkpoints are Ed25519 signed notes, receipts ES256 (SEP-2828), and the XRPL signs
    /// with secp256k1 or Ed25519 only.
    pub fn possible_algs(self) -> &'static [Alg] {
        match self {
            KeyRole::Audit => &[Alg::EdDSA],
            KeyRole::ReceiptSigning => &[Alg::ES256],
            KeyRole::XrplAccount => &[Alg::ES256K, Alg::EdDSA],
            _ => &Alg::ALL,
        }
    }

    /// Whether a deployment may leave the role unconfigured.
    pub fn is_optional(self) -> bool {
        !KeyRole::REQUIRED.contains(&self)
    }

    /// The algorithm of the role's first key when none is asked for: Ed25519, except
    /// receipts, which SEP-2828 allows to be ES256 (P-256) and nothing else this appliance
    /// signs with, and the XRPL account, secp256k1 as the XRPL's default.
    pub fn default_alg(self) -> Alg {
        match self {
            KeyRole::ReceiptSigning => Alg::ES256,
            KeyRole::XrplAccount => Alg::ES256K,
            _ => Alg::EdDSA,
        }
    }

    /// Config / CLI name.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyRole::GrantSigning => "grant-signing",
            KeyRole::Root => "root",
            KeyRole::Audit => "audit",
            KeyRole::ReceiptSigning => "receipt-signing",
            KeyRole::XrplAccount => "xrpl-account",
        }
    }

    /// Parses a role name. Gateway or settlement roles are refused by name: the appliance
    /// never holds those keys.
    pub fn parse(s: &str) -> Result<KeyRole> {
        if let Some(r) = KeyRole::ALL.into_iter().find(|r| r.as_str() == s) {
            return Ok(r);
        }
        let lowered = s.to_ascii_lowercase();
        let msg = if lowered.contains("gateway") || lowered.contains("settlement") {
            format!(
                "role {s:?} refused: the Policy Authority never holds gateway or settlement keys"
            )
        } else {
            format!(
                "unknown key role {s:?} (expected grant-signing, root, audit, receipt-signing or xrpl-account)"
            )
        };
        Err(Error::new(ErrorCode::ConfigInvalid, msg))
    }
}

impl std::fmt::Display for KeyRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_roles_are_refused() {
        assert_eq!(KeyRole::parse("root").unwrap(), KeyRole::Root);
        let e = KeyRole::parse("gateway-settlement").unwrap_err();
        assert!(e.message.contains("never holds"));
        assert_eq!(
            KeyRole::parse("nope").unwrap_err().code,
            ErrorCode::ConfigInvalid
        );
    }
}
