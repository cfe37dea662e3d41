//! `POST /v1/receipts/outcomes` (receipt consumer): after an admitted consume, the provider
//! reports what the call did, and the appliance signs the outcome record.
//!
//! The body names the decision (`decisionDigest`), the `status` (executed, refused,
//! errored) and optionally a `resultCommitment` `{projectionDigest, projection?}` (the
//! digest is checked against the projection when both are given). The outcome record
//! carries the decision's backLink unchanged and `decisionDigest`; it is signed once per
//! decision: the same report again answers 200 with the stored record byte for byte, a
//! different one 409 RECEIPT_OUTCOME_EXISTS. Only the consumer of an audience the decision
//! is for may report, and only after the decision was admitted (409 RECEIPT_NOT_CONSUMED).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::require_receipts;
use crate::api::AppState;
use crate::api::auth::Caller;
use crate::api::body::{StrictJson, parse_request};
use crate::api::error::{ApiError, ApiResult};
use crate::api::receipt_book::{StoredOutcome, nonce_key, trees};
use crate::api::respond::bytes_response;
use crate::api::signing::{blocking, commit, sign_receipt_with_active, signing_hop};
use crate::audit::SideWrites;
use crate::canonical::canonical_bytes;
use crate::clock::{SigningGate, format_rfc3339};
use crate::error::{Error, ErrorCode, Result};
use crate::events::Event;
use crate::keys::KeyRole;
use crate::receipts::projection::{is_tagged_digest, sha256_tagged};
use crate::receipts::record::{OutcomeStatus, RECORD_VERSION};

/// The body of `POST /v1/receipts/outcomes`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutcomeRequest {
    /// The decision the call ran under.
    pub decision_digest: String,
    /// What happened: executed, refused or errored.
    pub status: String,
    /// A commitment to the result or error.
    #[serde(default)]
    pub result_commitment: Option<ResultCommitment>,
}

/// A commitment to a call's result: its digest, and optionally the committed projection.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResultCommitment {
    /// `sha256:` of `projection` (or of a result the provider keeps).
    pub projection_digest: String,
    /// The committed projection of the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projection: Option<String>,
}

fn check_commitment(c: &ResultCommitment) -> Result<()> {
    let field = "resultCommitment.projectionDigest";
    if !is_tagged_digest(&c.projection_digest) {
        return Err(Error::field(
            ErrorCode::SchemaInvalid,
            field,
            "projectionDigest must be sha256: and 64 lowercase hex",
        ));
    }
    if let Some(p) = &c.projection
        && sha256_tagged(p.as_bytes()) != c.projection_digest
    {
        return Err(Error::field(
            ErrorCode::SchemaInvalid,
            field,
            "projectionDigest is not the SHA-256 of projection",
        ));
    }
    Ok(())
}

/// `POST /v1/receipts/outcomes` (see the module documentation).
pub async fn report(
    State(state): State<AppState>,
    caller: Caller,
    StrictJson(body): StrictJson,
) -> ApiResult<Response> {
    require_receipts(&state)?;
    let req: OutcomeRequest = parse_request(&body)?;
    let status: OutcomeStatus = serde_json::from_value(json!(req.status)).map_err(|_| {
        Error::field(
            ErrorCode::SchemaInvalid,
            "status",
            "status must be executed, refused or errored",
        )
    })?;
    if !is_tagged_digest(&req.decision_digest) {
        return Err(Error::field(
            ErrorCode::SchemaInvalid,
            "decisionDigest",
            "decisionDigest must be sha256: and 64 lowercase hex",
        )
        .into());
    }
    if let Some(c) = &req.result_commitment {
        check_commitment(c)?;
    }
    SigningGate::check_signing_time(state.audit().as_ref())?;
    let mut report = json!({"status": status});
    if let Some(c) = &req.result_commitment {
        report["resultCommitment"] = serde_json::to_value(c)
            .map_err(|e| Error::new(ErrorCode::Internal, format!("commitment: {e}")))?;
    }
    let digest = req.decision_digest.clone();
    let audiences = caller.principal.audiences.clone();
    let s = state.clone();
    let r = report.clone();
    let prepared = blocking(move || prepare(&s, &digest, &audiences, &r)).await?;
    let unsigned = match prepared {
        Prepared::Replay(bytes) => return Ok(bytes_response(StatusCode::OK, bytes)),
        Prepared::Sign(unsigned) => unsigned,
    };
    let keys = state.keys().clone();
    let (record, kid) = signing_hop(move || {
        sign_receipt_with_active(
            keys.as_ref(),
            KeyRole::ReceiptSigning,
            "receiptAsserted",
            unsigned,
        )
    })
    .await?;
    let stored = StoredOutcome {
        record: record.clone(),
        report: report.clone(),
    };
    let mut writes = SideWrites::new();
    writes.insert_new(
        trees::RECEIPT_OUTCOMES,
        req.decision_digest.clone(),
        serde_json::to_vec(&stored)
            .map_err(|e| Error::new(ErrorCode::Internal, format!("outcome: {e}")))?,
        Error::new(ErrorCode::Conflict, "outcome reported concurrently"),
    );
    let event = Event::ReceiptOutcomeSigned {
        decision_digest: req.decision_digest.clone(),
        status: report["status"].as_str().unwrap_or_default().to_string(),
        secret_version: kid,
    };
    match commit(&state, &caller.actor(), event, writes).await {
        Ok(_) => {
            if let Some(m) = state.metrics() {
                m.receipt_outcome();
            }
            Ok(bytes_response(
                StatusCode::CREATED,
                canonical_bytes(&record)?,
            ))
        }
        // A concurrent report of the same decision committed first: answer as a replay.
        Err(e) if e.code == ErrorCode::Conflict => {
            let s = state.clone();
            let d = req.decision_digest.clone();
            let a = caller.principal.audiences.clone();
            match blocking(move || prepare(&s, &d, &a, &report)).await? {
                Prepared::Replay(bytes) => Ok(bytes_response(StatusCode::OK, bytes)),
                Prepared::Sign(_) => Err(ApiError(e)),
            }
        }
        Err(e) => Err(e.into()),
    }
}

enum Prepared {
    /// The stored outcome for this very report.
    Replay(Vec<u8>),
    /// The outcome record to sign (its five members, the key not yet named).
    Sign(Map<String, Value>),
}

fn prepare(
    state: &AppState,
    digest: &str,
    audiences: &[String],
    report: &Value,
) -> Result<Prepared> {
    let book = state.receipts();
    let stored = book.decision(digest)?.ok_or_else(|| {
        Error::field(
            ErrorCode::NotFound,
            "decisionDigest",
            "this appliance holds no such decision",
        )
    })?;
    if !audiences.contains(&stored.audience) {
        return Err(Error::field(
            ErrorCode::Forbidden,
            "decisionDigest",
            "the decision is for an audience this token does not serve",
        ));
    }
    let record = &stored.record;
    let nonce = record["backLink"]["attestationNonce"]
        .as_str()
        .unwrap_or_default();
    let consumed = book
        .consumption(&nonce_key(nonce))?
        .is_some_and(|c| c.decision_digest == digest);
    if !consumed {
        return Err(Error::field(
            ErrorCode::ReceiptNotConsumed,
            "decisionDigest",
            "the decision was not admitted by a consume; report outcomes only for calls \
             that were admitted",
        ));
    }
    if let Some(o) = book.outcome(digest)? {
        if &o.report != report {
            return Err(Error::field(
                ErrorCode::ReceiptOutcomeExists,
                "status",
                "an outcome with another status or commitment was already signed for this \
                 decision",
            ));
        }
        return Ok(Prepared::Replay(canonical_bytes(&o.record)?));
    }
    let now = state.clock().now();
    let now = format_rfc3339(now.replace_nanosecond(0).unwrap_or(now));
    let mut derived = json!({
        "status": report["status"],
        "completedAt": now,
        "decisionDigest": digest,
    });
    if let Some(c) = report.get("resultCommitment") {
        derived["resultCommitment"] = c.clone();
    }
    let mut nonce = [0u8; 32];
    getrandom::fill(&mut nonce)
        .map_err(|e| Error::new(ErrorCode::Internal, format!("system RNG failed: {e}")))?;
    let asserted = json!({
        "iss": state.config().issuer,
        "sub": record["issuerAsserted"]["sub"],
        "iat": now,
        "nonce": hex::encode(nonce),
        "aud": stored.audience,
    });
    let mut members = Map::new();
    members.insert("version".into(), json!(RECORD_VERSION));
    members.insert("backLink".into(), record["backLink"].clone());
    members.insert("outcomeDerived".into(), derived);
    members.insert("receiptAsserted".into(), asserted);
    Ok(Prepared::Sign(members))
}
