//! mpcp-pa: an HSM-backed Policy Authority appliance for the Machine Payment Control
//! Protocol (MPCP v1.0).
//!
//! Modules by layer, bottom to top; a module refers only to modules of lower layers (checked
//! by a unit test over the source tree, `seams/layering.rs`):
//! 0. [`error`]: one error type with stable codes. [`os`]: the few direct calls into the
//!    operating system (the one module allowed `unsafe`).
//! 1. [`canonical`]: strict JSON, MPCP canonical form and domain digests. [`crypto`]:
//!    algorithms, the MPCP signature convention, public keys, the algorithm gate.
//!    [`events`]: the audit events and the event sink. [`metrics`]: the Prometheus metrics
//!    object the layers count into. [`xrpl`]: XRPL classic address validation.
//! 2. [`jwk`]: public keys as JWKs and key sets.
//! 3. [`seams`]: the thin traits through which the layers meet (key roles, digest and note
//!    signers, key backend, active and checkpoint keys, audit sink and side writes, readiness
//!    probes, clock and signing gate, algorithm gate, record store) and their small values.
//! 4. [`clock`]: time formatting and the system and fixed clocks. [`signer`]: signing
//!    artifacts, and the software test signer. [`store`]: the sled store.
//! 5. [`algorithms`]: the algorithm policy (policies/algorithms.toml). [`model`]: typed
//!    artifacts (PolicyGrant, policy, trust bundle, allowlist, key set).
//! 6. [`bundle_profiles`]: trust-bundle assurance profiles. [`verify`]: the offline verifier.
//!    [`receipts`]: scoped authorization receipts (projection, records, receipt policy,
//!    offline verifier).
//! 7. Adapters, which meet only through [`seams`]: [`audit`] (the transparency log),
//!    [`hsm`] (the PKCS#11 backend), [`keys`] (the key registry and publication).
//! 8. [`api`]: the HTTP service.
//! 9. [`app`]: the data directory's layout and the builder that assembles the appliance
//!    for every command.
//! 10. [`cli`]: the command line; the binary (`main.rs`) sits on top.

#![deny(missing_docs)]
#![deny(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod algorithms;
pub mod api;
pub mod app;
pub mod audit;
pub mod bundle_profiles;
pub mod canonical;
pub mod cli;
pub mod clock;
pub mod crypto;
pub mod error;
pub mod events;
pub mod hsm;
pub mod jwk;
pub mod keys;
pub mod metrics;
pub mod model;
#[allow(unsafe_code)]
pub mod os;
pub mod receipts;
pub mod seams;
pub mod signer;
pub mod store;
pub mod verify;
pub mod xrpl;

pub use error::{Error, ErrorCode, Result};

/// The MPCP specification version this appliance implements.
pub const MPCP_SPEC_VERSION: &str = "1.0";

/// Version line for `--version`: crate version and the implemented MPCP spec version.
pub const VERSION_STRING: &str = concat!(env!("CARGO_PKG_VERSION"), " (MPCP spec 1.0)");
