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
