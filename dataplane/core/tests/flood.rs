//! A flood aimed at one flow-table bucket, through `process()`: the flows of a sender that
//! controls a /64 of sources, all chosen so that the public fixed hash (Maglev's) names one bucket.
//! Under the old, unkeyed bucket index they fill that bucket with established flows, and a
//! legitimate connection that lands there gets no state (forwarded statelessly, its MPTCP keys
//! never learned). With the bucket keyed by the table's secret the flood spreads out and has no
//! effect.

use core::net::{IpAddr, Ipv6Addr};

use trapeze_core::flow::{FlowKey, FlowSecret};
use trapeze_core::pipeline::{process, Event, Shared, VecFrame, Verdict, Worker, WorkerConfig};
use trapeze_core::pool::PortId;
use trapeze_core::tables::flow_table::{FlowTable, FlowTableConfig, WAYS};
use trapeze_core::tables::mem::TableMem;
use trapeze_core::tables::token::TokenTableConfig;
use trapeze_core::testkit::{demo_pool, TcpSpec, VIP6, VIP_PORT};
use trapeze_core::Ticks;

const ACK: u8 = 0x10;
const SYN: u8 = 0x02;
const CAPACITY: usize = 1024;
const FLOOD: usize = 64;

fn source(i: u64) -> IpAddr {
    let b = i.to_be_bytes();
    IpAddr::V6(Ipv6Addr::new(
        0x2001,
        0xdb8,
        0xa77a,
        0xc4e5,
        u16::from_be_bytes([b[0], b[1]]),
        u16::from_be_bytes([b[2], b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
        u16::from_be_bytes([b[6], b[7]]),
    ))
}

/// Returns the flow-table-full events of the flood and whether the victim got a flow entry.
fn run(secret: FlowSecret) -> (u64, bool) {
    let buckets = FlowTable::buckets_for(CAPACITY);
    let in_bucket_0 = |i: u64| {
        let k = FlowKey::new(source(i), 40_000, VIP6.into(), VIP_PORT, 6);
        (k.hash() as usize).is_multiple_of(buckets)
    };
    let mut chosen = (0..u64::MAX).filter(|&i| in_bucket_0(i)).take(FLOOD + 1);
    let victim = chosen.next().expect("a victim");
    let flood: Vec<u64> = chosen.collect();

    let cfg = WorkerConfig {
        flows: FlowTableConfig {
            capacity: CAPACITY,
            ..Default::default()
        },
        ..Default::default()
    };
    let flows = FlowTable::with_memory(
        cfg.flows,
        secret,
        TableMem::zeroed(buckets),
        TableMem::zeroed(buckets * WAYS),
    )
    .expect("memory of the right shape");
    let mut w = Worker::with_flows(cfg, flows);
    let shared = Shared::new(TokenTableConfig {
        capacity: 1024,
        shards: 4,
    });
    let pool = demo_pool(3);
    let send = |w: &mut Worker, src: IpAddr, flags: u8| {
        let mut f = VecFrame::new(&TcpSpec::to_vip(src, 40_000, flags).build());
        let v = process(&mut f, PortId(0), Ticks::from_secs(1), w, &shared, &pool);
        assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
    };
    // The flood: mid-stream segments, adopted as established flows (as a sender that completes
    // its handshakes would have them).
    for &i in &flood {
        send(&mut w, source(i), ACK);
    }
    let full = w.stats.events_of(Event::FlowTableFull);
    send(&mut w, source(victim), SYN);
    let key = FlowKey::new(source(victim), 40_000, VIP6.into(), VIP_PORT, 6);
    let victim_has_state = w.flows.lookup(&key, w.flows.hash(&key)).is_some();
    (full, victim_has_state)
}

#[test]
fn a_flood_aimed_at_one_public_bucket_has_no_effect() {
    // The old index: 8 flows fill the bucket, the other 56 and the victim get no state.
    assert_eq!(run(FlowSecret::PUBLIC), ((FLOOD - WAYS) as u64, false));
    // Keyed, whatever the secret: every flow and the victim have their entry.
    for secret in [FlowSecret::FIXED, FlowSecret(0x5eed), FlowSecret(u64::MAX)] {
        assert_eq!(run(secret), (0, true), "{secret:?}");
    }
}
