//! One packet class for `benches/budget.py`, which runs this under callgrind and counts the
//! instructions of [`one`] or [`burst`] alone (`--toggle-collect`): `process()` or
//! `process_burst()` and their call, not the copy that loads each frame; divided by the packets
//! decided.
//!
//! `budget CLASS PACKETS [FLAG_FILE]`: builds the tables (unmeasured), prints `ready`, waits
//! until FLAG_FILE exists (the script switches callgrind's instrumentation on meanwhile, so the
//! set-up runs uninstrumented and fast), then decides PACKETS packets ([`measure`]).
//!
//! Classes:
//! * `established`: ACKs of 10k established flows, one `process()` each;
//! * `established-burst`: the same in bursts of 32 (`process_burst`);
//! * `syn`: SYNs of new clients with 1M flows in the table: miss, Maglev, insert;
//! * `join`: MP_JOIN SYNs with 1M connections' tokens in the token table: token lookup, owner,
//!   subflow insert;
//! * `publish`: a worker publishing its counters for the control thread (every 64 loops), as
//!   the daemon does: the live ids of a pool of 3 VIPs and 4 backends out of tables sized for
//!   256 VIPs and 4096 backends (`WorkerStats::copy_live_from`); per publication, not per packet.

use std::hint::black_box;
use std::path::Path;

use trapeze_benches::{client, port, Bench};
use trapeze_core::crypto::token_from_key;
use trapeze_core::pipeline::{Verdict, WorkerStats, BURST};
use trapeze_core::testkit::{join_syn, TcpSpec};

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

/// Runs `n` packets of `frames` in `order`, one at a time or in bursts. Loading a frame (the
/// copy a driver would have made) is not counted; deciding it is ([`one`], [`burst`]).
fn measure(bench: &mut Bench, frames: &[Vec<u8>], order: &[usize], n: u64, burst: bool) {
    let mut k = 0;
    let mut next = || {
        let f = &frames[order[k]];
        k = (k + 1) % order.len();
        f.as_slice()
    };
    if burst {
        for _ in 0..n.div_ceil(BURST as u64) {
            let b: [&[u8]; BURST] = core::array::from_fn(|_| next());
            bench.load_burst(&b);
            self::burst(bench);
        }
    } else {
        for _ in 0..n {
            bench.load(next());
            let _ = black_box(one(bench));
        }
    }
}

/// What is measured: `process()` of one loaded frame.
#[inline(never)]
fn one(bench: &mut Bench) -> Verdict {
    bench.decide_loaded()
}

/// What is measured in bursts: `process_burst()` of [`BURST`] loaded frames.
#[inline(never)]
fn burst(bench: &mut Bench) {
    bench.decide_loaded_burst();
}

/// What is measured for `publish`: `n` publications of a worker's counters.
#[inline(never)]
fn publish(board: &mut WorkerStats, w: &WorkerStats, n: usize) {
    for _ in 0..n {
        board.copy_live_from(black_box(w), 3, 4);
    }
}

/// Waits until `flag` exists, spinning with short sleeps so that callgrind, whose
/// instrumentation the script switches on meanwhile, keeps running code and sees the request.
fn wait_for(flag: Option<&Path>) {
    if let Some(flag) = flag {
        while !flag.exists() {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let class = args.get(1).map_or("established", String::as_str);
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let flag = args.get(3).map(Path::new);
    if class == "publish" {
        let w = WorkerStats::new(256, 4096);
        let mut board = WorkerStats::new(256, 4096);
        println!("ready");
        wait_for(flag);
        publish(&mut board, &w, n);
        black_box(&board);
        println!("done {n}");
        return;
    }
    let (mut bench, frames, burst) = match class {
        "established" | "established-burst" => {
            let flows = 10_000;
            let mut bench = Bench::new(3, flows * 2);
            let syns: Vec<Vec<u8>> = (0..flows)
                .map(|i| TcpSpec::to_vip(client(i), port(i), SYN).build())
                .collect();
            bench.run_all(&syns);
            let acks: Vec<Vec<u8>> = (0..flows)
                .map(|k| (k * 7919) % flows)
                .map(|i| TcpSpec::to_vip(client(i), port(i), ACK).build())
                .collect();
            // One pass unmeasured: the measured packets find every flow established.
            bench.run_all(&acks);
            (bench, acks, class == "established-burst")
        }
        "syn" => {
            let base = 1_000_000;
            let mut bench = Bench::new(3, base * 2);
            for chunk in (0..base).collect::<Vec<_>>().chunks(100_000) {
                let syns: Vec<Vec<u8>> = chunk
                    .iter()
                    .map(|&i| TcpSpec::to_vip(client(i), port(i), SYN).build())
                    .collect();
                bench.run_all(&syns);
            }
            let fresh: Vec<Vec<u8>> = (0..n)
                .map(|i| TcpSpec::to_vip(client(base + i), port(base + i), SYN).build())
                .collect();
            (bench, fresh, false)
        }
        "join" => {
            let tokens = 1_000_000;
            let mut bench = Bench::new(3, 1 << 21);
            bench.preload_tokens(tokens);
            let joins: Vec<Vec<u8>> = (0..n)
                .map(|i| {
                    TcpSpec::to_vip(client(i), port(i), SYN)
                        .with_mptcp(join_syn(token_from_key(Bench::token_key(i * 5 % tokens))))
                        .build()
                })
                .collect();
            (bench, joins, false)
        }
        other => {
            eprintln!("unknown class {other}");
            std::process::exit(2);
        }
    };
    let order: Vec<usize> = (0..frames.len()).collect();
    println!("ready");
    wait_for(flag);
    measure(&mut bench, &frames, &order, n as u64, burst);
    if class == "join" {
        // A few of 1M random tokens collide (ambiguous: refused); nearly every join is routed.
        assert!(bench.joins_routed() * 100 >= n as u64 * 99, "joins routed");
    } else {
        assert!(bench.forwarded_all(), "every packet forwarded");
    }
    println!("done {n}");
}
