//! The service in-process (axum over rustls, sled, SoftHSM2) driven over HTTPS by the kit's
//! harness.
//!
//! Every test runs in a process of its own (`kit::child::own_process!` / `alone!`), so each has
//! its own SoftHSM2 tokens, as when the tests had binaries of their own: concurrent key
//! generation and signing on one token set can fail in SoftHSM2 (CKR_GENERAL_ERROR, seen
//! once with all the API tests of one process sharing its tokens).
//!
//! One test binary of an area: each former test file is a module of it (`tests/api/`),
//! sharing the test kit (`tests/kit/`).

mod kit;

/// The former test files, in `tests/api/`.
mod api {
    mod api_audit;
    mod api_authz;
    mod api_bad_input;
    mod api_bundle_profiles;
    mod api_errors;
    mod api_flows;
    mod api_hostile;
    mod api_ledger;
    mod api_lifetimes;
    mod api_metrics;
    mod api_openapi;
    mod api_policies;
    mod api_receipts;
    mod api_refusals;
    mod api_signing;
    mod api_tls;
    mod api_tokens;
}
