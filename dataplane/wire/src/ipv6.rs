//! IPv6 headers (RFC 8200) and a bounded walk over the extension-header chain.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Traffic Class |           Flow Label                  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |         Payload Length        |  Next Header  |   Hop Limit   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                                                               |
//! +                     Source Address (128 bits)                 +
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                                                               |
//! +                  Destination Address (128 bits)               +
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!
//! Generic extension header (Hop-by-Hop 0, Routing 43, Destination Options 60):
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Next Header  |  Hdr Ext Len  | (Routing: Type, Segments Left)|  length = (Hdr Ext Len + 1) * 8
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! Fragment header (44), always 8 bytes:
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Next Header  |   Reserved    |      Fragment Offset    |Res|M|
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                         Identification                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! [`Packet::check_len`] checks: fewer than 40 bytes: [`Error::Truncated`]; version != 6:
//! [`Error::BadVersion`]; payload length 0 with a Hop-by-Hop header (a jumbogram, RFC 2675):
//! [`Error::Unsupported`]; 40 + payload length > buffer: [`Error::Truncated`] (catalogue 6a, 6b).
//! Bytes after the payload length (Ethernet padding) are not part of the packet.
//!
//! [`walk_extension_headers`] finds the upper-layer header (catalogue 6c–6h): Hop-by-Hop only
//! first, Routing type 0 refused (RFC 5095), at most [`MAX_EXT_HEADERS`] headers and
//! [`MAX_EXT_BYTES`] bytes (RFC 8883/9098 call for such limits). Policy on fragments, atomic
//! fragments and unknown upper protocols is left to the pipeline.

use core::net::Ipv6Addr;

use crate::field::{read_u16, read_u32, write_u16, write_u32};
use crate::ip::IpProtocol;
use crate::{Error, Result};

mod field {
    use crate::field::Field;

    pub(crate) const VER_TC_FLOW: Field = 0..4;
    pub(crate) const LENGTH: Field = 4..6;
    pub(crate) const NXT_HDR: usize = 6;
    pub(crate) const HOP_LIMIT: usize = 7;
    pub(crate) const SRC_ADDR: Field = 8..24;
    pub(crate) const DST_ADDR: Field = 24..40;

    // Extension headers, relative to their start.
    pub(crate) const EXT_NXT_HDR: usize = 0;
    pub(crate) const EXT_LEN: usize = 1;
    pub(crate) const ROUTING_TYPE: usize = 2;
    pub(crate) const FRAG_OFF_M: Field = 2..4;
    pub(crate) const FRAG_IDENT: Field = 4..8;
}

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = field::DST_ADDR.end;
/// Length of a Fragment extension header.
pub const FRAGMENT_HEADER_LEN: usize = 8;
/// Most extension headers [`walk_extension_headers`] accepts before the upper-layer header.
pub const MAX_EXT_HEADERS: u8 = 8;
/// Most extension-header bytes [`walk_extension_headers`] accepts.
pub const MAX_EXT_BYTES: usize = 512;

/// A read/write view of an IPv6 packet.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it (for emission into a buffer the caller sized).
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after [`Self::check_len`].
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks version and payload length against the buffer (see the module doc).
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 6 {
            return Err(Error::BadVersion);
        }
        let payload_len = usize::from(self.payload_len());
        if payload_len == 0 && self.next_header() == IpProtocol::HOPOPT {
            return Err(Error::Unsupported);
        }
        if HEADER_LEN + payload_len > len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version field (6 for a checked packet).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }

    /// Traffic Class (DSCP << 2 | ECN).
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        (read_u16(self.buffer.as_ref(), 0) >> 4) as u8
    }

    /// Flow Label (20 bits).
    #[inline]
    pub fn flow_label(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::VER_TC_FLOW.start) & 0x000F_FFFF
    }

    /// Payload Length: bytes after the fixed header, extension headers included.
    #[inline]
    pub fn payload_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// Next Header: the first extension header or the upper-layer protocol.
    #[inline]
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[field::NXT_HDR])
    }

    /// Hop Limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address octets.
    #[inline]
    pub fn src_octets(&self) -> [u8; 16] {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::SRC_ADDR]);
        a
    }

    /// Destination address octets.
    #[inline]
    pub fn dst_octets(&self) -> [u8; 16] {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::DST_ADDR]);
        a
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.src_octets())
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.dst_octets())
    }

    /// `40..40 + payload_len`, clamped so that it is always a valid range of the buffer.
    #[inline]
    fn payload_range(&self) -> (usize, usize) {
        let len = self.buffer.as_ref().len();
        let end = (HEADER_LEN + usize::from(self.payload_len())).min(len);
        (HEADER_LEN.min(end), end)
    }

    /// The payload (extension headers and upper layer), ending at the payload length.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let (start, end) = self.payload_range();
        &self.buffer.as_ref()[start..end]
    }

    /// Walks this packet's extension headers (see [`walk_extension_headers`]).
    #[inline]
    pub fn extension_headers(&self) -> Result<ExtWalk> {
        walk_extension_headers(self.payload(), self.next_header().0)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the version field.
    #[inline]
    pub fn set_version(&mut self, version: u8) {
        let b = &mut self.buffer.as_mut()[0];
        *b = (*b & 0x0F) | (version << 4);
    }

    /// Sets the Traffic Class.
    #[inline]
    pub fn set_traffic_class(&mut self, tc: u8) {
        let old = read_u16(self.buffer.as_ref(), 0);
        write_u16(
            self.buffer.as_mut(),
            0,
            (old & 0xF00F) | (u16::from(tc) << 4),
        );
    }

    /// Sets the Flow Label (masked to 20 bits).
    #[inline]
    pub fn set_flow_label(&mut self, label: u32) {
        let old = read_u32(self.buffer.as_ref(), 0);
        write_u32(
            self.buffer.as_mut(),
            0,
            (old & 0xFFF0_0000) | (label & 0x000F_FFFF),
        );
    }

    /// Sets the Payload Length.
    #[inline]
    pub fn set_payload_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH.start, len);
    }

    /// Sets the Next Header.
    #[inline]
    pub fn set_next_header(&mut self, nh: IpProtocol) {
        self.buffer.as_mut()[field::NXT_HDR] = nh.0;
    }

    /// Sets the Hop Limit.
    #[inline]
    pub fn set_hop_limit(&mut self, hl: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = hl;
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// The payload, mutably (ends at the payload length).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (start, end) = self.payload_range();
        &mut self.buffer.as_mut()[start..end]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// What a Fragment header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FragmentInfo {
    /// Fragment Offset, in 8-octet units.
    pub offset: u16,
    /// M flag: more fragments follow.
    pub more: bool,
    /// Identification.
    pub ident: u32,
}

impl FragmentInfo {
    /// True for an atomic fragment (offset 0, M clear; RFC 6946).
    #[inline]
    pub fn is_atomic(&self) -> bool {
        self.offset == 0 && !self.more
    }
}

/// The result of walking an extension-header chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExtWalk {
    /// The first Next Header value that is not a skipped extension header.
    pub upper_protocol: u8,
    /// Offset of that header from the start of the IPv6 payload.
    pub upper_offset: usize,
    /// The Fragment header, if one was crossed.
    pub fragment: Option<FragmentInfo>,
    /// Number of extension headers crossed.
    pub count: u8,
}

/// Walks the extension headers at the start of an IPv6 payload.
///
/// * Hop-by-Hop Options (0) is skipped when first, `Err(ExtensionHeader)` anywhere else.
/// * Routing (43) of type 0 is `Err(SourceRoute)`; other routing types are skipped.
/// * Fragment (44) is recorded; a second one is `Err(ExtensionHeader)`. When its offset is not 0
///   the walk stops after it (what follows is not a header), with `upper_protocol` its Next
///   Header.
/// * Destination Options (60) is skipped.
/// * Anything else stops the walk and is the upper protocol: TCP, UDP, ICMPv6, No Next Header
///   (59), ESP (opaque), AH (not skipped: the pipeline does not handle IPsec) and unknown values
///   (which the pipeline then refuses as a protocol it does not serve).
///
/// More than [`MAX_EXT_HEADERS`] headers or [`MAX_EXT_BYTES`] bytes is `Err(ExtensionHeader)`;
/// a header running past `payload` is `Err(Truncated)`. The upper-layer header itself is not
/// checked to be present.
pub fn walk_extension_headers(payload: &[u8], first_next_header: u8) -> Result<ExtWalk> {
    let mut next = first_next_header;
    let mut offset = 0usize;
    let mut fragment: Option<FragmentInfo> = None;
    let mut count = 0u8;
    // Each pass crosses one header; the count check bounds the loop.
    loop {
        let header = payload.get(offset..).unwrap_or(&[]);
        let len = match IpProtocol(next) {
            IpProtocol::HOPOPT | IpProtocol::IPV6_ROUTE | IpProtocol::IPV6_OPTS => {
                if next == IpProtocol::HOPOPT.0 && count != 0 {
                    return Err(Error::ExtensionHeader);
                }
                if header.len() < 2 {
                    return Err(Error::Truncated);
                }
                let len = (usize::from(header[field::EXT_LEN]) + 1) * 8;
                if header.len() < len {
                    return Err(Error::Truncated);
                }
                if next == IpProtocol::IPV6_ROUTE.0 && header[field::ROUTING_TYPE] == 0 {
                    return Err(Error::SourceRoute);
                }
                len
            }
            IpProtocol::IPV6_FRAG => {
                if fragment.is_some() {
                    return Err(Error::ExtensionHeader);
                }
                if header.len() < FRAGMENT_HEADER_LEN {
                    return Err(Error::Truncated);
                }
                let off_m = read_u16(header, field::FRAG_OFF_M.start);
                fragment = Some(FragmentInfo {
                    offset: off_m >> 3,
                    more: off_m & 1 != 0,
                    ident: read_u32(header, field::FRAG_IDENT.start),
                });
                FRAGMENT_HEADER_LEN
            }
            _ => {
                return Ok(ExtWalk {
                    upper_protocol: next,
                    upper_offset: offset,
                    fragment,
                    count,
                })
            }
        };
        count += 1;
        offset += len;
        if count > MAX_EXT_HEADERS || offset > MAX_EXT_BYTES {
            return Err(Error::ExtensionHeader);
        }
        next = header[field::EXT_NXT_HDR];
        if fragment.is_some_and(|f| f.offset != 0) {
            return Ok(ExtWalk {
                upper_protocol: next,
                upper_offset: offset,
                fragment,
                count,
            });
        }
    }
}

/// A high-level description of a fixed IPv6 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source address.
    pub src_addr: Ipv6Addr,
    /// Destination address.
    pub dst_addr: Ipv6Addr,
    /// Next Header.
    pub next_header: IpProtocol,
    /// Payload length in bytes.
    pub payload_len: usize,
    /// Hop Limit.
    pub hop_limit: u8,
    /// Traffic Class.
    pub traffic_class: u8,
    /// Flow Label (20 bits).
    pub flow_label: u32,
}

impl Repr {
    /// Parses a packet (running [`Packet::check_len`]); extension headers are not walked.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr> {
        packet.check_len()?;
        Ok(Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            next_header: packet.next_header(),
            payload_len: usize::from(packet.payload_len()),
            hop_limit: packet.hop_limit(),
            traffic_class: packet.traffic_class(),
            flow_label: packet.flow_label(),
        })
    }

    /// Header length this description emits: 40.
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the fixed header into a buffer of at least 40 bytes.
    ///
    /// A `payload_len` above 65535 is saturated; `flow_label` is masked to 20 bits.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        write_u32(packet.buffer.as_mut(), 0, 6 << 28);
        packet.set_traffic_class(self.traffic_class);
        packet.set_flow_label(self.flow_label);
        packet.set_payload_len(u16::try_from(self.payload_len).unwrap_or(u16::MAX));
        packet.set_next_header(self.next_header);
        packet.set_hop_limit(self.hop_limit);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    static PACKET_BYTES: [u8; 46] = [
        0x6b, 0x81, 0x23, 0x45, // v6, TC 0xb8, flow 0x12345
        0x00, 0x04, 0x11, 0x40, // payload 4, UDP, HL 64
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, // fe80::1
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, // ff02::1
        0xaa, 0xbb, 0xcc, 0xdd, // payload
        0x00, 0x00, // padding
    ];

    fn src() -> Ipv6Addr {
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)
    }

    fn dst() -> Ipv6Addr {
        Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1)
    }

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0xb8);
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.payload_len(), 4);
        assert_eq!(p.next_header(), IpProtocol::UDP);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.src_addr(), src());
        assert_eq!(p.dst_addr(), dst());
        assert_eq!(p.src_octets(), src().octets());
        assert_eq!(p.dst_octets(), dst().octets());
        assert_eq!(p.payload(), &[0xaa, 0xbb, 0xcc, 0xdd]);
        let walk = p.extension_headers().unwrap();
        assert_eq!(
            walk,
            ExtWalk {
                upper_protocol: 17,
                upper_offset: 0,
                fragment: None,
                count: 0
            }
        );
    }

    #[test]
    fn construct() {
        let mut bytes = [0xa5u8; 46];
        let mut p = Packet::new_unchecked(&mut bytes[..]);
        p.set_version(6);
        p.set_traffic_class(0xb8);
        p.set_flow_label(0x12345);
        p.set_payload_len(4);
        p.set_next_header(IpProtocol::UDP);
        p.set_hop_limit(64);
        p.set_src_addr(src());
        p.set_dst_addr(dst());
        p.payload_mut().copy_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd]);
        bytes[44..].fill(0);
        assert_eq!(bytes, PACKET_BYTES);
    }

    #[test]
    fn repr() {
        let repr = Repr::parse(&Packet::new_checked(&PACKET_BYTES[..]).unwrap()).unwrap();
        assert_eq!(
            repr,
            Repr {
                src_addr: src(),
                dst_addr: dst(),
                next_header: IpProtocol::UDP,
                payload_len: 4,
                hop_limit: 64,
                traffic_class: 0xb8,
                flow_label: 0x12345
            }
        );
        let mut out = [0xa5u8; 40];
        repr.emit(&mut Packet::new_unchecked(&mut out[..]));
        assert_eq!(out, PACKET_BYTES[..40]);
    }

    #[test]
    fn check_len_errors() {
        assert_eq!(
            Packet::new_checked(&PACKET_BYTES[..39]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            Packet::new_checked(&PACKET_BYTES[..43]).unwrap_err(),
            Error::Truncated
        );
        assert!(Packet::new_checked(&PACKET_BYTES[..44]).is_ok());
        let mut b = PACKET_BYTES;
        b[0] = 0x4b;
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::BadVersion);
        // Payload length 0: fine, unless it is a jumbogram (Hop-by-Hop next).
        let mut b = PACKET_BYTES;
        b[4..6].fill(0);
        assert!(Packet::new_checked(&b[..]).unwrap().payload().is_empty());
        b[6] = 0;
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::Unsupported);
    }

    /// Builds a payload: a chain of (next header value, header bytes) and then 8 bytes of L4.
    fn chain(headers: &[(u8, &[u8])], upper: u8) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, (_, h)) in headers.iter().enumerate() {
            let mut h = h.to_vec();
            h[0] = headers.get(i + 1).map_or(upper, |n| n.0);
            out.extend_from_slice(&h);
        }
        out.extend_from_slice(&[0u8; 8]);
        out
    }

    const HBH: &[u8] = &[0, 0, 1, 4, 0, 0, 0, 0];
    const DEST16: &[u8] = &[0, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    const RH2: &[u8] = &[
        0, 2, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    const RH0: &[u8] = &[
        0, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    const FRAG0: &[u8] = &[0, 0, 0x00, 0x01, 0xde, 0xad, 0xbe, 0xef];
    const FRAG_N: &[u8] = &[0, 0, 0x05, 0x28, 0, 0, 0, 7];
    const ATOMIC: &[u8] = &[0, 0, 0, 0, 0, 0, 0, 9];

    #[test]
    fn walk_chain() {
        let p = chain(&[(0, HBH), (60, DEST16), (43, RH2), (44, FRAG0)], 6);
        let w = walk_extension_headers(&p, 0).unwrap();
        assert_eq!(w.upper_protocol, 6);
        assert_eq!(w.upper_offset, 8 + 16 + 24 + 8);
        assert_eq!(w.count, 4);
        assert_eq!(
            w.fragment,
            Some(FragmentInfo {
                offset: 0,
                more: true,
                ident: 0xdeadbeef
            })
        );
    }

    #[test]
    fn walk_non_first_fragment_stops() {
        // Offset 0x528 >> 3 = 165, M clear: stop right after the fragment header.
        let mut p = chain(&[(60, DEST16), (44, FRAG_N)], 6);
        p.truncate(24); // nothing after the fragment header: still fine.
        let w = walk_extension_headers(&p, 60).unwrap();
        assert_eq!((w.upper_protocol, w.upper_offset, w.count), (6, 24, 2));
        let f = w.fragment.unwrap();
        assert_eq!(
            (f.offset, f.more, f.ident, f.is_atomic()),
            (165, false, 7, false)
        );
    }

    #[test]
    fn walk_atomic_fragment() {
        let p = chain(&[(44, ATOMIC)], 58);
        let w = walk_extension_headers(&p, 44).unwrap();
        assert_eq!((w.upper_protocol, w.upper_offset), (58, 8));
        assert!(w.fragment.unwrap().is_atomic());
    }

    #[test]
    fn walk_errors() {
        // 6c: Hop-by-Hop not first.
        let p = chain(&[(60, DEST16), (0, HBH)], 6);
        assert_eq!(walk_extension_headers(&p, 60), Err(Error::ExtensionHeader));
        // 6e: routing type 0.
        let p = chain(&[(43, RH0)], 6);
        assert_eq!(walk_extension_headers(&p, 43), Err(Error::SourceRoute));
        // Two fragment headers.
        let p = chain(&[(44, FRAG0), (44, FRAG0)], 6);
        assert_eq!(walk_extension_headers(&p, 44), Err(Error::ExtensionHeader));
        // 6d: truncated header, cut inside the length byte and inside the body.
        let p = chain(&[(60, DEST16)], 6);
        assert_eq!(walk_extension_headers(&p[..1], 60), Err(Error::Truncated));
        assert_eq!(walk_extension_headers(&p[..15], 60), Err(Error::Truncated));
        assert_eq!(walk_extension_headers(&[], 60), Err(Error::Truncated));
        assert_eq!(walk_extension_headers(&p[..7], 44), Err(Error::Truncated));
        let p = chain(&[(43, RH2)], 6);
        assert_eq!(walk_extension_headers(&p[..3], 43), Err(Error::Truncated));
        // 6d: too many headers.
        let many: Vec<(u8, &[u8])> = (0..9).map(|_| (60, DEST16)).collect();
        let p = chain(&many, 6);
        assert_eq!(walk_extension_headers(&p, 60), Err(Error::ExtensionHeader));
        let eight: Vec<(u8, &[u8])> = (0..8).map(|_| (60, DEST16)).collect();
        assert_eq!(
            walk_extension_headers(&chain(&eight, 6), 60).unwrap().count,
            8
        );
        // 6d: too many bytes (two 264-byte destination options headers).
        let mut big = vec![0u8; 264];
        big[1] = 32;
        let p = chain(&[(60, &big), (60, &big)], 6);
        assert_eq!(walk_extension_headers(&p, 60), Err(Error::ExtensionHeader));
        assert!(walk_extension_headers(&chain(&[(60, &big)], 6), 60).is_ok());
    }

    #[test]
    fn walk_stops_at_upper_protocols() {
        for nh in [6u8, 17, 58, 59, 50, 51, 135, 253] {
            let w = walk_extension_headers(&[], nh).unwrap();
            assert_eq!((w.upper_protocol, w.upper_offset, w.count), (nh, 0, 0));
        }
    }

    fn repr_strategy() -> impl Strategy<Value = Repr> {
        (
            any::<[u8; 16]>(),
            any::<[u8; 16]>(),
            1u8..=255,
            0usize..=2000,
            any::<u8>(),
            any::<u8>(),
            0u32..(1 << 20),
        )
            .prop_map(|(s, d, nh, len, hl, tc, fl)| Repr {
                src_addr: s.into(),
                dst_addr: d.into(),
                next_header: IpProtocol(nh),
                payload_len: len,
                hop_limit: hl,
                traffic_class: tc,
                flow_label: fl,
            })
    }

    proptest! {
        #[test]
        fn round_trip(repr in repr_strategy()) {
            let mut buf = vec![0xa5u8; 40 + repr.payload_len];
            repr.emit(&mut Packet::new_unchecked(&mut buf[..]));
            let p = Packet::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(Repr::parse(&p).unwrap(), repr);
            prop_assert_eq!(p.payload().len(), repr.payload_len);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..120), nh in any::<u8>()) {
            if let Ok(w) = walk_extension_headers(&bytes, nh) {
                prop_assert!(w.upper_offset <= bytes.len());
                prop_assert!(w.count <= MAX_EXT_HEADERS);
            }
            if let Ok(p) = Packet::new_checked(&bytes[..]) {
                let _ = (p.payload(), p.extension_headers(), Repr::parse(&p));
            }
        }
    }
}
