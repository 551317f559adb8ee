//! Scenario tests of `process()`: a deterministic simulation of clients, backends and several
//! workers sharing one token table, with the clock in the test's hands (quinn's `Pair` idea).

use core::net::{IpAddr, Ipv4Addr};

use trapeze_core::crypto::token_from_key;
use trapeze_core::flow::addr_bytes;
use trapeze_core::pipeline::{process, steer, DropReason, Event, Frame, VecFrame, Verdict};
use trapeze_core::pool::{BackendId, BackendState, PoolSnapshot, PortId};
use trapeze_core::testkit::*;
use trapeze_wire::{checksum, ipv4, ipv6, tcp};

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const SYNACK: u8 = 0x12;
const FIN_ACK: u8 = 0x11;
const RST: u8 = 0x04;

/// N workers, one shared token table, one pool; packets go to the worker that owns their flow,
/// as the runtime's handoff would do (`testkit::Gateway`).
struct Sim(Gateway);

impl core::ops::Deref for Sim {
    type Target = Gateway;
    fn deref(&self) -> &Gateway {
        &self.0
    }
}

impl core::ops::DerefMut for Sim {
    fn deref_mut(&mut self) -> &mut Gateway {
        &mut self.0
    }
}

impl Sim {
    fn new(workers: u16, backends: u16) -> Self {
        Self::with_pool(workers, demo_pool(backends))
    }

    fn with_pool(workers: u16, pool: PoolSnapshot) -> Self {
        Self(Gateway::new(pool, workers))
    }

    /// Processes one frame arriving on `port`, starting at worker 0 and following handoffs.
    /// Returns the verdict, the frame as it would leave, and the worker that decided.
    fn send(&mut self, bytes: &[u8], port: u8) -> (Verdict, Vec<u8>, usize) {
        self.0.send(PortId(port), bytes)
    }

    fn stats_balanced(&self) -> bool {
        self.balanced()
    }
}

/// The parsed essentials of an output frame, with every checksum verified.
#[derive(Debug, PartialEq, Eq)]
struct Out {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: IpAddr,
    dst: IpAddr,
    src_port: u16,
    dst_port: u16,
    ttl: u8,
}

fn parse_out(f: &[u8]) -> Out {
    let v6 = u16::from_be_bytes([f[12], f[13]]) == 0x86dd;
    let (src, dst, ttl, l4) = if v6 {
        let p = ipv6::Packet::new_checked(&f[14..]).expect("ipv6");
        (
            IpAddr::V6(p.src_addr()),
            IpAddr::V6(p.dst_addr()),
            p.hop_limit(),
            &f[54..],
        )
    } else {
        let p = ipv4::Packet::new_checked(&f[14..]).expect("ipv4");
        assert!(p.verify_checksum(), "IPv4 header checksum");
        let hl = p.header_len();
        (
            IpAddr::V4(p.src_addr()),
            IpAddr::V4(p.dst_addr()),
            p.hop_limit(),
            &f[14 + hl..],
        )
    };
    let t = tcp::Packet::new_checked(l4).expect("tcp");
    assert!(t.verify_checksum(&src, &dst), "TCP checksum");
    Out {
        src_mac: f[6..12].try_into().unwrap(),
        dst_mac: f[0..6].try_into().unwrap(),
        src,
        dst,
        src_port: t.src_port(),
        dst_port: t.dst_port(),
        ttl,
    }
}

fn c4(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 51, 100, last))
}

fn c6(last: u16) -> IpAddr {
    IpAddr::V6(core::net::Ipv6Addr::new(
        0x2001, 0xdb8, 0xc, 0, 0, 0, 0, last,
    ))
}

/// Which demo backend an output frame went to.
fn backend_of(o: &Out) -> u16 {
    (0..64u16)
        .find(|&i| o.dst == IpAddr::V4(backend_v4(i)) || o.dst == IpAddr::V6(backend_v6(i)))
        .expect("destination is a backend")
}

/// Runs a full MP_CAPABLE handshake for `client:port`; returns the backend index chosen.
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
    let (v, out, _) = sim.send(&syn, 0);
    assert_eq!(v, Verdict::Forward { port: PortId(1) });
    let b = backend_of(&parse_out(&out));
    let synack = TcpSpec::from_backend(b, client, port, SYNACK)
        .with_mptcp(mpc_synack(server_key))
        .build();
    let (v, _, _) = sim.send(&synack, 1);
    assert_eq!(v, Verdict::Forward { port: PortId(0) });
    let ack = TcpSpec::to_vip(client, port, ACK)
        .with_mptcp(mpc_ack(client_key, server_key))
        .build();
    let (v, _, _) = sim.send(&ack, 0);
    assert_eq!(v, Verdict::Forward { port: PortId(1) });
    b
}

#[test]
fn syn_is_balanced_and_natted_with_valid_checksums() {
    let mut sim = Sim::new(1, 3);
    let syn = TcpSpec::to_vip(c4(1), 40000, SYN).build();
    let (v, out, _) = sim.send(&syn, 0);
    assert_eq!(v, Verdict::Forward { port: PortId(1) });
    let o = parse_out(&out);
    let b = backend_of(&o);
    assert_eq!(
        o,
        Out {
            src_mac: PORT1_MAC,
            dst_mac: backend_mac(b),
            src: c4(1),
            dst: IpAddr::V4(backend_v4(b)),
            src_port: 40000,
            dst_port: BACKEND_PORT,
            ttl: 63,
        }
    );
    // The backend answers: the client sees the VIP.
    let synack = TcpSpec::from_backend(b, c4(1), 40000, SYNACK).build();
    let (v, out, _) = sim.send(&synack, 1);
    assert_eq!(v, Verdict::Forward { port: PortId(0) });
    let o = parse_out(&out);
    assert_eq!(
        (o.src, o.src_port, o.dst, o.dst_port),
        (IpAddr::V4(VIP4), VIP_PORT, c4(1), 40000)
    );
    assert_eq!((o.src_mac, o.dst_mac), (PORT0_MAC, CLIENT_MAC));
    assert_eq!(sim.events(Event::NewFlow), 1);
    assert!(sim.stats_balanced());
}

#[test]
fn every_packet_of_a_flow_keeps_its_backend_and_connections_spread() {
    let mut sim = Sim::new(2, 3);
    let mut per_backend = [0u32; 3];
    for i in 0..300u16 {
        let client = c4((i % 200) as u8 + 1);
        let port = 20000 + i;
        let (_, out, _) = sim.send(&TcpSpec::to_vip(client, port, SYN).build(), 0);
        let b = backend_of(&parse_out(&out));
        per_backend[b as usize] += 1;
        for _ in 0..3 {
            let (v, out, _) = sim.send(&TcpSpec::to_vip(client, port, ACK).build(), 0);
            assert_eq!(v, Verdict::Forward { port: PortId(1) });
            assert_eq!(backend_of(&parse_out(&out)), b);
        }
    }
    assert!(
        per_backend.iter().all(|&n| n > 60),
        "spread: {per_backend:?}"
    );
    assert!(sim.stats_balanced());
}

#[test]
fn token_learned_from_synack_routes_joins_on_any_worker() {
    let mut sim = Sim::new(2, 3);
    let server_key = 0x1111_2222_3333_4444;
    let b = mptcp_handshake(&mut sim, c4(7), 41000, server_key, 0xaaaa);
    assert_eq!(sim.events(Event::TokenLearned), 1);
    assert_eq!(sim.events(Event::TokenConfirmed), 1);
    let token = token_from_key(server_key);
    // Joins from many client ports (so from both workers' shares) all reach the same backend.
    let mut workers_seen = std::collections::HashSet::new();
    for p in 0..16u16 {
        let join = TcpSpec::to_vip(c4(8), 50000 + p, SYN)
            .with_mptcp(join_syn(token))
            .build();
        let (v, out, w) = sim.send(&join, 0);
        assert_eq!(v, Verdict::Forward { port: PortId(1) });
        assert_eq!(backend_of(&parse_out(&out)), b);
        workers_seen.insert(w);
    }
    assert_eq!(workers_seen.len(), 2, "joins were decided on both workers");
    assert_eq!(sim.events(Event::JoinRouted), 16);
    assert!(sim.stats_balanced());
}

#[test]
fn join_with_unknown_token_is_dropped_without_state() {
    let mut sim = Sim::new(1, 3);
    let join = TcpSpec::to_vip(c4(9), 50000, SYN)
        .with_mptcp(join_syn(0xdead_beef))
        .build();
    let (v, _, _) = sim.send(&join, 0);
    assert_eq!(v, Verdict::Drop(DropReason::JoinNoToken));
    assert_eq!(sim.workers[0].flows.len(), 0);
}

#[test]
fn colliding_tokens_are_kept_counted_and_their_joins_refused() {
    // Keys 0xc66f and 0xe658 share the token 0x7357966a. Two connections on different backends.
    assert_eq!(token_from_key(0xc66f), 0x7357_966a);
    assert_eq!(token_from_key(0xe658), 0x7357_966a);
    let mut sim = Sim::new(1, 3);
    let mut backends = Vec::new();
    let mut port = 30000;
    let mut key_iter = [0xc66fu64, 0xe658].into_iter();
    let mut key = key_iter.next().unwrap();
    // Find two client ports that Maglev puts on different backends.
    while backends.len() < 2 {
        port += 1;
        let syn = TcpSpec::to_vip(c4(20), port, SYN)
            .with_mptcp(mpc_syn())
            .build();
        let mut probe = Sim::new(1, 3);
        let (_, out, _) = probe.send(&syn, 0);
        let b = backend_of(&parse_out(&out));
        if backends.contains(&b) {
            continue;
        }
        assert_eq!(mptcp_handshake(&mut sim, c4(20), port, key, 7), b);
        backends.push(b);
        if let Some(k) = key_iter.next() {
            key = k;
        }
    }
    assert_eq!(sim.events(Event::TokenCollision), 1);
    let join = TcpSpec::to_vip(c4(21), 60000, SYN)
        .with_mptcp(join_syn(0x7357_966a))
        .build();
    let (v, _, _) = sim.send(&join, 0);
    assert_eq!(v, Verdict::Drop(DropReason::JoinTokenAmbiguous));
    // Both first subflows keep working.
    let (v, _, _) = sim.send(&TcpSpec::to_vip(c4(20), port, ACK).build(), 0);
    assert_eq!(v, Verdict::Forward { port: PortId(1) });
}

#[test]
fn draining_backend_keeps_flows_and_joins_but_gets_no_new_connections() {
    let mut sim = Sim::new(1, 3);
    let server_key = 0x5555;
    let b = mptcp_handshake(&mut sim, c4(30), 42000, server_key, 0x6666);
    let mut spec = demo_spec(3);
    spec.version = 2;
    spec.backends[b as usize].as_mut().unwrap().state = BackendState::Draining;
    sim.pool = PoolSnapshot::build(spec).unwrap();
    // Established flow continues.
    let (_, out, _) = sim.send(&TcpSpec::to_vip(c4(30), 42000, ACK).build(), 0);
    assert_eq!(backend_of(&parse_out(&out)), b);
    // A join of its connection still reaches it.
    let join = TcpSpec::to_vip(c4(31), 42001, SYN)
        .with_mptcp(join_syn(token_from_key(server_key)))
        .build();
    let (_, out, _) = sim.send(&join, 0);
    assert_eq!(backend_of(&parse_out(&out)), b);
    // No new connection goes there.
    for p in 0..200 {
        let (_, out, _) = sim.send(&TcpSpec::to_vip(c4(32), 10000 + p, SYN).build(), 0);
        assert_ne!(backend_of(&parse_out(&out)), b);
    }
}

#[test]
fn down_backend_refuses_joins() {
    let mut sim = Sim::new(1, 3);
    let b = mptcp_handshake(&mut sim, c4(33), 42000, 0x77, 0x88);
    let mut spec = demo_spec(3);
    spec.backends[b as usize].as_mut().unwrap().state = BackendState::Down;
    sim.pool = PoolSnapshot::build(spec).unwrap();
    let join = TcpSpec::to_vip(c4(34), 1, SYN)
        .with_mptcp(join_syn(token_from_key(0x77)))
        .build();
    assert_eq!(
        sim.send(&join, 0).0,
        Verdict::Drop(DropReason::JoinOwnerDown)
    );
}

#[test]
fn ipv6_connection_and_an_ipv4_join_reach_the_same_server() {
    let mut sim = Sim::new(2, 3);
    let server_key = 0x0102_0304_0506_0708;
    let b = mptcp_handshake(&mut sim, c6(1), 43000, server_key, 0x99);
    let token = token_from_key(server_key);
    assert_eq!(token, 0x6684_0dda);
    let join4 = TcpSpec::to_vip(c4(40), 43001, SYN)
        .with_mptcp(join_syn(token))
        .build();
    let (v, out, _) = sim.send(&join4, 0);
    assert_eq!(v, Verdict::Forward { port: PortId(1) });
    let o = parse_out(&out);
    assert_eq!(o.dst, IpAddr::V4(backend_v4(b)));
    let join6 = TcpSpec::to_vip(c6(2), 43002, SYN)
        .with_mptcp(join_syn(token))
        .build();
    let (_, out, _) = sim.send(&join6, 0);
    assert_eq!(parse_out(&out).dst, IpAddr::V6(backend_v6(b)));
}

#[test]
fn fallback_in_third_ack_drops_the_token() {
    let mut sim = Sim::new(1, 3);
    let syn = TcpSpec::to_vip(c4(50), 44000, SYN)
        .with_mptcp(mpc_syn())
        .build();
    let (_, out, _) = sim.send(&syn, 0);
    let b = backend_of(&parse_out(&out));
    let synack = TcpSpec::from_backend(b, c4(50), 44000, SYNACK)
        .with_mptcp(mpc_synack(0x42))
        .build();
    let _ = sim.send(&synack, 1);
    assert_eq!(sim.shared.tokens.len(), 1);
    // Third ACK without MP_CAPABLE: plain TCP.
    let _ = sim.send(&TcpSpec::to_vip(c4(50), 44000, ACK).build(), 0);
    assert_eq!(sim.events(Event::MpcFallback), 1);
    assert_eq!(sim.shared.tokens.len(), 0);
}

#[test]
fn mismatched_key_in_third_ack_drops_the_token() {
    let mut sim = Sim::new(1, 3);
    let syn = TcpSpec::to_vip(c4(51), 44000, SYN)
        .with_mptcp(mpc_syn())
        .build();
    let (_, out, _) = sim.send(&syn, 0);
    let b = backend_of(&parse_out(&out));
    let _ = sim.send(
        &TcpSpec::from_backend(b, c4(51), 44000, SYNACK)
            .with_mptcp(mpc_synack(0x42))
            .build(),
        1,
    );
    let _ = sim.send(
        &TcpSpec::to_vip(c4(51), 44000, ACK)
            .with_mptcp(mpc_ack(1, 0x43))
            .build(),
        0,
    );
    assert_eq!(sim.events(Event::MpcKeyMismatch), 1);
    assert_eq!(sim.shared.tokens.len(), 0);
}

#[test]
fn mp_capable_from_the_client_alone_teaches_nothing() {
    // A client cannot plant a token: keys in its own packets are only cross-checked.
    let mut sim = Sim::new(1, 3);
    let _ = sim.send(&TcpSpec::to_vip(c4(52), 44000, SYN).build(), 0);
    let _ = sim.send(
        &TcpSpec::to_vip(c4(52), 44000, ACK)
            .with_mptcp(mpc_ack(1, 0x42))
            .build(),
        0,
    );
    assert_eq!(sim.shared.tokens.len(), 0);
}

#[test]
fn tokens_go_when_the_last_subflow_is_reclaimed() {
    let mut sim = Sim::new(1, 3);
    let server_key = 0x1234;
    let b = mptcp_handshake(&mut sim, c4(60), 45000, server_key, 0x5678);
    let join = TcpSpec::to_vip(c4(61), 45001, SYN)
        .with_mptcp(join_syn(token_from_key(server_key)))
        .build();
    let _ = sim.send(&join, 0);
    // Both subflows close: FIN both ways, then the closing timeout passes.
    for (c, p) in [(c4(60), 45000), (c4(61), 45001)] {
        let _ = sim.send(&TcpSpec::to_vip(c, p, FIN_ACK).build(), 0);
        let _ = sim.send(&TcpSpec::from_backend(b, c, p, FIN_ACK).build(), 1);
    }
    assert_eq!(sim.shared.tokens.len(), 1);
    sim.now = sim.now + core::time::Duration::from_secs(60);
    let n = sim.0.workers[0].housekeeping(sim.0.now, &sim.0.shared, usize::MAX);
    assert_eq!(n, 2);
    assert_eq!(
        sim.shared.tokens.len(),
        0,
        "token released with the last subflow"
    );
    assert_eq!(sim.events(Event::TokenReleased), 2);
}

/// The same connection seen again (same keys and first 5-tuple) while its join still holds the
/// token: the new first subflow takes a reference of its own, so the token stays until both
/// are gone, and a join of the new copy is routed after the old join ended.
#[test]
fn a_replayed_connection_keeps_its_token_while_its_new_first_subflow_lives() {
    let mut sim = Sim::new(1, 3);
    let server_key = 0x4321;
    let token = token_from_key(server_key);
    let subflows = |sim: &Sim| {
        sim.shared
            .tokens
            .owners(token)
            .as_slice()
            .first()
            .map_or(0, |o| o.subflows)
    };
    let (client, other) = (c4(62), c4(63));
    let b = mptcp_handshake(&mut sim, client, 45000, server_key, 0x5678);
    let join = |sim: &mut Sim, port: u16| {
        let syn = TcpSpec::to_vip(other, port, SYN)
            .with_mptcp(join_syn(token))
            .build();
        let (v, out, _) = sim.send(&syn, 0);
        assert_eq!(v, Verdict::Forward { port: PortId(1) });
        assert_eq!(backend_of(&parse_out(&out)), b);
        let _ = sim.send(&TcpSpec::from_backend(b, other, port, SYNACK).build(), 1);
        let _ = sim.send(&TcpSpec::to_vip(other, port, ACK).build(), 0);
    };
    let close = |sim: &mut Sim, c: IpAddr, p: u16| {
        let _ = sim.send(&TcpSpec::to_vip(c, p, FIN_ACK).build(), 0);
        let _ = sim.send(&TcpSpec::from_backend(b, c, p, FIN_ACK).build(), 1);
        sim.now = sim.now + core::time::Duration::from_secs(60);
        let _ = sim.0.workers[0].housekeeping(sim.0.now, &sim.0.shared, usize::MAX);
    };
    join(&mut sim, 46000);
    assert_eq!(subflows(&sim), 2);
    close(&mut sim, client, 45000);
    assert_eq!(subflows(&sim), 1, "the join holds the token");
    assert_eq!(
        mptcp_handshake(&mut sim, client, 45000, server_key, 0x5678),
        b
    );
    assert_eq!(subflows(&sim), 2, "the new first subflow holds a reference");
    close(&mut sim, other, 46000);
    assert_eq!(subflows(&sim), 1);
    join(&mut sim, 46001);
    assert_eq!(subflows(&sim), 2);
}

#[test]
fn non_syn_without_state_follows_maglev_like_its_syn_did() {
    // A restarted gateway (fresh tables, same pool) sends mid-stream packets where the SYN went.
    let mut a = Sim::new(1, 5);
    let mut b = Sim::new(1, 5);
    for p in 0..100 {
        let (_, out_a, _) = a.send(&TcpSpec::to_vip(c4(70), 1000 + p, SYN).build(), 0);
        let (_, out_b, _) = b.send(&TcpSpec::to_vip(c4(70), 1000 + p, ACK).build(), 0);
        assert_eq!(
            backend_of(&parse_out(&out_a)),
            backend_of(&parse_out(&out_b))
        );
    }
    assert_eq!(b.events(Event::NonSynMiss), 100);
    // And the return path of such a flow is rewritten statelessly when state is missing.
    let mut c = Sim::new(1, 5);
    let (v, out, _) = c.send(&TcpSpec::from_backend(0, c4(70), 1000, ACK).build(), 1);
    assert_eq!(v, Verdict::Forward { port: PortId(0) });
    assert_eq!(parse_out(&out).src, IpAddr::V4(VIP4));
    assert_eq!(c.events(Event::ReturnStateless), 1);
}

#[test]
fn rst_moves_the_flow_to_closed_but_keeps_it() {
    let mut sim = Sim::new(1, 3);
    let (_, out, _) = sim.send(&TcpSpec::to_vip(c4(80), 1, SYN).build(), 0);
    let b = backend_of(&parse_out(&out));
    let _ = sim.send(&TcpSpec::to_vip(c4(80), 1, RST).build(), 0);
    // A straggler after the RST still goes to the same backend.
    let (_, out, _) = sim.send(&TcpSpec::to_vip(c4(80), 1, ACK).build(), 0);
    assert_eq!(backend_of(&parse_out(&out)), b);
    assert_eq!(sim.events(Event::NonSynMiss), 0);
}

#[test]
fn ttl_one_gets_time_exceeded_from_the_gateway() {
    let mut sim = Sim::new(1, 3);
    let mut spec = TcpSpec::to_vip(c4(90), 1, SYN);
    spec.ttl = 1;
    let (v, out, _) = sim.send(&spec.build(), 0);
    assert_eq!(v, Verdict::Reply { port: PortId(0) });
    let ip = ipv4::Packet::new_checked(&out[14..]).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!(ip.next_header().0, 1);
    assert_eq!(IpAddr::V4(ip.dst_addr()), c4(90));
    assert_eq!(ip.src_addr(), Ipv4Addr::new(10, 0, 0, 1));
    let icmp = ip.payload();
    assert_eq!((icmp[0], icmp[1]), (11, 0));
    assert_eq!(checksum::data(icmp), 0xffff);
    assert_eq!(icmp.len(), 8 + 20 + 8, "quotes the IP header and 8 bytes");
    assert_eq!(
        sim.workers[0].flows.len(),
        0,
        "no state for an expired packet"
    );
}

#[test]
fn ipv6_hop_limit_one_gets_time_exceeded() {
    let mut sim = Sim::new(1, 3);
    let mut spec = TcpSpec::to_vip(c6(90), 1, SYN);
    spec.ttl = 1;
    let (v, out, _) = sim.send(&spec.build(), 0);
    assert_eq!(v, Verdict::Reply { port: PortId(0) });
    let ip = ipv6::Packet::new_checked(&out[14..]).unwrap();
    assert_eq!(ip.next_header().0, 58);
    let msg = ip.payload();
    assert_eq!(msg[0], 3);
    let pseudo =
        checksum::pseudo_header_v6(&ip.src_octets(), &ip.dst_octets(), 58, msg.len() as u32);
    assert_eq!(checksum::combine(&[pseudo, checksum::data(msg)]), 0xffff);
}

#[test]
fn vlan_tagged_port_retags_on_egress() {
    let mut spec = demo_spec(3);
    spec.ports[0].vlan = Some(100);
    let mut sim = Sim::with_pool(1, PoolSnapshot::build(spec).unwrap());
    let mut syn = TcpSpec::to_vip(c4(1), 40000, SYN);
    syn.vlan = Some(100);
    let (v, out, _) = sim.send(&syn.build(), 0);
    assert_eq!(v, Verdict::Forward { port: PortId(1) });
    assert_eq!(
        &out[12..14],
        &[0x08, 0x00],
        "tag stripped towards the untagged server port"
    );
    parse_out(&out);
    // Untagged on the tagged port: refused.
    let (v, _, _) = sim.send(&TcpSpec::to_vip(c4(1), 40001, SYN).build(), 0);
    assert_eq!(v, Verdict::Drop(DropReason::VlanUnexpected));
    // The return path gets the tag back.
    let b = backend_of(&parse_out(&out));
    let (v, out, _) = sim.send(&TcpSpec::from_backend(b, c4(1), 40000, SYNACK).build(), 1);
    assert_eq!(v, Verdict::Forward { port: PortId(0) });
    assert_eq!(&out[12..16], &[0x81, 0x00, 0x00, 100]);
}

#[test]
fn workers_agree_on_flow_ownership_both_ways() {
    let c = addr_bytes(c4(5));
    for p in 0..1000 {
        let w = steer(&c, p, 4);
        assert!(w < 4);
    }
    let mut sim = Sim::new(4, 3);
    let (_, out, w_fwd) = sim.send(&TcpSpec::to_vip(c4(5), 777, SYN).build(), 0);
    let b = backend_of(&parse_out(&out));
    let (_, _, w_ret) = sim.send(&TcpSpec::from_backend(b, c4(5), 777, SYNACK).build(), 1);
    assert_eq!(w_fwd, w_ret);
    assert_eq!(w_fwd, steer(&c, 777, 4) as usize);
}

#[test]
fn removed_backend_drops_its_flows_and_counts() {
    let mut sim = Sim::new(1, 3);
    let (_, out, _) = sim.send(&TcpSpec::to_vip(c4(3), 3, SYN).build(), 0);
    let b = backend_of(&parse_out(&out));
    let mut spec = demo_spec(3);
    spec.backends[b as usize] = None;
    for v in spec.vips.iter_mut().flatten() {
        v.backends.retain(|&x| x != BackendId(b));
    }
    sim.pool = PoolSnapshot::build(spec).unwrap();
    let (v, _, _) = sim.send(&TcpSpec::to_vip(c4(3), 3, ACK).build(), 0);
    assert_eq!(v, Verdict::Drop(DropReason::BackendGone));
    assert_eq!(sim.drops(DropReason::BackendGone), 1);
}

#[test]
fn burst_processing_decides_exactly_like_one_at_a_time() {
    use trapeze_core::pipeline::process_burst;
    // A mixed stream: handshakes (state created mid-burst), data both ways, joins, junk.
    let mut stream: Vec<(Vec<u8>, u8)> = Vec::new();
    for i in 0..40u16 {
        let c = c4((i % 7) as u8 + 1);
        let p = 2000 + i;
        stream.push((TcpSpec::to_vip(c, p, SYN).with_mptcp(mpc_syn()).build(), 0));
        stream.push((TcpSpec::to_vip(c, p, ACK).build(), 0));
        stream.push((TcpSpec::from_backend(i % 3, c, p, ACK).build(), 1));
        stream.push((TcpSpec::to_vip(c6(i), p, SYN).build(), 0));
        stream.push((vec![0u8; 20], 0));
        stream.push((TcpSpec::to_vip(c, p, FIN_ACK).build(), 0));
    }
    let mut one = Sim::new(1, 3);
    let mut burst = Sim::new(1, 3);
    let mut expected = Vec::new();
    for (f, port) in &stream {
        let mut frame = VecFrame::new(f);
        let v = process(
            &mut frame,
            PortId(*port),
            one.0.now,
            &mut one.0.workers[0],
            &one.0.shared,
            &one.0.pool,
        );
        expected.push((v, frame.data().to_vec()));
    }
    // Same frames in bursts of up to 32 per ingress port run.
    let mut got = Vec::new();
    let mut i = 0;
    while i < stream.len() {
        let port = stream[i].1;
        let mut j = i;
        while j < stream.len() && j - i < 32 && stream[j].1 == port {
            j += 1;
        }
        let mut frames: Vec<VecFrame> =
            stream[i..j].iter().map(|(f, _)| VecFrame::new(f)).collect();
        let mut verdicts = vec![Verdict::Punt; frames.len()];
        process_burst(
            &mut frames,
            &mut verdicts,
            PortId(port),
            burst.0.now,
            &mut burst.0.workers[0],
            &burst.0.shared,
            &burst.0.pool,
        );
        got.extend(
            verdicts
                .into_iter()
                .zip(frames.iter().map(|f| f.data().to_vec())),
        );
        i = j;
    }
    assert_eq!(got.len(), expected.len());
    for (k, (a, b)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(a, b, "frame {k}");
    }
    assert_eq!(one.workers[0].stats.events, burst.workers[0].stats.events);
    assert_eq!(one.workers[0].stats.drops, burst.workers[0].stats.drops);
    assert!(burst.stats_balanced());
}

#[test]
fn adding_a_backend_moves_no_established_flow_or_join_only_new_connections() {
    // Three backends, established flows and an MPTCP connection with a join; then a fourth
    // backend joins the pool (Maglev gives it about a quarter of the slots).
    let mut sim = Sim::new(1, 3);
    let mut pinned = Vec::new();
    for p in 0..200u16 {
        let (_, out, _) = sim.send(&TcpSpec::to_vip(c4(100), 20_000 + p, SYN).build(), 0);
        pinned.push((20_000 + p, backend_of(&parse_out(&out))));
    }
    let server_key = 0xabcd;
    let owner = mptcp_handshake(&mut sim, c4(101), 30_000, server_key, 0x1234);
    let token = token_from_key(server_key);
    let join = TcpSpec::to_vip(c4(102), 30_001, SYN)
        .with_mptcp(join_syn(token))
        .build();
    let (_, out, _) = sim.send(&join, 0);
    assert_eq!(backend_of(&parse_out(&out)), owner);

    let mut spec = demo_spec(4);
    spec.version = 2;
    let before = sim
        .pool
        .vip(trapeze_core::pool::VipId(0))
        .unwrap()
        .maglev
        .slots()
        .to_vec();
    sim.pool = PoolSnapshot::build(spec).unwrap();
    let after = sim
        .pool
        .vip(trapeze_core::pool::VipId(0))
        .unwrap()
        .maglev
        .slots()
        .to_vec();
    let moved =
        before.iter().zip(&after).filter(|(a, b)| a != b).count() as f64 / before.len() as f64;
    assert!(
        (0.2..0.3).contains(&moved),
        "about 1/(N+1) of the slots move: {moved}"
    );

    // Every established flow keeps its backend, and so do the subflows of the MPTCP connection.
    for &(p, b) in &pinned {
        let (_, out, _) = sim.send(&TcpSpec::to_vip(c4(100), p, ACK).build(), 0);
        assert_eq!(backend_of(&parse_out(&out)), b, "flow {p} moved");
    }
    for (c, p) in [(c4(101), 30_000), (c4(102), 30_001)] {
        let (_, out, _) = sim.send(&TcpSpec::to_vip(c, p, ACK).build(), 0);
        assert_eq!(backend_of(&parse_out(&out)), owner);
    }
    // A new join of the connection still reaches its owner.
    let join2 = TcpSpec::to_vip(c4(103), 30_002, SYN)
        .with_mptcp(join_syn(token))
        .build();
    let (_, out, _) = sim.send(&join2, 0);
    assert_eq!(backend_of(&parse_out(&out)), owner);
    // New connections reach the new backend too.
    let new_on_4th = (0..400u16)
        .filter(|p| {
            let (_, out, _) = sim.send(&TcpSpec::to_vip(c4(104), 40_000 + p, SYN).build(), 0);
            backend_of(&parse_out(&out)) == 3
        })
        .count();
    assert!(
        (60..140).contains(&new_on_4th),
        "about a quarter of new connections: {new_on_4th}"
    );
    // The active-flow gauges add up to the flows in the table.
    let active: u64 = sim.workers[0]
        .stats
        .backends
        .iter()
        .map(|c| c.active_flows)
        .sum();
    assert_eq!(active as usize, sim.workers[0].flows.len());
}

#[test]
fn all_backends_down_fails_closed_and_established_flows_continue() {
    let mut sim = Sim::new(1, 3);
    let (_, out, _) = sim.send(&TcpSpec::to_vip(c4(110), 1, SYN).build(), 0);
    let b = backend_of(&parse_out(&out));
    let mut spec = demo_spec(3);
    for be in spec.backends.iter_mut().flatten() {
        be.state = BackendState::Down;
    }
    sim.pool = PoolSnapshot::build(spec).unwrap();
    // New connections: dropped and counted (fail closed), no state created.
    let flows = sim.workers[0].flows.len();
    let (v, _, _) = sim.send(&TcpSpec::to_vip(c4(111), 2, SYN).build(), 0);
    assert_eq!(v, Verdict::Drop(DropReason::NoBackend));
    assert_eq!(sim.workers[0].flows.len(), flows);
    // The established flow keeps reaching its (down) backend until it ends.
    let (v, out, _) = sim.send(&TcpSpec::to_vip(c4(110), 1, ACK).build(), 0);
    assert_eq!(v, Verdict::Forward { port: PortId(1) });
    assert_eq!(backend_of(&parse_out(&out)), b);
}
