//! Publication of pool snapshots to the workers, RCU style: the control thread swaps in a new
//! `Arc<PoolSnapshot>` and bumps a version; a worker compares the version once per burst (one
//! atomic load, no lock) and takes the new snapshot only when it changed. A worker holds its
//! snapshot for a whole burst, so it never sees half a change.
//!
//! **Old snapshots are freed on the control thread, never on a worker.** A snapshot holds the
//! Maglev tables of every VIP (65537 slots each by default): freeing it is a burst of `free`
//! calls that has no place between two packet bursts. So the publisher keeps every snapshot it
//! replaced (its *retired* list) until no one else holds it, and frees it there:
//!
//! * a worker that moves on drops its reference, which is never the last one (the retired list
//!   still holds the snapshot), so its drop is one atomic decrement;
//! * [`Published::reclaim`], called by the control thread on every round, frees each retired
//!   snapshot whose only holder is the list (`Arc::try_unwrap`: no reader can reach a retired
//!   snapshot any more, so nobody can take a new reference meanwhile).
//!
//! Reclaiming never waits: a stalled worker only keeps the one snapshot it holds alive (the DPDK
//! RCU guide's rule: poll, defer, never block the writer on a reader). The list holds at most
//! one snapshot per reader (workers, the token-sync threads) plus those freed at the next round.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use trapeze_core::pool::PoolSnapshot;

/// The current snapshot and its version, and the snapshots it replaced that readers may still
/// hold.
#[derive(Debug)]
pub struct Published {
    version: AtomicU64,
    current: RwLock<Arc<PoolSnapshot>>,
    retired: Mutex<Vec<Arc<PoolSnapshot>>>,
}

impl Published {
    /// Publishes `first`.
    pub fn new(first: PoolSnapshot) -> Self {
        Self {
            version: AtomicU64::new(1),
            current: RwLock::new(Arc::new(first)),
            retired: Mutex::new(Vec::new()),
        }
    }

    /// Replaces the snapshot (control thread). The one it replaces is retired, not freed.
    pub fn publish(&self, next: PoolSnapshot) {
        let old = std::mem::replace(&mut *self.current.write(), Arc::new(next));
        self.version.fetch_add(1, Ordering::Release);
        self.retired.lock().push(old);
        self.reclaim();
    }

    /// Frees the retired snapshots no reader holds any more (control thread; never waits).
    /// Returns how many remain retired, held by a reader that has not moved on yet.
    pub fn reclaim(&self) -> usize {
        let held: Vec<Arc<PoolSnapshot>> = std::mem::take(&mut *self.retired.lock());
        let mut still = Vec::with_capacity(held.len());
        for s in held {
            if let Err(s) = Arc::try_unwrap(s) {
                still.push(s);
            } // Ok: the snapshot was freed right here.
        }
        let n = still.len();
        self.retired.lock().extend(still);
        n
    }

    /// How many replaced snapshots are still held by a reader.
    pub fn retired(&self) -> usize {
        self.retired.lock().len()
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
pub struct Reader {
    version: u64,
    /// The snapshot the worker decides with.
    pub pool: Arc<PoolSnapshot>,
}

impl Reader {
    /// The current snapshot of `published`.
    pub fn new(published: &Published) -> Self {
        let version = published.version();
        Self {
            version,
            pool: published.load(),
        }
    }

    /// Picks up a newer snapshot of `published` if there is one (once per burst). Dropping the
    /// old one here never frees it (see the module documentation).
    #[inline]
    pub fn refresh(&mut self, published: &Published) {
        let v = published.version();
        if v != self.version {
            self.pool = published.load();
            self.version = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Weak;

    use trapeze_core::testkit::demo_pool;

    use super::*;

    #[test]
    fn a_worker_moving_on_never_frees_a_snapshot_the_control_thread_does() {
        let published = Published::new(demo_pool(2));
        let v1: Weak<PoolSnapshot> = Arc::downgrade(&published.load());
        // A worker on another thread holds version 1 while the control thread publishes twice.
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let (done, finished) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|s| {
            let p = &published;
            let mut reader = Reader::new(p);
            s.spawn(move || {
                wait.recv().unwrap();
                reader.refresh(p); // drops its reference to version 1
                assert!(Arc::ptr_eq(&reader.pool, &p.load()));
                done.send(()).unwrap();
                // Keeps version 3 until the thread ends.
                drop(reader);
            });
            published.publish(demo_pool(3));
            let v2 = Arc::downgrade(&published.load());
            published.publish(demo_pool(4));
            // Version 2 was never read by anyone: freed at once, on this thread.
            assert!(v2.upgrade().is_none());
            // Version 1 is held by the worker: retired, alive.
            assert_eq!(published.retired(), 1);
            assert!(v1.upgrade().is_some());
            go.send(()).unwrap();
            finished.recv().unwrap();
            // The worker dropped its reference, but the snapshot is still alive: its last
            // reference is the retired list's, and only the control thread frees it.
            assert!(v1.upgrade().is_some(), "freed on the worker");
            assert_eq!(published.reclaim(), 0);
            assert!(v1.upgrade().is_none(), "freed by reclaim");
        });
    }

    #[test]
    fn a_stalled_reader_keeps_only_its_own_snapshot() {
        let published = Published::new(demo_pool(2));
        let stalled = Reader::new(&published);
        for n in 3..20 {
            published.publish(demo_pool(n));
        }
        assert_eq!(published.retired(), 1, "only the stalled reader's snapshot");
        drop(stalled);
        assert_eq!(published.reclaim(), 0);
    }
}
