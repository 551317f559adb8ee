#!/usr/bin/env bash
# Runs every check and test of trapeze. This is the command README.md gives users and the one
# .ci/run calls. It installs what it needs on a fresh Debian 12 machine.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages (scripts/deps.sh is the one list; it checks them by name with dpkg). The
# end-to-end tools need root to run at all, so they are installed only then.
if [ "$(id -u)" -eq 0 ]; then
  scripts/deps.sh test # = rust build e2e checks python; docker/Dockerfile's build stage too
else
  scripts/deps.sh rust build checks python
fi

# Hugepages for the DPDK tests (they also run with --no-huge where hugepages are not the point).
if [ "$(id -u)" -eq 0 ]; then
  if [ "$(cat /proc/sys/vm/nr_hugepages)" -lt 256 ]; then
    echo 256 > /proc/sys/vm/nr_hugepages || true
  fi
  mkdir -p /dev/hugepages
  mountpoint -q /dev/hugepages || mount -t hugetlbfs nodev /dev/hugepages || true
fi

# Each step prints the time the previous one took; the end, where the time went.
STEP_NAME='' STEP_START=$SECONDS TIMES=()
step_done() {
  if [ -n "$STEP_NAME" ]; then
    printf -- '-- %d s: %s\n' "$((SECONDS - STEP_START))" "$STEP_NAME"
    TIMES+=("$(printf '%5d s  %s' "$((SECONDS - STEP_START))" "$STEP_NAME")")
  fi
  STEP_NAME=$1 STEP_START=$SECONDS
}
step() {
  step_done "$(cut -c1-70 <<<"$*")"
  printf '\n== %s\n' "$*"
}

# The container image (docker/build.sh: the base from Debian's mirror, then the build and
# runtime stages; nothing pulled) builds in the background while the host checks compile; its
# tests run before the end-to-end tests. Root and a running Docker engine only.
DOCKER=0
if [ "$(id -u)" -eq 0 ] && command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  DOCKER=1
  mkdir -p target
  docker/build.sh >target/docker-build.log 2>&1 &
  DOCKER_BUILD=$!
  DOCKER_START=$SECONDS
  echo "container image: building in the background (target/docker-build.log)"
fi

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

step "Schemathesis against the real daemon's API (docs/openapi.json, every check, 20 examples per operation; issue 12)"
scripts/schemathesis.sh 20

step "the worker watchdog on the real daemon, with the fault injection only this test build has"
cargo test -p trapeze-gatewayd --features fault-injection --test watchdog --locked

step "instruction budgets of the packet path (callgrind: deterministic counts; benches/budgets.json)"
python3 benches/budget.py

if [ "$DOCKER" = 1 ]; then
  step "container image (docker/build.sh, started at the beginning): base, build stage, runtime"
  if ! wait "$DOCKER_BUILD"; then
    tail -n 30 target/docker-build.log >&2
    exit 1
  fi
  echo "built in $((SECONDS - DOCKER_START)) s wall time (beside the host checks)"
  tail -n1 target/docker-build.log
  step "container: each capability and the hugetlbfs mount needed (one-line hints), then health, /metrics, read-only config, SIGHUP, docker stop"
  docker/test-container.sh caps
  docker/test-container.sh lifecycle
  step "Debian package: installs in a clean container of the base image, trapeze-check, trapezectl --help, the unit"
  packaging/test-deb.sh
  step "end to end and the anycast experiment (short) through the containerized gateway (the test bed's container mode)"
  TZTB_GW_IMAGE=trapeze:latest TRAPEZE_GATEWAYD=/nonexistent testbed/e2e.sh
  # anycast-compare.sh drains servers with trapezectl in tz-gw: the image's own.
  rm -rf target/docker-bin && mkdir -p target/docker-bin
  docker create --name tzk-test-bin trapeze:latest >/dev/null
  docker cp tzk-test-bin:/usr/bin/trapezectl target/docker-bin/
  docker cp tzk-test-bin:/usr/bin/trapeze-gatewayd target/docker-bin/
  docker rm tzk-test-bin >/dev/null
  TZTB_GW_IMAGE=trapeze:latest TRAPEZECTL=target/docker-bin/trapezectl \
    TRAPEZE_GATEWAYD=target/docker-bin/trapeze-gatewayd testbed/anycast-compare.sh --short --gateway=daemon
else
  echo "skipped: the container steps need root and a running Docker engine" >&2
fi

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
  # With the image: the data run also through the containerized gateway (compose profile bench).
  if [ "$DOCKER" = 1 ]; then export TZB_IMAGE=trapeze:latest; fi
  benches/system/run.sh --quick --out target/tzbench/RESULTS-quick.md
else
  echo "skipped: the end-to-end tests create network namespaces and need root" >&2
fi

step "docs"
RUSTDOCFLAGS=-Dwarnings cargo doc --workspace --no-deps --locked --quiet

step "benches compile; the pktgen traces are what make_traces.py makes from the captures"
cargo bench --workspace --no-run --locked --quiet
python3 benches/pktgen/make_traces.py --check >/dev/null

step_done ""
echo
echo "where the time went:"
printf '%s\n' "${TIMES[@]}"
echo "total: $SECONDS s"
echo
echo "all checks passed"
