//! ARP for IPv4 over Ethernet (RFC 826), and nothing else.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |    Hardware Type (HTYPE = 1)  |   Protocol Type (PTYPE=0x0800)|
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  HLEN = 6     |  PLEN = 4     |        Operation (OPER)       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |           Sender Hardware Address (SHA, 6 bytes)              |
//! +                               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                               | Sender Protocol Address (SPA) |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     SPA (cont.)               | Target Hardware Address (THA) |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+                               +
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |            Target Protocol Address (TPA, 4 bytes)             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! [`Packet::new_checked`] refuses anything but Ethernet/IPv4 ARP (catalogue L4): fewer than 28
//! bytes is [`Error::Truncated`]; HTYPE != 1, PTYPE != 0x0800, HLEN != 6 or PLEN != 4 is
//! [`Error::Malformed`]. Trailing Ethernet padding is ignored. Whether a request is for one of
//! our addresses, and gratuitous-ARP policy (L5), is the pipeline's business.

use core::net::Ipv4Addr;

use crate::ethernet::{EtherType, MacAddr};
use crate::field::{read_u16, write_u16};
use crate::{Error, Result};

mod field {
    use crate::field::Field;

    pub(crate) const HTYPE: Field = 0..2;
    pub(crate) const PTYPE: Field = 2..4;
    pub(crate) const HLEN: usize = 4;
    pub(crate) const PLEN: usize = 5;
    pub(crate) const OPER: Field = 6..8;
    pub(crate) const SHA: Field = 8..14;
    pub(crate) const SPA: Field = 14..18;
    pub(crate) const THA: Field = 18..24;
    pub(crate) const TPA: Field = 24..28;
}

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = field::TPA.end;
/// Hardware type of Ethernet.
pub const HTYPE_ETHERNET: u16 = 1;

/// The ARP operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// ARP request (1).
    Request,
    /// ARP reply (2).
    Reply,
    /// Any other value.
    Unknown(u16),
}

impl From<u16> for Operation {
    #[inline]
    fn from(v: u16) -> Self {
        match v {
            1 => Operation::Request,
            2 => Operation::Reply,
            v => Operation::Unknown(v),
        }
    }
}

impl From<Operation> for u16 {
    #[inline]
    fn from(v: Operation) -> Self {
        match v {
            Operation::Request => 1,
            Operation::Reply => 2,
            Operation::Unknown(v) => v,
        }
    }
}

/// A read/write view of an ARP packet.
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

    /// `Err(Truncated)` below 28 bytes, `Err(Malformed)` unless Ethernet/IPv4 (see module doc).
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < PACKET_LEN {
            return Err(Error::Truncated);
        }
        if self.hardware_type() != HTYPE_ETHERNET
            || self.protocol_type() != EtherType::IPV4
            || self.hardware_len() != 6
            || self.protocol_len() != 4
        {
            return Err(Error::Malformed);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Hardware type (HTYPE).
    #[inline]
    pub fn hardware_type(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::HTYPE.start)
    }

    /// Protocol type (PTYPE).
    #[inline]
    pub fn protocol_type(&self) -> EtherType {
        EtherType(read_u16(self.buffer.as_ref(), field::PTYPE.start))
    }

    /// Hardware address length (HLEN).
    #[inline]
    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    /// Protocol address length (PLEN).
    #[inline]
    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    /// Operation (OPER).
    #[inline]
    pub fn operation(&self) -> Operation {
        Operation::from(read_u16(self.buffer.as_ref(), field::OPER.start))
    }

    #[inline]
    fn mac_at(&self, f: crate::field::Field) -> MacAddr {
        let mut a = [0u8; 6];
        a.copy_from_slice(&self.buffer.as_ref()[f]);
        MacAddr(a)
    }

    #[inline]
    fn ip_at(&self, f: crate::field::Field) -> [u8; 4] {
        let mut a = [0u8; 4];
        a.copy_from_slice(&self.buffer.as_ref()[f]);
        a
    }

    /// Sender hardware address (SHA).
    #[inline]
    pub fn source_hardware_addr(&self) -> MacAddr {
        self.mac_at(field::SHA)
    }

    /// Sender protocol address (SPA).
    #[inline]
    pub fn source_protocol_addr(&self) -> [u8; 4] {
        self.ip_at(field::SPA)
    }

    /// Target hardware address (THA).
    #[inline]
    pub fn target_hardware_addr(&self) -> MacAddr {
        self.mac_at(field::THA)
    }

    /// Target protocol address (TPA).
    #[inline]
    pub fn target_protocol_addr(&self) -> [u8; 4] {
        self.ip_at(field::TPA)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the hardware type.
    #[inline]
    pub fn set_hardware_type(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::HTYPE.start, v);
    }

    /// Sets the protocol type.
    #[inline]
    pub fn set_protocol_type(&mut self, v: EtherType) {
        write_u16(self.buffer.as_mut(), field::PTYPE.start, v.0);
    }

    /// Sets the hardware address length.
    #[inline]
    pub fn set_hardware_len(&mut self, v: u8) {
        self.buffer.as_mut()[field::HLEN] = v;
    }

    /// Sets the protocol address length.
    #[inline]
    pub fn set_protocol_len(&mut self, v: u8) {
        self.buffer.as_mut()[field::PLEN] = v;
    }

    /// Sets the operation.
    #[inline]
    pub fn set_operation(&mut self, op: Operation) {
        write_u16(self.buffer.as_mut(), field::OPER.start, op.into());
    }

    /// Sets the sender hardware address.
    #[inline]
    pub fn set_source_hardware_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::SHA].copy_from_slice(&addr.0);
    }

    /// Sets the sender protocol address.
    #[inline]
    pub fn set_source_protocol_addr(&mut self, addr: [u8; 4]) {
        self.buffer.as_mut()[field::SPA].copy_from_slice(&addr);
    }

    /// Sets the target hardware address.
    #[inline]
    pub fn set_target_hardware_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::THA].copy_from_slice(&addr.0);
    }

    /// Sets the target protocol address.
    #[inline]
    pub fn set_target_protocol_addr(&mut self, addr: [u8; 4]) {
        self.buffer.as_mut()[field::TPA].copy_from_slice(&addr);
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// Turns a received request into our reply, in place.
///
/// The target becomes the requester (THA/TPA = old SHA/SPA), the sender becomes us (SHA =
/// `our_mac`, SPA = the old TPA), and the operation becomes Reply. The caller has checked that
/// the packet is a request for one of our addresses, and fixes the Ethernet header (destination
/// = the requester, source = `our_mac`).
#[inline]
pub fn make_reply_in_place<T: AsRef<[u8]> + AsMut<[u8]>>(pkt: &mut Packet<T>, our_mac: MacAddr) {
    let requester_mac = pkt.source_hardware_addr();
    let requester_ip = pkt.source_protocol_addr();
    let our_ip = pkt.target_protocol_addr();
    pkt.set_operation(Operation::Reply);
    pkt.set_source_hardware_addr(our_mac);
    pkt.set_source_protocol_addr(our_ip);
    pkt.set_target_hardware_addr(requester_mac);
    pkt.set_target_protocol_addr(requester_ip);
}

/// A high-level description of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Operation.
    pub operation: Operation,
    /// Sender hardware address.
    pub source_hardware_addr: MacAddr,
    /// Sender protocol address.
    pub source_protocol_addr: Ipv4Addr,
    /// Target hardware address.
    pub target_hardware_addr: MacAddr,
    /// Target protocol address.
    pub target_protocol_addr: Ipv4Addr,
}

impl Repr {
    /// Parses a packet (running [`Packet::check_len`]).
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr> {
        packet.check_len()?;
        Ok(Repr {
            operation: packet.operation(),
            source_hardware_addr: packet.source_hardware_addr(),
            source_protocol_addr: Ipv4Addr::from(packet.source_protocol_addr()),
            target_hardware_addr: packet.target_hardware_addr(),
            target_protocol_addr: Ipv4Addr::from(packet.target_protocol_addr()),
        })
    }

    /// Length this description emits: 28.
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        PACKET_LEN
    }

    /// Writes the packet into a buffer of at least 28 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_hardware_type(HTYPE_ETHERNET);
        packet.set_protocol_type(EtherType::IPV4);
        packet.set_hardware_len(6);
        packet.set_protocol_len(4);
        packet.set_operation(self.operation);
        packet.set_source_hardware_addr(self.source_hardware_addr);
        packet.set_source_protocol_addr(self.source_protocol_addr.octets());
        packet.set_target_hardware_addr(self.target_hardware_addr);
        packet.set_target_protocol_addr(self.target_protocol_addr.octets());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    static REQUEST_BYTES: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // Ethernet, IPv4, 6, 4, request
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // SHA
        0x0a, 0x00, 0x00, 0x01, // SPA 10.0.0.1
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // THA (unknown)
        0x0a, 0x00, 0x00, 0x64, // TPA 10.0.0.100
    ];

    static REPLY_BYTES: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x02, // reply
        0x02, 0x00, 0x00, 0x00, 0x00, 0x64, // SHA = ours
        0x0a, 0x00, 0x00, 0x64, // SPA 10.0.0.100
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // THA = requester
        0x0a, 0x00, 0x00, 0x01, // TPA 10.0.0.1
    ];

    const REQUESTER: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const OURS: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x64]);

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&REQUEST_BYTES[..]).unwrap();
        assert_eq!(p.hardware_type(), 1);
        assert_eq!(p.protocol_type(), EtherType::IPV4);
        assert_eq!(p.hardware_len(), 6);
        assert_eq!(p.protocol_len(), 4);
        assert_eq!(p.operation(), Operation::Request);
        assert_eq!(p.source_hardware_addr(), REQUESTER);
        assert_eq!(p.source_protocol_addr(), [10, 0, 0, 1]);
        assert_eq!(p.target_hardware_addr(), MacAddr::ZERO);
        assert_eq!(p.target_protocol_addr(), [10, 0, 0, 100]);
    }

    #[test]
    fn construct() {
        let mut bytes = [0xa5u8; 28];
        let mut p = Packet::new_unchecked(&mut bytes[..]);
        p.set_hardware_type(1);
        p.set_protocol_type(EtherType::IPV4);
        p.set_hardware_len(6);
        p.set_protocol_len(4);
        p.set_operation(Operation::Request);
        p.set_source_hardware_addr(REQUESTER);
        p.set_source_protocol_addr([10, 0, 0, 1]);
        p.set_target_hardware_addr(MacAddr::ZERO);
        p.set_target_protocol_addr([10, 0, 0, 100]);
        assert_eq!(bytes, REQUEST_BYTES);
    }

    #[test]
    fn reply_in_place() {
        let mut bytes = REQUEST_BYTES;
        let mut p = Packet::new_checked(&mut bytes[..]).unwrap();
        make_reply_in_place(&mut p, OURS);
        assert_eq!(bytes, REPLY_BYTES);
    }

    #[test]
    fn repr() {
        let repr = Repr::parse(&Packet::new_checked(&REPLY_BYTES[..]).unwrap()).unwrap();
        assert_eq!(
            repr,
            Repr {
                operation: Operation::Reply,
                source_hardware_addr: OURS,
                source_protocol_addr: Ipv4Addr::new(10, 0, 0, 100),
                target_hardware_addr: REQUESTER,
                target_protocol_addr: Ipv4Addr::new(10, 0, 0, 1),
            }
        );
        let mut out = [0xa5u8; 28];
        repr.emit(&mut Packet::new_unchecked(&mut out[..]));
        assert_eq!(out, REPLY_BYTES);
    }

    #[test]
    fn malformed() {
        assert_eq!(
            Packet::new_checked(&REQUEST_BYTES[..27]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(Packet::new_checked(&[][..]).unwrap_err(), Error::Truncated);
        for (at, v) in [(1, 6u8), (2, 0x86), (4, 8), (5, 16)] {
            let mut b = REQUEST_BYTES;
            b[at] = v;
            assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::Malformed);
        }
        // Ethernet padding after the 28 bytes is fine.
        let mut padded = [0u8; 46];
        padded[..28].copy_from_slice(&REQUEST_BYTES);
        assert!(Packet::new_checked(&padded[..]).is_ok());
        // Unknown operations parse (the pipeline ignores them).
        let mut b = REQUEST_BYTES;
        b[7] = 9;
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap().operation(),
            Operation::Unknown(9)
        );
    }

    proptest! {
        #[test]
        fn round_trip(op in any::<u16>(), sha in any::<[u8; 6]>(), spa in any::<[u8; 4]>(),
                      tha in any::<[u8; 6]>(), tpa in any::<[u8; 4]>()) {
            let repr = Repr {
                operation: Operation::from(op),
                source_hardware_addr: MacAddr(sha),
                source_protocol_addr: spa.into(),
                target_hardware_addr: MacAddr(tha),
                target_protocol_addr: tpa.into(),
            };
            let mut buf = [0xa5u8; 28];
            repr.emit(&mut Packet::new_unchecked(&mut buf[..]));
            prop_assert_eq!(Repr::parse(&Packet::new_checked(&buf[..]).unwrap()).unwrap(), repr);
            prop_assert_eq!(u16::from(Operation::from(op)), op);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(mut p) = Packet::new_checked(bytes.clone()) {
                let _ = Repr::parse(&p);
                make_reply_in_place(&mut p, MacAddr::BROADCAST);
            }
        }
    }
}
