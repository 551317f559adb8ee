//! The DPDK side: ports, the paced send loop, the receive side (counting, latency, answering
//! handshakes), trials and the search.

use std::time::{Duration, Instant};

use trapeze_dpdk::{lcore, Eal, Mbuf, MbufBurst, Mempool, Port, PortConfig, RxQueue, TxQueue};
use trapeze_loadgen::hist::Histogram;
use trapeze_loadgen::mix::{Schedule, ORIGINATED};
use trapeze_loadgen::packets::{classify, Generator, Kind, Responder, Topology, MAX_FRAME};
use trapeze_loadgen::search::{Outcome, Search};

use crate::{Args, Traffic};

const KINDS: usize = Kind::ALL.len();

/// Packets the paced sender may fall behind its schedule before it skips ahead.
const MAX_BACKLOG: u64 = 4096;

/// Counters of one trial.
#[derive(Debug, Default, Clone)]
struct Counts {
    /// Originated packets built, by kind (offered: the device refusing one is a loss).
    offered: [u64; KINDS],
    /// Of those, taken by the TX queue.
    sent: [u64; KINDS],
    /// Received on the far port, by kind.
    rx_far: [u64; KINDS],
    /// Received on the near port (SYN/ACKs coming back), by kind.
    rx_near: [u64; KINDS],
    /// Answers built (SYN/ACKs on the far port, third ACKs on the near one) and sent.
    answered: [u64; KINDS],
    /// Answers the TX queue refused.
    answer_refused: u64,
    /// Frames that were not ours.
    foreign: u64,
    /// Mbuf allocation failures.
    nombuf: u64,
    /// Packets the paced sender skipped after falling behind (the generator was descheduled).
    skipped: u64,
}

impl Counts {
    /// Frames expected on the far port and frames that arrived there. Every originated packet
    /// should arrive, and every MP_CAPABLE SYN should come back as a third ACK as well.
    fn expected_received(&self) -> (u64, u64) {
        let mut exp = 0;
        let mut got = 0;
        for k in ORIGINATED {
            exp += self.offered[k as usize];
            got += self.rx_far[k as usize];
        }
        exp += self.offered[Kind::MpcSyn as usize];
        got += self.rx_far[Kind::MpcAck as usize];
        (exp, got)
    }

    fn loss(&self) -> f64 {
        let (exp, got) = self.expected_received();
        if exp == 0 {
            return 1.0;
        }
        1.0 - (got.min(exp) as f64 / exp as f64)
    }
}

/// One trial's result.
#[derive(Debug, Clone)]
struct Trial {
    offered_rate: f64,
    secs: f64,
    counts: Counts,
    hist: Histogram,
}

struct Engine<'q, 'e> {
    pool: Mempool<'e>,
    tx_near: TxQueue<'q>,
    rx_near: RxQueue<'q, 'e>,
    tx_far: TxQueue<'q>,
    rx_far: RxQueue<'q, 'e>,
    gen: Generator,
    resp: Responder,
    hz: u64,
    /// Flow counters that never repeat across trials (SYN flood, handshakes, joins).
    next_syn: u64,
    next_conn: u64,
    next_join: u64,
    /// Data: the next flow.
    next_flow: u64,
    flows: u64,
    tokens: Vec<u32>,
    /// During the join set-up: connections whose third ACK crossed the gateway (their tokens
    /// are learned and confirmed).
    confirmed: Option<Vec<u64>>,
    /// In a mix: data segments go over these MPTCP connections, which keeps them (and the
    /// tokens the joins carry) alive.
    data_conns: Vec<u64>,
}

impl<'q, 'e> Engine<'q, 'e> {
    /// Builds one originated packet of `kind` into `m`.
    #[inline]
    fn build(&mut self, m: &mut Mbuf<'e>, kind: Kind, ts: u32) {
        let mut buf = [0u8; MAX_FRAME];
        let n = match kind {
            Kind::Data => {
                let f = self.next_flow;
                self.next_flow += 1;
                if self.next_flow == self.flows {
                    self.next_flow = 0;
                }
                match self.data_conns.get(f as usize) {
                    Some(&conn) => self.gen.conn_data(&mut buf, conn, ts),
                    None => self.gen.data(&mut buf, f, ts),
                }
            }
            Kind::Syn => {
                self.next_syn += 1;
                self.gen.syn(&mut buf, self.next_syn, ts)
            }
            Kind::MpcSyn => {
                self.next_conn += 1;
                self.gen.mpc_syn(&mut buf, self.next_conn, ts)
            }
            _ => {
                self.next_join += 1;
                let t = if self.tokens.is_empty() {
                    0
                } else {
                    self.tokens[(self.next_join % self.tokens.len() as u64) as usize]
                };
                self.gen.join(&mut buf, self.next_join, t, ts)
            }
        };
        let _ = m.set_len(n);
        m.data_mut()[..n].copy_from_slice(&buf[..n]);
    }

    /// Receives on both ports once: counts, records latencies, answers handshakes.
    #[inline]
    fn poll(&mut self, c: &mut Counts, hist: &mut Histogram, answers: &mut [MbufBurst<'e>; 2]) {
        let mut rx = MbufBurst::new();
        // Far side: what the device forwarded toward the backends.
        if self.rx_far.rx_burst(&mut rx) > 0 {
            let now = lcore::tsc() as u32;
            for mut m in rx.drain() {
                let Some((kind, ts)) = classify(m.data()) else {
                    c.foreign += 1;
                    continue;
                };
                c.rx_far[kind as usize] += 1;
                if kind == Kind::MpcAck {
                    if let Some(v) = self.confirmed.as_mut() {
                        v.extend(self.gen.conn_of(m.data()));
                    }
                }
                if kind != Kind::SynAck && kind != Kind::MpcSyn {
                    hist.record(u64::from(now.wrapping_sub(ts)));
                }
                if kind == Kind::MpcSyn && answer(&mut m, |o, i| self.resp.synack(o, i)) {
                    c.answered[Kind::SynAck as usize] += 1;
                    push(&mut self.tx_far, &mut answers[1], m, c);
                }
            }
        }
        // Near side: SYN/ACKs the device sent back to the clients.
        if self.rx_near.rx_burst(&mut rx) > 0 {
            for mut m in rx.drain() {
                let Some((kind, _)) = classify(m.data()) else {
                    c.foreign += 1;
                    continue;
                };
                c.rx_near[kind as usize] += 1;
                if kind == Kind::SynAck && answer(&mut m, |o, i| self.gen.third_ack(o, i)) {
                    c.answered[Kind::MpcAck as usize] += 1;
                    push(&mut self.tx_near, &mut answers[0], m, c);
                }
            }
        }
        let [near, far] = answers;
        flush(&mut self.tx_near, near, c);
        flush(&mut self.tx_far, far, c);
    }

    /// Sends at `rate` originated packets per second (0: as fast as possible) for `secs`,
    /// then drains for `drain` seconds.
    fn trial(&mut self, sched: &Schedule, rate: f64, secs: f64, drain: f64) -> Trial {
        let mut c = Counts::default();
        let mut hist = Histogram::default();
        let mut answers = [MbufBurst::new(), MbufBurst::new()];
        let mut burst = MbufBurst::new();
        let mut kinds = [Kind::Data; trapeze_dpdk::BURST_SIZE];
        let hz = self.hz as f64;
        let t0 = lcore::tsc();
        let end = t0 + (secs * hz) as u64;
        let mut n: u64 = 0;
        loop {
            let now = lcore::tsc();
            if now >= end {
                break;
            }
            let want = if rate <= 0.0 {
                trapeze_dpdk::BURST_SIZE as u64
            } else {
                let due = ((now - t0) as f64 * rate / hz) as u64;
                // The generator itself was descheduled: what it could not send in time was
                // never offered (counted apart), rather than sent later in one burst.
                if due > n + MAX_BACKLOG {
                    c.skipped += due - MAX_BACKLOG - n;
                    n = due - MAX_BACKLOG;
                }
                due.saturating_sub(n).min(trapeze_dpdk::BURST_SIZE as u64)
            };
            if want > 0 {
                if self.pool.alloc_into(&mut burst, want as usize) {
                    let ts = now as u32;
                    for (i, m) in burst.iter_mut().enumerate() {
                        let k = sched.kind(n + i as u64);
                        kinds[i] = k;
                        c.offered[k as usize] += 1;
                        self.build(m, k, ts);
                    }
                    let built = burst.len();
                    n += built as u64;
                    let sent = self.tx_near.tx_burst(&mut burst);
                    for k in &kinds[..sent] {
                        c.sent[*k as usize] += 1;
                    }
                    burst.clear();
                } else {
                    c.nombuf += 1;
                }
            }
            self.poll(&mut c, &mut hist, &mut answers);
        }
        let elapsed = (lcore::tsc() - t0) as f64 / hz;
        let stop = Instant::now() + Duration::from_secs_f64(drain);
        while Instant::now() < stop {
            self.poll(&mut c, &mut hist, &mut answers);
        }
        let total: u64 = c.offered.iter().sum();
        Trial {
            offered_rate: total as f64 / elapsed,
            secs: elapsed,
            counts: c,
            hist,
        }
    }
}

/// Turns a received frame into the answer `build` makes of it (`build(out, received)` returns
/// the answer's length), in the same mbuf. False, leaving the mbuf to be freed, when there is
/// no answer.
#[inline]
fn answer(m: &mut Mbuf<'_>, build: impl FnOnce(&mut [u8], &[u8]) -> Option<usize>) -> bool {
    let mut received = [0u8; MAX_FRAME];
    let n = m.data().len().min(MAX_FRAME);
    received[..n].copy_from_slice(&m.data()[..n]);
    let mut out = [0u8; MAX_FRAME];
    match build(&mut out, &received[..n]) {
        Some(len) if m.set_len(len) => {
            m.data_mut().copy_from_slice(&out[..len]);
            true
        }
        _ => false,
    }
}

#[inline]
fn push<'e>(q: &mut TxQueue<'_>, b: &mut MbufBurst<'e>, m: Mbuf<'e>, c: &mut Counts) {
    if let Err(m) = b.push(m) {
        flush(q, b, c);
        let _ = b.push(m);
    }
}

#[inline]
fn flush(q: &mut TxQueue<'_>, b: &mut MbufBurst<'_>, c: &mut Counts) {
    if b.is_empty() {
        return;
    }
    q.tx_burst(b);
    c.answer_refused += b.len() as u64;
    b.clear();
}

fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = s.split(':').collect();
    let mut mac = [0u8; 6];
    if parts.len() != 6 {
        return Err(format!("bad MAC {s:?}"));
    }
    for (o, p) in mac.iter_mut().zip(parts) {
        *o = u8::from_str_radix(p, 16).map_err(|_| format!("bad MAC {s:?}"))?;
    }
    Ok(mac)
}

fn open<'e>(eal: &'e Eal, name: &str, pool: Mempool<'e>) -> Result<Port<'e>, String> {
    let mut p = Port::open_by_name(eal, name).map_err(|e| format!("port {name}: {e}"))?;
    p.configure(
        &PortConfig {
            rx_queues: 1,
            tx_queues: 1,
            rx_descriptors: 1024,
            tx_descriptors: 1024,
            rss: false,
            rss_key: None,
            checksum_offload: false,
            mtu: None,
        },
        pool,
    )
    .map_err(|e| format!("port {name}: {e}"))?;
    let _ = p.set_promiscuous(true);
    p.start().map_err(|e| format!("port {name}: {e}"))?;
    Ok(p)
}

/// Per-CPU times from /proc/stat, in USER_HZ ticks: (busy, system, softirq) for each CPU.
fn cpu_times() -> Vec<(u64, u64, u64)> {
    let Ok(text) = std::fs::read_to_string("/proc/stat") else {
        return Vec::new();
    };
    text.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            // user nice system idle iowait irq softirq steal
            let busy = [0, 1, 2, 5, 6].iter().filter_map(|&i| v.get(i)).sum();
            let at = |i: usize| v.get(i).copied().unwrap_or(0);
            (busy, at(2), at(6))
        })
        .collect()
}

/// `cpuN_busy_s=... cpuN_system_s=... cpuN_softirq_s=...` between two [`cpu_times`] samples
/// (USER_HZ = 100).
fn cpu_delta(a: &[(u64, u64, u64)], b: &[(u64, u64, u64)]) -> String {
    a.iter()
        .zip(b)
        .enumerate()
        .map(|(i, (x, y))| {
            format!(
                " cpu{i}_busy_s={:.2} cpu{i}_system_s={:.2} cpu{i}_softirq_s={:.2}",
                (y.0 - x.0) as f64 / 100.0,
                (y.1 - x.1) as f64 / 100.0,
                (y.2 - x.2) as f64 / 100.0
            )
        })
        .collect()
}

fn us(cycles: u64, hz: u64) -> f64 {
    cycles as f64 * 1e6 / hz as f64
}

fn describe(t: &Trial) -> String {
    let c = &t.counts;
    let (exp, got) = c.expected_received();
    let mut s = format!(
        "offered {:.3} Mpps over {:.2}s: expected {exp} received {got} loss {:.4}%",
        t.offered_rate / 1e6,
        t.secs,
        c.loss() * 100.0
    );
    for k in Kind::ALL {
        let i = k as usize;
        if c.offered[i] + c.rx_far[i] + c.rx_near[i] > 0 {
            s += &format!(
                " | {} offered {} sent {} far {} near {}",
                k.name(),
                c.offered[i],
                c.sent[i],
                c.rx_far[i],
                c.rx_near[i]
            );
        }
    }
    if c.answer_refused + c.foreign + c.nombuf + c.skipped > 0 {
        s += &format!(
            " | answers refused {} foreign {} nombuf {} skipped {}",
            c.answer_refused, c.foreign, c.nombuf, c.skipped
        );
    }
    s
}

pub(crate) fn main(args: &Args) -> Result<(), String> {
    let eal = Eal::init(&args.eal).map_err(|e| format!("DPDK EAL: {e}"))?;
    let pool = Mempool::new(&eal, "lg_mbufs", 16383, 256, Mempool::DEFAULT_DATA_ROOM)
        .map_err(|e| format!("mempool: {e}"))?;
    let near = open(&eal, &args.tx_port, pool)?;
    let far = open(&eal, &args.rx_port, pool)?;
    // memif links come up when the peer connects.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let up =
            near.link().map(|l| l.up).unwrap_or(false) && far.link().map(|l| l.up).unwrap_or(false);
        if up {
            break;
        }
        if Instant::now() > deadline {
            return Err(
                "links did not come up within 20 s (is the device under test running?)".into(),
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let topo = Topology {
        gw_client_mac: parse_mac(&args.dut_mac)?,
        vip: *args.vip.ip(),
        vip_port: args.vip.port(),
        ..Topology::default()
    };
    let mut e = Engine {
        pool,
        tx_near: near.tx_queue(0).map_err(|e| e.to_string())?,
        rx_near: near.rx_queue(0).map_err(|e| e.to_string())?,
        tx_far: far.tx_queue(0).map_err(|e| e.to_string())?,
        rx_far: far.rx_queue(0).map_err(|e| e.to_string())?,
        gen: Generator::new(topo),
        resp: Responder::default(),
        hz: lcore::tsc_hz(),
        next_syn: 0,
        next_conn: 0,
        next_join: 0,
        next_flow: 0,
        flows: args.flows.max(1),
        tokens: Vec::new(),
        confirmed: None,
        data_conns: Vec::new(),
    };
    let log = |s: String| eprintln!("trapeze-loadgen [{}]: {s}", args.label);
    let sched = match args.traffic {
        Traffic::Data => Schedule::only(Kind::Data),
        Traffic::Syn => Schedule::only(Kind::Syn),
        Traffic::Handshake => Schedule::only(Kind::MpcSyn),
        Traffic::Join => Schedule::only(Kind::Join),
        Traffic::Mix => Schedule::parse(&args.mix)?,
    };

    // Set-up: data flows are adopted by the gateway on their first packet; joins need tokens.
    if args.traffic == Traffic::Data {
        // At most 0.5 Mpps, so that a slow device adopts every flow before the trials.
        let rate = (e.flows as f64 / 0.2).min(500_000.0);
        let secs = e.flows as f64 / rate;
        let t = e.trial(&Schedule::only(Kind::Data), rate, secs, 0.2);
        e.next_flow = 0;
        log(format!("warm-up of {} flows: {}", e.flows, describe(&t)));
    }
    if matches!(args.traffic, Traffic::Join | Traffic::Mix) {
        let n = args.tokens.max(1);
        let rate = 100_000.0f64;
        let secs = (n as f64 / rate).max(0.2);
        e.confirmed = Some(Vec::with_capacity(n as usize * 2));
        let t = e.trial(&Schedule::only(Kind::MpcSyn), rate, secs, 0.3);
        log(format!("set-up of {n} MPTCP connections: {}", describe(&t)));
        // Joins carry the tokens of the confirmed connections, round robin; handshakes in a mix
        // continue after the set-up's connections.
        let confirmed = e.confirmed.take().unwrap_or_default();
        e.tokens = confirmed.iter().map(|&c| e.gen.conn_token(c)).collect();
        if e.tokens.is_empty() {
            return Err("no MPTCP connection was confirmed in the set-up: no token to join".into());
        }
        log(format!("{} tokens for joins", e.tokens.len()));
        if args.traffic == Traffic::Mix {
            // The mix's data flows are these connections: their data keeps them established.
            e.flows = confirmed.len() as u64;
            e.next_flow = 0;
            e.data_conns = confirmed;
        }
    }

    let emit_trial = |what: &str, t: &Trial| log(format!("{what}: {}", describe(t)));
    // A fixed trial reports what it forwarded and the CPU time of every CPU meanwhile (for
    // packets per CPU-second against the kernel).
    let mut line_extra = String::new();
    let (best, hi, gen_max, carried, trials) = if let Some(rate) = args.rate {
        let before = cpu_times();
        let t = e.trial(&sched, rate, args.trial_secs, args.drain_secs);
        let cpu = cpu_delta(&before, &cpu_times());
        emit_trial("fixed", &t);
        let o = Outcome {
            offered: t.offered_rate,
            loss: t.counts.loss(),
        };
        let (exp, got) = t.counts.expected_received();
        let carried = t.offered_rate * got as f64 / exp.max(1) as f64;
        line_extra = format!(
            " forwarded={got} offered={exp} secs={:.3}{cpu}",
            t.secs + args.drain_secs
        );
        (
            (o.loss <= args.max_loss).then_some(o),
            rate,
            rate,
            carried,
            1,
        )
    } else {
        // Calibration: as fast as the generator can build and the device take.
        let cal = e.trial(&sched, 0.0, args.trial_secs.min(2.0), args.drain_secs);
        emit_trial("calibration (unpaced)", &cal);
        // The search's ceiling: what the generator offered, but not far above what the device
        // carried when overloaded (a device rarely carries much more when not overloaded).
        let (exp, got) = cal.counts.expected_received();
        let carried = cal.offered_rate * got as f64 / exp.max(1) as f64;
        let hi = cal.offered_rate.min(carried * 1.25).max(1000.0);
        let mut s = Search::new(hi, args.max_loss, args.steps, 0.01);
        let mut n = 0;
        while let Some(rate) = s.next_rate() {
            let mut loss = 1.0;
            for attempt in 0..=args.retries {
                let t = e.trial(&sched, rate, args.trial_secs, args.drain_secs);
                n += 1;
                emit_trial(&format!("trial {n} (attempt {})", attempt + 1), &t);
                loss = t.counts.loss();
                if loss <= args.max_loss {
                    break;
                }
            }
            s.record(Outcome {
                offered: rate,
                loss,
            });
        }
        (s.best(), hi, cal.offered_rate, carried, n)
    };

    let mut line = format!(
        "result label={} traffic={:?} flows={} generator_max_pps={gen_max:.0} max_forwarding_pps={carried:.0} search_ceiling_pps={hi:.0} trials={trials} trial_secs={}",
        args.label,
        args.traffic,
        e.flows,
        args.trial_secs
    )
    .to_lowercase();
    line += &line_extra;
    match best {
        Some(b) => {
            line += &format!(
                " zero_loss_pps={:.0} zero_loss_loss={:.6}",
                b.offered, b.loss
            )
        }
        None => line += " zero_loss_pps=0",
    }
    if args.latency_at > 0.0 {
        let base = best.map_or(hi, |b| b.offered);
        let rate = base * args.latency_at;
        let t = e.trial(&sched, rate, args.trial_secs, args.drain_secs);
        emit_trial(&format!("latency at {:.0}%", args.latency_at * 100.0), &t);
        let h = &t.hist;
        line += &format!(
            " latency_rate_pps={rate:.0} latency_loss={:.6} p50_us={:.2} p99_us={:.2} p999_us={:.2} max_us={:.2} samples={}",
            t.counts.loss(),
            us(h.quantile(0.5), e.hz),
            us(h.quantile(0.99), e.hz),
            us(h.quantile(0.999), e.hz),
            us(h.max(), e.hz),
            h.count()
        );
    }
    for (name, p) in [("near", &near), ("far", &far)] {
        if let Ok(s) = p.stats() {
            log(format!(
                "port {name}: ipackets {} opackets {} imissed {} oerrors {} rx_nombuf {}",
                s.ipackets, s.opackets, s.imissed, s.oerrors, s.rx_nombuf
            ));
        }
    }
    println!("{line}");
    drop(e);
    Ok(())
}
