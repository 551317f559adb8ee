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
//! An insert takes, in this order: a free slot; a slot whose entry has expired (per-state
//! timeouts, [`Timeouts`]); the oldest half-open entry (SYN seen, no answer yet). It never evicts a
//! live established or closing entry for a new one: when the bucket holds only those, the insert
//! fails with [`Insert::Full`] and the caller forwards the packet statelessly by Maglev (Maglev
//! §3.3, Katran's flood guard: a SYN flood cannot push established flows out).
//!
//! Evicted entries are handed back to the caller, who releases what they reference (a token
//! subflow count).

use crate::flow::FlowKey;
use crate::pool::{BackendId, VipId};
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

/// One flow, keyed by its client-side 5-tuple (client -> VIP). One cache line of plain data
/// (integers and byte arrays): any bytes form a valid entry, so a table can live in memory the
/// process did not write itself; a state byte that names no state reads as
/// [`FlowState::Closed`].
#[derive(Debug, Clone, Copy, Default)]
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
    /// What the flow's pending step waits for. Two phases that never overlap own it (the
    /// pipeline's flow state machine, `pipeline::flow::state`, lists them):
    /// * a half-open DSR MPTCP flow (`SynSent`, no [`flags::TOKEN_REF`]): the sequence number
    ///   that the client's first segment after the SYN must carry, the one segment the
    ///   connection's keys are learned from;
    /// * announce mode ([`flags::ANNOUNCE`]), which starts once the keys are known: the low 16
    ///   bits of the third ACK's acknowledgment number while the gateway waits for the server
    ///   (DSR), then those of the coarse time of the last ADD_ADDR.
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
    tags: Box<[[u32; WAYS]]>,
    entries: Box<[FlowEntry]>,
    mask: usize,
    len: usize,
    timeouts: Timeouts,
    sweep_cursor: usize,
}

#[inline]
fn tag_of(hash: u64) -> u32 {
    // Never 0: 0 marks a free slot.
    ((hash >> 32) as u32) | 1
}

impl FlowTable {
    /// Allocates the whole table. Nothing allocates afterwards.
    pub fn new(cfg: FlowTableConfig) -> Self {
        let buckets = cfg.capacity.div_ceil(WAYS).max(1).next_power_of_two();
        Self {
            tags: vec![[0u32; WAYS]; buckets].into_boxed_slice(),
            entries: vec![FlowEntry::default(); buckets * WAYS].into_boxed_slice(),
            mask: buckets - 1,
            len: 0,
            timeouts: cfg.timeouts,
            sweep_cursor: 0,
        }
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

    /// Finds the entry of `key`, whose [`FlowKey::hash`] is `hash`.
    #[inline]
    pub fn lookup(&self, key: &FlowKey, hash: u64) -> Option<u32> {
        let b = self.bucket(hash);
        let tag = tag_of(hash);
        let tags = &self.tags[b];
        // Compare all tags at once (the compiler vectorises this), then visit the matches.
        let mut hits = 0u32;
        for (way, &t) in tags.iter().enumerate() {
            hits |= ((t == tag) as u32) << way;
        }
        while hits != 0 {
            let way = hits.trailing_zeros() as usize;
            let i = b * WAYS + way;
            if self.entries.get(i).is_some_and(|e| e.key == *key) {
                return Some(i as u32);
            }
            hits &= hits - 1;
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
        for &h in hashes {
            let b = self.bucket(h);
            let tag = tag_of(h);
            if let Some(way) = self.tags[b].iter().position(|&t| t == tag) {
                acc ^= self.entries[b * WAYS + way].last_seen;
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

    /// Inserts `entry` (whose key hashes to `hash`) at `now_ms`. The caller has checked that the
    /// key is not present.
    pub fn insert(&mut self, hash: u64, mut entry: FlowEntry, now_ms: u32) -> Insert {
        let b = self.bucket(hash);
        let base = b * WAYS;
        let t = self.timeouts;
        let mut choice: Option<(usize, bool)> = None; // (way, evicts a live entry)
        let mut oldest_half_open: Option<(usize, u32)> = None;
        for way in 0..WAYS {
            if self.tags[b][way] == 0 {
                choice = Some((way, false));
                break;
            }
            let e = &self.entries[base + way];
            if e.expired(now_ms, &t) {
                if choice.is_none() {
                    choice = Some((way, false));
                }
                continue;
            }
            if e.state() <= FlowState::SynAckSeen {
                let age = coarse_elapsed(now_ms, e.last_seen);
                if oldest_half_open.is_none_or(|(_, a)| age > a) {
                    oldest_half_open = Some((way, age));
                }
            }
        }
        let (way, live) = match (choice, oldest_half_open) {
            (Some(c), _) => c,
            (None, Some((w, _))) => (w, true),
            (None, None) => return Insert::Full,
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

    /// Number of buckets (one full sweep is this many bucket visits).
    pub fn buckets(&self) -> usize {
        self.tags.len()
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
        let h = k.hash();
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
            .filter(|k| (k.hash() as usize) & t.mask == 0)
            .take(n)
            .collect()
    }

    #[test]
    fn full_bucket_of_established_refuses_new_flows() {
        let mut t = small();
        let keys = same_bucket_keys(&t, WAYS + 1);
        for k in &keys[..WAYS] {
            assert!(matches!(
                t.insert(k.hash(), entry(*k, FlowState::Established), 0),
                Insert::Inserted { .. }
            ));
        }
        assert!(matches!(
            t.insert(keys[WAYS].hash(), entry(keys[WAYS], FlowState::SynSent), 1),
            Insert::Full
        ));
        for k in &keys[..WAYS] {
            assert!(
                t.lookup(k, k.hash()).is_some(),
                "an established flow was evicted"
            );
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
                t.insert(k.hash(), entry(*k, st), i as u32),
                Insert::Inserted { .. }
            ));
        }
        let Insert::Inserted {
            evicted,
            evicted_live,
            ..
        } = t.insert(keys[WAYS].hash(), entry(keys[WAYS], FlowState::SynSent), 50)
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
    fn expired_entries_are_reused_and_swept() {
        let mut t = small();
        let keys = same_bucket_keys(&t, WAYS + 1);
        for k in &keys[..WAYS] {
            let _ = t.insert(k.hash(), entry(*k, FlowState::Established), 0);
        }
        // 1001 ms later every established entry has expired: a new flow takes a slot.
        let Insert::Inserted {
            evicted,
            evicted_live,
            ..
        } = t.insert(
            keys[WAYS].hash(),
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
            if let Insert::Inserted { .. } = t.insert(k.hash(), entry(k, FlowState::Established), 0)
            {
                stored += 1;
            }
        }
        assert_eq!(t.capacity(), cap);
        assert!(t.len() <= cap);
        assert_eq!(t.len(), stored.min(cap));
    }
}
