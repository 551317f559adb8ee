//! The threading model: workers are scoped std threads, pinned and registered as lcores, each
//! owning one RX and one TX queue of a multi-queue port, while the main thread reads counters.

#![cfg(not(tz_no_dpdk))]

// Every EAL of these tests passes --no-pci (and its own --file-prefix): `common::Prefix::args`.
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use trapeze_dpdk::{lcore, Eal, MbufBurst, Mempool, Port, PortConfig, BURST_SIZE};

const WORKERS: u16 = 2;
const ROUNDS: usize = 200;

#[test]
fn scoped_worker_threads() {
    let prefix = common::Prefix::new("workers");
    let eal = Eal::init(&prefix.args(&["--no-huge", "-m", "256", "--vdev=net_ring0"])).unwrap();
    let pool = Mempool::new(&eal, "tz_workers", 4095, 64, Mempool::DEFAULT_DATA_ROOM).unwrap();
    let mut port = Port::open_by_name(&eal, "net_ring0").unwrap();
    let cfg = PortConfig {
        rx_queues: WORKERS,
        tx_queues: WORKERS,
        ..PortConfig::default()
    };
    port.configure(&cfg, pool).unwrap();
    port.start().unwrap();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;

    let done = AtomicBool::new(false);
    let port = &port;
    let eal = &eal;
    let received: Vec<usize> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..WORKERS)
            .map(|q| {
                let mut rxq = port.rx_queue(q).unwrap();
                let mut txq = port.tx_queue(q).unwrap();
                s.spawn(move || {
                    lcore::pin_current_thread(u32::from(q) % cpus).unwrap();
                    assert_eq!(lcore::lcore_id(), None, "not an lcore yet");
                    let _reg = lcore::register_thread(eal).unwrap();
                    let id = lcore::lcore_id().expect("registered");
                    assert_ne!(id, 0, "lcore 0 is the main thread");
                    assert!(lcore::register_thread(eal).is_err(), "registered twice");

                    let mut got = 0;
                    let mut rx = MbufBurst::new();
                    for round in 0..ROUNDS {
                        let mut b = MbufBurst::new();
                        assert!(pool.alloc_into(&mut b, BURST_SIZE));
                        for m in b.iter_mut() {
                            let f = common::frame(q as u8 ^ round as u8);
                            assert!(m.set_len(f.len()));
                            m.data_mut().copy_from_slice(&f);
                        }
                        while !b.is_empty() {
                            txq.tx_burst(&mut b);
                            got += rxq.rx_burst(&mut rx);
                            for m in rx.drain() {
                                assert_eq!(m.data()[14] ^ (m.data()[15].wrapping_sub(1)), 0);
                            }
                        }
                    }
                    loop {
                        let n = rxq.rx_burst(&mut rx);
                        rx.clear();
                        if n == 0 {
                            break;
                        }
                        got += n;
                    }
                    got
                })
            })
            .collect();
        // The control thread reads counters while the workers run.
        while !handles.iter().all(|h| h.is_finished()) {
            let _ = port.stats().unwrap();
            let _ = port.link().unwrap();
            std::thread::yield_now();
        }
        done.store(true, Ordering::Release);
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(done.load(Ordering::Acquire));
    assert_eq!(received, vec![ROUNDS * BURST_SIZE; usize::from(WORKERS)]);
    let stats = port.stats().unwrap();
    assert_eq!(
        stats.ipackets,
        (ROUNDS * BURST_SIZE * usize::from(WORKERS)) as u64
    );
    assert_eq!(pool.in_use(), 0);
}
