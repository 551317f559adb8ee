#!/usr/bin/env bash
# The trapeze demo. As root on a fresh Debian 12 machine (installs what it needs):
#
#   ./scripts/demo.sh           builds the gateway, brings up the test bed in network namespaces
#                               (a client with two addresses, the gateway on two DPDK af_packet
#                               ports, three Linux MPTCP servers), runs MPTCP transfers over IPv4
#                               and IPv6 through the VIPs, prints which server got each subflow,
#                               the servers' MPTCP counters and the gateway's own, and cleans up.
#   ./scripts/demo.sh replay    replays real Linux MPTCP captures through the forwarding core
#                               (no DPDK, no root) and narrates every decision.
set -euo pipefail
cd "$(dirname "$0")/.."
# One user of the test bed at a time: its namespace names are fixed (tz-*).
exec 9>/tmp/tz-testbed.lock
flock -w 900 9 || { echo "the test bed is busy (another run holds /tmp/tz-testbed.lock)" >&2; exit 1; }

if [ "${1:-}" = replay ]; then
  shift
  scripts/deps.sh rust core   # the replay needs no DPDK: a C toolchain is enough
  exec cargo run --release --locked -q -p trapeze-core --example replay -- "$@"
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "the demo creates network namespaces and runs DPDK: run it as root" >&2
  echo "(or ./scripts/demo.sh replay, which needs neither)" >&2
  exit 1
fi
scripts/deps.sh rust build e2e
[ "$(cat /proc/sys/vm/nr_hugepages)" -ge 256 ] || echo 256 > /proc/sys/vm/nr_hugepages
mkdir -p /dev/hugepages
mountpoint -q /dev/hugepages || mount -t hugetlbfs nodev /dev/hugepages

echo "== building trapeze-gatewayd"
cargo build --release --locked -q -p trapeze-gatewayd
OUT=$(mktemp -d /tmp/tz-demo.XXXXXX)
GW=
cleanup() {
  if [ -n "$GW" ]; then kill -TERM "$GW" 2>/dev/null || true; wait "$GW" 2>/dev/null || true; fi
  testbed/netns.sh down >/dev/null 2>&1 || true
  rm -rf /var/run/dpdk/trapeze-testbed
  rm -f /dev/hugepages/trapeze-testbedmap_* /dev/{hugepages,shm}/trapeze-testbed.tzstate
}
trap cleanup EXIT

echo "== bringing up the test bed (testbed/README.md has the picture)"
testbed/netns.sh up >/dev/null
echo "== starting the gateway: configs/testbed.toml"
ip netns exec tz-gw target/release/trapeze-gatewayd --config configs/testbed.toml >"$OUT/gateway.out" 2>"$OUT/gateway.log" &
GW=$!
for _ in $(seq 1 100); do
  grep -q "every backend is resolved" "$OUT/gateway.log" && break
  kill -0 "$GW" 2>/dev/null || { cat "$OUT/gateway.log" >&2; exit 1; }
  sleep 0.2
done
sed 's/^/   /' "$OUT/gateway.log"

for fam in 4 6; do
  echo
  echo "== 12 MPTCP connections over IPv$fam to the VIP, each opening a second subflow (a join)"
  testbed/transfers.py "-$fam" -n 12 >"$OUT/v$fam.json" 2>"$OUT/v$fam.txt" || true
  grep -E "^  conn |^    srv[0-9]|^  RSTs|^== " "$OUT/v$fam.txt"
done

echo
echo "== stopping the gateway (SIGTERM); its final counters:"
kill -TERM "$GW"
wait "$GW" || true
GW=
sed 's/^/   /' "$OUT/gateway.out"
echo
echo "Every join above reached the server of its connection's first subflow: the gateway learned"
echo "each connection's token from the server's SYN/ACK and routed the join by it."
echo "Logs and captures: $OUT and /tmp/tz-testbed-runs/"
