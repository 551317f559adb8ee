//! Flow identity: the 5-tuple key, and the one fixed-seed hash every table and every gateway
//! instance agrees on.
//!
//! The hash is a documented function of the key bytes with compile-time seeds. It is never the
//! standard library's per-process random hasher: two gateways behind ECMP, or one gateway before
//! and after a restart, must send a given new flow to the same backend (Maglev §3.4).
//!
//! The flow-table bucket is hashed the same way with a secret seed instead ([`FlowSecret`]), so
//! that nobody can aim flows at one bucket; an established flow's packet is hashed once (keyed),
//! and only a new flow also takes the fixed hash, for Maglev.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IPv4 addresses are stored IPv4-mapped (`::ffff:a.b.c.d`) so one key type covers both families.
///
/// Plain old data (`bytemuck::Pod`: no padding, every bit pattern valid), so that keys can live
/// in table memory shared with a previous process ([`crate::state`]); `proto` is 16 bits wide
/// for that reason (an 8-bit field would leave a padding byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct FlowKey {
    /// Source address (IPv4-mapped for IPv4).
    pub src: [u8; 16],
    /// Destination address (IPv4-mapped for IPv4).
    pub dst: [u8; 16],
    /// Source port (host order).
    pub src_port: u16,
    /// Destination port (host order).
    pub dst_port: u16,
    /// IP protocol number (6 for TCP).
    pub proto: u16,
}

/// An IPv4 TCP flow key as the three little-endian words of [`FlowKey`]'s bytes that are not
/// zero (8..16, 24..32 and 30..38; bytes 0..8 and 16..24 of an IPv4-mapped key are), computed
/// from the frame's address and port words: what the established path compares a table entry
/// with ([`FlowKey::same_v4`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowKeyV4 {
    w8: u64,
    w24: u64,
    w30: u64,
}

impl FlowKeyV4 {
    /// From the source then destination address as they lie in the frame, read as one
    /// little-endian word, and the source then destination port likewise (network order).
    #[inline(always)]
    pub fn of_frame(addrs: u64, ports: u32) -> Self {
        // The key's ports are in host order, stored little-endian: each 16-bit half swapped.
        let ports = ((ports & 0x00ff_00ff) << 8) | ((ports >> 8) & 0x00ff_00ff);
        Self {
            w8: (addrs << 32) | 0xffff_0000,
            w24: (addrs & 0xffff_ffff_0000_0000) | 0xffff_0000,
            w30: (addrs >> 48) | (u64::from(ports) << 16) | (6 << 48),
        }
    }
}

const V4_MAPPED_PREFIX: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

/// Stores an IPv4 address in the 16-byte key form.
#[inline]
pub fn v4_mapped(a: [u8; 4]) -> [u8; 16] {
    let mut o = [0u8; 16];
    o[..12].copy_from_slice(&V4_MAPPED_PREFIX);
    o[12..].copy_from_slice(&a);
    o
}

/// Converts an address to the 16-byte key form.
#[inline]
pub fn addr_bytes(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(a) => v4_mapped(a.octets()),
        IpAddr::V6(a) => a.octets(),
    }
}

/// Converts a 16-byte key-form address back.
#[inline]
pub fn addr_from_bytes(b: [u8; 16]) -> IpAddr {
    if b[..12] == V4_MAPPED_PREFIX {
        IpAddr::V4(Ipv4Addr::new(b[12], b[13], b[14], b[15]))
    } else {
        IpAddr::V6(Ipv6Addr::from(b))
    }
}

impl FlowKey {
    /// A key from addresses and ports.
    pub fn new(src: IpAddr, src_port: u16, dst: IpAddr, dst_port: u16, proto: u8) -> Self {
        Self {
            src: addr_bytes(src),
            dst: addr_bytes(dst),
            src_port,
            dst_port,
            proto: u16::from(proto),
        }
    }

    /// The key of the opposite direction.
    #[inline]
    pub fn reversed(&self) -> Self {
        Self {
            src: self.dst,
            dst: self.src,
            src_port: self.dst_port,
            dst_port: self.src_port,
            proto: self.proto,
        }
    }

    /// True when both addresses are IPv4-mapped.
    #[inline]
    pub fn is_ipv4(&self) -> bool {
        self.src[..12] == V4_MAPPED_PREFIX
    }

    /// The source address.
    pub fn src_addr(&self) -> IpAddr {
        addr_from_bytes(self.src)
    }

    /// The destination address.
    pub fn dst_addr(&self) -> IpAddr {
        addr_from_bytes(self.dst)
    }

    /// The fixed-seed 64-bit hash of this key (see the module documentation): Maglev's, the same
    /// on every instance.
    #[inline]
    pub fn hash(&self) -> u64 {
        hash_words(&self.words())
    }

    /// [`hash`](Self::hash) of an IPv4 TCP key from its words, as
    /// [`keyed_hash_v4`](Self::keyed_hash_v4) takes them (`addrs`: source then destination
    /// address as they lie in a packet, read little-endian; `ports`: source port in the low
    /// half, host order), inlined: the same value (a test checks it), the new-connection path's
    /// Maglev hash, whose key words are partly constant (the IPv4-mapped prefix, the protocol).
    #[inline(always)]
    pub fn hash_v4(addrs: u64, ports: u32) -> u64 {
        // The second word of an IPv4-mapped address: bytes 8..16, `0 0 ff ff a b c d`.
        let words = [
            0,
            0xffff_0000 | (addrs << 32),
            0,
            0xffff_0000 | (addrs & 0xffff_ffff_0000_0000),
            u64::from(ports) | (6 << 32),
        ];
        let mut h = FLOW_HASH_SEED ^ 5u64.wrapping_mul(K1);
        for w in words {
            h = (h ^ w).wrapping_mul(K1).rotate_left(31);
        }
        fmix(h)
    }

    /// The key hashed with a secret seed: the flow-table bucket index (see [`FlowSecret`]).
    #[inline]
    pub fn keyed_hash(&self, secret: FlowSecret) -> u64 {
        // IPv6: the secret is the initial state itself (the fixed hash starts from its seed
        // mixed with the word count). An IPv4 key is two words, its twelve bytes of addresses
        // and ports, not the five words of its IPv4-mapped form, taken by one folded multiply
        // (the established path's key is IPv4-mapped by construction, so the test below folds
        // away there).
        if self.is_ipv4() && self.dst[..12] == V4_MAPPED_PREFIX {
            let a = |b: &[u8; 16]| u64::from(u32::from_le_bytes([b[12], b[13], b[14], b[15]]));
            let (s, d) = (self.src_port.to_be_bytes(), self.dst_port.to_be_bytes());
            let ports = u32::from_le_bytes([s[0], s[1], d[0], d[1]]);
            Self::keyed_hash_v4(
                secret,
                a(&self.src) | (a(&self.dst) << 32),
                ports,
                self.proto,
            )
        } else {
            mix_words(secret.0, &self.words())
        }
    }

    /// [`keyed_hash`](Self::keyed_hash) of an IPv4 key given as words, both as they lie in a
    /// packet, read little-endian: `addrs` the source then the destination address, `ports` the
    /// source then the destination port (so the established path swaps no byte).
    ///
    /// One folded multiply: both words keyed with the secret, multiplied to 128 bits, the two
    /// halves xored (the mixing of foldhash and aHash). Every bit of either word reaches the low
    /// bits (the bucket) and the high half (the tag) through the product's upper half. Without
    /// the secret, the factors are unknown, so keys cannot be aimed at a bucket (a word that
    /// keys to zero would zero the product, but finding one means guessing 32 bits of the
    /// secret per try). IPv6 keys keep the rounds of `mix_words`.
    #[inline(always)]
    pub fn keyed_hash_v4(secret: FlowSecret, addrs: u64, ports: u32, proto: u16) -> u64 {
        let tail = u64::from(ports) | (u64::from(proto) << 32);
        folded_multiply(addrs ^ secret.0, tail ^ (secret.0 ^ K2).rotate_left(32))
    }

    /// An IPv4 TCP key straight from the frame's words ([`FlowKeyV4::of_frame`]) compared with
    /// this one: the established path's compare, without building the 38-byte key first.
    #[inline(always)]
    pub fn same_v4(&self, k: &FlowKeyV4) -> bool {
        let b = bytemuck::bytes_of(self);
        let w = |at: usize| {
            b.get(at..at + 8)
                .and_then(|s| s.first_chunk::<8>())
                .map_or(0, |c| u64::from_le_bytes(*c))
        };
        ((w(0) | w(16)) | (w(8) ^ k.w8) | (w(24) ^ k.w24) | (w(30) ^ k.w30)) == 0
    }

    /// Ports and protocol as one little-endian word.
    #[inline]
    fn tail(&self) -> u64 {
        (self.src_port as u64) | ((self.dst_port as u64) << 16) | ((self.proto as u64) << 32)
    }

    /// The key as the five little-endian words both hashes mix.
    #[inline]
    fn words(&self) -> [u64; 5] {
        let w = |b: &[u8; 16], i: usize| {
            u64::from_le_bytes([
                b[i],
                b[i + 1],
                b[i + 2],
                b[i + 3],
                b[i + 4],
                b[i + 5],
                b[i + 6],
                b[i + 7],
            ])
        };
        [
            w(&self.src, 0),
            w(&self.src, 8),
            w(&self.dst, 0),
            w(&self.dst, 8),
            self.tail(),
        ]
    }
}

/// The secret seed of the flow-table bucket index.
///
/// The fixed hash ([`FlowKey::hash`]) is public: anyone can compute it, and since every round of
/// it is invertible, a sender who controls 64 bits of its source (an IPv6 /64) can make any
/// number of keys with the *same* 64-bit fixed hash. Were the bucket taken from it, a flood
/// could aim every flow at one bucket of 8 slots and keep new flows of that bucket out of the
/// table. The bucket therefore comes from [`FlowKey::keyed_hash`], the same mixing seeded with a
/// random per-table secret (fresh on a cold start, kept in the state file across restarts so
/// that a re-attached table still finds its flows): without the secret, the bucket of a key
/// cannot be predicted. It is not a cryptographic MAC, and it does not need to be: nothing is
/// authenticated by it, and it costs no more than the fixed hash (much less for IPv4 keys: one
/// folded multiply of two keyed words, [`FlowKey::keyed_hash_v4`]). Maglev keeps the fixed
/// hash, so that every instance picks the same backend for a new flow.
#[derive(Clone, Copy, PartialEq, Eq, Default, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(transparent)]
pub struct FlowSecret(pub u64);

impl FlowSecret {
    /// The secret of heap-allocated tables (tests, benches, replays): fixed, so that their runs
    /// are reproducible. The daemon always draws a random one.
    pub const FIXED: Self = Self(0x7472_6170_657a_6532); // "trapeze2"

    /// The one secret that is not: with it, [`FlowKey::keyed_hash`] of an IPv6 key is the public
    /// fixed hash ([`FlowKey::hash`]), i.e. the flow table as it was before its buckets were
    /// keyed. For tests that show why they are (with IPv6 keys: a /64 is what a flood needs).
    pub const PUBLIC: Self = Self(FLOW_HASH_SEED ^ 5u64.wrapping_mul(K1));
}

impl core::fmt::Debug for FlowSecret {
    /// Never prints the secret.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("FlowSecret(..)")
    }
}

/// [`FlowKey::keyed_hash_v4`] of TCP keys under one secret with its two keyed words
/// precomputed ([`FlowSecret::tcp_v4`]; a flow table keeps them): what the established and
/// new-connection paths hash with, one xor per word and the folded multiply.
#[derive(Clone, Copy)]
pub struct TcpV4Keys {
    addrs: u64,
    tail: u64,
}

impl FlowSecret {
    /// This secret's [`TcpV4Keys`].
    pub const fn tcp_v4(self) -> TcpV4Keys {
        TcpV4Keys {
            addrs: self.0,
            tail: (self.0 ^ K2).rotate_left(32) ^ (6 << 32),
        }
    }
}

impl TcpV4Keys {
    /// `FlowKey::keyed_hash_v4(secret, addrs, ports, 6)`.
    #[inline(always)]
    pub fn hash(self, addrs: u64, ports: u32) -> u64 {
        folded_multiply(addrs ^ self.addrs, u64::from(ports) ^ self.tail)
    }
}

impl core::fmt::Debug for TcpV4Keys {
    /// Never prints the keys.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("TcpV4Keys(..)")
    }
}

/// Seed of [`hash_words`]. Changing it changes every Maglev decision: never do that casually.
pub const FLOW_HASH_SEED: u64 = 0x7472_6170_657a_6531; // "trapeze1"
const K1: u64 = 0x9e37_79b9_7f4a_7c15;
const K2: u64 = 0xbf58_476d_1ce4_e5b9;

/// Hashes a few words with the fixed seed: a multiply-rotate mix per word and the SplitMix64
/// finaliser. Deterministic on every platform (words are built little-endian by the callers).
#[inline]
pub fn hash_words(words: &[u64]) -> u64 {
    hash_words_seeded(FLOW_HASH_SEED, words)
}

/// [`hash_words`] with an explicit seed (Maglev uses two more seeds for its permutations).
#[inline]
pub fn hash_words_seeded(seed: u64, words: &[u64]) -> u64 {
    mix_words(seed ^ (words.len() as u64).wrapping_mul(K1), words)
}

/// The rounds of [`hash_words_seeded`] from the initial state `h`, then the finaliser.
#[inline]
fn mix_words(mut h: u64, words: &[u64]) -> u64 {
    for &w in words {
        h = (h ^ w).wrapping_mul(K1).rotate_left(31);
    }
    fmix(h)
}

/// The 128-bit product of two words, its halves xored.
#[inline(always)]
const fn folded_multiply(a: u64, b: u64) -> u64 {
    let p = (a as u128) * (b as u128);
    (p as u64) ^ ((p >> 64) as u64)
}

/// SplitMix64 finaliser: full avalanche of a 64-bit value.
#[inline]
pub const fn fmix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(K2);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 TCP key drawn from `x`, with its addresses as the frame's word and its ports in
    /// host order, the source's in the low half.
    fn random_v4(x: u64) -> (FlowKey, u64, u32) {
        let (src, dst) = ((x as u32).to_be_bytes(), ((x >> 32) as u32).to_be_bytes());
        let (sp, dp) = ((x >> 7) as u16, (x >> 23) as u16);
        let k = FlowKey::new(IpAddr::V4(src.into()), sp, IpAddr::V4(dst.into()), dp, 6);
        let addrs = u64::from(u32::from_le_bytes(src)) | (u64::from(u32::from_le_bytes(dst)) << 32);
        (k, addrs, u32::from(sp) | (u32::from(dp) << 16))
    }

    #[test]
    fn tcp_v4_keys_hash_as_the_secret() {
        let mut x = 0x0bad_cafe_dead_beefu64;
        for _ in 0..10_000 {
            x = fmix(x.wrapping_add(K1));
            let secret = FlowSecret(fmix(x ^ K2));
            let (addrs, ports) = (fmix(x), (x >> 17) as u32);
            assert_eq!(
                secret.tcp_v4().hash(addrs, ports),
                FlowKey::keyed_hash_v4(secret, addrs, ports, 6)
            );
        }
        assert_eq!(format!("{:?}", FlowSecret(42).tcp_v4()), "TcpV4Keys(..)");
    }

    #[test]
    fn same_v4_is_eq() {
        let mut x = 0x0123_4567_89ab_cdefu64;
        for _ in 0..10_000 {
            x = fmix(x.wrapping_add(K1));
            let (k, addrs, ports) = random_v4(x);
            let v4 = FlowKeyV4::of_frame(addrs, ports.swap_bytes().rotate_left(16));
            assert!(k.same_v4(&v4));
            // Every single-bit difference of the stored key is seen, IPv6 prefixes included.
            for byte in 0..core::mem::size_of::<FlowKey>() {
                for bit in 0..8 {
                    let mut o = k;
                    bytemuck::bytes_of_mut(&mut o)[byte] ^= 1 << bit;
                    assert!(!o.same_v4(&v4), "byte {byte} bit {bit}");
                }
            }
        }
        // Another protocol is another key.
        let k = FlowKey::new(
            "192.0.2.1".parse().unwrap(),
            1,
            "192.0.2.2".parse().unwrap(),
            2,
            17,
        );
        let v4 = FlowKeyV4::of_frame(0x0202_00c0_0102_00c0, 0x0200_0100);
        assert!(!k.same_v4(&v4));
    }

    #[test]
    fn the_ipv4_hash_is_the_hash() {
        let mut x = 0x1234_5678_9abc_def0u64;
        for _ in 0..10_000 {
            x = fmix(x.wrapping_add(K1));
            let (k, addrs, ports) = random_v4(x);
            assert_eq!(FlowKey::hash_v4(addrs, ports), k.hash());
        }
    }

    #[test]
    fn hash_is_fixed_across_builds() {
        // A golden value: if this changes, every gateway in a fleet disagrees with older ones.
        let k = FlowKey::new(
            "192.0.2.1".parse().unwrap(),
            40000,
            "198.51.100.10".parse().unwrap(),
            80,
            6,
        );
        assert_eq!(k.hash(), k.hash());
        assert_eq!(k.hash(), GOLDEN);
    }
    const GOLDEN: u64 = 0x544d_a994_b826_2456;

    #[test]
    fn keyed_hash_is_the_fixed_hash_seeded_by_the_secret() {
        let k = FlowKey::new(
            "192.0.2.1".parse().unwrap(),
            40000,
            "198.51.100.10".parse().unwrap(),
            80,
            6,
        );
        assert_ne!(k.keyed_hash(FlowSecret::FIXED), GOLDEN);
        assert_ne!(
            k.keyed_hash(FlowSecret::PUBLIC),
            GOLDEN,
            "IPv4 keys: two words, not five"
        );
        let v6 = FlowKey::new(
            "2001:db8::1".parse().unwrap(),
            40000,
            "2001:db8::10".parse().unwrap(),
            80,
            6,
        );
        assert_eq!(v6.keyed_hash(FlowSecret::PUBLIC), v6.hash());
        assert_ne!(k.keyed_hash(FlowSecret(1)), k.keyed_hash(FlowSecret(2)));
        assert_eq!(format!("{:?}", FlowSecret(42)), "FlowSecret(..)");
    }

    #[test]
    fn reversed_twice_is_identity() {
        let k = FlowKey::new(
            "2001:db8::1".parse().unwrap(),
            1,
            "2001:db8::2".parse().unwrap(),
            2,
            6,
        );
        assert_eq!(k.reversed().reversed(), k);
        assert!(!k.is_ipv4());
        assert_eq!(k.src_addr(), "2001:db8::1".parse::<IpAddr>().unwrap());
    }
}
