//! NAT: the in-place rewrite of one end's address and port, with incremental checksums
//! (RFC 1624), and the TTL / hop limit.
//!
//! Offsets come from [`Ip`], which the parser validated, so every index here is in bounds. MPTCP
//! option bytes are never touched: NAT changes IP addresses and ports only, which the DSS
//! checksum does not cover (RFC 8684 §3.3).
//!
//! ## Checksums
//!
//! RFC 1624 Eqn. 3, `HC' = ~(~HC + ~m + m')`, summed over every 16-bit word that changes: the
//! address words (in the IPv4 header checksum and in the TCP pseudo-header), the port, and the
//! TTL word. The sum of `~m + m'` over the changed words is computed once and applied to both
//! checksums. The property tests check the result against a full recompute.

use crate::pipeline::parse::Ip;

/// Which end of the packet NAT rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// Destination address and port (client -> backend).
    Dst,
    /// Source address and port (backend -> client).
    Src,
}

/// One's-complement sum of the 16-bit words of `b` (even length), unfolded.
#[inline(always)]
fn words(b: &[u8]) -> u32 {
    b.chunks_exact(2)
        .map(|w| u16::from_be_bytes([w[0], w[1]]) as u32)
        .sum()
}

/// `~m + m'` summed over the words of two equal-length byte runs, unfolded.
#[inline(always)]
fn delta(old: &[u8], new: &[u8]) -> u32 {
    // ~m over n words is n * 0xffff - sum(m).
    let n = (old.len() / 2) as u32;
    n * 0xffff - words(old) + words(new)
}

/// Applies an unfolded delta to a stored checksum: `~fold(~HC + delta)`.
#[inline(always)]
fn apply(checksum: u16, delta: u32) -> u16 {
    let mut s = (!checksum) as u32 + delta;
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

/// Rewrites one end's address (16-byte key form; IPv4-mapped for IPv4) and TCP port, decrements
/// the TTL / hop limit, and fixes the IPv4 header and TCP checksums incrementally.
#[inline]
pub(crate) fn nat_tcp(buf: &mut [u8], ip: &Ip, end: End, addr: &[u8; 16], port: u16) {
    let (head, tail) = buf.split_at_mut(ip.l4);
    let Some(tcp) = tail.first_chunk_mut::<20>() else {
        return;
    };
    let port_at = if end == End::Dst { 2 } else { 0 };
    let old_port = u16::from_be_bytes([tcp[port_at], tcp[port_at + 1]]);
    let port_delta = 0xffff - old_port as u32 + port as u32;
    let tcp_delta = if ip.v6 {
        let Some(h) = head
            .get_mut(ip.l3..)
            .and_then(|h| h.first_chunk_mut::<40>())
        else {
            return;
        };
        let at = if end == End::Dst { 24 } else { 8 };
        let old: &mut [u8; 16] = (&mut h[at..at + 16])
            .try_into()
            .unwrap_or_else(|_| unreachable!());
        let d = delta(old, addr);
        *old = *addr;
        h[7] -= 1; // hop limit: the caller checked it is > 1
        d + port_delta
    } else {
        let Some(h) = head
            .get_mut(ip.l3..)
            .and_then(|h| h.first_chunk_mut::<20>())
        else {
            return;
        };
        let at = if end == End::Dst { 16 } else { 12 };
        let new = [addr[12], addr[13], addr[14], addr[15]];
        let d = delta(&h[at..at + 4], &new);
        h[at..at + 4].copy_from_slice(&new);
        // TTL - 1: the TTL/protocol word drops by 0x0100, i.e. adds ~0x0100 = 0xfeff.
        h[8] -= 1; // the caller checked TTL > 1
        let c = apply(u16::from_be_bytes([h[10], h[11]]), d + 0xfeff);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        d + port_delta
    };
    tcp[port_at..port_at + 2].copy_from_slice(&port.to_be_bytes());
    let c = apply(u16::from_be_bytes([tcp[16], tcp[17]]), tcp_delta);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use trapeze_wire::checksum;

    #[test]
    fn delta_matches_a_full_recompute() {
        // A header whose words change from `old` to `new`: the incremental result equals the
        // recomputed checksum.
        let old: [u8; 8] = [0xc0, 0x00, 0x02, 0x0a, 0x00, 0x50, 0x40, 0x06];
        let new: [u8; 8] = [0x0a, 0x01, 0x00, 0x0a, 0x1f, 0x90, 0x3f, 0x06];
        let stored = checksum::finish(checksum::data(&old));
        let updated = apply(stored, delta(&old, &new));
        assert_eq!(updated, checksum::finish(checksum::data(&new)));
        assert_eq!(apply(stored, delta(&old, &old)), stored);
    }
}
