//! The IP stage: validates the IPv4 or IPv6 header (catalogue rows 4a–4k, 6a–6j), finds the
//! upper-layer header, and dispatches by protocol.

use trapeze_wire::{ipv4, ipv6, Error};

use super::{icmp, nat, Ctx, DropReason, Event, Frame, Verdict};
use crate::flow::v4_mapped;

/// What the IP stage learned about a packet. Offsets are from the start of the frame and were
/// validated against its length.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ip {
    /// IPv6 (else IPv4).
    pub(crate) v6: bool,
    /// Offset of the IP header.
    pub(crate) l3: usize,
    /// Offset of the upper-layer header.
    pub(crate) l4: usize,
    /// End of the IP packet (Ethernet padding excluded).
    pub(crate) end: usize,
    /// Upper-layer protocol.
    pub(crate) proto: u8,
    /// Source address (key form).
    pub(crate) src: [u8; 16],
    /// Destination address (key form).
    pub(crate) dst: [u8; 16],
    /// TTL / hop limit on arrival.
    pub(crate) ttl: u8,
}

impl Ip {
    /// Length of the IP packet.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.end - self.l3
    }
}

pub(super) fn stage<F: Frame>(cx: &mut Ctx<'_>, frame: &mut F, v6: bool, l2_multicast: bool) -> Verdict {
    let parsed = if v6 {
        parse_v6(frame.data(), cx.l2_len)
    } else {
        parse_v4(cx, frame.data(), cx.l2_len)
    };
    let ip = match parsed {
        Ok(ip) => ip,
        Err(r) => return Verdict::Drop(r),
    };
    if martian(&ip) || cx.pool.is_vip_addr(&ip.src) {
        return Verdict::Drop(DropReason::MartianSource);
    }
    match ip.proto {
        6 if l2_multicast => Verdict::Drop(DropReason::L2Multicast),
        6 => nat::tcp(cx, frame, &ip),
        1 if !v6 => icmp::icmpv4(cx, frame, &ip),
        58 if v6 => icmp::icmpv6(cx, frame, &ip, l2_multicast),
        _ if cx.pool.is_own_addr(cx.ingress, &ip.dst) => Verdict::Punt,
        _ if cx.pool.is_vip_addr(&ip.dst) => Verdict::Drop(DropReason::NotTcp),
        _ => Verdict::Drop(DropReason::NoVip),
    }
}

fn parse_v4(cx: &mut Ctx<'_>, buf: &[u8], l3: usize) -> Result<Ip, DropReason> {
    let pkt = ipv4::Packet::new_checked(&buf[l3..]).map_err(|e| match e {
        Error::BadVersion => DropReason::IpBadVersion,
        Error::BadHeaderLen => DropReason::IpBadHeaderLen,
        _ => DropReason::IpBadLength,
    })?;
    if !pkt.verify_checksum() {
        return Err(DropReason::IpBadChecksum);
    }
    if pkt.is_fragment() {
        return Err(DropReason::Fragment);
    }
    let hl = pkt.header_len();
    if hl > ipv4::HEADER_LEN {
        match pkt.source_route() {
            Ok(false) => cx.w.stats.event(Event::Ipv4Options),
            Ok(true) => return Err(DropReason::SourceRoute),
            Err(_) => return Err(DropReason::IpBadHeaderLen),
        }
    }
    Ok(Ip {
        v6: false,
        l3,
        l4: l3 + hl,
        end: l3 + usize::from(pkt.total_len()),
        proto: pkt.next_header().0,
        src: v4_mapped(pkt.src_octets()),
        dst: v4_mapped(pkt.dst_octets()),
        ttl: pkt.hop_limit(),
    })
}

fn parse_v6(buf: &[u8], l3: usize) -> Result<Ip, DropReason> {
    let pkt = ipv6::Packet::new_checked(&buf[l3..]).map_err(|e| match e {
        Error::BadVersion => DropReason::IpBadVersion,
        _ => DropReason::IpBadLength,
    })?;
    let walk = ipv6::walk_extension_headers(pkt.payload(), pkt.next_header().0).map_err(|e| match e {
        Error::SourceRoute => DropReason::SourceRoute,
        _ => DropReason::Ipv6ExtHeader,
    })?;
    if let Some(f) = walk.fragment {
        // An atomic fragment (offset 0, no more fragments; RFC 6946) is a whole packet.
        if f.offset != 0 || f.more {
            return Err(DropReason::Fragment);
        }
    }
    let body = l3 + ipv6::HEADER_LEN;
    Ok(Ip {
        v6: true,
        l3,
        l4: body + walk.upper_offset,
        end: body + usize::from(pkt.payload_len()),
        proto: walk.upper_protocol,
        src: pkt.src_octets(),
        dst: pkt.dst_octets(),
        ttl: pkt.hop_limit(),
    })
}

/// Martian sources (RFC 1812 §5.3.7; RFC 4291): never a client.
fn martian(ip: &Ip) -> bool {
    let s = &ip.src;
    if ip.v6 {
        s.iter().all(|&b| b == 0)                                 // ::
            || (s[..15].iter().all(|&b| b == 0) && s[15] == 1)    // ::1
            || s[0] == 0xff // multicast
    } else {
        let a = s[12];
        a == 0 || a == 127 || a >= 224
    }
}
