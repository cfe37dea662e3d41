//! TEST-ONLY doubles for the key registry's unit tests: a [`KeyBackend`] whose "token" is a
//! map of in-memory [`SoftwareSigner`] secrets, and the real audit log behind a switch that
//! simulates an audit outage.
//! Compiled only under `cfg(test)`; the appliance never signs with these. End-to-end tests
//! under tests/ use real SoftHSM2 tokens through `crate::hsm`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::audit::{
    AppendTicket, AuditConfig, AuditLog, AuditSink, Entry, NoteSigner, SideWrites,
    SoftwareNoteSigner,
};
use crate::clock::SystemClock;
use crate::crypto::Alg;
use crate::error::{Error, ErrorCode, Result};
use crate::events::{Actor, Event, EventSink};
use crate::keys::{GeneratedKey, KeyBackend, KeyRole};
use crate::seams::SharedSigner;
use crate::signer::{DigestSigner, SoftwareSigner};
use crate::store::Store;

/// One object pair in the fake token.
#[derive(Debug, Clone)]
pub struct FakeObject {
    pub role: KeyRole,
    pub alg: Alg,
    pub label: String,
    secret: [u8; 32],
}

/// In-memory fake token (test only).
#[derive(Debug, Default)]
pub struct SoftBackend {
    objects: Mutex<BTreeMap<Vec<u8>, FakeObject>>,
    counter: AtomicU64,
    ids: AtomicU64,
    /// Make `generate` fail (HSM_ERROR) without creating anything.
    pub fail_generate: AtomicBool,
    /// Make `destroy` fail (HSM_ERROR) without destroying anything.
    pub fail_destroy: AtomicBool,
    /// Make the next `generate` reuse the previous secret (forces a kid collision).
    pub repeat_secret: AtomicBool,
    /// Number of `signer` calls (to observe caching).
    pub signer_loads: AtomicU64,
}

impl SoftBackend {
    /// Snapshot of the token contents: object id -> object.
    pub fn objects(&self) -> BTreeMap<Vec<u8>, FakeObject> {
        self.objects.lock().unwrap().clone()
    }

    /// The object a signer is loaded from (counted in `signer_loads`): KEY_NOT_FOUND unless
    /// `object_id` names one that `admits` accepts.
    fn load(&self, object_id: &[u8], admits: impl Fn(&FakeObject) -> bool) -> Result<FakeObject> {
        self.signer_loads.fetch_add(1, Ordering::SeqCst);
        let objects = self.objects.lock().unwrap();
        objects
            .get(object_id)
            .filter(|o| admits(o))
            .cloned()
            .ok_or_else(|| Error::new(ErrorCode::KeyNotFound, "no such object"))
    }
}

impl KeyBackend for SoftBackend {
    fn holds(&self, _role: KeyRole) -> bool {
        true
    }

    fn generate(&self, role: KeyRole, alg: Alg, label: &str) -> Result<GeneratedKey> {
        if self.fail_generate.load(Ordering::SeqCst) {
            return Err(Error::new(ErrorCode::HsmError, "injected generate failure"));
        }
        let n = if self.repeat_secret.swap(false, Ordering::SeqCst) {
            self.counter.load(Ordering::SeqCst)
        } else {
            self.counter.fetch_add(1, Ordering::SeqCst) + 1
        };
        let secret: [u8; 32] = Sha256::digest(format!("soft-backend-secret-{n}")).into();
        let signer = SoftwareSigner::from_secret("tmp", alg, &secret)?;
        let object_id = format!("obj-{}", self.ids.fetch_add(1, Ordering::SeqCst)).into_bytes();
        self.objects.lock().unwrap().insert(
            object_id.clone(),
            FakeObject {
                role,
                alg,
                label: label.to_string(),
                secret,
            },
        );
        Ok(GeneratedKey {
            object_id,
            label: label.to_string(),
            public: signer.public_key().clone(),
        })
    }

    fn signer(&self, role: KeyRole, alg: Alg, object_id: &[u8], kid: &str) -> Result<SharedSigner> {
        let o = self.load(object_id, |o| o.role == role && o.alg == alg)?;
        Ok(Arc::new(SoftwareSigner::from_secret(kid, alg, &o.secret)?))
    }

    fn note_signer(
        &self,
        role: KeyRole,
        object_id: &[u8],
        _kid: &str,
        name: &str,
    ) -> Result<Arc<dyn NoteSigner>> {
        let o = self.load(object_id, |o| o.role == role)?;
        if o.alg != Alg::EdDSA {
            return Err(Error::new(ErrorCode::KeyAlgMismatch, "not an Ed25519 key"));
        }
        Ok(Arc::new(SoftwareNoteSigner::from_seed(name, &o.secret)?))
    }

    fn check_key(&self, role: KeyRole, object_id: &[u8]) -> Result<()> {
        match self.objects.lock().unwrap().get(object_id) {
            Some(o) if o.role == role => Ok(()),
            _ => Err(Error::new(ErrorCode::KeyMaterialMissing, "no such object")),
        }
    }

    fn destroy(&self, role: KeyRole, object_id: &[u8]) -> Result<()> {
        if self.fail_destroy.load(Ordering::SeqCst) {
            return Err(Error::new(ErrorCode::HsmError, "injected destroy failure"));
        }
        let mut objects = self.objects.lock().unwrap();
        match objects.get(object_id) {
            Some(o) if o.role == role => {
                objects.remove(object_id);
                Ok(())
            }
            _ => Err(Error::new(ErrorCode::KeyNotFound, "no such object")),
        }
    }
}

/// The audit log of a store, switchable to failing (test only): appends commit their side
/// writes with the entry for real, so tests see exactly what the appliance would store.
#[derive(Debug)]
pub struct FlakySink {
    /// The log itself.
    pub log: AuditLog,
    /// While set, every record or append fails with AUDIT_UNAVAILABLE and writes nothing.
    pub fail: AtomicBool,
}

fn injected() -> Error {
    Error::new(ErrorCode::AuditUnavailable, "injected audit failure")
}

impl FlakySink {
    /// The audit log in `store` (created on first use).
    pub fn open(store: &Store) -> FlakySink {
        FlakySink {
            log: AuditLog::open(
                store,
                AuditConfig::new("pa.test/audit"),
                Arc::new(SystemClock),
            )
            .unwrap(),
            fail: AtomicBool::new(false),
        }
    }

    /// Every entry so far: who caused it and what happened.
    pub fn entries(&self) -> Vec<(Actor, Event)> {
        self.log
            .entries(0, self.log.size())
            .unwrap()
            .iter()
            .map(|raw| {
                let e: Entry = serde_json::from_slice(raw).unwrap();
                (e.actor, e.event)
            })
            .collect()
    }

    /// Events recorded so far (without actors).
    pub fn events(&self) -> Vec<Event> {
        self.entries().into_iter().map(|(_, e)| e).collect()
    }
}

impl EventSink for FlakySink {
    fn record(&self, actor: &Actor, event: Event) -> Result<u64> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(injected());
        }
        self.log.record(actor, event)
    }
}

impl AuditSink for FlakySink {
    fn append(&self, actor: &Actor, event: Event, writes: SideWrites) -> AppendTicket {
        if self.fail.load(Ordering::SeqCst) {
            return AppendTicket::ready(Err(injected()));
        }
        self.log.append(actor, event, writes)
    }
}
