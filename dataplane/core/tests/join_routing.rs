//! Stateless join ports and gateway-originated ADD_ADDR (announce modes): join routing that
//! needs no token, on any instance and after a restart, and the ADD_ADDR frames byte by byte.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use trapeze_core::crypto::add_addr_hmac;
use trapeze_core::pipeline::announce::{AnnounceOption, MAX_SENDS, WAIT_PACKETS};
use trapeze_core::pipeline::{DropReason, Event, Verdict};
use trapeze_core::pool::{
    Announce, BackendId, BackendState, Encap, OuterSource, PoolError, PoolSnapshot, PoolSpec,
    PortId, ANNOUNCE_ADDRESS_ID,
};
use trapeze_core::testkit::*;
use trapeze_core::Ticks;
use trapeze_wire::mptcp::{AddAddr, MptcpOption, Segment};
use trapeze_wire::tcp;

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const SYN_ACK: u8 = 0x12;
const PSH_ACK: u8 = 0x18;

/// Backend `i`'s join port on every test VIP.
fn join_port(i: u16) -> u16 {
    9000 + i
}

/// One gateway instance; every frame's counters must balance.
type Gw = Gateway;

fn c4(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 51, 100, last))
}

fn c6(last: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, last))
}

fn vip_of(client: IpAddr) -> IpAddr {
    if client.is_ipv6() {
        VIP6.into()
    } else {
        VIP4.into()
    }
}

fn backend_addr(i: u16, v6: bool) -> IpAddr {
    if v6 {
        backend_v6(i).into()
    } else {
        backend_v4(i).into()
    }
}

/// The demo NAT pool with join ports 9000 + i on both VIPs, announcing `announce`.
fn nat_spec(n: u16, announce: Announce) -> PoolSpec {
    let mut spec = demo_spec(n);
    for v in spec.vips.iter_mut().flatten() {
        v.join_ports = (0..n).map(|i| (BackendId(i), join_port(i))).collect();
        v.announce = announce;
    }
    spec
}

fn nat_pool(n: u16, announce: Announce) -> PoolSnapshot {
    PoolSnapshot::build(nat_spec(n, announce)).unwrap()
}

/// The IP header's destination and the TCP destination port of a frame (no VLAN).
fn dst_of(frame: &[u8]) -> (IpAddr, u16) {
    if u16::from_be_bytes([frame[12], frame[13]]) == 0x86dd {
        let mut a = [0u8; 16];
        a.copy_from_slice(&frame[14 + 24..14 + 40]);
        let p = u16::from_be_bytes([frame[54 + 2], frame[54 + 3]]);
        (Ipv6Addr::from(a).into(), p)
    } else {
        let a = Ipv4Addr::new(frame[30], frame[31], frame[32], frame[33]);
        let p = u16::from_be_bytes([frame[34 + 2], frame[34 + 3]]);
        (a.into(), p)
    }
}

fn src_of(frame: &[u8]) -> (IpAddr, u16) {
    if u16::from_be_bytes([frame[12], frame[13]]) == 0x86dd {
        let mut a = [0u8; 16];
        a.copy_from_slice(&frame[14 + 8..14 + 24]);
        let p = u16::from_be_bytes([frame[54], frame[55]]);
        (Ipv6Addr::from(a).into(), p)
    } else {
        let a = Ipv4Addr::new(frame[26], frame[27], frame[28], frame[29]);
        let p = u16::from_be_bytes([frame[34], frame[35]]);
        (a.into(), p)
    }
}

/// A client segment to the VIP's join port of backend `b`.
fn to_join_port(client: IpAddr, port: u16, b: u16, flags: u8) -> TcpSpec {
    let mut s = TcpSpec::to_vip(client, port, flags);
    s.dst_port = join_port(b);
    s
}

#[test]
fn a_join_to_a_join_port_reaches_that_backend_on_any_instance_with_no_token() {
    for client in [c4(10), c6(10)] {
        let v6 = client.is_ipv6();
        for b in 0..3u16 {
            // Two instances that never saw the connection, one with three workers.
            for workers in [1u16, 3] {
                let mut g = Gw::new(nat_pool(3, Announce::Off), workers);
                let syn = to_join_port(client, 41000 + b, b, SYN).with_mptcp(join_syn(0xdead_beef));
                let (v, out) = g.client(&syn);
                assert_eq!(v, Verdict::Forward { port: PortId(1) });
                assert_eq!(dst_of(&out), (backend_addr(b, v6), BACKEND_PORT));
                assert_eq!(g.events(Event::JoinPortRouted), 1);
                assert_eq!(g.events(Event::JoinRouted), 0, "no token lookup");
                // The server's SYN/ACK goes back from the join port, not the VIP's port.
                let (v, out) = g.backend(&TcpSpec::from_backend(b, client, 41000 + b, SYN_ACK));
                assert_eq!(v, Verdict::Forward { port: PortId(0) });
                assert_eq!(src_of(&out), (vip_of(client), join_port(b)));
                // The VIP's own port is untouched by it: a backend packet of another 5-tuple
                // still returns from port 80.
                let (_, out) = g.backend(&TcpSpec::from_backend(b, client, 50000, ACK));
                assert_eq!(src_of(&out).1, VIP_PORT);
            }
        }
    }
}

#[test]
fn a_join_port_subflow_survives_a_restart_its_packets_are_adopted_by_the_port() {
    let client = c4(11);
    let mut g = Gw::new(nat_pool(3, Announce::Off), 1);
    // A mid-stream segment of a subflow the (restarted) gateway never saw.
    let (v, out) = g.client(&to_join_port(client, 42000, 2, PSH_ACK));
    assert_eq!(v, Verdict::Forward { port: PortId(1) });
    assert_eq!(dst_of(&out).0, backend_addr(2, false));
    assert_eq!(g.events(Event::NonSynMiss), 1);
    // Adopted: the server's answer now returns from the join port.
    let (_, out) = g.backend(&TcpSpec::from_backend(2, client, 42000, ACK));
    assert_eq!(src_of(&out), (vip_of(client), join_port(2)));
}

#[test]
fn a_join_port_of_a_backend_that_is_down_refuses_new_subflows_only() {
    let client = c4(12);
    let mut spec = nat_spec(3, Announce::Off);
    let mut g = Gw::new(PoolSnapshot::build(spec.clone()).unwrap(), 1);
    let (v, _) = g.client(&to_join_port(client, 43000, 1, SYN).with_mptcp(join_syn(1)));
    assert_eq!(v, Verdict::Forward { port: PortId(1) });
    if let Some(b) = spec.backends[1].as_mut() {
        b.state = BackendState::Down;
    }
    g.pool = PoolSnapshot::build(spec).unwrap();
    // The established subflow keeps going; a new one is refused.
    let (v, _) = g.client(&to_join_port(client, 43000, 1, ACK));
    assert_eq!(v, Verdict::Forward { port: PortId(1) });
    let (v, _) = g.client(&to_join_port(client, 43001, 1, SYN).with_mptcp(join_syn(1)));
    assert_eq!(v, Verdict::Drop(DropReason::JoinOwnerDown));
}

#[test]
fn dsr_join_ports_tunnel_the_subflow_unchanged_to_the_ports_backend() {
    let mut spec = dsr_spec(3, Encap::Ipip, OuterSource::Gateway);
    for v in spec.vips.iter_mut().flatten() {
        v.join_ports = (0..3).map(|i| (BackendId(i), join_port(i))).collect();
    }
    let mut g = Gw::new(PoolSnapshot::build(spec).unwrap(), 2);
    let mut syn = to_join_port(c4(13), 44000, 2, SYN).with_mptcp(join_syn(7));
    syn.dst_port = join_port(2);
    let (v, out) = g.client(&syn);
    assert_eq!(v, Verdict::Forward { port: PortId(1) });
    // Outer destination: backend 2; the inner packet still goes to VIP:join port.
    assert_eq!(dst_of(&out).0, backend_addr(2, false));
    let inner = &out[14 + 20..];
    assert_eq!(&inner[16..20], &VIP4.octets());
    assert_eq!(u16::from_be_bytes([inner[22], inner[23]]), join_port(2));
}

#[test]
fn join_port_configurations_that_cannot_work_are_refused_with_the_reason() {
    let refused = |f: &dyn Fn(&mut PoolSpec)| {
        let mut spec = nat_spec(3, Announce::Off);
        f(&mut spec);
        match PoolSnapshot::build(spec) {
            Err(PoolError::JoinPorts { reason, .. }) => reason,
            other => panic!("expected a join-port error, got {other:?}"),
        }
    };
    assert!(
        refused(&|s| s.vips[0].as_mut().unwrap().join_ports[0].1 = VIP_PORT).contains("vip's port")
    );
    assert!(refused(&|s| {
        let v = s.vips[0].as_mut().unwrap();
        v.join_ports[1].1 = v.join_ports[0].1;
    })
    .contains("two backends"));
    assert!(refused(&|s| {
        let v = s.vips[0].as_mut().unwrap();
        v.backends.retain(|b| b.0 != 2);
    })
    .contains("not a member"));
    assert!(refused(&|s| {
        let v = s.vips[0].as_mut().unwrap();
        v.announce = Announce::JoinPorts;
        v.join_ports.pop();
    })
    .contains("has no join port"));
    // A join port that is another VIP's endpoint on the same address.
    assert!(refused(&|s| {
        let mut other = s.vips[0].clone().unwrap();
        other.id.0 = 2;
        other.name = "other".into();
        other.port = join_port(1);
        other.join_ports.clear();
        other.backends.clear();
        s.vips.push(Some(other));
    })
    .contains("own port"));
    // DSR: the gateway cannot announce join ports (the servers must listen on them).
    let mut spec = dsr_spec(3, Encap::Ipip, OuterSource::Gateway);
    for v in spec.vips.iter_mut().flatten() {
        v.join_ports = (0..3).map(|i| (BackendId(i), join_port(i))).collect();
        v.announce = Announce::JoinPorts;
    }
    assert!(matches!(
        PoolSnapshot::build(spec),
        Err(PoolError::JoinPorts { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Announcements
// ---------------------------------------------------------------------------------------------

/// The ADD_ADDR an announcement frame carries, after checking the frame's IP and TCP headers
/// (checksums included) against the expected endpoints and numbers.
fn parse_announcement(
    frame: &[u8],
    vip: IpAddr,
    client: IpAddr,
    cport: u16,
) -> (u32, u32, AddAddr) {
    assert_eq!(&frame[0..6], &CLIENT_MAC);
    assert_eq!(&frame[6..12], &PORT0_MAC);
    assert_eq!(src_of(frame), (vip, VIP_PORT));
    assert_eq!(dst_of(frame), (client, cport));
    let l4 = if client.is_ipv6() { 54 } else { 34 };
    if !client.is_ipv6() {
        assert_eq!(trapeze_wire::checksum::data(&frame[14..34]), 0xffff);
    }
    let t = tcp::Packet::new_checked(&frame[l4..]).unwrap();
    assert!(t.verify_checksum(&vip, &client));
    assert_eq!(t.flags().0, ACK);
    assert!(t.payload().is_empty());
    let opts = t.options();
    let len = opts[1] as usize;
    assert_eq!(opts[0], 30);
    assert!(opts[len..].iter().all(|&b| b == 1), "NOP padding");
    let seg = Segment {
        syn: false,
        ack: true,
        rst: false,
        has_payload: false,
    };
    match MptcpOption::parse(&opts[..len], seg).unwrap() {
        MptcpOption::AddAddr(a) => (t.seq_number(), t.ack_number(), a),
        o => panic!("not an ADD_ADDR: {o:?}"),
    }
}

/// A NAT MPTCP handshake; returns the backend and the third ACK's (seq, ack).
fn nat_handshake(g: &mut Gw, client: IpAddr, port: u16, ck: u64, sk: u64) -> u16 {
    let (v, out) = g.client(&TcpSpec::to_vip(client, port, SYN).with_mptcp(mpc_syn()));
    assert!(matches!(v, Verdict::Forward { .. }));
    let b = (0..16)
        .find(|&i| backend_addr(i, client.is_ipv6()) == dst_of(&out).0)
        .unwrap();
    let mut sa = TcpSpec::from_backend(b, client, port, SYN_ACK).with_mptcp(mpc_synack(sk));
    sa.seq = 5000;
    sa.ack = 1001;
    let _ = g.backend(&sa);
    assert!(
        g.announcements().is_empty(),
        "nothing before the keys are confirmed"
    );
    let mut a = TcpSpec::to_vip(client, port, ACK).with_mptcp(mpc_ack(ck, sk));
    a.seq = 1001;
    a.ack = 5001;
    let (v, _) = g.client(&a);
    assert!(matches!(v, Verdict::Forward { .. }));
    b
}

/// A client segment acknowledging server data (the server has the connection): the moment the
/// gateway sends its ADD_ADDR.
fn acking_server_data(client: IpAddr, port: u16, seq: u32, ack: u32) -> TcpSpec {
    let mut d = TcpSpec::to_vip(client, port, PSH_ACK);
    d.seq = seq;
    d.ack = ack;
    d.payload = vec![7u8; 100];
    d
}

/// Server data on its way to the client (NAT): the moment the gateway sends its ADD_ADDR,
/// numbered right after it.
fn server_data(b: u16, client: IpAddr, port: u16, seq: u32, ack: u32) -> TcpSpec {
    let mut d = TcpSpec::from_backend(b, client, port, PSH_ACK);
    d.seq = seq;
    d.ack = ack;
    d.payload = vec![9u8; 100];
    d
}

/// The client's echo of our ADD_ADDR.
fn echo_of(a: &AddAddr) -> Vec<u8> {
    let e = AddAddr {
        echo: true,
        truncated_hmac: None,
        ..*a
    };
    let mut b = vec![0u8; e.buffer_len()];
    e.emit(&mut b).unwrap();
    b
}

#[test]
fn nat_join_port_announcement_carries_the_hmac_of_the_learned_keys_and_its_echo_is_absorbed() {
    for client in [c4(20), c6(20)] {
        let (ck, sk) = (0x1111_2222_3333_4444u64, 0x5555_6666_7777_8888u64);
        let mut g = Gw::new(nat_pool(3, Announce::JoinPorts), 2);
        let b = nat_handshake(&mut g, client, 45000, ck, sk);
        assert!(
            g.announcements().is_empty(),
            "not before the server has the connection"
        );
        // NAT: client packets do not start it; the server's first segment does.
        let _ = g.client(&acking_server_data(client, 45000, 1001, 5001));
        assert!(g.announcements().is_empty());
        let _ = g.backend(&server_data(b, client, 45000, 5901, 1101));
        let ann = g.announcements();
        assert_eq!(ann.len(), 1);
        let mut buf = [0u8; 128];
        let n = ann[0].emit(&mut buf).unwrap();
        assert_eq!(n, ann[0].frame_len());
        let (seq, ack, opt) = parse_announcement(&buf[..n], vip_of(client), client, 45000);
        assert_eq!(
            (seq, ack),
            (6001, 1101),
            "right after the server's segment, acking what the server acked"
        );
        assert_eq!(opt.addr, vip_of(client));
        assert_eq!(opt.port, Some(join_port(b)));
        assert_eq!(opt.address_id, ANNOUNCE_ADDRESS_ID);
        let hmac = add_addr_hmac(
            sk,
            ck,
            ANNOUNCE_ADDRESS_ID,
            &vip_of(client),
            Some(join_port(b)),
        );
        assert_eq!(opt.truncated_hmac, Some(hmac));
        assert_eq!(g.events(Event::AnnounceSent), 1);

        // The client echoes it (with a DSS-free pure ACK): the echo is absorbed.
        let mut e = TcpSpec::to_vip(client, 45000, ACK);
        e.options = echo_of(&opt);
        e.seq = 1101;
        e.ack = 6001;
        let (v, out) = g.client(&e);
        assert!(matches!(v, Verdict::Forward { .. }));
        let l4 = if client.is_ipv6() { 54 } else { 34 };
        let t = tcp::Packet::new_checked(&out[l4..]).unwrap();
        assert!(t.options().iter().all(|&b| b == 1), "echo NOPed");
        assert!(t.verify_checksum(&backend_addr(b, client.is_ipv6()), &client));
        assert_eq!(g.events(Event::AnnounceEchoed), 1);
        // Done: later packets announce nothing, even long after.
        g.now = Ticks::from_secs(5);
        let _ = g.client(&TcpSpec::to_vip(client, 45000, PSH_ACK));
        assert!(g.announcements().is_empty());
        // The join to the announced port lands on the connection's backend.
        let (_, out) =
            g.client(&to_join_port(client, 45001, b, SYN).with_mptcp(join_syn(0x0bad_cafe)));
        assert_eq!(
            dst_of(&out),
            (backend_addr(b, client.is_ipv6()), BACKEND_PORT)
        );
    }
}

#[test]
fn an_unechoed_announcement_is_sent_again_with_fresh_numbers_a_bounded_number_of_times() {
    let client = c4(21);
    let mut g = Gw::new(nat_pool(3, Announce::JoinPorts), 1);
    let b = nat_handshake(&mut g, client, 46000, 1, 2);
    let _ = g.backend(&server_data(b, client, 46000, 5001, 1001));
    assert_eq!(g.announcements().len(), 1);
    // Too soon: nothing.
    let _ = g.backend(&server_data(b, client, 46000, 5101, 1001));
    assert!(g.announcements().is_empty());
    let mut t = 1.0;
    let mut sent = 1;
    for round in 0..5u32 {
        t += 0.3;
        g.now = Ticks((t * 1e9) as u64);
        // Client packets never send it in NAT mode.
        let _ = g.client(&acking_server_data(client, 46000, 1001, 9000));
        assert!(g.announcements().is_empty());
        let _ = g.backend(&server_data(
            b,
            client,
            46000,
            9000 + round * 100,
            1001 + round,
        ));
        for a in g.announcements() {
            sent += 1;
            assert_eq!((a.seq, a.ack), (9100 + round * 100, 1001 + round));
        }
    }
    assert_eq!(sent, MAX_SENDS as u64);
    assert_eq!(g.events(Event::AnnounceUnechoed), 1);
}

#[test]
fn backend_mode_announces_the_servers_own_address_in_nat_and_dsr() {
    // NAT: the backend's address and port (8080, the VIP is on 80).
    let client = c4(22);
    let mut g = Gw::new(nat_pool(3, Announce::Backend), 1);
    let b = nat_handshake(&mut g, client, 47000, 3, 4);
    let _ = g.backend(&server_data(b, client, 47000, 5001, 1001));
    let a = g.announcements();
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].option.add_addr().unwrap().addr, backend_addr(b, false));
    assert_eq!(a[0].option.add_addr().unwrap().port, Some(BACKEND_PORT));
    assert_eq!(
        a[0].option.add_addr().unwrap().truncated_hmac,
        Some(add_addr_hmac(
            4,
            3,
            ANNOUNCE_ADDRESS_ID,
            &backend_addr(b, false),
            Some(BACKEND_PORT)
        ))
    );

    // DSR: keys from the third ACK; the VIP's port is the server's, so no port.
    let mut spec = dsr_spec(3, Encap::Ipip, OuterSource::Gateway);
    for v in spec.vips.iter_mut().flatten() {
        v.announce = Announce::Backend;
    }
    let mut g = Gw::new(PoolSnapshot::build(spec).unwrap(), 1);
    let client = c6(22);
    let mut s = TcpSpec::to_vip(client, 47001, SYN).with_mptcp(mpc_syn());
    s.dst_port = BACKEND_PORT;
    s.seq = 7000;
    let (_, out) = g.client(&s);
    let backend = dst_of(&out).0;
    let mut a = TcpSpec::to_vip(client, 47001, ACK).with_mptcp(mpc_ack(5, 6));
    a.dst_port = BACKEND_PORT;
    a.seq = 7001;
    a.ack = 33;
    let _ = g.client(&a);
    // The server has sent nothing yet: after WAIT_PACKETS client packets the ADD_ADDR goes anyway.
    for i in 1..=u32::from(WAIT_PACKETS) {
        assert!(g.announcements().is_empty());
        let mut d = acking_server_data(client, 47001, 7001 + (i - 1) * 100, 33);
        d.dst_port = BACKEND_PORT;
        let _ = g.client(&d);
    }
    let ann = g.announcements();
    assert_eq!(ann.len(), 1);
    assert_eq!(ann[0].option.add_addr().unwrap().addr, backend);
    assert_eq!(ann[0].option.add_addr().unwrap().port, None);
    let last = 7001 + (u32::from(WAIT_PACKETS) - 1) * 100;
    assert_eq!(
        (ann[0].seq, ann[0].ack),
        (
            33 + trapeze_core::pipeline::announce::DSR_SEQ_AHEAD,
            last + 100
        )
    );
    assert_eq!(ann[0].src_port, BACKEND_PORT);
}

#[test]
fn off_path_mode_asks_the_client_to_keep_the_gateway_subflow_as_a_backup_once_it_took_the_address()
{
    // NAT: the echo is absorbed; the MP_PRIO follows the server's next segment.
    let client = c4(23);
    let mut g = Gw::new(nat_pool(3, Announce::Backend), 1);
    let b = nat_handshake(&mut g, client, 48000, 7, 8);
    let _ = g.backend(&server_data(b, client, 48000, 5001, 1001));
    let a = g.announcements();
    let opt = *a[0].option.add_addr().unwrap();
    let mut e = TcpSpec::to_vip(client, 48000, ACK);
    e.options = echo_of(&opt);
    e.seq = 1001;
    e.ack = 5101;
    let _ = g.client(&e);
    assert!(g.announcements().is_empty());
    let _ = g.backend(&server_data(b, client, 48000, 5101, 1001));
    let a = g.announcements();
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].option, AnnounceOption::Backup);
    assert_eq!((a[0].seq, a[0].ack), (5201, 1001));
    let mut buf = [0u8; 128];
    let n = a[0].emit(&mut buf).unwrap();
    let t = tcp::Packet::new_checked(&buf[34..n]).unwrap();
    assert!(t.verify_checksum(&vip_of(client), &client));
    // Kind 30, length 3, subtype MP_PRIO (5) with B set, then NOP padding.
    assert_eq!(&t.options()[..4], &[30, 3, 0x51, 1]);
    assert_eq!(g.events(Event::PrioBackupSent), 1);
    // Nothing more afterwards.
    g.now = Ticks::from_secs(9);
    let _ = g.backend(&server_data(b, client, 48000, 5201, 1001));
    let _ = g.client(&acking_server_data(client, 48000, 1001, 5301));
    assert!(g.announcements().is_empty());

    // DSR: it goes at once, from the echo's own numbers.
    let mut spec = dsr_spec(3, Encap::Ipip, OuterSource::Gateway);
    for v in spec.vips.iter_mut().flatten() {
        v.announce = Announce::Backend;
    }
    let mut g = Gw::new(PoolSnapshot::build(spec).unwrap(), 1);
    let client = c4(24);
    let mut s = TcpSpec::to_vip(client, 48001, SYN).with_mptcp(mpc_syn());
    s.dst_port = BACKEND_PORT;
    s.seq = 100;
    let _ = g.client(&s);
    let mut a = TcpSpec::to_vip(client, 48001, ACK).with_mptcp(mpc_ack(9, 10));
    a.dst_port = BACKEND_PORT;
    a.seq = 101;
    a.ack = 1;
    let _ = g.client(&a);
    let mut d = acking_server_data(client, 48001, 101, 501);
    d.dst_port = BACKEND_PORT;
    let _ = g.client(&d);
    let ann = g.announcements();
    let opt = *ann[0].option.add_addr().unwrap();
    let mut e = TcpSpec::to_vip(client, 48001, ACK);
    e.dst_port = BACKEND_PORT;
    e.options = echo_of(&opt);
    e.seq = 201;
    e.ack = 901;
    let _ = g.client(&e);
    let ann = g.announcements();
    assert_eq!(ann.len(), 1);
    assert_eq!(ann[0].option, AnnounceOption::Backup);
    assert_eq!(
        (ann[0].seq, ann[0].ack),
        (901 + trapeze_core::pipeline::announce::DSR_SEQ_AHEAD, 201)
    );
}

/// The forwarded SYN/ACK's TCP options (after checking its TCP checksum from the VIP to the
/// client) and the MP_CAPABLE flags byte in them.
fn forwarded_syn_ack(out: &[u8], client: IpAddr) -> (Vec<u8>, u8) {
    let l4 = if client.is_ipv6() { 54 } else { 34 };
    let t = tcp::Packet::new_checked(&out[l4..]).unwrap();
    assert!(t.verify_checksum(&vip_of(client), &client), "checksum");
    let opts = t.options().to_vec();
    let at = opts.iter().position(|&b| b == 30).expect("MP_CAPABLE");
    (opts.clone(), opts[at + 3])
}

/// A NAT SYN/ACK of an MPTCP connection through `pool` (the option at an odd offset after a
/// NOP when `odd`); returns the forwarded frame and the options the backend sent.
fn syn_ack_through(g: &mut Gw, client: IpAddr, port: u16, odd: bool) -> (Vec<u8>, Vec<u8>) {
    let (_, out) = g.client(&TcpSpec::to_vip(client, port, SYN).with_mptcp(mpc_syn()));
    let b = (0..16)
        .find(|&i| backend_addr(i, client.is_ipv6()) == dst_of(&out).0)
        .unwrap();
    let mut sa = TcpSpec::from_backend(b, client, port, SYN_ACK);
    if odd {
        sa.options.push(1);
    }
    let sa = sa.with_mptcp(mpc_synack(0x0102_0304_0506_0708));
    let sent = sa.build();
    let (v, out) = g.backend(&sa);
    assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
    let l4 = if client.is_ipv6() { 54 } else { 34 };
    let opts = tcp::Packet::new_checked(&sent[l4..])
        .unwrap()
        .options()
        .to_vec();
    (out, opts)
}

#[test]
fn the_c_flag_is_set_in_the_forwarded_syn_ack_of_vips_that_announce_checksum_by_delta() {
    for client in [c4(30), c6(30)] {
        for odd in [false, true] {
            for (announce, setting, expect) in [
                (Announce::JoinPorts, None, true),
                (Announce::Backend, None, true),
                (Announce::Off, None, false), // token mode (join ports unannounced)
                (Announce::JoinPorts, Some(false), false),
            ] {
                let mut spec = nat_spec(2, announce);
                for v in spec.vips.iter_mut().flatten() {
                    v.deny_join_initial = setting;
                }
                let mut g = Gw::new(PoolSnapshot::build(spec).unwrap(), 1);
                let port = 41000 + u16::from(odd);
                let (out, sent) = syn_ack_through(&mut g, client, port, odd);
                let (opts, flags) = forwarded_syn_ack(&out, client);
                assert_eq!(flags & 0x20 != 0, expect, "{announce:?} {setting:?}");
                // Nothing else in the options changed.
                let diff: Vec<usize> = (0..opts.len()).filter(|&i| opts[i] != sent[i]).collect();
                assert_eq!(diff.len(), usize::from(expect), "{diff:?}");
                if expect {
                    // Only the C bit: the flags byte is the one that differs.
                    assert_eq!(opts[diff[0]] ^ sent[diff[0]], 0x20);
                }
                assert_eq!(g.events(Event::DenyJoinInitialSet), u64::from(expect));
                // A retransmitted SYN/ACK is flagged too (the client may see only that one).
                let (out, _) = syn_ack_through(&mut g, client, port, odd);
                assert_eq!(forwarded_syn_ack(&out, client).1 & 0x20 != 0, expect);
                assert!(g.balanced());
            }
        }
    }
}

#[test]
fn token_mode_vips_leave_the_syn_ack_alone_and_dsr_cannot_ask_for_the_c_flag() {
    let mut g = Gw::new(demo_pool(2), 1);
    let (out, sent) = syn_ack_through(&mut g, c4(31), 42000, false);
    assert_eq!(forwarded_syn_ack(&out, c4(31)).0, sent);
    assert_eq!(g.events(Event::DenyJoinInitialSet), 0);
    // Explicitly on: set even without announcements.
    let mut spec = demo_spec(2);
    for v in spec.vips.iter_mut().flatten() {
        v.deny_join_initial = Some(true);
    }
    let mut g = Gw::new(PoolSnapshot::build(spec).unwrap(), 1);
    let (out, _) = syn_ack_through(&mut g, c4(31), 42000, false);
    assert_ne!(forwarded_syn_ack(&out, c4(31)).1 & 0x20, 0);
    // DSR: the SYN/ACK never passes; asking for the flag is refused with the reason.
    let mut spec = dsr_spec(2, Encap::Ipip, OuterSource::Gateway);
    for v in spec.vips.iter_mut().flatten() {
        v.deny_join_initial = Some(true);
    }
    match PoolSnapshot::build(spec) {
        Err(PoolError::JoinPorts { reason, .. }) => {
            assert!(reason.contains("allow_join_initial_addr_port"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    // DSR with announcements: resolved off (nothing the gateway could rewrite).
    let mut spec = dsr_spec(2, Encap::Ipip, OuterSource::Gateway);
    for v in spec.vips.iter_mut().flatten() {
        v.announce = Announce::Backend;
    }
    let pool = PoolSnapshot::build(spec).unwrap();
    assert!(pool.vips.iter().flatten().all(|v| !v.deny_join_initial));
}
