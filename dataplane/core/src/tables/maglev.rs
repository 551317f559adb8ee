//! The Maglev new-connection table (Eisenbud et al., NSDI 2016, §3.4).
//!
//! # What it is
//!
//! A lookup table of `M` slots (`M` prime, [`DEFAULT_SIZE`] = 65537) each naming a backend. A new
//! connection goes to `slots[reduce(hash)]`, where `hash` is the fixed-seed flow hash
//! ([`crate::FlowKey::hash`]) and `reduce` is the multiply-shift reduction
//! `⌊hash · M / 2⁶⁴⌋` (one multiply, no division; it uses the high bits of the hash, which the
//! SplitMix finaliser mixes fully). The connection is then pinned by the per-worker flow table;
//! Maglev only decides *new* flows and flows the flow table has lost.
//!
//! # How it is built
//!
//! Each backend `i` has a permutation of the slots, `slot_i(j) = (offset_i + j · skip_i) mod M`,
//! with `offset_i = h₁(identity) mod M` and `skip_i = h₂(identity) mod (M − 1) + 1`; `h₁`/`h₂`
//! are [`hash_words_seeded`] with the two documented seeds [`OFFSET_SEED`] and [`SKIP_SEED`] over
//! the backend's 18-byte identity (address + port, see [`identity_words`]). Because `M` is prime
//! and `1 ≤ skip < M`, every permutation visits every slot exactly once. Backends then take
//! turns; on its turn a backend claims the first still-empty slot of its permutation (its cursor
//! only moves forward, so over the whole build each backend walks its permutation once).
//!
//! **Weights.** A backend of weight `w` takes turns at a rate proportional to `w`: every round,
//! each backend's credit grows by `w · N` (N = backends with weight > 0) and the backend takes one
//! turn per `Σw` of credit it holds (several turns in a round if `w` is above the mean weight,
//! one turn every few rounds if below). This is Katran's weighted Maglev with the threshold set to
//! the *mean* weight instead of the maximum, which keeps the number of credit checks at about `M`
//! whatever the weight spread (Katran's variant costs `M · max(w)/mean(w)` checks). With equal
//! weights every backend takes exactly one turn per round: the paper's algorithm unchanged, so
//! each backend gets `⌊M/N⌋` or `⌈M/N⌉` slots exactly. Each turn claims exactly one slot, so a
//! backend's share is its share of turns, `≈ w/Σw`. Weight-0 backends take no turns and get no
//! slots (draining); no backend with weight > 0 gives an empty table whose lookups return `None`.
//!
//! **Order independence.** Backends are sorted by identity before the turns start, so the table
//! is a function of the *set* of (identity, id, weight) triples, never of the order the control
//! plane lists them in. Identities (and ids) must be unique; duplicates are an error.
//!
//! **Speed.** The build is `O(M log M)` probes (the coupon-collector tail of the fill); it is
//! written to stay well under 1 ms at `M` = 65537: occupancy is a bitset (8 KiB, stays in L1),
//! slot arithmetic is `u32` with a conditional subtraction instead of `%`, per-backend cursors
//! live in flat vectors, and nothing is allocated per slot. The last `√M` empty slots (where probing would cost `M / empty` steps per claim) are found by a different but
//! equivalent route: a list of the remaining empty slots, each mapped back to its position in the
//! claiming backend's permutation through the modular inverse of `skip`; the backend gets the
//! empty slot of lowest position, which is exactly the slot probing would have found. Tests
//! compare the result with a straightforward implementation of the paper's pseudo-code.
//!
//! # Invariants
//!
//! * A non-empty table has exactly `size()` slots and every slot names a backend of weight > 0
//!   from the pool it was built from (no holes).
//! * Same pool (as a set) and same `M` ⇒ bit-identical table on every instance, platform and
//!   restart ([`MaglevTable::fingerprint`] checks it cheaply).
//! * `lookup` is `O(1)`, allocation-free and cannot panic.

use core::fmt;

use crate::flow::hash_words_seeded;
use crate::pool::BackendId;

/// The default table size: the prime the Maglev paper uses in production (§5.3).
pub const DEFAULT_SIZE: u32 = 65537;

/// The largest accepted table size (2²⁴; the largest prime below it is 16 777 213). 32 MiB of
/// slots; the paper's largest evaluated size is 655 373.
pub const MAX_SIZE: u32 = 1 << 24;

/// The largest number of backends one table accepts (weight-0 backends included).
pub const MAX_BACKENDS: usize = u16::MAX as usize;

/// Slots per backend below which the balance guarantee degrades: the paper chooses
/// `M > 100 · N` "to ensure at most a 1% difference in hash space assigned to backends". A smaller
/// table is accepted (only `M < N` is an error); see [`size_is_recommended`].
pub const RECOMMENDED_SLOTS_PER_BACKEND: u32 = 100;

/// Seed of `h₁`, the permutation offset (ASCII "maglevof"). Changing it reshuffles every table.
pub const OFFSET_SEED: u64 = 0x6d61_676c_6576_6f66;

/// Seed of `h₂`, the permutation skip (ASCII "maglevsk"). Changing it reshuffles every table.
pub const SKIP_SEED: u64 = 0x6d61_676c_6576_736b;

/// Seed of [`MaglevTable::fingerprint`] (ASCII "maglevfp").
pub const FINGERPRINT_SEED: u64 = 0x6d61_676c_6576_6670;

/// The build switches from probing to the empty-slot list (see the module documentation) when
/// `max(√M, TAIL_SLOTS_MIN)` slots are left empty. Affects build speed only, never the result.
pub const TAIL_SLOTS_MIN: u32 = 16;

/// One backend as Maglev sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MaglevBackend {
    /// The id the table's slots name.
    pub id: BackendId,
    /// 16-byte address (IPv4-mapped for IPv4) followed by the port, big-endian: what the
    /// permutation is derived from, so it must be stable for the backend's life (see
    /// [`identity_of`]).
    pub identity: [u8; 18],
    /// Relative weight; 0 means "no new connections" (the backend gets no slots).
    pub weight: u32,
}

impl MaglevBackend {
    /// A backend from its address and port.
    pub fn new(id: BackendId, addr: core::net::IpAddr, port: u16, weight: u32) -> Self {
        Self {
            id,
            identity: identity_of(addr, port),
            weight,
        }
    }
}

/// The 18-byte identity of a backend: the address in 16-byte form (IPv4-mapped for IPv4)
/// followed by the port in network byte order.
pub fn identity_of(addr: core::net::IpAddr, port: u16) -> [u8; 18] {
    let mut id = [0u8; 18];
    id[..16].copy_from_slice(&crate::flow::addr_bytes(addr));
    id[16..].copy_from_slice(&port.to_be_bytes());
    id
}

/// The words an identity is hashed as: bytes 0..8 and 8..16 as little-endian `u64`s, then bytes
/// 16..18 (the port) zero-extended, little-endian.
#[inline]
pub fn identity_words(identity: &[u8; 18]) -> [u64; 3] {
    let mut a = [0u8; 8];
    let mut b = [0u8; 8];
    a.copy_from_slice(&identity[..8]);
    b.copy_from_slice(&identity[8..16]);
    let c = u64::from(identity[16]) | (u64::from(identity[17]) << 8);
    [u64::from_le_bytes(a), u64::from_le_bytes(b), c]
}

/// Why a table could not be built. The previous table (if any) should keep serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaglevError {
    /// The size is not a prime number (the permutations would not cover the table).
    SizeNotPrime(u32),
    /// The size exceeds [`MAX_SIZE`].
    SizeTooLarge(u32),
    /// Fewer slots than backends of weight > 0: some backend would get no slot.
    SizeTooSmall {
        /// Requested size.
        size: u32,
        /// Backends with weight > 0.
        backends: usize,
    },
    /// More than [`MAX_BACKENDS`] backends.
    TooManyBackends(usize),
    /// Two backends share an identity (address + port).
    DuplicateIdentity {
        /// One of them.
        first: BackendId,
        /// The other.
        second: BackendId,
    },
    /// Two backends share an id.
    DuplicateId(BackendId),
}

impl fmt::Display for MaglevError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::SizeNotPrime(s) => write!(f, "maglev table size {s} is not prime"),
            Self::SizeTooLarge(s) => write!(f, "maglev table size {s} exceeds {MAX_SIZE}"),
            Self::SizeTooSmall { size, backends } => {
                write!(
                    f,
                    "maglev table size {size} is smaller than the {backends} backends"
                )
            }
            Self::TooManyBackends(n) => write!(f, "{n} backends exceed the maximum {MAX_BACKENDS}"),
            Self::DuplicateIdentity { first, second } => write!(
                f,
                "backends {} and {} have the same address and port",
                first.0, second.0
            ),
            Self::DuplicateId(id) => write!(f, "backend id {} appears twice", id.0),
        }
    }
}

impl std::error::Error for MaglevError {}

/// True when `size` slots give `backends` backends the paper's ≤ 1 % balance guarantee
/// (`size ≥ 100 · backends`). Meant for a control-plane warning; [`MaglevTable::build`] only
/// rejects `size < backends`.
pub fn size_is_recommended(size: u32, backends: usize) -> bool {
    u64::from(size) >= u64::from(RECOMMENDED_SLOTS_PER_BACKEND).saturating_mul(backends as u64)
}

/// A built Maglev table: immutable, shared read-only by all workers inside a pool snapshot.
#[derive(Clone, PartialEq, Eq)]
pub struct MaglevTable {
    /// The requested size (kept for an empty table too).
    size: u32,
    /// `size` entries, or none when no backend has weight > 0.
    slots: Box<[BackendId]>,
}

impl fmt::Debug for MaglevTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MaglevTable")
            .field("size", &self.size)
            .field("empty", &self.slots.is_empty())
            .field("fingerprint", &format_args!("{:#018x}", self.fingerprint()))
            .finish()
    }
}

impl MaglevTable {
    /// Builds the table for `backends` with `size` slots (see the module documentation).
    ///
    /// The result depends only on the set of backends, not on their order. Weight-0 backends
    /// get no slot; with no backend of weight > 0 the table is empty and every lookup misses.
    pub fn build(backends: &[MaglevBackend], size: u32) -> Result<Self, MaglevError> {
        if size > MAX_SIZE {
            return Err(MaglevError::SizeTooLarge(size));
        }
        if !is_prime(size) {
            return Err(MaglevError::SizeNotPrime(size));
        }
        if backends.len() > MAX_BACKENDS {
            return Err(MaglevError::TooManyBackends(backends.len()));
        }

        let mut ids: Vec<BackendId> = backends.iter().map(|b| b.id).collect();
        ids.sort_unstable();
        if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
            return Err(MaglevError::DuplicateId(w[0]));
        }
        let mut order: Vec<&MaglevBackend> = backends.iter().collect();
        order.sort_unstable_by_key(|b| b.identity);
        if let Some(w) = order.windows(2).find(|w| w[0].identity == w[1].identity) {
            return Err(MaglevError::DuplicateIdentity {
                first: w[0].id,
                second: w[1].id,
            });
        }
        order.retain(|b| b.weight > 0);
        if order.is_empty() {
            return Ok(Self {
                size,
                slots: Box::new([]),
            });
        }
        if (size as usize) < order.len() {
            return Err(MaglevError::SizeTooSmall {
                size,
                backends: order.len(),
            });
        }
        Ok(Self {
            size,
            slots: populate(&order, size),
        })
    }

    /// The backend for a new connection whose flow hash is `hash`; `None` when the table is
    /// empty. `O(1)`: one multiply, one load.
    #[inline]
    pub fn lookup(&self, hash: u64) -> Option<BackendId> {
        // ⌊hash · len / 2⁶⁴⌋ < len for every hash; len = 0 (empty) gives index 0, which `get`
        // turns into None: the bounds check is the empty check.
        let idx = ((u128::from(hash) * self.slots.len() as u128) >> 64) as usize;
        self.slots.get(idx).copied()
    }

    /// The number of slots `M` requested at build time.
    #[inline]
    pub fn size(&self) -> u32 {
        self.size
    }

    /// The slots (empty for an empty table).
    #[inline]
    pub fn slots(&self) -> &[BackendId] {
        &self.slots
    }

    /// True when no backend had weight > 0: every lookup returns `None`.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The number of slot positions whose backend differs between the two tables; positions
    /// present in only one table (different sizes, or one table empty) all count as different.
    pub fn diff(&self, other: &Self) -> usize {
        let common = self
            .slots
            .iter()
            .zip(other.slots.iter())
            .filter(|(a, b)| a != b)
            .count();
        common + self.slots.len().abs_diff(other.slots.len())
    }

    /// How many slots each backend holds, as `(id, count)` sorted by id.
    pub fn slot_counts(&self) -> Vec<(BackendId, usize)> {
        let mut counts: Vec<(BackendId, usize)> = Vec::new();
        let mut sorted: Vec<BackendId> = self.slots.to_vec();
        sorted.sort_unstable();
        for id in sorted {
            match counts.last_mut() {
                Some((last, n)) if *last == id => *n += 1,
                _ => counts.push((id, 1)),
            }
        }
        counts
    }

    /// A fixed-seed 64-bit hash of the size and the slot array ([`FINGERPRINT_SEED`]): equal
    /// tables have equal fingerprints on every instance and platform, and different tables have
    /// different ones except with probability ≈ 2⁻⁶⁴. For "identical across instances" checks
    /// and the control plane's reports.
    pub fn fingerprint(&self) -> u64 {
        let mut h = hash_words_seeded(
            FINGERPRINT_SEED,
            &[u64::from(self.size), self.slots.len() as u64],
        );
        for chunk in self.slots.chunks(16) {
            let mut words = [0u64; 4];
            for (i, id) in chunk.iter().enumerate() {
                words[i / 4] |= u64::from(id.0) << ((i % 4) * 16);
            }
            h = hash_words_seeded(h, &words);
        }
        h
    }
}

/// `a + b` reduced into `[0, m)` for `a, b < m` (no division).
#[inline(always)]
fn add_mod(a: u32, b: u32, m: u32) -> u32 {
    let s = a + b; // < 2m ≤ 2²⁵: no overflow
    if s >= m {
        s - m
    } else {
        s
    }
}

/// 1 when slot `c` is free, else 0.
#[inline(always)]
fn free_bit(taken: &[u64], c: u32) -> u32 {
    match taken.get((c >> 6) as usize) {
        Some(w) => ((!w >> (c & 63)) & 1) as u32,
        None => 0,
    }
}

/// Per-backend build state, in identity order (one 32-byte record, one cache line per turn).
#[derive(Clone, Copy)]
struct Cursor {
    /// The slot at the backend's cursor: the next candidate.
    next: u32,
    /// `skip`, `2·skip`, `3·skip`, `4·skip`, all mod M: four candidates per probing step.
    step: [u32; 4],
    /// The permutation start (for the position computation of the tail).
    offset: u32,
    /// `skip⁻¹ mod M`, computed when the backend first claims in the tail (0 = not yet).
    inv: u32,
    /// The backend the slots get (kept here so a turn touches one cache line).
    id: BackendId,
}

impl Cursor {
    /// Claims the first free slot at or after the cursor and advances the cursor past it.
    /// Precondition: at least one slot is free (then the loop ends within M/4 + 1 steps, since
    /// the permutation visits every slot).
    #[inline(always)]
    fn claim(&mut self, taken: &mut [u64], m: u32) -> u32 {
        let mut c = self.next;
        if free_bit(taken, c) == 0 {
            // Four candidates per step: the four slot computations are independent, so the
            // loop is not bound by the add/compare latency chain, and the exit branch is taken
            // once per claim.
            let [s1, s2, s3, s4] = self.step;
            loop {
                let c1 = add_mod(c, s1, m);
                let c2 = add_mod(c, s2, m);
                let c3 = add_mod(c, s3, m);
                let c4 = add_mod(c, s4, m);
                let f = free_bit(taken, c1)
                    | free_bit(taken, c2) << 1
                    | free_bit(taken, c3) << 2
                    | free_bit(taken, c4) << 3;
                if f != 0 {
                    c = [c1, c2, c3, c4][(f.trailing_zeros() & 3) as usize];
                    break;
                }
                c = c4;
            }
        }
        if let Some(w) = taken.get_mut((c >> 6) as usize) {
            *w |= 1u64 << (c & 63);
        }
        self.next = add_mod(c, self.step[0], m);
        c
    }
}

/// The weighted turn schedule (see the module documentation): every round each backend's
/// credit grows by `w·N`, and it takes one turn per `Σw` of credit.
struct Turns {
    incr: Vec<u64>,
    threshold: u64,
    credit: Vec<u64>,
}

/// Fills the table. `order`: backends of weight > 0 sorted by identity, `1 ≤ len ≤ m`;
/// `m` prime, `≤ MAX_SIZE`.
fn populate(order: &[&MaglevBackend], m: u32) -> Box<[BackendId]> {
    let n = order.len();
    let mut cur: Vec<Cursor> = order
        .iter()
        .map(|b| {
            let (offset, skip) = permutation(&b.identity, m);
            let s2 = add_mod(skip, skip, m);
            let s3 = add_mod(s2, skip, m);
            let s4 = add_mod(s3, skip, m);
            Cursor {
                next: offset,
                step: [skip, s2, s3, s4],
                offset,
                inv: 0,
                id: b.id,
            }
        })
        .collect();
    let mut turns = Turns {
        incr: order
            .iter()
            .map(|b| u64::from(b.weight) * n as u64)
            .collect(),
        // ≤ 65535 · (2³² − 1) < 2⁴⁸: no overflow, nor in `credit` (< threshold + incr).
        threshold: order.iter().map(|b| u64::from(b.weight)).sum(),
        credit: vec![0u64; n],
    };

    let mut slots = vec![BackendId(0); m as usize].into_boxed_slice();
    let mut taken = vec![0u64; (m as usize).div_ceil(64)];
    let mut empty = m;
    // Switch to the tail when probing would cost more than scanning the empty slots: about
    // √M empty slots (M/E probes per claim against E cheap multiplications).
    let tail_at = ((f64::from(m)).sqrt() as u32).max(TAIL_SLOTS_MIN).min(m);
    // Invariant: every slot at a position before a backend's cursor is taken.
    if order.iter().all(|b| b.weight == order[0].weight) {
        // Equal weights: exactly one turn per backend per round (the paper's algorithm); the
        // credit bookkeeping below would give the same turns.
        loop {
            for (i, c) in cur.iter_mut().enumerate() {
                let s = c.claim(&mut taken, m);
                if let Some(slot) = slots.get_mut(s as usize) {
                    *slot = c.id;
                }
                empty -= 1;
                if empty <= tail_at {
                    // Resume at the next backend (this one's single turn is used).
                    turns.credit[i] = 0;
                    let next = if i + 1 == n { 0 } else { i + 1 };
                    if empty > 0 {
                        tail(m, &mut cur, &mut turns, next, false, &taken, &mut slots);
                    }
                    return slots;
                }
            }
        }
    }
    loop {
        for i in 0..n {
            turns.credit[i] += turns.incr[i];
            while turns.credit[i] >= turns.threshold {
                turns.credit[i] -= turns.threshold;
                let c = &mut cur[i];
                let s = c.claim(&mut taken, m);
                if let Some(slot) = slots.get_mut(s as usize) {
                    *slot = c.id;
                }
                empty -= 1;
                if empty <= tail_at {
                    // Backend i may have turns left in this round: the tail resumes there.
                    if empty > 0 {
                        tail(m, &mut cur, &mut turns, i, true, &taken, &mut slots);
                    }
                    return slots;
                }
            }
        }
    }
}

/// Phase 2 of [`populate`]: the same turns, but each claim scans the (few) remaining empty
/// slots and takes the one at the lowest position of the backend's permutation, which is the
/// slot probing from the cursor would reach first (every position before the cursor is taken).
///
/// Resumes at backend `resume` of the current round: in the middle of its turns (`mid_turn`,
/// its credit already added) or before them.
fn tail(
    m: u32,
    cur: &mut [Cursor],
    turns: &mut Turns,
    resume: usize,
    mid_turn: bool,
    taken: &[u64],
    slots: &mut [BackendId],
) {
    let n = cur.len();
    let mut free: Vec<u32> = Vec::new();
    for (w, &bits) in taken.iter().enumerate() {
        let mut holes = !bits;
        while holes != 0 {
            let s = (w as u32) * 64 + holes.trailing_zeros();
            if s < m {
                free.push(s);
            }
            holes &= holes - 1;
        }
    }
    let m64 = u64::from(m);
    // Barrett constant: x mod m = x − ⌊x·mu/2⁶⁴⌋·m − (0 or m) for x < 2⁶⁴.
    let mu = u64::MAX / m64;
    let mut i = resume;
    let mut first = mid_turn;
    while !free.is_empty() {
        if !first {
            turns.credit[i] += turns.incr[i];
        }
        first = false;
        while turns.credit[i] >= turns.threshold && !free.is_empty() {
            turns.credit[i] -= turns.threshold;
            let c = &mut cur[i];
            if c.inv == 0 {
                c.inv = mod_inverse(c.step[0], m);
            }
            // Position of slot s in the permutation: (s − offset) · skip⁻¹ mod m.
            let neg_off = if c.offset == 0 { 0 } else { m - c.offset };
            let inv = u64::from(c.inv);
            let mut best = 0usize;
            let mut best_pos = u64::MAX;
            for (k, &s) in free.iter().enumerate() {
                let d = u64::from(add_mod(s, neg_off, m));
                let x = d * inv; // < m² < 2⁴⁸
                let q = ((u128::from(x) * u128::from(mu)) >> 64) as u64;
                let mut pos = x - q * m64;
                if pos >= m64 {
                    pos -= m64;
                }
                if pos < best_pos {
                    best_pos = pos;
                    best = k;
                }
            }
            let s = free.swap_remove(best);
            if let Some(slot) = slots.get_mut(s as usize) {
                *slot = c.id;
            }
        }
        i += 1;
        if i == n {
            i = 0;
        }
    }
}

/// Offset and skip of an identity for a table of `m` slots (`m` ≥ 2 prime).
#[inline]
fn permutation(identity: &[u8; 18], m: u32) -> (u32, u32) {
    let words = identity_words(identity);
    let offset = (hash_words_seeded(OFFSET_SEED, &words) % u64::from(m)) as u32;
    let skip = (hash_words_seeded(SKIP_SEED, &words) % u64::from(m - 1)) as u32 + 1;
    (offset, skip)
}

/// The inverse of `a` modulo the prime `m` (`1 ≤ a < m`), by the extended Euclidean algorithm.
fn mod_inverse(a: u32, m: u32) -> u32 {
    let (mut old_r, mut r) = (i64::from(a), i64::from(m));
    let (mut old_s, mut s) = (1i64, 0i64);
    while r != 0 {
        let q = old_r / r;
        (old_r, r) = (r, old_r - q * r);
        (old_s, s) = (s, old_s - q * s);
    }
    // old_r = gcd = 1 since m is prime and 0 < a < m.
    old_s.rem_euclid(i64::from(m)) as u32
}

/// Deterministic primality test for every `u32` (Miller–Rabin with bases 2, 7, 61, exact below
/// 4 759 123 141).
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    for p in [2u32, 3, 5, 7, 11, 13, 61] {
        if n.is_multiple_of(p) {
            return n == p;
        }
    }
    let n64 = u64::from(n);
    let mut d = n64 - 1;
    let mut r = 0;
    while d % 2 == 0 {
        d /= 2;
        r += 1;
    }
    'witness: for a in [2u64, 7, 61] {
        let mut x = pow_mod(a, d, n64);
        if x == 1 || x == n64 - 1 {
            continue;
        }
        for _ in 1..r {
            x = x * x % n64;
            if x == n64 - 1 {
                continue 'witness;
            }
        }
        return false;
    }
    true
}

/// `base^exp mod m` for `m < 2³²`.
fn pow_mod(mut base: u64, mut exp: u64, m: u64) -> u64 {
    let mut acc = 1u64;
    base %= m;
    while exp > 0 {
        if exp & 1 == 1 {
            acc = acc * base % m;
        }
        base = base * base % m;
        exp >>= 1;
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn backend(i: u16, weight: u32) -> MaglevBackend {
        let addr = core::net::IpAddr::V4(core::net::Ipv4Addr::new(10, 0, (i >> 8) as u8, i as u8));
        MaglevBackend::new(BackendId(i), addr, 8080, weight)
    }

    fn pool(n: u16) -> Vec<MaglevBackend> {
        (0..n).map(|i| backend(i, 1)).collect()
    }

    /// The paper's pseudo-code (with `%` and explicit positions), using the same turn schedule.
    fn reference(backends: &[MaglevBackend], m: u32) -> Vec<BackendId> {
        let mut order: Vec<&MaglevBackend> = backends.iter().filter(|b| b.weight > 0).collect();
        order.sort_by_key(|b| b.identity);
        let n = order.len() as u64;
        let m64 = u64::from(m);
        let perms: Vec<(u64, u64)> = order
            .iter()
            .map(|b| {
                let w = identity_words(&b.identity);
                (
                    hash_words_seeded(OFFSET_SEED, &w) % m64,
                    hash_words_seeded(SKIP_SEED, &w) % (m64 - 1) + 1,
                )
            })
            .collect();
        let total: u64 = order.iter().map(|b| u64::from(b.weight)).sum();
        let mut credit = vec![0u64; order.len()];
        let mut pos = vec![0u64; order.len()];
        let mut entry: Vec<Option<BackendId>> = vec![None; m as usize];
        let mut filled = 0;
        loop {
            for i in 0..order.len() {
                credit[i] += u64::from(order[i].weight) * n;
                while credit[i] >= total {
                    credit[i] -= total;
                    let (off, skip) = perms[i];
                    let mut c = (off + pos[i] * skip) % m64;
                    while entry[c as usize].is_some() {
                        pos[i] += 1;
                        c = (off + pos[i] * skip) % m64;
                    }
                    entry[c as usize] = Some(order[i].id);
                    pos[i] += 1;
                    filled += 1;
                    if filled == m {
                        return entry.into_iter().map(|e| e.unwrap()).collect();
                    }
                }
            }
        }
    }

    fn count_of(t: &MaglevTable, id: BackendId) -> usize {
        t.slots().iter().filter(|&&s| s == id).count()
    }

    #[test]
    fn empty_backends_no_slots() {
        let t = MaglevTable::build(&[], DEFAULT_SIZE).unwrap();
        assert!(t.is_empty());
        assert_eq!(t.slots().len(), 0);
        assert_eq!(t.size(), DEFAULT_SIZE);
        for h in [0, 1, u64::MAX, 0x1234_5678_9abc_def0] {
            assert_eq!(t.lookup(h), None);
        }
        // Only weight-0 backends: empty too.
        let t = MaglevTable::build(&[backend(1, 0), backend(2, 0)], DEFAULT_SIZE).unwrap();
        assert!(t.is_empty());
        assert_eq!(t.lookup(42), None);
    }

    #[test]
    fn single_backend_fills_table() {
        let t = MaglevTable::build(&[backend(7, 3)], DEFAULT_SIZE).unwrap();
        assert_eq!(t.slots().len(), DEFAULT_SIZE as usize);
        assert!(t.slots().iter().all(|&s| s == BackendId(7)));
        assert_eq!(t.lookup(u64::MAX), Some(BackendId(7)));
    }

    #[test]
    fn no_holes() {
        let mut b: Vec<MaglevBackend> = (0..13).map(|i| backend(i, u32::from(i % 4))).collect();
        b.push(backend(100, 1000));
        for m in [13, 17, 251, 4099, DEFAULT_SIZE] {
            let t = MaglevTable::build(&b, m).unwrap();
            assert_eq!(t.slots().len(), m as usize);
            // Every slot names a backend of the pool with weight > 0.
            for s in t.slots() {
                let owner = b.iter().find(|x| x.id == *s).unwrap();
                assert!(owner.weight > 0);
            }
            assert_eq!(
                t.slot_counts().iter().map(|c| c.1).sum::<usize>(),
                m as usize
            );
        }
    }

    #[test]
    fn matches_reference_implementation() {
        let cases: Vec<(Vec<MaglevBackend>, u32)> = vec![
            (pool(1), 7),
            (pool(3), 7),
            (pool(7), 7),
            (pool(5), 61),
            (pool(10), 65537),
            (pool(100), 65537),
            (pool(1000), 65537),
            (
                (0..20).map(|i| backend(i, u32::from(i) + 1)).collect(),
                65537,
            ),
            (
                (0..6)
                    .map(|i| backend(i, [1, 1000, 3, 0, 7, 1][i as usize]))
                    .collect(),
                4099,
            ),
            (
                (0..50)
                    .map(|i| backend(i, u32::MAX - u32::from(i)))
                    .collect(),
                10007,
            ),
        ];
        for (b, m) in cases {
            let t = MaglevTable::build(&b, m).unwrap();
            assert_eq!(
                t.slots(),
                reference(&b, m).as_slice(),
                "n={} m={m}",
                b.len()
            );
        }
    }

    #[test]
    fn determinism_and_order_independence() {
        let b: Vec<MaglevBackend> = (0..50).map(|i| backend(i, 1 + u32::from(i % 3))).collect();
        let t1 = MaglevTable::build(&b, DEFAULT_SIZE).unwrap();
        let t2 = MaglevTable::build(&b, DEFAULT_SIZE).unwrap();
        assert_eq!(t1, t2);
        let mut r = b.clone();
        r.reverse();
        let t3 = MaglevTable::build(&r, DEFAULT_SIZE).unwrap();
        assert_eq!(t1, t3);
        // A deterministic shuffle.
        let mut s = b.clone();
        for i in (1..s.len()).rev() {
            let j = (crate::flow::fmix(i as u64) % (i as u64 + 1)) as usize;
            s.swap(i, j);
        }
        let t4 = MaglevTable::build(&s, DEFAULT_SIZE).unwrap();
        assert_eq!(t1, t4);
        assert_eq!(t1.fingerprint(), t4.fingerprint());
        assert_eq!(t1.diff(&t4), 0);
    }

    #[test]
    fn weight_zero_equals_absent() {
        let b = pool(10);
        let mut drained = b.clone();
        drained[4].weight = 0;
        let without: Vec<MaglevBackend> =
            b.iter().copied().filter(|x| x.id != BackendId(4)).collect();
        let t1 = MaglevTable::build(&drained, DEFAULT_SIZE).unwrap();
        let t2 = MaglevTable::build(&without, DEFAULT_SIZE).unwrap();
        assert_eq!(t1, t2);
        assert_eq!(count_of(&t1, BackendId(4)), 0);
    }

    #[test]
    fn higher_weight_gets_more_slots() {
        let weights = [1u32, 2, 3, 4, 10];
        let b: Vec<MaglevBackend> = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| backend(i as u16, w))
            .collect();
        let t = MaglevTable::build(&b, DEFAULT_SIZE).unwrap();
        let total: u32 = weights.iter().sum();
        let m = f64::from(DEFAULT_SIZE);
        let mut prev = 0;
        for (i, &w) in weights.iter().enumerate() {
            let got = count_of(&t, BackendId(i as u16));
            let want = m * f64::from(w) / f64::from(total);
            // Turns are exact up to the last partial round: within one slot per backend plus 0.1 %.
            assert!(
                (got as f64 - want).abs() <= 1.0 + 0.001 * want,
                "w={w} got={got} want={want}"
            );
            assert!(got > prev);
            prev = got;
        }
    }

    #[test]
    fn extreme_weights_are_proportional() {
        let b = vec![backend(0, 1), backend(1, 1_000_000), backend(2, u32::MAX)];
        let t = MaglevTable::build(&b, DEFAULT_SIZE).unwrap();
        assert_eq!(t.slots().len(), DEFAULT_SIZE as usize);
        assert_eq!(count_of(&t, BackendId(0)), 0); // 1/4.3e9 of 65537 slots
        let small = count_of(&t, BackendId(1)) as f64;
        let want = f64::from(DEFAULT_SIZE) * 1e6 / (1e6 + f64::from(u32::MAX) + 1.0);
        assert!((small - want).abs() <= 1.0 + 0.01 * want);
    }

    // Disruption bound. Maglev does not promise minimal disruption; it is near-minimal in
    // practice (§3.4, Fig. 12). Measured here (`disruption_survey`, M = 65537, removal of each of
    // the first 50 backends): the slots that move *beyond* the removed backend's own are
    // 0 (N = 2), 41 (N = 3), 144 (N = 7), 691 (N = 10, the worst: 1.05 % of M), 588 (N = 20),
    // 408 (N = 100), 427 (N = 1000) — always below M/(2N) + 1.1 % of M. The tests assert
    // `changed ≤ ⌈M/N⌉ + M/(2N) + 1.5 % of M`: the removed backend's share (≤ ⌈M/N⌉, which must
    // move) plus the extra churn with a margin over every case measured.
    fn removal_bound(m: usize, n: usize) -> usize {
        m.div_ceil(n) + extra_bound(m, n)
    }

    fn extra_bound(m: usize, n: usize) -> usize {
        m / (2 * n) + m * 3 / 200
    }

    #[test]
    fn removal_moves_at_most_one_over_n_plus_epsilon() {
        for n in [2u16, 3, 5, 10, 50, 100, 1000] {
            let b = pool(n);
            let before = MaglevTable::build(&b, DEFAULT_SIZE).unwrap();
            for victim in [0, n / 2, n - 1] {
                let rest: Vec<MaglevBackend> = b
                    .iter()
                    .copied()
                    .filter(|x| x.id != BackendId(victim))
                    .collect();
                let after = MaglevTable::build(&rest, DEFAULT_SIZE).unwrap();
                let changed = before.diff(&after);
                let own = count_of(&before, BackendId(victim));
                assert!(
                    changed >= own,
                    "all of the removed backend's slots must move"
                );
                assert!(
                    changed <= removal_bound(DEFAULT_SIZE as usize, n as usize),
                    "n={n} victim={victim} changed={changed}"
                );
                // The slots that stayed with a survivor keep their owner except for the bound.
                assert_eq!(
                    after
                        .slots()
                        .iter()
                        .filter(|&&s| s == BackendId(victim))
                        .count(),
                    0
                );
            }
        }
    }

    #[test]
    fn addition_moves_about_one_over_n_plus_one() {
        for n in [1u16, 2, 3, 10, 100, 999] {
            let b = pool(n);
            let before = MaglevTable::build(&b, DEFAULT_SIZE).unwrap();
            let mut more = b.clone();
            more.push(backend(n, 1));
            let after = MaglevTable::build(&more, DEFAULT_SIZE).unwrap();
            let changed = after.diff(&before);
            let m = DEFAULT_SIZE as usize;
            let newcomer = count_of(&after, BackendId(n));
            assert!(newcomer == m / (n as usize + 1) || newcomer == m.div_ceil(n as usize + 1));
            assert!(changed >= newcomer);
            assert!(
                changed <= removal_bound(m, n as usize + 1),
                "n={n} changed={changed}"
            );
            // Every changed slot that does not go to the newcomer is the bounded extra churn.
            let extra = changed - newcomer;
            assert!(
                extra <= extra_bound(m, n as usize + 1),
                "n={n} extra={extra}"
            );
        }
    }

    #[test]
    #[ignore = "survey: cargo test -p trapeze-core --release disruption_survey -- --ignored --nocapture"]
    fn disruption_survey() {
        let m = DEFAULT_SIZE as usize;
        for n in [2u16, 3, 4, 5, 7, 10, 20, 50, 100, 300, 1000] {
            let b = pool(n);
            let before = MaglevTable::build(&b, DEFAULT_SIZE).unwrap();
            let mut worst = 0usize;
            for victim in 0..n.min(50) {
                let rest: Vec<MaglevBackend> = b
                    .iter()
                    .copied()
                    .filter(|x| x.id != BackendId(victim))
                    .collect();
                let after = MaglevTable::build(&rest, DEFAULT_SIZE).unwrap();
                let extra = before.diff(&after) - count_of(&before, BackendId(victim));
                worst = worst.max(extra);
            }
            println!(
                "n={n:5} M/N={:6} worst extra={worst:6} ({:.3} of M/N, {:.4} of M)",
                m / n as usize,
                worst as f64 / (m as f64 / f64::from(n)),
                worst as f64 / m as f64
            );
        }
    }

    #[test]
    #[ignore = "timing: cargo test -p trapeze-core --release build_timing -- --ignored --nocapture"]
    fn build_timing() {
        let best = |f: &dyn Fn()| {
            (0..15)
                .map(|_| {
                    let t = std::time::Instant::now();
                    f();
                    t.elapsed()
                })
                .min()
                .unwrap()
        };
        for n in [10u16, 100, 1000] {
            let b = pool(n);
            let fast = best(&|| {
                std::hint::black_box(MaglevTable::build(&b, DEFAULT_SIZE).unwrap());
            });
            let slow = best(&|| {
                std::hint::black_box(reference(&b, DEFAULT_SIZE));
            });
            println!(
                "n={n:5} build {fast:?}  reference {slow:?}  ratio {:.2}",
                slow.as_secs_f64() / fast.as_secs_f64()
            );
        }
    }

    #[test]
    fn golden_fingerprint() {
        // A fixed pool; if this changes, tables built by this version differ from older ones:
        // every gateway of a fleet must run the same Maglev constants.
        let b: Vec<MaglevBackend> = (0..10).map(|i| backend(i, 1 + u32::from(i % 2))).collect();
        let t = MaglevTable::build(&b, DEFAULT_SIZE).unwrap();
        assert_eq!(
            t.fingerprint(),
            GOLDEN_FINGERPRINT,
            "{:#018x}",
            t.fingerprint()
        );
        assert_eq!(&t.slots()[..8], &GOLDEN_FIRST_SLOTS.map(BackendId));
        let (off, skip) = permutation(&b[0].identity, DEFAULT_SIZE);
        assert_eq!((off, skip), GOLDEN_PERM0, "{off} {skip}");
    }
    const GOLDEN_FINGERPRINT: u64 = 0xfb0f_26d6_f7c5_b1b5;
    const GOLDEN_FIRST_SLOTS: [u16; 8] = [7, 2, 9, 4, 7, 8, 9, 6];
    const GOLDEN_PERM0: (u32, u32) = (56887, 21404);

    #[test]
    fn fingerprint_distinguishes_tables() {
        let a = MaglevTable::build(&pool(10), DEFAULT_SIZE).unwrap();
        let b = MaglevTable::build(&pool(11), DEFAULT_SIZE).unwrap();
        let c = MaglevTable::build(&pool(10), 65521).unwrap();
        let e1 = MaglevTable::build(&[], DEFAULT_SIZE).unwrap();
        let e2 = MaglevTable::build(&[], 65521).unwrap();
        let f = [&a, &b, &c, &e1, &e2].map(MaglevTable::fingerprint);
        for i in 0..f.len() {
            for j in i + 1..f.len() {
                assert_ne!(f[i], f[j]);
            }
        }
        assert_eq!(a.diff(&e1), DEFAULT_SIZE as usize);
        assert_eq!(e1.diff(&e2), 0);
        assert_eq!(
            a.diff(&c),
            DEFAULT_SIZE as usize
                - a.slots()
                    .iter()
                    .zip(c.slots())
                    .filter(|(x, y)| x == y)
                    .count()
        );
    }

    #[test]
    fn lookup_is_multiply_shift() {
        let t = MaglevTable::build(&pool(100), DEFAULT_SIZE).unwrap();
        let s = t.slots();
        assert_eq!(t.lookup(0), Some(s[0]));
        assert_eq!(t.lookup(u64::MAX), Some(s[s.len() - 1]));
        assert_eq!(t.lookup(1u64 << 63), Some(s[s.len() / 2]));
        for h in (0..10_000u64).map(crate::flow::fmix) {
            let idx = ((u128::from(h) * s.len() as u128) >> 64) as usize;
            assert_eq!(t.lookup(h), Some(s[idx]));
        }
    }

    #[test]
    fn errors() {
        assert_eq!(
            MaglevTable::build(&pool(3), 65536),
            Err(MaglevError::SizeNotPrime(65536))
        );
        assert_eq!(
            MaglevTable::build(&pool(3), 0),
            Err(MaglevError::SizeNotPrime(0))
        );
        assert_eq!(
            MaglevTable::build(&pool(3), 1),
            Err(MaglevError::SizeNotPrime(1))
        );
        assert_eq!(
            MaglevTable::build(&pool(3), MAX_SIZE + 43),
            Err(MaglevError::SizeTooLarge(MAX_SIZE + 43))
        );
        assert_eq!(
            MaglevTable::build(&pool(12), 11),
            Err(MaglevError::SizeTooSmall {
                size: 11,
                backends: 12
            })
        );
        assert!(MaglevTable::build(&pool(11), 11).is_ok()); // M = N: one slot each
        let mut dup = pool(3);
        dup[2].identity = dup[0].identity;
        assert!(matches!(
            MaglevTable::build(&dup, 13),
            Err(MaglevError::DuplicateIdentity { .. })
        ));
        let mut dup = pool(3);
        dup[2].id = dup[1].id;
        assert_eq!(
            MaglevTable::build(&dup, 13),
            Err(MaglevError::DuplicateId(BackendId(1)))
        );
        let many: Vec<MaglevBackend> = (0..=MAX_BACKENDS)
            .map(|i| MaglevBackend {
                id: BackendId(i as u16),
                identity: [0; 18],
                weight: 1,
            })
            .collect();
        assert_eq!(
            MaglevTable::build(&many, DEFAULT_SIZE),
            Err(MaglevError::TooManyBackends(MAX_BACKENDS + 1))
        );
        assert!(!MaglevError::SizeNotPrime(4).to_string().is_empty());
        assert!(size_is_recommended(DEFAULT_SIZE, 655));
        assert!(!size_is_recommended(DEFAULT_SIZE, 656));
    }

    #[test]
    fn m_equals_n_gives_one_slot_each() {
        let t = MaglevTable::build(&pool(13), 13).unwrap();
        let mut s: Vec<u16> = t.slots().iter().map(|b| b.0).collect();
        s.sort_unstable();
        assert_eq!(s, (0..13).collect::<Vec<u16>>());
    }

    #[test]
    fn is_prime_matches_trial_division() {
        let trial = |n: u32| {
            n >= 2
                && (2..)
                    .take_while(|d| d * d <= n)
                    .all(|d| !n.is_multiple_of(d))
        };
        for n in 0..20_000 {
            assert_eq!(is_prime(n), trial(n), "{n}");
        }
        for n in [65537, 655_373, 16_777_213, 4_294_967_291, 2_147_483_647] {
            assert!(is_prime(n), "{n}");
        }
        // Strong pseudoprimes to some of the bases.
        for n in [
            25_326_001,
            3_215_031_751,
            2_152_302_898_747u64 as u32,
            4_294_967_295,
            65536,
        ] {
            assert_eq!(is_prime(n), trial(n), "{n}");
        }
    }

    #[test]
    fn mod_inverse_is_inverse() {
        for m in [2u32, 3, 13, 65537, 16_777_213] {
            for a in [1u32, 2, 3, 12, 4000, 65535, 16_777_212] {
                if a < m {
                    assert_eq!(
                        u64::from(a) * u64::from(mod_inverse(a, m)) % u64::from(m),
                        1
                    );
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Equal weights: every backend gets ⌊M/N⌋ or ⌈M/N⌉ slots (the paper's guarantee), hence
        /// within 1 % + 1 of M/N whenever M ≥ 100·N.
        #[test]
        fn balance(n in 1u16..400, mi in 0usize..4, seed in any::<u16>()) {
            let m = [65537u32, 40009, 100_003, 131_071][mi];
            let b: Vec<MaglevBackend> = (0..n)
                .map(|i| MaglevBackend::new(
                    BackendId(i),
                    core::net::IpAddr::V6(core::net::Ipv6Addr::new(0x2001, 0xdb8, seed, 0, 0, 0, 0, i)),
                    443,
                    7,
                ))
                .collect();
            let t = MaglevTable::build(&b, m).unwrap();
            let counts = t.slot_counts();
            prop_assert_eq!(counts.len(), n as usize);
            let lo = m as usize / n as usize;
            let hi = (m as usize).div_ceil(n as usize);
            let ideal = f64::from(m) / f64::from(n);
            for (_, c) in counts {
                prop_assert!(c == lo || c == hi);
                prop_assert!((c as f64 - ideal).abs() <= 0.01 * ideal + 1.0);
            }
        }

        /// Removing any one of N backends moves its own slots plus a bounded extra
        /// ([`removal_bound`]); adding it back restores the original table exactly.
        #[test]
        fn disruption_bound(n in 2u16..200, victim_sel in any::<u16>(), port in 1u16..) {
            let b: Vec<MaglevBackend> = (0..n)
                .map(|i| MaglevBackend::new(
                    BackendId(i),
                    core::net::IpAddr::V4(core::net::Ipv4Addr::new(192, 168, (i >> 8) as u8, i as u8)),
                    port,
                    1,
                ))
                .collect();
            let victim = victim_sel % n;
            let before = MaglevTable::build(&b, DEFAULT_SIZE).unwrap();
            let rest: Vec<MaglevBackend> =
                b.iter().copied().filter(|x| x.id.0 != victim).collect();
            let after = MaglevTable::build(&rest, DEFAULT_SIZE).unwrap();
            let changed = before.diff(&after);
            prop_assert!(changed >= count_of(&before, BackendId(victim)));
            prop_assert!(changed <= removal_bound(DEFAULT_SIZE as usize, n as usize),
                "n={} changed={}", n, changed);
            let back = MaglevTable::build(&b, DEFAULT_SIZE).unwrap();
            prop_assert_eq!(back.fingerprint(), before.fingerprint());
        }
    }
}
