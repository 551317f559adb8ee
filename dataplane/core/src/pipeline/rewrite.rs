//! In-place header rewrites: MACs, NAT of an address and port with incremental checksums
//! (RFC 1624), TTL / hop limit, and the 802.1Q tag on the way out.
//!
//! Offsets come from [`super::ip::Ip`], which the IP stage validated, so every index here is in
//! bounds. MPTCP option bytes are never touched: NAT changes IP addresses and ports only, which
//! the DSS checksum does not cover (RFC 8684 §3.3).

use trapeze_wire::checksum;
use trapeze_wire::field::{read_u16, write_u16};

use super::ip::Ip;
use super::Frame;
use crate::pool::Mac;

/// Sets source and destination MACs.
#[inline]
pub(super) fn set_macs(buf: &mut [u8], src: &Mac, dst: &Mac) {
    buf[0..6].copy_from_slice(dst);
    buf[6..12].copy_from_slice(src);
}

/// Which end of the packet NAT rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// Destination address and port (client -> backend).
    Dst,
    /// Source address and port (backend -> client).
    Src,
}

/// Rewrites one end's address (16-byte key form; IPv4-mapped for IPv4) and TCP port, decrements
/// the TTL / hop limit, and fixes the IPv4 header and TCP checksums incrementally.
#[inline]
pub(super) fn nat_tcp(buf: &mut [u8], ip: &Ip, end: End, addr: &[u8; 16], port: u16) {
    let (l3, l4) = (ip.l3, ip.l4);
    let port_at = l4 + if end == End::Dst { 2 } else { 0 };
    let old_port = read_u16(buf, port_at);
    let mut tcp_csum = read_u16(buf, l4 + 16);
    if ip.v6 {
        let at = l3 + if end == End::Dst { 24 } else { 8 };
        tcp_csum = checksum::update_bytes(tcp_csum, &buf[at..at + 16], addr);
        buf[at..at + 16].copy_from_slice(addr);
        buf[l3 + 7] -= 1; // hop limit: the IP stage checked it is > 1
    } else {
        let at = l3 + if end == End::Dst { 16 } else { 12 };
        let new = &addr[12..16];
        let mut ip_csum = read_u16(buf, l3 + 10);
        ip_csum = checksum::update_bytes(ip_csum, &buf[at..at + 4], new);
        tcp_csum = checksum::update_bytes(tcp_csum, &buf[at..at + 4], new);
        buf[at..at + 4].copy_from_slice(new);
        let old_word = read_u16(buf, l3 + 8);
        buf[l3 + 8] -= 1; // TTL: checked > 1
        ip_csum = checksum::update16(ip_csum, old_word, read_u16(buf, l3 + 8));
        write_u16(buf, l3 + 10, ip_csum);
    }
    if old_port != port {
        tcp_csum = checksum::update16(tcp_csum, old_port, port);
        write_u16(buf, port_at, port);
    }
    write_u16(buf, l4 + 16, tcp_csum);
}

/// Puts the frame's 802.1Q framing in line with the egress port: sets the VID when both sides
/// are tagged, inserts or strips the 4-byte tag when they differ. `l2_len` is the ingress header
/// length (18 when the frame carries a tag, priority tags included). Returns false when the
/// frame has no headroom for a tag.
pub(super) fn retag<F: Frame>(frame: &mut F, l2_len: usize, egress_vlan: Option<u16>) -> bool {
    let tagged = l2_len == 18;
    match (tagged, egress_vlan) {
        (false, None) => true,
        (true, Some(vid)) => {
            let buf = frame.data_mut();
            let tci = (read_u16(buf, 14) & 0xf000) | (vid & 0x0fff);
            write_u16(buf, 14, tci);
            true
        }
        (true, None) => {
            frame.data_mut().copy_within(0..12, 4);
            frame.adj(4)
        }
        (false, Some(vid)) => {
            if !frame.prepend(4) {
                return false;
            }
            let buf = frame.data_mut();
            buf.copy_within(4..16, 0);
            write_u16(buf, 12, 0x8100);
            write_u16(buf, 14, vid & 0x0fff);
            true
        }
    }
}
