//! An external witness cosigning the log's checkpoints (C2SP tlog-cosignature v1, with a
//! second Ed25519 key held here), and a relying party that requires its cosignature
//! catching a split view made with the log's own key.

use mpcp_pa::audit::merkle::{Hash, verify_consistency};
use mpcp_pa::audit::note::{Note, cosign_text};
use mpcp_pa::audit::{AuditLog, NoteSigner, SoftwareNoteSigner, Vkey, verify_checkpoint};
use mpcp_pa::error::{Error, ErrorCode, Result};
use mpcp_pa::events::{Actor, Event, EventSink};
use mpcp_pa::store::Store;

use crate::kit;
use crate::kit::audit::*;

const WITNESS: &str = "witness.test/w1";

/// A minimal witness: remembers the largest checkpoint it cosigned and cosigns a new one
/// only with a valid consistency proof from it.
struct Witness {
    key: SoftwareNoteSigner,
    log: Vkey,
    seen: Option<(u64, Hash)>,
    now: u64,
}

impl Witness {
    fn vkey(&self) -> Vkey {
        Vkey::cosignature_v1(WITNESS, self.key.public_key())
    }

    fn cosign(&mut self, note: &str, proof_from_seen: &[Hash]) -> Result<String> {
        let v = verify_checkpoint(note, &self.log, &[], 0)?;
        let cp = v.checkpoint;
        if let Some((size, root)) = self.seen {
            if cp.size < size {
                return Err(Error::new(
                    ErrorCode::CheckpointInconsistent,
                    "older than seen",
                ));
            }
            verify_consistency(size, cp.size, &root, &cp.root, proof_from_seen)
                .map_err(|e| Error::new(ErrorCode::CheckpointInconsistent, e.message))?;
        }
        self.now += 60;
        let mut n = Note::parse(note)?;
        n.signatures
            .push(cosign_text(&n.text, &self.key, self.now)?);
        self.seen = Some((cp.size, cp.root));
        Ok(n.render())
    }
}

fn fork_event(i: u64) -> Event {
    Event::GrantIssued {
        grant_id: format!("forged-{i}"),
        issuer_key_id: "pa-grant-1".into(),
        policy_hash: "00".repeat(32),
        request_digest: "11".repeat(32),
        credential_tx: None,
    }
}

#[test]
fn witness_cosignature_catches_a_split_view() {
    let dir = kit::tmp::dir("witness");
    let honest_store =
        Store::open(&mpcp_pa::app::DataDir::new(dir.join("honest")).store()).unwrap();
    let fork_store = Store::open(&mpcp_pa::app::DataDir::new(dir.join("fork")).store()).unwrap();
    let honest = open(&honest_store);
    let fork: AuditLog = open(&fork_store);
    let signer = log_signer();
    let mut witness = Witness {
        key: SoftwareNoteSigner::from_seed(WITNESS, &[0x33; 32]).unwrap(),
        log: log_vkey(),
        seen: None,
        now: 1_760_000_000,
    };
    let wk = witness.vkey();
    assert!(wk.to_string().starts_with("witness.test/w1+"));

    // Both logs share the first 10 entries, then diverge.
    fill(&honest, 10);
    fill(&fork, 10);
    let a = honest.sign_checkpoint(&signer).unwrap().note;
    assert_eq!(a, fork.sign_checkpoint(&signer).unwrap().note);
    let a_cosigned = witness.cosign(&a, &[]).unwrap();
    // The witness added exactly one line.
    assert_eq!(a_cosigned.lines().count(), a.lines().count() + 1);
    assert!(
        a_cosigned
            .lines()
            .last()
            .unwrap()
            .starts_with("\u{2014} witness.test/w1 ")
    );

    fill(&honest, 5);
    let b = honest.sign_checkpoint(&signer).unwrap().note;
    let b_cosigned = witness
        .cosign(&b, &honest.consistency_proof(10, 15).unwrap())
        .unwrap();

    let mallory = Actor {
        name: "mallory".into(),
        role: "issuer".into(),
    };
    for i in 10..15 {
        fork.record(&mallory, fork_event(i)).unwrap();
    }
    let b_fork = fork.sign_checkpoint(&signer).unwrap().note;
    // The fork's checkpoint is validly signed by the log key: without witnesses it passes.
    let forked = verify_checkpoint(&b_fork, &log_vkey(), &[], 0)
        .unwrap()
        .checkpoint;
    let genuine = verify_checkpoint(&b, &log_vkey(), &[], 0)
        .unwrap()
        .checkpoint;
    assert_eq!(forked.size, genuine.size);
    assert_ne!(forked.root, genuine.root);

    // The witness, having seen the honest size-15 head, refuses the fork...
    let e = witness
        .cosign(&b_fork, &fork.consistency_proof(15, 15).unwrap())
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::CheckpointInconsistent);
    // ...and a fork that grows further cannot prove consistency with what it saw.
    fork.record(&mallory, fork_event(15)).unwrap();
    let c_fork = fork.sign_checkpoint(&signer).unwrap().note;
    assert!(
        witness
            .cosign(&c_fork, &fork.consistency_proof(15, 16).unwrap())
            .is_err()
    );

    // A relying party that requires the witness accepts the cosigned genuine checkpoints...
    for note in [&a_cosigned, &b_cosigned] {
        let v = verify_checkpoint(note, &log_vkey(), std::slice::from_ref(&wk), 1).unwrap();
        assert_eq!(v.witnesses, vec![wk.clone()]);
    }
    // ...and rejects the fork: no cosignature at all,
    let e = verify_checkpoint(&b_fork, &log_vkey(), std::slice::from_ref(&wk), 1).unwrap_err();
    assert_eq!(e.code, ErrorCode::CheckpointInvalid);
    assert!(e.message.contains("witness"), "{e}");
    // or the witness's line copied over from the genuine checkpoint (it does not verify).
    let mut pasted = Note::parse(&b_fork).unwrap();
    pasted
        .signatures
        .push(Note::parse(&b_cosigned).unwrap().signatures.pop().unwrap());
    let e =
        verify_checkpoint(&pasted.render(), &log_vkey(), std::slice::from_ref(&wk), 1).unwrap_err();
    assert_eq!(e.code, ErrorCode::CheckpointInvalid);
    // A verifier that does not know the witness simply ignores its line.
    verify_checkpoint(&b_cosigned, &log_vkey(), &[], 0).unwrap();
}
