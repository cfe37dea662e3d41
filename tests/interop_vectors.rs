//! The published test vectors (MPCP L0 and L2, scoped authorization receipts) and their
//! independent check in Node.js.
//!
//! One test binary of an area: each former test file is a module of it (`tests/interop_vectors/`),
//! sharing the test kit (`tests/kit/`).

mod kit;

/// The former test files, in `tests/interop_vectors/`.
mod interop_vectors {
    mod node_interop;
    mod receipts;
    mod vectors;
}
