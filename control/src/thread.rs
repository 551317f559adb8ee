//! The control thread: one loop that owns the running pool and is the only writer of the
//! published snapshot.
//!
//! ```text
//! every round (10 ms):
//!     punted frames (at most 1024) -> neighbours learned -> backend MACs -> snapshot published
//!                                  -> probe answers      -> health (rise/fall) -> published
//!     ARP/NDP requests for unresolved backends (every 500 ms), health probes (every interval)
//!     API requests (at most 64), one at a time          -> dispatch -> published
//!     drain deadlines, SIGHUP reload                     -> published
//!     the workers' heartbeats (the watchdog)             -> instance stopping on a stall
//!     retired snapshots no reader holds any more         -> freed here
//! ```
//!
//! It talks to the dataplane through a [`Dataplane`] only, so the same loop runs in the daemon
//! (over DPDK) and in the tests (over the core's pipeline, `crate::testkit`).
//!
//! **Stopping is not its business.** The daemon's main thread handles SIGTERM/SIGINT, the stop
//! grace and the workers' deaths ([`Instance::begin_stop`]), and only asks this loop to end
//! (the `stop` flag of [`ControlThread::run`]). So a request that keeps this thread busy, or a
//! panic in it, can delay answers (the API times out with a 503) but never a stop; and if this
//! thread dies, the workers keep forwarding with the last published pool. Every round does a
//! bounded amount of work, so a flood of punted frames or requests cannot hold it either.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use trapeze_core::pipeline::Shared;
use trapeze_core::pool::{BackendId, Mac, PoolSpec, PortId};

use crate::api::{self, ControlMsg};
use crate::cluster::Counters as ClusterCounters;
use crate::config::units::format_mac;
use crate::config::{GatewayConfig, Overrides};
use crate::dataplane::{Dataplane, PortAddrs};
use crate::dispatch::{dispatch, Env};
use crate::health::{self, HealthChecker, HealthConfig, ProbeReply, Transition};
use crate::instance::Instance;
use crate::log::Log;
use crate::neighbour::{self, Resolver};
use crate::pool::PoolManager;
use crate::publish::Published;

/// Fault injection (test builds): once set, the control thread is stuck for good.
#[cfg(feature = "fault-injection")]
pub static STUCK: std::sync::LazyLock<Arc<AtomicBool>> =
    std::sync::LazyLock::new(|| Arc::new(AtomicBool::new(false)));

/// Time between two rounds.
pub const ROUND: Duration = Duration::from_millis(10);
/// Punted frames read per round.
pub const PUNTED_PER_ROUND: usize = 1024;
/// API requests answered per round.
pub const REQUESTS_PER_ROUND: usize = 64;
/// How often migrating drains are checked for an early end (reads every worker's counters).
const MIGRATION_CHECK: Duration = Duration::from_millis(100);
/// How often the workers' counters are logged (debug level).
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// What the control thread shares with the rest of the daemon.
#[derive(Debug)]
pub struct Links {
    /// The snapshot the workers read.
    pub published: Arc<Published>,
    /// The token table (purged when a backend is removed).
    pub shared: Arc<Shared>,
    /// The instance's announcement state.
    pub instance: Arc<Instance>,
    /// The token-sync counters, when `[cluster]` is configured.
    pub cluster: Option<Arc<ClusterCounters>>,
    /// Requests from the API thread (the other end of [`api::serve`]'s channel).
    pub requests: Receiver<ControlMsg>,
    /// Set (by SIGHUP) to reload the configuration file.
    pub reload: Arc<AtomicBool>,
    /// The workers' heartbeats, for the watchdog (`None`: no watchdog).
    pub heartbeats: Option<Arc<crate::watchdog::Heartbeats>>,
}

/// The control thread's state (see the module documentation).
#[derive(Debug)]
pub struct ControlThread<D> {
    pool: PoolManager,
    resolver: Resolver,
    health: Option<HealthChecker>,
    ports: Vec<PortAddrs>,
    links: Links,
    dataplane: D,
    log: Log,
    replies: Vec<ProbeReply>,
    transitions: Vec<Transition>,
    last_report: Instant,
    last_migration_check: Instant,
    unsent: u64,
    watchdog: Option<crate::watchdog::Watchdog>,
}

impl<D: Dataplane> ControlThread<D> {
    /// The control thread for `cfg` (whose ports carry the devices' MACs), read from
    /// `config_path` with `overrides`; nothing runs until [`step`](Self::step) or
    /// [`run`](Self::run).
    pub fn new(
        cfg: GatewayConfig,
        overrides: Overrides,
        config_path: PathBuf,
        dataplane: D,
        links: Links,
        log: Log,
    ) -> Self {
        let resolver = Resolver::new(&cfg.pool, |port, addr| next_hop(&cfg, port, addr));
        let health = cfg.health.enabled.then(|| {
            HealthChecker::new(
                HealthConfig {
                    interval: cfg.health.interval,
                    timeout: cfg.health.timeout,
                    rise: cfg.health.rise,
                    fall: cfg.health.fall,
                },
                &cfg.pool,
            )
        });
        let ports = PortAddrs::of(&cfg);
        let watchdog = match (&links.heartbeats, cfg.workers.watchdog) {
            (Some(h), Some(t)) => Some(crate::watchdog::Watchdog::new(t, h.len(), Instant::now())),
            _ => None,
        };
        Self {
            pool: PoolManager::new(cfg, overrides, config_path),
            resolver,
            health,
            ports,
            links,
            dataplane,
            log,
            replies: Vec::new(),
            transitions: Vec::new(),
            last_report: Instant::now(),
            last_migration_check: Instant::now(),
            unsent: 0,
            watchdog,
        }
    }

    /// The running pool and its history.
    pub fn pool(&self) -> &PoolManager {
        &self.pool
    }

    /// Frames the dataplane could not queue for sending.
    pub fn unsent(&self) -> u64 {
        self.unsent
    }

    /// Runs rounds until `stop` is set; returns the pool manager (its final configuration).
    pub fn run(mut self, stop: &AtomicBool) -> PoolManager {
        while !stop.load(Ordering::Relaxed) {
            self.step(Instant::now());
            std::thread::sleep(ROUND);
        }
        self.pool
    }

    /// One round of the loop (see the module documentation).
    pub fn step(&mut self, now: Instant) {
        #[cfg(feature = "fault-injection")]
        while STUCK.load(Ordering::Relaxed) {
            // Stuck for good (the daemon's SIGUSR2 in test builds): not even `stop` ends it.
            std::thread::sleep(Duration::from_millis(50));
        }
        let published = &*self.links.published;
        let shared = &*self.links.shared;
        let mut pool_changed = false;

        // Frames the pipeline punted: neighbours, and answers to health probes.
        let mut resolved = false;
        {
            let (resolver, replies, log) = (&mut self.resolver, &mut self.replies, &self.log);
            let probing = self.health.is_some();
            self.dataplane
                .punted(PUNTED_PER_ROUND, &mut |port: PortId, frame: &[u8]| {
                    if let Some(l) = neighbour::learn(port, frame) {
                        if resolver.learned(&l, now) {
                            log.info(format!("neighbour {} is {}", l.addr, format_mac(&l.mac)));
                            resolved = true;
                        }
                    } else if let Some((_, _, _, r)) = health::reply(frame).filter(|_| probing) {
                        replies.push(r);
                    }
                });
        }
        if resolved || self.resolver.needs_apply(&self.pool.cfg.pool) {
            let resolver = &self.resolver;
            match self.pool.internal_change(published, |p| resolver.apply(p)) {
                Ok(_) if resolver.all_resolved() && resolved => {
                    self.log.info("every backend is resolved")
                }
                Ok(_) => {}
                Err(e) => self.log.warn(format!("pool update refused: {}", e.reason)),
            }
        }
        for (port, bytes) in self.resolver.due(now, &self.ports) {
            send(&mut self.dataplane, &mut self.unsent, port, &bytes);
        }

        // Health checks.
        if let Some(h) = self.health.as_mut() {
            let spec = &self.pool.cfg.pool;
            for r in self.replies.drain(..) {
                if r.ok {
                    if let Some((port, rst)) = h.reset_for(&r, &self.ports, |id| mac_of(spec, id)) {
                        send(&mut self.dataplane, &mut self.unsent, port, &rst);
                    }
                }
                if let Some(t) = h.answer(&r) {
                    self.transitions.push(t);
                }
            }
            let probes = h.due(
                now,
                &self.ports,
                |id| mac_of(spec, id),
                &mut self.transitions,
            );
            for (port, bytes) in probes {
                send(&mut self.dataplane, &mut self.unsent, port, &bytes);
            }
        }
        for t in self.transitions.drain(..) {
            let name = self
                .pool
                .cfg
                .pool
                .backends
                .get(t.backend.0 as usize)
                .and_then(Option::as_ref)
                .map_or_else(|| format!("#{}", t.backend.0), |b| b.name.clone());
            match self.pool.set_health(t.backend, t.up, published) {
                Ok(v) => self.log.info(format!(
                    "backend {name} is {} (health checks); pool version {v}",
                    if t.up { "up" } else { "DOWN" }
                )),
                Err(e) => self
                    .log
                    .warn(format!("health change of {name} refused: {}", e.reason)),
            }
        }

        // API requests, one at a time.
        for _ in 0..REQUESTS_PER_ROUND {
            let Ok((req, reply)) = self.links.requests.try_recv() else {
                break;
            };
            let change = req.is_change();
            let env = Env {
                published,
                shared,
                dataplane: &self.dataplane,
                instance: &self.links.instance,
                cluster: self.links.cluster.as_deref(),
            };
            let resp = dispatch(&mut self.pool, req, &env);
            if let api::Response::Applied {
                warning: Some(w), ..
            } = &resp
            {
                self.log.warn(w.clone());
            }
            api::answer(&reply, resp);
            pool_changed |= change;
        }

        // Drain deadlines, and reloads (SIGHUP).
        for gone in self.pool.tick(now, published, shared) {
            self.log
                .info(format!("backend {gone} removed (drain deadline passed)"));
            pool_changed = true;
        }
        // Migrating drains end as soon as their connections have left (the workers' walks).
        if now.duration_since(self.last_migration_check) >= MIGRATION_CHECK
            && self.pool.migrating_deadlines(published)
        {
            self.last_migration_check = now;
            let workers = self.dataplane.counters().workers;
            for (gone, left) in self
                .pool
                .complete_migrations(&workers, now, published, shared)
            {
                self.log.info(format!(
                    "backend {gone} removed (every connection migrated or closed, {} ms before \
                     its drain deadline)",
                    left.as_millis()
                ));
                pool_changed = true;
            }
        }
        if self.links.reload.swap(false, Ordering::Relaxed) {
            match self.pool.reload(None, published, shared) {
                Ok(r) => {
                    self.log.info(format!(
                        "configuration reloaded; pool version {}",
                        r.version
                    ));
                    if let Some(w) = r.warning {
                        self.log.warn(w);
                    }
                }
                Err(e) => self.log.warn(e.reason),
            }
            pool_changed = true;
        }
        if pool_changed {
            let cfg = &self.pool.cfg;
            self.resolver
                .sync(&cfg.pool, |port, addr| next_hop(cfg, port, addr));
            if let Some(h) = self.health.as_mut() {
                h.sync(&cfg.pool);
            }
        }

        // The workers' heartbeats.
        if let (Some(w), Some(h)) = (self.watchdog.as_mut(), self.links.heartbeats.as_deref()) {
            for e in w.check(h, now) {
                match e {
                    crate::watchdog::Event::Stalled(i, quiet) => {
                        self.links.instance.mark_stalled();
                        self.log.warn(format!(
                            "watchdog: worker {i} made no progress for {} ms; the instance is \
                             stopping (its VIPs are withdrawn) until a restart",
                            quiet.as_millis()
                        ));
                    }
                    crate::watchdog::Event::Resumed(i) => self.log.warn(format!(
                        "watchdog: worker {i} moves again; the instance stays stopping until a \
                         restart"
                    )),
                }
            }
            self.pool.counters.watchdog_stalls = w.stalls();
        }

        if now.duration_since(self.last_report) > REPORT_EVERY {
            self.last_report = now;
            self.report();
        }
        // Snapshots the workers have all moved on from are freed here, not on a worker.
        published.reclaim();
    }

    /// The workers' counters, at debug level.
    fn report(&self) {
        if !self.log.enabled(crate::cli::LogLevel::Debug) {
            return;
        }
        for (i, w) in self.dataplane.counters().workers.iter().enumerate() {
            self.log.debug(format!(
                "worker {i}: rx {} sent {} dropped {} flows {}",
                w.rx,
                w.stats.forwarded + w.stats.replied,
                w.stats.dropped(),
                w.flows
            ));
        }
    }
}

fn send<D: Dataplane>(dp: &mut D, unsent: &mut u64, port: PortId, frame: &[u8]) {
    if !dp.send(port, frame) {
        *unsent += 1;
    }
}

/// The neighbour to ask for `addr` on `port`: itself when on-link, else the port's gateway.
fn next_hop(cfg: &GatewayConfig, port: PortId, addr: std::net::IpAddr) -> Option<std::net::IpAddr> {
    cfg.ports
        .get(port.0 as usize)
        .and_then(|p| p.next_hop(addr))
}

/// A backend's next-hop MAC, when known.
fn mac_of(spec: &PoolSpec, id: BackendId) -> Option<Mac> {
    spec.backends
        .get(id.0 as usize)
        .and_then(Option::as_ref)
        .and_then(|b| b.mac)
}
