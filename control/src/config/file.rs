//! The configuration file as written: plain serde structures mirroring the TOML, before any
//! validation. Every table rejects unknown keys (`deny_unknown_fields`), so a misspelt key is an
//! error rather than a silently ignored default.
//!
//! Addresses, MACs, durations and enumerations are kept as strings and ranged numbers as `i64`
//! here: the validator ([`super::validate`]) parses them so that every error names its field
//! (`backends[2].ipv4: "10.91.0.300" is not an IPv4 address`) instead of a generic serde message.
//! `configs/example.toml` documents every key.

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// `[eal]`: DPDK Environment Abstraction Layer arguments.
    #[serde(default)]
    pub eal: EalSection,
    /// `[[ports]]`: dataplane ports; `PortId` = position.
    #[serde(default)]
    pub ports: Vec<PortEntry>,
    /// `[[vips]]`: virtual services; `VipId` = position.
    #[serde(default)]
    pub vips: Vec<VipEntry>,
    /// `[[backends]]`: servers; `BackendId` = position.
    #[serde(default)]
    pub backends: Vec<BackendEntry>,
    /// `[tables]`: table sizes and timeouts.
    #[serde(default)]
    pub tables: TablesSection,
    /// `[workers]`: number or placement of the forwarding workers.
    #[serde(default)]
    pub workers: WorkersSection,
    /// `[health]`: active health checks of the backends.
    #[serde(default)]
    pub health: HealthSection,
    /// `[cluster]`: token sharing with other instances (off when absent).
    #[serde(default)]
    pub cluster: Option<ClusterSection>,
    /// `[state]`: the state file that keeps the tables across restarts.
    #[serde(default)]
    pub state: StateSection,
}

/// `[state]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSection {
    /// Keep the flow and token tables across restarts (default true).
    pub persist: Option<bool>,
    /// The state file, an absolute path (default: `<eal --file-prefix>.tzstate` in
    /// /dev/hugepages, or /dev/shm without hugetlbfs).
    pub path: Option<String>,
}

/// `[cluster]` (see `super::cluster`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// UDP `address:port` the sync thread binds.
    pub listen: String,
    /// The other instances' `address:port`.
    pub peers: Vec<String>,
    /// File holding the shared secret.
    pub secret_file: String,
    /// Batching delay of local changes, e.g. "1ms", "250us" (default "100us"; the sender polls
    /// the journal at least every 100 us).
    pub batch_interval: Option<String>,
    /// Lifetime of a remote owner without refresh (default "10m").
    pub remote_timeout: Option<String>,
    /// Period of the full re-announcement of local tokens (default "60s").
    pub refresh_interval: Option<String>,
    /// Tokens with remote owners (default: `tables.token_capacity`).
    pub remote_capacity: Option<i64>,
    /// Local changes waiting to be sent (default 65536).
    pub journal_capacity: Option<i64>,
}

/// `[health]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSection {
    /// Probe the backends (default true).
    pub enabled: Option<bool>,
    /// Time between probes of a backend, e.g. "500ms" (default 500ms).
    pub interval: Option<String>,
    /// Time a probe waits for its answer (default 400ms; less than the interval).
    pub timeout: Option<String>,
    /// Successes in a row that bring a down backend back (default 2).
    pub rise: Option<i64>,
    /// Failures in a row that mark a backend down (default 3).
    pub fall: Option<i64>,
}

/// `[eal]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EalSection {
    /// Arguments passed to `rte_eal_init` (after the program name), e.g. `--no-pci` (required
    /// unless `allow_pci` is set), `--file-prefix=...`, `--vdev=net_af_packet0,iface=veth0`, `-l`,
    /// `0-1`.
    #[serde(default)]
    pub args: Vec<String>,
    /// Whether this gateway drives PCI devices. Off by default: then `args` must contain
    /// `--no-pci` and only virtual devices are used.
    #[serde(default)]
    pub allow_pci: bool,
    /// The PCI devices allowed (e.g. `"0000:01:00.0"`); each needs a matching `-a` in `args`.
    #[serde(default)]
    pub pci: Vec<String>,
}

/// One `[[ports]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortEntry {
    /// Name other sections refer to (`vips[].client_port`, `backends[].egress_port`).
    pub name: String,
    /// DPDK device name: a `--vdev` name (`net_af_packet0`) or a PCI address in `eal.pci`.
    pub device: String,
    /// The port's MAC; absent: the device's own.
    pub mac: Option<String>,
    /// The gateway's IPv4 addresses with prefix length (`"10.90.0.1/24"`).
    #[serde(default)]
    pub ipv4: Vec<String>,
    /// The gateway's IPv6 addresses with prefix length (`"fd90::1/64"`).
    #[serde(default)]
    pub ipv6: Vec<String>,
    /// 802.1Q VLAN id (1..=4094); absent: untagged.
    pub vlan: Option<i64>,
    /// IPv4 next hop for off-link destinations (must be on-link).
    pub gateway4: Option<String>,
    /// IPv6 next hop for off-link destinations (on-link or link-local).
    pub gateway6: Option<String>,
    /// Static MAC of the next hop; absent: resolved by ARP/NDP.
    pub gateway_mac: Option<String>,
    /// RX descriptors per queue (power of two, 64..=32768; default 1024).
    pub rx_queue_size: Option<i64>,
    /// TX descriptors per queue (power of two, 64..=32768; default 1024).
    pub tx_queue_size: Option<i64>,
    /// The largest IP packet the port sends (576..=9702); set on the device when given. DSR
    /// checks tunnel packets against it (default 1500).
    pub mtu: Option<i64>,
}

/// One `[[vips]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VipEntry {
    /// Name.
    pub name: String,
    /// The VIP address (IPv4 or IPv6).
    pub address: String,
    /// The VIP's TCP port (1..=65535).
    pub port: i64,
    /// `"tcp"` (the only one today).
    #[serde(default = "default_protocol")]
    pub protocol: String,
    /// `"nat"` (default) or `"dsr"`.
    #[serde(default = "default_mode")]
    pub mode: String,
    /// DSR settings (`mode = "dsr"` only; absent: IPIP from the gateway's address).
    pub dsr: Option<DsrEntry>,
    /// Name of the port where the clients' packets arrive.
    pub client_port: String,
    /// Names of the member backends.
    pub backends: Vec<String>,
    /// `[vips.join_ports]`: member name -> a port of the VIP's address whose subflows go to that
    /// member with no state (stateless MP_JOIN routing; see README "Join routing").
    #[serde(default)]
    pub join_ports: std::collections::BTreeMap<String, i64>,
    /// `"off"` (default), `"join-ports"` (NAT: the gateway announces VIP:join port of the
    /// connection's backend) or `"backend"` (the backend's own address: joins bypass the gateway).
    pub announce: Option<String>,
    /// Whether the gateway sets the C flag ("do not join the initial address") in the MP_CAPABLE
    /// SYN/ACK it forwards (NAT). Absent: on where the gateway's announcement depends on it
    /// (`announce`, a member with a `direct` address), off otherwise.
    pub deny_join_initial: Option<bool>,
}

/// A `[vips.dsr]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DsrEntry {
    /// `"ipip"` (default) or `"gue"`.
    pub encap: Option<String>,
    /// GUE: the UDP port the backends decapsulate on (default 6080).
    pub gue_port: Option<i64>,
    /// `"gateway"` (default: the gateway's address on the backend's port) or a prefix of the
    /// VIP's family (`"10.91.1.0/24"`): the source is then hashed from the flow inside it.
    pub outer_source: Option<String>,
}

/// One `[[backends]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendEntry {
    /// Name.
    pub name: String,
    /// IPv4 address (a member of an IPv4 VIP needs one).
    pub ipv4: Option<String>,
    /// IPv6 address (a member of an IPv6 VIP needs one).
    pub ipv6: Option<String>,
    /// The service's TCP port on the backend (1..=65535).
    pub port: i64,
    /// Maglev weight (0..=65535; default 1). 0: no new connections.
    #[serde(default = "default_weight")]
    pub weight: i64,
    /// `"active"` (default), `"draining"` or `"down"`.
    #[serde(default = "default_state")]
    pub state: String,
    /// Name of the port towards the backend.
    pub egress_port: String,
    /// Static MAC of the backend (or of its next hop); absent: resolved by ARP/NDP.
    pub mac: Option<String>,
    /// An address the clients can reach the server on directly (its public address, IPv4 or
    /// IPv6). Draining it (or a graceful removal) then moves its MPTCP connections there: the
    /// gateway announces it to each (README "Removing a server").
    pub direct: Option<String>,
}

/// `[tables]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TablesSection {
    /// Flow-table capacity per worker (default 1 048 576).
    pub flow_capacity: Option<i64>,
    /// Token-table capacity, shared (default 1 048 576; 0 refuses every join).
    pub token_capacity: Option<i64>,
    /// Token-table lock shards (default 64).
    pub token_shards: Option<i64>,
    /// Maglev table size, prime (default 65537).
    pub maglev_size: Option<i64>,
    /// `[tables.timeouts]`.
    #[serde(default)]
    pub timeouts: TimeoutsSection,
    /// `[tables.icmp_rate]`.
    #[serde(default)]
    pub icmp_rate: IcmpRateSection,
}

/// `[tables.timeouts]`: idle timeouts of flows, in human units.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsSection {
    /// SYN seen, handshake incomplete (default `"10s"`).
    pub half_open: Option<String>,
    /// Established (default `"10m"`).
    pub established: Option<String>,
    /// FIN or RST seen (default `"15s"`).
    pub closing: Option<String>,
}

/// `[tables.icmp_rate]`: per-worker budget of generated ICMP messages.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IcmpRateSection {
    /// Sustained rate per second (default 1000; 0: only the burst, never refilled).
    pub per_sec: Option<i64>,
    /// Burst (default 100; 0: never generate).
    pub burst: Option<i64>,
}

/// `[workers]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkersSection {
    /// Number of forwarding workers (default 1, or the length of `lcores`).
    pub count: Option<i64>,
    /// The lcores the workers run on, one worker each.
    pub lcores: Option<Vec<i64>>,
    /// Microseconds a worker sleeps when its queues were empty for a while (0: poll without
    /// pause, the right choice on dedicated cores).
    pub idle_sleep_us: Option<i64>,
    /// A worker that makes no progress (its loop's heartbeat does not move) for this long turns
    /// the instance `stopping` (default "2s"; "0" disables).
    pub watchdog: Option<String>,
}

fn default_protocol() -> String {
    "tcp".into()
}

fn default_mode() -> String {
    "nat".into()
}

fn default_weight() -> i64 {
    1
}

fn default_state() -> String {
    "active".into()
}
