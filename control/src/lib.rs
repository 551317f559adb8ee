//! # trapeze-control
//!
//! The control plane: configuration, the server pool (add, remove, drain, weight, health), the
//! API and metrics. It builds [`trapeze_core::pool::PoolSnapshot`]s and publishes them to the
//! workers. It needs nothing from DPDK: what it needs from the dataplane is the small
//! [`dataplane::Dataplane`] trait (send a frame, read the punted frames, read the counters),
//! which the daemon implements over DPDK and the tests over the core's pipeline.
//!
//! ```text
//! config/  -> the file, validated      api/ -> the REST server, its types, metrics, trapezectl
//!                  \                          |  requests (a channel)
//!                   v                         v
//! thread   the control thread's loop: dispatch -> pool -> publish (snapshots to the workers)
//!            |        health (probes), neighbour (ARP/NDP), instance (announcements)
//!            v
//! dataplane  the trait: send, punted, counters       cluster: the token-sync threads
//! ```
//!
//! * [`config`]: the gateway's TOML configuration file, parsed and validated into the core's
//!   types (a [`trapeze_core::pool::PoolSpec`], a worker template, the token table sizing, the
//!   EAL arguments and per-port settings for the runtime);
//! * [`cli`]: the daemon's command line (`trapeze-gatewayd --config PATH [--check] ...`) and its
//!   `--check` mode, also shipped as the `trapeze-check` binary;
//! * [`api`]: the REST API server (its own thread, talking to the control thread over a
//!   channel), its request and response types, the Prometheus metrics rendering, and the
//!   `trapezectl` command line;
//! * [`thread`]: the control thread's loop, over a [`dataplane::Dataplane`]; it answers the
//!   API's requests with [`dispatch`], changes the pool with [`pool`], publishes snapshots with
//!   [`publish`] (and frees the old ones), probes the backends ([`health`]), resolves their
//!   MACs ([`neighbour`]) and keeps the instance's announcement state ([`instance`]);
//! * [`cluster`]: the token-sync threads of `[cluster]`;
//! * [`watchdog`]: the workers' heartbeats, checked by the control thread;
//! * [`log`]: the daemon's stderr log;
//! * [`testkit`]: the dataplane stand-in for tests (the core's pipeline and simulated hosts).
//!
//! No `unsafe` (the workspace forbids it), no DPDK.

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
pub mod watchdog;
