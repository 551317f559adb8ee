//! The zero-loss rate search: a binary search over the offered rate, RFC 2544 style.

/// One trial's outcome as the search sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    /// The rate offered (packets or operations per second).
    pub offered: f64,
    /// Fraction lost, 0..=1.
    pub loss: f64,
}

/// Binary search for the highest rate whose loss is at most `max_loss`.
#[derive(Debug, Clone)]
pub struct Search {
    lo: f64,
    hi: f64,
    best: Option<Outcome>,
    max_loss: f64,
    steps_left: u32,
    resolution: f64,
    tried: u32,
}

impl Search {
    /// Searches `(0, hi]`, at most `steps` trials, stopping when the interval is narrower than
    /// `resolution` (a fraction of `hi`).
    pub fn new(hi: f64, max_loss: f64, steps: u32, resolution: f64) -> Self {
        Self {
            lo: 0.0,
            hi,
            best: None,
            max_loss,
            steps_left: steps,
            resolution: resolution * hi,
            tried: 0,
        }
    }

    /// The next rate to try, `None` when done. The first trial is at `hi` itself.
    pub fn next_rate(&self) -> Option<f64> {
        if self.steps_left == 0 || self.hi - self.lo < self.resolution {
            return None;
        }
        if self.tried == 0 {
            // First try the top: a device that keeps up with the generator passes at once.
            return Some(self.hi);
        }
        Some((self.lo + self.hi) / 2.0)
    }

    /// Records the outcome of a trial at `offered`.
    pub fn record(&mut self, o: Outcome) {
        self.steps_left = self.steps_left.saturating_sub(1);
        self.tried += 1;
        if o.loss <= self.max_loss {
            self.lo = o.offered;
            if self.best.is_none_or(|b| o.offered > b.offered) {
                self.best = Some(o);
            }
            if o.offered >= self.hi {
                self.steps_left = 0;
            }
        } else {
            self.hi = o.offered;
        }
    }

    /// The best passing trial so far.
    pub fn best(&self) -> Option<Outcome> {
        self.best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(capacity: f64, hi: f64) -> Option<f64> {
        let mut s = Search::new(hi, 0.001, 20, 0.01);
        while let Some(r) = s.next_rate() {
            let loss = if r <= capacity {
                0.0
            } else {
                1.0 - capacity / r
            };
            s.record(Outcome { offered: r, loss });
        }
        s.best().map(|b| b.offered)
    }

    #[test]
    fn finds_capacity_within_resolution() {
        let got = run(3.3e6, 10e6).unwrap();
        assert!(got <= 3.3e6 && got > 3.3e6 - 0.1e6, "{got}");
    }

    #[test]
    fn device_faster_than_generator_passes_first_trial() {
        let mut s = Search::new(5e6, 0.001, 8, 0.01);
        assert_eq!(s.next_rate(), Some(5e6));
        s.record(Outcome {
            offered: 5e6,
            loss: 0.0,
        });
        assert_eq!(s.next_rate(), None);
        assert_eq!(s.best().unwrap().offered, 5e6);
    }

    #[test]
    fn nothing_passes() {
        assert_eq!(run(0.0, 1e6), None);
    }
}
