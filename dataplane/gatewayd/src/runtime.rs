//! Start-up, supervision and shutdown of the daemon.
//!
//! ```text
//! EAL init (--no-pci and vdevs from the config) -> mempool -> ports (one RX/TX queue per
//! worker, promiscuous, started) -> the tables from the state file (re-attached, or new; the
//! pool takes the file's ids: crate::state) -> pool snapshot with the ports' MACs -> workers
//! (scoped threads, pinned, registered as lcores) -> the control thread
//! (trapeze_control::thread, over this crate's DpdkDataplane) -> the main thread supervises:
//!     SIGINT/SIGTERM -> instance stopping -> stop grace -> stop
//!     a worker's death -> instance stopping; the control thread's death -> forwarding goes on
//!     each published pool's identities -> the state file
//! stop -> workers stop, flush TX -> control thread (waited for 1 s at most) -> final counters
//!      -> state file marked clean -> ports closed -> EAL cleanup
//! ```

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use trapeze_control::cli::GatewaydArgs;
use trapeze_control::config::units::{eal_option_values, parse_core_list};
use trapeze_control::config::GatewayConfig;
use trapeze_core::pipeline::{DropReason, Event, Shared, Worker, WorkerStats};
use trapeze_core::pool::PoolSnapshot;
use trapeze_dpdk::{errno, Eal, Mempool, Port, PortConfig};

use trapeze_control::cluster;
use trapeze_control::config::units::format_mac;
use trapeze_control::instance::Instance;
use trapeze_control::log::Log;
use trapeze_control::publish::Published;
use trapeze_control::thread::{ControlThread, Links};

use crate::dataplane::DpdkDataplane;
use crate::worker::{self, Context, IoStats, StatsBoard};

/// Mbufs in the pool: enough for every descriptor of every queue plus bursts in flight.
fn mbuf_count(cfg: &GatewayConfig, workers: u16) -> u32 {
    let per_port: u32 = cfg
        .ports
        .iter()
        .map(|p| u32::from(p.rx_queue_size) + u32::from(p.tx_queue_size))
        .sum();
    let n = per_port * u32::from(workers) + 4096;
    // DPDK mempools are most memory-efficient at 2^k - 1.
    n.next_power_of_two() - 1
}

pub(crate) fn run(mut cfg: GatewayConfig, args: &GatewaydArgs, log: &Log) -> Result<(), String> {
    let workers = cfg.workers.count.max(1);
    log.info(format!(
        "starting: {} port(s), {} VIP(s), {} backend(s), {workers} worker(s)",
        cfg.ports.len(),
        cfg.pool.vips.iter().flatten().count(),
        cfg.pool.backends.iter().flatten().count()
    ));
    // Read before EAL init: EAL pins this (main) thread to the main lcore, and the affinity mask
    // then holds that one CPU only.
    let allowed = allowed_cpus();
    let eal = Eal::init(&cfg.eal_args).map_err(|e| format!("DPDK EAL: {e}"))?;
    let pool = Mempool::new(
        &eal,
        "tz_mbufs",
        mbuf_count(&cfg, workers),
        256,
        Mempool::DEFAULT_DATA_ROOM,
    )
    .map_err(|e| format!("mbuf pool: {e}"))?;

    let mut ports: Vec<Port<'_>> = Vec::with_capacity(cfg.ports.len());
    for p in cfg.ports.clone() {
        let mut port = Port::open_by_name(&eal, &p.device).map_err(|e| {
            if e.errno == errno::ENODEV {
                // The validator saw its --vdev (or PCI address), so DPDK failed to create it:
                // the driver's probe failed (a missing interface or file, a bad option, a PCI
                // device not bound to a DPDK driver); DPDK logged why.
                let why = if p.device.contains(':') {
                    "the PCI device was not probed (is it bound to vfio-pci?)"
                } else {
                    "its --vdev failed to probe"
                };
                format!(
                    "ports[{}] ({}): device {:?} does not exist: DPDK did not create it ({why}; \
                     see the EAL messages above; DPDK has {} port(s)): {e}",
                    p.id.0,
                    p.name,
                    p.device,
                    Port::count(&eal)
                )
            } else {
                format!("ports[{}] ({}): device {:?}: {e}", p.id.0, p.name, p.device)
            }
        })?;
        let mtu = match (p.mtu, kernel_interface(&cfg.eal_args, &p.device)) {
            // An af_packet / af_xdp port sends through a kernel interface, whose MTU is the one
            // that counts (and DPDK 22.11's af_packet refuses MTUs above 1500 anyway): check
            // it instead of asking DPDK to set it.
            (Some(want), Some(iface)) => {
                let have = std::fs::read_to_string(format!("/sys/class/net/{iface}/mtu"))
                    .ok()
                    .and_then(|t| t.trim().parse::<u16>().ok());
                match have {
                    Some(have) if have >= want => {
                        log.info(format!(
                            "port {} {}: mtu {want} (kernel interface {iface} has MTU {have})",
                            p.id.0, p.name
                        ));
                        None
                    }
                    _ => {
                        return Err(format!(
                            "ports[{}] ({}): mtu {want}, but its kernel interface {iface} has                              MTU {}: raise it first (ip link set dev {iface} mtu {want})",
                            p.id.0,
                            p.name,
                            have.map_or("unknown".to_string(), |h| h.to_string())
                        ));
                    }
                }
            }
            (mtu, _) => mtu,
        };
        let offloads = port
            .configure(
                &PortConfig {
                    rx_queues: workers,
                    tx_queues: workers,
                    rx_descriptors: p.rx_queue_size,
                    tx_descriptors: p.tx_queue_size,
                    rss: true,
                    rss_key: None,
                    checksum_offload: false,
                    mtu,
                },
                pool,
            )
            .map_err(|e| format!("ports[{}] ({}): configure: {e}", p.id.0, p.name))?;
        port.set_promiscuous(true)
            .map_err(|e| format!("ports[{}] ({}): promiscuous: {e}", p.id.0, p.name))?;
        let mac = port
            .mac_addr()
            .map_err(|e| format!("ports[{}] ({}): MAC: {e}", p.id.0, p.name))?;
        cfg.set_device_mac(p.id, mac);
        port.start()
            .map_err(|e| format!("ports[{}] ({}): start: {e}", p.id.0, p.name))?;
        log.info(format!(
            "port {} {} ({}): {} rss={:#x}",
            p.id.0,
            p.name,
            p.device,
            format_mac(&cfg.pool.ports[p.id.0 as usize].mac),
            offloads.rss_hf
        ));
        ports.push(port);
    }

    // The tables: re-attached from the state file, or new; the pool takes the file's ids.
    let crate::state::Tables {
        flows,
        tokens,
        pool: seeded,
        mut keeper,
    } = crate::state::open(&cfg, workers, log)?;
    cfg.pool = seeded;

    let published = Arc::new(Published::new(
        cfg.snapshot().map_err(|e| format!("pool: {e}"))?,
    ));
    let mut shared = Shared { tokens };
    // Token sharing with other instances (`[cluster]`): journal, remote owners, sync socket.
    let cluster = cluster::setup(&cfg, &mut shared)?;
    let shared = Arc::new(shared);
    let cluster_counters = Arc::new(cluster::Counters::default());
    let clock = crate::clock::Clock::new();
    let tsc = move || clock.now();
    let stop = AtomicBool::new(false);
    // SIGINT/SIGTERM are handled here, on the main thread, not by the control thread (which a
    // request may keep busy): the instance first withdraws its VIPs (GET /instance says
    // `stopping`) and forwards during the stop grace, then everything stops.
    let term = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&term))
            .map_err(|e| format!("signal handler: {e}"))?;
    }
    let instance = Arc::new(Instance::new(Duration::from_millis(args.stop_grace_ms)));
    let reload = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reload))
        .map_err(|e| format!("signal handler: {e}"))?;
    #[cfg(feature = "fault-injection")]
    signal_hook::flag::register(
        signal_hook::consts::SIGUSR1,
        Arc::clone(&crate::worker::STALL),
    )
    .map_err(|e| format!("signal handler: {e}"))?;
    #[cfg(feature = "fault-injection")]
    signal_hook::flag::register(
        signal_hook::consts::SIGUSR2,
        Arc::clone(&trapeze_control::thread::STUCK),
    )
    .map_err(|e| format!("signal handler: {e}"))?;
    // The workers' heartbeats, checked by the control thread (the watchdog).
    let heartbeats = Arc::new(trapeze_control::watchdog::Heartbeats::new(workers as usize));
    let inboxes: Vec<ArrayQueue<_>> = (0..workers).map(|_| ArrayQueue::new(1024)).collect();
    let control_tx = ArrayQueue::new(1024);
    let punted = ArrayQueue::new(1024);
    let board = StatsBoard::new(
        workers as usize,
        ports.len(),
        cfg.worker.max_vips,
        cfg.worker.max_backends,
    );
    let cx = Context {
        eal: &eal,
        ports: &ports,
        shared: &shared,
        published: &published,
        stop: &stop,
        inboxes: &inboxes,
        control_tx: &control_tx,
        punted: &punted,
        board: &board,
        heartbeats: &heartbeats,
        idle_sleep: Duration::from_micros(u64::from(cfg.workers.idle_sleep_us)),
        mempool: &pool,
    };
    let defaults = default_worker_cpus(&cfg.eal_args, &allowed, workers);
    let placement: Vec<(trapeze_core::pipeline::WorkerConfig, Option<u32>)> = (0..workers)
        .map(|id| {
            let cpu = match &cfg.workers.lcores {
                Some(l) => l.get(id as usize).copied(),
                None => defaults.get(id as usize).copied(),
            };
            (cfg.worker_config(id), cpu)
        })
        .collect();
    log.info(format!(
        "workers on CPUs {:?}{}",
        placement.iter().map(|p| p.1).collect::<Vec<_>>(),
        if cfg.workers.lcores.is_some() {
            " (workers.lcores)"
        } else {
            " (default: after the main lcore, which keeps the control thread)"
        }
    ));
    let totals = Totals {
        max_vips: cfg.worker.max_vips,
        max_backends: cfg.worker.max_backends,
        port_names: cfg.ports.iter().map(|p| p.name.clone()).collect(),
    };
    // The API thread: parses and forwards requests; a failure there never stops forwarding.
    let (api_tx, api_rx) = std::sync::mpsc::sync_channel(64);
    let _api = if args.api == "off" {
        None
    } else {
        let bind = args
            .api
            .parse::<trapeze_control::api::BindAddr>()
            .map_err(|e| format!("--api: {e}"))?;
        let token = args
            .api_token_file
            .as_deref()
            .map(trapeze_control::api::server::read_token_file)
            .transpose()
            .map_err(|e| format!("--api-token-file: {e}"))?;
        let opts = trapeze_control::api::ServeOptions {
            token,
            ..Default::default()
        };
        match trapeze_control::api::serve_with(bind, api_tx, opts) {
            Ok(h) => {
                log.info(format!("control API on {}", args.api));
                Some(h)
            }
            // No token on a non-loopback address: the daemon does not start.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => return Err(e.to_string()),
            Err(e) => {
                log.warn(format!("control API not started ({}): {e}", args.api));
                None
            }
        }
    };
    let control = ControlThread::new(
        cfg,
        args.overrides(),
        args.config.clone(),
        DpdkDataplane {
            mempool: &pool,
            ports: &ports,
            control_tx: &control_tx,
            punted: &punted,
            board: &board,
        },
        Links {
            published: Arc::clone(&published),
            shared: Arc::clone(&shared),
            instance: Arc::clone(&instance),
            cluster: cluster.as_ref().map(|_| Arc::clone(&cluster_counters)),
            requests: api_rx,
            reload,
            heartbeats: Some(Arc::clone(&heartbeats)),
        },
        *log,
    );
    log.info("forwarding; stop with SIGINT or SIGTERM, reload with SIGHUP");

    let results = std::thread::scope(|s| {
        let handles: Vec<_> = placement
            .into_iter()
            .zip(flows)
            .enumerate()
            .map(|(id, ((wcfg, cpu), flows))| {
                let w = Worker::with_flows(wcfg, flows);
                let cx = &cx;
                std::thread::Builder::new()
                    .name(format!("tz-worker-{id}"))
                    .spawn_scoped(s, move || worker::run(id as u16, cpu, w, cx))
            })
            .collect();

        if let Some((c, sock)) = &cluster {
            cluster::spawn(
                s,
                c,
                sock,
                &shared,
                &published,
                &stop,
                &cluster_counters,
                &tsc,
                log,
            );
        }

        // The control thread inherits this thread's CPU (the main lcore), as before the split.
        let stop_ref = &stop;
        let control = std::thread::Builder::new()
            .name("tz-control".into())
            .spawn_scoped(s, move || control.run(stop_ref));
        if let Err(e) = &control {
            log.warn(format!("control thread not started: {e}"));
        }

        supervise(
            &stop,
            &term,
            &instance,
            &handles,
            control.as_ref().ok(),
            log,
            // The state file follows the identities of each published pool.
            || {
                if let Some(k) = keeper.as_mut() {
                    k.pool_changed(&published, log);
                }
            },
        );

        log.info("stopping");
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| match h {
                Ok(h) => h
                    .join()
                    .unwrap_or_else(|_| Err("worker panicked".to_string())),
                Err(e) => Err(format!("worker thread: {e}")),
            })
            .collect();
        // Nothing writes the tables any more: the state file is ready for the next start.
        if let (Some(k), true) = (keeper.as_mut(), results.iter().all(Result::is_ok)) {
            k.stopped(log);
        }
        // The workers are stopped. A control thread stuck in a request must not hold the exit
        // (the scope would wait for it forever): report, and leave without it.
        if let Ok(c) = control {
            let since = Instant::now();
            while !c.is_finished() && since.elapsed() < CONTROL_STOP_WAIT {
                std::thread::sleep(Duration::from_millis(10));
            }
            if !c.is_finished() {
                log.warn(format!(
                    "the control thread did not stop within {} ms (busy with a request): \
                     exiting without it",
                    CONTROL_STOP_WAIT.as_millis()
                ));
                let r = totals.print(results, &published.load(), &ports, &shared);
                if cluster.is_some() {
                    cluster::print_totals(&cluster_counters, &shared.tokens);
                }
                std::process::exit(if r.is_ok() { 0 } else { 1 });
            }
        }
        results
    });
    // Frames still queued for or by the control thread go back to the pool.
    while control_tx.pop().is_some() {}
    while punted.pop().is_some() {}

    let r = totals.print(results, &published.load(), &ports, &shared);
    if cluster.is_some() {
        cluster::print_totals(&cluster_counters, &shared.tokens);
    }
    r
}

/// How long a stop waits for the control thread once the workers have stopped.
const CONTROL_STOP_WAIT: Duration = Duration::from_secs(1);

/// The main thread's loop until the stop: stop signals and the stop grace, the workers' and the
/// control thread's deaths. It never waits for the control thread, so a stop signal is always
/// honoured.
fn supervise<T, C>(
    stop: &AtomicBool,
    term: &AtomicBool,
    instance: &Instance,
    workers: &[std::io::Result<std::thread::ScopedJoinHandle<'_, T>>],
    control: Option<&std::thread::ScopedJoinHandle<'_, C>>,
    log: &Log,
    mut each_round: impl FnMut(),
) {
    let mut control_gone = false;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if term.swap(false, Ordering::Relaxed) {
            if !instance.begin_stop(now) {
                log.info("second stop signal: stopping now");
                stop.store(true, Ordering::Relaxed);
            } else if !instance.grace().is_zero() {
                log.info(format!(
                    "stop signal: VIPs withdrawn (instance stopping), forwarding for {} ms more",
                    instance.grace().as_millis()
                ));
            }
        }
        // A worker that ended before the stop (an error) leaves its queues unserved: the
        // instance withdraws its VIPs and stops after the grace, as on SIGTERM.
        if workers
            .iter()
            .any(|h| h.as_ref().is_ok_and(|h| h.is_finished()))
            && instance.begin_stop(now)
        {
            log.warn("a worker stopped: VIPs withdrawn (instance stopping)");
        }
        // A control thread that ended before the stop (it panicked) leaves the last published
        // pool serving: forwarding goes on, the API answers 503, a stop signal still stops.
        if !control_gone && control.is_none_or(|c| c.is_finished()) {
            control_gone = true;
            log.warn(
                "the control thread is not running: forwarding goes on with the last pool; \
                 the API answers 503",
            );
        }
        if instance.stop_due(now) {
            stop.store(true, Ordering::Relaxed);
        }
        each_round();
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What the final report needs besides the counters.
struct Totals {
    max_vips: usize,
    max_backends: usize,
    port_names: Vec<String>,
}

impl Totals {
    /// Prints every worker's counters and the totals; the workers' errors, if any.
    fn print(
        &self,
        results: Vec<Result<(Worker, IoStats), String>>,
        pool: &PoolSnapshot,
        ports: &[Port<'_>],
        shared: &Shared,
    ) -> Result<(), String> {
        let mut total = WorkerStats::new(self.max_vips, self.max_backends);
        let mut io_total = IoStats::new(ports.len());
        let mut failed = Vec::new();
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Ok((w, io)) => {
                    print_worker(i, &w, &io);
                    total.merge(&w.stats);
                    io_total.add(&io);
                }
                Err(e) => failed.push(format!("worker {i}: {e}")),
            }
        }
        print_totals(&total, &io_total, pool, &self.port_names, ports, shared);
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed.join("; "))
        }
    }
}

/// The CPUs the process may run on (`Cpus_allowed_list` of /proc/self/status), or 0..n from
/// the available parallelism when that cannot be read.
fn allowed_cpus() -> Vec<u32> {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|st| {
            st.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .and_then(|v| parse_core_list(v.trim()))
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| {
            let n = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
            (0..n).collect()
        })
}

/// Where workers run when `workers.lcores` is not set: the cores of EAL's `-l` list when it is
/// a plain list, else the CPUs the process may use; the first of them is the main lcore (EAL
/// pins the control thread there), and worker `i` takes the `(i + 1)`-th, wrapping around when
/// there are more workers than cores.
fn default_worker_cpus(eal_args: &[String], allowed: &[u32], workers: u16) -> Vec<u32> {
    let listed = eal_option_values(eal_args, "--lcores", Some("-l"))
        .last()
        .and_then(|(_, v)| parse_core_list(v));
    let cores = match listed {
        Some(l) if !l.is_empty() => l,
        _ if !allowed.is_empty() => allowed.to_vec(),
        _ => vec![0],
    };
    (0..usize::from(workers))
        .map(|i| cores[(i + 1) % cores.len()])
        .collect()
}

/// The kernel interface behind an af_packet or af_xdp virtual device: the `iface=` of its
/// `--vdev` argument.
fn kernel_interface(eal_args: &[String], device: &str) -> Option<String> {
    let mut args = eal_args.iter();
    while let Some(a) = args.next() {
        let spec = match a.strip_prefix("--vdev=") {
            Some(spec) => spec,
            None if a == "--vdev" => args.next()?,
            None => continue,
        };
        let mut parts = spec.split(',');
        let name = parts.next()?;
        if name != device || !(name.starts_with("net_af_packet") || name.starts_with("net_af_xdp"))
        {
            continue;
        }
        return parts
            .find_map(|kv| kv.strip_prefix("iface="))
            .map(str::to_string);
    }
    None
}

fn print_worker(i: usize, w: &Worker, io: &IoStats) {
    let s = &w.stats;
    println!(
        "worker {i}: rx {} tx {} tx_unsent {} multiseg_dropped {} forwarded {} replied {} punted {} handed_off {} dropped {} flows {}",
        io.rx,
        io.tx,
        io.tx_unsent,
        io.multiseg,
        s.forwarded,
        s.replied,
        s.punted,
        s.handed_off,
        s.dropped(),
        w.flows.len()
    );
}

fn print_totals(
    s: &WorkerStats,
    io: &IoStats,
    pool: &PoolSnapshot,
    port_names: &[String],
    ports: &[Port<'_>],
    shared: &Shared,
) {
    println!(
        "total: rx {} tx {} forwarded {} replied {} punted {} dropped {} handoff_full {} punt_full {}",
        io.rx,
        io.tx,
        s.forwarded,
        s.replied,
        s.punted,
        s.dropped(),
        io.handoff_full,
        io.punt_full
    );
    for r in DropReason::ALL {
        if s.drops_of(*r) > 0 {
            println!("drop {} {}", r.name(), s.drops_of(*r));
        }
    }
    for e in Event::ALL {
        if s.events_of(*e) > 0 {
            println!("event {} {}", e.name(), s.events_of(*e));
        }
    }
    for b in pool.backends.iter().flatten() {
        let c = s.backends.get(b.id.0 as usize).copied().unwrap_or_default();
        let addr = b.ipv4.map(IpAddr::V4).or(b.ipv6.map(IpAddr::V6));
        println!(
            "backend {} {:?}: packets {} bytes {} new_conns {} joins {} active_flows {}",
            b.name, addr, c.packets, c.bytes, c.new_conns, c.joins, c.active_flows
        );
    }
    println!("tokens {}", shared.tokens.len());
    for (i, p) in ports.iter().enumerate() {
        let c = io.ports.get(i).copied().unwrap_or_default();
        let name = port_names.get(i).map_or("?", String::as_str);
        print!(
            "port {i} {name}: rx {} tx {} tx_forwarded {} tx_replies {} tx_control {} tx_unsent {}",
            c.rx, c.tx, c.forwarded, c.replies, c.control, c.tx_unsent
        );
        match p.stats() {
            Ok(st) => println!(
                " ipackets {} opackets {} imissed {} ierrors {} oerrors {} rx_nombuf {}",
                st.ipackets, st.opackets, st.imissed, st.ierrors, st.oerrors, st.rx_nombuf
            ),
            Err(_) => println!(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{default_worker_cpus, kernel_interface};

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn default_workers_go_after_the_main_lcore() {
        // No -l: the process's CPUs; CPU 0 keeps the control thread.
        assert_eq!(default_worker_cpus(&[], &[0, 1], 1), [1]);
        assert_eq!(default_worker_cpus(&[], &[0, 1], 2), [1, 0]);
        assert_eq!(default_worker_cpus(&[], &[4, 6, 7], 2), [6, 7]);
        // One CPU: everything shares it.
        assert_eq!(default_worker_cpus(&[], &[3], 1), [3]);
        // -l: its cores, the first being the main lcore.
        let args = strings(&["--no-pci", "-l", "2-4"]);
        assert_eq!(default_worker_cpus(&args, &[0, 1, 2, 3, 4], 2), [3, 4]);
        let args = strings(&["-l3,5"]);
        assert_eq!(default_worker_cpus(&args, &[0], 1), [5]);
    }

    #[test]
    fn kernel_interface_of_af_packet_and_af_xdp_vdevs_only() {
        let args: Vec<String> = [
            "--no-pci",
            "--vdev=net_af_packet0,iface=gw-c,qpairs=1",
            "--vdev",
            "net_af_xdp1,iface=gw-s",
            "--vdev=net_memif0,role=server,socket=/run/m.sock",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            kernel_interface(&args, "net_af_packet0").as_deref(),
            Some("gw-c")
        );
        assert_eq!(
            kernel_interface(&args, "net_af_xdp1").as_deref(),
            Some("gw-s")
        );
        assert_eq!(kernel_interface(&args, "net_memif0"), None);
        assert_eq!(kernel_interface(&args, "net_af_packet9"), None);
    }
}
