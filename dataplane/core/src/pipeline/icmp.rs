//! ICMP and ICMPv6: echo replies for VIPs and the gateway's addresses, IPv6 neighbour
//! advertisements, ICMP errors delivered to the backend of the flow they quote (catalogue
//! I1–I5), and the time-exceeded messages the gateway itself sends.
//!
//! An ICMP error about one of our flows is addressed to the VIP: the packet it quotes is one the
//! gateway sent to the client (source VIP). It goes to that flow's backend with the outer
//! destination and the quoted source rewritten to the backend, so the backend's stack matches it
//! to its socket (RFC 5927: the quote must match a live connection there). ICMP never creates
//! flow state. For a DSR VIP the backend holds the VIP itself: the error goes to it unchanged,
//! encapsulated like the VIP's packets.

use core::net::{Ipv4Addr, Ipv6Addr};

use trapeze_wire::field::{read_u16, write_u16, write_u32};
use trapeze_wire::ip::{parse_quoted_v4, parse_quoted_v6, IpProtocol};
use trapeze_wire::{checksum, ipv4, ipv6};

use super::ip::Ip;
use super::rewrite;
use super::{steer, Ctx, DropReason, Event, Frame, Verdict};
use crate::flow::{addr_bytes, FlowKey};

const ICMP_HEADER_LEN: usize = 8;
/// The largest quote in a generated ICMPv6 error: the IPv6 minimum MTU less the headers.
const V6_MAX_QUOTE: usize = 1280 - ipv6::HEADER_LEN - ICMP_HEADER_LEN;

fn is_ours(cx: &Ctx<'_>, addr: &[u8; 16]) -> bool {
    cx.pool.is_own_addr(cx.ingress, addr) || cx.pool.is_vip_addr(addr)
}

pub(super) fn icmpv4<F: Frame>(cx: &mut Ctx<'_>, frame: &mut F, ip: &Ip) -> Verdict {
    if cx.pool.is_vip_addr(&ip.src) {
        return Verdict::Drop(DropReason::MartianSource);
    }
    let msg = &frame.data()[ip.l4..ip.end];
    if msg.len() < ICMP_HEADER_LEN || checksum::data(msg) != 0xffff {
        return Verdict::Drop(DropReason::IcmpBad);
    }
    match msg[0] {
        8 if is_ours(cx, &ip.dst) => echo_reply(cx, frame, ip, 0),
        3 | 11 | 12 if cx.pool.is_vip_addr(&ip.dst) => {
            if msg[0] == 3 && msg[1] == 4 && read_u16(msg, 6) < 576 {
                cx.w.stats.event(Event::IcmpSmallMtu);
            }
            error_to_backend(cx, frame, ip)
        }
        _ if cx.pool.is_own_addr(cx.ingress, &ip.dst) => Verdict::Punt,
        _ if cx.pool.is_vip_addr(&ip.dst) => Verdict::Drop(DropReason::IcmpUnsupported),
        _ => Verdict::Drop(DropReason::NoVip),
    }
}

pub(super) fn icmpv6<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &mut F,
    ip: &Ip,
    l2_multicast: bool,
) -> Verdict {
    if cx.pool.is_vip_addr(&ip.src) {
        return Verdict::Drop(DropReason::MartianSource);
    }
    let msg = &frame.data()[ip.l4..ip.end];
    if msg.len() < ICMP_HEADER_LEN {
        return Verdict::Drop(DropReason::IcmpBad);
    }
    let (src, dst) = (Ipv6Addr::from(ip.src), Ipv6Addr::from(ip.dst));
    let pseudo = checksum::pseudo_header_v6(&ip.src, &ip.dst, 58, msg.len() as u32);
    if checksum::combine(&[pseudo, checksum::data(msg)]) != 0xffff {
        return Verdict::Drop(DropReason::IcmpBad);
    }
    let ty = msg[0];
    let nd = (133..=137).contains(&ty);
    if l2_multicast && !nd {
        return Verdict::Drop(DropReason::L2Multicast);
    }
    match ty {
        135 => neighbour_advert(cx, frame, ip, src),
        133 | 134 | 136 | 137 => {
            // RFC 4861 §7.1.1: ND messages arrive with hop limit 255, else they crossed a router.
            if ip.ttl != 255 {
                return Verdict::Drop(DropReason::IcmpBad);
            }
            Verdict::Punt
        }
        128 if is_ours(cx, &ip.dst) && !dst.is_multicast() => echo_reply(cx, frame, ip, 129),
        1..=4 if cx.pool.is_vip_addr(&ip.dst) => {
            if ty == 2 && u32::from_be_bytes([msg[4], msg[5], msg[6], msg[7]]) < 1280 {
                cx.w.stats.event(Event::IcmpSmallMtu);
            }
            error_to_backend(cx, frame, ip)
        }
        _ if cx.pool.is_own_addr(cx.ingress, &ip.dst) => Verdict::Punt,
        _ if cx.pool.is_vip_addr(&ip.dst) => Verdict::Drop(DropReason::IcmpUnsupported),
        _ => Verdict::Drop(DropReason::NoVip),
    }
}

/// Turns an echo request into its reply, in place.
fn echo_reply<F: Frame>(cx: &mut Ctx<'_>, frame: &mut F, ip: &Ip, reply_type: u8) -> Verdict {
    if !cx.w.icmp.take(cx.now) {
        return Verdict::Drop(DropReason::RateLimited);
    }
    let mac = cx.port.mac;
    let buf = frame.data_mut();
    let requester: [u8; 6] = buf[6..12].try_into().unwrap_or_default();
    rewrite::set_macs(buf, &mac, &requester);
    let l4 = ip.l4;
    let old = read_u16(buf, l4);
    buf[l4] = reply_type;
    let csum = checksum::update16(read_u16(buf, l4 + 2), old, read_u16(buf, l4));
    write_u16(buf, l4 + 2, csum);
    // Swapping the addresses leaves the IPv4 header and ICMPv6 pseudo-header sums unchanged.
    if ip.v6 {
        swap16(buf, ip.l3 + 8, ip.l3 + 24);
        buf[ip.l3 + 7] = 64;
    } else {
        let (s, d) = (ip.l3 + 12, ip.l3 + 16);
        for i in 0..4 {
            buf.swap(s + i, d + i);
        }
        let old_word = read_u16(buf, ip.l3 + 8);
        buf[ip.l3 + 8] = 64;
        let c = checksum::update16(
            read_u16(buf, ip.l3 + 10),
            old_word,
            read_u16(buf, ip.l3 + 8),
        );
        write_u16(buf, ip.l3 + 10, c);
    }
    Verdict::Reply { port: cx.ingress }
}

fn swap16(buf: &mut [u8], a: usize, b: usize) {
    for i in 0..16 {
        buf.swap(a + i, b + i);
    }
}

/// Answers a neighbour solicitation for one of our addresses or VIPs (RFC 4861 §7.2.4).
fn neighbour_advert<F: Frame>(cx: &mut Ctx<'_>, frame: &mut F, ip: &Ip, src: Ipv6Addr) -> Verdict {
    let msg = &frame.data()[ip.l4..ip.end];
    if ip.ttl != 255 || msg.len() < 24 || msg[1] != 0 || ip.l4 != ip.l3 + ipv6::HEADER_LEN {
        return Verdict::Drop(DropReason::IcmpBad);
    }
    let mut target = [0u8; 16];
    target.copy_from_slice(&msg[8..24]);
    if !is_ours(cx, &target) {
        return Verdict::Drop(DropReason::IcmpUnsupported);
    }
    if src.is_unspecified() {
        // Duplicate address detection by another node for our address: not answered here; the
        // runtime logs the conflict.
        return Verdict::Punt;
    }
    let mac = cx.port.mac;
    let (l3, l4) = (ip.l3, ip.l4);
    let requester: [u8; 6] = frame.data()[6..12].try_into().unwrap_or_default();
    const NA_LEN: usize = ICMP_HEADER_LEN + 16 + 8; // header, target, target link-layer option
    if !frame.set_len(l4 + NA_LEN) {
        return Verdict::Drop(DropReason::NoRoom);
    }
    let buf = frame.data_mut();
    rewrite::set_macs(buf, &mac, &requester);
    let mut hdr = ipv6::Packet::new_unchecked(&mut buf[l3..l3 + ipv6::HEADER_LEN]);
    hdr.set_payload_len(NA_LEN as u16);
    hdr.set_hop_limit(255);
    hdr.set_dst_addr(src);
    hdr.set_src_addr(Ipv6Addr::from(target));
    let na = &mut buf[l4..l4 + NA_LEN];
    na[0] = 136;
    na[1] = 0;
    write_u16(na, 2, 0);
    write_u32(na, 4, 0x6000_0000); // Solicited | Override
    na[8..24].copy_from_slice(&target);
    na[24] = 2; // Target Link-Layer Address
    na[25] = 1; // in units of 8 octets
    na[26..32].copy_from_slice(&mac);
    let pseudo = checksum::pseudo_header_v6(&target, &src.octets(), 58, NA_LEN as u32);
    let c = checksum::finish(checksum::combine(&[pseudo, checksum::data(na)]));
    write_u16(na, 2, c);
    Verdict::Reply { port: cx.ingress }
}

/// Delivers an ICMP error about one of our flows to that flow's backend (catalogue I1).
fn error_to_backend<F: Frame>(cx: &mut Ctx<'_>, frame: &mut F, ip: &Ip) -> Verdict {
    let quote_at = ip.l4 + ICMP_HEADER_LEN;
    let quote = &frame.data()[quote_at..ip.end];
    let q = if ip.v6 {
        parse_quoted_v6(quote)
    } else {
        parse_quoted_v4(quote)
    };
    let Ok(q) = q else {
        return Verdict::Drop(DropReason::IcmpNoFlow);
    };
    if q.protocol == IpProtocol::ICMP.0 || q.protocol == IpProtocol::ICMPV6.0 {
        return Verdict::Drop(DropReason::IcmpErrorAboutError);
    }
    // The quoted packet went VIP -> client: its source must be the VIP this error came to.
    let (qsrc, qdst) = (addr_bytes(q.src), addr_bytes(q.dst));
    let known = cx.pool.vip_for(&qsrc, q.src_port, 6).is_some()
        || cx.pool.join_target(&qsrc, q.src_port, 6).is_some();
    if q.protocol != 6 || qsrc != ip.dst || !known {
        return Verdict::Drop(DropReason::IcmpNoFlow);
    }
    let owner = steer(&qdst, q.dst_port, cx.w.workers);
    if owner != cx.w.id {
        return Verdict::Handoff { worker: owner };
    }
    let key = FlowKey {
        src: qdst,
        dst: qsrc,
        src_port: q.dst_port,
        dst_port: q.src_port,
        proto: 6,
    };
    let hash = cx.w.flows.hash(&key);
    let Some(idx) = cx.w.flows.lookup(&key, hash) else {
        return Verdict::Drop(DropReason::IcmpNoFlow);
    };
    let (backend_id, vip_id) = {
        let e = cx.w.flows.entry(idx);
        (e.backend, e.vip)
    };
    if let Some(d) = cx.pool.vip(vip_id).and_then(|v| v.mode.dsr()) {
        // DSR: the backend owns the VIP the quote names; the error goes to it unchanged, in
        // the VIP's tunnel (never a reply to an error: one too big for the tunnel is dropped).
        let d = *d;
        if ip.ttl <= 1 {
            return Verdict::Drop(DropReason::TtlExpired);
        }
        let v = super::dsr::encapsulate(cx, frame, ip, backend_id, vip_id, &d, hash);
        if matches!(v, Verdict::Forward { .. }) {
            cx.w.stats.event(Event::IcmpForwarded);
        }
        return v;
    }
    let Some(b) = cx.pool.backend(backend_id) else {
        return Verdict::Drop(DropReason::BackendGone);
    };
    let Some(addr) = b.addr(ip.v6) else {
        return Verdict::Drop(DropReason::BackendGone);
    };
    let (Some(mac), Some(port)) = (b.mac, cx.pool.port(b.egress)) else {
        return Verdict::Drop(DropReason::NoNeighbour);
    };
    if ip.ttl <= 1 {
        // Never an error about an error.
        return Verdict::Drop(DropReason::TtlExpired);
    }
    let baddr = addr_bytes(addr);
    let buf = frame.data_mut();
    // The quoted header: source address and port become the backend's.
    let q_l3 = quote_at;
    let q_l4 = quote_at + q.l4_offset;
    if ip.v6 {
        buf[q_l3 + 8..q_l3 + 24].copy_from_slice(&baddr);
    } else {
        let old = [
            buf[q_l3 + 12],
            buf[q_l3 + 13],
            buf[q_l3 + 14],
            buf[q_l3 + 15],
        ];
        let c = checksum::update_bytes(read_u16(buf, q_l3 + 10), &old, &baddr[12..]);
        write_u16(buf, q_l3 + 10, c);
        buf[q_l3 + 12..q_l3 + 16].copy_from_slice(&baddr[12..]);
    }
    write_u16(buf, q_l4, b.port);
    // The outer header: destination becomes the backend, TTL decremented.
    if ip.v6 {
        buf[ip.l3 + 24..ip.l3 + 40].copy_from_slice(&baddr);
        buf[ip.l3 + 7] -= 1;
    } else {
        let mut pkt = ipv4::Packet::new_unchecked(&mut buf[ip.l3..ip.l4]);
        pkt.set_dst_addr(Ipv4Addr::new(baddr[12], baddr[13], baddr[14], baddr[15]));
        pkt.set_hop_limit(ip.ttl - 1);
        pkt.fill_checksum();
    }
    // The ICMP checksum covers the quote (and, for ICMPv6, the pseudo-header): recompute it.
    let (l4, end) = (ip.l4, ip.end);
    write_u16(buf, l4 + 2, 0);
    let mut sum = checksum::data(&buf[l4..end]);
    if ip.v6 {
        let src: [u8; 16] = buf[ip.l3 + 8..ip.l3 + 24].try_into().unwrap_or_default();
        sum = checksum::combine(&[
            sum,
            checksum::pseudo_header_v6(&src, &baddr, 58, (end - l4) as u32),
        ]);
    }
    write_u16(buf, l4 + 2, checksum::finish(sum));
    rewrite::set_macs(buf, &port.mac, &mac);
    if !rewrite::retag(frame, cx.l2_len, port.vlan) {
        return Verdict::Drop(DropReason::NoRoom);
    }
    cx.w.stats.event(Event::IcmpForwarded);
    Verdict::Forward { port: b.egress }
}

/// What [`error_to_sender`] tells the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SenderError {
    /// TTL / hop limit exceeded in transit (RFC 1812 §5.3.1, RFC 4443 §3.3).
    TimeExceeded,
    /// The packet does not fit the next hop: fragmentation needed and DF set (RFC 1191) or
    /// packet too big (RFC 8201), with the MTU the sender should use.
    TooBig {
        /// The MTU to announce.
        mtu: u16,
    },
}

/// Replaces a packet whose TTL / hop limit ran out by an ICMP time exceeded to its sender,
/// rate-limited, from the gateway's address on the ingress port.
pub(super) fn time_exceeded<F: Frame>(cx: &mut Ctx<'_>, frame: &mut F, ip: &Ip) -> Verdict {
    error_to_sender(cx, frame, ip, SenderError::TimeExceeded)
}

/// Replaces a packet by an ICMP error to its sender (rate-limited, from the gateway's address on
/// the ingress port, quoting as much of the packet as RFC 792 / RFC 4443 ask). When no message
/// can be sent the packet is dropped with the error's reason.
pub(super) fn error_to_sender<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &mut F,
    ip: &Ip,
    kind: SenderError,
) -> Verdict {
    let (reason, event) = match kind {
        SenderError::TimeExceeded => (DropReason::TtlExpired, Event::TimeExceededSent),
        SenderError::TooBig { .. } => (DropReason::DsrTooBig, Event::DsrTooBigSent),
    };
    let own = if ip.v6 {
        cx.port.ipv6.first().map(|a| addr_bytes((*a).into()))
    } else {
        cx.port.ipv4.first().map(|a| addr_bytes((*a).into()))
    };
    let Some(own) = own else {
        return Verdict::Drop(reason);
    };
    if !cx.w.icmp.take(cx.now) {
        return Verdict::Drop(reason);
    }
    let quote_len = if ip.v6 {
        ip.len().min(V6_MAX_QUOTE)
    } else {
        (ip.l4 - ip.l3 + 8).min(ip.len())
    };
    let mut quote = [0u8; V6_MAX_QUOTE];
    quote[..quote_len].copy_from_slice(&frame.data()[ip.l3..ip.l3 + quote_len]);
    let ip_hdr = if ip.v6 {
        ipv6::HEADER_LEN
    } else {
        ipv4::HEADER_LEN
    };
    let l4 = ip.l3 + ip_hdr;
    let end = l4 + ICMP_HEADER_LEN + quote_len;
    if !frame.set_len(end) {
        return Verdict::Drop(DropReason::NoRoom);
    }
    let mac = cx.port.mac;
    let buf = frame.data_mut();
    let sender: [u8; 6] = buf[6..12].try_into().unwrap_or_default();
    rewrite::set_macs(buf, &mac, &sender);
    let payload_len = ICMP_HEADER_LEN + quote_len;
    if ip.v6 {
        ipv6::Repr {
            src_addr: Ipv6Addr::from(own),
            dst_addr: Ipv6Addr::from(ip.src),
            next_header: IpProtocol::ICMPV6,
            payload_len,
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0,
        }
        .emit(&mut ipv6::Packet::new_unchecked(&mut buf[ip.l3..l4]));
    } else {
        ipv4::Repr {
            src_addr: Ipv4Addr::new(own[12], own[13], own[14], own[15]),
            dst_addr: Ipv4Addr::new(ip.src[12], ip.src[13], ip.src[14], ip.src[15]),
            next_header: IpProtocol::ICMP,
            payload_len,
            hop_limit: 64,
            dscp_ecn: 0,
            ident: 0,
            dont_frag: false,
        }
        .emit(&mut ipv4::Packet::new_unchecked(&mut buf[ip.l3..l4]));
    }
    let msg = &mut buf[l4..end];
    msg[2..8].fill(0);
    match (kind, ip.v6) {
        // Hop limit / TTL exceeded in transit.
        (SenderError::TimeExceeded, true) => msg[..2].copy_from_slice(&[3, 0]),
        (SenderError::TimeExceeded, false) => msg[..2].copy_from_slice(&[11, 0]),
        // Packet too big: the MTU in the 32-bit field after the checksum.
        (SenderError::TooBig { mtu }, true) => {
            msg[..2].copy_from_slice(&[2, 0]);
            write_u32(msg, 4, mtu as u32);
        }
        // Destination unreachable, fragmentation needed: next-hop MTU in the low 16 bits.
        (SenderError::TooBig { mtu }, false) => {
            msg[..2].copy_from_slice(&[3, 4]);
            write_u16(msg, 6, mtu);
        }
    }
    msg[8..].copy_from_slice(&quote[..quote_len]);
    let mut sum = checksum::data(msg);
    if ip.v6 {
        sum = checksum::combine(&[
            sum,
            checksum::pseudo_header_v6(&own, &ip.src, 58, payload_len as u32),
        ]);
    }
    write_u16(msg, 2, checksum::finish(sum));
    cx.w.stats.event(event);
    Verdict::Reply { port: cx.ingress }
}
