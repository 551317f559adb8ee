#!/usr/bin/env python3
"""How soon real Linux MPTCP clients send their first MP_JOIN SYN after the handshake.

For every connection in the captures: the time from the client's third ACK (the first
client -> server segment carrying MP_CAPABLE with both keys, no SYN) to the client's first
MP_JOIN SYN carrying the connection's token (SHA-256 of the server key echoed in that third
ACK, first 32 bits). Captures of one client namespace on several interfaces can be given
together (same clock): they are merged by time. Ethernet pcaps (tcpdump -i IFACE).

    testbed/join_delay.py [--json] PCAP [PCAP ...]

Prints the count, min, percentiles and max in milliseconds (with --json: a JSON object).
That is the budget token sharing between gateway instances has: a join reaching an instance
that has not yet learned the token is dropped, and the client retransmits it 1 s later.
"""

import argparse
import hashlib
import json
import socket
import struct
import sys


def read_pcap(path):
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return
    magic = struct.unpack_from("<I", data, 0)[0]
    e = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    nano = struct.unpack_from(e + "I", data, 0)[0] == 0xA1B23C4D
    if struct.unpack_from(e + "I", data, 20)[0] != 1:
        return
    off = 24
    while off + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack_from(e + "IIII", data, off)
        off += 16
        yield sec + frac / (1e9 if nano else 1e6), data[off:off + incl]
        off += incl


def tcp_segment(frame):
    """(src, dst, sport, dport, flags, options) of an untagged TCP/IPv4 or IPv6 frame."""
    if len(frame) < 14:
        return None
    et = struct.unpack_from("!H", frame, 12)[0]
    o = 14
    if et == 0x0800 and len(frame) >= o + 20:
        if frame[o + 9] != 6:
            return None
        src = socket.inet_ntop(socket.AF_INET, frame[o + 12:o + 16])
        dst = socket.inet_ntop(socket.AF_INET, frame[o + 16:o + 20])
        t = o + (frame[o] & 0x0F) * 4
    elif et == 0x86DD and len(frame) >= o + 40:
        if frame[o + 6] != 6:
            return None
        src = socket.inet_ntop(socket.AF_INET6, frame[o + 8:o + 24])
        dst = socket.inet_ntop(socket.AF_INET6, frame[o + 24:o + 40])
        t = o + 40
    else:
        return None
    if len(frame) < t + 20:
        return None
    sport, dport = struct.unpack_from("!HH", frame, t)
    doff = (frame[t + 12] >> 4) * 4
    flags = frame[t + 13]
    return src, dst, sport, dport, flags, frame[t + 20:t + doff]


def mptcp_options(opts):
    i = 0
    while i < len(opts):
        k = opts[i]
        if k == 0:
            break
        if k == 1:
            i += 1
            continue
        if i + 1 >= len(opts) or opts[i + 1] < 2:
            break
        n = opts[i + 1]
        if k == 30 and n >= 3:
            yield opts[i + 2] >> 4, opts[i:i + n]
        i += n


def analyse(paths):
    events = []
    for p in paths:
        events.extend(read_pcap(p))
    events.sort(key=lambda e: e[0])
    third_ack = {}  # token -> time
    first_join = {}
    for ts, frame in events:
        seg = tcp_segment(frame)
        if seg is None:
            continue
        _, _, _, _, flags, opts = seg
        syn, ack = flags & 0x02, flags & 0x10
        for sub, o in mptcp_options(opts):
            if sub == 0 and not syn and ack and len(o) >= 20:
                # MP_CAPABLE with both keys: the third ACK (or its retransmission / the first
                # data segment repeating the keys): the first one counts.
                server_key = o[12:20]
                token = hashlib.sha256(server_key).digest()[:4].hex()
                third_ack.setdefault(token, ts)
            elif sub == 1 and syn and not ack and len(o) >= 12:
                token = o[4:8].hex()
                first_join.setdefault(token, ts)
    delays = sorted((first_join[t] - third_ack[t]) * 1000.0
                    for t in third_ack if t in first_join and first_join[t] >= third_ack[t])
    return delays, len(third_ack), len(first_join)


def pct(v, q):
    if not v:
        return None
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("pcaps", nargs="+")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--per-file", action="store_true",
                    help="analyse each capture on its own (one client link per run) and pool")
    a = ap.parse_args()
    if a.per_file:
        delays, conns, joins = [], 0, 0
        for p in a.pcaps:
            d, c, j = analyse([p])
            delays += d
            conns += c
            joins += j
        delays.sort()
    else:
        delays, conns, joins = analyse(a.pcaps)
    out = {"connections": conns, "joined": len(delays), "join_tokens": joins,
           "ms": {"min": pct(delays, 0), "p10": pct(delays, 0.1), "p50": pct(delays, 0.5),
                  "p90": pct(delays, 0.9), "p99": pct(delays, 0.99),
                  "max": delays[-1] if delays else None}}
    if a.json:
        json.dump(out, sys.stdout)
        print()
    else:
        m = out["ms"]
        if not delays:
            print("no connection with both a third ACK and a join")
            return 1
        print("third ACK -> first MP_JOIN SYN: %d connections (%d with MP_CAPABLE keys seen)"
              % (len(delays), conns))
        print("  ms: min %.3f p10 %.3f p50 %.3f p90 %.3f p99 %.3f max %.3f"
              % (m["min"], m["p10"], m["p50"], m["p90"], m["p99"], m["max"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
