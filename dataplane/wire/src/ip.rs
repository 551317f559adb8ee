//! What IPv4 and IPv6 share: protocol numbers (IANA "Assigned Internet Protocol Numbers") and
//! the parsing of the packet quoted inside an ICMP or ICMPv6 error (RFC 792, RFC 4443 §2.4(c)).
//!
//! ```text
//!  ICMP error message                 the quote (what parse_quoted_* reads)
//! +------+------+----------+   +---------------------+------------+---------------+
//! | type | code | checksum |   | quoted IP header    | [IPv6 ext  | quoted L4:    |
//! +------+------+----------+   | (v4: IHL*4 bytes,   |  headers]  | src port,     |
//! |   type-specific 4 B    |   |  v6: 40 bytes)      |            | dst port, ... |
//! +------------------------+   +---------------------+------------+---------------+
//!                              ^ 0                   ^ ip_header_len ^ l4_offset   (+8 needed)
//! ```
//!
//! A quote is the start of a packet *we* (or the backend) sent, so its source and destination
//! are the reverse of the flow that the error belongs to; the pipeline reverses them. Catalogue
//! rows I1/I2: a quote shorter than the IP header plus 8 bytes of L4 header is `Err(Truncated)`.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::field::read_u16;
use crate::ipv6;
use crate::{Error, Result};

/// An IP protocol number (IPv4 Protocol, IPv6 Next Header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpProtocol(pub u8);

impl IpProtocol {
    /// IPv6 Hop-by-Hop Options.
    pub const HOPOPT: IpProtocol = IpProtocol(0);
    /// Internet Control Message Protocol.
    pub const ICMP: IpProtocol = IpProtocol(1);
    /// IPv4 encapsulation (IP-in-IP).
    pub const IPIP: IpProtocol = IpProtocol(4);
    /// Transmission Control Protocol.
    pub const TCP: IpProtocol = IpProtocol(6);
    /// User Datagram Protocol.
    pub const UDP: IpProtocol = IpProtocol(17);
    /// IPv6 encapsulation.
    pub const IPV6: IpProtocol = IpProtocol(41);
    /// IPv6 Routing header.
    pub const IPV6_ROUTE: IpProtocol = IpProtocol(43);
    /// IPv6 Fragment header.
    pub const IPV6_FRAG: IpProtocol = IpProtocol(44);
    /// Encapsulating Security Payload.
    pub const ESP: IpProtocol = IpProtocol(50);
    /// Authentication Header.
    pub const AH: IpProtocol = IpProtocol(51);
    /// ICMP for IPv6.
    pub const ICMPV6: IpProtocol = IpProtocol(58);
    /// IPv6 No Next Header.
    pub const IPV6_NONXT: IpProtocol = IpProtocol(59);
    /// IPv6 Destination Options.
    pub const IPV6_OPTS: IpProtocol = IpProtocol(60);
}

impl From<u8> for IpProtocol {
    #[inline]
    fn from(v: u8) -> Self {
        IpProtocol(v)
    }
}

impl From<IpProtocol> for u8 {
    #[inline]
    fn from(v: IpProtocol) -> Self {
        v.0
    }
}

impl fmt::Display for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match *self {
            Self::HOPOPT => "Hop-by-Hop",
            Self::ICMP => "ICMP",
            Self::IPIP => "IPIP",
            Self::TCP => "TCP",
            Self::UDP => "UDP",
            Self::IPV6 => "IPv6",
            Self::IPV6_ROUTE => "IPv6-Route",
            Self::IPV6_FRAG => "IPv6-Frag",
            Self::ESP => "ESP",
            Self::AH => "AH",
            Self::ICMPV6 => "ICMPv6",
            Self::IPV6_NONXT => "IPv6-NoNxt",
            Self::IPV6_OPTS => "IPv6-Opts",
            IpProtocol(n) => return write!(f, "{n}"),
        };
        f.write_str(name)
    }
}

/// Bytes of the quoted L4 header an ICMP error must carry (RFC 792: "64 bits of data").
pub const QUOTED_L4_LEN: usize = 8;

/// The flow an ICMP error is about, read from its quote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quoted {
    /// Source address of the quoted packet.
    pub src: IpAddr,
    /// Destination address of the quoted packet.
    pub dst: IpAddr,
    /// Upper-layer protocol of the quoted packet (after IPv6 extension headers).
    pub protocol: u8,
    /// First 16 bits of the quoted L4 header (the source port for TCP/UDP; for ICMP, type/code).
    pub src_port: u16,
    /// Second 16 bits of the quoted L4 header (the destination port for TCP/UDP).
    pub dst_port: u16,
    /// Offset of the quoted L4 header within the quote.
    pub l4_offset: usize,
    /// Length of the quoted IP header: IHL × 4 for IPv4, 40 for IPv6 (extension headers are
    /// between `ip_header_len` and `l4_offset`).
    pub ip_header_len: usize,
}

/// Parses the IPv4 packet quoted in an ICMPv4 error.
///
/// `Err(Truncated)` below 20 bytes or below IHL × 4 + 8; `Err(BadVersion)` if not version 4;
/// `Err(BadHeaderLen)` for IHL < 5; `Err(Unsupported)` for a non-first fragment (its quote holds
/// no L4 header). The quoted total length and checksum are not checked: quotes are truncated and
/// some routers alter the quoted header.
pub fn parse_quoted_v4(quote: &[u8]) -> Result<Quoted> {
    if quote.len() < 20 {
        return Err(Error::Truncated);
    }
    if quote[0] >> 4 != 4 {
        return Err(Error::BadVersion);
    }
    let ihl = usize::from(quote[0] & 0x0F) * 4;
    if ihl < 20 {
        return Err(Error::BadHeaderLen);
    }
    if quote.len() < ihl + QUOTED_L4_LEN {
        return Err(Error::Truncated);
    }
    if read_u16(quote, 6) & 0x1FFF != 0 {
        return Err(Error::Unsupported);
    }
    let src = Ipv4Addr::new(quote[12], quote[13], quote[14], quote[15]);
    let dst = Ipv4Addr::new(quote[16], quote[17], quote[18], quote[19]);
    Ok(Quoted {
        src: IpAddr::V4(src),
        dst: IpAddr::V4(dst),
        protocol: quote[9],
        src_port: read_u16(quote, ihl),
        dst_port: read_u16(quote, ihl + 2),
        l4_offset: ihl,
        ip_header_len: ihl,
    })
}

/// Parses the IPv6 packet quoted in an ICMPv6 error.
///
/// Walks the extension headers with [`ipv6::walk_extension_headers`] (same bounds and errors),
/// then needs 8 bytes of L4 header: `Err(Truncated)` otherwise. `Err(BadVersion)` if not
/// version 6; `Err(Unsupported)` for a non-first fragment. The quoted payload length is ignored
/// (the quote is truncated).
pub fn parse_quoted_v6(quote: &[u8]) -> Result<Quoted> {
    if quote.len() < ipv6::HEADER_LEN {
        return Err(Error::Truncated);
    }
    if quote[0] >> 4 != 6 {
        return Err(Error::BadVersion);
    }
    let (header, rest) = quote.split_at(ipv6::HEADER_LEN);
    let walk = ipv6::walk_extension_headers(rest, header[6])?;
    if walk.fragment.is_some_and(|f| f.offset != 0) {
        return Err(Error::Unsupported);
    }
    let l4_offset = ipv6::HEADER_LEN + walk.upper_offset;
    if quote.len() < l4_offset + QUOTED_L4_LEN {
        return Err(Error::Truncated);
    }
    let mut src = [0u8; 16];
    src.copy_from_slice(&header[8..24]);
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&header[24..40]);
    Ok(Quoted {
        src: IpAddr::V6(Ipv6Addr::from(src)),
        dst: IpAddr::V6(Ipv6Addr::from(dst)),
        protocol: walk.upper_protocol,
        src_port: read_u16(quote, l4_offset),
        dst_port: read_u16(quote, l4_offset + 2),
        l4_offset,
        ip_header_len: ipv6::HEADER_LEN,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // IPv4 header (IHL 5, TCP) + first 8 bytes of a TCP header.
    static QUOTE_V4: [u8; 28] = [
        0x45, 0x00, 0x05, 0xdc, 0x00, 0x01, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00, // .. TCP
        0xc6, 0x33, 0x64, 0x01, // 198.51.100.1
        0xcb, 0x00, 0x71, 0x05, // 203.0.113.5
        0xc3, 0x50, 0x01, 0xbb, // 50000 -> 443
        0x01, 0x02, 0x03, 0x04, // sequence number
    ];

    // IPv6 header (next header: Destination Options) + 8-byte DO header + UDP header.
    static QUOTE_V6: [u8; 56] = [
        0x60, 0x00, 0x00, 0x00, 0x00, 0x10, 0x3c, 0x40, // payload 16, NH 60, HL 64
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, // 2001:db8::1
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, // 2001:db8::2
        0x11, 0x00, 0x01, 0x04, 0x00, 0x00, 0x00, 0x00, // DO: NH UDP, len 0, PadN
        0x00, 0x35, 0xd4, 0x31, 0x00, 0x08, 0x00, 0x00, // 53 -> 54321
    ];

    #[test]
    fn quoted_v4() {
        let q = parse_quoted_v4(&QUOTE_V4).unwrap();
        assert_eq!(q.src, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)));
        assert_eq!(q.dst, IpAddr::V4(Ipv4Addr::new(203, 0, 113, 5)));
        assert_eq!(q.protocol, 6);
        assert_eq!((q.src_port, q.dst_port), (50000, 443));
        assert_eq!((q.l4_offset, q.ip_header_len), (20, 20));
    }

    #[test]
    fn quoted_v4_errors() {
        assert_eq!(parse_quoted_v4(&QUOTE_V4[..19]), Err(Error::Truncated));
        assert_eq!(parse_quoted_v4(&QUOTE_V4[..27]), Err(Error::Truncated));
        let mut q = QUOTE_V4;
        q[0] = 0x65;
        assert_eq!(parse_quoted_v4(&q), Err(Error::BadVersion));
        q[0] = 0x44;
        assert_eq!(parse_quoted_v4(&q), Err(Error::BadHeaderLen));
        q[0] = 0x46; // 24-byte header: needs 32 bytes
        assert_eq!(parse_quoted_v4(&q), Err(Error::Truncated));
        let mut q = QUOTE_V4;
        q[7] = 0x10; // offset 16
        assert_eq!(parse_quoted_v4(&q), Err(Error::Unsupported));
        q[6] = 0x20; // MF only, offset 0: the first fragment has the ports
        q[7] = 0;
        assert!(parse_quoted_v4(&q).is_ok());
    }

    #[test]
    fn quoted_v4_with_options() {
        let mut q = [0u8; 32];
        q[..20].copy_from_slice(&QUOTE_V4[..20]);
        q[0] = 0x46;
        q[20..24].copy_from_slice(&[1, 1, 1, 0]);
        q[24..].copy_from_slice(&QUOTE_V4[20..]);
        let p = parse_quoted_v4(&q).unwrap();
        assert_eq!(
            (p.l4_offset, p.ip_header_len, p.src_port, p.dst_port),
            (24, 24, 50000, 443)
        );
    }

    #[test]
    fn quoted_v6() {
        let q = parse_quoted_v6(&QUOTE_V6).unwrap();
        assert_eq!(
            q.src,
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1))
        );
        assert_eq!(
            q.dst,
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2))
        );
        assert_eq!(q.protocol, 17);
        assert_eq!((q.src_port, q.dst_port), (53, 54321));
        assert_eq!((q.l4_offset, q.ip_header_len), (48, 40));
    }

    #[test]
    fn quoted_v6_errors() {
        assert_eq!(parse_quoted_v6(&QUOTE_V6[..39]), Err(Error::Truncated));
        // Extension header cut short.
        assert_eq!(parse_quoted_v6(&QUOTE_V6[..44]), Err(Error::Truncated));
        // Fewer than 8 bytes of L4.
        assert_eq!(parse_quoted_v6(&QUOTE_V6[..55]), Err(Error::Truncated));
        let mut q = QUOTE_V6;
        q[0] = 0x40;
        assert_eq!(parse_quoted_v6(&q), Err(Error::BadVersion));
        // Non-first fragment.
        let mut q = QUOTE_V6;
        q[6] = 44;
        q[40..48].copy_from_slice(&[17, 0, 0x00, 0x08, 0, 0, 0, 1]);
        assert_eq!(parse_quoted_v6(&q), Err(Error::Unsupported));
        // First fragment: ports are there.
        q[42..44].copy_from_slice(&[0x00, 0x01]);
        let p = parse_quoted_v6(&q).unwrap();
        assert_eq!((p.protocol, p.src_port, p.l4_offset), (17, 53, 48));
    }

    #[test]
    fn protocol_display() {
        assert_eq!(IpProtocol::TCP.to_string(), "TCP");
        assert_eq!(IpProtocol(200).to_string(), "200");
        assert_eq!(u8::from(IpProtocol::from(58)), 58);
    }

    proptest! {
        #[test]
        fn quoted_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = parse_quoted_v4(&bytes);
            let _ = parse_quoted_v6(&bytes);
        }

        #[test]
        fn quoted_v4_in_bounds(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let mut bytes = bytes;
            if let Some(b) = bytes.first_mut() {
                *b = 0x40 | (*b & 0x0f);
            }
            if let Ok(q) = parse_quoted_v4(&bytes) {
                prop_assert!(q.l4_offset + QUOTED_L4_LEN <= bytes.len());
            }
        }
    }
}
