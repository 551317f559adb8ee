//! Byte-level helpers shared by every format: field ranges and big-endian reads/writes.
//!
//! Callers index with ranges that `check_len` has already validated, so these helpers are plain
//! slice operations; they panic only on a broken `check_len`, which the fuzz target would find.

/// A fixed field: a byte range within a header.
pub type Field = core::ops::Range<usize>;
/// The rest of a buffer from an offset.
pub type Rest = core::ops::RangeFrom<usize>;

/// Reads a big-endian `u16` at `at`.
#[inline]
pub fn read_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Reads a big-endian `u32` at `at`.
#[inline]
pub fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reads a big-endian `u64` at `at`.
#[inline]
pub fn read_u64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

/// Writes a big-endian `u16` at `at`.
#[inline]
pub fn write_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Writes a big-endian `u32` at `at`.
#[inline]
pub fn write_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// Writes a big-endian `u64` at `at`.
#[inline]
pub fn write_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}
