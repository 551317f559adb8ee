//! Classify: what a parsed packet is for, from the pool snapshot alone (no table is touched and
//! nothing is counted). A TCP segment is towards a VIP (its port or a join port), back from a
//! backend, for the gateway itself, or for nobody; an ICMP message is an echo request, neighbour
//! discovery, an error about one of our flows, or none of these.
//!
//! ## Direction
//!
//! A TCP packet is *client -> VIP* when its destination is a VIP endpoint, *backend -> client*
//! when its source is a backend endpoint (the pool's reverse map). Both directions name the same
//! flow, keyed by the client-side 5-tuple, so the return path finds the state the forward path
//! created; its flow-table hash (keyed with the table's secret, `FlowSecret`) is computed here,
//! once. A new flow also takes the fixed hash, for Maglev.

use trapeze_wire::field::read_u16;
use trapeze_wire::ip::{parse_quoted_v4, parse_quoted_v6, IpProtocol};

use super::parse::{self, DataV4, Headers, Ip, Seg, ICMP_HEADER_LEN};
use super::verdict::{DropReason, Verdict};
use crate::flow::{addr_bytes, v4_mapped, FlowKey, FlowSecret, TcpV4Keys};
use crate::pool::{BackendId, PoolSnapshot, PortId, VipId};

/// Which way a VIP's packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Client -> VIP (its own port or a join port).
    ToVip,
    /// Backend -> client (the NAT return path).
    FromBackend,
}

/// A TCP segment of a VIP's flow: its headers, its direction, and the key of its flow (always the
/// client-side 5-tuple) with that key's flow-table hash under `secret`, computed once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Classified {
    pub(crate) ip: Ip,
    pub(crate) seg: Seg,
    pub(crate) dir: Direction,
    pub(crate) vip: VipId,
    /// The backend the packet's endpoint names: towards a stateless join port, that port's
    /// backend; from a backend, the backend itself. `None` towards the VIP's own port.
    pub(crate) backend: Option<BackendId>,
    pub(crate) key: FlowKey,
    pub(crate) hash: u64,
}

/// Classifies a TCP segment as client -> VIP (its port or a join port) or backend -> client;
/// `None` when it is neither ([`not_for_a_vip`] then says what becomes of it).
#[inline]
pub(crate) fn tcp(pool: &PoolSnapshot, secret: FlowSecret, h: &Headers) -> Option<Classified> {
    let (ip, seg) = (&h.ip, &h.seg);
    let client_side = FlowKey {
        src: ip.src,
        dst: ip.dst,
        src_port: seg.src_port,
        dst_port: seg.dst_port,
        proto: 6,
    };
    // Order: the VIP's own port, the NAT return path, then join ports, so that a return packet
    // pays no join-port lookup (a join port's subflow pays one more than the VIP's port).
    let (dir, vip, backend, key) = if let Some(vip) = pool.vip_for(&ip.dst, seg.dst_port, 6) {
        (Direction::ToVip, vip, None, client_side)
    } else if pool.is_gateway_addr(&ip.dst) {
        // Traffic a backend sends to the gateway itself (answers to health probes) is not a
        // return path to a client: it is punted.
        return None;
    } else if let Some((vip, b)) = pool.backend_endpoint(&ip.src, seg.src_port, 6) {
        let (vip_addr, vip_port) = pool.vip_endpoint(vip)?;
        let key = FlowKey {
            src: ip.dst,
            dst: vip_addr,
            src_port: seg.dst_port,
            dst_port: vip_port,
            proto: 6,
        };
        (Direction::FromBackend, vip, Some(b), key)
    } else {
        let (vip, b) = pool.join_target(&ip.dst, seg.dst_port, 6)?;
        (Direction::ToVip, vip, Some(b), client_side)
    };
    Some(Classified {
        ip: *ip,
        seg: *seg,
        dir,
        vip,
        backend,
        hash: key.keyed_hash(secret),
        key,
    })
}

/// An IPv4 segment towards a NAT VIP's own port, as the established fast path sees it: the
/// parsed headers, the VIP, and the hash of the flow key (the one hash of the packet). Small, so
/// that a burst's worth is cheap to keep between the passes of `process_burst`; the key itself
/// is rebuilt from the headers when it is needed ([`ToVipV4::key`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ToVipV4 {
    pub(crate) d: DataV4,
    pub(crate) vip: VipId,
    pub(crate) hash: u64,
}

impl ToVipV4 {
    /// The flow key (client -> VIP).
    #[inline(always)]
    pub(crate) fn key(&self) -> FlowKey {
        FlowKey {
            src: v4_mapped(self.d.src()),
            dst: v4_mapped(self.d.dst()),
            src_port: self.d.src_port(),
            dst_port: self.d.dst_port(),
            proto: 6,
        }
    }
}

/// Classifies what [`parse::data_v4`] accepted: towards a NAT VIP's own port, or `None` (a DSR
/// VIP, a join port, the return path, nothing of ours: [`tcp`] decides those).
#[inline(always)]
pub(crate) fn to_vip_v4(pool: &PoolSnapshot, keys: TcpV4Keys, d: &DataV4) -> Option<ToVipV4> {
    // The destination address and port as they lie in the frame: the pool's packed word.
    let endpoint = (d.addrs >> 32) | (u64::from(d.ports >> 16) << 32);
    let vip = pool.nat_vip_for_v4_word(endpoint)?;
    Some(ToVipV4 {
        d: *d,
        vip,
        hash: keys.hash(d.addrs, d.ports),
    })
}

/// The classification [`tcp`] makes of the same packet, from the fast parser's headers and
/// the key and hash [`to_vip_v4`] computed (for the general path after a fast-path miss: the
/// packet is not hashed twice).
#[inline]
pub(crate) fn to_vip_v4_full(h: &Headers, p: &ToVipV4) -> Classified {
    Classified {
        ip: h.ip,
        seg: h.seg,
        dir: Direction::ToVip,
        vip: p.vip,
        backend: None,
        key: p.key(),
        hash: p.hash,
    }
}

/// What becomes of a TCP segment [`tcp`] did not classify: punted when it is for the gateway's
/// own address, else dropped.
pub(crate) fn not_for_a_vip(pool: &PoolSnapshot, ingress: PortId, ip: &Ip) -> Verdict {
    if pool.is_own_addr(ingress, &ip.dst) {
        Verdict::Punt
    } else {
        Verdict::Drop(no_vip(pool, ingress))
    }
}

/// The drop reason for a packet that is for no VIP, no backend return path and not the gateway:
/// on a port that no VIP takes clients on (the backend side), its source pretends to be a backend
/// but is not one (I7, anti-spoofing); elsewhere it is simply not for us. Drop path only.
pub(crate) fn no_vip(pool: &PoolSnapshot, ingress: PortId) -> DropReason {
    if pool.vips.iter().flatten().any(|v| v.client_port == ingress) {
        DropReason::NoVip
    } else {
        DropReason::NotFromBackend
    }
}

/// What an IP packet carries, as far as the gateway is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Upper {
    /// TCP: parse the segment and classify it ([`tcp`]).
    Tcp,
    /// ICMP or ICMPv6: classify the message ([`icmp`]).
    Icmp,
    /// Nothing more to look at.
    Done(Verdict),
}

/// Dispatches an IP packet by protocol (4k, 6d, L9).
pub(crate) fn upper(pool: &PoolSnapshot, ingress: PortId, ip: &Ip, l2_multicast: bool) -> Upper {
    match ip.proto {
        // Neighbour discovery is the only IP the gateway takes from a group address (L9).
        58 if ip.v6 => Upper::Icmp,
        _ if l2_multicast => Upper::Done(Verdict::Drop(DropReason::L2Multicast)),
        6 => Upper::Tcp,
        1 if !ip.v6 => Upper::Icmp,
        _ if pool.is_own_addr(ingress, &ip.dst) => Upper::Done(Verdict::Punt),
        // 6d: an extension header the walk does not cross is refused as one, not as a protocol.
        p if ip.v6 && parse::unsupported_ext_header(p) => {
            Upper::Done(Verdict::Drop(DropReason::Ipv6ExtHeader))
        }
        _ if pool.is_vip_addr(&ip.dst) => Upper::Done(Verdict::Drop(DropReason::NotTcp)),
        _ => Upper::Done(Verdict::Drop(no_vip(pool, ingress))),
    }
}

/// What an ICMP or ICMPv6 message asks of the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Icmp {
    /// An echo request to a VIP or one of our addresses: answer it with this type.
    Echo {
        /// ICMP type of the reply (0, or 129 for ICMPv6).
        reply_type: u8,
    },
    /// An IPv6 neighbour solicitation: answer it if it asks for one of our addresses or VIPs.
    NeighbourSolicitation,
    /// An error addressed to a VIP: it quotes a packet of one of our flows, whose backend gets it.
    Error {
        /// A packet too big / fragmentation needed announcing an MTU below the minimum (I4).
        small_mtu: bool,
    },
    /// Nothing more to look at.
    Done(Verdict),
}

/// Classifies an ICMP or ICMPv6 message (catalogue I1–I5), its checksum checked by
/// [`parse::icmpv4`] / [`parse::icmpv6`].
pub(crate) fn icmp(
    pool: &PoolSnapshot,
    ingress: PortId,
    data: &[u8],
    ip: &Ip,
    l2_multicast: bool,
) -> Icmp {
    if pool.is_vip_addr(&ip.src) {
        return Icmp::Done(Verdict::Drop(DropReason::MartianSource));
    }
    let msg = match if ip.v6 {
        parse::icmpv6(data, ip)
    } else {
        parse::icmpv4(data, ip)
    } {
        Ok(msg) => msg,
        Err(r) => return Icmp::Done(Verdict::Drop(r)),
    };
    let ours = |a: &[u8; 16]| pool.is_own_addr(ingress, a) || pool.is_vip_addr(a);
    let (ty, code) = (msg[0], msg[1]);
    let known = if ip.v6 {
        let nd = (133..=137).contains(&ty);
        if l2_multicast && !nd {
            return Icmp::Done(Verdict::Drop(DropReason::L2Multicast));
        }
        match ty {
            135 => Some(Icmp::NeighbourSolicitation),
            133 | 134 | 136 | 137 => {
                // RFC 4861 §7.1.1: ND messages arrive with hop limit 255, else they crossed a
                // router.
                Some(Icmp::Done(if ip.ttl != 255 {
                    Verdict::Drop(DropReason::IcmpBad)
                } else {
                    Verdict::Punt
                }))
            }
            128 if ours(&ip.dst) && ip.dst[0] != 0xff => Some(Icmp::Echo { reply_type: 129 }),
            1..=4 if pool.is_vip_addr(&ip.dst) => Some(Icmp::Error {
                small_mtu: ty == 2 && u32::from_be_bytes([msg[4], msg[5], msg[6], msg[7]]) < 1280,
            }),
            _ => None,
        }
    } else {
        match ty {
            8 if ours(&ip.dst) => Some(Icmp::Echo { reply_type: 0 }),
            3 | 11 | 12 if pool.is_vip_addr(&ip.dst) => Some(Icmp::Error {
                small_mtu: ty == 3 && code == 4 && read_u16(msg, 6) < 576,
            }),
            _ => None,
        }
    };
    known.unwrap_or_else(|| {
        Icmp::Done(if pool.is_own_addr(ingress, &ip.dst) {
            Verdict::Punt
        } else if pool.is_vip_addr(&ip.dst) {
            Verdict::Drop(DropReason::IcmpUnsupported)
        } else {
            Verdict::Drop(DropReason::NoVip)
        })
    })
}

/// The flow an ICMP error about one of our flows quotes: the quoted packet went VIP -> client.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Quoted {
    /// The flow's key (client-side 5-tuple) and its hash.
    pub(crate) key: FlowKey,
    pub(crate) hash: u64,
    /// Offsets of the quoted IP header and of its upper-layer header within the frame.
    pub(crate) l3: usize,
    pub(crate) l4: usize,
}

/// Reads the packet an ICMP error quotes (I1–I3). The error must have come to the VIP the quote
/// was sent from, about TCP.
pub(crate) fn quoted(
    pool: &PoolSnapshot,
    secret: FlowSecret,
    data: &[u8],
    ip: &Ip,
) -> Result<Quoted, DropReason> {
    let quote_at = ip.l4 + ICMP_HEADER_LEN;
    let quote = &data[quote_at..ip.end];
    let q = if ip.v6 {
        parse_quoted_v6(quote)
    } else {
        parse_quoted_v4(quote)
    };
    let Ok(q) = q else {
        return Err(DropReason::IcmpNoFlow);
    };
    if q.protocol == IpProtocol::ICMP.0 || q.protocol == IpProtocol::ICMPV6.0 {
        return Err(DropReason::IcmpErrorAboutError);
    }
    // The quoted packet went VIP -> client: its source must be the VIP this error came to.
    let (qsrc, qdst) = (addr_bytes(q.src), addr_bytes(q.dst));
    let known = pool.vip_for(&qsrc, q.src_port, 6).is_some()
        || pool.join_target(&qsrc, q.src_port, 6).is_some();
    if q.protocol != 6 || qsrc != ip.dst || !known {
        return Err(DropReason::IcmpNoFlow);
    }
    let key = FlowKey {
        src: qdst,
        dst: qsrc,
        src_port: q.dst_port,
        dst_port: q.src_port,
        proto: 6,
    };
    Ok(Quoted {
        key,
        hash: key.keyed_hash(secret),
        l3: quote_at,
        l4: quote_at + q.l4_offset,
    })
}
