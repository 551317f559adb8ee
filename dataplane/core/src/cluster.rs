//! Token sharing between gateway instances: the datagram format, sans-IO.
//!
//! Behind ECMP a join often reaches another instance than the one that saw its connection's
//! handshake. Each instance exports its local token learns and removals (the token table's
//! journal) to its peers in batched UDP datagrams; a receiver enters them as *remote owners*
//! (see [`crate::tables::token`]). This module encodes and checks those datagrams; the daemon's
//! sync thread owns the sockets and the clock.
//!
//! # Format (big-endian)
//!
//! ```text
//! 0   magic "TZS1"                          4
//! 4   version (1)                           1
//! 5   flags (bit 0: refresh batch)          1
//! 6   record count                          2
//! 8   epoch: sender's start, Unix µs        8
//! 16  sequence number (from 1, per epoch)   8
//! 24  records ...
//!     op (1 learn, 2 remove)                1
//!     token                                 4
//!     origin time, Unix µs (0: unknown)     8
//!     backend name length n (1..=255)       1
//!     backend name                          n
//! end HMAC-SHA256 over everything before    32   (key: SHA-256 of the shared secret)
//! ```
//!
//! Backends are named on the wire (instances agree on names, not on local `BackendId`s).
//!
//! The epoch is a random number drawn by each process at start (not a clock reading).
//!
//! # Sessions: hello challenge and response ([`Hello`])
//!
//! A receiver takes data datagrams of a peer only within a *session*: a peer epoch it has
//! confirmed in its own lifetime by a challenge and response, both authenticated:
//!
//! ```text
//! 0   magic "TZH1"                                    4
//! 4   kind (1 challenge, 2 response)                  1
//! 5   zero                                            3
//! 8   nonce (challenge: fresh random; response: the challenge's)   16
//! 24  epoch (the sender of this hello's own epoch)    8
//! 32  sequence (response: the last sequence number it sent; challenge: 0)   8
//! 40  HMAC-SHA256 over everything before              32
//! ```
//!
//! The receiver sends a challenge with a fresh random nonce; the peer answers with the same nonce,
//! its epoch and its current sequence number. Only a response carrying the nonce the receiver is
//! waiting for opens the session, pinned to that epoch and starting after that sequence number
//! ([`Receiver::session`]). So:
//!
//! * a datagram captured earlier and replayed after the **receiver restarted** is refused: its
//!   epoch is either a dead process's (never confirmed again: a recorded response carries an old
//!   nonce) or the live peer's, whose session starts after the peer's current sequence number;
//! * a **peer whose clock stepped back** is accepted: epochs are compared for equality, never
//!   for order, and a restarted peer's new epoch is confirmed by the same exchange.
//!
//! # Acceptance ([`Receiver::accept`])
//!
//! A datagram is taken only if it is well formed, its HMAC (shared secret) verifies, its epoch is
//! the session's (a session receiver; [`Reject::Epoch`] otherwise), and its sequence number is
//! greater than the last accepted one: replays and reordered duplicates are refused. The sequence
//! advances only for a datagram that passed every check, so a forged or truncated one cannot push
//! it forward. A receiver without a session ([`Receiver::default`]) orders `(epoch, sequence)`
//! pairs: it only serves to authenticate a datagram before a session exists.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// The datagram magic.
pub const MAGIC: [u8; 4] = *b"TZS1";
/// The format version.
pub const VERSION: u8 = 1;
/// Fixed header length.
pub const HEADER_LEN: usize = 24;
/// HMAC tag length.
pub const TAG_LEN: usize = 32;
/// Largest datagram the encoder builds (fits an Ethernet MTU with IPv6 and UDP headers).
pub const MAX_DATAGRAM: usize = 1400;
/// Header flag: the batch re-announces live tokens (periodic refresh), it reports no new
/// learn (receivers do not measure propagation delays on it).
pub const FLAG_REFRESH: u8 = 1;
/// Longest backend name on the wire.
pub const MAX_NAME: usize = 255;

/// A record's operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// The backend owns the token.
    Learn,
    /// The backend no longer owns the token.
    Remove,
}

impl Op {
    fn code(self) -> u8 {
        match self {
            Op::Learn => 1,
            Op::Remove => 2,
        }
    }
}

/// One record of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Learn or remove.
    pub op: Op,
    /// The token.
    pub token: u32,
    /// When the sender learned it (Unix µs; 0 when unknown): the receiver's propagation delay.
    pub origin_us: u64,
    /// The backend's name.
    pub backend: &'a str,
}

impl Record<'_> {
    /// Encoded length.
    pub fn len(&self) -> usize {
        1 + 4 + 8 + 1 + self.backend.len()
    }

    /// Never true (a record has a fixed part); for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Builds one datagram: [`Batch::push`] records until it refuses, then [`Batch::finish`].
#[derive(Debug)]
pub struct Batch {
    buf: Vec<u8>,
    count: u16,
}

impl Default for Batch {
    fn default() -> Self {
        Self::new()
    }
}

impl Batch {
    /// An empty batch (allocates its buffer once).
    pub fn new() -> Self {
        let mut buf = Vec::with_capacity(MAX_DATAGRAM);
        buf.resize(HEADER_LEN, 0);
        Self { buf, count: 0 }
    }

    /// Records in the batch.
    pub fn count(&self) -> u16 {
        self.count
    }

    /// True when no record was pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Appends a record; false (nothing appended) when it would not fit, or when the name is
    /// empty or longer than [`MAX_NAME`].
    pub fn push(&mut self, r: &Record<'_>) -> bool {
        let n = r.backend.len();
        if n == 0 || n > MAX_NAME || self.count == u16::MAX {
            return false;
        }
        if self.buf.len() + r.len() + TAG_LEN > MAX_DATAGRAM {
            return false;
        }
        self.buf.push(r.op.code());
        self.buf.extend_from_slice(&r.token.to_be_bytes());
        self.buf.extend_from_slice(&r.origin_us.to_be_bytes());
        self.buf.push(n as u8);
        self.buf.extend_from_slice(r.backend.as_bytes());
        self.count += 1;
        true
    }

    /// Writes the header and the tag; returns the datagram. The batch is empty afterwards.
    pub fn finish(&mut self, key: &[u8], epoch: u64, seq: u64, flags: u8) -> Vec<u8> {
        self.buf[0..4].copy_from_slice(&MAGIC);
        self.buf[4] = VERSION;
        self.buf[5] = flags;
        self.buf[6..8].copy_from_slice(&self.count.to_be_bytes());
        self.buf[8..16].copy_from_slice(&epoch.to_be_bytes());
        self.buf[16..24].copy_from_slice(&seq.to_be_bytes());
        let tag = tag(key, &self.buf);
        let mut out = core::mem::take(&mut self.buf);
        out.extend_from_slice(&tag);
        self.buf = Vec::with_capacity(MAX_DATAGRAM);
        self.buf.resize(HEADER_LEN, 0);
        self.count = 0;
        out
    }
}

/// The HMAC keyed with SHA-256 of the secret (a fixed 32-byte key: the constructor cannot
/// fail, and secrets of any length are accepted).
fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC pads a 32-byte key with zeros to the 64-byte block: the same key, infallibly.
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(&Sha256::digest(secret));
    <HmacSha256 as hmac::digest::KeyInit>::new(&block.into())
}

fn tag(key: &[u8], data: &[u8]) -> [u8; TAG_LEN] {
    let mut m = mac(key);
    m.update(data);
    m.finalize().into_bytes().into()
}

/// Why a datagram was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Too short, wrong magic or version, record count or lengths inconsistent, bad op, name not
    /// UTF-8.
    Malformed,
    /// The HMAC does not verify (wrong secret, or altered).
    Auth,
    /// `(epoch, sequence)` not greater than the last accepted from this peer (replay, duplicate,
    /// reordering).
    Sequence,
    /// Authentic, but of another epoch than the session's (a restarted peer not yet confirmed,
    /// or a dead process's datagram replayed).
    Epoch,
}

impl Reject {
    /// The counter name.
    pub fn name(self) -> &'static str {
        match self {
            Reject::Malformed => "malformed",
            Reject::Auth => "auth",
            Reject::Sequence => "sequence",
            Reject::Epoch => "epoch",
        }
    }
}

/// The receiving side's state for one peer: the last accepted `(epoch, sequence)`, and whether
/// the epoch is pinned (a session).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Receiver {
    last: Option<(u64, u64)>,
    pinned: bool,
}

/// An accepted datagram: its header and an iterator over its records.
#[derive(Debug, Clone, Copy)]
pub struct Accepted<'a> {
    /// The sender's epoch.
    pub epoch: u64,
    /// The sequence number.
    pub seq: u64,
    /// Header flags ([`FLAG_REFRESH`]).
    pub flags: u8,
    /// Number of records.
    pub count: u16,
    records: &'a [u8],
}

impl<'a> Accepted<'a> {
    /// The records (already validated: the iterator yields exactly `count`).
    pub fn records(&self) -> Records<'a> {
        Records { rest: self.records }
    }
}

/// Iterator over the records of an [`Accepted`] datagram.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    rest: &'a [u8],
}

fn parse_record(b: &[u8]) -> Option<(Record<'_>, &[u8])> {
    let op = match *b.first()? {
        1 => Op::Learn,
        2 => Op::Remove,
        _ => return None,
    };
    let token = u32::from_be_bytes(b.get(1..5)?.try_into().ok()?);
    let origin_us = u64::from_be_bytes(b.get(5..13)?.try_into().ok()?);
    let n = usize::from(*b.get(13)?);
    if n == 0 {
        return None;
    }
    let name = core::str::from_utf8(b.get(14..14 + n)?).ok()?;
    Some((
        Record {
            op,
            token,
            origin_us,
            backend: name,
        },
        b.get(14 + n..)?,
    ))
}

impl<'a> Iterator for Records<'a> {
    type Item = Record<'a>;

    fn next(&mut self) -> Option<Record<'a>> {
        let (r, rest) = parse_record(self.rest)?;
        self.rest = rest;
        Some(r)
    }
}

impl Receiver {
    /// A session with a peer's confirmed `epoch`: only datagrams of that epoch with a sequence
    /// number above `seq` are accepted.
    pub fn session(epoch: u64, seq: u64) -> Self {
        Self {
            last: Some((epoch, seq)),
            pinned: true,
        }
    }

    /// The session's epoch (`None` without a session).
    pub fn epoch(&self) -> Option<u64> {
        self.last.filter(|_| self.pinned).map(|(e, _)| e)
    }

    /// Checks `datagram` (see the module documentation); on success the peer's sequence
    /// advances.
    pub fn accept<'a>(&mut self, key: &[u8], datagram: &'a [u8]) -> Result<Accepted<'a>, Reject> {
        if datagram.len() < HEADER_LEN + TAG_LEN || datagram.len() > 65_535 {
            return Err(Reject::Malformed);
        }
        let (body, tag) = datagram.split_at(datagram.len() - TAG_LEN);
        if body[0..4] != MAGIC || body[4] != VERSION {
            return Err(Reject::Malformed);
        }
        let mut m = mac(key);
        m.update(body);
        if m.verify_slice(tag).is_err() {
            return Err(Reject::Auth);
        }
        let count = u16::from_be_bytes([body[6], body[7]]);
        let epoch = u64::from_be_bytes(body[8..16].try_into().map_err(|_| Reject::Malformed)?);
        let seq = u64::from_be_bytes(body[16..24].try_into().map_err(|_| Reject::Malformed)?);
        let records = &body[HEADER_LEN..];
        // Every record must parse and exactly fill the body.
        let mut rest = records;
        for _ in 0..count {
            match parse_record(rest) {
                Some((_, r)) => rest = r,
                None => return Err(Reject::Malformed),
            }
        }
        if !rest.is_empty() {
            return Err(Reject::Malformed);
        }
        if self.pinned && self.last.is_some_and(|(e, _)| e != epoch) {
            return Err(Reject::Epoch);
        }
        if self.last.is_some_and(|last| (epoch, seq) <= last) {
            return Err(Reject::Sequence);
        }
        self.last = Some((epoch, seq));
        Ok(Accepted {
            epoch,
            seq,
            flags: body[5],
            count,
            records,
        })
    }

    /// The last accepted `(epoch, sequence)`.
    pub fn last(&self) -> Option<(u64, u64)> {
        self.last
    }
}

/// The hello magic.
pub const HELLO_MAGIC: [u8; 4] = *b"TZH1";
/// A hello's length.
pub const HELLO_LEN: usize = 40 + TAG_LEN;

/// A session hello (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hello {
    /// "Tell me your epoch": a fresh nonce, and the challenger's own epoch (so that the peer
    /// can tell whether it must confirm the challenger's epoch too).
    Challenge {
        /// Fresh random bytes.
        nonce: [u8; 16],
        /// The challenger's epoch.
        epoch: u64,
    },
    /// The answer: the challenge's nonce, the responder's epoch and the last sequence number it
    /// sent.
    Response {
        /// The challenge's nonce.
        nonce: [u8; 16],
        /// The responder's epoch.
        epoch: u64,
        /// The last sequence number the responder sent.
        seq: u64,
    },
}

impl Hello {
    /// Whether `datagram` is a hello (by its magic; it may still be refused by [`Hello::parse`]).
    pub fn is_hello(datagram: &[u8]) -> bool {
        datagram.get(0..4) == Some(&HELLO_MAGIC[..])
    }

    /// Encodes and signs.
    pub fn encode(&self, key: &[u8]) -> [u8; HELLO_LEN] {
        let (kind, nonce, epoch, seq) = match *self {
            Hello::Challenge { nonce, epoch } => (1u8, nonce, epoch, 0u64),
            Hello::Response { nonce, epoch, seq } => (2u8, nonce, epoch, seq),
        };
        let mut b = [0u8; HELLO_LEN];
        b[0..4].copy_from_slice(&HELLO_MAGIC);
        b[4] = kind;
        b[8..24].copy_from_slice(&nonce);
        b[24..32].copy_from_slice(&epoch.to_be_bytes());
        b[32..40].copy_from_slice(&seq.to_be_bytes());
        let t = tag(key, &b[..40]);
        b[40..].copy_from_slice(&t);
        b
    }

    /// Checks and decodes a hello.
    pub fn parse(key: &[u8], datagram: &[u8]) -> Result<Self, Reject> {
        if datagram.len() != HELLO_LEN || datagram[0..4] != HELLO_MAGIC || datagram[5..8] != [0; 3]
        {
            return Err(Reject::Malformed);
        }
        let mut m = mac(key);
        m.update(&datagram[..40]);
        if m.verify_slice(&datagram[40..]).is_err() {
            return Err(Reject::Auth);
        }
        let mut nonce = [0u8; 16];
        nonce.copy_from_slice(&datagram[8..24]);
        let word = |r: core::ops::Range<usize>| {
            datagram
                .get(r)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or(Reject::Malformed)
        };
        let (epoch, seq) = (word(24..32)?, word(32..40)?);
        match datagram[4] {
            1 if seq == 0 => Ok(Hello::Challenge { nonce, epoch }),
            2 => Ok(Hello::Response { nonce, epoch, seq }),
            _ => Err(Reject::Malformed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"a shared secret";

    fn rec(op: Op, token: u32, name: &str) -> Record<'_> {
        Record {
            op,
            token,
            origin_us: 1_700_000_000_000_000 + u64::from(token),
            backend: name,
        }
    }

    fn datagram(epoch: u64, seq: u64, recs: &[Record<'_>]) -> Vec<u8> {
        let mut b = Batch::new();
        for r in recs {
            assert!(b.push(r));
        }
        b.finish(KEY, epoch, seq, 0)
    }

    #[test]
    fn round_trip() {
        let recs = [
            rec(Op::Learn, 0x7357_966a, "srv1"),
            rec(Op::Remove, 1, "srv-two"),
            rec(Op::Learn, u32::MAX, "ü"),
        ];
        let d = datagram(5, 1, &recs);
        let mut rx = Receiver::default();
        let a = rx.accept(KEY, &d).unwrap();
        assert_eq!((a.epoch, a.seq, a.count), (5, 1, 3));
        assert_eq!(a.records().collect::<Vec<_>>(), recs);
        assert_eq!(rx.last(), Some((5, 1)));
    }

    #[test]
    fn auth_rejection() {
        let d = datagram(1, 1, &[rec(Op::Learn, 9, "srv1")]);
        let mut rx = Receiver::default();
        assert_eq!(rx.accept(b"another secret", &d).unwrap_err(), Reject::Auth);
        // Every single-bit change of the body or the tag fails authentication (or the format).
        for i in 0..d.len() {
            for bit in 0..8 {
                let mut x = d.clone();
                x[i] ^= 1 << bit;
                let e = rx.accept(KEY, &x).unwrap_err();
                assert!(
                    matches!(e, Reject::Auth | Reject::Malformed),
                    "{i}/{bit}: {e:?}"
                );
            }
        }
        assert_eq!(rx.last(), None, "nothing refused moves the sequence");
        assert!(rx.accept(KEY, &d).is_ok());
    }

    #[test]
    fn sequence_rejection_and_restart() {
        let mut rx = Receiver::default();
        let d1 = datagram(10, 1, &[rec(Op::Learn, 1, "a")]);
        let d2 = datagram(10, 2, &[rec(Op::Learn, 2, "a")]);
        let d5 = datagram(10, 5, &[]);
        assert!(rx.accept(KEY, &d2).is_ok());
        assert_eq!(rx.accept(KEY, &d2).unwrap_err(), Reject::Sequence, "replay");
        assert_eq!(rx.accept(KEY, &d1).unwrap_err(), Reject::Sequence, "older");
        assert!(rx.accept(KEY, &d5).is_ok(), "gaps (losses) are fine");
        // A restarted sender: a later epoch, sequence from 1 again.
        let r1 = datagram(11, 1, &[rec(Op::Learn, 3, "a")]);
        assert!(rx.accept(KEY, &r1).is_ok());
        assert_eq!(
            rx.accept(KEY, &d5).unwrap_err(),
            Reject::Sequence,
            "old epoch replayed"
        );
        assert_eq!(rx.last(), Some((11, 1)));
    }

    #[test]
    fn hellos_round_trip_and_are_authenticated() {
        let c = Hello::Challenge {
            nonce: [7; 16],
            epoch: 0xdead_beef,
        };
        let r = Hello::Response {
            nonce: [7; 16],
            epoch: 42,
            seq: 9,
        };
        for h in [c, r] {
            let b = h.encode(KEY);
            assert!(Hello::is_hello(&b));
            assert_eq!(Hello::parse(KEY, &b), Ok(h));
            assert_eq!(Hello::parse(b"other", &b), Err(Reject::Auth));
            for n in 0..b.len() {
                assert!(Hello::parse(KEY, &b[..n]).is_err());
            }
            for i in 0..b.len() {
                let mut x = b;
                x[i] ^= 1;
                assert!(Hello::parse(KEY, &x).is_err(), "{i}");
            }
        }
        assert!(!Hello::is_hello(&datagram(1, 1, &[])));
    }

    /// A session is pinned to the confirmed epoch and starts after the confirmed sequence: a
    /// datagram captured before the receiver restarted (same live epoch, old sequence) or of a
    /// dead epoch is refused; a new epoch (a restarted peer, whatever its clock says) is taken
    /// once confirmed.
    #[test]
    fn sessions_pin_the_epoch_and_start_after_the_confirmed_sequence() {
        let old = datagram(77, 3, &[rec(Op::Learn, 1, "a")]);
        let dead = datagram(u64::MAX, 50, &[rec(Op::Learn, 2, "a")]);
        // The receiver restarted; the peer (epoch 77) had sent up to 5 when it answered.
        let mut rx = Receiver::session(77, 5);
        assert_eq!(rx.epoch(), Some(77));
        assert_eq!(rx.accept(KEY, &old).unwrap_err(), Reject::Sequence);
        assert_eq!(rx.accept(KEY, &dead).unwrap_err(), Reject::Epoch);
        assert!(rx.accept(KEY, &datagram(77, 6, &[])).is_ok());
        // The peer restarted with a smaller epoch (random; or a clock stepped back): refused
        // until confirmed, then taken.
        let newer = datagram(3, 1, &[rec(Op::Learn, 3, "a")]);
        assert_eq!(rx.accept(KEY, &newer).unwrap_err(), Reject::Epoch);
        let mut rx = Receiver::session(3, 0);
        assert!(rx.accept(KEY, &newer).is_ok());
        assert_eq!(rx.accept(KEY, &old).unwrap_err(), Reject::Epoch);
        // Authentication comes first: a forged datagram is Auth, not Epoch.
        assert_eq!(rx.accept(b"wrong", &dead).unwrap_err(), Reject::Auth);
    }

    #[test]
    fn malformed_inputs_are_refused_without_panic() {
        let mut rx = Receiver::default();
        let good = datagram(1, 1, &[rec(Op::Learn, 1, "srv1"), rec(Op::Remove, 2, "x")]);
        // Every truncation.
        for n in 0..good.len() {
            assert!(rx.accept(KEY, &good[..n]).is_err(), "{n}");
        }
        // Validly signed but inconsistent bodies: a count too high, a bad op, an empty name,
        // trailing bytes, bad UTF-8.
        let sign = |mut body: Vec<u8>| {
            let t = tag(KEY, &body);
            body.extend_from_slice(&t);
            body
        };
        let body = good[..good.len() - TAG_LEN].to_vec();
        let mut c = body.clone();
        c[7] = 3;
        assert_eq!(rx.accept(KEY, &sign(c)).unwrap_err(), Reject::Malformed);
        let mut c = body.clone();
        c[HEADER_LEN] = 7;
        assert_eq!(rx.accept(KEY, &sign(c)).unwrap_err(), Reject::Malformed);
        let mut c = body.clone();
        c.push(0);
        assert_eq!(rx.accept(KEY, &sign(c)).unwrap_err(), Reject::Malformed);
        let mut c = body.clone();
        c[HEADER_LEN + 13] = 0;
        assert_eq!(rx.accept(KEY, &sign(c)).unwrap_err(), Reject::Malformed);
        let mut c = body.clone();
        c[HEADER_LEN + 14] = 0xff;
        assert_eq!(rx.accept(KEY, &sign(c)).unwrap_err(), Reject::Malformed);
        let mut c = body.clone();
        c[4] = 2;
        assert_eq!(rx.accept(KEY, &sign(c)).unwrap_err(), Reject::Malformed);
        assert_eq!(rx.last(), None);
        assert!(rx.accept(KEY, &good).is_ok());
    }

    #[test]
    fn batch_fills_to_the_datagram_limit() {
        let mut b = Batch::new();
        let name = "backend-name-0123456789";
        let mut n = 0;
        while b.push(&rec(Op::Learn, n, name)) {
            n += 1;
        }
        let r = rec(Op::Learn, 0, name);
        assert_eq!(
            n as usize,
            (MAX_DATAGRAM - HEADER_LEN - TAG_LEN) / r.len(),
            "as many as fit"
        );
        let d = b.finish(KEY, 1, 1, FLAG_REFRESH);
        assert!(d.len() <= MAX_DATAGRAM);
        assert!(b.is_empty());
        let long = "x".repeat(256);
        assert!(!b.push(&rec(Op::Learn, 1, &long)));
        assert!(!b.push(&rec(Op::Learn, 1, "")));
        let mut rx = Receiver::default();
        let a = rx.accept(KEY, &d).unwrap();
        assert_eq!(a.records().count(), n as usize);
        assert_eq!(a.flags, FLAG_REFRESH);
    }
}
