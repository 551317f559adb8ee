//! The poll-mode worker: the only place where I/O and the core meet.
//!
//! ```text
//! loop {
//!     pick up a newer pool snapshot (one atomic load)
//!     frames handed over by other workers -> process() one by one
//!     for each port: RX burst of 32 -> process_burst() -> per-port TX bursts
//!     TX every port; unsent mbufs are freed and counted
//!     every 64 loops: housekeeping (reclaim expired flows, release their tokens)
//! }
//! ```
//!
//! Worker `i` owns RX and TX queue `i` of every port. A frame whose flow another worker owns is
//! passed to that worker's inbox (`Verdict::Handoff`). Frames punted by the pipeline (answers
//! addressed to the gateway) are queued for the control thread, which reads and frees them.
//! Nothing here allocates after start.

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use crossbeam_queue::ArrayQueue;
use trapeze_core::pipeline::announce::Announcement;
use trapeze_core::pipeline::{process, process_burst, Shared, Verdict, Worker, WorkerStats, BURST};
use trapeze_core::pool::PortId;
use trapeze_dpdk::{lcore, Eal, Mbuf, MbufBurst, Mempool, Port, RxQueue, TxQueue};

use trapeze_control::publish::{Published, Reader};

use crate::frame::MbufFrame;

/// What every worker shares.
pub(crate) struct Context<'a, 'e> {
    pub(crate) eal: &'e Eal,
    pub(crate) ports: &'a [Port<'e>],
    pub(crate) shared: &'a Shared,
    pub(crate) published: &'a Published,
    pub(crate) stop: &'a AtomicBool,
    /// One inbox per worker: frames handed over by the others, with their ingress port.
    pub(crate) inboxes: &'a [ArrayQueue<(PortId, Mbuf<'e>)>],
    /// Frames the control thread wants sent (ARP/NDP requests, probes), drained by worker 0.
    pub(crate) control_tx: &'a ArrayQueue<(PortId, Mbuf<'e>)>,
    /// Frames the pipeline punted, with their ingress port, for the control thread.
    pub(crate) punted: &'a ArrayQueue<(PortId, Mbuf<'e>)>,
    /// Where each worker publishes its counters for the control thread, every 64 loops.
    pub(crate) board: &'a StatsBoard,
    /// One heartbeat per worker, bumped every loop (the control thread's watchdog reads them).
    pub(crate) heartbeats: &'a trapeze_control::watchdog::Heartbeats,
    /// Sleep after a run of empty polls (zero: yield only).
    pub(crate) idle_sleep: std::time::Duration,
    /// Mbufs for the frames the workers originate (announcements).
    pub(crate) mempool: &'a Mempool<'e>,
}

/// A worker's published counters: pipeline counters, flow-table use, I/O counters.
#[derive(Debug)]
pub(crate) struct WorkerReport {
    pub(crate) stats: WorkerStats,
    pub(crate) flows: usize,
    pub(crate) flow_capacity: usize,
    pub(crate) io: IoStats,
}

/// One slot per worker; a worker writes its own slot (an uncontended lock every 64 loops, no
/// atomic per packet), the control thread reads them for the API and metrics.
#[derive(Debug)]
pub(crate) struct StatsBoard {
    pub(crate) slots: Vec<Mutex<WorkerReport>>,
}

impl StatsBoard {
    pub(crate) fn new(workers: usize, ports: usize, max_vips: usize, max_backends: usize) -> Self {
        Self {
            slots: (0..workers)
                .map(|_| {
                    Mutex::new(WorkerReport {
                        stats: WorkerStats::new(max_vips, max_backends),
                        flows: 0,
                        flow_capacity: 0,
                        io: IoStats::new(ports),
                    })
                })
                .collect(),
        }
    }
}

/// I/O counters of the worker loop itself (the pipeline's are in `Worker::stats`).
#[derive(Debug, Default, Clone)]
pub(crate) struct IoStats {
    /// Frames received.
    pub(crate) rx: u64,
    /// Frames sent.
    pub(crate) tx: u64,
    /// Frames the device did not take (freed).
    pub(crate) tx_unsent: u64,
    /// Multi-segment frames dropped before parsing.
    pub(crate) multiseg: u64,
    /// Handoffs dropped because the owner's inbox was full.
    pub(crate) handoff_full: u64,
    /// Punted frames dropped because the control thread's queue was full.
    pub(crate) punt_full: u64,
    /// Per port (sized once at start: nothing grows on the packet path).
    pub(crate) ports: Vec<PortIo>,
}

impl IoStats {
    pub(crate) fn new(ports: usize) -> Self {
        Self {
            ports: vec![PortIo::default(); ports],
            ..Self::default()
        }
    }

    /// Adds `o` (another worker's) to these.
    pub(crate) fn add(&mut self, o: &IoStats) {
        self.rx += o.rx;
        self.tx += o.tx;
        self.tx_unsent += o.tx_unsent;
        self.multiseg += o.multiseg;
        self.handoff_full += o.handoff_full;
        self.punt_full += o.punt_full;
        if self.ports.len() < o.ports.len() {
            self.ports.resize(o.ports.len(), PortIo::default());
        }
        for (a, b) in self.ports.iter_mut().zip(&o.ports) {
            a.add(b);
        }
    }
}

/// One port's I/O counters in one worker. Every staged frame is `forwarded`, `replies` or
/// `control`, and ends in `tx` or `tx_unsent`.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PortIo {
    /// Frames received.
    pub(crate) rx: u64,
    /// Frames the device took.
    pub(crate) tx: u64,
    /// Frames the device did not take (freed).
    pub(crate) tx_unsent: u64,
    /// Staged: `Verdict::Forward`.
    pub(crate) forwarded: u64,
    /// Staged: `Verdict::Reply`.
    pub(crate) replies: u64,
    /// Staged: the control thread's frames.
    pub(crate) control: u64,
}

impl PortIo {
    fn add(&mut self, o: &PortIo) {
        self.rx += o.rx;
        self.tx += o.tx;
        self.tx_unsent += o.tx_unsent;
        self.forwarded += o.forwarded;
        self.replies += o.replies;
        self.control += o.control;
    }
}

/// What a staged frame is, for the per-port counters.
#[derive(Debug, Clone, Copy)]
enum TxKind {
    Forward,
    Reply,
    Control,
}

/// Fault injection (test builds): set by SIGUSR1.
#[cfg(feature = "fault-injection")]
pub(crate) static STALL: std::sync::LazyLock<std::sync::Arc<AtomicBool>> =
    std::sync::LazyLock::new(|| std::sync::Arc::new(AtomicBool::new(false)));

/// Fault injection (test builds): once [`STALL`] is set, worker 0 stops making progress (no
/// heartbeat, no polling) until the stop.
#[cfg(feature = "fault-injection")]
fn stall(id: u16, cx: &Context<'_, '_>) {
    if id == 0 && STALL.load(Ordering::Relaxed) {
        while !cx.stop.load(Ordering::Relaxed) {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

/// Empty polls in a row after which the worker yields its CPU on each further empty poll.
const IDLE_POLLS_BEFORE_YIELD: u32 = 1024;

/// Runs worker `id` until `stop` is set; returns its counters.
///
pub(crate) fn run(
    id: u16,
    cpu: Option<u32>,
    mut worker: Worker,
    cx: &Context<'_, '_>,
) -> Result<(Worker, IoStats), String> {
    if let Some(cpu) = cpu {
        lcore::pin_current_thread(cpu).map_err(|e| format!("worker {id}: {e}"))?;
    }
    let _registration = lcore::register_thread(cx.eal).map_err(|e| format!("worker {id}: {e}"))?;
    let mut rxq: Vec<RxQueue<'_, '_>> = Vec::with_capacity(cx.ports.len());
    let mut lanes: Vec<Lane<'_, '_>> = Vec::with_capacity(cx.ports.len());
    for p in cx.ports {
        rxq.push(p.rx_queue(id).map_err(|e| format!("worker {id}: {e}"))?);
        lanes.push(Lane {
            staged: MbufBurst::new(),
            queue: p.tx_queue(id).map_err(|e| format!("worker {id}: {e}"))?,
            io: PortIo::default(),
        });
    }
    let mut io = IoStats::new(cx.ports.len());
    poll(id, &mut worker, cx, &mut rxq, &mut lanes, &mut io);
    // Shutdown: flush what is staged, then drain the inbox (frees what others handed over).
    for l in lanes.iter_mut() {
        flush(l, &mut io);
    }
    while cx.inboxes[id as usize].pop().is_some() {}
    sync_ports(&mut io, &lanes);
    Ok((worker, io))
}

/// The poll loop of worker `id`, until `stop` is set. Never inlined: benches/system/worker-split.sh
/// toggles callgrind's collection on this function, so the counts hold the loop and not the
/// worker's start-up.
#[inline(never)]
fn poll<'e>(
    id: u16,
    worker: &mut Worker,
    cx: &Context<'_, 'e>,
    rxq: &mut [RxQueue<'_, 'e>],
    lanes: &mut [Lane<'_, 'e>],
    io: &mut IoStats,
) {
    let clock = crate::clock::Clock::new();
    let mut reader = Reader::new(cx.published);
    let mut rx = MbufBurst::new();
    let mut frames: Vec<MbufFrame<'_>> = Vec::with_capacity(BURST);
    let mut verdicts = [Verdict::Punt; BURST];
    let mut loops: u64 = 0;
    let mut idle: u32 = 0;

    while !cx.stop.load(Ordering::Relaxed) {
        reader.refresh(cx.published);
        let pool = &*reader.pool;
        let now = clock.now();

        // Frames other workers handed over (their flows are ours). `is_empty` first: two loads,
        // where an empty `pop` also fences.
        let inbox = &cx.inboxes[id as usize];
        if !inbox.is_empty() {
            for _ in 0..BURST {
                let Some((port, m)) = inbox.pop() else {
                    break;
                };
                let mut f = MbufFrame(m);
                let v = process(&mut f, port, now, worker, cx.shared, pool);
                route(cx, v, port, f, lanes, io);
            }
        }
        // Control frames (ARP/NDP requests) go out through worker 0.
        if id == 0 && !cx.control_tx.is_empty() {
            for _ in 0..BURST {
                let Some((port, m)) = cx.control_tx.pop() else {
                    break;
                };
                push_tx(lanes, port, m, TxKind::Control, io);
            }
        }

        let mut received = 0;
        for (pi, q) in rxq.iter_mut().enumerate() {
            let n = q.rx_burst(&mut rx);
            if n == 0 {
                continue;
            }
            received += n;
            io.rx += n as u64;
            if let Some(l) = lanes.get_mut(pi) {
                l.io.rx += n as u64;
            }
            let port = PortId(pi as u8);
            frames.clear();
            for m in rx.drain() {
                if m.is_contiguous() {
                    frames.push(MbufFrame(m));
                } else {
                    io.multiseg += 1; // freed here: never half-parsed
                }
            }
            let verdicts = &mut verdicts[..frames.len()];
            core_burst(&mut frames, verdicts, port, now, worker, cx.shared, pool);
            if worker.announcements.is_empty() {
                route_burst(cx, &mut frames, verdicts, port, lanes, io);
            } else {
                for (i, (f, &v)) in frames.drain(..).zip(verdicts.iter()).enumerate() {
                    route(cx, v, port, f, lanes, io);
                    // An ADD_ADDR numbered after this frame (a server segment) follows it at
                    // once.
                    while let Some(a) = worker.announcements.pop_after(i) {
                        send_announcement(cx, a, lanes, io);
                    }
                }
            }
        }

        if !worker.announcements.is_empty() {
            send_announcements(cx, worker, lanes, io);
        }

        for l in lanes.iter_mut() {
            flush(l, io);
        }

        // Poll mode, with manners: after many empty polls in a row, give the CPU away (yield,
        // or sleep `workers.idle_sleep_us`), so a worker sharing a core (test beds, small VMs)
        // does not starve the rest. A busy gateway never gets here.
        if received == 0 {
            idle = idle.saturating_add(1);
            if idle >= IDLE_POLLS_BEFORE_YIELD {
                if cx.idle_sleep.is_zero() {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(cx.idle_sleep);
                }
            }
        } else {
            idle = 0;
        }

        loops += 1;
        cx.heartbeats.beat(id as usize, loops);
        #[cfg(feature = "fault-injection")]
        stall(id, cx);
        if loops.is_multiple_of(4) {
            // Migration of draining backends' connections (pipeline/flow/migration.rs): a
            // slice of the flow table at a time.
            worker.migrate(pool, now, 64);
        }
        if loops.is_multiple_of(64) {
            worker.housekeeping(now, cx.shared, 64);
            if let Some(slot) = cx.board.slots.get(id as usize) {
                let mut p = slot.lock();
                // Live ids only: a few entries, not the tables sized for 4096 backends.
                p.stats
                    .copy_live_from(&worker.stats, pool.vips.len(), pool.backends.len());
                p.flows = worker.flows.len();
                p.flow_capacity = worker.flows.capacity();
                sync_ports(io, lanes);
                p.io.clone_from(io); // reuses the slot's vector: no allocation
            }
        }
    }
}

/// One port's transmit side in one worker: the staged burst, the queue, and the port's
/// counters (one bounds check per staged frame finds all three).
struct Lane<'p, 'e> {
    staged: MbufBurst<'e>,
    queue: TxQueue<'p>,
    io: PortIo,
}

/// Copies the lanes' per-port counters into `io` (for publishing, and at the end).
fn sync_ports(io: &mut IoStats, lanes: &[Lane<'_, '_>]) {
    for (c, l) in io.ports.iter_mut().zip(lanes) {
        *c = l.io;
    }
}

/// The core's burst entry point, behind a symbol of its own (one call per burst): what
/// benches/system/worker-split.sh counts as the core.
#[inline(never)]
fn core_burst(
    frames: &mut [MbufFrame<'_>],
    verdicts: &mut [Verdict],
    port: PortId,
    now: trapeze_core::Ticks,
    worker: &mut Worker,
    shared: &Shared,
    pool: &trapeze_core::pool::PoolSnapshot,
) {
    process_burst(frames, verdicts, port, now, worker, shared, pool);
}

/// Builds and stages the ADD_ADDRs the burst asked for (announce mode): one mbuf each from the
/// pool, counted as replies. Without an mbuf the announcement is lost; the core sends it again
/// until the client echoes it.
#[cold]
fn send_announcements<'e>(
    cx: &Context<'_, 'e>,
    worker: &mut Worker,
    lanes: &mut [Lane<'_, 'e>],
    io: &mut IoStats,
) {
    for a in worker.announcements.drain() {
        send_announcement(cx, a, lanes, io);
    }
}

#[cold]
fn send_announcement<'e>(
    cx: &Context<'_, 'e>,
    a: Announcement,
    lanes: &mut [Lane<'_, 'e>],
    io: &mut IoStats,
) {
    let Some(mut m) = cx.mempool.alloc() else {
        io.tx_unsent += 1;
        return;
    };
    if m.set_len(a.frame_len()) && a.emit(m.data_mut()).is_some() {
        push_tx(lanes, a.port, m, TxKind::Reply, io);
    }
}

/// Routes a decided burst. The common case, every frame forwarded to one port, stages the
/// whole burst on that port's lane with one counter update.
#[inline]
fn route_burst<'e>(
    cx: &Context<'_, 'e>,
    frames: &mut Vec<MbufFrame<'e>>,
    verdicts: &[Verdict],
    ingress: PortId,
    lanes: &mut [Lane<'_, 'e>],
    io: &mut IoStats,
) {
    if let Some(&Verdict::Forward { port }) = verdicts.first() {
        if verdicts.iter().all(|&v| v == Verdict::Forward { port }) {
            if let Some(l) = lanes.get_mut(usize::from(port.0)) {
                l.io.forwarded += frames.len() as u64;
                for f in frames.drain(..) {
                    if let Err(m) = l.staged.push(f.0) {
                        flush(l, io);
                        let _ = l.staged.push(m);
                    }
                }
                return;
            }
        }
    }
    for (f, &v) in frames.drain(..).zip(verdicts) {
        route(cx, v, ingress, f, lanes, io);
    }
}

/// Sends, queues for another worker, or frees a decided frame.
#[inline]
fn route<'e>(
    cx: &Context<'_, 'e>,
    v: Verdict,
    ingress: PortId,
    f: MbufFrame<'e>,
    lanes: &mut [Lane<'_, 'e>],
    io: &mut IoStats,
) {
    match v {
        Verdict::Forward { port } => push_tx(lanes, port, f.0, TxKind::Forward, io),
        Verdict::Reply { port } => push_tx(lanes, port, f.0, TxKind::Reply, io),
        Verdict::Handoff { worker } => {
            if let Some(inbox) = cx.inboxes.get(worker as usize) {
                if inbox.push((ingress, f.0)).is_err() {
                    io.handoff_full += 1;
                }
            }
        }
        Verdict::Punt => {
            if cx.punted.push((ingress, f.0)).is_err() {
                io.punt_full += 1; // the frame is freed here
            }
        }
        Verdict::Drop(_) => {}
    }
}

/// Stages an mbuf for `port`, sending the staged burst first when it is full.
#[inline]
fn push_tx<'e>(
    lanes: &mut [Lane<'_, 'e>],
    port: PortId,
    m: Mbuf<'e>,
    kind: TxKind,
    io: &mut IoStats,
) {
    let Some(l) = lanes.get_mut(usize::from(port.0)) else {
        return; // unknown port: the mbuf is freed
    };
    match kind {
        TxKind::Forward => l.io.forwarded += 1,
        TxKind::Reply => l.io.replies += 1,
        TxKind::Control => l.io.control += 1,
    }
    if let Err(m) = l.staged.push(m) {
        flush(l, io);
        let _ = l.staged.push(m);
    }
}

/// Sends a staged burst; what the device does not take is freed and counted.
#[inline]
fn flush(l: &mut Lane<'_, '_>, io: &mut IoStats) {
    if l.staged.is_empty() {
        return;
    }
    let sent = l.queue.tx_burst(&mut l.staged) as u64;
    let unsent = l.staged.len() as u64;
    io.tx += sent;
    io.tx_unsent += unsent;
    l.io.tx += sent;
    l.io.tx_unsent += unsent;
    l.staged.clear();
}
