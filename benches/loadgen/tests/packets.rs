//! The generator's packets parse with trapeze-wire, their checksums verify, and a handshake
//! driven through the real pipeline teaches the gateway the token the join generator uses.

use core::net::IpAddr;

use trapeze_core::crypto;
use trapeze_core::pipeline::{
    process, Event, Frame, Shared, VecFrame, Verdict, Worker, WorkerConfig,
};
use trapeze_core::pool::{Encap, OuterSource, PortId};
use trapeze_core::tables::token::TokenTableConfig;
use trapeze_core::testkit;
use trapeze_core::Ticks;
use trapeze_loadgen::packets::{
    classify, client_key, server_key, tunnel_len, Generator, Kind, Responder, Topology,
    DATA_FRAME_LEN, GUE_PORT, MAX_FRAME,
};
use trapeze_wire::mptcp::{self, Segment};
use trapeze_wire::{ethernet, ipv4, tcp};

/// Parses an untagged IPv4/TCP frame, checks both checksums, returns the TCP header fields and
/// the MPTCP summary.
fn parse(frame: &[u8]) -> (ipv4::Packet<&[u8]>, tcp::Packet<&[u8]>, mptcp::MptcpSummary) {
    let eth = ethernet::Frame::new_checked(frame).expect("ethernet");
    assert_eq!(eth.ethertype(), ethernet::EtherType::IPV4);
    let ip = ipv4::Packet::new_checked(&frame[14..]).expect("ipv4");
    assert!(ip.verify_checksum(), "IPv4 header checksum");
    assert_eq!(usize::from(ip.total_len()), frame.len() - 14);
    let seg = &frame[14 + ip.header_len()..];
    let t = tcp::Packet::new_checked(seg).expect("tcp");
    assert!(
        t.verify_checksum(&IpAddr::V4(ip.src_addr()), &IpAddr::V4(ip.dst_addr())),
        "TCP checksum"
    );
    let summary = mptcp::scan(t.options(), Segment::of(&t));
    (ip, t, summary)
}

/// Runs one frame through the pipeline, returns the verdict and the frame as it leaves.
fn through(
    frame: &[u8],
    port: PortId,
    w: &mut Worker,
    shared: &Shared,
    pool: &trapeze_core::pool::PoolSnapshot,
) -> (Verdict, Vec<u8>) {
    let mut f = VecFrame::new(frame);
    let v = process(&mut f, port, Ticks(1_000_000), w, shared, pool);
    (v, f.data().to_vec())
}

#[test]
fn data_packets_are_64_bytes_valid_and_distinct_per_flow() {
    let g = Generator::new(Topology::default());
    let mut a = [0u8; MAX_FRAME];
    let mut b = [0u8; MAX_FRAME];
    for flow in [0u64, 1, 49_999, 50_000, 999_999] {
        let n = g.data(&mut a, flow, 0xdead_beef);
        assert_eq!(n, DATA_FRAME_LEN);
        let (ip, t, m) = parse(&a[..n]);
        assert_eq!(ip.dst_addr(), testkit::VIP4);
        assert_eq!(t.dst_port(), testkit::VIP_PORT);
        assert!(t.ack() && !t.syn());
        assert!(!m.seen_mptcp);
        assert_eq!(t.seq_number(), 0xdead_beef);
        assert_eq!(classify(&a[..n]), Some((Kind::Data, 0xdead_beef)));
        let m2 = g.data(&mut b, flow + 1, 0xdead_beef);
        let (ip2, t2, _) = parse(&b[..m2]);
        assert_ne!(
            (ip.src_addr(), t.src_port()),
            (ip2.src_addr(), t2.src_port())
        );
    }
}

#[test]
fn endpoints_round_trip() {
    let base = Topology::default().conn_base;
    for n in [0u64, 1, 49_999, 50_000, 1_234_567] {
        let (a, p) = trapeze_loadgen::packets::endpoint(base, n);
        assert_eq!(
            trapeze_loadgen::packets::endpoint_index(base, a, p),
            Some(n)
        );
    }
    assert_eq!(
        trapeze_loadgen::packets::endpoint_index(
            base,
            core::net::Ipv4Addr::new(10, 0, 0, 1),
            10_000
        ),
        None
    );
}

#[test]
fn syn_flood_and_join_packets() {
    let g = Generator::new(Topology::default());
    let mut f = [0u8; MAX_FRAME];
    let n = g.syn(&mut f, 123_456, 7);
    let (_, t, m) = parse(&f[..n]);
    assert!(t.syn() && !t.ack());
    assert!(!m.seen_mptcp);
    assert_eq!(classify(&f[..n]), Some((Kind::Syn, 7)));

    let n = g.conn_data(&mut f, 5, 13);
    let (ip, t, _) = parse(&f[..n]);
    assert_eq!((ip.src_addr(), t.src_port()), g.conn_endpoint(5));
    assert!(t.ack() && !t.syn());
    assert_eq!(classify(&f[..n]), Some((Kind::Data, 13)));

    let n = g.mpc_syn(&mut f, 5, 9);
    let (_, t, m) = parse(&f[..n]);
    assert!(t.syn());
    let c = m.capable.expect("MP_CAPABLE");
    assert_eq!(c.version, 1);
    assert!(c.sender_key.is_none());

    let n = g.join(&mut f, 77, 0x1234_5678, 11);
    let (_, t, m) = parse(&f[..n]);
    assert!(t.syn());
    match m.join.expect("MP_JOIN") {
        mptcp::MpJoin::Syn { receiver_token, .. } => assert_eq!(receiver_token, 0x1234_5678),
        other => panic!("{other:?}"),
    }
    assert_eq!(classify(&f[..n]), Some((Kind::Join, 11)));
}

#[test]
fn handshake_through_the_pipeline_learns_the_token_the_joins_use() {
    // The generator's topology is the test kit's demo pool: VIP 192.0.2.10:80 on port 0.
    let pool = testkit::demo_pool(4);
    let shared = Shared::new(TokenTableConfig::default());
    let mut w = Worker::new(WorkerConfig::default());
    let g = Generator::new(Topology::default());
    let r = Responder::default();
    let conn = 42;

    // Client -> gateway: MP_CAPABLE SYN.
    let mut buf = [0u8; MAX_FRAME];
    let n = g.mpc_syn(&mut buf, conn, 1000);
    let (v, syn) = through(&buf[..n], PortId(0), &mut w, &shared, &pool);
    assert!(matches!(v, Verdict::Forward { port: PortId(1) }), "{v:?}");
    let (ip, _, _) = parse(&syn);
    let backend = ip.dst_addr();

    // Backend -> gateway: the responder's SYN/ACK with the server key.
    let n = r.synack(&mut buf, &syn).expect("an MP_CAPABLE SYN");
    let (ip, t, m) = parse(&buf[..n]);
    assert_eq!(ip.src_addr(), backend);
    assert!(t.syn() && t.ack());
    let (client, cport) = g.conn_endpoint(conn);
    assert_eq!(ip.dst_addr(), client);
    assert_eq!(
        m.capable.unwrap().sender_key,
        Some(server_key(client, cport))
    );
    let (v, synack) = through(&buf[..n], PortId(1), &mut w, &shared, &pool);
    assert!(matches!(v, Verdict::Forward { port: PortId(0) }), "{v:?}");
    assert_eq!(w.stats.events[Event::TokenLearned as usize], 1);

    // Gateway -> client -> gateway: the third ACK with both keys.
    let n = g
        .third_ack(&mut buf, &synack)
        .expect("an MP_CAPABLE SYN/ACK");
    let (ip, t, m) = parse(&buf[..n]);
    assert_eq!(ip.dst_addr(), testkit::VIP4);
    assert!(t.ack() && !t.syn());
    let c = m.capable.expect("MP_CAPABLE");
    assert_eq!(c.sender_key, Some(client_key(client, cport)));
    assert_eq!(c.receiver_key, Some(server_key(client, cport)));
    // Its stamp is the SYN's: the receiver measures the whole handshake.
    assert_eq!(classify(&buf[..n]), Some((Kind::MpcAck, 1001)));
    let (v, acked) = through(&buf[..n], PortId(0), &mut w, &shared, &pool);
    assert_eq!(
        g.conn_of(&acked),
        Some(conn),
        "the far side names the connection"
    );
    assert!(matches!(v, Verdict::Forward { port: PortId(1) }), "{v:?}");

    // The token crypto.rs derives from the server key is the one the join generator uses,
    // and the gateway routes such a join to the connection's backend.
    let token = g.conn_token(conn);
    assert_eq!(token, crypto::token_from_key(server_key(client, cport)));
    let n = g.join(&mut buf, 0, token, 5);
    let (v, join) = through(&buf[..n], PortId(0), &mut w, &shared, &pool);
    assert!(matches!(v, Verdict::Forward { port: PortId(1) }), "{v:?}");
    let (ip, _, _) = parse(&join);
    assert_eq!(
        ip.dst_addr(),
        backend,
        "the join reaches the connection's backend"
    );
    assert_eq!(w.stats.events[Event::JoinRouted as usize], 1);
}

/// What a DSR gateway tunnels is still the generator's own packet to it: the real pipeline
/// encapsulates a data packet (IPIP, or GUE to the generator's GUE port) and `classify` finds
/// its kind and timestamp inside.
#[test]
fn data_tunnelled_by_a_dsr_vip_is_recognised() {
    for (encap, overhead) in [(Encap::Ipip, 20), (Encap::Gue { port: GUE_PORT }, 32)] {
        let pool = testkit::dsr_pool(4, encap, OuterSource::Gateway);
        let shared = Shared::new(TokenTableConfig {
            capacity: 1024,
            shards: 4,
        });
        let mut w = Worker::new(WorkerConfig::default());
        let g = Generator::new(Topology {
            vip_port: testkit::BACKEND_PORT,
            ..Topology::default()
        });
        let mut a = [0u8; MAX_FRAME];
        let n = g.data(&mut a, 7, 0x1234_5678);
        let sent = classify(&a[..n]).expect("the generator's own frame");
        assert_eq!(tunnel_len(&a[..n]), 0);
        let (v, out) = through(&a[..n], PortId(0), &mut w, &shared, &pool);
        assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
        assert_eq!(out.len(), n + overhead, "{encap:?}");
        assert_eq!(tunnel_len(&out), overhead, "{encap:?}");
        assert_eq!(classify(&out), Some(sent), "{encap:?}");
    }
}
