//! What the control plane needs from the dataplane, and nothing more: a [`Dataplane`] sends the
//! frames the control thread builds (ARP/NDP requests, health probes), hands it the frames the
//! pipeline punted (answers addressed to the gateway itself), and reads the counters.
//!
//! The daemon implements it over DPDK (`trapeze-gatewayd`: mbufs, the workers' queues and stats
//! board, the ports' device counters); the tests implement it over the core's pipeline with
//! simulated hosts on the wire ([`crate::testkit`]). Everything above the trait (pool changes,
//! health checks, neighbour resolution, the API's answers) is the same code in both.

use trapeze_core::pool::{Mac, PortId};

use crate::api::{DeviceStatsView, WorkerSample};
use crate::config::GatewayConfig;

/// The dataplane as the control thread sees it. Every method returns promptly (no method may
/// wait for a worker), so the control thread never blocks on the dataplane.
pub trait Dataplane {
    /// Queues `frame` (a complete Ethernet frame) for transmission on `port`. Returns false
    /// when it could not be queued (no buffer, queue full, unknown port): the frame is lost,
    /// and the caller retries at its next round as it would after a lost frame on the wire.
    fn send(&mut self, port: PortId, frame: &[u8]) -> bool;

    /// Hands at most `budget` of the frames the pipeline punted (`Verdict::Punt`) since the
    /// last call to `f`, with their ingress port, oldest first; returns how many. A bounded
    /// budget keeps a flood of punted frames from holding the control thread.
    fn punted(&mut self, budget: usize, f: &mut dyn FnMut(PortId, &[u8])) -> usize;

    /// The counters: one sample per worker (in worker order) and per port (in port order).
    fn counters(&self) -> Counters;
}

/// The dataplane's counters, read for the API and the metrics.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// One per worker.
    pub workers: Vec<WorkerSample>,
    /// One per port.
    pub ports: Vec<PortCounters>,
}

/// One port's counters: what the workers counted for it, summed, and the device's own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortCounters {
    /// Frames received.
    pub rx: u64,
    /// Frames the device took.
    pub tx: u64,
    /// Frames the device did not take (freed).
    pub tx_unsent: u64,
    /// Staged for transmission: forwarded by the pipeline.
    pub forwarded: u64,
    /// Staged: replies the pipeline made (ARP/NDP/ICMP, ADD_ADDR announcements).
    pub replies: u64,
    /// Staged: frames the control thread sent ([`Dataplane::send`]).
    pub control: u64,
    /// The device's own statistics, when it has them.
    pub device: Option<DeviceStatsView>,
}

/// The gateway's side of a port, as the frames the control thread sends carry it: source MAC,
/// VLAN tag, and the port's first address of each family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortAddrs {
    /// The port's MAC.
    pub mac: Mac,
    /// 802.1Q VID to tag with.
    pub vlan: Option<u16>,
    /// Source address of IPv4 frames.
    pub ipv4: Option<std::net::Ipv4Addr>,
    /// Source address of IPv6 frames.
    pub ipv6: Option<std::net::Ipv6Addr>,
}

impl PortAddrs {
    /// Every port of `cfg`, in port order, with the MACs its pool carries (the devices' MACs once
    /// the runtime has set them).
    pub fn of(cfg: &GatewayConfig) -> Vec<Self> {
        cfg.ports
            .iter()
            .map(|p| Self {
                mac: cfg
                    .pool
                    .ports
                    .get(p.id.0 as usize)
                    .map_or([0; 6], |q| q.mac),
                vlan: p.vlan,
                ipv4: p.ipv4.first().map(|a| a.addr),
                ipv6: p.ipv6.first().map(|a| a.addr),
            })
            .collect()
    }
}

/// The two ports of the core's demo topology (`trapeze_core::testkit::demo_spec`), for tests.
#[cfg(test)]
pub(crate) fn demo_ports() -> Vec<PortAddrs> {
    use std::net::Ipv4Addr;
    vec![
        PortAddrs {
            mac: [2, 0, 0, 0, 0, 1],
            vlan: None,
            ipv4: Some(Ipv4Addr::new(10, 0, 0, 1)),
            ipv6: None,
        },
        PortAddrs {
            mac: [2, 0, 0, 0, 0, 2],
            vlan: None,
            ipv4: Some(Ipv4Addr::new(10, 1, 0, 1)),
            ipv6: Some(std::net::Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 1)),
        },
    ]
}
