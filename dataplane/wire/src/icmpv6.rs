//! ICMPv6 (RFC 4443), with Neighbor Solicitation/Advertisement from RFC 4861.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     Type      |     Code      |          Checksum             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Echo: Identifier | Sequence No. / Packet Too Big: MTU /       |
//! | Param. Problem: Pointer / NA: R|S|O|Reserved / others: unused  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Echo data, or for errors: as much of the invoking packet as    |
//! | fits in 1280 bytes, or for NS/NA:                              |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                  Target Address (128 bits)                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   Options: Type | Length (8-octet units) | value ...          |
//! |   (1 = Source, 2 = Target Link-Layer Address: 6-byte MAC)      |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! The view's buffer is the whole ICMPv6 message (the upper-layer payload after the extension
//! headers, bounded by the payload length). The checksum covers the IPv6 pseudo-header with Next
//! Header 58 and the message length, so [`Packet::verify_checksum`] and
//! [`Packet::fill_checksum`] take the source and destination addresses.
//!
//! [`Packet::new_checked`] needs the 8-byte header, and 24 bytes for Neighbor Solicitation and
//! Advertisement (the target address). The pipeline still has to check what RFC 4861 §7.1 asks
//! of neighbor discovery at the IP layer (hop limit 255). Quotes are read with
//! [`crate::ip::parse_quoted_v6`] (catalogue I1, I2); [`Packet::quotes_error`] detects errors about
//! errors (I3); [`Packet::mtu`] of a Packet Too Big feeds the I4 policy.

use core::net::Ipv6Addr;

use crate::checksum;
use crate::ethernet::MacAddr;
use crate::field::{read_u16, read_u32, write_u16, write_u32};
use crate::ip::{self, IpProtocol};
use crate::{Error, Result};

/// An ICMPv6 message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Message(pub u8);

impl Message {
    /// Destination Unreachable.
    pub const DST_UNREACHABLE: Message = Message(1);
    /// Packet Too Big.
    pub const PACKET_TOO_BIG: Message = Message(2);
    /// Time Exceeded.
    pub const TIME_EXCEEDED: Message = Message(3);
    /// Parameter Problem.
    pub const PARAM_PROBLEM: Message = Message(4);
    /// Echo Request.
    pub const ECHO_REQUEST: Message = Message(128);
    /// Echo Reply.
    pub const ECHO_REPLY: Message = Message(129);
    /// Router Solicitation (RFC 4861).
    pub const ROUTER_SOLICIT: Message = Message(133);
    /// Router Advertisement (RFC 4861).
    pub const ROUTER_ADVERT: Message = Message(134);
    /// Neighbor Solicitation (RFC 4861).
    pub const NEIGHBOR_SOLICIT: Message = Message(135);
    /// Neighbor Advertisement (RFC 4861).
    pub const NEIGHBOR_ADVERT: Message = Message(136);
    /// Redirect (RFC 4861).
    pub const REDIRECT: Message = Message(137);

    /// True for error messages: types 0–127 (RFC 4443 §2.1).
    #[inline]
    pub fn is_error(self) -> bool {
        self.0 < 128
    }
}

/// Codes of Destination Unreachable.
pub mod dst_unreachable {
    /// No route to destination.
    pub const NO_ROUTE: u8 = 0;
    /// Communication with destination administratively prohibited.
    pub const ADMIN_PROHIBITED: u8 = 1;
    /// Beyond scope of source address.
    pub const BEYOND_SCOPE: u8 = 2;
    /// Address unreachable.
    pub const ADDRESS: u8 = 3;
    /// Port unreachable.
    pub const PORT: u8 = 4;
    /// Source address failed ingress/egress policy.
    pub const FAILED_POLICY: u8 = 5;
    /// Reject route to destination.
    pub const REJECT_ROUTE: u8 = 6;
}

/// Codes of Time Exceeded.
pub mod time_exceeded {
    /// Hop limit exceeded in transit.
    pub const HOP_LIMIT: u8 = 0;
    /// Fragment reassembly time exceeded.
    pub const REASSEMBLY: u8 = 1;
}

/// Codes of Parameter Problem.
pub mod param_problem {
    /// Erroneous header field encountered.
    pub const HEADER_FIELD: u8 = 0;
    /// Unrecognized Next Header type encountered.
    pub const NEXT_HEADER: u8 = 1;
    /// Unrecognized IPv6 option encountered.
    pub const OPTION: u8 = 2;
    /// IPv6 first fragment has incomplete header chain (RFC 7112).
    pub const INCOMPLETE_CHAIN: u8 = 3;
}

/// Neighbor discovery option types (RFC 4861 §4.6).
pub mod ndisc_option {
    /// Source Link-Layer Address.
    pub const SOURCE_LLADDR: u8 = 1;
    /// Target Link-Layer Address.
    pub const TARGET_LLADDR: u8 = 2;
}

mod field {
    use crate::field::{Field, Rest};

    pub(crate) const TYPE: usize = 0;
    pub(crate) const CODE: usize = 1;
    pub(crate) const CHECKSUM: Field = 2..4;
    pub(crate) const ECHO_IDENT: Field = 4..6;
    pub(crate) const ECHO_SEQNO: Field = 6..8;
    pub(crate) const MTU: Field = 4..8;
    pub(crate) const POINTER: Field = 4..8;
    pub(crate) const NA_FLAGS: usize = 4;
    pub(crate) const DATA: Rest = 8..;
    pub(crate) const TARGET: Field = 8..24;
    pub(crate) const NDISC_OPTIONS: Rest = 24..;
}

/// Length of the ICMPv6 header (type, code, checksum and the 4 type-specific bytes).
pub const HEADER_LEN: usize = field::DATA.start;
/// Length of a Neighbor Solicitation/Advertisement without options.
pub const NDISC_LEN: usize = field::NDISC_OPTIONS.start;
/// Length of an Ethernet link-layer address option.
pub const LLADDR_OPTION_LEN: usize = 8;
/// The largest quote that keeps an error within the IPv6 minimum MTU: 1280 − 40 − 8.
pub const ERROR_QUOTE_V6_MAX: usize = 1232;

const NA_ROUTER: u8 = 0x80;
const NA_SOLICITED: u8 = 0x40;
const NA_OVERRIDE: u8 = 0x20;

/// The flags of a Neighbor Advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NeighborFlags {
    /// R: the sender is a router.
    pub router: bool,
    /// S: sent in response to a solicitation.
    pub solicited: bool,
    /// O: override an existing cache entry.
    pub override_: bool,
}

/// A read/write view of an ICMPv6 message.
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

    /// `Err(Truncated)` below 8 bytes, or below 24 for NS/NA.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.is_ndisc_ns_na() && len < NDISC_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    #[inline]
    fn is_ndisc_ns_na(&self) -> bool {
        matches!(
            self.msg_type(),
            Message::NEIGHBOR_SOLICIT | Message::NEIGHBOR_ADVERT
        )
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

    /// MTU (Packet Too Big).
    #[inline]
    pub fn mtu(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::MTU.start)
    }

    /// Pointer to the faulty octet (Parameter Problem).
    #[inline]
    pub fn pointer(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::POINTER.start)
    }

    /// Flags of a Neighbor Advertisement.
    #[inline]
    pub fn neighbor_flags(&self) -> NeighborFlags {
        let b = self.buffer.as_ref()[field::NA_FLAGS];
        NeighborFlags {
            router: b & NA_ROUTER != 0,
            solicited: b & NA_SOLICITED != 0,
            override_: b & NA_OVERRIDE != 0,
        }
    }

    /// Target address of NS/NA (`::` if the buffer is too short, which `check_len` rules out
    /// for NS/NA).
    #[inline]
    pub fn target_addr(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        if let Some(t) = self.buffer.as_ref().get(field::TARGET) {
            a.copy_from_slice(t);
        }
        Ipv6Addr::from(a)
    }

    /// True if this is an error message.
    #[inline]
    pub fn is_error(&self) -> bool {
        self.msg_type().is_error()
    }

    /// Everything after the 8-byte header: echo data, a quote, or the NS/NA body.
    #[inline]
    pub fn data(&self) -> &[u8] {
        self.buffer.as_ref().get(field::DATA).unwrap_or(&[])
    }

    /// The quote of an error message (same bytes as [`Self::data`]).
    #[inline]
    pub fn quoted(&self) -> &[u8] {
        self.data()
    }

    /// The options of NS/NA (after the target address).
    #[inline]
    pub fn ndisc_options(&self) -> &[u8] {
        self.buffer
            .as_ref()
            .get(field::NDISC_OPTIONS)
            .unwrap_or(&[])
    }

    /// Finds a link-layer address option (`option_type` from [`ndisc_option`]) in NS/NA.
    ///
    /// `Err(Malformed)` for an option of length 0 or one running past the message (RFC 4861
    /// §4.6: such packets are discarded). The first matching option wins; its first 6 value
    /// bytes are the MAC address. The walk advances at least 8 bytes per option.
    pub fn ndisc_lladdr(&self, option_type: u8) -> Result<Option<MacAddr>> {
        let mut opts = self.ndisc_options();
        let mut found = None;
        while !opts.is_empty() {
            let (kind, units) = match opts {
                [kind, units, ..] => (*kind, usize::from(*units)),
                _ => return Err(Error::Malformed),
            };
            let len = units * 8;
            if len == 0 || len > opts.len() {
                return Err(Error::Malformed);
            }
            if kind == option_type && found.is_none() {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(&opts[2..8]);
                found = Some(MacAddr(mac));
            }
            opts = &opts[len..];
        }
        Ok(found)
    }

    /// True if this error quotes an ICMPv6 error (an error about an error, catalogue I3).
    ///
    /// False for a non-error or an unparsable quote (the pipeline refuses those anyway).
    #[inline]
    pub fn quotes_error(&self) -> bool {
        if !self.is_error() {
            return false;
        }
        match ip::parse_quoted_v6(self.quoted()) {
            Ok(q) if q.protocol == IpProtocol::ICMPV6.0 => {
                Message((q.src_port >> 8) as u8).is_error()
            }
            _ => false,
        }
    }

    /// Sum over the pseudo-header and the whole message.
    #[inline]
    fn sum(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> u16 {
        let b = self.buffer.as_ref();
        let ph = checksum::pseudo_header_v6(
            &src.octets(),
            &dst.octets(),
            IpProtocol::ICMPV6.0,
            b.len() as u32,
        );
        checksum::combine(&[ph, checksum::data(b)])
    }

    /// True if the checksum (with the pseudo-header of `src` → `dst`) verifies.
    #[inline]
    pub fn verify_checksum(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        self.sum(src, dst) == 0xFFFF
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

    /// Sets the MTU (Packet Too Big).
    #[inline]
    pub fn set_mtu(&mut self, mtu: u32) {
        write_u32(self.buffer.as_mut(), field::MTU.start, mtu);
    }

    /// Sets the pointer (Parameter Problem).
    #[inline]
    pub fn set_pointer(&mut self, pointer: u32) {
        write_u32(self.buffer.as_mut(), field::POINTER.start, pointer);
    }

    /// Sets the Neighbor Advertisement flags and zeroes the reserved bits.
    #[inline]
    pub fn set_neighbor_flags(&mut self, flags: NeighborFlags) {
        let mut b = 0;
        if flags.router {
            b |= NA_ROUTER;
        }
        if flags.solicited {
            b |= NA_SOLICITED;
        }
        if flags.override_ {
            b |= NA_OVERRIDE;
        }
        write_u32(self.buffer.as_mut(), field::MTU.start, u32::from(b) << 24);
    }

    /// Zeroes the 4 type-specific header bytes.
    #[inline]
    pub fn clear_rest_of_header(&mut self) {
        write_u32(self.buffer.as_mut(), field::MTU.start, 0);
    }

    /// Sets the NS/NA target address (no-op on a buffer shorter than 24 bytes).
    #[inline]
    pub fn set_target_addr(&mut self, addr: Ipv6Addr) {
        if let Some(t) = self.buffer.as_mut().get_mut(field::TARGET) {
            t.copy_from_slice(&addr.octets());
        }
    }

    /// Everything after the header, mutably.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut().get_mut(field::DATA).unwrap_or(&mut [])
    }

    /// NS/NA options, mutably.
    #[inline]
    pub fn ndisc_options_mut(&mut self) -> &mut [u8] {
        self.buffer
            .as_mut()
            .get_mut(field::NDISC_OPTIONS)
            .unwrap_or(&mut [])
    }

    /// Computes and stores the checksum (pseudo-header of `src` → `dst`, whole buffer).
    #[inline]
    pub fn fill_checksum(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        self.set_checksum(0);
        let c = checksum::finish(self.sum(src, dst));
        self.set_checksum(c);
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// A high-level description of an ICMPv6 message.
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
        /// The quoted packet.
        quoted: &'a [u8],
    },
    /// Packet Too Big.
    PacketTooBig {
        /// MTU of the next hop.
        mtu: u32,
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
        /// Code (see [`param_problem`]).
        code: u8,
        /// Offset of the faulty octet in the quote.
        pointer: u32,
        /// The quoted packet.
        quoted: &'a [u8],
    },
    /// Neighbor Solicitation.
    NeighborSolicit {
        /// Target address.
        target: Ipv6Addr,
        /// Source Link-Layer Address option, if present.
        source_lladdr: Option<MacAddr>,
    },
    /// Neighbor Advertisement.
    NeighborAdvert {
        /// R, S and O flags.
        flags: NeighborFlags,
        /// Target address.
        target: Ipv6Addr,
        /// Target Link-Layer Address option, if present.
        target_lladdr: Option<MacAddr>,
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
    /// Parses a message sent from `src` to `dst`.
    ///
    /// `Err(BadChecksum)` if the checksum fails; `Err(Malformed)` for an echo or NS/NA with a
    /// non-zero code, or NS/NA options that [`Packet::ndisc_lladdr`] refuses. Other NS/NA
    /// options are skipped, not kept.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        packet: &Packet<&'a T>,
        src: &Ipv6Addr,
        dst: &Ipv6Addr,
    ) -> Result<Repr<'a>> {
        packet.check_len()?;
        if !packet.verify_checksum(src, dst) {
            return Err(Error::BadChecksum);
        }
        let data = packet.buffer.as_ref().get(field::DATA).unwrap_or(&[]);
        let code = packet.msg_code();
        let repr = match packet.msg_type() {
            Message::ECHO_REQUEST
            | Message::ECHO_REPLY
            | Message::NEIGHBOR_SOLICIT
            | Message::NEIGHBOR_ADVERT
                if code != 0 =>
            {
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
            Message::DST_UNREACHABLE => Repr::DstUnreachable { code, quoted: data },
            Message::PACKET_TOO_BIG => Repr::PacketTooBig {
                mtu: packet.mtu(),
                quoted: data,
            },
            Message::TIME_EXCEEDED => Repr::TimeExceeded { code, quoted: data },
            Message::PARAM_PROBLEM => Repr::ParamProblem {
                code,
                pointer: packet.pointer(),
                quoted: data,
            },
            Message::NEIGHBOR_SOLICIT => Repr::NeighborSolicit {
                target: packet.target_addr(),
                source_lladdr: packet.ndisc_lladdr(ndisc_option::SOURCE_LLADDR)?,
            },
            Message::NEIGHBOR_ADVERT => Repr::NeighborAdvert {
                flags: packet.neighbor_flags(),
                target: packet.target_addr(),
                target_lladdr: packet.ndisc_lladdr(ndisc_option::TARGET_LLADDR)?,
            },
            msg_type => Repr::Other { msg_type, code },
        };
        Ok(repr)
    }

    /// True for error messages.
    #[inline]
    pub fn is_error(&self) -> bool {
        match self {
            Repr::DstUnreachable { .. }
            | Repr::PacketTooBig { .. }
            | Repr::TimeExceeded { .. }
            | Repr::ParamProblem { .. } => true,
            Repr::Other { msg_type, .. } => msg_type.is_error(),
            _ => false,
        }
    }

    /// Length this description emits.
    #[inline]
    pub fn buffer_len(&self) -> usize {
        let lladdr = |a: &Option<MacAddr>| if a.is_some() { LLADDR_OPTION_LEN } else { 0 };
        match self {
            Repr::EchoRequest { data, .. } | Repr::EchoReply { data, .. } => {
                HEADER_LEN + data.len()
            }
            Repr::DstUnreachable { quoted, .. }
            | Repr::PacketTooBig { quoted, .. }
            | Repr::TimeExceeded { quoted, .. }
            | Repr::ParamProblem { quoted, .. } => HEADER_LEN + quoted.len(),
            Repr::NeighborSolicit { source_lladdr, .. } => NDISC_LEN + lladdr(source_lladdr),
            Repr::NeighborAdvert { target_lladdr, .. } => NDISC_LEN + lladdr(target_lladdr),
            Repr::Other { .. } => HEADER_LEN,
        }
    }

    /// Writes the message into a buffer of exactly [`Self::buffer_len`] bytes and fills the
    /// checksum for `src` → `dst`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Packet<T>,
        src: &Ipv6Addr,
        dst: &Ipv6Addr,
    ) {
        packet.clear_rest_of_header();
        let mut body: &[u8] = &[];
        let (msg_type, code) = match *self {
            Repr::EchoRequest {
                ident,
                seq_no,
                data,
            } => {
                packet.set_echo_ident(ident);
                packet.set_echo_seq_no(seq_no);
                body = data;
                (Message::ECHO_REQUEST, 0)
            }
            Repr::EchoReply {
                ident,
                seq_no,
                data,
            } => {
                packet.set_echo_ident(ident);
                packet.set_echo_seq_no(seq_no);
                body = data;
                (Message::ECHO_REPLY, 0)
            }
            Repr::DstUnreachable { code, quoted } => {
                body = quoted;
                (Message::DST_UNREACHABLE, code)
            }
            Repr::PacketTooBig { mtu, quoted } => {
                packet.set_mtu(mtu);
                body = quoted;
                (Message::PACKET_TOO_BIG, 0)
            }
            Repr::TimeExceeded { code, quoted } => {
                body = quoted;
                (Message::TIME_EXCEEDED, code)
            }
            Repr::ParamProblem {
                code,
                pointer,
                quoted,
            } => {
                packet.set_pointer(pointer);
                body = quoted;
                (Message::PARAM_PROBLEM, code)
            }
            Repr::NeighborSolicit {
                target,
                source_lladdr,
            } => {
                packet.set_target_addr(target);
                emit_lladdr(packet, ndisc_option::SOURCE_LLADDR, source_lladdr);
                (Message::NEIGHBOR_SOLICIT, 0)
            }
            Repr::NeighborAdvert {
                flags,
                target,
                target_lladdr,
            } => {
                packet.set_neighbor_flags(flags);
                packet.set_target_addr(target);
                emit_lladdr(packet, ndisc_option::TARGET_LLADDR, target_lladdr);
                (Message::NEIGHBOR_ADVERT, 0)
            }
            Repr::Other { msg_type, code } => (msg_type, code),
        };
        packet.set_msg_type(msg_type);
        packet.set_msg_code(code);
        if let Some(dst) = packet.data_mut().get_mut(..body.len()) {
            dst.copy_from_slice(body);
        }
        packet.fill_checksum(src, dst);
    }
}

/// Writes an Ethernet link-layer address option at the start of the NS/NA options.
fn emit_lladdr<T: AsRef<[u8]> + AsMut<[u8]>>(
    packet: &mut Packet<T>,
    kind: u8,
    mac: Option<MacAddr>,
) {
    if let (Some(mac), Some(opt)) = (mac, packet.ndisc_options_mut().get_mut(..LLADDR_OPTION_LEN)) {
        opt[0] = kind;
        opt[1] = 1;
        opt[2..].copy_from_slice(&mac.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn src() -> Ipv6Addr {
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)
    }

    fn dst() -> Ipv6Addr {
        Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 2)
    }

    fn target() -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2)
    }

    const MAC: MacAddr = MacAddr([0x02, 0x00, 0x5e, 0x10, 0x00, 0x01]);

    fn with_checksum<const N: usize>(mut b: [u8; N]) -> [u8; N] {
        b[2..4].fill(0);
        let ph = checksum::pseudo_header_v6(&src().octets(), &dst().octets(), 58, N as u32);
        let c = checksum::finish(checksum::combine(&[ph, checksum::data(&b)]));
        b[2..4].copy_from_slice(&c.to_be_bytes());
        b
    }

    static NS_BYTES: [u8; 32] = [
        0x87, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // NS, checksum, reserved
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, // target
        0x01, 0x01, 0x02, 0x00, 0x5e, 0x10, 0x00, 0x01, // SLLA
    ];

    static NA_BYTES: [u8; 40] = [
        0x88, 0x00, 0x00, 0x00, 0x60, 0x00, 0x00, 0x00, // NA, S|O
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, // target
        0x0e, 0x01, 0, 0, 0, 0, 0, 0, // unknown option 14 (nonce), skipped
        0x02, 0x01, 0x02, 0x00, 0x5e, 0x10, 0x00, 0x01, // TLLA
    ];

    static ECHO_BYTES: [u8; 12] = [
        0x80, 0x00, 0x00, 0x00, 0x12, 0x34, 0xab, 0xcd, 0xaa, 0x00, 0x00, 0xff,
    ];

    #[test]
    fn deconstruct_ns() {
        let b = with_checksum(NS_BYTES);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.msg_type(), Message::NEIGHBOR_SOLICIT);
        assert_eq!(p.msg_code(), 0);
        assert_eq!(p.target_addr(), target());
        assert_eq!(p.ndisc_options(), &NS_BYTES[24..]);
        assert_eq!(p.ndisc_lladdr(ndisc_option::SOURCE_LLADDR), Ok(Some(MAC)));
        assert_eq!(p.ndisc_lladdr(ndisc_option::TARGET_LLADDR), Ok(None));
        assert!(p.verify_checksum(&src(), &dst()));
        assert!(!p.verify_checksum(&target(), &dst()));
        assert!(!p.is_error());
        assert_eq!(
            Repr::parse(&p, &src(), &dst()).unwrap(),
            Repr::NeighborSolicit {
                target: target(),
                source_lladdr: Some(MAC)
            }
        );
    }

    #[test]
    fn construct_ns() {
        let mut bytes = [0xa5u8; 32];
        let mut p = Packet::new_unchecked(&mut bytes[..]);
        p.set_msg_type(Message::NEIGHBOR_SOLICIT);
        p.set_msg_code(0);
        p.clear_rest_of_header();
        p.set_target_addr(target());
        p.ndisc_options_mut()
            .copy_from_slice(&[1, 1, 0x02, 0x00, 0x5e, 0x10, 0x00, 0x01]);
        p.fill_checksum(&src(), &dst());
        assert_eq!(bytes, with_checksum(NS_BYTES));
    }

    #[test]
    fn na() {
        let b = with_checksum(NA_BYTES);
        let p = Packet::new_checked(&b[..]).unwrap();
        let flags = NeighborFlags {
            router: false,
            solicited: true,
            override_: true,
        };
        assert_eq!(p.neighbor_flags(), flags);
        let repr = Repr::parse(&p, &src(), &dst()).unwrap();
        assert_eq!(
            repr,
            Repr::NeighborAdvert {
                flags,
                target: target(),
                target_lladdr: Some(MAC)
            }
        );
        // Emitting drops the unknown option.
        let mut out = [0xa5u8; 32];
        repr.emit(&mut Packet::new_unchecked(&mut out[..]), &src(), &dst());
        let mut expect = [0u8; 32];
        expect[..24].copy_from_slice(&NA_BYTES[..24]);
        expect[24..].copy_from_slice(&NA_BYTES[32..]);
        assert_eq!(out, with_checksum(expect));
    }

    #[test]
    fn ndisc_errors() {
        // NS shorter than 24 bytes.
        assert_eq!(
            Packet::new_checked(&NS_BYTES[..23]).unwrap_err(),
            Error::Truncated
        );
        assert!(Packet::new_checked(&NS_BYTES[..24]).is_ok());
        // Zero-length option, option past the end, lone option byte.
        let mut b = NS_BYTES;
        b[25] = 0;
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.ndisc_lladdr(1), Err(Error::Malformed));
        b[25] = 2;
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap().ndisc_lladdr(1),
            Err(Error::Malformed)
        );
        assert_eq!(
            Packet::new_checked(&NS_BYTES[..25])
                .unwrap()
                .ndisc_lladdr(1),
            Err(Error::Malformed)
        );
        let b = with_checksum({
            let mut b = NS_BYTES;
            b[25] = 0;
            b
        });
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(
            Repr::parse(&p, &src(), &dst()).unwrap_err(),
            Error::Malformed
        );
        // Non-zero code.
        let b = with_checksum({
            let mut b = NS_BYTES;
            b[1] = 1;
            b
        });
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(
            Repr::parse(&p, &src(), &dst()).unwrap_err(),
            Error::Malformed
        );
    }

    #[test]
    fn echo() {
        let b = with_checksum(ECHO_BYTES);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.echo_ident(), 0x1234);
        assert_eq!(p.echo_seq_no(), 0xabcd);
        assert_eq!(p.data(), &ECHO_BYTES[8..]);
        let repr = Repr::parse(&p, &src(), &dst()).unwrap();
        assert_eq!(
            repr,
            Repr::EchoRequest {
                ident: 0x1234,
                seq_no: 0xabcd,
                data: &ECHO_BYTES[8..]
            }
        );
        let mut out = [0xa5u8; 12];
        repr.emit(&mut Packet::new_unchecked(&mut out[..]), &src(), &dst());
        assert_eq!(out, b);
        assert_eq!(Packet::new_checked(&b[..7]).unwrap_err(), Error::Truncated);
        let mut bad = b;
        bad[11] ^= 1;
        let p = Packet::new_checked(&bad[..]).unwrap();
        assert_eq!(
            Repr::parse(&p, &src(), &dst()).unwrap_err(),
            Error::BadChecksum
        );
    }

    #[test]
    fn packet_too_big() {
        // PTB quoting an IPv6 header + 8 bytes of TCP, and an error about an error.
        let mut b = [0u8; 56];
        b[0] = 2;
        b[4..8].copy_from_slice(&1280u32.to_be_bytes());
        b[8] = 0x60;
        b[8 + 6] = 6;
        b[48..52].copy_from_slice(&[0xc3, 0x50, 0x01, 0xbb]);
        let b = with_checksum(b);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.mtu(), 1280);
        assert!(p.is_error() && !p.quotes_error());
        let q = ip::parse_quoted_v6(p.quoted()).unwrap();
        assert_eq!((q.protocol, q.src_port, q.dst_port), (6, 50000, 443));
        assert_eq!(
            Repr::parse(&p, &src(), &dst()).unwrap(),
            Repr::PacketTooBig {
                mtu: 1280,
                quoted: &b[8..]
            }
        );
        let mut e = b;
        e[8 + 6] = 58;
        e[48] = 1; // quoted ICMPv6 destination unreachable
        assert!(Packet::new_checked(&e[..]).unwrap().quotes_error());
        e[48] = 128; // quoted echo request
        assert!(!Packet::new_checked(&e[..]).unwrap().quotes_error());
    }

    #[test]
    fn message_is_error() {
        assert!(Message::PARAM_PROBLEM.is_error());
        assert!(Message(127).is_error());
        assert!(!Message::ECHO_REQUEST.is_error());
        assert!(!Message::NEIGHBOR_ADVERT.is_error());
    }

    static BODY: [u8; 64] = {
        let mut b = [0u8; 64];
        let mut i = 0;
        while i < 64 {
            b[i] = (i as u8).wrapping_mul(29) ^ 0xc3;
            i += 1;
        }
        b
    };

    fn repr_strategy(buf: &[u8]) -> impl Strategy<Value = Repr<'_>> {
        (
            0u8..9,
            any::<u32>(),
            any::<u8>(),
            any::<[u8; 16]>(),
            proptest::option::of(any::<[u8; 6]>()),
            (any::<bool>(), any::<bool>(), any::<bool>()),
            0..=buf.len(),
        )
            .prop_map(move |(kind, a, code, t, mac, (r, s, o), n)| {
                let body = &buf[..n];
                let mac = mac.map(MacAddr);
                match kind {
                    0 => Repr::EchoRequest {
                        ident: a as u16,
                        seq_no: (a >> 16) as u16,
                        data: body,
                    },
                    1 => Repr::EchoReply {
                        ident: a as u16,
                        seq_no: (a >> 16) as u16,
                        data: body,
                    },
                    2 => Repr::DstUnreachable { code, quoted: body },
                    3 => Repr::PacketTooBig {
                        mtu: a,
                        quoted: body,
                    },
                    4 => Repr::TimeExceeded { code, quoted: body },
                    5 => Repr::ParamProblem {
                        code,
                        pointer: a,
                        quoted: body,
                    },
                    6 => Repr::NeighborSolicit {
                        target: t.into(),
                        source_lladdr: mac,
                    },
                    7 => Repr::NeighborAdvert {
                        flags: NeighborFlags {
                            router: r,
                            solicited: s,
                            override_: o,
                        },
                        target: t.into(),
                        target_lladdr: mac,
                    },
                    _ => {
                        let ty = if [1, 2, 3, 4, 128, 129, 135, 136].contains(&code) {
                            200
                        } else {
                            code
                        };
                        Repr::Other {
                            msg_type: Message(ty),
                            code,
                        }
                    }
                }
            })
    }

    proptest! {
        #[test]
        fn round_trip(repr in repr_strategy(&BODY)) {
            let mut buf = vec![0xa5u8; repr.buffer_len()];
            repr.emit(&mut Packet::new_unchecked(&mut buf[..]), &src(), &dst());
            let p = Packet::new_checked(&buf[..]).unwrap();
            prop_assert!(p.verify_checksum(&src(), &dst()));
            prop_assert_eq!(Repr::parse(&p, &src(), &dst()).unwrap(), repr);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(p) = Packet::new_checked(&bytes[..]) {
                let _ = (p.data(), p.quotes_error(), p.mtu(), p.target_addr(), p.ndisc_lladdr(1));
                let _ = Repr::parse(&p, &src(), &dst());
            }
        }
    }
}
