//! The worker watchdog: each forwarding worker bumps its own heartbeat once per loop (a relaxed
//! store to a cache line of its own: no lock, no allocation, nothing shared with another
//! writer), and the control thread checks every round that each heartbeat moved within the
//! configured time (`[workers] watchdog`, 2 s by default).
//!
//! A worker stalled that long (stuck in a driver call, a livelock, a bug) leaves its queues
//! unserved, so this instance must stop attracting traffic: the control thread turns the
//! instance `stopping` ([`crate::instance::Instance::mark_stalled`]; `trapezectl bgp-feed`
//! withdraws its VIPs), logs it and counts it (`trapeze_control_watchdog_stalls_total`). The
//! daemon keeps running (the other workers forward what still reaches them) so the operator
//! can look at it; if the worker moves again it is logged, and the instance stays `stopping`
//! until a restart.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The default stall time.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// A heartbeat on a cache line of its own.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Beat(AtomicU64);

/// One heartbeat per worker.
#[derive(Debug)]
pub struct Heartbeats {
    beats: Box<[Beat]>,
}

impl Heartbeats {
    /// Heartbeats for `workers` workers.
    pub fn new(workers: usize) -> Self {
        Self {
            beats: (0..workers).map(|_| Beat::default()).collect(),
        }
    }

    /// Worker `id`'s loop count (any value that changes while it makes progress).
    #[inline]
    pub fn beat(&self, id: usize, loops: u64) {
        if let Some(b) = self.beats.get(id) {
            b.0.store(loops, Ordering::Relaxed);
        }
    }

    /// The workers' heartbeats.
    pub fn read(&self) -> impl Iterator<Item = u64> + '_ {
        self.beats.iter().map(|b| b.0.load(Ordering::Relaxed))
    }

    /// Number of workers.
    pub fn len(&self) -> usize {
        self.beats.len()
    }

    /// No worker.
    pub fn is_empty(&self) -> bool {
        self.beats.is_empty()
    }
}

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Worker `0` has not moved for the second field.
    Stalled(usize, Duration),
    /// A stalled worker moved again.
    Resumed(usize),
}

/// The control thread's side.
#[derive(Debug)]
pub struct Watchdog {
    timeout: Duration,
    /// Per worker: the last heartbeat seen, when it last changed, whether it is stalled.
    seen: Vec<(u64, Instant, bool)>,
    stalls: u64,
}

impl Watchdog {
    /// A watchdog over `workers` heartbeats, starting at `now`.
    pub fn new(timeout: Duration, workers: usize, now: Instant) -> Self {
        Self {
            timeout,
            seen: vec![(0, now, false); workers],
            stalls: 0,
        }
    }

    /// Stalls detected so far.
    pub fn stalls(&self) -> u64 {
        self.stalls
    }

    /// Compares the heartbeats with the last check; returns what changed.
    pub fn check(&mut self, beats: &Heartbeats, now: Instant) -> Vec<Event> {
        let mut out = Vec::new();
        for (i, (b, seen)) in beats.read().zip(self.seen.iter_mut()).enumerate() {
            if b != seen.0 {
                if seen.2 {
                    out.push(Event::Resumed(i));
                }
                *seen = (b, now, false);
            } else if !seen.2 {
                let quiet = now.saturating_duration_since(seen.1);
                if quiet >= self.timeout {
                    seen.2 = true;
                    self.stalls = self.stalls.saturating_add(1);
                    out.push(Event::Stalled(i, quiet));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_still_heartbeat_is_a_stall_once_then_a_resume() {
        let t0 = Instant::now();
        let hb = Heartbeats::new(2);
        let mut w = Watchdog::new(Duration::from_secs(2), 2, t0);
        let at = |s: u64| t0 + Duration::from_millis(s);
        hb.beat(0, 1);
        hb.beat(1, 1);
        assert!(w.check(&hb, at(100)).is_empty());
        hb.beat(0, 2);
        assert!(w.check(&hb, at(1500)).is_empty());
        hb.beat(0, 3);
        assert_eq!(
            w.check(&hb, at(2100)),
            vec![Event::Stalled(1, Duration::from_millis(2000))]
        );
        hb.beat(0, 4);
        assert!(w.check(&hb, at(9000)).is_empty(), "reported once");
        hb.beat(1, 2);
        assert_eq!(w.check(&hb, at(9100)), vec![Event::Resumed(1)]);
        assert_eq!(w.stalls(), 1);
    }
}
