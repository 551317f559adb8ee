//! MPTCP key material: key -> token and IDSN, and the HMACs of MP_JOIN and ADD_ADDR
//! (RFC 8684 §3.1, §3.2, §3.4.1; mirrors Linux `net/mptcp/crypto.c` and `options.c`).
//!
//! ```text
//!  key (64 bits, sent in clear in MP_CAPABLE)
//!    |
//!    v  SHA-256 over the 8 bytes of the key in network byte order
//!  +--------------+-------------------------------+------------------------+
//!  | bytes 0..4   |            4..24              |         24..32         |
//!  | token (BE)   |           (unused)            |        IDSN (BE)       |
//!  +--------------+-------------------------------+------------------------+
//!
//!  HMAC-SHA256(key = be64(key_x) || be64(key_y), msg)
//!    MP_JOIN SYN/ACK:  leftmost  64 bits, msg = be32(nonce_x) || be32(nonce_y)
//!    MP_JOIN ACK:      leftmost 160 bits, same msg
//!    ADD_ADDR:         rightmost 64 bits, msg = address_id || address || be16(port or 0)
//! ```
//!
//! In every HMAC the first key and the first nonce are the **sender's** (RFC 8684 §3.2:
//! "HMAC-A = HMAC(Key=(Key-A+Key-B), Msg=(R-A+R-B))"), so a receiver verifies with the peer's
//! key first.
//!
//! ## Cost
//!
//! The token is one SHA-256 compression (8-byte message, one padded block). `sha2` 0.10 picks its
//! backend at run time: on x86-64 with the SHA extensions (`sha_ni`, present on the reference
//! machine) it runs the `sha256rnds2` instructions, otherwise a portable implementation; the
//! choice is one cached CPUID check per call. An HMAC here is four compressions (inner and outer
//! key blocks, inner and outer message blocks). Figures are in `benches/benches/crypto.rs`.

use core::net::IpAddr;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// SHA-256 block size: keys up to this length are used as they are (zero-padded) by HMAC.
const BLOCK_LEN: usize = 64;

/// Token and IDSN of a key (Linux `mptcp_crypto_key_sha`): SHA-256 of the key in network byte
/// order; the token is the first 32 bits, the IDSN the last 64 bits, both big-endian.
///
/// RFC 8684 §3.1: "The token MUST be a truncated (most significant 32 bits) SHA-256 hash of
/// the key", and "the least significant 64 bits of the SHA-256 hash of the key MUST be used as
/// the IDSN".
#[inline]
pub fn key_sha(key: u64) -> (u32, u64) {
    let digest = Sha256::digest(key.to_be_bytes());
    let token = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    let mut idsn = [0u8; 8];
    idsn.copy_from_slice(&digest[24..32]);
    (token, u64::from_be_bytes(idsn))
}

/// The 32-bit token that names a connection in MP_JOIN, derived from the receiver's key.
#[inline]
pub fn token_from_key(key: u64) -> u32 {
    key_sha(key).0
}

/// The initial data sequence number of the sender of `key`.
#[inline]
pub fn idsn_from_key(key: u64) -> u64 {
    key_sha(key).1
}

/// HMAC-SHA256 (RFC 2104) of `msg` under `key`; total for every key length.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    // RFC 2104 §2: a key longer than the block is hashed first; a shorter one is zero-padded
    // to the block. Doing both here lets the fixed-size (infallible) constructor be used.
    let mut block = [0u8; BLOCK_LEN];
    if key.len() <= BLOCK_LEN {
        block[..key.len()].copy_from_slice(key);
    } else {
        block[..32].copy_from_slice(&Sha256::digest(key));
    }
    let mut mac = <HmacSha256 as hmac::digest::KeyInit>::new(&block.into());
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// The MP_JOIN HMAC (RFC 8684 §3.2; Linux `mptcp_crypto_hmac_sha`): HMAC-SHA256 with key
/// `be64(key_a) || be64(key_b)` over `be32(nonce_a) || be32(nonce_b)`.
///
/// `key_a`/`nonce_a` are the sender's, `key_b`/`nonce_b` the receiver's.
#[inline]
pub fn join_hmac(key_a: u64, key_b: u64, nonce_a: u32, nonce_b: u32) -> [u8; 32] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&key_a.to_be_bytes());
    key[8..].copy_from_slice(&key_b.to_be_bytes());
    let mut msg = [0u8; 8];
    msg[..4].copy_from_slice(&nonce_a.to_be_bytes());
    msg[4..].copy_from_slice(&nonce_b.to_be_bytes());
    hmac_sha256(&key, &msg)
}

/// The truncated HMAC of an MP_JOIN SYN/ACK: the leftmost 64 bits of [`join_hmac`].
///
/// RFC 8684 §3.2: "the [SYN/ACK] contains ... the leftmost 64 bits of an HMAC".
#[inline]
pub fn join_truncated_hmac(key_a: u64, key_b: u64, nonce_a: u32, nonce_b: u32) -> u64 {
    let hmac = join_hmac(key_a, key_b, nonce_a, nonce_b);
    let mut left = [0u8; 8];
    left.copy_from_slice(&hmac[..8]);
    u64::from_be_bytes(left)
}

/// The HMAC of an MP_JOIN third ACK: the leftmost 160 bits of [`join_hmac`].
#[inline]
pub fn join_ack_hmac(key_a: u64, key_b: u64, nonce_a: u32, nonce_b: u32) -> [u8; 20] {
    let hmac = join_hmac(key_a, key_b, nonce_a, nonce_b);
    let mut left = [0u8; 20];
    left.copy_from_slice(&hmac[..20]);
    left
}

/// The truncated HMAC of an ADD_ADDR (RFC 8684 §3.4.1; Linux `add_addr_generate_hmac`).
///
/// Key `be64(key_a) || be64(key_b)` (sender's key first); message `address_id`, the 4 or 16
/// address bytes, then the port as two big-endian bytes, **zero when the option carries no
/// port** (RFC 8684 §3.4.1: "If the port is not present in the ADD_ADDR option, the HMAC message
/// will include 2 octets of value zero"). The result is the **rightmost** 64 bits (Linux reads
/// `hmac[SHA256_DIGEST_SIZE - sizeof(u64)..]`).
pub fn add_addr_hmac(
    key_a: u64,
    key_b: u64,
    address_id: u8,
    addr: &IpAddr,
    port: Option<u16>,
) -> u64 {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&key_a.to_be_bytes());
    key[8..].copy_from_slice(&key_b.to_be_bytes());
    // Linux: u8 msg[19]: id (1) + IPv6 address (16) + port (2).
    let mut msg = [0u8; 19];
    msg[0] = address_id;
    let mut len = 1;
    match addr {
        IpAddr::V4(a) => {
            msg[len..len + 4].copy_from_slice(&a.octets());
            len += 4;
        }
        IpAddr::V6(a) => {
            msg[len..len + 16].copy_from_slice(&a.octets());
            len += 16;
        }
    }
    msg[len..len + 2].copy_from_slice(&port.unwrap_or(0).to_be_bytes());
    len += 2;
    let hmac = hmac_sha256(&key, &msg[..len]);
    let mut right = [0u8; 8];
    right.copy_from_slice(&hmac[24..32]);
    u64::from_be_bytes(right)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{Ipv4Addr, Ipv6Addr};
    use proptest::prelude::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn key_sha_known_answers() {
        // Source: computed independently with Python hashlib.sha256(struct.pack(">Q", key)),
        // and listed in the project's reliability notes §2.1.
        let vectors = [
            (
                0x0102_0304_0506_0708u64,
                0x6684_0ddau32,
                0xf5a1_01d3_d29d_6f72u64,
            ),
            (0xa5a5_a5a5_a5a5_a5a5, 0xed0b_4dd1, 0x97bb_07fd_8dc3_ba99),
            (0, 0xaf55_70f5, 0xe5b2_328d_e0e8_3dfc),
        ];
        for (key, token, idsn) in vectors {
            assert_eq!(key_sha(key), (token, idsn), "key {key:#x}");
            assert_eq!(token_from_key(key), token);
            assert_eq!(idsn_from_key(key), idsn);
        }
    }

    #[test]
    fn colliding_tokens() {
        // Source: reliability notes §2.3 (birthday search); re-checked with Python hashlib.
        // Two keys, one token: the pair the token table's collision tests use.
        assert_eq!(token_from_key(0xc66f), 0x7357_966a);
        assert_eq!(token_from_key(0xe658), 0x7357_966a);
        assert_ne!(idsn_from_key(0xc66f), idsn_from_key(0xe658));
    }

    #[test]
    fn linux_kunit_vectors() {
        // Source: Linux net/mptcp/crypto_test.c. The kernel test reinterprets the ASCII strings
        // as big-endian integers (key1 = be64 of key[0..8], key2 = be64 of key[8..16], nonces
        // from msg[0..4] and msg[4..8]), so the HMAC input is the ASCII bytes themselves.
        let vectors: [(&[u8; 16], &[u8; 8], &str); 3] = [
            (
                b"0b0b0b0b0b0b0b0b",
                b"48692054",
                "8385e24fb4235ac37556b6b886db106284a1da671699f46db1f235ec622dcafa",
            ),
            (
                b"aaaaaaaaaaaaaaaa",
                b"dddddddd",
                "2c5e219164ff1dca1c4a92318d847bb6b9d44492984e1eb71aff9022f71046e9",
            ),
            (
                b"0102030405060708",
                b"cdcdcdcd",
                "e73b9ba9969969cefb04aa0d6df18ec2fcc075b6f23b4d8c4da736a5dbbc6e7d",
            ),
        ];
        for (key, msg, expected) in vectors {
            assert_eq!(hex(&hmac_sha256(key, msg)), expected);
            let be64 = |b: &[u8]| u64::from_be_bytes(b.try_into().unwrap());
            let be32 = |b: &[u8]| u32::from_be_bytes(b.try_into().unwrap());
            let hmac = join_hmac(
                be64(&key[..8]),
                be64(&key[8..]),
                be32(&msg[..4]),
                be32(&msg[4..]),
            );
            assert_eq!(hex(&hmac), expected);
        }
    }

    #[test]
    fn join_hmac_known_answer() {
        // Source: computed with Python hmac.new(struct.pack(">QQ", a, b),
        // struct.pack(">II", na, nb), "sha256").
        let (a, b) = (0x0102_0304_0506_0708, 0x1112_1314_1516_1718);
        let (na, nb) = (0xdead_beef, 0xcafe_babe);
        assert_eq!(
            hex(&join_hmac(a, b, na, nb)),
            "07bfae417cfcfdf55eb61754e49d383a4e1b3d0f4268a90f17c1a3183958c0dc"
        );
        assert_eq!(join_truncated_hmac(a, b, na, nb), 0x07bf_ae41_7cfc_fdf5);
        assert_eq!(
            hex(&join_ack_hmac(a, b, na, nb)),
            "07bfae417cfcfdf55eb61754e49d383a4e1b3d0f"
        );
        // The responder's HMAC swaps both keys and nonces: it is a different value.
        assert_ne!(join_hmac(b, a, nb, na), join_hmac(a, b, na, nb));
    }

    #[test]
    fn add_addr_hmac_known_answers() {
        // Source: computed with Python: msg = bytes([id]) + ip_address(addr).packed +
        // struct.pack(">H", port or 0); hmac.new(be64(a) + be64(b), msg, "sha256").digest()[24:].
        let (a, b) = (0x0102_0304_0506_0708, 0x1112_1314_1516_1718);
        let v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
        assert_eq!(add_addr_hmac(a, b, 1, &v4, None), 0xdf24_410f_ac2c_3edb);
        assert_eq!(add_addr_hmac(a, b, 1, &v4, Some(0)), 0xdf24_410f_ac2c_3edb);
        assert_eq!(
            add_addr_hmac(a, b, 1, &v4, Some(8080)),
            0x68e8_377e_b37c_4afa
        );
        assert_eq!(
            add_addr_hmac(a, b, 5, &v6, Some(443)),
            0xce03_ca96_e537_e2e9
        );
        assert_eq!(add_addr_hmac(a, b, 5, &v6, None), 0xc861_db63_200c_1a82);
    }

    #[test]
    fn rfc4231_vectors() {
        // Source: RFC 4231 §4.3 (test case 2) and §4.7 (test case 6, key longer than a block).
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex(&hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    proptest! {
        #[test]
        fn hmac_matches_the_hmac_crate(
            key in proptest::collection::vec(any::<u8>(), 0..200),
            msg in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let mut mac = <HmacSha256 as Mac>::new_from_slice(&key).unwrap();
            mac.update(&msg);
            let expected: [u8; 32] = mac.finalize().into_bytes().into();
            prop_assert_eq!(hmac_sha256(&key, &msg), expected);
        }

        #[test]
        fn token_and_idsn_are_the_digest_ends(key in any::<u64>()) {
            let digest = Sha256::digest(key.to_be_bytes());
            let (token, idsn) = key_sha(key);
            prop_assert_eq!(&token.to_be_bytes()[..], &digest[..4]);
            prop_assert_eq!(&idsn.to_be_bytes()[..], &digest[24..]);
        }
    }
}
