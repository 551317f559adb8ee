//! Neighbour resolution for the backends: the gateway must know each backend's MAC before it can
//! forward to it. Static MACs come from the configuration; the others are resolved here, by ARP
//! (IPv4) or neighbour solicitation (IPv6), with retries and aging. The pipeline answers requests
//! for the gateway's own addresses and VIPs itself; the replies it punts are learned here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use trapeze_core::pool::{Mac, PoolSpec, PortId};
use trapeze_wire::ethernet::{self, EtherType, MacAddr, VlanTci};
use trapeze_wire::ip::IpProtocol;
use trapeze_wire::{arp, icmpv6, ipv6};

use crate::dataplane::PortAddrs;

/// A neighbour learned from a punted frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Learned {
    pub port: PortId,
    pub addr: IpAddr,
    pub mac: Mac,
}

/// Reads a neighbour from a frame the pipeline punted: an ARP reply, or a neighbour
/// advertisement with a target link-layer address (or its Ethernet source).
pub fn learn(port: PortId, frame: &[u8]) -> Option<Learned> {
    let l2 = ethernet::parse_l2(frame).ok()?;
    let body = frame.get(l2.header_len..)?;
    match l2.ethertype {
        EtherType::ARP => {
            let p = arp::Packet::new_checked(body).ok()?;
            if p.operation() != arp::Operation::Reply {
                return None;
            }
            let a = p.source_protocol_addr();
            Some(Learned {
                port,
                addr: IpAddr::V4(Ipv4Addr::from(a)),
                mac: p.source_hardware_addr().0,
            })
        }
        EtherType::IPV6 => {
            let ip = ipv6::Packet::new_checked(body).ok()?;
            if ip.next_header() != IpProtocol::ICMPV6 || ip.hop_limit() != 255 {
                return None;
            }
            let m = icmpv6::Packet::new_checked(ip.payload()).ok()?;
            if m.msg_type() != icmpv6::Message::NEIGHBOR_ADVERT {
                return None;
            }
            let mac = m
                .ndisc_lladdr(icmpv6::ndisc_option::TARGET_LLADDR)
                .ok()
                .flatten()
                .unwrap_or(l2.src);
            Some(Learned {
                port,
                addr: IpAddr::V6(m.target_addr()),
                mac: mac.0,
            })
        }
        _ => None,
    }
}

/// How often an unresolved neighbour is asked again.
pub const RETRY: Duration = Duration::from_millis(500);
/// How long an answer is trusted before it is refreshed.
pub const REFRESH: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
struct Entry {
    backend: usize,
    port: PortId,
    addr: IpAddr,
    mac: Option<Mac>,
    resolved_at: Option<Instant>,
    last_ask: Option<Instant>,
}

/// The backends to resolve, their state, and the requests to send.
#[derive(Debug)]
pub struct Resolver {
    entries: Vec<Entry>,
}

impl Resolver {
    /// Every backend without a static MAC, by its IPv4 address if it has one, else IPv6 (one
    /// host, one MAC: either answer serves both families). `next_hop(port, addr)` names the
    /// neighbour to ask: the backend itself when on-link, else the port's gateway (backends
    /// behind one router then share its answer).
    pub fn new(pool: &PoolSpec, next_hop: impl Fn(PortId, IpAddr) -> Option<IpAddr>) -> Self {
        let mut r = Self {
            entries: Vec::new(),
        };
        r.sync(pool, next_hop);
        r
    }

    /// Follows pool changes: backends added without a static MAC are resolved, removed ones are
    /// forgotten; resolved entries keep their MAC (so does a backend whose record was replaced
    /// by a reload).
    pub fn sync(&mut self, pool: &PoolSpec, next_hop: impl Fn(PortId, IpAddr) -> Option<IpAddr>) {
        self.entries.retain(|e| {
            pool.backends
                .get(e.backend)
                .and_then(Option::as_ref)
                .is_some_and(|b| b.egress == e.port)
        });
        for (i, b) in pool.backends.iter().enumerate() {
            let Some(b) = b else { continue };
            if b.mac.is_some() || self.entries.iter().any(|e| e.backend == i) {
                continue;
            }
            let Some(target) = b.ipv4.map(IpAddr::V4).or(b.ipv6.map(IpAddr::V6)) else {
                continue;
            };
            let Some(addr) = next_hop(b.egress, target) else {
                continue;
            };
            // A next hop another entry already resolved serves this backend too.
            let known = self
                .entries
                .iter()
                .find(|e| e.addr == addr && e.port == b.egress && e.mac.is_some())
                .map(|e| (e.mac, e.resolved_at));
            self.entries.push(Entry {
                backend: i,
                port: b.egress,
                addr,
                mac: known.and_then(|k| k.0),
                resolved_at: known.and_then(|k| k.1),
                last_ask: None,
            });
        }
    }

    /// Whether `pool` lacks a MAC this resolver knows (a backend added behind a resolved next
    /// hop, or replaced by a reload).
    pub fn needs_apply(&self, pool: &PoolSpec) -> bool {
        self.entries.iter().any(|e| {
            e.mac.is_some()
                && pool
                    .backends
                    .get(e.backend)
                    .and_then(Option::as_ref)
                    .is_some_and(|b| b.mac != e.mac)
        })
    }

    /// Records a learned neighbour; returns true when a backend's MAC changed.
    pub fn learned(&mut self, l: &Learned, now: Instant) -> bool {
        let mut changed = false;
        for e in self
            .entries
            .iter_mut()
            .filter(|e| e.addr == l.addr && e.port == l.port)
        {
            if e.mac != Some(l.mac) {
                changed = true;
            }
            e.mac = Some(l.mac);
            e.resolved_at = Some(now);
        }
        changed
    }

    /// Writes the resolved MACs into the pool spec.
    pub fn apply(&self, pool: &mut PoolSpec) {
        for e in &self.entries {
            if let Some(Some(b)) = pool.backends.get_mut(e.backend) {
                b.mac = e.mac;
            }
        }
    }

    /// Whether every backend is resolved.
    pub fn all_resolved(&self) -> bool {
        self.entries.iter().all(|e| e.mac.is_some())
    }

    /// The requests due at `now`: unresolved entries every [`RETRY`], resolved ones when their
    /// answer is older than [`REFRESH`] (the old MAC keeps serving meanwhile).
    pub fn due(&mut self, now: Instant, ports: &[PortAddrs]) -> Vec<(PortId, Vec<u8>)> {
        let mut out = Vec::new();
        for e in &mut self.entries {
            let stale = e
                .resolved_at
                .is_none_or(|t| now.duration_since(t) > REFRESH);
            let asked_recently = e.last_ask.is_some_and(|t| now.duration_since(t) < RETRY);
            if !stale || asked_recently {
                continue;
            }
            let Some(p) = ports.get(e.port.0 as usize) else {
                continue;
            };
            let frame = match e.addr {
                IpAddr::V4(a) => p.ipv4.map(|src| arp_request(p, src, a)),
                IpAddr::V6(a) => p.ipv6.map(|src| neighbour_solicitation(p, src, a)),
            };
            if let Some(f) = frame {
                e.last_ask = Some(now);
                out.push((e.port, f));
            }
        }
        out
    }
}

fn eth(p: &PortAddrs, dst: Mac, ethertype: EtherType, payload_len: usize) -> (Vec<u8>, usize) {
    let repr = ethernet::Repr {
        src: MacAddr(p.mac),
        dst: MacAddr(dst),
        ethertype,
        vlan: p.vlan.map(|vid| VlanTci::from_bits(vid & 0x0fff)),
    };
    let l2 = repr.buffer_len();
    let mut f = vec![0u8; l2 + payload_len];
    repr.emit(&mut ethernet::Frame::new_unchecked(&mut f[..]));
    (f, l2)
}

/// A broadcast ARP request for `target` from the port's address.
fn arp_request(p: &PortAddrs, src: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let (mut f, l2) = eth(p, [0xff; 6], EtherType::ARP, arp::PACKET_LEN);
    arp::Repr {
        operation: arp::Operation::Request,
        source_hardware_addr: MacAddr(p.mac),
        source_protocol_addr: src,
        target_hardware_addr: MacAddr([0; 6]),
        target_protocol_addr: target,
    }
    .emit(&mut arp::Packet::new_unchecked(&mut f[l2..]));
    f
}

/// A neighbour solicitation for `target`, to its solicited-node multicast group (RFC 4861 §7.2.2).
fn neighbour_solicitation(p: &PortAddrs, src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let t = target.octets();
    let group = Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | t[13] as u16,
        u16::from_be_bytes([t[14], t[15]]),
    );
    let dst_mac = [0x33, 0x33, 0xff, t[13], t[14], t[15]];
    let ns = icmpv6::Repr::NeighborSolicit {
        target,
        source_lladdr: Some(MacAddr(p.mac)),
    };
    let len = ns.buffer_len();
    let (mut f, l2) = eth(p, dst_mac, EtherType::IPV6, ipv6::HEADER_LEN + len);
    ipv6::Repr {
        src_addr: src,
        dst_addr: group,
        next_header: IpProtocol::ICMPV6,
        payload_len: len,
        hop_limit: 255,
        traffic_class: 0,
        flow_label: 0,
    }
    .emit(&mut ipv6::Packet::new_unchecked(
        &mut f[l2..l2 + ipv6::HEADER_LEN],
    ));
    ns.emit(
        &mut icmpv6::Packet::new_unchecked(&mut f[l2 + ipv6::HEADER_LEN..]),
        &src,
        &group,
    );
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use trapeze_core::testkit::demo_spec;

    fn ports() -> Vec<PortAddrs> {
        crate::dataplane::demo_ports()
    }

    #[test]
    fn unresolved_backends_are_asked_with_retries_and_learned_from_replies() {
        let mut spec = demo_spec(2);
        for b in spec.backends.iter_mut().flatten() {
            b.mac = None;
        }
        let mut r = Resolver::new(&spec, |_, a| Some(a));
        let t0 = Instant::now();
        let reqs = r.due(t0, &ports());
        assert_eq!(reqs.len(), 2);
        // A valid ARP request, broadcast, from the port's address.
        let (port, f) = &reqs[0];
        assert_eq!(*port, PortId(1));
        assert_eq!(&f[0..6], &[0xff; 6]);
        let a = arp::Packet::new_checked(&f[14..]).unwrap();
        assert_eq!(a.operation(), arp::Operation::Request);
        assert_eq!(a.source_protocol_addr(), [10, 1, 0, 1]);
        // Not asked again before the retry interval.
        assert!(r.due(t0 + Duration::from_millis(100), &ports()).is_empty());
        assert_eq!(r.due(t0 + Duration::from_millis(600), &ports()).len(), 2);
        // The reply: turn the request into one, as the backend would, and learn it.
        let mut reply = f.clone();
        let mut p = arp::Packet::new_checked(&mut reply[14..]).unwrap();
        let target = p.target_protocol_addr();
        p.set_operation(arp::Operation::Reply);
        p.set_source_protocol_addr(target);
        p.set_source_hardware_addr(MacAddr([2, 0, 0, 0xbe, 0, 0]));
        let l = learn(PortId(1), &reply).unwrap();
        assert!(r.learned(&l, t0));
        assert!(!r.all_resolved());
        r.apply(&mut spec);
        assert_eq!(
            spec.backends[0].as_ref().unwrap().mac,
            Some([2, 0, 0, 0xbe, 0, 0])
        );
    }

    #[test]
    fn backends_behind_a_router_resolve_the_router() {
        let mut spec = demo_spec(3);
        for b in spec.backends.iter_mut().flatten() {
            b.mac = None;
        }
        let router = IpAddr::V4(Ipv4Addr::new(10, 1, 0, 254));
        let mut r = Resolver::new(&spec, |_, _| Some(router));
        let reqs = r.due(Instant::now(), &ports());
        assert_eq!(reqs.len(), 3);
        let a = arp::Packet::new_checked(&reqs[0].1[14..]).unwrap();
        assert_eq!(a.target_protocol_addr(), [10, 1, 0, 254]);
        let l = Learned {
            port: PortId(1),
            addr: router,
            mac: [2, 0, 0, 0, 0, 0xfe],
        };
        assert!(r.learned(&l, Instant::now()));
        assert!(
            r.all_resolved(),
            "one answer serves every backend behind the router"
        );
    }

    #[test]
    fn neighbour_solicitation_is_well_formed() {
        let p = &ports()[1];
        let target: Ipv6Addr = "fd00:1::a".parse().unwrap();
        let f = neighbour_solicitation(p, p.ipv6.unwrap(), target);
        assert_eq!(&f[0..6], &[0x33, 0x33, 0xff, 0, 0, 0x0a]);
        let ip = ipv6::Packet::new_checked(&f[14..]).unwrap();
        assert_eq!(ip.hop_limit(), 255);
        let m = icmpv6::Packet::new_checked(ip.payload()).unwrap();
        assert!(m.verify_checksum(&ip.src_addr(), &ip.dst_addr()));
        assert_eq!(m.target_addr(), target);
    }
}
