//! # trapeze-control
//!
//! The control plane: configuration, the server pool (add, remove, drain, weight, health), the
//! API and metrics. It builds [`trapeze_core::pool::PoolSnapshot`]s and publishes them to the
//! workers. This crate grows with the daemon; today it has:
//!
//! * [`config`]: the gateway's TOML configuration file, parsed and validated into the core's
//!   types (a [`trapeze_core::pool::PoolSpec`], a worker template, the token table sizing, the
//!   EAL arguments and per-port settings for the runtime);
//! * [`cli`]: the daemon's command line (`trapeze-gatewayd --config PATH [--check] ...`) and its
//!   `--check` mode, also shipped as the `trapeze-check` binary;
//! * [`api`]: the REST API server (its own thread, talking to the daemon's control thread over
//!   a channel), its request and response types, the Prometheus metrics rendering, and the
//!   `trapezectl` command line.

pub mod api;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod dataplane;
pub mod dispatch;
pub mod health;
pub mod instance;
pub mod log;
pub mod neighbour;
pub mod pool;
pub mod publish;
pub mod testkit;
pub mod thread;
