//! EAL on real hugepages when the machine has them (`HugePages_Free` and a hugetlbfs mount);
//! skipped with a message otherwise. Set up with:
//! `echo 256 > /proc/sys/vm/nr_hugepages; mkdir -p /dev/hugepages;
//! mountpoint -q /dev/hugepages || mount -t hugetlbfs nodev /dev/hugepages`.

#![cfg(not(tz_no_dpdk))]

// Every EAL of these tests passes --no-pci (and its own --file-prefix): `common::Prefix::args`.
mod common;

use trapeze_dpdk::{Eal, MbufBurst, Mempool, Port, PortConfig};

fn free_hugepages() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn hugetlbfs_mounted() -> bool {
    std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("hugetlbfs"))
}

#[test]
fn hugepage_backed_eal() {
    // 64 MB of 2 MB pages, plus slack for DPDK's own allocations.
    if free_hugepages() < 48 || !hugetlbfs_mounted() {
        eprintln!("SKIPPED: needs >= 48 free hugepages and a hugetlbfs mount");
        return;
    }
    let prefix = common::Prefix::new("huge");
    let eal = Eal::init(&prefix.args(&["-m", "64", "--huge-unlink", "--vdev=net_ring0"]))
        .expect("EAL on hugepages");
    let pool = Mempool::new(&eal, "tz_huge", 4095, 64, Mempool::DEFAULT_DATA_ROOM).unwrap();
    let mut port = Port::open(&eal, 0).unwrap();
    port.configure(&PortConfig::default(), pool).unwrap();
    port.start().unwrap();
    {
        let (mut rx, mut tx) = (port.rx_queue(0).unwrap(), port.tx_queue(0).unwrap());
        let mut b = MbufBurst::new();
        assert!(pool.alloc_into(&mut b, 8));
        for (i, m) in b.iter_mut().enumerate() {
            let f = common::frame(i as u8);
            assert!(m.set_len(f.len()));
            m.data_mut().copy_from_slice(&f);
        }
        assert_eq!(tx.tx_burst(&mut b), 8);
        assert_eq!(rx.rx_burst(&mut b), 8);
        assert_eq!(b.as_slice()[7].data(), &common::frame(7)[..]);
    }
    drop(port);
    drop(eal);
}
