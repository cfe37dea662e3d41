//! The audit log on a real sled store: appends, proofs, checkpoints, rotation, tampering, time,
//! witnesses, crashes.
//!
//! One test binary of an area: each former test file is a module of it (`tests/audit/`),
//! sharing the test kit (`tests/kit/`).

mod kit;

/// The former test files, in `tests/audit/`.
mod audit {
    mod audit_crash;
    mod audit_log;
    mod audit_proofs;
    mod audit_rotation;
    mod audit_tamper;
    mod audit_time;
    mod audit_witness;
}
