#!/usr/bin/env python3
"""A userspace stand-in for the DPDK daemon, to validate the bed's DPDK-mode wiring.

Runs in tz-gw when the bed is up in DPDK mode (no IP on gw-c / gw-s, no kernel forwarding) and
does, with two AF_PACKET sockets, what the daemon has to do on those two interfaces:

* answers ARP for 10.90.0.1 and VIP4 on gw-c and for 10.91.0.1 on gw-s, and NDP neighbour
  solicitations for fd90::1 and VIP6 on gw-c and fd91::1 on gw-s (from the interface's MAC);
* NATs TCP to a single backend (srv1), like the Linux stand-in: client -> VIP:80 becomes
  -> srv1:8080 on gw-s, srv1:8080 -> client becomes VIP:80 -> client on gw-c (TTL / hop limit
  decremented, checksums recomputed, TCP options untouched).

* DSR (unless --no-dsr), for the four DSR VIPs (port 8080, the servers' port): a client ->
  VIP:8080 frame on gw-c is encapsulated, unchanged inside, and sent on gw-s to the VIP's one
  backend (outer Ethernet destination = its MAC); nothing is done for the return path (the
  servers answer through tz-rtr). Backends: dsr-ipip4 -> srv1, dsr-ipip6 -> srv2, dsr-gue4 ->
  srv3, dsr-gue6 -> srv2 (one per VIP, so joins reach the owner and the harness sees more than
  one server across runs).
    dsr-ipip4 10.90.100.20  IPv4-in-IPv4, outer source 10.91.0.1
    dsr-ipip6 fd90:100::20  IPv6-in-IPv6 (next header 41), outer source fd91::1
    dsr-gue4  10.90.100.21  GUE variant 0 over UDP/IPv4 to port 6080, outer source in
                            10.91.1.0/24 and UDP source port in 49152..65535 hashed from the
                            inner 5-tuple, UDP checksum 0
    dsr-gue6  fd90:100::21  GUE variant 0 over UDP/IPv6 to port 6080, outer source in
                            fd91:1::/64 hashed, UDP checksum computed
  --gue-variant 1 sends GUE variant 1 (no GUE header: the UDP payload is the inner packet).

No state, no MPTCP logic, no Maglev: it only proves that frames flow through af_packet ports in
this topology (offloads, MACs, ARP/NDP, the bridge). Destination MACs of clients and servers come
from the fixed table of the bed (netns.sh), not from ARP. Frames the socket sees as outgoing
(PACKET_OUTGOING, its own transmissions) are ignored. Not fast; fine for the default transfers.

Usage: ip netns exec tz-gw python3 afpacket_standin.py [--no-dsr] [--gue-variant 0|1]
       (netns.sh up --standin=afpacket starts it; TZTB_AFPACKET_ARGS passes options)
"""

import argparse
import array
import select
import signal
import socket
import struct
import sys
import zlib

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4

GWC, GWS = "gw-c", "gw-s"
MAC = {GWC: bytes.fromhex("029000000001"), GWS: bytes.fromhex("029100000001")}
VIP4, VIP6 = "10.90.100.10", "fd90:100::10"
# DSR VIPs: address -> (kind, backend server number)
DSR_VIPS = {"10.90.100.20": ("ipip", 1), "fd90:100::20": ("ipip", 2),
            "10.90.100.21": ("gue", 3), "fd90:100::21": ("gue", 2)}
OWN4 = {GWC: {"10.90.0.1", VIP4, "10.90.100.20", "10.90.100.21"}, GWS: {"10.91.0.1"}}
OWN6 = {GWC: {"fd90::1", VIP6, "fd90:100::20", "fd90:100::21"}, GWS: {"fd91::1"}}
BACKEND4, BACKEND6, BACKEND_MAC = "10.91.0.11", "fd91::11", bytes.fromhex("029100000011")
CLIENT_MAC = bytes.fromhex("029000000002")
VIP_PORT, SRV_PORT = 80, 8080
GWS4, GWS6 = "10.91.0.1", "fd91::1"
GUE_SRC4_NET, GUE_SRC6_NET = "10.91.1.0", "fd91:1::"  # /24, /64
GUE_PORT = 6080


def a4(s):
    return socket.inet_pton(socket.AF_INET, s)


def a6(s):
    return socket.inet_pton(socket.AF_INET6, s)


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(array.array("H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF  # in native byte order: store with "=H"


def set_csum(buf, off, value):
    struct.pack_into("=H", buf, off, value)


def srv_addrs(n):
    return a4("10.91.0.1%d" % n), a6("fd91::1%d" % n), bytes.fromhex("02910000001%d" % n)


def ip4_header(src, dst, proto, payload_len, df):
    h = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + payload_len, 0,
                              0x4000 if df else 0, 64, proto, 0, src, dst))
    set_csum(h, 10, csum(bytes(h)))
    return bytes(h)


def ip6_header(src, dst, nh, payload_len, flow):
    return struct.pack("!IHBB", 0x60000000 | (flow & 0xFFFFF), payload_len, nh, 64) + src + dst


class Standin:
    def __init__(self, dsr=True, gue_variant=0):
        self.sock = {}
        for dev in (GWC, GWS):
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            s.bind((dev, 0))
            # bursts of a few hundred KB must not overflow the socket (root: bypass rmem_max)
            s.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE
            s.setsockopt(socket.SOL_SOCKET, 32, 16 << 20)  # SO_SNDBUFFORCE
            self.sock[dev] = s
        self.own4 = {d: {a4(x) for x in v} for d, v in OWN4.items()}
        self.own6 = {d: {a6(x) for x in v} for d, v in OWN6.items()}
        self.vip4, self.vip6 = a4(VIP4), a6(VIP6)
        self.b4, self.b6 = a4(BACKEND4), a6(BACKEND6)
        self.stats = {"arp": 0, "nd": 0, "to_backend": 0, "to_client": 0, "dropped": 0,
                      "dsr_ipip4": 0, "dsr_ipip6": 0, "dsr_gue4": 0, "dsr_gue6": 0}
        self.dsr = {}
        if dsr:
            for vip, (kind, n) in DSR_VIPS.items():
                v6 = ":" in vip
                b4, b6, mac = srv_addrs(n)
                self.dsr[a6(vip) if v6 else a4(vip)] = (kind, b6 if v6 else b4, mac)
        self.gue_variant = gue_variant
        self.gws4, self.gws6 = a4(GWS4), a6(GWS6)
        self.gue_net4, self.gue_net6 = a4(GUE_SRC4_NET), a6(GUE_SRC6_NET)

    def send(self, dev, frame):
        self.sock[dev].send(bytes(frame))

    # -- ARP / NDP -----------------------------------------------------------------------------
    def arp(self, dev, f):
        if len(f) < 42 or struct.unpack_from("!H", f, 20)[0] != 1:  # requests only
            return
        sha, spa, tpa = bytes(f[22:28]), bytes(f[28:32]), bytes(f[38:42])
        if tpa not in self.own4[dev]:
            return
        rep = (sha + MAC[dev] + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 2)
               + MAC[dev] + tpa + sha + spa)
        self.send(dev, rep)
        self.stats["arp"] += 1

    def ndp(self, dev, f, src, target):
        # neighbour advertisement: Router | Solicited | Override, with target link-layer address
        body = struct.pack("!BBHI", 136, 0, 0, 0xE0000000) + target + b"\x02\x01" + MAC[dev]
        pseudo = target + src + struct.pack("!I", len(body)) + b"\0\0\0\x3a"
        body = bytearray(body)
        set_csum(body, 2, csum(pseudo + bytes(body)))
        ip6 = struct.pack("!IHBB", 0x60000000, len(body), 58, 255) + target + src
        self.send(dev, f[6:12] + MAC[dev] + b"\x86\xdd" + ip6 + bytes(body))
        self.stats["nd"] += 1

    # -- forwarding ----------------------------------------------------------------------------
    def tcp_fix(self, f, t_off, ln, pseudo_src, pseudo_dst):
        set_csum(f, t_off + 16, 0)
        pseudo = pseudo_src + pseudo_dst + struct.pack("!HH", 6, ln) if len(pseudo_src) == 4 \
            else pseudo_src + pseudo_dst + struct.pack("!IxxxB", ln, 6)
        set_csum(f, t_off + 16, csum(pseudo + bytes(f[t_off:t_off + ln])))

    def ipv4(self, dev, f):
        o = 14
        ihl = (f[o] & 0xF) * 4
        tot = struct.unpack_from("!H", f, o + 2)[0]
        src, dst = bytes(f[o + 12:o + 16]), bytes(f[o + 16:o + 20])
        if f[o + 9] == 1 and dst in self.own4[dev] and f[o + ihl] == 8:  # ping our addresses
            return self.drop()
        if f[o + 9] != 6 or f[o + 8] <= 1:
            return self.drop()
        t = o + ihl
        sport, dport = struct.unpack_from("!HH", f, t)
        if dev == GWC and dst in self.dsr and dport == SRV_PORT:
            return self.encap(f, o, tot, 4, src, dst, sport, dport)
        if dev == GWC and dst == self.vip4 and dport == VIP_PORT:
            f[o + 16:o + 20] = self.b4
            struct.pack_into("!H", f, t + 2, SRV_PORT)
            out, dmac, key = GWS, BACKEND_MAC, "to_backend"
        elif dev == GWS and src == self.b4 and sport == SRV_PORT:
            f[o + 12:o + 16] = self.vip4
            struct.pack_into("!H", f, t, VIP_PORT)
            out, dmac, key = GWC, CLIENT_MAC, "to_client"
        else:
            return self.drop()
        f[o + 8] -= 1
        set_csum(f, o + 10, 0)
        set_csum(f, o + 10, csum(bytes(f[o:o + ihl])))
        self.tcp_fix(f, t, tot - ihl, bytes(f[o + 12:o + 16]), bytes(f[o + 16:o + 20]))
        f[0:6], f[6:12] = dmac, MAC[out]
        self.send(out, f[:o + tot])
        self.stats[key] += 1

    def ipv6(self, dev, f):
        o = 14
        plen, nh, hlim = struct.unpack_from("!HBB", f, o + 4)
        src, dst = bytes(f[o + 8:o + 24]), bytes(f[o + 24:o + 40])
        t = o + 40
        if nh == 58 and len(f) >= t + 24 and f[t] == 135:  # neighbour solicitation
            target = bytes(f[t + 8:t + 24])
            if target in self.own6[dev] and src != bytes(16):
                self.ndp(dev, f, src, target)
            return
        if nh != 6 or hlim <= 1:
            return self.drop()
        sport, dport = struct.unpack_from("!HH", f, t)
        if dev == GWC and dst in self.dsr and dport == SRV_PORT:
            return self.encap(f, o, t + plen - o, 6, src, dst, sport, dport)
        if dev == GWC and dst == self.vip6 and dport == VIP_PORT:
            f[o + 24:o + 40] = self.b6
            struct.pack_into("!H", f, t + 2, SRV_PORT)
            out, dmac, key = GWS, BACKEND_MAC, "to_backend"
        elif dev == GWS and src == self.b6 and sport == SRV_PORT:
            f[o + 8:o + 24] = self.vip6
            struct.pack_into("!H", f, t, VIP_PORT)
            out, dmac, key = GWC, CLIENT_MAC, "to_client"
        else:
            return self.drop()
        f[o + 7] -= 1
        self.tcp_fix(f, t, plen, bytes(f[o + 8:o + 24]), bytes(f[o + 24:o + 40]))
        f[0:6], f[6:12] = dmac, MAC[out]
        self.send(out, f[:t + plen])
        self.stats[key] += 1

    # -- DSR -----------------------------------------------------------------------------------
    def encap(self, f, o, ln, fam, src, dst, sport, dport):
        """Encapsulate the IP packet f[o:o+ln] (unchanged) towards the VIP's backend on gw-s."""
        kind, bdst, bmac = self.dsr[dst]
        inner = bytes(f[o:o + ln])
        h = zlib.crc32(src + dst + struct.pack("!HHB", sport, dport, 6))
        if kind == "ipip":
            if fam == 4:
                df = bool(inner[6] & 0x40)
                pkt = ip4_header(self.gws4, bdst, 4, len(inner), df) + inner
            else:
                pkt = ip6_header(self.gws6, bdst, 41, len(inner), h) + inner
        else:
            gue = (struct.pack("!BBH", 0, 4 if fam == 4 else 41, 0)
                   if self.gue_variant == 0 else b"")
            usport = 49152 + (h >> 8) % 16384
            body = gue + inner
            if fam == 4:
                osrc = self.gue_net4[:3] + bytes([1 + h % 254])
                udp = struct.pack("!HHHH", usport, GUE_PORT, 8 + len(body), 0) + body
                pkt = ip4_header(osrc, bdst, 17, len(udp), True) + udp
            else:
                iid = (h * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
                osrc = self.gue_net6[:8] + struct.pack("!Q", iid or 1)
                udp = bytearray(struct.pack("!HHHH", usport, GUE_PORT, 8 + len(body), 0) + body)
                pseudo = osrc + bdst + struct.pack("!IxxxB", len(udp), 17)
                c = csum(pseudo + bytes(udp))
                set_csum(udp, 6, c if c else 0xFFFF)
                pkt = ip6_header(osrc, bdst, 17, len(udp), h) + bytes(udp)
        frame = bmac + MAC[GWS] + (b"\x08\x00" if len(pkt) and pkt[0] >> 4 == 4 else b"\x86\xdd") + pkt
        self.send(GWS, frame)
        self.stats["dsr_%s%d" % (kind, fam)] += 1

    def drop(self):
        self.stats["dropped"] += 1

    def run(self):
        stop = []
        signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
        signal.signal(signal.SIGINT, lambda *_: stop.append(1))
        bydev = {s.fileno(): d for d, s in self.sock.items()}
        print("afpacket stand-in: forwarding on %s / %s (DSR: %s)"
              % (GWC, GWS, "GUE variant %d" % self.gue_variant if self.dsr else "off"),
              file=sys.stderr, flush=True)
        while not stop:
            try:
                ready, _, _ = select.select(list(self.sock.values()), [], [], 0.5)
            except InterruptedError:
                continue
            for s in ready:
                dev = bydev[s.fileno()]
                while True:
                    try:
                        data, addr = s.recvfrom(65535, socket.MSG_DONTWAIT)
                    except BlockingIOError:
                        break
                    if addr[2] == PACKET_OUTGOING or len(data) < 14:
                        continue
                    f = bytearray(data)
                    if f[0] & 1 == 0 and bytes(f[0:6]) != MAC[dev]:
                        continue  # unicast for someone else
                    et = struct.unpack_from("!H", f, 12)[0]
                    try:
                        if et == 0x0806:
                            self.arp(dev, f)
                        elif et == 0x0800 and len(f) >= 34:
                            self.ipv4(dev, f)
                        elif et == 0x86DD and len(f) >= 54:
                            self.ipv6(dev, f)
                    except (struct.error, IndexError, ValueError, OSError) as e:
                        print("afpacket stand-in: %s" % e, file=sys.stderr)
                        self.drop()
        print("afpacket stand-in: %s" % self.stats, file=sys.stderr, flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--no-dsr", action="store_true", help="no DSR VIPs (NAT only)")
    ap.add_argument("--gue-variant", type=int, choices=[0, 1], default=0,
                    help="GUE variant for the GUE VIPs (default 0: with the 4-byte header)")
    args = ap.parse_args()
    Standin(dsr=not args.no_dsr, gue_variant=args.gue_variant).run()
