//! Frames and frame sequences through `process()` on the demo pool (see `fuzz_bodies::pipeline`).
//!
//! The body is shared with `dataplane/core/tests/fuzz_corpus.rs`, which replays this target's
//! corpus in the normal test suite.

#![no_main]

#[path = "../../core/tests/common/fuzz_bodies.rs"]
mod fuzz_bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_bodies::pipeline(data));
