//! The pool snapshot: VIPs and backends, published immutably to the workers.

/// A backend's identity, stable for its whole life in the pool: the control plane never reuses
/// an id while a flow or token entry may still name it. Also the index of the backend in
/// [`PoolSnapshot::backends`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct BackendId(pub u16);
