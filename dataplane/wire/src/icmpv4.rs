//! ICMP for IPv4 (RFC 792), with the next-hop MTU of RFC 1191.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     Type      |     Code      |          Checksum             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Echo: Identifier             |  Echo: Sequence Number        |
//! |  Dest. Unreachable: unused    |  code 4: Next-Hop MTU         |
//! |  Param. Problem: Pointer | unused                             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Echo data, or for errors: the quoted IP header + >= 8 bytes  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! The view's buffer is the whole ICMP message (the IPv4 payload, bounded by the total length):
//! the checksum covers all of it and there is no pseudo-header. [`Packet::new_checked`] only
//! needs the 8-byte header. The quote of an error is read with [`crate::ip::parse_quoted_v4`]
//! (catalogue I1, I2); [`Packet::quotes_error`] detects an error about an error (I3), and
//! [`Packet::next_hop_mtu`] feeds the I4 policy.

use crate::checksum;
use crate::field::{read_u16, write_u16};
use crate::ip::{self, IpProtocol};
use crate::{Error, Result};

/// An ICMPv4 message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Message(pub u8);

impl Message {
    /// Echo Reply.
    pub const ECHO_REPLY: Message = Message(0);
    /// Destination Unreachable.
    pub const DST_UNREACHABLE: Message = Message(3);
    /// Source Quench (deprecated, RFC 6633).
    pub const SOURCE_QUENCH: Message = Message(4);
    /// Redirect.
    pub const REDIRECT: Message = Message(5);
    /// Echo Request.
    pub const ECHO_REQUEST: Message = Message(8);
    /// Time Exceeded.
    pub const TIME_EXCEEDED: Message = Message(11);
    /// Parameter Problem.
    pub const PARAM_PROBLEM: Message = Message(12);

    /// True for error messages (RFC 1122 §3.2.2): those must never be answered with an error.
    #[inline]
    pub fn is_error(self) -> bool {
        matches!(self.0, 3 | 4 | 5 | 11 | 12)
    }
}

/// Codes of Destination Unreachable (RFC 792, RFC 1812 §5.2.7.1).
pub mod dst_unreachable {
    /// Net unreachable.
    pub const NET: u8 = 0;
    /// Host unreachable.
    pub const HOST: u8 = 1;
    /// Protocol unreachable.
    pub const PROTOCOL: u8 = 2;
    /// Port unreachable.
    pub const PORT: u8 = 3;
    /// Fragmentation needed and DF set (carries the next-hop MTU).
    pub const FRAG_NEEDED: u8 = 4;
    /// Source route failed.
    pub const SOURCE_ROUTE_FAILED: u8 = 5;
    /// Communication administratively prohibited.
    pub const ADMIN_PROHIBITED: u8 = 13;
}

/// Codes of Time Exceeded.
pub mod time_exceeded {
    /// Time to live exceeded in transit.
    pub const TTL: u8 = 0;
    /// Fragment reassembly time exceeded.
    pub const REASSEMBLY: u8 = 1;
}

mod field {
    use crate::field::{Field, Rest};

    pub(crate) const TYPE: usize = 0;
    pub(crate) const CODE: usize = 1;
    pub(crate) const CHECKSUM: Field = 2..4;
    pub(crate) const ECHO_IDENT: Field = 4..6;
    pub(crate) const ECHO_SEQNO: Field = 6..8;
    pub(crate) const UNUSED: Field = 4..6;
    pub(crate) const NEXT_HOP_MTU: Field = 6..8;
    pub(crate) const POINTER: usize = 4;
    pub(crate) const DATA: Rest = 8..;
}

/// Length of the ICMP header (type, code, checksum and the 4 type-specific bytes).
pub const HEADER_LEN: usize = field::DATA.start;
/// The minimum quote of an error: an option-less IPv4 header plus 64 bits (RFC 792).
pub const ERROR_QUOTE_V4: usize = 28;
/// The largest quote that keeps an error within 576 bytes (RFC 1812 §4.3.2.3): 576 − 20 − 8.
pub const ERROR_QUOTE_V4_MAX: usize = 548;

/// A read/write view of an ICMPv4 message.
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

    /// `Err(Truncated)` below the 8-byte header.
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

    /// Message type.
    #[inline]
    pub fn msg_type(&self) -> Message {
        Message(self.buffer.as_ref()[field::TYPE])
    }

    /// Message code.
    #[inline]
    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// Echo identifier (Echo Request/Reply).
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ECHO_IDENT.start)
    }

    /// Echo sequence number (Echo Request/Reply).
    #[inline]
    pub fn echo_seq_no(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ECHO_SEQNO.start)
    }

    /// Next-hop MTU (Destination Unreachable, code 4; RFC 1191). 0 from pre-RFC 1191 routers.
    #[inline]
    pub fn next_hop_mtu(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::NEXT_HOP_MTU.start)
    }

    /// Pointer to the faulty octet (Parameter Problem).
    #[inline]
    pub fn pointer(&self) -> u8 {
        self.buffer.as_ref()[field::POINTER]
    }

    /// True if this is an error message.
    #[inline]
    pub fn is_error(&self) -> bool {
        self.msg_type().is_error()
    }

    /// Everything after the 8-byte header: echo data, or the quote of an error.
    #[inline]
    pub fn data(&self) -> &[u8] {
        self.buffer.as_ref().get(field::DATA).unwrap_or(&[])
    }

    /// The quote of an error message (same bytes as [`Self::data`]).
    #[inline]
    pub fn quoted(&self) -> &[u8] {
        self.data()
    }

    /// True if this error quotes an ICMP error (an error about an error, catalogue I3).
    ///
    /// False for a non-error or an unparsable quote (the pipeline refuses those anyway).
    #[inline]
    pub fn quotes_error(&self) -> bool {
        if !self.is_error() {
            return false;
        }
        match ip::parse_quoted_v4(self.quoted()) {
            Ok(q) if q.protocol == IpProtocol::ICMP.0 => {
                Message((q.src_port >> 8) as u8).is_error()
            }
            _ => false,
        }
    }

    /// True if the checksum over the whole message verifies.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::data(self.buffer.as_ref()) == 0xFFFF
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the message type.
    #[inline]
    pub fn set_msg_type(&mut self, t: Message) {
        self.buffer.as_mut()[field::TYPE] = t.0;
    }

    /// Sets the message code.
    #[inline]
    pub fn set_msg_code(&mut self, code: u8) {
        self.buffer.as_mut()[field::CODE] = code;
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, c: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM.start, c);
    }

    /// Sets the echo identifier.
    #[inline]
    pub fn set_echo_ident(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::ECHO_IDENT.start, v);
    }

    /// Sets the echo sequence number.
    #[inline]
    pub fn set_echo_seq_no(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::ECHO_SEQNO.start, v);
    }

    /// Sets the next-hop MTU and zeroes the unused half of the word.
    #[inline]
    pub fn set_next_hop_mtu(&mut self, mtu: u16) {
        write_u16(self.buffer.as_mut(), field::UNUSED.start, 0);
        write_u16(self.buffer.as_mut(), field::NEXT_HOP_MTU.start, mtu);
    }

    /// Sets the Parameter Problem pointer and zeroes the unused bytes.
    #[inline]
    pub fn set_pointer(&mut self, pointer: u8) {
        self.clear_rest_of_header();
        self.buffer.as_mut()[field::POINTER] = pointer;
    }

    /// Zeroes the 4 type-specific header bytes.
    #[inline]
    pub fn clear_rest_of_header(&mut self) {
        self.buffer.as_mut()[field::ECHO_IDENT.start..HEADER_LEN].fill(0);
    }

    /// Everything after the header, mutably.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut().get_mut(field::DATA).unwrap_or(&mut [])
    }

    /// Computes and stores the checksum over the whole buffer.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::finish(checksum::data(self.buffer.as_ref()));
        self.set_checksum(c);
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// A high-level description of an ICMPv4 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Repr<'a> {
    /// Echo Request.
    EchoRequest {
        /// Identifier.
        ident: u16,
        /// Sequence number.
        seq_no: u16,
        /// Data.
        data: &'a [u8],
    },
    /// Echo Reply.
    EchoReply {
        /// Identifier.
        ident: u16,
        /// Sequence number.
        seq_no: u16,
        /// Data.
        data: &'a [u8],
    },
    /// Destination Unreachable.
    DstUnreachable {
        /// Code (see [`dst_unreachable`]).
        code: u8,
        /// Next-hop MTU: meaningful for [`dst_unreachable::FRAG_NEEDED`], 0 otherwise.
        mtu: u16,
        /// The quoted packet.
        quoted: &'a [u8],
    },
    /// Time Exceeded.
    TimeExceeded {
        /// Code (see [`time_exceeded`]).
        code: u8,
        /// The quoted packet.
        quoted: &'a [u8],
    },
    /// Parameter Problem.
    ParamProblem {
        /// Code.
        code: u8,
        /// Offset of the faulty octet in the quote.
        pointer: u8,
        /// The quoted packet.
        quoted: &'a [u8],
    },
    /// Any other message; its body is not kept (emitted as zeros).
    Other {
        /// Message type (not one of the above).
        msg_type: Message,
        /// Code.
        code: u8,
    },
}

impl<'a> Repr<'a> {
    /// Parses a message: `Err(BadChecksum)` if the checksum fails, `Err(Malformed)` for an echo
    /// with a non-zero code.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&'a T>) -> Result<Repr<'a>> {
        packet.check_len()?;
        if !packet.verify_checksum() {
            return Err(Error::BadChecksum);
        }
        let data = packet.buffer.as_ref().get(field::DATA).unwrap_or(&[]);
        let code = packet.msg_code();
        let repr = match packet.msg_type() {
            Message::ECHO_REQUEST | Message::ECHO_REPLY if code != 0 => {
                return Err(Error::Malformed)
            }
            Message::ECHO_REQUEST => Repr::EchoRequest {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data,
            },
            Message::ECHO_REPLY => Repr::EchoReply {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data,
            },
            Message::DST_UNREACHABLE => Repr::DstUnreachable {
                code,
                mtu: packet.next_hop_mtu(),
                quoted: data,
            },
            Message::TIME_EXCEEDED => Repr::TimeExceeded { code, quoted: data },
            Message::PARAM_PROBLEM => Repr::ParamProblem {
                code,
                pointer: packet.pointer(),
                quoted: data,
            },
            msg_type => Repr::Other { msg_type, code },
        };
        Ok(repr)
    }

    /// True for error messages.
    #[inline]
    pub fn is_error(&self) -> bool {
        match self {
            Repr::EchoRequest { .. } | Repr::EchoReply { .. } => false,
            Repr::DstUnreachable { .. } | Repr::TimeExceeded { .. } => true,
            Repr::ParamProblem { .. } => true,
            Repr::Other { msg_type, .. } => msg_type.is_error(),
        }
    }

    /// Length this description emits: 8 + data or quote.
    #[inline]
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
            + match self {
                Repr::EchoRequest { data, .. } | Repr::EchoReply { data, .. } => data.len(),
                Repr::DstUnreachable { quoted, .. }
                | Repr::TimeExceeded { quoted, .. }
                | Repr::ParamProblem { quoted, .. } => quoted.len(),
                Repr::Other { .. } => 0,
            }
    }

    /// Writes the message into a buffer of exactly [`Self::buffer_len`] bytes and fills the
    /// checksum (which covers the whole buffer).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.clear_rest_of_header();
        let (msg_type, code, body): (Message, u8, &[u8]) = match *self {
            Repr::EchoRequest {
                ident,
                seq_no,
                data,
            } => {
                packet.set_echo_ident(ident);
                packet.set_echo_seq_no(seq_no);
                (Message::ECHO_REQUEST, 0, data)
            }
            Repr::EchoReply {
                ident,
                seq_no,
                data,
            } => {
                packet.set_echo_ident(ident);
                packet.set_echo_seq_no(seq_no);
                (Message::ECHO_REPLY, 0, data)
            }
            Repr::DstUnreachable { code, mtu, quoted } => {
                packet.set_next_hop_mtu(mtu);
                (Message::DST_UNREACHABLE, code, quoted)
            }
            Repr::TimeExceeded { code, quoted } => (Message::TIME_EXCEEDED, code, quoted),
            Repr::ParamProblem {
                code,
                pointer,
                quoted,
            } => {
                packet.set_pointer(pointer);
                (Message::PARAM_PROBLEM, code, quoted)
            }
            Repr::Other { msg_type, code } => (msg_type, code, &[]),
        };
        packet.set_msg_type(msg_type);
        packet.set_msg_code(code);
        if let Some(dst) = packet.data_mut().get_mut(..body.len()) {
            dst.copy_from_slice(body);
        }
        packet.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    static ECHO_BYTES: [u8; 12] = [
        0x08, 0x00, 0x8e, 0xfe, // echo request, checksum
        0x12, 0x34, 0xab, 0xcd, // ident, seq
        0xaa, 0x00, 0x00, 0xff, // data
    ];

    static ECHO_DATA: [u8; 4] = [0xaa, 0x00, 0x00, 0xff];

    // Frag needed, MTU 1400, quoting 20 + 8 bytes (a TCP segment 198.51.100.1:50000 -> :443).
    static FRAG_NEEDED_BYTES: [u8; 36] = [
        0x03, 0x04, 0x00, 0x00, 0x00, 0x00, 0x05, 0x78, // type 3 code 4, MTU 1400
        0x45, 0x00, 0x05, 0xdc, 0x00, 0x01, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00, // quoted IPv4
        0xc6, 0x33, 0x64, 0x01, 0xcb, 0x00, 0x71, 0x05, // addresses
        0xc3, 0x50, 0x01, 0xbb, 0x01, 0x02, 0x03, 0x04, // ports, seq
    ];

    fn with_checksum<const N: usize>(mut b: [u8; N]) -> [u8; N] {
        b[2..4].fill(0);
        let c = checksum::finish(checksum::data(&b));
        b[2..4].copy_from_slice(&c.to_be_bytes());
        b
    }

    #[test]
    fn deconstruct_echo() {
        let p = Packet::new_checked(&ECHO_BYTES[..]).unwrap();
        assert_eq!(p.msg_type(), Message::ECHO_REQUEST);
        assert_eq!(p.msg_code(), 0);
        assert_eq!(p.checksum(), 0x8efe);
        assert_eq!(p.echo_ident(), 0x1234);
        assert_eq!(p.echo_seq_no(), 0xabcd);
        assert_eq!(p.data(), &ECHO_DATA);
        assert!(!p.is_error());
        assert!(!p.quotes_error());
        assert!(p.verify_checksum());
    }

    #[test]
    fn construct_echo() {
        let mut bytes = [0xa5u8; 12];
        let mut p = Packet::new_unchecked(&mut bytes[..]);
        p.set_msg_type(Message::ECHO_REQUEST);
        p.set_msg_code(0);
        p.set_echo_ident(0x1234);
        p.set_echo_seq_no(0xabcd);
        p.data_mut().copy_from_slice(&ECHO_DATA);
        p.fill_checksum();
        assert_eq!(bytes, ECHO_BYTES);
    }

    #[test]
    fn repr_echo() {
        let repr = Repr::parse(&Packet::new_checked(&ECHO_BYTES[..]).unwrap()).unwrap();
        assert_eq!(
            repr,
            Repr::EchoRequest {
                ident: 0x1234,
                seq_no: 0xabcd,
                data: &ECHO_DATA
            }
        );
        let mut out = [0xa5u8; 12];
        repr.emit(&mut Packet::new_unchecked(&mut out[..]));
        assert_eq!(out, ECHO_BYTES);
    }

    #[test]
    fn frag_needed() {
        let bytes = with_checksum(FRAG_NEEDED_BYTES);
        let p = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.msg_type(), Message::DST_UNREACHABLE);
        assert_eq!(p.msg_code(), dst_unreachable::FRAG_NEEDED);
        assert_eq!(p.next_hop_mtu(), 1400);
        assert!(p.is_error());
        assert!(!p.quotes_error());
        assert_eq!(p.quoted().len(), ERROR_QUOTE_V4);
        let q = ip::parse_quoted_v4(p.quoted()).unwrap();
        assert_eq!((q.src_port, q.dst_port), (50000, 443));
        let repr = Repr::parse(&p).unwrap();
        assert_eq!(
            repr,
            Repr::DstUnreachable {
                code: 4,
                mtu: 1400,
                quoted: &FRAG_NEEDED_BYTES[8..]
            }
        );
        assert!(repr.is_error());
        let mut out = [0xa5u8; 36];
        repr.emit(&mut Packet::new_unchecked(&mut out[..]));
        assert_eq!(out, bytes);
    }

    #[test]
    fn error_about_error() {
        // Time exceeded quoting an ICMP destination unreachable.
        let mut b = FRAG_NEEDED_BYTES;
        b[0] = 11;
        b[1] = 0;
        b[17] = 1; // quoted protocol ICMP
        b[28] = 3; // quoted ICMP type: destination unreachable
        let b = with_checksum(b);
        assert!(Packet::new_checked(&b[..]).unwrap().quotes_error());
        // ... but quoting an echo request is fine.
        let mut b2 = b;
        b2[28] = 8;
        assert!(!Packet::new_checked(&b2[..]).unwrap().quotes_error());
    }

    #[test]
    fn truncated_and_bad() {
        assert_eq!(
            Packet::new_checked(&ECHO_BYTES[..7]).unwrap_err(),
            Error::Truncated
        );
        assert!(Packet::new_checked(&ECHO_BYTES[..8]).is_ok());
        let mut b = ECHO_BYTES;
        b[11] = 0;
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(!p.verify_checksum());
        assert_eq!(Repr::parse(&p).unwrap_err(), Error::BadChecksum);
        let b = with_checksum({
            let mut b = ECHO_BYTES;
            b[1] = 1;
            b
        });
        assert_eq!(
            Repr::parse(&Packet::new_checked(&b[..]).unwrap()).unwrap_err(),
            Error::Malformed
        );
    }

    #[test]
    fn message_is_error() {
        for t in 0..=255u8 {
            assert_eq!(Message(t).is_error(), [3, 4, 5, 11, 12].contains(&t));
        }
    }

    fn repr_strategy(buf: &[u8]) -> impl Strategy<Value = Repr<'_>> {
        (
            0u8..6,
            any::<u16>(),
            any::<u16>(),
            any::<u8>(),
            any::<u8>(),
            0..=buf.len(),
        )
            .prop_map(move |(kind, a, b, code, t, n)| {
                let body = &buf[..n];
                match kind {
                    0 => Repr::EchoRequest {
                        ident: a,
                        seq_no: b,
                        data: body,
                    },
                    1 => Repr::EchoReply {
                        ident: a,
                        seq_no: b,
                        data: body,
                    },
                    2 => Repr::DstUnreachable {
                        code,
                        mtu: a,
                        quoted: body,
                    },
                    3 => Repr::TimeExceeded { code, quoted: body },
                    4 => Repr::ParamProblem {
                        code,
                        pointer: t,
                        quoted: body,
                    },
                    _ => {
                        let t = if [0, 3, 8, 11, 12].contains(&t) {
                            13
                        } else {
                            t
                        };
                        Repr::Other {
                            msg_type: Message(t),
                            code,
                        }
                    }
                }
            })
    }

    static BODY: [u8; 64] = {
        let mut b = [0u8; 64];
        let mut i = 0;
        while i < 64 {
            b[i] = (i as u8).wrapping_mul(37) ^ 0x5a;
            i += 1;
        }
        b
    };

    proptest! {
        #[test]
        fn round_trip(repr in repr_strategy(&BODY)) {
            let mut buf = vec![0xa5u8; repr.buffer_len()];
            repr.emit(&mut Packet::new_unchecked(&mut buf[..]));
            let p = Packet::new_checked(&buf[..]).unwrap();
            prop_assert!(p.verify_checksum());
            prop_assert_eq!(Repr::parse(&p).unwrap(), repr);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(p) = Packet::new_checked(&bytes[..]) {
                let _ = (p.data(), p.quotes_error(), p.next_hop_mtu(), Repr::parse(&p));
            }
        }
    }
}
