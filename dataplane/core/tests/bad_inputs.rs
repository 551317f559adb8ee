//! The bad-input catalogue of the reliability notes (§4: rows L1–L9, 4a–4k, 6a–6j, T1–T16,
//! M1–M21, I1–I7), one test per row, through `process()`.
//!
//! Every frame goes through [`Sim::send`], which checks that `process` returned (no panic), that
//! exactly one terminal counter moved (forwarded, replied, punted, handed off or one drop reason)
//! and that the worker's counters stay balanced. Each test then asserts the exact verdict and the
//! counters the row names. `dataplane/core/BAD_INPUTS.md` maps rows to tests.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use trapeze_core::crypto::token_from_key;
use trapeze_core::pipeline::{
    process, DropReason, Event, Frame, RateLimit, Shared, VecFrame, Verdict, Worker, WorkerConfig,
    WorkerStats,
};
use trapeze_core::pool::{BackendId, BackendState, PoolSnapshot, PoolSpec, PortId};
use trapeze_core::tables::flow_table::{FlowState, FlowTableConfig};
use trapeze_core::tables::token::{Owner, TokenTableConfig};
use trapeze_core::testkit::*;
use trapeze_core::Ticks;
use trapeze_wire::ip::IpProtocol;
use trapeze_wire::mptcp::{MpCapable, MpcFlags};
use trapeze_wire::{checksum, ipv4, ipv6, tcp};

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;
const URG: u8 = 0x20;
const SYNACK: u8 = SYN | ACK;

const TO_BACKENDS: Verdict = Verdict::Forward { port: PortId(1) };
const TO_CLIENTS: Verdict = Verdict::Forward { port: PortId(0) };
const REPLY0: Verdict = Verdict::Reply { port: PortId(0) };

fn drop(r: DropReason) -> Verdict {
    Verdict::Drop(r)
}

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// One worker, one token table, one pool, the clock in the test's hands.
struct Sim {
    w: Worker,
    shared: Shared,
    pool: PoolSnapshot,
    now: Ticks,
}

fn terminal(s: &WorkerStats) -> u64 {
    s.forwarded + s.replied + s.punted + s.handed_off + s.dropped()
}

impl Sim {
    fn new() -> Self {
        Self::with(demo_pool(3), RateLimit::default())
    }

    fn with_pool(pool: PoolSnapshot) -> Self {
        Self::with(pool, RateLimit::default())
    }

    /// A worker whose ICMP bucket holds `burst` messages and never refills.
    fn with_icmp_burst(burst: u32) -> Self {
        Self::with(demo_pool(3), RateLimit { per_sec: 0, burst })
    }

    fn with(pool: PoolSnapshot, icmp_rate: RateLimit) -> Self {
        Self {
            w: Worker::new(WorkerConfig {
                flows: FlowTableConfig {
                    capacity: 1024,
                    ..Default::default()
                },
                icmp_rate,
                ..Default::default()
            }),
            shared: Shared::new(TokenTableConfig {
                capacity: 1024,
                shards: 4,
            }),
            pool,
            now: Ticks::from_secs(1),
        }
    }

    /// Processes one frame arriving on `port`: returns the verdict and the frame as it leaves.
    /// Checks that exactly one terminal counter moved and that the counters balance.
    fn send(&mut self, bytes: &[u8], port: u8) -> (Verdict, Vec<u8>) {
        let (rx, before) = (self.w.stats.rx, terminal(&self.w.stats));
        let mut frame = VecFrame::new(bytes);
        let v = process(
            &mut frame,
            PortId(port),
            self.now,
            &mut self.w,
            &self.shared,
            &self.pool,
        );
        assert_eq!(self.w.stats.rx, rx + 1, "one frame received");
        assert_eq!(
            terminal(&self.w.stats),
            before + 1,
            "exactly one terminal counter per frame"
        );
        assert!(self.w.stats.balanced());
        (v, frame.data().to_vec())
    }

    /// [`Self::send`], asserting the verdict; returns the frame as it leaves.
    fn expect(&mut self, bytes: &[u8], port: u8, want: Verdict) -> Vec<u8> {
        let (v, out) = self.send(bytes, port);
        assert_eq!(v, want);
        out
    }

    fn drops(&self, r: DropReason) -> u64 {
        self.w.stats.drops_of(r)
    }

    fn events(&self, e: Event) -> u64 {
        self.w.stats.events_of(e)
    }

    /// All drops so far were for `r`, and there were `n` of them.
    fn only_drops(&self, r: DropReason, n: u64) {
        assert_eq!(self.drops(r), n, "{} drops", r.name());
        assert_eq!(self.w.stats.dropped(), n, "no drop for another reason");
    }

    fn flow_states(&self) -> Vec<FlowState> {
        self.w.flows.iter().map(|(_, e)| e.state()).collect()
    }

    fn set_pool(&mut self, spec: PoolSpec) {
        self.pool = PoolSnapshot::build(spec).unwrap();
    }
}

fn c4(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 51, 100, last))
}

fn c6(last: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, last))
}

fn syn4(port: u16) -> Vec<u8> {
    TcpSpec::to_vip(c4(1), port, SYN).build()
}

fn syn6(port: u16) -> Vec<u8> {
    TcpSpec::to_vip(c6(1), port, SYN).build()
}

/// Offset of the IP header.
fn l3_of(f: &[u8]) -> usize {
    if f[12..14] == [0x81, 0x00] {
        18
    } else {
        14
    }
}

/// Recomputes the IPv4 header checksum of an untagged frame.
fn fix_ip4(f: &mut [u8]) {
    let hl = usize::from(f[14] & 0x0f) * 4;
    ipv4::Packet::new_unchecked(&mut f[14..14 + hl]).fill_checksum();
}

/// Recomputes the TCP checksum of an untagged IPv4 frame, or of an IPv6 frame without extension
/// headers.
fn fix_tcp(f: &mut [u8]) {
    let (src, dst, l4, end) = if f[12..14] == [0x86, 0xdd] {
        let p = ipv6::Packet::new_unchecked(&f[14..54]);
        let end = 54 + usize::from(p.payload_len());
        (IpAddr::V6(p.src_addr()), IpAddr::V6(p.dst_addr()), 54, end)
    } else {
        let p = ipv4::Packet::new_unchecked(&f[14..34]);
        let hl = usize::from(f[14] & 0x0f) * 4;
        (
            IpAddr::V4(p.src_addr()),
            IpAddr::V4(p.dst_addr()),
            14 + hl,
            14 + usize::from(p.total_len()),
        )
    };
    tcp::Packet::new_unchecked(&mut f[l4..end]).fill_checksum(&src, &dst);
}

/// The essentials of a forwarded TCP frame, with every checksum verified over the IP length
/// (Ethernet padding excluded) and IPv6 extension headers crossed.
#[derive(Debug, PartialEq, Eq)]
struct Out {
    src: IpAddr,
    dst: IpAddr,
    src_port: u16,
    dst_port: u16,
    ttl: u8,
    /// TCP header and payload.
    segment: Vec<u8>,
}

fn parse_out_unchecked_tcp(f: &[u8]) -> (Out, bool) {
    let l3 = l3_of(f);
    let ethertype = u16::from_be_bytes([f[l3 - 2], f[l3 - 1]]);
    let (src, dst, ttl, l4) = if ethertype == 0x86dd {
        let p = ipv6::Packet::new_checked(&f[l3..]).expect("ipv6");
        let walk = p.extension_headers().expect("extension headers");
        let l4 = p.payload()[walk.upper_offset..].to_vec();
        (
            IpAddr::V6(p.src_addr()),
            IpAddr::V6(p.dst_addr()),
            p.hop_limit(),
            l4,
        )
    } else {
        let p = ipv4::Packet::new_checked(&f[l3..]).expect("ipv4");
        assert!(p.verify_checksum(), "IPv4 header checksum");
        (
            IpAddr::V4(p.src_addr()),
            IpAddr::V4(p.dst_addr()),
            p.hop_limit(),
            p.payload().to_vec(),
        )
    };
    let t = tcp::Packet::new_checked(&l4[..]).expect("tcp");
    let ok = t.verify_checksum(&src, &dst);
    let out = Out {
        src,
        dst,
        src_port: t.src_port(),
        dst_port: t.dst_port(),
        ttl,
        segment: l4.clone(),
    };
    (out, ok)
}

fn parse_out(f: &[u8]) -> Out {
    let (out, ok) = parse_out_unchecked_tcp(f);
    assert!(ok, "TCP checksum");
    out
}

/// Which demo backend an output frame went to.
fn backend_of(f: &[u8]) -> u16 {
    let o = parse_out(f);
    (0..64u16)
        .find(|&i| o.dst == IpAddr::V4(backend_v4(i)) || o.dst == IpAddr::V6(backend_v6(i)))
        .expect("destination is a backend")
}

/// SYN, SYN/ACK, ACK of a plain connection; returns the backend.
fn plain_handshake(sim: &mut Sim, client: IpAddr, port: u16) -> u16 {
    let out = sim.expect(&TcpSpec::to_vip(client, port, SYN).build(), 0, TO_BACKENDS);
    let b = backend_of(&out);
    sim.expect(
        &TcpSpec::from_backend(b, client, port, SYNACK).build(),
        1,
        TO_CLIENTS,
    );
    sim.expect(&TcpSpec::to_vip(client, port, ACK).build(), 0, TO_BACKENDS);
    b
}

/// A full MP_CAPABLE handshake; returns the backend. The token is learned and confirmed.
fn mptcp_handshake(
    sim: &mut Sim,
    client: IpAddr,
    port: u16,
    server_key: u64,
    client_key: u64,
) -> u16 {
    let syn = TcpSpec::to_vip(client, port, SYN)
        .with_mptcp(mpc_syn())
        .build();
    let b = backend_of(&sim.expect(&syn, 0, TO_BACKENDS));
    let synack = TcpSpec::from_backend(b, client, port, SYNACK)
        .with_mptcp(mpc_synack(server_key))
        .build();
    sim.expect(&synack, 1, TO_CLIENTS);
    let ack = TcpSpec::to_vip(client, port, ACK)
        .with_mptcp(mpc_ack(client_key, server_key))
        .build();
    sim.expect(&ack, 0, TO_BACKENDS);
    b
}

/// A SYN with the given raw option bytes.
fn syn_with(port: u16, options: &[u8]) -> Vec<u8> {
    let mut s = TcpSpec::to_vip(c4(1), port, SYN);
    s.options = options.to_vec();
    s.build()
}

/// Builds an Ethernet frame.
fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An IPv4 packet from the client side (client MAC to port 0) with the given payload.
fn ip4_frame(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, ttl: u8, payload: &[u8]) -> Vec<u8> {
    let mut ip = vec![0u8; 20 + payload.len()];
    ipv4::Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol(proto),
        payload_len: payload.len(),
        hop_limit: ttl,
        dscp_ecn: 0,
        ident: 7,
        dont_frag: false,
    }
    .emit(&mut ipv4::Packet::new_unchecked(&mut ip[..20]));
    ip[20..].copy_from_slice(payload);
    eth(PORT0_MAC, CLIENT_MAC, 0x0800, &ip)
}

/// An IPv6 packet from the client side with the given payload.
fn ip6_frame(src: Ipv6Addr, dst: Ipv6Addr, next: u8, hop: u8, payload: &[u8]) -> Vec<u8> {
    let mut ip = vec![0u8; 40 + payload.len()];
    ipv6::Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol(next),
        payload_len: payload.len(),
        hop_limit: hop,
        traffic_class: 0,
        flow_label: 0,
    }
    .emit(&mut ipv6::Packet::new_unchecked(&mut ip[..40]));
    ip[40..].copy_from_slice(payload);
    eth(PORT0_MAC, CLIENT_MAC, 0x86dd, &ip)
}

/// An ICMP message (checksum filled in) in an IPv4 frame.
fn icmp4(src: Ipv4Addr, dst: Ipv4Addr, mut msg: Vec<u8>) -> Vec<u8> {
    msg[2..4].fill(0);
    let c = checksum::finish(checksum::data(&msg));
    msg[2..4].copy_from_slice(&c.to_be_bytes());
    ip4_frame(src, dst, 1, 64, &msg)
}

/// An ICMPv6 message (checksum filled in) in an IPv6 frame.
fn icmp6(src: Ipv6Addr, dst: Ipv6Addr, hop: u8, mut msg: Vec<u8>) -> Vec<u8> {
    msg[2..4].fill(0);
    let pseudo = checksum::pseudo_header_v6(&src.octets(), &dst.octets(), 58, msg.len() as u32);
    let c = checksum::finish(checksum::combine(&[pseudo, checksum::data(&msg)]));
    msg[2..4].copy_from_slice(&c.to_be_bytes());
    ip6_frame(src, dst, 58, hop, &msg)
}

/// What an ICMP error quotes: an IPv4 header (valid checksum) and the first 8 bytes of TCP.
fn quote4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, sport: u16, dport: u16) -> Vec<u8> {
    let mut q = vec![0u8; 28];
    ipv4::Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol(proto),
        payload_len: 40,
        hop_limit: 60,
        dscp_ecn: 0,
        ident: 99,
        dont_frag: true,
    }
    .emit(&mut ipv4::Packet::new_unchecked(&mut q[..20]));
    q[20..22].copy_from_slice(&sport.to_be_bytes());
    q[22..24].copy_from_slice(&dport.to_be_bytes());
    q[24..28].copy_from_slice(&0x0102_0304u32.to_be_bytes());
    q
}

fn quote6(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, sport: u16, dport: u16) -> Vec<u8> {
    let mut q = vec![0u8; 48];
    ipv6::Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol(proto),
        payload_len: 20,
        hop_limit: 60,
        traffic_class: 0,
        flow_label: 0,
    }
    .emit(&mut ipv6::Packet::new_unchecked(&mut q[..40]));
    q[40..42].copy_from_slice(&sport.to_be_bytes());
    q[42..44].copy_from_slice(&dport.to_be_bytes());
    q[44..48].copy_from_slice(&0x0102_0304u32.to_be_bytes());
    q
}

/// An ICMP error header (type, code, 4 bytes) followed by `quote`.
fn icmp_error(ty: u8, code: u8, word: u32, quote: &[u8]) -> Vec<u8> {
    let mut m = vec![ty, code, 0, 0];
    m.extend_from_slice(&word.to_be_bytes());
    m.extend_from_slice(quote);
    m
}

const ROUTER4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const ROUTER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 1);

fn v4(a: IpAddr) -> Ipv4Addr {
    match a {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => panic!("not v4"),
    }
}

fn v6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V6(a) => a,
        IpAddr::V4(_) => panic!("not v6"),
    }
}

/// An Ethernet/IPv4 ARP frame.
fn arp(op: u16, sha: [u8; 6], spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0u8; 28];
    a[0..2].copy_from_slice(&1u16.to_be_bytes());
    a[2..4].copy_from_slice(&0x0800u16.to_be_bytes());
    a[4] = 6;
    a[5] = 4;
    a[6..8].copy_from_slice(&op.to_be_bytes());
    a[8..14].copy_from_slice(&sha);
    a[14..18].copy_from_slice(&spa.octets());
    a[24..28].copy_from_slice(&tpa.octets());
    eth([0xff; 6], sha, 0x0806, &a)
}

/// Inserts IPv6 extension headers (type, bytes; byte 0 is filled in) between the fixed header and
/// the upper layer of an untagged IPv6 frame without extension headers.
fn with_ext6(f: &[u8], exts: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let upper = f[14 + 6];
    let mut out = f[..54].to_vec();
    out[14 + 6] = exts[0].0;
    let mut added = 0usize;
    for (i, (_, bytes)) in exts.iter().enumerate() {
        let mut h = bytes.clone();
        h[0] = exts.get(i + 1).map_or(upper, |n| n.0);
        added += h.len();
        out.extend_from_slice(&h);
    }
    out.extend_from_slice(&f[54..]);
    let pl = u16::from_be_bytes([f[18], f[19]]) as usize + added;
    out[18..20].copy_from_slice(&(pl as u16).to_be_bytes());
    out
}

/// An 8-byte Destination Options (or Hop-by-Hop) header: PadN.
fn pad_opts() -> Vec<u8> {
    vec![0, 0, 1, 4, 0, 0, 0, 0]
}

/// A Fragment header.
fn frag_hdr(offset: u16, more: bool) -> Vec<u8> {
    let off_m = (offset << 3) | u16::from(more);
    let mut h = vec![0, 0];
    h.extend_from_slice(&off_m.to_be_bytes());
    h.extend_from_slice(&0xabcd_0001u32.to_be_bytes());
    h
}

// ---------------------------------------------------------------------------------------------
// 4.1 Layer 2
// ---------------------------------------------------------------------------------------------

#[test]
fn l1_runt_frame() {
    let mut sim = Sim::new();
    let good4 = syn4(1000);
    let good6 = syn6(1000);
    for len in [0, 1, 6, 13] {
        sim.expect(&good4[..len], 0, drop(DropReason::Runt));
    }
    // Shorter than the fixed IPv4 / IPv6 header the EtherType announces.
    sim.expect(&good4[..14], 0, drop(DropReason::Runt));
    sim.expect(&good4[..14 + 19], 0, drop(DropReason::Runt));
    sim.expect(&good6[..14 + 39], 0, drop(DropReason::Runt));
    // A cut-off 802.1Q tag.
    let mut tagged = TcpSpec::to_vip(c4(1), 1000, SYN);
    tagged.vlan = Some(100);
    let tagged = tagged.build();
    sim.expect(&tagged[..16], 0, drop(DropReason::Runt));
    sim.only_drops(DropReason::Runt, 8);
    assert!(sim.w.flows.is_empty());
    // A frame from a port the pool does not know is counted as a runt too.
    sim.expect(&good4, 9, drop(DropReason::Runt));
}

#[test]
fn l2_unknown_ethertype() {
    // Policy: dropped and counted, never passed to the host stack.
    let mut sim = Sim::new();
    for ethertype in [0x88ccu16, 0x8847, 0x8863, 0x0842, 0x0000, 0xffff] {
        let mut f = syn4(1000);
        f[12..14].copy_from_slice(&ethertype.to_be_bytes());
        sim.expect(&f, 0, drop(DropReason::UnknownEthertype));
    }
    sim.only_drops(DropReason::UnknownEthertype, 6);
}

#[test]
fn l3_vlan_unexpected_qinq_and_priority_tag() {
    let mut sim = Sim::new();
    let mut spec = TcpSpec::to_vip(c4(1), 1000, SYN);
    spec.vlan = Some(100);
    let tagged = spec.build();
    // A tag on an untagged port.
    sim.expect(&tagged, 0, drop(DropReason::VlanUnexpected));
    // QinQ: outer 0x88a8.
    let mut qinq = tagged.clone();
    qinq[12..14].copy_from_slice(&0x88a8u16.to_be_bytes());
    sim.expect(&qinq, 0, drop(DropReason::VlanUnexpected));
    // Two 0x8100 tags.
    let mut double = tagged[..16].to_vec();
    double.extend_from_slice(&[0x81, 0x00, 0x00, 0x64]);
    double.extend_from_slice(&tagged[16..]);
    sim.expect(&double, 0, drop(DropReason::VlanUnexpected));
    sim.only_drops(DropReason::VlanUnexpected, 3);
    // Policy: a priority tag (VID 0) counts as untagged; the tag is stripped on the way out.
    spec.vlan = Some(0);
    let out = sim.expect(&spec.build(), 0, TO_BACKENDS);
    assert_eq!(&out[12..14], &[0x08, 0x00]);
    parse_out(&out);
    // A tagged port refuses another VID.
    let mut pool = demo_spec(3);
    pool.ports[0].vlan = Some(200);
    let mut sim = Sim::with_pool(PoolSnapshot::build(pool).unwrap());
    sim.expect(&tagged, 0, drop(DropReason::VlanUnexpected));
}

#[test]
fn l4_arp_malformed() {
    let mut sim = Sim::new();
    let own = Ipv4Addr::new(10, 0, 0, 1);
    let good = arp(1, CLIENT_MAC, Ipv4Addr::new(10, 0, 0, 254), own);
    sim.expect(&good, 0, REPLY0);
    let mut bad = Vec::new();
    for (at, bytes) in [
        (14, &[0u8, 6][..]),     // htype 6 (IEEE 802)
        (16, &[0x86, 0xdd][..]), // ptype IPv6
        (18, &[8][..]),          // hlen 8
        (19, &[16][..]),         // plen 16
        (20, &[0, 3][..]),       // operation 3 (RARP request)
        (20, &[0, 0][..]),       // operation 0
    ] {
        let mut f = good.clone();
        f[at..at + bytes.len()].copy_from_slice(bytes);
        bad.push(f);
    }
    bad.push(good[..14 + 27].to_vec()); // truncated
    bad.push(good[..14].to_vec());
    for f in &bad {
        sim.expect(f, 0, drop(DropReason::ArpBad));
    }
    sim.only_drops(DropReason::ArpBad, bad.len() as u64);
}

#[test]
fn l5_arp_not_ours_and_gratuitous_arp_for_a_backend() {
    let mut sim = Sim::new();
    let b0 = backend_v4(0);
    let evil = [0x02, 0xee, 0xee, 0xee, 0xee, 0xee];
    // A request for an address that is not ours: ignored, counted.
    sim.expect(
        &arp(
            1,
            CLIENT_MAC,
            Ipv4Addr::new(10, 0, 0, 254),
            Ipv4Addr::new(10, 0, 0, 9),
        ),
        0,
        drop(DropReason::ArpNotOurs),
    );
    // A gratuitous request (sender = target) for a backend address: not ours, not learned.
    sim.expect(&arp(1, evil, b0, b0), 0, drop(DropReason::ArpNotOurs));
    sim.expect(&arp(1, evil, b0, b0), 1, drop(DropReason::ArpNotOurs));
    // A gratuitous reply for a backend address on the client port: never reaches the cache.
    sim.expect(&arp(2, evil, b0, b0), 0, drop(DropReason::ArpSpoof));
    // Replies claiming the gateway's own address or a VIP.
    sim.expect(
        &arp(
            2,
            evil,
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 1),
        ),
        0,
        drop(DropReason::ArpSpoof),
    );
    sim.expect(
        &arp(
            2,
            evil,
            Ipv4Addr::new(10, 1, 0, 1),
            Ipv4Addr::new(10, 0, 0, 1),
        ),
        1,
        drop(DropReason::ArpSpoof),
    );
    sim.expect(&arp(2, evil, VIP4, VIP4), 0, drop(DropReason::ArpSpoof));
    assert_eq!(sim.drops(DropReason::ArpNotOurs), 3);
    assert_eq!(sim.drops(DropReason::ArpSpoof), 4);
    assert_eq!(sim.w.stats.dropped(), 7);
    // The backend's own (gratuitous) reply on its port, and an ordinary neighbour's reply, are
    // punted to the runtime's neighbour cache.
    sim.expect(&arp(2, backend_mac(0), b0, b0), 1, Verdict::Punt);
    sim.expect(
        &arp(
            2,
            CLIENT_MAC,
            Ipv4Addr::new(10, 0, 0, 254),
            Ipv4Addr::new(10, 0, 0, 1),
        ),
        0,
        Verdict::Punt,
    );
}

#[test]
fn l6_ethernet_padding_is_trimmed() {
    let mut sim = Sim::new();
    // A 54-byte SYN padded to the 60-byte minimum with junk.
    let mut syn = syn4(1000);
    assert_eq!(syn.len(), 54);
    syn.extend_from_slice(&[0xee; 6]);
    let out = sim.expect(&syn, 0, TO_BACKENDS);
    let o = parse_out(&out);
    assert_eq!(o.segment.len(), 20, "L4 length from the IP total length");
    // The padding does not count as payload: an MP_CAPABLE third ACK with trailing padding is
    // still a third ACK without data, and the token is confirmed.
    let key = 0x1234_5678;
    let s = TcpSpec::to_vip(c4(2), 2000, SYN)
        .with_mptcp(mpc_syn())
        .build();
    let b = backend_of(&sim.expect(&s, 0, TO_BACKENDS));
    let sa = TcpSpec::from_backend(b, c4(2), 2000, SYNACK)
        .with_mptcp(mpc_synack(key))
        .build();
    sim.expect(&sa, 1, TO_CLIENTS);
    let mut ack = TcpSpec::to_vip(c4(2), 2000, ACK)
        .with_mptcp(mpc_ack(7, key))
        .build();
    ack.extend_from_slice(&[0xab; 8]);
    let out = sim.expect(&ack, 0, TO_BACKENDS);
    parse_out(&out);
    assert_eq!(sim.events(Event::TokenConfirmed), 1);
    assert_eq!(sim.events(Event::MpcFallback), 0);
    assert_eq!(sim.shared.tokens.len(), 1);
    // IPv6 too.
    let mut syn = syn6(1000);
    syn.extend_from_slice(&[0xee; 10]);
    let out = sim.expect(&syn, 0, TO_BACKENDS);
    assert_eq!(parse_out(&out).segment.len(), 20);
}

#[test]
fn l7_jumbo_frame_is_forwarded_unchanged_in_size() {
    // Policy: the core has no frame-size limit; the NIC enforces the port MTU on receive, and NAT
    // never grows the IP packet.
    let mut sim = Sim::new();
    let mut spec = TcpSpec::to_vip(c4(1), 1000, ACK);
    spec.payload = vec![0x5a; 9000 - 54];
    let f = spec.build();
    assert_eq!(f.len(), 9000);
    let out = sim.expect(&f, 0, TO_BACKENDS);
    assert_eq!(out.len(), 9000);
    assert_eq!(parse_out(&out).segment.len(), 9000 - 34);
    assert_eq!(sim.events(Event::NonSynMiss), 1);
}

#[test]
fn l8_frame_cut_at_a_segment_boundary_is_never_read_past() {
    // Policy: `Frame` is contiguous; the runtime linearises or drops chained mbufs. A frame that
    // holds only the first segment of a packet is dropped by a length check, whatever the cut.
    let mut sim = Sim::new();
    let mut spec = TcpSpec::to_vip(c4(1), 1000, SYN);
    spec.payload = vec![1; 200];
    spec.options = vec![2, 4, 5, 0xb4, 1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0];
    let full = spec.build();
    let mut runts = 0;
    for cut in 0..full.len() {
        let (v, _) = sim.send(&full[..cut], 0);
        match v {
            Verdict::Drop(DropReason::Runt) => runts += 1,
            Verdict::Drop(DropReason::IpBadLength) => {}
            v => panic!("cut at {cut}: {v:?}"),
        }
    }
    assert_eq!(runts, 34, "inside the Ethernet or IPv4 header");
    assert_eq!(sim.drops(DropReason::IpBadLength), full.len() as u64 - 34);
    assert!(sim.w.flows.is_empty());
    // IPv6.
    let mut spec6 = TcpSpec::to_vip(c6(1), 1000, SYN);
    spec6.payload = vec![1; 100];
    let full6 = spec6.build();
    for cut in 54..full6.len() {
        sim.expect(&full6[..cut], 0, drop(DropReason::IpBadLength));
    }
}

#[test]
fn l9_broadcast_or_multicast_mac_to_the_vip() {
    let mut sim = Sim::new();
    for mac in [[0xff; 6], [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01]] {
        let mut spec = TcpSpec::to_vip(c4(1), 1000, SYN);
        spec.dst_mac = mac;
        sim.expect(&spec.build(), 0, drop(DropReason::L2Multicast));
        // ICMP echo to the VIP in a broadcast frame: not answered.
        let mut echo = icmp4(v4(c4(1)), VIP4, vec![8, 0, 0, 0, 0, 1, 0, 1]);
        echo[0..6].copy_from_slice(&mac);
        sim.expect(&echo, 0, drop(DropReason::L2Multicast));
    }
    let mut spec = TcpSpec::to_vip(c6(1), 1000, SYN);
    spec.dst_mac = [0x33, 0x33, 0, 0, 0, 1];
    sim.expect(&spec.build(), 0, drop(DropReason::L2Multicast));
    let mut echo6 = icmp6(v6(c6(1)), VIP6, 64, vec![128, 0, 0, 0, 0, 1, 0, 1]);
    echo6[0..6].copy_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
    sim.expect(&echo6, 0, drop(DropReason::L2Multicast));
    sim.only_drops(DropReason::L2Multicast, 6);
    assert!(sim.w.flows.is_empty());
    // Neighbour solicitation for the VIP, to its solicited-node group: answered.
    let mut ns = vec![135, 0, 0, 0, 0, 0, 0, 0];
    ns.extend_from_slice(&VIP6.octets());
    let group = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 0x0010);
    let mut f = icmp6(v6(c6(1)), group, 255, ns);
    f[0..6].copy_from_slice(&[0x33, 0x33, 0xff, 0, 0, 0x10]);
    sim.expect(&f, 0, REPLY0);
}

// ---------------------------------------------------------------------------------------------
// 4.2 IPv4
// ---------------------------------------------------------------------------------------------

#[test]
fn ipv4_4a_bad_version() {
    let mut sim = Sim::new();
    for version in [0u8, 5, 6, 15] {
        let mut f = syn4(1000);
        f[14] = (version << 4) | 5;
        fix_ip4(&mut f);
        sim.expect(&f, 0, drop(DropReason::IpBadVersion));
    }
    sim.only_drops(DropReason::IpBadVersion, 4);
}

#[test]
fn ipv4_4b_ihl_below_five() {
    let mut sim = Sim::new();
    for ihl in 0u8..5 {
        let mut f = syn4(1000);
        f[14] = 0x40 | ihl;
        sim.expect(&f, 0, drop(DropReason::IpBadHeaderLen));
    }
    sim.only_drops(DropReason::IpBadHeaderLen, 5);
}

/// A SYN with IPv4 options inserted (padded to a multiple of 4 with EOL).
fn syn4_with_ip_options(port: u16, opts: &[u8]) -> Vec<u8> {
    with_ip_options(syn4(port), opts)
}

/// An untagged IPv4 frame with IPv4 options inserted (padded to a multiple of 4 with EOL).
fn with_ip_options(base: Vec<u8>, opts: &[u8]) -> Vec<u8> {
    let mut o = opts.to_vec();
    while !o.len().is_multiple_of(4) {
        o.push(0);
    }
    let mut f = base[..34].to_vec();
    f.extend_from_slice(&o);
    f.extend_from_slice(&base[34..]);
    f[14] = 0x40 | (5 + o.len() / 4) as u8;
    let total = u16::from_be_bytes([f[16], f[17]]) + o.len() as u16;
    f[16..18].copy_from_slice(&total.to_be_bytes());
    fix_ip4(&mut f);
    f
}

#[test]
fn ipv4_4c_options() {
    // Policy: options are parsed by IHL and forwarded (counted); LSRR/SSRR are dropped.
    let mut sim = Sim::new();
    let router_alert = [148, 4, 0, 0];
    let out = sim.expect(&syn4_with_ip_options(1000, &router_alert), 0, TO_BACKENDS);
    let o = parse_out(&out);
    assert_eq!(out[14], 0x46, "options kept");
    assert_eq!((o.dst_port, o.ttl, o.segment.len()), (BACKEND_PORT, 63, 20));
    let record_route = [1, 7, 7, 4, 0, 0, 0, 0]; // NOP, RR with room for one address
    sim.expect(&syn4_with_ip_options(1001, &record_route), 0, TO_BACKENDS);
    assert_eq!(sim.events(Event::Ipv4Options), 2);
    // Source routes.
    let lsrr = [131, 7, 4, 10, 9, 9, 9];
    let ssrr = [1, 137, 7, 4, 10, 9, 9, 9];
    sim.expect(
        &syn4_with_ip_options(1002, &lsrr),
        0,
        drop(DropReason::SourceRoute),
    );
    sim.expect(
        &syn4_with_ip_options(1003, &ssrr),
        0,
        drop(DropReason::SourceRoute),
    );
    // A malformed option (length 1, or running past the header).
    sim.expect(
        &syn4_with_ip_options(1004, &[148, 1, 0, 0]),
        0,
        drop(DropReason::IpBadHeaderLen),
    );
    sim.expect(
        &syn4_with_ip_options(1005, &[148, 12, 0, 0]),
        0,
        drop(DropReason::IpBadHeaderLen),
    );
    assert_eq!(sim.drops(DropReason::SourceRoute), 2);
    assert_eq!(sim.drops(DropReason::IpBadHeaderLen), 2);
    assert_eq!(sim.w.flows.len(), 2);
}

#[test]
fn ipv4_4d_total_length_below_header() {
    let mut sim = Sim::new();
    for total in [0u16, 1, 19] {
        let mut f = syn4(1000);
        f[16..18].copy_from_slice(&total.to_be_bytes());
        fix_ip4(&mut f);
        sim.expect(&f, 0, drop(DropReason::IpBadLength));
    }
    // With options: total length 20 < IHL × 4 = 24.
    let mut f = syn4_with_ip_options(1000, &[148, 4, 0, 0]);
    f[16..18].copy_from_slice(&20u16.to_be_bytes());
    fix_ip4(&mut f);
    sim.expect(&f, 0, drop(DropReason::IpBadLength));
    sim.only_drops(DropReason::IpBadLength, 4);
}

#[test]
fn ipv4_4e_total_length_beyond_frame() {
    let mut sim = Sim::new();
    for extra in [1u16, 100, 0xffff - 40] {
        let mut f = syn4(1000);
        f[16..18].copy_from_slice(&(40 + extra).to_be_bytes());
        fix_ip4(&mut f);
        sim.expect(&f, 0, drop(DropReason::IpBadLength));
    }
    sim.only_drops(DropReason::IpBadLength, 3);
}

#[test]
fn ipv4_4f_bad_header_checksum() {
    let mut sim = Sim::new();
    let mut f = syn4(1000);
    f[24] ^= 0x01;
    sim.expect(&f, 0, drop(DropReason::IpBadChecksum));
    // A corrupted field with the old checksum.
    let mut f = syn4(1000);
    f[22] = 17; // TTL
    sim.expect(&f, 0, drop(DropReason::IpBadChecksum));
    sim.only_drops(DropReason::IpBadChecksum, 2);
}

#[test]
fn ipv4_4g_ttl_exhausted() {
    let mut sim = Sim::with_icmp_burst(2);
    for ttl in [1u8, 0] {
        let mut spec = TcpSpec::to_vip(c4(1), 1000, SYN);
        spec.ttl = ttl;
        let out = sim.expect(&spec.build(), 0, REPLY0);
        let ip = ipv4::Packet::new_checked(&out[14..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(
            (ip.payload()[0], ip.payload()[1]),
            (11, 0),
            "time exceeded in transit"
        );
        assert_eq!(checksum::data(ip.payload()), 0xffff);
    }
    assert_eq!(sim.events(Event::TimeExceededSent), 2);
    // Over the rate limit: dropped and counted.
    let mut spec = TcpSpec::to_vip(c4(1), 1000, SYN);
    spec.ttl = 1;
    sim.expect(&spec.build(), 0, drop(DropReason::TtlExpired));
    sim.only_drops(DropReason::TtlExpired, 1);
    assert!(sim.w.flows.is_empty());
    // The return path too.
    let mut back = TcpSpec::from_backend(0, c4(1), 1000, ACK);
    back.ttl = 1;
    sim.expect(&back.build(), 1, drop(DropReason::TtlExpired));
    // TTL 2: decremented, checksum updated incrementally.
    spec.ttl = 2;
    let out = sim.expect(&spec.build(), 0, TO_BACKENDS);
    assert_eq!(parse_out(&out).ttl, 1);
}

#[test]
fn ipv4_4h_fragments() {
    // Policy: no reassembly; fragments are dropped and counted.
    let mut sim = Sim::new();
    for (mf, offset) in [(true, 0u16), (false, 1), (true, 185), (false, 0x1fff)] {
        let mut f = syn4(1000);
        let mut p = ipv4::Packet::new_unchecked(&mut f[14..34]);
        p.set_dont_frag(false);
        p.set_more_frags(mf);
        p.set_frag_offset(offset);
        fix_ip4(&mut f);
        sim.expect(&f, 0, drop(DropReason::Fragment));
    }
    sim.only_drops(DropReason::Fragment, 4);
    assert!(sim.w.flows.is_empty());
}

#[test]
fn ipv4_4i_df_packet_never_outgrows_the_mtu() {
    // NAT rewrites in place: a full-size DF packet leaves with the same IP length and DF, so the
    // egress MTU (equal to the ingress one) is never exceeded and no frag-needed is due.
    let mut sim = Sim::new();
    let mut spec = TcpSpec::to_vip(c4(1), 1000, ACK);
    spec.payload = vec![0x11; 1500 - 40];
    let f = spec.build();
    let out = sim.expect(&f, 0, TO_BACKENDS);
    let ip = ipv4::Packet::new_checked(&out[14..]).unwrap();
    assert_eq!((ip.total_len(), ip.dont_frag()), (1500, true));
    assert_eq!(out.len(), f.len());
    parse_out(&out);
}

#[test]
fn ipv4_4j_martian_source() {
    let mut sim = Sim::new();
    let martians = [
        Ipv4Addr::new(0, 1, 2, 3),
        Ipv4Addr::new(127, 0, 0, 1),
        Ipv4Addr::new(224, 0, 0, 5),
        Ipv4Addr::new(240, 0, 0, 1),
        Ipv4Addr::BROADCAST,
        VIP4,
    ];
    // A SYN, and a data segment (the established path's candidate, which misses: no flow has
    // a martian source).
    for src in martians {
        for flags in [SYN, ACK] {
            let f = TcpSpec::to_vip(IpAddr::V4(src), 1000, flags).build();
            sim.expect(&f, 0, drop(DropReason::MartianSource));
        }
    }
    sim.only_drops(DropReason::MartianSource, 2 * martians.len() as u64);
    assert!(sim.w.flows.is_empty());
}

#[test]
fn ipv4_4k_not_tcp_to_a_tcp_vip() {
    // Policy: dropped and counted; to the gateway's own address: punted.
    let mut sim = Sim::new();
    for proto in [17u8, 47, 132, 4] {
        let mut f = syn4(1000);
        f[23] = proto;
        fix_ip4(&mut f);
        sim.expect(&f, 0, drop(DropReason::NotTcp));
    }
    sim.only_drops(DropReason::NotTcp, 4);
    let udp = ip4_frame(
        v4(c4(1)),
        Ipv4Addr::new(10, 0, 0, 1),
        17,
        64,
        &[0, 53, 0, 53, 0, 8, 0, 0],
    );
    sim.expect(&udp, 0, Verdict::Punt);
}

// ---------------------------------------------------------------------------------------------
// 4.3 IPv6
// ---------------------------------------------------------------------------------------------

#[test]
fn ipv6_6a_bad_version() {
    let mut sim = Sim::new();
    for version in [0u8, 4, 7] {
        let mut f = syn6(1000);
        f[14] = (f[14] & 0x0f) | (version << 4);
        sim.expect(&f, 0, drop(DropReason::IpBadVersion));
    }
    sim.only_drops(DropReason::IpBadVersion, 3);
}

#[test]
fn ipv6_6b_payload_length_beyond_frame_or_jumbogram() {
    let mut sim = Sim::new();
    let mut f = syn6(1000);
    f[18..20].copy_from_slice(&21u16.to_be_bytes());
    sim.expect(&f, 0, drop(DropReason::IpBadLength));
    f[18..20].copy_from_slice(&0xffffu16.to_be_bytes());
    sim.expect(&f, 0, drop(DropReason::IpBadLength));
    // Jumbogram: payload length 0 with a Hop-by-Hop header.
    let mut j = with_ext6(&syn6(1000), &[(0, pad_opts())]);
    j[18..20].fill(0);
    sim.expect(&j, 0, drop(DropReason::IpBadLength));
    sim.only_drops(DropReason::IpBadLength, 3);
    // Payload length 0 without Hop-by-Hop: an empty packet, so no TCP header.
    let mut e = syn6(1000);
    e[18..20].fill(0);
    sim.expect(&e, 0, drop(DropReason::TcpTruncated));
}

#[test]
fn ipv6_6c_hop_by_hop_not_first() {
    let mut sim = Sim::new();
    let f = with_ext6(&syn6(1000), &[(60, pad_opts()), (0, pad_opts())]);
    sim.expect(&f, 0, drop(DropReason::Ipv6ExtHeader));
    sim.only_drops(DropReason::Ipv6ExtHeader, 1);
    // First is fine: skipped, forwarded.
    let f = with_ext6(&syn6(1000), &[(0, pad_opts()), (60, pad_opts())]);
    let out = sim.expect(&f, 0, TO_BACKENDS);
    parse_out(&out);
}

#[test]
fn ipv6_6d_extension_header_chain_limits() {
    let mut sim = Sim::new();
    // Nine headers (the limit is eight).
    let nine: Vec<(u8, Vec<u8>)> = (0..9).map(|_| (60, pad_opts())).collect();
    sim.expect(
        &with_ext6(&syn6(1000), &nine),
        0,
        drop(DropReason::Ipv6ExtHeader),
    );
    // Eight are crossed.
    sim.expect(&with_ext6(&syn6(1000), &nine[..8]), 0, TO_BACKENDS);
    // More than 512 bytes of headers.
    let mut big = vec![0u8; 520];
    big[1] = 64;
    big[2] = 1;
    big[3] = 254;
    sim.expect(
        &with_ext6(&syn6(1001), &[(60, big)]),
        0,
        drop(DropReason::Ipv6ExtHeader),
    );
    // A header that runs past the packet.
    let mut f = with_ext6(&syn6(1002), &[(60, pad_opts())]);
    f[54 + 1] = 200;
    sim.expect(&f, 0, drop(DropReason::Ipv6ExtHeader));
    // Extension headers the gateway does not cross: AH, Mobility, HIP, Shim6, experimental.
    for nh in [51u8, 135, 139, 140, 253, 254] {
        let mut f = syn6(1003);
        f[20] = nh;
        sim.expect(&f, 0, drop(DropReason::Ipv6ExtHeader));
    }
    sim.only_drops(DropReason::Ipv6ExtHeader, 9);
    // A protocol number that is no extension header is an upper layer the VIP does not serve.
    let mut f = syn6(1004);
    f[20] = 200;
    sim.expect(&f, 0, drop(DropReason::NotTcp));
}

#[test]
fn ipv6_6e_routing_header_type_0() {
    let mut sim = Sim::new();
    let mut rh0 = vec![0u8; 24];
    rh0[1] = 2;
    rh0[2] = 0; // type 0
    rh0[3] = 1; // segments left
    rh0[8..24].copy_from_slice(&Ipv6Addr::new(0x2001, 0xdb8, 9, 0, 0, 0, 0, 9).octets());
    sim.expect(
        &with_ext6(&syn6(1000), &[(43, rh0.clone())]),
        0,
        drop(DropReason::SourceRoute),
    );
    sim.expect(
        &with_ext6(&syn6(1000), &[(60, pad_opts()), (43, rh0)]),
        0,
        drop(DropReason::SourceRoute),
    );
    sim.only_drops(DropReason::SourceRoute, 2);
}

#[test]
fn ipv6_6f_first_fragment_without_the_full_chain() {
    let mut sim = Sim::new();
    // First fragment (offset 0, M = 1) holding only part of the TCP header.
    let f = with_ext6(&syn6(1000), &[(44, frag_hdr(0, true))]);
    let mut cut = f[..14 + 40 + 8 + 12].to_vec();
    cut[18..20].copy_from_slice(&20u16.to_be_bytes());
    sim.expect(&cut, 0, drop(DropReason::Fragment));
    // First fragment whose chain continues in the next fragment.
    let f = with_ext6(&syn6(1000), &[(44, frag_hdr(0, true)), (60, pad_opts())]);
    let mut cut = f[..14 + 40 + 8 + 4].to_vec();
    cut[18..20].copy_from_slice(&12u16.to_be_bytes());
    sim.expect(&cut, 0, drop(DropReason::Ipv6ExtHeader));
    // A complete first fragment is dropped as a fragment too.
    sim.expect(
        &with_ext6(&syn6(1000), &[(44, frag_hdr(0, true))]),
        0,
        drop(DropReason::Fragment),
    );
    assert_eq!(sim.drops(DropReason::Fragment), 2);
    assert!(sim.w.flows.is_empty());
}

#[test]
fn ipv6_6g_other_fragments() {
    let mut sim = Sim::new();
    for (offset, more) in [(1u16, true), (100, false), (0x1fff, false)] {
        sim.expect(
            &with_ext6(&syn6(1000), &[(44, frag_hdr(offset, more))]),
            0,
            drop(DropReason::Fragment),
        );
    }
    // Two fragment headers.
    let two = with_ext6(
        &syn6(1000),
        &[(44, frag_hdr(0, false)), (44, frag_hdr(0, false))],
    );
    sim.expect(&two, 0, drop(DropReason::Ipv6ExtHeader));
    assert_eq!(sim.drops(DropReason::Fragment), 3);
}

#[test]
fn ipv6_6h_atomic_fragment_is_a_whole_packet() {
    // Policy: offset 0 and M = 0 (RFC 6946) is processed as unfragmented.
    let mut sim = Sim::new();
    let f = with_ext6(&syn6(1000), &[(44, frag_hdr(0, false))]);
    let out = sim.expect(&f, 0, TO_BACKENDS);
    let o = parse_out(&out);
    assert_eq!((o.dst_port, o.segment.len()), (BACKEND_PORT, 20));
    assert_eq!(sim.events(Event::NewFlow), 1);
    assert_eq!(sim.w.stats.dropped(), 0);
}

#[test]
fn ipv6_6i_hop_limit_exhausted() {
    let mut sim = Sim::with_icmp_burst(2);
    for hop in [1u8, 0] {
        let mut spec = TcpSpec::to_vip(c6(1), 1000, SYN);
        spec.ttl = hop;
        let out = sim.expect(&spec.build(), 0, REPLY0);
        let ip = ipv6::Packet::new_checked(&out[14..]).unwrap();
        assert_eq!(ip.next_header().0, 58);
        let msg = ip.payload();
        assert_eq!((msg[0], msg[1]), (3, 0));
        let pseudo =
            checksum::pseudo_header_v6(&ip.src_octets(), &ip.dst_octets(), 58, msg.len() as u32);
        assert_eq!(checksum::combine(&[pseudo, checksum::data(msg)]), 0xffff);
    }
    assert_eq!(sim.events(Event::TimeExceededSent), 2);
    let mut spec = TcpSpec::to_vip(c6(1), 1000, SYN);
    spec.ttl = 1;
    sim.expect(&spec.build(), 0, drop(DropReason::TtlExpired));
    sim.only_drops(DropReason::TtlExpired, 1);
    spec.ttl = 2;
    assert_eq!(parse_out(&sim.expect(&spec.build(), 0, TO_BACKENDS)).ttl, 1);
}

#[test]
fn ipv6_6j_martian_source() {
    let mut sim = Sim::new();
    let martians = [
        Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
        Ipv6Addr::new(0xff0e, 0, 0, 0, 0, 0, 0, 0x101),
        Ipv6Addr::UNSPECIFIED,
        Ipv6Addr::LOCALHOST,
        VIP6,
        // IPv4-mapped: would share the flow key of the IPv4 client 198.51.100.1.
        Ipv4Addr::new(198, 51, 100, 1).to_ipv6_mapped(),
    ];
    for src in martians {
        let f = TcpSpec::to_vip(IpAddr::V6(src), 1000, SYN).build();
        sim.expect(&f, 0, drop(DropReason::MartianSource));
    }
    // An IPv4-mapped destination would reach the IPv4 VIP.
    let mut spec = TcpSpec::to_vip(c6(1), 1000, SYN);
    spec.dst = IpAddr::V6(VIP4.to_ipv6_mapped());
    sim.expect(&spec.build(), 0, drop(DropReason::MartianSource));
    sim.only_drops(DropReason::MartianSource, martians.len() as u64 + 1);
    assert!(sim.w.flows.is_empty());
}

// ---------------------------------------------------------------------------------------------
// 4.4 TCP
// ---------------------------------------------------------------------------------------------

#[test]
fn t1_tcp_shorter_than_20_bytes() {
    let mut sim = Sim::new();
    for l4 in [0usize, 1, 8, 19] {
        let mut f = syn4(1000)[..34 + l4].to_vec();
        f[16..18].copy_from_slice(&(20 + l4 as u16).to_be_bytes());
        fix_ip4(&mut f);
        sim.expect(&f, 0, drop(DropReason::TcpTruncated));
        let mut f = syn6(1000)[..54 + l4].to_vec();
        f[18..20].copy_from_slice(&(l4 as u16).to_be_bytes());
        sim.expect(&f, 0, drop(DropReason::TcpTruncated));
    }
    sim.only_drops(DropReason::TcpTruncated, 8);
}

#[test]
fn t2_data_offset_below_five() {
    let mut sim = Sim::new();
    for doff in 0u8..5 {
        let mut f = syn4(1000);
        f[34 + 12] = doff << 4;
        fix_tcp(&mut f);
        sim.expect(&f, 0, drop(DropReason::TcpBadHeaderLen));
    }
    sim.only_drops(DropReason::TcpBadHeaderLen, 5);
}

#[test]
fn t3_data_offset_beyond_segment() {
    let mut sim = Sim::new();
    for doff in [6u8, 10, 15] {
        let mut f = syn4(1000);
        f[34 + 12] = doff << 4;
        fix_tcp(&mut f);
        sim.expect(&f, 0, drop(DropReason::TcpTruncated));
    }
    // The bytes are in the frame (padding) but past the IP length.
    let mut f = syn4(1000);
    f[34 + 12] = 6 << 4;
    f.extend_from_slice(&[1, 1, 1, 1]);
    sim.expect(&f, 0, drop(DropReason::TcpTruncated));
    sim.only_drops(DropReason::TcpTruncated, 4);
}

#[test]
fn t4_option_length_zero_or_one() {
    let mut sim = Sim::new();
    // MSS, then a timestamp option of length 1 / 0: the walk stops, the SYN is forwarded as plain.
    for silly in [[8u8, 1], [8, 0], [3, 1], [30, 0]] {
        let mut opts = vec![2, 4, 5, 0xb4];
        opts.extend_from_slice(&silly);
        opts.extend_from_slice(&[30, 4, 0x01, 0x01]); // an MP_CAPABLE after it is never seen
        sim.expect(
            &syn_with(1000 + u16::from(silly[0]) + u16::from(silly[1]), &opts),
            0,
            TO_BACKENDS,
        );
    }
    assert_eq!(sim.events(Event::TcpOptionMalformed), 4);
    assert_eq!(sim.events(Event::NewFlow), 4);
    assert_eq!(sim.w.stats.dropped(), 0);
    // Options before the bad one stand (as in Linux): an MP_JOIN is still routed by its token.
    let b = mptcp_handshake(&mut sim, c4(2), 2000, 0x77, 0x88);
    let mut join = TcpSpec::to_vip(c4(3), 3000, SYN).with_mptcp(join_syn(token_from_key(0x77)));
    join.options.extend_from_slice(&[8, 1]);
    assert_eq!(backend_of(&sim.expect(&join.build(), 0, TO_BACKENDS)), b);
    assert_eq!(sim.events(Event::JoinRouted), 1);
    assert_eq!(sim.events(Event::TcpOptionMalformed), 5);
}

#[test]
fn t5_option_runs_past_the_option_area() {
    let mut sim = Sim::new();
    // MSS claiming 8 bytes in a 4-byte area.
    sim.expect(&syn_with(1000, &[2, 8, 5, 0xb4]), 0, TO_BACKENDS);
    // A truncated MP_CAPABLE SYN/ACK form at the end: never parsed, the SYN is plain.
    let out = sim.expect(
        &syn_with(1001, &[1, 1, 1, 1, 30, 12, 0x01, 0x01]),
        0,
        TO_BACKENDS,
    );
    assert_eq!(sim.events(Event::TcpOptionMalformed), 2);
    assert!(
        !learned_after_synack(&mut sim, &out, 1001, 0x42),
        "plain flow: nothing learned"
    );
    assert_eq!(sim.events(Event::MpcUnexpected), 1);
    assert_eq!(sim.w.stats.dropped(), 0);
}

#[test]
fn t6_eol_then_junk_and_nop_padding() {
    let mut sim = Sim::new();
    // EOL, then junk that would be malformed and an MP_JOIN: the walk stops at EOL.
    let mut opts = vec![2, 4, 5, 0xb4, 0, 8, 1];
    opts.extend_from_slice(&[30, 12, 0x10, 1, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 1]);
    sim.expect(&syn_with(1000, &opts), 0, TO_BACKENDS);
    assert_eq!(sim.events(Event::TcpOptionMalformed), 0);
    assert_eq!(
        sim.events(Event::NewFlow),
        1,
        "plain SYN: the MP_JOIN after EOL is not seen"
    );
    // NOP-only padding to 40 bytes.
    sim.expect(&syn_with(1001, &[1; 40]), 0, TO_BACKENDS);
    assert_eq!(sim.events(Event::NewFlow), 2);
    assert_eq!(sim.w.stats.dropped(), 0);
}

#[test]
fn t7_port_zero() {
    let mut sim = Sim::new();
    sim.expect(&syn4(0), 0, drop(DropReason::PortZero));
    let mut spec = TcpSpec::to_vip(c4(1), 1000, SYN);
    spec.dst_port = 0;
    sim.expect(&spec.build(), 0, drop(DropReason::PortZero));
    sim.expect(
        &TcpSpec::from_backend(0, c4(1), 0, ACK).build(),
        1,
        drop(DropReason::PortZero),
    );
    sim.expect(
        &TcpSpec::to_vip(c6(1), 0, SYN).build(),
        0,
        drop(DropReason::PortZero),
    );
    // Data segments (the established path's candidates, which miss: no flow has a zero port).
    sim.expect(
        &TcpSpec::to_vip(c4(1), 0, ACK).build(),
        0,
        drop(DropReason::PortZero),
    );
    let mut spec = TcpSpec::to_vip(c4(1), 1000, ACK);
    spec.dst_port = 0;
    sim.expect(&spec.build(), 0, drop(DropReason::PortZero));
    sim.only_drops(DropReason::PortZero, 6);
    assert!(sim.w.flows.is_empty());
}

#[test]
fn t8_impossible_flag_combinations() {
    let mut sim = Sim::new();
    let bad = [
        SYN | FIN,
        SYN | RST,
        SYN | FIN | RST | ACK,
        0,
        FIN | URG | PSH,
        0xc0,
    ];
    for (i, flags) in bad.into_iter().enumerate() {
        sim.expect(
            &TcpSpec::to_vip(c4(1), 1000 + i as u16, flags).build(),
            0,
            drop(DropReason::TcpBadFlags),
        );
    }
    assert!(sim.w.flows.is_empty(), "never creates state");
    // On an established flow: dropped, the flow untouched.
    let b = plain_handshake(&mut sim, c4(2), 2000);
    sim.expect(
        &TcpSpec::to_vip(c4(2), 2000, SYN | FIN).build(),
        0,
        drop(DropReason::TcpBadFlags),
    );
    sim.expect(
        &TcpSpec::from_backend(b, c4(2), 2000, SYN | RST).build(),
        1,
        drop(DropReason::TcpBadFlags),
    );
    assert_eq!(sim.flow_states(), vec![FlowState::Established]);
    sim.only_drops(DropReason::TcpBadFlags, bad.len() as u64 + 2);
}

#[test]
fn t9_syn_with_payload() {
    let mut sim = Sim::new();
    let mut spec = TcpSpec::to_vip(c4(1), 1000, SYN);
    spec.options = vec![34, 10, 1, 2, 3, 4, 5, 6, 7, 8]; // TFO cookie
    spec.payload = b"GET / HTTP/1.1\r\n\r\n".to_vec();
    let out = sim.expect(&spec.build(), 0, TO_BACKENDS);
    assert!(parse_out(&out).segment.ends_with(b"\r\n\r\n"));
    assert_eq!(sim.events(Event::NewFlow), 1);
    assert_eq!(sim.flow_states(), vec![FlowState::SynSent]);
}

#[test]
fn t10_non_syn_without_state() {
    // Policy: routed by Maglev as its SYN was, adopted, counted.
    let mut fresh = Sim::new();
    let mut sim = Sim::new();
    for p in 0..20u16 {
        let by_syn = backend_of(&fresh.expect(&syn4(1000 + p), 0, TO_BACKENDS));
        let out = sim.expect(
            &TcpSpec::to_vip(c4(1), 1000 + p, ACK).build(),
            0,
            TO_BACKENDS,
        );
        assert_eq!(backend_of(&out), by_syn);
    }
    assert_eq!(sim.events(Event::NonSynMiss), 20);
    assert_eq!(sim.w.flows.len(), 20);
    assert!(sim
        .w
        .flows
        .iter()
        .all(|(_, e)| e.state() == FlowState::Established));
    // A RST without state is forwarded but not adopted.
    sim.expect(
        &TcpSpec::to_vip(c4(1), 5000, RST | ACK).build(),
        0,
        TO_BACKENDS,
    );
    assert_eq!(sim.events(Event::NonSynMiss), 21);
    assert_eq!(sim.w.flows.len(), 20);
}

/// The demo pool with backend `b` draining (no new connections through Maglev).
fn draining(b: u16) -> PoolSpec {
    let mut spec = demo_spec(3);
    spec.version = 2;
    spec.backends[b as usize].as_mut().unwrap().state = BackendState::Draining;
    spec
}

#[test]
fn t11_retransmitted_syn_keeps_its_backend() {
    let mut sim = Sim::new();
    // Before the SYN/ACK and after the handshake, with Maglev now pointing elsewhere.
    let b = backend_of(&sim.expect(&syn4(1000), 0, TO_BACKENDS));
    sim.set_pool(draining(b));
    assert_eq!(backend_of(&sim.expect(&syn4(1000), 0, TO_BACKENDS)), b);
    sim.expect(
        &TcpSpec::from_backend(b, c4(1), 1000, SYNACK).build(),
        1,
        TO_CLIENTS,
    );
    sim.expect(&TcpSpec::to_vip(c4(1), 1000, ACK).build(), 0, TO_BACKENDS);
    assert_eq!(backend_of(&sim.expect(&syn4(1000), 0, TO_BACKENDS)), b);
    assert_eq!(sim.events(Event::SynRetransmit), 2);
    assert_eq!(sim.events(Event::NewFlow), 1);
    assert_eq!(sim.flow_states(), vec![FlowState::Established]);
}

#[test]
fn t12_new_syn_on_a_closing_5_tuple_is_rebalanced() {
    let mut sim = Sim::new();
    let b = plain_handshake(&mut sim, c4(1), 1000);
    sim.expect(
        &TcpSpec::to_vip(c4(1), 1000, FIN | ACK).build(),
        0,
        TO_BACKENDS,
    );
    assert_eq!(sim.flow_states(), vec![FlowState::Closing]);
    sim.set_pool(draining(b));
    let nb = backend_of(&sim.expect(&syn4(1000), 0, TO_BACKENDS));
    assert_ne!(nb, b, "re-selected by Maglev");
    assert_eq!(sim.events(Event::SynReuse), 1);
    assert_eq!(sim.events(Event::NewFlow), 2);
    assert_eq!(sim.flow_states(), vec![FlowState::SynSent]);
    // After a RST (closed) as well.
    sim.expect(&TcpSpec::to_vip(c4(1), 1000, RST).build(), 0, TO_BACKENDS);
    sim.expect(&syn4(1000), 0, TO_BACKENDS);
    assert_eq!(sim.events(Event::SynReuse), 2);
}

#[test]
fn t13_rst_keeps_the_entry_on_a_short_timer() {
    let mut sim = Sim::new();
    let b = plain_handshake(&mut sim, c4(1), 1000);
    sim.expect(
        &TcpSpec::to_vip(c4(1), 1000, RST | ACK).build(),
        0,
        TO_BACKENDS,
    );
    assert_eq!(sim.flow_states(), vec![FlowState::Closed]);
    // Stragglers still reach the same backend (no re-hash after a spoofed RST).
    assert_eq!(
        backend_of(&sim.expect(&TcpSpec::to_vip(c4(1), 1000, ACK).build(), 0, TO_BACKENDS)),
        b
    );
    assert_eq!(sim.events(Event::NonSynMiss), 0);
    let closing = sim.w.flows.timeouts().closing_ms;
    let established = sim.w.flows.timeouts().established_ms;
    assert!(closing < established);
    sim.now = sim.now + core::time::Duration::from_millis(u64::from(closing) / 2);
    assert_eq!(sim.w.housekeeping(sim.now, &sim.shared, usize::MAX), 0);
    sim.now = sim.now + core::time::Duration::from_millis(u64::from(closing) + 1000);
    assert_eq!(sim.w.housekeeping(sim.now, &sim.shared, usize::MAX), 1);
    // A backend RST does the same.
    let b = plain_handshake(&mut sim, c4(2), 2000);
    sim.expect(
        &TcpSpec::from_backend(b, c4(2), 2000, RST).build(),
        1,
        TO_CLIENTS,
    );
    assert_eq!(sim.flow_states(), vec![FlowState::Closed]);
}

#[test]
fn t14_bad_tcp_checksum_is_forwarded_and_never_learned_from() {
    let mut sim = Sim::new();
    // Data: forwarded; the error survives the incremental update, so the backend drops it.
    let b = plain_handshake(&mut sim, c4(1), 1000);
    let mut data = TcpSpec::to_vip(c4(1), 1000, ACK | PSH);
    data.payload = b"hello".to_vec();
    let mut f = data.build();
    let n = f.len();
    f[n - 1] ^= 0x40; // a bit flip in the payload
    let out = sim.expect(&f, 0, TO_BACKENDS);
    let (o, ok) = parse_out_unchecked_tcp(&out);
    assert!(!ok, "still fails at the backend");
    assert_eq!(o.dst, IpAddr::V4(backend_v4(b)));
    // The backend's MP_CAPABLE SYN/ACK with a corrupted key: no token; the retransmission teaches.
    let key = 0x5151;
    let s = TcpSpec::to_vip(c4(2), 2000, SYN)
        .with_mptcp(mpc_syn())
        .build();
    let b = backend_of(&sim.expect(&s, 0, TO_BACKENDS));
    let good_sa = TcpSpec::from_backend(b, c4(2), 2000, SYNACK)
        .with_mptcp(mpc_synack(key))
        .build();
    let mut bad_sa = good_sa.clone();
    bad_sa[34 + 20 + 11] ^= 0x01; // last byte of the server key
    sim.expect(&bad_sa, 1, TO_CLIENTS);
    assert_eq!(sim.events(Event::BadL4ChecksumNotLearned), 1);
    assert_eq!(sim.shared.tokens.len(), 0);
    sim.expect(&good_sa, 1, TO_CLIENTS);
    assert_eq!(sim.events(Event::TokenLearned), 1);
    // The client's third ACK with a corrupted echoed key neither confirms nor drops the token.
    let good_ack = TcpSpec::to_vip(c4(2), 2000, ACK)
        .with_mptcp(mpc_ack(9, key))
        .build();
    let mut bad_ack = good_ack.clone();
    bad_ack[34 + 20 + 19] ^= 0x01; // last byte of the receiver (server) key
    sim.expect(&bad_ack, 0, TO_BACKENDS);
    assert_eq!(sim.events(Event::BadL4ChecksumNotLearned), 2);
    assert_eq!(sim.events(Event::MpcKeyMismatch), 0);
    assert_eq!(sim.shared.tokens.len(), 1, "token kept");
    sim.expect(&good_ack, 0, TO_BACKENDS);
    assert_eq!(sim.events(Event::TokenConfirmed), 1);
    assert_eq!(sim.w.stats.dropped(), 0);
}

#[test]
fn t15_zero_length_payload() {
    let mut sim = Sim::new();
    let b = plain_handshake(&mut sim, c4(1), 1000);
    let mut keepalive = TcpSpec::to_vip(c4(1), 1000, ACK);
    keepalive.seq = 999;
    for f in [
        TcpSpec::to_vip(c4(1), 1000, ACK).build(),
        keepalive.build(),
        TcpSpec::to_vip(c4(1), 1000, FIN | ACK).build(),
    ] {
        let out = sim.expect(&f, 0, TO_BACKENDS);
        let o = parse_out(&out);
        assert_eq!((o.dst, o.segment.len()), (IpAddr::V4(backend_v4(b)), 20));
    }
    sim.expect(
        &TcpSpec::from_backend(b, c4(1), 1000, FIN | ACK).build(),
        1,
        TO_CLIENTS,
    );
    assert_eq!(sim.flow_states(), vec![FlowState::Closed]);
}

#[test]
fn t16_incremental_checksums_equal_a_full_recompute() {
    // The 16-bit word unchanged: backends listening on the VIP port, so the port is not rewritten.
    let mut spec = demo_spec(3);
    for b in spec.backends.iter_mut().flatten() {
        b.port = VIP_PORT;
    }
    let mut same_port = Sim::with_pool(PoolSnapshot::build(spec).unwrap());
    let out = same_port.expect(&syn4(1000), 0, TO_BACKENDS);
    assert_eq!(parse_out(&out).dst_port, VIP_PORT);
    // Random headers: the rewritten TCP and IPv4 checksums equal a full recompute, both ways.
    let mut sim = Sim::new();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..500u32 {
        let r = next();
        let client = if i % 2 == 0 {
            IpAddr::V4(Ipv4Addr::from((r as u32 & 0x00ff_ffff) | 0x0b00_0000))
        } else {
            IpAddr::V6(Ipv6Addr::from(u128::from(r) | (0x2001_0db8u128 << 96)))
        };
        let port = (r >> 40) as u16 | 1;
        let mut s = TcpSpec::to_vip(client, port, ACK);
        s.seq = (r >> 8) as u32;
        s.ack = r as u32;
        s.payload = (0..(r % 7) as u8).collect();
        let out = sim.expect(&s.build(), 0, TO_BACKENDS);
        assert_recomputed(&out);
        let b = backend_of(&out);
        let out = sim.expect(
            &TcpSpec::from_backend(b, client, port, ACK).build(),
            1,
            TO_CLIENTS,
        );
        assert_recomputed(&out);
    }
    // Checksum corner cases: a segment whose checksum is 0x0000, the same sent as 0xffff (the
    // other zero), and one whose checksum becomes 0x0000 after NAT.
    let mut s = TcpSpec::to_vip(c4(9), 9000, ACK);
    s.seq = 0;
    let c = u16::from_be_bytes(s.build()[50..52].try_into().unwrap());
    s.seq = u32::from(c);
    let zero = s.build();
    assert_eq!(&zero[50..52], &[0, 0]);
    let out = sim.expect(&zero, 0, TO_BACKENDS);
    assert_recomputed(&out);
    let mut ffff = zero.clone();
    ffff[50..52].copy_from_slice(&[0xff, 0xff]);
    parse_out(&sim.expect(&ffff, 0, TO_BACKENDS));
    let mut probe = Sim::new();
    let mut s = TcpSpec::to_vip(c4(9), 9001, ACK);
    s.seq = 0;
    let out = probe.expect(&s.build(), 0, TO_BACKENDS);
    s.seq = u32::from(u16::from_be_bytes(out[50..52].try_into().unwrap()));
    let out = sim.expect(&s.build(), 0, TO_BACKENDS);
    assert_recomputed(&out);
    assert_eq!(&out[50..52], &[0, 0]);
}

/// The output's TCP (and IPv4 header) checksum is the one a full recompute gives.
fn assert_recomputed(out: &[u8]) {
    let mut again = out.to_vec();
    if again[12..14] == [0x08, 0x00] {
        fix_ip4(&mut again);
    }
    fix_tcp(&mut again);
    assert_eq!(out, &again[..], "incremental == full recompute");
}

// ---------------------------------------------------------------------------------------------
// 4.5 MPTCP
// ---------------------------------------------------------------------------------------------

/// Completes the handshake of `c4(1):port` with a backend SYN/ACK carrying MP_CAPABLE and
/// returns whether a token was learned (i.e. whether the client's SYN counted as MPTCP).
fn learned_after_synack(sim: &mut Sim, syn_out: &[u8], port: u16, key: u64) -> bool {
    let before = sim.shared.tokens.len();
    let b = backend_of(syn_out);
    let sa = TcpSpec::from_backend(b, c4(1), port, SYNACK)
        .with_mptcp(mpc_synack(key))
        .build();
    sim.expect(&sa, 1, TO_CLIENTS);
    sim.shared.tokens.len() > before
}

#[test]
fn m1_mptcp_option_too_short() {
    let mut sim = Sim::new();
    let out = sim.expect(&syn_with(1000, &[30, 2, 1, 1]), 0, TO_BACKENDS);
    assert_eq!(sim.events(Event::MptcpOptionIgnored), 1);
    assert!(!learned_after_synack(&mut sim, &out, 1000, 0x11));
    // Ignored, and the walk goes on: a valid MP_CAPABLE after it counts.
    let out = sim.expect(&syn_with(1001, &[30, 2, 30, 4, 0x01, 0x01]), 0, TO_BACKENDS);
    assert_eq!(sim.events(Event::MptcpOptionIgnored), 2);
    assert!(learned_after_synack(&mut sim, &out, 1001, 0x12));
    assert_eq!(sim.w.stats.dropped(), 0);
}

#[test]
fn m2_unknown_subtype() {
    let mut sim = Sim::new();
    let mut opts = Vec::new();
    for st in [9u8, 12, 14, 15] {
        opts.extend_from_slice(&[30, 4, st << 4, 0]);
    }
    opts.extend_from_slice(&[30, 4, 0x01, 0x01]);
    let out = sim.expect(&syn_with(1000, &opts), 0, TO_BACKENDS);
    assert_eq!(
        sim.events(Event::MptcpOptionIgnored),
        0,
        "unknown subtypes are skipped silently"
    );
    assert!(
        learned_after_synack(&mut sim, &out, 1000, 0x21),
        "walk went on to MP_CAPABLE"
    );
}

#[test]
fn m3_mp_capable_length_wrong_for_the_segment() {
    let mut sim = Sim::new();
    // SYN with the SYN/ACK form (12) or the ACK form (20): plain.
    for (i, len) in [12usize, 20].into_iter().enumerate() {
        let mut o = vec![0u8; len];
        o[..4].copy_from_slice(&[30, len as u8, 0x01, 0x01]);
        let port = 1000 + i as u16;
        let out = sim.expect(&syn_with(port, &o), 0, TO_BACKENDS);
        assert!(!learned_after_synack(&mut sim, &out, port, 0x31 + i as u64));
    }
    assert_eq!(sim.events(Event::MptcpOptionIgnored), 2);
    // SYN/ACK with the SYN form: the server's key is not there; nothing learned.
    let s = TcpSpec::to_vip(c4(1), 1002, SYN)
        .with_mptcp(mpc_syn())
        .build();
    let b = backend_of(&sim.expect(&s, 0, TO_BACKENDS));
    let sa = TcpSpec::from_backend(b, c4(1), 1002, SYNACK)
        .with_mptcp(mpc_syn())
        .build();
    sim.expect(&sa, 1, TO_CLIENTS);
    assert_eq!(sim.events(Event::MptcpOptionIgnored), 3);
    assert_eq!(sim.shared.tokens.len(), 0);
    // Third ACK with the SYN/ACK form, or the data form (22) without data: no valid
    // MP_CAPABLE, so the connection fell back and its token goes.
    for (i, bad) in [mpc_synack(0x99), data_form(0x44, 0x99)]
        .into_iter()
        .enumerate()
    {
        let port = 1003 + i as u16;
        let key = 0x99;
        let s = TcpSpec::to_vip(c4(1), port, SYN)
            .with_mptcp(mpc_syn())
            .build();
        let b = backend_of(&sim.expect(&s, 0, TO_BACKENDS));
        let sa = TcpSpec::from_backend(b, c4(1), port, SYNACK)
            .with_mptcp(mpc_synack(key + i as u64))
            .build();
        sim.expect(&sa, 1, TO_CLIENTS);
        assert_eq!(sim.shared.tokens.len(), 1);
        let ack = TcpSpec::to_vip(c4(1), port, ACK).with_mptcp(bad).build();
        sim.expect(&ack, 0, TO_BACKENDS);
        assert_eq!(sim.shared.tokens.len(), 0);
    }
    assert_eq!(sim.events(Event::MpcFallback), 2);
    assert_eq!(sim.events(Event::MptcpOptionIgnored), 5);
    assert_eq!(sim.w.stats.dropped(), 0);
}

/// MP_CAPABLE in its first-data form (22 bytes).
fn data_form(client_key: u64, server_key: u64) -> MptcpOpt {
    MptcpOpt::Capable(MpCapable {
        version: 1,
        flags: MpcFlags::HMAC_SHA256,
        sender_key: Some(client_key),
        receiver_key: Some(server_key),
        data_len: Some(10),
        checksum: None,
    })
}

#[test]
fn m4_mp_capable_version_0() {
    let mut sim = Sim::new();
    // RFC 6824 SYN: version 0, with the client's key (12 bytes).
    let v0 = [30, 12, 0x00, 0x81, 1, 2, 3, 4, 5, 6, 7, 8];
    let out = sim.expect(&syn_with(1000, &v0), 0, TO_BACKENDS);
    assert_eq!(sim.events(Event::MpcVersion0), 1);
    assert!(!learned_after_synack(&mut sim, &out, 1000, 0x41));
    // Version 0 in the v1 SYN length too.
    let out = sim.expect(&syn_with(1001, &[30, 4, 0x00, 0x01]), 0, TO_BACKENDS);
    assert_eq!(sim.events(Event::MpcVersion0), 2);
    assert!(!learned_after_synack(&mut sim, &out, 1001, 0x42));
}

#[test]
fn m5_mp_capable_version_above_1() {
    let mut sim = Sim::new();
    // On a SYN: a v1 request (the backend answers v1).
    let out = sim.expect(&syn_with(1000, &[30, 4, 0x02, 0x01]), 0, TO_BACKENDS);
    assert!(learned_after_synack(&mut sim, &out, 1000, 0x51));
    let out = sim.expect(&syn_with(1001, &[30, 4, 0x0f, 0x01]), 0, TO_BACKENDS);
    assert!(learned_after_synack(&mut sim, &out, 1001, 0x52));
    // Elsewhere: plain (a SYN/ACK with version 2 teaches nothing).
    let s = TcpSpec::to_vip(c4(1), 1002, SYN)
        .with_mptcp(mpc_syn())
        .build();
    let b = backend_of(&sim.expect(&s, 0, TO_BACKENDS));
    let mut sa = TcpSpec::from_backend(b, c4(1), 1002, SYNACK);
    sa.options = vec![30, 12, 0x02, 0x01, 0, 0, 0, 0, 0, 0, 0x53, 0x53];
    sim.expect(&sa.build(), 1, TO_CLIENTS);
    assert_eq!(sim.shared.tokens.len(), 2);
    assert_eq!(sim.events(Event::MptcpOptionIgnored), 1);
}

#[test]
fn m6_mp_capable_bad_flags() {
    let mut sim = Sim::new();
    // H clear; B set; another crypto bit set.
    for (i, flags) in [0x00u8, 0x80, 0x41, 0x03].into_iter().enumerate() {
        let port = 1000 + i as u16;
        let out = sim.expect(&syn_with(port, &[30, 4, 0x01, flags]), 0, TO_BACKENDS);
        assert!(!learned_after_synack(&mut sim, &out, port, 0x61 + i as u64));
    }
    assert_eq!(sim.events(Event::MptcpOptionIgnored), 4);
    assert_eq!(sim.events(Event::NewFlow), 4);
}

#[test]
fn m7_mp_capable_on_a_flow_whose_syn_had_none() {
    let mut sim = Sim::new();
    let b = backend_of(&sim.expect(&syn4(1000), 0, TO_BACKENDS));
    // The backend's SYN/ACK carries a key: not learned, counted.
    let sa = TcpSpec::from_backend(b, c4(1), 1000, SYNACK)
        .with_mptcp(mpc_synack(0x71))
        .build();
    sim.expect(&sa, 1, TO_CLIENTS);
    assert_eq!(sim.events(Event::MpcUnexpected), 1);
    // The client's third ACK carries keys: not learned, counted.
    let ack = TcpSpec::to_vip(c4(1), 1000, ACK)
        .with_mptcp(mpc_ack(1, 0x71))
        .build();
    sim.expect(&ack, 0, TO_BACKENDS);
    assert_eq!(sim.events(Event::MpcUnexpected), 2);
    assert_eq!(sim.shared.tokens.len(), 0);
    assert_eq!(sim.events(Event::TokenLearned), 0);
    // Without a SYN/ACK seen (it went another way): the same on the client's ACK.
    sim.expect(&syn4(1001), 0, TO_BACKENDS);
    let ack = TcpSpec::to_vip(c4(1), 1001, ACK)
        .with_mptcp(mpc_ack(1, 0x72))
        .build();
    sim.expect(&ack, 0, TO_BACKENDS);
    assert_eq!(sim.events(Event::MpcUnexpected), 3);
    assert_eq!(sim.shared.tokens.len(), 0);
    assert_eq!(sim.w.stats.dropped(), 0);
}

#[test]
fn m8_mp_capable_and_mp_join_in_one_syn() {
    let mut sim = Sim::new();
    let owner = mptcp_handshake(&mut sim, c4(2), 2000, 0x81, 0x82);
    let token = token_from_key(0x81);
    let mut routed_elsewhere = false;
    for p in 0..8u16 {
        let s = TcpSpec::to_vip(c4(1), 1000 + p, SYN)
            .with_mptcp(mpc_syn())
            .with_mptcp(join_syn(token))
            .build();
        let out = sim.expect(&s, 0, TO_BACKENDS);
        routed_elsewhere |= backend_of(&out) != owner;
    }
    assert!(routed_elsewhere, "balanced by Maglev, not by the token");
    assert_eq!(sim.events(Event::MptcpConflict), 8);
    assert_eq!(sim.events(Event::JoinRouted), 0);
    assert_eq!(sim.events(Event::NewFlow), 9);
    // And plain: no token learned from its SYN/ACK.
    let out = sim.expect(&TcpSpec::to_vip(c4(1), 1000, ACK).build(), 0, TO_BACKENDS);
    assert!(!learned_after_synack(&mut sim, &out, 1000, 0x83));
}

#[test]
fn m9_conflicting_duplicate_options() {
    let mut sim = Sim::new();
    mptcp_handshake(&mut sim, c4(2), 2000, 0x91, 0x92);
    let token = token_from_key(0x91);
    // Two MP_JOINs, one with a known token: plain SYN.
    let s = TcpSpec::to_vip(c4(1), 1000, SYN)
        .with_mptcp(join_syn(token))
        .with_mptcp(join_syn(token ^ 1))
        .build();
    sim.expect(&s, 0, TO_BACKENDS);
    assert_eq!(sim.events(Event::MptcpConflict), 1);
    assert_eq!(sim.events(Event::JoinRouted), 0);
    // Two identical MP_JOINs are one.
    let s = TcpSpec::to_vip(c4(1), 1001, SYN)
        .with_mptcp(join_syn(token))
        .with_mptcp(join_syn(token))
        .build();
    sim.expect(&s, 0, TO_BACKENDS);
    assert_eq!(sim.events(Event::JoinRouted), 1);
    // Two different MP_CAPABLE keys in a SYN/ACK: nothing learned.
    let s = TcpSpec::to_vip(c4(1), 1002, SYN)
        .with_mptcp(mpc_syn())
        .build();
    let b = backend_of(&sim.expect(&s, 0, TO_BACKENDS));
    let sa = TcpSpec::from_backend(b, c4(1), 1002, SYNACK)
        .with_mptcp(mpc_synack(0x93))
        .with_mptcp(mpc_synack(0x94))
        .build();
    sim.expect(&sa, 1, TO_CLIENTS);
    assert_eq!(sim.events(Event::MptcpConflict), 2);
    assert_eq!(
        sim.shared.tokens.len(),
        1,
        "only the first connection's token"
    );
}

#[test]
fn m10_mp_join_syn_wrong_length() {
    let mut sim = Sim::new();
    mptcp_handshake(&mut sim, c4(2), 2000, 0xa1, 0xa2);
    let token = token_from_key(0xa1).to_be_bytes();
    for (i, len) in [11usize, 16, 24].into_iter().enumerate() {
        let mut o = vec![0u8; len];
        o[..4].copy_from_slice(&[30, len as u8, 0x10, 1]);
        o[4..8].copy_from_slice(&token);
        sim.expect(&syn_with(1000 + i as u16, &o), 0, TO_BACKENDS);
    }
    assert_eq!(sim.events(Event::MptcpOptionIgnored), 3);
    assert_eq!(sim.events(Event::JoinRouted), 0);
    assert_eq!(sim.events(Event::NewFlow), 4, "plain SYNs through Maglev");
}

#[test]
fn m11_unknown_join_token() {
    // Deliberate: dropped and counted, no state, no RST generated.
    let mut sim = Sim::new();
    let j = TcpSpec::to_vip(c4(1), 1000, SYN)
        .with_mptcp(join_syn(0xdead_beef))
        .build();
    sim.expect(&j, 0, drop(DropReason::JoinNoToken));
    let j6 = TcpSpec::to_vip(c6(1), 1000, SYN)
        .with_mptcp(join_syn(0xdead_beef))
        .build();
    sim.expect(&j6, 0, drop(DropReason::JoinNoToken));
    sim.only_drops(DropReason::JoinNoToken, 2);
    assert!(sim.w.flows.is_empty());
    assert_eq!(sim.w.stats.replied, 0);
}

#[test]
fn m12_ambiguous_join_token() {
    let mut sim = Sim::new();
    let token = 0x7357_966a;
    for (b, key) in [(0u16, 0xc66fu64), (1, 0xe658)] {
        let conn =
            trapeze_core::flow::FlowKey::new(c4(b as u8 + 50), 4000, IpAddr::V4(VIP4), VIP_PORT, 6);
        let _ = sim.shared.tokens.learn(
            token,
            Owner {
                backend: BackendId(b),
                conn,
                server_key: key,
                client_key: None,
                learned_at: sim.now,
                last_seen: sim.now,
                subflows: 1,
            },
        );
    }
    assert_eq!(sim.shared.tokens.owners(token).len(), 2);
    let j = TcpSpec::to_vip(c4(1), 1000, SYN)
        .with_mptcp(join_syn(token))
        .build();
    sim.expect(&j, 0, drop(DropReason::JoinTokenAmbiguous));
    sim.only_drops(DropReason::JoinTokenAmbiguous, 1);
    assert!(sim.w.flows.is_empty());
}

#[test]
fn m13_join_to_a_draining_owner() {
    let mut sim = Sim::new();
    let b = mptcp_handshake(&mut sim, c4(2), 2000, 0xd1, 0xd2);
    sim.set_pool(draining(b));
    let j = TcpSpec::to_vip(c4(1), 1000, SYN)
        .with_mptcp(join_syn(token_from_key(0xd1)))
        .build();
    assert_eq!(backend_of(&sim.expect(&j, 0, TO_BACKENDS)), b);
    assert_eq!(sim.events(Event::JoinRouted), 1);
}

#[test]
fn m14_join_to_a_dead_or_removed_owner() {
    let mut sim = Sim::new();
    let b = mptcp_handshake(&mut sim, c4(2), 2000, 0xe1, 0xe2);
    let j = TcpSpec::to_vip(c4(1), 1000, SYN)
        .with_mptcp(join_syn(token_from_key(0xe1)))
        .build();
    let mut down = demo_spec(3);
    down.backends[b as usize].as_mut().unwrap().state = BackendState::Down;
    sim.set_pool(down);
    sim.expect(&j, 0, drop(DropReason::JoinOwnerDown));
    let mut removed = demo_spec(3);
    removed.backends[b as usize] = None;
    for v in removed.vips.iter_mut().flatten() {
        v.backends.retain(|&x| x != BackendId(b));
    }
    sim.set_pool(removed);
    sim.expect(&j, 0, drop(DropReason::JoinOwnerDown));
    sim.only_drops(DropReason::JoinOwnerDown, 2);
    assert_eq!(sim.w.flows.len(), 1, "only the first subflow");
}

#[test]
fn m15_mp_join_synack_and_ack_wrong_length() {
    let mut sim = Sim::new();
    let b = mptcp_handshake(&mut sim, c4(2), 2000, 0xf1, 0xf2);
    let j = TcpSpec::to_vip(c4(1), 1000, SYN)
        .with_mptcp(join_syn(token_from_key(0xf1)))
        .build();
    sim.expect(&j, 0, TO_BACKENDS);
    // SYN/ACK with a 12-byte MP_JOIN (should be 16), ACK with a 12-byte one (should be 24).
    let mut sa = TcpSpec::from_backend(b, c4(1), 1000, SYNACK);
    sa.options = vec![30, 12, 0x10, 1, 0, 0, 0, 1, 0, 0, 0, 2];
    let out = sim.expect(&sa.build(), 1, TO_CLIENTS);
    assert_eq!(parse_out(&out).src, IpAddr::V4(VIP4));
    let mut ack = TcpSpec::to_vip(c4(1), 1000, ACK);
    ack.options = vec![30, 12, 0x10, 0, 0, 0, 0, 1, 0, 0, 0, 2];
    assert_eq!(backend_of(&sim.expect(&ack.build(), 0, TO_BACKENDS)), b);
    assert_eq!(sim.shared.tokens.len(), 1);
    assert_eq!(sim.events(Event::TokenLearned), 1);
    assert_eq!(sim.w.stats.dropped(), 0);
}

#[test]
fn m16_dss_length_inconsistent_with_flags() {
    let mut sim = Sim::new();
    let b = mptcp_handshake(&mut sim, c4(1), 1000, 0x161, 0x162);
    let events: Vec<u64> = Event::ALL.iter().map(|&e| sim.events(e)).collect();
    // Flags say data ACK (4 bytes) + mapping; the length says 5 / 40.
    for opt in [vec![30u8, 5, 0x20, 0x05, 0], {
        let mut o = vec![0u8; 40];
        o[..4].copy_from_slice(&[30, 40, 0x20, 0x0f]);
        o
    }] {
        let mut d = TcpSpec::to_vip(c4(1), 1000, ACK | PSH);
        d.options = opt;
        d.payload = vec![7; 10];
        assert_eq!(backend_of(&sim.expect(&d.build(), 0, TO_BACKENDS)), b);
        let mut back = TcpSpec::from_backend(b, c4(1), 1000, ACK);
        back.options = vec![30, 7, 0x20, 0x01, 0, 0, 0];
        sim.expect(&back.build(), 1, TO_CLIENTS);
    }
    let after: Vec<u64> = Event::ALL.iter().map(|&e| sim.events(e)).collect();
    assert_eq!(events, after, "the established path does not read DSS");
}

#[test]
fn m17_add_addr_forwarded_unchanged() {
    let mut sim = Sim::new();
    let b = mptcp_handshake(&mut sim, c4(1), 1000, 0x171, 0x172);
    let mut hmac_form = vec![30, 16, 0x30, 5];
    hmac_form.extend_from_slice(&VIP4.octets());
    hmac_form.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    let mut echo = vec![30, 8, 0x31, 5];
    echo.extend_from_slice(&backend_v4(b).octets());
    let mut bad_len = hmac_form.clone();
    bad_len[1] = 15;
    bad_len.truncate(15);
    let mut v6_form = vec![30, 28, 0x30, 6];
    v6_form.extend_from_slice(&VIP6.octets());
    v6_form.extend_from_slice(&[9; 8]);
    for opt in [hmac_form, echo, bad_len, v6_form] {
        let mut c = TcpSpec::to_vip(c4(1), 1000, ACK);
        c.options = opt.clone();
        let out = sim.expect(&c.build(), 0, TO_BACKENDS);
        assert_eq!(
            &parse_out(&out).segment[20..20 + opt.len()],
            &opt[..],
            "option bytes untouched"
        );
        let mut s = TcpSpec::from_backend(b, c4(1), 1000, ACK);
        s.options = opt.clone();
        let out = sim.expect(&s.build(), 1, TO_CLIENTS);
        assert_eq!(&parse_out(&out).segment[20..20 + opt.len()], &opt[..]);
    }
    assert_eq!(sim.w.stats.dropped(), 0);
}

#[test]
fn m18_other_options_with_wrong_lengths() {
    let mut sim = Sim::new();
    let b = mptcp_handshake(&mut sim, c4(1), 1000, 0x181, 0x182);
    let options: [&[u8]; 5] = [
        &[30, 3, 0x40],                                      // REMOVE_ADDR without an id
        &[30, 4, 0x50, 0],                                   // MP_PRIO of 4
        &[30, 11, 0x60, 0, 0, 0, 0, 0, 0, 0, 0],             // MP_FAIL of 11
        &[30, 13, 0x70, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x81], // MP_FASTCLOSE of 13
        &[30, 4, 0x80, 1],                                   // MP_TCPRST without RST
    ];
    for opt in options {
        let mut c = TcpSpec::to_vip(c4(1), 1000, ACK);
        c.options = opt.to_vec();
        assert_eq!(backend_of(&sim.expect(&c.build(), 0, TO_BACKENDS)), b);
    }
    // A RST with a short MP_FASTCLOSE (the right key, 11 bytes) and a long MP_TCPRST.
    let mut fc = vec![30, 11, 0x70, 0];
    fc.extend_from_slice(&0x181u64.to_be_bytes()[..7]);
    fc.extend_from_slice(&[30, 5, 0x80, 1, 0]);
    let mut r = TcpSpec::to_vip(c4(1), 1000, RST | ACK);
    r.options = fc;
    sim.expect(&r.build(), 0, TO_BACKENDS);
    assert_eq!(sim.events(Event::FastClose), 0, "not a fast close");
    assert!(sim.events(Event::MptcpOptionIgnored) >= 1);
    assert_eq!(
        sim.shared.tokens.len(),
        1,
        "the token stays until the subflow goes"
    );
    assert_eq!(sim.flow_states(), vec![FlowState::Closed]);
    assert_eq!(sim.w.stats.dropped(), 0);
}

fn fastclose(key: u64) -> Vec<u8> {
    let mut o = vec![30, 12, 0x70, 0];
    o.extend_from_slice(&key.to_be_bytes());
    o
}

#[test]
fn m19_fastclose_with_the_wrong_key() {
    let mut sim = Sim::new();
    let b = mptcp_handshake(&mut sim, c4(1), 1000, 0x191, 0x192);
    // From the client it must carry the server's key.
    let mut r = TcpSpec::to_vip(c4(1), 1000, RST | ACK);
    r.options = fastclose(0x192);
    sim.expect(&r.build(), 0, TO_BACKENDS);
    // From the server it must carry the client's key.
    let mut r = TcpSpec::from_backend(b, c4(1), 1000, RST | ACK);
    r.options = fastclose(0x191);
    sim.expect(&r.build(), 1, TO_CLIENTS);
    assert_eq!(sim.events(Event::FastCloseBadKey), 2);
    assert_eq!(sim.events(Event::FastClose), 0);
    assert_eq!(sim.shared.tokens.len(), 1, "cleanup not accelerated");
    // The right key ends the token at once.
    let b2 = mptcp_handshake(&mut sim, c4(2), 2000, 0x193, 0x194);
    let mut r = TcpSpec::from_backend(b2, c4(2), 2000, RST | ACK);
    r.options = fastclose(0x194);
    sim.expect(&r.build(), 1, TO_CLIENTS);
    assert_eq!(sim.events(Event::FastClose), 1);
    assert_eq!(sim.shared.tokens.len(), 1);
}

#[test]
fn m20_mptcp_options_on_a_plain_flow() {
    let mut sim = Sim::new();
    let b = plain_handshake(&mut sim, c4(1), 1000);
    let events: Vec<u64> = Event::ALL.iter().map(|&e| sim.events(e)).collect();
    let options: [Vec<u8>; 4] = [
        vec![30, 4, 0x20, 0x00], // DSS
        vec![30, 4, 0x01, 0x01], // MP_CAPABLE
        vec![30, 3, 0x50],       // MP_PRIO
        fastclose(0x1234),       // MP_FASTCLOSE
    ];
    for opt in options {
        let mut c = TcpSpec::to_vip(c4(1), 1000, ACK);
        c.options = opt.clone();
        assert_eq!(backend_of(&sim.expect(&c.build(), 0, TO_BACKENDS)), b);
        let mut s = TcpSpec::from_backend(b, c4(1), 1000, ACK);
        s.options = opt;
        sim.expect(&s.build(), 1, TO_CLIENTS);
    }
    let mut r = TcpSpec::to_vip(c4(1), 1000, RST | ACK);
    r.options = fastclose(0x1234);
    sim.expect(&r.build(), 0, TO_BACKENDS);
    let after: Vec<u64> = Event::ALL.iter().map(|&e| sim.events(e)).collect();
    assert_eq!(events, after, "ignored");
    assert_eq!(sim.shared.tokens.len(), 0);
}

#[test]
fn m21_option_area_full_of_mptcp_options() {
    let mut sim = Sim::new();
    // Ten MP_TCPRST (40 bytes) on a SYN: each ignored, one event for the segment.
    sim.expect(
        &syn_with(1000, &[30, 4, 0x80, 1].repeat(10)),
        0,
        TO_BACKENDS,
    );
    assert_eq!(sim.events(Event::MptcpOptionIgnored), 1);
    // Thirteen 3-byte REMOVE_ADDRs and a NOP.
    let mut area = [30u8, 3, 0x40].repeat(13);
    area.push(1);
    sim.expect(&syn_with(1001, &area), 0, TO_BACKENDS);
    assert_eq!(sim.events(Event::MptcpOptionIgnored), 2);
    // Three identical MP_JOINs (36 bytes) and NOPs: one join.
    let b = mptcp_handshake(&mut sim, c4(2), 2000, 0x211, 0x212);
    let j = TcpSpec::to_vip(c4(1), 1002, SYN)
        .with_mptcp(join_syn(token_from_key(0x211)))
        .with_mptcp(join_syn(token_from_key(0x211)))
        .with_mptcp(join_syn(token_from_key(0x211)))
        .build();
    assert_eq!(backend_of(&sim.expect(&j, 0, TO_BACKENDS)), b);
    // Random 40-byte areas on every kind of segment: no panic, one verdict each.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for i in 0..2000u32 {
        let mut opts = vec![0u8; 40];
        for byte in opts.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *byte = match x % 4 {
                0 => 30,
                1 => (x >> 8) as u8 % 41,
                _ => (x >> 16) as u8,
            };
        }
        let flags = [SYN, SYNACK, ACK, RST | ACK, FIN | ACK][i as usize % 5];
        let mut c = TcpSpec::to_vip(c4(3), 3000 + (i % 50) as u16, flags);
        c.options = opts.clone();
        let _ = sim.send(&c.build(), 0);
        let mut s = TcpSpec::from_backend(b, c4(3), 3000 + (i % 50) as u16, flags);
        s.options = opts;
        let _ = sim.send(&s.build(), 1);
    }
}

// ---------------------------------------------------------------------------------------------
// 4.6 ICMP / ICMPv6 and misc.
// ---------------------------------------------------------------------------------------------

#[test]
fn i1_icmp_error_for_a_known_flow_goes_to_its_backend() {
    let mut sim = Sim::new();
    // IPv4: fragmentation needed, quoting the VIP -> client segment.
    let b = backend_of(&sim.expect(&syn4(1000), 0, TO_BACKENDS));
    let quote = quote4(VIP4, v4(c4(1)), 6, VIP_PORT, 1000);
    let f = icmp4(ROUTER4, VIP4, icmp_error(3, 4, 1400, &quote));
    let out = sim.expect(&f, 0, TO_BACKENDS);
    let ip = ipv4::Packet::new_checked(&out[14..]).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!(
        (ip.src_addr(), ip.dst_addr(), ip.hop_limit()),
        (ROUTER4, backend_v4(b), 63)
    );
    let msg = ip.payload();
    assert_eq!(
        checksum::data(msg),
        0xffff,
        "ICMP checksum covers the rewritten quote"
    );
    let q = &msg[8..];
    assert_eq!(
        checksum::data(&q[..20]),
        0xffff,
        "quoted IPv4 header checksum fixed"
    );
    assert_eq!(
        &q[12..16],
        &backend_v4(b).octets(),
        "quoted source is the backend"
    );
    assert_eq!(&q[16..20], &v4(c4(1)).octets());
    assert_eq!(u16::from_be_bytes([q[20], q[21]]), BACKEND_PORT);
    assert_eq!(
        &q[22..28],
        &quote[22..28],
        "rest of the quoted TCP untouched"
    );
    // IPv6: packet too big.
    let b6 = backend_of(&sim.expect(&syn6(1000), 0, TO_BACKENDS));
    let quote = quote6(VIP6, v6(c6(1)), 6, VIP_PORT, 1000);
    let f = icmp6(ROUTER6, VIP6, 64, icmp_error(2, 0, 1400, &quote));
    let out = sim.expect(&f, 0, TO_BACKENDS);
    let ip = ipv6::Packet::new_checked(&out[14..]).unwrap();
    assert_eq!((ip.dst_addr(), ip.hop_limit()), (backend_v6(b6), 63));
    let msg = ip.payload();
    let pseudo =
        checksum::pseudo_header_v6(&ip.src_octets(), &ip.dst_octets(), 58, msg.len() as u32);
    assert_eq!(checksum::combine(&[pseudo, checksum::data(msg)]), 0xffff);
    assert_eq!(&msg[8 + 8..8 + 24], &backend_v6(b6).octets());
    assert_eq!(u16::from_be_bytes([msg[48], msg[49]]), BACKEND_PORT);
    assert_eq!(sim.events(Event::IcmpForwarded), 2);
    assert_eq!(sim.w.flows.len(), 2, "ICMP creates no state");
}

#[test]
fn i2_icmp_error_quoting_nothing_known() {
    let mut sim = Sim::new();
    sim.expect(&syn4(1000), 0, TO_BACKENDS);
    let good = quote4(VIP4, v4(c4(1)), 6, VIP_PORT, 1000);
    // Quote shorter than an IP header + 8 bytes.
    sim.expect(
        &icmp4(ROUTER4, VIP4, icmp_error(3, 1, 0, &good[..27])),
        0,
        drop(DropReason::IcmpNoFlow),
    );
    sim.expect(
        &icmp4(ROUTER4, VIP4, icmp_error(3, 1, 0, &good[..10])),
        0,
        drop(DropReason::IcmpNoFlow),
    );
    // Quoted source is not the VIP.
    let q = quote4(Ipv4Addr::new(192, 0, 2, 99), v4(c4(1)), 6, VIP_PORT, 1000);
    sim.expect(
        &icmp4(ROUTER4, VIP4, icmp_error(3, 1, 0, &q)),
        0,
        drop(DropReason::IcmpNoFlow),
    );
    // Quoted flow unknown.
    let q = quote4(VIP4, v4(c4(1)), 6, VIP_PORT, 1001);
    sim.expect(
        &icmp4(ROUTER4, VIP4, icmp_error(3, 1, 0, &q)),
        0,
        drop(DropReason::IcmpNoFlow),
    );
    let q = quote6(VIP6, v6(c6(1)), 6, VIP_PORT, 1001);
    sim.expect(
        &icmp6(ROUTER6, VIP6, 64, icmp_error(1, 4, 0, &q)),
        0,
        drop(DropReason::IcmpNoFlow),
    );
    sim.only_drops(DropReason::IcmpNoFlow, 5);
    assert_eq!(sim.w.flows.len(), 1, "never creates state");
}

#[test]
fn i3_icmp_error_about_an_icmp_error_and_bad_checksum() {
    let mut sim = Sim::new();
    sim.expect(&syn4(1000), 0, TO_BACKENDS);
    let q = quote4(VIP4, v4(c4(1)), 1, 3, 0x0400);
    sim.expect(
        &icmp4(ROUTER4, VIP4, icmp_error(3, 1, 0, &q)),
        0,
        drop(DropReason::IcmpErrorAboutError),
    );
    let q = quote6(VIP6, v6(c6(1)), 58, 0x0100, 0);
    sim.expect(
        &icmp6(ROUTER6, VIP6, 64, icmp_error(1, 4, 0, &q)),
        0,
        drop(DropReason::IcmpErrorAboutError),
    );
    assert_eq!(sim.drops(DropReason::IcmpErrorAboutError), 2);
    // Bad checksums.
    let good = quote4(VIP4, v4(c4(1)), 6, VIP_PORT, 1000);
    let mut f = icmp4(ROUTER4, VIP4, icmp_error(3, 4, 1400, &good));
    f[34 + 7] ^= 1;
    sim.expect(&f, 0, drop(DropReason::IcmpBad));
    let q6 = quote6(VIP6, v6(c6(1)), 6, VIP_PORT, 1000);
    let mut f = icmp6(ROUTER6, VIP6, 64, icmp_error(2, 0, 1400, &q6));
    f[54 + 7] ^= 1;
    sim.expect(&f, 0, drop(DropReason::IcmpBad));
    // Shorter than an ICMP header.
    sim.expect(
        &ip4_frame(ROUTER4, VIP4, 1, 64, &[3, 1, 0, 0]),
        0,
        drop(DropReason::IcmpBad),
    );
    assert_eq!(sim.drops(DropReason::IcmpBad), 3);
    assert_eq!(sim.w.stats.dropped(), 5);
}

#[test]
fn i4_packet_too_big_below_the_minimum_mtu() {
    // Policy: counted and forwarded unchanged; the backend's stack clamps it.
    let mut sim = Sim::new();
    let b = backend_of(&sim.expect(&syn4(1000), 0, TO_BACKENDS));
    let quote = quote4(VIP4, v4(c4(1)), 6, VIP_PORT, 1000);
    for mtu in [575u32, 67, 0] {
        let out = sim.expect(
            &icmp4(ROUTER4, VIP4, icmp_error(3, 4, mtu, &quote)),
            0,
            TO_BACKENDS,
        );
        let ip = ipv4::Packet::new_checked(&out[14..]).unwrap();
        assert_eq!(ip.dst_addr(), backend_v4(b));
        assert_eq!(
            u32::from_be_bytes(ip.payload()[4..8].try_into().unwrap()),
            mtu,
            "MTU unchanged"
        );
    }
    sim.expect(&syn6(1000), 0, TO_BACKENDS);
    let quote = quote6(VIP6, v6(c6(1)), 6, VIP_PORT, 1000);
    sim.expect(
        &icmp6(ROUTER6, VIP6, 64, icmp_error(2, 0, 1279, &quote)),
        0,
        TO_BACKENDS,
    );
    assert_eq!(sim.events(Event::IcmpSmallMtu), 4);
    // At the minimum: not counted.
    sim.expect(
        &icmp6(ROUTER6, VIP6, 64, icmp_error(2, 0, 1280, &quote)),
        0,
        TO_BACKENDS,
    );
    let quote = quote4(VIP4, v4(c4(1)), 6, VIP_PORT, 1000);
    sim.expect(
        &icmp4(ROUTER4, VIP4, icmp_error(3, 4, 576, &quote)),
        0,
        TO_BACKENDS,
    );
    assert_eq!(sim.events(Event::IcmpSmallMtu), 4);
    assert_eq!(sim.events(Event::IcmpForwarded), 6);
}

#[test]
fn i5_echo_to_the_vip_is_answered_rate_limited() {
    // Policy: answered by the gateway, within the ICMP rate limit.
    let mut sim = Sim::with_icmp_burst(2);
    let out = sim.expect(
        &icmp4(
            v4(c4(1)),
            VIP4,
            vec![8, 0, 0, 0, 0x12, 0x34, 0, 1, b'p', b'i'],
        ),
        0,
        REPLY0,
    );
    let ip = ipv4::Packet::new_checked(&out[14..]).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!((ip.src_addr(), ip.dst_addr()), (VIP4, v4(c4(1))));
    assert_eq!(ip.payload()[0], 0);
    assert_eq!(checksum::data(ip.payload()), 0xffff);
    assert_eq!(&out[0..6], &CLIENT_MAC);
    let out = sim.expect(
        &icmp6(v6(c6(1)), VIP6, 64, vec![128, 0, 0, 0, 0, 1, 0, 1]),
        0,
        REPLY0,
    );
    let ip = ipv6::Packet::new_checked(&out[14..]).unwrap();
    assert_eq!(
        (ip.src_addr(), ip.dst_addr(), ip.payload()[0]),
        (VIP6, v6(c6(1)), 129)
    );
    let pseudo = checksum::pseudo_header_v6(
        &ip.src_octets(),
        &ip.dst_octets(),
        58,
        ip.payload().len() as u32,
    );
    assert_eq!(
        checksum::combine(&[pseudo, checksum::data(ip.payload())]),
        0xffff
    );
    // Over the limit.
    sim.expect(
        &icmp4(v4(c4(1)), VIP4, vec![8, 0, 0, 0, 0, 1, 0, 2]),
        0,
        drop(DropReason::RateLimited),
    );
    sim.only_drops(DropReason::RateLimited, 1);
    assert!(sim.w.flows.is_empty());
}

#[test]
fn i6_backend_reply_without_flow_state() {
    // Deliberate: rewritten statelessly to the VIP so flows survive a gateway restart.
    let mut sim = Sim::new();
    let out = sim.expect(
        &TcpSpec::from_backend(1, c4(1), 1000, ACK).build(),
        1,
        TO_CLIENTS,
    );
    let o = parse_out(&out);
    assert_eq!(
        (o.src, o.src_port, o.dst, o.dst_port),
        (IpAddr::V4(VIP4), VIP_PORT, c4(1), 1000)
    );
    assert_eq!(&out[0..6], &CLIENT_MAC, "the client port's gateway MAC");
    let out = sim.expect(
        &TcpSpec::from_backend(2, c6(1), 1000, ACK).build(),
        1,
        TO_CLIENTS,
    );
    assert_eq!(parse_out(&out).src, IpAddr::V6(VIP6));
    assert_eq!(sim.events(Event::ReturnStateless), 2);
    assert!(sim.w.flows.is_empty(), "no state created");
}

#[test]
fn i7_backend_side_source_that_is_not_a_backend() {
    let mut sim = Sim::new();
    // Not a backend address; a backend address on another port; the IPv6 equivalents.
    let mut spoof = TcpSpec::from_backend(0, c4(1), 1000, ACK);
    spoof.src = IpAddr::V4(Ipv4Addr::new(10, 1, 0, 99));
    sim.expect(&spoof.build(), 1, drop(DropReason::NotFromBackend));
    let mut wrong_port = TcpSpec::from_backend(0, c4(1), 1000, ACK);
    wrong_port.src_port = 22;
    sim.expect(&wrong_port.build(), 1, drop(DropReason::NotFromBackend));
    let mut spoof6 = TcpSpec::from_backend(0, c6(1), 1000, ACK);
    spoof6.src = IpAddr::V6(Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 0x99));
    sim.expect(&spoof6.build(), 1, drop(DropReason::NotFromBackend));
    let udp = ip4_frame(
        Ipv4Addr::new(10, 1, 0, 99),
        v4(c4(1)),
        17,
        64,
        &[0, 53, 0, 53, 0, 8, 0, 0],
    );
    let mut udp = udp;
    udp[0..6].copy_from_slice(&PORT1_MAC);
    sim.expect(&udp, 1, drop(DropReason::NotFromBackend));
    sim.only_drops(DropReason::NotFromBackend, 4);
    assert_eq!(sim.events(Event::ReturnStateless), 0);
    // On the client side the same packet (to the client port's MAC) is simply not for a VIP.
    spoof.dst_mac = PORT0_MAC;
    sim.expect(&spoof.build(), 0, drop(DropReason::NoVip));
}

#[test]
fn l2_unicast_for_another_mac() {
    // Policy: a unicast frame for another MAC than the ingress port's (a promiscuous port, a
    // switch flooding an unknown destination) is neither forwarded nor answered. The fast path
    // sends it to the full walk, which counts it.
    let mut sim = Sim::new();
    let other = [0x02, 0, 0, 0, 0x77, 0x77];
    for c in [c4(1), c6(1)] {
        for flags in [SYN, ACK] {
            let mut spec = TcpSpec::to_vip(c, 1000, flags);
            spec.dst_mac = other;
            sim.expect(&spec.build(), 0, drop(DropReason::L2NotOurs));
        }
    }
    let mut echo = icmp4(v4(c4(1)), VIP4, vec![8, 0, 0, 0, 0, 1, 0, 1]);
    echo[0..6].copy_from_slice(&other);
    sim.expect(&echo, 0, drop(DropReason::L2NotOurs));
    // A backend's packet to the client-side port's MAC arriving on the backend side.
    let mut back = TcpSpec::from_backend(0, c4(1), 1000, ACK);
    back.dst_mac = PORT0_MAC;
    sim.expect(&back.build(), 1, drop(DropReason::L2NotOurs));
    // ARP: broadcast is answered (elsewhere); a multicast MAC other than broadcast is not.
    let mut a = arp(1, CLIENT_MAC, v4(c4(1)), VIP4);
    a[0..6].copy_from_slice(&[0x01, 0x00, 0x5e, 0, 0, 1]);
    sim.expect(&a, 0, drop(DropReason::L2Multicast));
    let mut a = arp(1, CLIENT_MAC, v4(c4(1)), VIP4);
    a[0..6].copy_from_slice(&other);
    sim.expect(&a, 0, drop(DropReason::L2NotOurs));
    assert_eq!(sim.drops(DropReason::L2NotOurs), 7);
    assert!(sim.w.flows.is_empty());
    // The same SYN to our MAC opens its flow.
    sim.expect(&TcpSpec::to_vip(c4(1), 1000, SYN).build(), 0, TO_BACKENDS);
}

#[test]
fn icmp_echo_all_zero_reply_checksum_is_ffff() {
    // Regression (fuzzing, the pipeline target's reply contract): an echo request with id 0,
    // seq 0 and no payload. RFC 1624's incremental update gave the reply 0x0000 (-0); the
    // reply's words then sum to 0, not 0xffff, and a receiver drops it. Its checksum is 0xffff.
    let mut sim = Sim::new();
    let req = icmp4(v4(c4(1)), VIP4, vec![8, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(&req[36..38], &[0xf7, 0xff]);
    let out = sim.expect(&req, 0, Verdict::Reply { port: PortId(0) });
    assert_eq!(&out[34..42], &[0, 0, 0xff, 0xff, 0, 0, 0, 0]);
    assert_eq!(checksum::data(&out[34..42]), 0xffff, "the reply verifies");
    // The same input as the fuzz target reads it (dataplane/fuzz/corpus/pipeline/
    // regression-echo-all-zero: control byte 0, then the frame) is in the corpus.
    let corpus = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus/pipeline/regression-echo-all-zero"),
    )
    .expect("the regression input is in the corpus");
    assert_eq!((corpus[0], &corpus[1..]), (0, &req[..]));
}

#[test]
fn ipv4_record_route_and_timestamp_options_are_blanked() {
    // Policy: record-route (7) and timestamp (68) options are overwritten with NOPs in both
    // directions (the header keeps its length; its checksum is recomputed): a backend's stack
    // echoes a record route with its own address in it, which must not reach the client.
    let mut sim = Sim::new();
    let rr = [7, 7, 4, 0, 0, 0, 0, 0]; // RR with room for one address, then EOL
    let out = sim.expect(&with_ip_options(syn4(1000), &rr), 0, TO_BACKENDS);
    assert_eq!(
        &out[34..42],
        &[1, 1, 1, 1, 1, 1, 1, 0],
        "RR blanked, EOL kept"
    );
    let o = parse_out(&out);
    assert_eq!(o.dst_port, BACKEND_PORT);
    // The SYN/ACK comes back with the route recorded (the backend's address) and a timestamp
    // option with an address (flag 1), behind a router alert that stays.
    let b = backend_v4(0).octets();
    let mut opts = vec![148, 4, 0, 0, 7, 7, 8, b[0], b[1], b[2], b[3], 1];
    opts.extend_from_slice(&[68, 12, 13, 0x01, b[0], b[1], b[2], b[3], 0, 0, 0, 1]);
    let synack = with_ip_options(
        TcpSpec::from_backend(0, c4(1), 1000, SYN | ACK).build(),
        &opts,
    );
    let back = sim.expect(&synack, 1, Verdict::Forward { port: PortId(0) });
    let hl = usize::from(back[14] & 0x0f) * 4;
    let header = &back[14..14 + hl];
    assert_eq!(&header[20..24], &[148, 4, 0, 0], "other options kept");
    assert!(header[24..].iter().all(|&x| x == 1), "{header:?}");
    assert!(
        !header.windows(4).any(|w| w == b),
        "no backend address in the header"
    );
    assert_eq!(checksum::data(header), 0xffff, "header checksum");
    assert_eq!(sim.events(Event::Ipv4OptionsBlanked), 2);
}
