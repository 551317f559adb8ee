//! The gateway configuration: every shipped config loads and builds a pool; a table of bad
//! configurations, each refused with an error naming the right field; the `trapeze-check`
//! binary's exit codes and messages.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Command;

use trapeze_control::config::{self, ConfigError, GatewayConfig, Overrides};
use trapeze_core::pool::{BackendId, BackendState, PoolSnapshot, PortId, VipId};

fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs")
}

fn testbed_text() -> String {
    std::fs::read_to_string(configs_dir().join("testbed.toml")).unwrap()
}

/// 1-based line of the first occurrence of `needle` in the testbed config.
fn testbed_line(needle: &str) -> usize {
    testbed_text()
        .lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("testbed.toml has no {needle:?}"))
}

fn load_text(text: &str) -> Result<GatewayConfig, ConfigError> {
    config::from_toml(text, &Overrides::default())
}

/// The testbed config with `from` replaced by `to` (which must occur).
fn edit(from: &str, to: &str) -> String {
    let t = testbed_text();
    assert!(t.contains(from), "testbed.toml has no {from:?}");
    t.replacen(from, to, 1)
}

#[test]
fn every_shipped_config_loads_and_builds() {
    let mut n = 0;
    let benches = configs_dir().join("../benches/pktgen");
    let files = [configs_dir(), benches]
        .into_iter()
        .flat_map(|d| std::fs::read_dir(d).unwrap())
        .map(|e| e.unwrap().path());
    for path in files {
        if path.extension().is_some_and(|e| e == "toml") {
            let cfg = config::load(&path, &Overrides::default())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let snap = PoolSnapshot::build(cfg.pool.clone()).unwrap();
            assert!(!snap.vips.is_empty(), "{}", path.display());
            assert!(!cfg.summary().contains("does not build"));
            n += 1;
        }
    }
    assert!(
        n >= 3,
        "configs/testbed.toml, configs/example.toml and benches/pktgen/gateway-memif.toml at least"
    );
}

#[test]
fn testbed_maps_to_core_types() {
    let cfg = config::load(&configs_dir().join("testbed.toml"), &Overrides::default()).unwrap();
    assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    assert_eq!(
        cfg.eal_args,
        [
            "--no-pci",
            "--file-prefix=trapeze-testbed",
            "--vdev=net_af_packet0,framecnt=4096,iface=gw-c",
            "--vdev=net_af_packet1,framecnt=4096,iface=gw-s",
            "-l",
            "0-1"
        ]
    );
    assert!(!cfg.eal_args.iter().any(|a| a == "--no-huge"));
    // Ports by position.
    assert_eq!(cfg.ports.len(), 2);
    let (c, s) = (&cfg.ports[0], &cfg.ports[1]);
    assert_eq!(
        (c.id, c.name.as_str(), c.device.as_str()),
        (PortId(0), "client", "net_af_packet0")
    );
    assert_eq!(
        (s.id, s.name.as_str(), s.device.as_str()),
        (PortId(1), "server", "net_af_packet1")
    );
    assert_eq!(c.mac, None);
    assert_eq!(c.ipv4[0].to_string(), "10.90.0.1/24");
    assert_eq!(s.ipv6[0].to_string(), "fd91::1/64");
    assert_eq!(cfg.pool.ports[1].ipv4, [Ipv4Addr::new(10, 91, 0, 1)]);
    assert_eq!(
        cfg.pool.ports[1].ipv6,
        ["fd91::1".parse::<Ipv6Addr>().unwrap()]
    );
    // Next hops: on-link servers resolve directly; nothing is routed (no gateway).
    let srv1: IpAddr = "10.91.0.11".parse().unwrap();
    assert_eq!(s.next_hop(srv1), Some(srv1));
    assert_eq!(s.next_hop("10.92.0.1".parse().unwrap()), None);
    assert!(s.on_link("fe80::1".parse().unwrap()));
    // Backends and VIPs by position.
    let b = cfg.pool.backends[2].as_ref().unwrap();
    assert_eq!(b.id, BackendId(2));
    assert_eq!(b.name, "srv3");
    assert_eq!(b.ipv4, Some(Ipv4Addr::new(10, 91, 0, 13)));
    assert_eq!(b.ipv6, Some("fd91::13".parse().unwrap()));
    assert_eq!(
        (b.port, b.weight, b.state, b.egress, b.mac),
        (8080, 1, BackendState::Active, PortId(1), None)
    );
    let v6 = cfg.pool.vips[1].as_ref().unwrap();
    assert_eq!(v6.id, VipId(1));
    assert_eq!(v6.addr, "fd90:100::10".parse::<IpAddr>().unwrap());
    assert_eq!((v6.port, v6.proto, v6.client_port), (80, 6, PortId(0)));
    assert_eq!(v6.backends, [BackendId(0), BackendId(1), BackendId(2)]);
    assert_eq!(cfg.pool.maglev_size, 65537);
    // Tables and workers.
    assert_eq!(cfg.worker.flows.capacity, 65536);
    assert_eq!(cfg.worker.flows.timeouts.half_open_ms, 10_000);
    assert_eq!(cfg.worker.flows.timeouts.established_ms, 600_000);
    assert_eq!(cfg.worker.flows.timeouts.closing_ms, 15_000);
    assert_eq!(cfg.tokens.capacity, 65536);
    assert_eq!(cfg.workers.count, 1);
    assert_eq!(cfg.worker.workers, 1);
    assert_eq!(cfg.worker_config(0).id, 0);
    // The pool forwards: the VIP resolves, both families of srv1 map back to their VIPs.
    let snap = cfg.snapshot().unwrap();
    let vip4 = trapeze_core::flow::addr_bytes("10.90.100.10".parse().unwrap());
    assert_eq!(snap.vip_for(&vip4, 80, 6), Some(VipId(0)));
    let srv1_6 = trapeze_core::flow::addr_bytes("fd91::11".parse().unwrap());
    assert_eq!(snap.vip_of_backend(&srv1_6, 8080, 6), Some(VipId(1)));
}

#[test]
fn example_covers_the_optional_keys() {
    let cfg = config::load(&configs_dir().join("example.toml"), &Overrides::default()).unwrap();
    let c = &cfg.ports[0];
    assert_eq!(c.mac, Some([2, 0, 0, 0, 0, 1]));
    assert_eq!(c.vlan, Some(100));
    assert_eq!(c.gateway4, Some(Ipv4Addr::new(192, 0, 2, 254)));
    assert_eq!(c.gateway6, Some("fe80::1".parse().unwrap()));
    assert_eq!(c.gateway_mac, Some([2, 0, 0, 0, 0, 0xfe]));
    assert_eq!(cfg.pool.ports[0].vlan, Some(100));
    assert_eq!(cfg.pool.ports[0].gateway_mac, Some([2, 0, 0, 0, 0, 0xfe]));
    // An off-link client goes through the gateway.
    assert_eq!(
        c.next_hop("203.0.113.99".parse().unwrap()),
        Some("192.0.2.254".parse().unwrap())
    );
    let b = |i: usize| cfg.pool.backends[i].as_ref().unwrap();
    assert_eq!(b(0).weight, 2);
    assert_eq!(b(0).mac, Some([2, 0, 0, 0, 1, 0x11]));
    assert_eq!(b(2).state, BackendState::Draining);
    assert_eq!(b(3).ipv6, None);
    assert_eq!(cfg.workers.count, 2);
    assert_eq!(cfg.workers.lcores, Some(vec![1, 2]));
    assert_eq!(cfg.worker.workers, 2);
    assert_eq!(cfg.worker.icmp_rate.per_sec, 1000);
    assert_eq!(cfg.tokens.shards, 64);
    assert!(cfg.state.persist);
    assert_eq!(
        cfg.state.path.as_deref(),
        Some(Path::new("/dev/hugepages/trapeze-example.tzstate"))
    );
}

#[test]
fn state_defaults_follow_the_file_prefix() {
    let cfg = config::load(&configs_dir().join("testbed.toml"), &Overrides::default()).unwrap();
    assert!(cfg.state.persist);
    assert_eq!(cfg.state.path, None);
    assert_eq!(cfg.state.default_name, "trapeze-testbed.tzstate");
    assert!(cfg.summary().contains(
        "state: kept in /dev/hugepages/trapeze-testbed.tzstate (or /dev/shm/trapeze-testbed.tzstate)"
    ));
    let off = load_text(&format!("{}\n[state]\npersist = false\n", testbed_text())).unwrap();
    assert!(!off.state.persist);
    assert!(off.summary().contains("state: not kept across restarts"));
    let no_prefix = load_text(&edit("\"--file-prefix=trapeze-testbed\",", "")).unwrap();
    assert_eq!(no_prefix.state.default_name, "rte.tzstate");
}

#[test]
fn ids_follow_file_order_and_fingerprint_is_stable() {
    let a = load_text(&testbed_text()).unwrap();
    let b = load_text(&testbed_text()).unwrap();
    let fa = a.snapshot().unwrap().maglev_fingerprint();
    assert_eq!(fa, b.snapshot().unwrap().maglev_fingerprint());
    // Another weight changes the tables, hence the fingerprint.
    let c = load_text(&edit(
        "weight = 1\negress_port = \"server\"",
        "weight = 3\negress_port = \"server\"",
    ))
    .unwrap();
    assert_ne!(fa, c.snapshot().unwrap().maglev_fingerprint());
    assert!(a
        .summary()
        .contains(&format!("maglev fingerprint: {fa:#018x}")));
}

#[test]
fn overrides_apply() {
    let ov = Overrides {
        no_huge: true,
        workers: Some(2),
        ..Overrides::default()
    };
    let cfg = config::from_toml(&testbed_text(), &ov).unwrap();
    assert_eq!(cfg.eal_args.last().map(String::as_str), Some("--no-huge"));
    assert_eq!(cfg.workers.count, 2);
    assert_eq!(cfg.worker.workers, 2);
    assert_eq!(cfg.worker_config(1).id, 1);
    // -l 0-1 has two lcores: three workers do not fit.
    let err = config::from_toml(
        &testbed_text(),
        &Overrides {
            no_huge: false,
            workers: Some(3),
            ..Overrides::default()
        },
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("workers.count (--workers): 3 workers"),
        "{err}"
    );
}

#[test]
fn device_mac_fills_only_unconfigured_ports() {
    let mut cfg = config::load(&configs_dir().join("example.toml"), &Overrides::default()).unwrap();
    assert_eq!(cfg.pool.ports[1].mac, [0; 6]);
    cfg.set_device_mac(PortId(1), [2, 0, 0, 0, 9, 9]);
    cfg.set_device_mac(PortId(0), [2, 0, 0, 0, 9, 8]);
    assert_eq!(cfg.pool.ports[1].mac, [2, 0, 0, 0, 9, 9]);
    assert_eq!(
        cfg.pool.ports[0].mac,
        [2, 0, 0, 0, 0, 1],
        "a configured MAC is kept"
    );
    let snap = cfg.snapshot().unwrap();
    assert_eq!(
        snap.fwd(BackendId(1)).unwrap().egress_mac,
        [2, 0, 0, 0, 9, 9]
    );
}

#[test]
fn all_problems_are_reported_at_once() {
    let text = edit("port = 8080", "port = 0").replacen("weight = 1", "weight = -1", 1);
    let err = load_text(&text).unwrap_err();
    let fields = err.fields();
    assert!(fields.contains(&"backends[0].port"), "{err}");
    assert!(fields.contains(&"backends[0].weight"), "{err}");
    // The VIPs name srv1 without a cascade of errors about it.
    assert!(!fields.iter().any(|f| f.starts_with("vips")), "{err}");
}

#[test]
fn pci_deployment_is_accepted() {
    let text = testbed_text()
        .replace(
            "    \"--no-pci\",\n",
            "    \"-a\", \"0000:01:00.0\",\n    \"--allow=0000:01:00.1,rx_vec_en=1\",\n",
        )
        .replacen(
            "[[ports]]  ",
            "allow_pci = true\npci = [\"0000:01:00.0\", \"0000:01:00.1\"]\n\n[[ports]]  ",
            1,
        )
        .replace("device = \"net_af_packet1\"", "device = \"0000:01:00.1\"");
    let cfg = load_text(&text).unwrap();
    assert!(cfg.allow_pci);
    assert_eq!(cfg.ports[1].device, "0000:01:00.1");
    // A listed device without its -a is refused.
    let err = load_text(&text.replace("\"-a\", \"0000:01:00.0\",", "")).unwrap_err();
    assert!(
        err.to_string()
            .contains("eal.pci[0]: \"0000:01:00.0\" has no matching \"-a 0000:01:00.0\""),
        "{err}"
    );
}

#[test]
fn errors_do_not_cascade() {
    // A duplicate VIP is one error, not one more per member for the shared endpoints.
    let err = load_text(&edit(
        "address = \"fd90:100::10\"",
        "address = \"10.90.100.10\"",
    ))
    .unwrap_err();
    assert_eq!(err.fields(), ["vips[1].address"], "{err}");
    // A backend with a bad field is still known by name to the VIPs.
    let err = load_text(&edit("weight = 1", "weight = 70000")).unwrap_err();
    assert_eq!(err.fields(), ["backends[0].weight"], "{err}");
}

const EXTRA_VIP: &str = r#"
[[vips]]
name = "web4b"
address = "10.90.100.11"
port = 80
client_port = "client"
backends = ["srv1"]
"#;

/// (case, config text, expected substring of the error).
fn bad_configs() -> Vec<(&'static str, String, String)> {
    let syntax = format!(
        "TOML syntax error at line {}, column 9: unclosed array table",
        testbed_line("# PortId 1")
    );
    let wrong_type = format!(
        "vips[0].port: invalid type: string \"80\", expected i64 (line {}, column 8)",
        testbed_line("port = 80")
    );
    let cases: Vec<(&'static str, String, &str)> = vec![
        ("empty file", String::new(), "(file): the configuration is empty"),
        ("only comments", "# nothing\n\n".into(), "(file): the configuration is empty"),
        (
            "syntax error",
            edit("[[ports]]                       # PortId 1", "[[ports]"),
            &syntax,
        ),
        (
            "unknown field",
            edit("name = \"srv2\"", "name = \"srv2\"\ncolour = \"blue\""),
            "backends[1].colour: unknown field `colour`",
        ),
        (
            "unknown section",
            format!("{}\n[logging]\nlevel = \"info\"\n", testbed_text()),
            "logging: unknown field `logging`",
        ),
        (
            "wrong type",
            edit("port = 80", "port = \"80\""),
            &wrong_type,
        ),
        (
            "missing required key",
            edit("client_port = \"client\"\nbackends = [\"srv1\", \"srv2\", \"srv3\"]", "backends = [\"srv1\", \"srv2\", \"srv3\"]"),
            "vips[0]: missing field `client_port`",
        ),
        (
            "missing --no-pci",
            edit("    \"--no-pci\",\n", ""),
            "eal.args: --no-pci is required when no PCI devices are allowed",
        ),
        (
            "pci without allow_pci",
            edit("[[ports]]  ", "pci = [\"0000:01:00.0\"]\n\n[[ports]]  "),
            "eal.pci: PCI devices are listed but eal.allow_pci is false",
        ),
        (
            "allow_pci with --no-pci",
            edit("[[ports]]  ", "allow_pci = true\npci = [\"0000:01:00.0\"]\n\n[[ports]]  "),
            "eal.args: --no-pci contradicts eal.allow_pci = true",
        ),
        (
            "-a without allow_pci",
            edit("\"-l\", \"0-1\",", "\"-l\", \"0-1\", \"-a\", \"0000:01:00.0\","),
            "eal.args[6]: -a \"0000:01:00.0\" allows a PCI device but eal.allow_pci is false",
        ),
        (
            "vdev given twice",
            edit("\"--vdev=net_af_packet1,framecnt=4096,iface=gw-s\",", "\"--vdev=net_af_packet1,framecnt=4096,iface=gw-s\", \"--vdev=net_af_packet0,iface=x\","),
            "eal.args[4]: --vdev \"net_af_packet0\" is given twice",
        ),
        (
            "device without --vdev",
            edit("device = \"net_af_packet1\"", "device = \"net_af_packet2\""),
            "ports[1].device: \"net_af_packet2\" is neither created by a --vdev",
        ),
        (
            "non-prime maglev size",
            edit("maglev_size = 65537", "maglev_size = 65536"),
            "tables.maglev_size: 65536 is not prime (the nearest primes are 65521 and 65537)",
        ),
        (
            "maglev size smaller than the pool (pool build error)",
            edit("maglev_size = 65537", "maglev_size = 2"),
            "tables.maglev_size: 2 slots are fewer than the 3 backends of vip \"web4\"",
        ),
        (
            "duplicate vip name",
            edit("name = \"web6\"", "name = \"web4\""),
            "vips[1].name: duplicate name \"web4\" (also vips[0])",
        ),
        (
            "duplicate vip endpoint",
            edit("address = \"fd90:100::10\"", "address = \"10.90.100.10\""),
            "vips[1].address: 10.90.100.10 port 80 tcp is already vips[0] (\"web4\")",
        ),
        (
            "duplicate backend name",
            edit("name = \"srv2\"", "name = \"srv1\""),
            "backends[1].name: duplicate name \"srv1\" (also backends[0])",
        ),
        (
            "duplicate port name",
            edit("name = \"server\"", "name = \"client\""),
            "ports[1].name: duplicate name \"client\" (also ports[0])",
        ),
        (
            "unknown backend",
            edit(
                "client_port = \"client\"\nbackends = [\"srv1\", \"srv2\", \"srv3\"]\n\n[vips.join_ports]\nsrv1 = 18081\nsrv2 = 18082\nsrv3 = 18083\n",
                "client_port = \"client\"\nbackends = [\"srv1\", \"srv2\", \"srv4\"]\n\n[vips.join_ports]\nsrv1 = 18081\nsrv2 = 18082\n",
            ),
            "vips[1].backends[2]: unknown backend \"srv4\"",
        ),
        (
            "join port of a non-member",
            edit(
                "[vips.join_ports]\nsrv1 = 18081\nsrv2 = 18082\nsrv3 = 18083\n\n[[vips]]                        # VipId 1",
                "[vips.join_ports]\nsrv1 = 18081\nsrv2 = 18082\nsrv9 = 18083\n\n[[vips]]                        # VipId 1",
            ),
            "vips[0].join_ports.srv9: \"srv9\" is not a member of this vip",
        ),
        (
            "join port equal to the vip's port",
            edit(
                "srv1 = 18081\nsrv2 = 18082\nsrv3 = 18083\n\n[[vips]]                        # VipId 1",
                "srv1 = 80\nsrv2 = 18082\nsrv3 = 18083\n\n[[vips]]                        # VipId 1",
            ),
            "vips[0].join_ports.srv1: 80 is the vip's own port",
        ),
        (
            "unknown announce mode",
            edit("name = \"web4\"", "name = \"web4\"\nannounce = \"loudly\""),
            "vips[0].announce: \"loudly\": expected \"off\", \"join-ports\" or \"backend\"",
        ),
        (
            "gateway-announced join ports on a DSR vip",
            edit(
                "name = \"dsr-ipip4\"",
                "name = \"dsr-ipip4\"\nannounce = \"join-ports\"",
            ),
            "vips[2].join_ports: announce = \"join-ports\" needs a NAT vip",
        ),
        (
            "backend listed twice",
            edit("backends = [\"srv1\", \"srv2\", \"srv3\"]", "backends = [\"srv1\", \"srv2\", \"srv1\"]"),
            "vips[0].backends[2]: backend \"srv1\" is listed twice",
        ),
        (
            "family mismatch",
            edit("ipv6 = \"fd91::13\"\n", ""),
            "vips[1].backends[2]: backend \"srv3\" has no IPv6 address, and vip \"web6\" is IPv6",
        ),
        (
            "bad ipv4 address",
            edit("ipv4 = \"10.91.0.11\"", "ipv4 = \"10.91.0.300\""),
            "backends[0].ipv4: \"10.91.0.300\" is not an IPv4 address",
        ),
        (
            "ipv6 in the ipv4 key",
            edit("ipv4 = \"10.91.0.11\"", "ipv4 = \"fd91::99\""),
            "backends[0].ipv4: \"fd91::99\" is an IPv6 address, not an IPv4 address",
        ),
        (
            "bad vip address",
            edit("address = \"10.90.100.10\"", "address = \"10.90.100\""),
            "vips[0].address: \"10.90.100\" is not an IPv4 or IPv6 address",
        ),
        (
            "multicast vip address",
            edit("address = \"10.90.100.10\"", "address = \"239.1.1.1\""),
            "vips[0].address: \"239.1.1.1\": a multicast address is not a host address",
        ),
        (
            "vip is the gateway's own address",
            edit("address = \"10.90.100.10\"", "address = \"10.90.0.1\""),
            "vips[0].address: 10.90.0.1 is the gateway's own address on ports[0]",
        ),
        (
            "port address without prefix length",
            edit("ipv4 = [\"10.90.0.1/24\"]", "ipv4 = [\"10.90.0.1\"]"),
            "ports[0].ipv4[0]: \"10.90.0.1\" needs a prefix length",
        ),
        (
            "same gateway address on two ports",
            edit("ipv6 = [\"fd91::1/64\"]", "ipv6 = [\"fd90::1/64\"]"),
            "ports[1].ipv6[0]: fd90::1 is already the gateway's address ports[0].ipv6[0]",
        ),
        (
            "port without any address",
            edit("ipv4 = [\"10.91.0.1/24\"]\nipv6 = [\"fd91::1/64\"]\n", ""),
            "ports[1]: a port needs at least one ipv4 or ipv6 address",
        ),
        (
            "backend not reachable from its egress port",
            edit("ipv4 = \"10.91.0.11\"", "ipv4 = \"10.92.0.11\""),
            "backends[0].ipv4: 10.92.0.11 is not on-link on port \"server\" and the port has no gateway4",
        ),
        (
            "gateway off-link",
            edit("ipv6 = [\"fd91::1/64\"]", "ipv6 = [\"fd91::1/64\"]\ngateway4 = \"10.1.1.1\""),
            "ports[1].gateway4: 10.1.1.1 is not on-link: it is inside none of ports[1].ipv4",
        ),
        (
            "bad mac",
            edit("egress_port = \"server\"", "egress_port = \"server\"\nmac = \"01:00:5e:00:00:01\""),
            "backends[0].mac: \"01:00:5e:00:00:01\" is a multicast/broadcast MAC address",
        ),
        (
            "backend without address",
            edit("ipv4 = \"10.91.0.12\"\nipv6 = \"fd91::12\"\n", ""),
            "backends[1]: a backend needs an ipv4 or an ipv6 address",
        ),
        (
            "two backends with one endpoint",
            edit("ipv4 = \"10.91.0.12\"", "ipv4 = \"10.91.0.11\""),
            "backends[1].ipv4: 10.91.0.11 port 8080 is also backends[0] (\"srv1\")",
        ),
        (
            "weight 0 everywhere",
            testbed_text().replace("weight = 1", "weight = 0"),
            "vips[0].backends: every member has weight 0",
        ),
        (
            "weight out of range",
            edit("weight = 1", "weight = 70000"),
            "backends[0].weight: 70000 is out of range (0..=65535)",
        ),
        (
            "backend port 0",
            edit("port = 8080", "port = 0"),
            "backends[0].port: 0 is out of range (1..=65535)",
        ),
        (
            "vip port 0",
            edit("port = 80", "port = 0"),
            "vips[0].port: 0 is out of range (1..=65535)",
        ),
        (
            "port number too large",
            edit("port = 80", "port = 65536"),
            "vips[0].port: 65536 is out of range (1..=65535)",
        ),
        (
            "bad state",
            edit("weight = 1", "weight = 1\nstate = \"up\""),
            "backends[0].state: \"up\" is not a state",
        ),
        (
            "bad protocol",
            edit("protocol = \"tcp\"", "protocol = \"udp\""),
            "vips[0].protocol: \"udp\" is not supported (only \"tcp\")",
        ),
        (
            "bad mode",
            edit("mode = \"nat\"", "mode = \"tunnel\""),
            "vips[0].mode: \"tunnel\" is not supported (\"nat\" or \"dsr\")",
        ),
        (
            "dsr settings on a nat vip",
            edit("mode = \"nat\"", "mode = \"nat\"\ndsr = { encap = \"gue\" }"),
            "vips[0].dsr: only with mode = \"dsr\"",
        ),
        (
            "dsr with an unknown encapsulation",
            edit("mode = \"nat\"", "mode = \"dsr\"\ndsr = { encap = \"gre\" }"),
            "vips[0].dsr.encap: \"gre\" is not supported (\"ipip\" or \"gue\")",
        ),
        (
            "dsr cannot translate ports",
            edit("mode = \"nat\"", "mode = \"dsr\""),
            "vips[0].dsr: backend",
        ),
        (
            "bad duration",
            edit("established = \"10m\"", "established = \"10 minutes\""),
            "tables.timeouts.established: \"10 minutes\" is not a duration",
        ),
        (
            "duration without unit",
            edit("half_open = \"10s\"", "half_open = \"10\""),
            "tables.timeouts.half_open: \"10\" has no unit",
        ),
        (
            "zero duration",
            edit("closing = \"15s\"", "closing = \"0s\""),
            "tables.timeouts.closing: \"0s\" is zero",
        ),
        (
            "shared backend endpoint across two NAT vips",
            format!("{}{EXTRA_VIP}", testbed_text()),
            "vips[6].backends[0]: backend \"srv1\" (10.91.0.11 port 8080) already serves vips[0] (\"web4\"",
        ),
        (
            "unknown client port",
            edit("client_port = \"client\"", "client_port = \"clients\""),
            "vips[0].client_port: unknown port \"clients\"",
        ),
        (
            "unknown egress port",
            edit("egress_port = \"server\"", "egress_port = \"servers\""),
            "backends[0].egress_port: unknown port \"servers\"",
        ),
        (
            "vlan out of range",
            edit("ipv6 = [\"fd90::1/64\"]", "ipv6 = [\"fd90::1/64\"]\nvlan = 4095"),
            "ports[0].vlan: 4095 is out of range (1..=4094)",
        ),
        (
            "queue size not a power of two",
            edit("ipv6 = [\"fd90::1/64\"]", "ipv6 = [\"fd90::1/64\"]\nrx_queue_size = 1000"),
            "ports[0].rx_queue_size: 1000 is not a power of two",
        ),
        (
            "negative capacity",
            edit("token_capacity = 65536", "token_capacity = -1"),
            "tables.token_capacity: -1 is out of range",
        ),
        (
            "flow capacity 0",
            edit("flow_capacity = 65536", "flow_capacity = 0"),
            "tables.flow_capacity: 0 is out of range",
        ),
        (
            "more workers than EAL lcores",
            edit("count = 1", "count = 3"),
            "workers.count: 3 workers but the EAL core list \"0-1\" (eal.args) has only 2 lcores",
        ),
        (
            "worker lcore outside the EAL list",
            edit("count = 1", "lcores = [1, 5]"),
            "workers.lcores[1]: lcore 5 is not in the EAL core list \"0-1\"",
        ),
        (
            "count and lcores disagree",
            edit("count = 1", "count = 1\nlcores = [0, 1]"),
            "workers.count: is 1 but workers.lcores lists 2 lcores",
        ),
        (
            "zero workers",
            edit("count = 1", "count = 0"),
            "workers.count: 0 is out of range (1..=256)",
        ),
        (
            "bad name",
            edit("name = \"srv1\"", "name = \"srv 1\""),
            "backends[0].name: \"srv 1\" is not a valid name",
        ),
        (
            "relative state path",
            format!("{}\n[state]\npath = \"gw.tzstate\"\n", testbed_text()),
            "state.path: \"gw.tzstate\" is not an absolute path to a file",
        ),
        (
            "state path to a directory",
            format!("{}\n[state]\npath = \"/dev/shm/\"\n", testbed_text()),
            "state.path: \"/dev/shm/\" is not an absolute path to a file",
        ),
        (
            "unknown state key",
            format!("{}\n[state]\nkeep = true\n", testbed_text()),
            "state.keep: unknown field `keep`, expected `persist` or `path`",
        ),
    ];
    cases
        .into_iter()
        .map(|(c, t, e)| (c, t, e.to_string()))
        .collect()
}

#[test]
fn bad_configs_name_the_field() {
    let cases = bad_configs();
    assert!(cases.len() >= 15);
    let mut failures = Vec::new();
    for (case, text, expected) in &cases {
        match load_text(text) {
            Ok(_) => failures.push(format!("{case}: accepted")),
            Err(e) => {
                let msg = e.to_string();
                if std::env::var_os("TRAPEZE_SHOW_ERRORS").is_some() {
                    println!("{case}:\n  {}", msg.replace('\n', "\n  "));
                }
                if !msg.contains(expected.as_str()) {
                    failures.push(format!(
                        "{case}:\n  expected: {expected}\n  got:      {msg}"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn syntax_errors_carry_line_and_column() {
    let err = load_text("[eal]\nargs = [\"--no-pci\"\n\n[[ports]]\n").unwrap_err();
    match err {
        ConfigError::Parse {
            line,
            column,
            field,
            ..
        } => {
            assert!(line >= 2, "line {line}");
            assert!(column >= 1);
            assert_eq!(field, None);
        }
        other => panic!("{other:?}"),
    }
    let err = load_text(&edit("port = 80", "port = \"80\"")).unwrap_err();
    match err {
        ConfigError::Parse {
            line,
            column,
            field,
            ..
        } => {
            assert_eq!(field.as_deref(), Some("vips[0].port"));
            assert_eq!((line, column), (testbed_line("port = 80"), 8));
        }
        other => panic!("{other:?}"),
    }
}

// ---- the trapeze-check binary ----

fn check_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_trapeze-check"))
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write_tmp(name: &str, text: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("trapeze-control-config");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn cli_check_accepts_good_configs() {
    for name in ["testbed.toml", "example.toml"] {
        let path = configs_dir().join(name);
        let (code, out, err) = run(check_bin().arg("--config").arg(&path).arg("--check"));
        assert_eq!(code, 0, "{name}: {err}");
        assert!(out.contains("configuration OK"), "{out}");
        assert!(out.contains("vips: "), "{out}");
        assert!(out.contains("backends: "), "{out}");
        assert!(out.contains("maglev fingerprint: 0x"), "{out}");
    }
    let (code, out, _) = run(check_bin()
        .arg("-c")
        .arg(configs_dir().join("testbed.toml")));
    assert_eq!(code, 0);
    assert!(out.contains("[0] web4 10.90.100.10:80/tcp nat"), "{out}");
    assert!(out.contains("[1] web6 [fd90:100::10]:80/tcp nat"), "{out}");
    assert!(
        out.contains("[2] srv3 10.91.0.13 fd91::13 port 8080 weight 1 active"),
        "{out}"
    );
    assert!(
        out.contains("maglev slots: srv1 21846, srv2 21846, srv3 21845"),
        "{out}"
    );
}

#[test]
fn cli_overrides_show_in_the_summary() {
    let path = configs_dir().join("testbed.toml");
    let (code, out, err) = run(check_bin().arg("--config").arg(&path).args([
        "--check",
        "--no-huge",
        "--workers",
        "2",
        "--log-level",
        "debug",
    ]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("-l 0-1 --no-huge"), "{out}");
    assert!(out.contains("workers: 2"), "{out}");
    let (code, _, err) = run(check_bin()
        .arg("--config")
        .arg(&path)
        .args(["--workers", "3"]));
    assert_eq!(code, 2);
    assert!(
        err.contains("workers.count (--workers): 3 workers"),
        "{err}"
    );
}

#[test]
fn cli_check_refuses_bad_configs() {
    let path = write_tmp(
        "unknown-backend.toml",
        &testbed_text().replace(
            "backends = [\"srv1\", \"srv2\", \"srv3\"]\n\n[vips.join_ports]\nsrv1 = 18081\nsrv2 = 18082\nsrv3 = 18083\n",
            "backends = [\"srv1\", \"srv2\", \"srv4\"]\n\n[vips.join_ports]\nsrv1 = 18081\nsrv2 = 18082\n",
        ),
    );
    let (code, out, err) = run(check_bin().arg("--config").arg(&path).arg("--check"));
    assert_eq!(code, 2);
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("invalid configuration (1 problem)"), "{err}");
    assert!(
        err.contains("vips[1].backends[2]: unknown backend \"srv4\""),
        "{err}"
    );
    assert!(err.contains(&path.display().to_string()), "{err}");

    let path = write_tmp("syntax.toml", "[eal\nargs = []\n");
    let (code, _, err) = run(check_bin().arg("--config").arg(&path).arg("--check"));
    assert_eq!(code, 2);
    assert!(err.contains("TOML syntax error at line 1, column"), "{err}");

    let path = write_tmp(
        "no-pci.toml",
        &testbed_text().replace("    \"--no-pci\",\n", ""),
    );
    let (code, _, err) = run(check_bin().arg("--config").arg(&path).arg("--check"));
    assert_eq!(code, 2);
    assert!(
        err.contains("eal.args: --no-pci is required when no PCI devices are allowed"),
        "{err}"
    );

    let (code, _, err) =
        run(check_bin().args(["--config", "/nonexistent/trapeze.toml", "--check"]));
    assert_eq!(code, 2);
    assert!(
        err.contains("cannot read /nonexistent/trapeze.toml"),
        "{err}"
    );
}

#[test]
fn cli_usage_errors() {
    let (code, _, err) = run(&mut check_bin());
    assert_eq!(code, 2);
    assert!(err.contains("--config"), "{err}");
    let (code, _, err) = run(check_bin().args(["--config", "x.toml", "--workers", "0"]));
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run(check_bin().args(["--config", "x.toml", "--log-level", "loud"]));
    assert_eq!(code, 2, "{err}");
    let (code, out, _) = run(check_bin().arg("--help"));
    assert_eq!(code, 0);
    for opt in [
        "--config",
        "--check",
        "--no-huge",
        "--workers",
        "--log-level",
    ] {
        assert!(out.contains(opt), "{out}");
    }
}

#[test]
fn a_direct_address_and_the_c_flag_setting_reach_the_pool() {
    // A member with a direct address: the VIP sets the C flag by default (its connections may be
    // asked to join that address); a VIP may turn it off.
    let text = edit(
        "name = \"srv1\"\n",
        "name = \"srv1\"\ndirect = \"203.0.113.11\"\n",
    );
    let pool = PoolSnapshot::build(load_text(&text).unwrap().pool).unwrap();
    assert_eq!(
        pool.backend(BackendId(0)).unwrap().direct,
        Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 11)))
    );
    assert!(pool.vip(VipId(0)).unwrap().deny_join_initial);
    let off = text.replacen(
        "name = \"web4\"\n",
        "name = \"web4\"\ndeny_join_initial = false\n",
        1,
    );
    let pool = PoolSnapshot::build(load_text(&off).unwrap().pool).unwrap();
    assert!(!pool.vip(VipId(0)).unwrap().deny_join_initial);
    // Token mode without direct addresses: off.
    let pool = PoolSnapshot::build(load_text(&testbed_text()).unwrap().pool).unwrap();
    assert!(!pool.vip(VipId(0)).unwrap().deny_join_initial);
    // A direct address that is not one is refused, naming the field.
    let bad = edit(
        "name = \"srv1\"\n",
        "name = \"srv1\"\ndirect = \"nowhere\"\n",
    );
    let err = load_text(&bad).unwrap_err().to_string();
    assert!(err.contains("backends[0].direct"), "{err}");
}
