//! The MPTCP token table, shared by all workers.
//!
//! # What it is for
//!
//! Every MPTCP connection has a 32-bit token per side; the server's token is the first 32 bits
//! of SHA-256 of the server's key (RFC 8684 §3.2). A client opening an additional subflow sends
//! an MP_JOIN SYN carrying that token and nothing that identifies the first subflow, so the
//! gateway learns `token → backend` when a connection is established (from the MP_CAPABLE
//! handshake) and routes each MP_JOIN SYN with [`TokenTable::route_join`]. A join can arrive on
//! any worker (RSS hashes its 5-tuple), hence one table shared by all of them.
//!
//! # Collisions
//!
//! Each server keeps its own tokens unique, but two servers may pick the same token (≈ n²/2³³
//! colliding pairs for n live connections: ≈ 116 at 1M). A token may therefore have several
//! owners, one per backend, up to [`MAX_OWNERS`]. A join for a token with two or more owners is
//! *ambiguous* and must be refused: routing it to the wrong server would only fail its HMAC
//! check, but guessing is not the gateway's job (reliability anchors §2.3, F12). Owners are kept
//! and removed per (token, backend), never per token.
//!
//! # Layout (no allocation after [`TokenTable::new`])
//!
//! * `shards` (a power of two, default 64) independent shards, each a
//!   `CachePadded<parking_lot::RwLock<Shard>>`, chosen by the token's low bits. A join takes
//!   the write lock once, briefly: [`TokenTable::join`] routes it, asks the caller to admit the
//!   owner's backend and counts the new subflow with one probe of the map ([`TokenTable::route_join`]
//!   alone takes the read lock). Learning, confirming and subflow bookkeeping take the write
//!   lock briefly too.
//! * In a shard, a `hashbrown` map `token → Head` (24 bytes a bucket) with a hasher keyed per
//!   table (one multiply and one add by a random key, `TokenHasher`): tokens are SHA-256
//!   output, but a DSR client chooses the key it claims, hence its token, and could aim
//!   tokens at one bucket of a public hash. `Head`
//!   carries the owner count, the first owner's backend and that owner's last-join stamp, so a
//!   join is answered *and* stamped from the bucket alone: one cache miss, and the read-lock
//!   release (a locked RMW, which waits for earlier stores) never waits on a second line.
//! * Owner records ([`OwnerRecord`], 88 bytes) live in a per-shard pool (a [`TableMem`] slice
//!   with a free list) and a token's owners are chained through it. An inline
//!   `[Option<Owner>; 4]` per token (the first idea) costs ≈ 400 bytes a bucket, ≈ 800 MB at 1M
//!   tokens once hashbrown's slack is counted, for collisions that concern 0.01 % of tokens; the
//!   chained pool costs ≈ 210 bytes a token of capacity (≈ 105 MB of buckets + ≈ 110 MB of
//!   records for 1M).
//! * The records are plain old data and each carries its token, so the pools can live in the
//!   daemon's state file and outlive the process, and every record validates itself (its token
//!   is SHA-256 of its server key). The maps are an index on the heap, rebuilt from the records
//!   when a restarted daemon re-attaches them ([`TokenTable::with_records`]), and the subflow
//!   counts are recomputed from the flow entries that reference each owner
//!   ([`TokenTable::recount`]). Remote owners are not kept: the peers' periodic refresh
//!   restores them.
//! * The map is created with room for **twice** the shard's token quota. hashbrown never
//!   allocates while its item count stays at most half its capacity: churn leaves tombstones, and
//!   when they use up the free buckets it rehashes *in place* as long as `items ≤ capacity / 2`
//!   (`RawTable::reserve_rehash`). The quota guarantees that, so the map never reallocates.
//!
//! # Capacity
//!
//! `capacity` bounds the number of distinct tokens, exactly: a global `AtomicUsize` counts them,
//! and a new token reserves its place with a compare-and-swap before it is inserted
//! ([`LearnOutcome::TableFull`] otherwise). Each shard additionally holds at most
//! `⌈capacity/shards⌉ + slack` tokens (slack = ⅛ of the share, at least 16) and
//! `token quota + ⅛ + 8` owner records: with uniform tokens a shard reaches its quota before the
//! global bound only with negligible probability (at 1M tokens the slack is > 15 standard
//! deviations). `len()` reads the counter.
//!
//! # Counting
//!
//! The table counts nothing but its length: callers count the outcomes ([`LearnOutcome`],
//! [`JoinRoute`], [`ConfirmOutcome`]) in their own per-worker counters.
//!
//! # Remote owners and the export journal (token sharing between instances)
//!
//! Several gateway instances behind ECMP each see only some handshakes, but any of them may
//! receive a join. With [`TokenTable::enable_cluster`] the table:
//!
//! * keeps a bounded **export journal** (a lock-free `ArrayQueue` allocated once) of its *local*
//!   learns and removals, pushed under the shard lock the change already holds: learning happens
//!   on the handshake, removal on close, expiry or purge, never on the established path. A full
//!   journal drops the entry and counts it ([`TokenTable::journal_dropped`]); the periodic full
//!   refresh (the sync thread walks [`TokenTable::for_each_local`]) repairs any loss.
//! * holds **remote owners** (learned from other instances by the sync thread) in a separate,
//!   pre-reserved map per shard, under the same lock. A remote owner routes joins but holds no
//!   subflow reference (`subflow_opened` does not know it, so the join's flow entry takes no
//!   reference), expires on its own deadline ([`TokenTable::expire_remote`]) unless refreshed,
//!   and **never overrides a local owner**: [`TokenTable::route_join`] consults the remote map
//!   only when no local owner exists. Two remote owners of different backends make the token
//!   ambiguous, as locally. A DSR [`TokenTable::claim`] (first owner wins) is also refused by a
//!   live remote owner of another backend, so a forged key cannot take a peer's token here.
//!
//! # Invariants (checked by the tests after concurrent use)
//!
//! * Every token in a map has 1..=[`MAX_OWNERS`] owners, all for distinct backends, and its
//!   `Head` holds the true count and the first owner's backend.
//! * Records are either on exactly one token's chain (and marked in use) or on the shard's free
//!   list (and not).
//! * `len()` = the number of tokens in all maps ≤ `capacity`.
//! * No operation allocates, panics or blocks on anything but one shard lock at a time.

use core::fmt;
use core::hash::{BuildHasher, Hasher};
use core::sync::atomic::{compiler_fence, AtomicU64, AtomicUsize, Ordering};
use core::time::Duration;

use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;
use parking_lot::RwLock;

use crate::crypto;
use crate::flow::FlowKey;
use crate::pool::BackendId;
use crate::tables::mem::TableMem;
use crate::time::Ticks;

/// The most owners (backends) one token may have at once. A fifth backend learning the token
/// gets [`LearnOutcome::OwnersFull`] (its joins are refused, its first subflow is unaffected).
pub const MAX_OWNERS: usize = 4;

/// The most remote owners (backends named by other instances) one token may have at once.
pub const MAX_REMOTE_OWNERS: usize = 2;

/// Default number of shards.
pub const DEFAULT_SHARDS: usize = 64;

/// Largest accepted number of shards.
pub const MAX_SHARDS: usize = 1 << 16;

/// Sizing of a [`TokenTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenTableConfig {
    /// Maximum number of distinct tokens (live MPTCP connections the gateway can route joins
    /// for). 0 makes a table that refuses everything.
    pub capacity: usize,
    /// Number of lock shards: rounded up to a power of two, clamped to `1..=MAX_SHARDS`.
    pub shards: usize,
}

impl Default for TokenTableConfig {
    /// 1M tokens in [`DEFAULT_SHARDS`] shards.
    fn default() -> Self {
        Self {
            capacity: 1 << 20,
            shards: DEFAULT_SHARDS,
        }
    }
}

/// How a [`TokenTable`] of a given [`TokenTableConfig`] is cut: what its memory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenGeometry {
    /// Lock shards (a power of two).
    pub shards: usize,
    /// Most tokens a shard holds.
    pub quota: usize,
    /// Owner records per shard.
    pub records_per_shard: usize,
}

impl TokenGeometry {
    /// The geometry of a table of `cfg` (see the module documentation for the sizing).
    pub fn of(cfg: TokenTableConfig) -> Self {
        let shards = cfg.shards.clamp(1, MAX_SHARDS).next_power_of_two();
        let share = cfg.capacity.div_ceil(shards);
        let quota = if cfg.capacity == 0 {
            0
        } else {
            share + (share / 8).max(16)
        };
        let records_per_shard = if quota == 0 { 0 } else { quota + quota / 8 + 8 };
        Self {
            shards,
            quota,
            records_per_shard,
        }
    }
}

/// Why [`TokenTable::with_records`] refused its memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadTokenGeometry {
    /// What the configuration needs.
    pub want: TokenGeometry,
    /// Record pools given.
    pub shards: usize,
    /// Records in the first pool.
    pub records: usize,
}

impl fmt::Display for BadTokenGeometry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} record pools of {} records given, {} of {} needed",
            self.shards, self.records, self.want.shards, self.want.records_per_shard
        )
    }
}

/// What [`TokenTable::with_records`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rebuilt {
    /// Tokens restored.
    pub tokens: usize,
    /// Owners restored.
    pub owners: usize,
    /// Records in use that did not validate, or that the caller's policy dropped, or a second
    /// record of one backend for one token: cleared.
    pub invalid: usize,
    /// Valid owners beyond a shard's quota or the capacity: cleared.
    pub no_room: usize,
}

/// One owner of a token: the backend that chose it and the connection it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Owner {
    /// The server (backend) whose key hashes to the token.
    pub backend: BackendId,
    /// Client-side key of the connection's first subflow.
    pub conn: FlowKey,
    /// The server's MPTCP key (from its SYN/ACK).
    pub server_key: u64,
    /// The client's key, once seen (third ACK) and confirmed.
    pub client_key: Option<u64>,
    /// When the owner was learned.
    pub learned_at: Ticks,
    /// Last time a join was routed to it or its subflows changed.
    pub last_seen: Ticks,
    /// Open subflows of the connection (the first one included). Starts at 1.
    pub subflows: u16,
}

impl Owner {
    /// The owner a connection's first subflow makes, learned at `now` with one subflow.
    pub fn new(
        backend: BackendId,
        conn: FlowKey,
        server_key: u64,
        client_key: Option<u64>,
        now: Ticks,
    ) -> Self {
        Self {
            backend,
            conn,
            server_key,
            client_key,
            learned_at: now,
            last_seen: now,
            subflows: 1,
        }
    }
}

/// Result of [`TokenTable::learn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LearnOutcome {
    /// New token, or a new owner of a token with none: stored.
    Inserted,
    /// The same backend and connection are already recorded: the connection's first 5-tuple was
    /// seen again while another of its subflows still holds the token (a client reusing the port
    /// with the same keys, a replayed trace). The caller's entry is counted as one more subflow,
    /// like any reference, so the token stays while it lives.
    AlreadyKnown,
    /// Another backend owns the token too: both are kept; the token is now ambiguous and its
    /// joins are refused until one owner goes away.
    Collision,
    /// The same backend had the token for another connection. A server reuses a token only after
    /// its old connection is gone, so the old owner is replaced.
    Reused,
    /// No room for a new token (global capacity or the shard's share, or the shard's owner
    /// records): the connection works on its first subflow, its joins will be refused.
    TableFull,
    /// The token already has [`MAX_OWNERS`] owners.
    OwnersFull,
    /// [`TokenTable::claim`] only: another backend owns the token; nothing changed.
    Refused,
}

/// Result of [`TokenTable::route_join`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRoute {
    /// Exactly one owner: send the join to this backend.
    Owner(BackendId),
    /// Nobody owns the token: refuse the join.
    Unknown,
    /// Two or more backends own the token: refuse the join.
    Ambiguous,
}

/// Result of [`TokenTable::join`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinOutcome<R> {
    /// The token's single owner was admitted: send the join to `backend`. `referenced`: the
    /// owner (a local one) counted the new subflow, which then holds a reference
    /// ([`TokenTable::subflow_closed`] gives it back); a remote owner counts nothing.
    Routed {
        /// The owner's backend.
        backend: BackendId,
        /// The owner counted the subflow.
        referenced: bool,
    },
    /// Nobody owns the token: refuse the join.
    Unknown,
    /// Two or more backends own the token: refuse the join.
    Ambiguous,
    /// The single owner's backend was refused by the caller, for this reason.
    NotAdmitted(R),
}

/// Result of [`TokenTable::confirm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfirmOutcome {
    /// The echoed server key matches; the client key is recorded.
    Confirmed,
    /// The echoed server key differs from the learned one, or a different client key was already
    /// confirmed: the caller should [`TokenTable::remove`] the owner.
    KeyMismatch,
    /// No owner for this (token, backend, connection).
    Unknown,
}

/// A copy of a token's owners (at most [`MAX_OWNERS`]), in chain order (oldest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OwnersSnapshot {
    len: usize,
    items: [Owner; MAX_OWNERS],
}

impl OwnersSnapshot {
    /// The owners.
    #[inline]
    pub fn as_slice(&self) -> &[Owner] {
        &self.items[..self.len]
    }

    /// Number of owners.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the token is unknown.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The owner for `backend`, if any.
    pub fn get(&self, backend: BackendId) -> Option<&Owner> {
        self.as_slice().iter().find(|o| o.backend == backend)
    }
}

/// What a journal entry reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JournalOp {
    /// `backend` now owns the token (a new connection, or the backend reused the token).
    Learn,
    /// `backend` no longer owns the token.
    Remove,
}

/// One local change of ownership, for export to the other instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalEntry {
    /// Learn or remove.
    pub op: JournalOp,
    /// The token.
    pub token: u32,
    /// The local backend (the sync thread translates it into a name for the wire).
    pub backend: BackendId,
    /// When it happened (learns; 0 for removals, whose time is not known everywhere).
    pub at: Ticks,
}

/// Result of [`TokenTable::learn_remote`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteOutcome {
    /// A new remote owner (it routes joins unless a local owner exists).
    Inserted,
    /// The same remote owner was known: its deadline was pushed back.
    Refreshed,
    /// Stored, but a local owner exists: the local one keeps routing the token's joins.
    ShadowedByLocal,
    /// Another backend is a remote owner too: the token's remote joins are ambiguous.
    Collision,
    /// No room (remote capacity, the shard's share, or [`MAX_REMOTE_OWNERS`]), or no cluster.
    Full,
}

/// A remote owner: a backend another instance learned, valid until `expires`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct RemoteOwner {
    backend: BackendId,
    expires: Ticks,
}

/// A token's remote owners (inline: at most [`MAX_REMOTE_OWNERS`]).
#[derive(Debug, Clone, Copy, Default)]
struct RemoteHead {
    len: u8,
    owners: [RemoteOwner; MAX_REMOTE_OWNERS],
}

impl RemoteHead {
    fn as_slice(&self) -> &[RemoteOwner] {
        &self.owners[..usize::from(self.len).min(MAX_REMOTE_OWNERS)]
    }

    /// Keeps the owners for which `keep` holds; returns how many went.
    fn retain(&mut self, mut keep: impl FnMut(&RemoteOwner) -> bool) -> usize {
        let mut n = 0;
        let old = usize::from(self.len).min(MAX_REMOTE_OWNERS);
        for i in 0..old {
            let o = self.owners[i];
            if keep(&o) {
                self.owners[n] = o;
                n += 1;
            }
        }
        self.len = n as u8;
        old - n
    }
}

type RemoteMap = hashbrown::HashMap<u32, RemoteHead, BuildTokenHasher>;

/// End of a chain / free list.
const NIL: u32 = u32::MAX;

/// What the map stores per token: enough to answer and stamp a join without touching the
/// records (a join then costs one cache miss, not two, and the read-lock release does not wait
/// for a store to a second line).
#[derive(Debug)]
struct Head {
    link: Link,
    /// Last time a join was routed to the first record (Ticks; 0 = never). A join is routed only
    /// when the record is the token's sole owner, so the stamp always belongs to `link.first`:
    /// the record's effective `last_seen` is `max(rec.last_seen, joined)`. Reset whenever the
    /// first record changes or is reused.
    joined: AtomicU64,
}

/// The chain part of a [`Head`].
#[derive(Debug, Clone, Copy)]
struct Link {
    /// First record of the chain.
    first: u32,
    /// Backend of the first record.
    backend: BackendId,
    /// Number of records in the chain, 1..=MAX_OWNERS.
    count: u8,
}

/// An owner record in a shard's pool: plain old data, so that the pool can live in the daemon's
/// state file and survive the process ([`crate::state`]). A record holds its token, which is the
/// first 32 bits of SHA-256 of its server key: a record validates itself
/// ([`TokenTable::with_records`]).
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct OwnerRecord {
    server_key: u64,
    client_key: u64,
    learned_at: u64,
    /// Ticks. Written under the shard's write lock only (joins stamp the map's `Head`).
    last_seen: u64,
    token: u32,
    /// Next record of the chain, or of the free list.
    next: u32,
    backend: BackendId,
    subflows: u16,
    /// [`rec_flags`] bits.
    flags: u16,
    conn: FlowKey,
    spare: [u8; 4],
}

/// Flag bits of an [`OwnerRecord`].
mod rec_flags {
    /// The record is an owner (on a chain), not free. Set last when a record is filled and
    /// cleared first when it is refilled, so that a process killed in between leaves a record
    /// that is free, or whole.
    pub(super) const IN_USE: u16 = 1 << 0;
    /// `client_key` holds the confirmed client key (set after the key is written).
    pub(super) const HAS_CLIENT_KEY: u16 = 1 << 1;
}

type Rec = OwnerRecord;

impl Rec {
    /// Fills a record that is not in use (or takes it out of use first) and marks it in use.
    fn fill(&mut self, token: u32, o: &Owner) {
        self.flags = 0;
        compiler_fence(Ordering::Release);
        self.token = token;
        self.conn = o.conn;
        self.backend = o.backend;
        self.subflows = o.subflows.max(1);
        self.server_key = o.server_key;
        self.client_key = o.client_key.unwrap_or(0);
        self.learned_at = o.learned_at.0;
        self.last_seen = o.last_seen.0;
        compiler_fence(Ordering::Release);
        self.flags = rec_flags::IN_USE
            | if o.client_key.is_some() {
                rec_flags::HAS_CLIENT_KEY
            } else {
                0
            };
    }

    fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }

    /// Whether the record holds an owner (rather than being free).
    pub fn in_use(&self) -> bool {
        self.has(rec_flags::IN_USE)
    }

    /// The token the record says it belongs to (validated by [`TokenTable::with_records`]).
    pub fn token(&self) -> u32 {
        self.token
    }

    fn owner(&self, joined: u64) -> Owner {
        Owner {
            backend: self.backend,
            conn: self.conn,
            server_key: self.server_key,
            client_key: self
                .has(rec_flags::HAS_CLIENT_KEY)
                .then_some(self.client_key),
            learned_at: Ticks(self.learned_at),
            last_seen: Ticks(self.last_seen.max(joined)),
            subflows: self.subflows,
        }
    }
}

/// The hasher of the shard maps, keyed per table: one multiply and one add by random 64-bit
/// words, `key.mul · token + key.add` (mod 2⁶⁴), whose bits 32 and up are the low bits of the
/// hash (hashbrown's bucket index) and bits 25..32 its top bits (the 7-bit tag).
///
/// Why keyed: a token is the start of SHA-256 of a server key, but in DSR the key comes from
/// the client ([`TokenTable::claim`]), and aiming a token at one bucket of a shard needs only
/// as many bits of it to match as the shard has buckets (≈ 2¹⁶ SHA-256 evaluations per token
/// at 1M tokens, once the shard's bits are matched too). Under a public hash, a client could
/// pile its claimed tokens into one run of buckets and make every probe of that run walk it,
/// under the shard's lock. Bits 32 and up of `a·x + b` for random 64-bit `a` and `b` and
/// 32-bit `x` are the multiply-add-shift family (Dietzfelbinger 1996): two distinct tokens
/// share a bucket with probability ≈ 1/buckets, whatever the client chose, as long as the key
/// stays unknown. The key is drawn per table from the standard library's per-process random
/// hasher keys ([`TokenKey::random`]); the shard (the token's low bits) stays public, since
/// the state file's record pools are laid out by it, and a shard's quota bounds what a flood
/// of one shard can take.
#[derive(Clone, Copy)]
struct TokenHasher {
    key: TokenKey,
    hash: u64,
}

impl Hasher for TokenHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        // Not used by `u32` keys; a correct fallback for completeness.
        for &b in bytes {
            self.write_u32(u32::from(b) ^ (self.hash as u32));
        }
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        let p = self
            .key
            .mul
            .wrapping_mul(u64::from(n))
            .wrapping_add(self.key.add);
        self.hash = p.rotate_left(32);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

/// The key of a table's [`TokenHasher`].
#[derive(Clone, Copy, PartialEq, Eq)]
struct TokenKey {
    mul: u64,
    add: u64,
}

impl TokenKey {
    /// A fresh key from the standard library's random hasher keys (drawn from the kernel's
    /// random source once per thread, each `RandomState` a new pair): SipHash of two constants.
    fn random() -> Self {
        let r = std::collections::hash_map::RandomState::new();
        Self {
            mul: r.hash_one(0x746f_6b65_6e5f_6d75_u64), // "token_mu"
            add: r.hash_one(0x746f_6b65_6e5f_6164_u64), // "token_ad"
        }
    }
}

impl fmt::Debug for TokenKey {
    /// Never prints the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

#[derive(Debug, Clone, Copy)]
struct BuildTokenHasher(TokenKey);

impl BuildHasher for BuildTokenHasher {
    type Hasher = TokenHasher;
    #[inline]
    fn build_hasher(&self) -> TokenHasher {
        TokenHasher {
            key: self.0,
            hash: 0,
        }
    }
}

type Map = hashbrown::HashMap<u32, Head, BuildTokenHasher>;

/// One shard: a map of its tokens and the pool of their owner records.
#[derive(Debug)]
struct Shard {
    map: Map,
    /// Most tokens this shard may hold (the map is reserved for twice as many).
    quota: usize,
    recs: TableMem<Rec>,
    free: u32,
    /// Remote owners (empty and unreserved unless the cluster is enabled).
    remote: RemoteMap,
    /// Most tokens with remote owners this shard may hold.
    remote_quota: usize,
}

impl Shard {
    /// A shard over `recs`, whose records are all free (see [`TokenTable::with_records`] for
    /// records that are not).
    fn new(quota: usize, mut recs: TableMem<Rec>, key: TokenKey) -> Self {
        for r in recs.iter_mut() {
            r.flags = 0;
        }
        let mut shard = Self {
            map: Map::with_capacity_and_hasher(quota.saturating_mul(2), BuildTokenHasher(key)),
            quota,
            recs,
            free: NIL,
            remote: RemoteMap::with_hasher(BuildTokenHasher(key)),
            remote_quota: 0,
        };
        shard.link_free();
        shard
    }

    /// Chains every record not in use into the free list (lowest index first).
    fn link_free(&mut self) {
        self.free = NIL;
        for i in (0..self.recs.len()).rev() {
            if !self.recs[i].has(rec_flags::IN_USE) {
                self.recs[i].next = self.free;
                self.free = i as u32;
            }
        }
    }

    fn alloc(&mut self, token: u32, o: &Owner) -> Option<u32> {
        let i = self.free;
        let rec = self.recs.get_mut(i as usize)?;
        self.free = rec.next;
        rec.next = NIL;
        rec.fill(token, o);
        Some(i)
    }

    fn rec(&self, i: u32) -> Option<&Rec> {
        self.recs.get(i as usize)
    }

    /// Index of the record for `backend` in the chain starting at `first`.
    fn find(&self, first: u32, backend: BackendId) -> Option<u32> {
        let mut i = first;
        while let Some(r) = self.rec(i) {
            if r.backend == backend {
                return Some(i);
            }
            i = r.next;
        }
        None
    }

    /// Unlinks the records of `token` for which `drop` holds; returns how many went, and whether
    /// the token is now gone (the map entry has then been removed).
    fn remove_where(
        &mut self,
        token: u32,
        mut drop: impl FnMut(&Rec, u64) -> bool,
    ) -> (usize, bool) {
        let Some(head) = self.map.get_mut(&token) else {
            return (0, false);
        };
        let (removed, alive) = unlink(&mut self.recs, &mut self.free, head, &mut drop);
        if !alive {
            self.map.remove(&token);
        }
        (removed, !alive)
    }
}

/// Unlinks the records of a chain for which `drop(record, effective last_seen)` holds, returns
/// them to the free list and updates `head`; gives the number removed and whether the chain
/// still has records (if not, the caller removes the map entry). Split from [`Shard`] so that
/// `retain` over the map can call it with the pool borrowed separately.
fn unlink(
    recs: &mut [Rec],
    free: &mut u32,
    head: &mut Head,
    drop: &mut impl FnMut(&Rec, u64) -> bool,
) -> (usize, bool) {
    let mut removed = 0;
    let mut kept_first = NIL;
    let mut kept_last = NIL;
    let mut kept = 0u8;
    let old_first = head.link.first;
    let joined = head.joined.load(Ordering::Relaxed);
    let mut i = old_first;
    while let Some(r) = recs.get(i as usize) {
        let next = r.next;
        let mut seen = r.last_seen;
        if i == old_first {
            seen = seen.max(joined);
        }
        if drop(r, seen) {
            if let Some(r) = recs.get_mut(i as usize) {
                r.flags = 0;
                r.next = *free;
            }
            *free = i;
            removed += 1;
        } else {
            if kept_last == NIL {
                kept_first = i;
            } else if let Some(p) = recs.get_mut(kept_last as usize) {
                p.next = i;
            }
            kept_last = i;
            kept += 1;
        }
        i = next;
    }
    if let Some(p) = recs.get_mut(kept_last as usize) {
        p.next = NIL;
    }
    match recs.get(kept_first as usize) {
        Some(r) => {
            if kept_first != old_first {
                // The stamp belonged to the old first record: fold nothing into the new one.
                head.joined.store(0, Ordering::Relaxed);
            }
            head.link = Link {
                first: kept_first,
                backend: r.backend,
                count: kept,
            };
            (removed, true)
        }
        None => (removed, false),
    }
}

/// Join routing by the remote owners alone: owners past their deadline do not count.
#[inline]
fn remote_route(remote: &RemoteMap, token: u32, now: Ticks) -> JoinRoute {
    let Some(h) = remote.get(&token) else {
        return JoinRoute::Unknown;
    };
    let mut live = h.as_slice().iter().filter(|o| o.expires > now);
    match (live.next(), live.next()) {
        (None, _) => JoinRoute::Unknown,
        (Some(o), None) => JoinRoute::Owner(o.backend),
        (Some(_), Some(_)) => JoinRoute::Ambiguous,
    }
}

/// The shared token table (see the module documentation).
pub struct TokenTable {
    shards: Box<[CachePadded<RwLock<Shard>>]>,
    mask: usize,
    capacity: usize,
    len: CachePadded<AtomicUsize>,
    /// Tokens with at least one remote owner, and their bound.
    remote_len: CachePadded<AtomicUsize>,
    remote_capacity: usize,
    /// Local changes to export (`None` without a cluster).
    journal: Option<ArrayQueue<JournalEntry>>,
    journal_dropped: AtomicU64,
}

impl fmt::Debug for TokenTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenTable")
            .field("shards", &self.shards.len())
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .field("remote_len", &self.remote_len())
            .finish()
    }
}

impl TokenTable {
    /// A table with all its memory reserved (see the module documentation for the sizing).
    pub fn new(cfg: TokenTableConfig) -> Self {
        let g = TokenGeometry::of(cfg);
        let recs = (0..g.shards)
            .map(|_| TableMem::zeroed(g.records_per_shard))
            .collect();
        Self::over(cfg, g, recs)
    }

    /// A table over record pools built elsewhere (the state file's): `recs` holds one pool of
    /// [`TokenGeometry::records_per_shard`] records per shard. Records that are free are taken
    /// as such. A record in use is kept when it validates: its token is
    /// [`crypto::token_from_key`] of its server key and belongs to its shard, `keep(token,
    /// owner)` agrees (the backend still exists...), and its token has room (at most
    /// [`MAX_OWNERS`] owners, one per backend, the newest kept; the shard's quota and the
    /// capacity). Everything else is cleared. Chains and free lists are rebuilt; the hashbrown
    /// maps (heap) are filled from the records. Subflow counts are kept as found: see
    /// [`Self::recount`].
    pub fn with_records(
        cfg: TokenTableConfig,
        recs: Vec<TableMem<OwnerRecord>>,
        mut keep: impl FnMut(u32, &Owner) -> bool,
    ) -> Result<(Self, Rebuilt), BadTokenGeometry> {
        let g = TokenGeometry::of(cfg);
        if recs.len() != g.shards || recs.iter().any(|r| r.len() != g.records_per_shard) {
            return Err(BadTokenGeometry {
                want: g,
                shards: recs.len(),
                records: recs.first().map_or(0, |r| r.len()),
            });
        }
        let mut report = Rebuilt::default();
        let key = TokenKey::random();
        let mut valid: Vec<(u32, u64, u32)> = Vec::new(); // (token, learned_at, index)
        let mut tables = Vec::with_capacity(g.shards);
        let mut total = 0usize;
        for (si, mut mem) in recs.into_iter().enumerate() {
            valid.clear();
            for (i, r) in mem.iter_mut().enumerate() {
                if !r.has(rec_flags::IN_USE) {
                    continue;
                }
                let ok = crypto::token_from_key(r.server_key) == r.token
                    && r.token as usize & (g.shards - 1) == si
                    && r.subflows >= 1
                    && keep(r.token, &r.owner(0));
                if ok {
                    valid.push((r.token, r.learned_at, i as u32));
                } else {
                    r.flags = 0;
                    report.invalid += 1;
                }
            }
            // Oldest first: a token's chain keeps the order of learning.
            valid.sort_unstable_by_key(|&(t, at, i)| (t, at, i));
            let mut shard = Shard {
                map: Map::with_capacity_and_hasher(
                    g.quota.saturating_mul(2),
                    BuildTokenHasher(key),
                ),
                quota: g.quota,
                recs: mem,
                free: NIL,
                remote: RemoteMap::with_hasher(BuildTokenHasher(key)),
                remote_quota: 0,
            };
            let mut at = 0;
            while at < valid.len() {
                let token = valid[at].0;
                let end = at + valid[at..].iter().take_while(|v| v.0 == token).count();
                // One record per backend: the newest (a server reuses a token only after its
                // old connection is gone).
                let mut chain: Vec<u32> = Vec::with_capacity(end - at);
                for &(_, _, i) in valid[at..end].iter().rev() {
                    let b = shard.recs[i as usize].backend;
                    if chain.iter().any(|&c| shard.recs[c as usize].backend == b)
                        || chain.len() >= MAX_OWNERS
                    {
                        shard.recs[i as usize].flags = 0;
                        report.invalid += 1;
                    } else {
                        chain.push(i);
                    }
                }
                chain.reverse();
                if shard.map.len() >= shard.quota || total >= cfg.capacity {
                    for &i in &chain {
                        shard.recs[i as usize].flags = 0;
                    }
                    report.no_room += chain.len();
                } else {
                    for w in chain.windows(2) {
                        shard.recs[w[0] as usize].next = w[1];
                    }
                    let last = chain[chain.len() - 1];
                    shard.recs[last as usize].next = NIL;
                    let first = chain[0];
                    shard.map.insert(
                        token,
                        Head {
                            link: Link {
                                first,
                                backend: shard.recs[first as usize].backend,
                                count: chain.len() as u8,
                            },
                            joined: AtomicU64::new(0),
                        },
                    );
                    report.owners += chain.len();
                    total += 1;
                }
                at = end;
            }
            shard.link_free();
            tables.push(shard);
        }
        let mut t = Self::from_shards(cfg, tables);
        t.len = CachePadded::new(AtomicUsize::new(total));
        report.tokens = total;
        Ok((t, report))
    }

    /// Sets every local owner's subflow count to the number of flow entries that reference it
    /// (`refs(token, backend)`: entries with [`crate::tables::flow_table::flags::TOKEN_REF`]),
    /// and removes the owners that none references (their connection ended, or its entries
    /// went, while no process was there to release them). Re-attach housekeeping: takes every
    /// shard's write lock in turn. Returns the number of owners removed.
    pub fn recount(&self, refs: impl Fn(u32, BackendId) -> u16) -> usize {
        self.walk(
            false,
            |token, r, _| refs(token, r.backend) == 0,
            |token, r| r.subflows = refs(token, r.backend),
        )
    }

    /// Corrects every local owner's `learned_at` and `last_seen` with `fix` (re-attach
    /// housekeeping: stamps of another boot, or in the future). Returns the number of stamps
    /// changed.
    pub fn restamp(&self, mut fix: impl FnMut(Ticks) -> Ticks) -> usize {
        let mut n = 0;
        self.walk(
            false,
            |_, _, _| false,
            |_, r| {
                for t in [&mut r.learned_at, &mut r.last_seen] {
                    let fixed = fix(Ticks(*t)).0;
                    n += usize::from(fixed != *t);
                    *t = fixed;
                }
            },
        );
        n
    }

    /// Gives the record pools back, one per shard (for a re-attach in tests, or a copy into a
    /// new layout). Remote owners are dropped.
    pub fn into_records(self) -> Vec<TableMem<OwnerRecord>> {
        self.shards
            .into_vec()
            .into_iter()
            .map(|s| s.into_inner().into_inner().recs)
            .collect()
    }

    fn over(cfg: TokenTableConfig, g: TokenGeometry, recs: Vec<TableMem<Rec>>) -> Self {
        let key = TokenKey::random();
        let shards = recs
            .into_iter()
            .map(|r| Shard::new(g.quota, r, key))
            .collect();
        Self::from_shards(cfg, shards)
    }

    fn from_shards(cfg: TokenTableConfig, shards: Vec<Shard>) -> Self {
        let shards: Vec<CachePadded<RwLock<Shard>>> = shards
            .into_iter()
            .map(|s| CachePadded::new(RwLock::new(s)))
            .collect();
        Self {
            mask: shards.len() - 1,
            shards: shards.into_boxed_slice(),
            capacity: cfg.capacity,
            len: CachePadded::new(AtomicUsize::new(0)),
            remote_len: CachePadded::new(AtomicUsize::new(0)),
            remote_capacity: 0,
            journal: None,
            journal_dropped: AtomicU64::new(0),
        }
    }

    /// Enables token sharing: reserves room for `remote_capacity` tokens with remote owners
    /// (each shard's map for twice its share, as for local tokens, so it never reallocates) and
    /// an export journal of `journal_capacity` entries (at least 1). Called once, before the
    /// table is shared.
    pub fn enable_cluster(&mut self, remote_capacity: usize, journal_capacity: usize) {
        let n = self.shards.len();
        let share = remote_capacity.div_ceil(n);
        let quota = if remote_capacity == 0 {
            0
        } else {
            share + (share / 8).max(16)
        };
        for s in self.shards.iter_mut() {
            let shard = s.get_mut();
            let hasher = *shard.remote.hasher();
            shard.remote = RemoteMap::with_capacity_and_hasher(quota * 2, hasher);
            shard.remote_quota = quota;
        }
        self.remote_capacity = remote_capacity;
        self.journal = Some(ArrayQueue::new(journal_capacity.max(1)));
    }

    /// Whether [`Self::enable_cluster`] was called.
    pub fn cluster_enabled(&self) -> bool {
        self.journal.is_some()
    }

    /// Records a local change for export (caller holds the token's shard lock).
    #[inline]
    fn journal(&self, op: JournalOp, token: u32, backend: BackendId, at: Ticks) {
        if let Some(j) = &self.journal {
            if j.push(JournalEntry {
                op,
                token,
                backend,
                at,
            })
            .is_err()
            {
                self.journal_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The oldest journal entry not yet taken (the sync thread drains it).
    pub fn journal_pop(&self) -> Option<JournalEntry> {
        self.journal.as_ref()?.pop()
    }

    /// Journal entries lost because the journal was full.
    pub fn journal_dropped(&self) -> u64 {
        self.journal_dropped.load(Ordering::Relaxed)
    }

    /// Calls `f(token, backend, learned_at)` for every local owner, one shard at a time under its
    /// read lock (housekeeping: the sync thread's periodic full refresh). Keep `f` short.
    pub fn for_each_local(&self, mut f: impl FnMut(u32, BackendId, Ticks)) {
        for lock in self.shards.iter() {
            let shard = lock.read();
            for (&token, head) in shard.map.iter() {
                let mut i = head.link.first;
                while let Some(r) = shard.rec(i) {
                    f(token, r.backend, Ticks(r.learned_at));
                    i = r.next;
                }
            }
        }
    }

    /// Another instance reports that `backend` owns `token`: record (or refresh) a remote owner
    /// valid until `now + ttl`. Local owners are never touched.
    pub fn learn_remote(
        &self,
        token: u32,
        backend: BackendId,
        now: Ticks,
        ttl: Duration,
    ) -> RemoteOutcome {
        let mut guard = self.shard(token).write();
        let shard = &mut *guard;
        let expires = now + ttl;
        let local = shard.map.contains_key(&token);
        let outcome = if let Some(h) = shard.remote.get_mut(&token) {
            let live = usize::from(h.len).min(MAX_REMOTE_OWNERS);
            if let Some(o) = h.owners[..live].iter_mut().find(|o| o.backend == backend) {
                o.expires = expires;
                RemoteOutcome::Refreshed
            } else {
                // Expired owners make room first.
                h.retain(|o| o.expires > now);
                let live = usize::from(h.len);
                if live >= MAX_REMOTE_OWNERS {
                    return RemoteOutcome::Full;
                }
                h.owners[live] = RemoteOwner { backend, expires };
                h.len += 1;
                if h.len > 1 {
                    RemoteOutcome::Collision
                } else {
                    RemoteOutcome::Inserted
                }
            }
        } else {
            if shard.remote.len() >= shard.remote_quota {
                return RemoteOutcome::Full;
            }
            let reserved = self
                .remote_len
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < self.remote_capacity).then_some(n + 1)
                })
                .is_ok();
            if !reserved {
                return RemoteOutcome::Full;
            }
            let mut h = RemoteHead::default();
            h.owners[0] = RemoteOwner { backend, expires };
            h.len = 1;
            shard.remote.insert(token, h);
            RemoteOutcome::Inserted
        };
        if local && outcome != RemoteOutcome::Refreshed {
            return RemoteOutcome::ShadowedByLocal;
        }
        outcome
    }

    /// Another instance reports that `backend` no longer owns `token`: its remote owner goes.
    /// Local owners are never touched. False when there was none.
    pub fn remove_remote(&self, token: u32, backend: BackendId) -> bool {
        let mut guard = self.shard(token).write();
        let shard = &mut *guard;
        let Some(h) = shard.remote.get_mut(&token) else {
            return false;
        };
        let removed = h.retain(|o| o.backend != backend);
        if h.len == 0 {
            shard.remote.remove(&token);
            self.remote_len.fetch_sub(1, Ordering::AcqRel);
        }
        removed > 0
    }

    /// Removes remote owners whose deadline has passed (`expires <= now`); housekeeping, one
    /// shard lock at a time. Returns the number removed.
    pub fn expire_remote(&self, now: Ticks) -> usize {
        let mut total = 0;
        for lock in self.shards.iter() {
            let mut guard = lock.write();
            let mut gone = 0;
            guard.remote.retain(|_, h| {
                total += h.retain(|o| o.expires > now);
                if h.len == 0 {
                    gone += 1;
                }
                h.len > 0
            });
            if gone > 0 {
                self.remote_len.fetch_sub(gone, Ordering::AcqRel);
            }
        }
        total
    }

    /// Number of tokens with at least one remote owner (expired ones until
    /// [`Self::expire_remote`] runs).
    pub fn remote_len(&self) -> usize {
        self.remote_len.load(Ordering::Acquire)
    }

    /// The configured bound of [`Self::remote_len`].
    pub fn remote_capacity(&self) -> usize {
        self.remote_capacity
    }

    /// The backend of `token`'s remote owner that routes joins at `now`, as [`JoinRoute`]
    /// (ignores local owners; for tests and the API).
    pub fn route_remote(&self, token: u32, now: Ticks) -> JoinRoute {
        let shard = self.shard(token).read();
        remote_route(&shard.remote, token, now)
    }

    #[inline]
    fn shard(&self, token: u32) -> &RwLock<Shard> {
        // In bounds: the shard count is a power of two ≥ 1 and `mask` is that count − 1.
        &self.shards[token as usize & self.mask]
    }

    /// Records that `owner.backend` uses `token` for the connection `owner.conn` (called once per
    /// MPTCP connection, when the server's key is known). `owner.subflows` is taken as at least 1.
    pub fn learn(&self, token: u32, owner: Owner) -> LearnOutcome {
        self.learn_inner(token, owner, false)
    }

    /// Like [`Self::learn`] for an owner whose server key the gateway could not see (DSR: the
    /// client asserts it in its third ACK). First owner wins: when another backend's connection
    /// owns the token the claim is [`LearnOutcome::Refused`] and nothing changes, so a client
    /// that forges a key with a live token (a 2^32 search) can neither take over nor spoil
    /// another connection's joins. The same backend may replace its own older connection. With
    /// a cluster, a live remote owner of another backend refuses the claim as well.
    pub fn claim(&self, token: u32, owner: Owner) -> LearnOutcome {
        self.learn_inner(token, owner, true)
    }

    fn learn_inner(&self, token: u32, owner: Owner, exclusive: bool) -> LearnOutcome {
        let mut guard = self.shard(token).write();
        let shard = &mut *guard;
        let Some(head) = shard.map.get(&token).map(|h| h.link) else {
            // First owner wins across instances too: a claim for a token that another backend
            // owns on a peer (a live remote owner) is refused like a local one.
            if exclusive
                && shard.remote.get(&token).is_some_and(|h| {
                    h.as_slice()
                        .iter()
                        .any(|o| o.backend != owner.backend && o.expires > owner.learned_at)
                })
            {
                return LearnOutcome::Refused;
            }
            if shard.map.len() >= shard.quota || shard.free == NIL {
                return LearnOutcome::TableFull;
            }
            let reserved = self
                .len
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < self.capacity).then_some(n + 1)
                })
                .is_ok();
            if !reserved {
                return LearnOutcome::TableFull;
            }
            let Some(i) = shard.alloc(token, &owner) else {
                self.len.fetch_sub(1, Ordering::AcqRel);
                return LearnOutcome::TableFull;
            };
            shard.map.insert(
                token,
                Head {
                    link: Link {
                        first: i,
                        backend: owner.backend,
                        count: 1,
                    },
                    joined: AtomicU64::new(0),
                },
            );
            self.journal(JournalOp::Learn, token, owner.backend, owner.learned_at);
            return LearnOutcome::Inserted;
        };
        if let Some(i) = shard.find(head.first, owner.backend) {
            let Some(rec) = shard.recs.get_mut(i as usize) else {
                return LearnOutcome::TableFull;
            };
            if rec.conn == owner.conn {
                rec.last_seen = owner.last_seen.0;
                rec.subflows = rec.subflows.saturating_add(1);
                return LearnOutcome::AlreadyKnown;
            }
            rec.fill(token, &owner); // keeps `next`: the record stays where it is in the chain
            if i == head.first {
                if let Some(h) = shard.map.get(&token) {
                    h.joined.store(0, Ordering::Relaxed); // the stamp was the old connection's
                }
            }
            self.journal(JournalOp::Learn, token, owner.backend, owner.learned_at);
            return LearnOutcome::Reused;
        }
        if exclusive {
            return LearnOutcome::Refused;
        }
        if usize::from(head.count) >= MAX_OWNERS {
            return LearnOutcome::OwnersFull;
        }
        let Some(i) = shard.alloc(token, &owner) else {
            return LearnOutcome::TableFull;
        };
        // Append at the end of the chain (the head stays the oldest owner).
        let mut last = head.first;
        while let Some(r) = shard.rec(last) {
            if r.next == NIL {
                break;
            }
            last = r.next;
        }
        if let Some(r) = shard.recs.get_mut(last as usize) {
            r.next = i;
        }
        if let Some(h) = shard.map.get_mut(&token) {
            h.link.count += 1;
        }
        self.journal(JournalOp::Learn, token, owner.backend, owner.learned_at);
        LearnOutcome::Collision
    }

    /// Third-ACK cross-check: the key the client echoes as the receiver's key must be the server
    /// key learned for (token, backend, conn). On a match the client key is recorded; a client
    /// key different from one already recorded is a mismatch too.
    pub fn confirm(
        &self,
        token: u32,
        backend: BackendId,
        conn: &FlowKey,
        server_key: u64,
        client_key: u64,
        now: Ticks,
    ) -> ConfirmOutcome {
        let mut guard = self.shard(token).write();
        let shard = &mut *guard;
        let Some(head) = shard.map.get(&token).map(|h| h.link) else {
            return ConfirmOutcome::Unknown;
        };
        let Some(i) = shard.find(head.first, backend) else {
            return ConfirmOutcome::Unknown;
        };
        let Some(rec) = shard.recs.get_mut(i as usize) else {
            return ConfirmOutcome::Unknown;
        };
        if rec.conn != *conn {
            return ConfirmOutcome::Unknown;
        }
        if rec.server_key != server_key
            || (rec.has(rec_flags::HAS_CLIENT_KEY) && rec.client_key != client_key)
        {
            return ConfirmOutcome::KeyMismatch;
        }
        rec.client_key = client_key;
        compiler_fence(Ordering::Release); // the key before the flag that vouches for it
        rec.flags |= rec_flags::HAS_CLIENT_KEY;
        rec.last_seen = now.0;
        ConfirmOutcome::Confirmed
    }

    /// Where an MP_JOIN SYN carrying `token` goes: the single owner, or a refusal. Takes the
    /// shard's read lock; touches the owner's `last_seen` when routing (an atomic store into the
    /// map bucket the lookup has just read: no second cache line).
    #[inline]
    pub fn route_join(&self, token: u32, now: Ticks) -> JoinRoute {
        let shard = self.shard(token).read();
        match shard.map.get(&token) {
            None if shard.remote.is_empty() => JoinRoute::Unknown,
            None => remote_route(&shard.remote, token, now),
            Some(h) if h.link.count == 1 => {
                h.joined.store(now.0, Ordering::Relaxed);
                JoinRoute::Owner(h.link.backend)
            }
            Some(_) => JoinRoute::Ambiguous,
        }
    }

    /// An MP_JOIN SYN carrying `token`, routed and counted in one step under the shard's lock,
    /// with one probe of the map: [`Self::route_join`], then `admit` of the single owner's
    /// backend (the caller's checks: it takes joins, it can be reached), then
    /// [`Self::subflow_opened`] for that owner. The owner's join stamp is set as `route_join`
    /// sets it, whether `admit` accepts or not. `admit` runs under the shard's write lock: it
    /// must be short and must not touch the token table.
    ///
    /// A caller that then cannot keep the subflow (a full flow table) gives the reference back
    /// with [`Self::subflow_closed`].
    #[inline]
    pub fn join<R>(
        &self,
        token: u32,
        now: Ticks,
        admit: impl FnOnce(BackendId) -> Result<(), R>,
    ) -> JoinOutcome<R> {
        let mut guard = self.shard(token).write();
        let shard = &mut *guard;
        let Some(h) = shard.map.get(&token) else {
            if shard.remote.is_empty() {
                return JoinOutcome::Unknown;
            }
            // A remote owner routes joins but counts no subflows.
            return match remote_route(&shard.remote, token, now) {
                JoinRoute::Owner(backend) => match admit(backend) {
                    Ok(()) => JoinOutcome::Routed {
                        backend,
                        referenced: false,
                    },
                    Err(r) => JoinOutcome::NotAdmitted(r),
                },
                JoinRoute::Unknown => JoinOutcome::Unknown,
                JoinRoute::Ambiguous => JoinOutcome::Ambiguous,
            };
        };
        if h.link.count != 1 {
            return JoinOutcome::Ambiguous;
        }
        h.joined.store(now.0, Ordering::Relaxed);
        let Link { first, backend, .. } = h.link;
        if let Err(r) = admit(backend) {
            return JoinOutcome::NotAdmitted(r);
        }
        // The sole owner is the chain's first record (`Head` names its backend): no walk.
        let referenced = match shard.recs.get_mut(first as usize) {
            Some(rec) if rec.backend == backend => {
                rec.subflows = rec.subflows.saturating_add(1);
                true
            }
            _ => false,
        };
        JoinOutcome::Routed {
            backend,
            referenced,
        }
    }

    /// A join subflow of `backend`'s connection was admitted: its subflow count goes up
    /// (saturating). False when (token, backend) is unknown.
    pub fn subflow_opened(&self, token: u32, backend: BackendId) -> bool {
        let mut guard = self.shard(token).write();
        let shard = &mut *guard;
        let Some(head) = shard.map.get(&token).map(|h| h.link) else {
            return false;
        };
        match shard
            .find(head.first, backend)
            .and_then(|i| shard.recs.get_mut(i as usize))
        {
            Some(rec) => {
                rec.subflows = rec.subflows.saturating_add(1);
                true
            }
            None => false,
        }
    }

    /// A subflow of `backend`'s connection ended: its subflow count goes down, and at 0 the owner
    /// is removed (the connection is over). False when (token, backend) is unknown.
    pub fn subflow_closed(&self, token: u32, backend: BackendId, now: Ticks) -> bool {
        let mut guard = self.shard(token).write();
        let shard = &mut *guard;
        let Some(head) = shard.map.get(&token).map(|h| h.link) else {
            return false;
        };
        let Some(rec) = shard
            .find(head.first, backend)
            .and_then(|i| shard.recs.get_mut(i as usize))
        else {
            return false;
        };
        rec.subflows = rec.subflows.saturating_sub(1);
        rec.last_seen = now.0;
        if rec.subflows == 0 {
            let (removed, gone) = shard.remove_where(token, |r, _| r.backend == backend);
            if gone {
                self.len.fetch_sub(1, Ordering::AcqRel);
            }
            if removed > 0 {
                self.journal(JournalOp::Remove, token, backend, Ticks::ZERO);
            }
        }
        true
    }

    /// Removes `backend`'s ownership of `token` (MP_FASTCLOSE, fallback to plain TCP, key
    /// mismatch, connection end). False when there was none.
    pub fn remove(&self, token: u32, backend: BackendId) -> bool {
        let mut guard = self.shard(token).write();
        let (removed, gone) = guard.remove_where(token, |r, _| r.backend == backend);
        if gone {
            self.len.fetch_sub(1, Ordering::AcqRel);
        }
        if removed > 0 {
            self.journal(JournalOp::Remove, token, backend, Ticks::ZERO);
        }
        removed > 0
    }

    /// Removes every token ownership of `backend` (hard removal from the pool). Takes the shard
    /// write locks one at a time and walks each shard: housekeeping context only. Returns the
    /// number of owners removed.
    pub fn remove_backend(&self, backend: BackendId) -> usize {
        self.purge(|r, _| r.backend == backend)
    }

    /// Removes owners not seen for longer than `idle` (`now − last_seen > idle`). Housekeeping
    /// context: takes the shard write locks one at a time and walks each shard. Returns the
    /// number of owners removed.
    pub fn expire(&self, now: Ticks, idle: Duration) -> usize {
        let idle = u64::try_from(idle.as_nanos()).unwrap_or(u64::MAX);
        self.purge(|_, last_seen| now.0.saturating_sub(last_seen) > idle)
    }

    fn purge(&self, mut drop: impl FnMut(&Rec, u64) -> bool) -> usize {
        self.walk(true, |_, r, seen| drop(r, seen), |_, _| {})
    }

    /// Walks every local owner, one shard write lock at a time: `drop(token, record, effective
    /// last_seen)` removes it (journalled as a removal when `journal`), then `kept(token,
    /// record)` sees each one that stays. Returns the number removed.
    fn walk(
        &self,
        journal: bool,
        mut drop: impl FnMut(u32, &Rec, u64) -> bool,
        mut kept: impl FnMut(u32, &mut Rec),
    ) -> usize {
        let mut total = 0;
        for lock in self.shards.iter() {
            let mut guard = lock.write();
            let Shard {
                map, recs, free, ..
            } = &mut *guard;
            let mut tokens_gone = 0;
            map.retain(|&token, head| {
                let mut decide = |r: &Rec, seen: u64| {
                    let gone = drop(token, r, seen);
                    if gone && journal {
                        self.journal(JournalOp::Remove, token, r.backend, Ticks::ZERO);
                    }
                    gone
                };
                let (removed, alive) = unlink(recs, free, head, &mut decide);
                total += removed;
                if alive {
                    let mut i = head.link.first;
                    while let Some(r) = recs.get_mut(i as usize) {
                        kept(token, r);
                        i = r.next;
                    }
                } else {
                    tokens_gone += 1;
                }
                alive
            });
            if tokens_gone > 0 {
                self.len.fetch_sub(tokens_gone, Ordering::AcqRel);
            }
        }
        total
    }

    /// Number of distinct tokens with at least one owner.
    #[inline]
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// True when no token is known.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The configured maximum number of tokens.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Number of shards (a power of two).
    #[inline]
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// A copy of the owners of `token` (for tests and the control API).
    pub fn owners(&self, token: u32) -> OwnersSnapshot {
        let shard = self.shard(token).read();
        let mut snap = OwnersSnapshot::default();
        let Some(head) = shard.map.get(&token) else {
            return snap;
        };
        let joined = head.joined.load(Ordering::Relaxed);
        let mut i = head.link.first;
        while let Some(r) = shard.rec(i) {
            let stamp = if i == head.link.first { joined } else { 0 };
            if let Some(slot) = snap.items.get_mut(snap.len) {
                *slot = r.owner(stamp);
                snap.len += 1;
            }
            i = r.next;
        }
        snap
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// The real colliding pair: SHA-256 of server keys 0xc66f and 0xe658 both start 0x7357966a.
    const COLLIDING: u32 = 0x7357_966a;

    fn conn(i: u32) -> FlowKey {
        FlowKey::new(
            core::net::IpAddr::V4(core::net::Ipv4Addr::from(0x0a00_0000 | (i & 0xff_ffff))),
            (i >> 8) as u16 | 1024,
            "198.51.100.10".parse().unwrap(),
            443,
            6,
        )
    }

    fn owner(backend: u16, c: u32, server_key: u64, t: u64) -> Owner {
        Owner {
            backend: BackendId(backend),
            conn: conn(c),
            server_key,
            client_key: None,
            learned_at: Ticks(t),
            last_seen: Ticks(t),
            subflows: 1,
        }
    }

    /// Distinct, well-spread test tokens: multiplication by an odd constant is a bijection of u32.
    fn tok(i: u32) -> u32 {
        i.wrapping_mul(0x9e37_79b1) ^ 0x5bd1_e995
    }

    fn small(capacity: usize, shards: usize) -> TokenTable {
        TokenTable::new(TokenTableConfig { capacity, shards })
    }

    impl TokenTable {
        /// Checks every documented structural invariant; returns the number of owners.
        fn validate(&self) -> usize {
            let mut tokens = 0;
            let mut owners = 0;
            for (si, lock) in self.shards.iter().enumerate() {
                let shard = lock.read();
                assert!(shard.map.len() <= shard.quota);
                let mut on_chain = HashSet::new();
                for (&token, head) in shard.map.iter() {
                    assert_eq!(token as usize & self.mask, si, "token in the wrong shard");
                    tokens += 1;
                    let mut backends = HashSet::new();
                    let mut i = head.link.first;
                    let mut n = 0;
                    while i != NIL {
                        let r = shard.rec(i).expect("chain index in bounds");
                        assert!(on_chain.insert(i), "record on two chains or a cycle");
                        assert!(r.has(rec_flags::IN_USE), "record on a chain is in use");
                        assert_eq!(r.token, token);
                        assert!(backends.insert(r.backend), "two records for one backend");
                        assert!(r.subflows >= 1);
                        if n == 0 {
                            assert_eq!(r.backend, head.link.backend);
                        }
                        n += 1;
                        i = r.next;
                    }
                    assert!((1..=MAX_OWNERS).contains(&n));
                    assert_eq!(n, usize::from(head.link.count));
                    owners += n;
                }
                let mut free = 0;
                let mut i = shard.free;
                while i != NIL {
                    assert!(!on_chain.contains(&i), "record both free and used");
                    assert!(
                        !shard.rec(i).expect("free index").has(rec_flags::IN_USE),
                        "free record marked in use"
                    );
                    free += 1;
                    i = shard.rec(i).expect("free index in bounds").next;
                }
                assert_eq!(free + on_chain.len(), shard.recs.len());
            }
            assert_eq!(tokens, self.len());
            assert!(self.len() <= self.capacity());
            owners
        }

        fn allocation(&self) -> usize {
            self.shards
                .iter()
                .map(|s| s.read().map.allocation_size())
                .sum()
        }
    }

    /// Tokens that a client aims at one bucket of a public hash (the fixed multiply-xor hash the
    /// maps had before: 64 tokens with the same low 16 bits of it, one bucket of a 2^16-bucket
    /// map) spread over the buckets of the keyed one; each table draws its own key.
    #[test]
    fn keyed_hash_spreads_tokens_aimed_at_one_bucket() {
        let public = |t: u32| {
            let m = u64::from(t).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            m ^ (m >> 32)
        };
        let aimed: Vec<u32> = (0u32..)
            .filter(|&t| public(t) & 0xffff == 0x1234)
            .take(64)
            .collect();
        let fixed = TokenKey {
            mul: 0x0123_4567_89ab_cdef,
            add: 0xfedc_ba98_7654_3210,
        };
        for key in [TokenKey::random(), fixed] {
            let b = BuildTokenHasher(key);
            let buckets: HashSet<u64> = aimed.iter().map(|&t| b.hash_one(t) & 0xffff).collect();
            assert!(buckets.len() >= 56, "{} buckets", buckets.len());
        }
        assert!(TokenKey::random() != TokenKey::random());
        assert_eq!(format!("{fixed:?}"), "TokenKey(..)");
    }

    #[test]
    fn layout_sizes() {
        // The sizes the module documentation's memory figures are based on.
        assert_eq!(core::mem::size_of::<Rec>(), 88);
        assert_eq!(core::mem::size_of::<(u32, Head)>(), 24);
    }

    /// A connection whose server key is `k`: its real token, an owner on `backend`.
    fn real(backend: u16, k: u64) -> (u32, Owner) {
        let mut o = owner(backend, k as u32, k, k);
        o.client_key = Some(!k);
        (crypto::token_from_key(k), o)
    }

    #[test]
    fn records_survive_a_rebuild_and_validate_themselves() {
        let cfg = TokenTableConfig {
            capacity: 1000,
            shards: 8,
        };
        let t = TokenTable::new(cfg);
        for k in 1..=300u64 {
            let (tok, o) = real((k % 3) as u16, k);
            assert_eq!(t.learn(tok, o), LearnOutcome::Inserted);
        }
        // A collision: the same token for backend 7 (a forged record, as a crash could leave).
        let (tok4, o4) = real(1, 4);
        assert_eq!(
            t.learn(
                tok4,
                Owner {
                    backend: BackendId(7),
                    ..o4
                }
            ),
            LearnOutcome::Collision
        );
        assert_eq!(t.validate(), 301);
        let mut recs = t.into_records();
        // Damage: a record whose key no longer gives its token, one moved to another shard.
        let used = |r: &OwnerRecord| r.has(rec_flags::IN_USE);
        let i = recs[0].iter().position(used).unwrap();
        recs[0][i].server_key ^= 1;
        let victim = recs[1][recs[1].iter().position(used).unwrap()];
        let j = recs[2].iter().position(|r| !used(r)).unwrap();
        recs[2][j] = victim;
        let (t, report) = TokenTable::with_records(cfg, recs, |_, o| o.backend != BackendId(2))
            .expect("same geometry");
        // 100 owners of backend 2 dropped by the policy, the damaged one, the misplaced copy.
        assert_eq!(report.invalid, 102);
        assert_eq!(report.owners, 200);
        assert_eq!(t.validate(), 200);
        for k in 1..=300u64 {
            let (tok, o) = real((k % 3) as u16, k);
            let route = t.route_join(tok, Ticks(0));
            if k == 4 && t.owners(tok).len() == 2 {
                assert_eq!(route, JoinRoute::Ambiguous, "both owners kept");
            } else if o.backend == BackendId(2) || t.owners(tok).get(o.backend).is_none() {
                assert_eq!(route, JoinRoute::Unknown);
            } else {
                assert_eq!(route, JoinRoute::Owner(o.backend));
                assert_eq!(t.owners(tok).as_slice()[0].client_key, Some(!k));
            }
        }
        // The table works on: learn, close.
        let (tok, o) = real(0, 999);
        assert_eq!(t.learn(tok, o), LearnOutcome::Inserted);
        assert!(t.subflow_closed(tok, BackendId(0), Ticks(1)));
        t.validate();
    }

    #[test]
    fn recount_sets_subflows_from_references_and_drops_orphans() {
        let cfg = TokenTableConfig {
            capacity: 100,
            shards: 4,
        };
        let t = TokenTable::new(cfg);
        let (a, oa) = real(1, 11);
        let (b, ob) = real(2, 22);
        t.learn(a, oa);
        t.learn(b, ob);
        t.learn(
            a,
            Owner {
                backend: BackendId(3),
                ..oa
            },
        );
        let refs = |tok: u32, be: BackendId| match (tok == a, be.0) {
            (true, 1) => 3,
            (true, 3) => 0,
            _ => 0,
        };
        assert_eq!(t.recount(refs), 2, "(a, 3) and (b, 2) have no flow left");
        assert_eq!(t.len(), 1);
        assert_eq!(t.owners(a).as_slice()[0].subflows, 3);
        assert_eq!(t.route_join(a, Ticks(0)), JoinRoute::Owner(BackendId(1)));
        assert_eq!(t.route_join(b, Ticks(0)), JoinRoute::Unknown);
        t.validate();
    }

    #[test]
    fn records_of_another_geometry_are_refused() {
        let t = small(1000, 8);
        let recs = t.into_records();
        let cfg = TokenTableConfig {
            capacity: 1000,
            shards: 16,
        };
        let e = TokenTable::with_records(cfg, recs, |_, _| true).unwrap_err();
        assert_eq!((e.shards, e.want.shards), (8, 16));
    }

    #[test]
    fn learn_and_route() {
        let t = small(1000, 8);
        assert!(t.is_empty());
        assert_eq!(t.route_join(42, Ticks(0)), JoinRoute::Unknown);
        assert_eq!(t.learn(42, owner(3, 1, 0xaaaa, 10)), LearnOutcome::Inserted);
        assert_eq!(t.len(), 1);
        assert_eq!(t.route_join(42, Ticks(99)), JoinRoute::Owner(BackendId(3)));
        let snap = t.owners(42);
        assert_eq!(snap.len(), 1);
        assert_eq!(
            snap.as_slice()[0].last_seen,
            Ticks(99),
            "route_join touches last_seen"
        );
        assert_eq!(snap.as_slice()[0].learned_at, Ticks(10));
        assert_eq!(t.route_join(43, Ticks(0)), JoinRoute::Unknown);
        // The same connection learned again by another flow entry: one more reference.
        assert_eq!(
            t.learn(42, owner(3, 1, 0xaaaa, 20)),
            LearnOutcome::AlreadyKnown
        );
        assert_eq!(t.len(), 1);
        assert_eq!(t.owners(42).as_slice()[0].subflows, 2);
        assert!(t.owners(7).is_empty());
        t.validate();
    }

    #[test]
    fn collision_keeps_both_owners_and_join_is_ambiguous() {
        let t = TokenTable::new(TokenTableConfig::default());
        assert_eq!(
            t.learn(COLLIDING, owner(1, 1, 0xc66f, 0)),
            LearnOutcome::Inserted
        );
        assert_eq!(
            t.learn(COLLIDING, owner(2, 2, 0xe658, 0)),
            LearnOutcome::Collision
        );
        assert_eq!(t.len(), 1, "one token, two owners");
        assert_eq!(t.route_join(COLLIDING, Ticks(5)), JoinRoute::Ambiguous);
        let snap = t.owners(COLLIDING);
        assert_eq!(snap.len(), 2);
        assert_eq!(snap.get(BackendId(1)).unwrap().server_key, 0xc66f);
        assert_eq!(snap.get(BackendId(2)).unwrap().server_key, 0xe658);
        // Ambiguous joins touch nobody.
        assert!(snap.as_slice().iter().all(|o| o.last_seen == Ticks(0)));
        t.validate();
        // The first owner goes: the token routes to the second one again.
        assert!(t.remove(COLLIDING, BackendId(1)));
        assert_eq!(
            t.owners(COLLIDING).as_slice()[0].last_seen,
            Ticks(0),
            "stamp not inherited"
        );
        assert_eq!(
            t.route_join(COLLIDING, Ticks(6)),
            JoinRoute::Owner(BackendId(2))
        );
        assert_eq!(t.owners(COLLIDING).as_slice()[0].last_seen, Ticks(6));
        assert_eq!(t.len(), 1);
        t.validate();
        assert!(t.remove(COLLIDING, BackendId(2)));
        assert!(!t.remove(COLLIDING, BackendId(2)));
        assert!(t.is_empty());
        t.validate();
    }

    #[test]
    fn owners_full() {
        let t = small(100, 1);
        for b in 0..MAX_OWNERS as u16 {
            let want = if b == 0 {
                LearnOutcome::Inserted
            } else {
                LearnOutcome::Collision
            };
            assert_eq!(t.learn(5, owner(b, u32::from(b), 1, 0)), want);
        }
        assert_eq!(t.learn(5, owner(99, 99, 1, 0)), LearnOutcome::OwnersFull);
        assert_eq!(t.owners(5).len(), MAX_OWNERS);
        assert_eq!(t.validate(), MAX_OWNERS);
        // Removing the middle and the head keeps the chain consistent.
        assert!(t.remove(5, BackendId(1)));
        assert!(t.remove(5, BackendId(0)));
        assert_eq!(t.validate(), MAX_OWNERS - 2);
        assert_eq!(t.learn(5, owner(99, 99, 1, 0)), LearnOutcome::Collision);
        let order: Vec<u16> = t.owners(5).as_slice().iter().map(|o| o.backend.0).collect();
        assert_eq!(order, [2, 3, 99]);
    }

    #[test]
    fn reuse_on_same_backend_replaces() {
        let t = small(100, 4);
        assert_eq!(t.learn(9, owner(1, 1, 0x11, 0)), LearnOutcome::Inserted);
        assert!(
            t.confirm(9, BackendId(1), &conn(1), 0x11, 0x22, Ticks(1)) == ConfirmOutcome::Confirmed
        );
        assert!(t.subflow_opened(9, BackendId(1)));
        assert_eq!(t.route_join(9, Ticks(80)), JoinRoute::Owner(BackendId(1)));
        // Same backend, new connection: the server reused the token, so the old one is dead.
        assert_eq!(t.learn(9, owner(1, 2, 0x33, 50)), LearnOutcome::Reused);
        assert_eq!(
            t.owners(9).as_slice()[0].last_seen,
            Ticks(50),
            "old join stamp dropped"
        );
        let snap = t.owners(9);
        assert_eq!(snap.len(), 1);
        let o = snap.as_slice()[0];
        assert_eq!(o.conn, conn(2));
        assert_eq!(o.server_key, 0x33);
        assert_eq!(o.client_key, None);
        assert_eq!(o.subflows, 1);
        assert_eq!(o.learned_at, Ticks(50));
        assert_eq!(t.len(), 1);
        // Reuse in a collided token keeps the other owner.
        assert_eq!(t.learn(9, owner(2, 3, 0x44, 60)), LearnOutcome::Collision);
        assert_eq!(t.learn(9, owner(1, 4, 0x55, 70)), LearnOutcome::Reused);
        assert_eq!(t.owners(9).get(BackendId(2)).unwrap().server_key, 0x44);
        assert_eq!(t.owners(9).get(BackendId(1)).unwrap().server_key, 0x55);
        t.validate();
    }

    #[test]
    fn subflow_refcount_removal() {
        let t = small(100, 4);
        let mut o = owner(4, 1, 0x1, 0);
        o.subflows = 0; // taken as 1
        assert_eq!(t.learn(77, o), LearnOutcome::Inserted);
        assert_eq!(t.owners(77).as_slice()[0].subflows, 1);
        assert!(t.subflow_opened(77, BackendId(4)));
        assert!(t.subflow_opened(77, BackendId(4)));
        assert!(!t.subflow_opened(77, BackendId(5)));
        assert!(!t.subflow_opened(78, BackendId(4)));
        assert_eq!(t.owners(77).as_slice()[0].subflows, 3);
        assert!(t.subflow_closed(77, BackendId(4), Ticks(10)));
        assert!(t.subflow_closed(77, BackendId(4), Ticks(20)));
        assert_eq!(t.route_join(77, Ticks(21)), JoinRoute::Owner(BackendId(4)));
        assert!(t.subflow_closed(77, BackendId(4), Ticks(30)));
        assert_eq!(t.route_join(77, Ticks(31)), JoinRoute::Unknown);
        assert!(t.is_empty());
        assert!(!t.subflow_closed(77, BackendId(4), Ticks(40)));
        // With a collision, closing one owner's connection leaves the other.
        t.learn(COLLIDING, owner(1, 1, 0xc66f, 0));
        t.learn(COLLIDING, owner(2, 2, 0xe658, 0));
        assert!(t.subflow_closed(COLLIDING, BackendId(1), Ticks(1)));
        assert_eq!(
            t.route_join(COLLIDING, Ticks(2)),
            JoinRoute::Owner(BackendId(2))
        );
        assert!(!t.subflow_closed(COLLIDING, BackendId(1), Ticks(3)));
        t.validate();
    }

    #[test]
    fn confirm_mismatch() {
        let t = small(100, 4);
        t.learn(1, owner(1, 1, 0xabc, 0));
        let c = conn(1);
        assert_eq!(
            t.confirm(1, BackendId(1), &c, 0xabd, 7, Ticks(1)),
            ConfirmOutcome::KeyMismatch
        );
        assert_eq!(t.owners(1).as_slice()[0].client_key, None);
        assert_eq!(
            t.confirm(1, BackendId(2), &c, 0xabc, 7, Ticks(1)),
            ConfirmOutcome::Unknown
        );
        assert_eq!(
            t.confirm(1, BackendId(1), &conn(2), 0xabc, 7, Ticks(1)),
            ConfirmOutcome::Unknown
        );
        assert_eq!(
            t.confirm(2, BackendId(1), &c, 0xabc, 7, Ticks(1)),
            ConfirmOutcome::Unknown
        );
        assert_eq!(
            t.confirm(1, BackendId(1), &c, 0xabc, 7, Ticks(2)),
            ConfirmOutcome::Confirmed
        );
        let o = t.owners(1).as_slice()[0];
        assert_eq!(o.client_key, Some(7));
        assert_eq!(o.last_seen, Ticks(2));
        // A retransmitted third ACK confirms again; a different client key does not.
        assert_eq!(
            t.confirm(1, BackendId(1), &c, 0xabc, 7, Ticks(3)),
            ConfirmOutcome::Confirmed
        );
        assert_eq!(
            t.confirm(1, BackendId(1), &c, 0xabc, 8, Ticks(3)),
            ConfirmOutcome::KeyMismatch
        );
        // The caller's reaction to a mismatch.
        assert!(t.remove(1, BackendId(1)));
        assert!(t.is_empty());
    }

    #[test]
    fn capacity_bound_table_full_with_no_growth() {
        let t = small(100, 4);
        assert_eq!(t.capacity(), 100);
        let alloc = t.allocation();
        let token = tok;
        for i in 0..100 {
            assert_eq!(
                t.learn(token(i), owner(1, i, 0, 0)),
                LearnOutcome::Inserted,
                "{i}"
            );
        }
        assert_eq!(
            t.learn(token(100), owner(1, 100, 0, 0)),
            LearnOutcome::TableFull
        );
        // A collision on a known token needs no new token slot: still accepted.
        assert_eq!(
            t.learn(token(5), owner(2, 5, 0, 0)),
            LearnOutcome::Collision
        );
        assert_eq!(t.len(), 100);
        assert_eq!(t.route_join(token(100), Ticks(0)), JoinRoute::Unknown);
        // Heavy churn at full capacity (tombstones) never reallocates.
        let mut next = 1000;
        for round in 0..200u32 {
            for i in 0..100 {
                let old = token(round * 1000 + i);
                let _ = t.remove(old, BackendId(1));
                let _ = t.remove(old, BackendId(2));
            }
            assert!(t.is_empty());
            for i in 0..100 {
                next += 1;
                assert_eq!(
                    t.learn(token((round + 1) * 1000 + i), owner(1, next, 0, 0)),
                    LearnOutcome::Inserted
                );
            }
            assert_eq!(
                t.learn(token(999_999), owner(1, 0, 0, 0)),
                LearnOutcome::TableFull
            );
        }
        assert_eq!(t.allocation(), alloc, "the maps never grew");
        t.validate();
    }

    #[test]
    fn one_shard_full_churn_never_reallocates() {
        let t = small(5000, 1);
        let alloc = t.allocation();
        let mut x = 1u64;
        let mut live: Vec<u32> = Vec::new();
        for step in 0..200_000u32 {
            x = crate::flow::fmix(x);
            if live.len() < 5000 && (x & 1 == 0 || live.is_empty()) {
                let tok = x as u32;
                match t.learn(tok, owner(1, step, 0, 0)) {
                    LearnOutcome::Inserted => live.push(tok),
                    LearnOutcome::Reused => {}
                    other => panic!("{other:?}"),
                }
            } else {
                let k = (x >> 32) as usize % live.len();
                let tok = live.swap_remove(k);
                assert!(t.remove(tok, BackendId(1)));
            }
        }
        assert_eq!(t.allocation(), alloc);
        assert_eq!(t.len(), live.len());
        t.validate();
    }

    #[test]
    fn zero_capacity_and_config_normalisation() {
        let t = small(0, 0);
        assert_eq!(t.shards(), 1);
        assert_eq!(t.learn(1, owner(1, 1, 0, 0)), LearnOutcome::TableFull);
        assert_eq!(t.route_join(1, Ticks(0)), JoinRoute::Unknown);
        assert_eq!(small(10, 3).shards(), 4);
        assert_eq!(small(10, usize::MAX).shards(), MAX_SHARDS);
        assert_eq!(
            TokenTable::new(TokenTableConfig::default()).shards(),
            DEFAULT_SHARDS
        );
        assert!(!format!("{t:?}").is_empty());
    }

    #[test]
    fn expire_idle_owners() {
        let t = small(100, 4);
        let s = Ticks::from_secs;
        t.learn(1, owner(1, 1, 0, s(0).0));
        t.learn(2, owner(1, 2, 0, s(0).0));
        t.learn(2, owner(2, 3, 0, s(50).0));
        t.learn(3, owner(1, 4, 0, s(0).0));
        assert_eq!(t.route_join(3, s(90)), JoinRoute::Owner(BackendId(1)));
        // At t = 120 s with 60 s idle: token 1, token 2's backend 1 go; token 2's backend 2 (50 s)
        // goes; token 3 (touched at 90 s) stays.
        assert_eq!(t.expire(s(100), Duration::from_secs(60)), 2);
        assert_eq!(t.route_join(2, s(100)), JoinRoute::Owner(BackendId(2)));
        assert_eq!(t.expire(s(200), Duration::from_secs(60)), 2);
        assert_eq!(t.len(), 0);
        t.learn(4, owner(1, 5, 0, s(200).0));
        assert_eq!(
            t.expire(s(260), Duration::from_secs(60)),
            0,
            "exactly idle is not expired"
        );
        assert_eq!(t.expire(s(260), Duration::MAX), 0);
        assert_eq!(
            t.expire(Ticks(0), Duration::ZERO),
            0,
            "time going backwards expires nothing"
        );
        t.validate();
    }

    #[test]
    fn remove_backend_purges_its_tokens() {
        let t = small(10_000, 16);
        for i in 0..3000u32 {
            let tok = tok(i);
            t.learn(tok, owner((i % 3) as u16, i, 0, 0));
            if i % 10 == 0 {
                t.learn(tok, owner(7, i, 0, 0)); // collide with backend 7
            }
        }
        assert_eq!(t.validate(), 3300);
        assert_eq!(t.remove_backend(BackendId(1)), 1000);
        assert_eq!(t.validate(), 2300);
        // Tokens of backend 1 that collided with 7 survive with 7 alone.
        assert_eq!(t.len(), 2000 + 100); // i ≡ 1 (mod 3) and i ≡ 0 (mod 10): 100 tokens
        assert_eq!(t.remove_backend(BackendId(7)), 300);
        assert_eq!(t.remove_backend(BackendId(7)), 0);
        assert_eq!(t.len(), 2000);
        for i in 0..3000u32 {
            let tok = tok(i);
            let want = if i % 3 == 1 {
                JoinRoute::Unknown
            } else {
                JoinRoute::Owner(BackendId((i % 3) as u16))
            };
            assert_eq!(t.route_join(tok, Ticks(0)), want);
        }
        t.validate();
    }

    #[test]
    fn concurrent_learn_route_close() {
        // Half the shared tokens collide (far above the ≈ 0.01 % of real traffic that the owner
        // record slack is sized for), hence the capacity well above the live token count.
        let t = small(100_000, 8);
        const PER: u32 = 20_000;
        // Both threads use the same tokens (so half the learns are collisions) plus private ones.
        let shared = |i: u32| tok(i);
        let private = |w: u32, i: u32| tok(i | ((w + 1) << 20));
        std::thread::scope(|s| {
            for w in 0..2u32 {
                let t = &t;
                s.spawn(move || {
                    let b = BackendId(w as u16 + 1);
                    for i in 0..PER {
                        let tok = shared(i);
                        let out = t.learn(tok, owner(b.0, i, u64::from(w), 0));
                        assert!(
                            matches!(out, LearnOutcome::Inserted | LearnOutcome::Collision),
                            "{out:?}"
                        );
                        assert!(matches!(
                            t.route_join(tok, Ticks(1)),
                            JoinRoute::Owner(_) | JoinRoute::Ambiguous
                        ));
                        assert!(t.subflow_opened(tok, b));
                        let p = private(w, i);
                        assert_eq!(t.learn(p, owner(b.0, i, 0, 0)), LearnOutcome::Inserted);
                        assert_eq!(t.route_join(p, Ticks(1)), JoinRoute::Owner(b));
                        if i % 2 == 0 {
                            // Close both subflows of the shared-token connection.
                            assert!(t.subflow_closed(tok, b, Ticks(2)));
                            assert!(t.subflow_closed(tok, b, Ticks(2)));
                        }
                        if i % 3 == 0 {
                            assert!(t.subflow_closed(p, b, Ticks(2)));
                            assert_eq!(t.route_join(p, Ticks(1)), JoinRoute::Unknown);
                        }
                    }
                });
            }
        });
        // Odd shared tokens: both backends own them (ambiguous); even ones: gone.
        for i in 0..PER {
            let want = if i % 2 == 0 {
                JoinRoute::Unknown
            } else {
                JoinRoute::Ambiguous
            };
            assert_eq!(t.route_join(shared(i), Ticks(3)), want, "{i}");
        }
        let private_left = (PER - PER.div_ceil(3)) as usize;
        assert_eq!(t.len(), PER as usize / 2 + 2 * private_left);
        assert_eq!(t.validate(), PER as usize + 2 * private_left);
        assert_eq!(
            t.remove_backend(BackendId(1)) + t.remove_backend(BackendId(2)),
            PER as usize + 2 * private_left
        );
        assert!(t.is_empty());
        t.validate();
    }
    /// Joins counted and given back from several threads at once: every reference a join took
    /// is one the owner counts, so the first subflow's is the last one left.
    #[test]
    fn concurrent_joins_count_every_reference() {
        let t = small(1000, 2);
        const PER: usize = 5_000;
        let tokens = [tok(1), tok(2), tok(3)];
        for (i, &k) in tokens.iter().enumerate() {
            assert_eq!(t.learn(k, owner(1, i as u32, 1, 0)), LearnOutcome::Inserted);
        }
        std::thread::scope(|s| {
            for w in 0..3usize {
                let t = &t;
                s.spawn(move || {
                    let mut held = Vec::new();
                    for i in 0..PER {
                        let k = tokens[(i + w) % tokens.len()];
                        match t.join(
                            k,
                            Ticks(1),
                            |b| {
                                if b == BackendId(1) {
                                    Ok(())
                                } else {
                                    Err(b)
                                }
                            },
                        ) {
                            JoinOutcome::Routed {
                                backend,
                                referenced: true,
                            } => held.push((k, backend)),
                            other => panic!("{other:?}"),
                        }
                        if i % 3 == 0 {
                            if let Some((k, b)) = held.pop() {
                                assert!(t.subflow_closed(k, b, Ticks(2)));
                            }
                        }
                    }
                    for (k, b) in held {
                        assert!(t.subflow_closed(k, b, Ticks(3)));
                    }
                });
            }
        });
        for &k in &tokens {
            assert_eq!(t.owners(k).as_slice()[0].subflows, 1, "the first subflow's");
            assert!(t.subflow_closed(k, BackendId(1), Ticks(4)));
        }
        assert!(t.is_empty());
        t.validate();
    }

    /// `join` is `route_join`, the caller's admission, then `subflow_opened`, in one step.
    #[test]
    fn join_routes_admits_and_counts_in_one_step() {
        let t = small(100, 4);
        let admit_all = |_: BackendId| Ok::<(), ()>(());
        assert_eq!(t.join(42, Ticks(1), admit_all), JoinOutcome::Unknown);
        assert_eq!(t.learn(42, owner(3, 1, 0x1, 0)), LearnOutcome::Inserted);
        // Admitted: routed, counted, stamped.
        assert_eq!(
            t.join(42, Ticks(7), |b| if b == BackendId(3) {
                Ok(())
            } else {
                Err(1)
            }),
            JoinOutcome::Routed {
                backend: BackendId(3),
                referenced: true
            }
        );
        let o = t.owners(42).as_slice()[0];
        assert_eq!((o.subflows, o.last_seen), (2, Ticks(7)));
        // Refused by the caller: nothing counted, the join still stamps the owner (as
        // route_join does before the caller looks at the backend).
        assert_eq!(
            t.join(42, Ticks(9), |_| Err("down")),
            JoinOutcome::NotAdmitted("down")
        );
        let o = t.owners(42).as_slice()[0];
        assert_eq!((o.subflows, o.last_seen), (2, Ticks(9)));
        // Given back: the count goes down, and with the last subflow the token goes.
        assert!(t.subflow_closed(42, BackendId(3), Ticks(10)));
        assert!(t.subflow_closed(42, BackendId(3), Ticks(11)));
        assert_eq!(t.join(42, Ticks(12), admit_all), JoinOutcome::Unknown);
        assert!(t.is_empty());
        // Two owners: ambiguous, admission not asked, nothing counted.
        t.learn(COLLIDING, owner(1, 1, 0xc66f, 0));
        t.learn(COLLIDING, owner(2, 2, 0xe658, 0));
        assert_eq!(
            t.join(COLLIDING, Ticks(1), |_| -> Result<(), ()> {
                panic!("admission of an ambiguous token")
            }),
            JoinOutcome::Ambiguous
        );
        assert!(t
            .owners(COLLIDING)
            .as_slice()
            .iter()
            .all(|o| o.subflows == 1));
        t.validate();
    }

    #[test]
    fn join_by_a_remote_owner_holds_no_reference() {
        let t = cluster(100, 100, 64);
        let ttl = Duration::from_secs(10);
        t.learn_remote(5, BackendId(2), Ticks(0), ttl);
        assert_eq!(
            t.join(5, Ticks(1), |_| Ok::<(), ()>(())),
            JoinOutcome::Routed {
                backend: BackendId(2),
                referenced: false
            }
        );
        assert_eq!(
            t.join(5, Ticks(1), Err),
            JoinOutcome::NotAdmitted(BackendId(2))
        );
        t.learn_remote(5, BackendId(3), Ticks(0), ttl);
        assert_eq!(
            t.join(5, Ticks(1), |_| Ok::<(), ()>(())),
            JoinOutcome::Ambiguous
        );
        // A local owner wins over the remote ones, and is counted.
        t.learn(5, owner(4, 1, 0x1, 0));
        assert_eq!(
            t.join(5, Ticks(2), |_| Ok::<(), ()>(())),
            JoinOutcome::Routed {
                backend: BackendId(4),
                referenced: true
            }
        );
        assert_eq!(t.owners(5).as_slice()[0].subflows, 2);
    }

    fn cluster(capacity: usize, remote: usize, journal: usize) -> TokenTable {
        let mut t = small(capacity, 4);
        t.enable_cluster(remote, journal);
        t
    }

    fn drain(t: &TokenTable) -> Vec<(JournalOp, u32, u16)> {
        core::iter::from_fn(|| t.journal_pop())
            .map(|e| (e.op, e.token, e.backend.0))
            .collect()
    }

    #[test]
    fn remote_owner_routes_joins_without_references() {
        let t = cluster(100, 100, 64);
        let ttl = Duration::from_secs(10);
        assert_eq!(t.route_join(5, Ticks(0)), JoinRoute::Unknown);
        assert_eq!(
            t.learn_remote(5, BackendId(2), Ticks(0), ttl),
            RemoteOutcome::Inserted
        );
        assert_eq!(t.route_join(5, Ticks(1)), JoinRoute::Owner(BackendId(2)));
        // No local owner: nothing to take a subflow reference on, nothing local counted.
        assert!(!t.subflow_opened(5, BackendId(2)));
        assert!(!t.subflow_closed(5, BackendId(2), Ticks(2)));
        assert!(
            !t.remove(5, BackendId(2)),
            "local removal ignores remote owners"
        );
        assert_eq!(t.route_join(5, Ticks(3)), JoinRoute::Owner(BackendId(2)));
        assert!(t.is_empty());
        assert_eq!(t.remote_len(), 1);
        assert!(t.owners(5).is_empty());
        // Remote learns are never exported again.
        assert!(drain(&t).is_empty());
        // Refresh pushes the deadline back.
        assert_eq!(
            t.learn_remote(5, BackendId(2), Ticks::from_secs(8), ttl),
            RemoteOutcome::Refreshed
        );
        assert_eq!(
            t.route_join(5, Ticks::from_secs(15)),
            JoinRoute::Owner(BackendId(2))
        );
        t.validate();
    }

    #[test]
    fn remote_owner_never_overrides_a_local_owner() {
        let t = cluster(100, 100, 64);
        let ttl = Duration::from_secs(10);
        t.learn(7, owner(1, 1, 0x11, 0));
        // Another backend named remotely: stored, but the local owner keeps routing.
        assert_eq!(
            t.learn_remote(7, BackendId(3), Ticks(0), ttl),
            RemoteOutcome::ShadowedByLocal
        );
        assert_eq!(t.route_join(7, Ticks(1)), JoinRoute::Owner(BackendId(1)));
        // The same backend named remotely: still local.
        assert_eq!(
            t.learn_remote(7, BackendId(1), Ticks(0), ttl),
            RemoteOutcome::ShadowedByLocal
        );
        assert_eq!(t.owners(7).len(), 1);
        assert_eq!(t.owners(7).as_slice()[0].subflows, 1, "no reference taken");
        // Remote removal of the local backend leaves the local owner.
        assert!(t.remove_remote(7, BackendId(1)));
        assert_eq!(t.route_join(7, Ticks(2)), JoinRoute::Owner(BackendId(1)));
        // A local collision stays ambiguous whatever the remote side says.
        t.learn(7, owner(2, 2, 0x22, 0));
        assert_eq!(t.route_join(7, Ticks(3)), JoinRoute::Ambiguous);
        // Once the local owners go, the remaining remote owner routes.
        assert!(t.remove(7, BackendId(1)));
        assert!(t.remove(7, BackendId(2)));
        assert_eq!(t.route_join(7, Ticks(4)), JoinRoute::Owner(BackendId(3)));
        t.validate();
    }

    #[test]
    fn remote_collision_is_ambiguous_and_capacity_is_bounded() {
        let t = cluster(100, 2, 64);
        let ttl = Duration::from_secs(10);
        assert_eq!(
            t.learn_remote(COLLIDING, BackendId(1), Ticks(0), ttl),
            RemoteOutcome::Inserted
        );
        assert_eq!(
            t.learn_remote(COLLIDING, BackendId(2), Ticks(0), ttl),
            RemoteOutcome::Collision
        );
        assert_eq!(t.route_join(COLLIDING, Ticks(1)), JoinRoute::Ambiguous);
        assert_eq!(
            t.learn_remote(COLLIDING, BackendId(3), Ticks(0), ttl),
            RemoteOutcome::Full,
            "MAX_REMOTE_OWNERS"
        );
        assert!(t.remove_remote(COLLIDING, BackendId(1)));
        assert!(!t.remove_remote(COLLIDING, BackendId(1)));
        assert_eq!(
            t.route_join(COLLIDING, Ticks(1)),
            JoinRoute::Owner(BackendId(2))
        );
        // Capacity 2 tokens with remote owners.
        assert_eq!(
            t.learn_remote(1, BackendId(1), Ticks(0), ttl),
            RemoteOutcome::Inserted
        );
        assert_eq!(
            t.learn_remote(2, BackendId(1), Ticks(0), ttl),
            RemoteOutcome::Full
        );
        assert_eq!(t.remote_len(), 2);
        assert!(t.remove_remote(COLLIDING, BackendId(2)));
        assert_eq!(t.remote_len(), 1);
        assert_eq!(t.route_join(COLLIDING, Ticks(1)), JoinRoute::Unknown);
        // Without a cluster nothing remote is accepted.
        let plain = small(100, 4);
        assert_eq!(
            plain.learn_remote(1, BackendId(1), Ticks(0), ttl),
            RemoteOutcome::Full
        );
        assert!(!plain.cluster_enabled());
    }

    #[test]
    fn claim_refused_by_a_live_remote_owner_of_another_backend() {
        let t = cluster(100, 100, 64);
        let ttl = Duration::from_secs(10);
        let mut o = owner(2, 1, 0x11, 0);
        o.learned_at = Ticks::from_secs(1);
        t.learn_remote(5, BackendId(1), Ticks(0), ttl);
        // A client on this instance claiming the token for another backend: refused.
        assert_eq!(t.claim(5, o), LearnOutcome::Refused);
        assert_eq!(t.route_join(5, Ticks(2)), JoinRoute::Owner(BackendId(1)));
        // The same backend (the server reused its token): accepted, local from now on.
        assert_eq!(t.claim(5, owner(1, 2, 0x22, 1)), LearnOutcome::Inserted);
        // Past the remote owner's deadline another backend may claim a fresh token.
        t.learn_remote(6, BackendId(1), Ticks(0), ttl);
        o.learned_at = Ticks::from_secs(11);
        assert_eq!(t.claim(6, o), LearnOutcome::Inserted);
        // learn (NAT: the key came from the server) is not exclusive: the local owner routes.
        t.learn_remote(7, BackendId(1), Ticks(0), ttl);
        assert_eq!(t.learn(7, owner(2, 3, 0x33, 1)), LearnOutcome::Inserted);
        assert_eq!(t.route_join(7, Ticks(2)), JoinRoute::Owner(BackendId(2)));
        t.validate();
    }

    #[test]
    fn remote_owners_expire_on_their_own() {
        let t = cluster(100, 100, 64);
        let s = Ticks::from_secs;
        t.learn_remote(1, BackendId(1), s(0), Duration::from_secs(30));
        t.learn_remote(2, BackendId(1), s(0), Duration::from_secs(60));
        t.learn_remote(2, BackendId(2), s(0), Duration::from_secs(30));
        assert_eq!(t.route_join(2, s(10)), JoinRoute::Ambiguous);
        // Past its deadline an owner stops routing at once, before any housekeeping.
        assert_eq!(t.route_join(1, s(30)), JoinRoute::Unknown);
        assert_eq!(t.route_join(2, s(31)), JoinRoute::Owner(BackendId(1)));
        // Joins do not refresh remote owners; the local idle expiry does not touch them.
        assert_eq!(t.expire(s(1000), Duration::from_secs(1)), 0);
        assert_eq!(t.expire_remote(s(31)), 2);
        assert_eq!(t.remote_len(), 1);
        // An expired owner makes room for a new one.
        t.learn_remote(3, BackendId(1), s(0), Duration::from_secs(1));
        t.learn_remote(3, BackendId(2), s(0), Duration::from_secs(1));
        assert_eq!(
            t.learn_remote(3, BackendId(4), s(5), Duration::from_secs(1)),
            RemoteOutcome::Inserted
        );
        assert_eq!(t.route_join(3, s(5)), JoinRoute::Owner(BackendId(4)));
        assert_eq!(t.expire_remote(s(100)), 2);
        assert_eq!(t.remote_len(), 0);
        assert_eq!(t.route_join(2, s(100)), JoinRoute::Unknown);
    }

    #[test]
    fn journal_records_local_changes_and_is_bounded() {
        let t = cluster(100, 100, 8);
        t.learn(1, owner(1, 1, 0, 5)); // learn
        t.learn(1, owner(1, 1, 0, 6)); // AlreadyKnown: no entry
        t.learn(1, owner(2, 2, 0, 7)); // collision: learn
        t.learn(1, owner(1, 3, 0, 8)); // reused: learn
        assert!(t.remove(1, BackendId(2)));
        assert!(!t.remove(1, BackendId(2)), "nothing removed: no entry");
        t.learn(2, owner(3, 4, 0, 9));
        assert!(t.subflow_closed(2, BackendId(3), Ticks(10)));
        t.learn(3, owner(3, 5, 0, 9));
        assert_eq!(t.remove_backend(BackendId(3)), 1);
        t.learn(4, owner(1, 6, 0, 0));
        assert_eq!(t.expire(Ticks::from_secs(100), Duration::from_secs(1)), 2);
        use JournalOp::{Learn, Remove};
        let mut got = drain(&t);
        // Purges walk the shards in their own order: compare the tail as a set.
        let tail: HashSet<_> = got.split_off(7).into_iter().collect();
        assert_eq!(
            got,
            [
                (Learn, 1, 1),
                (Learn, 1, 2),
                (Learn, 1, 1),
                (Remove, 1, 2),
                (Learn, 2, 3),
                (Remove, 2, 3),
                (Learn, 3, 3),
            ]
        );
        // 8 entries fit: (Remove, 3, 3) is the 8th; (Learn, 4, 1) and the expiries overflow.
        assert_eq!(tail, HashSet::from([(Remove, 3, 3)]));
        assert_eq!(t.journal_dropped(), 3);
        let e = t.journal_pop();
        assert!(e.is_none());
        // The refresh walk sees every local owner.
        t.learn(9, owner(1, 9, 0, 42));
        t.learn(9, owner(2, 10, 0, 43));
        let mut all = Vec::new();
        t.for_each_local(|tok, b, at| all.push((tok, b.0, at.0)));
        all.sort_unstable();
        assert_eq!(all, [(9, 1, 42), (9, 2, 43)]);
        // The journal entry carries the learn time (for the propagation delay).
        let e = t.journal_pop().unwrap();
        assert_eq!(
            (e.op, e.token, e.backend, e.at),
            (Learn, 9, BackendId(1), Ticks(42))
        );
    }

    #[test]
    fn concurrent_remote_and_local() {
        let t = cluster(10_000, 10_000, 1 << 15);
        let ttl = Duration::from_secs(100);
        std::thread::scope(|s| {
            let t = &t;
            s.spawn(move || {
                for i in 0..5000u32 {
                    t.learn(tok(i), owner(1, i, 0, 0));
                }
            });
            s.spawn(move || {
                for i in 0..5000u32 {
                    let _ = t.learn_remote(tok(i), BackendId(2), Ticks(0), ttl);
                    let _ = t.learn_remote(tok(i + 5000), BackendId(2), Ticks(0), ttl);
                }
            });
        });
        for i in 0..5000u32 {
            assert_eq!(
                t.route_join(tok(i), Ticks(1)),
                JoinRoute::Owner(BackendId(1))
            );
            assert_eq!(
                t.route_join(tok(i + 5000), Ticks(1)),
                JoinRoute::Owner(BackendId(2))
            );
        }
        assert_eq!(t.remote_len(), 10_000);
        assert_eq!(drain(&t).len(), 5000);
        assert_eq!(t.expire_remote(Ticks::from_secs(200)), 10_000);
        assert_eq!(t.remote_len(), 0);
        t.validate();
    }
}
