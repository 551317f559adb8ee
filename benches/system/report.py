#!/usr/bin/env python3
"""Writes benches/RESULTS.md from the result lines of benches/system/run.sh."""

import argparse
import datetime
import os
import pathlib
import platform
import subprocess


def parse(path):
    runs = {}
    with open(path) as f:
        for line in f:
            if not line.startswith("result "):
                continue
            kv = dict(p.split("=", 1) for p in line.split()[1:] if "=" in p)
            runs[kv.get("label", "?")] = kv
    return runs


def commands(path):
    out = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) == 3:
                    out[parts[0]] = (parts[1], parts[2])
    return out


def num(kv, key):
    try:
        return float(kv[key])
    except (KeyError, TypeError, ValueError):
        return None


def mpps(v, unit="Mpps"):
    return "n/a" if v is None else f"{v / 1e6:.3f} {unit}"


def limited(kv):
    """True when the device kept up with everything the generator could offer."""
    z, g = num(kv, "zero_loss_pps"), num(kv, "generator_max_pps")
    return z is not None and g and z >= 0.97 * g


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--commands", required=True)
    ap.add_argument("--mode", default="full")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    runs = parse(a.results)
    cmds = commands(a.commands)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        rev = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        rev = "?"
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass

    units = {"self": "Mpps", "data": "Mpps", "data1m": "Mpps", "testpmd": "Mpps", "syn": "M SYN/s",
             "dsr": "Mpps", "dsr-gue": "Mpps",
             "handshake": "M handshakes/s", "join": "M joins/s", "mix": "Mpps"}
    what = {
        "self": "no device: the generator's two memif ports joined (its own ceiling), 64 B",
        "testpmd": "dpdk-testpmd io forwarding, 64 B, 10k flows (the memif path's ceiling)",
        "data": "gateway, 64 B data, 10k established flows",
        "data1m": "gateway, 64 B data, many established flows",
        "dsr": "gateway, DSR VIP: 64 B data tunnelled in IPIP (84 B out), 10k established flows",
        "dsr-gue": "gateway, DSR VIP: 64 B data tunnelled in GUE with a hashed outer source (96 B out), 10k flows",
        "syn": "gateway, SYN flood (each SYN a new flow)",
        "handshake": "gateway, MP_CAPABLE handshakes (SYN, SYN/ACK, third ACK with both keys)",
        "join": "gateway, MP_JOIN SYNs with learned tokens",
        "mix": "gateway, mix data 90 / SYN 4 / handshake 4 / join 2 (data over the 16k MPTCP connections the joins name)",
    }
    L = []
    L.append("# System benchmark results")
    L.append("")
    L.append(f"Written by `benches/system/run.sh{' --quick' if a.mode == 'quick' else ''}` "
             f"on {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, "
             f"commit {rev}; {os.cpu_count()} vCPUs ({cpu}), kernel {platform.release()}. "
             f"Mode: **{a.mode}**{' (smoke test: short trials, not for quoting)' if a.mode == 'quick' else ''}.")
    L.append("")
    L.append("Topology: `trapeze-loadgen` (CPU 0) sends on memif `a` to the device under test and "
             "receives on memif `b` what it forwards; on `b` it answers MP_CAPABLE SYNs as the "
             "backend would, on `a` it answers the SYN/ACKs with third ACKs. The device under "
             "test forwards on CPU 1: testpmd's forwarding lcore (`-l 0,1 --main-lcore 0`), or "
             "the gateway's single worker (`workers.lcores = [1]`, EAL `-l 0-1`; its control "
             "thread sleeps 10 ms between ticks on CPU 0). Each figure is the highest offered "
             "rate with at most 0.1% loss (binary search; a frame the device's memif ring "
             "refuses counts as lost), latency is one way, generator to generator, at 50% of "
             "that rate. Load averages (1/5/15 min) are from /proc/loadavg before and after each run (the "
             "generator and the device under test poll, so they add 2 to it themselves); the script "
             "waits for the CPUs to be under 10% busy before each run, and samples them again "
             "for 2 s just after it: anything there is other people's work that may have shared "
             "the cores during the run.")
    L.append("")
    L.append("| run | what | zero-loss rate (<= 0.1%) | max forwarding rate (overloaded) | generator max | p50 / p99 / p99.9 at 50% | load before -> after; others' CPU |")
    L.append("|---|---|---|---|---|---|---|")
    for name in ["self", "testpmd", "data", "data1m", "dsr", "dsr-gue", "syn", "handshake", "join", "mix"]:
        kv = runs.get(name)
        if not kv:
            continue
        u = units[name]
        if kv.get("failed"):
            L.append(f"| {name} | {what[name]} | **failed** (see the logs) | | | | |")
            continue
        z = num(kv, "zero_loss_pps")
        note = " (generator limit: the device kept up)" if limited(kv) else ""
        lat = "n/a"
        if num(kv, "p50_us") is not None:
            lat = f"{float(kv['p50_us']):.1f} / {float(kv['p99_us']):.1f} / {float(kv['p999_us']):.1f} us"
        flows = kv.get("flows", "")
        desc = what[name].replace("many", f"{int(flows):,}") if name == "data1m" and flows else what[name]
        mf = num(kv, "max_forwarding_pps")
        L.append(f"| {name} | {desc} | **{mpps(z, u)}**{note} | {mpps(mf, u)} | {mpps(num(kv, 'generator_max_pps'), u)} | {lat} | "
                 f"{kv.get('load_before', '?').replace(',', ' ')} -> {kv.get('load_after', '?').replace(',', ' ')}; "
                 f"{kv.get('quiet', '?').replace('_', ' ')}, busy {kv.get('busy_after', '?')}% just after |")
    L.append("")

    # Targets.
    def get(name, key="zero_loss_pps"):
        kv = runs.get(name)
        return None if kv is None else num(kv, key)

    tp, gw = get("testpmd"), get("data")
    tpm, gwm = get("testpmd", "max_forwarding_pps"), get("data", "max_forwarding_pps")
    rows = []
    if tp and gw is not None:
        r = gw / tp
        rows.append(("gateway / testpmd io-forward, 64 B, established flows (zero-loss rates)", ">= 90%",
                     f"{r * 100:.0f}% ({mpps(gw)} / {mpps(tp)})",
                     "not meaningful: both bound by descheduling (see below)"))
    if tpm and gwm is not None:
        r = gwm / tpm
        rows.append(("gateway / testpmd io-forward, 64 B, established flows (max forwarding rates)", ">= 90%",
                     f"{r * 100:.0f}% ({mpps(gwm)} / {mpps(tpm)})", r >= 0.9))
    if gw is not None:
        rows.append(("gateway, 64 B, 10k established flows, 1 worker (zero-loss)", ">= 8 Mpps", mpps(gw), gw >= 8e6))
    if gwm is not None:
        rows.append(("gateway, 64 B, 10k established flows, 1 worker (max forwarding)", ">= 8 Mpps", mpps(gwm), gwm >= 8e6))
    g1m = get("data1m", "max_forwarding_pps")
    if g1m is not None:
        rows.append((f"gateway, 64 B, {int(float(runs['data1m'].get('flows', 0))):,} established flows, 1 worker (max forwarding)",
                     ">= 8 Mpps", mpps(g1m), g1m >= 8e6))
    if get("syn") is not None:
        rows.append(("new connections (SYN)", ">= 1 M/s", mpps(get("syn"), "M/s"), get("syn") >= 1e6))
    if get("join") is not None:
        rows.append(("MP_JOIN SYNs", ">= 0.5 M/s", mpps(get("join"), "M/s"), get("join") >= 0.5e6))
    kernel = os.path.join(os.path.dirname(a.results), "kernel.txt")
    kratio = None
    if os.path.exists(kernel):
        for line in pathlib.Path(kernel).read_text().splitlines():
            if line.startswith("summary ratio"):
                kv = dict(p.split("=", 1) for p in line.split()[2:])
                kratio = float(kv["pkts_per_cpu_s"])
    if kratio is None:
        rows.append(("vs nftables DNAT, packets per CPU-second", ">= 3x", "not measured in this run", None))
    else:
        rows.append(("vs nftables DNAT, packets per CPU-second (kernel.sh, medians)", ">= 3x",
                     f"{kratio:.2f}x", kratio >= 3))
    p99 = get("data", "p99_us")
    if p99 is not None:
        rows.append(("p99 latency at 50% of the zero-loss rate (data, 10k flows)", "<= 50 us",
                     f"{p99:.1f} us", p99 <= 50))
    L.append("## Targets (issue 5)")
    L.append("")
    L.append("| measure | target | measured | |")
    L.append("|---|---|---|---|")
    for m, t, v, ok in rows:
        verdict = ok if isinstance(ok, str) else ("met" if ok else ("missed" if ok is not None else ""))
        L.append(f"| {m} | {t} | {v} | {verdict} |")
    L.append("")

    if os.path.exists(kernel):
        L.append("## Against the kernel (`benches/system/kernel.sh`)")
        L.append("")
        lines = pathlib.Path(kernel).read_text().splitlines()
        head = [x for x in lines if x.startswith("#")]
        if head:
            L.append(f"Run: `{head[0].lstrip('# ')}`. Rounds alternate the order (A/B, then B/A).")
            L.append("")
        L.append("| DUT | rounds | forwarded pps, median (min - max) | packets per CPU-second, median (min - max) |")
        L.append("|---|---|---|---|")
        for x in lines:
            if x.startswith("summary ") and not x.startswith("summary ratio"):
                p = x.split()
                kv = dict(y.split("=", 1) for y in p[2:])
                L.append(f"| {p[1]} | {kv['rounds']} | {float(kv['pps_median']) / 1e3:.0f} k "
                         f"({float(kv['pps_min']) / 1e3:.0f} - {float(kv['pps_max']) / 1e3:.0f} k) | "
                         f"{float(kv['pkts_per_cpu_s_median']) / 1e3:.0f} k "
                         f"({float(kv['pkts_per_cpu_s_min']) / 1e3:.0f} - {float(kv['pkts_per_cpu_s_max']) / 1e3:.0f} k) |")
        L.append("")
        L.append("Every round:")
        L.append("")
        L.append("```")
        L.extend(x for x in lines if not x.startswith("#") and not x.startswith("summary"))
        L.append("```")
        L.append("")
    L.append("## Commands")
    L.append("")
    L.append("Each run started the device under test afresh, then the load generator:")
    L.append("")
    for name, (lg, dut) in cmds.items():
        L.append(f"* **{name}**: `{dut}`, then `{lg}`")
    L.append("")
    notes = os.path.join(root, "benches", "system", "analysis.md")
    if os.path.exists(notes):
        with open(notes) as f:
            L.append(f.read().rstrip())
        L.append("")
    with open(a.out, "w") as f:
        f.write("\n".join(L))


if __name__ == "__main__":
    main()
