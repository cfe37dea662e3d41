//! `benches/soak.rs` includes this file by path: the real-binary helpers live in the test kit
//! (`tests/kit/bin.rs`), re-exported here so the bench keeps building unchanged.
#![allow(dead_code, unused_imports)]

#[path = "../kit/mod.rs"]
mod kit;

pub use kit::bin::*;
pub use kit::line_fit;
