//! The load generator's packets, built without allocation.
//!
//! Every kind starts from a **template** made once by the core's test kit
//! ([`trapeze_core::testkit::TcpSpec`], the same builder the pipeline tests use), copied into the
//! packet buffer and patched at fixed offsets: addresses, ports, sequence and acknowledgement
//! numbers, MPTCP keys or tokens. The IPv4 header checksum and the TCP checksum are then
//! recomputed with `trapeze-wire`, so every packet is valid.
//!
//! The sequence number of every client packet carries the low 32 bits of the sender's TSC when
//! it was built; the receiver subtracts it from its own TSC (wrapping) for the latency. The
//! gateway rewrites neither sequence numbers nor the IPv4 identification, which names the
//! packet's kind ([`Kind`]), so the receiver classifies a frame with two loads.
//!
//! Layout (IPv4, untagged): Ethernet 0..14, IPv4 14..34, TCP 34..54, options from 54.

use core::net::{IpAddr, Ipv4Addr};

use trapeze_core::crypto;
use trapeze_core::testkit::{self, MptcpOpt, TcpSpec};
use trapeze_wire::mptcp::{MpJoin, MpcFlags};
use trapeze_wire::{ipv4, tcp};

/// Offset of the IPv4 header.
pub const IP: usize = 14;
/// Offset of the TCP header.
pub const TCP: usize = 34;
/// Offset of the TCP options.
pub const OPT: usize = 54;
/// Offset of the IPv4 identification field.
const IDENT: usize = IP + 4;
/// Offset of the IPv4 source address (destination follows).
const SRC: usize = IP + 12;
const DST: usize = IP + 16;
/// Offsets in the TCP header.
const SPORT: usize = TCP;
const DPORT: usize = TCP + 2;
const SEQ: usize = TCP + 4;
const ACK: usize = TCP + 8;
const FLAGS: usize = TCP + 13;
/// MP_CAPABLE: sender key at +4, receiver key at +12 of the option.
const MPC_SENDER_KEY: usize = OPT + 4;
const MPC_RECEIVER_KEY: usize = OPT + 12;
/// MP_JOIN SYN: receiver token at +4 of the option.
const JOIN_TOKEN: usize = OPT + 4;

/// Largest frame the generator builds.
pub const MAX_FRAME: usize = 128;

/// Data frames are this long: 64 bytes on the wire with the Ethernet FCS (what "64 B" means for
/// NICs, testpmd and Pktgen), so 54 bytes of headers and 6 of payload.
pub const DATA_FRAME_LEN: usize = 60;

/// The IPv4 identification of generated packets: this marker in the high byte, the kind in the low.
const IDENT_MARK: u16 = 0x7a00;

/// Source ports used per client address (10000..60000).
pub const PORTS_PER_ADDR: u32 = 50_000;
const FIRST_PORT: u32 = 10_000;

/// What a packet is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Kind {
    /// A data segment (ACK, 6 bytes of payload) of an established flow.
    Data = 0,
    /// A plain TCP SYN of a new flow.
    Syn = 1,
    /// An MP_CAPABLE SYN: the first step of a handshake.
    MpcSyn = 2,
    /// The backend's MP_CAPABLE SYN/ACK (built by the generator's server side).
    SynAck = 3,
    /// The client's third ACK with MP_CAPABLE and both keys.
    MpcAck = 4,
    /// An MP_JOIN SYN carrying a learned token.
    Join = 5,
}

impl Kind {
    /// Every kind, by value.
    pub const ALL: [Kind; 6] = [
        Kind::Data,
        Kind::Syn,
        Kind::MpcSyn,
        Kind::SynAck,
        Kind::MpcAck,
        Kind::Join,
    ];

    /// Short name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Data => "data",
            Kind::Syn => "syn",
            Kind::MpcSyn => "mpc_syn",
            Kind::SynAck => "synack",
            Kind::MpcAck => "mpc_ack",
            Kind::Join => "join",
        }
    }

    fn from_u8(v: u8) -> Option<Kind> {
        Kind::ALL.get(usize::from(v)).copied()
    }
}

/// Where the generator sits: MACs, the VIP, and the address blocks its clients use.
#[derive(Debug, Clone)]
pub struct Topology {
    /// MAC of the generator's client-side port (the gateway's `gateway_mac` on its client port).
    pub client_mac: [u8; 6],
    /// MAC of the gateway's client-side port.
    pub gw_client_mac: [u8; 6],
    /// The VIP and its port.
    pub vip: Ipv4Addr,
    /// The VIP's TCP port.
    pub vip_port: u16,
    /// Established flows' client addresses start here (50,000 ports each).
    pub flow_base: Ipv4Addr,
    /// SYN flood clients start here.
    pub syn_base: Ipv4Addr,
    /// Handshake clients start here.
    pub conn_base: Ipv4Addr,
    /// Join subflows come from here.
    pub join_base: Ipv4Addr,
}

impl Default for Topology {
    /// The benchmark topology (`benches/system/run.sh`): VIP 192.0.2.10:80, clients in
    /// 10.64.0.0/10 behind the gateway's client port.
    fn default() -> Self {
        Self {
            client_mac: testkit::CLIENT_MAC,
            gw_client_mac: testkit::PORT0_MAC,
            vip: testkit::VIP4,
            vip_port: testkit::VIP_PORT,
            flow_base: Ipv4Addr::new(10, 64, 0, 0),
            syn_base: Ipv4Addr::new(10, 80, 0, 0),
            conn_base: Ipv4Addr::new(10, 96, 0, 0),
            join_base: Ipv4Addr::new(10, 112, 0, 0),
        }
    }
}

/// The client endpoint of the `n`-th flow of a block starting at `base` (a /12 is 1M addresses,
/// so `n` wraps after 52 billion flows).
pub fn endpoint(base: Ipv4Addr, n: u64) -> (Ipv4Addr, u16) {
    let per = u64::from(PORTS_PER_ADDR);
    let host = ((n / per) % (1 << 20)) as u32;
    let port = FIRST_PORT + (n % per) as u32;
    (Ipv4Addr::from(u32::from(base) + host), port as u16)
}

/// The inverse of [`endpoint`]: which flow of the block at `base` `addr:port` is, if any.
pub fn endpoint_index(base: Ipv4Addr, addr: Ipv4Addr, port: u16) -> Option<u64> {
    let host = u32::from(addr).checked_sub(u32::from(base))?;
    let p = u32::from(port).checked_sub(FIRST_PORT)?;
    (host < (1 << 20) && p < PORTS_PER_ADDR)
        .then(|| u64::from(host) * u64::from(PORTS_PER_ADDR) + u64::from(p))
}

/// A 64-bit mix (splitmix64's finaliser): keys that look random but are reproducible.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn endpoint_id(addr: Ipv4Addr, port: u16) -> u64 {
    (u64::from(u32::from(addr)) << 16) | u64::from(port)
}

/// The server's MP_CAPABLE key for the connection from `client:port` (what the generator's
/// server side answers, so the client side and the join generator can derive it again).
pub fn server_key(client: Ipv4Addr, port: u16) -> u64 {
    mix(endpoint_id(client, port) ^ 0x5e5e_5e5e_0000_0000)
}

/// The client's MP_CAPABLE key for the connection from `client:port`.
pub fn client_key(client: Ipv4Addr, port: u16) -> u64 {
    mix(endpoint_id(client, port) ^ 0xc1c1_c1c1_0000_0000)
}

/// A prebuilt frame and its length.
#[derive(Clone)]
struct Template {
    bytes: [u8; MAX_FRAME],
    len: usize,
}

impl core::fmt::Debug for Template {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Template").field("len", &self.len).finish()
    }
}

impl Template {
    fn new(spec: &TcpSpec, kind: Kind) -> Self {
        let frame = spec.build();
        assert!(frame.len() <= MAX_FRAME, "template too long");
        let mut bytes = [0u8; MAX_FRAME];
        bytes[..frame.len()].copy_from_slice(&frame);
        put16(&mut bytes, IDENT, IDENT_MARK | kind as u16);
        Self {
            bytes,
            len: frame.len(),
        }
    }

    /// Copies the template into `out` (at least [`MAX_FRAME`] bytes or the template's length)
    /// and sets the endpoints and numbers; the caller patches options, then [`finish`]es.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn stamp(
        &self,
        out: &mut [u8],
        src: Ipv4Addr,
        dst: Ipv4Addr,
        sport: u16,
        dport: u16,
        seq: u32,
        ack: u32,
    ) -> usize {
        let n = self.len;
        out[..n].copy_from_slice(&self.bytes[..n]);
        out[SRC..SRC + 4].copy_from_slice(&src.octets());
        out[DST..DST + 4].copy_from_slice(&dst.octets());
        put16(out, SPORT, sport);
        put16(out, DPORT, dport);
        put32(out, SEQ, seq);
        put32(out, ACK, ack);
        n
    }
}

/// Recomputes the IPv4 header checksum and the TCP checksum of an untagged IPv4/TCP frame of
/// `len` bytes.
#[inline]
pub fn finish(frame: &mut [u8], len: usize) {
    let (src, dst) = (ip_at(frame, SRC), ip_at(frame, DST));
    ipv4::Packet::new_unchecked(&mut frame[IP..TCP]).fill_checksum();
    tcp::Packet::new_unchecked(&mut frame[TCP..len])
        .fill_checksum(&IpAddr::V4(src), &IpAddr::V4(dst));
}

/// Builds client packets of every kind.
#[derive(Debug, Clone)]
pub struct Generator {
    topo: Topology,
    data: Template,
    syn: Template,
    mpc_syn: Template,
    mpc_ack: Template,
    join: Template,
}

impl Generator {
    /// Templates for `topo`.
    pub fn new(topo: Topology) -> Self {
        let base = |flags: tcp::TcpFlags| {
            let mut s = TcpSpec::to_vip(IpAddr::V4(topo.flow_base), 10_000, flags.0);
            s.src_mac = topo.client_mac;
            s.dst_mac = topo.gw_client_mac;
            s.dst = IpAddr::V4(topo.vip);
            s.dst_port = topo.vip_port;
            s
        };
        let mut data = base(tcp::TcpFlags::ACK);
        data.payload = vec![0; DATA_FRAME_LEN - OPT];
        let syn = base(tcp::TcpFlags::SYN);
        let mpc_syn = base(tcp::TcpFlags::SYN).with_mptcp(testkit::mpc_syn());
        let mpc_ack = base(tcp::TcpFlags::ACK).with_mptcp(testkit::mpc_ack(0, 0));
        let join = base(tcp::TcpFlags::SYN).with_mptcp(testkit::join_syn(0));
        Self {
            data: Template::new(&data, Kind::Data),
            syn: Template::new(&syn, Kind::Syn),
            mpc_syn: Template::new(&mpc_syn, Kind::MpcSyn),
            mpc_ack: Template::new(&mpc_ack, Kind::MpcAck),
            join: Template::new(&join, Kind::Join),
            topo,
        }
    }

    /// The topology.
    pub fn topology(&self) -> &Topology {
        &self.topo
    }

    /// A data segment of established flow `flow`, stamped `ts`. Returns the frame length.
    #[inline]
    pub fn data(&self, out: &mut [u8], flow: u64, ts: u32) -> usize {
        self.data_from(out, endpoint(self.topo.flow_base, flow), ts)
    }

    /// A data segment on handshake connection `conn` (after its third ACK), stamped `ts`.
    #[inline]
    pub fn conn_data(&self, out: &mut [u8], conn: u64, ts: u32) -> usize {
        self.data_from(out, self.conn_endpoint(conn), ts)
    }

    #[inline]
    fn data_from(&self, out: &mut [u8], (src, sport): (Ipv4Addr, u16), ts: u32) -> usize {
        let n = self
            .data
            .stamp(out, src, self.topo.vip, sport, self.topo.vip_port, ts, 1);
        finish(out, n);
        n
    }

    /// The SYN of new flow `n` (a flood: each `n` is a new 5-tuple).
    #[inline]
    pub fn syn(&self, out: &mut [u8], n: u64, ts: u32) -> usize {
        let (src, sport) = endpoint(self.topo.syn_base, n);
        let len = self
            .syn
            .stamp(out, src, self.topo.vip, sport, self.topo.vip_port, ts, 0);
        finish(out, len);
        len
    }

    /// The client endpoint of handshake connection `conn`.
    pub fn conn_endpoint(&self, conn: u64) -> (Ipv4Addr, u16) {
        endpoint(self.topo.conn_base, conn)
    }

    /// Which handshake connection a client -> VIP frame (as the backend receives it, NATed)
    /// belongs to, by its source endpoint.
    pub fn conn_of(&self, frame: &[u8]) -> Option<u64> {
        if frame.len() < OPT {
            return None;
        }
        endpoint_index(self.topo.conn_base, ip_at(frame, SRC), get16(frame, SPORT))
    }

    /// The MP_CAPABLE SYN opening connection `conn`.
    #[inline]
    pub fn mpc_syn(&self, out: &mut [u8], conn: u64, ts: u32) -> usize {
        let (src, sport) = self.conn_endpoint(conn);
        let len = self
            .mpc_syn
            .stamp(out, src, self.topo.vip, sport, self.topo.vip_port, ts, 0);
        finish(out, len);
        len
    }

    /// The token the gateway learns for connection `conn` (from the key the generator's server
    /// side puts in its SYN/ACK).
    pub fn conn_token(&self, conn: u64) -> u32 {
        let (c, p) = self.conn_endpoint(conn);
        crypto::token_from_key(server_key(c, p))
    }

    /// The client's third ACK answering `synack` (a SYN/ACK from the VIP as the client receives
    /// it): MP_CAPABLE with the client's key and the server's key echoed. `None` if `synack` is
    /// not an MP_CAPABLE SYN/ACK of ours. Its sequence number is the SYN's plus one, so the
    /// stamp the receiver reads is the SYN's: the latency of a third ACK is the whole handshake.
    #[inline]
    pub fn third_ack(&self, out: &mut [u8], synack: &[u8]) -> Option<usize> {
        if synack.len() < OPT + 12
            || synack[FLAGS] & 0x12 != 0x12
            || synack[OPT] != tcp::option_kind::MPTCP
            || synack[OPT + 1] != 12
            || synack[OPT + 2] >> 4 != 0
        {
            return None;
        }
        let client = ip_at(synack, DST);
        let cport = get16(synack, DPORT);
        let server_key =
            u64::from_be_bytes(synack[MPC_SENDER_KEY..MPC_SENDER_KEY + 8].try_into().ok()?);
        let seq = get32(synack, ACK); // the client's ISN + 1
        let ack = get32(synack, SEQ).wrapping_add(1);
        let len = self.mpc_ack.stamp(
            out,
            client,
            ip_at(synack, SRC),
            cport,
            get16(synack, SPORT),
            seq,
            ack,
        );
        out[MPC_SENDER_KEY..MPC_SENDER_KEY + 8]
            .copy_from_slice(&client_key(client, cport).to_be_bytes());
        out[MPC_RECEIVER_KEY..MPC_RECEIVER_KEY + 8].copy_from_slice(&server_key.to_be_bytes());
        finish(out, len);
        Some(len)
    }

    /// The MP_JOIN SYN of subflow `n`, naming `token`.
    #[inline]
    pub fn join(&self, out: &mut [u8], n: u64, token: u32, ts: u32) -> usize {
        let (src, sport) = endpoint(self.topo.join_base, n);
        let len = self
            .join
            .stamp(out, src, self.topo.vip, sport, self.topo.vip_port, ts, 0);
        put32(out, JOIN_TOKEN, token);
        finish(out, len);
        len
    }
}

/// The generator's server side: answers the MP_CAPABLE SYNs the gateway forwards to a backend.
#[derive(Debug, Clone)]
pub struct Responder {
    synack: Template,
}

impl Default for Responder {
    fn default() -> Self {
        let spec = TcpSpec::from_backend(
            0,
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            0,
            (tcp::TcpFlags::SYN.0) | (tcp::TcpFlags::ACK.0),
        )
        .with_mptcp(MptcpOpt::Capable(trapeze_wire::mptcp::MpCapable {
            version: 1,
            flags: MpcFlags::HMAC_SHA256,
            sender_key: Some(0),
            receiver_key: None,
            data_len: None,
            checksum: None,
        }));
        Self {
            synack: Template::new(&spec, Kind::SynAck),
        }
    }
}

impl Responder {
    /// The backend's SYN/ACK answering `syn` (an MP_CAPABLE SYN as the backend receives it,
    /// after the gateway's NAT), with the server key [`server_key`] of the client endpoint.
    /// `None` if `syn` is not an MP_CAPABLE SYN.
    #[inline]
    pub fn synack(&self, out: &mut [u8], syn: &[u8]) -> Option<usize> {
        if syn.len() < OPT + 4
            || syn[FLAGS] & 0x12 != 0x02
            || syn[OPT] != tcp::option_kind::MPTCP
            || syn[OPT + 2] >> 4 != 0
        {
            return None;
        }
        let client = ip_at(syn, SRC);
        let cport = get16(syn, SPORT);
        let len = self.synack.stamp(
            out,
            ip_at(syn, DST),
            client,
            get16(syn, DPORT),
            cport,
            get32(syn, SEQ) ^ 0x5a5a_5a5a,
            get32(syn, SEQ).wrapping_add(1),
        );
        // MACs: back to where the SYN came from.
        out[0..6].copy_from_slice(&syn[6..12]);
        out[6..12].copy_from_slice(&syn[0..6]);
        out[MPC_SENDER_KEY..MPC_SENDER_KEY + 8]
            .copy_from_slice(&server_key(client, cport).to_be_bytes());
        finish(out, len);
        Some(len)
    }
}

/// What a received frame is: its kind and, for client packets, the TSC stamp it carries.
/// `None` for frames the generator did not make.
#[inline]
pub fn classify(frame: &[u8]) -> Option<(Kind, u32)> {
    if frame.len() < OPT || frame[12] != 0x08 || frame[13] != 0x00 {
        return None;
    }
    let d = tunnel_len(frame);
    if frame.len() < OPT + d {
        return None;
    }
    let ident = get16(frame, IDENT + d);
    if ident & 0xff00 != IDENT_MARK {
        return None;
    }
    let kind = Kind::from_u8(ident as u8)?;
    Some((kind, get32(frame, SEQ + d)))
}

/// The GUE port a DSR gateway tunnels to (the gateway's default, `pool::Encap::Gue`).
pub const GUE_PORT: u16 = 6080;

/// Bytes of tunnel between the outer Ethernet header and the generator's own IPv4 packet when a
/// DSR gateway encapsulated it: 20 for IPIP (outer IPv4, protocol 4), 32 for GUE variant 0 over
/// UDP to [`GUE_PORT`] (outer IPv4, UDP, 4-byte GUE header carrying IPv4), else 0.
#[inline]
pub fn tunnel_len(frame: &[u8]) -> usize {
    if frame.len() < IP + 20 || frame[IP] != 0x45 {
        return 0;
    }
    match frame[IP + 9] {
        4 => 20,
        17 if frame.len() >= IP + 32
            && get16(frame, IP + 22) == GUE_PORT
            && frame[IP + 28] >> 6 == 0
            && frame[IP + 29] == 4 =>
        {
            32
        }
        _ => 0,
    }
}

/// The MP_JOIN template's option, for tests: a v1 SYN join with a token.
pub fn join_option(token: u32) -> MpJoin {
    match testkit::join_syn(token) {
        MptcpOpt::Join(j) => j,
        MptcpOpt::Capable(_) => unreachable!("join_syn builds MP_JOIN"),
    }
}

#[inline]
fn ip_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

#[inline]
fn get16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
fn get32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline]
fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline]
fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}
