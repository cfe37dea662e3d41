//! `benches/api_throughput.rs` includes this file by path: the in-process harness lives in
//! the test kit (`tests/kit/api`), re-exported here so the bench keeps building unchanged.
#![allow(dead_code, unused_imports)]

#[path = "../kit/mod.rs"]
mod kit;

pub use kit::api::*;
