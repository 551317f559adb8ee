//! The MP_JOIN SYN fast path (`flow::join_v4`) towards a backend its precomputed rewrite does
//! not cover (a VLAN-tagged egress port, an unresolved MAC): it takes the general rewrite,
//! with the facts of the SYN read again from the frame, and must agree with the general walk
//! (verdict, bytes, counters, flow count), for a join alone and after Linux's options.

use core::net::{IpAddr, Ipv4Addr};
use trapeze_core::pipeline::{
    process, process_general, Frame, Shared, VecFrame, Worker, WorkerConfig,
};
use trapeze_core::pool::{PoolSnapshot, PortId};
use trapeze_core::tables::flow_table::FlowTableConfig;
use trapeze_core::tables::token::TokenTableConfig;
use trapeze_core::testkit::{self, TcpSpec};
use trapeze_core::Ticks;

/// A worker alone, with a small flow table.
fn workers() -> Worker {
    Worker::new(WorkerConfig {
        workers: 1,
        flows: FlowTableConfig {
            capacity: 64,
            ..Default::default()
        },
        ..Default::default()
    })
}

#[test]
fn a_join_to_a_backend_without_the_fast_rewrite_agrees_with_the_general_walk() {
    for variant in 0..2 {
        let mut spec = testkit::demo_spec(3);
        if variant == 0 {
            spec.ports[1].vlan = Some(200);
        } else {
            for b in spec.backends.iter_mut().flatten() {
                b.mac = None;
            }
        }
        let pool = PoolSnapshot::build(spec).unwrap();
        for k in 0..3u16 {
            for linux in [false, true] {
                let (mut fast, mut general) = (workers(), workers());
                let sf = Shared::new(TokenTableConfig {
                    capacity: 64,
                    shards: 2,
                });
                let sg = Shared::new(TokenTableConfig {
                    capacity: 64,
                    shards: 2,
                });
                let now = Ticks::from_secs(1);
                let token = testkit::learn_connection(&[&sf, &sg], k, now);
                let mut s =
                    TcpSpec::to_vip(IpAddr::V4(Ipv4Addr::new(198, 18, 1, 2)), 4000 + k, 0x02);
                if !linux {
                    s.options.clear();
                }
                let s = s.with_mptcp(testkit::join_syn(token));
                let input = s.build();
                let mut a = VecFrame::new(&input);
                let mut b = VecFrame::new(&input);
                let va = process(&mut a, PortId(0), now, &mut fast, &sf, &pool);
                let vb = process_general(&mut b, PortId(0), now, &mut general, &sg, &pool);
                assert_eq!(va, vb);
                assert_eq!(a.data(), b.data());
                let (x, y) = (&fast.stats, &general.stats);
                assert_eq!((x.rx, x.forwarded), (y.rx, y.forwarded));
                assert_eq!(&x.drops[..], &y.drops[..]);
                assert_eq!(&x.events[..], &y.events[..]);
                assert_eq!(&x.vips[..], &y.vips[..]);
                assert_eq!(&x.backends[..], &y.backends[..]);
                assert_eq!(fast.flows.len(), general.flows.len());
            }
        }
    }
}
