#!/usr/bin/env python3
"""transfers.py: end-to-end MPTCP / TCP transfers through the trapeze test bed, with checks.

Needs the bed up (``testbed/netns.sh up ...``) and root. One run:

1. snapshots ``nstat`` in the client and the three server namespaces;
2. starts tcpdump on the client veth (``cli0`` in tz-client: the client link) and on the
   gateway's port of the server bridge (``sw-gw`` in tz-sw: every frame between the gateway and
   the servers, exactly once);
3. runs N connections from tz-client (primary address, ephemeral port) to the VIP, each sending a
   deterministic payload (first line ``TZTB run=.. conn=.. bytes=..``) and reading the servers'
   echo concurrently; in MPTCP mode, after the first chunk (which completes the MP_CAPABLE
   handshake, the moment Linux's path manager opens the join) the client waits up to
   --join-timeout for the join before sending the rest;
4. waits for the servers' per-connection records, stops the captures, snapshots nstat again;
5. matches everything up and checks it (see README.md, "Checks"), prints a JSON summary on
   stdout (also written to OUT/summary.json) and a readable one on stderr, and exits 1 if any
   check failed.

Where each subflow went (method): every server logs, per connection, its MPTCP token (MPTCP_INFO)
and every subflow it saw (MPTCP_SUBFLOW_ADDRS, sampled while reading): that is the server view
of established subflows. The server-link capture gives every MP_JOIN SYN with its token, the
server it was sent to and that server's answer (SYN/ACK+MP_JOIN, RST, nothing): joins that fail
never show up in a server's subflow list, so the capture is the oracle for misrouted joins. The
token ties a join to its connection. nstat deltas (MPJoinSynRx, MPJoinAckRx, MPJoinNoTokenFound,
MPCapableSYNRX) are reported per server and cross-checked against both.

DSR (``--vip dsr-ipip`` / ``--vip dsr-gue``, port 8080): the gateway tunnels client -> VIP
packets to the servers (IPIP / IPv6-in-IPv6 / GUE on the server link) and the servers answer
through tz-rtr on the client's second interface (``cli1``: the return link), so a third capture
runs there. The client's view is the client link + the return link, the servers' view the server
link (decapsulated; the server is the outer destination) + the return link; every check above
applies to those views, RSTs are counted per link, and dsr_bypass / dsr_encap / dsr_decap check
the return path, the encapsulation of every segment and the servers' decapsulator counters
(testbed/dsr_decap.py). A NAT run (the default) is analysed exactly as before.
"""

import argparse
import hashlib
import ipaddress
import json
import os
import pathlib
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mptcp_server as M  # MPTCP socket helpers

# Source ports of trapeze's health probes (dataplane/gatewayd/src/health.rs): 61000..65000.
PROBE_PORTS = (61000, 65000)

RUN_DIR = os.environ.get("TZTB_RUN_DIR", "/tmp/tz-testbed")
# Another bed with the same addresses (testbed/multi.sh: several gateway instances) sets the
# namespace prefix, the gateway namespace, the switch ports to capture as the server link (one
# capture per port, merged) and the gateways' server-side addresses (DSR outer sources).
NS_PREFIX = os.environ.get("TZTB_NS_PREFIX", "tz-")
NS_CLIENT = NS_PREFIX + "client"
NS_SWITCH = NS_PREFIX + "sw"
NS_GATEWAY = os.environ.get("TZTB_GW_NS", NS_PREFIX + "gw")
CLIENT_IF = "cli0"
SWITCH_GW_PORTS = os.environ.get("TZTB_SERVER_LINKS", "sw-gw").split(",")
SERVERS = {
    "srv1": ("10.91.0.11", "fd91::11"),
    "srv2": ("10.91.0.12", "fd91::12"),
    "srv3": ("10.91.0.13", "fd91::13"),
}
ADDR_SERVER = {a: name for name, addrs in SERVERS.items() for a in addrs}
VIP = {4: "10.90.100.10", 6: "fd90:100::10"}
VIP_PORT = 80
SRV_PORT = 8080
CLIENT_PRIMARY = {4: "10.90.0.2", 6: "fd90::2"}
CLIENT_SECOND = {4: "10.90.0.3", 6: "fd90::3"}

# DSR (--vip dsr-ipip / dsr-gue): the VIPs listen on the servers' port (DSR cannot translate
# ports); the gateway encapsulates client -> VIP packets towards the server (IPIP, IPv6-in-IPv6,
# or GUE over UDP to port 6080) and the servers answer directly, via tz-rtr, to the client's
# second interface (the return link).
DSR_VIP = {("dsr-ipip", 4): "10.90.100.20", ("dsr-ipip", 6): "fd90:100::20",
           ("dsr-gue", 4): "10.90.100.21", ("dsr-gue", 6): "fd90:100::21"}
ALL_VIPS = set(VIP.values()) | set(DSR_VIP.values())
NS_ROUTER = NS_PREFIX + "rtr"
RETURN_IF = "cli1"
GUE_PORT = 6080
# The outer source the gateway uses: its server-side address (IPIP), or an address hashed from
# the flow inside these prefixes (GUE), with a hashed UDP source port in GUE_SPORTS.
GW_SERVER_SIDE = {4: {"10.91.0.1"}, 6: {"fd91::1"}}
for _a in os.environ.get("TZTB_GW_SERVER_SIDE", "").split(","):
    if _a:
        GW_SERVER_SIDE[6 if ":" in _a else 4].add(_a)
GUE_SRC_NET = {4: ipaddress.ip_network("10.91.1.0/24"), 6: ipaddress.ip_network("fd91:1::/64")}
GUE_SPORTS = (49152, 65535)
DECAP_KINDS = ("ipip4", "ipip6", "gue4", "gue6")


def target(a):
    """(address, port) the client connects to."""
    if a.vip == "nat":
        return VIP[a.family], VIP_PORT
    return DSR_VIP[(a.vip, a.family)], SRV_PORT


def encap_kind(a):
    """The encapsulation a DSR run expects on the server link: ipip4, ipip6, gue4, gue6."""
    return a.vip.split("-", 1)[1] + str(a.family)

# Always reported, even when zero.
NSTAT_ORACLE = [
    "MPTcpExtMPCapableSYNRX",
    "MPTcpExtMPJoinSynRx",
    "MPTcpExtMPJoinAckRx",
    "MPTcpExtMPJoinNoTokenFound",
    "TcpOutRsts",
]
NSTAT_EXTRA = {"TcpActiveOpens", "TcpPassiveOpens", "TcpAttemptFails", "TcpEstabResets",
               "TcpRetransSegs", "TcpInErrs", "TcpExtTCPAbortOnData", "TcpExtTCPAbortOnClose"}


def sha256(b):
    return hashlib.sha256(b).hexdigest()


def payload(run, conn, size):
    hdr = b"TZTB run=%s conn=%d bytes=%d\n" % (run.encode(), conn, size)
    body = random.Random("tztb-%d-%d" % (conn, size)).randbytes(max(0, size - len(hdr)))
    return (hdr + body)[:size] if size >= len(hdr) else hdr


# ---------------------------------------------------------------------------------------------
# client side (runs inside tz-client: `transfers.py _client ...`)


def client_conn(a, i):
    fam = socket.AF_INET6 if a.family == 6 else socket.AF_INET
    data = payload(a.run, i, a.size_kb * 1024)
    rec = {"conn": i, "bytes": len(data), "sha256": sha256(data), "error": None}
    echo = {"n": 0, "h": hashlib.sha256(), "error": None}
    subflows = M.SubflowLog()
    max_sub = 0
    t0 = time.monotonic()
    s = socket.socket(fam, socket.SOCK_STREAM, M.IPPROTO_MPTCP if a.proto == "mptcp" else 0)
    reader = None
    try:
        s.settimeout(a.timeout)
        # Bind the primary address: otherwise IPv6 source selection may pick the subflow
        # endpoint's address, and then the path manager has no other address to join from.
        s.bind((CLIENT_PRIMARY[a.family], 0))
        s.connect(target(a))
        rec["local"] = list(s.getsockname()[:2])

        def read():
            try:
                while True:
                    b = s.recv(65536)
                    if not b:
                        break
                    echo["n"] += len(b)
                    echo["h"].update(b)
            except OSError as e:
                echo["error"] = "%s: %s" % (type(e).__name__, e)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()

        def sample():
            nonlocal max_sub
            if a.proto != "mptcp":
                return None
            info = M.mptcp_info(s)
            if info:
                max_sub = max(max_sub, info["subflows"])
            subflows.sample(s)
            return info

        first = a.first_chunk_kb * 1024
        s.sendall(data[:first])
        off = len(data[:first])
        if a.proto == "mptcp" and a.expect_joins > 0:
            deadline = time.monotonic() + a.join_timeout
            tj = time.monotonic()
            while time.monotonic() < deadline:
                sample()
                # The join counts once its subflow is established (MPTCP_INFO counts it from
                # its SYN on): the first subflow plus the joins.
                up = M.established_subflows(s)
                if up is not None and up >= 1 + a.expect_joins:
                    break
                time.sleep(0.01)
            rec["join_wait_s"] = round(time.monotonic() - tj, 3)
        chunk = a.chunk_kb * 1024
        while off < len(data):
            s.sendall(data[off:off + chunk])
            off += chunk
            sample()
            time.sleep(a.pause_ms / 1000.0)
        info = sample()
        s.shutdown(socket.SHUT_WR)
        reader.join(a.timeout)
        if reader.is_alive():
            rec["error"] = "echo not complete after %ss" % a.timeout
        # Keep the socket open a little after the server's DATA_FIN: a segment the server
        # retransmits or reinjects on another subflow after a close() would be answered with a
        # RST (TcpExtTCPAbortOnData), which the no_rst check would count against the gateway.
        time.sleep(a.linger)
        if a.proto == "mptcp":
            info = M.mptcp_info(s) or info
            rec["fallback"] = info["fallback"] if info else True
            rec["client_token"] = info["token"] if info else None
            rec["max_extra_subflows"] = max_sub
            rec["subflows"] = subflows.seen
    except OSError as e:
        rec["error"] = "%s: %s" % (type(e).__name__, e)
    finally:
        s.close()
    if reader is not None:
        reader.join(1)
    rec["echo_bytes"] = echo["n"]
    rec["echo_sha256"] = echo["h"].hexdigest()
    if echo["error"] and not rec["error"]:
        rec["error"] = "echo: " + echo["error"]
    rec["duration_s"] = round(time.monotonic() - t0, 3)
    return rec


def client_main(a):
    with ThreadPoolExecutor(max_workers=a.parallel) as ex:
        futs = []
        for i in range(a.connections):
            futs.append(ex.submit(client_conn, a, i))
            time.sleep(a.stagger_ms / 1000.0)
        recs = [f.result() for f in futs]
    json.dump(recs, sys.stdout)


# ---------------------------------------------------------------------------------------------
# captures


def read_pcap(path):
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return
    magic = struct.unpack_from("<I", data, 0)[0]
    if magic in (0xA1B2C3D4, 0xA1B23C4D):
        e = "<"
    else:
        e = ">"
    nano = struct.unpack_from(e + "I", data, 0)[0] == 0xA1B23C4D
    linktype = struct.unpack_from(e + "I", data, 20)[0]
    if linktype != 1:
        raise SystemExit("%s: linktype %d, expected Ethernet" % (path, linktype))
    off = 24
    while off + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack_from(e + "IIII", data, off)
        off += 16
        yield sec + frac / (1e9 if nano else 1e6), data[off:off + incl]
        off += incl


def merge_pcaps(paths, dst):
    """Merges captures of the same link type (tcpdump's, same byte order and resolution) into
    one, records ordered by time (a stable sort: a port's own order is kept)."""
    header, recs = None, []
    for i, path in enumerate(paths):
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            continue
        if len(data) < 24:
            continue
        e = "<" if struct.unpack_from("<I", data, 0)[0] in (0xA1B2C3D4, 0xA1B23C4D) else ">"
        header = header or data[:24]
        off = 24
        while off + 16 <= len(data):
            sec, frac, incl, _ = struct.unpack_from(e + "IIII", data, off)
            end = off + 16 + incl
            if end > len(data):
                break
            recs.append((sec, frac, i, data[off:end]))
            off = end
    recs.sort(key=lambda r: (r[0], r[1]))
    with open(dst, "wb") as f:
        f.write(header or struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        f.writelines(r[3] for r in recs)


def inet_sum(data):
    """The RFC 1071 checksum of data (as a big-endian integer)."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def ip_header(frame, o, et):
    """(protocol, src, dst, payload offset, end) of the IPv4 / IPv6 (no extension headers)
    packet at frame[o:] (et: its ethertype), or None."""
    if et == 0x0800:
        if len(frame) < o + 20:
            return None
        src = socket.inet_ntop(socket.AF_INET, frame[o + 12:o + 16])
        dst = socket.inet_ntop(socket.AF_INET, frame[o + 16:o + 20])
        return (frame[o + 9], src, dst, o + (frame[o] & 0x0F) * 4,
                o + struct.unpack_from("!H", frame, o + 2)[0])
    if et == 0x86DD:
        if len(frame) < o + 40:
            return None
        src = socket.inet_ntop(socket.AF_INET6, frame[o + 8:o + 24])
        dst = socket.inet_ntop(socket.AF_INET6, frame[o + 24:o + 40])
        return frame[o + 6], src, dst, o + 40, o + 40 + struct.unpack_from("!H", frame, o + 4)[0]
    return None


def open_encap(frame, o, et):
    """DSR encapsulations: if the IP packet at frame[o:] is IPv4-in-IPv4 (protocol 4),
    IPv6-in-IPv6 (next header 41) or GUE (UDP to port 6080; variant 0 with protocol 4 or 41,
    or variant 1), (inner offset, inner ethertype, outer) where outer describes the outer
    headers; otherwise None."""
    h = ip_header(frame, o, et)
    if h is None:
        return None
    proto, src, dst, t, _end = h
    fam = 4 if et == 0x0800 else 6
    outer = {"kind": None, "src": src, "dst": dst, "sport": None, "udp_csum": None,
             "variant": None}
    if proto in (4, 41):
        outer["kind"] = "ipip%d" % fam
        inner, iet = t, 0x0800 if proto == 4 else 0x86DD
    elif proto == 17 and len(frame) >= t + 9 and struct.unpack_from("!H", frame, t + 2)[0] == GUE_PORT:
        usport, _, ulen, ucsum = struct.unpack_from("!HHHH", frame, t)
        outer.update(kind="gue%d" % fam, sport=usport)
        pl = t + 8
        if frame[pl] >> 6 == 0:  # variant 0: version 0, C, hlen; protocol; flags
            if len(frame) < pl + 4 or frame[pl] & 0x20 or frame[pl + 1] not in (4, 41):
                return None
            outer["variant"] = 0
            inner = pl + 4 + (frame[pl] & 0x1F) * 4
            iet = 0x0800 if frame[pl + 1] == 4 else 0x86DD
        elif frame[pl] >> 4 in (4, 6):  # variant 1: the IP packet itself
            outer["variant"] = 1
            inner, iet = pl, 0x0800 if frame[pl] >> 4 == 4 else 0x86DD
        else:
            return None
        # "zero" (no checksum, IPv4 only), "ok" or "bad"
        if ucsum == 0:
            outer["udp_csum"] = "zero"
        else:
            a = socket.AF_INET if fam == 4 else socket.AF_INET6
            pseudo = (socket.inet_pton(a, src) + socket.inet_pton(a, dst)
                      + (struct.pack("!BBH", 0, 17, ulen) if fam == 4
                         else struct.pack("!IxxxB", ulen, 17)))
            outer["udp_csum"] = "ok" if inet_sum(pseudo + bytes(frame[t:t + ulen])) == 0 else "bad"
    else:
        return None
    if len(frame) < inner + 1 or frame[inner] >> 4 != (4 if iet == 0x0800 else 6):
        return None
    return inner, iet, outer


def parse_tcp(frame):
    """Ethernet (+802.1Q) / IPv4 or IPv6 (no extension headers) / TCP -> dict, or None.

    A DSR encapsulation (IPIP, IPv6-in-IPv6, GUE: see open_encap) is opened: the dict describes
    the inner TCP segment and "outer" the encapsulation (None for a plain packet)."""
    if len(frame) < 14:
        return None
    et = struct.unpack_from("!H", frame, 12)[0]
    o = 14
    if et == 0x8100 and len(frame) >= 18:
        et = struct.unpack_from("!H", frame, 16)[0]
        o = 18
    enc = open_encap(frame, o, et)
    outer = None
    if enc is not None:
        o, et, outer = enc
    if et == 0x0800:
        if len(frame) < o + 20:
            return None
        ihl = (frame[o] & 0x0F) * 4
        if frame[o + 9] != 6:
            return None
        src = socket.inet_ntop(socket.AF_INET, frame[o + 12:o + 16])
        dst = socket.inet_ntop(socket.AF_INET, frame[o + 16:o + 20])
        t = o + ihl
        ip_end = o + struct.unpack_from("!H", frame, o + 2)[0]
    elif et == 0x86DD:
        if len(frame) < o + 40 or frame[o + 6] != 6:
            return None
        src = socket.inet_ntop(socket.AF_INET6, frame[o + 8:o + 24])
        dst = socket.inet_ntop(socket.AF_INET6, frame[o + 24:o + 40])
        t = o + 40
        ip_end = t + struct.unpack_from("!H", frame, o + 4)[0]
    else:
        return None
    if len(frame) < t + 20:
        return None
    sport, dport, seq, ackn, doff, flags, win = struct.unpack_from("!HHIIBBH", frame, t)
    hl = (doff >> 4) * 4
    opts = frame[t + 20:t + hl]
    p = {"src": src, "dst": dst, "sport": sport, "dport": dport,
         "syn": bool(flags & 0x02), "ack": bool(flags & 0x10), "rst": bool(flags & 0x04),
         "fin": bool(flags & 0x01), "mpc": None, "join": None, "mptcp": False, "tcprst": None,
         "payload": max(0, ip_end - t - hl),
         # Everything NAT leaves alone (not addresses, ports or checksums): two captures of
         # one segment on either side of the gateway have the same "wire".
         "wire": (seq, ackn, flags, win, bytes(opts),
                  hashlib.sha1(frame[t + hl:max(t + hl, ip_end)]).digest()),
         "outer": outer}
    i = 0
    while i < len(opts):
        kind = opts[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= len(opts) or opts[i + 1] < 2:
            break
        ln = opts[i + 1]
        opt = opts[i:i + ln]
        if kind == 30 and len(opt) >= 3:
            p["mptcp"] = True
            sub = opt[2] >> 4
            if sub == 0:  # MP_CAPABLE; SYN/ACK carries the server's key
                p["mpc"] = {"key": opt[4:12].hex() if len(opt) >= 12 else None,
                            # the third ACK also echoes the receiver's key (join_delay.py)
                            "peer_key": opt[12:20].hex() if len(opt) >= 20 else None}
            elif sub == 1:  # MP_JOIN; the SYN carries the token
                p["join"] = {"token": "0x" + opt[4:8].hex() if len(opt) == 12 else None}
            elif sub == 8 and len(opt) >= 4:  # MP_TCPRST: why the sender reset the subflow
                p["tcprst"] = opt[3]
        i += ln
    return p


def token_of_key(key_hex):
    return "0x" + hashlib.sha256(bytes.fromhex(key_hex)).digest()[:4].hex()


def count_rst_tcpdump(path):
    # tcp[] cannot look into IPv6 in libpcap: the IPv6 part reads the TCP flags byte directly
    # (40-byte header, no extension headers in this bed).
    expr = ("((tcp[tcpflags] & tcp-rst != 0) or (ip6 and ip6[6] == 6 and ip6[53] & 4 != 0))"
            " and not portrange %d-%d" % (PROBE_PORTS[0], PROBE_PORTS[1] - 1))
    out = subprocess.run(["tcpdump", "-r", path, "-nn", expr], capture_output=True, text=True,
                         check=False)
    if out.returncode != 0:
        raise SystemExit("tcpdump -r %s: %s" % (path, out.stderr.strip()))
    return len([ln for ln in out.stdout.splitlines() if ln.strip()])


def load_pcap(path, link=None):
    """The TCP segments of a capture (parse_tcp), each with its time ("ts") and "link"."""
    out = []
    for ts, f in read_pcap(path):
        p = parse_tcp(f)
        if p:
            p["ts"] = ts
            p["link"] = link
            out.append(p)
    return out


def merge_links(*lists):
    """Several links' segments in one time order (captures on one machine: one clock)."""
    return sorted((p for ps in lists for p in ps), key=lambda p: p["ts"])


def analyse_pcap(path):
    """Split a capture into subflows ("sessions": one SYN handshake each, in capture order).

    A SYN on a 4-tuple whose previous session was already answered (SYN/ACK or RST) starts a
    new session: after a join is reset, its client port may be reused by a later join."""
    return analyse_packets(load_pcap(path))


def analyse_packets(pkts):
    """analyse_pcap on parsed segments, possibly of several links merged in time order (DSR:
    the return link carries what the server sends). Per link ("link" of each segment): RSTs
    (aborting / after both FINs) in res["rst_links"] and per session in "rsts_by_link"; per
    session, the encapsulations of its client -> server segments on the server link
    ("encap", {(kind, outer src, outer dst, UDP source port, UDP checksum, GUE variant):
    segments}, kind None for a plain segment) and "via", the outer destination of its SYN."""
    res = {"tcp_packets": len(pkts), "mptcp_packets": sum(p["mptcp"] for p in pkts),
           "rst": [], "rst_after_close": 0, "sessions": [], "mpc_synack_tokens": {},
           "rst_links": {}}
    cur = {}
    for p in pkts:
        fwd = (p["src"], p["sport"], p["dst"], p["dport"])
        rev = (p["dst"], p["dport"], p["src"], p["sport"])
        if PROBE_PORTS[0] <= p["sport"] < PROBE_PORTS[1] or PROBE_PORTS[0] <= p["dport"] < PROBE_PORTS[1]:
            # The gateway's own health probes (SYN, SYN/ACK, and the RST that closes the
            # half-open probe): not client traffic.
            res["probes"] = res.get("probes", 0) + 1
            continue
        if p["syn"] and not p["ack"]:
            kind = "join" if p["join"] else ("capable" if p["mpc"] is not None else "tcp")
            token = p["join"]["token"] if p["join"] else None
            s = cur.get(fwd)
            if s is None or s["answer"] != "none" or s["kind"] != kind or s["token"] != token:
                s = {"client": [p["src"], p["sport"]], "server": [p["dst"], p["dport"]],
                     "kind": kind, "token": token, "syns": 0, "answer": "none", "up": 0,
                     "down": 0, "fin_up": False, "fin_down": False, "rsts": 0,
                     "first_rst": None, "trace_up": [p["wire"]], "trace_down": [],
                     "via": p["outer"]["dst"] if p["outer"] else None, "encap": {},
                     "rsts_by_link": {}}
                res["sessions"].append(s)
                cur[fwd] = s
            s["syns"] += 1
            note_encap(s, p)
            continue
        s, up = cur.get(fwd), True
        if s is None:
            s, up = cur.get(rev), False
        if p["rst"]:
            # A RST after both FINs (a late duplicate hitting a connection that is already
            # closed) is TCP doing its job; any other RST aborted something.
            tally = res["rst_links"].setdefault(p["link"], {"aborting": 0, "after_close": 0})
            if s is not None and s["fin_up"] and s["fin_down"]:
                res["rst_after_close"] += 1
                tally["after_close"] += 1
            else:
                res["rst"].append("%s.%d > %s.%d" % fwd)
                tally["aborting"] += 1
                if s is not None:
                    s["rsts"] += 1
                    s["rsts_by_link"][p["link"]] = s["rsts_by_link"].get(p["link"], 0) + 1
                    if s["first_rst"] is None:
                        s["first_rst"] = {"from_server": not up, "tcprst": p["tcprst"],
                                          "wire": p["wire"]}
        if s is None:
            continue  # a flow that started before the capture
        if up:
            note_encap(s, p)
        if s["first_rst"] is None and not p["rst"]:
            s["trace_up" if up else "trace_down"].append(p["wire"])
        s["up" if up else "down"] += p["payload"]
        if p["fin"]:
            s["fin_up" if up else "fin_down"] = True
        if p["rst"] and s["answer"] in ("none", "synack"):
            s["answer"] = "rst" if s["answer"] == "none" else "synack,rst"
        elif p["syn"] and p["ack"] and not up and s["answer"] == "none":
            s["answer"] = "synack"
            if s["kind"] == "capable" and p["mpc"] and p["mpc"]["key"]:
                s["token"] = token_of_key(p["mpc"]["key"])
                res["mpc_synack_tokens"][tuple(s["client"])] = s["token"]
    res["joins"] = [s for s in res["sessions"] if s["kind"] == "join"]
    return res


def note_encap(s, p):
    """Counts a client -> server segment of the server link by its encapsulation."""
    if p["link"] != "server":
        return
    o = p["outer"] or {}
    key = (o.get("kind"), o.get("src"), o.get("dst"), o.get("sport"), o.get("udp_csum"),
           o.get("variant"))
    s["encap"][key] = s["encap"].get(key, 0) + 1


def is_add_addr_ack(f, t):
    """A pure ACK (no payload) whose options carry an ADD_ADDR that is not an echo, or an
    MP_PRIO: what the gateway itself sends a client in announce mode."""
    if len(f) < t + 20 or f[t + 13] & 0x3F != 0x10:
        return False
    hl = (f[t + 12] >> 4) * 4
    opts, i = f[t + 20:t + hl], 0
    if len(f) > t + hl and any(f[t + hl:]):
        return False
    while i < len(opts):
        if opts[i] == 0:
            break
        if opts[i] == 1:
            i += 1
            continue
        if i + 1 >= len(opts) or opts[i + 1] < 2:
            break
        if opts[i] == 30 and opts[i + 1] >= 8 and opts[i + 2] >> 4 == 3 and not opts[i + 2] & 1:
            return True
        if opts[i] == 30 and opts[i + 1] == 3 and opts[i + 2] >> 4 == 5:
            return True  # MP_PRIO: the gateway's off-path request to keep its subflow as backup
        i += opts[i + 1]
    return False


def ip_packets_from(path, addrs, announces=None):
    """IP packets (outer header) of a capture from one of addrs: (ICMP / ICMPv6 errors, all
    others). An ICMP error from a VIP would be the gateway's own (e.g. fragmentation needed),
    not a server's reply. With announces (a dict), the gateway's ADD_ADDR pure ACKs are counted
    there under "add_addr" instead."""
    icmp_err = other = 0
    for _, f in read_pcap(path):
        if len(f) < 14:
            continue
        et, o = struct.unpack_from("!H", f, 12)[0], 14
        if et == 0x8100 and len(f) >= 18:
            et, o = struct.unpack_from("!H", f, 16)[0], 18
        h = ip_header(f, o, et)
        if not h or h[1] not in addrs:
            continue
        proto, t = h[0], h[3]
        if len(f) > t and ((proto == 1 and f[t] in (3, 4, 5, 11, 12))
                           or (proto == 58 and f[t] in (1, 2, 3, 4))):
            icmp_err += 1
        elif announces is not None and proto == 6 and is_add_addr_ack(f, t):
            announces["add_addr"] = announces.get("add_addr", 0) + 1
        else:
            other += 1
    return icmp_err, other


def write_decap_pcap(src, dst):
    """A copy of capture src with every DSR encapsulation removed (Ethernet addresses kept,
    the ethertype of the inner packet), for tcpdump to count the inner RSTs."""
    with open(src, "rb") as f:
        head = f.read(24)
    e = "<" if struct.unpack_from("<I", head, 0)[0] in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    n = 0
    with open(dst, "wb") as out:
        out.write(head)
        for ts, f in read_pcap(src):
            o, et = 14, struct.unpack_from("!H", f, 12)[0] if len(f) >= 14 else 0
            if et == 0x8100 and len(f) >= 18:
                o, et = 18, struct.unpack_from("!H", f, 16)[0]
            enc = open_encap(f, o, et) if len(f) >= 14 else None
            if enc is not None:
                inner, iet, _ = enc
                h = ip_header(f, inner, iet)
                end = min(len(f), h[4]) if h else len(f)
                f = f[:12] + struct.pack("!H", iet) + f[inner:end]
                n += 1
            sec = int(ts)
            usec = round((ts - sec) * 1e6)
            # microsecond pcap of the same byte order
            out.write(struct.pack(e + "IIII", sec, min(usec, 999999), len(f), len(f)))
            out.write(f)
    if struct.unpack_from(e + "I", head, 0)[0] == 0xA1B23C4D:
        # nanosecond magic: rewrite as microseconds (the records above are in microseconds)
        with open(dst, "r+b") as out:
            out.write(struct.pack(e + "I", 0xA1B2C3D4))
    return n


TCPRST_REASONS = {0: "unspecified", 1: "MPTCP-specific error", 2: "lack of resources",
                  3: "administratively prohibited", 4: "too much outstanding data",
                  5: "unacceptable performance", 6: "middlebox interference"}


def endpoint_resets(cap_c, cap_s, dsr=False):
    """Subflows that a server's own MPTCP stack reset although the gateway forwarded every
    segment of them unchanged.

    A server's kernel may abort one subflow (an MP_TCPRST with its reason) while the MPTCP
    connection goes on over the others. Such a RST is the gateway's doing only if the gateway
    changed, reordered or lost something on the way. So both captures of the subflow are
    compared up to the reset: what the server received is exactly the start of what the client
    sent, what the client received is exactly what the server sent, and the RST itself crossed
    unchanged. Only then are the subflow's RSTs attributed to the endpoint; any other aborting
    RST stays the gateway's.

    DSR (dsr=True): cap_c is the client link merged with the return link, cap_s the server link
    (decapsulated) merged with the return link; what the server received (server link) is
    compared with what the client sent (client link), the return path has no gateway on it. The
    RSTs of the subflow are then counted per link (client, server, return)."""
    client_sessions = {}
    for s in cap_c["sessions"]:
        client_sessions.setdefault((tuple(s["client"]), s["kind"], s["token"]), []).append(s)
    found = []
    for s in cap_s["sessions"]:
        r = s["first_rst"]
        if r is None or not r["from_server"] or r["tcprst"] is None:
            continue
        c = next((c for c in client_sessions.get((tuple(s["client"]), s["kind"], s["token"]), [])
                  if c["first_rst"] is not None and c["first_rst"]["wire"] == r["wire"]), None)
        if c is None:
            continue
        if (c["trace_up"][:len(s["trace_up"])] == s["trace_up"]
                and c["trace_down"] == s["trace_down"]):
            e = {"client": s["client"], "server": s["server"], "kind": s["kind"],
                 "reason": r["tcprst"],
                 "reason_text": TCPRST_REASONS.get(r["tcprst"], "reason %d" % r["tcprst"]),
                 "segments_compared": len(s["trace_up"]) + len(s["trace_down"]),
                 "rsts_client_link": c["rsts"], "rsts_server_link": s["rsts"]}
            if dsr:
                e["rsts_client_link"] = c["rsts_by_link"].get("client", 0)
                e["rsts_server_link"] = s["rsts_by_link"].get("server", 0)
                e["rsts_return_link"] = c["rsts_by_link"].get("return", 0)
                e["via"] = s["via"]
            found.append(e)
    return found


def faithful_subflows(cap_c, cap_s, cpcap, spcap):
    """The client ends, (addr, port), of the subflows that crossed the gateway faithfully: each
    segment of them, both ways, arrived on the other link as often as it was sent and unchanged
    but for what NAT rewrites (`wire`: sequence and acknowledgment numbers, flags, window,
    options, payload digest); nothing lost, nothing added (the order may differ: TCP's to mend).
    NAT only: a DSR subflow's return path does not cross the gateway."""
    clients = {tuple(x["client"]) for cap in (cap_c, cap_s) for x in cap["sessions"]}

    def wires(path):
        seen = {}
        for p in load_pcap(path):
            up, down = (p["src"], p["sport"]), (p["dst"], p["dport"])
            end, way = (up, 0) if up in clients else (down, 1)
            if end in clients:
                seen.setdefault(end, (Counter(), Counter()))[way][p["wire"]] += 1
        return seen

    c, s = wires(cpcap), wires(spcap)
    return {end for end, w in s.items() if c.get(end) == w}


def endpoint_corrupted(conns, endpoint, faithful):
    """Marks (row["endpoint_fault"]) each connection whose data arrived wrong (digest or echo)
    although the gateway can be shown to have had no part in it: a server's own stack reset one
    of its subflows (an endpoint reset, `endpoint_resets`) and every one of its subflows crossed
    the gateway faithfully (`faithful_subflows`), so the endpoints received exactly the segments
    their peers sent. Seen once (CI, 2026-12-07, Linux 6.18.44): a server reset a
    join subflow with MP_TCPRST "MPTCP-specific error" in the middle of a DSS mapping and the
    connection's stream arrived corrupted, every segment of both subflows byte for byte the same
    on both links. Anything short of that proof stays a failure."""
    reset = {tuple(e["client"]) for e in endpoint}
    for r in conns:
        subs = [tuple(r["client"])] if r["client"] else []
        subs += [tuple(j["from"]) for j in r.get("joins") or []]
        r["endpoint_fault"] = bool(
            subs and not (r["digest_ok"] and r["echo_ok"])
            and any(x in reset for x in subs) and all(x in faithful for x in subs))


def start_tcpdump(ns, dev, path, logpath):
    with open(logpath, "w") as log:  # tcpdump holds its own copy of the descriptor
        proc = subprocess.Popen(["ip", "netns", "exec", ns, "tcpdump", "-i", dev, "-s", "0",
                                 "-U", "-nn", "-Z", "root", "-w", path],
                                stdout=subprocess.DEVNULL, stderr=log)
    for _ in range(100):
        with open(logpath) as f:
            if "listening on" in f.read():
                return proc
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.terminate()
    raise SystemExit("tcpdump on %s/%s did not start: %s"
                     % (ns, dev, pathlib.Path(logpath).read_text()))


def stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------------------------------
# orchestration


def nstat(ns):
    out = subprocess.run(["ip", "netns", "exec", ns, "nstat", "-asz"], capture_output=True,
                         text=True, check=True).stdout
    vals = {}
    for ln in out.splitlines():
        f = ln.split()
        if len(f) >= 2 and f[1].isdigit():
            vals[f[0]] = int(f[1])
    return vals


def nstat_delta(before, after):
    d = {}
    for k, v in after.items():
        dv = v - before.get(k, 0)
        if k in NSTAT_ORACLE or (dv and (k.startswith("MPTcpExt") or k in NSTAT_EXTRA)):
            d[k] = dv
    for k in NSTAT_ORACLE:
        d.setdefault(k, 0)
    return dict(sorted(d.items()))


def bed_state(dsr=False):
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                        check=False).stdout.split()
    need = [NS_CLIENT, NS_SWITCH, NS_GATEWAY] + [NS_PREFIX + s for s in SERVERS]
    if dsr:
        need.append(NS_ROUTER)
    missing = [n for n in need if n not in ns]
    if missing:
        raise SystemExit("test bed not up (missing %s): run testbed/netns.sh up" % " ".join(missing))
    for s in SERVERS:
        try:
            pid = int(pathlib.Path(RUN_DIR, s + ".pid").read_text())
            os.kill(pid, 0)
        except (OSError, ValueError):
            raise SystemExit("server %s is not running: run testbed/netns.sh up" % s)
        if dsr and decap_pid(s) is None:
            raise SystemExit("the DSR decapsulator of %s is not running: run testbed/netns.sh up"
                             % s)
    try:
        return open(os.path.join(RUN_DIR, "state")).read().strip()
    except OSError:
        return "unknown"


def decap_pid(s):
    """PID of server s's DSR decapsulator (dsr_decap.py), or None."""
    try:
        pid = int(pathlib.Path(RUN_DIR, s + "-decap.pid").read_text())
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            if b"dsr_decap.py" not in f.read():
                return None
        return pid
    except (OSError, ValueError):
        return None


def decap_counters(timeout=3.0):
    """Every decapsulator's counters, fresh: SIGUSR1, then wait until its file says so."""
    def read(s):
        try:
            with open(os.path.join(RUN_DIR, s + "-decap.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None
    out = {}
    for s in SERVERS:
        pid = decap_pid(s)
        if pid is None:
            out[s] = None
            continue
        old = read(s) or {}
        try:
            os.kill(pid, signal.SIGUSR1)
        except OSError:
            out[s] = None
            continue
        deadline = time.time() + timeout
        cur = old
        while time.time() < deadline:
            cur = read(s) or {}
            if cur.get("dumps", 0) > old.get("dumps", 0):
                break
            time.sleep(0.02)
        out[s] = cur or None
    return out


def log_size(s):
    try:
        return os.path.getsize(os.path.join(RUN_DIR, s + ".jsonl"))
    except OSError:
        return 0


def server_records(offsets, run):
    recs = []
    for s, off in offsets.items():
        try:
            with open(os.path.join(RUN_DIR, s + ".jsonl"), "rb") as f:
                f.seek(off)
                for ln in f:
                    r = json.loads(ln)
                    if r.get("run") == run:
                        recs.append(r)
        except OSError:
            pass
    return recs


def main_run(a):
    if os.geteuid() != 0:
        raise SystemExit("transfers.py: must run as root")
    dsr = a.vip != "nat"
    state = bed_state(dsr)
    if a.expect_joins is None:
        a.expect_joins = 1 if a.proto == "mptcp" else 0
    run = "%08x" % random.getrandbits(32)
    if dsr:
        out = a.out or "/tmp/tz-testbed-runs/%s-v%d-%s-%s-%s" % (
            time.strftime("%Y%m%d-%H%M%S"), a.family, a.proto, a.vip, run)
    else:
        out = a.out or "/tmp/tz-testbed-runs/%s-v%d-%s-%s" % (time.strftime("%Y%m%d-%H%M%S"),
                                                             a.family, a.proto, run)
    os.makedirs(out, exist_ok=True)
    cpcap, spcap = os.path.join(out, "client-link.pcap"), os.path.join(out, "server-link.pcap")
    rpcap = os.path.join(out, "return-link.pcap") if dsr else None

    offsets = {s: log_size(s) for s in SERVERS}
    ns_all = {"client": NS_CLIENT, **{s: NS_PREFIX + s for s in SERVERS}}
    before = {k: nstat(ns) for k, ns in ns_all.items()}
    decap_before = decap_counters() if dsr else None
    caps = [start_tcpdump(NS_CLIENT, CLIENT_IF, cpcap, os.path.join(out, "tcpdump-client.log"))]
    if len(SWITCH_GW_PORTS) == 1:
        caps.append(start_tcpdump(NS_SWITCH, SWITCH_GW_PORTS[0], spcap,
                                  os.path.join(out, "tcpdump-server.log")))
        spcaps = []
    else:
        spcaps = [os.path.join(out, "server-link-%s.pcap" % d) for d in SWITCH_GW_PORTS]
        caps += [start_tcpdump(NS_SWITCH, d, p, os.path.join(out, "tcpdump-server-%s.log" % d))
                 for d, p in zip(SWITCH_GW_PORTS, spcaps)]
    if dsr:
        caps.append(start_tcpdump(NS_CLIENT, RETURN_IF, rpcap,
                                  os.path.join(out, "tcpdump-return.log")))
    t0 = time.time()
    try:
        cmd = ["ip", "netns", "exec", NS_CLIENT, sys.executable, os.path.abspath(__file__),
               "_client", "--run", run, "--family", str(a.family), "--proto", a.proto,
               "--connections", str(a.connections), "--size-kb", str(a.size_kb),
               "--parallel", str(a.parallel), "--expect-joins", str(a.expect_joins),
               "--join-timeout", str(a.join_timeout), "--first-chunk-kb", str(a.first_chunk_kb),
               "--chunk-kb", str(a.chunk_kb), "--pause-ms", str(a.pause_ms),
               "--stagger-ms", str(a.stagger_ms), "--timeout", str(a.timeout),
               "--linger", str(a.linger), "--vip", a.vip]
        cp = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if cp.returncode != 0:
            raise SystemExit("client failed (rc=%d): %s" % (cp.returncode, cp.stderr[-2000:]))
        crecs = json.loads(cp.stdout)
        # the servers log a connection once it is closed on their side
        deadline = time.time() + a.timeout
        while time.time() < deadline:
            srecs = server_records(offsets, run)
            if len(srecs) >= a.connections:
                break
            time.sleep(0.1)
        time.sleep(a.settle)  # last FIN/ACKs of every subflow
    finally:
        for c in caps:
            stop(c)
    if spcaps:
        merge_pcaps(spcaps, spcap)
    elapsed = time.time() - t0
    srecs = server_records(offsets, run)
    after = {k: nstat(ns) for k, ns in ns_all.items()}
    deltas = {k: nstat_delta(before[k], after[k]) for k in ns_all}
    decap = None
    if dsr:
        decap_after = decap_counters()
        decap = {s: {k: ((decap_after[s] or {}).get(k, 0) - (decap_before[s] or {}).get(k, 0))
                     for k in DECAP_KINDS + ("bad",)}
                 if decap_after.get(s) and decap_before.get(s) else None for s in SERVERS}

    summary = analyse(a, run, state, out, crecs, srecs, deltas, cpcap, spcap, rpcap, decap)
    summary["elapsed_s"] = round(elapsed, 2)
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    json.dump(summary, sys.stdout, indent=1)
    sys.stdout.write("\n")
    report(summary)
    return 0 if summary["ok"] else 1


def analyse(a, run, state, out, crecs, srecs, deltas, cpcap, spcap, rpcap=None, decap=None):
    mptcp = a.proto == "mptcp"
    dsr = a.vip != "nat"
    checks = {}

    def check(name, ok, detail):
        checks[name] = {"ok": bool(ok), "detail": detail}

    by_conn = {}
    dup = 0
    for r in srecs:
        if r["conn"] in by_conn:
            dup += 1
        by_conn.setdefault(r["conn"], r)
    if dsr:
        # The client's view: what it sent (client link) and received (return link); the
        # servers' view: what they received (server link, decapsulated) and sent (return link).
        pkt_c, pkt_s = load_pcap(cpcap, "client"), load_pcap(spcap, "server")
        pkt_r = load_pcap(rpcap, "return")
        cap_c = analyse_packets(merge_links(pkt_c, pkt_r))
        cap_s = analyse_packets(merge_links(pkt_s, pkt_r))
        dpcap = os.path.join(out, "server-link-decap.pcap")
        write_decap_pcap(spcap, dpcap)
        rst_c, rst_s = count_rst_tcpdump(cpcap), count_rst_tcpdump(dpcap)
        rst_r = count_rst_tcpdump(rpcap)
    else:
        cap_c, cap_s = analyse_pcap(cpcap), analyse_pcap(spcap)
        rst_c, rst_s = count_rst_tcpdump(cpcap), count_rst_tcpdump(spcap)
    token_conn = {r["token"]: r["conn"] for r in srecs if r.get("token")}

    conns = []
    for c in sorted(crecs, key=lambda r: r["conn"]):
        i = c["conn"]
        s = by_conn.get(i)
        owner = s["server"] if s else None
        row = {"conn": i, "client": c.get("local"), "first_subflow_server": owner,
               "bytes": c["bytes"], "error": c["error"] or (s or {}).get("error")}
        row["digest_ok"] = bool(s and s["sha256_rx"] == c["sha256"] and s["bytes_rx"] == c["bytes"])
        row["echo_ok"] = c["echo_sha256"] == c["sha256"] and c["echo_bytes"] == c["bytes"]
        if mptcp:
            token = s.get("token") if s else None
            row["token"] = token
            row["mptcp"] = bool(s and s["proto"] == "mptcp" and not c.get("fallback", True))
            srv_subs = (s or {}).get("subflows") or []
            peer = (s or {}).get("peer")
            row["server_subflows"] = len(srv_subs)
            row["client_extra_subflows"] = c.get("max_extra_subflows", 0)
            row["join_wait_s"] = c.get("join_wait_s")
            joins = []
            for j in cap_s["joins"]:
                if token is None or j["token"] != token:
                    continue
                # DSR: the server is the outer destination (the inner one is the VIP)
                srv = ADDR_SERVER.get(j["via"] or j["server"][0], j["via"] or j["server"][0])
                joins.append({"from": j["client"], "server": srv, "dport": j["server"][1],
                              "syns": j["syns"], "answer": j["answer"],
                              "payload_bytes_up": j["up"], "payload_bytes_down": j["down"],
                              "established_on_server": (srv == owner and j["answer"] == "synack"
                                                        and any(sf[1] == j["client"]
                                                                for sf in srv_subs))})
            row["joins"] = joins
            row["joins_client_link"] = sum(1 for j in cap_c["joins"]
                                           if token and j["token"] == token)
            est = [sf for sf in srv_subs if sf[1] != peer]
            row["joins_ok"] = (len(est) >= a.expect_joins
                               and row["client_extra_subflows"] >= a.expect_joins)
            # A join goes to the service port (token routing; NAT's translated join ports) or,
            # with --join-ports, to its owner's own join port (DSR keeps the VIP's port).
            row["joins_on_owner"] = all(j["server"] == owner
                                        and j["dport"] in (SRV_PORT, a.join_ports.get(owner))
                                        for j in joins)
        conns.append(row)

    n = a.connections
    check("completed", len(crecs) == n and all(not r["error"] for r in conns),
          "%d/%d connections without error" % (sum(not r["error"] for r in conns), n))
    check("server_records", len(by_conn) == n and dup == 0 and len(srecs) == n,
          "%d records for %d connections, %d duplicates" % (len(srecs), n, dup))
    endpoint = endpoint_resets(cap_c, cap_s, dsr)
    if not dsr and endpoint and not all(r["digest_ok"] and r["echo_ok"] for r in conns):
        endpoint_corrupted(conns, endpoint, faithful_subflows(cap_c, cap_s, cpcap, spcap))
    else:
        endpoint_corrupted(conns, endpoint, set())
    excused = [r for r in conns if r["endpoint_fault"]]
    blame = "".join("; conn %d corrupted by its endpoints (a server reset one of its subflows; "
                    "every segment of its %d subflows crossed the gateway unchanged, none lost "
                    "or added)" % (r["conn"], 1 + len(r.get("joins") or [])) for r in excused)
    check("digest", all(r["digest_ok"] or r["endpoint_fault"] for r in conns),
          "%d/%d: client sha256(sent) == server sha256(received)%s"
          % (sum(r["digest_ok"] for r in conns), n, blame))
    check("echo", all(r["echo_ok"] or r["endpoint_fault"] for r in conns),
          "%d/%d: sha256(echo) == sha256(sent)%s"
          % (sum(r["echo_ok"] for r in conns), n, blame))
    if not a.allow_rst and dsr:
        # per link: aborting RSTs (pcap parse) minus those of endpoint resets must be 0, and
        # aborting + after both FINs must add up to tcpdump's count (server link: decapsulated)
        links = {"client": (cap_c, rst_c), "server": (cap_s, rst_s), "return": (cap_c, rst_r)}
        ok, parts = True, []
        for name, (cap, td) in links.items():
            t = cap["rst_links"].get(name, {"aborting": 0, "after_close": 0})
            ep = sum(e["rsts_%s_link" % name] for e in endpoint)
            ok = ok and t["aborting"] == ep and t["aborting"] + t["after_close"] == td
            parts.append("%s link %d (tcpdump %d, after both FINs %d)"
                         % (name, t["aborting"] - ep, td, t["after_close"]))
        detail = "aborting RSTs: " + ", ".join(parts)
        for e in endpoint:
            detail += ("; endpoint reset: %s %s.%d -> %s.%d, MP_TCPRST '%s' from the server, "
                       "all %d segments before it crossed the gateway unchanged (%d / %d / %d "
                       "RSTs)" % (e["kind"], e["client"][0], e["client"][1], e["server"][0],
                                  e["server"][1], e["reason_text"], e["segments_compared"],
                                  e["rsts_client_link"], e["rsts_server_link"],
                                  e["rsts_return_link"]))
        check("no_rst", ok, detail)
    elif not a.allow_rst:
        ab_c, ab_s = len(cap_c["rst"]), len(cap_s["rst"])
        ep_c = sum(e["rsts_client_link"] for e in endpoint)
        ep_s = sum(e["rsts_server_link"] for e in endpoint)
        detail = ("aborting RSTs: client link %d, server link %d (all RSTs, tcpdump: %d / %d; "
                  "after both FINs: %d / %d)" % (ab_c - ep_c, ab_s - ep_s, rst_c, rst_s,
                                                 cap_c["rst_after_close"],
                                                 cap_s["rst_after_close"]))
        for e in endpoint:
            detail += ("; endpoint reset: %s %s.%d -> %s.%d, MP_TCPRST '%s' from the server, "
                       "all %d segments before it crossed the gateway unchanged (%d / %d RSTs)"
                       % (e["kind"], e["client"][0], e["client"][1], e["server"][0],
                          e["server"][1], e["reason_text"], e["segments_compared"],
                          e["rsts_client_link"], e["rsts_server_link"]))
        check("no_rst", ab_c == ep_c and ab_s == ep_s
              and ab_c + cap_c["rst_after_close"] == rst_c
              and ab_s + cap_s["rst_after_close"] == rst_s, detail)

    srv_names = list(SERVERS)
    per_server = {s: {"first_subflows": 0, "join_syns_received": 0, "joins_established": 0,
                      "nstat": deltas[s]} for s in srv_names}
    for r in srecs:
        if r["server"] in per_server:
            per_server[r["server"]]["first_subflows"] += 1
            if mptcp:
                per_server[r["server"]]["joins_established"] += sum(
                    1 for sf in r.get("subflows") or [] if sf[1] != r["peer"])
    for j in cap_s["joins"]:
        name = ADDR_SERVER.get(j["via"] or j["server"][0])
        if name:
            per_server[name]["join_syns_received"] += 1
    nstat_sum = {k: sum(deltas[s].get(k, 0) for s in srv_names) for k in NSTAT_ORACLE}

    if mptcp:
        check("mptcp", all(r["mptcp"] for r in conns),
              "%d/%d connections MPTCP on both ends (no fallback)"
              % (sum(r["mptcp"] for r in conns), n))
        check("joins_established", all(r["joins_ok"] for r in conns),
              "%d/%d connections have >= %d join(s) established (server view and client view)"
              % (sum(r["joins_ok"] for r in conns), n, a.expect_joins))
        check("joins_on_owner", all(r["joins_on_owner"] for r in conns),
              "%d/%d connections: every MP_JOIN SYN on the server link went to the server "
              "holding the first subflow" % (sum(r["joins_on_owner"] for r in conns), n))
        stray = [("%s.%d>%s.%d" % tuple(j["client"] + j["server"]), j["token"])
                 for j in cap_s["joins"] if j["token"] not in token_conn]
        check("joins_all_known", not stray,
              "%d MP_JOIN SYNs on the server link with a token no server logged%s"
              % (len(stray), (": %s" % stray[:5]) if stray else ""))
        check("no_token_found", nstat_sum["MPTcpExtMPJoinNoTokenFound"] == 0,
              "MPJoinNoTokenFound delta summed over servers: %d"
              % nstat_sum["MPTcpExtMPJoinNoTokenFound"])
        est_total = sum(v["joins_established"] for v in per_server.values())
        check("nstat_consistent",
              nstat_sum["MPTcpExtMPCapableSYNRX"] >= n
              and nstat_sum["MPTcpExtMPJoinAckRx"] >= est_total
              and nstat_sum["MPTcpExtMPJoinSynRx"] >= len(cap_s["joins"]),
              "servers' MPCapableSYNRX %d (>= %d connections), MPJoinSynRx %d (>= %d join SYNs "
              "captured), MPJoinAckRx %d (>= %d joins established)"
              % (nstat_sum["MPTcpExtMPCapableSYNRX"], n, nstat_sum["MPTcpExtMPJoinSynRx"],
                 len(cap_s["joins"]), nstat_sum["MPTcpExtMPJoinAckRx"], est_total))
        # The token the gateway learns (SHA-256 of the key in the server's SYN/ACK) must be the
        # token the server itself reports, for every connection.
        bad_tok = []
        for r in srecs:
            t = cap_s["mpc_synack_tokens"].get(tuple(r["peer"]))
            if r.get("token") and t != r["token"]:
                bad_tok.append((r["conn"], r["token"], t))
        check("token_derivation", not bad_tok,
              "%d/%d server tokens == sha256(server key in the captured SYN/ACK)[:4]%s"
              % (len(srecs) - len(bad_tok), len(srecs),
                 (": mismatches %s" % bad_tok[:3]) if bad_tok else ""))
        if a.expect_joins > 0 and a.direct_joins:
            # Off-path joins go from the client straight to the server (tz-rtr), never over the
            # server link; the servers' subflow lists (joins_established) are the oracle.
            vip_addr = target(a)[0]
            direct = sum(1 for r in srecs if any(
                sf[0][0] != vip_addr for sf in (r.get("subflows") or []) if sf[1] != r["peer"]))
            check("joins_direct", direct == n,
                  "%d/%d connections have a join the server took on its own address (from the "
                  "client straight to the server, off the gateway's path)" % (direct, n))
        elif a.expect_joins > 0:
            moved = sum(
                1 for r in conns if any(j["payload_bytes_up"] + j["payload_bytes_down"] > 0
                                        for j in r["joins"]))
            check("data_on_joins", moved == n,
                  "%d/%d connections moved payload over their join subflow (server link)"
                  % (moved, n))
    else:
        check("no_mptcp", cap_c["mptcp_packets"] == 0 and cap_s["mptcp_packets"] == 0
              and nstat_sum["MPTcpExtMPCapableSYNRX"] == 0,
              "MPTCP options in captures: client link %d, server link %d packets"
              % (cap_c["mptcp_packets"], cap_s["mptcp_packets"]))
    if a.require_all_servers:
        check("all_servers_used", all(v["first_subflows"] > 0 for v in per_server.values()),
              "first subflows per server: %s"
              % {s: v["first_subflows"] for s, v in per_server.items()})

    dsr_info = None
    if dsr:
        dsr_info = dsr_checks(a, check, crecs, by_conn, token_conn, cap_s, cpcap, spcap, pkt_r,
                              decap, per_server)

    summary = {
        "ok": all(c["ok"] for c in checks.values()),
        "run": run, "bed": state, "out": out,
        "params": {"family": a.family, "proto": a.proto, "connections": n,
                   "size_kb": a.size_kb, "expect_joins": a.expect_joins,
                   "parallel": a.parallel},
        "checks": checks,
        "per_server": per_server,
        "client_nstat": deltas["client"],
        "links": {
            "client": {"pcap": cpcap, "tcp_packets": cap_c["tcp_packets"], "rst": rst_c,
                       "rst_after_close": cap_c["rst_after_close"],
                       "rst_aborting": cap_c["rst"][:20], "join_syns": len(cap_c["joins"])},
            "server": {"pcap": spcap, "tcp_packets": cap_s["tcp_packets"], "rst": rst_s,
                       "rst_after_close": cap_s["rst_after_close"],
                       "rst_aborting": cap_s["rst"][:20], "join_syns": len(cap_s["joins"])},
            "endpoint_resets": endpoint,
        },
        "connections": conns,
    }
    if dsr:
        # the client / server views are merged with the return link: per-link numbers here
        for name, cap, pk in (("client", cap_c, pkt_c), ("server", cap_s, pkt_s)):
            t = cap["rst_links"].get(name, {"aborting": 0, "after_close": 0})
            summary["links"][name].update(tcp_packets=len(pk), rst_after_close=t["after_close"])
        summary["params"]["vip"] = a.vip
        summary["params"]["target"] = list(target(a))
        summary["links"]["server"]["decap_pcap"] = dpcap
        summary["links"]["return"] = {
            "pcap": rpcap, "tcp_packets": len(pkt_r), "rst": rst_r,
            "rst_after_close": cap_c["rst_links"].get("return", {}).get("after_close", 0)}
        summary["dsr"] = dsr_info
        summary["ok"] = all(c["ok"] for c in checks.values())
    return summary


def dsr_checks(a, check, crecs, by_conn, token_conn, cap_s, cpcap, spcap, pkt_r, decap,
               per_server):
    """The DSR checks: replies bypass the gateway, every client -> VIP segment on the server
    link is encapsulated as expected towards the server that owns its connection, and the
    owners' decapsulators counted that kind."""
    fam = a.family
    vip = target(a)[0]
    want = encap_kind(a)
    gue = want.startswith("gue")

    # (a) the return path: nothing from a VIP on the client link (any protocol), no plain
    # segment from the VIP on the server link, the replies on the return link.
    announced = {}
    icmp_c, from_vip_c = ip_packets_from(cpcap, ALL_VIPS, announced if a.announced else None)
    from_vip_s = sum(ip_packets_from(spcap, {vip}))
    from_vip_r = sum(1 for p in pkt_r if p["src"] == vip)
    check("dsr_bypass", from_vip_c == 0 and from_vip_s == 0 and from_vip_r > 0,
          "IP packets from a VIP: client link %d%s%s, server link %d (plain, from %s); TCP "
          "segments from %s on the return link: %d"
          % (from_vip_c, (" (+%d ICMP errors, the gateway's own)" % icmp_c) if icmp_c else "",
             (" (+%d ADD_ADDR / MP_PRIO pure ACKs, the gateway's own)" % announced.get("add_addr", 0))
             if a.announced else "", from_vip_s, vip, vip, from_vip_r))

    # (b) encapsulation of every client -> VIP segment on the server link
    local_conn = {tuple(c["local"]): c["conn"] for c in crecs if c.get("local")}
    owner_addr = {name: addrs[0 if fam == 4 else 1] for name, addrs in SERVERS.items()}
    problems = {}
    captured = {s: 0 for s in SERVERS}
    segs = subflows = unattributed = 0
    unstable = []
    hashes = set()
    kinds = {}

    def bad(what, n):
        problems[what] = problems.get(what, 0) + n

    vip_ports = {SRV_PORT} | set(a.join_ports.values())
    for s in cap_s["sessions"]:
        if s["server"][0] != vip or s["server"][1] not in vip_ports:
            continue
        subflows += 1
        conn = (token_conn.get(s["token"]) if s["kind"] == "join"
                else local_conn.get(tuple(s["client"])))
        owner = by_conn[conn]["server"] if conn in by_conn else None
        flow_outer = set()
        for (kind, osrc, odst, usport, ucsum, variant), n in s["encap"].items():
            segs += n
            kinds[kind or "plain"] = kinds.get(kind or "plain", 0) + n
            if kind is None:
                bad("not encapsulated", n)
                continue
            if kind != want:
                bad("encapsulated as %s" % kind, n)
                continue
            srv = ADDR_SERVER.get(odst)
            if srv in captured:
                captured[srv] += n
            if owner is None:
                unattributed += n
            elif odst != owner_addr[owner]:
                bad("outer destination is not the owner", n)
            flow_outer.add((osrc, usport))
            if not gue:
                if osrc not in GW_SERVER_SIDE[fam]:
                    bad("outer source is not %s" % " or ".join(sorted(GW_SERVER_SIDE[fam])), n)
                continue
            a_src = ipaddress.ip_address(osrc)
            net = GUE_SRC_NET[fam]
            if a_src not in net or (fam == 4 and a_src in (net.network_address,
                                                           net.broadcast_address)):
                bad("outer source outside %s" % net, n)
            if usport is None or not GUE_SPORTS[0] <= usport <= GUE_SPORTS[1]:
                bad("UDP source port outside %d..%d" % GUE_SPORTS, n)
            if ucsum != ("zero" if fam == 4 else "ok"):
                bad("UDP checksum %s (expected %s)" % (ucsum, "0" if fam == 4 else "valid"), n)
            if a.gue_variant != "any" and variant != int(a.gue_variant):
                bad("GUE variant %s" % variant, n)
        if len(flow_outer) > 1:
            unstable.append("%s.%d" % tuple(s["client"]))
        hashes |= flow_outer
    if unstable:
        bad("outer source / UDP port changes within a subflow", len(unstable))
    spread = None
    if gue:
        srcs = {h[0] for h in hashes}
        ports = {h[1] for h in hashes}
        spread = {"subflows": subflows, "outer_sources": len(srcs), "udp_source_ports": len(ports)}
        if subflows >= 4 and (len(srcs) < 2 or len(ports) < 2):
            bad("outer source / UDP port not hashed (%d sources, %d ports over %d subflows)"
                % (len(srcs), len(ports), subflows), 1)
    check("dsr_encap", segs > 0 and not problems,
          "%d client -> %s.%d segments on the server link in %d subflows: %s; expected %s to "
          "the owner%s%s%s" % (
              segs, vip, SRV_PORT, subflows, kinds, want,
              ("; problems: %s" % problems) if problems else "",
              ("; %d segments of subflows of no connection of this run" % unattributed)
              if unattributed else "",
              ("; hash spread: %d outer sources, %d UDP ports" % (spread["outer_sources"],
                                                                   spread["udp_source_ports"]))
              if spread else ""))

    # (c) the decapsulators: the owners counted the expected kind, nobody anything else
    dproblems = []
    for s in SERVERS:
        d = (decap or {}).get(s)
        if d is None:
            dproblems.append("%s: no counters" % s)
            continue
        per_server[s]["decap"] = d
        others = {k: v for k, v in d.items() if k != want and v}
        if others:
            dproblems.append("%s: %s" % (s, others))
        owns = per_server[s]["first_subflows"] > 0 or per_server[s]["join_syns_received"] > 0
        if d[want] < captured[s] or (owns and d[want] == 0):
            dproblems.append("%s: %s +%d < %d captured" % (s, want, d[want], captured[s]))
    check("dsr_decap", not dproblems,
          "decapsulator %s deltas (captured on the server link): %s%s" % (
              want, ", ".join("%s +%s (%d)" % (s, ((decap or {}).get(s) or {}).get(want, "?"),
                                               captured[s]) for s in SERVERS),
              ("; problems: %s" % "; ".join(dproblems)) if dproblems else ""))
    return {"vip": vip, "port": SRV_PORT, "encap": want, "segments": segs, "subflows": subflows,
            "kinds": kinds, "captured_per_server": captured, "problems": problems,
            "unattributed_segments": unattributed, "hash_spread": spread,
            "from_vip": {"client_link": from_vip_c, "client_link_icmp_errors": icmp_c,
                         "server_link": from_vip_s, "return_link": from_vip_r},
            "decap": decap}


def report(s):
    w = sys.stderr.write
    p = s["params"]
    w("\n== run %s  bed: %s  IPv%d %s  %d x %d KB  (%.1fs; artefacts in %s)\n"
      % (s["run"], s["bed"], p["family"], p["proto"], p["connections"], p["size_kb"],
         s["elapsed_s"], s["out"]))
    if "dsr" in s:
        d = s["dsr"]
        w("  DSR %s: VIP %s port %d, %s expected on the server link, replies on the return link\n"
          % (p["vip"], d["vip"], d["port"], d["encap"]))
    for r in s["connections"]:
        line = "  conn %2d %-22s -> %-5s digest=%s echo=%s" % (
            r["conn"], "%s.%s" % tuple(r["client"]) if r["client"] else "?",
            r["first_subflow_server"], "ok" if r["digest_ok"] else "BAD",
            "ok" if r["echo_ok"] else "BAD")
        if r.get("endpoint_fault"):
            line += " (the endpoints' doing: every segment crossed the gateway unchanged)"
        if "joins" in r:
            js = ", ".join("%s.%d->%s(%s,%dK up/%dK down%s)" % (
                j["from"][0], j["from"][1], j["server"], j["answer"],
                j["payload_bytes_up"] // 1024, j["payload_bytes_down"] // 1024,
                "" if j["established_on_server"] else ",not established")
                for j in r["joins"]) or "none"
            line += " subflows(srv)=%d joins: %s" % (r["server_subflows"], js)
        if r["error"]:
            line += " ERROR: %s" % r["error"]
        w(line + "\n")
    w("  per server:\n")
    for name, v in s["per_server"].items():
        ns = v["nstat"]
        w("    %s: first subflows %d, join SYNs received %d, joins established %d | nstat "
          "MPCapableSYNRX %d MPJoinSynRx %d MPJoinAckRx %d MPJoinNoTokenFound %d TcpOutRsts %d\n"
          % (name, v["first_subflows"], v["join_syns_received"], v["joins_established"],
             ns["MPTcpExtMPCapableSYNRX"], ns["MPTcpExtMPJoinSynRx"], ns["MPTcpExtMPJoinAckRx"],
             ns["MPTcpExtMPJoinNoTokenFound"], ns["TcpOutRsts"]))
    lc, ls = s["links"]["client"], s["links"]["server"]
    if "dsr" in s:
        lr = s["links"]["return"]
        w("  RSTs: client link %d, server link %d, return link %d (of which after both FINs: "
          "%d / %d / %d)\n" % (lc["rst"], ls["rst"], lr["rst"], lc["rst_after_close"],
                                ls["rst_after_close"], lr["rst_after_close"]))
        w("  decapsulators: %s\n" % ", ".join(
            "%s %s" % (name, " ".join("%s+%d" % (k, n) for k, n in (v.get("decap") or {}).items()
                                      if n) or "+0")
            for name, v in s["per_server"].items()))
    else:
        w("  RSTs: client link %d, server link %d (of which after both FINs: %d / %d)\n"
          % (lc["rst"], ls["rst"], lc["rst_after_close"], ls["rst_after_close"]))
    for name, c in s["checks"].items():
        w("  [%s] %-18s %s\n" % ("PASS" if c["ok"] else "FAIL", name, c["detail"]))
    w("== %s\n" % ("PASS" if s["ok"] else "FAIL"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", nargs="?", default="run", choices=["run", "_client"],
                    help=argparse.SUPPRESS)
    ap.add_argument("-4", dest="family", action="store_const", const=4, default=4,
                    help="IPv4 (default)")
    ap.add_argument("-6", dest="family", action="store_const", const=6, help="IPv6")
    ap.add_argument("--family", type=int, choices=[4, 6], dest="family")
    ap.add_argument("--proto", choices=["mptcp", "tcp"], default="mptcp")
    ap.add_argument("--vip", choices=["nat", "dsr-ipip", "dsr-gue"], default="nat",
                    help="the VIP: nat (default: 10.90.100.10:80 / [fd90:100::10]:80), or a DSR "
                         "VIP on port 8080: dsr-ipip (10.90.100.20 / fd90:100::20, IPIP / "
                         "IPv6-in-IPv6) or dsr-gue (10.90.100.21 / fd90:100::21, GUE)")
    ap.add_argument("--gue-variant", choices=["0", "1", "any"], default="0",
                    help="GUE variant the dsr-gue checks expect (default 0)")
    ap.add_argument("-n", "--connections", type=int, default=24)
    ap.add_argument("--size-kb", type=int, default=256, help="payload per connection (KB)")
    ap.add_argument("--parallel", type=int, default=8, help="connections in flight at once")
    ap.add_argument("--expect-joins", type=int, default=None,
                    help="joins each connection must have (default 1 for mptcp, 0 for tcp)")
    ap.add_argument("--join-timeout", type=float, default=3.0,
                    help="seconds the client waits for the join after the first chunk")
    ap.add_argument("--first-chunk-kb", type=int, default=16)
    ap.add_argument("--chunk-kb", type=int, default=1024,
                    help="write size after the first chunk (default: the rest in one write, "
                         "which fills the first subflow so the scheduler uses the join too)")
    ap.add_argument("--pause-ms", type=float, default=0.0, help="pause between writes")
    ap.add_argument("--stagger-ms", type=float, default=20.0, help="between connection starts")
    ap.add_argument("--timeout", type=float, default=20.0, help="socket / wait timeout (s)")
    ap.add_argument("--linger", type=float, default=0.3,
                    help="seconds the client keeps a finished connection open before close()")
    ap.add_argument("--settle", type=float, default=1.0, help="capture time after the last close")
    ap.add_argument("--allow-rst", action="store_true", help="do not fail on RSTs")
    ap.add_argument("--join-ports", default="",
                    help="srv1=18081,srv2=18082,...: joins may go to the owner's join port")
    ap.add_argument("--direct-joins", action="store_true",
                    help="joins go to the servers' own addresses, bypassing the gateway")
    ap.add_argument("--announced", action="store_true",
                    help="the gateway sends ADD_ADDRs from the VIP (DSR: allowed on the client "
                         "link)")
    ap.add_argument("--require-all-servers", action="store_true",
                    help="fail unless every server got at least one connection")
    ap.add_argument("--out", help="artefact directory (default /tmp/tz-testbed-runs/...)")
    ap.add_argument("--run", default="manual", help=argparse.SUPPRESS)
    a = ap.parse_args()
    try:
        a.join_ports = {k: int(v) for k, v in
                        (kv.split("=", 1) for kv in a.join_ports.split(",") if kv)}
    except ValueError:
        ap.error("--join-ports: expected srv1=PORT,srv2=PORT,...")
    if a.mode == "_client":
        client_main(a)
        return 0
    return main_run(a)


if __name__ == "__main__":
    sys.exit(main())
