//! # TCP (RFC 9293): the header view and the option walk
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |          Source Port          |       Destination Port        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                        Sequence Number                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Acknowledgment Number                      |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Data |       |C|E|U|A|P|R|S|F|                               |
//! | Offset| Rsrvd |W|C|R|C|S|S|Y|I|            Window             |
//! |       |       |R|E|G|K|H|T|N|N|                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |           Checksum            |         Urgent Pointer        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                           [Options]                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                             Data                              |
//! ```
//!
//! [`Packet`] is a view over a buffer that holds exactly one TCP segment (the IP payload, already
//! trimmed to the IP length: Ethernet padding must not reach it, or the checksum and the payload
//! are wrong). [`Packet::new_checked`] rejects, in this order (catalogue rows T1–T3):
//!
//! * fewer than 20 bytes: [`Error::Truncated`] (T1);
//! * a data offset below 5 words: [`Error::BadHeaderLen`] (T2);
//! * a data offset running past the buffer: [`Error::Truncated`] (T3).
//!
//! ## Options
//!
//! ```text
//!  kind 0 (EOL)   kind 1 (NOP)   every other kind: +------+--------+-------------------+
//!  +------+       +------+                         | kind | length | length - 2 bytes  |
//!  |  0   |       |  1   |                         +------+--------+-------------------+
//!  +------+       +------+                           (length counts kind and length)
//! ```
//!
//! [`TcpOptions`] walks an option area the way Linux does (`tcp_parse_options`,
//! `mptcp_get_options`): it stops at End of Option List, when fewer than two bytes remain, at a
//! "silly" length below 2, and at a length running past the area ("don't parse partial
//! options"). The last three stops are remembered as [`TcpOptions::malformed`] (catalogue rows
//! T4–T6); everything read before them stands. The walk consumes at least one byte per step, so
//! it is bounded by the area (at most 40 bytes).
//!
//! A known kind carrying a length its RFC does not allow is yielded as
//! [`TcpOption::Unknown`], as Linux ignores it; the walk goes on.

use core::net::IpAddr;

use crate::checksum;
use crate::field::{read_u16, read_u32, write_u16, write_u32};
use crate::{Error, Result};

/// The IP protocol number of TCP.
pub const PROTOCOL: u8 = 6;

/// The length of a TCP header without options.
pub const HEADER_LEN: usize = 20;

/// The longest TCP header: a data offset of 15 words.
pub const MAX_HEADER_LEN: usize = 60;

/// The largest option area: `MAX_HEADER_LEN - HEADER_LEN`.
pub const MAX_OPTIONS_LEN: usize = MAX_HEADER_LEN - HEADER_LEN;

mod field {
    use crate::field::Field;

    pub(super) const SRC_PORT: Field = 0..2;
    pub(super) const DST_PORT: Field = 2..4;
    pub(super) const SEQ_NUM: Field = 4..8;
    pub(super) const ACK_NUM: Field = 8..12;
    pub(super) const DATA_OFFSET: usize = 12;
    pub(super) const FLAGS: usize = 13;
    pub(super) const WINDOW: Field = 14..16;
    pub(super) const CHECKSUM: Field = 16..18;
    pub(super) const URGENT: Field = 18..20;
}

/// TCP option kinds (IANA "TCP Option Kind Numbers").
pub mod option_kind {
    /// End of Option List (RFC 9293 §3.2).
    pub const END_OF_LIST: u8 = 0;
    /// No-Operation (RFC 9293 §3.2).
    pub const NO_OPERATION: u8 = 1;
    /// Maximum Segment Size (RFC 9293 §3.7.1).
    pub const MAX_SEGMENT_SIZE: u8 = 2;
    /// Window Scale (RFC 7323 §2).
    pub const WINDOW_SCALE: u8 = 3;
    /// SACK Permitted (RFC 2018 §2).
    pub const SACK_PERMITTED: u8 = 4;
    /// SACK (RFC 2018 §3).
    pub const SACK: u8 = 5;
    /// Timestamps (RFC 7323 §3).
    pub const TIMESTAMP: u8 = 8;
    /// Multipath TCP (RFC 8684 §3).
    pub const MPTCP: u8 = 30;
}

/// The eight TCP flag bits of header byte 13 (RFC 9293 §3.1, RFC 3168 for ECE and CWR).
///
/// The bit that RFC 3540 once called NS lives in byte 12; RFC 9293 reserves it again and this
/// type ignores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// No more data from sender.
    pub const FIN: Self = Self(0x01);
    /// Synchronize sequence numbers.
    pub const SYN: Self = Self(0x02);
    /// Reset the connection.
    pub const RST: Self = Self(0x04);
    /// Push function.
    pub const PSH: Self = Self(0x08);
    /// The acknowledgment number is significant.
    pub const ACK: Self = Self(0x10);
    /// The urgent pointer is significant.
    pub const URG: Self = Self(0x20);
    /// ECN-Echo (RFC 3168).
    pub const ECE: Self = Self(0x40);
    /// Congestion Window Reduced (RFC 3168).
    pub const CWR: Self = Self(0x80);

    /// The empty set.
    pub const NONE: Self = Self(0);

    /// The raw flag byte.
    #[inline]
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether every flag of `other` is set in `self`.
    #[inline]
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether any flag of `other` is set in `self`.
    #[inline]
    pub const fn intersects(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }

    /// `self` with the flags of `other` added.
    #[inline]
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

impl core::ops::BitOr for TcpFlags {
    type Output = Self;

    #[inline]
    fn bitor(self, rhs: Self) -> Self {
        self.union(rhs)
    }
}

impl core::ops::BitOrAssign for TcpFlags {
    #[inline]
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

/// A read/write view of a TCP segment (header, options and payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it; for emission into a buffer the caller sized itself.
    ///
    /// Accessors of a view built this way over a buffer shorter than 20 bytes panic.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer after [`check_len`](Self::check_len); the only way to view received bytes.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks every length the accessors rely on (catalogue rows T1–T3).
    ///
    /// Returns [`Error::Truncated`] for a buffer under 20 bytes or a header running past it, and
    /// [`Error::BadHeaderLen`] for a data offset below 5.
    pub fn check_len(&self) -> Result<()> {
        let data = self.buffer.as_ref();
        if data.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let header_len = self.header_len();
        if header_len < HEADER_LEN {
            return Err(Error::BadHeaderLen);
        }
        if header_len > data.len() {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::SRC_PORT.start)
    }

    /// The destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::DST_PORT.start)
    }

    /// The sequence number.
    #[inline]
    pub fn seq_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::SEQ_NUM.start)
    }

    /// The acknowledgment number (meaningful when ACK is set).
    #[inline]
    pub fn ack_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::ACK_NUM.start)
    }

    /// The header length in bytes: the data offset field times four.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFFSET] >> 4) * 4
    }

    /// The eight flag bits.
    #[inline]
    pub fn flags(&self) -> TcpFlags {
        TcpFlags(self.buffer.as_ref()[field::FLAGS])
    }

    /// Whether FIN is set.
    #[inline]
    pub fn fin(&self) -> bool {
        self.flags().contains(TcpFlags::FIN)
    }

    /// Whether SYN is set.
    #[inline]
    pub fn syn(&self) -> bool {
        self.flags().contains(TcpFlags::SYN)
    }

    /// Whether RST is set.
    #[inline]
    pub fn rst(&self) -> bool {
        self.flags().contains(TcpFlags::RST)
    }

    /// Whether ACK is set.
    #[inline]
    pub fn ack(&self) -> bool {
        self.flags().contains(TcpFlags::ACK)
    }

    /// The (unscaled) receive window.
    #[inline]
    pub fn window_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::WINDOW.start)
    }

    /// The checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// The urgent pointer (meaningful when URG is set).
    #[inline]
    pub fn urgent_at(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::URGENT.start)
    }

    /// The option area: bytes 20 up to the header length.
    ///
    /// Clamped to the buffer, so it stays total even after a `set_header_len` the buffer cannot
    /// hold.
    #[inline]
    pub fn options(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        let end = self.header_len().min(data.len());
        data.get(HEADER_LEN..end).unwrap_or(&[])
    }

    /// The payload: everything after the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        data.get(self.header_len()..).unwrap_or(&[])
    }

    /// The segment length the checksum covers: the whole buffer.
    #[inline]
    pub fn segment_len(&self) -> usize {
        self.buffer.as_ref().len()
    }

    /// Whether the checksum verifies over the pseudo-header of `src` and `dst` and the buffer.
    pub fn verify_checksum(&self, src: &IpAddr, dst: &IpAddr) -> bool {
        let data = self.buffer.as_ref();
        let length = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let sum = checksum::combine(&[
            checksum::pseudo_header(src, dst, PROTOCOL, length),
            checksum::data(data),
        ]);
        // RFC 1071: the sum over data and its checksum is all ones when the data is intact.
        sum == 0xFFFF
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the source port.
    #[inline]
    pub fn set_src_port(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::SRC_PORT.start, value);
    }

    /// Sets the destination port.
    #[inline]
    pub fn set_dst_port(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::DST_PORT.start, value);
    }

    /// Sets the sequence number.
    #[inline]
    pub fn set_seq_number(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::SEQ_NUM.start, value);
    }

    /// Sets the acknowledgment number.
    #[inline]
    pub fn set_ack_number(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::ACK_NUM.start, value);
    }

    /// Sets the header length in bytes (rounded down to whole words, at most 60), keeping the
    /// reserved bits.
    #[inline]
    pub fn set_header_len(&mut self, value: usize) {
        let words = (value / 4).min(MAX_HEADER_LEN / 4) as u8;
        let data = self.buffer.as_mut();
        data[field::DATA_OFFSET] = (data[field::DATA_OFFSET] & 0x0F) | (words << 4);
    }

    /// Sets the eight flag bits.
    #[inline]
    pub fn set_flags(&mut self, value: TcpFlags) {
        self.buffer.as_mut()[field::FLAGS] = value.0;
    }

    /// Sets the receive window.
    #[inline]
    pub fn set_window_len(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::WINDOW.start, value);
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM.start, value);
    }

    /// Sets the urgent pointer.
    #[inline]
    pub fn set_urgent_at(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::URGENT.start, value);
    }

    /// The option area, mutable (clamped to the buffer like [`options`](Self::options)).
    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = self.header_len();
        let data = self.buffer.as_mut();
        let end = end.min(data.len());
        data.get_mut(HEADER_LEN..end).unwrap_or(&mut [])
    }

    /// The payload, mutable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        self.buffer.as_mut().get_mut(start..).unwrap_or(&mut [])
    }

    /// Computes the checksum over the pseudo-header of `src` and `dst` and the buffer, and
    /// writes it.
    pub fn fill_checksum(&mut self, src: &IpAddr, dst: &IpAddr) {
        self.set_checksum(0);
        let data = self.buffer.as_ref();
        let length = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let sum = checksum::combine(&[
            checksum::pseudo_header(src, dst, PROTOCOL, length),
            checksum::data(data),
        ]);
        self.set_checksum(checksum::finish(sum));
    }
}

/// One TCP option, borrowed from the option area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpOption<'a> {
    /// End of Option List (kind 0, one byte). The walk stops after it.
    EndOfList,
    /// No-Operation (kind 1, one byte), used as padding.
    NoOperation,
    /// Maximum Segment Size (kind 2, length 4).
    MaxSegmentSize(u16),
    /// Window Scale shift count (kind 3, length 3).
    WindowScale(u8),
    /// SACK Permitted (kind 4, length 2).
    SackPermitted,
    /// SACK blocks (kind 5, length 2 + 8n, n = 1..=4): the `8n` bytes of left/right edges.
    SackRange(&'a [u8]),
    /// Timestamps (kind 8, length 10).
    Timestamp {
        /// TSval: the sender's timestamp clock.
        tsval: u32,
        /// TSecr: the echoed timestamp.
        tsecr: u32,
    },
    /// Multipath TCP (kind 30): the raw option, kind and length bytes included, for
    /// [`mptcp::MptcpOption::parse`](crate::mptcp::MptcpOption::parse).
    Mptcp(&'a [u8]),
    /// Any other kind, or a known kind with a length its RFC forbids: the bytes after the
    /// kind and length bytes.
    Unknown {
        /// The option kind.
        kind: u8,
        /// The option data (without kind and length).
        data: &'a [u8],
    },
}

/// Splits the option at the start of `buffer` from the rest: `(raw option, rest)`, where the
/// raw option is 1 byte for EOL and NOP and `length` bytes (kind and length included) otherwise.
///
/// The framing rules of Linux `tcp_parse_options`/`mptcp_get_options`: a missing length byte or
/// a length past the buffer is [`Error::Truncated`] ("don't parse partial options"), a length
/// below 2 is [`Error::Malformed`] ("silly options").
#[inline]
fn split_option(buffer: &[u8]) -> Result<(&[u8], &[u8])> {
    let &kind = buffer.first().ok_or(Error::Truncated)?;
    if kind == option_kind::END_OF_LIST || kind == option_kind::NO_OPERATION {
        return Ok(buffer.split_at(1));
    }
    let &length = buffer.get(1).ok_or(Error::Truncated)?;
    let length = usize::from(length);
    if length < 2 {
        return Err(Error::Malformed);
    }
    if length > buffer.len() {
        return Err(Error::Truncated);
    }
    Ok(buffer.split_at(length))
}

impl<'a> TcpOption<'a> {
    /// Parses the option at the start of `buffer`; returns the rest of the buffer and the option.
    ///
    /// Errors (both stop a walk, catalogue rows T4 and T5): [`Error::Truncated`] when the buffer
    /// is empty, when a kind other than EOL/NOP has no length byte, or when the length runs past
    /// the buffer ("don't parse partial options", Linux); [`Error::Malformed`] for a length
    /// below 2 ("silly options", Linux).
    pub fn parse(buffer: &'a [u8]) -> Result<(&'a [u8], TcpOption<'a>)> {
        let (raw, rest) = split_option(buffer)?;
        Ok((rest, TcpOption::decode(raw)))
    }

    /// Decodes one option already framed by [`split_option`]: `raw` is 1 byte for EOL/NOP,
    /// otherwise at least 2 bytes with `raw[1] == raw.len()`.
    #[inline]
    fn decode(raw: &'a [u8]) -> TcpOption<'a> {
        let kind = raw.first().copied().unwrap_or(option_kind::END_OF_LIST);
        let data = raw.get(2..).unwrap_or(&[]);
        match (kind, raw.len()) {
            (option_kind::END_OF_LIST, _) => TcpOption::EndOfList,
            (option_kind::NO_OPERATION, _) => TcpOption::NoOperation,
            (option_kind::MAX_SEGMENT_SIZE, 4) => TcpOption::MaxSegmentSize(read_u16(data, 0)),
            (option_kind::WINDOW_SCALE, 3) => TcpOption::WindowScale(data[0]),
            (option_kind::SACK_PERMITTED, 2) => TcpOption::SackPermitted,
            // RFC 2018 §3: "A SACK option that specifies n blocks will have a length of 8*n+2
            // bytes, so the 40 bytes available for TCP options can specify a maximum of 4 blocks."
            (option_kind::SACK, 10 | 18 | 26 | 34) => TcpOption::SackRange(data),
            (option_kind::TIMESTAMP, 10) => TcpOption::Timestamp {
                tsval: read_u32(data, 0),
                tsecr: read_u32(data, 4),
            },
            (option_kind::MPTCP, _) => TcpOption::Mptcp(raw),
            _ => TcpOption::Unknown { kind, data },
        }
    }

    /// The number of bytes [`emit`](Self::emit) writes.
    pub fn buffer_len(&self) -> usize {
        match *self {
            TcpOption::EndOfList | TcpOption::NoOperation => 1,
            TcpOption::MaxSegmentSize(_) => 4,
            TcpOption::WindowScale(_) => 3,
            TcpOption::SackPermitted => 2,
            TcpOption::SackRange(blocks) => 2 + blocks.len(),
            TcpOption::Timestamp { .. } => 10,
            TcpOption::Mptcp(raw) => raw.len(),
            TcpOption::Unknown { data, .. } => 2 + data.len(),
        }
    }

    /// Writes the option at the start of `buffer`; returns the rest of the buffer.
    ///
    /// Fails with [`Error::Truncated`] when `buffer` is shorter than
    /// [`buffer_len`](Self::buffer_len), and with [`Error::BadLength`] when the option does not
    /// fit a one-byte length field (borrowed data longer than 253 bytes).
    pub fn emit<'b>(&self, buffer: &'b mut [u8]) -> Result<&'b mut [u8]> {
        let len = self.buffer_len();
        if len > buffer.len() {
            return Err(Error::Truncated);
        }
        let length = u8::try_from(len).map_err(|_| Error::BadLength)?;
        let (out, rest) = buffer.split_at_mut(len);
        let mut header = |kind: u8| {
            out[0] = kind;
            out[1] = length;
        };
        match *self {
            TcpOption::EndOfList => out[0] = option_kind::END_OF_LIST,
            TcpOption::NoOperation => out[0] = option_kind::NO_OPERATION,
            TcpOption::MaxSegmentSize(mss) => {
                header(option_kind::MAX_SEGMENT_SIZE);
                write_u16(out, 2, mss);
            }
            TcpOption::WindowScale(shift) => {
                header(option_kind::WINDOW_SCALE);
                out[2] = shift;
            }
            TcpOption::SackPermitted => header(option_kind::SACK_PERMITTED),
            TcpOption::SackRange(blocks) => {
                header(option_kind::SACK);
                out[2..].copy_from_slice(blocks);
            }
            TcpOption::Timestamp { tsval, tsecr } => {
                header(option_kind::TIMESTAMP);
                write_u32(out, 2, tsval);
                write_u32(out, 6, tsecr);
            }
            TcpOption::Mptcp(raw) => out.copy_from_slice(raw),
            TcpOption::Unknown { kind, data } => {
                header(kind);
                out[2..].copy_from_slice(data);
            }
        }
        Ok(rest)
    }
}

/// The option walk: an iterator over the options of an option area, stopping as Linux does.
///
/// ```
/// use trapeze_wire::tcp::{TcpOption, TcpOptions};
///
/// let area = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
/// let mut walk = TcpOptions::new(&area);
/// assert_eq!(walk.next(), Some(TcpOption::NoOperation));
/// assert_eq!(walk.next(), Some(TcpOption::NoOperation));
/// assert_eq!(walk.next(), Some(TcpOption::Timestamp { tsval: 1, tsecr: 2 }));
/// assert_eq!(walk.next(), None);
/// assert!(!walk.malformed());
/// ```
#[derive(Debug, Clone)]
pub struct TcpOptions<'a> {
    rest: &'a [u8],
    malformed: bool,
}

impl<'a> TcpOptions<'a> {
    /// Starts a walk over `options` (normally [`Packet::options`]).
    #[inline]
    pub const fn new(options: &'a [u8]) -> Self {
        Self {
            rest: options,
            malformed: false,
        }
    }

    /// The next option undecoded: its kind and its raw bytes (kind and length included; one
    /// byte for EOL and NOP). Same stops as the iterator, which is built on it; this is the
    /// cheaper step for a caller that looks at one kind only.
    #[inline]
    pub fn next_raw(&mut self) -> Option<(u8, &'a [u8])> {
        if self.rest.is_empty() {
            return None;
        }
        match split_option(self.rest) {
            Ok((raw, rest)) => {
                let &kind = raw.first()?;
                // Linux: "case TCPOPT_EOL: return;" (whatever follows EOL is padding).
                self.rest = if kind == option_kind::END_OF_LIST {
                    &[]
                } else {
                    rest
                };
                Some((kind, raw))
            }
            Err(_) => {
                self.malformed = true;
                self.rest = &[];
                None
            }
        }
    }

    /// Whether the walk stopped at a broken option: a kind without a length byte, a length below
    /// 2, or a length running past the area (catalogue rows T4, T5). EOL is not malformed (T6).
    #[inline]
    pub const fn malformed(&self) -> bool {
        self.malformed
    }
}

impl<'a> Iterator for TcpOptions<'a> {
    type Item = TcpOption<'a>;

    #[inline]
    fn next(&mut self) -> Option<TcpOption<'a>> {
        self.next_raw().map(|(_, raw)| TcpOption::decode(raw))
    }
}

impl core::iter::FusedIterator for TcpOptions<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{Ipv4Addr, Ipv6Addr};
    use proptest::prelude::*;

    const SRC: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 1));
    const DST: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 2));

    // A SYN with MSS 1460, SACK permitted, timestamps, NOP, window scale 7, then a 4-byte
    // MP_CAPABLE SYN option, EOL and padding, and a payload of "abc" (TCP Fast Open style).
    static PACKET_BYTES: [u8; 51] = [
        0xbf, 0x00, // src port 48896
        0x00, 0x50, // dst port 80
        0x01, 0x23, 0x45, 0x67, // seq
        0x00, 0x00, 0x00, 0x00, // ack
        0xc0, 0x02, // data offset 12 (48 bytes), SYN
        0xfa, 0xf0, // window 64240
        0x00, 0x00, // checksum (filled in by the test)
        0x00, 0x00, // urgent
        0x02, 0x04, 0x05, 0xb4, // MSS 1460
        0x04, 0x02, // SACK permitted
        0x08, 0x0a, 0x00, 0x00, 0x00, 0x2a, 0x00, 0x00, 0x00, 0x00, // TS 42, 0
        0x01, // NOP
        0x03, 0x03, 0x07, // WS 7
        0x1e, 0x04, 0x01, 0x81, // MPTCP: MP_CAPABLE v1, flags A|H
        0x00, 0x00, 0x00, 0x00, // EOL, padding
        b'a', b'b', b'c',
    ];

    fn packet_bytes() -> [u8; 51] {
        let mut bytes = PACKET_BYTES;
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.fill_checksum(&SRC, &DST);
        bytes
    }

    #[test]
    fn deconstruct() {
        let bytes = packet_bytes();
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.src_port(), 48896);
        assert_eq!(packet.dst_port(), 80);
        assert_eq!(packet.seq_number(), 0x0123_4567);
        assert_eq!(packet.ack_number(), 0);
        assert_eq!(packet.header_len(), 48);
        assert_eq!(packet.flags(), TcpFlags::SYN);
        assert!(packet.syn() && !packet.ack() && !packet.fin() && !packet.rst());
        assert_eq!(packet.window_len(), 64240);
        assert_eq!(packet.urgent_at(), 0);
        assert_eq!(packet.options(), &PACKET_BYTES[20..48]);
        assert_eq!(packet.payload(), b"abc");
        assert!(packet.verify_checksum(&SRC, &DST));
        assert!(!packet.verify_checksum(&DST, &DST));

        let mut walk = TcpOptions::new(packet.options());
        assert_eq!(walk.next(), Some(TcpOption::MaxSegmentSize(1460)));
        assert_eq!(walk.next(), Some(TcpOption::SackPermitted));
        assert_eq!(
            walk.next(),
            Some(TcpOption::Timestamp {
                tsval: 42,
                tsecr: 0
            })
        );
        assert_eq!(walk.next(), Some(TcpOption::NoOperation));
        assert_eq!(walk.next(), Some(TcpOption::WindowScale(7)));
        assert_eq!(
            walk.next(),
            Some(TcpOption::Mptcp(&[0x1e, 0x04, 0x01, 0x81]))
        );
        assert_eq!(walk.next(), Some(TcpOption::EndOfList));
        assert_eq!(walk.next(), None);
        assert!(!walk.malformed());
    }

    #[test]
    fn construct() {
        let mut bytes = [0xa5u8; 51];
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_src_port(48896);
        packet.set_dst_port(80);
        packet.set_seq_number(0x0123_4567);
        packet.set_ack_number(0);
        bytes[12] = 0; // reserved bits zero, as on the wire
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_header_len(48);
        packet.set_flags(TcpFlags::SYN);
        packet.set_window_len(64240);
        packet.set_urgent_at(0);
        let options = [
            TcpOption::MaxSegmentSize(1460),
            TcpOption::SackPermitted,
            TcpOption::Timestamp {
                tsval: 42,
                tsecr: 0,
            },
            TcpOption::NoOperation,
            TcpOption::WindowScale(7),
            TcpOption::Mptcp(&[0x1e, 0x04, 0x01, 0x81]),
            TcpOption::EndOfList,
            TcpOption::EndOfList,
            TcpOption::EndOfList,
            TcpOption::EndOfList,
        ];
        let mut area = packet.options_mut();
        for option in &options {
            area = option.emit(area).unwrap();
        }
        assert!(area.is_empty());
        packet.payload_mut().copy_from_slice(b"abc");
        packet.fill_checksum(&SRC, &DST);
        assert_eq!(bytes, packet_bytes());
    }

    #[test]
    fn checksum_ipv6() {
        let src = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
        let dst = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2));
        let mut bytes = PACKET_BYTES;
        let mut packet = Packet::new_checked(&mut bytes[..]).unwrap();
        packet.fill_checksum(&src, &dst);
        assert!(packet.verify_checksum(&src, &dst));
        packet.set_window_len(1);
        assert!(!packet.verify_checksum(&src, &dst));
    }

    #[test]
    fn flags() {
        let f = TcpFlags::SYN | TcpFlags::ACK;
        assert!(f.contains(TcpFlags::SYN));
        assert!(f.contains(TcpFlags::SYN | TcpFlags::ACK));
        assert!(!f.contains(TcpFlags::SYN | TcpFlags::FIN));
        assert!(f.intersects(TcpFlags::ACK | TcpFlags::RST));
        assert_eq!(f.bits(), 0x12);
        let mut g = TcpFlags::NONE;
        g |= TcpFlags::CWR;
        g |= TcpFlags::ECE;
        g |= TcpFlags::URG;
        g |= TcpFlags::PSH;
        g |= TcpFlags::RST;
        g |= TcpFlags::FIN;
        assert_eq!(g.bits(), 0xed);
    }

    #[test]
    fn truncated_t1() {
        // T1: fewer than 20 bytes.
        assert_eq!(
            Packet::new_checked(&PACKET_BYTES[..19]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(Packet::new_checked(&[][..]).unwrap_err(), Error::Truncated);
        let mut bytes = [0u8; 20];
        bytes[12] = 0x50;
        assert!(Packet::new_checked(&bytes[..]).is_ok());
    }

    #[test]
    fn bad_header_len_t2() {
        // T2: data offset below 5 words.
        for offset in 0..5u8 {
            let mut bytes = [0u8; 60];
            bytes[12] = offset << 4;
            assert_eq!(
                Packet::new_checked(&bytes[..]).unwrap_err(),
                Error::BadHeaderLen
            );
        }
    }

    #[test]
    fn header_past_buffer_t3() {
        // T3: data offset * 4 > L4 length; exactly equal is fine.
        for offset in 5..=15u8 {
            let len = usize::from(offset) * 4;
            let mut bytes = [0u8; 60];
            bytes[12] = offset << 4;
            assert!(Packet::new_checked(&bytes[..len]).is_ok());
            assert_eq!(
                Packet::new_checked(&bytes[..len - 1]).unwrap_err(),
                Error::Truncated
            );
        }
    }

    #[test]
    fn accessors_total_after_bad_set_header_len() {
        let mut bytes = [0u8; 24];
        bytes[12] = 0x60;
        let mut packet = Packet::new_checked(&mut bytes[..]).unwrap();
        packet.set_header_len(60);
        assert_eq!(packet.options().len(), 4);
        assert!(packet.payload().is_empty());
        assert_eq!(packet.options_mut().len(), 4);
        assert!(packet.payload_mut().is_empty());
    }

    fn walk(area: &[u8]) -> (Vec<TcpOption<'_>>, bool) {
        let mut it = TcpOptions::new(area);
        let options = it.by_ref().collect();
        (options, it.malformed())
    }

    #[test]
    fn option_lengths() {
        // Every known kind at its length, then one below and one above: the wrong lengths are
        // Unknown and the walk goes on.
        let cases: &[(u8, &[usize])] = &[
            (option_kind::MAX_SEGMENT_SIZE, &[4]),
            (option_kind::WINDOW_SCALE, &[3]),
            (option_kind::SACK_PERMITTED, &[2]),
            (option_kind::SACK, &[10, 18, 26, 34]),
            (option_kind::TIMESTAMP, &[10]),
        ];
        for &(kind, good) in cases {
            for len in 2..=38usize {
                let mut area = [0u8; 40];
                area[0] = kind;
                area[1] = len as u8;
                area[len] = option_kind::NO_OPERATION;
                let (options, malformed) = walk(&area[..=len]);
                assert!(!malformed);
                assert_eq!(options.len(), 2, "kind {kind} len {len}");
                assert_eq!(options[1], TcpOption::NoOperation);
                let unknown = matches!(options[0], TcpOption::Unknown { .. });
                assert_eq!(unknown, !good.contains(&len), "kind {kind} len {len}");
            }
        }
    }

    #[test]
    fn silly_length_t4() {
        // T4: length 0 or 1 stops the walk; what came before stands.
        for bad in [0u8, 1] {
            let area = [1, 2, 4, 5, 0xb4, 30, bad, 0, 0];
            let (options, malformed) = walk(&area);
            assert_eq!(
                options,
                [TcpOption::NoOperation, TcpOption::MaxSegmentSize(1460)]
            );
            assert!(malformed);
        }
    }

    #[test]
    fn partial_option_t5() {
        // T5: a length running past the area, and a kind with no length byte.
        let (options, malformed) = walk(&[1, 8, 10, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(options, [TcpOption::NoOperation]);
        assert!(malformed);
        let (options, malformed) = walk(&[1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        assert_eq!(options.len(), 2);
        assert!(!malformed);
        let (options, malformed) = walk(&[1, 1, 2]);
        assert_eq!(options, [TcpOption::NoOperation, TcpOption::NoOperation]);
        assert!(malformed);
    }

    #[test]
    fn eol_and_nop_padding_t6() {
        // T6: EOL ends the walk, whatever follows; 40 bytes of NOP are fine.
        let (options, malformed) = walk(&[3, 3, 7, 0, 0xff, 0xff, 0xff]);
        assert_eq!(options, [TcpOption::WindowScale(7), TcpOption::EndOfList]);
        assert!(!malformed);
        let (options, malformed) = walk(&[1; 40]);
        assert_eq!(options.len(), 40);
        assert!(!malformed);
        let (options, malformed) = walk(&[]);
        assert!(options.is_empty() && !malformed);
    }

    #[test]
    fn option_parse_errors() {
        assert_eq!(TcpOption::parse(&[]).unwrap_err(), Error::Truncated);
        assert_eq!(TcpOption::parse(&[2]).unwrap_err(), Error::Truncated);
        assert_eq!(TcpOption::parse(&[2, 1]).unwrap_err(), Error::Malformed);
        assert_eq!(TcpOption::parse(&[2, 4, 5]).unwrap_err(), Error::Truncated);
    }

    #[test]
    fn option_emit_errors() {
        let mut short = [0u8; 9];
        let ts = TcpOption::Timestamp { tsval: 1, tsecr: 2 };
        assert_eq!(ts.emit(&mut short).unwrap_err(), Error::Truncated);
        let big = [0u8; 300];
        let unknown = TcpOption::Unknown {
            kind: 99,
            data: &big,
        };
        let mut out = [0u8; 302];
        assert_eq!(unknown.emit(&mut out).unwrap_err(), Error::BadLength);
    }

    /// An owned description of one option: (kind, data), with the raw option for kind 30.
    fn arb_option() -> impl Strategy<Value = (u8, Vec<u8>)> {
        prop_oneof![
            Just((0u8, vec![])),
            Just((1u8, vec![])),
            any::<u16>().prop_map(|m| (2u8, m.to_be_bytes().to_vec())),
            any::<u8>().prop_map(|s| (3u8, vec![s])),
            Just((4u8, vec![])),
            (1usize..=4).prop_flat_map(
                |n| proptest::collection::vec(any::<u8>(), 8 * n).prop_map(|d| (5u8, d))
            ),
            (any::<u32>(), any::<u32>()).prop_map(|(a, b)| {
                let mut d = a.to_be_bytes().to_vec();
                d.extend_from_slice(&b.to_be_bytes());
                (8u8, d)
            }),
            proptest::collection::vec(any::<u8>(), 1..20).prop_map(|body| {
                let mut raw = vec![30u8, body.len() as u8 + 2];
                raw.extend_from_slice(&body);
                (30u8, raw)
            }),
            (
                prop::sample::select(vec![6u8, 7, 9, 19, 29, 34, 253, 254, 255]),
                proptest::collection::vec(any::<u8>(), 0..20)
            )
                .prop_map(|(k, d)| (k, d)),
        ]
    }

    fn build(kind: u8, data: &[u8]) -> TcpOption<'_> {
        match kind {
            0 => TcpOption::EndOfList,
            1 => TcpOption::NoOperation,
            2 => TcpOption::MaxSegmentSize(read_u16(data, 0)),
            3 => TcpOption::WindowScale(data[0]),
            4 => TcpOption::SackPermitted,
            5 => TcpOption::SackRange(data),
            8 => TcpOption::Timestamp {
                tsval: read_u32(data, 0),
                tsecr: read_u32(data, 4),
            },
            30 => TcpOption::Mptcp(data),
            kind => TcpOption::Unknown { kind, data },
        }
    }

    proptest! {
        #[test]
        fn option_round_trip(opts in proptest::collection::vec(arb_option(), 0..6)) {
            let options: Vec<TcpOption<'_>> = opts.iter().map(|(k, d)| build(*k, d)).collect();
            // Everything up to and including the first EOL is what the walk must give back.
            let expect: Vec<_> = match options.iter().position(|o| *o == TcpOption::EndOfList) {
                Some(i) => options[..=i].to_vec(),
                None => options.clone(),
            };
            let total: usize = options.iter().map(|o| o.buffer_len()).sum();
            let mut area = vec![0u8; total];
            let mut rest = &mut area[..];
            for option in &options {
                rest = option.emit(rest).unwrap();
            }
            prop_assert!(rest.is_empty());
            let mut walk = TcpOptions::new(&area);
            let got: Vec<_> = walk.by_ref().collect();
            prop_assert_eq!(got, expect);
            prop_assert!(!walk.malformed());
        }

        #[test]
        fn walk_never_panics(area in proptest::collection::vec(any::<u8>(), 0..=40)) {
            let mut walk = TcpOptions::new(&area);
            let mut consumed = 0;
            for option in walk.by_ref() {
                consumed += option.buffer_len();
            }
            prop_assert!(consumed <= area.len());
        }

        #[test]
        fn packet_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..=80)) {
            if let Ok(packet) = Packet::new_checked(&bytes[..]) {
                let _ = (packet.src_port(), packet.dst_port(), packet.seq_number());
                let _ = (packet.ack_number(), packet.flags(), packet.window_len());
                let _ = (packet.checksum(), packet.urgent_at());
                prop_assert_eq!(
                    HEADER_LEN + packet.options().len() + packet.payload().len(),
                    bytes.len()
                );
                prop_assert!(packet.options().len() <= MAX_OPTIONS_LEN);
                let _ = packet.verify_checksum(&SRC, &DST);
            }
        }
    }
}
