#!/usr/bin/env bash
# Runs every check and test of trapeze. This is the command README.md gives users and the one
# .ci/run calls. It installs what it needs on a fresh Debian 12 machine.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages (scripts/deps.sh is the one list; it checks them by name with dpkg). The
# end-to-end tools need root to run at all, so they are installed only then.
if [ "$(id -u)" -eq 0 ]; then
  scripts/deps.sh build e2e checks python
else
  scripts/deps.sh build checks python
fi

# Hugepages for the DPDK tests (they also run with --no-huge where hugepages are not the point).
if [ "$(id -u)" -eq 0 ]; then
  if [ "$(cat /proc/sys/vm/nr_hugepages)" -lt 256 ]; then
    echo 256 > /proc/sys/vm/nr_hugepages || true
  fi
  mkdir -p /dev/hugepages
  mountpoint -q /dev/hugepages || mount -t hugetlbfs nodev /dev/hugepages || true
fi

step() { printf '\n== %s\n' "$*"; }

step "format"
cargo fmt --all -- --check

step "shellcheck (every shell script) and ruff (every Python file; ruff.toml)"
# Shell scripts: *.sh, the test bed's sourced mode files, and anything with a sh/bash shebang.
mapfile -t shell_scripts < <(
  git ls-files -- . ':!dataplane/fuzz/corpus' | while IFS= read -r f; do
    case "$f" in
      *.sh | testbed/multi-modes/*.env) echo "$f" ;;
      *) [ -f "$f" ] && head -n1 "$f" | grep -qE '^#!.*[/ ](ba)?sh$' && echo "$f" ;;
    esac
  done
)
shellcheck -x "${shell_scripts[@]}"
echo "shellcheck: ${#shell_scripts[@]} scripts clean"
target/pyenv/bin/ruff check .

step "clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "the core and the control plane build without DPDK; the core depends on nothing above it"
for crate in trapeze-core trapeze-control; do
  if cargo tree -p "$crate" -e normal --locked | grep -qi dpdk; then
    echo "$crate must not depend on DPDK" >&2
    exit 1
  fi
done
if cargo tree -p trapeze-core -e normal --locked | grep -q trapeze-control; then
  echo "trapeze-core must not depend on trapeze-control" >&2
  exit 1
fi

step "the packet pipeline is a one-way graph: no module imports one above it"
python3 scripts/check_pipeline_dag.py --self-test

step "the workspace also builds without DPDK (TRAPEZE_NO_DPDK=1)"
TRAPEZE_NO_DPDK=1 CARGO_TARGET_DIR=target/no-dpdk cargo check --workspace --all-targets --locked --quiet

step "tests"
cargo test --workspace --locked

step "the worker watchdog on the real daemon, with the fault injection only this test build has"
cargo test -p trapeze-gatewayd --features fault-injection --test watchdog --locked

step "instruction budgets of the packet path (callgrind: deterministic counts; benches/budgets.json)"
python3 benches/budget.py

step "end to end: the daemon between real Linux MPTCP clients and servers (network namespaces), its control plane, DSR, join routing without tokens, restarts that keep every flow and token, removing servers (migration, hard remove and re-add), token collisions, token sharing between instances, several instances behind ECMP with BGP, the anycast experiment (short)"
if [ "$(id -u)" -eq 0 ]; then
  testbed/e2e.sh
  testbed/e2e-control.sh
  testbed/e2e-dsr.sh
  testbed/e2e-joins.sh
  testbed/e2e-restart.sh
  testbed/e2e-removal.sh
  testbed/e2e-collide.sh
  testbed/e2e-tsync.sh
  testbed/e2e-multi.sh --mode token --mode ports --mode tsync
  testbed/anycast-compare.sh --short --build
  step "system benchmark, smoke run (1-s trials; the figures are not for quoting: benches/system/run.sh writes those)"
  benches/system/run.sh --quick --out target/tzbench/RESULTS-quick.md
else
  echo "skipped: the end-to-end tests create network namespaces and need root" >&2
fi

step "docs"
RUSTDOCFLAGS=-Dwarnings cargo doc --workspace --no-deps --locked --quiet

step "benches compile; the pktgen traces are what make_traces.py makes from the captures"
cargo bench --workspace --no-run --locked --quiet
python3 benches/pktgen/make_traces.py --check >/dev/null

echo
echo "all checks passed"
