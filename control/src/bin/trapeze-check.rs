//! `trapeze-check`: validates a gateway configuration file and prints its summary, as
//! `trapeze-gatewayd --check` will. Exit status 0: valid; 2: invalid, unreadable, or a bad
//! command line.
//!
//! ```text
//! trapeze-check --config configs/testbed.toml [--no-huge] [--workers N]
//! ```

fn main() -> std::process::ExitCode {
    trapeze_control::cli::check_main(std::env::args_os())
}
