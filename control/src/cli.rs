//! The command line of the gateway daemon, `trapeze-gatewayd`, and its `--check` mode.
//!
//! ```text
//! trapeze-gatewayd --config PATH [--check] [--no-huge] [--workers N] [--log-level LEVEL]
//!                  [--api ADDR] [--stop-grace-ms MS] [--reload-dir DIR]
//!                  [--api-token-file FILE]
//! ```
//!
//! `--check` loads and validates the configuration, prints a summary (ports, VIPs with their
//! Maglev shares, backends, tables, workers, warnings, the Maglev fingerprint) and exits
//! [`EXIT_OK`]; an invalid configuration prints every error and exits [`EXIT_INVALID`].
//!
//! The parsing lives here so that the DPDK daemon binary (built later) and the
//! `trapeze-check` binary of this crate share it; `trapeze-check` takes the same options and
//! always behaves as `--check`.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};

use crate::config::{self, ConfigError, GatewayConfig, Overrides, MAX_WORKERS};

/// Exit status of a valid configuration.
pub const EXIT_OK: u8 = 0;
/// Exit status of an invalid or unreadable configuration (and of command-line errors, as clap
/// reports them).
pub const EXIT_INVALID: u8 = 2;

/// Log verbosity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum, Default)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// Normal operation (default).
    #[default]
    Info,
    /// Debugging.
    Debug,
    /// Everything.
    Trace,
}

/// Options of `trapeze-gatewayd`.
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(
    name = "trapeze-gatewayd",
    version,
    about = "trapeze: an MPTCP-aware L4 load balancer (gateway daemon)"
)]
pub struct GatewaydArgs {
    /// Configuration file (TOML; see configs/example.toml).
    #[arg(long, short = 'c', value_name = "PATH")]
    pub config: PathBuf,
    /// Validate the configuration, print a summary and exit (0: valid, 2: invalid).
    #[arg(long)]
    pub check: bool,
    /// Run DPDK without hugepages (appends --no-huge to the EAL arguments; for tests).
    #[arg(long)]
    pub no_huge: bool,
    /// Number of forwarding workers (overrides workers.count).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=i64::from(MAX_WORKERS)))]
    pub workers: Option<u16>,
    /// Log verbosity.
    #[arg(long, value_enum, value_name = "LEVEL", default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,
    /// Where the control API listens: `127.0.0.1:PORT`, `unix:/path`, or `off`.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9180")]
    pub api: String,
    /// On SIGTERM/SIGINT, first mark the instance `stopping` (GET /instance: the BGP feeder
    /// withdraws its VIPs) and keep forwarding this many milliseconds, so that the routers move
    /// the traffic away before the daemon exits. A second signal during the grace stops at once.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub stop_grace_ms: u64,
    /// Besides the configuration file, `POST /reload {"path": ...}` may read regular files under
    /// this directory (symbolic links resolved); without it, only the configuration file.
    #[arg(long, value_name = "DIR")]
    pub reload_dir: Option<PathBuf>,
    /// A file whose first line is the API's bearer token (at least 16 characters): every request
    /// must then carry `Authorization: Bearer TOKEN`. Required when `--api` is a TCP address
    /// that is not loopback (the daemon refuses to start without it).
    #[arg(long, value_name = "FILE")]
    pub api_token_file: Option<PathBuf>,
}

impl GatewaydArgs {
    /// The settings the command line overrides in the file.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            no_huge: self.no_huge,
            workers: self.workers,
            reload_dir: self.reload_dir.clone(),
        }
    }

    /// Loads and validates the configuration file with the command line's overrides.
    pub fn load(&self) -> Result<GatewayConfig, ConfigError> {
        config::load(&self.config, &self.overrides())
    }
}

/// Parses a command line (`args[0]` is the program name) as `bin_name` (used in help and
/// usage messages).
pub fn parse_args<I, T>(bin_name: &'static str, args: I) -> Result<GatewaydArgs, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = GatewaydArgs::command()
        .name(bin_name)
        .bin_name(bin_name)
        .try_get_matches_from(args)?;
    GatewaydArgs::from_arg_matches(&matches)
}

/// The `--check` action: validates and prints the summary to `out`, or the errors to `err`.
/// Returns the exit status ([`EXIT_OK`] or [`EXIT_INVALID`]).
pub fn run_check(args: &GatewaydArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    match args.load() {
        Ok(cfg) => {
            let _ = writeln!(out, "{}: configuration OK", args.config.display());
            let _ = write!(out, "{}", cfg.summary());
            EXIT_OK
        }
        Err(e) => {
            let _ = writeln!(err, "{}", error_report(&args.config, &e));
            EXIT_INVALID
        }
    }
}

/// How a configuration error is shown to an operator: the file, then one line per problem.
pub fn error_report(path: &std::path::Path, e: &ConfigError) -> String {
    match e {
        ConfigError::Invalid(errors) => {
            let mut s = format!(
                "error: {}: invalid configuration ({} problem{})",
                path.display(),
                errors.len(),
                if errors.len() == 1 { "" } else { "s" }
            );
            for fe in errors {
                s.push_str("\n  ");
                s.push_str(&fe.to_string());
            }
            s
        }
        ConfigError::Io { .. } => format!("error: {e}"),
        ConfigError::Parse { .. } => format!("error: {}: {e}", path.display()),
    }
}

/// `main` of the `trapeze-check` binary: parses `argv` and always runs the check. Command-line
/// errors exit as clap decides (2 for usage errors, 0 for `--help`/`--version`).
pub fn check_main<I, T>(argv: I) -> std::process::ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args = match parse_args("trapeze-check", argv) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    let code = run_check(&args, &mut std::io::stdout(), &mut std::io::stderr());
    std::process::ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_options() {
        let a = parse_args(
            "trapeze-gatewayd",
            [
                "trapeze-gatewayd",
                "--config",
                "x.toml",
                "--check",
                "--no-huge",
                "--workers",
                "4",
                "--log-level",
                "debug",
            ],
        )
        .unwrap();
        assert_eq!(a.config, PathBuf::from("x.toml"));
        assert!(a.check && a.no_huge);
        assert_eq!(a.workers, Some(4));
        assert_eq!(a.log_level, LogLevel::Debug);
        assert_eq!(
            a.overrides(),
            Overrides {
                no_huge: true,
                workers: Some(4),
                reload_dir: None,
            }
        );
        let d = parse_args("trapeze-gatewayd", ["t", "-c", "y.toml"]).unwrap();
        assert!(!d.check && !d.no_huge && d.workers.is_none());
        assert_eq!(d.log_level, LogLevel::Info);
    }

    #[test]
    fn refuses_bad_options() {
        for bad in [
            &["t"][..],
            &["t", "--config"],
            &["t", "-c", "x", "--workers", "0"],
            &["t", "-c", "x", "--workers", "many"],
            &["t", "-c", "x", "--log-level", "loud"],
            &["t", "-c", "x", "--frobnicate"],
        ] {
            assert!(parse_args("trapeze-gatewayd", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn command_is_well_formed() {
        GatewaydArgs::command().debug_assert();
    }
}
