//! One process in a network namespace of its own: an `net_af_packet` port on one end of a veth
//! pair with a small ring that nobody polls, a burst of frames sent into the other end, and the
//! frames the kernel dropped at the full ring in the port's `imissed` (DPDK 22.11's PMD leaves
//! them out; `Port::stats` reads them from the socket's `PACKET_STATISTICS`).
//!
//! Needs root and `ip` (iproute2) and python3 (to send raw frames); skipped otherwise. The test
//! re-runs itself inside `ip netns exec tzp-afp-<pid>`, so the namespace, its veths and the
//! EAL live and die with that child.

#![cfg(not(tz_no_dpdk))]

mod common;

use std::process::Command;

use trapeze_dpdk::{Eal, MbufBurst, Mempool, Port, PortConfig};

const CHILD: &str = "TZ_AFP_DROPS_CHILD";
const FRAMES: usize = 2000;
const RING: usize = 64;

fn sh(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", cmd])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn af_packet_ring_drops_are_counted() {
    if std::env::var_os(CHILD).is_some() {
        child();
        return;
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if !root || !sh("command -v ip >/dev/null && command -v python3 >/dev/null") {
        eprintln!("skipped: needs root, ip and python3");
        return;
    }
    let ns = format!("tzp-afp-{}", std::process::id());
    assert!(sh(&format!("ip netns add {ns}")), "ip netns add {ns}");
    let exe = std::env::current_exe().expect("test binary");
    let status = Command::new("ip")
        .args(["netns", "exec", &ns])
        .arg(exe)
        .args([
            "--exact",
            "af_packet_ring_drops_are_counted",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .status();
    sh(&format!("ip netns del {ns}"));
    assert!(status.expect("run the child").success(), "the child failed");
}

fn child() {
    for cmd in [
        "sysctl -qw net.ipv6.conf.all.disable_ipv6=1",
        "sysctl -qw net.ipv6.conf.default.disable_ipv6=1",
        "ip link add tzpa type veth peer name tzpb",
        "ip link set tzpa up",
        "ip link set tzpb up",
    ] {
        assert!(sh(cmd), "{cmd}");
    }
    let prefix = common::Prefix::new("afpdrops");
    // prefix.args puts --no-pci and this test's own --file-prefix before these.
    let vdev = format!("--vdev=net_af_packet0,iface=tzpa,framecnt={RING}");
    let eal = Eal::init(&prefix.args(&["--no-huge", "-m", "256", &vdev])).expect("EAL init");
    let pool =
        Mempool::new(&eal, "tz_afp_pool", 1023, 32, Mempool::DEFAULT_DATA_ROOM).expect("mempool");
    let mut port = Port::open_by_name(&eal, "net_af_packet0").expect("port");
    assert_eq!(port.info().unwrap().driver, "net_af_packet");
    let cfg = PortConfig {
        rx_queues: 1,
        tx_queues: 1,
        ..PortConfig::default()
    };
    port.configure(&cfg, pool).expect("configure");
    port.start().expect("start");
    let before = port.stats().unwrap();

    // A burst far larger than the ring, with nobody polling.
    let send = format!(
        "python3 -c \"import socket; s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); \
         s.bind(('tzpb', 0)); f = bytes.fromhex('ffffffffffff02000000000108004500') + bytes(50); \
         [s.send(f) for _ in range({FRAMES})]\""
    );
    assert!(sh(&send), "send the burst");
    std::thread::sleep(std::time::Duration::from_millis(200));

    let after = port.stats().unwrap();
    let dropped = after.imissed - before.imissed;
    // Now drain what the ring held.
    let mut received = 0;
    {
        let mut rxq = port.rx_queue(0).unwrap();
        let mut burst = MbufBurst::new();
        for _ in 0..1000 {
            let n = rxq.rx_burst(&mut burst);
            received += n;
            burst.clear();
            if n == 0 {
                break;
            }
        }
    }
    eprintln!("sent {FRAMES}, ring {RING}: received {received}, imissed {dropped}");
    assert!(received > 0 && received <= RING, "received {received}");
    assert!(dropped > 0, "the kernel's drops are counted");
    assert_eq!(
        received as u64 + dropped,
        FRAMES as u64,
        "every frame was received or counted as dropped"
    );
    // The count stays (the socket's own is reset by each read; the port keeps the sum).
    assert_eq!(port.stats().unwrap().imissed, after.imissed);
    port.stop().expect("stop");
}
