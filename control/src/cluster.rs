//! The token-sync thread (`[cluster]`): shares this instance's MPTCP tokens with its peers so
//! that a join reaching another instance than the one that saw the handshake is still routed.
//!
//! * **Send.** Every `batch_interval` the thread drains the token table's export journal (local
//!   learns and removals, pushed by the workers on handshakes and closes, never on the
//!   established path), names each backend (`BackendId` is local; instances agree on names),
//!   packs the records into datagrams ([`trapeze_core::cluster::Batch`], HMAC-SHA256 with the
//!   shared secret, one sequence number per datagram) and sends each to every peer. Every
//!   `refresh_interval` it re-announces all local owners (flag `refresh`, in chunks of
//!   [`REFRESH_CHUNK`] records a round so fresh learns never wait behind a large table): that
//!   repairs lost datagrams and a restarted peer, and keeps remote owners of long connections
//!   alive.
//! * **Receive** (a second thread, blocked in `recv`). Datagrams from a configured peer address only; [`Receiver::accept`] checks
//!   the HMAC and that `(epoch, sequence)` moves forward. Learns become remote owners valid
//!   for `remote_timeout` ([`TokenTable::learn_remote`]; a local owner always wins), removals
//!   drop them. Propagation delay = now − the learn's time on the sender (Unix clocks: exact on
//!   one host, NTP-bounded across hosts), measured on non-refresh learns.
//! * Once a second the expired remote owners are purged.
//!
//! Configuration changes of `[cluster]` take effect at the next start (a reload keeps the
//! running settings).

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use trapeze_core::cluster::{Batch, Op, Receiver, Record, Reject, FLAG_REFRESH};
use trapeze_core::pipeline::Shared;
use trapeze_core::pool::BackendId;
use trapeze_core::tables::token::{JournalOp, RemoteOutcome, TokenTable};
use trapeze_core::time::Ticks;

use crate::api::types::DELAY_BUCKETS_US;
use crate::api::ClusterStatsView;
use crate::config::cluster::ClusterSettings;
use crate::config::GatewayConfig;
use crate::log::Log;
use crate::publish::Published;

/// The thread's counters, read by the control thread for the API and metrics.
#[derive(Debug, Default)]
pub struct Counters {
    datagrams_sent: AtomicU64,
    records_sent: AtomicU64,
    send_errors: AtomicU64,
    refreshes: AtomicU64,
    datagrams_received: AtomicU64,
    records_received: AtomicU64,
    records_applied: AtomicU64,
    rejected_auth: AtomicU64,
    rejected_sequence: AtomicU64,
    rejected_malformed: AtomicU64,
    rejected_unknown_peer: AtomicU64,
    unknown_backend: AtomicU64,
    remote_full: AtomicU64,
    remote_shadowed: AtomicU64,
    remote_collisions: AtomicU64,
    delay_count: AtomicU64,
    delay_sum_us: AtomicU64,
    delay_max_us: AtomicU64,
    delay_buckets: [AtomicU64; 10],
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    /// The counters as the API shows them.
    pub fn view(&self, tokens: &TokenTable) -> ClusterStatsView {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut buckets = [0u64; 10];
        for (b, c) in buckets.iter_mut().zip(&self.delay_buckets) {
            *b = g(c);
        }
        ClusterStatsView {
            datagrams_sent: g(&self.datagrams_sent),
            records_sent: g(&self.records_sent),
            send_errors: g(&self.send_errors),
            refreshes: g(&self.refreshes),
            datagrams_received: g(&self.datagrams_received),
            records_received: g(&self.records_received),
            records_applied: g(&self.records_applied),
            rejected_auth: g(&self.rejected_auth),
            rejected_sequence: g(&self.rejected_sequence),
            rejected_malformed: g(&self.rejected_malformed),
            rejected_unknown_peer: g(&self.rejected_unknown_peer),
            unknown_backend: g(&self.unknown_backend),
            remote_full: g(&self.remote_full),
            remote_shadowed: g(&self.remote_shadowed),
            remote_collisions: g(&self.remote_collisions),
            journal_dropped: tokens.journal_dropped(),
            remote_tokens: tokens.remote_len() as u64,
            delay_count: g(&self.delay_count),
            delay_sum_us: g(&self.delay_sum_us),
            delay_max_us: g(&self.delay_max_us),
            delay_buckets: buckets,
        }
    }

    fn delay(&self, us: u64) {
        add(&self.delay_count, 1);
        add(&self.delay_sum_us, us);
        self.delay_max_us.fetch_max(us, Ordering::Relaxed);
        for (i, bound) in DELAY_BUCKETS_US.iter().enumerate() {
            if us <= *bound {
                add(&self.delay_buckets[i], 1);
            }
        }
        add(&self.delay_buckets[DELAY_BUCKETS_US.len()], 1);
    }
}

/// With `[cluster]`: enables the token table's journal and remote owners and binds the sync
/// socket (before the workers start, so a bad address fails the start).
pub fn setup(
    cfg: &GatewayConfig,
    shared: &mut Shared,
) -> Result<Option<(ClusterSettings, UdpSocket)>, String> {
    let Some(c) = &cfg.cluster else {
        return Ok(None);
    };
    shared
        .tokens
        .enable_cluster(c.remote_capacity, c.journal_capacity);
    let sock =
        UdpSocket::bind(c.listen).map_err(|e| format!("cluster.listen {}: {e}", c.listen))?;
    Ok(Some((c.clone(), sock)))
}

/// Starts the sync threads in the runtime's scope.
#[allow(clippy::too_many_arguments)]
pub fn spawn<'scope, 'env: 'scope>(
    s: &'scope std::thread::Scope<'scope, 'env>,
    cfg: &'env ClusterSettings,
    socket: &'env UdpSocket,
    shared: &'env Shared,
    published: &'env Published,
    stop: &'env AtomicBool,
    counters: &'env Counters,
    clock: &'env Clock,
    log: &'env Log,
) {
    if let Err(e) = std::thread::Builder::new()
        .name("tz-cluster".into())
        .spawn_scoped(s, move || {
            run(cfg, socket, shared, published, stop, counters, clock, log)
        })
    {
        log.warn(format!("cluster thread not started: {e}"));
    }
}

/// The shutdown summary line.
pub fn print_totals(counters: &Counters, tokens: &TokenTable) {
    let v = counters.view(tokens);
    println!(
        "cluster sent {} datagrams ({} records) received {} ({} records, {} applied) rejected auth {} sequence {} malformed {} unknown-peer {} remote tokens {} delay n {} mean {} us max {} us",
        v.datagrams_sent,
        v.records_sent,
        v.datagrams_received,
        v.records_received,
        v.records_applied,
        v.rejected_auth,
        v.rejected_sequence,
        v.rejected_malformed,
        v.rejected_unknown_peer,
        v.remote_tokens,
        v.delay_count,
        v.delay_sum_us.checked_div(v.delay_count).unwrap_or(0),
        v.delay_max_us
    );
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The workers' clock, so that journal stamps and remote deadlines compare (the daemon's:
/// CLOCK_MONOTONIC's timeline counted with the TSC, as the workers read it).
pub type Clock = dyn Fn() -> Ticks + Sync;

struct Sender<'a> {
    cfg: &'a ClusterSettings,
    socket: &'a UdpSocket,
    counters: &'a Counters,
    epoch: u64,
    seq: u64,
    batch: Batch,
}

impl Sender<'_> {
    fn send(&mut self, flags: u8) {
        if self.batch.is_empty() {
            return;
        }
        let n = u64::from(self.batch.count());
        self.seq += 1;
        let d = self
            .batch
            .finish(&self.cfg.secret, self.epoch, self.seq, flags);
        for p in &self.cfg.peers {
            match self.socket.send_to(&d, p) {
                Ok(_) => {
                    add(&self.counters.datagrams_sent, 1);
                    add(&self.counters.records_sent, n);
                }
                Err(_) => add(&self.counters.send_errors, 1),
            }
        }
    }

    fn push(&mut self, r: &Record<'_>, flags: u8) {
        if !self.batch.push(r) {
            self.send(flags);
            // A record that does not fit an empty batch (a name too long) is skipped.
            let _ = self.batch.push(r);
        }
    }
}

/// Runs the sync threads until `stop` is set: this one sends (it sleeps `batch_interval` between
/// journal drains: `nanosleep` is precise to tens of µs, where a socket timeout would be rounded
/// up to the kernel's jiffies, 4 ms at HZ=250), a second one receives (blocked in `recv`, so a
/// peer's datagram is applied as soon as it arrives).
#[allow(clippy::too_many_arguments)]
fn run(
    cfg: &ClusterSettings,
    socket: &UdpSocket,
    shared: &Shared,
    published: &Published,
    stop: &AtomicBool,
    counters: &Counters,
    clock: &Clock,
    log: &Log,
) {
    let tokens = &shared.tokens;
    log.info(format!(
        "cluster: token sync on {} with {} peer(s), batch {:?}, remote timeout {:?}",
        cfg.listen,
        cfg.peers.len(),
        cfg.batch_interval,
        cfg.remote_timeout
    ));
    std::thread::scope(|s| {
        let rx = std::thread::Builder::new()
            .name("tz-cluster-rx".into())
            .spawn_scoped(s, || {
                receive(cfg, socket, tokens, published, stop, counters, clock, log)
            });
        if let Err(e) = rx {
            log.warn(format!("cluster: receive thread not started: {e}"));
        }
        let mut tx = Sender {
            cfg,
            socket,
            counters,
            epoch: unix_us(),
            seq: 0,
            batch: Batch::new(),
        };
        let pause = cfg.batch_interval.max(Duration::from_micros(100));
        let start = Instant::now();
        let mut next_refresh = start + cfg.refresh_interval;
        let mut next_expire = start + Duration::from_secs(1);
        let mut refreshing: Vec<(u32, BackendId)> = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(pause);
            flush(&mut tx, tokens, published, clock);
            let now = Instant::now();
            if now >= next_refresh && refreshing.is_empty() {
                next_refresh = now + cfg.refresh_interval;
                tokens.for_each_local(|t, b, _| refreshing.push((t, b)));
                refreshing.reverse(); // popped from the end: table order
                add(&counters.refreshes, 1);
            }
            if !refreshing.is_empty() {
                refresh(&mut tx, tokens, published, &mut refreshing);
            }
            if now >= next_expire {
                next_expire = now + Duration::from_secs(1);
                tokens.expire_remote(clock());
            }
        }
        // Last changes before stopping.
        flush(&mut tx, tokens, published, clock);
    });
}

/// The receive loop: peers' datagrams become remote owners.
#[allow(clippy::too_many_arguments)]
fn receive(
    cfg: &ClusterSettings,
    socket: &UdpSocket,
    tokens: &TokenTable,
    published: &Published,
    stop: &AtomicBool,
    counters: &Counters,
    clock: &Clock,
    log: &Log,
) {
    // The timeout only bounds how long a stop waits.
    if let Err(e) = socket.set_read_timeout(Some(Duration::from_millis(100))) {
        log.warn(format!("cluster: socket timeout: {e}"));
    }
    let mut peers: HashMap<SocketAddr, Receiver> = cfg
        .peers
        .iter()
        .map(|p| (*p, Receiver::default()))
        .collect();
    let mut names: HashMap<String, BackendId> = HashMap::new();
    let mut names_version = u64::MAX;
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                log.warn(format!("cluster: receive: {e}"));
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        add(&counters.datagrams_received, 1);
        let Some(rx) = peers.get_mut(&from) else {
            add(&counters.rejected_unknown_peer, 1);
            continue;
        };
        let data = buf.get(..n).unwrap_or(&[]);
        let a = match rx.accept(&cfg.secret, data) {
            Ok(a) => a,
            Err(Reject::Auth) => {
                add(&counters.rejected_auth, 1);
                continue;
            }
            Err(Reject::Sequence) => {
                add(&counters.rejected_sequence, 1);
                continue;
            }
            Err(Reject::Malformed) => {
                add(&counters.rejected_malformed, 1);
                continue;
            }
        };
        if published.version() != names_version {
            let pool = published.load();
            names_version = published.version();
            names = pool
                .backends
                .iter()
                .flatten()
                .map(|b| (b.name.clone(), b.id))
                .collect();
        }
        let now = clock();
        let now_us = unix_us();
        for r in a.records() {
            add(&counters.records_received, 1);
            let Some(&id) = names.get(r.backend) else {
                add(&counters.unknown_backend, 1);
                continue;
            };
            match r.op {
                Op::Learn => {
                    match tokens.learn_remote(r.token, id, now, cfg.remote_timeout) {
                        RemoteOutcome::Full => add(&counters.remote_full, 1),
                        o => {
                            add(&counters.records_applied, 1);
                            if o == RemoteOutcome::ShadowedByLocal {
                                add(&counters.remote_shadowed, 1);
                            }
                            if o == RemoteOutcome::Collision {
                                add(&counters.remote_collisions, 1);
                            }
                        }
                    }
                    if a.flags & FLAG_REFRESH == 0 && r.origin_us > 0 {
                        counters.delay(now_us.saturating_sub(r.origin_us));
                    }
                }
                Op::Remove => {
                    if tokens.remove_remote(r.token, id) {
                        add(&counters.records_applied, 1);
                    }
                }
            }
        }
    }
}

/// Sends the journal's entries.
fn flush(tx: &mut Sender<'_>, tokens: &TokenTable, published: &Published, clock: &Clock) {
    let Some(first) = tokens.journal_pop() else {
        return;
    };
    let pool = published.load();
    let now = clock();
    let now_us = unix_us();
    let mut next = Some(first);
    while let Some(e) = next {
        if let Some(b) = pool.backend(e.backend) {
            let (op, origin_us) = match e.op {
                JournalOp::Learn => (
                    Op::Learn,
                    now_us.saturating_sub(now.0.saturating_sub(e.at.0) / 1000),
                ),
                JournalOp::Remove => (Op::Remove, 0),
            };
            tx.push(
                &Record {
                    op,
                    token: e.token,
                    origin_us,
                    backend: &b.name,
                },
                0,
            );
        }
        next = tokens.journal_pop();
    }
    tx.send(0);
}

/// Re-announces a slice of the local owners collected for the refresh: at most
/// [`REFRESH_CHUNK`] records a round, so that a large table's refresh never holds back the
/// journal's fresh learns (whose joins follow within a millisecond) for long. An owner that
/// went away since the collection is skipped (its removal was sent, or will be after this).
fn refresh(
    tx: &mut Sender<'_>,
    tokens: &TokenTable,
    published: &Published,
    pending: &mut Vec<(u32, BackendId)>,
) {
    let pool = published.load();
    for _ in 0..REFRESH_CHUNK {
        let Some((token, id)) = pending.pop() else {
            break;
        };
        if tokens.owners(token).get(id).is_none() {
            continue;
        }
        if let Some(b) = pool.backend(id) {
            tx.push(
                &Record {
                    op: Op::Learn,
                    token,
                    origin_us: 0,
                    backend: &b.name,
                },
                FLAG_REFRESH,
            );
        }
    }
    tx.send(FLAG_REFRESH);
}

/// Records a refresh round sends at most (about 23 datagrams of 1400 bytes with short names).
pub const REFRESH_CHUNK: usize = 1024;
