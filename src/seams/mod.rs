//! Seams: the thin traits through which the layers meet, and their small value types.
//!
//! Every adapter (the HSM backend in `crate::hsm`, the audit log in `crate::audit`, the key
//! registry in `crate::keys`, the sled store in `crate::store`) implements or consumes these
//! traits and none of them imports another: this module sits below all of them and depends
//! only on errors and the value modules (`crypto`, `jwk`, `events`). The layering is checked
//! by a unit test over the source tree (`layering.rs`). Each trait is also re-exported at the
//! path it had before it moved here (for example `crate::keys::KeyRole`).

pub mod active_keys;
pub mod algorithm_gate;
pub mod audit_sink;
pub mod checkpoint_keys;
pub mod clock;
pub mod digest_signer;
pub mod key_backend;
pub mod key_role;
pub mod note_signer;
pub mod readiness;
pub mod store;

pub use active_keys::ActiveKeys;
pub use algorithm_gate::AlgorithmGate;
pub use audit_sink::{AppendTicket, AuditSink, EventSink, SideWrites};
pub use checkpoint_keys::CheckpointKeys;
pub use clock::{Clock, SigningGate};
pub use digest_signer::{DigestSignature, DigestSigner, SharedSigner};
pub use key_backend::{GeneratedKey, KeyBackend};
pub use key_role::KeyRole;
pub use note_signer::{NoteSigner, check_key_name};
pub use readiness::ReadinessProbe;
pub use store::RecordStore;

/// Implements `Debug` for a struct by showing only the named fields, in order, and then `..`
/// ([`std::fmt::DebugStruct::finish_non_exhaustive`]): for types whose other fields are
/// handles, locks or caches that say nothing useful (or must not be printed). Every named
/// field must itself be `Debug`.
macro_rules! debug_showing {
    ($ty:ident { $($field:ident),* $(,)? }) => {
        impl ::std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    $(.field(stringify!($field), &self.$field))*
                    .finish_non_exhaustive()
            }
        }
    };
}
pub(crate) use debug_showing;

#[cfg(test)]
mod layering;
