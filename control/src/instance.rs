//! The instance's own state for its BGP announcements (issue 6): drained by the operator
//! (`POST /instance/drain`), or stopping after SIGTERM with a grace period during which it still
//! forwards while the BGP feeder (`trapezectl bgp-feed` under ExaBGP) withdraws its VIPs. Only
//! the control thread touches it.

use std::cell::Cell;
use std::time::{Duration, Instant};

use trapeze_core::pool::PoolSnapshot;

use crate::api::instance::{InstanceState, InstanceView};

#[derive(Debug)]
pub struct Instance {
    draining: Cell<bool>,
    stop_at: Cell<Option<Instant>>,
    grace: Duration,
}

impl Instance {
    pub fn new(grace: Duration) -> Self {
        Self {
            draining: Cell::new(false),
            stop_at: Cell::new(None),
            grace,
        }
    }

    pub fn state(&self) -> InstanceState {
        if self.stop_at.get().is_some() {
            InstanceState::Stopping
        } else if self.draining.get() {
            InstanceState::Draining
        } else {
            InstanceState::Serving
        }
    }

    pub fn set_draining(&self, d: bool) {
        self.draining.set(d);
    }

    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// A stop signal arrived at `now`: the first one starts the grace period (returns `true`).
    pub fn begin_stop(&self, now: Instant) -> bool {
        if self.stop_at.get().is_some() {
            return false;
        }
        self.stop_at.set(Some(now + self.grace));
        true
    }

    /// The grace period is over.
    pub fn stop_due(&self, now: Instant) -> bool {
        self.stop_at.get().is_some_and(|t| now >= t)
    }

    pub fn view(&self, pool: &PoolSnapshot, now: Instant) -> InstanceView {
        InstanceView::from_pool(
            pool,
            self.state(),
            self.grace,
            self.stop_at.get().map(|t| t.saturating_duration_since(now)),
        )
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
}
