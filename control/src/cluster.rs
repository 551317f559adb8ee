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
//! * **Sessions.** Each process draws a random epoch at start. A peer's datagrams are taken only
//!   within a session: an epoch this receiver confirmed by a challenge (a fresh random nonce) and
//!   the peer's authenticated response (the nonce, its epoch, its current sequence number); see
//!   [`trapeze_core::cluster`]. The receive thread challenges every peer at start, again every
//!   second while a peer has no session, when an authentic datagram of an unconfirmed epoch
//!   arrives (a restarted peer), and when a peer's challenge announces an epoch other than the
//!   session's; it answers every authentic challenge. So a datagram replayed after this
//!   receiver restarted is refused (`rejected_epoch` or `rejected_sequence`), and a peer whose
//!   clock stepped back is taken like any other.
//! * **Receive** (a second thread, blocked in `recv`). Datagrams from a configured peer address only; [`Receiver::accept`] checks
//!   the HMAC, the session's epoch and that the sequence moves forward. Learns become remote owners valid
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

use trapeze_core::cluster::{Batch, Hello, Op, Receiver, Record, FLAG_REFRESH};
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
    rejected_epoch: AtomicU64,
    sessions: AtomicU64,
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
            rejected_epoch: g(&self.rejected_epoch),
            sessions: g(&self.sessions),
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
        "cluster sent {} datagrams ({} records) received {} ({} records, {} applied) rejected auth {} sequence {} malformed {} unknown-peer {} epoch {} sessions {} remote tokens {} delay n {} mean {} us max {} us",
        v.datagrams_sent,
        v.records_sent,
        v.datagrams_received,
        v.records_received,
        v.records_applied,
        v.rejected_auth,
        v.rejected_sequence,
        v.rejected_malformed,
        v.rejected_unknown_peer,
        v.rejected_epoch,
        v.sessions,
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
    /// The last sequence number sent (the receive thread reads it to answer challenges).
    seq: &'a AtomicU64,
    batch: Batch,
}

/// Random bytes from the kernel (`/dev/urandom`; the epoch and the challenges' nonces).
fn random<const N: usize>() -> [u8; N] {
    use std::io::Read;
    let mut b = [0u8; N];
    let got = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    if got.is_err() {
        // No /dev/urandom: the time and the process id, hashed (never expected on Linux).
        let seed = format!("{:?} {}", SystemTime::now(), std::process::id());
        let h =
            std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), seed);
        for (i, x) in b.iter_mut().enumerate() {
            *x = h.to_le_bytes()[i % 8] ^ (i as u8);
        }
    }
    b
}

/// This process's epoch: random, never 0.
pub fn new_epoch() -> u64 {
    u64::from_le_bytes(random::<8>()).max(1)
}

impl Sender<'_> {
    fn send(&mut self, flags: u8) {
        if self.batch.is_empty() {
            return;
        }
        let n = u64::from(self.batch.count());
        let seq = self.seq.fetch_add(1, Ordering::AcqRel).saturating_add(1);
        let d = self.batch.finish(&self.cfg.secret, self.epoch, seq, flags);
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
    let epoch = new_epoch();
    let seq = AtomicU64::new(0);
    let me = Me { epoch, seq: &seq };
    std::thread::scope(|s| {
        let rx = std::thread::Builder::new()
            .name("tz-cluster-rx".into())
            .spawn_scoped(s, || {
                receive(
                    cfg, socket, tokens, published, stop, counters, clock, log, &me,
                )
            });
        if let Err(e) = rx {
            log.warn(format!("cluster: receive thread not started: {e}"));
        }
        let mut tx = Sender {
            cfg,
            socket,
            counters,
            epoch,
            seq: &seq,
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

/// This process's side of the sessions: its epoch and the last sequence number it sent.
#[derive(Debug, Clone, Copy)]
pub struct Me<'a> {
    /// The random epoch.
    pub epoch: u64,
    /// The last sequence number sent.
    pub seq: &'a AtomicU64,
}

/// One peer's session state, on the receiving side.
#[derive(Debug, Default)]
pub struct Peer {
    /// The session (a receiver pinned to the confirmed epoch), once confirmed.
    pub session: Option<Receiver>,
    /// The nonce of the challenge in flight.
    nonce: Option<[u8; 16]>,
    /// When it was sent.
    challenged: Option<Instant>,
}

/// Shortest time between two challenges to one peer.
const CHALLENGE_GAP: Duration = Duration::from_millis(100);
/// A peer without a session is challenged again this often.
const CHALLENGE_RETRY: Duration = Duration::from_secs(1);

impl Peer {
    /// A challenge to send to this peer, unless one went out less than `CHALLENGE_GAP` ago.
    pub fn challenge(&mut self, me: &Me<'_>, now: Instant) -> Option<Hello> {
        if self
            .challenged
            .is_some_and(|t| now.saturating_duration_since(t) < CHALLENGE_GAP)
        {
            return None;
        }
        let nonce = random::<16>();
        self.nonce = Some(nonce);
        self.challenged = Some(now);
        Some(Hello::Challenge {
            nonce,
            epoch: me.epoch,
        })
    }
}

/// What one received datagram means for the session layer.
#[derive(Debug)]
pub enum Inbound<'a> {
    /// A data datagram accepted within the session.
    Data(trapeze_core::cluster::Accepted<'a>),
    /// Refused (counted).
    Refused,
    /// A hello handled; these are to be sent back to the peer.
    Hello(Vec<Hello>),
}

/// The session layer of one datagram from a configured `peer` (sans-IO, so that restarts and
/// replays are tested without sockets): answers challenges, opens sessions on the awaited
/// response, takes data within the session, challenges on an unconfirmed epoch.
pub fn inbound<'a>(
    key: &[u8],
    me: &Me<'_>,
    peer: &mut Peer,
    data: &'a [u8],
    now: Instant,
    counters: &Counters,
) -> (Inbound<'a>, Option<Hello>) {
    if Hello::is_hello(data) {
        let h = match Hello::parse(key, data) {
            Ok(h) => h,
            Err(e) => {
                count_reject(counters, e);
                return (Inbound::Refused, None);
            }
        };
        return match h {
            Hello::Challenge { nonce, epoch } => {
                let answer = Hello::Response {
                    nonce,
                    epoch: me.epoch,
                    seq: me.seq.load(Ordering::Acquire),
                };
                // The challenger runs an epoch this side has not confirmed (it restarted):
                // confirm it too.
                let back = if peer.session.and_then(|s| s.epoch()) != Some(epoch) {
                    peer.challenge(me, now)
                } else {
                    None
                };
                (Inbound::Hello(vec![answer]), back)
            }
            Hello::Response { nonce, epoch, seq } => {
                if peer.nonce != Some(nonce) {
                    // Not the awaited answer: an old one replayed, a duplicate, or the answer to
                    // a challenge replaced since.
                    add(&counters.rejected_epoch, 1);
                    return (Inbound::Refused, None);
                }
                peer.nonce = None;
                peer.session = Some(Receiver::session(epoch, seq));
                add(&counters.sessions, 1);
                (Inbound::Hello(Vec::new()), None)
            }
        };
    }
    let accepted = match peer.session.as_mut() {
        Some(rx) => rx.accept(key, data),
        // No session yet: authenticate only (a throwaway receiver), then challenge.
        None => Receiver::default()
            .accept(key, data)
            .and(Err(trapeze_core::cluster::Reject::Epoch)),
    };
    match accepted {
        Ok(a) => (Inbound::Data(a), None),
        Err(trapeze_core::cluster::Reject::Epoch) => {
            add(&counters.rejected_epoch, 1);
            (Inbound::Refused, peer.challenge(me, now))
        }
        Err(e) => {
            count_reject(counters, e);
            (Inbound::Refused, None)
        }
    }
}

fn count_reject(counters: &Counters, e: trapeze_core::cluster::Reject) {
    use trapeze_core::cluster::Reject;
    add(
        match e {
            Reject::Auth => &counters.rejected_auth,
            Reject::Sequence => &counters.rejected_sequence,
            Reject::Malformed => &counters.rejected_malformed,
            Reject::Epoch => &counters.rejected_epoch,
        },
        1,
    );
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
    me: &Me<'_>,
) {
    // The timeout bounds how long a stop waits, and paces the challenges' retries.
    if let Err(e) = socket.set_read_timeout(Some(Duration::from_millis(100))) {
        log.warn(format!("cluster: socket timeout: {e}"));
    }
    let mut peers: HashMap<SocketAddr, Peer> =
        cfg.peers.iter().map(|p| (*p, Peer::default())).collect();
    let send = |to: &SocketAddr, h: &Hello| {
        if socket.send_to(&h.encode(&cfg.secret), to).is_err() {
            add(&counters.send_errors, 1);
        }
    };
    let mut names: HashMap<String, BackendId> = HashMap::new();
    let mut names_version = u64::MAX;
    let mut buf = vec![0u8; 65_536];
    let mut next_retry = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= next_retry {
            // Peers without a session (at start, or whose challenge or answer was lost).
            next_retry = now + CHALLENGE_GAP;
            for (addr, p) in &mut peers {
                let due = p
                    .challenged
                    .is_none_or(|t| now.saturating_duration_since(t) >= CHALLENGE_RETRY);
                if p.session.is_none() && due {
                    if let Some(h) = p.challenge(me, now) {
                        send(addr, &h);
                    }
                }
            }
        }
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
        let Some(peer) = peers.get_mut(&from) else {
            add(&counters.rejected_unknown_peer, 1);
            continue;
        };
        let data = buf.get(..n).unwrap_or(&[]);
        let had = peer.session.and_then(|s| s.epoch());
        let (what, challenge) = inbound(&cfg.secret, me, peer, data, Instant::now(), counters);
        if let Some(h) = challenge {
            send(&from, &h);
        }
        let a = match what {
            Inbound::Data(a) => a,
            Inbound::Refused => continue,
            Inbound::Hello(answers) => {
                for h in &answers {
                    send(&from, h);
                }
                let has = peer.session.and_then(|s| s.epoch());
                if has != had {
                    log.info(format!(
                        "cluster: session with {from} (epoch {:#018x})",
                        has.unwrap_or(0)
                    ));
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"the cluster secret";

    /// A sender process: its epoch, sequence and batches.
    struct Proc {
        epoch: u64,
        seq: AtomicU64,
    }

    impl Proc {
        fn new(epoch: u64) -> Self {
            Self {
                epoch,
                seq: AtomicU64::new(0),
            }
        }

        fn me(&self) -> Me<'_> {
            Me {
                epoch: self.epoch,
                seq: &self.seq,
            }
        }

        fn datagram(&self, token: u32) -> Vec<u8> {
            let mut b = Batch::new();
            assert!(b.push(&Record {
                op: Op::Learn,
                token,
                origin_us: 0,
                backend: "srv1",
            }));
            let seq = self.seq.fetch_add(1, Ordering::AcqRel) + 1;
            b.finish(KEY, self.epoch, seq, 0)
        }
    }

    /// The exchange between a receiver (`rx`, its peer state for `tx`) and a sender `tx` (its
    /// peer state for `rx`): `rx` challenges, `tx` answers; returns whether the session opened.
    fn handshake(
        rx: &Proc,
        rx_peer: &mut Peer,
        tx: &Proc,
        tx_peer: &mut Peer,
        c: &Counters,
    ) -> bool {
        let now = Instant::now();
        rx_peer.challenged = None;
        let Some(ch) = rx_peer.challenge(&rx.me(), now) else {
            return false;
        };
        let ch = ch.encode(KEY);
        let (answer, _) = inbound(KEY, &tx.me(), tx_peer, &ch, now, c);
        let Inbound::Hello(answers) = answer else {
            panic!("{answer:?}")
        };
        let resp = answers[0].encode(KEY);
        matches!(
            inbound(KEY, &rx.me(), rx_peer, &resp, now, c).0,
            Inbound::Hello(_)
        ) && rx_peer.session.is_some()
    }

    fn taken(rx: &Proc, peer: &mut Peer, d: &[u8], c: &Counters) -> bool {
        matches!(
            inbound(KEY, &rx.me(), peer, d, Instant::now(), c).0,
            Inbound::Data(_)
        )
    }

    /// Issue 12, defect 6: after the receiver restarted, an old captured datagram was accepted
    /// again. Now the restarted receiver has no session; it takes nothing until the peer has
    /// answered its challenge, and the session starts after the peer's current sequence number,
    /// so the captured datagram is refused (and one of a dead sender process too).
    #[test]
    fn a_datagram_replayed_after_the_receiver_restarted_is_refused() {
        let c = Counters::default();
        let a = Proc::new(0x1111);
        let b = Proc::new(0x2222);
        let (mut b_sees_a, mut a_sees_b) = (Peer::default(), Peer::default());
        assert!(handshake(&b, &mut b_sees_a, &a, &mut a_sees_b, &c));
        let captured = a.datagram(7);
        assert!(taken(&b, &mut b_sees_a, &captured, &c));
        assert!(
            !taken(&b, &mut b_sees_a, &captured, &c),
            "replay within the session"
        );
        // A dead sender process's datagram (another epoch) is refused too.
        let dead = Proc::new(0x0bad);
        let old = dead.datagram(8);
        // B restarts: a new process, no session.
        let b2 = Proc::new(0x3333);
        let mut b2_sees_a = Peer::default();
        let before = c.rejected_epoch.load(Ordering::Relaxed);
        let (r, challenge) = inbound(KEY, &b2.me(), &mut b2_sees_a, &captured, Instant::now(), &c);
        assert!(matches!(r, Inbound::Refused), "{r:?}");
        assert!(
            challenge.is_some(),
            "an authentic datagram of an unknown epoch is challenged"
        );
        assert_eq!(c.rejected_epoch.load(Ordering::Relaxed), before + 1);
        assert!(handshake(&b2, &mut b2_sees_a, &a, &mut a_sees_b, &c));
        assert!(
            !taken(&b2, &mut b2_sees_a, &captured, &c),
            "captured before the restart"
        );
        assert!(
            !taken(&b2, &mut b2_sees_a, &old, &c),
            "a dead process's datagram"
        );
        assert!(
            taken(&b2, &mut b2_sees_a, &a.datagram(9), &c),
            "fresh ones are taken"
        );
        // A recorded response does not open a session for anyone later: its nonce is stale.
        let mut b3_sees_a = Peer::default();
        let stale = Hello::Response {
            nonce: [0; 16],
            epoch: dead.epoch,
            seq: 0,
        };
        let stale = stale.encode(KEY);
        let (r, _) = inbound(KEY, &b2.me(), &mut b3_sees_a, &stale, Instant::now(), &c);
        assert!(matches!(r, Inbound::Refused) && b3_sees_a.session.is_none());
    }

    /// Issue 12, defect 6: the epoch came from the wall clock, so a peer restarted with its
    /// clock stepped back (a smaller epoch) was refused until the receiver restarted. Epochs are
    /// random and compared for equality: the restarted peer's new epoch is confirmed and taken,
    /// whatever its value.
    #[test]
    fn a_restarted_peer_with_a_smaller_epoch_is_taken_once_confirmed() {
        let c = Counters::default();
        let a = Proc::new(u64::MAX - 1);
        let b = Proc::new(0x2222);
        let (mut b_sees_a, mut a_sees_b) = (Peer::default(), Peer::default());
        assert!(handshake(&b, &mut b_sees_a, &a, &mut a_sees_b, &c));
        assert!(taken(&b, &mut b_sees_a, &a.datagram(1), &c));
        // A restarts with a smaller epoch; its first datagram is refused and challenged...
        let a2 = Proc::new(1);
        let mut a2_sees_b = Peer::default();
        let first = a2.datagram(2);
        let (r, challenge) = inbound(
            KEY,
            &b.me(),
            &mut b_sees_a,
            &first,
            Instant::now() + Duration::from_secs(60),
            &c,
        );
        assert!(matches!(r, Inbound::Refused) && challenge.is_some());
        // ... A2 answers, and from then on its datagrams are taken; the old A's are not.
        let Some(Hello::Challenge { nonce, .. }) = challenge else {
            unreachable!()
        };
        let ch = Hello::Challenge {
            nonce,
            epoch: b.epoch,
        }
        .encode(KEY);
        let (answer, back) = inbound(KEY, &a2.me(), &mut a2_sees_b, &ch, Instant::now(), &c);
        assert!(back.is_some(), "A2 confirms B's epoch in turn");
        let Inbound::Hello(answers) = answer else {
            panic!()
        };
        let resp = answers[0].encode(KEY);
        let (r, _) = inbound(KEY, &b.me(), &mut b_sees_a, &resp, Instant::now(), &c);
        assert!(matches!(r, Inbound::Hello(_)));
        assert_eq!(b_sees_a.session.and_then(|s| s.epoch()), Some(1));
        assert!(taken(&b, &mut b_sees_a, &a2.datagram(3), &c));
        assert!(
            !taken(&b, &mut b_sees_a, &a.datagram(4), &c),
            "the old process"
        );
        assert_eq!(c.sessions.load(Ordering::Relaxed), 2);
    }
}
