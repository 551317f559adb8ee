//! DSR: the tunnel packets byte by byte (IPIP and GUE, IPv4 and IPv6), MTU handling, and MPTCP
//! token learning from the client's third ACK with its anti-poisoning rules.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use trapeze_core::crypto::token_from_key;
use trapeze_core::flow::addr_bytes;
use trapeze_core::pipeline::{process, DropReason, Event, Frame, VecFrame, Verdict};
use trapeze_core::pool::{Encap, OuterSource, PoolSnapshot, PortId};
use trapeze_core::testkit::*;
use trapeze_core::Ticks;
use trapeze_wire::{checksum, ipv4, ipv6, tcp, udp};

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const RST: u8 = 0x04;
const PSH_ACK: u8 = 0x18;

const GUE: Encap = Encap::Gue { port: 6080 };

fn hashed4() -> OuterSource {
    OuterSource::Hashed {
        prefix: "10.1.200.0".parse().unwrap(),
        len: 24,
    }
}

fn hashed6() -> OuterSource {
    OuterSource::Hashed {
        prefix: "fd00:1:200::".parse().unwrap(),
        len: 64,
    }
}

/// A gateway whose client port is 0; every frame's counters must balance.
type Gw = Gateway;

/// A DSR pool with only the VIP of `client`'s family (a hashed outer source is per family).
fn pool_for(n: u16, client: IpAddr, encap: Encap, outer: OuterSource) -> PoolSnapshot {
    let mut spec = dsr_spec(n, encap, outer);
    spec.vips[usize::from(!client.is_ipv6())] = None;
    PoolSnapshot::build(spec).unwrap()
}

fn c4(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 51, 100, last))
}

fn c6(last: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, last))
}

/// A client segment to a DSR VIP (the VIP's port is the backends').
fn to_dsr_vip(client: IpAddr, port: u16, flags: u8) -> TcpSpec {
    let mut s = TcpSpec::to_vip(client, port, flags);
    s.dst_port = BACKEND_PORT;
    s
}

/// A tunnel packet, taken apart with every checksum verified.
#[derive(Debug)]
struct Tunnel {
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    outer_src: IpAddr,
    outer_dst: IpAddr,
    outer_ttl: u8,
    /// (source port, destination port) for GUE.
    udp: Option<(u16, u16)>,
    /// The inner IP packet.
    inner: Vec<u8>,
}

fn untunnel(f: &[u8]) -> Tunnel {
    let mut dst_mac = [0u8; 6];
    let mut src_mac = [0u8; 6];
    dst_mac.copy_from_slice(&f[0..6]);
    src_mac.copy_from_slice(&f[6..12]);
    let et = u16::from_be_bytes([f[12], f[13]]);
    let (outer_src, outer_dst, outer_ttl, proto, l4) = if et == 0x86dd {
        let p = ipv6::Packet::new_checked(&f[14..]).expect("outer ipv6");
        assert_eq!(
            14 + 40 + p.payload_len() as usize,
            f.len(),
            "outer payload length"
        );
        assert_ne!(p.flow_label(), 0, "flow label hashed from the flow");
        (
            IpAddr::V6(p.src_addr()),
            IpAddr::V6(p.dst_addr()),
            p.hop_limit(),
            p.next_header().0,
            54,
        )
    } else {
        assert_eq!(et, 0x0800);
        let p = ipv4::Packet::new_checked(&f[14..]).expect("outer ipv4");
        assert!(p.verify_checksum(), "outer IPv4 header checksum");
        assert!(p.dont_frag(), "outer DF");
        assert_eq!(14 + p.total_len() as usize, f.len(), "outer total length");
        (
            IpAddr::V4(p.src_addr()),
            IpAddr::V4(p.dst_addr()),
            p.hop_limit(),
            p.next_header().0,
            34,
        )
    };
    let (udp, inner_at) = match proto {
        4 | 41 => (None, l4),
        17 => {
            let u = udp::Packet::new_checked(&f[l4..]).expect("udp");
            assert_eq!(u.len() as usize, f.len() - l4);
            if outer_src.is_ipv6() {
                assert_ne!(u.checksum(), 0, "UDP over IPv6 needs a checksum");
            }
            assert!(
                u.verify_checksum(&outer_src, &outer_dst),
                "outer UDP checksum"
            );
            let inner_proto = if outer_src.is_ipv6() { 41 } else { 4 };
            assert_eq!(&f[l4 + 8..l4 + 12], &[0, inner_proto, 0, 0], "GUE header");
            (Some((u.src_port(), u.dst_port())), l4 + 12)
        }
        p => panic!("outer protocol {p}"),
    };
    Tunnel {
        dst_mac,
        src_mac,
        outer_src,
        outer_dst,
        outer_ttl,
        udp,
        inner: f[inner_at..].to_vec(),
    }
}

/// The inner packet must be the input's IP packet with only the TTL decremented (and, for IPv4,
/// its header checksum fixed); the TCP segment is byte for byte the client's.
fn assert_inner_is(input: &[u8], inner: &[u8]) {
    let ip_in = &input[14..];
    assert_eq!(inner.len(), ip_in.len(), "inner length");
    if ip_in[0] >> 4 == 6 {
        assert_eq!(inner[7], ip_in[7] - 1, "hop limit - 1");
        assert_eq!(&inner[..7], &ip_in[..7]);
        assert_eq!(&inner[8..], &ip_in[8..]);
    } else {
        let p = ipv4::Packet::new_checked(inner).expect("inner ipv4");
        assert!(p.verify_checksum(), "inner IPv4 checksum after TTL - 1");
        assert_eq!(inner[8], ip_in[8] - 1, "TTL - 1");
        assert_eq!(&inner[20..], &ip_in[20..], "inner TCP untouched");
    }
}

fn ip(a: IpAddr) -> [u8; 16] {
    addr_bytes(a)
}

#[test]
fn ipip_v4_and_v6_wrap_the_packet_in_the_headroom() {
    for client in [c4(7), c6(7)] {
        let mut g = Gw::new(dsr_pool(3, Encap::Ipip, OuterSource::Gateway), 1);
        let mut s = to_dsr_vip(client, 40000, SYN).with_mptcp(mpc_syn());
        s.ttl = 33;
        let input = s.build();
        let (v, out) = g.from_client(&input);
        assert_eq!(v, Verdict::Forward { port: PortId(1) });
        let t = untunnel(&out);
        let b = g.workers[0].flows.iter().next().expect("flow").1.backend;
        let v6 = client.is_ipv6();
        let (gw_src, backend): (IpAddr, IpAddr) = if v6 {
            ("fd00:1::1".parse().unwrap(), backend_v6(b.0).into())
        } else {
            ("10.1.0.1".parse().unwrap(), backend_v4(b.0).into())
        };
        assert_eq!(
            (t.outer_src, t.outer_dst, t.outer_ttl),
            (gw_src, backend, 64)
        );
        assert_eq!((t.dst_mac, t.src_mac), (backend_mac(b.0), PORT1_MAC));
        assert!(t.udp.is_none());
        assert_inner_is(&input, &t.inner);
        assert_eq!(out.len(), input.len() + if v6 { 40 } else { 20 });
        assert_eq!(g.events(Event::DsrEncapsulated), 1);
        let vc = g.workers[0].stats.vips[usize::from(client.is_ipv6())];
        assert_eq!((vc.packets, vc.new_conns, vc.to_client_packets), (1, 1, 0));
    }
}

#[test]
fn gue_hashes_source_address_and_port_per_flow_and_checksums_ipv6() {
    for (client, outer) in [(c4(9), hashed4()), (c6(9), hashed6())] {
        let mut g = Gw::new(pool_for(3, client, GUE, outer), 1);
        let mut seen = std::collections::HashSet::new();
        for port in 41000..41016 {
            let mut s = to_dsr_vip(client, port, SYN);
            let first = s.build();
            let (v, out) = g.from_client(&first);
            assert!(matches!(v, Verdict::Forward { .. }));
            let t = untunnel(&out);
            assert_inner_is(&first, &t.inner);
            let (sport, dport) = t.udp.expect("udp");
            assert_eq!(dport, 6080);
            assert!(sport >= 0xc000, "source port {sport} in the dynamic range");
            match (t.outer_src, outer) {
                (IpAddr::V4(a), _) => {
                    assert_eq!(&a.octets()[..3], &[10, 1, 200]);
                    assert!(a.octets()[3] != 0 && a.octets()[3] != 255);
                }
                (IpAddr::V6(a), _) => {
                    assert_eq!(&a.octets()[..8], &ip("fd00:1:200::".parse().unwrap())[..8])
                }
            }
            // A data segment of the same flow leaves with the same outer source and port.
            s.flags = PSH_ACK;
            s.seq = 1001;
            s.payload = vec![0x5a; 333];
            let data = s.build();
            let (_, out2) = g.from_client(&data);
            let t2 = untunnel(&out2);
            assert_inner_is(&data, &t2.inner);
            assert_eq!((t2.outer_src, t2.udp), (t.outer_src, t.udp));
            seen.insert((t.outer_src, sport));
        }
        assert!(seen.len() >= 12, "16 flows spread: {} distinct", seen.len());
    }
}

#[test]
fn padding_is_trimmed_and_a_vlan_egress_is_tagged() {
    let mut spec = dsr_spec(2, Encap::Ipip, OuterSource::Gateway);
    spec.ports[1].vlan = Some(42);
    let mut g = Gw::new(PoolSnapshot::build(spec).unwrap(), 1);
    let mut input = to_dsr_vip(c4(3), 40001, SYN).build();
    let ip_len = input.len() - 14;
    input.resize(60, 0xee); // Ethernet padding
    let (v, out) = g.from_client(&input);
    assert_eq!(v, Verdict::Forward { port: PortId(1) });
    assert_eq!(&out[12..16], &[0x81, 0x00, 0x00, 42]);
    // Untag to reuse the checker.
    let mut untagged = out[..12].to_vec();
    untagged.extend_from_slice(&out[16..]);
    let t = untunnel(&untagged);
    assert_eq!(t.inner.len(), ip_len, "padding not carried into the tunnel");
}

#[test]
fn oversize_packets_get_fragmentation_needed_or_packet_too_big() {
    for (encap, client, overhead) in [
        (Encap::Ipip, c4(5), 20usize),
        (GUE, c4(5), 32),
        (Encap::Ipip, c6(5), 40),
        (GUE, c6(5), 52),
    ] {
        let outer = if client.is_ipv6() {
            hashed6()
        } else {
            hashed4()
        };
        let mut g = Gw::new(pool_for(2, client, encap, outer), 1);
        let hdr = if client.is_ipv6() { 60 } else { 40 };
        let mut s = to_dsr_vip(client, 42000, PSH_ACK);
        // Exactly at the limit: forwarded; one byte more: refused.
        s.payload = vec![1; 1500 - overhead - hdr];
        let (v, out) = g.from_client(&s.build());
        assert!(matches!(v, Verdict::Forward { .. }), "{encap:?} {client}");
        assert_eq!(out.len(), 14 + 1500);
        s.payload.push(1);
        let big = s.build();
        let (v, out) = g.from_client(&big);
        assert_eq!(v, Verdict::Reply { port: PortId(0) }, "{encap:?} {client}");
        assert_eq!(g.events(Event::DsrTooBigSent), 1);
        let mtu = (1500 - overhead) as u16;
        if client.is_ipv6() {
            let p = ipv6::Packet::new_checked(&out[14..]).unwrap();
            assert_eq!(IpAddr::V6(p.dst_addr()), client);
            assert_eq!(p.next_header().0, 58);
            let msg = &out[54..];
            assert_eq!((msg[0], msg[1]), (2, 0), "packet too big");
            assert_eq!(
                u32::from_be_bytes([msg[4], msg[5], msg[6], msg[7]]),
                mtu as u32
            );
            let sum = checksum::combine(&[
                checksum::data(msg),
                checksum::pseudo_header_v6(
                    &p.src_addr().octets(),
                    &p.dst_addr().octets(),
                    58,
                    msg.len() as u32,
                ),
            ]);
            assert_eq!(sum, 0xffff, "ICMPv6 checksum");
            assert!(msg.len() <= 1280 - 40, "the error fits the minimum MTU");
        } else {
            let p = ipv4::Packet::new_checked(&out[14..]).unwrap();
            assert_eq!(IpAddr::V4(p.dst_addr()), client);
            let msg = &out[34..];
            assert_eq!((msg[0], msg[1]), (3, 4), "fragmentation needed");
            assert_eq!(u16::from_be_bytes([msg[6], msg[7]]), mtu);
            assert_eq!(checksum::data(msg), 0xffff, "ICMP checksum");
            // The quote starts with the client's IP header.
            assert_eq!(&msg[8..28], &big[14..34]);
        }
    }
    // IPv4 without DF: dropped, the gateway does not fragment.
    let mut g = Gw::new(dsr_pool(2, Encap::Ipip, OuterSource::Gateway), 1);
    let mut s = to_dsr_vip(c4(6), 42001, PSH_ACK);
    s.payload = vec![1; 1500 - 40];
    let mut f = s.build();
    f[20] &= !0x40;
    let c = checksum::finish(checksum::data(&{
        let mut h = f[14..34].to_vec();
        h[10] = 0;
        h[11] = 0;
        h
    }));
    f[24..26].copy_from_slice(&c.to_be_bytes());
    assert_eq!(g.from_client(&f).0, Verdict::Drop(DropReason::DsrTooBig));
}

/// The MP_CAPABLE handshake as a DSR gateway sees it: SYN, then the client's third ACK with both
/// keys (the SYN/ACK went straight from the server to the client). Returns the backend index the
/// connection landed on (from the tunnel's outer destination).
fn dsr_handshake(g: &mut Gw, client: IpAddr, port: u16, client_key: u64, server_key: u64) -> u16 {
    let mut s = to_dsr_vip(client, port, SYN).with_mptcp(mpc_syn());
    s.seq = 7000;
    let (v, out) = g.from_client(&s.build());
    assert!(matches!(v, Verdict::Forward { .. }));
    let backend = backend_of(&untunnel(&out).outer_dst);
    let mut a = to_dsr_vip(client, port, ACK).with_mptcp(mpc_ack(client_key, server_key));
    a.seq = 7001;
    a.ack = 1;
    let (v, out) = g.from_client(&a.build());
    assert!(matches!(v, Verdict::Forward { .. }));
    assert_eq!(backend_of(&untunnel(&out).outer_dst), backend);
    backend
}

fn backend_of(a: &IpAddr) -> u16 {
    (0..16)
        .find(|&i| IpAddr::from(backend_v4(i)) == *a || IpAddr::from(backend_v6(i)) == *a)
        .expect("a demo backend")
}

fn join(g: &mut Gw, client: IpAddr, port: u16, token: u32) -> Verdict {
    let (v, out) = g.from_client(
        &to_dsr_vip(client, port, SYN)
            .with_mptcp(join_syn(token))
            .build(),
    );
    if let Verdict::Forward { .. } = v {
        let b = backend_of(&untunnel(&out).outer_dst);
        // Encode the backend in the verdict's port for the caller: keep it simple.
        return Verdict::Forward {
            port: PortId(100 + b as u8),
        };
    }
    v
}

#[test]
fn tokens_are_learned_from_the_third_ack_and_joins_follow_on_every_worker() {
    for client in [c4(20), c6(20)] {
        let mut g = Gw::new(dsr_pool(5, Encap::Ipip, OuterSource::Gateway), 3);
        let mut owners = Vec::new();
        for i in 0..12u16 {
            let key = 0x1000 + i as u64;
            let b = dsr_handshake(&mut g, client, 45000 + i, 0xc11e, key);
            owners.push((token_from_key(key), b));
        }
        assert_eq!(g.events(Event::TokenLearnedFromClient), 12);
        assert_eq!(g.events(Event::TokenLearned), 0, "no SYN/ACK in DSR");
        // Joins from another address and many ports land on their connection's backend,
        // whichever worker owns the join's 5-tuple.
        let other = if client.is_ipv6() { c6(21) } else { c4(21) };
        for (i, (token, b)) in owners.iter().enumerate() {
            let v = join(&mut g, other, 50000 + i as u16, *token);
            assert_eq!(
                v,
                Verdict::Forward {
                    port: PortId(100 + *b as u8)
                }
            );
        }
        assert_eq!(g.events(Event::JoinRouted), 12);
    }
}

#[test]
fn a_third_ack_out_of_sequence_teaches_nothing_and_the_real_one_still_does() {
    let mut g = Gw::new(dsr_pool(3, Encap::Ipip, OuterSource::Gateway), 1);
    let client = c4(30);
    let mut s = to_dsr_vip(client, 46000, SYN).with_mptcp(mpc_syn());
    s.seq = 9000;
    let _ = g.from_client(&s.build());
    // An injected ACK with a guessed sequence number and the attacker's key.
    let mut forged = to_dsr_vip(client, 46000, ACK).with_mptcp(mpc_ack(1, 0xbad));
    forged.seq = 1234;
    let (v, _) = g.from_client(&forged.build());
    assert!(
        matches!(v, Verdict::Forward { .. }),
        "still forwarded: the server judges it"
    );
    assert_eq!(g.events(Event::MpcAckOutOfSequence), 1);
    assert_eq!(
        join(&mut g, c4(31), 46001, token_from_key(0xbad)),
        Verdict::Drop(DropReason::JoinNoToken)
    );
    // The genuine third ACK afterwards is learned.
    let mut a = to_dsr_vip(client, 46000, ACK).with_mptcp(mpc_ack(2, 0x600d));
    a.seq = 9001;
    let _ = g.from_client(&a.build());
    assert_eq!(g.events(Event::TokenLearnedFromClient), 1);
    assert!(matches!(
        join(&mut g, c4(31), 46002, token_from_key(0x600d)),
        Verdict::Forward { .. }
    ));
    // Later segments never teach: a data segment with another key changes nothing.
    let mut later = to_dsr_vip(client, 46000, PSH_ACK).with_mptcp(mpc_ack(2, 0xbad2));
    later.seq = 9001;
    later.payload = vec![1; 10];
    let _ = g.from_client(&later.build());
    assert_eq!(
        join(&mut g, c4(31), 46003, token_from_key(0xbad2)),
        Verdict::Drop(DropReason::JoinNoToken)
    );
    // A corrupted third ACK is not learned either (T14), and the flow waits for the next one.
    let mut s = to_dsr_vip(client, 46100, SYN).with_mptcp(mpc_syn());
    s.seq = 100;
    let _ = g.from_client(&s.build());
    let mut a = to_dsr_vip(client, 46100, ACK).with_mptcp(mpc_ack(3, 0x7777));
    a.seq = 101;
    let mut bad = a.build();
    let n = bad.len();
    bad[n - 1] ^= 0xff; // option byte: checksum now wrong
    let _ = g.from_client(&bad);
    assert_eq!(g.events(Event::BadL4ChecksumNotLearned), 1);
    let _ = g.from_client(&a.build());
    assert_eq!(g.events(Event::TokenLearnedFromClient), 2);
}

#[test]
fn a_client_cannot_take_over_or_spoil_another_connections_token() {
    // 0xc66f and 0xe658 give the same token (0x7357966a): the attacker "found" a key whose
    // token is the victim's. Pick client ports that Maglev sends to different backends.
    let mut g = Gw::new(dsr_pool(4, Encap::Ipip, OuterSource::Gateway), 2);
    let token = token_from_key(0xc66f);
    assert_eq!(token, token_from_key(0xe658));
    let victim = dsr_handshake(&mut g, c4(40), 47000, 0xaaaa, 0xc66f);
    let mut attacker = None;
    for port in 48000..48100 {
        let mut s = to_dsr_vip(c4(66), port, SYN).with_mptcp(mpc_syn());
        s.seq = 1;
        let (_, out) = g.from_client(&s.build());
        let b = backend_of(&untunnel(&out).outer_dst);
        if b != victim {
            let mut a = to_dsr_vip(c4(66), port, ACK).with_mptcp(mpc_ack(0xbbbb, 0xe658));
            a.seq = 2;
            let _ = g.from_client(&a.build());
            attacker = Some(b);
            break;
        }
    }
    assert!(attacker.is_some(), "some port goes elsewhere");
    assert_eq!(g.events(Event::TokenClaimRefused), 1);
    assert_eq!(g.events(Event::TokenCollision), 0, "not made ambiguous");
    // The victim's joins still reach the victim's backend.
    for port in 0..4 {
        assert_eq!(
            join(&mut g, c4(41), 49000 + port, token),
            Verdict::Forward {
                port: PortId(100 + victim as u8)
            }
        );
    }
}

#[test]
fn icmp_errors_about_a_dsr_flow_are_tunnelled_to_its_backend() {
    let client = c4(50);
    let mut g = Gw::new(pool_for(3, client, GUE, hashed4()), 1);
    let (_, out) = g.from_client(&to_dsr_vip(client, 43000, SYN).build());
    let backend = untunnel(&out).outer_dst;
    // A router on the way to the client says the server's packet (VIP -> client) is too big.
    let IpAddr::V4(cl) = client else {
        unreachable!()
    };
    let mut quote = vec![0u8; 28];
    ipv4::Repr {
        src_addr: VIP4,
        dst_addr: cl,
        next_header: trapeze_wire::ip::IpProtocol::TCP,
        payload_len: 8,
        hop_limit: 50,
        dscp_ecn: 0,
        ident: 1,
        dont_frag: true,
    }
    .emit(&mut ipv4::Packet::new_unchecked(&mut quote[..20]));
    quote[20..22].copy_from_slice(&BACKEND_PORT.to_be_bytes());
    quote[22..24].copy_from_slice(&43000u16.to_be_bytes());
    let mut icmp = vec![3, 4, 0, 0, 0, 0, 0x05, 0x00];
    icmp.extend_from_slice(&quote);
    let c = checksum::finish(checksum::data(&icmp));
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut f = vec![0u8; 14 + 20];
    f[0..6].copy_from_slice(&PORT0_MAC);
    f[6..12].copy_from_slice(&CLIENT_MAC);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    ipv4::Repr {
        src_addr: Ipv4Addr::new(198, 51, 100, 254),
        dst_addr: VIP4,
        next_header: trapeze_wire::ip::IpProtocol::ICMP,
        payload_len: icmp.len(),
        hop_limit: 60,
        dscp_ecn: 0,
        ident: 2,
        dont_frag: false,
    }
    .emit(&mut ipv4::Packet::new_unchecked(&mut f[14..34]));
    f.extend_from_slice(&icmp);
    let (v, out) = g.from_client(&f);
    assert_eq!(v, Verdict::Forward { port: PortId(1) });
    let t = untunnel(&out);
    assert_eq!(t.outer_dst, backend);
    assert_inner_is(&f, &t.inner);
    assert_eq!(g.events(Event::IcmpForwarded), 1);
}

#[test]
fn dsr_vips_are_validated() {
    // A backend on another port than the VIP: DSR cannot translate ports.
    let mut spec = dsr_spec(2, Encap::Ipip, OuterSource::Gateway);
    spec.vips[0].as_mut().unwrap().port = 80;
    let e = PoolSnapshot::build(spec).unwrap_err().to_string();
    assert!(e.contains("cannot translate ports"), "{e}");
    // A hashed source of the other family.
    let mut spec = dsr_spec(2, Encap::Ipip, hashed6());
    spec.vips[1] = None;
    let e = PoolSnapshot::build(spec).unwrap_err().to_string();
    assert!(e.contains("outer source prefix"), "{e}");
    // No gateway address of the family on the egress port.
    let mut spec = dsr_spec(2, Encap::Ipip, OuterSource::Gateway);
    spec.ports[1].ipv6.clear();
    let e = PoolSnapshot::build(spec).unwrap_err().to_string();
    assert!(e.contains("no IPv6 address for the outer source"), "{e}");
    // A backend may serve a NAT VIP and a DSR VIP at once (the return path map has only NAT).
    let mut spec = demo_spec(2);
    let mut d = dsr_spec(2, GUE, hashed4()).vips[0].clone().unwrap();
    d.id = trapeze_core::pool::VipId(2);
    d.addr = "192.0.2.20".parse().unwrap();
    spec.vips.push(Some(d));
    PoolSnapshot::build(spec).expect("NAT and DSR VIPs over the same backends");
}

#[test]
fn nat_return_packets_are_counted_per_vip() {
    let mut g = Gw::new(demo_pool(2), 1);
    let client = c4(60);
    let _ = g.from_client(&TcpSpec::to_vip(client, 44000, SYN).build());
    let b = g.workers[0].flows.iter().next().unwrap().1.backend.0;
    let mut frame = VecFrame::new(&TcpSpec::from_backend(b, client, 44000, 0x12).build());
    let v = process(
        &mut frame,
        PortId(1),
        g.now,
        &mut g.workers[0],
        &g.shared,
        &g.pool,
    );
    assert_eq!(v, Verdict::Forward { port: PortId(0) });
    let c = g.workers[0].stats.vips[0];
    assert_eq!((c.packets, c.to_client_packets), (1, 1));
    assert_eq!(c.to_client_bytes, (frame.len() - 14) as u64);
    let _ = tcp::HEADER_LEN;
}

/// Every flow entry that holds a token reference is counted once in its owner's subflows, also
/// when a connection is seen again with the same keys and 5-tuple while one of its subflows is
/// still open (a replayed trace, a client reusing a port): the token must not go with the old
/// copy's last subflow while the new copy's first subflow still holds it.
#[test]
fn a_replayed_connection_keeps_its_token_references_balanced() {
    for client in [c4(30), c6(30)] {
        let mut g = Gw::new(dsr_pool(3, Encap::Ipip, OuterSource::Gateway), 1);
        let key = 0x5eed;
        let token = token_from_key(key);
        let other = if client.is_ipv6() { c6(31) } else { c4(31) };
        let subflows = |g: &Gw| {
            g.shared
                .tokens
                .owners(token)
                .as_slice()
                .first()
                .map_or(0, |o| o.subflows)
        };
        let rst = |g: &mut Gw, from: IpAddr, port: u16| {
            let mut r = to_dsr_vip(from, port, RST);
            r.seq = 9000;
            let _ = g.from_client(&r.build());
        };
        let expire = |g: &mut Gw| {
            g.now = Ticks(g.now.0 + 60_000_000_000);
            g.workers[0].housekeeping(g.now, &g.shared, 1 << 16);
        };
        let b = dsr_handshake(&mut g, client, 41000, 0xc11e, key);
        let routed = Verdict::Forward {
            port: PortId(100 + b as u8),
        };
        assert_eq!(join(&mut g, other, 51000, token), routed);
        let mut ack = to_dsr_vip(other, 51000, ACK);
        ack.seq = 1;
        ack.ack = 1;
        let _ = g.from_client(&ack.build()); // the join is established
        assert_eq!(subflows(&g), 2);
        // The first subflow ends; the join holds the token.
        rst(&mut g, client, 41000);
        expire(&mut g);
        assert_eq!(subflows(&g), 1);
        // The same connection again on the first subflow's 5-tuple, same keys.
        assert_eq!(dsr_handshake(&mut g, client, 41000, 0xc11e, key), b);
        assert_eq!(subflows(&g), 2, "the new first subflow holds a reference");
        // The old join ends: the new first subflow still holds the token, and joins follow.
        rst(&mut g, other, 51000);
        expire(&mut g);
        assert_eq!(subflows(&g), 1);
        assert_eq!(join(&mut g, other, 51001, token), routed);
    }
}
