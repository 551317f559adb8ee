//! The per-worker flow table: 5-tuple -> backend and TCP state, with no lock and no allocation
//! after construction.
//!
//! ## Layout
//!
//! A set-associative cache, as Katran's per-CPU LRU and VPP's sticky table are in spirit:
//! `2^k` buckets of [`WAYS`] slots. A bucket's tags (32 bits of the key hash, 0 = empty) sit
//! together in one 32-byte array, so a lookup reads one tag line and then the one 64-byte entry
//! whose tag matches. Entries never move while they live, so an index stays valid until the entry
//! is removed.
//!
//! ## Bounded capacity and eviction
//!
//! An insert takes, in this order: a free slot (found in the tag line alone, without reading an
//! entry); a slot whose entry has expired (per-state timeouts, [`Timeouts`]); the oldest
//! half-open entry (SYN seen, no answer yet). It never evicts a
//! live established or closing entry for a new one: when the bucket holds only those, the insert
//! fails with [`Insert::Full`] and the caller forwards the packet statelessly by Maglev (Maglev
//! §3.3, Katran's flood guard: a SYN flood cannot push established flows out).
//!
//! Evicted entries are handed back to the caller, who releases what they reference (a token
//! subflow count).
//!
//! ## Keyed buckets
//!
//! The bucket of a key comes from [`FlowKey::keyed_hash`] with the table's [`FlowSecret`], not
//! from the public fixed hash Maglev uses, so that nobody can aim a flood at one bucket (see
//! [`FlowSecret`]). Callers hash a key once with [`FlowTable::hash`] and pass that value to
//! [`FlowTable::lookup`] and [`FlowTable::insert`].
//!
//! ## Memory
//!
//! The tag array and the entries are [`TableMem`]: on the heap ([`FlowTable::new`]), or a section
//! of the daemon's state file ([`FlowTable::with_memory`]), which outlives the process so that a
//! restarted daemon finds its flows ([`crate::state`]). Entries are plain old data for that
//! reason. Stores are ordered so that memory left by a process killed at any instruction is
//! either a valid table or repairable by [`FlowTable::repair`]: an insert writes the entry
//! before its tag, a removal clears the tag first (compiler fences order them; a killed process
//! loses no store it has made).

use core::sync::atomic::{compiler_fence, Ordering};

use crate::flow::{FlowKey, FlowKeyV4, FlowSecret, TcpV4Keys};
use crate::pool::{BackendId, VipId};
use crate::tables::mem::TableMem;
use crate::time::coarse_elapsed;

/// Slots per bucket.
pub const WAYS: usize = 8;

/// Per-state idle timeouts, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// SYN seen, handshake not complete.
    pub half_open_ms: u32,
    /// Established.
    pub established_ms: u32,
    /// FIN or RST seen.
    pub closing_ms: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            half_open_ms: 10_000,
            established_ms: 600_000,
            closing_ms: 15_000,
        }
    }
}

/// TCP state of a flow as the gateway tracks it (enough to pick a timeout and to know when the
/// handshake carries MPTCP keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
#[repr(u8)]
pub enum FlowState {
    /// Client SYN forwarded; no answer from the backend yet.
    #[default]
    SynSent = 0,
    /// The backend answered with SYN/ACK; the client's third ACK is due.
    SynAckSeen = 1,
    /// Handshake complete (or the flow was adopted mid-stream).
    Established = 2,
    /// A FIN was seen (one direction closing).
    Closing = 3,
    /// RST seen, or FINs seen both ways: kept briefly so stragglers still reach the backend
    /// (RFC 5961: a spoofed RST must not make later packets re-hash).
    Closed = 4,
}

/// Flag bits of a flow entry.
pub mod flags {
    /// The client's SYN carried MP_CAPABLE (v1): keys of this flow may be learned.
    pub const MPC_SYN: u8 = 1 << 0;
    /// The connection's token is in the token table and this entry holds a subflow reference.
    pub const TOKEN_REF: u8 = 1 << 1;
    /// This flow is an MP_JOIN subflow.
    pub const JOIN: u8 = 1 << 2;
    /// The client has sent a FIN.
    pub const CLIENT_FIN: u8 = 1 << 3;
    /// The backend has sent a FIN.
    pub const SERVER_FIN: u8 = 1 << 4;
    /// The flow was adopted from a non-SYN packet (state lost: restart, eviction, ECMP move).
    pub const ADOPTED: u8 = 1 << 5;
    /// The third ACK cross-check of the learned token has been done.
    pub const CONFIRMED: u8 = 1 << 6;
    /// The gateway owes the client an ADD_ADDR (announce mode) until it is echoed: the client's
    /// packets take the slow path meanwhile.
    pub const ANNOUNCE: u8 = 1 << 7;
}

/// One flow, keyed by its client-side 5-tuple (client -> VIP). One cache line of plain old data
/// (`bytemuck::Pod`: integers and byte arrays, no padding): any bytes form a valid entry, so a
/// table can live in memory the process did not write itself (the state file); a state byte
/// that names no state reads as [`FlowState::Closed`].
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(64))]
pub struct FlowEntry {
    /// Client -> VIP 5-tuple.
    pub key: FlowKey,
    /// The backend this flow is pinned to.
    pub backend: BackendId,
    /// The VIP the flow was opened on.
    pub vip: VipId,
    /// The port the client's packets arrive on (the return path leaves there).
    pub client_port: u8,
    /// TCP state, a [`FlowState`] as a byte: read it with [`FlowEntry::state`].
    pub state: u8,
    /// The connection token, when [`flags::TOKEN_REF`] is set.
    pub token: u32,
    /// Last packet seen, coarse milliseconds.
    pub last_seen: u32,
    /// Client-side next hop: the source MAC of the client's SYN.
    pub client_mac: [u8; 6],
    /// [`flags`] bits.
    pub flags: u8,
    /// ADD_ADDRs sent to the client (announce mode).
    pub announces: u8,
    /// What the flow's pending step waits for. Phases that never overlap own it (the
    /// pipeline's flow state machine, `pipeline::flow::state`, lists them):
    /// * a half-open DSR MPTCP flow (`SynSent`, no [`flags::TOKEN_REF`]): the sequence number
    ///   that the client's first segment after the SYN must carry, the one segment the
    ///   connection's keys are learned from;
    /// * announce mode ([`flags::ANNOUNCE`]), which starts once the keys are known: the low 16
    ///   bits of the third ACK's acknowledgment number while the gateway waits for the server
    ///   (DSR), then those of the coarse time of the last ADD_ADDR;
    /// * a watched migration (after its MP_PRIO, `pipeline::flow::migration`): the bases of the
    ///   client's (low 16 bits) and the server's (high 16 bits) DATA_ACK lead, in 64 KiB units.
    pub pending: u32,
}

impl FlowState {
    /// The state a byte stands for, if any.
    #[inline]
    pub const fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0 => Self::SynSent,
            1 => Self::SynAckSeen,
            2 => Self::Established,
            3 => Self::Closing,
            4 => Self::Closed,
            _ => return None,
        })
    }
}

impl FlowEntry {
    /// Whether `flag` is set.
    #[inline]
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// The TCP state; a byte that is no [`FlowState`] reads as [`FlowState::Closed`] (the entry
    /// expires at the closing timeout, and a new SYN on its 5-tuple is balanced afresh).
    #[inline]
    pub fn state(&self) -> FlowState {
        FlowState::from_u8(self.state).unwrap_or(FlowState::Closed)
    }

    /// Sets the TCP state.
    #[inline]
    pub fn set_state(&mut self, s: FlowState) {
        self.state = s as u8;
    }

    /// The idle timeout that applies in the entry's state.
    #[inline]
    pub fn timeout_ms(&self, t: &Timeouts) -> u32 {
        match self.state() {
            FlowState::SynSent | FlowState::SynAckSeen => t.half_open_ms,
            FlowState::Established => t.established_ms,
            FlowState::Closing | FlowState::Closed => t.closing_ms,
        }
    }

    /// Whether the entry is past its idle timeout at `now_ms`.
    #[inline]
    pub fn expired(&self, now_ms: u32, t: &Timeouts) -> bool {
        coarse_elapsed(now_ms, self.last_seen) > self.timeout_ms(t)
    }
}

/// Result of [`FlowTable::insert`].
#[derive(Debug, Clone, Copy)]
pub enum Insert {
    /// Stored at this index; if a stale or half-open entry had to make room, it is returned so the
    /// caller can release what it referenced.
    Inserted {
        /// Index of the new entry.
        index: u32,
        /// The entry that was evicted, if any.
        evicted: Option<FlowEntry>,
        /// True when the evicted entry was still live (a half-open flow pushed out).
        evicted_live: bool,
    },
    /// Every slot of the bucket holds a live established/closing flow: nothing was stored.
    Full,
}

/// Whether the entry at `i` has the key `key` ([`FlowTable::insert_new`]'s rare case).
#[cold]
#[inline(never)]
fn key_at(entries: &[FlowEntry], i: usize, key: FlowKey) -> bool {
    entries.get(i).is_some_and(|e| e.key == key)
}

/// Result of [`FlowTable::insert_new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum New {
    /// The key has an entry already, at this index: nothing was stored.
    Exists(u32),
    /// The new entry is stored at this index.
    Inserted(u32),
    /// No entry of the key, and no free way in its bucket: nothing was stored
    /// ([`FlowTable::insert`] decides what makes room).
    Full,
}

/// Flow table configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowTableConfig {
    /// Maximum number of flows (rounded up to a power-of-two number of buckets of [`WAYS`]).
    pub capacity: usize,
    /// Per-state timeouts.
    pub timeouts: Timeouts,
}

impl Default for FlowTableConfig {
    fn default() -> Self {
        Self {
            capacity: 1 << 20,
            timeouts: Timeouts::default(),
        }
    }
}

/// The per-worker flow table (see the module documentation).
#[derive(Debug)]
pub struct FlowTable {
    tags: TableMem<[u32; WAYS]>,
    entries: TableMem<FlowEntry>,
    secret: FlowSecret,
    /// The secret's words for IPv4 TCP keys, precomputed.
    tcp_v4: TcpV4Keys,
    mask: usize,
    len: usize,
    timeouts: Timeouts,
    sweep_cursor: usize,
    visit_cursor: usize,
}

#[inline]
fn tag_of(hash: u64) -> u32 {
    // Never 0: 0 marks a free slot.
    ((hash >> 32) as u32) | 1
}

/// Why [`FlowTable::with_memory`] refused its memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadGeometry {
    /// Buckets of tags given (a power of two is needed).
    pub buckets: usize,
    /// Entries given ([`WAYS`] per bucket are needed).
    pub entries: usize,
}

impl core::fmt::Display for BadGeometry {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{} buckets of tags and {} entries: a power of two of buckets and {WAYS} entries per bucket are needed",
            self.buckets, self.entries
        )
    }
}

/// What [`FlowTable::repair`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Repair {
    /// Entries kept.
    pub kept: usize,
    /// Slots cleared because they were not a consistent entry (tag not the key's under this
    /// table's secret, or not in the key's bucket).
    pub invalid: usize,
    /// Consistent entries the caller's policy dropped.
    pub dropped: usize,
}

impl FlowTable {
    /// Buckets a table of `capacity` flows has: a power of two, at least 1.
    pub fn buckets_for(capacity: usize) -> usize {
        capacity.div_ceil(WAYS).max(1).next_power_of_two()
    }

    /// Allocates the whole table on the heap, keyed with [`FlowSecret::FIXED`] (tests, benches,
    /// replays). Nothing allocates afterwards.
    pub fn new(cfg: FlowTableConfig) -> Self {
        let buckets = Self::buckets_for(cfg.capacity);
        let table = Self::with_memory(
            cfg,
            FlowSecret::FIXED,
            TableMem::zeroed(buckets),
            TableMem::zeroed(buckets * WAYS),
        );
        // The sizes were computed just above, so the memory fits.
        table.unwrap_or_else(|_| unreachable!("heap memory of the right size"))
    }

    /// A table over memory the caller provides (a section of the state file): `tags` holds a
    /// power of two of buckets, `entries` [`WAYS`] per bucket. The memory is taken as it is:
    /// zeroed memory is an empty table; memory a previous process left must go through
    /// [`repair`](Self::repair) before use. `cfg.capacity` is ignored (the memory decides).
    pub fn with_memory(
        cfg: FlowTableConfig,
        secret: FlowSecret,
        tags: TableMem<[u32; WAYS]>,
        entries: TableMem<FlowEntry>,
    ) -> Result<Self, BadGeometry> {
        let buckets = tags.len();
        if !buckets.is_power_of_two() || entries.len() != buckets * WAYS {
            return Err(BadGeometry {
                buckets,
                entries: entries.len(),
            });
        }
        let len = tags.iter().flatten().filter(|&&t| t != 0).count();
        Ok(Self {
            tags,
            entries,
            secret,
            tcp_v4: secret.tcp_v4(),
            mask: buckets - 1,
            len,
            timeouts: cfg.timeouts,
            sweep_cursor: 0,
            visit_cursor: 0,
        })
    }

    /// Gives the table's memory back (for a re-attach in tests, or a copy into a new layout).
    pub fn into_memory(self) -> (TableMem<[u32; WAYS]>, TableMem<FlowEntry>) {
        (self.tags, self.entries)
    }

    /// The bucket-index hash of `key` under this table's secret: what [`lookup`](Self::lookup)
    /// and [`insert`](Self::insert) take.
    #[inline]
    pub fn hash(&self, key: &FlowKey) -> u64 {
        key.keyed_hash(self.secret)
    }

    /// The table's secret (for a table that must find the same buckets: the state file).
    pub fn secret(&self) -> FlowSecret {
        self.secret
    }

    /// The table's secret as [`TcpV4Keys`]: the hash of IPv4 TCP keys read from a frame.
    #[inline(always)]
    pub fn tcp_v4(&self) -> TcpV4Keys {
        self.tcp_v4
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    /// Number of occupied slots (live or not yet reclaimed).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no slot is occupied.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The timeouts in force.
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    #[inline]
    fn bucket(&self, hash: u64) -> usize {
        (hash as usize) & self.mask
    }

    /// Finds the entry of `key`, whose [`hash`](Self::hash) is `hash`.
    #[inline(always)]
    pub fn lookup(&self, key: &FlowKey, hash: u64) -> Option<u32> {
        self.find(key, hash).map(|i| i as u32)
    }

    /// The entry of an IPv4 TCP key given as its frame words ([`FlowKeyV4`]), whose
    /// [`hash`](Self::hash) is `hash`, mutably: the established path's lookup (the 38-byte key
    /// is never built; a hit compares it whole, as words under one test).
    #[inline(always)]
    pub fn lookup_v4_mut(&mut self, key: &FlowKeyV4, hash: u64) -> Option<&mut FlowEntry> {
        let b = self.bucket(hash);
        let tag = tag_of(hash);
        let tags = self.tags.get(b)?;
        // The bucket's entries as an array: one bounds check, none per way.
        let ents = self.entries.as_chunks_mut::<WAYS>().0.get_mut(b)?;
        let way = tags
            .iter()
            .zip(ents.iter())
            .position(|(&t, e)| t == tag && e.key.same_v4(key))?;
        ents.get_mut(way)
    }

    #[inline(always)]
    fn find(&self, key: &FlowKey, hash: u64) -> Option<usize> {
        let b = self.bucket(hash);
        let tag = tag_of(hash);
        let tags = &self.tags[b];
        // Ways fill from the first free one, so a flow is usually in the first few: a scan that
        // stops at the first match whose key agrees costs less than comparing all eight tags.
        for (way, &t) in tags.iter().enumerate() {
            if t == tag {
                let i = b * WAYS + way;
                if self.entries.get(i).is_some_and(|e| e.key == *key) {
                    return Some(i);
                }
            }
        }
        None
    }

    /// Brings the buckets of a burst of hashes into the cache before they are looked up: first
    /// every tag line, then the entry of every tag match. The loads of one pass are independent,
    /// so their cache misses overlap instead of queueing one behind the other (real prefetch
    /// instructions need `unsafe`, which this crate forbids; plain loads whose results are folded
    /// into one value get the same overlap). Returns that value, for the caller to consume once.
    #[inline]
    pub fn warm(&self, hashes: &[u64]) -> u32 {
        let mut acc = 0u32;
        for &h in hashes {
            acc ^= self.tags[self.bucket(h)][0];
        }
        let buckets = self.entries.as_chunks::<WAYS>().0;
        for &h in hashes {
            let b = self.bucket(h);
            let tag = tag_of(h);
            if let (Some(tags), Some(ents)) = (self.tags.get(b), buckets.get(b)) {
                if let Some((_, e)) = tags.iter().zip(ents).find(|(&t, _)| t == tag) {
                    acc ^= e.last_seen;
                }
            }
        }
        acc
    }

    /// The entry at `index` (from [`lookup`](Self::lookup) or [`insert`](Self::insert)).
    #[inline]
    pub fn entry(&self, index: u32) -> &FlowEntry {
        &self.entries[index as usize]
    }

    /// The entry at `index`, mutably.
    #[inline]
    pub fn entry_mut(&mut self, index: u32) -> &mut FlowEntry {
        &mut self.entries[index as usize]
    }

    /// Inserts `entry` (whose key's [`hash`](Self::hash) is `hash`) at `now_ms`. The caller has
    /// checked that the key is not present.
    ///
    /// The common case, a free slot, is found in the tag line alone (the entries' lines are read
    /// only when the bucket is full: a new flow then costs one cache line, not one per occupied
    /// way) by [`insert_free`](Self::insert_free); a full bucket takes
    /// `insert_evicting`, out of line.
    #[inline]
    pub fn insert(&mut self, hash: u64, entry: FlowEntry, now_ms: u32) -> Insert {
        match self.insert_free(hash, now_ms, || entry) {
            Some(index) => Insert::Inserted {
                index,
                evicted: None,
                evicted_live: false,
            },
            None => self.insert_evicting(hash, entry, now_ms),
        }
    }

    /// [`insert`](Self::insert)'s common case alone: stores the entry `make` builds (in place)
    /// in a free slot of its bucket and returns its index; `None`, storing nothing and not
    /// calling `make`, when the bucket has no free slot (then [`insert`](Self::insert) decides
    /// what makes room).
    #[inline(always)]
    pub fn insert_free(
        &mut self,
        hash: u64,
        now_ms: u32,
        make: impl FnOnce() -> FlowEntry,
    ) -> Option<u32> {
        let b = self.bucket(hash);
        // The first free way (ways fill from the first free one, so the scan is short).
        let way = self.tags[b].iter().position(|&t| t == 0)?;
        let i = b * WAYS + way;
        self.len += 1;
        let e = &mut self.entries[i];
        *e = make();
        e.last_seen = now_ms;
        // The entry before its tag: a process killed in between leaves a tag that does not match
        // the entry's key, which `repair` clears.
        compiler_fence(Ordering::Release);
        self.tags[b][way] = tag_of(hash);
        Some(i as u32)
    }

    /// A new connection's lookup and insert in one go: when the table holds no entry of `key`
    /// (whose [`hash`](Self::hash) is `hash`) and its bucket has a free way, stores the entry
    /// `make` builds there (in place, at `now_ms`), as [`insert_free`](Self::insert_free) would
    /// have. The bucket and its tag line are located and read once, for the lookup and the
    /// free way alike. Calls `make` only for [`New::Inserted`].
    #[inline(always)]
    pub fn insert_new(
        &mut self,
        key: FlowKey,
        hash: u64,
        now_ms: u32,
        make: impl FnOnce() -> FlowEntry,
    ) -> New {
        let b = self.bucket(hash);
        let tag = tag_of(hash);
        let Some(tags) = self.tags.get_mut(b) else {
            return New::Full; // never: the mask keeps the bucket in the table
        };
        // As `find`: the first way whose tag and key agree. A new key's tag seldom matches
        // any (one chance in 2^31 per way), so the key is compared out of line.
        for (way, &t) in tags.iter().enumerate() {
            if t == tag && key_at(&self.entries, b * WAYS + way, key) {
                return New::Exists((b * WAYS + way) as u32);
            }
        }
        // As `insert_free`: the first free way.
        let Some(way) = tags.iter().position(|&t| t == 0) else {
            return New::Full;
        };
        let i = b * WAYS + way;
        let Some(e) = self.entries.get_mut(i) else {
            return New::Full; // never: WAYS entries per bucket
        };
        *e = make();
        e.last_seen = now_ms;
        self.len += 1;
        // The entry before its tag (see `insert_free`).
        compiler_fence(Ordering::Release);
        tags[way] = tag;
        New::Inserted(i as u32)
    }

    /// [`insert`](Self::insert) when the caller has just seen that the bucket of `hash` has
    /// no free way ([`New::Full`] from [`insert_new`](Self::insert_new), the table unchanged
    /// since): what makes room, without looking for a free way again (with one, an expired or
    /// half-open entry might be taken before it: only for a bucket seen full).
    #[inline]
    pub fn insert_full(&mut self, hash: u64, entry: FlowEntry, now_ms: u32) -> Insert {
        self.insert_evicting(hash, entry, now_ms)
    }

    /// [`insert`](Self::insert) into a bucket without a free slot: a slot whose entry expired,
    /// else the oldest half-open one, else none.
    #[inline(never)]
    fn insert_evicting(&mut self, hash: u64, mut entry: FlowEntry, now_ms: u32) -> Insert {
        let b = self.bucket(hash);
        let base = b * WAYS;
        let t = self.timeouts;
        let mut choice: Option<(usize, bool)> = None; // (way, evicts a live entry)
                                                      // The oldest half-open entry so far, ranked by its age + 1 (0: none yet), and its way:
                                                      // the first of equal ages, as only a strictly older one replaces it.
        let (mut oldest, mut oldest_way) = (0u64, 0usize);
        for (way, e) in self.entries[base..base + WAYS].iter().enumerate() {
            // What `FlowEntry::expired` decides, with the state and the age read once (a state
            // byte that names no state reads as `Closed`, as `FlowEntry::state` has it).
            let state = e.state;
            let age = coarse_elapsed(now_ms, e.last_seen);
            let half_open = state <= FlowState::SynAckSeen as u8;
            let timeout = if half_open {
                t.half_open_ms
            } else if state == FlowState::Established as u8 {
                t.established_ms
            } else {
                t.closing_ms
            };
            if age > timeout {
                // The first expired slot is taken: nothing after it matters.
                choice = Some((way, false));
                break;
            }
            let rank = if half_open { u64::from(age) + 1 } else { 0 };
            if rank > oldest {
                (oldest, oldest_way) = (rank, way);
            }
        }
        let (way, live) = match choice {
            Some(c) => c,
            None if oldest > 0 => (oldest_way, true),
            None => return Insert::Full,
        };
        let i = base + way;
        let evicted = if self.tags[b][way] != 0 {
            Some(self.entries[i])
        } else {
            self.len += 1;
            None
        };
        entry.last_seen = now_ms;
        self.entries[i] = entry;
        // The entry before its tag: a process killed in between leaves a tag that does not match
        // the entry's key, which `repair` clears.
        compiler_fence(Ordering::Release);
        self.tags[b][way] = tag_of(hash);
        Insert::Inserted {
            index: i as u32,
            evicted,
            evicted_live: live,
        }
    }

    /// Removes the entry at `index` and returns it.
    pub fn remove(&mut self, index: u32) -> Option<FlowEntry> {
        let i = index as usize;
        let (b, way) = (i / WAYS, i % WAYS);
        if self.tags.get(b).is_none_or(|t| t[way] == 0) {
            return None;
        }
        self.tags[b][way] = 0;
        self.len -= 1;
        Some(self.entries[i])
    }

    /// Reclaims expired entries in the next `buckets` buckets (a slice of the table per call, so a
    /// worker can spread housekeeping over its bursts). Each removed entry is passed to `on_evict`.
    /// Returns the number removed.
    pub fn sweep(
        &mut self,
        now_ms: u32,
        buckets: usize,
        mut on_evict: impl FnMut(&FlowEntry),
    ) -> usize {
        let t = self.timeouts;
        let mut removed = 0;
        for _ in 0..buckets.min(self.tags.len()) {
            let b = self.sweep_cursor;
            self.sweep_cursor = (self.sweep_cursor + 1) & self.mask;
            for way in 0..WAYS {
                if self.tags[b][way] != 0 && self.entries[b * WAYS + way].expired(now_ms, &t) {
                    self.tags[b][way] = 0;
                    self.len -= 1;
                    removed += 1;
                    on_evict(&self.entries[b * WAYS + way]);
                }
            }
        }
        removed
    }

    /// Visits the live entries of the next `buckets` buckets (its own cursor, round the table like
    /// [`FlowTable::sweep`]); `f` may change an entry but not its key.
    pub fn visit(&mut self, buckets: usize, mut f: impl FnMut(&mut FlowEntry)) {
        for _ in 0..buckets.min(self.tags.len()) {
            let b = self.visit_cursor;
            self.visit_cursor = (self.visit_cursor + 1) & self.mask;
            for way in 0..WAYS {
                if self.tags[b][way] != 0 {
                    f(&mut self.entries[b * WAYS + way]);
                }
            }
        }
    }

    /// Number of buckets (one full sweep is this many bucket visits).
    pub fn buckets(&self) -> usize {
        self.tags.len()
    }

    /// Makes memory a previous process left (possibly killed at any instruction, possibly
    /// corrupted) a valid table: every occupied slot whose tag is not its key's under this
    /// table's secret, in the key's bucket, is cleared; `keep` then decides on each consistent
    /// entry (it may also correct it, e.g. restamp its `last_seen`). Returns what was done.
    /// Housekeeping: walks the whole table.
    pub fn repair(&mut self, mut keep: impl FnMut(&mut FlowEntry) -> bool) -> Repair {
        let mut r = Repair::default();
        for b in 0..self.tags.len() {
            for way in 0..WAYS {
                let tag = self.tags[b][way];
                if tag == 0 {
                    continue;
                }
                let i = b * WAYS + way;
                let h = self.entries[i].key.keyed_hash(self.secret);
                if tag_of(h) != tag || self.bucket(h) != b {
                    self.tags[b][way] = 0;
                    r.invalid += 1;
                } else if keep(&mut self.entries[i]) {
                    r.kept += 1;
                } else {
                    self.tags[b][way] = 0;
                    r.dropped += 1;
                }
            }
        }
        // Two slots of one bucket with the same key (a crash between re-inserting a key and
        // removing its old slot cannot make one today, but memory can hold anything): keep the
        // first, so that lookups stay unambiguous.
        for b in 0..self.tags.len() {
            for way in 1..WAYS {
                if self.tags[b][way] == 0 {
                    continue;
                }
                let key = self.entries[b * WAYS + way].key;
                let dup = (0..way).any(|w| {
                    self.tags[b][w] == self.tags[b][way] && self.entries[b * WAYS + w].key == key
                });
                if dup {
                    self.tags[b][way] = 0;
                    r.kept -= 1;
                    r.invalid += 1;
                }
            }
        }
        self.len = r.kept;
        self.sweep_cursor = 0;
        r
    }

    /// Calls `f` on every occupied entry, mutably (housekeeping: a walk of the whole table).
    /// `f` must not change an entry's key.
    pub fn for_each_mut(&mut self, mut f: impl FnMut(&mut FlowEntry)) {
        for b in 0..self.tags.len() {
            for way in 0..WAYS {
                if self.tags[b][way] != 0 {
                    f(&mut self.entries[b * WAYS + way]);
                }
            }
        }
    }

    /// Iterates over occupied entries (for tests and the control plane's flow dumps; not for the
    /// packet path).
    pub fn iter(&self) -> impl Iterator<Item = (u32, &FlowEntry)> {
        self.tags.iter().enumerate().flat_map(move |(b, tags)| {
            tags.iter()
                .enumerate()
                .filter(|(_, &t)| t != 0)
                .map(move |(w, _)| ((b * WAYS + w) as u32, &self.entries[b * WAYS + w]))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::IpAddr;

    fn key(i: u32) -> FlowKey {
        let src: IpAddr = core::net::Ipv4Addr::from(0x0a00_0000 + i).into();
        FlowKey::new(
            src,
            (i % 60000) as u16 + 1024,
            "192.0.2.1".parse().unwrap(),
            80,
            6,
        )
    }

    fn entry(k: FlowKey, state: FlowState) -> FlowEntry {
        FlowEntry {
            key: k,
            state: state as u8,
            ..Default::default()
        }
    }

    fn small() -> FlowTable {
        FlowTable::new(FlowTableConfig {
            capacity: 64,
            timeouts: Timeouts {
                half_open_ms: 100,
                established_ms: 1000,
                closing_ms: 10,
            },
        })
    }

    #[test]
    fn insert_lookup_remove() {
        let mut t = small();
        let k = key(1);
        let h = t.hash(&k);
        assert_eq!(t.lookup(&k, h), None);
        let Insert::Inserted { index, evicted, .. } = t.insert(h, entry(k, FlowState::SynSent), 5)
        else {
            panic!("insert failed")
        };
        assert!(evicted.is_none());
        assert_eq!(t.lookup(&k, h), Some(index));
        assert_eq!(t.entry(index).last_seen, 5);
        assert_eq!(t.len(), 1);
        assert_eq!(t.remove(index).unwrap().key, k);
        assert_eq!(t.lookup(&k, h), None);
        assert!(t.is_empty());
        assert!(t.remove(index).is_none());
    }

    /// Keys that all land in bucket 0 of an 8-bucket table.
    fn same_bucket_keys(t: &FlowTable, n: usize) -> Vec<FlowKey> {
        (0..100_000u32)
            .map(key)
            .filter(|k| (t.hash(k) as usize) & t.mask == 0)
            .take(n)
            .collect()
    }

    #[test]
    fn full_bucket_of_established_refuses_new_flows() {
        let mut t = small();
        let keys = same_bucket_keys(&t, WAYS + 1);
        for k in &keys[..WAYS] {
            assert!(matches!(
                t.insert(t.hash(k), entry(*k, FlowState::Established), 0),
                Insert::Inserted { .. }
            ));
        }
        assert!(matches!(
            t.insert(
                t.hash(&keys[WAYS]),
                entry(keys[WAYS], FlowState::SynSent),
                1
            ),
            Insert::Full
        ));
        for k in &keys[..WAYS] {
            assert!(
                t.lookup(k, t.hash(k)).is_some(),
                "an established flow was evicted"
            );
        }
    }

    #[test]
    fn insert_new_is_a_lookup_and_insert_free() {
        // Against `lookup` then `insert` on a twin table: the same answers, the same ways.
        let mut t = small();
        let mut twin = small();
        let keys = same_bucket_keys(&t, WAYS + 2);
        let mut made = 0;
        let mut step = |t: &mut FlowTable, twin: &mut FlowTable, k: &FlowKey, now: u32| {
            let h = t.hash(k);
            let got = t.insert_new(*k, h, now, || {
                made += 1;
                entry(*k, FlowState::Established)
            });
            let want = match twin.lookup(k, h) {
                Some(i) => New::Exists(i),
                None => match twin.insert_free(h, now, || entry(*k, FlowState::Established)) {
                    Some(i) => New::Inserted(i),
                    None => New::Full,
                },
            };
            assert_eq!(got, want);
            got
        };
        for k in &keys[..WAYS - 1] {
            assert!(matches!(step(&mut t, &mut twin, k, 5), New::Inserted(_)));
        }
        // A hole in the middle of the bucket is the first free way.
        let hole = t.lookup(&keys[2], t.hash(&keys[2])).unwrap();
        t.remove(hole);
        twin.remove(hole);
        assert_eq!(
            step(&mut t, &mut twin, &keys[WAYS - 1], 6),
            New::Inserted(hole)
        );
        assert!(matches!(
            step(&mut t, &mut twin, &keys[0], 7),
            New::Exists(_)
        ));
        assert!(matches!(
            step(&mut t, &mut twin, &keys[WAYS], 8),
            New::Inserted(_)
        ));
        assert_eq!(step(&mut t, &mut twin, &keys[WAYS + 1], 9), New::Full);
        assert_eq!(made, WAYS + 1);
        assert_eq!(t.len(), WAYS);
        for (i, e) in t.iter() {
            assert_eq!(e.key, twin.entry(i).key);
            assert_eq!(e.last_seen, twin.entry(i).last_seen);
        }
    }

    #[test]
    fn half_open_is_evicted_before_refusing_and_oldest_first() {
        let mut t = small();
        let keys = same_bucket_keys(&t, WAYS + 1);
        for (i, k) in keys[..WAYS].iter().enumerate() {
            let st = if i < 2 {
                FlowState::SynSent
            } else {
                FlowState::Established
            };
            assert!(matches!(
                t.insert(t.hash(k), entry(*k, st), i as u32),
                Insert::Inserted { .. }
            ));
        }
        let Insert::Inserted {
            evicted,
            evicted_live,
            ..
        } = t.insert(
            t.hash(&keys[WAYS]),
            entry(keys[WAYS], FlowState::SynSent),
            50,
        )
        else {
            panic!("expected an eviction")
        };
        assert!(evicted_live);
        assert_eq!(
            evicted.unwrap().key,
            keys[0],
            "the oldest half-open entry goes first"
        );
    }

    #[test]
    fn eviction_takes_the_first_expired_else_the_first_oldest_half_open() {
        // Against the rule written plainly, over buckets of random states (bytes that name no
        // state too), ages and ties.
        let mut x = 0x5eed_u64;
        let mut next = |n: u64| {
            x = crate::flow::fmix(x.wrapping_add(0x9e37_79b9_7f4a_7c15));
            x % n
        };
        for round in 0..2000 {
            let mut t = small();
            let keys = same_bucket_keys(&t, WAYS + 1);
            let now = 1_000_000u32;
            let mut idx = Vec::new();
            for k in &keys[..WAYS] {
                let Insert::Inserted { index, .. } =
                    t.insert(t.hash(k), entry(*k, FlowState::SynSent), 0)
                else {
                    panic!("an empty bucket has room")
                };
                let e = t.entry_mut(index);
                e.state = [0, 1, 2, 3, 4, 9][next(6) as usize];
                // Few distinct ages, so that ties are common; some past the timeouts.
                e.last_seen = now.wrapping_sub([5, 5_000, 20_000, 700_000][next(4) as usize]);
                idx.push(index);
            }
            let timeouts = *t.timeouts();
            let entries: Vec<FlowEntry> = idx.iter().map(|&i| *t.entry(i)).collect();
            let expired = entries.iter().position(|e| e.expired(now, &timeouts));
            let mut oldest: Option<(usize, u32)> = None;
            for (w, e) in entries.iter().enumerate() {
                let age = now.wrapping_sub(e.last_seen);
                if e.state() <= FlowState::SynAckSeen && oldest.is_none_or(|(_, a)| age > a) {
                    oldest = Some((w, age));
                }
            }
            let want = match (expired, oldest) {
                (Some(w), _) => Some((w, false)),
                (None, Some((w, _))) => Some((w, true)),
                (None, None) => None,
            };
            let got = t.insert(
                t.hash(&keys[WAYS]),
                entry(keys[WAYS], FlowState::SynSent),
                now,
            );
            match (got, want) {
                (Insert::Full, None) => {}
                (
                    Insert::Inserted {
                        index,
                        evicted,
                        evicted_live,
                    },
                    Some((w, live)),
                ) => {
                    assert_eq!(index, idx[w], "round {round}");
                    assert_eq!(evicted_live, live, "round {round}");
                    assert_eq!(evicted.map(|e| e.key), Some(keys[w]), "round {round}");
                }
                (got, want) => panic!("round {round}: {got:?}, expected {want:?}"),
            }
        }
    }

    #[test]
    fn expired_entries_are_reused_and_swept() {
        let mut t = small();
        let keys = same_bucket_keys(&t, WAYS + 1);
        for k in &keys[..WAYS] {
            let _ = t.insert(t.hash(k), entry(*k, FlowState::Established), 0);
        }
        // 1001 ms later every established entry has expired: a new flow takes a slot.
        let Insert::Inserted {
            evicted,
            evicted_live,
            ..
        } = t.insert(
            t.hash(&keys[WAYS]),
            entry(keys[WAYS], FlowState::SynSent),
            1001,
        )
        else {
            panic!()
        };
        assert!(evicted.is_some() && !evicted_live);
        let mut seen = 0;
        let n = t.sweep(1001, t.buckets(), |_| seen += 1);
        assert_eq!(n, WAYS - 1);
        assert_eq!(seen, WAYS - 1);
        assert_eq!(t.len(), 1);
        assert_eq!(t.iter().count(), 1);
    }

    #[test]
    fn timestamps_wrap() {
        let t = Timeouts::default();
        let e = FlowEntry {
            last_seen: u32::MAX - 10,
            state: FlowState::Established as u8,
            ..Default::default()
        };
        assert!(!e.expired(5, &t));
        assert!(e.expired(t.established_ms, &t));
    }

    #[test]
    fn entry_is_one_cache_line() {
        assert_eq!(core::mem::size_of::<FlowEntry>(), 64);
    }

    /// An IPv6 client of one /64 (what a flood needs: 64 bits of source to choose).
    fn key6(i: u32) -> FlowKey {
        let src = core::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, (i >> 16) as u16, i as u16);
        FlowKey::new(src.into(), 40000, "2001:db8:1::1".parse().unwrap(), 80, 6)
    }

    /// 64 established flows whose public fixed hash names one bucket (a sender who controls its
    /// source can make any number: the fixed hash is invertible), then a victim of that bucket.
    fn flood(secret: FlowSecret) -> (usize, bool) {
        let cfg = FlowTableConfig {
            capacity: 4096,
            timeouts: Timeouts::default(),
        };
        let buckets = FlowTable::buckets_for(cfg.capacity) as u64;
        let mut keys = (0..1_000_000u32)
            .map(key6)
            .filter(|k| k.hash() % buckets == 3)
            .take(65);
        let victim = keys.next().unwrap();
        let flood: Vec<FlowKey> = keys.collect();
        assert_eq!(flood.len(), 64);
        let mut t = FlowTable::with_memory(
            cfg,
            secret,
            TableMem::zeroed(buckets as usize),
            TableMem::zeroed(buckets as usize * WAYS),
        )
        .unwrap();
        let stored = flood
            .iter()
            .filter(|k| {
                let h = t.hash(k);
                matches!(
                    t.insert(h, entry(**k, FlowState::Established), 0),
                    Insert::Inserted { .. }
                )
            })
            .count();
        let h = t.hash(&victim);
        let victim_in = matches!(
            t.insert(h, entry(victim, FlowState::SynSent), 1),
            Insert::Inserted { .. }
        );
        (stored, victim_in)
    }

    #[test]
    fn a_flood_of_one_public_bucket_has_no_effect_on_keyed_buckets() {
        // The old index (the public hash): 8 of the 64 flows fill the bucket, the rest and the
        // victim are refused (they would be forwarded statelessly, MPTCP keys not learned).
        assert_eq!(flood(FlowSecret::PUBLIC), (WAYS, false));
        // Keyed: every flow and the victim find a slot, whatever the secret.
        for secret in [
            FlowSecret::FIXED,
            FlowSecret(1),
            FlowSecret(0xdead_beef_0bad_f00d),
        ] {
            assert_eq!(flood(secret), (64, true), "{secret:?}");
        }
    }

    #[test]
    fn repair_clears_inconsistent_slots_and_applies_the_policy() {
        let mut t = small();
        let keys: Vec<FlowKey> = (0..20).map(key).collect();
        for k in &keys {
            let h = t.hash(k);
            let _ = t.insert(h, entry(*k, FlowState::Established), 0);
        }
        assert_eq!(t.len(), 20);
        let (mut tags, mut entries) = t.into_memory();
        // A slot whose entry is not its tag's (a write cut short), one in the wrong bucket, and
        // garbage in a free slot's entry (harmless: the tag says free).
        let used: Vec<usize> = (0..entries.len())
            .filter(|&i| tags[i / WAYS][i % WAYS] != 0)
            .collect();
        entries[used[0]].key.src_port ^= 1;
        let (b, w) = (used[1] / WAYS, used[1] % WAYS);
        let other = (b + 1) % tags.len();
        let free = (0..WAYS).find(|&w| tags[other][w] == 0).unwrap();
        tags[other][free] = tags[b][w];
        entries[other * WAYS + free] = entries[used[1]];
        tags[b][w] = 0;
        let spare = (0..entries.len())
            .find(|&i| tags[i / WAYS][i % WAYS] == 0)
            .unwrap();
        entries[spare] = entry(key(999), FlowState::Established);
        let mut t =
            FlowTable::with_memory(FlowTableConfig::default(), FlowSecret::FIXED, tags, entries)
                .unwrap();
        // Drop one consistent entry by policy, restamp the others.
        let r = t.repair(|e| {
            e.last_seen = 77;
            e.key != keys[5]
        });
        assert_eq!(
            r,
            Repair {
                kept: 17,
                invalid: 2,
                dropped: 1
            }
        );
        assert_eq!(t.len(), 17);
        assert!(t.iter().all(|(_, e)| e.last_seen == 77));
        assert!(t.lookup(&keys[5], t.hash(&keys[5])).is_none());
        // A table keyed with another secret finds nothing consistent.
        let (tags, entries) = t.into_memory();
        let mut t =
            FlowTable::with_memory(FlowTableConfig::default(), FlowSecret(9), tags, entries)
                .unwrap();
        assert_eq!(t.repair(|_| true).kept, 0);
        assert!(t.is_empty());
    }

    #[test]
    fn memory_of_the_wrong_shape_is_refused() {
        let cfg = FlowTableConfig::default();
        let e = FlowTable::with_memory(
            cfg,
            FlowSecret::FIXED,
            TableMem::zeroed(3),
            TableMem::zeroed(3 * WAYS),
        )
        .unwrap_err();
        assert_eq!(e.buckets, 3);
        assert!(FlowTable::with_memory(
            cfg,
            FlowSecret::FIXED,
            TableMem::zeroed(4),
            TableMem::zeroed(3 * WAYS),
        )
        .is_err());
    }

    #[test]
    fn any_state_byte_reads_as_a_state() {
        for b in 0..=u8::MAX {
            let e = FlowEntry {
                state: b,
                ..Default::default()
            };
            match FlowState::from_u8(b) {
                Some(s) => assert_eq!((e.state(), s as u8), (s, b)),
                None => assert_eq!(e.state(), FlowState::Closed),
            }
        }
    }

    #[test]
    fn capacity_is_bounded_and_never_grows() {
        let mut t = small();
        let cap = t.capacity();
        let mut stored = 0;
        for i in 0..10_000 {
            let k = key(i);
            if let Insert::Inserted { .. } =
                t.insert(t.hash(&k), entry(k, FlowState::Established), 0)
            {
                stored += 1;
            }
        }
        assert_eq!(t.capacity(), cap);
        assert!(t.len() <= cap);
        assert_eq!(t.len(), stored.min(cap));
    }
}
