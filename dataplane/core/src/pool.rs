//! The pool snapshot: VIPs, backends, ports and one Maglev table per VIP, built and validated by
//! the control plane and published immutably to the workers (RCU style: a worker picks up a new
//! `Arc<PoolSnapshot>` between two bursts and never sees a half-applied change).
//!
//! ## Identities are stable
//!
//! [`BackendId`] and [`VipId`] index the snapshot's arrays directly (`O(1)`, no hashing on the
//! packet path) and are assigned by the control plane, which never reuses an id while a flow or
//! token entry may still name it. A removed backend leaves a hole (`None`) in a later snapshot;
//! flows pinned to it then meet the documented removal policy instead of another server.
//!
//! ## Backend states
//!
//! | state | new connections (Maglev) | established flows | joins of its connections |
//! |---|---|---|---|
//! | `Active` | yes | yes | yes |
//! | `Draining` | no | yes | yes |
//! | `Down` (failed health) | no | yes (until they end) | refused |
//! | removed (`None`) | no | dropped, counted | refused |
//!
//! ## NAT return path
//!
//! Backends answer the client from their own address. The snapshot maps `(backend address, port)`
//! back to the VIP, so the return path needs no per-flow lookup to find the address to restore.
//! In NAT mode a backend address and port may therefore serve only one VIP per address family
//! (checked by [`PoolSnapshot::build`]).

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hashbrown::HashMap;

use crate::flow::addr_bytes;
use crate::tables::maglev::{MaglevBackend, MaglevError, MaglevTable, DEFAULT_SIZE};

/// A backend's identity, stable for its whole life in the pool: the control plane never reuses
/// an id while a flow or token entry may still name it. Also the index of the backend in
/// [`PoolSnapshot::backends`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
#[derive(bytemuck::Pod, bytemuck::Zeroable)] // plain old data: flow entries hold it
pub struct BackendId(pub u16);

/// A VIP's identity, stable like [`BackendId`]; the index in [`PoolSnapshot::vips`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
#[derive(bytemuck::Pod, bytemuck::Zeroable)] // plain old data: flow entries hold it
pub struct VipId(pub u16);

/// A dataplane port (DPDK port id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PortId(pub u8);

/// A 48-bit Ethernet address, as the core stores it.
pub type Mac = [u8; 6];

/// How a VIP's traffic reaches its backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardingMode {
    /// Destination NAT to the backend; the gateway also carries the return path.
    #[default]
    Nat,
    /// Direct server return: the client's packet, unchanged but for its TTL, is encapsulated to
    /// the backend, which holds the VIP and answers the client directly.
    Dsr(Dsr),
}

impl ForwardingMode {
    /// The DSR settings, for a DSR VIP.
    #[inline]
    pub fn dsr(&self) -> Option<&Dsr> {
        match self {
            Self::Nat => None,
            Self::Dsr(d) => Some(d),
        }
    }
}

/// Settings of a DSR VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dsr {
    /// The tunnel.
    pub encap: Encap,
    /// The outer source address.
    pub outer_source: OuterSource,
}

/// Encapsulation of a DSR VIP's packets. The outer family is the VIP's (IPv4 in IPv4, IPv6 in
/// IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encap {
    /// IP in IP (RFC 2003; RFC 2473 for IPv6 in IPv6): a bare outer IP header, protocol 4 / 41.
    Ipip,
    /// GUE variant 0 over UDP to `port`; the UDP source port is hashed from the flow (so the
    /// servers' NIC RSS spreads flows), the UDP checksum is 0 over IPv4 and computed over IPv6.
    Gue {
        /// UDP destination port on the backends.
        port: u16,
    },
}

impl Encap {
    /// Bytes the outer headers add for a VIP of the given family.
    #[inline]
    pub fn overhead(&self, v6: bool) -> usize {
        let ip = if v6 { 40 } else { 20 };
        match self {
            Self::Ipip => ip,
            Self::Gue { .. } => ip + 8 + 4,
        }
    }
}

/// The outer source address of a DSR VIP's tunnel packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OuterSource {
    /// The gateway's first address of the VIP's family on the backend's egress port.
    Gateway,
    /// An address inside this prefix, its host bits taken from the flow hash: every packet of a
    /// flow has the same source, different flows spread over the prefix (servers' RSS).
    Hashed {
        /// The prefix (host bits ignored); IPv4 or IPv6, the VIP's family.
        prefix: IpAddr,
        /// Prefix length.
        len: u8,
    },
}

/// What the gateway itself announces to an MPTCP client once it has learned the connection's keys
/// (an ADD_ADDR with the HMAC of RFC 8684 §3.4.1, sent as a pure ACK from the VIP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Announce {
    /// Nothing: joins are routed by token, or the servers announce their own join ports.
    #[default]
    Off,
    /// The VIP with the join port of the connection's backend: the client's joins reach that
    /// backend statelessly, on any gateway instance (NAT VIPs; in DSR the servers announce).
    JoinPorts,
    /// The backend's own address: the client joins the server directly and the gateway is off
    /// that subflow's path (it keeps only the first subflow).
    Backend,
}

/// The address id of the ADD_ADDR the gateway sends (one announcement per connection). Linux
/// servers number their own announcements from 1; this one stays clear of them.
pub const ANNOUNCE_ADDRESS_ID: u8 = 200;

/// The address id of the ADD_ADDR that announces a draining backend's direct address
/// (migration); distinct from [`ANNOUNCE_ADDRESS_ID`], which the connection may also have had.
pub const MIGRATE_ADDRESS_ID: u8 = 201;

/// Lifecycle state of a backend (see the module table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendState {
    /// Takes new connections.
    #[default]
    Active,
    /// Keeps its flows and the joins of its connections; no new connections.
    Draining,
    /// Failed health checks: no new connections or joins.
    Down,
}

/// A backend server endpoint. A server may have an IPv4 and an IPv6 address: an MPTCP connection
/// opened over one family can add subflows over the other, and the token table routes them to
/// the same server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Stable id (= index in the snapshot).
    pub id: BackendId,
    /// Operator's name for it.
    pub name: String,
    /// IPv4 address, if reachable over IPv4.
    pub ipv4: Option<Ipv4Addr>,
    /// IPv6 address, if reachable over IPv6.
    pub ipv6: Option<Ipv6Addr>,
    /// Service port on the backend.
    pub port: u16,
    /// Maglev weight (0: no new connections, like draining).
    pub weight: u32,
    /// Lifecycle state.
    pub state: BackendState,
    /// Port towards the backend.
    pub egress: PortId,
    /// Next-hop MAC towards the backend, once resolved.
    pub mac: Option<Mac>,
    /// An address clients can reach the server on directly (its public address), announced to
    /// its MPTCP connections when it is removed or drained with a deadline (migration).
    pub direct: Option<IpAddr>,
}

impl Backend {
    /// The backend's address in the family of `v6`.
    #[inline]
    pub fn addr(&self, v6: bool) -> Option<IpAddr> {
        if v6 {
            self.ipv6.map(IpAddr::V6)
        } else {
            self.ipv4.map(IpAddr::V4)
        }
    }

    /// Whether the backend's MPTCP connections are being moved to its direct address: it drains
    /// and has one (see `pipeline/flow/migration.rs`).
    #[inline]
    pub fn migrates(&self) -> bool {
        self.state == BackendState::Draining && self.direct.is_some()
    }

    /// Whether the backend may receive joins of its existing connections.
    #[inline]
    pub fn accepts_joins(&self) -> bool {
        matches!(self.state, BackendState::Active | BackendState::Draining)
    }
}

/// A virtual service: address, port and protocol, with its backends.
#[derive(Debug, Clone)]
pub struct Vip {
    /// Stable id (= index in the snapshot).
    pub id: VipId,
    /// Operator's name for it.
    pub name: String,
    /// The VIP address.
    pub addr: IpAddr,
    /// The VIP port.
    pub port: u16,
    /// IP protocol (6 = TCP).
    pub proto: u8,
    /// Forwarding mode.
    pub mode: ForwardingMode,
    /// Member backends.
    pub backends: Vec<BackendId>,
    /// Port where the clients' packets arrive (and where stateless returns leave).
    pub client_port: PortId,
    /// New-connection table over the members that take new connections.
    pub maglev: MaglevTable,
    /// Stateless join ports: a subflow to `addr:port_i` goes to backend `i`, sorted by backend.
    pub join_ports: Vec<(BackendId, u16)>,
    /// What the gateway announces to MPTCP clients of this VIP.
    pub announce: Announce,
    /// Whether the gateway sets the C flag ("do not join the initial address", RFC 8684 §3.1)
    /// in the MP_CAPABLE SYN/ACK it forwards (NAT; resolved from [`VipSpec::deny_join_initial`]).
    pub deny_join_initial: bool,
    /// `backends`, sorted: membership tests for joins.
    members_sorted: Vec<BackendId>,
}

impl Vip {
    /// Whether `id` is a member (in any state).
    #[inline]
    pub fn has_member(&self, id: BackendId) -> bool {
        self.members_sorted.binary_search(&id).is_ok()
    }

    /// The join port of backend `id`, if it has one on this VIP.
    #[inline]
    pub fn join_port(&self, id: BackendId) -> Option<u16> {
        self.join_ports
            .binary_search_by_key(&id, |&(b, _)| b)
            .ok()
            .map(|i| self.join_ports[i].1)
    }
}

/// A dataplane port's own configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortConfig {
    /// Port id.
    pub id: PortId,
    /// The port's MAC.
    pub mac: Mac,
    /// The gateway's own IPv4 addresses on this port (answered to ARP; source of ICMP errors).
    pub ipv4: Vec<Ipv4Addr>,
    /// The gateway's own IPv6 addresses on this port.
    pub ipv6: Vec<Ipv6Addr>,
    /// 802.1Q VLAN of this port; `None` for untagged (a priority tag, VID 0, counts as untagged).
    pub vlan: Option<u16>,
    /// Next hop for traffic without a known neighbour (clients behind a router).
    pub gateway_mac: Option<Mac>,
    /// The largest IP packet the port sends (0: 1500). DSR encapsulation checks against it.
    pub mtu: u16,
}

impl PortConfig {
    /// The port's MTU (1500 when not set).
    #[inline]
    pub fn mtu(&self) -> u16 {
        if self.mtu == 0 {
            1500
        } else {
            self.mtu
        }
    }
}

/// Input of [`PoolSnapshot::build`]: plain data, as the control plane assembles it.
#[derive(Debug, Clone, Default)]
pub struct PoolSpec {
    /// Version number (increases with every change).
    pub version: u64,
    /// Ports.
    pub ports: Vec<PortConfig>,
    /// Backends; `backends[i].id` must be `BackendId(i)`, holes are `None`.
    pub backends: Vec<Option<Backend>>,
    /// VIPs (without Maglev tables); `vips[i].id` must be `VipId(i)`.
    pub vips: Vec<Option<VipSpec>>,
    /// Maglev table size (prime); 0 means [`DEFAULT_SIZE`].
    pub maglev_size: u32,
}

/// A VIP as the control plane describes it.
#[derive(Debug, Clone)]
pub struct VipSpec {
    /// Stable id.
    pub id: VipId,
    /// Name.
    pub name: String,
    /// Address.
    pub addr: IpAddr,
    /// Port.
    pub port: u16,
    /// Protocol (6 = TCP; the only one the pipeline balances today).
    pub proto: u8,
    /// Forwarding mode.
    pub mode: ForwardingMode,
    /// Members.
    pub backends: Vec<BackendId>,
    /// Client-side port.
    pub client_port: PortId,
    /// Stateless join ports, `(member, port)`: at most one per member, none equal to `port` or
    /// to another endpoint of the same address.
    pub join_ports: Vec<(BackendId, u16)>,
    /// What the gateway announces to MPTCP clients.
    pub announce: Announce,
    /// The C flag in the MP_CAPABLE SYN/ACK (NAT only: in DSR the SYN/ACK does not pass). `None`:
    /// on where the gateway's announcement depends on it (`announce = "join-ports"` or
    /// `"backend"`, or a member has a direct address to migrate to), off otherwise (token mode:
    /// the clients' joins go to the VIP itself).
    pub deny_join_initial: Option<bool>,
}

/// Why a pool could not be built. Each names the offending object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolError {
    /// An id does not match its index.
    IdMismatch(String),
    /// A VIP names a backend that does not exist.
    UnknownBackend {
        /// VIP name.
        vip: String,
        /// Missing id.
        backend: BackendId,
    },
    /// A VIP's member has no address of the VIP's family.
    FamilyMismatch {
        /// VIP name.
        vip: String,
        /// Backend name.
        backend: String,
    },
    /// Two VIPs with the same address, port and protocol.
    DuplicateVip(String),
    /// In NAT mode, one backend address and port serving two VIPs (the return path would be
    /// ambiguous).
    SharedBackendEndpoint {
        /// Backend name.
        backend: String,
        /// The two VIPs.
        vips: (String, String),
    },
    /// A VIP or backend port of 0, or a protocol other than TCP.
    BadPort(String),
    /// A DSR VIP whose member listens on another port (DSR cannot translate ports), whose
    /// hashed outer source is not of the VIP's family, or whose member's egress port has no
    /// address of the VIP's family for the outer source.
    Dsr {
        /// VIP name.
        vip: String,
        /// What is wrong.
        reason: String,
    },
    /// A join port that is 0, taken, on a non-member, or an announce setting the VIP cannot
    /// honour.
    JoinPorts {
        /// VIP name.
        vip: String,
        /// What is wrong.
        reason: String,
    },
    /// A port id used by a backend or VIP that is not configured.
    UnknownPort(String),
    /// The Maglev table could not be built.
    Maglev(String, MaglevError),
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::IdMismatch(s) => write!(f, "id does not match its position: {s}"),
            Self::UnknownBackend { vip, backend } => write!(f, "vip {vip}: unknown backend id {}", backend.0),
            Self::FamilyMismatch { vip, backend } => {
                write!(f, "vip {vip}: backend {backend} has no address of the vip's family")
            }
            Self::DuplicateVip(s) => write!(f, "duplicate vip address/port/protocol: {s}"),
            Self::SharedBackendEndpoint { backend, vips } => write!(
                f,
                "backend {backend}: the same address and port serve vips {} and {} (ambiguous NAT return path)",
                vips.0, vips.1
            ),
            Self::BadPort(s) => write!(f, "bad port or protocol: {s}"),
            Self::Dsr { vip, reason } => write!(f, "vip {vip}: dsr: {reason}"),
            Self::JoinPorts { vip, reason } => write!(f, "vip {vip}: join ports: {reason}"),
            Self::UnknownPort(s) => write!(f, "unknown dataplane port: {s}"),
            Self::Maglev(s, e) => write!(f, "vip {s}: maglev: {e:?}"),
        }
    }
}

impl std::error::Error for PoolError {}

/// Validates a VIP's join ports and announce setting; returns the ports sorted by backend.
fn check_join_ports(
    v: &VipSpec,
    members_sorted: &[BackendId],
    backends: &[Option<Backend>],
) -> Result<Vec<(BackendId, u16)>, PoolError> {
    let err = |reason: String| PoolError::JoinPorts {
        vip: v.name.clone(),
        reason,
    };
    let name = |id: BackendId| {
        backends
            .get(id.0 as usize)
            .and_then(Option::as_ref)
            .map_or_else(|| format!("#{}", id.0), |b| b.name.clone())
    };
    let mut ports = v.join_ports.clone();
    ports.sort_unstable();
    for (i, &(bid, port)) in ports.iter().enumerate() {
        if members_sorted.binary_search(&bid).is_err() {
            return Err(err(format!("backend {} is not a member", name(bid))));
        }
        if port == 0 || port == v.port {
            return Err(err(format!(
                "backend {}'s join port {port} must be neither 0 nor the vip's port",
                name(bid)
            )));
        }
        if i > 0 && ports[i - 1].0 == bid {
            return Err(err(format!("backend {} has two join ports", name(bid))));
        }
        if ports[..i].iter().any(|&(_, p)| p == port) {
            return Err(err(format!("port {port} is given to two backends")));
        }
    }
    if v.deny_join_initial == Some(true) && v.mode.dsr().is_some() {
        return Err(err(
            "deny_join_initial needs a NAT vip: in DSR the SYN/ACK goes from the server to the client \
             without the gateway, so the servers set the C flag themselves \
             (sysctl net.mptcp.allow_join_initial_addr_port=0)"
                .into(),
        ));
    }
    match v.announce {
        Announce::Off | Announce::Backend => {}
        Announce::JoinPorts => {
            if v.mode.dsr().is_some() {
                return Err(err(
                    "announce = \"join-ports\" needs a NAT vip: in DSR the server receives the join on the \
                     join port itself, so it must listen there and announce it (ip mptcp endpoint ... signal port P)"
                        .into(),
                ));
            }
            if let Some(&b) = members_sorted
                .iter()
                .find(|b| ports.binary_search_by_key(*b, |&(x, _)| x).is_err())
            {
                return Err(err(format!(
                    "announce = \"join-ports\" but backend {} has no join port",
                    name(b)
                )));
            }
        }
    }
    Ok(ports)
}

/// Key of the VIP and reverse maps: the 16-byte address as two words, port and protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct EndpointKey {
    hi: u64,
    lo: u64,
    port_proto: u32,
}

impl EndpointKey {
    #[inline]
    fn new(addr: &[u8; 16], port: u16, proto: u8) -> Self {
        let (h, l) = addr.split_at(8);
        Self {
            hi: u64::from_ne_bytes(h.try_into().unwrap_or_default()),
            lo: u64::from_ne_bytes(l.try_into().unwrap_or_default()),
            port_proto: (port as u32) << 8 | proto as u32,
        }
    }
}

/// A small fixed hasher for the VIP/backend maps (deterministic; the maps are tiny and hot).
#[derive(Debug, Default, Clone, Copy)]
pub struct EndpointHasher(u64);

impl core::hash::Hasher for EndpointHasher {
    #[inline]
    fn finish(&self) -> u64 {
        crate::flow::fmix(self.0)
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            self.0 = (self.0 ^ u64::from_le_bytes(w))
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .rotate_left(29);
        }
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0 ^ i)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29);
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.0 = (self.0 ^ i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type EndpointMap<V> = HashMap<EndpointKey, V, core::hash::BuildHasherDefault<EndpointHasher>>;

/// What the packet path needs of a backend, precomputed in one small record: key-form
/// addresses, port, next hop and the egress port's MAC and VLAN.
#[derive(Debug, Clone, Copy, Default)]
pub struct BackendFwd {
    /// The backend exists in this snapshot.
    pub present: bool,
    /// IPv4 address, key form (IPv4-mapped), when it has one.
    pub addr4: Option<[u8; 16]>,
    /// IPv6 address, when it has one.
    pub addr6: Option<[u8; 16]>,
    /// Service port.
    pub port: u16,
    /// Next-hop MAC, once resolved.
    pub mac: Option<Mac>,
    /// Egress port.
    pub egress: PortId,
    /// The egress port's own MAC.
    pub egress_mac: Mac,
    /// The egress port's VLAN.
    pub egress_vlan: Option<u16>,
    /// The egress port's MTU.
    pub egress_mtu: u16,
    /// The gateway's first IPv4 address on the egress port (key form): the DSR outer source.
    pub egress_addr4: Option<[u8; 16]>,
    /// The gateway's first IPv6 address on the egress port.
    pub egress_addr6: Option<[u8; 16]>,
}

impl BackendFwd {
    /// The address of the family of `v6`.
    #[inline]
    pub fn addr(&self, v6: bool) -> Option<&[u8; 16]> {
        if v6 {
            self.addr6.as_ref()
        } else {
            self.addr4.as_ref()
        }
    }
}

/// A backend as the established IPv4 fast path rewrites towards it, precomputed when the
/// snapshot is built: present, with an IPv4 address and a resolved next hop, behind an untagged
/// egress port. Any other backend takes the general path.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fast4 {
    /// The backend's IPv4 address.
    pub addr: [u8; 4],
    /// Its service port.
    pub port: u16,
    /// The sum of the address's two 16-bit words as they lie in memory (one's-complement
    /// arithmetic works in either byte order), unfolded: the new half of the RFC 1624 delta,
    /// the old half being the VIP's words the packet carries.
    pub addr_sum: u32,
    /// The port as it lies in memory (network order read natively).
    pub port_ne: u16,
    /// Destination then source MAC, as they go into the frame.
    pub macs: [u8; 12],
    /// Egress port.
    pub egress: PortId,
}

impl Fast4 {
    fn of(f: &BackendFwd) -> Option<Self> {
        let a = f.addr4?;
        let mac = f.mac?;
        if !f.present || f.egress_vlan.is_some() {
            return None;
        }
        let addr = [a[12], a[13], a[14], a[15]];
        let mut macs = [0u8; 12];
        macs[..6].copy_from_slice(&mac);
        macs[6..].copy_from_slice(&f.egress_mac);
        Some(Self {
            addr,
            port: f.port,
            addr_sum: u32::from(u16::from_ne_bytes([addr[0], addr[1]]))
                + u32::from(u16::from_ne_bytes([addr[2], addr[3]])),
            port_ne: u16::from_ne_bytes(f.port.to_be_bytes()),
            macs,
            egress: f.egress,
        })
    }
}

/// What the admission of an MP_JOIN SYN needs of the backend its token names, precomputed when
/// the snapshot is built, so that a join pays no endpoint-map lookup: the backend takes joins
/// (active or draining), and per family (index 0 IPv4, 1 IPv6) whether it has an address and the
/// VIP its NAT return path maps back to (the reverse map's answer for its address and port).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JoinReach {
    /// The backend exists and accepts joins ([`Backend::accepts_joins`]).
    pub accepts: bool,
    /// The backend has an address in the family (IPv4, IPv6).
    pub has_addr: [bool; 2],
    /// [`PoolSnapshot::vip_of_backend`] of the backend's address in the family and its port.
    pub nat_vip: [Option<VipId>; 2],
}

/// An IPv4 endpoint packed in one word: the address then the port (network order), as they
/// lie in a packet's destination fields, read little-endian (so a parser gets it from the
/// frame's words without swapping a byte). Never `u64::MAX`.
#[inline]
pub fn vip4_key(addr: [u8; 4], port: u16) -> u64 {
    let [p0, p1] = port.to_be_bytes();
    u64::from_le_bytes([addr[0], addr[1], addr[2], addr[3], p0, p1, 0, 0])
}

/// The immutable snapshot the workers forward with.
#[derive(Debug)]
pub struct PoolSnapshot {
    /// Version (from the spec).
    pub version: u64,
    /// Ports, indexed by [`PortId`].
    pub ports: Vec<PortConfig>,
    /// Backends, indexed by [`BackendId`].
    pub backends: Vec<Option<Backend>>,
    /// VIPs, indexed by [`VipId`].
    pub vips: Vec<Option<Vip>>,
    vip_map: EndpointMap<VipId>,
    reverse_map: EndpointMap<(VipId, BackendId)>,
    join_map: EndpointMap<(VipId, BackendId)>,
    fwd: Vec<BackendFwd>,
    fast4: Vec<Option<Fast4>>,
    join_reach: Vec<JoinReach>,
    vip4: Vec<u64>,
    vip_addrs: Vec<[u8; 16]>,
    /// The IPv4 addresses of `vip_addrs`, as words in memory order.
    vip_addrs4: Vec<u32>,
    vip_keys: Vec<([u8; 16], u16)>,
    own_addrs: Vec<[u8; 16]>,
}

impl PoolSnapshot {
    /// An empty pool (no VIPs): everything not addressed to the gateway itself is dropped.
    pub fn empty(ports: Vec<PortConfig>) -> Self {
        Self {
            version: 0,
            ports,
            backends: Vec::new(),
            vips: Vec::new(),
            vip_map: EndpointMap::default(),
            reverse_map: EndpointMap::default(),
            join_map: EndpointMap::default(),
            fwd: Vec::new(),
            fast4: Vec::new(),
            join_reach: Vec::new(),
            vip4: Vec::new(),
            vip_addrs: Vec::new(),
            vip_addrs4: Vec::new(),
            vip_keys: Vec::new(),
            own_addrs: Vec::new(),
        }
    }

    /// Validates `spec` and builds the snapshot with its Maglev tables. Nothing is published on
    /// error; the error names the field at fault.
    pub fn build(spec: PoolSpec) -> Result<Self, PoolError> {
        let size = if spec.maglev_size == 0 {
            DEFAULT_SIZE
        } else {
            spec.maglev_size
        };
        for (i, p) in spec.ports.iter().enumerate() {
            if p.id.0 as usize != i {
                return Err(PoolError::IdMismatch(format!("port {}", p.id.0)));
            }
        }
        for (i, b) in spec.backends.iter().enumerate() {
            if let Some(b) = b {
                if b.id.0 as usize != i {
                    return Err(PoolError::IdMismatch(format!("backend {}", b.name)));
                }
                if b.port == 0 {
                    return Err(PoolError::BadPort(format!("backend {}", b.name)));
                }
                if b.egress.0 as usize >= spec.ports.len() {
                    return Err(PoolError::UnknownPort(format!("backend {}", b.name)));
                }
            }
        }
        let mut vip_map = EndpointMap::default();
        let mut reverse_map: EndpointMap<(VipId, BackendId)> = EndpointMap::default();
        let mut join_map: EndpointMap<(VipId, BackendId)> = EndpointMap::default();
        let mut vips = Vec::with_capacity(spec.vips.len());
        for (i, v) in spec.vips.into_iter().enumerate() {
            let Some(v) = v else {
                vips.push(None);
                continue;
            };
            if v.id.0 as usize != i {
                return Err(PoolError::IdMismatch(format!("vip {}", v.name)));
            }
            if v.port == 0 || v.proto != 6 {
                return Err(PoolError::BadPort(format!("vip {}", v.name)));
            }
            if v.client_port.0 as usize >= spec.ports.len() {
                return Err(PoolError::UnknownPort(format!("vip {}", v.name)));
            }
            let key = EndpointKey::new(&addr_bytes(v.addr), v.port, v.proto);
            if vip_map.insert(key, v.id).is_some() {
                return Err(PoolError::DuplicateVip(v.name));
            }
            let v6 = v.addr.is_ipv6();
            let dsr = v.mode.dsr().copied();
            if let Some(OuterSource::Hashed { prefix, len }) = dsr.map(|d| d.outer_source) {
                if prefix.is_ipv6() != v6 || len > if v6 { 128 } else { 32 } {
                    return Err(PoolError::Dsr {
                        vip: v.name.clone(),
                        reason: format!("outer source prefix {prefix}/{len} is not a prefix of the vip's family"),
                    });
                }
            }
            let mut members = Vec::with_capacity(v.backends.len());
            for &bid in &v.backends {
                let b = spec
                    .backends
                    .get(bid.0 as usize)
                    .and_then(Option::as_ref)
                    .ok_or_else(|| PoolError::UnknownBackend {
                        vip: v.name.clone(),
                        backend: bid,
                    })?;
                let Some(addr) = b.addr(v6) else {
                    return Err(PoolError::FamilyMismatch {
                        vip: v.name.clone(),
                        backend: b.name.clone(),
                    });
                };
                if let Some(d) = dsr {
                    if b.port != v.port {
                        return Err(PoolError::Dsr {
                            vip: v.name.clone(),
                            reason: format!(
                                "backend {} listens on port {}, the vip on {}: DSR cannot translate ports",
                                b.name, b.port, v.port
                            ),
                        });
                    }
                    let egress = &spec.ports[b.egress.0 as usize];
                    let has_src = if v6 {
                        !egress.ipv6.is_empty()
                    } else {
                        !egress.ipv4.is_empty()
                    };
                    if d.outer_source == OuterSource::Gateway && !has_src {
                        return Err(PoolError::Dsr {
                            vip: v.name.clone(),
                            reason: format!(
                                "backend {}'s egress port has no IPv{} address for the outer source",
                                b.name,
                                if v6 { 6 } else { 4 }
                            ),
                        });
                    }
                }
                let rkey = EndpointKey::new(&addr_bytes(addr), b.port, v.proto);
                // DSR backends answer the clients directly: no return path to map.
                let other = if dsr.is_some() {
                    None
                } else {
                    reverse_map.insert(rkey, (v.id, bid)).map(|(o, _)| o)
                };
                if let Some(other) = other {
                    if other != v.id {
                        let other_name = vips
                            .get(other.0 as usize)
                            .and_then(|o: &Option<Vip>| o.as_ref())
                            .map_or_else(|| format!("#{}", other.0), |o| o.name.clone());
                        return Err(PoolError::SharedBackendEndpoint {
                            backend: b.name.clone(),
                            vips: (other_name, v.name.clone()),
                        });
                    }
                }
                if b.state == BackendState::Active && b.weight > 0 {
                    let mut identity = [0u8; 18];
                    identity[..16].copy_from_slice(&addr_bytes(addr));
                    identity[16..].copy_from_slice(&b.port.to_be_bytes());
                    members.push(MaglevBackend {
                        id: bid,
                        identity,
                        weight: b.weight,
                    });
                }
            }
            let maglev = MaglevTable::build(&members, size)
                .map_err(|e| PoolError::Maglev(v.name.clone(), e))?;
            let mut members_sorted = v.backends.clone();
            members_sorted.sort_unstable();
            let join_ports = check_join_ports(&v, &members_sorted, &spec.backends)?;
            for &(bid, port) in &join_ports {
                let jkey = EndpointKey::new(&addr_bytes(v.addr), port, v.proto);
                if join_map.insert(jkey, (v.id, bid)).is_some() {
                    return Err(PoolError::JoinPorts {
                        vip: v.name.clone(),
                        reason: format!("port {port} is another vip's join port"),
                    });
                }
            }
            let migrates = v.backends.iter().any(|b| {
                spec.backends
                    .get(b.0 as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|b| b.direct.is_some())
            });
            let deny_join_initial = v.mode.dsr().is_none()
                && v.deny_join_initial
                    .unwrap_or(v.announce != Announce::Off || migrates);
            vips.push(Some(Vip {
                join_ports,
                announce: v.announce,
                deny_join_initial,
                members_sorted,
                id: v.id,
                name: v.name,
                addr: v.addr,
                port: v.port,
                proto: v.proto,
                mode: v.mode,
                backends: v.backends,
                client_port: v.client_port,
                maglev,
            }));
        }
        let fwd: Vec<BackendFwd> = spec
            .backends
            .iter()
            .map(|b| match b {
                None => BackendFwd::default(),
                Some(b) => {
                    let port = &spec.ports[b.egress.0 as usize];
                    BackendFwd {
                        present: true,
                        addr4: b.ipv4.map(|a| addr_bytes(a.into())),
                        addr6: b.ipv6.map(|a| a.octets()),
                        port: b.port,
                        mac: b.mac,
                        egress: b.egress,
                        egress_mac: port.mac,
                        egress_vlan: port.vlan,
                        egress_mtu: port.mtu(),
                        egress_addr4: port.ipv4.first().map(|a| addr_bytes((*a).into())),
                        egress_addr6: port.ipv6.first().map(|a| a.octets()),
                    }
                }
            })
            .collect();
        let vip_keys: Vec<([u8; 16], u16)> = vips
            .iter()
            .map(|v| {
                v.as_ref()
                    .map_or(([0; 16], 0), |v| (addr_bytes(v.addr), v.port))
            })
            .collect();
        let fast4: Vec<Option<Fast4>> = fwd.iter().map(Fast4::of).collect();
        let join_reach: Vec<JoinReach> = spec
            .backends
            .iter()
            .map(|b| {
                let Some(b) = b else {
                    return JoinReach::default();
                };
                let nat_vip = |a: Option<IpAddr>| {
                    let a = addr_bytes(a?);
                    reverse_map
                        .get(&EndpointKey::new(&a, b.port, 6))
                        .map(|&(v, _)| v)
                };
                JoinReach {
                    accepts: b.accepts_joins(),
                    has_addr: [b.ipv4.is_some(), b.ipv6.is_some()],
                    nat_vip: [nat_vip(b.addr(false)), nat_vip(b.addr(true))],
                }
            })
            .collect();
        // The NAT VIPs on IPv4, for the established fast path: address and port packed in one
        // word, at the VIP's index (`u64::MAX`, which no packed key equals, elsewhere); none
        // with more than 8 VIPs, which the endpoint map serves.
        let vip4 = vips
            .iter()
            .map(|v| match v {
                Some(v) if v.mode.dsr().is_none() => match v.addr {
                    IpAddr::V4(a) => vip4_key(a.octets(), v.port),
                    IpAddr::V6(_) => u64::MAX,
                },
                _ => u64::MAX,
            })
            .collect::<Vec<u64>>();
        let vip4 = if vip4.len() <= 8 { vip4 } else { Vec::new() };
        let mut vip_addrs: Vec<[u8; 16]> =
            vips.iter().flatten().map(|v| addr_bytes(v.addr)).collect();
        vip_addrs.sort_unstable();
        vip_addrs.dedup();
        let vip_addrs4 = vips
            .iter()
            .flatten()
            .filter_map(|v| match v.addr {
                IpAddr::V4(a) => Some(u32::from_ne_bytes(a.octets())),
                IpAddr::V6(_) => None,
            })
            .collect();
        let own_addrs = spec
            .ports
            .iter()
            .flat_map(|p| {
                p.ipv4
                    .iter()
                    .map(|a| addr_bytes(IpAddr::V4(*a)))
                    .chain(p.ipv6.iter().map(|a| addr_bytes(IpAddr::V6(*a))))
            })
            .collect();
        for (key, &(vip, _)) in &join_map {
            if let Some(&other) = vip_map.get(key) {
                let name = |id: VipId| {
                    vips.get(id.0 as usize)
                        .and_then(Option::as_ref)
                        .map_or_else(String::new, |v: &Vip| v.name.clone())
                };
                return Err(PoolError::JoinPorts {
                    vip: name(vip),
                    reason: format!("a join port is vip {}'s own port", name(other)),
                });
            }
        }
        Ok(Self {
            version: spec.version,
            ports: spec.ports,
            backends: spec.backends,
            vips,
            vip_map,
            reverse_map,
            join_map,
            fwd,
            fast4,
            join_reach,
            vip4,
            vip_addrs,
            vip_addrs4,
            vip_keys,
            own_addrs,
        })
    }

    /// The VIP serving `addr:port/proto`, if any.
    #[inline]
    pub fn vip_for(&self, addr: &[u8; 16], port: u16, proto: u8) -> Option<VipId> {
        if proto != 6 {
            return None;
        }
        // A handful of VIPs: a scan of 18-byte keys beats hashing.
        if self.vip_keys.len() <= 8 {
            return self
                .vip_keys
                .iter()
                .position(|(a, p)| *p == port && a == addr)
                .map(|i| VipId(i as u16));
        }
        self.vip_map
            .get(&EndpointKey::new(addr, port, proto))
            .copied()
    }

    /// The NAT VIP serving the IPv4 endpoint `addr:port` over TCP, if any (the established fast
    /// path; DSR VIPs and IPv6 take [`vip_for`](Self::vip_for)).
    #[inline]
    pub fn nat_vip_for_v4(&self, addr: [u8; 4], port: u16) -> Option<VipId> {
        self.nat_vip_for_v4_word(vip4_key(addr, port))
    }

    /// [`nat_vip_for_v4`](Self::nat_vip_for_v4) of an endpoint packed by [`vip4_key`].
    #[inline]
    pub fn nat_vip_for_v4_word(&self, key: u64) -> Option<VipId> {
        // A handful of VIPs: a scan of packed words (`vip4`); more: the endpoint map.
        match self.vip4.iter().position(|&k| k == key) {
            Some(i) => Some(VipId(i as u16)),
            None if self.vip4.is_empty() => self.nat_vip_for_v4_in_map(key),
            None => None,
        }
    }

    /// [`nat_vip_for_v4_word`](Self::nat_vip_for_v4_word) with many VIPs: out of line.
    #[inline(never)]
    fn nat_vip_for_v4_in_map(&self, key: u64) -> Option<VipId> {
        let [a0, a1, a2, a3, p0, p1, ..] = key.to_le_bytes();
        let addr = crate::flow::v4_mapped([a0, a1, a2, a3]);
        let v = self.vip_for(&addr, u16::from_be_bytes([p0, p1]), 6)?;
        self.vip(v).filter(|v| v.mode.dsr().is_none()).map(|v| v.id)
    }

    /// What the established IPv4 fast path needs of a backend (see [`Fast4`]); `None` sends its
    /// packets the general way.
    #[inline]
    pub fn fast4(&self, id: BackendId) -> Option<&Fast4> {
        self.fast4.get(id.0 as usize)?.as_ref()
    }

    /// What admitting a join to backend `id` needs (see [`JoinReach`]); an id that never existed
    /// or was removed accepts none.
    #[inline]
    pub fn join_reach(&self, id: BackendId) -> JoinReach {
        self.join_reach_of(id).copied().unwrap_or_default()
    }

    /// [`join_reach`](Self::join_reach) by reference (the join's admission, under the token
    /// table's lock: nothing copied); `None` for an id that never existed.
    #[inline]
    pub fn join_reach_of(&self, id: BackendId) -> Option<&JoinReach> {
        self.join_reach.get(id.0 as usize)
    }

    /// The VIP whose backend answers from `addr:port/proto` (NAT return path).
    #[inline]
    pub fn vip_of_backend(&self, addr: &[u8; 16], port: u16, proto: u8) -> Option<VipId> {
        self.backend_endpoint(addr, port, proto).map(|(v, _)| v)
    }

    /// The VIP and the backend that answer from `addr:port/proto` (NAT return path).
    #[inline]
    pub fn backend_endpoint(
        &self,
        addr: &[u8; 16],
        port: u16,
        proto: u8,
    ) -> Option<(VipId, BackendId)> {
        if self.reverse_map.is_empty() {
            return None;
        }
        self.reverse_map
            .get(&EndpointKey::new(addr, port, proto))
            .copied()
    }

    /// The VIP and backend a stateless join port `addr:port/proto` leads to.
    #[inline]
    pub fn join_target(&self, addr: &[u8; 16], port: u16, proto: u8) -> Option<(VipId, BackendId)> {
        if self.join_map.is_empty() || proto != 6 {
            return None;
        }
        self.join_map
            .get(&EndpointKey::new(addr, port, proto))
            .copied()
    }

    /// Whether any VIP (any port) uses this address: for ARP/NDP and ICMP echo.
    #[inline]
    pub fn is_vip_addr(&self, addr: &[u8; 16]) -> bool {
        self.vip_addrs.iter().any(|a| a == addr)
    }

    /// [`is_vip_addr`](Self::is_vip_addr) of an IPv4 address (the new-connection path's
    /// spoofing check): one word compared per VIP.
    #[inline]
    // `contains` costs 22 instructions more per SYN here (callgrind, benches/budget.py syn).
    #[allow(clippy::manual_contains)]
    pub fn is_vip_addr_v4(&self, addr: [u8; 4]) -> bool {
        let a = u32::from_ne_bytes(addr);
        self.vip_addrs4.iter().any(|&v| v == a)
    }

    /// The packet-path record of a backend; `None` for an id that never existed.
    #[inline]
    pub fn fwd(&self, id: BackendId) -> Option<&BackendFwd> {
        self.fwd.get(id.0 as usize)
    }

    /// A VIP's address (key form) and port, by id; `None` for a removed VIP.
    #[inline]
    pub fn vip_endpoint(&self, id: VipId) -> Option<([u8; 16], u16)> {
        self.vip_keys
            .get(id.0 as usize)
            .copied()
            .filter(|k| k.1 != 0)
    }

    /// The VIP with this id.
    #[inline]
    pub fn vip(&self, id: VipId) -> Option<&Vip> {
        self.vips.get(id.0 as usize).and_then(Option::as_ref)
    }

    /// The backend with this id.
    #[inline]
    pub fn backend(&self, id: BackendId) -> Option<&Backend> {
        self.backends.get(id.0 as usize).and_then(Option::as_ref)
    }

    /// Whether any backend is migrating its connections (a scan of the backends: between
    /// bursts only).
    pub fn any_migrates(&self) -> bool {
        self.backends.iter().flatten().any(Backend::migrates)
    }

    /// The port with this id.
    #[inline]
    pub fn port(&self, id: PortId) -> Option<&PortConfig> {
        self.ports.get(id.0 as usize)
    }

    /// Whether `addr` is one of the gateway's own addresses, on any port.
    #[inline]
    pub fn is_gateway_addr(&self, addr: &[u8; 16]) -> bool {
        self.own_addrs.iter().any(|a| a == addr)
    }

    /// Whether `addr` is one of the gateway's own addresses on `port`.
    pub fn is_own_addr(&self, port: PortId, addr: &[u8; 16]) -> bool {
        self.port(port).is_some_and(|p| {
            p.ipv4.iter().any(|a| addr_bytes(IpAddr::V4(*a)) == *addr)
                || p.ipv6.iter().any(|a| addr_bytes(IpAddr::V6(*a)) == *addr)
        })
    }

    /// A fingerprint of every VIP's Maglev table (equal pools give equal fingerprints on every
    /// process and machine).
    pub fn maglev_fingerprint(&self) -> u64 {
        let words: Vec<u64> = self
            .vips
            .iter()
            .map(|v| v.as_ref().map_or(0, |v| v.maglev.fingerprint()))
            .collect();
        crate::flow::hash_words(&words)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{demo_spec, dsr_spec};

    /// The join admission record of every backend says what the backend and the reverse map
    /// say: takes joins, address per family, the VIP its address and port map back to.
    #[test]
    fn join_reach_agrees_with_the_backends_and_the_reverse_map() {
        let mut spec = demo_spec(4);
        let b = spec.backends[1].as_mut().unwrap();
        b.state = BackendState::Draining;
        let b = spec.backends[2].as_mut().unwrap();
        b.state = BackendState::Down;
        let pools = [
            PoolSnapshot::build(spec).unwrap(),
            PoolSnapshot::build(dsr_spec(3, Encap::Ipip, OuterSource::Gateway)).unwrap(),
        ];
        for pool in &pools {
            for id in 0..pool.backends.len() as u16 + 2 {
                let id = BackendId(id);
                let r = pool.join_reach(id);
                let Some(b) = pool.backend(id) else {
                    assert_eq!(r, JoinReach::default());
                    continue;
                };
                assert_eq!(r.accepts, b.accepts_joins(), "{id:?}");
                for v6 in [false, true] {
                    let f = usize::from(v6);
                    assert_eq!(r.has_addr[f], b.addr(v6).is_some());
                    let want = b
                        .addr(v6)
                        .and_then(|a| pool.vip_of_backend(&addr_bytes(a), b.port, 6));
                    assert_eq!(r.nat_vip[f], want, "{id:?} v6 {v6}");
                }
            }
        }
        assert!(pools[0].join_reach(BackendId(0)).nat_vip[0].is_some());
        assert!(!pools[0].join_reach(BackendId(2)).accepts);
        assert!(pools[1].join_reach(BackendId(0)).nat_vip == [None, None]);
    }

    /// The established path's VIP lookup finds what `vip_for` finds for NAT VIPs on IPv4, and
    /// nothing for DSR or IPv6 ones, with a handful of VIPs (a scan) and with many (the map).
    #[test]
    fn nat_vip_for_v4_agrees_with_vip_for() {
        for extra in [0u16, 3, 20] {
            let mut spec = demo_spec(3);
            let dsr = dsr_spec(3, Encap::Ipip, OuterSource::Gateway).vips[0]
                .clone()
                .map(|v| v.mode);
            for i in 0..extra {
                let mut v = spec.vips[0].clone().unwrap_or_else(|| unreachable!());
                v.id = VipId(2 + i);
                v.name = format!("extra{i}");
                v.addr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100 + i as u8));
                v.port = 80 + i;
                v.backends = Vec::new(); // a backend serves one NAT VIP per address and port
                if i % 3 == 2 {
                    v.mode = dsr.unwrap_or_else(|| unreachable!());
                }
                spec.vips.push(Some(v));
            }
            let pool = PoolSnapshot::build(spec).unwrap_or_else(|e| panic!("{e}"));
            for v in pool.vips.iter().flatten() {
                if let IpAddr::V4(a) = v.addr {
                    assert!(pool.is_vip_addr_v4(a.octets()));
                    let mut b = a.octets();
                    b[3] ^= 0x80;
                    assert_eq!(
                        pool.is_vip_addr_v4(b),
                        pool.is_vip_addr(&crate::flow::v4_mapped(b))
                    );
                }
                let IpAddr::V4(a) = v.addr else {
                    assert_eq!(v.addr, IpAddr::V6(crate::testkit::VIP6));
                    continue;
                };
                let want = (v.mode.dsr().is_none()).then_some(v.id);
                assert_eq!(pool.nat_vip_for_v4(a.octets(), v.port), want, "{}", v.name);
                assert_eq!(pool.nat_vip_for_v4(a.octets(), v.port ^ 1), None);
            }
        }
    }
}
