//! Key discovery documents, built when the keys change and served from memory.
//!
//! [`KeyPublisher`] holds the documents gateways and MCP providers fetch:
//! - the spec's Key Set Document (`/.well-known/mpcp-keys.json`), built from the registry's
//!   records alone: no HSM operation, no audit append, no signature. It therefore answers
//!   whatever happens to the root key, the audit log, the disk or a token;
//! - the root-signed key set (extension, `/.well-known/mpcp-keys.signed.json`), which needs
//!   the root key and an audit entry (`key_set_signed`) per signing;
//! - the receipt key set (`/.well-known/mpcp-receipt-keys.json`): the receipt-signing keys
//!   as a JWKS, built like the spec's document, from the records alone.
//!
//! A document is rebuilt only when it may have changed: when the registry's
//! [`generation`](KeyRegistry::generation) moved (every registry change is made under its
//! operation lock, which bumps it), when an algorithm deprecation took effect since it was
//! built (keys of that algorithm are published `active:false` from that instant), and for
//! the signed form when half its lifetime passed. Between those events a request costs an
//! atomic load, a clock read and a reference-count increment.
//!
//! Failure rules: a failed rebuild of the plain document keeps the last one served (it is
//! retried on the next request); a signed key set whose keys are unchanged and that is not
//! yet expired keeps being served when its refresh fails for an outage (audit log, token).
//! A signed key set that would list stale keys, or whose root key is revoked or deprecated,
//! is never served: then the signed form is unavailable (see
//! [`KeyPublisher::signed_key_set`]).

use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::canonical::canonical_bytes;
use crate::clock::{Clock, SigningGate, parse_rfc3339};
use crate::error::{Error, ErrorCode, Result};
use crate::events::{Actor, EventSink};
use crate::keys::keyset::{build_key_set, key_set_value, sign_key_set};
use crate::keys::{ActiveKeys, KeyRegistry, KeyRole};
use crate::seams::debug_showing;

/// One served document: its exact bytes and their strong ETag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedDocument {
    /// The canonical JSON bytes served.
    pub body: bytes::Bytes,
    /// The strong ETag of `body`: the quoted lowercase hex SHA-256.
    pub etag: String,
}

impl PublishedDocument {
    fn new(body: Vec<u8>) -> PublishedDocument {
        let etag = format!("\"{}\"", hex::encode(Sha256::digest(&body)));
        PublishedDocument {
            body: body.into(),
            etag,
        }
    }
}

/// A built document and what it depends on.
struct Built {
    doc: Arc<PublishedDocument>,
    /// The registry generation read before the records were.
    generation: u64,
    /// The instant from which the document may be out of date (the next deprecation, or for
    /// the signed form its refresh time), if any.
    stale_from: Option<OffsetDateTime>,
}

impl Built {
    fn fresh(&self, generation: u64, now: OffsetDateTime) -> bool {
        self.generation == generation && self.stale_from.is_none_or(|t| now < t)
    }
}

/// The signed form as last built.
struct Signed {
    built: Built,
    /// SHA-256 of the canonical key set it signs.
    keys_digest: [u8; 32],
    /// Its `expiresAt`.
    expires_at: OffsetDateTime,
}

/// Builds and holds the key discovery documents (see the module documentation). Shared
/// behind an `Arc`; every method may be called from many threads.
pub struct KeyPublisher {
    registry: Arc<KeyRegistry>,
    sink: Arc<dyn EventSink>,
    clock: Arc<dyn Clock>,
    lifetime: Duration,
    plain: RwLock<Option<Built>>,
    receipts: RwLock<Option<Built>>,
    signed: RwLock<Option<Signed>>,
    /// Serialises signings, so that a burst of requests after a change signs once.
    signing: Mutex<()>,
    /// Consulted before every signing (the audit log refuses while the clock is behind it).
    gate: Option<Arc<dyn SigningGate>>,
}

debug_showing!(KeyPublisher {});

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

impl KeyPublisher {
    /// A publisher of `registry`'s grant-signing keys, recording each signing of the signed
    /// form through `sink`, judging time by `clock`; signed key sets are valid for
    /// `lifetime` (at most [`crate::keys::keyset::MAX_SIGNED_LIFETIME`]). Nothing is built
    /// until asked for.
    pub fn new(
        registry: Arc<KeyRegistry>,
        sink: Arc<dyn EventSink>,
        clock: Arc<dyn Clock>,
        lifetime: Duration,
    ) -> KeyPublisher {
        KeyPublisher {
            registry,
            sink,
            clock,
            lifetime,
            plain: RwLock::new(None),
            receipts: RwLock::new(None),
            signed: RwLock::new(None),
            signing: Mutex::new(()),
            gate: None,
        }
    }

    /// This publisher, refusing to sign while `gate` refuses (the error comes back as the
    /// gate's, e.g. `CLOCK_BEHIND`; a valid document signed earlier is still served).
    pub fn with_gate(mut self, gate: Arc<dyn SigningGate>) -> KeyPublisher {
        self.gate = Some(gate);
        self
    }

    /// The key set if the one in memory is current; never blocks on I/O. `None` means call
    /// [`KeyPublisher::key_set`] (off the async runtime: it reads the store).
    pub fn current_key_set(&self) -> Option<Arc<PublishedDocument>> {
        self.current(&self.plain)
    }

    /// The receipt key set if the one in memory is current; never blocks on I/O. `None`
    /// means call [`KeyPublisher::receipt_key_set`].
    pub fn current_receipt_key_set(&self) -> Option<Arc<PublishedDocument>> {
        self.current(&self.receipts)
    }

    fn current(&self, slot: &RwLock<Option<Built>>) -> Option<Arc<PublishedDocument>> {
        let generation = self.registry.generation();
        let now = self.clock.now();
        read(slot)
            .as_ref()
            .filter(|b| b.fresh(generation, now))
            .map(|b| b.doc.clone())
    }

    /// The spec's Key Set Document, rebuilt from the registry's records if they (or the
    /// algorithm policy's verdicts) changed since the last build. Blocking (store reads).
    /// When the rebuild fails, the last document built is returned; the error only when
    /// none was ever built.
    pub fn key_set(&self) -> Result<Arc<PublishedDocument>> {
        self.rebuilt(&self.plain, || {
            key_set_value(&build_key_set(self.registry.as_ref())?)
        })
    }

    /// The receipt key set (`/.well-known/mpcp-receipt-keys.json`): a JWKS `{"keys": [...]}`
    /// of the receipt-signing keys with their `active` flag, the keys a receipt verifier
    /// takes [`crate::receipts::record::DecisionRecord`]s' `secretVersion` from; empty when
    /// the role has no key. Rebuilt and served under the same rules as
    /// [`KeyPublisher::key_set`].
    pub fn receipt_key_set(&self) -> Result<Arc<PublishedDocument>> {
        self.rebuilt(&self.receipts, || {
            let keys = self.registry.published_keys(KeyRole::ReceiptSigning)?;
            Ok(serde_json::json!({ "keys": keys }))
        })
    }

    /// The document in `slot` if current, else the one `build` makes (kept in `slot`); on a
    /// failed build the last one built, the error only when none ever was.
    fn rebuilt(
        &self,
        slot: &RwLock<Option<Built>>,
        build: impl FnOnce() -> Result<serde_json::Value>,
    ) -> Result<Arc<PublishedDocument>> {
        if let Some(doc) = self.current(slot) {
            return Ok(doc);
        }
        let generation = self.registry.generation();
        let now = self.clock.now();
        let built = build().and_then(|v| canonical_bytes(&v)).map(|body| Built {
            doc: Arc::new(PublishedDocument::new(body)),
            generation,
            stale_from: self.registry.policy().next_change_after(now),
        });
        match built {
            Ok(b) => {
                let doc = b.doc.clone();
                *write(slot) = Some(b);
                Ok(doc)
            }
            Err(e) => match read(slot).as_ref() {
                Some(b) => Ok(b.doc.clone()),
                None => Err(e),
            },
        }
    }

    /// The signed key set if the one in memory is current; never blocks.
    pub fn current_signed_key_set(&self) -> Option<Arc<PublishedDocument>> {
        let generation = self.registry.generation();
        let now = self.clock.now();
        read(&self.signed)
            .as_ref()
            .filter(|s| s.built.fresh(generation, now))
            .map(|s| s.built.doc.clone())
    }

    /// The root-signed key set, signed again (HSM, then a `key_set_signed` audit entry
    /// before it is returned) when the keys changed or half its lifetime passed. Blocking.
    ///
    /// Errors: KEY_SET_UNAVAILABLE when no usable root key exists (none active, revoked, or
    /// of a deprecated algorithm); otherwise the dependency's own 5xx code
    /// (AUDIT_UNAVAILABLE, HSM_UNAVAILABLE, KEY_MATERIAL_MISSING, ...), except that during
    /// such an outage the last signed document is returned while it covers exactly the
    /// current keys and has not expired.
    pub fn signed_key_set(&self) -> Result<Arc<PublishedDocument>> {
        if let Some(doc) = self.current_signed_key_set() {
            return Ok(doc);
        }
        let _one = self.signing.lock().unwrap_or_else(PoisonError::into_inner);
        // Another thread may have signed while this one waited.
        if let Some(doc) = self.current_signed_key_set() {
            return Ok(doc);
        }
        let generation = self.registry.generation();
        let now = self.clock.now();
        let set = build_key_set(self.registry.as_ref())?;
        let keys_digest: [u8; 32] = Sha256::digest(canonical_bytes(&key_set_value(&set)?)?).into();
        match self.sign(generation, now, keys_digest) {
            Ok(s) => {
                let doc = s.built.doc.clone();
                *write(&self.signed) = Some(s);
                Ok(doc)
            }
            Err(e) => {
                let e = unavailable(e);
                let last = read(&self.signed);
                match last.as_ref() {
                    // A passing outage (audit log, token): the last document is still
                    // accurate and valid. Without a usable root key it is not served: its
                    // signer is revoked or may no longer sign.
                    Some(s)
                        if e.code != ErrorCode::KeySetUnavailable
                            && s.keys_digest == keys_digest
                            && now < s.expires_at =>
                    {
                        Ok(s.built.doc.clone())
                    }
                    _ => Err(e),
                }
            }
        }
    }

    fn sign(&self, generation: u64, now: OffsetDateTime, keys_digest: [u8; 32]) -> Result<Signed> {
        if let Some(gate) = &self.gate {
            gate.check_signing_time()?;
        }
        let signed = sign_key_set(
            self.registry.as_ref(),
            self.sink.as_ref(),
            &Actor::system(),
            self.clock.as_ref(),
            self.lifetime,
        )?;
        let expires_at = parse_rfc3339(
            signed["expiresAt"].as_str().unwrap_or_default(),
            "expiresAt",
        )?;
        let refresh = now + self.lifetime / 2;
        let stale_from = match self.registry.policy().next_change_after(now) {
            Some(t) if t < refresh => t,
            _ => refresh,
        };
        Ok(Signed {
            built: Built {
                doc: Arc::new(PublishedDocument::new(canonical_bytes(&signed)?)),
                generation,
                stale_from: Some(stale_from),
            },
            keys_digest,
            expires_at,
        })
    }
}

/// A signing failure as the public sees it: a refusal that only says no usable root key
/// exists becomes KEY_SET_UNAVAILABLE (server state, so 503, never a 4xx).
fn unavailable(e: Error) -> Error {
    match e.code {
        ErrorCode::KeyNotFound
        | ErrorCode::KeyRevoked
        | ErrorCode::KeyStateInvalid
        | ErrorCode::AlgorithmDeprecated
        | ErrorCode::AlgorithmUnsupported => Error::new(
            ErrorCode::KeySetUnavailable,
            format!("no usable root key signs the key set: {}", e.message),
        ),
        _ => e,
    }
}

#[cfg(test)]
mod tests;
