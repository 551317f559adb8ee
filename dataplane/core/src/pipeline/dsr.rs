//! Direct server return: a DSR VIP's packets go to their backend inside a tunnel, and the backend
//! (which holds the VIP on a loopback) answers the client directly. The gateway carries only the
//! client -> server direction.
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
//! ## MPTCP without the server's packets
//!
//! In NAT mode the token comes from the backend's SYN/ACK, the trusted side. In DSR the gateway
//! never sees the server's packets: the first MPTCP packet with the server's key is the client's
//! MP_CAPABLE third ACK (or, if that was lost, its first data segment), which carries both keys.
//! A client can put any key there, so learning is tightened:
//!
//! 1. Only from the first segment after the SYN: its sequence number must be the SYN's + 1 (plus
//!    any Fast Open data; the flow entry keeps it while the handshake runs), and only while the
//!    flow is half-open. A segment with another sequence number is counted and leaves the flow
//!    half-open, so an off-path attacker can neither inject a key into someone else's handshake
//!    nor close its learning window without guessing the client's initial sequence number.
//! 2. Only from a segment whose TCP checksum verifies (T14), with both keys present.
//! 3. **First owner wins** ([`TokenTable::claim`](crate::tables::token::TokenTable::claim)): a
//!    token already owned by another backend's connection is refused and counted
//!    (`token_claim_refused`). A client that searches a key whose token matches a live
//!    connection's (2^32 SHA-256 evaluations) can neither steal that connection's joins nor make
//!    its token ambiguous; it can only spoil its own joins, which then follow the first owner.
//!
//! A genuine collision (two servers picking keys with equal tokens, ~1e-4 per million live
//! connections) therefore keeps the first connection's joins working and sends the second's to
//! the first owner. That server knows the token, so it answers with its own connection's HMAC;
//! the client rejects it (`MPJoinSynAckHMacFailure`) and resets that join (measured through the
//! daemon by `testbed/e2e-collide.sh --wrong-owner`). The second connection goes on over its
//! first subflow.

use trapeze_wire::checksum;
use trapeze_wire::field::write_u16;
use trapeze_wire::gue;
use trapeze_wire::ip::IpProtocol;

use super::icmp::{self, SenderError};
use super::ip::Ip;
use super::nat::{l4_checksum_ok, scan, Seg};
use super::{Ctx, DropReason, Event, Frame, Verdict};
use crate::crypto;
use crate::flow::addr_bytes;
use crate::pool::{BackendId, Dsr, Encap, OuterSource, VipId};
use crate::tables::flow_table::{flags, FlowEntry};
use crate::tables::token::{LearnOutcome, Owner};

/// The TCP sequence number of a validated segment.
#[inline]
pub(super) fn tcp_seq<F: Frame>(frame: &F, ip: &Ip) -> u32 {
    let d = frame.data();
    u32::from_be_bytes([d[ip.l4 + 4], d[ip.l4 + 5], d[ip.l4 + 6], d[ip.l4 + 7]])
}

/// The sequence number of the segment that follows a SYN: the SYN's + 1 + its payload (TCP Fast
/// Open puts data in the SYN).
#[inline]
pub(super) fn seq_after_syn<F: Frame>(frame: &F, ip: &Ip) -> u32 {
    let d = frame.data();
    let hl = ((d[ip.l4 + 12] >> 4) as usize) * 4;
    let payload = ip.end.saturating_sub(ip.l4 + hl) as u32;
    tcp_seq(frame, ip).wrapping_add(1).wrapping_add(payload)
}

/// Encapsulates a client's packet (or an ICMP error about one of the VIP's flows) to its backend.
/// The caller checked the TTL (> 1) and owns the flow.
#[allow(clippy::too_many_arguments)]
pub(super) fn encapsulate<F: Frame>(
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
        return icmp::error_to_sender(cx, frame, ip, SenderError::TooBig { mtu });
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

    let stats = &mut cx.w.stats;
    stats.event(Event::DsrEncapsulated);
    let bytes = inner_len as u64;
    if let Some(c) = stats.vips.get_mut(vip_id.0 as usize) {
        c.packets += 1;
        c.bytes += bytes;
    }
    if let Some(c) = stats.backends.get_mut(backend_id.0 as usize) {
        c.packets += 1;
        c.bytes += bytes;
    }
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

/// The client's MP_CAPABLE third ACK (or first data segment) on a half-open DSR flow: learn the
/// token from the keys it carries, under the rules in the module documentation. `e.token` holds
/// the sequence number expected after the SYN until a token replaces it. Returns false, changing
/// nothing, when the segment is not that one (an injected or reordered segment must not end the
/// learning window) or its checksum fails (the endpoint discards it too; the retransmission is
/// judged); the flow then stays half-open.
pub(super) fn learn_from_client<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &F,
    ip: &Ip,
    seg: &Seg,
    e: &mut FlowEntry,
) -> bool {
    if tcp_seq(frame, ip) != e.token {
        cx.w.stats.event(Event::MpcAckOutOfSequence);
        return false;
    }
    let s = scan(cx, frame, seg);
    let Some(capable) = s.capable else {
        // RFC 8684 §3.1: no MP_CAPABLE in the third ACK: the connection is plain TCP.
        cx.w.stats.event(Event::MpcFallback);
        e.flags &= !flags::MPC_SYN;
        e.token = 0;
        return true;
    };
    let (Some(client_key), Some(server_key)) = (capable.sender_key, capable.receiver_key) else {
        cx.w.stats.event(Event::MpcFallback);
        e.token = 0;
        return true;
    };
    if !l4_checksum_ok(frame, ip) {
        cx.w.stats.event(Event::BadL4ChecksumNotLearned);
        return false;
    }
    let token = crypto::token_from_key(server_key);
    let owner = Owner::new(e.backend, e.key, server_key, Some(client_key), cx.now);
    e.token = 0;
    let ev = match cx.shared.tokens.claim(token, owner) {
        // AlreadyKnown: the table counted this entry as one more reference.
        LearnOutcome::Inserted | LearnOutcome::AlreadyKnown => Event::TokenLearnedFromClient,
        LearnOutcome::Reused => Event::TokenReused,
        LearnOutcome::Refused | LearnOutcome::Collision => {
            cx.w.stats.event(Event::TokenClaimRefused);
            return true;
        }
        LearnOutcome::TableFull | LearnOutcome::OwnersFull => {
            cx.w.stats.event(Event::TokenTableFull);
            return true;
        }
    };
    cx.w.stats.event(ev);
    e.token = token;
    e.flags |= flags::TOKEN_REF | flags::CONFIRMED;
    super::announce::start(cx, frame, ip, e);
    true
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
