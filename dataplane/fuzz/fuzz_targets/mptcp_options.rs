//! MPTCP option areas with arbitrary segment flags (see `fuzz_bodies::mptcp_options`).
//!
//! The body is shared with `dataplane/core/tests/fuzz_corpus.rs`, which replays this target's
//! corpus in the normal test suite.

#![no_main]

#[path = "../../core/tests/common/fuzz_bodies.rs"]
mod fuzz_bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_bodies::mptcp_options(data));
