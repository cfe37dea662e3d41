//! An independent check of C2SP checkpoints for the end-to-end tests: the vkey computed from
//! an audit key's public JWK and the note signature verified with `ed25519-dalek` directly,
//! following c2sp.org/signed-note and c2sp.org/tlog-checkpoint, without the appliance's own
//! `audit::note` / `audit::checkpoint` code.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The 32-byte Ed25519 key of a public JWK (`kty` OKP, `crv` Ed25519).
pub fn jwk_public(jwk: &Value) -> [u8; 32] {
    assert_eq!(jwk["kty"], "OKP", "{jwk}");
    assert_eq!(jwk["crv"], "Ed25519", "{jwk}");
    URL_SAFE_NO_PAD
        .decode(jwk["x"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

/// `SHA-256(name || 0x0A || 0x01 || key)[:4]`.
pub fn key_id(name: &str, public: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([0x0a, 0x01]);
    h.update(public);
    h.finalize()[..4].try_into().unwrap()
}

/// The C2SP vkey `name+<hex key ID>+<base64(0x01 || key)>`.
pub fn vkey(name: &str, public: &[u8; 32]) -> String {
    let mut raw = vec![0x01];
    raw.extend_from_slice(public);
    format!(
        "{name}+{}+{}",
        hex::encode(key_id(name, public)),
        STANDARD.encode(raw)
    )
}

/// A verified checkpoint: origin, tree size and root hash (base64).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub origin: String,
    pub size: u64,
    pub root: String,
}

/// Verifies that `note` carries a valid signature by `public` under key name `name` and
/// returns its checkpoint body. Panics otherwise.
pub fn verify(note: &str, name: &str, public: &[u8; 32]) -> Head {
    check(note, name, public).unwrap_or_else(|why| panic!("{why}: {note:?}"))
}

/// Whether `note` verifies under `public`.
pub fn verifies(note: &str, name: &str, public: &[u8; 32]) -> bool {
    check(note, name, public).is_ok()
}

fn check(note: &str, name: &str, public: &[u8; 32]) -> Result<Head, String> {
    let split = note.rfind("\n\n").ok_or("no blank line")?;
    let (text, sigs) = (&note[..split + 1], &note[split + 2..]);
    let id = key_id(name, public);
    let vk = VerifyingKey::from_bytes(public).map_err(|e| e.to_string())?;
    let mut found = false;
    for line in sigs.lines() {
        let rest = line.strip_prefix("\u{2014} ").ok_or("no em dash")?;
        let (who, b64) = rest.split_once(' ').ok_or("no signature")?;
        let raw = STANDARD.decode(b64).map_err(|e| e.to_string())?;
        if who == name && raw.len() > 4 && raw[..4] == id {
            let sig = Signature::from_slice(&raw[4..]).map_err(|e| e.to_string())?;
            vk.verify(text.as_bytes(), &sig)
                .map_err(|_| "signature does not verify")?;
            found = true;
        }
    }
    if !found {
        return Err(format!("no signature by {name} {}", hex::encode(id)));
    }
    let lines: Vec<&str> = text.trim_end_matches('\n').split('\n').collect();
    if lines.len() != 3 || lines[0] != name {
        return Err("not a checkpoint of this origin".into());
    }
    Ok(Head {
        origin: lines[0].to_string(),
        size: lines[1].parse().map_err(|_| "bad size")?,
        root: lines[2].to_string(),
    })
}
