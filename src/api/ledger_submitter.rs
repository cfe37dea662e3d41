//! The XRPL submitter (`serve --xrpl-rpc URL`): a background task that sends the outbox's
//! signed transactions to a rippled JSON-RPC endpoint in sequence order and follows them to
//! a validated ledger.
//!
//! Each round (every `--xrpl-poll-ms`):
//! 1. reads the PA's account (quietly skipped while none is configured) and its `Sequence`
//!    L in the current ledger (`account_info`; an unfunded account is warned about once);
//! 2. moves the counter up to L when it is behind (`ledger_sequence_set`, source `ledger`);
//! 3. for each pending transaction in sequence order: a `submitted` one, or a `signed` one
//!    whose sequence is below L, is looked up by hash (`tx`): validated with `tesSUCCESS`
//!    becomes `validated`, with another result `failed`; one the ledger knows but has not
//!    validated yet becomes `submitted` (a SIGKILL between submission and recording is so
//!    harmless: nothing is sent twice). One whose sequence is below L and whose hash the
//!    ledger does not know lost its sequence to someone else: it is re-signed with the
//!    counter's next sequence, moving the counter in the same append
//!    (`ledger_tx_resigned`);
//! 4. when the lowest pending sequence is above L and nothing of ours can fill the gap
//!    (the counter was set too high, a transaction failed without consuming its sequence),
//!    the pending ones are re-signed downward from L, the counter following;
//! 5. submits the `signed` ones strictly in sequence order (re-signing first with the open
//!    ledger's fee when it is higher than theirs, up to 10x `--xrpl-fee-drops`):
//!    `tesSUCCESS`, `tec*` and `terQUEUED` make it `submitted`; `tefPAST_SEQ` is checked by
//!    hash next round; `terPRE_SEQ` ends the round; other `tel*`/`ter*` keep it `signed`
//!    for a later round; `tem*`, other `tef*` and `invalidTransaction` make it `failed`.
//!
//! Every state change is one audit append with its writes (the entry, its pending index,
//! the counter). The ledger lock ([`super::ledger_book::LedgerBook::lock`]) is taken only
//! for re-signing and counter moves, the counter read again under it; never across a
//! network call. An unreachable endpoint (connect error, HTTP 5xx, 5 s timeout) backs off
//! exponentially from the poll interval up to 30 s, with one warning per outage.

use std::time::Duration;

use super::AppState;
use super::ledger_book::{AccountState, LedgerTx, TxState};
use super::ledger_rpc::{LedgerRpc, RpcError};
use super::signing::{blocking, commit, signing_hop};
use crate::audit::SideWrites;
use crate::clock::format_rfc3339;
use crate::error::{Error, ErrorCode, Result};
use crate::events::{Actor, Event};

/// Longest pause between rounds while the endpoint is down.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Settings of the submitter.
#[derive(Debug, Clone)]
pub struct SubmitterConfig {
    /// The JSON-RPC endpoint.
    pub endpoint: String,
    /// Pause between rounds.
    pub poll: Duration,
}

/// Why a round stopped early.
#[derive(Debug)]
enum Stop {
    /// The endpoint is unreachable: back off.
    Down(String),
    /// The account is not funded yet: back off.
    NotFunded,
    /// Something else (a store or HSM error, an unexpected answer): retried next round.
    Other(String),
}

impl From<RpcError> for Stop {
    fn from(e: RpcError) -> Stop {
        match e {
            RpcError::Down(m) => Stop::Down(m),
            other => Stop::Other(other.to_string()),
        }
    }
}

impl From<Error> for Stop {
    fn from(e: Error) -> Stop {
        Stop::Other(e.to_string())
    }
}

type Round<T> = std::result::Result<T, Stop>;

/// Runs the submitter until the task is dropped or aborted.
pub async fn run(state: AppState, config: SubmitterConfig) {
    let rpc = match LedgerRpc::new(&config.endpoint) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(cause = %e.message, "XRPL submitter not started");
            eprintln!("XRPL submitter not started: {e}");
            return;
        }
    };
    state.ledger().set_submitter_status(|s| {
        s.endpoint = config.endpoint.clone();
    });
    let mut s = Submitter {
        state,
        rpc,
        down: false,
        unfunded_warned: false,
    };
    let poll = config.poll.max(Duration::from_millis(10));
    let mut backoff = poll;
    loop {
        let pause = match s.round().await {
            Ok(()) => {
                if s.down {
                    s.down = false;
                    tracing::info!(endpoint = s.rpc.url(), "XRPL endpoint reachable again");
                }
                backoff = poll;
                s.contact(None);
                poll
            }
            Err(Stop::Down(m)) => {
                if !s.down {
                    s.down = true;
                    tracing::warn!(endpoint = s.rpc.url(), cause = %m, "XRPL endpoint unreachable; backing off");
                }
                s.state
                    .ledger()
                    .set_submitter_status(|st| st.last_error = Some(m.clone()));
                let now = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                now
            }
            Err(Stop::NotFunded) => {
                s.contact(Some("account not funded".into()));
                let now = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                now
            }
            Err(Stop::Other(m)) => {
                tracing::warn!(cause = %m, "XRPL submitter round failed; retrying");
                s.contact(Some(m));
                poll
            }
        };
        tokio::time::sleep(pause).await;
    }
}

struct Submitter {
    state: AppState,
    rpc: LedgerRpc,
    down: bool,
    unfunded_warned: bool,
}

/// How the ledger answered a submission.
enum Verdict {
    Submitted,
    CheckLater,
    StopRound,
    Retry,
    Failed,
}

fn judge(engine: &str) -> Verdict {
    match engine {
        "tesSUCCESS" | "terQUEUED" => Verdict::Submitted,
        e if e.starts_with("tec") => Verdict::Submitted,
        "tefPAST_SEQ" => Verdict::CheckLater,
        "terPRE_SEQ" => Verdict::StopRound,
        e if e.starts_with("tel") || e.starts_with("ter") => Verdict::Retry,
        _ => Verdict::Failed,
    }
}

impl Submitter {
    fn contact(&self, error: Option<String>) {
        let at = format_rfc3339(self.state.clock().now());
        self.state.ledger().set_submitter_status(|s| {
            s.last_contact = Some(at);
            s.last_error = error;
        });
    }

    fn count(&self, result: &str) {
        if let Some(m) = self.state.metrics() {
            m.ledger_submission(result);
        }
    }

    async fn load(&self, id: &str) -> Result<Option<(Vec<u8>, LedgerTx)>> {
        let (s, id) = (self.state.clone(), id.to_string());
        blocking(move || s.ledger().get(&id)).await
    }

    async fn pending(&self, account: &str) -> Result<Vec<(Vec<u8>, LedgerTx)>> {
        let (s, account) = (self.state.clone(), account.to_string());
        blocking(move || {
            let mut out = Vec::new();
            for id in s.ledger().pending(&account)? {
                if let Some(x) = s.ledger().get(&id)? {
                    out.push(x);
                }
            }
            Ok(out)
        })
        .await
    }

    /// Commits the change of `old` (read as `raw`) to `new` as one append of `event`, with
    /// `extra` writes (a counter move).
    async fn commit_change(
        &self,
        raw: Vec<u8>,
        old: &LedgerTx,
        new: &LedgerTx,
        event: Event,
        extra: Option<SideWrites>,
    ) -> Result<()> {
        let mut writes = self.state.ledger().update_writes(raw, old, new)?;
        if let Some(x) = extra {
            writes.extend(x);
        }
        commit(&self.state, &Actor::system(), event, writes).await?;
        Ok(())
    }

    /// Records a new state of `old`.
    async fn set_state(
        &self,
        raw: Vec<u8>,
        old: &LedgerTx,
        state: TxState,
        result: Option<String>,
        ledger_index: Option<u32>,
    ) -> Result<()> {
        let mut new = old.clone();
        new.state = state;
        if result.is_some() {
            new.result = result.clone();
        }
        if ledger_index.is_some() {
            new.ledger_index = ledger_index;
        }
        new.updated_at = format_rfc3339(self.state.clock().now());
        if new == *old {
            return Ok(());
        }
        let event = Event::LedgerTxUpdated {
            id: new.id.clone(),
            hash: new.hash.clone(),
            state: state.as_str().into(),
            result: new.result.clone(),
            ledger_index: new.ledger_index,
        };
        self.commit_change(raw, old, &new, event, None).await
    }

    /// Re-signs `id` with `sequence` (or with the counter's next when `None`, moving the
    /// counter) and `fee`, under the ledger lock; `counter_to` sets the counter in the same
    /// append (downward re-signing).
    async fn resign(
        &self,
        id: &str,
        sequence: Option<u32>,
        fee: Option<u64>,
        counter_to: Option<u32>,
    ) -> Result<()> {
        let _guard = self.state.ledger().lock().clone().lock_owned().await;
        let Some((raw, old)) = self.load(id).await? else {
            return Ok(());
        };
        if old.state.is_final() {
            return Ok(());
        }
        let s = self.state.clone();
        let now = self.state.clock().now();
        let read_old = old.clone();
        let (new, counter) = signing_hop(move || {
            let old = read_old;
            let book = s.ledger();
            let (read, mut counter) = book.account_state(&old.account)?;
            let seq = match sequence {
                Some(q) => q,
                None => counter.next_sequence,
            };
            let mut base = old.clone();
            if let Some(f) = fee {
                base.fee = f.to_string();
            }
            let new = book.resign(s.keys().as_ref(), &base, seq, None, now)?;
            let moved =
                match (sequence, counter_to) {
                    (None, _) => Some(seq.checked_add(1).ok_or_else(|| {
                        Error::new(ErrorCode::Internal, "account sequence overflow")
                    })?),
                    (Some(_), Some(to)) => Some(to),
                    (Some(_), None) => None,
                };
            let counter = match moved {
                Some(next) if next != counter.next_sequence => {
                    counter.next_sequence = next;
                    counter.source = "ledger".into();
                    counter.updated_at = Some(format_rfc3339(now));
                    let mut w = SideWrites::new();
                    book.counter_write(&mut w, &old.account, read, &counter)?;
                    Some(w)
                }
                _ => None,
            };
            Ok((new, counter))
        })
        .await?;
        let event = Event::LedgerTxResigned {
            id: new.id.clone(),
            replaced_hash: old.hash.clone(),
            hash: new.hash.clone(),
            sequence: new.sequence,
        };
        tracing::info!(id = %new.id, old = %old.hash, new = %new.hash, sequence = new.sequence, "XRPL transaction re-signed");
        self.commit_change(raw, &old, &new, event, counter).await
    }

    /// Moves the counter up to `l` when it is behind, under the ledger lock.
    async fn sync_counter(&self, account: &str, l: u32) -> Result<()> {
        let (s, a) = (self.state.clone(), account.to_string());
        let (_, now_state) = blocking(move || s.ledger().account_state(&a)).await?;
        if now_state.next_sequence >= l {
            return Ok(());
        }
        let _guard = self.state.ledger().lock().clone().lock_owned().await;
        let (s, a) = (self.state.clone(), account.to_string());
        let (read, counter) = blocking(move || s.ledger().account_state(&a)).await?;
        if counter.next_sequence >= l {
            return Ok(());
        }
        self.commit_counter(account, read, l).await?;
        tracing::info!(
            account,
            sequence = l,
            "XRPL account counter set from the ledger"
        );
        Ok(())
    }

    async fn round(&mut self) -> Round<()> {
        let s = self.state.clone();
        let account = match blocking(move || s.ledger().account(s.keys().as_ref())).await {
            Ok(a) => a.address,
            Err(e) if e.code == ErrorCode::LedgerNotConfigured => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let l = match self.rpc.account_sequence(&account).await {
            Ok(l) => l,
            Err(RpcError::Rpc { error, .. }) if error == "actNotFound" => {
                if !self.unfunded_warned {
                    self.unfunded_warned = true;
                    tracing::warn!(account = %account, "XRPL account not funded; waiting");
                    eprintln!("warning: XRPL account {account} not funded; waiting");
                }
                return Err(Stop::NotFunded);
            }
            Err(e) => return Err(e.into()),
        };
        self.unfunded_warned = false;
        self.sync_counter(&account, l).await?;

        // Follow what was sent, and find what lost its sequence.
        for (raw, tx) in self.pending(&account).await? {
            let look = tx.state == TxState::Submitted || tx.sequence < l;
            if !look {
                continue;
            }
            match self.rpc.tx(&tx.hash).await? {
                Some(st) if st.validated => {
                    let result = st.result.unwrap_or_else(|| "unknown".into());
                    let final_state = if result == "tesSUCCESS" {
                        TxState::Validated
                    } else {
                        TxState::Failed
                    };
                    self.set_state(raw, &tx, final_state, Some(result), st.ledger_index)
                        .await?;
                }
                Some(_) if tx.state == TxState::Signed => {
                    // Known to the ledger but not validated yet: sent before a crash.
                    self.set_state(raw, &tx, TxState::Submitted, None, None)
                        .await?;
                }
                Some(_) => {}
                None if tx.sequence < l => {
                    // Its sequence was consumed by another transaction: sign it again.
                    self.resign(&tx.id, None, None, None).await?;
                }
                None => {}
            }
        }

        // A gap below our lowest pending sequence that nothing of ours fills.
        let pending = self.pending(&account).await?;
        if let Some((_, lowest)) = pending.first()
            && lowest.sequence > l
            && !pending.iter().any(|(_, t)| t.state == TxState::Submitted)
        {
            let n = u32::try_from(pending.len()).unwrap_or(u32::MAX);
            let last = pending.len() - 1;
            for (i, (_, tx)) in pending.iter().enumerate() {
                let seq = l.saturating_add(u32::try_from(i).unwrap_or(u32::MAX));
                let counter_to = (i == last).then(|| l.saturating_add(n));
                if tx.sequence != seq {
                    self.resign(&tx.id, Some(seq), None, counter_to).await?;
                } else if let Some(to) = counter_to {
                    self.set_counter_down(&account, to).await?;
                }
            }
        }

        // Submit in sequence order.
        let fee_cap = self.state.config().ledger.fee_drops.saturating_mul(10);
        let open_fee = self.rpc.open_ledger_fee().await?;
        for id in self.pending(&account).await?.into_iter().map(|(_, t)| t.id) {
            let Some((mut raw, mut tx)) = self.load(&id).await? else {
                continue;
            };
            if tx.state != TxState::Signed {
                continue;
            }
            let fee: u64 = tx.fee.parse().unwrap_or(0);
            if open_fee > fee {
                if open_fee <= fee_cap {
                    self.resign(&id, Some(tx.sequence), Some(open_fee), None)
                        .await?;
                    match self.load(&id).await? {
                        Some(x) => (raw, tx) = x,
                        None => continue,
                    }
                } else {
                    tracing::warn!(id = %id, fee, open_fee, cap = fee_cap, "XRPL open-ledger fee above the cap; submitting at the signed fee");
                }
            }
            let engine = match self.rpc.submit(&tx.tx_blob).await {
                Ok(e) => e,
                Err(RpcError::Rpc { error, message }) if error == "invalidTransaction" => {
                    self.count("invalidTransaction");
                    tracing::error!(id = %id, cause = %message, "XRPL transaction refused as invalid");
                    self.set_state(
                        raw,
                        &tx,
                        TxState::Failed,
                        Some("invalidTransaction".into()),
                        None,
                    )
                    .await?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            self.count(&engine);
            match judge(&engine) {
                Verdict::Submitted => {
                    self.set_state(raw, &tx, TxState::Submitted, Some(engine), None)
                        .await?;
                }
                Verdict::CheckLater | Verdict::StopRound => break,
                Verdict::Retry => {
                    tracing::info!(id = %id, engine = %engine, "XRPL submission to retry");
                    break;
                }
                Verdict::Failed => {
                    tracing::warn!(id = %id, engine = %engine, "XRPL transaction failed");
                    self.set_state(raw, &tx, TxState::Failed, Some(engine), None)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Sets the counter to `to` (after downward re-signing that left the last one in place).
    async fn set_counter_down(&self, account: &str, to: u32) -> Result<()> {
        let _guard = self.state.ledger().lock().clone().lock_owned().await;
        let (s, a) = (self.state.clone(), account.to_string());
        let (read, counter) = blocking(move || s.ledger().account_state(&a)).await?;
        if counter.next_sequence == to {
            return Ok(());
        }
        self.commit_counter(account, read, to).await
    }

    /// Commits the counter of `account` (read as `read`) set to `to` from the ledger, as one
    /// audited append (`ledger_sequence_set`, source `ledger`). Hold the ledger lock.
    async fn commit_counter(&self, account: &str, read: Option<Vec<u8>>, to: u32) -> Result<()> {
        let state = AccountState {
            next_sequence: to,
            source: "ledger".into(),
            updated_at: Some(format_rfc3339(self.state.clock().now())),
        };
        let mut writes = SideWrites::new();
        self.state
            .ledger()
            .counter_write(&mut writes, account, read, &state)?;
        commit(
            &self.state,
            &Actor::system(),
            Event::LedgerSequenceSet {
                account: account.to_string(),
                sequence: to,
                source: "ledger".into(),
            },
            writes,
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_results_are_judged() {
        assert!(matches!(judge("tesSUCCESS"), Verdict::Submitted));
        assert!(matches!(judge("tecDUPLICATE"), Verdict::Submitted));
        assert!(matches!(judge("terQUEUED"), Verdict::Submitted));
        assert!(matches!(judge("tefPAST_SEQ"), Verdict::CheckLater));
        assert!(matches!(judge("terPRE_SEQ"), Verdict::StopRound));
        assert!(matches!(judge("telINSUF_FEE_P"), Verdict::Retry));
        assert!(matches!(judge("terNO_ACCOUNT"), Verdict::Retry));
        assert!(matches!(judge("temMALFORMED"), Verdict::Failed));
        assert!(matches!(judge("tefMAX_LEDGER"), Verdict::Failed));
    }
}
