//! Property tests (proptest).
//!
//! One test binary of an area: each former test file is a module of it (`tests/properties/`),
//! sharing the test kit (`tests/kit/`).

mod kit;

/// The former test files, in `tests/properties/`.
mod properties {
    #[allow(clippy::module_inception)] // the former tests/properties.rs, under its own name
    mod properties;
}
