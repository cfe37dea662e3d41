//! The test kit: what the end-to-end test binaries (`tests/<area>.rs`) share, one module per
//! job. Every binary declares `mod kit;` and uses `crate::kit::…`.
//!
//! - [`api`]: the real service in-process (axum over rustls, sled, SoftHSM2) and its client;
//! - [`bin`]: the `mpcp-pa` binary as a child process (`serve`, `up`, crash-test helpers);
//! - [`hsm`]: development tokens and PKCS#11 handles;
//! - [`audit`]: audit-log fixtures (store, software checkpoint key, sample events);
//! - [`note_check`]: an independent checker of C2SP checkpoints; [`node`]: the independent
//!   JavaScript checkers in `tests/interop/`;
//! - [`tls`]: the one rustls client configuration (trusting a development certificate);
//! - [`child`]: a test re-run in a child process of its own (PKCS#11 state and
//!   `SOFTHSM2_CONF` are per process), [`gate`]: tests that must run while nothing else runs;
//! - [`tmp`]: the one temporary-directory scheme (and [`tmp::files_under`]), [`tmpfs`]: tmpfs mounts (disk-full cases);
//! - [`rng`]: a deterministic, seeded random source;
//! - [`xrpl`]: the XRPL Foundation's npm codec and keypairs as checkers of signed blobs.
//!
//! Not every binary uses every helper, and `dead_code` is reported per binary (each compiles
//! the kit anew), so the lint is allowed here, once, for the whole kit.
#![allow(dead_code)]

pub mod api;
pub mod audit;
pub mod bin;
pub mod child;
pub mod gate;
pub mod hsm;
pub mod line_fit;
pub mod node;
pub mod note_check;
pub mod rng;
pub mod tls;
pub mod tmp;
pub mod tmpfs;
pub mod xrpl;
