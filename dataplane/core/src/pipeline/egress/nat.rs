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
use crate::pool::Fast4;

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

/// `fold(~HC + delta)` for a checksum word `hc` read in memory order (the caller complements
/// and stores it the same way).
#[inline(always)]
fn apply_ne(hc: u32, delta: u32) -> u32 {
    // The sum is below 2^18. Adding it to itself rotated by 16 bits adds its low half to its
    // high half, and the low half's carry too: the high half is then the one's-complement fold
    // (two folds in four instructions).
    let s = (!hc & 0xffff) + delta;
    s.wrapping_add(s.rotate_left(16)) >> 16
}

/// The established fast path's rewrite of an IPv4 segment towards a backend (what
/// [`nat_tcp`] with [`End::Dst`] and the frame's MACs do, in one go): destination address and
/// port, TTL, both checksums by one delta whose new half is precomputed ([`Fast4`]), and the
/// MACs. The frame is at least the 54 bytes [`data_v4`](crate::pipeline::parse::data_v4) read.
#[inline(always)]
pub(crate) fn to_backend_v4(buf: &mut [u8], b: &Fast4) {
    let Some(h) = buf.first_chunk_mut::<54>() else {
        return;
    };
    // Every word is taken as it lies in memory: one's-complement sums are the same in either
    // byte order, so no byte is swapped.
    let w = |h: &[u8; 54], at: usize| u32::from(u16::from_ne_bytes([h[at], h[at + 1]]));
    let ne = |v: u32| (v as u16).to_ne_bytes();
    // ~m + m' over the two address words.
    let addr_delta = 2 * 0xffff - w(h, 30) - w(h, 32) + b.addr_sum;
    let port_delta = 0xffff - w(h, 36) + u32::from(b.port_ne);
    // TTL - 1 (data_v4 checked it is above 1): its word [TTL, protocol] drops by 0x0100 in
    // network order, i.e. 0xfeff is added; in memory order, by 0x0001, i.e. 0xfffe.
    let ttl = u16::from_ne_bytes([0x01, 0x00]) as u32;
    h[22] -= 1;
    let ip_sum = ne(!apply_ne(w(h, 24), addr_delta + (0xffff - ttl)));
    h[24..26].copy_from_slice(&ip_sum);
    h[30..34].copy_from_slice(&b.addr);
    h[36..38].copy_from_slice(&b.port_ne.to_ne_bytes());
    let tcp_sum = ne(!apply_ne(w(h, 50), addr_delta + port_delta));
    h[50..52].copy_from_slice(&tcp_sum);
    h[..12].copy_from_slice(&b.macs);
}

#[cfg(test)]
mod tests {
    use super::*;
    use trapeze_wire::checksum;

    #[test]
    fn the_rotated_fold_is_two_folds() {
        for s in 0..(1u32 << 19) {
            let mut f = (s & 0xffff) + (s >> 16);
            f = (f & 0xffff) + (f >> 16);
            assert_eq!(s.wrapping_add(s.rotate_left(16)) >> 16, f, "{s:#x}");
        }
        for hc in [0, 1, 0x1234, 0xfffe, 0xffff] {
            for delta in [0, 1, 0xffff, 0x1_0000, 0x2_fffe, 0x3_fffd] {
                let mut f = (!hc & 0xffff) + delta;
                f = (f & 0xffff) + (f >> 16);
                f = (f & 0xffff) + (f >> 16);
                assert_eq!(apply_ne(hc, delta), f);
            }
        }
    }

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
