//! Ethernet II frames (IEEE 802.3 §3.1.1 as used by RFC 894) with at most one IEEE 802.1Q tag.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Destination MAC address                    |
//! +                               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                               |                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+                               +
//! |                      Source MAC address                       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |           EtherType           |  payload ...                  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!
//! with an 802.1Q tag, bytes 12..18 are:
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |        TPID = 0x8100          | PCP |D|         VID           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     inner EtherType           |  payload ...
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! [`Frame`] is the raw 14-byte header view (its EtherType may be a TPID). [`parse_l2`] is what
//! the pipeline calls on a received frame: it resolves one 802.1Q tag and refuses stacked tags
//! (QinQ, TPID 0x88A8, or 0x8100 inside 0x8100) with [`Error::Unsupported`] (catalogue L1, L3).
//! A priority tag (VID 0) is returned as is; whether it counts as untagged is pipeline policy.

use core::fmt;

use crate::field::{read_u16, write_u16};
use crate::{Error, Result};

/// A 48-bit IEEE 802 MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// `00:00:00:00:00:00`.
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// The six octets.
    #[inline]
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// True for `ff:ff:ff:ff:ff:ff`.
    #[inline]
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// True when the I/G (group) bit is set; broadcast is a multicast address.
    #[inline]
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// True when the I/G bit is clear (the zero address counts as unicast; see [`Self::is_zero`]).
    #[inline]
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }

    /// True for `00:00:00:00:00:00`.
    #[inline]
    pub fn is_zero(&self) -> bool {
        *self == Self::ZERO
    }

    /// True when the U/L bit is set (locally administered).
    #[inline]
    pub fn is_local(&self) -> bool {
        self.0[0] & 0x02 != 0
    }
}

impl From<[u8; 6]> for MacAddr {
    #[inline]
    fn from(b: [u8; 6]) -> Self {
        MacAddr(b)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// An EtherType (or, at offset 12 of a tagged frame, a TPID).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EtherType(pub u16);

impl EtherType {
    /// Internet Protocol version 4.
    pub const IPV4: EtherType = EtherType(0x0800);
    /// Address Resolution Protocol.
    pub const ARP: EtherType = EtherType(0x0806);
    /// Internet Protocol version 6.
    pub const IPV6: EtherType = EtherType(0x86DD);
    /// IEEE 802.1Q customer VLAN tag (TPID).
    pub const VLAN: EtherType = EtherType(0x8100);
    /// IEEE 802.1ad service VLAN tag (QinQ outer TPID).
    pub const QINQ: EtherType = EtherType(0x88A8);
}

impl From<u16> for EtherType {
    #[inline]
    fn from(v: u16) -> Self {
        EtherType(v)
    }
}

impl From<EtherType> for u16 {
    #[inline]
    fn from(v: EtherType) -> Self {
        v.0
    }
}

impl fmt::Display for EtherType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::IPV4 => f.write_str("IPv4"),
            Self::ARP => f.write_str("ARP"),
            Self::IPV6 => f.write_str("IPv6"),
            Self::VLAN => f.write_str("802.1Q"),
            Self::QINQ => f.write_str("802.1ad"),
            EtherType(v) => write!(f, "0x{v:04x}"),
        }
    }
}

mod field {
    use crate::field::{Field, Rest};

    pub(crate) const DESTINATION: Field = 0..6;
    pub(crate) const SOURCE: Field = 6..12;
    pub(crate) const ETHERTYPE: Field = 12..14;
    pub(crate) const PAYLOAD: Rest = 14..;
    // Within an 802.1Q-tagged frame.
    pub(crate) const VLAN_TCI: Field = 14..16;
    pub(crate) const INNER_ETHERTYPE: Field = 16..18;
}

/// Length of the untagged Ethernet II header.
pub const HEADER_LEN: usize = field::PAYLOAD.start;
/// Length of an 802.1Q tag (TPID + TCI).
pub const VLAN_TAG_LEN: usize = 4;
/// Length of an Ethernet II header carrying one 802.1Q tag.
pub const VLAN_HEADER_LEN: usize = HEADER_LEN + VLAN_TAG_LEN;

/// A read/write view of an Ethernet II frame (the untagged 14-byte header).
#[derive(Debug, Clone)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps a buffer without checking it (for emission into a buffer the caller sized).
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Frame<T> {
        Frame { buffer }
    }

    /// Wraps a buffer after [`Self::check_len`].
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Frame<T>> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// `Err(Truncated)` if the buffer is shorter than the 14-byte header.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// Returns the underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Length of the (untagged) header: 14.
    #[inline]
    pub const fn header_len() -> usize {
        HEADER_LEN
    }

    /// Destination MAC address.
    #[inline]
    pub fn dst_addr(&self) -> MacAddr {
        let mut a = [0u8; 6];
        a.copy_from_slice(&self.buffer.as_ref()[field::DESTINATION]);
        MacAddr(a)
    }

    /// Source MAC address.
    #[inline]
    pub fn src_addr(&self) -> MacAddr {
        let mut a = [0u8; 6];
        a.copy_from_slice(&self.buffer.as_ref()[field::SOURCE]);
        MacAddr(a)
    }

    /// EtherType at offset 12 (a TPID if the frame is tagged).
    #[inline]
    pub fn ethertype(&self) -> EtherType {
        EtherType(read_u16(self.buffer.as_ref(), field::ETHERTYPE.start))
    }

    /// Everything after the 14-byte header (starts with the TCI if the frame is tagged).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        self.buffer.as_ref().get(field::PAYLOAD).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Sets the destination MAC address.
    #[inline]
    pub fn set_dst_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&addr.0);
    }

    /// Sets the source MAC address.
    #[inline]
    pub fn set_src_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&addr.0);
    }

    /// Sets the EtherType at offset 12.
    #[inline]
    pub fn set_ethertype(&mut self, ethertype: EtherType) {
        write_u16(self.buffer.as_mut(), field::ETHERTYPE.start, ethertype.0);
    }

    /// Everything after the 14-byte header, mutably.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        self.buffer
            .as_mut()
            .get_mut(field::PAYLOAD)
            .unwrap_or(&mut [])
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Frame<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The Tag Control Information of an 802.1Q tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct VlanTci {
    /// Priority Code Point (3 bits).
    pub pcp: u8,
    /// Drop Eligible Indicator.
    pub dei: bool,
    /// VLAN identifier (12 bits; 0 = priority tag only, 0xFFF reserved).
    pub vid: u16,
}

impl VlanTci {
    /// Decodes the 16-bit TCI field.
    #[inline]
    pub const fn from_bits(tci: u16) -> VlanTci {
        VlanTci {
            pcp: (tci >> 13) as u8,
            dei: tci & 0x1000 != 0,
            vid: tci & 0x0FFF,
        }
    }

    /// Encodes into the 16-bit TCI field (out-of-range `pcp`/`vid` bits are masked off).
    #[inline]
    pub const fn to_bits(self) -> u16 {
        ((self.pcp as u16 & 0x7) << 13) | ((self.dei as u16) << 12) | (self.vid & 0x0FFF)
    }
}

/// The resolved link-layer header of a received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct L2Header {
    /// Destination MAC address.
    pub dst: MacAddr,
    /// Source MAC address.
    pub src: MacAddr,
    /// EtherType of the payload (the inner one if tagged).
    pub ethertype: EtherType,
    /// The 802.1Q tag, if any.
    pub vlan: Option<VlanTci>,
    /// Offset of the payload: 14, or 18 when tagged.
    pub header_len: usize,
}

/// Parses the link-layer header of a received frame, resolving at most one 802.1Q tag.
///
/// `Err(Truncated)` below 14 bytes or for a truncated tag; `Err(Unsupported)` for QinQ (outer
/// TPID 0x88A8, or a 0x8100/0x88A8 tag inside a 0x8100 tag).
#[inline]
pub fn parse_l2(buf: &[u8]) -> Result<L2Header> {
    let frame = Frame::new_checked(buf)?;
    let (ethertype, vlan, header_len) = match frame.ethertype() {
        EtherType::QINQ => return Err(Error::Unsupported),
        EtherType::VLAN => {
            if buf.len() < VLAN_HEADER_LEN {
                return Err(Error::Truncated);
            }
            let inner = EtherType(read_u16(buf, field::INNER_ETHERTYPE.start));
            if inner == EtherType::VLAN || inner == EtherType::QINQ {
                return Err(Error::Unsupported);
            }
            let tci = VlanTci::from_bits(read_u16(buf, field::VLAN_TCI.start));
            (inner, Some(tci), VLAN_HEADER_LEN)
        }
        other => (other, None, HEADER_LEN),
    };
    Ok(L2Header {
        dst: frame.dst_addr(),
        src: frame.src_addr(),
        ethertype,
        vlan,
        header_len,
    })
}

/// Writes an 802.1Q tag and the inner EtherType at bytes 12..18 of a frame.
///
/// `Err(Truncated)` if `buf` is shorter than 18 bytes.
#[inline]
pub fn write_vlan_tag(buf: &mut [u8], tci: VlanTci, inner: EtherType) -> Result<()> {
    if buf.len() < VLAN_HEADER_LEN {
        return Err(Error::Truncated);
    }
    write_u16(buf, field::ETHERTYPE.start, EtherType::VLAN.0);
    write_u16(buf, field::VLAN_TCI.start, tci.to_bits());
    write_u16(buf, field::INNER_ETHERTYPE.start, inner.0);
    Ok(())
}

/// Inserts an 802.1Q tag into an untagged frame that starts at `buf[4..]`.
///
/// The caller has made 4 bytes of headroom (e.g. `rte_pktmbuf_prepend`) so that `buf[4..]` is
/// the untagged frame; afterwards `buf` is the tagged frame. `Err(Truncated)` if `buf` is shorter
/// than 18 bytes.
#[inline]
pub fn push_vlan_tag(buf: &mut [u8], tci: VlanTci) -> Result<()> {
    if buf.len() < VLAN_HEADER_LEN {
        return Err(Error::Truncated);
    }
    buf.copy_within(VLAN_TAG_LEN..VLAN_TAG_LEN + 12, 0);
    write_u16(buf, field::ETHERTYPE.start, EtherType::VLAN.0);
    write_u16(buf, field::VLAN_TCI.start, tci.to_bits());
    Ok(())
}

/// Removes the 802.1Q tag of a tagged frame in place; the untagged frame is then `buf[4..]`.
///
/// Returns the removed tag. `Err(Truncated)` below 18 bytes, `Err(Malformed)` if the frame is
/// not 802.1Q-tagged.
#[inline]
pub fn pop_vlan_tag(buf: &mut [u8]) -> Result<VlanTci> {
    if buf.len() < VLAN_HEADER_LEN {
        return Err(Error::Truncated);
    }
    if read_u16(buf, field::ETHERTYPE.start) != EtherType::VLAN.0 {
        return Err(Error::Malformed);
    }
    let tci = VlanTci::from_bits(read_u16(buf, field::VLAN_TCI.start));
    buf.copy_within(0..12, VLAN_TAG_LEN);
    Ok(tci)
}

/// A high-level description of an Ethernet II header, optionally 802.1Q-tagged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source MAC address.
    pub src: MacAddr,
    /// Destination MAC address.
    pub dst: MacAddr,
    /// EtherType of the payload (inner, if tagged).
    pub ethertype: EtherType,
    /// The 802.1Q tag, if any.
    pub vlan: Option<VlanTci>,
}

impl Repr {
    /// Parses a frame's header with the rules of [`parse_l2`].
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(frame: &Frame<T>) -> Result<Repr> {
        let l2 = parse_l2(frame.buffer.as_ref())?;
        Ok(Repr {
            src: l2.src,
            dst: l2.dst,
            ethertype: l2.ethertype,
            vlan: l2.vlan,
        })
    }

    /// Header length this description emits: 14, or 18 when tagged.
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        match self.vlan {
            Some(_) => VLAN_HEADER_LEN,
            None => HEADER_LEN,
        }
    }

    /// Writes the header into `frame`, whose buffer is at least [`Self::buffer_len`] long.
    #[inline]
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, frame: &mut Frame<T>) {
        frame.set_dst_addr(self.dst);
        frame.set_src_addr(self.src);
        match self.vlan {
            Some(tci) => {
                // The buffer is documented to be >= 18 bytes: this only fails on caller misuse,
                // in which case the untagged part has been written and the tag is skipped.
                let _ = write_vlan_tag(frame.buffer.as_mut(), tci, self.ethertype);
            }
            None => frame.set_ethertype(self.ethertype),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    static FRAME_BYTES: [u8; 18] = [
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, // dst
        0x11, 0x12, 0x13, 0x14, 0x15, 0x16, // src
        0x08, 0x00, // IPv4
        0xaa, 0xbb, 0xcc, 0xdd, // payload
    ];

    static TAGGED_BYTES: [u8; 20] = [
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, // dst
        0x11, 0x12, 0x13, 0x14, 0x15, 0x16, // src
        0x81, 0x00, // TPID
        0xb0, 0x64, // PCP 5, DEI 1, VID 100
        0x86, 0xdd, // IPv6
        0xaa, 0xbb, // payload
    ];

    const DST: MacAddr = MacAddr([1, 2, 3, 4, 5, 6]);
    const SRC: MacAddr = MacAddr([0x11, 0x12, 0x13, 0x14, 0x15, 0x16]);
    const TCI: VlanTci = VlanTci {
        pcp: 5,
        dei: true,
        vid: 100,
    };

    #[test]
    fn deconstruct() {
        let frame = Frame::new_checked(&FRAME_BYTES[..]).unwrap();
        assert_eq!(frame.dst_addr(), DST);
        assert_eq!(frame.src_addr(), SRC);
        assert_eq!(frame.ethertype(), EtherType::IPV4);
        assert_eq!(frame.payload(), &[0xaa, 0xbb, 0xcc, 0xdd]);
        let l2 = parse_l2(&FRAME_BYTES).unwrap();
        assert_eq!(
            l2,
            L2Header {
                dst: DST,
                src: SRC,
                ethertype: EtherType::IPV4,
                vlan: None,
                header_len: 14
            }
        );
    }

    #[test]
    fn construct() {
        let mut bytes = [0xa5u8; 18];
        let mut frame = Frame::new_unchecked(&mut bytes[..]);
        frame.set_dst_addr(DST);
        frame.set_src_addr(SRC);
        frame.set_ethertype(EtherType::IPV4);
        frame
            .payload_mut()
            .copy_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd]);
        assert_eq!(bytes, FRAME_BYTES);
    }

    #[test]
    fn deconstruct_tagged() {
        let l2 = parse_l2(&TAGGED_BYTES).unwrap();
        assert_eq!(l2.dst, DST);
        assert_eq!(l2.src, SRC);
        assert_eq!(l2.ethertype, EtherType::IPV6);
        assert_eq!(l2.vlan, Some(TCI));
        assert_eq!(l2.header_len, 18);
        assert_eq!(&TAGGED_BYTES[l2.header_len..], &[0xaa, 0xbb]);
        let frame = Frame::new_checked(&TAGGED_BYTES[..]).unwrap();
        assert_eq!(frame.ethertype(), EtherType::VLAN);
    }

    #[test]
    fn construct_tagged() {
        let repr = Repr {
            src: SRC,
            dst: DST,
            ethertype: EtherType::IPV6,
            vlan: Some(TCI),
        };
        let mut bytes = [0xa5u8; 20];
        repr.emit(&mut Frame::new_unchecked(&mut bytes[..]));
        bytes[18..].copy_from_slice(&[0xaa, 0xbb]);
        assert_eq!(bytes, TAGGED_BYTES);
        assert_eq!(repr.buffer_len(), 18);
        assert_eq!(Repr::parse(&Frame::new_unchecked(&bytes)).unwrap(), repr);
    }

    #[test]
    fn truncated() {
        assert_eq!(
            Frame::new_checked(&FRAME_BYTES[..13]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(parse_l2(&[]).unwrap_err(), Error::Truncated);
        assert_eq!(parse_l2(&FRAME_BYTES[..13]).unwrap_err(), Error::Truncated);
        // A tag cut short.
        assert_eq!(parse_l2(&TAGGED_BYTES[..17]).unwrap_err(), Error::Truncated);
        assert!(parse_l2(&TAGGED_BYTES[..18]).is_ok());
        // A header with no payload is fine.
        assert!(Frame::new_checked(&FRAME_BYTES[..14])
            .unwrap()
            .payload()
            .is_empty());
    }

    #[test]
    fn qinq_unsupported() {
        let mut b = TAGGED_BYTES;
        b[12..14].copy_from_slice(&[0x88, 0xa8]);
        assert_eq!(parse_l2(&b).unwrap_err(), Error::Unsupported);
        let mut b = TAGGED_BYTES;
        b[16..18].copy_from_slice(&[0x81, 0x00]);
        assert_eq!(parse_l2(&b).unwrap_err(), Error::Unsupported);
        b[16..18].copy_from_slice(&[0x88, 0xa8]);
        assert_eq!(parse_l2(&b).unwrap_err(), Error::Unsupported);
    }

    #[test]
    fn push_pop() {
        let mut buf = [0u8; 22];
        buf[4..].copy_from_slice(&FRAME_BYTES);
        push_vlan_tag(&mut buf, TCI).unwrap();
        let l2 = parse_l2(&buf).unwrap();
        assert_eq!(
            (l2.ethertype, l2.vlan, l2.src, l2.dst),
            (EtherType::IPV4, Some(TCI), SRC, DST)
        );
        assert_eq!(pop_vlan_tag(&mut buf).unwrap(), TCI);
        assert_eq!(&buf[4..], &FRAME_BYTES);
        assert_eq!(pop_vlan_tag(&mut buf[4..]).unwrap_err(), Error::Malformed);
        assert_eq!(
            push_vlan_tag(&mut [0; 17], TCI).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(pop_vlan_tag(&mut [0; 17]).unwrap_err(), Error::Truncated);
    }

    #[test]
    fn mac_addr() {
        assert!(MacAddr::BROADCAST.is_broadcast());
        assert!(MacAddr::BROADCAST.is_multicast());
        assert!(!MacAddr::BROADCAST.is_unicast());
        assert!(MacAddr([0x01, 0x00, 0x5e, 0, 0, 1]).is_multicast());
        assert!(MacAddr([0x33, 0x33, 0, 0, 0, 1]).is_multicast());
        let u = MacAddr([0x00, 0x1b, 0x21, 1, 2, 3]);
        assert!(u.is_unicast() && !u.is_zero() && !u.is_local());
        assert!(MacAddr::ZERO.is_zero());
        assert!(MacAddr([0x02, 0, 0, 0, 0, 1]).is_local());
        assert_eq!(
            MacAddr([0xaa, 0xbb, 0x0c, 0, 0xee, 0xff]).to_string(),
            "aa:bb:0c:00:ee:ff"
        );
        assert_eq!(EtherType(0x88cc).to_string(), "0x88cc");
        assert_eq!(EtherType::IPV6.to_string(), "IPv6");
    }

    #[test]
    fn tci_bits() {
        assert_eq!(TCI.to_bits(), 0xb064);
        assert_eq!(VlanTci::from_bits(0xb064), TCI);
        let wide = VlanTci {
            pcp: 0xff,
            dei: false,
            vid: 0xffff,
        };
        assert_eq!(wide.to_bits(), 0xefff);
    }

    fn repr_strategy() -> impl Strategy<Value = Repr> {
        (
            any::<[u8; 6]>(),
            any::<[u8; 6]>(),
            any::<u16>(),
            proptest::option::of((0u8..8, any::<bool>(), 0u16..4096)),
        )
            .prop_filter_map("tags are not payload EtherTypes", |(s, d, et, vlan)| {
                if et == EtherType::VLAN.0 || et == EtherType::QINQ.0 {
                    return None;
                }
                Some(Repr {
                    src: MacAddr(s),
                    dst: MacAddr(d),
                    ethertype: EtherType(et),
                    vlan: vlan.map(|(pcp, dei, vid)| VlanTci { pcp, dei, vid }),
                })
            })
    }

    proptest! {
        #[test]
        fn round_trip(repr in repr_strategy()) {
            let mut buf = [0xa5u8; 18];
            let buf = &mut buf[..repr.buffer_len()];
            repr.emit(&mut Frame::new_unchecked(&mut *buf));
            prop_assert_eq!(Repr::parse(&Frame::new_checked(&*buf).unwrap()).unwrap(), repr);
            prop_assert_eq!(parse_l2(buf).unwrap().header_len, repr.buffer_len());
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = parse_l2(&bytes);
            if let Ok(f) = Frame::new_checked(&bytes[..]) {
                let _ = (f.dst_addr(), f.src_addr(), f.ethertype(), f.payload());
            }
        }
    }
}
