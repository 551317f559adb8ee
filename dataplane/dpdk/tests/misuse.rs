//! Port, queue and mempool misuse on a live EAL (`net_null` vdev): errors, not crashes.

#![cfg(not(tz_no_dpdk))]

// Every EAL of these tests passes --no-pci (and its own --file-prefix): `common::Prefix::args`.
mod common;

use trapeze_dpdk::{errno, Eal, Mempool, Port, PortConfig};

#[test]
fn misuse_is_an_error() {
    let prefix = common::Prefix::new("misuse");
    let eal = Eal::init(&prefix.args(&["--no-huge", "-m", "128", "--vdev=net_null0"])).unwrap();

    // Ports.
    assert_eq!(Port::count(&eal), 1);
    assert_eq!(Port::open(&eal, 7).unwrap_err().errno, errno::ENODEV);
    assert_eq!(Port::open(&eal, 4000).unwrap_err().errno, errno::ENODEV);
    let err = Port::open_by_name(&eal, "net_nonexistent0").unwrap_err();
    assert!(err.msg.contains("net_nonexistent0"), "{err}");
    let mut port = Port::open_by_name(&eal, "net_null0").unwrap();
    assert_eq!(Port::open(&eal, port.id()).unwrap_err().errno, errno::EBUSY);
    assert_eq!(
        port.start().unwrap_err().errno,
        errno::EINVAL,
        "start before configure"
    );

    // Mempools.
    let err = Mempool::new(&eal, "a_name_longer_than_25_bytes", 511, 0, 2176).unwrap_err();
    assert_eq!(err.errno, errno::EINVAL, "{err}");
    assert_eq!(
        Mempool::new(&eal, "tz_small", 511, 0, 64)
            .unwrap_err()
            .errno,
        errno::EINVAL,
        "data room below the headroom"
    );
    let pool = Mempool::new(&eal, "tz_err_pool", 511, 16, Mempool::DEFAULT_DATA_ROOM).unwrap();
    let err = Mempool::new(&eal, "tz_err_pool", 511, 16, Mempool::DEFAULT_DATA_ROOM).unwrap_err();
    assert_eq!(err.errno, errno::EEXIST, "{err}");
    let err = Mempool::new(&eal, "tz_huge_pool", 1 << 24, 0, 9000).unwrap_err();
    assert_eq!(err.errno, errno::ENOMEM, "{err}");

    // Bad port configurations.
    let too_many = PortConfig {
        rx_queues: u16::MAX,
        ..PortConfig::default()
    };
    assert_eq!(
        port.configure(&too_many, pool).unwrap_err().errno,
        errno::EINVAL
    );
    let zero = PortConfig {
        tx_queues: 0,
        ..PortConfig::default()
    };
    assert_eq!(
        port.configure(&zero, pool).unwrap_err().errno,
        errno::EINVAL
    );
    let bad_key = PortConfig {
        rss_key: Some(vec![0x6d; 3]),
        ..PortConfig::default()
    };
    // net_null does RSS (over its queues) with a 40-byte key.
    let info = port.info().unwrap();
    assert!(info.supports_rss(), "{info:?}");
    assert_eq!(
        port.configure(&bad_key, pool).unwrap_err().errno,
        errno::EINVAL
    );

    // A good configuration, then misuse of a started port.
    let good_key = PortConfig {
        rx_queues: 2,
        rss_key: Some([0x6d, 0x5a].repeat(usize::from(info.hash_key_size) / 2)),
        ..PortConfig::default()
    };
    let offloads = port.configure(&good_key, pool).unwrap();
    assert_ne!(offloads.rss_hf, 0, "{offloads:?}");
    let offloads = port.configure(&PortConfig::default(), pool).unwrap();
    assert_eq!(offloads.rx_descriptors, 1024);
    port.start().unwrap();
    assert_eq!(
        port.configure(&PortConfig::default(), pool)
            .unwrap_err()
            .errno,
        errno::EBUSY
    );
    let q = port.tx_queue(0).unwrap();
    assert_eq!(port.tx_queue(0).unwrap_err().errno, errno::EBUSY);
    drop(q);
    let q = port
        .tx_queue(0)
        .expect("a dropped handle releases its queue");
    drop(q);
    port.stop().unwrap();
    assert_eq!(
        port.rx_queue(0).unwrap_err().errno,
        errno::EINVAL,
        "stopped"
    );

    // Dropping a port closes it: a vdev is gone afterwards.
    drop(port);
    assert_eq!(Port::count(&eal), 0);
    drop(eal);
}
