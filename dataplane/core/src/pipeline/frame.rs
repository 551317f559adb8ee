//! The packet buffer the pipeline works on, abstracted so the core needs no DPDK: the runtime
//! implements [`Frame`] for its mbuf type, tests and benches use [`VecFrame`]. Also the two edits
//! of the Ethernet header every outgoing frame gets (`set_macs`, `retag`).

use trapeze_wire::field::{read_u16, write_u16};

use crate::pool::Mac;

/// A contiguous frame with headroom and tailroom (a single-segment DPDK mbuf is one).
pub trait Frame {
    /// The frame's bytes, from the Ethernet header on.
    fn data(&self) -> &[u8];
    /// The frame's bytes, mutably.
    fn data_mut(&mut self) -> &mut [u8];
    /// Grows the frame by `n` bytes at the front (into the headroom). The new bytes are
    /// unspecified. Returns false, changing nothing, when the headroom is too small.
    fn prepend(&mut self, n: usize) -> bool;
    /// Removes `n` bytes from the front. Returns false, changing nothing, if `n > len`.
    fn adj(&mut self, n: usize) -> bool;
    /// Sets the length: shrinks, or grows into the tailroom (new bytes unspecified). Returns
    /// false, changing nothing, when there is not enough tailroom.
    fn set_len(&mut self, len: usize) -> bool;
    /// Current length.
    fn len(&self) -> usize {
        self.data().len()
    }
    /// True when empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A frame in a heap buffer with DPDK-like headroom (128 bytes) and tailroom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VecFrame {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl VecFrame {
    /// Default headroom, as `RTE_PKTMBUF_HEADROOM`.
    pub const HEADROOM: usize = 128;

    /// A frame holding `bytes`, with the default headroom and `tailroom` bytes after it.
    pub fn with_room(bytes: &[u8], headroom: usize, tailroom: usize) -> Self {
        let mut buf = vec![0u8; headroom + bytes.len() + tailroom];
        buf[headroom..headroom + bytes.len()].copy_from_slice(bytes);
        Self {
            buf,
            start: headroom,
            end: headroom + bytes.len(),
        }
    }

    /// A frame holding `bytes`, sized like a 2 KiB mbuf.
    pub fn new(bytes: &[u8]) -> Self {
        let tail = 2048usize.saturating_sub(bytes.len()).max(64);
        Self::with_room(bytes, Self::HEADROOM, tail)
    }

    /// Replaces the contents, keeping the buffer (for benches: no allocation per packet).
    pub fn reset(&mut self, bytes: &[u8]) {
        self.start = Self::HEADROOM.min(self.buf.len());
        let end = (self.start + bytes.len()).min(self.buf.len());
        self.buf[self.start..end].copy_from_slice(&bytes[..end - self.start]);
        self.end = end;
    }
}

impl Frame for VecFrame {
    #[inline]
    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }
    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.end]
    }
    fn prepend(&mut self, n: usize) -> bool {
        if n > self.start {
            return false;
        }
        self.start -= n;
        true
    }
    fn adj(&mut self, n: usize) -> bool {
        if n > self.end - self.start {
            return false;
        }
        self.start += n;
        true
    }
    fn set_len(&mut self, len: usize) -> bool {
        if self.start + len > self.buf.len() {
            return false;
        }
        self.end = self.start + len;
        true
    }
}

/// Sets source and destination MACs.
#[inline]
pub(crate) fn set_macs(buf: &mut [u8], src: &Mac, dst: &Mac) {
    buf[0..6].copy_from_slice(dst);
    buf[6..12].copy_from_slice(src);
}

/// Puts the frame's 802.1Q framing in line with the egress port: sets the VID when both sides
/// are tagged, inserts or strips the 4-byte tag when they differ. `l2_len` is the ingress header
/// length (18 when the frame carries a tag, priority tags included). Returns false when the
/// frame has no headroom for a tag.
#[inline]
pub(crate) fn retag<F: Frame>(frame: &mut F, l2_len: usize, egress_vlan: Option<u16>) -> bool {
    let tagged = l2_len == 18;
    match (tagged, egress_vlan) {
        (false, None) => true,
        (true, Some(vid)) => {
            let buf = frame.data_mut();
            let tci = (read_u16(buf, 14) & 0xf000) | (vid & 0x0fff);
            write_u16(buf, 14, tci);
            true
        }
        (true, None) => {
            frame.data_mut().copy_within(0..12, 4);
            frame.adj(4)
        }
        (false, Some(vid)) => {
            if !frame.prepend(4) {
                return false;
            }
            let buf = frame.data_mut();
            buf.copy_within(4..16, 0);
            write_u16(buf, 12, 0x8100);
            write_u16(buf, 14, vid & 0x0fff);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_bounded() {
        let mut f = VecFrame::with_room(&[1, 2, 3], 2, 1);
        assert!(!f.prepend(3));
        assert!(f.prepend(2));
        assert_eq!(f.len(), 5);
        assert!(f.adj(2));
        assert_eq!(f.data(), &[1, 2, 3]);
        assert!(f.set_len(4));
        assert!(!f.set_len(5));
        assert!(!f.adj(9));
        assert!(f.set_len(0));
        assert!(f.is_empty());
    }
}
