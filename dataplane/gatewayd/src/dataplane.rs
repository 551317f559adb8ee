//! The control plane's [`Dataplane`] over DPDK: frames to send become mbufs that worker 0
//! transmits, punted mbufs come from the workers' punt queue, counters from the stats board and
//! the devices.

use crossbeam_queue::ArrayQueue;
use trapeze_control::api::{DeviceStatsView, WorkerSample};
use trapeze_control::dataplane::{Counters, Dataplane, PortCounters};
use trapeze_core::pool::PortId;
use trapeze_dpdk::{Mbuf, Mempool, Port};

use crate::worker::{IoStats, StatsBoard};

/// The workers' side of the control thread.
pub(crate) struct DpdkDataplane<'a, 'e> {
    pub(crate) mempool: &'a Mempool<'e>,
    pub(crate) ports: &'a [Port<'e>],
    /// Frames to send, drained by worker 0.
    pub(crate) control_tx: &'a ArrayQueue<(PortId, Mbuf<'e>)>,
    /// Frames the pipeline punted, pushed by the workers.
    pub(crate) punted: &'a ArrayQueue<(PortId, Mbuf<'e>)>,
    pub(crate) board: &'a StatsBoard,
}

impl std::fmt::Debug for DpdkDataplane<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpdkDataplane")
            .field("ports", &self.ports.len())
            .field("control_tx", &self.control_tx.len())
            .field("punted", &self.punted.len())
            .finish()
    }
}

impl Dataplane for DpdkDataplane<'_, '_> {
    fn send(&mut self, port: PortId, frame: &[u8]) -> bool {
        let Some(mut m) = self.mempool.alloc() else {
            return false;
        };
        if !m.set_len(frame.len()) {
            return false; // larger than an mbuf: freed here
        }
        m.data_mut().copy_from_slice(frame);
        self.control_tx.push((port, m)).is_ok()
    }

    fn punted(&mut self, budget: usize, f: &mut dyn FnMut(PortId, &[u8])) -> usize {
        let mut n = 0;
        while n < budget {
            let Some((port, m)) = self.punted.pop() else {
                break;
            };
            f(port, m.data());
            n += 1; // the mbuf goes back to the pool here, on the control thread
        }
        n
    }

    fn counters(&self) -> Counters {
        let mut io = IoStats::new(self.ports.len());
        let workers = self
            .board
            .slots
            .iter()
            .map(|s| {
                let r = s.lock();
                io.add(&r.io);
                WorkerSample {
                    rx: r.io.rx,
                    tx: r.io.tx,
                    flows: r.flows as u64,
                    flow_capacity: r.flow_capacity as u64,
                    stats: r.stats.clone(),
                }
            })
            .collect();
        let ports = self
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let c = io.ports.get(i).copied().unwrap_or_default();
                PortCounters {
                    rx: c.rx,
                    tx: c.tx,
                    tx_unsent: c.tx_unsent,
                    forwarded: c.forwarded,
                    replies: c.replies,
                    control: c.control,
                    device: p.stats().ok().map(|d| DeviceStatsView {
                        rx_packets: d.ipackets,
                        tx_packets: d.opackets,
                        rx_bytes: d.ibytes,
                        tx_bytes: d.obytes,
                        rx_missed: d.imissed,
                        rx_errors: d.ierrors,
                        tx_errors: d.oerrors,
                        rx_nombuf: d.rx_nombuf,
                    }),
                }
            })
            .collect();
        Counters { workers, ports }
    }
}
