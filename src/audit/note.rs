//! C2SP signed-note v1.0.0 with Ed25519 signatures (type `0x01`), C2SP tlog-cosignature v1
//! Ed25519 witness cosignatures (type `0x04`), and verifier keys (vkeys).
//!
//! A signed note is its text (ending in a newline), a blank line, and signature lines
//! `— <key name> <base64(4-byte key ID || signature)>`. Key ID =
//! `SHA-256(name || 0x0A || type || 32-byte public key)[:4]`. Type `0x01` signs the note text
//! itself (raw-message Ed25519, *not* the MPCP digest convention). Type `0x04` signs
//! `"cosignature/v1\ntime <t>\n" || text` and its signature is `key ID || u64 BE t || sig`.
//!
//! Verification follows the spec: signatures from unknown keys are ignored, a known key's
//! signature that fails rejects the note, and at least one known signature is required.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorCode, Result};
use crate::seams::debug_showing;
pub use crate::seams::note_signer::{NoteSigner, check_key_name};

/// Signature type byte of plain Ed25519 note signatures.
pub const TYPE_ED25519: u8 = 0x01;
/// Signature type byte of timestamped Ed25519 witness cosignatures (tlog-cosignature v1).
pub const TYPE_COSIGNATURE_V1: u8 = 0x04;
/// Most signature lines a note may carry (the spec requires accepting at least 16).
pub const MAX_SIGNATURES: usize = 100;
/// Largest note accepted.
pub const MAX_NOTE_BYTES: usize = 1 << 16;

/// An in-process Ed25519 note key. For tests, tools and external witnesses only: the
/// appliance's checkpoint key lives in the HSM and no service path constructs this.
pub struct SoftwareNoteSigner {
    name: String,
    key: ed25519_dalek::SigningKey,
}

debug_showing!(SoftwareNoteSigner { name });

impl SoftwareNoteSigner {
    /// A signer named `name` from a 32-byte Ed25519 seed. Refuses names that are not valid
    /// note key names.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<SoftwareNoteSigner> {
        check_key_name(name)?;
        Ok(SoftwareNoteSigner {
            name: name.to_string(),
            key: ed25519_dalek::SigningKey::from_bytes(seed),
        })
    }
}

impl NoteSigner for SoftwareNoteSigner {
    fn key_name(&self) -> &str {
        &self.name
    }
    fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }
    fn sign(&self, message: &[u8]) -> Result<[u8; 64]> {
        use ed25519_dalek::Signer as _;
        Ok(self.key.sign(message).to_bytes())
    }
}

/// `SHA-256(name || 0x0A || type || public key)[:4]`.
pub fn key_id(name: &str, sig_type: u8, public: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([0x0A, sig_type]);
    h.update(public);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

/// A verifier key: name, type and Ed25519 public key, as in the C2SP vkey encoding
/// `<name>+<hex key ID>+<base64(type || public key)>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vkey {
    /// Key name.
    pub name: String,
    /// Signature type ([`TYPE_ED25519`] or [`TYPE_COSIGNATURE_V1`]).
    pub sig_type: u8,
    /// Ed25519 public key.
    pub public: [u8; 32],
}

impl Vkey {
    /// The vkey of an Ed25519 note key.
    pub fn ed25519(name: &str, public: [u8; 32]) -> Vkey {
        Vkey {
            name: name.to_string(),
            sig_type: TYPE_ED25519,
            public,
        }
    }

    /// The vkey of an Ed25519 witness cosigning key.
    pub fn cosignature_v1(name: &str, public: [u8; 32]) -> Vkey {
        Vkey {
            name: name.to_string(),
            sig_type: TYPE_COSIGNATURE_V1,
            public,
        }
    }

    /// The 4-byte key ID.
    pub fn key_id(&self) -> [u8; 4] {
        key_id(&self.name, self.sig_type, &self.public)
    }

    /// Parses `name+hexid+base64`; the ID must match the key, the type must be known and the
    /// public key a valid Ed25519 point.
    pub fn parse(s: &str) -> Result<Vkey> {
        let bad =
            |why: &str| Error::new(ErrorCode::KeyFormatInvalid, format!("invalid vkey: {why}"));
        let s = s.trim();
        let (name, rest) = s.split_once('+').ok_or_else(|| bad("missing '+'"))?;
        let (id_hex, b64) = rest
            .split_once('+')
            .ok_or_else(|| bad("missing second '+'"))?;
        check_key_name(name).map_err(|_| bad("invalid key name"))?;
        if id_hex.len() != 8
            || !id_hex
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(bad("key ID is not 8 lowercase hex digits"));
        }
        let raw = STANDARD.decode(b64).map_err(|_| bad("key is not base64"))?;
        if raw.len() != 33 {
            return Err(bad("key is not a type byte and 32 bytes"));
        }
        let sig_type = raw[0];
        if sig_type != TYPE_ED25519 && sig_type != TYPE_COSIGNATURE_V1 {
            return Err(bad("unsupported signature type"));
        }
        let public: [u8; 32] = raw[1..].try_into().map_err(|_| bad("key length"))?;
        VerifyingKey::from_bytes(&public).map_err(|_| bad("not an Ed25519 public key"))?;
        let v = Vkey {
            name: name.to_string(),
            sig_type,
            public,
        };
        if hex::encode(v.key_id()) != id_hex {
            return Err(bad("key ID does not match the key"));
        }
        Ok(v)
    }
}

impl std::fmt::Display for Vkey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut raw = Vec::with_capacity(33);
        raw.push(self.sig_type);
        raw.extend_from_slice(&self.public);
        write!(
            f,
            "{}+{}+{}",
            self.name,
            hex::encode(self.key_id()),
            STANDARD.encode(raw)
        )
    }
}

/// One signature line of a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    /// Key name.
    pub name: String,
    /// Key ID (first four bytes of the decoded signature).
    pub key_id: [u8; 4],
    /// The signature bytes after the key ID.
    pub sig: Vec<u8>,
}

impl NoteSignature {
    /// The line, `— name base64(id || sig)\n`.
    pub fn line(&self) -> String {
        let mut raw = self.key_id.to_vec();
        raw.extend_from_slice(&self.sig);
        format!("\u{2014} {} {}\n", self.name, STANDARD.encode(raw))
    }
}

/// A parsed signed note: text and signatures (not yet verified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The signed text, ending in a newline.
    pub text: String,
    /// The signature lines in order.
    pub signatures: Vec<NoteSignature>,
}

fn malformed(why: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorCode::CheckpointInvalid,
        format!("malformed signed note: {why}"),
    )
}

impl Note {
    /// Parses a signed note, enforcing the format rules (UTF-8, no control characters other
    /// than newline, text ending in newline, blank separator line, well-formed signature
    /// lines, at most [`MAX_SIGNATURES`]).
    pub fn parse(note: &str) -> Result<Note> {
        if note.len() > MAX_NOTE_BYTES {
            return Err(malformed("too large"));
        }
        if note.chars().any(|c| (c as u32) < 0x20 && c != '\n') {
            return Err(malformed("control character"));
        }
        // The text is separated from the signatures by the last blank line.
        let split = note
            .rfind("\n\n")
            .ok_or_else(|| malformed("no blank line"))?;
        let text = &note[..split + 1];
        let sigs = &note[split + 2..];
        if !sigs.ends_with('\n') {
            return Err(malformed("does not end in a newline"));
        }
        let mut signatures = Vec::new();
        for line in sigs[..sigs.len() - 1].split('\n') {
            if signatures.len() == MAX_SIGNATURES {
                return Err(malformed("too many signatures"));
            }
            let rest = line
                .strip_prefix("\u{2014} ")
                .ok_or_else(|| malformed("signature line does not start with an em dash"))?;
            let (name, b64) = rest
                .split_once(' ')
                .ok_or_else(|| malformed("signature line has no signature"))?;
            check_key_name(name).map_err(|_| malformed("invalid key name"))?;
            let raw = STANDARD
                .decode(b64)
                .map_err(|_| malformed("signature is not base64"))?;
            if raw.len() < 5 {
                return Err(malformed("signature too short"));
            }
            signatures.push(NoteSignature {
                name: name.to_string(),
                key_id: [raw[0], raw[1], raw[2], raw[3]],
                sig: raw[4..].to_vec(),
            });
        }
        if signatures.is_empty() {
            return Err(malformed("no signatures"));
        }
        Ok(Note {
            text: text.to_string(),
            signatures,
        })
    }

    /// The note as text.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(self.text.len() + 128);
        out.push_str(&self.text);
        out.push('\n');
        for s in &self.signatures {
            out.push_str(&s.line());
        }
        out
    }

    /// Verifies the note against `known` keys (see the module rules) and returns the keys
    /// whose signatures verified, in `known` order. Cosignature timestamps are returned in
    /// [`VerifiedSignature::timestamp`].
    pub fn verify(&self, known: &[Vkey]) -> Result<Vec<VerifiedSignature>> {
        let mut verified = Vec::new();
        for s in &self.signatures {
            let Some(key) = known
                .iter()
                .find(|k| k.name == s.name && k.key_id() == s.key_id)
            else {
                continue; // unknown key: ignored, as the spec requires
            };
            let ts = verify_one(&self.text, key, &s.sig).map_err(|e| {
                Error::new(
                    ErrorCode::CheckpointInvalid,
                    format!("signature by {} does not verify: {}", key.name, e.message),
                )
            })?;
            verified.push(VerifiedSignature {
                key: key.clone(),
                timestamp: ts,
            });
        }
        if verified.is_empty() {
            return Err(Error::new(
                ErrorCode::CheckpointInvalid,
                "note carries no signature from a trusted key",
            ));
        }
        Ok(verified)
    }
}

/// A signature that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSignature {
    /// The key that made it.
    pub key: Vkey,
    /// For a cosignature, its timestamp (POSIX seconds).
    pub timestamp: Option<u64>,
}

fn verify_one(text: &str, key: &Vkey, sig: &[u8]) -> Result<Option<u64>> {
    let bad = |m: &str| Error::new(ErrorCode::SignatureInvalid, m.to_string());
    let vk = VerifyingKey::from_bytes(&key.public).map_err(|_| bad("bad public key"))?;
    match key.sig_type {
        TYPE_ED25519 => {
            let sig: [u8; 64] = sig
                .try_into()
                .map_err(|_| bad("signature is not 64 bytes"))?;
            vk.verify(text.as_bytes(), &Signature::from_bytes(&sig))
                .map_err(|_| bad("Ed25519 signature invalid"))?;
            Ok(None)
        }
        TYPE_COSIGNATURE_V1 => {
            if sig.len() != 72 {
                return Err(bad("cosignature is not 8 + 64 bytes"));
            }
            let ts = u64::from_be_bytes(sig[..8].try_into().map_err(|_| bad("timestamp"))?);
            if ts > i64::MAX as u64 {
                return Err(bad("cosignature timestamp out of range"));
            }
            let s: [u8; 64] = sig[8..].try_into().map_err(|_| bad("signature length"))?;
            vk.verify(&cosignature_message(text, ts), &Signature::from_bytes(&s))
                .map_err(|_| bad("cosignature invalid"))?;
            Ok(Some(ts))
        }
        _ => Err(bad("unsupported signature type")),
    }
}

/// The message a tlog-cosignature v1 signs.
pub fn cosignature_message(text: &str, timestamp: u64) -> Vec<u8> {
    format!("cosignature/v1\ntime {timestamp}\n{text}").into_bytes()
}

/// Checks that `text` may be signed as a note: UTF-8 (given), ends in a newline, no control
/// characters other than newline, no blank line at the end.
pub fn check_note_text(text: &str) -> Result<()> {
    if !text.ends_with('\n') || text.ends_with("\n\n") || text == "\n" {
        return Err(malformed("note text must end in exactly one newline"));
    }
    if text.chars().any(|c| (c as u32) < 0x20 && c != '\n') {
        return Err(malformed("control character in note text"));
    }
    Ok(())
}

/// Signs `text` with `signer` as a plain Ed25519 note signature and returns the line.
pub fn sign_text(text: &str, signer: &dyn NoteSigner) -> Result<NoteSignature> {
    check_note_text(text)?;
    let public = signer.public_key();
    let sig = signer.sign(text.as_bytes())?;
    // A faulty signer must not produce a checkpoint that nobody can verify.
    let vk = Vkey::ed25519(signer.key_name(), public);
    verify_one(text, &vk, &sig).map_err(|_| {
        Error::new(
            ErrorCode::HsmError,
            "note signer returned a signature that does not verify",
        )
    })?;
    Ok(NoteSignature {
        name: signer.key_name().to_string(),
        key_id: vk.key_id(),
        sig: sig.to_vec(),
    })
}

/// A witness's tlog-cosignature v1 over `text` at `timestamp` (POSIX seconds).
pub fn cosign_text(text: &str, signer: &dyn NoteSigner, timestamp: u64) -> Result<NoteSignature> {
    check_note_text(text)?;
    if timestamp > i64::MAX as u64 {
        return Err(Error::new(
            ErrorCode::TimestampInvalid,
            "timestamp out of range",
        ));
    }
    let vk = Vkey::cosignature_v1(signer.key_name(), signer.public_key());
    let sig = signer.sign(&cosignature_message(text, timestamp))?;
    let mut blob = timestamp.to_be_bytes().to_vec();
    blob.extend_from_slice(&sig);
    verify_one(text, &vk, &blob).map_err(|_| {
        Error::new(
            ErrorCode::SignatureInvalid,
            "cosigner returned a signature that does not verify",
        )
    })?;
    Ok(NoteSignature {
        name: vk.name.clone(),
        key_id: vk.key_id(),
        sig: blob,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example key and note of golang.org/x/mod/sumdb/note (note_test.go), which the
    // C2SP signed-note format is taken from. Ed25519 is deterministic, so signing the text
    // must reproduce the published signature byte for byte.
    const VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const SKEY_B64: &str = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                        then you don't know what your problem is.\n";
    const SIG_LINE: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    fn peter() -> SoftwareNoteSigner {
        let raw = STANDARD.decode(SKEY_B64).unwrap();
        assert_eq!(raw[0], TYPE_ED25519);
        SoftwareNoteSigner::from_seed("PeterNeumann", raw[1..].try_into().unwrap()).unwrap()
    }

    #[test]
    fn reproduces_go_reference_note() {
        let s = peter();
        let vk = Vkey::ed25519("PeterNeumann", s.public_key());
        assert_eq!(vk.to_string(), VKEY);
        assert_eq!(Vkey::parse(VKEY).unwrap(), vk);
        let sig = sign_text(TEXT, &s).unwrap();
        assert_eq!(sig.line(), SIG_LINE);
        let note = Note {
            text: TEXT.into(),
            signatures: vec![sig],
        };
        let rendered = note.render();
        assert_eq!(rendered, format!("{TEXT}\n{SIG_LINE}"));
        let parsed = Note::parse(&rendered).unwrap();
        assert_eq!(parsed, note);
        parsed.verify(std::slice::from_ref(&vk)).unwrap();
        let tampered = Note::parse(&rendered.replace("cryptography", "cryptographY")).unwrap();
        assert_eq!(
            tampered.verify(&[vk]).unwrap_err().code,
            ErrorCode::CheckpointInvalid
        );
    }

    #[test]
    fn vkey_manglings_are_refused() {
        let b = VKEY.as_bytes().to_vec();
        for i in 0..b.len() {
            let mut m = b.clone();
            m[i] = m[i].wrapping_add(1);
            if let Ok(s) = String::from_utf8(m) {
                assert!(Vkey::parse(&s).is_err(), "{s}");
            }
        }
        assert!(Vkey::parse("PeterNeumann+c74f20a3").is_err());
    }

    #[test]
    fn unknown_keys_are_ignored_known_failures_reject() {
        let s = peter();
        let other = SoftwareNoteSigner::from_seed("PeterNeumann", &[9; 32]).unwrap();
        let mut note = Note {
            text: TEXT.into(),
            signatures: vec![
                sign_text(TEXT, &other).unwrap(),
                sign_text(TEXT, &s).unwrap(),
            ],
        };
        let vk = Vkey::ed25519("PeterNeumann", s.public_key());
        assert_eq!(note.verify(std::slice::from_ref(&vk)).unwrap().len(), 1);
        // Only the unknown key: rejected.
        note.signatures.pop();
        assert!(note.verify(std::slice::from_ref(&vk)).is_err());
        // Known key name and ID but a wrong signature: rejected even with a good one beside.
        let mut bad = sign_text(TEXT, &s).unwrap();
        bad.sig[0] ^= 1;
        note.signatures = vec![bad, sign_text(TEXT, &s).unwrap()];
        assert!(note.verify(&[vk]).is_err());
    }

    #[test]
    fn cosignature_round_trip() {
        let w = SoftwareNoteSigner::from_seed("witness.example/w1", &[3; 32]).unwrap();
        let line = cosign_text(TEXT, &w, 1_679_315_147).unwrap();
        assert_eq!(line.sig.len(), 72);
        let note = Note {
            text: TEXT.into(),
            signatures: vec![line],
        };
        let wk = Vkey::cosignature_v1("witness.example/w1", w.public_key());
        let v = note.verify(std::slice::from_ref(&wk)).unwrap();
        assert_eq!(v[0].timestamp, Some(1_679_315_147));
        // The same key as a plain Ed25519 vkey has another key ID: not recognised.
        assert!(
            note.verify(&[Vkey::ed25519("witness.example/w1", w.public_key())])
                .is_err()
        );
        assert_eq!(Vkey::parse(&wk.to_string()).unwrap(), wk);
    }

    #[test]
    fn malformed_notes() {
        for bad in [
            "no blank line\n\u{2014} a AAAAAAA=\n",
            "text\n\n- a AAAAAAAA\n",
            "text\n\n\u{2014} a AAAAAAAA",
            "text\n\n",
            "te\x01xt\n\n\u{2014} a AAAAAAAA\n",
            "text\n\n\u{2014} a+b AAAAAAAA\n",
            "text\n\n\u{2014} a AAAA\n",
        ] {
            assert!(Note::parse(bad).is_err(), "{bad:?}");
        }
        assert!(check_note_text("a\n\n").is_err());
        assert!(check_note_text("a").is_err());
    }
}
