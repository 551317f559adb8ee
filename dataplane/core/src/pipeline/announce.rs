//! Gateway-originated ADD_ADDR: the gateway announces an address to an MPTCP client on behalf of
//! servers that cannot be configured (a VIP's `announce` setting).
//!
//! Once the gateway knows both keys of a connection (NAT: the server's key from its SYN/ACK and
//! the client's from the third ACK, cross-checked; DSR: both from the third ACK), it can compute
//! the HMAC that makes an ADD_ADDR acceptable to the client (RFC 8684 §3.4.1: HMAC-SHA256 keyed
//! with the sender's key, then the receiver's, over the address id, address and port). It sends
//! the client a pure ACK from the VIP carrying one ADD_ADDR:
//!
//! * `join-ports`: the VIP with the join port of the connection's backend. The client's joins
//!   then reach that backend by the stateless join-port map on any gateway instance, restarted
//!   or not, and the unmodified server sees them on its own address and port (NAT).
//! * `backend`: the backend's own address (and port, when it differs from the VIP's). The client
//!   joins the server directly; the gateway is off that subflow's path and only carries the
//!   first subflow, which may fail without ending the connection.
//!
//! ## The segment
//!
//! The segment must be in the client's window, or the client drops it without reading its
//! options:
//!
//! * NAT: it follows a server segment the gateway forwards, numbered right after it (sequence
//!   number = that segment's plus its length; its acknowledgment number and window). It leaves
//!   after that segment on the same queue, so the client sees it exactly in order.
//! * DSR (the server's packets never pass): sequence number = [`DSR_SEQ_AHEAD`] past the
//!   acknowledgment number of the client's packet that triggers it (server data the gateway
//!   cannot see may overtake it); acknowledgment number = what the client has sent; window = the
//!   client's own (the client takes it as the server's until the server's next segment). If it
//!   is refused all the same, it is sent again with fresher numbers.
//!
//! No timestamps (Linux checks PAWS only when a segment carries one) and no DSS (an ADD_ADDR on a
//! pure ACK needs none).
//!
//! ## Off the path: MP_PRIO
//!
//! In `backend` mode, once the client has echoed the ADD_ADDR, the gateway also sends MP_PRIO
//! with B = 1 on the first subflow (RFC 8684 §3.3.8): the client then treats the subflow through
//! the gateway as a backup and sends on its direct subflow to the server; the gateway carries
//! little more than the first subflow's acknowledgments (NAT: also the server's side of it).
//!
//! ## When
//!
//! Not with the third ACK itself: the server must have taken the third ACK before the client's
//! join reaches it, or it resets the join. NAT: with the server's first segment after it. DSR:
//! with the first client packet that acknowledges server data (see `start`).
//!
//! ## Until the echo
//!
//! The client echoes an ADD_ADDR (E = 1, no HMAC). The flow carries [`flags::ANNOUNCE`] until the
//! echo passes: its packets take the slow path, which looks for the echo, **absorbs** it (the
//! option becomes NOPs, the checksum is updated; the server never sees an echo of an address it
//! did not announce) and ends the announcement. Without an echo, the ADD_ADDR is sent again with a
//! later client packet after [`RESEND_MS`], at most [`MAX_SENDS`] times in all (a segment the
//! client judged stale, say because server data overtook it, is refreshed with current numbers).

use core::net::IpAddr;

use trapeze_wire::checksum;
use trapeze_wire::mptcp::{AddAddr, MpPrio};
use trapeze_wire::tcp::TcpFlags;

use super::ip::Ip;
use super::nat::Seg;
use super::{Ctx, Event, Frame};
use crate::crypto;
use crate::flow::addr_from_bytes;
use crate::pool::{Announce, Mac, PortId, ANNOUNCE_ADDRESS_ID};
use crate::tables::flow_table::{flags, FlowEntry};

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
/// `FlowEntry::announces` while waiting for the server: this bit, and the client packets seen
/// in the bits below it (`announce_ms` then holds the third ACK's acknowledgment number's low
/// 16 bits). Once sending: the number of ADD_ADDRs sent.
const WAITING: u8 = 0x80;
/// `FlowEntry::announces` in NAT off-path mode once the echo came: the MP_PRIO goes with the
/// server's next segment.
const PRIO_DUE: u8 = 0x40;
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
    pub(super) position: u16,
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
    fn push(&mut self, a: Announcement) -> bool {
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

/// The TCP numbers of a client segment: (seq, ack, window, segment length in sequence space).
fn numbers<F: Frame>(frame: &F, ip: &Ip) -> (u32, u32, u16, u32) {
    let d = frame.data();
    let t = &d[ip.l4..ip.end];
    let word = |i: usize| u32::from_be_bytes([t[i], t[i + 1], t[i + 2], t[i + 3]]);
    let hl = ((t[12] >> 4) as usize) * 4;
    let fin = u32::from(t[13] & 0x01);
    let len = (t.len().saturating_sub(hl)) as u32 + fin;
    (word(4), word(8), u16::from_be_bytes([t[14], t[15]]), len)
}

/// Starts announcing for a connection whose keys were just learned from the client's third ACK
/// `frame`. Does nothing unless the flow's VIP announces.
///
/// The ADD_ADDR is not sent yet: a client that gets it at once may open its join before the
/// server has taken the third ACK (a DSR tunnel, a slow path), and a server that does not know
/// the token yet resets the join (`MPJoinNoTokenFound`; seen in the test bed). The flow waits for
/// proof that the server has the connection: a client packet acknowledging server data (its
/// acknowledgment number moved past the third ACK's), or failing that [`WAIT_PACKETS`] client
/// packets.
pub(super) fn start<F: Frame>(cx: &mut Ctx<'_>, frame: &F, ip: &Ip, e: &mut FlowEntry) {
    if cx
        .pool
        .vip(e.vip)
        .is_none_or(|v| v.announce == Announce::Off)
    {
        return;
    }
    let (_, ack, _, _) = numbers(frame, ip);
    e.flags |= flags::ANNOUNCE;
    e.announces = WAITING;
    e.announce_ms = ack as u16;
}

/// TCP numbers for the ADD_ADDR segment.
#[derive(Debug, Clone, Copy)]
struct Numbers {
    seq: u32,
    ack: u32,
    window: u16,
}

impl Numbers {
    /// From a server segment passing to the client (NAT): right after it in sequence space,
    /// acknowledging what the server acknowledges, with the server's own window. The
    /// announcement leaves after that segment, so it is exactly in order.
    fn after_server<F: Frame>(frame: &F, ip: &Ip) -> Self {
        let (seq, ack, window, len) = numbers(frame, ip);
        Self {
            seq: seq.wrapping_add(len),
            ack,
            window,
        }
    }

    /// From a client segment (DSR, where the server's packets never pass): [`DSR_SEQ_AHEAD`]
    /// past the client's acknowledgment number, what the client has sent, and the client's own
    /// window.
    fn from_client<F: Frame>(frame: &F, ip: &Ip) -> Self {
        let (seq, ack, window, len) = numbers(frame, ip);
        Self {
            seq: ack.wrapping_add(DSR_SEQ_AHEAD),
            ack: seq.wrapping_add(len),
            window,
        }
    }
}

/// Queues one ADD_ADDR for the connection of `e`.
fn send(cx: &mut Ctx<'_>, e: &mut FlowEntry, n: Numbers, v6: bool) {
    let keys = cx
        .shared
        .tokens
        .owners(e.token)
        .as_slice()
        .iter()
        .find(|o| o.backend == e.backend && o.conn == e.key)
        .and_then(|o| Some((o.server_key, o.client_key?)));
    let (Some((server_key, client_key)), true) = (keys, e.has(flags::TOKEN_REF)) else {
        e.flags &= !flags::ANNOUNCE;
        return;
    };
    let Some(vip) = cx.pool.vip(e.vip) else {
        e.flags &= !flags::ANNOUNCE;
        return;
    };
    let announced = match vip.announce {
        Announce::Off => None,
        Announce::JoinPorts => vip.join_port(e.backend).map(|p| (vip.addr, Some(p))),
        Announce::Backend => cx.pool.backend(e.backend).and_then(|b| {
            let port = (b.port != vip.port).then_some(b.port);
            b.addr(v6).map(|a| (a, port))
        }),
    };
    let Some((addr, port)) = announced else {
        e.flags &= !flags::ANNOUNCE;
        return;
    };
    let hmac = crypto::add_addr_hmac(server_key, client_key, ANNOUNCE_ADDRESS_ID, &addr, port);
    let option = AnnounceOption::AddAddr(AddAddr {
        echo: false,
        address_id: ANNOUNCE_ADDRESS_ID,
        addr,
        port,
        truncated_hmac: Some(hmac),
    });
    if !queue(cx, e, n, option) {
        cx.w.stats.event(Event::AnnounceQueueFull);
        return;
    }
    e.announces = e.announces.saturating_add(1);
    e.announce_ms = cx.now_ms as u16;
    cx.w.stats.event(Event::AnnounceSent);
}

/// Queues a pure ACK from the VIP to the client of `e` carrying `option`; false when the queue
/// is full or the client port is gone.
fn queue(cx: &mut Ctx<'_>, e: &FlowEntry, n: Numbers, option: AnnounceOption) -> bool {
    let Some(p) = cx.pool.port(PortId(e.client_port)) else {
        return false;
    };
    let a = Announcement {
        port: PortId(e.client_port),
        src_mac: p.mac,
        dst_mac: e.client_mac,
        vlan: p.vlan,
        src: e.key.dst,
        dst: e.key.src,
        src_port: e.key.dst_port,
        dst_port: e.key.src_port,
        seq: n.seq,
        ack: n.ack,
        window: n.window,
        after: cx.w.announcements.position,
        option,
    };
    cx.w.announcements.push(a)
}

/// Off-path mode, once the client took the ADD_ADDR: MP_PRIO (backup) on the first subflow, so
/// that the client sends on its direct subflow and the gateway carries (nearly) nothing more.
fn send_backup(cx: &mut Ctx<'_>, e: &mut FlowEntry, n: Numbers) {
    e.flags &= !flags::ANNOUNCE;
    if queue(cx, e, n, AnnounceOption::Backup) {
        cx.w.stats.event(Event::PrioBackupSent);
    } else {
        cx.w.stats.event(Event::AnnounceQueueFull);
    }
}

/// Whether a sent announcement is due again; gives up after [`MAX_SENDS`].
fn resend_due(cx: &mut Ctx<'_>, e: &mut FlowEntry) -> bool {
    let since = (cx.now_ms as u16).wrapping_sub(e.announce_ms) as u32;
    if since < RESEND_MS {
        return false;
    }
    if e.announces >= MAX_SENDS {
        e.flags &= !flags::ANNOUNCE;
        cx.w.stats.event(Event::AnnounceUnechoed);
        return false;
    }
    true
}

/// A client packet of a flow that owes an announcement: absorbs the echo; in DSR, also sends
/// the first ADD_ADDR once the server has the connection, and sends it again.
pub(super) fn on_client_segment<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &mut F,
    ip: &Ip,
    seg: &Seg,
    e: &mut FlowEntry,
) {
    if seg.has(TcpFlags::SYN.0 | TcpFlags::RST.0) {
        return;
    }
    let dsr = cx.pool.vip(e.vip).is_some_and(|v| v.mode.dsr().is_some());
    if e.announces & WAITING != 0 {
        if !dsr {
            return; // NAT: the server's next segment starts it
        }
        let (_, ack, _, _) = numbers(frame, ip);
        let seen = (e.announces & !WAITING) + 1;
        if ack as u16 == e.announce_ms && seen < WAIT_PACKETS {
            e.announces = WAITING | seen;
            return;
        }
        e.announces = 0;
    } else {
        if e.announces == PRIO_DUE {
            return; // NAT: the MP_PRIO follows the server's next segment
        }
        if absorb_echo(frame, ip, seg) {
            cx.w.stats.event(Event::AnnounceEchoed);
            let off_path = cx
                .pool
                .vip(e.vip)
                .is_some_and(|v| v.announce == Announce::Backend);
            if !off_path {
                e.flags &= !flags::ANNOUNCE;
            } else if dsr {
                send_backup(cx, e, Numbers::from_client(frame, ip));
            } else {
                e.announces = PRIO_DUE;
            }
            return;
        }
        if !dsr || !resend_due(cx, e) {
            return;
        }
    }
    send(cx, e, Numbers::from_client(frame, ip), ip.v6);
}

/// A server packet (NAT) of a flow that owes an announcement: any segment after the third ACK
/// proves the server has the connection; the ADD_ADDR follows it, numbered right after it.
pub(super) fn on_server_segment<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &F,
    ip: &Ip,
    seg: &Seg,
    e: &mut FlowEntry,
) {
    if seg.has(TcpFlags::SYN.0 | TcpFlags::RST.0) {
        return;
    }
    if e.announces == PRIO_DUE {
        send_backup(cx, e, Numbers::after_server(frame, ip));
        return;
    }
    if e.announces & WAITING != 0 {
        e.announces = 0;
    } else if !resend_due(cx, e) {
        return;
    }
    send(cx, e, Numbers::after_server(frame, ip), ip.v6);
}

/// Turns the client's echo of our ADD_ADDR (E = 1, our address id) into NOPs, updating the TCP
/// checksum. Returns whether there was one.
fn absorb_echo<F: Frame>(frame: &mut F, ip: &Ip, seg: &Seg) -> bool {
    let (start, end) = (seg.opt_at, seg.opt_at + seg.opt_len);
    let data = frame.data();
    let mut at = start;
    let mut found = None;
    while at < end {
        match data[at] {
            0 => break,
            1 => at += 1,
            _ => {
                let Some(&len) = data.get(at + 1) else { break };
                let len = len as usize;
                if len < 2 || at + len > end {
                    break;
                }
                let o = &data[at..at + len];
                // Kind 30, subtype ADD_ADDR (3) in the high nibble, E bit, our address id.
                if o[0] == 30
                    && len >= 8
                    && o[2] >> 4 == 3
                    && o[2] & 1 == 1
                    && o[3] == ANNOUNCE_ADDRESS_ID
                {
                    found = Some((at, len));
                    break;
                }
                at += len;
            }
        }
    }
    let Some((at, len)) = found else {
        return false;
    };
    // The changed bytes, widened to 16-bit words of the TCP segment (the option may start at an
    // odd offset): at most 22 bytes of option plus one on each side.
    let lo = ip.l4 + ((at - ip.l4) & !1);
    let hi = (ip.l4 + ((at + len - ip.l4 + 1) & !1)).min(ip.end);
    let mut old = [0u8; 24];
    let n = hi - lo;
    old[..n].copy_from_slice(&data[lo..hi]);
    let buf = frame.data_mut();
    buf[at..at + len].fill(1);
    let csum_at = ip.l4 + 16;
    let c = u16::from_be_bytes([buf[csum_at], buf[csum_at + 1]]);
    let c = checksum::update_bytes(c, &old[..n], &buf[lo..hi]);
    buf[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
    true
}
