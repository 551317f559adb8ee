//! IPv4 headers (RFC 791), with the checks RFC 1812 §5.2.2 asks of a router.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version|  IHL  |   DSCP    |ECN|          Total Length         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |         Identification        |Flags|      Fragment Offset    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Time to Live |    Protocol   |         Header Checksum       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       Source Address                          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Destination Address                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Options (IHL > 5)                          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!   Flags: bit 0 reserved, bit 1 DF (Don't Fragment), bit 2 MF (More Fragments)
//! ```
//!
//! [`Packet::check_len`] (and so [`Packet::new_checked`]) checks, in this order, each with its own
//! error so the pipeline can count them apart (catalogue 4a, 4b, 4d, 4e):
//!
//! 1. fewer than 20 bytes: [`Error::Truncated`];
//! 2. version != 4: [`Error::BadVersion`];
//! 3. IHL < 5: [`Error::BadHeaderLen`];
//! 4. IHL × 4 > buffer: [`Error::Truncated`];
//! 5. total length < IHL × 4: [`Error::BadLength`];
//! 6. total length > buffer: [`Error::Truncated`].
//!
//! Bytes after the total length (Ethernet padding of minimum-size frames, catalogue L6) are not
//! part of the packet: [`Packet::payload`] ends at the total length. The checksum (4f), TTL (4g),
//! fragments (4h, [`Packet::is_fragment`]) and source-route options (4c,
//! [`Packet::source_route`]) are left to the caller, which owns those drop decisions.

use core::net::Ipv4Addr;

use crate::checksum;
use crate::field::{read_u16, write_u16};
use crate::ip::IpProtocol;
use crate::{Error, Result};

mod field {
    use crate::field::Field;

    pub(crate) const VER_IHL: usize = 0;
    pub(crate) const DSCP_ECN: usize = 1;
    pub(crate) const LENGTH: Field = 2..4;
    pub(crate) const IDENT: Field = 4..6;
    pub(crate) const FLG_OFF: Field = 6..8;
    pub(crate) const TTL: usize = 8;
    pub(crate) const PROTOCOL: usize = 9;
    pub(crate) const CHECKSUM: Field = 10..12;
    pub(crate) const SRC_ADDR: Field = 12..16;
    pub(crate) const DST_ADDR: Field = 16..20;
}

/// Length of the IPv4 header without options.
pub const HEADER_LEN: usize = field::DST_ADDR.end;
/// Largest IPv4 header (IHL = 15).
pub const MAX_HEADER_LEN: usize = 60;

/// IPv4 option type: End of Option List.
pub const OPT_EOL: u8 = 0;
/// IPv4 option type: No Operation.
pub const OPT_NOP: u8 = 1;
/// IPv4 option type: Loose Source and Record Route.
pub const OPT_LSRR: u8 = 131;
/// Record route (RFC 791): every router on the way writes its address into it.
pub const OPT_RR: u8 = 7;
/// Internet timestamp (RFC 791): routers may write their address next to the time.
pub const OPT_TS: u8 = 68;
/// IPv4 option type: Strict Source and Record Route.
pub const OPT_SSRR: u8 = 137;

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1FFF;

/// A read/write view of an IPv4 packet.
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

    /// Checks version, IHL and total length against the buffer (see the module doc for order).
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 4 {
            return Err(Error::BadVersion);
        }
        let header_len = self.header_len();
        if header_len < HEADER_LEN {
            return Err(Error::BadHeaderLen);
        }
        if header_len > len {
            return Err(Error::Truncated);
        }
        let total_len = usize::from(self.total_len());
        if total_len < header_len {
            return Err(Error::BadLength);
        }
        if total_len > len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version field (4 for a checked packet).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL × 4), options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0F) * 4
    }

    /// Differentiated Services Code Point (6 bits).
    #[inline]
    pub fn dscp(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] >> 2
    }

    /// Explicit Congestion Notification (2 bits).
    #[inline]
    pub fn ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] & 0x03
    }

    /// The whole DSCP/ECN (former TOS) byte.
    #[inline]
    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    /// Total Length: header plus payload, in bytes.
    #[inline]
    pub fn total_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// Identification.
    #[inline]
    pub fn ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::IDENT.start)
    }

    /// Don't Fragment flag.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLG_OFF.start) & FLAG_DF != 0
    }

    /// More Fragments flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLG_OFF.start) & FLAG_MF != 0
    }

    /// Fragment Offset, in 8-octet units (as on the wire; multiply by 8 for bytes).
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::FLG_OFF.start) & OFFSET_MASK
    }

    /// True if this is a fragment: MF set or a non-zero offset.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLG_OFF.start) & (FLAG_MF | OFFSET_MASK) != 0
    }

    /// Time to Live.
    #[doc(alias = "ttl")]
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Protocol of the payload.
    #[inline]
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[field::PROTOCOL])
    }

    /// Protocol of the payload (same as [`Self::next_header`], RFC 791's name).
    #[inline]
    pub fn protocol(&self) -> IpProtocol {
        self.next_header()
    }

    /// Header Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// Source address octets.
    #[inline]
    pub fn src_octets(&self) -> [u8; 4] {
        let b = self.buffer.as_ref();
        [b[12], b[13], b[14], b[15]]
    }

    /// Destination address octets.
    #[inline]
    pub fn dst_octets(&self) -> [u8; 4] {
        let b = self.buffer.as_ref();
        [b[16], b[17], b[18], b[19]]
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.src_octets())
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.dst_octets())
    }

    /// The header, options included (`[..header_len]`, clamped to the buffer).
    #[inline]
    pub fn header(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let end = self.header_len().min(b.len());
        &b[..end]
    }

    /// The options (`[20..header_len]`; empty when IHL = 5).
    #[inline]
    pub fn options(&self) -> &[u8] {
        self.header().get(HEADER_LEN..).unwrap_or(&[])
    }

    /// The payload, from the header end to the total length (trailing padding excluded).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let (start, end) = self.payload_range();
        &self.buffer.as_ref()[start..end]
    }

    /// `header_len..total_len`, clamped so that it is always a valid range of the buffer.
    #[inline]
    fn payload_range(&self) -> (usize, usize) {
        let len = self.buffer.as_ref().len();
        let end = usize::from(self.total_len()).min(len);
        let start = self.header_len().min(end);
        (start, end)
    }

    /// True if the header checksum verifies.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::data(self.header()) == 0xFFFF
    }

    /// Walks the options: `Ok(true)` if they hold LSRR or SSRR (catalogue 4c).
    ///
    /// EOL ends the walk, NOP is one byte, every other option has a length byte; a length < 2 or
    /// running past the header is `Err(Malformed)`. The walk is bounded by the 40 option bytes.
    pub fn source_route(&self) -> Result<bool> {
        let opts = self.options();
        let mut i = 0;
        while i < opts.len() {
            match opts[i] {
                OPT_EOL => return Ok(false),
                OPT_NOP => i += 1,
                kind => {
                    let len = usize::from(*opts.get(i + 1).ok_or(Error::Malformed)?);
                    if len < 2 || i + len > opts.len() {
                        return Err(Error::Malformed);
                    }
                    if kind == OPT_LSRR || kind == OPT_SSRR {
                        return Ok(true);
                    }
                    i += len;
                }
            }
        }
        Ok(false)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the version field.
    #[inline]
    pub fn set_version(&mut self, version: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0x0F) | (version << 4);
    }

    /// Sets the header length in bytes (rounded down to a multiple of 4, at most 60).
    #[inline]
    pub fn set_header_len(&mut self, len: usize) {
        let ihl = (len / 4).min(15) as u8;
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0xF0) | ihl;
    }

    /// Sets the DSCP (6 bits).
    #[inline]
    pub fn set_dscp(&mut self, dscp: u8) {
        let b = &mut self.buffer.as_mut()[field::DSCP_ECN];
        *b = (*b & 0x03) | (dscp << 2);
    }

    /// Sets the ECN (2 bits).
    #[inline]
    pub fn set_ecn(&mut self, ecn: u8) {
        let b = &mut self.buffer.as_mut()[field::DSCP_ECN];
        *b = (*b & 0xFC) | (ecn & 0x03);
    }

    /// Sets the whole DSCP/ECN byte.
    #[inline]
    pub fn set_dscp_ecn(&mut self, v: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = v;
    }

    /// Sets the Total Length.
    #[inline]
    pub fn set_total_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH.start, len);
    }

    /// Sets the Identification.
    #[inline]
    pub fn set_ident(&mut self, ident: u16) {
        write_u16(self.buffer.as_mut(), field::IDENT.start, ident);
    }

    #[inline]
    fn set_flg_off(&mut self, mask: u16, value: u16) {
        let old = read_u16(self.buffer.as_ref(), field::FLG_OFF.start);
        write_u16(
            self.buffer.as_mut(),
            field::FLG_OFF.start,
            (old & !mask) | (value & mask),
        );
    }

    /// Clears the reserved flag, DF, MF and the fragment offset.
    #[inline]
    pub fn clear_flags(&mut self) {
        self.set_flg_off(0xFFFF, 0);
    }

    /// Sets the Don't Fragment flag.
    #[inline]
    pub fn set_dont_frag(&mut self, v: bool) {
        self.set_flg_off(FLAG_DF, if v { FLAG_DF } else { 0 });
    }

    /// Sets the More Fragments flag.
    #[inline]
    pub fn set_more_frags(&mut self, v: bool) {
        self.set_flg_off(FLAG_MF, if v { FLAG_MF } else { 0 });
    }

    /// Sets the Fragment Offset, in 8-octet units (13 bits).
    #[inline]
    pub fn set_frag_offset(&mut self, offset: u16) {
        self.set_flg_off(OFFSET_MASK, offset);
    }

    /// Sets the Time to Live.
    #[inline]
    pub fn set_hop_limit(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    /// Sets the Protocol.
    #[inline]
    pub fn set_next_header(&mut self, protocol: IpProtocol) {
        self.buffer.as_mut()[field::PROTOCOL] = protocol.0;
    }

    /// Sets the Header Checksum field.
    #[inline]
    pub fn set_checksum(&mut self, checksum: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM.start, checksum);
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// Recomputes and stores the header checksum.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = checksum::data(self.header());
        self.set_checksum(checksum::finish(sum));
    }

    /// Overwrites every option whose kind is in `kinds` (type, length and data) with NOPs, in
    /// place; the header keeps its length, so nothing after it moves. Returns how many options
    /// were blanked; the caller recomputes the header checksum. The walk is the one of
    /// [`Packet::source_route`]: it stops at EOL, and `Err(Malformed)` leaves the options as
    /// they were.
    pub fn blank_options(&mut self, kinds: &[u8]) -> Result<usize> {
        let opts = self.options_mut();
        let mut spans = [(0usize, 0usize); 20];
        let mut n = 0;
        let mut i = 0;
        while i < opts.len() {
            match opts[i] {
                OPT_EOL => break,
                OPT_NOP => i += 1,
                kind => {
                    let len = usize::from(*opts.get(i + 1).ok_or(Error::Malformed)?);
                    if len < 2 || i + len > opts.len() {
                        return Err(Error::Malformed);
                    }
                    if kinds.contains(&kind) && n < spans.len() {
                        spans[n] = (i, i + len);
                        n += 1;
                    }
                    i += len;
                }
            }
        }
        for &(a, b) in &spans[..n] {
            opts[a..b].fill(OPT_NOP);
        }
        Ok(n)
    }

    /// The options, mutably.
    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = self.header_len().min(self.buffer.as_ref().len());
        self.buffer
            .as_mut()
            .get_mut(HEADER_LEN..end)
            .unwrap_or(&mut [])
    }

    /// The payload, mutably (ends at the total length).
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

/// A high-level description of an IPv4 header without options and not fragmented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source address.
    pub src_addr: Ipv4Addr,
    /// Destination address.
    pub dst_addr: Ipv4Addr,
    /// Protocol of the payload.
    pub next_header: IpProtocol,
    /// Payload length in bytes (total length − 20).
    pub payload_len: usize,
    /// Time to Live.
    pub hop_limit: u8,
    /// The DSCP/ECN byte.
    pub dscp_ecn: u8,
    /// Identification.
    pub ident: u16,
    /// Don't Fragment flag.
    pub dont_frag: bool,
}

impl Repr {
    /// Parses a checked packet: `Err(BadChecksum)` if the checksum fails, `Err(Unsupported)` for
    /// a fragment (this description cannot hold one). Options are skipped, not kept.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr> {
        packet.check_len()?;
        if !packet.verify_checksum() {
            return Err(Error::BadChecksum);
        }
        if packet.is_fragment() {
            return Err(Error::Unsupported);
        }
        Ok(Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            next_header: packet.next_header(),
            payload_len: usize::from(packet.total_len()) - packet.header_len(),
            hop_limit: packet.hop_limit(),
            dscp_ecn: packet.dscp_ecn(),
            ident: packet.ident(),
            dont_frag: packet.dont_frag(),
        })
    }

    /// Header length this description emits: 20.
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header (IHL 5, checksum filled) into a buffer of at least 20 bytes.
    ///
    /// A `payload_len` above 65515 is saturated to a total length of 65535.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_version(4);
        packet.set_header_len(HEADER_LEN);
        packet.set_dscp_ecn(self.dscp_ecn);
        let total = u16::try_from(HEADER_LEN.saturating_add(self.payload_len)).unwrap_or(u16::MAX);
        packet.set_total_len(total);
        packet.set_ident(self.ident);
        packet.clear_flags();
        packet.set_dont_frag(self.dont_frag);
        packet.set_hop_limit(self.hop_limit);
        packet.set_next_header(self.next_header);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        packet.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // 20-byte header + 4 bytes of payload + 2 bytes of Ethernet padding.
    static PACKET_BYTES: [u8; 26] = [
        0x45, 0xb9, 0x00, 0x18, // v4 IHL 5, DSCP 46 ECN 1, total 24
        0x12, 0x34, 0x40, 0x00, // ident, DF
        0x40, 0x06, 0x00, 0x00, // TTL 64, TCP, checksum (filled below)
        0xc0, 0xa8, 0x00, 0x01, // 192.168.0.1
        0x0a, 0x00, 0x00, 0x02, // 10.0.0.2
        0xaa, 0xbb, 0xcc, 0xdd, // payload
        0x00, 0x00, // padding
    ];

    fn fixture() -> [u8; 26] {
        let mut b = PACKET_BYTES;
        let c = checksum::finish(checksum::data(&b[..20]));
        b[10..12].copy_from_slice(&c.to_be_bytes());
        b
    }

    #[test]
    fn deconstruct() {
        let bytes = fixture();
        let p = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.dscp(), 46);
        assert_eq!(p.ecn(), 1);
        assert_eq!(p.total_len(), 24);
        assert_eq!(p.ident(), 0x1234);
        assert!(p.dont_frag());
        assert!(!p.more_frags());
        assert_eq!(p.frag_offset(), 0);
        assert!(!p.is_fragment());
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.next_header(), IpProtocol::TCP);
        assert_eq!(p.protocol(), IpProtocol::TCP);
        assert_eq!(p.src_addr(), Ipv4Addr::new(192, 168, 0, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(p.src_octets(), [192, 168, 0, 1]);
        assert_eq!(p.dst_octets(), [10, 0, 0, 2]);
        assert!(p.options().is_empty());
        // Padding after the total length is not payload (catalogue L6).
        assert_eq!(p.payload(), &[0xaa, 0xbb, 0xcc, 0xdd]);
        assert!(p.verify_checksum());
        assert_eq!(p.source_route(), Ok(false));
    }

    #[test]
    fn construct() {
        let mut bytes = [0xa5u8; 26];
        let mut p = Packet::new_unchecked(&mut bytes[..]);
        p.set_version(4);
        p.set_header_len(20);
        p.set_dscp(46);
        p.set_ecn(1);
        p.set_total_len(24);
        p.set_ident(0x1234);
        p.clear_flags();
        p.set_dont_frag(true);
        p.set_more_frags(false);
        p.set_frag_offset(0);
        p.set_hop_limit(64);
        p.set_next_header(IpProtocol::TCP);
        p.set_src_addr(Ipv4Addr::new(192, 168, 0, 1));
        p.set_dst_addr(Ipv4Addr::new(10, 0, 0, 2));
        p.fill_checksum();
        p.payload_mut().copy_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd]);
        bytes[24..].fill(0);
        assert_eq!(bytes, fixture());
    }

    #[test]
    fn repr_parse_emit() {
        let bytes = fixture();
        let repr = Repr::parse(&Packet::new_checked(&bytes[..]).unwrap()).unwrap();
        let expect = Repr {
            src_addr: Ipv4Addr::new(192, 168, 0, 1),
            dst_addr: Ipv4Addr::new(10, 0, 0, 2),
            next_header: IpProtocol::TCP,
            payload_len: 4,
            hop_limit: 64,
            dscp_ecn: 0xb9,
            ident: 0x1234,
            dont_frag: true,
        };
        assert_eq!(repr, expect);
        let mut out = [0xa5u8; 20];
        repr.emit(&mut Packet::new_unchecked(&mut out[..]));
        assert_eq!(out, bytes[..20]);
    }

    #[test]
    fn errors_in_order() {
        let b = fixture();
        // 4a..4e, each with its own error.
        assert_eq!(Packet::new_checked(&b[..19]).unwrap_err(), Error::Truncated);
        let mut v = b;
        v[0] = 0x65;
        assert_eq!(Packet::new_checked(&v[..]).unwrap_err(), Error::BadVersion);
        let mut v = b;
        v[0] = 0x44;
        assert_eq!(
            Packet::new_checked(&v[..]).unwrap_err(),
            Error::BadHeaderLen
        );
        let mut v = b;
        v[0] = 0x4f; // 60-byte header in a 26-byte buffer
        assert_eq!(Packet::new_checked(&v[..]).unwrap_err(), Error::Truncated);
        let mut v = b;
        v[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(Packet::new_checked(&v[..]).unwrap_err(), Error::BadLength);
        let mut v = b;
        v[2..4].copy_from_slice(&27u16.to_be_bytes());
        assert_eq!(Packet::new_checked(&v[..]).unwrap_err(), Error::Truncated);
        // Exactly total length is fine, and so is a header-only packet.
        assert!(Packet::new_checked(&b[..24]).is_ok());
        let mut v = b;
        v[2..4].copy_from_slice(&20u16.to_be_bytes());
        assert!(Packet::new_checked(&v[..]).unwrap().payload().is_empty());
    }

    #[test]
    fn bad_checksum() {
        let mut b = fixture();
        assert!(Packet::new_checked(&b[..]).unwrap().verify_checksum());
        b[8] = 63;
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(!p.verify_checksum());
        assert_eq!(Repr::parse(&p).unwrap_err(), Error::BadChecksum);
    }

    #[test]
    fn fragments() {
        let mut b = fixture();
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_more_frags(true);
        assert!(p.is_fragment() && p.more_frags() && p.dont_frag());
        p.set_more_frags(false);
        p.set_frag_offset(0x1fff);
        assert!(p.is_fragment());
        assert_eq!(p.frag_offset(), 0x1fff);
        assert!(p.dont_frag());
        p.fill_checksum();
        assert_eq!(Repr::parse(&p).unwrap_err(), Error::Unsupported);
    }

    fn with_options(opts: &[u8]) -> [u8; 64] {
        let mut b = [0u8; 64];
        let hl = 20 + opts.len();
        b[0] = 0x40 | (hl / 4) as u8;
        b[2..4].copy_from_slice(&(hl as u16).to_be_bytes());
        b[20..hl].copy_from_slice(opts);
        b
    }

    #[test]
    fn options_walk() {
        // NOP, NOP, Router Alert (148, len 4), EOL.
        let b = with_options(&[1, 1, 148, 4, 0, 0, 0, 0]);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.options(), &[1, 1, 148, 4, 0, 0, 0, 0]);
        assert_eq!(p.source_route(), Ok(false));
        // LSRR and SSRR after a NOP.
        let b = with_options(&[1, 131, 7, 4, 10, 0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap().source_route(),
            Ok(true)
        );
        let b = with_options(&[137, 7, 4, 10, 0, 0, 1, 0]);
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap().source_route(),
            Ok(true)
        );
        // Length < 2, past the end, missing length byte.
        let b = with_options(&[148, 1, 0, 0]);
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap().source_route(),
            Err(Error::Malformed)
        );
        let b = with_options(&[1, 1, 148, 9]);
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap().source_route(),
            Err(Error::Malformed)
        );
        let b = with_options(&[1, 1, 1, 148]);
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap().source_route(),
            Err(Error::Malformed)
        );
        // LSRR after EOL is not looked at.
        let b = with_options(&[0, 131, 7, 4, 10, 0, 0, 1]);
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap().source_route(),
            Ok(false)
        );
    }

    #[test]
    fn setters_do_not_break_payload() {
        // Corrupting lengths through setters after new_checked must not make accessors panic.
        let mut b = fixture();
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.set_total_len(u16::MAX);
        p.set_header_len(60);
        let _ = (p.payload().len(), p.options().len(), p.payload_mut().len());
        let _ = (p.options_mut().len(), p.verify_checksum(), p.source_route());
        p.set_total_len(0);
        let _ = (p.payload().len(), p.options().len(), p.source_route());
    }

    fn repr_strategy() -> impl Strategy<Value = Repr> {
        (
            any::<[u8; 4]>(),
            any::<[u8; 4]>(),
            any::<u8>(),
            0usize..=65515,
            any::<u8>(),
            any::<u8>(),
            any::<u16>(),
            any::<bool>(),
        )
            .prop_map(|(s, d, p, len, ttl, tos, id, df)| Repr {
                src_addr: s.into(),
                dst_addr: d.into(),
                next_header: IpProtocol(p),
                payload_len: len,
                hop_limit: ttl,
                dscp_ecn: tos,
                ident: id,
                dont_frag: df,
            })
    }

    proptest! {
        #[test]
        fn round_trip(repr in repr_strategy()) {
            let mut buf = vec![0xa5u8; 20 + repr.payload_len];
            repr.emit(&mut Packet::new_unchecked(&mut buf[..]));
            let p = Packet::new_checked(&buf[..]).unwrap();
            prop_assert!(p.verify_checksum());
            prop_assert_eq!(Repr::parse(&p).unwrap(), repr);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(p) = Packet::new_checked(&bytes[..]) {
                let _ = (p.payload(), p.options(), p.source_route(), p.verify_checksum());
                let _ = (p.src_addr(), p.dst_addr(), p.is_fragment(), Repr::parse(&p));
            }
        }
    }
}
