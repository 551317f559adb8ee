//! [`Mbuf`], an owned packet buffer, and [`MbufBurst`], a fixed array of them for burst I/O.

use core::fmt;
use core::marker::PhantomData;
use core::mem::MaybeUninit;
use core::ptr::NonNull;

use crate::eal::Eal;
use crate::ffi;

/// The number of mbufs in a burst: DPDK's customary 32.
pub const BURST_SIZE: usize = 32;

/// An owned DPDK packet buffer (`struct rte_mbuf`, possibly the head of a segment chain), freed
/// back to its mempool on drop.
///
/// `'e` is a borrow of the [`Eal`]: mempools are never freed before `rte_eal_cleanup`, so the
/// EAL being alive is all an mbuf needs. The data accessors see the first segment; frames
/// received with a data room of at least the port's MTU plus headers are single-segment
/// ([`is_contiguous`](Self::is_contiguous)).
#[repr(transparent)]
pub struct Mbuf<'e> {
    raw: NonNull<ffi::rte_mbuf>,
    _eal: PhantomData<&'e Eal>,
}

// SAFETY: an `Mbuf` is the only handle to its rte_mbuf (it is not Clone, and DPDK hands an
// mbuf to exactly one owner: rx_burst's caller or alloc's), so moving it to another thread moves
// the ownership with it; DPDK mbufs carry no thread affinity, and freeing one from any thread is
// allowed (the mempool's put is multi-producer safe; the per-lcore cache is indexed by the
// freeing thread's own lcore id).
unsafe impl Send for Mbuf<'_> {}

// SAFETY: `&Mbuf` only allows reads of the buffer and its metadata; every mutation takes
// `&mut self`, so shared references on several threads only read.
unsafe impl Sync for Mbuf<'_> {}

impl<'e> Mbuf<'e> {
    /// Takes ownership of a raw mbuf.
    ///
    /// # Safety
    ///
    /// `raw` must point to a valid rte_mbuf (a chain head) that the caller owns and nothing else
    /// will use or free afterwards, allocated from a mempool of the EAL borrowed for `'e`.
    pub(crate) unsafe fn from_raw(raw: NonNull<ffi::rte_mbuf>) -> Self {
        Self {
            raw,
            _eal: PhantomData,
        }
    }

    fn ptr(&self) -> *const ffi::rte_mbuf {
        self.raw.as_ptr()
    }

    fn ptr_mut(&mut self) -> *mut ffi::rte_mbuf {
        self.raw.as_ptr()
    }

    // The per-frame accessors below read and write the fields of the bindgen `rte_mbuf` in Rust,
    // as DPDK's own inline functions do, instead of calling a C shim per field: they inline into
    // the worker loop and the core (benches/system/worker-split.sh counts them).

    /// The mbuf header.
    #[inline(always)]
    fn hdr(&self) -> &ffi::rte_mbuf {
        // SAFETY: self owns a valid mbuf (type invariant): nothing else uses it while we hold
        // it, and `&self` allows no mutation through this handle while the reference lives.
        unsafe { self.raw.as_ref() }
    }

    /// The mbuf header, mutably.
    #[inline(always)]
    fn hdr_mut(&mut self) -> &mut ffi::rte_mbuf {
        // SAFETY: as in `hdr`; `&mut self` makes this the only reference to the header.
        unsafe { self.raw.as_mut() }
    }

    /// The bytes of the first segment (all of the frame when [`is_contiguous`](Self::is_contiguous)).
    #[inline]
    pub fn data(&self) -> &[u8] {
        let m = self.hdr();
        // SAFETY: self owns a valid mbuf (type invariant); as rte_pktmbuf_mtod, buf_addr +
        // data_off points at data_len initialised bytes inside its buffer (DPDK keeps
        // data_off + data_len <= buf_len; mempool memory is zero-filled when mapped and only
        // ever written with bytes), and `&self` keeps it from being modified or freed while
        // borrowed.
        unsafe {
            let data = m.buf_addr.cast::<u8>().add(usize::from(m.data_off));
            core::slice::from_raw_parts(data, usize::from(m.data_len))
        }
    }

    /// The bytes of the first segment, mutably.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        let m = self.hdr_mut();
        // SAFETY: as in `data`; `&mut self` makes this the only reference to those bytes.
        unsafe {
            let data = m.buf_addr.cast::<u8>().add(usize::from(m.data_off));
            core::slice::from_raw_parts_mut(data, usize::from(m.data_len))
        }
    }

    /// The frame length (`pkt_len`, all segments).
    #[inline]
    pub fn len(&self) -> usize {
        self.hdr().pkt_len as usize
    }

    /// True when the frame is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The length of the first segment (`data_len`).
    #[inline]
    pub fn data_len(&self) -> usize {
        usize::from(self.hdr().data_len)
    }

    /// The number of segments.
    #[inline]
    pub fn nb_segs(&self) -> u16 {
        self.hdr().nb_segs
    }

    /// True when the frame is one segment, so [`data`](Self::data) is all of it.
    #[inline]
    pub fn is_contiguous(&self) -> bool {
        self.hdr().nb_segs == 1
    }

    /// Free bytes before the data (first segment).
    #[inline]
    pub fn headroom(&self) -> usize {
        usize::from(self.hdr().data_off)
    }

    /// Free bytes after the data (last segment).
    pub fn tailroom(&self) -> usize {
        // SAFETY: valid owned mbuf (type invariant); walks its own segment chain.
        usize::from(unsafe { ffi::tz_pktmbuf_tailroom(self.ptr()) })
    }

    /// Grows the frame by `n` bytes at the front, into the headroom. The new bytes are whatever
    /// the buffer held. Returns false, changing nothing, when the headroom is too small.
    #[inline]
    pub fn prepend(&mut self, n: usize) -> bool {
        let m = self.hdr_mut();
        // As rte_pktmbuf_prepend: data_off >= n keeps the data inside the buffer.
        let Ok(n) = u16::try_from(n) else {
            return false;
        };
        if n > m.data_off {
            return false;
        }
        m.data_off -= n;
        m.data_len += n;
        m.pkt_len += u32::from(n);
        true
    }

    /// Removes `n` bytes from the front. Returns false, changing nothing, if `n` exceeds the
    /// first segment's length.
    #[inline]
    pub fn adj(&mut self, n: usize) -> bool {
        let m = self.hdr_mut();
        // As rte_pktmbuf_adj.
        let Ok(n) = u16::try_from(n) else {
            return false;
        };
        if n > m.data_len {
            return false;
        }
        m.data_off += n;
        m.data_len -= n;
        m.pkt_len -= u32::from(n);
        true
    }

    /// Sets the frame length: shrinks (from the last segment) or grows into the last segment's
    /// tailroom (new bytes are whatever the buffer held). Returns false, changing nothing, when
    /// the last segment is too short to shrink or its tailroom too small to grow.
    #[inline]
    pub fn set_len(&mut self, len: usize) -> bool {
        if self.nb_segs() != 1 {
            return self.set_len_chained(len);
        }
        // One segment: it is the last one, as rte_pktmbuf_trim and rte_pktmbuf_append see it.
        let m = self.hdr_mut();
        let Ok(len) = u16::try_from(len) else {
            return false;
        };
        let end = u32::from(m.data_off) + u32::from(len);
        if len <= m.data_len || end <= u32::from(m.buf_len) {
            m.data_len = len;
            m.pkt_len = u32::from(len);
            true
        } else {
            false
        }
    }

    /// [`set_len`](Self::set_len) of a segment chain, by DPDK's functions.
    #[cold]
    fn set_len_chained(&mut self, len: usize) -> bool {
        let cur = self.len();
        if len < cur {
            let Ok(n) = u16::try_from(cur - len) else {
                return false;
            };
            // SAFETY: valid owned mbuf, exclusively borrowed; rte_pktmbuf_trim checks `n`
            // against the last segment and changes nothing (returns -1) when it is too large.
            unsafe { ffi::tz_pktmbuf_trim(self.ptr_mut(), n) == 0 }
        } else if len > cur {
            let Ok(n) = u16::try_from(len - cur) else {
                return false;
            };
            // SAFETY: valid owned mbuf, exclusively borrowed; rte_pktmbuf_append checks the
            // tailroom and changes nothing (returns NULL) when it is too small.
            !unsafe { ffi::tz_pktmbuf_append(self.ptr_mut(), n) }.is_null()
        } else {
            true
        }
    }

    /// The offload flags (`ol_flags`, `RTE_MBUF_F_*`).
    #[inline]
    pub fn ol_flags(&self) -> u64 {
        self.hdr().ol_flags
    }

    /// Sets the offload flags (`ol_flags`) verbatim.
    #[inline]
    pub fn set_ol_flags(&mut self, flags: u64) {
        self.hdr_mut().ol_flags = flags;
    }

    /// What the NIC said about the received frame's checksums (only meaningful when the port
    /// was configured with RX checksum offload, see [`PortOffloads`](crate::PortOffloads)).
    pub fn rx_checksums(&self) -> RxChecksums {
        let f = self.ol_flags();
        RxChecksums {
            ip: ChecksumStatus::from_bits(
                f & u64::from(ffi::RTE_MBUF_F_RX_IP_CKSUM_MASK),
                u64::from(ffi::RTE_MBUF_F_RX_IP_CKSUM_GOOD),
                u64::from(ffi::RTE_MBUF_F_RX_IP_CKSUM_BAD),
                u64::from(ffi::RTE_MBUF_F_RX_IP_CKSUM_NONE),
            ),
            l4: ChecksumStatus::from_bits(
                f & u64::from(ffi::RTE_MBUF_F_RX_L4_CKSUM_MASK),
                u64::from(ffi::RTE_MBUF_F_RX_L4_CKSUM_GOOD),
                u64::from(ffi::RTE_MBUF_F_RX_L4_CKSUM_BAD),
                u64::from(ffi::RTE_MBUF_F_RX_L4_CKSUM_NONE),
            ),
        }
    }

    /// Asks the NIC to compute checksums on transmit: sets `l2_len`/`l3_len` and the
    /// `RTE_MBUF_F_TX_*` flags (keeping the other flags). Only valid on a port whose
    /// [`PortOffloads`](crate::PortOffloads) enabled the same offloads. As DPDK requires for L4
    /// offload, the TCP/UDP checksum field must hold the pseudo-header checksum.
    pub fn request_tx_checksum(&mut self, l2_len: u8, l3_len: u16, ip: TxIp, l4: TxL4) {
        let mut flags = self.ol_flags()
            & !(ffi::RTE_MBUF_F_TX_IPV4
                | ffi::RTE_MBUF_F_TX_IPV6
                | ffi::RTE_MBUF_F_TX_IP_CKSUM
                | ffi::RTE_MBUF_F_TX_TCP_CKSUM
                | ffi::RTE_MBUF_F_TX_UDP_CKSUM);
        flags |= match ip {
            TxIp::V4 {
                header_checksum: true,
            } => ffi::RTE_MBUF_F_TX_IPV4 | ffi::RTE_MBUF_F_TX_IP_CKSUM,
            TxIp::V4 {
                header_checksum: false,
            } => ffi::RTE_MBUF_F_TX_IPV4,
            TxIp::V6 => ffi::RTE_MBUF_F_TX_IPV6,
        };
        flags |= match l4 {
            TxL4::None => 0,
            TxL4::Tcp => ffi::RTE_MBUF_F_TX_TCP_CKSUM,
            TxL4::Udp => ffi::RTE_MBUF_F_TX_UDP_CKSUM,
        };
        self.set_ol_flags(flags);
        // SAFETY: valid owned mbuf, exclusively borrowed; writes the length bitfields (l2_len
        // is 7 bits, l3_len 9 bits: u8 < 128 and u16 < 512 are what NICs accept; larger values
        // are truncated by the bitfield, which only makes the NIC's checksum wrong).
        unsafe { ffi::tz_mbuf_set_tx_lens(self.ptr_mut(), u16::from(l2_len), l3_len, 0) }
    }

    /// The RSS hash the NIC computed, if it delivered one.
    pub fn rss_hash(&self) -> Option<u32> {
        if self.ol_flags() & u64::from(ffi::RTE_MBUF_F_RX_RSS_HASH) == 0 {
            return None;
        }
        // SAFETY: valid owned mbuf (type invariant); reads a field.
        Some(unsafe { ffi::tz_mbuf_rss_hash(self.ptr()) })
    }

    /// The port the frame was received on (meaningless for a freshly allocated mbuf).
    #[inline]
    pub fn port(&self) -> u16 {
        self.hdr().port
    }

    /// Prefetches the first cache line of the frame's data (a hint; no effect on semantics).
    pub fn prefetch(&self) {
        // SAFETY: valid owned mbuf; mtod computes an address inside its buffer; a prefetch never
        // faults and reads nothing.
        unsafe { ffi::tz_prefetch0(self.data().as_ptr().cast()) }
    }
}

impl Drop for Mbuf<'_> {
    fn drop(&mut self) {
        // SAFETY: we own the mbuf (type invariant) and never use it again; rte_pktmbuf_free
        // returns the whole segment chain to its mempool(s), which live until EAL cleanup, and
        // the EAL is alive ('e).
        unsafe { ffi::tz_pktmbuf_free(self.ptr_mut()) }
    }
}

impl fmt::Debug for Mbuf<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mbuf")
            .field("len", &self.len())
            .field("nb_segs", &self.nb_segs())
            .field("headroom", &self.headroom())
            .field("tailroom", &self.tailroom())
            .finish()
    }
}

/// The NIC's verdict on one received checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumStatus {
    /// No information (no offload, or the NIC did not check this packet).
    Unknown,
    /// The checksum is wrong.
    Bad,
    /// The checksum is right.
    Good,
    /// The checksum was not verified but the data is known intact (e.g. a virtual device).
    NotChecked,
}

impl ChecksumStatus {
    fn from_bits(masked: u64, good: u64, bad: u64, none: u64) -> Self {
        match masked {
            m if m == good => Self::Good,
            m if m == bad => Self::Bad,
            m if m == none => Self::NotChecked,
            _ => Self::Unknown,
        }
    }
}

/// RX checksum verdicts of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxChecksums {
    /// The IPv4 header checksum.
    pub ip: ChecksumStatus,
    /// The TCP/UDP checksum.
    pub l4: ChecksumStatus,
}

/// The network layer for TX checksum offload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxIp {
    /// IPv4; `header_checksum` asks the NIC to compute the IPv4 header checksum.
    V4 {
        /// Compute the IPv4 header checksum.
        header_checksum: bool,
    },
    /// IPv6 (no header checksum).
    V6,
}

/// The transport layer for TX checksum offload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxL4 {
    /// No L4 checksum offload.
    None,
    /// Compute the TCP checksum.
    Tcp,
    /// Compute the UDP checksum.
    Udp,
}

/// Up to [`BURST_SIZE`] mbufs in a fixed array: what `rx_burst` fills and `tx_burst` sends, with
/// no allocation. Dropping it frees the mbufs it still holds.
pub struct MbufBurst<'e> {
    /// `slots[..len]` are initialised and owned. `MaybeUninit<Mbuf>` has the layout of
    /// `*mut rte_mbuf` (both `repr(transparent)` over a pointer), so the array is what DPDK's
    /// burst functions read and write.
    slots: [MaybeUninit<Mbuf<'e>>; BURST_SIZE],
    len: usize,
}

impl<'e> MbufBurst<'e> {
    /// An empty burst.
    pub const fn new() -> Self {
        Self {
            slots: [const { MaybeUninit::uninit() }; BURST_SIZE],
            len: 0,
        }
    }

    /// The number of mbufs held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no mbuf is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when [`BURST_SIZE`] mbufs are held.
    pub fn is_full(&self) -> bool {
        self.len == BURST_SIZE
    }

    /// Free slots.
    pub fn remaining(&self) -> usize {
        BURST_SIZE - self.len
    }

    /// Appends an mbuf, or gives it back when the burst is full.
    #[inline]
    pub fn push(&mut self, mbuf: Mbuf<'e>) -> Result<(), Mbuf<'e>> {
        // `get_mut` rather than a full check and an index: one comparison, no panic path.
        let Some(slot) = self.slots.get_mut(self.len) else {
            return Err(mbuf);
        };
        slot.write(mbuf);
        self.len += 1;
        Ok(())
    }

    /// Removes the last mbuf.
    pub fn pop(&mut self) -> Option<Mbuf<'e>> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        // SAFETY: slot `len` (the old last) was initialised and owned; lowering `len` first
        // means it is read out exactly once.
        Some(unsafe { self.slots[self.len].assume_init_read() })
    }

    /// The mbufs, in order.
    pub fn as_slice(&self) -> &[Mbuf<'e>] {
        // SAFETY: slots[..len] are initialised (type invariant); MaybeUninit<T> has T's layout.
        unsafe { core::slice::from_raw_parts(self.slots.as_ptr().cast::<Mbuf<'e>>(), self.len) }
    }

    /// The mbufs, in order, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [Mbuf<'e>] {
        // SAFETY: as in `as_slice`, exclusively borrowed.
        unsafe {
            core::slice::from_raw_parts_mut(self.slots.as_mut_ptr().cast::<Mbuf<'e>>(), self.len)
        }
    }

    /// Iterates over the mbufs.
    pub fn iter(&self) -> core::slice::Iter<'_, Mbuf<'e>> {
        self.as_slice().iter()
    }

    /// Iterates over the mbufs mutably.
    pub fn iter_mut(&mut self) -> core::slice::IterMut<'_, Mbuf<'e>> {
        self.as_mut_slice().iter_mut()
    }

    /// Takes every mbuf out, in order, leaving the burst empty (mbufs not taken from the
    /// iterator are freed when it is dropped).
    pub fn drain(&mut self) -> Drain<'_, 'e> {
        let end = self.len;
        // Set first: if the Drain is leaked, the mbufs leak instead of being freed twice.
        self.len = 0;
        Drain {
            burst: self,
            next: 0,
            end,
        }
    }

    /// Frees every mbuf held (one bulk call).
    pub fn clear(&mut self) {
        let n = self.len;
        if n == 0 {
            return;
        }
        self.len = 0;
        // SAFETY: slots[..n] are owned mbufs; `len` is already 0 so they are not used again;
        // rte_pktmbuf_free_bulk frees each (chains included). n <= 32 fits in u32.
        unsafe { ffi::tz_pktmbuf_free_bulk(self.raw_slots(), n as u32) }
    }

    /// The slot array as DPDK's `struct rte_mbuf **`.
    pub(crate) fn raw_slots(&mut self) -> *mut *mut ffi::rte_mbuf {
        self.slots.as_mut_ptr().cast()
    }

    /// Marks `n` more slots, just written by DPDK, as initialised.
    ///
    /// # Safety
    ///
    /// `slots[len..len + n]` must hold owned, valid mbuf pointers and `len + n <= BURST_SIZE`.
    pub(crate) unsafe fn grow(&mut self, n: usize) {
        debug_assert!(self.len + n <= BURST_SIZE);
        self.len += n;
    }

    /// Forgets the first `n` mbufs (DPDK took them) and moves the rest to the front.
    ///
    /// # Safety
    ///
    /// `n <= len`, and ownership of the first `n` mbufs must have passed to someone else.
    pub(crate) unsafe fn consume_front(&mut self, n: usize) {
        debug_assert!(n <= self.len);
        let rest = self.len - n;
        let base = self.slots.as_mut_ptr();
        // SAFETY: both ranges are inside the array (n + rest == len <= BURST_SIZE); ptr::copy
        // allows overlap; the moved-from tail slots are then beyond `len` and never read.
        unsafe { core::ptr::copy(base.add(n), base, rest) };
        self.len = rest;
    }
}

impl Default for MbufBurst<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for MbufBurst<'_> {
    fn drop(&mut self) {
        self.clear();
    }
}

impl fmt::Debug for MbufBurst<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'e> Extend<Mbuf<'e>> for MbufBurst<'e> {
    /// Appends mbufs; those that do not fit are dropped (freed).
    fn extend<I: IntoIterator<Item = Mbuf<'e>>>(&mut self, iter: I) {
        for m in iter {
            let _ = self.push(m);
        }
    }
}

/// The iterator of [`MbufBurst::drain`].
pub struct Drain<'b, 'e> {
    burst: &'b mut MbufBurst<'e>,
    next: usize,
    end: usize,
}

impl<'e> Iterator for Drain<'_, 'e> {
    type Item = Mbuf<'e>;

    #[inline]
    fn next(&mut self) -> Option<Mbuf<'e>> {
        if self.next >= self.end {
            return None;
        }
        let i = self.next;
        self.next += 1;
        // SAFETY: i < end <= BURST_SIZE (the burst's len when the drain began), so the slot is
        // inside the array; slots[next..end] were initialised and owned when the drain began
        // (the burst's len is 0 meanwhile, so only this iterator reads them); each index is
        // read once.
        Some(unsafe { self.burst.slots.get_unchecked(i).assume_init_read() })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.end - self.next;
        (n, Some(n))
    }
}

impl ExactSizeIterator for Drain<'_, '_> {}

impl Drop for Drain<'_, '_> {
    fn drop(&mut self) {
        let n = self.end - self.next;
        if n == 0 {
            return;
        }
        // SAFETY: slots[next..end] are still owned and unread (see `next`); they are freed once
        // here; n <= 32.
        unsafe {
            let first = self.burst.raw_slots().add(self.next);
            ffi::tz_pktmbuf_free_bulk(first, n as u32);
        }
        self.next = self.end;
    }
}

impl fmt::Debug for Drain<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Drain")
            .field("remaining", &(self.end - self.next))
            .finish()
    }
}
