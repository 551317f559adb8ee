//! [`DpdkError`]: a failed DPDK call, named.

use core::ffi::{c_int, CStr};
use core::fmt;

use crate::ffi;

/// Linux errno values this crate produces or matches on (DPDK reports Linux errno values; this
/// crate is Linux-only, like DPDK's EAL).
pub mod errno {
    /// No such file or directory.
    pub const ENOENT: i32 = 2;
    /// Out of memory (DPDK: also "not enough hugepage memory").
    pub const ENOMEM: i32 = 12;
    /// Permission denied.
    pub const EACCES: i32 = 13;
    /// Device or resource busy (here: a port or queue already has a handle).
    pub const EBUSY: i32 = 16;
    /// File exists (e.g. a mempool name already in use).
    pub const EEXIST: i32 = 17;
    /// No such device (e.g. no port of that name or id).
    pub const ENODEV: i32 = 19;
    /// Invalid argument.
    pub const EINVAL: i32 = 22;
    /// Operation not supported (e.g. `net_pcap` has no MTU setter).
    pub const ENOTSUP: i32 = 95;
    /// Operation already in progress (here: the EAL is already initialised).
    pub const EALREADY: i32 = 114;
}

/// A DPDK call that failed: which one, the errno it reported, and DPDK's text for it
/// (`rte_strerror`), sometimes followed by a hint at the usual cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpdkError {
    /// The DPDK function (or this crate's operation) that failed, e.g. `"rte_eal_init"`.
    pub op: &'static str,
    /// A positive errno value (`rte_errno`, or the negated return value).
    pub errno: i32,
    /// Human-readable cause.
    pub msg: String,
}

impl DpdkError {
    /// An error with a message of our own.
    pub(crate) fn new(op: &'static str, errno: i32, msg: impl Into<String>) -> Self {
        Self {
            op,
            errno,
            msg: msg.into(),
        }
    }

    /// An error from an errno value, described by `rte_strerror`. Negative values (DPDK's
    /// `-errno` return convention) are accepted.
    pub(crate) fn from_errno(op: &'static str, errno: c_int) -> Self {
        let errno = errno.saturating_abs();
        Self {
            op,
            errno,
            msg: strerror(errno),
        }
    }

    /// An error described by the calling thread's `rte_errno`.
    pub(crate) fn from_rte_errno(op: &'static str) -> Self {
        // SAFETY: tz_errno reads the calling thread's `rte_errno` (a thread-local int); no
        // preconditions.
        let errno = unsafe { ffi::tz_errno() };
        Self::from_errno(op, errno)
    }

    /// Appends a hint to the message.
    pub(crate) fn hint(mut self, hint: &str) -> Self {
        self.msg.push_str("; ");
        self.msg.push_str(hint);
        self
    }
}

/// `rte_strerror(errno)`, copied out (DPDK may format into a per-thread buffer).
fn strerror(errno: c_int) -> String {
    // SAFETY: rte_strerror accepts any value and returns a pointer to a NUL-terminated string,
    // static or in a thread-local buffer that stays valid until the next call on this thread;
    // we copy it before returning.
    let ptr = unsafe { ffi::rte_strerror(errno) };
    if ptr.is_null() {
        return format!("errno {errno}");
    }
    // SAFETY: non-null and NUL-terminated (above); only read here, on this thread.
    unsafe { CStr::from_ptr(ptr) }
        .to_string_lossy()
        .into_owned()
}

impl fmt::Display for DpdkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed: {} (errno {})", self.op, self.msg, self.errno)
    }
}

impl std::error::Error for DpdkError {}

/// Turns a DPDK `0 / -errno` return value into a `Result`.
pub(crate) fn check(op: &'static str, ret: c_int) -> Result<(), DpdkError> {
    if ret < 0 {
        Err(DpdkError::from_errno(op, ret))
    } else {
        Ok(())
    }
}
