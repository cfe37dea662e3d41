//! mpcp-pa: an HSM-backed Policy Authority appliance for the Machine Payment Control
//! Protocol (MPCP v1.0).
//!
//! Layers, each behind a small seam so later parts plug in:
//! - [`canonical`]: strict JSON, MPCP canonical form and domain digests.
//! - [`crypto`], [`jwk`]: algorithms, the MPCP signature convention, public keys.
//! - [`signer`]: the [`signer::DigestSigner`] trait every key (HSM or test) implements.
//! - [`model`]: typed artifacts (PolicyGrant, policy, trust bundle, allowlist, key set).
//! - [`xrpl`]: XRPL classic address validation.
//! - [`verify`]: the offline verifier.
//! - [`clock`]: time behind a trait.
//! - [`error`]: one error type with stable codes.
//! - [`app`]: the data directory's layout and the builder that assembles the appliance for
//!   every command (above [`api`], below [`cli`]).

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
pub mod model;
pub mod signer;
pub mod store;
pub mod verify;
pub mod xrpl;

pub use error::{Error, ErrorCode, Result};

/// The MPCP specification version this appliance implements.
pub const MPCP_SPEC_VERSION: &str = "1.0";

/// Version line for `--version`: crate version and the implemented MPCP spec version.
pub const VERSION_STRING: &str = concat!(env!("CARGO_PKG_VERSION"), " (MPCP spec 1.0)");
