//! Runs one packet class in a loop, for profilers (`valgrind --tool=callgrind`, `perf`):
//! `cargo run --release -p trapeze-benches --example hot_path -- established 10000 100`.

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
        other => eprintln!("unknown class {other}"),
    }
}
