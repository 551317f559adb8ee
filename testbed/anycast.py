#!/usr/bin/env python3
"""anycast.py: the anycast experiment: long MPTCP transfers while servers leave and rejoin the pool.

    anycast.py --mode gateway|baseline [--duration 60] [--connections 6] [--flap-every 10]
               [--flap-for 5] [--rate 2] [--out DIR] [--leave-cmd CMD] [--return-cmd CMD] ...
    anycast.py plot DIR [DIR ...] [--png FILE] [--md FILE]

Needs root and the bed up (testbed/netns.sh): `--mode baseline` needs `up --standin=ecmp` (Linux
ECMP over the three servers, L4 hash), `--mode gateway` any other mode (the daemon, or a Linux
stand-in to validate the harness).

One run:

1. tcpdump on the client link (cli0 in tz-client) and the server link (sw-gw in tz-sw), keeping
   only SYN / FIN / RST segments (headers, 256 bytes): every RST is timestamped and classified
   (a refused MP_JOIN, an aborted subflow, a late RST after both FINs); nstat in every namespace;
2. N long-running connections from tz-client (bound to the primary address, so the in-kernel path
   manager adds a join from the second address), each sending paced data (--rate MB/s) that the
   server echoes, for --duration seconds; the client counts received bytes per second and per
   connection, then half-closes, reads the echo to EOF and checks it (length and sha256);
3. every --flap-every seconds one server (srv1, srv2, srv3, srv1, ...) leaves the pool for
   --flap-for seconds (--leave-cmd, then --return-cmd; `{server}` is the server, `{pool}` the
   servers in the pool after the change);
4. writes DIR/results.json, DIR/throughput.csv, DIR/summary.md (and DIR/throughput.png when
   matplotlib is importable).

A failed transfer is a connection that errored (reset, timeout), or whose echo is incomplete or
differs from what was sent. With --reconnect a failed connection is replaced by a new one (each
failure still counts), so later flaps keep hitting live connections.

Default pool commands: baseline: `testbed/netns.sh ecmp {pool}` (the multipath route's nexthops
are replaced: `ip route replace` with the remaining servers, then with the three); gateway:
`ip netns exec tz-gw trapezectl drain {server}` / `... undrain {server}` (target/release/
trapezectl when it exists). `--leave-cmd true --return-cmd true` runs the gateway panel with no
pool change at all (a stand-in that cannot drain).
"""

import argparse
import hashlib
import json
import os
import pathlib
import random
import shlex
import socket
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import mptcp_server as M  # MPTCP socket helpers
import transfers as T  # bed constants, captures, pcap parsing, nstat

SERVERS = list(T.SERVERS)
# The gateway's own health probes (half-open SYN, SYN/ACK, RST from the gateway's server-side
# address and these source ports): not client traffic, counted apart.
PROBE_PORTS = getattr(T, "PROBE_PORTS", (61000, 65000))
GW_SERVER_SIDE = {"10.91.0.1", "fd91::1"}
SERVER_MAC = {bytes.fromhex("0291000000%02x" % (0x10 + i + 1)): s for i, s in enumerate(SERVERS)}
PATTERN = random.Random("tz-anycast").randbytes(1 << 18)  # payload: this block, repeated
PATTERN2 = PATTERN + PATTERN
CHUNK = 131072


# ---------------------------------------------------------------------------------------------
# client side (runs inside tz-client: `anycast.py _client ...`)


class Slot:
    """One connection slot: a connection for the whole run (or its replacements, --reconnect)."""

    def __init__(self, n, nsec):
        self.n = n
        self.rx = [0] * nsec  # received bytes per second since t0
        self.attempts = []
        self.up = False


def client_attempt(a, slot, k, end):
    fam = socket.AF_INET6 if a.family == 6 else socket.AF_INET
    conn_id = slot.n * 1000 + k
    rec = {"slot": slot.n, "attempt": k, "conn": conn_id, "error": None, "local": None,
           "t_start": round(time.time() - a.t0, 3), "t_end": None, "t_fail": None,
           "t_last_rx": None, "sent": 0, "received": 0,
           "echo_ok": False, "subflows_max": 0, "subflows_end": None, "fallback": None,
           "token": None, "subflows": []}
    slot.attempts.append(rec)
    tx, rxh = hashlib.sha256(), hashlib.sha256()
    state = {"rx": 0, "err": None, "last_rx": time.time(), "stop": False}
    nsec = len(slot.rx)
    s = socket.socket(fam, socket.SOCK_STREAM, M.IPPROTO_MPTCP if a.proto == "mptcp" else 0)
    reader = None
    subflows = M.SubflowLog()

    def sample():
        if a.proto != "mptcp":
            return
        up = M.established_subflows(s)
        if up is not None:
            rec["subflows_max"] = max(rec["subflows_max"], up)
            rec["subflows_end"] = up
        subflows.sample(s)

    try:
        s.settimeout(a.timeout)
        s.bind((T.CLIENT_PRIMARY[a.family], 0))
        s.connect((T.VIP[a.family], a.port))
        # short waits from here on: the loops below check for stalls and the end themselves
        s.settimeout(0.25)
        rec["local"] = list(s.getsockname()[:2])
        slot.up = True

        def read():
            try:
                while True:
                    try:
                        b = s.recv(65536)
                    except TimeoutError:
                        if state["stop"]:
                            break
                        continue
                    if not b:
                        break
                    i = int(time.time() - a.t0)
                    if 0 <= i < nsec:
                        slot.rx[i] += len(b)
                    state["rx"] += len(b)
                    state["last_rx"] = time.time()
                    rxh.update(b)
            except OSError as e:
                state["err"] = "%s: %s" % (type(e).__name__, e)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        hdr = b"TZTB run=%s conn=%d bytes=0\n" % (a.run.encode(), conn_id)
        sent = 0
        while sent < len(hdr):
            sent += s.send(hdr[sent:])
        tx.update(hdr)
        rate = a.rate * 1e6
        tstart = time.monotonic()
        last_sample = 0.0
        while time.time() < end and state["err"] is None:
            if time.time() - state["last_rx"] > a.stall:
                # The MPTCP socket outlives the reset of its only subflow (it waits for a new
                # one), so a dead connection shows up as silence, not as an error.
                rec["error"] = "stalled: nothing received for %gs" % a.stall
                break
            now = time.monotonic()
            # token bucket, at most 0.25 s of backlog: a stalled path does not cause a burst
            allowed = rate * (now - tstart) - sent
            if allowed > rate * 0.25:
                tstart = now - (sent + rate * 0.25) / rate
                allowed = rate * 0.25
            n = int(min(allowed, CHUNK))
            if n > 0:
                off = sent % len(PATTERN)
                try:
                    k = s.send(PATTERN2[off:off + n])
                except TimeoutError:
                    k = 0  # the send buffer is full: check for a stall, then try again
                tx.update(PATTERN2[off:off + k])
                sent += k
            if now - last_sample > 0.5:
                sample()
                last_sample = now
            time.sleep(0.01)
        rec["sent"] = sent
        sample()
        if state["err"] is None and rec["error"] is None:
            s.shutdown(socket.SHUT_WR)
            reader.join(a.timeout)
            if reader.is_alive():
                rec["error"] = "echo not complete after %ss" % a.timeout
        state["stop"] = True
        time.sleep(a.linger)
        if a.proto == "mptcp":
            info = M.mptcp_info(s)
            rec["fallback"] = info["fallback"] if info else None
            rec["token"] = info["token"] if info else None
    except OSError as e:
        rec["error"] = "%s: %s" % (type(e).__name__, e)
    finally:
        state["stop"] = True
        if reader is not None:
            reader.join(1)
        s.close()
        slot.up = False
    if reader is not None:
        reader.join(1)
    rec["received"] = state["rx"]
    rec["subflows"] = subflows.seen
    if state["err"] and not rec["error"]:
        rec["error"] = "echo: " + state["err"]
    rec["echo_ok"] = (not rec["error"] and state["rx"] == rec["sent"]
                      and rxh.hexdigest() == tx.hexdigest())
    if not rec["error"] and not rec["echo_ok"]:
        rec["error"] = "echo differs: %d bytes back of %d sent" % (state["rx"], rec["sent"])
    rec["t_end"] = round(time.time() - a.t0, 3)
    rec["t_last_rx"] = round(state["last_rx"] - a.t0, 3)
    if rec["error"]:
        # when it died: its last byte received (a stall, a reset), or the end if it never started
        rec["t_fail"] = max(rec["t_start"], min(rec["t_last_rx"], rec["t_end"]))
    return rec


def client_slot(a, slot, end):
    k = 0
    while True:
        rec = client_attempt(a, slot, k, end)
        k += 1
        if not rec["error"] or not a.reconnect or time.time() > end - 1.0:
            return
        sys.stderr.write("  [client] t=%.1f conn %d failed (%s): reconnecting\n"
                         % (time.time() - a.t0, rec["conn"], rec["error"]))
        time.sleep(0.2)


def client_main(a):
    nsec = int(a.duration) + 1
    slots = [Slot(i, nsec) for i in range(a.connections)]
    end = a.t0 + a.duration
    delay = a.t0 - time.time()
    if delay > 0:
        time.sleep(delay)
    threads = []
    for sl in slots:
        th = threading.Thread(target=client_slot, args=(a, sl, end), daemon=True)
        th.start()
        threads.append(th)
        time.sleep(a.stagger_ms / 1000.0)
    # one progress line per second on stderr
    last = 0
    while any(th.is_alive() for th in threads):
        time.sleep(0.2)
        i = int(time.time() - a.t0)
        if a.progress and i > last and 1 <= i <= nsec:
            last = i
            tot = sum(sl.rx[i - 1] for sl in slots)
            sys.stderr.write("  [client] t=%3ds %6.2f MB/s  connections up %d/%d\n"
                             % (i - 1, tot / 1e6, sum(sl.up for sl in slots), len(slots)))
    json.dump({"slots": [{"slot": sl.n, "rx": sl.rx, "attempts": sl.attempts} for sl in slots]},
              sys.stdout)


# ---------------------------------------------------------------------------------------------
# captures: SYN / FIN / RST only


CAP_FILTER = ("(tcp[tcpflags] & (tcp-syn|tcp-fin|tcp-rst) != 0) or "
              "(ip6 and ip6[6] == 6 and ip6[53] & 7 != 0)")


def start_capture(ns, dev, path, logpath):
    with open(logpath, "w") as log:  # tcpdump holds its own copy of the descriptor
        proc = subprocess.Popen(["ip", "netns", "exec", ns, "tcpdump", "-i", dev, "-s", "256",
                                 "-U", "-nn", "-Z", "root", "-w", path, CAP_FILTER],
                                stdout=subprocess.DEVNULL, stderr=log)
    for _ in range(100):
        with open(logpath) as f:
            if "listening on" in f.read():
                return proc
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    T.stop(proc)
    raise SystemExit("tcpdump on %s/%s did not start: %s"
                     % (ns, dev, pathlib.Path(logpath).read_text()))


def count_rst_tcpdump(path):
    """RSTs in a capture by tcpdump's own filter (a cross-check of the parse), probes excluded."""
    expr = ("((tcp[tcpflags] & tcp-rst != 0) or (ip6 and ip6[6] == 6 and ip6[53] & 4 != 0)) and "
            "not ((src host 10.91.0.1 or src host fd91::1) and src portrange %d-%d)"
            % (PROBE_PORTS[0], PROBE_PORTS[1] - 1))
    out = subprocess.run(["tcpdump", "-r", path, "-nn", expr], capture_output=True, text=True,
                         check=False)
    if out.returncode != 0:
        raise SystemExit("tcpdump -r %s: %s" % (path, out.stderr.strip()))
    return len([ln for ln in out.stdout.splitlines() if ln.strip()])


def bed_fingerprint():
    """The bed's state file and server PIDs: if either changes during a run, another process
    rebuilt or removed the bed (it is one per machine) and the run means nothing."""
    fp = [T.bed_state()]
    for s in SERVERS:
        try:
            fp.append(pathlib.Path(T.RUN_DIR, s + ".pid").read_text().strip())
        except OSError:
            fp.append(None)
    return fp


def rsts_in(path, t0, server_ports):
    """Every RST in a capture: time since t0, who sent it, what it hit.

    kind: `join_refused` (the answer to an MP_JOIN SYN: the server does not know the token),
    `syn_refused` (the answer to any other SYN), `after_close` (on a subflow that had seen FINs
    both ways: a late segment hitting a closed socket, harmless), `aborted` (a running subflow
    was reset: its packets reached a server that does not know it, or the reverse)."""
    sess = {}
    out = []
    probes = 0
    first = {}  # (client addr, port) of an MP_CAPABLE / TCP SYN -> server (server link: by MAC)
    for ts, frame in T.read_pcap(path):
        p = T.parse_tcp(frame)
        if not p:
            continue
        fwd = (p["src"], p["sport"], p["dst"], p["dport"])
        rev = (p["dst"], p["dport"], p["src"], p["sport"])
        if ((p["src"] in GW_SERVER_SIDE and PROBE_PORTS[0] <= p["sport"] < PROBE_PORTS[1])
                or (p["dst"] in GW_SERVER_SIDE and PROBE_PORTS[0] <= p["dport"] < PROBE_PORTS[1])):
            probes += p["rst"]
            continue
        if p["syn"] and not p["ack"]:
            srv = SERVER_MAC.get(frame[0:6]) or T.ADDR_SERVER.get(p["dst"])
            sess[fwd] = {"kind": "join" if p["join"] else "syn", "synack": False,
                         "fin_c": False, "fin_s": False, "server": srv,
                         "token": p["join"]["token"] if p["join"] else None}
            if not p["join"] and srv:
                first[(p["src"], p["sport"])] = srv
            continue
        s, from_client = sess.get(fwd), True
        if s is None:
            s, from_client = sess.get(rev), False
        if s is None:
            from_client = p["dport"] in server_ports
        if p["syn"] and p["ack"] and s is not None:
            s["synack"] = True
        if p["fin"] and s is not None:
            s["fin_c" if from_client else "fin_s"] = True
        if not p["rst"]:
            continue
        if s is None:
            kind = "aborted"
        elif not s["synack"]:
            kind = "join_refused" if s["kind"] == "join" else "syn_refused"
        elif s["fin_c"] and s["fin_s"]:
            kind = "after_close"
        else:
            kind = "aborted"
        cli = fwd if from_client else rev
        mac = frame[0:6] if from_client else frame[6:12]
        out.append({"t": round(ts - t0, 4), "from": "client" if from_client else "server",
                    "kind": kind, "client": [cli[0], cli[1]], "server": [cli[2], cli[3]],
                    # which server sent / would have got it (server link only)
                    "server_name": SERVER_MAC.get(mac) or T.ADDR_SERVER.get(cli[2]),
                    "subflow_server": s["server"] if s else None,
                    "token": s["token"] if s else None})
    return out, first, probes


# ---------------------------------------------------------------------------------------------
# the run


def ctl_path():
    p = os.path.join(REPO, "target", "release", "trapezectl")
    return p if os.access(p, os.X_OK) else "trapezectl"


def default_cmds(mode):
    if mode == "baseline":
        c = shlex.quote(os.path.join(HERE, "netns.sh")) + " ecmp {pool}"
        return c, c
    ctl = "ip netns exec tz-gw " + shlex.quote(ctl_path())
    return ctl + " drain {server}", ctl + " undrain {server}"


def run_cmd(tmpl, server, pool):
    cmd = tmpl.format(server=server, pool=" ".join(pool))
    t = time.time()
    try:
        cp = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=15,
                            check=False)
        rc, out = cp.returncode, (cp.stdout + cp.stderr).strip()
    except subprocess.TimeoutExpired:
        rc, out = -1, "timed out after 15 s"
    return {"cmd": cmd, "rc": rc, "output": out[-500:], "t_start": t, "t_end": time.time()}


def schedule(a):
    """[(t_leave, t_return, server)] relative to t0: flaps that fit in the run."""
    out, k = [], 1
    while k * a.flap_every + a.flap_for <= a.duration + 1e-9:
        out.append((k * a.flap_every, k * a.flap_every + a.flap_for, SERVERS[(k - 1) % len(SERVERS)]))
        k += 1
    return out


def log(msg):
    sys.stderr.write("[anycast] %s\n" % msg)
    sys.stderr.flush()


def main_run(a):
    if os.geteuid() != 0:
        raise SystemExit("anycast.py: must run as root")
    if a.flap_for >= a.flap_every:
        raise SystemExit("anycast.py: --flap-for must be shorter than --flap-every")
    state = T.bed_state()
    fingerprint = bed_fingerprint()
    ecmp = state.startswith("mode=ecmp")
    if a.mode == "baseline" and not ecmp:
        raise SystemExit("anycast.py: --mode baseline needs the bed in ecmp mode "
                         "(testbed/netns.sh up --standin=ecmp); it is: %s" % state)
    if a.mode == "gateway" and ecmp:
        raise SystemExit("anycast.py: --mode gateway with the bed in ecmp mode (%s): bring it "
                         "up for the daemon (netns.sh up) or a stand-in" % state)
    dleave, dret = default_cmds(a.mode)
    a.leave_cmd = a.leave_cmd or dleave
    a.return_cmd = a.return_cmd or dret
    run = "%08x" % random.getrandbits(32)
    out = a.out or "/tmp/tz-anycast/%s-%s-%s" % (time.strftime("%Y%m%d-%H%M%S"), a.mode, run)
    os.makedirs(out, exist_ok=True)
    cpcap, spcap = os.path.join(out, "client-link.pcap"), os.path.join(out, "server-link.pcap")
    flaps_plan = schedule(a)
    log("%s mode, bed %s: %d connections x %.1f MB/s for %ds, %d flaps (%s), out %s"
        % (a.mode, state, a.connections, a.rate, a.duration, len(flaps_plan),
           ", ".join("%s out %g-%gs" % (s, l, r) for l, r, s in flaps_plan) or "none", out))
    log("leave: %s | return: %s" % (a.leave_cmd, a.return_cmd))

    ns_all = {"client": T.NS_CLIENT, **{s: "tz-" + s for s in SERVERS}}
    before = {k: T.nstat(ns) for k, ns in ns_all.items()}
    offsets = {s: T.log_size(s) for s in SERVERS}
    caps = [start_capture(T.NS_CLIENT, T.CLIENT_IF, cpcap, os.path.join(out, "tcpdump-client.log")),
            start_capture(T.NS_SWITCH, T.SWITCH_GW_PORTS[0], spcap,
                          os.path.join(out, "tcpdump-server.log"))]
    t0 = time.time() + 1.0  # the client starts its connections at t0
    flaps = []
    pool = list(SERVERS)
    out_now = []
    client_out = open(os.path.join(out, "client.json"), "w+")  # noqa: SIM115  (closed below, once read)
    try:
        cmd = ["ip", "netns", "exec", T.NS_CLIENT, sys.executable, os.path.abspath(__file__),
               "_client", "--run", run, "--t0", repr(t0), "--family", str(a.family),
               "--proto", a.proto, "--port", str(a.port), "--connections", str(a.connections),
               "--duration", str(a.duration), "--rate", str(a.rate), "--timeout", str(a.timeout),
               "--stall", str(a.stall),
               "--stagger-ms", str(a.stagger_ms), "--linger", str(a.linger)]
        if a.reconnect:
            cmd.append("--reconnect")
        if not a.quiet:
            cmd.append("--progress")
        client = subprocess.Popen(cmd, stdout=client_out)
        for t_leave, t_ret, srv in flaps_plan:
            for when, action in ((t_leave, "leave"), (t_ret, "return")):
                d = t0 + when - time.time()
                if d > 0:
                    time.sleep(d)
                if action == "leave":
                    pool.remove(srv)
                    out_now.append(srv)
                    r = run_cmd(a.leave_cmd, srv, pool)
                else:
                    pool.append(srv)
                    pool.sort()
                    out_now.remove(srv)
                    r = run_cmd(a.return_cmd, srv, pool)
                r.update({"server": srv, "action": action, "planned": when,
                          "t": round(r["t_start"] - t0, 3),
                          "took_s": round(r["t_end"] - r["t_start"], 3)})
                del r["t_start"], r["t_end"]
                flaps.append(r)
                log("t=%5.1fs %s %s (%s): rc=%d%s" % (r["t"], srv, action, r["cmd"], r["rc"],
                                                     (" " + r["output"]) if r["rc"] else ""))
        rc = client.wait()
        hijacked = False
        try:
            hijacked = bed_fingerprint() != fingerprint
        except SystemExit:
            hijacked = True
        if hijacked:
            raise SystemExit("anycast.py: the bed was rebuilt or removed by another process "
                             "during the run (netns.sh up/down elsewhere): results discarded")
        if rc != 0:
            raise SystemExit("client failed (rc=%d)" % rc)
        time.sleep(a.settle)
    finally:
        for srv in out_now:  # never leave a server out of the pool
            pool.append(srv)
            pool.sort()
            log("restoring %s: rc=%d" % (srv, run_cmd(a.return_cmd, srv, pool)["rc"]))
        for c in caps:
            T.stop(c)
    client_out.seek(0)
    crec = json.load(client_out)
    client_out.close()
    after = {k: T.nstat(ns) for k, ns in ns_all.items()}
    deltas = {k: T.nstat_delta(before[k], after[k]) for k in ns_all}
    srecs = T.server_records(offsets, run)

    res = analyse(a, run, state, out, t0, crec, flaps, deltas, srecs, cpcap, spcap)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(res, f, indent=1)
    write_csv(res, os.path.join(out, "throughput.csv"))
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(table([res]))
    report(res)
    if not a.no_plot:
        plot([res], os.path.join(out, "throughput.png"))
    bad = []
    if any(f["rc"] != 0 for f in flaps):
        bad.append("a leave/return command failed")
    s = res["summary"]
    if a.expect_clean and (s["rst_client_link"] or s["rst_server_link"] or s["failed"]):
        bad.append("expected 0 RST and 0 failed transfers")
    if a.expect_rst and not (s["rst_client_link"] and s["rst_server_link"]):
        bad.append("expected RSTs on both links (the baseline)")
    if a.max_dip is not None and s["dip_flaps"] is not None and s["dip_flaps"] > a.max_dip:
        bad.append("dip during flaps %.0f%% > %.0f%%" % (100 * s["dip_flaps"], 100 * a.max_dip))
    for b in bad:
        log("FAIL: " + b)
    return 1 if bad else 0


def analyse(a, run, state, out, t0, crec, flaps, deltas, srecs, cpcap, spcap):
    dur = int(a.duration)
    slots = crec["slots"]
    total = [sum(sl["rx"][i] for sl in slots) for i in range(dur)]
    attempts = [r for sl in slots for r in sl["attempts"]]
    failed = [r for r in attempts if r["error"]]
    srv_of = {r["conn"]: r["server"] for r in srecs}
    for r in attempts:
        r["server"] = srv_of.get(r["conn"])
    ports = {T.SRV_PORT, a.port}
    rst_c, _, _ = rsts_in(cpcap, t0, ports)
    rst_s, first_srv, probe_rsts = rsts_in(spcap, t0, ports)
    for r in attempts:  # the server log is written at close: a dead connection may have none
        if not r["server"] and r["local"]:
            r["server"] = first_srv.get(tuple(r["local"]))
    tcpdump_c, tcpdump_s = count_rst_tcpdump(cpcap), count_rst_tcpdump(spcap)
    # connection of each RST: by the client address and port of any subflow it had
    owner = {}
    for r in attempts:
        if r["local"]:
            owner[tuple(r["local"])] = r["conn"]
        for sf in r.get("subflows") or []:
            if sf[0]:
                owner.setdefault(tuple(sf[0]), r["conn"])
    for x in rst_c + rst_s:
        x["conn"] = owner.get(tuple(x["client"]))

    windows = []  # (leave, return, server), measured times since t0
    leaves = {}
    for f in flaps:
        if f["action"] == "leave":
            leaves[f["server"]] = f["t"]
        elif f["server"] in leaves:
            windows.append((leaves.pop(f["server"]), f["t"], f["server"]))
    # a second is "in a flap" if it overlaps [leave, return + 1 s) (1 s to recover after return)
    in_flap = [any(i < r + 1 and i + 1 > l for l, r, _ in windows) for i in range(dur)]
    mb = [x / 1e6 for x in total]
    win = list(range(1, dur))  # second 0: the handshakes and the stagger
    med = statistics.median([mb[i] for i in win]) if win else 0.0

    def dip(idx):
        idx = list(idx)
        if not idx or med <= 0:
            return None
        return round(max(0.0, max((med - mb[i]) / med for i in idx)), 4)

    def kinds(rs):
        d = {}
        for x in rs:
            d[x["kind"]] = d.get(x["kind"], 0) + 1
        return d

    per_flap = []
    for l, r, srv in windows:
        nxt = l + a.flap_every
        per_flap.append({"server": srv, "leave": l, "return": r,
                         "rst_client_link": sum(1 for x in rst_c if l <= x["t"] < nxt),
                         "rst_server_link": sum(1 for x in rst_s if l <= x["t"] < nxt),
                         "failed": sum(1 for x in failed if l <= x["t_fail"] < nxt)})
    nst = {s: {k: deltas[s].get(k, 0) for k in ("MPTcpExtMPJoinNoTokenFound", "TcpOutRsts",
                                                 "MPTcpExtMPCapableSYNRX", "MPTcpExtMPJoinSynRx",
                                                 "MPTcpExtMPJoinAckRx")} for s in SERVERS}
    summary = {
        "mode": a.mode, "bed": state, "duration_s": a.duration, "connections": a.connections,
        "attempts": len(attempts), "rate_MBps_per_connection": a.rate, "family": a.family,
        "proto": a.proto, "flaps": len(windows),
        "rst_client_link": len(rst_c), "rst_server_link": len(rst_s),
        # distinct subflows (client address and port) hit by an RST that was not after_close
        "subflows_reset": [len({tuple(x["client"]) for x in rs if x["kind"] != "after_close"})
                           for rs in (rst_c, rst_s)],
        "rst_tcpdump_count": [tcpdump_c, tcpdump_s],
        "health_probe_rsts_server_link": probe_rsts,  # not counted above
        "rst_kinds_client_link": kinds(rst_c), "rst_kinds_server_link": kinds(rst_s),
        "rst_before_first_flap": [sum(1 for x in rs if windows and x["t"] < windows[0][0])
                                  for rs in (rst_c, rst_s)],
        "failed": len(failed),
        "offered_MBps": round(a.connections * a.rate, 3),
        "mean_MBps": round(statistics.mean([mb[i] for i in win]), 3) if win else None,
        "min_MBps": round(min(mb[i] for i in win), 3) if win else None,
        "median_MBps": round(med, 3),
        "dip": dip(win),
        "dip_flaps": dip(i for i in win if in_flap[i]),
        "dip_steady": dip(i for i in win if not in_flap[i]),
        "joins_established": sum(1 for r in attempts if r["subflows_max"] >= 2),
        "mpjoin_no_token_found": sum(v["MPTcpExtMPJoinNoTokenFound"] for v in nst.values()),
        "server_tcp_out_rsts": sum(v["TcpOutRsts"] for v in nst.values()),
    }
    return {
        "run": run, "out": out, "t0": t0,
        "params": {k: getattr(a, k) for k in ("mode", "duration", "connections", "flap_every",
                                              "flap_for", "rate", "family", "proto", "port",
                                              "reconnect", "leave_cmd", "return_cmd", "timeout",
                                              "stall", "label")},
        "summary": summary,
        "throughput": {"seconds": list(range(dur)), "total_MBps": [round(x, 4) for x in mb],
                       "per_slot_MBps": [[round(x / 1e6, 4) for x in sl["rx"][:dur]]
                                         for sl in slots],
                       "in_flap": in_flap},
        "flaps": flaps,
        "flap_windows": [{"leave": l, "return": r, "server": s} for l, r, s in windows],
        "per_flap": per_flap,
        "rsts": {"client_link": rst_c, "server_link": rst_s},
        "failed": [{k: r[k] for k in ("conn", "slot", "attempt", "t_start", "t_end", "t_fail",
                                      "error",
                                      "server", "subflows_max", "sent", "received")}
                   for r in failed],
        "attempts": attempts,
        "nstat": {"servers": nst, "client": deltas["client"]},
    }


def write_csv(res, path):
    th = res["throughput"]
    n = len(th["per_slot_MBps"])
    with open(path, "w") as f:
        f.write("second,total_MBps,in_flap,rst_client_link,rst_server_link,%s\n"
                % ",".join("conn%d_MBps" % i for i in range(n)))
        rc = res["rsts"]["client_link"]
        rs = res["rsts"]["server_link"]
        f.writelines("%d,%.4f,%d,%d,%d,%s\n" % (
            i, th["total_MBps"][i], th["in_flap"][i],
            sum(1 for x in rc if i <= x["t"] < i + 1), sum(1 for x in rs if i <= x["t"] < i + 1),
            ",".join("%.4f" % sl[i] for sl in th["per_slot_MBps"])) for i in th["seconds"])


def describe(res):
    bed = res["summary"]["bed"]
    p = res["params"]
    if p.get("label"):
        return p["label"]
    if res["summary"]["mode"] == "baseline":
        return "baseline: Linux ECMP, L4 hash"
    if "mode=none" in bed:
        return "gateway: trapeze"
    noop = p["leave_cmd"].strip() == "true" and p["return_cmd"].strip() == "true"
    return "gateway: stand-in %s%s" % (bed.split()[0].split("=")[-1],
                                       ", no-op flaps" if noop else "")


def pct(x):
    return "-" if x is None else "%.0f%%" % (100 * x)


def resumed_after(res):
    """Connections that received nothing in the last second of a flap (the leaving server's, when
    its flows stop): (how many, the longest time in whole seconds from the server's return to
    their next received byte), over every flap; None when no connection stalled."""
    slots = res["throughput"]["per_slot_MBps"]
    worst, n = None, 0
    for w in res.get("flap_windows", []):
        ret = int(w["return"])
        if ret < 1:
            continue
        for sl in slots:
            if ret >= len(sl) or sl[ret - 1] > 0 or not any(sl[: ret - 1]):
                continue
            n += 1
            nxt = next((i for i in range(ret, len(sl)) if sl[i] > 0), None)
            d = None if nxt is None else nxt + 1 - w["return"]
            worst = d if worst is None or d is None else max(worst, d)
    return (n, worst) if n else None


def table(results):
    h = ("| run | duration | connections (attempts) | flaps | RSTs client link | RSTs server link "
         "| subflows reset | failed transfers | MPJoinNoTokenFound "
         "| throughput mean / min (offered), MB/s | largest dip vs median: flaps / steady "
         "| stalled by a flap: resumed within |\n"
         "|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    rows = []
    for r in results:
        s = r["summary"]
        kinds = s["rst_kinds_client_link"]
        kd = (" (%s)" % ", ".join("%d %s" % (v, k.replace("_", " ")) for k, v in sorted(kinds.items()))
              if kinds else "")
        ra = resumed_after(r)
        rs = ("-" if ra is None else "%d: %s" % (ra[0], "never" if ra[1] is None
                                                  else "%.1f s of the return" % ra[1]))
        rows.append("| %s | %d s | %d (%d) | %d | %d%s | %d | %d | %d | %d | %.2f / %.2f (%.2f) "
                    "| %s / %s | %s |" % (
                        describe(r), s["duration_s"], s["connections"], s["attempts"], s["flaps"],
                        s["rst_client_link"], kd, s["rst_server_link"], s["subflows_reset"][1],
                        s["failed"], s["mpjoin_no_token_found"], s["mean_MBps"] or 0,
                        s["min_MBps"] or 0, s["offered_MBps"], pct(s["dip_flaps"]),
                        pct(s["dip_steady"]), rs))
    return h + "\n".join(rows) + "\n"


def report(res):
    s = res["summary"]
    w = sys.stderr.write
    w("\n== anycast %s (%s), %d s, %d connections (%d attempts), %d flaps, artefacts in %s\n"
      % (s["mode"], s["bed"], s["duration_s"], s["connections"], s["attempts"], s["flaps"],
         res["out"]))
    th = res["throughput"]["total_MBps"]
    w("  MB/s per second: %s\n" % " ".join("%.1f" % x for x in th))
    for pf in res["per_flap"]:
        w("  flap %s out %.1f-%.1fs: RSTs client link %d, server link %d\n"
          % (pf["server"], pf["leave"], pf["return"], pf["rst_client_link"], pf["rst_server_link"]))
    w("  RSTs: client link %d %s, server link %d %s (tcpdump: %d / %d); before the first flap: "
      "%d / %d; subflows reset: %d / %d\n"
      % (s["rst_client_link"], s["rst_kinds_client_link"], s["rst_server_link"],
         s["rst_kinds_server_link"], s["rst_tcpdump_count"][0], s["rst_tcpdump_count"][1],
         *s["rst_before_first_flap"], *s["subflows_reset"]))
    w("  failed transfers: %d of %d attempts%s\n" % (
        s["failed"], s["attempts"],
        "".join("\n    conn %d (slot %d, %s) at %.1fs: %s" % (f["conn"], f["slot"], f["server"],
                                                           f["t_fail"], f["error"])
                for f in res["failed"])))
    if s.get("health_probe_rsts_server_link"):
        w("  (the gateway's health probes: %d RSTs on the server link, not counted above)\n"
          % s["health_probe_rsts_server_link"])
    w("  joins established %d/%d; servers: MPJoinNoTokenFound %d, TcpOutRsts %d\n"
      % (s["joins_established"], s["attempts"], s["mpjoin_no_token_found"],
         s["server_tcp_out_rsts"]))
    w("  throughput: mean %.2f, min %.2f, median %.2f MB/s; largest dip vs median: %s (flaps "
      "%s, steady %s)\n" % (s["mean_MBps"] or 0, s["min_MBps"] or 0, s["median_MBps"],
                            pct(s["dip"]), pct(s["dip_flaps"]), pct(s["dip_steady"])))
    w(table([res]))


# ---------------------------------------------------------------------------------------------
# plot


def plot(results, png):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        log("matplotlib cannot be imported (%s): plot %s skipped (pip install matplotlib)"
            % (e, png))
        return False
    n = len(results)
    fig, axes = plt.subplots(1, n, figsize=(6.5 * n, 4.6), sharey=True, squeeze=False)
    ymax = max(max(r["throughput"]["total_MBps"] or [0]) for r in results) * 1.25 or 1.0

    def per_sec(r):
        d = int(r["summary"]["duration_s"])
        c = [0] * d
        for e in r["rsts"]["client_link"]:
            if 0 <= e["t"] < d:
                c[int(e["t"])] += 1
        return c

    rmax = max(max(per_sec(r) or [0]) for r in results)
    twins = []
    for ax, r in zip(axes[0], results):
        s = r["summary"]
        th = r["throughput"]
        x = [i + 0.5 for i in th["seconds"]]  # each point is the mean over [i, i+1)
        # RSTs per second (client link) as bars on a right-hand axis: the RST spikes
        tw = ax.twinx()
        twins.append(tw)
        tw.bar([i + 0.5 for i in range(len(per_sec(r)))], per_sec(r), width=0.8,
               color="tab:red", alpha=0.25, zorder=1)
        tw.set_ylim(0, max(4, rmax) * 2.5)
        tw.tick_params(axis="y", colors="tab:red", labelsize=7)
        ax.set_zorder(tw.get_zorder() + 1)
        ax.patch.set_visible(False)
        for w in r["flap_windows"]:  # shaded on the lower axis, under the bars
            tw.axvspan(w["leave"], w["return"], color="0.88", zorder=0)
            ax.text((w["leave"] + w["return"]) / 2, ymax * 0.97, "%s out" % w["server"],
                    ha="center", va="top", fontsize=7, color="0.35")
        for sl in th["per_slot_MBps"]:
            ax.plot(x, sl, color="tab:blue", alpha=0.25, lw=0.8)
        ax.plot(x, th["total_MBps"], color="tab:blue", lw=2, label="total (client received)")
        for key, y, color, lab in (("client_link", 0.03, "tab:red", "RST, client link"),
                                   ("server_link", 0.08, "tab:orange", "RST, server link")):
            ts = [e["t"] for e in r["rsts"][key]]
            ax.scatter(ts, [y] * len(ts), marker="|", s=120, color=color, label=lab,
                       transform=ax.get_xaxis_transform(), zorder=3, clip_on=False)
        ft = [f["t_fail"] for f in r["failed"]]
        ax.scatter(ft, [0.14] * len(ft), marker="x", s=30, color="black",
                   label="failed transfer", transform=ax.get_xaxis_transform(), zorder=3)
        ax.set_xlim(0, s["duration_s"])
        ax.set_ylim(0, ymax)
        ax.set_xlabel("time (s)")
        ax.set_title("%s\nRSTs %d client / %d server link, %d failed of %d"
                     % (describe(r), s["rst_client_link"], s["rst_server_link"], s["failed"],
                        s["attempts"]), fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("throughput (MB/s)")
    twins[-1].set_ylabel("RSTs per second, client link (bars)", color="tab:red", fontsize=8)
    axes[0][0].legend(loc="lower left", bbox_to_anchor=(0, 0.17), fontsize=7, framealpha=0.9)
    fig.suptitle("%d MPTCP connections x %g MB/s (echoed), 2 subflows each; one server out %gs "
                 "every %gs\n(thin lines: per connection; grey: a server out of the pool)"
                 % (results[0]["summary"]["connections"], results[0]["params"]["rate"],
                    results[0]["params"]["flap_for"], results[0]["params"]["flap_every"]),
                 fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    log("plot: %s" % png)
    return True


def main_plot(a):
    results = []
    for d in a.dirs:
        with open(os.path.join(d, "results.json")) as f:
            results.append(json.load(f))
    if a.md:
        with open(a.md, "w") as f:
            f.write(table(results))
        log("table: %s" % a.md)
    else:
        sys.stdout.write(table(results))
    if a.png:
        plot(results, a.png)
    return 0


def main():
    argv = sys.argv[1:]
    if argv and argv[0] == "plot":
        ap = argparse.ArgumentParser(prog="anycast.py plot",
                                     description="panels side by side (one per run) and a table")
        ap.add_argument("dirs", nargs="+", help="run directories (with results.json)")
        ap.add_argument("--png", help="PNG to write (skipped if matplotlib is missing)")
        ap.add_argument("--md", help="markdown table to write (default: stdout)")
        return main_plot(ap.parse_args(argv[1:]))
    client = bool(argv) and argv[0] == "_client"
    if client:
        argv = argv[1:]
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.split("\n")[1:]))
    ap.add_argument("--mode", choices=["gateway", "baseline"], default="gateway")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of transfer (60)")
    ap.add_argument("-n", "--connections", type=int, default=6)
    ap.add_argument("--flap-every", type=float, default=10.0)
    ap.add_argument("--flap-for", type=float, default=5.0)
    ap.add_argument("--rate", type=float, default=2.0,
                    help="MB/s each connection sends (the server echoes it back: the same down)")
    ap.add_argument("--leave-cmd", help="shell command, {server} {pool} substituted")
    ap.add_argument("--return-cmd", help="shell command, {server} {pool} substituted")
    ap.add_argument("--reconnect", action="store_true",
                    help="replace a failed connection by a new one (each failure still counts)")
    ap.add_argument("-4", dest="family", action="store_const", const=4, default=4)
    ap.add_argument("-6", dest="family", action="store_const", const=6)
    ap.add_argument("--family", type=int, choices=[4, 6], dest="family")
    ap.add_argument("--proto", choices=["mptcp", "tcp"], default="mptcp")
    ap.add_argument("--port", type=int, default=T.VIP_PORT, help="VIP port (80)")
    ap.add_argument("--timeout", type=float, default=15.0, help="socket timeout (s)")
    ap.add_argument("--stall", type=float, default=3.0,
                    help="a connection that receives nothing for this long has failed (s)")
    ap.add_argument("--stagger-ms", type=float, default=50.0)
    ap.add_argument("--linger", type=float, default=0.3)
    ap.add_argument("--settle", type=float, default=1.0)
    ap.add_argument("--out", help="artefact directory (default /tmp/tz-anycast/...)")
    ap.add_argument("--no-plot", action="store_true", help="no DIR/throughput.png")
    ap.add_argument("--label", help="the run's name in the plot and the table")
    ap.add_argument("--quiet", action="store_true", help="no per-second progress")
    ap.add_argument("--expect-clean", action="store_true",
                    help="exit 1 unless 0 RST on both links and 0 failed transfers")
    ap.add_argument("--expect-rst", action="store_true",
                    help="exit 1 unless both links saw RSTs (a sanity check of the baseline)")
    ap.add_argument("--max-dip", type=float,
                    help="exit 1 if the largest dip during flaps exceeds this (0.2 = 20%%)")
    if client:
        ap.add_argument("--run", required=True)
        ap.add_argument("--t0", type=float, required=True)
        ap.add_argument("--progress", action="store_true")
        client_main(ap.parse_args(argv))
        return 0
    return main_run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
