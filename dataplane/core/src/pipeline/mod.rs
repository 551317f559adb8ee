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
//! Ethernet (+802.1Q) ──ARP──────────────> reply for our addresses and VIPs, punt replies
//!        │
//!        └─IPv4 / IPv6 checks (lengths, checksum, fragments, source routes, martians)
//!              ├─TCP to a VIP ──────────> flow hit: NAT to the flow's backend (fast path)
//!              │                          SYN: MP_JOIN? token table : Maglev -> new flow
//!              │                          other miss: Maglev, adopted (state was lost)
//!              ├─TCP from a backend ────> NAT back to the VIP; learns MPTCP tokens (SYN/ACK)
//!              ├─ICMP/ICMPv6 ───────────> echo and NDP replies; errors follow the quoted flow
//!              └─anything else ─────────> drop with a reason, or punt if it is for us
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
//! * **IPv4 options** (4c): parsed by IHL and forwarded (`ipv4_options` event); LSRR/SSRR are
//!   dropped (`source_route`).
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

mod dsr;
mod icmp;
mod ip;
mod nat;
mod rewrite;

pub use frame::{Frame, VecFrame};
pub use verdict::{BackendCounters, DropReason, Event, Verdict, VipCounters, WorkerStats};

use trapeze_wire::arp;
use trapeze_wire::ethernet::{self, EtherType};

use crate::flow::{fmix, FlowSecret};
use crate::pool::{PoolSnapshot, PortConfig, PortId};
use crate::tables::flow_table::{flags, FlowEntry, FlowTable, FlowTableConfig};
use crate::tables::token::{TokenTable, TokenTableConfig};
use crate::time::Ticks;

/// A token bucket for generated packets (ICMP errors and echo replies), per worker.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    /// Sustained rate, per second.
    pub per_sec: u32,
    /// Burst size.
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            per_sec: 1000,
            burst: 100,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    limit: RateLimit,
    tokens: u32,
    last: Ticks,
}

impl Bucket {
    fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            tokens: limit.burst,
            last: Ticks::ZERO,
        }
    }

    fn take(&mut self, now: Ticks) -> bool {
        let elapsed = now.0.saturating_sub(self.last.0);
        let refill = (elapsed as u128 * self.limit.per_sec as u128 / 1_000_000_000) as u64;
        if refill > 0 {
            self.tokens = (self.tokens as u64 + refill).min(self.limit.burst as u64) as u32;
            self.last = now;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

/// Configuration of one worker.
#[derive(Debug, Clone, Copy)]
pub struct WorkerConfig {
    /// This worker's index.
    pub id: u16,
    /// Number of workers (flows are owned by `steer(client) % workers`).
    pub workers: u16,
    /// Flow table size and timeouts.
    pub flows: FlowTableConfig,
    /// Highest VIP id + 1 that gets counters.
    pub max_vips: usize,
    /// Highest backend id + 1 that gets counters.
    pub max_backends: usize,
    /// Rate of generated ICMP messages and echo replies.
    pub icmp_rate: RateLimit,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            id: 0,
            workers: 1,
            flows: FlowTableConfig::default(),
            max_vips: 256,
            max_backends: 4096,
            icmp_rate: RateLimit::default(),
        }
    }
}

/// State owned by one worker: touched by that worker's thread only.
#[derive(Debug)]
pub struct Worker {
    /// This worker's index.
    pub id: u16,
    /// Number of workers.
    pub workers: u16,
    /// The worker's flow table.
    pub flows: FlowTable,
    /// The worker's counters.
    pub stats: WorkerStats,
    /// ADD_ADDRs to send after this burst (announce mode): the runtime drains them.
    pub announcements: announce::AnnounceQueue,
    icmp: Bucket,
}

impl Worker {
    /// A worker with all its memory allocated up front.
    pub fn new(cfg: WorkerConfig) -> Self {
        Self::with_flows(cfg, FlowTable::new(cfg.flows))
    }

    /// A worker around a flow table built elsewhere (the daemon's, in its state file);
    /// `cfg.flows` is then unused. The flows it already holds count in the backends'
    /// active-flow gauges.
    pub fn with_flows(cfg: WorkerConfig, flows: FlowTable) -> Self {
        let mut stats = WorkerStats::new(cfg.max_vips, cfg.max_backends);
        for (_, e) in flows.iter() {
            if let Some(c) = stats.backends.get_mut(e.backend.0 as usize) {
                c.active_flows += 1;
            }
        }
        Self {
            id: cfg.id,
            workers: cfg.workers.max(1),
            flows,
            stats,
            announcements: announce::AnnounceQueue::default(),
            icmp: Bucket::new(cfg.icmp_rate),
        }
    }

    /// Housekeeping between bursts: reclaims expired flows in `buckets` buckets of the flow table
    /// and releases the token references they held. Returns the number of flows reclaimed.
    pub fn housekeeping(&mut self, now: Ticks, shared: &Shared, buckets: usize) -> usize {
        let stats = &mut self.stats;
        self.flows.sweep(now.coarse_ms(), buckets, |e| {
            flow_ended(e, shared, now, stats)
        })
    }
}

/// State shared by all workers.
///
/// Token entries end with their connection's last subflow (each worker releases the references
/// of the flows it reclaims in [`Worker::housekeeping`]) or on MP_FASTCLOSE; the idle timeout is
/// the backstop for connections whose subflow entries were lost: the control thread calls
/// [`TokenTable::expire`] on `tokens` periodically.
#[derive(Debug)]
pub struct Shared {
    /// The token table.
    pub tokens: TokenTable,
}

impl Shared {
    /// Shared state with a token table of the given size.
    pub fn new(tokens: TokenTableConfig) -> Self {
        Self {
            tokens: TokenTable::new(tokens),
        }
    }
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

/// The worker that owns flows of a client endpoint: a fixed function of the client's address and
/// port, which both directions of a NATed flow carry.
#[inline]
pub fn steer(client_addr: &[u8; 16], client_port: u16, workers: u16) -> u16 {
    if workers <= 1 {
        return 0;
    }
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&client_addr[8..]);
    hi.copy_from_slice(&client_addr[..8]);
    let x = u64::from_le_bytes(lo)
        ^ u64::from_le_bytes(hi).rotate_left(17)
        ^ ((client_port as u64) << 48);
    (fmix(x) % workers as u64) as u16
}

/// Everything a stage needs, bundled so stage signatures stay short.
pub(crate) struct Ctx<'a> {
    pub(crate) w: &'a mut Worker,
    pub(crate) shared: &'a Shared,
    pub(crate) pool: &'a PoolSnapshot,
    pub(crate) now: Ticks,
    pub(crate) now_ms: u32,
    pub(crate) ingress: PortId,
    pub(crate) port: &'a PortConfig,
    /// Ingress Ethernet header length (14, or 18 with a VLAN tag).
    pub(crate) l2_len: usize,
}

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
    let pre = port
        .filter(|p| p.vlan.is_none())
        .and_then(|_| fast_classify(frame.data(), pool, worker.flows.secret()));
    decide(frame, pre, ingress, port, now, worker, shared, pool)
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
    let fast = port.is_some_and(|p| p.vlan.is_none());
    for (frames, verdicts) in frames.chunks_mut(BURST).zip(verdicts.chunks_mut(BURST)) {
        let mut pre: [Option<Pre>; BURST] = [None; BURST];
        if fast {
            let mut hashes = [0u64; BURST];
            let mut n = 0;
            let secret = worker.flows.secret();
            for (p, f) in pre.iter_mut().zip(frames.iter()) {
                *p = fast_classify(f.data(), pool, secret);
                if let Some(p) = p {
                    hashes[n] = p.2.hash;
                    n += 1;
                }
            }
            core::hint::black_box(worker.flows.warm(&hashes[..n]));
        }
        for (i, ((f, v), p)) in frames
            .iter_mut()
            .zip(verdicts.iter_mut())
            .zip(pre)
            .enumerate()
        {
            worker.announcements.position = i as u16;
            *v = decide(f, p, ingress, port, now, worker, shared, pool);
        }
    }
    worker.announcements.position = announce::AFTER_BURST;
}

/// A frame the fast parser read and classified: its IP and TCP facts and its flow key and hash.
type Pre = (ip::Ip, nat::Seg, nat::Classified);

#[inline]
fn fast_classify(data: &[u8], pool: &PoolSnapshot, secret: FlowSecret) -> Option<Pre> {
    let (ip, seg) = ip::fast_parse(data)?;
    let c = nat::classify(pool, secret, &ip, &seg)?;
    Some((ip, seg, c))
}

/// Decides one frame, already pre-classified by the fast parser or not. `port` is the ingress
/// port's configuration, looked up once by the caller (`None`: a port the pool does not know).
#[inline]
#[allow(clippy::too_many_arguments)]
fn decide<F: Frame>(
    frame: &mut F,
    pre: Option<Pre>,
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
    let mut cx = Ctx {
        w: worker,
        shared,
        pool,
        now,
        now_ms: now.coarse_ms(),
        ingress,
        port,
        l2_len: 14,
    };
    let v = match pre {
        Some((ip, seg, c)) => nat::forward(&mut cx, frame, &ip, &seg, &c),
        None => ethernet_stage(&mut cx, frame),
    };
    cx.w.stats.verdict(&v);
    v
}

fn ethernet_stage<F: Frame>(cx: &mut Ctx<'_>, frame: &mut F) -> Verdict {
    let l2 = match ethernet::parse_l2(frame.data()) {
        Ok(l2) => l2,
        Err(trapeze_wire::Error::Unsupported) => return Verdict::Drop(DropReason::VlanUnexpected),
        Err(_) => return Verdict::Drop(DropReason::Runt),
    };
    // A priority tag (VID 0) counts as untagged.
    let vid = l2.vlan.map(|t| t.vid).filter(|&v| v != 0);
    if vid != cx.port.vlan {
        return Verdict::Drop(DropReason::VlanUnexpected);
    }
    cx.l2_len = l2.header_len;
    match l2.ethertype {
        EtherType::IPV4 | EtherType::IPV6 => ip::stage(
            cx,
            frame,
            l2.ethertype == EtherType::IPV6,
            l2.dst.is_multicast(),
        ),
        EtherType::ARP => arp_stage(cx, frame),
        _ => Verdict::Drop(DropReason::UnknownEthertype),
    }
}

/// ARP: answer requests for our addresses and VIPs; punt replies (neighbour learning is the
/// runtime's) unless they would poison it; drop the rest.
///
/// A reply (gratuitous or not) that claims one of the gateway's addresses or VIPs, or a backend's
/// address on a port other than that backend's egress port, is dropped as `arp_spoof` (L5): the
/// runtime never learns a neighbour from it. Requests are answered, never learned from.
fn arp_stage<F: Frame>(cx: &mut Ctx<'_>, frame: &mut F) -> Verdict {
    let l2_len = cx.l2_len;
    let buf = frame.data_mut();
    let Ok(mut pkt) = arp::Packet::new_checked(&mut buf[l2_len..]) else {
        return Verdict::Drop(DropReason::ArpBad);
    };
    match pkt.operation() {
        arp::Operation::Request => {
            let target = crate::flow::v4_mapped(pkt.target_protocol_addr());
            if !(cx.pool.is_own_addr(cx.ingress, &target) || cx.pool.is_vip_addr(&target)) {
                return Verdict::Drop(DropReason::ArpNotOurs);
            }
            let mac = ethernet::MacAddr(cx.port.mac);
            let requester = pkt.source_hardware_addr();
            arp::make_reply_in_place(&mut pkt, mac);
            rewrite::set_macs(buf, &cx.port.mac, &requester.0);
            Verdict::Reply { port: cx.ingress }
        }
        arp::Operation::Reply => {
            let sender = crate::flow::v4_mapped(pkt.source_protocol_addr());
            let p = cx.pool;
            let ours = p.ports.iter().any(|port| p.is_own_addr(port.id, &sender))
                || p.is_vip_addr(&sender);
            let wrong_port = || {
                p.backends.iter().flatten().any(|b| {
                    b.ipv4.map(|a| a.octets()) == Some(pkt.source_protocol_addr())
                        && b.egress != cx.ingress
                })
            };
            if ours || wrong_port() {
                return Verdict::Drop(DropReason::ArpSpoof);
            }
            Verdict::Punt
        }
        _ => Verdict::Drop(DropReason::ArpBad),
    }
}
