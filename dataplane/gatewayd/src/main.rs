//! `trapeze-gatewayd`: the gateway daemon.
//!
//! Reads a TOML configuration (see `configs/example.toml`), starts DPDK on the configured
//! devices, runs one poll-mode worker per configured core around the sans-IO core
//! (`trapeze_core::pipeline`), resolves the backends' MACs, and stops cleanly on SIGINT/SIGTERM,
//! printing its final counters.
//!
//! Exit status: 0 after a clean stop (or a valid `--check`), 2 for an invalid configuration or
//! command line, 1 when the runtime cannot start (DPDK, hugepages, devices).

use std::process::ExitCode;

use trapeze_control::cli::{self, GatewaydArgs};
use trapeze_control::log::Log;

#[cfg(not(tz_no_dpdk))]
mod clock;
#[cfg(not(tz_no_dpdk))]
mod dataplane;
#[cfg(not(tz_no_dpdk))]
mod frame;
#[cfg(not(tz_no_dpdk))]
mod preflight;
#[cfg(not(tz_no_dpdk))]
mod runtime;
#[cfg(not(tz_no_dpdk))]
mod state;
#[cfg(not(tz_no_dpdk))]
mod worker;

fn main() -> ExitCode {
    let args: GatewaydArgs = match cli::parse_args("trapeze-gatewayd", std::env::args_os()) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    if args.check {
        let code = cli::run_check(&args, &mut std::io::stdout(), &mut std::io::stderr());
        return ExitCode::from(code);
    }
    let cfg = match args.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}", cli::error_report(&args.config, &e));
            return ExitCode::from(cli::EXIT_INVALID);
        }
    };
    let log = Log::new(args.log_level);
    for w in &cfg.warnings {
        log.warn(w);
    }
    run(cfg, &args, &log)
}

#[cfg(not(tz_no_dpdk))]
fn run(cfg: trapeze_control::config::GatewayConfig, args: &GatewaydArgs, log: &Log) -> ExitCode {
    // TRAPEZE_NO_PREFLIGHT=1 skips the checks: docker/test-container.sh uses it to show that
    // DPDK itself then fails without each capability (the checks only name the cause).
    let skip = std::env::var_os("TRAPEZE_NO_PREFLIGHT").is_some_and(|v| v == "1");
    let checked = if skip {
        Ok(())
    } else {
        preflight::check(&cfg.eal_args)
    };
    if let Err(hint) = checked {
        eprintln!("trapeze-gatewayd: error: {hint}");
        return ExitCode::from(1);
    }
    match runtime::run(cfg, args, log) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trapeze-gatewayd: error: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(tz_no_dpdk)]
fn run(_cfg: trapeze_control::config::GatewayConfig, _args: &GatewaydArgs, _log: &Log) -> ExitCode {
    eprintln!(
        "trapeze-gatewayd: error: this binary was built without DPDK; install DPDK 22.11 \
         (Debian 12: apt-get install libdpdk-dev dpdk-dev libclang-dev pkg-config) and rebuild"
    );
    ExitCode::from(1)
}
