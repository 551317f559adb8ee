//! One process: EAL on a `net_ring` vdev (its TX ring of queue i is its RX ring of queue i, so
//! everything sent comes back), a mempool, a configured port, a TX burst received back, mbuf
//! geometry, port queries and counters, and EAL cleanup.

#![cfg(not(tz_no_dpdk))]

// Every EAL of these tests passes --no-pci (and its own --file-prefix): `common::Prefix::args`.
mod common;

use trapeze_dpdk::{errno, lcore, Eal, Mbuf, MbufBurst, Mempool, Port, PortConfig, BURST_SIZE};

#[test]
fn ring_loopback() {
    let prefix = common::Prefix::new("ring");
    let eal = Eal::init(&prefix.args(&["--no-huge", "-m", "256", "--vdev=net_ring0"]))
        .expect("EAL init with --no-huge and net_ring0");
    assert!(Eal::is_live());
    assert_eq!(
        lcore::lcore_id(),
        Some(0),
        "the initialising thread is lcore 0"
    );
    assert!(lcore::tsc_hz() > 0);
    let t0 = lcore::tsc();
    assert!(lcore::tsc() >= t0);

    // A second EAL in the same process is refused, not a crash.
    let again = Eal::init(&prefix.args(&["--no-huge"])).unwrap_err();
    assert_eq!(again.errno, errno::EALREADY, "{again}");

    let pool =
        Mempool::new(&eal, "tz_ring_pool", 2047, 32, Mempool::DEFAULT_DATA_ROOM).expect("mempool");
    assert_eq!(pool.in_use(), 0);
    mbuf_geometry(&pool);

    assert_eq!(Port::count(&eal), 1);
    assert_eq!(Port::ids(&eal), vec![0]);
    let mut port = Port::open_by_name(&eal, "net_ring0").expect("port by vdev name");
    assert_eq!(port.id(), 0);
    assert_eq!(port.name().unwrap(), "net_ring0");
    assert_eq!(Port::open(&eal, 0).unwrap_err().errno, errno::EBUSY);

    let info = port.info().unwrap();
    assert_eq!(info.driver, "net_ring");
    assert!(info.max_rx_queues >= 2, "{info:?}");
    assert!(!info.supports_rss(), "net_ring has no RSS: {info:?}");

    // Queues cannot be taken before the port runs.
    assert_eq!(port.rx_queue(0).unwrap_err().errno, errno::EINVAL);

    let cfg = PortConfig {
        rx_queues: 2,
        tx_queues: 2,
        rx_descriptors: 256,
        tx_descriptors: 256,
        ..PortConfig::default()
    };
    let offloads = port.configure(&cfg, pool).expect("configure");
    assert_eq!(offloads.rss_hf, 0, "no RSS without device support");
    port.set_promiscuous(true).unwrap();
    assert!(port.promiscuous().unwrap());
    port.set_promiscuous(false).unwrap();
    // net_ring's MAC is all zeros; the call itself must work.
    port.mac_addr().unwrap();
    port.start().expect("start");
    let link = port.link().unwrap();
    assert!(link.up, "{link:?}");

    {
        let mut rxq = port.rx_queue(1).unwrap();
        let mut txq = port.tx_queue(1).unwrap();
        assert_eq!(port.rx_queue(1).unwrap_err().errno, errno::EBUSY);
        assert_eq!(port.tx_queue(2).unwrap_err().errno, errno::EINVAL);

        // TX a full burst with distinct payloads...
        let mut burst = MbufBurst::new();
        for seq in 0..BURST_SIZE as u8 {
            let mut m = pool.alloc().expect("alloc");
            let bytes = common::frame(seq);
            assert!(m.set_len(bytes.len()));
            m.data_mut().copy_from_slice(&bytes);
            burst.push(m).unwrap();
        }
        assert!(burst.is_full());
        assert_eq!(pool.in_use(), BURST_SIZE as u32);
        let sent = txq.tx_burst(&mut burst);
        assert_eq!(sent, BURST_SIZE);
        assert!(burst.is_empty());

        // ...and receive it back on the same queue, in order.
        let mut rx = MbufBurst::new();
        let mut got = 0;
        for _ in 0..100 {
            got += rxq.rx_burst(&mut rx);
            if got == BURST_SIZE {
                break;
            }
        }
        assert_eq!(got, BURST_SIZE);
        for (seq, m) in rx.iter().enumerate() {
            assert!(m.is_contiguous());
            assert_eq!(m.nb_segs(), 1);
            assert_eq!(m.data(), &common::frame(seq as u8)[..]);
            assert_eq!(m.rss_hash(), None);
        }

        // Unsent mbufs stay with the caller: fill the ring (net_ring: 1023 entries) without receiving.
        let mut unsent_total = 0;
        let mut sent_total = 0;
        for _ in 0..40 {
            let mut b = MbufBurst::new();
            assert!(pool.alloc_into(&mut b, BURST_SIZE));
            sent_total += txq.tx_burst(&mut b);
            unsent_total += b.len();
            b.clear();
        }
        assert!(unsent_total > 0, "the ring must fill up");
        assert_eq!(sent_total + unsent_total, 40 * BURST_SIZE);
        // Drain what was sent so the pool is whole again.
        let mut drained = 0;
        loop {
            let mut b = MbufBurst::new();
            let n = rxq.rx_burst(&mut b);
            if n == 0 {
                break;
            }
            drained += b.drain().count();
        }
        assert_eq!(drained, sent_total);

        // Queue 0 is independent of queue 1.
        let mut rx0 = port.rx_queue(0).unwrap();
        let mut b = MbufBurst::new();
        assert_eq!(rx0.rx_burst(&mut b), 0);

        // Forward what we received back out (a worker's loop), then take it in again.
        let n = txq.tx_burst(&mut rx);
        assert_eq!(n, BURST_SIZE);
        let mut again = MbufBurst::new();
        assert_eq!(rxq.rx_burst(&mut again), BURST_SIZE);
        let stats = port.stats().unwrap();
        assert_eq!(
            stats.opackets,
            (BURST_SIZE * 2 + sent_total) as u64,
            "{stats:?}"
        );
        assert_eq!(
            stats.ipackets,
            (BURST_SIZE * 2 + sent_total) as u64,
            "{stats:?}"
        );
        assert_eq!(stats.rx_nombuf, 0);
        assert_eq!(stats.imissed, 0);
        assert_eq!(stats.ierrors, 0);
    }
    assert_eq!(pool.in_use(), 0, "every mbuf is back in the pool");
    port.reset_stats().unwrap();
    assert_eq!(port.stats().unwrap().opackets, 0);

    port.stop().unwrap();
    drop(port);
    eal.cleanup().expect("rte_eal_cleanup");
    assert!(!Eal::is_live());
    let after = Eal::init(&prefix.args(&["--no-huge"])).unwrap_err();
    assert_eq!(after.errno, errno::EALREADY);
}

/// prepend / adj / set_len on a fresh mbuf.
fn mbuf_geometry(pool: &Mempool<'_>) {
    let mut m: Mbuf<'_> = pool.alloc().unwrap();
    assert_eq!(m.len(), 0);
    assert!(m.is_empty());
    assert!(m.is_contiguous());
    assert_eq!(m.headroom(), usize::from(Mempool::HEADROOM));
    let room = usize::from(Mempool::DEFAULT_DATA_ROOM - Mempool::HEADROOM);
    assert_eq!(m.tailroom(), room);

    assert!(m.set_len(60));
    assert_eq!((m.len(), m.data_len(), m.tailroom()), (60, 60, room - 60));
    m.data_mut().copy_from_slice(&[7u8; 60]);

    // Grow at the front (an encapsulation), then take it away.
    assert!(m.prepend(14));
    assert_eq!(m.len(), 74);
    assert_eq!(m.headroom(), 128 - 14);
    m.data_mut()[..14].fill(1);
    assert!(m.adj(14));
    assert_eq!(m.data(), &[7u8; 60][..]);

    // Failures change nothing.
    assert!(!m.prepend(129));
    assert!(!m.adj(61));
    assert!(!m.set_len(room + 1));
    assert!(!m.prepend(1 << 20));
    assert_eq!(m.len(), 60);

    assert!(m.set_len(20));
    assert_eq!(m.data(), &[7u8; 20][..]);
    assert!(m.set_len(room));
    assert_eq!(m.tailroom(), 0);
    assert!(m.set_len(0));
    assert!(m.is_empty());
    assert!(m.prepend(128));
    assert_eq!(m.headroom(), 0);
    m.prefetch();

    // Offload flags round trip.
    m.request_tx_checksum(
        14,
        20,
        trapeze_dpdk::TxIp::V4 {
            header_checksum: true,
        },
        trapeze_dpdk::TxL4::Tcp,
    );
    assert_ne!(m.ol_flags(), 0);
    m.set_ol_flags(0);
    assert_eq!(m.ol_flags(), 0);
    drop(m);

    // A burst frees what it holds; a drain frees what was not taken.
    let mut b = MbufBurst::new();
    assert!(pool.alloc_into(&mut b, 10));
    assert_eq!(pool.in_use(), 10);
    let first = b.drain().next();
    assert!(first.is_some());
    assert!(b.is_empty());
    assert_eq!(pool.in_use(), 1);
    drop(first);
    assert!(pool.alloc_into(&mut b, 3));
    assert_eq!(b.pop().map(|m| m.len()), Some(0));
    drop(b);
    assert_eq!(pool.in_use(), 0);
    assert!(!pool.alloc_into(&mut MbufBurst::new(), BURST_SIZE + 1));
}
