//! TCP through a NAT-mode VIP: the flow table, Maglev for new connections, the token table for
//! MP_JOIN subflows, and token learning from the MP_CAPABLE handshake.
//!
//! ## Direction
//!
//! A TCP packet is *client -> VIP* when its destination is a VIP endpoint, *backend -> client*
//! when its source is a backend endpoint (the pool's reverse map). Both directions look up the
//! same flow entry, keyed by the client-side 5-tuple, so the return path finds the state the
//! forward path created. With several workers, a flow belongs to `steer(client address, port)`;
//! a packet that RSS delivered elsewhere is handed over.
//!
//! ## MPTCP (RFC 8684)
//!
//! * Client SYN with a valid MP_CAPABLE (v1): the flow is marked; nothing is learned yet.
//! * Backend SYN/ACK with MP_CAPABLE: the server's key is read **from the trusted side** (only
//!   a configured backend's packets reach this code), its token computed (SHA-256) and entered
//!   in the token table, owned by this backend and this connection.
//! * Client third ACK (or first data segment): its MP_CAPABLE echoes the server's key as the
//!   receiver key. Equal: the token is confirmed. Different: the token is dropped (a client can
//!   only spoil its own joins). No MP_CAPABLE: the connection fell back to TCP; the token goes.
//! * MP_JOIN SYN: the token names the backend. Unknown or ambiguous (two backends' connections
//!   share it): dropped and counted, no state. Its owner down or removed: refused.
//! * The token stays while any subflow of its connection lives: each flow entry holding it counts
//!   as a reference; MP_FASTCLOSE with the right key ends it at once; the idle timeout is the
//!   backstop.

use trapeze_wire::mptcp::{self, MpJoin, MptcpError, MptcpSummary, Segment};
use trapeze_wire::tcp::{self, TcpFlags};

use super::ip::Ip;
use super::rewrite::{self, End};
use super::{announce, dsr, flow_ended, icmp, steer, Ctx, DropReason, Event, Frame, Verdict};
use crate::crypto;
use crate::flow::{addr_bytes, FlowKey, FlowSecret};
use crate::pool::{BackendId, ForwardingMode, PoolSnapshot, PortId, Vip, VipId};
use crate::tables::flow_table::{flags, FlowEntry, FlowState, Insert};
use crate::tables::token::{ConfirmOutcome, JoinRoute, LearnOutcome, Owner};

/// The TCP facts every step needs, read once (by [`tcp`] or by the fast parser in `ip.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Seg {
    pub(super) src_port: u16,
    pub(super) dst_port: u16,
    pub(super) flags: TcpFlags,
    /// Offset and length of the option area within the frame.
    pub(super) opt_at: usize,
    pub(super) opt_len: usize,
    pub(super) has_payload: bool,
}

impl Seg {
    #[inline]
    pub(super) fn has(&self, f: u8) -> bool {
        self.flags.0 & f != 0
    }

    fn segment(&self) -> Segment {
        Segment {
            syn: self.has(TcpFlags::SYN.0),
            ack: self.has(TcpFlags::ACK.0),
            rst: self.has(TcpFlags::RST.0),
            has_payload: self.has_payload,
        }
    }
}

const SYN: u8 = TcpFlags::SYN.0;
const ACK: u8 = TcpFlags::ACK.0;
const FIN: u8 = TcpFlags::FIN.0;
const RST: u8 = TcpFlags::RST.0;

pub(super) fn tcp<F: Frame>(cx: &mut Ctx<'_>, frame: &mut F, ip: &Ip) -> Verdict {
    let seg = match parse_seg(frame.data(), ip) {
        Ok(seg) => seg,
        Err(r) => return Verdict::Drop(r),
    };
    if seg.src_port == 0 || seg.dst_port == 0 {
        return Verdict::Drop(DropReason::PortZero);
    }
    if bad_flags(seg.flags.0) {
        return Verdict::Drop(DropReason::TcpBadFlags);
    }
    dispatch(cx, frame, ip, &seg)
}

/// Reads the TCP header of a packet the IP stage validated.
pub(super) fn parse_seg(data: &[u8], ip: &Ip) -> Result<Seg, DropReason> {
    let pkt = match tcp::Packet::new_checked(&data[ip.l4..ip.end]) {
        Ok(p) => p,
        Err(trapeze_wire::Error::BadHeaderLen) => return Err(DropReason::TcpBadHeaderLen),
        Err(_) => return Err(DropReason::TcpTruncated),
    };
    let hl = pkt.header_len();
    Ok(Seg {
        src_port: pkt.src_port(),
        dst_port: pkt.dst_port(),
        flags: pkt.flags(),
        opt_at: ip.l4 + tcp::HEADER_LEN,
        opt_len: hl - tcp::HEADER_LEN,
        has_payload: ip.end > ip.l4 + hl,
    })
}

/// T8: SYN+FIN, SYN+RST, no flag at all, or FIN+URG+PSH without ACK ("xmas").
#[inline]
pub(super) fn bad_flags(f: u8) -> bool {
    const XMAS: u8 = FIN | TcpFlags::URG.0 | TcpFlags::PSH.0;
    f & (SYN | FIN) == (SYN | FIN)
        || f & (SYN | RST) == (SYN | RST)
        || f & 0x3f == 0
        || (f & XMAS == XMAS && f & ACK == 0)
}

/// Picks the direction of a validated TCP segment: towards a VIP, back from a backend, to the
/// gateway itself, or nowhere.
#[inline]
pub(super) fn dispatch<F: Frame>(cx: &mut Ctx<'_>, frame: &mut F, ip: &Ip, seg: &Seg) -> Verdict {
    match classify(cx.pool, cx.w.flows.secret(), ip, seg) {
        Some(c) => forward(cx, frame, ip, seg, &c),
        None if cx.pool.is_own_addr(cx.ingress, &ip.dst) => Verdict::Punt,
        None => Verdict::Drop(super::ip::no_vip(cx)),
    }
}

/// Which way a VIP packet goes, with the key of its flow (always the client-side 5-tuple) and
/// that key's flow-table hash (keyed with the table's secret): computed once. A new flow also
/// takes the fixed hash, for Maglev.
#[derive(Debug, Clone, Copy)]
pub(super) struct Classified {
    to_vip: bool,
    vip: VipId,
    /// The backend the packet's endpoint names: towards a stateless join port, that port's
    /// backend; from a backend, the backend itself. `None` towards the VIP's own port.
    backend: Option<BackendId>,
    pub(super) key: FlowKey,
    pub(super) hash: u64,
}

/// Classifies a TCP segment as client -> VIP (its port or a join port) or backend -> client;
/// `None` when it is neither.
#[inline]
pub(super) fn classify(
    pool: &PoolSnapshot,
    secret: FlowSecret,
    ip: &Ip,
    seg: &Seg,
) -> Option<Classified> {
    let to_vip = |vip, backend| {
        let key = FlowKey {
            src: ip.src,
            dst: ip.dst,
            src_port: seg.src_port,
            dst_port: seg.dst_port,
            proto: 6,
        };
        (true, vip, backend, key)
    };
    // Order: the VIP's own port, the NAT return path, then join ports, so that a return packet
    // pays no join-port lookup (a join port's subflow pays one more than the VIP's port).
    let (to_vip, vip, backend, key) = if let Some(vip) = pool.vip_for(&ip.dst, seg.dst_port, 6) {
        to_vip(vip, None)
    } else if pool.is_gateway_addr(&ip.dst) {
        // Traffic a backend sends to the gateway itself (answers to health probes) is not a
        // return path to a client: it is punted.
        return None;
    } else if let Some((vip, b)) = pool.backend_endpoint(&ip.src, seg.src_port, 6) {
        let (vip_addr, vip_port) = pool.vip_endpoint(vip)?;
        let key = FlowKey {
            src: ip.dst,
            dst: vip_addr,
            src_port: seg.dst_port,
            dst_port: vip_port,
            proto: 6,
        };
        (false, vip, Some(b), key)
    } else {
        let (vip, b) = pool.join_target(&ip.dst, seg.dst_port, 6)?;
        to_vip(vip, Some(b))
    };
    Some(Classified {
        to_vip,
        vip,
        backend,
        hash: key.keyed_hash(secret),
        key,
    })
}

/// Forwards a classified segment.
#[inline]
pub(super) fn forward<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &mut F,
    ip: &Ip,
    seg: &Seg,
    c: &Classified,
) -> Verdict {
    if c.to_vip {
        client_to_vip(cx, frame, ip, seg, c)
    } else {
        backend_to_client(cx, frame, ip, seg, c)
    }
}

/// The MPTCP options of this segment, counted into the worker's events.
pub(super) fn scan<F: Frame>(cx: &mut Ctx<'_>, frame: &F, seg: &Seg) -> MptcpSummary {
    let s = mptcp::scan(
        &frame.data()[seg.opt_at..seg.opt_at + seg.opt_len],
        seg.segment(),
    );
    if s.ignored > 0 {
        let e = if s.last_error == Some(MptcpError::Version0) {
            Event::MpcVersion0
        } else {
            Event::MptcpOptionIgnored
        };
        cx.w.stats.event(e);
    }
    if s.conflict {
        cx.w.stats.event(Event::MptcpConflict);
    }
    if s.tcp_options_malformed {
        cx.w.stats.event(Event::TcpOptionMalformed);
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Client -> VIP
// ---------------------------------------------------------------------------------------------

fn client_to_vip<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &mut F,
    ip: &Ip,
    seg: &Seg,
    c: &Classified,
) -> Verdict {
    let owner = steer(&ip.src, seg.src_port, cx.w.workers);
    if owner != cx.w.id {
        return Verdict::Handoff { worker: owner };
    }
    if ip.ttl <= 1 {
        return icmp::time_exceeded(cx, frame, ip);
    }
    let (key, hash) = (c.key, c.hash);
    if let Some(idx) = cx.w.flows.lookup(&key, hash) {
        return established(cx, frame, ip, seg, idx, c);
    }
    new_flow(cx, frame, ip, seg, c)
}

/// The fast path: a packet of a known flow.
#[inline]
fn established<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &mut F,
    ip: &Ip,
    seg: &Seg,
    idx: u32,
    c: &Classified,
) -> Verdict {
    let hash = c.hash;
    let e = cx.w.flows.entry_mut(idx);
    e.last_seen = cx.now_ms;
    if seg.has(SYN | FIN | RST) || e.state < FlowState::Established || e.has(flags::ANNOUNCE) {
        let key = e.key;
        if let Some(v) = client_slow_path(cx, frame, ip, seg, idx) {
            return v;
        }
        if cx.w.flows.lookup(&key, hash).is_none() {
            // The slow path ended the flow (a new SYN on a closed 5-tuple): start over.
            return new_flow(cx, frame, ip, seg, c);
        }
    }
    let e = cx.w.flows.entry(idx);
    let (backend, vip) = (e.backend, e.vip);
    to_backend(cx, frame, ip, backend, vip, hash)
}

/// Handshake, teardown and MPTCP bookkeeping on the client side. Returns a verdict only when the
/// packet must not be forwarded normally.
fn client_slow_path<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &mut F,
    ip: &Ip,
    seg: &Seg,
    idx: u32,
) -> Option<Verdict> {
    let mut e = *cx.w.flows.entry(idx);
    if e.has(flags::ANNOUNCE) {
        announce::on_client_segment(cx, frame, ip, seg, &mut e);
    }
    if seg.has(SYN) {
        if e.state >= FlowState::Closing {
            // T12: a new connection reusing the 5-tuple of a closed one is balanced afresh.
            if let Some(old) = cx.w.flows.remove(idx) {
                flow_ended(&old, cx.shared, cx.now, &mut cx.w.stats);
            }
            cx.w.stats.event(Event::SynReuse);
            return None;
        }
        // T11: a retransmitted SYN keeps its backend.
        cx.w.stats.event(Event::SynRetransmit);
        if e.state == FlowState::SynSent && !e.has(flags::TOKEN_REF) && is_dsr(cx, e.vip) {
            cx.w.flows.entry_mut(idx).token = dsr::seq_after_syn(frame, ip);
        }
        return None;
    }
    if e.state == FlowState::SynAckSeen && seg.has(ACK) {
        let learns = e.has(flags::MPC_SYN) && !e.has(flags::CONFIRMED);
        if learns && e.has(flags::TOKEN_REF) && !l4_checksum_ok(frame, ip) {
            // T14: a corrupted third ACK neither confirms nor drops the token; the endpoint
            // discards it too, and the retransmission is judged instead.
            cx.w.stats.event(Event::BadL4ChecksumNotLearned);
        } else {
            e.state = FlowState::Established;
            if learns {
                e.flags |= flags::CONFIRMED;
                confirm_token(cx, frame, ip, seg, &mut e);
            } else if !e.has(flags::MPC_SYN | flags::JOIN) {
                unexpected_mpc(cx, frame, seg);
            }
        }
    } else if e.state == FlowState::SynSent && seg.has(ACK) && is_dsr(cx, e.vip) {
        // DSR: the SYN/ACK went straight to the client; the first ACK completes the handshake
        // as far as the gateway can tell, and an MPTCP connection's keys are learned from it.
        if e.has(flags::MPC_SYN) && !e.has(flags::JOIN) {
            if dsr::learn_from_client(cx, frame, ip, seg, &mut e) {
                e.state = FlowState::Established;
            }
        } else {
            e.state = FlowState::Established;
            if !e.has(flags::MPC_SYN | flags::JOIN) {
                unexpected_mpc(cx, frame, seg);
            }
        }
    } else if e.state == FlowState::SynSent && seg.has(ACK) && !e.has(flags::JOIN) {
        // The SYN/ACK was not seen (it went another way): adopt as established, learn nothing.
        e.state = FlowState::Established;
        if !e.has(flags::MPC_SYN) {
            unexpected_mpc(cx, frame, seg);
        }
    }
    if seg.has(RST | FIN) {
        if e.has(flags::TOKEN_REF) {
            fastclose(cx, frame, seg, &mut e, true);
        }
        if seg.has(RST) {
            e.state = FlowState::Closed;
        } else {
            e.flags |= flags::CLIENT_FIN;
            e.state = if e.has(flags::SERVER_FIN) {
                FlowState::Closed
            } else {
                FlowState::Closing
            };
        }
    }
    *cx.w.flows.entry_mut(idx) = e;
    None
}

/// M7: MP_CAPABLE in the handshake of a flow whose SYN had none. Nothing is learned from it (a
/// client cannot plant keys, a server cannot upgrade a plain connection); it is counted. Runs
/// once per connection at most (the third ACK, the SYN/ACK), never on the established path.
fn unexpected_mpc<F: Frame>(cx: &mut Ctx<'_>, frame: &F, seg: &Seg) {
    if seg.opt_len > 0 && scan(cx, frame, seg).capable.is_some() {
        cx.w.stats.event(Event::MpcUnexpected);
    }
}

/// Whether the TCP checksum of the segment verifies (T14). Only for the few segments the gateway
/// learns from: the backend's MP_CAPABLE SYN/ACK and the client's MP_CAPABLE third ACK.
pub(super) fn l4_checksum_ok<F: Frame>(frame: &F, ip: &Ip) -> bool {
    let data = frame.data();
    let Ok(pkt) = tcp::Packet::new_checked(&data[ip.l4..ip.end]) else {
        return false;
    };
    let (src, dst) = (
        crate::flow::addr_from_bytes(ip.src),
        crate::flow::addr_from_bytes(ip.dst),
    );
    pkt.verify_checksum(&src, &dst)
}

/// The client's third ACK (or first data segment) echoes the server key: cross-check it.
fn confirm_token<F: Frame>(cx: &mut Ctx<'_>, frame: &F, ip: &Ip, seg: &Seg, e: &mut FlowEntry) {
    if !e.has(flags::TOKEN_REF) {
        return;
    }
    let s = scan(cx, frame, seg);
    let keys = s
        .capable
        .and_then(|c| Some((c.sender_key?, c.receiver_key?)));
    let outcome = match keys {
        Some((client_key, server_key)) => cx
            .shared
            .tokens
            .confirm(e.token, e.backend, &e.key, server_key, client_key, cx.now),
        None => {
            // RFC 8684 §3.1: without MP_CAPABLE in the third ACK the connection is plain TCP.
            cx.w.stats.event(Event::MpcFallback);
            ConfirmOutcome::KeyMismatch
        }
    };
    match outcome {
        ConfirmOutcome::Confirmed => {
            cx.w.stats.event(Event::TokenConfirmed);
            announce::start(cx, frame, ip, e);
        }
        ConfirmOutcome::KeyMismatch | ConfirmOutcome::Unknown => {
            if keys.is_some() {
                cx.w.stats.event(Event::MpcKeyMismatch);
            }
            cx.shared.tokens.remove(e.token, e.backend);
            e.flags &= !flags::TOKEN_REF;
        }
    }
}

/// MP_FASTCLOSE (RFC 8684 §3.5) carries the receiver's key: from the client that is the server
/// key, from the server the client key. With the right key the connection's token goes now.
fn fastclose<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &F,
    seg: &Seg,
    e: &mut FlowEntry,
    from_client: bool,
) {
    let s = scan(cx, frame, seg);
    let Some(fc) = s.fastclose else { return };
    let known = cx.shared.tokens.owners(e.token).as_slice().iter().any(|o| {
        o.backend == e.backend
            && if from_client {
                o.server_key == fc.receiver_key
            } else {
                o.client_key == Some(fc.receiver_key)
            }
    });
    if known {
        cx.shared.tokens.remove(e.token, e.backend);
        e.flags &= !flags::TOKEN_REF;
        cx.w.stats.event(Event::FastClose);
    } else {
        cx.w.stats.event(Event::FastCloseBadKey);
    }
}

/// A packet of a 5-tuple the worker has no state for.
fn new_flow<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &mut F,
    ip: &Ip,
    seg: &Seg,
    c: &Classified,
) -> Verdict {
    let (key, hash, vip_id) = (c.key, c.hash, c.vip);
    let Some(vip) = cx.pool.vip(vip_id) else {
        return Verdict::Drop(DropReason::VipGone);
    };
    // RFC 1812 §5.3.7: a packet claiming to come from one of our VIPs is spoofed. Checked before
    // any state is created (an established flow's source was checked when it began).
    if cx.pool.is_vip_addr(&ip.src) {
        return Verdict::Drop(DropReason::MartianSource);
    }
    let is_syn = seg.has(SYN) && !seg.has(ACK);
    let mut entry = FlowEntry {
        key,
        vip: vip_id,
        client_port: cx.ingress.0,
        ..FlowEntry::default()
    };
    entry.client_mac.copy_from_slice(&frame.data()[6..12]);
    if let Some(pinned) = c.backend {
        return join_port(cx, frame, ip, seg, entry, hash, vip, pinned);
    }
    if is_syn {
        let s = scan(cx, frame, seg);
        if let Some(MpJoin::Syn { receiver_token, .. }) = s.join {
            return join(cx, frame, ip, receiver_token, entry, hash, vip);
        }
        if s.capable.is_some() {
            entry.flags |= flags::MPC_SYN;
            if vip.mode.dsr().is_some() {
                // DSR learns from the first segment after the SYN: remember where it starts.
                entry.token = dsr::seq_after_syn(frame, ip);
            }
        }
        entry.state = FlowState::SynSent;
    } else {
        // T10: state was lost (restart, eviction, ECMP move): Maglev decides, as it did for the
        // SYN if the pool is unchanged. RSTs are forwarded but never adopted.
        cx.w.stats.event(Event::NonSynMiss);
        entry.state = FlowState::Established;
        entry.flags |= flags::ADOPTED;
    }
    let Some(backend) = vip.maglev.lookup(key.hash()) else {
        return Verdict::Drop(DropReason::NoBackend);
    };
    entry.backend = backend;
    if is_syn || !seg.has(RST) {
        insert(cx, hash, entry);
    }
    if is_syn {
        cx.w.stats.event(Event::NewFlow);
        if let Some(c) = cx.w.stats.vips.get_mut(vip_id.0 as usize) {
            c.new_conns += 1;
        }
        if let Some(c) = cx.w.stats.backends.get_mut(backend.0 as usize) {
            c.new_conns += 1;
        }
    }
    to_backend(cx, frame, ip, backend, vip_id, hash)
}

/// Whether a VIP forwards in DSR mode (slow path only).
fn is_dsr(cx: &Ctx<'_>, vip: VipId) -> bool {
    cx.pool.vip(vip).is_some_and(|v| v.mode.dsr().is_some())
}

/// Inserts a flow; a full bucket means stateless forwarding. Returns whether it was stored.
fn insert(cx: &mut Ctx<'_>, hash: u64, entry: FlowEntry) -> bool {
    match cx.w.flows.insert(hash, entry, cx.now_ms) {
        Insert::Inserted {
            evicted,
            evicted_live,
            ..
        } => {
            if let Some(c) = cx.w.stats.backends.get_mut(entry.backend.0 as usize) {
                c.active_flows += 1;
            }
            if let Some(old) = evicted {
                flow_ended(&old, cx.shared, cx.now, &mut cx.w.stats);
                if evicted_live {
                    cx.w.stats.event(Event::HalfOpenEvicted);
                }
            }
            true
        }
        Insert::Full => {
            cx.w.stats.event(Event::FlowTableFull);
            false
        }
    }
}

/// A new subflow (or one whose state was lost) to a stateless join port: it goes to the port's
/// backend whatever its token, with no lookup, so every gateway instance, restarted or not,
/// sends it to the same server. A SYN needs the backend to accept joins (active or draining);
/// later packets follow it while it exists, as established flows do.
#[allow(clippy::too_many_arguments)]
fn join_port<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &mut F,
    ip: &Ip,
    seg: &Seg,
    mut entry: FlowEntry,
    hash: u64,
    vip: &Vip,
    backend_id: BackendId,
) -> Verdict {
    let is_syn = seg.has(SYN) && !seg.has(ACK);
    if is_syn {
        if !cx
            .pool
            .backend(backend_id)
            .is_some_and(|b| b.accepts_joins())
        {
            return Verdict::Drop(DropReason::JoinOwnerDown);
        }
        // A new connection on a join port (no MP_JOIN) is forwarded to that backend too, as
        // plain TCP: nothing is learned from it.
        if scan(cx, frame, seg).join.is_some() {
            entry.flags |= flags::JOIN;
        }
        entry.state = FlowState::SynSent;
        cx.w.stats.event(Event::JoinPortRouted);
        if let Some(c) = cx.w.stats.vips.get_mut(vip.id.0 as usize) {
            c.joins += 1;
        }
        if let Some(c) = cx.w.stats.backends.get_mut(backend_id.0 as usize) {
            c.joins += 1;
        }
    } else {
        cx.w.stats.event(Event::NonSynMiss);
        entry.state = FlowState::Established;
        entry.flags |= flags::ADOPTED | flags::JOIN;
    }
    entry.backend = backend_id;
    if is_syn || !seg.has(RST) {
        insert(cx, hash, entry);
    }
    to_backend(cx, frame, ip, backend_id, vip.id, hash)
}

/// MP_JOIN SYN: route by token to the connection's backend, or refuse.
fn join<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &mut F,
    ip: &Ip,
    token: u32,
    mut entry: FlowEntry,
    hash: u64,
    vip: &Vip,
) -> Verdict {
    let backend_id = match cx.shared.tokens.route_join(token, cx.now) {
        JoinRoute::Owner(b) => b,
        JoinRoute::Unknown => return Verdict::Drop(DropReason::JoinNoToken),
        JoinRoute::Ambiguous => return Verdict::Drop(DropReason::JoinTokenAmbiguous),
    };
    let Some(backend) = cx.pool.backend(backend_id).filter(|b| b.accepts_joins()) else {
        return Verdict::Drop(DropReason::JoinOwnerDown);
    };
    // The owner must be reachable in this packet's family and serve this VIP, or (NAT) the
    // return path could not be mapped back.
    let reachable = backend.addr(ip.v6).is_some_and(|a| match vip.mode {
        ForwardingMode::Nat => {
            cx.pool.vip_of_backend(&addr_bytes(a), backend.port, 6) == Some(vip.id)
        }
        ForwardingMode::Dsr(_) => vip.has_member(backend_id),
    });
    if !reachable {
        return Verdict::Drop(DropReason::JoinNoPath);
    }
    entry.backend = backend_id;
    entry.state = FlowState::SynSent;
    entry.token = token;
    entry.flags |= flags::JOIN | flags::TOKEN_REF;
    if insert(cx, hash, entry) && !cx.shared.tokens.subflow_opened(token, backend_id) {
        // The owner vanished between route and open (a concurrent close): hold no reference.
        if let Some(i) = cx.w.flows.lookup(&entry.key, hash) {
            cx.w.flows.entry_mut(i).flags &= !flags::TOKEN_REF;
        }
    }
    cx.w.stats.event(Event::JoinRouted);
    if let Some(c) = cx.w.stats.vips.get_mut(vip.id.0 as usize) {
        c.joins += 1;
    }
    if let Some(c) = cx.w.stats.backends.get_mut(backend_id.0 as usize) {
        c.joins += 1;
    }
    to_backend(cx, frame, ip, backend_id, vip.id, hash)
}

/// Rewrites (NAT) or encapsulates (DSR) towards the backend and picks the egress. `hash` is
/// the flow's hash (DSR derives its outer source and UDP port from it).
#[inline]
fn to_backend<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &mut F,
    ip: &Ip,
    backend_id: BackendId,
    vip_id: VipId,
    hash: u64,
) -> Verdict {
    if let Some(d) = cx.pool.vip(vip_id).and_then(|v| v.mode.dsr()) {
        let d = *d;
        return dsr::encapsulate(cx, frame, ip, backend_id, vip_id, &d, hash);
    }
    let Some(b) = cx.pool.fwd(backend_id) else {
        return Verdict::Drop(DropReason::BackendGone);
    };
    let Some(addr) = b.addr(ip.v6) else {
        return Verdict::Drop(DropReason::BackendGone);
    };
    let Some(mac) = b.mac else {
        return Verdict::Drop(DropReason::NoNeighbour);
    };
    let buf = frame.data_mut();
    rewrite::nat_tcp(buf, ip, End::Dst, addr, b.port);
    rewrite::set_macs(buf, &b.egress_mac, &mac);
    if !rewrite::retag(frame, cx.l2_len, b.egress_vlan) {
        return Verdict::Drop(DropReason::NoRoom);
    }
    let bytes = ip.len() as u64;
    let stats = &mut cx.w.stats;
    if let Some(c) = stats.vips.get_mut(vip_id.0 as usize) {
        c.packets += 1;
        c.bytes += bytes;
    }
    if let Some(c) = stats.backends.get_mut(backend_id.0 as usize) {
        c.packets += 1;
        c.bytes += bytes;
    }
    Verdict::Forward { port: b.egress }
}

// ---------------------------------------------------------------------------------------------
// Backend -> client
// ---------------------------------------------------------------------------------------------

fn backend_to_client<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &mut F,
    ip: &Ip,
    seg: &Seg,
    c: &Classified,
) -> Verdict {
    let owner = steer(&ip.dst, seg.dst_port, cx.w.workers);
    if owner != cx.w.id {
        return Verdict::Handoff { worker: owner };
    }
    if ip.ttl <= 1 {
        return icmp::time_exceeded(cx, frame, ip);
    }
    let (mut key, vip_id) = (c.key, c.vip);
    let mut found = cx.w.flows.lookup(&key, c.hash);
    if found.is_none() {
        // A subflow the client opened to this backend's join port: its key has that port.
        if let Some(jp) = c.backend.and_then(|b| cx.pool.vip(vip_id)?.join_port(b)) {
            let jkey = FlowKey {
                dst_port: jp,
                ..key
            };
            if let Some(idx) = cx.w.flows.lookup(&jkey, cx.w.flows.hash(&jkey)) {
                (key, found) = (jkey, Some(idx));
            }
        }
    }
    let (vip_addr, vip_port) = (key.dst, key.dst_port);
    let (port_id, mac) = match found {
        Some(idx) => {
            let e = cx.w.flows.entry_mut(idx);
            e.last_seen = cx.now_ms;
            if seg.has(SYN | FIN | RST) || e.has(flags::ANNOUNCE) {
                server_slow_path(cx, frame, ip, seg, idx);
            }
            let e = cx.w.flows.entry(idx);
            (PortId(e.client_port), e.client_mac)
        }
        None => {
            cx.w.stats.event(Event::ReturnStateless);
            let Some(client_port) = cx.pool.vip(vip_id).map(|v| v.client_port) else {
                return Verdict::Drop(DropReason::VipGone);
            };
            let Some(mac) = cx.pool.port(client_port).and_then(|p| p.gateway_mac) else {
                return Verdict::Drop(DropReason::NoNeighbour);
            };
            (client_port, mac)
        }
    };
    let Some(port) = cx.pool.port(port_id) else {
        return Verdict::Drop(DropReason::NoNeighbour);
    };
    let buf = frame.data_mut();
    rewrite::nat_tcp(buf, ip, End::Src, &vip_addr, vip_port);
    rewrite::set_macs(buf, &port.mac, &mac);
    if !rewrite::retag(frame, cx.l2_len, port.vlan) {
        return Verdict::Drop(DropReason::NoRoom);
    }
    if let Some(c) = cx.w.stats.vips.get_mut(vip_id.0 as usize) {
        c.to_client_packets += 1;
        c.to_client_bytes += ip.len() as u64;
    }
    Verdict::Forward { port: port_id }
}

/// SYN/ACK (token learning), FIN and RST from the backend.
fn server_slow_path<F: Frame>(cx: &mut Ctx<'_>, frame: &F, ip: &Ip, seg: &Seg, idx: u32) {
    let mut e = *cx.w.flows.entry(idx);
    if e.has(flags::ANNOUNCE) {
        announce::on_server_segment(cx, frame, ip, seg, &mut e);
    }
    if seg.has(SYN) && seg.has(ACK) {
        if e.state == FlowState::SynSent {
            if e.has(flags::MPC_SYN) && !e.has(flags::JOIN) {
                // A corrupted SYN/ACK leaves the flow waiting for the retransmission (T14).
                if learn_token(cx, frame, ip, seg, &mut e) {
                    e.state = FlowState::SynAckSeen;
                }
            } else {
                e.state = FlowState::SynAckSeen;
                if !e.has(flags::MPC_SYN | flags::JOIN) {
                    unexpected_mpc(cx, frame, seg);
                }
            }
        }
    } else if seg.has(RST) {
        if e.has(flags::TOKEN_REF) {
            fastclose(cx, frame, seg, &mut e, false);
        }
        e.state = FlowState::Closed;
    } else if seg.has(FIN) {
        if e.has(flags::TOKEN_REF) {
            fastclose(cx, frame, seg, &mut e, false);
        }
        e.flags |= flags::SERVER_FIN;
        e.state = if e.has(flags::CLIENT_FIN) {
            FlowState::Closed
        } else {
            FlowState::Closing
        };
    }
    *cx.w.flows.entry_mut(idx) = e;
}

/// The backend's SYN/ACK carries its key: learn the token (see the module documentation).
/// Returns false, learning nothing, when the segment's checksum fails (T14).
fn learn_token<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &F,
    ip: &Ip,
    seg: &Seg,
    e: &mut FlowEntry,
) -> bool {
    let s = scan(cx, frame, seg);
    let Some(server_key) = s.capable.and_then(|c| c.sender_key) else {
        // The server declined MPTCP: plain TCP from here on.
        e.flags &= !flags::MPC_SYN;
        return true;
    };
    // T14: never learn from a segment whose checksum fails.
    if !l4_checksum_ok(frame, ip) {
        cx.w.stats.event(Event::BadL4ChecksumNotLearned);
        return false;
    }
    let token = crypto::token_from_key(server_key);
    let owner = Owner::new(e.backend, e.key, server_key, None, cx.now);
    let ev = match cx.shared.tokens.learn(token, owner) {
        // AlreadyKnown: the table counted this entry as one more reference.
        LearnOutcome::Inserted | LearnOutcome::AlreadyKnown => Event::TokenLearned,
        LearnOutcome::Collision => Event::TokenCollision,
        LearnOutcome::Reused => Event::TokenReused,
        LearnOutcome::TableFull | LearnOutcome::OwnersFull | LearnOutcome::Refused => {
            cx.w.stats.event(Event::TokenTableFull);
            return true;
        }
    };
    cx.w.stats.event(ev);
    e.token = token;
    e.flags |= flags::TOKEN_REF;
    true
}
