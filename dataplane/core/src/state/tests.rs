//! Restarts through the state file: a gateway runs real handshakes and joins through
//! `process()`, "crashes" (its memory is copied as a new process would map it), and a new one
//! re-attaches, with a compatible, an incompatible, a corrupt or a changed configuration.

use core::net::{IpAddr, Ipv4Addr};

use super::*;
use crate::crypto::token_from_key;
use crate::pipeline::{Event, Shared, Verdict, Worker, WorkerConfig};
use crate::pool::{Backend, PoolSnapshot, PortId};
use crate::testkit::*;

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const SYNACK: u8 = 0x12;

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C, align(4096))]
struct Page([u64; 512]);

/// Zeroed, page-aligned memory that lives as long as the test process (a mapping's stand-in).
fn region(len: usize) -> &'static mut [u8] {
    let pages = Box::leak(vec![Page([0; 512]); len.div_ceil(4096)].into_boxed_slice());
    bytemuck::cast_slice_mut(pages)
}

/// The bytes of a detached file, copied into new memory: what the next process maps.
fn snapshot(sec: &Sections, g: &Geometry) -> &'static mut [u8] {
    let l = Layout::of(g);
    let out = region(l.len);
    out[..size_of::<Header>()].copy_from_slice(bytemuck::bytes_of(&*sec.header));
    out[STATUS_AT..STATUS_AT + size_of::<Status>()]
        .copy_from_slice(bytemuck::bytes_of(&*sec.status));
    let mut put = |at: usize, b: &[u8]| out[at..at + b.len()].copy_from_slice(b);
    put(l.backends, bytemuck::cast_slice(&*sec.backends));
    put(l.vips, bytemuck::cast_slice(&*sec.vips));
    for (&(t, e), (tags, entries)) in l.flows.iter().zip(&sec.flows) {
        put(t, bytemuck::cast_slice(&tags[..]));
        put(e, bytemuck::cast_slice(&entries[..]));
    }
    let mut at = l.tokens;
    for pool in &sec.tokens {
        let b: &[u8] = bytemuck::cast_slice(&pool[..]);
        put(at, b);
        at += b.len();
    }
    out
}

fn want(workers: u16, flows: usize) -> Want {
    Want::new(
        workers,
        FlowTableConfig {
            capacity: flows,
            ..Default::default()
        },
        TokenTableConfig {
            capacity: 1024,
            shards: 8,
        },
        64,
        16,
    )
}

fn env(secs: u64) -> Env {
    Env {
        now: Ticks::from_secs(secs),
        boot_id: [7; 16],
        pid: 4242,
    }
}

/// The demo pool, backends named srv1..srv3 (ids by position, as a configuration gives them).
fn config() -> PoolSpec {
    let mut spec = demo_spec(3);
    for b in spec.backends.iter_mut().flatten() {
        b.name = format!("srv{}", b.id.0 + 1);
    }
    spec
}

/// The running gateway of a start, and its state-file handle.
struct Up {
    g: Gateway,
    file: StateFile,
    report: Report,
}

fn up(r: Restored, workers: u16, now: Ticks) -> Up {
    let cfg = |id| WorkerConfig {
        id,
        workers,
        ..Default::default()
    };
    let g = Gateway {
        workers: r
            .flows
            .into_iter()
            .enumerate()
            .map(|(i, f)| Worker::with_flows(cfg(i as u16), f))
            .collect(),
        shared: Shared { tokens: r.tokens },
        pool: PoolSnapshot::build(r.pool).expect("the seeded pool builds"),
        now,
    };
    Up {
        g,
        file: r.file,
        report: r.report,
    }
}

/// Kills the gateway: its memory, as the next process maps it.
fn crash(u: Up, g: &Geometry) -> &'static mut [u8] {
    let Up { g: gw, file, .. } = u;
    let flows = gw.workers.into_iter().map(|w| w.flows).collect();
    let sec = detach(flows, gw.shared.tokens, file);
    snapshot(&sec, g)
}

fn c4(i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(100, 64, 0, i))
}
fn c4b(i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(100, 65, 0, i))
}

/// The backend address a frame leaves for.
fn dst_of(frame: &[u8]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(frame[30], frame[31], frame[32], frame[33]))
}

/// A connection through the gateway: MP_CAPABLE handshake and one join; returns the backend
/// address and the token.
fn connect(g: &mut Gateway, i: u8) -> (IpAddr, u32) {
    let key = 0x5eed_0000 + u64::from(i);
    let (v, out) = g.client(&TcpSpec::to_vip(c4(i), 40_000, SYN).with_mptcp(mpc_syn()));
    assert_eq!(v, Verdict::Forward { port: PortId(1) });
    let server = dst_of(&out);
    let b = (0..3u16)
        .find(|&b| IpAddr::V4(backend_v4(b)) == server)
        .expect("a demo backend");
    let (v, _) =
        g.backend(&TcpSpec::from_backend(b, c4(i), 40_000, SYNACK).with_mptcp(mpc_synack(key)));
    assert_eq!(v, Verdict::Forward { port: PortId(0) });
    let (v, _) = g.client(&TcpSpec::to_vip(c4(i), 40_000, ACK).with_mptcp(mpc_ack(!key, key)));
    assert_eq!(v, Verdict::Forward { port: PortId(1) });
    let token = token_from_key(key);
    let (v, out) = join(g, i, token);
    assert_eq!(v, Verdict::Forward { port: PortId(1) });
    assert_eq!(
        dst_of(&out),
        server,
        "the join reaches its connection's server"
    );
    (server, token)
}

fn join(g: &mut Gateway, i: u8, token: u32) -> (Verdict, Vec<u8>) {
    g.client(&TcpSpec::to_vip(c4b(i), 50_000, SYN).with_mptcp(join_syn(token)))
}

/// A data segment of connection `i`'s first subflow, and of its join.
fn data(g: &mut Gateway, i: u8) -> (IpAddr, IpAddr) {
    let (v, a) = g.client(&TcpSpec::to_vip(c4(i), 40_000, ACK));
    assert_eq!(v, Verdict::Forward { port: PortId(1) });
    let (v, b) = g.client(&TcpSpec::to_vip(c4b(i), 50_000, ACK));
    assert_eq!(v, Verdict::Forward { port: PortId(1) });
    (dst_of(&a), dst_of(&b))
}

fn cold(w: &Want, e: &Env, pool: &PoolSpec) -> Up {
    let r = create(region(w.file_len()), w, e, FlowSecret(0x1234), pool).expect("formats");
    assert_eq!(r.report.how, How::Cold);
    up(r, w.geometry.workers as u16, e.now)
}

fn restart(bytes: &'static mut [u8], w: &Want, e: &Env, pool: &PoolSpec) -> Up {
    match attach(bytes, w, e, pool) {
        Ok(r) => up(r, w.geometry.workers as u16, e.now),
        Err((why, bytes)) => {
            let r = create(bytes, w, e, FlowSecret(0x9999), pool).expect("formats");
            let mut u = up(r, w.geometry.workers as u16, e.now);
            u.report.how = How::Cold;
            assert!(!matches!(why, Refusal::OtherGeometry { .. }), "{why}");
            u
        }
    }
}

const CONNS: u8 = 12;

fn run_conns(u: &mut Up) -> Vec<(IpAddr, u32)> {
    (1..=CONNS).map(|i| connect(&mut u.g, i)).collect()
}

#[test]
fn a_compatible_restart_keeps_every_flow_and_every_join() {
    for workers in [1u16, 2] {
        let w = want(workers, 1024);
        let pool = config();
        let mut u = cold(&w, &env(1), &pool);
        let conns = run_conns(&mut u);
        let secret = u.file.secret();
        // kill -9, restarted 1 s later with the same configuration.
        let bytes = crash(u, &w.geometry);
        let info = inspect(bytes).expect("a valid file");
        assert!(!info.clean);
        assert_eq!(info.generation, 1);
        let mut u = restart(bytes, &w, &env(2), &pool);
        assert!(matches!(
            u.report.how,
            How::Attached {
                clean: false,
                pid: 4242
            }
        ));
        assert_eq!(u.report.generation, 2);
        assert_eq!(u.file.secret(), secret, "the secret is kept");
        assert_eq!(u.report.flows.iter().sum::<usize>(), 2 * CONNS as usize);
        assert_eq!(u.report.tokens.tokens, CONNS as usize);
        assert_eq!(
            (
                u.report.flows_invalid,
                u.report.flows_removed,
                u.report.owners_orphaned
            ),
            (0, 0, 0)
        );
        for (i, &(server, token)) in (1..=CONNS).zip(&conns) {
            // Both subflows continue on their server, found in the table (no adoption).
            assert_eq!(data(&mut u.g, i), (server, server));
            // The connection's owner has its two subflows back.
            let owners = u.g.shared.tokens.owners(token);
            assert_eq!(owners.len(), 1);
            assert_eq!(owners.as_slice()[0].subflows, 2);
            // A new join of an old connection is routed by its token.
            let (v, out) =
                u.g.client(&TcpSpec::to_vip(c4b(i), 50_001, SYN).with_mptcp(join_syn(token)));
            assert_eq!(v, Verdict::Forward { port: PortId(1) });
            assert_eq!(dst_of(&out), server);
        }
        assert_eq!(u.g.events(Event::NonSynMiss), 0, "{workers} worker(s)");
        assert_eq!(u.g.events(Event::JoinRouted), CONNS as u64);
        // A planned stop: marked clean, and the next start says so.
        u.file.mark_clean();
        let bytes = crash(u, &w.geometry);
        assert!(inspect(bytes).unwrap().clean);
        let u = restart(bytes, &w, &env(3), &pool);
        assert!(matches!(u.report.how, How::Attached { clean: true, .. }));
        assert_eq!(u.report.flows.iter().sum::<usize>(), 3 * CONNS as usize);
    }
}

/// A restart without the state (cold): old flows are adopted by Maglev, old joins refused.
fn assert_cold_and_working(u: &mut Up, conns: &[(IpAddr, u32)]) {
    assert_eq!(u.report.how, How::Cold);
    assert_eq!(u.report.flows.iter().sum::<usize>(), 0);
    for (i, &(_, token)) in (1..=CONNS).zip(conns) {
        let (v, _) = join(&mut u.g, i, token);
        assert_eq!(v, Verdict::Drop(crate::pipeline::DropReason::JoinNoToken));
    }
    // New connections work.
    connect(&mut u.g, 200);
}

#[test]
fn an_incompatible_layout_is_a_cold_start() {
    let w = want(1, 1024);
    let pool = config();
    let mut u = cold(&w, &env(1), &pool);
    let conns = run_conns(&mut u);
    let bytes = crash(u, &w.geometry);
    // Another layout version, with a valid checksum.
    let mut h: Header = bytemuck::pod_read_unaligned(&bytes[..size_of::<Header>()]);
    h.version = LAYOUT_VERSION + 1;
    h.checksum = h.digest();
    bytes[..size_of::<Header>()].copy_from_slice(bytemuck::bytes_of(&h));
    assert_eq!(
        inspect(bytes).unwrap_err(),
        Refusal::Version {
            found: LAYOUT_VERSION + 1
        }
    );
    let mut u = restart(bytes, &w, &env(2), &pool);
    assert_cold_and_working(&mut u, &conns);
    // Record sizes of another build.
    let bytes = crash(u, &w.geometry);
    let mut h: Header = bytemuck::pod_read_unaligned(&bytes[..size_of::<Header>()]);
    h.flow_entry_size = 128;
    h.checksum = h.digest();
    bytes[..size_of::<Header>()].copy_from_slice(bytemuck::bytes_of(&h));
    assert_eq!(inspect(bytes).unwrap_err(), Refusal::RecordSizes);
    // Not ours, and new.
    let mut junk = vec![0u8; 8192];
    assert_eq!(inspect(&junk).unwrap_err(), Refusal::Empty);
    junk[100] = 1;
    assert_eq!(inspect(&junk).unwrap_err(), Refusal::NotOurs);
    assert_eq!(inspect(&junk[..100]).unwrap_err(), Refusal::Empty);
}

#[test]
fn a_corrupt_header_is_a_cold_start() {
    let w = want(2, 1024);
    let pool = config();
    let mut u = cold(&w, &env(1), &pool);
    let conns = run_conns(&mut u);
    let bytes = crash(u, &w.geometry);
    // One bit of the geometry flipped: the checksum catches it.
    bytes[36] ^= 0x10;
    assert_eq!(inspect(bytes).unwrap_err(), Refusal::Checksum);
    let mut u = restart(bytes, &w, &env(2), &pool);
    assert_cold_and_working(&mut u, &conns);
    // A consistent header that claims more than the file holds.
    let bytes = crash(u, &w.geometry);
    let mut h: Header = bytemuck::pod_read_unaligned(&bytes[..size_of::<Header>()]);
    h.flow_buckets = 1 << 20;
    h.file_len = Layout::of(&h.geometry()).len as u64;
    h.checksum = h.digest();
    bytes[..size_of::<Header>()].copy_from_slice(bytemuck::bytes_of(&h));
    assert!(matches!(inspect(bytes), Err(Refusal::BadGeometry(_))));
    let u = restart(bytes, &w, &env(3), &pool);
    assert_eq!(u.report.how, How::Cold);
}

#[test]
fn corrupt_records_are_cleared_and_the_rest_is_kept() {
    let w = want(2, 1024);
    let pool = config();
    let mut u = cold(&w, &env(1), &pool);
    run_conns(&mut u);
    let bytes = crash(u, &w.geometry);
    let l = Layout::of(&w.geometry);
    // Deterministic noise over every section after the header: identities, tags, entries,
    // owner records (a xorshift; about one byte in 64 changed).
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for b in bytes[l.backends..l.len].iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if x.is_multiple_of(64) {
            *b = (x >> 8) as u8;
        }
    }
    let mut u = restart(bytes, &w, &env(2), &pool);
    assert!(matches!(u.report.how, How::Attached { .. }), "{}", u.report);
    // Whatever survived is consistent: every kept flow is found where the table looks.
    for wk in &u.g.workers {
        for (i, e) in wk.flows.iter() {
            assert_eq!(wk.flows.lookup(&e.key, wk.flows.hash(&e.key)), Some(i));
            assert!(FlowState::from_u8(e.state).is_some());
        }
    }
    // And the gateway works on.
    for i in 1..=CONNS {
        let (v, _) = u.g.client(&TcpSpec::to_vip(c4(i), 40_000, ACK));
        assert_eq!(v, Verdict::Forward { port: PortId(1) });
    }
    connect(&mut u.g, 201);
    // Pure garbage everywhere but the header: still no panic.
    let bytes = crash(u, &w.geometry);
    for (i, b) in bytes[l.backends..l.len].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(151) ^ 0x5a;
    }
    let mut u = restart(bytes, &w, &env(3), &pool);
    connect(&mut u.g, 202);
}

#[test]
fn a_changed_pool_keeps_the_flows_of_the_backends_that_remain() {
    let w = want(2, 1024);
    let before = config();
    let mut u = cold(&w, &env(1), &before);
    let conns = run_conns(&mut u);
    let bytes = crash(u, &w.geometry);
    // While the daemon was down: srv2 removed, srv4 added at the top of the file (every
    // position shifts).
    let mut after = before.clone();
    let srv2 = after.backends[1].take().expect("srv2");
    let srv4 = Backend {
        name: "srv4".into(),
        ipv4: Some(Ipv4Addr::new(10, 1, 0, 99)),
        ipv6: None,
        ..srv2.clone()
    };
    let mut list: Vec<Backend> = vec![srv4];
    list.extend(after.backends.iter().flatten().cloned());
    let names: Vec<String> = list.iter().map(|b| b.name.clone()).collect();
    after.backends = list
        .into_iter()
        .enumerate()
        .map(|(i, mut b)| {
            b.id = BackendId(i as u16);
            Some(b)
        })
        .collect();
    let pos = |n: &str| BackendId(names.iter().position(|x| x == n).unwrap() as u16);
    for v in after.vips.iter_mut().flatten() {
        v.backends = vec![pos("srv1"), pos("srv3"), pos("srv4")];
        if v.addr.is_ipv6() {
            v.backends.retain(|&b| b != pos("srv4"));
        }
    }
    let mut u = restart(bytes, &w, &env(2), &after);
    assert!(matches!(u.report.how, How::Attached { .. }));
    assert_eq!(u.report.backends_added, ["srv4"]);
    assert_eq!(u.report.backends_removed, ["srv2"]);
    // srv4 got an id never used: 3; srv1 and srv3 kept 0 and 2.
    let ids: Vec<(String, u16)> =
        u.g.pool
            .backends
            .iter()
            .flatten()
            .map(|b| (b.name.clone(), b.id.0))
            .collect();
    assert_eq!(
        ids,
        [
            ("srv1".to_string(), 0),
            ("srv3".to_string(), 2),
            ("srv4".to_string(), 3)
        ]
    );
    let srv2_addr = IpAddr::V4(backend_v4(1));
    let on_srv2 = conns.iter().filter(|c| c.0 == srv2_addr).count();
    assert!(on_srv2 > 0 && on_srv2 < CONNS as usize, "spread: {on_srv2}");
    assert_eq!(u.report.flows_removed, 2 * on_srv2);
    assert_eq!(u.report.tokens.invalid, on_srv2, "srv2's owners dropped");
    for (i, &(server, token)) in (1..=CONNS).zip(&conns) {
        if server == srv2_addr {
            // Gone with its backend: the join is refused, the subflows are re-balanced.
            assert_eq!(
                join(&mut u.g, i, token).0,
                Verdict::Drop(crate::pipeline::DropReason::JoinNoToken)
            );
            continue;
        }
        assert_eq!(data(&mut u.g, i), (server, server), "connection {i}");
        let (v, out) = join(&mut u.g, i, token);
        assert_eq!(v, Verdict::Forward { port: PortId(1) });
        assert_eq!(dst_of(&out), server);
    }
    // The identities now in the file are the new pool's (srv2 kept for its id).
    let bytes = crash(u, &w.geometry);
    let l = Layout::of(&w.geometry);
    let recs: &[BackendRecord] =
        bytemuck::cast_slice(&bytes[l.backends..l.backends + 64 * size_of::<BackendRecord>()]);
    let names: Vec<Option<String>> = recs[..5]
        .iter()
        .map(|r| r.decode().map(|i| i.name))
        .collect();
    assert_eq!(
        names,
        [
            Some("srv1".into()),
            Some("srv2".into()),
            Some("srv3".into()),
            Some("srv4".into()),
            None
        ]
    );
}

#[test]
fn another_geometry_is_carried_over() {
    let pool = config();
    let old = want(1, 1024);
    let mut u = cold(&old, &env(1), &pool);
    let conns = run_conns(&mut u);
    let bytes = crash(u, &old.geometry);
    // Two workers and a bigger table: the entries move to the worker that owns them now.
    let new = want(2, 4096);
    let refused = attach(bytes, &new, &env(2), &pool).map(|_| ()).unwrap_err();
    assert!(
        matches!(refused.0, Refusal::OtherGeometry { .. }),
        "{}",
        refused.0
    );
    let carried = carry_over(refused.1).expect("readable");
    assert_eq!(carried.geometry(), old.geometry);
    let r = restore(region(new.file_len()), &new, &env(2), &pool, carried).expect("restores");
    assert!(matches!(r.report.how, How::Carried { .. }), "{}", r.report);
    let mut u = up(r, 2, Ticks::from_secs(2));
    assert_eq!(u.report.flows.iter().sum::<usize>(), 2 * CONNS as usize);
    assert!(
        u.report.flows.iter().all(|&n| n > 0),
        "{:?}",
        u.report.flows
    );
    for (i, &(server, token)) in (1..=CONNS).zip(&conns) {
        assert_eq!(data(&mut u.g, i), (server, server));
        let (v, out) =
            u.g.client(&TcpSpec::to_vip(c4b(i), 50_002, SYN).with_mptcp(join_syn(token)));
        assert_eq!(v, Verdict::Forward { port: PortId(1) });
        assert_eq!(dst_of(&out), server);
    }
    assert_eq!(u.g.events(Event::NonSynMiss), 0);
    // And back to one small worker: what fits is kept.
    let bytes = crash(u, &new.geometry);
    let small = want(1, 16);
    let carried = carry_over(bytes).unwrap();
    let r = restore(region(small.file_len()), &small, &env(3), &pool, carried).unwrap();
    assert_eq!(
        r.report.flows[0] + r.report.flows_no_room,
        2 * CONNS as usize + CONNS as usize
    );
}

#[test]
fn stamps_of_another_boot_are_reset_to_now() {
    let w = want(1, 1024);
    let pool = config();
    let mut u = cold(&w, &env(1), &pool);
    run_conns(&mut u);
    let bytes = crash(u, &w.geometry);
    let mut e = env(5);
    e.boot_id = [8; 16];
    let u = restart(bytes, &w, &e, &pool);
    assert!(u.report.restamped >= 2 * CONNS as usize);
    let now_ms = e.now.coarse_ms();
    assert!(u.g.workers[0]
        .flows
        .iter()
        .all(|(_, f)| f.last_seen == now_ms));
}

#[test]
fn record_layout() {
    // The sizes the layout documentation states, and no padding anywhere (Pod).
    assert_eq!(size_of::<Header>(), 88);
    assert_eq!(size_of::<Status>(), 40);
    assert_eq!(size_of::<BackendRecord>(), 104);
    assert_eq!(size_of::<VipRecord>(), 96);
    assert_eq!(size_of::<OwnerRecord>(), 88);
    assert_eq!(size_of::<FlowEntry>(), 64);
    let w = want(2, 1024);
    let l = Layout::of(&w.geometry);
    assert!(l
        .flows
        .iter()
        .all(|&(t, e)| t % ALIGN == 0 && e % ALIGN == 0));
    assert_eq!(l.len % ALIGN, 0);
}
