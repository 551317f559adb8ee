//! From [`ConfigFile`] to [`GatewayConfig`]: every rule of the configuration, each error naming
//! its field. All problems are collected (not only the first); an entry whose own fields are bad
//! is still known by name, so references to it do not cascade into more errors.

use core::net::IpAddr;
use std::collections::HashMap;

use trapeze_core::pipeline::{RateLimit, WorkerConfig};
use trapeze_core::pool::{
    Announce, Backend, BackendId, BackendState, PoolError, PoolSnapshot, PoolSpec, PortConfig,
    PortId, VipId, VipSpec,
};
use trapeze_core::tables::flow_table::{FlowTableConfig, Timeouts};
use trapeze_core::tables::maglev::{size_is_recommended, MaglevError, DEFAULT_SIZE, MAX_SIZE};
use trapeze_core::tables::token::{TokenTableConfig, MAX_SHARDS};

use super::file::{ConfigFile, EalSection};
use super::units::{self, eal_option_values, is_prime, parse_core_list};
use super::{
    ConfigError, FieldError, GatewayConfig, Overrides, PortSettings, WorkerPlacement,
    DEFAULT_QUEUE_SIZE, MAX_TABLE_CAPACITY, MAX_WEIGHT, MAX_WORKERS,
};

/// Highest lcore id accepted in `workers.lcores` (DPDK's `RTE_MAX_LCORE` is at most this).
const MAX_LCORE: i64 = 1023;

#[derive(Default)]
struct Ctx {
    errors: Vec<FieldError>,
    warnings: Vec<String>,
}

impl Ctx {
    fn err(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    /// `value` if it is in `lo..=hi`, else an error naming `field`.
    fn ranged(&mut self, field: &str, value: i64, lo: i64, hi: i64) -> Option<i64> {
        if (lo..=hi).contains(&value) {
            Some(value)
        } else {
            self.err(field, format!("{value} is out of range ({lo}..={hi})"));
            None
        }
    }

    fn parsed<T>(&mut self, field: &str, r: Result<T, String>) -> Option<T> {
        r.map_err(|e| self.err(field, e)).ok()
    }
}

fn check_name(ctx: &mut Ctx, field: String, name: &str, seen: &mut HashMap<String, String>) {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !ok {
        ctx.err(
            format!("{field}.name"),
            format!("{name:?} is not a valid name (1 to 64 of A-Z a-z 0-9 _ - .)"),
        );
    } else if let Some(first) = seen.get(name) {
        ctx.err(
            format!("{field}.name"),
            format!("duplicate name {name:?} (also {first})"),
        );
    } else {
        seen.insert(name.to_string(), field);
    }
}

/// The validated EAL part.
struct Eal {
    args: Vec<String>,
    vdevs: Vec<String>,
    core_list: Option<(String, Vec<u32>)>,
}

fn validate_eal(ctx: &mut Ctx, eal: &EalSection, overrides: &Overrides) -> Eal {
    let mut args = eal.args.clone();
    if overrides.no_huge && !args.iter().any(|a| a == "--no-huge") {
        args.push("--no-huge".into());
    }
    for (i, a) in args.iter().enumerate() {
        if a.trim().is_empty() {
            ctx.err(format!("eal.args[{i}]"), "empty argument");
        }
    }
    let no_pci = args.iter().any(|a| a == "--no-pci");
    let allows = eal_option_values(&args, "--allow", Some("-a"));
    let allowed_dev = |v: &str| v.split(',').next().unwrap_or_default().to_string();
    if !eal.allow_pci {
        if !no_pci {
            ctx.err(
                "eal.args",
                "--no-pci is required when no PCI devices are allowed (to drive PCI devices set \
                 eal.allow_pci = true, list them in eal.pci and allow each with -a)",
            );
        }
        if !eal.pci.is_empty() {
            ctx.err(
                "eal.pci",
                "PCI devices are listed but eal.allow_pci is false",
            );
        }
        for (i, v) in &allows {
            ctx.err(
                format!("eal.args[{i}]"),
                format!("-a {v:?} allows a PCI device but eal.allow_pci is false"),
            );
        }
    } else {
        if no_pci {
            ctx.err("eal.args", "--no-pci contradicts eal.allow_pci = true");
        }
        if eal.pci.is_empty() {
            ctx.err(
                "eal.pci",
                "eal.allow_pci is true but no PCI device is listed",
            );
        }
        for (j, dev) in eal.pci.iter().enumerate() {
            if !is_pci_address(dev) {
                ctx.err(
                    format!("eal.pci[{j}]"),
                    format!("{dev:?} is not a PCI address (expected e.g. \"0000:01:00.0\")"),
                );
            } else if !allows.iter().any(|(_, v)| allowed_dev(v) == *dev) {
                ctx.err(
                    format!("eal.pci[{j}]"),
                    format!("{dev:?} has no matching \"-a {dev}\" in eal.args"),
                );
            }
        }
        for (i, v) in &allows {
            if !eal.pci.contains(&allowed_dev(v)) {
                ctx.err(
                    format!("eal.args[{i}]"),
                    format!("-a {v:?}: the device is not listed in eal.pci"),
                );
            }
        }
    }
    let mut vdevs: Vec<String> = Vec::new();
    for (i, v) in eal_option_values(&args, "--vdev", None) {
        let name = v.split(',').next().unwrap_or_default().to_string();
        if name.is_empty() {
            ctx.err(format!("eal.args[{i}]"), "--vdev without a device name");
        } else if vdevs.contains(&name) {
            ctx.err(
                format!("eal.args[{i}]"),
                format!("--vdev {name:?} is given twice"),
            );
        } else {
            vdevs.push(name);
        }
    }
    if eal_option_values(&args, "--file-prefix", None).is_empty() {
        ctx.warnings.push(
            "eal.args has no --file-prefix: two DPDK processes on this machine would share \
             runtime files"
                .into(),
        );
    }
    let core_list = eal_option_values(&args, "--lcores", Some("-l"))
        .last()
        .and_then(|(_, v)| parse_core_list(v).map(|l| (v.to_string(), l)));
    Eal {
        args,
        vdevs,
        core_list,
    }
}

/// `DDDD:BB:DD.F` or `BB:DD.F`, hexadecimal.
fn is_pci_address(s: &str) -> bool {
    let hex = |p: &str, n: usize| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit());
    let parts: Vec<&str> = s.split(':').collect();
    let (bus, devfn) = match parts.as_slice() {
        [dom, bus, devfn] if hex(dom, 4) => (*bus, *devfn),
        [bus, devfn] => (*bus, *devfn),
        _ => return false,
    };
    let Some((dev, func)) = devfn.split_once('.') else {
        return false;
    };
    hex(bus, 2) && hex(dev, 2) && func.len() == 1 && func.chars().all(|c| ('0'..='7').contains(&c))
}

fn validate_ports(ctx: &mut Ctx, file: &ConfigFile, eal: &Eal) -> Vec<Option<PortSettings>> {
    if file.ports.is_empty() {
        ctx.err("ports", "at least one [[ports]] entry is required");
    }
    if file.ports.len() > 256 {
        ctx.err("ports", format!("{} ports; at most 256", file.ports.len()));
    }
    let mut names = HashMap::new();
    let mut devices: HashMap<&str, usize> = HashMap::new();
    let mut own: HashMap<IpAddr, String> = HashMap::new();
    let mut out = Vec::new();
    for (i, p) in file.ports.iter().enumerate() {
        let f = format!("ports[{i}]");
        let before = ctx.errors.len();
        check_name(ctx, f.clone(), &p.name, &mut names);
        if let Some(j) = devices.get(p.device.as_str()) {
            ctx.err(
                format!("{f}.device"),
                format!("device {:?} is already ports[{j}]", p.device),
            );
        } else {
            devices.insert(&p.device, i);
        }
        if !eal.vdevs.contains(&p.device) && !file.eal.pci.contains(&p.device) {
            let known: Vec<&str> = eal
                .vdevs
                .iter()
                .map(String::as_str)
                .chain(file.eal.pci.iter().map(String::as_str))
                .collect();
            ctx.err(
                format!("{f}.device"),
                format!(
                    "{:?} is neither created by a --vdev in eal.args nor listed in eal.pci \
                     (known devices: {})",
                    p.device,
                    if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    }
                ),
            );
        }
        let mac = p
            .mac
            .as_deref()
            .and_then(|m| ctx.parsed(&format!("{f}.mac"), units::parse_mac(m)));
        let gateway_mac = p
            .gateway_mac
            .as_deref()
            .and_then(|m| ctx.parsed(&format!("{f}.gateway_mac"), units::parse_mac(m)));
        let mut ipv4 = Vec::new();
        for (j, a) in p.ipv4.iter().enumerate() {
            if let Some(pfx) = ctx.parsed(&format!("{f}.ipv4[{j}]"), units::parse_ipv4_prefix(a)) {
                ipv4.push(pfx);
            }
        }
        let mut ipv6 = Vec::new();
        for (j, a) in p.ipv6.iter().enumerate() {
            if let Some(pfx) = ctx.parsed(&format!("{f}.ipv6[{j}]"), units::parse_ipv6_prefix(a)) {
                ipv6.push(pfx);
            }
        }
        if p.ipv4.is_empty() && p.ipv6.is_empty() {
            ctx.err(
                f.clone(),
                "a port needs at least one ipv4 or ipv6 address (source of ARP/NDP and ICMP)",
            );
        }
        let addrs = ipv4
            .iter()
            .enumerate()
            .map(|(j, a)| (format!("{f}.ipv4[{j}]"), IpAddr::V4(a.addr)))
            .chain(
                ipv6.iter()
                    .enumerate()
                    .map(|(j, a)| (format!("{f}.ipv6[{j}]"), IpAddr::V6(a.addr))),
            )
            .collect::<Vec<_>>();
        for (field, a) in addrs {
            if let Some(first) = own.get(&a) {
                ctx.err(
                    field,
                    format!("{a} is already the gateway's address {first}"),
                );
            } else {
                own.insert(a, field);
            }
        }
        let vlan = p
            .vlan
            .and_then(|v| ctx.ranged(&format!("{f}.vlan"), v, 1, 4094))
            .map(|v| v as u16);
        let gateway4 = p.gateway4.as_deref().and_then(|g| {
            let field = format!("{f}.gateway4");
            let g = ctx.parsed(&field, units::parse_ipv4(g))?;
            if ipv4.iter().any(|p| p.addr == g) {
                ctx.err(field, format!("{g} is the gateway's own address"));
            } else if !ipv4.iter().any(|p| p.contains(g)) {
                ctx.err(
                    field,
                    format!("{g} is not on-link: it is inside none of {f}.ipv4"),
                );
            }
            Some(g)
        });
        let gateway6 = p.gateway6.as_deref().and_then(|g| {
            let field = format!("{f}.gateway6");
            let g = ctx.parsed(&field, units::parse_ipv6(g))?;
            let link_local = (g.segments()[0] & 0xffc0) == 0xfe80;
            if ipv6.iter().any(|p| p.addr == g) {
                ctx.err(field, format!("{g} is the gateway's own address"));
            } else if !link_local && !ipv6.iter().any(|p| p.contains(g)) {
                ctx.err(
                    field,
                    format!("{g} is not on-link: it is link-local or inside none of {f}.ipv6"),
                );
            }
            Some(g)
        });
        let mut queue = |name: &str, v: Option<i64>| -> u16 {
            let Some(v) = v else {
                return DEFAULT_QUEUE_SIZE;
            };
            let field = format!("{f}.{name}");
            match ctx.ranged(&field, v, 64, 32768) {
                Some(v) if (v as u64).is_power_of_two() => v as u16,
                Some(v) => {
                    ctx.err(field, format!("{v} is not a power of two"));
                    DEFAULT_QUEUE_SIZE
                }
                None => DEFAULT_QUEUE_SIZE,
            }
        };
        let rx_queue_size = queue("rx_queue_size", p.rx_queue_size);
        let tx_queue_size = queue("tx_queue_size", p.tx_queue_size);
        let mtu = p
            .mtu
            .and_then(|m| ctx.ranged(&format!("{f}.mtu"), m, 576, 9702))
            .map(|m| m as u16);
        out.push((ctx.errors.len() == before).then(|| PortSettings {
            id: PortId(i as u8),
            name: p.name.clone(),
            device: p.device.clone(),
            mac,
            ipv4,
            ipv6,
            vlan,
            gateway4,
            gateway6,
            gateway_mac,
            rx_queue_size,
            tx_queue_size,
            mtu,
        }));
    }
    out
}

/// Names of ports and backends as written, with their positions (even for entries with errors,
/// so references to them do not cascade).
fn index_names<'a>(names: impl Iterator<Item = &'a str>) -> HashMap<&'a str, usize> {
    let mut m = HashMap::new();
    for (i, n) in names.enumerate() {
        m.entry(n).or_insert(i);
    }
    m
}

fn validate_backends(
    ctx: &mut Ctx,
    file: &ConfigFile,
    ports: &[Option<PortSettings>],
) -> Vec<Option<Backend>> {
    if file.backends.len() > 1 << 16 {
        ctx.err(
            "backends",
            format!("{} backends; at most 65536", file.backends.len()),
        );
    }
    let port_idx = index_names(file.ports.iter().map(|p| p.name.as_str()));
    let mut names = HashMap::new();
    let mut endpoints: HashMap<(IpAddr, u16), usize> = HashMap::new();
    let mut out = Vec::new();
    for (i, b) in file.backends.iter().enumerate() {
        let f = format!("backends[{i}]");
        let before = ctx.errors.len();
        check_name(ctx, f.clone(), &b.name, &mut names);
        let ipv4 = b
            .ipv4
            .as_deref()
            .and_then(|a| ctx.parsed(&format!("{f}.ipv4"), units::parse_ipv4(a)));
        let ipv6 = b
            .ipv6
            .as_deref()
            .and_then(|a| ctx.parsed(&format!("{f}.ipv6"), units::parse_ipv6(a)));
        if b.ipv4.is_none() && b.ipv6.is_none() {
            ctx.err(
                f.clone(),
                "a backend needs an ipv4 or an ipv6 address (or both)",
            );
        }
        let port = ctx
            .ranged(&format!("{f}.port"), b.port, 1, 65535)
            .map(|p| p as u16);
        let weight = ctx
            .ranged(&format!("{f}.weight"), b.weight, 0, MAX_WEIGHT.into())
            .map(|w| w as u32);
        let state = match b.state.as_str() {
            "active" => Some(BackendState::Active),
            "draining" => Some(BackendState::Draining),
            "down" => Some(BackendState::Down),
            s => {
                ctx.err(
                    format!("{f}.state"),
                    format!("{s:?} is not a state (\"active\", \"draining\" or \"down\")"),
                );
                None
            }
        };
        let mac = b
            .mac
            .as_deref()
            .and_then(|m| ctx.parsed(&format!("{f}.mac"), units::parse_mac(m)));
        let direct = b.direct.as_deref().and_then(|a| {
            ctx.parsed(
                &format!("{f}.direct"),
                a.parse::<IpAddr>()
                    .map_err(|_| format!("{a:?} is not an IP address")),
            )
        });
        let egress = match port_idx.get(b.egress_port.as_str()) {
            Some(&j) => Some(j),
            None => {
                ctx.err(
                    format!("{f}.egress_port"),
                    format!("unknown port {:?}", b.egress_port),
                );
                None
            }
        };
        let addrs = [
            ("ipv4", ipv4.map(IpAddr::V4)),
            ("ipv6", ipv6.map(IpAddr::V6)),
        ];
        for (key, a) in addrs {
            let Some(a) = a else { continue };
            let field = format!("{f}.{key}");
            if let Err(e) = own_rule(ports, a) {
                ctx.err(field.clone(), e);
            }
            if let Some(egress_port) = egress.and_then(|j| ports[j].as_ref()) {
                if mac.is_none() && egress_port.next_hop(a).is_none() {
                    ctx.err(
                        field.clone(),
                        format!(
                            "{a} is not on-link on port {:?} and the port has no {} \
                             (set one, or a static backends[{i}].mac)",
                            egress_port.name,
                            if a.is_ipv4() { "gateway4" } else { "gateway6" }
                        ),
                    );
                }
            }
            if let Some(p) = port {
                if let Some(j) = endpoints.get(&(a, p)) {
                    ctx.err(
                        field,
                        format!(
                            "{a} port {p} is also backends[{j}] ({:?})",
                            file.backends[*j].name
                        ),
                    );
                } else {
                    endpoints.insert((a, p), i);
                }
            }
        }
        let ok = ctx.errors.len() == before;
        out.push(match (ok, port, weight, state, egress) {
            (true, Some(port), Some(weight), Some(state), Some(egress)) => Some(Backend {
                id: BackendId(i as u16),
                name: b.name.clone(),
                ipv4,
                ipv6,
                port,
                weight,
                state,
                egress: PortId(egress as u8),
                mac,
                direct,
            }),
            _ => None,
        });
    }
    out
}

/// [`super::rules::not_own`] over the ports that validated (their positions kept, so that the
/// message names the right `ports[j]`).
fn own_rule(ports: &[Option<PortSettings>], a: IpAddr) -> Result<(), String> {
    match ports.iter().position(|p| {
        p.as_ref()
            .is_some_and(|p| super::rules::not_own(core::slice::from_ref(p), a).is_err())
    }) {
        Some(j) => Err(format!("{a} is the gateway's own address on ports[{j}]")),
        None => Ok(()),
    }
}

fn validate_vips(
    ctx: &mut Ctx,
    file: &ConfigFile,
    ports: &[Option<PortSettings>],
    backends: &[Option<Backend>],
) -> Vec<Option<VipSpec>> {
    if file.vips.len() > 1 << 16 {
        ctx.err("vips", format!("{} vips; at most 65536", file.vips.len()));
    }
    if file.vips.is_empty() {
        ctx.warnings
            .push("no [[vips]]: the gateway will forward nothing".into());
    }
    let port_idx = index_names(file.ports.iter().map(|p| p.name.as_str()));
    let backend_idx = index_names(file.backends.iter().map(|b| b.name.as_str()));
    let mut names = HashMap::new();
    let mut endpoints: HashMap<(IpAddr, u16), usize> = HashMap::new();
    // NAT return path: backend (address, port) -> (vip index, member position).
    let mut reverse: HashMap<(IpAddr, u16), (usize, usize)> = HashMap::new();
    let mut used = vec![false; file.backends.len()];
    let mut out = Vec::new();
    for (i, v) in file.vips.iter().enumerate() {
        let f = format!("vips[{i}]");
        let before = ctx.errors.len();
        check_name(ctx, f.clone(), &v.name, &mut names);
        let addr = ctx.parsed(&format!("{f}.address"), units::parse_ip(&v.address));
        let port = ctx
            .ranged(&format!("{f}.port"), v.port, 1, 65535)
            .map(|p| p as u16);
        let mut duplicate = false;
        if let Some(a) = addr {
            if let Err(e) = own_rule(ports, a) {
                ctx.err(format!("{f}.address"), e);
            }
            if let Some(p) = port {
                if let Some(j) = endpoints.get(&(a, p)) {
                    duplicate = true;
                    ctx.err(
                        format!("{f}.address"),
                        format!(
                            "{a} port {p} tcp is already vips[{j}] ({:?})",
                            file.vips[*j].name
                        ),
                    );
                } else {
                    endpoints.insert((a, p), i);
                }
            }
        }
        if v.protocol != "tcp" {
            ctx.err(
                format!("{f}.protocol"),
                format!("{:?} is not supported (only \"tcp\")", v.protocol),
            );
        }
        let mode = addr.and_then(|a| {
            let d = v
                .dsr
                .as_ref()
                .map(|d| (d.encap.as_deref(), d.gue_port, d.outer_source.as_deref()));
            match super::dsr::forwarding_mode(a, &v.mode, d) {
                Ok(m) => Some(m),
                Err((sub, msg)) => {
                    ctx.err(format!("{f}.{sub}"), msg);
                    None
                }
            }
        });
        let client_port = port_idx.get(v.client_port.as_str()).copied();
        if client_port.is_none() {
            ctx.err(
                format!("{f}.client_port"),
                format!("unknown port {:?}", v.client_port),
            );
        }
        if let Err(e) = super::rules::vip_members(v.backends.len()) {
            ctx.err(format!("{f}.backends"), e);
        }
        let mut members = Vec::new();
        let mut any_weight = false;
        let mut all_known = true;
        for (k, name) in v.backends.iter().enumerate() {
            let field = format!("{f}.backends[{k}]");
            let Some(&bi) = backend_idx.get(name.as_str()) else {
                ctx.err(field, format!("unknown backend {name:?}"));
                all_known = false;
                continue;
            };
            used[bi] = true;
            if let Some(first) = v.backends[..k].iter().position(|n| n == name) {
                ctx.err(
                    field,
                    format!("backend {name:?} is listed twice (also {f}.backends[{first}])"),
                );
                continue;
            }
            members.push(BackendId(bi as u16));
            let Some(b) = backends[bi].as_ref() else {
                all_known = false;
                continue;
            };
            any_weight |= b.weight > 0;
            let Some(a) = addr else { continue };
            let Some(ba) = b.addr(a.is_ipv6()) else {
                ctx.err(
                    field,
                    format!(
                        "backend {name:?} has no {} address, and vip {:?} is {}",
                        if a.is_ipv6() { "IPv6" } else { "IPv4" },
                        v.name,
                        if a.is_ipv6() { "IPv6" } else { "IPv4" },
                    ),
                );
                continue;
            };
            if v.mode == "dsr" {
                continue; // DSR backends answer clients directly: no return path to map
            }
            // A duplicate VIP is reported once, not once per member.
            match reverse.get(&(ba, b.port)) {
                _ if duplicate => {}
                Some(&(j, kk)) if j != i => ctx.err(
                    field,
                    format!(
                        "backend {name:?} ({ba} port {}) already serves vips[{j}] ({:?}, as \
                         vips[{j}].backends[{kk}]); in NAT mode a backend address and port can \
                         serve one vip only (the return path would be ambiguous)",
                        b.port, file.vips[j].name
                    ),
                ),
                _ => {
                    reverse.insert((ba, b.port), (i, k));
                }
            }
        }
        if all_known && !members.is_empty() && !any_weight {
            ctx.err(
                format!("{f}.backends"),
                "every member has weight 0: the vip could take no new connection",
            );
        }
        let mut join_ports = Vec::new();
        for (name, &jp) in &v.join_ports {
            let field = format!("{f}.join_ports.{name}");
            let Some(jp) = ctx.ranged(&field, jp, 1, 65535).map(|p| p as u16) else {
                continue;
            };
            match backend_idx.get(name.as_str()) {
                Some(&bi) if v.backends.iter().any(|n| n == name) => {
                    join_ports.push((BackendId(bi as u16), jp));
                }
                _ => ctx.err(field, format!("{name:?} is not a member of this vip")),
            }
            if Some(jp) == port {
                ctx.err(
                    format!("{f}.join_ports.{name}"),
                    format!("{jp} is the vip's own port"),
                );
            }
        }
        let announce = match v.announce.as_deref() {
            None | Some("off") => Some(Announce::Off),
            Some("join-ports") => Some(Announce::JoinPorts),
            Some("backend") => Some(Announce::Backend),
            Some(other) => {
                ctx.err(
                    format!("{f}.announce"),
                    format!("{other:?}: expected \"off\", \"join-ports\" or \"backend\""),
                );
                None
            }
        };
        let ok = ctx.errors.len() == before;
        out.push(match (ok, addr, port, client_port, mode, announce) {
            (true, Some(addr), Some(port), Some(cp), Some(mode), Some(announce)) => Some(VipSpec {
                id: VipId(i as u16),
                name: v.name.clone(),
                addr,
                port,
                proto: 6,
                mode,
                backends: members,
                client_port: PortId(cp as u8),
                join_ports,
                announce,
                deny_join_initial: v.deny_join_initial,
            }),
            _ => None,
        });
    }
    for (i, u) in used.iter().enumerate() {
        if !u {
            ctx.warnings.push(format!(
                "backends[{i}] ({:?}) is a member of no vip",
                file.backends[i].name
            ));
        }
    }
    out
}

struct Tables {
    flows: FlowTableConfig,
    tokens: TokenTableConfig,
    maglev_size: u32,
    icmp: RateLimit,
}

fn validate_tables(ctx: &mut Ctx, file: &ConfigFile) -> Tables {
    let t = &file.tables;
    let cap = MAX_TABLE_CAPACITY as i64;
    let flows_default = FlowTableConfig::default();
    let tokens_default = TokenTableConfig::default();
    let flow_capacity = t
        .flow_capacity
        .and_then(|v| ctx.ranged("tables.flow_capacity", v, 1, cap))
        .map_or(flows_default.capacity, |v| v as usize);
    let token_capacity = t
        .token_capacity
        .and_then(|v| ctx.ranged("tables.token_capacity", v, 0, cap))
        .map_or(tokens_default.capacity, |v| v as usize);
    let token_shards = t
        .token_shards
        .and_then(|v| ctx.ranged("tables.token_shards", v, 1, MAX_SHARDS as i64))
        .map_or(tokens_default.shards, |v| v as usize);
    let maglev_size = match t.maglev_size {
        None => DEFAULT_SIZE,
        Some(v) => match ctx.ranged("tables.maglev_size", v, 2, MAX_SIZE.into()) {
            Some(v) if is_prime(v as u64) => v as u32,
            Some(v) => {
                let below = (2..v).rev().find(|&n| is_prime(n as u64));
                let above = (v + 1..).find(|&n| is_prime(n as u64));
                let hint = match (below, above) {
                    (Some(b), Some(a)) => format!(" (the nearest primes are {b} and {a})"),
                    _ => String::new(),
                };
                ctx.err("tables.maglev_size", format!("{v} is not prime{hint}"));
                DEFAULT_SIZE
            }
            None => DEFAULT_SIZE,
        },
    };
    let d = Timeouts::default();
    let mut timeout = |key: &str, v: &Option<String>, default: u32| -> u32 {
        let Some(s) = v else { return default };
        let field = format!("tables.timeouts.{key}");
        match units::parse_duration_ms(s) {
            Ok(ms) if ms <= u64::from(u32::MAX) => ms as u32,
            Ok(_) => {
                ctx.err(field, format!("{s:?} is too long (at most 49d)"));
                default
            }
            Err(e) => {
                ctx.err(field, e);
                default
            }
        }
    };
    let timeouts = Timeouts {
        half_open_ms: timeout("half_open", &t.timeouts.half_open, d.half_open_ms),
        established_ms: timeout("established", &t.timeouts.established, d.established_ms),
        closing_ms: timeout("closing", &t.timeouts.closing, d.closing_ms),
    };
    let r = RateLimit::default();
    let max = i64::from(u32::MAX);
    let icmp = RateLimit {
        per_sec: t
            .icmp_rate
            .per_sec
            .and_then(|v| ctx.ranged("tables.icmp_rate.per_sec", v, 0, max))
            .map_or(r.per_sec, |v| v as u32),
        burst: t
            .icmp_rate
            .burst
            .and_then(|v| ctx.ranged("tables.icmp_rate.burst", v, 0, max))
            .map_or(r.burst, |v| v as u32),
    };
    Tables {
        flows: FlowTableConfig {
            capacity: flow_capacity,
            timeouts,
        },
        tokens: TokenTableConfig {
            capacity: token_capacity,
            shards: token_shards,
        },
        maglev_size,
        icmp,
    }
}

fn validate_workers(
    ctx: &mut Ctx,
    file: &ConfigFile,
    eal: &Eal,
    overrides: &Overrides,
) -> WorkerPlacement {
    let w = &file.workers;
    let mut lcores: Option<Vec<u32>> = None;
    if let Some(list) = &w.lcores {
        if list.is_empty() {
            ctx.err(
                "workers.lcores",
                "an empty lcore list (omit it, or list one lcore per worker)",
            );
        }
        let mut ok = Vec::new();
        for (i, &c) in list.iter().enumerate() {
            let field = format!("workers.lcores[{i}]");
            let Some(c) = ctx.ranged(&field, c, 0, MAX_LCORE) else {
                continue;
            };
            let c = c as u32;
            if ok.contains(&c) {
                ctx.err(field, format!("lcore {c} is listed twice"));
                continue;
            }
            if let Some((text, cores)) = &eal.core_list {
                if !cores.contains(&c) {
                    ctx.err(
                        field,
                        format!("lcore {c} is not in the EAL core list {text:?} (eal.args)"),
                    );
                }
            }
            ok.push(c);
        }
        lcores = Some(ok);
    }
    let (count_field, count) = match (overrides.workers, w.count) {
        (Some(n), _) => ("workers.count (--workers)", Some(i64::from(n))),
        (None, c) => ("workers.count", c),
    };
    let count = match (count, &w.lcores) {
        (Some(c), _) => ctx
            .ranged(count_field, c, 1, MAX_WORKERS.into())
            .map_or(1, |c| c as u16),
        (None, Some(l)) => l.len().clamp(1, MAX_WORKERS.into()) as u16,
        (None, None) => 1,
    };
    if let Some(l) = &w.lcores {
        if !l.is_empty() && l.len() != usize::from(count) {
            ctx.err(
                count_field,
                format!("is {count} but workers.lcores lists {} lcores", l.len()),
            );
        }
    }
    if let Some((text, cores)) = &eal.core_list {
        if usize::from(count) > cores.len() {
            ctx.err(
                count_field,
                format!(
                    "{count} workers but the EAL core list {text:?} (eal.args) has only {} lcores",
                    cores.len()
                ),
            );
        }
    }
    let idle_sleep_us = match w.idle_sleep_us {
        None => 0,
        Some(v) if (0..=10_000).contains(&v) => v as u32,
        Some(v) => {
            ctx.err(
                "workers.idle_sleep_us",
                format!("{v} is out of range (0 to 10000 microseconds)"),
            );
            0
        }
    };
    let watchdog = match w.watchdog.as_deref() {
        None => Some(crate::watchdog::DEFAULT_TIMEOUT),
        Some(s) => match units::parse_duration_ms(s) {
            Ok(0) => None,
            Ok(ms) if (100..=600_000).contains(&ms) => Some(std::time::Duration::from_millis(ms)),
            Ok(ms) => {
                ctx.err(
                    "workers.watchdog",
                    format!("{ms} ms is out of range (\"0\" to disable, or 100ms to 10min)"),
                );
                None
            }
            Err(e) => {
                ctx.err("workers.watchdog", e);
                None
            }
        },
    };
    WorkerPlacement {
        count,
        lcores,
        idle_sleep_us,
        watchdog,
    }
}

/// The field a pool error is about (the pool was built from validated parts, so this is a
/// backstop: the rules above should have caught it with a more precise path).
fn pool_error_field(e: &PoolError, file: &ConfigFile) -> String {
    let vip = |name: &str| {
        file.vips
            .iter()
            .position(|v| v.name == name)
            .map_or_else(|| "vips".to_string(), |i| format!("vips[{i}]"))
    };
    let backend = |name: &str| {
        file.backends
            .iter()
            .position(|b| b.name == name)
            .map_or_else(|| "backends".to_string(), |i| format!("backends[{i}]"))
    };
    match e {
        PoolError::Maglev(_, MaglevError::SizeTooSmall { .. })
        | PoolError::Maglev(_, MaglevError::SizeNotPrime(_))
        | PoolError::Maglev(_, MaglevError::SizeTooLarge(_)) => "tables.maglev_size".into(),
        PoolError::Maglev(v, _) | PoolError::DuplicateVip(v) => vip(v),
        PoolError::UnknownBackend { vip: v, .. } | PoolError::FamilyMismatch { vip: v, .. } => {
            vip(v)
        }
        PoolError::SharedBackendEndpoint { vips, .. } => vip(&vips.1),
        PoolError::Dsr { vip: v, .. } => format!("{}.dsr", vip(v)),
        PoolError::JoinPorts { vip: v, .. } => format!("{}.join_ports", vip(v)),
        PoolError::BadPort(s) | PoolError::UnknownPort(s) | PoolError::IdMismatch(s) => {
            match s.split_once(' ') {
                Some(("vip", n)) => vip(n),
                Some(("backend", n)) => backend(n),
                _ => "ports".into(),
            }
        }
    }
}

fn pool_error_message(e: &PoolError) -> String {
    match e {
        PoolError::Maglev(vip, MaglevError::SizeTooSmall { size, backends }) => format!(
            "{size} slots are fewer than the {backends} backends of vip {vip:?} that take new \
             connections"
        ),
        PoolError::Maglev(vip, MaglevError::SizeNotPrime(size)) => {
            format!("{size} is not prime (vip {vip:?})")
        }
        PoolError::Maglev(vip, MaglevError::SizeTooLarge(size)) => {
            format!("{size} is too large (vip {vip:?})")
        }
        PoolError::Dsr { reason, .. } | PoolError::JoinPorts { reason, .. } => reason.clone(),
        e => format!("the pool does not build: {e}"),
    }
}

pub(super) fn validate(
    file: ConfigFile,
    overrides: &Overrides,
) -> Result<GatewayConfig, ConfigError> {
    let mut ctx = Ctx::default();
    if file.eal.args.is_empty()
        && file.ports.is_empty()
        && file.vips.is_empty()
        && file.backends.is_empty()
    {
        ctx.err(
            "(file)",
            "the configuration is empty: it needs [eal], [[ports]], [[vips]] and [[backends]] \
             (see configs/example.toml)",
        );
        return Err(ConfigError::Invalid(ctx.errors));
    }
    let eal = validate_eal(&mut ctx, &file.eal, overrides);
    let ports = validate_ports(&mut ctx, &file, &eal);
    let backends = validate_backends(&mut ctx, &file, &ports);
    let vips = validate_vips(&mut ctx, &file, &ports, &backends);
    let tables = validate_tables(&mut ctx, &file);
    let workers = validate_workers(&mut ctx, &file, &eal, overrides);
    for v in vips.iter().flatten() {
        let active = v
            .backends
            .iter()
            .filter(|b| {
                backends[b.0 as usize]
                    .as_ref()
                    .is_some_and(|b| b.weight > 0)
            })
            .count();
        if !size_is_recommended(tables.maglev_size, active) {
            ctx.warnings.push(format!(
                "tables.maglev_size {} is below 100 slots per backend for vip {:?} ({active} \
                 backends): shares may differ by more than 1%",
                tables.maglev_size, v.name
            ));
        }
    }
    if !ctx.errors.is_empty() {
        return Err(ConfigError::Invalid(ctx.errors));
    }
    let ports: Vec<PortSettings> = ports.into_iter().flatten().collect();
    let pool = PoolSpec {
        version: 1,
        ports: ports
            .iter()
            .map(|p| PortConfig {
                id: p.id,
                mac: p.mac.unwrap_or_default(),
                ipv4: p.ipv4.iter().map(|a| a.addr).collect(),
                ipv6: p.ipv6.iter().map(|a| a.addr).collect(),
                vlan: p.vlan,
                gateway_mac: p.gateway_mac,
                mtu: p.mtu.unwrap_or(0),
            })
            .collect(),
        backends,
        vips,
        maglev_size: tables.maglev_size,
    };
    if let Err(e) = PoolSnapshot::build(pool.clone()) {
        ctx.err(pool_error_field(&e, &file), pool_error_message(&e));
        return Err(ConfigError::Invalid(ctx.errors));
    }
    let defaults = WorkerConfig::default();
    let worker = WorkerConfig {
        id: 0,
        workers: workers.count,
        flows: tables.flows,
        max_vips: defaults.max_vips.max(file.vips.len()),
        max_backends: defaults.max_backends.max(file.backends.len()),
        icmp_rate: tables.icmp,
    };
    let health = validate_health(&mut ctx, &file.health);
    let state = validate_state(&mut ctx, &file.state, &eal.args);
    let cluster = file.cluster.as_ref().and_then(|c| {
        match super::cluster::validate(c, tables.tokens.capacity, MAX_TABLE_CAPACITY) {
            Ok(s) => Some(s),
            Err(errs) => {
                for (f, m) in errs {
                    ctx.err(f, m);
                }
                None
            }
        }
    });
    if !ctx.errors.is_empty() {
        return Err(ConfigError::Invalid(ctx.errors));
    }
    Ok(GatewayConfig {
        health,
        cluster,
        state,
        eal_args: eal.args,
        allow_pci: file.eal.allow_pci,
        pci: file.eal.pci.clone(),
        ports,
        pool,
        worker,
        workers,
        tokens: tables.tokens,
        warnings: ctx.warnings,
    })
}

/// `[state]`: an absolute path to a file (not a directory), when given.
fn validate_state(
    ctx: &mut Ctx,
    st: &super::file::StateSection,
    eal_args: &[String],
) -> super::StateSettings {
    let path = st.path.as_ref().and_then(|p| {
        let path = std::path::PathBuf::from(p);
        let ok = path.is_absolute()
            && !p.ends_with('/')
            && path.file_name().is_some_and(|n| n != "." && n != "..");
        if ok {
            Some(path)
        } else {
            ctx.err(
                "state.path",
                format!(
                    "{p:?} is not an absolute path to a file (e.g. \"/dev/hugepages/gw1.tzstate\")"
                ),
            );
            None
        }
    });
    super::StateSettings {
        persist: st.persist.unwrap_or(true),
        path,
        default_name: super::StateSettings::name_for(eal_args),
    }
}

/// `[health]`: durations parse, the timeout is shorter than the interval, thresholds 1..=100.
fn validate_health(ctx: &mut Ctx, h: &super::file::HealthSection) -> super::HealthSettings {
    let mut out = super::HealthSettings::default();
    if let Some(e) = h.enabled {
        out.enabled = e;
    }
    let mut dur = |field: &str, v: &Option<String>, default: std::time::Duration| match v {
        None => default,
        Some(s) => match units::parse_duration_ms(s).map(std::time::Duration::from_millis) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                ctx.err(field, "must be more than zero");
                default
            }
            Err(e) => {
                ctx.err(field, e);
                default
            }
        },
    };
    out.interval = dur("health.interval", &h.interval, out.interval);
    out.timeout = dur("health.timeout", &h.timeout, out.timeout);
    if out.timeout > out.interval {
        ctx.err("health.timeout", "must not be longer than health.interval");
    }
    for (field, v, slot) in [
        ("health.rise", h.rise, &mut out.rise),
        ("health.fall", h.fall, &mut out.fall),
    ] {
        match v {
            None => {}
            Some(n) if (1..=100).contains(&n) => *slot = n as u32,
            Some(n) => ctx.err(field, format!("{n} is out of range (1 to 100)")),
        }
    }
    out
}
