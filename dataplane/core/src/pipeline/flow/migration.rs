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
//! has grown by more than [`LEAD`] bytes (up to twice that, for the rounding), data flows on
//! another subflow: the connection is **migrated**. The client's DATA_ACK shows the server's data
//! moving (NAT and DSR); the server's (NAT: its packets pass) shows the client's data moving,
//! which is what the MP_PRIO asks for (seen in the test bed: the client's data moves at once, the
//! server's echo stays on the first subflow). NAT: once migrated, the gateway also asks the
//! server (MP_PRIO on a pure ACK repeating the client's next segment) to make the subflow a
//! backup, so that the server's data leaves it before the backend leaves the gateway (without
//! it the server's data stays there, and the removal costs the connection a retransmission
//! timeout: a 15 % throughput dip in the test bed's anycast run). In DSR the server's packets
//! never pass: there the
//! client's data has moved when the client's DATA_ACK advances by more than [`LEAD`] while it
//! sends no payload on the subflow (a client with nothing to send counts as moved too: what it
//! still sends through the gateway, acknowledgments, MPTCP resends on its other subflow once
//! the backend leaves). A FIN, RST or DATA_FIN on that subflow, or a flow
//! that the walk finds closing, ends the watch as **closed**. Either way the flow is off the
//! slow path again.
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

use trapeze_wire::tcp::TcpFlags;

use super::announcing;
use crate::pipeline::context::{Ctx, Worker};
use crate::pipeline::frame::Frame;
use crate::pipeline::parse::{Seg, TcpNumbers};
use crate::pipeline::verdict::WorkerStats;
use crate::pool::PoolSnapshot;
use crate::tables::flow_table::{flags, FlowEntry, FlowState};
use crate::time::Ticks;

/// How far (bytes) the client's DATA_ACK must run ahead of the gateway subflow's own
/// acknowledgment, past where it stood when the watch began, for the connection to count as
/// migrated: more than the gateway subflow's share of a few windows could explain.
pub(super) const LEAD: u32 = 64 * 1024;

/// The state of the walk that counts pending connections, per worker.
#[derive(Debug)]
pub(crate) struct MigrationWalk {
    /// Buckets left in the current walk (0: none under way).
    left: usize,
    /// The pool version in use when the current walk began.
    version: u64,
    /// Per backend id: pending connections counted so far in the current walk.
    pending: Box<[u32]>,
    /// A walk has published pending counts since the last time no backend migrated.
    published: bool,
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

/// A packet (its numbers `t`) of a watched flow from `side` (0: the client, 1: the server):
/// ends the watch when the connection's data flows on another subflow or it closes (see the
/// module documentation).
pub(super) fn watch<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &F,
    seg: &Seg,
    t: &TcpNumbers,
    e: &mut FlowEntry,
    side: usize,
    v6: bool,
) {
    if seg.has(TcpFlags::FIN.0 | TcpFlags::RST.0) {
        announcing::finish(e, announcing::Outcome::Closed, &mut cx.w.stats);
        return;
    }
    let dsr = cx.pool.vip(e.vip).is_some_and(|v| v.mode.dsr().is_some());
    if announcing::server_prio_due(e) {
        if side == 0 {
            announcing::send_server_backup(cx, e, t, v6);
            announcing::finish(e, announcing::Outcome::Migrated, &mut cx.w.stats);
        }
        return;
    }
    let Some(d) = data_ack(&frame.data()[seg.opt_at..seg.opt_at + seg.opt_len]) else {
        return;
    };
    if d.data_fin {
        announcing::finish(e, announcing::Outcome::Closed, &mut cx.w.stats);
        return;
    }
    let Some(ack) = d.ack else { return };
    let lead = (ack.wrapping_sub(t.ack) >> 16) as u16;
    if grown(e, side, lead) {
        if dsr {
            announcing::finish(e, announcing::Outcome::Migrated, &mut cx.w.stats);
        } else if side == 0 {
            announcing::send_server_backup(cx, e, t, v6);
            announcing::finish(e, announcing::Outcome::Migrated, &mut cx.w.stats);
        } else {
            announcing::set_server_prio_due(e); // with the client's next packet
        }
        return;
    }
    // DSR: the server's packets never pass, so its DATA_ACK (the client's data) is not seen.
    // The client's data has moved when the client sends no payload on this subflow while the
    // connection moves on (its DATA_ACK advances): the other base, unused in DSR, follows the
    // DATA_ACK itself and starts again with every payload.
    if side == 0 && dsr {
        let at = (ack >> 16) as u16;
        if seg.has_payload {
            announcing::set_watch_base(e, 1, at);
        } else if grown(e, 1, at) {
            announcing::finish(e, announcing::Outcome::Migrated, &mut cx.w.stats);
        }
    }
}

/// Whether `value` (64 KiB units) has grown past the base of `side` by more than [`LEAD`];
/// sets the base when it has none.
fn grown(e: &mut FlowEntry, side: usize, value: u16) -> bool {
    match announcing::watch_base(e, side) {
        None => {
            announcing::set_watch_base(e, side, value);
            false
        }
        // Rounded down at both ends: 2 units are more than LEAD bytes. A value behind its base
        // (reordered) is negative, not a lead.
        Some(base) => (value.wrapping_sub(base) as i16) >= ((2 * LEAD) >> 16) as i16,
    }
}

/// The DSS of a segment, as far as the watch needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DataAck {
    /// The low 32 bits of the DATA_ACK, when present.
    ack: Option<u32>,
    /// F: DATA_FIN.
    data_fin: bool,
}

/// The first DSS option in a TCP option area (no allocation; a malformed area stops the walk).
fn data_ack(opts: &[u8]) -> Option<DataAck> {
    let mut at = 0;
    while at < opts.len() {
        match opts[at] {
            0 => return None,
            1 => at += 1,
            kind => {
                let len = *opts.get(at + 1)? as usize;
                if len < 2 || at + len > opts.len() {
                    return None;
                }
                let o = &opts[at..at + len];
                // Kind 30, subtype DSS (2) in the high nibble, the flags in the fourth byte.
                if kind == 30 && len >= 4 && o[2] >> 4 == 2 {
                    let f = o[3];
                    let ack = if f & 0x01 == 0 {
                        None
                    } else if f & 0x02 != 0 {
                        // An 8-byte DATA_ACK: its low 32 bits are the last four.
                        o.get(8..12)
                            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                    } else {
                        o.get(4..8)
                            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                    };
                    return Some(DataAck {
                        ack,
                        data_fin: f & 0x10 != 0,
                    });
                }
                at += len;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_ack_reads_4_and_8_byte_acks_and_data_fin() {
        // NOP, NOP, DSS with a 4-byte DATA_ACK.
        let four = [1, 1, 30, 8, 0x20, 0x01, 0, 1, 0, 2];
        assert_eq!(
            data_ack(&four),
            Some(DataAck {
                ack: Some(0x0001_0002),
                data_fin: false
            })
        );
        // DSS with an 8-byte DATA_ACK and DATA_FIN.
        let eight = [30, 12, 0x20, 0x13, 0, 0, 0, 9, 0xde, 0xad, 0xbe, 0xef];
        assert_eq!(
            data_ack(&eight),
            Some(DataAck {
                ack: Some(0xdead_beef),
                data_fin: true
            })
        );
        // No DATA_ACK flag; an ADD_ADDR only; a truncated option.
        assert_eq!(
            data_ack(&[30, 4, 0x20, 0x04]),
            Some(DataAck {
                ack: None,
                data_fin: false
            })
        );
        assert_eq!(data_ack(&[30, 8, 0x31, 1, 10, 0, 0, 1]), None);
        assert_eq!(data_ack(&[30, 40, 0x20]), None);
    }
}
