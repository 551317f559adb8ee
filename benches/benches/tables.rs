//! Benchmarks of the core's tables: Maglev build and lookup, the shared MPTCP token table
//! (single thread and with a second thread hammering it).
//!
//! Targets (perf anchors §6(a), 2-vCPU VM): Maglev build M = 65537, N ≤ 1000 ≤ 2 ms (stretch
//! ≤ 1 ms); Maglev lookup ≤ 5 ns; token lookup ≤ 25 ns at 1M tokens.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use trapeze_core::flow::fmix;
use trapeze_core::pool::BackendId;
use trapeze_core::tables::maglev::{MaglevBackend, MaglevTable, DEFAULT_SIZE};
use trapeze_core::tables::token::{JoinRoute, LearnOutcome, Owner, TokenTable, TokenTableConfig};
use trapeze_core::{FlowKey, Ticks};

fn pool(n: u16) -> Vec<MaglevBackend> {
    (0..n)
        .map(|i| {
            let addr =
                std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 1, (i >> 8) as u8, i as u8));
            MaglevBackend::new(BackendId(i), addr, 8080, 1)
        })
        .collect()
}

fn maglev(c: &mut Criterion) {
    let mut g = c.benchmark_group("maglev_build_65537");
    g.sample_size(30);
    for n in [10u16, 100, 1000] {
        let b = pool(n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &b, |bench, b| {
            bench.iter(|| MaglevTable::build(black_box(b), DEFAULT_SIZE).expect("valid pool"))
        });
    }
    let weighted: Vec<MaglevBackend> = pool(1000)
        .into_iter()
        .enumerate()
        .map(|(i, mut b)| {
            b.weight = 1 + (i as u32 % 10) * 10;
            b
        })
        .collect();
    g.bench_function("1000_weighted", |bench| {
        bench.iter(|| MaglevTable::build(black_box(&weighted), DEFAULT_SIZE).expect("valid pool"))
    });
    g.finish();

    let t = MaglevTable::build(&pool(100), DEFAULT_SIZE).expect("valid pool");
    let hashes: Vec<u64> = (0..1024u64).map(fmix).collect();
    let mut g = c.benchmark_group("maglev_lookup");
    g.throughput(Throughput::Elements(hashes.len() as u64));
    g.bench_function("1024_lookups", |bench| {
        bench.iter(|| {
            let mut acc = 0u32;
            for &h in &hashes {
                acc = acc.wrapping_add(u32::from(t.lookup(black_box(h)).map_or(0, |b| b.0)));
            }
            acc
        })
    });
    g.finish();
}

/// Distinct tokens (odd multiplication is a bijection of u32), well spread over the shards.
fn token_of(i: u32) -> u32 {
    i.wrapping_mul(0x9e37_79b1) ^ 0x5bd1_e995
}

fn owner(backend: u16, i: u32) -> Owner {
    Owner {
        backend: BackendId(backend),
        conn: FlowKey::new(
            std::net::IpAddr::V4(std::net::Ipv4Addr::from(i)),
            40000,
            std::net::IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 10)),
            443,
            6,
        ),
        server_key: u64::from(i),
        client_key: None,
        learned_at: Ticks(0),
        last_seen: Ticks(0),
        subflows: 1,
    }
}

const LIVE: u32 = 1_000_000;

fn filled_table() -> TokenTable {
    let t = TokenTable::new(TokenTableConfig {
        capacity: 1 << 21,
        shards: 64,
    });
    for i in 0..LIVE {
        let _ = t.learn(token_of(i), owner((i % 1000) as u16, i));
    }
    t
}

fn token(c: &mut Criterion) {
    let t = filled_table();
    // Random order over the live tokens, so every lookup is a cache miss as in production.
    let probes: Vec<u32> = (0..4096u64)
        .map(|k| token_of((fmix(k) % u64::from(LIVE)) as u32))
        .collect();
    let mut g = c.benchmark_group("token_1M");
    g.throughput(Throughput::Elements(probes.len() as u64));
    g.bench_function("route_join_hit", |bench| {
        bench.iter(|| {
            let mut hits = 0u32;
            for &tok in &probes {
                hits += u32::from(matches!(
                    t.route_join(black_box(tok), Ticks(1)),
                    JoinRoute::Owner(_)
                ));
            }
            hits
        })
    });
    let misses: Vec<u32> = (0..4096u32)
        .map(|k| token_of(LIVE + 1 + k * 7919))
        .collect();
    g.bench_function("route_join_miss", |bench| {
        bench.iter(|| {
            let mut n = 0u32;
            for &tok in &misses {
                n += u32::from(t.route_join(black_box(tok), Ticks(1)) == JoinRoute::Unknown);
            }
            n
        })
    });
    // A connection's life in the table: learn, then its only subflow closes (removal).
    let fresh: Vec<u32> = (0..4096u32).map(|k| token_of(2 * LIVE + k)).collect();
    g.bench_function("learn_then_subflow_closed", |bench| {
        bench.iter(|| {
            for (k, &tok) in fresh.iter().enumerate() {
                let out = t.learn(tok, owner(7, k as u32));
                debug_assert_eq!(out, LearnOutcome::Inserted);
                black_box(out);
                black_box(t.subflow_closed(tok, BackendId(7), Ticks(2)));
            }
        })
    });
    g.finish();

    // Two threads at once: the measured thread routes joins while a second thread keeps
    // learning and removing other tokens (write locks on the same shards) and routing.
    let mut g = c.benchmark_group("token_1M_two_threads");
    g.throughput(Throughput::Elements(probes.len() as u64));
    g.bench_function("route_join_hit_vs_writer", |bench| {
        bench.iter_custom(|iters| {
            with_writer(&t, || {
                timed(iters, || {
                    black_box(route_all(&t, &probes));
                })
            })
        })
    });
    g.bench_function("learn_close_vs_writer", |bench| {
        bench.iter_custom(|iters| {
            with_writer(&t, || {
                timed(iters, || {
                    for (k, &tok) in fresh.iter().enumerate() {
                        black_box(t.learn(tok, owner(9, k as u32)));
                        black_box(t.subflow_closed(tok, BackendId(9), Ticks(2)));
                    }
                })
            })
        })
    });
    g.finish();
}

fn route_all(t: &TokenTable, probes: &[u32]) -> u32 {
    let mut hits = 0u32;
    for &tok in probes {
        hits += u32::from(matches!(
            t.route_join(black_box(tok), Ticks(1)),
            JoinRoute::Owner(_)
        ));
    }
    hits
}

fn timed(iters: u64, mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed()
}

/// Runs `measure` while a second thread learns, routes and removes tokens disjoint from the
/// measured ones (same shards, so the locks are shared).
fn with_writer(t: &TokenTable, measure: impl FnOnce() -> Duration) -> Duration {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut k = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let tok = token_of(3 * LIVE + (k & 0xffff));
                let _ = t.learn(tok, owner(11, k));
                black_box(t.route_join(token_of(k % LIVE), Ticks(3)));
                let _ = t.subflow_closed(tok, BackendId(11), Ticks(3));
                k = k.wrapping_add(1);
            }
        });
        let d = measure();
        stop.store(true, Ordering::Relaxed);
        d
    })
}

criterion_group!(benches, maglev, token);
criterion_main!(benches);
