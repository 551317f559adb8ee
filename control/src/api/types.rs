//! The API's messages: what the HTTP server hands to the control thread ([`Request`]) and what
//! the control thread answers ([`Response`]), with the JSON bodies of the routes.
//!
//! Every type is plain serde data. Request bodies reject unknown fields, so a misspelt key is a
//! `400 Bad Request` rather than a silently ignored default. Names follow the configuration
//! file's rule ([`check_name`]: 1 to 64 of `A-Z a-z 0-9 _ - .`), which also makes them safe in
//! URLs and metric labels.
//!
//! ## Status codes
//!
//! | status | when | constructor |
//! |---|---|---|
//! | 200 | success (201 for `POST /vips` and `POST /vips/{vip}/backends`) | |
//! | 400 | malformed JSON, unknown field, wrong type, bad query or header | [`Response::bad_request`] |
//! | 404 | unknown VIP or backend (or route) | [`Response::not_found`] |
//! | 409 | `if_version` / `If-Match` is not the current version | [`Response::version_conflict`] |
//! | 413 | body larger than the limit (64 KiB) | |
//! | 422 | well-formed but refused by validation; `field` names the culprit | [`Response::invalid`] |
//! | 500 | the API thread failed on this request (nothing was applied) | |
//! | 503 | the control thread did not answer in time, or is gone | [`Response::unavailable`] |
//!
//! A request answered with an error has changed nothing, except a `503`: the control thread may
//! still apply a change it received after the server stopped waiting (`GET /status` tells the
//! version that is serving).

use core::fmt;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};
use trapeze_core::pool::BackendState;

/// Largest accepted name length (as in the configuration file).
pub const MAX_NAME_LEN: usize = 64;

/// Checks a VIP or backend name: 1 to 64 of `A-Z a-z 0-9 _ - .` (the configuration file's rule).
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid name (1 to 64 of A-Z a-z 0-9 _ - .)"
        ))
    }
}

/// Transport protocol of a VIP (TCP is the only one the gateway balances).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// TCP (and MPTCP).
    #[default]
    Tcp,
}

/// Forwarding mode of a VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Destination NAT; the gateway also carries the return path.
    #[default]
    Nat,
    /// Direct server return: packets tunnelled to the backend, which answers the client.
    Dsr,
}

/// What the gateway announces to a VIP's MPTCP clients (the file's `announce`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AnnounceMode {
    /// Nothing.
    #[default]
    Off,
    /// VIP:join port of the connection's backend (NAT VIPs).
    JoinPorts,
    /// The backend's own address: joins bypass the gateway.
    Backend,
}

impl From<trapeze_core::pool::Announce> for AnnounceMode {
    fn from(a: trapeze_core::pool::Announce) -> Self {
        use trapeze_core::pool::Announce;
        match a {
            Announce::Off => Self::Off,
            Announce::JoinPorts => Self::JoinPorts,
            Announce::Backend => Self::Backend,
        }
    }
}

impl From<AnnounceMode> for trapeze_core::pool::Announce {
    fn from(a: AnnounceMode) -> Self {
        match a {
            AnnounceMode::Off => Self::Off,
            AnnounceMode::JoinPorts => Self::JoinPorts,
            AnnounceMode::Backend => Self::Backend,
        }
    }
}

/// DSR settings of a VIP (the file's `[vips.dsr]`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DsrBody {
    /// `ipip` (default) or `gue`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encap: Option<String>,
    /// GUE destination port (default 6080).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gue_port: Option<u16>,
    /// `gateway` (default) or a prefix of the VIP's family to hash the source from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outer_source: Option<String>,
}

/// How a backend leaves its pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemoveMode {
    /// Drain first (no new connections; established flows and joins continue), remove when its
    /// flows have ended or the drain deadline passed.
    #[default]
    Graceful,
    /// Remove now: its flows are dropped (`backend_gone`) and its joins refused while it is out.
    /// Added back within `REMOVED_MEMORY` (10 min) with the same name, addresses and port, it
    /// gets its id back and its flows and joins resume.
    Hard,
}

impl RemoveMode {
    /// The query-string spelling (`graceful`, `hard`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Graceful => "graceful",
            Self::Hard => "hard",
        }
    }
}

/// A backend's lifecycle state, as the API shows it (mirrors [`BackendState`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Takes new connections.
    #[default]
    Active,
    /// Keeps its flows and joins, no new connections.
    Draining,
    /// Failed health checks.
    Down,
}

impl State {
    /// Every state, in order.
    pub const ALL: [State; 3] = [State::Active, State::Draining, State::Down];

    /// Label (`active`, `draining`, `down`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Draining => "draining",
            Self::Down => "down",
        }
    }
}

impl From<BackendState> for State {
    fn from(s: BackendState) -> Self {
        match s {
            BackendState::Active => Self::Active,
            BackendState::Draining => Self::Draining,
            BackendState::Down => Self::Down,
        }
    }
}

impl From<State> for BackendState {
    fn from(s: State) -> Self {
        match s {
            State::Active => Self::Active,
            State::Draining => Self::Draining,
            State::Down => Self::Down,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn default_weight() -> u32 {
    1
}

/// Body of `POST /vips`: a new VIP (the configuration file's `[[vips]]` entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VipBody {
    /// Name (unique among VIPs).
    pub name: String,
    /// VIP address (IPv4 or IPv6).
    pub address: IpAddr,
    /// VIP port (1..=65535).
    pub port: u16,
    /// `tcp` (default; the only one).
    #[serde(default)]
    pub protocol: Protocol,
    /// `nat` (default) or `dsr`.
    #[serde(default)]
    pub mode: Mode,
    /// DSR settings (`mode: dsr` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dsr: Option<DsrBody>,
    /// Name of the dataplane port where the clients' packets arrive; absent: the daemon's
    /// default (the client port the configured VIPs share; 422 when there is no single one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_port: Option<String>,
    /// Names of existing backends to make members (more can be added later).
    #[serde(default)]
    pub backends: Vec<String>,
    /// Stateless join ports: member name -> port (the file's `[vips.join_ports]`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub join_ports: std::collections::BTreeMap<String, u16>,
    /// What the gateway announces to MPTCP clients (`off` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announce: Option<AnnounceMode>,
    /// The C flag in the MP_CAPABLE SYN/ACK the gateway forwards (NAT); absent: on where the
    /// gateway's announcement depends on it (`announce`, a member with a direct address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny_join_initial: Option<bool>,
}

/// Body of `POST /vips/{vip}/backends`: a new backend (the file's `[[backends]]` entry), made a
/// member of `{vip}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendBody {
    /// Name (unique among backends).
    pub name: String,
    /// IPv4 address (a member of an IPv4 VIP needs one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<Ipv4Addr>,
    /// IPv6 address (a member of an IPv6 VIP needs one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Addr>,
    /// Service port on the backend (1..=65535).
    pub port: u16,
    /// Maglev weight (0..=65535, default 1; 0: no new connections).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Name of the dataplane port towards the backend; absent: the daemon's default (the
    /// egress port the configured backends share; 422 when there is no single one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_port: Option<String>,
    /// Static MAC of the backend or its next hop (`"02:00:00:00:00:01"`); absent: ARP/NDP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// An address the clients can reach it on directly: draining it moves its MPTCP
    /// connections there (migration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct: Option<IpAddr>,
}

impl BackendBody {
    /// The MAC, parsed (the server has already refused an unparsable one with a `422`).
    pub fn mac_bytes(&self) -> Option<Result<trapeze_core::pool::Mac, String>> {
        self.mac.as_deref().map(crate::config::units::parse_mac)
    }
}

/// Body of `PUT /backends/{name}/weight`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightBody {
    /// New Maglev weight (0..=65535).
    pub weight: u32,
}

/// Body of `POST /backends/{name}/drain` (optional: an empty body is `{}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainBody {
    /// Seconds after which the remaining flows are dropped; absent: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_s: Option<u64>,
}

/// Body of `POST /reload` (optional).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadBody {
    /// Configuration file to load; absent: the file the daemon was started with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// An empty body (`POST /backends/{name}/undrain`): only `{}` or nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmptyBody {}

/// What the API asks of the control thread. Every change carries `if_version`: when `Some`, the
/// control thread applies it only if the configuration's current version equals it, else
/// answers [`Response::version_conflict`] (see [`check_version`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// `GET /vips` -> [`Response::Vips`].
    ListVips,
    /// `GET /vips/{name}` -> [`Response::Vip`].
    GetVip {
        /// VIP name.
        name: String,
    },
    /// `POST /vips` -> [`Response::Applied`].
    AddVip {
        /// The VIP.
        spec: VipBody,
        /// Expected current version.
        if_version: Option<u64>,
    },
    /// `DELETE /vips/{name}` -> [`Response::Applied`]. Its flows are dropped (`vip_gone`); its
    /// backends stay (they may serve other VIPs, or be added again).
    RemoveVip {
        /// VIP name.
        name: String,
        /// Expected current version.
        if_version: Option<u64>,
    },
    /// `POST /vips/{vip}/backends` -> [`Response::Applied`].
    AddBackend {
        /// The VIP it joins.
        vip: String,
        /// The backend.
        backend: BackendBody,
        /// Expected current version.
        if_version: Option<u64>,
    },
    /// `DELETE /backends/{name}?mode=graceful|hard` -> [`Response::Applied`].
    RemoveBackend {
        /// Backend name.
        name: String,
        /// Graceful (default) or hard.
        mode: RemoveMode,
        /// Expected current version.
        if_version: Option<u64>,
    },
    /// `POST /backends/{name}/drain` -> [`Response::Applied`].
    Drain {
        /// Backend name.
        name: String,
        /// Seconds after which remaining flows are dropped.
        deadline_s: Option<u64>,
        /// Expected current version.
        if_version: Option<u64>,
    },
    /// `POST /backends/{name}/undrain` -> [`Response::Applied`].
    Undrain {
        /// Backend name.
        name: String,
        /// Expected current version.
        if_version: Option<u64>,
    },
    /// `PUT /backends/{name}/weight` -> [`Response::Applied`].
    SetWeight {
        /// Backend name.
        name: String,
        /// New weight.
        weight: u32,
        /// Expected current version.
        if_version: Option<u64>,
    },
    /// `POST /reload` (and SIGHUP, without the API) -> [`Response::Applied`], or a `422` naming
    /// the error and the version still serving.
    Reload {
        /// File to load; `None`: the daemon's configuration file.
        path: Option<String>,
        /// Expected current version.
        if_version: Option<u64>,
    },
    /// `GET /stats` -> [`Response::Stats`].
    Stats,
    /// `GET /metrics` -> [`Response::Metrics`].
    Metrics,
    /// `GET /status` -> [`Response::Status`].
    Status,
    /// `GET /instance` -> [`Response::Instance`]: what the BGP feeder announces.
    Instance,
    /// `POST /instance/drain` (`true`) or `/instance/undrain` -> [`Response::Instance`]: the
    /// instance's VIPs are withdrawn (or announced again); forwarding is unchanged, so flows
    /// that still arrive are served while the routers move them away.
    InstanceDrain {
        /// Drain (`true`) or undrain.
        drain: bool,
    },
}

impl Request {
    /// Whether the request changes the configuration.
    pub fn is_change(&self) -> bool {
        !matches!(
            self,
            Self::ListVips
                | Self::GetVip { .. }
                | Self::Stats
                | Self::Metrics
                | Self::Status
                | Self::Instance
                | Self::InstanceDrain { .. }
        )
    }

    /// The expected version of a change (`None` for reads and unconditional changes).
    pub fn if_version(&self) -> Option<u64> {
        match self {
            Self::AddVip { if_version, .. }
            | Self::RemoveVip { if_version, .. }
            | Self::AddBackend { if_version, .. }
            | Self::RemoveBackend { if_version, .. }
            | Self::Drain { if_version, .. }
            | Self::Undrain { if_version, .. }
            | Self::SetWeight { if_version, .. }
            | Self::Reload { if_version, .. } => *if_version,
            Self::ListVips
            | Self::GetVip { .. }
            | Self::Stats
            | Self::Metrics
            | Self::Status
            | Self::Instance
            | Self::InstanceDrain { .. } => None,
        }
    }

    /// A short name of the operation (`add_vip`, `drain`, ...), as in the JSON `op` tag.
    pub fn op(&self) -> &'static str {
        match self {
            Self::ListVips => "list_vips",
            Self::GetVip { .. } => "get_vip",
            Self::AddVip { .. } => "add_vip",
            Self::RemoveVip { .. } => "remove_vip",
            Self::AddBackend { .. } => "add_backend",
            Self::RemoveBackend { .. } => "remove_backend",
            Self::Drain { .. } => "drain",
            Self::Undrain { .. } => "undrain",
            Self::SetWeight { .. } => "set_weight",
            Self::Reload { .. } => "reload",
            Self::Stats => "stats",
            Self::Metrics => "metrics",
            Self::Status => "status",
            Self::Instance => "instance",
            Self::InstanceDrain { drain: true } => "instance_drain",
            Self::InstanceDrain { drain: false } => "instance_undrain",
        }
    }
}

/// The serialisation check of a change: `None` when `if_version` is absent or equals
/// `current`, else the `409` to answer.
///
/// ```
/// # use trapeze_control::api::{check_version, Request, Response};
/// fn apply(req: &Request, current: u64) -> Response {
///     if let Some(conflict) = check_version(req.if_version(), current) {
///         return conflict;
///     }
///     Response::Applied { version: current + 1, warning: None }
/// }
/// ```
pub fn check_version(if_version: Option<u64>, current: u64) -> Option<Response> {
    match if_version {
        Some(v) if v != current => Some(Response::version_conflict(v, current)),
        _ => None,
    }
}

/// The reason of a `409`: the request expected version `expected`, the configuration is at
/// version `current`.
pub fn version_conflict_reason(expected: u64, current: u64) -> String {
    format!(
        "version conflict: the request expects version {expected}, the configuration is at \
         version {current}"
    )
}

/// A backend as `GET /vips` shows it, with its counters summed over the workers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendView {
    /// Name.
    pub name: String,
    /// Its address in the VIP's family (what traffic of this VIP is sent to).
    pub address: Option<IpAddr>,
    /// IPv4 address.
    pub ipv4: Option<Ipv4Addr>,
    /// IPv6 address.
    pub ipv6: Option<Ipv6Addr>,
    /// Service port.
    pub port: u16,
    /// Maglev weight.
    pub weight: u32,
    /// State.
    pub state: State,
    /// Flows in the workers' flow tables (`None` when the daemon does not count them).
    pub active_flows: Option<u64>,
    /// New connections given to it.
    pub new_conns: u64,
    /// Joins routed to it.
    pub joins: u64,
    /// Packets sent to it.
    pub packets: u64,
    /// Bytes sent to it.
    pub bytes: u64,
    /// The address its clients can reach it on directly (migration), if declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct: Option<IpAddr>,
    /// Migration counters, once a migration has begun.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<MigrationView>,
}

/// A VIP as `GET /vips` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipView {
    /// Name.
    pub name: String,
    /// Address.
    pub address: IpAddr,
    /// Port.
    pub port: u16,
    /// Protocol.
    pub protocol: Protocol,
    /// Forwarding mode.
    pub mode: Mode,
    /// DSR settings, for a DSR VIP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dsr: Option<DsrBody>,
    /// Client-side dataplane port name.
    pub client_port: String,
    /// Member backends.
    pub backends: Vec<BackendView>,
    /// Stateless join ports: member name -> port.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub join_ports: std::collections::BTreeMap<String, u16>,
    /// What the gateway announces to MPTCP clients.
    #[serde(default)]
    pub announce: AnnounceMode,
    /// Whether the gateway sets the C flag in the MP_CAPABLE SYN/ACK (resolved).
    #[serde(default)]
    pub deny_join_initial: bool,
    /// New connections.
    pub new_conns: u64,
    /// Joins routed.
    pub joins: u64,
    /// Packets towards backends.
    pub packets: u64,
    /// Bytes towards backends.
    pub bytes: u64,
}

/// One worker's counters in `GET /stats`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WorkerStatsView {
    /// Worker index.
    pub worker: usize,
    /// Frames received from the NIC queues.
    pub rx: u64,
    /// Frames transmitted.
    pub tx: u64,
    /// Frames forwarded.
    pub forwarded: u64,
    /// Replies generated (ARP, NDP, ICMP).
    pub replied: u64,
    /// Frames punted to the control thread.
    pub punted: u64,
    /// Frames handed to another worker.
    pub handed_off: u64,
    /// Total drops.
    pub dropped: u64,
    /// Drops by reason (only reasons that happened).
    pub drops: BTreeMap<String, u64>,
    /// Events by kind (only events that happened).
    pub events: BTreeMap<String, u64>,
    /// Flows in its flow table.
    pub flows: u64,
    /// Its flow table's capacity.
    pub flow_capacity: u64,
}

/// A VIP's or backend's counters in `GET /stats`, summed over the workers.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TrafficView {
    /// Name.
    pub name: String,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
    /// New connections.
    pub new_conns: u64,
    /// Joins routed.
    pub joins: u64,
    /// Flows in the flow tables, when counted (backends only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_flows: Option<u64>,
    /// State (backends only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<State>,
    /// Packets forwarded back towards clients (VIPs only; stays 0 for a DSR VIP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_client_packets: Option<u64>,
    /// Bytes forwarded back towards clients (VIPs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_client_bytes: Option<u64>,
    /// Migration to the backend's direct address (backends only, once it has begun).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<MigrationView>,
}

/// A backend's migration counters (`pipeline/flow/migration.rs`), summed over the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MigrationView {
    /// MPTCP connections sent the direct address.
    pub announced: u64,
    /// Connections whose traffic moved to the direct subflow (the client's DATA_ACK on the
    /// subflow through the gateway ran more than 64 KiB ahead of that subflow's own).
    pub migrated: u64,
    /// Connections left to the drain policy (plain TCP, or no echo).
    pub left_behind: u64,
    /// Connections that closed while being migrated.
    #[serde(default)]
    pub closed: u64,
    /// Connections that still need the gateway (being migrated, or left behind and open), from
    /// each worker's last complete walk of its flow table.
    #[serde(default)]
    pub pending: u64,
    /// Drains with a deadline that ended early: every connection had left the gateway.
    #[serde(default)]
    pub completed_early: u64,
    /// Drains with a deadline that ended at the deadline.
    #[serde(default)]
    pub completed_at_deadline: u64,
}

impl MigrationView {
    /// The counters of `c` and how the backend's drains ended (`drains`: early, at the
    /// deadline), if a migration has begun or a drain ended.
    pub fn of(c: &trapeze_core::pipeline::BackendCounters, drains: (u64, u64)) -> Option<Self> {
        let m = Self {
            announced: c.migrate_announced,
            migrated: c.migrate_migrated,
            left_behind: c.migrate_left_behind,
            closed: c.migrate_closed,
            pending: c.migrate_pending,
            completed_early: drains.0,
            completed_at_deadline: drains.1,
        };
        (m != Self::default()).then_some(m)
    }
}

/// The token table in `GET /stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TokenStatsView {
    /// Tokens held.
    pub entries: u64,
    /// Capacity.
    pub capacity: u64,
    /// Token collisions seen (two backends' connections with one token).
    pub collisions: u64,
    /// MP_JOIN SYNs dropped for an unknown token.
    pub unknown_token_joins: u64,
}

/// Upper bounds (µs) of the propagation-delay buckets of [`ClusterStatsView::delay_buckets`]
/// (the last bucket is everything above the last bound).
pub const DELAY_BUCKETS_US: [u64; 9] = [
    100, 250, 500, 1_000, 2_000, 5_000, 10_000, 100_000, 1_000_000,
];

/// Token sharing between instances (`[cluster]`) in `GET /stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ClusterStatsView {
    /// Datagrams sent (each to one peer).
    pub datagrams_sent: u64,
    /// Records sent (learns and removals, summed over peers).
    pub records_sent: u64,
    /// Datagrams the socket refused to send.
    pub send_errors: u64,
    /// Full re-announcements of the local tokens.
    pub refreshes: u64,
    /// Datagrams received.
    pub datagrams_received: u64,
    /// Records in accepted datagrams.
    pub records_received: u64,
    /// Records applied (a remote owner inserted, refreshed or removed).
    pub records_applied: u64,
    /// Datagrams refused: HMAC did not verify.
    pub rejected_auth: u64,
    /// Datagrams refused: (epoch, sequence) not newer than the last one accepted from the peer.
    pub rejected_sequence: u64,
    /// Datagrams refused: malformed.
    pub rejected_malformed: u64,
    /// Datagrams refused: the source is not a configured peer.
    pub rejected_unknown_peer: u64,
    /// Datagrams refused: authentic, but of an epoch not confirmed by a hello (a restarted
    /// peer before its session opened, or a dead process's datagram replayed).
    #[serde(default)]
    pub rejected_epoch: u64,
    /// Sessions opened (a peer's epoch confirmed by a challenge and response).
    #[serde(default)]
    pub sessions: u64,
    /// Records naming a backend this instance does not have.
    pub unknown_backend: u64,
    /// Remote learns refused for lack of room.
    pub remote_full: u64,
    /// Remote learns for a token with a local owner (stored, the local owner routes).
    pub remote_shadowed: u64,
    /// Remote learns that made a token's remote owners ambiguous.
    pub remote_collisions: u64,
    /// Local changes lost because the export journal was full.
    pub journal_dropped: u64,
    /// Tokens with remote owners now.
    pub remote_tokens: u64,
    /// Propagation delays measured (learn on the sender -> applied here).
    pub delay_count: u64,
    /// Their sum, µs.
    pub delay_sum_us: u64,
    /// The largest, µs.
    pub delay_max_us: u64,
    /// Cumulative counts per bound of [`DELAY_BUCKETS_US`], then the total (`+Inf`).
    pub delay_buckets: [u64; 10],
}

/// The control plane's own counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ControlStatsView {
    /// Configuration version serving.
    pub version: u64,
    /// Successful reloads.
    pub reloads_ok: u64,
    /// Failed reloads (the old configuration kept serving).
    pub reloads_error: u64,
    /// Pool changes applied (API changes and reloads).
    pub pool_changes: u64,
    /// Workers the watchdog found stalled (each stall once).
    #[serde(default)]
    pub watchdog_stalls: u64,
    /// Drains with a deadline that ended early (a migrating backend whose connections had all
    /// left the gateway), every backend's.
    #[serde(default)]
    pub drains_completed_early: u64,
    /// Drains with a deadline that ended at the deadline.
    #[serde(default)]
    pub drains_completed_at_deadline: u64,
}

/// `GET /stats`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StatsView {
    /// Per worker.
    pub workers: Vec<WorkerStatsView>,
    /// Per VIP.
    pub vips: Vec<TrafficView>,
    /// Per backend.
    pub backends: Vec<TrafficView>,
    /// Token table.
    pub tokens: TokenStatsView,
    /// Control plane.
    pub control: ControlStatsView,
    /// Per dataplane port, in port order.
    #[serde(default)]
    pub ports: Vec<PortStatsView>,
    /// Token sharing, when `[cluster]` is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Box<ClusterStatsView>>,
}

/// A dataplane port's counters in `GET /stats`: what the workers did with it (summed over the
/// workers), and the device's own counters.
///
/// Every frame staged for transmission is one of `tx_forwarded` (client or server traffic the
/// gateway passes on: NAT in both directions, DSR tunnels), `tx_replies` (answers the pipeline
/// generates: ARP/NDP, echo replies, ICMP errors) or `tx_control` (frames of the control thread:
/// ARP/NDP requests, health probes); each then ends in `tx_packets` (the device took it) or
/// `tx_unsent` (it did not; freed). For a client port that only DSR VIPs use, `tx_forwarded`
/// stays 0: the servers answer the clients directly.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PortStatsView {
    /// Name (`[[ports]].name`).
    pub name: String,
    /// Frames the workers received from it.
    pub rx_packets: u64,
    /// Frames the device accepted for transmission.
    pub tx_packets: u64,
    /// Frames the device did not accept (freed).
    pub tx_unsent: u64,
    /// Staged: traffic passed on.
    pub tx_forwarded: u64,
    /// Staged: the pipeline's own replies.
    pub tx_replies: u64,
    /// Staged: the control thread's frames.
    pub tx_control: u64,
    /// The device's counters (`rte_eth_stats`), when it reports them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceStatsView>,
}

/// A device's own counters (`rte_eth_stats_get`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DeviceStatsView {
    /// Frames received.
    pub rx_packets: u64,
    /// Frames sent.
    pub tx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Frames the device dropped because the RX queues were full (polled too slowly).
    pub rx_missed: u64,
    /// Erroneous frames received.
    pub rx_errors: u64,
    /// Failed transmissions.
    pub tx_errors: u64,
    /// RX mbuf allocation failures (the mempool ran dry).
    pub rx_nombuf: u64,
}

/// The outcome of the last reload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReport {
    /// Whether it was applied.
    pub ok: bool,
    /// The file the reload read (the one named by `POST /reload`, or the configured file).
    pub path: String,
    /// When the reload happened, in seconds since the Unix epoch.
    pub unix_time_s: u64,
    /// The version serving after it (the new one, or the last good one on error).
    pub version: u64,
    /// Why it was refused (every problem, one per line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The warning of an applied reload (`[eal]` changed: it takes effect at the next start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// `GET /status`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StatusView {
    /// Version serving.
    pub version: u64,
    /// The last version that validated and was applied (equal to `version` in practice: a
    /// refused change never replaces it).
    pub last_good_version: u64,
    /// Seconds since the daemon started.
    pub uptime_s: u64,
    /// Number of forwarding workers.
    pub workers: u64,
    /// The configuration file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_path: Option<String>,
    /// The last reload, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reload: Option<ReloadReport>,
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// HTTP status.
    pub status: u16,
    /// Why.
    pub reason: String,
    /// The field at fault (`422`), e.g. `weight` or `vips[1].backends[0]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ErrorBody {
    /// An error with `status` and `reason`.
    pub fn new(status: u16, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
            field: None,
        }
    }

    /// `400 Bad Request`.
    pub fn bad_request(reason: impl Into<String>) -> Self {
        Self::new(400, reason)
    }

    /// `422 Unprocessable Entity` naming `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            status: 422,
            reason: reason.into(),
            field: Some(field.into()),
        }
    }
}

impl From<ErrorBody> for Response {
    fn from(e: ErrorBody) -> Self {
        Self::Error {
            status: e.status,
            reason: e.reason,
            field: e.field,
        }
    }
}

/// The control thread's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "body", rename_all = "snake_case")]
pub enum Response {
    /// The VIPs with their backends.
    Vips(Vec<VipView>),
    /// One VIP.
    Vip(VipView),
    /// The change was applied; the configuration is now at `version`.
    Applied {
        /// New version.
        version: u64,
        /// Something the operator should know about the change (a reload that changed
        /// `[eal]`, which takes effect at the next start).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        warning: Option<String>,
    },
    /// Counters.
    Stats(StatsView),
    /// Prometheus text (see [`super::metrics::render`]).
    Metrics(String),
    /// Daemon status.
    Status(StatusView),
    /// The instance's announcement state.
    Instance(super::instance::InstanceView),
    /// Refused: nothing changed.
    Error {
        /// HTTP status (4xx, or 503).
        status: u16,
        /// Why.
        reason: String,
        /// The field at fault, for `422`.
        field: Option<String>,
    },
}

impl Response {
    /// An error answer.
    pub fn error(status: u16, reason: impl Into<String>) -> Self {
        Self::Error {
            status,
            reason: reason.into(),
            field: None,
        }
    }

    /// `400 Bad Request`.
    pub fn bad_request(reason: impl Into<String>) -> Self {
        Self::error(400, reason)
    }

    /// `404 Not Found` for a VIP or backend: `what` is `"vip"` or `"backend"`.
    pub fn not_found(what: &str, name: &str) -> Self {
        Self::error(404, format!("unknown {what} {name:?}"))
    }

    /// `409 Conflict`: the request expected version `expected`, the configuration is at
    /// `current`.
    pub fn version_conflict(expected: u64, current: u64) -> Self {
        Self::error(409, version_conflict_reason(expected, current))
    }

    /// `422 Unprocessable Entity`: validation refused `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Error {
            status: 422,
            reason: reason.into(),
            field: Some(field.into()),
        }
    }

    /// `503 Service Unavailable`.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self::error(503, reason)
    }

    /// The HTTP status of the answer (`200` for every success).
    pub fn status(&self) -> u16 {
        match self {
            Self::Error { status, .. } => *status,
            _ => 200,
        }
    }

    /// Whether it is an error.
    pub fn is_error(&self) -> bool {
        matches!(self, Self::Error { .. })
    }

    /// The error body, for an error.
    pub fn error_body(&self) -> Option<ErrorBody> {
        match self {
            Self::Error {
                status,
                reason,
                field,
            } => Some(ErrorBody {
                status: *status,
                reason: reason.clone(),
                field: field.clone(),
            }),
            _ => None,
        }
    }
}

/// The body of a successful change (`{"version": N}`, and a `warning` when there is one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedBody {
    /// The version now serving.
    pub version: u64,
    /// Something the operator should know (a reload that changed `[eal]`: it takes effect at
    /// the next start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("srv-1.a_b").is_ok());
        for bad in ["", "a b", "a/b", "é", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn request_json_round_trip() {
        let r = Request::SetWeight {
            name: "srv1".into(),
            weight: 3,
            if_version: Some(4),
        };
        let j = serde_json::to_string(&r).unwrap();
        assert_eq!(
            j,
            r#"{"op":"set_weight","name":"srv1","weight":3,"if_version":4}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&j).unwrap(), r);
        assert!(serde_json::from_str::<Request>(r#"{"op":"get_vip","name":"a","x":1}"#).is_err());
        assert_eq!(r.if_version(), Some(4));
        assert!(r.is_change() && !Request::Stats.is_change());
        assert_eq!(r.op(), "set_weight");
    }

    #[test]
    fn version_check() {
        assert!(check_version(None, 7).is_none());
        assert!(check_version(Some(7), 7).is_none());
        assert_eq!(check_version(Some(6), 7).unwrap().status(), 409);
    }

    #[test]
    fn bodies_default_and_refuse_unknown() {
        let b: BackendBody = serde_json::from_str(r#"{"name":"a","port":80}"#).unwrap();
        assert_eq!(b.weight, 1);
        assert!(
            serde_json::from_str::<BackendBody>(r#"{"name":"a","port":80,"wieght":2}"#).is_err()
        );
        let v: VipBody =
            serde_json::from_str(r#"{"name":"v","address":"::1","port":443}"#).unwrap();
        assert_eq!((v.protocol, v.mode), (Protocol::Tcp, Mode::Nat));
        assert!(serde_json::from_str::<VipBody>(
            r#"{"name":"v","address":"::1","port":443,"protocol":"udp"}"#
        )
        .is_err());
    }
}
