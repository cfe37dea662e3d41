//! `POST /v1/receipts/decisions` (receipt requester): a decision record for one observed
//! `tools/call`, as an artifact kind of the issuance pipeline.
//!
//! The body names the audience (the provider), the requester's action id, the subject and
//! `request`: the `tools/call` params as the requester observed them. The appliance computes
//! the fallback projection digest from exactly `name`, `arguments` and
//! `_meta.authorization_binding` (every other `_meta` member is left out by construction; a
//! missing or malformed binding is refused with AUTHORIZATION_BINDING_INVALID and nothing is
//! decided), asks the receipt policy, and signs the record in the HSM with a fresh 256-bit
//! nonce and a `decidedAt` strictly after every earlier decision under the same backLink.
//! Block and escalate decisions are signed records too. The record, the decision under its
//! binding and the `receipt_decided` entry are one durable append; the response (201) is the
//! record. `Idempotency-Key` replays it byte for byte.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::api::issuance::{ArtifactKind, Draft, IssueContext, Record, SignatureForm, Signed};
use crate::api::receipt_book::{ReceiptBook, StoredDecision, binding_key, policy_digest, trees};
use crate::api::tokens::is_audience_name;
use crate::audit::SideWrites;
use crate::clock::format_rfc3339;
use crate::error::{Error, ErrorCode, Result};
use crate::events::Event;
use crate::keys::KeyRole;
use crate::model::{check_id, check_identifier};
use crate::receipts::projection::{FALLBACK_PROJECTION, Projection, ProjectionError, project};
use crate::receipts::record::{BackLink, RECORD_VERSION, decision_digest};

/// The body of `POST /v1/receipts/decisions`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DecisionRequest {
    /// The provider the decision is for (`issuerAsserted.aud`).
    pub audience: String,
    /// The requester's id of the agent action (one consume per action).
    pub action_id: String,
    /// Who the call is made for (`issuerAsserted.sub`).
    pub subject: String,
    /// The observed `tools/call` params: `name`, `arguments`, `_meta`.
    pub request: Value,
    /// A client-asserted turn id, for correlation only.
    #[serde(default)]
    pub client_turn_id: Option<String>,
}

/// Receipt decision records, signed with the active receipt-signing key (ES256).
#[derive(Debug)]
pub struct Decisions;

/// A request that passed the checks that need no state.
#[derive(Debug)]
pub struct PendingDecision {
    request: DecisionRequest,
    tool: String,
    projection: Projection,
}

/// What the decision's records need.
#[derive(Debug)]
pub struct DecisionFacts {
    stored: StoredDecision,
    binding_entry: String,
    decision: String,
}

fn binding_error(e: ProjectionError) -> Error {
    let (field, code) = match e {
        ProjectionError::NameMissing => ("request.name", ErrorCode::AuthorizationBindingInvalid),
        ProjectionError::ArgumentsMissing => {
            ("request.arguments", ErrorCode::AuthorizationBindingInvalid)
        }
        ProjectionError::BindingMissing | ProjectionError::BindingMalformed => (
            "request._meta.authorization_binding",
            ErrorCode::AuthorizationBindingInvalid,
        ),
        ProjectionError::UnknownProjection => ("request", ErrorCode::Internal),
    };
    Error::field(
        code,
        field,
        format!(
            "the call cannot be bound ({}): a decision needs name, arguments and \
             _meta.authorization_binding with a non-empty nonce",
            e.as_str()
        ),
    )
}

impl ArtifactKind for Decisions {
    type Request = DecisionRequest;
    type Pending = PendingDecision;
    type Facts = DecisionFacts;
    const REQUEST: &'static str = "decision request";
    const ROLE: KeyRole = KeyRole::ReceiptSigning;
    const SIGNATURE: SignatureForm = SignatureForm::Receipt {
        asserted: "issuerAsserted",
    };
    const ISSUER_MEMBER: &'static str = "iss";
    const PA_MEMBERS: &'static [&'static str] = &[];

    fn draft(ctx: &IssueContext, request: DecisionRequest) -> Result<PendingDecision> {
        super::require_receipts(&ctx.state)?;
        if !is_audience_name(&request.audience) {
            return Err(Error::field(
                ErrorCode::SchemaInvalid,
                "audience",
                "audience must be 1 to 256 printable ASCII characters without spaces",
            ));
        }
        check_identifier(&request.action_id, "actionId")?;
        check_id(&request.subject, "subject")?;
        if let Some(t) = &request.client_turn_id {
            check_id(t, "clientTurnId")?;
        }
        let projection = project(FALLBACK_PROJECTION, &request.request).map_err(binding_error)?;
        let tool = request.request["name"]
            .as_str()
            .ok_or_else(|| binding_error(ProjectionError::NameMissing))?
            .to_string();
        Ok(PendingDecision {
            request,
            tool,
            projection,
        })
    }

    fn check(ctx: &IssueContext, p: PendingDecision) -> Result<(Draft, DecisionFacts)> {
        let book = ctx.state.receipts();
        let (policy, _) = book.policy()?.ok_or_else(super::policy_not_set)?;
        let ruling = policy.evaluate(&ctx.actor.name, &p.request.audience, &p.tool);
        let back_link = BackLink {
            attestation_digest: p.projection.digest.clone(),
            attestation_nonce: p.projection.nonce.clone(),
            fallback_projection: Some(FALLBACK_PROJECTION.to_string()),
        };
        let binding = binding_key(&back_link)?;
        let decided_at = book.reserve_decided_at(&binding, ctx.now, ctx.state.config().drift)?;
        let mut nonce = [0u8; 32];
        getrandom::fill(&mut nonce)
            .map_err(|e| Error::new(ErrorCode::Internal, format!("system RNG failed: {e}")))?;
        let mut derived = json!({
            "decision": ruling.decision.as_str(),
            "decidedAt": format_rfc3339(decided_at),
            "policyId": policy_digest(&policy)?,
        });
        if let Some(r) = &ruling.reason {
            derived["reason"] = json!(r);
        }
        if let Some(t) = &p.request.client_turn_id {
            derived["clientTurnId"] = json!(t);
        }
        let asserted = json!({
            "iss": ctx.state.config().issuer,
            "sub": p.request.subject,
            "iat": format_rfc3339(ctx.now.replace_nanosecond(0).unwrap_or(ctx.now)),
            "nonce": hex::encode(nonce),
            "aud": p.request.audience,
            "expSeconds": ruling.max_age_seconds,
        });
        let mut members = Map::new();
        members.insert("version".into(), json!(RECORD_VERSION));
        members.insert(
            "backLink".into(),
            serde_json::to_value(&back_link)
                .map_err(|e| Error::new(ErrorCode::Internal, format!("backLink: {e}")))?,
        );
        members.insert("decisionDerived".into(), derived);
        members.insert("issuerAsserted".into(), asserted);
        let facts = DecisionFacts {
            stored: StoredDecision {
                record: Value::Null,
                requester: ctx.actor.name.clone(),
                action_id: p.request.action_id,
                tool: p.tool,
                audience: p.request.audience,
                binding: binding.clone(),
            },
            binding_entry: ReceiptBook::binding_entry(&binding, decided_at),
            decision: ruling.decision.as_str().to_string(),
        };
        Ok((
            Draft {
                version: String::new(),
                members,
            },
            facts,
        ))
    }

    fn record(ctx: &IssueContext, facts: DecisionFacts, signed: &Signed) -> Result<Record> {
        let digest = decision_digest(&signed.artifact)
            .ok_or_else(|| Error::new(ErrorCode::Internal, "decision record digest"))?;
        if let Some(m) = ctx.state.metrics() {
            m.receipt_decision(&facts.decision);
        }
        let mut stored = facts.stored;
        stored.record = signed.artifact.clone();
        let bytes = serde_json::to_vec(&stored)
            .map_err(|e| Error::new(ErrorCode::Internal, format!("decision: {e}")))?;
        let mut writes = SideWrites::new();
        writes
            .insert_new(
                trees::RECEIPT_DECISIONS,
                digest.clone(),
                bytes,
                Error::new(ErrorCode::Conflict, "decision recorded twice"),
            )
            .insert_new(
                trees::RECEIPT_BINDINGS,
                facts.binding_entry,
                digest.clone(),
                Error::new(
                    ErrorCode::Conflict,
                    "another decision under this binding has the same decidedAt; retry",
                ),
            );
        Ok(Record {
            headers: Vec::new(),
            event: Event::ReceiptDecided {
                decision_digest: digest,
                decision: facts.decision,
                action_id: stored.action_id,
                audience: stored.audience,
                tool: stored.tool,
                secret_version: signed.kid.clone(),
                request_digest: ctx.request_digest.clone(),
            },
            writes,
            body_in: None,
        })
    }
}
