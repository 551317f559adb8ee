//! # trapeze-dpdk: the DPDK runtime's only door to C
//!
//! A thin, safe layer over DPDK 22.11 LTS (Debian's `libdpdk-dev`): the EAL, packet-buffer
//! pools, ethdev ports with their RX/TX queues, mbufs, lcores and the TSC; and the memory that
//! outlives the process ([`mapping`]: the locked, mapped state file that holds the gateway's
//! tables, on hugetlbfs when it can be; the monotonic clock they are stamped with). It is the one
//! crate of trapeze allowed to contain `unsafe`; everything it exports is safe. It does not depend on
//! `trapeze-core` (the daemon wraps [`Mbuf`] in a newtype implementing the core's `Frame`).
//!
//! ## How it is built
//!
//! `build.rs` asks `pkg-config` for `libdpdk` (link flags and cflags, nothing hard-coded),
//! compiles `csrc/tz_shim.c`, out-of-line `tz_*` wrappers for DPDK's `static inline` fast path
//! (rx/tx burst, mbuf alloc/free, append/trim of segment chains, `rte_errno`, `rte_lcore_id`,
//! TSC, prefetch; the per-frame mbuf field accessors are Rust, on the bindgen `rte_mbuf`), and
//! runs `bindgen` on `csrc/tz_shim.h` with an explicit allow-list (about 60 functions and the
//! structs they take), so the raw bindings stay small and private (`ffi`).
//!
//! Drivers: Debian's DPDK is a shared build whose EAL, at `rte_eal_init`, loads every PMD in
//! its plugin directory (`/usr/lib/x86_64-linux-gnu/dpdk/pmds-23.0`: `net_ring`, `net_null`,
//! `net_pcap`, `net_af_packet`, `net_af_xdp`, `net_memif`, `net_tap`, ...). Nothing needs to be
//! linked with `--no-as-needed`, and no `-d` argument is needed; `-d <path>` still works to load
//! a PMD from elsewhere.
//!
//! ## Safety model
//!
//! * **EAL lifetime.** [`Eal::init`] succeeds once per process; dropping the [`Eal`] calls
//!   `rte_eal_cleanup`, after which every DPDK pointer dangles. So every other handle borrows
//!   the `Eal` (a lifetime `'e`): [`Mempool<'e>`], [`Port<'e>`], [`Mbuf<'e>`], and the queues
//!   borrow their port. The borrow checker thus proves nothing DPDK-backed outlives cleanup.
//! * **Mempools are never freed** before cleanup (a [`Mempool`] is a `Copy` handle). Hence an
//!   mbuf needs only the EAL to be alive, whichever pool it came from and wherever it sits
//!   (ours, or in a device ring until the port is stopped and closed, which its drop does).
//! * **Mbuf ownership.** An [`Mbuf`] is an owned `NonNull<rte_mbuf>`, not `Clone`, freed on
//!   drop. `rx_burst` hands ownership to us, `tx_burst` takes it back (only for the mbufs the
//!   device accepted). [`MbufBurst`] is a fixed 32-slot array with the layout DPDK's burst calls
//!   use, so bursts move no data and allocate nothing.
//! * **What is `Send`/`Sync`.** `Mbuf: Send + Sync` (one owner at a time; `&Mbuf` only reads).
//!   `Mempool: Send + Sync` (DPDK's default mempool ops are multi-producer/multi-consumer).
//!   `Port: Send + Sync`: mutating calls (configure, start, stop, MTU, promiscuous) take
//!   `&mut self`, queries take `&self` and are serialised by an internal lock. At most one
//!   [`RxQueue`]/[`TxQueue`] handle exists per queue (a claim flag), bursts take `&mut self`, and
//!   handles borrow the port, so a port cannot be stopped or reconfigured while a queue is
//!   polled, and no queue is polled by two threads. [`lcore::ThreadRegistration`] is `!Send`.
//! * **Threads.** Workers are scoped std threads, pinned and registered as lcores (see
//!   [`lcore`]), rather than `rte_eal_remote_launch` callbacks.
//!
//! ## Why not capsule
//!
//! capsule 0.1.5 (the Rust DPDK framework this layout learns from) targets DPDK 19.11: its
//! `build.rs` links a hard-coded list of `rte_pmd_*` libraries that were renamed `rte_net_*`,
//! and its bindings include `rte_kni.h`, which no longer exists, so it cannot build against
//! 22.11. It also allocates a `Vec` per burst and wants EAL for every packet test. We keep its
//! good ideas (a C shim for inline functions, `DpdkError` from `rte_strerror`, an owned `Mbuf`
//! with a justified `Send`) and let `pkg-config` decide what to link.

#![deny(unsafe_op_in_unsafe_fn)]
#![cfg(target_os = "linux")]

/// Whether this build links DPDK. `false` when the build script found no DPDK 22.11 (or
/// `TRAPEZE_NO_DPDK=1` was set): the crate then holds [`mapping`] only, so the rest of the
/// workspace still builds and tests on a machine without DPDK.
pub const AVAILABLE: bool = cfg!(not(tz_no_dpdk));

pub mod mapping;

#[cfg(not(tz_no_dpdk))]
mod af_packet;
#[cfg(not(tz_no_dpdk))]
mod eal;
#[cfg(not(tz_no_dpdk))]
mod error;
#[cfg(not(tz_no_dpdk))]
pub mod lcore;
#[cfg(not(tz_no_dpdk))]
mod mbuf;
#[cfg(not(tz_no_dpdk))]
mod mempool;
#[cfg(not(tz_no_dpdk))]
mod port;

#[cfg(not(tz_no_dpdk))]
pub use eal::Eal;
#[cfg(not(tz_no_dpdk))]
pub use error::{errno, DpdkError};
#[cfg(not(tz_no_dpdk))]
pub use mbuf::{ChecksumStatus, Drain, Mbuf, MbufBurst, RxChecksums, TxIp, TxL4, BURST_SIZE};
#[cfg(not(tz_no_dpdk))]
pub use mempool::Mempool;
#[cfg(not(tz_no_dpdk))]
pub use port::{Link, Port, PortConfig, PortInfo, PortOffloads, PortStats, RxQueue, TxQueue};

/// The raw bindings (bindgen output for `csrc/tz_shim.h`). Private: nothing outside this crate
/// may touch DPDK directly.
#[allow(
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    dead_code,
    unreachable_pub,
    missing_docs,
    missing_debug_implementations,
    unsafe_op_in_unsafe_fn,
    clippy::all,
    clippy::pedantic,
    clippy::undocumented_unsafe_blocks
)]
#[cfg(not(tz_no_dpdk))]
mod ffi {
    include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
}
