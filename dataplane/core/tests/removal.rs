//! Removal and return of a backend: a backend removed (hard) and added back under the same id
//! (the control plane remembers it, `control/src/pool.rs`) resumes its flows and its
//! connections' joins; while it is out, its packets are dropped and its joins refused.

use core::net::{IpAddr, Ipv4Addr};

use trapeze_core::crypto::token_from_key;
use trapeze_core::pipeline::{DropReason, Event, Verdict};
use trapeze_core::pool::{BackendId, Encap, OuterSource, PoolSnapshot, PoolSpec};
use trapeze_core::testkit::*;

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const SYN_ACK: u8 = 0x12;
const PSH_ACK: u8 = 0x18;

fn client() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, 0, 7))
}

/// `spec` without backend `b` (as the control plane publishes a hard removal).
fn without(spec: &PoolSpec, b: u16) -> PoolSnapshot {
    let mut s = spec.clone();
    s.version += 1;
    s.backends[b as usize] = None;
    for v in s.vips.iter_mut().flatten() {
        v.backends.retain(|&x| x != BackendId(b));
    }
    PoolSnapshot::build(s).unwrap()
}

/// The backend a frame went to (NAT: its destination address; DSR: the outer destination).
fn backend_of(out: &[u8], n: u16) -> Option<u16> {
    let dst = Ipv4Addr::new(out[30], out[31], out[32], out[33]);
    (0..n).find(|&i| backend_v4(i) == dst)
}

/// A client segment to the VIP (DSR VIPs serve the backends' port).
fn to_vip(port: u16, flags: u8, dsr: bool) -> TcpSpec {
    let mut s = TcpSpec::to_vip(client(), port, flags);
    if dsr {
        s.dst_port = BACKEND_PORT;
    }
    s
}

fn data(port: u16, seq: u32, dsr: bool) -> TcpSpec {
    let mut d = to_vip(port, PSH_ACK, dsr);
    d.seq = seq;
    d.ack = 5001;
    d.payload = vec![1; 100];
    d
}

/// An MPTCP connection (first subflow from port 40000) with one join (port 40001), then its
/// backend out (hard) and back under the same id.
fn out_and_back(spec: PoolSpec, dsr: bool) {
    let n = 3;
    let full = PoolSnapshot::build(spec.clone()).unwrap();
    let mut g = Gateway::new(full, 1);
    let (ck, sk) = (0x1111_2222_3333_4444u64, 0x5555_6666_7777_8888u64);
    let (_, out) = g.client(&to_vip(40000, SYN, dsr).with_mptcp(mpc_syn()));
    let b = backend_of(&out, n).expect("to a backend");
    if !dsr {
        let sa = TcpSpec::from_backend(b, client(), 40000, SYN_ACK).with_mptcp(mpc_synack(sk));
        let _ = g.backend(&sa);
    }
    let mut a = to_vip(40000, ACK, dsr).with_mptcp(mpc_ack(ck, sk));
    a.seq = 1001;
    a.ack = 5001;
    let _ = g.client(&a);
    let token = token_from_key(sk);
    let (v, out) = g.client(&to_vip(40001, SYN, dsr).with_mptcp(join_syn(token)));
    assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
    assert_eq!(
        backend_of(&out, n),
        Some(b),
        "the join on its connection's server"
    );

    // Hard removal: the flows stay but are not forwarded; a new join is refused.
    g.pool = without(&spec, b);
    for port in [40000, 40001] {
        let (v, _) = g.client(&data(port, 1001, dsr));
        assert_eq!(v, Verdict::Drop(DropReason::BackendGone), "port {port}");
    }
    let (v, _) = g.client(&to_vip(40002, SYN, dsr).with_mptcp(join_syn(token)));
    assert_eq!(v, Verdict::Drop(DropReason::JoinOwnerDown));

    // Back under the same id: both subflows forwarded to it again, a new join routed to it.
    let mut back = spec.clone();
    back.version += 2;
    g.pool = PoolSnapshot::build(back).unwrap();
    for port in [40000, 40001] {
        let (v, out) = g.client(&data(port, 1101, dsr));
        assert!(matches!(v, Verdict::Forward { .. }), "port {port}: {v:?}");
        assert_eq!(backend_of(&out, n), Some(b), "port {port}");
    }
    let joins = g.events(Event::JoinRouted);
    let (v, out) = g.client(&to_vip(40003, SYN, dsr).with_mptcp(join_syn(token)));
    assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
    assert_eq!(backend_of(&out, n), Some(b));
    assert_eq!(g.events(Event::JoinRouted), joins + 1);
    assert!(g.balanced());
}

#[test]
fn a_backend_removed_and_added_back_under_its_id_resumes_its_flows_and_joins_nat() {
    out_and_back(demo_spec(3), false);
}

#[test]
fn a_backend_removed_and_added_back_under_its_id_resumes_its_flows_and_joins_dsr() {
    out_and_back(dsr_spec(3, Encap::Ipip, OuterSource::Gateway), true);
}

// ---------------------------------------------------------------------------------------------
// Migration: a draining backend with a direct address
// ---------------------------------------------------------------------------------------------

use trapeze_core::crypto::add_addr_hmac;
use trapeze_core::pipeline::announce::{AnnounceOption, MAX_SENDS};
use trapeze_core::pool::{BackendState, MIGRATE_ADDRESS_ID};
use trapeze_wire::mptcp::AddAddr;

/// The direct (public) address of demo backend `i`.
fn direct(i: u16) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100 + i as u8))
}

/// `spec` with every backend given a direct address, backend `b` draining.
fn migrating(spec: &PoolSpec, b: u16) -> PoolSnapshot {
    let mut s = spec.clone();
    s.version += 1;
    for (i, x) in s.backends.iter_mut().enumerate() {
        let x = x.as_mut().unwrap();
        x.direct = Some(direct(i as u16));
        if i == b as usize {
            x.state = BackendState::Draining;
        }
    }
    PoolSnapshot::build(s).unwrap()
}

/// An established MPTCP connection from `port`; returns its backend.
fn mptcp_conn(g: &mut Gateway, port: u16, ck: u64, sk: u64, dsr: bool) -> u16 {
    let (_, out) = g.client(&to_vip(port, SYN, dsr).with_mptcp(mpc_syn()));
    let b = backend_of(&out, 3).expect("to a backend");
    if !dsr {
        let sa = TcpSpec::from_backend(b, client(), port, SYN_ACK).with_mptcp(mpc_synack(sk));
        let _ = g.backend(&sa);
    }
    let mut a = to_vip(port, ACK, dsr).with_mptcp(mpc_ack(ck, sk));
    a.seq = 1001;
    a.ack = 5001;
    let _ = g.client(&a);
    b
}

/// A plain TCP connection from `port`; returns its backend.
fn plain_conn(g: &mut Gateway, port: u16, dsr: bool) -> u16 {
    let (_, out) = g.client(&to_vip(port, SYN, dsr));
    let b = backend_of(&out, 3).expect("to a backend");
    if !dsr {
        let _ = g.backend(&TcpSpec::from_backend(b, client(), port, SYN_ACK));
    }
    let mut a = to_vip(port, ACK, dsr);
    a.seq = 1001;
    a.ack = 5001;
    let _ = g.client(&a);
    b
}

/// The one ADD_ADDR queued, after a packet of the connection on `port` (NAT: the server's, DSR:
/// the client's).
fn trigger(g: &mut Gateway, b: u16, port: u16, dsr: bool) -> Vec<AnnounceOption> {
    if dsr {
        let _ = g.client(&data(port, 1101, dsr));
    } else {
        let mut d = TcpSpec::from_backend(b, client(), port, PSH_ACK);
        d.seq = 5001;
        d.ack = 1101;
        d.payload = vec![9; 100];
        let _ = g.backend(&d);
    }
    g.announcements().into_iter().map(|a| a.option).collect()
}

fn migration(spec: PoolSpec, dsr: bool) {
    let mut g = Gateway::new(PoolSnapshot::build(spec.clone()).unwrap(), 1);
    let (ck, sk) = (0x0a0b_0c0d_0e0f_1011u64, 0x2122_2324_2526_2728u64);
    let b = mptcp_conn(&mut g, 41000, ck, sk, dsr);
    // A plain TCP connection on the same backend (a few tries to land on it).
    assert!(
        (41100..41200).any(|p| plain_conn(&mut g, p, dsr) == b),
        "a plain connection on the backend"
    );
    // Nothing before the backend migrates.
    g.workers[0].migrate(&g.pool, g.now, usize::MAX);
    assert!(trigger(&mut g, b, 41000, dsr).is_empty());

    g.pool = migrating(&spec, b);
    g.now = g.now + core::time::Duration::from_millis(10);
    g.workers[0].migrate(&g.pool, g.now, usize::MAX);
    let ann = trigger(&mut g, b, 41000, dsr);
    assert_eq!(ann.len(), 1, "{ann:?}");
    let a: AddAddr = *ann[0].add_addr().expect("an ADD_ADDR");
    let port = (!dsr).then_some(BACKEND_PORT); // NAT: the backend's port differs from the VIP's
    assert_eq!(
        (a.address_id, a.addr, a.port),
        (MIGRATE_ADDRESS_ID, direct(b), port)
    );
    assert_eq!(
        a.truncated_hmac,
        Some(add_addr_hmac(sk, ck, MIGRATE_ADDRESS_ID, &direct(b), port))
    );
    // A second walk changes nothing (each connection once).
    g.workers[0].migrate(&g.pool, g.now, usize::MAX);
    assert!(g.announcements().is_empty());
    let c = g.workers[0].stats.backends[b as usize];
    assert_eq!((c.migrate_announced, c.migrate_migrated), (1, 0));
    assert_eq!(c.migrate_left_behind, 1, "the plain TCP connection");

    // The client echoes: absorbed; then MP_PRIO backup on the gateway's subflow.
    let echo = AddAddr {
        echo: true,
        truncated_hmac: None,
        ..a
    };
    let mut opt = vec![0u8; echo.buffer_len()];
    echo.emit(&mut opt).unwrap();
    let mut e = data(41000, 1201, dsr);
    e.options = opt;
    let (v, _) = g.client(&e);
    assert!(matches!(v, Verdict::Forward { .. }));
    // DSR: MP_PRIO at once; NAT: after the server's next segment.
    let prio = if dsr {
        g.announcements().into_iter().map(|a| a.option).collect()
    } else {
        trigger(&mut g, b, 41000, false)
    };
    assert_eq!(prio, [AnnounceOption::Backup]);
    assert_eq!(g.events(Event::PrioBackupSent), 1);
    assert_eq!(g.events(Event::AnnounceEchoed), 1);
    // Echoed is not migrated yet: both connections still need the gateway (the MPTCP one is
    // watched, the plain one is left behind and open).
    let c = g.workers[0].stats.backends[b as usize];
    assert_eq!((c.migrate_announced, c.migrate_migrated), (1, 0));
    g.workers[0].migrate(&g.pool, g.now, usize::MAX);
    let c = g.workers[0].stats.backends[b as usize];
    assert_eq!(c.migrate_pending, 2);
    assert_eq!(g.workers[0].stats.migrate_pass, g.pool.version);

    // The client's DATA_ACK on the gateway subflow: the first sets the base; moving with the
    // subflow's own acknowledgment (all data through the gateway) is no lead, nor is 64 KiB
    // ahead (the base is kept in 64 KiB units); 128 KiB ahead is: the server's data flows on
    // the direct subflow.
    // (The client still sends data on it: in DSR, the other sign of a move is its absence.)
    let with_data = |mut d: TcpSpec| {
        d.payload = vec![1; 100];
        d
    };
    let _ = g.client(&with_data(dss_ack(41000, 1301, 5001, 1_000_000, dsr)));
    let _ = g.client(&with_data(dss_ack(41000, 1401, 205_001, 1_200_000, dsr)));
    let _ = g.client(&with_data(dss_ack(41000, 1501, 205_001, 1_265_536, dsr)));
    assert_eq!(g.workers[0].stats.backends[b as usize].migrate_migrated, 0);
    let d = with_data(dss_ack(41000, 1601, 205_001, 1_200_000 + 128 * 1024, dsr));
    let (v, _) = g.client(&d);
    assert!(matches!(v, Verdict::Forward { .. }));
    let c = g.workers[0].stats.backends[b as usize];
    assert_eq!((c.migrate_migrated, c.migrate_closed), (1, 0));
    // Off the slow path: later DATA_ACKs change nothing.
    let _ = g.client(&dss_ack(41000, 1701, 205_001, 9_000_000, dsr));
    assert_eq!(g.workers[0].stats.backends[b as usize].migrate_migrated, 1);
    g.workers[0].migrate(&g.pool, g.now, usize::MAX);
    assert_eq!(
        g.workers[0].stats.backends[b as usize].migrate_pending, 1,
        "the plain connection, left behind and open"
    );
    // The plain connection closes (FIN both ways; DSR: the client's FIN and RST): 0 pending.
    for p in 41100..41200 {
        let mut f = to_vip(p, 0x11, dsr);
        f.seq = 1001; // (the plain connections sent nothing after their third ACK)
        f.ack = 5001;
        let _ = g.client(&f);
        if dsr {
            let _ = g.client(&to_vip(p, 0x04, dsr));
        } else {
            let mut f = TcpSpec::from_backend(b, client(), p, 0x11);
            f.seq = 5001;
            f.ack = 1002;
            let _ = g.backend(&f);
        }
    }
    g.workers[0].migrate(&g.pool, g.now, usize::MAX);
    assert_eq!(g.workers[0].stats.backends[b as usize].migrate_pending, 0);
    assert!(g.balanced());
}

#[test]
fn pending_counts_do_not_outlive_the_migration() {
    let spec = demo_spec(3);
    let mut g = Gateway::new(PoolSnapshot::build(spec.clone()).unwrap(), 1);
    let b = watched_conn(&mut g, &spec, 47000, false);
    g.workers[0].migrate(&g.pool, g.now, usize::MAX);
    assert_eq!(g.workers[0].stats.backends[b as usize].migrate_pending, 1);
    // Undrained: no backend migrates any more.
    let mut back = spec.clone();
    back.version += 5;
    g.pool = PoolSnapshot::build(back).unwrap();
    g.workers[0].migrate(&g.pool, g.now, usize::MAX);
    assert_eq!(g.workers[0].stats.backends[b as usize].migrate_pending, 0);
}

/// An address in the 16-byte key form (IPv4-mapped).
fn mapped(a: impl Into<IpAddr>) -> [u8; 16] {
    match a.into() {
        IpAddr::V4(v) => v.to_ipv6_mapped().octets(),
        IpAddr::V6(v) => v.octets(),
    }
}

/// A client segment on `port` carrying a DSS with a 4-byte DATA_ACK.
fn dss_ack(port: u16, seq: u32, ack: u32, data_ack: u32, dsr: bool) -> TcpSpec {
    let mut d = to_vip(port, ACK, dsr);
    d.seq = seq;
    d.ack = ack;
    let mut o = vec![30, 8, 0x20, 0x01];
    o.extend_from_slice(&data_ack.to_be_bytes());
    d.options = o;
    d
}

/// A migrating connection announced, echoed and asked for MP_PRIO; returns its backend.
fn watched_conn(g: &mut Gateway, spec: &PoolSpec, port: u16, dsr: bool) -> u16 {
    let b = mptcp_conn(g, port, 3, 4, dsr);
    g.pool = migrating(spec, b);
    g.workers[0].migrate(&g.pool, g.now, usize::MAX);
    let ann = trigger(g, b, port, dsr);
    let a: AddAddr = *ann[0].add_addr().expect("an ADD_ADDR");
    let echo = AddAddr {
        echo: true,
        truncated_hmac: None,
        ..a
    };
    let mut opt = vec![0u8; echo.buffer_len()];
    echo.emit(&mut opt).unwrap();
    let mut e = data(port, 1201, dsr);
    e.options = opt;
    let _ = g.client(&e);
    let prio: Vec<AnnounceOption> = if dsr {
        g.announcements().into_iter().map(|a| a.option).collect()
    } else {
        trigger(g, b, port, false)
    };
    assert_eq!(prio, [AnnounceOption::Backup]);
    b
}

#[test]
fn dsr_a_client_that_sends_no_data_on_the_gateway_subflow_while_the_connection_moves_is_migrated() {
    // Seen in the test bed (DSR, an echo server): after the MP_PRIO the client's data moves to
    // its direct subflow and the echo stays on the first: the client's packets through the
    // gateway are acknowledgments only, its DATA_ACK moving with the subflow's.
    let spec = dsr_spec(3, Encap::Ipip, OuterSource::Gateway);
    let mut g = Gateway::new(PoolSnapshot::build(spec.clone()).unwrap(), 1);
    let b = watched_conn(&mut g, &spec, 46000, true);
    let mut ack = 5001u32;
    let mut da = 3_000_000u32;
    // Data from the client on the subflow restarts the count each time.
    for _ in 0..5 {
        let mut d = dss_ack(46000, 1301, ack, da, true);
        d.payload = vec![1; 100];
        let _ = g.client(&d);
        (ack, da) = (ack + 60_000, da + 60_000);
    }
    assert_eq!(g.workers[0].stats.backends[b as usize].migrate_migrated, 0);
    // Acknowledgments only, the connection moving on since the last payload: 60 000 bytes are
    // not enough, 140 000 are.
    let (ack, da) = (ack - 60_000, da - 60_000);
    let _ = g.client(&dss_ack(46000, 1401, ack + 30_000, da + 30_000, true));
    let _ = g.client(&dss_ack(46000, 1401, ack + 60_000, da + 60_000, true));
    assert_eq!(g.workers[0].stats.backends[b as usize].migrate_migrated, 0);
    let (v, _) = g.client(&dss_ack(46000, 1401, ack + 140_000, da + 140_000, true));
    assert!(matches!(v, Verdict::Forward { .. }));
    let c = g.workers[0].stats.backends[b as usize];
    assert_eq!((c.migrate_migrated, c.migrate_closed), (1, 0));
    assert!(g.balanced());
}

#[test]
fn the_servers_data_ack_running_ahead_shows_the_clients_data_on_the_direct_subflow_nat() {
    // Seen in the test bed: after the MP_PRIO the client sends on its direct subflow at once,
    // while the server's echo stays on the gateway subflow; the client's DATA_ACK then moves
    // with that subflow, the server's runs ahead of the server's subflow acknowledgment.
    let spec = demo_spec(3);
    let mut g = Gateway::new(PoolSnapshot::build(spec.clone()).unwrap(), 1);
    let b = watched_conn(&mut g, &spec, 45000, false);
    let server = |seq: u32, data_ack: u32| {
        let mut d = TcpSpec::from_backend(b, client(), 45000, PSH_ACK);
        d.seq = seq;
        d.ack = 1301; // the client sends nothing more on this subflow
        d.payload = vec![7; 100];
        let mut o = vec![30, 8, 0x20, 0x01];
        o.extend_from_slice(&data_ack.to_be_bytes());
        d.options = o;
        d
    };
    for (i, (client_data_ack, server_data_ack)) in [
        (50_000u32, 7_000_000u32),
        (50_100, 7_030_000),
        (50_200, 7_070_000),
    ]
    .into_iter()
    .enumerate()
    {
        let _ = g.client(&dss_ack(
            45000,
            1301,
            5301 + 100 * i as u32,
            client_data_ack,
            false,
        ));
        let (v, _) = g.backend(&server(5201 + 100 * i as u32, server_data_ack));
        assert!(matches!(v, Verdict::Forward { .. }));
    }
    assert_eq!(g.workers[0].stats.backends[b as usize].migrate_migrated, 0);
    let _ = g.backend(&server(5501, 7_000_000 + 200 * 1024));
    let _ = g.announcements();
    // Migrated: the server is asked too (MP_PRIO backup) with the client's next segment, a pure
    // ACK from the client's address and port to the server's, with the client's numbers.
    assert_eq!(g.workers[0].stats.backends[b as usize].migrate_migrated, 0);
    let (v, _) = g.client(&dss_ack(45000, 1301, 5601, 50_300, false));
    assert!(matches!(v, Verdict::Forward { .. }));
    let a = g.announcements();
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0].option, AnnounceOption::Backup);
    assert_eq!(
        (a[0].dst_port, a[0].src_port, a[0].seq, a[0].ack),
        (BACKEND_PORT, 45000, 1301, 5601)
    );
    assert_eq!(a[0].dst, mapped(backend_v4(b)), "to the server");
    assert_eq!(a[0].src, mapped(client()), "as the client");
    let c = g.workers[0].stats.backends[b as usize];
    assert_eq!((c.migrate_migrated, c.migrate_closed), (1, 0));
    // Then the flow is off the slow path: nothing more.
    let _ = g.client(&dss_ack(45000, 1301, 5701, 50_400, false));
    assert!(g.announcements().is_empty());
    assert!(g.balanced());
}

#[test]
fn a_migrating_connection_that_closes_is_done_not_pending() {
    let spec = demo_spec(3);
    for closer in ["client fin", "client rst", "data fin", "server fin"] {
        let mut g = Gateway::new(PoolSnapshot::build(spec.clone()).unwrap(), 1);
        let b = watched_conn(&mut g, &spec, 43000, false);
        match closer {
            "client fin" | "client rst" => {
                let mut f = to_vip(
                    43000,
                    if closer == "client fin" { 0x11 } else { 0x04 },
                    false,
                );
                f.seq = 1301;
                f.ack = 5001;
                let _ = g.client(&f);
            }
            "data fin" => {
                let mut d = dss_ack(43000, 1301, 5001, 77, false);
                d.options[3] |= 0x10;
                let _ = g.client(&d);
            }
            _ => {
                let mut f = TcpSpec::from_backend(b, client(), 43000, 0x11);
                f.seq = 5201;
                f.ack = 1301;
                let _ = g.backend(&f);
            }
        }
        g.workers[0].migrate(&g.pool, g.now, usize::MAX);
        let c = g.workers[0].stats.backends[b as usize];
        assert_eq!(
            (c.migrate_migrated, c.migrate_closed, c.migrate_pending),
            (0, 1, 0),
            "{closer}"
        );
        assert!(g.balanced());
    }
}

fn join_through_the_gateway_is_made_a_backup_with_its_first_subflow(dsr: bool) {
    let spec = if dsr {
        dsr_spec(3, Encap::Ipip, OuterSource::Gateway)
    } else {
        demo_spec(3)
    };
    let mut g = Gateway::new(PoolSnapshot::build(spec.clone()).unwrap(), 1);
    let (ck, sk) = (5, 6);
    let b = mptcp_conn(&mut g, 44000, ck, sk, dsr);
    let (v, _) = g.client(&to_vip(44001, SYN, dsr).with_mptcp(join_syn(token_from_key(sk))));
    assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
    if !dsr {
        let mut sa = TcpSpec::from_backend(b, client(), 44001, SYN_ACK);
        sa.seq = 8000;
        let _ = g.backend(&sa);
    }
    let mut a = to_vip(44001, ACK, dsr);
    a.seq = 2001;
    a.ack = 8001;
    let _ = g.client(&a);
    g.pool = migrating(&spec, b);
    g.workers[0].migrate(&g.pool, g.now, usize::MAX);
    // The join's MP_PRIO goes with its next packet (NAT: the server's, DSR: the client's).
    let prio: Vec<AnnounceOption> = if dsr {
        let mut d = data(44001, 2001, dsr);
        d.ack = 8001;
        let _ = g.client(&d);
        g.announcements().into_iter().map(|a| a.option).collect()
    } else {
        let mut d = TcpSpec::from_backend(b, client(), 44001, PSH_ACK);
        d.seq = 8001;
        d.ack = 2001;
        d.payload = vec![9; 10];
        let _ = g.backend(&d);
        g.announcements().into_iter().map(|a| a.option).collect()
    };
    assert_eq!(prio, [AnnounceOption::Backup]);
    // The first subflow is announced as usual; the join counts as nothing of its own.
    let ann = trigger(&mut g, b, 44000, dsr);
    assert_eq!(ann.len(), 1, "{ann:?}");
    assert!(ann[0].add_addr().is_some());
    let c = g.workers[0].stats.backends[b as usize];
    assert_eq!((c.migrate_announced, c.migrate_pending), (1, 1));
    // Once sent, the join is off the slow path: nothing more for it.
    let _ = g.client(&data(44001, 2101, dsr));
    assert!(g.announcements().is_empty());
    assert!(g.balanced());
}

#[test]
fn a_join_through_the_gateway_of_a_migrating_connection_is_made_a_backup_nat() {
    join_through_the_gateway_is_made_a_backup_with_its_first_subflow(false);
}

#[test]
fn a_join_through_the_gateway_of_a_migrating_connection_is_made_a_backup_dsr() {
    join_through_the_gateway_is_made_a_backup_with_its_first_subflow(true);
}

#[test]
fn a_draining_backend_with_a_direct_address_announces_it_to_its_mptcp_connections_nat() {
    migration(demo_spec(3), false);
}

#[test]
fn a_draining_backend_with_a_direct_address_announces_it_to_its_mptcp_connections_dsr() {
    migration(dsr_spec(3, Encap::Ipip, OuterSource::Gateway), true);
}

#[test]
fn a_client_that_never_echoes_the_direct_address_is_left_behind() {
    let spec = demo_spec(3);
    let mut g = Gateway::new(PoolSnapshot::build(spec.clone()).unwrap(), 1);
    let b = mptcp_conn(&mut g, 42000, 1, 2, false);
    g.pool = migrating(&spec, b);
    g.workers[0].migrate(&g.pool, g.now, usize::MAX);
    for _ in 0..=MAX_SENDS {
        g.now = g.now + core::time::Duration::from_millis(300);
        let _ = trigger(&mut g, b, 42000, false);
    }
    let c = g.workers[0].stats.backends[b as usize];
    assert_eq!(
        (
            c.migrate_announced,
            c.migrate_migrated,
            c.migrate_left_behind
        ),
        (1, 0, 1)
    );
    assert_eq!(g.events(Event::AnnounceSent), u64::from(MAX_SENDS));
}
