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
use super::{icmp, release_token, steer, Ctx, DropReason, Event, Frame, Verdict};
use crate::crypto;
use crate::flow::{addr_bytes, FlowKey};
use crate::pool::{BackendId, PortId, Vip, VipId};
use crate::tables::flow_table::{flags, FlowEntry, FlowState, Insert};
use crate::tables::token::{ConfirmOutcome, JoinRoute, LearnOutcome, Owner};

/// The TCP facts every step needs, read once.
#[derive(Debug, Clone, Copy)]
struct Seg {
    src_port: u16,
    dst_port: u16,
    flags: TcpFlags,
    /// Offset and length of the option area within the frame.
    opt_at: usize,
    opt_len: usize,
    has_payload: bool,
}

impl Seg {
    #[inline]
    fn has(&self, f: u8) -> bool {
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
    let seg = {
        let data = frame.data();
        let pkt = match tcp::Packet::new_checked(&data[ip.l4..ip.end]) {
            Ok(p) => p,
            Err(trapeze_wire::Error::BadHeaderLen) => return Verdict::Drop(DropReason::TcpBadHeaderLen),
            Err(_) => return Verdict::Drop(DropReason::TcpTruncated),
        };
        let hl = usize::from(pkt.header_len());
        Seg {
            src_port: pkt.src_port(),
            dst_port: pkt.dst_port(),
            flags: pkt.flags(),
            opt_at: ip.l4 + tcp::HEADER_LEN,
            opt_len: hl - tcp::HEADER_LEN,
            has_payload: ip.end > ip.l4 + hl,
        }
    };
    if seg.src_port == 0 || seg.dst_port == 0 {
        return Verdict::Drop(DropReason::PortZero);
    }
    let f = seg.flags.0;
    let xmas = f & (FIN | TcpFlags::URG.0 | TcpFlags::PSH.0) == (FIN | TcpFlags::URG.0 | TcpFlags::PSH.0) && f & ACK == 0;
    if f & (SYN | FIN) == (SYN | FIN) || f & (SYN | RST) == (SYN | RST) || f & 0x3f == 0 || xmas {
        return Verdict::Drop(DropReason::TcpBadFlags);
    }
    if let Some(vip) = cx.pool.vip_for(&ip.dst, seg.dst_port, 6) {
        return client_to_vip(cx, frame, ip, &seg, vip);
    }
    if let Some(vip) = cx.pool.vip_of_backend(&ip.src, seg.src_port, 6) {
        return backend_to_client(cx, frame, ip, &seg, vip);
    }
    if cx.pool.is_own_addr(cx.ingress, &ip.dst) {
        return Verdict::Punt;
    }
    Verdict::Drop(DropReason::NoVip)
}

/// The MPTCP options of this segment, counted into the worker's events.
fn scan<F: Frame>(cx: &mut Ctx<'_>, frame: &F, seg: &Seg) -> MptcpSummary {
    let s = mptcp::scan(&frame.data()[seg.opt_at..seg.opt_at + seg.opt_len], seg.segment());
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

fn client_to_vip<F: Frame>(cx: &mut Ctx<'_>, frame: &mut F, ip: &Ip, seg: &Seg, vip_id: VipId) -> Verdict {
    let owner = steer(&ip.src, seg.src_port, cx.w.workers);
    if owner != cx.w.id {
        return Verdict::Handoff { worker: owner };
    }
    if ip.ttl <= 1 {
        return icmp::time_exceeded(cx, frame, ip);
    }
    let key = FlowKey {
        src: ip.src,
        dst: ip.dst,
        src_port: seg.src_port,
        dst_port: seg.dst_port,
        proto: 6,
    };
    let hash = key.hash();
    if let Some(idx) = cx.w.flows.lookup(&key, hash) {
        return established(cx, frame, ip, seg, idx, vip_id, hash);
    }
    new_flow(cx, frame, ip, seg, key, hash, vip_id)
}

/// The fast path: a packet of a known flow.
#[inline]
fn established<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &mut F,
    ip: &Ip,
    seg: &Seg,
    idx: u32,
    vip_id: VipId,
    hash: u64,
) -> Verdict {
    let e = cx.w.flows.entry_mut(idx);
    e.last_seen = cx.now_ms;
    if seg.has(SYN | FIN | RST) || e.state < FlowState::Established {
        let key = e.key;
        if let Some(v) = client_slow_path(cx, frame, seg, idx) {
            return v;
        }
        if cx.w.flows.lookup(&key, hash).is_none() {
            // The slow path ended the flow (a new SYN on a closed 5-tuple): start over.
            return new_flow(cx, frame, ip, seg, key, hash, vip_id);
        }
    }
    let e = *cx.w.flows.entry(idx);
    to_backend(cx, frame, ip, e.backend, e.vip)
}

/// Handshake, teardown and MPTCP bookkeeping on the client side. Returns a verdict only when the
/// packet must not be forwarded normally.
fn client_slow_path<F: Frame>(cx: &mut Ctx<'_>, frame: &mut F, seg: &Seg, idx: u32) -> Option<Verdict> {
    let mut e = *cx.w.flows.entry(idx);
    if seg.has(SYN) {
        if e.state >= FlowState::Closing {
            // T12: a new connection reusing the 5-tuple of a closed one is balanced afresh.
            if let Some(old) = cx.w.flows.remove(idx) {
                release_token(&old, cx.shared, cx.now, &mut cx.w.stats);
            }
            cx.w.stats.event(Event::SynReuse);
            return None;
        }
        // T11: a retransmitted SYN keeps its backend.
        cx.w.stats.event(Event::SynRetransmit);
        return None;
    }
    if e.state == FlowState::SynAckSeen && seg.has(ACK) {
        e.state = FlowState::Established;
        if e.has(flags::MPC_SYN) && !e.has(flags::CONFIRMED) {
            e.flags |= flags::CONFIRMED;
            confirm_token(cx, frame, seg, &mut e);
        }
    } else if e.state == FlowState::SynSent && seg.has(ACK) && !e.has(flags::JOIN) {
        // The SYN/ACK was not seen (it went another way): adopt as established, learn nothing.
        e.state = FlowState::Established;
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

/// The client's third ACK (or first data segment) echoes the server key: cross-check it.
fn confirm_token<F: Frame>(cx: &mut Ctx<'_>, frame: &F, seg: &Seg, e: &mut FlowEntry) {
    if !e.has(flags::TOKEN_REF) {
        return;
    }
    let s = scan(cx, frame, seg);
    let keys = s.capable.and_then(|c| Some((c.sender_key?, c.receiver_key?)));
    let outcome = match keys {
        Some((client_key, server_key)) => {
            cx.shared
                .tokens
                .confirm(e.token, e.backend, &e.key, server_key, client_key, cx.now)
        }
        None => {
            // RFC 8684 §3.1: without MP_CAPABLE in the third ACK the connection is plain TCP.
            cx.w.stats.event(Event::MpcFallback);
            ConfirmOutcome::KeyMismatch
        }
    };
    match outcome {
        ConfirmOutcome::Confirmed => cx.w.stats.event(Event::TokenConfirmed),
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
fn fastclose<F: Frame>(cx: &mut Ctx<'_>, frame: &F, seg: &Seg, e: &mut FlowEntry, from_client: bool) {
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
    key: FlowKey,
    hash: u64,
    vip_id: VipId,
) -> Verdict {
    let Some(vip) = cx.pool.vip(vip_id) else {
        return Verdict::Drop(DropReason::VipGone);
    };
    let is_syn = seg.has(SYN) && !seg.has(ACK);
    let mut entry = FlowEntry {
        key,
        vip: vip_id,
        client_port: cx.ingress.0,
        ..FlowEntry::default()
    };
    entry.client_mac.copy_from_slice(&frame.data()[6..12]);
    if is_syn {
        let s = scan(cx, frame, seg);
        if let Some(MpJoin::Syn { receiver_token, .. }) = s.join {
            return join(cx, frame, ip, receiver_token, entry, hash, vip);
        }
        if s.capable.is_some() {
            entry.flags |= flags::MPC_SYN;
        }
        entry.state = FlowState::SynSent;
    } else {
        // T10: state was lost (restart, eviction, ECMP move): Maglev decides, as it did for the
        // SYN if the pool is unchanged. RSTs are forwarded but never adopted.
        cx.w.stats.event(Event::NonSynMiss);
        entry.state = FlowState::Established;
        entry.flags |= flags::ADOPTED;
    }
    let Some(backend) = vip.maglev.lookup(hash) else {
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
    to_backend(cx, frame, ip, backend, vip_id)
}

/// Inserts a flow; a full bucket means stateless forwarding. Returns whether it was stored.
fn insert(cx: &mut Ctx<'_>, hash: u64, entry: FlowEntry) -> bool {
    match cx.w.flows.insert(hash, entry, cx.now_ms) {
        Insert::Inserted {
            evicted, evicted_live, ..
        } => {
            if let Some(old) = evicted {
                release_token(&old, cx.shared, cx.now, &mut cx.w.stats);
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
    // The owner must be reachable in this packet's family and serve this VIP, or the return
    // path could not be mapped back.
    let reachable = backend
        .addr(ip.v6)
        .is_some_and(|a| cx.pool.vip_of_backend(&addr_bytes(a), backend.port, 6) == Some(vip.id));
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
    to_backend(cx, frame, ip, backend_id, vip.id)
}

/// Rewrites towards the backend and picks the egress.
#[inline]
fn to_backend<F: Frame>(cx: &mut Ctx<'_>, frame: &mut F, ip: &Ip, backend_id: BackendId, vip_id: VipId) -> Verdict {
    let Some(b) = cx.pool.backend(backend_id) else {
        return Verdict::Drop(DropReason::BackendGone);
    };
    let Some(addr) = b.addr(ip.v6) else {
        return Verdict::Drop(DropReason::BackendGone);
    };
    let Some(mac) = b.mac else {
        return Verdict::Drop(DropReason::NoNeighbour);
    };
    let Some(port) = cx.pool.port(b.egress) else {
        return Verdict::Drop(DropReason::NoNeighbour);
    };
    let buf = frame.data_mut();
    rewrite::nat_tcp(buf, ip, End::Dst, &addr_bytes(addr), b.port);
    rewrite::set_macs(buf, &port.mac, &mac);
    if !rewrite::retag(frame, cx.l2_len, port.vlan) {
        return Verdict::Drop(DropReason::NoRoom);
    }
    let bytes = ip.len() as u64;
    if let Some(c) = cx.w.stats.vips.get_mut(vip_id.0 as usize) {
        c.packets += 1;
        c.bytes += bytes;
    }
    if let Some(c) = cx.w.stats.backends.get_mut(backend_id.0 as usize) {
        c.packets += 1;
        c.bytes += bytes;
    }
    Verdict::Forward { port: b.egress }
}

// ---------------------------------------------------------------------------------------------
// Backend -> client
// ---------------------------------------------------------------------------------------------

fn backend_to_client<F: Frame>(cx: &mut Ctx<'_>, frame: &mut F, ip: &Ip, seg: &Seg, vip_id: VipId) -> Verdict {
    let owner = steer(&ip.dst, seg.dst_port, cx.w.workers);
    if owner != cx.w.id {
        return Verdict::Handoff { worker: owner };
    }
    if ip.ttl <= 1 {
        return icmp::time_exceeded(cx, frame, ip);
    }
    let Some(vip) = cx.pool.vip(vip_id) else {
        return Verdict::Drop(DropReason::VipGone);
    };
    let vip_addr = addr_bytes(vip.addr);
    let vip_port = vip.port;
    let key = FlowKey {
        src: ip.dst,
        dst: vip_addr,
        src_port: seg.dst_port,
        dst_port: vip_port,
        proto: 6,
    };
    let hash = key.hash();
    let (port_id, mac) = match cx.w.flows.lookup(&key, hash) {
        Some(idx) => {
            let e = cx.w.flows.entry_mut(idx);
            e.last_seen = cx.now_ms;
            if seg.has(SYN | FIN | RST) {
                server_slow_path(cx, frame, ip, seg, idx);
            }
            let e = cx.w.flows.entry(idx);
            (PortId(e.client_port), e.client_mac)
        }
        None => {
            cx.w.stats.event(Event::ReturnStateless);
            let Some(mac) = cx.pool.port(vip.client_port).and_then(|p| p.gateway_mac) else {
                return Verdict::Drop(DropReason::NoNeighbour);
            };
            (vip.client_port, mac)
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
    Verdict::Forward { port: port_id }
}

/// SYN/ACK (token learning), FIN and RST from the backend.
fn server_slow_path<F: Frame>(cx: &mut Ctx<'_>, frame: &F, ip: &Ip, seg: &Seg, idx: u32) {
    let mut e = *cx.w.flows.entry(idx);
    if seg.has(SYN) && seg.has(ACK) {
        if e.state == FlowState::SynSent {
            e.state = FlowState::SynAckSeen;
            if e.has(flags::MPC_SYN) && !e.has(flags::JOIN) {
                learn_token(cx, frame, ip, seg, &mut e);
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
fn learn_token<F: Frame>(cx: &mut Ctx<'_>, frame: &F, ip: &Ip, seg: &Seg, e: &mut FlowEntry) {
    let s = scan(cx, frame, seg);
    let Some(server_key) = s.capable.and_then(|c| c.sender_key) else {
        // The server declined MPTCP: plain TCP from here on.
        e.flags &= !flags::MPC_SYN;
        return;
    };
    // T14: never learn from a segment whose checksum fails.
    let data = frame.data();
    let Ok(pkt) = tcp::Packet::new_checked(&data[ip.l4..ip.end]) else { return };
    let (src, dst) = (crate::flow::addr_from_bytes(ip.src), crate::flow::addr_from_bytes(ip.dst));
    if !pkt.verify_checksum(&src, &dst) {
        cx.w.stats.event(Event::BadL4ChecksumNotLearned);
        return;
    }
    let token = crypto::token_from_key(server_key);
    let owner = Owner {
        backend: e.backend,
        conn: e.key,
        server_key,
        client_key: None,
        learned_at: cx.now,
        last_seen: cx.now,
        subflows: 1,
    };
    let ev = match cx.shared.tokens.learn(token, owner) {
        LearnOutcome::Inserted => Event::TokenLearned,
        LearnOutcome::AlreadyKnown => return,
        LearnOutcome::Collision => Event::TokenCollision,
        LearnOutcome::Reused => Event::TokenReused,
        LearnOutcome::TableFull | LearnOutcome::OwnersFull => {
            cx.w.stats.event(Event::TokenTableFull);
            return;
        }
    };
    cx.w.stats.event(ev);
    e.token = token;
    e.flags |= flags::TOKEN_REF;
}
