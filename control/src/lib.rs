//! Control plane of trapeze (placeholder crate; filled in with the daemon).
