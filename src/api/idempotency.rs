//! `Idempotency-Key` for signing and key-management POSTs.
//!
//! A record maps (principal, key) to the digest of the canonical request and the response
//! first returned. The same key with the same request replays that response byte for byte
//! (same signature, no second signature, no second audit entry), even when the client never
//! saw it; the same key with a different request is IDEMPOTENCY_CONFLICT (409). Concurrent
//! requests with one key are serialised by a per-key lock held from lookup until the record
//! is written, so two duplicates never both sign. Only successful responses are stored: a
//! refused or failed request can be retried with its key.
//!
//! Signing requests write their record with [`Reservation::record_write`] as a side write of
//! their audit entry (see [`crate::audit::append`]): the entry, the issued artifact and the
//! record become durable in one transaction, so after a crash a retry finds either all of
//! them (and replays) or none (and runs afresh) — never an audited signature without its
//! record. Key management does the same: the key registry prepares its change and the
//! route commits it with the record in one append.
//!
//! A response that is also stored as a record of the same append (an issued grant) is not
//! copied into the idempotency record: the record names it ([`BodyRef`]) and a replay reads
//! it back and re-serialises it canonically, which gives the same bytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::audit::SideWrites;
use crate::canonical::canonical_bytes;
use crate::clock::{Clock, format_rfc3339, parse_rfc3339};
use crate::error::{Error, ErrorCode, Result};
use crate::seams::debug_showing;
use crate::store::{Store, store_error};

/// sled tree: `principal \n key` -> [`StoredResponse`] (JSON).
pub const TREE_IDEMPOTENCY: &str = "api/idempotency";

/// Domain prefix of the request digest.
const DIGEST_PREFIX: &str = "MPCP-PA:IdempotentRequest:1:";

/// Longest accepted `Idempotency-Key`.
pub const MAX_KEY_LEN: usize = 255;

/// The response stored for a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredResponse {
    /// Hex digest of the canonical request.
    pub request_digest: String,
    /// HTTP status first returned.
    pub status: u16,
    /// JSON body first returned (UTF-8). Empty in a stored record with a `body_ref`; filled
    /// from the referenced record by [`IdempotencyStore::begin`].
    pub body: String,
    /// When it was stored (RFC 3339).
    pub stored_at: String,
    /// Where the body is stored instead, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_ref: Option<BodyRef>,
    /// Response headers a replay repeats (name, value), beyond the JSON content type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
}

/// A response body kept in another record of the same append: the canonical JSON of member
/// `member` of the JSON record under `key` in sled tree `tree`. Whoever names one must store
/// exactly that record in the same commit, with the member's canonical JSON equal to the
/// body released.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BodyRef {
    /// sled tree of the record (never an `audit/` tree).
    pub tree: String,
    /// Key of the record.
    pub key: String,
    /// Member of the record that is the body.
    pub member: String,
}

/// What a lookup found.
#[derive(Debug)]
pub enum Begin {
    /// No record: run the request and commit its record with its audit entry
    /// ([`Reservation::record_write`]).
    Fresh(Reservation),
    /// A record for the same request: answer with it.
    Replay(StoredResponse),
}

type LockMap = Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>;

/// The right to run a request for one key; holds the key's lock until dropped.
pub struct Reservation {
    scope: String,
    digest: String,
    /// The stored (expired) record this request replaces, if any.
    previous: Option<Vec<u8>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    lock: Arc<tokio::sync::Mutex<()>>,
    locks: Arc<LockMap>,
}

debug_showing!(Reservation { scope, digest });

impl Reservation {
    /// Hex digest of the reserved request.
    pub fn request_digest(&self) -> &str {
        &self.digest
    }

    /// Adds the record of this request's response to `writes`, to be committed with its
    /// audit entry; keep the reservation until that commit is done (the key stays locked).
    pub fn record_write(
        &self,
        writes: &mut SideWrites,
        status: u16,
        body: &[u8],
        headers: &[(String, String)],
        clock: &dyn Clock,
    ) -> Result<()> {
        let raw = self.record_bytes(status, body, None, headers, clock)?.1;
        self.push_record(writes, raw);
        Ok(())
    }

    /// [`Reservation::record_write`] for a response whose body is the record `body_ref`
    /// names, committed in the same `writes`: the idempotency record does not repeat it.
    pub fn record_ref_write(
        &self,
        writes: &mut SideWrites,
        status: u16,
        body_ref: BodyRef,
        headers: &[(String, String)],
        clock: &dyn Clock,
    ) -> Result<()> {
        if body_ref
            .tree
            .starts_with(crate::audit::append::AUDIT_TREE_PREFIX)
        {
            return Err(Error::new(
                ErrorCode::Internal,
                "a response body cannot be kept in an audit tree",
            ));
        }
        let raw = self
            .record_bytes(status, b"", Some(body_ref), headers, clock)?
            .1;
        self.push_record(writes, raw);
        Ok(())
    }

    fn push_record(&self, writes: &mut SideWrites, raw: Vec<u8>) {
        writes.swap(
            TREE_IDEMPOTENCY,
            self.scope.as_bytes().to_vec(),
            self.previous.clone(),
            raw,
            Error::field(
                ErrorCode::IdempotencyConflict,
                "Idempotency-Key",
                "this Idempotency-Key was used concurrently",
            ),
        );
    }

    fn record_bytes(
        &self,
        status: u16,
        body: &[u8],
        body_ref: Option<BodyRef>,
        headers: &[(String, String)],
        clock: &dyn Clock,
    ) -> Result<(StoredResponse, Vec<u8>)> {
        let rec = StoredResponse {
            request_digest: self.digest.clone(),
            status,
            body: String::from_utf8(body.to_vec())
                .map_err(|_| Error::new(ErrorCode::Internal, "response body is not UTF-8"))?,
            stored_at: format_rfc3339(clock.now()),
            body_ref,
            headers: headers.to_vec(),
        };
        let raw = serde_json::to_vec(&rec)
            .map_err(|e| Error::new(ErrorCode::Internal, format!("idempotency record: {e}")))?;
        Ok((rec, raw))
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.guard.take();
        let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        // The map and this reservation hold the only references: nobody waits, forget the key.
        if Arc::strong_count(&self.lock) == 2 {
            map.remove(&self.scope);
        }
    }
}

/// Idempotency records in the shared store.
pub struct IdempotencyStore {
    store: Store,
    tree: sled::Tree,
    ttl: Duration,
    locks: Arc<LockMap>,
}

debug_showing!(IdempotencyStore { ttl });

/// Checks an `Idempotency-Key` value: 1..=255 visible ASCII characters.
pub fn validate_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::field(
            ErrorCode::SchemaInvalid,
            "Idempotency-Key",
            format!("Idempotency-Key must be 1-{MAX_KEY_LEN} visible ASCII characters"),
        ));
    }
    Ok(())
}

/// The digest that identifies a request: method, path and the canonical JSON body.
pub fn request_digest(method: &str, path: &str, body: &Value) -> Result<[u8; 32]> {
    let mut h = Sha256::new();
    h.update(DIGEST_PREFIX.as_bytes());
    h.update(method.as_bytes());
    h.update(b" ");
    h.update(path.as_bytes());
    h.update(b"\n");
    h.update(canonical_bytes(body)?);
    Ok(h.finalize().into())
}

impl IdempotencyStore {
    /// Opens the record tree; records older than `ttl` count as absent.
    pub fn open(store: &Store, ttl: Duration) -> Result<IdempotencyStore> {
        Ok(IdempotencyStore {
            store: store.clone(),
            tree: store.tree(TREE_IDEMPOTENCY)?,
            ttl,
            locks: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    fn expired(&self, rec: &StoredResponse, now: OffsetDateTime) -> bool {
        match parse_rfc3339(&rec.stored_at, "storedAt") {
            Ok(t) => now - t > self.ttl,
            Err(_) => true,
        }
    }

    /// Locks `key` for `principal`, then looks it up against `digest`.
    pub async fn begin(
        &self,
        principal: &str,
        key: &str,
        digest: &[u8; 32],
        clock: &dyn Clock,
    ) -> Result<Begin> {
        validate_key(key)?;
        let scope = format!("{principal}\n{key}");
        let lock = {
            let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(scope.clone()).or_default().clone()
        };
        let guard = lock.clone().lock_owned().await;
        let reservation = Reservation {
            scope,
            digest: hex::encode(digest),
            previous: None,
            guard: Some(guard),
            lock,
            locks: self.locks.clone(),
        };
        let found = self
            .tree
            .get(reservation.scope.as_bytes())
            .map_err(|e| store_error("read idempotency record", e))?;
        let Some(raw) = found else {
            return Ok(Begin::Fresh(reservation));
        };
        let rec: StoredResponse = serde_json::from_slice(&raw).map_err(|e| {
            Error::new(
                ErrorCode::StoreError,
                format!("corrupt idempotency record: {e}"),
            )
        })?;
        // A stored record replays until it is purged, however old the wall clock says it
        // is: expiry judged by a clock that jumped would sign retries a second time.
        let _ = clock;
        if rec.request_digest != reservation.digest {
            return Err(Error::field(
                ErrorCode::IdempotencyConflict,
                "Idempotency-Key",
                "this Idempotency-Key was already used for a different request",
            ));
        }
        Ok(Begin::Replay(self.resolve(rec)?))
    }

    /// Fills the body of a record that keeps it elsewhere ([`BodyRef`]). A reference to a
    /// record that is not there, or not JSON, is a STORE_ERROR: the appliance never answers
    /// a replay with anything but the first response.
    fn resolve(&self, mut rec: StoredResponse) -> Result<StoredResponse> {
        let Some(r) = &rec.body_ref else {
            return Ok(rec);
        };
        let corrupt = |what: &str| {
            Error::new(
                ErrorCode::StoreError,
                format!(
                    "idempotency record refers to {what} ({} {:?} member {:?})",
                    r.tree, r.key, r.member
                ),
            )
        };
        if r.tree.starts_with(crate::audit::append::AUDIT_TREE_PREFIX) {
            return Err(corrupt("an audit tree"));
        }
        let raw = self
            .store
            .tree(&r.tree)?
            .get(r.key.as_bytes())
            .map_err(|e| store_error("read the record of a stored response", e))?
            .ok_or_else(|| corrupt("a missing record"))?;
        let value: Value =
            serde_json::from_slice(&raw).map_err(|_| corrupt("a record that is not JSON"))?;
        let member = value
            .get(&r.member)
            .ok_or_else(|| corrupt("a missing member"))?;
        let body = canonical_bytes(member)?;
        rec.body = String::from_utf8(body).map_err(|_| corrupt("a body that is not UTF-8"))?;
        Ok(rec)
    }

    /// Stores the response of a reserved request directly, then releases the key. Only for
    /// this module's tests: the service writes records only as side writes of their audit
    /// entry ([`Reservation::record_write`]).
    #[cfg(test)]
    fn complete(
        &self,
        reservation: Reservation,
        status: u16,
        body: &[u8],
        clock: &dyn Clock,
    ) -> Result<StoredResponse> {
        self.complete_with(reservation, status, body, None, clock)
    }

    /// [`IdempotencyStore::complete`] with a body kept elsewhere (tests only).
    #[cfg(test)]
    fn complete_with(
        &self,
        reservation: Reservation,
        status: u16,
        body: &[u8],
        body_ref: Option<BodyRef>,
        clock: &dyn Clock,
    ) -> Result<StoredResponse> {
        let (rec, raw) = reservation.record_bytes(status, body, body_ref, &[], clock)?;
        self.tree
            .insert(reservation.scope.as_bytes(), raw)
            .map_err(|e| store_error("write idempotency record", e))?;
        drop(reservation);
        Ok(rec)
    }

    /// Removes records older than the TTL both by the wall clock and by `floor` (the time of
    /// the audit log's last entry, a time the appliance already lived through); returns how
    /// many. A clock that jumped ahead therefore purges nothing the log has not reached:
    /// the horizon is the earlier of the two. With no floor (an empty log, which has no
    /// records either) the wall clock decides.
    pub fn purge_expired(&self, clock: &dyn Clock, floor: Option<OffsetDateTime>) -> Result<usize> {
        let now = match floor {
            Some(f) => clock.now().min(f),
            None => clock.now(),
        };
        let mut n = 0;
        for item in self.tree.iter() {
            let (k, raw) = item.map_err(|e| store_error("read idempotency record", e))?;
            let stale = serde_json::from_slice::<StoredResponse>(&raw)
                .map(|r| self.expired(&r, now))
                .unwrap_or(true);
            if stale {
                self.tree
                    .remove(k)
                    .map_err(|e| store_error("purge idempotency record", e))?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Number of keys currently locked (for tests of the lock table's cleanup).
    pub fn locked_keys(&self) -> usize {
        self.locks.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::parse_strict;
    use crate::clock::FixedClock;

    fn digest(body: &str) -> [u8; 32] {
        request_digest(
            "POST",
            "/v1/grants",
            &parse_strict(body.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    /// A record that keeps its body in another record replays that record's member as
    /// canonical JSON, stores no copy of it, and fails closed when the record is gone.
    #[tokio::test]
    async fn a_body_kept_in_another_record_replays_it() {
        let store = Store::temporary().unwrap();
        let idem = IdempotencyStore::open(&store, Duration::from_secs(60)).unwrap();
        let clock = FixedClock::new(parse_rfc3339("2026-01-01T00:00:00Z", "t").unwrap());
        let grants = store.tree("api/grants").unwrap();
        let grant = br#"{"b":[1,{"c":"\u00e9"}],"a":"x","signature":"c2ln"}"#;
        let canonical = canonical_bytes(&parse_strict(grant).unwrap()).unwrap();
        let mut record = br#"{"grant":"#.to_vec();
        record.extend_from_slice(grant);
        record.extend_from_slice(br#","revokedAt":"2026-01-01T00:00:01Z"}"#);
        grants.insert("g-1", record).unwrap();
        let at = |key: &str| BodyRef {
            tree: "api/grants".into(),
            key: key.into(),
            member: "grant".into(),
        };
        for (key, grant_id) in [("k1", "g-1"), ("k2", "g-missing")] {
            let d = digest(&format!(r#"{{"grantId":"{grant_id}"}}"#));
            let Begin::Fresh(r) = idem.begin("alice", key, &d, &clock).await.unwrap() else {
                panic!("expected fresh")
            };
            idem.complete_with(r, 201, b"", Some(at(grant_id)), &clock)
                .unwrap();
            let stored = idem.tree.get(format!("alice\n{key}")).unwrap().unwrap();
            assert!(!String::from_utf8_lossy(&stored).contains("c2ln"));
            match idem.begin("alice", key, &d, &clock).await {
                Ok(Begin::Replay(rec)) => {
                    assert_eq!(key, "k1");
                    assert_eq!((rec.status, rec.body.as_bytes()), (201, &canonical[..]));
                }
                Err(e) => {
                    assert_eq!(key, "k2");
                    assert_eq!(e.code, ErrorCode::StoreError);
                }
                Ok(Begin::Fresh(_)) => panic!("expected replay"),
            }
        }
        // A reservation refuses to keep a body in the audit log's trees.
        let d = digest(r#"{"x":"1"}"#);
        let Begin::Fresh(r) = idem.begin("alice", "k3", &d, &clock).await.unwrap() else {
            panic!("expected fresh")
        };
        let mut w = SideWrites::new();
        let bad = BodyRef {
            tree: "audit/entries".into(),
            ..at("g-1")
        };
        assert_eq!(
            r.record_ref_write(&mut w, 201, bad, &[], &clock)
                .unwrap_err()
                .code,
            ErrorCode::Internal
        );
    }

    #[tokio::test]
    async fn replay_conflict_and_expiry() {
        let store = Store::temporary().unwrap();
        let idem = IdempotencyStore::open(&store, Duration::from_secs(60)).unwrap();
        let clock = FixedClock::new(parse_rfc3339("2026-01-01T00:00:00Z", "t").unwrap());
        let d1 = digest(r#"{"a":"1","b":"2"}"#);
        // Key order and whitespace do not change the request.
        assert_eq!(d1, digest(r#"{ "b":"2", "a":"1" }"#));
        let Begin::Fresh(r) = idem.begin("alice", "k1", &d1, &clock).await.unwrap() else {
            panic!("expected fresh")
        };
        idem.complete(r, 201, br#"{"sig":"x"}"#, &clock).unwrap();
        assert_eq!(idem.locked_keys(), 0);
        match idem.begin("alice", "k1", &d1, &clock).await.unwrap() {
            Begin::Replay(rec) => {
                assert_eq!((rec.status, rec.body.as_str()), (201, r#"{"sig":"x"}"#))
            }
            Begin::Fresh(_) => panic!("expected replay"),
        }
        let e = idem
            .begin("alice", "k1", &digest(r#"{"a":"2"}"#), &clock)
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::IdempotencyConflict);
        // Keys are per principal.
        assert!(matches!(
            idem.begin("bob", "k1", &d1, &clock).await.unwrap(),
            Begin::Fresh(_)
        ));
        assert_eq!(idem.locked_keys(), 0);
        clock.advance(Duration::from_secs(61));
        // Past the TTL by the wall clock alone: still replays, and is not purged while the
        // log's last entry is inside the TTL.
        assert!(matches!(
            idem.begin("alice", "k1", &d1, &clock).await.unwrap(),
            Begin::Replay(_)
        ));
        let before = clock.now() - Duration::from_secs(61);
        assert_eq!(idem.purge_expired(&clock, Some(before)).unwrap(), 0);
        assert_eq!(idem.purge_expired(&clock, Some(clock.now())).unwrap(), 1);
        assert!(matches!(
            idem.begin("alice", "k1", &d1, &clock).await.unwrap(),
            Begin::Fresh(_)
        ));
        assert_eq!(validate_key("").unwrap_err().code, ErrorCode::SchemaInvalid);
        assert!(validate_key("a b").is_err());
    }

    #[tokio::test]
    async fn concurrent_duplicates_are_serialised() {
        let store = Store::temporary().unwrap();
        let idem = Arc::new(IdempotencyStore::open(&store, Duration::from_secs(60)).unwrap());
        let clock = Arc::new(FixedClock::new(
            OffsetDateTime::UNIX_EPOCH + Duration::from_secs(1),
        ));
        let d = digest(r#"{"a":"1"}"#);
        let Begin::Fresh(first) = idem.begin("p", "k", &d, clock.as_ref()).await.unwrap() else {
            panic!()
        };
        let (idem2, clock2) = (idem.clone(), clock.clone());
        let waiter = tokio::spawn(async move { idem2.begin("p", "k", &d, clock2.as_ref()).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiter.is_finished(),
            "duplicate must wait for the first request"
        );
        idem.complete(first, 200, b"{}", clock.as_ref()).unwrap();
        assert!(matches!(waiter.await.unwrap().unwrap(), Begin::Replay(_)));
        // A dropped (failed) reservation leaves no record: the retry runs fresh.
        let Begin::Fresh(r) = idem.begin("p", "k2", &d, clock.as_ref()).await.unwrap() else {
            panic!()
        };
        drop(r);
        assert!(matches!(
            idem.begin("p", "k2", &d, clock.as_ref()).await.unwrap(),
            Begin::Fresh(_)
        ));
    }
}
