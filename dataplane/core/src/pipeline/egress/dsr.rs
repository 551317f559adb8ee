//! DSR: a DSR VIP's packets go to their backend inside a tunnel, and the backend (which holds
//! the VIP on a loopback) answers the client directly. The gateway carries only the client ->
//! server direction. (How such a flow's MPTCP keys are learned without the server's packets is
//! the flow layer's: `pipeline/flow/mptcp.rs`.)
//!
//! ## Encapsulation
//!
//! ```text
//! in:   Ethernet (+802.1Q) | inner IP (client -> VIP) | TCP ...
//! out:  Ethernet (+802.1Q) | outer IP (src -> backend) [| UDP | GUE] | inner IP (TTL - 1) | TCP ...
//! ```
//!
//! * IPIP: IPv4 in IPv4 (protocol 4, RFC 2003) or IPv6 in IPv6 (next header 41, RFC 2473); the
//!   outer family is the VIP's.
//! * GUE (variant 0, draft-ietf-intarea-gue): UDP to the VIP's GUE port with a 4-byte GUE header
//!   naming the inner protocol. The UDP source port is hashed from the flow, so the servers' NIC
//!   RSS spreads flows over their queues. Over IPv4 the UDP checksum is 0 (RFC 768); over IPv6 it
//!   is computed, from headers only: the inner TCP (or ICMPv6) checksum already makes its segment
//!   sum to the complement of its pseudo-header, so the payload is never read (the "local
//!   checksum offload" identity, Linux `Documentation/networking/checksum-offloads.rst`).
//! * Outer source: the gateway's address on the egress port, or an address hashed from the flow
//!   inside a configured prefix (one source per flow, many per server).
//! * Outer TOS / traffic class copy the inner one (ECN included, RFC 6040 normal mode); the outer
//!   IPv6 flow label is hashed from the flow; outer TTL 64; IPv4 DF set.
//! * Room comes from the buffer's headroom (the frame moves no byte of the inner packet); the
//!   Ethernet header is rewritten in front of the outer header. Ethernet padding is trimmed.
//! * MTU: when the tunnel packet would exceed the egress port's MTU, the client gets an ICMP
//!   fragmentation needed (IPv4 with DF) or packet too big (IPv6) announcing the MTU less the
//!   tunnel overhead, rate-limited, and the packet is dropped (`dsr_too_big`). IPv4 without DF is
//!   dropped (`dsr_too_big`): the gateway does not fragment.
//!

use trapeze_wire::checksum;
use trapeze_wire::field::write_u16;
use trapeze_wire::gue;
use trapeze_wire::ip::IpProtocol;

use crate::flow::addr_bytes;
use crate::pipeline::context::Ctx;
use crate::pipeline::frame::Frame;
use crate::pipeline::parse::Ip;
use crate::pipeline::reply::{self, SenderError};
use crate::pipeline::verdict::{DropReason, Event, Verdict};
use crate::pool::{BackendId, Dsr, Encap, OuterSource, VipId};

/// Encapsulates a client's packet (or an ICMP error about one of the VIP's flows) to its backend.
/// The caller checked the TTL (> 1) and owns the flow.
#[allow(clippy::too_many_arguments)]
pub(crate) fn encapsulate<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &mut F,
    ip: &Ip,
    backend_id: BackendId,
    vip_id: VipId,
    dsr: &Dsr,
    hash: u64,
) -> Verdict {
    let Some(b) = cx.pool.fwd(backend_id) else {
        return Verdict::Drop(DropReason::BackendGone);
    };
    let Some(&dst) = b.addr(ip.v6) else {
        return Verdict::Drop(DropReason::BackendGone);
    };
    let Some(mac) = b.mac else {
        return Verdict::Drop(DropReason::NoNeighbour);
    };
    let src = match dsr.outer_source {
        OuterSource::Gateway => {
            let a = if ip.v6 {
                b.egress_addr6
            } else {
                b.egress_addr4
            };
            // PoolSnapshot::build checked that the egress port has one.
            let Some(a) = a else {
                return Verdict::Drop(DropReason::BackendGone);
            };
            a
        }
        OuterSource::Hashed { prefix, len } => hashed_source(&addr_bytes(prefix), len, ip.v6, hash),
    };
    let inner_len = ip.end - ip.l3;
    let overhead = dsr.encap.overhead(ip.v6);
    if inner_len + overhead > b.egress_mtu as usize {
        let df = ip.v6 || frame.data()[ip.l3 + 6] & 0x40 != 0;
        if ip.proto != IpProtocol::TCP.0 || !df {
            // Never an ICMP error about an ICMP error; no fragmentation.
            return Verdict::Drop(DropReason::DsrTooBig);
        }
        let mtu = (b.egress_mtu as usize).saturating_sub(overhead) as u16;
        return reply::error_to_sender(cx, frame, ip, SenderError::TooBig { mtu });
    }
    let (egress, egress_mac, vlan) = (b.egress, b.egress_mac, b.egress_vlan);

    // The inner packet is forwarded: TTL / hop limit - 1 (RFC 2003 §3.1).
    let tos = {
        let buf = frame.data_mut();
        let h = &mut buf[ip.l3..];
        if ip.v6 {
            h[7] -= 1;
            (h[0] << 4) | (h[1] >> 4)
        } else {
            h[8] -= 1;
            let c = checksum::update16(
                u16::from_be_bytes([h[10], h[11]]),
                (ip.ttl as u16) << 8 | ip.proto as u16,
                ((ip.ttl - 1) as u16) << 8 | ip.proto as u16,
            );
            write_u16(h, 10, c);
            h[1]
        }
    };

    // Room: the new Ethernet header and the tunnel headers replace the old Ethernet header.
    if !frame.set_len(ip.end) {
        return Verdict::Drop(DropReason::NoRoom);
    }
    let l2 = if vlan.is_some() { 18 } else { 14 };
    if !frame.prepend(l2 + overhead - ip.l3) {
        return Verdict::Drop(DropReason::NoRoom);
    }
    let buf = frame.data_mut();
    buf[0..6].copy_from_slice(&mac);
    buf[6..12].copy_from_slice(&egress_mac);
    let ethertype: u16 = if ip.v6 { 0x86dd } else { 0x0800 };
    if let Some(vid) = vlan {
        write_u16(buf, 12, 0x8100);
        write_u16(buf, 14, vid & 0x0fff);
    }
    write_u16(buf, l2 - 2, ethertype);

    let (ip_hdr, inner_proto) = if ip.v6 {
        (40, IpProtocol::IPV6)
    } else {
        (20, IpProtocol::IPIP)
    };
    let outer_proto = match dsr.encap {
        Encap::Ipip => inner_proto,
        Encap::Gue { .. } => IpProtocol::UDP,
    };
    let outer_len = inner_len + overhead;
    let o = l2;
    if ip.v6 {
        let label = (fold32(hash) & 0x000f_ffff).max(1);
        let h = &mut buf[o..o + 40];
        h[0] = 0x60 | (tos >> 4);
        h[1] = (tos << 4) | ((label >> 16) as u8 & 0x0f);
        write_u16(h, 2, label as u16);
        write_u16(h, 4, (outer_len - 40) as u16);
        h[6] = outer_proto.0;
        h[7] = 64;
        h[8..24].copy_from_slice(&src);
        h[24..40].copy_from_slice(&dst);
    } else {
        let h = &mut buf[o..o + 20];
        h[0] = 0x45;
        h[1] = tos;
        write_u16(h, 2, outer_len as u16);
        write_u16(h, 4, 0);
        write_u16(h, 6, 0x4000); // DF: the size was checked against the egress MTU
        h[8] = 64;
        h[9] = outer_proto.0;
        write_u16(h, 10, 0);
        h[12..16].copy_from_slice(&src[12..]);
        h[16..20].copy_from_slice(&dst[12..]);
        let c = checksum::finish(checksum::data(h));
        write_u16(h, 10, c);
    }
    if let Encap::Gue { port } = dsr.encap {
        let u = o + ip_hdr;
        let udp_len = (outer_len - ip_hdr) as u16;
        let sport = 0xc000 | (fold32(hash) as u16 & 0x3fff);
        write_u16(buf, u, sport);
        write_u16(buf, u + 2, port);
        write_u16(buf, u + 4, udp_len);
        write_u16(buf, u + 6, 0);
        gue::Packet::new_unchecked(&mut buf[u + 8..u + 12]).emit_data(inner_proto);
        if ip.v6 {
            // Inner upper-layer segment: its checksum makes it sum to ~pseudo-header(inner).
            let inner = u + 12;
            let (il4, iend) = (inner + (ip.l4 - ip.l3), inner + inner_len);
            let mut isrc = [0u8; 16];
            let mut idst = [0u8; 16];
            isrc.copy_from_slice(&buf[inner + 8..inner + 24]);
            idst.copy_from_slice(&buf[inner + 24..inner + 40]);
            let inner_pseudo =
                checksum::pseudo_header_v6(&isrc, &idst, ip.proto, (iend - il4) as u32);
            let sum = checksum::combine(&[
                checksum::pseudo_header_v6(&src, &dst, IpProtocol::UDP.0, udp_len as u32),
                checksum::data(&buf[u..il4]),
                !inner_pseudo,
            ]);
            let c = match checksum::finish(sum) {
                0 => 0xffff,
                c => c,
            };
            write_u16(buf, u + 6, c);
        }
    }

    cx.w.stats.event(Event::DsrEncapsulated);
    cx.w.stats
        .count_to_backend(vip_id, backend_id, inner_len as u64);
    Verdict::Forward { port: egress }
}

/// 64 -> 32 bits, mixing both halves.
#[inline]
fn fold32(h: u64) -> u32 {
    (h ^ (h >> 32)) as u32
}

/// An address inside `prefix/len` whose host bits come from the flow hash. IPv4 avoids the
/// all-zeros and all-ones host parts when the prefix has room for others.
fn hashed_source(prefix: &[u8; 16], len: u8, v6: bool, hash: u64) -> [u8; 16] {
    if v6 {
        let host_bits = 128 - u32::from(len.min(128));
        let mask: u128 = if host_bits >= 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        let mixed = crate::flow::fmix(hash);
        let host = ((mixed as u128) | ((hash as u128) << 64)) & mask;
        let base = u128::from_be_bytes(*prefix) & !mask;
        let host = if host == 0 && mask != 0 { 1 } else { host };
        (base | host).to_be_bytes()
    } else {
        let host_bits = 32 - u32::from(len.min(32));
        let mask: u32 = if host_bits >= 32 {
            u32::MAX
        } else {
            (1u32 << host_bits) - 1
        };
        let base = u32::from_be_bytes([prefix[12], prefix[13], prefix[14], prefix[15]]) & !mask;
        let h = fold32(hash);
        let host = if host_bits >= 2 {
            h % (mask - 1) + 1
        } else {
            h & mask
        };
        let mut out = *prefix;
        out[12..].copy_from_slice(&(base | host).to_be_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_sources_stay_inside_the_prefix() {
        let p4 = addr_bytes("10.91.1.0".parse().unwrap());
        for h in [0u64, 1, u64::MAX, 0xdead_beef_1234_5678] {
            let a = hashed_source(&p4, 24, false, h);
            assert_eq!(&a[..15], &p4[..15]);
            assert!(a[15] != 0 && a[15] != 255, "{a:?}");
            // /32: the address itself; /31: both addresses allowed.
            assert_eq!(hashed_source(&p4, 32, false, h), p4);
        }
        let p6 = addr_bytes("fd91:1::".parse().unwrap());
        let a = hashed_source(&p6, 64, true, 42);
        assert_eq!(&a[..8], &p6[..8]);
        assert_ne!(a, p6);
        assert_ne!(
            hashed_source(&p6, 64, true, 1),
            hashed_source(&p6, 64, true, 2)
        );
    }
}
