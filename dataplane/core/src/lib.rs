//! # trapeze-core: the sans-IO forwarding core
//!
//! Everything the gateway decides about a packet is decided here, by pure functions over a
//! packet buffer, with the time handed in and every table passed explicitly. Nothing in this crate
//! performs I/O, reads a clock, spawns a thread or touches DPDK; the runtime (DPDK workers) and
//! the control plane are built on top of it.
//!
//! Layers, bottom up (the folder tree follows them):
//!
//! * [`trapeze_wire`] (its own crate): packet formats.
//! * [`flow`], [`time`], [`crypto`]: vocabulary: the 5-tuple and its fixed-seed hash, ticks,
//!   MPTCP key -> token/IDSN and the RFC 8684 HMACs.
//! * [`tables`]: the Maglev new-connection table, the per-worker flow table, the shared token
//!   table.
//! * [`pool`]: the immutable pool snapshot (VIPs, backends, Maglev tables) the control plane
//!   publishes and workers pick up between bursts.
//! * [`pipeline`]: `process(frame, now, ...) -> Verdict`.
//! * [`state`]: the state file that keeps the tables across restarts: its layout, validation
//!   and re-attachment, and the backend and VIP identities.

#![forbid(unsafe_code)]

pub mod cluster;
pub mod crypto;
pub mod flow;
pub mod pipeline;
pub mod pool;
pub mod state;
pub mod tables;
pub mod testkit;
pub mod time;

pub use flow::FlowKey;
pub use time::Ticks;
