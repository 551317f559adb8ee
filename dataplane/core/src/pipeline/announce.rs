//! Gateway-originated ADD_ADDR, the output side: the frames the gateway sends an MPTCP client on
//! behalf of servers that cannot be configured (a VIP's `announce` setting), and the worker's
//! queue of them.
//!
//! Like a [`Verdict`](super::Verdict), an [`Announcement`] is something the pipeline hands to the
//! runtime: a pure ACK from the VIP carrying one ADD_ADDR (or an MP_PRIO), which
//! [`Announcement::emit`] writes into a fresh buffer. A worker queues them in its
//! [`AnnounceQueue`] during a burst; the runtime sends each right after the frame it must follow.
//! The constants are the protocol's parameters. When an announcement is due, how its segment is
//! numbered, and how the client's echo is absorbed are the flow layer's decisions
//! (`pipeline/flow/announcing.rs` explains them).

use core::net::IpAddr;

use trapeze_wire::checksum;
use trapeze_wire::mptcp::{AddAddr, MpPrio};

use crate::flow::addr_from_bytes;
use crate::pool::{Mac, PortId};

/// ADD_ADDRs sent per connection at most, the first included.
pub const MAX_SENDS: u8 = 3;
/// Client packets after the third ACK after which the first ADD_ADDR goes even if the server
/// has sent no data yet (an upload). Not fewer: the test bed's DSR decapsulator lags enough that
/// a join sent after 6 client packets still beat the third ACK to the server.
pub const WAIT_PACKETS: u8 = 32;
/// DSR: how far past the client's acknowledgment number the ADD_ADDR is numbered. Server data
/// the gateway cannot see may reach the client first; Linux reads a zero-length segment's
/// options if its sequence number lies between the last acknowledgment it sent and the end of
/// its receive window (`tcp_sequence`), and then drops it as it carries no data. Numbered at the
/// acknowledgment number itself it is stale as soon as the client acknowledges newer data
/// (measured in the test bed: no ADD_ADDR was taken during bulk transfers); 16 KB ahead it stays
/// acceptable while less than 16 KB overtakes it, within any receive window of 16 KB or more.
pub const DSR_SEQ_AHEAD: u32 = 16 * 1024;
/// Minimum time between two sends, milliseconds.
pub const RESEND_MS: u32 = 200;
/// Announcements a worker queues per burst; more wait for a later client packet.
pub const QUEUE_LEN: usize = 64;

/// A pure ACK with one ADD_ADDR, from a VIP to a client: everything the runtime needs to build the
/// frame ([`Announcement::emit`]) and send it on `port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announcement {
    /// The port to send it on (the client's).
    pub port: PortId,
    /// Ethernet source (the port's MAC).
    pub src_mac: Mac,
    /// Ethernet destination (the client's next hop).
    pub dst_mac: Mac,
    /// The port's 802.1Q VLAN.
    pub vlan: Option<u16>,
    /// VIP (key form: IPv4-mapped for IPv4).
    pub src: [u8; 16],
    /// Client (key form).
    pub dst: [u8; 16],
    /// VIP port.
    pub src_port: u16,
    /// Client port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Window.
    pub window: u16,
    /// The option.
    pub option: AnnounceOption,
    /// The index, in its [`process_burst`](super::process_burst) call, of the frame this one
    /// must follow on the wire (the server segment it is numbered after), or [`AFTER_BURST`].
    pub after: u16,
}

/// The MPTCP option an [`Announcement`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnounceOption {
    /// The address announced (with its HMAC).
    AddAddr(AddAddr),
    /// MP_PRIO with B = 1 (off-path mode, once the client took the ADD_ADDR): the client should
    /// treat the subflow it arrives on, the one through the gateway, as a backup and send on
    /// its direct subflow instead.
    Backup,
}

impl AnnounceOption {
    fn buffer_len(&self) -> usize {
        match self {
            Self::AddAddr(a) => a.buffer_len(),
            Self::Backup => MpPrio { backup: true }.buffer_len(),
        }
    }

    fn emit(&self, buf: &mut [u8]) -> Option<()> {
        match self {
            Self::AddAddr(a) => a.emit(buf).ok().map(|_| ()),
            Self::Backup => MpPrio { backup: true }.emit(buf).ok().map(|_| ()),
        }
    }

    /// The ADD_ADDR, if this is one.
    pub fn add_addr(&self) -> Option<&AddAddr> {
        match self {
            Self::AddAddr(a) => Some(a),
            Self::Backup => None,
        }
    }
}

/// [`Announcement::after`] of one that may go after the whole burst.
pub const AFTER_BURST: u16 = u16::MAX;

impl Announcement {
    fn v6(&self) -> bool {
        !matches!(addr_from_bytes(self.src), IpAddr::V4(_))
    }

    fn options_len(&self) -> usize {
        (self.option.buffer_len() + 3) & !3
    }

    /// Length of the frame [`Announcement::emit`] writes.
    pub fn frame_len(&self) -> usize {
        let l2 = if self.vlan.is_some() { 18 } else { 14 };
        let l3 = if self.v6() { 40 } else { 20 };
        l2 + l3 + 20 + self.options_len()
    }

    /// Writes the frame into `buf`; returns its length, or `None` when `buf` is too short.
    pub fn emit(&self, buf: &mut [u8]) -> Option<usize> {
        let len = self.frame_len();
        let buf = buf.get_mut(..len)?;
        buf.fill(0);
        let v6 = self.v6();
        buf[0..6].copy_from_slice(&self.dst_mac);
        buf[6..12].copy_from_slice(&self.src_mac);
        let mut at = 12;
        if let Some(vid) = self.vlan {
            buf[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
            buf[14..16].copy_from_slice(&(vid & 0x0fff).to_be_bytes());
            at = 16;
        }
        let ethertype: u16 = if v6 { 0x86dd } else { 0x0800 };
        buf[at..at + 2].copy_from_slice(&ethertype.to_be_bytes());
        let l3 = at + 2;
        let tcp_len = 20 + self.options_len();
        let l4 = if v6 {
            let h = &mut buf[l3..l3 + 40];
            h[0] = 0x60;
            h[4..6].copy_from_slice(&(tcp_len as u16).to_be_bytes());
            h[6] = 6;
            h[7] = 64;
            h[8..24].copy_from_slice(&self.src);
            h[24..40].copy_from_slice(&self.dst);
            l3 + 40
        } else {
            let h = &mut buf[l3..l3 + 20];
            h[0] = 0x45;
            h[2..4].copy_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
            h[6] = 0x40; // DF
            h[8] = 64;
            h[9] = 6;
            h[12..16].copy_from_slice(&self.src[12..]);
            h[16..20].copy_from_slice(&self.dst[12..]);
            let c = checksum::finish(checksum::data(h));
            h[10..12].copy_from_slice(&c.to_be_bytes());
            l3 + 20
        };
        let t = &mut buf[l4..l4 + tcp_len];
        t[0..2].copy_from_slice(&self.src_port.to_be_bytes());
        t[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
        t[4..8].copy_from_slice(&self.seq.to_be_bytes());
        t[8..12].copy_from_slice(&self.ack.to_be_bytes());
        t[12] = ((tcp_len / 4) as u8) << 4;
        t[13] = 0x10; // ACK
        t[14..16].copy_from_slice(&self.window.to_be_bytes());
        let opt = &mut t[20..];
        opt.fill(1); // NOP padding after the option
        self.option.emit(opt)?;
        let pseudo = if v6 {
            checksum::pseudo_header_v6(&self.src, &self.dst, 6, tcp_len as u32)
        } else {
            let (mut s, mut d) = ([0u8; 4], [0u8; 4]);
            s.copy_from_slice(&self.src[12..]);
            d.copy_from_slice(&self.dst[12..]);
            checksum::pseudo_header_v4(s, d, 6, tcp_len as u32)
        };
        let c = checksum::finish(checksum::combine(&[pseudo, checksum::data(t)]));
        t[16..18].copy_from_slice(&c.to_be_bytes());
        Some(len)
    }
}

/// A worker's announcements of one burst: a fixed-capacity queue the runtime drains after the
/// burst (no allocation after construction).
#[derive(Debug)]
pub struct AnnounceQueue {
    items: Vec<Announcement>,
    /// The frame of the burst being decided (set by `process_burst`).
    pub(crate) position: u16,
}

impl Default for AnnounceQueue {
    fn default() -> Self {
        Self {
            items: Vec::with_capacity(QUEUE_LEN),
            position: AFTER_BURST,
        }
    }
}

impl AnnounceQueue {
    /// Queues one; false when the queue is full.
    pub(crate) fn push(&mut self, a: Announcement) -> bool {
        if self.items.len() >= QUEUE_LEN {
            return false;
        }
        self.items.push(a);
        true
    }

    /// Whether nothing is queued.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Takes the queued announcements, oldest first.
    pub fn drain(&mut self) -> impl Iterator<Item = Announcement> + '_ {
        self.items.drain(..)
    }

    /// The oldest queued announcement, if it must follow frame `i` of the burst (or an earlier
    /// one): the runtime sends each right after its frame.
    pub fn pop_after(&mut self, i: usize) -> Option<Announcement> {
        let first = self.items.first()?;
        if first.after != AFTER_BURST && usize::from(first.after) <= i {
            Some(self.items.remove(0))
        } else {
            None
        }
    }
}
