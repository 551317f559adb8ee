//! UDP datagrams (RFC 768; IPv6 rules from RFC 8200 §8.1).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |          Source Port          |       Destination Port        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |            Length             |           Checksum            |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                          data ...                             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! [`Packet::check_len`]: fewer than 8 bytes is [`Error::Truncated`], a Length below 8 is
//! [`Error::BadLength`], a Length above the buffer is [`Error::Truncated`]. Bytes after Length
//! are ignored. Checksum: over IPv4 a zero field means "not computed" and verifies; over IPv6 a
//! zero field is invalid; a computed zero is sent as 0xFFFF. The checksum covers the pseudo-header
//! and the first Length bytes.

use core::net::IpAddr;

use crate::checksum;
use crate::field::{read_u16, write_u16};
use crate::ip::IpProtocol;
use crate::{Error, Result};

mod field {
    use crate::field::Field;

    pub(crate) const SRC_PORT: Field = 0..2;
    pub(crate) const DST_PORT: Field = 2..4;
    pub(crate) const LENGTH: Field = 4..6;
    pub(crate) const CHECKSUM: Field = 6..8;
}

/// Length of the UDP header.
pub const HEADER_LEN: usize = field::CHECKSUM.end;

/// A read/write view of a UDP datagram.
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

    /// Checks the header and the Length field against the buffer (see the module doc).
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let field_len = usize::from(self.len());
        if field_len < HEADER_LEN {
            return Err(Error::BadLength);
        }
        if field_len > len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::SRC_PORT.start)
    }

    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::DST_PORT.start)
    }

    /// Length: header plus data, in bytes.
    #[inline]
    pub fn len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// True if Length says there is no data.
    #[inline]
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// The datagram as Length says (header and data), clamped to the buffer.
    #[inline]
    fn datagram(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[..usize::from(self.len()).min(b.len())]
    }

    /// The data, up to Length.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        self.datagram().get(HEADER_LEN..).unwrap_or(&[])
    }

    /// True if the checksum verifies (or is absent over IPv4; see the module doc).
    #[inline]
    pub fn verify_checksum(&self, src: &IpAddr, dst: &IpAddr) -> bool {
        if self.checksum() == 0 {
            return src.is_ipv4() && dst.is_ipv4();
        }
        let dgram = self.datagram();
        let ph = checksum::pseudo_header(src, dst, IpProtocol::UDP.0, dgram.len() as u32);
        checksum::combine(&[ph, checksum::data(dgram)]) == 0xFFFF
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the source port.
    #[inline]
    pub fn set_src_port(&mut self, port: u16) {
        write_u16(self.buffer.as_mut(), field::SRC_PORT.start, port);
    }

    /// Sets the destination port.
    #[inline]
    pub fn set_dst_port(&mut self, port: u16) {
        write_u16(self.buffer.as_mut(), field::DST_PORT.start, port);
    }

    /// Sets the Length.
    #[inline]
    pub fn set_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH.start, len);
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, checksum: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM.start, checksum);
    }

    /// Computes and stores the checksum over the pseudo-header and Length bytes (0 sent as
    /// 0xFFFF).
    #[inline]
    pub fn fill_checksum(&mut self, src: &IpAddr, dst: &IpAddr) {
        self.set_checksum(0);
        let dgram = self.datagram();
        let ph = checksum::pseudo_header(src, dst, IpProtocol::UDP.0, dgram.len() as u32);
        let c = checksum::finish(checksum::combine(&[ph, checksum::data(dgram)]));
        self.set_checksum(if c == 0 { 0xFFFF } else { c });
    }

    /// The data, mutably, up to Length.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len()).min(self.buffer.as_ref().len());
        self.buffer
            .as_mut()
            .get_mut(HEADER_LEN..end)
            .unwrap_or(&mut [])
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// A high-level description of a UDP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Data length in bytes (Length − 8).
    pub payload_len: usize,
}

impl Repr {
    /// Parses a datagram (running [`Packet::check_len`]); `Err(BadChecksum)` if the checksum
    /// fails.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>, src: &IpAddr, dst: &IpAddr) -> Result<Repr> {
        packet.check_len()?;
        if !packet.verify_checksum(src, dst) {
            return Err(Error::BadChecksum);
        }
        Ok(Repr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            payload_len: usize::from(packet.len()) - HEADER_LEN,
        })
    }

    /// Length this description emits: 8 + `payload_len`.
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes the header into a buffer of at least [`Self::buffer_len`] bytes, lets
    /// `emit_payload` write the data, then fills the checksum.
    ///
    /// A length above 65535 is saturated.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Packet<T>,
        src: &IpAddr,
        dst: &IpAddr,
        emit_payload: impl FnOnce(&mut [u8]),
    ) {
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_len(u16::try_from(self.buffer_len()).unwrap_or(u16::MAX));
        emit_payload(packet.payload_mut());
        packet.fill_checksum(src, dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{Ipv4Addr, Ipv6Addr};
    use proptest::prelude::*;

    fn v4() -> (IpAddr, IpAddr) {
        (
            Ipv4Addr::new(192, 168, 1, 1).into(),
            Ipv4Addr::new(192, 168, 1, 2).into(),
        )
    }

    fn v6() -> (IpAddr, IpAddr) {
        (
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).into(),
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2).into(),
        )
    }

    // 53 -> 4096, length 12, checksum over 192.168.1.1 -> 192.168.1.2, "abcd", + padding.
    static PACKET_BYTES: [u8; 14] = [
        0x00, 0x35, 0x10, 0x00, 0x00, 0x0c, 0xa7, 0x86, 0x61, 0x62, 0x63, 0x64, 0x00, 0x00,
    ];

    #[test]
    fn deconstruct() {
        let (s, d) = v4();
        let p = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(p.src_port(), 53);
        assert_eq!(p.dst_port(), 4096);
        assert_eq!(p.len(), 12);
        assert!(!p.is_empty());
        assert_eq!(p.checksum(), 0xa786);
        assert_eq!(p.payload(), b"abcd");
        assert!(p.verify_checksum(&s, &d));
        assert!(!p.verify_checksum(&d, &d));
    }

    #[test]
    fn construct() {
        let (s, d) = v4();
        let mut bytes = [0xa5u8; 14];
        let mut p = Packet::new_unchecked(&mut bytes[..]);
        p.set_src_port(53);
        p.set_dst_port(4096);
        p.set_len(12);
        p.payload_mut().copy_from_slice(b"abcd");
        p.fill_checksum(&s, &d);
        bytes[12..].fill(0);
        assert_eq!(bytes, PACKET_BYTES);
    }

    #[test]
    fn checksum_reference() {
        // Independent computation of the fixture checksum: pseudo-header + datagram, by hand.
        let ph: [u8; 12] = [192, 168, 1, 1, 192, 168, 1, 2, 0, 17, 0, 12];
        let mut all = ph.to_vec();
        all.extend_from_slice(&PACKET_BYTES[..12]);
        all[12 + 6] = 0;
        all[12 + 7] = 0;
        assert_eq!(checksum::finish(checksum::data(&all)), 0xa786);
    }

    #[test]
    fn zero_checksum() {
        let (s4, d4) = v4();
        let (s6, d6) = v6();
        let mut b = PACKET_BYTES;
        b[6..8].fill(0);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum(&s4, &d4));
        assert!(!p.verify_checksum(&s6, &d6));
    }

    #[test]
    fn computed_zero_is_sent_as_ffff() {
        // Choose the data so the checksum computes to 0: make the sum 0xFFFF.
        let (s, d) = v6();
        let mut b = [0u8; 10];
        b[4..6].copy_from_slice(&10u16.to_be_bytes());
        let ph = checksum::pseudo_header(&s, &d, 17, 10);
        let partial = checksum::combine(&[ph, checksum::data(&b)]);
        b[8..10].copy_from_slice(&(!partial).to_be_bytes());
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.fill_checksum(&s, &d);
        assert_eq!(p.checksum(), 0xFFFF);
        assert!(p.verify_checksum(&s, &d));
    }

    #[test]
    fn lengths() {
        assert_eq!(
            Packet::new_checked(&PACKET_BYTES[..7]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            Packet::new_checked(&PACKET_BYTES[..11]).unwrap_err(),
            Error::Truncated
        );
        let mut b = PACKET_BYTES;
        b[4..6].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::BadLength);
        b[4..6].copy_from_slice(&8u16.to_be_bytes());
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(p.is_empty() && p.payload().is_empty());
    }

    #[test]
    fn repr() {
        let (s, d) = v4();
        let p = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        let repr = Repr::parse(&p, &s, &d).unwrap();
        assert_eq!(
            repr,
            Repr {
                src_port: 53,
                dst_port: 4096,
                payload_len: 4
            }
        );
        let other: IpAddr = Ipv4Addr::new(192, 168, 1, 3).into();
        assert_eq!(Repr::parse(&p, &s, &other).unwrap_err(), Error::BadChecksum);
        let mut out = [0xa5u8; 12];
        repr.emit(&mut Packet::new_unchecked(&mut out[..]), &s, &d, |b| {
            b.copy_from_slice(b"abcd")
        });
        assert_eq!(out, PACKET_BYTES[..12]);
    }

    proptest! {
        #[test]
        fn round_trip(sp in any::<u16>(), dp in any::<u16>(),
                      data in proptest::collection::vec(any::<u8>(), 0..300), six in any::<bool>()) {
            let (s, d) = if six { v6() } else { v4() };
            let repr = Repr { src_port: sp, dst_port: dp, payload_len: data.len() };
            let mut buf = vec![0xa5u8; repr.buffer_len()];
            repr.emit(&mut Packet::new_unchecked(&mut buf[..]), &s, &d, |b| b.copy_from_slice(&data));
            let p = Packet::new_checked(&buf[..]).unwrap();
            prop_assert_ne!(p.checksum(), 0);
            prop_assert_eq!(Repr::parse(&p, &s, &d).unwrap(), repr);
            prop_assert_eq!(p.payload(), &data[..]);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let (s, d) = v4();
            if let Ok(p) = Packet::new_checked(&bytes[..]) {
                let _ = (p.payload(), p.verify_checksum(&s, &d), Repr::parse(&p, &s, &d));
            }
        }
    }
}
