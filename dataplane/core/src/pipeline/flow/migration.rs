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
//!   asks it (MP_PRIO, B = 1) to make the subflow through the gateway a backup: the client sends
//!   on its new direct subflow, and the connection survives the backend's removal from the
//!   gateway.
//! * anything else (plain TCP, a connection without known keys) is left to the drain policy
//!   and counted as left behind, as is a connection whose client never echoes the address.
//!
//! Per backend, the workers count connections announced, migrated (the client echoed) and left
//! behind (`BackendCounters::migrate_*`). The control plane ends the drain at its deadline
//! (graceful removal: 60 s by default, or `drain --deadline`); joins of the migrating backend's
//! connections keep reaching it meanwhile (it is draining).

use super::announcing;
use crate::pipeline::context::Worker;
use crate::pool::PoolSnapshot;
use crate::tables::flow_table::{flags, FlowState};
use crate::time::Ticks;

impl Worker {
    /// Walks the next `buckets` buckets of the flow table and marks the flows of migrating
    /// backends (see the module documentation). Does nothing, at the cost of a scan of the
    /// backends, when none migrates.
    pub fn migrate(&mut self, pool: &PoolSnapshot, now: Ticks, buckets: usize) {
        if !pool.any_migrates() {
            return;
        }
        let now_ms = now.coarse_ms();
        let stats = &mut self.stats;
        self.flows.visit(buckets, |e| {
            if e.announces & announcing::MIGRATE != 0
                || e.has(flags::JOIN)
                || e.state() != FlowState::Established
                || !pool.backend(e.backend).is_some_and(|b| b.migrates())
            {
                return;
            }
            if e.has(flags::ANNOUNCE) {
                return; // an announcement of the VIP's own is still running: a later walk
            }
            if e.has(flags::TOKEN_REF) && e.has(flags::CONFIRMED) {
                announcing::start_migration(now_ms, e);
            } else {
                e.announces |= announcing::MIGRATE;
                if let Some(c) = stats.backends.get_mut(e.backend.0 as usize) {
                    c.migrate_left_behind += 1;
                }
            }
        });
    }
}
