//! The gateway daemon's configuration: a TOML file (`configs/example.toml` documents every key),
//! parsed into [`file::ConfigFile`] and validated into a [`GatewayConfig`] that holds the core's
//! own types: a [`PoolSpec`] for [`PoolSnapshot::build`], a [`WorkerConfig`] template, a
//! [`TokenTableConfig`], the EAL arguments and per-port [`PortSettings`] for the runtime.
//!
//! ```text
//! text --parse_toml--> ConfigFile --validate--> GatewayConfig --pool--> PoolSnapshot::build
//!        (line/col)                (field paths: vips[1].backends[2])
//! ```
//!
//! **Identities.** `PortId`, `VipId` and `BackendId` are the positions of the entries in the
//! file (`[[ports]]`, `[[vips]]`, `[[backends]]`, counting from 0). A port's `PortId` is the
//! index into [`GatewayConfig::ports`]; the runtime maps it to the DPDK port of
//! [`PortSettings::device`].
//!
//! **Validation** refuses anything the gateway could not run with and reports *every* problem it
//! finds, each naming its field. It ends by building the pool snapshot (Maglev tables included),
//! so a configuration that validates is one the dataplane accepts.

pub mod cluster;
pub mod dsr;
pub mod error;
pub mod file;
pub mod read;
pub mod rules;
pub mod units;
mod validate;

use core::fmt::Write as _;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use trapeze_core::pipeline::WorkerConfig;
use trapeze_core::pool::{BackendState, Mac, PoolError, PoolSnapshot, PoolSpec, PortId};
use trapeze_core::tables::token::TokenTableConfig;

pub use error::{ConfigError, FieldError};
pub use units::{Ipv4Prefix, Ipv6Prefix};

/// Default RX/TX descriptors per queue.
pub const DEFAULT_QUEUE_SIZE: u16 = 1024;
/// Largest Maglev weight accepted ([`rules::MAX_WEIGHT`]).
pub const MAX_WEIGHT: u32 = rules::MAX_WEIGHT;
/// Largest number of workers accepted.
pub const MAX_WORKERS: u16 = 256;
/// Largest per-worker flow capacity or token capacity accepted (2²⁶: about 4.5 GB of flow table
/// per worker).
pub const MAX_TABLE_CAPACITY: usize = 1 << 26;

/// Settings given on the command line that take precedence over the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// Append `--no-huge` to the EAL arguments (tests and machines without hugepages).
    pub no_huge: bool,
    /// Replace `workers.count`.
    pub workers: Option<u16>,
    /// `--reload-dir`: besides the configured file, `POST /reload` may read files under this
    /// directory (and nothing else).
    pub reload_dir: Option<std::path::PathBuf>,
}

/// A dataplane port as the runtime sets it up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSettings {
    /// Position in `[[ports]]`; the pool's `PortId`.
    pub id: PortId,
    /// Name.
    pub name: String,
    /// DPDK device name (a `--vdev` name or a PCI address; vdev-only setups pass `--no-pci`).
    pub device: String,
    /// Configured MAC; `None`: use the device's ([`GatewayConfig::set_device_mac`]).
    pub mac: Option<Mac>,
    /// The gateway's IPv4 addresses and their on-link prefixes.
    pub ipv4: Vec<Ipv4Prefix>,
    /// The gateway's IPv6 addresses and their on-link prefixes.
    pub ipv6: Vec<Ipv6Prefix>,
    /// 802.1Q VLAN id, `None` untagged.
    pub vlan: Option<u16>,
    /// IPv4 next hop for off-link destinations.
    pub gateway4: Option<Ipv4Addr>,
    /// IPv6 next hop for off-link destinations.
    pub gateway6: Option<Ipv6Addr>,
    /// Static MAC of the next hop (else resolved by ARP/NDP).
    pub gateway_mac: Option<Mac>,
    /// RX descriptors per queue.
    pub rx_queue_size: u16,
    /// TX descriptors per queue.
    pub tx_queue_size: u16,
    /// MTU to set on the device, when configured.
    pub mtu: Option<u16>,
}

impl PortSettings {
    /// Whether `addr` is a neighbour on this port: inside one of its prefixes (or IPv6
    /// link-local).
    pub fn on_link(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(a) => self.ipv4.iter().any(|p| p.contains(a)),
            IpAddr::V6(a) => {
                (a.segments()[0] & 0xffc0) == 0xfe80 || self.ipv6.iter().any(|p| p.contains(a))
            }
        }
    }

    /// The neighbour to resolve (ARP/NDP) to reach `dst` through this port: `dst` itself when
    /// on-link, else the port's gateway of that family; `None` when unreachable.
    pub fn next_hop(&self, dst: IpAddr) -> Option<IpAddr> {
        if self.on_link(dst) {
            return Some(dst);
        }
        match dst {
            IpAddr::V4(_) => self.gateway4.map(IpAddr::V4),
            IpAddr::V6(_) => self.gateway6.map(IpAddr::V6),
        }
    }

    /// Whether `addr` is one of the gateway's own addresses on this port.
    pub fn is_own(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(a) => self.ipv4.iter().any(|p| p.addr == a),
            IpAddr::V6(a) => self.ipv6.iter().any(|p| p.addr == a),
        }
    }
}

/// How many workers run, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerPlacement {
    /// Number of workers (`>= 1`).
    pub count: u16,
    /// The lcore of each worker, when the file pins them (`lcores.len() == count`).
    pub lcores: Option<Vec<u32>>,
    /// Microseconds a worker sleeps after a run of empty polls (0: busy polling).
    pub idle_sleep_us: u32,
    /// A worker stalled this long turns the instance `stopping` (`None`: no watchdog).
    pub watchdog: Option<std::time::Duration>,
}

/// Active health checks (`[health]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthSettings {
    /// Whether backends are probed.
    pub enabled: bool,
    /// Time between probes of a backend.
    pub interval: std::time::Duration,
    /// Time a probe waits for its answer.
    pub timeout: std::time::Duration,
    /// Successes in a row that bring a down backend back.
    pub rise: u32,
    /// Failures in a row that mark a backend down.
    pub fall: u32,
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: std::time::Duration::from_millis(500),
            timeout: std::time::Duration::from_millis(400),
            rise: 2,
            fall: 3,
        }
    }
}

/// Where the tables live (`[state]`): a file that outlives the daemon, so that a restart (a
/// crash, `kill -9`, a planned stop) re-attaches to its flows and tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateSettings {
    /// Keep the tables across restarts. Off: they are still in huge pages when there are enough
    /// free, but in anonymous memory that dies with the process.
    pub persist: bool,
    /// The state file as configured; `None`: [`Self::default_name`] in the runtime's choice of
    /// directory (`/dev/hugepages` when it is hugetlbfs, else `/dev/shm`).
    pub path: Option<std::path::PathBuf>,
    /// The default file name: the EAL `--file-prefix` (unique per DPDK process on a machine)
    /// with `.tzstate`.
    pub default_name: String,
}

impl StateSettings {
    /// The default file name for the EAL arguments `eal_args`.
    pub fn name_for(eal_args: &[String]) -> String {
        let prefix = units::eal_option_values(eal_args, "--file-prefix", None)
            .last()
            .map_or("rte", |(_, v)| *v)
            .to_string();
        format!("{prefix}.tzstate")
    }
}

/// A validated configuration, in the core's types.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Arguments for `rte_eal_init` (without the program name), `--no-huge` appended when asked.
    pub eal_args: Vec<String>,
    /// Whether PCI devices are driven (`eal.allow_pci`).
    pub allow_pci: bool,
    /// The PCI devices allowed.
    pub pci: Vec<String>,
    /// Ports, indexed by `PortId`.
    pub ports: Vec<PortSettings>,
    /// The pool: ports (with a zero MAC where the device's is to be used until
    /// [`set_device_mac`](Self::set_device_mac)), backends and VIPs with ids by position.
    pub pool: PoolSpec,
    /// Worker template: `id` 0, `workers` = the count; see [`worker_config`](Self::worker_config).
    pub worker: WorkerConfig,
    /// Worker count and placement.
    pub workers: WorkerPlacement,
    /// The shared token table.
    pub tokens: TokenTableConfig,
    /// Active health checks.
    pub health: HealthSettings,
    /// Token sharing with other instances (`[cluster]`), when configured.
    pub cluster: Option<cluster::ClusterSettings>,
    /// The state file (`[state]`).
    pub state: StateSettings,
    /// Things that are allowed but probably not meant (printed by `--check`).
    pub warnings: Vec<String>,
}

impl GatewayConfig {
    /// The configuration of worker `id`.
    pub fn worker_config(&self, id: u16) -> WorkerConfig {
        WorkerConfig { id, ..self.worker }
    }

    /// Builds the pool snapshot (validation already did once, so this succeeds unless the spec
    /// was changed since).
    pub fn snapshot(&self) -> Result<PoolSnapshot, PoolError> {
        PoolSnapshot::build(self.pool.clone())
    }

    /// Records the MAC the device reports for a port configured without one (a configured MAC
    /// is kept).
    pub fn set_device_mac(&mut self, port: PortId, mac: Mac) {
        let i = port.0 as usize;
        if self.ports.get(i).is_some_and(|p| p.mac.is_none()) {
            if let Some(p) = self.pool.ports.get_mut(i) {
                p.mac = mac;
            }
        }
    }

    /// The port with this name.
    pub fn port_by_name(&self, name: &str) -> Option<&PortSettings> {
        self.ports.iter().find(|p| p.name == name)
    }

    /// A human summary (what `--check` prints): ports, VIPs with their Maglev shares, backends,
    /// tables, workers, and the Maglev fingerprint.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let snap = match self.snapshot() {
            Ok(snap) => snap,
            Err(e) => return format!("pool does not build: {e}\n"),
        };
        let port_name = |id: PortId| {
            self.ports
                .get(id.0 as usize)
                .map_or("?", |p| p.name.as_str())
        };
        let _ = writeln!(s, "eal args: {}", self.eal_args.join(" "));
        let _ = writeln!(s, "ports: {}", self.ports.len());
        for p in &self.ports {
            let mut addrs: Vec<String> = p.ipv4.iter().map(ToString::to_string).collect();
            addrs.extend(p.ipv6.iter().map(ToString::to_string));
            let _ = write!(
                s,
                "  [{}] {} device {} mac {} addresses {}",
                p.id.0,
                p.name,
                p.device,
                p.mac.map_or("(device's)".into(), |m| units::format_mac(&m)),
                addrs.join(" ")
            );
            if let Some(v) = p.vlan {
                let _ = write!(s, " vlan {v}");
            }
            if let Some(g) = p.gateway4 {
                let _ = write!(s, " gateway4 {g}");
            }
            if let Some(g) = p.gateway6 {
                let _ = write!(s, " gateway6 {g}");
            }
            let _ = writeln!(s);
        }
        let vips = snap.vips.iter().flatten().count();
        let _ = writeln!(s, "vips: {vips}");
        for v in snap.vips.iter().flatten() {
            let members: Vec<&str> = v
                .backends
                .iter()
                .filter_map(|b| snap.backend(*b).map(|b| b.name.as_str()))
                .collect();
            let shares: Vec<String> = v
                .maglev
                .slot_counts()
                .into_iter()
                .map(|(b, n)| {
                    let name = snap.backend(b).map_or("?", |b| b.name.as_str());
                    format!("{name} {n}")
                })
                .collect();
            let addr = match v.addr {
                IpAddr::V4(a) => format!("{a}:{}", v.port),
                IpAddr::V6(a) => format!("[{a}]:{}", v.port),
            };
            let mode = match dsr::describe(&v.mode) {
                (m, None) => m.to_string(),
                (m, Some((encap, port, outer))) => format!(
                    "{m} ({encap}{}, outer source {outer})",
                    port.map(|p| format!(" port {p}")).unwrap_or_default()
                ),
            };
            let _ = writeln!(
                s,
                "  [{}] {} {addr}/tcp {mode} via port {} backends {} maglev slots: {}",
                v.id.0,
                v.name,
                port_name(v.client_port),
                members.join(","),
                if shares.is_empty() {
                    "(none: no member takes new connections)".into()
                } else {
                    shares.join(", ")
                }
            );
        }
        let _ = writeln!(s, "backends: {}", snap.backends.iter().flatten().count());
        for b in snap.backends.iter().flatten() {
            let addrs: Vec<String> = [b.ipv4.map(IpAddr::V4), b.ipv6.map(IpAddr::V6)]
                .into_iter()
                .flatten()
                .map(|a| a.to_string())
                .collect();
            let state = match b.state {
                BackendState::Active => "active",
                BackendState::Draining => "draining",
                BackendState::Down => "down",
            };
            let _ = writeln!(
                s,
                "  [{}] {} {} port {} weight {} {state} via port {} mac {}",
                b.id.0,
                b.name,
                addrs.join(" "),
                b.port,
                b.weight,
                port_name(b.egress),
                b.mac.map_or("(ARP/NDP)".into(), |m| units::format_mac(&m))
            );
        }
        let t = &self.worker.flows.timeouts;
        let _ = writeln!(
            s,
            "tables: flows {} per worker, tokens {} in {} shards, maglev size {}, timeouts half-open {} established {} closing {}, icmp {}/s burst {}",
            self.worker.flows.capacity,
            self.tokens.capacity,
            self.tokens.shards,
            self.pool.maglev_size,
            units::format_duration_ms(t.half_open_ms.into()),
            units::format_duration_ms(t.established_ms.into()),
            units::format_duration_ms(t.closing_ms.into()),
            self.worker.icmp_rate.per_sec,
            self.worker.icmp_rate.burst,
        );
        let _ = match &self.workers.lcores {
            Some(l) => writeln!(s, "workers: {} on lcores {l:?}", self.workers.count),
            None => writeln!(s, "workers: {}", self.workers.count),
        };
        let _ = writeln!(
            s,
            "state: {}",
            match (&self.state.persist, &self.state.path) {
                (false, _) => "not kept across restarts (persist = false)".to_string(),
                (true, Some(p)) => format!("kept in {}", p.display()),
                (true, None) => format!(
                    "kept in /dev/hugepages/{0} (or /dev/shm/{0})",
                    self.state.default_name
                ),
            }
        );
        if let Some(c) = &self.cluster {
            let _ = writeln!(
                s,
                "cluster: listen {} peers {} secret {} ({} bytes), batch {:?}, refresh {:?}, remote timeout {:?}, remote capacity {}, journal {}",
                c.listen,
                c.peers
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(" "),
                c.secret_file.display(),
                c.secret.len(),
                c.batch_interval,
                c.refresh_interval,
                c.remote_timeout,
                c.remote_capacity,
                c.journal_capacity
            );
        }
        for w in &self.warnings {
            let _ = writeln!(s, "warning: {w}");
        }
        let _ = writeln!(s, "maglev fingerprint: {:#018x}", snap.maglev_fingerprint());
        s
    }
}

/// Parses TOML into the file structure. Syntax errors carry a line and column; type errors,
/// missing keys and unknown keys also name the field.
pub fn parse_toml(text: &str) -> Result<file::ConfigFile, ConfigError> {
    let de = toml::Deserializer::parse(text).map_err(|e| parse_error(text, &e, None))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let field = (path != ".").then_some(path);
        parse_error(text, e.inner(), field)
    })
}

fn parse_error(text: &str, e: &toml::de::Error, field: Option<String>) -> ConfigError {
    let (line, column) = e.span().map_or((0, 0), |span| line_col(text, span.start));
    ConfigError::Parse {
        line,
        column,
        field,
        message: e.message().trim_end().to_string(),
    }
}

/// 1-based line and column (in characters) of byte `offset`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Parses and validates a configuration given as text.
pub fn from_toml(text: &str, overrides: &Overrides) -> Result<GatewayConfig, ConfigError> {
    validate::validate(parse_toml(text)?, overrides)
}

/// Reads, parses and validates the configuration file at `path`.
pub fn load(path: &Path, overrides: &Overrides) -> Result<GatewayConfig, ConfigError> {
    let text = read::read_config(path).map_err(|e| ConfigError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    from_toml(&text, overrides)
}

/// Validates an already parsed file.
pub fn validate(
    file: file::ConfigFile,
    overrides: &Overrides,
) -> Result<GatewayConfig, ConfigError> {
    validate::validate(file, overrides)
}
