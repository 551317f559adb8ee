//! Time as the core sees it: a number handed in by the caller. The core never reads a clock.

use core::time::Duration;

/// A monotonic timestamp in nanoseconds since an arbitrary epoch chosen by the runtime
/// (the DPDK worker converts its TSC; tests count by hand).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Ticks(pub u64);

impl Ticks {
    /// Zero, the epoch.
    pub const ZERO: Self = Self(0);

    /// From whole milliseconds.
    #[inline]
    pub const fn from_millis(ms: u64) -> Self {
        Self(ms * 1_000_000)
    }

    /// From whole seconds.
    #[inline]
    pub const fn from_secs(s: u64) -> Self {
        Self(s * 1_000_000_000)
    }

    /// The coarse clock stored in table entries: milliseconds, wrapping every 49.7 days.
    /// Entries compare coarse stamps with wrapping subtraction, so wrap-around is harmless as
    /// long as no timeout exceeds 24 days.
    #[inline]
    pub const fn coarse_ms(self) -> u32 {
        (self.0 / 1_000_000) as u32
    }
}

impl core::ops::Add<Duration> for Ticks {
    type Output = Self;

    /// This instant plus a duration (saturating).
    #[inline]
    fn add(self, d: Duration) -> Self {
        Self(self.0.saturating_add(d.as_nanos() as u64))
    }
}

/// Milliseconds elapsed between two coarse stamps (wrapping).
#[inline]
pub const fn coarse_elapsed(now_ms: u32, then_ms: u32) -> u32 {
    now_ms.wrapping_sub(then_ms)
}
