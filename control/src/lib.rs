//! # trapeze-control
//!
//! The control plane: configuration, the server pool (add, remove, drain, weight, health), the
//! API and metrics. It builds [`trapeze_core::pool::PoolSnapshot`]s and publishes them to the
//! workers. This crate grows with the daemon; today the pool is assembled with
//! [`trapeze_core::pool::PoolSpec`] directly.
