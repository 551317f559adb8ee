//! The daemon's clock: the core's [`Ticks`] on the system's monotonic timeline.
//!
//! Flow and token stamps outlive the process in the state file (`crate::state`), so a restarted
//! daemon must read them on the timeline its predecessor wrote them on. CLOCK_MONOTONIC is one
//! timeline for every process of a boot; reading it costs a vDSO call, so each clock reads it
//! once, at creation, and counts from there with the TSC (as the workers always did). The TSC's
//! frequency is DPDK's calibration: a daemon's clock drifts from CLOCK_MONOTONIC by that error
//! (parts per million: milliseconds a day). A stamp a restarted daemon finds in its future is
//! reset to its now when the tables are re-attached.

use trapeze_core::Ticks;
use trapeze_dpdk::{lcore, mapping};

/// Ticks in nanoseconds on CLOCK_MONOTONIC's timeline (see the module documentation). One per
/// thread that stamps: every one of them agrees to within the TSC's calibration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    base_ns: u64,
    tsc0: u64,
    hz: u64,
}

impl Clock {
    /// A clock started now (after the EAL initialised the TSC frequency).
    pub(crate) fn new() -> Self {
        let tsc0 = lcore::tsc();
        Self {
            base_ns: mapping::monotonic_ns(),
            tsc0,
            hz: lcore::tsc_hz().max(1),
        }
    }

    /// Now.
    #[inline]
    pub(crate) fn now(&self) -> Ticks {
        let cycles = lcore::tsc().wrapping_sub(self.tsc0);
        Ticks(self.base_ns + (cycles as u128 * 1_000_000_000 / self.hz as u128) as u64)
    }
}
