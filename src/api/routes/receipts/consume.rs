//! `POST /v1/receipts/consume` (receipt consumer): a provider presents a decision record and
//! the `tools/call` params as it received them, before it runs the call.
//!
//! Checks, in the order of MCP PR #2867 (the offline verifier's, then the registry):
//! authenticity (a published active receipt key, a valid signature), closed schema and
//! alg, freshness (`expSeconds` capped at one hour, the drift tolerance as skew), audience
//! (one the consumer token serves), the decision is allow (else `denied`), the projection
//! is known, the digest recomputed from the provider's own view with the nonce echoed; then
//! the appliance's own records: the decision is one it signed (`unknown_decision`) and the
//! latest under its binding (`superseded`), the policy that decided is still in force
//! (`out_of_scope`); then the single-use registry.
//!
//! A record whose digest does not match the provider's view is `digest_mismatch`, unless its
//! call binding was already consumed: then the call was changed after its admission, and the
//! answer is `out_of_scope`.
//!
//! Answers: 200 `admitted` the first time: the call binding (its nonce) and the requester's
//! action are reserved, durably and audited in one commit. A retry with the same digest,
//! tool, audience and policy: 409 RECEIPT_ALREADY_CONSUMED with the prior outcome record if
//! one was signed; the provider must not run the handler again. Any change of digest, tool,
//! audience or policy under a consumed nonce or action: 409 RECEIPT_OUT_OF_SCOPE. Every
//! other verdict: 403 RECEIPT_REFUSED. Each refusal names its `verdict`; only `admitted`
//! lets the call run, and a refusal changes nothing. With an `Idempotency-Key`, a provider
//! whose `admitted` answer was lost gets it again on its retry (the admission and its
//! idempotency record are one commit); without one, its retry is `already_consumed`.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{require_receipts, verdict_refusal};
use crate::api::AppState;
use crate::api::body::{StrictJson, parse_request};
use crate::api::error::{ApiError, ApiResult};
use crate::api::issuance::{Change, Issued};
use crate::api::receipt_book::{
    Consumption, ReceiptBook, action_key, nonce_key, policy_digest, trees,
};
use crate::api::signing::blocking;
use crate::audit::SideWrites;
use crate::clock::{SigningGate, format_rfc3339};
use crate::error::{Error, ErrorCode, Result};
use crate::events::{Actor, Event};
use crate::receipts::policy::MAX_AGE_CEILING_SECONDS;
use crate::receipts::record::decision_digest;
use crate::receipts::verify::{Expect, Verdict, admit};

/// The body of `POST /v1/receipts/consume`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumeRequest {
    /// The decision record as the provider received it.
    pub decision: Value,
    /// The `tools/call` params as the provider received them.
    pub request: Value,
}

/// What one consume came to.
#[derive(Debug)]
enum Outcome {
    /// The registry entry to commit, under the call's nonce and the requester's action.
    Admitted {
        entry: Box<Consumption>,
        nonce: String,
        requester: String,
    },
    AlreadyConsumed(Option<Value>),
    OutOfScope(&'static str),
    Refused(&'static str, &'static str),
}

/// `POST /v1/receipts/consume` (see the module documentation).
pub async fn consume(change: Change, StrictJson(body): StrictJson) -> ApiResult<Response> {
    let state = change.state.clone();
    require_receipts(&state)?;
    let ConsumeRequest { decision, request } = parse_request(&body)?;
    SigningGate::check_signing_time(state.audit().as_ref())?;
    let audiences = change.caller.principal.audiences.clone();
    let consumer = change.caller.principal.name.clone();
    // Up to two rounds: a consume that loses the registry race to a concurrent one is
    // judged again against what that one committed.
    for _ in 0..2 {
        // A verdict refusal is answered as it is (with its verdict), not as an error, and
        // is not kept for replay: it changed nothing.
        let refusal: Arc<Mutex<Option<Response>>> = Arc::default();
        let (s, d, r, a, c) = (
            state.clone(),
            decision.clone(),
            request.clone(),
            audiences.clone(),
            consumer.clone(),
        );
        let (slot, actor, s2) = (refusal.clone(), change.actor(), state.clone());
        let issued = change
            .issue(body.clone(), |_, _| async move {
                let judged = blocking(move || judge(&s, &d, &r, &a, &c)).await?;
                match judged {
                    Outcome::Admitted {
                        entry,
                        nonce,
                        requester,
                    } => admission(*entry, &nonce, &requester, actor),
                    other => {
                        *slot.lock().unwrap_or_else(PoisonError::into_inner) =
                            Some(answer(&s2, other));
                        Err(Error::new(ErrorCode::ReceiptRefused, "refused"))
                    }
                }
            })
            .await;
        if let Some(r) = refusal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            return Ok(r);
        }
        match issued {
            Err(ApiError(e)) if e.code == ErrorCode::Conflict => continue,
            Ok(r) => {
                count(&state, "admitted");
                return Ok(r);
            }
            other => return other,
        }
    }
    Err(Error::new(
        ErrorCode::Conflict,
        "the registry changed concurrently; retry",
    )
    .into())
}

/// The answer and the one append of an admission: the registry entry under the call's nonce
/// and the requester's action (each refused if present by then), and `receipt_consumed`.
fn admission(entry: Consumption, nonce: &str, requester: &str, actor: Actor) -> Result<Issued> {
    let mut writes = SideWrites::new();
    let raced = || Error::new(ErrorCode::Conflict, "consumed concurrently");
    let bytes = serde_json::to_vec(&entry)
        .map_err(|e| Error::new(ErrorCode::Internal, format!("registry entry: {e}")))?;
    writes
        .insert_new(
            trees::RECEIPT_CONSUMED,
            nonce_key(nonce),
            bytes.clone(),
            raced(),
        )
        .insert_new(
            trees::RECEIPT_CONSUMED,
            action_key(requester, &entry.action_id),
            bytes,
            raced(),
        );
    let event = Event::ReceiptConsumed {
        decision_digest: entry.decision_digest.clone(),
        action_id: entry.action_id.clone(),
        audience: entry.audience.clone(),
    };
    let body = json!({
        "verdict": "admitted",
        "decisionDigest": entry.decision_digest,
        "actionId": entry.action_id,
        "audience": entry.audience,
        "tool": entry.tool,
    });
    Ok(Issued::new(StatusCode::OK, body, actor, event, writes))
}

/// Counts an answered consume by its verdict.
fn count(state: &AppState, verdict: &str) {
    if let Some(m) = state.metrics() {
        m.receipt_verdict(verdict);
    }
}

fn answer(state: &AppState, o: Outcome) -> Response {
    let verdict = match &o {
        Outcome::AlreadyConsumed(_) => "already_consumed",
        Outcome::OutOfScope(_) => "out_of_scope",
        Outcome::Refused(v, _) => v,
        Outcome::Admitted { .. } => "internal",
    };
    count(state, verdict);
    match o {
        Outcome::AlreadyConsumed(outcome) => verdict_refusal(
            ErrorCode::ReceiptAlreadyConsumed,
            "already_consumed",
            "this call was already admitted once; do not run it again",
            outcome.as_ref(),
        ),
        Outcome::OutOfScope(why) => {
            verdict_refusal(ErrorCode::ReceiptOutOfScope, "out_of_scope", why, None)
        }
        Outcome::Refused(verdict, why) => {
            verdict_refusal(ErrorCode::ReceiptRefused, verdict, why, None)
        }
        Outcome::Admitted { .. } => {
            verdict_refusal(ErrorCode::Internal, "internal", "internal error", None)
        }
    }
}

/// Every check but the commit, on a blocking thread.
fn judge(
    state: &AppState,
    decision: &Value,
    request: &Value,
    audiences: &[String],
    consumer: &str,
) -> Result<Outcome> {
    let keys = ReceiptBook::receipt_keys(state.registry().as_ref())?;
    let now = state.clock().now();
    // The audience check passes only for an audience this token serves.
    let record_aud = decision["issuerAsserted"]["aud"].as_str();
    let audience = record_aud
        .filter(|a| audiences.iter().any(|x| x == a))
        .or(audiences.first().map(String::as_str));
    let expect = Expect {
        now,
        max_age: Duration::from_secs(MAX_AGE_CEILING_SECONDS),
        skew: state.config().drift,
        audience,
    };
    let d = match admit(decision, &keys, &expect, request) {
        Ok(d) => d,
        // The record is authentic and fresh, but the call differs from the one decided
        // (arguments, tool): once that call was consumed, this is a change of scope, not a
        // mere mismatch.
        Err(Verdict::DigestMismatch) if consumed_nonce(state, decision)?.is_some() => {
            return Ok(Outcome::OutOfScope(
                "this call binding was consumed for another digest or tool",
            ));
        }
        Err(v) => {
            return Ok(Outcome::Refused(
                v.as_str(),
                "the decision record was refused",
            ));
        }
    };
    let digest = decision_digest(decision)
        .ok_or_else(|| Error::new(ErrorCode::Internal, "decision digest"))?;
    let book = state.receipts();
    let Some(stored) = book.decision(&digest)? else {
        return Ok(Outcome::Refused(
            "unknown_decision",
            "this appliance holds no such decision",
        ));
    };
    if book.latest_under(&stored.binding)?.as_deref() != Some(digest.as_str()) {
        return Ok(Outcome::Refused(
            "superseded",
            "a later decision under the same call binding supersedes this one",
        ));
    }
    let policy_id = d.decision_derived.policy_id.clone().unwrap_or_default();
    let current = book.policy()?.map(|(p, _)| policy_digest(&p)).transpose()?;
    if current.as_deref() != Some(policy_id.as_str()) {
        return Ok(Outcome::OutOfScope(
            "the receipt policy changed since this decision",
        ));
    }
    let entry = Consumption {
        decision_digest: digest,
        attestation_digest: d.back_link.attestation_digest.clone(),
        tool: stored.tool.clone(),
        audience: stored.audience.clone(),
        policy_id,
        action_id: stored.action_id.clone(),
        consumer: consumer.to_string(),
        consumed_at: format_rfc3339(now),
    };
    for key in [
        nonce_key(&d.back_link.attestation_nonce),
        action_key(&stored.requester, &stored.action_id),
    ] {
        if let Some(prior) = book.consumption(&key)? {
            if !prior.same_call(&entry) {
                return Ok(Outcome::OutOfScope(
                    "this call binding or action was consumed for another digest, tool, \
                     audience or policy",
                ));
            }
            let outcome = book.outcome(&prior.decision_digest)?.map(|o| o.record);
            return Ok(Outcome::AlreadyConsumed(outcome));
        }
    }
    Ok(Outcome::Admitted {
        entry: Box::new(entry),
        nonce: d.back_link.attestation_nonce,
        requester: stored.requester,
    })
}

/// The registry entry of an authentic decision record's binding nonce, if consumed.
fn consumed_nonce(state: &AppState, decision: &Value) -> Result<Option<Consumption>> {
    match decision["backLink"]["attestationNonce"].as_str() {
        Some(nonce) => state.receipts().consumption(&nonce_key(nonce)),
        None => Ok(None),
    }
}
