//! Golden replay through the real daemon: the Linux MPTCP captures of `dataplane/testdata`
//! (pairs of pcaps recorded on both sides of a Linux DNAT) are fed to `trapeze-gatewayd` on a
//! DPDK `net_pcap` port, and what it sends must be what Linux sent.
//!
//! One arm: a single port `net_pcap0,rx_pcap=IN,tx_pcap=OUT` carries the gateway's client-side
//! and server-side addresses, the two VIPs (NAT) and the one backend of the captures
//! (`trapeze_core::testkit::capture`). IN interleaves, in capture order, the frames the client
//! sent (client side, destination = VIP) and the frames the server sent (server side, source =
//! the server's address and port 8080); frames that touch neither (the ADD_ADDR capture's join
//! straight to the announced address 198.51.100.11) are left out. The daemon runs until it has
//! sent one frame per input frame, then stops on SIGTERM; it must exit 0 and print its final
//! counters. Frame by frame, OUT must hold Linux's frame of the other side: byte for byte from the
//! IP header on, with the destination MAC Linux used (the server's static MAC towards the server,
//! the client's MAC, learned from its SYN, towards the client) and the port's MAC as source.
//!
//! Needs DPDK at run time (`--no-huge`, `--no-pci`, a file prefix per run).
#![cfg(not(tz_no_dpdk))]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use trapeze_core::testkit::capture::{NATC0, SRV0, VIP4, VIP6};
use trapeze_wire::pcap;

/// The server of the captures (the backend `srv`).
const SERVER4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const SERVER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x10);
const SERVER_PORT: u16 = 8080;
/// The client's MAC in the captures.
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x10];
/// How long the daemon gets to send everything, and to stop.
const TIMEOUT: Duration = Duration::from_secs(10);

fn read_pcap(path: &Path) -> Vec<(u32, u32, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    pcap::Reader::new(&bytes)
        .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()))
        .map(|r| {
            let r = r.unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
            (r.ts_sec, r.ts_frac, r.data.to_vec())
        })
        .collect()
}

/// Complete records in a pcap that may still be being written (0 while it has no header).
fn records_so_far(path: &Path) -> usize {
    let Ok(bytes) = std::fs::read(path) else {
        return 0;
    };
    pcap::Reader::new(&bytes).map_or(0, |r| r.take_while(Result::is_ok).count())
}

fn capture(name: &str, side: &str) -> Vec<(u32, u32, Vec<u8>)> {
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "..",
        "testdata",
        "captures",
        &format!("{name}.{side}.pcap"),
    ]
    .iter()
    .collect();
    read_pcap(&path)
}

/// Source and destination (address, TCP port) and the offset of the IP header of an untagged
/// IPv4 or IPv6 TCP frame (what the captures hold).
fn endpoints(f: &[u8]) -> ((IpAddr, u16), (IpAddr, u16)) {
    let port = |o: usize| u16::from_be_bytes([f[o], f[o + 1]]);
    match u16::from_be_bytes([f[12], f[13]]) {
        0x0800 => {
            let a = |o: usize| IpAddr::V4(Ipv4Addr::new(f[o], f[o + 1], f[o + 2], f[o + 3]));
            let l4 = 14 + usize::from(f[14] & 0x0f) * 4;
            ((a(26), port(l4)), (a(30), port(l4 + 2)))
        }
        0x86dd => {
            let a = |o: usize| {
                IpAddr::V6(Ipv6Addr::from(
                    <[u8; 16]>::try_from(&f[o..o + 16]).expect("16 bytes"),
                ))
            };
            ((a(22), port(54)), (a(38), port(56)))
        }
        t => panic!("unexpected ethertype {t:#06x}"),
    }
}

fn is_vip(a: IpAddr) -> bool {
    a == IpAddr::V4(VIP4) || a == IpAddr::V6(VIP6)
}

fn is_server(a: IpAddr, port: u16) -> bool {
    (a == IpAddr::V4(SERVER4) || a == IpAddr::V6(SERVER6)) && port == SERVER_PORT
}

/// One frame to feed in, and what Linux made of it.
struct Case {
    /// Frame number in the capture (0-based).
    index: usize,
    input: (u32, u32, Vec<u8>),
    expected: Vec<u8>,
    /// Towards the server (else towards the client).
    to_server: bool,
}

/// The input frames of a capture pair and the expected outputs, in capture order.
fn cases(name: &str) -> (Vec<Case>, usize) {
    let client = capture(name, "client");
    let server = capture(name, "server");
    assert_eq!(client.len(), server.len(), "{name}: the sides pair up");
    let mut out = Vec::new();
    let mut skipped = 0;
    for (index, (c, s)) in client.into_iter().zip(server).enumerate() {
        let (_, (c_dst, _)) = endpoints(&c.2);
        let ((s_src, s_sport), _) = endpoints(&s.2);
        if is_vip(c_dst) {
            out.push(Case {
                index,
                expected: s.2,
                input: c,
                to_server: true,
            });
        } else if is_server(s_src, s_sport) {
            out.push(Case {
                index,
                expected: c.2,
                input: s,
                to_server: false,
            });
        } else {
            skipped += 1;
        }
    }
    (out, skipped)
}

/// The daemon, its files and its DPDK runtime directory; dropping it kills a daemon still
/// running and removes everything.
struct Run {
    child: Option<Child>,
    dir: PathBuf,
    prefix: String,
}

impl Run {
    fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.join("stdout")).unwrap_or_default()
    }
    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }
    fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("try_wait"))
    }
    /// Waits up to `TIMEOUT` for the daemon to exit.
    fn wait(&mut self) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < TIMEOUT {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if c.try_wait().ok().flatten().is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        for d in runtime_dirs(&self.prefix) {
            let _ = std::fs::remove_dir_all(d);
        }
        // The state file the daemon keeps for its next start ([state]).
        for dir in ["/dev/hugepages", "/dev/shm"] {
            let _ = std::fs::remove_file(Path::new(dir).join(format!("{}.tzstate", self.prefix)));
        }
    }
}

/// Where DPDK 22.11 puts the runtime directory of `--file-prefix=prefix` (root: /var/run;
/// others: $XDG_RUNTIME_DIR or /tmp).
fn runtime_dirs(prefix: &str) -> Vec<PathBuf> {
    let mut v = vec![PathBuf::from("/var/run/dpdk").join(prefix)];
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR") {
        v.push(PathBuf::from(x).join("dpdk").join(prefix));
    }
    v.push(PathBuf::from("/tmp/dpdk").join(prefix));
    v
}

fn config(prefix: &str, input: &Path, output: &Path, port_mac: Option<&str>) -> String {
    let mac = port_mac.map_or(String::new(), |m| format!("mac = \"{m}\"\n"));
    format!(
        r#"[eal]
args = [
    "--no-pci", "--no-huge", "-m", "256", "--file-prefix={prefix}", "-l", "0-1",
    "--vdev=net_pcap0,rx_pcap={input},tx_pcap={output}",
]

[[ports]]
name = "arm"
device = "net_pcap0"
{mac}ipv4 = ["192.0.2.1/24", "198.51.100.1/24"]
ipv6 = ["2001:db8:1::1/64", "2001:db8:2::1/64"]

[[vips]]
name = "web4"
address = "{VIP4}"
port = 80
mode = "nat"
client_port = "arm"
backends = ["srv"]

[[vips]]
name = "web6"
address = "{VIP6}"
port = 80
mode = "nat"
client_port = "arm"
backends = ["srv"]

[[backends]]
name = "srv"
ipv4 = "{SERVER4}"
ipv6 = "{SERVER6}"
port = {SERVER_PORT}
egress_port = "arm"
mac = "02:00:00:00:02:10"

[tables]
flow_capacity = 4096
token_capacity = 1024
maglev_size = 65537

# The replay compares every frame the port sends: no health probes among them.
[health]
enabled = false

[workers]
count = 1
idle_sleep_us = 50
"#,
        input = input.display(),
        output = output.display(),
    )
}

/// `key value key value ...` after `prefix` in the line of `out` that starts with it.
fn counters(out: &str, prefix: &str) -> HashMap<String, u64> {
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line {prefix:?} in the daemon's output:\n{out}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .chunks(2)
        .filter_map(|kv| match kv {
            [k, v] => v.parse().ok().map(|v| (k.to_string(), v)),
            _ => None,
        })
        .collect()
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let v: Vec<u8> = s
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).ok())
        .collect::<Option<_>>()?;
    v.try_into().ok()
}

fn fmt_mac(m: &[u8]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// What a replay saw.
struct Outcome {
    compared: usize,
    to_server: usize,
    to_client: usize,
    skipped: usize,
    stdout: String,
}

/// Replays capture pair `name` through the daemon and checks every output frame.
fn replay(name: &str, port_mac: Option<&str>) -> Outcome {
    let (cases, skipped) = cases(name);
    assert!(!cases.is_empty(), "{name}: nothing to replay");
    let prefix = format!("tz-golden-{name}-{}", std::process::id());
    let dir = std::env::temp_dir().join(&prefix);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut run = Run {
        child: None,
        dir: dir.clone(),
        prefix: prefix.clone(),
    };
    for d in runtime_dirs(&prefix) {
        let _ = std::fs::remove_dir_all(d);
    }

    let input = dir.join("in.pcap");
    let output = dir.join("out.pcap");
    // The port drops unicast frames for another MAC than its own (l2_not_ours): the capture's
    // frames, addressed to the Linux NAT box's two sides, are given the port's MAC (the
    // configured one, else the NAT box's client-facing one, configured).
    let natc0 = fmt_mac(&NATC0);
    let port_mac = Some(port_mac.unwrap_or(&natc0));
    let dst = port_mac.and_then(parse_mac).expect("port MAC");
    let mut file = Vec::new();
    pcap::write_header(&mut file, pcap::LINKTYPE_ETHERNET);
    for c in &cases {
        let mut frame = c.input.2.clone();
        frame[0..6].copy_from_slice(&dst);
        pcap::write_record(&mut file, c.input.0, c.input.1, &frame);
    }
    std::fs::write(&input, file).expect("write input pcap");
    let cfg = dir.join(format!("{prefix}.toml"));
    std::fs::write(&cfg, config(&prefix, &input, &output, port_mac)).expect("write config");

    let child = Command::new(env!("CARGO_BIN_EXE_trapeze-gatewayd"))
        .arg("--config")
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("stdout")).expect("stdout file"))
        .stderr(std::fs::File::create(dir.join("stderr")).expect("stderr file"))
        .spawn()
        .expect("start trapeze-gatewayd");
    let pid = child.id();
    run.child = Some(child);

    // net_pcap writes (and flushes) the TX pcap as frames are sent.
    let start = Instant::now();
    let mut sent = 0;
    while start.elapsed() < TIMEOUT {
        sent = records_so_far(&output);
        if sent >= cases.len() {
            break;
        }
        if let Some(s) = run.exited() {
            panic!(
                "{name}: the daemon exited early ({s}):\n{}\n{}",
                run.stdout(),
                run.stderr()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        sent,
        cases.len(),
        "{name}: frames sent within {TIMEOUT:?}\n{}",
        run.stderr()
    );

    let kill = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success(), "kill -TERM {pid}");
    let status = run.wait();
    let (stdout, stderr) = (run.stdout(), run.stderr());
    let status = status.unwrap_or_else(|| {
        panic!("{name}: the daemon did not stop within {TIMEOUT:?} of SIGTERM\n{stderr}")
    });
    assert!(
        status.success(),
        "{name}: exit status {status} after SIGTERM\n{stdout}\n{stderr}"
    );
    assert!(stderr.contains("stopping"), "{name}: {stderr}");

    // The port's MAC, as the daemon reports it: "port 0 arm (net_pcap0): MAC rss=...".
    let logged = stderr
        .lines()
        .find_map(|l| l.strip_prefix("trapeze-gatewayd: port 0 arm (net_pcap0): "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(parse_mac)
        .unwrap_or_else(|| panic!("{name}: no MAC for port 0 in the log:\n{stderr}"));
    if let Some(m) = port_mac {
        assert_eq!(
            Some(logged),
            parse_mac(m),
            "{name}: the configured MAC is used"
        );
    }
    assert!(logged[0] & 1 == 0 && logged != [0; 6], "{name}: port MAC");

    // Final counters: every frame received and sent, none dropped or punted.
    let n = cases.len() as u64;
    let total = counters(&stdout, "total: ");
    for (k, v) in [
        ("rx", n),
        ("tx", n),
        ("forwarded", n),
        ("replied", 0),
        ("punted", 0),
        ("dropped", 0),
        ("handoff_full", 0),
    ] {
        assert_eq!(total.get(k), Some(&v), "{name}: total {k}\n{stdout}");
    }
    let port0 = counters(&stdout, "port 0 arm: ");
    for k in ["rx", "tx", "tx_forwarded", "ipackets", "opackets"] {
        assert_eq!(port0.get(k), Some(&n), "{name}: port 0 {k}\n{stdout}");
    }
    for k in ["tx_replies", "tx_control", "tx_unsent"] {
        assert_eq!(port0.get(k), Some(&0), "{name}: port 0 {k}\n{stdout}");
    }
    assert!(
        !stdout.lines().any(|l| l.starts_with("drop ")),
        "{name}: {stdout}"
    );

    // Frame by frame.
    let out = read_pcap(&output);
    assert_eq!(out.len(), cases.len(), "{name}: output frames");
    let (mut to_server, mut to_client) = (0, 0);
    for (c, (_, _, got)) in cases.iter().zip(&out) {
        let i = c.index;
        let want = &c.expected;
        let dst = if c.to_server {
            to_server += 1;
            SRV0
        } else {
            to_client += 1;
            CLIENT_MAC
        };
        assert_eq!(
            &want[0..6],
            &dst,
            "{name} frame {i}: Linux's destination MAC"
        );
        assert_eq!(
            fmt_mac(&got[0..6]),
            fmt_mac(&dst),
            "{name} frame {i}: destination MAC"
        );
        assert_eq!(
            fmt_mac(&got[6..12]),
            fmt_mac(&logged),
            "{name} frame {i}: source MAC"
        );
        assert_eq!(
            got.len(),
            want.len(),
            "{name} frame {i}: length (to_server {})",
            c.to_server
        );
        if let Some(at) = (12..got.len()).find(|&k| got[k] != want[k]) {
            panic!(
                "{name} frame {i} ({}): differs from Linux at byte {at}: got {:02x?}, Linux {:02x?}",
                if c.to_server {
                    "client -> server"
                } else {
                    "server -> client"
                },
                &got[at..(at + 8).min(got.len())],
                &want[at..(at + 8).min(want.len())]
            );
        }
    }
    drop(run);
    Outcome {
        compared: out.len(),
        to_server,
        to_client,
        skipped,
        stdout,
    }
}

fn event(stdout: &str, name: &str) -> u64 {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("event {name} ")))
        .map_or(0, |v| v.trim().parse().expect("event count"))
}

#[test]
fn v4_mptcp_join_through_the_daemon_matches_linux() {
    let o = replay("v4_mptcp_join", None);
    eprintln!(
        "v4_mptcp_join: {} frames compared ({} to the server, {} to the client)",
        o.compared, o.to_server, o.to_client
    );
    assert_eq!((o.compared, o.skipped), (34, 0));
    assert_eq!(event(&o.stdout, "token_learned"), 1, "{}", o.stdout);
    assert_eq!(event(&o.stdout, "join_routed"), 1, "{}", o.stdout);
    assert!(
        o.stdout.contains("joins 1"),
        "the backend counts the join: {}",
        o.stdout
    );
}

#[test]
fn v6_mptcp_join_through_the_daemon_matches_linux() {
    let o = replay("v6_mptcp_join", None);
    eprintln!(
        "v6_mptcp_join: {} frames compared ({} to the server, {} to the client)",
        o.compared, o.to_server, o.to_client
    );
    assert_eq!((o.compared, o.skipped), (34, 0));
    assert_eq!(event(&o.stdout, "token_learned"), 1, "{}", o.stdout);
    assert_eq!(event(&o.stdout, "join_routed"), 1, "{}", o.stdout);
}

#[test]
fn v4_mptcp_add_addr_through_the_daemon_matches_linux() {
    let o = replay("v4_mptcp_add_addr", None);
    eprintln!(
        "v4_mptcp_add_addr: {} frames compared ({} to the server, {} to the client), {} not for \
         the VIP left out",
        o.compared, o.to_server, o.to_client, o.skipped
    );
    // The join subflow to the announced address (frames 6-9, 19, 21, 27, 29, 31, 32, 35, 36)
    // bypasses the gateway.
    assert_eq!(o.compared + o.skipped, 36);
    assert!(o.skipped > 0 && o.compared > 0);
    assert_eq!(event(&o.stdout, "token_learned"), 1, "{}", o.stdout);
    assert_eq!(event(&o.stdout, "join_routed"), 0, "{}", o.stdout);
}

#[test]
fn v4_plain_tcp_through_the_daemon_matches_linux() {
    // A configured port MAC equal to the Linux NAT box's client-facing one: frames towards the
    // client are then Linux's byte for byte, Ethernet header included.
    let natc0 = fmt_mac(&NATC0);
    let o = replay("v4_plain_tcp", Some(&natc0));
    eprintln!(
        "v4_plain_tcp: {} frames compared ({} to the server, {} to the client)",
        o.compared, o.to_server, o.to_client
    );
    assert_eq!((o.compared, o.skipped), (18, 0));
    assert_eq!(event(&o.stdout, "token_learned"), 0, "{}", o.stdout);
    assert_eq!(event(&o.stdout, "new_flow"), 1, "{}", o.stdout);
}
