//! Generic UDP Encapsulation (draft-ietf-intarea-gue-09), the header a GUE tunnel puts after UDP.
//!
//! ```text
//! Variant 0 (a GUE header):
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |0x0|C|   Hlen  |  Proto/ctype  |             Flags             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                 Extension fields (Hlen words)                 |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!
//! Variant 1 (direct IP encapsulation): the UDP payload is an IPv4 or IPv6 packet; its first two
//! bits (01 for both versions 4 and 6) are the variant.
//! ```
//!
//! [`Packet::new_checked`] requires the 4-byte base header and the `Hlen` extension words. The
//! gateway emits variant 0 with no extensions and the encapsulated protocol in `Proto` (4 for
//! IPv4, 41 for IPv6), as Linux's `fou` in `gue` mode expects.

use crate::field::read_u16;
use crate::ip::IpProtocol;
use crate::{Error, Result};

/// Length of the base header (variant 0).
pub const HEADER_LEN: usize = 4;

/// The IANA-unassigned port Linux documentation and Katran use for GUE; a default only.
pub const DEFAULT_PORT: u16 = 6080;

/// A read/write view of a GUE header.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

/// What a UDP payload on a GUE port holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// A variant-0 data message: the inner packet (protocol `proto`) starts at `offset`.
    Data {
        /// The encapsulated protocol.
        proto: IpProtocol,
        /// Offset of the inner packet (4 + 4 * Hlen).
        offset: usize,
    },
    /// A variant-0 control message (C bit set).
    Control,
    /// Variant 1: the payload is the inner IP packet itself.
    DirectIp {
        /// True for IPv6.
        v6: bool,
    },
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after [`Self::check_len`].
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// The base header and the extension words it announces are present; the version is 0.
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 0 {
            return Err(Error::Unsupported);
        }
        if b.len() < self.header_len() {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// The 2-bit variant/version field.
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 6
    }

    /// The C bit: a control message.
    #[inline]
    pub fn control(&self) -> bool {
        self.buffer.as_ref()[0] & 0x20 != 0
    }

    /// Hlen: extension words after the base header.
    #[inline]
    pub fn hlen(&self) -> u8 {
        self.buffer.as_ref()[0] & 0x1f
    }

    /// Base header plus extensions, in bytes.
    #[inline]
    pub fn header_len(&self) -> usize {
        HEADER_LEN + 4 * self.hlen() as usize
    }

    /// Proto/ctype.
    #[inline]
    pub fn proto(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[1])
    }

    /// The flags word.
    #[inline]
    pub fn flags(&self) -> u16 {
        read_u16(self.buffer.as_ref(), 2)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Writes a variant-0 data header without extensions carrying `proto`.
    #[inline]
    pub fn emit_data(&mut self, proto: IpProtocol) {
        let b = self.buffer.as_mut();
        b[0] = 0;
        b[1] = proto.0;
        b[2] = 0;
        b[3] = 0;
    }
}

/// Classifies a UDP payload received on a GUE port.
pub fn classify(payload: &[u8]) -> Result<Payload> {
    let first = *payload.first().ok_or(Error::Truncated)?;
    match first >> 6 {
        0 => {
            let p = Packet::new_checked(payload)?;
            if p.control() {
                Ok(Payload::Control)
            } else {
                Ok(Payload::Data {
                    proto: p.proto(),
                    offset: p.header_len(),
                })
            }
        }
        1 => match first >> 4 {
            4 => Ok(Payload::DirectIp { v6: false }),
            6 => Ok(Payload::DirectIp { v6: true }),
            _ => Err(Error::Unsupported),
        },
        _ => Err(Error::Unsupported),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emit_then_classify() {
        let mut b = [0xffu8; 8];
        Packet::new_unchecked(&mut b[..]).emit_data(IpProtocol::IPV6);
        assert_eq!(&b[..4], &[0, 41, 0, 0]);
        assert_eq!(
            classify(&b).unwrap(),
            Payload::Data {
                proto: IpProtocol::IPV6,
                offset: 4
            }
        );
    }

    #[test]
    fn extensions_control_and_direct_ip() {
        // Hlen 1: one extension word must follow.
        assert_eq!(classify(&[0x01, 4, 0, 0]), Err(Error::Truncated));
        assert_eq!(
            classify(&[0x01, 4, 0, 0, 9, 9, 9, 9]).unwrap(),
            Payload::Data {
                proto: IpProtocol::IPIP,
                offset: 8
            }
        );
        assert_eq!(classify(&[0x20, 0, 0, 0]).unwrap(), Payload::Control);
        assert_eq!(
            classify(&[0x45, 0, 0, 20]).unwrap(),
            Payload::DirectIp { v6: false }
        );
        assert_eq!(
            classify(&[0x60, 0, 0, 0]).unwrap(),
            Payload::DirectIp { v6: true }
        );
        assert_eq!(classify(&[0x50]), Err(Error::Unsupported));
        assert_eq!(classify(&[0x80, 0, 0, 0]), Err(Error::Unsupported));
        assert_eq!(classify(&[]), Err(Error::Truncated));
        assert_eq!(classify(&[0, 4]), Err(Error::Truncated));
    }
}
