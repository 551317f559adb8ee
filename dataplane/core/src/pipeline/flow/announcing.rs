//! Announcing: when the gateway sends its ADD_ADDR to an MPTCP client on behalf of servers that
//! cannot be configured (a VIP's `announce` setting), how the segment is numbered, and the
//! client's echo. The frames themselves and the queue are `pipeline::announce`'s.
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

use trapeze_wire::checksum;
use trapeze_wire::mptcp::AddAddr;
use trapeze_wire::tcp::TcpFlags;

use crate::crypto;
use crate::pipeline::announce::{
    AnnounceOption, Announcement, DSR_SEQ_AHEAD, MAX_SENDS, RESEND_MS, WAIT_PACKETS,
};
use crate::pipeline::context::Ctx;
use crate::pipeline::frame::Frame;
use crate::pipeline::parse::{Ip, Seg, TcpNumbers};
use crate::pipeline::verdict::{Event, WorkerStats};
use crate::pool::{Announce, PortId, ANNOUNCE_ADDRESS_ID, MIGRATE_ADDRESS_ID};
use crate::tables::flow_table::{flags, FlowEntry};

/// `FlowEntry::announces` while waiting for the server: this bit, and the client packets seen
/// in the bits below it (`FlowEntry::pending` then holds the third ACK's acknowledgment
/// number's low 16 bits). Once sending: the number of ADD_ADDRs sent.
const WAITING: u8 = 0x80;
/// `FlowEntry::announces` in NAT off-path mode once the echo came: the MP_PRIO goes with the
/// server's next segment.
const PRIO_DUE: u8 = 0x40;
/// `FlowEntry::announces`: the flow was seen by the migration walk (`migration.rs`) and kept
/// whatever the phase; with [`flags::ANNOUNCE`] the announcement is the backend's direct address.
pub(super) const MIGRATE: u8 = 0x20;
/// `FlowEntry::announces` phases of a migrated connection after the MP_PRIO (`migration.rs`),
/// with [`MIGRATE`]: watched (with [`flags::ANNOUNCE`]; the bits [`WATCH_BASE`] say which sides'
/// DATA_ACK lead bases `FlowEntry::pending` holds); then, off the slow path, how it ended.
const WATCH: u8 = 0xC0;
/// With [`WATCH`]: the base of the client's (bit 0) and of the server's (bit 1) DATA_ACK lead
/// are set.
const WATCH_BASE: [u8; 2] = [0x01, 0x02];
/// With [`WATCH`] (NAT): migrated, the MP_PRIO to the server goes with the client's next packet.
const SERVER_PRIO_DUE: u8 = 0x04;
const MIGRATED: u8 = 0x50;
const CLOSED: u8 = 0x51;
const LEFT_BEHIND: u8 = 0x52;
/// `FlowEntry::announces` of a join through the gateway of a migrating connection once its
/// MP_PRIO went (with [`MIGRATE`], off the slow path).
const JOIN_BACKUP: u8 = 0x53;

/// Where a flow marked [`MIGRATE`] stands, for the migration walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Announcing, waiting for the MP_PRIO's turn, or watched.
    Running,
    /// Left to the drain policy.
    LeftBehind,
    /// Migrated or closed.
    Done,
}

/// How a watched migration ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Migrated,
    Closed,
}

pub(super) fn migration_phase(e: &FlowEntry) -> Phase {
    match phase(e) {
        MIGRATED | CLOSED => Phase::Done,
        LEFT_BEHIND => Phase::LeftBehind,
        _ if e.has(flags::ANNOUNCE) => Phase::Running,
        _ => Phase::LeftBehind,
    }
}

/// Whether a flow is watched ([`watch`]): after the MP_PRIO, until migrated or closed.
#[inline]
fn watched(e: &FlowEntry) -> bool {
    e.announces & MIGRATE != 0 && phase(e) & WATCH == WATCH
}

/// The base (64 KiB units) of a watched flow's DATA_ACK lead on one side (0: the client's, 1:
/// the server's), once that side's first DATA_ACK came; the two share `FlowEntry::pending`.
pub(super) fn watch_base(e: &FlowEntry, side: usize) -> Option<u16> {
    (phase(e) & WATCH_BASE[side] != 0).then_some((e.pending >> (16 * side)) as u16)
}

pub(super) fn set_watch_base(e: &mut FlowEntry, side: usize, base: u16) {
    set_phase(e, phase(e) | WATCH_BASE[side]);
    let shift = 16 * side;
    e.pending = (e.pending & !(0xffff << shift)) | (u32::from(base) << shift);
}

/// NAT: whether a migrated flow still owes the server its MP_PRIO.
pub(super) fn server_prio_due(e: &FlowEntry) -> bool {
    phase(e) & SERVER_PRIO_DUE != 0
}

pub(super) fn set_server_prio_due(e: &mut FlowEntry) {
    set_phase(e, phase(e) | SERVER_PRIO_DUE);
}

/// NAT, a migrated connection: asks the server too (MP_PRIO B = 1, as if from the client, on a
/// pure ACK that repeats the client's segment `t` just forwarded: its next sequence number and
/// its acknowledgment) to make the subflow through the gateway a backup. The server then sends
/// on the direct subflow as well, and nothing is in flight through the gateway when the
/// backend leaves it (seen in the test bed: without it, the server's data stays on the
/// gateway's subflow until the removal, and the connection waits for a retransmission).
pub(super) fn send_server_backup(cx: &mut Ctx<'_>, e: &FlowEntry, t: &TcpNumbers, v6: bool) {
    let Some(b) = cx.pool.fwd(e.backend) else {
        return;
    };
    let (Some(&dst), Some(dst_mac)) = (b.addr(v6), b.mac) else {
        return;
    };
    let a = Announcement {
        port: b.egress,
        src_mac: b.egress_mac,
        dst_mac,
        vlan: b.egress_vlan,
        src: e.key.src,
        dst,
        src_port: e.key.src_port,
        dst_port: b.port,
        seq: t.seq.wrapping_add(t.len),
        ack: t.ack,
        window: t.window,
        after: cx.w.announcements.position,
        option: AnnounceOption::Backup,
    };
    if cx.w.announcements.push(a) {
        cx.w.stats.event(Event::PrioBackupSent);
    } else {
        cx.w.stats.event(Event::AnnounceQueueFull);
    }
}

/// Ends a flow's migration (migrated or closed): counted, and off the slow path.
pub(super) fn finish(e: &mut FlowEntry, how: Outcome, stats: &mut WorkerStats) {
    e.flags &= !flags::ANNOUNCE;
    set_phase(
        e,
        match how {
            Outcome::Migrated => MIGRATED,
            Outcome::Closed => CLOSED,
        },
    );
    if let Some(c) = stats.backends.get_mut(e.backend.0 as usize) {
        match how {
            Outcome::Migrated => c.migrate_migrated += 1,
            Outcome::Closed => c.migrate_closed += 1,
        }
    }
}

/// Leaves a flow of a migrating backend to the drain policy (plain TCP, unknown keys, no echo):
/// counted once, and off the slow path.
pub(super) fn leave_behind(e: &mut FlowEntry, stats: &mut WorkerStats) {
    e.flags &= !flags::ANNOUNCE;
    e.announces = MIGRATE | LEFT_BEHIND;
    if let Some(c) = stats.backends.get_mut(e.backend.0 as usize) {
        c.migrate_left_behind += 1;
    }
}

/// The phase of `FlowEntry::announces` (without the [`MIGRATE`] mark).
#[inline]
fn phase(e: &FlowEntry) -> u8 {
    e.announces & !MIGRATE
}

#[inline]
fn set_phase(e: &mut FlowEntry, v: u8) {
    e.announces = (e.announces & MIGRATE) | v;
}

/// Starts announcing the direct address of a draining backend to an established MPTCP connection
/// (the migration walk): the next packet either way sends it.
pub(super) fn start_migration(now_ms: u32, e: &mut FlowEntry) {
    e.flags |= flags::ANNOUNCE;
    e.announces = MIGRATE;
    set_reference(e, (now_ms as u16).wrapping_sub(RESEND_MS as u16));
}

/// Asks, with the next packet either way (NAT: the server's, DSR: the client's), the client to
/// make a join through the gateway of a migrating backend's connection a backup (MP_PRIO), as
/// its first subflow will be: the client then sends on its direct subflow only.
pub(super) fn start_join_backup(e: &mut FlowEntry) {
    e.flags |= flags::ANNOUNCE;
    e.announces = MIGRATE | PRIO_DUE;
}

/// The 16-bit reference announcing keeps in [`FlowEntry::pending`]: the third ACK's
/// acknowledgment number while waiting for the server, then the time of the last send.
#[inline]
fn reference(e: &FlowEntry) -> u16 {
    e.pending as u16
}

#[inline]
fn set_reference(e: &mut FlowEntry, v: u16) {
    e.pending = u32::from(v);
}

/// Starts announcing for a connection whose keys were just learned from the client's third ACK
/// (its numbers `t`). Does nothing unless the flow's VIP announces.
///
/// The ADD_ADDR is not sent yet: a client that gets it at once may open its join before the
/// server has taken the third ACK (a DSR tunnel, a slow path), and a server that does not know
/// the token yet resets the join (`MPJoinNoTokenFound`; seen in the test bed). The flow waits for
/// proof that the server has the connection: a client packet acknowledging server data (its
/// acknowledgment number moved past the third ACK's), or failing that [`WAIT_PACKETS`] client
/// packets.
pub(crate) fn start(cx: &mut Ctx<'_>, t: &TcpNumbers, e: &mut FlowEntry) {
    if cx
        .pool
        .vip(e.vip)
        .is_none_or(|v| v.announce == Announce::Off)
    {
        return;
    }
    let ack = t.ack;
    e.flags |= flags::ANNOUNCE;
    e.announces = WAITING;
    set_reference(e, ack as u16);
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
    fn after_server(t: &TcpNumbers) -> Self {
        Self {
            seq: t.seq.wrapping_add(t.len),
            ack: t.ack,
            window: t.window,
        }
    }

    /// From a client segment (DSR, where the server's packets never pass): [`DSR_SEQ_AHEAD`]
    /// past the client's acknowledgment number, what the client has sent, and the client's own
    /// window.
    fn from_client(t: &TcpNumbers) -> Self {
        Self {
            seq: t.ack.wrapping_add(DSR_SEQ_AHEAD),
            ack: t.seq.wrapping_add(t.len),
            window: t.window,
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
    let migrate = e.announces & MIGRATE != 0;
    let (Some((server_key, client_key)), true) = (keys, e.has(flags::TOKEN_REF)) else {
        give_up(cx, e, migrate);
        return;
    };
    let Some(vip) = cx.pool.vip(e.vip) else {
        give_up(cx, e, migrate);
        return;
    };
    let announced = match vip.announce {
        _ if migrate => cx.pool.backend(e.backend).and_then(|b| {
            let port = (b.port != vip.port).then_some(b.port);
            b.direct.filter(|_| b.migrates()).map(|a| (a, port))
        }),
        Announce::Off => None,
        Announce::JoinPorts => vip.join_port(e.backend).map(|p| (vip.addr, Some(p))),
        Announce::Backend => cx.pool.backend(e.backend).and_then(|b| {
            let port = (b.port != vip.port).then_some(b.port);
            b.addr(v6).map(|a| (a, port))
        }),
    };
    let Some((addr, port)) = announced else {
        give_up(cx, e, migrate);
        return;
    };
    let id = if migrate {
        MIGRATE_ADDRESS_ID
    } else {
        ANNOUNCE_ADDRESS_ID
    };
    let hmac = crypto::add_addr_hmac(server_key, client_key, id, &addr, port);
    let option = AnnounceOption::AddAddr(AddAddr {
        echo: false,
        address_id: id,
        addr,
        port,
        truncated_hmac: Some(hmac),
    });
    if !queue(cx, e, n, option) {
        cx.w.stats.event(Event::AnnounceQueueFull);
        return;
    }
    if migrate && phase(e) == 0 {
        if let Some(c) = cx.w.stats.backends.get_mut(e.backend.0 as usize) {
            c.migrate_announced += 1;
        }
    }
    e.announces = e.announces.saturating_add(1);
    set_reference(e, cx.now_ms as u16);
    cx.w.stats.event(Event::AnnounceSent);
}

/// An announcement that cannot be sent ends; a migration is left behind.
fn give_up(cx: &mut Ctx<'_>, e: &mut FlowEntry, migrate: bool) {
    e.flags &= !flags::ANNOUNCE;
    if migrate {
        leave_behind(e, &mut cx.w.stats);
    }
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
/// that the client sends on its direct subflow and the gateway carries (nearly) nothing more. A
/// migration is then watched ([`watch`]) until its data flows elsewhere.
fn send_backup(cx: &mut Ctx<'_>, e: &mut FlowEntry, n: Numbers) {
    if e.announces & MIGRATE != 0 && !e.has(flags::JOIN) {
        set_phase(e, WATCH);
    } else {
        e.flags &= !flags::ANNOUNCE;
        if e.announces & MIGRATE != 0 {
            set_phase(e, JOIN_BACKUP);
        }
    }
    if queue(cx, e, n, AnnounceOption::Backup) {
        cx.w.stats.event(Event::PrioBackupSent);
    } else {
        cx.w.stats.event(Event::AnnounceQueueFull);
    }
}

/// Whether a sent announcement is due again; gives up after [`MAX_SENDS`].
fn resend_due(cx: &mut Ctx<'_>, e: &mut FlowEntry) -> bool {
    let since = (cx.now_ms as u16).wrapping_sub(reference(e)) as u32;
    if since < RESEND_MS {
        return false;
    }
    if phase(e) >= MAX_SENDS {
        cx.w.stats.event(Event::AnnounceUnechoed);
        give_up(cx, e, e.announces & MIGRATE != 0);
        return false;
    }
    true
}

/// A client packet (its numbers `t`) of a flow that owes an announcement: absorbs the echo; in
/// DSR, also sends the first ADD_ADDR once the server has the connection, and sends it again.
pub(crate) fn on_client_segment<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &mut F,
    ip: &Ip,
    seg: &Seg,
    t: &TcpNumbers,
    e: &mut FlowEntry,
) {
    if watched(e) {
        if !seg.has(TcpFlags::SYN.0) {
            watch(cx, frame, seg, t, e, 0, ip.v6);
        }
        return;
    }
    if seg.has(TcpFlags::SYN.0 | TcpFlags::RST.0) {
        return;
    }
    let dsr = cx.pool.vip(e.vip).is_some_and(|v| v.mode.dsr().is_some());
    if phase(e) & WAITING != 0 {
        if !dsr {
            return; // NAT: the server's next segment starts it
        }
        let seen = (phase(e) & !WAITING) + 1;
        if t.ack as u16 == reference(e) && seen < WAIT_PACKETS {
            set_phase(e, WAITING | seen);
            return;
        }
        set_phase(e, 0);
    } else {
        if phase(e) == PRIO_DUE {
            // NAT: the MP_PRIO follows the server's next segment. DSR: only a migrating
            // connection's join waits for it here (a first subflow's goes with the echo).
            if dsr {
                send_backup(cx, e, Numbers::from_client(t));
            }
            return;
        }
        if absorb_echo(frame, ip, seg) {
            cx.w.stats.event(Event::AnnounceEchoed);
            let migrate = e.announces & MIGRATE != 0;
            let off_path = migrate
                || cx
                    .pool
                    .vip(e.vip)
                    .is_some_and(|v| v.announce == Announce::Backend);
            if !off_path {
                e.flags &= !flags::ANNOUNCE;
            } else if dsr {
                send_backup(cx, e, Numbers::from_client(t));
            } else {
                set_phase(e, PRIO_DUE);
            }
            return;
        }
        if !dsr || !resend_due(cx, e) {
            return;
        }
    }
    send(cx, e, Numbers::from_client(t), ip.v6);
}

/// A server packet (NAT; its numbers `t`) of a flow that owes an announcement: any segment
/// after the third ACK proves the server has the connection; the ADD_ADDR follows it, numbered
/// right after it.
pub(crate) fn on_server_segment<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &F,
    ip: &Ip,
    seg: &Seg,
    t: &TcpNumbers,
    e: &mut FlowEntry,
) {
    if watched(e) {
        if !seg.has(TcpFlags::SYN.0) {
            watch(cx, frame, seg, t, e, 1, ip.v6);
        }
        return;
    }
    if seg.has(TcpFlags::SYN.0 | TcpFlags::RST.0) {
        return;
    }
    if phase(e) == PRIO_DUE {
        send_backup(cx, e, Numbers::after_server(t));
        return;
    }
    if phase(e) & WAITING != 0 {
        set_phase(e, 0);
    } else if !resend_due(cx, e) {
        return;
    }
    send(cx, e, Numbers::after_server(t), ip.v6);
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
                // Kind 30, subtype ADD_ADDR (3) in the high nibble, E bit, one of our ids.
                if o[0] == 30
                    && len >= 8
                    && o[2] >> 4 == 3
                    && o[2] & 1 == 1
                    && (o[3] == ANNOUNCE_ADDRESS_ID || o[3] == MIGRATE_ADDRESS_ID)
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

/// How far (bytes) the client's DATA_ACK must run ahead of the gateway subflow's own
/// acknowledgment, past where it stood when the watch began, for the connection to count as
/// migrated: more than the gateway subflow's share of a few windows could explain.
const LEAD: u32 = 64 * 1024;

/// A packet (its numbers `t`) of a watched flow from `side` (0: the client, 1: the server):
/// ends the watch when the connection's data flows on another subflow or it closes (see the
/// module documentation).
fn watch<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &F,
    seg: &Seg,
    t: &TcpNumbers,
    e: &mut FlowEntry,
    side: usize,
    v6: bool,
) {
    if seg.has(TcpFlags::FIN.0 | TcpFlags::RST.0) {
        finish(e, Outcome::Closed, &mut cx.w.stats);
        return;
    }
    let dsr = cx.pool.vip(e.vip).is_some_and(|v| v.mode.dsr().is_some());
    if server_prio_due(e) {
        if side == 0 {
            send_server_backup(cx, e, t, v6);
            finish(e, Outcome::Migrated, &mut cx.w.stats);
        }
        return;
    }
    let Some(d) = data_ack(&frame.data()[seg.opt_at..seg.opt_at + seg.opt_len]) else {
        return;
    };
    if d.data_fin {
        finish(e, Outcome::Closed, &mut cx.w.stats);
        return;
    }
    let Some(ack) = d.ack else { return };
    let lead = (ack.wrapping_sub(t.ack) >> 16) as u16;
    if grown(e, side, lead) {
        if dsr {
            finish(e, Outcome::Migrated, &mut cx.w.stats);
        } else if side == 0 {
            send_server_backup(cx, e, t, v6);
            finish(e, Outcome::Migrated, &mut cx.w.stats);
        } else {
            set_server_prio_due(e); // with the client's next packet
        }
        return;
    }
    // DSR: the server's packets never pass, so its DATA_ACK (the client's data) is not seen.
    // The client's data has moved when the client sends no payload on this subflow while the
    // connection moves on (its DATA_ACK advances): the other base, unused in DSR, follows the
    // DATA_ACK itself and starts again with every payload.
    if side == 0 && dsr {
        let at = (ack >> 16) as u16;
        if seg.has_payload {
            set_watch_base(e, 1, at);
        } else if grown(e, 1, at) {
            finish(e, Outcome::Migrated, &mut cx.w.stats);
        }
    }
}

/// Whether `value` (64 KiB units) has grown past the base of `side` by more than [`LEAD`];
/// sets the base when it has none.
fn grown(e: &mut FlowEntry, side: usize, value: u16) -> bool {
    match watch_base(e, side) {
        None => {
            set_watch_base(e, side, value);
            false
        }
        // Rounded down at both ends: 2 units are more than LEAD bytes. A value behind its base
        // (reordered) is negative, not a lead.
        Some(base) => (value.wrapping_sub(base) as i16) >= ((2 * LEAD) >> 16) as i16,
    }
}

/// The DSS of a segment, as far as the watch needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DataAck {
    /// The low 32 bits of the DATA_ACK, when present.
    ack: Option<u32>,
    /// F: DATA_FIN.
    data_fin: bool,
}

/// The first DSS option in a TCP option area (no allocation; a malformed area stops the walk).
fn data_ack(opts: &[u8]) -> Option<DataAck> {
    let mut at = 0;
    while at < opts.len() {
        match opts[at] {
            0 => return None,
            1 => at += 1,
            kind => {
                let len = *opts.get(at + 1)? as usize;
                if len < 2 || at + len > opts.len() {
                    return None;
                }
                let o = &opts[at..at + len];
                // Kind 30, subtype DSS (2) in the high nibble, the flags in the fourth byte.
                if kind == 30 && len >= 4 && o[2] >> 4 == 2 {
                    let f = o[3];
                    let ack = if f & 0x01 == 0 {
                        None
                    } else if f & 0x02 != 0 {
                        // An 8-byte DATA_ACK: its low 32 bits are the last four.
                        o.get(8..12)
                            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                    } else {
                        o.get(4..8)
                            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                    };
                    return Some(DataAck {
                        ack,
                        data_fin: f & 0x10 != 0,
                    });
                }
                at += len;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_ack_reads_4_and_8_byte_acks_and_data_fin() {
        // NOP, NOP, DSS with a 4-byte DATA_ACK.
        let four = [1, 1, 30, 8, 0x20, 0x01, 0, 1, 0, 2];
        assert_eq!(
            data_ack(&four),
            Some(DataAck {
                ack: Some(0x0001_0002),
                data_fin: false
            })
        );
        // DSS with an 8-byte DATA_ACK and DATA_FIN.
        let eight = [30, 12, 0x20, 0x13, 0, 0, 0, 9, 0xde, 0xad, 0xbe, 0xef];
        assert_eq!(
            data_ack(&eight),
            Some(DataAck {
                ack: Some(0xdead_beef),
                data_fin: true
            })
        );
        // No DATA_ACK flag; an ADD_ADDR only; a truncated option.
        assert_eq!(
            data_ack(&[30, 4, 0x20, 0x04]),
            Some(DataAck {
                ack: None,
                data_fin: false
            })
        );
        assert_eq!(data_ack(&[30, 8, 0x31, 1, 10, 0, 0, 1]), None);
        assert_eq!(data_ack(&[30, 40, 0x20]), None);
    }
}
