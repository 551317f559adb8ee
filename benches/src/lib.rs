//! Shared harness of the criterion benches: one worker on the demo pool, frames restored from
//! templates before each measured `process()` call.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use trapeze_core::crypto::token_from_key;
use trapeze_core::flow::FlowKey;
use trapeze_core::pipeline::{
    process, process_burst, Event, Frame, Shared, VecFrame, Verdict, Worker, WorkerConfig, BURST,
};
use trapeze_core::pool::{BackendId, PoolSnapshot, PortId};
use trapeze_core::tables::flow_table::{FlowTable, FlowTableConfig};
use trapeze_core::tables::token::{Owner, TokenTableConfig};
use trapeze_core::testkit::{backend_v4, demo_pool, VIP4, VIP_PORT};
use trapeze_core::Ticks;

/// Client address of flow `i` (60 000 ports per address, from 100.64.0.0).
pub fn client(i: usize) -> IpAddr {
    let a = (i / 60_000) as u32;
    IpAddr::V4(Ipv4Addr::from(0x6440_0000 + a))
}

/// IPv6 client address of flow `i` (2001:db8:c::/64, 60 000 ports per address).
pub fn client6(i: usize) -> IpAddr {
    IpAddr::V6(core::net::Ipv6Addr::new(
        0x2001,
        0xdb8,
        0xc,
        0,
        0,
        0,
        0,
        1 + (i / 60_000) as u16,
    ))
}

/// Client port of flow `i`.
pub fn port(i: usize) -> u16 {
    1024 + (i % 60_000) as u16
}

/// A worker, its shared state and pool, and a reusable frame.
#[derive(Debug)]
pub struct Bench {
    /// The worker under test.
    pub worker: Worker,
    /// The shared token table.
    pub shared: Shared,
    /// The pool.
    pub pool: PoolSnapshot,
    frame: VecFrame,
    burst: Vec<VecFrame>,
    verdicts: Vec<Verdict>,
    now: Ticks,
}

impl Bench {
    /// A worker with a flow table of `flow_capacity` over a demo pool of `backends`.
    pub fn new(backends: u16, flow_capacity: usize) -> Self {
        Self::with_pool(demo_pool(backends), flow_capacity)
    }

    /// A worker with a flow table of `flow_capacity` over `pool`.
    pub fn with_pool(pool: PoolSnapshot, flow_capacity: usize) -> Self {
        let flows = FlowTable::new(FlowTableConfig {
            capacity: flow_capacity,
            ..Default::default()
        });
        Self::with_flows(pool, flows)
    }

    /// A worker around a flow table built elsewhere (on memory the caller chose) over `pool`.
    pub fn with_flows(pool: PoolSnapshot, flows: FlowTable) -> Self {
        Self {
            worker: Worker::with_flows(WorkerConfig::default(), flows),
            shared: Shared::new(TokenTableConfig {
                capacity: 1 << 21,
                shards: 64,
            }),
            pool,
            frame: VecFrame::new(&[0u8; 64]),
            burst: (0..BURST).map(|_| VecFrame::new(&[0u8; 64])).collect(),
            verdicts: vec![Verdict::Punt; BURST],
            now: Ticks::from_secs(1),
        }
    }

    fn one(&mut self, bytes: &[u8], port: u8) -> Verdict {
        self.frame.reset(bytes);
        process(
            &mut self.frame,
            PortId(port),
            self.now,
            &mut self.worker,
            &self.shared,
            &self.pool,
        )
    }

    /// Loads a frame (what a driver would have received) without deciding it: with
    /// [`decide_loaded`](Self::decide_loaded), instruction counts can leave the reset out.
    pub fn load(&mut self, bytes: &[u8]) {
        self.frame.reset(bytes);
    }

    /// Decides the frame [`load`](Self::load) put in place, arriving on port 0.
    #[inline(always)]
    pub fn decide_loaded(&mut self) -> Verdict {
        process(
            &mut self.frame,
            PortId(0),
            self.now,
            &mut self.worker,
            &self.shared,
            &self.pool,
        )
    }

    /// Loads a burst of frames (at most [`BURST`]) without deciding them.
    pub fn load_burst(&mut self, frames: &[&[u8]]) {
        for (f, b) in self.burst.iter_mut().zip(frames) {
            f.reset(b);
        }
    }

    /// Decides the burst [`load_burst`](Self::load_burst) put in place, arriving on port 0.
    #[inline(always)]
    pub fn decide_loaded_burst(&mut self) {
        process_burst(
            &mut self.burst,
            &mut self.verdicts,
            PortId(0),
            self.now,
            &mut self.worker,
            &self.shared,
            &self.pool,
        );
    }

    /// Processes every frame once (client side), unmeasured.
    pub fn run_all(&mut self, frames: &[Vec<u8>]) {
        for f in frames {
            let _ = self.one(f, 0);
        }
    }

    /// Processes every frame once and returns, for each, the demo backend it went to.
    pub fn run_all_backends(&mut self, frames: &[Vec<u8>]) -> Vec<u16> {
        frames
            .iter()
            .map(|f| {
                let _ = self.one(f, 0);
                let d = self.frame.data();
                let dst = Ipv4Addr::new(d[30], d[31], d[32], d[33]);
                (0..64u16).find(|&b| backend_v4(b) == dst).unwrap_or(0)
            })
            .collect()
    }

    /// Times `iters` packets taken from `frames` in `order` (cycling), arriving on port 0.
    pub fn time_frames(&mut self, frames: &[Vec<u8>], order: &[usize], iters: u64) -> Duration {
        self.time_frames_on(frames, order, iters, 0)
    }

    /// Times `iters` packets arriving on `port`.
    pub fn time_frames_on(
        &mut self,
        frames: &[Vec<u8>],
        order: &[usize],
        iters: u64,
        port: u8,
    ) -> Duration {
        let start = Instant::now();
        let mut k = 0;
        for _ in 0..iters {
            let _ = black_box(self.one(&frames[order[k]], port));
            k += 1;
            if k == order.len() {
                k = 0;
            }
        }
        start.elapsed()
    }

    /// Times `iters` packets (rounded up to whole bursts) taken from `frames` in `order`,
    /// processed in bursts of [`BURST`] with [`process_burst`].
    pub fn time_bursts(&mut self, frames: &[Vec<u8>], order: &[usize], iters: u64) -> Duration {
        let bursts = iters.div_ceil(BURST as u64);
        let start = Instant::now();
        let mut k = 0;
        for _ in 0..bursts {
            for f in self.burst.iter_mut() {
                f.reset(&frames[order[k]]);
                k += 1;
                if k == order.len() {
                    k = 0;
                }
            }
            self.decide_loaded_burst();
            black_box(&self.verdicts);
        }
        start.elapsed() * (iters as u32) / ((bursts * BURST as u64) as u32)
    }

    /// True when nothing was dropped so far.
    pub fn forwarded_all(&self) -> bool {
        self.worker.stats.dropped() == 0
    }

    /// Joins routed so far.
    pub fn joins_routed(&self) -> u64 {
        self.worker.stats.events_of(Event::JoinRouted)
    }

    /// Removes the flows of clients `start..start + n` (unmeasured cleanup between batches).
    pub fn forget_clients(&mut self, start: usize, n: usize) {
        for i in start..start + n {
            let key = FlowKey::new(client(i), port(i), VIP4.into(), VIP_PORT, 6);
            if let Some(idx) = self.worker.flows.lookup(&key, self.worker.flows.hash(&key)) {
                self.worker.flows.remove(idx);
            }
        }
    }

    /// Puts the flows of `syns` (clients `0..syns.len()`) back in SYN-sent state and empties
    /// the token table.
    pub fn reset_handshakes(&mut self, syns: &[Vec<u8>]) {
        self.forget_clients(0, syns.len());
        self.shared
            .tokens
            .expire(Ticks::from_secs(1 << 30), Duration::ZERO);
        self.run_all(syns);
    }

    /// The server key of preloaded connection `i`.
    pub fn token_key(i: usize) -> u64 {
        0x5eed_0000_0000_0000 + i as u64
    }

    /// Learns `n` connections' tokens, owned by backends round-robin.
    pub fn preload_tokens(&mut self, n: usize) {
        let backends = self.pool.backends.len() as u16;
        for i in 0..n {
            let key = Self::token_key(i);
            let owner = Owner {
                backend: BackendId(i as u16 % backends),
                conn: FlowKey::new(client(i), port(i), VIP4.into(), VIP_PORT, 6),
                server_key: key,
                client_key: None,
                learned_at: self.now,
                last_seen: self.now,
                subflows: 1,
            };
            let _ = self.shared.tokens.learn(token_from_key(key), owner);
        }
    }
}
