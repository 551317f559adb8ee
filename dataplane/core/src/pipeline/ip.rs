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

/// The fast parser: untagged IPv4 without options or IPv6 without extension headers, carrying a
/// well-formed TCP segment, read from a fixed-size header (no bounds check per field). It accepts
/// a packet only if the full parser ([`stage`] and [`nat::parse_seg`]) would accept it with the
/// same result, and returns `None` for everything else, which then takes the full walk (and gets
/// its precise drop reason there). The decisions after parsing are the same code for both.
#[inline]
pub(super) fn fast_parse(d: &[u8]) -> Option<(Ip, nat::Seg)> {
    if d.first()? & 1 != 0 {
        return None; // group destination MAC (L9)
    }
    let (ip, l4) = match d.get(12..14)? {
        [0x08, 0x00] => {
            let h: &[u8; 54] = d.first_chunk()?;
            let total = u16::from_be_bytes([h[16], h[17]]) as usize;
            if h[14] != 0x45
                || total < 40
                || 14 + total > d.len()
                || h[23] != 6
                || h[20] & 0x3f != 0
                || h[21] != 0
            {
                return None;
            }
            let mut sum = 0u32;
            for i in 0..10 {
                sum += u16::from_be_bytes([h[14 + 2 * i], h[15 + 2 * i]]) as u32;
            }
            sum = (sum & 0xffff) + (sum >> 16);
            sum = (sum & 0xffff) + (sum >> 16);
            if sum != 0xffff {
                return None;
            }
            let ip = Ip {
                v6: false,
                l3: 14,
                l4: 34,
                end: 14 + total,
                proto: 6,
                src: v4_mapped([h[26], h[27], h[28], h[29]]),
                dst: v4_mapped([h[30], h[31], h[32], h[33]]),
                ttl: h[22],
            };
            (ip, 34)
        }
        [0x86, 0xdd] => {
            let h: &[u8; 74] = d.first_chunk()?;
            let payload = u16::from_be_bytes([h[18], h[19]]) as usize;
            if h[14] >> 4 != 6 || h[20] != 6 || payload < 20 || 54 + payload > d.len() {
                return None;
            }
            let mut src = [0u8; 16];
            let mut dst = [0u8; 16];
            src.copy_from_slice(&h[22..38]);
            dst.copy_from_slice(&h[38..54]);
            let ip = Ip {
                v6: true,
                l3: 14,
                l4: 54,
                end: 54 + payload,
                proto: 6,
                src,
                dst,
                ttl: h[21],
            };
            (ip, 54)
        }
        _ => return None,
    };
    if martian(&ip) {
        return None;
    }
    let t: &[u8; 20] = d.get(l4..)?.first_chunk()?;
    let hl = (t[12] >> 4) as usize * 4;
    let seg = nat::Seg {
        src_port: u16::from_be_bytes([t[0], t[1]]),
        dst_port: u16::from_be_bytes([t[2], t[3]]),
        flags: trapeze_wire::tcp::TcpFlags(t[13]),
        opt_at: l4 + 20,
        opt_len: hl.wrapping_sub(20),
        has_payload: ip.end > l4 + hl,
    };
    if hl < 20
        || l4 + hl > ip.end
        || seg.src_port == 0
        || seg.dst_port == 0
        || nat::bad_flags(t[13])
    {
        return None;
    }
    Some((ip, seg))
}

pub(super) fn stage<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &mut F,
    v6: bool,
    l2_multicast: bool,
) -> Verdict {
    let parsed = if v6 {
        parse_v6(frame.data(), cx.l2_len)
    } else {
        parse_v4(cx, frame.data(), cx.l2_len)
    };
    let ip = match parsed {
        Ok(ip) => ip,
        Err(r) => return Verdict::Drop(r),
    };
    if martian(&ip) {
        return Verdict::Drop(DropReason::MartianSource);
    }
    match ip.proto {
        // Neighbour discovery is the only IP the gateway takes from a group address (L9).
        58 if v6 => icmp::icmpv6(cx, frame, &ip, l2_multicast),
        _ if l2_multicast => Verdict::Drop(DropReason::L2Multicast),
        6 => nat::tcp(cx, frame, &ip),
        1 if !v6 => icmp::icmpv4(cx, frame, &ip),
        _ if cx.pool.is_own_addr(cx.ingress, &ip.dst) => Verdict::Punt,
        // 6d: an extension header the walk does not cross is refused as one, not as a protocol.
        p if v6 && unsupported_ext_header(p) => Verdict::Drop(DropReason::Ipv6ExtHeader),
        _ if cx.pool.is_vip_addr(&ip.dst) => Verdict::Drop(DropReason::NotTcp),
        _ => Verdict::Drop(no_vip(cx)),
    }
}

/// IPv6 extension headers (IANA "IPv6 Extension Header Types") that
/// [`ipv6::walk_extension_headers`] does not cross: AH, Mobility, HIP, Shim6 and the two
/// experimental values. ESP is a payload here (opaque), not a header to cross.
fn unsupported_ext_header(proto: u8) -> bool {
    matches!(proto, 51 | 135 | 139 | 140 | 253 | 254)
}

/// The drop reason for a packet that is for no VIP, no backend return path and not the gateway:
/// on a port that no VIP takes clients on (the backend side), its source pretends to be a backend
/// but is not one (I7, anti-spoofing); elsewhere it is simply not for us. Drop path only.
pub(crate) fn no_vip(cx: &Ctx<'_>) -> DropReason {
    let vips = &cx.pool.vips;
    if vips.iter().flatten().any(|v| v.client_port == cx.ingress) {
        DropReason::NoVip
    } else {
        DropReason::NotFromBackend
    }
}

fn parse_v4(cx: &mut Ctx<'_>, buf: &[u8], l3: usize) -> Result<Ip, DropReason> {
    let pkt = ipv4::Packet::new_checked(&buf[l3..]).map_err(|e| match e {
        // L1: too short for the fixed header its EtherType promises (checked on errors only).
        _ if buf.len() < l3 + ipv4::HEADER_LEN => DropReason::Runt,
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
        _ if buf.len() < l3 + ipv6::HEADER_LEN => DropReason::Runt,
        Error::BadVersion => DropReason::IpBadVersion,
        _ => DropReason::IpBadLength,
    })?;
    let walk =
        ipv6::walk_extension_headers(pkt.payload(), pkt.next_header().0).map_err(|e| match e {
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
///
/// IPv6 packets with an IPv4-mapped source or destination (`::ffff:0:0/96`, RFC 4291 §2.5.5.2:
/// never on the wire; Linux TCP refuses such SYNs) are refused too: the flow and VIP tables key
/// IPv4 addresses in exactly that form, so such a packet would otherwise share the state of an
/// IPv4 client or reach an IPv4 VIP.
fn martian(ip: &Ip) -> bool {
    let s = &ip.src;
    if ip.v6 {
        s.iter().all(|&b| b == 0)                                 // ::
            || (s[..15].iter().all(|&b| b == 0) && s[15] == 1)    // ::1
            || s[0] == 0xff // multicast
            || v4_mapped_form(s)
            || v4_mapped_form(&ip.dst)
    } else {
        let a = s[12];
        a == 0 || a == 127 || a >= 224
    }
}

/// `::ffff:a.b.c.d`: the key form of an IPv4 address.
#[inline]
fn v4_mapped_form(a: &[u8; 16]) -> bool {
    a[..10].iter().all(|&b| b == 0) && a[10] == 0xff && a[11] == 0xff
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{Shared, Worker, WorkerConfig};
    use crate::pool::PortId;
    use crate::tables::flow_table::FlowTableConfig;
    use crate::tables::token::TokenTableConfig;
    use crate::testkit::{demo_pool, join_syn, mpc_syn, TcpSpec};
    use crate::time::Ticks;

    /// The full parser's view of a frame: IP stage then TCP header, or the drop reason.
    fn full(frame: &[u8], pool: &crate::pool::PoolSnapshot) -> Option<(Ip, nat::Seg)> {
        let shared = Shared::new(TokenTableConfig {
            capacity: 16,
            shards: 1,
        });
        let mut w = Worker::new(WorkerConfig {
            flows: FlowTableConfig {
                capacity: 16,
                ..Default::default()
            },
            ..Default::default()
        });
        let port = pool.port(PortId(0))?;
        let mut cx = Ctx {
            w: &mut w,
            shared: &shared,
            pool,
            now: Ticks::ZERO,
            now_ms: 0,
            ingress: PortId(0),
            port,
            l2_len: 14,
        };
        let l2 = trapeze_wire::ethernet::parse_l2(frame).ok()?;
        if l2.vlan.is_some() || l2.dst.is_multicast() {
            return None;
        }
        let ip = if l2.ethertype.0 == 0x86dd {
            parse_v6(frame, 14)
        } else {
            parse_v4(&mut cx, frame, 14)
        }
        .ok()?;
        if martian(&ip) || ip.proto != 6 {
            return None;
        }
        let seg = nat::parse_seg(frame, &ip).ok()?;
        if seg.src_port == 0 || seg.dst_port == 0 || nat::bad_flags(seg.flags.0) {
            return None;
        }
        Some((ip, seg))
    }

    fn same(a: &(Ip, nat::Seg), b: &(Ip, nat::Seg)) -> bool {
        let (x, y) = (&a.0, &b.0);
        (x.v6, x.l3, x.l4, x.end, x.proto, x.src, x.dst, x.ttl)
            == (y.v6, y.l3, y.l4, y.end, y.proto, y.src, y.dst, y.ttl)
            && a.1 == b.1
    }

    #[test]
    fn fast_parser_agrees_with_the_full_parser() {
        let pool = demo_pool(3);
        let full = |f: &[u8]| full(f, &pool);
        let c4: core::net::IpAddr = "198.51.100.1".parse().unwrap();
        let c6: core::net::IpAddr = "2001:db8:c::1".parse().unwrap();
        let mut frames = Vec::new();
        for c in [c4, c6] {
            for flags in [0x02, 0x10, 0x11, 0x04, 0x18, 0x03, 0x00, 0x29] {
                let mut s = TcpSpec::to_vip(c, 4000, flags);
                s.payload = vec![7; 10];
                frames.push(s.clone().build());
                frames.push(s.clone().with_mptcp(mpc_syn()).build());
                frames.push(s.with_mptcp(join_syn(5)).build());
            }
        }
        // Every single-byte corruption of the headers, and a few truncations.
        let mut seed = 0x1234_5678u32;
        let mut accepted = 0;
        for f in &frames {
            for at in 0..f.len().min(110) {
                for _ in 0..3 {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    let mut g = f.clone();
                    g[at] ^= (seed as u8) | 1;
                    if let Some(fast) = fast_parse(&g) {
                        accepted += 1;
                        let full = full(&g)
                            .expect("the fast parser accepted what the full parser refuses");
                        assert!(same(&fast, &full), "disagreement at byte {at}");
                    }
                }
            }
            for cut in [0, 13, 20, 33, 40, 53, 60] {
                if let (Some(fast), Some(full)) = (
                    fast_parse(&f[..cut.min(f.len())]),
                    full(&f[..cut.min(f.len())]),
                ) {
                    assert!(same(&fast, &full));
                }
            }
            if let Some(fast) = fast_parse(f) {
                assert!(same(&fast, &full(f).unwrap()));
            }
        }
        assert!(
            accepted > 1000,
            "the test exercised the fast parser ({accepted})"
        );
    }
}
