//! The key registry and what it publishes, on top of the key seams.
//!
//! The appliance holds keys for exactly three roles ([`KeyRole`]), each on its own token by
//! default; it has no role for gateway or settlement keys and refuses configuration that
//! names one. A [`KeyBackend`] generates, loads and destroys keys inside the token; the
//! PKCS#11 implementation lives in `crate::hsm`. The key registry (kid, state, timestamps)
//! sits on top of this seam and implements [`ActiveKeys`] and [`CheckpointKeys`]. The roles
//! and these traits are defined in [`crate::seams`] and re-exported here at their old paths.

pub mod keyset;
pub mod publication;
pub mod record;
pub mod registry;
#[cfg(test)]
pub(crate) mod test_support;

pub use record::{KeyRecord, KeyState};
pub use registry::KeyRegistry;

pub use crate::seams::active_keys::ActiveKeys;
pub use crate::seams::checkpoint_keys::CheckpointKeys;
pub use crate::seams::key_backend::{GeneratedKey, KeyBackend, material_missing};
pub use crate::seams::key_role::KeyRole;
