//! Where a table's memory comes from: a section of a mapped state file, or the heap.
//!
//! The runtime maps the state file (hugetlbfs or `/dev/shm`, see [`crate::state`]) and hands
//! the core plain memory: `&'static mut [T]` slices of plain-old-data records
//! (`bytemuck::Pod`: no padding, no pointer, every bit pattern a valid value), which the core
//! validates before it trusts them. Tests, benches and replays allocate on the heap instead.
//!
//! Both are one representation, a `&'static mut [T]`, so that reaching a record costs the same
//! whatever the memory (an enum of `Box<[T]>` and `&'static mut [T]` cost about 7 instructions
//! per established packet, measured with callgrind, for the branch on every access). Heap
//! memory is therefore leaked into a `&'static mut [T]` and, when its table is dropped, put back
//! in a process-wide pool from which the next table of the same record type and length takes it
//! (zeroed again): tests and benches that build many tables reuse a bounded set of allocations.

use core::any::Any;
use core::fmt;
use core::ops::{Deref, DerefMut};

use bytemuck::Zeroable;
use parking_lot::Mutex;

/// A table's memory: records that stay valid for the life of the process.
pub struct TableMem<T: Send + 'static> {
    records: &'static mut [T],
    /// Heap memory goes back to [`POOL`] when dropped; mapped memory belongs to the runtime.
    heap: bool,
}

/// Heap record slices of dropped tables, each a `&'static mut [T]` behind `dyn Any`.
static POOL: Mutex<Vec<Box<dyn Any + Send>>> = Mutex::new(Vec::new());

impl<T: Zeroable + Send + 'static> TableMem<T> {
    /// `n` zeroed records on the heap (reused from a dropped table of the same type and length
    /// when there is one).
    pub fn zeroed(n: usize) -> Self {
        let reused = {
            let mut pool = POOL.lock();
            let at = pool.iter().position(|b| {
                b.downcast_ref::<&'static mut [T]>()
                    .is_some_and(|s| s.len() == n)
            });
            at.map(|i| pool.swap_remove(i))
        };
        let records = match reused.and_then(|b| b.downcast::<&'static mut [T]>().ok()) {
            Some(b) => {
                let records = *b;
                records.fill_with(T::zeroed);
                records
            }
            // Zeroed by the allocator: pages are only touched when used.
            None => Box::leak(bytemuck::allocation::zeroed_slice_box::<T>(n)),
        };
        Self {
            records,
            heap: true,
        }
    }
}

impl<T: Send + 'static> TableMem<T> {
    /// Records in a mapping that lives until the process exits (a section of the state file).
    pub fn mapped(records: &'static mut [T]) -> Self {
        Self {
            records,
            heap: false,
        }
    }

    /// Whether the records live in a mapping (a state file) rather than on the heap.
    pub fn is_mapped(&self) -> bool {
        !self.heap
    }
}

impl<T: Send + 'static> Drop for TableMem<T> {
    fn drop(&mut self) {
        if self.heap {
            let records = core::mem::take(&mut self.records);
            POOL.lock().push(Box::new(records));
        }
    }
}

impl<T: Send + 'static> Deref for TableMem<T> {
    type Target = [T];

    #[inline]
    fn deref(&self) -> &[T] {
        self.records
    }
}

impl<T: Send + 'static> DerefMut for TableMem<T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [T] {
        self.records
    }
}

impl<T: Send + 'static> fmt::Debug for TableMem<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableMem")
            .field("records", &self.len())
            .field("mapped", &self.is_mapped())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_memory_is_zeroed_and_reused() {
        let mut a = TableMem::<[u64; 3]>::zeroed(1000);
        a[7] = [1, 2, 3];
        let first = a.as_ptr();
        drop(a);
        // Another test may take it first: only when this one does is it the same allocation.
        let b = TableMem::<[u64; 3]>::zeroed(1000);
        assert!(b.iter().all(|r| *r == [0; 3]));
        if b.as_ptr() == first {
            assert_eq!(b[7], [0; 3]);
        }
        assert!(!b.is_mapped());
        let c = TableMem::<[u64; 3]>::zeroed(999);
        assert_eq!(c.len(), 999);
    }
}
