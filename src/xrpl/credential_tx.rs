//! XLS-70 credential transactions (`CredentialCreate`, `CredentialDelete`) in XRPL's canonical
//! binary form, serialized by `xrpl-mithril-codec` (field codes from rippled's
//! `definitions.json`), and XRPL account keys.
//!
//! Guarantees: [`UnsignedTx::signing_data`] is exactly what an XRPL signer signs (the
//! `STX\0` prefix and the canonical serialization of every signing field), and
//! [`UnsignedTx::assemble`] gives the blob a ledger node accepts with its transaction id
//! (SHA-512-half of `TXN\0 || blob`). The signature itself is made elsewhere (in the HSM).

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use xrpl_mithril_codec::{serializer, signing};

use super::encode_classic_address;
use crate::error::{Error, ErrorCode, Result};

/// Seconds between the Unix epoch and the XRPL ("Ripple") epoch, 2000-01-01T00:00:00Z.
pub const RIPPLE_EPOCH_OFFSET: i64 = 946_684_800;

/// The longest CredentialType the ledger accepts, in bytes.
pub const MAX_CREDENTIAL_TYPE: usize = 64;

/// An XRPL account key's public half in the ledger's encoding (`SigningPubKey`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountKey {
    /// secp256k1, SEC1 compressed (33 bytes).
    Secp256k1([u8; 33]),
    /// Ed25519 (32 bytes; the ledger writes it behind an `0xED` byte).
    Ed25519([u8; 32]),
}

impl AccountKey {
    /// The 33 bytes of `SigningPubKey`.
    pub fn to_bytes(&self) -> [u8; 33] {
        match self {
            AccountKey::Secp256k1(b) => *b,
            AccountKey::Ed25519(b) => {
                let mut out = [0u8; 33];
                out[0] = 0xED;
                out[1..].copy_from_slice(b);
                out
            }
        }
    }

    /// `SigningPubKey` as the ledger's JSON writes it (uppercase hex).
    pub fn hex(&self) -> String {
        hex::encode_upper(self.to_bytes())
    }

    /// The 20-byte account id: RIPEMD-160 of SHA-256 of the public key.
    pub fn account_id(&self) -> [u8; 20] {
        let sha = Sha256::digest(self.to_bytes());
        ripemd::Ripemd160::digest(sha).into()
    }

    /// The account's classic address (`r…`).
    pub fn address(&self) -> String {
        encode_classic_address(&self.account_id())
    }
}

/// Which credential transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TxKind {
    /// XLS-70 `CredentialCreate`: the issuer (Account) creates a credential for Subject.
    CredentialCreate,
    /// XLS-70 `CredentialDelete`: the issuer (Account) deletes it.
    CredentialDelete,
}

impl TxKind {
    /// The `TransactionType` name.
    pub fn as_str(self) -> &'static str {
        match self {
            TxKind::CredentialCreate => "CredentialCreate",
            TxKind::CredentialDelete => "CredentialDelete",
        }
    }
}

/// A credential transaction before its signature. `Account` is the issuer: this appliance
/// only creates and deletes credentials it issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsignedTx {
    /// Create or delete.
    pub kind: TxKind,
    /// The issuing account's key (`Account` is derived from it).
    pub key: AccountKey,
    /// The credential's subject (classic address).
    pub subject: String,
    /// CredentialType bytes (1..=64).
    pub credential_type: Vec<u8>,
    /// Expiration in ledger time (seconds since the Ripple epoch); `CredentialCreate` only.
    pub expiration: Option<u32>,
    /// The account sequence this transaction consumes.
    pub sequence: u32,
    /// Fee in drops.
    pub fee_drops: u64,
    /// Last ledger in which it may be applied, when known from the ledger.
    pub last_ledger_sequence: Option<u32>,
}

/// A signed transaction: its blob and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTx {
    /// The canonical binary serialization, uppercase hex (what `submit` takes).
    pub blob: String,
    /// Transaction id (hash): uppercase hex of SHA-512-half(`TXN\0` || blob).
    pub hash: String,
}

fn codec(e: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorCode::Internal,
        format!("XRPL transaction serialization failed: {e}"),
    )
}

/// The CredentialType bytes `prefix || id`, refused (CREDENTIAL_TYPE_TOO_LONG, at `field`)
/// beyond the ledger's 64 bytes.
pub fn credential_type(prefix: &str, id: &str, field: &str) -> Result<Vec<u8>> {
    let bytes = format!("{prefix}{id}").into_bytes();
    if bytes.len() > MAX_CREDENTIAL_TYPE {
        return Err(Error::field(
            ErrorCode::CredentialTypeTooLong,
            field,
            format!(
                "{field} makes the credential type {prefix:?}+{field} {} bytes long; the XRPL \
                 allows at most {MAX_CREDENTIAL_TYPE} (so {field} may have at most {} bytes)",
                bytes.len(),
                MAX_CREDENTIAL_TYPE - prefix.len()
            ),
        ));
    }
    Ok(bytes)
}

/// Ledger time of a Unix time, refused (TIMESTAMP_INVALID) outside the ledger's 32 bits.
pub fn ledger_time(unix_seconds: i64, field: &str) -> Result<u32> {
    u32::try_from(unix_seconds - RIPPLE_EPOCH_OFFSET).map_err(|_| {
        Error::field(
            ErrorCode::TimestampInvalid,
            field,
            format!("{field} is outside the XRPL's time range (2000-01-01 to 2136-02-07)"),
        )
    })
}

impl UnsignedTx {
    /// The transaction in the ledger's JSON form, without `TxnSignature`.
    pub fn json(&self) -> Map<String, Value> {
        let account = self.key.address();
        let mut tx = json!({
            "TransactionType": self.kind.as_str(),
            "Account": account,
            "Subject": self.subject,
            "CredentialType": hex::encode_upper(&self.credential_type),
            "Sequence": self.sequence,
            "Fee": self.fee_drops.to_string(),
            "SigningPubKey": self.key.hex(),
        });
        if let Some(e) = self.expiration {
            tx["Expiration"] = json!(e);
        }
        if let Some(l) = self.last_ledger_sequence {
            tx["LastLedgerSequence"] = json!(l);
        }
        match tx {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    /// What the account key signs: `STX\0` followed by the canonical serialization of the
    /// signing fields.
    pub fn signing_data(&self) -> Result<Vec<u8>> {
        signing::signing_data(&self.json()).map_err(codec)
    }

    /// The signed blob and its id, given the signature over [`UnsignedTx::signing_data`]
    /// (low-S DER for secp256k1, 64 bytes for Ed25519).
    pub fn assemble(&self, signature: &[u8]) -> Result<SignedTx> {
        let mut tx = self.json();
        tx.insert(
            "TxnSignature".into(),
            Value::String(hex::encode_upper(signature)),
        );
        let mut blob = Vec::with_capacity(256);
        serializer::serialize_json_object(&tx, &mut blob, false).map_err(codec)?;
        Ok(SignedTx {
            blob: hex::encode_upper(&blob),
            hash: signing::transaction_id_hex(&tx).map_err(codec)?,
        })
    }
}

/// Decodes a blob back into the ledger's JSON form (what `ledger export` and tests read).
pub fn decode_blob(blob_hex: &str) -> Result<Map<String, Value>> {
    let bytes = hex::decode(blob_hex).map_err(codec)?;
    xrpl_mithril_codec::deserializer::deserialize_object(&bytes).map_err(codec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tx(kind: TxKind) -> UnsignedTx {
        UnsignedTx {
            kind,
            key: AccountKey::Ed25519([7u8; 32]),
            subject: "rHb9CJAWyB4rj91VRWn96DkukG4bwdtyTh".into(),
            credential_type: credential_type("mpcp:active-grant:", "g-1", "grantId").unwrap(),
            expiration: Some(ledger_time(1_900_000_000, "expiresAt").unwrap()),
            sequence: 5,
            fee_drops: 12,
            last_ledger_sequence: None,
        }
    }

    #[test]
    fn blob_round_trips_and_signing_data_has_the_prefix() {
        let t = tx(TxKind::CredentialCreate);
        let data = t.signing_data().unwrap();
        assert_eq!(&data[..4], b"STX\0");
        let signed = t.assemble(&[0xAB; 64]).unwrap();
        let back = decode_blob(&signed.blob).unwrap();
        assert_eq!(back["TransactionType"], "CredentialCreate");
        assert_eq!(back["Account"], t.key.address());
        assert_eq!(back["Subject"], t.subject);
        assert_eq!(
            back["CredentialType"],
            hex::encode_upper("mpcp:active-grant:g-1")
        );
        assert_eq!(back["Expiration"], 1_900_000_000 - RIPPLE_EPOCH_OFFSET);
        assert_eq!(back["Sequence"], 5);
        assert_eq!(back["Fee"], "12");
        assert_eq!(signed.hash.len(), 64);
        // The signing data is the blob without the signature field, behind STX\0.
        assert!(data.len() < signed.blob.len() / 2 + 4);
    }

    #[test]
    fn account_of_a_known_key() {
        // ripple-keypairs' documented Ed25519 example (seed sEdSKaCy2JT7JaM7v95H9SxkhP9wS2r):
        // public key ED01FA53FA5A7E77798F882ECE20B1ABC00BB358A9E55A202D0D0676BD0CE37A63.
        let pk = hex::decode("01FA53FA5A7E77798F882ECE20B1ABC00BB358A9E55A202D0D0676BD0CE37A63")
            .unwrap();
        let key = AccountKey::Ed25519(pk.try_into().unwrap());
        assert_eq!(key.address(), "rLUEXYuLiQptky37CqLcm9USQpPiz5rkpD");
    }

    #[test]
    fn credential_types_are_bounded() {
        let ok = "g".repeat(MAX_CREDENTIAL_TYPE - "mpcp:active-grant:".len());
        credential_type("mpcp:active-grant:", &ok, "grantId").unwrap();
        let e = credential_type("mpcp:active-grant:", &format!("{ok}x"), "grantId").unwrap_err();
        assert_eq!(e.code, ErrorCode::CredentialTypeTooLong);
        assert_eq!(e.field.as_deref(), Some("grantId"));
        assert!(ledger_time(RIPPLE_EPOCH_OFFSET - 1, "e").is_err());
    }
}
