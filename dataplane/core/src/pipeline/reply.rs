//! Reply: frames the gateway answers itself, turned around in place and sent back on the ingress
//! port. ARP replies for our addresses and VIPs (and the judgment of ARP replies before the
//! runtime's neighbour cache learns from them), IPv6 neighbour advertisements, ICMP echo replies,
//! and the ICMP errors the gateway sends to a packet's sender (time exceeded; fragmentation
//! needed / packet too big for a DSR tunnel). Generated ICMP is rate-limited per worker.

use core::net::{Ipv4Addr, Ipv6Addr};

use trapeze_wire::field::{read_u16, write_u16, write_u32};
use trapeze_wire::ip::IpProtocol;
use trapeze_wire::{arp, checksum, ethernet, ipv4, ipv6};

use super::context::Ctx;
use super::frame::{set_macs, Frame};
use super::parse::{Ip, ICMP_HEADER_LEN};
use super::verdict::{DropReason, Event, Verdict};
use crate::flow::addr_bytes;

/// The largest quote in a generated ICMPv6 error: the IPv6 minimum MTU less the headers.
const V6_MAX_QUOTE: usize = 1280 - ipv6::HEADER_LEN - ICMP_HEADER_LEN;

/// Turns an echo request into its reply, in place.
pub(crate) fn echo<F: Frame>(cx: &mut Ctx<'_>, frame: &mut F, ip: &Ip, reply_type: u8) -> Verdict {
    if !cx.w.icmp.take(cx.now) {
        return Verdict::Drop(DropReason::RateLimited);
    }
    let mac = cx.port.mac;
    let buf = frame.data_mut();
    let requester: [u8; 6] = buf[6..12].try_into().unwrap_or_default();
    set_macs(buf, &mac, &requester);
    let l4 = ip.l4;
    let old = read_u16(buf, l4);
    buf[l4] = reply_type;
    let mut csum = checksum::update16(read_u16(buf, l4 + 2), old, read_u16(buf, l4));
    if csum == 0 && !ip.v6 {
        // RFC 1624's update yields -0 (0x0000) where the message is all zero (type 0, code 0,
        // identifier 0, sequence 0, no payload), whose checksum is +0 written as 0xffff (a
        // receiver adding the words gets 0 instead of 0xffff and drops it). Recomputing is
        // exact either way; it is rare (one reply in 65536), and replies are rate-limited.
        write_u16(buf, l4 + 2, 0);
        csum = checksum::finish(checksum::data(&buf[l4..ip.end]));
    }
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
pub(crate) fn neighbour_advert<F: Frame>(cx: &mut Ctx<'_>, frame: &mut F, ip: &Ip) -> Verdict {
    let src = Ipv6Addr::from(ip.src);
    let msg = &frame.data()[ip.l4..ip.end];
    if ip.ttl != 255 || msg.len() < 24 || msg[1] != 0 || ip.l4 != ip.l3 + ipv6::HEADER_LEN {
        return Verdict::Drop(DropReason::IcmpBad);
    }
    let mut target = [0u8; 16];
    target.copy_from_slice(&msg[8..24]);
    if !(cx.pool.is_own_addr(cx.ingress, &target) || cx.pool.is_vip_addr(&target)) {
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
    set_macs(buf, &mac, &requester);
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

/// What [`error_to_sender`] tells the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SenderError {
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
pub(crate) fn time_exceeded<F: Frame>(cx: &mut Ctx<'_>, frame: &mut F, ip: &Ip) -> Verdict {
    error_to_sender(cx, frame, ip, SenderError::TimeExceeded)
}

/// Replaces a packet by an ICMP error to its sender (rate-limited, from the gateway's address on
/// the ingress port, quoting as much of the packet as RFC 792 / RFC 4443 ask). When no message
/// can be sent the packet is dropped with the error's reason.
pub(crate) fn error_to_sender<F: Frame>(
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
    set_macs(buf, &mac, &sender);
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

/// ARP: answer requests for our addresses and VIPs; punt replies (neighbour learning is the
/// runtime's) unless they would poison it; drop the rest.
///
/// A reply (gratuitous or not) that claims one of the gateway's addresses or VIPs, or a backend's
/// address on a port other than that backend's egress port, is dropped as `arp_spoof` (L5): the
/// runtime never learns a neighbour from it. Requests are answered, never learned from.
pub(crate) fn arp<F: Frame>(cx: &mut Ctx<'_>, frame: &mut F) -> Verdict {
    let l2_len = cx.l2_len;
    let buf = frame.data_mut();
    let Ok(mut pkt) = arp::Packet::new_checked(&mut buf[l2_len..]) else {
        return Verdict::Drop(DropReason::ArpBad);
    };
    match pkt.operation() {
        arp::Operation::Request => {
            let target = crate::flow::v4_mapped(pkt.target_protocol_addr());
            if !(cx.pool.is_own_addr(cx.ingress, &target) || cx.pool.is_vip_addr(&target)) {
                return Verdict::Drop(DropReason::ArpNotOurs);
            }
            let mac = ethernet::MacAddr(cx.port.mac);
            let requester = pkt.source_hardware_addr();
            arp::make_reply_in_place(&mut pkt, mac);
            set_macs(buf, &cx.port.mac, &requester.0);
            Verdict::Reply { port: cx.ingress }
        }
        arp::Operation::Reply => {
            let sender = crate::flow::v4_mapped(pkt.source_protocol_addr());
            let p = cx.pool;
            let ours = p.ports.iter().any(|port| p.is_own_addr(port.id, &sender))
                || p.is_vip_addr(&sender);
            let wrong_port = || {
                p.backends.iter().flatten().any(|b| {
                    b.ipv4.map(|a| a.octets()) == Some(pkt.source_protocol_addr())
                        && b.egress != cx.ingress
                })
            };
            if ours || wrong_port() {
                return Verdict::Drop(DropReason::ArpSpoof);
            }
            Verdict::Punt
        }
        _ => Verdict::Drop(DropReason::ArpBad),
    }
}
