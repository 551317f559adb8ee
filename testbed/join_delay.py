#!/usr/bin/env python3
"""How soon real Linux MPTCP clients send their first MP_JOIN SYN after the handshake.

For every connection in the captures: the time from the client's third ACK (the first
client -> server segment carrying MP_CAPABLE with both keys, no SYN) to the client's first
MP_JOIN SYN carrying the connection's token (SHA-256 of the server key echoed in that third
ACK, first 32 bits). Captures of one client namespace on several interfaces can be given
together (same clock): they are merged by time. Ethernet pcaps (tcpdump -i IFACE), parsed by
transfers.py's reader (DSR tunnels opened).

    testbed/join_delay.py [--json] PCAP [PCAP ...]

Prints the count, min, percentiles and max in milliseconds (with --json: a JSON object).
That is the budget token sharing between gateway instances has: a join reaching an instance
that has not yet learned the token is dropped, and the client retransmits it 1 s later.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from transfers import load_pcap, merge_links, token_of_key


def analyse(paths):
    segs = merge_links(*(load_pcap(p) for p in paths))
    third_ack = {}  # token -> time
    first_join = {}
    for p in segs:
        mpc, join = p["mpc"], p["join"]
        if mpc and mpc.get("peer_key") and p["ack"] and not p["syn"]:
            # MP_CAPABLE with both keys: the third ACK (or a retransmission, or the first data
            # segment repeating the keys): the first one counts. The token is the server's.
            third_ack.setdefault(token_of_key(mpc["peer_key"]), p["ts"])
        elif join and join["token"] and p["syn"] and not p["ack"]:
            first_join.setdefault(join["token"], p["ts"])
    delays = sorted((first_join[t] - third_ack[t]) * 1000.0
                    for t in third_ack if t in first_join and first_join[t] >= third_ack[t])
    return delays, len(third_ack), len(first_join)


def pct(v, q):
    if not v:
        return None
    return v[min(len(v) - 1, round(q * (len(v) - 1)))]


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
