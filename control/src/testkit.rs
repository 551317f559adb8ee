//! A dataplane for tests of the control thread: [`Net`], the core's real pipeline
//! (`trapeze_core::pipeline::process`, the workers' code) between the control thread and
//! simulated hosts on the wire. Not used by the daemon.
//!
//! ```text
//! control thread --send--> wire of port P --> hosts on P --answer--> process() --Punt--> punted
//!                <-punted-------------------------------------------------------------'
//! clients --[Net::client]--> process() --Forward--> hosts (backends) --answer--> process() --> clients
//! ```
//!
//! What is real: every frame the gateway receives is decided by `process` with the snapshot the
//! control thread published (each worker picks it up as a worker does, through a
//! [`Reader`]), and its counters are the workers' counters. The neighbour resolver's ARP
//! requests and neighbour solicitations are answered by each backend host's own instance of the
//! pipeline (whose port has the backend's addresses: the gateway's ARP/NDP responder, answering
//! the gateway's resolver).
//!
//! What stands in: the hosts' TCP. A backend host answers a SYN to one of its addresses with a
//! SYN/ACK ([`Listen::Accept`]), a RST ([`Listen::Refuse`]) or nothing ([`Listen::Silent`]), as
//! a listening, closed or firewalled kernel would; it keeps no connection state. That is what
//! the health checker and the NAT path need to see; real kernels are in the end-to-end tests.
//!
//! Everything happens synchronously, under one lock: [`Dataplane::send`] delivers the frame and
//! runs every answer through the gateway before it returns, so the next
//! [`Dataplane::punted`] sees what came back.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use trapeze_core::pipeline::{process, Frame, Shared, VecFrame, Verdict, Worker, WorkerConfig};
use trapeze_core::pool::{Mac, PoolSnapshot, PoolSpec, PortConfig, PortId};
use trapeze_core::tables::token::TokenTableConfig;
use trapeze_core::testkit::TcpSpec;
use trapeze_core::Ticks;
use trapeze_wire::ethernet::{self, EtherType};
use trapeze_wire::ip::IpProtocol;
use trapeze_wire::tcp::{self, TcpFlags};
use trapeze_wire::{ipv4, ipv6};

use crate::api::WorkerSample;
use crate::config::GatewayConfig;
use crate::dataplane::{Counters, Dataplane, PortCounters};
use crate::publish::{Published, Reader};

/// Punted frames held for the control thread at most (the daemon's queue size).
const PUNT_QUEUE: usize = 1024;
/// Frames one delivery may cause at most (a loop between hosts and the gateway is a bug).
const MAX_STEPS: usize = 10_000;

/// How a host answers a TCP SYN to one of its addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    /// SYN/ACK: a listening socket.
    Accept,
    /// RST: nothing listens on the port.
    Refuse,
    /// Nothing: a firewall drops the SYN.
    Silent,
}

/// What a host saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostLog {
    /// SYNs received, by source endpoint.
    pub syns: Vec<(IpAddr, u16)>,
    /// RSTs received (the health checker closes its half-open probes with one).
    pub resets: u64,
    /// ARP requests and neighbour solicitations it answered.
    pub neighbour_answers: u64,
}

/// A simulated host on the wire of one of the gateway's ports.
#[derive(Debug)]
pub struct Host {
    /// Its name (a backend's name).
    pub name: String,
    /// The gateway port it is attached to.
    pub port: PortId,
    /// Its MAC.
    pub mac: Mac,
    /// How it answers SYNs.
    pub listen: Listen,
    /// What it saw.
    pub log: HostLog,
    /// Its own pipeline, with its addresses on its one port: it answers ARP and NDP.
    stack: Worker,
    stack_shared: Shared,
    stack_pool: PoolSnapshot,
}

impl Host {
    /// A host with these addresses; it accepts connections.
    pub fn new(
        name: &str,
        port: PortId,
        mac: Mac,
        ipv4: Option<Ipv4Addr>,
        ipv6: Option<Ipv6Addr>,
    ) -> Self {
        let spec = PoolSpec {
            version: 1,
            ports: vec![PortConfig {
                id: PortId(0),
                mac,
                ipv4: ipv4.into_iter().collect(),
                ipv6: ipv6.into_iter().collect(),
                vlan: None,
                gateway_mac: None,
                mtu: 0,
            }],
            backends: Vec::new(),
            vips: Vec::new(),
            maglev_size: 0,
        };
        Self {
            name: name.to_string(),
            port,
            mac,
            listen: Listen::Accept,
            log: HostLog::default(),
            stack: Worker::new(WorkerConfig::default()),
            stack_shared: Shared::new(TokenTableConfig {
                capacity: 16,
                shards: 1,
            }),
            stack_pool: PoolSnapshot::build(spec).unwrap_or_else(|e| panic!("host {name}: {e}")),
        }
    }

    /// Its answer to a frame on its wire, if any.
    fn receive(&mut self, frame: &[u8], now: Ticks) -> Option<Vec<u8>> {
        let dst = frame.get(..6)?;
        if dst != self.mac && dst[0] & 1 == 0 {
            return None; // unicast to someone else
        }
        let mut f = VecFrame::new(frame);
        match process(
            &mut f,
            PortId(0),
            now,
            &mut self.stack,
            &self.stack_shared,
            &self.stack_pool,
        ) {
            Verdict::Reply { .. } => {
                self.log.neighbour_answers += 1;
                Some(f.data().to_vec())
            }
            Verdict::Punt => self.tcp(frame),
            _ => None,
        }
    }

    /// The stand-in for its TCP: SYN -> SYN/ACK, RST or nothing; RSTs are counted.
    fn tcp(&mut self, frame: &[u8]) -> Option<Vec<u8>> {
        let (src_mac, src, dst, seg) = tcp_segment(frame)?;
        let t = tcp::Packet::new_checked(seg).ok()?;
        let f = t.flags();
        if f.contains(TcpFlags::RST) {
            self.log.resets += 1;
            return None;
        }
        if !f.contains(TcpFlags::SYN) || f.contains(TcpFlags::ACK) {
            return None;
        }
        self.log.syns.push((src, t.src_port()));
        let flags = match self.listen {
            Listen::Accept => TcpFlags::SYN.0 | TcpFlags::ACK.0,
            Listen::Refuse => TcpFlags::RST.0 | TcpFlags::ACK.0,
            Listen::Silent => return None,
        };
        let answer = TcpSpec {
            src_mac: self.mac,
            dst_mac: src_mac,
            vlan: None,
            src: dst,
            dst: src,
            src_port: t.dst_port(),
            dst_port: t.src_port(),
            flags,
            seq: if self.listen == Listen::Accept {
                0x5eed_0000
            } else {
                0
            },
            ack: t.seq_number().wrapping_add(1),
            options: Vec::new(),
            payload: Vec::new(),
            ttl: 64,
        };
        Some(answer.build())
    }
}

/// The dataplane stand-in (see the module documentation). Clones share one wire: the control
/// thread owns one, the test drives the hosts and clients through another.
#[derive(Debug, Clone)]
pub struct Net {
    wire: Arc<Mutex<Wire>>,
}

/// The state behind [`Net`].
#[derive(Debug)]
pub struct Wire {
    published: Arc<Published>,
    shared: Arc<Shared>,
    workers: Vec<(Worker, Reader, WorkerIo)>,
    started: Instant,
    /// The hosts, on whichever port.
    pub hosts: Vec<Host>,
    /// Frames the gateway sent out of a port where no host answers (to the clients).
    pub to_clients: Vec<(PortId, Vec<u8>)>,
    punted: VecDeque<(PortId, Vec<u8>)>,
    /// Punted frames dropped because the control thread's queue was full.
    pub punt_full: u64,
    ports: Vec<PortCounters>,
}

#[derive(Debug, Default, Clone, Copy)]
struct WorkerIo {
    rx: u64,
    tx: u64,
}

enum Hop {
    /// A frame arriving at the gateway on a port.
    In(PortId, Vec<u8>),
    /// A frame the gateway sends on a port.
    Out(PortId, Vec<u8>),
}

impl Net {
    /// The gateway of `cfg` (its ports' MACs set), with `cfg.workers.count` workers reading
    /// `published` and sharing `shared`, and one host per backend of the pool, on the backend's
    /// egress port, MAC `02:00:00:be:00:<id + 1>`.
    pub fn new(cfg: &GatewayConfig, published: Arc<Published>, shared: Arc<Shared>) -> Self {
        let n = cfg.workers.count.max(1);
        let workers = (0..n)
            .map(|id| {
                (
                    Worker::new(cfg.worker_config(id)),
                    Reader::new(&published),
                    WorkerIo::default(),
                )
            })
            .collect();
        let hosts = cfg
            .pool
            .backends
            .iter()
            .flatten()
            .map(|b| {
                let [hi, lo] = (b.id.0 + 1).to_be_bytes();
                Host::new(&b.name, b.egress, [2, 0, 0, 0xbe, hi, lo], b.ipv4, b.ipv6)
            })
            .collect();
        Self {
            wire: Arc::new(Mutex::new(Wire {
                published,
                shared,
                workers,
                started: Instant::now(),
                hosts,
                to_clients: Vec::new(),
                punted: VecDeque::new(),
                punt_full: 0,
                ports: vec![PortCounters::default(); cfg.ports.len()],
            })),
        }
    }

    /// Runs `f` on the wire (its hosts, what reached the clients), under its lock.
    pub fn with<T>(&self, f: impl FnOnce(&mut Wire) -> T) -> T {
        f(&mut self.wire.lock())
    }

    /// Attaches a host to the wire (a backend the API is about to add).
    pub fn add_host(&self, host: Host) {
        self.with(|w| w.hosts.push(host));
    }

    /// The host named `name` does `listen` from now on.
    pub fn listen(&self, name: &str, listen: Listen) {
        self.with(|w| {
            if let Some(h) = w.hosts.iter_mut().find(|h| h.name == name) {
                h.listen = listen;
            }
        });
    }

    /// A client's frame arrives on `port`; returns what it caused to reach the clients.
    pub fn client(&self, port: PortId, frame: &[u8]) -> Vec<Vec<u8>> {
        self.with(|w| {
            let before = w.to_clients.len();
            w.run(Hop::In(port, frame.to_vec()));
            w.to_clients
                .drain(before..)
                .map(|(_, f)| f)
                .collect::<Vec<_>>()
        })
    }

    /// A client opens a TCP connection from `client` (port `client_port`) to the VIP `vip`
    /// (`port` faces the clients): the name of the backend host that answered the SYN (with
    /// a SYN/ACK that came back to the client from the VIP), or `None`.
    pub fn connect(
        &self,
        port: PortId,
        client: IpAddr,
        client_port: u16,
        vip: std::net::SocketAddr,
    ) -> Option<String> {
        let gateway_mac = self.with(|w| w.published.load().port(port).map(|p| p.mac))?;
        let syn = TcpSpec {
            src_mac: [2, 0, 0, 0, 0xc1, 1],
            dst_mac: gateway_mac,
            vlan: None,
            src: client,
            dst: vip.ip(),
            src_port: client_port,
            dst_port: vip.port(),
            flags: TcpFlags::SYN.0,
            seq: 1000,
            ack: 0,
            options: Vec::new(),
            payload: Vec::new(),
            ttl: 64,
        }
        .build();
        let back = self.client(port, &syn);
        let answered = back.iter().any(|f| {
            tcp_segment(f).is_some_and(|(_, src, _, seg)| {
                src == vip.ip()
                    && tcp::Packet::new_checked(seg)
                        .is_ok_and(|t| t.src_port() == vip.port() && t.syn() && t.ack())
            })
        });
        if !answered {
            return None;
        }
        self.with(|w| {
            w.hosts
                .iter()
                .find(|h| h.log.syns.contains(&(client, client_port)))
                .map(|h| h.name.clone())
        })
    }
}

/// The source MAC, the addresses and the TCP segment of an IPv4 or IPv6 TCP frame.
fn tcp_segment(frame: &[u8]) -> Option<(Mac, IpAddr, IpAddr, &[u8])> {
    let l2 = ethernet::parse_l2(frame).ok()?;
    let body = frame.get(l2.header_len..)?;
    match l2.ethertype {
        EtherType::IPV4 => {
            let p = ipv4::Packet::new_checked(body).ok()?;
            (p.next_header() == IpProtocol::TCP).then_some(())?;
            let seg = body.get(p.header_len()..usize::from(p.total_len()))?;
            Some((l2.src.0, p.src_addr().into(), p.dst_addr().into(), seg))
        }
        EtherType::IPV6 => {
            let p = ipv6::Packet::new_checked(body).ok()?;
            (p.next_header() == IpProtocol::TCP).then_some(())?;
            let end = ipv6::HEADER_LEN + usize::from(p.payload_len());
            let seg = body.get(ipv6::HEADER_LEN..end)?;
            Some((l2.src.0, p.src_addr().into(), p.dst_addr().into(), seg))
        }
        _ => None,
    }
}

impl Wire {
    fn now(&self) -> Ticks {
        // Nanoseconds, from 1 s (the clock the core's tests use) on.
        let elapsed = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        Ticks(Ticks::from_secs(1).0.saturating_add(elapsed))
    }

    /// Delivers `first` and everything it causes.
    fn run(&mut self, first: Hop) {
        let mut queue = VecDeque::from([first]);
        let mut steps = 0;
        while let Some(hop) = queue.pop_front() {
            steps += 1;
            assert!(
                steps < MAX_STEPS,
                "frames loop between the hosts and the gateway"
            );
            match hop {
                Hop::In(port, frame) => {
                    if let Some(out) = self.gateway(port, frame) {
                        queue.push_back(out);
                    }
                }
                Hop::Out(port, frame) => {
                    if let Some(c) = self.ports.get_mut(port.0 as usize) {
                        c.tx += 1;
                    }
                    let now = self.now();
                    let mut answered = false;
                    for h in self.hosts.iter_mut().filter(|h| h.port == port) {
                        if frame.get(..6) == Some(&h.mac[..]) {
                            answered = true;
                        }
                        if let Some(a) = h.receive(&frame, now) {
                            queue.push_back(Hop::In(port, a));
                        }
                    }
                    if !answered && frame.first().is_some_and(|b| b & 1 == 0) {
                        self.to_clients.push((port, frame));
                    }
                }
            }
        }
    }

    /// The gateway's workers decide a frame received on `port` (worker 0 first, then the
    /// owner on a handoff, as RSS and the inboxes would have it).
    fn gateway(&mut self, port: PortId, frame: Vec<u8>) -> Option<Hop> {
        if let Some(c) = self.ports.get_mut(port.0 as usize) {
            c.rx += 1;
        }
        let now = self.now();
        let mut f = VecFrame::new(&frame);
        let mut w = 0usize;
        self.workers[0].2.rx += 1;
        for _ in 0..self.workers.len() + 1 {
            let (worker, reader, io) = &mut self.workers[w];
            reader.refresh(&self.published);
            let v = process(&mut f, port, now, worker, &self.shared, &reader.pool);
            let out = |port: PortId| Some(Hop::Out(port, f.data().to_vec()));
            return match v {
                Verdict::Handoff { worker } => {
                    w = worker as usize;
                    continue;
                }
                Verdict::Forward { port } => {
                    io.tx += 1;
                    if let Some(c) = self.ports.get_mut(port.0 as usize) {
                        c.forwarded += 1;
                    }
                    out(port)
                }
                Verdict::Reply { port } => {
                    io.tx += 1;
                    if let Some(c) = self.ports.get_mut(port.0 as usize) {
                        c.replies += 1;
                    }
                    out(port)
                }
                Verdict::Punt => {
                    if self.punted.len() < PUNT_QUEUE {
                        self.punted.push_back((port, f.data().to_vec()));
                    } else {
                        self.punt_full += 1;
                    }
                    None
                }
                Verdict::Drop(_) => None,
            };
        }
        panic!("handoff loop");
    }
}

impl Dataplane for Net {
    fn send(&mut self, port: PortId, frame: &[u8]) -> bool {
        let mut w = self.wire.lock();
        let Some(c) = w.ports.get_mut(port.0 as usize) else {
            return false;
        };
        c.control += 1;
        w.run(Hop::Out(port, frame.to_vec()));
        true
    }

    fn punted(&mut self, budget: usize, f: &mut dyn FnMut(PortId, &[u8])) -> usize {
        let mut w = self.wire.lock();
        let mut n = 0;
        while n < budget {
            let Some((port, frame)) = w.punted.pop_front() else {
                break;
            };
            f(port, &frame);
            n += 1;
        }
        n
    }

    fn counters(&self) -> Counters {
        let w = self.wire.lock();
        Counters {
            workers: w
                .workers
                .iter()
                .map(|(worker, _, io)| WorkerSample {
                    rx: io.rx,
                    tx: io.tx,
                    flows: worker.flows.len() as u64,
                    flow_capacity: worker.flows.capacity() as u64,
                    stats: worker.stats.clone(),
                })
                .collect(),
            ports: w.ports.clone(),
        }
    }
}
