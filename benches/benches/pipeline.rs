//! Cost of `process()` per packet class (the targets in brackets):
//!
//! * `established/10k` [<= 15 ns], `established/1M` [<= 35 ns]: data packets of known flows,
//!   parse + VIP match + flow lookup + NAT rewrite with incremental checksums.
//!   `established/*/1M_hugepages`: the 1M flows' table on 2 MiB pages, as the daemon's (skipped
//!   when the system has no free huge pages).
//! * `dsr_established/{ipip4,gue6}/10k`: the same for a DSR VIP, the packet tunnelled (IPIP /
//!   GUE with the IPv6 UDP checksum from headers only) instead of NATed.
//! * `syn_new_flow/1M` [<= 120 ns]: SYN miss, Maglev pick, insert into a table holding 1M flows.
//! * `mp_capable_learn` [<= 80 ns]: SHA-256 of the server key + token-table insert, alone and as
//!   the whole backend SYN/ACK through the pipeline.
//! * `mp_join_syn` [<= 150 ns]: MP_JOIN SYN, token lookup in a 1M-token table + subflow insert.
//!
//! Every measured packet is first restored from its template (the pipeline rewrites in place);
//! `frame_reset` measures that copy alone so it can be subtracted.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use trapeze_benches::{client, client6, port, Bench};
use trapeze_core::crypto::token_from_key;
use trapeze_core::flow::FlowSecret;
use trapeze_core::pipeline::VecFrame;
use trapeze_core::pool::{Encap, OuterSource, PoolSnapshot};
use trapeze_core::tables::flow_table::{FlowTable, FlowTableConfig, WAYS};
use trapeze_core::tables::mem::TableMem;
use trapeze_core::tables::token::Owner;
use trapeze_core::testkit::{dsr_spec, join_syn, mpc_syn, mpc_synack, TcpSpec, BACKEND_PORT};
use trapeze_core::{FlowKey, Ticks};

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const SYNACK: u8 = 0x12;

fn frame_reset(c: &mut Criterion) {
    let frames: Vec<Vec<u8>> = (0..1024)
        .map(|i| TcpSpec::to_vip(client(i), port(i), ACK).build())
        .collect();
    let mut f = VecFrame::new(&frames[0]);
    c.bench_function("pipeline/frame_reset", |b| {
        let mut i = 0;
        b.iter(|| {
            f.reset(&frames[i & 1023]);
            i += 1;
            black_box(&f);
        })
    });
}

fn established(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline/established");
    g.throughput(Throughput::Elements(1));
    for &(n, label) in &[
        (10_000usize, "10k"),
        (1_000_000, "1M"),
        (1_000_000, "1M_hugepages"),
    ] {
        let mut bench = if label.ends_with("hugepages") {
            // The table on 2 MiB pages, as the daemon's (its state file on hugetlbfs): the
            // same flows without a TLB miss per table line.
            let Some(flows) = hugepage_flows(n * 2) else {
                eprintln!("established/{label}: skipped, no free huge pages (see README)");
                continue;
            };
            Bench::with_flows(trapeze_core::testkit::demo_pool(3), flows)
        } else {
            Bench::new(3, n * 2)
        };
        let syns: Vec<Vec<u8>> = (0..n)
            .map(|i| TcpSpec::to_vip(client(i), port(i), SYN).build())
            .collect();
        bench.run_all(&syns);
        drop(syns);
        let acks: Vec<Vec<u8>> = (0..n)
            .map(|k| (k * 7919) % n)
            .map(|i| TcpSpec::to_vip(client(i), port(i), ACK).build())
            .collect();
        // Packets are read in sequence (as from an RX ring) and hit flows in a scattered order,
        // so the flow table is not walked sequentially.
        let order: Vec<usize> = (0..n).collect();
        g.bench_function(BenchmarkId::new("one_at_a_time", label), |b| {
            b.iter_custom(|iters| bench.time_frames(&acks, &order, iters))
        });
        g.bench_function(BenchmarkId::new("burst32", label), |b| {
            b.iter_custom(|iters| bench.time_bursts(&acks, &order, iters))
        });
        assert!(
            bench.forwarded_all(),
            "established packets must all be forwarded"
        );
    }
    g.finish();
}

/// A flow table for `capacity` flows on anonymous 2 MiB pages (`MAP_HUGETLB`, through the FFI
/// crate), empty; `None` when the system cannot give the huge pages.
fn hugepage_flows(capacity: usize) -> Option<FlowTable> {
    let buckets = FlowTable::buckets_for(capacity);
    FlowTable::with_memory(
        FlowTableConfig::default(),
        FlowSecret::FIXED,
        TableMem::mapped(huge_records(buckets)?),
        TableMem::mapped(huge_records(buckets * WAYS)?),
    )
    .ok()
}

/// `n` zeroed records on huge pages, kept for the rest of the process.
fn huge_records<T: bytemuck::Pod>(n: usize) -> Option<&'static mut [T]> {
    let len = n * size_of::<T>();
    let (m, huge) = trapeze_dpdk::mapping::anonymous(len, true).ok()?;
    if !huge {
        return None;
    }
    bytemuck::try_cast_slice_mut(&mut m.leak()[..len]).ok()
}

/// DSR: data packets of 10k known flows tunnelled to their backend (IPIP over IPv4, GUE over
/// IPv6 with its UDP checksum), against the same packets NATed in `established/10k`.
fn dsr_established(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline/dsr_established");
    g.throughput(Throughput::Elements(1));
    let n = 10_000usize;
    let gue = Encap::Gue { port: 6080 };
    let hashed6 = OuterSource::Hashed {
        prefix: "fd00:1:200::".parse().unwrap(),
        len: 64,
    };
    for (label, encap, outer, v6) in [
        ("ipip4/10k", Encap::Ipip, OuterSource::Gateway, false),
        ("gue6/10k", gue, hashed6, true),
    ] {
        let mut spec = dsr_spec(3, encap, outer);
        spec.vips[usize::from(!v6)] = None;
        let mut bench = Bench::with_pool(PoolSnapshot::build(spec).unwrap(), n * 2);
        let frame = |i: usize, flags: u8| {
            let c = if v6 { client6(i) } else { client(i) };
            let mut s = TcpSpec::to_vip(c, port(i), flags);
            s.dst_port = BACKEND_PORT;
            s.build()
        };
        let syns: Vec<Vec<u8>> = (0..n).map(|i| frame(i, SYN)).collect();
        bench.run_all(&syns);
        let acks: Vec<Vec<u8>> = (0..n).map(|k| frame((k * 7919) % n, ACK)).collect();
        let order: Vec<usize> = (0..n).collect();
        g.bench_function(BenchmarkId::new("one_at_a_time", label), |b| {
            b.iter_custom(|iters| bench.time_frames(&acks, &order, iters))
        });
        g.bench_function(BenchmarkId::new("burst32", label), |b| {
            b.iter_custom(|iters| bench.time_bursts(&acks, &order, iters))
        });
        assert!(bench.forwarded_all(), "DSR packets must all be forwarded");
    }
    g.finish();
}

/// The time of `iters` packets from that of the `n` measured (criterion asks for as many as
/// it likes; past 2^32, an integer scale by `iters as u32` wrapped and reported picoseconds).
fn scaled(t: Duration, iters: u64, n: u64) -> Duration {
    Duration::from_secs_f64(t.as_secs_f64() * iters as f64 / n.max(1) as f64)
}

fn syn_new_flow(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline/syn_new_flow");
    g.throughput(Throughput::Elements(1));
    let base = 1_000_000usize;
    let mut bench = Bench::new(3, base * 2);
    let syns: Vec<Vec<u8>> = (0..base)
        .map(|i| TcpSpec::to_vip(client(i), port(i), SYN).build())
        .collect();
    bench.run_all(&syns);
    drop(syns);
    // Fresh SYNs from other clients: each one misses, picks a backend, inserts.
    let fresh: Vec<Vec<u8>> = (0..200_000)
        .map(|i| TcpSpec::to_vip(client(base + i), port(base + i), SYN).build())
        .collect();
    let order: Vec<usize> = (0..fresh.len()).collect();
    g.bench_function("1M", |b| {
        b.iter_custom(|iters| {
            // Remove the fresh flows again between batches so every measured SYN is a miss.
            let t = bench.time_frames(&fresh, &order, iters.min(fresh.len() as u64));
            bench.forget_clients(base, fresh.len());
            scaled(t, iters, iters.min(fresh.len() as u64))
        })
    });
    g.finish();
}

fn mp_capable_learn(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline/mp_capable_learn");
    g.throughput(Throughput::Elements(1));
    // The operation alone: token = SHA-256(key)[..4], then insert.
    let bench = Bench::new(3, 1 << 16);
    let mut k = 0u64;
    g.bench_function("sha256_and_token_insert", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                k = k.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let token = token_from_key(k);
                let owner = Owner {
                    backend: trapeze_core::pool::BackendId(1),
                    conn: FlowKey::default(),
                    server_key: k,
                    client_key: None,
                    learned_at: Ticks::ZERO,
                    last_seen: Ticks::ZERO,
                    subflows: 1,
                };
                black_box(bench.shared.tokens.learn(token, owner));
            }
            let t = start.elapsed();
            bench
                .shared
                .tokens
                .expire(Ticks::from_secs(1_000_000), Duration::from_secs(1));
            t
        })
    });
    // The whole backend SYN/ACK through the pipeline, for flows in SYN-sent state.
    let n = 100_000usize;
    let mut bench = Bench::new(3, n * 4);
    let syns: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            TcpSpec::to_vip(client(i), port(i), SYN)
                .with_mptcp(mpc_syn())
                .build()
        })
        .collect();
    let backends = bench.run_all_backends(&syns);
    let synacks: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            TcpSpec::from_backend(backends[i], client(i), port(i), SYNACK)
                .with_mptcp(mpc_synack(0x1000_0000 + i as u64))
                .build()
        })
        .collect();
    let order: Vec<usize> = (0..n).collect();
    g.bench_function("synack_through_pipeline", |b| {
        b.iter_custom(|iters| {
            let iters = iters.min(n as u64);
            bench.reset_handshakes(&syns);
            bench.time_frames_on(&synacks, &order, iters, 1)
        })
    });
    g.finish();
}

fn mp_join_syn(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline/mp_join_syn");
    g.throughput(Throughput::Elements(1));
    let tokens = 1_000_000usize;
    let mut bench = Bench::new(3, 1 << 21);
    bench.preload_tokens(tokens);
    let joins: Vec<Vec<u8>> = (0..200_000usize)
        .map(|i| {
            TcpSpec::to_vip(client(i), port(i), SYN)
                .with_mptcp(join_syn(token_from_key(Bench::token_key(i * 5 % tokens))))
                .build()
        })
        .collect();
    let order: Vec<usize> = (0..joins.len()).collect();
    g.bench_function("1M_tokens", |b| {
        b.iter_custom(|iters| {
            let n = iters.min(joins.len() as u64);
            let t = bench.time_frames(&joins, &order, n);
            bench.forget_clients(0, n as usize);
            scaled(t, iters, n)
        })
    });
    g.finish();
    // Only when the group ran: a filter that skips it measures nothing (and must not panic).
    assert!(bench.worker.stats.rx == 0 || bench.joins_routed() > 0);
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1)).sample_size(30);
    targets = frame_reset, established, dsr_established, syn_new_flow, mp_capable_learn, mp_join_syn
}
criterion_main!(benches);
