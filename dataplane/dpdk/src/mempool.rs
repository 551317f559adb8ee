//! [`Mempool`]: a pool of packet buffers.

use core::marker::PhantomData;
use core::ptr::NonNull;
use std::ffi::CString;

use crate::eal::Eal;
use crate::error::{errno, DpdkError};
use crate::ffi;
use crate::mbuf::{Mbuf, MbufBurst};

/// A DPDK packet-buffer pool (`rte_pktmbuf_pool_create`).
///
/// A `Mempool` is a `Copy` handle: the pool itself lives until the EAL is cleaned up (DPDK
/// releases its memory then), and is never freed before. That is what lets every [`Mbuf`] —
/// whichever pool it came from, whether held by us or sitting in a device's ring — depend on the
/// EAL's lifetime alone. Create pools once at start-up; a name cannot be reused.
#[derive(Debug, Clone, Copy)]
pub struct Mempool<'e> {
    raw: NonNull<ffi::rte_mempool>,
    _eal: PhantomData<&'e Eal>,
}

// SAFETY: the pool is created with DPDK's default ops ("ring_mp_mc": multi-producer,
// multi-consumer), so gets and puts from any number of threads are safe; the per-lcore object
// cache is indexed by the calling thread's lcore id, which one thread holds at a time (threads
// without one bypass the cache). The handle itself is a pointer to a pool that is never freed
// while 'e lasts.
unsafe impl Send for Mempool<'_> {}
// SAFETY: as for Send: every operation through `&Mempool` is one of DPDK's thread-safe
// mempool operations.
unsafe impl Sync for Mempool<'_> {}

impl<'e> Mempool<'e> {
    /// The data room (headroom included) of DPDK's default mbuf: 2048 bytes of frame after a
    /// 128-byte headroom (`RTE_MBUF_DEFAULT_BUF_SIZE`). A 1500-byte MTU frame fits in one
    /// segment.
    pub const DEFAULT_DATA_ROOM: u16 = ffi::RTE_MBUF_DEFAULT_BUF_SIZE as u16;

    /// The headroom DPDK leaves before a received frame (`RTE_PKTMBUF_HEADROOM`).
    pub const HEADROOM: u16 = ffi::RTE_PKTMBUF_HEADROOM as u16;

    /// Creates a pool of `n` mbufs named `name` (at most 25 bytes: DPDK's name size) on the
    /// calling thread's NUMA socket, with a per-lcore cache of `cache` mbufs (0 disables it; at
    /// most 512, and DPDK wants `cache <= n / 1.5`), each with `data_room` bytes of buffer
    /// including the headroom ([`DEFAULT_DATA_ROOM`](Self::DEFAULT_DATA_ROOM) is usual; `n` is
    /// best a power of two minus one).
    pub fn new(
        eal: &'e Eal,
        name: &str,
        n: u32,
        cache: u32,
        data_room: u16,
    ) -> Result<Self, DpdkError> {
        // SAFETY: reads the calling thread's per-lcore socket id; no preconditions.
        let socket = unsafe { ffi::rte_socket_id() };
        // rte_socket_id answers SOCKET_ID_ANY (as unsigned) when unknown; pass it on as such.
        Self::new_on_socket(eal, name, n, cache, data_room, socket as i32)
    }

    /// As [`new`](Self::new), on NUMA socket `socket` (e.g. a port's
    /// [`socket_id`](crate::PortInfo::socket_id)), or any socket with `-1`.
    pub fn new_on_socket(
        _eal: &'e Eal,
        name: &str,
        n: u32,
        cache: u32,
        data_room: u16,
        socket: i32,
    ) -> Result<Self, DpdkError> {
        let op = "rte_pktmbuf_pool_create";
        let cname = CString::new(name)
            .map_err(|_| DpdkError::new(op, errno::EINVAL, "mempool name contains a NUL byte"))?;
        if name.len() >= ffi::RTE_MEMPOOL_NAMESIZE as usize {
            return Err(DpdkError::new(
                op,
                errno::EINVAL,
                format!(
                    "mempool name {name:?} is longer than {} bytes",
                    ffi::RTE_MEMPOOL_NAMESIZE - 1
                ),
            ));
        }
        if data_room < Self::HEADROOM {
            return Err(DpdkError::new(
                op,
                errno::EINVAL,
                format!(
                    "data room {data_room} is smaller than the {} byte headroom",
                    Self::HEADROOM
                ),
            ));
        }
        // SAFETY: the EAL is initialised (we hold a borrow of it); `cname` is NUL-terminated and
        // outlives the call (DPDK copies the name); the numbers are plain values DPDK validates.
        let raw =
            unsafe { ffi::rte_pktmbuf_pool_create(cname.as_ptr(), n, cache, 0, data_room, socket) };
        match NonNull::new(raw) {
            Some(raw) => Ok(Self {
                raw,
                _eal: PhantomData,
            }),
            None => {
                let err = DpdkError::from_rte_errno(op);
                Err(match err.errno {
                    errno::EEXIST => err.hint(&format!("a mempool named {name:?} already exists")),
                    errno::ENOMEM => {
                        err.hint("not enough EAL memory: raise -m or reserve more hugepages")
                    }
                    _ => err,
                })
            }
        }
    }

    /// Allocates one mbuf (empty, default headroom), or `None` when the pool is exhausted.
    pub fn alloc(&self) -> Option<Mbuf<'e>> {
        // SAFETY: the pool is valid for 'e (never freed before EAL cleanup); rte_pktmbuf_alloc is
        // thread-safe (see the Send impl) and returns an mbuf we now own, or NULL.
        let raw = unsafe { ffi::tz_pktmbuf_alloc(self.raw.as_ptr()) };
        // SAFETY: a non-null result is a fresh mbuf of this pool, owned by nobody else.
        NonNull::new(raw).map(|raw| unsafe { Mbuf::from_raw(raw) })
    }

    /// Fills `burst` up to `n` mbufs in total (all or nothing). Returns false, adding nothing,
    /// when the pool has too few or `n` exceeds the burst's capacity.
    pub fn alloc_into(&self, burst: &mut MbufBurst<'e>, n: usize) -> bool {
        if n <= burst.len() {
            return true;
        }
        let want = n - burst.len();
        if want > burst.remaining() {
            return false;
        }
        // SAFETY: the free slots [len, len + want) lie inside the burst's array; on success
        // DPDK writes `want` owned mbuf pointers there (all or nothing), which `grow` then
        // adopts. want <= 32 fits in u32.
        unsafe {
            let slots = burst.raw_slots().add(burst.len());
            if ffi::tz_pktmbuf_alloc_bulk(self.raw.as_ptr(), slots, want as u32) != 0 {
                return false;
            }
            burst.grow(want);
        }
        true
    }

    /// Mbufs currently free in the pool (including the lcore caches).
    pub fn available(&self) -> u32 {
        // SAFETY: valid pool; a read-only count.
        unsafe { ffi::rte_mempool_avail_count(self.raw.as_ptr()) }
    }

    /// Mbufs currently allocated from the pool.
    pub fn in_use(&self) -> u32 {
        // SAFETY: valid pool; a read-only count.
        unsafe { ffi::rte_mempool_in_use_count(self.raw.as_ptr()) }
    }

    pub(crate) fn as_ptr(&self) -> *mut ffi::rte_mempool {
        self.raw.as_ptr()
    }
}
