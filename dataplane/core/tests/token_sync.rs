//! Two gateway instances sharing tokens through the real pipeline: instance A learns a
//! connection's token from its handshake, its export journal is encoded into a sync datagram
//! (`trapeze_core::cluster`), instance B accepts it and enters a remote owner, and a join that
//! reaches B is routed to the connection's backend without taking a subflow reference; A's
//! removal (the connection ends) takes it off B again. The daemon's sync thread does exactly
//! these steps around its sockets.

use core::net::{IpAddr, Ipv4Addr};
use core::time::Duration;

use trapeze_core::cluster::{Batch, Op, Receiver, Record};
use trapeze_core::crypto::token_from_key;
use trapeze_core::pipeline::{
    process, DropReason, Event, Frame, Shared, VecFrame, Verdict, Worker,
};
use trapeze_core::pool::{PoolSnapshot, PortId};
use trapeze_core::tables::token::{JournalOp, RemoteOutcome, TokenTableConfig};
use trapeze_core::testkit::*;
use trapeze_core::Ticks;

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const SYNACK: u8 = 0x12;
const FIN_ACK: u8 = 0x11;
const KEY: &[u8] = b"the cluster's shared secret";

/// One instance: one worker, its token table with the cluster enabled, the common pool.
struct Instance {
    worker: Worker,
    shared: Shared,
}

impl Instance {
    fn new() -> Self {
        let mut shared = Shared::new(TokenTableConfig {
            capacity: 1024,
            shards: 4,
        });
        shared.tokens.enable_cluster(1024, 256);
        Self {
            worker: Worker::new(Default::default()),
            shared,
        }
    }

    fn send(
        &mut self,
        pool: &PoolSnapshot,
        now: Ticks,
        bytes: &[u8],
        port: u8,
    ) -> (Verdict, Vec<u8>) {
        let mut f = VecFrame::new(bytes);
        let v = process(
            &mut f,
            PortId(port),
            now,
            &mut self.worker,
            &self.shared,
            pool,
        );
        (v, f.data().to_vec())
    }
}

/// The demo backend a frame was sent to (destination address; IPv4 frames without options).
fn backend_of(frame: &[u8]) -> u16 {
    let dst = Ipv4Addr::new(frame[30], frame[31], frame[32], frame[33]);
    (0..16u16)
        .find(|&i| backend_v4(i) == dst)
        .expect("a backend")
}

/// A's journal as one datagram (what the sync thread's sender does), names from the pool.
fn export(a: &Instance, pool: &PoolSnapshot, seq: u64) -> Vec<u8> {
    let mut batch = Batch::new();
    while let Some(e) = a.shared.tokens.journal_pop() {
        let name = &pool.backend(e.backend).expect("backend").name;
        let op = match e.op {
            JournalOp::Learn => Op::Learn,
            JournalOp::Remove => Op::Remove,
        };
        assert!(batch.push(&Record {
            op,
            token: e.token,
            origin_us: 1,
            backend: name,
        }));
    }
    batch.finish(KEY, 7, seq, 0)
}

/// B applies a datagram (the sync thread's receiver); returns the number of records applied.
fn apply(b: &Instance, rx: &mut Receiver, pool: &PoolSnapshot, d: &[u8], now: Ticks) -> usize {
    let a = rx.accept(KEY, d).expect("accepted");
    let mut n = 0;
    for r in a.records() {
        let id = pool
            .backends
            .iter()
            .flatten()
            .find(|x| x.name == r.backend)
            .expect("named backend")
            .id;
        match r.op {
            Op::Learn => {
                let o = b
                    .shared
                    .tokens
                    .learn_remote(r.token, id, now, Duration::from_secs(60));
                assert_eq!(o, RemoteOutcome::Inserted);
            }
            Op::Remove => assert!(b.shared.tokens.remove_remote(r.token, id)),
        }
        n += 1;
    }
    n
}

#[test]
fn a_join_reaching_the_other_instance_follows_the_shared_token() {
    let pool = demo_pool(3);
    let (mut a, mut b) = (Instance::new(), Instance::new());
    let mut rx = Receiver::default();
    let mut now = Ticks::from_secs(1);
    let client = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
    let server_key = 0x0123_4567_89ab_cdef;
    let token = token_from_key(server_key);

    // The handshake crosses A (NAT VIP): A learns the token from the SYN/ACK.
    let syn = TcpSpec::to_vip(client, 41000, SYN)
        .with_mptcp(mpc_syn())
        .build();
    let (v, out) = a.send(&pool, now, &syn, 0);
    assert_eq!(v, Verdict::Forward { port: PortId(1) });
    let owner = backend_of(&out);
    let synack = TcpSpec::from_backend(owner, client, 41000, SYNACK)
        .with_mptcp(mpc_synack(server_key))
        .build();
    assert_eq!(
        a.send(&pool, now, &synack, 1).0,
        Verdict::Forward { port: PortId(0) }
    );
    let ack = TcpSpec::to_vip(client, 41000, ACK)
        .with_mptcp(mpc_ack(0xaaaa, server_key))
        .build();
    assert_eq!(
        a.send(&pool, now, &ack, 0).0,
        Verdict::Forward { port: PortId(1) }
    );
    assert_eq!(a.worker.stats.events_of(Event::TokenLearned), 1);

    // Before the sync, B refuses the join.
    let join = TcpSpec::to_vip(client, 41001, SYN)
        .with_mptcp(join_syn(token))
        .build();
    assert_eq!(
        b.send(&pool, now, &join, 0).0,
        Verdict::Drop(DropReason::JoinNoToken)
    );

    // A's journal -> datagram -> B: a remote owner.
    let d = export(&a, &pool, 1);
    assert_eq!(apply(&b, &mut rx, &pool, &d, now), 1);
    assert!(rx.accept(KEY, &d).is_err(), "a replay is refused");
    assert_eq!(b.shared.tokens.len(), 0, "nothing local on B");
    assert_eq!(b.shared.tokens.remote_len(), 1);

    // The retransmitted join reaches the connection's backend through B.
    let (v, out) = b.send(&pool, now, &join, 0);
    assert_eq!(v, Verdict::Forward { port: PortId(1) });
    assert_eq!(backend_of(&out), owner);
    assert_eq!(b.worker.stats.events_of(Event::JoinRouted), 1);
    // B's join flow holds no reference: closing and reclaiming it releases nothing.
    let _ = b.send(
        &pool,
        now,
        &TcpSpec::to_vip(client, 41001, FIN_ACK).build(),
        0,
    );
    now = now + Duration::from_secs(30);
    b.worker.housekeeping(now, &b.shared, usize::MAX);
    assert_eq!(b.worker.stats.events_of(Event::TokenReleased), 0);
    assert_eq!(b.shared.tokens.remote_len(), 1, "the remote owner stays");
    assert!(
        b.shared.tokens.journal_pop().is_none(),
        "B exports nothing it did not learn"
    );

    // The connection ends on A: the removal reaches B and later joins are refused there.
    let _ = a.send(
        &pool,
        now,
        &TcpSpec::to_vip(client, 41000, FIN_ACK).build(),
        0,
    );
    let fin = TcpSpec::from_backend(owner, client, 41000, FIN_ACK).build();
    let _ = a.send(&pool, now, &fin, 1);
    now = now + Duration::from_secs(60);
    a.worker.housekeeping(now, &a.shared, usize::MAX);
    assert_eq!(a.shared.tokens.len(), 0);
    let d = export(&a, &pool, 2);
    assert_eq!(apply(&b, &mut rx, &pool, &d, now), 1);
    assert_eq!(b.shared.tokens.remote_len(), 0);
    let late = TcpSpec::to_vip(client, 41002, SYN)
        .with_mptcp(join_syn(token))
        .build();
    assert_eq!(
        b.send(&pool, now, &late, 0).0,
        Verdict::Drop(DropReason::JoinNoToken)
    );
    assert!(a.worker.stats.balanced() && b.worker.stats.balanced());
}
