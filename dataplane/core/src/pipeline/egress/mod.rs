//! Egress: the way out of a decided packet. Towards a backend it is rewritten ([`nat`]) or
//! tunnelled ([`dsr`]), depending on the VIP's mode; back towards a client it is rewritten to
//! come from the VIP; an ICMP error about a flow goes to the flow's backend. Each sets the MACs
//! and the egress port's 802.1Q framing, counts the packet, and returns the verdict.
//!
//! **Rewrites** change only addresses, ports, TTL, MACs and the VLAN tag; checksums are updated
//! with one RFC 1624 delta per field. MPTCP options and payload are never touched (the DSS
//! checksum does not cover addresses or ports, and the ADD_ADDR/MP_JOIN HMACs must survive).

pub(crate) mod dsr;
pub(crate) mod nat;

use core::net::Ipv4Addr;

use trapeze_wire::field::{read_u16, write_u16};
use trapeze_wire::{checksum, ipv4};

use self::nat::End;
use crate::flow::addr_bytes;
use crate::pipeline::classify::Quoted;
use crate::pipeline::context::Ctx;
use crate::pipeline::frame::{retag, set_macs, Frame};
use crate::pipeline::parse::Ip;
use crate::pipeline::verdict::{DropReason, Event, Verdict};
use crate::pool::{BackendId, Mac, PortId, VipId};

/// Rewrites (NAT) or encapsulates (DSR) towards the backend and picks the egress. `hash` is
/// the flow's hash (DSR derives its outer source and UDP port from it).
#[inline]
pub(crate) fn to_backend<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &mut F,
    ip: &Ip,
    backend_id: BackendId,
    vip_id: VipId,
    hash: u64,
) -> Verdict {
    if let Some(d) = cx.pool.vip(vip_id).and_then(|v| v.mode.dsr()) {
        let d = *d;
        return dsr::encapsulate(cx, frame, ip, backend_id, vip_id, &d, hash);
    }
    let Some(b) = cx.pool.fwd(backend_id) else {
        return Verdict::Drop(DropReason::BackendGone);
    };
    let Some(addr) = b.addr(ip.v6) else {
        return Verdict::Drop(DropReason::BackendGone);
    };
    let Some(mac) = b.mac else {
        return Verdict::Drop(DropReason::NoNeighbour);
    };
    let buf = frame.data_mut();
    nat::nat_tcp(buf, ip, End::Dst, addr, b.port);
    set_macs(buf, &b.egress_mac, &mac);
    if !retag(frame, cx.l2_len, b.egress_vlan) {
        return Verdict::Drop(DropReason::NoRoom);
    }
    cx.w.stats
        .count_to_backend(vip_id, backend_id, ip.len() as u64);
    Verdict::Forward { port: b.egress }
}

/// Where a packet back to a client leaves: the client's port and next hop, from the flow entry,
/// or the port's configured gateway for a packet without state.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientSide {
    pub(crate) port: PortId,
    pub(crate) mac: Mac,
}

/// The NAT return path: the backend's packet is rewritten to come from the VIP endpoint
/// (`vip_addr`, `vip_port`) and leaves towards the client.
pub(crate) fn to_client<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &mut F,
    ip: &Ip,
    vip_id: VipId,
    vip_addr: &[u8; 16],
    vip_port: u16,
    to: ClientSide,
) -> Verdict {
    let Some(port) = cx.pool.port(to.port) else {
        return Verdict::Drop(DropReason::NoNeighbour);
    };
    let buf = frame.data_mut();
    nat::nat_tcp(buf, ip, End::Src, vip_addr, vip_port);
    set_macs(buf, &port.mac, &to.mac);
    if !retag(frame, cx.l2_len, port.vlan) {
        return Verdict::Drop(DropReason::NoRoom);
    }
    if let Some(c) = cx.w.stats.vips.get_mut(vip_id.0 as usize) {
        c.to_client_packets += 1;
        c.to_client_bytes += ip.len() as u64;
    }
    Verdict::Forward { port: to.port }
}

/// Delivers an ICMP error about one of our flows to that flow's backend (catalogue I1).
///
/// The error is addressed to the VIP: the packet it quotes is one the gateway sent to the client
/// (source VIP). In NAT mode it goes to the backend with the outer destination and the quoted
/// source rewritten to the backend, so the backend's stack matches it to its socket (RFC 5927:
/// the quote must match a live connection there). For a DSR VIP the backend holds the VIP
/// itself: the error goes to it unchanged, in the VIP's tunnel (never a reply to an error: one
/// too big for the tunnel is dropped). ICMP never creates flow state.
pub(crate) fn icmp_error<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &mut F,
    ip: &Ip,
    q: &Quoted,
    backend_id: BackendId,
    vip_id: VipId,
) -> Verdict {
    if let Some(d) = cx.pool.vip(vip_id).and_then(|v| v.mode.dsr()) {
        let d = *d;
        if ip.ttl <= 1 {
            return Verdict::Drop(DropReason::TtlExpired);
        }
        let v = dsr::encapsulate(cx, frame, ip, backend_id, vip_id, &d, q.hash);
        if matches!(v, Verdict::Forward { .. }) {
            cx.w.stats.event(Event::IcmpForwarded);
        }
        return v;
    }
    let Some(b) = cx.pool.backend(backend_id) else {
        return Verdict::Drop(DropReason::BackendGone);
    };
    let Some(addr) = b.addr(ip.v6) else {
        return Verdict::Drop(DropReason::BackendGone);
    };
    let (Some(mac), Some(port)) = (b.mac, cx.pool.port(b.egress)) else {
        return Verdict::Drop(DropReason::NoNeighbour);
    };
    if ip.ttl <= 1 {
        // Never an error about an error.
        return Verdict::Drop(DropReason::TtlExpired);
    }
    let baddr = addr_bytes(addr);
    let buf = frame.data_mut();
    // The quoted header: source address and port become the backend's.
    let (q_l3, q_l4) = (q.l3, q.l4);
    if ip.v6 {
        buf[q_l3 + 8..q_l3 + 24].copy_from_slice(&baddr);
    } else {
        let old = [
            buf[q_l3 + 12],
            buf[q_l3 + 13],
            buf[q_l3 + 14],
            buf[q_l3 + 15],
        ];
        let c = checksum::update_bytes(read_u16(buf, q_l3 + 10), &old, &baddr[12..]);
        write_u16(buf, q_l3 + 10, c);
        buf[q_l3 + 12..q_l3 + 16].copy_from_slice(&baddr[12..]);
    }
    write_u16(buf, q_l4, b.port);
    // The outer header: destination becomes the backend, TTL decremented.
    if ip.v6 {
        buf[ip.l3 + 24..ip.l3 + 40].copy_from_slice(&baddr);
        buf[ip.l3 + 7] -= 1;
    } else {
        let mut pkt = ipv4::Packet::new_unchecked(&mut buf[ip.l3..ip.l4]);
        pkt.set_dst_addr(Ipv4Addr::new(baddr[12], baddr[13], baddr[14], baddr[15]));
        pkt.set_hop_limit(ip.ttl - 1);
        pkt.fill_checksum();
    }
    // The ICMP checksum covers the quote (and, for ICMPv6, the pseudo-header): recompute it.
    let (l4, end) = (ip.l4, ip.end);
    write_u16(buf, l4 + 2, 0);
    let mut sum = checksum::data(&buf[l4..end]);
    if ip.v6 {
        let src: [u8; 16] = buf[ip.l3 + 8..ip.l3 + 24].try_into().unwrap_or_default();
        sum = checksum::combine(&[
            sum,
            checksum::pseudo_header_v6(&src, &baddr, 58, (end - l4) as u32),
        ]);
    }
    write_u16(buf, l4 + 2, checksum::finish(sum));
    set_macs(buf, &port.mac, &mac);
    if !retag(frame, cx.l2_len, port.vlan) {
        return Verdict::Drop(DropReason::NoRoom);
    }
    cx.w.stats.event(Event::IcmpForwarded);
    Verdict::Forward { port: b.egress }
}
