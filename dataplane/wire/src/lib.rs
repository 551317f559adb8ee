//! # trapeze-wire: the packet formats, and nothing else
//!
//! Every format has two levels, in the manner of smoltcp:
//!
//! * a **packet view** `Packet<T: AsRef<[u8]>>` over a borrowed buffer, with one accessor per RFC
//!   field (and a setter when `T: AsMut<[u8]>`). Views never copy and never allocate.
//! * where it helps, a **`Repr`**: a validated, owned description of the header with `parse`,
//!   `emit` and `buffer_len`, used to build packets (tests, replies) and to check round trips.
//!
//! ## The checked-construction contract
//!
//! `Packet::new_checked(buffer)` validates every length the accessors rely on. **If it returns
//! `Ok`, no accessor or setter of that view panics.** Untrusted input (anything that came off a
//! wire) must go through `new_checked`. `new_unchecked` exists for emission into a buffer the
//! caller sized itself; using it on received bytes is a bug.
//!
//! Nothing in this crate panics on any input, loops without bound, or reads out of bounds: the
//! fuzz target in `dataplane/fuzz` and the property tests hold the crate to that.
//!
//! ## Layout
//!
//! `field` (byte helpers) and `checksum` (RFC 1071 / RFC 1624) are used by every format.
//! `ethernet` (with 802.1Q), `arp`, `ipv4`, `ipv6` (bounded extension-header walk), `ip`
//! (protocol numbers, quoted-header parsing for ICMP errors), `tcp` (header and option walk),
//! `mptcp` (every RFC 8684 option subtype, with the Linux kernel's length rules), `udp`,
//! `icmpv4`, `icmpv6`.

#![forbid(unsafe_code)]

pub mod error;
pub mod field;

pub mod checksum;

pub mod arp;
pub mod ethernet;
pub mod gue;
pub mod icmpv4;
pub mod icmpv6;
pub mod ip;
pub mod ipv4;
pub mod ipv6;
pub mod mptcp;
pub mod pcap;
pub mod tcp;
pub mod udp;

pub use error::{Error, Result};
