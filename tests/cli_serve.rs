//! The real `mpcp-pa` binary end to end: `serve`, `up`, the CLI, SIGKILL crash loops, faketime,
//! tmpfs disk-full cases, a remote token over p11-kit.
//!
//! One test binary of an area: each former test file is a module of it (`tests/cli_serve/`),
//! sharing the test kit (`tests/kit/`).

mod kit;

/// The former test files, in `tests/cli_serve/`.
mod cli_serve {
    mod api_crash;
    mod api_keys_crash;
    mod api_mtls;
    mod api_serve;
    mod api_tokens_crash;
    mod api_up;
    mod audit_serve;
    mod clock;
    mod console;
    mod discovery;
    mod disk_full;
    mod hsm_remote_bounce;
    mod keys_cli;
    mod ledger_crash;
    mod ledger_submit;
    mod observability;
    mod receipts_crash;
    mod receipts_serve;
}
