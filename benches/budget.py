#!/usr/bin/env python3
"""Instruction budget of the packet path: callgrind counts per packet class, against budgets.

Runs benches/examples/budget.rs under callgrind for each class and counts the instructions of
`process()` / `process_burst()` and their call alone (`one`, `burst`; for `publish`, the
publications of a worker's counters): the tables are built uninstrumented, and copying each
frame into place, which a driver does, is not counted. Divides by the packets decided, prints a
table, and exits non-zero when a class costs more than its budget in benches/budgets.json plus
the tolerance (10 %). Callgrind counts instructions deterministically,
so this is a valid test on a noisy machine; times stay with criterion.

    benches/budget.py                 # build, measure every class, check
    benches/budget.py --update        # write the measured figures as the new budgets
    benches/budget.py --class syn     # one class

The class `worker-loop` is the daemon's own per-frame cost around the core and the driver:
benches/system/worker-split.sh runs the release trapeze-gatewayd under callgrind for a second
of forwarding (pcap and null vdevs, full bursts) and reports the worker thread's instructions
per frame less the driver's (rx/tx burst) and the core's (process_burst).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUDGETS = ROOT / "benches" / "budgets.json"
TOLERANCE = 0.10

# class -> packets measured (enough to average out per-call noise, few enough to be quick).
CLASSES = {
    "established": 20_000,
    "established-burst": 20_480,
    "syn": 20_000,
    "join": 20_000,
    "publish": 1_000,
    "worker-loop": 1,  # seconds of forwarding under callgrind (benches/system/worker-split.sh)
}


def build(target: Path) -> Path:
    subprocess.run(
        [
            "cargo",
            "build",
            "--release",
            "--locked",
            "--quiet",
            "-p",
            "trapeze-benches",
            "--example",
            "budget",
        ],
        cwd=ROOT,
        check=True,
        env={**os.environ, "CARGO_TARGET_DIR": str(target)},
    )
    return target / "release" / "examples" / "budget"


def measure_worker_loop(target: Path, seconds: int) -> float:
    """The worker loop's instructions per frame, from benches/system/worker-split.sh."""
    subprocess.run(
        ["cargo", "build", "--release", "--locked", "--quiet", "-p", "trapeze-gatewayd"],
        cwd=ROOT,
        check=True,
        env={**os.environ, "CARGO_TARGET_DIR": str(target)},
    )
    run = subprocess.run(
        [str(ROOT / "benches" / "system" / "worker-split.sh"), str(seconds)],
        check=False,
        cwd=ROOT,
        env={**os.environ, "CARGO_TARGET_DIR": str(target), "WORKER_SPLIT_JSON": "1"},
        capture_output=True,
        text=True,
    )
    if run.returncode != 0:
        sys.exit(f"budget worker-loop: worker-split.sh failed ({run.returncode})\n{run.stderr}")
    return float(json.loads(run.stdout.splitlines()[-1])["per_frame"]["loop"])


def measure(binary: Path, cls: str, packets: int, tmp: Path) -> float:
    """Instructions per packet of `cls`, from one callgrind run."""
    out = tmp / f"callgrind.{cls}.out"
    flag = tmp / f"go.{cls}"
    proc = subprocess.Popen(
        [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            "--collect-atstart=no",
            "--toggle-collect=budget::one",
            "--toggle-collect=budget::burst",
            "--toggle-collect=budget::publish",
            f"--callgrind-out-file={out}",
            str(binary),
            cls,
            str(packets),
            str(flag),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        _, err = proc.communicate()
        sys.exit(f"budget {cls}: did not get ready: {line!r}\n{err}")
    subprocess.run(
        ["callgrind_control", "-i", "on", str(proc.pid)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.2)
    flag.touch()
    rest, err = proc.communicate()
    if proc.returncode != 0 or f"done {packets}" not in rest:
        sys.exit(f"budget {cls}: failed ({proc.returncode})\n{rest}\n{err}")
    total = None
    for text in out.read_text().splitlines():
        if text.startswith(("summary:", "totals:")):
            total = int(text.split()[1])
    if not total:
        sys.exit(f"budget {cls}: no instruction count in {out}")
    return total / packets


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--update", action="store_true", help="write the figures as budgets")
    ap.add_argument("--class", dest="classes", action="append", choices=sorted(CLASSES))
    ap.add_argument(
        "--target-dir",
        default=os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target")),
        help="cargo target directory (default: target/)",
    )
    args = ap.parse_args()
    classes = args.classes or list(CLASSES)
    budgets = json.loads(BUDGETS.read_text())
    binary = build(Path(args.target_dir))
    failed = []
    measured = {}
    print(f"{'class':<20} {'instr/packet':>12} {'budget':>8} {'goal':>6}  verdict")
    with tempfile.TemporaryDirectory(prefix="tzbudget-") as tmp:
        for cls in classes:
            if cls == "worker-loop":
                ipp = measure_worker_loop(Path(args.target_dir), CLASSES[cls])
            else:
                ipp = measure(binary, cls, CLASSES[cls], Path(tmp))
            measured[cls] = round(ipp)
            entry = budgets["classes"].get(cls, {})
            budget = entry.get("budget")
            goal = entry.get("goal", "")
            verdict = "no budget"
            if budget is not None:
                limit = budget * (1 + TOLERANCE)
                verdict = "ok" if ipp <= limit else f"REGRESSION (> {limit:.0f})"
                if ipp > limit:
                    failed.append(cls)
            print(f"{cls:<20} {ipp:>12.1f} {budget or '-':>8} {goal:>6}  {verdict}")
    if args.update:
        for cls, v in measured.items():
            budgets["classes"].setdefault(cls, {})["budget"] = v
        BUDGETS.write_text(json.dumps(budgets, indent=2) + "\n")
        print(f"budgets written to {BUDGETS.relative_to(ROOT)}")
        return 0
    if failed:
        print(
            f"instruction budget exceeded by more than {TOLERANCE:.0%}: {', '.join(failed)} "
            "(benches/budget.py --update after an intended change)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
