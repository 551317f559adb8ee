#!/usr/bin/env bash
# End-to-end tests of trapeze-gatewayd with real Linux MPTCP clients and servers, in network
# namespaces this script creates and removes (testbed/netns.sh). Run by scripts/test.sh (as root).
#
# For one worker (configs/testbed.toml) and for two (configs/testbed-2workers.toml):
#   1. 24 MPTCP connections over IPv4, each with a join: every subflow on its connection's
#      server, MPJoinNoTokenFound 0 on every server, digests match, no RST on either link;
#   2. the same over IPv6;
#   3. plain TCP over IPv4 and IPv6, spread over all three servers;
# then the daemon is stopped with SIGTERM: it must exit 0 and print its final counters, and
# with two workers at least one frame must have been handed between workers.
set -euo pipefail
cd "$(dirname "$0")/.."
# One user of the test bed at a time: its namespace names are fixed (tz-*).
exec 9>/tmp/tz-testbed.lock
flock -w 900 9 || { echo "the test bed is busy (another run holds /tmp/tz-testbed.lock)" >&2; exit 1; }

BIN=${TRAPEZE_GATEWAYD:-target/release/trapeze-gatewayd}
if [ -z "${TRAPEZE_GATEWAYD:-}" ]; then
  cargo build --release --locked -q -p trapeze-gatewayd
fi
OUT=$(mktemp -d /tmp/tz-e2e.XXXXXX)
GW_PID=

log() { printf '[e2e] %s\n' "$*" >&2; }

stop_gateway() {
  [ -n "$GW_PID" ] || return 0
  local pid=$GW_PID
  GW_PID=
  kill -TERM "$pid" 2>/dev/null || true
  local status=0
  wait "$pid" || status=$?
  return "$status"
}

cleanup() {
  stop_gateway || true
  testbed/netns.sh down >/dev/null 2>&1 || true
  rm -rf /var/run/dpdk/trapeze-testbed /var/run/dpdk/trapeze-testbed2
}
trap cleanup EXIT

start_gateway() {
  local config=$1 tag=$2
  ip netns exec tz-gw "$BIN" --config "$config" >"$OUT/$tag.out" 2>"$OUT/$tag.err" &
  GW_PID=$!
  for _ in $(seq 1 100); do
    if grep -q "every backend is resolved" "$OUT/$tag.err" 2>/dev/null; then
      log "gateway up ($config): $(grep -c neighbour "$OUT/$tag.err") backends resolved"
      return 0
    fi
    if ! kill -0 "$GW_PID" 2>/dev/null; then
      log "gateway exited during start-up:"
      cat "$OUT/$tag.err" >&2
      return 1
    fi
    sleep 0.2
  done
  log "gateway did not resolve its backends in 20 s:"
  cat "$OUT/$tag.err" >&2
  return 1
}

run_suite() {
  local config=$1 tag=$2
  start_gateway "$config" "$tag"
  testbed/transfers.py -4 >"$OUT/$tag-v4-mptcp.json"
  testbed/transfers.py -6 >"$OUT/$tag-v6-mptcp.json"
  testbed/transfers.py -4 --proto tcp --require-all-servers >"$OUT/$tag-v4-tcp.json"
  testbed/transfers.py -6 --proto tcp --require-all-servers >"$OUT/$tag-v6-tcp.json"
  if ! stop_gateway; then
    log "gateway did not exit cleanly on SIGTERM"
    cat "$OUT/$tag.err" >&2
    return 1
  fi
  log "gateway stopped cleanly; final counters:"
  sed 's/^/    /' "$OUT/$tag.out" >&2
  grep -q '^total: ' "$OUT/$tag.out"
  if [ "$tag" = two-workers ]; then
    local handed
    handed=$(awk '/^worker /{for(i=1;i<=NF;i++) if($i=="handed_off") s+=$(i+1)} END{print s+0}' "$OUT/$tag.out")
    log "frames handed between workers: $handed"
    [ "$handed" -gt 0 ]
  fi
}

testbed/netns.sh up >&2
run_suite configs/testbed.toml one-worker
run_suite configs/testbed-2workers.toml two-workers
log "artefacts in $OUT"
echo "e2e: 2 passed, 0 failed"
