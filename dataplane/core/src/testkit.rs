//! Building blocks for tests, benches and the fuzz target (in the manner of Katran's
//! `PacketBuilder`): frames built through the wire layer's emitters, and a small demo pool.
//!
//! Not used by the packet path.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use trapeze_wire::ip::IpProtocol;
use trapeze_wire::mptcp::{MpCapable, MpJoin, MpcFlags};
use trapeze_wire::{ipv4, ipv6, tcp};

use crate::pipeline::{
    process, DropReason, Event, Frame, Shared, VecFrame, Verdict, Worker, WorkerConfig,
};
use crate::pool::{
    Backend, BackendId, BackendState, Dsr, Encap, ForwardingMode, OuterSource, PoolSnapshot,
    PoolSpec, PortConfig, PortId, VipId, VipSpec,
};
use crate::tables::flow_table::FlowTableConfig;
use crate::tables::token::TokenTableConfig;
use crate::time::Ticks;

/// MAC of the client in the demo topology.
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xc1, 0x01];
/// MAC of the gateway's client-side port 0.
pub const PORT0_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x00, 0x01];
/// MAC of the gateway's server-side port 1.
pub const PORT1_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x00, 0x02];
/// The IPv4 VIP of the demo pool.
pub const VIP4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
/// The IPv6 VIP of the demo pool.
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);
/// VIP port.
pub const VIP_PORT: u16 = 80;
/// Backend port.
pub const BACKEND_PORT: u16 = 8080;

/// MAC of demo backend `i`.
pub fn backend_mac(i: u16) -> [u8; 6] {
    let [hi, lo] = i.to_be_bytes();
    [0x02, 0, 0, 0xbe, hi, lo]
}

/// IPv4 address of demo backend `i`.
pub fn backend_v4(i: u16) -> Ipv4Addr {
    let [hi, lo] = (i + 10).to_be_bytes();
    Ipv4Addr::new(10, 1, hi, lo)
}

/// IPv6 address of demo backend `i`.
pub fn backend_v6(i: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, i + 10)
}

/// The demo pool spec: port 0 faces clients (10.0.0.1, fd00::1), port 1 faces `n` backends
/// (10.1.x.y and fd00:1::x, port 8080, weight 1, MACs known); VIP 0 is 192.0.2.10:80 and VIP 1
/// is `[2001:db8::10]:80`, both over all backends.
pub fn demo_spec(n: u16) -> PoolSpec {
    let ports = vec![
        PortConfig {
            id: PortId(0),
            mac: PORT0_MAC,
            ipv4: vec![Ipv4Addr::new(10, 0, 0, 1)],
            ipv6: vec![Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1)],
            vlan: None,
            gateway_mac: Some(CLIENT_MAC),
            mtu: 0,
        },
        PortConfig {
            id: PortId(1),
            mac: PORT1_MAC,
            ipv4: vec![Ipv4Addr::new(10, 1, 0, 1)],
            ipv6: vec![Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 1)],
            vlan: None,
            gateway_mac: None,
            mtu: 0,
        },
    ];
    let backends = (0..n)
        .map(|i| {
            Some(Backend {
                id: BackendId(i),
                name: format!("b{i}"),
                ipv4: Some(backend_v4(i)),
                ipv6: Some(backend_v6(i)),
                port: BACKEND_PORT,
                weight: 1,
                state: BackendState::Active,
                egress: PortId(1),
                mac: Some(backend_mac(i)),
                direct: None,
            })
        })
        .collect();
    let all: Vec<BackendId> = (0..n).map(BackendId).collect();
    let vip = |id: u16, addr: IpAddr| VipSpec {
        id: VipId(id),
        name: format!("vip{id}"),
        addr,
        port: VIP_PORT,
        proto: 6,
        mode: ForwardingMode::Nat,
        backends: all.clone(),
        client_port: PortId(0),
        join_ports: Vec::new(),
        announce: Default::default(),
        deny_join_initial: None,
    };
    PoolSpec {
        version: 1,
        ports,
        backends,
        vips: vec![Some(vip(0, VIP4.into())), Some(vip(1, VIP6.into()))],
        maglev_size: 0,
    }
}

/// [`demo_spec`] with both VIPs in DSR mode on the backends' port ([`BACKEND_PORT`]: DSR does
/// not translate ports), with this encapsulation and outer source.
pub fn dsr_spec(n: u16, encap: Encap, outer_source: OuterSource) -> PoolSpec {
    let mut spec = demo_spec(n);
    for v in spec.vips.iter_mut().flatten() {
        v.port = BACKEND_PORT;
        v.mode = ForwardingMode::Dsr(Dsr {
            encap,
            outer_source,
        });
    }
    spec
}

/// [`dsr_spec`], built.
pub fn dsr_pool(n: u16, encap: Encap, outer_source: OuterSource) -> PoolSnapshot {
    PoolSnapshot::build(dsr_spec(n, encap, outer_source))
        .unwrap_or_else(|e| panic!("dsr pool: {e}"))
}

/// [`demo_spec`], built.
pub fn demo_pool(n: u16) -> PoolSnapshot {
    PoolSnapshot::build(demo_spec(n)).unwrap_or_else(|e| panic!("demo pool: {e}"))
}

/// A TCP segment to build.
#[derive(Debug, Clone)]
pub struct TcpSpec {
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// 802.1Q VID to tag with.
    pub vlan: Option<u16>,
    /// Source address.
    pub src: IpAddr,
    /// Destination address (same family as `src`).
    pub dst: IpAddr,
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// TCP flags byte.
    pub flags: u8,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
    /// Raw option bytes (padded to a multiple of 4 with NOPs by the builder).
    pub options: Vec<u8>,
    /// Payload.
    pub payload: Vec<u8>,
    /// TTL / hop limit.
    pub ttl: u8,
}

impl TcpSpec {
    /// A client -> VIP segment with the given flags from `client:port` (IPv4 or IPv6 by `client`).
    pub fn to_vip(client: IpAddr, client_port: u16, flags: u8) -> Self {
        let vip: IpAddr = if client.is_ipv6() {
            VIP6.into()
        } else {
            VIP4.into()
        };
        Self {
            src_mac: CLIENT_MAC,
            dst_mac: PORT0_MAC,
            vlan: None,
            src: client,
            dst: vip,
            src_port: client_port,
            dst_port: VIP_PORT,
            flags,
            seq: 1000,
            ack: 0,
            options: Vec::new(),
            payload: Vec::new(),
            ttl: 64,
        }
    }

    /// A backend -> client segment from demo backend `b`.
    pub fn from_backend(b: u16, client: IpAddr, client_port: u16, flags: u8) -> Self {
        let src: IpAddr = if client.is_ipv6() {
            backend_v6(b).into()
        } else {
            backend_v4(b).into()
        };
        Self {
            src_mac: backend_mac(b),
            dst_mac: PORT1_MAC,
            vlan: None,
            src,
            dst: client,
            src_port: BACKEND_PORT,
            dst_port: client_port,
            flags,
            seq: 5000,
            ack: 1001,
            options: Vec::new(),
            payload: Vec::new(),
            ttl: 64,
        }
    }

    /// Appends an MPTCP option.
    pub fn with_mptcp(mut self, opt: MptcpOpt) -> Self {
        let mut b = [0u8; 40];
        let n = match opt {
            MptcpOpt::Capable(c) => c.emit(&mut b).map_or(0, |_| c.buffer_len()),
            MptcpOpt::Join(j) => j.emit(&mut b).map_or(0, |_| j.buffer_len()),
        };
        self.options.extend_from_slice(&b[..n]);
        self
    }

    /// Builds the frame.
    pub fn build(&self) -> Vec<u8> {
        let mut opts = self.options.clone();
        while !opts.len().is_multiple_of(4) {
            opts.push(1);
        }
        let tcp_len = tcp::HEADER_LEN + opts.len() + self.payload.len();
        let l2 = if self.vlan.is_some() { 18 } else { 14 };
        let l3 = if self.src.is_ipv6() {
            ipv6::HEADER_LEN
        } else {
            ipv4::HEADER_LEN
        };
        let mut f = vec![0u8; l2 + l3 + tcp_len];
        f[0..6].copy_from_slice(&self.dst_mac);
        f[6..12].copy_from_slice(&self.src_mac);
        let ethertype: u16 = if self.src.is_ipv6() { 0x86dd } else { 0x0800 };
        if let Some(vid) = self.vlan {
            f[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
            f[14..16].copy_from_slice(&(vid & 0xfff).to_be_bytes());
            f[16..18].copy_from_slice(&ethertype.to_be_bytes());
        } else {
            f[12..14].copy_from_slice(&ethertype.to_be_bytes());
        }
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => ipv4::Repr {
                src_addr: s,
                dst_addr: d,
                next_header: IpProtocol::TCP,
                payload_len: tcp_len,
                hop_limit: self.ttl,
                dscp_ecn: 0,
                ident: 0x1234,
                dont_frag: true,
            }
            .emit(&mut ipv4::Packet::new_unchecked(&mut f[l2..l2 + l3])),
            (IpAddr::V6(s), IpAddr::V6(d)) => ipv6::Repr {
                src_addr: s,
                dst_addr: d,
                next_header: IpProtocol::TCP,
                payload_len: tcp_len,
                hop_limit: self.ttl,
                traffic_class: 0,
                flow_label: 0,
            }
            .emit(&mut ipv6::Packet::new_unchecked(&mut f[l2..l2 + l3])),
            _ => panic!("TcpSpec: mixed address families"),
        }
        let seg = &mut f[l2 + l3..];
        seg[tcp::HEADER_LEN..tcp::HEADER_LEN + opts.len()].copy_from_slice(&opts);
        seg[tcp::HEADER_LEN + opts.len()..].copy_from_slice(&self.payload);
        let mut t = tcp::Packet::new_unchecked(seg);
        t.set_src_port(self.src_port);
        t.set_dst_port(self.dst_port);
        t.set_seq_number(self.seq);
        t.set_ack_number(self.ack);
        t.set_header_len(tcp::HEADER_LEN + opts.len());
        t.set_flags(tcp::TcpFlags(self.flags));
        t.set_window_len(64240);
        t.fill_checksum(&self.src, &self.dst);
        f
    }
}

/// An MPTCP option for [`TcpSpec::with_mptcp`].
#[derive(Debug, Clone, Copy)]
pub enum MptcpOpt {
    /// MP_CAPABLE.
    Capable(MpCapable),
    /// MP_JOIN.
    Join(MpJoin),
}

/// MP_CAPABLE as a v1 client SYN carries it (no key).
pub fn mpc_syn() -> MptcpOpt {
    MptcpOpt::Capable(MpCapable {
        version: 1,
        flags: MpcFlags::HMAC_SHA256,
        sender_key: None,
        receiver_key: None,
        data_len: None,
        checksum: None,
    })
}

/// MP_CAPABLE as the server's SYN/ACK carries it (the server's key).
pub fn mpc_synack(server_key: u64) -> MptcpOpt {
    MptcpOpt::Capable(MpCapable {
        version: 1,
        flags: MpcFlags::HMAC_SHA256,
        sender_key: Some(server_key),
        receiver_key: None,
        data_len: None,
        checksum: None,
    })
}

/// MP_CAPABLE as the client's third ACK carries it (both keys).
pub fn mpc_ack(client_key: u64, server_key: u64) -> MptcpOpt {
    MptcpOpt::Capable(MpCapable {
        version: 1,
        flags: MpcFlags::HMAC_SHA256,
        sender_key: Some(client_key),
        receiver_key: Some(server_key),
        data_len: None,
        checksum: None,
    })
}

/// MP_JOIN SYN for `token`.
pub fn join_syn(token: u32) -> MptcpOpt {
    MptcpOpt::Join(MpJoin::Syn {
        backup: false,
        address_id: 1,
        receiver_token: token,
        sender_nonce: 0x0102_0304,
    })
}

/// The NAT box of the real captures in `dataplane/testdata/captures` (see the README there):
/// client side port 0, server side port 1, one server, VIPs 203.0.113.10:80 and
/// `[2001:db8:ff::10]:80` -> 198.51.100.10 / 2001:db8:2::10 port 8080.
pub mod capture {
    use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use crate::pool::{
        Backend, BackendId, BackendState, ForwardingMode, PoolSnapshot, PoolSpec, PortConfig,
        PortId, VipId, VipSpec,
    };

    /// MAC of the NAT box's client-facing interface.
    pub const NATC0: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x01];
    /// MAC of the NAT box's server-facing interface.
    pub const NATS0: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0x01];
    /// MAC of the server.
    pub const SRV0: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0x10];
    /// IPv4 VIP.
    pub const VIP4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
    /// IPv6 VIP.
    pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 0x10);

    /// The pool equivalent to the capture's nftables DNAT.
    pub fn pool() -> PoolSnapshot {
        let vip = |id: u16, addr: IpAddr| {
            Some(VipSpec {
                id: VipId(id),
                name: format!("vip{id}"),
                addr,
                port: 80,
                proto: 6,
                mode: ForwardingMode::Nat,
                backends: vec![BackendId(0)],
                client_port: PortId(0),
                join_ports: Vec::new(),
                announce: Default::default(),
                deny_join_initial: None,
            })
        };
        let spec = PoolSpec {
            version: 1,
            ports: vec![
                PortConfig {
                    id: PortId(0),
                    mac: NATC0,
                    ipv4: vec![Ipv4Addr::new(192, 0, 2, 1)],
                    ipv6: vec![Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1)],
                    vlan: None,
                    gateway_mac: None,
                    mtu: 0,
                },
                PortConfig {
                    id: PortId(1),
                    mac: NATS0,
                    ipv4: vec![Ipv4Addr::new(198, 51, 100, 1)],
                    ipv6: vec![Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1)],
                    vlan: None,
                    gateway_mac: None,
                    mtu: 0,
                },
            ],
            backends: vec![Some(Backend {
                id: BackendId(0),
                name: "srv".into(),
                ipv4: Some(Ipv4Addr::new(198, 51, 100, 10)),
                ipv6: Some(Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x10)),
                port: 8080,
                weight: 1,
                state: BackendState::Active,
                egress: PortId(1),
                mac: Some(SRV0),
                direct: None,
            })],
            vips: vec![vip(0, VIP4.into()), vip(1, VIP6.into())],
            maglev_size: 0,
        };
        PoolSnapshot::build(spec).unwrap_or_else(|e| panic!("capture pool: {e}"))
    }
}

/// One gateway instance for scenario tests (quinn's `Pair` idea): `workers` workers with small
/// flow tables, one token table, one pool, and the clock in the test's hands. A frame is decided
/// by worker 0 first and follows handoffs, as the runtime's would.
#[derive(Debug)]
pub struct Gateway {
    /// The workers.
    pub workers: Vec<Worker>,
    /// State shared by the workers.
    pub shared: Shared,
    /// The pool.
    pub pool: PoolSnapshot,
    /// The time given to `process`.
    pub now: Ticks,
}

impl Gateway {
    /// `workers` workers (4096 flows each), a 4096-entry token table, the clock at 1 s.
    pub fn new(pool: PoolSnapshot, workers: u16) -> Self {
        Self {
            workers: (0..workers)
                .map(|id| {
                    Worker::new(WorkerConfig {
                        id,
                        workers,
                        flows: FlowTableConfig {
                            capacity: 4096,
                            ..Default::default()
                        },
                        ..Default::default()
                    })
                })
                .collect(),
            shared: Shared::new(TokenTableConfig {
                capacity: 4096,
                shards: 8,
            }),
            pool,
            now: Ticks::from_secs(1),
        }
    }

    /// Decides one frame arriving on `port`: the verdict, the frame as it would leave, and the
    /// worker that decided. Panics on a handoff loop.
    pub fn send(&mut self, port: PortId, bytes: &[u8]) -> (Verdict, Vec<u8>, usize) {
        let mut frame = VecFrame::new(bytes);
        let mut w = 0usize;
        for _ in 0..4 {
            match process(
                &mut frame,
                port,
                self.now,
                &mut self.workers[w],
                &self.shared,
                &self.pool,
            ) {
                Verdict::Handoff { worker } => w = worker as usize,
                v => return (v, frame.data().to_vec(), w),
            }
        }
        panic!("handoff loop");
    }

    /// [`Gateway::send`] on port 0 (the demo topology's client side), asserting that every
    /// worker's counters still balance.
    pub fn from_client(&mut self, bytes: &[u8]) -> (Verdict, Vec<u8>) {
        let (v, out, _) = self.send(PortId(0), bytes);
        assert!(self.balanced(), "counters out of balance after {v:?}");
        (v, out)
    }

    /// [`Gateway::send`] on port 1 (the backends' side), asserting balanced counters.
    pub fn from_backend(&mut self, bytes: &[u8]) -> (Verdict, Vec<u8>) {
        let (v, out, _) = self.send(PortId(1), bytes);
        assert!(self.balanced(), "counters out of balance after {v:?}");
        (v, out)
    }

    /// [`Gateway::from_client`] of a built segment.
    pub fn client(&mut self, s: &TcpSpec) -> (Verdict, Vec<u8>) {
        self.from_client(&s.build())
    }

    /// [`Gateway::from_backend`] of a built segment.
    pub fn backend(&mut self, s: &TcpSpec) -> (Verdict, Vec<u8>) {
        self.from_backend(&s.build())
    }

    /// The announcements every worker queued (announce mode), oldest first per worker.
    pub fn announcements(&mut self) -> Vec<crate::pipeline::announce::Announcement> {
        self.workers
            .iter_mut()
            .flat_map(|w| w.announcements.drain().collect::<Vec<_>>())
            .collect()
    }

    /// Whether every worker's counters balance (one terminal counter per frame).
    pub fn balanced(&self) -> bool {
        self.workers.iter().all(|w| w.stats.balanced())
    }

    /// An event summed over the workers.
    pub fn events(&self, e: Event) -> u64 {
        self.workers.iter().map(|w| w.stats.events_of(e)).sum()
    }

    /// A drop reason summed over the workers.
    pub fn drops(&self, r: DropReason) -> u64 {
        self.workers.iter().map(|w| w.stats.drops_of(r)).sum()
    }
}

/// Connection `k` of the join tests, owned by backend `k`: a client 198.19.0.k:3000+k of the
/// IPv4 VIP, with server key 0x5eed_0000_0000_0000 + k, learned into the token table of each of
/// `shared` at `now`. Returns its token.
pub fn learn_connection(shared: &[&Shared], k: u16, now: Ticks) -> u32 {
    let server_key = 0x5eed_0000_0000_0000 + u64::from(k);
    let conn = crate::flow::FlowKey::new(
        IpAddr::V4(Ipv4Addr::new(198, 19, 0, k as u8)),
        3000 + k,
        IpAddr::V4(VIP4),
        VIP_PORT,
        6,
    );
    let owner = crate::tables::token::Owner::new(BackendId(k), conn, server_key, None, now);
    let token = crate::crypto::token_from_key(server_key);
    for sh in shared {
        let _ = sh.tokens.learn(token, owner);
    }
    token
}
