#!/usr/bin/env python3
"""Where the subflows of one transfers.py run went in the multi-instance bed (testbed/multi.sh).

Reads the run's summary.json and its captures: one server-link capture per instance port of the
switch (server-link-sw-gN.pcap: every frame instance N tunnelled to a server), the client link
(client -> VIP) and the return link (server -> client). For every subflow (client address and
port) it lists the instances that carried it, and counts its RSTs on the client and return links.

    multi_report.py RUN_DIR [--instances gw1,gw2,gw3]

Prints a JSON object on stdout:
  subflows: {"10.90.0.2.41901": {"conn": 3, "kind": "first"|"join", "instances": ["gw1"],
             "rst": 0, "answered": true}, ...}   (answered: a SYN/ACK reached the client; joins
             that no instance passed have conn null)
  totals:   connections, completed, first subflows and joins that stayed on one instance or
            moved, RSTs on each, joins per instance (seen on the server link) and per outcome.
A subflow "moved" when more than one instance tunnelled its packets (ECMP changed while it ran).
Captures are read with tcpdump -nn (IPIP / IPv6-in-IPv6 print the inner header; use the
dsr-ipip VIPs).
"""

import argparse
import json
import os
import pathlib
import re
import subprocess
import sys

INNER = re.compile(r"IP6? ([0-9a-f:.]+)\.(\d+) > ([0-9a-f:.]+)\.(\d+): Flags \[([^\]]*)\]")


def lines(pcap):
    if not os.path.exists(pcap):
        return []
    out = subprocess.run(["tcpdump", "-nn", "-r", pcap], capture_output=True, text=True,
                         check=False).stdout
    return out.splitlines()


def tuples(pcap):
    """(src, sport, dst, dport, flags, line) of every TCP segment, the innermost header."""
    for ln in lines(pcap):
        m = None
        for m in INNER.finditer(ln):
            pass
        if m:
            yield m.group(1), int(m.group(2)), m.group(3), int(m.group(4)), m.group(5), ln


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--instances", default="gw1,gw2,gw3")
    a = ap.parse_args()
    s = json.loads(pathlib.Path(a.run, "summary.json").read_text())
    sub = {}
    for c in s["connections"]:
        if c.get("client"):
            sub["%s.%d" % tuple(c["client"])] = {"conn": c["conn"], "kind": "first",
                                                 "instances": [], "rst": 0}
        for j in c.get("joins", []):
            key = "%s.%d" % tuple(j["from"])
            sub.setdefault(key, {"conn": c["conn"], "kind": "join", "instances": [], "rst": 0,
                                 "established": j.get("established_on_server", False)})
    join_syns = {}
    for gw in a.instances.split(","):
        seen = set()
        for src, sport, dst, dport, flags, _ in tuples(
                os.path.join(a.run, "server-link-sw-g%s.pcap" % gw[2:])):
            key = "%s.%d" % (src, sport)
            if key in sub:
                seen.add(key)
                if flags == "S" and sub[key]["kind"] == "join":
                    join_syns[gw] = join_syns.get(gw, 0) + 1
        for key in sorted(seen):
            sub[key]["instances"].append(gw)
    # Joins the client sent (MP_JOIN SYNs), whether or not an instance passed them.
    attempts = {"%s.%d" % (src, sport)
                for src, sport, dst, dport, flags, ln in tuples(
                    os.path.join(a.run, "client-link.pcap"))
                if flags == "S" and " join " in ln}
    # Joins that never reached a server (refused by an instance) are subflows too.
    for key in attempts:
        sub.setdefault(key, {"conn": None, "kind": "join", "instances": [], "rst": 0,
                             "established": False})
    for v in sub.values():
        v["answered"] = False
    for pcap, client_is_src in (("client-link.pcap", True), ("return-link.pcap", False)):
        for src, sport, dst, dport, flags, _ in tuples(os.path.join(a.run, pcap)):
            key = "%s.%d" % ((src, sport) if client_is_src else (dst, dport))
            if key not in sub:
                continue
            if not client_is_src and flags == "S.":
                sub[key]["answered"] = True
            if "R" in flags:
                sub[key]["rst"] += 1
    t = {"connections": len(s["connections"]),
         "completed": sum(1 for c in s["connections"]
                          if not c.get("error") and c.get("digest_ok") and c.get("echo_ok")),
         "join_syns_per_instance": join_syns}
    for kind in ("first", "join"):
        for state in ("stayed", "moved"):
            grp = [v for v in sub.values() if v["kind"] == kind
                   and (len(v["instances"]) > 1) == (state == "moved")]
            t["%s_%s" % (kind, state)] = len(grp)
            t["%s_%s_with_rst" % (kind, state)] = sum(1 for v in grp if v["rst"])
    # A join the client gives up on (no SYN/ACK: refused by an instance) ends with its own RST.
    t["rst_on_unanswered_joins"] = sum(v["rst"] for v in sub.values()
                                       if v["kind"] == "join" and not v["answered"])
    t["joins_established"] = sum(1 for v in sub.values()
                                 if v["kind"] == "join" and v.get("established"))
    t["joins_reaching_a_server"] = sum(1 for v in sub.values()
                                       if v["kind"] == "join" and v["conn"] is not None)
    t["joins_sent_by_client"] = len(attempts)
    rst = s["links"]
    t["rst_links"] = {k: rst[k]["rst"] for k in ("client", "server", "return") if k in rst}
    t["rst_after_close"] = {k: rst[k].get("rst_after_close", 0)
                            for k in ("client", "server", "return") if k in rst}
    t["servers"] = {n: {k.replace("MPTcpExt", ""): v["nstat"][k]
                        for k in ("MPTcpExtMPJoinSynRx", "MPTcpExtMPJoinAckRx",
                                  "MPTcpExtMPJoinNoTokenFound")}
                    for n, v in s["per_server"].items()}
    t["failed_checks"] = sorted(k for k, c in s["checks"].items() if not c["ok"])
    json.dump({"totals": t, "subflows": sub}, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
