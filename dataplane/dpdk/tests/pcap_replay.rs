//! `net_pcap` replays a real capture (`dataplane/testdata/captures`) into a port and records
//! what is sent: the shape of the daemon's golden-file tests. Every frame read must come out
//! byte for byte, and `net_pcap` has no MTU setter (`ENOTSUP`).

#![cfg(not(tz_no_dpdk))]

// Every EAL of these tests passes --no-pci (and its own --file-prefix): `common::Prefix::args`.
mod common;

use std::path::{Path, PathBuf};
use trapeze_dpdk::{errno, Eal, MbufBurst, Mempool, Port, PortConfig};

/// The frames of a classic little-endian pcap file (micro- or nanosecond timestamps).
fn pcap_frames(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    let magic = u32::from_le_bytes(bytes[..4].try_into().unwrap());
    assert!(
        magic == 0xa1b2_c3d4 || magic == 0xa1b2_3c4d,
        "little-endian pcap (micro- or nanosecond)"
    );
    let mut frames = Vec::new();
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let incl = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        frames.push(bytes[at + 16..at + 16 + incl].to_vec());
        at += 16 + incl;
    }
    frames
}

/// Removes the output capture however the test ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn pcap_in_pcap_out() {
    let input = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/captures/v4_mptcp_join.client.pcap");
    let output =
        RemoveOnDrop(std::env::temp_dir().join(format!("tz-pcap-out-{}.pcap", std::process::id())));
    let output = &output.0;
    let frames = pcap_frames(&input);
    assert!(!frames.is_empty());

    let prefix = common::Prefix::new("pcap");
    let vdev = format!(
        "--vdev=net_pcap0,rx_pcap={},tx_pcap={}",
        input.display(),
        output.display()
    );
    let eal = Eal::init(&prefix.args(&["--no-huge", "-m", "128", &vdev])).unwrap();
    let pool = Mempool::new(&eal, "tz_pcap", 1023, 0, Mempool::DEFAULT_DATA_ROOM).unwrap();
    let mut port = Port::open_by_name(&eal, "net_pcap0").unwrap();
    assert_eq!(port.info().unwrap().driver, "net_pcap");
    port.configure(&PortConfig::default(), pool).unwrap();
    assert_eq!(port.set_mtu(9000).unwrap_err().errno, errno::ENOTSUP);
    port.start().unwrap();
    {
        let (mut rx, mut tx) = (port.rx_queue(0).unwrap(), port.tx_queue(0).unwrap());
        let mut got = Vec::new();
        let mut b = MbufBurst::new();
        for _ in 0..1000 {
            if rx.rx_burst(&mut b) == 0 && got.len() >= frames.len() {
                break;
            }
            for m in b.iter() {
                assert!(m.is_contiguous());
                got.push(m.data().to_vec());
            }
            while !b.is_empty() {
                tx.tx_burst(&mut b);
            }
        }
        assert_eq!(got, frames);
    }
    let stats = port.stats().unwrap();
    assert_eq!(stats.ipackets, frames.len() as u64);
    assert_eq!(stats.opackets, frames.len() as u64);
    drop(port); // closes the port, which flushes the output file
    drop(eal);
    let written = pcap_frames(output);
    assert_eq!(written, frames);
}
