//! C2SP tlog-checkpoint v1.0.0 bodies: `<origin>\n<tree size>\n<base64 root hash>\n`, signed
//! as a note by the log key (whose key name is the origin) and optionally cosigned by
//! witnesses.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::merkle::Hash;
use super::note::{Note, NoteSigner, Vkey, sign_text};
use crate::error::{Error, ErrorCode, Result};

/// A tree head: origin, size and root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's origin line.
    pub origin: String,
    /// Number of entries committed to.
    pub size: u64,
    /// RFC 6962 root hash at `size`.
    pub root: Hash,
}

fn invalid(why: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorCode::CheckpointInvalid,
        format!("invalid checkpoint: {why}"),
    )
}

impl Checkpoint {
    /// The note text the log signs.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        )
    }

    /// Parses a checkpoint body. Extension lines are refused: this log writes none, and a
    /// verifier must not be asked to trust lines nobody can audit.
    pub fn parse_body(text: &str) -> Result<Checkpoint> {
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| invalid("no final newline"))?;
        let lines: Vec<&str> = body.split('\n').collect();
        if lines.len() != 3 {
            return Err(invalid(format!(
                "{} lines, expected origin, size and root",
                lines.len()
            )));
        }
        let origin = lines[0];
        if origin.is_empty() {
            return Err(invalid("empty origin"));
        }
        let size_s = lines[1];
        let canonical_number = size_s == "0" || (!size_s.starts_with('0') && !size_s.is_empty());
        if !canonical_number || !size_s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid("tree size is not a decimal without leading zeros"));
        }
        let size: u64 = size_s
            .parse()
            .map_err(|_| invalid("tree size out of range"))?;
        let root_raw = STANDARD
            .decode(lines[2])
            .map_err(|_| invalid("root is not base64"))?;
        let root: Hash = root_raw
            .try_into()
            .map_err(|_| invalid("root is not 32 bytes"))?;
        let cp = Checkpoint {
            origin: origin.to_string(),
            size,
            root,
        };
        if cp.body() != text {
            return Err(invalid("not in canonical form"));
        }
        Ok(cp)
    }

    /// Signs the checkpoint with the log key and returns the note text.
    pub fn sign(&self, signer: &dyn NoteSigner) -> Result<String> {
        let body = self.body();
        let sig = sign_text(&body, signer)?;
        Ok(Note {
            text: body,
            signatures: vec![sig],
        }
        .render())
    }
}

/// A checkpoint whose log signature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCheckpoint {
    /// The tree head.
    pub checkpoint: Checkpoint,
    /// The parsed note (all signature lines, including ones from unknown keys).
    pub note: Note,
    /// Witness keys whose cosignatures verified.
    pub witnesses: Vec<Vkey>,
}

/// Verifies a checkpoint note: the log key `log` (a type 0x01 vkey whose name is the
/// origin) must have signed it, and at least `quorum` of `witnesses` must have cosigned it.
/// A signature from a listed key that fails to verify rejects the note.
pub fn verify_checkpoint(
    note_text: &str,
    log: &Vkey,
    witnesses: &[Vkey],
    quorum: usize,
) -> Result<VerifiedCheckpoint> {
    let note = Note::parse(note_text)?;
    let checkpoint = Checkpoint::parse_body(&note.text)?;
    if checkpoint.origin != log.name {
        return Err(invalid(format!(
            "origin {:?} does not match the log key name {:?}",
            checkpoint.origin, log.name
        )));
    }
    let mut known = vec![log.clone()];
    known.extend(witnesses.iter().cloned());
    // Any failing known signature rejects; unknown ones are ignored.
    let verified = note.verify(&known)?;
    if !verified.iter().any(|v| &v.key == log) {
        return Err(Error::new(
            ErrorCode::CheckpointInvalid,
            "checkpoint is not signed by the log key",
        ));
    }
    let cosigners: Vec<Vkey> = verified
        .into_iter()
        .filter(|v| witnesses.contains(&v.key))
        .map(|v| v.key)
        .collect();
    if cosigners.len() < quorum {
        return Err(Error::new(
            ErrorCode::CheckpointInvalid,
            format!(
                "checkpoint has {} of the {quorum} required witness cosignatures",
                cosigners.len()
            ),
        ));
    }
    Ok(VerifiedCheckpoint {
        checkpoint,
        note,
        witnesses: cosigners,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::note::SoftwareNoteSigner;

    #[test]
    fn body_round_trip_and_refusals() {
        let cp = Checkpoint {
            origin: "example.com/behind-the-sofa".into(),
            size: 20852163,
            root: STANDARD
                .decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
                .unwrap()
                .try_into()
                .unwrap(),
        };
        let body = cp.body();
        assert_eq!(
            body,
            "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
        );
        assert_eq!(Checkpoint::parse_body(&body).unwrap(), cp);
        for bad in [
            "o\n012\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
            "o\n12\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=",
            "o\n-1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
            "o\n1\nCsUY\n",
            "\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
            "o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\next\n",
        ] {
            assert!(Checkpoint::parse_body(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn signed_checkpoint_verifies_only_with_its_key() {
        let log = SoftwareNoteSigner::from_seed("pa.example/audit", &[1; 32]).unwrap();
        let cp = Checkpoint {
            origin: "pa.example/audit".into(),
            size: 3,
            root: [7; 32],
        };
        let note = cp.sign(&log).unwrap();
        let vk = Vkey::ed25519("pa.example/audit", log.public_key());
        assert_eq!(
            verify_checkpoint(&note, &vk, &[], 0).unwrap().checkpoint,
            cp
        );
        let other = SoftwareNoteSigner::from_seed("pa.example/audit", &[2; 32]).unwrap();
        let forged = cp.sign(&other).unwrap();
        assert_eq!(
            verify_checkpoint(&forged, &vk, &[], 0).unwrap_err().code,
            ErrorCode::CheckpointInvalid
        );
        // Signed by the right key but under another origin.
        let misnamed = Vkey::ed25519("other", log.public_key());
        assert!(verify_checkpoint(&note, &misnamed, &[], 0).is_err());
    }
}
