//! The packet pipeline: `process(frame, ingress, now, worker, shared, pool) -> Verdict`.
//!
//! One call decides one frame. The function is pure in the sans-IO sense: no I/O, no clock read
//! (the time is an argument), no allocation, and no lock on the established-flow path (the shared
//! token table is locked briefly only to learn a token, route an MP_JOIN SYN or release a
//! connection). Everything it changes is passed in: the frame (rewritten in place), the worker's
//! own flow table and counters, the shared token table.
//!
//! ## The walk of a packet
//!
//! ```text
//! parse::data_v4 ─> classify::to_vip_v4 ─> flow::established_v4 ─> egress::nat ─> Verdict
//!    │ not an IPv4 data segment to a NAT VIP, or not a known flow's plain packet
//!    v
//! parse::syn_v4 ──> classify::to_vip_v4 ─> flow::syn_v4 (a new flow) ─> egress::nat ─> Verdict
//!    │ not an opening IPv4 SYN to a NAT VIP, or not one the new-connection path takes
//!    v
//! parse::fast ─ common TCP? ─> classify::tcp ─ a VIP's? ─> flow::forward ─> egress ─> Verdict
//!    │ no (or not classified)                                  │ TTL out, DSR too big
//!    v                                                         └──────────> reply
//! parse::ethernet ──ARP───────────────────────────────────────> reply::arp
//!    └─ parse::ip (lengths, checksum, fragments, source routes, martians)
//!         └─ classify::upper ──TCP─> parse::tcp ─> classify::tcp ─> flow::forward ─> egress
//!                             ├─ICMP─> classify::icmp ─ echo, NDP ───────────> reply
//!                             │                       └ error about a flow ──> flow ─> egress
//!                             └─anything else ─> drop with a reason, or punt if it is for us
//! ```
//!
//! ## Layers
//!
//! The modules form a one-way graph, top to bottom; each uses only the layers below its own
//! (`scripts/check_pipeline_dag.py`, run by the test command, checks the imports). Modules on
//! one line are independent of each other.
//!
//! ```text
//! (this file)       process, process_burst: strings the layers together along the walk
//! flow              a VIP's TCP segments: the state machine (flow::state), new flows (Maglev,
//!                   join ports), MPTCP (flow::mptcp: learn, confirm, route join, fastclose, in
//!                   NAT and DSR), announcing (flow::announcing), housekeeping
//! egress            the way out: NAT rewrite (egress::nat), DSR tunnel (egress::dsr), ICMP
//!                   errors to a flow's backend; MACs, VLAN tag, per-VIP/backend counters
//! reply, classify   what the gateway answers itself (ARP, NDP, ICMP echo, ICMP errors to the
//!                   sender); what a packet is for, from the pool alone (direction, VIP, flow key
//!                   and its hash)
//! parse, context    the headers, read once and checked (fast parser, full walk, checksums);
//!                   the worker, the shared tables, the per-frame Ctx, steer
//! announce, verdict, frame
//!                   the outputs (ADD_ADDR frames and their queue; verdicts and counters) and
//!                   the frame
//! ```
//!
//! Every frame moves exactly one terminal counter (forwarded, replied, punted, handed off, or one
//! drop reason): [`WorkerStats::balanced`] checks it.
//!
//! ## Policies for bad and unusual input
//!
//! The reliability notes' bad-input catalogue (rows L1–L9, 4a–4k, 6a–6j, T1–T16, M1–M21, I1–I7)
//! leaves some rows to a decision; these are the pipeline's. `dataplane/core/BAD_INPUTS.md` lists
//! every row with its counter and test (`tests/bad_inputs.rs`).
//!
//! * **Unknown EtherType** (L2): dropped and counted (`unknown_ethertype`), never passed to the
//!   host stack. Only IPv4, IPv6 and ARP are handled.
//! * **802.1Q** (L3): one tag, and only the port's VLAN; a priority tag (VID 0) counts as untagged;
//!   QinQ and stacked tags are dropped (`vlan_unexpected`); a cut-off tag is a runt (`l2_runt`).
//! * **ARP** (L4, L5): requests for our addresses and VIPs are answered, never learned from;
//!   replies are punted to the runtime's neighbour cache unless they claim our addresses or a
//!   backend's address on the wrong port (`arp_spoof`).
//! * **Frame size** (L7, 4i): the core has no size limit; the NIC enforces the port MTU on receive.
//!   NAT rewrites in place and never grows an IP packet (only an 802.1Q tag may be added on the
//!   way out), so with equal MTUs on all ports a packet cannot exceed the egress MTU and no
//!   fragmentation-needed message is ever due.
//! * **Multi-segment frames** (L8): [`Frame`] is contiguous; the runtime linearises or drops
//!   chained mbufs before calling [`process`]. Every header read is bounds-checked against the
//!   contiguous data, so a cut-off frame is dropped by a length check.
//! * **Destination MAC** (L9, L10): the ingress port's own, broadcast (ARP) or neighbour
//!   discovery's multicast (ICMPv6); a unicast frame for another MAC is dropped (`l2_not_ours`),
//!   other group addresses too (`l2_multicast`).
//! * **IPv4 options** (4c): parsed by IHL and forwarded (`ipv4_options` event); LSRR/SSRR are
//!   dropped (`source_route`). Record-route and timestamp options of a VIP's segments (both
//!   directions) are overwritten with NOPs (`ipv4_options_blanked`): a backend echoes a record route with its own
//!   address in it, which must not reach the client. Blanked, not dropped (the options are
//!   otherwise harmless, and `ping -R` keeps working), and not cut out (the header keeps its
//!   length, so nothing else in the frame moves).
//! * **Fragments** (4h, 6f, 6g): dropped (`frag_drop`); no reassembly and no MSS clamping. An IPv6
//!   atomic fragment (offset 0, M = 0, RFC 6946; 6h) is a whole packet and is forwarded.
//! * **Not TCP to a VIP** (4k): dropped (`not_tcp`); to the gateway's own address: punted.
//! * **Malformed TCP options** (T4, T5): the walk stops there (`tcp_opt_malformed`), options
//!   before the bad one stand, as in Linux; the segment is forwarded.
//! * **Non-SYN without state** (T10): forwarded by Maglev and adopted (`nonsyn_miss`); a RST is
//!   forwarded but not adopted.
//! * **SYN on a known 5-tuple** (T11, T12): an open flow keeps its backend (`syn_retransmit`); a
//!   closing or closed one is balanced afresh (`syn_reuse`).
//! * **MP_JOIN SYN refused** (M11, M12, M14): dropped and counted, no state, no RST generated.
//! * **ICMP** (I4, I5): a Packet Too Big / Fragmentation Needed below the minimum MTU is counted
//!   (`icmp_ptb_small_mtu`) and forwarded unchanged (the backend's stack clamps it); echo requests
//!   to a VIP or our addresses are answered by the gateway, rate-limited (`rate_limited`).
//! * **Backend reply without state** (I6): rewritten statelessly to the VIP (`return_stateless`)
//!   so connections survive a gateway restart; a backend-side source that is not a backend is
//!   dropped (`not_from_backend`, I7).

pub mod announce;
pub mod frame;
pub mod verdict;

mod classify;
mod context;
mod egress;
mod flow;
mod parse;
mod reply;

pub use context::{steer, RateLimit, Shared, Worker, WorkerConfig};
pub use frame::{Frame, VecFrame};
pub use verdict::{BackendCounters, DropReason, Event, Verdict, VipCounters, WorkerStats};

use trapeze_wire::ethernet::EtherType;

use self::classify::{Classified, Icmp, ToVipV4, Upper};
use self::context::Ctx;
use self::parse::{Headers, Ip};
use crate::flow::{FlowSecret, TcpV4Keys};
use crate::pool::{PoolSnapshot, PortConfig, PortId};
use crate::time::Ticks;

/// Decides one frame (see the module documentation).
pub fn process<F: Frame>(
    frame: &mut F,
    ingress: PortId,
    now: Ticks,
    worker: &mut Worker,
    shared: &Shared,
    pool: &PoolSnapshot,
) -> Verdict {
    let port = pool.port(ingress);
    let pre = match port.filter(|p| p.vlan.is_none()) {
        None => None,
        Some(p) => {
            let secret = worker.flows.secret();
            let keys = worker.flows.tcp_v4();
            match to_vip_v4(frame.data(), &p.mac, pool, keys) {
                Some(e) => {
                    if let Some(v) = established(frame, &e, now, worker, pool) {
                        return v;
                    }
                    full_of(frame.data(), &p.mac, &e)
                }
                None => match syn_to_vip_v4(frame.data(), &p.mac, pool, keys) {
                    Ok((s, e)) => {
                        if let Some(v) =
                            flow::syn_v4(worker, shared, pool, now, ingress, frame, &e, &s)
                        {
                            return v;
                        }
                        // Rare (a retransmission, another worker's client, a spoofed source):
                        // parsed and hashed again, rather than the first reading kept in
                        // registers and on the stack for it (SYN 469 -> 465, join 672 -> 663).
                        fast_classify(frame.data(), &p.mac, pool, secret)
                    }
                    Err(Some(s)) => classify::tcp(pool, secret, &s.headers()),
                    Err(None) => fast_classify(frame.data(), &p.mac, pool, secret),
                },
            }
        }
    };
    decide(
        frame,
        pre.as_ref(),
        ingress,
        port,
        now,
        worker,
        shared,
        pool,
    )
}

/// [`process`] without its specialised paths (the established path and the new-connection
/// path): every frame takes the general walk. The same decisions, counts and bytes (the property
/// tests compare them); for those tests only.
#[doc(hidden)]
pub fn process_general<F: Frame>(
    frame: &mut F,
    ingress: PortId,
    now: Ticks,
    worker: &mut Worker,
    shared: &Shared,
    pool: &PoolSnapshot,
) -> Verdict {
    let port = pool.port(ingress);
    let pre = port
        .filter(|p| p.vlan.is_none())
        .and_then(|p| fast_classify(frame.data(), &p.mac, pool, worker.flows.secret()));
    decide(
        frame,
        pre.as_ref(),
        ingress,
        port,
        now,
        worker,
        shared,
        pool,
    )
}

/// The established path's candidate: an IPv4 data segment towards a NAT VIP's own port, with
/// its flow key hashed (the packet's one hash).
#[inline(always)]
fn to_vip_v4(data: &[u8], mac: &[u8; 6], pool: &PoolSnapshot, keys: TcpV4Keys) -> Option<ToVipV4> {
    parse::data_v4(data, mac).and_then(|d| classify::to_vip_v4(pool, keys, &d))
}

/// The new-connection path's candidate: an opening IPv4 SYN ([`parse::syn_v4`]) towards a NAT
/// VIP's own port, with its flow key hashed (the packet's one hash). `Err(Some)`: an opening
/// SYN, but for another place (a DSR VIP, a join port, nothing of ours), which the general
/// classification decides from the headers already read; `Err(None)`: not an opening SYN.
#[inline(always)]
fn syn_to_vip_v4(
    data: &[u8],
    mac: &[u8; 6],
    pool: &PoolSnapshot,
    keys: TcpV4Keys,
) -> Result<(parse::SynV4, ToVipV4), Option<parse::SynV4>> {
    let s = parse::syn_v4(data, mac).ok_or(None)?;
    match classify::to_vip_v4(pool, keys, &s.d) {
        Some(e) => Ok((s, e)),
        None => Err(Some(s)),
    }
}

/// The established path: the packet's flow is known and needs nothing but the rewrite
/// ([`flow::established_v4`]). Counts it; `None` leaves the frame untouched and uncounted.
#[inline(always)]
fn established<F: Frame>(
    frame: &mut F,
    e: &ToVipV4,
    now: Ticks,
    worker: &mut Worker,
    pool: &PoolSnapshot,
) -> Option<Verdict> {
    let v = flow::established_v4(worker, pool, now.coarse_ms(), frame, e)?;
    worker.stats.rx += 1;
    worker.stats.forwarded += 1;
    Some(v)
}

/// After an established-path miss: the general path's classification of the same segment, with
/// the key and hash already computed.
#[inline]
fn full_of(data: &[u8], mac: &[u8; 6], e: &ToVipV4) -> Option<Classified> {
    parse::fast(data, mac).map(|h| classify::to_vip_v4_full(&h, e))
}

/// The most frames [`process_burst`] looks ahead over (the DPDK burst size).
pub const BURST: usize = 32;

/// Decides a burst of frames; `verdicts[i]` receives the verdict of `frames[i]` (the two slices
/// have the same length; extra entries of the longer one are left alone).
///
/// Same decisions as calling [`process`] on each frame in order, organised for memory-level
/// parallelism: a first pass parses, classifies and hashes every common-case packet of up to
/// [`BURST`] frames and touches its flow-table bucket, so the cache misses of the whole burst
/// overlap; the second pass decides each frame. Each packet's hash is computed once.
pub fn process_burst<F: Frame>(
    frames: &mut [F],
    verdicts: &mut [Verdict],
    ingress: PortId,
    now: Ticks,
    worker: &mut Worker,
    shared: &Shared,
    pool: &PoolSnapshot,
) {
    let port = pool.port(ingress);
    let fast = port.filter(|p| p.vlan.is_none()).map(|p| p.mac);
    for (frames, verdicts) in frames.chunks_mut(BURST).zip(verdicts.chunks_mut(BURST)) {
        // First pass: each frame's first look (the established and new-connection paths'
        // candidates apart, so that they cost a small copy), and its bucket warmed.
        let mut first: [First; BURST] = [First::Other; BURST];
        let mut pre: [Option<Classified>; BURST] = [None; BURST];
        if let Some(mac) = &fast {
            let mut hashes = [0u64; BURST];
            let mut n = 0;
            let secret = worker.flows.secret();
            let keys = worker.flows.tcp_v4();
            for ((c, p), f) in first.iter_mut().zip(pre.iter_mut()).zip(frames.iter()) {
                let hash = if let Some(e) = to_vip_v4(f.data(), mac, pool, keys) {
                    *c = First::Established(e);
                    e.hash
                } else {
                    match syn_to_vip_v4(f.data(), mac, pool, keys) {
                        Ok((s, e)) => {
                            *c = First::Syn(s, e);
                            e.hash
                        }
                        Err(h) => {
                            *p = match h {
                                Some(h) => classify::tcp(pool, secret, &h.headers()),
                                None => fast_classify(f.data(), mac, pool, secret),
                            };
                            match p {
                                Some(p) => p.hash,
                                None => continue,
                            }
                        }
                    }
                };
                hashes[n] = hash;
                n += 1;
            }
            core::hint::black_box(worker.flows.warm(&hashes[..n]));
        }
        for (i, (((f, v), c), p)) in frames
            .iter_mut()
            .zip(verdicts.iter_mut())
            .zip(first.iter())
            .zip(pre.iter_mut())
            .enumerate()
        {
            match (c, &fast) {
                (First::Established(e), Some(mac)) => {
                    if let Some(fv) = established(f, e, now, worker, pool) {
                        *v = fv;
                        continue;
                    }
                    *p = full_of(f.data(), mac, e);
                }
                (First::Syn(s, e), _) => {
                    if let Some(fv) = syn_in_burst(worker, shared, pool, now, ingress, f, e, s) {
                        *v = fv;
                        continue;
                    }
                    *p = Some(classify::to_vip_v4_full(&s.headers(), e));
                }
                _ => {}
            }
            worker.announcements.position = i as u16;
            *v = decide(f, p.as_ref(), ingress, port, now, worker, shared, pool);
        }
    }
    worker.announcements.position = announce::AFTER_BURST;
}

/// [`flow::syn_v4`] for [`process_burst`], out of line: inlined there, it would cost the
/// established packets of every burst registers.
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn syn_in_burst<F: Frame>(
    worker: &mut Worker,
    shared: &Shared,
    pool: &PoolSnapshot,
    now: Ticks,
    ingress: PortId,
    frame: &mut F,
    e: &ToVipV4,
    s: &parse::SynV4,
) -> Option<Verdict> {
    flow::syn_v4(worker, shared, pool, now, ingress, frame, e, s)
}

/// What the first pass of [`process_burst`] found a frame to be, for the second.
#[derive(Clone, Copy)]
enum First {
    /// The established path's candidate.
    Established(ToVipV4),
    /// The new-connection path's candidate.
    Syn(parse::SynV4, ToVipV4),
    /// Anything else (its classification, if any, is kept beside).
    Other,
}

/// The common case in one go: the fast parser, then the classification of a VIP's segment.
#[inline]
fn fast_classify(
    data: &[u8],
    mac: &[u8; 6],
    pool: &PoolSnapshot,
    secret: FlowSecret,
) -> Option<Classified> {
    classify::tcp(pool, secret, &parse::fast(data, mac)?)
}

/// Decides one frame, already classified by [`fast_classify`] or not. `port` is the ingress
/// port's configuration, looked up once by the caller (`None`: a port the pool does not know).
#[inline]
#[allow(clippy::too_many_arguments)]
fn decide<F: Frame>(
    frame: &mut F,
    pre: Option<&Classified>,
    ingress: PortId,
    port: Option<&PortConfig>,
    now: Ticks,
    worker: &mut Worker,
    shared: &Shared,
    pool: &PoolSnapshot,
) -> Verdict {
    worker.stats.rx += 1;
    let Some(port) = port else {
        let v = Verdict::Drop(DropReason::Runt);
        worker.stats.verdict(&v);
        return v;
    };
    let mut cx = Ctx::new(worker, shared, pool, now, ingress, port);
    let v = match pre {
        Some(p) => flow::forward(&mut cx, frame, p),
        None => full_walk(&mut cx, frame),
    };
    cx.w.stats.verdict(&v);
    v
}

/// The full walk: Ethernet, then ARP or IP.
fn full_walk<F: Frame>(cx: &mut Ctx<'_>, frame: &mut F) -> Verdict {
    let l2 = match parse::ethernet(frame.data()) {
        Ok(l2) => l2,
        Err(r) => return Verdict::Drop(r),
    };
    // The destination MAC: ours, or a group address (judged below: broadcast for ARP, the
    // multicast of neighbour discovery for ICMPv6, nothing else). A unicast frame for another
    // host (a promiscuous port, a switch flooding an unknown MAC) is not forwarded or answered.
    if !l2.multicast && l2.dst != cx.port.mac {
        return Verdict::Drop(DropReason::L2NotOurs);
    }
    if l2.vid != cx.port.vlan {
        return Verdict::Drop(DropReason::VlanUnexpected);
    }
    cx.l2_len = l2.header_len;
    match l2.ethertype {
        EtherType::IPV4 | EtherType::IPV6 => {
            let v6 = l2.ethertype == EtherType::IPV6;
            let ip = match parse::ip(frame.data(), cx.l2_len, v6, &mut cx.w.stats) {
                Ok(ip) => ip,
                Err(r) => return Verdict::Drop(r),
            };
            match classify::upper(cx.pool, cx.ingress, &ip, l2.multicast) {
                Upper::Tcp => tcp(cx, frame, ip),
                Upper::Icmp => icmp(cx, frame, &ip, l2.multicast),
                Upper::Done(v) => v,
            }
        }
        EtherType::ARP if l2.multicast && !l2.broadcast => Verdict::Drop(DropReason::L2Multicast),
        EtherType::ARP => reply::arp(cx, frame),
        _ => Verdict::Drop(DropReason::UnknownEthertype),
    }
}

/// A TCP segment off the full walk.
fn tcp<F: Frame>(cx: &mut Ctx<'_>, frame: &mut F, ip: Ip) -> Verdict {
    let seg = match parse::tcp(frame.data(), &ip) {
        Ok(seg) => seg,
        Err(r) => return Verdict::Drop(r),
    };
    match classify::tcp(cx.pool, cx.w.flows.secret(), &Headers { ip, seg }) {
        Some(p) => {
            // A VIP's segment with IPv4 options (never the fast path's): record route and
            // timestamp are blanked, so that a backend's address recorded in them never reaches
            // a client. Not in a frame handed to another worker, which must leave unchanged
            // (that worker blanks them); `key.src` is the client side in both directions.
            if ip.l4 != ip.l3 + 20
                && cx.handoff(&p.key.src, p.key.src_port).is_none()
                && parse::blank_address_options(frame.data_mut(), &ip)
            {
                cx.w.stats.event(Event::Ipv4OptionsBlanked);
            }
            flow::forward(cx, frame, &p)
        }
        None => classify::not_for_a_vip(cx.pool, cx.ingress, &ip),
    }
}

/// An ICMP or ICMPv6 message.
fn icmp<F: Frame>(cx: &mut Ctx<'_>, frame: &mut F, ip: &Ip, l2_multicast: bool) -> Verdict {
    match classify::icmp(cx.pool, cx.ingress, frame.data(), ip, l2_multicast) {
        Icmp::Echo { reply_type } => reply::echo(cx, frame, ip, reply_type),
        Icmp::NeighbourSolicitation => reply::neighbour_advert(cx, frame, ip),
        Icmp::Error { small_mtu } => {
            if small_mtu {
                cx.w.stats.event(Event::IcmpSmallMtu);
            }
            match classify::quoted(cx.pool, cx.w.flows.secret(), frame.data(), ip) {
                Ok(q) => flow::icmp_error(cx, frame, ip, &q),
                Err(r) => Verdict::Drop(r),
            }
        }
        Icmp::Done(v) => v,
    }
}
