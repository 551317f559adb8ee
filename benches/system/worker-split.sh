#!/usr/bin/env bash
# The daemon's instructions per frame, split into driver, core and the worker loop's own, counted
# with callgrind (deterministic: no timing involved). The real daemon forwards established-flow
# ACKs: port 0 is a pcap vdev replaying FLOWS frames forever (infinite_rx: every RX burst is
# full), port 1 a null vdev that frees what it is sent. Collection is on inside `worker::poll`
# only (the poll loop, not the worker's start-up); benches/system/worker_split.py splits the
# worker thread's counts by the symbols `tz_rx_burst`/`tz_tx_burst` (driver) and
# `worker::core_burst` (core).
#
#   benches/system/worker-split.sh [SECONDS] [FLOWS]     # defaults: 10 s, 1024 flows
#   WORKER_SPLIT_JSON=1 benches/system/worker-split.sh  # one JSON line (benches/budget.py)
#   WORKER_SPLIT_KEEP=1 ...                              # keep the callgrind files and the log
#
# Needs the release build (cargo build --release -p trapeze-gatewayd) and valgrind.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SECS=${1:-10}
FLOWS=${2:-1024}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release/trapeze-gatewayd
PREFIX=tzwsplit-$$
RUN=$(mktemp -d /tmp/tzwsplit.XXXXXX)
[ -x "$BIN" ] || { echo "no $BIN: cargo build --release -p trapeze-gatewayd" >&2; exit 1; }
command -v valgrind > /dev/null || { echo "valgrind is not installed" >&2; exit 1; }
GWPID=
cleanup() {
    if [ -n "$GWPID" ]; then
        kill "$GWPID" 2> /dev/null || true
        wait "$GWPID" 2> /dev/null || true
    fi
    if [ -n "${WORKER_SPLIT_KEEP:-}" ]; then echo "kept: $RUN" >&2; else rm -rf "$RUN"; fi
    rm -rf "/var/run/dpdk/$PREFIX"
    rm -f "/dev/hugepages/$PREFIX"*
}
trap cleanup EXIT
python3 "$ROOT/benches/system/worker_split.py" pcap "$RUN/flows.pcap" "$FLOWS"
# The benchmark's gateway with the two vdevs instead of memif, small tables (they are built
# under valgrind) and no huge pages.
sed -e '/^args = /,/\]$/c\
args = ["--no-pci", "--file-prefix='"$PREFIX"'", "--no-huge", "-m", "256", "-l", "0-1", "--log-level=lib.eal:error",\
        "--vdev=net_pcap0,rx_pcap='"$RUN"'/flows.pcap,infinite_rx=1", "--vdev=net_null0,no-rx=1"]' \
    -e 's/device = "net_memif0"/device = "net_pcap0"/' -e 's/device = "net_memif1"/device = "net_null0"/' \
    -e 's/^flow_capacity = .*/flow_capacity = 65536/' -e 's/^token_capacity = .*/token_capacity = 65536/' \
    "$ROOT/benches/system/gateway.toml" > "$RUN/gw.toml"
valgrind --tool=callgrind --collect-atstart=no --toggle-collect='trapeze_gatewayd::worker::poll' \
    --separate-threads=yes --callgrind-out-file="$RUN/callgrind.out" \
    "$BIN" --config "$RUN/gw.toml" --api off > "$RUN/gateway.log" 2>&1 &
GWPID=$!
for _ in $(seq 1200); do
    grep -q '^trapeze-gatewayd: forwarding' "$RUN/gateway.log" && break
    kill -0 "$GWPID" 2> /dev/null || { cat "$RUN/gateway.log" >&2; exit 1; }
    sleep 0.1
done
sleep "$SECS"
kill -INT "$GWPID"
wait "$GWPID" || true
GWPID=
if [ -n "${WORKER_SPLIT_JSON:-}" ]; then
    python3 "$ROOT/benches/system/worker_split.py" split "$RUN"/callgrind.out* --log "$RUN/gateway.log" --json
else
    grep -E '^(worker 0|total):' "$RUN/gateway.log"
    python3 "$ROOT/benches/system/worker_split.py" split "$RUN"/callgrind.out* --log "$RUN/gateway.log"
fi
