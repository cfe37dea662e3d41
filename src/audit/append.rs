//! Appends that carry side writes: an audit entry committed in one sled transaction, and
//! made durable by the same group-commit flush, together with the records that go with it
//! (an issued artifact, an idempotency record, a revocation, a single-use receipt, ...).
//!
//! After a crash either the entry and every one of its side writes exist, or none of them
//! does, so no caller can observe a record without its audit entry or the reverse. Each side
//! write carries a precondition checked inside the transaction (the key is absent, or holds
//! exactly the bytes the caller read); if one fails, that append alone is refused with the
//! error its caller supplied and nothing of it is written, while the other appends of the
//! batch commit normally.
//!
//! Side writes may only target service trees: the log refuses any write into an `audit/`
//! tree, so no code path can update or delete a stored audit entry through this facility.
//!
//! The side-write types, [`AppendTicket`] and [`AuditSink`] are defined in
//! [`crate::seams::audit_sink`] and re-exported here; this module adds what is sled's: how a
//! write is applied inside the commit's transaction, and the queued [`Append`].

use sled::transaction::{TransactionalTree, UnabortableTransactionError};

use crate::events::{Actor, Event};
pub use crate::seams::audit_sink::{
    AUDIT_TREE_PREFIX, AppendTicket, AuditSink, Expect, SideWrite, SideWrites,
};

impl SideWrite {
    /// Applies the write (its precondition already checked) in the commit's transaction.
    pub fn apply(
        &self,
        tree: &TransactionalTree,
    ) -> std::result::Result<(), UnabortableTransactionError> {
        match &self.value {
            Some(v) => tree.insert(self.key.as_slice(), v.as_slice())?,
            None => tree.remove(self.key.as_slice())?,
        };
        Ok(())
    }
}

/// One queued append: the event, who caused it, and its side writes.
#[derive(Debug, Clone)]
pub struct Append {
    /// Who caused the event.
    pub actor: Actor,
    /// What happened.
    pub event: Event,
    /// Records committed with the entry.
    pub writes: SideWrites,
    /// The caller's tracing span (the request's, in the service): the log line of a change
    /// is written in it, so that it carries the request id.
    pub span: tracing::Span,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Error, ErrorCode, Result};
    use tokio::sync::oneshot;

    #[test]
    fn audit_trees_and_duplicate_keys_are_refused() {
        let e = || Error::new(ErrorCode::Conflict, "x");
        let mut w = SideWrites::new();
        w.insert_new("api/grants", "g", "v", e());
        w.swap("api/idempotency", "k", Some(b"old".to_vec()), "new", e());
        w.check().unwrap();
        let mut dup = w.clone();
        dup.insert_new("api/grants", "g", "v2", e());
        assert!(dup.check().unwrap_err().message.contains("two side writes"));
        let mut dup = w.clone();
        dup.remove("api/idempotency", "k", b"old".to_vec(), e());
        assert!(dup.check().unwrap_err().message.contains("two side writes"));
        for tree in [
            crate::store::trees::AUDIT_ENTRIES,
            crate::store::trees::AUDIT_META,
            crate::store::trees::AUDIT_NODES,
            crate::store::trees::AUDIT_LEAF_INDEX,
            crate::store::trees::AUDIT_LEAF_BUCKETS,
            crate::store::trees::AUDIT_CHECKPOINTS,
        ] {
            let mut bad = SideWrites::new();
            bad.insert_new(tree, "k", "v", e());
            assert!(
                bad.check().unwrap_err().message.contains("refused"),
                "{tree}"
            );
            let mut bad = SideWrites::new();
            bad.remove(tree, "k", b"v".to_vec(), e());
            assert!(
                bad.check().unwrap_err().message.contains("refused"),
                "{tree}"
            );
        }
    }

    fn grant_event(id: &str) -> Event {
        Event::GrantIssued {
            grant_id: id.into(),
            issuer_key_id: "k".into(),
            policy_hash: "00".into(),
            request_digest: "11".into(),
            credential_tx: None,
        }
    }

    fn open_log(store: &crate::store::Store) -> std::sync::Arc<crate::audit::AuditLog> {
        std::sync::Arc::new(
            crate::audit::AuditLog::open(
                store,
                crate::audit::AuditConfig::new("pa.test/audit"),
                std::sync::Arc::new(crate::clock::SystemClock),
            )
            .unwrap(),
        )
    }

    /// Concurrent appends race for the same keys: per key exactly one commits with its
    /// writes and its entry, the others are refused with their own error and leave nothing;
    /// indices stay contiguous and the Merkle tree matches the stored entries.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn side_writes_commit_with_their_entry_or_not_at_all() {
        let store = crate::store::Store::temporary().unwrap();
        let log = open_log(&store);
        let actor = Actor::system();
        let conflict = |k: &str| Error::field(ErrorCode::Conflict, "grantId", k.to_string());
        let mut tickets = Vec::new();
        for round in 0..4 {
            for k in 0..16 {
                let id = format!("g-{k}");
                let mut w = SideWrites::new();
                w.insert_new("test/grants", id.clone(), format!("{round}"), conflict(&id));
                w.swap(
                    "test/idem",
                    format!("key-{round}-{k}"),
                    None,
                    id.clone(),
                    conflict("idem"),
                );
                tickets.push((id.clone(), round, log.append(&actor, grant_event(&id), w)));
            }
        }
        let mut won = std::collections::HashMap::new();
        let mut indices = Vec::new();
        for (id, round, t) in tickets {
            match t.await {
                Ok(i) => {
                    assert!(won.insert(id.clone(), (round, i)).is_none(), "{id} twice");
                    indices.push(i);
                }
                Err(e) => assert_eq!((e.code, e.message), (ErrorCode::Conflict, id)),
            }
        }
        assert_eq!(won.len(), 16);
        indices.sort_unstable();
        assert_eq!(indices, (0..16).collect::<Vec<u64>>());
        assert_eq!(log.size(), 16);
        let grants = store.tree("test/grants").unwrap();
        let idem = store.tree("test/idem").unwrap();
        assert_eq!((grants.len(), idem.len()), (16, 16));
        let mut tree = crate::audit::merkle::MemoryTree::new();
        for (i, raw) in log.entries(0, 16).unwrap().iter().enumerate() {
            tree.push(crate::audit::merkle::leaf_hash(raw));
            let e: crate::audit::Entry = serde_json::from_slice(raw).unwrap();
            let Event::GrantIssued { grant_id, .. } = e.event else {
                panic!()
            };
            // The winner's own writes are the ones stored.
            let (round, index) = won[&grant_id];
            assert_eq!(index, i as u64);
            assert_eq!(
                grants.get(&grant_id).unwrap().unwrap().as_ref(),
                round.to_string().as_bytes()
            );
            assert_eq!(
                idem.get(format!("key-{round}-{}", &grant_id[2..]))
                    .unwrap()
                    .unwrap()
                    .as_ref(),
                grant_id.as_bytes()
            );
        }
        assert_eq!(log.root(16).unwrap(), tree.root());

        // A swap applies only over exactly the bytes read.
        let mut w = SideWrites::new();
        w.swap(
            "test/grants",
            "g-0",
            Some(b"stale".to_vec()),
            "x",
            conflict("swap"),
        );
        let e = log.append(&actor, grant_event("s"), w).await.unwrap_err();
        assert_eq!(e.message, "swap");
        let current = grants.get("g-0").unwrap().unwrap().to_vec();
        let mut w = SideWrites::new();
        w.swap(
            "test/grants",
            "g-0",
            Some(current),
            "revoked",
            conflict("swap"),
        );
        assert_eq!(log.append(&actor, grant_event("s"), w).await.unwrap(), 16);
        assert_eq!(grants.get("g-0").unwrap().unwrap().as_ref(), b"revoked");

        // A removal applies only over exactly the bytes read, and never to an absent key.
        for stale in [b"stale".to_vec(), b"revoked!".to_vec()] {
            let mut w = SideWrites::new();
            w.remove("test/grants", "g-0", stale, conflict("remove"));
            let e = log.append(&actor, grant_event("r"), w).await.unwrap_err();
            assert_eq!(e.message, "remove");
        }
        assert_eq!(grants.get("g-0").unwrap().unwrap().as_ref(), b"revoked");
        assert_eq!(log.size(), 17);
        // The removal of g-0's current bytes, refused with `why`.
        let remove_revoked = |why: &str| {
            let mut w = SideWrites::new();
            w.remove("test/grants", "g-0", b"revoked".to_vec(), conflict(why));
            w
        };
        // Removed together with another write and the entry, or not at all.
        let mut w = remove_revoked("remove");
        w.insert_new("test/grants", "g-1", "x", conflict("taken"));
        let e = log.append(&actor, grant_event("r"), w).await.unwrap_err();
        assert_eq!(e.message, "taken");
        assert_eq!(grants.get("g-0").unwrap().unwrap().as_ref(), b"revoked");
        let w = remove_revoked("remove");
        assert_eq!(log.append(&actor, grant_event("r"), w).await.unwrap(), 17);
        assert!(grants.get("g-0").unwrap().is_none());
        let w = remove_revoked("gone");
        let e = log.append(&actor, grant_event("r"), w).await.unwrap_err();
        assert_eq!(e.message, "gone");

        // The log's own trees are out of reach.
        let mut w = SideWrites::new();
        w.insert_new(
            crate::store::trees::AUDIT_ENTRIES,
            99u64.to_be_bytes().to_vec(),
            "forged",
            conflict("x"),
        );
        let e = log.append(&actor, grant_event("f"), w).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::Internal);
        assert_eq!(log.size(), 18);
        assert!(log.failed().is_none());

        // The log reopens and checks out.
        drop(log);
        let log = open_log(&store);
        assert_eq!(log.size(), 18);
    }

    #[test]
    fn tickets_can_be_waited_for_on_a_thread() {
        assert_eq!(AppendTicket::ready(Ok(3)).wait().unwrap(), 3);
        let (tx, rx) = oneshot::channel();
        let answer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            tx.send(Ok(9)).unwrap();
        });
        assert_eq!(AppendTicket::waiting(rx).wait().unwrap(), 9);
        answer.join().unwrap();
        let (tx, rx) = oneshot::channel::<Result<u64>>();
        std::thread::spawn(move || drop(tx));
        assert_eq!(
            AppendTicket::waiting(rx).wait().unwrap_err().code,
            ErrorCode::AuditUnavailable
        );
        // Against the real log, from a plain thread.
        let store = crate::store::Store::temporary().unwrap();
        let log = open_log(&store);
        let mut w = SideWrites::new();
        w.insert_new(
            "test/grants",
            "g",
            "v",
            Error::new(ErrorCode::Conflict, "x"),
        );
        let t = log.append(&Actor::system(), grant_event("g"), w);
        assert_eq!(t.wait().unwrap(), 0);
        assert_eq!(log.size(), 1);
    }
}
