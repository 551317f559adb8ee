#!/usr/bin/env python3
"""dsr_decap.py: a user-space IPIP / IPv6-in-IPv6 / GUE decapsulator for a DSR server.

The test bed's kernel has no ipip, ip6_tunnel or fou, so a server cannot decapsulate what a DSR
load balancer sends it. This process does it instead, one per server namespace (netns.sh starts
it like the MPTCP server):

* ``socket(AF_INET, SOCK_RAW, 4)``: IPv4-in-IPv4. The socket receives the outer IPv4 header
  and the inner packet; the outer header (IHL) is stripped. (A raw socket that takes the packet
  also keeps the kernel from answering "protocol unreachable".)
* ``socket(AF_INET6, SOCK_RAW, 41)``: IPv6-in-IPv6. An IPv6 raw socket receives what follows the
  outer IPv6 header (no extension headers in this bed): the inner IPv6 packet.
* UDP sockets on port 6080 (IPv4 and IPv6): GUE. Variant 0: a 4-byte header [version 0, C=0,
  hlen, protocol 4 or 41, flags 0] (hlen words of optional fields are skipped) and the inner
  packet; variant 1 (the payload starts with IP version 4 or 6): the payload is the inner packet.
  GUE control messages (C=1), other protocols and versions are dropped ("bad").

The inner packet is written to a TUN device (``dsr0``, IFF_TUN | IFF_NO_PI) in the server's
namespace: the kernel then receives it on dsr0 as if from the wire, so the MPTCP server accepts
it (the VIP is on lo; rp_filter must be off, the source is the client). Nothing is sent back.

Counters: packets per kind (``ipip4``, ``ipip6``, ``gue4``, ``gue6``: the outer family; GUE's
inner family may differ), ``bad`` (with reasons), inner destinations, bytes. They are written
as JSON to --stats (atomically: a temporary file, then rename) every --interval seconds when
they changed, at once on SIGUSR1, and on SIGTERM / SIGINT before exiting. ``dumps`` counts the
writes, so a reader can send SIGUSR1 and wait for it to grow. Bad input never stops it.

Usage (root, inside the server's namespace):
  dsr_decap.py --name srv1 --stats /tmp/tz-testbed/srv1-decap.json [--ready FILE] [--tun dsr0]
"""

import argparse
import fcntl
import json
import os
import select
import signal
import socket
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
GUE_PORT = 6080
IPPROTO_IPIP = 4
IPPROTO_IPV6 = 41
KINDS = ("ipip4", "ipip6", "gue4", "gue6")


def open_tun(name):
    fd = os.open("/dev/net/tun", os.O_RDWR)
    ifr = struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI)
    fcntl.ioctl(fd, TUNSETIFF, ifr)
    # Bring it up (SIOCSIFFLAGS on any socket of this namespace).
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        flags = struct.unpack_from("16sH", fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16s24x", name.encode())))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", name.encode(), flags | IFF_UP))
    finally:
        s.close()
    return fd


def sysctl(path, value):
    try:
        with open("/proc/sys/" + path.replace(".", "/"), "w") as f:
            f.write(value)
        return True
    except OSError:
        return False


def inner_check(pkt, want=None):
    """The inner packet's family (4 or 6) and its length per its own header, or (None, reason)."""
    if len(pkt) < 1:
        return None, "empty"
    ver = pkt[0] >> 4
    if want is not None and ver != want:
        return None, "inner_version"
    if ver == 4:
        if len(pkt) < 20 or (pkt[0] & 0x0F) < 5:
            return None, "inner_short"
        tot = struct.unpack_from("!H", pkt, 2)[0]
        if tot < (pkt[0] & 0x0F) * 4 or tot > len(pkt):
            return None, "inner_length"
        return 4, tot
    if ver == 6:
        if len(pkt) < 40:
            return None, "inner_short"
        tot = 40 + struct.unpack_from("!H", pkt, 4)[0]
        if tot > len(pkt):
            return None, "inner_length"
        return 6, tot
    return None, "inner_version"


def inner_dst(pkt, fam):
    if fam == 4:
        return socket.inet_ntop(socket.AF_INET, pkt[16:20])
    return socket.inet_ntop(socket.AF_INET6, pkt[24:40])


class Decap:
    def __init__(self, a):
        self.a = a
        self.tun = open_tun(a.tun)
        for p in ("net.ipv4.conf.%s.rp_filter" % a.tun, "net.ipv4.conf.all.rp_filter"):
            sysctl(p, "0")
        self.socks = {}
        big = 16 << 20

        def add(sock, kind):
            try:
                sock.setsockopt(socket.SOL_SOCKET, 33, big)  # SO_RCVBUFFORCE (root)
            except OSError:
                pass
            sock.setblocking(False)
            self.socks[sock.fileno()] = (sock, kind)

        add(socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_IPIP), "ipip4")
        add(socket.socket(socket.AF_INET6, socket.SOCK_RAW, IPPROTO_IPV6), "ipip6")
        u4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u4.bind(("0.0.0.0", a.port))
        add(u4, "gue4")
        u6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        u6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        u6.bind(("::", a.port))
        add(u6, "gue6")
        self.c = {k: 0 for k in KINDS}
        self.c.update({"bad": 0, "bad_reasons": {}, "bytes": 0, "inner_dst": {},
                       "tun_errors": 0})
        self.dumps = 0
        self.dirty = True
        self.started = time.time()

    def bad(self, reason):
        self.c["bad"] += 1
        r = self.c["bad_reasons"]
        r[reason] = r.get(reason, 0) + 1
        self.dirty = True

    def handle(self, kind, data):
        if kind == "ipip4":
            # outer IPv4 header + inner IPv4 packet
            if len(data) < 20 or data[0] >> 4 != 4:
                return self.bad("outer_short")
            ihl = (data[0] & 0x0F) * 4
            if ihl < 20 or len(data) < ihl:
                return self.bad("outer_short")
            inner = data[ihl:]
            want = 4
        elif kind == "ipip6":
            inner = data  # the payload after the outer IPv6 header
            want = 6
        else:  # GUE
            if len(data) < 1:
                return self.bad("gue_short")
            top = data[0] >> 6
            if top == 0:  # variant 0
                if len(data) < 4:
                    return self.bad("gue_short")
                if data[0] & 0x20:
                    return self.bad("gue_control")
                hlen = 4 + (data[0] & 0x1F) * 4
                proto = data[1]
                if proto == IPPROTO_IPIP:
                    want = 4
                elif proto == IPPROTO_IPV6:
                    want = 6
                else:
                    return self.bad("gue_proto")
                if len(data) < hlen:
                    return self.bad("gue_short")
                inner = data[hlen:]
            elif top == 1:  # variant 1: the payload is the IP packet itself
                inner = data
                want = None
            else:
                return self.bad("gue_version")
        fam, tot = inner_check(inner, want)
        if fam is None:
            return self.bad(tot)
        pkt = inner[:tot]
        try:
            os.write(self.tun, pkt)
        except OSError as e:
            self.c["tun_errors"] += 1
            return self.bad("tun_write_" + (e.strerror or str(e.errno)).replace(" ", "_").lower())
        self.c[kind] += 1
        self.c["bytes"] += len(pkt)
        d = inner_dst(pkt, fam)
        self.c["inner_dst"][d] = self.c["inner_dst"].get(d, 0) + 1
        self.dirty = True

    def dump(self):
        self.dumps += 1
        rec = {"name": self.a.name, "pid": os.getpid(), "tun": self.a.tun,
               "started": round(self.started, 3), "updated": round(time.time(), 3),
               "dumps": self.dumps}
        rec.update(self.c)
        tmp = self.a.stats + ".tmp"
        try:
            with open(tmp, "w") as f:
                json.dump(rec, f, sort_keys=True)
                f.write("\n")
            os.replace(tmp, self.a.stats)
        except OSError as e:
            print("dsr_decap: cannot write %s: %s" % (self.a.stats, e), file=sys.stderr, flush=True)
        self.dirty = False

    def run(self):
        stop, want_dump = [], []
        # The handlers only set flags; the wake-up pipe makes poll() return at once.
        rd, wr = os.pipe()
        os.set_blocking(rd, False)
        os.set_blocking(wr, False)
        signal.set_wakeup_fd(wr)
        signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
        signal.signal(signal.SIGINT, lambda *_: stop.append(1))
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGUSR1, lambda *_: want_dump.append(1))
        self.dump()
        if self.a.ready:
            with open(self.a.ready, "w") as f:
                f.write("%d\n" % os.getpid())
        print("dsr_decap %s: IPIP (4), IPv6-in-IPv6 (41), GUE udp/%d -> %s"
              % (self.a.name, self.a.port, self.a.tun), file=sys.stderr, flush=True)
        poll = select.poll()
        for fd in self.socks:
            poll.register(fd, select.POLLIN)
        poll.register(rd, select.POLLIN)
        next_dump = time.monotonic() + self.a.interval
        while not stop:
            try:
                events = poll.poll(200)
            except InterruptedError:
                events = []
            for fd, _ in events:
                if fd == rd:
                    try:
                        os.read(rd, 512)
                    except OSError:
                        pass
                    continue
                sock, kind = self.socks[fd]
                for _ in range(256):
                    try:
                        data = sock.recv(65535)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError as e:
                        self.bad("recv_" + str(e.errno))
                        break
                    try:
                        self.handle(kind, data)
                    except Exception as e:  # noqa: BLE001  (never die on input: count it)
                        self.bad("exception_" + type(e).__name__)
            if want_dump:
                want_dump.clear()
                self.dump()
            now = time.monotonic()
            if now >= next_dump:
                if self.dirty:
                    self.dump()
                next_dump = now + self.a.interval
        self.dump()
        print("dsr_decap %s: %s" % (self.a.name, json.dumps(self.c, sort_keys=True)),
              file=sys.stderr, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--name", required=True, help="server name (in the counters)")
    ap.add_argument("--stats", required=True, help="JSON counters file")
    ap.add_argument("--ready", help="file created once the sockets and the TUN device are up")
    ap.add_argument("--tun", default="dsr0", help="TUN device name (default dsr0)")
    ap.add_argument("--port", type=int, default=GUE_PORT, help="GUE UDP port (default 6080)")
    ap.add_argument("--interval", type=float, default=1.0,
                    help="seconds between counter writes (when changed)")
    a = ap.parse_args()
    Decap(a).run()


if __name__ == "__main__":
    main()
