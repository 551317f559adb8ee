//! The one error type of the wire layer: small, `Copy`, and specific enough to be a drop reason.

use core::fmt;

/// Why a buffer could not be read as the format asked for.
///
/// The variants are deliberately coarse: the forwarding pipeline turns each into a drop counter,
/// so a variant exists when an operator would want to tell the cases apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Error {
    /// Fewer bytes than the fixed header, or than a length field claims.
    Truncated,
    /// A version field holds a value this format does not speak.
    BadVersion,
    /// A header-length field is impossible (IPv4 IHL < 5, TCP data offset < 5, ...).
    BadHeaderLen,
    /// A total/payload length field is inconsistent with the header or the buffer.
    BadLength,
    /// A checksum does not verify.
    BadChecksum,
    /// A field holds a value the format forbids (ARP htype != Ethernet, ...).
    Malformed,
    /// An IPv6 extension-header chain that is too long, out of order or unknown.
    ExtensionHeader,
    /// A source-routing construct: IPv4 LSRR/SSRR options, IPv6 routing header type 0.
    SourceRoute,
    /// Valid on the wire but not handled here (QinQ, jumbograms, ...).
    Unsupported,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Self::Truncated => "truncated",
            Self::BadVersion => "unexpected version",
            Self::BadHeaderLen => "impossible header length",
            Self::BadLength => "inconsistent length field",
            Self::BadChecksum => "bad checksum",
            Self::Malformed => "malformed field",
            Self::ExtensionHeader => "bad IPv6 extension header chain",
            Self::SourceRoute => "source route",
            Self::Unsupported => "unsupported",
        };
        f.write_str(s)
    }
}

impl std::error::Error for Error {}

/// Result of the wire layer.
pub type Result<T> = core::result::Result<T, Error>;
