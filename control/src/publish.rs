//! Publication of pool snapshots to the workers, RCU style: the control thread swaps in a new
//! `Arc<PoolSnapshot>` and bumps a version; a worker compares the version once per burst (one
//! relaxed atomic load, no lock) and takes the new snapshot only when it changed. A worker holds
//! its snapshot for a whole burst, so it never sees half a change.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use trapeze_core::pool::PoolSnapshot;

/// The current snapshot and its version.
#[derive(Debug)]
pub struct Published {
    version: AtomicU64,
    current: RwLock<Arc<PoolSnapshot>>,
}

impl Published {
    pub fn new(first: PoolSnapshot) -> Self {
        Self {
            version: AtomicU64::new(1),
            current: RwLock::new(Arc::new(first)),
        }
    }

    /// Replaces the snapshot (control thread).
    pub fn publish(&self, next: PoolSnapshot) {
        *self.current.write() = Arc::new(next);
        self.version.fetch_add(1, Ordering::Release);
    }

    /// The version of the current snapshot.
    #[inline]
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The current snapshot.
    pub fn load(&self) -> Arc<PoolSnapshot> {
        self.current.read().clone()
    }
}

/// A worker's view: its snapshot and the version it has.
#[derive(Debug)]
pub struct Reader<'a> {
    published: &'a Published,
    version: u64,
    pub pool: Arc<PoolSnapshot>,
}

impl<'a> Reader<'a> {
    pub fn new(published: &'a Published) -> Self {
        let version = published.version();
        Self {
            published,
            version,
            pool: published.load(),
        }
    }

    /// Picks up a newer snapshot if there is one (once per burst).
    #[inline]
    pub fn refresh(&mut self) {
        let v = self.published.version();
        if v != self.version {
            self.pool = self.published.load();
            self.version = v;
        }
    }
}
