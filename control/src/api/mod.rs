//! The control API: a REST server on its own thread ([`server`]), the messages it exchanges
//! with the daemon's control thread ([`types`]), the Prometheus rendering of the counters
//! ([`metrics`]) and the `trapezectl` command line ([`ctl`]). `docs/API.md` is the operator's
//! reference.
//!
//! ## What the daemon does with it
//!
//! ```no_run
//! use std::sync::mpsc;
//! use trapeze_control::api::{self, BindAddr, ControlMsg, Request, Response};
//!
//! let (to_control, requests) = mpsc::sync_channel::<ControlMsg>(64);
//! let api = api::serve(BindAddr::default(), to_control)?;
//! // In the control loop, between its other duties:
//! while let Ok((req, reply)) = requests.try_recv() {
//!     let resp = match req {
//!         Request::Status => Response::Status(Default::default()),
//!         _ => Response::error(501, "not yet"),
//!     };
//!     api::answer(&reply, resp);
//! }
//! drop(api); // stops the server
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! The daemon's control thread is [`crate::thread::ControlThread`], which answers with
//! [`crate::dispatch`]; `control/tests/api.rs` runs the server against it, over the
//! dataplane stand-in of [`crate::testkit`].

pub mod ctl;
pub mod instance;
pub mod metrics;
pub mod server;
pub mod strict_json;
pub mod types;

pub use metrics::{
    render, vip_views, BackendMeta, MetricsInput, TokenSample, VipMeta, WorkerSample,
};
pub use server::{
    answer, serve, serve_with, ApiHandle, BindAddr, ControlMsg, Reply, ServeOptions, ToControl,
    DEFAULT_PORT,
};
pub use types::{
    check_version, BackendBody, ClusterStatsView, ControlStatsView, DeviceStatsView, ErrorBody,
    PortStatsView, ReloadReport, RemoveMode, Request, Response, State, StatsView, StatusView,
    VipBody, VipView,
};
