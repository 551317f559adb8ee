//! `trapeze-loadgen`: the system benchmark's DPDK load generator.
//!
//! ```text
//! trapeze-loadgen --traffic data --flows 100000 --trial-secs 5 -- \
//!     --no-pci -l 0 --file-prefix tzbench-lg -m 256 \
//!     --vdev=net_memif0,role=client,socket=/run/tzbench/a.sock,socket-abstract=no \
//!     --vdev=net_memif1,role=client,socket=/run/tzbench/b.sock,socket-abstract=no
//! ```
//!
//! It sends on `--tx-port` (toward the device under test's client side) and receives on
//! `--rx-port` what the device forwards; on the receive side it answers MP_CAPABLE SYNs as a
//! backend would, and on the send side it answers the SYN/ACKs with third ACKs, so handshakes
//! cross the device in full. It searches the highest offered rate with at most `--max-loss`
//! loss, then measures latency at `--latency-at` of that rate, and prints one `result` line of
//! `key=value` pairs on stdout (progress goes to stderr).

use clap::{Parser, ValueEnum};

#[cfg(not(tz_no_dpdk))]
mod run;

/// What to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Traffic {
    /// Data segments over `--flows` established flows (adopted by the gateway in a warm-up pass).
    Data,
    /// A flood of plain SYNs, each a new flow.
    Syn,
    /// Full MP_CAPABLE handshakes: SYN, the generator's SYN/ACK as the backend, third ACK.
    Handshake,
    /// MP_JOIN SYNs carrying the tokens of `--tokens` connections opened in a set-up phase.
    Join,
    /// A weighted mix (`--mix`).
    Mix,
}

/// Command line.
#[derive(Debug, Parser)]
#[command(name = "trapeze-loadgen", version, about)]
pub(crate) struct Args {
    /// Traffic kind.
    #[arg(long, value_enum, default_value = "data")]
    pub(crate) traffic: Traffic,
    /// Weights for `--traffic mix`, in percent of originated packets.
    #[arg(long, default_value = "data=90,syn=4,mpc=4,join=2")]
    pub(crate) mix: String,
    /// Established flows for data traffic (K, up to millions). In a mix, the data goes over the
    /// MPTCP connections of the join set-up (`--tokens`) instead.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) flows: u64,
    /// The VIP the traffic goes to (IPv4 `ADDR:PORT`). A DSR VIP works for data and SYN
    /// traffic: what the gateway tunnels (IPIP, or GUE to UDP port 6080) is recognised on
    /// receipt.
    #[arg(long, default_value = "192.0.2.10:80")]
    pub(crate) vip: std::net::SocketAddrV4,
    /// Connections opened before a join run; joins carry their tokens round robin.
    #[arg(long, default_value_t = 65_536)]
    pub(crate) tokens: u64,
    /// The device's port the generator sends to (`--vdev` name).
    #[arg(long, default_value = "net_memif0")]
    pub(crate) tx_port: String,
    /// The port the forwarded traffic arrives on.
    #[arg(long, default_value = "net_memif1")]
    pub(crate) rx_port: String,
    /// MAC of the device's client-side port (destination of generated frames).
    #[arg(long, default_value = "02:00:00:00:00:01")]
    pub(crate) dut_mac: String,
    /// Seconds per trial.
    #[arg(long, default_value_t = 5.0)]
    pub(crate) trial_secs: f64,
    /// Trials of the binary search at most (the calibration trial not included).
    #[arg(long, default_value_t = 8)]
    pub(crate) steps: u32,
    /// Largest loss counted as "no loss" (fraction).
    #[arg(long, default_value_t = 0.001)]
    pub(crate) max_loss: f64,
    /// Repeat a failed search trial this many times before counting the rate as lossy (on a
    /// shared machine a single descheduling of the device's core can lose 0.1%).
    #[arg(long, default_value_t = 1)]
    pub(crate) retries: u32,
    /// Run one trial at this offered rate (originated packets per second) instead of a search.
    #[arg(long)]
    pub(crate) rate: Option<f64>,
    /// Measure latency at this fraction of the zero-loss rate (0 to skip).
    #[arg(long, default_value_t = 0.5)]
    pub(crate) latency_at: f64,
    /// Seconds the receive side keeps polling after a trial for frames still in flight.
    #[arg(long, default_value_t = 0.1)]
    pub(crate) drain_secs: f64,
    /// Label printed in the result line.
    #[arg(long, default_value = "run")]
    pub(crate) label: String,
    /// DPDK EAL arguments (after `--`); `--no-pci` is required.
    #[arg(last = true, required = true)]
    pub(crate) eal: Vec<String>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if !args.eal.iter().any(|a| a == "--no-pci") {
        eprintln!(
            "trapeze-loadgen: error: pass --no-pci among the EAL arguments (virtual devices only)"
        );
        return std::process::ExitCode::from(2);
    }
    run_main(&args)
}

#[cfg(not(tz_no_dpdk))]
fn run_main(args: &Args) -> std::process::ExitCode {
    match run::main(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trapeze-loadgen: error: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

#[cfg(tz_no_dpdk)]
fn run_main(_args: &Args) -> std::process::ExitCode {
    eprintln!(
        "trapeze-loadgen: error: this binary was built without DPDK; install DPDK 22.11 \
         (Debian 12: apt-get install libdpdk-dev dpdk-dev libclang-dev pkg-config) and rebuild"
    );
    std::process::ExitCode::from(1)
}
