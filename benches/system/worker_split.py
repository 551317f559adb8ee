#!/usr/bin/env python3
"""The worker loop's instructions per frame, split into driver, core and the loop's own.

Two jobs for benches/system/worker-split.sh (Python 3, standard library only):

    worker_split.py pcap FILE FLOWS         # FLOWS established-flow ACKs (64 B) to web4, one each
    worker_split.py split CALLGRIND_OUT... --log GATEWAY_LOG [--json]

`split` reads the callgrind files of one run (one per thread with --separate-threads=yes), keeps
the worker thread (the one that called `core_burst`; collection is toggled on
`trapeze_gatewayd::worker::poll`, so its file holds the whole poll loop and not the worker's
start-up), and splits its instructions:

* driver: inclusive cost of the calls to the burst shims `tz_rx_burst` and `tz_tx_burst`
  (ethdev and the PMD, including the PMD's mbuf alloc and free);
* core: inclusive cost of the calls to `trapeze_gatewayd::worker::core_burst` (the core's
  `process_burst`), less the mbuf accessors the core called or inlined (`trapeze_dpdk::mbuf`,
  gatewayd's frame.rs, the C shim's `tz_pktmbuf_*`): those are the runtime's per-frame cost;
* loop: the rest (worker.rs, clock.rs, frame.rs, the mbuf accessors, housekeeping, publishing).

Frames are the gateway's own count (`total: rx N` printed at exit), all received inside
`worker::poll`.
"""

import argparse
import json
import re
import struct
import sys
from collections import defaultdict
from pathlib import Path

CORE_FN = "trapeze_gatewayd::worker::core_burst"
DRIVER_FNS = ("tz_rx_burst", "tz_tx_burst")
# Mbuf accessors: functions by name prefix, inlined code by source file.
ACCESSOR_PREFIXES = (
    "trapeze_dpdk::mbuf::",
    "tz_pktmbuf_",
    "tz_mbuf_",
    "<trapeze_gatewayd::frame::MbufFrame",
)
ACCESSOR_FILES = ("dataplane/dpdk/src/mbuf.rs", "dataplane/gatewayd/src/frame.rs")


def checksum(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def write_pcap(path: Path, flows: int) -> None:
    """`flows` TCP ACKs, one per flow, client -> web4 (192.0.2.10:80) of benches/system/gateway.toml."""
    gw_mac = bytes.fromhex("020000000001")
    peer_mac = bytes.fromhex("02000000c101")
    vip = bytes([192, 0, 2, 10])
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for i in range(flows):
        src = bytes([198, 51, 100 + (i >> 8) % 100, i & 0xFF])
        tcp = struct.pack(
            "!HHIIBBHHH", 10000 + i % 50000, 80, 1000, 2000, 5 << 4, 0x10, 65535, 0, 0
        )
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, src, vip)
        ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
        pseudo = src + vip + struct.pack("!BBH", 0, 6, len(tcp))
        tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
        frame = gw_mac + peer_mac + b"\x08\x00" + ip + tcp
        frame += b"\0" * (60 - len(frame))
        out.append(struct.pack("<IIII", 0, i, len(frame), len(frame)) + frame)
    path.write_bytes(b"".join(out))


class Profile:
    """One callgrind output file: self cost per (function, source file), and calls per caller."""

    def __init__(self, path: Path) -> None:
        self.fn_names: dict[str, str] = {}
        self.file_names: dict[str, str] = {}
        self.self_cost: dict[tuple[str, str], int] = defaultdict(int)
        # (caller, callee) -> (calls, inclusive cost)
        self.calls: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
        self.total = 0
        self._read(path)

    @staticmethod
    def _name(table: dict[str, str], spec: str) -> str:
        m = re.match(r"\((\d+)\)(?: (.*))?$", spec)
        if not m:
            return spec
        if m.group(2) is not None:
            table[m.group(1)] = m.group(2)
        return table.get(m.group(1), spec)

    def _read(self, path: Path) -> None:
        fn = ""
        file = ""
        callee = ""
        pending_call = None
        for line in path.read_text(errors="replace").splitlines():
            if not line:
                continue
            c = line[0]
            if c.isdigit() or c in "+-*":
                cost = line.split()
                ir = int(cost[1]) if len(cost) > 1 else 0
                if pending_call is not None:
                    entry = self.calls[(fn, callee)]
                    entry[0] += pending_call
                    entry[1] += ir
                    pending_call = None
                else:
                    self.self_cost[(fn, file)] += ir
                continue
            key, _, value = line.partition("=")
            if key == "fn":
                fn = self._name(self.fn_names, value)
                file = self._fl
            elif key == "fl":
                self._fl = self._name(self.file_names, value)
                file = self._fl
            elif key in ("fi", "fe"):
                file = self._name(self.file_names, value)
            elif key in ("cfi", "cfl"):
                self._name(self.file_names, value)
            elif key == "cfn":
                callee = self._name(self.fn_names, value)
            elif key == "calls":
                pending_call = int(value.split()[0])
            elif key in ("summary", "totals"):
                self.total = int(value.split()[0]) if value.strip() else self.total
            elif line.startswith(("summary:", "totals:")):
                self.total = int(line.split()[1])

    _fl = ""

    def inclusive_calls_to(self, name: str) -> tuple[int, int]:
        calls = cost = 0
        for (caller, callee), (n, ir) in self.calls.items():
            if callee == name and caller != name:
                calls += n
                cost += ir
        return calls, cost


def is_accessor(fn: str) -> bool:
    return fn.startswith(ACCESSOR_PREFIXES)


def is_core(fn: str) -> bool:
    return fn == CORE_FN or "trapeze_core::" in fn


def split(profile: Profile) -> dict[str, int]:
    total = profile.total or sum(profile.self_cost.values())
    driver = sum(profile.inclusive_calls_to(f)[1] for f in DRIVER_FNS)
    bursts, core_incl = profile.inclusive_calls_to(CORE_FN)
    # Accessor work under the core: accessor calls made by core functions, and accessor code
    # inlined into them.
    in_core = 0
    for (caller, callee), (_, ir) in profile.calls.items():
        if is_core(caller) and is_accessor(callee):
            in_core += ir
    for (fn, file), ir in profile.self_cost.items():
        if is_core(fn) and file.endswith(ACCESSOR_FILES):
            in_core += ir
    core = core_incl - in_core
    return {
        "total": total,
        "driver": driver,
        "core": core,
        "accessors_in_core": in_core,
        "loop": total - driver - core,
        "bursts": bursts,
    }


def frames_from_log(log: Path) -> int:
    m = re.search(r"^total: rx (\d+)", log.read_text(errors="replace"), re.MULTILINE)
    if not m:
        sys.exit(f"no 'total: rx' line in {log}: did the gateway stop cleanly?")
    return int(m.group(1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pcap")
    p.add_argument("file", type=Path)
    p.add_argument("flows", type=int)
    s = sub.add_parser("split")
    s.add_argument("outs", type=Path, nargs="+")
    s.add_argument("--log", type=Path, required=True)
    s.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.cmd == "pcap":
        write_pcap(args.file, args.flows)
        return 0
    profiles = [Profile(p) for p in args.outs]
    worker = [p for p in profiles if p.inclusive_calls_to(CORE_FN)[0] > 0]
    if len(worker) != 1:
        sys.exit(f"expected one worker thread calling {CORE_FN}, found {len(worker)}")
    parts = split(worker[0])
    frames = frames_from_log(args.log)
    if frames == 0:
        sys.exit("the gateway received no frame")
    per = {k: parts[k] / frames for k in ("total", "driver", "core", "loop", "accessors_in_core")}
    if args.json:
        print(json.dumps({"frames": frames, "bursts": parts["bursts"], "per_frame": per}))
        return 0
    print(
        f"frames {frames}, core bursts {parts['bursts']} ({frames / max(parts['bursts'], 1):.1f} frames each)"
    )
    print(f"{'instructions per frame':<28} {'':>8}")
    for k, label in (
        ("total", "worker thread, total"),
        ("driver", "driver (rx/tx burst, PMD)"),
        ("core", "core (process_burst)"),
        ("loop", "worker loop (the rest)"),
    ):
        print(f"  {label:<28} {per[k]:>8.1f}")
    print(
        f"  (mbuf accessors called by the core, counted in the loop: {per['accessors_in_core']:.1f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
