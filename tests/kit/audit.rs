//! Shared helpers of the audit-log tests: a real sled store (in a [`super::tmp`] dir), a software
//! checkpoint key (tests only: the appliance's key lives in the HSM), sample events.

use std::path::Path;
use std::sync::Arc;

use mpcp_pa::audit::{AuditConfig, AuditLog, SoftwareNoteSigner, Vkey};
use mpcp_pa::clock::{FixedClock, parse_rfc3339};
use mpcp_pa::events::{Actor, Event};
use mpcp_pa::store::Store;

pub const ORIGIN: &str = "pa.test/audit";

pub fn clock() -> Arc<FixedClock> {
    Arc::new(FixedClock::new(
        parse_rfc3339("2026-03-01T12:00:00Z", "t").unwrap(),
    ))
}

pub fn open(store: &Store) -> AuditLog {
    AuditLog::open(store, AuditConfig::new(ORIGIN), clock()).unwrap()
}

/// The log's checkpoint key for tests (an in-process Ed25519 key behind `NoteSigner`).
pub fn log_signer() -> SoftwareNoteSigner {
    SoftwareNoteSigner::from_seed(ORIGIN, &[0x11; 32]).unwrap()
}

pub fn log_vkey() -> Vkey {
    use mpcp_pa::audit::NoteSigner;
    Vkey::ed25519(ORIGIN, log_signer().public_key())
}

/// Another key under the same name (an impostor).
pub fn other_signer() -> SoftwareNoteSigner {
    SoftwareNoteSigner::from_seed(ORIGIN, &[0x22; 32]).unwrap()
}

pub fn actor(i: u64) -> Actor {
    Actor {
        name: format!("token-{}", i % 3),
        role: "issuer".into(),
    }
}

/// A varied event for index `i`.
pub fn event(i: u64) -> Event {
    match i % 4 {
        0 => Event::GrantIssued {
            grant_id: format!("grant-{i}"),
            issuer_key_id: "pa-grant-1".into(),
            policy_hash: format!("{:064x}", i),
            request_digest: format!("{:064x}", i * 7 + 1),
            credential_tx: None,
        },
        1 => Event::PolicyStored {
            policy_hash: format!("{:064x}", i * 3),
        },
        2 => Event::KeyGenerated {
            kid: format!("k{i}"),
            role: "grant-signing".into(),
            alg: "EdDSA".into(),
        },
        _ => Event::GrantRevoked {
            grant_id: format!("grant-{}", i - 1),
            reason: "compromised \u{2014} \"quoted\"\nline".into(),
            credential_tx: None,
        },
    }
}

/// Appends `n` events through the durable `record` path.
pub fn fill(log: &AuditLog, n: u64) {
    use mpcp_pa::events::EventSink;
    let start = log.size();
    for i in start..start + n {
        assert_eq!(log.record(&actor(i), event(i)).unwrap(), i);
    }
}

/// Opens the store of the data directory `dir`, waiting (up to 10 s) while a handle this
/// process just dropped still holds sled's file lock: sled releases it from its background
/// flusher, shortly after the last handle is gone.
pub fn reopen(dir: &Path) -> Store {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Store::open(&mpcp_pa::app::DataDir::new(dir).store()) {
            Ok(s) => return s,
            Err(e)
                if e.message.contains("acquire lock") && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("open store: {e}"),
        }
    }
}
