//! Runs one packet class in a loop, for profilers (`valgrind --tool=callgrind`, `perf`):
//! `cargo run --release -p trapeze-benches --example hot_path -- established 10000 100`.
//! Classes: `established`, `established-burst`, `syn`, `learn`.

use std::hint::black_box;

use trapeze_benches::{client, port, Bench};
use trapeze_core::testkit::TcpSpec;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let class = args.get(1).map_or("established", String::as_str);
    let flows: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let rounds: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(100);
    let mut bench = Bench::new(3, flows * 2);
    let syns: Vec<Vec<u8>> = (0..flows)
        .map(|i| TcpSpec::to_vip(client(i), port(i), 0x02).build())
        .collect();
    bench.run_all(&syns);
    let acks: Vec<Vec<u8>> = (0..flows)
        .map(|k| (k * 7919) % flows)
        .map(|i| TcpSpec::to_vip(client(i), port(i), 0x10).build())
        .collect();
    let order: Vec<usize> = (0..flows).collect();
    match class {
        "established" => {
            let t = bench.time_frames(&acks, &order, (flows * rounds) as u64);
            black_box(t);
            println!(
                "{:.1} ns/packet",
                t.as_nanos() as f64 / (flows * rounds) as f64
            );
        }
        "established-burst" => {
            let t = bench.time_bursts(&acks, &order, (flows * rounds) as u64);
            println!(
                "{:.1} ns/packet",
                t.as_nanos() as f64 / (flows * rounds) as f64
            );
        }
        "syn" => {
            // New connections: miss, Maglev, insert. Each round first forgets the flows
            // (outside the timing), so every SYN is new.
            let mut total = std::time::Duration::ZERO;
            for _ in 0..rounds {
                bench.forget_clients(0, flows);
                total += bench.time_frames(&syns, &order, flows as u64);
            }
            println!(
                "{:.1} ns/SYN",
                total.as_nanos() as f64 / (flows * rounds) as f64
            );
        }
        "learn" => {
            // SHA-256 of a key + token insert, in batches of `flows`, the table emptied between
            // batches (outside the timing).
            let mut total = std::time::Duration::ZERO;
            let mut k = 0u64;
            for _ in 0..rounds {
                let start = std::time::Instant::now();
                for _ in 0..flows {
                    k = k.wrapping_add(0x9e37_79b9_7f4a_7c15);
                    let owner = trapeze_core::tables::token::Owner {
                        backend: trapeze_core::pool::BackendId(1),
                        conn: trapeze_core::FlowKey::default(),
                        server_key: k,
                        client_key: None,
                        learned_at: trapeze_core::Ticks::ZERO,
                        last_seen: trapeze_core::Ticks::ZERO,
                        subflows: 1,
                    };
                    black_box(
                        bench
                            .shared
                            .tokens
                            .learn(trapeze_core::crypto::token_from_key(k), owner),
                    );
                }
                total += start.elapsed();
                bench.shared.tokens.expire(
                    trapeze_core::Ticks::from_secs(1 << 30),
                    std::time::Duration::ZERO,
                );
            }
            println!(
                "{:.1} ns/learn",
                total.as_nanos() as f64 / (flows * rounds) as f64
            );
        }
        other => eprintln!("unknown class {other}"),
    }
}
