//! Flow: the TCP segments of a VIP's flows. The worker's flow table pins an established flow to
//! its backend; Maglev picks the backend of a new connection; the token table routes an MP_JOIN
//! subflow to the backend of its connection. What a segment means to its flow (the state machine,
//! [`state`]), what the MPTCP handshake teaches ([`mptcp`]) and what the gateway announces
//! (`announcing`) are decided here; [`egress`] then sends the packet on its way.
//!
//! With several workers, a flow belongs to `steer(client address, port)`; a packet that RSS
//! delivered elsewhere is handed over.
//!
//! ```text
//! client -> VIP:     owner? -> TTL -> flow hit: established (slow path for SYN/FIN/RST, the
//!                                     handshake, an announcement) -> egress::to_backend
//!                                  miss: join port | MP_JOIN (token) | SYN (Maglev) | adopt
//! backend -> client: owner? -> TTL -> flow hit (or its join-port key): the server's side of the
//!                                     handshake and teardown -> egress::to_client
//!                                  miss: stateless return
//! ICMP error:        owner? -> the quoted flow -> egress::icmp_error
//! ```

mod announcing;
mod migration;
mod mptcp;
mod state;

use trapeze_wire::tcp::TcpFlags;

use self::mptcp::Syn;
use self::state::{Input, Next};
use crate::flow::{FlowKey, FlowKeyV4};
use crate::pipeline::classify::{Classified, Direction, Quoted, ToVipV4};
use crate::pipeline::context::{steer, Ctx, Shared, Worker};
use crate::pipeline::egress::{self, ClientSide};
use crate::pipeline::frame::Frame;
use crate::pipeline::parse::{self, Ip, Seg, TcpNumbers};
use crate::pipeline::reply;
use crate::pipeline::verdict::{DropReason, Event, Verdict, WorkerStats};
use crate::pool::{BackendId, PoolSnapshot, PortId, Vip, VipId};
use crate::tables::flow_table::{flags, FlowEntry, FlowState, Insert, New};
use crate::time::Ticks;

const SYN: u8 = TcpFlags::SYN.0;
const ACK: u8 = TcpFlags::ACK.0;
const FIN: u8 = TcpFlags::FIN.0;
const RST: u8 = TcpFlags::RST.0;

/// Forwards a classified segment.
#[inline]
pub(crate) fn forward<F: Frame>(cx: &mut Ctx<'_>, frame: &mut F, p: &Classified) -> Verdict {
    match p.dir {
        Direction::ToVip => client_to_vip(cx, frame, p),
        Direction::FromBackend => backend_to_client(cx, frame, p),
    }
}

// ---------------------------------------------------------------------------------------------
// Client -> VIP
// ---------------------------------------------------------------------------------------------

fn client_to_vip<F: Frame>(cx: &mut Ctx<'_>, frame: &mut F, p: &Classified) -> Verdict {
    if let Some(worker) = cx.handoff(&p.ip.src, p.seg.src_port) {
        return Verdict::Handoff { worker };
    }
    if p.ip.ttl <= 1 {
        return reply::time_exceeded(cx, frame, &p.ip);
    }
    if let Some(idx) = cx.w.flows.lookup(&p.key, p.hash) {
        return established(cx, frame, p, idx);
    }
    new_flow(cx, frame, p)
}

/// A packet of a known flow.
#[inline]
fn established<F: Frame>(cx: &mut Ctx<'_>, frame: &mut F, p: &Classified, idx: u32) -> Verdict {
    let e = cx.w.flows.entry_mut(idx);
    e.last_seen = cx.now_ms;
    let slow = p.seg.has(SYN | FIN | RST) || needs_slow_path(e);
    if slow && client_slow_path(cx, frame, p, idx) == Slow::Reopened {
        return new_flow(cx, frame, p);
    }
    let e = cx.w.flows.entry(idx);
    let (backend, vip) = (e.backend, e.vip);
    egress::to_backend(cx, frame, &p.ip, backend, vip, p.hash)
}

/// Whether a packet of this flow takes the slow path whatever its flags: the handshake is not
/// over, or an announcement runs. The one rule both established paths apply.
#[inline(always)]
fn needs_slow_path(e: &FlowEntry) -> bool {
    e.state() < FlowState::Established || e.has(flags::ANNOUNCE)
}

/// The established fast path: an IPv4 data segment of a known NAT flow, found with the hash the
/// classification computed, rewritten with its backend's precomputed [`Fast4`] (no [`Ctx`], no
/// handoff test: a flow is only ever in its owner's table, the restart path re-steers them).
/// `None` when the packet needs more than that (no flow, the slow path, a backend the fast path
/// cannot rewrite to); the caller then takes the general path with the same key and hash.
///
/// [`Fast4`]: crate::pool::Fast4
#[inline(always)]
pub(crate) fn established_v4<F: Frame>(
    w: &mut Worker,
    pool: &PoolSnapshot,
    now_ms: u32,
    frame: &mut F,
    p: &ToVipV4,
) -> Option<Verdict> {
    let e = w
        .flows
        .lookup_v4_mut(&FlowKeyV4::of_frame(p.d.addrs, p.d.ports), p.hash)?;
    if needs_slow_path(e) {
        return None;
    }
    let b = pool.fast4(e.backend)?;
    e.last_seen = now_ms;
    let (backend, vip) = (e.backend, e.vip);
    egress::nat::to_backend_v4(frame.data_mut(), b);
    w.stats.count_to_backend(vip, backend, u64::from(p.d.len));
    Some(Verdict::Forward { port: b.egress })
}

/// What a slow path did to the flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slow {
    /// The flow goes on.
    Kept,
    /// The flow ended: the packet (a SYN on a closed 5-tuple) opens a new one.
    Reopened,
}

/// Handshake, teardown and MPTCP bookkeeping on the client side.
fn client_slow_path<F: Frame>(cx: &mut Ctx<'_>, frame: &mut F, p: &Classified, idx: u32) -> Slow {
    let (ip, seg) = (&p.ip, &p.seg);
    let t = parse::numbers(frame.data(), ip);
    let mut e = *cx.w.flows.entry(idx);
    if e.has(flags::ANNOUNCE) {
        announcing::on_client_segment(cx, frame, ip, seg, &t, &mut e);
    }
    if seg.has(SYN) {
        if state::next(e.state(), Input::ClientSyn) == Next::Reopen {
            // T12: a new connection reusing the 5-tuple of a closed one is balanced afresh.
            if let Some(old) = cx.w.flows.remove(idx) {
                flow_ended(&old, cx.shared, cx.now, &mut cx.w.stats);
            }
            cx.w.stats.event(Event::SynReuse);
            return Slow::Reopened;
        }
        // T11: a retransmitted SYN keeps its backend; a half-open DSR flow takes the sequence
        // number its keys must come with from it.
        cx.w.stats.event(Event::SynRetransmit);
        if e.state() == FlowState::SynSent && !e.has(flags::TOKEN_REF) && is_dsr(cx, e.vip) {
            cx.w.flows.entry_mut(idx).pending = t.after_syn();
        }
        return Slow::Kept;
    }
    if seg.has(ACK) && handshake_ack(cx, frame, ip, seg, &t, &mut e) {
        step(&mut e, Input::HandshakeAck);
    }
    if seg.has(RST | FIN) {
        teardown(cx, frame, seg, &mut e, true);
    }
    *cx.w.flows.entry_mut(idx) = e;
    Slow::Kept
}

/// A client ACK while the handshake runs: whether it completes the handshake as far as the
/// gateway can tell (with what MPTCP learns from it on the way).
fn handshake_ack<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &F,
    ip: &Ip,
    seg: &Seg,
    t: &TcpNumbers,
    e: &mut FlowEntry,
) -> bool {
    match e.state() {
        FlowState::SynAckSeen => mptcp::third_ack(cx, frame, ip, seg, t, e),
        FlowState::SynSent if is_dsr(cx, e.vip) => mptcp::dsr_first_ack(cx, frame, ip, seg, t, e),
        // NAT, the SYN/ACK not seen (it went another way): adopted as established, nothing is
        // learned. A join waits for its SYN/ACK.
        FlowState::SynSent if !e.has(flags::JOIN) => {
            if !e.has(flags::MPC_SYN) {
                mptcp::unexpected_mpc(cx, frame, seg);
            }
            true
        }
        _ => false,
    }
}

/// A RST or FIN from the client or the backend: MP_FASTCLOSE may end the connection's token, the
/// side's FIN is recorded, and the state machine moves.
fn teardown<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &F,
    seg: &Seg,
    e: &mut FlowEntry,
    from_client: bool,
) {
    if e.has(flags::TOKEN_REF) {
        mptcp::fastclose(cx, frame, seg, e, from_client);
    }
    let input = if seg.has(RST) {
        Input::Rst
    } else {
        let (this_side, other_side) = if from_client {
            (flags::CLIENT_FIN, flags::SERVER_FIN)
        } else {
            (flags::SERVER_FIN, flags::CLIENT_FIN)
        };
        e.flags |= this_side;
        Input::Fin {
            other_side_fin: e.has(other_side),
        }
    };
    step(e, input);
}

/// Applies one input of the state machine to an entry.
#[inline]
fn step(e: &mut FlowEntry, input: Input) {
    if let Next::To(s) = state::next(e.state(), input) {
        e.set_state(s);
    }
}

/// A packet of a 5-tuple the worker has no state for.
fn new_flow<F: Frame>(cx: &mut Ctx<'_>, frame: &mut F, p: &Classified) -> Verdict {
    let (ip, seg) = (&p.ip, &p.seg);
    let Some(vip) = cx.pool.vip(p.vip) else {
        return Verdict::Drop(DropReason::VipGone);
    };
    // RFC 1812 §5.3.7: a packet claiming to come from one of our VIPs is spoofed. Checked before
    // any state is created (an established flow's source was checked when it began).
    if cx.pool.is_vip_addr(&ip.src) {
        return Verdict::Drop(DropReason::MartianSource);
    }
    let is_syn = seg.has(SYN) && !seg.has(ACK);
    let mut entry = FlowEntry {
        key: p.key,
        vip: p.vip,
        client_port: cx.ingress.0,
        ..FlowEntry::default()
    };
    entry.client_mac.copy_from_slice(&frame.data()[6..12]);
    if let Some(pinned) = p.backend {
        return join_port(cx, frame, p, entry, vip, pinned);
    }
    if is_syn {
        match mptcp::syn(cx, frame, seg) {
            Syn::Join { token } => return join(cx, frame, p, token, entry, vip),
            Syn::Capable => {
                entry.flags |= flags::MPC_SYN;
                if vip.mode.dsr().is_some() {
                    // DSR learns from the first segment after the SYN: remember where it starts.
                    entry.pending = parse::numbers(frame.data(), ip).after_syn();
                }
            }
            Syn::Plain => {}
        }
    } else {
        // T10: state was lost (restart, eviction, ECMP move): Maglev decides, as it did for the
        // SYN if the pool is unchanged. RSTs are forwarded but never adopted.
        cx.w.stats.event(Event::NonSynMiss);
        entry.flags |= flags::ADOPTED;
    }
    entry.set_state(state::first(is_syn));
    // Maglev takes the fixed hash, the same on every instance (the flow table's is keyed).
    let Some(backend) = vip.maglev.lookup(p.key.hash()) else {
        return Verdict::Drop(DropReason::NoBackend);
    };
    entry.backend = backend;
    if is_syn || !seg.has(RST) {
        insert(cx, p.hash, entry);
    }
    if is_syn {
        cx.w.stats.event(Event::NewFlow);
        if let Some(c) = cx.w.stats.vips.get_mut(p.vip.0 as usize) {
            c.new_conns += 1;
        }
        if let Some(c) = cx.w.stats.backends.get_mut(backend.0 as usize) {
            c.new_conns += 1;
        }
    }
    egress::to_backend(cx, frame, ip, backend, p.vip, p.hash)
}

/// Whether a VIP forwards in DSR mode (slow path only).
fn is_dsr(cx: &Ctx<'_>, vip: VipId) -> bool {
    cx.pool.vip(vip).is_some_and(|v| v.mode.dsr().is_some())
}

/// Inserts a flow; a full bucket means stateless forwarding. Returns whether it was stored.
fn insert(cx: &mut Ctx<'_>, hash: u64, entry: FlowEntry) -> bool {
    insert_in(cx.w, cx.shared, cx.now, hash, entry)
}

/// [`insert`] into a worker's table at `now`.
#[inline]
fn insert_in(w: &mut Worker, shared: &Shared, now: Ticks, hash: u64, entry: FlowEntry) -> bool {
    let done = w.flows.insert(hash, entry, now.coarse_ms());
    inserted(w, shared, now, &entry, done)
}

/// What [`insert_in`] counts and releases once the table has answered `done` for `entry`.
#[inline]
fn inserted(w: &mut Worker, shared: &Shared, now: Ticks, entry: &FlowEntry, done: Insert) -> bool {
    match done {
        Insert::Inserted {
            evicted,
            evicted_live,
            ..
        } => {
            if let Some(c) = w.stats.backends.get_mut(entry.backend.0 as usize) {
                c.active_flows += 1;
            }
            if let Some(old) = evicted {
                flow_ended(&old, shared, now, &mut w.stats);
                if evicted_live {
                    w.stats.event(Event::HalfOpenEvicted);
                }
            }
            true
        }
        Insert::Full => {
            w.stats.event(Event::FlowTableFull);
            false
        }
    }
}

/// [`insert_in`] out of line, for the new-connection paths' rare full bucket (the bucket of
/// `hash` has no free way: [`FlowTable::insert_full`] goes straight to what makes room); whether
/// the entry went in.
///
/// [`FlowTable::insert_full`]: crate::tables::flow_table::FlowTable::insert_full
#[cold]
#[inline(never)]
fn insert_full_bucket(
    w: &mut Worker,
    shared: &Shared,
    now: Ticks,
    hash: u64,
    entry: FlowEntry,
) -> bool {
    let done = w.flows.insert_full(hash, entry, now.coarse_ms());
    inserted(w, shared, now, &entry, done)
}

/// What [`join_v4`] stores of a new subflow: its [`FlowEntry`] but for the fields at their
/// defaults. Not the entry itself: a 64-byte-aligned value in `join_v4`'s frame would cost it
/// a realigned stack and a register (join 651 -> 649).
#[derive(Clone, Copy)]
struct JoinEntry {
    key: FlowKey,
    backend: BackendId,
    vip: VipId,
    client_port: u8,
    token: u32,
    client_mac: [u8; 6],
    flags: u8,
}

impl JoinEntry {
    #[inline(always)]
    fn entry(&self) -> FlowEntry {
        FlowEntry {
            key: self.key,
            backend: self.backend,
            vip: self.vip,
            client_port: self.client_port,
            state: state::first(true) as u8,
            token: self.token,
            client_mac: self.client_mac,
            flags: self.flags,
            ..FlowEntry::default()
        }
    }
}

/// [`insert_full_bucket`] for [`join_v4`] (see [`JoinEntry`]).
#[cold]
#[inline(never)]
fn join_full_bucket(w: &mut Worker, shared: &Shared, now: Ticks, hash: u64, e: JoinEntry) -> bool {
    insert_full_bucket(w, shared, now, hash, e.entry())
}

/// Whether the new-connection paths may open the flow of `p` (whose key is `key`) here: its
/// client is this worker's, no flow of it exists yet, and its source is not one of our VIPs
/// (spoofed: the general path drops it). Otherwise the general path decides.
#[inline(always)]
fn opens_here(w: &Worker, pool: &PoolSnapshot, p: &ToVipV4, key: &FlowKey) -> bool {
    client_is_ours(w, key) && w.flows.lookup(key, p.hash).is_none() && !spoofed(pool, p)
}

/// Whether this worker owns the client of `key` ([`opens_here`]'s first check).
#[inline(always)]
fn client_is_ours(w: &Worker, key: &FlowKey) -> bool {
    w.workers <= 1 || steer(&key.src, key.src_port, w.workers) == w.id
}

/// Whether the source of `p` is one of our VIPs ([`opens_here`]'s last check).
#[inline(always)]
fn spoofed(pool: &PoolSnapshot, p: &ToVipV4) -> bool {
    pool.is_vip_addr_v4(p.d.src())
}

/// The new-connection fast path of an MP_JOIN SYN (see [`syn_v4`]): what [`new_flow`] and
/// [`join`] do for it, in the same order and with the same counts. `None`, having changed and
/// counted nothing, when the general path must decide: another worker owns the client, the
/// 5-tuple is known, a spoofed source, or options that the general path counts (anything but
/// one clean MP_JOIN among well-formed options: [`mptcp::join_options`] says so without
/// counting). Past that, it decides: the token table routes, admits and counts
/// the subflow, and a refused join is dropped with the general path's reason. Out of line: a
/// join is rarer than a first SYN, and its code stays out of the SYN path's registers.
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn join_v4<F: Frame>(
    w: &mut Worker,
    shared: &Shared,
    pool: &PoolSnapshot,
    now: Ticks,
    ingress: PortId,
    frame: &mut F,
    p: ToVipV4,
    hl: u8,
) -> Option<Verdict> {
    // `p` comes by value: taken by reference, it would have to be on the stack before `syn_v4`
    // branches here, on every SYN (SYN 465 -> 447). Of the rest of `parse::SynV4`, only its
    // header length comes: the rare general rewrite reads the other fields again from the
    // unchanged frame (copying all of it here costs join 657 -> 668).
    let p = &p;
    let key = p.key();
    if !opens_here(w, pool, p, &key) {
        return None;
    }
    let data = frame.data_mut();
    let token = mptcp::join_options(data.get(54..34 + usize::from(hl))?)?;
    // Decided from here on.
    let (backend, referenced) = match mptcp::route_join_nat_v4(pool, shared, now, token, p.vip) {
        Ok(routed) => routed,
        Err(r) => {
            w.stats.rx += 1;
            w.stats.drops[r as usize] += 1;
            return Some(Verdict::Drop(r));
        }
    };
    let flags = if referenced {
        flags::JOIN | flags::TOKEN_REF
    } else {
        flags::JOIN
    };
    // Read here, not before the token table: one value fewer kept across it.
    let client_mac = data.first_chunk::<12>().map_or([0; 6], |h| {
        let mut m = [0; 6];
        m.copy_from_slice(&h[6..]);
        m
    });
    let entry = JoinEntry {
        key,
        backend,
        vip: p.vip,
        client_port: ingress.0,
        token,
        client_mac,
        flags,
    };
    // What `insert_in` does, its common case (a free slot) inline; a full bucket takes
    // `insert_in` itself, out of line.
    let free = w
        .flows
        .insert_free(p.hash, now.coarse_ms(), || entry.entry())
        .is_some();
    if !free && !join_full_bucket(w, shared, now, p.hash, entry) && referenced {
        shared.tokens.subflow_closed(token, backend, now);
    }
    let stats = &mut w.stats;
    stats.event(Event::JoinRouted);
    let Some(b) = pool.fast4(backend) else {
        // A backend the precomputed rewrite does not cover: the general rewrite.
        if let Some(c) = stats.vips.get_mut(p.vip.0 as usize) {
            c.joins += 1;
        }
        if let Some(c) = stats.backends.get_mut(backend.0 as usize) {
            c.active_flows += u64::from(free);
            c.joins += 1;
        }
        // `process` came here with the ingress port's record, from the same snapshot.
        let port = pool.port(ingress)?;
        // The frame is as `parse::syn_v4` read it (54 bytes at least).
        let at = |i: usize| frame.data().get(i).copied().unwrap_or_default();
        let s = parse::SynV4 {
            d: p.d,
            hl,
            flags: at(47),
            ttl: at(22),
        };
        let mut cx = Ctx::new(w, shared, pool, now, ingress, port);
        let v = egress::to_backend(&mut cx, frame, &s.headers().ip, backend, p.vip, p.hash);
        w.stats.rx += 1;
        w.stats.verdict(&v);
        return Some(v);
    };
    // What `insert_in`, the join counts and `count_to_backend` count, one counter line each.
    let bytes = u64::from(p.d.len);
    if let Some(c) = stats.vips.get_mut(p.vip.0 as usize) {
        c.joins += 1;
        c.packets += 1;
        c.bytes += bytes;
    }
    if let Some(c) = stats.backends.get_mut(backend.0 as usize) {
        c.active_flows += u64::from(free);
        c.joins += 1;
        c.packets += 1;
        c.bytes += bytes;
    }
    egress::nat::to_backend_v4(data, b);
    stats.rx += 1;
    stats.forwarded += 1;
    Some(Verdict::Forward { port: b.egress })
}

/// The new-connection fast path: the opening SYN of an IPv4 client towards a NAT VIP's own
/// port, which no flow of this worker has yet ([`parse::syn_v4`], classified by
/// [`classify::to_vip_v4`](crate::pipeline::classify::to_vip_v4): its key and the one keyed
/// hash). It does what [`new_flow`] does for such a packet, in the same order and with the same
/// counts: Maglev, the MPTCP options (MP_CAPABLE marks the flow), the insert, and the rewrite
/// with the backend's precomputed [`Fast4`](crate::pool::Fast4); an MP_JOIN goes to
/// [`join_v4`]. `None`, having changed and counted nothing, when the packet needs anything
/// else: another worker owns it, its 5-tuple is known (a retransmission or a reuse), a spoofed
/// source, no backend, a backend the fast rewrite does not cover; the caller then takes the
/// general path with the same key and hash. Counts the packet (received, forwarded) when it
/// forwards it.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn syn_v4<F: Frame>(
    w: &mut Worker,
    shared: &Shared,
    pool: &PoolSnapshot,
    now: Ticks,
    ingress: PortId,
    frame: &mut F,
    p: &ToVipV4,
    s: &parse::SynV4,
) -> Option<Verdict> {
    // The options first, counting nothing: an MP_JOIN steps aside before any table is read.
    let opts = {
        let area = frame.data().get(s.options())?;
        if area.is_empty() {
            mptcp::SynOptions::Plain { malformed: false }
        } else {
            mptcp::syn_options(area)
        }
    };
    if opts == mptcp::SynOptions::Join {
        return join_v4(w, shared, pool, now, ingress, frame, *p, s.hl);
    }
    let data = frame.data_mut();
    let area = data.get(s.options())?;
    let key = p.key();
    // What `opens_here` checks, its lookup made by the insert below (which stores nothing for a
    // known key), and what else this path needs: all of it reads, none of it changes anything.
    if !client_is_ours(w, &key) || spoofed(pool, p) {
        return general();
    }
    let Some(vip) = pool.vip(p.vip) else {
        return general();
    };
    // Maglev takes the fixed hash, the same on every instance (the flow table's is keyed).
    let d = &p.d;
    let Some(backend) = vip.maglev.lookup(FlowKey::hash_v4(d.addrs, d.ports_host())) else {
        return general();
    };
    let Some(b) = pool.fast4(backend) else {
        return general();
    };
    // MPTCP options are counted as they are read, so the key is looked up before; a SYN without
    // them is counted once its flow is in (the counts do not depend on the order).
    let (plain, flags) = match opts {
        mptcp::SynOptions::Plain { malformed } => (Some(malformed), 0),
        mptcp::SynOptions::Mptcp { at } => {
            if w.flows.lookup(&key, p.hash).is_some() {
                return general();
            }
            let rest = area.get(usize::from(at)..).unwrap_or_default();
            match mptcp::syn_scanned(&mut w.stats, rest, &s.headers().seg) {
                Syn::Capable => (None, flags::MPC_SYN),
                _ => (None, 0),
            }
        }
        mptcp::SynOptions::Join => return None,
    };
    let client_mac = data.first_chunk::<12>().map_or([0; 6], |h| {
        let mut m = [0; 6];
        m.copy_from_slice(&h[6..]);
        m
    });
    let entry = || FlowEntry {
        key,
        backend,
        vip: p.vip,
        client_port: ingress.0,
        state: state::first(true) as u8,
        client_mac,
        flags,
        ..FlowEntry::default()
    };
    // What `insert_in`, the new-flow counts and `count_to_backend` count, one counter line each.
    // A full bucket takes `insert_in` itself, out of line.
    let free = match w.flows.insert_new(key, p.hash, now.coarse_ms(), entry) {
        New::Exists(_) => return general(),
        New::Inserted(_) => true,
        New::Full => {
            insert_full_bucket(w, shared, now, p.hash, entry());
            false
        }
    };
    if let Some(malformed) = plain {
        mptcp::plain_syn(&mut w.stats, malformed);
    }
    let stats = &mut w.stats;
    let bytes = u64::from(p.d.len);
    if let Some(c) = stats.vips.get_mut(p.vip.0 as usize) {
        c.new_conns += 1;
        c.packets += 1;
        c.bytes += bytes;
    }
    if let Some(c) = stats.backends.get_mut(backend.0 as usize) {
        c.active_flows += u64::from(free);
        c.new_conns += 1;
        c.packets += 1;
        c.bytes += bytes;
    }
    stats.event(Event::NewFlow);
    egress::nat::to_backend_v4(data, b);
    stats.rx += 1;
    stats.forwarded += 1;
    Some(Verdict::Forward { port: b.egress })
}

/// The new-connection path's answer when the general path decides (`None`): out of line and
/// cold, so that the compiler lays the path out for the packets it takes.
#[cold]
#[inline(never)]
fn general() -> Option<Verdict> {
    None
}

/// A new subflow (or one whose state was lost) to a stateless join port: it goes to the port's
/// backend whatever its token, with no lookup, so every gateway instance, restarted or not,
/// sends it to the same server. A SYN needs the backend to accept joins (active or draining);
/// later packets follow it while it exists, as established flows do.
fn join_port<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &mut F,
    p: &Classified,
    mut entry: FlowEntry,
    vip: &Vip,
    backend_id: BackendId,
) -> Verdict {
    let seg = &p.seg;
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
        if matches!(mptcp::syn(cx, frame, seg), Syn::Join { .. }) {
            entry.flags |= flags::JOIN;
        }
        cx.w.stats.event(Event::JoinPortRouted);
        if let Some(c) = cx.w.stats.vips.get_mut(vip.id.0 as usize) {
            c.joins += 1;
        }
        if let Some(c) = cx.w.stats.backends.get_mut(backend_id.0 as usize) {
            c.joins += 1;
        }
    } else {
        cx.w.stats.event(Event::NonSynMiss);
        entry.flags |= flags::ADOPTED | flags::JOIN;
    }
    entry.set_state(state::first(is_syn));
    entry.backend = backend_id;
    if is_syn || !seg.has(RST) {
        insert(cx, p.hash, entry);
    }
    egress::to_backend(cx, frame, &p.ip, backend_id, vip.id, p.hash)
}

/// MP_JOIN SYN: route by token to the connection's backend, or refuse.
fn join<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &mut F,
    p: &Classified,
    token: u32,
    mut entry: FlowEntry,
    vip: &Vip,
) -> Verdict {
    let (backend_id, referenced) = match mptcp::route_join(cx, &p.ip, token, vip) {
        Ok(routed) => routed,
        Err(r) => return Verdict::Drop(r),
    };
    entry.backend = backend_id;
    entry.set_state(state::first(true));
    entry.token = token;
    // The owner counted this subflow when it routed it (a remote owner counts none): the entry
    // holds that reference, or gives it back if the flow table cannot keep the entry.
    entry.flags |= flags::JOIN;
    if referenced {
        entry.flags |= flags::TOKEN_REF;
    }
    if !insert(cx, p.hash, entry) && referenced {
        cx.shared.tokens.subflow_closed(token, backend_id, cx.now);
    }
    cx.w.stats.event(Event::JoinRouted);
    if let Some(c) = cx.w.stats.vips.get_mut(vip.id.0 as usize) {
        c.joins += 1;
    }
    if let Some(c) = cx.w.stats.backends.get_mut(backend_id.0 as usize) {
        c.joins += 1;
    }
    egress::to_backend(cx, frame, &p.ip, backend_id, vip.id, p.hash)
}

// ---------------------------------------------------------------------------------------------
// Backend -> client
// ---------------------------------------------------------------------------------------------

fn backend_to_client<F: Frame>(cx: &mut Ctx<'_>, frame: &mut F, p: &Classified) -> Verdict {
    if let Some(worker) = cx.handoff(&p.ip.dst, p.seg.dst_port) {
        return Verdict::Handoff { worker };
    }
    if p.ip.ttl <= 1 {
        return reply::time_exceeded(cx, frame, &p.ip);
    }
    let mut key = p.key;
    let mut found = cx.w.flows.lookup(&key, p.hash);
    if found.is_none() {
        // A subflow the client opened to this backend's join port: its key has that port.
        if let Some(jp) = p.backend.and_then(|b| cx.pool.vip(p.vip)?.join_port(b)) {
            let jkey = FlowKey {
                dst_port: jp,
                ..key
            };
            if let Some(idx) = cx.w.flows.lookup(&jkey, cx.w.flows.hash(&jkey)) {
                (key, found) = (jkey, Some(idx));
            }
        }
    }
    let to = match found {
        Some(idx) => {
            let e = cx.w.flows.entry_mut(idx);
            e.last_seen = cx.now_ms;
            if p.seg.has(SYN | FIN | RST) || e.has(flags::ANNOUNCE) {
                server_slow_path(cx, frame, &p.ip, &p.seg, idx);
            }
            let e = cx.w.flows.entry(idx);
            ClientSide {
                port: PortId(e.client_port),
                mac: e.client_mac,
            }
        }
        None => {
            cx.w.stats.event(Event::ReturnStateless);
            let Some(port) = cx.pool.vip(p.vip).map(|v| v.client_port) else {
                return Verdict::Drop(DropReason::VipGone);
            };
            let Some(mac) = cx.pool.port(port).and_then(|p| p.gateway_mac) else {
                return Verdict::Drop(DropReason::NoNeighbour);
            };
            ClientSide { port, mac }
        }
    };
    egress::to_client(cx, frame, &p.ip, p.vip, &key.dst, key.dst_port, to)
}

/// SYN/ACK (token learning, the C flag), FIN and RST from the backend.
fn server_slow_path<F: Frame>(cx: &mut Ctx<'_>, frame: &mut F, ip: &Ip, seg: &Seg, idx: u32) {
    let mut e = *cx.w.flows.entry(idx);
    if e.has(flags::ANNOUNCE) {
        let t = parse::numbers(frame.data(), ip);
        announcing::on_server_segment(cx, frame, ip, seg, &t, &mut e);
    }
    if seg.has(SYN) && seg.has(ACK) {
        // A corrupted SYN/ACK of an MPTCP connection leaves the flow waiting for the
        // retransmission (T14).
        if e.state() == FlowState::SynSent && mptcp::server_syn_ack(cx, frame, ip, seg, &mut e) {
            step(&mut e, Input::ServerSynAck);
        }
        // After learning (which reads the segment as the server sent it); a retransmitted
        // SYN/ACK gets the flag too, as the client may see only that one.
        if e.has(flags::MPC_SYN) && !e.has(flags::JOIN) {
            mptcp::deny_join_initial(cx, frame, ip, seg, e.vip);
        }
    } else if seg.has(RST | FIN) {
        teardown(cx, frame, seg, &mut e, false);
    }
    *cx.w.flows.entry_mut(idx) = e;
}

// ---------------------------------------------------------------------------------------------
// ICMP errors, and the end of a flow
// ---------------------------------------------------------------------------------------------

/// An ICMP error quoting one of our flows (catalogue I1) follows that flow to its backend. It
/// never creates flow state.
pub(crate) fn icmp_error<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &mut F,
    ip: &Ip,
    q: &Quoted,
) -> Verdict {
    if let Some(worker) = cx.handoff(&q.key.src, q.key.src_port) {
        return Verdict::Handoff { worker };
    }
    let Some(idx) = cx.w.flows.lookup(&q.key, q.hash) else {
        return Verdict::Drop(DropReason::IcmpNoFlow);
    };
    let e = cx.w.flows.entry(idx);
    let (backend, vip) = (e.backend, e.vip);
    egress::icmp_error(cx, frame, ip, q, backend, vip)
}

/// Book-keeping of a flow that ends (reclaimed, evicted, or replaced by a new connection on its
/// 5-tuple): its backend's active-flow gauge, and the token subflow reference it holds.
fn flow_ended(e: &FlowEntry, shared: &Shared, now: Ticks, stats: &mut WorkerStats) {
    if let Some(c) = stats.backends.get_mut(e.backend.0 as usize) {
        c.active_flows = c.active_flows.saturating_sub(1);
    }
    if e.has(flags::TOKEN_REF) {
        shared.tokens.subflow_closed(e.token, e.backend, now);
        stats.event(Event::TokenReleased);
    }
}

impl Worker {
    /// Housekeeping between bursts: reclaims expired flows in `buckets` buckets of the flow table
    /// and releases the token references they held. Returns the number of flows reclaimed.
    pub fn housekeeping(&mut self, now: Ticks, shared: &Shared, buckets: usize) -> usize {
        let stats = &mut self.stats;
        self.flows.sweep(now.coarse_ms(), buckets, |e| {
            flow_ended(e, shared, now, stats)
        })
    }
}
