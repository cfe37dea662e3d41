//! Scoped authorization receipts (SEP-2828 records, MCP PR #2867): the fallback projection
//! of an MCP `tools/call`, the decision and outcome record shapes, the receipt policy, and
//! the offline verifier. Pure: no store, no HSM; the appliance's receipt routes and `mpcp-pa receipts
//! verify` build on it, and so can any provider.

pub mod policy;
pub mod projection;
pub mod record;
pub mod verify;

pub use projection::{FALLBACK_PROJECTION, Projection, ProjectionError, project};
pub use record::{DecisionRecord, OutcomeRecord, decision_digest, signed_payload};
pub use verify::{
    Expect, ReceiptKeys, Verdict, admit, check_decision, check_outcome, effective, pair,
};
