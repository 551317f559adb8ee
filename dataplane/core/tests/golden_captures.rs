//! Golden test against real Linux: the captures in `dataplane/testdata/captures` hold real Linux
//! MPTCP connections (with joins, ADD_ADDR, IPv4 and IPv6) through a real Linux nftables DNAT,
//! recorded on both sides of the NAT box. trapeze, configured like that box, must turn every
//! client-side frame into exactly the server-side frame Linux produced, byte for byte, and every
//! server reply into exactly the client-side frame; and it must learn each connection's token and
//! route its joins by it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use std::path::PathBuf;

use trapeze_core::crypto::token_from_key;
use trapeze_core::pipeline::{
    process, DropReason, Event, Frame, Shared, VecFrame, Verdict, Worker, WorkerConfig,
};
use trapeze_core::pool::{BackendId, PortId};
use trapeze_core::tables::flow_table::FlowTableConfig;
use trapeze_core::tables::token::TokenTableConfig;
use trapeze_core::testkit::capture::{pool as capture_pool, VIP4, VIP6};
use trapeze_core::Ticks;
use trapeze_wire::mptcp::{self, Segment};
use trapeze_wire::{pcap, tcp};

fn frames(name: &str, side: &str) -> Vec<Vec<u8>> {
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "..",
        "testdata",
        "captures",
        &format!("{name}.{side}.pcap"),
    ]
    .iter()
    .collect();
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    pcap::Reader::new(&bytes)
        .expect("pcap header")
        .map(|r| r.expect("pcap record").data.to_vec())
        .collect()
}

/// Destination and source IP of a frame, and whether it is IPv6.
fn addrs(f: &[u8]) -> (IpAddr, IpAddr) {
    if u16::from_be_bytes([f[12], f[13]]) == 0x86dd {
        let a = |o: usize| IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&f[o..o + 16]).unwrap()));
        (a(22), a(38))
    } else {
        let a = |o: usize| IpAddr::V4(Ipv4Addr::new(f[o], f[o + 1], f[o + 2], f[o + 3]));
        (a(26), a(30))
    }
}

fn is_vip(a: IpAddr) -> bool {
    a == IpAddr::V4(VIP4) || a == IpAddr::V6(VIP6)
}

/// The server keys announced in SYN/ACKs of a capture (server side).
fn server_keys(frames: &[Vec<u8>]) -> Vec<u64> {
    frames
        .iter()
        .filter_map(|f| {
            let l4 = if u16::from_be_bytes([f[12], f[13]]) == 0x86dd {
                54
            } else {
                34
            };
            let t = tcp::Packet::new_checked(&f[l4..]).ok()?;
            if !(t.syn() && t.ack()) {
                return None;
            }
            let s = mptcp::scan(
                t.options(),
                Segment {
                    syn: true,
                    ack: true,
                    rst: false,
                    has_payload: false,
                },
            );
            s.capable.and_then(|c| c.sender_key)
        })
        .collect()
}

struct Replay {
    through_vip: usize,
    other: usize,
    worker: Worker,
    shared: Shared,
}

/// Replays a capture pair through one worker and compares every output with Linux's.
fn replay(name: &str) -> Replay {
    let client = frames(name, "client");
    let server = frames(name, "server");
    assert_eq!(
        client.len(),
        server.len(),
        "{name}: the two sides pair frame by frame"
    );
    let pool = capture_pool();
    let shared = Shared::new(TokenTableConfig {
        capacity: 1024,
        shards: 4,
    });
    let mut worker = Worker::new(WorkerConfig {
        flows: FlowTableConfig {
            capacity: 1024,
            ..Default::default()
        },
        ..Default::default()
    });
    let (mut through_vip, mut other) = (0, 0);
    for (i, (c, s)) in client.iter().zip(&server).enumerate() {
        let now = Ticks::from_millis(1000 + i as u64);
        let (c_src, c_dst) = addrs(c);
        if is_vip(c_dst) {
            // Client -> VIP: our output must be Linux's DNATed frame.
            let mut f = VecFrame::new(c);
            let v = process(&mut f, PortId(0), now, &mut worker, &shared, &pool);
            assert_eq!(v, Verdict::Forward { port: PortId(1) }, "{name} frame {i}");
            assert_eq!(
                f.data(),
                &s[..],
                "{name} frame {i}: client -> server differs from Linux"
            );
            through_vip += 1;
        } else if is_vip(c_src) {
            // Server -> client: Linux's reverse NAT of the server-side frame.
            let mut f = VecFrame::new(s);
            let v = process(&mut f, PortId(1), now, &mut worker, &shared, &pool);
            assert_eq!(v, Verdict::Forward { port: PortId(0) }, "{name} frame {i}");
            assert_eq!(
                f.data(),
                &c[..],
                "{name} frame {i}: server -> client differs from Linux"
            );
            through_vip += 1;
        } else {
            // Traffic that Linux routed without NAT (a join straight to an announced server
            // address): not addressed to a VIP, so not ours to forward (nor, in the capture, to
            // our MAC: the gateway drops it at the MAC filter or, to our MAC, as for no VIP).
            let mut f = VecFrame::new(c);
            let v = process(&mut f, PortId(0), now, &mut worker, &shared, &pool);
            assert!(
                matches!(v, Verdict::Drop(DropReason::NoVip | DropReason::L2NotOurs)),
                "{name} frame {i}: {v:?}"
            );
            other += 1;
        }
    }
    assert!(worker.stats.balanced());
    Replay {
        through_vip,
        other,
        worker,
        shared,
    }
}

#[test]
fn v4_mptcp_join_matches_linux_and_routes_the_join_by_token() {
    let r = replay("v4_mptcp_join");
    assert!(r.through_vip >= 30);
    assert_eq!(r.worker.stats.events_of(Event::TokenLearned), 1);
    assert_eq!(r.worker.stats.events_of(Event::TokenConfirmed), 1);
    assert_eq!(r.worker.stats.events_of(Event::JoinRouted), 1);
    assert_eq!(r.worker.stats.drops_of(DropReason::JoinNoToken), 0);
    let keys = server_keys(&frames("v4_mptcp_join", "server"));
    assert_eq!(keys.len(), 1);
    // The token table holds the connection under the token the client's MP_JOIN carried, until
    // the subflows are reclaimed.
    let owners = r.shared.tokens.owners(token_from_key(keys[0]));
    assert_eq!(owners.as_slice().len(), 1);
    assert_eq!(owners.as_slice()[0].backend, BackendId(0));
}

#[test]
fn v6_mptcp_join_matches_linux() {
    let r = replay("v6_mptcp_join");
    assert!(r.through_vip >= 30);
    assert_eq!(r.worker.stats.events_of(Event::TokenLearned), 1);
    assert_eq!(r.worker.stats.events_of(Event::JoinRouted), 1);
}

#[test]
fn v4_add_addr_matches_linux_and_leaves_the_announced_path_alone() {
    let r = replay("v4_mptcp_add_addr");
    assert!(r.through_vip > 0);
    assert!(
        r.other > 0,
        "the join to the announced address bypasses the VIP"
    );
    assert_eq!(r.worker.stats.events_of(Event::TokenLearned), 1);
}

#[test]
fn v4_plain_tcp_matches_linux() {
    let r = replay("v4_plain_tcp");
    assert_eq!(r.through_vip, 18);
    assert_eq!(r.worker.stats.events_of(Event::TokenLearned), 0);
    assert_eq!(r.worker.stats.events_of(Event::NewFlow), 1);
}

#[test]
fn tokens_of_the_captured_connections_are_the_ones_the_joins_carry() {
    for name in ["v4_mptcp_join", "v6_mptcp_join"] {
        let keys = server_keys(&frames(name, "server"));
        let joins: Vec<u32> = frames(name, "client")
            .iter()
            .filter_map(|f| {
                let l4 = if u16::from_be_bytes([f[12], f[13]]) == 0x86dd {
                    54
                } else {
                    34
                };
                let t = tcp::Packet::new_checked(&f[l4..]).ok()?;
                let s = mptcp::scan(
                    t.options(),
                    Segment {
                        syn: t.syn(),
                        ack: t.ack(),
                        rst: false,
                        has_payload: false,
                    },
                );
                match s.join {
                    Some(mptcp::MpJoin::Syn { receiver_token, .. }) => Some(receiver_token),
                    _ => None,
                }
            })
            .collect();
        assert_eq!(joins, vec![token_from_key(keys[0])], "{name}");
    }
}
