//! The algorithm gate: whether an artifact's signing algorithm is still acceptable.
//!
//! The trait is defined in [`crate::crypto`], next to the [`crate::crypto::Alg`] it judges,
//! because `crypto` sits below this layer (every seam that names an algorithm or a public key
//! depends on it) and its old path `crate::crypto::AlgorithmGate` must keep working; a
//! re-export there of a definition here would point downwards-up. It is re-exported here so
//! that every seam is found in one place.

pub use crate::crypto::AlgorithmGate;
