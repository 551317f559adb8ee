//! Migration: a draining backend with a direct address (`[[backends]] direct`, an address its
//! clients can reach it on) moves its MPTCP connections off the gateway before it leaves.
//!
//! Between bursts, a worker walks its flow table a few buckets at a time ([`Worker::migrate`],
//! no long pause) while any backend migrates. Each first subflow of a migrating backend's
//! connection is marked once ([`announcing::MIGRATE`]):
//!
//! * an established MPTCP connection whose keys the gateway knows (NAT: learned and confirmed;
//!   DSR: from the third ACK) starts an announcement of the **direct address** (address id
//!   [`MIGRATE_ADDRESS_ID`](crate::pool::MIGRATE_ADDRESS_ID), the HMAC from the learned keys),
//!   sent and resent exactly like the announce modes' (`announcing.rs`): NAT after the server's
//!   next segment, DSR with the client's next packet. Once the client echoes it, the gateway
//!   asks it (MP_PRIO, B = 1) to make the subflow through the gateway a backup.
//! * a join of such a connection through the gateway (the client joined the VIP) is asked at
//!   once (MP_PRIO with its next packet) to be a backup too: every subflow through the gateway
//!   is then one, so the data the gateway no longer sees flows on the direct subflow, and the
//!   lead below means what it says.
//! * anything else (plain TCP, a connection without known keys) is left to the drain policy
//!   and counted as left behind, as is a connection whose client never echoes the address.
//!
//! ## Migrated: what the gateway sees
//!
//! After the MP_PRIO the flow is **watched** (it keeps [`flags::ANNOUNCE`], so only its packets
//! take the slow path; every other flow pays the one flag test it always paid). A DSS DATA_ACK
//! counts the connection's data from every subflow, the TCP acknowledgment of the same segment
//! only what came through this subflow. Their difference is fixed while the gateway subflow
//! carries everything; the first DATA_ACK of each side records it (in 64 KiB units), and once it
//! has grown by more than 64 KiB (`LEAD`; up to twice that, for the rounding), data flows on
//! another subflow: the connection is **migrated**. The client's DATA_ACK shows the server's data
//! moving (NAT and DSR); the server's (NAT: its packets pass) shows the client's data moving,
//! which is what the MP_PRIO asks for (seen in the test bed: the client's data moves at once, the
//! server's echo stays on the first subflow). NAT: once migrated, the gateway also asks the
//! server (MP_PRIO on a pure ACK repeating the client's next segment) to make the subflow a
//! backup, so that the server's data leaves it before the backend leaves the gateway (without
//! it the server's data stays there, and the removal costs the connection a retransmission
//! timeout: a 15 % throughput dip in the test bed's anycast run). In DSR the server's packets
//! never pass: there the
//! client's data has moved when the client's DATA_ACK advances by more than `LEAD` while it
//! sends no payload on the subflow (a client with nothing to send counts as moved too: what it
//! still sends through the gateway, acknowledgments, MPTCP resends on its other subflow once
//! the backend leaves). A FIN, RST or DATA_FIN on that subflow, or a flow
//! that the walk finds closing, ends the watch as **closed**. Either way the flow is off the
//! slow path again. The watch is `announcing::watch`: announcing owns a flow's phases from the
//! first ADD_ADDR to the end of the watch.
//!
//! ## Pending, and the end of the drain
//!
//! Each complete walk of the table counts, per migrating backend, the connections that still
//! need the gateway (**pending**: not yet migrated or closed, or left behind and still open)
//! and publishes them with the pool version its walk began under ([`WorkerStats::migrate_pass`]).
//! The control plane removes the backend as soon as every worker reports 0 pending from a walk
//! that began after the drain was published, or at the drain's deadline, whichever comes first.
//!
//! Per backend, the workers count connections announced, migrated, closed, left behind and
//! pending (`BackendCounters::migrate_*`).

use super::announcing;
use crate::pipeline::context::Worker;
use crate::pipeline::verdict::WorkerStats;
use crate::pool::PoolSnapshot;
use crate::tables::flow_table::{flags, FlowEntry, FlowState};
use crate::time::Ticks;

/// What the walk does with one first subflow of a migrating backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// The connection still needs the gateway.
    Pending,
    /// Migrated or closed: it does not.
    Done,
}

impl Worker {
    /// Walks the next `buckets` buckets of the flow table: marks the flows of migrating backends
    /// and counts their pending connections (see the module documentation). Does nothing, at
    /// the cost of a scan of the backends, when none migrates.
    pub fn migrate(&mut self, pool: &PoolSnapshot, now: Ticks, buckets: usize) {
        if !pool.any_migrates() {
            if self.migration.left != 0 || self.migration.published {
                // The last migration ended: no backend has pending connections any more.
                self.migration.left = 0;
                self.migration.published = false;
                for c in self.stats.backends.iter_mut() {
                    c.migrate_pending = 0;
                }
            }
            return;
        }
        let walk = &mut self.migration;
        if walk.left == 0 {
            walk.left = self.flows.buckets();
            walk.version = pool.version;
            let n = pool.backends.len().min(walk.pending.len());
            walk.pending[..n].fill(0);
        }
        let now_ms = now.coarse_ms();
        let stats = &mut self.stats;
        let step = buckets.min(walk.left);
        let pending = &mut walk.pending;
        self.flows.visit(step, |e| {
            if !pool.backend(e.backend).is_some_and(|b| b.migrates()) {
                return;
            }
            if e.has(flags::JOIN) {
                if e.announces & announcing::MIGRATE == 0
                    && e.state() == FlowState::Established
                    && !e.has(flags::ANNOUNCE)
                {
                    announcing::start_join_backup(e);
                }
                return; // the connection's pending state is its first subflow's
            }
            if visit(e, stats, now_ms) == Seen::Pending {
                if let Some(p) = pending.get_mut(e.backend.0 as usize) {
                    *p = p.saturating_add(1);
                }
            }
        });
        walk.left -= step;
        if walk.left == 0 {
            let n = pool.backends.len().min(walk.pending.len());
            for (c, &p) in stats.backends.iter_mut().zip(&walk.pending[..n]) {
                c.migrate_pending = u64::from(p);
            }
            stats.migrate_pass = walk.version;
            walk.published = true;
        }
    }
}

/// One first subflow of a migrating backend, seen by the walk.
fn visit(e: &mut FlowEntry, stats: &mut WorkerStats, now_ms: u32) -> Seen {
    let open = matches!(e.state(), FlowState::Established);
    if e.announces & announcing::MIGRATE != 0 {
        return match announcing::migration_phase(e) {
            announcing::Phase::Done => Seen::Done,
            announcing::Phase::LeftBehind if open => Seen::Pending,
            announcing::Phase::LeftBehind => Seen::Done,
            announcing::Phase::Running if open => Seen::Pending,
            announcing::Phase::Running => {
                announcing::finish(e, announcing::Outcome::Closed, stats);
                Seen::Done
            }
        };
    }
    if e.state() < FlowState::Established {
        return Seen::Pending; // its handshake is still running: a later walk
    }
    if !open {
        return Seen::Done; // closing: nothing to move
    }
    if e.has(flags::ANNOUNCE) {
        return Seen::Pending; // an announcement of the VIP's own is still running: a later walk
    }
    if !(e.has(flags::TOKEN_REF) && e.has(flags::CONFIRMED)) {
        announcing::leave_behind(e, stats);
        return Seen::Pending;
    }
    announcing::start_migration(now_ms, e);
    Seen::Pending
}
