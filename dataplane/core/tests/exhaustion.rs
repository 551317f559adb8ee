//! Resources running out, through `process()`: a full flow table, a full token table, and
//! frames without room to grow (what the runtime hands over when its mbufs are short: no
//! headroom, no tailroom). Each is counted, nothing panics, and the flows already established
//! keep their backend and their state.

use core::net::{IpAddr, Ipv4Addr};

use trapeze_core::crypto::token_from_key;
use trapeze_core::flow::FlowKey;
use trapeze_core::pipeline::{
    process, DropReason, Event, Shared, VecFrame, Verdict, Worker, WorkerConfig,
};
use trapeze_core::pool::PortId;
use trapeze_core::tables::flow_table::{FlowState, FlowTableConfig};
use trapeze_core::tables::token::TokenTableConfig;
use trapeze_core::testkit::{
    demo_pool, join_syn, mpc_ack, mpc_syn, mpc_synack, Gateway, TcpSpec, VIP4, VIP_PORT,
};

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

fn client(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0xc633_0000 | i)) // 198.51.0.0/16
}

fn key(i: u32) -> FlowKey {
    FlowKey::new(client(i), 40_000, VIP4.into(), VIP_PORT, 6)
}

/// The IPv4 destination of a forwarded untagged frame.
fn dst4(out: &[u8]) -> [u8; 4] {
    out[30..34].try_into().unwrap()
}

/// One worker with a small flow table and a small token table.
fn small_gateway(flows: usize, tokens: usize) -> Gateway {
    let mut gw = Gateway::new(demo_pool(3), 1);
    gw.workers = vec![Worker::new(WorkerConfig {
        flows: FlowTableConfig {
            capacity: flows,
            ..Default::default()
        },
        ..Default::default()
    })];
    gw.shared = Shared::new(TokenTableConfig {
        capacity: tokens,
        shards: 1,
    });
    gw
}

#[test]
fn a_full_flow_table_counts_and_leaves_established_flows_alone() {
    let mut gw = small_gateway(64, 64);
    let capacity = gw.workers[0].flows.capacity();
    // Established flows (mid-stream segments are adopted as established), far more than fit:
    // the table fills every way of every bucket, the rest are forwarded statelessly.
    let mut established = Vec::new();
    for i in 0..(capacity * 20) as u32 {
        let (v, out) = gw.client(&TcpSpec::to_vip(client(i), 40_000, ACK));
        assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
        let w = &gw.workers[0];
        if w.flows.lookup(&key(i), w.flows.hash(&key(i))).is_some() {
            established.push((i, dst4(&out)));
        }
    }
    assert_eq!(gw.workers[0].flows.len(), capacity, "full");
    assert_eq!(established.len(), capacity);
    assert_eq!(
        gw.events(Event::FlowTableFull),
        (capacity * 19) as u64,
        "every flow that found no room is counted"
    );
    // A storm of new connections: every SYN is still forwarded (by Maglev, statelessly) and
    // counted; no established flow is evicted or moved.
    let full_before = gw.events(Event::FlowTableFull);
    for j in 0..2_000 {
        let (v, _) = gw.client(&TcpSpec::to_vip(client(1_000_000 + j), 40_000, SYN));
        assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
    }
    assert_eq!(gw.events(Event::FlowTableFull), full_before + 2_000);
    for &(i, backend) in &established {
        let w = &gw.workers[0];
        let k = key(i);
        let idx = w.flows.lookup(&k, w.flows.hash(&k)).expect("still held");
        assert_eq!(w.flows.entry(idx).state(), FlowState::Established);
        let (v, out) = gw.client(&TcpSpec::to_vip(client(i), 40_000, ACK));
        assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
        assert_eq!(dst4(&out), backend, "flow {i} kept its backend");
    }
    assert!(gw.balanced());
}

#[test]
fn joins_into_a_full_flow_table_are_forwarded_and_hold_no_reference() {
    let mut gw = small_gateway(64, 64);
    // One MPTCP connection, its token learned and confirmed.
    let c = client(0);
    let (v, _) = gw.client(&TcpSpec::to_vip(c, 40_000, SYN).with_mptcp(mpc_syn()));
    assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
    let w = &gw.workers[0];
    let b = w
        .flows
        .entry(w.flows.lookup(&key(0), w.flows.hash(&key(0))).unwrap())
        .backend;
    let server_key = 0x5eed;
    let (v, _) = gw.backend(
        &TcpSpec::from_backend(b.0, c, 40_000, SYN | ACK).with_mptcp(mpc_synack(server_key)),
    );
    assert_eq!(v, Verdict::Forward { port: PortId(0) });
    let (v, _) = gw.client(&TcpSpec::to_vip(c, 40_000, ACK).with_mptcp(mpc_ack(7, server_key)));
    assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
    let token = token_from_key(server_key);
    let subflows = |gw: &Gateway| gw.shared.tokens.owners(token).get(b).map(|o| o.subflows);
    assert_eq!(subflows(&gw), Some(1));
    // One join while there is room: routed, stored, one more subflow.
    let (v, _) = gw.client(&TcpSpec::to_vip(c, 41_000, SYN).with_mptcp(join_syn(token)));
    assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
    assert_eq!(subflows(&gw), Some(2));
    // Fill the table with established flows.
    let capacity = gw.workers[0].flows.capacity();
    for i in 1..(capacity * 20) as u32 {
        let (v, _) = gw.client(&TcpSpec::to_vip(client(i), 40_000, ACK));
        assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
    }
    assert_eq!(gw.workers[0].flows.len(), capacity, "full");
    // (The half-open join may have made room for an established flow and given its reference
    // back; the first subflow is established and stays.)
    let before = subflows(&gw);
    assert!(before >= Some(1));
    // Joins that find no room: routed to the owner and forwarded, counted, and the owner's
    // subflow count is what it was (no flow entry holds a reference for them).
    let (routed, full) = (
        gw.events(Event::JoinRouted),
        gw.events(Event::FlowTableFull),
    );
    for port in 42_000..42_100 {
        let (v, out) = gw.client(&TcpSpec::to_vip(c, port, SYN).with_mptcp(join_syn(token)));
        assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
        assert_eq!(
            dst4(&out),
            dst4(&gw.client(&TcpSpec::to_vip(c, 40_000, ACK)).1)
        );
    }
    assert_eq!(gw.events(Event::JoinRouted), routed + 100);
    assert_eq!(gw.events(Event::FlowTableFull), full + 100);
    assert_eq!(subflows(&gw), before);
    assert!(gw.balanced());
}

#[test]
fn a_full_token_table_counts_and_the_connections_still_work() {
    let mut gw = small_gateway(4096, 8);
    let capacity = gw.shared.tokens.capacity();
    let n = capacity as u32 + 16;
    for i in 0..n {
        let c = client(i);
        let (v, _) = gw.client(&TcpSpec::to_vip(c, 40_000, SYN).with_mptcp(mpc_syn()));
        assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
        let w = &gw.workers[0];
        let idx = w.flows.lookup(&key(i), w.flows.hash(&key(i))).unwrap();
        let b = w.flows.entry(idx).backend.0;
        let server_key = 0x1000 + u64::from(i);
        let (v, _) = gw.backend(
            &TcpSpec::from_backend(b, c, 40_000, SYN | ACK).with_mptcp(mpc_synack(server_key)),
        );
        assert_eq!(v, Verdict::Forward { port: PortId(0) });
        let (v, _) = gw.client(
            &TcpSpec::to_vip(c, 40_000, ACK).with_mptcp(mpc_ack(7 + u64::from(i), server_key)),
        );
        assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
    }
    assert!(gw.shared.tokens.len() <= capacity);
    assert!(gw.events(Event::TokenTableFull) >= 16, "counted");
    assert_eq!(
        gw.events(Event::TokenLearned) + gw.events(Event::TokenTableFull),
        u64::from(n)
    );
    // Every connection, with or without its token, is established and forwarded.
    for i in 0..n {
        let w = &gw.workers[0];
        let idx = w.flows.lookup(&key(i), w.flows.hash(&key(i))).unwrap();
        assert_eq!(w.flows.entry(idx).state(), FlowState::Established);
        let (v, _) = gw.client(&TcpSpec::to_vip(client(i), 40_000, ACK));
        assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
    }
    assert!(gw.balanced());
}

#[test]
fn frames_without_room_are_counted_and_flows_stay() {
    // What the runtime passes when it is short of buffers: frames with no headroom and no
    // tailroom. A frame that must grow (a VLAN tag on the way out, an ICMP reply longer than
    // the request) is dropped as no_room; the flow it belongs to stays.
    let mut spec = trapeze_core::testkit::demo_spec(3);
    spec.ports[1].vlan = Some(42);
    let pool = trapeze_core::pool::PoolSnapshot::build(spec).expect("pool");
    let shared = Shared::new(TokenTableConfig {
        capacity: 64,
        shards: 1,
    });
    let mut w = Worker::new(WorkerConfig::default());
    let now = trapeze_core::Ticks::from_secs(1);
    let syn = TcpSpec::to_vip(client(1), 40_000, SYN).build();
    let mut tight = VecFrame::with_room(&syn, 0, 0);
    let v = process(&mut tight, PortId(0), now, &mut w, &shared, &pool);
    assert_eq!(v, Verdict::Drop(DropReason::NoRoom));
    assert_eq!(w.stats.drops_of(DropReason::NoRoom), 1);
    // The same SYN with room goes through; the flow opened by the first one is used.
    let mut roomy = VecFrame::new(&syn);
    let v = process(&mut roomy, PortId(0), now, &mut w, &shared, &pool);
    assert_eq!(v, Verdict::Forward { port: PortId(1) });
    assert_eq!(w.flows.len(), 1);
    let ack = TcpSpec::to_vip(client(1), 40_000, ACK).build();
    for _ in 0..3 {
        let mut tight = VecFrame::with_room(&ack, 0, 0);
        let v = process(&mut tight, PortId(0), now, &mut w, &shared, &pool);
        assert_eq!(v, Verdict::Drop(DropReason::NoRoom));
    }
    let mut roomy = VecFrame::new(&ack);
    let v = process(&mut roomy, PortId(0), now, &mut w, &shared, &pool);
    assert_eq!(v, Verdict::Forward { port: PortId(1) });
    assert_eq!(w.flows.len(), 1);
    assert_eq!(w.stats.drops_of(DropReason::NoRoom), 4);
    assert!(w.stats.balanced());
}
