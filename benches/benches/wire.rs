//! Wire-format microbenchmarks: the header parse of a typical MPTCP data segment, and the
//! one-pass MPTCP option scan the pipeline runs on every TCP segment.
//!
//! Inputs are built with the crate's own emitters, so they are valid by construction:
//!
//! * a data segment: Ethernet + IPv4 (20) + TCP (20 + NOP NOP Timestamps + DSS with a 32-bit data
//!   ACK and a 64-bit mapping + NOP NOP = 56) + 1400 bytes of payload, the shape Linux sends;
//! * an MP_CAPABLE third ACK (NOP NOP TS + MP_CAPABLE 20);
//! * an MP_JOIN SYN (MSS, SACK permitted, TS, NOP, WS, MP_JOIN 12: the Linux SYN layout).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use trapeze_wire::ethernet::{self, EtherType};
use trapeze_wire::ip::IpProtocol;
use trapeze_wire::ipv4;
use trapeze_wire::mptcp::{
    self, DataAck, Dss, DssMapping, MpCapable, MpJoin, MpcFlags, MptcpOption, Segment,
};
use trapeze_wire::tcp::{self, TcpFlags, TcpOption};

const TIMESTAMP: TcpOption<'static> = TcpOption::Timestamp {
    tsval: 0x1234_5678,
    tsecr: 0x9abc_def0,
};

/// Emits `options` into a 40-byte area; returns the area and the used length.
fn option_area(tcp_options: &[TcpOption<'_>], mptcp_option: &MptcpOption<'_>) -> ([u8; 40], usize) {
    let mut area = [0u8; 40];
    let mut rest = &mut area[..];
    for option in tcp_options {
        rest = option.emit(rest).expect("fits");
    }
    rest = mptcp_option.emit(rest).expect("fits");
    let used = 40 - rest.len();
    (area, used)
}

fn dss() -> MptcpOption<'static> {
    MptcpOption::Dss(Dss {
        data_fin: false,
        data_ack: Some(DataAck {
            value: 0x0bad_cafe,
            is_64bit: false,
        }),
        mapping: Some(DssMapping {
            dsn: 0x0123_4567_89ab_cdef,
            dsn_is_64bit: true,
            subflow_seq: 1,
            data_len: 1400,
            checksum: None,
        }),
    })
}

/// NOP NOP TS, DSS (22), NOP NOP: 36 bytes.
fn dss_ts_area() -> ([u8; 40], usize) {
    let (mut area, used) = option_area(
        &[TcpOption::NoOperation, TcpOption::NoOperation, TIMESTAMP],
        &dss(),
    );
    area[used] = 1;
    area[used + 1] = 1;
    (area, used + 2)
}

/// A full Ethernet/IPv4/TCP data segment carrying DSS + timestamps and 1400 bytes of payload.
fn data_segment() -> Vec<u8> {
    let (area, opt_len) = dss_ts_area();
    let tcp_len = 20 + opt_len + 1400;
    let ip_len = 20 + tcp_len;
    let mut frame = vec![0u8; ethernet::HEADER_LEN + ip_len];
    frame[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    frame[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 2]);
    frame[12..14].copy_from_slice(&EtherType::IPV4.0.to_be_bytes());
    let src = Ipv4Addr::new(198, 51, 100, 7);
    let dst = Ipv4Addr::new(203, 0, 113, 10);
    {
        let mut ip = ipv4::Packet::new_unchecked(&mut frame[ethernet::HEADER_LEN..]);
        ip.set_version(4);
        ip.set_header_len(20);
        ip.set_total_len(ip_len as u16);
        ip.set_dont_frag(true);
        ip.set_hop_limit(64);
        ip.set_next_header(IpProtocol::TCP);
        ip.set_src_addr(src);
        ip.set_dst_addr(dst);
        ip.fill_checksum();
    }
    let mut seg = tcp::Packet::new_unchecked(&mut frame[ethernet::HEADER_LEN + 20..]);
    seg.set_src_port(40000);
    seg.set_dst_port(443);
    seg.set_seq_number(1);
    seg.set_ack_number(1);
    seg.set_header_len(20 + opt_len);
    seg.set_flags(TcpFlags::ACK | TcpFlags::PSH);
    seg.set_window_len(502);
    seg.options_mut().copy_from_slice(&area[..opt_len]);
    seg.fill_checksum(&IpAddr::V4(src), &IpAddr::V4(dst));
    frame
}

/// Parses the three headers the way the pipeline does and returns what it keys on.
#[inline(never)]
fn parse_headers(frame: &[u8]) -> Option<(u32, u16, u16, TcpFlags, usize)> {
    let l2 = ethernet::parse_l2(frame).ok()?;
    if l2.ethertype != EtherType::IPV4 {
        return None;
    }
    let ip = ipv4::Packet::new_checked(frame.get(l2.header_len..)?).ok()?;
    if ip.next_header() != IpProtocol::TCP || ip.is_fragment() {
        return None;
    }
    let seg = tcp::Packet::new_checked(ip.payload()).ok()?;
    Some((
        u32::from(ip.src_addr()),
        seg.src_port(),
        seg.dst_port(),
        seg.flags(),
        seg.options().len(),
    ))
}

fn bench_parse(c: &mut Criterion) {
    let frame = data_segment();
    assert!(parse_headers(&frame).is_some());

    let mut group = c.benchmark_group("wire");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse_eth_ipv4_tcp", |b| {
        b.iter(|| parse_headers(black_box(&frame)))
    });
    group.bench_function("parse_eth_ipv4_tcp_and_scan", |b| {
        b.iter(|| {
            let frame = black_box(&frame[..]);
            let l2 = ethernet::parse_l2(frame).ok()?;
            let ip = ipv4::Packet::new_checked(&frame[l2.header_len..]).ok()?;
            let seg = tcp::Packet::new_checked(ip.payload()).ok()?;
            Some(mptcp::scan(seg.options(), Segment::of(&seg)))
        })
    });
    group.finish();
}

fn bench_scan(c: &mut Criterion) {
    let (dss_area, dss_len) = dss_ts_area();
    let (mpc_area, mpc_len) = option_area(
        &[TcpOption::NoOperation, TcpOption::NoOperation, TIMESTAMP],
        &MptcpOption::MpCapable(MpCapable {
            version: 1,
            flags: MpcFlags::HMAC_SHA256,
            sender_key: Some(0x1112_1314_1516_1718),
            receiver_key: Some(0x0102_0304_0506_0708),
            data_len: None,
            checksum: None,
        }),
    );
    let (mpj_area, mpj_len) = option_area(
        &[
            TcpOption::MaxSegmentSize(1460),
            TcpOption::SackPermitted,
            TIMESTAMP,
            TcpOption::NoOperation,
            TcpOption::WindowScale(7),
        ],
        &MptcpOption::MpJoin(MpJoin::Syn {
            backup: false,
            address_id: 2,
            receiver_token: 0x7357_966a,
            sender_nonce: 0xdead_beef,
        }),
    );
    let data = Segment::new(TcpFlags::ACK, true);
    let ack = Segment::new(TcpFlags::ACK, false);
    let syn = Segment::new(TcpFlags::SYN, false);
    let summary = mptcp::scan(&dss_area[..dss_len], data);
    assert!(summary.seen_mptcp && summary.ignored == 0 && !summary.tcp_options_malformed);
    assert!(mptcp::scan(&mpc_area[..mpc_len], ack).capable.is_some());
    assert!(mptcp::scan(&mpj_area[..mpj_len], syn).join.is_some());

    let mut group = c.benchmark_group("mptcp_scan");
    group.throughput(Throughput::Elements(1));
    group.bench_function("dss_ts", |b| {
        b.iter(|| mptcp::scan(black_box(&dss_area[..dss_len]), data))
    });
    group.bench_function("mp_capable_ack", |b| {
        b.iter(|| mptcp::scan(black_box(&mpc_area[..mpc_len]), ack))
    });
    group.bench_function("mp_join_syn", |b| {
        b.iter(|| mptcp::scan(black_box(&mpj_area[..mpj_len]), syn))
    });
    group.finish();
}

criterion_group!(benches, bench_parse, bench_scan);
criterion_main!(benches);
