//! Context: the state a decision reads and changes, passed in explicitly. A [`Worker`] (its flow
//! table, counters, announcement queue and reply budget) belongs to one thread; [`Shared`] (the
//! token table) to all of them; [`Ctx`] bundles both with the pool snapshot, the time and the
//! ingress port for the duration of one frame. [`steer`] says which worker owns a flow.
//!
//! A worker's flow-table housekeeping ([`Worker::housekeeping`]) is defined with the flows, in
//! `flow`, since reclaiming a flow releases what it holds.

use super::announce::AnnounceQueue;
use super::verdict::WorkerStats;
use crate::flow::fmix;
use crate::pool::{PoolSnapshot, PortConfig, PortId};
use crate::tables::flow_table::{FlowTable, FlowTableConfig};
use crate::tables::token::{TokenTable, TokenTableConfig};
use crate::time::Ticks;

/// A token bucket for generated packets (ICMP errors and echo replies), per worker.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    /// Sustained rate, per second.
    pub per_sec: u32,
    /// Burst size.
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            per_sec: 1000,
            burst: 100,
        }
    }
}

/// The state of a [`RateLimit`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    limit: RateLimit,
    tokens: u32,
    last: Ticks,
}

impl Bucket {
    fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            tokens: limit.burst,
            last: Ticks::ZERO,
        }
    }

    /// Takes one token; false when the bucket is empty.
    pub(crate) fn take(&mut self, now: Ticks) -> bool {
        let elapsed = now.0.saturating_sub(self.last.0);
        let refill = (elapsed as u128 * self.limit.per_sec as u128 / 1_000_000_000) as u64;
        if refill > 0 {
            self.tokens = (self.tokens as u64 + refill).min(self.limit.burst as u64) as u32;
            self.last = now;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

/// Configuration of one worker.
#[derive(Debug, Clone, Copy)]
pub struct WorkerConfig {
    /// This worker's index.
    pub id: u16,
    /// Number of workers (flows are owned by `steer(client) % workers`).
    pub workers: u16,
    /// Flow table size and timeouts.
    pub flows: FlowTableConfig,
    /// Highest VIP id + 1 that gets counters.
    pub max_vips: usize,
    /// Highest backend id + 1 that gets counters.
    pub max_backends: usize,
    /// Rate of generated ICMP messages and echo replies.
    pub icmp_rate: RateLimit,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            id: 0,
            workers: 1,
            flows: FlowTableConfig::default(),
            max_vips: 256,
            max_backends: 4096,
            icmp_rate: RateLimit::default(),
        }
    }
}

/// State owned by one worker: touched by that worker's thread only.
#[derive(Debug)]
pub struct Worker {
    /// This worker's index.
    pub id: u16,
    /// Number of workers.
    pub workers: u16,
    /// The worker's flow table.
    pub flows: FlowTable,
    /// The worker's counters.
    pub stats: WorkerStats,
    /// ADD_ADDRs to send after this burst (announce mode): the runtime drains them.
    pub announcements: AnnounceQueue,
    pub(crate) icmp: Bucket,
    /// The migration walk's pending counts (`flow/migration.rs`).
    pub(crate) migration: MigrationWalk,
}

impl Worker {
    /// A worker with all its memory allocated up front.
    pub fn new(cfg: WorkerConfig) -> Self {
        Self::with_flows(cfg, FlowTable::new(cfg.flows))
    }

    /// A worker around a flow table built elsewhere (the daemon's, in its state file);
    /// `cfg.flows` is then unused. The flows it already holds count in the backends'
    /// active-flow gauges.
    pub fn with_flows(cfg: WorkerConfig, flows: FlowTable) -> Self {
        let mut stats = WorkerStats::new(cfg.max_vips, cfg.max_backends);
        for (_, e) in flows.iter() {
            if let Some(c) = stats.backends.get_mut(e.backend.0 as usize) {
                c.active_flows += 1;
            }
        }
        Self {
            id: cfg.id,
            workers: cfg.workers.max(1),
            flows,
            stats,
            announcements: AnnounceQueue::default(),
            icmp: Bucket::new(cfg.icmp_rate),
            migration: MigrationWalk::new(cfg.max_backends),
        }
    }
}

/// The state of the walk that counts pending connections, per worker.
#[derive(Debug)]
pub(crate) struct MigrationWalk {
    /// Buckets left in the current walk (0: none under way).
    pub(crate) left: usize,
    /// The pool version in use when the current walk began.
    pub(crate) version: u64,
    /// Per backend id: pending connections counted so far in the current walk.
    pub(crate) pending: Box<[u32]>,
    /// A walk has published pending counts since the last time no backend migrated.
    pub(crate) published: bool,
}

impl MigrationWalk {
    /// A walk's state for backend ids below `max_backends`, allocated once.
    pub(crate) fn new(max_backends: usize) -> Self {
        Self {
            left: 0,
            version: 0,
            pending: vec![0; max_backends].into_boxed_slice(),
            published: false,
        }
    }
}

/// State shared by all workers.
///
/// Token entries end with their connection's last subflow (each worker releases the references
/// of the flows it reclaims in [`Worker::housekeeping`]) or on MP_FASTCLOSE; the idle timeout is
/// the backstop for connections whose subflow entries were lost: the control thread calls
/// [`TokenTable::expire`] on `tokens` periodically.
#[derive(Debug)]
pub struct Shared {
    /// The token table.
    pub tokens: TokenTable,
}

impl Shared {
    /// Shared state with a token table of the given size.
    pub fn new(tokens: TokenTableConfig) -> Self {
        Self {
            tokens: TokenTable::new(tokens),
        }
    }
}

/// The worker that owns flows of a client endpoint: a fixed function of the client's address and
/// port, which both directions of a NATed flow carry.
#[inline]
pub fn steer(client_addr: &[u8; 16], client_port: u16, workers: u16) -> u16 {
    if workers <= 1 {
        return 0;
    }
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&client_addr[8..]);
    hi.copy_from_slice(&client_addr[..8]);
    let x = u64::from_le_bytes(lo)
        ^ u64::from_le_bytes(hi).rotate_left(17)
        ^ ((client_port as u64) << 48);
    (fmix(x) % workers as u64) as u16
}

/// Everything a stage needs for one frame, bundled so stage signatures stay short.
pub(crate) struct Ctx<'a> {
    pub(crate) w: &'a mut Worker,
    pub(crate) shared: &'a Shared,
    pub(crate) pool: &'a PoolSnapshot,
    pub(crate) now: Ticks,
    pub(crate) now_ms: u32,
    pub(crate) ingress: PortId,
    pub(crate) port: &'a PortConfig,
    /// Ingress Ethernet header length (14, or 18 with a VLAN tag).
    pub(crate) l2_len: usize,
}

impl<'a> Ctx<'a> {
    /// The context of a frame that arrived on `ingress` (`port`: its configuration), untagged
    /// until the walk reads a VLAN tag.
    #[inline]
    pub(crate) fn new(
        w: &'a mut Worker,
        shared: &'a Shared,
        pool: &'a PoolSnapshot,
        now: Ticks,
        ingress: PortId,
        port: &'a PortConfig,
    ) -> Self {
        Self {
            w,
            shared,
            pool,
            now,
            now_ms: now.coarse_ms(),
            ingress,
            port,
            l2_len: 14,
        }
    }

    /// The worker to hand a frame to when this one does not own the flows of its client endpoint
    /// (`None`: this one does).
    #[inline]
    pub(crate) fn handoff(&self, client_addr: &[u8; 16], client_port: u16) -> Option<u16> {
        let owner = steer(client_addr, client_port, self.w.workers);
        (owner != self.w.id).then_some(owner)
    }
}
