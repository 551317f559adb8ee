//! # trapeze-loadgen: the system benchmark's traffic
//!
//! A DPDK load generator for the gateway (binary `trapeze-loadgen`, `src/main.rs`): it sends on
//! one port toward the gateway's client port and receives on a second what the gateway forwards
//! to its backends, answering MP_CAPABLE SYNs there as a backend would, so full MPTCP handshakes
//! cross the gateway. This library holds the parts that need no DPDK: the packet builders
//! ([`packets`]), the latency histogram ([`hist`]), the zero-loss rate search ([`search`]) and
//! the traffic mix ([`mix`]); they are unit-tested without DPDK.

pub mod hist;
pub mod mix;
pub mod packets;
pub mod search;
