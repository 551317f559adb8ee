//! `trapezectl`: the operator's command line for a running trapeze gateway, over its REST API.
//!
//! ```text
//! trapezectl [--api http://127.0.0.1:9180 | --api unix:/run/trapeze.sock] list
//! trapezectl drain srv2 --deadline 300
//! ```
//!
//! Exit status 0: success; 1: the API refused (the reason is printed) or could not be reached;
//! 2: a bad command line. See docs/API.md.

fn main() -> std::process::ExitCode {
    trapeze_control::api::ctl::ctl_main(std::env::args_os())
}
