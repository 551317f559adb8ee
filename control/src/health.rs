//! Active health checks: a TCP SYN probe to each backend's service port, sent from the gateway's
//! own address on the backend's egress port through the dataplane (the gateway has no kernel
//! address on its DPDK ports). A SYN/ACK is a success (the gateway then resets the half-open
//! connection); a RST, or no answer within the timeout, is a failure. `fall` failures in a row
//! mark a backend down, `rise` successes in a row bring it back (hysteresis: a flapping backend
//! does not rebuild the tables on every probe).
//!
//! A backend that is down takes no new connections and no joins (its existing flows continue;
//! they end or time out). The pipeline punts the answers, which are addressed to the gateway.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use trapeze_core::flow::addr_bytes;
use trapeze_core::pool::{BackendId, Mac, PoolSpec, PortId};
use trapeze_wire::ethernet::{self, EtherType, MacAddr, VlanTci};
use trapeze_wire::ip::IpProtocol;
use trapeze_wire::tcp::{self, TcpFlags};
use trapeze_wire::{ipv4, ipv6};

use crate::dataplane::PortAddrs;

/// Probe timing and thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthConfig {
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(500),
            timeout: Duration::from_millis(400),
            rise: 2,
            fall: 3,
        }
    }
}

/// Source ports of probes: one per backend id, from this base (above Linux's ephemeral range).
const PROBE_PORT_BASE: u16 = 61_000;
const PROBE_PORTS: u16 = 4_000;

/// An answer to a probe, read from a punted frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeReply {
    pub backend: BackendId,
    pub ok: bool,
    /// For a SYN/ACK: the sequence number the reset must carry (its acknowledgement number).
    pub ack: u32,
}

/// Reads a probe answer from a frame the pipeline punted (TCP from a backend to one of the
/// gateway's probe ports).
pub fn reply(frame: &[u8]) -> Option<(IpAddr, u16, u16, ProbeReply)> {
    let l2 = ethernet::parse_l2(frame).ok()?;
    let body = frame.get(l2.header_len..)?;
    let (src, seg) = match l2.ethertype {
        EtherType::IPV4 => {
            let p = ipv4::Packet::new_checked(body).ok()?;
            if p.next_header() != IpProtocol::TCP {
                return None;
            }
            (
                IpAddr::V4(p.src_addr()),
                &body[p.header_len()..usize::from(p.total_len())],
            )
        }
        EtherType::IPV6 => {
            let p = ipv6::Packet::new_checked(body).ok()?;
            if p.next_header() != IpProtocol::TCP {
                return None;
            }
            let n = usize::from(p.payload_len());
            (
                IpAddr::V6(p.src_addr()),
                body.get(ipv6::HEADER_LEN..ipv6::HEADER_LEN + n)?,
            )
        }
        _ => return None,
    };
    let t = tcp::Packet::new_checked(seg).ok()?;
    let dport = t.dst_port();
    if !(PROBE_PORT_BASE..PROBE_PORT_BASE + PROBE_PORTS).contains(&dport) {
        return None;
    }
    let backend = BackendId(dport - PROBE_PORT_BASE);
    let f = t.flags();
    let ok = f.contains(TcpFlags::SYN) && f.contains(TcpFlags::ACK);
    if !ok && !f.contains(TcpFlags::RST) {
        return None;
    }
    Some((
        src,
        t.src_port(),
        dport,
        ProbeReply {
            backend,
            ok,
            ack: t.ack_number(),
        },
    ))
}

#[derive(Debug, Clone)]
struct Target {
    id: BackendId,
    port: PortId,
    addr: IpAddr,
    service: u16,
    up: bool,
    successes: u32,
    failures: u32,
    sent_at: Option<Instant>,
    seq: u32,
}

/// A change of a backend's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub backend: BackendId,
    pub up: bool,
}

/// Probes every backend and keeps its health.
#[derive(Debug)]
pub struct HealthChecker {
    cfg: HealthConfig,
    targets: Vec<Target>,
    last_round: Option<Instant>,
}

impl HealthChecker {
    /// Every backend of the pool, initially healthy (a backend proves itself sick, so that a
    /// gateway starting up does not refuse everything until the first probes return).
    pub fn new(cfg: HealthConfig, pool: &PoolSpec) -> Self {
        let mut h = Self {
            cfg,
            targets: Vec::new(),
            last_round: None,
        };
        h.sync(pool);
        h
    }

    /// Follows pool changes: new backends are probed, removed ones forgotten.
    pub fn sync(&mut self, pool: &PoolSpec) {
        self.targets.retain(|t| {
            pool.backends
                .get(t.id.0 as usize)
                .is_some_and(Option::is_some)
        });
        for b in pool.backends.iter().flatten() {
            if b.id.0 >= PROBE_PORTS || self.targets.iter().any(|t| t.id == b.id) {
                continue;
            }
            let Some(addr) = b.ipv4.map(IpAddr::V4).or(b.ipv6.map(IpAddr::V6)) else {
                continue;
            };
            self.targets.push(Target {
                id: b.id,
                port: b.egress,
                addr,
                service: b.port,
                up: true,
                successes: 0,
                failures: 0,
                sent_at: None,
                seq: 0x7a70_0000 ^ u32::from(b.id.0),
            });
        }
    }

    /// Records an answer; returns a transition when the backend changes state.
    pub fn answer(&mut self, r: &ProbeReply) -> Option<Transition> {
        let t = self.targets.iter_mut().find(|t| t.id == r.backend)?;
        t.sent_at?;
        t.sent_at = None;
        Self::record(t, r.ok, &self.cfg)
    }

    fn record(t: &mut Target, ok: bool, cfg: &HealthConfig) -> Option<Transition> {
        if ok {
            t.successes += 1;
            t.failures = 0;
        } else {
            t.failures += 1;
            t.successes = 0;
        }
        if t.up && t.failures >= cfg.fall {
            t.up = false;
            return Some(Transition {
                backend: t.id,
                up: false,
            });
        }
        if !t.up && t.successes >= cfg.rise {
            t.up = true;
            return Some(Transition {
                backend: t.id,
                up: true,
            });
        }
        None
    }

    /// Times out unanswered probes and, once per interval, returns the probes to send:
    /// `(port, frame)` for each backend whose next hop MAC is known (`mac_of`).
    pub fn due(
        &mut self,
        now: Instant,
        sources: &[PortAddrs],
        mac_of: impl Fn(BackendId) -> Option<Mac>,
        transitions: &mut Vec<Transition>,
    ) -> Vec<(PortId, Vec<u8>)> {
        let cfg = self.cfg;
        for t in &mut self.targets {
            if t.sent_at
                .is_some_and(|s| now.duration_since(s) > cfg.timeout)
            {
                t.sent_at = None;
                if let Some(x) = Self::record(t, false, &cfg) {
                    transitions.push(x);
                }
            }
        }
        if self
            .last_round
            .is_some_and(|l| now.duration_since(l) < cfg.interval)
        {
            return Vec::new();
        }
        self.last_round = Some(now);
        let mut out = Vec::new();
        for t in &mut self.targets {
            if t.sent_at.is_some() {
                continue;
            }
            let (Some(src), Some(mac)) = (sources.get(t.port.0 as usize), mac_of(t.id)) else {
                continue;
            };
            t.seq = t.seq.wrapping_add(0x1_0000);
            if let Some(f) = segment(
                src,
                mac,
                t.addr,
                PROBE_PORT_BASE + t.id.0,
                t.service,
                t.seq,
                0,
                TcpFlags::SYN,
            ) {
                t.sent_at = Some(now);
                out.push((t.port, f));
            }
        }
        out
    }

    /// The reset that closes the half-open connection a successful probe left on the backend.
    pub fn reset_for(
        &self,
        r: &ProbeReply,
        sources: &[PortAddrs],
        mac_of: impl Fn(BackendId) -> Option<Mac>,
    ) -> Option<(PortId, Vec<u8>)> {
        let t = self.targets.iter().find(|t| t.id == r.backend)?;
        let src = sources.get(t.port.0 as usize)?;
        let f = segment(
            src,
            mac_of(t.id)?,
            t.addr,
            PROBE_PORT_BASE + t.id.0,
            t.service,
            r.ack,
            0,
            TcpFlags::RST,
        )?;
        Some((t.port, f))
    }

    /// Whether a backend is currently considered healthy.
    #[cfg(test)]
    pub fn is_up(&self, id: BackendId) -> bool {
        self.targets
            .iter()
            .find(|t| t.id == id)
            .is_none_or(|t| t.up)
    }
}

/// A bare TCP segment (no options, no payload) from the port's address to `dst`.
#[allow(clippy::too_many_arguments)]
fn segment(
    src: &PortAddrs,
    dst_mac: Mac,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: TcpFlags,
) -> Option<Vec<u8>> {
    let eth = ethernet::Repr {
        src: MacAddr(src.mac),
        dst: MacAddr(dst_mac),
        ethertype: if dst.is_ipv6() {
            EtherType::IPV6
        } else {
            EtherType::IPV4
        },
        vlan: src.vlan.map(|v| VlanTci::from_bits(v & 0x0fff)),
    };
    let l2 = eth.buffer_len();
    let (l3, src_ip) = match dst {
        IpAddr::V4(_) => (ipv4::HEADER_LEN, IpAddr::V4(src.ipv4?)),
        IpAddr::V6(_) => (ipv6::HEADER_LEN, IpAddr::V6(src.ipv6?)),
    };
    let mut f = vec![0u8; l2 + l3 + tcp::HEADER_LEN];
    eth.emit(&mut ethernet::Frame::new_unchecked(&mut f[..]));
    match (src_ip, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => ipv4::Repr {
            src_addr: s,
            dst_addr: d,
            next_header: IpProtocol::TCP,
            payload_len: tcp::HEADER_LEN,
            hop_limit: 64,
            dscp_ecn: 0,
            ident: 0,
            dont_frag: true,
        }
        .emit(&mut ipv4::Packet::new_unchecked(&mut f[l2..l2 + l3])),
        (IpAddr::V6(s), IpAddr::V6(d)) => ipv6::Repr {
            src_addr: s,
            dst_addr: d,
            next_header: IpProtocol::TCP,
            payload_len: tcp::HEADER_LEN,
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0,
        }
        .emit(&mut ipv6::Packet::new_unchecked(&mut f[l2..l2 + l3])),
        _ => return None,
    }
    let mut t = tcp::Packet::new_unchecked(&mut f[l2 + l3..]);
    t.set_src_port(sport);
    t.set_dst_port(dport);
    t.set_seq_number(seq);
    t.set_ack_number(ack);
    t.set_header_len(tcp::HEADER_LEN);
    t.set_flags(flags);
    t.set_window_len(if flags.contains(TcpFlags::RST) {
        0
    } else {
        1024
    });
    t.fill_checksum(&src_ip, &dst);
    let _ = addr_bytes(dst);
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use trapeze_core::testkit::demo_spec;

    fn sources() -> Vec<PortAddrs> {
        crate::dataplane::demo_ports()
    }

    /// The backend's answer to a probe frame: SYN/ACK or RST, as its stack would send.
    fn answer_to(probe: &[u8], flags: TcpFlags) -> Vec<u8> {
        let ip = ipv4::Packet::new_checked(&probe[14..]).unwrap();
        let t = tcp::Packet::new_checked(&probe[34..]).unwrap();
        let src = PortAddrs {
            mac: [2, 0, 0, 0xbe, 0, 0],
            vlan: None,
            ipv4: Some(ip.dst_addr()),
            ipv6: None,
        };
        segment(
            &src,
            [2, 0, 0, 0, 0, 2],
            IpAddr::V4(ip.src_addr()),
            t.dst_port(),
            t.src_port(),
            77,
            t.seq_number().wrapping_add(1),
            flags,
        )
        .unwrap()
    }

    #[test]
    fn probes_fall_and_rise_with_hysteresis() {
        let spec = demo_spec(2);
        let mut h = HealthChecker::new(
            HealthConfig {
                interval: Duration::ZERO,
                ..Default::default()
            },
            &spec,
        );
        let mac = |_| Some([2, 0, 0, 0xbe, 0, 0]);
        let mut tr = Vec::new();
        let t0 = Instant::now();
        // Probes are valid SYNs from the port's address to the service port.
        let probes = h.due(t0, &sources(), mac, &mut tr);
        assert_eq!(probes.len(), 2);
        let ip = ipv4::Packet::new_checked(&probes[0].1[14..]).unwrap();
        assert!(ip.verify_checksum());
        let t = tcp::Packet::new_checked(&probes[0].1[34..]).unwrap();
        assert!(t.syn() && !t.ack());
        assert_eq!(t.dst_port(), 8080);
        assert!(t.verify_checksum(&IpAddr::V4(ip.src_addr()), &IpAddr::V4(ip.dst_addr())));
        // Backend 0 answers SYN/ACK: fine; the reset that closes it carries the ack number.
        let (_, _, _, r) = reply(&answer_to(&probes[0].1, TcpFlags(0x12))).unwrap();
        assert_eq!(
            r,
            ProbeReply {
                backend: BackendId(0),
                ok: true,
                ack: t.seq_number().wrapping_add(1)
            }
        );
        assert_eq!(h.answer(&r), None);
        let (_, rst) = h.reset_for(&r, &sources(), mac).unwrap();
        assert!(tcp::Packet::new_checked(&rst[34..]).unwrap().rst());
        // Backend 1 refuses (RST) three times: down; then two SYN/ACKs: up again.
        let mut probe1 = probes[1].1.clone();
        for round in 0..3 {
            let (_, _, _, r) = reply(&answer_to(&probe1, TcpFlags(0x14))).unwrap();
            assert!(!r.ok);
            let t = h.answer(&r);
            assert_eq!(
                t.is_some(),
                round == 2,
                "down after `fall` failures, not before"
            );
            let p = h.due(t0, &sources(), mac, &mut tr);
            probe1 = p
                .into_iter()
                .find(|(_, f)| {
                    tcp::Packet::new_checked(&f[34..]).unwrap().src_port() == PROBE_PORT_BASE + 1
                })
                .unwrap()
                .1;
        }
        assert!(!h.is_up(BackendId(1)));
        for round in 0..2 {
            let (_, _, _, r) = reply(&answer_to(&probe1, TcpFlags(0x12))).unwrap();
            let t = h.answer(&r);
            assert_eq!(
                t,
                (round == 1).then_some(Transition {
                    backend: BackendId(1),
                    up: true
                })
            );
            let p = h.due(t0, &sources(), mac, &mut tr);
            if let Some(x) = p.into_iter().find(|(_, f)| {
                tcp::Packet::new_checked(&f[34..]).unwrap().src_port() == PROBE_PORT_BASE + 1
            }) {
                probe1 = x.1;
            }
        }
        assert!(h.is_up(BackendId(1)));
    }

    #[test]
    fn silence_counts_as_failure() {
        let spec = demo_spec(1);
        let cfg = HealthConfig {
            interval: Duration::ZERO,
            timeout: Duration::from_millis(10),
            rise: 1,
            fall: 2,
        };
        let mut h = HealthChecker::new(cfg, &spec);
        let mac = |_| Some([2, 0, 0, 0xbe, 0, 0]);
        let mut tr = Vec::new();
        let t0 = Instant::now();
        assert_eq!(h.due(t0, &sources(), mac, &mut tr).len(), 1);
        assert_eq!(
            h.due(t0 + Duration::from_millis(20), &sources(), mac, &mut tr)
                .len(),
            1
        );
        h.due(t0 + Duration::from_millis(40), &sources(), mac, &mut tr);
        assert_eq!(
            tr,
            vec![Transition {
                backend: BackendId(0),
                up: false
            }]
        );
    }
}
