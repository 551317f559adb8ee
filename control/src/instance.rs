//! The instance's own state for its BGP announcements (issue 6): drained by the operator
//! (`POST /instance/drain`), or stopping after SIGTERM with a grace period during which it still
//! forwards while the BGP feeder (`trapezectl bgp-feed` under ExaBGP) withdraws its VIPs.
//!
//! Two threads touch it: the daemon's main thread, which handles the stop signals (so that a
//! busy control thread never delays a stop), and the control thread, which answers
//! `GET /instance` and `POST /instance/drain`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use trapeze_core::pool::PoolSnapshot;

use crate::api::instance::{InstanceState, InstanceView};

/// Serving, drained, or stopping (with the instant the stop grace ends).
#[derive(Debug)]
pub struct Instance {
    draining: AtomicBool,
    /// A worker stalled (the watchdog): `stopping` for good, without a scheduled exit.
    stalled: AtomicBool,
    /// `Some` once stopping: when the grace ends (`None` inside: a grace too long to represent,
    /// which only a second signal ends).
    stop_at: Mutex<Option<Option<Instant>>>,
    grace: Duration,
}

impl Instance {
    /// A serving instance that keeps forwarding for `grace` after a stop signal.
    pub fn new(grace: Duration) -> Self {
        Self {
            draining: AtomicBool::new(false),
            stalled: AtomicBool::new(false),
            stop_at: Mutex::new(None),
            grace,
        }
    }

    /// The state `GET /instance` reports.
    pub fn state(&self) -> InstanceState {
        if self.stop_at.lock().is_some() || self.stalled.load(Ordering::Relaxed) {
            InstanceState::Stopping
        } else if self.draining.load(Ordering::Relaxed) {
            InstanceState::Draining
        } else {
            InstanceState::Serving
        }
    }

    /// Drains (or undrains) the instance: `POST /instance/drain|undrain`.
    pub fn set_draining(&self, d: bool) {
        self.draining.store(d, Ordering::Relaxed);
    }

    /// A worker stalled (`crate::watchdog`): the instance reports `stopping` from now on (the
    /// BGP feeder withdraws), without ending the daemon.
    pub fn mark_stalled(&self) {
        self.stalled.store(true, Ordering::Relaxed);
    }

    /// Whether a worker stalled.
    pub fn stalled(&self) -> bool {
        self.stalled.load(Ordering::Relaxed)
    }

    /// How long the instance forwards after a stop signal.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// A stop signal arrived at `now`: the first one starts the grace period (returns `true`).
    pub fn begin_stop(&self, now: Instant) -> bool {
        let mut s = self.stop_at.lock();
        if s.is_some() {
            return false;
        }
        *s = Some(now.checked_add(self.grace));
        true
    }

    /// The grace period is over.
    pub fn stop_due(&self, now: Instant) -> bool {
        matches!(*self.stop_at.lock(), Some(Some(t)) if now >= t)
    }

    /// The view of `GET /instance`, with the VIPs of `pool`.
    pub fn view(&self, pool: &PoolSnapshot, now: Instant) -> InstanceView {
        let stop_in = match *self.stop_at.lock() {
            Some(Some(t)) => Some(t.saturating_duration_since(now)),
            Some(None) => Some(self.grace),
            None => None,
        };
        InstanceView::from_pool(pool, self.state(), self.grace, stop_in)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states() {
        let i = Instance::new(Duration::from_millis(100));
        let t0 = Instant::now();
        assert_eq!(i.state(), InstanceState::Serving);
        i.set_draining(true);
        assert_eq!(i.state(), InstanceState::Draining);
        assert!(!i.stop_due(t0));
        assert!(i.begin_stop(t0));
        assert!(
            !i.begin_stop(t0),
            "a second signal does not extend the grace"
        );
        assert_eq!(i.state(), InstanceState::Stopping);
        assert!(!i.stop_due(t0 + Duration::from_millis(50)));
        assert!(i.stop_due(t0 + Duration::from_millis(100)));
    }

    #[test]
    fn a_grace_too_long_to_represent_never_ends_by_itself() {
        let i = Instance::new(Duration::MAX);
        let t0 = Instant::now();
        assert!(i.begin_stop(t0), "no overflow panic");
        assert_eq!(i.state(), InstanceState::Stopping);
        assert!(!i.stop_due(t0 + Duration::from_secs(1 << 40)));
        assert!(!i.begin_stop(t0), "the second signal is the way out");
    }
}
