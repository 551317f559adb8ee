//! The pool snapshot: VIPs and backends, published immutably to workers (being written).

/// A backend's identity, stable for its whole life in the pool: the control plane never reuses
/// an id while a flow or token entry may still name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct BackendId(pub u16);

/// A VIP's identity, stable like [`BackendId`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct VipId(pub u16);
