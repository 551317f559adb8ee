//! Where a table's memory comes from: a section of a mapped state file, or the heap.
//!
//! The runtime maps the state file (hugetlbfs or `/dev/shm`, see [`crate::state`]) and hands
//! the core plain memory: `&'static mut [T]` slices of plain-old-data records
//! (`bytemuck::Pod`: no padding, no pointer, every bit pattern a valid value), which the core
//! validates before it trusts them. Tests, benches and replays allocate on the heap instead.
//! Both look the same to a table: a slice. (Telling them apart on each access costs nothing
//! measurable: callgrind counts the same instructions per established packet with this type as
//! with a bare `&'static mut [T]`.)

use core::fmt;
use core::ops::{Deref, DerefMut};

use bytemuck::Zeroable;

/// A table's memory: owned on the heap, or borrowed for the life of the process from a mapping
/// the runtime never unmaps.
pub struct TableMem<T: 'static>(Inner<T>);

enum Inner<T: 'static> {
    Heap(Box<[T]>),
    Mapped(&'static mut [T]),
}

impl<T: Zeroable> TableMem<T> {
    /// `n` zeroed records on the heap (zeroed by the allocator: pages are touched when used).
    pub fn zeroed(n: usize) -> Self {
        Self(Inner::Heap(bytemuck::allocation::zeroed_slice_box(n)))
    }
}

impl<T> TableMem<T> {
    /// Records in a mapping that lives until the process exits (a section of the state file).
    pub fn mapped(records: &'static mut [T]) -> Self {
        Self(Inner::Mapped(records))
    }

    /// Whether the records live in a mapping (a state file) rather than on the heap.
    pub fn is_mapped(&self) -> bool {
        matches!(self.0, Inner::Mapped(_))
    }
}

impl<T> Deref for TableMem<T> {
    type Target = [T];

    #[inline]
    fn deref(&self) -> &[T] {
        match &self.0 {
            Inner::Heap(b) => b,
            Inner::Mapped(s) => s,
        }
    }
}

impl<T> DerefMut for TableMem<T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [T] {
        match &mut self.0 {
            Inner::Heap(b) => b,
            Inner::Mapped(s) => s,
        }
    }
}

impl<T> fmt::Debug for TableMem<T> {
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
    fn heap_and_mapped_memory_read_alike() {
        let mut a = TableMem::<[u64; 3]>::zeroed(1000);
        assert!(a.iter().all(|r| *r == [0; 3]));
        a[7] = [1, 2, 3];
        assert!(!a.is_mapped());
        let leaked: &'static mut [[u64; 3]] = Box::leak(vec![[4u64; 3]; 10].into_boxed_slice());
        let mut m = TableMem::mapped(leaked);
        m[9][2] = 5;
        assert!(m.is_mapped());
        assert_eq!((a[7], m[9], m.len()), ([1, 2, 3], [4, 4, 5], 10));
    }
}
