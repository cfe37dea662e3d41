//! SoftHSM2 tokens: configuration, development tokens, keys, signing, errors, readiness, recovery,
//! timeouts, the key registry on tokens (every token test in a child process of its own).
//!
//! One test binary of an area: each former test file is a module of it (`tests/hsm/`),
//! sharing the test kit (`tests/kit/`).

mod kit;

/// The former test files, in `tests/hsm/`.
mod hsm {
    mod hsm_config;
    mod hsm_dev;
    mod hsm_errors;
    mod hsm_keys;
    mod hsm_node_interop;
    mod hsm_note_sign;
    mod hsm_readiness;
    mod hsm_recovery;
    mod hsm_stress;
    mod hsm_timeout;
    mod keys_hsm;
}
