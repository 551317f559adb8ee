//! The Internet checksum: full computation (RFC 1071) and incremental update (RFC 1624).
//!
//! ```text
//!  sum  = one's-complement sum of the 16-bit big-endian words of the data
//!         (an odd trailing byte is padded with a zero byte on the right)
//!  HC   = ~sum                      the value stored in a header's checksum field
//!  HC'  = ~(~HC + ~m + m')          RFC 1624 Eqn. 3, when a word m becomes m'
//! ```
//!
//! Functions that return a *sum* ([`data`], [`combine`], the pseudo-header helpers) return it
//! folded to 16 bits and **not** complemented, so sums of pieces can be [`combine`]d; [`finish`]
//! turns a sum into the field value. The `update*` functions take and return the field value as
//! stored.
//!
//! ## 0x0000 and 0xFFFF
//!
//! One's-complement arithmetic has two zeros. A folded sum here is `0x0000` only when every summed
//! word is zero; otherwise it is in `1..=0xFFFF`, so a computed checksum field is in
//! `0..=0xFFFE`. RFC 1624 Eqn. 3 keeps that property, which is why it (and not Eqn. 2, which can
//! produce `0xFFFF` where a recompute gives `0x0000`) is used: for any data that is not entirely
//! zero (true of every IP, TCP, UDP and ICMP header: the version or protocol field is non-zero),
//! an incremental update equals a full recompute bit for bit.
//!
//! UDP is the exception on the wire: a computed `0x0000` is sent as `0xFFFF` (RFC 768), and an
//! IPv4 UDP field of `0x0000` means "no checksum". The `update*` functions work on the stored
//! value either way (`~0xFFFF == ~0x0000` in the one's-complement sense), but a UDP caller must not
//! update a `0x0000` IPv4 field (there is no checksum to update) and must map a `0x0000` result to
//! `0xFFFF`.

use core::net::IpAddr;

/// Folds a 64-bit accumulator of 16-bit words into a 16-bit one's-complement sum.
///
/// The result is `0` only if `acc` is `0`.
#[inline]
fn fold(acc: u64) -> u16 {
    // Four fixed steps suffice: < 2^33, < 2^17 + 2^16, <= 0x1_0001, <= 0xFFFF.
    let mut s = (acc >> 32) + (acc & 0xFFFF_FFFF);
    s = (s >> 16) + (s & 0xFFFF);
    s = (s >> 16) + (s & 0xFFFF);
    s = (s >> 16) + (s & 0xFFFF);
    s as u16
}

/// RFC 1071 one's-complement sum of `bytes`, folded to 16 bits, not complemented.
///
/// An odd trailing byte is padded with a zero byte. The bulk is summed eight bytes at a time as
/// two 32-bit halves into 64-bit accumulators (2^16 ≡ 1 modulo 0xFFFF, so wider words sum to the
/// same residue), which cannot overflow for any buffer smaller than 16 GiB.
#[inline]
pub fn data(bytes: &[u8]) -> u16 {
    let mut acc_a: u64 = 0;
    let mut acc_b: u64 = 0;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        let w = u64::from_be_bytes(w);
        acc_a += w >> 32;
        acc_b += w & 0xFFFF_FFFF;
    }
    let mut acc = acc_a + acc_b;
    let mut rest = chunks.remainder().chunks_exact(2);
    for pair in &mut rest {
        acc += u64::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = rest.remainder() {
        acc += u64::from(*last) << 8;
    }
    fold(acc)
}

/// One's-complement sum of already folded sums.
#[inline]
pub fn combine(sums: &[u16]) -> u16 {
    fold(sums.iter().map(|&s| u64::from(s)).sum())
}

/// Sum of the IPv4 pseudo-header (RFC 793 §3.1, RFC 768): addresses, zero, protocol, length.
#[inline]
pub fn pseudo_header_v4(src: [u8; 4], dst: [u8; 4], protocol: u8, length: u32) -> u16 {
    let src = u64::from(u32::from_be_bytes(src));
    let dst = u64::from(u32::from_be_bytes(dst));
    fold(src + dst + u64::from(protocol) + u64::from(length))
}

/// Sum of the IPv6 pseudo-header (RFC 8200 §8.1): addresses, 32-bit length, next header.
#[inline]
pub fn pseudo_header_v6(src: &[u8; 16], dst: &[u8; 16], next_header: u8, length: u32) -> u16 {
    let words = |a: &[u8; 16]| -> u64 {
        let hi = u64::from_be_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]);
        let lo = u64::from_be_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]);
        u64::from(fold(hi)) + u64::from(fold(lo))
    };
    fold(words(src) + words(dst) + u64::from(next_header) + u64::from(length))
}

/// Sum of the pseudo-header for either family.
///
/// If the families differ (never the case for a real packet), both addresses are treated as IPv6,
/// the IPv4 one as its v4-mapped form, so the function stays total.
#[inline]
pub fn pseudo_header(src: &IpAddr, dst: &IpAddr, protocol: u8, length: u32) -> u16 {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            pseudo_header_v4(s.octets(), d.octets(), protocol, length)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            pseudo_header_v6(&s.octets(), &d.octets(), protocol, length)
        }
        (s, d) => {
            let v6 = |a: &IpAddr| match a {
                IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
                IpAddr::V6(a) => a.octets(),
            };
            pseudo_header_v6(&v6(s), &v6(d), protocol, length)
        }
    }
}

/// Turns a folded sum into the value written into a checksum field: `!sum`.
#[inline]
pub fn finish(sum: u16) -> u16 {
    !sum
}

/// RFC 1624 Eqn. 3: HC' = ~(~HC + ~m + m'); takes and returns the checksum field value as stored.
///
/// Equals a full recompute for any data that is not all zero (see the module doc). `old == new`
/// returns `checksum` unchanged.
#[inline]
pub fn update16(checksum: u16, old: u16, new: u16) -> u16 {
    if old == new {
        return checksum;
    }
    !fold(u64::from(!checksum) + u64::from(!old) + u64::from(new))
}

/// [`update16`] for a 32-bit field (an IPv4 address, a sequence number).
#[inline]
pub fn update32(checksum: u16, old: u32, new: u32) -> u16 {
    if old == new {
        return checksum;
    }
    let (oh, ol) = ((old >> 16) as u16, old as u16);
    let (nh, nl) = ((new >> 16) as u16, new as u16);
    !fold(u64::from(!checksum) + u64::from(!oh) + u64::from(!ol) + u64::from(nh) + u64::from(nl))
}

/// [`update16`] for a run of bytes (an IPv6 address) that changed from `old` to `new`.
///
/// Callers pass two slices of the same, even length, aligned on a 16-bit word of the checksummed
/// data (every address field is). That is checked with `debug_assert!` only: in release builds an
/// odd tail is zero-padded and unequal lengths give a wrong (but never panicking) result.
#[inline]
pub fn update_bytes(checksum: u16, old: &[u8], new: &[u8]) -> u16 {
    debug_assert!(old.len() == new.len() && old.len().is_multiple_of(2));
    if old == new {
        return checksum;
    }
    !fold(u64::from(!checksum) + u64::from(!data(old)) + u64::from(data(new)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{Ipv4Addr, Ipv6Addr};
    use proptest::prelude::*;

    /// The textbook definition: 16 bits at a time, end-around carry after every add.
    fn reference(bytes: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        for pair in bytes.chunks(2) {
            let w = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            sum += u32::from(w);
            sum = (sum & 0xFFFF) + (sum >> 16);
        }
        sum as u16
    }

    /// An IPv4 header from RFC 1071's world: 45 00 00 73 ... with checksum 0xb861.
    static IPV4_HEADER: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        assert_eq!(
            data(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0xddf2
        );
    }

    #[test]
    fn ipv4_header_verifies_and_recomputes() {
        assert_eq!(data(&IPV4_HEADER), 0xFFFF);
        let mut h = IPV4_HEADER;
        h[10] = 0;
        h[11] = 0;
        assert_eq!(finish(data(&h)), 0xb861);
    }

    #[test]
    fn edge_lengths() {
        assert_eq!(data(&[]), 0);
        assert_eq!(data(&[0xab]), 0xab00);
        assert_eq!(data(&[0xff; 9]), 0xFF00);
        assert_eq!(data(&[0xff; 10]), 0xFFFF);
        assert_eq!(data(&[0; 17]), 0);
    }

    #[test]
    fn pseudo_headers() {
        let s = Ipv4Addr::new(192, 168, 0, 1);
        let d = Ipv4Addr::new(192, 168, 0, 199);
        let mut ph = [0u8; 12];
        ph[..4].copy_from_slice(&s.octets());
        ph[4..8].copy_from_slice(&d.octets());
        ph[9] = 17;
        ph[10..].copy_from_slice(&95u16.to_be_bytes());
        assert_eq!(pseudo_header_v4(s.octets(), d.octets(), 17, 95), data(&ph));
        assert_eq!(pseudo_header(&s.into(), &d.into(), 17, 95), data(&ph));

        let s6 = Ipv6Addr::new(0xfe80, 0, 0, 0, 1, 2, 3, 4);
        let d6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0xffff, 1);
        let mut ph6 = [0u8; 40];
        ph6[..16].copy_from_slice(&s6.octets());
        ph6[16..32].copy_from_slice(&d6.octets());
        ph6[32..36].copy_from_slice(&70_000u32.to_be_bytes());
        ph6[39] = 6;
        assert_eq!(
            pseudo_header_v6(&s6.octets(), &d6.octets(), 6, 70_000),
            data(&ph6)
        );
        assert_eq!(pseudo_header(&s6.into(), &d6.into(), 6, 70_000), data(&ph6));

        // Mixed families: treated as v6, v4-mapped.
        let mapped = s.to_ipv6_mapped();
        assert_eq!(
            pseudo_header(&s.into(), &d6.into(), 6, 20),
            pseudo_header_v6(&mapped.octets(), &d6.octets(), 6, 20)
        );
    }

    #[test]
    fn update_unchanged_is_identity() {
        assert_eq!(update16(0x1234, 7, 7), 0x1234);
        assert_eq!(update32(0x1234, 7, 7), 0x1234);
        assert_eq!(update_bytes(0x1234, &[1, 2], &[1, 2]), 0x1234);
    }

    #[test]
    fn rfc1624_corner_case() {
        // RFC 1624 §4: a header whose sum is 0xFFFF (checksum 0x0000) after an update must keep
        // the field at 0x0000 (Eqn. 2 would give 0xFFFF).
        // Words: 0x0001 and 0xFFFE sum to 0xFFFF -> checksum 0x0000.
        let mut h = [0x00, 0x01, 0xFF, 0xFE];
        assert_eq!(finish(data(&h)), 0x0000);
        // Change 0x0001 -> 0x0002 and 0xFFFE -> 0xFFFD: still sums to 0xFFFF.
        let c = update16(0x0000, 0x0001, 0x0002);
        h[1] = 0x02;
        assert_eq!(c, finish(data(&h)));
        let c = update16(c, 0xFFFE, 0xFFFD);
        h[3] = 0xFD;
        assert_eq!(c, finish(data(&h)));
        assert_eq!(c, 0x0000);
    }

    fn set16(h: &mut [u8], at: usize, v: u16) {
        h[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }

    fn get16(h: &[u8], at: usize) -> u16 {
        u16::from_be_bytes([h[at], h[at + 1]])
    }

    /// A random 20-byte IPv4-like header (version/IHL byte fixed non-zero, as on the wire),
    /// optionally forced so that its sum is 0xFFFF (stored checksum 0x0000).
    fn header() -> impl Strategy<Value = [u8; 20]> {
        (any::<[u8; 20]>(), any::<bool>()).prop_map(|(mut h, force_zero)| {
            h[0] = 0x45;
            h[10] = 0;
            h[11] = 0;
            if force_zero {
                // Use the ident word (4..6) as slack: make the total sum 0xFFFF.
                set16(&mut h, 4, 0);
                let others = data(&h);
                set16(&mut h, 4, !others);
            }
            let c = finish(data(&h));
            set16(&mut h, 10, c);
            h
        })
    }

    proptest! {
        #[test]
        fn data_matches_reference(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            prop_assert_eq!(data(&bytes), reference(&bytes));
        }

        #[test]
        fn data_all_ones(len in 1usize..200) {
            let bytes = vec![0xFFu8; len];
            prop_assert_eq!(data(&bytes), reference(&bytes));
        }

        #[test]
        fn combine_splits(bytes in proptest::collection::vec(any::<u8>(), 0..512), cut in 0usize..256) {
            let cut = (cut * 2).min(bytes.len() & !1);
            let (a, b) = bytes.split_at(cut);
            prop_assert_eq!(combine(&[data(a), data(b)]), data(&bytes));
        }

        #[test]
        fn update16_matches_recompute(h in header(), word in 2usize..10, new in any::<u16>(), force in any::<bool>()) {
            // Any 16-bit word except the version/IHL word (0) and the checksum itself (5).
            let at = if word == 5 { 8 } else { word * 2 };
            let mut h2 = h;
            let new = if force {
                // Pick the new value so the new sum is 0xFFFF (checksum 0x0000): T16 corner.
                set16(&mut h2, at, 0);
                set16(&mut h2, 10, 0);
                !data(&h2)
            } else {
                new
            };
            let old = get16(&h, at);
            let mut full = h;
            set16(&mut full, at, new);
            set16(&mut full, 10, 0);
            let expect = finish(data(&full));
            prop_assert_eq!(update16(get16(&h, 10), old, new), expect);
        }

        #[test]
        fn update32_matches_recompute(h in header(), which in any::<bool>(), new in any::<u32>()) {
            // Rewrite the source (12..16) or destination (16..20) address.
            let at = if which { 12 } else { 16 };
            let old = u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
            let mut full = h;
            full[at..at + 4].copy_from_slice(&new.to_be_bytes());
            set16(&mut full, 10, 0);
            let expect = finish(data(&full));
            prop_assert_eq!(update32(get16(&h, 10), old, new), expect);
            // Same through update_bytes.
            prop_assert_eq!(
                update_bytes(get16(&h, 10), &h[at..at + 4], &new.to_be_bytes()),
                expect
            );
        }

        #[test]
        fn ttl_and_port_rewrites(h in header(), ttl in any::<u8>(), port in any::<u16>()) {
            // TTL shares a word with the protocol (8..10); a "port" at 4..6 stands for L4 ports.
            let mut full = h;
            full[8] = ttl;
            set16(&mut full, 4, port);
            set16(&mut full, 10, 0);
            let expect = finish(data(&full));
            let c = update16(get16(&h, 10), get16(&h, 8), u16::from_be_bytes([ttl, h[9]]));
            let c = update16(c, get16(&h, 4), port);
            prop_assert_eq!(c, expect);
        }

        #[test]
        fn update_bytes_v6_addresses(
            base in any::<[u8; 40]>(),
            new in any::<[u8; 16]>(),
        ) {
            let mut h = base;
            h[0] = 0x60;
            let c = finish(data(&h));
            let mut full = h;
            full[8..24].copy_from_slice(&new);
            prop_assert_eq!(update_bytes(c, &h[8..24], &new), finish(data(&full)));
        }
    }
}
