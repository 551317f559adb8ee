//! The bodies of the fuzz targets (`dataplane/fuzz/fuzz_targets/*.rs`), shared with the corpus
//! replay test (`tests/fuzz_corpus.rs`) so CI holds the code to the same contracts without
//! cargo-fuzz. Each body takes arbitrary bytes and panics only when a contract breaks.
//!
//! This file is compiled into both crates with `#[path]`; it uses nothing but `trapeze-core`
//! and `trapeze-wire` (and std).
//!
//! * [`wire_frame`]: every wire parser on arbitrary bytes (checked views, accessors, setters,
//!   `Repr` round trips, the TCP option walk, `mptcp::scan` (and `scan_syn` on SYNs), ICMP
//!   quotes, ARP, the pcap reader).
//! * [`mptcp_options`]: a 0–40 byte option area with arbitrary segment flags through
//!   `mptcp::scan` and `MptcpOption::parse`, and parse -> emit -> parse for what parses.
//! * [`pipeline`]: frames, or sequences of frames, through `process()` on the demo pool with two
//!   workers, a small flow table and token table and a moving clock, checking the counters, the
//!   tables and every frame that leaves.

#![allow(dead_code)]

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

use trapeze_core::flow::{addr_bytes, FlowKey};
use trapeze_core::pipeline::{process, Frame, Shared, VecFrame, Verdict, Worker, WorkerConfig};
use trapeze_core::pool::{PoolSnapshot, PortId, VipId};
use trapeze_core::tables::flow_table::FlowTableConfig;
use trapeze_core::tables::token::TokenTableConfig;
use trapeze_core::testkit::{self, TcpSpec};
use trapeze_core::Ticks;
use trapeze_wire::ethernet::{self, EtherType};
use trapeze_wire::mptcp::{self, MpJoin, MptcpOption, Segment};
use trapeze_wire::tcp::{TcpOption, TcpOptions};
use trapeze_wire::{arp, checksum, icmpv4, icmpv6, ip, ipv4, ipv6, pcap, tcp, udp};

// =============================================================================================
// wire_frame
// =============================================================================================

const V4_A: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
const V4_B: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));

/// Arbitrary bytes through every wire parser: first as a received frame walked from the
/// Ethernet header down, then each parser straight on the bytes.
pub(crate) fn wire_frame(data: &[u8]) {
    if let Ok(eth) = ethernet::Frame::new_checked(data) {
        let _ = (
            eth.dst_addr(),
            eth.src_addr(),
            eth.ethertype(),
            eth.payload().len(),
        );
        assert_eq!(eth.payload().len(), data.len() - ethernet::HEADER_LEN);
    }
    if let Ok(l2) = ethernet::parse_l2(data) {
        assert!(
            l2.header_len == ethernet::HEADER_LEN || l2.header_len == ethernet::VLAN_HEADER_LEN
        );
        assert!(l2.header_len <= data.len());
        assert_eq!(
            l2.vlan.is_some(),
            l2.header_len == ethernet::VLAN_HEADER_LEN
        );
        ethernet_round_trip(data, &l2);
        let body = &data[l2.header_len..];
        match l2.ethertype {
            EtherType::IPV4 => ipv4_all(body),
            EtherType::IPV6 => ipv6_all(body),
            EtherType::ARP => arp_all(body),
            _ => {}
        }
    }
    vlan_helpers(data);
    ipv4_all(data);
    ipv6_all(data);
    arp_all(data);
    tcp_all(data, &V4_A, &V4_B);
    udp_all(data, &V4_A, &V4_B);
    icmpv4_all(data);
    icmpv6_all(data, &[0; 16], &[0; 16]);
    quoted_all(data);
    mptcp_options(data);
    pcap_all(data);
}

fn ethernet_round_trip(data: &[u8], l2: &ethernet::L2Header) {
    let frame = ethernet::Frame::new_checked(data).expect("parse_l2 accepted it");
    let repr = ethernet::Repr::parse(&frame).expect("parse_l2 accepted it");
    assert_eq!(repr.buffer_len(), l2.header_len);
    let mut out = vec![0u8; repr.buffer_len()];
    repr.emit(&mut ethernet::Frame::new_unchecked(&mut out[..]));
    let again = ethernet::parse_l2(&out).expect("an emitted Ethernet header parses");
    assert_eq!(&again, l2, "Ethernet header round trip");
}

fn vlan_helpers(data: &[u8]) {
    let mut buf = data.to_vec();
    if let Ok(tci) = ethernet::pop_vlan_tag(&mut buf) {
        let mut again = buf.clone();
        ethernet::push_vlan_tag(&mut again, tci).expect("room for the tag it held");
        assert_eq!(again, data, "pop then push restores the frame");
    }
    let tci = ethernet::VlanTci::from_bits(data.first().map_or(0, |&b| u16::from(b) << 4 | 5));
    assert_eq!(ethernet::VlanTci::from_bits(tci.to_bits()), tci);
    let mut buf = data.to_vec();
    let _ = ethernet::push_vlan_tag(&mut buf, tci);
    let mut buf = data.to_vec();
    if ethernet::write_vlan_tag(&mut buf, tci, EtherType::IPV4).is_ok() {
        let l2 = ethernet::parse_l2(&buf).expect("a written tag parses");
        assert_eq!(
            (l2.vlan, l2.ethertype, l2.header_len),
            (Some(tci), EtherType::IPV4, 18)
        );
    }
}

fn ipv4_all(buf: &[u8]) {
    let Ok(p) = ipv4::Packet::new_checked(buf) else {
        return;
    };
    let _ = (
        p.version(),
        p.dscp(),
        p.ecn(),
        p.dscp_ecn(),
        p.ident(),
        p.dont_frag(),
    );
    let _ = (
        p.more_frags(),
        p.frag_offset(),
        p.protocol(),
        p.checksum(),
        p.src_octets(),
    );
    let _ = (
        p.dst_octets(),
        p.src_addr(),
        p.dst_addr(),
        p.header().len(),
        p.options().len(),
    );
    let _ = p.source_route();
    let (hl, total) = (p.header_len(), usize::from(p.total_len()));
    assert!(ipv4::HEADER_LEN <= hl && hl <= total && total <= buf.len());
    assert_eq!(p.header().len(), hl);
    assert_eq!(p.options().len(), hl - ipv4::HEADER_LEN);
    assert_eq!(p.payload().len(), total - hl);
    let checksum_ok = p.verify_checksum();

    // Setters that keep the lengths, on a copy; then every accessor again.
    let mut copy = buf.to_vec();
    {
        let mut m = ipv4::Packet::new_checked(&mut copy[..]).expect("same bytes");
        m.set_hop_limit(p.hop_limit().wrapping_sub(1));
        m.set_dscp_ecn(p.dscp_ecn() ^ 0xff);
        m.set_ident(!p.ident());
        m.set_dont_frag(!p.dont_frag());
        m.set_src_addr(p.dst_addr());
        m.set_dst_addr(p.src_addr());
        let _ = m.options_mut().len();
        let _ = m.payload_mut().len();
        m.fill_checksum();
        assert!(m.verify_checksum(), "fill_checksum makes the header verify");
        let _ = (
            m.header_len(),
            m.total_len(),
            m.payload().len(),
            m.source_route(),
        );
    }

    if let Ok(r) = ipv4::Repr::parse(&p) {
        assert!(checksum_ok && !p.is_fragment());
        let mut out = vec![0u8; r.buffer_len() + r.payload_len];
        r.emit(&mut ipv4::Packet::new_unchecked(&mut out[..]));
        let q = ipv4::Packet::new_checked(&out[..]).expect("an emitted IPv4 header checks");
        assert!(q.verify_checksum());
        assert_eq!(ipv4::Repr::parse(&q).ok(), Some(r), "IPv4 Repr round trip");
    }
    if !p.is_fragment() {
        let (src, dst) = (IpAddr::V4(p.src_addr()), IpAddr::V4(p.dst_addr()));
        upper_layer(p.next_header().0, p.payload(), &src, &dst, false);
    }
}

fn ipv6_all(buf: &[u8]) {
    let Ok(p) = ipv6::Packet::new_checked(buf) else {
        return;
    };
    let _ = (
        p.version(),
        p.traffic_class(),
        p.flow_label(),
        p.hop_limit(),
    );
    let _ = (p.src_octets(), p.dst_octets(), p.src_addr(), p.dst_addr());
    let payload = p.payload();
    assert_eq!(payload.len(), usize::from(p.payload_len()));
    assert!(ipv6::HEADER_LEN + payload.len() <= buf.len());
    let walk = ipv6::walk_extension_headers(payload, p.next_header().0);
    assert_eq!(p.extension_headers(), walk, "method and function agree");

    let mut copy = buf.to_vec();
    {
        let mut m = ipv6::Packet::new_checked(&mut copy[..]).expect("same bytes");
        m.set_hop_limit(p.hop_limit().wrapping_sub(1));
        m.set_traffic_class(!p.traffic_class());
        m.set_flow_label(p.flow_label() ^ 0xfffff);
        m.set_src_addr(p.dst_addr());
        m.set_dst_addr(p.src_addr());
        let _ = m.payload_mut().len();
        assert_eq!(m.flow_label(), p.flow_label() ^ 0xfffff);
        assert_eq!(m.traffic_class(), !p.traffic_class());
    }

    if let Ok(r) = ipv6::Repr::parse(&p) {
        let mut out = vec![0u8; r.buffer_len() + r.payload_len];
        r.emit(&mut ipv6::Packet::new_unchecked(&mut out[..]));
        let q = ipv6::Packet::new_checked(&out[..]).expect("an emitted IPv6 header checks");
        assert_eq!(ipv6::Repr::parse(&q).ok(), Some(r), "IPv6 Repr round trip");
    }
    if let Ok(w) = walk {
        assert!(w.count <= ipv6::MAX_EXT_HEADERS && w.upper_offset <= ipv6::MAX_EXT_BYTES);
        assert!(
            w.upper_offset <= payload.len(),
            "the walk stays inside the payload"
        );
        if w.fragment.is_none_or(|f| f.offset == 0) {
            let (src, dst) = (IpAddr::V6(p.src_addr()), IpAddr::V6(p.dst_addr()));
            upper_layer(
                w.upper_protocol,
                &payload[w.upper_offset..],
                &src,
                &dst,
                true,
            );
        }
    }
}

fn upper_layer(proto: u8, l4: &[u8], src: &IpAddr, dst: &IpAddr, v6: bool) {
    match proto {
        6 => tcp_all(l4, src, dst),
        17 => udp_all(l4, src, dst),
        1 if !v6 => icmpv4_all(l4),
        58 if v6 => icmpv6_all(l4, &addr_bytes(*src), &addr_bytes(*dst)),
        _ => {}
    }
}

fn tcp_all(seg: &[u8], src: &IpAddr, dst: &IpAddr) {
    let Ok(p) = tcp::Packet::new_checked(seg) else {
        return;
    };
    let _ = (
        p.src_port(),
        p.dst_port(),
        p.seq_number(),
        p.ack_number(),
        p.flags(),
    );
    let _ = (
        p.fin(),
        p.syn(),
        p.rst(),
        p.ack(),
        p.window_len(),
        p.checksum(),
        p.urgent_at(),
    );
    let hl = p.header_len();
    assert!((tcp::HEADER_LEN..=tcp::MAX_HEADER_LEN).contains(&hl) && hl <= seg.len());
    assert_eq!(p.options().len(), hl - tcp::HEADER_LEN);
    assert_eq!(p.payload().len(), seg.len() - hl);
    assert_eq!(p.segment_len(), seg.len());
    let _ = p.verify_checksum(src, dst);

    let seg_kind = Segment::of(&p);
    option_walk(p.options(), seg_kind);

    let mut copy = seg.to_vec();
    let mut m = tcp::Packet::new_checked(&mut copy[..]).expect("same bytes");
    m.set_src_port(p.dst_port());
    m.set_dst_port(p.src_port());
    m.set_seq_number(!p.seq_number());
    m.set_ack_number(p.ack_number().wrapping_add(1));
    m.set_flags(tcp::TcpFlags(!p.flags().0));
    m.set_window_len(!p.window_len());
    m.set_urgent_at(!p.urgent_at());
    let _ = m.options_mut().len();
    let _ = m.payload_mut().len();
    m.fill_checksum(src, dst);
    assert!(
        m.verify_checksum(src, dst),
        "fill_checksum makes the segment verify"
    );
    // Also across families: the pseudo-header of the other family.
    let (s6, d6) = (
        IpAddr::V6(Ipv6Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    );
    m.fill_checksum(&s6, &d6);
    assert!(m.verify_checksum(&s6, &d6));
}

/// The TCP option walk of an option area: bounded, byte-exact re-emission of every option, and
/// `mptcp::scan` agreeing with a walk done here.
fn option_walk(area: &[u8], seg: Segment) {
    // Manual walk with TcpOption::parse, checking each option re-emits its own bytes.
    let mut rest = area;
    let mut steps = 0usize;
    while !rest.is_empty() {
        steps += 1;
        assert!(
            steps <= area.len(),
            "each option consumes at least one byte"
        );
        let Ok((after, opt)) = TcpOption::parse(rest) else {
            break;
        };
        let used = rest.len() - after.len();
        assert!(
            used >= 1 && used == opt.buffer_len(),
            "{opt:?}: {used} bytes"
        );
        let mut out = [0u8; 64];
        let left = opt.emit(&mut out).expect("a parsed option emits").len();
        assert_eq!(64 - left, used);
        assert_eq!(&out[..used], &rest[..used], "{opt:?} re-emits its bytes");
        let (tail, again) = TcpOption::parse(&out[..used]).expect("an emitted option parses");
        assert!(tail.is_empty());
        assert_eq!(again, opt);
        if opt == TcpOption::EndOfList {
            break;
        }
        rest = after;
    }
    summary_agrees(area, seg);
}

/// `mptcp::scan` against a walk done here; every MPTCP option that parses round-trips.
fn summary_agrees(area: &[u8], seg: Segment) -> mptcp::MptcpSummary {
    let summary = mptcp::scan(area, seg);
    let mut walk = TcpOptions::new(area);
    let (mut seen, mut bad, mut last_err) = (0usize, 0usize, None);
    let mut steps = 0usize;
    for opt in walk.by_ref() {
        steps += 1;
        assert!(steps <= area.len(), "the walk is bounded by the area");
        if let TcpOption::Mptcp(raw) = opt {
            seen += 1;
            match MptcpOption::parse(raw, seg) {
                Ok(o) => mptcp_round_trip(o, seg),
                Err(e) => {
                    bad += 1;
                    last_err = Some(e);
                }
            }
        }
    }
    assert_eq!(summary.seen_mptcp, seen > 0);
    assert_eq!(usize::from(summary.ignored), bad.min(255));
    assert_eq!(summary.last_error, last_err);
    assert_eq!(summary.tcp_options_malformed, walk.malformed());
    assert!(
        !(summary.capable.is_some() && summary.join.is_some()),
        "M8: never both"
    );
    match summary.join {
        Some(MpJoin::Syn { .. }) => assert!(seg.syn && !seg.ack, "join SYN on {seg:?}"),
        Some(MpJoin::SynAck { .. }) => assert!(seg.syn && seg.ack, "join SYN/ACK on {seg:?}"),
        Some(MpJoin::Ack { .. }) => assert!(!seg.syn, "join ACK on {seg:?}"),
        None => {}
    }
    if summary.tcprst.is_some() {
        assert!(seg.rst, "MP_TCPRST kept without RST");
    }
    if summary.capable.is_some() || summary.join.is_some() || summary.fastclose.is_some() {
        assert!(summary.seen_mptcp);
    }
    if seg.syn && !seg.ack {
        // The SYN path's walk: the same verdict, reduced.
        let s = mptcp::scan_syn(area, seg.rst);
        let request = match (summary.join, summary.capable) {
            (Some(MpJoin::Syn { receiver_token, .. }), _) => mptcp::SynRequest::Join {
                token: receiver_token,
            },
            (Some(_), _) => unreachable!("checked above"),
            (None, Some(_)) => mptcp::SynRequest::Capable,
            (None, None) => mptcp::SynRequest::Plain,
        };
        assert_eq!(
            s,
            mptcp::SynSummary {
                request,
                ignored: summary.ignored,
                last_error: summary.last_error,
                conflict: summary.conflict,
                tcp_options_malformed: summary.tcp_options_malformed,
            },
            "scan_syn of {area:02x?}"
        );
    }
    summary
}

fn mptcp_round_trip(opt: MptcpOption<'_>, seg: Segment) {
    let len = opt.buffer_len();
    assert!(
        (3..=40).contains(&len) || matches!(opt, MptcpOption::Unknown { .. }),
        "{opt:?}"
    );
    let mut out = [0u8; 64];
    let left = opt.emit(&mut out).expect("a parsed option emits").len();
    assert_eq!(64 - left, len, "{opt:?}: emit writes buffer_len bytes");
    let again = MptcpOption::parse(&out[..len], seg).unwrap_or_else(|e| {
        panic!(
            "{opt:?} emitted as {:02x?} does not parse: {e:?}",
            &out[..len]
        );
    });
    assert_eq!(
        again,
        opt,
        "MPTCP option round trip via {:02x?}",
        &out[..len]
    );
    // Emission is a function of the value: the second emission is byte-identical.
    let mut out2 = [0u8; 64];
    let _ = again.emit(&mut out2).expect("emits");
    assert_eq!(out[..len], out2[..len]);
}

fn udp_all(buf: &[u8], src: &IpAddr, dst: &IpAddr) {
    let Ok(p) = udp::Packet::new_checked(buf) else {
        return;
    };
    let _ = (
        p.src_port(),
        p.dst_port(),
        p.len(),
        p.is_empty(),
        p.checksum(),
        p.payload().len(),
    );
    let _ = p.verify_checksum(src, dst);
    if let Ok(r) = udp::Repr::parse(&p, src, dst) {
        let payload = p.payload();
        let mut out = vec![0u8; r.buffer_len()];
        r.emit(
            &mut udp::Packet::new_unchecked(&mut out[..]),
            src,
            dst,
            |b| {
                let n = b.len().min(payload.len());
                b[..n].copy_from_slice(&payload[..n]);
            },
        );
        let q = udp::Packet::new_checked(&out[..]).expect("an emitted datagram checks");
        assert_eq!(
            udp::Repr::parse(&q, src, dst).ok(),
            Some(r),
            "UDP Repr round trip"
        );
    }
    let mut copy = buf.to_vec();
    let mut m = udp::Packet::new_checked(&mut copy[..]).expect("same bytes");
    m.set_src_port(p.dst_port());
    m.set_dst_port(p.src_port());
    let _ = m.payload_mut().len();
    m.fill_checksum(src, dst);
    assert!(
        m.verify_checksum(src, dst),
        "fill_checksum makes the datagram verify"
    );
}

fn icmpv4_all(msg: &[u8]) {
    let Ok(p) = icmpv4::Packet::new_checked(msg) else {
        return;
    };
    let _ = (
        p.msg_type(),
        p.msg_code(),
        p.checksum(),
        p.echo_ident(),
        p.echo_seq_no(),
    );
    let _ = (
        p.next_hop_mtu(),
        p.pointer(),
        p.is_error(),
        p.quotes_error(),
    );
    assert_eq!(p.data().len(), msg.len() - icmpv4::HEADER_LEN);
    assert_eq!(p.quoted(), p.data());
    let _ = p.verify_checksum();
    quoted_all(p.quoted());
    if let Ok(r) = icmpv4::Repr::parse(&icmpv4::Packet::new_unchecked(msg)) {
        assert_eq!(r.is_error(), p.is_error());
        let mut out = vec![0u8; r.buffer_len()];
        r.emit(&mut icmpv4::Packet::new_unchecked(&mut out[..]));
        let q = icmpv4::Packet::new_checked(&out[..]).expect("an emitted message checks");
        assert!(q.verify_checksum());
        let again = icmpv4::Repr::parse(&icmpv4::Packet::new_unchecked(&out[..]));
        assert_eq!(again.ok(), Some(r), "ICMPv4 Repr round trip");
    }
    let mut copy = msg.to_vec();
    let mut m = icmpv4::Packet::new_checked(&mut copy[..]).expect("same bytes");
    m.set_echo_ident(!p.echo_ident());
    m.set_echo_seq_no(p.echo_seq_no().wrapping_add(1));
    let _ = m.data_mut().len();
    m.fill_checksum();
    assert!(
        m.verify_checksum(),
        "fill_checksum makes the message verify"
    );
}

fn icmpv6_all(msg: &[u8], src: &[u8; 16], dst: &[u8; 16]) {
    let Ok(p) = icmpv6::Packet::new_checked(msg) else {
        return;
    };
    let (src, dst) = (Ipv6Addr::from(*src), Ipv6Addr::from(*dst));
    let _ = (
        p.msg_type(),
        p.msg_code(),
        p.checksum(),
        p.echo_ident(),
        p.echo_seq_no(),
    );
    let _ = (
        p.mtu(),
        p.pointer(),
        p.neighbor_flags(),
        p.target_addr(),
        p.is_error(),
    );
    let _ = (p.data().len(), p.ndisc_options().len(), p.quotes_error());
    let _ = (p.ndisc_lladdr(1), p.ndisc_lladdr(2));
    assert_eq!(p.quoted(), p.data());
    let _ = p.verify_checksum(&src, &dst);
    quoted_all(p.quoted());
    if let Ok(r) = icmpv6::Repr::parse(&icmpv6::Packet::new_unchecked(msg), &src, &dst) {
        assert_eq!(r.is_error(), p.is_error());
        let mut out = vec![0u8; r.buffer_len()];
        r.emit(&mut icmpv6::Packet::new_unchecked(&mut out[..]), &src, &dst);
        let q = icmpv6::Packet::new_checked(&out[..]).expect("an emitted message checks");
        assert!(q.verify_checksum(&src, &dst));
        let again = icmpv6::Repr::parse(&icmpv6::Packet::new_unchecked(&out[..]), &src, &dst);
        assert_eq!(again.ok(), Some(r), "ICMPv6 Repr round trip");
    }
    let mut copy = msg.to_vec();
    let mut m = icmpv6::Packet::new_checked(&mut copy[..]).expect("same bytes");
    m.set_echo_ident(!p.echo_ident());
    let _ = (m.data_mut().len(), m.ndisc_options_mut().len());
    m.fill_checksum(&src, &dst);
    assert!(
        m.verify_checksum(&src, &dst),
        "fill_checksum makes the message verify"
    );
}

fn quoted_all(quote: &[u8]) {
    for q in [ip::parse_quoted_v4(quote), ip::parse_quoted_v6(quote)]
        .into_iter()
        .flatten()
    {
        assert!(q.ip_header_len <= q.l4_offset);
        assert!(
            q.l4_offset + ip::QUOTED_L4_LEN <= quote.len(),
            "the quoted L4 header is inside"
        );
        assert_eq!(q.src.is_ipv6(), q.dst.is_ipv6());
    }
}

fn arp_all(buf: &[u8]) {
    let Ok(p) = arp::Packet::new_checked(buf) else {
        return;
    };
    let _ = (
        p.hardware_type(),
        p.protocol_type(),
        p.hardware_len(),
        p.protocol_len(),
    );
    let _ = (
        p.operation(),
        p.source_hardware_addr(),
        p.source_protocol_addr(),
    );
    let _ = (p.target_hardware_addr(), p.target_protocol_addr());
    let r = arp::Repr::parse(&p).expect("a checked ARP packet parses");
    let mut out = vec![0u8; r.buffer_len()];
    r.emit(&mut arp::Packet::new_unchecked(&mut out[..]));
    let q = arp::Packet::new_checked(&out[..]).expect("an emitted ARP packet checks");
    assert_eq!(arp::Repr::parse(&q).ok(), Some(r), "ARP Repr round trip");
    let mut copy = buf.to_vec();
    let mut m = arp::Packet::new_checked(&mut copy[..]).expect("same bytes");
    let mac = ethernet::MacAddr([2, 0, 0, 0, 0, 1]);
    arp::make_reply_in_place(&mut m, mac);
    assert_eq!(m.operation(), arp::Operation::Reply);
    assert_eq!(m.source_hardware_addr(), mac);
    assert_eq!(m.target_protocol_addr(), p.source_protocol_addr());
    assert_eq!(m.source_protocol_addr(), p.target_protocol_addr());
}

/// The pcap reader on arbitrary bytes: bounded, every record inside the input, nothing after
/// an error, and what it reads written back with the writer helpers reads the same.
fn pcap_all(data: &[u8]) {
    let Ok(reader) = pcap::Reader::new(data) else {
        return;
    };
    let _ = (
        reader.linktype(),
        reader.linktype_field(),
        reader.snaplen(),
        reader.version(),
    );
    let _ = (reader.is_big_endian(), reader.precision());
    let mut copy = Vec::new();
    pcap::write_header(&mut copy, reader.linktype());
    let mut records = Vec::new();
    let mut items = 0usize;
    let mut errored = false;
    for item in reader.clone() {
        items += 1;
        assert!(!errored, "a record after an error");
        assert!(
            items <= data.len() / pcap::RECORD_HEADER_LEN + 1,
            "the reader is bounded"
        );
        match item {
            Ok(r) => {
                assert!(r.data.len() <= data.len() - pcap::HEADER_LEN);
                pcap::write_record(&mut copy, r.ts_sec, r.ts_frac, r.data);
                records.push(r);
            }
            Err(_) => errored = true,
        }
    }
    let again = pcap::Reader::new(&copy).expect("a written header reads");
    let reread: Vec<_> = again
        .collect::<Result<_, _>>()
        .expect("written records read");
    assert_eq!(reread.len(), records.len());
    for (x, y) in records.iter().zip(&reread) {
        assert_eq!((x.ts_sec, x.ts_frac, x.data), (y.ts_sec, y.ts_frac, y.data));
    }
}

// =============================================================================================
// mptcp_options
// =============================================================================================

/// Byte 0: segment flags (bit 0 SYN, 1 ACK, 2 RST, 3 payload); the rest, cut to 40 bytes, is
/// an option area for `mptcp::scan`, and also a single raw MPTCP option for
/// `MptcpOption::parse` (as given, and with its kind and length fixed up).
pub(crate) fn mptcp_options(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let seg = Segment {
        syn: flags & 1 != 0,
        ack: flags & 2 != 0,
        rst: flags & 4 != 0,
        has_payload: flags & 8 != 0,
    };
    let area = &rest[..rest.len().min(tcp::MAX_OPTIONS_LEN)];
    option_walk(area, seg);
    if let Ok(o) = MptcpOption::parse(area, seg) {
        mptcp_round_trip(o, seg);
    }
    if area.len() >= 3 {
        let mut raw = area.to_vec();
        raw[0] = tcp::option_kind::MPTCP;
        raw[1] = raw.len() as u8;
        if let Ok(o) = MptcpOption::parse(&raw, seg) {
            mptcp_round_trip(o, seg);
        }
        // The same option as the only one of an area (after two NOPs, as stacks pad it).
        let mut padded = vec![1u8, 1];
        padded.extend_from_slice(&raw[..raw.len().min(tcp::MAX_OPTIONS_LEN - 2)]);
        padded[3] = (padded.len() - 2) as u8;
        summary_agrees(&padded, seg);
    }
}

// =============================================================================================
// pipeline
// =============================================================================================

/// Workers in the harness.
pub(crate) const WORKERS: u16 = 2;
/// Flow table capacity per worker (small, so eviction and "full" paths run).
pub(crate) const FLOW_CAPACITY: usize = 32;
/// Token table capacity (small, so "table full" runs).
pub(crate) const TOKEN_CAPACITY: usize = 16;
/// At most this many frames per input.
pub(crate) const MAX_RECORDS: usize = 64;
/// Clock steps (ms) a record's control byte picks from: none, small, past the half-open,
/// closing and established timeouts, and a jump that wraps the coarse clock's half range.
pub(crate) const STEPS_MS: [u64; 8] = [0, 1, 100, 1_000, 11_000, 16_000, 601_000, 25 * 86_400_000];

/// Control byte of a frame: ingress port 1 (else 0).
pub(crate) const C_PORT1: u8 = 0x01;
/// Control byte: clock step index (bits 1–3), see [`STEPS_MS`].
pub(crate) const fn c_step(i: u8) -> u8 {
    (i & 7) << 1
}
/// Control byte: recompute the IPv4 header and TCP/ICMP checksums before processing.
pub(crate) const C_FIX: u8 = 0x10;
/// Control byte: the frame arrives on worker 1 (else 0); a handoff moves it.
pub(crate) const C_WORKER1: u8 = 0x20;
/// Control byte: run every worker's housekeeping (full sweep) first.
pub(crate) const C_SWEEP: u8 = 0x40;
/// First byte of an input: a sequence of records (else one frame, the first byte its control).
pub(crate) const SEQUENCE: u8 = 0x80;

/// The demo pool, built once (its Maglev tables are the expensive part).
pub(crate) fn pool() -> &'static PoolSnapshot {
    static POOL: OnceLock<PoolSnapshot> = OnceLock::new();
    POOL.get_or_init(|| testkit::demo_pool(3))
}

/// Pipeline input: byte 0 without [`SEQUENCE`] is the control byte of one frame, the rest;
/// with it, the rest is records `control, length (u16 BE), frame`, the last one cut short by
/// the end of the input.
pub(crate) fn pipeline(data: &[u8]) {
    let _ = run_pipeline(data);
}

/// [`pipeline`], returning the harness afterwards (for statistics).
pub(crate) fn run_pipeline(data: &[u8]) -> Harness {
    let mut h = Harness::new();
    let Some((&mode, rest)) = data.split_first() else {
        return h;
    };
    if mode & SEQUENCE == 0 {
        let _ = h.step(mode, rest);
        return h;
    }
    for (ctrl, frame) in records(rest).take(MAX_RECORDS) {
        let _ = h.step(ctrl, frame);
    }
    h
}

/// Splits the records of a sequence input.
pub(crate) fn records(mut rest: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        if rest.len() < 3 {
            return None;
        }
        let ctrl = rest[0];
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]]));
        let (frame, after) = rest[3..].split_at(len.min(rest.len() - 3));
        rest = after;
        Some((ctrl, frame))
    })
}

/// The records of a sequence input: (control byte, frame).
pub(crate) type Records = Vec<(u8, Vec<u8>)>;

/// Encodes a sequence input.
pub(crate) fn encode_sequence(records: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = vec![SEQUENCE];
    for (ctrl, f) in records {
        out.push(*ctrl);
        out.extend_from_slice(&(f.len().min(0xffff) as u16).to_be_bytes());
        out.extend_from_slice(&f[..f.len().min(0xffff)]);
    }
    out
}

/// Where the IP and upper-layer headers of a frame are (offsets validated against its length).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Located {
    pub(crate) v6: bool,
    pub(crate) l3: usize,
    pub(crate) l4: usize,
    pub(crate) end: usize,
    pub(crate) proto: u8,
    pub(crate) ttl: u8,
    pub(crate) src: IpAddr,
    pub(crate) dst: IpAddr,
    pub(crate) fragment: bool,
}

/// Finds the IP packet of a frame with the checked wire views (no checksum is verified).
pub(crate) fn locate(buf: &[u8]) -> Option<Located> {
    let l2 = ethernet::parse_l2(buf).ok()?;
    let l3 = l2.header_len;
    match l2.ethertype {
        EtherType::IPV4 => {
            let p = ipv4::Packet::new_checked(&buf[l3..]).ok()?;
            Some(Located {
                v6: false,
                l3,
                l4: l3 + p.header_len(),
                end: l3 + usize::from(p.total_len()),
                proto: p.next_header().0,
                ttl: p.hop_limit(),
                src: p.src_addr().into(),
                dst: p.dst_addr().into(),
                fragment: p.is_fragment(),
            })
        }
        EtherType::IPV6 => {
            let p = ipv6::Packet::new_checked(&buf[l3..]).ok()?;
            let w = p.extension_headers().ok()?;
            let body = l3 + ipv6::HEADER_LEN;
            let (l4, end) = (body + w.upper_offset, body + usize::from(p.payload_len()));
            if l4 > end || end > buf.len() {
                return None;
            }
            Some(Located {
                v6: true,
                l3,
                l4,
                end,
                proto: w.upper_protocol,
                ttl: p.hop_limit(),
                src: p.src_addr().into(),
                dst: p.dst_addr().into(),
                fragment: w.fragment.is_some_and(|f| !f.is_atomic()),
            })
        }
        _ => None,
    }
}

/// Recomputes the IPv4 header checksum and the TCP, ICMP or ICMPv6 checksum of a frame, so
/// mutated frames get past the checksum checks.
pub(crate) fn fix_checksums(buf: &mut [u8]) {
    let Some(loc) = locate(buf) else { return };
    if !loc.v6 {
        if let Ok(mut p) = ipv4::Packet::new_checked(&mut buf[loc.l3..]) {
            p.fill_checksum();
        }
    }
    let seg = &mut buf[loc.l4..loc.end];
    match loc.proto {
        6 => {
            if let Ok(mut t) = tcp::Packet::new_checked(seg) {
                t.fill_checksum(&loc.src, &loc.dst);
            }
        }
        1 | 58 if seg.len() >= 4 && (loc.proto == 58) == loc.v6 => {
            seg[2] = 0;
            seg[3] = 0;
            let mut sum = checksum::data(seg);
            if loc.v6 {
                let pseudo = checksum::pseudo_header_v6(
                    &addr_bytes(loc.src),
                    &addr_bytes(loc.dst),
                    58,
                    seg.len() as u32,
                );
                sum = checksum::combine(&[pseudo, sum]);
            }
            seg[2..4].copy_from_slice(&checksum::finish(sum).to_be_bytes());
        }
        _ => {}
    }
}

/// ICMP or ICMPv6 checksum of the message at `loc` verifies.
pub(crate) fn icmp_checksum_ok(buf: &[u8], loc: &Located) -> bool {
    let msg = &buf[loc.l4..loc.end];
    let mut sum = checksum::data(msg);
    if loc.v6 {
        let pseudo = checksum::pseudo_header_v6(
            &addr_bytes(loc.src),
            &addr_bytes(loc.dst),
            58,
            msg.len() as u32,
        );
        sum = checksum::combine(&[pseudo, sum]);
    }
    sum == 0xffff
}

/// What the checks need to know about a TCP frame before it is processed.
#[derive(Debug, Clone)]
pub(crate) struct TcpFacts {
    pub(crate) loc: Located,
    pub(crate) src_port: u16,
    pub(crate) dst_port: u16,
    pub(crate) checksum_ok: bool,
    /// TCP bytes 4..16 (sequence, acknowledgement, offset, flags, window).
    pub(crate) middle: [u8; 12],
    /// TCP bytes from 18 (urgent pointer, options, payload) to the end of the IP packet.
    pub(crate) tail: Vec<u8>,
}

impl TcpFacts {
    pub(crate) fn of(buf: &[u8]) -> Option<Self> {
        let loc = locate(buf)?;
        if loc.proto != 6 || loc.fragment {
            return None;
        }
        let seg = &buf[loc.l4..loc.end];
        let t = tcp::Packet::new_checked(seg).ok()?;
        let mut middle = [0u8; 12];
        middle.copy_from_slice(&seg[4..16]);
        Some(Self {
            loc,
            src_port: t.src_port(),
            dst_port: t.dst_port(),
            checksum_ok: t.verify_checksum(&loc.src, &loc.dst),
            middle,
            tail: seg[18..].to_vec(),
        })
    }
}

/// A demo backend address (of the 3-backend demo pool).
pub(crate) fn is_backend(addr: &IpAddr) -> bool {
    (0..3u16).any(|i| {
        *addr == IpAddr::V4(testkit::backend_v4(i)) || *addr == IpAddr::V6(testkit::backend_v6(i))
    })
}

fn vip_of_family(v6: bool) -> IpAddr {
    if v6 {
        testkit::VIP6.into()
    } else {
        testkit::VIP4.into()
    }
}

/// Two workers, one token table, the demo pool, a clock.
#[derive(Debug)]
pub(crate) struct Harness {
    pub(crate) workers: Vec<Worker>,
    pub(crate) shared: Shared,
    pub(crate) now: Ticks,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    pub(crate) fn new() -> Self {
        let workers = (0..WORKERS)
            .map(|id| {
                Worker::new(WorkerConfig {
                    id,
                    workers: WORKERS,
                    flows: FlowTableConfig {
                        capacity: FLOW_CAPACITY,
                        ..Default::default()
                    },
                    max_vips: 4,
                    max_backends: 8,
                    ..Default::default()
                })
            })
            .collect();
        Self {
            workers,
            shared: Shared::new(TokenTableConfig {
                capacity: TOKEN_CAPACITY,
                shards: 2,
            }),
            now: Ticks::from_secs(1),
        }
    }

    /// Processes one frame as the control byte says and checks every contract; returns the
    /// verdict and the frame as it leaves.
    pub(crate) fn step(&mut self, ctrl: u8, bytes: &[u8]) -> (Verdict, Vec<u8>) {
        let pool = pool();
        let step = STEPS_MS[usize::from(ctrl >> 1 & 7)];
        self.now = Ticks(self.now.0.saturating_add(step.saturating_mul(1_000_000)));
        if ctrl & C_SWEEP != 0 {
            for w in &mut self.workers {
                let buckets = w.flows.buckets();
                w.housekeeping(self.now, &self.shared, buckets);
            }
            self.check_tables();
        }
        let mut input = bytes.to_vec();
        if ctrl & C_FIX != 0 {
            fix_checksums(&mut input);
        }
        let ingress = PortId(ctrl & C_PORT1);
        let facts = TcpFacts::of(&input);
        let mut frame = VecFrame::new(&input);
        let mut w = usize::from(ctrl & C_WORKER1 != 0);
        let mut handoffs = 0;
        let verdict = loop {
            let v = process(
                &mut frame,
                ingress,
                self.now,
                &mut self.workers[w],
                &self.shared,
                pool,
            );
            self.check_tables();
            match v {
                Verdict::Handoff { worker } => {
                    let to = usize::from(worker);
                    assert!(
                        to < self.workers.len() && to != w,
                        "handoff from {w} to {to}"
                    );
                    assert_eq!(frame.data(), &input[..], "a handed-off frame is unchanged");
                    handoffs += 1;
                    assert!(
                        handoffs <= 1,
                        "the owning worker handed the frame off again"
                    );
                    w = to;
                }
                v => break v,
            }
        };
        let out = frame.data().to_vec();
        check_output(pool, ingress, &input, facts.as_ref(), verdict, &out);
        (verdict, out)
    }

    /// Counters balance, tables within their bounds.
    pub(crate) fn check_tables(&self) {
        for (i, w) in self.workers.iter().enumerate() {
            assert!(
                w.stats.balanced(),
                "worker {i}: counters do not balance: {:?}",
                w.stats
            );
            assert!(
                w.flows.len() <= w.flows.capacity(),
                "worker {i}: flow table over capacity"
            );
            assert_eq!(
                w.flows.iter().count(),
                w.flows.len(),
                "worker {i}: flow table len"
            );
        }
        assert!(
            self.shared.tokens.len() <= self.shared.tokens.capacity(),
            "token table over capacity"
        );
    }
}

/// The contracts of a frame that leaves (forwarded or replied).
fn check_output(
    pool: &PoolSnapshot,
    ingress: PortId,
    input: &[u8],
    facts: Option<&TcpFacts>,
    v: Verdict,
    out: &[u8],
) {
    match v {
        Verdict::Forward { port } => {
            let p = pool.port(port).expect("forwarded to a configured port");
            let l2 = ethernet::parse_l2(out).expect("a forwarded frame has an Ethernet header");
            assert_eq!(l2.vlan.map(|t| t.vid), p.vlan, "egress VLAN");
            assert_eq!(l2.src.0, p.mac, "egress source MAC");
            let loc = locate(out).expect("a forwarded frame is IP");
            check_ip_header(out, &loc);
            match loc.proto {
                6 => check_forwarded_tcp(out, &loc, facts.expect("forwarded TCP came in as TCP")),
                1 | 58 => assert!(
                    icmp_checksum_ok(out, &loc),
                    "forwarded ICMP checksum: {}",
                    hex(out)
                ),
                p => panic!("forwarded protocol {p}"),
            }
        }
        Verdict::Reply { port } => {
            assert_eq!(port, ingress, "replies leave by the ingress port");
            let l2 = ethernet::parse_l2(out).expect("a reply has an Ethernet header");
            if l2.ethertype == EtherType::ARP {
                let a =
                    arp::Packet::new_checked(&out[l2.header_len..]).expect("an ARP reply checks");
                assert_eq!(a.operation(), arp::Operation::Reply);
                return;
            }
            let loc = locate(out).expect("a reply is ARP or IP");
            check_ip_header(out, &loc);
            assert!(loc.proto == 1 || loc.proto == 58, "replies are ICMP");
            assert!(
                icmp_checksum_ok(out, &loc),
                "reply ICMP checksum: in {} out {}",
                hex(input),
                hex(out)
            );
        }
        Verdict::Drop(_) | Verdict::Punt => {}
        Verdict::Handoff { .. } => unreachable!("handoffs are followed"),
    }
}

fn check_ip_header(out: &[u8], loc: &Located) {
    if !loc.v6 {
        let p = ipv4::Packet::new_checked(&out[loc.l3..]).expect("located");
        assert!(
            p.verify_checksum(),
            "IPv4 header checksum of a frame that leaves: {}",
            hex(out)
        );
    }
}

fn check_forwarded_tcp(out: &[u8], loc: &Located, f: &TcpFacts) {
    let seg = &out[loc.l4..loc.end];
    let t = tcp::Packet::new_checked(seg).expect("forwarded TCP checks");
    if f.checksum_ok {
        assert!(
            t.verify_checksum(&loc.src, &loc.dst),
            "forwarded TCP checksum: {}",
            hex(out)
        );
    }
    assert_eq!(loc.v6, f.loc.v6, "family kept");
    assert_eq!(
        loc.ttl,
        f.loc.ttl.wrapping_sub(1),
        "TTL / hop limit decremented once"
    );
    assert_eq!(loc.end - loc.l3, f.loc.end - f.loc.l3, "IP length kept");
    assert_eq!(
        loc.l4 - loc.l3,
        f.loc.l4 - f.loc.l3,
        "IP header length kept"
    );
    assert_eq!(
        &seg[4..16],
        &f.middle[..],
        "sequence numbers, flags and window untouched"
    );
    assert_eq!(&seg[18..], &f.tail[..], "options and payload untouched");
    let to_backend = loc.src == f.loc.src && t.src_port() == f.src_port;
    if to_backend {
        assert!(
            is_backend(&loc.dst),
            "client -> backend goes to a backend: {}",
            loc.dst
        );
        assert_eq!(t.dst_port(), testkit::BACKEND_PORT);
    } else {
        assert_eq!(
            loc.dst, f.loc.dst,
            "backend -> client keeps the destination"
        );
        assert_eq!(t.dst_port(), f.dst_port);
        assert_eq!(
            loc.src,
            vip_of_family(loc.v6),
            "backend -> client comes from the VIP"
        );
        assert_eq!(t.src_port(), testkit::VIP_PORT);
    }
}

/// Lower-case hex of a byte string, for failure messages and reports.
pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// =============================================================================================
// pcap
// =============================================================================================

/// The frames of a classic pcap file with their timestamps in nanoseconds, up to the first
/// record that does not read (`trapeze_wire::pcap`).
pub(crate) fn read_pcap(data: &[u8]) -> Vec<(u64, Vec<u8>)> {
    let Ok(reader) = pcap::Reader::new(data) else {
        return Vec::new();
    };
    let scale = match reader.precision() {
        pcap::Precision::Micros => 1_000,
        pcap::Precision::Nanos => 1,
    };
    reader
        .map_while(Result::ok)
        .map(|r| {
            (
                u64::from(r.ts_sec) * 1_000_000_000 + u64::from(r.ts_frac) * scale,
                r.data.to_vec(),
            )
        })
        .collect()
}

// =============================================================================================
// Seeds
// =============================================================================================

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const SYNACK: u8 = 0x12;
const FINACK: u8 = 0x11;
const RSTACK: u8 = 0x14;
const PSHACK: u8 = 0x18;

fn c4(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 51, 100, last))
}

fn c6(last: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, last))
}

/// The demo backend Maglev gives a new connection from `client:port`.
pub(crate) fn backend_for(client: IpAddr, port: u16) -> u16 {
    let vip = vip_of_family(client.is_ipv6());
    let key = FlowKey::new(client, port, vip, testkit::VIP_PORT, 6);
    let id = VipId(u16::from(client.is_ipv6()));
    pool()
        .vip(id)
        .and_then(|v| v.maglev.lookup(key.hash()))
        .expect("the demo VIPs have backends")
        .0
}

fn common_options() -> Vec<u8> {
    // MSS 1460, SACK permitted, timestamps, window scale 7.
    vec![
        2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
    ]
}

fn fastclose(key: u64) -> Vec<u8> {
    let mut o = vec![30, 12, 0x70, 0];
    o.extend_from_slice(&key.to_be_bytes());
    o
}

fn dss_ack_map() -> Vec<u8> {
    // DSS with a 4-byte data ACK and a 4-byte mapping with checksum: A, M set.
    let mut o = vec![30, 20, 0x20, 0x05];
    o.extend_from_slice(&7u32.to_be_bytes()); // data ack
    o.extend_from_slice(&1000u32.to_be_bytes()); // dsn
    o.extend_from_slice(&1u32.to_be_bytes()); // subflow seq
    o.extend_from_slice(&100u16.to_be_bytes()); // data-level length
    o.extend_from_slice(&0u16.to_be_bytes()); // checksum
    o
}

fn add_addr_v4() -> Vec<u8> {
    // ADD_ADDR, IPv4, port, HMAC: 18 bytes.
    let mut o = vec![30, 18, 0x30, 2, 10, 1, 0, 11, 0x1f, 0x90];
    o.extend_from_slice(&0x0102_0304_0506_0708u64.to_be_bytes());
    o
}

/// Standalone MPTCP options (each with the segment flags byte of `mptcp_options`).
pub(crate) fn seed_options() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let emit = |o: &testkit::MptcpOpt| -> Vec<u8> {
        let mut b = [0u8; 40];
        let n = match o {
            testkit::MptcpOpt::Capable(c) => c.emit(&mut b).map_or(0, |_| c.buffer_len()),
            testkit::MptcpOpt::Join(j) => j.emit(&mut b).map_or(0, |_| j.buffer_len()),
        };
        b[..n].to_vec()
    };
    const F_SYN: u8 = 1;
    const F_SYNACK: u8 = 3;
    const F_ACK: u8 = 2;
    const F_ACK_DATA: u8 = 10;
    const F_RST: u8 = 6;
    let join_synack = testkit::MptcpOpt::Join(MpJoin::SynAck {
        backup: true,
        address_id: 2,
        sender_truncated_hmac: 0x1122_3344_5566_7788,
        sender_nonce: 0x99aa_bbcc,
    });
    let join_ack = testkit::MptcpOpt::Join(MpJoin::Ack {
        sender_hmac: [0x5a; 20],
    });
    let mut mpc_data = vec![30, 22, 0x10, 0x81];
    mpc_data.extend_from_slice(&1u64.to_be_bytes());
    mpc_data.extend_from_slice(&2u64.to_be_bytes());
    mpc_data.extend_from_slice(&100u16.to_be_bytes());
    let mut mpc_csum = mpc_data.clone();
    mpc_csum[1] = 24;
    mpc_csum.extend_from_slice(&0xbeefu16.to_be_bytes());
    let cases: Vec<(&str, u8, Vec<u8>)> = vec![
        ("mpc-syn", F_SYN, emit(&testkit::mpc_syn())),
        (
            "mpc-synack",
            F_SYNACK,
            emit(&testkit::mpc_synack(0x1111_2222_3333_4444)),
        ),
        (
            "mpc-ack",
            F_ACK,
            emit(&testkit::mpc_ack(0xaaaa, 0x1111_2222_3333_4444)),
        ),
        ("mpc-ack-data", F_ACK_DATA, mpc_data),
        ("mpc-ack-data-csum", F_ACK_DATA, mpc_csum),
        ("mpc-v0", F_SYN, vec![30, 4, 0x00, 0x81]),
        ("join-syn", F_SYN, emit(&testkit::join_syn(0xdead_beef))),
        ("join-synack", F_SYNACK, emit(&join_synack)),
        ("join-ack", F_ACK, emit(&join_ack)),
        ("dss", F_ACK_DATA, dss_ack_map()),
        ("dss-fin-ack64", F_ACK, {
            let mut o = vec![30, 12, 0x20, 0x13];
            o.extend_from_slice(&u64::MAX.to_be_bytes());
            o
        }),
        ("add-addr-v4", F_ACK, add_addr_v4()),
        ("add-addr-v6-echo", F_ACK, {
            let mut o = vec![30, 20, 0x31, 3];
            o.extend_from_slice(&Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x11).octets());
            o
        }),
        ("remove-addr", F_ACK, vec![30, 5, 0x40, 1, 2]),
        ("mp-prio", F_ACK, vec![30, 3, 0x51]),
        ("mp-fail", F_ACK, {
            let mut o = vec![30, 12, 0x60, 0];
            o.extend_from_slice(&5u64.to_be_bytes());
            o
        }),
        ("fastclose", F_ACK, fastclose(0x1111_2222_3333_4444)),
        ("tcprst", F_RST, vec![30, 4, 0x81, 3]),
        ("experimental", F_ACK, vec![30, 6, 0xf0, 1, 2, 3]),
    ];
    for (name, flags, opt) in cases {
        let mut v = vec![flags];
        v.extend_from_slice(&opt);
        out.push((format!("opt-{name}"), v));
        // The same after the usual options, in a full area.
        let mut area = vec![flags, 1, 1];
        area.extend_from_slice(&opt);
        area.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 8]);
        area.truncate(1 + tcp::MAX_OPTIONS_LEN);
        out.push((format!("area-{name}"), area));
    }
    // Conflicts and malformed walks.
    let mut both = vec![F_SYN];
    both.extend_from_slice(&emit(&testkit::mpc_syn()));
    both.extend_from_slice(&emit(&testkit::join_syn(7)));
    out.push(("area-mpc-and-join".into(), both));
    let mut twice = vec![F_ACK];
    twice.extend_from_slice(&fastclose(1));
    twice.extend_from_slice(&fastclose(2));
    out.push(("area-two-fastcloses".into(), twice));
    out.push(("area-truncated".into(), vec![F_SYN, 1, 30, 12, 0x10]));
    out.push(("area-silly-len".into(), vec![F_SYN, 2, 1, 30, 4, 0, 0x81]));
    out.push(("area-eol".into(), vec![F_SYN, 0, 30, 4, 0, 0x81]));
    out
}

/// Builds an Ethernet + IPv4 + ICMP frame.
fn icmpv4_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ttl: u8,
    msg: &[u8],
) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + msg.len()];
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&src_mac);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    ipv4::Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: ip::IpProtocol::ICMP,
        payload_len: msg.len(),
        hop_limit: ttl,
        dscp_ecn: 0,
        ident: 7,
        dont_frag: false,
    }
    .emit(&mut ipv4::Packet::new_unchecked(&mut f[14..34]));
    f[34..].copy_from_slice(msg);
    fix_checksums(&mut f);
    f
}

/// Builds an Ethernet + IPv6 + ICMPv6 frame.
fn icmpv6_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hl: u8,
    msg: &[u8],
) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 40 + msg.len()];
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&src_mac);
    f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    ipv6::Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: ip::IpProtocol::ICMPV6,
        payload_len: msg.len(),
        hop_limit: hl,
        traffic_class: 0,
        flow_label: 0,
    }
    .emit(&mut ipv6::Packet::new_unchecked(&mut f[14..54]));
    f[54..].copy_from_slice(msg);
    fix_checksums(&mut f);
    f
}

fn arp_frame(
    op: arp::Operation,
    sha: [u8; 6],
    spa: Ipv4Addr,
    tpa: Ipv4Addr,
    dst_mac: [u8; 6],
) -> Vec<u8> {
    let mut f = vec![0u8; 14 + arp::PACKET_LEN + 18];
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&sha);
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    arp::Repr {
        operation: op,
        source_hardware_addr: ethernet::MacAddr(sha),
        source_protocol_addr: spa,
        target_hardware_addr: ethernet::MacAddr([0; 6]),
        target_protocol_addr: tpa,
    }
    .emit(&mut arp::Packet::new_unchecked(
        &mut f[14..14 + arp::PACKET_LEN],
    ));
    f
}

/// The quote of a packet the gateway sent VIP -> client (for an ICMP error about the flow).
fn quote_of(client: IpAddr, client_port: u16) -> Vec<u8> {
    let mut s = TcpSpec::to_vip(client, client_port, ACK);
    std::mem::swap(&mut s.src, &mut s.dst);
    std::mem::swap(&mut s.src_port, &mut s.dst_port);
    s.payload = vec![0u8; 64];
    let f = s.build();
    f[14..].to_vec()
}

fn frag_needed(client: Ipv4Addr, client_port: u16, mtu: u16) -> Vec<u8> {
    let mut msg = vec![3, 4, 0, 0, 0, 0];
    msg.extend_from_slice(&mtu.to_be_bytes());
    msg.extend_from_slice(&quote_of(client.into(), client_port)[..28]);
    icmpv4_frame(
        testkit::CLIENT_MAC,
        testkit::PORT0_MAC,
        Ipv4Addr::new(203, 0, 113, 1),
        testkit::VIP4,
        60,
        &msg,
    )
}

fn packet_too_big(client: Ipv6Addr, client_port: u16) -> Vec<u8> {
    let mut msg = vec![2, 0, 0, 0, 0, 0, 0x05, 0x00];
    msg.extend_from_slice(&quote_of(client.into(), client_port)[..40 + 20]);
    let router = Ipv6Addr::new(0x2001, 0xdb8, 0xfe, 0, 0, 0, 0, 1);
    icmpv6_frame(
        testkit::CLIENT_MAC,
        testkit::PORT0_MAC,
        router,
        testkit::VIP6,
        60,
        &msg,
    )
}

fn echo_v4(dst: Ipv4Addr) -> Vec<u8> {
    let msg = [8, 0, 0, 0, 0x12, 0x34, 0, 1, b'p', b'i', b'n', b'g'];
    icmpv4_frame(
        testkit::CLIENT_MAC,
        testkit::PORT0_MAC,
        Ipv4Addr::new(198, 51, 100, 9),
        dst,
        64,
        &msg,
    )
}

fn echo_v6(dst: Ipv6Addr) -> Vec<u8> {
    let msg = [128, 0, 0, 0, 0x12, 0x34, 0, 1, b'p', b'i', b'n', b'g'];
    let src = Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 9);
    icmpv6_frame(testkit::CLIENT_MAC, testkit::PORT0_MAC, src, dst, 64, &msg)
}

fn neighbour_solicitation(target: Ipv6Addr) -> Vec<u8> {
    let mut msg = vec![135, 0, 0, 0, 0, 0, 0, 0];
    msg.extend_from_slice(&target.octets());
    msg.extend_from_slice(&[1, 1]);
    msg.extend_from_slice(&testkit::CLIENT_MAC);
    let t = target.octets();
    let solicited = Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(t[13]),
        u16::from_be_bytes([t[14], t[15]]),
    );
    let src = Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 9);
    let m = solicited.octets();
    let dst_mac = [0x33, 0x33, m[12], m[13], m[14], m[15]];
    icmpv6_frame(testkit::CLIENT_MAC, dst_mac, src, solicited, 255, &msg)
}

/// Inserts IPv6 extension headers (`chain`: (next-header value, body of 6 bytes)) in front of
/// the upper-layer header of an IPv6 frame built by the testkit.
fn with_ext_headers(frame: &[u8], chain: &[u8]) -> Vec<u8> {
    let upper = frame[14 + 6];
    let mut out = frame[..54].to_vec();
    let mut next = upper;
    let mut headers = Vec::new();
    for &kind in chain.iter().rev() {
        let mut h = vec![next, 0];
        if kind == 44 {
            h.extend_from_slice(&[0, 0, 0, 0, 0, 1]); // atomic fragment
        } else if kind == 43 {
            h.extend_from_slice(&[2, 0, 0, 0, 0, 0]); // routing type 2
        } else {
            h.extend_from_slice(&[1, 4, 0, 0, 0, 0]); // PadN
        }
        headers.splice(0..0, h);
        next = kind;
    }
    out[14 + 6] = chain.first().copied().unwrap_or(upper);
    out.extend_from_slice(&headers);
    out.extend_from_slice(&frame[54..]);
    let plen = (out.len() - 54) as u16;
    out[18..20].copy_from_slice(&plen.to_be_bytes());
    fix_checksums(&mut out);
    out
}

/// Single frames for the seeds: (name, ingress port, frame).
pub(crate) fn seed_frames() -> Vec<(String, u8, Vec<u8>)> {
    let mut v: Vec<(String, u8, Vec<u8>)> = Vec::new();
    let server_key = 0x1111_2222_3333_4444u64;
    for (fam, client) in [("v4", c4(1)), ("v6", c6(1))] {
        let b = backend_for(client, 40000);
        let to_vip = |flags| TcpSpec::to_vip(client, 40000, flags);
        let from_b = |flags| TcpSpec::from_backend(b, client, 40000, flags);
        v.push((format!("{fam}-syn"), 0, to_vip(SYN).build()));
        let mut s = to_vip(SYN).with_mptcp(testkit::mpc_syn());
        s.options.splice(0..0, common_options());
        v.push((format!("{fam}-syn-mpc-opts"), 0, s.build()));
        v.push((
            format!("{fam}-synack-mpc"),
            1,
            from_b(SYNACK)
                .with_mptcp(testkit::mpc_synack(server_key))
                .build(),
        ));
        v.push((
            format!("{fam}-ack-mpc"),
            0,
            to_vip(ACK)
                .with_mptcp(testkit::mpc_ack(7, server_key))
                .build(),
        ));
        let mut d = to_vip(PSHACK);
        d.options = dss_ack_map();
        d.payload = b"GET / HTTP/1.1\r\n\r\n".to_vec();
        v.push((format!("{fam}-data-dss"), 0, d.build()));
        v.push((format!("{fam}-fin"), 0, to_vip(FINACK).build()));
        v.push((format!("{fam}-backend-fin"), 1, from_b(FINACK).build()));
        let mut r = to_vip(RSTACK);
        r.options = fastclose(server_key);
        v.push((format!("{fam}-rst-fastclose"), 0, r.build()));
        let mut j = TcpSpec::to_vip(client, 41000, SYN).with_mptcp(testkit::join_syn(0xdead_beef));
        j.options.extend_from_slice(&[1, 1]);
        v.push((format!("{fam}-join-unknown"), 0, j.build()));
        let mut a = from_b(ACK);
        a.options = add_addr_v4();
        v.push((format!("{fam}-backend-add-addr"), 1, a.build()));
        let mut t = to_vip(SYN);
        t.ttl = 1;
        v.push((format!("{fam}-ttl1"), 0, t.build()));
        let mut tag = to_vip(SYN);
        tag.vlan = Some(0);
        v.push((format!("{fam}-priority-tag"), 0, tag.build()));
        let mut tag = to_vip(SYN);
        tag.vlan = Some(42);
        v.push((format!("{fam}-vlan42"), 0, tag.build()));
        let mut port0 = to_vip(SYN);
        port0.src_port = 0;
        v.push((format!("{fam}-port0"), 0, port0.build()));
        v.push((format!("{fam}-synfin"), 0, to_vip(SYN | 1).build()));
    }
    let c = Ipv4Addr::new(198, 51, 100, 1);
    v.push(("v4-frag-needed".into(), 0, frag_needed(c, 40000, 1400)));
    v.push(("v4-frag-needed-small".into(), 0, frag_needed(c, 40000, 296)));
    v.push((
        "v6-packet-too-big".into(),
        0,
        packet_too_big(Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 1), 40000),
    ));
    v.push(("v4-echo-vip".into(), 0, echo_v4(testkit::VIP4)));
    v.push(("v4-echo-own".into(), 0, echo_v4(Ipv4Addr::new(10, 0, 0, 1))));
    v.push(("v6-echo-vip".into(), 0, echo_v6(testkit::VIP6)));
    v.push(("v6-ns-vip".into(), 0, neighbour_solicitation(testkit::VIP6)));
    v.push((
        "v6-ns-own".into(),
        0,
        neighbour_solicitation(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1)),
    ));
    let bcast = [0xff; 6];
    let client = Ipv4Addr::new(198, 51, 100, 9);
    v.push((
        "arp-req-vip".into(),
        0,
        arp_frame(
            arp::Operation::Request,
            testkit::CLIENT_MAC,
            client,
            testkit::VIP4,
            bcast,
        ),
    ));
    v.push((
        "arp-req-own".into(),
        1,
        arp_frame(
            arp::Operation::Request,
            testkit::backend_mac(0),
            testkit::backend_v4(0),
            Ipv4Addr::new(10, 1, 0, 1),
            bcast,
        ),
    ));
    v.push((
        "arp-reply".into(),
        1,
        arp_frame(
            arp::Operation::Reply,
            testkit::backend_mac(1),
            testkit::backend_v4(1),
            Ipv4Addr::new(10, 1, 0, 1),
            testkit::PORT1_MAC,
        ),
    ));
    // IPv4 with options (record route), IPv4 fragment, UDP to the VIP.
    let syn = TcpSpec::to_vip(c4(2), 40001, SYN).build();
    let mut opts = syn[..14].to_vec();
    opts.extend_from_slice(&syn[14..34]);
    opts.extend_from_slice(&[7, 7, 4, 0, 0, 0, 0, 1]);
    opts.extend_from_slice(&syn[34..]);
    opts[14] = 0x47;
    let tl = (opts.len() - 14) as u16;
    opts[16..18].copy_from_slice(&tl.to_be_bytes());
    fix_checksums(&mut opts);
    v.push(("v4-ip-options".into(), 0, opts));
    let mut frag = syn.clone();
    frag[20] = 0x20; // MF
    fix_checksums(&mut frag);
    v.push(("v4-fragment".into(), 0, frag));
    let mut udp = syn.clone();
    udp[14 + 9] = 17;
    udp.truncate(14 + 20 + 8);
    udp[16..18].copy_from_slice(&28u16.to_be_bytes());
    udp[34 + 4..34 + 6].copy_from_slice(&8u16.to_be_bytes());
    fix_checksums(&mut udp);
    v.push(("v4-udp-vip".into(), 0, udp));
    // IPv6 with extension headers: hop-by-hop + destination options, an atomic fragment, a
    // type-2 routing header, and a type-0 one.
    let syn6 = TcpSpec::to_vip(c6(2), 40001, SYN).build();
    v.push((
        "v6-hbh-dstopts".into(),
        0,
        with_ext_headers(&syn6, &[0, 60]),
    ));
    v.push(("v6-atomic-frag".into(), 0, with_ext_headers(&syn6, &[44])));
    v.push(("v6-routing2".into(), 0, with_ext_headers(&syn6, &[43])));
    let mut rh0 = with_ext_headers(&syn6, &[43]);
    rh0[54 + 2] = 0;
    v.push(("v6-routing0".into(), 0, rh0));
    v
}

/// Sequences for the pipeline seeds: (name, records).
pub(crate) fn seed_sequences() -> Vec<(String, Records)> {
    let mut out = Vec::new();
    let server_key = 0x1111_2222_3333_4444u64;
    let client_key = 0x0000_0000_0000_aaaau64;
    for (fam, client, client2) in [("v4", c4(7), c4(8)), ("v6", c6(7), c6(8))] {
        let port = 41000;
        let b = backend_for(client, port);
        let to_vip = |flags| TcpSpec::to_vip(client, port, flags);
        let from_b = |flags| TcpSpec::from_backend(b, client, port, flags);
        let step = c_step(1);
        // Plain TCP: handshake, data both ways, close from both sides.
        let mut data = to_vip(PSHACK);
        data.payload = b"hello".to_vec();
        let mut reply = from_b(PSHACK);
        reply.payload = b"world".to_vec();
        out.push((
            format!("{fam}-plain-session"),
            vec![
                (step, to_vip(SYN).build()),
                (step | C_PORT1, from_b(SYNACK).build()),
                (step, to_vip(ACK).build()),
                (step, data.build()),
                (step | C_PORT1, reply.build()),
                (step, to_vip(FINACK).build()),
                (step | C_PORT1, from_b(FINACK).build()),
                (step, to_vip(ACK).build()),
                (c_step(5), to_vip(SYN).build()),
            ],
        ));
        // MPTCP: MP_CAPABLE handshake, a join on another client address, a fast close.
        let token = trapeze_core::crypto::token_from_key(server_key);
        let join_port = 50000;
        let join = |flags| TcpSpec::to_vip(client2, join_port, flags);
        let join_back = |flags| TcpSpec::from_backend(b, client2, join_port, flags);
        let mut fc = to_vip(RSTACK);
        fc.options = fastclose(server_key);
        out.push((
            format!("{fam}-mptcp-join-fastclose"),
            vec![
                (step, to_vip(SYN).with_mptcp(testkit::mpc_syn()).build()),
                (
                    step | C_PORT1,
                    from_b(SYNACK)
                        .with_mptcp(testkit::mpc_synack(server_key))
                        .build(),
                ),
                (
                    step,
                    to_vip(ACK)
                        .with_mptcp(testkit::mpc_ack(client_key, server_key))
                        .build(),
                ),
                (
                    step | C_WORKER1,
                    join(SYN).with_mptcp(testkit::join_syn(token)).build(),
                ),
                (step | C_PORT1, join_back(SYNACK).build()),
                (step, join(ACK).build()),
                (step, fc.build()),
                (
                    step,
                    TcpSpec::to_vip(client2, join_port + 1, SYN)
                        .with_mptcp(testkit::join_syn(token))
                        .build(),
                ),
            ],
        ));
        // Key mismatch in the third ACK, then expiry of everything.
        out.push((
            format!("{fam}-mptcp-key-mismatch-expiry"),
            vec![
                (step, to_vip(SYN).with_mptcp(testkit::mpc_syn()).build()),
                (
                    step | C_PORT1,
                    from_b(SYNACK)
                        .with_mptcp(testkit::mpc_synack(server_key))
                        .build(),
                ),
                (
                    step,
                    to_vip(ACK)
                        .with_mptcp(testkit::mpc_ack(client_key, server_key ^ 1))
                        .build(),
                ),
                (c_step(6) | C_SWEEP, to_vip(ACK).build()),
                (c_step(7) | C_SWEEP, to_vip(SYN).build()),
            ],
        ));
        // An ICMP error about a live flow, and the backend's reply without state.
        let icmp = match client {
            IpAddr::V4(a) => frag_needed(a, port, 1400),
            IpAddr::V6(a) => packet_too_big(a, port),
        };
        out.push((
            format!("{fam}-icmp-error-for-flow"),
            vec![
                (step, to_vip(SYN).build()),
                (step, icmp),
                (
                    step | C_PORT1,
                    TcpSpec::from_backend(b, client, port + 1, ACK).build(),
                ),
            ],
        ));
    }
    // Many SYNs: fills the small flow table (evictions, "full").
    let mut flood = Vec::new();
    for i in 0..48u16 {
        flood.push((
            c_step(0),
            TcpSpec::to_vip(c4((i % 200) as u8 + 1), 20000 + i, SYN).build(),
        ));
    }
    out.push(("v4-syn-flood".into(), flood));
    // Many MPTCP handshakes: fills the token table.
    let mut tokens = Vec::new();
    for i in 0..20u16 {
        let client = c4(100 + i as u8);
        let b = backend_for(client, 30000);
        tokens.push((
            0,
            TcpSpec::to_vip(client, 30000, SYN)
                .with_mptcp(testkit::mpc_syn())
                .build(),
        ));
        let key = 0x5555_0000_0000_0000 | u64::from(i);
        tokens.push((
            C_PORT1,
            TcpSpec::from_backend(b, client, 30000, SYNACK)
                .with_mptcp(testkit::mpc_synack(key))
                .build(),
        ));
    }
    out.push(("v4-token-table-fill".into(), tokens));
    out
}

/// Cuts the TCP payload of a frame to at most `keep` bytes, fixing the IP length and the
/// checksums (keeps capture-derived sequences short).
fn trim_tcp_payload(frame: &[u8], keep: usize) -> Vec<u8> {
    let Some(t) = TcpFacts::of(frame) else {
        return frame.to_vec();
    };
    let hl = tcp::Packet::new_checked(&frame[t.loc.l4..t.loc.end]).map_or(20, |p| p.header_len());
    let end = (t.loc.l4 + hl + keep).min(t.loc.end);
    let mut out = frame[..end].to_vec();
    let ip_len = (end - t.loc.l3) as u16;
    if t.loc.v6 {
        out[t.loc.l3 + 4..t.loc.l3 + 6].copy_from_slice(&(ip_len - 40).to_be_bytes());
    } else {
        out[t.loc.l3 + 2..t.loc.l3 + 4].copy_from_slice(&ip_len.to_be_bytes());
    }
    fix_checksums(&mut out);
    out
}

/// A capture pair of `make-captures.sh` (client side before DNAT, server side after) as a
/// pipeline sequence on the demo topology: the client's packets to the VIP (port 0) and the
/// server's packets (port 1), merged by time, with the capture's addresses mapped onto the demo
/// pool (client 192.0.2.x -> 198.51.100.x, 2001:db8:1::x -> 2001:db8:c::x; VIP -> demo VIP;
/// server -> the demo backend Maglev picks for the first subflow), payloads cut to 16 bytes.
pub(crate) fn capture_sequence(client_pcap: &[u8], server_pcap: &[u8]) -> Records {
    let (cli, srv) = (read_pcap(client_pcap), read_pcap(server_pcap));
    let map4 = |a: [u8; 4], b: u16| -> [u8; 4] {
        match a {
            [192, 0, 2, x] => [198, 51, 100, x],
            [203, 0, 113, 10] => testkit::VIP4.octets(),
            [198, 51, 100, 10] => testkit::backend_v4(b).octets(),
            [198, 51, 100, x] => [10, 9, 9, x],
            other => other,
        }
    };
    let map6 = |a: [u8; 16], b: u16| -> [u8; 16] {
        let v = Ipv6Addr::from(a).segments();
        match v {
            [0x2001, 0xdb8, 1, 0, 0, 0, 0, x] => {
                Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, x).octets()
            }
            [0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 0x10] => testkit::VIP6.octets(),
            [0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x10] => testkit::backend_v6(b).octets(),
            [0x2001, 0xdb8, 2, 0, 0, 0, 0, x] => {
                Ipv6Addr::new(0xfd09, 0, 0, 0, 0, 0, 0, x).octets()
            }
            _ => a,
        }
    };
    // The backend: Maglev's pick for the first client SYN.
    let mut backend = 0;
    for (_, f) in &cli {
        if let Some(t) = TcpFacts::of(f) {
            if f[t.loc.l4 + 13] & 0x12 == 0x02 {
                let client = match t.loc.src {
                    IpAddr::V4(a) => IpAddr::V4(map4(a.octets(), 0).into()),
                    IpAddr::V6(a) => IpAddr::V6(map6(a.octets(), 0).into()),
                };
                backend = backend_for(client, t.src_port);
                break;
            }
        }
    }
    let from_client = |a: &IpAddr| match a {
        IpAddr::V4(a) => a.octets()[..3] == [192, 0, 2],
        IpAddr::V6(a) => a.segments()[..3] == [0x2001, 0xdb8, 1],
    };
    let mut picked: Vec<(u64, u8, Vec<u8>)> = Vec::new();
    for (side, frames) in [(0u8, &cli), (1u8, &srv)] {
        for (ts, f) in frames.iter() {
            let Some(loc) = locate(f) else { continue };
            if from_client(&loc.src) != (side == 0) {
                continue;
            }
            let mut g = trim_tcp_payload(f, 16);
            let (s, d) = if loc.v6 {
                (loc.l3 + 8, loc.l3 + 24)
            } else {
                (loc.l3 + 12, loc.l3 + 16)
            };
            for at in [s, d] {
                if loc.v6 {
                    let mut a = [0u8; 16];
                    a.copy_from_slice(&g[at..at + 16]);
                    g[at..at + 16].copy_from_slice(&map6(a, backend));
                } else {
                    let a = [g[at], g[at + 1], g[at + 2], g[at + 3]];
                    g[at..at + 4].copy_from_slice(&map4(a, backend));
                }
            }
            let (src_mac, dst_mac) = if side == 0 {
                (testkit::CLIENT_MAC, testkit::PORT0_MAC)
            } else {
                (testkit::backend_mac(backend), testkit::PORT1_MAC)
            };
            g[0..6].copy_from_slice(&dst_mac);
            g[6..12].copy_from_slice(&src_mac);
            fix_checksums(&mut g);
            picked.push((*ts, side, g));
        }
    }
    picked.sort_by_key(|(ts, _, _)| *ts);
    picked
        .into_iter()
        .take(MAX_RECORDS)
        .map(|(_, side, g)| (c_step(1) | side, g))
        .collect()
}

/// The whole seed corpus: (target, file name, bytes).
pub(crate) fn seed_corpus() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, port, frame) in seed_frames() {
        out.push(("wire_frame", name.clone(), frame.clone()));
        let mut single = vec![port & 1];
        single.extend_from_slice(&frame);
        out.push(("pipeline", name.clone(), single));
        if let Some(t) = TcpFacts::of(&frame) {
            let opts = &frame[t.loc.l4 + tcp::HEADER_LEN
                ..t.loc.l4
                    + tcp::Packet::new_checked(&frame[t.loc.l4..t.loc.end])
                        .map_or(20, |p| p.header_len())];
            if !opts.is_empty() {
                let flags = frame[t.loc.l4 + 13];
                let seg_flags = u8::from(flags & 2 != 0)
                    | u8::from(flags & 0x10 != 0) << 1
                    | u8::from(flags & 4 != 0) << 2
                    | u8::from(t.loc.end > t.loc.l4 + 20 + opts.len()) << 3;
                let mut v = vec![seg_flags];
                v.extend_from_slice(opts);
                out.push(("mptcp_options", name, v));
            }
        }
    }
    for (name, records) in seed_sequences() {
        out.push(("pipeline", name, encode_sequence(&records)));
    }
    for (name, v) in seed_options() {
        out.push(("mptcp_options", name, v));
    }
    out
}

/// A small xorshift64* generator for the fixed-seed sweeps.
#[derive(Debug, Clone)]
pub(crate) struct XorShift(pub(crate) u64);

impl XorShift {
    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
    pub(crate) fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }
}

/// A libFuzzer-style mutation of `input`: bit flips, byte sets, interesting values, inserts,
/// deletes, truncation, duplication of a block.
pub(crate) fn mutate(rng: &mut XorShift, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let n = v.len();
        match rng.below(8) {
            0 if n > 0 => {
                let i = rng.below(n);
                v[i] ^= 1 << rng.below(8);
            }
            1 if n > 0 => {
                let i = rng.below(n);
                v[i] = rng.byte();
            }
            2 if n > 0 => {
                let i = rng.below(n);
                v[i] = [
                    0, 1, 2, 4, 5, 0x0f, 0x10, 0x1e, 0x40, 0x45, 0x60, 0x7f, 0x80, 0xfe, 0xff,
                ][rng.below(15)];
            }
            3 => {
                let i = rng.below(n + 1);
                let b = rng.byte();
                v.insert(i, b);
            }
            4 if n > 0 => {
                let i = rng.below(n);
                let len = 1 + rng.below(8).min(n - i - 1);
                v.drain(i..(i + len).min(n));
            }
            5 if n > 0 => v.truncate(rng.below(n)),
            6 if n > 1 => {
                let i = rng.below(n);
                let len = 1 + rng.below(16).min(n - i - 1);
                let block = v[i..i + len].to_vec();
                let at = rng.below(v.len() + 1);
                v.splice(at..at, block);
            }
            _ if n >= 2 => {
                let i = rng.below(n - 1);
                let x = u16::from_be_bytes([v[i], v[i + 1]])
                    .wrapping_add(rng.below(5) as u16)
                    .wrapping_sub(2);
                v[i..i + 2].copy_from_slice(&x.to_be_bytes());
            }
            _ => v.push(rng.byte()),
        }
    }
    v
}
