//! # Multipath TCP options (RFC 8684, TCP option kind 30)
//!
//! ```text
//!                      1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +---------------+---------------+-------+-------+---------------+
//! |  Kind (30)    |    Length     |Subtype| (low  |  (subtype     |
//! |               |               |       |nibble)|   specific)   |
//! +---------------+---------------+-------+-------+---------------+
//! |                Subtype-specific data (variable)               |
//! +---------------------------------------------------------------+
//! ```
//!
//! Every subtype of RFC 8684 is parsed into a small `Copy` value ([`MpCapable`], [`MpJoin`],
//! [`Dss`], [`AddAddr`], [`RemoveAddr`], [`MpPrio`], [`MpFail`], [`MpFastclose`], [`MpTcpRst`])
//! and can be emitted again; subtypes 9–15 (15 is MP_EXPERIMENTAL) are kept raw as
//! [`MptcpOption::Unknown`].
//!
//! ## Lengths: the Linux rules
//!
//! The lengths and checks are those of Linux `net/mptcp/options.c` (`mptcp_parse_option`) and
//! `protocol.h`; an option that breaks them is **ignored** by Linux, and [`MptcpOption::parse`]
//! returns the reason as an [`MptcpError`] (the catalogue rows M1–M21 of the reliability notes).
//!
//! | subtype | accepted lengths (bytes, kind and length included) |
//! |---|---|
//! | MP_CAPABLE | SYN 4; SYN/ACK 12; ACK 20; ACK with payload 22, or 24 with checksum |
//! | MP_JOIN | SYN 12; SYN/ACK 16; ACK (no SYN) 24 |
//! | DSS | 4 + ack (0, 4, 8) + mapping (0, 10, 14), optionally + 2 (checksum) |
//! | ADD_ADDR | IPv4 16, +port 18; IPv6 28, +port 30; echo (no HMAC): 8, 10, 20, 22 |
//! | REMOVE_ADDR | 3 + n, 1 <= n <= 8 (`MPTCP_RM_IDS_MAX`) |
//! | MP_PRIO | 3 |
//! | MP_FAIL | 12 |
//! | MP_FASTCLOSE | 12 |
//! | MP_TCPRST | 4, and only on a segment with RST set |
//!
//! MP_CAPABLE and MP_JOIN lengths depend on the segment, described by a [`Segment`]. Linux sizes
//! MP_JOIN by its length alone and checks the segment type later, when it acts on it; checking
//! both here has the same effect (an MP_JOIN SYN option on a SYN/ACK is never a join) and gives a
//! caller one place to ask.
//!
//! ## The pipeline's summary
//!
//! [`scan`] walks an option area once and returns an [`MptcpSummary`]: the handshake options the
//! forwarding path acts on, how many options were ignored for breaking the rules, and whether the
//! segment contradicts itself (MP_CAPABLE with MP_JOIN, or two different copies of one option).
//! It does not allocate, and it decodes only the options it reports: the others are
//! length-checked by the same rules as [`MptcpOption::parse`].
//!
//! [`scan_syn`] is the same walk for an opening SYN, reduced to what a SYN acts on (plain,
//! MP_CAPABLE, or MP_JOIN with its token) and the same counts: it keeps nothing but the request
//! while the options are well formed, and hands anything it would have to count or compare to
//! the general walk.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::field::{read_u16, read_u32, read_u64, write_u16, write_u32, write_u64};
#[cfg(doc)]
use crate::tcp::TcpOptions;
use crate::tcp::{self, option_kind, TcpFlags};
use crate::{Error, Result};

/// MPTCP option subtypes (RFC 8684 §8, IANA "MPTCP Option Subtypes"; Linux `MPTCPOPT_*`).
pub mod subtype {
    /// Multipath Capable (RFC 8684 §3.1).
    pub const MP_CAPABLE: u8 = 0x0;
    /// Join Connection (RFC 8684 §3.2).
    pub const MP_JOIN: u8 = 0x1;
    /// Data Sequence Signal (RFC 8684 §3.3).
    pub const DSS: u8 = 0x2;
    /// Add Address (RFC 8684 §3.4.1).
    pub const ADD_ADDR: u8 = 0x3;
    /// Remove Address (RFC 8684 §3.4.2).
    pub const REMOVE_ADDR: u8 = 0x4;
    /// Change Subflow Priority (RFC 8684 §3.3.8).
    pub const MP_PRIO: u8 = 0x5;
    /// Fallback (RFC 8684 §3.7).
    pub const MP_FAIL: u8 = 0x6;
    /// Fast Close (RFC 8684 §3.5).
    pub const MP_FASTCLOSE: u8 = 0x7;
    /// Subflow Reset (RFC 8684 §3.6).
    pub const MP_TCPRST: u8 = 0x8;
    /// Reserved for private experiments (RFC 8684 §8).
    pub const MP_EXPERIMENTAL: u8 = 0xf;
}

/// MP_CAPABLE length on a SYN (Linux `TCPOLEN_MPTCP_MPC_SYN`).
pub const MP_CAPABLE_SYN_LEN: usize = 4;
/// MP_CAPABLE length on a SYN/ACK (`TCPOLEN_MPTCP_MPC_SYNACK`).
pub const MP_CAPABLE_SYNACK_LEN: usize = 12;
/// MP_CAPABLE length on the third ACK (`TCPOLEN_MPTCP_MPC_ACK`).
pub const MP_CAPABLE_ACK_LEN: usize = 20;
/// MP_CAPABLE length on the first data segment (`TCPOLEN_MPTCP_MPC_ACK_DATA`).
pub const MP_CAPABLE_ACK_DATA_LEN: usize = 22;
/// MP_CAPABLE length on the first data segment with a DSS checksum.
pub const MP_CAPABLE_ACK_DATA_CSUM_LEN: usize = 24;
/// MP_JOIN length on a SYN (`TCPOLEN_MPTCP_MPJ_SYN`).
pub const MP_JOIN_SYN_LEN: usize = 12;
/// MP_JOIN length on a SYN/ACK (`TCPOLEN_MPTCP_MPJ_SYNACK`).
pub const MP_JOIN_SYNACK_LEN: usize = 16;
/// MP_JOIN length on the third ACK (`TCPOLEN_MPTCP_MPJ_ACK`).
pub const MP_JOIN_ACK_LEN: usize = 24;
/// DSS length with neither data ACK nor mapping (`TCPOLEN_MPTCP_DSS_BASE`).
pub const DSS_BASE_LEN: usize = 4;
/// The most REMOVE_ADDR can carry (Linux `MPTCP_RM_IDS_MAX`).
pub const REMOVE_ADDR_MAX_IDS: usize = 8;
/// MP_PRIO length (`TCPOLEN_MPTCP_PRIO`).
pub const MP_PRIO_LEN: usize = 3;
/// MP_FAIL length (`TCPOLEN_MPTCP_FAIL`).
pub const MP_FAIL_LEN: usize = 12;
/// MP_FASTCLOSE length (`TCPOLEN_MPTCP_FASTCLOSE`).
pub const MP_FASTCLOSE_LEN: usize = 12;
/// MP_TCPRST length (`TCPOLEN_MPTCP_RST`).
pub const MP_TCPRST_LEN: usize = 4;
/// The MPTCP version this module speaks (`MPTCP_SUPPORTED_VERSION`).
pub const VERSION: u8 = 1;
/// The length of the full MP_JOIN ACK HMAC (`MPTCPOPT_HMAC_LEN`): 160 bits.
pub const JOIN_HMAC_LEN: usize = 20;

/// What [`MptcpOption::parse`] needs to know about the segment an option came in.
///
/// MP_CAPABLE and MP_JOIN lengths depend on the handshake step, MP_CAPABLE on the third ACK on
/// whether data rides along, and MP_TCPRST is only valid with RST.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Segment {
    /// SYN is set.
    pub syn: bool,
    /// ACK is set.
    pub ack: bool,
    /// RST is set.
    pub rst: bool,
    /// The segment carries payload (Linux: `skb->len > doff * 4`).
    pub has_payload: bool,
}

impl Segment {
    /// Describes a segment from its flags and whether it carries payload.
    #[inline]
    pub const fn new(flags: TcpFlags, has_payload: bool) -> Self {
        Self {
            syn: flags.contains(TcpFlags::SYN),
            ack: flags.contains(TcpFlags::ACK),
            rst: flags.contains(TcpFlags::RST),
            has_payload,
        }
    }

    /// Describes the segment a checked TCP view holds.
    #[inline]
    pub fn of<T: AsRef<[u8]>>(packet: &tcp::Packet<T>) -> Self {
        Self::new(packet.flags(), !packet.payload().is_empty())
    }
}

/// Why an MPTCP option was ignored. Each variant is a drop-or-ignore counter of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MptcpError {
    /// Shorter than 3 bytes: no subtype byte (catalogue row M1).
    TooShort,
    /// The length is not one Linux accepts for this subtype on this segment (M3 MP_CAPABLE,
    /// M10/M15 MP_JOIN, M16 DSS, M17 ADD_ADDR, M18 the others), or the length byte disagrees
    /// with the slice handed in.
    BadLength,
    /// MP_CAPABLE version 0: RFC 6824 MPTCP, which a v1 stack does not speak (M4).
    Version0,
    /// MP_CAPABLE version other than 1 outside a SYN (M5; on a SYN any version >= 1 is a v1
    /// request, as Linux accepts it "to be gentle vs future versions").
    UnsupportedVersion,
    /// MP_CAPABLE with H (HMAC-SHA256) clear, another crypto bit (D–G) set, or B
    /// (extensibility) set (M6).
    BadFlags,
    /// MP_TCPRST on a segment without RST (M18).
    RstWithoutRstFlag,
    /// The option kind is not 30: the caller handed in something else.
    NotMptcp,
}

impl MptcpError {
    /// A short snake_case name, for counters and logs.
    pub const fn name(self) -> &'static str {
        match self {
            Self::TooShort => "mptcp_too_short",
            Self::BadLength => "mptcp_bad_len",
            Self::Version0 => "mptcp_version0",
            Self::UnsupportedVersion => "mptcp_unsupported_version",
            Self::BadFlags => "mptcp_bad_flags",
            Self::RstWithoutRstFlag => "mptcp_rst_without_rst",
            Self::NotMptcp => "mptcp_not_mptcp",
        }
    }
}

impl fmt::Display for MptcpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Self::TooShort => "MPTCP option shorter than 3 bytes",
            Self::BadLength => "MPTCP option length not valid for its subtype and segment",
            Self::Version0 => "MP_CAPABLE version 0 (RFC 6824)",
            Self::UnsupportedVersion => "MP_CAPABLE version other than 1",
            Self::BadFlags => "MP_CAPABLE flags without HMAC-SHA256 or with extensibility",
            Self::RstWithoutRstFlag => "MP_TCPRST on a segment without RST",
            Self::NotMptcp => "not an MPTCP option",
        };
        f.write_str(s)
    }
}

impl std::error::Error for MptcpError {}

/// Writes kind, length, subtype and low nibble; checks the buffer can hold `len` bytes.
fn emit_header(buffer: &mut [u8], len: usize, subtype: u8, nibble: u8) -> Result<&mut [u8]> {
    if len > buffer.len() {
        return Err(Error::Truncated);
    }
    buffer[0] = option_kind::MPTCP;
    buffer[1] = u8::try_from(len).map_err(|_| Error::BadLength)?;
    buffer[2] = (subtype << 4) | (nibble & 0x0F);
    Ok(buffer)
}

// ---------------------------------------------------------------------------------------------
// MP_CAPABLE
// ---------------------------------------------------------------------------------------------

/// The MP_CAPABLE flag byte (RFC 8684 §3.1): `A B C D E F G H`.
///
/// ```text
///   7   6   5   4   3   2   1   0
/// +---+---+---+---+---+---+---+---+
/// | A | B | C | D | E | F | G | H |
/// +---+---+---+---+---+---+---+---+
///  A checksum required, B extensibility (must be 0), C do not join the initial address/port,
///  D-G unassigned crypto algorithms (must be 0), H HMAC-SHA256 (must be 1)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MpcFlags(pub u8);

impl MpcFlags {
    /// A: DSS checksums required (`MPTCP_CAP_CHECKSUM_REQD`).
    pub const CHECKSUM_REQUIRED: Self = Self(0x80);
    /// B: extensibility; no extension is defined, so Linux ignores an option with it set
    /// (`MPTCP_CAP_EXTENSIBILITY`).
    pub const EXTENSIBILITY: Self = Self(0x40);
    /// C: "will not accept additional MPTCP subflows to the source address and port"
    /// (`MPTCP_CAP_DENY_JOIN_ID0`).
    pub const DENY_JOIN_ID0: Self = Self(0x20);
    /// H: HMAC-SHA256, the only crypto algorithm defined (`MPTCP_CAP_HMAC_SHA256`).
    pub const HMAC_SHA256: Self = Self(0x01);
    /// The crypto-algorithm bits D–H (`MPTCP_CAP_FLAG_MASK`).
    pub const CRYPTO_MASK: Self = Self(0x1F);

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

    /// `self` with the flags of `other` added.
    #[inline]
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// A: the sender requires DSS checksums.
    #[inline]
    pub const fn checksum_required(self) -> bool {
        self.contains(Self::CHECKSUM_REQUIRED)
    }

    /// C: the sender refuses joins to its initial address and port.
    #[inline]
    pub const fn deny_join_id0(self) -> bool {
        self.contains(Self::DENY_JOIN_ID0)
    }

    /// Whether Linux accepts these flags: H set, D–G clear, B clear.
    #[inline]
    pub const fn is_valid(self) -> bool {
        // Linux mptcp_cap_flag_sha256(): (flags & MPTCP_CAP_FLAG_MASK) == MPTCP_CAP_HMAC_SHA256
        self.0 & Self::CRYPTO_MASK.0 == Self::HMAC_SHA256.0 && !self.contains(Self::EXTENSIBILITY)
    }
}

impl core::ops::BitOr for MpcFlags {
    type Output = Self;

    #[inline]
    fn bitor(self, rhs: Self) -> Self {
        self.union(rhs)
    }
}

/// MP_CAPABLE (RFC 8684 §3.1): the keys of the first subflow's handshake.
///
/// ```text
/// +---------------+---------------+-------+-------+---------------+
/// |     Kind      |    Length     |Subtype|Version|A|B|C|D|E|F|G|H|
/// +---------------+---------------+-------+-------+---------------+
/// |        Option Sender's Key (64 bits)  (SYN/ACK, ACK)          |
/// +---------------------------------------------------------------+
/// |       Option Receiver's Key (64 bits)  (ACK)                  |
/// +-------------------------------+-------------------------------+
/// |  Data-Level Length (16 bits)  |  Checksum (16 bits, optional) |
/// +-------------------------------+-------------------------------+
///      SYN 4, SYN/ACK 12, ACK 20, ACK + data 22, + checksum 24
/// ```
///
/// In v1 the client's SYN carries no key. The server's key appears in its SYN/ACK (as
/// `sender_key`) and again in the client's third ACK (as `receiver_key`): the token a later
/// MP_JOIN carries is derived from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MpCapable {
    /// The version (1; any value >= 1 on a SYN).
    pub version: u8,
    /// The flag byte.
    pub flags: MpcFlags,
    /// The sender's key (SYN/ACK and later).
    pub sender_key: Option<u64>,
    /// The receiver's key, echoed back (third ACK and first data segment).
    pub receiver_key: Option<u64>,
    /// The data-level length of the first data segment's mapping.
    pub data_len: Option<u16>,
    /// The DSS checksum of that mapping, when checksums are in use.
    pub checksum: Option<u16>,
}

impl MpCapable {
    /// The option length: the longest form any present field needs; absent fields before it
    /// are emitted as zero.
    pub const fn buffer_len(&self) -> usize {
        if self.checksum.is_some() {
            MP_CAPABLE_ACK_DATA_CSUM_LEN
        } else if self.data_len.is_some() {
            MP_CAPABLE_ACK_DATA_LEN
        } else if self.receiver_key.is_some() {
            MP_CAPABLE_ACK_LEN
        } else if self.sender_key.is_some() {
            MP_CAPABLE_SYNACK_LEN
        } else {
            MP_CAPABLE_SYN_LEN
        }
    }

    /// Writes the option (kind and length included); returns the rest of the buffer.
    pub fn emit<'b>(&self, buffer: &'b mut [u8]) -> Result<&'b mut [u8]> {
        let len = self.buffer_len();
        let out = emit_header(buffer, len, subtype::MP_CAPABLE, self.version)?;
        out[3] = self.flags.0;
        if len >= MP_CAPABLE_SYNACK_LEN {
            write_u64(out, 4, self.sender_key.unwrap_or(0));
        }
        if len >= MP_CAPABLE_ACK_LEN {
            write_u64(out, 12, self.receiver_key.unwrap_or(0));
        }
        if len >= MP_CAPABLE_ACK_DATA_LEN {
            write_u16(out, 20, self.data_len.unwrap_or(0));
        }
        if len >= MP_CAPABLE_ACK_DATA_CSUM_LEN {
            write_u16(out, 22, self.checksum.unwrap_or(0));
        }
        Ok(&mut out[len..])
    }

    fn parse(raw: &[u8], seg: Segment) -> core::result::Result<Self, MptcpError> {
        let len = raw.len();
        let version = raw[2] & 0x0F;
        // RFC 8684 §3.1: "version 0 ... RFC 6824" is a different handshake (a key on the SYN);
        // a v1 stack ignores it and the connection is plain TCP.
        if version == 0 {
            return Err(MptcpError::Version0);
        }
        // Linux "strict size checking": the length is fixed by the segment type.
        let expected = if !seg.syn {
            if seg.has_payload {
                MP_CAPABLE_ACK_DATA_LEN
            } else {
                MP_CAPABLE_ACK_LEN
            }
        } else if seg.ack {
            MP_CAPABLE_SYNACK_LEN
        } else {
            MP_CAPABLE_SYN_LEN
        };
        // RFC 8684 §3.3: a checksum present or absent against the negotiation is the
        // endpoint's business (it resets the subflow); Linux parses either form here.
        if len != expected
            && !(expected == MP_CAPABLE_ACK_DATA_LEN && len == MP_CAPABLE_ACK_DATA_CSUM_LEN)
        {
            return Err(MptcpError::BadLength);
        }
        // Linux: "try to be gentle vs future versions on the initial syn".
        if len != MP_CAPABLE_SYN_LEN && version != VERSION {
            return Err(MptcpError::UnsupportedVersion);
        }
        let flags = MpcFlags(raw[3]);
        if !flags.is_valid() {
            return Err(MptcpError::BadFlags);
        }
        Ok(Self {
            version,
            flags,
            sender_key: (len >= MP_CAPABLE_SYNACK_LEN).then(|| read_u64(raw, 4)),
            receiver_key: (len >= MP_CAPABLE_ACK_LEN).then(|| read_u64(raw, 12)),
            data_len: (len >= MP_CAPABLE_ACK_DATA_LEN).then(|| read_u16(raw, 20)),
            checksum: (len == MP_CAPABLE_ACK_DATA_CSUM_LEN).then(|| read_u16(raw, 22)),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// MP_JOIN
// ---------------------------------------------------------------------------------------------

/// MP_JOIN (RFC 8684 §3.2): the three steps of adding a subflow.
///
/// ```text
/// SYN (12):     | Kind | Len=12 |Subtype|   |B| Address ID |
///               |          Receiver's Token (32 bits)      |
///               |      Sender's Random Number (32 bits)    |
///
/// SYN/ACK (16): | Kind | Len=16 |Subtype|   |B| Address ID |
///               |   Sender's Truncated HMAC (64 bits)      |
///               |      Sender's Random Number (32 bits)    |
///
/// ACK (24):     | Kind | Len=24 |Subtype|  (reserved)      |
///               |         Sender's HMAC (160 bits)         |
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MpJoin {
    /// The joining SYN: names the connection by the receiver's token.
    Syn {
        /// B: the subflow is a backup path.
        backup: bool,
        /// The sender's address identifier.
        address_id: u8,
        /// The token of the connection to join (derived from the receiver's key).
        receiver_token: u32,
        /// The sender's nonce.
        sender_nonce: u32,
    },
    /// The SYN/ACK: proves the responder knows the keys.
    SynAck {
        /// B: the subflow is a backup path.
        backup: bool,
        /// The sender's address identifier.
        address_id: u8,
        /// The leftmost 64 bits of HMAC-SHA256(key_B || key_A, nonce_B || nonce_A).
        sender_truncated_hmac: u64,
        /// The sender's nonce.
        sender_nonce: u32,
    },
    /// The third ACK: proves the initiator knows the keys.
    Ack {
        /// The leftmost 160 bits of HMAC-SHA256(key_A || key_B, nonce_A || nonce_B).
        sender_hmac: [u8; JOIN_HMAC_LEN],
    },
}

impl MpJoin {
    /// The option length: 12, 16 or 24.
    pub const fn buffer_len(&self) -> usize {
        match self {
            Self::Syn { .. } => MP_JOIN_SYN_LEN,
            Self::SynAck { .. } => MP_JOIN_SYNACK_LEN,
            Self::Ack { .. } => MP_JOIN_ACK_LEN,
        }
    }

    /// Writes the option (kind and length included); returns the rest of the buffer.
    pub fn emit<'b>(&self, buffer: &'b mut [u8]) -> Result<&'b mut [u8]> {
        let len = self.buffer_len();
        match *self {
            Self::Syn {
                backup,
                address_id,
                receiver_token,
                sender_nonce,
            } => {
                let out = emit_header(buffer, len, subtype::MP_JOIN, u8::from(backup))?;
                out[3] = address_id;
                write_u32(out, 4, receiver_token);
                write_u32(out, 8, sender_nonce);
                Ok(&mut out[len..])
            }
            Self::SynAck {
                backup,
                address_id,
                sender_truncated_hmac,
                sender_nonce,
            } => {
                let out = emit_header(buffer, len, subtype::MP_JOIN, u8::from(backup))?;
                out[3] = address_id;
                write_u64(out, 4, sender_truncated_hmac);
                write_u32(out, 12, sender_nonce);
                Ok(&mut out[len..])
            }
            Self::Ack { sender_hmac } => {
                let out = emit_header(buffer, len, subtype::MP_JOIN, 0)?;
                out[3] = 0;
                out[4..len].copy_from_slice(&sender_hmac);
                Ok(&mut out[len..])
            }
        }
    }

    fn parse(raw: &[u8], seg: Segment) -> core::result::Result<Self, MptcpError> {
        let expected = match (seg.syn, seg.ack) {
            (true, false) => MP_JOIN_SYN_LEN,
            (true, true) => MP_JOIN_SYNACK_LEN,
            (false, _) => MP_JOIN_ACK_LEN,
        };
        // Linux: any other length and the option is ignored (M10, M15).
        if raw.len() != expected {
            return Err(MptcpError::BadLength);
        }
        let backup = raw[2] & 0x01 != 0;
        Ok(match expected {
            MP_JOIN_SYN_LEN => Self::Syn {
                backup,
                address_id: raw[3],
                receiver_token: read_u32(raw, 4),
                sender_nonce: read_u32(raw, 8),
            },
            MP_JOIN_SYNACK_LEN => Self::SynAck {
                backup,
                address_id: raw[3],
                sender_truncated_hmac: read_u64(raw, 4),
                sender_nonce: read_u32(raw, 12),
            },
            _ => {
                let mut sender_hmac = [0u8; JOIN_HMAC_LEN];
                sender_hmac.copy_from_slice(&raw[4..MP_JOIN_ACK_LEN]);
                Self::Ack { sender_hmac }
            }
        })
    }
}

// ---------------------------------------------------------------------------------------------
// DSS
// ---------------------------------------------------------------------------------------------

/// A DSS data ACK: the next data sequence number expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DataAck {
    /// The value; below 2^32 when `is_64bit` is false (a 4-byte ACK emits its low 32 bits).
    pub value: u64,
    /// Sent as 8 bytes (flag `a`) rather than 4.
    pub is_64bit: bool,
}

/// A DSS mapping of subflow bytes onto the data sequence space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DssMapping {
    /// The data sequence number; below 2^32 when `dsn_is_64bit` is false.
    pub dsn: u64,
    /// Sent as 8 bytes (flag `m`) rather than 4.
    pub dsn_is_64bit: bool,
    /// The subflow sequence number, relative to the subflow's initial sequence number.
    pub subflow_seq: u32,
    /// The data-level length (0: infinite mapping).
    pub data_len: u16,
    /// The DSS checksum, present when checksums were negotiated.
    pub checksum: Option<u16>,
}

/// DSS (RFC 8684 §3.3): data ACK and mapping.
///
/// ```text
/// +---------------+---------------+-------+----------------------+
/// |     Kind      |    Length     |Subtype| (reserved) |F|m|M|a|A|
/// +---------------+---------------+-------+----------------------+
/// |           Data ACK (4 or 8 octets, depending on flags)       |
/// +--------------------------------------------------------------+
/// |   Data sequence number (4 or 8 octets, depending on flags)   |
/// +--------------------------------------------------------------+
/// |              Subflow Sequence Number (4 octets)              |
/// +-------------------------------+------------------------------+
/// |  Data-Level Length (2 octets) |      Checksum (2 octets)     |
/// +-------------------------------+------------------------------+
///  A data ACK present, a data ACK is 8 octets, M mapping present,
///  m DSN is 8 octets, F DATA_FIN
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dss {
    /// F: DATA_FIN.
    pub data_fin: bool,
    /// The data ACK, when flag A is set.
    pub data_ack: Option<DataAck>,
    /// The mapping, when flag M is set.
    pub mapping: Option<DssMapping>,
}

const DSS_DATA_FIN: u8 = 0x10;
const DSS_DSN64: u8 = 0x08;
const DSS_HAS_MAP: u8 = 0x04;
const DSS_ACK64: u8 = 0x02;
const DSS_HAS_ACK: u8 = 0x01;

impl Dss {
    /// The option length implied by the fields.
    pub const fn buffer_len(&self) -> usize {
        let ack = match self.data_ack {
            Some(DataAck { is_64bit: true, .. }) => 8,
            Some(DataAck {
                is_64bit: false, ..
            }) => 4,
            None => 0,
        };
        let map = match self.mapping {
            Some(m) => {
                (if m.dsn_is_64bit { 14 } else { 10 }) + if m.checksum.is_some() { 2 } else { 0 }
            }
            None => 0,
        };
        DSS_BASE_LEN + ack + map
    }

    /// Writes the option (kind and length included); returns the rest of the buffer.
    pub fn emit<'b>(&self, buffer: &'b mut [u8]) -> Result<&'b mut [u8]> {
        let len = self.buffer_len();
        let out = emit_header(buffer, len, subtype::DSS, 0)?;
        let mut flags = 0;
        if self.data_fin {
            flags |= DSS_DATA_FIN;
        }
        let mut at = DSS_BASE_LEN;
        if let Some(ack) = self.data_ack {
            flags |= DSS_HAS_ACK;
            if ack.is_64bit {
                flags |= DSS_ACK64;
                write_u64(out, at, ack.value);
                at += 8;
            } else {
                write_u32(out, at, ack.value as u32);
                at += 4;
            }
        }
        if let Some(map) = self.mapping {
            flags |= DSS_HAS_MAP;
            if map.dsn_is_64bit {
                flags |= DSS_DSN64;
                write_u64(out, at, map.dsn);
                at += 8;
            } else {
                write_u32(out, at, map.dsn as u32);
                at += 4;
            }
            write_u32(out, at, map.subflow_seq);
            write_u16(out, at + 4, map.data_len);
            if let Some(checksum) = map.checksum {
                write_u16(out, at + 6, checksum);
            }
        }
        out[3] = flags;
        Ok(&mut out[len..])
    }

    /// Checks the length against the flags; returns the flags and whether 2 checksum bytes
    /// follow.
    #[inline]
    fn check_len(raw: &[u8]) -> core::result::Result<(u8, bool), MptcpError> {
        let &flags = raw.get(3).ok_or(MptcpError::BadLength)?;
        let mut expected = DSS_BASE_LEN;
        if flags & DSS_HAS_ACK != 0 {
            expected += if flags & DSS_ACK64 != 0 { 8 } else { 4 };
        }
        if flags & DSS_HAS_MAP != 0 {
            expected += if flags & DSS_DSN64 != 0 { 14 } else { 10 };
        }
        // Linux: "Always parse any csum presence combination, we will enforce RFC 8684
        // Section 3.3.0 checks later". Like Linux, the 2 extra bytes are accepted (and ignored)
        // when there is no mapping for them to belong to.
        if raw.len() == expected {
            Ok((flags, false))
        } else if raw.len() == expected + 2 {
            Ok((flags, true))
        } else {
            Err(MptcpError::BadLength)
        }
    }

    fn parse(raw: &[u8]) -> core::result::Result<Self, MptcpError> {
        let (flags, with_checksum) = Self::check_len(raw)?;
        let mut at = DSS_BASE_LEN;
        let mut data_ack = None;
        if flags & DSS_HAS_ACK != 0 {
            data_ack = Some(if flags & DSS_ACK64 != 0 {
                at += 8;
                DataAck {
                    value: read_u64(raw, at - 8),
                    is_64bit: true,
                }
            } else {
                at += 4;
                DataAck {
                    value: u64::from(read_u32(raw, at - 4)),
                    is_64bit: false,
                }
            });
        }
        let mut mapping = None;
        if flags & DSS_HAS_MAP != 0 {
            let dsn_is_64bit = flags & DSS_DSN64 != 0;
            let dsn = if dsn_is_64bit {
                at += 8;
                read_u64(raw, at - 8)
            } else {
                at += 4;
                u64::from(read_u32(raw, at - 4))
            };
            mapping = Some(DssMapping {
                dsn,
                dsn_is_64bit,
                subflow_seq: read_u32(raw, at),
                data_len: read_u16(raw, at + 4),
                checksum: if with_checksum {
                    Some(read_u16(raw, at + 6))
                } else {
                    None
                },
            });
        }
        Ok(Self {
            data_fin: flags & DSS_DATA_FIN != 0,
            data_ack,
            mapping,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// ADD_ADDR, REMOVE_ADDR, MP_PRIO
// ---------------------------------------------------------------------------------------------

/// ADD_ADDR (RFC 8684 §3.4.1): announces an address (and port) of the sender.
///
/// ```text
/// +---------------+---------------+-------+-------+---------------+
/// |     Kind      |     Length    |Subtype| (rsv)|E|  Address ID   |
/// +---------------+---------------+-------+-------+---------------+
/// |           Address (IPv4: 4 octets / IPv6: 16 octets)          |
/// +-------------------------------+-------------------------------+
/// |   Port (2 octets, optional)   |                               |
/// +-------------------------------+                               |
/// |                Truncated HMAC (8 octets, if E=0)              |
/// +---------------------------------------------------------------+
///   IPv4 16, +port 18; IPv6 28, +port 30; echo (E=1, no HMAC) 8, 10, 20, 22
/// ```
///
/// The HMAC (see `trapeze_core::crypto::add_addr_hmac`) covers the address ID, address and
/// port, so a middlebox must forward this option byte for byte (catalogue row M17).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddAddr {
    /// E: this is the echo of an announcement, carrying no HMAC.
    pub echo: bool,
    /// The address identifier.
    pub address_id: u8,
    /// The announced address.
    pub addr: IpAddr,
    /// The announced port, when it differs from the subflow's.
    pub port: Option<u16>,
    /// The rightmost 64 bits of the announcement's HMAC; `None` exactly when `echo` is set.
    pub truncated_hmac: Option<u64>,
}

impl AddAddr {
    /// The option length implied by the fields.
    pub const fn buffer_len(&self) -> usize {
        let addr = match self.addr {
            IpAddr::V4(_) => 4,
            IpAddr::V6(_) => 16,
        };
        let port = if self.port.is_some() { 2 } else { 0 };
        let hmac = if self.truncated_hmac.is_some() { 8 } else { 0 };
        4 + addr + port + hmac
    }

    /// Writes the option (kind and length included); returns the rest of the buffer.
    pub fn emit<'b>(&self, buffer: &'b mut [u8]) -> Result<&'b mut [u8]> {
        let len = self.buffer_len();
        let out = emit_header(buffer, len, subtype::ADD_ADDR, u8::from(self.echo))?;
        out[3] = self.address_id;
        let mut at = 4;
        match self.addr {
            IpAddr::V4(a) => {
                out[at..at + 4].copy_from_slice(&a.octets());
                at += 4;
            }
            IpAddr::V6(a) => {
                out[at..at + 16].copy_from_slice(&a.octets());
                at += 16;
            }
        }
        if let Some(port) = self.port {
            write_u16(out, at, port);
            at += 2;
        }
        if let Some(hmac) = self.truncated_hmac {
            write_u64(out, at, hmac);
        }
        Ok(&mut out[len..])
    }

    /// Checks the length against the echo bit; returns (echo, is IPv6, has port).
    #[inline]
    fn layout(raw: &[u8]) -> core::result::Result<(bool, bool, bool), MptcpError> {
        let echo = raw.get(2).is_some_and(|b| b & 0x01 != 0);
        // Linux accepts exactly these eight lengths (TCPOLEN_MPTCP_ADD_ADDR*).
        let (v6, port) = match (echo, raw.len()) {
            (false, 16) | (true, 8) => (false, false),
            (false, 18) | (true, 10) => (false, true),
            (false, 28) | (true, 20) => (true, false),
            (false, 30) | (true, 22) => (true, true),
            _ => return Err(MptcpError::BadLength),
        };
        Ok((echo, v6, port))
    }

    fn parse(raw: &[u8]) -> core::result::Result<Self, MptcpError> {
        let (echo, v6, port) = Self::layout(raw)?;
        let mut at = 4;
        let addr = if v6 {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&raw[at..at + 16]);
            at += 16;
            IpAddr::V6(Ipv6Addr::from(octets))
        } else {
            let octets = [raw[at], raw[at + 1], raw[at + 2], raw[at + 3]];
            at += 4;
            IpAddr::V4(Ipv4Addr::from(octets))
        };
        let port = port.then(|| {
            let p = read_u16(raw, at);
            at += 2;
            p
        });
        Ok(Self {
            echo,
            address_id: raw[3],
            addr,
            port,
            truncated_hmac: (!echo).then(|| read_u64(raw, at)),
        })
    }
}

/// REMOVE_ADDR (RFC 8684 §3.4.2): withdraws one or more address IDs.
///
/// ```text
/// +---------------+---------------+-------+-------+---------------+
/// |     Kind      |  Length = 3+n |Subtype|(resv) |   Address ID  | ...
/// +---------------+---------------+-------+-------+---------------+
///                                           (followed by n-1 Address IDs, if required)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RemoveAddr<'a> {
    /// The withdrawn address IDs, 1 to 8 of them.
    pub address_ids: &'a [u8],
}

impl RemoveAddr<'_> {
    /// The option length: 3 plus the number of IDs.
    pub const fn buffer_len(&self) -> usize {
        3 + self.address_ids.len()
    }

    /// Writes the option (kind and length included); returns the rest of the buffer.
    ///
    /// Fails with [`Error::BadLength`] for more IDs than a length byte can count.
    pub fn emit<'b>(&self, buffer: &'b mut [u8]) -> Result<&'b mut [u8]> {
        let len = self.buffer_len();
        let out = emit_header(buffer, len, subtype::REMOVE_ADDR, 0)?;
        out[3..len].copy_from_slice(self.address_ids);
        Ok(&mut out[len..])
    }

    #[inline]
    fn check_len(raw: &[u8]) -> core::result::Result<(), MptcpError> {
        // Linux: opsize < TCPOLEN_MPTCP_RM_ADDR_BASE + 1 || > BASE + MPTCP_RM_IDS_MAX => ignore.
        if raw.len() < 4 || raw.len() > 3 + REMOVE_ADDR_MAX_IDS {
            return Err(MptcpError::BadLength);
        }
        Ok(())
    }

    fn parse(raw: &[u8]) -> core::result::Result<RemoveAddr<'_>, MptcpError> {
        Self::check_len(raw)?;
        Ok(RemoveAddr {
            address_ids: &raw[3..],
        })
    }
}

/// MP_PRIO (RFC 8684 §3.3.8): changes the backup priority of the subflow it is sent on.
///
/// ```text
/// +---------------+---------------+-------+-----+-+
/// |     Kind      |   Length = 3  |Subtype|(rsv)|B|
/// +---------------+---------------+-------+-----+-+
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MpPrio {
    /// B: the subflow becomes a backup path.
    pub backup: bool,
}

impl MpPrio {
    /// The option length: 3.
    pub const fn buffer_len(&self) -> usize {
        MP_PRIO_LEN
    }

    /// Writes the option (kind and length included); returns the rest of the buffer.
    pub fn emit<'b>(&self, buffer: &'b mut [u8]) -> Result<&'b mut [u8]> {
        let out = emit_header(buffer, MP_PRIO_LEN, subtype::MP_PRIO, u8::from(self.backup))?;
        Ok(&mut out[MP_PRIO_LEN..])
    }
}

// ---------------------------------------------------------------------------------------------
// MP_FAIL, MP_FASTCLOSE, MP_TCPRST
// ---------------------------------------------------------------------------------------------

/// MP_FAIL (RFC 8684 §3.7): a checksum failure, asking the peer to fall back.
///
/// ```text
/// +---------------+---------------+-------+----------------------+
/// |     Kind      |   Length=12   |Subtype|      (reserved)      |
/// +---------------+---------------+-------+----------------------+
/// |                 Data Sequence Number (8 octets)              |
/// +--------------------------------------------------------------+
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MpFail {
    /// The data sequence number where the failure starts.
    pub dsn: u64,
}

impl MpFail {
    /// The option length: 12.
    pub const fn buffer_len(&self) -> usize {
        MP_FAIL_LEN
    }

    /// Writes the option (kind and length included); returns the rest of the buffer.
    pub fn emit<'b>(&self, buffer: &'b mut [u8]) -> Result<&'b mut [u8]> {
        let out = emit_header(buffer, MP_FAIL_LEN, subtype::MP_FAIL, 0)?;
        out[3] = 0;
        write_u64(out, 4, self.dsn);
        Ok(&mut out[MP_FAIL_LEN..])
    }
}

/// MP_FASTCLOSE (RFC 8684 §3.5): closes the whole connection, proving it with the receiver's
/// key.
///
/// ```text
/// +---------------+---------------+-------+-----------------------+
/// |     Kind      |    Length     |Subtype|      (reserved)       |
/// +---------------+---------------+-------+-----------------------+
/// |                      Option Receiver's Key                    |
/// |                            (64 bits)                          |
/// +---------------------------------------------------------------+
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MpFastclose {
    /// The key of the receiver of this option (Linux checks it equals its local key).
    pub receiver_key: u64,
}

impl MpFastclose {
    /// The option length: 12.
    pub const fn buffer_len(&self) -> usize {
        MP_FASTCLOSE_LEN
    }

    /// Writes the option (kind and length included); returns the rest of the buffer.
    pub fn emit<'b>(&self, buffer: &'b mut [u8]) -> Result<&'b mut [u8]> {
        let out = emit_header(buffer, MP_FASTCLOSE_LEN, subtype::MP_FASTCLOSE, 0)?;
        out[3] = 0;
        write_u64(out, 4, self.receiver_key);
        Ok(&mut out[MP_FASTCLOSE_LEN..])
    }
}

/// MP_TCPRST reason codes (RFC 8684 §3.6; Linux `MPTCP_RST_E*`).
pub mod rst_reason {
    /// Unspecified error (`MPTCP_RST_EUNSPEC`).
    pub const UNSPECIFIED: u8 = 0x00;
    /// MPTCP-specific error, e.g. an MP_JOIN for an unknown token (`MPTCP_RST_EMPTCP`).
    pub const MPTCP_ERROR: u8 = 0x01;
    /// Lack of resources (`MPTCP_RST_ERESOURCE`).
    pub const LACK_OF_RESOURCES: u8 = 0x02;
    /// Administratively prohibited (`MPTCP_RST_EPROHIBIT`).
    pub const ADMINISTRATIVELY_PROHIBITED: u8 = 0x03;
    /// Too much outstanding data (`MPTCP_RST_EWQ2BIG`).
    pub const TOO_MUCH_OUTSTANDING_DATA: u8 = 0x04;
    /// Unacceptable performance (`MPTCP_RST_EBADPERF`).
    pub const UNACCEPTABLE_PERFORMANCE: u8 = 0x05;
    /// Middlebox interference (`MPTCP_RST_EMIDDLEBOX`).
    pub const MIDDLEBOX_INTERFERENCE: u8 = 0x06;
}

/// MP_TCPRST (RFC 8684 §3.6): why a subflow was reset. Only meaningful with RST.
///
/// ```text
/// +---------------+---------------+-------+-----------------------+
/// |     Kind      |    Length     |Subtype|U|V|W|T|    Reason     |
/// +---------------+---------------+-------+-----------------------+
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MpTcpRst {
    /// The four flag bits `U V W T` (low nibble); `T` (bit 0) is [`Self::TRANSIENT`].
    pub flags: u8,
    /// The reason code (see [`rst_reason`]).
    pub reason: u8,
}

impl MpTcpRst {
    /// T: the error is transient; the sender may retry (`MPTCP_RST_TRANSIENT`).
    pub const TRANSIENT: u8 = 0x01;

    /// Whether T is set.
    #[inline]
    pub const fn transient(&self) -> bool {
        self.flags & Self::TRANSIENT != 0
    }

    /// The option length: 4.
    pub const fn buffer_len(&self) -> usize {
        MP_TCPRST_LEN
    }

    /// Writes the option (kind and length included); returns the rest of the buffer.
    pub fn emit<'b>(&self, buffer: &'b mut [u8]) -> Result<&'b mut [u8]> {
        let out = emit_header(buffer, MP_TCPRST_LEN, subtype::MP_TCPRST, self.flags)?;
        out[3] = self.reason;
        Ok(&mut out[MP_TCPRST_LEN..])
    }

    /// `raw` has the MP_TCPRST length.
    fn parse(raw: &[u8], seg: Segment) -> core::result::Result<Self, MptcpError> {
        // Linux: "if (!(TCP_SKB_CB(skb)->tcp_flags & TCPHDR_RST)) break;"
        if !seg.rst {
            return Err(MptcpError::RstWithoutRstFlag);
        }
        Ok(Self {
            flags: raw[2] & 0x0F,
            reason: raw[3],
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Any option
// ---------------------------------------------------------------------------------------------

/// Checks the framing every subtype shares; returns the subtype.
#[inline]
fn frame(raw: &[u8]) -> core::result::Result<u8, MptcpError> {
    // M1: no subtype byte.
    if raw.len() < 3 {
        return Err(MptcpError::TooShort);
    }
    if raw[0] != option_kind::MPTCP {
        return Err(MptcpError::NotMptcp);
    }
    if usize::from(raw[1]) != raw.len() {
        return Err(MptcpError::BadLength);
    }
    // Linux: "u8 subtype = *ptr >> 4;"
    Ok(raw[2] >> 4)
}

/// One MPTCP option, validated by the Linux rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MptcpOption<'a> {
    /// MP_CAPABLE (subtype 0).
    MpCapable(MpCapable),
    /// MP_JOIN (subtype 1).
    MpJoin(MpJoin),
    /// DSS (subtype 2).
    Dss(Dss),
    /// ADD_ADDR (subtype 3).
    AddAddr(AddAddr),
    /// REMOVE_ADDR (subtype 4).
    RemoveAddr(RemoveAddr<'a>),
    /// MP_PRIO (subtype 5).
    MpPrio(MpPrio),
    /// MP_FAIL (subtype 6).
    MpFail(MpFail),
    /// MP_FASTCLOSE (subtype 7).
    MpFastclose(MpFastclose),
    /// MP_TCPRST (subtype 8).
    MpTcpRst(MpTcpRst),
    /// Subtypes 9–15 (catalogue row M2: ignored, the walk goes on, the option is forwarded).
    Unknown {
        /// The subtype (high nibble of `data[0]`).
        subtype: u8,
        /// The option body from the subtype byte on (kind and length excluded), so that
        /// [`emit`](Self::emit) reproduces it byte for byte.
        data: &'a [u8],
    },
}

impl<'a> MptcpOption<'a> {
    /// Parses one raw MPTCP option, kind and length included (as
    /// [`TcpOption::Mptcp`](crate::tcp::TcpOption::Mptcp) gives it), checking it as Linux does
    /// for a segment described by `seg`.
    pub fn parse(raw: &'a [u8], seg: Segment) -> core::result::Result<Self, MptcpError> {
        let subtype = frame(raw)?;
        match subtype {
            subtype::MP_CAPABLE => MpCapable::parse(raw, seg).map(Self::MpCapable),
            subtype::MP_JOIN => MpJoin::parse(raw, seg).map(Self::MpJoin),
            subtype::DSS => Dss::parse(raw).map(Self::Dss),
            subtype::ADD_ADDR => AddAddr::parse(raw).map(Self::AddAddr),
            subtype::REMOVE_ADDR => RemoveAddr::parse(raw).map(Self::RemoveAddr),
            subtype::MP_PRIO if raw.len() == MP_PRIO_LEN => Ok(Self::MpPrio(MpPrio {
                backup: raw[2] & 0x01 != 0,
            })),
            subtype::MP_FAIL if raw.len() == MP_FAIL_LEN => Ok(Self::MpFail(MpFail {
                dsn: read_u64(raw, 4),
            })),
            subtype::MP_FASTCLOSE if raw.len() == MP_FASTCLOSE_LEN => {
                Ok(Self::MpFastclose(MpFastclose {
                    receiver_key: read_u64(raw, 4),
                }))
            }
            subtype::MP_TCPRST if raw.len() == MP_TCPRST_LEN => {
                MpTcpRst::parse(raw, seg).map(Self::MpTcpRst)
            }
            subtype::MP_PRIO | subtype::MP_FAIL | subtype::MP_FASTCLOSE | subtype::MP_TCPRST => {
                Err(MptcpError::BadLength)
            }
            _ => Ok(Self::Unknown {
                subtype,
                data: &raw[2..],
            }),
        }
    }

    /// The number of bytes [`emit`](Self::emit) writes (kind and length included).
    pub const fn buffer_len(&self) -> usize {
        match self {
            Self::MpCapable(o) => o.buffer_len(),
            Self::MpJoin(o) => o.buffer_len(),
            Self::Dss(o) => o.buffer_len(),
            Self::AddAddr(o) => o.buffer_len(),
            Self::RemoveAddr(o) => o.buffer_len(),
            Self::MpPrio(o) => o.buffer_len(),
            Self::MpFail(o) => o.buffer_len(),
            Self::MpFastclose(o) => o.buffer_len(),
            Self::MpTcpRst(o) => o.buffer_len(),
            Self::Unknown { data, .. } => 2 + data.len(),
        }
    }

    /// Writes the option (kind and length included); returns the rest of the buffer.
    ///
    /// Fails with [`Error::Truncated`] when `buffer` is shorter than
    /// [`buffer_len`](Self::buffer_len), [`Error::BadLength`] when the option cannot be
    /// counted by a length byte.
    pub fn emit<'b>(&self, buffer: &'b mut [u8]) -> Result<&'b mut [u8]> {
        match self {
            Self::MpCapable(o) => o.emit(buffer),
            Self::MpJoin(o) => o.emit(buffer),
            Self::Dss(o) => o.emit(buffer),
            Self::AddAddr(o) => o.emit(buffer),
            Self::RemoveAddr(o) => o.emit(buffer),
            Self::MpPrio(o) => o.emit(buffer),
            Self::MpFail(o) => o.emit(buffer),
            Self::MpFastclose(o) => o.emit(buffer),
            Self::MpTcpRst(o) => o.emit(buffer),
            Self::Unknown { data, .. } => {
                let len = 2 + data.len();
                if len > buffer.len() {
                    return Err(Error::Truncated);
                }
                buffer[0] = option_kind::MPTCP;
                buffer[1] = u8::try_from(len).map_err(|_| Error::BadLength)?;
                buffer[2..len].copy_from_slice(data);
                Ok(&mut buffer[len..])
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The one-pass summary
// ---------------------------------------------------------------------------------------------

/// What the forwarding path needs from a segment's MPTCP options, gathered in one walk.
///
/// A field is `Some` only when exactly one valid form of the option was present (identical
/// repeats count as one) and, for `capable` and `join`, the other was absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MptcpSummary {
    /// The MP_CAPABLE option, if valid for this segment and not in conflict.
    pub capable: Option<MpCapable>,
    /// The MP_JOIN option, if valid for this segment and not in conflict.
    pub join: Option<MpJoin>,
    /// The MP_FASTCLOSE option, if valid and not in conflict.
    pub fastclose: Option<MpFastclose>,
    /// The MP_TCPRST option, if valid (needs RST) and not in conflict.
    pub tcprst: Option<MpTcpRst>,
    /// At least one kind-30 option was present, valid or not.
    pub seen_mptcp: bool,
    /// How many MPTCP options were ignored for breaking the rules (saturating).
    pub ignored: u8,
    /// The reason the last ignored option was ignored.
    pub last_error: Option<MptcpError>,
    /// The segment contradicts itself: MP_CAPABLE with MP_JOIN (M8), or two different copies
    /// of MP_CAPABLE, MP_JOIN, MP_FASTCLOSE or MP_TCPRST (M9). The options involved are dropped.
    pub conflict: bool,
    /// The TCP option walk stopped at a malformed option (T4, T5); options before it count.
    pub tcp_options_malformed: bool,
}

/// One kept option: absent, seen once (or identically repeated), or seen with different values.
#[derive(Clone, Copy)]
enum Slot<T> {
    Empty,
    One(T),
    Conflict,
}

impl<T: PartialEq + Copy> Slot<T> {
    #[inline]
    fn put(&mut self, value: T) {
        *self = match *self {
            Slot::Empty => Slot::One(value),
            Slot::One(old) if old == value => Slot::One(old),
            Slot::One(_) | Slot::Conflict => Slot::Conflict,
        };
    }

    /// The value, and whether there was a conflict.
    #[inline]
    fn take(self) -> (Option<T>, bool) {
        match self {
            Slot::Empty => (None, false),
            Slot::One(value) => (Some(value), false),
            Slot::Conflict => (None, true),
        }
    }
}

/// What [`scan`] keeps of one option: the four it reports, or nothing (but still validated).
enum Kept {
    Capable(MpCapable),
    Join(MpJoin),
    Fastclose(MpFastclose),
    TcpRst(MpTcpRst),
    Nothing,
}

/// [`MptcpOption::parse`] for [`scan`]: the same checks, but only the kept subtypes are decoded.
#[inline]
fn parse_kept(raw: &[u8], seg: Segment) -> core::result::Result<Kept, MptcpError> {
    let subtype = frame(raw)?;
    let len = raw.len();
    match subtype {
        subtype::MP_CAPABLE => MpCapable::parse(raw, seg).map(Kept::Capable),
        subtype::MP_JOIN => MpJoin::parse(raw, seg).map(Kept::Join),
        subtype::DSS => Dss::check_len(raw).map(|_| Kept::Nothing),
        subtype::ADD_ADDR => AddAddr::layout(raw).map(|_| Kept::Nothing),
        subtype::REMOVE_ADDR => RemoveAddr::check_len(raw).map(|_| Kept::Nothing),
        subtype::MP_PRIO if len == MP_PRIO_LEN => Ok(Kept::Nothing),
        subtype::MP_FAIL if len == MP_FAIL_LEN => Ok(Kept::Nothing),
        subtype::MP_FASTCLOSE if len == MP_FASTCLOSE_LEN => Ok(Kept::Fastclose(MpFastclose {
            receiver_key: read_u64(raw, 4),
        })),
        subtype::MP_TCPRST if len == MP_TCPRST_LEN => MpTcpRst::parse(raw, seg).map(Kept::TcpRst),
        subtype::MP_PRIO | subtype::MP_FAIL | subtype::MP_FASTCLOSE | subtype::MP_TCPRST => {
            Err(MptcpError::BadLength)
        }
        _ => Ok(Kept::Nothing),
    }
}

/// Walks `option_area` once and summarises its MPTCP options for a segment described by `seg`.
///
/// Rules (RFC 8684, Linux `mptcp_get_options` and `subflow_check_req`):
///
/// * the TCP walk stops where [`TcpOptions`] (and Linux) stops, and a stop at a broken option
///   sets `tcp_options_malformed`;
/// * each kind-30 option is checked by [`MptcpOption::parse`]; one that breaks the rules is
///   ignored (counted in `ignored`, reason in `last_error`), exactly as Linux ignores it, so the
///   segment is treated as if it were absent (usually: plain TCP);
/// * two different copies of MP_CAPABLE, MP_JOIN, MP_FASTCLOSE or MP_TCPRST: none is kept and
///   `conflict` is set (M9; Linux would let the last one win, which lets one segment say two
///   things to two observers);
/// * MP_CAPABLE and MP_JOIN together: neither is kept and `conflict` is set (M8; Linux's
///   `subflow_check_req` accepts neither on a SYN, and `mptcp_write_options` never sends both
///   on any segment).
///
/// The walk is bounded by the area (each step consumes at least one byte) and allocates
/// nothing (M21).
pub fn scan(option_area: &[u8], seg: Segment) -> MptcpSummary {
    let mut summary = MptcpSummary::default();
    let mut capable = Slot::Empty;
    let mut join = Slot::Empty;
    let mut fastclose = Slot::Empty;
    let mut tcprst = Slot::Empty;
    summary.tcp_options_malformed = each_mptcp(option_area, |raw| {
        summary.seen_mptcp = true;
        match parse_kept(raw, seg) {
            Ok(Kept::Capable(o)) => capable.put(o),
            Ok(Kept::Join(o)) => join.put(o),
            Ok(Kept::Fastclose(o)) => fastclose.put(o),
            Ok(Kept::TcpRst(o)) => tcprst.put(o),
            Ok(Kept::Nothing) => {}
            Err(e) => {
                summary.ignored = summary.ignored.saturating_add(1);
                summary.last_error = Some(e);
            }
        }
    });

    let (capable, c1) = capable.take();
    let (join, c2) = join.take();
    let (fastclose, c3) = fastclose.take();
    let (tcprst, c4) = tcprst.take();
    summary.conflict = c1 | c2 | c3 | c4;
    if capable.is_some() && join.is_some() {
        summary.conflict = true;
    } else {
        summary.capable = capable;
        summary.join = join;
    }
    summary.fastclose = fastclose;
    summary.tcprst = tcprst;
    summary
}

/// The TCP option walk of [`TcpOptions`], without decoding: calls `f` with each kind-30 option
/// (kind and length included, so `raw[0] == 30` and `raw[1] == raw.len() >= 2`) and returns
/// whether the walk stopped at a malformed option. The stops are [`TcpOptions`]'s, which are
/// Linux's: the end of the area or EOL (not malformed); a kind other than EOL and NOP without a
/// length byte, a length below 2, or a length running past the area (malformed, T4, T5).
/// NOP is one byte. Each step consumes at least one byte.
#[inline(always)]
fn each_mptcp(area: &[u8], mut f: impl FnMut(&[u8])) -> bool {
    let mut rest = area;
    loop {
        match *rest {
            [] | [option_kind::END_OF_LIST, ..] => return false,
            [option_kind::NO_OPERATION, ref tail @ ..] => rest = tail,
            [_] => return true,
            [kind, len, ..] => {
                let len = usize::from(len);
                if len < 2 || len > rest.len() {
                    return true;
                }
                let (raw, tail) = rest.split_at(len);
                if kind == option_kind::MPTCP {
                    f(raw);
                }
                rest = tail;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The opening SYN
// ---------------------------------------------------------------------------------------------

/// What an opening SYN (SYN without ACK) asks for by its MPTCP options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SynRequest {
    /// Neither a valid MP_CAPABLE nor a valid MP_JOIN was kept: plain TCP.
    #[default]
    Plain,
    /// A valid MP_CAPABLE (on a SYN: any version >= 1): a new MPTCP connection.
    Capable,
    /// A valid MP_JOIN SYN: a new subflow of the connection this receiver's token names.
    Join {
        /// The receiver's token.
        token: u32,
    },
}

/// [`scan`] of an opening SYN, reduced to what a SYN acts on and counts: the same walk, the same
/// rules, the same verdict for every option (so the same `ignored`, `last_error`, `conflict` and
/// `tcp_options_malformed`), with only MP_JOIN's token decoded. Small enough to be returned in
/// registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SynSummary {
    /// [`MptcpSummary::join`] as a join request, else [`MptcpSummary::capable`] as a
    /// connection request, else plain.
    pub request: SynRequest,
    /// As [`MptcpSummary::ignored`].
    pub ignored: u8,
    /// As [`MptcpSummary::last_error`].
    pub last_error: Option<MptcpError>,
    /// As [`MptcpSummary::conflict`].
    pub conflict: bool,
    /// As [`MptcpSummary::tcp_options_malformed`].
    pub tcp_options_malformed: bool,
}

/// What [`scan_syn`] keeps of one option: the four options whose copies must agree, in a form
/// that is equal exactly when the decoded options are, or nothing (but still validated).
enum SynKept {
    /// Version and flags (the subtype nibble is 0).
    Capable(u16),
    /// B and address id; token and nonce.
    Join(u16, u64),
    Fastclose(u64),
    /// Flags and reason.
    TcpRst(u16),
    Nothing,
}

/// [`parse_kept`] for a SYN without ACK (`rst`: RST is set too), on a kind-30 option framed by
/// [`each_mptcp`]: the same checks in the same order, decoding nothing it does not keep.
#[inline(always)]
fn syn_kept(raw: &[u8], rst: bool) -> core::result::Result<SynKept, MptcpError> {
    let seg = Segment {
        syn: true,
        ack: false,
        rst,
        has_payload: false,
    };
    let &[_, _, b2, b3, ..] = raw else {
        // Two or three bytes: nothing that short is kept; the general checks say why.
        return parse_kept(raw, seg).map(|_| SynKept::Nothing);
    };
    let len = raw.len();
    match b2 >> 4 {
        subtype::MP_CAPABLE => {
            if b2 & 0x0F == 0 {
                Err(MptcpError::Version0)
            } else if len != MP_CAPABLE_SYN_LEN {
                Err(MptcpError::BadLength)
            } else if !MpcFlags(b3).is_valid() {
                Err(MptcpError::BadFlags)
            } else {
                Ok(SynKept::Capable(u16::from_be_bytes([b2, b3])))
            }
        }
        subtype::MP_JOIN => match *raw {
            [_, _, _, _, t0, t1, t2, t3, n0, n1, n2, n3] => Ok(SynKept::Join(
                u16::from_be_bytes([b2 & 0x01, b3]),
                u64::from_be_bytes([t0, t1, t2, t3, n0, n1, n2, n3]),
            )),
            _ => Err(MptcpError::BadLength),
        },
        subtype::MP_FASTCLOSE => match *raw {
            [_, _, _, _, k0, k1, k2, k3, k4, k5, k6, k7] => {
                Ok(SynKept::Fastclose(u64::from_be_bytes([
                    k0, k1, k2, k3, k4, k5, k6, k7,
                ])))
            }
            _ => Err(MptcpError::BadLength),
        },
        subtype::MP_TCPRST if len == MP_TCPRST_LEN => {
            // Linux: "if (!(TCP_SKB_CB(skb)->tcp_flags & TCPHDR_RST)) break;"
            if rst {
                Ok(SynKept::TcpRst(u16::from_be_bytes([b2 & 0x0F, b3])))
            } else {
                Err(MptcpError::RstWithoutRstFlag)
            }
        }
        subtype::MP_TCPRST => Err(MptcpError::BadLength),
        // The others keep nothing: the general checks.
        _ => parse_kept(raw, seg).map(|_| SynKept::Nothing),
    }
}

/// [`scan`] for an opening SYN (SYN set, ACK clear; `rst`: whether RST is set as well): the same
/// single walk and rules, the same counts, and what the SYN asks for (see [`SynSummary`]).
///
/// `scan_syn(area, rst)` equals `scan(area, Segment { syn: true, ack: false, rst, .. })`
/// reduced to a [`SynSummary`] (property tests and the fuzz target check it).
///
/// The walk keeps nothing but the request: other TCP options are skipped by their length, one
/// valid MP_JOIN SYN (its token read as one fixed-size field of an option whose length is
/// checked) or one valid MP_CAPABLE SYN is the request, and anything that would be counted or
/// compared (a second MPTCP option, an MPTCP option other than those two, any option that breaks
/// a rule, a malformed TCP option) hands the area to the general walk from the
/// start, which a well-formed SYN never needs.
#[inline(always)]
pub fn scan_syn(option_area: &[u8], rst: bool) -> SynSummary {
    let mut request = SynRequest::Plain;
    let mut rest = option_area;
    loop {
        match *rest {
            [] | [option_kind::END_OF_LIST, ..] => break,
            [option_kind::NO_OPERATION, ref tail @ ..] => rest = tail,
            [kind, len, ..] => {
                let len = usize::from(len);
                if len < 2 || len > rest.len() {
                    return scan_syn_full(option_area, rst);
                }
                let (raw, tail) = rest.split_at(len);
                if kind == option_kind::MPTCP {
                    request = match (request, raw) {
                        (SynRequest::Plain, &[_, _, b2, _, t0, t1, t2, t3, _, _, _, _])
                            if b2 >> 4 == subtype::MP_JOIN =>
                        {
                            SynRequest::Join {
                                token: u32::from_be_bytes([t0, t1, t2, t3]),
                            }
                        }
                        (SynRequest::Plain, &[_, _, b2, b3])
                            if b2 >> 4 == subtype::MP_CAPABLE
                                && b2 & 0x0F != 0
                                && MpcFlags(b3).is_valid() =>
                        {
                            SynRequest::Capable
                        }
                        _ => return scan_syn_full(option_area, rst),
                    };
                }
                rest = tail;
            }
            [_] => return scan_syn_full(option_area, rst),
        }
    }
    SynSummary {
        request,
        ..SynSummary::default()
    }
}

/// [`scan_syn`]'s general walk: every option checked and compared as [`scan`] does, decoding
/// only what it keeps.
#[cold]
#[inline(never)]
fn scan_syn_full(option_area: &[u8], rst: bool) -> SynSummary {
    let mut s = SynSummary::default();
    let mut capable = Slot::Empty;
    let mut join = Slot::Empty;
    let mut fastclose = Slot::Empty;
    let mut tcprst = Slot::Empty;
    s.tcp_options_malformed = each_mptcp(option_area, |raw| match syn_kept(raw, rst) {
        Ok(SynKept::Capable(o)) => capable.put(o),
        Ok(SynKept::Join(id, token_nonce)) => join.put((id, token_nonce)),
        Ok(SynKept::Fastclose(o)) => fastclose.put(o),
        Ok(SynKept::TcpRst(o)) => tcprst.put(o),
        Ok(SynKept::Nothing) => {}
        Err(e) => {
            s.ignored = s.ignored.saturating_add(1);
            s.last_error = Some(e);
        }
    });
    let (capable, c1) = capable.take();
    let (join, c2) = join.take();
    let (_, c3) = fastclose.take();
    let (_, c4) = tcprst.take();
    s.conflict = c1 | c2 | c3 | c4;
    s.request = match (capable, join) {
        (Some(_), Some(_)) => {
            s.conflict = true;
            SynRequest::Plain
        }
        (_, Some((_, token_nonce))) => SynRequest::Join {
            token: (token_nonce >> 32) as u32,
        },
        (Some(_), None) => SynRequest::Capable,
        (None, None) => SynRequest::Plain,
    };
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::{TcpOption, TcpOptions};
    use proptest::prelude::*;

    const SYN: Segment = Segment {
        syn: true,
        ack: false,
        rst: false,
        has_payload: false,
    };
    const SYN_ACK: Segment = Segment {
        syn: true,
        ack: true,
        rst: false,
        has_payload: false,
    };
    const ACK: Segment = Segment {
        syn: false,
        ack: true,
        rst: false,
        has_payload: false,
    };
    const ACK_DATA: Segment = Segment {
        syn: false,
        ack: true,
        rst: false,
        has_payload: true,
    };
    const RST: Segment = Segment {
        syn: false,
        ack: true,
        rst: true,
        has_payload: false,
    };
    const ALL_SEGMENTS: [Segment; 5] = [SYN, SYN_ACK, ACK, ACK_DATA, RST];

    /// Parses `raw`, emits the result, and checks the bytes come back identical.
    fn round_trip(raw: &[u8], seg: Segment) -> MptcpOption<'_> {
        let option = MptcpOption::parse(raw, seg).unwrap();
        assert_eq!(option.buffer_len(), raw.len());
        let mut out = [0xa5u8; 40];
        let rest = option.emit(&mut out).unwrap();
        assert_eq!(rest.len(), 40 - raw.len());
        assert_eq!(&out[..raw.len()], raw);
        option
    }

    /// Copies `raw` into a buffer with its length byte set to `len` and its body padded/cut.
    fn resized(raw: &[u8], len: usize) -> ([u8; 40], usize) {
        let mut buf = [0u8; 40];
        let n = raw.len().min(len);
        buf[..n].copy_from_slice(&raw[..n]);
        buf[1] = len as u8;
        (buf, len)
    }

    /// Checks `raw` parses on `seg` and every other length from 3 to 40 is refused with
    /// `BadLength` (except lengths in `also_ok`).
    fn only_length(raw: &[u8], seg: Segment, also_ok: &[usize]) {
        assert!(MptcpOption::parse(raw, seg).is_ok());
        for len in 3..=40 {
            if len == raw.len() || also_ok.contains(&len) {
                continue;
            }
            let (buf, n) = resized(raw, len);
            assert_eq!(
                MptcpOption::parse(&buf[..n], seg),
                Err(MptcpError::BadLength),
                "length {len} of {raw:02x?}"
            );
        }
    }

    // --- MP_CAPABLE -------------------------------------------------------------------------

    static MPC_SYN: [u8; 4] = [0x1e, 0x04, 0x01, 0x81]; // v1, A|H
    static MPC_SYNACK: [u8; 12] = [
        0x1e, 0x0c, 0x01, 0x21, // v1, C|H
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, // sender key
    ];
    static MPC_ACK: [u8; 20] = [
        0x1e, 0x14, 0x01, 0x01, // v1, H
        0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, // sender key (client)
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, // receiver key (server)
    ];
    static MPC_ACK_DATA_CSUM: [u8; 24] = [
        0x1e, 0x18, 0x01, 0x81, // v1, A|H
        0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, // sender key
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, // receiver key
        0x05, 0xb4, // data-level length 1460
        0xbe, 0xef, // checksum
    ];

    #[test]
    fn mp_capable_deconstruct() {
        assert_eq!(
            round_trip(&MPC_SYN, SYN),
            MptcpOption::MpCapable(MpCapable {
                version: 1,
                flags: MpcFlags::CHECKSUM_REQUIRED | MpcFlags::HMAC_SHA256,
                sender_key: None,
                receiver_key: None,
                data_len: None,
                checksum: None,
            })
        );
        let MptcpOption::MpCapable(synack) = round_trip(&MPC_SYNACK, SYN_ACK) else {
            panic!()
        };
        assert_eq!(synack.sender_key, Some(0x0102_0304_0506_0708));
        assert!(synack.flags.deny_join_id0() && !synack.flags.checksum_required());
        let MptcpOption::MpCapable(ack) = round_trip(&MPC_ACK, ACK) else {
            panic!()
        };
        assert_eq!(ack.sender_key, Some(0x1112_1314_1516_1718));
        assert_eq!(ack.receiver_key, Some(0x0102_0304_0506_0708));
        assert_eq!(ack.data_len, None);
        let MptcpOption::MpCapable(data) = round_trip(&MPC_ACK_DATA_CSUM, ACK_DATA) else {
            panic!()
        };
        assert_eq!(data.data_len, Some(1460));
        assert_eq!(data.checksum, Some(0xbeef));
        let (buf, n) = resized(&MPC_ACK_DATA_CSUM, 22);
        let MptcpOption::MpCapable(data) = round_trip(&buf[..n], ACK_DATA) else {
            panic!()
        };
        assert_eq!((data.data_len, data.checksum), (Some(1460), None));
    }

    #[test]
    fn mp_capable_construct() {
        let option = MpCapable {
            version: 1,
            flags: MpcFlags::DENY_JOIN_ID0 | MpcFlags::HMAC_SHA256,
            sender_key: Some(0x0102_0304_0506_0708),
            receiver_key: None,
            data_len: None,
            checksum: None,
        };
        let mut out = [0u8; 12];
        assert!(option.emit(&mut out).unwrap().is_empty());
        assert_eq!(out, MPC_SYNACK);
        assert_eq!(option.emit(&mut [0u8; 11]).unwrap_err(), Error::Truncated);
    }

    #[test]
    fn mp_capable_lengths_m3() {
        // SYN 4, SYN/ACK 12, ACK 20, ACK + data 22 or 24; every other length is refused.
        only_length(&MPC_SYN, SYN, &[]);
        only_length(&MPC_SYNACK, SYN_ACK, &[]);
        only_length(&MPC_ACK, ACK, &[]);
        only_length(&MPC_ACK_DATA_CSUM, ACK_DATA, &[22]);
        // 22 and 24 need payload; 20 is refused when there is payload (Linux expects 22).
        let (buf, n) = resized(&MPC_ACK_DATA_CSUM, 22);
        assert_eq!(
            MptcpOption::parse(&buf[..n], ACK),
            Err(MptcpError::BadLength)
        );
        assert_eq!(
            MptcpOption::parse(&MPC_ACK_DATA_CSUM, ACK),
            Err(MptcpError::BadLength)
        );
        assert_eq!(
            MptcpOption::parse(&MPC_ACK, ACK_DATA),
            Err(MptcpError::BadLength)
        );
        // The right length on the wrong segment.
        assert_eq!(
            MptcpOption::parse(&MPC_SYN, SYN_ACK),
            Err(MptcpError::BadLength)
        );
        assert_eq!(
            MptcpOption::parse(&MPC_SYNACK, SYN),
            Err(MptcpError::BadLength)
        );
    }

    #[test]
    fn mp_capable_version_m4_m5() {
        // M4: RFC 6824 v0 SYN (length 12, with a key), and v0 anywhere.
        let mut v0_syn = MPC_SYNACK;
        v0_syn[2] = 0x00;
        assert_eq!(MptcpOption::parse(&v0_syn, SYN), Err(MptcpError::Version0));
        let mut v0 = MPC_ACK;
        v0[2] = 0x00;
        assert_eq!(MptcpOption::parse(&v0, ACK), Err(MptcpError::Version0));
        // M5: a future version is a v1 request on the SYN, refused elsewhere.
        let mut v2_syn = MPC_SYN;
        v2_syn[2] = 0x02;
        let MptcpOption::MpCapable(o) = round_trip(&v2_syn, SYN) else {
            panic!()
        };
        assert_eq!(o.version, 2);
        let mut v2 = MPC_SYNACK;
        v2[2] = 0x0f;
        assert_eq!(
            MptcpOption::parse(&v2, SYN_ACK),
            Err(MptcpError::UnsupportedVersion)
        );
    }

    #[test]
    fn mp_capable_flags_m6() {
        for bad in [0x00u8, 0x80, 0x41, 0x03, 0x11, 0x09, 0xff] {
            let mut raw = MPC_SYN;
            raw[3] = bad;
            assert_eq!(
                MptcpOption::parse(&raw, SYN),
                Err(MptcpError::BadFlags),
                "{bad:#x}"
            );
        }
        for good in [0x01u8, 0x81, 0x21, 0xa1] {
            let mut raw = MPC_SYN;
            raw[3] = good;
            assert!(MptcpOption::parse(&raw, SYN).is_ok(), "{good:#x}");
        }
    }

    // --- MP_JOIN ----------------------------------------------------------------------------

    static MPJ_SYN: [u8; 12] = [
        0x1e, 0x0c, 0x11, 0x02, // backup, address id 2
        0x73, 0x57, 0x96, 0x6a, // receiver token
        0xde, 0xad, 0xbe, 0xef, // sender nonce
    ];
    static MPJ_SYNACK: [u8; 16] = [
        0x1e, 0x10, 0x10, 0x05, // address id 5
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, // truncated HMAC
        0xca, 0xfe, 0xba, 0xbe, // sender nonce
    ];
    static MPJ_ACK: [u8; 24] = [
        0x1e, 0x18, 0x10, 0x00, //
        1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
    ];

    #[test]
    fn mp_join_deconstruct() {
        assert_eq!(
            round_trip(&MPJ_SYN, SYN),
            MptcpOption::MpJoin(MpJoin::Syn {
                backup: true,
                address_id: 2,
                receiver_token: 0x7357_966a,
                sender_nonce: 0xdead_beef,
            })
        );
        assert_eq!(
            round_trip(&MPJ_SYNACK, SYN_ACK),
            MptcpOption::MpJoin(MpJoin::SynAck {
                backup: false,
                address_id: 5,
                sender_truncated_hmac: 0x0102_0304_0506_0708,
                sender_nonce: 0xcafe_babe,
            })
        );
        let mut sender_hmac = [0u8; 20];
        for (i, b) in sender_hmac.iter_mut().enumerate() {
            *b = i as u8 + 1;
        }
        assert_eq!(
            round_trip(&MPJ_ACK, ACK),
            MptcpOption::MpJoin(MpJoin::Ack { sender_hmac })
        );
        assert_eq!(
            round_trip(&MPJ_ACK, ACK_DATA),
            MptcpOption::MpJoin(MpJoin::Ack { sender_hmac })
        );
    }

    #[test]
    fn mp_join_lengths_m10_m15() {
        only_length(&MPJ_SYN, SYN, &[]);
        only_length(&MPJ_SYNACK, SYN_ACK, &[]);
        only_length(&MPJ_ACK, ACK, &[]);
        assert_eq!(
            MptcpOption::parse(&MPJ_SYN, SYN_ACK),
            Err(MptcpError::BadLength)
        );
        assert_eq!(
            MptcpOption::parse(&MPJ_SYNACK, ACK),
            Err(MptcpError::BadLength)
        );
        assert_eq!(
            MptcpOption::parse(&MPJ_ACK, SYN),
            Err(MptcpError::BadLength)
        );
    }

    // --- DSS --------------------------------------------------------------------------------

    // The DSS Linux sends on data: 32-bit data ACK, 64-bit DSN mapping, no checksum (20 bytes).
    static DSS_ACK4_MAP8: [u8; 20] = [
        0x1e, 0x14, 0x20, 0x0d, // flags m|M|A
        0x00, 0x00, 0x10, 0x00, // data ACK 4096
        0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x02, // DSN 2^32 + 2
        0x00, 0x00, 0x00, 0x01, // subflow seq 1
    ];

    #[test]
    fn dss_deconstruct() {
        // 20 bytes is too short for this mapping (4 + 4 + 14 = 22): the real one has length.
        let mut raw = [0u8; 22];
        raw[..20].copy_from_slice(&DSS_ACK4_MAP8);
        raw[1] = 22;
        raw[20..22].copy_from_slice(&[0x05, 0xb4]);
        assert_eq!(
            MptcpOption::parse(&DSS_ACK4_MAP8, ACK),
            Err(MptcpError::BadLength)
        );
        assert_eq!(
            round_trip(&raw, ACK_DATA),
            MptcpOption::Dss(Dss {
                data_fin: false,
                data_ack: Some(DataAck {
                    value: 4096,
                    is_64bit: false
                }),
                mapping: Some(DssMapping {
                    dsn: (1 << 32) + 2,
                    dsn_is_64bit: true,
                    subflow_seq: 1,
                    data_len: 1460,
                    checksum: None,
                }),
            })
        );
        // Pure data ACK, 64-bit.
        let ack8 = [0x1e, 0x0c, 0x20, 0x03, 0, 0, 0, 0, 0, 0, 0x01, 0x00];
        assert_eq!(
            round_trip(&ack8, ACK),
            MptcpOption::Dss(Dss {
                data_fin: false,
                data_ack: Some(DataAck {
                    value: 256,
                    is_64bit: true
                }),
                mapping: None,
            })
        );
        // DATA_FIN with a 32-bit mapping and a checksum.
        let fin = [
            0x1e, 0x10, 0x20, 0x14, 0, 0, 0, 9, 0, 0, 0, 0, 0, 1, 0x12, 0x34,
        ];
        assert_eq!(
            round_trip(&fin, ACK),
            MptcpOption::Dss(Dss {
                data_fin: true,
                data_ack: None,
                mapping: Some(DssMapping {
                    dsn: 9,
                    dsn_is_64bit: false,
                    subflow_seq: 0,
                    data_len: 1,
                    checksum: Some(0x1234),
                }),
            })
        );
        // Flags only.
        assert_eq!(
            round_trip(&[0x1e, 0x04, 0x20, 0x00], ACK),
            MptcpOption::Dss(Dss {
                data_fin: false,
                data_ack: None,
                mapping: None
            })
        );
    }

    #[test]
    fn dss_lengths_m16() {
        // Every flag combination: the implied length and implied + 2 parse, nothing else.
        for flags in 0u8..32 {
            let mut expected = 4;
            if flags & DSS_HAS_ACK != 0 {
                expected += if flags & DSS_ACK64 != 0 { 8 } else { 4 };
            }
            if flags & DSS_HAS_MAP != 0 {
                expected += if flags & DSS_DSN64 != 0 { 14 } else { 10 };
            }
            for len in 3..=40usize {
                let mut raw = [0u8; 40];
                raw[..4].copy_from_slice(&[0x1e, len as u8, 0x20, flags]);
                let ok = len == expected || len == expected + 2;
                assert_eq!(
                    MptcpOption::parse(&raw[..len], ACK).is_ok(),
                    ok,
                    "flags {flags:#x} len {len}"
                );
            }
        }
        // Linux accepts the +2 without a mapping, and drops the 2 bytes.
        let raw = [0x1e, 0x0a, 0x20, 0x01, 0, 0, 0, 1, 0xff, 0xff];
        let option = MptcpOption::parse(&raw, ACK).unwrap();
        assert_eq!(option.buffer_len(), 8);
    }

    // --- ADD_ADDR ---------------------------------------------------------------------------

    static ADD_ADDR_V4_PORT: [u8; 18] = [
        0x1e, 0x12, 0x30, 0x07, // id 7
        192, 0, 2, 1, // address
        0x1f, 0x90, // port 8080
        0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, // truncated HMAC
    ];

    #[test]
    fn add_addr_deconstruct() {
        assert_eq!(
            round_trip(&ADD_ADDR_V4_PORT, ACK),
            MptcpOption::AddAddr(AddAddr {
                echo: false,
                address_id: 7,
                addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
                port: Some(8080),
                truncated_hmac: Some(0x1122_3344_5566_7788),
            })
        );
        let echo_v6 = [
            0x1e, 0x14, 0x31, 0x09, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
        ];
        assert_eq!(
            round_trip(&echo_v6, ACK),
            MptcpOption::AddAddr(AddAddr {
                echo: true,
                address_id: 9,
                addr: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
                port: None,
                truncated_hmac: None,
            })
        );
    }

    #[test]
    fn add_addr_lengths_m17() {
        for echo in [false, true] {
            let ok: &[usize] = if echo {
                &[8, 10, 20, 22]
            } else {
                &[16, 18, 28, 30]
            };
            for len in 3..=40usize {
                let mut raw = [0u8; 40];
                raw[..4].copy_from_slice(&[0x1e, len as u8, 0x30 | u8::from(echo), 1]);
                let parsed = MptcpOption::parse(&raw[..len], ACK);
                if ok.contains(&len) {
                    let MptcpOption::AddAddr(a) = round_trip(&raw[..len], ACK) else {
                        panic!()
                    };
                    assert_eq!(a.echo, echo);
                    assert_eq!(a.addr.is_ipv6(), len >= 20);
                    assert_eq!(a.port.is_some(), matches!(len, 10 | 18 | 22 | 30));
                } else {
                    assert_eq!(parsed, Err(MptcpError::BadLength), "echo {echo} len {len}");
                }
            }
        }
    }

    // --- REMOVE_ADDR, MP_PRIO, MP_FAIL, MP_FASTCLOSE, MP_TCPRST, unknown ---------------------

    #[test]
    fn remove_addr_m18() {
        assert_eq!(
            round_trip(&[0x1e, 0x05, 0x40, 3, 4], ACK),
            MptcpOption::RemoveAddr(RemoveAddr {
                address_ids: &[3, 4]
            })
        );
        let raw = [0x1e, 4, 0x40, 1, 2, 3, 4, 5, 6, 7, 8, 9];
        for len in 3..=12usize {
            let mut r = raw;
            r[1] = len as u8;
            let ok = (4..=11).contains(&len);
            assert_eq!(MptcpOption::parse(&r[..len], ACK).is_ok(), ok, "len {len}");
        }
        let too_many = RemoveAddr {
            address_ids: &[0; 253],
        };
        assert_eq!(
            too_many.emit(&mut [0u8; 300]).unwrap_err(),
            Error::BadLength
        );
    }

    #[test]
    fn fixed_lengths_m18() {
        let prio = [0x1e, 0x03, 0x51];
        assert_eq!(
            round_trip(&prio, ACK),
            MptcpOption::MpPrio(MpPrio { backup: true })
        );
        only_length(&prio, ACK, &[]);

        let fail = [0x1e, 0x0c, 0x60, 0x00, 0, 0, 0, 0, 0, 0, 0x30, 0x39];
        assert_eq!(
            round_trip(&fail, ACK),
            MptcpOption::MpFail(MpFail { dsn: 12345 })
        );
        only_length(&fail, ACK, &[]);

        let fastclose = [0x1e, 0x0c, 0x70, 0x00, 1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(
            round_trip(&fastclose, ACK),
            MptcpOption::MpFastclose(MpFastclose {
                receiver_key: 0x0102_0304_0506_0708
            })
        );
        only_length(&fastclose, RST, &[]);

        let tcprst = [0x1e, 0x04, 0x81, rst_reason::MPTCP_ERROR];
        let MptcpOption::MpTcpRst(r) = round_trip(&tcprst, RST) else {
            panic!()
        };
        assert!(r.transient());
        assert_eq!(r.reason, 1);
        only_length(&tcprst, RST, &[]);
        assert_eq!(
            MptcpOption::parse(&tcprst, ACK),
            Err(MptcpError::RstWithoutRstFlag)
        );
    }

    #[test]
    fn unknown_subtypes_m2() {
        for subtype in 9u8..=15 {
            let raw = [0x1e, 0x05, subtype << 4 | 0x3, 0xaa, 0xbb];
            for seg in ALL_SEGMENTS {
                assert_eq!(
                    round_trip(&raw, seg),
                    MptcpOption::Unknown {
                        subtype,
                        data: &raw[2..]
                    }
                );
            }
        }
    }

    #[test]
    fn too_short_m1_and_framing() {
        for seg in ALL_SEGMENTS {
            assert_eq!(MptcpOption::parse(&[], seg), Err(MptcpError::TooShort));
            assert_eq!(MptcpOption::parse(&[0x1e], seg), Err(MptcpError::TooShort));
            assert_eq!(
                MptcpOption::parse(&[0x1e, 0x02], seg),
                Err(MptcpError::TooShort)
            );
            assert_eq!(
                MptcpOption::parse(&[0x1d, 0x03, 0x50], seg),
                Err(MptcpError::NotMptcp)
            );
            assert_eq!(
                MptcpOption::parse(&[0x1e, 0x04, 0x50], seg),
                Err(MptcpError::BadLength)
            );
        }
    }

    #[test]
    fn segment_from_flags() {
        let seg = Segment::new(TcpFlags::SYN | TcpFlags::ACK, false);
        assert_eq!(seg, SYN_ACK);
        let mut bytes = [0u8; 21];
        bytes[12] = 0x50;
        bytes[13] = (TcpFlags::RST | TcpFlags::ACK).bits();
        let packet = tcp::Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(
            Segment::of(&packet),
            Segment {
                has_payload: true,
                ..RST
            }
        );
    }

    #[test]
    fn exhaustive_small_space() {
        // Every subtype byte, a spread of second bytes, every length, every segment: no panic,
        // and whatever parses re-emits to the same value.
        let mut body = [0u8; 40];
        for (i, b) in body.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37);
        }
        for byte2 in 0..=255u8 {
            for byte3 in [0x00u8, 0x01, 0x0d, 0x1f, 0x21, 0x81, 0xff] {
                for len in 3..=40usize {
                    let mut raw = body;
                    raw[..4].copy_from_slice(&[30, len as u8, byte2, byte3]);
                    for seg in ALL_SEGMENTS {
                        let full = MptcpOption::parse(&raw[..len], seg);
                        assert_eq!(parse_kept(&raw[..len], seg).err(), full.err());
                        if let Ok(option) = full {
                            let mut out = [0u8; 40];
                            let n = option.buffer_len();
                            option.emit(&mut out).unwrap();
                            assert_eq!(MptcpOption::parse(&out[..n], seg), Ok(option));
                        }
                    }
                }
            }
        }
    }

    // --- scan -------------------------------------------------------------------------------

    fn area(options: &[&[u8]]) -> ([u8; 40], usize) {
        let mut out = [0u8; 40];
        let mut at = 0;
        for o in options {
            out[at..at + o.len()].copy_from_slice(o);
            at += o.len();
        }
        (out, at)
    }

    const NOP2: &[u8] = &[1, 1];
    const TS: &[u8] = &[8, 10, 0, 0, 0, 1, 0, 0, 0, 2];

    #[test]
    fn scan_handshake() {
        let (a, n) = area(&[&MPC_SYN]);
        let s = scan(&a[..n], SYN);
        assert!(s.seen_mptcp && !s.conflict && s.ignored == 0);
        assert_eq!(s.capable.unwrap().flags.bits(), 0x81);
        assert!(s.join.is_none());

        let (a, n) = area(&[NOP2, TS, &MPJ_SYN]);
        let s = scan(&a[..n], SYN);
        assert!(matches!(
            s.join,
            Some(MpJoin::Syn {
                receiver_token: 0x7357_966a,
                ..
            })
        ));
        assert!(s.capable.is_none() && !s.conflict);

        // A plain segment.
        let (a, n) = area(&[NOP2, TS]);
        assert_eq!(scan(&a[..n], ACK), MptcpSummary::default());
        assert_eq!(scan(&[], SYN), MptcpSummary::default());
    }

    #[test]
    fn scan_ignores_rule_breakers_m3_m4() {
        let mut v0 = MPC_SYNACK;
        v0[2] = 0;
        let (a, n) = area(&[&v0, &MPC_SYN]);
        let s = scan(&a[..n], SYN);
        // v0 SYN ignored; the valid v1 option that follows is kept.
        assert_eq!(s.ignored, 1);
        assert_eq!(s.last_error, Some(MptcpError::Version0));
        assert!(s.capable.is_some() && s.seen_mptcp);

        let (a, n) = area(&[&MPC_ACK]);
        let s = scan(&a[..n], SYN);
        assert!(s.capable.is_none());
        assert_eq!(s.last_error, Some(MptcpError::BadLength));
    }

    #[test]
    fn scan_capable_and_join_m8() {
        let (a, n) = area(&[&MPC_SYN, &MPJ_SYN]);
        let s = scan(&a[..n], SYN);
        assert!(s.conflict && s.capable.is_none() && s.join.is_none());
        assert_eq!(s.ignored, 0);
    }

    #[test]
    fn scan_duplicates_m9() {
        // Identical duplicates are one option.
        let (a, n) = area(&[&MPC_ACK, &MPC_ACK]);
        let s = scan(&a[..n], ACK);
        assert!(!s.conflict && s.capable.is_some());
        // Different contents: neither is kept.
        let mut other = MPC_ACK;
        other[19] ^= 1;
        let (a, n) = area(&[&MPC_ACK, &other]);
        let s = scan(&a[..n], ACK);
        assert!(s.conflict && s.capable.is_none());
        // A third, identical to the first, does not bring it back.
        let (a, n) = area(&[&MPC_SYN, &[0x1e, 0x04, 0x01, 0x01], &MPC_SYN]);
        let s = scan(&a[..n], SYN);
        assert!(s.conflict && s.capable.is_none());

        let mut join2 = MPJ_SYN;
        join2[11] ^= 1;
        let (a, n) = area(&[&MPJ_SYN, &join2]);
        let s = scan(&a[..n], SYN);
        assert!(s.conflict && s.join.is_none());
    }

    #[test]
    fn scan_rst_and_fastclose() {
        let fastclose = [0x1e, 0x0c, 0x70, 0x00, 1, 2, 3, 4, 5, 6, 7, 8];
        let tcprst = [0x1e, 0x04, 0x80, rst_reason::MIDDLEBOX_INTERFERENCE];
        let (a, n) = area(&[&fastclose, &tcprst]);
        let s = scan(&a[..n], RST);
        assert_eq!(s.fastclose.unwrap().receiver_key, 0x0102_0304_0506_0708);
        assert_eq!(s.tcprst.unwrap().reason, 6);
        let s = scan(&a[..n], ACK);
        assert!(s.fastclose.is_some() && s.tcprst.is_none());
        assert_eq!(s.last_error, Some(MptcpError::RstWithoutRstFlag));
    }

    #[test]
    fn scan_malformed_tcp_options_t4_t5() {
        // MP_CAPABLE, then a silly option: what came before stands.
        let (a, n) = area(&[&MPC_SYN, &[30, 1]]);
        let s = scan(&a[..n], SYN);
        assert!(s.tcp_options_malformed && s.capable.is_some());
        // An MPTCP option running past the area is never parsed.
        let s = scan(&MPC_SYNACK[..11], SYN_ACK);
        assert!(s.tcp_options_malformed && !s.seen_mptcp);
    }

    #[test]
    fn scan_full_area_m21() {
        // Ten MP_TCPRST options fill 40 bytes; so do thirteen (too short) REMOVE_ADDR and a NOP.
        let mut a = [0u8; 40];
        for chunk in a.chunks_mut(4) {
            chunk.copy_from_slice(&[0x1e, 0x04, 0x80, 0x01]);
        }
        let s = scan(&a, RST);
        assert_eq!(s.tcprst.unwrap().reason, 1);
        let s = scan(&a, ACK);
        assert_eq!(s.ignored, 10);
        let mut a = [1u8; 40];
        for chunk in a.chunks_mut(3).take(13) {
            chunk.copy_from_slice(&[0x1e, 0x03, 0x40]);
        }
        let s = scan(&a, ACK);
        assert_eq!(s.ignored, 13);
        assert_eq!(s.last_error, Some(MptcpError::BadLength));
        assert!(!s.tcp_options_malformed);
    }

    // --- scan_syn ---------------------------------------------------------------------------

    /// `scan` of a SYN (with RST as given) reduced as `scan_syn` reduces it.
    fn syn_reference(area: &[u8], rst: bool) -> SynSummary {
        let s = scan(
            area,
            Segment {
                syn: true,
                ack: false,
                rst,
                has_payload: false,
            },
        );
        SynSummary {
            request: match (s.join, s.capable) {
                (Some(MpJoin::Syn { receiver_token, .. }), _) => SynRequest::Join {
                    token: receiver_token,
                },
                (Some(other), _) => panic!("{other:?} kept on a SYN"),
                (None, Some(_)) => SynRequest::Capable,
                (None, None) => SynRequest::Plain,
            },
            ignored: s.ignored,
            last_error: s.last_error,
            conflict: s.conflict,
            tcp_options_malformed: s.tcp_options_malformed,
        }
    }

    /// `scan_syn` and the reference agree, with and without RST; gives the verdict without RST.
    fn syn_scan(area: &[u8]) -> SynSummary {
        for rst in [false, true] {
            assert_eq!(
                scan_syn(area, rst),
                syn_reference(area, rst),
                "{area:02x?} rst {rst}"
            );
            assert_eq!(scan_syn_full(area, rst), syn_reference(area, rst));
        }
        scan_syn(area, false)
    }

    const MSS: &[u8] = &[2, 4, 0x05, 0xb4];
    const SACK_PERM: &[u8] = &[4, 2];
    const WSCALE: &[u8] = &[3, 3, 7];
    const JOIN_TOKEN: u32 = 0x7357_966a;

    #[test]
    fn scan_syn_requests() {
        let join = SynSummary {
            request: SynRequest::Join { token: JOIN_TOKEN },
            ..SynSummary::default()
        };
        let capable = SynSummary {
            request: SynRequest::Capable,
            ..SynSummary::default()
        };
        // Linux's join SYN: MSS, SACK permitted, timestamps, NOP, window scale, MP_JOIN.
        let (a, n) = area(&[MSS, SACK_PERM, TS, &[1], WSCALE, &MPJ_SYN]);
        assert_eq!(syn_scan(&a[..n]), join);
        let (a, n) = area(&[&MPJ_SYN]);
        assert_eq!(syn_scan(&a[..n]), join);
        let (a, n) = area(&[MSS, &MPC_SYN, NOP2, TS]);
        assert_eq!(syn_scan(&a[..n]), capable);
        // A future version is a v1 request on a SYN.
        let (a, n) = area(&[&[0x1e, 0x04, 0x07, 0x01]]);
        assert_eq!(syn_scan(&a[..n]), capable);
        assert_eq!(syn_scan(&[]), SynSummary::default());
        let (a, n) = area(&[MSS, SACK_PERM, TS, &[1], WSCALE]);
        assert_eq!(syn_scan(&a[..n]), SynSummary::default());
        // Identical copies are one option; different ones conflict.
        let (a, n) = area(&[&MPJ_SYN, NOP2, &MPJ_SYN]);
        assert_eq!(syn_scan(&a[..n]), join);
        let mut other = MPJ_SYN;
        other[2] |= 0x0E; // reserved bits: not part of the option's value
        let (a, n) = area(&[&MPJ_SYN, &other]);
        assert_eq!(syn_scan(&a[..n]), join);
        other[8] ^= 1; // another nonce
        let (a, n) = area(&[&MPJ_SYN, &other]);
        let s = syn_scan(&a[..n]);
        assert!(s.conflict && s.request == SynRequest::Plain);
        // MP_CAPABLE and MP_JOIN together (M8): neither.
        let (a, n) = area(&[&MPJ_SYN, &MPC_SYN]);
        let s = syn_scan(&a[..n]);
        assert!(s.conflict && s.request == SynRequest::Plain && s.ignored == 0);
    }

    #[test]
    fn scan_syn_bad_input_is_counted_never_a_panic() {
        // Truncated: the MP_JOIN runs past the area; a kind without its length byte.
        let (a, n) = area(&[MSS, &MPJ_SYN]);
        let s = syn_scan(&a[..n - 1]);
        assert!(s.tcp_options_malformed && s.request == SynRequest::Plain);
        let s = syn_scan(&[2]);
        assert!(s.tcp_options_malformed);
        let s = syn_scan(&[1, 1, 30]);
        assert!(s.tcp_options_malformed && s.ignored == 0);
        // Option length 0 and 1 ("silly options"): the walk stops, what came before stands.
        for len in [0, 1] {
            let (a, n) = area(&[&MPJ_SYN, &[30, len, 0x10, 0]]);
            let s = syn_scan(&a[..n]);
            assert!(s.tcp_options_malformed, "length {len}");
            assert_eq!(s.request, SynRequest::Join { token: JOIN_TOKEN });
            let (a, n) = area(&[&[8, len], &MPJ_SYN]);
            let s = syn_scan(&a[..n]);
            assert!(s.tcp_options_malformed && s.request == SynRequest::Plain);
        }
        // NOP and EOL: NOPs are skipped; nothing after EOL counts, and it is not malformed.
        let (a, n) = area(&[&[1, 1, 1], &MPJ_SYN, &[0], &MPC_SYN, &[30, 0]]);
        let s = syn_scan(&a[..n]);
        assert_eq!(s.request, SynRequest::Join { token: JOIN_TOKEN });
        assert!(!s.tcp_options_malformed && !s.conflict);
        let (a, n) = area(&[&[0], &MPJ_SYN]);
        assert_eq!(syn_scan(&a[..n]), SynSummary::default());
        // MPTCP options with a bad length: ignored and counted; the walk goes on.
        for len in [2u8, 3, 4, 11, 13, 16, 24] {
            let (mut raw, n) = resized(&MPJ_SYN, usize::from(len));
            raw[1] = len;
            let (a, an) = area(&[&raw[..n], &MPC_SYN]);
            let s = syn_scan(&a[..an]);
            assert_eq!(s.ignored, 1, "length {len}");
            let want = if len == 2 {
                MptcpError::TooShort
            } else {
                MptcpError::BadLength
            };
            assert_eq!(s.last_error, Some(want), "length {len}");
            assert_eq!(s.request, SynRequest::Capable, "length {len}");
        }
        let (a, n) = area(&[&MPC_SYNACK, NOP2, &[0x1e, 0x04, 0x00, 0x01]]);
        let s = syn_scan(&a[..n]);
        assert_eq!((s.ignored, s.last_error), (2, Some(MptcpError::Version0)));
        let (a, n) = area(&[&[0x1e, 0x04, 0x01, 0x41]]);
        assert_eq!(syn_scan(&a[..n]).last_error, Some(MptcpError::BadFlags));
        // MP_TCPRST counts only with RST; the others are length-checked.
        let (a, n) = area(&[&[0x1e, 0x04, 0x80, 0x01], &MPJ_SYN]);
        let s = syn_scan(&a[..n]);
        assert_eq!(s.last_error, Some(MptcpError::RstWithoutRstFlag));
        assert_eq!(s.request, SynRequest::Join { token: JOIN_TOKEN });
        assert_eq!(scan_syn(&a[..n], true).ignored, 0);
    }

    /// One TCP option for [`scan_syn_agrees`]: common ones, MPTCP options valid on a SYN and
    /// their near misses, arbitrary MPTCP bodies, and broken framing.
    fn arb_syn_option() -> impl Strategy<Value = Vec<u8>> {
        let mptcp_body = (0u8..=15, any::<u8>(), 0usize..14)
            .prop_flat_map(|(sub, low, n)| {
                (Just((sub, low)), proptest::collection::vec(any::<u8>(), n))
            })
            .prop_map(|((sub, low), rest)| {
                let mut o = vec![30, (rest.len() + 3) as u8, sub << 4 | (low & 0x0F)];
                o.extend_from_slice(&rest);
                o
            });
        prop_oneof![
            Just(vec![1]),
            Just(vec![0]),
            Just(MSS.to_vec()),
            Just(TS.to_vec()),
            Just(WSCALE.to_vec()),
            Just(MPJ_SYN.to_vec()),
            Just(MPC_SYN.to_vec()),
            (any::<u8>(), any::<u32>()).prop_map(|(b2, t)| {
                let mut o = MPJ_SYN.to_vec();
                o[2] = 0x10 | (b2 & 0x0F);
                o[4..8].copy_from_slice(&t.to_be_bytes());
                o
            }),
            (any::<u8>(), any::<u8>()).prop_map(|(b2, b3)| vec![30, 4, b2 & 0x0F, b3]),
            (0u8..=15, any::<[u8; 10]>()).prop_map(|(sub, rest)| {
                let mut o = vec![30, 12, sub << 4];
                o.extend_from_slice(&rest[..9]);
                o
            }),
            mptcp_body,
            (any::<u8>(), 0u8..=3).prop_map(|(k, l)| vec![k, l]),
            proptest::collection::vec(any::<u8>(), 1..6),
        ]
    }

    proptest! {
        #[test]
        fn scan_syn_agrees(
            options in proptest::collection::vec(arb_syn_option(), 0..6),
            cut in 0usize..=48,
        ) {
            // Cut to the option area's 40 bytes, or shorter: options then run past the end.
            let area: Vec<u8> = options.concat();
            let area = &area[..area.len().min(40).min(cut)];
            for rst in [false, true] {
                prop_assert_eq!(scan_syn(area, rst), syn_reference(area, rst));
                prop_assert_eq!(scan_syn_full(area, rst), syn_reference(area, rst));
            }
        }

        #[test]
        fn scan_syn_agrees_on_any_bytes(
            area in proptest::collection::vec(any::<u8>(), 0..=40),
            rst in any::<bool>(),
        ) {
            prop_assert_eq!(scan_syn(&area, rst), syn_reference(&area, rst));
        }
    }

    // --- property tests ---------------------------------------------------------------------

    fn arb_mpc_flags() -> impl Strategy<Value = MpcFlags> {
        (any::<bool>(), any::<bool>()).prop_map(|(a, c)| {
            let mut f = MpcFlags::HMAC_SHA256;
            if a {
                f = f | MpcFlags::CHECKSUM_REQUIRED;
            }
            if c {
                f = f | MpcFlags::DENY_JOIN_ID0;
            }
            f
        })
    }

    /// A valid MP_CAPABLE and the segment it belongs on.
    fn arb_mp_capable() -> impl Strategy<Value = (MpCapable, Segment)> {
        (
            0usize..5,
            1u8..=15,
            arb_mpc_flags(),
            any::<u64>(),
            any::<u64>(),
            any::<u16>(),
            any::<u16>(),
        )
            .prop_map(|(form, v, flags, k1, k2, len, csum)| {
                let seg = [SYN, SYN_ACK, ACK, ACK_DATA, ACK_DATA][form];
                let o = MpCapable {
                    version: if form == 0 { v } else { 1 },
                    flags,
                    sender_key: (form >= 1).then_some(k1),
                    receiver_key: (form >= 2).then_some(k2),
                    data_len: (form >= 3).then_some(len),
                    checksum: (form == 4).then_some(csum),
                };
                (o, seg)
            })
    }

    fn arb_mp_join() -> impl Strategy<Value = (MpJoin, Segment)> {
        prop_oneof![
            (any::<bool>(), any::<u8>(), any::<u32>(), any::<u32>()).prop_map(|(b, id, t, n)| (
                MpJoin::Syn {
                    backup: b,
                    address_id: id,
                    receiver_token: t,
                    sender_nonce: n
                },
                SYN
            )),
            (any::<bool>(), any::<u8>(), any::<u64>(), any::<u32>()).prop_map(|(b, id, h, n)| (
                MpJoin::SynAck {
                    backup: b,
                    address_id: id,
                    sender_truncated_hmac: h,
                    sender_nonce: n
                },
                SYN_ACK
            )),
            any::<[u8; 20]>().prop_map(|h| (MpJoin::Ack { sender_hmac: h }, ACK)),
        ]
    }

    fn arb_dss() -> impl Strategy<Value = Dss> {
        let ack = prop_oneof![
            Just(None),
            any::<u32>().prop_map(|v| Some(DataAck {
                value: u64::from(v),
                is_64bit: false
            })),
            any::<u64>().prop_map(|v| Some(DataAck {
                value: v,
                is_64bit: true
            })),
        ];
        let map = prop_oneof![
            Just(None),
            (
                any::<u64>(),
                any::<bool>(),
                any::<u32>(),
                any::<u16>(),
                any::<Option<u16>>()
            )
                .prop_map(|(dsn, wide, ssn, len, csum)| Some(DssMapping {
                    dsn: if wide { dsn } else { dsn & 0xFFFF_FFFF },
                    dsn_is_64bit: wide,
                    subflow_seq: ssn,
                    data_len: len,
                    checksum: csum,
                })),
        ];
        (any::<bool>(), ack, map).prop_map(|(data_fin, data_ack, mapping)| Dss {
            data_fin,
            data_ack,
            mapping,
        })
    }

    fn arb_add_addr() -> impl Strategy<Value = AddAddr> {
        let addr = prop_oneof![
            any::<[u8; 4]>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
            any::<[u8; 16]>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
        ];
        (
            any::<bool>(),
            any::<u8>(),
            addr,
            any::<Option<u16>>(),
            any::<u64>(),
        )
            .prop_map(|(echo, id, addr, port, hmac)| AddAddr {
                echo,
                address_id: id,
                addr,
                port,
                truncated_hmac: (!echo).then_some(hmac),
            })
    }

    fn check_round_trip(
        option: MptcpOption<'_>,
        seg: Segment,
    ) -> core::result::Result<(), TestCaseError> {
        let mut buf = [0u8; 40];
        let len = option.buffer_len();
        let rest = option.emit(&mut buf).unwrap();
        prop_assert_eq!(rest.len(), 40 - len);
        prop_assert_eq!(MptcpOption::parse(&buf[..len], seg), Ok(option));
        // And through the TCP walk and the summary.
        let mut walk = TcpOptions::new(&buf[..len]);
        prop_assert_eq!(walk.next(), Some(TcpOption::Mptcp(&buf[..len])));
        let summary = scan(&buf[..len], seg);
        prop_assert!(summary.seen_mptcp && summary.ignored == 0 && !summary.conflict);
        match option {
            MptcpOption::MpCapable(o) => prop_assert_eq!(summary.capable, Some(o)),
            MptcpOption::MpJoin(o) => prop_assert_eq!(summary.join, Some(o)),
            MptcpOption::MpFastclose(o) => prop_assert_eq!(summary.fastclose, Some(o)),
            MptcpOption::MpTcpRst(o) => prop_assert_eq!(summary.tcprst, Some(o)),
            _ => prop_assert!(
                summary.capable.is_none()
                    && summary.join.is_none()
                    && summary.fastclose.is_none()
                    && summary.tcprst.is_none()
            ),
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn mp_capable_round_trip((o, seg) in arb_mp_capable()) {
            check_round_trip(MptcpOption::MpCapable(o), seg)?;
            let mut area = [0u8; 24];
            o.emit(&mut area).unwrap();
            let s = scan(&area[..o.buffer_len()], seg);
            prop_assert_eq!(s.capable, Some(o));
        }

        #[test]
        fn mp_join_round_trip((o, seg) in arb_mp_join()) {
            check_round_trip(MptcpOption::MpJoin(o), seg)?;
        }

        #[test]
        fn dss_round_trip(o in arb_dss(), seg in prop::sample::select(ALL_SEGMENTS.to_vec())) {
            check_round_trip(MptcpOption::Dss(o), seg)?;
        }

        #[test]
        fn add_addr_round_trip(o in arb_add_addr()) {
            check_round_trip(MptcpOption::AddAddr(o), ACK)?;
        }

        #[test]
        fn remove_addr_round_trip(ids in proptest::collection::vec(any::<u8>(), 1..=8)) {
            check_round_trip(MptcpOption::RemoveAddr(RemoveAddr { address_ids: &ids }), ACK)?;
        }

        #[test]
        fn small_options_round_trip(
            backup in any::<bool>(),
            dsn in any::<u64>(),
            key in any::<u64>(),
            flags in 0u8..16,
            reason in any::<u8>(),
        ) {
            check_round_trip(MptcpOption::MpPrio(MpPrio { backup }), ACK)?;
            check_round_trip(MptcpOption::MpFail(MpFail { dsn }), ACK)?;
            check_round_trip(MptcpOption::MpFastclose(MpFastclose { receiver_key: key }), RST)?;
            check_round_trip(MptcpOption::MpTcpRst(MpTcpRst { flags, reason }), RST)?;
        }

        #[test]
        fn unknown_round_trip(
            subtype in 9u8..=15,
            low in 0u8..16,
            rest in proptest::collection::vec(any::<u8>(), 0..30),
        ) {
            let mut data = vec![subtype << 4 | low];
            data.extend_from_slice(&rest);
            check_round_trip(MptcpOption::Unknown { subtype, data: &data }, SYN)?;
        }

        #[test]
        fn parse_never_panics(
            body in proptest::collection::vec(any::<u8>(), 0..=38),
            seg in prop::sample::select(ALL_SEGMENTS.to_vec()),
        ) {
            let mut raw = vec![30u8, (body.len() + 2) as u8];
            raw.extend_from_slice(&body);
            // scan's decoder agrees with the full one.
            let full = MptcpOption::parse(&raw, seg);
            prop_assert_eq!(parse_kept(&raw, seg).err(), full.err());
            // Whatever parses re-emits to something that parses to the same value.
            if let Ok(option) = full {
                let mut buf = [0u8; 40];
                let len = option.buffer_len();
                option.emit(&mut buf).unwrap();
                prop_assert_eq!(MptcpOption::parse(&buf[..len], seg), Ok(option));
            }
        }

        #[test]
        fn scan_never_panics(
            area in proptest::collection::vec(any::<u8>(), 0..=40),
            seg in prop::sample::select(ALL_SEGMENTS.to_vec()),
        ) {
            let s = scan(&area, seg);
            prop_assert!(usize::from(s.ignored) <= area.len() / 3);
            if s.capable.is_some() || s.join.is_some() {
                prop_assert!(s.seen_mptcp);
                prop_assert!(s.capable.is_none() || s.join.is_none());
            }
        }
    }
}
